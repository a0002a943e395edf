//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`), made here from
//! real inputs (vm-virtio's `fuzz/common` pattern): wire messages as the
//! clients encode them, ring pages as a guest fills them, engine sessions
//! in the engine target's input language, a migration stream exported from
//! a real session (and C xenstored's own), and a recording that replays
//! and verifies.
//!
//! `test_checked_in_corpus_is_what_the_generator_writes` fails when the
//! checked-in corpus differs from what this file makes; run it with
//! `FUZZ_CORPUS_WRITE=1` to write the corpus afresh (and commit it).
//! `scripts/fuzz.sh` runs every target from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use xenring::codec::{build_args, build_path_value, Message};
use xenring::page::{OwnedPage, PAGE_SIZE};
use xenring::{GuestEnd, MsgType, ServerEnd};
use xenstored_lite::engine::{Action, Config, ConnId, Engine};
use xenstored_lite::migration::{
    c417, ConnSpec, ConnectionData, Endian, GlobalData, Header, Record, SocketConn, Stream, Version,
};
use xenstored_lite::replay::format::{self, BoundaryEvent, ConnectKind};
use xenstored_lite::replay::player;
use xenstored_lite::shell::state::ShellState;

/// The targets, as named in `fuzz/Cargo.toml`.
const TARGETS: [&str; 9] = [
    "decoder",
    "ring_server",
    "engine",
    "migration",
    "c417_model",
    "recording",
    "crash_journal",
    "stub_cmdline",
    "store_image",
];

/// `target -> (file name -> bytes)`.
type Corpus = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn msg(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
    Message::new(ty, req_id, tx_id, payload).expect("a payload within the limit")
}

/// A client's session as it goes over the wire: every request type with a
/// payload a real client sends.
fn wire_session() -> Vec<Message> {
    let mut n = 0;
    let mut next = |ty, tx, payload: Vec<u8>| {
        n += 1;
        msg(ty, n, tx, payload)
    };
    vec![
        next(MsgType::Write, 0, build_path_value(b"/a/b", b"value")),
        next(MsgType::Read, 0, build_args(&[b"/a/b"])),
        next(MsgType::Directory, 0, build_args(&[b"/a"])),
        next(MsgType::DirectoryPart, 0, build_args(&[b"/a", b"0"])),
        next(MsgType::GetPerms, 0, build_args(&[b"/a/b"])),
        next(MsgType::SetPerms, 0, build_args(&[b"/a/b", b"n0", b"r1"])),
        next(MsgType::Mkdir, 0, build_args(&[b"/a/c"])),
        next(MsgType::Watch, 0, build_args(&[b"/a", b"tok"])),
        next(MsgType::Unwatch, 0, build_args(&[b"/a", b"tok"])),
        next(MsgType::TransactionStart, 0, build_args(&[b""])),
        next(MsgType::Write, 1, build_path_value(b"/a/t", b"in tx")),
        next(MsgType::TransactionEnd, 1, build_args(&[b"T"])),
        next(MsgType::GetDomainPath, 0, build_args(&[b"1"])),
        next(MsgType::Introduce, 0, build_args(&[b"1", b"1234", b"7"])),
        next(MsgType::IsDomainIntroduced, 0, build_args(&[b"1"])),
        next(MsgType::SetTarget, 0, build_args(&[b"2", b"1"])),
        next(MsgType::Resume, 0, build_args(&[b"1"])),
        next(MsgType::Release, 0, build_args(&[b"1"])),
        next(MsgType::ResetWatches, 0, Vec::new()),
        next(MsgType::Control, 0, build_args(&[b"quota"])),
        next(MsgType::Rm, 0, build_args(&[b"/a"])),
    ]
}

fn decoder_corpus() -> BTreeMap<String, Vec<u8>> {
    let session = wire_session();
    let mut out = BTreeMap::new();
    // The first byte is the chunk size less one.
    for (name, chunk) in [
        ("session-bytewise", 0u8),
        ("session-chunks-16", 15),
        ("session-whole", 255),
    ] {
        let mut bytes = vec![chunk];
        for m in &session {
            m.encode_into(&mut bytes);
        }
        out.insert(name.to_string(), bytes);
    }
    let mut replies = vec![63];
    for m in [
        msg(MsgType::Read, 2, 0, b"value".to_vec()),
        Message::error_reply(&session[1].header, xenring::XsErrno::ENOENT),
        msg(MsgType::WatchEvent, 0, 0, build_args(&[b"/a/b", b"tok"])),
        msg(MsgType::Write, 0, 0, vec![b'v'; 4096]),
    ] {
        m.encode_into(&mut replies);
    }
    out.insert("replies-and-events".to_string(), replies);
    // A message cut short: the decoder must keep the partial one.
    let mut partial = vec![6];
    let whole = session[0].to_bytes();
    partial.extend_from_slice(&whole[..whole.len() - 3]);
    out.insert("partial".to_string(), partial);
    out
}

