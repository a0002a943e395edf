//! Attacks from the host itself and through the daemon's own files
//! (issue 16, items 5, 8 and 13), against the real binary on a separate
//! mock-xen: an unprivileged local user and a umask of 000, a client flood
//! at the descriptor limit, and a guest whose path tries to forge a line
//! of the access log.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mock_xen::Toolstack;
use tests::{
    bin, create_guest, guest_client, live_update, skip, wait_until, Daemon, LiveUpdateOutcome,
    MockXen, Proc, LIMIT,
};
use xenring::{Client, MsgType, XsErrno};

/// Starts the daemon in the foreground through `sh -c 'PRELUDE; exec …'`
/// (a umask, a descriptor limit: what a careless init script leaves), with
/// its run directory at `rundir` (not created here: the daemon makes it).
fn start_under(dir: &Path, rundir: &Path, prelude: &str, args: &[&str]) -> Daemon {
    let socket = rundir.join("socket");
    let log_path = dir.join("xenstored.log");
    let log = File::create(&log_path).expect("log file");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(bin("xenstored-lite"))
        .arg("-N")
        .args(args)
        .env("XENSTORED_RUNDIR", rundir)
        .env_remove("XENSTORED_PATH")
        .stderr(log)
        .spawn()
        .expect("spawn sh for xenstored-lite");
    let proc = Proc { child };
    wait_until("the daemon's socket", || socket.exists());
    Daemon {
        rundir: rundir.to_path_buf(),
        socket,
        log: log_path,
        proc,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A program that runs as `nobody`, if this test runs as root and the
/// host has the tools.
fn as_nobody() -> Option<Vec<&'static str>> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false);
    if !root {
        return None;
    }
    if tests::installed("setpriv") {
        Some(vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
    } else if tests::installed("runuser") {
        Some(vec!["runuser", "-u", "nobody", "--"])
    } else {
        None
    }
}

/// What `nobody` gets when it connects to `socket` and sends XS_WRITE
/// `/pwned`: `refused: ...`, or `wrote` once it has the reply.
const NOBODY_WRITES: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("refused:", e)
    sys.exit(0)
body = b"/pwned\0x"
s.sendall(struct.pack("<IIII", 11, 1, 0, len(body)) + body)
s.recv(16)
print("wrote")
"#;

/// Item 5: under umask 000 the socket, the run directory, the access log,
/// the recording and the state dump a live update writes all get explicit
/// modes, and a non-root user can neither connect nor write dom0's store.
#[test]
fn test_umask_000_leaves_no_file_of_the_store_open_to_other_users() {
    let dir = tempfile::tempdir().unwrap();
    // Others may walk to the socket: only its own mode may keep them out.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hv = MockXen::start(dir.path());
    let rundir = dir.path().join("var/run/xenstored");
    let trace = dir.path().join("access.log");
    let record = dir.path().join("record");
    // An old log left 0666 by a careless hand: set to 0600 too.
    let old_log = dir.path().join("old-access.log");
    std::fs::write(&old_log, b"old\n").unwrap();
    std::fs::set_permissions(&old_log, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The new binary of the live update notes the state dump's mode
    // (the dry run gets its path; the restore finds it in the run dir).
    let modes = dir.path().join("state-modes");
    let wrapper = dir.path().join("xenstored-lite-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  case $a in\n    --dry-run=*) stat -c %a \"${{a#--dry-run=}}\" >> '{m}' ;;\n    -U) stat -c %a \"$XENSTORED_RUNDIR/state_dump\" >> '{m}' ;;\n  esac\ndone\nexec '{b}' \"$@\"\n",
            m = modes.display(),
            b = bin("xenstored-lite").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut daemon = start_under(
        dir.path(),
        &rundir,
        "umask 000",
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "-T",
            trace.to_str().unwrap(),
            "--replay-record",
            record.to_str().unwrap(),
        ],
    );
    let mut dom0 = daemon.client();
    dom0.write(0, "/secret", b"dom0 only").unwrap();
    dom0.control(&["logfile", old_log.to_str().unwrap()])
        .unwrap();
    dom0.write(0, "/secret2", b"dom0 only").unwrap();

    assert_eq!(mode(&daemon.socket), 0o600, "the socket");
    assert_eq!(mode(&rundir), 0o755, "the run directory");
    assert_eq!(
        mode(rundir.parent().unwrap()),
        0o755,
        "its parent, made with it"
    );
    assert_eq!(mode(&trace), 0o600, "the access log");
    assert_eq!(mode(&old_log), 0o600, "the access log it was switched to");
    assert_eq!(mode(&record), 0o700, "the recording's directory");
    assert_eq!(
        mode(&record.join("xenstored-lite.rec")),
        0o600,
        "the recording"
    );

    match as_nobody() {
        // Not a shim in root's home, which nobody cannot run.
        Some(prefix) if Path::new("/usr/bin/python3").exists() => {
            let out = Command::new(prefix[0])
                .args(&prefix[1..])
                .args(["/usr/bin/python3", "-c", NOBODY_WRITES])
                .arg(&daemon.socket)
                .output()
                .expect("run python3 as nobody");
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                said.starts_with("refused:") && said.contains("Permission denied"),
                "nobody: {said}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(matches!(
                dom0.read(0, "/pwned"),
                Err(xenring::Error::Xs(XsErrno::ENOENT))
            ));
        }
        _ => skip(
            "connecting as nobody",
            "needs root, setpriv or runuser, and /usr/bin/python3: modes checked only",
        ),
    }

    let outcome = live_update(&mut dom0, &wrapper, None, false).unwrap();
    assert_eq!(outcome, LiveUpdateOutcome::Done, "{}", daemon.log_text());
    assert!(daemon.running());
    let mut dom0 = daemon.client();
    assert_eq!(dom0.read(0, "/secret").unwrap(), b"dom0 only");
    let seen = std::fs::read_to_string(&modes).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["600", "600"],
        "the state dump, in the dry run and at the restore"
    );
    assert_eq!(mode(&daemon.socket), 0o600, "the socket after the update");
}

