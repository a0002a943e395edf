//! Crash journal benchmark (prints figures; not a timed test): what the
//! journal costs a loaded daemon, and how fast a daemon killed with
//! `kill -9` is back with everything.
//!
//! `cargo bench -p tests --bench crash_journal` builds the release
//! binaries and, in run directories on a tmpfs (`/dev/shm`, or
//! `CRASH_DIR`), does two things:
//!
//! 1. **Throughput, journal on vs off, side by side.** Two machines, each
//!    a `mock-xen --socket` and a `xenstored-lite --mock-xen`, one with
//!    `--journal=on` and one with `--journal=off`, both loaded with the
//!    toolstack population of the live-update bench (120,000 nodes,
//!    `CRASH_NODES=N` for another size). Every round (`CRASH_ROUNDS`,
//!    default 7) runs the same load on each in turn, alternating which
//!    goes first, for 3 s: 4 dom0 socket clients with 32 requests in
//!    flight each (60 % READ, 30 % WRITE of the node's own value, 10 %
//!    DIRECTORY of a domain's home, on random nodes of the population)
//!    and 4 guests over mock-xen rings writing a node of their home and
//!    reading it back, one request at a time, and a prober guest issuing
//!    READs back to back. Requests answered per second, the daemon's CPU
//!    time per request (`/proc/PID/task/*/schedstat`), the prober's
//!    longest wait for a reply, and the journal's snapshots (the daemons
//!    log them: `RUST_LOG` sets the journal's module to debug, on both).
//! 2. **Recovery.** On the journal-on machine, 1,000 connections (50
//!    guests over rings: the 4 busy ones, the prober, 45 idle with 10
//!    watches each; 949 idle sockets with 10 watches each; dom0's), then
//!    `CRASH_KILLS` times (default 4): `kill -9` the daemon and start it
//!    again at once with the same command line, while the busy guests
//!    keep writing and reading back and the prober issues READs,
//!    timestamping every reply. The kills alternate between just after a
//!    snapshot (the journal is a snapshot and little else) and just
//!    before one (the journal near its limit): the two ends of what a
//!    recovery reads. Reported: the daemon's own `crash recovery: ... in
//!    N ms`, the time from the restart to the prober's first reply and to
//!    the first reply on a new socket connection, the prober's gap across
//!    kill and restart, and its longest gap until 1 s after. After each
//!    recovery the store holds as many nodes as before (`memreport`),
//!    every node of the population reads back its value, `check` is OK,
//!    and the sockets reconnect and watch again (as many watches as
//!    before).
//!
//! `CRASH_CALIBRATE=1` runs the throughput rounds with the journal off on
//! both machines, and stops there: how far apart two identical machines
//! come out on this host. `CRASH_JOURNAL_LIMIT=BYTES` gives the
//! journal-on daemon the hidden `--journal-limit` (an experiment: how
//! much of the cost is the snapshots, and what a longer journal costs a
//! recovery).
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does the
//! same at a small size, once.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mock_xen::{Connector, Guest, Toolstack};
use tests::{create_guest, guest_client, reply_text, wait_until, Daemon, MockXen, LIMIT};
use xenring::codec::{build_args, build_path_value};
use xenring::{Client, MsgType};

mod common;
use common::load::{domain_nodes, idle_sockets, load_store, raise_fd_limit, FIRST_DOMID, LOADERS};
use common::probe::{longest_gap, Prober};
use common::rings::{assert_guests_kept, watched_guest};

/// What to set up.
struct Size {
    nodes: usize,
    /// Connections at a crash: guests over rings, idle sockets, dom0's.
    connections: usize,
    /// Guests over rings at a crash, the busy ones and the prober among
    /// them.
    guests: usize,
    /// Guests writing and reading back, in the throughput rounds and
    /// across the crashes.
    busy_guests: usize,
    /// Socket clients of the throughput rounds.
    socket_clients: usize,
    /// Requests each socket client keeps in flight.
    window: usize,
    rounds: usize,
    round: Duration,
    kills: usize,
    /// How long a crash waits for the journal to be where it wants it.
    journal_wait: Duration,
}

const FULL: Size = Size {
    nodes: 120_000,
    connections: 1_000,
    guests: 50,
    busy_guests: 4,
    socket_clients: 4,
    window: 32,
    rounds: 7,
    round: Duration::from_secs(3),
    kills: 4,
    journal_wait: Duration::from_secs(40),
};

