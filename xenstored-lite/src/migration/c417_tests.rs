//! Unit tests of the C 4.17 form: the real C stream passes the model,
//! crafted streams breaking one rule each are refused by that rule, the
//! conversion of streams our writer makes, and a property: engine states
//! exported as our writer does, converted, pass the model and restore to
//! the same committed store.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use xenring::{Perm, PermKind};

use super::*;
use crate::migration::{
    DomainData, GlobalQuotaData, NodePerm, SocketConn, TransactionData, WatchDataExtended,
};

const FIXTURE: &[u8] = include_bytes!("testdata/c-xenstored-4.17-live-update.stream");

fn owner(domid: DomId) -> Vec<NodePerm> {
    vec![NodePerm::new(Perm::new(PermKind::None, domid))]
}

fn node(path: &str, owner_domid: DomId) -> Record {
    Record::Node(NodeData {
        conn_id: 0,
        tx_id: 0,
        access: Access::NONE,
        perms: owner(owner_domid),
        path: path.to_string(),
        value: b"v".to_vec(),
    })
}

fn ring(conn_id: u32, domid: DomId, tdomid: DomId, evtchn: u32) -> Record {
    Record::Connection(ConnectionData {
        conn_id,
        spec: ConnSpec::Ring(RingConn {
            domid,
            tdomid,
            evtchn,
        }),
        in_data: Vec::new(),
        out_resp_len: 0,
        out_data: Vec::new(),
        unique_id: None,
        ring: None,
    })
}

fn socket(conn_id: u32, fd: i32) -> Record {
    Record::Connection(ConnectionData {
        conn_id,
        spec: ConnSpec::Socket(SocketConn { socket_fd: fd }),
        in_data: b"part".to_vec(),
        out_resp_len: 0,
        out_data: Vec::new(),
        unique_id: None,
        ring: None,
    })
}

fn watch(conn_id: u32, path: &str, token: &str) -> Record {
    Record::Watch(WatchData {
        conn_id,
        wpath: path.to_string(),
        token: token.as_bytes().to_vec(),
    })
}

fn global() -> Record {
    Record::Global(GlobalData {
        rw_socket_fd: 3,
        evtchn_fd: 4,
    })
}

fn stream(version: Version, records: Vec<Record>) -> Stream {
    Stream {
        header: Header {
            version,
            endian: Endian::Little,
        },
        records,
    }
}

/// A stream C 4.17 takes: dom0's ring, domain 5's ring, a socket with a
/// watch, nodes with one owned by domain 5.
fn good_records() -> Vec<Record> {
    vec![
        global(),
        ring(1, 0, DOMID_INVALID, 2),
        ring(2, 5, DOMID_INVALID, 3),
        socket(3, 7),
        watch(3, "/local", "tok"),
        node("/", 0),
        node("/local", 0),
        node("/local/domain", 0),
        node("/local/domain/5", 5),
        node("@releaseDomain", 0),
    ]
}

fn bytes(records: Vec<Record>) -> Vec<u8> {
    stream(Version::V1, records).to_bytes().unwrap()
}

fn check(records: Vec<Record>) -> Result<C417Summary, C417Refusal> {
    check_c417(&bytes(records))
}

/// The octet offset of record `n` in `bytes`.
fn record_at(bytes: &[u8], n: usize) -> usize {
    let mut pos = 16;
    for _ in 0..n {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        pos += 8 + usize::try_from(len).unwrap();
    }
    pos
}

// ---------------------------------------------------------------- model

#[test]
fn test_c_written_stream_passes_the_model() {
    let summary = check_c417(FIXTURE).unwrap();
    assert_eq!(
        summary,
        C417Summary {
            rings: 2,
            sockets: 2,
            nodes: 16,
            watches: 2,
            ..Default::default()
        }
    );
}

#[test]
fn test_good_stream_passes_the_model() {
    let summary = check(good_records()).unwrap();
    assert_eq!(
        summary,
        C417Summary {
            rings: 2,
            sockets: 1,
            nodes: 5,
            watches: 1,
            ..Default::default()
        }
    );
}

