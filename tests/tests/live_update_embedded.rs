//! Live update on the embedded default: the daemon runs with no
//! `--mock-xen`, on the mock-xen it forks at start-up as a process of its
//! own, and replaces itself with a new binary — exec'd in place, same pid —
//! while that same mock-xen keeps the simulated machine: guests over rings
//! and clients over the daemon's socket, with requests in flight, keep
//! talking to it on the connections they opened before. When the daemon
//! ends, normally or killed, its mock-xen ends with it.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use mock_xen::{Connector, Guest, Toolstack};
use tests::{
    create_guest, guest_client, live_update, reply_text, wait_until, Daemon, LiveUpdateOutcome,
    LIMIT, XENSTORE_CONTROL,
};
use xenring::codec::{build_path_value, encode};
use xenring::{Client, Decoder, MsgType};

type Sock = Client<UnixStream>;

/// A client of the daemon's socket that gives up after [`LIMIT`] instead
/// of hanging if a reply or an event never comes.
fn socket_client(daemon: &Daemon) -> Sock {
    let c = daemon.client();
    c.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
    c
}

/// The child processes of `pid`'s main thread (the embedded mock-xen is
/// forked by it).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_else(|e| panic!("reading the children of {pid} from /proc: {e}"))
        .split_whitespace()
        .map(|w| w.parse().expect("a pid in /proc/PID/task/PID/children"))
        .collect()
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaps yet).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// The daemon on its embedded default and its mock-xen.
struct Embedded {
    daemon: Daemon,
    /// The mock-xen socket the start-up line names.
    hv_socket: PathBuf,
    /// The mock-xen process: the daemon's only child.
    hv_pid: u32,
}

impl Embedded {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let daemon = Daemon::start(dir, extra);
        let expected = daemon.rundir.join("mock-xen.sock");
        let pid = daemon.pid();
        wait_until("the start-up line", || {
            daemon.log_text().contains("guests join at ")
        });
        let log = daemon.log_text();
        let line = log.lines().find(|l| l.contains("guests join at ")).unwrap();
        assert!(line.contains("embedded mock-xen"), "{line}");
        let named = line.rsplit("guests join at ").next().unwrap().trim();
        assert_eq!(Path::new(named), expected, "{line}");
        assert!(expected.exists());
        let kids = children(pid);
        assert_eq!(kids.len(), 1, "one child, the mock-xen: {kids:?}\n{log}");
        assert!(line.contains(&format!("pid {}", kids[0])), "{line}");
        Self {
            daemon,
            hv_socket: expected,
            hv_pid: kids[0],
        }
    }

    fn connector(&self) -> Connector {
        Connector::remote(&self.hv_socket)
    }

    /// The daemon is still the same process, with the same mock-xen as its
    /// only child (a dry run is reaped), serving on the same socket.
    fn same_hypervisor(&mut self, pid: u32) {
        assert!(
            self.daemon.running(),
            "the daemon exited:\n{}",
            self.daemon.log_text()
        );
        assert_eq!(self.daemon.pid(), pid);
        assert_eq!(
            children(pid),
            vec![self.hv_pid],
            "the mock-xen the daemon started, and nothing else:\n{}",
            self.daemon.log_text()
        );
        assert!(!process_gone(self.hv_pid));
        assert!(self.hv_socket.exists());
    }

    /// Live-updates through XS_CONTROL on `control` (as `xenstore-control`
    /// does), or with the real tool, and checks it happened in place on the
    /// same hypervisor.
    fn update(&mut self, control: &mut Sock, binary: &Path, real_tool: bool) {
        let pid = self.daemon.pid();
        let before = self.daemon.live_updates().restored;
        if real_tool {
            let out = self
                .daemon
                .tool(XENSTORE_CONTROL, &["live-update", binary.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "xenstore-control live-update: {:?}\nstdout: {}\nstderr: {}\nlog:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.daemon.log_text()
            );
        } else {
            let outcome = live_update(control, binary, None, false).unwrap();
            assert_eq!(
                outcome,
                LiveUpdateOutcome::Done,
                "log:\n{}",
                self.daemon.log_text()
            );
        }
        wait_until("the new process's restore line", || {
            self.daemon.live_updates().restored > before
        });
        assert_eq!(self.daemon.live_updates().restored, before + 1);
        self.same_hypervisor(pid);
        let log = self.daemon.log_text();
        let attached = log
            .lines()
            .filter(|l| l.contains("kept across the live update"))
            .filter(|l| l.contains(&format!("pid {}", self.hv_pid)))
            .filter(|l| l.contains(&format!("guests join at {}", self.hv_socket.display())))
            .count();
        assert_eq!(attached, before + 1, "each new process attached:\n{log}");
    }

    /// SIGTERM (a normal stop), then waits for the daemon to exit.
    fn stop(&mut self) {
        let pid = self.daemon.pid();
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap();
        assert!(status.success());
        wait_until("the daemon to stop", || !self.daemon.running());
    }

    /// Nothing of the mock-xen is left: no process, no socket.
    fn assert_hv_gone(&self) {
        wait_until("the mock-xen process to end", || process_gone(self.hv_pid));
        wait_until("the mock-xen socket to go", || !self.hv_socket.exists());
    }
}

