//! Unit tests of the engine's part of a live update: what `export_records`
//! writes and `restore_records` takes back, quotas first.

use std::collections::BTreeMap;

use xenring::codec::{build_args, build_path_value, Message};
use xenring::{DomId, MsgType, XsErrno};

use super::*;
use crate::engine::{Config, ConnId, ConnKind, Engine, Input};
use crate::migration::{DomainData, GlobalQuotaData, NodeData, Record, WatchDataExtended};

/// The privileged socket connection.
pub(in crate::engine) const SOCK: ConnId = 1;

/// Stream connection ids are engine ids plus this, so a mix-up shows.
const STREAM: u32 = 1000;

/// An engine driven the way the shell drives it, for tests that need the
/// connections and domains around the store.
pub(in crate::engine) struct Eng {
    pub(in crate::engine) e: Engine,
    req_id: u32,
    /// Watch events seen while waiting for replies: connection, path.
    events: Vec<(ConnId, String)>,
}

impl Eng {
    pub(in crate::engine) fn new(config: Config) -> Self {
        let mut e = Engine::new(config);
        e.handle(Input::Connect {
            conn: SOCK,
            kind: ConnKind::Socket,
        });
        Self {
            e,
            req_id: 0,
            events: Vec::new(),
        }
    }

    /// Registers `domid`'s ring as connection 100 + domid, its home made
    /// and given to it as a toolstack does.
    pub(in crate::engine) fn guest(&mut self, domid: DomId) -> ConnId {
        let home = format!("/local/domain/{domid}");
        self.req(SOCK, MsgType::Mkdir, &[&home]).unwrap();
        let owner = format!("n{domid}");
        self.req(SOCK, MsgType::SetPerms, &[&home, &owner]).unwrap();
        self.ring(domid)
    }

    /// Registers `domid`'s ring only (the store already has its home).
    fn ring(&mut self, domid: DomId) -> ConnId {
        let conn = 100 + ConnId::from(domid);
        self.e
            .restore_ring(conn, domid, 0x1000 + u64::from(domid), 7, None);
        conn
    }

    /// One request and its reply (watch events on the way are noted).
    pub(in crate::engine) fn raw(&mut self, conn: ConnId, ty: MsgType, payload: Vec<u8>) -> R {
        self.raw_tx(conn, ty, 0, payload)
    }

    /// The same in transaction `tx`.
    pub(in crate::engine) fn raw_tx(
        &mut self,
        conn: ConnId,
        ty: MsgType,
        tx: u32,
        payload: Vec<u8>,
    ) -> R {
        self.req_id += 1;
        let msg = Message::new(ty, self.req_id, tx, payload).unwrap();
        self.e.handle(Input::Request { conn, msg: &msg });
        loop {
            let reply = self.e.pop_output(conn).expect("a reply");
            if reply.header.msg_type == MsgType::WatchEvent.raw() {
                let path = reply.payload.split(|&b| b == 0).next().unwrap_or_default();
                let path = String::from_utf8_lossy(path).into_owned();
                self.events.push((conn, path));
                continue;
            }
            assert_eq!(reply.header.req_id, self.req_id);
            return if reply.header.msg_type == MsgType::Error.raw() {
                Err(XsErrno::from_wire(&reply.payload).expect("an error name"))
            } else {
                assert_eq!(reply.header.msg_type, ty.raw());
                Ok(reply.payload)
            };
        }
    }

    pub(in crate::engine) fn req(&mut self, conn: ConnId, ty: MsgType, args: &[&str]) -> R {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.raw(conn, ty, build_args(&args))
    }

    pub(in crate::engine) fn write(&mut self, conn: ConnId, path: &str, value: &str) -> R {
        self.raw(
            conn,
            MsgType::Write,
            build_path_value(path.as_bytes(), value.as_bytes()),
        )
    }

