//! Benchmark harness for the daemon (prints figures; not a timed test).
//!
//! `cargo bench -p xenstored-lite --bench daemon` starts the real daemon
//! binary and measures, over its Unix socket with one client: READ and
//! WRITE latency (p50/p99) and ops/s for 1-byte and 2000-byte values,
//! DIRECTORY, an empty transaction, a conflicting transaction — next to a
//! raw Unix-socket ping-pong with another process; READ latency with 0, 512
//! and 4096 idle connections open; and the toolstack storm (300 clients
//! each starting and stopping 2 guests in transactions under shared
//! parents). Both processes are pinned to one CPU for the latency figures,
//! so that scheduler placement (a cross-CPU wakeup costs 20-40 us in this
//! VM) does not decide them.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xenring::{Client, Error as XsError, Perm, PermKind, XsErrno};

mod common;
use common::{quick, raise_fd_limit, set_cpus};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start_daemon(dir: &Path) -> (Proc, PathBuf) {
    let rundir = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_xenstored-lite"))
        .args(["-N", "--platform", "mock"])
        .env("XENSTORED_RUNDIR", &rundir)
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let socket = rundir.join("socket");
    wait_for(&socket);
    (Proc(child), socket)
}

/// How long a reply may take before the bench fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

/// A connection whose reads and writes give up after [`LIMIT`].
fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("read timeout");
    s.set_write_timeout(Some(LIMIT)).expect("write timeout");
    s
}

/// A client on the daemon's socket, with [`connect`]'s bounded waits.
fn client(socket: &Path) -> Client<UnixStream> {
    Client::new(connect(socket))
}

struct Stats {
    p50: Duration,
    p99: Duration,
    ops: f64,
}

fn measure(n: usize, mut op: impl FnMut(usize)) -> Stats {
    for i in 0..n.min(200) {
        op(i);
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i);
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    Stats {
        p50: lat[lat.len() / 2],
        p99: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
        ops: n as f64 / total.as_secs_f64(),
    }
}

fn print(label: &str, s: &Stats, baseline: Option<(&Stats, &str)>) {
    let ratio = baseline.map_or(String::new(), |(b, what)| {
        format!(
            "   {:.2}x {what}",
            s.p50.as_secs_f64() / b.p50.as_secs_f64()
        )
    });
    println!(
        "  {label:<34} p50 {:>7.2} us  p99 {:>7.2} us  {:>9.0} ops/s{ratio}",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.ops
    );
}

