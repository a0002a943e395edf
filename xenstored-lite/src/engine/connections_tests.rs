//! Tests of the output queues: watch-event back-pressure on the source,
//! the privileged queue's bound, O(1) de-duplication and the guest-driven
//! log lines' rate limit.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use xenring::codec::{build_args, build_path_value, Message};
use xenring::{DomId, MsgType, XsErrno};

use super::super::{Action, Config, ConnId, ConnKind, Engine, Input};

const SOCK: ConnId = 1;

struct H {
    e: Engine,
    id: u32,
}

impl H {
    fn with(config: Config) -> Self {
        let mut e = Engine::new(config);
        e.handle(Input::Connect {
            conn: SOCK,
            kind: ConnKind::Socket,
        });
        Self { e, id: 0 }
    }

    fn new() -> Self {
        Self::with(Config::default())
    }

    /// Introduces `domid`; its ring is connection 100 + domid.
    fn dom(&mut self, domid: DomId) -> ConnId {
        let ring = 100 + ConnId::from(domid);
        let d = domid.to_string();
        self.send(
            SOCK,
            MsgType::Introduce,
            build_args(&[d.as_bytes(), b"4660", b"1"]),
        );
        let token = self
            .e
            .take_actions()
            .into_iter()
            .find_map(|a| match a {
                Action::Introduce { token, .. } => Some(token),
                _ => None,
            })
            .expect("an introduce action");
        self.e.handle(Input::Introduced {
            token,
            result: Ok(ring),
        });
        self.drain(SOCK);
        ring
    }

    fn send(&mut self, conn: ConnId, ty: MsgType, payload: Vec<u8>) {
        self.id += 1;
        let msg = Message::new(ty, self.id, 0, payload).unwrap();
        self.e.handle(Input::Request { conn, msg: &msg });
    }

