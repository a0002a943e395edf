//! Xen 4.17's C xenstored, run with no hypervisor under the project's
//! `LD_PRELOAD` shim (`tests/c-shim/xen-shim.c`), for differential tests
//! that put the same requests to it and to xenstored-lite.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{wait_until, Proc};

/// Where Debian's xen-utils-4.17 installs the C daemon.
pub const C_XENSTORED: &str = "/usr/lib/xen-4.17/bin/xenstored";

/// The shim's source, in this crate.
pub fn shim_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c-shim/xen-shim.c")
}

/// Reports that the running test cannot run C xenstored ([`crate::skip`]
/// with the test's name): loud, and a failure under `XSL_REQUIRE_ALL=1`.
pub fn skip(reason: &str) {
    crate::skip(&crate::test_name(), reason);
}

/// Why C xenstored cannot run here (the test skips, or fails under
/// `XSL_REQUIRE_ALL=1`).
#[derive(Debug, thiserror::Error)]
pub enum CDaemonUnavailable {
    /// Debian's xen-utils-4.17 is not installed.
    #[error(
        "{C_XENSTORED} is not installed (scripts/install-test-deps.sh installs xen-utils-4.17)"
    )]
    NotInstalled,
    /// There is no C compiler to build the shim with.
    #[error(
        "cannot run cc to build the xen shim: {0} (scripts/install-test-deps.sh installs gcc)"
    )]
    NoCompiler(#[source] std::io::Error),
    /// Its run directory or log could not be made.
    #[error("cannot prepare {what} for C xenstored: {source}")]
    Setup {
        /// The directory or file.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program did not start.
    #[error("cannot start {C_XENSTORED}: {0}")]
    Spawn(#[source] std::io::Error),
}

fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> CDaemonUnavailable {
    move |source| CDaemonUnavailable::Setup { what, source }
}

/// Compiles the shim into `dir/xen-shim.so`. `Err` if there is no C
/// compiler; a shim that does not compile is a bug and panics.
pub fn build_shim(dir: &Path) -> Result<PathBuf, CDaemonUnavailable> {
    std::fs::create_dir_all(dir).expect("shim build directory");
    let out = dir.join("xen-shim.so");
    let o = Command::new("cc")
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&out)
        .arg(shim_source())
        .arg("-ldl")
        .output()
        .map_err(CDaemonUnavailable::NoCompiler)?;
    assert!(
        o.status.success(),
        "building the xen shim failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(out)
}

/// A running C xenstored, killed when dropped.
#[derive(Debug)]
pub struct CDaemon {
    /// Its run directory (`XENSTORED_RUNDIR`), where the shim also keeps
    /// its stand-ins for `/proc/xen/xsd_port` and `xsd_kva`.
    pub rundir: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    /// Its standard output and error.
    pub log: PathBuf,
    _proc: Proc,
}

impl CDaemon {
    /// Starts C xenstored in the foreground with its own run directory
    /// under `dir`. `Err` says why it cannot run here (the caller skips).
    pub fn start(dir: &Path) -> Result<Self, CDaemonUnavailable> {
        if !Path::new(C_XENSTORED).exists() {
            return Err(CDaemonUnavailable::NotInstalled);
        }
        let shim = build_shim(dir)?;
        let rundir = dir.join("c-run");
        std::fs::create_dir_all(&rundir).map_err(setup("its run directory"))?;
        let socket = rundir.join("socket");
        let log = dir.join("c-xenstored.log");
        let out = std::fs::File::create(&log).map_err(setup("its log"))?;
        let err = out.try_clone().map_err(setup("its log"))?;
        let child = Command::new(C_XENSTORED)
            .arg("--no-fork")
            .env("XENSTORED_RUNDIR", &rundir)
            .env("XSL_SHIM_DIR", &rundir)
            .env("LD_PRELOAD", &shim)
            .env_remove("XENSTORED_PATH")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(CDaemonUnavailable::Spawn)?;
        let mut proc = Proc { child };
        wait_until("C xenstored's socket", || {
            socket.exists() || !matches!(proc.child.try_wait(), Ok(None))
        });
        if !socket.exists() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("C xenstored under the shim exited before serving: {text}");
        }
        Ok(Self {
            rundir,
            socket,
            log,
            _proc: proc,
        })
    }

    /// Runs a command with the environment Xen's tools use to find it.
    pub fn tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        crate::run_tool(&self.socket, program, args)
    }
}
