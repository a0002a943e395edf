//! Helpers for the end-to-end scenarios in `tests/tests/`: start the daemon
//! and mock-xen as real processes, wait on conditions with generous bounds.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod c_daemon;
pub mod c_restore;

/// How long anything may take before a test gives up (a bound, not a sleep).
pub const LIMIT: Duration = Duration::from_secs(60);

/// A workspace binary (`xenstored-lite`, `mock-xen`, `mock-xen-guest`,
/// `mock-xen-peer`), freshly built: the first call in a test process runs
/// `cargo build` for the daemon's and mock-xen's binaries in the profile
/// and target directory of this executable (see [`build_bins`]), so a test
/// never runs a binary older than the source. Later calls, from any
/// thread, reuse that one build; a failed build fails every caller with
/// cargo's output.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_bins) {
        panic!("{e}");
    }
    target_profile_dir().join(name)
}

/// How many times this process has run `cargo build` for [`bin`] (1 after
/// the first call, whatever the number of threads).
pub fn builds_so_far() -> usize {
    BUILDS.load(std::sync::atomic::Ordering::SeqCst)
}

static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `target/<profile>`: where this test executable's binaries go
/// (`target/<profile>/deps/<test>` -> `target/<profile>`).
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf()
}

/// Builds the workspace's binaries (`xenstored-lite`, `mock-xen`'s) with
/// `cargo build` in the profile and target directory this executable was
/// built in (`release` under `cargo bench`, `debug` under `cargo test`, a
/// custom profile by its name). `Err` holds cargo's output when the build
/// failed. [`bin`] calls it once per process.
pub fn build_bins() -> Result<(), String> {
    BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = target_profile_dir();
    let profile = match dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(p) => p.to_string(),
        None => return Err(format!("no profile in {}", dir.display())),
    };
    let target_dir = dir.parent().ok_or("no target directory")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--profile", &profile])
        .args(["-p", "xenstored-lite", "-p", "mock-xen", "--bins"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the binaries for the tests failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The environment variable that turns a skip for a missing tool or
/// package into a failure (CI sets it on the host).
pub const REQUIRE_ALL: &str = "XSL_REQUIRE_ALL";

/// Reports that a test cannot run because a tool or package is missing:
/// writes `skipping: <what>: <reason>` straight to the process's standard
/// error (libtest does not capture that, so the line survives a passing
/// run and `scripts/test.sh` lists it), and panics instead when
/// `XSL_REQUIRE_ALL=1`. The caller returns after it.
pub fn skip(what: &str, reason: &str) {
    let line = skip_line(what, reason);
    if std::env::var(REQUIRE_ALL).as_deref() == Ok("1") {
        panic!("{REQUIRE_ALL}=1 but {}", &line["skipping: ".len()..]);
    }
    // Best effort: if stderr itself is gone there is no one to tell.
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(format!("{line}\n").as_bytes());
    let _ = err.flush();
}

/// The line [`skip`] writes.
pub fn skip_line(what: &str, reason: &str) -> String {
    format!("skipping: {what}: {reason}")
}

/// The name of the running test (libtest names its threads after them).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("a test")
        .to_string()
}

/// Whether `program` exists (an absolute path, or a name on `PATH`).
pub fn installed(program: &str) -> bool {
    if Path::new(program).is_absolute() {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
}

/// Whether a program exists; if not, the running test skips loudly
/// ([`skip`]: a failure under `XSL_REQUIRE_ALL=1`) and should return.
pub fn have(program: &str) -> bool {
    let found = installed(program);
    if !found {
        skip(
            &test_name(),
            &format!("{program} is not installed (scripts/install-test-deps.sh installs it)"),
        );
    }
    found
}

/// Polls `cond` until it holds or [`LIMIT`] passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sets its flag when dropped: client threads that watch it stop when the
/// main thread is done, or has panicked.
#[derive(Debug)]
pub struct SetOnDrop(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
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
    /// Its standard error, which a live update keeps (the same process
    /// execs the new binary).
    pub log: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl Daemon {
    /// Starts the daemon in the foreground with its run directory in `dir`
    /// and extra arguments.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables (an `LD_PRELOAD`
    /// that the program a live update execs needs, say).
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let rundir = dir.join("run");
        std::fs::create_dir_all(&rundir).expect("rundir");
        let socket = rundir.join("socket");
        let log_path = dir.join("xenstored.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(bin("xenstored-lite"))
            .arg("-N")
            .args(args)
            .env("XENSTORED_RUNDIR", &rundir)
            .env_remove("XENSTORED_PATH")
            .envs(env.iter().copied())
            .stderr(log)
            .spawn()
            .expect("spawn xenstored-lite");
        let proc = Proc { child };
        wait_until("the daemon's socket", || socket.exists());
        Self {
            rundir,
            socket,
            log: log_path,
            proc,
        }
    }

    /// Its process id (a live update keeps it: the new binary is exec'd in
    /// place).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// What it has written to its standard error so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The live updates its log reports so far, oldest first.
    pub fn live_updates(&self) -> LiveUpdateLog {
        LiveUpdateLog::parse(&self.log_text())
    }

    /// A client on its socket whose reads and writes fail after [`LIMIT`]
    /// instead of hanging on a lost reply ([`client`]).
    pub fn client(&self) -> xenring::Client<UnixStream> {
        client(&self.socket)
    }

    /// Runs a command with the environment Xen's tools use to find us.
    pub fn tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        run_tool(&self.socket, program, args)
    }
}

/// A raw connection to the daemon serving `socket` whose reads and writes
/// wait at most [`LIMIT`]: a lost reply fails the read with
/// `WouldBlock`/`TimedOut` instead of hanging the suite.
pub fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to the daemon at {}: {e}", socket.display()));
    s.set_read_timeout(Some(LIMIT))
        .expect("setting a read timeout on the daemon's socket");
    s.set_write_timeout(Some(LIMIT))
        .expect("setting a write timeout on the daemon's socket");
    s
}

/// A [`xenring::Client`] on `socket` with [`connect`]'s bounded waits.
pub fn client(socket: &Path) -> xenring::Client<UnixStream> {
    xenring::Client::new(connect(socket))
}

/// Runs `program` with the environment Xen's tools use to find the daemon
/// serving `socket` (`XENSTORED_PATH`), and returns what it printed.
pub fn run_tool(socket: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.args(args).env("XENSTORED_PATH", socket);
    output_within_limit(&mut cmd, &format!("{program} {}", args.join(" ")))
}

/// Runs `cmd` to the end like [`Command::output`], but kills it and fails
/// the test naming `what` if it has not ended within [`LIMIT`] (a tool
/// waiting for a reply that was lost).
pub fn output_within_limit(cmd: &mut Command, what: &str) -> std::process::Output {
    use std::io::Read as _;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut bytes)
                    .expect("reading a child's output");
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("the stdout reader"),
        stderr: stderr.join().expect("the stderr reader"),
    }
}