/// One crafted stream per rule, each breaking only that rule.
#[test]
fn test_each_rule_refuses_its_breach() {
    type Case = (&'static str, Vec<u8>, fn(&C417Refusal) -> bool);
    let good = bytes(good_records());
    let with = |f: fn(&mut Vec<Record>)| {
        let mut r = good_records();
        f(&mut r);
        bytes(r)
    };
    let mut cases: Vec<Case> = Vec::new();

    let mut v2 = good.clone();
    v2[11] = 2;
    cases.push(("version 2", v2, |e| {
        matches!(e, C417Refusal::Version { version: 2 })
    }));
    let mut flags = good.clone();
    flags[15] = 1;
    cases.push(("big-endian flag", flags, |e| {
        matches!(e, C417Refusal::Flags { flags: 1 })
    }));
    let mut magic = good.clone();
    magic[0] = b'X';
    cases.push(("bad ident", magic, |e| {
        matches!(e, C417Refusal::BadMagic { .. })
    }));
    cases.push(("header cut", good[..10].to_vec(), |e| {
        matches!(e, C417Refusal::HeaderTruncated { have: 10 })
    }));
    cases.push((
        "socket record first",
        with(|r| {
            let s = r.remove(3);
            r.insert(1, s);
        }),
        |e| {
            matches!(
                e,
                C417Refusal::SocketBeforeDom0 {
                    index: 1,
                    conn_id: 3
                }
            )
        },
    ));
    cases.push(("domU ring first", with(|r| r.swap(1, 2)), |e| {
        matches!(
            e,
            C417Refusal::RingBeforeDom0 {
                index: 1,
                conn_id: 2,
                domid: 5
            }
        )
    }));
    cases.push((
        "node before the dom0 ring record",
        with(|r| {
            let n = r.remove(5);
            r.insert(1, n);
        }),
        |e| matches!(e, C417Refusal::NodeBeforeDom0 { index: 1, path } if path == "/"),
    ));
    cases.push(("no dom0 ring at all", bytes(vec![global()]), |e| {
        matches!(e, C417Refusal::NoDom0Ring)
    }));
    cases.push((
        "unknown owner",
        with(|r| r[8] = node("/local/domain/5", 9)),
        |e| {
            matches!(e, C417Refusal::UnknownOwner { index: 8, path, owner: 9 }
                if path == "/local/domain/5")
        },
    ));
    cases.push((
        "owner whose ring comes after the node",
        with(|r| {
            let dom5 = r.remove(2);
            r.push(dom5);
        }),
        |e| matches!(e, C417Refusal::UnknownOwner { owner: 5, .. }),
    ));
    cases.push(("child before parent", with(|r| r.swap(6, 7)), |e| {
        matches!(e, C417Refusal::OrphanNode { index: 6, path, parent }
                if path == "/local/domain" && parent == "/local")
    }));
    cases.push(
        ("duplicate path", with(|r| r.push(node("/local", 0))), |e| {
            matches!(e, C417Refusal::DuplicatePath { index: 10, path, first: 6 }
                if path == "/local")
        }),
    );
    cases.push((
        "perm_n 0",
        with(|r| {
            if let Record::Node(n) = &mut r[6] {
                n.perms.clear();
            }
        }),
        |e| matches!(e, C417Refusal::NoPermissions { index: 6, path } if path == "/local"),
    ));
    cases.push((
        "tx_id != 0 node",
        with(|r| {
            if let Record::Node(n) = &mut r[6] {
                n.tx_id = 4;
            }
        }),
        |e| {
            matches!(e, C417Refusal::TransactionNode { index: 6, tx_id: 4, conn_id: 0, path }
                if path == "/local")
        },
    ));
    cases.push((
        "transaction's node",
        with(|r| {
            if let Record::Node(n) = &mut r[6] {
                n.conn_id = 3;
                n.tx_id = 1;
            }
        }),
        |e| {
            matches!(
                e,
                C417Refusal::TransactionNode {
                    conn_id: 3,
                    tx_id: 1,
                    ..
                }
            )
        },
    ));
    cases.push((
        "TRANSACTION_DATA",
        with(|r| {
            r.insert(
                5,
                Record::Transaction(TransactionData {
                    conn_id: 3,
                    tx_id: 8,
                }),
            )
        }),
        |e| {
            matches!(
                e,
                C417Refusal::TransactionRecord {
                    index: 5,
                    conn_id: 3,
                    tx_id: 8
                }
            )
        },
    ));
    // Written as version 2 (the writer allows the record only there), then
    // given version 1.
    let mut ext = good_records();
    ext[4] = Record::WatchExtended(WatchDataExtended {
        conn_id: 3,
        wpath: "/local".into(),
        token: b"deep".to_vec(),
        depth: 2,
    });
    let mut ext = stream(Version::V2, ext).to_bytes().unwrap();
    ext[11] = 1;
    cases.push(("WATCH_DATA_EXTENDED", ext, |e| {
        matches!(e, C417Refusal::ExtendedWatchRecord { index: 4, conn_id: 3, path, token, depth: 2 }
            if path == "/local" && token == "deep")
    }));
    cases.push((
        "GLOBAL_QUOTA_DATA",
        with(|r| r.push(Record::GlobalQuota(GlobalQuotaData::default()))),
        |e| {
            matches!(e, C417Refusal::QuotaRecord { index: 10, record_type }
                if *record_type == RecordType::GLOBAL_QUOTA_DATA)
        },
    ));
    cases.push((
        "DOMAIN_DATA",
        with(|r| r.push(Record::Domain(DomainData::default()))),
        |e| {
            matches!(e, C417Refusal::QuotaRecord { record_type, .. }
                if *record_type == RecordType::DOMAIN_DATA)
        },
    ));
    let mut unknown = good.clone();
    let at = record_at(&unknown, 4);
    unknown[at] = 9;
    cases.push(("unknown record type", unknown, |e| {
        matches!(e, C417Refusal::UnknownRecordType { index: 4, record_type } if record_type.0 == 9)
    }));
    cases.push((
        "watch before its connection",
        with(|r| {
            let w = r.remove(4);
            r.insert(3, w);
        }),
        |e| {
            matches!(e, C417Refusal::WatchBeforeConnection { index: 3, conn_id: 3, path, token }
                if path == "/local" && token == "tok")
        },
    ));
    cases.push((
        "target after its user",
        with(|r| {
            r[2] = ring(2, 5, 6, 3);
            r.insert(3, ring(9, 6, DOMID_INVALID, 4));
        }),
        |e| {
            matches!(
                e,
                C417Refusal::TargetNotBefore {
                    index: 2,
                    conn_id: 2,
                    domid: 5,
                    tdomid: 6
                }
            )
        },
    ));
    cases.push((
        "two rings for one domain",
        with(|r| r.insert(3, ring(9, 5, DOMID_INVALID, 4))),
        |e| {
            matches!(
                e,
                C417Refusal::DuplicateDomain {
                    index: 3,
                    conn_id: 9,
                    domid: 5,
                    first_conn_id: 2
                }
            )
        },
    ));
    cases.push(("GLOBAL_DATA not first", with(|r| r.swap(0, 1)), |e| {
        matches!(e, C417Refusal::GlobalNotFirst { index: 0, .. })
    }));
    cases.push(("second GLOBAL_DATA", with(|r| r.push(global())), |e| {
        matches!(e, C417Refusal::SecondGlobal { index: 10 })
    }));
    cases.push(("missing END", good[..good.len() - 8].to_vec(), |e| {
        matches!(e, C417Refusal::MissingEnd { records: 10 })
    }));
    let mut after = good.clone();
    after.extend_from_slice(&[0; 8]);
    cases.push(("bytes after END", after, |e| {
        matches!(
            e,
            C417Refusal::TrailingBytes {
                index: 10,
                bytes: 8
            }
        )
    }));
    let mut end_body = good.clone();
    let n = end_body.len();
    end_body[n - 4] = 8;
    end_body.extend_from_slice(&[0; 8]);
    cases.push(("END with a body", end_body, |e| {
        matches!(e, C417Refusal::EndNotEmpty { index: 10, len: 8 })
    }));
    // The watch (record 4): 8 + 7 + 4 = 19 octets of fields, length 24;
    // written as 19 with the padding left out.
    let mut unpadded = good.clone();
    let at = record_at(&unpadded, 4);
    assert_eq!(unpadded[at + 4], 24);
    unpadded[at + 4] = 19;
    unpadded.drain(at + 8 + 19..at + 8 + 24);
    cases.push(("padding not counted", unpadded, |e| {
        matches!(
            e,
            C417Refusal::LengthNotPadded {
                index: 4,
                len: 19,
                ..
            }
        )
    }));
    // The same watch with 8 more octets than its lengths say.
    let mut long = good.clone();
    long[at + 4] = 32;
    long.splice(at + 8 + 24..at + 8 + 24, [0u8; 8]);
    cases.push(("length beyond the fields", long, |e| {
        matches!(
            e,
            C417Refusal::LengthMismatch {
                index: 4,
                len: 32,
                used: 19,
                padded: 24,
                ..
            }
        )
    }));
    // A token-len larger than the record.
    let mut lens = good.clone();
    lens[at + 8 + 6] = 40;
    cases.push(("u16 length past the record", lens, |e| {
        matches!(
            e,
            C417Refusal::LengthMismatch {
                index: 4,
                len: 24,
                ..
            }
        )
    }));
    // The path of node record 5 ("/", 2 octets) without its NUL.
    let mut unterminated = good.clone();
    let at5 = record_at(&unterminated, 5);
    unterminated[at5 + 8 + 16 + 4 + 1] = b'x';
    cases.push(("path without NUL", unterminated, |e| {
        matches!(
            e,
            C417Refusal::Unterminated {
                index: 5,
                field: "path",
                ..
            }
        )
    }));
    let mut cut = good.clone();
    let at9 = record_at(&cut, 9);
    cut.truncate(at9 + 12);
    cases.push(("record cut short", cut, |e| {
        matches!(e, C417Refusal::RecordTruncated { index: 9, .. })
    }));

    cases.push((
        "pending output ends inside a message",
        with(|r| {
            if let Record::Connection(c) = &mut r[3] {
                // A whole 3-octet reply, then 10 octets of a 16-octet header.
                c.out_data = [
                    &[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0][..],
                    b"OK\0",
                ]
                .concat();
                c.out_data.extend_from_slice(&[0; 10]);
            }
        }),
        |e| {
            matches!(
                e,
                C417Refusal::PartialOutput {
                    index: 3,
                    conn_id: 3,
                    out_resp_len: 0,
                    offset: 19
                }
            )
        },
    ));
    for (name, input, expected) in cases {
        match check_c417(&input) {
            Err(e) => assert!(expected(&e), "{name}: refused for another rule: {e}"),
            Ok(s) => panic!("{name}: accepted ({s:?})"),
        }
    }
}

#[test]
fn test_half_sent_output_then_whole_messages_pass() {
    let mut r = good_records();
    if let Record::Connection(c) = &mut r[3] {
        // The last 5 octets of a half-sent message, then a whole reply.
        c.out_data = b"12345".to_vec();
        c.out_data
            .extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]);
        c.out_data.extend_from_slice(b"OK\0");
        c.out_resp_len = 5;
    }
    check(r.clone()).unwrap();
    // Without out-resp-len the first 16 octets are taken for a message
    // (of length 0), and the 8 after it are a cut header.
    if let Record::Connection(c) = &mut r[3] {
        c.out_resp_len = 0;
    }
    assert!(matches!(
        check(r.clone()),
        Err(C417Refusal::PartialOutput { offset: 16, .. })
    ));
    let e = to_c417(&stream(Version::V1, r), &C417Options::default()).unwrap_err();
    assert!(
        matches!(e, C417Refusal::PartialOutput { conn_id: 3, .. }),
        "{e}"
    );
}

