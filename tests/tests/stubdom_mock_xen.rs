//! The stub's server end to end over mock-xen: the stub is a domain of its
//! own (domid 1) with mock-xen's backends, dom0 hands it its ring as
//! Xen's `init-xenstore-domain` has dom0's kernel do (grant ref 1 to the
//! stub, an unbound port named by `--event`), and dom0's tools and the
//! guests talk through xenring's client over their rings.
//!
//! The server runs its loop on a thread of its own; every wait here is on
//! a condition, bounded (the guests' blocking reads give up after
//! mock-xen's generous limit; polled conditions after [`LIMIT`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mock_xen::proto::{Request, Response};
use mock_xen::{Conn, Connector, DomainRecord, Guest, MockDomainInfo, MockEventChannel};
use mock_xen::{MockPageMapper, Toolstack};
use xenring::perms::{Perm, PermKind};
use xenring::{Client, RingErrorCode, XsErrno};
use xenstored_stubdom::{Host, Server, StartError};

/// The stub's domid.
const STUB: u16 = 1;

/// How long a polled condition may take.
const LIMIT: Duration = Duration::from_secs(30);

/// The kernel services, recorded.
#[derive(Clone)]
struct TestHost {
    start: Instant,
    logs: Arc<Mutex<Vec<String>>>,
    free: Arc<AtomicUsize>,
    /// Clock reads (two per turn of the loop).
    clock_reads: Arc<AtomicUsize>,
}

impl TestHost {
    /// Memory without limit, no lines yet.
    fn new() -> Self {
        Self {
            start: Instant::now(),
            logs: Arc::default(),
            free: Arc::new(AtomicUsize::new(usize::MAX)),
            clock_reads: Arc::default(),
        }
    }
}

impl Host for TestHost {
    fn now_ms(&self) -> u64 {
        self.clock_reads.fetch_add(1, Ordering::SeqCst);
        u64::try_from(self.start.elapsed().as_millis()).unwrap()
    }
    fn log(&self, line: &str) {
        self.logs.lock().unwrap().push(line.to_string());
    }
    fn free_memory(&self) -> usize {
        self.free.load(Ordering::SeqCst)
    }
    fn heap_report(&self) -> Option<String> {
        Some(format!("heap: {} bytes free", self.free_memory()))
    }
}

/// A machine with the stub serving dom0.
struct World {
    connector: Connector,
    /// Dom0's toolstack (privileged hypercalls).
    toolstack: Conn,
    host: TestHost,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

fn call(conn: &Conn, req: Request) -> Response {
    conn.call(&req).unwrap().0
}

impl World {
    fn start() -> (Self, Client<Guest>) {
        Self::start_with("")
    }

    /// Starts the stub with `extra` after the launcher's words; returns
    /// dom0's client over its ring.
    fn start_with(extra: &str) -> (Self, Client<Guest>) {
        let (connector, toolstack, dom0) = stub_machine(true);
        // IOCTL_XENBUS_BACKEND_SETUP's other half: a port left unbound.
        let port = toolstack
            .call_port(&Request::AllocUnbound {
                domid: 0,
                remote: STUB,
            })
            .unwrap();
        let guest = Guest::attach(
            &connector,
            &DomainRecord {
                store_port: port,
                ..dom0
            },
        )
        .unwrap();
        let host = TestHost::new();
        let stop = Arc::new(AtomicBool::new(false));
        let cmdline = format!("--event {port} --internal-db {extra}");
        let (tx, rx) = mpsc::channel();
        let server = {
            let (connector, host, stop) = (connector.clone(), host.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let evtchn = MockEventChannel::open(&connector, STUB).unwrap();
                let mapper = MockPageMapper::open(&connector, STUB).unwrap();
                let dominfo = MockDomainInfo::open(&connector, STUB).unwrap();
                match Server::new(&cmdline, evtchn, mapper, dominfo, host) {
                    Ok(mut server) => {
                        tx.send(None).unwrap();
                        while !stop.load(Ordering::SeqCst) {
                            server.turn();
                        }
                    }
                    Err(e) => tx.send(Some(e.to_string())).unwrap(),
                }
            })
        };
        if let Some(e) = rx.recv().unwrap() {
            panic!("the stub did not start: {e}");
        }
        let world = Self {
            connector,
            toolstack,
            host,
            stop,
            server: Some(server),
        };
        (world, Client::new(guest))
    }

