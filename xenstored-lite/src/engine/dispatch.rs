//! The dispatch table (C's `wire_funcs[]` in core.c): for each request
//! type, its handler and its flags, in a static array indexed by the
//! header's type, so that a request costs one bounds-checked index before
//! its handler runs.

use alloc::sync::Arc;
use alloc::vec::Vec;

use bitflags::bitflags;
use xenring::codec::{split_args, split_first_arg, Message};
use xenring::{Header, MsgType, XsErrno};

use super::ops::{self, one_arg, Change, Ctx};
use super::perms::Who;
use super::{reply, Action, ConnId, Engine, Time};

bitflags! {
    /// A request type's flags, as C xenstored's `XS_FLAG_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Flags: u8 {
        /// Privileged callers only (EACCES for others).
        const PRIV = 1;
        /// The header's transaction id is ignored (the request never runs
        /// in a transaction).
        const NO_TX = 1 << 1;
        /// Changes the tree: counts against the transaction-nodes quota in
        /// a transaction.
        const WRITES = 1 << 2;
    }
}

/// What a handler is given.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request<'a> {
    /// The connection that sent it.
    pub(super) conn: ConnId,
    /// Who that connection is.
    pub(super) who: Who,
    /// Its header.
    pub(super) hdr: Header,
    /// Its type.
    pub(super) ty: MsgType,
    /// Its type's flags.
    pub(super) flags: Flags,
    /// The transaction it runs in (0: none, or [`Flags::NO_TX`]); known to
    /// exist on the connection.
    pub(super) tx_id: u32,
    /// Its payload.
    pub(super) payload: &'a [u8],
}

/// A handler's outcome: the reply's payload, `None` if it is answered
/// later (the shell carries the request out), or the error to send.
pub(super) type Reply = Result<Option<Vec<u8>>, XsErrno>;

/// Runs a request of one type.
type Handler = fn(&mut Engine, &Request<'_>) -> Reply;

/// Where a tree request's path is in its payload, and what it may do
/// there: what a live update needs to know of the requests a transaction
/// ran.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    /// Picks the path argument out of the payload (`None`: malformed).
    pub(super) path: fn(&[u8]) -> Option<&[u8]>,
    /// `@` paths are allowed.
    pub(super) special: bool,
    /// It may create missing parents (WRITE, MKDIR).
    pub(super) creates: bool,
}

/// The one argument (READ, MKDIR, ...).
fn only_arg(payload: &[u8]) -> Option<&[u8]> {
    one_arg(payload).ok()
}

/// The first of several arguments (DIRECTORY_PART).
fn first_arg(payload: &[u8]) -> Option<&[u8]> {
    split_args(payload).next()
}

/// The argument before the value or list (WRITE, SET_PERMS).
fn path_before_rest(payload: &[u8]) -> Option<&[u8]> {
    split_first_arg(payload).map(|(path, _)| path)
}

/// How a request type is run.
#[derive(Clone, Copy)]
enum Run {
    /// A request on the tree ([`ops`]): on the committed store, or in the
    /// request's transaction.
    Store(ops::Op, Target),
    /// Any other: by its handler.
    Engine(Handler),
}