/// The other end of the raw ping-pong: echoes 16+N byte messages.
fn pong(path: &str) {
    let listener = UnixListener::bind(path).expect("bind");
    let (mut s, _) = listener.accept().expect("accept");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn raw_ping_pong(dir: &Path, n: usize) -> Stats {
    let path = dir.join("pong.sock");
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--pong", path.to_str().expect("utf-8 path")])
        .spawn()
        .expect("pong");
    let _p = Proc(child);
    wait_for(&path);
    let mut s = connect(&path);
    // A READ-sized request and reply.
    let msg = [7u8; 24];
    let mut back = [0u8; 24];
    measure(n, |_| {
        s.write_all(&msg).expect("write");
        s.read_exact(&mut back).expect("read");
    })
}

fn socket_latencies(dir: &Path, n: usize) {
    let (_d, socket) = start_daemon(dir);
    let raw = raw_ping_pong(dir, n);
    let mut c = client(&socket);
    let small = b"x".to_vec();
    let big = vec![b'y'; 2000];
    c.write(0, "/bench/small", &small).expect("write");
    c.write(0, "/bench/big", &big).expect("write");
    for i in 0..50 {
        c.write(0, &format!("/bench/dir/entry{i}"), b"")
            .expect("write");
    }
    println!("over the Unix socket, one client, both processes on CPU 0 ({n} requests each):");
    print("raw Unix-socket ping-pong (24 B)", &raw, None);
    print(
        "READ 1 B",
        &measure(n, |_| drop(c.read(0, "/bench/small").expect("read"))),
        Some((&raw, "raw")),
    );
    print(
        "READ 2000 B",
        &measure(n, |_| drop(c.read(0, "/bench/big").expect("read"))),
        Some((&raw, "raw")),
    );
    print(
        "WRITE 1 B",
        &measure(n, |_| c.write(0, "/bench/small", &small).expect("write")),
        Some((&raw, "raw")),
    );
    print(
        "WRITE 2000 B",
        &measure(n, |_| c.write(0, "/bench/big", &big).expect("write")),
        Some((&raw, "raw")),
    );
    print(
        "DIRECTORY (50 entries)",
        &measure(n, |_| drop(c.directory(0, "/bench/dir").expect("dir"))),
        Some((&raw, "raw")),
    );
    print(
        "empty transaction (start + commit)",
        &measure(n, |_| {
            let tx = c.transaction_start().expect("start");
            c.transaction_end(tx, true).expect("commit");
        }),
        Some((&raw, "raw")),
    );
    let mut other = client(&socket);
    let mut conflicts = 0usize;
    print(
        "conflicting transaction (EAGAIN)",
        &measure(n, |i| {
            let tx = c.transaction_start().expect("start");
            c.read(tx, "/bench/small").expect("read");
            other
                .write(0, "/bench/small", i.to_string().as_bytes())
                .expect("write");
            if let Err(XsError::Xs(XsErrno::EAGAIN)) = c.transaction_end(tx, true) {
                conflicts += 1;
            }
        }),
        Some((&raw, "raw")),
    );
    assert_eq!(conflicts, n + n.min(200), "every one conflicted");
}

fn idle_connections(dir: &Path, n: usize) {
    let (_d, socket) = start_daemon(dir);
    let mut c = client(&socket);
    c.write(0, "/bench/small", b"x").expect("write");
    println!("READ latency with idle connections open (CPU 0):");
    let mut idle = Vec::new();
    let mut base = None;
    for target in [0usize, 512, 4096] {
        while idle.len() < target {
            match UnixStream::connect(&socket) {
                Ok(s) => idle.push(s),
                Err(e) => {
                    println!("  cannot open more than {} connections: {e}", idle.len());
                    break;
                }
            }
        }
        // Make sure the daemon accepted them all before measuring.
        c.read(0, "/bench/small").expect("read");
        let s = measure(n, |_| drop(c.read(0, "/bench/small").expect("read")));
        let label = format!("READ, {} idle connections", idle.len());
        print(&label, &s, base.as_ref().map(|b| (b, "0 idle")));
        if base.is_none() {
            base = Some(s);
        }
    }
}

/// The toolstack storm: each client starts then stops `guests` guests, one
/// transaction each, under the shared backend parents.
fn storm(dir: &Path, clients: usize, guests: usize) {
    let (_d, socket) = start_daemon(dir);
    let mut setup = client(&socket);
    for p in [
        "/local/domain/0/backend/vbd/51712",
        "/local/domain/0/backend/vif/0",
    ] {
        setup.mkdir(0, p).expect("mkdir");
    }
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|k| {
            let socket = socket.clone();
            std::thread::spawn(move || -> (u64, u64) {
                let mut c = client(&socket);
                let (mut commits, mut retries) = (0, 0);
                for g in 0..guests {
                    let d = 1 + k * guests + g;
                    let fe = format!("/local/domain/{d}");
                    let vbd = format!("/local/domain/0/backend/vbd/51712/{d}");
                    let vif = format!("/local/domain/0/backend/vif/0/{d}");
                    let start_guest = |c: &mut Client<UnixStream>,
                                       tx: u32|
                     -> Result<(), XsError> {
                        c.write(tx, &format!("{fe}/name"), format!("guest{d}").as_bytes())?;
                        c.write(
                            tx,
                            &format!("{fe}/device/vbd/51712/backend"),
                            vbd.as_bytes(),
                        )?;
                        c.write(tx, &format!("{fe}/device/vbd/51712/state"), b"1")?;
                        c.write(tx, &format!("{fe}/device/vif/0/backend"), vif.as_bytes())?;
                        c.write(tx, &format!("{fe}/device/vif/0/state"), b"1")?;
                        for be in [&vbd, &vif] {
                            c.write(tx, &format!("{be}/frontend"), fe.as_bytes())?;
                            c.write(tx, &format!("{be}/frontend-id"), d.to_string().as_bytes())?;
                            c.write(tx, &format!("{be}/state"), b"1")?;
                            let did = u16::try_from(d).unwrap_or(u16::MAX);
                            c.set_perms(
                                tx,
                                be,
                                &[Perm::new(PermKind::None, 0), Perm::new(PermKind::Read, did)],
                            )?;
                        }
                        Ok(())
                    };
                    let stop_guest = |c: &mut Client<UnixStream>, tx: u32| -> Result<(), XsError> {
                        c.rm(tx, &fe)?;
                        c.rm(tx, &vbd)?;
                        c.rm(tx, &vif)
                    };
                    type Step<'a> = &'a dyn Fn(&mut Client<UnixStream>, u32) -> Result<(), XsError>;
                    let steps: [Step<'_>; 2] = [&start_guest, &stop_guest];
                    for step in steps {
                        loop {
                            let tx = c.transaction_start().expect("start");
                            step(&mut c, tx).expect("transaction body");
                            match c.transaction_end(tx, true) {
                                Ok(()) => break,
                                Err(XsError::Xs(XsErrno::EAGAIN)) => retries += 1,
                                Err(e) => panic!("commit: {e}"),
                            }
                        }
                        commits += 1;
                    }
                }
                (commits, retries)
            })
        })
        .collect();
    let (mut commits, mut retries) = (0, 0);
    for h in handles {
        let (c, r) = h.join().expect("client thread");
        commits += c;
        retries += r;
    }
    let elapsed = start.elapsed();
    println!(
        "toolstack storm over the socket: {clients} clients x {guests} guests: {commits} commits, {retries} EAGAIN retries, {:.2} s (unpinned)",
        elapsed.as_secs_f64()
    );
    // Each transaction touches its own guest's nodes; under the shared
    // parents a commit re-run on the moved-on store gets the same replies
    // (DESIGN.md, the engine), so none may be refused: an invariant, not
    // a timing.
    assert_eq!(
        commits,
        (2 * clients * guests) as u64,
        "one commit per step"
    );
    assert_eq!(retries, 0, "EAGAIN in a storm of disjoint transactions");
}

/// The other end of the eventfd ping-pong: waits on inherited eventfd RX,
/// answers on TX, COUNT times.
fn eventfd_pong(rx: &str, tx: &str, count: &str) {
    let (Ok(rx), Ok(tx), Ok(count)) = (rx.parse::<i32>(), tx.parse::<i32>(), count.parse::<u64>())
    else {
        return;
    };
    // SAFETY: both descriptors were created by our parent for this, left
    // open across exec, and stay open while we run.
    let (rx, tx) = unsafe {
        (
            std::os::fd::BorrowedFd::borrow_raw(rx),
            std::os::fd::BorrowedFd::borrow_raw(tx),
        )
    };
    let mut buf = [0u8; 8];
    for _ in 0..count {
        if nix::unistd::read(rx, &mut buf).is_err()
            || nix::unistd::write(tx, &1u64.to_ne_bytes()).is_err()
        {
            return;
        }
    }
}

fn eventfd_rtt(n: usize) -> Stats {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::os::fd::AsRawFd;
    let ping = EventFd::from_value_and_flags(0, EfdFlags::empty()).expect("eventfd");
    let pong = EventFd::from_value_and_flags(0, EfdFlags::empty()).expect("eventfd");
    let warm = n.min(200);
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--eventfd-pong".to_string(),
            ping.as_raw_fd().to_string(),
            pong.as_raw_fd().to_string(),
            (n + warm).to_string(),
        ])
        .spawn()
        .expect("eventfd pong");
    let _p = Proc(child);
    measure(n, |_| {
        ping.write(1).expect("ping");
        pong.read().expect("pong");
    })
}