/// Where Debian installs Xen 4.17's `xenstore-control`.
pub const XENSTORE_CONTROL: &str = "/usr/lib/xen-4.17/bin/xenstore-control";

/// A reply payload as text, without its terminating NUL.
pub fn reply_text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload.strip_suffix(&[0]).unwrap_or(payload)).into_owned()
}

/// How a live update driven over `XS_CONTROL` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveUpdateOutcome {
    /// `-s` was answered `OK` (by the new process).
    Done,
    /// A step was answered with something else: which step (`-f`, `-c`,
    /// `-s`) and the answer (a reply text, or the error reply's name).
    Refused {
        /// The sub-command that was not answered `OK`.
        step: &'static str,
        /// What the daemon answered.
        answer: String,
    },
}

fn control_answer<T: std::io::Read + std::io::Write>(
    c: &mut xenring::Client<T>,
    args: &[&str],
) -> Result<String, xenring::Error> {
    match c.control(args) {
        Ok(payload) => Ok(reply_text(&payload)),
        Err(xenring::Error::Xs(errno)) => Ok(format!("error reply {errno:?}")),
        Err(e) => Err(e),
    }
}

/// Drives a live update over `XS_CONTROL` the way Xen's `xenstore-control
/// live-update [-c CMDLINE] [-F] BINARY` does: `-f BINARY`, `-c CMDLINE`
/// if given, then `-s -t SECONDS [-F]`, repeated while the daemon answers
/// `BUSY` (within [`LIMIT`]). Transport errors are returned; answers other
/// than `OK` are [`LiveUpdateOutcome::Refused`].
pub fn live_update<T: std::io::Read + std::io::Write>(
    c: &mut xenring::Client<T>,
    binary: &Path,
    cmdline: Option<&str>,
    force: bool,
) -> Result<LiveUpdateOutcome, xenring::Error> {
    let binary = binary.to_str().expect("UTF-8 binary path");
    let answer = control_answer(c, &["live-update", "-f", binary])?;
    if answer != "OK" {
        return Ok(LiveUpdateOutcome::Refused { step: "-f", answer });
    }
    if let Some(cmdline) = cmdline {
        let answer = control_answer(c, &["live-update", "-c", cmdline])?;
        if answer != "OK" {
            return Ok(LiveUpdateOutcome::Refused { step: "-c", answer });
        }
    }
    let timeout = LIMIT.as_secs().to_string();
    let mut args = vec!["live-update", "-s", "-t", timeout.as_str()];
    if force {
        args.push("-F");
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let answer = control_answer(c, &args)?;
        match answer.as_str() {
            "OK" => return Ok(LiveUpdateOutcome::Done),
            "BUSY" if Instant::now() < deadline => continue,
            _ => return Ok(LiveUpdateOutcome::Refused { step: "-s", answer }),
        }
    }
}

