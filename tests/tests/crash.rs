//! Crash survival end to end: mock-xen, the daemon and this test are
//! separate processes; the daemon is killed with SIGKILL (or panics) while
//! guests over rings and clients over its socket keep talking to it, and
//! is started again with the same command line. Guests must not notice:
//! every request answered once and rightly, every write acknowledged
//! kept, every watch event delivered once. Socket clients lose their
//! connection and reconnect, as after a restart of C xenstored.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_xen::{Guest, Toolstack};
use tests::{
    create_guest, guest_client, reply_text, wait_until, Daemon, MockXen, SetOnDrop, LIMIT,
};
use xenring::{Client, Error as XsError, XsErrno};

type Sock = Client<UnixStream>;

/// The daemon's arguments: a separate mock-xen (the machine outlives the
/// daemon, as Xen does), the journal on whatever the test directory is.
fn args(hv: &MockXen, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--mock-xen".to_string(),
        hv.socket.display().to_string(),
        "--journal=on".to_string(),
        "-E".to_string(),
        "100000".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts the daemon with `args` (again, after a crash: the socket file is
/// then still there, so wait until it answers).
fn start(dir: &Path, args: &[String]) -> Daemon {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(dir, &refs);
    wait_until("the daemon to answer on its socket", || {
        UnixStream::connect(&daemon.socket).is_ok()
    });
    daemon
}

/// Kills the daemon with SIGKILL and waits for it to be gone.
fn kill9(daemon: &mut Daemon) {
    daemon.proc.child.kill().expect("SIGKILL the daemon");
    daemon.proc.child.wait().expect("reap the daemon");
}

/// The log line of a recovery, once the daemon has written it.
fn recovered(daemon: &Daemon) -> String {
    wait_until("the recovery's log line", || {
        recovery_line(daemon).is_some()
    });
    recovery_line(daemon).unwrap_or_default()
}

/// The log line of a recovery, if the daemon wrote one.
fn recovery_line(daemon: &Daemon) -> Option<String> {
    daemon
        .log_text()
        .lines()
        .find(|l| l.contains("crash recovery: restored"))
        .map(str::to_string)
}

fn socket_client(socket: &Path) -> Sock {
    let c = tests::client(socket);
    c.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
    c
}

fn check_ok(dom0: &mut Sock) {
    let out = dom0.control(&["check"]).unwrap();
    assert_eq!(reply_text(&out), "OK");
}

// ---------------------------------------------------------------------------
// 1. Ten kills under load.

const KILLS: usize = 10;
const GUESTS: usize = 10;
const SOCKETS: usize = 2;
/// Requests every guest has had answered between two kills.
const MIN_PROGRESS: u64 = 40;

struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered, per guest.
    progress: Vec<AtomicU64>,
}

#[derive(Debug)]
struct Report {
    requests: u64,
    nodes: u64,
    transactions: u64,
}

/// A guest's work until told to stop: numbered writes to distinct nodes
/// under `data`, each read back; every fifth one inside a transaction
/// that also reads, with a second write; a watch on `data` whose events
/// must each come exactly once. Any error fails the guest (the client
/// itself fails on a reply it did not ask for: a reply written twice).
fn guest_work<T: Read + Write>(c: &mut Client<T>, idx: usize, load: &Load) -> Report {
    let tag = format!("g{idx}");
    let base = "data";
    c.write(0, base, b"").unwrap();
    c.watch(base, "w").unwrap();
    let mut expected = vec![base.to_string()];
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let see = |seen: &mut BTreeMap<String, u32>, ev: xenring::WatchEvent| {
        assert_eq!(ev.token, "w", "{tag}: event with a foreign token");
        let n = seen.entry(ev.path.clone()).or_default();
        *n += 1;
        assert_eq!(*n, 1, "{tag}: watch event for {} delivered twice", ev.path);
    };
    let (mut requests, mut i, mut transactions) = (0u64, 0u64, 0u64);
    while !load.stop.load(SeqCst) {
        let p = format!("{base}/n{i}");
        let v = format!("{tag}:{i}");
        if i % 5 == 4 {
            let tx = c
                .transaction_start()
                .unwrap_or_else(|e| panic!("{tag}: transaction start {i}: {e}"));
            c.write(tx, &p, v.as_bytes()).unwrap();
            assert_eq!(c.read(tx, &p).unwrap(), v.as_bytes(), "{tag}");
            let p2 = format!("{base}/t{i}");
            c.write(tx, &p2, b"tx").unwrap();
            c.transaction_end(tx, true)
                .unwrap_or_else(|e| panic!("{tag}: commit {i}: {e}"));
            assert_eq!(c.read(0, &p2).unwrap(), b"tx", "{tag}");
            expected.push(p2);
            requests += 6;
            transactions += 1;
        } else {
            c.write(0, &p, v.as_bytes())
                .unwrap_or_else(|e| panic!("{tag}: write {p}: {e}"));
            requests += 1;
        }
        assert_eq!(c.read(0, &p).unwrap(), v.as_bytes(), "{tag}: {p}");
        requests += 1;
        expected.push(p);
        i += 1;
        load.progress[idx].store(requests, SeqCst);
        while let Some(ev) = c.queued_watch_event() {
            see(&mut seen, ev);
        }
    }
    for p in &expected {
        while !seen.contains_key(p) {
            let ev = c
                .next_watch_event()
                .unwrap_or_else(|e| panic!("{tag}: waiting for the event for {p}: {e}"));
            see(&mut seen, ev);
        }
    }
    // A request answered after them: nothing was queued behind.
    assert_eq!(c.read(0, base).unwrap(), b"");
    while let Some(ev) = c.queued_watch_event() {
        see(&mut seen, ev);
    }
    let mut want = expected.clone();
    want.sort();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        want.iter().collect::<Vec<_>>(),
        "{tag}: events for exactly the paths written"
    );
    Report {
        requests,
        nodes: i,
        transactions,
    }
}