/// A guest (this process) reading over its ring from the daemon (another
/// process), with event-channel notifications both ways through mock-xen.
fn ring_latency(dir: &Path, n: usize) {
    let (_d, socket) = start_daemon(dir);
    let hv = dir.join("run").join("mock-xen.sock");
    let connector = mock_xen::Connector::remote(&hv);
    let ts = mock_xen::Toolstack::open(&connector).expect("toolstack");
    let rec = ts.create_domain().expect("domain");
    let d = rec.info.domid;
    let mut dom0 = client(&socket);
    let home = format!("/local/domain/{d}");
    dom0.write(0, &format!("{home}/k"), b"v").expect("write");
    dom0.set_perms(0, &home, &[Perm::new(PermKind::None, d)])
        .expect("perms");
    dom0.set_perms(0, &format!("{home}/k"), &[Perm::new(PermKind::None, d)])
        .expect("perms");
    ts.introduce(&mut dom0, &rec).expect("introduce");
    let guest = mock_xen::Guest::attach(&connector, &rec).expect("guest");
    let mut c = Client::new(guest);
    let raw = eventfd_rtt(n);
    println!("over a mock-xen ring from a guest (this process) to the daemon, both on CPU 0:");
    print("eventfd ping-pong (2 processes)", &raw, None);
    print(
        "READ over the ring",
        &measure(n, |_| drop(c.read(0, "k").expect("read"))),
        Some((&raw, "eventfd")),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--pong") {
        pong(&args[i + 1]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--eventfd-pong") {
        eventfd_pong(&args[i + 1], &args[i + 2], &args[i + 3]);
        return;
    }
    raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("xsl-daemon-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let n = if quick() { 300 } else { 20_000 };
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    set_cpus(&[0]);
    socket_latencies(&dir.join("lat"), n);
    idle_connections(&dir.join("idle"), n);
    ring_latency(&dir.join("ring"), n);
    set_cpus(&(0..cpus).collect::<Vec<_>>());
    let (clients, guests) = if quick() { (10, 2) } else { (300, 2) };
    storm(&dir.join("storm"), clients, guests);
    let _ = std::fs::remove_dir_all(&dir);
}