/// The ring page's layout (xs_wire.h `xenstore_domain_interface`).
const REQ_PROD: usize = 2048 + 4;
const RSP_PROD: usize = 2048 + 12;

/// A page image as a guest leaves it after queuing `requests`, with the
/// responses it has already consumed counted in.
fn ring_image(requests: &[u8], rsp_cons_prod: u32) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE];
    page[..requests.len()].copy_from_slice(requests);
    let prod = u32::try_from(requests.len()).expect("fits the queue");
    page[REQ_PROD..REQ_PROD + 4].copy_from_slice(&prod.to_le_bytes());
    page[RSP_PROD - 4..RSP_PROD].copy_from_slice(&rsp_cons_prod.to_le_bytes());
    page[RSP_PROD..RSP_PROD + 4].copy_from_slice(&rsp_cons_prod.to_le_bytes());
    page
}

/// One ring_server operation: an op byte and a little-endian argument.
fn ring_op(op: u8, arg: u32) -> Vec<u8> {
    let mut v = vec![op];
    v.extend_from_slice(&arg.to_le_bytes());
    v
}

fn ring_corpus() -> BTreeMap<String, Vec<u8>> {
    let mut requests = Vec::new();
    for m in wire_session().iter().take(8) {
        m.encode_into(&mut requests);
    }
    requests.truncate(1024);
    let image = ring_image(&requests, 0);
    // The layout is the one the real guest end writes: check it.
    let page = OwnedPage::new();
    page.fill_from(&image);
    let server = ServerEnd::new(page.ring());
    assert_eq!(server.readable().unwrap() as usize, requests.len());
    let guest = GuestEnd::new(page.ring());
    assert_eq!(guest.readable().unwrap(), 0);

    let mut out = BTreeMap::new();
    let mut serve = image.clone();
    for (op, arg) in [(0, 16), (0, 2048), (1, 40), (5, 0), (1, 2000)] {
        serve.extend(ring_op(op, arg));
    }
    out.insert("requests-read-and-answered".to_string(), serve);
    let mut hostile = image.clone();
    for (op, arg) in [
        (2, 0xffff_fff0),
        (0, 64),
        (3, 5000),
        (1, 64),
        (2, 7),
        (0, 1024),
    ] {
        hostile.extend(ring_op(op, arg));
    }
    out.insert("indices-moved".to_string(), hostile);
    let mut reconnect = ring_image(&requests[..100], 4096 - 16);
    for (op, arg) in [(6, 1), (4, 0), (0, 100), (1, 50)] {
        reconnect.extend(ring_op(op, arg));
    }
    out.insert("wrapped-and-reconnect".to_string(), reconnect);
    out
}

/// The engine target's input language (fuzz/fuzz_targets/engine.rs):
/// connections 0 and 1 are dom0's sockets, 2..=4 guests 1..=3.
struct EngineScript(Vec<u8>);

impl EngineScript {
    /// A request with raw arguments (each at most 15 bytes), the last one
    /// without its NUL when `value` (a WRITE's value).
    fn request(&mut self, conn: u8, ty: MsgType, tx: u8, args: &[&[u8]], value: bool) {
        let count = u8::try_from(args.len()).expect("at most 4 arguments");
        assert!(count <= 4);
        let t = u8::try_from(ty.raw()).expect("a known type");
        // mode % 4 == 2, mode / 4 % 5 == count; bit 7 drops the last NUL.
        let mode = if value {
            142 + 4 * count
        } else {
            2 + 4 * count
        };
        self.0.extend([0, conn, t, tx, mode]);
        for a in args {
            // Longer words come from the target's dictionary (`WORDS`).
            match *a {
                b"@introduceDomain" => self.0.push(14),
                _ => {
                    assert!(a.len() < 16, "{}", String::from_utf8_lossy(a));
                    self.0.push(0xf0 + u8::try_from(a.len()).expect("short"));
                    self.0.extend_from_slice(a);
                }
            }
        }
    }