    /// The watch events `conn` has been sent so far (and forgets them).
    fn events(&mut self, conn: ConnId) -> Vec<String> {
        while let Some(m) = self.e.pop_output(conn) {
            assert_eq!(m.header.msg_type, MsgType::WatchEvent.raw());
            let path = m.payload.split(|&b| b == 0).next().unwrap_or_default();
            self.events
                .push((conn, String::from_utf8_lossy(path).into_owned()));
        }
        let (mine, rest) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.events = rest;
        mine.into_iter().map(|(_, p)| p).collect()
    }

    fn tx_req(&mut self, conn: ConnId, tx: u32, ty: MsgType, args: &[&str]) -> R {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.raw_tx(conn, ty, tx, build_args(&args))
    }

    fn tx_start(&mut self, conn: ConnId) -> u32 {
        let id = self.req(conn, MsgType::TransactionStart, &[""]).unwrap();
        std::str::from_utf8(id.strip_suffix(&[0]).unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn tx_end(&mut self, conn: ConnId, tx: u32, commit: bool) -> R {
        self.tx_req(
            conn,
            tx,
            MsgType::TransactionEnd,
            &[if commit { "T" } else { "F" }],
        )
    }

    /// `GET_QUOTA`'s answer as text.
    pub(in crate::engine) fn quota(&mut self, args: &[&str]) -> String {
        let v = self.req(SOCK, MsgType::GetQuota, args).unwrap();
        String::from_utf8(v.strip_suffix(&[0]).unwrap().to_vec()).unwrap()
    }

    fn stream_ids(&self) -> BTreeMap<ConnId, u32> {
        self.e.conns.keys().map(|&c| (c, c + STREAM)).collect()
    }

    fn export(&self) -> Vec<Record> {
        self.e.export_records(&self.stream_ids())
    }

    /// A new engine (default settings) with this one's connections
    /// registered as the shell does, restored from `records`.
    fn restore(&self, records: &[Record]) -> Result<Eng, RestoreError> {
        let mut new = Eng::new(Config::default());
        new.req_id = self.req_id;
        for (&id, c) in &self.e.conns {
            if let ConnKind::Domain(d) = c.kind {
                let (mfn, port) = self.e.domain_ring(d).unwrap();
                new.e
                    .restore_ring(id, d, mfn, port, self.e.domain_target(d));
            }
        }
        let back: BTreeMap<u32, ConnId> =
            self.stream_ids().into_iter().map(|(c, s)| (s, c)).collect();
        new.e.restore_records(records, &back)?;
        assert!(new.e.check().is_empty(), "{:?}", new.e.check());
        Ok(new)
    }

    fn live_update(&self) -> Eng {
        self.restore(&self.export()).unwrap()
    }
}

type R = Result<Vec<u8>, XsErrno>;

fn ok() -> R {
    Ok(b"OK\0".to_vec())
}

fn domain_record(records: &[Record], domid: DomId) -> &DomainData {
    records
        .iter()
        .find_map(|r| match r {
            Record::Domain(d) if d.domain_id == domid => Some(d),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no DOMAIN_DATA for {domid}"))
}

fn quotas_of(list: &[crate::migration::Quota]) -> Vec<(String, u32)> {
    list.iter().map(|q| (q.name.clone(), q.value)).collect()
}

// ---- quotas -------------------------------------------------------------------

#[test]
fn test_live_update_keeps_per_domain_quotas_and_enforces_them() {
    let mut old = Eng::new(Config::default());
    let d5 = old.guest(5);
    let d7 = old.guest(7);
    for args in [
        ["5", "nodes", "3"],
        ["5", "node-size", "4"],
        ["7", "path-max", "10"],
    ] {
        assert_eq!(old.req(SOCK, MsgType::SetQuota, &args), ok());
    }
    let records = old.export();
    assert_eq!(
        quotas_of(&domain_record(&records, 5).quota),
        [("nodes".to_string(), 3), ("node-size".to_string(), 4)]
    );
    assert_eq!(
        quotas_of(&domain_record(&records, 7).quota),
        [("path-max".to_string(), 10)]
    );
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.quota(&["5", "nodes"]), "3");
    assert_eq!(new.quota(&["5", "node-size"]), "4");
    assert_eq!(new.quota(&["7", "path-max"]), "10");
    // Not overridden: the global value, for both.
    assert_eq!(new.quota(&["7", "nodes"]), "1000");
    assert_eq!(new.quota(&["5", "path-max"]), "2048");
    // And in force: domain 5 owns its home and may create two nodes.
    assert_eq!(new.write(d5, "a", "1234"), ok());
    assert_eq!(new.write(d5, "b", "12345"), Err(XsErrno::ENOSPC));
    assert_eq!(new.write(d5, "b", ""), ok());
    assert_eq!(new.write(d5, "c", ""), Err(XsErrno::ENOSPC));
    assert_eq!(new.write(d7, "1234567890", ""), ok());
    assert_eq!(new.write(d7, "12345678901", ""), Err(XsErrno::EINVAL));
    assert_eq!(new.write(d7, "c", "12345"), ok(), "5's quotas are 5's");
    // A second update keeps them too.
    let mut third = new.live_update();
    assert_eq!(third.quota(&["5", "nodes"]), "3");
    assert_eq!(third.write(d5, "c", ""), Err(XsErrno::ENOSPC));
}

#[test]
fn test_live_update_keeps_global_quotas() {
    let mut old = Eng::new(Config::default());
    let d5 = old.guest(5);
    assert_eq!(old.req(SOCK, MsgType::SetQuota, &["nodes", "2"]), ok());
    assert_eq!(
        old.req(SOCK, MsgType::SetQuota, &["memory", "123456"]),
        ok()
    );
    let records = old.export();
    let global: Vec<(String, u32)> = records
        .iter()
        .find_map(|r| match r {
            Record::GlobalQuota(GlobalQuotaData { dom_quota, .. }) => Some(quotas_of(dom_quota)),
            _ => None,
        })
        .expect("a GLOBAL_QUOTA_DATA record");
    assert!(global.contains(&("nodes".to_string(), 2)), "{global:?}");
    assert!(
        global.contains(&("memory".to_string(), 123_456)),
        "{global:?}"
    );
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.quota(&["nodes"]), "2");
    assert_eq!(new.quota(&["memory"]), "123456");
    assert_eq!(new.quota(&["watches"]), "128");
    assert_eq!(new.write(d5, "a", ""), ok());
    assert_eq!(new.write(d5, "b", ""), Err(XsErrno::ENOSPC));
}

#[test]
fn test_restore_unknown_quota_names_reported_not_applied() {
    let mut old = Eng::new(Config::default());
    old.guest(5);
    let mut records = old.export();
    for r in &mut records {
        match r {
            Record::GlobalQuota(g) => g.glob_quota.push(crate::migration::Quota {
                name: "no-such-global".into(),
                value: 1,
            }),
            Record::Domain(d) => d.quota.push(crate::migration::Quota {
                name: "no-such-quota".into(),
                value: 1,
            }),
            _ => {}
        }
    }
    let mut new = Eng::new(Config::default());
    new.ring(5);
    let back = BTreeMap::from([(SOCK + STREAM, SOCK), (105 + STREAM, 105)]);
    let report = new.e.restore_records(&records, &back).unwrap();
    assert_eq!(report.unknown_quotas, ["no-such-global", "no-such-quota"]);
    assert_eq!(new.quota(&["5", "nodes"]), "1000");
}

// ---- open transactions ------------------------------------------------------

/// The `(path, access)` of the node records of open transactions.
fn tx_records(records: &[Record]) -> Vec<(String, Access)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) if n.conn_id != 0 => Some((n.path.clone(), n.access)),
            _ => None,
        })
        .collect()
}