const QUICK: Size = Size {
    nodes: 2_000,
    connections: 30,
    guests: 4,
    busy_guests: 2,
    socket_clients: 2,
    window: 8,
    rounds: 1,
    round: Duration::from_millis(300),
    kills: 1,
    journal_wait: Duration::ZERO,
};

/// Watches each idle connection holds.
const WATCHES: usize = 10;
/// Replies the prober must get from the new process before the next step.
const AFTER_REPLIES: usize = 2_000;
/// How long the prober goes on after a recovery before the checks.
const STEADY: Duration = Duration::from_secs(1);
/// The node the busy guests write and read back, in their homes.
const BUSY_NODE: &str = "data/bench";
/// The node the prober guest reads, in its home.
const PROBE_NODE: &str = "data/probe";
/// Distinct nodes the socket clients pick from.
const TARGETS: usize = 4_096;

/// The daemons' log level: info, and the journal's snapshots (debug).
const LOG_ENV: [(&str, &str); 1] = [("RUST_LOG", "info,xenstored_lite::shell::crash=debug")];

/// The daemons' logs, shown when something panics.
static LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A panic anywhere (a guest that lost a reply, a check) shows the last
/// lines of each daemon's log too.
fn show_logs_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if let Ok(logs) = LOGS.try_lock() {
            for p in logs.iter() {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                if text.is_empty() {
                    continue; // a machine gone, or a daemon that said nothing
                }
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                eprintln!("--- last lines of {}:\n{tail}", p.display());
            }
        }
    }));
}

/// A mock-xen, a daemon on it with the population loaded, and the busy
/// guests (fields drop in this order: the processes before their
/// directory).
struct Machine {
    daemon: Daemon,
    guests: Vec<Client<Guest>>,
    /// The prober's guest (reading [`PROBE_NODE`]), while no prober runs.
    probe: Option<Client<Guest>>,
    dom0: Client<UnixStream>,
    ts: Toolstack,
    connector: Connector,
    args: Vec<String>,
    domains: u32,
    _hv: MockXen,
    dir: tempfile::TempDir,
}

impl Machine {
    /// A machine called `name` running `--journal=<journal>`.
    fn start(name: &str, journal: &str, base: &Path, size: &Size) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("crash-journal-{name}-"))
            .tempdir_in(base)
            .unwrap();
        let hv = MockXen::start(dir.path());
        let mut args = vec![
            "--mock-xen".to_string(),
            hv.socket.to_str().unwrap().to_string(),
            format!("--journal={journal}"),
        ];
        if let (Some(limit), "on") = (std::env::var_os("CRASH_JOURNAL_LIMIT"), journal) {
            // An experiment: snapshots further apart (or never).
            args.push(format!("--journal-limit={}", limit.to_string_lossy()));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // Where Daemon::start logs, known before it is up.
        LOGS.lock().unwrap().push(dir.path().join("xenstored.log"));
        let daemon =
            Daemon::start_env(dir.path(), &argv, &LOG_ENV.map(|(k, v)| (k, OsStr::new(v))));
        println!(
            "journal {name}: xenstored-lite -N {} (pid {}), run directory {}",
            argv.join(" "),
            daemon.pid(),
            daemon.rundir.display()
        );
        let domains = load_store(&daemon, size.nodes, true);
        let connector = hv.connector();
        let ts = Toolstack::open(&connector).unwrap();
        let mut dom0 = daemon.client();
        let guests = (0..size.busy_guests)
            .map(|g| watched_guest(&ts, &connector, &mut dom0, WATCHES, g))
            .collect();
        let rec = create_guest(&ts, &mut dom0);
        let mut probe = guest_client(&connector, &rec);
        probe.write(0, PROBE_NODE, b"probe").unwrap();
        Self {
            daemon,
            guests,
            probe: Some(probe),
            dom0,
            ts,
            connector,
            args,
            domains,
            _hv: hv,
            dir,
        }
    }

    /// `kill -9` the daemon, then start it again with the same command
    /// line (its log so far kept as `xenstored.log.<k>`): when it was
    /// killed and when restarted.
    fn crash(&mut self, k: usize) -> (Instant, Instant) {
        let killed = Instant::now();
        self.daemon.proc.child.kill().unwrap(); // SIGKILL
        self.daemon.proc.child.wait().unwrap();
        let kept = self.dir.path().join(format!("xenstored.log.{k}"));
        std::fs::rename(&self.daemon.log, kept).unwrap();
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let restarted = Instant::now();
        let env = LOG_ENV.map(|(k, v)| (k, OsStr::new(v)));
        self.daemon = Daemon::start_env(self.dir.path(), &argv, &env);
        (killed, restarted)
    }
}

