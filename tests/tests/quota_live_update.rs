//! Quotas across a live update, end to end: mock-xen, the daemon and this
//! test are separate processes; a guest's own quotas (`XS_SET_QUOTA` for
//! one domain) and the global ones set at run time must be what
//! `XS_GET_QUOTA` answers after the daemon has exec'd itself, and must
//! still be enforced on the guest's connection opened before the update.

use std::os::unix::net::UnixStream;

use mock_xen::Toolstack;
use tests::{
    create_guest, guest_client, live_update, reply_text, Daemon, LiveUpdateOutcome, MockXen, LIMIT,
};
use xenring::{Client, DomId, Error as XsError, XsErrno};

type Sock = Client<UnixStream>;

fn socket_client(daemon: &Daemon) -> Sock {
    let c = daemon.client();
    c.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
    c
}

/// The `nodes` figure of `xenstore-control quota <domid>` (C's layout:
/// `nodes           :        N`).
fn nodes_owned(dom0: &mut Sock, domid: DomId) -> u32 {
    let d = domid.to_string();
    let report = reply_text(&dom0.control(&["quota", &d]).unwrap());
    report
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            (name.trim() == "nodes").then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no nodes line in {report:?}"))
}

fn enospc<T>(r: Result<T, XsError>) -> bool {
    matches!(r, Err(XsError::Xs(XsErrno::ENOSPC)))
}

#[test]
fn test_per_domain_and_global_quotas_survive_live_update_and_hold() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let mut daemon = Daemon::start(dir.path(), &["--mock-xen", hv.socket.to_str().unwrap()]);
    let ts = Toolstack::open(&hv.connector()).unwrap();
    let mut dom0 = socket_client(&daemon);
    let limited = create_guest(&ts, &mut dom0);
    let other = create_guest(&ts, &mut dom0);
    let (d, o) = (limited.info.domid, other.info.domid);
    let mut guest = guest_client(&hv.connector(), &limited);
    let mut bystander = guest_client(&hv.connector(), &other);

    const NODES: u32 = 4;
    dom0.set_quota(Some(d), "nodes", NODES).unwrap();
    dom0.set_quota(Some(d), "node-size", 16).unwrap();
    dom0.set_quota(Some(d), "memory", 100_000).unwrap();
    dom0.set_quota(None, "watches", 64).unwrap();
    let before: Vec<String> = ["nodes", "node-size", "memory", "watches"]
        .iter()
        .map(|q| dom0.get_quota(Some(d), Some(q)).unwrap())
        .collect();
    assert_eq!(before, ["4", "16", "100000", "64"]);

    let pid = daemon.pid();
    let restored = daemon.live_updates().restored;
    let mut control = socket_client(&daemon);
    let outcome = live_update(&mut control, &tests::bin("xenstored-lite"), None, false).unwrap();
    assert_eq!(
        outcome,
        LiveUpdateOutcome::Done,
        "log:\n{}",
        daemon.log_text()
    );
    assert!(daemon.running(), "{}", daemon.log_text());
    assert_eq!(daemon.pid(), pid, "exec'd in place");
    tests::wait_until("the new process's restore line", || {
        daemon.live_updates().restored > restored
    });

    // The same answers from the new process, on connections opened before.
    for (q, want) in [
        ("nodes", "4"),
        ("node-size", "16"),
        ("memory", "100000"),
        ("watches", "64"),
    ] {
        assert_eq!(
            dom0.get_quota(Some(d), Some(q)).unwrap(),
            want,
            "{q} of {d}"
        );
    }
    assert_eq!(dom0.get_quota(None, Some("watches")).unwrap(), "64");
    assert_eq!(dom0.get_quota(None, Some("nodes")).unwrap(), "1000");
    assert_eq!(dom0.get_quota(Some(o), Some("nodes")).unwrap(), "1000");
    assert_eq!(dom0.get_quota(Some(o), Some("node-size")).unwrap(), "2048");

    // And enforced: the guest creates nodes up to its quota and no more.
    let owned = nodes_owned(&mut dom0, d);
    assert!(owned < NODES, "the guest owns {owned} nodes already");
    for i in owned..NODES {
        guest
            .write(0, &format!("n{i}"), b"")
            .unwrap_or_else(|e| panic!("node {} of {NODES}: {e}", i + 1));
    }
    assert_eq!(nodes_owned(&mut dom0, d), NODES);
    assert!(enospc(guest.write(0, "one-too-many", b"")), "nodes quota");
    assert!(guest.read(0, "one-too-many").is_err());
    let n = format!("n{owned}");
    guest.write(0, &n, &[b'v'; 16]).unwrap();
    assert!(enospc(guest.write(0, &n, &[b'v'; 17])), "node-size quota");
    assert_eq!(guest.read(0, &n).unwrap(), [b'v'; 16]);
    // The other guest has the global quotas.
    for i in 0..NODES + 1 {
        bystander.write(0, &format!("n{i}"), &[b'w'; 17]).unwrap();
    }
    assert_eq!(reply_text(&dom0.control(&["check"]).unwrap()).trim(), "OK");
}
