//! Guests over rings, across processes: mock-xen, the daemon and this test
//! (the guests and the toolstack) are three processes.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use mock_xen::{DomainRecord, Guest, Toolstack};
use tests::{create_guest, guest_client, reply_text, wait_until, Daemon, MockXen};
use xenring::codec::Decoder;
use xenring::{Client, Error as XsError, MsgType, RingErrorCode, XsErrno};

/// The work each guest does: numbered writes read back, a watch that dom0
/// fires, a transaction; every reply checked.
fn guest_work(c: &mut Client<Guest>, domid: u16, round: u32) {
    for i in 0..20 {
        let v = format!("{domid}-{round}-{i}");
        c.write(0, &format!("data/k{i}"), v.as_bytes()).unwrap();
        assert_eq!(c.read(0, &format!("data/k{i}")).unwrap(), v.as_bytes());
    }
    assert_eq!(
        c.directory(0, "data").unwrap().len(),
        if round == 0 { 21 } else { 22 },
        "k0..k19, watched, tx after the first round"
    );
    loop {
        let tx = c.transaction_start().unwrap();
        let old = c.read(tx, "data/k0").unwrap();
        c.write(tx, "data/tx", &old).unwrap();
        match c.transaction_end(tx, true) {
            Ok(()) => break,
            Err(XsError::Xs(XsErrno::EAGAIN)) => continue,
            Err(e) => panic!("domain {domid}: commit failed: {e}"),
        }
    }
    assert_eq!(
        c.read(0, "data/tx").unwrap(),
        format!("{domid}-{round}-0").as_bytes()
    );
}

