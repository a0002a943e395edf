//! Live-update blackout benchmark (prints figures; not a timed test).
//!
//! `cargo bench -p tests --bench live_update` builds the release binaries,
//! starts `mock-xen --socket` and `xenstored-lite --mock-xen`, loads
//! 120,000 nodes (the paths a toolstack writes for about 1,600 domains:
//! home, frontend and backend devices, `/vm`, `/libxl`; values 10-40
//! bytes) over 4 pipelined connections, opens 1,000 connections (990 idle
//! sockets and 10 guests over rings) holding 10 watches each, then live-
//! updates the daemon to the same binary 5 times while a prober connection
//! issues READs back to back and timestamps every reply. The blackout of
//! an update is the longest gap between two consecutive replies around it:
//! the last reply of the old process to the first of the new. Without
//! `--bench` (as `cargo test --all-targets` runs it) it does the same at a
//! small size, once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_xen::Toolstack;
use tests::{
    create_guest, guest_client, live_update, wait_until, Daemon, LiveUpdateOutcome,
    LiveUpdateRecord, MockXen, LIMIT,
};
use xenring::codec::build_path_value;
use xenring::{Client, MsgType, Perm, PermKind};

#[path = "../../xenstored-lite/benches/common/population.rs"]
mod population;
use population::{domain_nodes, COMMON, FIRST_DOMID};

/// What to set up.
struct Size {
    nodes: usize,
    idle_sockets: usize,
    guests: usize,
    watches_per_conn: usize,
    updates: usize,
}

const FULL: Size = Size {
    nodes: 120_000,
    idle_sockets: 990,
    guests: 10,
    watches_per_conn: 10,
    updates: 5,
};

const QUICK: Size = Size {
    nodes: 2_000,
    idle_sockets: 20,
    guests: 2,
    watches_per_conn: 10,
    updates: 1,
};

/// Connections loading the store.
const LOADERS: u32 = 4;
/// Requests in flight per loading connection.
const WINDOW: usize = 128;
/// Replies the prober must get from the new process before the next
/// update.
const AFTER_REPLIES: usize = 2_000;

/// Writes domains `FIRST_DOMID..FIRST_DOMID + domains` over `LOADERS`
/// connections, `WINDOW` requests in flight on each; returns the nodes
/// written.
fn populate(daemon: &Daemon, domains: u32) -> usize {
    let mut dom0 = daemon.client();
    for p in COMMON {
        dom0.write(0, p, b"").unwrap();
    }
    let written = Arc::new(AtomicUsize::new(COMMON.len()));
    let loaders: Vec<_> = (0..LOADERS)
        .map(|l| {
            let mut c = daemon.client();
            let written = Arc::clone(&written);
            std::thread::spawn(move || {
                let mut in_flight = VecDeque::new();
                let mut n = 0;
                let wait = |c: &mut Client<_>, in_flight: &mut VecDeque<u32>| {
                    let id = in_flight.pop_front().unwrap();
                    c.wait_reply(id).unwrap();
                };
                for d in (FIRST_DOMID..FIRST_DOMID + domains).filter(|d| d % LOADERS == l) {
                    for (i, (path, v)) in domain_nodes(d).into_iter().enumerate() {
                        if in_flight.len() == WINDOW {
                            wait(&mut c, &mut in_flight);
                        }
                        let payload = build_path_value(path.as_bytes(), v.as_bytes());
                        in_flight.push_back(c.submit(MsgType::Write, 0, &payload).unwrap());
                        n += 1;
                        if i == 0 {
                            // The home: the domain's own, dom0 may read it
                            // (what its children inherit).
                            let domid = u16::try_from(d).unwrap();
                            let mut payload = xenring::codec::build_args(&[path.as_bytes()]);
                            payload.extend(xenring::perms::format_perm_list(&[
                                Perm::new(PermKind::None, domid),
                                Perm::new(PermKind::Read, 0),
                            ]));
                            if in_flight.len() == WINDOW {
                                wait(&mut c, &mut in_flight);
                            }
                            in_flight.push_back(c.submit(MsgType::SetPerms, 0, &payload).unwrap());
                        }
                    }
                }
                while !in_flight.is_empty() {
                    wait(&mut c, &mut in_flight);
                }
                written.fetch_add(n, SeqCst);
            })
        })
        .collect();
    for l in loaders {
        l.join().unwrap();
    }
    written.load(SeqCst)
}