    fn drain(&mut self, conn: u8) {
        self.0.extend([10, conn]);
    }

    fn domain_state(&mut self, domid: u8, shutdown: bool, dying: bool) {
        self.0
            .extend([11, 0, domid, u8::from(shutdown) | u8::from(dying) << 1]);
    }

    fn time(&mut self, seconds: u8) {
        self.0.extend([12, 0, seconds]);
    }
}

fn engine_corpus() -> BTreeMap<String, Vec<u8>> {
    use MsgType::*;
    let mut out = BTreeMap::new();

    let mut s = EngineScript(Vec::new());
    s.request(0, Write, 0, &[b"/a/b", b"value"], true);
    s.request(0, Read, 0, &[b"/a/b"], false);
    s.request(0, Directory, 0, &[b"/a"], false);
    s.request(0, SetPerms, 0, &[b"/a/b", b"n0", b"r1"], false);
    s.request(0, GetPerms, 0, &[b"/a/b"], false);
    s.request(1, Watch, 0, &[b"/a", b"tok"], false);
    s.request(0, Rm, 0, &[b"/a"], false);
    s.drain(0);
    s.drain(1);
    out.insert("dom0-store".to_string(), s.0);

    let mut s = EngineScript(Vec::new());
    s.request(2, Write, 0, &[b"data/k", b"v1"], true);
    s.request(2, Watch, 0, &[b"data", b"w"], false);
    s.request(2, Write, 0, &[b"data/k/l", b"v2"], true);
    s.request(3, Read, 0, &[b"/local/domain/1"], false);
    s.request(2, DirectoryPart, 0, &[b"data", b"0"], false);
    s.drain(2);
    s.request(2, Unwatch, 0, &[b"data", b"w"], false);
    s.drain(3);
    out.insert("guest-watch".to_string(), s.0);

    let mut s = EngineScript(Vec::new());
    s.request(2, TransactionStart, 0, &[b""], false);
    s.request(2, Read, 1, &[b"/local/domain/1"], false);
    s.request(2, Write, 1, &[b"data/t", b"in tx"], true);
    s.request(0, Write, 0, &[b"/local/domain/1", b"x"], true);
    s.request(2, TransactionEnd, 1, &[b"T"], false);
    s.request(2, TransactionStart, 0, &[b""], false);
    s.request(2, TransactionEnd, 2, &[b"F"], false);
    s.drain(2);
    out.insert("guest-transactions".to_string(), s.0);

    let mut s = EngineScript(Vec::new());
    s.request(0, Watch, 0, &[b"@releaseDomain", b"r"], false);
    s.request(0, Watch, 0, &[b"@introduceDomain", b"i"], false);
    s.request(2, Write, 0, &[b"data/k", b"v"], true);
    s.domain_state(1, true, false);
    s.time(30);
    s.domain_state(1, true, true);
    s.request(0, Introduce, 0, &[b"4", b"1234", b"7"], false);
    s.request(0, IsDomainIntroduced, 0, &[b"1"], false);
    s.request(0, Release, 0, &[b"2"], false);
    s.drain(0);
    out.insert("domain-lifecycle".to_string(), s.0);

    let mut s = EngineScript(Vec::new());
    for cmd in [&b"quota"[..], b"memreport", b"check", b"print"] {
        s.request(0, Control, 0, &[cmd], false);
    }
    s.request(2, Control, 0, &[b"quota"], false);
    s.drain(0);
    out.insert("control".to_string(), s.0);
    out
}

/// A session through the shell's deterministic state, each event encoded
/// as the recorder writes it.
struct Session {
    state: ShellState,
    events: Vec<u8>,
    next_conn: ConnId,
}

impl Session {
    fn new() -> Self {
        let mut s = Self {
            state: ShellState::new(Engine::new(Config::default()), None),
            events: Vec::new(),
            next_conn: 1,
        };
        s.apply(BoundaryEvent::Start { args: Vec::new() });
        s
    }

    fn apply(&mut self, event: BoundaryEvent<'_>) {
        format::encode(&event, &mut self.events);
        self.state
            .apply(event, &mut |_, _, _, _| {})
            .expect("the session's events apply");
        self.settle();
    }

