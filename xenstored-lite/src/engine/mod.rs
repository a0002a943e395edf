//! The xenstore engine: a deterministic state machine with no I/O.
//!
//! Inputs ([`Input`]): a connection opened or closed, a complete request
//! from connection N, the result of an introduction the I/O shell carried
//! out, a domain's state, the time. Outputs: replies and watch events queued
//! per connection ([`Engine::pop_output`]), and [`Action`]s for the shell
//! (map and bind a ring for INTRODUCE, release a ring, cut a connection
//! off). No clock is read, nothing is random, and no hash order reaches an
//! output, so the same inputs give the same outputs, byte for byte.
//!
//! The rooms are those of C xenstored and oxenstored: [`store`] (the tree),
//! [`ops`] (the requests on it), [`perms`], [`watch`], [`quota`], and here
//! the connections, transactions, domains and the dispatch table.

pub mod lu_state;
pub mod ops;
pub mod perms;
pub mod quota;
pub mod store;
pub mod watch;

/// The old path of [`lu_state`]'s error, kept while the shell still names
/// it so (`shell::core`); new code names [`lu_state::RestoreError`].
pub mod migrate {
    pub use super::lu_state::RestoreError;
}

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use xenring::codec::{build_args, split_args, Message};
use xenring::{DomId, Header, MsgType, Perm, XsErrno};

use ops::{canonical, one_arg, Ctx, Event, Limits};
use perms::{access, Who};
use quota::{effective, within, DomainQuotas, QuotaKind, Quotas};
use store::Store;
use watch::{Watch, Watches};

/// A connection, numbered by the I/O shell.
pub type ConnId = u32;

/// Milliseconds on the shell's monotonic clock.
pub type Time = u64;

/// `XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR`.
pub const SERVER_FEATURES: u32 = 3;

/// Lowest reserved domid (`DOMID_FIRST_RESERVED`).
pub const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// What is at the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// A Unix-socket client in dom0 (privileged).
    Socket,
    /// A domain's ring.
    Domain(DomId),
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The privileged domain (`--priv-domid`, normally 0).
    pub priv_domid: DomId,
    /// Global quotas.
    pub quotas: Quotas,
    /// Undelivered watch events to an unprivileged domain expire after this.
    pub watch_event_timeout_ms: u64,
    /// Bytes that may wait in an unprivileged connection's output queue
    /// before it is cut off.
    pub max_queued_bytes: usize,
    /// Test-only (`--test-alter-reply N`): the Nth reply queued gets one
    /// octet of its payload changed, so that replay's verify mode can be
    /// shown to catch a change in behaviour. Never set in production.
    pub test_alter_reply: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            priv_domid: 0,
            quotas: Quotas::default(),
            watch_event_timeout_ms: 20_000,
            max_queued_bytes: 1 << 20,
            test_alter_reply: None,
        }
    }
}

/// An input.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A connection was opened (sockets; dom0's own ring).
    Connect {
        /// Its number.
        conn: ConnId,
        /// Its kind.
        kind: ConnKind,
    },
    /// A connection went away (socket closed), or the shell stopped
    /// serving a ring (protocol violation). Its watches, transactions and
    /// queued output go with it. For a ring, the domain stays known (it
    /// still gets `@releaseDomain`, and its ring is released, when it dies).
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// A ring was reset by the guest's reconnection handshake: its watches,
    /// transactions and queued output are dropped; the domain stays.
    Reset {
        /// The connection.
        conn: ConnId,
    },
    /// A complete request.
    Request {
        /// From this connection.
        conn: ConnId,
        /// The request.
        msg: &'a Message,
    },
    /// The shell carried out an [`Action::Introduce`].
    Introduced {
        /// The action's token.
        token: u64,
        /// The ring's new connection, or why it could not be set up.
        result: Result<ConnId, XsErrno>,
    },
    /// What the hypervisor says about a domain (after `VIRQ_DOM_EXC`).
    DomainState {
        /// The domain.
        domid: DomId,
        /// It has shut down.
        shutdown: bool,
        /// It is dying or gone.
        dying: bool,
    },
    /// The current time.
    Time(Time),
}