#[test]
fn test_live_update_transaction_get_perms_is_a_read_that_can_conflict() {
    let mut old = Eng::new(Config::default());
    assert_eq!(old.write(SOCK, "/a", "x"), ok());
    let tx = old.tx_start(SOCK);
    assert_eq!(
        old.tx_req(SOCK, tx, MsgType::GetPerms, &["/a"]),
        Ok(b"n0\0".to_vec())
    );
    let records = old.export();
    assert_eq!(tx_records(&records), [("/a".to_string(), Access::READ)]);
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.req(SOCK, MsgType::SetPerms, &["/a", "n0", "r5"]), ok());
    assert_eq!(new.tx_end(SOCK, tx, true), Err(XsErrno::EAGAIN));
}

#[test]
fn test_live_update_transaction_mkdir_is_carried_and_committed() {
    let mut old = Eng::new(Config::default());
    let tx = old.tx_start(SOCK);
    assert_eq!(old.tx_req(SOCK, tx, MsgType::Mkdir, &["/m/n"]), ok());
    let records = old.export();
    assert_eq!(
        tx_records(&records),
        [
            ("/m".to_string(), Access::WRITTEN),
            ("/m/n".to_string(), Access::READ_WRITTEN)
        ]
    );
    let mut new = old.restore(&records).unwrap();
    assert_eq!(
        new.req(SOCK, MsgType::Read, &["/m/n"]),
        Err(XsErrno::ENOENT)
    );
    assert_eq!(new.tx_end(SOCK, tx, true), ok());
    assert_eq!(new.req(SOCK, MsgType::Read, &["/m/n"]), Ok(Vec::new()));
}

