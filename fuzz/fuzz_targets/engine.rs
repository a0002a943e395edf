//! The engine driven by arbitrary request sequences from several connections
//! (two dom0 sockets and three introduced guests, more as the input asks),
//! interleaved with domain state changes, time, disconnects and ring resets.
//!
//! Asserts: no panic; every request to a live connection gets exactly one
//! reply, in request order (req_id and tx_id echoed, type = the request's or
//! XS_ERROR); no reply payload exceeds 4096 bytes; `Engine::check` is clean
//! at the end.
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use libfuzzer_sys::fuzz_target;
use xenring::codec::{build_args, Message};
use xenring::{MsgType, XsErrno};
use xenstored_lite::engine::{Action, ConnId, ConnKind, Engine, Input};

/// Words the structured payload builder draws from.
const WORDS: &[&[u8]] = &[
    b"/",
    b"/a",
    b"/a/b",
    b"/a/b/c",
    b"/x",
    b"/local",
    b"/local/domain",
    b"/local/domain/1",
    b"/local/domain/2/k",
    b"/local/domain/3",
    b"/local/domain/0/backend/vbd/51712",
    b"k",
    b"k/l",
    b"device/vif/0",
    b"@introduceDomain",
    b"@releaseDomain",
    b"@releaseDomain/2",
    b"tok",
    b"T",
    b"F",
    b"n0",
    b"r1",
    b"w2",
    b"b3",
    b"n1",
    b"b0",
    b"0",
    b"1",
    b"2",
    b"3",
    b"7",
    b"1234",
    b"-1",
    b"help",
    b"check",
    b"quota",
    b"quota-soft",
    b"memreport",
    b"print",
    b"nodes",
    b"watches",
    b"transactions",
    b"",
];

struct Cursor<'a> {
    data: &'a [u8],
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u32(&mut self) -> u32 {
        let mut v = [0u8; 4];
        for b in &mut v {
            *b = self.byte().unwrap_or(0);
        }
        u32::from_le_bytes(v)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

struct Harness {
    engine: Engine,
    /// Every connection ever made (requests may go to dead ones).
    conns: Vec<ConnId>,
    /// Live connections and the (req_id, tx_id, type) of each request still
    /// waiting for its reply.
    expected: BTreeMap<ConnId, VecDeque<(u32, u32, u32)>>,
    /// The socket connections (Disconnect is for sockets only: a ring goes
    /// with its domain).
    sockets: Vec<ConnId>,
    next_conn: ConnId,
    next_req: u32,
    /// `ENGINE_FUZZ_TRACE=1`: print the requests (to read a crash).
    trace: bool,
}

impl Harness {
    fn new() -> Self {
        let mut h = Self {
            engine: Engine::new(xenstored_lite::engine::Config::default()),
            conns: Vec::new(),
            expected: BTreeMap::new(),
            sockets: Vec::new(),
            next_conn: 1,
            next_req: 1,
            trace: std::env::var_os("ENGINE_FUZZ_TRACE").is_some(),
        };
        h.connect_socket();
        h.connect_socket();
        for domid in 1..=3u32 {
            let payload = build_args(&[domid.to_string().as_bytes(), b"1234", b"7"]);
            h.request(h.conns[0], MsgType::Introduce.raw(), 0, payload, 0);
        }
        h.drain_all();
        assert_eq!(h.conns.len(), 5, "three guests introduced");
        h
    }

    fn connect_socket(&mut self) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.engine.handle(Input::Connect {
            conn,
            kind: ConnKind::Socket,
        });
        self.conns.push(conn);
        self.sockets.push(conn);
        self.expected.insert(conn, VecDeque::new());
    }

    fn request(&mut self, conn: ConnId, ty: u32, tx_id: u32, payload: Vec<u8>, fail_introduce: u8) {
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let Ok(msg) = Message::with_raw_type(ty, req_id, tx_id, payload) else {
            return;
        };
        if let Some(q) = self.expected.get_mut(&conn) {
            q.push_back((req_id, tx_id, ty));
        }
        if self.trace {
            eprintln!(
                "conn {conn} request type {ty} req {req_id} tx {tx_id} payload {:?}",
                String::from_utf8_lossy(&msg.payload)
            );
        }
        self.engine.handle(Input::Request { conn, msg: &msg });
        self.actions(fail_introduce);
    }

    /// Carries out the engine's actions at once, as the shell does.
    fn actions(&mut self, fail_introduce: u8) {
        loop {
            let actions = self.engine.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                match action {
                    Action::Introduce { token, domid, .. } => {
                        let result = if fail_introduce % 7 == 1 {
                            Err(XsErrno::EINVAL)
                        } else {
                            let ring = self.next_conn;
                            self.next_conn += 1;
                            self.conns.push(ring);
                            self.expected.insert(ring, VecDeque::new());
                            let _ = domid;
                            Ok(ring)
                        };
                        self.engine.handle(Input::Introduced { token, result });
                    }
                    Action::Release { conn, .. } | Action::Kill { conn, .. } => {
                        self.expected.remove(&conn);
                        assert!(
                            !self.engine.has_output(conn),
                            "output for a connection that is gone"
                        );
                    }
                    // The shell answers these two later (after writing
                    // the report, after the hand-over): answer at once,
                    // as the shell does when it cannot carry them out.
                    Action::MemReport { conn, header, .. } => {
                        if fail_introduce % 7 == 2 {
                            self.engine.answer_error(conn, &header, XsErrno::EINVAL);
                        } else {
                            self.engine.answer_control(conn, &header, "OK");
                        }
                    }
                    Action::LiveUpdate { conn, header, .. } => {
                        self.engine.answer_control(conn, &header, "BUSY");
                    }
                    Action::Log(_) | Action::Control { .. } => {}
                }
            }
        }
    }

    fn drain(&mut self, conn: ConnId) {
        while let Some(msg) = self.engine.pop_output(conn) {
            assert_eq!(msg.header.len as usize, msg.payload.len());
            if msg.header.msg_type == MsgType::WatchEvent.raw() {
                // Known and reported: an event's payload (path, token, two
                // NULs) can exceed 4096 bytes. Not asserted here, so that the
                // fuzzer goes on to look for other things.
                continue;
            }
            assert!(
                msg.payload.len() <= 4096,
                "reply payload of {} bytes",
                msg.payload.len()
            );
            let q = self
                .expected
                .get_mut(&conn)
                .expect("reply on a connection that is gone");
            let (req_id, tx_id, ty) = q.pop_front().expect("a reply nobody asked for");
            assert_eq!(msg.header.req_id, req_id, "replies in request order");
            assert_eq!(msg.header.tx_id, tx_id, "tx_id echoed");
            assert!(
                msg.header.msg_type == ty || msg.header.msg_type == MsgType::Error.raw(),
                "reply type {} to request type {ty}",
                msg.header.msg_type
            );
        }
    }

    fn drain_all(&mut self) {
        for conn in self.conns.clone() {
            self.drain(conn);
        }
    }

    fn forget(&mut self, conn: ConnId) {
        self.expected.remove(&conn);
    }
}

