//! Connections (C's `struct connection` and the output half of core.c):
//! what is known of each client, its output queue of replies and watch
//! events, flow control (whether the shell should read another request)
//! and the expiry of watch events a client does not read.
//!
//! Back-pressure on watch events (as C xenstored 4.17 does it): an
//! unprivileged connection's request stays outstanding until its reply is
//! taken *and* every watch event it caused has left the receivers' queues
//! (taken by the shell, expired, dropped, or its receiver gone), so a guest
//! that floods events at a watcher that does not read is slowed down by its
//! own outstanding quota, instead of the watcher being cut off. A request
//! is held so at most `watch_event_timeout_ms` (a stalled privileged
//! watcher, whose events never expire, cannot block a guest forever).
//! Privileged connections' requests are never held.
//!
//! A privileged connection's queue is not cut off, but the watch events in
//! it are bounded (`max_priv_event_bytes`): past it the oldest are dropped
//! (replies never), logged once when it starts and once when the queue has
//! been read empty again. Identical queued events are merged through a
//! set of the queued events' payloads, so that is O(1) per event.
//!
//! Every log line a guest can make happen here (events too long to send,
//! events expired unread) is written at most once per connection per
//! `guest_log_interval_ms`, with the number of what it stands for.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use xenring::codec::Message;
use xenring::{Header, MsgType, XsErrno};

use super::idmap::IdMap;
use super::perms::Who;
use super::quota::QuotaKind;
use super::transactions::Transaction;
use super::watch::HashSet;
use super::{reply, Action, ConnId, ConnKind, Engine, Time};

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;

/// A message waiting in a connection's output queue.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    /// The reply or event.
    pub(super) msg: Message,
    /// When it was queued.
    pub(super) at: Time,
    /// A watch event (which expires), not a reply.
    pub(super) event: bool,
    /// The unprivileged request it belongs to (a key of
    /// [`EventHolds::held`]): for a reply, the request it answers; for an
    /// event, the request that caused it. `None` for everything else.
    pub(super) req: Option<u64>,
}

/// A request whose watch events are not all delivered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held {
    /// The connection that sent it.
    pub(super) source: ConnId,
    /// Its events still queued somewhere.
    pub(super) events: usize,
    /// Its reply is still in the source's queue (it counts there as a
    /// queued reply; once taken, the source's `held` counts it).
    pub(super) reply_queued: bool,
    /// When its first event was queued (it is let go at most
    /// `watch_event_timeout_ms` later).
    pub(super) at: Time,
}

/// The engine's side of watch-event back-pressure: which request caused
/// which events.
#[derive(Debug, Default, Clone)]
pub(super) struct EventHolds {
    /// The next request number.
    next: u64,
    /// The unprivileged request being handled (its connection and number).
    current: Option<(ConnId, u64)>,
    /// Requests with events still queued, by number (which is also the
    /// order of their `at`).
    pub(super) held: BTreeMap<u64, Held>,
    /// Connections whose outstanding count went down through another
    /// connection's queue (or a timeout): the shell reads them again.
    unblocked: BTreeSet<ConnId>,
    /// Connections with a log line held back by the rate limit.
    log_pending: BTreeSet<ConnId>,
}

impl EventHolds {
    /// Starts the handling of a request from `conn`: the watch events it
    /// causes are counted against it if it is unprivileged (until
    /// [`Engine::end_request`]).
    pub(super) fn begin(&mut self, conn: ConnId, privileged: bool) {
        self.current = if privileged {
            None
        } else {
            let seq = self.next;
            self.next += 1;
            Some((conn, seq))
        };
    }
}

/// What a connection's log lines stand for that has not been written yet,
/// and when the last was.
#[derive(Debug, Default, Clone)]
pub(super) struct LogLimit {
    /// When the last line for this connection was written.
    pub(super) last: Option<Time>,
    /// Events too long to send, dropped since.
    pub(super) too_long: u64,
    /// The last of them: its path and size.
    pub(super) too_long_last: Option<(String, usize)>,
    /// Events expired unread since.
    pub(super) expired: u64,
}