    fn logs(&self) -> Vec<String> {
        self.host.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    fn wait_log(&self, needle: &str) {
        wait_for(|| self.logs().iter().any(|l| l.contains(needle)), needle);
    }

    /// Creates a guest whose xenstore domain is the stub, gives it a home
    /// (as libxl does), introduces it over dom0's ring, and boots its
    /// frontend.
    fn create_guest(&self, dom0: &mut Client<Guest>) -> Client<Guest> {
        let Response::Domain(record) = call(
            &self.toolstack,
            Request::CreateDomain {
                xenstore_domid: STUB,
            },
        ) else {
            panic!("no domain created")
        };
        let d = record.info.domid;
        let home = format!("/local/domain/{d}");
        dom0.mkdir(0, &home).unwrap();
        dom0.set_perms(0, &home, &[Perm::new(PermKind::None, d)])
            .unwrap();
        dom0.introduce(d, record.store_mfn, record.store_port)
            .unwrap();
        Client::new(Guest::attach(&self.connector, &record).unwrap())
    }

    fn destroy(&self, domid: u16) {
        self.toolstack
            .call_ok(&Request::DestroyDomain { domid })
            .unwrap();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            let result = server.join();
            if !std::thread::panicking() {
                result.expect("the server thread panicked");
            }
        }
    }
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn domid(c: &Client<Guest>) -> u16 {
    c.get_ref().domid()
}

#[test]
fn test_start_up_line_names_dom0s_port() {
    let (world, _dom0) = World::start();
    let logs = world.logs();
    assert!(
        logs[0].starts_with("xenstored-stubdom: serving dom0's ring on port"),
        "{logs:?}"
    );
}

#[test]
fn test_dom0_reads_writes_lists_and_transactions() {
    let (_world, mut dom0) = World::start();
    dom0.write(0, "/tool/xenstored/domid", b"1").unwrap();
    assert_eq!(dom0.read(0, "/tool/xenstored/domid").unwrap(), b"1");
    assert_eq!(dom0.directory(0, "/tool/xenstored").unwrap(), ["domid"]);
    let tx = dom0.transaction_start().unwrap();
    dom0.write(tx, "/t/a", b"in tx").unwrap();
    assert!(matches!(
        dom0.read(0, "/t/a"),
        Err(xenring::Error::Xs(XsErrno::ENOENT))
    ));
    dom0.transaction_end(tx, true).unwrap();
    assert_eq!(dom0.read(0, "/t/a").unwrap(), b"in tx");
    dom0.rm(0, "/t").unwrap();
    assert!(dom0.read(0, "/t/a").is_err());
    // A value as large as the protocol allows crosses the 1 KiB ring.
    let big = vec![b'v'; 2048];
    dom0.write(0, "/big", &big).unwrap();
    assert_eq!(dom0.read(0, "/big").unwrap(), big);
}

#[test]
fn test_dom0_watch_fires_on_its_own_write() {
    let (_world, mut dom0) = World::start();
    dom0.watch("/w", "tok").unwrap();
    let first = dom0.next_watch_event().unwrap();
    assert_eq!((first.path.as_str(), first.token.as_str()), ("/w", "tok"));
    dom0.write(0, "/w/x", b"1").unwrap();
    let ev = dom0.next_watch_event().unwrap();
    assert_eq!((ev.path.as_str(), ev.token.as_str()), ("/w/x", "tok"));
}

#[test]
fn test_introduced_guest_talks_and_a_watch_fires_across_domains() {
    let (world, mut dom0) = World::start();
    let mut guest = world.create_guest(&mut dom0);
    let d = domid(&guest);
    world.wait_log(&format!("domain {d} introduced"));
    let home = format!("/local/domain/{d}");
    assert_eq!(guest.get_domain_path(d).unwrap(), home);
    guest.write(0, &format!("{home}/data"), b"hello").unwrap();
    assert_eq!(dom0.read(0, &format!("{home}/data")).unwrap(), b"hello");
    // The guest may not read dom0's nodes.
    dom0.write(0, "/secret", b"s").unwrap();
    assert!(matches!(
        guest.read(0, "/secret"),
        Err(xenring::Error::Xs(XsErrno::EACCES))
    ));
    // dom0 watches the guest's home; the guest's write fires it.
    dom0.watch(&home, "g").unwrap();
    let _initial = dom0.next_watch_event().unwrap();
    guest.write(0, &format!("{home}/state"), b"4").unwrap();
    let ev = dom0.next_watch_event().unwrap();
    assert_eq!(ev.path, format!("{home}/state"));
    // The guest watches its home; dom0's write fires it.
    guest.watch(&format!("{home}/ctl"), "c").unwrap();
    let _initial = guest.next_watch_event().unwrap();
    dom0.write(0, &format!("{home}/ctl"), b"go").unwrap();
    let ev = guest.next_watch_event().unwrap();
    assert_eq!(
        (ev.path, ev.token),
        (format!("{home}/ctl"), "c".to_string())
    );
}

#[test]
fn test_destroyed_guest_fires_release_domain_and_its_nodes_go() {
    let (world, mut dom0) = World::start();
    let mut guest = world.create_guest(&mut dom0);
    let d = domid(&guest);
    let home = format!("/local/domain/{d}");
    guest.write(0, &format!("{home}/data"), b"x").unwrap();
    // Outside its home too (given it): removed with it (no --keep-orphans).
    dom0.mkdir(0, "/vm").unwrap();
    dom0.set_perms(
        0,
        "/vm",
        &[Perm::new(PermKind::None, 0), Perm::new(PermKind::Both, d)],
    )
    .unwrap();
    guest.write(0, "/vm/guest-made", b"y").unwrap();
    dom0.watch("@releaseDomain", "rel").unwrap();
    let _initial = dom0.next_watch_event().unwrap();
    drop(guest);
    world.destroy(d);
    let ev = dom0.next_watch_event().unwrap();
    assert_eq!(
        (ev.path.as_str(), ev.token.as_str()),
        ("@releaseDomain", "rel")
    );
    world.wait_log(&format!("domain {d} released"));
    assert!(!dom0.is_domain_introduced(d).unwrap());
    assert!(matches!(
        dom0.read(0, "/vm/guest-made"),
        Err(xenring::Error::Xs(XsErrno::ENOENT))
    ));
    // libxl removes the home itself; what the guest made in it is the
    // toolstack's to clean up, and dom0 still can.
    dom0.rm(0, &home).unwrap();
    // The domain is gone from mock-xen once the stub let go of its page.
    let ts = Toolstack::open(&world.connector).unwrap();
    wait_for(
        || ts.list().unwrap().iter().all(|i| i.domid != d),
        "the guest's reaping",
    );
}

#[test]
fn test_guest_that_corrupts_its_ring_is_cut_off_and_dom0_carries_on() {
    let (world, mut dom0) = World::start();
    let mut bad = world.create_guest(&mut dom0);
    let mut good = world.create_guest(&mut dom0);
    let (b, g) = (domid(&bad), domid(&good));
    bad.write(0, &format!("/local/domain/{b}/x"), b"1").unwrap();
    bad.get_mut().corrupt_indices().unwrap();
    wait_for(
        || bad.get_ref().end().error() != RingErrorCode::None,
        "the error word",
    );
    assert_eq!(bad.get_ref().end().error(), RingErrorCode::RingIdx);
    world.wait_log(&format!("domain {b} (connection"));
    // The console line says why.
    let line = world
        .logs()
        .into_iter()
        .find(|l| l.contains(&format!("domain {b} (connection")))
        .unwrap();
    assert!(
        line.contains("ring indices are inconsistent")
            && line.ends_with("its ring is no longer served"),
        "{line}"
    );
    // Others are served as before.
    dom0.write(0, "/after", b"ok").unwrap();
    assert_eq!(dom0.read(0, "/after").unwrap(), b"ok");
    good.write(0, &format!("/local/domain/{g}/y"), b"2")
        .unwrap();
    // The cut-off domain stays known until it dies, then is released.
    assert!(dom0.is_domain_introduced(b).unwrap());
    drop(bad);
    world.destroy(b);
    world.wait_log(&format!("domain {b} released"));
    assert!(!dom0.is_domain_introduced(b).unwrap());
}

#[test]
fn test_request_written_without_a_notification_is_still_served() {
    let (world, mut dom0) = World::start();
    let mut guest = world.create_guest(&mut dom0);
    let home = format!("/local/domain/{}", domid(&guest));
    guest.write(0, &format!("{home}/k"), b"v").unwrap();
    // As a Linux guest writing while the server has not caught up: no
    // notification. The server's look before sleeping finds it.
    guest.get_mut().set_drop_notifications(true);
    let id = guest
        .submit(
            xenring::MsgType::Read,
            0,
            &xenring::codec::build_args(&[format!("{home}/k").as_bytes()]),
        )
        .unwrap();
    let reply = guest.wait_reply(id).unwrap();
    assert_eq!(reply.payload, b"v");
}

#[test]
fn test_guest_that_never_reads_its_responses_does_not_stall_dom0() {
    let (world, mut dom0) = World::start();
    let mut greedy = world.create_guest(&mut dom0);
    let home = format!("/local/domain/{}", domid(&greedy));
    greedy
        .write(0, &format!("{home}/k"), &[b'x'; 1000])
        .unwrap();
    for _ in 0..20 {
        let sent = greedy
            .get_mut()
            .flood_requests(100, &format!("{home}/k"))
            .unwrap();
        dom0.write(0, "/alive", b"1").unwrap();
        assert_eq!(dom0.read(0, "/alive").unwrap(), b"1");
        if sent == 0 {
            break;
        }
    }
}

#[test]
fn test_guest_sending_an_oversized_header_is_cut_off_with_proto() {
    let (world, mut dom0) = World::start();
    let mut bad = world.create_guest(&mut dom0);
    bad.get_mut().send_oversized().unwrap();
    wait_for(
        || bad.get_ref().end().error() != RingErrorCode::None,
        "the error word",
    );
    assert_eq!(bad.get_ref().end().error(), RingErrorCode::Proto);
    dom0.write(0, "/still", b"here").unwrap();
}

#[test]
fn test_guest_reconnect_handshake_resets_its_ring() {
    let (world, mut dom0) = World::start();
    let mut guest = world.create_guest(&mut dom0);
    let d = domid(&guest);
    let home = format!("/local/domain/{d}");
    guest.watch(&home, "w").unwrap();
    let _initial = guest.next_watch_event().unwrap();
    guest.get_mut().reconnect().unwrap();
    // Its watch went with the reset: dom0's write fires nothing, and the
    // guest's next request is answered from a clean ring.
    dom0.write(0, &format!("{home}/k"), b"v").unwrap();
    assert_eq!(guest.read(0, &format!("{home}/k")).unwrap(), b"v");
    assert!(guest.queued_watch_event().is_none());
}

#[test]
fn test_low_memory_answers_enomem_and_logs_once_per_episode() {
    let (world, mut dom0) = World::start();
    dom0.write(0, "/before", b"1").unwrap();
    world.host.free.store(1000, Ordering::SeqCst);
    for i in 0..3 {
        assert!(matches!(
            dom0.write(0, &format!("/low{i}"), b"v"),
            Err(xenring::Error::Xs(XsErrno::ENOMEM))
        ));
    }
    // What gives memory back still works.
    dom0.rm(0, "/before").unwrap();
    let low = |w: &World| w.logs().iter().filter(|l| l.contains("memory low")).count();
    assert_eq!(low(&world), 1);
    world.host.free.store(usize::MAX, Ordering::SeqCst);
    dom0.write(0, "/after", b"2").unwrap();
    assert_eq!(dom0.read(0, "/after").unwrap(), b"2");
    world.wait_log("3 requests were answered ENOMEM");
    assert!(matches!(
        dom0.read(0, "/low0"),
        Err(xenring::Error::Xs(XsErrno::ENOENT))
    ));
}

#[test]
fn test_full_store_is_still_read_and_held_at_its_limit_is_one_episode() {
    use xenstored_stubdom::memory::{MEMORY_RESERVE, READ_RESERVE, RECOVERED};
    let (world, mut dom0) = World::start();
    dom0.write(0, "/kept", b"1").unwrap();
    // Too little to grow the store, enough for replies: reads are served,
    // so a full store can be looked at and cleaned up.
    world.host.free.store(READ_RESERVE, Ordering::SeqCst);
    assert!(matches!(
        dom0.write(0, "/more", b"v"),
        Err(xenring::Error::Xs(XsErrno::ENOMEM))
    ));
    assert_eq!(dom0.read(0, "/kept").unwrap(), b"1");
    assert!(dom0.directory(0, "/").unwrap().iter().any(|c| c == "kept"));
    // Hovering at the limit (a write passes, the next is refused): still
    // the same episode, one line.
    for i in 0..5 {
        world
            .host
            .free
            .store(MEMORY_RESERVE + 4096, Ordering::SeqCst);
        dom0.write(0, &format!("/edge{i}"), b"v").unwrap();
        world.host.free.store(MEMORY_RESERVE - 1, Ordering::SeqCst);
        assert!(dom0.write(0, "/more", b"v").is_err());
    }
    let count = |w: &World, what: &str| w.logs().iter().filter(|l| l.contains(what)).count();
    assert_eq!(count(&world, "memory low"), 1);
    assert_eq!(count(&world, "memory available again"), 0);
    // Room to spare again: the episode ends with its count.
    world.host.free.store(RECOVERED, Ordering::SeqCst);
    dom0.write(0, "/after", b"2").unwrap();
    world.wait_log("memory available again (655360 bytes free); 6 requests were answered ENOMEM");
    assert_eq!(count(&world, "memory low"), 1);
}

#[test]
fn test_control_check_memreport_and_print_reach_the_console() {
    let (world, mut dom0) = World::start();
    dom0.write(0, "/n", b"1").unwrap();
    let reply = dom0.control(&["check"]).unwrap();
    assert!(reply.starts_with(b"OK"), "{reply:?}");
    world.wait_log("control check: the store is consistent");
    let reply = dom0.control(&["memreport"]).unwrap();
    assert!(reply.starts_with(b"OK"), "{reply:?}");
    world.wait_log("nodes ");
    assert!(world.logs().iter().any(|l| l.starts_with("domain 0:")));
    // The kernel's heap figures follow the engine's report.
    world.wait_log("heap: ");
    let reply = dom0.control(&["memreport", "/var/log/x"]).unwrap();
    assert!(reply.starts_with(b"OK"), "{reply:?}");
    world.wait_log("the report for \"/var/log/x\" is on the console");
    dom0.control(&["print", "hello console"]).unwrap();
    world.wait_log("hello console");
    dom0.control(&["log", "on"]).unwrap();
    world.wait_log("a stub domain has no access log");
    // A guest's control requests are refused, and reach no console.
    let mut guest = world.create_guest(&mut dom0);
    let before = world.logs().len();
    for cmd in ["check", "memreport", "print"] {
        assert!(
            matches!(
                guest.control(&[cmd, "x"][..1 + usize::from(cmd == "print")]),
                Err(xenring::Error::Xs(XsErrno::EACCES))
            ),
            "{cmd}"
        );
    }
    dom0.write(0, "/sync", b"1").unwrap();
    assert_eq!(world.logs().len(), before, "{:?}", &world.logs()[before..]);
}

#[test]
fn test_live_update_is_refused_clearly() {
    let (world, mut dom0) = World::start();
    let reply = dom0.control(&["live-update", "-s"]).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("not available in a xenstore stub domain"),
        "{text}"
    );
    world.wait_log("control live-update");
    // And the stub serves on.
    dom0.write(0, "/lu", b"no").unwrap();
}

