//! Record and replay benchmark (prints figures; not a timed test).
//!
//! `cargo bench -p xenstored-lite --bench replay` runs the real daemon
//! binary (embedded mock-xen) and prints:
//!
//! 1. Throughput with `--replay-record` on and off, for the same workloads
//!    over the Unix socket: READ and WRITE ping-pong with one client, and a
//!    pipelined mix (READ, WRITE under a watched path, DIRECTORY) from four
//!    connections with a fifth receiving the watch events. Two daemons run
//!    side by side, one recording and one not, and every round measures
//!    both, in alternating order, so that the drift of this noisy VM falls
//!    on both alike; the figure is the median over the rounds. Every
//!    process is pinned to CPU 0, as in the daemon benchmark, so that
//!    scheduler placement does not decide the figures. Next to requests/s
//!    it prints the CPU time per request of the daemon's loop (its main
//!    thread, `/proc/PID/schedstat`), which other load on the machine
//!    disturbs less.
//! 2. Bytes recorded per request, for each workload (growth of the file
//!    over the requests sent) and overall (the file's size over the
//!    requests the daemon's exit line reports).
//! 3. A one-million-request recording of a realistic mix — a store of
//!    toolstack-like domains, synchronous dom0 tools (READ, WRITE firing
//!    watches, DIRECTORY, GET_PERMS, probes of missing nodes, MKDIR/RM, a
//!    few transactions), a dom0 watcher, and guests over mock-xen rings
//!    whose watches fire (a tenth of the requests; then they idle, reading
//!    their events) — then its replay with `--no-verify` (fast) and with
//!    verify, against the time the recording spans and against the CPU
//!    time the live daemon used. Every client sends as fast as it is
//!    answered, so the daemon is busy for most of the recording: the worst
//!    case for the ratio to the recorded time. The replayed request count
//!    must equal the recorded one (asserted).
//!
//! `REPLAY_BENCH_SCALE` multiplies every request count (default 1);
//! `REPLAY_BENCH_ROUNDS` sets the rounds of part 1 (default 7);
//! `REPLAY_BENCH_ONLY=throughput|million` runs one part;
//! `REPLAY_BENCH_KEEP=1` keeps the recordings (to profile a replay). Without
//! `--bench` (as `cargo test --all-targets` runs it) everything is small.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use xenring::codec::{build_args, build_path_value, encode, Decoder};
use xenring::{Client, Error as XsError, MsgType, Perm, PermKind, XsErrno};

mod common;
#[path = "common/population.rs"]
mod population;
use common::{quick, set_cpus};

/// The recording's file header (the daemon's totals count events only).
const HEADER: u64 = 16;
const BIN: &str = env!("CARGO_BIN_EXE_xenstored-lite");
const LIMIT: Duration = Duration::from_secs(120);

fn scale() -> f64 {
    std::env::var("REPLAY_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s: &f64| s > 0.0)
        .unwrap_or(1.0)
}

// A request count times a positive factor: saturates, never wraps.
#[allow(clippy::cast_possible_truncation)]
fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, |c| c.get())).collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What a daemon process says of its recording when it exits (summed over
/// the `recording: N events, B bytes, R requests ...` lines).
#[derive(Debug, Default, Clone, Copy)]
struct Recorded {
    events: u64,
    bytes: u64,
    requests: u64,
}

impl Recorded {
    fn parse(log: &str) -> Self {
        let mut out = Self::default();
        for line in log.lines() {
            let Some(rest) = line.split("recording: ").nth(1) else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            if let (Some(e), Some(b), Some(r)) = (num(0), num(2), num(4)) {
                out.events += e;
                out.bytes += b;
                out.requests += r;
            }
        }
        out
    }
}

/// A running `xenstored-lite -N --platform mock`, recording or not.
struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    rundir: PathBuf,
    log: PathBuf,
    rec_dir: Option<PathBuf>,
}