#[test]
fn test_live_update_transaction_special_nodes_come_first() {
    let mut old = Eng::new(Config::default());
    assert_eq!(old.write(SOCK, "/a", ""), ok());
    let tx = old.tx_start(SOCK);
    assert_eq!(old.tx_req(SOCK, tx, MsgType::Read, &["/a"]), Ok(Vec::new()));
    assert!(old
        .tx_req(SOCK, tx, MsgType::GetPerms, &["@releaseDomain"])
        .is_ok());
    assert_eq!(
        old.raw_tx(SOCK, MsgType::Write, tx, build_path_value(b"/a/b", b"v")),
        ok()
    );
    let paths: Vec<String> = tx_records(&old.export())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(paths, ["@releaseDomain", "/a", "/a/b"]);
    let mut new = old.live_update();
    assert_eq!(new.tx_end(SOCK, tx, true), ok());
    assert_eq!(new.req(SOCK, MsgType::Read, &["/a/b"]), Ok(b"v".to_vec()));
}

// ---- domains ------------------------------------------------------------------

#[test]
fn test_domain_ring_and_target_as_registered() {
    let mut e = Eng::new(Config::default());
    e.guest(5);
    e.guest(7);
    assert_eq!(e.e.domain_ring(5), Some((0x1005, 7)));
    assert_eq!(e.e.domain_ring(7), Some((0x1007, 7)));
    assert_eq!(e.e.domain_ring(9), None);
    assert_eq!(e.e.domain_target(5), None);
    assert_eq!(e.req(SOCK, MsgType::SetTarget, &["5", "7"]), ok());
    assert_eq!(e.e.domain_target(5), Some(7));
    assert_eq!(e.e.domain_target(7), None);
}

// ---- watches and committed nodes ------------------------------------------------

#[test]
fn test_live_update_keeps_watch_depth() {
    let mut old = Eng::new(Config::default());
    assert_eq!(old.req(SOCK, MsgType::Watch, &["/w", "one", "1"]), ok());
    assert_eq!(
        old.req(SOCK, MsgType::Watch, &["/v", "huge", "70000"]),
        ok()
    );
    assert_eq!(old.events(SOCK), ["/w", "/v"]);
    let records = old.export();
    let depths: Vec<(String, u16)> = records
        .iter()
        .filter_map(|r| match r {
            Record::WatchExtended(WatchDataExtended { wpath, depth, .. }) => {
                Some((wpath.clone(), *depth))
            }
            _ => None,
        })
        .collect();
    // A depth past the field's range is kept as the largest limited one.
    assert_eq!(depths, [("/w".to_string(), 1), ("/v".to_string(), 65534)]);
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.write(SOCK, "/w/a", ""), ok());
    assert_eq!(new.write(SOCK, "/w/a/b", ""), ok());
    assert_eq!(new.write(SOCK, "/v/a/b", ""), ok());
    assert_eq!(new.events(SOCK), ["/w/a", "/v/a/b"]);
}

