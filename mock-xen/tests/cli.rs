//! The command lines of `mock-xen` and `mock-xen-guest`: usage, wrong
//! arguments, and a guest's whole life against a scripted xenstore daemon
//! (this test), which checks every request `mock-xen-guest` makes: the
//! toolstack's MKDIR, SET_PERMS and INTRODUCE over the socket, then the
//! guest's WRITEs, WATCH and READs over its ring, until `poweroff`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use evtchn::{EventChannel, Port};
use gnttab::{PageMapper, GNTTAB_RESERVED_XENSTORE};
use mock_xen::{Connector, MockEventChannel, MockPageMapper, ServerThread, Toolstack};
use xenring::codec::{build_args, encode, split_args, Decoder};
use xenring::{Message, MsgType, ServerEnd, ServerFeatures};

/// Generous bound for anything we wait on: a condition, never a sleep.
const LIMIT: Duration = Duration::from_secs(30);

const MOCK_XEN: &str = env!("CARGO_BIN_EXE_mock-xen");
const GUEST: &str = env!("CARGO_BIN_EXE_mock-xen-guest");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn test_mock_xen_usage_and_wrong_arguments() {
    for help in ["--help", "-h"] {
        let o = run(MOCK_XEN, &[help]);
        assert!(o.status.success(), "{help}: {o:?}");
        assert!(
            text(&o.stdout).starts_with("usage: mock-xen --socket PATH"),
            "{o:?}"
        );
    }
    for wrong in [
        &[][..],
        &["--socket"][..],
        &["--sock", "/tmp/x"][..],
        &["--help", "extra"][..],
        &["-x"][..],
    ] {
        let o = run(MOCK_XEN, wrong);
        assert_eq!(o.status.code(), Some(2), "{wrong:?}: {o:?}");
        assert!(text(&o.stderr).starts_with("usage: mock-xen"), "{o:?}");
    }
}