#[test]
fn test_refusals_name_what_is_at_fault() {
    let e = C417Refusal::UnknownOwner {
        index: 12,
        path: "/local/domain/7/x".into(),
        owner: 9,
    };
    let text = e.to_string();
    assert!(text.contains("/local/domain/7/x"), "{text}");
    assert!(text.contains("domain 9"), "{text}");
    assert!(text.contains("record 12"), "{text}");
    let e = C417Refusal::DepthWatch {
        index: 3,
        conn_id: 4,
        path: "/a".into(),
        token: "t".into(),
        depth: 1,
    };
    let text = e.to_string();
    assert!(text.contains("\"/a\"") && text.contains("\"t\"") && text.contains("connection 4"));
}

#[test]
fn test_trailing_extension_octets_of_a_connection_are_accepted() {
    // C ignores what follows a CONNECTION_DATA's data (checked on the
    // binary): our ring-location extension passes the model.
    let mut r = good_records();
    if let Record::Connection(c) = &mut r[2] {
        c.ring = Some(super::super::RingLocation {
            mfn: 0x1234,
            remote_port: 7,
        });
    }
    assert!(check(r).is_ok());
}

// ----------------------------------------------------------- conversion

/// A stream as our writer makes one: version 2, dom0 ring later than a
/// socket, extension fields, quotas, DOMAIN_DATA.
fn ours(records: Vec<Record>) -> Stream {
    stream(Version::V2, records)
}

fn quotas(list: &[(&str, u32)]) -> Vec<Quota> {
    list.iter()
        .map(|&(name, value)| Quota {
            name: name.into(),
            value,
        })
        .collect()
}