/// What the engine knows of one connection.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    /// What is at the other end.
    pub(super) kind: ConnKind,
    /// Where its relative paths point (see [`Engine::home_path`]); computed
    /// once, it is cloned, not formatted, on the request path.
    pub(super) home: Arc<str>,
    /// Its open transactions, by id.
    pub(super) transactions: BTreeMap<u32, Transaction>,
    /// The id the next TRANSACTION_START tries first.
    pub(super) next_tx: u32,
    /// Replies and events not yet taken by the shell.
    pub(super) out: VecDeque<Queued>,
    /// Their size on the wire.
    pub(super) out_bytes: usize,
    /// How many of them are replies.
    pub(super) replies_queued: usize,
    /// The size on the wire of the events among them.
    pub(super) event_bytes: usize,
    /// How many of them are watch events.
    pub(super) events_queued: usize,
    /// The payloads of the events among them (at most one copy of each is
    /// queued), for de-duplication in O(1); kept only while the queue is
    /// longer than [`SCAN_MAX`] (a short one is scanned, which costs less
    /// than the set's copy and hashing of every event).
    pub(super) queued_events: Option<HashSet<Vec<u8>>>,
    /// Its requests whose reply was taken but whose events are still
    /// queued: outstanding, as replies not yet taken are.
    pub(super) held: usize,
    /// The keys of [`EventHolds::held`] it is the source of.
    pub(super) sources: BTreeSet<u64>,
    /// Events dropped from its full queue (privileged connections) since
    /// it was last read empty; 0: none.
    pub(super) overflow_dropped: u64,
    /// Its rate-limited log lines.
    pub(super) log: LogLimit,
}

/// A queue up to this long is scanned for a duplicate event; a longer one
/// keeps the set of its events' payloads.
pub(super) const SCAN_MAX: usize = 32;

impl Conn {
    /// Its outstanding requests: replies not taken, and requests whose
    /// events are not all delivered.
    pub(super) fn outstanding(&self) -> usize {
        self.replies_queued + self.held
    }

    /// Whether an event with this payload is queued.
    fn has_event(&self, payload: &[u8]) -> bool {
        match &self.queued_events {
            Some(set) => set.contains(payload),
            None => self.out.iter().any(|q| q.event && q.msg.payload == payload),
        }
    }

    /// The event at the back of `out` was just queued.
    fn event_added(&mut self) {
        self.events_queued += 1;
        match &mut self.queued_events {
            Some(set) => {
                if let Some(q) = self.out.back() {
                    set.insert(q.msg.payload.clone());
                }
            }
            None if self.out.len() > SCAN_MAX => {
                self.queued_events = Some(
                    self.out
                        .iter()
                        .filter(|q| q.event)
                        .map(|q| q.msg.payload.clone())
                        .collect(),
                );
            }
            None => {}
        }
    }

    /// A message left `out`: the event counts and the set follow.
    fn message_removed(&mut self, q: &Queued) {
        if q.event {
            self.events_queued = self.events_queued.saturating_sub(1);
            if let Some(set) = &mut self.queued_events {
                set.remove(&q.msg.payload);
            }
        }
        if self.out.len() <= SCAN_MAX {
            self.queued_events = None;
        }
    }
}

/// A message left a queue (taken, expired, dropped, or its connection
/// gone): the counts of the request it belongs to follow.
fn settle_hold(holds: &mut EventHolds, conns: &mut IdMap<Conn>, q: &Queued) {
    let Some(seq) = q.req else {
        return;
    };
    let Some(h) = holds.held.get_mut(&seq) else {
        return; // let go already
    };
    if !q.event {
        // Its reply is taken; it stays outstanding for its events.
        h.reply_queued = false;
        let source = h.source;
        if let Some(c) = conns.get_mut(&source) {
            c.held += 1;
        }
        return;
    }
    h.events = h.events.saturating_sub(1);
    if h.events == 0 {
        release_hold(holds, conns, seq);
    }
}

/// Lets request `seq` go: its source no longer waits for its events.
fn release_hold(holds: &mut EventHolds, conns: &mut IdMap<Conn>, seq: u64) {
    let Some(h) = holds.held.remove(&seq) else {
        return;
    };
    if let Some(c) = conns.get_mut(&h.source) {
        c.sources.remove(&seq);
        if !h.reply_queued {
            c.held = c.held.saturating_sub(1);
            holds.unblocked.insert(h.source);
        }
    }
}

