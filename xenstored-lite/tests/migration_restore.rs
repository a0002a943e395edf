//! The real stream Xen 4.17's C xenstored wrote during a live update,
//! restored into the engine: exactly the state it held, its watches firing,
//! its half-received request completing when the rest arrives.

use std::collections::BTreeMap;

use xenring::codec::{build_args, build_path_value, Decoder, Message};
use xenring::{MsgType, XsErrno};
use xenstored_lite::engine::lu_state::RestoreError;
use xenstored_lite::engine::{Config, ConnId, ConnKind, Engine, Input};
use xenstored_lite::migration::{ConnSpec, Record, Stream};

const FIXTURE: &[u8] =
    include_bytes!("../src/migration/testdata/c-xenstored-4.17-live-update.stream");

/// Restores the fixture; returns the engine and the stream → engine
/// connection map (stream 1 = dom0's ring, 2 and 4 sockets, 3 = domain 5).
fn restored() -> (Engine, Stream, BTreeMap<u32, ConnId>) {
    let stream = Stream::parse(FIXTURE).unwrap();
    let mut e = Engine::new(Config::default());
    let mut conns = BTreeMap::new();
    for r in &stream.records {
        if let Record::Connection(c) = r {
            let ours = 100 + c.conn_id;
            match &c.spec {
                ConnSpec::Ring(ring) if ring.domid == 0 => e.handle(Input::Connect {
                    conn: ours,
                    kind: ConnKind::Domain(0),
                }),
                ConnSpec::Ring(ring) => e.restore_ring(ours, ring.domid, 4660, 7, None),
                ConnSpec::Socket(_) => e.handle(Input::Connect {
                    conn: ours,
                    kind: ConnKind::Socket,
                }),
            }
            conns.insert(c.conn_id, ours);
        }
    }
    let report = e.restore_records(&stream.records, &conns).unwrap();
    assert_eq!(report.nodes, 16, "2 special nodes and 14 in the tree");
    assert_eq!(report.watches, 2);
    (e, stream, conns)
}

fn ask(e: &mut Engine, conn: ConnId, ty: MsgType, payload: Vec<u8>) -> Result<Vec<u8>, XsErrno> {
    let msg = Message::new(ty, 77, 0, payload).unwrap();
    e.handle(Input::Request { conn, msg: &msg });
    loop {
        let m = e.pop_output(conn).unwrap();
        if m.header.msg_type == MsgType::WatchEvent.raw() {
            continue;
        }
        return if m.header.msg_type == MsgType::Error.raw() {
            Err(XsErrno::from_wire(&m.payload).unwrap())
        } else {
            Ok(m.payload)
        };
    }
}

#[test]
fn test_restore_c_fixture_gives_exactly_its_state() {
    let (mut e, _, conns) = restored();
    let sock = conns[&4];
    for (path, value, perms) in [
        ("/tool/xenstored/test", "hello", "n0\0"),
        ("/vm/abc", "", "n0\0r5\0"),
        ("/vm/abc/name", "guest-a", "n0\0"),
        ("/local/domain/0/domid", "0", "n0\0"),
        ("/local/domain/0/name", "Domain-0", "n0\0"),
        ("/local/domain/5", "", "b5\0"),
        ("/local/domain/5/name", "guest5", "n0\0"),
    ] {
        assert_eq!(
            ask(&mut e, sock, MsgType::Read, build_args(&[path.as_bytes()])),
            Ok(value.as_bytes().to_vec()),
            "{path}"
        );
        assert_eq!(
            ask(
                &mut e,
                sock,
                MsgType::GetPerms,
                build_args(&[path.as_bytes()])
            ),
            Ok(perms.as_bytes().to_vec()),
            "{path}"
        );
    }
    assert_eq!(
        ask(&mut e, sock, MsgType::Directory, build_args(&[b"/"])),
        // C's order (creation order), which its stream's node order gives.
        Ok(b"tool\0local\0vm\0".to_vec())
    );
    assert_eq!(
        ask(
            &mut e,
            sock,
            MsgType::IsDomainIntroduced,
            build_args(&[b"5"])
        ),
        Ok(b"T\0".to_vec())
    );
    assert!(e.check().is_empty(), "{:?}", e.check());
    // Domain 5 reads what its permissions allow.
    let d5 = conns[&3];
    assert_eq!(
        ask(&mut e, d5, MsgType::Read, build_args(&[b"/vm/abc"])),
        Ok(b"".to_vec())
    );
    assert_eq!(
        ask(&mut e, d5, MsgType::Read, build_args(&[b"name"])),
        Err(XsErrno::EACCES)
    );
}