    fn settle(&mut self) {
        loop {
            let actions = self.state.take_actions();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                if let Action::Introduce { token, .. } = action {
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    self.apply(BoundaryEvent::Introduced {
                        token,
                        result: Ok(conn),
                    });
                }
            }
        }
        for conn in self.state.conns_with_output() {
            while let Some(bytes) = self.state.next_output(conn).map(<[u8]>::to_vec) {
                format::encode(
                    &BoundaryEvent::Output {
                        conn,
                        bytes: &bytes,
                    },
                    &mut self.events,
                );
                self.state
                    .apply(
                        BoundaryEvent::Output {
                            conn,
                            bytes: &bytes,
                        },
                        &mut |_, _, _, _| {},
                    )
                    .expect("an output applies");
            }
        }
    }

    fn connect(&mut self) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.apply(BoundaryEvent::Connect {
            conn,
            kind: ConnectKind::Socket,
        });
        conn
    }

    fn send(&mut self, conn: ConnId, m: &Message) {
        let bytes = m.to_bytes();
        self.apply(BoundaryEvent::Input {
            conn,
            bytes: &bytes,
        });
    }

    /// A toolstack and a guest at work, with the clock moving.
    fn busy() -> (Self, ConnId, ConnId) {
        let mut s = Self::new();
        s.apply(BoundaryEvent::Time(1));
        let dom0 = s.connect();
        let watcher = s.connect();
        s.send(
            watcher,
            &msg(MsgType::Watch, 1, 0, build_args(&[b"/local", b"w"])),
        );
        s.send(
            dom0,
            &msg(MsgType::Mkdir, 1, 0, build_args(&[b"/local/domain/1"])),
        );
        s.send(
            dom0,
            &msg(
                MsgType::SetPerms,
                2,
                0,
                build_args(&[b"/local/domain/1", b"n1"]),
            ),
        );
        s.send(
            dom0,
            &msg(MsgType::Introduce, 3, 0, build_args(&[b"1", b"1234", b"7"])),
        );
        let guest = s.next_conn - 1;
        s.apply(BoundaryEvent::Time(5));
        for (i, m) in wire_session().into_iter().take(12).enumerate() {
            let conn = if i % 2 == 0 { guest } else { dom0 };
            s.send(conn, &m);
        }
        s.apply(BoundaryEvent::DomainState {
            domid: 1,
            shutdown: true,
            dying: false,
        });
        s.apply(BoundaryEvent::Time(20));
        // A request left half-read: the stream carries it.
        let half = msg(MsgType::Read, 99, 0, build_args(&[b"/a/b"])).to_bytes();
        s.apply(BoundaryEvent::Input {
            conn: dom0,
            bytes: &half[..20],
        });
        (s, dom0, guest)
    }
}

fn recording_corpus() -> BTreeMap<String, Vec<u8>> {
    let (mut s, dom0, _) = Session::busy();
    s.apply(BoundaryEvent::Close { conn: dom0 });
    let mut file = format::header().to_vec();
    file.extend_from_slice(&s.events);
    let opts = player::Options {
        verify: true,
        ..Default::default()
    };
    player::replay_bytes(&file, &opts).expect("the recording replays and verifies");
    // The target puts the header in front itself.
    BTreeMap::from([("busy-session".to_string(), s.events)])
}

/// A journal as a crashed daemon leaves it: a busy session with a ring's
/// indices and counters, then a request marked fatal; it replays with the
/// request skipped.
fn crash_journal_corpus() -> BTreeMap<String, Vec<u8>> {
    let (mut s, dom0, guest) = Session::busy();
    let mut events = std::mem::take(&mut s.events);
    let add = |events: &mut Vec<u8>, e: &BoundaryEvent<'_>| format::encode(e, events);
    add(
        &mut events,
        &BoundaryEvent::RingIndices {
            conn: guest,
            req_cons: 0,
            rsp_prod: 0,
        },
    );
    add(
        &mut events,
        &BoundaryEvent::Counters(s.state.engine().counters()),
    );
    let poison = msg(MsgType::Write, 77, 0, build_path_value(b"/p", b"v"));
    // The poisoned request's event is the next one.
    let index = {
        let file = [format::header().as_slice(), &events].concat();
        let mut r = format::Reader::new(&file).expect("a header");
        while let Ok(format::Next::Event(_)) = r.next_event() {}
        r.events_read()
    };
    add(
        &mut events,
        &BoundaryEvent::Input {
            conn: dom0,
            bytes: &poison.to_bytes(),
        },
    );
    add(
        &mut events,
        &BoundaryEvent::Fatal {
            event: index,
            request: Some((dom0, poison.header)),
        },
    );
    let mut file = format::header().to_vec();
    file.extend_from_slice(&events);
    let r = xenstored_lite::shell::Replayed::from_bytes(Engine::new(Config::default()), &file)
        .expect("the journal replays");
    assert_eq!(r.summary().skipped, 1);
    BTreeMap::from([("busy-then-fatal".to_string(), events)])
}

