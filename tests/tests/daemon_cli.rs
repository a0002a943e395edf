//! The operator interface: readiness notification, pid file, help, errors.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{bin, wait_until, Proc};

#[test]
fn test_daemon_notifies_systemd_and_writes_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let pid_file = dir.path().join("xenstored.pid");
    let child = Command::new(bin("xenstored-lite"))
        .args(["-N", "--platform", "mock", "-F"])
        .arg(&pid_file)
        .env("XENSTORED_RUNDIR", dir.path().join("run"))
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _daemon = Proc { child };
    let mut buf = [0u8; 64];
    let n = listener.recv(&mut buf).expect("READY=1 within the bound");
    assert_eq!(&buf[..n], b"READY=1");
    wait_until("the pid file", || pid_file.exists());
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
}

#[test]
fn test_daemon_help_explains_every_c_xenstored_flag() {
    let out = tests::output_within_limit(
        Command::new(bin("xenstored-lite")).arg("--help"),
        "xenstored-lite --help",
    );
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--pid-file",
        "--trace-file",
        "--no-fork",
        "--entry-nb",
        "--entry-size",
        "--watch-nb",
        "--transaction",
        "--perm-nb",
        "--path-max",
        "--quota",
        "--quota-soft",
        "--timeout",
        "--keep-orphans",
        "--priv-domid",
        "--verbose",
        "--socket",
        "--platform",
        "--mock-xen",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn test_daemon_bad_input_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (&["-N", "-Q", "bogus=1"][..], "unknown quota \"bogus\""),
        (&["-N", "--platform", "qemu"][..], "--platform \"qemu\""),
        (&["-N", "--platform", "linux"][..], "/dev/xen"),
    ] {
        let out = tests::output_within_limit(
            Command::new(bin("xenstored-lite"))
                .args(args)
                .env("XENSTORED_RUNDIR", dir.path().join("run")),
            &format!("xenstored-lite {}", args.join(" ")),
        );
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// State of process `pid` ('R', 'S', 'Z'...), None once it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// A detached daemon (not our child), stopped with SIGTERM when dropped.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// Without -N the daemon forks the way Debian's /etc/init.d/xen expects of
/// it (start-stop-daemon --start, then a wait for the socket): the starting
/// process returns once the detached one serves, the pid file names the
/// detached one, the caller's pipes are let go of, and a second start
/// leaves the running daemon alone.
#[test]
fn test_daemon_forks_by_default_and_a_second_start_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let rundir = dir.path().join("run");
    let pid_file = dir.path().join("xenstore.pid");
    let start = || {
        let child = Command::new(bin("xenstored-lite"))
            .args(["--platform", "mock", "--pid-file"])
            .arg(&pid_file)
            .env("XENSTORED_RUNDIR", &rundir)
            .env_remove("XENSTORED_PATH")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let starter = child.id();
        // Returns only when every holder of the pipes has let go of them.
        (starter, child.wait_with_output().unwrap())
    };
    let (starter, out) = start();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file exists when the starting process returns")
        .trim()
        .parse()
        .unwrap();
    let _daemon = Detached(pid);
    assert_ne!(pid, starter, "the pid file names the detached process");
    assert!(
        matches!(proc_state(pid), Some(s) if s != 'Z'),
        "daemon {pid} is not running"
    );
    let mut xs = tests::client(&rundir.join("socket"));
    xs.write(0, "/tool/forked", b"yes").unwrap();

    let (_, again) = start();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(err.contains("already serves"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert_eq!(xs.read(0, "/tool/forked").unwrap(), b"yes");

    let killed = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(killed.success(), "kill {pid}: {killed}");
    wait_until("the daemon to stop on SIGTERM", || {
        matches!(proc_state(pid), None | Some('Z'))
    });
}
