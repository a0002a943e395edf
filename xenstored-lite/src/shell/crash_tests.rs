//! Unit tests of the crash recovery: a daemon in this process on a
//! mock-xen thread, "crashed" by dropping it (its hypervisor connection
//! closes, so mock-xen closes its ports and mappings as Xen does when a
//! process dies; what the journal had not written is lost), then started
//! again on its journal.

use std::sync::atomic::Ordering;

use mock_xen::{DomainRecord, Guest};

use xenring::codec::build_path_value;
use xenring::page::RingIndex;
use xenring::{Message, MsgType, XsErrno};

use super::crash::{RecoverySummary, Replayed};
use super::journal::{self, Journal};
use super::test_world::*;
use crate::engine::{Config, Engine};
use crate::replay::format::{BoundaryEvent, ConnectKind};
use crate::shell::platform::Platform;

fn journaled() -> World {
    World::with(|c| c.journal = Some(crate::cli::JOURNAL_LIMIT))
}

/// Drops the daemon as a crash would and starts another on its journal.
fn crash_and_recover(w: World) -> (World, RecoverySummary) {
    let (dir, hv, ts) = w.kill_daemon();
    let path = journal::path_in(dir.path());
    let replayed = Replayed::read(Engine::new(Config::default()), &path).unwrap();
    let platform = Platform::mock(&mock_xen::Connector::remote(hv.path())).unwrap();
    let mut config = shell_config(dir.path());
    config.journal = Some(crate::cli::JOURNAL_LIMIT);
    let (daemon, summary) = super::Daemon::recover(replayed, platform, &config).unwrap();
    (
        World {
            dir,
            hv,
            ts,
            daemon,
        },
        summary,
    )
}

/// A guest's raw end, attached.
fn guest_end(w: &World, rec: &DomainRecord) -> Guest {
    let mut g = Guest::attach(&w.connector(), rec).unwrap();
    g.set_block_limit(LIMIT);
    g
}

fn write_request(req_id: u32, path: &str, value: &[u8]) -> Vec<u8> {
    Message::new(
        MsgType::Write,
        req_id,
        0,
        build_path_value(path.as_bytes(), value),
    )
    .unwrap()
    .to_bytes()
}

/// Every whole message the guest's ring holds now.
fn replies(g: &Guest) -> Vec<Message> {
    let mut buf = vec![0u8; 4096];
    let n = g.end().read(&mut buf).unwrap();
    let mut out = Vec::new();
    xenring::codec::Decoder::new()
        .decode_all(&buf[..n], &mut out)
        .unwrap();
    out
}