/// Runs after a request's reply is queued.
type After = fn(&mut Engine, &Request<'_>);

/// One request type's entry.
struct Entry {
    /// The type (for the reply's header).
    ty: MsgType,
    /// Its flags.
    flags: Flags,
    /// How it is run.
    run: Run,
    /// Runs after a successful reply is queued (WATCH's first event).
    after: Option<After>,
}

const fn entry(ty: MsgType, flags: Flags, handler: Handler) -> Option<Entry> {
    Some(Entry {
        ty,
        flags,
        run: Run::Engine(handler),
        after: None,
    })
}

const fn store(
    ty: MsgType,
    flags: Flags,
    op: ops::Op,
    path: fn(&[u8]) -> Option<&[u8]>,
    special: bool,
) -> Option<Entry> {
    let creates = matches!(ty, MsgType::Write | MsgType::Mkdir);
    Some(Entry {
        ty,
        flags,
        run: Run::Store(
            op,
            Target {
                path,
                special,
                creates,
            },
        ),
        after: None,
    })
}

const NONE: Flags = Flags::empty();
const PRIV_NO_TX: Flags = Flags::PRIV.union(Flags::NO_TX);

/// The dispatch table, indexed by the header's type: `None` for the types
/// a client may not send (`WATCH_EVENT`, `ERROR`, the removed
/// `XS_RESTRICT`), which get ENOSYS as unknown types do.
static WIRE: [Option<Entry>; 27] = [
    entry(MsgType::Control, PRIV_NO_TX, Engine::control),
    store(MsgType::Directory, NONE, ops::directory, only_arg, false),
    store(MsgType::Read, NONE, ops::read, only_arg, false),
    store(MsgType::GetPerms, NONE, ops::get_perms, only_arg, true),
    Some(Entry {
        ty: MsgType::Watch,
        flags: Flags::NO_TX,
        run: Run::Engine(Engine::watch),
        after: Some(Engine::initial_watch_event),
    }),
    entry(MsgType::Unwatch, Flags::NO_TX, Engine::unwatch),
    entry(
        MsgType::TransactionStart,
        Flags::NO_TX,
        Engine::transaction_start,
    ),
    entry(MsgType::TransactionEnd, NONE, Engine::transaction_end),
    entry(MsgType::Introduce, PRIV_NO_TX, Engine::introduce),
    entry(MsgType::Release, PRIV_NO_TX, Engine::release_request),
    entry(
        MsgType::GetDomainPath,
        Flags::NO_TX,
        Engine::get_domain_path,
    ),
    store(
        MsgType::Write,
        Flags::WRITES,
        ops::write_request,
        path_before_rest,
        false,
    ),
    store(MsgType::Mkdir, Flags::WRITES, ops::mkdir, only_arg, false),
    store(MsgType::Rm, Flags::WRITES, ops::rm, only_arg, false),
    store(
        MsgType::SetPerms,
        Flags::WRITES,
        ops::set_perms,
        path_before_rest,
        true,
    ),
    None, // WATCH_EVENT
    None, // ERROR
    entry(
        MsgType::IsDomainIntroduced,
        PRIV_NO_TX,
        Engine::is_domain_introduced,
    ),
    entry(MsgType::Resume, PRIV_NO_TX, Engine::resume),
    entry(MsgType::SetTarget, PRIV_NO_TX, Engine::set_target),
    None, // 20, XS_RESTRICT, removed from Xen
    entry(MsgType::ResetWatches, Flags::NO_TX, Engine::reset_watches),
    store(
        MsgType::DirectoryPart,
        NONE,
        ops::directory_part,
        first_arg,
        false,
    ),
    entry(MsgType::GetFeature, PRIV_NO_TX, Engine::get_feature),
    entry(MsgType::SetFeature, PRIV_NO_TX, Engine::set_feature),
    entry(MsgType::GetQuota, PRIV_NO_TX, Engine::get_quota_request),
    entry(MsgType::SetQuota, PRIV_NO_TX, Engine::set_quota_request),
];

/// A tree request type's function and path argument (`None` for other
/// types): for what is logged by type, as a transaction's requests are.
pub(super) fn store_op(ty: MsgType) -> Option<(ops::Op, Target)> {
    match lookup(ty.raw())?.run {
        Run::Store(op, target) => Some((op, target)),
        Run::Engine(_) => None,
    }
}

/// The entry for a header's type, if a client may send it.
fn lookup(msg_type: u32) -> Option<&'static Entry> {
    WIRE.get(usize::try_from(msg_type).ok()?)?.as_ref()
}