/// Something only the I/O shell can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Map `domid`'s ring (grant 1, else `mfn`) and bind to its `port`;
    /// answer with [`Input::Introduced`].
    Introduce {
        /// Echo in the answer.
        token: u64,
        /// The domain.
        domid: DomId,
        /// Its ring frame.
        mfn: u64,
        /// Its unbound port.
        port: u32,
    },
    /// Unmap and unbind a domain's ring; the connection is gone.
    Release {
        /// The ring's connection.
        conn: ConnId,
        /// The domain.
        domid: DomId,
    },
    /// Stop serving a connection (set the ring's error word, or close the
    /// socket); the engine has forgotten its state.
    Kill {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        reason: String,
    },
    /// A line for the daemon's log (XS_CONTROL print, soft quotas).
    Log(String),
    /// XS_CONTROL `live-update <args>`: only the shell can carry it out, and
    /// it answers ([`Engine::answer_control`]) when it knows the outcome,
    /// which for `-s` is after the hand-over, from the new process.
    LiveUpdate {
        /// The connection that asked.
        conn: ConnId,
        /// The request's header, to answer it.
        header: Header,
        /// The arguments after `live-update`.
        args: Vec<String>,
    },
    /// An XS_CONTROL command the engine does not implement itself (logging
    /// switches and files): the shell acts on it; the engine has already
    /// answered.
    Control {
        /// The connection that asked.
        conn: ConnId,
        /// The command and its arguments.
        args: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Queued {
    msg: Message,
    at: Time,
    event: bool,
}

/// A request run in a transaction, and the reply its client received.
type TxOp = (MsgType, Vec<u8>, Result<Vec<u8>, XsErrno>);

#[derive(Debug, Clone)]
struct Transaction {
    /// The committed store's version when the transaction started (or was
    /// restored by a live update): if it is still current, commit swaps.
    base_version: u64,
    /// The committed store at that moment (a cheap persistent clone): what
    /// the transaction saw of the nodes it did not write, which a live
    /// update writes out when the transaction already conflicts.
    base: Store,
    /// The transaction's own view.
    store: Store,
    /// Requests run in it since it started (or was restored).
    ops: Vec<TxOp>,
    events: Vec<Event>,
    writes: u64,
    /// What a transaction restored from a live update brought with it (its
    /// writes and the committed state they depend on); empty otherwise.
    carried: lu_state::Carried,
}

#[derive(Debug)]
struct Conn {
    kind: ConnKind,
    /// Where its relative paths point (see [`Engine::home_path`]); computed
    /// once, it is cloned, not formatted, on the request path.
    home: Arc<str>,
    transactions: BTreeMap<u32, Transaction>,
    next_tx: u32,
    out: VecDeque<Queued>,
    out_bytes: usize,
    replies_queued: usize,
}

#[derive(Debug, Clone)]
struct Domain {
    conn: ConnId,
    mfn: u64,
    port: u32,
    shutdown_seen: bool,
    target: Option<DomId>,
    features: u32,
}

/// Flags of a request type, as in C xenstored's dispatch table.
#[derive(Debug, Clone, Copy)]
struct Spec {
    /// Privileged callers only.
    privileged: bool,
    /// The header's transaction id is ignored.
    no_tx: bool,
    /// Operates on the tree (and so may run in a transaction).
    store: bool,
}

const fn spec(privileged: bool, no_tx: bool, store: bool) -> Spec {
    Spec {
        privileged,
        no_tx,
        store,
    }
}

/// The dispatch table: one entry per request type.
fn dispatch_spec(ty: MsgType) -> Option<Spec> {
    Some(match ty {
        MsgType::Control => spec(true, true, false),
        MsgType::Directory | MsgType::Read | MsgType::GetPerms | MsgType::DirectoryPart => {
            spec(false, false, true)
        }
        MsgType::Write | MsgType::Mkdir | MsgType::Rm | MsgType::SetPerms => {
            spec(false, false, true)
        }
        MsgType::Watch | MsgType::Unwatch | MsgType::ResetWatches => spec(false, true, false),
        MsgType::TransactionStart => spec(false, true, false),
        MsgType::TransactionEnd => spec(false, false, false),
        MsgType::Introduce | MsgType::Release | MsgType::Resume | MsgType::SetTarget => {
            spec(true, true, false)
        }
        MsgType::GetDomainPath | MsgType::IsDomainIntroduced => spec(false, true, false),
        MsgType::GetFeature | MsgType::SetFeature | MsgType::GetQuota | MsgType::SetQuota => {
            spec(true, true, false)
        }
        MsgType::WatchEvent | MsgType::Error => return None,
    })
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    store: Store,
    conns: BTreeMap<ConnId, Conn>,
    domains: BTreeMap<DomId, Domain>,
    domain_quotas: BTreeMap<DomId, DomainQuotas>,
    watches: Watches,
    actions: Vec<Action>,
    pending_introduce: BTreeMap<u64, (ConnId, Header, DomId, u64, u32)>,
    next_token: u64,
    now: Time,
    requests: u64,
    last_result: Option<Result<(), XsErrno>>,
    /// Connections whose output queue is not empty.
    with_output: std::collections::BTreeSet<ConnId>,
    /// Replies queued so far (for `test_alter_reply`).
    replies: u64,
    /// Domains whose memory use was last seen above the soft memory quota
    /// (logged once when they crossed it).
    over_soft: BTreeSet<DomId>,
}

fn reply(hdr: &Header, ty: MsgType, payload: Vec<u8>) -> Message {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    Message {
        header: Header::new(ty, hdr.req_id, hdr.tx_id, len),
        payload,
    }
}

fn parse_num<T: std::str::FromStr>(arg: &[u8]) -> Result<T, XsErrno> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(XsErrno::EINVAL)
}

fn parse_domid(arg: &[u8]) -> Result<DomId, XsErrno> {
    let d: u32 = parse_num(arg)?;
    if d >= DOMID_FIRST_RESERVED {
        return Err(XsErrno::EINVAL);
    }
    DomId::try_from(d).map_err(|_| XsErrno::EINVAL)
}

fn text(arg: &[u8]) -> Result<String, XsErrno> {
    std::str::from_utf8(arg)
        .map(str::to_string)
        .map_err(|_| XsErrno::EINVAL)
}

