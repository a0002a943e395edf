//! The throttle in the engine: what is charged, to whom, and when a
//! throttled guest's connection takes requests again.

use alloc::string::ToString;
use alloc::vec::Vec;

use xenring::codec::{build_args, build_path_value, Message};
use xenring::{DomId, MsgType, XsErrno};

use super::super::{Action, Config, ConnId, ConnKind, Engine, Input, Time};

const SOCK: ConnId = 1;
const SOCK2: ConnId = 2;

struct H {
    e: Engine,
    req_id: u32,
}

impl H {
    fn new(config: Config) -> Self {
        let mut e = Engine::new(config);
        for conn in [SOCK, SOCK2] {
            e.handle(Input::Connect {
                conn,
                kind: ConnKind::Socket,
            });
        }
        Self { e, req_id: 0 }
    }

    /// Introduces `domid` with its home; its ring is connection 100 + domid.
    fn guest(&mut self, domid: DomId) -> ConnId {
        let ring = 100 + ConnId::from(domid);
        let d = domid.to_string();
        let home = alloc::format!("/local/domain/{d}");
        self.call(SOCK, MsgType::Mkdir, 0, build_args(&[home.as_bytes()]))
            .unwrap();
        let owner = alloc::format!("n{d}");
        self.call(
            SOCK,
            MsgType::SetPerms,
            0,
            build_args(&[home.as_bytes(), owner.as_bytes()]),
        )
        .unwrap();
        self.send(
            SOCK,
            MsgType::Introduce,
            0,
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
            .unwrap();
        self.e.handle(Input::Introduced {
            token,
            result: Ok(ring),
        });
        self.reply(SOCK).unwrap();
        ring
    }

    fn send(&mut self, conn: ConnId, ty: MsgType, tx: u32, payload: Vec<u8>) {
        self.req_id += 1;
        let msg = Message::new(ty, self.req_id, tx, payload).unwrap();
        self.e.handle(Input::Request { conn, msg: &msg });
    }

    fn reply(&mut self, conn: ConnId) -> Result<Vec<u8>, XsErrno> {
        loop {
            let m = self.e.pop_output(conn).unwrap();
            if m.header.msg_type == MsgType::WatchEvent.raw() {
                continue;
            }
            if m.header.msg_type == MsgType::Error.raw() {
                return Err(XsErrno::from_wire(&m.payload).unwrap());
            }
            return Ok(m.payload);
        }
    }

    fn call(
        &mut self,
        conn: ConnId,
        ty: MsgType,
        tx: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XsErrno> {
        self.send(conn, ty, tx, payload);
        self.reply(conn)
    }

    fn write(
        &mut self,
        conn: ConnId,
        tx: u32,
        path: &str,
        value: &str,
    ) -> Result<Vec<u8>, XsErrno> {
        self.call(
            conn,
            MsgType::Write,
            tx,
            build_path_value(path.as_bytes(), value.as_bytes()),
        )
    }

    fn tx(&mut self, conn: ConnId) -> u32 {
        let r = self
            .call(conn, MsgType::TransactionStart, 0, build_args(&[b""]))
            .unwrap();
        core::str::from_utf8(&r[..r.len() - 1])
            .unwrap()
            .parse()
            .unwrap()
    }

    fn end(&mut self, conn: ConnId, tx: u32) -> Result<Vec<u8>, XsErrno> {
        self.call(conn, MsgType::TransactionEnd, tx, build_args(&[b"T"]))
    }

    fn time(&mut self, t: Time) {
        self.e.handle(Input::Time(t));
    }

    fn logs(&mut self) -> Vec<alloc::string::String> {
        self.e
            .take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Log(l) => Some(l),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn test_guest_writes_with_a_transaction_open_pause_it_until_its_wakeup() {
    let mut h = H::new(Config::default());
    let g = h.guest(5);
    let tx = h.tx(SOCK);
    // The burst: 10 writes, and the 11th takes it into deficit.
    for i in 0..11 {
        assert!(h.e.accepts_requests(g), "write {i}");
        h.write(g, 0, "k", &i.to_string()).unwrap();
    }
    assert!(!h.e.accepts_requests(g));
    assert!(h.e.throttled(5));
    assert!(h
        .logs()
        .iter()
        .any(|l| l == "write rate limit: domain 5 is affected"));
    // One write owed at 200/s for one domain: 5 ms.
    let at = h.e.next_wakeup().unwrap();
    assert_eq!(at, 5);
    h.time(at - 1);
    assert!(!h.e.accepts_requests(g));
    assert!(h.e.readable_again().is_empty());
    h.time(at);
    assert!(h.e.accepts_requests(g));
    assert_eq!(h.e.readable_again(), [g]);
    assert_eq!(h.e.next_wakeup(), None);
    // dom0 is never charged.
    for i in 0..100 {
        h.write(SOCK, 0, "/tool/k", &i.to_string()).unwrap();
    }
    assert!(h.e.accepts_requests(SOCK));
    h.end(SOCK, tx).unwrap();
}

#[test]
fn test_released_domain_leaves_no_pause_to_the_next_with_its_domid() {
    let mut h = H::new(Config::default());
    let g = h.guest(5);
    let tx = h.tx(SOCK);
    for i in 0..11 {
        h.write(g, 0, "k", &i.to_string()).unwrap();
    }
    assert!(h.e.throttled(5));
    h.call(SOCK, MsgType::Release, 0, build_args(&[b"5"]))
        .unwrap();
    assert!(!h.e.throttled(5), "its credit went with it");
    // The domid is reused before any time passes: the new domain's ring
    // is read at once.
    let g = h.guest(5);
    assert!(h.e.accepts_requests(g));
    h.end(SOCK, tx).unwrap();
}

#[test]
fn test_writes_with_no_transaction_open_are_not_charged() {
    let mut h = H::new(Config::default());
    let g = h.guest(5);
    for i in 0..500 {
        h.write(g, 0, "k", &i.to_string()).unwrap();
    }
    assert!(h.e.accepts_requests(g));
    // Its own transactions: each commit is charged only if another is open.
    for i in 0..50 {
        let tx = h.tx(g);
        h.write(g, tx, "k", &i.to_string()).unwrap();
        h.end(g, tx).unwrap();
    }
    assert!(h.e.accepts_requests(g));
    assert_eq!(h.e.next_wakeup(), None);
}

#[test]
fn test_rate_limit_off_lets_a_guest_write_freely() {
    let mut config = Config::default();
    config.throttle.write_rate = 0;
    let mut h = H::new(config);
    let g = h.guest(5);
    let _tx = h.tx(SOCK);
    for i in 0..500 {
        h.write(g, 0, "k", &i.to_string()).unwrap();
    }
    assert!(h.e.accepts_requests(g));
}

/// dom0's read-modify-write of guest 5's node fails because 5 rewrote it:
/// 5 is charged a conflict each time, and paused after five.
fn conflicting_commit(h: &mut H, g: ConnId) -> Result<Vec<u8>, XsErrno> {
    let tx = h.tx(SOCK);
    let v = h
        .call(SOCK, MsgType::Read, tx, build_args(&[b"/local/domain/5/x"]))
        .unwrap();
    h.write(
        SOCK,
        tx,
        "/local/domain/5/x",
        &alloc::format!("{}+", v.len()),
    )
    .unwrap();
    if h.e.accepts_requests(g) {
        let n = h.req_id.to_string();
        h.write(g, 0, "x", &n).unwrap();
    }
    h.end(SOCK, tx)
}

#[test]
fn test_guest_causing_conflicts_is_paused_and_dom0_commits() {
    let mut config = Config::default();
    config.throttle.write_rate = 0;
    let mut h = H::new(config);
    let g = h.guest(5);
    h.write(g, 0, "x", "first").unwrap();
    for i in 0..5 {
        assert_eq!(conflicting_commit(&mut h, g), Err(XsErrno::EAGAIN), "{i}");
    }
    assert!(!h.e.accepts_requests(g));
    assert!(h
        .logs()
        .iter()
        .any(|l| l.starts_with("conflict rate limit: domain 5 paused")));
    // Paused, it cannot write: dom0 commits.
    assert_eq!(conflicting_commit(&mut h, g), Ok(b"OK\0".to_vec()));
    // One point back after 50 ms: it writes again.
    let at = h.e.next_wakeup().unwrap();
    assert_eq!(at, 50);
    h.time(at);
    assert_eq!(h.e.readable_again(), [g]);
    h.write(g, 0, "x", "again").unwrap();
}

#[test]
fn test_conflicts_caused_by_dom0_or_by_the_victim_itself_are_not_charged() {
    let mut config = Config::default();
    config.throttle.write_rate = 0;
    let mut h = H::new(config);
    let g = h.guest(5);
    h.write(g, 0, "x", "first").unwrap();
    for i in 0..20 {
        // Another dom0 client makes dom0's transaction fail.
        let tx = h.tx(SOCK);
        h.call(SOCK, MsgType::Read, tx, build_args(&[b"/local/domain/5/x"]))
            .unwrap();
        h.write(SOCK2, 0, "/local/domain/5/x", &i.to_string())
            .unwrap();
        assert_eq!(h.end(SOCK, tx), Err(XsErrno::EAGAIN));
        // The guest makes its own transaction fail.
        let tx = h.tx(g);
        h.call(g, MsgType::Read, tx, build_args(&[b"x"])).unwrap();
        h.write(g, 0, "x", &alloc::format!("g{i}")).unwrap();
        assert_eq!(h.end(g, tx), Err(XsErrno::EAGAIN));
    }
    assert!(h.e.accepts_requests(g));
    assert_eq!(h.e.next_wakeup(), None);
}

#[test]
fn test_conflict_blamed_only_on_the_writer_of_what_the_request_saw() {
    let mut config = Config::default();
    config.throttle.write_rate = 0;
    let mut h = H::new(config);
    let g5 = h.guest(5);
    let g6 = h.guest(6);
    h.write(g5, 0, "x", "a").unwrap();
    for i in 0..10 {
        let tx = h.tx(SOCK);
        h.call(SOCK, MsgType::Read, tx, build_args(&[b"/local/domain/5/x"]))
            .unwrap();
        h.write(SOCK, tx, "/tool/y", "z").unwrap();
        // 6 writes elsewhere meanwhile; 5's rewrite is the conflict.
        h.write(g6, 0, "y", "b").unwrap();
        if h.e.accepts_requests(g5) {
            h.write(g5, 0, "x", "c").unwrap();
            h.write(g5, 0, "x", &i.to_string()).unwrap();
        }
        let _ = h.end(SOCK, tx);
    }
    assert!(h.e.throttled(5));
    assert!(!h.e.throttled(6));
}

#[test]
fn test_rebuilding_a_large_listing_is_charged_a_cached_one_is_not() {
    let mut h = H::new(Config::default());
    let g = h.guest(5);
    // 40 children of 2 KB: an 80 KB listing, two writes' worth to build.
    let name = |i: usize| alloc::format!("d/{i:02}{}", "n".repeat(1990));
    for i in 0..40 {
        h.write(g, 0, &name(i), "").unwrap();
    }
    let part = |h: &mut H| {
        h.call(g, MsgType::DirectoryPart, 0, build_args(&[b"d", b"0"]))
            .unwrap()
    };
    // The same generation listed again and again: built once.
    for _ in 0..1000 {
        part(&mut h);
    }
    assert!(h.e.accepts_requests(g));
    // Changed and listed each time: each rebuild is charged, no
    // transaction needed, until the guest is throttled.
    let mut rebuilt = 0;
    while h.e.accepts_requests(g) {
        let i = 40 + rebuilt % 2;
        if rebuilt % 4 < 2 {
            h.write(g, 0, &name(i), "").unwrap();
        } else {
            h.call(g, MsgType::Rm, 0, build_args(&[name(i).as_bytes()]))
                .unwrap();
        }
        part(&mut h);
        rebuilt += 1;
        assert!(rebuilt < 100, "never throttled");
    }
    // Its burst of 10 writes at two per rebuild.
    assert!((5..=6).contains(&rebuilt), "{rebuilt}");
    assert!(h.e.next_wakeup().is_some());
}

#[test]
fn test_transactions_gone_with_their_connection_stop_the_charging_at_once() {
    let mut h = H::new(Config::default());
    let g = h.guest(5);
    h.tx(SOCK2);
    h.e.handle(Input::Disconnect { conn: SOCK2 });
    assert!(h.e.check().is_empty(), "{:?}", h.e.check());
    // No transaction is open any more: no write is charged, with no tick
    // in between.
    for i in 0..20 {
        h.write(g, 0, "k", &i.to_string()).unwrap();
    }
    assert!(!h.e.throttled(5));
    // A reset ring's transactions go the same way.
    h.tx(g);
    h.e.handle(Input::Reset { conn: g });
    assert!(h.e.check().is_empty(), "{:?}", h.e.check());
    for i in 0..20 {
        h.write(g, 0, "k", &i.to_string()).unwrap();
    }
    assert!(!h.e.throttled(5));
}
