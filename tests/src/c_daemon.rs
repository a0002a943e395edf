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

/// Compiles the shim into `dir/xen-shim.so`. `Err` if there is no C
/// compiler; a shim that does not compile is a bug and panics.
pub fn build_shim(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).expect("shim build directory");
    let out = dir.join("xen-shim.so");
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(shim_source())
        .arg("-ldl")
        .output()
        .map_err(|e| format!("cannot run cc to build the xen shim: {e} (scripts/install-test-deps.sh installs gcc)"))?;
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
    pub fn start(dir: &Path) -> Result<Self, String> {
        if !Path::new(C_XENSTORED).exists() {
            return Err(format!(
                "{C_XENSTORED} is not installed (scripts/install-test-deps.sh installs xen-utils-4.17)"
            ));
        }
        let shim = build_shim(dir)?;
        let rundir = dir.join("c-run");
        std::fs::create_dir_all(&rundir).map_err(|e| format!("c rundir: {e}"))?;
        let socket = rundir.join("socket");
        let log = dir.join("c-xenstored.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("c log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("c log: {e}"))?;
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
            .map_err(|e| format!("cannot start {C_XENSTORED}: {e}"))?;
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
