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
//! [`ops`] (the requests on it), [`perms`], [`quota`], `account` (the one
//! byte account per domain that the memory quota is checked against), [`watch`],
//! `connections`, `transactions`, `domains`, `control` (XS_CONTROL) and
//! `dispatch` (the table of request types), and [`lu_state`] (what a live
//! update carries). This file holds the engine's inputs and outputs and its
//! state.

mod account;
mod connections;
mod control;
mod dispatch;
mod domains;
pub(crate) mod idmap;
pub mod lu_state;
pub mod ops;
pub mod perms;
pub mod quota;
pub mod store;
pub mod throttle;
mod transactions;
pub mod watch;

#[cfg(test)]
mod tests;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use xenring::codec::Message;
use xenring::{DomId, Header, MsgType, XsErrno};

use connections::{Conn, EventHolds};
use domains::{Domain, PendingIntroduce};
use idmap::IdMap;
use ops::{Change, Limits};
use perms::Who;
use quota::{effective, within, DomainQuotas, QuotaKind, Quotas};
use store::Store;
use throttle::{Throttle, ThrottleConfig, WriteLog};
use watch::Watches;

pub use control::ShellControl;
pub use lu_state::{RestoreError, RestoreReport};

/// A connection, numbered by the I/O shell.
pub type ConnId = u32;

/// Milliseconds on the shell's monotonic clock.
pub type Time = u64;

/// The features this server offers (GET_FEATURE without a domain):
/// `XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR`.
pub const SERVER_FEATURES: u32 = xenring::wire::XENSTORE_SERVER_FEATURE_RECONNECTION
    | xenring::wire::XENSTORE_SERVER_FEATURE_ERROR;

/// Lowest reserved domid ([`xenring::DOMID_FIRST_RESERVED`]), widened for
/// the parser.
pub const DOMID_FIRST_RESERVED: u32 = xenring::DOMID_FIRST_RESERVED as u32;

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
    // Watch-event back-pressure and guest-driven logging (issue 16, items
    // 3 and 4).
    /// Bytes of watch events that may wait for a privileged connection
    /// (`--priv-event-queue`): past it the oldest events are dropped
    /// (replies never), which is logged once until the queue is read
    /// empty. 0: unbounded. (A guest's request is held for its events at
    /// most `watch_event_timeout_ms`; with that 0 too, until they are
    /// delivered or dropped.)
    pub max_priv_event_bytes: usize,
    /// A log line a guest can cause (its watch events expired unread, or
    /// too long to send; its crossings of the soft memory quota) is
    /// written at most once per connection (per domain for the soft
    /// quota) per this many ms (`--guest-log-interval`), counting what it
    /// stands for. 0: no limit.
    pub guest_log_interval_ms: u64,
    /// Test-only (`--test-alter-reply N`): the Nth reply queued gets one
    /// octet of its payload changed, so that replay's verify mode can be
    /// shown to catch a change in behaviour. Never set in production.
    pub test_alter_reply: Option<u64>,
    /// Test-only (`--test-panic-on-write PATH`): a WRITE of exactly PATH
    /// panics the engine, as a bug would (the crash journal's tests).
    /// Never set in production.
    pub test_panic_on_write: Option<String>,
    /// When a domain dies or is released, give the nodes it created
    /// outside its home to the privileged domain instead of deleting them
    /// (`--keep-orphans`, C's `-K`; off by default: kept nodes let a guest
    /// that may write outside its home leak its whole quota on every
    /// reboot, XSA-419).
    pub keep_orphans: bool,
    /// Per-domain throttling (`--rate-limit`): C's write rate limit and
    /// oxenstored's conflict credit ([`throttle`]).
    pub throttle: ThrottleConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            priv_domid: 0,
            quotas: Quotas::default(),
            watch_event_timeout_ms: 20_000,
            max_queued_bytes: 1 << 20,
            max_priv_event_bytes: 16 << 20,
            guest_log_interval_ms: 10_000,
            test_alter_reply: None,
            test_panic_on_write: None,
            keep_orphans: false,
            throttle: ThrottleConfig::default(),
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
    /// An XS_CONTROL command the engine does not implement itself (the
    /// access log's switch and file): the shell acts on it; the engine has
    /// already answered.
    Control {
        /// The connection that asked.
        conn: ConnId,
        /// The command.
        command: ShellControl,
    },
    /// XS_CONTROL `memreport <file>`: append `report` to `file` (the engine
    /// does no I/O), then answer ([`Engine::answer_control`]) `OK`, or
    /// EINVAL if it cannot be written.
    MemReport {
        /// The connection that asked.
        conn: ConnId,
        /// The request's header, to answer it.
        header: Header,
        /// The file, as given.
        file: String,
        /// What to append.
        report: String,
    },
}

/// [`Engine::counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// The next introduction's token.
    pub next_token: u64,
    /// Replies queued so far.
    pub replies: u64,
    /// The id each connection's next TRANSACTION_START tries first.
    pub next_tx: Vec<(ConnId, u32)>,
}