// ---------------------------------------------------------------------------
// Pipelined clients.

/// Requests each client keeps in flight (pairs of a write and its read
/// back); small enough for a ring and the outstanding-request quota.
const DEPTH: usize = 4;
/// Distinct nodes one client writes at most; past that it reads them back.
const MAX_NODES: u64 = 2000;
/// Requests every client has had answered between two updates.
const MIN_PROGRESS: u64 = 300;
const UPDATES: usize = 3;
const GUESTS: usize = 4;
const SOCKETS: usize = 3;

/// What a reply must be.
#[derive(Debug)]
enum Want {
    /// `OK`.
    Ok,
    /// This value (a read).
    Value(Vec<u8>),
}

/// A connection with several requests in flight, on any transport (a
/// socket, a guest's ring), checking every message that comes back: each
/// reply once, in order, to a request in flight, and right; each watch
/// event once.
struct Pipe<T> {
    io: T,
    tag: String,
    decoder: Decoder,
    next_req_id: u32,
    in_flight: VecDeque<(u32, MsgType, Want)>,
    events: BTreeMap<String, u32>,
    buf: Vec<u8>,
}

impl<T: Read + Write> Pipe<T> {
    fn new(io: T, tag: String) -> Self {
        Self {
            io,
            tag,
            decoder: Decoder::new(),
            next_req_id: 1,
            in_flight: VecDeque::new(),
            events: BTreeMap::new(),
            buf: vec![0; 8192],
        }
    }

    /// Sends every request in one write, without waiting.
    fn send(&mut self, requests: Vec<(MsgType, Vec<u8>, Want)>) {
        let mut bytes = Vec::new();
        for (ty, payload, want) in requests {
            let id = self.next_req_id;
            self.next_req_id += 1;
            encode(&mut bytes, ty, id, 0, &payload).unwrap();
            self.in_flight.push_back((id, ty, want));
        }
        self.io.write_all(&bytes).unwrap();
        self.io.flush().unwrap();
    }

    /// Reads what arrives once and checks it.
    fn receive(&mut self) {
        let n = self
            .io
            .read(&mut self.buf)
            .unwrap_or_else(|e| panic!("{}: waiting for replies: {e}", self.tag));
        assert!(n > 0, "{}: the connection closed", self.tag);
        let mut messages = Vec::new();
        self.decoder
            .decode_all(&self.buf[..n], &mut messages)
            .unwrap();
        for msg in messages {
            if msg.header.msg_type == MsgType::WatchEvent.raw() {
                let ev = xenring::client::WatchEvent::parse(&msg.payload).unwrap();
                assert_eq!(ev.token, "w", "{}: a foreign token", self.tag);
                let seen = self.events.entry(ev.path.clone()).or_default();
                *seen += 1;
                assert_eq!(*seen, 1, "{}: event for {} twice", self.tag, ev.path);
                continue;
            }
            let Some((id, ty, want)) = self.in_flight.pop_front() else {
                panic!("{}: a reply nobody waits for: {msg:?}", self.tag)
            };
            assert_eq!(
                (msg.header.req_id, msg.header.msg_type),
                (id, ty.raw()),
                "{}: not the reply due next (lost, twice, or out of order): {msg:?}",
                self.tag
            );
            match want {
                Want::Ok => assert_eq!(msg.payload, b"OK\0", "{}", self.tag),
                Want::Value(v) => assert_eq!(msg.payload, v, "{}: reply {id}", self.tag),
            }
        }
    }

