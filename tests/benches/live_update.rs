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
//! small size, once. `LU_BENCH_NODES=N` sets the number of nodes;
//! `LU_BENCH_LOG=1` prints the daemon's live-update log lines;
//! `LU_BENCH_JOURNAL=1` runs both daemons with the crash journal on.

use std::time::{Duration, Instant};

use mock_xen::Toolstack;
use tests::{live_update, wait_until, Daemon, LiveUpdateOutcome, LiveUpdateRecord, MockXen, LIMIT};

mod common;
use common::load::{idle_sockets, load_store, raise_fd_limit, FIRST_DOMID, LOADERS};
use common::probe::{longest_gap, Prober};
use common::rings::{assert_guests_kept, watched_guest};

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

/// Replies the prober must get from the new process before the next
/// update.
const AFTER_REPLIES: usize = 2_000;

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
    let mut size = if quick { QUICK } else { FULL };
    // `LU_BENCH_NODES=N` loads N nodes instead (0: connections and watches
    // alone; 1000000 for the second figure).
    if let Some(n) = std::env::var("LU_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        size.nodes = n;
    }
    // The binaries of this very tree (in release under `cargo bench`):
    // `tests::bin` builds them before the first use.
    raise_fd_limit(); // 1,000 connections
                      // The pre-copy hand-over, then the classic one (XSL_LU_PRECOPY=0) as
                      // its reference, in the same run.
    let precopy = scenario(&size, "pre-copy", &[]);
    let classic = scenario(&size, "classic", &[("XSL_LU_PRECOPY", "0")]);
    println!(
        "  pre-copy / classic blackout (medians): {:.1} / {:.1} ms = {:.3}x",
        ms(precopy),
        ms(classic),
        precopy.as_secs_f64() / classic.as_secs_f64()
    );
}

/// One daemon loaded as `size` says, updated `size.updates` times with
/// `env` in its environment; returns the median blackout.
fn scenario(size: &Size, label: &str, env: &[(&str, &str)]) -> Duration {
    let env: Vec<(&str, std::ffi::OsString)> = env
        .iter()
        .map(|&(k, v)| (k, std::ffi::OsString::from(v)))
        .collect();
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let mut args = vec!["--mock-xen", hv.socket.to_str().unwrap()];
    if std::env::var_os("LU_BENCH_JOURNAL").is_some() {
        // The crash journal on (in the test directory), as on a host
        // whose run directory is a tmpfs.
        args.push("--journal=on");
    }
    let mut daemon = Daemon::start_env(dir.path(), &args, &env);
    let pid = daemon.pid();
    let binary = tests::bin("xenstored-lite");
    println!("live update ({label}): {}", binary.display());

    let domains = load_store(&daemon, size.nodes, true);

    // 1,000 connections with 10 watches each.
    let t = Instant::now();
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let mut guests = Vec::new();
    for g in 0..size.guests {
        guests.push(watched_guest(
            &ts,
            &connector,
            &mut dom0,
            size.watches_per_conn,
            g,
        ));
    }
    let mut idle = idle_sockets(
        &daemon,
        size.idle_sockets,
        size.watches_per_conn,
        domains,
        size.guests,
    );
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
    let prober = Prober::start(
        daemon.client(),
        &format!("/local/domain/{FIRST_DOMID}/name"),
        AFTER_REPLIES,
    );

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
        prober.wait_more(AFTER_REPLIES);
        wait_until("the restore's log line", || {
            daemon.live_updates().restored == k
        });
        windows.push((start, ok, Instant::now()));
    }
    let (stamps, _) = prober.finish();
    let log = daemon.live_updates();
    if std::env::var_os("LU_BENCH_LOG").is_some() {
        // The daemon's own account of each update, with its time stamps.
        for line in daemon
            .log_text()
            .lines()
            .filter(|l| l.contains("live-update"))
        {
            println!("  | {line}");
        }
    }

    let mut results = Vec::new();
    for (k, &(start, ok, end)) in windows.iter().enumerate() {
        // Consecutive replies around the update: the longest gap.
        let (a, b) = longest_gap(&stamps, start, end);
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
    assert_eq!(
        log.updates.iter().filter(|u| u.precopy).count(),
        if env.is_empty() { results.len() } else { 0 },
        "every update of this scenario is a {label} one"
    );
    let max = blackouts[blackouts.len() - 1];
    println!(
        "  blackout over {} updates: median {:.1} ms, max {:.1} ms; stream {} bytes \
         (C xenstored: 11 s for 120,000 nodes; goal <= 50 ms)",
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
    assert_guests_kept(&mut guests);
    for c in idle.iter_mut().take(10) {
        c.read(0, "/local/domain/0").unwrap();
    }
    median
}
