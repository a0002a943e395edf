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
    let out = Command::new(bin("xenstored-lite"))
        .arg("--help")
        .output()
        .unwrap();
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
        let out = Command::new(bin("xenstored-lite"))
            .args(args)
            .env("XENSTORED_RUNDIR", dir.path().join("run"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
