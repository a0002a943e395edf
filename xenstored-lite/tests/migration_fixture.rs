//! The real stream Xen 4.17's C xenstored wrote at `xenstore-control
//! live-update` parses to exactly the state the daemon held, and writes
//! back to the identical 1048 octets (`src/migration/testdata/README.md`
//! says how the stream was made and what it holds).

use xenring::{Perm, PermKind};
use xenstored_lite::migration::{
    parse, write, Access, ConnSpec, ConnectionData, Endian, GlobalData, Header, MigrationError,
    NodeData, NodePerm, Record, RingConn, SocketConn, Version, WatchData, DOMID_INVALID,
};

const FIXTURE: &[u8] =
    include_bytes!("../src/migration/testdata/c-xenstored-4.17-live-update.stream");

fn node(path: &str, value: &[u8], perms: &[(PermKind, u16)]) -> Record {
    Record::Node(NodeData {
        conn_id: 0,
        tx_id: 0,
        access: Access::NONE,
        perms: perms
            .iter()
            .map(|&(kind, domid)| NodePerm::new(Perm::new(kind, domid)))
            .collect(),
        path: path.into(),
        value: value.to_vec(),
    })
}

fn ring(conn_id: u32, domid: u16, evtchn: u32) -> Record {
    Record::Connection(ConnectionData {
        conn_id,
        spec: ConnSpec::Ring(RingConn {
            domid,
            tdomid: DOMID_INVALID,
            evtchn,
        }),
        in_data: vec![],
        out_resp_len: 0,
        out_data: vec![],
        unique_id: None,
        ring: None,
    })
}

#[test]
fn fixture_is_1048_octets() {
    assert_eq!(FIXTURE.len(), 1048);
}

#[test]
fn fixture_parses_to_exactly_the_daemon_state() {
    use PermKind::{Both, None as N, Read};

    let stream = parse(FIXTURE).expect("C xenstored's stream parses");
    assert_eq!(
        stream.header,
        Header {
            version: Version::V1,
            endian: Endian::Little
        }
    );

    // The half-received READ: a 16-octet header (type 2 = XS_READ, req_id 9,
    // tx_id 0, len 20) then the first 10 of its 20 payload octets.
    let mut partial_read = Vec::new();
    for word in [2u32, 9, 0, 20] {
        partial_read.extend_from_slice(&word.to_le_bytes());
    }
    partial_read.extend_from_slice(b"/local/dom");
    assert_eq!(partial_read.len(), 26);

    // The queued reply to `xenstore-control live-update`: a header (type 0
    // = XS_CONTROL, req_id 0, tx_id 0, len 3) then "OK\0".
    let mut ok_reply = Vec::new();
    for word in [0u32, 0, 0, 3] {
        ok_reply.extend_from_slice(&word.to_le_bytes());
    }
    ok_reply.extend_from_slice(b"OK\0");

    let expected = vec![
        Record::Global(GlobalData {
            rw_socket_fd: 3,
            evtchn_fd: 6,
        }),
        // dom0's own ring: local port 2.
        ring(1, 0, 2),
        // The socket client with the watches and the partial READ.
        Record::Connection(ConnectionData {
            conn_id: 2,
            spec: ConnSpec::Socket(SocketConn { socket_fd: 7 }),
            in_data: partial_read,
            out_resp_len: 0,
            out_data: vec![],
            unique_id: None,
            ring: None,
        }),
        Record::Watch(WatchData {
            conn_id: 2,
            wpath: "/vm/abc".into(),
            token: b"tok-a".to_vec(),
        }),
        Record::Watch(WatchData {
            conn_id: 2,
            wpath: "@releaseDomain".into(),
            token: b"rel".to_vec(),
        }),
        // Domain 5's ring (introduced with gfn 4660, remote port 7): C
        // records only its local port, 3.
        ring(3, 5, 3),
        // The client that asked for the update, with `OK` queued.
        Record::Connection(ConnectionData {
            conn_id: 4,
            spec: ConnSpec::Socket(SocketConn { socket_fd: 8 }),
            in_data: vec![],
            out_resp_len: 0,
            out_data: ok_reply,
            unique_id: None,
            ring: None,
        }),
        // Nodes, parents first.
        node("@releaseDomain", b"", &[(N, 0)]),
        node("@introduceDomain", b"", &[(N, 0)]),
        node("/", b"", &[(N, 0)]),
        node("/tool", b"", &[(N, 0)]),
        node("/tool/xenstored", b"", &[(N, 0)]),
        node("/tool/xenstored/test", b"hello", &[(N, 0)]),
        node("/local", b"", &[(N, 0)]),
        node("/local/domain", b"", &[(N, 0)]),
        node("/local/domain/0", b"", &[(N, 0)]),
        node("/local/domain/0/domid", b"0", &[(N, 0)]),
        node("/local/domain/0/name", b"Domain-0", &[(N, 0)]),
        node("/local/domain/5", b"", &[(Both, 5)]),
        node("/local/domain/5/name", b"guest5", &[(N, 0)]),
        node("/vm", b"", &[(N, 0)]),
        node("/vm/abc", b"", &[(N, 0), (Read, 5)]),
        node("/vm/abc/name", b"guest-a", &[(N, 0)]),
    ];
    for (i, (got, want)) in stream.records.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "record {i}");
    }
    assert_eq!(stream.records.len(), expected.len());
}

#[test]
fn fixture_writes_back_identically() {
    let stream = parse(FIXTURE).unwrap();
    let bytes = write(&stream).unwrap();
    assert_eq!(bytes.len(), 1048);
    assert_eq!(bytes, FIXTURE);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for n in 0..FIXTURE.len() {
        let err = parse(&FIXTURE[..n]).expect_err("a truncated stream is rejected");
        // Every error names where it is.
        assert!(!err.to_string().is_empty());
        if n >= 16 {
            assert!(
                matches!(
                    err,
                    MigrationError::MissingEnd
                        | MigrationError::RecordHeaderTruncated { .. }
                        | MigrationError::RecordTruncated { .. }
                ),
                "{n}: {err:?}"
            );
        }
    }
}

#[test]
fn errors_read_well() {
    let mut bad = FIXTURE.to_vec();
    bad[0x138] = b'x';
    let err = parse(&bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 7 (NODE_DATA): bad `perm`: entry 1: unknown permission letter 0x78"
    );
}