    /// Waits until every request sent has its reply.
    fn settle(&mut self) {
        while !self.in_flight.is_empty() {
            self.receive();
        }
    }
}

/// What the main thread and the clients share.
struct Load {
    stop: AtomicBool,
    progress: Vec<AtomicU64>,
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
    events: usize,
}

/// One client's work until told to stop: batches of [`DEPTH`] writes of
/// new nodes under `base`, each followed by its read back, all in flight
/// at once; a watch on `base` whose events must come once each.
fn pipelined_work<T: Read + Write>(io: T, idx: usize, base: &str, load: &Load) -> Report {
    let mut p = Pipe::new(io, format!("client {idx}"));
    let path = |i: u64| format!("{base}/n{i}");
    let value = |i: u64| format!("c{idx}:{i}").into_bytes();
    p.send(vec![
        (
            MsgType::Write,
            build_path_value(base.as_bytes(), b""),
            Want::Ok,
        ),
        (
            MsgType::Watch,
            format!("{base}\0w\0").into_bytes(),
            Want::Ok,
        ),
    ]);
    p.settle();
    let mut requests = 2u64;
    let mut i = 0u64;
    while !load.stop.load(SeqCst) {
        let mut batch = Vec::new();
        for _ in 0..DEPTH {
            let n = i % MAX_NODES;
            let node = path(n);
            if i < MAX_NODES {
                batch.push((
                    MsgType::Write,
                    build_path_value(node.as_bytes(), &value(n)),
                    Want::Ok,
                ));
            }
            batch.push((
                MsgType::Read,
                format!("{node}\0").into_bytes(),
                Want::Value(value(n)),
            ));
            i += 1;
        }
        let sent = batch.len() as u64;
        p.send(batch);
        p.settle();
        requests += sent;
        load.progress[idx].fetch_add(sent, SeqCst);
    }
    // The events still on their way: the watch's own, then one per node.
    let nodes = i.min(MAX_NODES);
    let mut expected: Vec<String> = (0..nodes).map(path).collect();
    expected.push(base.to_string());
    for e in &expected {
        while !p.events.contains_key(e) {
            p.receive();
        }
    }
    // A last round trip: nothing else was due.
    p.send(vec![(
        MsgType::Read,
        format!("{base}\0").into_bytes(),
        Want::Value(Vec::new()),
    )]);
    p.settle();
    assert_eq!(p.events.len(), expected.len(), "client {idx}: events");
    Report {
        requests: requests + 1,
        nodes,
        events: p.events.len(),
    }
}

// ---------------------------------------------------------------------------
// State that must cross every update.

/// A guest and a socket client, each with a node, a watch and an open
/// transaction, started before the first update.
struct Witnesses {
    guest: Client<Guest>,
    domid: u16,
    guest_tx: u32,
    sock: Sock,
    sock_tx: u32,
}

impl Witnesses {
    fn new(daemon: &Daemon, connector: &Connector, ts: &Toolstack, dom0: &mut Sock) -> Self {
        let rec = create_guest(ts, dom0);
        let mut guest = guest_client(connector, &rec);
        guest.write(0, "data/keep", b"guest's").unwrap();
        guest.watch("data/watched", "gw").unwrap();
        assert_eq!(guest.next_watch_event().unwrap().path, "data/watched");
        let guest_tx = guest.transaction_start().unwrap();
        guest
            .write(guest_tx, "data/in-tx", b"guest pending")
            .unwrap();
        let mut sock = socket_client(daemon);
        sock.write(0, "/tool/keep", b"socket's").unwrap();
        sock.watch("/tool/watched", "sw").unwrap();
        assert_eq!(sock.next_watch_event().unwrap().path, "/tool/watched");
        let sock_tx = sock.transaction_start().unwrap();
        sock.write(sock_tx, "/tool/in-tx", b"socket pending")
            .unwrap();
        Self {
            guest,
            domid: rec.info.domid,
            guest_tx,
            sock,
            sock_tx,
        }
    }

