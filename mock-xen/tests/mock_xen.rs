//! mock-xen behaviour: rings and notifications in-process and across
//! processes, exec survival, grant and mapping rules, VIRQ_DOM_EXC, domain
//! lifecycle, and every fault-injection switch.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use evtchn::{EventChannel, Port, VIRQ_DOM_EXC};
use gnttab::{DomainInfoSource, ForeignPage, PageMapper, GNTTAB_RESERVED_XENSTORE};
use mock_xen::{
    Connector, DomainRecord, Guest, MockDomainInfo, MockEventChannel, MockPageMapper, ServerThread,
    Toolstack,
};
use xenring::codec::{encode, Decoder};
use xenring::{Client, Error as RingError, MsgType, ServerEnd, ServerFeatures};

/// Generous bound for anything we wait on: a condition, never a sleep.
const LIMIT: Duration = Duration::from_secs(30);

/// dom0's side of one guest's ring: the mapping and the bound port.
struct Dom0Side {
    page: Box<dyn ForeignPage>,
    evtchn: MockEventChannel,
    port: Port,
    _mapper: MockPageMapper,
}

impl Dom0Side {
    fn attach(connector: &Connector, record: &DomainRecord) -> Self {
        let mapper = MockPageMapper::open(connector, 0).unwrap();
        let page = mapper
            .map_grant(record.info.domid, GNTTAB_RESERVED_XENSTORE)
            .unwrap();
        let mut evtchn = MockEventChannel::open(connector, 0).unwrap();
        let port = evtchn
            .bind_interdomain(record.info.domid, Port::new(record.store_port))
            .unwrap();
        Self {
            page,
            evtchn,
            port,
            _mapper: mapper,
        }
    }

    fn end(&self) -> ServerEnd<'_> {
        ServerEnd::new(self.page.ring())
    }

    /// Waits until our port fires (bounded), unmasks it, returns the ports.
    fn wait_event(&mut self) -> Vec<Port> {
        wait_ports(&mut self.evtchn)
    }
}

fn wait_ports(evtchn: &mut MockEventChannel) -> Vec<Port> {
    let deadline = Instant::now() + LIMIT;
    let mut fired = Vec::new();
    while fired.is_empty() {
        assert!(Instant::now() < deadline, "no event within {LIMIT:?}");
        evtchn
            .wait(Some(Duration::from_millis(200)), &mut fired)
            .unwrap();
    }
    evtchn.unmask(&fired).unwrap();
    fired
}

fn no_event_pending(evtchn: &mut MockEventChannel) -> bool {
    let mut fired = Vec::new();
    evtchn.read_pending(&mut fired).unwrap();
    fired.is_empty()
}

fn guest_and_dom0(connector: &Connector) -> (Toolstack, DomainRecord, Guest, Dom0Side) {
    let ts = Toolstack::open(connector).unwrap();
    let record = ts.create_domain().unwrap();
    let guest = Guest::attach(connector, &record).unwrap();
    let dom0 = Dom0Side::attach(connector, &record);
    (ts, record, guest, dom0)
}

/// A minimal xenstore server on dom0's side of a ring, on a thread: answers
/// every READ with the path it was asked for, completes reconnections.
fn spawn_echo_server(mut dom0: Dom0Side) -> (Arc<AtomicBool>, std::thread::JoinHandle<Dom0Side>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        dom0.end()
            .advertise(ServerFeatures::RECONNECTION | ServerFeatures::ERROR);
        let mut dec = Decoder::new();
        let mut buf = [0u8; 1024];
        let mut out: Vec<u8> = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            let mut fired = Vec::new();
            dom0.evtchn
                .wait(Some(Duration::from_millis(50)), &mut fired)
                .unwrap();
            dom0.evtchn.unmask(&fired).unwrap();
            if dom0.end().reconnect_requested() {
                dec = Decoder::new();
                out.clear();
                dom0.end().complete_reconnect();
                dom0.evtchn.notify(dom0.port).unwrap();
                continue;
            }
            loop {
                let n = dom0.end().read(&mut buf).unwrap();
                let mut msgs = Vec::new();
                dec.decode_all(&buf[..n], &mut msgs).unwrap();
                for m in msgs {
                    encode(&mut out, MsgType::Read, m.header.req_id, 0, &m.payload).unwrap();
                }
                let w = dom0.end().write(&out).unwrap();
                out.drain(..w);
                if n > 0 || w > 0 {
                    dom0.evtchn.notify(dom0.port).unwrap();
                }
                if n == 0 && (out.is_empty() || w == 0) {
                    break;
                }
            }
        }
        dom0
    });
    (stop, handle)
}