/// The watches connection `i` holds (absolute paths for sockets).
fn watch_paths(i: usize, n: usize, domains: u32) -> Vec<String> {
    (0..n)
        .map(|k| {
            let d = FIRST_DOMID + u32::try_from((i * n + k) % domains as usize).unwrap();
            match k % 5 {
                0 => format!("/local/domain/{d}/device/vbd/51712/state"),
                1 => format!("/local/domain/{d}/device/vif/0/state"),
                2 => format!("/local/domain/0/backend/vbd/{d}/51712/state"),
                3 => format!("/local/domain/{d}/control/shutdown"),
                _ => format!("/local/domain/0/backend/vif/{d}/0"),
            }
        })
        .collect()
}

/// Registers `paths` as watches on `c`, pipelined.
fn add_watches<T: std::io::Read + std::io::Write>(c: &mut Client<T>, paths: &[String], tag: usize) {
    let ids: Vec<u32> = paths
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let token = format!("w{tag}-{k}");
            let payload = xenring::codec::build_args(&[p.as_bytes(), token.as_bytes()]);
            c.submit(MsgType::Watch, 0, &payload).unwrap()
        })
        .collect();
    for id in ids {
        c.wait_reply(id).unwrap();
    }
}

/// One update as measured.
struct Measured {
    blackout: Duration,
    /// From `-s` sent to the last reply of the old process (dry run and
    /// preparation, while the old process still serves).
    before: Duration,
    /// From the OK read to the first reply of the new process (negative:
    /// the prober was answered first).
    ok_to_first: f64,
    log: LiveUpdateRecord,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let size = if quick { QUICK } else { FULL };
    // The binaries of this very tree (in release under `cargo bench`):
    // `tests::bin` builds them before the first use.
    let per_domain = domain_nodes(FIRST_DOMID).len();
    let domains = u32::try_from((size.nodes - COMMON.len()).div_ceil(per_domain)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let mut daemon = Daemon::start(dir.path(), &["--mock-xen", hv.socket.to_str().unwrap()]);
    let pid = daemon.pid();
    let binary = tests::bin("xenstored-lite");
    println!("live update: {}", binary.display());

    let t = Instant::now();
    let written = populate(&daemon, domains);
    println!(
        "  loaded {written} nodes ({domains} domains x {per_domain}) in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // 1,000 connections with 10 watches each.
    let t = Instant::now();
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let mut guests = Vec::new();
    for g in 0..size.guests {
        let rec = create_guest(&ts, &mut dom0);
        let mut c = guest_client(&connector, &rec);
        c.write(0, "device/vbd/51712/state", b"4").unwrap();
        let paths: Vec<String> = (0..size.watches_per_conn)
            .map(|k| match k {
                0 => "control/shutdown".to_string(),
                1 => "device".to_string(),
                _ => format!("device/vbd/{}/state", 51712 + 16 * k),
            })
            .collect();
        add_watches(&mut c, &paths, g);
        guests.push(c);
    }
    let mut idle = Vec::new();
    for i in 0..size.idle_sockets {
        let mut c = daemon.client();
        add_watches(
            &mut c,
            &watch_paths(i, size.watches_per_conn, domains),
            size.guests + i,
        );
        idle.push(c);
    }
    // The prober and the updater are connections too.
    let conns = guests.len() + idle.len() + 2 + LOADERS as usize;
    let watches = (guests.len() + idle.len()) * size.watches_per_conn;
    println!(
        "  {conns} connections ({} idle sockets, {} guests over rings, the prober, the \
         updater, {LOADERS} loaders), {watches} watches, in {:.2} s",
        idle.len(),
        guests.len(),
        t.elapsed().as_secs_f64()
    );

    // The prober: READs back to back, every reply timestamped.
    let replies = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let mut c = daemon.client();
        c.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
        let (replies, stop) = (Arc::clone(&replies), Arc::clone(&stop));
        let path = format!("/local/domain/{FIRST_DOMID}/name");
        std::thread::spawn(move || {
            let want = c.read(0, &path).unwrap();
            let mut stamps = Vec::with_capacity(1 << 20);
            while !stop.load(SeqCst) {
                assert_eq!(c.read(0, &path).unwrap(), want);
                stamps.push(Instant::now());
                replies.fetch_add(1, SeqCst);
            }
            stamps
        })
    };
    wait_until("the prober's first replies", || {
        replies.load(SeqCst) >= AFTER_REPLIES
    });

    let mut control = daemon.client();
    control.get_ref().set_read_timeout(Some(LIMIT)).unwrap();
    let mut windows = Vec::new();
    for k in 1..=size.updates {
        let start = Instant::now();
        let outcome = live_update(&mut control, &binary, None, false).unwrap();
        let ok = Instant::now();
        assert_eq!(outcome, LiveUpdateOutcome::Done, "{}", daemon.log_text());
        assert!(daemon.running());
        assert_eq!(daemon.pid(), pid);
        let after = replies.load(SeqCst) + AFTER_REPLIES;
        wait_until("the prober's replies from the new process", || {
            replies.load(SeqCst) >= after
        });
        wait_until("the restore's log line", || {
            daemon.live_updates().restored == k
        });
        windows.push((start, ok, Instant::now()));
    }
    stop.store(true, SeqCst);
    let stamps = prober.join().unwrap();
    let log = daemon.live_updates();

    let mut results = Vec::new();
    for (k, &(start, ok, end)) in windows.iter().enumerate() {
        // Consecutive replies around the update: the longest gap.
        let (a, b) = stamps
            .windows(2)
            .filter(|w| w[1] > start && w[0] < end)
            .map(|w| (w[0], w[1]))
            .max_by_key(|&(a, b)| b - a)
            .expect("replies around the update");
        results.push(Measured {
            blackout: b - a,
            before: a.saturating_duration_since(start),
            ok_to_first: ms(b.saturating_duration_since(ok)) - ms(ok.saturating_duration_since(b)),
            log: log.updates[k].clone(),
        });
    }
    for (k, m) in results.iter().enumerate() {
        println!(
            "  update {}: blackout {:>7.1} ms | -s to last old reply {:>6.1} ms, OK to first \
             new reply {:>+5.1} ms | stream {} bytes written in {} ms, {} nodes restored in {} ms",
            k + 1,
            ms(m.blackout),
            ms(m.before),
            m.ok_to_first,
            m.log.stream_bytes,
            m.log.write_ms,
            m.log
                .restored_nodes
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            m.log.restore_ms.unwrap_or(f64::NAN)
        );
    }
    let mut blackouts: Vec<Duration> = results.iter().map(|m| m.blackout).collect();
    blackouts.sort();
    let median = blackouts[blackouts.len() / 2];
    let max = blackouts[blackouts.len() - 1];
    println!(
        "  blackout over {} updates: median {:.1} ms, max {:.1} ms; stream {} bytes \
         (C xenstored: 11 s for 120,000 nodes; goal <= 1.1 s)",
        results.len(),
        ms(median),
        ms(max),
        results[0].log.stream_bytes
    );

    // Everyone is still there.
    assert_eq!(
        tests::reply_text(&dom0.control(&["check"]).unwrap()).trim(),
        "OK"
    );
    for c in &mut guests {
        assert_eq!(c.read(0, "device/vbd/51712/state").unwrap(), b"4");
    }
    for c in idle.iter_mut().take(10) {
        c.read(0, "/local/domain/0").unwrap();
    }
}