fn ours_typical() -> Vec<Record> {
    let mut dom5 = ring(5, 5, 6, 30);
    if let Record::Connection(c) = &mut dom5 {
        c.unique_id = Some(77);
        c.ring = Some(super::super::RingLocation {
            mfn: 0x55,
            remote_port: 9,
        });
    }
    vec![
        global(),
        socket(1, 10),
        ring(2, 0, DOMID_INVALID, 20),
        dom5,
        ring(6, 6, DOMID_INVALID, 31),
        node("@releaseDomain", 0),
        node("/", 0),
        node("/local", 0),
        node("/local/domain", 0),
        node("/local/domain/5", 5),
        node("/local/domain/6", 6),
        watch(1, "/local", "a"),
        Record::WatchExtended(WatchDataExtended {
            conn_id: 5,
            wpath: "/local/domain/5".into(),
            token: b"u".to_vec(),
            depth: DEPTH_UNLIMITED,
        }),
        Record::GlobalQuota(GlobalQuotaData {
            dom_quota: quotas(&[("nodes", 1000), ("watches", 128)]),
            glob_quota: Vec::new(),
        }),
        Record::Domain(DomainData {
            domain_id: 5,
            features: 1,
            quota: quotas(&[("nodes", 1000)]),
        }),
        Record::Domain(DomainData {
            domain_id: 6,
            features: 0,
            quota: Vec::new(),
        }),
    ]
}

fn conns_of(s: &Stream) -> Vec<(u32, Option<DomId>)> {
    s.records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) => Some((
                c.conn_id,
                match c.spec {
                    ConnSpec::Ring(r) => Some(r.domid),
                    ConnSpec::Socket(_) => None,
                },
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn test_conversion_puts_records_in_c_order() {
    let out = to_c417(&ours(ours_typical()), &C417Options::default()).unwrap();
    let s = &out.stream;
    assert_eq!(s.header.version, Version::V1);
    assert_eq!(s.header.endian, Endian::Little);
    assert!(matches!(s.records[0], Record::Global(_)));
    // dom0 first, domain 6 (5's target) before 5, then the socket.
    assert_eq!(
        conns_of(s),
        vec![(2, Some(0)), (6, Some(6)), (5, Some(5)), (1, None)]
    );
    // No extension fields, no transaction, quota or v2 records.
    for r in &s.records {
        match r {
            Record::Connection(c) => assert_eq!(c.fields(), 0),
            Record::Global(_) | Record::Node(_) | Record::Watch(_) => {}
            other => panic!("{other:?} in the C form"),
        }
    }
    // Each watch right after its connection; the unlimited one is plain.
    let kinds: Vec<String> = s
        .records
        .iter()
        .map(|r| match r {
            Record::Connection(c) => format!("c{}", c.conn_id),
            Record::Watch(w) => format!("w{}:{}", w.conn_id, w.wpath),
            Record::Node(_) => "n".into(),
            _ => "g".into(),
        })
        .collect();
    assert_eq!(
        kinds[..7],
        [
            "g",
            "c2",
            "c6",
            "c5",
            "w5:/local/domain/5",
            "c1",
            "w1:/local"
        ]
    );
    assert_eq!(
        out.global_quotas,
        quotas(&[("nodes", 1000), ("watches", 128)])
    );
    assert_eq!(out.domain_features, vec![(5, 1)]);
    assert!(out.dropped_domain_quotas.is_empty());
    assert_eq!(out.synthesized_dom0, None);
    assert!(out.dead_rings.is_empty());
    let summary = check_c417(&out.to_bytes().unwrap()).unwrap();
    assert_eq!((summary.rings, summary.sockets), (3, 1));
    assert_eq!((summary.nodes, summary.watches), (6, 2));
}

#[test]
fn test_conversion_writes_a_dom0_ring_when_there_is_none() {
    let mut r = ours_typical();
    r.remove(2); // dom0's ring (mock-xen, -D)
    let out = to_c417(&ours(r), &C417Options::default()).unwrap();
    // Ids 1, 5, 6 are taken: the first free one is 2.
    assert_eq!(
        out.synthesized_dom0,
        Some(InertRing {
            conn_id: 2,
            domid: 0
        })
    );
    let first = out.stream.records.iter().find_map(|r| match r {
        Record::Connection(c) => Some(c.clone()),
        _ => None,
    });
    let first = first.unwrap();
    assert_eq!(first.conn_id, 2);
    assert!(matches!(
        first.spec,
        ConnSpec::Ring(RingConn {
            domid: 0,
            evtchn: 0,
            ..
        })
    ));
    check_c417(&out.to_bytes().unwrap()).unwrap();
}

#[test]
fn test_conversion_keeps_cut_off_domains_with_inert_rings() {
    // Domain 6's ring connection was cut off: our writer leaves its record
    // out but keeps its DOMAIN_DATA, and it still owns its home.
    let mut r = ours_typical();
    r.remove(4);
    r[3] = ring(5, 5, DOMID_INVALID, 30);
    let out = to_c417(&ours(r), &C417Options::default()).unwrap();
    assert_eq!(
        out.dead_rings,
        vec![InertRing {
            conn_id: 3,
            domid: 6
        }]
    );
    assert_eq!(
        conns_of(&out.stream),
        vec![(2, Some(0)), (3, Some(6)), (5, Some(5)), (1, None)]
    );
    check_c417(&out.to_bytes().unwrap()).unwrap();
}

#[test]
fn test_conversion_refuses_targets_it_cannot_order() {
    let mut r = ours_typical();
    r[4] = ring(6, 6, 5, 31);
    let e = to_c417(&ours(r), &C417Options::default()).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::TargetCycle {
            conns: vec![(5, 5, 6), (6, 6, 5)]
        }
    );
    let mut r = ours_typical();
    r[3] = ring(5, 5, 8, 30);
    let e = to_c417(&ours(r), &C417Options::default()).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::MissingTarget {
            conn_id: 5,
            domid: 5,
            tdomid: 8
        }
    );
    // Dom0 naming any target (even itself) cannot come first.
    let mut r = ours_typical();
    r[2] = ring(2, 0, 0, 20);
    let e = to_c417(&ours(r), &C417Options::default()).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::Dom0Target {
            conn_id: 2,
            tdomid: 0
        }
    );
    let mut r = ours_typical();
    r[3] = ring(5, 5, 5, 30);
    let e = to_c417(&ours(r), &C417Options::default()).unwrap_err();
    assert!(matches!(e, C417Refusal::TargetCycle { .. }), "{e}");
}