#[test]
fn test_recovery_releases_journaled_requests_and_skips_written_replies() {
    let mut w = journaled();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let mut g = guest_end(&w, &rec);
    // A first request and its reply, journaled whole: a dom0 request
    // after it makes the journal write the reply's Output.
    let first = write_request(6, "data/z", b"0");
    assert_eq!(g.end().write(&first).unwrap(), first.len());
    g.notify().unwrap();
    until(&mut w.daemon, "the first reply", |_| {
        !replies(&g).is_empty()
    });
    let d = rec.info.domid;
    dom0.ok(
        &mut w.daemon,
        MsgType::Read,
        0,
        format!("/local/domain/{d}/data/z\0").into_bytes(),
    );
    assert!(!w.daemon.core.journal().unwrap().needs_sync());
    let req = write_request(7, "data/a", b"1");
    assert_eq!(g.end().write(&req).unwrap(), req.len());
    g.notify().unwrap();
    let page = g.end().page();
    let cons = page.load_index(RingIndex::ReqCons, Ordering::Acquire);
    // The reply is on the ring; its Output event is still in the
    // journal's buffer (nothing else happened since): the crash loses it.
    until(&mut w.daemon, "the reply on the ring", |_| {
        g.end().readable().unwrap() > 0
    });
    let reply_len = g.end().readable().unwrap();
    // As if the crashed process had journaled the request but not yet
    // released its octets to the guest.
    let after = page.load_index(RingIndex::ReqCons, Ordering::Acquire);
    assert_eq!(after.wrapping_sub(cons) as usize, req.len());
    page.store_index(RingIndex::ReqCons, cons, Ordering::Release);

    let (mut w, summary) = crash_and_recover(w);
    assert_eq!(summary.rings, 1, "{summary:?}");
    assert_eq!(summary.released, req.len() as u64, "{summary:?}");
    assert_eq!(summary.already_written, u64::from(reply_len), "{summary:?}");
    assert_eq!(summary.divergences, 0, "{summary:?}");
    assert_eq!(
        page.load_index(RingIndex::ReqCons, Ordering::Acquire),
        after
    );
    // The next request gets its own reply; the first is not read again
    // nor answered twice.
    let req2 = write_request(8, "data/b", b"2");
    assert_eq!(g.end().write(&req2).unwrap(), req2.len());
    g.notify().unwrap();
    let mut got = Vec::new();
    until(&mut w.daemon, "the second reply", |_| {
        got.extend(replies(&g));
        got.iter().any(|m| m.header.req_id == 8)
    });
    let ids: Vec<u32> = got.iter().map(|m| m.header.req_id).collect();
    assert_eq!(ids, vec![7, 8], "{got:?}");
    let mut dom0 = w.connect();
    assert_eq!(
        dom0.ok(
            &mut w.daemon,
            MsgType::Read,
            0,
            format!("/local/domain/{d}/data/a\0").into_bytes()
        ),
        b"1"
    );
}

#[test]
fn test_a_snapshot_keeps_transaction_ids_and_the_journal_short() {
    use std::sync::mpsc::{channel, TryRecvError};
    let mut w = journaled();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let (to_test, from_guest) = channel::<Option<u32>>();
    let (to_guest, from_test) = channel::<()>();
    let mut g = xenring::Client::new(guest_end(&w, &rec));
    let guest = std::thread::spawn(move || {
        let tx = g.transaction_start().unwrap();
        g.write(tx, "data/t1", b"1").unwrap();
        g.transaction_end(tx, true).unwrap();
        to_test.send(None).unwrap();
        from_test.recv().unwrap();
        // A transaction opened after the snapshot, before the crash.
        let tx = g.transaction_start().unwrap();
        g.write(tx, "data/t2", b"2").unwrap();
        to_test.send(Some(tx)).unwrap();
        from_test.recv().unwrap();
        g.transaction_end(tx, true).unwrap();
        assert_eq!(g.read(0, "data/t2").unwrap(), b"2");
        assert_eq!(g.read(0, "data/t1").unwrap(), b"1");
    });
    let step = |d: &mut super::Daemon| {
        let mut got = None;
        until(d, "the guest's step", |_| match from_guest.try_recv() {
            Ok(v) => {
                got = Some(v);
                true
            }
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => panic!("the guest failed"),
        });
        got.flatten()
    };
    step(&mut w.daemon);
    let before = w.daemon.core.journal().map(Journal::len).unwrap();
    w.daemon.snapshot_now();
    let journal = w.daemon.core.journal().unwrap();
    assert!(journal.base_len() > 0);
    assert!(journal.len() < before + journal.base_len());
    to_guest.send(()).unwrap();
    assert!(step(&mut w.daemon).is_some_and(|tx| tx > 1));
    let (mut w, summary) = crash_and_recover(w);
    assert_eq!(summary.divergences, 0, "{summary:?}");
    // The snapshot's Start, Restore, counters, time and ring indices, then
    // the events after it.
    assert!(summary.events >= 5, "{summary:?}");
    to_guest.send(()).unwrap();
    until(&mut w.daemon, "the guest's commit", |_| guest.is_finished());
    guest.join().expect("the guest failed after the recovery");
}