#[test]
fn test_quota_from_the_command_line_applies_to_guests() {
    let (world, mut dom0) = World::start_with("-E 3");
    let mut guest = world.create_guest(&mut dom0);
    let home = format!("/local/domain/{}", domid(&guest));
    let mut results = Vec::new();
    for i in 0..5 {
        results.push(guest.write(0, &format!("{home}/n{i}"), b"v"));
    }
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(xenring::Error::Xs(XsErrno::ENOSPC)))),
        "{results:?}"
    );
    // Dom0 is not limited.
    for i in 0..5 {
        dom0.write(0, &format!("/d0/n{i}"), b"v").unwrap();
    }
}

/// A machine with the (privileged) stub domain and the toolstack's
/// connection; with `grant`, dom0's xenstore page granted to the stub as
/// ref 1, as IOCTL_XENBUS_BACKEND_SETUP does. Returns dom0's record too.
fn stub_machine(grant: bool) -> (Connector, Conn, DomainRecord) {
    let connector = Connector::new_local().unwrap();
    let Connector::Local(hv) = &connector else {
        unreachable!()
    };
    hv.lock()
        .unwrap()
        .create_domain_with_id(STUB, true, 0)
        .unwrap();
    let toolstack = connector.connect(0).unwrap();
    let Response::Domain(dom0) = call(&toolstack, Request::DomainRecord { domid: 0 }) else {
        panic!("no dom0 record")
    };
    if grant {
        toolstack
            .call_ok(&Request::Grant {
                gref: 1,
                mfn: dom0.store_mfn,
                to: STUB,
            })
            .unwrap();
    }
    (connector, toolstack, dom0)
}