/// A socket client's work: writes it saw acknowledged, reconnecting
/// whenever the daemon goes away (the write that failed is done again:
/// it may or may not have happened). Returns how many were acknowledged.
fn socket_work(socket: &Path, idx: usize, load: &Load) -> u64 {
    let base = format!("/tool/crash/s{idx}");
    let mut acked = 0u64;
    let mut c: Option<Sock> = None;
    let deadline = Instant::now() + LIMIT * 10;
    while !load.stop.load(SeqCst) {
        assert!(Instant::now() < deadline, "socket client {idx}: no end");
        let Some(client) = c.as_mut() else {
            // One connection, used as it is: the daemon may be killed
            // again at any moment, even between two connects.
            c = UnixStream::connect(socket).ok().and_then(|s| {
                s.set_read_timeout(Some(LIMIT)).ok()?;
                s.set_write_timeout(Some(LIMIT)).ok()?;
                Some(Client::new(s))
            });
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match client.write(0, &format!("{base}/n{acked}"), acked.to_string().as_bytes()) {
            Ok(()) => acked += 1,
            Err(XsError::Xs(e)) => panic!("socket client {idx}: write refused: {e:?}"),
            Err(_) => c = None,
        }
    }
    acked
}

#[test]
fn test_ten_kills_under_load_guests_notice_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    // A short journal: snapshots start it anew between the kills, so
    // recoveries begin from one.
    let args = args(&hv, &["--journal-limit", "300000"]);
    let mut daemon = start(dir.path(), &args);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&daemon.socket);
    let records: Vec<_> = (0..GUESTS).map(|_| create_guest(&ts, &mut dom0)).collect();
    drop(dom0);

    let load = Arc::new(Load {
        stop: Arc::new(AtomicBool::new(false)),
        progress: (0..GUESTS).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop = SetOnDrop(Arc::clone(&load.stop));
    let mut guests = Vec::new();
    for (idx, rec) in records.iter().cloned().enumerate() {
        let (connector, load) = (connector.clone(), Arc::clone(&load));
        guests.push(std::thread::spawn(move || {
            let mut c: Client<Guest> = guest_client(&connector, &rec);
            guest_work(&mut c, idx, &load)
        }));
    }
    let mut sockets = Vec::new();
    for s in 0..SOCKETS {
        let (socket, load) = (daemon.socket.clone(), Arc::clone(&load));
        sockets.push(std::thread::spawn(move || socket_work(&socket, s, &load)));
    }
    let failed =
        |threads: &[std::thread::JoinHandle<Report>]| threads.iter().any(|t| t.is_finished());
    let mut since = vec![0u64; GUESTS];
    let mut recoveries = Vec::new();
    // The moments of the kills: spread, but the same in every run.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for k in 1..=KILLS {
        wait_until("every guest's progress since the last kill", || {
            failed(&guests)
                || (0..GUESTS).all(|i| load.progress[i].load(SeqCst) >= since[i] + MIN_PROGRESS)
        });
        if failed(&guests) {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(x % 150));
        kill9(&mut daemon);
        since = load.progress.iter().map(|p| p.load(SeqCst)).collect();
        daemon = start(dir.path(), &args);
        let line = recovered(&daemon);
        assert!(
            line.contains(&format!("{GUESTS} rings (0 gone)")),
            "kill {k}: {line}"
        );
        assert!(
            line.contains(" 0 divergences"),
            "kill {k}:\n{}",
            daemon.log_text()
        );
        recoveries.push(line);
    }
    wait_until("every guest's progress after the last kill", || {
        failed(&guests)
            || (0..GUESTS).all(|i| load.progress[i].load(SeqCst) >= since[i] + MIN_PROGRESS)
    });
    drop(stop);
    let reports: Vec<Report> = guests.into_iter().map(|t| t.join().unwrap()).collect();
    let acked: Vec<u64> = sockets.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(recoveries.len(), KILLS, "every kill was recovered from");

    let mut dom0 = socket_client(&daemon.socket);
    for (idx, (rec, r)) in records.iter().zip(&reports).enumerate() {
        assert!(r.transactions > 0, "guest {idx}: {r:?}");
        // Every write the guest saw acknowledged is in the store.
        let home = format!("/local/domain/{}/data", rec.info.domid);
        for i in 0..r.nodes {
            assert_eq!(
                dom0.read(0, &format!("{home}/n{i}")).unwrap(),
                format!("g{idx}:{i}").as_bytes(),
                "guest {idx}'s acknowledged write {i}"
            );
        }
        assert!(matches!(
            dom0.read(0, &format!("{home}/n{}", r.nodes)),
            Err(XsError::Xs(XsErrno::ENOENT))
        ));
    }
    for (s, &n) in acked.iter().enumerate() {
        for i in 0..n {
            assert_eq!(
                dom0.read(0, &format!("/tool/crash/s{s}/n{i}")).unwrap(),
                i.to_string().as_bytes(),
                "socket client {s}'s acknowledged write {i}"
            );
        }
    }
    check_ok(&mut dom0);
    let total: u64 = reports.iter().map(|r| r.requests).sum();
    println!("{KILLS} kills, {total} guest requests answered; recoveries:");
    for line in &recoveries {
        println!(
            "  {}",
            line.split("crash recovery: ").nth(1).unwrap_or(line)
        );
    }
}