#[test]
fn test_conversion_refuses_or_drops_open_transactions() {
    let mut r = ours_typical();
    r.push(Record::Transaction(TransactionData {
        conn_id: 1,
        tx_id: 3,
    }));
    r.push(Record::Node(NodeData {
        conn_id: 1,
        tx_id: 3,
        access: Access::WRITTEN,
        perms: owner(0),
        path: "/local/tx".into(),
        value: b"in tx".to_vec(),
    }));
    let s = ours(r);
    let e = to_c417(&s, &C417Options::default()).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::OpenTransaction {
            conn_id: 1,
            tx_id: 3
        }
    );
    let opts = C417Options {
        drop_transactions: true,
        ..Default::default()
    };
    let out = to_c417(&s, &opts).unwrap();
    assert_eq!(
        out.dropped_transactions,
        vec![StreamTransaction {
            conn_id: 1,
            tx_id: 3
        }]
    );
    assert!(!out.stream.records.iter().any(|r| matches!(r,
        Record::Node(n) if n.path == "/local/tx")));
    check_c417(&out.to_bytes().unwrap()).unwrap();
}

#[test]
fn test_conversion_refuses_depth_watches() {
    let mut r = ours_typical();
    if let Record::WatchExtended(w) = &mut r[12] {
        w.depth = 1;
    }
    let opts = C417Options {
        drop_transactions: true,
        drop_domain_quotas: true,
    };
    let e = to_c417(&ours(r), &opts).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::DepthWatch {
            index: 12,
            conn_id: 5,
            path: "/local/domain/5".into(),
            token: "u".into(),
            depth: 1
        }
    );
}

#[test]
fn test_conversion_refuses_or_drops_domain_quotas() {
    let mut r = ours_typical();
    r[14] = Record::Domain(DomainData {
        domain_id: 5,
        features: 0,
        quota: quotas(&[("nodes", 1000), ("watches", 4), ("transactions", 2)]),
    });
    let s = ours(r);
    let e = to_c417(&s, &C417Options::default()).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::DomainQuota {
            domid: 5,
            name: "watches".into(),
            value: 4,
            global: Some(128)
        }
    );
    let opts = C417Options {
        drop_domain_quotas: true,
        ..Default::default()
    };
    let out = to_c417(&s, &opts).unwrap();
    let dropped: Vec<(DomId, String, u32)> = out
        .dropped_domain_quotas
        .iter()
        .map(|d| (d.domid, d.quota.name.clone(), d.quota.value))
        .collect();
    assert_eq!(
        dropped,
        vec![(5, "watches".into(), 4), (5, "transactions".into(), 2)]
    );
}

#[test]
fn test_conversion_refuses_unknown_owners_whatever_the_options() {
    let mut r = ours_typical();
    r[10] = node("/local/domain/6", 9);
    let opts = C417Options {
        drop_transactions: true,
        drop_domain_quotas: true,
    };
    let e = to_c417(&ours(r), &opts).unwrap_err();
    assert_eq!(
        e,
        C417Refusal::UnknownOwner {
            index: 10,
            path: "/local/domain/6".into(),
            owner: 9
        }
    );
}

#[test]
fn test_conversion_refuses_broken_trees() {
    let opts = C417Options::default();
    let mut r = ours_typical();
    r.swap(7, 8);
    assert!(matches!(
        to_c417(&ours(r), &opts),
        Err(C417Refusal::OrphanNode { index: 7, .. })
    ));
    let mut r = ours_typical();
    r.insert(9, node("/local", 0));
    assert!(matches!(
        to_c417(&ours(r), &opts),
        Err(C417Refusal::DuplicatePath {
            index: 9,
            first: 7,
            ..
        })
    ));
    let mut r = ours_typical();
    if let Record::Node(n) = &mut r[7] {
        n.perms.clear();
    }
    assert!(matches!(
        to_c417(&ours(r), &opts),
        Err(C417Refusal::NoPermissions { index: 7, .. })
    ));
    let mut r = ours_typical();
    r.remove(0);
    assert_eq!(to_c417(&ours(r), &opts), Err(C417Refusal::MissingGlobal));
}

#[test]
fn test_conversion_of_the_c_stream_is_the_c_stream_reordered() {
    // C's own stream needs nothing dropped; only its record order changes
    // (connections with their watches first), and it passes the model.
    let s = Stream::parse(FIXTURE).unwrap();
    let out = to_c417(&s, &C417Options::default()).unwrap();
    let bytes = out.to_bytes().unwrap();
    assert_eq!(bytes.len(), FIXTURE.len());
    assert_eq!(
        conns_of(&out.stream),
        vec![(1, Some(0)), (3, Some(5)), (2, None), (4, None)]
    );
}

// ------------------------------------------- engine states (the shell)

#[cfg(feature = "std")]
mod engine_states {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use xenring::codec::{build_args, build_path_value, Message};
    use xenring::{DomId, MsgType};

    use super::super::*;
    use crate::engine::{Action, Config, ConnId, Engine};
    use crate::migration::{RingLocation, SocketConn};
    use crate::replay::format::{BoundaryEvent, ConnectKind, Outcome};
    use crate::shell::state::ShellState;

    /// The toolstack's socket.
    const TOOLSTACK: ConnId = 1;