impl Daemon {
    fn start(dir: &Path, record: bool) -> Self {
        let rundir = dir.join("run");
        std::fs::create_dir_all(&rundir).expect("rundir");
        let log = dir.join("xenstored.log");
        let rec_dir = record.then(|| dir.join("rec"));
        let mut cmd = Command::new(BIN);
        cmd.args(["-N", "--platform", "mock"])
            .env("XENSTORED_RUNDIR", &rundir)
            .env_remove("XENSTORED_PATH")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(r) = &rec_dir {
            let _ = std::fs::remove_dir_all(r);
            cmd.arg(format!("--replay-record={}", r.display()));
        }
        let child = cmd.spawn().expect("spawn xenstored-lite");
        let socket = rundir.join("socket");
        wait_for("the daemon's socket", || socket.exists());
        Self {
            child: Some(child),
            socket,
            rundir,
            log,
            rec_dir,
        }
    }

    fn client(&self) -> Client<UnixStream> {
        Client::connect_unix(&self.socket).expect("connect to the daemon")
    }

    fn stream(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect to the daemon")
    }

    fn recording(&self) -> Option<PathBuf> {
        self.rec_dir.as_ref().map(|d| d.join("xenstored-lite.rec"))
    }

    /// Size of the recording so far (what the daemon has written out).
    fn recorded_size(&self) -> u64 {
        self.recording()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// CPU time (user + system) the daemon's main thread — its loop, not
    /// the embedded mock-xen (a child process) — has used so far, in seconds
    /// (`/proc/PID/schedstat`: nanoseconds on a CPU, then waiting, then
    /// time slices).
    fn cpu_seconds(&self) -> f64 {
        let Some(child) = &self.child else {
            return 0.0;
        };
        std::fs::read_to_string(format!("/proc/{}/schedstat", child.id()))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |ns| ns / 1e9)
    }

    /// SIGTERM (the daemon writes out its recording and logs its totals),
    /// then waits; returns its log.
    fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            kill(pid, Signal::SIGTERM).expect("SIGTERM");
            let deadline = Instant::now() + LIMIT;
            while child.try_wait().expect("wait").is_none() {
                assert!(Instant::now() < deadline, "the daemon did not exit");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A small, fast, deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn request(ty: MsgType, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    encode(&mut out, ty, 0, 0, payload).expect("encode");
    out
}

/// Sends `total` requests (cycling through the encoded `reqs`) on `s`,
/// keeping up to `window` in flight, written in batches; waits for every
/// reply. Watch events are skipped. Returns the error replies seen.
fn pipeline(s: &mut UnixStream, reqs: &[Vec<u8>], total: usize, window: usize) -> usize {
    let mut decoder = Decoder::new();
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(window * 64);
    let (mut sent, mut got, mut errors) = (0usize, 0usize, 0usize);
    let mut next = 0usize;
    while got < total {
        let in_flight = sent - got;
        if sent < total && in_flight <= window / 2 {
            out.clear();
            let n = (window - in_flight).min(total - sent);
            for _ in 0..n {
                out.extend_from_slice(&reqs[next]);
                next = (next + 1) % reqs.len();
            }
            s.write_all(&out).expect("pipelined write");
            sent += n;
        }
        let n = s.read(&mut rbuf).expect("pipelined read");
        assert!(n > 0, "the daemon closed a pipelined connection");
        let mut input = &rbuf[..n];
        while let Some(msg) = decoder.decode(&mut input).expect("decode") {
            if msg.header.msg_type == MsgType::WatchEvent.raw() {
                continue;
            }
            if msg.header.msg_type == MsgType::Error.raw() {
                errors += 1;
            }
            got += 1;
        }
    }
    errors
}

/// Reads and drops whatever arrives on `s` (watch events) until it closes.
fn drain(mut s: UnixStream) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes += n as u64,
        }
    }
}

// ---------------------------------------------------------------------
// Part 1 and 2: throughput with recording on and off.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    ReadPingPong,
    WritePingPong,
    PipelinedMix,
}

const WORKLOADS: [Workload; 3] = [
    Workload::ReadPingPong,
    Workload::WritePingPong,
    Workload::PipelinedMix,
];