#[test]
fn test_ring_inprocess_exchange_with_notifications() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _record, guest, dom0) = guest_and_dom0(&connector);
    let (stop, server) = spawn_echo_server(dom0);
    let mut client = Client::new(guest);
    for i in 0..200 {
        let path = format!("/local/domain/1/key{i}");
        let value = client.read(0, &path).unwrap();
        assert_eq!(value, format!("{path}\0").as_bytes());
    }
    // Several requests in flight, answered in order, collected out of order.
    let ids: Vec<u32> = (0..5)
        .map(|i| {
            client
                .submit(MsgType::Read, 0, format!("/p{i}\0").as_bytes())
                .unwrap()
        })
        .collect();
    for (i, id) in ids.iter().enumerate().rev() {
        assert_eq!(
            client.wait_reply(*id).unwrap().payload,
            format!("/p{i}\0").as_bytes()
        );
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

fn bin(name: &str) -> &'static str {
    match name {
        "mock-xen" => env!("CARGO_BIN_EXE_mock-xen"),
        _ => env!("CARGO_BIN_EXE_mock-xen-peer"),
    }
}

struct Proc {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(bin("mock-xen-peer"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Self { child, lines }
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.lines.read_line(&mut s).unwrap();
        s.trim().to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_socket(path: &std::path::Path) {
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "mock-xen did not create {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn test_ring_cross_process_exchange_with_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mock-xen.sock");
    let hv = Command::new(bin("mock-xen"))
        .arg("--socket")
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _hv = KillOnDrop(hv);
    wait_for_socket(&sock);
    let connector = Connector::remote(&sock);
    let ts = Toolstack::open(&connector).unwrap();
    let record = ts.create_domain().unwrap();
    let mut guest = Guest::attach(&connector, &record).unwrap();
    let sock_s = sock.to_string_lossy().to_string();
    let domid = record.info.domid.to_string();
    let mut dom0 = Proc::spawn(&["echo-dom0", &sock_s, &domid]);
    assert!(dom0.line().starts_with("ready "));
    use std::io::{Read, Write};
    for i in 0..100u32 {
        let msg = format!("message number {i} crossing processes");
        guest.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        guest.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    guest.write_all(b"quit").unwrap();
    let mut back = [0u8; 4];
    guest.read_exact(&mut back).unwrap();
    assert!(dom0.child.wait().unwrap().success());
}

/// A child process killed when the test ends, whichever way it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A mock-xen server on a thread of this process, a guest attached to a new
/// domain here, and `mock-xen-peer MODE` acting as dom0 in another process.
fn guest_with_peer(mode: &str) -> ((Toolstack, ServerThread, tempfile::TempDir), Guest, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(dir.path().join("hv.sock")).unwrap();
    let connector = Connector::remote(server.path());
    let ts = Toolstack::open(&connector).unwrap();
    let record = ts.create_domain().unwrap();
    let guest = Guest::attach(&connector, &record).unwrap();
    let sock = server.path().to_string_lossy().to_string();
    let peer = Proc::spawn(&[mode, &sock, &record.info.domid.to_string()]);
    // Dropped in this order: toolstack, server, then the directory.
    ((ts, server, dir), guest, peer)
}

#[test]
fn test_exec_keeps_bindings_and_mapping_rights() {
    let (_hv, mut guest, mut peer) = guest_with_peer("exec-adopt");
    let bound = peer.line();
    assert!(bound.starts_with("bound "), "{bound}");
    // Printed by the new program after exec: it mapped the grant again.
    assert_eq!(peer.line(), "mapped");
    guest.notify().unwrap();
    assert_eq!(peer.line(), bound.replace("bound", "event"));
    assert!(peer.child.wait().unwrap().success());
}

#[test]
fn test_grant_only_mappable_by_grantee_and_mfn_only_by_privileged() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let a = ts.create_domain().unwrap();
    let b = ts.create_domain().unwrap();
    let dom0 = MockPageMapper::open(&connector, 0).unwrap();
    let as_b = MockPageMapper::open(&connector, b.info.domid).unwrap();
    assert!(dom0
        .map_grant(a.info.domid, GNTTAB_RESERVED_XENSTORE)
        .is_ok());
    assert!(as_b
        .map_grant(a.info.domid, GNTTAB_RESERVED_XENSTORE)
        .is_err());
    assert!(
        dom0.map_grant(a.info.domid, 7).is_err(),
        "ungranted reference"
    );
    assert!(dom0.map_foreign(a.info.domid, a.store_mfn).is_ok());
    assert!(as_b.map_foreign(a.info.domid, a.store_mfn).is_err());
    assert!(
        dom0.map_foreign(a.info.domid, b.store_mfn).is_err(),
        "frame of another domain"
    );
    // A guest may map its own frame (its kernel's view of its page).
    assert!(as_b.map_foreign(b.info.domid, b.store_mfn).is_ok());
    // Both mappings of one grant see the same bytes.
    let m1 = dom0
        .map_grant(a.info.domid, GNTTAB_RESERVED_XENSTORE)
        .unwrap();
    let m2 = dom0.map_foreign(a.info.domid, a.store_mfn).unwrap();
    m1.ring().set_evtchn_port(0x1234);
    assert_eq!(m2.ring().evtchn_port(), 0x1234);
}

#[test]
fn test_virq_dom_exc_fires_on_shutdown_and_destroy() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    let virq = dom0.bind_virq(VIRQ_DOM_EXC).unwrap();
    let mut info = MockDomainInfo::open(&connector, 0).unwrap();
    let rec = ts.create_domain().unwrap();
    let domid = rec.info.domid;
    assert!(no_event_pending(&mut dom0));

    ts.shutdown(domid, mock_xen::toolstack::SHUTDOWN_CRASH)
        .unwrap();
    assert_eq!(wait_ports(&mut dom0), vec![virq]);
    let d = info.get(domid).unwrap().unwrap();
    assert_eq!(d.shutdown, Some(gnttab::ShutdownReason::Crash));
    assert!(!d.dying);

    ts.destroy(domid).unwrap();
    assert_eq!(wait_ports(&mut dom0), vec![virq]);
    assert!(
        info.get(domid).unwrap().is_none(),
        "nothing mapped it: gone at once"
    );

    // Unprivileged domains cannot bind it.
    let other = ts.create_domain().unwrap();
    let mut guest = MockEventChannel::open(&connector, other.info.domid).unwrap();
    assert!(guest.bind_virq(VIRQ_DOM_EXC).is_err());
}

#[test]
fn test_domain_dying_until_last_mapping_dropped() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let rec = ts.create_domain().unwrap();
    let mapper = MockPageMapper::open(&connector, 0).unwrap();
    let page = mapper
        .map_grant(rec.info.domid, GNTTAB_RESERVED_XENSTORE)
        .unwrap();
    ts.destroy(rec.info.domid).unwrap();
    let mut info = MockDomainInfo::open(&connector, 0).unwrap();
    assert!(info.get(rec.info.domid).unwrap().unwrap().dying);
    assert!(mapper
        .map_grant(rec.info.domid, GNTTAB_RESERVED_XENSTORE)
        .is_err());
    drop(page);
    assert!(info.get(rec.info.domid).unwrap().is_none());
}

