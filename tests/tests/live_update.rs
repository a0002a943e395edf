//! Live update end to end: mock-xen, the daemon and
//! this test are separate processes, and the daemon replaces itself with a
//! new binary — exec'd in place, same pid — while guests over rings and
//! clients over its socket keep talking to it on the connections they
//! opened before.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use mock_xen::{Guest, Toolstack};
use tests::{
    create_guest, guest_client, live_update, reply_text, wait_until, Daemon, LiveUpdateOutcome,
    MockXen, LIMIT, XENSTORE_CONTROL,
};
use xenring::{Client, Error as XsError, MsgType, XsErrno};

type Sock = Client<UnixStream>;

/// A client of the daemon's socket that gives up after [`LIMIT`] instead
/// of hanging if a reply or an event never comes.
fn socket_client(daemon: &Daemon) -> Sock {
    let c = daemon.client();
    c.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
    c
}

/// The daemon on a separate mock-xen process, with `extra` arguments.
fn start(dir: &Path, extra: &[&str]) -> (MockXen, Daemon) {
    let hv = MockXen::start(dir);
    let mut args = vec!["--mock-xen", hv.socket.to_str().unwrap()];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(dir, &args);
    (hv, daemon)
}

/// Live-updates `daemon` to `binary` over `control` and checks that it
/// happened in place: `OK`, the same process still running, one more
/// `restored` line in its log.
fn update_ok(daemon: &mut Daemon, control: &mut Sock, binary: &Path) {
    let pid = daemon.pid();
    let before = daemon.live_updates().restored;
    let outcome = live_update(control, binary, None, false).unwrap();
    assert_eq!(
        outcome,
        LiveUpdateOutcome::Done,
        "log:\n{}",
        daemon.log_text()
    );
    after_update(daemon, pid, before);
}