#[test]
fn test_restore_c_fixture_watches_fire() {
    let (mut e, _, conns) = restored();
    let watcher = conns[&2];
    ask(
        &mut e,
        conns[&4],
        MsgType::Write,
        build_path_value(b"/vm/abc/name", b"renamed"),
    )
    .unwrap();
    e.handle(Input::DomainState {
        domid: 5,
        shutdown: true,
        dying: true,
    });
    let mut events = Vec::new();
    while let Some(m) = e.pop_output(watcher) {
        events.push(String::from_utf8(m.payload).unwrap());
    }
    assert_eq!(
        events,
        vec!["/vm/abc/name\0tok-a\0", "@releaseDomain\0rel\0"]
    );
}

#[test]
fn test_restore_c_fixture_half_received_request_completes() {
    let (mut e, stream, conns) = restored();
    let pending = stream
        .records
        .iter()
        .find_map(|r| match r {
            Record::Connection(c) if c.conn_id == 2 => Some(c.in_data.clone()),
            _ => None,
        })
        .unwrap();
    let mut dec = Decoder::new();
    let mut done = Vec::new();
    dec.decode_all(&pending, &mut done).unwrap();
    assert!(
        done.is_empty() && dec.payload_missing() == Some(10),
        "a READ waiting for 10 more bytes"
    );
    // The rest of "/local/domain/0/nam\0" arrives after the update.
    dec.decode_all(b"ain/0/nam\0", &mut done).unwrap();
    let msg = done.pop().unwrap();
    assert_eq!(msg.msg_type().unwrap(), MsgType::Read);
    e.handle(Input::Request {
        conn: conns[&2],
        msg: &msg,
    });
    let reply = e.pop_output(conns[&2]).unwrap();
    assert_eq!(reply.header.req_id, msg.header.req_id);
    assert_eq!(reply.payload, b"ENOENT\0");
}

/// A fresh engine with the fixture's connections registered (stream 1 is
/// dom0's ring, 3 domain 5's, 2 and 4 sockets) and nothing else.
fn connected(conns: &BTreeMap<u32, ConnId>) -> Engine {
    let mut e = Engine::new(Config::default());
    for (&s, &o) in conns {
        let kind = match s {
            1 => ConnKind::Domain(0),
            3 => ConnKind::Domain(5),
            _ => ConnKind::Socket,
        };
        e.handle(Input::Connect { conn: o, kind });
    }
    e
}

#[test]
fn test_export_then_restore_round_trips_the_engine_state() {
    let (e, stream, conns) = restored();
    let back: BTreeMap<ConnId, u32> = conns.iter().map(|(&s, &o)| (o, s)).collect();
    let records = e.export_records(&back);
    let mut again = connected(&conns);
    again.restore_records(&records, &conns).unwrap();
    let nodes = |e: &Engine| -> Vec<(String, Vec<u8>, Vec<xenring::Perm>)> {
        e.store()
            .walk()
            .into_iter()
            .map(|(p, n)| (p.to_string(), n.value.to_vec(), n.perms.to_vec()))
            .collect()
    };
    assert_eq!(nodes(&again), nodes(&e));
    // The fixture's own nodes, in the exported order, are what C wrote.
    let fixture_nodes: Vec<&str> = stream.nodes().map(|n| n.path.as_str()).collect();
    let exported: Vec<String> = records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) => Some(n.path.clone()),
            _ => None,
        })
        .collect();
    let mut a: Vec<&str> = fixture_nodes.clone();
    let mut b: Vec<&str> = exported.iter().map(String::as_str).collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

#[test]
fn test_restore_rejects_orphans_and_unknown_connections_naming_the_record() {
    let (_, stream, conns) = restored();
    // Drop the node "/vm": its child "/vm/abc" becomes an orphan.
    let mut records = stream.records.clone();
    let vm = records
        .iter()
        .position(|r| matches!(r, Record::Node(n) if n.path == "/vm"))
        .unwrap();
    records.remove(vm);
    let mut e = connected(&conns);
    let err = e.restore_records(&records, &conns).unwrap_err();
    assert!(
        matches!(&err, RestoreError::OrphanNode { path, .. } if path == "/vm/abc"),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(&format!("record {vm}:")),
        "names the record: {err}"
    );
    assert_eq!(
        e.store().len(),
        5,
        "nothing was changed: only /, /tool/xenstored and the special nodes"
    );
    // Watches naming a connection the shell did not restore.
    let err = Engine::new(Config::default())
        .restore_records(&stream.records, &conns)
        .unwrap_err();
    assert!(
        matches!(err, RestoreError::UnknownConnection { conn_id: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("connection 2"), "{err}");
}