/// CPU time of every thread of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// A node the socket clients ask about: its path, its value (what a WRITE
/// writes again, so the population stays checkable) and its domain's home.
struct Target {
    path: String,
    value: String,
    home: String,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn targets(domains: u32) -> Arc<Vec<Target>> {
    let mut rng = 0x9e37_79b9_7f4a_7c15;
    let list = (0..TARGETS)
        .map(|_| {
            let d = FIRST_DOMID + u32::try_from(xorshift(&mut rng) % u64::from(domains)).unwrap();
            let nodes = domain_nodes(d);
            let k = usize::try_from(xorshift(&mut rng)).unwrap() % nodes.len();
            let (path, value) = nodes[k].clone();
            Target {
                path,
                value,
                home: format!("/local/domain/{d}"),
            }
        })
        .collect();
    Arc::new(list)
}

/// A socket client's load until `stop`: `window` requests in flight;
/// returns the replies it counted.
fn socket_load(
    mut c: Client<UnixStream>,
    targets: &[Target],
    mut rng: u64,
    window: usize,
    go: &Barrier,
    stop: &AtomicBool,
) -> u64 {
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let mut answered = 0;
    go.wait();
    while !stop.load(SeqCst) {
        while in_flight.len() < window {
            let r = xorshift(&mut rng);
            let t = &targets[usize::try_from(r >> 8).unwrap() % targets.len()];
            let (ty, payload) = match r % 10 {
                0..=5 => (MsgType::Read, build_args(&[t.path.as_bytes()])),
                6..=8 => (
                    MsgType::Write,
                    build_path_value(t.path.as_bytes(), t.value.as_bytes()),
                ),
                _ => (MsgType::Directory, build_args(&[t.home.as_bytes()])),
            };
            in_flight.push_back(c.submit(ty, 0, &payload).unwrap());
        }
        c.wait_reply(in_flight.pop_front().unwrap()).unwrap();
        answered += 1;
    }
    for id in in_flight {
        c.wait_reply(id).unwrap();
    }
    answered
}

/// Guests writing [`BUSY_NODE`] and reading it back until `stop`, each
/// reply checked; each thread returns its guest and the replies it got.
type BusyGuests = Vec<JoinHandle<(Client<Guest>, u64)>>;

fn busy_guests(
    guests: Vec<Client<Guest>>,
    go: &Arc<Barrier>,
    stop: &Arc<AtomicBool>,
) -> BusyGuests {
    guests
        .into_iter()
        .map(|mut c| {
            let (go, stop) = (Arc::clone(go), Arc::clone(stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                go.wait();
                while !stop.load(SeqCst) {
                    let v = n.to_string();
                    c.write(0, BUSY_NODE, v.as_bytes()).unwrap();
                    let back = c.read(0, BUSY_NODE).unwrap();
                    assert_eq!(back, v.as_bytes(), "a guest reads back what it wrote");
                    n += 2;
                }
                (c, n)
            })
        })
        .collect()
}

fn join_guests(threads: BusyGuests) -> (Vec<Client<Guest>>, u64) {
    let mut total = 0;
    let guests = threads
        .into_iter()
        .map(|t| {
            let (c, n) = t.join().unwrap();
            total += n;
            c
        })
        .collect();
    (guests, total)
}

/// One machine's part of a throughput round.
struct Round {
    socket_replies: u64,
    /// The busy guests' and the prober's.
    guest_replies: u64,
    secs: f64,
    cpu: Duration,
    /// The prober's longest wait for a reply.
    gap: Duration,
}

impl Round {
    fn requests(&self) -> f64 {
        (self.socket_replies + self.guest_replies) as f64
    }

    fn rate(&self) -> f64 {
        self.requests() / self.secs
    }