#[test]
fn test_domid_reuse_gets_new_unique_id() {
    let connector = Connector::new_local().unwrap();
    let Connector::Local(hv) = &connector else {
        unreachable!()
    };
    let first = hv
        .lock()
        .unwrap()
        .create_domain_with_id(42, false, 0)
        .unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    ts.destroy(42).unwrap();
    let second = hv
        .lock()
        .unwrap()
        .create_domain_with_id(42, false, 0)
        .unwrap();
    assert_ne!(first.info.unique_id, second.info.unique_id);
    let mut info = MockDomainInfo::open(&connector, 0).unwrap();
    assert_eq!(
        info.get(42).unwrap().unwrap().unique_id,
        Some(second.info.unique_id)
    );
}

#[test]
fn test_evtchn_port_masked_until_unmasked_then_redelivered() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    guest.notify().unwrap();
    guest.notify().unwrap();
    let mut fired = Vec::new();
    dom0.evtchn.read_pending(&mut fired).unwrap();
    assert_eq!(fired, vec![dom0.port], "two notifications, one delivery");
    guest.notify().unwrap();
    let mut again = Vec::new();
    dom0.evtchn.read_pending(&mut again).unwrap();
    assert!(again.is_empty(), "masked port is not reported again");
    dom0.evtchn.unmask(&fired).unwrap();
    assert_eq!(
        dom0.wait_event(),
        vec![dom0.port],
        "pending while masked: re-raised on unmask"
    );
}