    /// An engine driven through the shell's state, as the daemon drives it.
    struct Sim {
        state: ShellState,
        next_conn: ConnId,
        req_id: u32,
        /// Ring connections and their domains.
        rings: BTreeMap<ConnId, DomId>,
        sockets: BTreeSet<ConnId>,
    }

    impl Sim {
        fn new() -> Self {
            let mut s = Self {
                state: ShellState::new(Engine::new(Config::default()), None),
                next_conn: 1,
                req_id: 0,
                rings: BTreeMap::new(),
                sockets: BTreeSet::new(),
            };
            assert_eq!(s.socket(), TOOLSTACK);
            s
        }

        fn apply(&mut self, event: BoundaryEvent<'_>) {
            self.state.apply(event, &mut |_, _, _, _| {}).unwrap();
            loop {
                let actions = self.state.take_actions();
                if actions.is_empty() {
                    break;
                }
                for action in actions {
                    if let Action::Introduce { token, domid, .. } = action {
                        let conn = self.next_conn;
                        self.next_conn += 1;
                        self.rings.insert(conn, domid);
                        self.apply(BoundaryEvent::Introduced {
                            token,
                            result: Ok(conn),
                        });
                    }
                }
            }
        }

        /// Delivers all output (a client that keeps up).
        fn drain(&mut self) {
            for conn in self.state.conns_with_output() {
                while let Some(bytes) = self.state.next_output(conn).map(<[u8]>::to_vec) {
                    self.apply(BoundaryEvent::Output {
                        conn,
                        bytes: &bytes,
                    });
                }
            }
        }

        fn socket(&mut self) -> ConnId {
            let conn = self.next_conn;
            self.next_conn += 1;
            self.apply(BoundaryEvent::Connect {
                conn,
                kind: ConnectKind::Socket,
            });
            self.sockets.insert(conn);
            conn
        }

        fn dom0_ring(&mut self) {
            let conn = self.next_conn;
            self.next_conn += 1;
            self.apply(BoundaryEvent::Connect {
                conn,
                kind: ConnectKind::Ring(0),
            });
            self.rings.insert(conn, 0);
        }

        fn send(&mut self, conn: ConnId, ty: MsgType, tx: u32, payload: Vec<u8>) {
            self.req_id += 1;
            let bytes = Message::new(ty, self.req_id, tx, payload)
                .unwrap()
                .to_bytes();
            self.apply(BoundaryEvent::Input {
                conn,
                bytes: &bytes,
            });
            self.drain();
        }

        fn req(&mut self, conn: ConnId, ty: MsgType, args: &[&str]) {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            self.send(conn, ty, 0, build_args(&args));
        }

        fn write(&mut self, conn: ConnId, tx: u32, path: &str, value: &[u8]) {
            self.send(
                conn,
                MsgType::Write,
                tx,
                build_path_value(path.as_bytes(), value),
            );
        }

        /// A guest introduced as a toolstack does: its home, then INTRODUCE.
        fn guest(&mut self, domid: DomId) {
            let home = format!("/local/domain/{domid}");
            self.req(TOOLSTACK, MsgType::Mkdir, &[&home]);
            self.req(TOOLSTACK, MsgType::SetPerms, &[&home, &format!("n{domid}")]);
            let mfn = format!("{}", 0x1000 + u32::from(domid));
            self.req(
                TOOLSTACK,
                MsgType::Introduce,
                &[&domid.to_string(), &mfn, "7"],
            );
        }

        fn conn_of(&self, domid: DomId) -> Option<ConnId> {
            self.rings
                .iter()
                .find(|(_, &d)| d == domid)
                .map(|(&c, _)| c)
        }

        /// The stream `Daemon::export_stream` writes: GLOBAL_DATA, every
        /// live connection (cut-off ones left out) with its pending bytes,
        /// then the engine's records.
        fn export(&self) -> Stream {
            let mut records = vec![Record::Global(GlobalData {
                rw_socket_fd: 3,
                evtchn_fd: 4,
            })];
            let mut map = BTreeMap::new();
            let all: BTreeSet<ConnId> = self
                .rings
                .keys()
                .chain(self.sockets.iter())
                .copied()
                .collect();
            let engine = self.state.engine();
            for id in all {
                let Some(pending) = self.state.pending(id, None) else {
                    continue;
                };
                let (spec, ring, unique_id) = match self.rings.get(&id) {
                    None => (
                        ConnSpec::Socket(SocketConn {
                            socket_fd: 20 + i32::try_from(id).unwrap(),
                        }),
                        None,
                        None,
                    ),
                    Some(&domid) => (
                        ConnSpec::Ring(RingConn {
                            domid,
                            tdomid: engine.domain_target(domid).unwrap_or(DOMID_INVALID),
                            evtchn: 10 + u32::from(domid),
                        }),
                        engine
                            .domain_ring(domid)
                            .map(|(mfn, remote_port)| RingLocation { mfn, remote_port }),
                        (domid != 0).then_some(9000 + u64::from(domid)),
                    ),
                };
                map.insert(id, id);
                records.push(Record::Connection(ConnectionData {
                    conn_id: id,
                    spec,
                    in_data: pending.in_data,
                    out_resp_len: pending.out_resp_len,
                    out_data: pending.out_data,
                    unique_id,
                    ring,
                }));
            }
            records.extend(self.state.export_records(&map));
            Stream {
                header: Header {
                    version: Version::V2,
                    endian: Endian::Little,
                },
                records,
            }
        }
    }

    /// Every committed node: path, value, permissions.
    fn committed(engine: &Engine) -> BTreeSet<(String, Vec<u8>, String)> {
        engine
            .export_records(&BTreeMap::new())
            .into_iter()
            .filter_map(|r| match r {
                Record::Node(n) => Some((n.path, n.value, format!("{:?}", n.perms))),
                _ => None,
            })
            .collect()
    }

