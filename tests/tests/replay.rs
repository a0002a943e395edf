//! Record and replay: sessions recorded on mock-xen across real
//! processes — guests over rings, socket clients, Debian's xenstore-utils,
//! a live update in the middle — replay with no mock-xen and no socket,
//! byte for byte; a changed reply is caught where it happens.

use std::path::Path;
use std::process::{Command, Output};

use mock_xen::{DomainRecord, Guest, Toolstack};
use tests::{bin, create_guest, guest_client, have, wait_until, Daemon, MockXen};
use xenring::{Client, Error as XsError, XsErrno};
use xenstored_lite::replay::format::{BoundaryEvent, Next, Reader};

/// A daemon on the embedded mock-xen recording into `rec`.
fn recording_daemon(dir: &Path, rec: &Path) -> Daemon {
    Daemon::start(
        dir,
        &[
            "--platform",
            "mock",
            "--replay-record",
            rec.to_str().unwrap(),
        ],
    )
}

/// Stops the daemon with SIGTERM (it flushes its recording) and waits.
fn stop(daemon: &mut Daemon) {
    let pid = daemon.proc.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    wait_until("the daemon to exit", || {
        daemon.proc.child.try_wait().unwrap().is_some()
    });
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("xenstored.log")).unwrap_or_default()
}

/// `(events, requests)` summed over the "recording: ..." lines each daemon
/// process logs.
fn recorded_totals(log: &str) -> (u64, u64) {
    let mut events = 0;
    let mut requests = 0;
    for line in log.lines() {
        let Some(rest) = line.split("recording: ").nth(1) else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        events += words[0].parse::<u64>().unwrap();
        requests += words[4].parse::<u64>().unwrap();
    }
    (events, requests)
}

fn replay(rec: &Path, extra: &[&str]) -> Output {
    tests::output_within_limit(
        Command::new(bin("xenstored-lite"))
            .arg(format!("--replay={}", rec.display()))
            .args(extra)
            .env_remove("XENSTORED_PATH")
            .env_remove("XENSTORED_RUNDIR"),
        "xenstored-lite --replay",
    )
}

/// `(events, requests)` from the replay's summary line.
fn replayed_totals(out: &Output) -> (u64, u64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("replayed "))
        .unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