    /// Sends a request and takes everything queued for `conn`: the reply
    /// (`Err` for an error reply) and the events.
    fn req(&mut self, conn: ConnId, ty: MsgType, args: &[&str]) -> Result<Vec<u8>, XsErrno> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(conn, ty, build_args(&args));
        self.reply(conn)
    }

    fn write(&mut self, conn: ConnId, path: &str, value: &str) -> Result<Vec<u8>, XsErrno> {
        self.send(
            conn,
            MsgType::Write,
            build_path_value(path.as_bytes(), value.as_bytes()),
        );
        self.reply(conn)
    }

    /// Takes `conn`'s queue up to and with its first reply.
    fn reply(&mut self, conn: ConnId) -> Result<Vec<u8>, XsErrno> {
        loop {
            let m = self.e.pop_output(conn).expect("a reply");
            if m.header.msg_type == MsgType::WatchEvent.raw() {
                continue;
            }
            if m.header.msg_type == MsgType::Error.raw() {
                return Err(XsErrno::from_wire(&m.payload).unwrap());
            }
            return Ok(m.payload);
        }
    }

    /// Takes everything queued for `conn`.
    fn drain(&mut self, conn: ConnId) -> usize {
        let mut n = 0;
        while self.e.pop_output(conn).is_some() {
            n += 1;
        }
        n
    }

    fn logs(&mut self) -> Vec<String> {
        self.e
            .take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Log(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    fn check(&self) {
        assert_eq!(self.e.check(), Vec::<String>::new());
    }

    /// A frontend (domain 5) and a backend (domain 6) that watches
    /// `/fe`, where the frontend may write.
    fn frontend_backend(config: Config) -> (Self, ConnId, ConnId) {
        let mut h = Self::with(config);
        let fe = h.dom(5);
        let be = h.dom(6);
        h.write(SOCK, "/fe", "").unwrap();
        h.req(SOCK, MsgType::SetPerms, &["/fe", "b0"]).unwrap();
        h.req(be, MsgType::Watch, &["/fe", "be"]).unwrap();
        h.drain(be);
        (h, fe, be)
    }
}

/// A frontend flooding distinct events at a backend that reads nothing is
/// held by its own outstanding quota (20), with its replies taken; the
/// backend is not cut off, and each event it takes lets one more request
/// of the frontend in.
#[test]
fn test_events_hold_their_source_until_delivered() {
    let (mut h, fe, be) = H::frontend_backend(Config::default());
    let mut sent = 0;
    while h.e.accepts_requests(fe) && sent < 1000 {
        h.write(fe, &format!("/fe/k{sent}"), "v").unwrap();
        sent += 1;
    }
    assert_eq!(sent, 20, "the outstanding quota holds it");
    assert!(!h.e.has_output(fe), "its replies were all taken");
    assert!(
        !h.e.take_actions()
            .iter()
            .any(|a| matches!(a, Action::Kill { .. })),
        "nobody is cut off"
    );
    assert_eq!(h.e.queued_messages(be).count(), 20);
    assert!(h.e.take_unblocked().is_empty());
    h.check();
    h.e.pop_output(be);
    assert!(
        h.e.accepts_requests(fe),
        "one event delivered: one request more"
    );
    assert_eq!(
        h.e.take_unblocked(),
        vec![fe],
        "the shell is told to read it"
    );
    h.write(fe, "/fe/more", "v").unwrap();
    assert!(!h.e.accepts_requests(fe));
    h.check();
    // Dom0 is never held, and others of the backend's clients carry on.
    for i in 0..100 {
        h.write(SOCK, &format!("/fe/d{i}"), "v").unwrap();
    }
    assert!(h.e.accepts_requests(SOCK));
    h.check();
    h.drain(be);
    assert!(h.e.accepts_requests(fe));
    h.check();
}

/// A request whose reply is still queued is counted once, not twice, and
/// stays outstanding after its reply is taken until its events go.
#[test]
fn test_events_a_request_is_outstanding_once() {
    let (mut h, fe, be) = H::frontend_backend(Config::default());
    h.send(fe, MsgType::Write, build_path_value(b"/fe/a", b"v"));
    h.check();
    let c = h.e.conns.get(&fe).unwrap();
    assert_eq!((c.replies_queued, c.held, c.outstanding()), (1, 0, 1));
    h.e.pop_output(fe);
    let c = h.e.conns.get(&fe).unwrap();
    assert_eq!((c.replies_queued, c.held), (0, 1));
    h.check();
    h.e.pop_output(be);
    assert_eq!(h.e.conns.get(&fe).unwrap().outstanding(), 0);
    h.check();
}

/// The receiver going (reset, disconnect) or its events expiring lets
/// the source go; so does the source's own reset.
#[test]
fn test_events_hold_released_by_receiver_reset_expiry_and_timeout() {
    let (mut h, fe, be) = H::frontend_backend(Config::default());
    for i in 0..20 {
        h.write(fe, &format!("/fe/k{i}"), "v").unwrap();
    }
    assert!(!h.e.accepts_requests(fe));
    h.e.handle(Input::Reset { conn: be });
    assert!(h.e.accepts_requests(fe), "the backend's queue went");
    h.check();

    // Expiry of the backend's events (20 s).
    h.req(be, MsgType::Watch, &["/fe", "be"]).unwrap();
    h.drain(be);
    h.e.handle(Input::Time(1_000));
    for i in 0..20 {
        h.write(fe, &format!("/fe/e{i}"), "v").unwrap();
    }
    assert!(!h.e.accepts_requests(fe));
    h.e.handle(Input::Time(20_999));
    assert!(!h.e.accepts_requests(fe));
    h.e.handle(Input::Time(21_000));
    assert!(h.e.accepts_requests(fe), "its events expired");
    assert!(!h.e.has_output(be));
    h.check();

    // A privileged watcher's events do not expire, but the source is let
    // go after the same time.
    h.req(SOCK, MsgType::Watch, &["/fe", "dom0"]).unwrap();
    h.drain(SOCK);
    for i in 0..20 {
        h.write(fe, &format!("/fe/p{i}"), "v").unwrap();
    }
    h.drain(be);
    assert!(!h.e.accepts_requests(fe), "dom0 has not read them");
    h.e.handle(Input::Time(41_000));
    assert!(h.e.accepts_requests(fe), "held at most 20 s");
    assert_eq!(h.drain(SOCK), 20, "dom0 still gets them all");
    h.check();

    // The source's own reset forgets its holds.
    for i in 0..20 {
        h.write(fe, &format!("/fe/r{i}"), "v").unwrap();
    }
    h.drain(SOCK);
    assert!(!h.e.accepts_requests(fe));
    h.e.handle(Input::Reset { conn: fe });
    assert!(h.e.accepts_requests(fe));
    h.check();
    h.drain(be);
    h.check();
    // And its disconnection.
    for i in 0..5 {
        h.write(fe, &format!("/fe/s{i}"), "v").unwrap();
    }
    h.e.handle(Input::Disconnect { conn: fe });
    h.check();
    assert_eq!(h.drain(be), 5);
    h.check();
}

/// WATCH's first event is not counted against the request (as C), so a
/// guest that does not read cannot be held by its own watches' first
/// events beyond their replies.
#[test]
fn test_events_initial_watch_event_is_nobodys() {
    let mut h = H::new();
    let d5 = h.dom(5);
    h.send(d5, MsgType::Watch, build_args(&[b"data", b"t"]));
    h.e.pop_output(d5); // the reply
    assert_eq!(h.e.conns.get(&d5).unwrap().outstanding(), 0);
    assert!(h.e.has_output(d5));
    h.check();
}

/// Identical events are merged while one waits, exactly: after it is
/// taken, expired or reset away, the next one is queued again.
#[test]
fn test_events_deduplication_exact_across_pop_expiry_reset() {
    let (mut h, fe, be) = H::frontend_backend(Config::default());
    h.e.handle(Input::Time(100));
    for _ in 0..5 {
        h.write(SOCK, "/fe/x", "v").unwrap();
    }
    assert_eq!(h.e.queued_messages(be).count(), 1);
    h.check();
    assert_eq!(h.drain(be), 1);
    h.write(SOCK, "/fe/x", "v").unwrap();
    assert_eq!(h.e.queued_messages(be).count(), 1, "news again");
    h.e.handle(Input::Time(100 + 20_000));
    assert_eq!(h.e.queued_messages(be).count(), 0, "expired");
    h.check();
    h.write(SOCK, "/fe/x", "v").unwrap();
    h.write(SOCK, "/fe/x", "v").unwrap();
    assert_eq!(h.e.queued_messages(be).count(), 1);
    h.e.handle(Input::Reset { conn: be });
    h.req(be, MsgType::Watch, &["/fe", "be"]).unwrap();
    h.drain(be);
    h.write(fe, "/fe/x", "v").unwrap();
    h.write(fe, "/fe/x", "v").unwrap();
    assert_eq!(h.e.queued_messages(be).count(), 1);
    h.check();
}

/// A privileged connection that reads nothing keeps at most the bound of
/// watch events, the newest, with every reply; it is logged once when it
/// starts and once when the queue is empty again.
#[test]
fn test_events_privileged_queue_drops_oldest_logged_once() {
    let mut h = H::with(Config {
        max_priv_event_bytes: 1000,
        ..Config::default()
    });
    h.e.handle(Input::Connect {
        conn: 2,
        kind: ConnKind::Socket,
    });
    h.req(2, MsgType::Watch, &["/w", "t"]).unwrap();
    h.drain(2);
    h.logs();
    // A reply waits at the front of the stalled client's queue.
    h.send(2, MsgType::Read, build_args(&[b"/"]));
    for i in 0..500 {
        h.write(SOCK, &format!("/w/k{i}"), "v").unwrap();
    }
    let c = h.e.conns.get(&2).unwrap();
    assert!(c.event_bytes <= 1000, "{}", c.event_bytes);
    assert!(c.event_bytes > 900, "{}", c.event_bytes);
    h.check();
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("dropping the oldest"), "{logs:?}");
    let first = h.e.pop_output(2).unwrap();
    assert_eq!(
        first.header.msg_type,
        MsgType::Read.raw(),
        "the reply is kept"
    );
    let next = h.e.pop_output(2).unwrap();
    assert!(next.payload.starts_with(b"/w/k4"), "the newest are kept");
    h.drain(2);
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].contains("watch event(s) had been dropped"),
        "{logs:?}"
    );
    h.check();
}