#[test]
fn test_mock_xen_guest_usage_and_wrong_arguments() {
    for help in ["--help", "-h"] {
        let o = run(GUEST, &[help]);
        assert!(o.status.success(), "{help}: {o:?}");
        assert!(
            text(&o.stdout).starts_with("usage: mock-xen-guest"),
            "{o:?}"
        );
        assert!(o.stderr.is_empty(), "{o:?}");
    }
    for (args, says) in [
        (&["--bogus"][..], "unknown argument \"--bogus\""),
        (&["--hv"][..], "--hv needs a value"),
        (&["--xenstored", "x"][..], "--hv is required"),
        (&["--hv", "x"][..], "--xenstored is required"),
        (
            &["--hv", "x", "--xenstored", "y", "--count", "many"][..],
            "--count needs a number",
        ),
    ] {
        let o = run(GUEST, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        let err = text(&o.stderr);
        assert!(err.starts_with(&format!("mock-xen-guest: {says}")), "{err}");
        assert!(err.contains("usage: mock-xen-guest"), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nothing-here.sock");
    let nowhere = nowhere.to_str().unwrap();
    let o = run(GUEST, &["--hv", nowhere, "--xenstored", nowhere]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        text(&o.stderr).starts_with(&format!(
            "mock-xen-guest: cannot reach mock-xen at {nowhere}"
        )),
        "{o:?}"
    );
}

/// What the scripted daemon saw, in order.
#[derive(Debug, Default)]
struct Seen {
    /// `TYPE path` of every request, socket and rings.
    requests: Vec<String>,
    /// The guests' writes, by domain and relative path.
    written: BTreeMap<(u16, String), Vec<u8>>,
}

fn reply(out: &mut Vec<u8>, ty: MsgType, m: &Message, payload: &[u8]) {
    encode(out, ty, m.header.req_id, 0, payload).unwrap();
}

fn args_of(m: &Message) -> Vec<String> {
    split_args(&m.payload).map(text).collect()
}

/// Serves one guest's ring as dom0 until `stop`: WRITE and WATCH are
/// answered OK (with the watch's first event), READ of `control/shutdown`
/// answers `""` the first time, then fires the watch again with the value
/// `poweroff` in place.
fn serve_ring(
    connector: Connector,
    domid: u16,
    store_port: u32,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let mapper = MockPageMapper::open(&connector, 0).unwrap();
    let page = mapper.map_grant(domid, GNTTAB_RESERVED_XENSTORE).unwrap();
    let mut evtchn = MockEventChannel::open(&connector, 0).unwrap();
    let port = evtchn
        .bind_interdomain(domid, Port::new(store_port))
        .unwrap();
    std::thread::spawn(move || {
        let _mapper = mapper;
        let end = ServerEnd::new(page.ring());
        end.advertise(ServerFeatures::RECONNECTION | ServerFeatures::ERROR);
        let mut dec = Decoder::new();
        let mut buf = [0u8; 1024];
        let mut out: Vec<u8> = Vec::new();
        let mut shutdown = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let mut fired = Vec::new();
            evtchn
                .wait(Some(Duration::from_millis(50)), &mut fired)
                .unwrap();
            evtchn.unmask(&fired).unwrap();
            loop {
                let n = end.read(&mut buf).unwrap();
                let mut msgs = Vec::new();
                dec.decode_all(&buf[..n], &mut msgs).unwrap();
                for m in msgs {
                    let ty = m.msg_type().unwrap();
                    let args = args_of(&m);
                    let mut seen = seen.lock().unwrap();
                    seen.requests
                        .push(format!("{} {} {}", domid, ty.name(), args[0]));
                    match ty {
                        MsgType::Write => {
                            let path = &args[0];
                            let value = m.payload[path.len() + 1..].to_vec();
                            seen.written.insert((domid, path.clone()), value);
                            reply(&mut out, ty, &m, b"OK\0");
                        }
                        MsgType::Watch => {
                            reply(&mut out, ty, &m, b"OK\0");
                            let ev = build_args(&[args[0].as_bytes(), args[1].as_bytes()]);
                            encode(&mut out, MsgType::WatchEvent, 0, 0, &ev).unwrap();
                        }
                        MsgType::Read if args[0] == "control/shutdown" => {
                            reply(&mut out, ty, &m, &shutdown);
                            if shutdown.is_empty() {
                                shutdown = b"poweroff".to_vec();
                                let ev = build_args(&[b"control/shutdown", b"shutdown"]);
                                encode(&mut out, MsgType::WatchEvent, 0, 0, &ev).unwrap();
                            }
                        }
                        _ => reply(&mut out, MsgType::Error, &m, b"ENOSYS\0"),
                    }
                }
                let w = end.write(&out).unwrap();
                out.drain(..w);
                if n > 0 || w > 0 {
                    evtchn.notify(port).unwrap();
                }
                if n == 0 && (out.is_empty() || w == 0) {
                    break;
                }
            }
        }
    })
}

/// The toolstack side of the scripted daemon: one socket connection.
fn serve_socket(
    mut sock: UnixStream,
    connector: Connector,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let mut rings = Vec::new();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!("reading mock-xen-guest's requests: {e}"),
        };
        if n == 0 {
            return rings;
        }
        let mut msgs = Vec::new();
        dec.decode_all(&buf[..n], &mut msgs).unwrap();
        for m in msgs {
            let ty = m.msg_type().unwrap();
            let args = args_of(&m);
            seen.lock()
                .unwrap()
                .requests
                .push(format!("0 {} {}", ty.name(), args.join(" ")));
            if ty == MsgType::Introduce {
                let domid = args[0].parse().unwrap();
                let port = args[2].parse().unwrap();
                rings.push(serve_ring(
                    connector.clone(),
                    domid,
                    port,
                    Arc::clone(&seen),
                    Arc::clone(&stop),
                ));
            }
            let mut out = Vec::new();
            reply(&mut out, ty, &m, b"OK\0");
            sock.write_all(&out).unwrap();
        }
    }
}