fn migration_corpus() -> BTreeMap<String, Vec<u8>> {
    let (s, dom0, _) = Session::busy();
    let mut records = vec![Record::Global(GlobalData {
        rw_socket_fd: 3,
        evtchn_fd: 4,
    })];
    let mut map = BTreeMap::new();
    for conn in [dom0, dom0 + 1] {
        let pending = s.state.pending(conn, None).expect("a live connection");
        map.insert(conn, conn);
        records.push(Record::Connection(ConnectionData {
            conn_id: conn,
            spec: ConnSpec::Socket(SocketConn {
                socket_fd: 10 + i32::try_from(conn).expect("small"),
            }),
            in_data: pending.in_data,
            out_resp_len: pending.out_resp_len,
            out_data: pending.out_data,
            unique_id: None,
            ring: None,
        }));
    }
    records.extend(s.state.export_records(&map));
    let stream = Stream {
        header: Header {
            version: Version::V2,
            endian: Endian::Little,
        },
        records,
    };
    let bytes = stream.to_bytes().expect("the stream writes");
    xenstored_lite::shell::check_stream(Config::default(), &bytes, &stream)
        .expect("the exported stream restores");
    let c_stream = std::fs::read(
        root().join("xenstored-lite/src/migration/testdata/c-xenstored-4.17-live-update.stream"),
    )
    .expect("C xenstored's stream");
    BTreeMap::from([
        ("busy-session-v2".to_string(), bytes),
        ("c-xenstored-4.17".to_string(), c_stream),
    ])
}

/// The C 4.17 model's seeds: C xenstored's own stream, and the busy
/// session's stream as `to_c417` converts it (its guest's ring is not in
/// the stream: the conversion keeps the domain with an inert ring).
fn c417_corpus() -> BTreeMap<String, Vec<u8>> {
    let (s, dom0, _) = Session::busy();
    let mut records = vec![Record::Global(GlobalData {
        rw_socket_fd: 3,
        evtchn_fd: 4,
    })];
    let mut map = BTreeMap::new();
    for conn in [dom0, dom0 + 1] {
        let pending = s.state.pending(conn, None).expect("a live connection");
        map.insert(conn, conn);
        records.push(Record::Connection(ConnectionData {
            conn_id: conn,
            spec: ConnSpec::Socket(SocketConn {
                socket_fd: 10 + i32::try_from(conn).expect("small"),
            }),
            in_data: pending.in_data,
            out_resp_len: pending.out_resp_len,
            out_data: pending.out_data,
            unique_id: None,
            ring: None,
        }));
    }
    records.extend(s.state.export_records(&map));
    let stream = Stream {
        header: Header {
            version: Version::V2,
            endian: Endian::Little,
        },
        records,
    };
    let opts = c417::C417Options {
        drop_transactions: true,
        drop_domain_quotas: true,
    };
    let converted = c417::to_c417(&stream, &opts).expect("the busy session converts");
    let bytes = converted
        .to_bytes()
        .expect("the C 4.17 form passes the model");
    let c_stream = std::fs::read(
        root().join("xenstored-lite/src/migration/testdata/c-xenstored-4.17-live-update.stream"),
    )
    .expect("C xenstored's stream");
    c417::check_c417(&c_stream).expect("C's own stream passes the model");
    BTreeMap::from([
        ("busy-session-c417".to_string(), bytes),
        ("c-xenstored-4.17".to_string(), c_stream),
    ])
}

