//! Live-update blackout with C xenstored (prints figures; not a timed
//! test): xenstored-lite → C 4.17, C → C and C → xenstored-lite, one after
//! the other in one run, on the same store.
//!
//! `cargo bench -p tests --bench live_update_c` starts `mock-xen` and
//! `xenstored-lite --mock-xen` with the project's shim preloaded (inert for
//! xenstored-lite; it lets Debian's C xenstored run without a hypervisor),
//! loads 120,000 nodes as a toolstack writes them (4 pipelined
//! connections; dom0 owns them all: the domains have no rings here, and C
//! 4.17 cannot take a node owned by a domain it does not know), opens 1,000 socket connections holding 10 watches each
//! (10,000 watches; sockets only: C under the shim serves no guest ring),
//! then runs the three updates while a prober connection issues READs
//! back to back and timestamps every reply. An update's blackout is the
//! longest gap between two consecutive replies around it. C → C is C
//! 4.17's own live update: the reference the other two are measured
//! against. Without `--bench` (as `cargo test --all-targets` runs it) it
//! does the same at a small size. Needs `/usr/lib/xen-4.17/bin/xenstored`
//! (xen-utils-4.17) and a C compiler for the shim; without them it says
//! why and does nothing.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use tests::c_daemon::{build_shim, C_XENSTORED};
use tests::{live_update, Daemon, LiveUpdateOutcome, MockXen};

/// The shared modules this bench uses (no guest rings under C).
mod common {
    pub mod load;
    pub mod probe;
}
use common::load::{idle_sockets, load_store, raise_fd_limit, FIRST_DOMID};
use common::probe::{longest_gap, Prober};

/// What to set up.
struct Size {
    nodes: usize,
    sockets: usize,
    watches_per_conn: usize,
}

const FULL: Size = Size {
    nodes: 120_000,
    sockets: 1_000,
    watches_per_conn: 10,
};

const QUICK: Size = Size {
    nodes: 2_000,
    sockets: 20,
    watches_per_conn: 10,
};

/// Replies the prober must get from the new process before the next
/// update.
const AFTER_REPLIES: usize = 2_000;

fn exe(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut size = if quick { QUICK } else { FULL };
    if let Some(n) = std::env::var("LU_C_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        size.nodes = n; // a smaller or larger store than the figure's
    }
    if !Path::new(C_XENSTORED).exists() {
        println!("live update with C: skipped: {C_XENSTORED} is not installed (xen-utils-4.17)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shim = match build_shim(&dir.path().join("shim")) {
        Ok(s) => s,
        Err(e) => {
            println!("live update with C: skipped: {e}");
            return;
        }
    };
    raise_fd_limit();

    let hv = MockXen::start(dir.path());
    let mock = hv.socket.to_str().unwrap().to_string();
    let env: [(&str, &OsStr); 1] = [("LD_PRELOAD", shim.as_os_str())];
    let daemon = Daemon::start_env(dir.path(), &["--mock-xen", &mock], &env);
    let pid = daemon.pid();
    let lite = tests::bin("xenstored-lite");
    println!("live update with C: {} and {C_XENSTORED}", lite.display());

    let domains = load_store(&daemon, size.nodes, false);
    let t = Instant::now();
    let mut idle = idle_sockets(&daemon, size.sockets, size.watches_per_conn, domains, 0);
    println!(
        "  {} socket connections with {} watches, in {:.2} s",
        idle.len(),
        idle.len() * size.watches_per_conn,
        t.elapsed().as_secs_f64()
    );
    let mut dom0 = daemon.client();
    let listing_before = daemon.tool("xenstore-ls", &["-f", "/"]);
    assert!(listing_before.status.success(), "{listing_before:?}");
    let lines_before = listing_before.stdout.split(|&b| b == b'\n').count();

    let prober = Prober::start(
        daemon.client(),
        &format!("/local/domain/{FIRST_DOMID}/name"),
        AFTER_REPLIES,
    );
    let mut control = daemon.client();
    // C needs its "no fork" option on the command line it is exec'd with;
    // xenstored-lite going back is told where mock-xen is.
    let back = format!("-N --mock-xen {mock}");
    let steps: [(&str, &Path, Option<&str>); 3] = [
        ("lite -> C", Path::new(C_XENSTORED), None),
        ("C -> C", Path::new(C_XENSTORED), Some("-N")),
        ("C -> lite", &lite, Some(&back)),
    ];
    let mut windows = Vec::new();
    for (name, binary, cmdline) in steps {
        let start = Instant::now();
        let outcome = live_update(&mut control, binary, cmdline, false).unwrap();
        let ok = Instant::now();
        assert_eq!(
            outcome,
            LiveUpdateOutcome::Done,
            "{name}: {}",
            daemon.log_text()
        );
        assert_eq!(daemon.pid(), pid, "{name}: the same process");
        tests::wait_until("the new binary in the daemon's process", || {
            exe(pid) == binary
        });
        prober.wait_more(AFTER_REPLIES);
        windows.push((name, start, ok, Instant::now()));
    }
    let (stamps, _) = prober.finish();

    let mut reference = None;
    for &(name, start, ok, end) in &windows {
        let (a, b) = longest_gap(&stamps, start, end);
        let blackout = b - a;
        let command = ok - start;
        if name == "C -> C" {
            reference = Some((blackout, command));
        }
        windows_line(name, blackout, command);
    }
    if let Some((rb, rc)) = reference {
        for &(name, start, ok, end) in &windows {
            let (a, b) = longest_gap(&stamps, start, end);
            println!(
                "  {name:>9} / C -> C: blackout {:.2}x, command {:.2}x",
                (b - a).as_secs_f64() / rb.as_secs_f64(),
                (ok - start).as_secs_f64() / rc.as_secs_f64()
            );
        }
    }

    // Where the time went, by the daemons' own words.
    for line in daemon.log_text().lines() {
        if line.contains("live-update: wrote") || line.contains("live-update: restored") {
            println!("  log: {}", line.trim());
        }
    }

    // Back on xenstored-lite, with everything there.
    let listing_after = daemon.tool("xenstore-ls", &["-f", "/"]);
    assert!(listing_after.status.success(), "{listing_after:?}");
    assert_eq!(
        listing_after.stdout.split(|&b| b == b'\n').count(),
        lines_before,
        "the same store after the three updates"
    );
    assert_eq!(
        tests::reply_text(&dom0.control(&["check"]).unwrap()).trim(),
        "OK"
    );
    for c in idle.iter_mut().take(10) {
        c.read(0, "/local/domain/0").unwrap();
    }
}

fn windows_line(name: &str, blackout: Duration, command: Duration) {
    println!(
        "  {name:>9}: blackout {:>9.1} ms | command (-f to OK) {:>9.1} ms",
        blackout.as_secs_f64() * 1e3,
        command.as_secs_f64() * 1e3
    );
}