    fn line(&self) -> String {
        format!(
            "{:>9} /s (sockets {:>9}, guests {:>7}), daemon CPU {:.2} us/request, a guest's \
             longest wait {:.1} ms",
            thousands(self.rate()),
            thousands(self.socket_replies as f64 / self.secs),
            thousands(self.guest_replies as f64 / self.secs),
            self.cpu.as_secs_f64() * 1e6 / self.requests(),
            ms(self.gap)
        )
    }
}

fn load_round(m: &mut Machine, size: &Size, targets: &Arc<Vec<Target>>, seed: u64) -> Round {
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(size.socket_clients + m.guests.len() + 1));
    let sockets: Vec<JoinHandle<u64>> = (0..size.socket_clients)
        .map(|i| {
            let c = m.daemon.client();
            let (targets, go, stop) = (Arc::clone(targets), Arc::clone(&go), Arc::clone(&stop));
            let (window, rng) = (size.window, seed * 64 + i as u64 + 1);
            std::thread::spawn(move || socket_load(c, &targets, rng, window, &go, &stop))
        })
        .collect();
    let guests = busy_guests(std::mem::take(&mut m.guests), &go, &stop);
    let prober = Prober::start(m.probe.take().unwrap(), PROBE_NODE, 1);
    let pid = m.daemon.pid();
    go.wait();
    let (t0, cpu0) = (Instant::now(), cpu_time(pid));
    std::thread::sleep(size.round);
    stop.store(true, SeqCst);
    let (t1, cpu) = (Instant::now(), cpu_time(pid) - cpu0);
    let socket_replies = sockets.into_iter().map(|t| t.join().unwrap()).sum();
    let (guests, busy_replies) = join_guests(guests);
    m.guests = guests;
    let (stamps, probe) = prober.finish();
    m.probe = Some(probe);
    let (a, b) = longest_gap(&stamps, t0, t1);
    let probed = stamps.iter().filter(|&&t| t > t0 && t <= t1).count() as u64;
    Round {
        socket_replies,
        guest_replies: busy_replies + probed,
        secs: (t1 - t0).as_secs_f64(),
        cpu,
        gap: b - a,
    }
}

/// What the daemon's `memreport` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    nodes: u64,
    watches: u64,
    connections: u64,
}

/// The daemon's `memreport`, written to a file in `dir` (the reply itself
/// would be too long: a line per domain).
fn memreport<T: Read + Write>(dom0: &mut Client<T>, dir: &Path) -> Report {
    let file = dir.join("memreport.txt");
    let _ = std::fs::remove_file(&file);
    let answer = dom0
        .control(&["memreport", file.to_str().unwrap()])
        .unwrap();
    assert_eq!(reply_text(&answer), "OK");
    let text = std::fs::read_to_string(&file).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in memreport: {text}"))
    };
    Report {
        nodes: field("nodes"),
        watches: field("watches"),
        connections: field("connections"),
    }
}

/// Reads every node of the population back (a domain's nodes in flight
/// at once), each value checked; returns how many.
fn verify_population<T: Read + Write>(c: &mut Client<T>, domains: u32) -> usize {
    let mut checked = 0;
    for d in FIRST_DOMID..FIRST_DOMID + domains {
        let nodes = domain_nodes(d);
        let ids: Vec<u32> = nodes
            .iter()
            .map(|(p, _)| c.submit(MsgType::Read, 0, &build_args(&[p.as_bytes()])))
            .collect::<Result<_, _>>()
            .unwrap();
        for (id, (path, value)) in ids.into_iter().zip(&nodes) {
            let reply = c.wait_reply(id).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(reply.payload, value.as_bytes(), "{path}");
            checked += 1;
        }
    }
    checked
}

/// The files of the daemon's journal directory and their sizes.
fn journal_files(rundir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(rundir.join("journal"))
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().ok()?.len(),
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The daemon's `crash recovery: ... in N ms` line and its N (other
/// `crash recovery:` lines come before it).
fn recovery_line(log: &str) -> Option<(String, f64)> {
    log.lines()
        .filter(|l| l.contains("crash recovery: "))
        .find_map(|line| {
            let at = line.rfind(" in ")?;
            let n = line[at + 4..]
                .trim_end()
                .strip_suffix(" ms")?
                .parse()
                .ok()?;
            Some((line.trim().to_string(), n))
        })
}

/// The journal's snapshots a daemon's log reports (`crash journal:
/// snapshot of N octets in M ms`, at debug level): their octets and ms.
fn snapshots(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("crash journal: snapshot of ")? + 27..];
            let (octets, rest) = rest.split_once(" octets in ")?;
            let ms = rest.split(" ms").next()?.trim().parse().ok()?;
            Some((octets.parse().ok()?, ms))
        })
        .collect()
}