/// A wait long enough to go by the channel's tick (more than two 100 ms
/// ticks) still ends at its deadline, not before, reporting nothing; and
/// a notification wakes such a wait long before its deadline.
#[test]
fn test_evtchn_long_wait_keeps_its_deadline_and_wakes_on_notify() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    let timeout = Duration::from_millis(450);
    let start = Instant::now();
    let mut fired = Vec::new();
    dom0.evtchn.wait(Some(timeout), &mut fired).unwrap();
    let took = start.elapsed();
    assert!(fired.is_empty(), "nothing fired, nothing reported");
    assert!(
        took >= timeout,
        "returned after {took:?}, before its {timeout:?}"
    );
    assert!(took < LIMIT, "returned after {took:?}");

    // Now from another thread, while we wait for up to LIMIT.
    let notifier = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        guest.notify().unwrap();
        guest
    });
    let start = Instant::now();
    let mut fired = Vec::new();
    while fired.is_empty() && start.elapsed() < LIMIT {
        dom0.evtchn.wait(Some(LIMIT), &mut fired).unwrap();
    }
    assert_eq!(fired, vec![dom0.port], "the notification woke the wait");
    assert!(start.elapsed() < LIMIT);
    notifier.join().unwrap();
}

/// Whether an edge-triggered epoll set holding `evtchn`'s descriptor
/// reports it now (without waiting).
fn edge_ready(epoll: &nix::sys::epoll::Epoll) -> bool {
    let mut ev = [nix::sys::epoll::EpollEvent::empty()];
    epoll
        .wait(&mut ev, nix::sys::epoll::EpollTimeout::ZERO)
        .unwrap()
        == 1
}

