//! Unit tests of the live update: a daemon in this process, on a mock-xen
//! served by a thread of this process, with clients on its socket and
//! guests on their rings. The export is read back as a stream; the restore
//! takes over duplicates of the descriptors the export names, as the new
//! process takes over the old one's across `exec()`.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mock_xen::{Connector, DomainRecord, Guest, ServerThread};
use xenring::codec::{build_args, build_path_value, Decoder};
use xenring::{DomId, Header, Message, MsgType, XsErrno};

use super::session::{parse_start, Session, StartOptions};
use super::*;
use crate::engine::RestoreError;
use crate::engine::{Config, ConnId, Engine};
use crate::migration::{
    ConnSpec, ConnectionData, Endian, GlobalData, Header as StreamHeader, Record, RingConn,
    RingLocation, SocketConn, Stream, Version, DOMID_INVALID,
};
use crate::migration::{TransactionData, WatchData};
use crate::shell::os::fd_is_open;
use crate::shell::platform::Platform;
use crate::shell::platform::PlatformChoice;
use crate::shell::state::TakeOverError;
use crate::shell::test_world::*;
use crate::shell::transport::Transport;
use crate::shell::Daemon;

fn socket_fd(daemon: &Daemon, id: ConnId) -> RawFd {
    match &daemon.conns[&id].transport {
        Transport::Socket(s) => s.as_raw_fd(),
        Transport::Ring { .. } => panic!("connection {id} is a ring"),
    }
}

fn conn_record(stream: &Stream, conn_id: u32) -> &ConnectionData {
    stream
        .records
        .iter()
        .find_map(|r| match r {
            Record::Connection(c) if c.conn_id == conn_id => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no record of connection {conn_id}"))
}

fn has_cloexec(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) };
    assert!(flags >= 0, "descriptor {fd} is not open");
    flags & nix::libc::FD_CLOEXEC != 0
}

/// A duplicate of `fd` that the caller owns (the new process's copy).
fn dup(fd: RawFd) -> RawFd {
    // SAFETY: `fd` is open in this process; borrowed for the call only.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::unistd::dup(borrowed).unwrap().into_raw_fd()
}

/// What the new process is handed: `stream` with every descriptor it
/// names duplicated (the old daemon keeps its own), as bytes and parsed.
fn passed_down(mut stream: Stream) -> (Vec<u8>, Stream) {
    for r in &mut stream.records {
        match r {
            Record::Global(g) => {
                g.rw_socket_fd = dup(g.rw_socket_fd);
                g.evtchn_fd = dup(g.evtchn_fd);
            }
            Record::Connection(ConnectionData {
                spec: ConnSpec::Socket(s),
                ..
            }) => s.socket_fd = dup(s.socket_fd),
            _ => {}
        }
    }
    let bytes = stream.to_bytes().unwrap();
    let parsed = Stream::parse(&bytes).unwrap();
    assert_eq!(parsed, stream);
    (bytes, parsed)
}

/// The new process's side: the platform adopted from the stream's
/// event-channel handle, then the restore.
fn take_over(w: &World, bytes: &[u8], stream: &Stream) -> (Daemon, RestoreSummary) {
    let evtchn_fd = stream.global().map_or(-1, |g| g.evtchn_fd);
    let platform = Platform::adopt(
        &PlatformChoice::Remote(w.hv.path().to_path_buf()),
        w.dir.path(),
        evtchn_fd,
    )
    .unwrap();
    Daemon::restore(
        Engine::new(Config::default()),
        platform,
        &shell_config(w.dir.path()),
        bytes,
        stream,
    )
    .unwrap()
}

/// A daemon with a guest (domain 1, ring), a client with a value, a
/// watch, an open transaction and half a request read, and a client with
/// a reply of which 5 octets were written: what each export must carry.
struct Busy {
    w: World,
    rec: DomainRecord,
    watcher: Client,
    tx: u32,
    half: Vec<u8>,
    reader: Client,
    reply: Vec<u8>,
}

const HALF_REQUEST: usize = 10;
const WRITTEN: usize = 5;

fn busy() -> Busy {
    let mut w = World::new();
    let mut watcher = w.connect();
    let rec = w.guest(&mut watcher);
    let d = &mut w.daemon;
    watcher.ok(d, MsgType::Write, 0, build_path_value(b"/a", b"1"));
    watcher.ok(d, MsgType::Watch, 0, build_args(&[b"/a", b"tok"]));
    assert_eq!(watcher.watch_event(d), ("/a".into(), "tok".into()));
    let tx: u32 = text(&watcher.ok(d, MsgType::TransactionStart, 0, vec![0]))
        .parse()
        .unwrap();
    watcher.ok(d, MsgType::Write, tx, build_path_value(b"/a/t", b"x"));
    // A global quota and one of the guest's own.
    watcher.ok(d, MsgType::SetQuota, 0, build_args(&[b"watches", b"7"]));
    let domid = rec.info.domid.to_string();
    watcher.ok(
        d,
        MsgType::SetQuota,
        0,
        build_args(&[domid.as_bytes(), b"nodes", b"77"]),
    );
    let read = Message::new(MsgType::Read, 7, 0, build_args(&[b"/a"]))
        .unwrap()
        .to_bytes();
    let half = read[..HALF_REQUEST].to_vec();
    watcher.send_raw(&half);
    let id = watcher.id;
    until(d, "half a request read", |d| {
        d.core
            .pending(id, None)
            .is_some_and(|p| p.in_data.len() == HALF_REQUEST)
    });

    let mut reader = w.connect();
    let d = &mut w.daemon;
    reader.send(MsgType::Read, 0, build_args(&[b"/a"]));
    // Read the request but write only part of the reply, as a socket that
    // took 5 octets does.
    until(d, "the request read", |d| {
        d.service_socket(reader.id);
        d.core.conns_with_output().contains(&reader.id)
    });
    let reply = d.core.next_output(reader.id).unwrap().to_vec();
    let Transport::Socket(s) = &mut d.conns.get_mut(&reader.id).unwrap().transport else {
        panic!("not a socket");
    };
    s.write_all(&reply[..WRITTEN]).unwrap();
    d.core.wrote(reader.id, WRITTEN);
    Busy {
        w,
        rec,
        watcher,
        tx,
        half,
        reader,
        reply,
    }
}