/// The same, driven by Xen's own `xenstore-control live-update BINARY`.
fn update_with_xenstore_control(daemon: &mut Daemon, binary: &Path) {
    let pid = daemon.pid();
    let before = daemon.live_updates().restored;
    let out = daemon.tool(XENSTORE_CONTROL, &["live-update", binary.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "xenstore-control live-update: {:?}\nstdout: {}\nstderr: {}\nlog:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
    after_update(daemon, pid, before);
}

fn after_update(daemon: &mut Daemon, pid: u32, restored_before: usize) {
    assert!(
        daemon.running(),
        "the daemon exited:\n{}",
        daemon.log_text()
    );
    assert_eq!(daemon.pid(), pid);
    // The new process logs its restore (right after it sent the OK).
    wait_until("the new process's restore line", || {
        daemon.live_updates().restored > restored_before
    });
    assert_eq!(
        daemon.live_updates().restored,
        restored_before + 1,
        "one restore per update:\n{}",
        daemon.log_text()
    );
    // Exec'd in place: nothing serves from a child (the dry run is reaped).
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("reading the daemon's child processes from /proc");
    assert_eq!(children.trim(), "", "the daemon has child processes");
}

/// Checks the `check` control command and returns nothing if it says OK.
fn check_ok(dom0: &mut Sock) {
    assert_eq!(reply_text(&dom0.control(&["check"]).unwrap()).trim(), "OK");
}

// ---------------------------------------------------------------------------
// 1. Ten updates under continuous load.

const UPDATES: usize = 10;
const GUESTS: usize = 20;
const SOCKETS: usize = 5;
/// Distinct nodes one client writes at most; past that it reads its nodes
/// back (bounds the store, and so each stream, whatever the speed).
const MAX_NODES: u64 = 3000;
/// Requests every client has had answered between two updates.
const MIN_PROGRESS: u64 = 50;

/// What the main thread and the clients share.
struct Load {
    /// Live updates completed.
    updates: AtomicUsize,
    /// Set when the clients are to stop (also if the main thread fails).
    stop: AtomicBool,
    /// Requests answered, per client.
    progress: Vec<AtomicU64>,
    /// Per client: 1 + the update count when it opened the transaction
    /// that is to span the next update (0: none yet).
    tx_open: Vec<AtomicUsize>,
}

impl Load {
    fn new(clients: usize) -> Self {
        Self {
            updates: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            progress: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            tx_open: (0..clients).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Whether client `idx` opens a transaction spanning update `epoch + 1`
    /// (every client spans every third update, staggered).
    fn spans(epoch: usize, idx: usize) -> bool {
        epoch < UPDATES && (epoch + idx) % 3 == 0
    }
}

/// Stops the clients when the main thread is done, or has panicked.
struct StopOnDrop(Arc<Load>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, SeqCst);
    }
}

/// What one client did.
#[derive(Debug)]
struct Report {
    requests: u64,
    nodes: u64,
    spanning_commits: usize,
    events: usize,
}

/// One client's work until told to stop: numbered writes to distinct
/// nodes under `base`, each read back; a watch on `base` whose events are
/// counted; every third update spanned by a transaction. Every reply is
/// checked (the client itself checks each reply's req_id and type, and
/// fails on any message it did not ask for).
fn client_work<T: Read + Write>(c: &mut Client<T>, idx: usize, base: &str, load: &Load) -> Report {
    let tag = format!("c{idx}");
    let value = |i: u64| format!("{tag}:{i}");
    c.write(0, base, b"").unwrap();
    // Where the transactions write (a directory small enough to list).
    c.write(0, &format!("{base}/tx"), b"").unwrap();
    c.watch(base, "w").unwrap();
    // Paths whose events are due, in the order written (the watch fires
    // once for `base` when it is set).
    let mut expected = vec![base.to_string()];
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let drain = |c: &mut Client<T>, seen: &mut BTreeMap<String, u32>| {
        while let Some(ev) = c.queued_watch_event() {
            assert_eq!(ev.token, "w", "{tag}: event with a foreign token");
            let n = seen.entry(ev.path.clone()).or_default();
            *n += 1;
            assert_eq!(*n, 1, "{tag}: watch event for {} delivered twice", ev.path);
        }
    };
    let mut requests = 0u64;
    let mut i = 0u64;
    let mut epoch_seen = usize::MAX;
    let mut in_epoch = 0u64;
    let mut spanned = None;
    let mut spanning_commits = 0;
    let answered = |requests: &mut u64, n: u64| {
        *requests += n;
        load.progress[idx].fetch_add(n, SeqCst);
    };
    while !load.stop.load(SeqCst) {
        let epoch = load.updates.load(SeqCst);
        if epoch != epoch_seen {
            epoch_seen = epoch;
            in_epoch = 0;
        }
        if Load::spans(epoch, idx) && spanned != Some(epoch) && in_epoch >= MIN_PROGRESS {
            spanned = Some(epoch);
            // A transaction opened before update `epoch + 1` and committed
            // after it.
            let tx = c.transaction_start().unwrap();
            let p = format!("{base}/tx/t{epoch}");
            let v = format!("{tag}:tx{epoch}");
            c.write(tx, &p, v.as_bytes()).unwrap();
            assert_eq!(c.read(tx, &p).unwrap(), v.as_bytes());
            answered(&mut requests, 3);
            load.tx_open[idx].store(epoch + 1, SeqCst);
            wait_until("the update the transaction spans", || {
                load.updates.load(SeqCst) > epoch || load.stop.load(SeqCst)
            });
            if load.stop.load(SeqCst) {
                c.transaction_end(tx, false)
                    .unwrap_or_else(|e| panic!("{tag}: aborting the open transaction: {e}"));
                break;
            }
            // More in the transaction, now served by the new process.
            assert_eq!(c.read(tx, &p).unwrap(), v.as_bytes(), "{tag}");
            let p2 = format!("{base}/tx/t{epoch}b");
            c.write(tx, &p2, b"second").unwrap();
            assert_eq!(
                c.read(tx, &format!("{base}/n0")).unwrap(),
                value(0).as_bytes()
            );
            let names = c.directory(tx, &format!("{base}/tx")).unwrap();
            assert!(names.contains(&format!("t{epoch}")), "{tag}: {names:?}");
            assert!(names.contains(&format!("t{epoch}b")), "{tag}: {names:?}");
            c.transaction_end(tx, true)
                .unwrap_or_else(|e| panic!("{tag}: commit after update {}: {e}", epoch + 1));
            assert_eq!(c.read(0, &p).unwrap(), v.as_bytes());
            assert_eq!(c.read(0, &p2).unwrap(), b"second");
            answered(&mut requests, 7);
            expected.push(p);
            expected.push(p2);
            spanning_commits += 1;
        }
        if i < MAX_NODES {
            let p = format!("{base}/n{i}");
            c.write(0, &p, value(i).as_bytes()).unwrap();
            assert_eq!(c.read(0, &p).unwrap(), value(i).as_bytes(), "{tag}: {p}");
            expected.push(p);
        } else {
            let j = i % MAX_NODES;
            assert_eq!(
                c.read(0, &format!("{base}/n{j}")).unwrap(),
                value(j).as_bytes(),
                "{tag}"
            );
        }
        i += 1;
        in_epoch += 1;
        answered(&mut requests, 2);
        drain(c, &mut seen);
    }
    // The events still on their way: each one once, then nothing more
    // (a request answered after them flushes anything queued behind).
    for p in &expected {
        while !seen.contains_key(p) {
            let ev = c
                .next_watch_event()
                .unwrap_or_else(|e| panic!("{tag}: waiting for the event for {p}: {e}"));
            assert_eq!(ev.token, "w");
            let n = seen.entry(ev.path.clone()).or_default();
            *n += 1;
            assert_eq!(*n, 1, "{tag}: watch event for {} delivered twice", ev.path);
        }
    }
    assert_eq!(c.read(0, base).unwrap(), b"");
    drain(c, &mut seen);
    let mut want = expected.clone();
    want.sort();
    want.dedup();
    assert_eq!(want.len(), expected.len(), "{tag}: a path written twice");
    let got: Vec<&String> = seen.keys().collect();
    assert_eq!(
        got,
        want.iter().collect::<Vec<_>>(),
        "{tag}: events for exactly the paths written"
    );
    Report {
        requests,
        nodes: i.min(MAX_NODES),
        spanning_commits,
        events: seen.len(),
    }
}

#[test]
fn test_ten_live_updates_under_continuous_load() {
    let dir = tempfile::tempdir().unwrap();
    // Guests write more nodes than the default quota of 1000.
    let (hv, mut daemon) = start(dir.path(), &["-E", "100000"]);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&daemon);
    let records: Vec<_> = (0..GUESTS).map(|_| create_guest(&ts, &mut dom0)).collect();

    let load = Arc::new(Load::new(GUESTS + SOCKETS));
    let stop = StopOnDrop(Arc::clone(&load));
    let mut threads = Vec::new();
    for (idx, rec) in records.iter().cloned().enumerate() {
        let (connector, load) = (connector.clone(), Arc::clone(&load));
        threads.push(std::thread::spawn(move || {
            let mut c = guest_client(&connector, &rec);
            client_work(&mut c, idx, "data", &load)
        }));
    }
    for s in 0..SOCKETS {
        let idx = GUESTS + s;
        let mut c = socket_client(&daemon);
        let load = Arc::clone(&load);
        threads.push(std::thread::spawn(move || {
            client_work(&mut c, idx, &format!("/tool/lu/c{s}"), &load)
        }));
    }

    let binary = tests::bin("xenstored-lite");
    let real_tool = Path::new(XENSTORE_CONTROL).exists();
    if !real_tool {
        println!("{XENSTORE_CONTROL} is not installed: every update goes through xenring's client");
    }
    let mut control = socket_client(&daemon);
    let pid = daemon.pid();
    let mut since: Vec<u64> = vec![0; GUESTS + SOCKETS];
    let progressed = |since: &[u64], epoch: usize| {
        (0..GUESTS + SOCKETS).all(|i| {
            load.progress[i].load(SeqCst) >= since[i] + MIN_PROGRESS
                && (!Load::spans(epoch, i) || load.tx_open[i].load(SeqCst) == epoch + 1)
        })
    };
    // A client that fails ends its thread: stop waiting for it then.
    let failed =
        |threads: &[std::thread::JoinHandle<Report>]| threads.iter().any(|t| t.is_finished());
    for k in 1..=UPDATES {
        wait_until("every client's progress since the last update", || {
            progressed(&since, k - 1) || failed(&threads)
        });
        if failed(&threads) {
            break;
        }
        // Xen's own tool drives every other update when it is installed.
        if real_tool && k % 2 == 0 {
            update_with_xenstore_control(&mut daemon, &binary);
        } else {
            update_ok(&mut daemon, &mut control, &binary);
        }
        assert_eq!(daemon.pid(), pid);
        for (s, p) in since.iter_mut().zip(&load.progress) {
            *s = p.load(SeqCst);
        }
        load.updates.store(k, SeqCst);
    }
    wait_until("every client's progress after the last update", || {
        progressed(&since, UPDATES) || failed(&threads)
    });
    drop(stop);
    let reports: Vec<Report> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    for (idx, r) in reports.iter().enumerate() {
        // Spanned updates: those k in 1..=10 with (k - 1 + idx) % 3 == 0.
        let due = (0..UPDATES).filter(|&e| Load::spans(e, idx)).count();
        assert_eq!(r.spanning_commits, due, "client {idx}: {r:?}");
        assert!(r.requests >= (UPDATES as u64 + 1) * MIN_PROGRESS, "{r:?}");
        assert_eq!(
            r.events as u64,
            1 + r.nodes + 2 * due as u64,
            "client {idx}: {r:?}"
        );
    }
    // dom0 sees what each client wrote, on its connection from the start.
    for (idx, rec) in records.iter().enumerate() {
        let d = rec.info.domid;
        assert_eq!(
            dom0.read(0, &format!("/local/domain/{d}/data/n0")).unwrap(),
            format!("c{idx}:0").as_bytes()
        );
    }
    for s in 0..SOCKETS {
        let idx = GUESTS + s;
        let n = reports[idx].nodes - 1;
        assert_eq!(
            dom0.read(0, &format!("/tool/lu/c{s}/n{n}")).unwrap(),
            format!("c{idx}:{n}").as_bytes()
        );
    }
    check_ok(&mut dom0);
    let log = daemon.live_updates();
    assert_eq!(log.restored, UPDATES);
    let total: u64 = reports.iter().map(|r| r.requests).sum();
    println!(
        "{UPDATES} live updates, {total} requests answered; streams: {:?}",
        log.updates
    );
}

// ---------------------------------------------------------------------------
// 2. A broken new binary.

/// A guest and a socket client with state to keep: a node each, a watch
/// each, and an open transaction on the socket.
struct Witnesses {
    guest: Client<Guest>,
    domid: u16,
    sock: Sock,
    tx: u32,
}

impl Witnesses {
    fn new(daemon: &Daemon, hv: &MockXen, ts: &Toolstack, dom0: &mut Sock) -> Self {
        let rec = create_guest(ts, dom0);
        let mut guest = guest_client(&hv.connector(), &rec);
        guest.write(0, "data/keep", b"guest's").unwrap();
        guest.watch("data/watched", "gw").unwrap();
        assert_eq!(guest.next_watch_event().unwrap().path, "data/watched");
        let mut sock = socket_client(daemon);
        sock.write(0, "/tool/keep", b"socket's").unwrap();
        sock.watch("/tool/watched", "sw").unwrap();
        assert_eq!(sock.next_watch_event().unwrap().path, "/tool/watched");
        let tx = sock.transaction_start().unwrap();
        sock.write(tx, "/tool/in-tx", b"pending").unwrap();
        Self {
            guest,
            domid: rec.info.domid,
            sock,
            tx,
        }
    }

    /// Both still have their node, their watch fires once, the
    /// transaction is still open.
    fn still_there(&mut self, dom0: &mut Sock, round: u32) {
        assert_eq!(self.guest.read(0, "data/keep").unwrap(), b"guest's");
        assert_eq!(self.sock.read(0, "/tool/keep").unwrap(), b"socket's");
        let v = round.to_string();
        dom0.write(
            0,
            &format!("/local/domain/{}/data/watched", self.domid),
            v.as_bytes(),
        )
        .unwrap();
        dom0.write(0, "/tool/watched", v.as_bytes()).unwrap();
        let ev = self.guest.next_watch_event().unwrap();
        assert_eq!(
            (ev.path.as_str(), ev.token.as_str()),
            ("data/watched", "gw")
        );
        let ev = self.sock.next_watch_event().unwrap();
        assert_eq!(
            (ev.path.as_str(), ev.token.as_str()),
            ("/tool/watched", "sw")
        );
        // Nothing else was waiting: a round trip, no event queued.
        assert_eq!(self.guest.read(0, "data/watched").unwrap(), v.as_bytes());
        assert_eq!(self.sock.read(0, "/tool/watched").unwrap(), v.as_bytes());
        assert_eq!(self.guest.queued_watch_event(), None);
        assert_eq!(self.sock.queued_watch_event(), None);
        assert_eq!(self.sock.read(self.tx, "/tool/in-tx").unwrap(), b"pending");
    }
}

/// Asks for an update to `binary`; it must be refused at `-s` (after the
/// dry run) with a message, and nothing must have been exec'd.
fn assert_refused(daemon: &mut Daemon, control: &mut Sock, binary: &Path) -> String {
    let pid = daemon.pid();
    let restored = daemon.live_updates().restored;
    let outcome = live_update(control, binary, None, false).unwrap();
    let LiveUpdateOutcome::Refused { step, answer } = outcome else {
        panic!(
            "an update to {} went through:\n{}",
            binary.display(),
            daemon.log_text()
        )
    };
    println!("{}: refused at {step}: {answer}", binary.display());
    assert_eq!(step, "-s", "{answer}");
    assert!(!answer.trim().is_empty(), "a refusal must say why");
    assert!(daemon.running(), "{}", daemon.log_text());
    assert_eq!(daemon.pid(), pid);
    assert_eq!(daemon.live_updates().restored, restored);
    answer
}

#[test]
fn test_broken_binary_is_refused_and_old_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (hv, mut daemon) = start(dir.path(), &[]);
    let ts = Toolstack::open(&hv.connector()).unwrap();
    let mut dom0 = socket_client(&daemon);
    let mut w = Witnesses::new(&daemon, &hv, &ts, &mut dom0);
    let mut control = socket_client(&daemon);
    w.still_there(&mut dom0, 0);

    // (a) A binary that exits at once.
    let answer = assert_refused(&mut daemon, &mut control, Path::new("/bin/false"));
    assert!(
        answer.contains("/bin/false") || answer.to_lowercase().contains("dry"),
        "the refusal names the binary or its dry run: {answer}"
    );
    w.still_there(&mut dom0, 1);

    // (b) A binary that starts but cannot parse the state: the real one,
    // behind a wrapper that cuts the stream to 20 bytes first.
    let real = tests::bin("xenstored-lite");
    let ran = dir.path().join("corrupter.ran");
    let script = dir.path().join("corrupter");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nfor a in \"$@\"; do case \"$a\" in --dry-run=*) truncate -s 20 \"${{a#--dry-run=}}\";; esac; done\nexec '{}' \"$@\"\n",
            ran.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_refused(&mut daemon, &mut control, &script);
    let runs = std::fs::read_to_string(&ran).unwrap();
    assert!(
        runs.lines().count() == 1 && runs.contains("-U") && runs.contains("--dry-run"),
        "the wrapper ran once, as the dry run: {runs:?}"
    );
    w.still_there(&mut dom0, 2);

    // (c) No binary there at all: refused at -f or at -s.
    let outcome = live_update(
        &mut control,
        &dir.path().join("no-such-binary"),
        None,
        false,
    )
    .unwrap();
    assert!(
        matches!(outcome, LiveUpdateOutcome::Refused { .. }),
        "{outcome:?}"
    );
    assert!(daemon.running());
    w.still_there(&mut dom0, 3);

    // (c2) Xen's C xenstored as the new binary: it is told from the file
    // and never dry-run; the witnesses hold a transaction open, which C
    // cannot carry, so the answer is BUSY (xenstore-control would ask
    // again until its -t is over, then abort): nothing is handed over.
    let c_xenstored = std::path::Path::new("/usr/lib/xen-4.17/bin/xenstored");
    if c_xenstored.exists() {
        // One -s, answered at once (asking again until -t is over would
        // race the daemon's own -t against the client's deadline).
        let pid = daemon.pid();
        let c = c_xenstored.to_str().unwrap();
        assert_eq!(
            reply_text(&control.control(&["live-update", "-f", c]).unwrap()),
            "OK"
        );
        assert_eq!(
            reply_text(&control.control(&["live-update", "-s", "-t", "60"]).unwrap()).trim(),
            "BUSY"
        );
        assert!(daemon.running(), "{}", daemon.log_text());
        assert_eq!(daemon.pid(), pid);
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default(),
            c_xenstored
        );
        assert_eq!(
            reply_text(&control.control(&["live-update", "-a"]).unwrap()),
            "OK"
        );
        w.still_there(&mut dom0, 3);
    } else {
        tests::skip(
            &format!("{} (the C xenstored case)", tests::test_name()),
            &format!(
                "{} is not installed (scripts/install-test-deps.sh installs xen-utils-4.17)",
                c_xenstored.display()
            ),
        );
    }

    // (d) An update asked for and aborted.
    let path = real.to_str().unwrap();
    assert_eq!(
        reply_text(&control.control(&["live-update", "-f", path]).unwrap()),
        "OK"
    );
    assert_eq!(
        reply_text(&control.control(&["live-update", "-a"]).unwrap()),
        "OK"
    );
    assert_eq!(daemon.live_updates().restored, 0);
    w.still_there(&mut dom0, 4);

    // A good update afterwards goes through, and the state with it.
    update_ok(&mut daemon, &mut control, &real);
    w.still_there(&mut dom0, 5);
    w.sock.transaction_end(w.tx, true).unwrap();
    assert_eq!(dom0.read(0, "/tool/in-tx").unwrap(), b"pending");
    check_ok(&mut dom0);
}