    /// Restores `bytes` into a fresh engine as the new process would (every
    /// connection taken over): its committed store.
    fn restore(bytes: &[u8]) -> BTreeSet<(String, Vec<u8>, String)> {
        let stream = Stream::parse(bytes).unwrap();
        let mut outcomes = Vec::new();
        for (n, r) in stream.records.iter().enumerate() {
            if let Record::Connection(c) = r {
                let id = 100 + ConnId::try_from(n).unwrap();
                outcomes.push((
                    c.conn_id,
                    match c.spec {
                        ConnSpec::Ring(_) => Outcome::Ring(id),
                        ConnSpec::Socket(_) => Outcome::Socket(id),
                    },
                ));
            }
        }
        let mut state = ShellState::new(Engine::new(Config::default()), None);
        state.restore(bytes, &stream, &outcomes).unwrap();
        committed(state.engine())
    }

    #[test]
    fn test_realistic_session_converts_and_restores() {
        let mut s = Sim::new();
        let watcher = s.socket();
        s.req(watcher, MsgType::Watch, &["/local", "w"]);
        s.dom0_ring();
        for d in [3, 1, 2] {
            s.guest(d);
        }
        // Domain 3 acts for domain 2 (a stub domain for its guest): 3's
        // ring is older than 2's, so the order must change.
        s.req(TOOLSTACK, MsgType::SetTarget, &["3", "2"]);
        let g1 = s.conn_of(1).unwrap();
        s.write(g1, 0, "data/k", b"v1");
        s.req(g1, MsgType::Watch, &["/local/domain/1/data", "g"]);
        s.write(TOOLSTACK, 0, "/vm/x", b"y");
        s.req(TOOLSTACK, MsgType::SetPerms, &["/vm/x", "n1", "r2"]);
        let stream = s.export();
        let out = to_c417(&stream, &C417Options::default()).unwrap();
        let bytes = out.to_bytes().unwrap();
        let summary = check_c417(&bytes).unwrap();
        assert_eq!(summary.rings, 4);
        assert_eq!(summary.watches, 2);
        let doms: Vec<DomId> = conns_of(&out.stream)
            .into_iter()
            .filter_map(|c| c.1)
            .collect();
        assert_eq!(doms[0], 0);
        let pos = |d| doms.iter().position(|&x| x == d).unwrap();
        assert!(pos(2) < pos(3), "{doms:?}");
        assert_eq!(restore(&bytes), committed(s.state.engine()));
    }

    fn conns_of(s: &Stream) -> Vec<(u32, Option<DomId>)> {
        super::conns_of(s)
    }

    /// A node to write: (root index, name, value, owner index, reader
    /// index).
    type NodePlan = (usize, u8, Vec<u8>, usize, Option<usize>);

    /// One random engine state.
    #[derive(Debug, Clone)]
    struct Plan {
        dom0_ring: bool,
        /// Domains in the order introduced, each with a target (by index,
        /// taken only when it names a larger domid: no cycles) and
        /// whether its ring is cut off afterwards.
        guests: Vec<(DomId, Option<usize>, bool)>,
        sockets: usize,
        nodes: Vec<NodePlan>,
        /// (connection index, node index, token)
        watches: Vec<(usize, usize, u8)>,
        /// A transaction left open on the toolstack's socket.
        open_tx: bool,
    }

    fn plan() -> impl Strategy<Value = Plan> {
        (
            any::<bool>(),
            proptest::sample::subsequence((1u16..=6).collect::<Vec<_>>(), 0..=4).prop_shuffle(),
            proptest::collection::vec((any::<Option<usize>>(), proptest::bool::weighted(0.2)), 4),
            0usize..3,
            proptest::collection::vec(
                (
                    0usize..4,
                    0u8..6,
                    proptest::collection::vec(any::<u8>(), 0..6),
                    any::<usize>(),
                    any::<Option<usize>>(),
                ),
                0..12,
            ),
            proptest::collection::vec((any::<usize>(), any::<usize>(), 0u8..3), 0..5),
            proptest::bool::weighted(0.2),
        )
            .prop_map(
                |(dom0_ring, doms, extra, sockets, nodes, watches, open_tx)| Plan {
                    dom0_ring,
                    guests: doms
                        .iter()
                        .zip(extra)
                        .map(|(&d, (t, cut))| (d, t, cut))
                        .collect(),
                    sockets,
                    nodes,
                    watches,
                    open_tx,
                },
            )
    }