/// Expiry lines of a guest's connection: at most one per interval, with
/// the number of events they stand for.
#[test]
fn test_events_guest_log_lines_rate_limited() {
    let (mut h, _fe, be) = H::frontend_backend(Config::default());
    h.logs();
    // An expiry every 20 s + 1 ms at first: each is logged at once.
    h.e.handle(Input::Time(1_000));
    h.write(SOCK, "/fe/a", "v").unwrap();
    h.e.handle(Input::Time(21_000));
    assert_eq!(
        h.logs(),
        ["connection 106: 1 watch event(s) not read within 20000 ms dropped"]
    );
    // Then 5,000 events, one a millisecond, that expire one a millisecond
    // 20 s later: the first expiry is logged at once, the others are
    // counted into one line when the 10 s are over.
    for t in 1..=5_000u64 {
        h.e.handle(Input::Time(21_000 + t));
        h.write(SOCK, &format!("/fe/b{t}"), "v").unwrap();
    }
    for t in 1..=5_000u64 {
        h.e.handle(Input::Time(41_000 + t));
    }
    let lines = h.logs();
    assert_eq!(lines.len(), 1, "the first only: {lines:?}");
    h.e.handle(Input::Time(41_001 + 9_999));
    assert_eq!(h.logs(), Vec::<String>::new());
    h.e.handle(Input::Time(41_001 + 10_000));
    let late = h.logs();
    let counted: u64 = lines
        .iter()
        .chain(late.iter())
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, 5_000, "{lines:?} {late:?}");
    assert!(!h.e.has_output(be));
    h.check();
}