/// `q` left connection `conn` (`c`)'s queue: its counts follow, and
/// `with_output` once the queue is empty.
fn counted_out(
    c: &mut Conn,
    conn: ConnId,
    q: &Queued,
    with_output: &mut IdMap<()>,
    actions: &mut Vec<Action>,
) {
    c.out_bytes = c.out_bytes.saturating_sub(q.msg.wire_len());
    c.message_removed(q);
    if q.event {
        c.event_bytes = c.event_bytes.saturating_sub(q.msg.wire_len());
    } else {
        c.replies_queued = c.replies_queued.saturating_sub(1);
    }
    if c.out.is_empty() {
        with_output.remove(&conn);
        if c.overflow_dropped > 0 {
            let n = core::mem::take(&mut c.overflow_dropped);
            actions.push(Action::Log(format!(
                "connection {conn}: its queue is empty again; {n} watch event(s) had been dropped from it"
            )));
        }
    }
}

impl Engine {
    /// Whether actions were produced since the last take (most requests
    /// produce none).
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Takes the actions produced so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        core::mem::take(&mut self.actions)
    }

    /// The next message queued for `conn` (replies and events, in order).
    pub fn pop_output(&mut self, conn: ConnId) -> Option<Message> {
        // The connection in hand counts it out (no second lookup).
        let c = self.conns.get_mut(&conn)?;
        let q = c.out.pop_front()?;
        counted_out(c, conn, &q, &mut self.with_output, &mut self.actions);
        settle_hold(&mut self.events, &mut self.conns, &q);
        Some(q.msg)
    }

    /// `q` left `conn`'s queue: the counts follow.
    fn dequeued(&mut self, conn: ConnId, q: &Queued) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        counted_out(c, conn, q, &mut self.with_output, &mut self.actions);
        settle_hold(&mut self.events, &mut self.conns, q);
    }

    /// Connections whose outstanding requests went down since the last
    /// call through what happened to other connections (their events to
    /// another connection were taken or dropped, or were held too long):
    /// the shell should read them again.
    pub fn take_unblocked(&mut self) -> Vec<ConnId> {
        if self.events.unblocked.is_empty() {
            return Vec::new(); // the usual case, on every loop turn
        }
        core::mem::take(&mut self.events.unblocked)
            .into_iter()
            .collect()
    }

    /// Ends it: later events (WATCH's first one, as C) are nobody's.
    pub(super) fn end_request(&mut self) {
        self.events.current = None;
    }

    /// Whether anything is queued for `conn`.
    pub fn has_output(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| !c.out.is_empty())
    }

    /// Connections with queued output, ordered (kept as a set, so that
    /// this costs nothing for the idle ones).
    pub fn conns_with_output(&self) -> Vec<ConnId> {
        self.with_output.keys().copied().collect()
    }

    /// [`Engine::conns_with_output`] without collecting or ordering them:
    /// for a caller that sorts them itself.
    pub fn conns_with_output_iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.with_output.keys_unordered()
    }

    /// Whether the shell should read another request from `conn` now: an
    /// unprivileged connection with `outstanding` requests (replies not
    /// yet taken, or requests whose watch events are not all delivered)
    /// waits until they are.
    pub fn accepts_requests(&self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let who = self.who(c);
        if who.privileged {
            return true;
        }
        if self.throttle.is_paused(who.domid) {
            return false; // throttled (engine/throttle.rs) until it resumes
        }
        let limit = self.limit(who.domid, QuotaKind::Outstanding);
        limit == 0 || (c.outstanding() as u64) < limit
    }

    /// `Input::Connect`: a new connection, with nothing queued.
    pub(super) fn connect(&mut self, conn: ConnId, kind: ConnKind) {
        self.conns.insert(
            conn,
            Conn {
                kind,
                home: Arc::from(self.home_path(kind)),
                transactions: BTreeMap::new(),
                next_tx: 1,
                out: VecDeque::new(),
                out_bytes: 0,
                replies_queued: 0,
                event_bytes: 0,
                events_queued: 0,
                queued_events: None,
                held: 0,
                sources: BTreeSet::new(),
                overflow_dropped: 0,
                log: LogLimit::default(),
            },
        );
    }

    /// `Input::Reset`: the connection's watches, transactions and queued
    /// output go; the connection stays (and so does its log's rate limit).
    pub(super) fn reset(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        self.drop_output(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            self.open_transactions = self.open_transactions.saturating_sub(c.transactions.len());
            c.transactions.clear();
        }
    }

    /// Everything queued for `conn` goes, and its requests no longer wait
    /// for their events.
    fn drop_output(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let out = core::mem::take(&mut c.out);
        for q in &out {
            self.dequeued(conn, q);
        }
        self.with_output.remove(&conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        for seq in core::mem::take(&mut c.sources) {
            self.events.held.remove(&seq);
        }
        c.held = 0;
        if self.events.current.is_some_and(|(src, _)| src == conn) {
            self.events.current = None;
        }
    }

    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        self.drop_output(conn);
        self.flush_log(conn);
        self.events.log_pending.remove(&conn);
        self.events.unblocked.remove(&conn);
        if let Some(c) = self.conns.remove(&conn) {
            self.open_transactions = self.open_transactions.saturating_sub(c.transactions.len());
        }
        self.pending_introduce.retain(|_, p| p.conn != conn);
    }

    pub(super) fn who(&self, c: &Conn) -> Who {
        match c.kind {
            ConnKind::Socket => Who {
                domid: self.config.priv_domid,
                privileged: true,
                target: None,
            },
            ConnKind::Domain(domid) => Who {
                domid,
                privileged: domid == self.config.priv_domid,
                target: self.domains.get(&domid).and_then(|d| d.target),
            },
        }
    }

    /// Where a connection's relative paths point: its domain's home; for
    /// dom0's sockets the privileged domain's (libxl reads `domid` so, and
    /// C xenstored resolves it there too).
    pub(super) fn home_path(&self, kind: ConnKind) -> String {
        match kind {
            ConnKind::Domain(d) => format!("/local/domain/{d}"),
            ConnKind::Socket => format!("/local/domain/{}", self.config.priv_domid),
        }
    }

    /// A connection's home, as computed when it connected.
    pub(super) fn home(&self, conn: ConnId) -> Option<Arc<str>> {
        self.conns.get(&conn).map(|c| Arc::clone(&c.home))
    }

    pub(super) fn queue(&mut self, conn: ConnId, mut msg: Message, event: bool) {
        let now = self.now;
        if !event {
            self.replies = self.replies.wrapping_add(1);
            if self.config.test_alter_reply == Some(self.replies) {
                match msg.payload.first_mut() {
                    Some(b) => *b ^= 0x20,
                    None => msg.payload.push(b'!'),
                }
                msg.header.len = u32::try_from(msg.payload.len()).unwrap_or(u32::MAX);
            }
        }
        let max = self.config.max_queued_bytes;
        let current = self.events.current;
        let priv_domid = self.config.priv_domid;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // `who(c).privileged`, without looking up the domain's target.
        let privileged = match c.kind {
            ConnKind::Socket => true,
            ConnKind::Domain(domid) => domid == priv_domid,
        };
        if event && c.has_event(&msg.payload) {
            return; // an identical event is still waiting: one is enough
        }
        let len = msg.wire_len();
        c.out_bytes += len;
        let req = if event {
            c.event_bytes += len;
            current.map(|(_, seq)| seq)
        } else {
            c.replies_queued += 1;
            current.filter(|&(src, _)| src == conn).map(|(_, seq)| seq)
        };
        c.out.push_back(Queued {
            msg,
            at: now,
            event,
            req,
        });
        if event {
            c.event_added();
        }
        // Read now, while the connection is in hand: what follows changes
        // neither (no second lookup of it).
        let out_bytes = c.out_bytes;
        self.with_output.insert(conn, ());
        if event {
            if let Some((src, seq)) = current {
                self.hold(src, seq);
            }
        }
        if !privileged && max > 0 && out_bytes > max {
            let reason = format!("{out_bytes} bytes of output queued (limit {max}) and not read");
            self.kill(conn, reason);
        } else if privileged && event {
            self.bound_priv_events(conn);
        }
    }

    /// An event of request `seq` from `source` was queued: it waits for it.
    fn hold(&mut self, source: ConnId, seq: u64) {
        let now = self.now;
        let Some(src) = self.conns.get_mut(&source) else {
            return;
        };
        src.sources.insert(seq);
        self.events
            .held
            .entry(seq)
            .or_insert(Held {
                source,
                events: 0,
                reply_queued: true,
                at: now,
            })
            .events += 1;
    }

    /// A privileged connection's queue keeps at most
    /// `max_priv_event_bytes` of watch events: the oldest go first
    /// (replies never), logged once until the queue is read empty.
    fn bound_priv_events(&mut self, conn: ConnId) {
        let max = self.config.max_priv_event_bytes;
        if max == 0 {
            return;
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.event_bytes <= max {
                return;
            }
            let Some(at) = c.out.iter().position(|q| q.event) else {
                return;
            };
            let Some(q) = c.out.remove(at) else {
                return;
            };
            if c.overflow_dropped == 0 {
                self.actions.push(Action::Log(format!(
                    "connection {conn}: over {max} bytes of watch events queued and not read; \
                     dropping the oldest (logged again when it has read its queue)"
                )));
            }
            c.overflow_dropped += 1;
            self.dequeued(conn, &q);
        }
    }

    pub(super) fn kill(&mut self, conn: ConnId, reason: String) {
        self.forget_conn(conn);
        self.actions.push(Action::Kill { conn, reason });
    }

    pub(super) fn reply_err(&mut self, conn: ConnId, hdr: &Header, err: XsErrno) {
        self.last_result = Some(Err(err));
        self.queue(conn, Message::error_reply(hdr, err), false);
    }

    /// Answers an XS_CONTROL request the shell carried out
    /// ([`Action::LiveUpdate`]): `text` is the reply, as C xenstored words
    /// it (`OK`, or why not).
    pub fn answer_control(&mut self, conn: ConnId, header: &Header, text: &str) {
        let mut payload = text.as_bytes().to_vec();
        payload.push(0);
        self.queue(conn, reply(header, MsgType::Control, payload), false);
    }

    /// Answers a request the shell carried out ([`Action::LiveUpdate`])
    /// with an error.
    pub fn answer_error(&mut self, conn: ConnId, header: &Header, err: XsErrno) {
        self.reply_err(conn, header, err);
    }

    /// The messages queued for `conn`, oldest first, left in place (a live
    /// update's snapshot of pending output).
    pub fn queued_messages(&self, conn: ConnId) -> impl Iterator<Item = &Message> + '_ {
        self.conns
            .get(&conn)
            .into_iter()
            .flat_map(|c| c.out.iter().map(|q| &q.msg))
    }

    pub(super) fn tick(&mut self, now: Time) {
        self.now = now;
        let timeout = self.config.watch_event_timeout_ms;
        if timeout != 0 {
            self.expire_events(now, timeout);
            self.release_old_holds(now, timeout);
        }
        let interval = self.config.guest_log_interval_ms;
        let due: Vec<ConnId> = self
            .events
            .log_pending
            .iter()
            .copied()
            .filter(|id| {
                self.conns
                    .get(id)
                    .and_then(|c| c.log.last)
                    .is_none_or(|last| now.saturating_sub(last) >= interval)
            })
            .collect();
        for id in due {
            self.flush_log(id);
        }
    }

    /// Undelivered watch events to unprivileged connections older than
    /// `timeout` go.
    fn expire_events(&mut self, now: Time, timeout: u64) {
        // Only connections with something queued can hold stale events.
        let candidates: Vec<ConnId> = self
            .with_output
            .keys()
            .copied()
            .filter(|id| self.conns.get(id).is_some_and(|c| !self.who(c).privileged))
            .collect();
        for id in candidates {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            // The queue is in the order of `at`: only a prefix is stale.
            let stale = c
                .out
                .iter()
                .take_while(|q| now.saturating_sub(q.at) >= timeout)
                .count();
            if !c.out.iter().take(stale).any(|q| q.event) {
                continue;
            }
            let mut expired = Vec::new();
            let mut kept = VecDeque::new();
            for q in c.out.drain(..stale) {
                if q.event {
                    expired.push(q);
                } else {
                    kept.push_back(q);
                }
            }
            while let Some(q) = kept.pop_back() {
                c.out.push_front(q);
            }
            let dropped = expired.len() as u64;
            for q in &expired {
                self.dequeued(id, q);
            }
            self.note_log(id, |l| l.expired += dropped);
        }
    }

    /// Requests held longer than `timeout` for their events are let go (a
    /// privileged watcher's events do not expire).
    fn release_old_holds(&mut self, now: Time, timeout: u64) {
        while let Some((&seq, h)) = self.events.held.first_key_value() {
            if now.saturating_sub(h.at) < timeout {
                break;
            }
            release_hold(&mut self.events, &mut self.conns, seq);
        }
    }

    /// Counts something worth a log line for `conn`, and writes the line
    /// now if none was written within `guest_log_interval_ms`; otherwise
    /// [`Engine::tick`] writes it when that is over.
    pub(super) fn note_log(&mut self, conn: ConnId, note: impl FnOnce(&mut LogLimit)) {
        let now = self.now;
        let interval = self.config.guest_log_interval_ms;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        note(&mut c.log);
        if c.log
            .last
            .is_none_or(|last| now.saturating_sub(last) >= interval)
        {
            self.flush_log(conn);
        } else {
            self.events.log_pending.insert(conn);
        }
    }

    /// Writes `conn`'s held-back log line, if it has one.
    fn flush_log(&mut self, conn: ConnId) {
        self.events.log_pending.remove(&conn);
        let timeout = self.config.watch_event_timeout_ms;
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let l = &mut c.log;
        let mut parts = Vec::new();
        if l.expired > 0 {
            parts.push(format!(
                "{} watch event(s) not read within {timeout} ms dropped",
                l.expired
            ));
        }
        if l.too_long > 0 {
            let last = match &l.too_long_last {
                Some((path, len)) => format!(" (the last for {path}, {len} bytes)"),
                None => String::new(),
            };
            parts.push(format!(
                "{} watch event(s) too long to send dropped{last}",
                l.too_long
            ));
        }
        if parts.is_empty() {
            return;
        }
        l.expired = 0;
        l.too_long = 0;
        l.too_long_last = None;
        l.last = Some(now);
        self.actions.push(Action::Log(format!(
            "connection {conn}: {}",
            parts.join("; ")
        )));
    }

    /// Consistency of the connections' queues and counts (for
    /// [`Engine::check`]).
    pub(super) fn check_conns(&self, problems: &mut Vec<String>) {
        let mut events_of: BTreeMap<u64, usize> = BTreeMap::new();
        for (id, c) in &self.conns {
            let replies = c.out.iter().filter(|q| !q.event).count();
            let bytes: usize = c.out.iter().map(|q| q.msg.wire_len()).sum();
            let ev_bytes: usize = c
                .out
                .iter()
                .filter(|q| q.event)
                .map(|q| q.msg.wire_len())
                .sum();
            let payloads: BTreeSet<&[u8]> = c
                .out
                .iter()
                .filter(|q| q.event)
                .map(|q| q.msg.payload.as_slice())
                .collect();
            let events = c.out.iter().filter(|q| q.event).count();
            if replies != c.replies_queued || bytes != c.out_bytes || ev_bytes != c.event_bytes {
                problems.push(format!(
                    "connection {id}: queue counts differ from its queue"
                ));
            }
            let set_wrong = match &c.queued_events {
                Some(set) => set.len() != events || payloads.iter().any(|p| !set.contains(*p)),
                None => c.out.len() > SCAN_MAX,
            };
            if payloads.len() != events || c.events_queued != events || set_wrong {
                problems.push(format!(
                    "connection {id}: de-duplication set differs from its queue"
                ));
            }
            if c.out.is_empty() == self.with_output.contains_key(id) {
                problems.push(format!("connection {id}: with_output is wrong"));
            }
            for q in c.out.iter().filter(|q| q.event) {
                if let Some(seq) = q.req.filter(|s| self.events.held.contains_key(s)) {
                    *events_of.entry(seq).or_default() += 1;
                }
            }
            let held = self
                .events
                .held
                .values()
                .filter(|h| h.source == *id && !h.reply_queued)
                .count();
            let sources: BTreeSet<u64> = self
                .events
                .held
                .iter()
                .filter(|(_, h)| h.source == *id)
                .map(|(&s, _)| s)
                .collect();
            if held != c.held || sources != c.sources {
                problems.push(format!("connection {id}: held requests differ"));
            }
        }
        for (seq, h) in &self.events.held {
            if events_of.get(seq).copied().unwrap_or(0) != h.events || h.events == 0 {
                problems.push(format!("request {seq}: {} events counted", h.events));
            }
            if !self.conns.contains_key(&h.source) {
                problems.push(format!("request {seq}: of unknown connection {}", h.source));
            }
        }
    }
}