impl Engine {
    /// An engine with an empty store (`/` and the special nodes).
    pub fn new(config: Config) -> Self {
        let store = Store::new(config.priv_domid);
        Self {
            config,
            store,
            conns: BTreeMap::new(),
            domains: BTreeMap::new(),
            domain_quotas: BTreeMap::new(),
            watches: Watches::default(),
            actions: Vec::new(),
            pending_introduce: BTreeMap::new(),
            next_token: 1,
            now: 0,
            requests: 0,
            last_result: None,
            with_output: std::collections::BTreeSet::new(),
            replies: 0,
            over_soft: BTreeSet::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store (read-only).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Requests handled so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Registered watches.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// Takes the actions produced so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
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
        let limit = self.limit(who.domid, QuotaKind::Outstanding);
        limit == 0 || (c.replies_queued as u64) < limit
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input<'_>) {
        match input {
            Input::Connect { conn, kind } => {
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
            Input::Disconnect { conn } => self.forget_conn(conn),
            Input::Reset { conn } => {
                self.watches.remove_conn(conn);
                self.with_output.remove(&conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.transactions.clear();
                    c.out.clear();
                    c.out_bytes = 0;
                    c.replies_queued = 0;
                }
            }
            Input::Request { conn, msg } => self.request(conn, msg),
            Input::Introduced { token, result } => self.introduced(token, result),
            Input::DomainState {
                domid,
                shutdown,
                dying,
            } => self.domain_state(domid, shutdown, dying),
            Input::Time(now) => self.tick(now),
        }
    }

    fn forget_conn(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        self.with_output.remove(&conn);
        self.conns.remove(&conn);
        self.pending_introduce.retain(|_, p| p.0 != conn);
    }

    fn who(&self, c: &Conn) -> Who {
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

    fn limit(&self, domid: DomId, q: QuotaKind) -> u64 {
        effective(&self.config.quotas, self.domain_quotas.get(&domid), q)
    }

    fn limits(&self, who: &Who) -> Limits {
        if who.privileged {
            // Exempt from every quota but path-max, which C applies to
            // dom0 too.
            return Limits {
                path_max: self.config.quotas.hard(QuotaKind::PathMax),
                ..Limits::default()
            };
        }
        Limits {
            nodes: self.limit(who.domid, QuotaKind::Nodes),
            memory: self.limit(who.domid, QuotaKind::Memory),
            node_permissions: self.limit(who.domid, QuotaKind::NodePermissions),
            path_max: self.limit(who.domid, QuotaKind::PathMax),
            node_size: self.limit(who.domid, QuotaKind::NodeSize),
        }
    }

    /// Where a connection's relative paths point: its domain's home; for
    /// dom0's sockets the privileged domain's (libxl reads `domid` so, and
    /// C xenstored resolves it there too).
    fn home_path(&self, kind: ConnKind) -> String {
        match kind {
            ConnKind::Domain(d) => format!("/local/domain/{d}"),
            ConnKind::Socket => format!("/local/domain/{}", self.config.priv_domid),
        }
    }

    /// A connection's home, as computed when it connected.
    fn home(&self, conn: ConnId) -> Option<Arc<str>> {
        self.conns.get(&conn).map(|c| Arc::clone(&c.home))
    }

    fn queue(&mut self, conn: ConnId, mut msg: Message, event: bool) {
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

    fn kill(&mut self, conn: ConnId, reason: String) {
        self.forget_conn(conn);
        self.actions.push(Action::Kill { conn, reason });
    }

    fn reply_err(&mut self, conn: ConnId, hdr: &Header, err: XsErrno) {
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

    /// The domain an INTRODUCE waiting for the shell is about.
    pub fn pending_introduce_domid(&self, token: u64) -> Option<DomId> {
        self.pending_introduce.get(&token).map(|p| p.2)
    }

    /// The messages queued for `conn`, oldest first, left in place (a live
    /// update's snapshot of pending output).
    pub fn queued_messages(&self, conn: ConnId) -> impl Iterator<Item = &Message> + '_ {
        self.conns
            .get(&conn)
            .into_iter()
            .flat_map(|c| c.out.iter().map(|q| &q.msg))
    }

    /// The outcome of the last request handled (`None` while an INTRODUCE
    /// or a live update waits for the shell), for the access log.
    pub fn last_result(&self) -> Option<Result<(), XsErrno>> {
        self.last_result
    }

    fn request(&mut self, conn: ConnId, msg: &Message) {
        self.last_result = None;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        self.requests += 1;
        let hdr = msg.header;
        let who = self.who(c);
        let Some((ty, spec)) = hdr
            .msg_type()
            .ok()
            .and_then(|ty| dispatch_spec(ty).map(|s| (ty, s)))
        else {
            return self.reply_err(conn, &hdr, XsErrno::ENOSYS);
        };
        if spec.privileged && !who.privileged {
            return self.reply_err(conn, &hdr, XsErrno::EACCES);
        }
        let tx_id = if spec.no_tx { 0 } else { hdr.tx_id };
        if tx_id != 0 && !c.transactions.contains_key(&tx_id) {
            return self.reply_err(conn, &hdr, XsErrno::ENOENT);
        }
        let result = if spec.store {
            self.store_request(conn, who, tx_id, ty, &msg.payload)
        } else {
            self.other_request(conn, who, &hdr, ty, &msg.payload)
        };
        match result {
            Ok(Some(payload)) if payload.len() > xenring::wire::PAYLOAD_MAX => {
                self.reply_err(conn, &hdr, XsErrno::E2BIG)
            }
            Ok(Some(payload)) => {
                self.last_result = Some(Ok(()));
                self.queue(conn, reply(&hdr, ty, payload), false);
                if ty == MsgType::Watch {
                    self.initial_watch_event(conn, &msg.payload);
                }
            }
            Ok(None) => {} // answered later (INTRODUCE)
            Err(e) => self.reply_err(conn, &hdr, e),
        }
    }

    fn store_request(
        &mut self,
        conn: ConnId,
        who: Who,
        tx_id: u32,
        ty: MsgType,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, XsErrno> {
        let limits = self.limits(&who);
        let home = self.home(conn);
        let ctx = Ctx {
            who,
            limits,
            home: home.as_deref(),
        };
        let mut events = Vec::new();
        if tx_id == 0 {
            let result = ops::exec(&mut self.store, &ctx, ty, payload, &mut events);
            for e in &events {
                self.fire(e);
            }
            self.check_soft_memory(&events);
            return result.map(Some);
        }
        let tx_limit = if who.privileged {
            0
        } else {
            self.limit(who.domid, QuotaKind::TransactionNodes)
        };
        let c = self.conns.get_mut(&conn).ok_or(XsErrno::EINVAL)?;
        let tx = c.transactions.get_mut(&tx_id).ok_or(XsErrno::ENOENT)?;
        let writes = matches!(
            ty,
            MsgType::Write | MsgType::Mkdir | MsgType::Rm | MsgType::SetPerms
        );
        if writes && !within(tx_limit, tx.writes + 1) {
            return Err(XsErrno::ENOSPC);
        }
        let result = ops::exec(&mut tx.store, &ctx, ty, payload, &mut events);
        if writes {
            tx.writes += 1;
        }
        tx.ops.push((ty, payload.to_vec(), result.clone()));
        tx.events.extend(events);
        result.map(Some)
    }

    fn other_request(
        &mut self,
        conn: ConnId,
        who: Who,
        hdr: &Header,
        ty: MsgType,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, XsErrno> {
        let ok = || Ok(Some(b"OK\0".to_vec()));
        match ty {
            MsgType::Watch => {
                self.watch(conn, who, payload)?;
                ok()
            }
            MsgType::Unwatch => {
                let args: Vec<&[u8]> = split_args(payload).collect();
                if args.len() < 2 {
                    return Err(XsErrno::EINVAL);
                }
                let path = text(args[0])?;
                if self.watches.remove(conn, &path, &text(args[1])?) {
                    ok()
                } else {
                    Err(XsErrno::ENOENT)
                }
            }
            MsgType::ResetWatches => {
                self.watches.remove_conn(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.transactions.clear();
                }
                ok()
            }
            MsgType::TransactionStart => {
                if hdr.tx_id != 0 {
                    // C looks the transaction up first: an unknown one is
                    // ENOENT, a known one EBUSY (no nesting).
                    let known = self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| c.transactions.contains_key(&hdr.tx_id));
                    return Err(if known {
                        XsErrno::EBUSY
                    } else {
                        XsErrno::ENOENT
                    });
                }
                let limit = if who.privileged {
                    0
                } else {
                    self.limit(who.domid, QuotaKind::Transactions)
                };
                let snapshot = self.store.clone();
                let c = self.conns.get_mut(&conn).ok_or(XsErrno::EINVAL)?;
                if !within(limit, c.transactions.len() as u64 + 1) {
                    return Err(XsErrno::ENOSPC);
                }
                let mut id = c.next_tx;
                while id == 0 || c.transactions.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                c.next_tx = id.wrapping_add(1);
                c.transactions.insert(
                    id,
                    Transaction {
                        base_version: snapshot.version(),
                        base: snapshot.clone(),
                        store: snapshot,
                        ops: Vec::new(),
                        events: Vec::new(),
                        writes: 0,
                        carried: lu_state::Carried::default(),
                    },
                );
                let mut out = id.to_string().into_bytes();
                out.push(0);
                Ok(Some(out))
            }
            MsgType::TransactionEnd => {
                let commit = match one_arg(payload)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(XsErrno::EINVAL),
                };
                let tx = self
                    .conns
                    .get_mut(&conn)
                    .and_then(|c| c.transactions.remove(&hdr.tx_id))
                    .ok_or(XsErrno::ENOENT)?;
                if commit {
                    self.commit(conn, who, tx)?;
                }
                ok()
            }
            MsgType::Introduce => self.introduce(conn, hdr, payload),
            MsgType::Release => {
                let domid = parse_domid(one_arg(payload)?)?;
                // C refuses to release or resume the privileged domain.
                if domid == self.config.priv_domid {
                    return Err(XsErrno::EINVAL);
                }
                let dom = self.domains.get(&domid).ok_or(XsErrno::ENOENT)?;
                let ring = dom.conn;
                self.release(domid, ring);
                ok()
            }
            MsgType::Resume => {
                let domid = parse_domid(one_arg(payload)?)?;
                if domid == self.config.priv_domid {
                    return Err(XsErrno::EINVAL);
                }
                let dom = self.domains.get_mut(&domid).ok_or(XsErrno::ENOENT)?;
                dom.shutdown_seen = false;
                ok()
            }
            MsgType::GetDomainPath => {
                let domid = parse_domid(one_arg(payload)?)?;
                let mut out = format!("/local/domain/{domid}").into_bytes();
                out.push(0);
                Ok(Some(out))
            }
            MsgType::IsDomainIntroduced => {
                let domid = parse_domid(one_arg(payload)?)?;
                let known = domid == self.config.priv_domid || self.domains.contains_key(&domid);
                Ok(Some(if known {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                }))
            }
            MsgType::SetTarget => {
                let args: Vec<&[u8]> = split_args(payload).collect();
                if args.len() != 2 {
                    return Err(XsErrno::EINVAL);
                }
                let domid = parse_domid(args[0])?;
                let target = parse_domid(args[1])?;
                if !self.domains.contains_key(&target) && target != self.config.priv_domid {
                    return Err(XsErrno::ENOENT);
                }
                let dom = self.domains.get_mut(&domid).ok_or(XsErrno::ENOENT)?;
                dom.target = Some(target);
                ok()
            }
            MsgType::GetFeature => {
                let args: Vec<&[u8]> = split_args(payload).filter(|a| !a.is_empty()).collect();
                let value = match args.as_slice() {
                    [] => SERVER_FEATURES,
                    [d] => {
                        self.domains
                            .get(&parse_domid(d)?)
                            .ok_or(XsErrno::ENOENT)?
                            .features
                    }
                    _ => return Err(XsErrno::EINVAL),
                };
                let mut out = value.to_string().into_bytes();
                out.push(0);
                Ok(Some(out))
            }
            MsgType::SetFeature => {
                let args: Vec<&[u8]> = split_args(payload).collect();
                if args.len() != 2 {
                    return Err(XsErrno::EINVAL);
                }
                let domid = parse_domid(args[0])?;
                let value: u32 = parse_num(args[1])?;
                if value & !SERVER_FEATURES != 0 {
                    return Err(XsErrno::EINVAL);
                }
                self.domains
                    .get_mut(&domid)
                    .ok_or(XsErrno::ENOENT)?
                    .features = value;
                ok()
            }
            MsgType::GetQuota => self.get_quota(payload).map(Some),
            MsgType::SetQuota => {
                self.set_quota(payload)?;
                ok()
            }
            MsgType::Control if split_args(payload).next() == Some(b"live-update".as_slice()) => {
                let args: Vec<String> = split_args(payload)
                    .skip(1)
                    .map(text)
                    .collect::<Result<_, _>>()?;
                self.actions.push(Action::LiveUpdate {
                    conn,
                    header: *hdr,
                    args,
                });
                Ok(None)
            }
            MsgType::Control => self.control(conn, payload).map(Some),
            _ => Err(XsErrno::ENOSYS),
        }
    }

    fn watch(&mut self, conn: ConnId, who: Who, payload: &[u8]) -> Result<(), XsErrno> {
        let args: Vec<&[u8]> = split_args(payload).collect();
        if args.len() < 2 || args.len() > 3 {
            return Err(XsErrno::EINVAL);
        }
        let depth = match args.get(2) {
            Some(d) if !d.is_empty() => Some(parse_num::<u32>(d)?),
            _ => None,
        };
        let home = self.home(conn);
        let ctx = Ctx {
            who,
            limits: self.limits(&who),
            home: home.as_deref(),
        };
        let abs = canonical(&ctx, args[0], true)?;
        let path = text(args[0])?;
        let token = text(args[1])?;
        if path.len() + token.len() + 2 > xenring::wire::PAYLOAD_MAX {
            // Not even the first event would fit in a message.
            return Err(XsErrno::EINVAL);
        }
        if !who.privileged {
            let limit = self.limit(who.domid, QuotaKind::Watches);
            if !within(limit, self.watches.count(conn) as u64 + 1) {
                return Err(XsErrno::ENOSPC);
            }
        }
        let relative_prefix = if path.starts_with('/') || path.starts_with('@') {
            None
        } else {
            home.as_deref().map(|h| format!("{h}/"))
        };
        let added = self.watches.add(Watch {
            conn,
            path,
            abs,
            token,
            depth,
            relative_prefix,
        });
        if added {
            Ok(())
        } else {
            Err(XsErrno::EEXIST)
        }
    }

    /// "When a watch is first set up it is triggered once straight away,
    /// with <path> equal to <wpath>" (after the reply).
    fn initial_watch_event(&mut self, conn: ConnId, payload: &[u8]) {
        let mut args = split_args(payload);
        let (Some(path), Some(token)) = (args.next(), args.next()) else {
            return;
        };
        let msg = build_args(&[path, token]);
        let event = Message {
            header: Header::new(
                MsgType::WatchEvent,
                0,
                0,
                u32::try_from(msg.len()).unwrap_or(0),
            ),
            payload: msg,
        };
        self.queue(conn, event, true);
    }

    fn send_event(&mut self, conn: ConnId, path: &str, token: &str) {
        let payload = build_args(&[path.as_bytes(), token.as_bytes()]);
        if payload.len() > xenring::wire::PAYLOAD_MAX {
            self.actions.push(Action::Log(format!(
                "watch event for {path} to connection {conn} is too long ({} bytes) and was dropped",
                payload.len()
            )));
            return;
        }
        let msg = Message {
            header: Header::new(
                MsgType::WatchEvent,
                0,
                0,
                u32::try_from(payload.len()).unwrap_or(0),
            ),
            payload,
        };
        self.queue(conn, msg, true);
    }

    fn may_see(&self, conn: ConnId, perms: &[Arc<[Perm]>]) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let who = self.who(c);
        perms.iter().any(|p| access(&who, p).read)
    }

    /// Fires the watches an event concerns.
    fn fire(&mut self, event: &Event) {
        let mut deliveries: Vec<(ConnId, String, String)> = Vec::new();
        for w in self.watches.matching(&event.path) {
            if self.may_see(w.conn, &event.perms) {
                deliveries.push((w.conn, w.event_path(&event.path), w.token.clone()));
            }
        }
        if !event.removed.is_empty() {
            let removed: BTreeMap<&str, &Arc<[Perm]>> = event
                .removed
                .iter()
                .map(|(p, perms)| (p.as_str(), perms))
                .collect();
            for w in self.watches.below(&event.path) {
                let perms = removed
                    .get(w.abs.as_str())
                    .map_or_else(|| event.perms.clone(), |p| vec![Arc::clone(p)]);
                if self.may_see(w.conn, &perms) {
                    deliveries.push((w.conn, w.path.clone(), w.token.clone()));
                }
            }
        }
        for (conn, path, token) in deliveries {
            self.send_event(conn, &path, &token);
        }
    }

    /// `@introduceDomain` / `@releaseDomain` for `domid`. As C xenstored
    /// 4.17 (XSA-115), only connections that may read the special node
    /// hear of it (the privileged ones, and those its ACL lets read); and,
    /// beyond C, `domid` itself and a domain acting for it (`SET_TARGET`).
    /// An unprivileged guest never learns of an unrelated domain.
    fn fire_special(&mut self, base: &str, domid: DomId) {
        let specific = format!("{base}/{domid}");
        let mut deliveries = Vec::new();
        for w in self.watches.matching(base) {
            let path = if w.depth.is_some_and(|d| d >= 1) {
                specific.clone()
            } else {
                base.to_string()
            };
            deliveries.push((w.conn, path, w.token.clone()));
        }
        for w in self.watches.matching(&specific) {
            deliveries.push((w.conn, specific.clone(), w.token.clone()));
        }
        for (conn, path, token) in deliveries {
            let allowed = match self.conns.get(&conn) {
                Some(c) => {
                    let who = self.who(c);
                    who.privileged
                        || who.domid == domid
                        || who.target == Some(domid)
                        || ops::special_readable(&self.store, &who, base)
                }
                None => false,
            };
            if allowed {
                self.send_event(conn, &path, &token);
            }
        }
    }

    fn commit(&mut self, conn: ConnId, who: Who, tx: Transaction) -> Result<(), XsErrno> {
        let (store, events) = if self.unmoved(&tx) {
            (tx.store, tx.events)
        } else {
            self.replay(conn, who, &tx)?
        };
        self.store = store;
        for e in &events {
            self.fire(e);
        }
        self.check_soft_memory(&events);
        Ok(())
    }

    /// The soft memory quota: when a domain's memory use (the bytes its
    /// nodes are charged) goes above it, one line is logged, and nothing is
    /// refused; another when it is back within it. Only the owners of the
    /// nodes `events` changed can have moved, so only they are looked at.
    fn check_soft_memory(&mut self, events: &[Event]) {
        let soft = self.config.quotas.soft(QuotaKind::Memory);
        let owners: BTreeSet<DomId> = events
            .iter()
            .flat_map(|e| e.perms.iter().chain(e.removed.iter().map(|(_, p)| p)))
            .filter_map(|p| p.first().map(|owner| owner.domid))
            .filter(|&d| d != self.config.priv_domid)
            .collect();
        for d in owners {
            let used = self.store.account(d).memory;
            if !within(soft, used) {
                if self.over_soft.insert(d) {
                    self.actions.push(Action::Log(format!(
                        "domain {d} uses {used} bytes of memory, over its soft quota of {soft} bytes"
                    )));
                }
            } else if self.over_soft.remove(&d) {
                self.actions.push(Action::Log(format!(
                    "domain {d} uses {used} bytes of memory, within its soft quota of {soft} bytes again"
                )));
            }
        }
    }

    /// Whether the committed store is still the one `tx` started from (or
    /// was restored on), so that committing is swapping its copy in. A
    /// restored transaction that already conflicted when it was written
    /// out (what it read had changed) never is.
    fn unmoved(&self, tx: &Transaction) -> bool {
        self.store.version() == tx.base_version && tx.carried.holds(&self.store)
    }

    /// The store moved on since `tx` started: re-runs the transaction on a
    /// clone of the current store and gives the result, or EAGAIN unless
    /// every reply is the one the client already received (what oxenstored
    /// does; C xenstored fails whenever anything it touched changed, even a
    /// shared parent's child list). A transaction carried over a live
    /// update first needs the committed state its carried nodes depend on
    /// (see [`lu_state::Carried`]), then has its carried writes applied; only
    /// the requests since the restore are re-run.
    fn replay(
        &self,
        conn: ConnId,
        who: Who,
        tx: &Transaction,
    ) -> Result<(Store, Vec<Event>), XsErrno> {
        let mut scratch = self.store.clone();
        let mut events = Vec::new();
        if !tx.carried.holds(&self.store) || !tx.carried.apply(&mut scratch, &mut events) {
            return Err(XsErrno::EAGAIN);
        }
        let home = self.home(conn);
        let ctx = Ctx {
            who,
            limits: self.limits(&who),
            home: home.as_deref(),
        };
        for (ty, payload, answered) in &tx.ops {
            let again = ops::exec(&mut scratch, &ctx, *ty, payload, &mut events);
            if &again != answered {
                return Err(XsErrno::EAGAIN);
            }
        }
        Ok((scratch, events))
    }

    /// The store committing `tx` now would leave, or `None` if it would
    /// fail with EAGAIN (for a live update's records).
    fn outcome(&self, conn: ConnId, who: Who, tx: &Transaction) -> Option<Store> {
        if self.unmoved(tx) {
            Some(tx.store.clone())
        } else {
            self.replay(conn, who, tx).ok().map(|(store, _)| store)
        }
    }

    fn introduce(
        &mut self,
        conn: ConnId,
        hdr: &Header,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, XsErrno> {
        let args: Vec<&[u8]> = split_args(payload).collect();
        if args.len() < 3 {
            return Err(XsErrno::EINVAL);
        }
        let domid = parse_domid(args[0])?;
        // "<mfn> must be a machine page in that domain represented in
        // signed decimal (!)".
        let mfn = std::str::from_utf8(args[1])
            .ok()
            .and_then(|s| {
                s.parse::<i64>()
                    .ok()
                    .map(|v| v as u64)
                    .or_else(|| s.parse::<u64>().ok())
            })
            .ok_or(XsErrno::EINVAL)?;
        let port: u32 = parse_num(args[2])?;
        if let Some(dom) = self.domains.get(&domid) {
            return if dom.mfn == mfn && dom.port == port {
                Ok(Some(b"OK\0".to_vec()))
            } else {
                Err(XsErrno::EEXIST)
            };
        }
        if self.pending_introduce.values().any(|p| p.2 == domid) {
            return Err(XsErrno::EBUSY);
        }
        let token = self.next_token;
        self.next_token += 1;
        self.pending_introduce
            .insert(token, (conn, *hdr, domid, mfn, port));
        self.actions.push(Action::Introduce {
            token,
            domid,
            mfn,
            port,
        });
        Ok(None)
    }

    fn introduced(&mut self, token: u64, result: Result<ConnId, XsErrno>) {
        let Some((conn, hdr, domid, mfn, port)) = self.pending_introduce.remove(&token) else {
            return;
        };
        match result {
            Ok(ring) => {
                self.handle(Input::Connect {
                    conn: ring,
                    kind: ConnKind::Domain(domid),
                });
                self.domains.insert(
                    domid,
                    Domain {
                        conn: ring,
                        mfn,
                        port,
                        shutdown_seen: false,
                        target: None,
                        features: 0,
                    },
                );
                self.queue(
                    conn,
                    reply(&hdr, MsgType::Introduce, b"OK\0".to_vec()),
                    false,
                );
                self.fire_special("@introduceDomain", domid);
            }
            Err(e) => self.reply_err(conn, &hdr, e),
        }
    }

    fn release(&mut self, domid: DomId, ring: ConnId) {
        self.domains.remove(&domid);
        self.forget_conn(ring);
        self.actions.push(Action::Release { conn: ring, domid });
        self.fire_special("@releaseDomain", domid);
    }

    fn domain_state(&mut self, domid: DomId, shutdown: bool, dying: bool) {
        if dying {
            // Its nodes go: that is no news for the log.
            self.over_soft.remove(&domid);
            if let Some(dom) = self.domains.get(&domid) {
                let ring = dom.conn;
                self.release(domid, ring);
            }
            // The domain's home goes, and entries naming it stop applying.
            let home = format!("/local/domain/{domid}");
            if let Some(node) = self.store.get(&home) {
                let perms = Arc::clone(&node.perms);
                let removed = self.store.remove_tree(&home);
                let event = Event {
                    path: home,
                    perms: vec![perms],
                    removed: removed
                        .into_iter()
                        .map(|(p, n)| (p.to_string(), Arc::clone(&n.perms)))
                        .collect(),
                };
                self.fire(&event);
                self.check_soft_memory(std::slice::from_ref(&event));
            }
            self.store.forget_domain(domid, self.config.priv_domid);
            self.domain_quotas.remove(&domid);
        } else if shutdown {
            let fire = match self.domains.get_mut(&domid) {
                Some(dom) if !dom.shutdown_seen => {
                    dom.shutdown_seen = true;
                    true
                }
                _ => false,
            };
            if fire {
                self.fire_special("@releaseDomain", domid);
            }
        }
    }

    fn tick(&mut self, now: Time) {
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

    fn quota_args(&self, payload: &[u8]) -> Result<(Option<DomId>, Vec<String>), XsErrno> {
        let args: Vec<String> = split_args(payload)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect::<Result<_, _>>()?;
        Ok((None, args))
    }

    fn get_quota(&self, payload: &[u8]) -> Result<Vec<u8>, XsErrno> {
        let (_, args) = self.quota_args(payload)?;
        let text = match args.as_slice() {
            [] => QuotaKind::ALL
                .iter()
                .map(|q| q.name())
                .collect::<Vec<_>>()
                .join(" "),
            [name] => {
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                self.config.quotas.hard(q).to_string()
            }
            [domid, name] => {
                let d = parse_domid(domid.as_bytes())?;
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                self.limit(d, q).to_string()
            }
            _ => return Err(XsErrno::EINVAL),
        };
        let mut out = text.into_bytes();
        out.push(0);
        Ok(out)
    }

    fn set_quota(&mut self, payload: &[u8]) -> Result<(), XsErrno> {
        let (_, args) = self.quota_args(payload)?;
        match args.as_slice() {
            [name, value] => {
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                let v: u64 = value.parse().map_err(|_| XsErrno::EINVAL)?;
                self.config.quotas.set_hard(q, v);
            }
            [domid, name, value] => {
                let d = parse_domid(domid.as_bytes())?;
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                let v: u64 = value.parse().map_err(|_| XsErrno::EINVAL)?;
                self.domain_quotas.entry(d).or_default().hard.insert(q, v);
            }
            _ => return Err(XsErrno::EINVAL),
        }
        Ok(())
    }

    /// `XS_CONTROL`, with C xenstored 4.17's commands, argument checks and
    /// reply texts (docs/c-compat.md): `xenstore-control` prints a reply as
    /// a C string plus a newline, and shows the `help` text after any
    /// `EINVAL`, so both must be C's bytes.
    fn control(&mut self, conn: ConnId, payload: &[u8]) -> Result<Vec<u8>, XsErrno> {
        let args: Vec<String> = c_strings(payload).map(text).collect::<Result<_, _>>()?;
        let Some((cmd, rest)) = args.split_first() else {
            return Err(XsErrno::EINVAL);
        };
        let none = |rest: &[String]| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(XsErrno::EINVAL)
            }
        };
        let one = |rest: &[String]| {
            if rest.len() == 1 {
                Ok(())
            } else {
                Err(XsErrno::EINVAL)
            }
        };
        let out = match cmd.as_str() {
            "help" => {
                none(rest)?;
                CONTROL_COMMANDS
                    .iter()
                    .map(|(name, help)| format!("{name}\t{help}\n"))
                    .collect::<String>()
            }
            "check" => {
                none(rest)?;
                let problems = self.check();
                if problems.is_empty() {
                    "OK".to_string()
                } else {
                    // C repairs and logs; we report what is wrong (a
                    // documented difference: only a broken store shows it).
                    problems.join("\n") + "\n"
                }
            }
            "quota" => self.control_quota(false, rest)?,
            "quota-soft" => self.control_quota(true, rest)?,
            "print" => {
                one(rest)?;
                self.actions.push(Action::Log(rest[0].clone()));
                "OK".to_string()
            }
            "memreport" => {
                if rest.len() > 1 {
                    return Err(XsErrno::EINVAL);
                }
                let report = self.memreport();
                match rest.first() {
                    // C dumps talloc's tree to its log and answers OK; ours
                    // answers with the report itself (documented).
                    None => report,
                    Some(file) => {
                        use std::io::Write;
                        std::fs::OpenOptions::new()
                            .append(true)
                            .create(true)
                            .open(file)
                            .and_then(|mut f| f.write_all(report.as_bytes()))
                            .map_err(|_| XsErrno::EINVAL)?; // C's EBADF, sent as EINVAL
                        "OK".to_string()
                    }
                }
            }
            "log" => {
                one(rest)?;
                if rest[0] != "on" && rest[0] != "off" {
                    return Err(XsErrno::EINVAL);
                }
                self.actions.push(Action::Control {
                    conn,
                    args: args.clone(),
                });
                "OK".to_string()
            }
            "logfile" => {
                one(rest)?;
                self.actions.push(Action::Control {
                    conn,
                    args: args.clone(),
                });
                "OK".to_string()
            }
            _ => return Err(XsErrno::EINVAL),
        };
        let mut out = out.into_bytes();
        out.push(0);
        Ok(out)
    }

    /// What `memreport` answers: what the store holds.
    fn memreport(&self) -> String {
        let mut s = format!(
            "nodes {}\nwatches {}\nconnections {}\ndomains {}\n",
            self.store.len(),
            self.watches.len(),
            self.conns.len(),
            self.domains.len()
        );
        for (d, a) in self.store.accounts() {
            s.push_str(&format!(
                "domain {d}: {} nodes, {} bytes\n",
                a.nodes, a.memory
            ));
        }
        s
    }

    /// `quota [set <name> <val>|<domid>]` and `quota-soft [set <name>
    /// <val>]`, as C 4.17 parses and prints them.
    fn control_quota(&mut self, soft: bool, args: &[String]) -> Result<String, XsErrno> {
        let table: &[(QuotaKind, &str, &str)] = if soft { C_SOFT_QUOTAS } else { C_HARD_QUOTAS };
        match args {
            [] => {
                let mut s = "Quota settings:\n".to_string();
                for &(q, name, descr) in table {
                    let v = if soft {
                        self.config.quotas.soft(q)
                    } else {
                        self.config.quotas.hard(q)
                    };
                    s.push_str(&format!("{name:<17}: {v:>8} {descr}\n"));
                }
                Ok(s)
            }
            [set, rest @ ..] if set == "set" => {
                let [name, value] = rest else {
                    return Err(XsErrno::EINVAL);
                };
                let v = c_atoi(value);
                if v < 1 {
                    return Err(XsErrno::EINVAL);
                }
                let &(q, _, _) = table
                    .iter()
                    .find(|(_, n, _)| n == name)
                    .ok_or(XsErrno::EINVAL)?;
                let v = v as u64;
                if soft {
                    self.config.quotas.set_soft(q, v);
                } else {
                    self.config.quotas.set_hard(q, v);
                }
                Ok("OK".to_string())
            }
            [domid] if !soft => {
                // C reads the domid with atoi(): "abc" is domain 0.
                let d = DomId::try_from(c_atoi(domid)).map_err(|_| XsErrno::ENOENT)?;
                self.domain_usage(d).ok_or(XsErrno::ENOENT)
            }
            _ => Err(XsErrno::EINVAL),
        }
    }

    /// `quota <domid>`: what a known domain (the privileged one or an
    /// introduced one) uses, in C's layout. Memory is our own accounting
    /// (documented difference).
    fn domain_usage(&self, d: DomId) -> Option<String> {
        if d != self.config.priv_domid && !self.domains.contains_key(&d) {
            return None;
        }
        let priv_domid = self.config.priv_domid;
        let of_domain = |k: &ConnKind| match k {
            ConnKind::Socket => priv_domid == d,
            ConnKind::Domain(x) => *x == d,
        };
        let (mut watches, mut transactions, mut outstanding) = (0, 0, 0);
        for (id, c) in &self.conns {
            if of_domain(&c.kind) {
                watches += self.watches.count(*id);
                transactions += c.transactions.len();
                outstanding += c.replies_queued;
            }
        }
        let acct = self.store.account(d);
        let mut s = format!("Domain {d}:\n");
        for (name, v) in [
            ("nodes", u64::from(acct.nodes)),
            ("watches", watches as u64),
            ("transactions", transactions as u64),
            ("outstanding", outstanding as u64),
            ("memory", acct.memory),
        ] {
            s.push_str(&format!("{name:<16}: {v:>8}\n"));
        }
        Some(s)
    }

    /// Full consistency walk: the tree, its accounting, watches and
    /// connections. Empty when all is well.
    pub fn check(&self) -> Vec<String> {
        let mut problems = self.store.check();
        for w in self.watches.all() {
            if !self.conns.contains_key(&w.conn) {
                problems.push(format!(
                    "watch {} {} of unknown connection {}",
                    w.path, w.token, w.conn
                ));
            }
        }
        problems
    }
}

/// XS_CONTROL commands and their help texts, in C xenstored 4.17's order
/// and words (`help` prints them as `<name>\t<text>\n`).
pub const CONTROL_COMMANDS: &[(&str, &str)] = &[
    ("check", ""),
    ("log", "on|off"),
    (
        "live-update",
        "[-c <cmdline>] [-F] [-t <timeout>] <file>\n    Default timeout is 60 seconds.",
    ),
    ("logfile", "<file>"),
    ("memreport", "[<file>]"),
    ("print", "<string>"),
    ("quota", "[set <name> <val>|<domid>]"),
    ("quota-soft", "[set <name> <val>]"),
    ("help", ""),
];

/// The hard quotas `xenstore-control quota` shows and sets: C 4.17's
/// names, order and descriptions.
const C_HARD_QUOTAS: &[(QuotaKind, &str, &str)] = &[
    (QuotaKind::Nodes, "nodes", "Nodes per domain"),
    (QuotaKind::Watches, "watches", "Watches per domain"),
    (
        QuotaKind::Transactions,
        "transactions",
        "Transactions per domain",
    ),
    (
        QuotaKind::Outstanding,
        "outstanding",
        "Outstanding requests per domain",
    ),
    (
        QuotaKind::TransactionNodes,
        "transaction-nodes",
        "Max. number of accessed nodes per transaction",
    ),
    (
        QuotaKind::Memory,
        "memory",
        "Total Xenstore memory per domain (error level)",
    ),
    (QuotaKind::NodeSize, "node-size", "Max. size of a node"),
    (QuotaKind::PathMax, "path-max", "Max. length of a node path"),
    (
        QuotaKind::NodePermissions,
        "permissions",
        "Max. number of permissions per node",
    ),
];

/// The soft quotas C 4.17 has (only memory).
const C_SOFT_QUOTAS: &[(QuotaKind, &str, &str)] = &[(
    QuotaKind::Memory,
    "memory",
    "Total Xenstore memory per domain (warning level)",
)];

/// The NUL-terminated strings of a payload, as C's `get_strings()` sees
/// them: bytes after the last NUL are not an argument.
fn c_strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = payload.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
    split_args(&payload[..end])
}

/// C's `atoi()`: optional blanks and sign, then as many digits as there
/// are; 0 if none. Saturates instead of overflowing.
fn c_atoi(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}
