//! Hostile guests, issue 16 items 9 and 10, over real mock-xen rings
//! against the daemon binary: a guest flooding writes is held to the write
//! rate (XSA-206) while a bystander is served; a guest listing a 2 MB
//! directory again and again costs the daemon no more than a small one; a
//! guest rewriting what a dom0 transaction reads is paused until the
//! transaction commits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_xen::Toolstack;
use std::path::Path;
use std::process::Command;

use tests::{bin, create_guest, guest_client, wait_until, Daemon, MockXen};
use xenring::{Error as XsError, Perm, PermKind, XsErrno};

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // After the command name in parentheses: state is field 3, utime 14,
    // stime 15.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Stops the daemon with SIGTERM (it flushes its recording), then replays
/// the recording in `rec`: the throttled session gives the same bytes
/// again (the throttle runs on the engine's clock only).
fn stop_and_replay(daemon: &mut Daemon, rec: &Path) {
    let pid = daemon.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_until("the daemon to exit", || {
        daemon.proc.child.try_wait().unwrap().is_some()
    });
    let out = tests::output_within_limit(
        Command::new(bin("xenstored-lite"))
            .arg(format!("--replay={}", rec.display()))
            .env_remove("XENSTORED_PATH")
            .env_remove("XENSTORED_RUNDIR"),
        "xenstored-lite --replay",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all identical"),
        "replay: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Item 9: while a dom0 transaction is open, a guest writing as fast as
/// it can is held to its share of the write rate (C's semantics: delayed,
/// never failed), a bystander guest's requests complete meanwhile, and the
/// flood runs free again once no transaction is open.
#[test]
fn test_write_flood_is_held_to_the_rate_while_a_transaction_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    // 50 writes/s shared by the two guests (25 each), bursts of 10, no
    // reserve: small numbers, so that the test is short.
    let rec = dir.path().join("rec");
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "--rate-limit",
            "writes=50",
            "--rate-limit",
            "reserve=0",
            "--replay-record",
            rec.to_str().unwrap(),
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let attacker = create_guest(&ts, &mut dom0);
    let bystander = create_guest(&ts, &mut dom0);
    let tx = dom0.transaction_start().unwrap();
    dom0.read(tx, "/tool").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, written, connector) =
            (Arc::clone(&stop), Arc::clone(&written), connector.clone());
        std::thread::spawn(move || {
            let mut c = guest_client(&connector, &attacker);
            while !stop.load(SeqCst) {
                let n = written.load(SeqCst);
                // Every write succeeds: a throttled guest waits, it is not
                // refused.
                c.write(0, "data/flood", n.to_string().as_bytes()).unwrap();
                written.fetch_add(1, SeqCst);
            }
            c
        })
    };
    let started = Instant::now();
    let mut b = guest_client(&connector, &bystander);
    b.write(0, "data/mine", b"kept").unwrap();
    for _ in 0..300 {
        assert_eq!(b.read(0, "data/mine").unwrap(), b"kept");
    }
    // Give the flood a second of the clock at least.
    while started.elapsed() < Duration::from_secs(1) {
        assert_eq!(b.read(0, "data/mine").unwrap(), b"kept");
    }
    let made = written.load(SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    println!("the flood made {made} writes in {elapsed:.2} s");
    // Its burst, one write of overshoot, and 25 a second (half again for
    // rounding and the bystander's one write): without the limit this is
    // thousands.
    let allowed = 10.0 + 2.0 + 25.0 * elapsed * 1.5;
    assert!(
        (made as f64) <= allowed,
        "{made} writes in {elapsed:.2} s; at most {allowed:.0} allowed"
    );
    assert!(made >= 10, "the burst is served at once: {made}");
    assert!(
        daemon.log_text().contains(&format!(
            "write rate limit: domain {} is affected",
            attacker.info.domid
        )),
        "{}",
        daemon.log_text()
    );

    // No transaction open: writes cannot make one fail, and are not
    // limited (as C).
    dom0.transaction_end(tx, false).unwrap();
    let before = written.load(SeqCst);
    wait_until("the flood runs free again", || {
        written.load(SeqCst) >= before + 1000
    });
    stop.store(true, SeqCst);
    let mut c = flood.join().unwrap();
    assert_eq!(
        c.read(0, "data/flood").unwrap(),
        (written.load(SeqCst) - 1).to_string().as_bytes()
    );
    assert_eq!(b.read(0, "data/mine").unwrap(), b"kept");
    stop_and_replay(&mut daemon, &rec);
}