/// The daemon's CPU time so far (utime + stime, in clock ticks).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A client on the socket that is answered, or `None` when the daemon
/// closes the connection instead (refused at its descriptor limit).
fn try_client(socket: &Path) -> Option<Client<UnixStream>> {
    let s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.set_write_timeout(Some(LIMIT)).unwrap();
    let mut c = Client::new(s);
    match c.read(0, "/") {
        Ok(_) => Some(c),
        Err(xenring::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("a client was neither served nor refused within {LIMIT:?}")
        }
        Err(_) => None,
    }
}

fn accept_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("accept failed")).count()
}

/// Item 8: at its descriptor limit the daemon refuses new clients (closes
/// them) without spinning: its CPU time and its log stay flat while
/// clients keep knocking, a guest and the clients already connected are
/// served, and once descriptors free up new clients are served again.
#[test]
fn test_descriptor_limit_refuses_clients_without_spinning_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let rundir = dir.path().join("run");
    let mut daemon = start_under(
        dir.path(),
        &rundir,
        "ulimit -n 64",
        &["--mock-xen", hv.socket.to_str().unwrap()],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let rec = create_guest(&ts, &mut dom0);
    let mut guest = guest_client(&connector, &rec);
    guest.write(0, "data/k", b"0").unwrap();

    let mut held = Vec::new();
    loop {
        assert!(
            held.len() < 200,
            "no limit reached with {} clients",
            held.len()
        );
        match try_client(&daemon.socket) {
            Some(c) => held.push(c),
            None => break,
        }
    }
    assert!(
        held.len() > 20,
        "only {} clients before the limit",
        held.len()
    );

    let pid = daemon.pid();
    let log_before = daemon.log_text().len();
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    // Clients keep knocking; each is told at once (its connection closed).
    for i in 0..20 {
        assert!(
            try_client(&daemon.socket).is_none(),
            "knock {i} served with {} clients; log:\n{}",
            held.len(),
            daemon.log_text()
        );
    }
    // One more is left in the backlog unread while the daemon waits: a
    // listener that fires without end would spin on it.
    let knocking = UnixStream::connect(&daemon.socket).unwrap();
    // The guest and the clients already here are served meanwhile.
    for i in 0..50 {
        guest.write(0, "data/k", i.to_string().as_bytes()).unwrap();
        assert_eq!(guest.read(0, "data/k").unwrap(), i.to_string().as_bytes());
    }
    for c in held.iter_mut().take(10) {
        c.read(0, "/").unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let wall = started.elapsed();
    let cpu = Duration::from_millis((cpu_ticks(pid) - cpu_before) * 10);
    let log = daemon.log_text();
    let grown = log.len() - log_before;
    assert_eq!(
        accept_lines(&log),
        1,
        "one line per episode; the log grew {grown} bytes"
    );
    assert!(grown < 4096, "the log grew {grown} bytes");
    // A spinning loop takes a whole core: allow half of one.
    assert!(
        cpu < wall / 2,
        "the daemon used {cpu:?} of CPU in {wall:?} at its descriptor limit"
    );
    drop(knocking);

    // Descriptors free up: new clients are served again.
    held.truncate(held.len() - 10);
    let mut again = None;
    wait_until("a new client served", || {
        again = try_client(&daemon.socket);
        again.is_some()
    });
    again.unwrap().read(0, "/").unwrap();
    assert_eq!(guest.read(0, "data/k").unwrap(), b"49");
    assert!(daemon.running());
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("accepting connections again") && l.contains("refused")),
        "{log}"
    );
    assert_eq!(accept_lines(&log), 1, "{log}");
}