/// One live update as the daemon's log reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveUpdateRecord {
    /// Whether it was a pre-copy (its freeze wrote the state).
    pub precopy: bool,
    /// Size of the state stream the old process wrote.
    pub stream_bytes: u64,
    /// How long the old process took to write it.
    pub write_ms: f64,
    /// How long the new process took to restore it (`None` until it has).
    pub restore_ms: Option<f64>,
    /// Nodes the new process restored, if its line says
    /// (`restored <N> nodes ...`).
    pub restored_nodes: Option<u64>,
}

/// The live updates a daemon's log reports: the old process's
/// `live-update: wrote <N> bytes of state in <ms> ms` and the new one's
/// `live-update: restored ... in <ms> ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveUpdateLog {
    /// Oldest first.
    pub updates: Vec<LiveUpdateRecord>,
    /// How many `restored` lines there are (a restore from a stream that
    /// another daemon wrote has no `wrote` line here).
    pub restored: usize,
}

impl LiveUpdateLog {
    /// Reads the records out of a log.
    pub fn parse(log: &str) -> Self {
        let mut out = Self::default();
        for line in log.lines() {
            if let Some(rest) = after(line, "live-update: wrote ") {
                let mut words = rest.split_whitespace();
                let bytes = words.next().and_then(|w| w.parse().ok());
                let ms = after(rest, "bytes of state in ")
                    .and_then(|t| t.split_whitespace().next()?.parse().ok());
                if let (Some(stream_bytes), Some(write_ms)) = (bytes, ms) {
                    out.updates.push(LiveUpdateRecord {
                        precopy: rest.contains("(pre-copy freeze"),
                        stream_bytes,
                        write_ms,
                        restore_ms: None,
                        restored_nodes: None,
                    });
                }
            } else if let Some(rest) = after(line, "live-update: restored ") {
                out.restored += 1;
                if let Some(ms) = ms_at_end(rest) {
                    if let Some(last) = out.updates.last_mut() {
                        if last.restore_ms.is_none() {
                            last.restore_ms = Some(ms);
                            let mut words = rest.split_whitespace();
                            let n = words.next().and_then(|w| w.parse().ok());
                            last.restored_nodes =
                                n.filter(|_| words.next().is_some_and(|w| w.starts_with("nodes")));
                        }
                    }
                }
            }
        }
        out
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

/// `... in <ms> ms` at the end of a log line.
fn ms_at_end(text: &str) -> Option<f64> {
    let at = text.rfind(" in ")?;
    let rest = &text[at + 4..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Creates a guest domain the way a toolstack does: its home owned by it,
/// then `INTRODUCE` (`dom0` must be privileged).
pub fn create_guest<T: std::io::Read + std::io::Write>(
    ts: &mock_xen::Toolstack,
    dom0: &mut xenring::Client<T>,
) -> mock_xen::DomainRecord {
    let rec = ts.create_domain().expect("create a domain");
    let d = rec.info.domid;
    let home = format!("/local/domain/{d}");
    dom0.mkdir(0, &home).expect("mkdir the guest's home");
    dom0.set_perms(0, &home, &[xenring::Perm::new(xenring::PermKind::None, d)])
        .expect("give the guest its home");
    ts.introduce(dom0, &rec).expect("INTRODUCE");
    rec
}

/// The guest's xenstore client over its ring, blocking up to [`LIMIT`].
pub fn guest_client(
    connector: &mock_xen::Connector,
    rec: &mock_xen::DomainRecord,
) -> xenring::Client<mock_xen::Guest> {
    let mut guest = mock_xen::Guest::attach(connector, rec).expect("attach the guest");
    guest.set_block_limit(LIMIT);
    xenring::Client::new(guest)
}

#[cfg(test)]
mod unit {
    use super::*;

    /// Newest modification time of the `.rs` files under `dir`.
    fn newest_source(dir: &Path) -> std::time::SystemTime {
        let mut newest = std::time::SystemTime::UNIX_EPOCH;
        for entry in std::fs::read_dir(dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            let t = if path.is_dir() {
                newest_source(&path)
            } else if path.extension().is_some_and(|e| e == "rs") {
                path.metadata().and_then(|m| m.modified()).expect("mtime")
            } else {
                continue;
            };
            newest = newest.max(t);
        }
        newest
    }

    #[test]
    fn binaries_are_built_once_per_process_and_are_not_older_than_their_source() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| [bin("xenstored-lite"), bin("mock-xen-guest")]))
            .collect();
        let paths: Vec<PathBuf> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("a thread calling bin()"))
            .collect();
        assert_eq!(builds_so_far(), 1, "one cargo build for every caller");
        bin("mock-xen");
        assert_eq!(builds_so_far(), 1, "and none for later calls");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (binary, crate_dir) in [
            (&paths[0], "xenstored-lite/src"),
            (&paths[1], "mock-xen/src"),
        ] {
            let built = binary
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
            assert!(
                built >= newest_source(&root.join(crate_dir)),
                "{} is older than {crate_dir}",
                binary.display()
            );
        }
    }