#[test]
fn test_a_request_marked_fatal_is_answered_eio_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.rec");
    let journal = Journal::create(&path).unwrap();
    let req = Message::new(MsgType::Write, 3, 0, build_path_value(b"/poison", b"x")).unwrap();
    let ok = Message::new(MsgType::Write, 4, 0, build_path_value(b"/fine", b"y")).unwrap();
    let mut bytes = req.to_bytes();
    bytes.extend(ok.to_bytes());
    journal.record(&BoundaryEvent::Start { args: vec![] });
    journal.record(&BoundaryEvent::Connect {
        conn: 5,
        kind: ConnectKind::Socket,
    });
    let input = journal.record(&BoundaryEvent::Input {
        conn: 5,
        bytes: &bytes,
    });
    journal.record(&BoundaryEvent::Fatal {
        event: input,
        request: Some((5, req.header)),
    });
    journal.sync();
    drop(journal);
    let mut r = Replayed::read(Engine::new(Config::default()), &path).unwrap();
    assert_eq!(r.summary().skipped, 1);
    let first = r.core_mut().next_output(5).unwrap().to_vec();
    let reply = Message::error_reply(&req.header, XsErrno::EIO).to_bytes();
    assert_eq!(&first[..reply.len()], &reply[..]);
    // The request after it in the same read was carried out.
    assert!(r.core_mut().engine().store().get("/fine").is_some());
    assert!(r.core_mut().engine().store().get("/poison").is_none());
}

#[test]
fn test_an_event_marked_fatal_is_skipped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.rec");
    let journal = Journal::create(&path).unwrap();
    journal.record(&BoundaryEvent::Start { args: vec![] });
    let connect = journal.record(&BoundaryEvent::Connect {
        conn: 9,
        kind: ConnectKind::Socket,
    });
    journal.record(&BoundaryEvent::Fatal {
        event: connect,
        request: None,
    });
    journal.sync();
    drop(journal);
    let r = Replayed::read(Engine::new(Config::default()), &path).unwrap();
    assert_eq!(r.summary().skipped, 1);
    assert_eq!(
        r.summary().events,
        2,
        "Start and Fatal applied, Connect not"
    );
}

#[test]
fn test_a_snapshot_waits_for_the_journal_to_grow_and_for_transactions() {
    const LIMIT_OCTETS: u64 = 4000;
    let mut w = World::with(|c| c.journal = Some(LIMIT_OCTETS));
    let mut dom0 = w.connect();
    let mut i = 0u32;
    let mut write = |w: &mut World, dom0: &mut Client, tx: u32| {
        i += 1;
        dom0.ok(
            &mut w.daemon,
            MsgType::Write,
            tx,
            build_path_value(format!("/tool/n{i}").as_bytes(), &[b'v'; 40]),
        );
    };
    let state = |w: &World| {
        let j = w.daemon.core.journal().unwrap();
        (j.len(), j.base_len(), w.daemon.snapshot_job.is_some())
    };
    // An open transaction holds the snapshot back until twice the limit.
    let tx_reply = dom0.ok(&mut w.daemon, MsgType::TransactionStart, 0, b"\0".to_vec());
    let tx: u32 = String::from_utf8_lossy(&tx_reply)
        .trim_end_matches('\0')
        .parse()
        .unwrap();
    let started = loop {
        write(&mut w, &mut dom0, 0);
        let (len, base, job) = state(&w);
        assert_eq!(base, 0);
        if job {
            break len;
        }
        assert!(len < 3 * LIMIT_OCTETS, "no snapshot by {len} octets");
    };
    assert!(
        started >= 2 * LIMIT_OCTETS,
        "a snapshot at {started} octets with a transaction open"
    );
    until(&mut w.daemon, "the snapshot written", |d| {
        d.snapshot_job.is_none()
    });
    let (len, base, _) = state(&w);
    assert!(base > 0 && len >= base, "{len} {base}");
    dom0.ok(&mut w.daemon, MsgType::TransactionEnd, tx, b"T\0".to_vec());
    // Nothing in the way: the next comes once the journal has grown past
    // the limit and twice the snapshot, not before, and not much after.
    let due = LIMIT_OCTETS.max(2 * base);
    let grown = loop {
        write(&mut w, &mut dom0, 0);
        let (len, now_base, job) = state(&w);
        if job || now_base != base {
            break len - base;
        }
        assert!(len - base < 2 * due, "no snapshot by {len} octets");
    };
    assert!(
        grown >= due,
        "a snapshot after {grown} octets (due at {due})"
    );
    assert!(
        grown < due + 1000,
        "a snapshot after {grown} octets (due at {due})"
    );
}