/// The engine.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Config,
    store: Store,
    conns: IdMap<Conn>,
    domains: BTreeMap<DomId, Domain>,
    domain_quotas: BTreeMap<DomId, DomainQuotas>,
    watches: Watches,
    actions: Vec<Action>,
    pending_introduce: BTreeMap<u64, PendingIntroduce>,
    next_token: u64,
    now: Time,
    requests: u64,
    last_result: Option<Result<(), XsErrno>>,
    /// Connections whose output queue is not empty (a hashed set: one
    /// insertion and one removal per request).
    with_output: IdMap<()>,
    /// Replies queued so far (for `test_alter_reply`).
    replies: u64,
    /// Domains whose memory use was last seen above the soft memory quota
    /// (logged once when they crossed it).
    over_soft: BTreeSet<DomId>,
    /// The soft quota's lines, at most one per domain per
    /// `guest_log_interval_ms`: when the last was written, and the
    /// crossings not written since.
    soft_log: BTreeMap<DomId, (Time, u64)>,
    /// Per-domain write rate and conflict credits.
    throttle: Throttle,
    /// Recent writes by unprivileged domains (whom to blame for EAGAIN).
    write_log: WriteLog,
    /// Open transactions on all connections (C's `wrl_ntransactions`):
    /// guest writes are charged while there are some.
    open_transactions: usize,
    /// Which unprivileged request caused which queued watch events.
    events: EventHolds,
    /// The store that store images built (a pre-copy live update), which
    /// the next restore takes instead of the stream's nodes.
    preloaded: Option<Store>,
}

fn reply(hdr: &Header, ty: MsgType, payload: Vec<u8>) -> Message {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    Message {
        header: Header::new(ty, hdr.req_id, hdr.tx_id, len),
        payload,
    }
}

fn parse_num<T: core::str::FromStr>(arg: &[u8]) -> Result<T, XsErrno> {
    core::str::from_utf8(arg)
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
    core::str::from_utf8(arg)
        .map(str::to_string)
        .map_err(|_| XsErrno::EINVAL)
}