impl Engine {
    /// One request: checked against its type's flags, run by its handler,
    /// answered.
    pub(super) fn request(&mut self, conn: ConnId, msg: &Message) {
        self.last_result = None;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        self.requests += 1;
        let hdr = msg.header;
        if let Some(path) = &self.config.test_panic_on_write {
            if hdr.msg_type == MsgType::Write as u32
                && split_first_arg(&msg.payload).is_some_and(|(p, _)| p == path.as_bytes())
            {
                // The test-only fault (`--test-panic-on-write`): a bug in
                // the engine, as a crash recovery must survive one.
                panic!("test fault: a WRITE of {path}");
            }
        }
        let who = self.who(c);
        let Some(entry) = lookup(hdr.msg_type) else {
            return self.reply_err(conn, &hdr, XsErrno::ENOSYS);
        };
        if entry.flags.contains(Flags::PRIV) && !who.privileged {
            return self.reply_err(conn, &hdr, XsErrno::EACCES);
        }
        let tx_id = if entry.flags.contains(Flags::NO_TX) {
            0
        } else {
            hdr.tx_id
        };
        if tx_id != 0 && !c.transactions.contains_key(&tx_id) {
            return self.reply_err(conn, &hdr, XsErrno::ENOENT);
        }
        let open_before = c.transactions.len();
        let req = Request {
            conn,
            who,
            hdr,
            ty: entry.ty,
            flags: entry.flags,
            tx_id,
            payload: &msg.payload,
        };
        // The watch events it causes, and its reply, are counted against it
        // (the connection's borrow is still held: see below).
        self.events.begin(conn, who.privileged);
        let result = match entry.run {
            Run::Store(op, _) => {
                // A tree request's relative paths start at the connection's
                // home: borrowed from the lookup above (no second lookup,
                // no reference count taken per request) for a request on
                // the committed store; a transaction's run takes its own.
                let limits = self.limits_for(&who, req.flags.contains(Flags::WRITES));
                if tx_id == 0 {
                    let ctx = Ctx {
                        who,
                        limits,
                        home: Some(&c.home),
                    };
                    let mut events = Vec::new();
                    let built = self.store.listing_bytes_built();
                    let result = op(&mut self.store, &ctx, req.payload, &mut events);
                    self.store_request_done(&who, built, &events);
                    result.map(Some)
                } else {
                    let home = Arc::clone(&c.home);
                    let ctx = Ctx {
                        who,
                        limits,
                        home: Some(&home),
                    };
                    self.in_transaction(&req, &ctx, op)
                }
            }
            Run::Engine(handler) => handler(self, &req),
        };
        self.count_transactions(conn, open_before);
        match result {
            Ok(Some(payload)) if payload.len() > xenring::wire::PAYLOAD_MAX => {
                self.reply_err(conn, &hdr, XsErrno::E2BIG)
            }
            Ok(Some(payload)) => {
                self.last_result = Some(Ok(()));
                self.charge(&req);
                self.queue(conn, reply(&hdr, entry.ty, payload), false);
                self.end_request();
                if let Some(after) = entry.after {
                    after(self, &req);
                }
            }
            Ok(None) => {} // answered later (INTRODUCE, the shell's controls)
            Err(e) => self.reply_err(conn, &hdr, e),
        }
        self.end_request();
    }

    /// After a request on the tree (READ, WRITE, ...: [`ops`]) ran on the
    /// committed store for `who`, with the store's listing count at
    /// `built` before it, and made `events`: the listing charged, the
    /// writes noted, the watches fired, the memory checked.
    fn store_request_done(&mut self, who: &Who, built: u64, events: &[Change]) {
        self.charge_listing(who, self.store.listing_bytes_built().wrapping_sub(built));
        self.record_writes(who, events);
        for e in events {
            self.fire(e);
        }
        self.check_soft_memory(events);
    }
}

/// Bytes of a large child listing built that cost as much as one write.
const LISTING_BYTES_PER_WRITE: u64 = 64 * 1024;

/// Throttling ([`super::throttle`]): what a request is charged, the
/// writes kept to blame a conflict on, and the clock's part.
impl Engine {
    /// Charges a successful request of an unprivileged domain to its write
    /// credit, as C does: a write outside a transaction while some
    /// transaction is open, a commit while another is.
    fn charge(&mut self, req: &Request<'_>) {
        if req.who.privileged || self.config.throttle.write_rate == 0 {
            return;
        }
        let charged = if req.flags.contains(Flags::WRITES) {
            req.tx_id == 0
        } else {
            req.ty == MsgType::TransactionEnd && req.payload.first() == Some(&b'T')
        };
        if !charged || self.open_transactions == 0 {
            return;
        }
        let (now, n) = (self.now, self.domains.len());
        let domains = &self.domains;
        self.throttle
            .charge_writes(req.who.domid, 1, now, n, &|d| domains.contains_key(&d));
        self.throttle_log();
    }