/// Events too long to send are counted into one line per interval, not
/// one per event.
#[test]
fn test_events_too_long_lines_rate_limited() {
    let mut h = H::new();
    let token = "t".repeat(4000);
    h.req(SOCK, MsgType::Watch, &["/", &token]).unwrap();
    h.drain(SOCK);
    h.logs();
    for i in 0..100 {
        h.write(SOCK, &format!("/{}{i}", "a".repeat(300)), "")
            .unwrap();
    }
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("1 watch event(s) too long"), "{logs:?}");
    h.e.handle(Input::Time(10_000));
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains("99 watch event(s) too long"), "{logs:?}");
    h.check();
}

/// A guest's WATCH whose token leaves no room for the longest event path
/// it can be sent is refused; dom0's are not (as C).
#[test]
fn test_watch_without_room_for_events_refused() {
    let mut h = H::new();
    let d5 = h.dom(5);
    // Longest node: "/local/domain/NNNNN/" (20) + path-max (2048) = 2068.
    let room = 4096 - 2 - 2068;
    assert_eq!(
        h.req(d5, MsgType::Watch, &["/", &"t".repeat(room + 1)]),
        Err(XsErrno::EINVAL)
    );
    assert!(h.req(d5, MsgType::Watch, &["/", &"t".repeat(room)]).is_ok());
    // A relative watch reports paths below its home: at most 2048.
    let rel = 4096 - 2 - 2048;
    assert_eq!(
        h.req(d5, MsgType::Watch, &["data", &"r".repeat(rel + 1)]),
        Err(XsErrno::EINVAL)
    );
    assert!(h
        .req(d5, MsgType::Watch, &["data", &"r".repeat(rel)])
        .is_ok());
    // Depth 0 reports only its own path.
    assert!(h
        .req(d5, MsgType::Watch, &["/x", &"d".repeat(4000), "0"])
        .is_ok());
    assert!(h
        .req(
            d5,
            MsgType::Watch,
            &["@releaseDomain", &"s".repeat(4000), "1"]
        )
        .is_ok());
    assert!(h
        .req(SOCK, MsgType::Watch, &["/", &"t".repeat(4000)])
        .is_ok());
    // A domain given a longer path-max: its own nodes can be longer (20 +
    // 3000 here; never over the longest absolute path, 3072).
    h.req(SOCK, MsgType::SetQuota, &["5", "path-max", "3000"])
        .unwrap();
    let room = 4096 - 2 - 3020;
    assert_eq!(
        h.req(d5, MsgType::Watch, &["/", &"u".repeat(room + 1)]),
        Err(XsErrno::EINVAL)
    );
    assert!(h.req(d5, MsgType::Watch, &["/", &"u".repeat(room)]).is_ok());
    h.check();
}