/// Item 9: a guest that writes below its rate, with a transaction open,
/// is never throttled (the daemon never says it is affected).
#[test]
fn test_guest_writing_below_the_rate_is_not_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let daemon = Daemon::start(dir.path(), &["--mock-xen", hv.socket.to_str().unwrap()]);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let guest = create_guest(&ts, &mut dom0);
    let tx = dom0.transaction_start().unwrap();
    let mut c = guest_client(&connector, &guest);
    // The default: 200 writes a second for the one guest, bursts of 10.
    // Bursts of 5 with 50 ms between them are 100 a second at most.
    let mut writing = Duration::ZERO;
    for round in 0..20 {
        let t = Instant::now();
        for i in 0..5 {
            c.write(0, &format!("data/k{i}"), round.to_string().as_bytes())
                .unwrap();
        }
        writing += t.elapsed();
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "100 paced guest writes with a transaction open: {:.1} us each",
        writing.as_secs_f64() * 1e6 / 100.0
    );
    dom0.transaction_end(tx, false).unwrap();
    assert_eq!(c.read(0, "data/k4").unwrap(), b"19");
    let log = daemon.log_text();
    assert!(!log.contains("write rate limit"), "{log}");
}

/// Item 9: DIRECTORY_PART of a 1,000-child, 2 MB directory costs the
/// daemon about what it costs on a 2-child one with the same 4 KB reply
/// (the listing is built once per generation of the node, not per
/// request), and the parts still add up to the whole listing. Measured as the daemon's own CPU time for the
/// same number of requests on each, so that a busy machine does not
/// matter.
#[test]
fn test_big_directory_costs_no_more_than_a_small_one() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let daemon = Daemon::start(dir.path(), &["--mock-xen", hv.socket.to_str().unwrap()]);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let guest = create_guest(&ts, &mut dom0);
    let d = guest.info.domid;
    let home = format!("/local/domain/{d}");
    let owner = [Perm::new(PermKind::None, d)];
    let mut names = Vec::new();
    for (dirname, n) in [("big", 1000), ("small", 2)] {
        dom0.mkdir(0, &format!("{home}/{dirname}")).unwrap();
        dom0.set_perms(0, &format!("{home}/{dirname}"), &owner)
            .unwrap();
        for i in 0..n {
            let name = format!("{i:04}{}", "n".repeat(1996));
            dom0.write(0, &format!("{home}/{dirname}/{name}"), b"")
                .unwrap();
            if dirname == "big" {
                names.push(name);
            }
        }
    }
    let mut c = guest_client(&connector, &guest);
    // Whole: the parts make up the listing, in creation order.
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let (_, mut part) = c.directory_part(0, "big", offset).unwrap();
        part.retain(|name| !name.is_empty());
        if part.is_empty() {
            break;
        }
        offset += part.iter().map(|n| n.len() + 1).sum::<usize>();
        got.extend(part);
    }
    assert_eq!(got, names);
    assert!(matches!(
        c.directory(0, "big"),
        Err(XsError::Xs(XsErrno::E2BIG))
    ));

    let listing = 1000 * 2001;
    let n = 3000;
    let cost =
        |c: &mut xenring::Client<mock_xen::Guest>, path: &str, offsets: &dyn Fn(usize) -> usize| {
            let before = cpu_ticks(daemon.pid());
            for i in 0..n {
                c.directory_part(0, path, offsets(i)).unwrap();
            }
            cpu_ticks(daemon.pid()) - before
        };
    let small = cost(&mut c, "small", &|_| 0);
    let big = cost(&mut c, "big", &|i| (i * 2001 * 7) % listing);
    println!(
        "{n} DIRECTORY_PART: daemon CPU {big} ticks on the 2 MB directory, {small} on the 4 KB one"
    );
    // Without the cache the big one costs ten times the small one and
    // more; allow twice, and a few ticks of granularity.
    assert!(
        big <= 2 * small + 5,
        "{n} DIRECTORY_PART: {big} ticks on the 2 MB directory, {small} on the 4 KB one"
    );
}

