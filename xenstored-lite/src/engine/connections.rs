//! Connections (C's `struct connection` and the output half of core.c):
//! what is known of each client, its output queue of replies and watch
//! events, flow control (whether the shell should read another request)
//! and the expiry of watch events a client does not read.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use xenring::codec::Message;
use xenring::{Header, MsgType, XsErrno};

use super::perms::Who;
use super::quota::QuotaKind;
use super::transactions::Transaction;
use super::{reply, Action, ConnId, ConnKind, Engine, Time};

/// A message waiting in a connection's output queue.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    /// The reply or event.
    pub(super) msg: Message,
    /// When it was queued.
    pub(super) at: Time,
    /// A watch event (which expires), not a reply.
    pub(super) event: bool,
}

/// What the engine knows of one connection.
#[derive(Debug)]
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
}

impl Engine {
    /// Takes the actions produced so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        core::mem::take(&mut self.actions)
    }

    /// The next message queued for `conn` (replies and events, in order).
    pub fn pop_output(&mut self, conn: ConnId) -> Option<Message> {
        let c = self.conns.get_mut(&conn)?;
        let q = c.out.pop_front()?;
        if c.out.is_empty() {
            self.with_output.remove(&conn);
        }
        c.out_bytes = c.out_bytes.saturating_sub(q.msg.wire_len());
        if !q.event {
            c.replies_queued = c.replies_queued.saturating_sub(1);
        }
        Some(q.msg)
    }

    /// Whether anything is queued for `conn`.
    pub fn has_output(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| !c.out.is_empty())
    }

    /// Connections with queued output, ordered (kept as a set, so that
    /// this costs nothing for the idle ones).
    pub fn conns_with_output(&self) -> Vec<ConnId> {
        self.with_output.iter().copied().collect()
    }

    /// Whether the shell should read another request from `conn` now: an
    /// unprivileged connection with `outstanding` replies not yet taken
    /// waits until it takes them.
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
        limit == 0 || (c.replies_queued as u64) < limit
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
            },
        );
    }

    /// `Input::Reset`: the connection's watches, transactions and queued
    /// output go; the connection stays.
    pub(super) fn reset(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        self.with_output.remove(&conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.transactions.clear();
            c.out.clear();
            c.out_bytes = 0;
            c.replies_queued = 0;
        }
    }

    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        self.with_output.remove(&conn);
        self.conns.remove(&conn);
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
            self.replies += 1;
            if self.config.test_alter_reply == Some(self.replies) {
                match msg.payload.first_mut() {
                    Some(b) => *b ^= 0x20,
                    None => msg.payload.push(b'!'),
                }
                msg.header.len = u32::try_from(msg.payload.len()).unwrap_or(u32::MAX);
            }
        }
        let privileged = match self.conns.get(&conn) {
            Some(c) => self.who(c).privileged,
            None => return,
        };
        let max = self.config.max_queued_bytes;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if event
            && c.out
                .iter()
                .any(|q| q.event && q.msg.payload == msg.payload)
        {
            return; // an identical event is still waiting: one is enough
        }
        c.out_bytes += msg.wire_len();
        if !event {
            c.replies_queued += 1;
        }
        c.out.push_back(Queued {
            msg,
            at: now,
            event,
        });
        self.with_output.insert(conn);
        if !privileged && max > 0 && c.out_bytes > max {
            let reason = format!(
                "{} bytes of output queued (limit {max}) and not read",
                c.out_bytes
            );
            self.kill(conn, reason);
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
        if timeout == 0 {
            return;
        }
        // Only connections with something queued can hold stale events.
        let candidates: Vec<ConnId> = self
            .with_output
            .iter()
            .copied()
            .filter(|id| self.conns.get(id).is_some_and(|c| !self.who(c).privileged))
            .collect();
        for id in candidates {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let before = c.out.len();
            c.out
                .retain(|q| !q.event || now.saturating_sub(q.at) < timeout);
            if c.out.len() != before {
                let dropped = before - c.out.len();
                c.out_bytes = c.out.iter().map(|q| q.msg.wire_len()).sum();
                if c.out.is_empty() {
                    self.with_output.remove(&id);
                }
                self.actions.push(Action::Log(format!(
                    "connection {id}: {dropped} watch event(s) not read within {timeout} ms dropped"
                )));
            }
        }
    }
}
