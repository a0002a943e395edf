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
//! VM) does not decide them. Each latency figure is measured in rounds
//! that alternate with its reference's (see [`alternate`]).
//! `DAEMON_BENCH_ONLY=socket|idle|ring|storm` runs one part alone;
//! `DAEMON_BENCH_N` sets the requests per latency figure (default 20,000).

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
    /// With [`alternate`]: the median, lowest and highest over the rounds
    /// of this figure's p50 divided by the reference's p50 of the same
    /// round.
    rounds: Option<(f64, f64, f64)>,
    /// With [`alternate`]: the CPU time the serving process spent per
    /// call (its `/proc/PID/schedstat` run time, which counts
    /// nanoseconds), if it was named.
    server_cpu: Option<Duration>,
    /// With [`alternate`]: the CPU time this (the client's) process spent
    /// per call.
    client_cpu: Option<Duration>,
}

/// How long `pid` has run on a CPU, in all its threads, from
/// `/proc/PID/schedstat` (nanoseconds; `None` if it cannot be read).
fn cpu_time(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// `sum` plus the CPU time from `before` to `after`; `None` once any
/// reading failed.
fn add_cpu(
    sum: Option<Duration>,
    before: Option<Duration>,
    after: Option<Duration>,
) -> Option<Duration> {
    Some(sum? + after?.saturating_sub(before?))
}

/// Latencies of `n` calls of `op` (after a warm-up of up to 200), in call
/// order, and the wall time they took.
fn sample(n: usize, op: &mut dyn FnMut(usize)) -> (Vec<Duration>, Duration) {
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
    (lat, start.elapsed())
}

fn percentile(sorted: &[Duration], per_cent: usize) -> Duration {
    sorted[(sorted.len() * per_cent / 100).min(sorted.len() - 1)]
}

fn stats(mut lat: Vec<Duration>, total: Duration) -> Stats {
    lat.sort();
    Stats {
        p50: percentile(&lat, 50),
        p99: percentile(&lat, 99),
        ops: lat.len() as f64 / total.as_secs_f64(),
        rounds: None,
        server_cpu: None,
        client_cpu: None,
    }
}

fn measure(n: usize, mut op: impl FnMut(usize)) -> Stats {
    let (lat, total) = sample(n, &mut op);
    stats(lat, total)
}

/// Measures every one of `ops` in `rounds` alternating rounds of `n /
/// rounds` calls each (the first of `ops` is the reference), so that the
/// drift of this machine's speed over a run (it reached 2x between one
/// phase and the next) falls on all of them alike. Each figure's p50 and
/// p99 are over all its calls; its ratio is the median over the rounds of
/// its p50 over the reference's p50 in the same round. `servers[k]`, if
/// given, is the process that answers op `k`: its CPU time per call is
/// reported too.
fn alternate(
    n: usize,
    rounds: usize,
    ops: &mut [&mut dyn FnMut(usize)],
    servers: &[Option<u32>],
) -> Vec<Stats> {
    let per_round = (n / rounds).max(1);
    let mut lat: Vec<Vec<Duration>> = ops.iter().map(|_| Vec::new()).collect();
    let mut total = vec![Duration::ZERO; ops.len()];
    let mut cpu: Vec<Option<Duration>> =
        servers.iter().map(|s| s.map(|_| Duration::ZERO)).collect();
    let mut own = vec![Some(Duration::ZERO); ops.len()];
    let mut calls = vec![0u32; ops.len()];
    let mut ratios: Vec<Vec<f64>> = ops.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        let mut p50s = Vec::with_capacity(ops.len());
        for (k, op) in ops.iter_mut().enumerate() {
            let server = servers.get(k).copied().flatten();
            let before = server.and_then(cpu_time);
            let own_before = cpu_time(std::process::id());
            let (mut l, t) = sample(per_round, *op);
            let own_after = cpu_time(std::process::id());
            let after = server.and_then(cpu_time);
            own[k] = add_cpu(own[k], own_before, own_after);
            cpu[k] = add_cpu(cpu[k], before, after);
            calls[k] += u32::try_from(per_round + per_round.min(200)).unwrap_or(u32::MAX);
            total[k] += t;
            lat[k].extend_from_slice(&l);
            l.sort();
            p50s.push(percentile(&l, 50).as_secs_f64());
        }
        for (k, p50) in p50s.iter().enumerate() {
            ratios[k].push(p50 / p50s[0]);
        }
    }
    lat.into_iter()
        .zip(total)
        .zip(ratios)
        .zip(cpu.into_iter().zip(own).zip(calls))
        .map(|(((l, t), mut r), ((cpu, own), calls))| {
            r.sort_by(f64::total_cmp);
            let mut s = stats(l, t);
            s.rounds = Some((r[r.len() / 2], r[0], r[r.len() - 1]));
            s.server_cpu = cpu.map(|c| c / calls.max(1));
            s.client_cpu = own.map(|c| c / calls.max(1));
            s
        })
        .collect()
}