/// When a new socket connection is first answered.
fn socket_answers(socket: &Path) -> Instant {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(s) = UnixStream::connect(socket) {
            s.set_read_timeout(Some(LIMIT)).unwrap();
            // Any answer counts, an error reply too.
            match Client::new(s).read(0, "/local/domain/0") {
                Ok(_) | Err(xenring::Error::Xs(_)) => return Instant::now(),
                Err(_) => {}
            }
        }
        assert!(Instant::now() < deadline, "the socket never answered");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn throughput(on: &mut Machine, off: &mut Machine, size: &Size) {
    let targets = targets(on.domains);
    let snaps_before = snapshots(&on.daemon.log_text()).len();
    println!(
        "throughput: {} rounds of {:.1} s on each, alternating; {} socket clients x {} in \
         flight, {} guests over rings one request at a time",
        size.rounds,
        size.round.as_secs_f64(),
        size.socket_clients,
        size.window,
        on.guests.len()
    );
    let (mut rates_on, mut rates_off) = (Vec::new(), Vec::new());
    let (mut gaps_on, mut gaps_off) = (Vec::new(), Vec::new());
    for r in 0..size.rounds {
        // Who goes first alternates.
        let order = if r % 2 == 0 {
            ["off", "on"]
        } else {
            ["on", "off"]
        };
        for (i, journal) in order.into_iter().enumerate() {
            let (m, rates, gaps) = if journal == "on" {
                (&mut *on, &mut rates_on, &mut gaps_on)
            } else {
                (&mut *off, &mut rates_off, &mut gaps_off)
            };
            let round = load_round(m, size, &targets, r as u64);
            let label = if i == 0 {
                format!("round {}:", r + 1)
            } else {
                String::new()
            };
            println!("  {label:<9} {journal:>3} {}", round.line());
            rates.push(round.rate());
            gaps.push(ms(round.gap));
        }
    }
    let ratios: Vec<f64> = rates_on
        .iter()
        .zip(&rates_off)
        .map(|(a, b)| a / b)
        .collect();
    let (m_on, m_off) = (median(rates_on), median(rates_off));
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    println!(
        "  median: journal on {} /s, off {} /s: on/off {:.3} (rounds {lo:.3}-{hi:.3}; goal >= 0.95)",
        thousands(m_on),
        thousands(m_off),
        m_on / m_off
    );
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "  a guest's longest wait in a round, median (max): journal on {:.1} ms ({:.1}), \
         off {:.1} ms ({:.1})",
        median(gaps_on.clone()),
        max(&gaps_on),
        median(gaps_off.clone()),
        max(&gaps_off)
    );
    let snaps = snapshots(&on.daemon.log_text()).split_off(snaps_before);
    if !snaps.is_empty() {
        let times: Vec<f64> = snaps.iter().map(|&(_, t)| t).collect();
        let octets = snaps.iter().map(|&(o, _)| o).max().unwrap_or(0);
        println!(
            "  journal on: {} snapshots during the {:.1} s of load it got, {:.0} ms each \
             (median; {:.0}-{:.0}), of up to {} octets",
            snaps.len(),
            size.round.as_secs_f64() * size.rounds as f64,
            median(times.clone()),
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().copied().fold(0.0, f64::max),
            thousands(octets as f64)
        );
    }
    for (name, m) in [("on", &*on), ("off", &*off)] {
        let files = journal_files(&m.daemon.rundir);
        println!("  journal {name}: files {files:?}");
    }
}

/// One crash as measured.
struct Crash {
    /// Killed just after a snapshot (else just before one).
    after_snapshot: bool,
    killed: Instant,
    restarted: Instant,
    socket: Instant,
    end: Instant,
    daemon_ms: f64,
    journal: Vec<(String, u64)>,
    reconnect: Duration,
}

