//! The soft memory quota, across processes: the daemon started with
//! `-q memory=N` logs when a guest's memory use goes above N (once per
//! crossing), refuses none of its writes, and logs when it is back within.

use mock_xen::Toolstack;
use tests::{create_guest, guest_client, reply_text, wait_until, Daemon, MockXen};
use xenring::Client;

const SOFT: u64 = 3000;

/// Domain `d`'s memory use, from `xenstore-control quota <domid>`'s reply.
fn memory_of<T: std::io::Read + std::io::Write>(dom0: &mut Client<T>, d: u16) -> u64 {
    let report = reply_text(&dom0.control(&["quota", &d.to_string()]).unwrap());
    report
        .lines()
        .find_map(|l| l.strip_prefix("memory"))
        .and_then(|rest| rest.trim_start_matches([' ', ':']).trim().parse().ok())
        .unwrap_or_else(|| panic!("no memory line in {report:?}"))
}

/// Lines of the daemon's log containing `needle`.
fn lines_with(daemon: &Daemon, needle: &str) -> Vec<String> {
    daemon
        .log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Has the daemon log `marker` (XS_CONTROL print) and waits for it: every
/// line logged for requests before it is in the log by then.
fn barrier<T: std::io::Read + std::io::Write>(daemon: &Daemon, dom0: &mut Client<T>, marker: &str) {
    assert_eq!(reply_text(&dom0.control(&["print", marker]).unwrap()), "OK");
    wait_until(marker, || !lines_with(daemon, marker).is_empty());
}

#[test]
fn test_soft_quota_crossing_logged_once_writes_carried_out() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let soft = format!("memory={SOFT}");
    let daemon = Daemon::start(
        dir.path(),
        // Every crossing logged at once (the lines' rate limit, on by
        // default, is `hostile_memory`'s subject, not this test's).
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "-q",
            &soft,
            "--guest-log-interval",
            "0",
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let rec = create_guest(&ts, &mut dom0);
    let d = rec.info.domid;
    let mut guest = guest_client(&connector, &rec);

    let over = format!("domain {d} uses ");
    let value = vec![b'v'; 200];
    let mut written = 0;
    while memory_of(&mut dom0, d) <= SOFT {
        assert!(written < 100, "the guest's writes are not charged to it");
        guest.write(0, &format!("data/k{written}"), &value).unwrap();
        written += 1;
    }
    let used = memory_of(&mut dom0, d);
    let line =
        format!("domain {d} uses {used} bytes of memory, over its soft quota of {SOFT} bytes");
    wait_until("the soft quota line", || {
        !lines_with(&daemon, &line).is_empty()
    });
    for i in 0..written {
        assert_eq!(
            guest.read(0, &format!("data/k{i}")).unwrap(),
            value,
            "write {i} was carried out"
        );
    }

    // Still above: more writes, nothing more logged.
    for i in 0..5 {
        guest.write(0, &format!("data/more{i}"), b"x").unwrap();
    }
    barrier(&daemon, &mut dom0, "soft-quota-test: still over");
    assert_eq!(
        lines_with(&daemon, &over).len(),
        1,
        "once per crossing:\n{}",
        daemon.log_text()
    );

    // Back within: one line.
    guest.rm(0, "data").unwrap();
    let used = memory_of(&mut dom0, d);
    assert!(used <= SOFT);
    let back = format!(
        "domain {d} uses {used} bytes of memory, within its soft quota of {SOFT} bytes again"
    );
    wait_until("the back-within line", || {
        !lines_with(&daemon, &back).is_empty()
    });
    barrier(&daemon, &mut dom0, "soft-quota-test: back");
    assert_eq!(lines_with(&daemon, &over).len(), 2, "{}", daemon.log_text());
}