#[test]
fn test_evtchn_edge_triggered_fires_once_per_event_without_reads() {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
    use std::os::fd::{AsRawFd, BorrowedFd};
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    assert!(dom0.evtchn.poll_edge_triggered());
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    // SAFETY: the handle owns the descriptor and outlives this test's use.
    let fd = unsafe { BorrowedFd::borrow_raw(dom0.evtchn.as_raw_fd()) };
    epoll
        .add(
            fd,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
        )
        .unwrap();
    for round in 0..3 {
        guest.notify().unwrap();
        assert!(
            edge_ready(&epoll),
            "round {round}: the notification is an edge"
        );
        let mut fired = Vec::new();
        dom0.evtchn.read_pending(&mut fired).unwrap();
        assert_eq!(fired, vec![dom0.port], "round {round}");
        assert!(!edge_ready(&epoll), "round {round}: one edge per event");
        dom0.evtchn.unmask(&fired).unwrap();
    }
    // Raised while masked: the unmask is a new edge.
    guest.notify().unwrap();
    let mut fired = Vec::new();
    dom0.evtchn.read_pending(&mut fired).unwrap();
    guest.notify().unwrap();
    assert!(
        edge_ready(&epoll),
        "the first notification's edge (the second, masked, kicks no one)"
    );
    assert!(!edge_ready(&epoll));
    dom0.evtchn.unmask(&fired).unwrap();
    assert!(
        edge_ready(&epoll),
        "pending while masked: re-raised on unmask"
    );
    let mut again = Vec::new();
    dom0.evtchn.read_pending(&mut again).unwrap();
    assert_eq!(again, vec![dom0.port]);
}

#[test]
fn test_closed_peer_port_returns_to_unbound() {
    let connector = Connector::new_local().unwrap();
    let (_ts, rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    dom0.evtchn.unbind(dom0.port).unwrap();
    // The guest's port is unbound for dom0 again: notifying it is harmless
    // and dom0 can bind it anew.
    guest.notify().unwrap();
    let port = dom0
        .evtchn
        .bind_interdomain(rec.info.domid, Port::new(rec.store_port))
        .unwrap();
    guest.notify().unwrap();
    assert_eq!(dom0.wait_event(), vec![port]);
}

#[test]
fn test_guest_reconnect_handshake_resets_ring() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    let (stop, server) = spawn_echo_server(dom0);
    let mut client = Client::new(guest);
    assert_eq!(client.read(0, "/a").unwrap(), b"/a\0");
    guest = client.into_inner();
    guest.write_partial_request("/half", b"written").unwrap();
    guest.reconnect().unwrap();
    assert_eq!(guest.end().readable().unwrap(), 0);
    let mut client = Client::new(guest);
    assert_eq!(client.read(0, "/after").unwrap(), b"/after\0");
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

// ---- Fault injection: each switch does what it says. ----------------------

#[test]
fn test_fault_corrupt_indices_gives_server_typed_error() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    guest.corrupt_indices().unwrap();
    dom0.wait_event();
    let mut buf = [0u8; 64];
    assert!(matches!(
        dom0.end().read(&mut buf),
        Err(RingError::IndexOverrun { .. })
    ));
}

#[test]
fn test_fault_oversized_message_rejected_by_decoder() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    guest.send_oversized().unwrap();
    dom0.wait_event();
    let mut buf = [0u8; 64];
    let n = dom0.end().read(&mut buf).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        Decoder::new().decode_all(&buf[..n], &mut out),
        Err(RingError::PayloadTooLong { len: 4097 })
    ));
}

#[test]
fn test_fault_garbage_is_not_a_request() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    guest.send_garbage().unwrap();
    dom0.wait_event();
    let mut buf = [0u8; 64];
    let n = dom0.end().read(&mut buf).unwrap();
    let mut out = Vec::new();
    Decoder::new().decode_all(&buf[..n], &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].msg_type().is_err());
}

#[test]
fn test_fault_never_reading_fills_response_ring() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    let sent = guest.flood_requests(10, "/x").unwrap();
    assert_eq!(sent, 10);
    dom0.wait_event();
    // The server answers, but the guest never reads: the response ring
    // fills and stays full.
    let filler = [0u8; 300];
    let mut written = 0;
    while dom0.end().writable().unwrap() > 0 {
        written += dom0.end().write(&filler).unwrap();
    }
    assert_eq!(written, 1024);
    assert_eq!(guest.end().readable().unwrap(), 1024);
}