fn payload(c: &mut Cursor<'_>) -> Vec<u8> {
    let mode = c.byte().unwrap_or(0);
    match mode % 4 {
        // Raw bytes, up to 255 * 17 (over the 4096 limit: rejected).
        0 => {
            let n = usize::from(c.byte().unwrap_or(0)) * usize::from(mode / 4 % 18);
            c.bytes(n).to_vec()
        }
        // Long values for size limits.
        1 => {
            let word = WORDS[usize::from(c.byte().unwrap_or(0)) % WORDS.len()];
            let n = usize::from(c.byte().unwrap_or(0)) * 16;
            let mut out = word.to_vec();
            out.push(0);
            out.extend(std::iter::repeat_n(b'v', n));
            out
        }
        // Arguments from the dictionary and the input.
        _ => {
            let count = mode / 4 % 5;
            let mut out = Vec::new();
            for _ in 0..count {
                let w = c.byte().unwrap_or(0);
                if w < 0xf0 {
                    out.extend_from_slice(WORDS[usize::from(w) % WORDS.len()]);
                } else {
                    let n = usize::from(w - 0xf0);
                    out.extend_from_slice(c.bytes(n));
                }
                out.push(0);
            }
            if mode & 0x80 != 0 {
                out.pop();
            }
            out
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    let mut c = Cursor { data };
    let mut now = 0u64;
    while let Some(op) = c.byte() {
        let pick = usize::from(c.byte().unwrap_or(0));
        let conn = h.conns[pick % h.conns.len()];
        match op % 16 {
            0..=9 => {
                let t = c.byte().unwrap_or(0);
                let ty = if t < 0xe0 { u32::from(t % 28) } else { c.u32() };
                let x = c.byte().unwrap_or(0);
                let tx_id = if x < 0xf0 { u32::from(x % 4) } else { c.u32() };
                let p = payload(&mut c);
                h.request(conn, ty, tx_id, p, x);
            }
            10 => h.drain(conn),
            11 => {
                let domid = u16::from(c.byte().unwrap_or(0) % 6);
                let flags = c.byte().unwrap_or(0);
                h.engine.handle(Input::DomainState {
                    domid,
                    shutdown: flags & 1 != 0,
                    dying: flags & 2 != 0,
                });
                h.actions(0);
            }
            12 => {
                now += u64::from(c.byte().unwrap_or(0)) * 1000;
                h.engine.handle(Input::Time(now));
                h.actions(0);
            }
            13 => {
                let conn = h.sockets[pick % h.sockets.len()];
                h.engine.handle(Input::Disconnect { conn });
                h.forget(conn);
                h.actions(0);
            }
            14 => {
                h.engine.handle(Input::Reset { conn });
                if let Some(q) = h.expected.get_mut(&conn) {
                    q.clear();
                }
                assert!(!h.engine.has_output(conn));
                h.actions(0);
            }
            _ => {
                if h.conns.len() < 64 {
                    h.connect_socket();
                }
            }
        }
    }
    h.drain_all();
    for (conn, q) in &h.expected {
        assert!(
            q.is_empty(),
            "connection {conn}: {} requests without a reply",
            q.len()
        );
    }
    let problems = h.engine.check();
    assert!(problems.is_empty(), "{problems:?}");
});