/// Reads what the guest's ring holds into `dec`, telling the daemon of
/// the space made; returns the whole messages.
fn drain(g: &mut Guest, dec: &mut xenring::codec::Decoder) -> Vec<Message> {
    let mut buf = vec![0u8; 4096];
    let n = g.end().read(&mut buf).unwrap();
    if n > 0 {
        g.notify().unwrap();
    }
    let mut out = Vec::new();
    dec.decode_all(&buf[..n], &mut out).unwrap();
    out
}

#[test]
fn test_replies_beyond_a_full_ring_come_once_after_a_crash() {
    let mut w = journaled();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let d = rec.info.domid;
    let value = vec![b'b'; 600];
    let path = format!("/local/domain/{d}/data/big");
    dom0.ok(
        &mut w.daemon,
        MsgType::Write,
        0,
        build_path_value(path.as_bytes(), &value),
    );
    let mut g = guest_end(&w, &rec);
    // Three READs at once; each reply is longer than half the ring.
    for id in 1..=3 {
        let m = Message::new(MsgType::Read, id, 0, format!("{path}\0").into_bytes()).unwrap();
        assert_eq!(g.end().write(&m.to_bytes()).unwrap(), m.wire_len());
    }
    g.notify().unwrap();
    // The ring fills in the turn that answers them: those writes are not
    // journaled yet, and the rest waits in the daemon.
    until(&mut w.daemon, "a ring full of replies", |_| {
        g.end().readable().unwrap() == xenring::page::RING_SIZE_U32
    });
    let (mut w, summary) = crash_and_recover(w);
    assert_eq!(
        summary.already_written,
        u64::from(xenring::page::RING_SIZE_U32),
        "{summary:?}"
    );
    let mut dec = xenring::codec::Decoder::new();
    let mut got = Vec::new();
    until(&mut w.daemon, "the three replies", |_| {
        got.extend(drain(&mut g, &mut dec));
        got.len() >= 3
    });
    let ids: Vec<u32> = got.iter().map(|m| m.header.req_id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    for m in &got {
        assert_eq!(m.payload, value, "reply {}", m.header.req_id);
    }
    // Nothing after them.
    for _ in 0..5 {
        w.daemon.turn(Some(0)).unwrap();
    }
    assert!(drain(&mut g, &mut dec).is_empty());
}

#[test]
fn test_a_response_index_beyond_a_ring_is_not_trusted() {
    let mut w = journaled();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let mut g = guest_end(&w, &rec);
    let req = write_request(3, "data/a", b"1");
    assert_eq!(g.end().write(&req).unwrap(), req.len());
    g.notify().unwrap();
    until(&mut w.daemon, "the reply", |_| {
        g.end().readable().unwrap() > 0
    });
    // A hostile guest moves the server's rsp_prod far on.
    let page = g.end().page();
    let prod = page.load_index(RingIndex::RspProd, Ordering::Acquire);
    page.store_index(
        RingIndex::RspProd,
        prod.wrapping_add(5000),
        Ordering::Release,
    );
    let (_w, summary) = crash_and_recover(w);
    assert_eq!(summary.already_written, 0, "{summary:?}");
    assert_eq!(summary.rings, 1, "{summary:?}");
}