#[test]
fn test_recorded_session_with_live_update_replays_without_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let hv = MockXen::start(dir.path());
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            "--mock-xen",
            hv.socket.to_str().unwrap(),
            "--replay-record",
            rec.to_str().unwrap(),
            "-w",
            "watch-event=1",
        ],
    );
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    dom0.watch("@releaseDomain", "rel").unwrap();
    assert_eq!(dom0.next_watch_event().unwrap().path, "@releaseDomain");

    let recs: Vec<DomainRecord> = (0..3).map(|_| create_guest(&ts, &mut dom0)).collect();
    let mut guests: Vec<Client<Guest>> = recs.iter().map(|r| guest_client(&connector, r)).collect();
    for (g, r) in guests.iter_mut().zip(&recs) {
        g.write(0, "data/a", b"1").unwrap();
        assert_eq!(g.read(0, "data/a").unwrap(), b"1");
        g.watch("data", "w").unwrap();
        assert_eq!(g.next_watch_event().unwrap().path, "data");
        // A watch that fires: dom0 writes into the guest's home.
        dom0.write(0, &format!("/local/domain/{}/data/b", r.info.domid), b"2")
            .unwrap();
        assert_eq!(g.next_watch_event().unwrap().path, "data/b");
    }

    // A transaction conflict between two socket clients.
    let mut a = daemon.client();
    let mut b = daemon.client();
    a.write(0, "/t/x", b"1").unwrap();
    let tx = a.transaction_start().unwrap();
    assert_eq!(a.read(tx, "/t/x").unwrap(), b"1");
    b.write(0, "/t/x", b"2").unwrap();
    a.write(tx, "/t/y", b"3").unwrap();
    assert!(matches!(
        a.transaction_end(tx, true),
        Err(XsError::Xs(XsErrno::EAGAIN))
    ));

    // Watch events that expire: guest 2 stops reading its ring while dom0
    // makes 200 events for it; those queued past the ring expire after 1 s.
    let g2 = recs[2].info.domid;
    for i in 0..200 {
        dom0.write(0, &format!("/local/domain/{g2}/data/e{i}"), b"x")
            .unwrap();
    }
    wait_until("watch events to expire", || {
        log(dir.path()).contains("not read within 1000 ms dropped")
    });
    // What is left (the ring's worth) still arrives.
    assert_eq!(guests[2].read(0, "data/a").unwrap(), b"1");
    let mut got = 0;
    while guests[2].queued_watch_event().is_some() {
        got += 1;
    }
    assert!(got > 0 && got < 200, "{got} of 200 events delivered");

    // A live update in the middle.
    let new = bin("xenstored-lite");
    assert_eq!(
        dom0.control(&["live-update", "-f", new.to_str().unwrap()])
            .unwrap(),
        b"OK\0"
    );
    assert_eq!(
        dom0.control(&["live-update", "-s", "-t", "10"]).unwrap(),
        b"OK\0"
    );
    for (g, r) in guests.iter_mut().zip(&recs).take(2) {
        g.write(0, "data/after", b"4").unwrap();
        assert_eq!(g.next_watch_event().unwrap().path, "data/after");
        dom0.write(0, &format!("/local/domain/{}/data/c", r.info.domid), b"5")
            .unwrap();
        assert_eq!(g.next_watch_event().unwrap().path, "data/c");
    }
    assert_eq!(b.read(0, "/t/x").unwrap(), b"2");

    // A domain dies.
    let dead = recs[1].info.domid;
    ts.destroy(dead).unwrap();
    let ev = dom0.next_watch_event().unwrap();
    assert_eq!(ev.path, "@releaseDomain");
    wait_until("the dead domain's home to go", || {
        matches!(
            dom0.read(0, &format!("/local/domain/{dead}")),
            Err(XsError::Xs(XsErrno::ENOENT))
        )
    });

    stop(&mut daemon);
    drop(hv); // replay needs no hypervisor
    let log = log(dir.path());
    let (events, requests) = recorded_totals(&log);
    assert!(requests > 200, "{log}");

    let out = replay(&rec, &[]);
    assert!(
        out.status.success(),
        "replay failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("all identical"), "{stdout}");
    assert!(stdout.contains("from 2 daemon process(es)"), "{stdout}");
    assert_eq!(replayed_totals(&out), (events, requests), "{stdout}\n{log}");

    let fast = replay(&rec, &["--no-verify"]);
    assert!(fast.status.success());
    assert_eq!(replayed_totals(&fast), (events, requests));
}