/// The events of a transaction's commit are held against its
/// TRANSACTION_END, and a request that causes several events (a removal
/// with watches below) is one outstanding request until all have gone.
#[test]
fn test_events_commit_and_many_events_per_request() {
    let (mut h, fe, be) = H::frontend_backend(Config::default());
    h.write(SOCK, "/fe/sub/a", "").unwrap();
    h.req(be, MsgType::Watch, &["/fe/sub/a", "a"]).unwrap();
    h.drain(be);
    let tx = h.req(fe, MsgType::TransactionStart, &[""]).unwrap();
    let tx: u32 = std::str::from_utf8(&tx[..tx.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    h.id += 1;
    let msg = Message::new(MsgType::Write, h.id, tx, build_path_value(b"/fe/t", b"v")).unwrap();
    h.e.handle(Input::Request {
        conn: fe,
        msg: &msg,
    });
    h.reply(fe).unwrap();
    assert!(!h.e.has_output(be), "nothing fires inside a transaction");
    h.id += 1;
    let end = Message::new(MsgType::TransactionEnd, h.id, tx, build_args(&[b"T"])).unwrap();
    h.e.handle(Input::Request {
        conn: fe,
        msg: &end,
    });
    h.reply(fe).unwrap();
    assert_eq!(h.e.conns.get(&fe).unwrap().outstanding(), 1, "the commit");
    h.drain(be);
    assert_eq!(h.e.conns.get(&fe).unwrap().outstanding(), 0);
    // RM of /fe/sub: the backend's /fe watch and its /fe/sub/a watch.
    h.req(fe, MsgType::Rm, &["/fe/sub"]).unwrap();
    assert_eq!(h.e.queued_messages(be).count(), 2);
    assert_eq!(h.e.conns.get(&fe).unwrap().outstanding(), 1);
    h.e.pop_output(be);
    assert_eq!(h.e.conns.get(&fe).unwrap().outstanding(), 1, "one left");
    h.e.pop_output(be);
    assert_eq!(h.e.conns.get(&fe).unwrap().outstanding(), 0);
    h.check();
}

/// Past [`super::SCAN_MAX`] queued messages the de-duplication goes
/// through the set of payloads, which follows the queue exactly as it
/// grows, shrinks back to a scanned queue and grows again.
#[test]
fn test_events_deduplication_set_for_long_queues() {
    let (mut h, _fe, be) = H::frontend_backend(Config::default());
    for round in 0..2 {
        for i in 0..100 {
            h.write(SOCK, &format!("/fe/k{i}"), "v").unwrap();
        }
        assert!(h.e.conns.get(&be).unwrap().queued_events.is_some());
        for i in 0..100 {
            h.write(SOCK, &format!("/fe/k{i}"), "w").unwrap();
        }
        assert_eq!(h.e.queued_messages(be).count(), 100, "round {round}");
        h.check();
        for _ in 0..90 {
            h.e.pop_output(be);
        }
        h.check();
        assert!(h.e.conns.get(&be).unwrap().queued_events.is_none());
        // k95 is still queued, k5 was taken.
        h.write(SOCK, "/fe/k95", "x").unwrap();
        h.write(SOCK, "/fe/k5", "x").unwrap();
        assert_eq!(h.e.queued_messages(be).count(), 11);
        h.check();
        h.drain(be);
    }
}