/// The number of watches the daemon holds, from its `memreport`.
fn daemon_watches<T: std::io::Read + std::io::Write>(dom0: &mut Client<T>) -> usize {
    let report = reply_text(&dom0.control(&["memreport"]).unwrap());
    report
        .lines()
        .find_map(|l| l.strip_prefix("watches "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no watch count in memreport: {report}"))
}

#[test]
fn test_fifty_guests_and_socket_clients_then_every_fault_mode() {
    let dir = tempfile::tempdir().unwrap();
    let hv = MockXen::start(dir.path());
    let daemon = Daemon::start(dir.path(), &["--mock-xen", hv.socket.to_str().unwrap()]);
    let connector = hv.connector();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = daemon.client();
    dom0.watch("@releaseDomain", "rel").unwrap();
    assert_eq!(dom0.next_watch_event().unwrap().path, "@releaseDomain");

    let records: Vec<DomainRecord> = (0..50).map(|_| create_guest(&ts, &mut dom0)).collect();

    // Phase 1: 50 guests and 5 socket clients at once.
    let barrier = Arc::new(Barrier::new(records.len() + 5));
    let mut threads = Vec::new();
    for rec in records.clone() {
        let connector = connector.clone();
        let barrier = Arc::clone(&barrier);
        threads.push(std::thread::spawn(move || {
            let mut c = guest_client(&connector, &rec);
            let d = rec.info.domid;
            c.write(0, "data/watched", b"").unwrap();
            c.watch("data/watched", "w").unwrap();
            assert_eq!(c.next_watch_event().unwrap().path, "data/watched");
            barrier.wait();
            guest_work(&mut c, d, 0);
            c
        }));
    }
    let mut sockets = Vec::new();
    for s in 0..5 {
        let path = daemon.socket.clone();
        let barrier = Arc::clone(&barrier);
        sockets.push(std::thread::spawn(move || {
            let mut c = tests::client(&path);
            barrier.wait();
            for i in 0..200 {
                let p = format!("/tool/client{s}/k{i}");
                c.write(0, &p, i.to_string().as_bytes()).unwrap();
                assert_eq!(c.read(0, &p).unwrap(), i.to_string().as_bytes());
            }
        }));
    }
    let mut clients: Vec<Client<Guest>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for s in sockets {
        s.join().unwrap();
    }
    // dom0 fires every guest's watch; each sees exactly its event.
    for rec in &records {
        dom0.write(
            0,
            &format!("/local/domain/{}/data/watched", rec.info.domid),
            b"go",
        )
        .unwrap();
    }
    for c in &mut clients {
        let ev = c.next_watch_event().unwrap();
        assert_eq!((ev.path.as_str(), ev.token.as_str()), ("data/watched", "w"));
    }

    // Phase 2: one extra guest per fault mode, misbehaving; the 50 and the
    // sockets keep working and lose nothing.
    let faulty: Vec<DomainRecord> = (0..7).map(|_| create_guest(&ts, &mut dom0)).collect();
    let mut bad: Vec<Guest> = faulty
        .iter()
        .map(|r| {
            let mut g = Guest::attach(&connector, r).unwrap();
            g.set_block_limit(Duration::from_secs(60));
            g
        })
        .collect();
    bad[0].corrupt_indices().unwrap();
    bad[1].send_oversized().unwrap();
    bad[2].send_garbage().unwrap();
    bad[3].flood_requests(1000, "data").unwrap(); // and never reads
    let flooded = bad[4].flood_watches(1000, "data").unwrap(); // over the watch quota
    bad[5].set_drop_notifications(true);
    bad[5].flood_requests(1, "/").unwrap();
    bad[6]
        .write_partial_request("data/x", b"never finished")
        .unwrap();
    ts.destroy(faulty[6].info.domid).unwrap();

    let handles: Vec<_> = clients
        .into_iter()
        .zip(records.clone())
        .map(|(mut c, rec)| {
            std::thread::spawn(move || {
                guest_work(&mut c, rec.info.domid, 1);
                c
            })
        })
        .collect();
    for i in 0..100 {
        dom0.write(0, &format!("/tool/after/k{i}"), b"v").unwrap();
    }
    let mut clients: Vec<Client<Guest>> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    // Corrupt indices and protocol violations: the ring's error word is set.
    wait_until("error word for corrupt indices", || {
        bad[0].end().error() == RingErrorCode::RingIdx
    });
    wait_until("error word for an oversized message", || {
        bad[1].end().error() == RingErrorCode::Proto
    });
    // Garbage of an unknown type is a well-framed request: ENOSYS.
    let mut reply = [0u8; 64];
    let n = {
        let mut got = 0;
        wait_until("the garbage's reply", || {
            got += bad[2].end().read(&mut reply[got..]).unwrap();
            got >= 16 + 7
        });
        got
    };
    assert_eq!(&reply[16..n], b"ENOSYS\0");
    // The guest that dropped its notification is served once it notifies.
    bad[5].set_drop_notifications(false);
    bad[5].notify().unwrap();
    wait_until("the late request's reply", || {
        bad[5].end().readable().unwrap() > 0
    });
    // The guest that died mid-request: released, home gone, dom0 told.
    let ev = dom0.next_watch_event().unwrap();
    assert_eq!(
        (ev.path.as_str(), ev.token.as_str()),
        ("@releaseDomain", "rel")
    );
    let home = format!("/local/domain/{}", faulty[6].info.domid);
    wait_until("the dead guest's home to go", || {
        matches!(dom0.read(0, &home), Err(XsError::Xs(XsErrno::ENOENT)))
    });
    assert!(!dom0.is_domain_introduced(faulty[6].info.domid).unwrap());

    // Nothing lost: every guest still answers and reads back its data.
    for (c, rec) in clients.iter_mut().zip(&records) {
        let d = rec.info.domid;
        assert_eq!(
            c.read(0, "data/k19").unwrap(),
            format!("{d}-1-19").as_bytes()
        );
    }
    for s in 0..5 {
        assert_eq!(
            dom0.read(0, &format!("/tool/client{s}/k199")).unwrap(),
            b"199"
        );
    }
    assert_eq!(
        String::from_utf8(dom0.control(&["check"]).unwrap())
            .unwrap()
            .trim_end_matches('\0')
            .trim(),
        "OK"
    );

    // The watch flood is answered in full (a reply per WATCH, OK or an
    // error over the quota), so the daemon's watch count holds still now.
    let mut dec = Decoder::new();
    let mut answered = 0;
    let mut buf = [0u8; 1024];
    wait_until("a reply to every flooded WATCH", || {
        let n = bad[4].end().read(&mut buf).unwrap();
        let mut msgs = Vec::new();
        dec.decode_all(&buf[..n], &mut msgs).unwrap();
        answered += msgs
            .iter()
            .filter(|m| m.header.msg_type != MsgType::WatchEvent.raw())
            .count();
        if n > 0 {
            // The daemon may be waiting for room in the response ring.
            bad[4].notify().unwrap();
        }
        answered >= flooded
    });
    assert_eq!(answered, flooded, "one reply per request");

    // Phase 3: a normal guest destroyed: nodes and watches gone,
    // @releaseDomain delivered.
    let victim = records[7].info.domid;
    let watches_before = daemon_watches(&mut dom0);
    drop(clients.remove(7));
    ts.destroy(victim).unwrap();
    let ev = dom0.next_watch_event().unwrap();
    assert_eq!(ev.path, "@releaseDomain");
    wait_until("the destroyed guest's home to go", || {
        matches!(
            dom0.read(0, &format!("/local/domain/{victim}")),
            Err(XsError::Xs(XsErrno::ENOENT))
        )
    });
    assert!(!dom0.is_domain_introduced(victim).unwrap());
    // Its one watch (data/watched) is gone from the daemon, and only it.
    wait_until("the daemon to drop the destroyed guest's watch", || {
        daemon_watches(&mut dom0) < watches_before
    });
    assert_eq!(daemon_watches(&mut dom0), watches_before - 1);
    let memreport = String::from_utf8(dom0.control(&["memreport"]).unwrap()).unwrap();
    assert!(
        !memreport.contains(&format!("domain {victim}:")),
        "{memreport}"
    );
}