    fn build(plan: &Plan) -> Sim {
        let mut s = Sim::new();
        for _ in 0..plan.sockets {
            s.socket();
        }
        if plan.dom0_ring {
            s.dom0_ring();
        }
        let doms: Vec<DomId> = plan.guests.iter().map(|g| g.0).collect();
        for &d in &doms {
            s.guest(d);
        }
        for &(d, target, _) in &plan.guests {
            let Some(t) = target.map(|t| doms[t % doms.len()]) else {
                continue;
            };
            if t > d {
                s.req(
                    TOOLSTACK,
                    MsgType::SetTarget,
                    &[&d.to_string(), &t.to_string()],
                );
            }
        }
        let owners: Vec<DomId> = core::iter::once(0).chain(doms.iter().copied()).collect();
        let mut paths = Vec::new();
        for (root, name, value, o, reader) in &plan.nodes {
            let base = match root {
                0 => "/tool".to_string(),
                1 => "/vm/a".to_string(),
                _ if doms.is_empty() => "/local".to_string(),
                _ => format!("/local/domain/{}", doms[usize::from(*name) % doms.len()]),
            };
            let path = format!("{base}/n{name}");
            s.write(TOOLSTACK, 0, &path, value);
            let owner = owners[o % owners.len()];
            let mut perms = vec![format!("n{owner}")];
            if let Some(r) = reader {
                perms.push(format!("r{}", owners[r % owners.len()]));
            }
            let mut args = vec![path.as_str()];
            args.extend(perms.iter().map(String::as_str));
            s.req(TOOLSTACK, MsgType::SetPerms, &args);
            paths.push(path);
        }
        let conns: Vec<ConnId> = s.sockets.iter().chain(s.rings.keys()).copied().collect();
        for &(c, p, token) in &plan.watches {
            let path = paths
                .get(p % paths.len().max(1))
                .cloned()
                .unwrap_or("/".into());
            s.req(
                conns[c % conns.len()],
                MsgType::Watch,
                &[&path, &format!("t{token}")],
            );
        }
        // Guests write in their homes.
        for &d in &doms {
            if let Some(conn) = s.conn_of(d) {
                s.write(conn, 0, "data/own", b"mine");
            }
        }
        if plan.open_tx {
            s.send(TOOLSTACK, MsgType::TransactionStart, 0, build_args(&[b""]));
            s.write(TOOLSTACK, 1, "/tool/in-tx", b"t");
        }
        for &(d, _, cut) in &plan.guests {
            if let (true, Some(conn)) = (cut, s.conn_of(d)) {
                s.apply(BoundaryEvent::Violation { conn });
            }
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        })]

        #[test]
        fn prop_exported_states_convert_pass_and_restore(plan in plan()) {
            let s = build(&plan);
            let stream = s.export();
            let opts = C417Options {
                drop_transactions: true,
                drop_domain_quotas: false,
            };
            let out = to_c417(&stream, &opts).unwrap();
            prop_assert_eq!(out.dropped_transactions.is_empty(), !plan.open_tx);
            prop_assert_eq!(out.synthesized_dom0.is_some(), !plan.dom0_ring);
            let cut = plan.guests.iter().filter(|g| g.2).count();
            prop_assert_eq!(out.dead_rings.len(), cut);
            let bytes = out.to_bytes().unwrap();
            let summary = check_c417(&bytes).unwrap();
            prop_assert_eq!(summary.rings, 1 + plan.guests.len());
            prop_assert_eq!(summary.sockets, 1 + plan.sockets);
            let again = Stream::parse(&bytes).unwrap();
            prop_assert_eq!(&again, &out.stream);
            let restored = restore(&bytes);
            prop_assert_eq!(restored, committed(s.state.engine()));
            let dry = crate::shell::check_stream(Config::default(), &bytes, &again).unwrap();
            prop_assert_eq!(dry.watches, summary.watches);
            prop_assert_eq!(dry.nodes, summary.nodes);
            if plan.open_tx {
                prop_assert_eq!(
                    to_c417(&stream, &C417Options::default()).unwrap_err(),
                    C417Refusal::OpenTransaction { conn_id: 1, tx_id: 1 }
                );
            }
        }
    }
}

#[test]
fn test_the_model_counts_permissions_c_drops_for_domains_it_does_not_know() {
    let mut records = good_records();
    // /local/domain/5/x: owned by 5 (its ring is there), readable by 5
    // (known: kept), by 9 (no ring: C drops it) and by dom0 (kept).
    let perms = vec![
        NodePerm::new(Perm::new(PermKind::None, 5)),
        NodePerm::new(Perm::new(PermKind::Read, 5)),
        NodePerm::new(Perm::new(PermKind::Read, 9)),
        NodePerm::new(Perm::new(PermKind::Read, 0)),
    ];
    records.push(Record::Node(NodeData {
        conn_id: 0,
        tx_id: 0,
        access: Access::NONE,
        perms,
        path: "/local/domain/5/x".to_string(),
        value: Vec::new(),
    }));
    // The owner alone is never counted (an unknown owner is refused).
    let summary = check(records.clone()).unwrap();
    assert_eq!(summary.dropped_perms, 1);
    assert_eq!(
        summary.dropped_perm_examples,
        [("/local/domain/5/x".to_string(), 9)]
    );
    assert_eq!(
        summary.dropped_perms_note().unwrap(),
        "C xenstored 4.17 will drop 1 permission entry naming domains that have no ring (it \
         keeps only those of domains it knows): /local/domain/5/x (domain 9)"
    );
    assert_eq!(check(good_records()).unwrap().dropped_perms_note(), None);
    // Past the examples' bound only the count grows.
    for k in 0..DROPPED_PERM_EXAMPLES + 2 {
        records.push(Record::Node(NodeData {
            conn_id: 0,
            tx_id: 0,
            access: Access::NONE,
            perms: vec![
                NodePerm::new(Perm::new(PermKind::None, 0)),
                NodePerm::new(Perm::new(PermKind::Write, 12)),
            ],
            path: format!("/local/domain/5/y{k}"),
            value: Vec::new(),
        }));
    }
    let summary = check(records).unwrap();
    assert_eq!(summary.dropped_perms, DROPPED_PERM_EXAMPLES + 3);
    assert_eq!(summary.dropped_perm_examples.len(), DROPPED_PERM_EXAMPLES);
    let note = summary.dropped_perms_note().unwrap();
    assert!(note.contains("drop 11 permission entries"), "{note}");
    assert!(
        note.ends_with("/local/domain/5/y6 (domain 12), ..."),
        "{note}"
    );
}

#[test]
fn test_nodes_go_to_c_depth_first_with_siblings_in_their_order() {
    // Our writer's order: level by level, siblings in creation order (b
    // before a), the special nodes last.
    let mut records = vec![global(), ring(1, 0, DOMID_INVALID, 2)];
    for p in [
        "/",
        "/b",
        "/a",
        "/b/y",
        "/a/x",
        "/a/w",
        "/a/x/z",
        "/b/y/q",
        "@releaseDomain",
    ] {
        records.push(node(p, 0));
    }
    let converted = to_c417(&stream(Version::V2, records), &C417Options::default()).unwrap();
    let paths: Vec<&str> = converted.stream.nodes().map(|n| n.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/",
            "/b",
            "/b/y",
            "/b/y/q",
            "/a",
            "/a/x",
            "/a/x/z",
            "/a/w",
            "@releaseDomain"
        ]
    );
    check_c417(&converted.to_bytes().unwrap()).unwrap();
}