#[test]
fn test_export_carries_descriptors_connections_and_engine_state() {
    let mut b = busy();
    let d = &mut b.w.daemon;
    let stream = d.export_stream(Version::V2, None);
    assert_eq!(stream.header.version, Version::V2);
    assert_eq!(
        stream.header.endian,
        if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        }
    );
    let evtchn_fd = d.platform.evtchn.handle_fd();
    assert!(evtchn_fd >= 0);
    assert_eq!(
        stream.records[0],
        Record::Global(GlobalData {
            rw_socket_fd: d.listener.as_raw_fd(),
            evtchn_fd,
        })
    );

    // Stream connection ids are ours.
    let watcher = conn_record(&stream, b.watcher.id);
    assert_eq!(
        watcher.spec,
        ConnSpec::Socket(SocketConn {
            socket_fd: socket_fd(d, b.watcher.id)
        })
    );
    assert_eq!(watcher.in_data, b.half);
    assert!(watcher.out_data.is_empty());
    assert_eq!(watcher.out_resp_len, 0);
    assert_eq!((watcher.unique_id, watcher.ring), (None, None));

    let reader = conn_record(&stream, b.reader.id);
    assert_eq!(reader.out_data, &b.reply[WRITTEN..]);
    assert_eq!(usize::from(reader.out_resp_len), b.reply.len() - WRITTEN);
    assert!(reader.in_data.is_empty());

    let (ring_id, port) = d
        .conns
        .iter()
        .find_map(|(&id, c)| c.transport.port().map(|port| (id, port)))
        .unwrap();
    let ring = conn_record(&stream, ring_id);
    assert_eq!(
        ring.spec,
        ConnSpec::Ring(RingConn {
            domid: b.rec.info.domid,
            tdomid: DOMID_INVALID,
            evtchn: port.get(),
        })
    );
    assert_eq!(
        ring.ring,
        Some(RingLocation {
            mfn: b.rec.store_mfn,
            remote_port: b.rec.store_port,
        })
    );
    assert_eq!(ring.unique_id, Some(b.rec.info.unique_id));

    let connections = stream
        .records
        .iter()
        .filter(|r| matches!(r, Record::Connection(_)))
        .count();
    assert_eq!(connections, 3);
    // Without a depth, a plain WATCH_DATA even in version 2.
    assert!(stream.records.contains(&Record::Watch(WatchData {
        conn_id: b.watcher.id,
        wpath: "/a".into(),
        token: b"tok".to_vec(),
    })));
    assert!(stream
        .records
        .contains(&Record::Transaction(TransactionData {
            conn_id: b.watcher.id,
            tx_id: b.tx,
        })));
    assert!(stream.records.iter().any(|r| matches!(
        r,
        Record::Node(n) if n.path == "/a" && n.value == b"1" && n.conn_id == 0
    )));

    let quota = |q: &[crate::migration::Quota], name: &str| {
        q.iter().find(|q| q.name == name).map(|q| q.value)
    };
    let global = stream
        .records
        .iter()
        .find_map(|r| match r {
            Record::GlobalQuota(g) => Some(g),
            _ => None,
        })
        .unwrap();
    assert_eq!(quota(&global.dom_quota, "watches"), Some(7));
    let domain = stream
        .records
        .iter()
        .find_map(|r| match r {
            Record::Domain(dd) if dd.domain_id == b.rec.info.domid => Some(dd),
            _ => None,
        })
        .unwrap();
    assert_eq!(quota(&domain.quota, "nodes"), Some(77));

    // Exporting took nothing: the daemon still writes the reply's rest.
    until(d, "the rest of the reply", |_| {
        b.reader.poll();
        b.reader.raw.len() >= b.reply.len()
    });
    assert_eq!(b.reader.raw, b.reply);
}

#[test]
fn test_export_in_version_1_writes_plain_watches() {
    let mut b = busy();
    let stream = b.w.daemon.export_stream(Version::V1, None);
    assert_eq!(stream.header.version, Version::V1);
    assert!(stream.records.contains(&Record::Watch(WatchData {
        conn_id: b.watcher.id,
        wpath: "/a".into(),
        token: b"tok".to_vec(),
    })));
    stream.to_bytes().unwrap();
}

#[test]
fn test_export_names_the_target_of_a_ring() {
    let mut w = World::new();
    let mut dom0 = w.connect();
    let first = w.guest(&mut dom0);
    let second = w.guest(&mut dom0);
    let args = [first.info.domid.to_string(), second.info.domid.to_string()];
    dom0.ok(
        &mut w.daemon,
        MsgType::SetTarget,
        0,
        build_args(&[args[0].as_bytes(), args[1].as_bytes()]),
    );
    let stream = w.daemon.export_stream(Version::V2, None);
    let tdomids: Vec<(DomId, DomId)> = stream
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(ConnectionData {
                spec: ConnSpec::Ring(r),
                ..
            }) => Some((r.domid, r.tdomid)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tdomids,
        [
            (first.info.domid, second.info.domid),
            (second.info.domid, DOMID_INVALID)
        ]
    );
}

#[test]
fn test_export_leaves_out_a_ring_that_was_cut_off() {
    let mut w = World::new();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let mut guest = Guest::attach(&w.connector(), &rec).unwrap();
    guest.send_oversized().unwrap();
    let ring = w
        .daemon
        .conns
        .iter()
        .find_map(|(&id, c)| c.domid().map(|_| id))
        .unwrap();
    until(&mut w.daemon, "the ring cut off", |d| !d.core.is_live(ring));
    let stream = w.daemon.export_stream(Version::V2, None);
    let ids: Vec<u32> = stream
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) => Some(c.conn_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [dom0.id]);
}

#[test]
fn test_restore_takes_over_every_connection_where_it_stopped() {
    let mut b = busy();
    let stream = b.w.daemon.export_stream(Version::V2, None);
    let nodes = stream
        .records
        .iter()
        .filter(|r| matches!(r, Record::Node(n) if n.conn_id == 0))
        .count();
    let (bytes, stream) = passed_down(stream);
    let listener_fd = match stream.records[0] {
        Record::Global(g) => g.rw_socket_fd,
        _ => unreachable!(),
    };
    let (mut d, summary) = take_over(&b.w, &bytes, &stream);
    assert_eq!(
        summary,
        RestoreSummary {
            sockets: 2,
            rings: 1,
            gone: 0,
            nodes,
            watches: 1,
        }
    );
    // The listener passed down is the one served, closed on exec again.
    assert_eq!(d.listener.as_raw_fd(), listener_fd);
    assert!(has_cloexec(listener_fd));
    for c in d.conns.values() {
        if let Transport::Socket(s) = &c.transport {
            assert!(has_cloexec(s.as_raw_fd()));
        }
    }

    // The partly written reply goes on where it stopped.
    until(&mut d, "the rest of the reply", |_| {
        b.reader.poll();
        b.reader.raw.len() >= b.reply.len()
    });
    assert_eq!(b.reader.raw, b.reply, "no octet twice, none lost");

    // The half-received request completes.
    let read = Message::new(MsgType::Read, 7, 0, build_args(&[b"/a"]))
        .unwrap()
        .to_bytes();
    b.watcher.send_raw(&read[HALF_REQUEST..]);
    assert_eq!(b.watcher.answer(&mut d, 7).payload, b"1");

    // The watch fires, the transaction commits.
    b.reader
        .ok(&mut d, MsgType::Write, 0, build_path_value(b"/a", b"2"));
    assert_eq!(b.watcher.watch_event(&mut d), ("/a".into(), "tok".into()));
    b.watcher
        .ok(&mut d, MsgType::TransactionEnd, b.tx, b"T\0".to_vec());
    assert_eq!(
        b.reader
            .ok(&mut d, MsgType::Read, 0, build_args(&[b"/a/t"])),
        b"x"
    );

    // The quotas are as they were.
    let domid = b.rec.info.domid.to_string();
    assert_eq!(
        b.reader
            .ok(&mut d, MsgType::GetQuota, 0, build_args(&[b"watches"])),
        b"7\0"
    );
    assert_eq!(
        b.reader.ok(
            &mut d,
            MsgType::GetQuota,
            0,
            build_args(&[domid.as_bytes(), b"nodes"])
        ),
        b"77\0"
    );

    // The guest's ring is served.
    let got = on_guest(&mut d, b.w.connector(), b.rec, |c| {
        c.write(0, "data/after", b"yes").unwrap();
        c.read(0, "data/after").unwrap()
    });
    assert_eq!(got, b"yes");

    // New clients reach the adopted listener.
    let stream = UnixStream::connect(b.w.path("socket")).unwrap();
    stream.set_nonblocking(true).unwrap();
    let n = d.conns.len();
    until(&mut d, "a new client", |d| d.conns.len() > n);
}