// ---------------------------------------------------------------------------
// 3. Partial input and queued output.

/// Reads from a guest's response ring until one whole message is in;
/// fails if anything follows it.
fn read_one_message(guest: &mut Guest) -> xenring::Message {
    let mut decoder = xenring::Decoder::new();
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    while messages.is_empty() {
        let n = guest.read(&mut buf).unwrap();
        decoder.decode_all(&buf[..n], &mut messages).unwrap();
    }
    assert_eq!(messages.len(), 1, "one reply, not {messages:?}");
    assert!(decoder.partial().is_empty(), "bytes after the reply");
    messages.pop().unwrap()
}

#[test]
fn test_half_request_and_queued_output_cross_the_update() {
    let dir = tempfile::tempdir().unwrap();
    let (hv, mut daemon) = start(dir.path(), &[]);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&daemon);
    let mut control = socket_client(&daemon);
    let binary = tests::bin("xenstored-lite");

    // A guest sends the first half of a WRITE, and the daemon reads it off
    // the ring before the update.
    let half_rec = create_guest(&ts, &mut dom0);
    let mut half = Guest::attach(&connector, &half_rec).unwrap();
    half.set_block_limit(LIMIT);
    let value = b"written across the update";
    let sent = half.write_partial_request("data/half", value).unwrap();
    let mut whole = Vec::new();
    xenring::codec::encode(
        &mut whole,
        MsgType::Write,
        0x4242,
        0,
        &xenring::codec::build_path_value(b"data/half", value),
    )
    .unwrap();
    assert!(sent < whole.len());
    wait_until("the daemon to take the half request off the ring", || {
        half.end().writable().unwrap() == xenring::page::RING_SIZE_U32
    });

    // A guest whose watch events fill its ring and queue up in the daemon.
    let ring_rec = create_guest(&ts, &mut dom0);
    let mut ring_events = guest_client(&connector, &ring_rec);
    ring_events.write(0, "data/ev", b"").unwrap();
    ring_events.watch("data/ev", "ev").unwrap();
    assert_eq!(ring_events.next_watch_event().unwrap().path, "data/ev");
    let ring_home = format!("/local/domain/{}", ring_rec.info.domid);
    for j in 0..200 {
        dom0.write(0, &format!("{ring_home}/data/ev/e{j}"), b"x")
            .unwrap();
    }

    // A socket client whose events (about 800 KB: more than the socket
    // holds) wait unread in the daemon.
    let mut sock = socket_client(&daemon);
    sock.write(0, "/tool/q", b"").unwrap();
    sock.watch("/tool/q", "q").unwrap();
    let long = "x".repeat(1900);
    let names: Vec<String> = (0..400).map(|j| format!("e{j:04}-{long}")).collect();
    for name in &names {
        dom0.write(0, &format!("/tool/q/{name}"), b"y").unwrap();
    }

    // A transaction that another client's write, after the update, makes
    // conflict.
    let mut racer = socket_client(&daemon);
    racer.write(0, "/tool/conflict", b"0").unwrap();
    let tx = racer.transaction_start().unwrap();
    assert_eq!(racer.read(tx, "/tool/conflict").unwrap(), b"0");
    racer.write(tx, "/tool/conflict", b"tx").unwrap();

    update_ok(&mut daemon, &mut control, &binary);

    // The rest of the half request: answered once, by the new process.
    let n = half.write_raw(&whole[sent..]).unwrap();
    assert_eq!(sent + n, whole.len());
    let reply = read_one_message(&mut half);
    assert_eq!(reply.header.msg_type, MsgType::Write.raw(), "{reply:?}");
    assert_eq!(reply.header.req_id, 0x4242);
    assert_eq!(reply.payload, b"OK\0");
    let mut half = Client::new(half);
    assert_eq!(half.read(0, "data/half").unwrap(), value);
    assert_eq!(half.queued_watch_event(), None);

    // Every queued event, once, in order.
    let ev = ring_events.next_watch_event().unwrap();
    assert_eq!(ev.path, "data/ev/e0");
    for j in 1..200 {
        let ev = ring_events.next_watch_event().unwrap();
        assert_eq!((ev.path, ev.token), (format!("data/ev/e{j}"), "ev".into()));
    }
    assert_eq!(ring_events.read(0, "data/ev/e199").unwrap(), b"x");
    assert_eq!(ring_events.queued_watch_event(), None);

    assert_eq!(sock.next_watch_event().unwrap().path, "/tool/q");
    for name in &names {
        let ev = sock.next_watch_event().unwrap();
        assert_eq!(ev.path, format!("/tool/q/{name}"));
        assert_eq!(ev.token, "q");
    }
    assert_eq!(sock.read(0, "/tool/q").unwrap(), b"");
    assert_eq!(sock.queued_watch_event(), None);

    // The transaction carried over conflicts with a write made after.
    dom0.write(0, "/tool/conflict", b"dom0").unwrap();
    assert_eq!(racer.read(tx, "/tool/conflict").unwrap(), b"tx");
    assert!(matches!(
        racer.transaction_end(tx, true),
        Err(XsError::Xs(XsErrno::EAGAIN))
    ));
    assert_eq!(dom0.read(0, "/tool/conflict").unwrap(), b"dom0");
    check_ok(&mut dom0);
}

// ---------------------------------------------------------------------------
// 4. Xen's own tool.

#[test]
fn test_update_through_real_xenstore_control() {
    if !tests::have(XENSTORE_CONTROL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (hv, mut daemon) = start(dir.path(), &[]);
    let ts = Toolstack::open(&hv.connector()).unwrap();
    let mut dom0 = socket_client(&daemon);
    let mut w = Witnesses::new(&daemon, &hv, &ts, &mut dom0);
    let binary = tests::bin("xenstored-lite");
    update_with_xenstore_control(&mut daemon, &binary);
    w.still_there(&mut dom0, 1);
    update_with_xenstore_control(&mut daemon, &binary);
    w.still_there(&mut dom0, 2);
    w.sock.transaction_end(w.tx, true).unwrap();
    check_ok(&mut dom0);
}