fn recovery(mut m: Machine, size: &Size) {
    let t = Instant::now();
    while m.guests.len() + 1 < size.guests {
        let tag = m.guests.len();
        m.guests.push(watched_guest(
            &m.ts,
            &m.connector,
            &mut m.dom0,
            WATCHES,
            tag,
        ));
    }
    let idle_n = size.connections - size.guests - 1;
    let mut idle = idle_sockets(&m.daemon, idle_n, WATCHES, m.domains, size.guests);
    let before = memreport(&mut m.dom0, m.dir.path());
    println!(
        "recovery: {} connections at each crash: {} guests over rings ({} busy writing and \
         reading back, 1 prober, {} idle with {WATCHES} watches each), {idle_n} idle sockets \
         with {WATCHES} watches each, dom0's (set up in {:.2} s; the {LOADERS} loaders are \
         closed); memreport: {before:?}",
        size.connections,
        size.guests,
        size.busy_guests,
        size.guests - size.busy_guests - 1,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let population = verify_population(&mut m.dom0, m.domains);
    println!(
        "  {population} population nodes read back in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let prober = Prober::start(m.probe.take().unwrap(), PROBE_NODE, AFTER_REPLIES);
    let (go, stop) = (
        Arc::new(Barrier::new(size.busy_guests + 1)),
        Arc::new(AtomicBool::new(false)),
    );
    let busy: Vec<Client<Guest>> = m.guests.drain(..size.busy_guests).collect();
    let busy = busy_guests(busy, &go, &stop);
    go.wait();
    std::thread::sleep(Duration::from_millis(500));

    let mut crashes = Vec::new();
    for k in 1..=size.kills {
        // The journal's two extremes, in turn: a snapshot and little else
        // (just after one), or as long as it gets (just before one).
        let after_snapshot = k % 2 == 1;
        let log = m.daemon.log.clone();
        let snaps = snapshots(&std::fs::read_to_string(&log).unwrap()).len();
        // A snapshot comes once the journal has grown past the limit and
        // twice the last snapshot (which the file begins with).
        let base = snapshots(&std::fs::read_to_string(&log).unwrap())
            .last()
            .map_or(0, |&(octets, _)| octets + 16);
        let full = (base + journal_limit().max(2 * base)).saturating_sub(384 << 10);
        let rec = xenstored_lite::shell::journal::path_in(&m.daemon.rundir);
        let timely = wait_at_most(size.journal_wait, || {
            if after_snapshot {
                snapshots(&std::fs::read_to_string(&log).unwrap()).len() > snaps
            } else {
                std::fs::metadata(&rec).map_or(0, |f| f.len()) >= full
            }
        });
        let journal = journal_files(&m.daemon.rundir);
        let (killed, restarted) = m.crash(k);
        let socket = socket_answers(&m.daemon.socket);
        wait_until("the daemon's crash recovery line", || {
            recovery_line(&m.daemon.log_text()).is_some()
        });
        prober.wait_more(AFTER_REPLIES);
        std::thread::sleep(STEADY); // what comes after the recovery
        let end = Instant::now();
        let (line, daemon_ms) = recovery_line(&m.daemon.log_text()).unwrap();
        println!("  crash {k}: {line}");
        for l in m.daemon.log_text().lines() {
            let l = l.trim();
            let snapshot = l.contains("snapshot of");
            if l != line
                && !snapshot
                && (l.contains("crash recovery") || l.contains("crash journal"))
            {
                println!("    log: {l}");
            }
        }

        // Everything is there, and the sockets come back.
        drop(idle);
        m.dom0 = m.daemon.client();
        let after = memreport(&mut m.dom0, m.dir.path());
        assert_eq!(
            after.nodes, before.nodes,
            "nodes after crash {k}: {after:?}"
        );
        assert_eq!(
            reply_text(&m.dom0.control(&["check"]).unwrap()).trim(),
            "OK"
        );
        let t = Instant::now();
        assert_eq!(verify_population(&mut m.dom0, m.domains), population);
        let verified = t.elapsed();
        let t = Instant::now();
        idle = idle_sockets(&m.daemon, idle_n, WATCHES, m.domains, size.guests);
        let reconnect = t.elapsed();
        let back = memreport(&mut m.dom0, m.dir.path());
        println!(
            "    after: memreport {after:?}; {population} nodes read back in {:.2} s; \
             {idle_n} sockets reconnected with their watches in {:.2} s: {back:?}",
            verified.as_secs_f64(),
            reconnect.as_secs_f64()
        );
        assert_eq!(back, before, "after crash {k} and the sockets' return");
        if !timely {
            println!(
                "    (the journal did not get there within {:?}: killed then)",
                size.journal_wait
            );
        }
        crashes.push(Crash {
            after_snapshot,
            killed,
            restarted,
            socket,
            end,
            daemon_ms,
            journal,
            reconnect,
        });
    }
    stop.store(true, SeqCst);
    let (busy, replies) = join_guests(busy);
    m.guests.extend(busy);
    assert_guests_kept(&mut m.guests);
    let (stamps, _) = prober.finish();
    println!(
        "  the {} busy guests got {replies} replies, each read back what it had written",
        size.busy_guests
    );

    let (mut gaps, mut longest) = (Vec::new(), Vec::new());
    for (k, c) in crashes.iter().enumerate() {
        // The gap across the crash: the last reply before the restart to
        // the first after; and the longest the prober saw from the kill to
        // STEADY after the recovery.
        let first = stamps.partition_point(|&t| t <= c.restarted);
        let (before, after) = (stamps[first - 1], stamps[first]);
        let (a, b) = longest_gap(&stamps, c.killed, c.end);
        gaps.push(ms(after - before));
        longest.push(ms(b - a));
        println!(
            "  crash {} ({} a snapshot): daemon's recovery {:>6.1} ms | restart to a guest's reply {:>6.1} ms, \
             to a new socket's {:>6.1} ms | a guest's gap across it {:>6.1} ms (kill to \
             restart {:.1} ms); longest to {} s after: {:.1} ms, from {:+.1} ms after the \
             restart | journal at the kill {:?} | sockets back in {:.2} s",
            k + 1,
            if c.after_snapshot { "after" } else { "before" },
            c.daemon_ms,
            ms(after - c.restarted),
            ms(c.socket.saturating_duration_since(c.restarted)),
            ms(after - before),
            ms(c.restarted - c.killed),
            STEADY.as_secs(),
            ms(b - a),
            ms(a.saturating_duration_since(c.restarted))
                - ms(c.restarted.saturating_duration_since(a)),
            c.journal,
            c.reconnect.as_secs_f64()
        );
    }
    for kind in [true, false] {
        let of: Vec<usize> = (0..crashes.len())
            .filter(|&k| crashes[k].after_snapshot == kind)
            .collect();
        if of.is_empty() {
            continue;
        }
        let pick = |v: &[f64]| median(of.iter().map(|&k| v[k]).collect());
        let daemon: Vec<f64> = crashes.iter().map(|c| c.daemon_ms).collect();
        println!(
            "  median of {} crashes {} a snapshot: daemon's recovery {:.1} ms, a guest's gap \
             across the crash {:.1} ms, longest gap {:.1} ms ({} nodes, {} connections; goal \
             <= 1 s)",
            of.len(),
            if kind { "after" } else { "before" },
            pick(&daemon),
            pick(&gaps),
            pick(&longest),
            before.nodes,
            size.connections
        );
    }
}

/// The journal length at which the journal-on daemon snapshots.
fn journal_limit() -> u64 {
    std::env::var("CRASH_JOURNAL_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(xenstored_lite::cli::JOURNAL_LIMIT)
}

/// Polls `cond` for at most `limit`; whether it came true.
fn wait_at_most(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut size = if quick { QUICK } else { FULL };
    size.nodes = env_or("CRASH_NODES", size.nodes);
    size.rounds = env_or("CRASH_ROUNDS", size.rounds).max(1);
    size.kills = env_or("CRASH_KILLS", size.kills).max(1);
    let base = PathBuf::from(std::env::var_os("CRASH_DIR").unwrap_or_else(|| "/dev/shm".into()));
    let tmpfs = nix::sys::statfs::statfs(&base)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    raise_fd_limit(); // 1,000 connections
    show_logs_on_panic();
    println!(
        "crash journal: {} in {} ({})",
        tests::bin("xenstored-lite").display(),
        base.display(),
        if tmpfs { "tmpfs" } else { "not a tmpfs" }
    );

    // CRASH_CALIBRATE=1: the machine called "on" runs without a journal
    // too, and only the throughput is measured: the noise floor of the
    // ratio on this machine.
    let calibrate = std::env::var("CRASH_CALIBRATE").as_deref() == Ok("1");
    let mut off = Machine::start("off", "off", &base, &size);
    let mut on = Machine::start("on", if calibrate { "off" } else { "on" }, &base, &size);
    throughput(&mut on, &mut off, &size);
    drop(off);
    if calibrate {
        println!("  (calibration: both machines ran --journal=off)");
        return;
    }
    recovery(on, &size);
}