#[test]
fn test_mock_xen_guest_lives_until_poweroff_then_destroys_its_domain() {
    let dir = tempfile::tempdir().unwrap();
    let hv = ServerThread::start(dir.path().join("hv.sock")).unwrap();
    let connector = Connector::remote(hv.path());
    let xs_path = dir.path().join("xs.sock");
    let listener = UnixListener::bind(&xs_path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut guest = Kill(
        Command::new(GUEST)
            .arg("--hv")
            .arg(hv.path())
            .arg("--xenstored")
            .arg(&xs_path)
            .args(["--count", "2", "--name", "vm"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (sock, _) = listener.accept().unwrap();
    let server = {
        let (connector, seen, stop) = (connector.clone(), Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || serve_socket(sock, connector, seen, stop))
    };
    let stdout = guest.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    while printed.len() < 4 {
        match lines.recv_timeout(LIMIT) {
            Ok(line) => printed.push(line),
            Err(e) => panic!("mock-xen-guest said only {printed:?} ({e})"),
        }
    }
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = guest.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "mock-xen-guest did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    guest
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    stop.store(true, Ordering::SeqCst);
    for ring in server.join().unwrap() {
        ring.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let alive: Vec<u16> = ts
        .list()
        .unwrap()
        .iter()
        .filter(|d| !d.dying)
        .map(|d| d.domid)
        .collect();
    for d in [1u16, 2] {
        let i = d - 1;
        // The toolstack's part, over the socket, in order.
        let home = format!("/local/domain/{d}");
        let mine: Vec<&String> = seen
            .requests
            .iter()
            .filter(|r| r.starts_with("0 ") && r.contains(&home))
            .collect();
        assert_eq!(
            mine,
            [
                &format!("0 XS_MKDIR {home}"),
                &format!("0 XS_SET_PERMS {home} n{d}")
            ],
            "{:?}",
            seen.requests
        );
        assert!(
            seen.requests
                .iter()
                .any(|r| r.starts_with(&format!("0 XS_INTRODUCE {d} "))),
            "{:?}",
            seen.requests
        );
        // The guest's part, over its ring: the writes, the watch, and a
        // READ per event until it read `poweroff`.
        let ring: Vec<&str> = seen
            .requests
            .iter()
            .filter_map(|r| r.strip_prefix(&format!("{d} ")))
            .collect();
        assert_eq!(
            ring,
            [
                "XS_WRITE name",
                "XS_WRITE data/greeting",
                "XS_WRITE control/shutdown",
                "XS_WATCH control/shutdown",
                "XS_READ control/shutdown",
                "XS_READ control/shutdown",
            ],
            "domain {d}"
        );
        let written = |p: &str| seen.written.get(&(d, p.to_string())).map(|v| text(v));
        assert_eq!(written("name"), Some(format!("vm-{}", i + 1)));
        assert_eq!(
            written("data/greeting"),
            Some(format!("hello from domain {d}"))
        );
        assert_eq!(written("control/shutdown"), Some(String::new()));
        assert!(
            printed.contains(&format!("domain {d} powered off and destroyed")),
            "{printed:?}"
        );
        assert!(
            !alive.contains(&d),
            "domain {d} was not destroyed: {alive:?}"
        );
    }
}

/// A child killed when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn test_mock_xen_peer_answers_each_eventfd_ping_then_exits() {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::os::fd::{AsFd, AsRawFd};
    // Inherited by the peer (no close-on-exec); ours does not block.
    let ping = EventFd::from_value_and_flags(0, EfdFlags::empty()).unwrap();
    let pong = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap();
    let rounds = 3u64;
    let mut peer = Kill(
        Command::new(env!("CARGO_BIN_EXE_mock-xen-peer"))
            .args([
                "eventfd-pong",
                &ping.as_raw_fd().to_string(),
                &pong.as_raw_fd().to_string(),
                &rounds.to_string(),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    for round in 0..rounds {
        ping.write(1).unwrap();
        let mut fds = [nix::poll::PollFd::new(
            pong.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready =
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(LIMIT).unwrap()).unwrap();
        assert_eq!(ready, 1, "no pong for ping {round} within {LIMIT:?}");
        assert_eq!(pong.read().unwrap(), 1, "one pong per ping");
    }
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = peer.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the peer did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    peer.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
}

/// The parent of process `pid`, from `/proc/PID/stat`; `None` once gone.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

#[test]
fn test_a_forked_server_serves_is_found_again_and_stops_with_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hv.sock");
    let mut peer = Kill(
        Command::new(env!("CARGO_BIN_EXE_mock-xen-peer"))
            .arg("fork-server")
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let owner = peer.0.id();
    let stdout = peer.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("the peer did not say {what}: {e}"))
    };
    let forked = next("forked");
    let words: Vec<&str> = forked.split_whitespace().collect();
    let ["forked", pid, "child", "true"] = words.as_slice() else {
        panic!("{forked}");
    };
    let pid: u32 = pid.parse().unwrap();
    assert_eq!(
        parent_pid(pid),
        Some(owner),
        "the server is the peer's child"
    );
    assert_eq!(
        next("attached"),
        format!("attached {pid} child true"),
        "found again by its socket, still the peer's child"
    );

    // Anyone may attach; for us it is no child, and dropping it stops
    // nothing.
    let ours = mock_xen::ServerProcess::attach(&path).unwrap();
    assert_eq!((ours.pid(), ours.is_child()), (pid, false));
    drop(ours);
    let connector = Connector::remote(&path);
    let ts = Toolstack::open(&connector).expect("it still serves");
    ts.create_domain().unwrap();
    drop(ts);

    // The owner lets go: the server is stopped, reaped, its socket gone.
    drop(peer.0.stdin.take());
    assert_eq!(next("stopped"), "stopped");
    assert_eq!(parent_pid(pid), None, "the server is gone");
    assert!(!path.exists(), "its socket is removed");
}

#[test]
fn test_a_server_that_cannot_start_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("hv.sock");
    let o = Command::new(env!("CARGO_BIN_EXE_mock-xen-peer"))
        .arg("fork-server")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = text(&o.stderr);
    assert!(
        err.contains("No such file or directory"),
        "the server's own error comes back: {err}"
    );
}