impl Engine {
    /// An engine with an empty store (`/` and the special nodes).
    pub fn new(config: Config) -> Self {
        let store = Store::new(config.priv_domid);
        let throttle = Throttle::new(config.throttle);
        Self {
            config,
            store,
            conns: IdMap::new(),
            domains: BTreeMap::new(),
            domain_quotas: BTreeMap::new(),
            watches: Watches::default(),
            actions: Vec::new(),
            pending_introduce: BTreeMap::new(),
            next_token: 1,
            now: 0,
            requests: 0,
            last_result: None,
            with_output: IdMap::new(),
            replies: 0,
            over_soft: BTreeSet::new(),
            soft_log: BTreeMap::new(),
            throttle,
            write_log: WriteLog::default(),
            open_transactions: 0,
            events: EventHolds::default(),
            preloaded: None,
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

    /// Applies a store image ([`BoundaryEvent::StoreImage`]): the first
    /// builds a whole store, each later one the changes since. The next
    /// restore takes that store instead of its stream's nodes. On error the
    /// images applied so far are forgotten.
    ///
    /// [`BoundaryEvent::StoreImage`]: crate::replay::format::BoundaryEvent::StoreImage
    pub fn apply_store_image(&mut self, image: &[u8]) -> Result<(), store::ImageError> {
        let mut store = self.preloaded.take().unwrap_or_else(Store::empty);
        store.apply_image(image)?;
        self.preloaded = Some(store);
        Ok(())
    }

    /// Whether store images wait for the next restore.
    pub fn has_preloaded_store(&self) -> bool {
        self.preloaded.is_some()
    }

    /// Requests handled so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Registered watches.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// What a migration stream does not carry and a reply depends on
    /// (the next transaction id of each connection, the next
    /// introduction's token, the replies counted): a crash journal's
    /// snapshot keeps them, so that the events after it replay as they
    /// happened.
    pub fn counters(&self) -> Counters {
        Counters {
            next_token: self.next_token,
            replies: self.replies,
            next_tx: self.conns.iter().map(|(&id, c)| (id, c.next_tx)).collect(),
        }
    }

    /// Transactions open on all connections.
    pub fn open_transaction_count(&self) -> usize {
        self.open_transactions
    }

    /// Sets [`Engine::counters`] (after a restore of the same state).
    pub fn set_counters(&mut self, counters: &Counters) {
        self.next_token = counters.next_token;
        self.replies = counters.replies;
        for &(id, next) in &counters.next_tx {
            if let Some(c) = self.conns.get_mut(&id) {
                c.next_tx = next;
            }
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input<'_>) {
        match input {
            Input::Connect { conn, kind } => self.connect(conn, kind),
            Input::Disconnect { conn } => self.forget_conn(conn),
            Input::Reset { conn } => self.reset(conn),
            Input::Request { conn, msg } => self.request(conn, msg),
            Input::Introduced { token, result } => self.introduced(token, result),
            Input::DomainState {
                domid,
                shutdown,
                dying,
            } => self.domain_state(domid, shutdown, dying),
            Input::Time(now) => {
                self.tick(now);
                self.throttle_tick(now);
                self.flush_soft_memory_log();
            }
        }
    }

    fn limit(&self, domid: DomId, q: QuotaKind) -> u64 {
        effective(&self.config.quotas, self.domain_quotas.get(&domid), q)
    }

    fn limits(&self, who: &Who) -> Limits {
        self.limits_for(who, true)
    }

    /// [`limits`](Self::limits) for a request that writes (`writes`) or
    /// not: only a write is checked against the memory quota, so only for
    /// one is what the domain's other charges leave of it worked out (a
    /// walk of its watches); a read gets the quota as it is.
    fn limits_for(&self, who: &Who, writes: bool) -> Limits {
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
            // What the domain's other charges leave of its memory quota
            // (never 0, which is unlimited): see `account`.
            memory: if writes {
                self.node_memory_limit(who)
            } else {
                self.limit(who.domid, QuotaKind::Memory)
            },
            node_permissions: self.limit(who.domid, QuotaKind::NodePermissions),
            path_max: self.limit(who.domid, QuotaKind::PathMax),
            node_size: self.limit(who.domid, QuotaKind::NodeSize),
        }
    }

    /// The outcome of the last request handled (`None` while an INTRODUCE
    /// or a live update waits for the shell), for the access log.
    pub fn last_result(&self) -> Option<Result<(), XsErrno>> {
        self.last_result
    }

    /// The soft memory quota: when a domain's memory use (everything it
    /// is charged, `account`) goes above it, one line is logged, and
    /// nothing is refused; another when it is back within it. Only the
    /// owners of the nodes `events` changed can have moved, so only they
    /// are looked at (a transaction's requests look at their own domain).
    fn check_soft_memory(&mut self, events: &[Change]) {
        let owners = || {
            events
                .iter()
                .flat_map(|e| e.perms.iter().chain(e.removed.iter().map(|(_, p)| p)))
                .filter_map(|p| p.first().map(|owner| owner.domid))
        };
        // Mostly one owner (one node written): no set is built for it.
        let Some(first) = owners().next() else {
            return;
        };
        if owners().all(|d| d == first) {
            self.soft_memory(first);
            return;
        }
        let owners: BTreeSet<DomId> = owners().collect();
        for d in owners {
            self.soft_memory(d);
        }
    }

    /// The soft memory quota's check for one domain (see
    /// [`check_soft_memory`](Self::check_soft_memory)).
    fn soft_memory(&mut self, d: DomId) {
        let soft = self.config.quotas.soft(QuotaKind::Memory);
        if soft == 0 || d == self.config.priv_domid {
            return;
        }
        if !self.over_soft.contains(&d) && self.surely_within(d, soft) {
            return;
        }
        let used = self.usage(d).total();
        let crossed = if !within(soft, used) {
            self.over_soft.insert(d)
        } else {
            self.over_soft.remove(&d)
        };
        if !crossed {
            return;
        }
        // A guest going back and forth across the line must not write a
        // line per request: one per interval, the rest counted.
        let (now, interval) = (self.now, self.config.guest_log_interval_ms);
        match self.soft_log.get_mut(&d) {
            Some((last, held)) if interval > 0 && now.saturating_sub(*last) < interval => {
                *held += 1;
            }
            _ => {
                self.soft_log.insert(d, (now, 0));
                self.log_soft_memory(d, used, soft, 0);
            }
        }
    }

    fn log_soft_memory(&mut self, d: DomId, used: u64, soft: u64, held: u64) {
        let state = if self.over_soft.contains(&d) {
            "over its soft quota"
        } else {
            "within its soft quota"
        };
        let again = if held == 0 && !self.over_soft.contains(&d) {
            " again"
        } else {
            ""
        };
        let more = if held > 0 {
            format!(" ({held} more crossings since the last line)")
        } else {
            String::new()
        };
        self.actions.push(Action::Log(format!(
            "domain {d} uses {used} bytes of memory, {state} of {soft} bytes{again}{more}"
        )));
    }

    /// The soft quota's lines held back by the interval: once it has
    /// passed, one line with where the domain stands now and how many
    /// crossings it stands for; a domain with nothing held is forgotten.
    fn flush_soft_memory_log(&mut self) {
        let (now, interval) = (self.now, self.config.guest_log_interval_ms);
        let due: Vec<(DomId, u64)> = self
            .soft_log
            .iter()
            .filter(|(_, (last, _))| now.saturating_sub(*last) >= interval)
            .map(|(&d, &(_, held))| (d, held))
            .collect();
        let soft = self.config.quotas.soft(QuotaKind::Memory);
        for (d, held) in due {
            if held == 0 {
                self.soft_log.remove(&d);
                continue;
            }
            self.soft_log.insert(d, (now, 0));
            let used = self.usage(d).total();
            self.log_soft_memory(d, used, soft, held);
        }
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
        self.check_conns(&mut problems);
        let open: usize = self.conns.values().map(|c| c.transactions.len()).sum();
        if open != self.open_transactions {
            problems.push(format!(
                "{} open transactions counted, {open} open",
                self.open_transactions
            ));
        }
        problems
    }
}