/// Connections of the pipelined mix (plus one watcher).
const MIX_CONNS: usize = 4;
/// Requests in flight per pipelined connection.
const MIX_WINDOW: usize = 64;
/// Nodes the mix reads and writes.
const MIX_KEYS: usize = 1_000;

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::ReadPingPong => "READ ping-pong, 1 client",
            Workload::WritePingPong => "WRITE ping-pong, 1 client",
            Workload::PipelinedMix => "pipelined mix, 4 conns + watcher",
        }
    }

    /// Requests per measured block.
    fn requests(self) -> usize {
        let n = match self {
            Workload::ReadPingPong | Workload::WritePingPong => 40_000,
            Workload::PipelinedMix => 200_000,
        };
        if quick() {
            500
        } else {
            scaled(n)
        }
    }
}

/// What every workload needs in the store.
fn setup(d: &Daemon) {
    let mut c = d.client();
    c.write(0, "/bench/small", b"x").expect("write");
    for i in 0..50 {
        c.write(0, &format!("/bench/dir/entry{i}"), b"")
            .expect("write");
    }
    let mut s = d.stream();
    let reqs: Vec<Vec<u8>> = (0..MIX_KEYS)
        .map(|i| {
            request(
                MsgType::Write,
                &build_path_value(format!("/bench/mix/k{i}").as_bytes(), b"initial-value"),
            )
        })
        .collect();
    assert_eq!(pipeline(&mut s, &reqs, reqs.len(), MIX_WINDOW), 0);
}

/// The mix of one pipelined connection: 60 % READ, 30 % WRITE (each fires
/// the watcher's watch on `/bench/mix`), 10 % DIRECTORY of 50 entries.
fn mix_requests(conn: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(conn as u64 + 1);
    (0..4096)
        .map(|_| {
            let key = format!("/bench/mix/k{}", rng.below(MIX_KEYS));
            match rng.below(10) {
                0..=5 => request(MsgType::Read, &build_args(&[key.as_bytes()])),
                6..=8 => request(
                    MsgType::Write,
                    &build_path_value(key.as_bytes(), format!("v{}", rng.next()).as_bytes()),
                ),
                _ => request(MsgType::Directory, &build_args(&[b"/bench/dir"])),
            }
        })
        .collect()
}