/// `start_info.cmd_line` as launchers write it: Xen 4.17's
/// init-xenstore-domain (`--event N --internal-db`, then `--param` text),
/// later releases' `--domid`, every option once, and refusals.
fn stub_cmdline_corpus() -> BTreeMap<String, Vec<u8>> {
    let accepted = [
        ("xen-4.17", "--event 5 --internal-db"),
        (
            "xen-4.17-param",
            "--event 7 --internal-db -E 50 --quota memory=1000 -K",
        ),
        ("xen-later", "--event 3 --domid 12"),
        (
            "every-option",
            "--event=9 -S 100 -W 7 -t 3 -A 2 -M 99 -q memory=500 -w watch-event=5 \
             --rate-limit writes=0 --priv-event-queue 4096 --guest-log-interval 3 \
             --priv-domid 4 -V --verbose --entry-nb=11 -Q nodes=10",
        ),
    ];
    let refused = [
        ("no-event", "--internal-db"),
        ("not-in-stub", "--event 1 --socket /run/x"),
        ("bad-number", "--event 1 -E lots"),
    ];
    let mut out = BTreeMap::new();
    for (name, line) in accepted {
        xenstored_stubdom::cmdline::parse(line).expect("an accepted seed");
        // As start_info holds it: NUL-terminated.
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(0);
        out.insert(name.to_string(), bytes);
    }
    for (name, line) in refused {
        assert!(xenstored_stubdom::cmdline::parse(line).is_err(), "{line}");
        out.insert(name.to_string(), line.as_bytes().to_vec());
    }
    out.insert("not-utf8".to_string(), b"--event 5 \xff -K".to_vec());
    out
}

/// Store images: a toolstack-like store whole, the changes of a session
/// of writes and removals since its snapshot, and an empty change.
fn store_image_corpus() -> BTreeMap<String, Vec<u8>> {
    let mut e = Engine::new(Config::default());
    e.handle(xenstored_lite::engine::Input::Connect {
        conn: 1,
        kind: xenstored_lite::engine::ConnKind::Socket,
    });
    let write = |e: &mut Engine, path: &str, value: &[u8]| {
        let payload = build_path_value(path.as_bytes(), value);
        let msg = Message::new(MsgType::Write, 1, 0, payload).expect("a message");
        e.handle(xenstored_lite::engine::Input::Request { conn: 1, msg: &msg });
    };
    for d in 1..4 {
        write(
            &mut e,
            &format!("/local/domain/{d}/name"),
            format!("guest{d}").as_bytes(),
        );
        write(
            &mut e,
            &format!("/local/domain/{d}/device/vif/0/state"),
            b"4",
        );
    }
    let base = e.store().clone();
    let mut out = BTreeMap::new();
    out.insert("whole".to_string(), base.image(None));
    out.insert("no-change".to_string(), base.image(Some(&base)));
    write(&mut e, "/local/domain/2/name", b"renamed");
    write(&mut e, "/vm/new", b"x");
    let rm = Message::new(MsgType::Rm, 2, 0, b"/local/domain/3\0".to_vec()).expect("a message");
    e.handle(xenstored_lite::engine::Input::Request { conn: 1, msg: &rm });
    out.insert("changes".to_string(), e.store().image(Some(&base)));
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn corpus() -> Corpus {
    BTreeMap::from([
        ("decoder", decoder_corpus()),
        ("ring_server", ring_corpus()),
        ("engine", engine_corpus()),
        ("migration", migration_corpus()),
        ("c417_model", c417_corpus()),
        ("recording", recording_corpus()),
        ("crash_journal", crash_journal_corpus()),
        ("stub_cmdline", stub_cmdline_corpus()),
        ("store_image", store_image_corpus()),
    ])
}

fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.expect("a directory entry");
            let name = e.file_name().into_string().expect("a UTF-8 name");
            (name, std::fs::read(e.path()).expect("a corpus file"))
        })
        .collect()
}

#[test]
fn test_checked_in_corpus_is_what_the_generator_writes() {
    let corpus = corpus();
    assert_eq!(corpus.keys().copied().collect::<Vec<_>>(), {
        let mut t = TARGETS.to_vec();
        t.sort_unstable();
        t
    });
    let base = root().join("fuzz/corpus");
    let write = std::env::var_os("FUZZ_CORPUS_WRITE").is_some();
    for (target, files) in &corpus {
        let dir = base.join(target);
        if write {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("the corpus directory");
            for (name, bytes) in files {
                std::fs::write(dir.join(name), bytes).expect("a corpus file");
            }
        }
        let found = read_dir(&dir);
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&found),
            names(files),
            "fuzz/corpus/{target}: run FUZZ_CORPUS_WRITE=1 cargo test -p tests --test fuzz_corpus"
        );
        for (name, bytes) in files {
            assert!(
                found[name] == *bytes,
                "fuzz/corpus/{target}/{name} differs from what the generator writes \
                 (FUZZ_CORPUS_WRITE=1 writes it afresh)"
            );
        }
    }
}

#[test]
fn test_the_generator_is_deterministic() {
    assert_eq!(corpus(), corpus());
}