    /// Both still have their node, their watch fires once, their
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
        assert_eq!(
            self.guest.read(self.guest_tx, "data/in-tx").unwrap(),
            b"guest pending"
        );
        assert_eq!(
            self.sock.read(self.sock_tx, "/tool/in-tx").unwrap(),
            b"socket pending"
        );
    }

    /// More in each transaction, then commit both; their writes appear.
    fn commit(&mut self, dom0: &mut Sock) {
        self.guest
            .write(self.guest_tx, "data/in-tx2", b"after")
            .unwrap();
        self.guest.transaction_end(self.guest_tx, true).unwrap();
        self.sock
            .write(self.sock_tx, "/tool/in-tx2", b"after")
            .unwrap();
        self.sock.transaction_end(self.sock_tx, true).unwrap();
        let home = format!("/local/domain/{}", self.domid);
        assert_eq!(
            dom0.read(0, &format!("{home}/data/in-tx")).unwrap(),
            b"guest pending"
        );
        assert_eq!(
            dom0.read(0, &format!("{home}/data/in-tx2")).unwrap(),
            b"after"
        );
        assert_eq!(dom0.read(0, "/tool/in-tx").unwrap(), b"socket pending");
        assert_eq!(dom0.read(0, "/tool/in-tx2").unwrap(), b"after");
    }
}

fn check_ok(dom0: &mut Sock) {
    assert_eq!(reply_text(&dom0.control(&["check"]).unwrap()).trim(), "OK");
}

// ---------------------------------------------------------------------------
// 1. Three updates under pipelined load, then a normal stop.

#[test]
fn test_three_live_updates_on_the_embedded_default_under_pipelined_load() {
    let dir = tempfile::tempdir().unwrap();
    // Guests write more nodes than the default quota of 1000.
    let mut e = Embedded::start(dir.path(), &["-E", "100000"]);
    let connector = e.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&e.daemon);
    let mut w = Witnesses::new(&e.daemon, &connector, &ts, &mut dom0);
    let records: Vec<_> = (0..GUESTS).map(|_| create_guest(&ts, &mut dom0)).collect();

    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        progress: (0..GUESTS + SOCKETS).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop = StopOnDrop(Arc::clone(&load));
    let mut threads = Vec::new();
    for (idx, rec) in records.iter().cloned().enumerate() {
        let (connector, load) = (connector.clone(), Arc::clone(&load));
        threads.push(std::thread::spawn(move || {
            let mut guest = Guest::attach(&connector, &rec).unwrap();
            guest.set_block_limit(LIMIT);
            pipelined_work(guest, idx, "data/p", &load)
        }));
    }
    for s in 0..SOCKETS {
        let idx = GUESTS + s;
        let sock = tests::connect(&e.daemon.socket);
        let load = Arc::clone(&load);
        threads.push(std::thread::spawn(move || {
            pipelined_work(sock, idx, &format!("/tool/elu/c{s}"), &load)
        }));
    }

    let binary = tests::bin("xenstored-lite");
    let real_tool = Path::new(XENSTORE_CONTROL).exists();
    if !real_tool {
        println!("{XENSTORE_CONTROL} is not installed: every update goes through xenring's client");
    }
    let mut control = socket_client(&e.daemon);
    let pid = e.daemon.pid();
    let updates = AtomicUsize::new(0);
    let mut since: Vec<u64> = vec![0; GUESTS + SOCKETS];
    let progressed = |since: &[u64]| {
        (0..GUESTS + SOCKETS).all(|i| load.progress[i].load(SeqCst) >= since[i] + MIN_PROGRESS)
    };
    // A client that fails ends its thread: stop waiting for it then.
    let failed =
        |threads: &[std::thread::JoinHandle<Report>]| threads.iter().any(|t| t.is_finished());
    w.still_there(&mut dom0, 0);
    for k in 1..=UPDATES {
        wait_until("every client's progress since the last update", || {
            progressed(&since) || failed(&threads)
        });
        if failed(&threads) {
            break;
        }
        // Xen's own tool drives the second update when it is installed.
        e.update(&mut control, &binary, real_tool && k == 2);
        for (s, p) in since.iter_mut().zip(&load.progress) {
            *s = p.load(SeqCst);
        }
        updates.store(k, SeqCst);
        w.still_there(&mut dom0, u32::try_from(k).unwrap());
    }
    wait_until("every client's progress after the last update", || {
        progressed(&since) || failed(&threads)
    });
    drop(stop);
    let reports: Vec<Report> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(updates.load(SeqCst), UPDATES);
    for (idx, r) in reports.iter().enumerate() {
        assert!(
            r.requests >= (UPDATES as u64 + 1) * MIN_PROGRESS,
            "client {idx}: {r:?}"
        );
        assert_eq!(r.events as u64, 1 + r.nodes, "client {idx}: {r:?}");
    }
    w.commit(&mut dom0);
    // dom0 sees what the clients wrote, on its connection from the start.
    for (idx, rec) in records.iter().enumerate() {
        let d = rec.info.domid;
        assert_eq!(
            dom0.read(0, &format!("/local/domain/{d}/data/p/n0"))
                .unwrap(),
            format!("c{idx}:0").as_bytes()
        );
    }
    check_ok(&mut dom0);
    e.same_hypervisor(pid);
    assert_eq!(e.daemon.live_updates().restored, UPDATES);
    let total: u64 = reports.iter().map(|r| r.requests).sum();
    println!(
        "{UPDATES} live updates on the embedded mock-xen (pid {}), {total} requests answered",
        e.hv_pid
    );

    drop((dom0, control, w));
    e.stop();
    e.assert_hv_gone();
}

