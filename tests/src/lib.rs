//! Helpers for the end-to-end scenarios in `tests/tests/`: start the daemon
//! and mock-xen as real processes, wait on conditions with generous bounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long anything may take before a test gives up (a bound, not a sleep).
pub const LIMIT: Duration = Duration::from_secs(60);

/// A workspace binary, built by `cargo test --workspace` next to the test
/// executables (`target/<profile>/`); built on demand if missing.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "xenstored-lite", "-p", "mock-xen", "--bins"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries failed");
    }
    path
}

/// Polls `cond` until it holds or [`LIMIT`] passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `mock-xen --socket` process.
#[derive(Debug)]
pub struct MockXen {
    /// Its socket.
    pub socket: PathBuf,
    _proc: Proc,
}

impl MockXen {
    /// Starts one with its socket in `dir`.
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("mock-xen.sock");
        let child = Command::new(bin("mock-xen"))
            .arg("--socket")
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mock-xen");
        let proc = Proc { child };
        wait_until("mock-xen's socket", || socket.exists());
        Self {
            socket,
            _proc: proc,
        }
    }

    /// A connector to it.
    pub fn connector(&self) -> mock_xen::Connector {
        mock_xen::Connector::remote(&self.socket)
    }
}

/// A running `xenstored-lite`.
#[derive(Debug)]
pub struct Daemon {
    /// Its run directory (`XENSTORED_RUNDIR`).
    pub rundir: PathBuf,
    /// Its socket.
    pub socket: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl Daemon {
    /// Starts the daemon in the foreground with its run directory in `dir`
    /// and extra arguments.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        let rundir = dir.join("run");
        std::fs::create_dir_all(&rundir).expect("rundir");
        let socket = rundir.join("socket");
        let log = std::fs::File::create(dir.join("xenstored.log")).expect("log file");
        let child = Command::new(bin("xenstored-lite"))
            .arg("-N")
            .args(args)
            .env("XENSTORED_RUNDIR", &rundir)
            .env_remove("XENSTORED_PATH")
            .stderr(log)
            .spawn()
            .expect("spawn xenstored-lite");
        let proc = Proc { child };
        wait_until("the daemon's socket", || socket.exists());
        Self {
            rundir,
            socket,
            proc,
        }
    }

    /// A client on its socket.
    pub fn client(&self) -> xenring::Client<std::os::unix::net::UnixStream> {
        xenring::Client::connect_unix(&self.socket).expect("connect to the daemon")
    }

    /// Runs a command with the environment Xen's tools use to find us.
    pub fn tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new(program)
            .args(args)
            .env("XENSTORED_PATH", &self.socket)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }
}

/// Whether a program exists; prints why a test skips if not.
pub fn have(program: &str) -> bool {
    let found = Path::new(program).is_absolute() && Path::new(program).exists()
        || std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
            .unwrap_or(false);
    if !found {
        println!("skipping: {program} is not installed (scripts/install-test-deps.sh installs it)");
    }
    found
}