/// Item 10: a guest rewriting a node in a loop while a dom0 client runs a
/// read-modify-write transaction on it: the guest is paused after a few
/// conflicts it causes, the dom0 transaction commits within a bounded
/// number of retries (it failed on every one of 50 without), and the guest
/// makes progress again afterwards.
#[test]
fn test_dom0_transaction_commits_while_a_guest_rewrites_what_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    // The write rate limit off: the conflict credit alone is tested.
    let rec = dir.path().join("rec");
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "--rate-limit",
            "writes=0",
            "--replay-record",
            rec.to_str().unwrap(),
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let guest = create_guest(&ts, &mut dom0);
    let d = guest.info.domid;
    let node = format!("/local/domain/{d}/data/x");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, connector) =
            (Arc::clone(&stop), Arc::clone(&written), connector.clone());
        std::thread::spawn(move || {
            let mut c = guest_client(&connector, &guest);
            while !stop.load(SeqCst) {
                let n = written.load(SeqCst);
                c.write(0, "data/x", format!("guest {n}").as_bytes())
                    .unwrap();
                written.fetch_add(1, SeqCst);
            }
        })
    };
    wait_until("the guest writing", || written.load(SeqCst) >= 200);

    let mut attempts = 0;
    let committed = loop {
        attempts += 1;
        let tx = dom0.transaction_start().unwrap();
        let old = dom0.read(tx, &node).unwrap();
        let mut new = old.clone();
        new.extend_from_slice(b" +dom0");
        dom0.write(tx, &node, &new).unwrap();
        match dom0.transaction_end(tx, true) {
            Ok(()) => break Some(new),
            Err(XsError::Xs(XsErrno::EAGAIN)) if attempts < 50 => continue,
            Err(XsError::Xs(XsErrno::EAGAIN)) => break None,
            Err(e) => panic!("commit: {e}"),
        }
    };
    let at_commit = written.load(SeqCst);
    println!("dom0 committed at attempt {attempts}; the guest had written {at_commit} times");
    assert!(
        committed.is_some(),
        "50 of 50 dom0 commits failed with EAGAIN"
    );
    // Five conflicts pause it (the burst), and a paused guest cannot
    // cause another: a handful of retries.
    assert!(attempts <= 12, "{attempts} attempts");
    wait_until("the guest makes progress again", || {
        written.load(SeqCst) >= at_commit + 200
    });
    stop.store(true, SeqCst);
    writer.join().unwrap();
    // Five failed commits (the conflict burst) must have paused it; a
    // commit that got in between two of the guest's writes sooner proves
    // nothing about the pause (the engine's tests pin it exactly).
    let log = daemon.log_text();
    if attempts > 5 {
        assert!(
            log.contains(&format!("conflict rate limit: domain {d} paused")),
            "{log}"
        );
    }
    stop_and_replay(&mut daemon, &rec);
}

/// Item 9: while a guest is throttled the daemon sleeps until its wake-up
/// (no busy loop: it uses next to no CPU while the guest waits), then
/// serves it: every write completes.
#[test]
fn test_throttled_guest_waits_without_the_daemon_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    // One write a second, bursts of one: each write after the first
    // waits about a second.
    let daemon = Daemon::start(
        dir.path(),
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "--rate-limit",
            "writes=1",
            "--rate-limit",
            "burst=1",
            "--rate-limit",
            "reserve=0",
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let guest = create_guest(&ts, &mut dom0);
    let tx = dom0.transaction_start().unwrap();
    let mut c = guest_client(&connector, &guest);
    c.write(0, "data/k", b"0").unwrap();
    c.write(0, "data/k", b"1").unwrap();
    let before = cpu_ticks(daemon.pid());
    let started = Instant::now();
    for i in 2..5 {
        c.write(0, "data/k", i.to_string().as_bytes()).unwrap();
    }
    let waited = started.elapsed();
    let used = cpu_ticks(daemon.pid()) - before;
    println!("3 throttled writes: waited {waited:?}, the daemon used {used} ticks");
    // A busy loop would use all of the wait (100 ticks a second); allow a
    // tenth of it, and a few ticks of granularity.
    let ticks = u64::try_from(waited.as_millis() / 10).unwrap_or(u64::MAX);
    assert!(
        used <= ticks / 10 + 5,
        "{used} ticks of CPU in {waited:?} of waiting"
    );
    assert_eq!(c.read(0, "data/k").unwrap(), b"4");
    dom0.transaction_end(tx, false).unwrap();
}