// ---------------------------------------------------------------------------
// 2. A request that panics the engine.

/// The directory a recovery kept the crashed journal in, from its log.
fn kept_dir(log: &str) -> Option<PathBuf> {
    let line = log
        .lines()
        .find(|l| l.contains("the journal of the crash is kept in"))?;
    let rest = line.split("kept in ").nth(1)?;
    Some(PathBuf::from(rest.split(' ').next()?))
}

#[test]
fn test_a_request_that_panics_crashes_the_daemon_once() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let args = args(&hv, &["--test-panic-on-write", "/tool/poison"]);
    let mut daemon = start(dir.path(), &args);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&daemon.socket);
    let rec = create_guest(&ts, &mut dom0);
    dom0.write(0, "/tool/before", b"kept").unwrap();
    drop(dom0);
    let mut guest = guest_client(&connector, &rec);
    guest.write(0, "data/a", b"1").unwrap();

    // The guest's request panics the engine: the daemon dies.
    let req_id = guest
        .submit(xenring::MsgType::Write, 0, b"/tool/poison\0x")
        .unwrap();
    wait_until("the daemon to die of the request", || !daemon.running());
    assert!(daemon
        .log_text()
        .contains("test fault: a WRITE of /tool/poison"));

    // Started again: the request that crashed it is answered with an
    // error, once; the guest carries on.
    daemon = start(dir.path(), &args);
    match guest.wait_reply(req_id) {
        Err(XsError::Xs(XsErrno::EIO)) => {}
        other => panic!("the poisoned request: {other:?}\n{}", daemon.log_text()),
    }
    assert_eq!(guest.read(0, "data/a").unwrap(), b"1");
    guest.write(0, "data/b", b"2").unwrap();
    let log = daemon.log_text();
    assert!(log.contains("crashed the daemon; answered EIO"), "{log}");
    let line = recovered(&daemon);
    assert!(line.contains("(1 skipped"), "{line}");
    assert!(daemon.running(), "the daemon crashed again:\n{log}");

    // The journal of the crash is kept, and replaying it on another
    // machine shows the crash.
    let kept = kept_dir(&log).expect("the kept journal's directory in the log");
    assert!(kept.join("xenstored-lite.rec").exists());
    let replay = std::process::Command::new(tests::bin("xenstored-lite"))
        .arg(format!("--replay={}", kept.display()))
        .output()
        .unwrap();
    assert!(!replay.status.success());
    assert!(
        String::from_utf8_lossy(&replay.stderr).contains("test fault: a WRITE of /tool/poison"),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );

    // A second crash: the skipped request stays skipped, nothing is
    // answered twice, the daemon does not crash on it again.
    kill9(&mut daemon);
    daemon = start(dir.path(), &args);
    recovered(&daemon);
    assert_eq!(guest.read(0, "data/b").unwrap(), b"2");
    let mut dom0 = socket_client(&daemon.socket);
    assert_eq!(dom0.read(0, "/tool/before").unwrap(), b"kept");
    assert!(matches!(
        dom0.read(0, "/tool/poison"),
        Err(XsError::Xs(XsErrno::ENOENT))
    ));
    check_ok(&mut dom0);
    assert!(daemon.running());
}