/// Item 13: a guest's path with a newline (and spaces, and bytes from
/// 0x80 up) stays on one escaped line of the access log: it cannot forge
/// a line claiming another connection's request.
#[test]
fn test_guest_path_cannot_forge_an_access_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let trace: PathBuf = dir.path().join("access.log");
    let daemon = Daemon::start(
        dir.path(),
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "-T",
            trace.to_str().unwrap(),
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let rec = create_guest(&ts, &mut dom0);
    let mut guest = guest_client(&connector, &rec);
    guest.write(0, "data/before", b"1").unwrap();
    let forged = b"data/x\n999 conn 1 domid 0 XS_WRITE tx 0 /tool/secret -> OK\n\xff\\";
    let mut payload = forged.to_vec();
    payload.extend_from_slice(b"\0v");
    assert!(
        matches!(
            guest.request(MsgType::Write, 0, &payload),
            Err(xenring::Error::Xs(XsErrno::EINVAL))
        ),
        "an invalid path"
    );
    guest.write(0, "data/after", b"1").unwrap();

    let log = std::fs::read(&trace).unwrap();
    let log = String::from_utf8(log).expect("the log is ASCII");
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("999 ") || l.contains("/tool/secret ->")),
        "a forged line:\n{log}"
    );
    let guest_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(&format!("domid {} ", rec.info.domid)))
        .filter(|l| l.contains("XS_WRITE"))
        .collect();
    assert_eq!(guest_lines.len(), 3, "one line per write:\n{log}");
    assert!(
        guest_lines[1].contains(
            "data/x\\x0a999\\x20conn\\x201\\x20domid\\x200\\x20XS_WRITE\\x20tx\\x200\\x20\
             /tool/secret\\x20->\\x20OK\\x0a\\xff\\\\ -> "
        ),
        "{}",
        guest_lines[1]
    );
    assert!(log
        .bytes()
        .all(|b| b == b'\n' || (b' '..=b'~').contains(&b)));
}