fn with_unique_id(stream: &mut Stream, domid: DomId, unique_id: Option<u64>) {
    for r in &mut stream.records {
        if let Record::Connection(c) = r {
            if matches!(c.spec, ConnSpec::Ring(r) if r.domid == domid) {
                c.unique_id = unique_id;
            }
        }
    }
}

/// Restores `b` with the ring's unique id set to `unique_id`; returns the
/// summary and whether the domain is still introduced.
fn restore_ring_with_unique_id(unique_id: impl Fn(u64) -> Option<u64>) -> (RestoreSummary, bool) {
    let mut b = busy();
    let domid = b.rec.info.domid;
    let mut stream = b.w.daemon.export_stream(Version::V2, None);
    with_unique_id(&mut stream, domid, unique_id(b.rec.info.unique_id));
    let (bytes, stream) = passed_down(stream);
    let (d, summary) = take_over(&b.w, &bytes, &stream);
    let rings = d.conns.values().filter(|c| c.domid().is_some()).count();
    assert_eq!(
        rings,
        1 - summary.gone,
        "a released ring keeps no transport"
    );
    (summary, d.engine().domain_ring(domid).is_some())
}

#[test]
fn test_restore_keeps_a_ring_of_the_same_domain() {
    let (summary, introduced) = restore_ring_with_unique_id(Some);
    assert_eq!((summary.rings, summary.gone, introduced), (1, 0, true));
    // A stream without unique ids (an older writer) trusts the domid.
    let (summary, introduced) = restore_ring_with_unique_id(|_| None);
    assert_eq!((summary.rings, summary.gone, introduced), (1, 0, true));
}

#[test]
fn test_restore_releases_a_ring_whose_domid_was_reused() {
    let (summary, introduced) = restore_ring_with_unique_id(|u| Some(u + 1000));
    assert_eq!((summary.rings, summary.gone, introduced), (1, 1, false));
}

#[test]
fn test_restore_releases_a_ring_whose_domain_died() {
    let mut b = busy();
    let mut watcher = b.w.connect();
    watcher.ok(
        &mut b.w.daemon,
        MsgType::Watch,
        0,
        build_args(&[b"@releaseDomain", b"rel"]),
    );
    assert_eq!(
        watcher.watch_event(&mut b.w.daemon),
        ("@releaseDomain".into(), "rel".into())
    );
    let stream = b.w.daemon.export_stream(Version::V2, None);
    b.w.ts.destroy(b.rec.info.domid).unwrap();
    let (bytes, stream) = passed_down(stream);
    let (mut d, summary) = take_over(&b.w, &bytes, &stream);
    assert_eq!((summary.rings, summary.gone), (1, 1));
    assert!(d.engine().domain_ring(b.rec.info.domid).is_none());
    assert_eq!(
        watcher.watch_event(&mut d),
        ("@releaseDomain".into(), "rel".into())
    );
    let domid = b.rec.info.domid.to_string();
    assert_eq!(
        watcher.ok(
            &mut d,
            MsgType::IsDomainIntroduced,
            0,
            build_args(&[domid.as_bytes()])
        ),
        b"F\0"
    );
}

/// A stream by hand: GLOBAL_DATA and the given records.
fn hand_stream(rw_socket_fd: i32, records: Vec<Record>) -> (Vec<u8>, Stream) {
    let mut all = vec![Record::Global(GlobalData {
        rw_socket_fd,
        evtchn_fd: -1,
    })];
    all.extend(records);
    let stream = Stream {
        header: StreamHeader {
            version: Version::V2,
            endian: Endian::Little,
        },
        records: all,
    };
    let bytes = stream.to_bytes().unwrap();
    (bytes, stream)
}

fn socket_record(conn_id: u32, socket_fd: i32, out_data: &[u8]) -> Record {
    Record::Connection(ConnectionData {
        conn_id,
        spec: ConnSpec::Socket(SocketConn { socket_fd }),
        in_data: Vec::new(),
        out_resp_len: 0,
        out_data: out_data.to_vec(),
        unique_id: None,
        ring: None,
    })
}

fn restore_in(
    dir: &Path,
    hv: &ServerThread,
    bytes: &[u8],
    stream: &Stream,
) -> (Daemon, RestoreSummary) {
    let platform = Platform::mock(&Connector::remote(hv.path())).unwrap();
    Daemon::restore(
        Engine::new(Config::default()),
        platform,
        &shell_config(dir),
        bytes,
        stream,
    )
    .unwrap()
}

#[test]
fn test_restore_drops_connections_whose_descriptor_is_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let hv = ServerThread::start(dir.path().join("mock-xen.sock")).unwrap();
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (bytes, stream) = hand_stream(
        -1,
        vec![
            socket_record(1, pipe_r.as_raw_fd(), b""),
            socket_record(2, -1, b""),
            socket_record(3, 4000, b""),
            socket_record(4, theirs.into_raw_fd(), b"queued"),
        ],
    );
    let (mut d, summary) = restore_in(dir.path(), &hv, &bytes, &stream);
    assert_eq!(summary.sockets, 1);
    assert_eq!(d.conns.len(), 1);
    // The pipe is still ours: nothing took it over.
    assert!(fd_is_open(pipe_r.as_raw_fd()));
    let mut c = Client::new(ours, 0);
    c.stream.set_nonblocking(true).unwrap();
    until(&mut d, "the queued output", |_| {
        c.poll();
        c.raw.len() >= 6
    });
    assert_eq!(c.raw, b"queued");
}

#[test]
fn test_restore_binds_the_socket_again_when_no_listener_was_passed() {
    for passed in ["none", "connected socket", "closed"] {
        let dir = tempfile::tempdir().unwrap();
        let hv = ServerThread::start(dir.path().join("mock-xen.sock")).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = match passed {
            "none" => -1,
            "connected socket" => a.as_raw_fd(),
            _ => 4001,
        };
        let (bytes, stream) = hand_stream(fd, Vec::new());
        let (mut d, _) = restore_in(dir.path(), &hv, &bytes, &stream);
        assert_ne!(d.listener.as_raw_fd(), fd, "{passed}");
        let stream = UnixStream::connect(dir.path().join("socket")).unwrap();
        stream.set_nonblocking(true).unwrap();
        let mut c = Client::new(stream, 0);
        let reply = c.ask(&mut d, MsgType::Read, 0, build_args(&[b"/nope"]));
        assert_eq!(reply, Err(XsErrno::ENOENT), "{passed}");
        drop(a);
    }
}