/// Runs `n` requests of `w` against `d`; returns requests per second.
fn run_block(w: Workload, d: &Daemon, n: usize) -> f64 {
    match w {
        Workload::ReadPingPong | Workload::WritePingPong => {
            let mut c = d.client();
            let op = |c: &mut Client<UnixStream>| {
                if w == Workload::ReadPingPong {
                    drop(c.read(0, "/bench/small").expect("read"));
                } else {
                    c.write(0, "/bench/small", b"x").expect("write");
                }
            };
            for _ in 0..n.min(200) {
                op(&mut c);
            }
            let t = Instant::now();
            for _ in 0..n {
                op(&mut c);
            }
            n as f64 / t.elapsed().as_secs_f64()
        }
        Workload::PipelinedMix => {
            let mut watcher = d.client();
            watcher.watch("/bench/mix", "mix").expect("watch");
            assert_eq!(
                watcher.next_watch_event().expect("first event").path,
                "/bench/mix"
            );
            let watcher = watcher.into_inner();
            let closer = watcher.try_clone().expect("clone");
            let drainer = std::thread::spawn(move || drain(watcher));
            let per_conn = n / MIX_CONNS;
            let conns: Vec<(UnixStream, Vec<Vec<u8>>)> = (0..MIX_CONNS)
                .map(|k| (d.stream(), mix_requests(k)))
                .collect();
            let barrier = Arc::new(std::sync::Barrier::new(MIX_CONNS + 1));
            let threads: Vec<_> = conns
                .into_iter()
                .map(|(mut s, reqs)| {
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        assert_eq!(pipeline(&mut s, &reqs, per_conn, MIX_WINDOW), 0);
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            for t in threads {
                t.join().expect("mix thread");
            }
            let elapsed = t.elapsed();
            let _ = closer.shutdown(std::net::Shutdown::Both);
            drainer.join().expect("drainer");
            (per_conn * MIX_CONNS) as f64 / elapsed.as_secs_f64()
        }
    }
}

/// Requests a block sends in all (warm-up and watch registration included),
/// for the bytes each costs in the recording.
fn block_requests(w: Workload, n: usize) -> usize {
    match w {
        Workload::ReadPingPong | Workload::WritePingPong => n + n.min(200),
        Workload::PipelinedMix => (n / MIX_CONNS) * MIX_CONNS + 1,
    }
}

fn throughput(dir: &Path) {
    let rounds = if quick() {
        1
    } else {
        std::env::var("REPLAY_BENCH_ROUNDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&r: &usize| r > 0)
            .unwrap_or(7)
    };
    set_cpus(&[0]);
    let mut off = Daemon::start(&dir.join("off"), false);
    let mut on = Daemon::start(&dir.join("on"), true);
    setup(&off);
    setup(&on);
    // [workload][round]: requests/s and daemon CPU µs/request, off and
    // on; recorded bytes per request.
    let mut rate = [
        vec![Vec::new(); WORKLOADS.len()],
        vec![Vec::new(); WORKLOADS.len()],
    ];
    let mut cpu = [
        vec![Vec::new(); WORKLOADS.len()],
        vec![Vec::new(); WORKLOADS.len()],
    ];
    let mut bytes_per_req = vec![Vec::new(); WORKLOADS.len()];
    let settle = || std::thread::sleep(Duration::from_millis(30));
    for round in 0..rounds {
        for (k, &w) in WORKLOADS.iter().enumerate() {
            let n = w.requests();
            let sent = block_requests(w, n) as f64;
            // Alternate which goes first.
            let order = if (round + k) % 2 == 0 { [0, 1] } else { [1, 0] };
            for config in order {
                let d = if config == 1 { &on } else { &off };
                settle();
                let size = d.recorded_size();
                let cpu_before = d.cpu_seconds();
                rate[config][k].push(run_block(w, d, n));
                cpu[config][k].push((d.cpu_seconds() - cpu_before) * 1e6 / sent);
                if config == 1 {
                    // Idle again: the daemon has written out its buffer.
                    settle();
                    bytes_per_req[k].push((d.recorded_size() - size) as f64 / sent);
                }
            }
        }
    }
    let _ = off.stop();
    let log = on.stop();
    let totals = Recorded::parse(&log);
    let size = on.recorded_size();
    set_cpus(&all_cpus());

    println!(
        "throughput over the Unix socket, recording off vs on, every process on CPU 0, \
         median of {rounds} interleaved rounds:"
    );
    println!(
        "  {:<33} {:>8} {:>9} {:>9} {:>7} {:>13} {:>11} {:>8}",
        "workload",
        "requests",
        "off req/s",
        "on req/s",
        "on/off",
        "(round range)",
        "daemon CPU",
        "rec B/req"
    );
    for (k, &w) in WORKLOADS.iter().enumerate() {
        let mut ratios: Vec<f64> = rate[1][k]
            .iter()
            .zip(&rate[0][k])
            .map(|(a, b)| a / b)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let off_m = median(&mut rate[0][k]);
        let on_m = median(&mut rate[1][k]);
        let cpu_off = median(&mut cpu[0][k]);
        let cpu_on = median(&mut cpu[1][k]);
        println!(
            "  {:<33} {:>8} {:>9.0} {:>9.0} {:>6.3}x {:>6.2}-{:<6.2} {:>4.2}/{:<4.2}us {:>8.1}",
            w.label(),
            w.requests(),
            off_m,
            on_m,
            on_m / off_m,
            ratios[0],
            ratios[ratios.len() - 1],
            cpu_off,
            cpu_on,
            median(&mut bytes_per_req[k]),
        );
    }
    println!(
        "  (goal: on/off >= 0.9x; on/off is the ratio of the medians, the range that of \
         each round's pair; daemon CPU is the CPU time of the daemon's loop per request, off/on)"
    );
    println!(
        "  recording of the whole run: {size} bytes on disk, {} events, {} requests: {:.1} bytes/request",
        totals.events,
        totals.requests,
        size as f64 / totals.requests.max(1) as f64
    );
    assert_eq!(
        totals.bytes + HEADER,
        size,
        "the daemon's log and the file disagree on the recording's size"
    );
}

// ---------------------------------------------------------------------
// Part 3: a one-million-request recording, replayed.

/// [`population::FIRST_DOMID`] as an index.
const FIRST_DOMID: usize = population::FIRST_DOMID as usize;

/// The nodes the toolstack writes for domain `d` (parents first), with
/// values: the population the live-update benchmark loads.
fn domain_nodes(d: usize) -> Vec<(String, String)> {
    population::domain_nodes(u32::try_from(d).expect("a domid"))
}

/// The paths a tool works on, drawn from the populated domains.
struct Store {
    domains: usize,
    /// Leaf paths of domain `FIRST_DOMID` with `{d}` left to substitute:
    /// (path template, value).
    leaves: Vec<String>,
}

impl Store {
    fn new(domains: usize) -> Self {
        let marker = FIRST_DOMID.to_string();
        let leaves = domain_nodes(FIRST_DOMID)
            .into_iter()
            .skip(1)
            .map(|(p, _)| p.replace(&format!("/{marker}"), "/{d}"))
            .collect();
        Self { domains, leaves }
    }

    fn leaf(&self, rng: &mut Rng) -> (usize, String) {
        let d = FIRST_DOMID + rng.below(self.domains);
        let t = &self.leaves[rng.below(self.leaves.len())];
        (d, t.replace("{d}", &d.to_string()))
    }
}

/// Requests the tools and guests may still make, shared: each takes what
/// it did and stops when none are left.
struct Budget(std::sync::atomic::AtomicI64);

impl Budget {
    /// Counts `n` requests made; whether more may be.
    fn take(&self, n: u64) -> bool {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.0.fetch_sub(n, SeqCst) - n > 0
    }
}

/// One synchronous dom0 tool (like `xl` or a backend driver: one request
/// at a time) doing the mix until the budget is spent; returns the
/// requests it made (EAGAIN retries are counted in `tx_conflicts`).
fn tool(
    socket: &Path,
    store: &Store,
    guests: &[u16],
    seed: u64,
    budget: &Budget,
    tx_conflicts: &AtomicU64,
) -> u64 {
    let mut c = Client::connect_unix(socket).expect("tool connection");
    let mut rng = Rng::new(seed);
    let mut done = 0u64;
    let mut counted = 0u64;
    while budget.take(done - counted) {
        counted = done;
        let roll = rng.below(1000);
        match roll {
            // READ an existing node.
            0..=429 => {
                let (_, p) = store.leaf(&mut rng);
                c.read(0, &p).expect("read");
                done += 1;
            }
            // Probe a missing node (ENOENT), as tools do.
            430..=519 => {
                let (d, _) = store.leaf(&mut rng);
                let p = format!("/local/domain/{d}/device/vkbd/0/state");
                assert!(matches!(c.read(0, &p), Err(XsError::Xs(XsErrno::ENOENT))));
                done += 1;
            }
            // WRITE a leaf (device states and backend nodes fire the
            // watcher's watches).
            520..=739 => {
                let (_, p) = store.leaf(&mut rng);
                c.write(0, &p, format!("{}", rng.below(7)).as_bytes())
                    .expect("write");
                done += 1;
            }
            // DIRECTORY of a device or a backend.
            740..=839 => {
                let d = FIRST_DOMID + rng.below(store.domains);
                let p = if rng.below(2) == 0 {
                    format!("/local/domain/{d}/device/vbd/51712")
                } else {
                    format!("/local/domain/0/backend/vif/{d}/0")
                };
                c.directory(0, &p).expect("directory");
                done += 1;
            }
            // GET_PERMS.
            840..=889 => {
                let (_, p) = store.leaf(&mut rng);
                c.get_perms(0, &p).expect("get_perms");
                done += 1;
            }
            // Fire a guest's watch: write into its control directory.
            890..=939 if !guests.is_empty() => {
                let g = guests[rng.below(guests.len())];
                c.write(
                    0,
                    &format!("/local/domain/{g}/control/sysrq"),
                    format!("{}", rng.below(10)).as_bytes(),
                )
                .expect("write");
                done += 1;
            }
            // MKDIR then RM a scratch node.
            940..=969 => {
                let p = format!("/tool/scratch{seed}/n{}", rng.below(100));
                c.mkdir(0, &p).expect("mkdir");
                c.rm(0, &p).expect("rm");
                done += 2;
            }
            // A transaction: read two nodes, write two, commit; retried
            // on conflict.
            _ => {
                let d = FIRST_DOMID + rng.below(store.domains);
                let state = format!("/local/domain/0/backend/vbd/{d}/51712/state");
                let fe = format!("/local/domain/{d}/device/vbd/51712/state");
                loop {
                    let tx = c.transaction_start().expect("transaction start");
                    let a = c.read(tx, &state).expect("read in tx");
                    c.read(tx, &fe).expect("read in tx");
                    c.write(tx, &state, &a).expect("write in tx");
                    c.write(tx, &fe, b"4").expect("write in tx");
                    done += 6;
                    match c.transaction_end(tx, true) {
                        Ok(()) => break,
                        Err(XsError::Xs(XsErrno::EAGAIN)) => {
                            tx_conflicts.fetch_add(1, SeqCst);
                        }
                        Err(e) => panic!("commit: {e}"),
                    }
                }
            }
        }
    }
    done
}

/// A guest over its mock-xen ring: works in its own home until the budget
/// is spent, reading the watch events dom0 fires; returns (requests,
/// events).
fn guest_work(mut c: Client<mock_xen::Guest>, budget: &Budget, stop: &AtomicBool) -> (u64, u64) {
    c.write(0, "control/sysrq", b"").expect("guest write");
    c.watch("control", "ctl").expect("guest watch");
    let mut requests = 2u64;
    let mut counted = 0u64;
    let mut events = 0u64;
    let mut i = 0usize;
    while budget.take(requests - counted) {
        counted = requests;
        let key = format!("data/k{}", i % 20);
        c.write(0, &key, i.to_string().as_bytes())
            .expect("guest write");
        c.read(0, &key).expect("guest read");
        requests += 2;
        if i % 8 == 0 {
            c.directory(0, "data").expect("guest directory");
            requests += 1;
        }
        while c.queued_watch_event().is_some() {
            events += 1;
        }
        i += 1;
    }
    // Then idle, as guests mostly are, but reading the events dom0 fires
    // (a guest that stops reading its ring is another benchmark).
    c.get_mut().set_block_limit(Duration::from_millis(20));
    while !stop.load(SeqCst) {
        if c.next_watch_event().is_ok() {
            events += 1;
        }
    }
    (requests, events)
}

/// Runs the replay; returns (the summary line, the replay's own wall time
/// in seconds, the replayed request count, the process's wall time).
fn replay(rec: &Path, verify: bool) -> (String, f64, u64, f64) {
    let mut cmd = Command::new(BIN);
    cmd.arg(format!("--replay={}", rec.display()))
        .env_remove("XENSTORED_PATH")
        .env_remove("XENSTORED_RUNDIR");
    if !verify {
        cmd.arg("--no-verify");
    }
    let t = Instant::now();
    let out = cmd.output().expect("run the replay");
    let process = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replay failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("replayed "))
        .unwrap_or_else(|| panic!("no summary in {stdout:?}"))
        .to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    let requests = words[3].parse().expect("requests");
    let wall = line
        .split("process(es) in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .expect("wall time");
    (line, wall, requests, process)
}

fn recorded_span(summary: &str) -> f64 {
    summary
        .split("recorded span ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|w| w.parse().ok())
        .expect("recorded span")
}

fn million(dir: &Path) {
    set_cpus(&all_cpus());
    let (target, domains, tools, guests, replays) = if quick() {
        (20_000, 20, 2, 1, 1)
    } else {
        (scaled(1_000_000), 300, 4, 4, 3)
    };
    let mut d = Daemon::start(dir, true);
    let started = Instant::now();

    // The store, written pipelined over one dom0 connection.
    let mut dom0 = d.client();
    for p in population::COMMON.into_iter().chain(["/tool"]) {
        dom0.write(0, p, b"").expect("write");
    }
    let mut loaded = population::COMMON.len() + 1;
    {
        let reqs: Vec<Vec<u8>> = (FIRST_DOMID..FIRST_DOMID + domains)
            .flat_map(domain_nodes)
            .map(|(p, v)| {
                request(
                    MsgType::Write,
                    &build_path_value(p.as_bytes(), v.as_bytes()),
                )
            })
            .collect();
        let mut s = d.stream();
        assert_eq!(pipeline(&mut s, &reqs, reqs.len(), 128), 0);
        loaded += reqs.len();
    }
    let store = Arc::new(Store::new(domains));

    // Guests over mock-xen rings.
    let connector = mock_xen::Connector::remote(d.rundir.join("mock-xen.sock"));
    let ts = mock_xen::Toolstack::open(&connector).expect("toolstack");
    let mut guest_ids = Vec::new();
    let mut guest_clients = Vec::new();
    for _ in 0..guests {
        let rec = ts.create_domain().expect("create a domain");
        let g = rec.info.domid;
        let home = format!("/local/domain/{g}");
        dom0.mkdir(0, &home).expect("mkdir");
        dom0.set_perms(0, &home, &[Perm::new(PermKind::None, g)])
            .expect("set_perms");
        ts.introduce(&mut dom0, &rec).expect("introduce");
        let mut guest = mock_xen::Guest::attach(&connector, &rec).expect("attach");
        guest.set_block_limit(LIMIT);
        guest_ids.push(g);
        guest_clients.push(Client::new(guest));
        loaded += 3;
    }

    // A dom0 watcher on the backends and on the guests' homes.
    let stop = Arc::new(AtomicBool::new(false));
    let watch_events = Arc::new(AtomicU64::new(0));
    let watcher = {
        let mut w = d.client();
        w.watch("/local/domain/0/backend", "be").expect("watch");
        w.watch("/tool", "tool").expect("watch");
        w.get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        loaded += 2;
        let (stop, events) = (Arc::clone(&stop), Arc::clone(&watch_events));
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                if w.next_watch_event().is_ok() {
                    events.fetch_add(1, SeqCst);
                }
            }
        })
    };

    // Most of a host's xenstore traffic is dom0's (toolstack, backends);
    // the guests get a tenth of the budget.
    let budget = |n: usize| {
        Arc::new(Budget(std::sync::atomic::AtomicI64::new(
            i64::try_from(n).unwrap_or(i64::MAX),
        )))
    };
    let rest = target.saturating_sub(loaded);
    let guest_share = if guests == 0 { 0 } else { rest / 10 };
    let guest_budget = budget(guest_share);
    let budget = budget(rest - guest_share);
    let work_started = Instant::now();
    let guest_threads: Vec<_> = guest_clients
        .into_iter()
        .map(|c| {
            let (budget, stop) = (Arc::clone(&guest_budget), Arc::clone(&stop));
            std::thread::spawn(move || guest_work(c, &budget, &stop))
        })
        .collect();
    let conflicts = Arc::new(AtomicU64::new(0));
    let tool_threads: Vec<_> = (0..tools)
        .map(|k| {
            let (socket, store, ids, conflicts, budget) = (
                d.socket.clone(),
                Arc::clone(&store),
                guest_ids.clone(),
                Arc::clone(&conflicts),
                Arc::clone(&budget),
            );
            std::thread::spawn(move || {
                tool(&socket, &store, &ids, k as u64 + 1, &budget, &conflicts)
            })
        })
        .collect();
    let mut tool_requests = 0u64;
    for t in tool_threads {
        tool_requests += t.join().expect("tool thread");
    }
    stop.store(true, SeqCst);
    let (mut guest_requests, mut guest_events) = (0u64, 0u64);
    for g in guest_threads {
        let (r, e) = g.join().expect("guest thread");
        guest_requests += r;
        guest_events += e;
    }
    watcher.join().expect("watcher");
    let work = work_started.elapsed();
    let total_wall = started.elapsed();
    let daemon_cpu = d.cpu_seconds();
    let log = d.stop();
    let recorded = Recorded::parse(&log);
    let size = d.recorded_size();
    let rec_dir = d.rec_dir.clone().expect("recording directory");

    println!(
        "a {}-request recording (unpinned): store of {loaded} requests ({domains} domains), \
         {tools} synchronous dom0 tools ({tool_requests} requests, {} EAGAIN retries), \
         {guests} guests over mock-xen rings ({guest_requests} requests, {guest_events} watch \
         events), a dom0 watcher ({} events)",
        recorded.requests,
        conflicts.load(SeqCst),
        watch_events.load(SeqCst),
    );
    println!(
        "  daemon: {} requests, {} events, {size} bytes recorded ({:.1} bytes/request); \
         workload {:.2} s, daemon start to stop {:.2} s, CPU time of the daemon's loop {daemon_cpu:.2} s \
         ({:.0} % of the recorded span)",
        recorded.requests,
        recorded.events,
        size as f64 / recorded.requests.max(1) as f64,
        work.as_secs_f64(),
        total_wall.as_secs_f64(),
        100.0 * daemon_cpu / total_wall.as_secs_f64()
    );
    assert_eq!(
        recorded.bytes + HEADER,
        size,
        "log and file disagree on the size"
    );

    // Replays: fast and verify in turn, medians.
    let (mut fast, mut verify, mut fast_proc, mut verify_proc) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut span = 0.0;
    let mut lines = Vec::new();
    for _ in 0..replays {
        for v in [false, true] {
            let (line, wall, requests, process) = replay(&rec_dir, v);
            assert_eq!(
                requests, recorded.requests,
                "the replay handled another number of requests than the recording: {line}"
            );
            span = recorded_span(&line);
            if v {
                assert!(line.contains("all identical"), "{line}");
                verify.push(wall);
                verify_proc.push(process);
            } else {
                fast.push(wall);
                fast_proc.push(process);
            }
            lines.push(line);
        }
    }
    for l in lines.iter().take(2) {
        println!("  {l}");
    }
    let (f, v) = (median(&mut fast), median(&mut verify));
    let (fp, vp) = (median(&mut fast_proc), median(&mut verify_proc));
    println!("  recorded wall time (the recording's clock span): {span:.3} s");
    println!(
        "  fast replay (--no-verify): {f:.3} s (process {fp:.3} s), {:.0} requests/s: \
         {:.3}x recorded (goal <= 0.1x)",
        recorded.requests as f64 / f,
        f / span
    );
    println!(
        "  verify replay: {v:.3} s (process {vp:.3} s), {:.0} requests/s: {:.3}x fast \
         (goal <= 1.5x); {:.3}x recorded",
        recorded.requests as f64 / v,
        v / f,
        v / span
    );
    println!(
        "  fast replay vs the CPU time of the live daemon's loop: {:.3}x",
        f / daemon_cpu.max(1e-9)
    );
    println!("  (medians of {replays} runs each, alternating)");
}

/// The 1, 5 and 15 minute load averages (this VM is shared: they say how
/// much else ran).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    common::raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("xsl-replay-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    println!("record and replay: {BIN}; load average {}", load_average());
    let only = std::env::var("REPLAY_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "throughput" {
        let t = Instant::now();
        throughput(&dir.join("throughput"));
        println!("  ({:.1} s)", t.elapsed().as_secs_f64());
    }
    if only.is_empty() || only == "million" {
        let t = Instant::now();
        million(&dir.join("million"));
        println!("  ({:.1} s)", t.elapsed().as_secs_f64());
    }
    println!("load average {}", load_average());
    if std::env::var_os("REPLAY_BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