#[test]
fn test_fault_flood_requests_and_watches() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    let watches = guest.flood_watches(1000, "/local/domain/1/device").unwrap();
    assert!(watches > 10, "the request ring took {watches} watches");
    dom0.wait_event();
    let mut buf = [0u8; 1024];
    let n = dom0.end().read(&mut buf).unwrap();
    let mut out = Vec::new();
    Decoder::new().decode_all(&buf[..n], &mut out).unwrap();
    assert_eq!(out.len(), watches);
    assert!(out.iter().all(|m| m.msg_type().unwrap() == MsgType::Watch));
    let reads = guest.flood_requests(1000, "/").unwrap();
    assert!(reads > 10);
}

#[test]
fn test_fault_dropped_notifications_raise_nothing() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    guest.set_drop_notifications(true);
    guest.flood_requests(1, "/x").unwrap();
    assert!(no_event_pending(&mut dom0.evtchn));
    assert!(
        dom0.end().readable().unwrap() > 0,
        "the bytes are there, unannounced"
    );
    guest.set_drop_notifications(false);
    guest.notify().unwrap();
    assert_eq!(dom0.wait_event(), vec![dom0.port]);
}

#[test]
fn test_fault_death_mid_request_leaves_partial_bytes_and_fires_virq() {
    let connector = Connector::new_local().unwrap();
    let (ts, rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    let mut exc = MockEventChannel::open(&connector, 0).unwrap();
    let virq = exc.bind_virq(VIRQ_DOM_EXC).unwrap();
    let half = guest
        .write_partial_request("/local/domain/1/data", b"never finished")
        .unwrap();
    ts.destroy(rec.info.domid).unwrap();
    assert_eq!(wait_ports(&mut exc), vec![virq]);
    dom0.wait_event();
    let mut buf = [0u8; 1024];
    let n = dom0.end().read(&mut buf).unwrap();
    assert_eq!(n, half);
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    dec.decode_all(&buf[..n], &mut out).unwrap();
    assert!(out.is_empty() && !dec.is_idle(), "a request cut in half");
    let mut info = MockDomainInfo::open(&connector, 0).unwrap();
    assert!(
        info.get(rec.info.domid).unwrap().unwrap().dying,
        "dom0 still maps its page"
    );
    // The dead guest can no longer act.
    assert!(guest.notify().is_err());
}

/// Many quick round trips between two processes: a lost wakeup anywhere in
/// the notify/mask/unmask protocol would stall one of them.
#[test]
fn test_ring_cross_process_many_round_trips_lose_no_wakeup() {
    use std::io::{Read, Write};
    let (_hv, mut guest, mut dom0) = guest_with_peer("echo-dom0");
    assert!(dom0.line().starts_with("ready "));
    for i in 0..5000u32 {
        let msg = i.to_le_bytes();
        guest.write_all(&msg).unwrap();
        let mut back = [0u8; 4];
        if let Err(e) = guest.read_exact(&mut back) {
            panic!("round {i}: {e}");
        }
        assert_eq!(back, msg);
    }
    guest.write_all(b"quit").unwrap();
    let mut back = [0u8; 4];
    guest.read_exact(&mut back).unwrap();
    assert!(dom0.child.wait().unwrap().success());
}

/// A server process may only be forked by a process with one thread (the
/// test harness has several): refused with a typed error, nothing forked.
#[test]
fn test_server_process_refuses_to_fork_from_a_threaded_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hv.sock");
    match mock_xen::ServerProcess::fork(&path) {
        Err(mock_xen::Error::Threaded { threads }) => assert!(threads > 1),
        other => panic!("{other:?}"),
    }
    assert!(!path.exists());
}

#[test]
fn test_guest_reads_and_writes_fail_once_the_server_sets_the_error_word() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    guest.set_block_limit(LIMIT);
    dom0.end().set_error(xenring::RingErrorCode::Proto);
    let mut buf = [0u8; 16];
    let err = std::io::Read::read(&mut guest, &mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted, "{err}");
    let err = std::io::Write::write(&mut guest, b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted, "{err}");
}