#[test]
fn test_restore_refuses_relative_node_path() {
    let old = Eng::new(Config::default());
    let mut records = old.export();
    let at = records.len();
    records.insert(
        1,
        Record::Node(NodeData {
            conn_id: 0,
            tx_id: 0,
            access: Access::NONE,
            perms: vec![crate::migration::NodePerm::new(xenring::Perm::new(
                xenring::PermKind::None,
                0,
            ))],
            path: "relative".into(),
            value: Vec::new(),
        }),
    );
    assert!(at > 1);
    assert_eq!(
        old.restore(&records).err(),
        Some(RestoreError::BadNodePath {
            index: 1,
            path: "relative".into()
        })
    );
}

/// `records` with one open transaction of the socket made of `nodes`.
fn with_transaction(mut records: Vec<Record>, nodes: Vec<NodeData>) -> Vec<Record> {
    let conn_id = SOCK + STREAM;
    records.push(Record::Transaction(crate::migration::TransactionData {
        conn_id,
        tx_id: 1,
    }));
    records.extend(nodes.into_iter().map(|n| {
        Record::Node(NodeData {
            conn_id,
            tx_id: 1,
            ..n
        })
    }));
    records
}

fn tx_node(access: Access, path: &str, perms: bool, value: &str) -> NodeData {
    NodeData {
        conn_id: 0,
        tx_id: 0,
        access,
        perms: if perms {
            vec![crate::migration::NodePerm::new(xenring::Perm::new(
                xenring::PermKind::None,
                0,
            ))]
        } else {
            Vec::new()
        },
        path: path.into(),
        value: value.as_bytes().to_vec(),
    }
}