    #[test]
    fn live_update_log_lines_are_read() {
        let log = "\
2026-11-21T18:57:15Z INFO x: live-update: start; dry run of /bin/x
2026-11-21T18:57:15Z INFO x: live-update: wrote 39536 bytes of state in 2 ms; exec /a in b/x
2026-11-21T18:57:15Z INFO x: xenstored-lite starting on mock-xen
2026-11-21T18:57:15Z INFO x: live-update: restored 120 nodes, 3 watches, 2 socket and 1 ring connections (0 gone) in 13 ms
2026-11-21T18:57:16Z INFO x: live-update: wrote 40000 bytes of state in 3 ms (pre-copy freeze: 39000 of stream without the committed nodes, 1000 of store changes); waiting
";
        let parsed = LiveUpdateLog::parse(log);
        assert_eq!(parsed.restored, 1);
        assert_eq!(
            parsed.updates,
            vec![
                LiveUpdateRecord {
                    precopy: false,
                    stream_bytes: 39536,
                    write_ms: 2.0,
                    restore_ms: Some(13.0),
                    restored_nodes: Some(120),
                },
                LiveUpdateRecord {
                    precopy: true,
                    stream_bytes: 40000,
                    write_ms: 3.0,
                    restore_ms: None,
                    restored_nodes: None,
                },
            ]
        );
    }
}