fn print(label: &str, s: &Stats, baseline: Option<(&Stats, &str)>) {
    let ratio = match (baseline, s.rounds) {
        (Some((_, what)), Some((median, low, high))) => {
            format!("   {median:.2}x {what} (rounds {low:.2}-{high:.2})")
        }
        (Some((b, what)), None) => format!(
            "   {:.2}x {what}",
            s.p50.as_secs_f64() / b.p50.as_secs_f64()
        ),
        (None, _) => String::new(),
    };
    let us = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1e6))
    };
    let cpu = if s.server_cpu.is_some() || s.client_cpu.is_some() {
        format!(
            "  CPU us/req server {:>5} client {:>5}",
            us(s.server_cpu),
            us(s.client_cpu)
        )
    } else {
        String::new()
    };
    println!(
        "  {label:<34} p50 {:>7.2} us  p99 {:>7.2} us  {:>9.0} ops/s{cpu}{ratio}",
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

/// A raw ping-pong peer in another process: the process (killed on
/// drop) and a connection to it.
fn raw_ping_pong(dir: &Path) -> (Proc, UnixStream) {
    let path = dir.join("pong.sock");
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--pong", path.to_str().expect("utf-8 path")])
        .spawn()
        .expect("pong");
    let p = Proc(child);
    wait_for(&path);
    (p, connect(&path))
}

/// How many alternating rounds the latency figures take.
fn rounds() -> usize {
    if quick() {
        2
    } else {
        10
    }
}

fn socket_latencies(dir: &Path, n: usize) {
    let (daemon, socket) = start_daemon(dir);
    let (pong, mut s) = raw_ping_pong(dir);
    let mut c = client(&socket);
    let small = b"x".to_vec();
    let big = vec![b'y'; 2000];
    c.write(0, "/bench/small", &small).expect("write");
    c.write(0, "/bench/big", &big).expect("write");
    for i in 0..50 {
        c.write(0, &format!("/bench/dir/entry{i}"), b"")
            .expect("write");
    }
    let rounds = rounds();
    println!(
        "over the Unix socket, one client, both processes on CPU 0 ({n} requests each, \
         in {rounds} alternating rounds):"
    );
    // A READ-sized request and reply.
    let msg = [7u8; 24];
    let mut back = [0u8; 24];
    let c = std::cell::RefCell::new(c);
    let figures = alternate(
        n,
        rounds,
        &mut [
            &mut |_| {
                s.write_all(&msg).expect("write");
                s.read_exact(&mut back).expect("read");
            },
            &mut |_| drop(c.borrow_mut().read(0, "/bench/small").expect("read")),
            &mut |_| drop(c.borrow_mut().read(0, "/bench/big").expect("read")),
            &mut |_| {
                c.borrow_mut()
                    .write(0, "/bench/small", &small)
                    .expect("write")
            },
            &mut |_| c.borrow_mut().write(0, "/bench/big", &big).expect("write"),
            &mut |_| drop(c.borrow_mut().directory(0, "/bench/dir").expect("dir")),
            &mut |_| {
                let mut c = c.borrow_mut();
                let tx = c.transaction_start().expect("start");
                c.transaction_end(tx, true).expect("commit");
            },
        ],
        &[
            Some(pong.0.id()),
            Some(daemon.0.id()),
            Some(daemon.0.id()),
            Some(daemon.0.id()),
            Some(daemon.0.id()),
            Some(daemon.0.id()),
            Some(daemon.0.id()),
        ],
    );
    let labels = [
        "raw Unix-socket ping-pong (24 B)",
        "READ 1 B",
        "READ 2000 B",
        "WRITE 1 B",
        "WRITE 2000 B",
        "DIRECTORY (50 entries)",
        "empty transaction (start + commit)",
    ];
    let raw = &figures[0];
    print(labels[0], raw, None);
    for (label, figure) in labels.iter().zip(&figures).skip(1) {
        print(label, figure, Some((raw, "raw")));
    }
    let mut c = c.into_inner();
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
        Some((raw, "raw")),
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
fn eventfd_pong(rx: &str, tx: &str, count: &str, epoll: bool) {
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
    if epoll {
        // As the daemon waits: in an epoll set, edge-triggered, without
        // reading the eventfd's count (a write is an edge each time).
        let Ok(waiter) = EdgeWaiter::new(rx) else {
            return;
        };
        for _ in 0..count {
            if waiter.wait().is_err() || nix::unistd::write(tx, &1u64.to_ne_bytes()).is_err() {
                return;
            }
        }
        return;
    }
    let mut buf = [0u8; 8];
    for _ in 0..count {
        if nix::unistd::read(rx, &mut buf).is_err()
            || nix::unistd::write(tx, &1u64.to_ne_bytes()).is_err()
        {
            return;
        }
    }
}

/// An epoll set holding one eventfd, edge-triggered: how the daemon and
/// mock-xen's guests wait for an event channel.
struct EdgeWaiter(nix::sys::epoll::Epoll);

impl EdgeWaiter {
    fn new(fd: impl std::os::fd::AsFd) -> nix::Result<Self> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        ep.add(
            fd,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
        )?;
        Ok(Self(ep))
    }

    /// Until the next write to the eventfd.
    fn wait(&self) -> nix::Result<()> {
        let mut events = [nix::sys::epoll::EpollEvent::empty()];
        loop {
            match self
                .0
                .wait(&mut events, nix::sys::epoll::EpollTimeout::NONE)
            {
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// An eventfd ping-pong peer in another process, answering `count`
/// pings: the process (killed on drop) and the ping and pong eventfds.
/// With `epoll`, the peer waits in an epoll set (see [`EdgeWaiter`]) and
/// the eventfds do not block, so that this side can wait so too.
fn eventfd_peer(
    count: usize,
    epoll: bool,
) -> (Proc, nix::sys::eventfd::EventFd, nix::sys::eventfd::EventFd) {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::os::fd::AsRawFd;
    let flags = if epoll {
        EfdFlags::EFD_NONBLOCK
    } else {
        EfdFlags::empty()
    };
    let ping = EventFd::from_value_and_flags(0, flags).expect("eventfd");
    let pong = EventFd::from_value_and_flags(0, flags).expect("eventfd");
    let child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--eventfd-pong".to_string(),
            ping.as_raw_fd().to_string(),
            pong.as_raw_fd().to_string(),
            count.to_string(),
            if epoll { "epoll" } else { "read" }.to_string(),
        ])
        .spawn()
        .expect("eventfd pong");
    (Proc(child), ping, pong)
}

/// A guest (this process) reading over its ring from the daemon (another
/// process), with event-channel notifications both ways through mock-xen.
fn ring_latency(dir: &Path, n: usize) {
    let (daemon, socket) = start_daemon(dir);
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
    let rounds = rounds();
    // Each round warms up with up to 200 before its share.
    let (peer, ping, pong) = eventfd_peer(n + rounds * 200, false);
    // The same through epoll on both sides: what waiting as the daemon and
    // the guest do costs over a plain read (the floor for this path).
    let (epeer, eping, epong) = eventfd_peer(n + rounds * 200, true);
    let ewaiter = EdgeWaiter::new(&epong).expect("epoll");
    println!(
        "over a mock-xen ring from a guest (this process) to the daemon, both on CPU 0 \
         ({rounds} alternating rounds):"
    );
    let figures = alternate(
        n,
        rounds,
        &mut [
            &mut |_| {
                ping.write(1).expect("ping");
                pong.read().expect("pong");
            },
            &mut |_| drop(c.read(0, "k").expect("read")),
            &mut |_| {
                eping.write(1).expect("ping");
                ewaiter.wait().expect("pong");
            },
        ],
        &[Some(peer.0.id()), Some(daemon.0.id()), Some(epeer.0.id())],
    );
    print("eventfd ping-pong (2 processes)", &figures[0], None);
    print(
        "READ over the ring",
        &figures[1],
        Some((&figures[0], "eventfd")),
    );
    print(
        "eventfd ping-pong, both in epoll",
        &figures[2],
        Some((&figures[0], "eventfd")),
    );
    println!(
        "  READ over the ring / eventfd ping-pong in epoll (p50s): {:.2}x",
        figures[1].p50.as_secs_f64() / figures[2].p50.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--pong") {
        pong(&args[i + 1]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--eventfd-pong") {
        eventfd_pong(
            &args[i + 1],
            &args[i + 2],
            &args[i + 3],
            args.get(i + 4).is_some_and(|m| m == "epoll"),
        );
        return;
    }
    raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("xsl-daemon-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // `DAEMON_BENCH_N` sets the requests per latency figure (more, to
    // profile one part).
    let n = std::env::var("DAEMON_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(if quick() { 300 } else { 20_000 });
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    // `DAEMON_BENCH_ONLY=socket|idle|ring|storm` runs one part (to
    // profile it); unset, all of them.
    let only = std::env::var("DAEMON_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    set_cpus(&[0]);
    if part("socket") {
        socket_latencies(&dir.join("lat"), n);
    }
    if part("idle") {
        idle_connections(&dir.join("idle"), n);
    }
    if part("ring") {
        ring_latency(&dir.join("ring"), n);
    }
    set_cpus(&(0..cpus).collect::<Vec<_>>());
    if part("storm") {
        let (clients, guests) = if quick() { (10, 2) } else { (300, 2) };
        storm(&dir.join("storm"), clients, guests);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