#[test]
fn test_restore_refuses_a_stream_the_engine_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let hv = ServerThread::start(dir.path().join("mock-xen.sock")).unwrap();
    // A watch of a connection the stream does not have.
    let (bytes, stream) = hand_stream(
        -1,
        vec![Record::Watch(WatchData {
            conn_id: 9,
            wpath: "/a".into(),
            token: b"t".to_vec(),
        })],
    );
    let platform = Platform::mock(&Connector::remote(hv.path())).unwrap();
    let err = Daemon::restore(
        Engine::new(Config::default()),
        platform,
        &shell_config(dir.path()),
        &bytes,
        &stream,
    )
    .unwrap_err();
    let unknown = |e: &TakeOverError| {
        matches!(
            e,
            TakeOverError::Records(RestoreError::UnknownConnection { conn_id: 9, .. })
        )
    };
    assert!(
        matches!(&err, RestoreFailure::TakeOver(e) if unknown(e)),
        "{err:?}"
    );
    let err = check_stream(Config::default(), &bytes, &stream).unwrap_err();
    assert!(unknown(&err), "{err:?}");
}

#[test]
fn test_restore_closes_a_connection_whose_pending_input_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let hv = ServerThread::start(dir.path().join("mock-xen.sock")).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut bad = Message::new(MsgType::Read, 1, 0, Vec::new())
        .unwrap()
        .to_bytes();
    bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
    let record = Record::Connection(ConnectionData {
        conn_id: 1,
        spec: ConnSpec::Socket(SocketConn {
            socket_fd: theirs.into_raw_fd(),
        }),
        in_data: bad,
        out_resp_len: 0,
        out_data: Vec::new(),
        unique_id: None,
        ring: None,
    });
    let (bytes, stream) = hand_stream(-1, vec![record]);
    let (d, summary) = restore_in(dir.path(), &hv, &bytes, &stream);
    assert_eq!(summary.sockets, 1);
    assert!(d.conns.is_empty());
    // Closed: the client sees the end of the stream.
    let mut buf = [0u8; 1];
    assert_eq!((&ours).read(&mut buf).unwrap(), 0);
}

#[test]
fn test_restore_binds_ring_ports_again_without_the_handle() {
    let mut w = World::new();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let stream = w.daemon.export_stream(Version::V2, None);
    // The old process and its handle are gone; the new one gets neither
    // listener nor handle (a writer that passes none down).
    let (dir, hv, ts) = w.kill_daemon();
    let mut stream = stream;
    stream
        .records
        .retain(|r| !matches!(r, Record::Connection(c) if matches!(c.spec, ConnSpec::Socket(_))));
    stream.records[0] = Record::Global(GlobalData {
        rw_socket_fd: -1,
        evtchn_fd: -1,
    });
    let bytes = stream.to_bytes().unwrap();
    let (mut d, summary) = restore_in(dir.path(), &hv, &bytes, &stream);
    assert_eq!((summary.rings, summary.gone), (1, 0));
    let got = on_guest(&mut d, Connector::remote(hv.path()), rec, |c| {
        c.write(0, "data/after", b"yes").unwrap();
        c.read(0, "data/after").unwrap()
    });
    assert_eq!(got, b"yes");
    drop(ts);
}

#[test]
fn test_check_stream_counts_what_a_restore_would_take() {
    let mut b = busy();
    let stream = b.w.daemon.export_stream(Version::V2, None);
    let nodes = stream
        .records
        .iter()
        .filter(|r| matches!(r, Record::Node(n) if n.conn_id == 0))
        .count();
    let bytes = stream.to_bytes().unwrap();
    let summary = check_stream(Config::default(), &bytes, &stream).unwrap();
    assert_eq!(
        summary,
        RestoreSummary {
            sockets: 2,
            rings: 1,
            gone: 0,
            nodes,
            watches: 1,
        }
    );
}

#[test]
fn test_write_state_queues_the_reply_last_on_its_connection() {
    let mut b = busy();
    let ok = Message {
        header: Header::new(MsgType::Control, 42, 0, 3),
        payload: b"OK\0".to_vec(),
    };
    let size =
        b.w.daemon
            .write_state(Version::V1, Some((b.reader.id, &ok)))
            .unwrap();
    let bytes = std::fs::read(b.w.path(STATE_FILE)).unwrap();
    assert_eq!(bytes.len(), size);
    let stream = Stream::parse(&bytes).unwrap();
    assert_eq!(stream.header.version, Version::V1);
    let reader = conn_record(&stream, b.reader.id);
    assert_eq!(
        reader.out_data,
        [&b.reply[WRITTEN..], &ok.to_bytes()].concat()
    );
    assert!(conn_record(&stream, b.watcher.id).out_data.is_empty());
}