#[test]
fn test_guest_block_limit_bounds_a_read_nobody_answers() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, _dom0) = guest_and_dom0(&connector);
    guest.set_block_limit(Duration::from_millis(100));
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let err = std::io::Read::read(&mut guest, &mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        start.elapsed() < mock_xen::guest::GUEST_BLOCK_LIMIT,
        "the limit set, not the default, bounded the read"
    );
}

#[test]
fn test_guest_wait_event_consumes_and_unmasks_the_event() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    for round in 0..2 {
        dom0.evtchn.notify(dom0.port).unwrap();
        guest.wait_event(LIMIT).unwrap();
        assert!(
            no_event_pending(guest.evtchn()),
            "round {round}: the event was taken"
        );
    }
}

#[test]
fn test_guest_notifies_only_when_it_frees_a_full_response_ring() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, mut dom0) = guest_and_dom0(&connector);
    guest.set_block_limit(LIMIT);
    let ring = xenring::page::RING_SIZE_U32 as usize;
    assert_eq!(dom0.end().write(&vec![7u8; ring]).unwrap(), ring);
    dom0.evtchn.notify(dom0.port).unwrap();
    let mut buf = vec![0u8; 100];
    assert_eq!(std::io::Read::read(&mut guest, &mut buf).unwrap(), 100);
    // The server may be waiting for room: it is told.
    assert_eq!(dom0.wait_event(), vec![dom0.port]);
    let mut rest = vec![0u8; ring];
    assert_eq!(
        std::io::Read::read(&mut guest, &mut rest).unwrap(),
        ring - 100
    );
    // Not full before this read: nobody waits for room, no notification.
    assert!(no_event_pending(&mut dom0.evtchn));
}

#[test]
fn test_flood_fills_the_request_ring_with_whole_requests_only() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    // 16-byte header + 47 characters + NUL: 16 requests fill 1024 bytes.
    let path = format!("/{}", "p".repeat(46));
    assert_eq!(guest.flood_requests(100, &path).unwrap(), 16);
    assert_eq!(dom0.end().readable().unwrap(), 1024);
    let mut buf = [0u8; 1024];
    assert_eq!(dom0.end().read(&mut buf).unwrap(), 1024);
    let mut msgs = Vec::new();
    Decoder::new().decode_all(&buf, &mut msgs).unwrap();
    assert_eq!(msgs.len(), 16);
    // One byte short of a request: it is not started.
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    let long = format!("/{}", "p".repeat(100));
    assert_eq!(guest.flood_requests(100, &long).unwrap(), 1024 / 118);
    assert_eq!(dom0.end().readable().unwrap(), (1024 / 118) * 118);
}

#[test]
fn test_a_partial_request_is_half_a_request_with_its_whole_header() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    // 16 + "data/x\0never finished" = 37 bytes: 18 go in.
    assert_eq!(
        guest
            .write_partial_request("data/x", b"never finished")
            .unwrap(),
        18
    );
    assert_eq!(dom0.end().readable().unwrap(), 18);
    // 16 + "x\0" = 18 bytes: half would cut the header; 17 go in.
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    assert_eq!(guest.write_partial_request("x", b"").unwrap(), 17);
    assert_eq!(dom0.end().readable().unwrap(), 17);
}

#[test]
fn test_guest_write_to_a_full_ring_waits_its_whole_block_limit() {
    let connector = Connector::new_local().unwrap();
    let (_ts, _rec, mut guest, dom0) = guest_and_dom0(&connector);
    assert_eq!(guest.write_raw(&[0u8; 1024]).unwrap(), 1024);
    assert_eq!(dom0.end().readable().unwrap(), 1024);
    let limit = Duration::from_millis(200);
    guest.set_block_limit(limit);
    let start = Instant::now();
    let err = std::io::Write::write(&mut guest, b"x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // A lower bound only: the write gave the server the time it was
    // allowed before giving up.
    assert!(
        start.elapsed() >= limit,
        "gave up after {:?}",
        start.elapsed()
    );
}
