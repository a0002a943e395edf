//! What the README and `--help` claim of the daemon as a process: the
//! start-up line of the embedded default, and `--priv-domid`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use mock_xen::Toolstack;
use tests::{bin, create_guest, guest_client, wait_until, Daemon, MockXen, Proc};
use xenring::{Error as XsError, Perm, PermKind, XsErrno};

/// Says on stderr (where `scripts/test.sh` collects it) why a test does
/// not run.
fn skip(what: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "skipping: {what}: {why}");
}

/// The README's first command: `XENSTORED_RUNDIR=$PWD/run xenstored-lite
/// -N`. With no /dev/xen the daemon runs on an embedded mock-xen and says
/// so in one line at start-up, naming the socket guests join at; then it
/// serves `$XENSTORED_RUNDIR/socket`.
#[test]
fn test_embedded_default_says_so_in_one_line_then_serves() {
    if Path::new("/dev/xen/evtchn").exists() {
        skip(
            "the embedded default's start-up line",
            "this machine has /dev/xen, so the default is the Xen devices",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rundir = dir.path().join("run");
    let log = dir.path().join("stderr");
    let child = Command::new(bin("xenstored-lite"))
        .arg("-N")
        .env("XENSTORED_RUNDIR", &rundir)
        .env_remove("XENSTORED_PATH")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _daemon = Proc { child };
    let socket = rundir.join("socket");
    let text = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    wait_until("the line saying it serves", || {
        text()
            .lines()
            .any(|l| l.ends_with(&format!("serving {}", socket.display())))
    });
    let out = text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line about the platform, then serving:\n{out}"
    );
    let hv_socket = rundir.join("mock-xen.sock");
    let line = lines[0];
    let (head, tail) = line
        .split_once(" (simulated hypervisor; a process of its own, pid ")
        .unwrap_or_else(|| panic!("not the start-up line: {line}"));
    assert!(
        head.ends_with(
            "xenstored-lite starting on no /dev/xen here: running on an embedded mock-xen"
        ),
        "{line}"
    );
    let (hv_pid, rest) = tail.split_once(')').unwrap();
    assert_eq!(
        rest,
        format!(", guests join at {}", hv_socket.display()),
        "{line}"
    );
    // The mock-xen it names is the daemon's own child.
    let stat = std::fs::read_to_string(format!("/proc/{hv_pid}/stat")).unwrap();
    let ppid = stat.rsplit(") ").next().unwrap().split(' ').nth(1).unwrap();
    assert_eq!(ppid, pid.to_string(), "mock-xen's parent");
    assert!(lines[1].contains(" INFO "), "{}", lines[1]);

    // It serves the socket...
    let mut dom0 = xenring::Client::connect_unix(&socket).unwrap();
    dom0.write(0, "/local/domain/0/name", b"Domain-0").unwrap();
    assert_eq!(dom0.read(0, "/local/domain/0/name").unwrap(), b"Domain-0");
    // ... and guests join at the socket the line names.
    let connector = mock_xen::Connector::remote(&hv_socket);
    let ts = Toolstack::open(&connector).unwrap();
    let rec = create_guest(&ts, &mut dom0);
    let mut guest = guest_client(&connector, &rec);
    guest.write(0, "data/greeting", b"hello").unwrap();
    let home = format!("/local/domain/{}/data/greeting", rec.info.domid);
    assert_eq!(dom0.read(0, &home).unwrap(), b"hello");
}

/// `--priv-domid N`: domain N is the privileged (control) domain — its
/// ring may read and write anywhere and introduce domains, and it cannot be
/// released — and the socket clients act for it: their relative paths are
/// under N's home and what they create is N's.
#[test]
fn test_priv_domid_makes_that_domain_privileged_and_sockets_act_for_it() {
    const N: u16 = 1;
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let daemon = Daemon::start(
        dir.path(),
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "--priv-domid",
            &N.to_string(),
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut sock = daemon.client();

    // The privileged domain is known before anyone introduces it; dom0 is
    // not privileged any more, so not known either.
    assert!(sock.is_domain_introduced(N).unwrap());
    assert!(!sock.is_domain_introduced(0).unwrap());

    // Sockets act for N: relative paths and ownership.
    sock.write(0, "relative", b"r").unwrap();
    assert_eq!(
        sock.read(0, &format!("/local/domain/{N}/relative"))
            .unwrap(),
        b"r"
    );
    sock.write(0, "/made-by-socket", b"s").unwrap();
    assert_eq!(
        sock.get_perms(0, "/made-by-socket").unwrap()[0],
        Perm::new(PermKind::None, N)
    );

    // A node nobody but dom0 may touch.
    sock.write(0, "/secret", b"x").unwrap();
    sock.set_perms(0, "/secret", &[Perm::new(PermKind::None, 0)])
        .unwrap();

    let privileged = create_guest(&ts, &mut sock);
    assert_eq!(
        privileged.info.domid, N,
        "mock-xen's first guest is domain 1"
    );
    let plain = create_guest(&ts, &mut sock);
    let mut n = guest_client(&connector, &privileged);
    let mut other = guest_client(&connector, &plain);

    // Domain N may read and write anywhere; another guest may not.
    assert_eq!(n.read(0, "/secret").unwrap(), b"x");
    n.write(0, "/secret", b"y").unwrap();
    n.write(0, "/tool/by-priv", b"1").unwrap();
    assert!(matches!(
        other.read(0, "/secret"),
        Err(XsError::Xs(XsErrno::EACCES))
    ));
    assert!(matches!(
        other.write(0, "/tool/by-other", b"1"),
        Err(XsError::Xs(XsErrno::EACCES))
    ));

    // Domain N may introduce a domain; another guest may not.
    let third = ts.create_domain().unwrap();
    assert!(matches!(
        ts.introduce(&mut other, &third),
        Err(XsError::Xs(XsErrno::EACCES))
    ));
    ts.introduce(&mut n, &third).unwrap();
    assert!(sock.is_domain_introduced(third.info.domid).unwrap());

    // The privileged domain cannot be released; another one can.
    assert!(matches!(sock.release(N), Err(XsError::Xs(XsErrno::EINVAL))));
    sock.release(plain.info.domid).unwrap();
    wait_until("domain released", || {
        !sock.is_domain_introduced(plain.info.domid).unwrap()
    });
}

/// `-U --dry-run=STATE` (`--help`): only checks that the state can be
/// restored, then exits — 0 if it can. The real stream Xen 4.17's C
/// xenstored wrote restores; every truncation of it is refused, naming
/// the file, with the parser's reason.
#[test]
fn test_dry_run_accepts_a_c_stream_and_refuses_a_truncated_one() {
    const FIXTURE: &[u8] = include_bytes!(
        "../../xenstored-lite/src/migration/testdata/c-xenstored-4.17-live-update.stream"
    );
    let dir = tempfile::tempdir().unwrap();
    let dry_run = |bytes: &[u8]| {
        let state = dir.path().join("state");
        std::fs::write(&state, bytes).unwrap();
        let out = Command::new(bin("xenstored-lite"))
            .arg("-U")
            .arg(format!("--dry-run={}", state.display()))
            .env("XENSTORED_RUNDIR", dir.path().join("run"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            state,
        )
    };
    let (code, stderr, _) = dry_run(FIXTURE);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "dry run: the state restores (16 nodes, 2 watches, 2 socket and 2 ring connections)"
        ),
        "{stderr}"
    );
    // Nothing was served: no socket, no mock-xen.
    assert!(!dir.path().join("run").join("socket").exists());
    for cut in [0, 15, 16, FIXTURE.len() / 2, FIXTURE.len() - 8] {
        let (code, stderr, state) = dry_run(&FIXTURE[..cut]);
        assert_eq!(code, Some(1), "cut at {cut}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "live update: the state in {} is not usable: ",
                state.display()
            )),
            "cut at {cut}: {stderr}"
        );
    }
}