/// The start-up errors a misconfigured stub reports.
fn start_error(cmdline: &str, grant: bool) -> StartError {
    let (connector, _toolstack, _dom0) = stub_machine(grant);
    let host = TestHost::new();
    Server::new(
        cmdline,
        MockEventChannel::open(&connector, STUB).unwrap(),
        MockPageMapper::open(&connector, STUB).unwrap(),
        MockDomainInfo::open(&connector, STUB).unwrap(),
        host,
    )
    .unwrap_err()
}

#[test]
fn test_misconfigured_stub_refuses_to_start() {
    assert!(matches!(
        start_error("--internal-db", true),
        StartError::Cmdline(xenstored_stubdom::CmdlineError::NoEvent)
    ));
    let e = start_error("--event 1 --bogus", true);
    assert!(e.to_string().contains("--bogus"), "{e}");
    assert!(matches!(
        start_error("--event 1", false),
        StartError::MapDom0(_)
    ));
    // Port 2000 of dom0 is not left unbound for the stub.
    assert!(matches!(
        start_error("--event 2000", true),
        StartError::BindDom0 { port: 2000, .. }
    ));
}

#[test]
fn test_idle_server_sleeps_instead_of_spinning() {
    let (world, mut dom0) = World::start();
    let mut guest = world.create_guest(&mut dom0);
    let home = format!("/local/domain/{}", domid(&guest));
    guest.write(0, &format!("{home}/k"), b"v").unwrap();
    dom0.write(0, "/k", b"v").unwrap();
    // Nothing to do: the loop waits (up to IDLE_WAIT_MS per turn) rather
    // than turning. A bound that only a spinning loop exceeds: a correct
    // one turns at most a few times in this interval, however slow the
    // machine (each turn is a wait that ends on an event or after 1 s).
    let before = world.host.clock_reads.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    let turns = (world.host.clock_reads.load(Ordering::SeqCst) - before) / 2;
    assert!(turns <= 20, "{turns} turns while idle");
}

#[test]
fn test_throttled_guest_resumes_as_time_passes() {
    // Two writes at once, then 50 per second, while a transaction is
    // open (C's rule): the guest's writes are delayed, never refused.
    let (world, mut dom0) = World::start_with("--rate-limit writes=50 --rate-limit burst=2");
    let mut guest = world.create_guest(&mut dom0);
    let home = format!("/local/domain/{}", domid(&guest));
    let tx = dom0.transaction_start().unwrap();
    for i in 0..10 {
        guest.write(0, &format!("{home}/n{i}"), b"v").unwrap();
    }
    dom0.transaction_end(tx, false).unwrap();
    assert_eq!(guest.read(0, &format!("{home}/n9")).unwrap(), b"v");
}
