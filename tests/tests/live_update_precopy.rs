//! The pre-copy live update end to end (mock-xen, the daemon and this test
//! are separate processes): the store goes over while the old daemon
//! serves, and what changed meanwhile goes at the freeze. A writer keeps
//! writing and removing nodes through the update (the daemon is told, by
//! `XSL_LU_PRECOPY_MIN_REQUESTS`, to serve a number of requests after the
//! split before it freezes, so that changes do fall in the copy's window);
//! afterwards the store is exactly what the acknowledged requests made it,
//! a transaction opened before commits after, a watch fires, and the crash
//! journal, which now begins with the store images, recovers the same
//! store after a `kill -9`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use tests::{live_update, wait_until, Daemon, LiveUpdateOutcome, MockXen, LIMIT};
use xenring::Client;

type Sock = Client<UnixStream>;

fn socket_client(socket: &Path) -> Sock {
    let c = tests::client(socket);
    c.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
    c
}

/// Every node under `path` with its value, depth first.
fn dump(c: &mut Sock, path: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    out.insert(path.to_string(), c.read(0, path).unwrap());
    let mut children = c.directory(0, path).unwrap();
    children.sort();
    for child in children {
        let p = if path == "/" {
            format!("/{child}")
        } else {
            format!("{path}/{child}")
        };
        dump(c, &p, out);
    }
}

fn whole(c: &mut Sock) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    dump(c, "/", &mut out);
    out
}

/// Writes `/w/k<i>` and removes `/w/k<i-40>`, back to back, until told to
/// stop; returns what the acknowledged requests left (`Some` value, or
/// `None` for removed).
fn writer(
    socket: &Path,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<String, Option<Vec<u8>>>> {
    let mut c = socket_client(socket);
    std::thread::spawn(move || {
        let mut want = BTreeMap::new();
        let mut i = 0u64;
        while !stop.load(SeqCst) {
            let key = format!("/w/k{i}");
            let value = format!("v{i}").into_bytes();
            c.write(0, &key, &value).unwrap();
            want.insert(key, Some(value));
            if i >= 40 {
                let old = format!("/w/k{}", i - 40);
                c.rm(0, &old).unwrap();
                want.insert(old, None);
            }
            i += 1;
        }
        want
    })
}

/// The octets of store changes the freeze carried, from the log.
fn change_octets(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let at = l.find(" of store changes")?;
            let before = &l[..at];
            before.rsplit(' ').next()?.parse().ok()
        })
        .collect()
}

fn start(dir: &Path, hv: &MockXen, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
    let args = ["--mock-xen", hv.socket.to_str().unwrap(), "--journal=on"];
    let daemon = Daemon::start_env(dir, &args, env);
    wait_until("the daemon to answer", || {
        UnixStream::connect(&daemon.socket).is_ok()
    });
    daemon
}

#[test]
fn test_precopy_carries_what_changed_during_the_copy_and_the_journal_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let min = std::ffi::OsString::from("300");
    let mut daemon = start(dir.path(), &hv, &[("XSL_LU_PRECOPY_MIN_REQUESTS", &min)]);
    let pid = daemon.pid();
    let mut dom0 = socket_client(&daemon.socket);
    for d in 0..200 {
        dom0.write(
            0,
            &format!("/local/domain/{d}/name"),
            format!("guest-{d}").as_bytes(),
        )
        .unwrap();
        dom0.write(0, &format!("/local/domain/{d}/memory/target"), b"524288")
            .unwrap();
    }
    // A transaction open across the update, and a watch.
    let mut tx_client = socket_client(&daemon.socket);
    let tx = tx_client.transaction_start().unwrap();
    tx_client
        .write(tx, "/tx/inside", b"committed later")
        .unwrap();
    let mut watcher = socket_client(&daemon.socket);
    watcher.watch("/watched", "tok").unwrap();
    assert_eq!(watcher.next_watch_event().unwrap().path, "/watched");

    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(&daemon.socket, Arc::clone(&stop));
    let mut control = socket_client(&daemon.socket);
    let binary = tests::bin("xenstored-lite");
    let outcome = live_update(&mut control, &binary, None, false).unwrap();
    stop.store(true, SeqCst);
    let want = writing.join().unwrap();
    assert_eq!(outcome, LiveUpdateOutcome::Done, "{}", daemon.log_text());
    assert_eq!(daemon.pid(), pid);
    let log = daemon.log_text();
    assert!(
        log.contains("live-update: pre-copy: exec"),
        "no pre-copy:\n{log}"
    );
    let changes = change_octets(&log);
    assert_eq!(changes.len(), 1, "one freeze:\n{log}");
    // The image of the changes holds more than its empty header (32).
    assert!(changes[0] > 32, "no change went at the freeze:\n{log}");
    // Its journal's beginning (the store image) was written while the old
    // daemon served.
    assert!(
        log.contains("the crash journal written ahead ("),
        "no journal written ahead:\n{log}"
    );

    // The store is what the acknowledged requests made it.
    let mut c = socket_client(&daemon.socket);
    for (key, value) in &want {
        match value {
            Some(v) => assert_eq!(&c.read(0, key).unwrap(), v, "{key}"),
            None => assert!(c.read(0, key).is_err(), "{key} is back"),
        }
    }
    assert_eq!(
        c.read(0, "/local/domain/199/memory/target").unwrap(),
        b"524288"
    );
    tx_client.transaction_end(tx, true).unwrap();
    assert_eq!(c.read(0, "/tx/inside").unwrap(), b"committed later");
    c.write(0, "/watched/child", b"x").unwrap();
    assert_eq!(watcher.next_watch_event().unwrap().path, "/watched/child");
    assert_eq!(
        tests::reply_text(&c.control(&["check"]).unwrap()).trim(),
        "OK"
    );
    // Nothing serves from a child: the old daemon's process has ended.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    assert_eq!(children.trim(), "");
    let before = whole(&mut c);

    // The journal the new process began (store images, then the Restore)
    // brings the same store back after a kill -9.
    daemon.proc.child.kill().unwrap();
    daemon.proc.child.wait().unwrap();
    let daemon = start(dir.path(), &hv, &[]);
    wait_until("the recovery's log line", || {
        daemon.log_text().contains("crash recovery: restored")
    });
    let log = daemon.log_text();
    assert!(log.contains(" 0 divergences"), "{log}");
    let mut c = socket_client(&daemon.socket);
    assert_eq!(whole(&mut c), before);
}

#[test]
fn test_xsl_lu_precopy_0_gives_the_classic_hand_over() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let off = std::ffi::OsString::from("0");
    let daemon = start(dir.path(), &hv, &[("XSL_LU_PRECOPY", &off)]);
    let pid = daemon.pid();
    let mut c = socket_client(&daemon.socket);
    for i in 0..100 {
        c.write(0, &format!("/n/{i}"), b"v").unwrap();
    }
    let before = whole(&mut c);
    let outcome = live_update(&mut c, &tests::bin("xenstored-lite"), None, false).unwrap();
    assert_eq!(outcome, LiveUpdateOutcome::Done, "{}", daemon.log_text());
    assert_eq!(daemon.pid(), pid);
    let log = daemon.log_text();
    assert!(
        log.contains("no pre-copy (XSL_LU_PRECOPY=0): a classic hand-over"),
        "{log}"
    );
    assert!(!log.contains("pre-copy: exec"), "{log}");
    assert_eq!(whole(&mut c), before);
}