#[test]
fn test_changed_reply_is_reported_at_its_event_with_context() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut daemon = recording_daemon(dir.path(), &rec);
    let mut c = daemon.client();
    for i in 1..=5 {
        c.write(0, &format!("/k/{i}"), format!("v{i}").as_bytes())
            .unwrap();
    }
    assert_eq!(c.read(0, "/k/3").unwrap(), b"v3");
    drop(c);
    stop(&mut daemon);

    let unchanged = replay(&rec, &[]);
    assert!(unchanged.status.success());

    // The 4th reply of the session is the one to `write /k/4`.
    let out = replay(&rec, &["--test-alter-reply", "4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("(socket)"), "{err}");
    assert!(
        err.contains(r#"request:  XS_WRITE req 4 tx 0 ["/k/4", "v4"]"#),
        "{err}"
    );
    assert!(
        err.contains(r#"expected: XS_WRITE req 4 tx 0 ["OK"]"#),
        "{err}"
    );
    assert!(
        err.contains(r#"actual:   XS_WRITE req 4 tx 0 ["oK"]"#),
        "{err}"
    );

    // ... and the event it names is the Output carrying that reply.
    let event: u64 = err
        .split("divergence at event ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .unwrap()
        .parse()
        .unwrap();
    let data = std::fs::read(rec.join("xenstored-lite.rec")).unwrap();
    let mut reader = Reader::new(&data).unwrap();
    let mut found = None;
    while let Next::Event(e) = reader.next_event().unwrap() {
        if reader.events_read() - 1 == event {
            found = Some(e);
            break;
        }
    }
    match found {
        Some(BoundaryEvent::Output { bytes, .. }) => {
            assert_eq!(&bytes[16..], b"OK\0");
            assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 4);
        }
        other => panic!("event {event} is {other:?}"),
    }
}

#[test]
fn test_xenstore_utils_session_replays_without_divergence() {
    for tool in [
        "xenstore-write",
        "xenstore-read",
        "xenstore-ls",
        "xenstore-rm",
        "xenstore-chmod",
        "xenstore-exists",
        "xenstore-list",
    ] {
        if !have(tool) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut daemon = recording_daemon(dir.path(), &rec);
    let ok = |o: Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(daemon.tool("xenstore-write", &["/vm/a", "1", "/vm/b", "2"]));
    assert_eq!(ok(daemon.tool("xenstore-read", &["/vm/a"])), "1\n");
    ok(daemon.tool("xenstore-chmod", &["/vm/a", "n0", "r5"]));
    assert!(ok(daemon.tool("xenstore-ls", &["-p", "/vm"])).contains("a = \"1\""));
    ok(daemon.tool("xenstore-exists", &["/vm/b"]));
    assert_eq!(ok(daemon.tool("xenstore-list", &["/vm"])), "a\nb\n");
    ok(daemon.tool("xenstore-rm", &["/vm/b"]));
    assert!(!daemon.tool("xenstore-exists", &["/vm/b"]).status.success());
    stop(&mut daemon);

    let (events, requests) = recorded_totals(&log(dir.path()));
    let out = replay(&rec, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replayed_totals(&out), (events, requests));
    assert!(requests >= 8);
}

#[test]
fn test_truncated_recording_replays_to_its_last_whole_event() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut daemon = recording_daemon(dir.path(), &rec);
    let mut c = daemon.client();
    for i in 0..20 {
        c.write(0, &format!("/k/{i}"), b"v").unwrap();
    }
    drop(c);
    stop(&mut daemon);
    let file = rec.join("xenstored-lite.rec");
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 3).unwrap();
    let out = replay(&rec, &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stops inside an event"), "{stdout}");
}

#[test]
fn test_recording_begins_on_a_running_daemon_through_a_live_update() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let hv = MockXen::start(dir.path());
    let sock = hv.socket.to_str().unwrap().to_string();
    // Not recording: state built up before the recording starts.
    let mut daemon = Daemon::start(dir.path(), &["--mock-xen", &sock]);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    let r = create_guest(&ts, &mut dom0);
    let mut g = guest_client(&connector, &r);
    g.write(0, "data/before", b"1").unwrap();
    g.watch("data", "w").unwrap();
    assert_eq!(g.next_watch_event().unwrap().path, "data");
    let tx = dom0.transaction_start().unwrap();
    dom0.write(tx, "/open/tx", b"carried").unwrap();

    // The operator starts recording with a live update whose command line
    // adds --replay-record: the recording begins from the handed-over state.
    let new = bin("xenstored-lite");
    let cmdline = format!("-N --mock-xen {sock} --replay-record={}", rec.display());
    assert_eq!(
        dom0.control(&["live-update", "-f", new.to_str().unwrap()])
            .unwrap(),
        b"OK\0"
    );
    assert_eq!(
        dom0.control(&["live-update", "-c", &cmdline]).unwrap(),
        b"OK\0"
    );
    assert_eq!(
        dom0.control(&["live-update", "-s", "-t", "10"]).unwrap(),
        b"OK\0"
    );
    // Afterwards: the guest's watch, the open transaction, new requests.
    dom0.write(
        0,
        &format!("/local/domain/{}/data/after", r.info.domid),
        b"2",
    )
    .unwrap();
    assert_eq!(g.next_watch_event().unwrap().path, "data/after");
    assert_eq!(g.read(0, "data/before").unwrap(), b"1");
    dom0.transaction_end(tx, true).unwrap();
    assert_eq!(dom0.read(0, "/open/tx").unwrap(), b"carried");
    stop(&mut daemon);
    drop(hv);

    let (events, requests) = recorded_totals(&log(dir.path()));
    let out = replay(&rec, &[]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("from 1 daemon process(es)"), "{stdout}");
    assert_eq!(replayed_totals(&out), (events, requests));
    assert!(requests >= 4, "{stdout}");
}