// ---------------------------------------------------------------------------
// 2. A broken new binary.

#[test]
fn test_broken_binary_is_refused_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Embedded::start(dir.path(), &[]);
    let connector = e.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&e.daemon);
    let mut w = Witnesses::new(&e.daemon, &connector, &ts, &mut dom0);
    let mut control = socket_client(&e.daemon);
    let pid = e.daemon.pid();
    w.still_there(&mut dom0, 0);

    let outcome = live_update(&mut control, Path::new("/bin/false"), None, false).unwrap();
    let LiveUpdateOutcome::Refused { step, answer } = outcome else {
        panic!(
            "an update to /bin/false went through:\n{}",
            e.daemon.log_text()
        )
    };
    assert_eq!(step, "-s", "{answer}");
    assert!(
        answer.contains("/bin/false") || answer.to_lowercase().contains("dry"),
        "the refusal says why: {answer}"
    );
    assert_eq!(e.daemon.live_updates().restored, 0);
    e.same_hypervisor(pid);
    w.still_there(&mut dom0, 1);
    // A guest created after the refusal is served too.
    let rec = create_guest(&ts, &mut dom0);
    let mut late = guest_client(&connector, &rec);
    late.write(0, "data/late", b"yes").unwrap();
    assert_eq!(late.read(0, "data/late").unwrap(), b"yes");

    // A good update afterwards goes through, the state with it.
    e.update(&mut control, &tests::bin("xenstored-lite"), false);
    w.still_there(&mut dom0, 2);
    assert_eq!(late.read(0, "data/late").unwrap(), b"yes");
    w.commit(&mut dom0);
    check_ok(&mut dom0);
}

// ---------------------------------------------------------------------------
// 3. A killed daemon leaves no mock-xen behind.

#[test]
fn test_killed_daemon_leaves_no_mock_xen() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Embedded::start(dir.path(), &[]);
    let connector = e.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = socket_client(&e.daemon);
    let rec = create_guest(&ts, &mut dom0);
    let mut guest = guest_client(&connector, &rec);
    guest.write(0, "data/x", b"1").unwrap();
    // After an update too: the new process's mock-xen is still the child
    // that must end with it.
    let mut control = socket_client(&e.daemon);
    e.update(&mut control, &tests::bin("xenstored-lite"), false);
    assert_eq!(guest.read(0, "data/x").unwrap(), b"1");
    e.daemon.proc.child.kill().unwrap();
    e.daemon.proc.child.wait().unwrap();
    e.assert_hv_gone();
}