/// A script standing in for the new binary: `dry_run` is its body for the
/// dry run; run any other way (an exec that should not have happened)
/// it says so and exits 97.
fn script(dir: &Path, name: &str, dry_run: &str) -> PathBuf {
    let path = dir.join(name);
    let body = format!(
        "#!/bin/sh\ncase \"$*\" in\n*--dry-run=*)\n{dry_run}\n;;\nesac\necho 'exec of the test binary: the test process was replaced' >&2\nexit 97\n"
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn test_live_update_commands_answer_as_c_does() {
    let mut w = World::new();
    let mut c = w.connect();
    let mut other = w.connect();
    let d = &mut w.daemon;
    let missing = w.dir.path().join("missing");
    let plain = w.dir.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    let sub = w.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = script(w.dir.path(), "new", "exit 1");
    let p = |p: &Path| p.to_str().unwrap().to_string();

    assert_eq!(
        c.live_update(d, &["-f", &p(&missing)]),
        "File not accessible."
    );
    assert_eq!(
        c.live_update(d, &["-f", &p(&plain)]),
        "File not executable."
    );
    assert_eq!(c.live_update(d, &["-f", &p(&sub)]), "File not executable.");
    assert!(d.live_update.is_none());
    assert_eq!(
        c.live_update(d, &["-c", "-N"]),
        "Not in live-update session."
    );
    assert_eq!(c.live_update(d, &["-a"]), "No live-update session active.");
    assert_eq!(c.live_update(d, &["-s"]), "Not in live-update session.");
    assert!(c
        .live_update(d, &["-b", "x"])
        .contains("not in a stub domain"));
    assert!(c
        .live_update(d, &["-d", "x"])
        .contains("not in a stub domain"));
    assert_eq!(c.live_update(d, &["-x"]), "EINVAL");
    assert_eq!(c.live_update(d, &[]), "EINVAL");
    assert_eq!(c.live_update(d, &["-s", "-v", "9"]), "EINVAL");

    assert_eq!(c.live_update(d, &["-f", &p(&binary)]), "OK");
    assert!(!d.live_update_pending(), "a session, but no dry run yet");
    assert_eq!(
        c.live_update(d, &["-f", &p(&binary)]),
        "live-update session already active."
    );
    // The session is the asking connection's.
    assert_eq!(
        other.live_update(d, &["-c", "-N"]),
        "Not in live-update session."
    );
    assert_eq!(other.live_update(d, &["-s"]), "Not in live-update session.");
    assert_eq!(c.live_update(d, &["-c", "-N -V"]), "OK");
    assert_eq!(
        d.live_update.as_ref().and_then(|s| s.cmdline.clone()),
        Some("-N -V".to_string())
    );
    assert_eq!(c.live_update(d, &["-a"]), "OK");
    assert!(d.live_update.is_none());
    assert_eq!(c.live_update(d, &["-a"]), "No live-update session active.");
}

#[test]
fn test_failed_dry_run_is_refused_with_its_last_line_and_cleans_up() {
    let mut w = World::new();
    let mut c = w.connect();
    let seen = w.path("seen");
    let state_copy = w.path("state-copy");
    let go = w.path("go");
    let binary = script(
        w.dir.path(),
        "new",
        &format!(
            "echo \"$@\" > {seen}\necho \"$XENSTORED_RUNDIR\" >> {seen}\necho \"${{XENSTORED_PATH-unset}}\" >> {seen}\nfor a; do case \"$a\" in --dry-run=*) cp \"${{a#--dry-run=}}\" {copy};; esac; done\nwhile [ ! -e {go} ]; do sleep 0.01; done\necho first >&2\necho 'it went wrong' >&2\necho >&2\nexit 3",
            seen = seen.display(),
            copy = state_copy.display(),
            go = go.display(),
        ),
    );
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    assert_eq!(c.live_update(d, &["-c", "-N --socket /elsewhere"]), "OK");
    let req = c.send(
        MsgType::Control,
        0,
        build_args(&[b"live-update", b"-s", b"-t", b"60", b"-F", b"-v", b"1"]),
    );
    until(d, "the dry run started", |d| {
        c.no_answer_yet(req);
        d.live_update_pending() && state_copy.exists()
    });
    // The daemon serves while the dry run runs; -s has no answer yet.
    let mut other = w_connect(d, &w.dir);
    assert_eq!(
        other.ask(d, MsgType::Read, 0, build_args(&[b"/nope"])),
        Err(XsErrno::ENOENT)
    );
    c.poll();
    assert!(c.inbox.iter().all(|m| m.header.req_id != req));
    assert!(w.dir.path().join(STATE_FILE).exists());
    std::fs::write(&go, "").unwrap();
    let answer = text(&c.answer(d, req).payload);
    assert!(!d.live_update_pending());
    assert!(
        answer.starts_with("live-update refused: the new binary failed its dry run (exit status: 3): it went wrong"),
        "{answer}"
    );
    assert!(d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    assert!(!w.dir.path().join(DRY_RUN_DIR).exists());

    let seen = std::fs::read_to_string(&seen).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    let state = w.dir.path().join(STATE_FILE);
    assert_eq!(
        lines[0],
        format!("-N --socket /elsewhere -U --dry-run={}", state.display())
    );
    assert_eq!(
        lines[1],
        w.dir.path().join(DRY_RUN_DIR).display().to_string()
    );
    assert_eq!(lines[2], "unset");
    // The state the dry run got: version 1 as asked, the asking
    // connection without an answer yet.
    let stream = Stream::parse(&std::fs::read(&state_copy).unwrap()).unwrap();
    assert_eq!(stream.header.version, Version::V1);
    assert!(conn_record(&stream, c.id).out_data.is_empty());
}

/// A client on the socket of the daemon in `dir`.
fn w_connect(d: &mut Daemon, dir: &tempfile::TempDir) -> Client {
    connect_to(d, &dir.path().join("socket"))
}

#[test]
fn test_dry_run_that_prints_nothing_is_named_so() {
    let mut w = World::new();
    let mut c = w.connect();
    let binary = script(w.dir.path(), "new", "exit 1");
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    let answer = c.live_update(d, &["-s"]);
    assert!(
        answer.ends_with("(exit status: 1): (it printed nothing)"),
        "{answer}"
    );
}

#[test]
fn test_dry_run_is_abandoned_when_the_asking_connection_goes() {
    let mut w = World::new();
    let mut c = w.connect();
    let pid_file = w.path("pid");
    let binary = script(
        w.dir.path(),
        "new",
        &format!("echo $$ > {}\nexec sleep 600", pid_file.display()),
    );
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    let req = c.send(MsgType::Control, 0, build_args(&[b"live-update", b"-s"]));
    until(d, "the dry run started", |_| {
        c.no_answer_yet(req);
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    assert!(d.live_update_pending());
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(c);
    until(d, "the session ended", |d| d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    assert!(!w.dir.path().join(DRY_RUN_DIR).exists());
    // The dry run was killed and reaped.
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
    assert_eq!(gone, Err(nix::errno::Errno::ESRCH));
}

#[test]
fn test_abort_ends_a_dry_run_under_way() {
    let mut w = World::new();
    let mut c = w.connect();
    let mut other = w.connect();
    let started = w.path("started");
    let binary = script(
        w.dir.path(),
        "new",
        &format!("touch {}\nexec sleep 600", started.display()),
    );
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    let req = c.send(MsgType::Control, 0, build_args(&[b"live-update", b"-s"]));
    until(d, "the dry run started", |_| {
        c.no_answer_yet(req);
        started.exists()
    });
    assert_eq!(
        other.live_update(d, &["-f", binary.to_str().unwrap()]),
        "live-update session already active."
    );
    assert_eq!(c.live_update(d, &["-s"]), "live-update already starting.");
    assert_eq!(c.live_update(d, &["-a"]), "OK");
    assert!(d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    c.poll();
    assert!(c.inbox.iter().all(|m| m.header.req_id != req));
}

#[test]
fn test_binary_that_cannot_start_is_refused_and_the_state_removed() {
    let mut w = World::new();
    let mut c = w.connect();
    // Executable, but not a program the system can run.
    let binary = w.path("garbage");
    std::fs::write(&binary, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    let answer = c.live_update(d, &["-s"]);
    assert!(
        answer.starts_with("live-update refused: cannot start"),
        "{answer}"
    );
    assert!(d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
}

#[test]
fn test_failed_exec_is_undone_and_the_daemon_serves_on() {
    let mut w = World::new();
    let mut c = w.connect();
    // The dry run succeeds and takes the binary away, so that the exec
    // fails (the script would exit 97 if it were exec'd).
    let binary = script(w.dir.path(), "new", "rm -f \"$0\"\nexit 0");
    let d = &mut w.daemon;
    assert!(d.virq.is_some());
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    let answer = c.live_update(d, &["-s"]);
    assert!(
        answer.starts_with(&format!(
            "live-update refused: Error activating new binary {}: ENOENT",
            binary.display()
        )),
        "{answer}"
    );
    assert!(d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    // Every descriptor is closed on exec again; VIRQ_DOM_EXC is bound again.
    assert!(has_cloexec(d.listener.as_raw_fd()));
    assert!(has_cloexec(d.platform.evtchn.handle_fd()));
    assert!(has_cloexec(socket_fd(d, c.id)));
    assert!(d.virq.is_some());
    // Nothing was taken from any connection: the daemon serves on.
    c.ok(d, MsgType::Write, 0, build_path_value(b"/after", b"1"));
    assert_eq!(c.ok(d, MsgType::Read, 0, build_args(&[b"/after"])), b"1");
}

#[test]
fn test_start_options_accept_what_xenstore_control_sends() {
    assert_eq!(
        parse_start(&["-t", "60"]),
        Ok(StartOptions {
            version: Version::V2,
            force: false,
            timeout: Duration::from_secs(60),
        })
    );
    assert_eq!(
        parse_start(&["-t", "5", "-F", "-v", "1"]),
        Ok(StartOptions {
            version: Version::V1,
            force: true,
            timeout: Duration::from_secs(5),
        })
    );
    assert_eq!(parse_start(&["-v", "3"]), Err(XsErrno::EINVAL));
    assert_eq!(parse_start(&["-t"]), Err(XsErrno::EINVAL));
    assert_eq!(parse_start(&["-v"]), Err(XsErrno::EINVAL));
    assert_eq!(parse_start(&["-t", "soon"]), Err(XsErrno::EINVAL));
    assert_eq!(parse_start(&["-v", "two"]), Err(XsErrno::EINVAL));
    assert_eq!(
        parse_start(&["-F", "-v", "1", "-t", "9"]),
        Ok(StartOptions {
            version: Version::V1,
            force: true,
            timeout: Duration::from_secs(9),
        })
    );
    // Without -t: xenstore-control's and C's default, 60 s.
    assert_eq!(
        parse_start(&[]),
        Ok(StartOptions {
            version: Version::V2,
            force: false,
            timeout: Duration::from_secs(60),
        })
    );
    assert_eq!(parse_start(&["-x"]), Err(XsErrno::EINVAL));
}

#[test]
fn test_new_args_add_dash_u_once() {
    let ours = vec![
        OsString::from("-N"),
        OsString::from("--mock-xen"),
        OsString::from("/s"),
    ];
    assert_eq!(
        new_args(&ours, None),
        ["-N", "--mock-xen", "/s", "-U"].map(OsString::from)
    );
    assert_eq!(
        new_args(&ours, Some("-N  -U\t-T /log")),
        ["-N", "-U", "-T", "/log"].map(OsString::from)
    );
}

#[test]
fn test_dry_run_over_its_time_limit_is_refused_and_killed() {
    let mut w = World::new();
    let mut c = w.connect();
    let pid_file = w.path("pid");
    let binary = script(
        w.dir.path(),
        "new",
        &format!("echo $$ > {}\nexec sleep 600", pid_file.display()),
    );
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", binary.to_str().unwrap()]), "OK");
    if let Some(s) = &mut d.live_update {
        s.dry_run_limit = Duration::ZERO;
    }
    let answer = c.live_update(d, &["-s"]);
    assert_eq!(
        answer,
        "live-update refused: the new binary did not finish its dry run within 0 s"
    );
    assert!(d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    // Killed and reaped (if it got as far as saying who it was).
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
            assert_eq!(gone, Err(nix::errno::Errno::ESRCH));
        }
    }
}

#[test]
fn test_the_new_binary_inherits_listener_handle_and_every_client_socket() {
    let b = busy();
    let d = &b.w.daemon;
    let mut expected = vec![d.listener.as_raw_fd(), d.platform.evtchn.handle_fd()];
    expected.extend([socket_fd(d, b.watcher.id), socket_fd(d, b.reader.id)]);
    expected.sort_unstable();
    let mut fds = d.inherited_fds();
    fds.sort_unstable();
    assert_eq!(fds, expected, "no ring, every socket");
}

#[test]
fn test_restore_maps_a_ring_by_grant_when_the_stream_has_no_mfn() {
    // As C xenstored writes it: no ring location.
    let mut b = busy();
    let mut stream = b.w.daemon.export_stream(Version::V2, None);
    for r in &mut stream.records {
        if let Record::Connection(c) = r {
            c.ring = None;
        }
    }
    let (bytes, stream) = passed_down(stream);
    let (mut d, summary) = take_over(&b.w, &bytes, &stream);
    assert_eq!((summary.rings, summary.gone), (1, 0));
    let got = on_guest(&mut d, b.w.connector(), b.rec, |c| {
        c.write(0, "data/after", b"yes").unwrap();
        c.read(0, "data/after").unwrap()
    });
    assert_eq!(got, b"yes");
}

#[test]
fn test_restore_releases_a_dead_ring_of_a_stream_without_unique_ids() {
    let mut b = busy();
    let domid = b.rec.info.domid;
    let mut stream = b.w.daemon.export_stream(Version::V2, None);
    with_unique_id(&mut stream, domid, None);
    b.w.ts.destroy(domid).unwrap();
    let (bytes, stream) = passed_down(stream);
    let (d, summary) = take_over(&b.w, &bytes, &stream);
    assert_eq!((summary.rings, summary.gone), (1, 1));
    assert!(d.engine().domain_ring(domid).is_none());
}

#[test]
fn test_restore_keeps_dom0s_own_ring_whatever_its_unique_id() {
    let mut w = World::new();
    w.daemon.serve_local_ring();
    let Some(dom0) = w
        .daemon
        .conns
        .iter()
        .find_map(|(&id, c)| (c.domid() == Some(0)).then_some(id))
    else {
        panic!("dom0's own ring is not served on mock-xen");
    };
    let mut stream = w.daemon.export_stream(Version::V2, None);
    assert!(conn_record(&stream, dom0).ring.is_none());
    // Dom0 is never replaced: a unique id that does not match is ignored.
    with_unique_id(&mut stream, 0, Some(0xdead));
    let (bytes, stream) = passed_down(stream);
    let (d, summary) = take_over(&w, &bytes, &stream);
    assert_eq!((summary.rings, summary.gone), (1, 0));
    assert!(d.conns.values().any(|c| c.domid() == Some(0)));
}

// --- The hand-over to C xenstored 4.17 (session.rs's C path, handover.rs's
// `hand_over_c`). The exec cannot be let happen in this process: the
// session is given a C target that does not exist, so a hand-over that
// gets as far as the exec fails there, and what it undid is checked.

/// A live-update session from `c` for C xenstored at `binary`, as `-f`
/// sets it up for a file it told to be C 4.17.
fn c_session(d: &mut Daemon, c: &Client, binary: &Path, cmdline: Option<&str>) {
    d.live_update = Some(Session {
        conn: c.id,
        binary: binary.to_path_buf(),
        cmdline: cmdline.map(str::to_string),
        start: None,
        dry_run_limit: Duration::from_secs(120),
        c_version: Some((4, 17)),
        c_start: None,
        c_wait_since: None,
        c_hold_until: None,
        precopy: None,
        precopy_target: false,
        dry_state: None,
    });
}

#[test]
fn test_f_refuses_a_wrapper_of_c_and_gives_other_scripts_the_dry_run() {
    let mut w = World::new();
    let mut c = w.connect();
    let wrapper = script(
        w.dir.path(),
        "xenstored",
        "exec /usr/lib/xen-4.17/bin/xenstored \"$@\"",
    );
    let d = &mut w.daemon;
    let answer = c.live_update(d, &["-f", wrapper.to_str().unwrap()]);
    assert!(answer.starts_with("live-update refused:"), "{answer}");
    assert!(
        answer.contains("/usr/lib/xen-4.17/bin/xenstored"),
        "names the real binary: {answer}"
    );
    assert!(d.live_update.is_none());
    // A script that says nothing of Xen is judged by its dry run.
    let other = script(w.dir.path(), "other", "exit 0");
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-f", other.to_str().unwrap()]), "OK");
    let s = d.live_update.as_ref().unwrap();
    assert_eq!(s.c_version, None);
}

#[test]
fn test_to_c_an_open_transaction_answers_busy_then_is_refused_after_t() {
    let mut w = World::new();
    let mut c = w.connect();
    let mut t = w.connect();
    let d = &mut w.daemon;
    let tx = t.ok(d, MsgType::TransactionStart, 0, b"\0".to_vec());
    let tx: u32 = text(&tx).parse().unwrap();
    t.ok(d, MsgType::Write, tx, build_path_value(b"/in-tx", b"1"));
    let binary = w.dir.path().join("no-such-c");
    let d = &mut w.daemon;
    c_session(d, &c, &binary, None);
    // Within -t: BUSY, as C answers; the session stays, nothing written.
    assert_eq!(c.live_update(d, &["-s", "-t", "60"]), "BUSY");
    assert!(d.live_update.as_ref().unwrap().c_wait_since.is_some());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    // Asked again: still BUSY while it is open.
    let d = &mut w.daemon;
    assert_eq!(c.live_update(d, &["-s", "-t", "60"]), "BUSY");
    // -t over: refused, naming the transaction; the session ends.
    let answer = c.live_update(d, &["-s", "-t", "0"]);
    assert!(
        answer.starts_with("live-update refused: Domains with long running transactions"),
        "{answer}"
    );
    assert!(answer.contains(&format!("transaction {tx}")), "{answer}");
    assert!(d.live_update.is_none());
    // The transaction was never touched.
    t.ok(d, MsgType::TransactionEnd, tx, b"T\0".to_vec());
    assert_eq!(c.ok(d, MsgType::Read, 0, build_args(&[b"/in-tx"])), b"1");
}

#[test]
fn test_to_c_a_depth_watch_is_refused_by_name_and_nothing_is_written() {
    let mut w = World::new();
    let mut c = w.connect();
    let mut watcher = w.connect();
    let d = &mut w.daemon;
    watcher.ok(d, MsgType::Watch, 0, build_args(&[b"/deep", b"tok", b"2"]));
    let binary = w.dir.path().join("no-such-c");
    c_session(d, &c, &binary, None);
    let answer = c.live_update(d, &["-s"]);
    assert!(
        answer.starts_with("live-update refused: C xenstored 4.17 cannot take this state"),
        "{answer}"
    );
    assert!(
        answer.contains("/deep") && answer.contains("tok"),
        "{answer}"
    );
    assert!(d.live_update.is_none());
    assert!(!w.dir.path().join(STATE_FILE).exists());
    assert!(d.virq.is_some());
    c.ok(d, MsgType::Write, 0, build_path_value(b"/deep/x", b"1"));
    assert_eq!(watcher.watch_event(d).0, "/deep");
    assert_eq!(watcher.watch_event(d).0, "/deep/x");
}

#[test]
fn test_to_c_an_option_c_would_die_on_is_refused_by_name() {
    let mut w = World::new();
    let mut c = w.connect();
    let binary = w.dir.path().join("no-such-c");
    let d = &mut w.daemon;
    c_session(d, &c, &binary, Some("-N --mock-xen /x"));
    let answer = c.live_update(d, &["-s"]);
    assert!(
        answer.starts_with("live-update refused: C xenstored's command line"),
        "{answer}"
    );
    assert!(answer.contains("--mock-xen"), "{answer}");
    assert!(!w.dir.path().join(STATE_FILE).exists());
    assert!(d.live_update.is_none());
}

#[test]
fn test_to_c_a_failed_exec_undoes_everything_and_f_gets_past_transactions() {
    let mut w = World::new();
    let mut dom0 = w.connect();
    let rec = w.guest(&mut dom0);
    let guest = Guest::attach(&w.connector(), &rec).unwrap();
    let features = guest.end().server_features();
    assert!(
        !features.is_empty(),
        "the daemon advertises features on a ring"
    );
    let mut t = w.connect();
    let d = &mut w.daemon;
    let tx = t.ok(d, MsgType::TransactionStart, 0, b"\0".to_vec());
    let tx: u32 = text(&tx).parse().unwrap();
    let binary = w.dir.path().join("no-such-c");
    c_session(d, &dom0, &binary, None);
    // -F: the open transaction is dropped from the state, so the
    // hand-over goes as far as the exec, which fails.
    let answer = dom0.live_update(d, &["-s", "-F"]);
    assert!(
        answer.starts_with("live-update refused: Error activating new binary"),
        "{answer}"
    );
    assert!(answer.contains("no-such-c"), "{answer}");
    // As it was: no state file, descriptors close-on-exec again, VIRQ
    // bound, the ring's features advertised, the transaction open.
    assert!(!w.dir.path().join(STATE_FILE).exists());
    assert!(has_cloexec(socket_fd(d, dom0.id)));
    assert!(d.virq.is_some());
    assert_eq!(guest.end().server_features(), features);
    t.ok(
        d,
        MsgType::Write,
        tx,
        build_path_value(b"/still-in-tx", b"1"),
    );
    t.ok(d, MsgType::TransactionEnd, tx, b"T\0".to_vec());
    assert_eq!(
        dom0.ok(d, MsgType::Read, 0, build_args(&[b"/still-in-tx"])),
        b"1"
    );
}

#[test]
fn test_c_environment_keeps_ours_and_names_our_run_directory() {
    use super::handover::c_environment;
    let vars = vec![
        (OsString::from("PATH"), OsString::from("/bin")),
        (
            OsString::from("XENSTORED_RUNDIR"),
            OsString::from("/elsewhere"),
        ),
        (OsString::from("LD_PRELOAD"), OsString::from("/shim.so")),
    ];
    let env = c_environment(vars.into_iter(), Path::new("/run/xenstored")).unwrap();
    let env: Vec<&str> = env.iter().map(|c| c.to_str().unwrap()).collect();
    assert_eq!(
        env,
        [
            "PATH=/bin",
            "LD_PRELOAD=/shim.so",
            "XENSTORED_RUNDIR=/run/xenstored"
        ]
    );
    use std::os::unix::ffi::OsStrExt as _;
    let nul = Path::new(std::ffi::OsStr::from_bytes(b"/run/x\0y"));
    assert!(c_environment(std::iter::empty(), nul).is_none());
}

#[test]
fn test_exec_argv_is_the_binary_then_its_arguments_and_refuses_a_nul() {
    use super::handover::exec_argv;
    use std::os::unix::ffi::OsStrExt as _;
    let args = [
        OsString::from("-U"),
        OsString::from("-E"),
        OsString::from("900"),
    ];
    let argv = exec_argv(Path::new("/usr/lib/xen-4.17/bin/xenstored"), &args).unwrap();
    let argv: Vec<&str> = argv.iter().map(|c| c.to_str().unwrap()).collect();
    assert_eq!(argv, ["/usr/lib/xen-4.17/bin/xenstored", "-U", "-E", "900"]);
    let argv = exec_argv(Path::new("/bin/x"), &[]).unwrap();
    assert_eq!(argv.len(), 1);
    let nul = OsString::from(std::ffi::OsStr::from_bytes(b"-c\0x"));
    assert!(exec_argv(Path::new("/bin/x"), &[nul]).is_none());
    let nul = Path::new(std::ffi::OsStr::from_bytes(b"/bin\0x"));
    assert!(exec_argv(nul, &[]).is_none());
}

// --- Held TRANSACTION_STARTs while a hand-over to C waits for open
// transactions (C's own rule; C carries no transaction).

/// A daemon with a transaction open on `t` and an update to C answered
/// BUSY for it: new TRANSACTION_STARTs are held from now on.
fn c_waiting(w: &mut World) -> (Client, Client, u32) {
    let mut c = w.connect();
    let mut t = w.connect();
    let d = &mut w.daemon;
    let tx = t.ok(d, MsgType::TransactionStart, 0, b"\0".to_vec());
    let tx: u32 = text(&tx).parse().unwrap();
    let binary = w.dir.path().join("no-such-c");
    let d = &mut w.daemon;
    c_session(d, &c, &binary, None);
    assert_eq!(c.live_update(d, &["-s", "-t", "60"]), "BUSY");
    assert!(d.core.holding());
    // Between two -s the loop keeps looking (for the end of holding).
    assert!(d.live_update.as_ref().unwrap().c_start.is_none());
    assert!(d.live_update_pending());
    (c, t, tx)
}

/// `b` sends a TRANSACTION_START and a READ behind it; both are held.
fn held_pair(d: &mut Daemon, b: &mut Client) -> (u32, u32) {
    let start = b.send(MsgType::TransactionStart, 0, b"\0".to_vec());
    let read = b.send(MsgType::Read, 0, build_args(&[b"/held"]));
    let id = b.id;
    until(d, "the requests held", |d| {
        d.core.held_conns().contains(&id)
    });
    // A few turns more: still held, nothing answered.
    for _ in 0..5 {
        d.turn(Some(1)).unwrap();
    }
    b.no_answer_yet(start);
    b.no_answer_yet(read);
    (start, read)
}

#[test]
fn test_to_c_busy_holds_new_transaction_starts_and_what_follows_then_refusal_lets_them_go() {
    let mut w = World::new();
    let (mut c, _t, _tx) = c_waiting(&mut w);
    let mut b = w.connect();
    let mut other = w.connect();
    let d = &mut w.daemon;
    other.ok(d, MsgType::Write, 0, build_path_value(b"/held", b"v"));
    let (start, read) = held_pair(d, &mut b);
    // Only connections that asked for a transaction are held.
    assert_eq!(other.ok(d, MsgType::Read, 0, build_args(&[b"/held"])), b"v");
    assert_eq!(d.core.held_conns(), [b.id]);
    // They would go to C as whole requests in the connection's data.
    let stream = d.export_stream(Version::V2, None);
    let mut expected = Vec::new();
    Message::new(MsgType::TransactionStart, start, 0, b"\0".to_vec())
        .unwrap()
        .encode_into(&mut expected);
    Message::new(MsgType::Read, read, 0, build_args(&[b"/held"]))
        .unwrap()
        .encode_into(&mut expected);
    assert_eq!(conn_record(&stream, b.id).in_data, expected);
    // -t over: refused; the held requests are carried out, in order.
    let answer = c.live_update(d, &["-s", "-t", "0"]);
    assert!(answer.contains("long running transactions"), "{answer}");
    assert!(!d.core.holding());
    let m = b.answer(d, start);
    assert_eq!(m.header.msg_type, MsgType::TransactionStart.raw());
    let m = b.answer(d, read);
    assert_eq!(m.payload, b"v");
    assert!(d.core.held_conns().is_empty());
    // And the connection is read again.
    assert_eq!(b.ok(d, MsgType::Read, 0, build_args(&[b"/held"])), b"v");
}

#[test]
fn test_to_c_held_requests_pass_the_model_once_the_open_transaction_ends() {
    let mut w = World::new();
    let (mut c, mut t, tx) = c_waiting(&mut w);
    let mut b = w.connect();
    let d = &mut w.daemon;
    let (start, _read) = held_pair(d, &mut b);
    // The open transaction's own requests are not held: it can end.
    t.ok(d, MsgType::TransactionEnd, tx, b"T\0".to_vec());
    let stream = d.export_stream(Version::V2, None);
    let converted = crate::migration::c417::to_c417(&stream, &Default::default())
        .expect("nothing open any more");
    let (bytes, _) = converted.to_checked_bytes().expect("C 4.17 takes it");
    let parsed = Stream::parse(&bytes).unwrap();
    let held = conn_record(&parsed, b.id);
    let mut input = &held.in_data[..];
    let mut dec = Decoder::new();
    let first = dec.decode(&mut input).unwrap().unwrap();
    assert_eq!(
        (first.header.msg_type, first.header.req_id),
        (MsgType::TransactionStart.raw(), start)
    );
    assert!(dec.decode(&mut input).unwrap().is_some());
    // The hand-over goes as far as the exec (which fails here) and,
    // undone, lets the held requests go.
    let answer = c.live_update(d, &["-s", "-t", "60"]);
    assert!(answer.contains("Error activating new binary"), "{answer}");
    assert!(!d.core.holding());
    assert_eq!(
        b.answer(d, start).header.msg_type,
        MsgType::TransactionStart.raw()
    );
}

#[test]
fn test_to_c_an_asker_that_stops_polling_does_not_hold_clients_for_ever() {
    let mut w = World::new();
    let (_c, _t, _tx) = c_waiting(&mut w);
    let mut b = w.connect();
    let d = &mut w.daemon;
    let deadline = d.live_update.as_ref().unwrap().c_hold_until.unwrap();
    assert!(deadline >= Instant::now() + Duration::from_secs(60));
    let (start, read) = held_pair(d, &mut b);
    // As if -t and the grace had passed with no -s again.
    d.live_update.as_mut().unwrap().c_hold_until = Some(Instant::now());
    assert_eq!(
        b.answer(d, start).header.msg_type,
        MsgType::TransactionStart.raw()
    );
    b.answer(d, read);
    assert!(d.live_update.is_none());
    assert!(!d.core.holding());
}