#[test]
fn test_restore_refuses_impossible_transaction_nodes() {
    let old = Eng::new(Config::default());
    let cases = [
        (tx_node(Access::READ, "/a", false, "x"), "value-len"),
        (
            tx_node(Access::NONE, "@releaseDomain", false, ""),
            "perm-count",
        ),
    ];
    for (node, field) in cases {
        let path = node.path.clone();
        let records = with_transaction(old.export(), vec![node]);
        match old.restore(&records) {
            Err(RestoreError::BadTransactionNode {
                field: f, path: p, ..
            }) => assert_eq!((f, p.as_str()), (field, path.as_str())),
            other => panic!("{path}: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn test_live_update_transaction_writing_special_node_and_root_commits() {
    let mut old = Eng::new(Config::default());
    let tx = old.tx_start(SOCK);
    assert_eq!(
        old.tx_req(SOCK, tx, MsgType::SetPerms, &["@releaseDomain", "n0", "r5"]),
        ok()
    );
    assert_eq!(
        old.raw_tx(SOCK, MsgType::Write, tx, build_path_value(b"/", b"root")),
        ok()
    );
    let mut new = old.live_update();
    assert_eq!(new.tx_end(SOCK, tx, true), ok());
    assert_eq!(
        new.req(SOCK, MsgType::GetPerms, &["@releaseDomain"]),
        Ok(b"n0\0r5\0".to_vec())
    );
    assert_eq!(new.req(SOCK, MsgType::Read, &["/"]), Ok(b"root".to_vec()));
}

/// The open transactions' node records in full: path, access, value,
/// permissions.
fn tx_nodes_full(records: &[Record]) -> Vec<(String, Access, String, usize)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) if n.conn_id != 0 => Some((
                n.path.clone(),
                n.access,
                String::from_utf8_lossy(&n.value).into_owned(),
                n.perms.len(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn test_live_update_transaction_records_exact_and_stable_across_updates() {
    let mut old = Eng::new(Config::default());
    for (p, v) in [("/e", "old"), ("/r", "r"), ("/r/c", "c"), ("/x", "x")] {
        assert_eq!(old.write(SOCK, p, v), ok());
    }
    let tx = old.tx_start(SOCK);
    let w = |e: &mut Eng, p: &str, v: &str| {
        e.raw_tx(
            SOCK,
            MsgType::Write,
            tx,
            build_path_value(p.as_bytes(), v.as_bytes()),
        )
    };
    assert_eq!(
        old.tx_req(SOCK, tx, MsgType::Read, &["/x"]),
        Ok(b"x".to_vec())
    );
    assert_eq!(w(&mut old, "/e", "new"), ok());
    assert_eq!(w(&mut old, "/t/a", "ta"), ok());
    assert_eq!(old.tx_req(SOCK, tx, MsgType::Rm, &["/r"]), ok());
    assert_eq!(w(&mut old, "/r", "again"), ok());
    assert_eq!(
        old.tx_req(SOCK, tx, MsgType::Read, &["/missing"]),
        Err(XsErrno::ENOENT)
    );
    let want = |p: &str, a: Access, v: &str, n: usize| (p.to_string(), a, v.to_string(), n);
    let expected = vec![
        want("/e", Access::READ_WRITTEN, "new", 1),
        want("/missing", Access::READ, "", 0),
        want("/r", Access::READ_WRITTEN, "again", 1),
        // Taken with the removal, not re-created by the write.
        want("/r/c", Access::NONE, "", 0),
        // Created as a parent: written, not read.
        want("/t", Access::WRITTEN, "", 1),
        want("/t/a", Access::READ_WRITTEN, "ta", 1),
        want("/x", Access::READ, "x", 1),
    ];
    assert_eq!(tx_nodes_full(&old.export()), expected);
    // A restored transaction writes the same records again, update after
    // update.
    let mut new = old.live_update();
    assert_eq!(tx_nodes_full(&new.export()), expected);
    new = new.live_update();
    assert_eq!(tx_nodes_full(&new.export()), expected);
    assert_eq!(new.req(SOCK, MsgType::Watch, &["/x", "x"]), ok());
    assert_eq!(new.tx_end(SOCK, tx, true), ok());
    assert_eq!(
        new.events(SOCK),
        ["/x"],
        "only the watch's first event: /x was read"
    );
    for (p, v) in [("/e", "new"), ("/r", "again"), ("/t/a", "ta"), ("/t", "")] {
        assert_eq!(
            new.req(SOCK, MsgType::Read, &[p]),
            Ok(v.as_bytes().to_vec()),
            "{p}"
        );
    }
    assert_eq!(
        new.req(SOCK, MsgType::Read, &["/r/c"]),
        Err(XsErrno::ENOENT)
    );
    assert_eq!(new.req(SOCK, MsgType::Directory, &["/r"]), Ok(Vec::new()));
}

#[test]
fn test_live_update_conflicting_transaction_shown_by_what_it_read() {
    let mut old = Eng::new(Config::default());
    assert_eq!(old.write(SOCK, "/x", "0"), ok());
    let tx = old.tx_start(SOCK);
    assert_eq!(
        old.tx_req(SOCK, tx, MsgType::Read, &["/x"]),
        Ok(b"0".to_vec())
    );
    assert_eq!(old.write(SOCK, "/x", "1"), ok());
    let records = old.export();
    assert_eq!(
        tx_nodes_full(&records),
        [("/x".to_string(), Access::READ, "0".to_string(), 1)],
        "what it saw, nothing more"
    );
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.tx_end(SOCK, tx, true), Err(XsErrno::EAGAIN));
    assert_eq!(new.req(SOCK, MsgType::Read, &["/x"]), Ok(b"1".to_vec()));
}

#[test]
fn test_live_update_conflict_no_read_shows_still_fails() {
    // A guest's write that its home's new permissions would refuse: no
    // node it read differs, so the stream must say otherwise that the
    // transaction cannot commit.
    let mut old = Eng::new(Config::default());
    let d5 = old.guest(5);
    let tx = old.tx_start(d5);
    assert_eq!(
        old.raw_tx(d5, MsgType::Write, tx, build_path_value(b"a", b"mine")),
        ok()
    );
    assert_eq!(
        old.req(SOCK, MsgType::SetPerms, &["/local/domain/5", "n0"]),
        ok()
    );
    let records = old.export();
    assert_eq!(
        tx_nodes_full(&records),
        [
            (
                "/local/domain/5/a".to_string(),
                Access::READ_WRITTEN,
                "mine".to_string(),
                1
            ),
            // "Read, absent" for `/`, which never holds.
            ("/".to_string(), Access::READ, String::new(), 0),
        ]
    );
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.tx_end(d5, tx, true), Err(XsErrno::EAGAIN));
    assert_eq!(
        new.req(SOCK, MsgType::Read, &["/local/domain/5/a"]),
        Err(XsErrno::ENOENT)
    );
}

#[test]
fn test_live_update_transaction_perms_change_told_to_who_could_read_before() {
    let mut old = Eng::new(Config::default());
    let g5 = old.guest(5);
    assert_eq!(old.write(SOCK, "/w", "x"), ok());
    assert_eq!(old.req(SOCK, MsgType::SetPerms, &["/w", "n0", "r5"]), ok());
    assert_eq!(old.req(g5, MsgType::Watch, &["/w", "t"]), ok());
    assert_eq!(old.events(g5), ["/w"], "the watch's first event");
    let tx = old.tx_start(SOCK);
    assert_eq!(old.tx_req(SOCK, tx, MsgType::SetPerms, &["/w", "n0"]), ok());
    let mut new = old.live_update();
    assert_eq!(new.tx_end(SOCK, tx, true), ok());
    // 5 may no longer read /w, but it could before the change: it hears of it.
    assert_eq!(new.events(g5), ["/w"]);
    assert_eq!(new.req(g5, MsgType::Read, &["/w"]), Err(XsErrno::EACCES));
}

#[test]
fn test_live_update_transaction_directory_part_is_a_read_that_can_conflict() {
    let mut old = Eng::new(Config::default());
    assert_eq!(old.write(SOCK, "/d/a", "1"), ok());
    let tx = old.tx_start(SOCK);
    assert!(old
        .tx_req(SOCK, tx, MsgType::DirectoryPart, &["/d", "0"])
        .is_ok());
    let records = old.export();
    assert_eq!(tx_records(&records), [("/d".to_string(), Access::READ)]);
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.write(SOCK, "/d/b", "2"), ok());
    assert_eq!(new.tx_end(SOCK, tx, true), Err(XsErrno::EAGAIN));
}

#[test]
fn test_restore_a_written_node_with_nothing_written_below_it_fires_its_event() {
    // Only a parent that the transaction created for a node written below
    // it is silent; a written node elsewhere does not make /p one.
    let old = Eng::new(Config::default());
    let records = with_transaction(
        old.export(),
        vec![
            tx_node(Access::WRITTEN, "/p", true, "v"),
            tx_node(Access::WRITTEN, "/elsewhere", true, "y"),
        ],
    );
    let mut new = old.restore(&records).unwrap();
    assert_eq!(new.req(SOCK, MsgType::Watch, &["/p", "t"]), ok());
    assert_eq!(new.events(SOCK), ["/p"], "the watch's first event");
    assert_eq!(new.tx_end(SOCK, 1, true), ok());
    assert_eq!(new.events(SOCK), ["/p"]);
}

/// Transaction ids after a live update: new ones never reuse a restored
/// id, and when they wrap past `u32::MAX` they skip 0 (which means "no
/// transaction") and every id still open.
#[test]
fn test_restored_transaction_ids_not_reused_and_zero_skipped_on_wrap() {
    let eng = Eng::new(Config::default());
    let conn_id = SOCK + STREAM;
    let mut records = eng.export();
    for tx_id in [1, u32::MAX - 1] {
        records.push(Record::Transaction(crate::migration::TransactionData {
            conn_id,
            tx_id,
        }));
    }
    let mut new = eng.restore(&records).unwrap();
    let ids: Vec<u32> = (0..2).map(|_| new.tx_start(SOCK)).collect();
    assert_eq!(ids, [u32::MAX, 2], "0 and the restored 1 are skipped");
    for id in [1, u32::MAX - 1, u32::MAX, 2] {
        assert_eq!(new.tx_end(SOCK, id, false), ok(), "transaction {id}");
    }
}