    /// Charges an unprivileged domain for the large child listing its
    /// request had built (`bytes`; 0 when served from the cache): one
    /// write per [`LISTING_BYTES_PER_WRITE`], transaction or not, so that
    /// a guest changing a huge directory and listing it again and again
    /// is held to the write rate.
    fn charge_listing(&mut self, who: &Who, bytes: u64) {
        if bytes == 0 || who.privileged || self.config.throttle.write_rate == 0 {
            return;
        }
        let writes = u32::try_from(bytes.div_ceil(LISTING_BYTES_PER_WRITE)).unwrap_or(u32::MAX);
        let (now, n) = (self.now, self.domains.len());
        let domains = &self.domains;
        self.throttle
            .charge_writes(who.domid, writes, now, n, &|d| domains.contains_key(&d));
        self.throttle_log();
    }

    /// Notes the changes an unprivileged domain's request made to the
    /// committed store, for [`Engine::blame_conflict`]; only while some
    /// transaction is open (one started later cannot conflict with it).
    pub(super) fn record_writes(&mut self, who: &Who, events: &[Change]) {
        if who.privileged
            || self.config.throttle.conflict_burst == 0
            || self.open_transactions == 0
            || events.is_empty()
        {
            return;
        }
        let version = self.store.version();
        for e in events {
            self.write_log
                .record(version, who.domid, alloc::sync::Arc::from(e.path.as_str()));
        }
    }

    /// A transaction of `victim`'s, started at store version `since`, failed
    /// with EAGAIN because what a request on `path` saw changed: each other
    /// unprivileged domain that changed it since is charged a conflict
    /// (oxenstored's blame; the privileged domain is free to conflict).
    pub(super) fn blame_conflict(&mut self, victim: &Who, since: u64, path: &str) {
        if self.config.throttle.conflict_burst == 0 {
            return;
        }
        let guilty = self.write_log.writers_since(since, path);
        let (now, n) = (self.now, self.domains.len());
        for d in guilty {
            if d == victim.domid || d == self.config.priv_domid {
                continue;
            }
            let domains = &self.domains;
            self.throttle
                .charge_conflict(d, now, n, &|d| domains.contains_key(&d));
        }
        self.throttle_log();
    }

    /// Keeps [`Engine::open_transactions`] up to date after a request of
    /// `conn`'s, which had `before` open transactions (TRANSACTION_START
    /// and _END change it; O(1)). A connection reset or gone, and a live
    /// update's restore, keep it up to date themselves.
    fn count_transactions(&mut self, conn: ConnId, before: usize) {
        let after = self.conns.get(&conn).map_or(0, |c| c.transactions.len());
        self.open_transactions = (self.open_transactions + after).saturating_sub(before);
    }

    /// `Input::Time`'s part for the throttle.
    pub(super) fn throttle_tick(&mut self, now: Time) {
        self.throttle.tick(now, self.domains.len());
        self.throttle_log();
    }

    fn throttle_log(&mut self) {
        for line in self.throttle.take_log() {
            self.actions.push(Action::Log(line));
        }
    }

    /// When the shell must look again even if nothing happens (hand the
    /// engine the time, on its clock): the earliest time a throttled
    /// domain may resume; `None` if none is throttled.
    pub fn next_wakeup(&self) -> Option<Time> {
        self.throttle.next_wakeup()
    }

    /// The connections whose domains the last `Input::Time` resumed: they
    /// take requests again (the shell reads them).
    pub fn readable_again(&self) -> Vec<ConnId> {
        self.throttle
            .resumed()
            .iter()
            .filter_map(|d| self.domains.get(d).map(|dom| dom.conn))
            .collect()
    }

    /// Whether `domid` is throttled now.
    pub fn throttled(&self, domid: xenring::DomId) -> bool {
        self.throttle.is_paused(domid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry sits at its own type's index, and only the types a
    /// client may not send (and the removed 20) have none.
    #[test]
    fn test_wire_table_is_indexed_by_type() {
        for (i, e) in WIRE.iter().enumerate() {
            let raw = u32::try_from(i).unwrap();
            match e {
                Some(e) => assert_eq!(e.ty.raw(), raw),
                None => assert!(matches!(raw, 15 | 16 | 20), "{raw} has no entry"),
            }
            assert_eq!(
                lookup(raw).map(|e| e.ty),
                MsgType::try_from(raw).ok().filter(|_| e.is_some())
            );
        }
        assert!(lookup(27).is_none());
        assert!(lookup(u32::MAX).is_none());
        for ty in MsgType::ALL {
            let known = !matches!(ty, MsgType::WatchEvent | MsgType::Error);
            assert_eq!(lookup(ty.raw()).is_some(), known, "{ty:?}");
        }
    }
}