// ---------------------------------------------------------------------------
// 3. A clean stop leaves nothing to recover.

#[test]
fn test_a_clean_stop_removes_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let args = args(&hv, &[]);
    let mut daemon = start(dir.path(), &args);
    let journal = daemon.rundir.join("journal").join("xenstored-lite.rec");
    let mut dom0 = socket_client(&daemon.socket);
    dom0.write(0, "/tool/x", b"1").unwrap();
    assert!(journal.exists());
    drop(dom0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("the daemon to stop", || !daemon.running());
    assert!(!journal.exists(), "{}", daemon.log_text());
    let daemon = start(dir.path(), &args);
    assert!(recovery_line(&daemon).is_none());
    let mut dom0 = socket_client(&daemon.socket);
    assert!(matches!(
        dom0.read(0, "/tool/x"),
        Err(XsError::Xs(XsErrno::ENOENT))
    ));
}

// ---------------------------------------------------------------------------
// 4. A domain that died while the daemon was down.

#[test]
fn test_a_domain_destroyed_while_the_daemon_was_dead_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let args = args(&hv, &[]);
    let mut daemon = start(dir.path(), &args);
    let ts = Toolstack::open(&hv.connector()).unwrap();
    let mut dom0 = socket_client(&daemon.socket);
    let gone = create_guest(&ts, &mut dom0);
    let stays = create_guest(&ts, &mut dom0);
    let mut g = guest_client(&hv.connector(), &stays);
    g.write(0, "data/x", b"1").unwrap();
    let mut doomed = guest_client(&hv.connector(), &gone);
    doomed.write(0, "data/y", b"2").unwrap();
    drop(dom0);
    kill9(&mut daemon);
    ts.destroy(gone.info.domid).unwrap();
    daemon = start(dir.path(), &args);
    let line = recovered(&daemon);
    assert!(line.contains("1 rings (1 gone)"), "{line}");
    let mut dom0 = socket_client(&daemon.socket);
    assert!(!dom0.is_domain_introduced(gone.info.domid).unwrap());
    assert!(matches!(
        dom0.read(0, &format!("/local/domain/{}/data/y", gone.info.domid)),
        Err(XsError::Xs(XsErrno::ENOENT))
    ));
    assert!(dom0.is_domain_introduced(stays.info.domid).unwrap());
    assert_eq!(g.read(0, "data/x").unwrap(), b"1");
}
