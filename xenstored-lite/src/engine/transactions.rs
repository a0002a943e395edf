//! Transactions (C's transaction.c): TRANSACTION_START and _END, running a
//! request in a transaction's snapshot, committing it (a swap when the
//! store has not moved, else a re-run of its requests that must give the
//! replies its client already received), and what a live update carries of
//! an open transaction.
//!
//! # Across a live update
//!
//! A transaction here is a snapshot plus the log of its requests, which the
//! stream cannot carry; the stream has node records instead
//! (`TRANSACTION_DATA`, then `NODE_DATA` with `conn-id`/`tx-id` set and an
//! `access` of read and/or written). So a live update writes, for every
//! node the transaction touched (the targets of its requests, the parents
//! its writes created, the children its removals took), the state it would
//! commit now ([`Engine::transaction_nodes`]), and the restored transaction
//! carries those nodes ([`Carried`]): the writes to apply at commit, and
//! what the committed store must still hold then. See
//! `docs/migration-extension.md`.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use xenring::path::{validate_path, PathKind};
use xenring::{MsgType, Perm, XsErrno};

use super::account;
use super::dispatch::{store_op, Flags, Reply, Request};
use super::lu_state::RestoreError;
use super::ops::{self, canonical, one_arg, Change, Ctx, OpResult};
use super::perms::Who;
use super::quota::{within, QuotaKind};
use super::store::{join, parent, Children, Node, Path, Store};
use super::{ConnId, Engine};
use crate::migration::{Access, NodeData, NodePerm, Record};

/// A request run in a transaction, and the reply its client received.
pub(super) type TxOp = (MsgType, Arc<[u8]>, Result<Vec<u8>, XsErrno>);

/// Bytes a logged request is charged beyond its payload and reply: its
/// entry in the log and in the index of reads, and a watch event's
/// bookkeeping.
const LOG_ENTRY_OVERHEAD: u64 = 64;

/// Bytes a pending watch event is charged beyond its paths.
const EVENT_OVERHEAD: usize = 32;

/// An open transaction.
#[derive(Debug, Clone)]
pub(super) struct Transaction {
    /// The committed store's version when the transaction started (or was
    /// restored by a live update): if it is still current, commit swaps.
    pub(super) base_version: u64,
    /// The committed store at that moment (a cheap persistent clone): what
    /// the transaction saw of the nodes it did not write, which a live
    /// update writes out when the transaction already conflicts.
    pub(super) base: Store,
    /// The transaction's own view.
    pub(super) store: Store,
    /// Requests run in it since it started (or was restored), but for
    /// reads that repeat one logged since its last write request, with the
    /// same reply: re-run at commit, they could not answer otherwise.
    pub(super) ops: Vec<TxOp>,
    /// The reads logged since its last write request, by payload: the
    /// indices in `ops` of each (what finds a repeated read).
    pub(super) reads: BTreeMap<Arc<[u8]>, Vec<usize>>,
    /// The watch events its requests would fire, fired at commit.
    pub(super) events: Vec<Change>,
    /// Requests logged so far, and the writes a live update carried (the
    /// transaction-nodes quota: C counts the nodes a transaction accessed,
    /// reads too).
    pub(super) logged: u64,
    /// Bytes charged to its domain for its log (payloads, replies, watch
    /// events) and for the nodes its writes put in its view (`account`;
    /// the nodes only while a memory quota applies to it).
    pub(super) log_bytes: u64,
    /// Of those, the nodes its writes put in its view, which the view's
    /// own accounting already shows to a write in it.
    pub(super) view_bytes: u64,
    /// What a transaction restored from a live update brought with it (its
    /// writes and the committed state they depend on); empty otherwise.
    pub(super) carried: Carried,
}

impl Transaction {
    /// Bytes charged to its domain for it (`account`).
    pub(super) fn charged(&self) -> u64 {
        self.log_bytes
    }

    /// Whether a read of type `ty` with this payload and result is logged
    /// already since the last write request (so need not be again).
    fn repeats(&self, ty: MsgType, payload: &[u8], result: &OpResult) -> bool {
        self.reads.get(payload).is_some_and(|at| {
            at.iter().any(|&i| {
                self.ops
                    .get(i)
                    .is_some_and(|(t, _, answered)| *t == ty && answered == result)
            })
        })
    }
}

/// Bytes one logged request is charged: its payload, its reply and the
/// watch events it left pending ([`LOG_ENTRY_OVERHEAD`] and
/// [`EVENT_OVERHEAD`] for what holds them).
fn entry_bytes(payload: &[u8], result: &OpResult, events: &[Change]) -> u64 {
    let reply = result.as_ref().map_or(0, Vec::len);
    let events: usize = events
        .iter()
        .map(|e| {
            e.path.len()
                + e.removed.iter().map(|(p, _)| p.len()).sum::<usize>()
                + (e.removed.len() + 1) * EVENT_OVERHEAD
        })
        .sum();
    (payload.len() + reply + events) as u64 + LOG_ENTRY_OVERHEAD
}

impl Engine {
    /// `TRANSACTION_START`: a new transaction on a snapshot of the store.
    pub(super) fn transaction_start(&mut self, req: &Request<'_>) -> Reply {
        let (conn, who, hdr) = (req.conn, req.who, req.hdr);
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
                reads: BTreeMap::new(),
                events: Vec::new(),
                logged: 0,
                log_bytes: 0,
                view_bytes: 0,
                carried: Carried::default(),
            },
        );
        let mut out = id.to_string().into_bytes();
        out.push(0);
        Ok(Some(out))
    }

    /// `TRANSACTION_END`: `T` commits, `F` abandons.
    pub(super) fn transaction_end(&mut self, req: &Request<'_>) -> Reply {
        let commit = match one_arg(req.payload)? {
            b"T" => true,
            b"F" => false,
            _ => return Err(XsErrno::EINVAL),
        };
        let tx = self
            .conns
            .get_mut(&req.conn)
            .and_then(|c| c.transactions.remove(&req.hdr.tx_id))
            .ok_or(XsErrno::ENOENT)?;
        let done = if commit {
            self.commit(req.conn, req.who, tx)
        } else {
            Ok(())
        };
        // What the transaction was charged is the domain's no more.
        self.soft_memory(req.who.domid);
        done?;
        Ok(Some(b"OK\0".to_vec()))
    }

    /// A request on the tree in transaction `req.tx_id`: run on its view,
    /// logged for the re-run at commit, its events kept until then.
    ///
    /// What a transaction keeps is bounded and charged: every logged
    /// request counts against the transaction-nodes quota (ENOSPC), and
    /// its bytes (payload, reply, events, the nodes a write put in the
    /// view) are charged to the domain's memory account (ENOMEM past the
    /// quota, the view left as it was). A read that repeats one logged
    /// since the last write request, with the same reply, is answered and
    /// not logged again: nothing it depends on can have changed in
    /// between, so its re-run at commit gives what the first one's does.
    pub(super) fn in_transaction(
        &mut self,
        req: &Request<'_>,
        ctx: &Ctx<'_>,
        op: ops::Op,
    ) -> Reply {
        let who = req.who;
        let (tx_limit, memory_limit) = if who.privileged {
            (0, 0)
        } else {
            (
                self.limit(who.domid, QuotaKind::TransactionNodes),
                self.limit(who.domid, QuotaKind::Memory),
            )
        };
        let used = if memory_limit == 0 {
            0
        } else {
            self.usage(who.domid).total()
        };
        let c = self.conns.get_mut(&req.conn).ok_or(XsErrno::EINVAL)?;
        let tx = c.transactions.get_mut(&req.tx_id).ok_or(XsErrno::ENOENT)?;
        let writes = req.flags.contains(Flags::WRITES);
        if writes && !within(tx_limit, tx.logged + 1) {
            return Err(XsErrno::ENOSPC);
        }
        // A write in the view is checked against the view's own accounting,
        // which shows the nodes this transaction wrote: the rest of what
        // the domain is charged is what is left of its quota.
        let mut ctx = *ctx;
        if memory_limit != 0 {
            let besides = used
                .saturating_sub(self.store.account(who.domid).memory)
                .saturating_sub(tx.view_bytes);
            ctx.limits.memory = account::node_limit(memory_limit, besides);
        }
        let charged = memory_limit != 0;
        let before = (writes && charged).then(|| tx.store.clone());
        let mut events = Vec::new();
        let result = op(&mut tx.store, &ctx, req.payload, &mut events);
        if !writes && tx.repeats(req.ty, req.payload, &result) {
            return result.map(Some);
        }
        if !writes && !within(tx_limit, tx.logged + 1) {
            return Err(XsErrno::ENOSPC);
        }
        // (Not looked up where nothing is checked: the privileged domain,
        // or no memory quota.)
        let view: u64 = if charged {
            events
                .iter()
                .filter_map(|e| tx.store.get(&e.path).map(|n| (e, n)))
                .map(|(e, n)| Node::cost(&e.path, &n.value, &n.perms))
                .sum()
        } else {
            0
        };
        let charge = entry_bytes(req.payload, &result, &events).saturating_add(view);
        if charged && !within(memory_limit, used.saturating_add(charge)) {
            if let Some(before) = before {
                tx.store = before;
            }
            return Err(account::MEMORY_QUOTA);
        }
        tx.logged += 1;
        tx.log_bytes = tx.log_bytes.saturating_add(charge);
        tx.view_bytes = tx.view_bytes.saturating_add(view);
        let payload: Arc<[u8]> = Arc::from(req.payload);
        if writes {
            tx.reads.clear();
        } else {
            tx.reads
                .entry(Arc::clone(&payload))
                .or_default()
                .push(tx.ops.len());
        }
        tx.ops.push((req.ty, payload, result.clone()));
        tx.events.extend(events);
        if charged {
            self.soft_memory(who.domid);
        }
        result.map(Some)
    }

    pub(super) fn commit(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: Transaction,
    ) -> Result<(), XsErrno> {
        let (store, events) = if self.unmoved(&tx) {
            (tx.store, tx.events)
        } else {
            match self.replay_or_conflict(conn, who, &tx) {
                Ok(done) => done,
                Err(Conflict { path }) => {
                    if let Some(path) = path {
                        self.blame_conflict(&who, tx.base_version, &path);
                    }
                    return Err(XsErrno::EAGAIN);
                }
            }
        };
        self.store = store;
        self.record_writes(&who, &events);
        for e in &events {
            self.fire(e);
        }
        self.check_soft_memory(&events);
        Ok(())
    }

    /// Whether the committed store is still the one `tx` started from (or
    /// was restored on), so that committing is swapping its copy in. A
    /// restored transaction that already conflicted when it was written
    /// out (what it read had changed) never is.
    pub(super) fn unmoved(&self, tx: &Transaction) -> bool {
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
    pub(super) fn replay(
        &self,
        conn: ConnId,
        who: Who,
        tx: &Transaction,
    ) -> Result<(Store, Vec<Change>), XsErrno> {
        self.replay_or_conflict(conn, who, tx)
            .map_err(|_| XsErrno::EAGAIN)
    }

    /// [`Engine::replay`], telling on a conflict the path of the first
    /// request whose reply changed (whom to blame).
    fn replay_or_conflict(
        &self,
        conn: ConnId,
        who: Who,
        tx: &Transaction,
    ) -> Result<(Store, Vec<Change>), Conflict> {
        let mut scratch = self.store.clone();
        let mut events = Vec::new();
        if !tx.carried.holds(&self.store) || !tx.carried.apply(&mut scratch, &mut events) {
            return Err(Conflict { path: None });
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
                let path = op_target(&ctx, *ty, payload).map(|(path, _)| path);
                return Err(Conflict { path });
            }
        }
        Ok((scratch, events))
    }

    /// The store committing `tx` now would leave, or `None` if it would
    /// fail with EAGAIN (for a live update's records).
    pub(super) fn outcome(&self, conn: ConnId, who: Who, tx: &Transaction) -> Option<Store> {
        if self.unmoved(tx) {
            Some(tx.store.clone())
        } else {
            self.replay(conn, who, tx).ok().map(|(store, _)| store)
        }
    }

    /// Rebuilds one transaction from its node records, on the restored
    /// committed store: its view is that store with the written and
    /// deleted nodes applied; what it read, and the state of what it
    /// wrote, become conditions on the committed store at commit.
    pub(super) fn restore_transaction(
        committed: &Store,
        conn_id: u32,
        tx_id: u32,
        tx: &PendingTx<'_>,
    ) -> Result<Transaction, RestoreError> {
        let mut view = committed.clone();
        let mut events = Vec::new();
        let mut carried = Carried::default();
        let mut written: BTreeSet<&str> = BTreeSet::new();
        let writes_below = |path: &str| {
            let prefix = format!("{}/", path.trim_end_matches('/'));
            tx.nodes.iter().any(|(_, n)| {
                n.access.written() && n.path.len() > prefix.len() && n.path.starts_with(&prefix)
            })
        };
        for &(index, node) in &tx.nodes {
            let path = node.path.as_str();
            let bad = |field, reason| RestoreError::BadTransactionNode {
                index,
                conn_id,
                tx_id,
                path: node.path.clone(),
                field,
                reason,
            };
            let kind = validate_path(path.as_bytes()).map_err(|_| RestoreError::BadNodePath {
                index,
                path: node.path.clone(),
            })?;
            if kind == PathKind::Relative {
                return Err(RestoreError::BadNodePath {
                    index,
                    path: node.path.clone(),
                });
            }
            let key: Path = Arc::from(path);
            let state = if node.perms.is_empty() {
                if node.access.written() {
                    return Err(bad("perm-count", "a written node needs permissions"));
                }
                if !node.value.is_empty() {
                    return Err(bad("value-len", "a node without permissions has no value"));
                }
                None
            } else {
                if node.access == Access::NONE {
                    return Err(bad(
                        "access",
                        "a transaction's node must be read or written",
                    ));
                }
                let perms: Vec<Perm> = node.perms.iter().map(|p| p.perm).collect();
                Some((Arc::from(node.value.as_slice()), Arc::from(perms)))
            };
            let deleted = state.is_none() && node.access == Access::NONE;
            if !node.access.written() && !deleted {
                // Read only: the committed store must still show what the
                // transaction saw ("read, absent" without permissions), and
                // the children it had at the restore.
                let want = match state {
                    None => Want::Absent,
                    Some((value, perms)) => Want::Node {
                        value: Some(value),
                        perms,
                        children: committed.get(path).map(|n| n.children.clone()),
                    },
                };
                carried.expect.push(Expect {
                    path: key,
                    want,
                    read: true,
                });
                continue;
            }
            if deleted && (kind == PathKind::Special || path == "/") {
                return Err(bad("perm-count", "this node cannot be deleted"));
            }
            if !written.insert(path) {
                return Err(RestoreError::DuplicateTransactionNode {
                    index,
                    conn_id,
                    tx_id,
                    path: node.path.clone(),
                });
            }
            // Written or deleted: the committed node must stay as it is now,
            // and a node created below an existing parent needs that
            // parent's permissions unchanged (they allowed the creation).
            let before = committed.get(path);
            carried.expect.push(Expect {
                path: Arc::clone(&key),
                want: Want::of(before, false),
                read: false,
            });
            if let (None, Some(p)) = (before, parent(path)) {
                if let Some(pn) = committed.get(p) {
                    carried.expect.push(Expect {
                        path: Arc::from(p),
                        want: Want::Node {
                            value: None,
                            perms: Arc::clone(&pn.perms),
                            children: None,
                        },
                        read: false,
                    });
                }
            }
            let implicit = !node.access.read() && before.is_none() && writes_below(path);
            let w = CarriedWrite {
                path: key,
                node: state,
                read: node.access.read(),
                event: !implicit,
            };
            if !apply_write(&mut view, &w, &mut events) {
                return Err(RestoreError::OrphanNode {
                    index,
                    path: node.path.clone(),
                });
            }
            carried.writes.push(w);
        }
        // What the carried writes put in the view is charged as a write's.
        let view_bytes: u64 = carried
            .writes
            .iter()
            .filter_map(|w| w.node.as_ref().map(|(v, p)| Node::cost(&w.path, v, p)))
            .sum();
        Ok(Transaction {
            base_version: committed.version(),
            base: committed.clone(),
            store: view,
            ops: Vec::new(),
            reads: BTreeMap::new(),
            events,
            logged: carried.writes.len() as u64,
            log_bytes: view_bytes,
            view_bytes,
            carried,
        })
    }

    /// The node records of one open transaction.
    ///
    /// The nodes it touched: the targets of its requests (and of the
    /// carried records, for a transaction that came from a live update
    /// itself), the parents its writes created, and the children its
    /// removals took. If it would commit now, each is written as committing
    /// would leave it: read, plus written where that differs from the
    /// committed store; deleted (no permissions, no access) where it would
    /// be gone. If it already conflicts, its view is written against what
    /// it saw at its start, so that what it read is what it saw then, and
    /// the restored transaction conflicts too; where no read node shows the
    /// conflict (a parent's permissions or a quota changed a reply), a
    /// "read, absent" record for `/`, which never holds, keeps it failing.
    pub(super) fn transaction_nodes(
        &self,
        conn: ConnId,
        who: Who,
        conn_id: u32,
        tx_id: u32,
        tx: &Transaction,
    ) -> Vec<Record> {
        let home = self.home(conn);
        let ctx = Ctx {
            who,
            limits: self.limits(&who),
            home: home.as_deref(),
        };
        // Path → whether it was a request's target (read bit).
        let mut touched: BTreeMap<String, bool> = BTreeMap::new();
        for e in tx.carried.expect.iter().filter(|e| e.read) {
            touched.insert(e.path.to_string(), true);
        }
        for w in &tx.carried.writes {
            *touched.entry(w.path.to_string()).or_default() |= w.read;
        }
        let mut creating = Vec::new();
        for (ty, payload, _) in &tx.ops {
            if let Some((path, creates)) = op_target(&ctx, *ty, payload) {
                if creates {
                    creating.push(path.clone());
                }
                touched.insert(path, true);
            }
        }
        let outcome = self.outcome(conn, who, tx);
        let conflicts = outcome.is_none();
        let (result, reference) = match outcome {
            Some(result) => (result, &self.store),
            None => (tx.store.clone(), &tx.base),
        };
        for path in &creating {
            let mut at = parent(path);
            while let Some(p) = at.filter(|p| created_here(&result, reference, p)) {
                touched.entry(p.to_string()).or_default();
                at = parent(p);
            }
        }
        let mut taken = Vec::new();
        for path in touched.keys() {
            if let (Some(now), Some(before)) = (result.get(path), reference.get(path)) {
                for child in before.children.iter().filter(|c| !now.children.contains(c)) {
                    taken.push(join(path, child));
                }
            }
        }
        for path in taken {
            touched.entry(path).or_default();
        }
        let mut paths: Vec<(&String, &bool)> = touched.iter().collect();
        paths.sort_by(|a, b| tree_order(a.0, b.0));
        let mut out = Vec::with_capacity(paths.len() + 1);
        let mut shows_conflict = false;
        for (path, &target) in paths {
            let now = result.get(path.as_str());
            let before = reference.get(path.as_str());
            let changed = match (now, before) {
                (Some(n), Some(b)) => n.value != b.value || n.perms != b.perms,
                (None, None) => false,
                _ => true,
            };
            let access = match (now, changed, target) {
                (None, true, _) => Access::NONE,
                (_, false, true) => Access::READ,
                (_, false, false) => continue,
                (Some(_), true, true) => Access::READ_WRITTEN,
                (Some(_), true, false) => Access::WRITTEN,
            };
            if access == Access::READ {
                shows_conflict |= !Want::of(now, false).holds(self.store.get(path.as_str()));
            }
            out.push(node_record(conn_id, tx_id, access, path, now));
        }
        if conflicts && !shows_conflict {
            out.push(node_record(conn_id, tx_id, Access::READ, "/", None));
        }
        out
    }
}

/// Why a commit fails with EAGAIN.
#[derive(Debug)]
struct Conflict {
    /// The path of the first re-run request whose reply changed (`None`:
    /// the committed state a live update's transaction depends on did).
    path: Option<String>,
}

/// A node's state that a restored transaction depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// The node must not exist.
    Absent,
    /// The node must exist with these permissions, and this value and
    /// these children where given.
    Node {
        value: Option<Arc<[u8]>>,
        perms: Arc<[Perm]>,
        children: Option<Children>,
    },
}

impl Want {
    /// The node's value and permissions (and children, if `children`) as
    /// they are in a store.
    pub(super) fn of(node: Option<&Arc<Node>>, children: bool) -> Self {
        match node {
            None => Want::Absent,
            Some(n) => Want::Node {
                value: Some(Arc::clone(&n.value)),
                perms: Arc::clone(&n.perms),
                children: children.then(|| n.children.clone()),
            },
        }
    }

    pub(super) fn holds(&self, node: Option<&Arc<Node>>) -> bool {
        match (self, node) {
            (Want::Absent, None) => true,
            (
                Want::Node {
                    value,
                    perms,
                    children,
                },
                Some(n),
            ) => {
                value.as_ref().is_none_or(|v| **v == *n.value)
                    && **perms == *n.perms
                    && children.as_ref().is_none_or(|c| *c == n.children)
            }
            _ => false,
        }
    }
}

/// One condition on the committed store at commit.
#[derive(Debug, Clone)]
struct Expect {
    path: Path,
    want: Want,
    /// It comes from a node record the transaction read (written out as
    /// such again by a later live update); the others guard its writes.
    read: bool,
}

/// A node's value and permissions.
type NodeState = (Arc<[u8]>, Arc<[Perm]>);

/// A node a restored transaction wrote or deleted.
#[derive(Debug, Clone)]
struct CarriedWrite {
    path: Path,
    /// The new value and permissions; `None`: removed with its subtree.
    node: Option<NodeState>,
    /// The record had the read bit (the node was a request's target).
    read: bool,
    /// Its change fires watches at commit: all but the parents a write
    /// below them created (written, not read, created, with a written node
    /// below), which fire none of their own, as with WRITE.
    event: bool,
}

/// What a transaction restored from a live update brought with it: the
/// nodes it wrote, applied at commit before the requests it ran since the
/// restore are re-run, and the committed state those depend on. Empty for
/// a transaction started in this process.
#[derive(Debug, Clone, Default)]
pub(super) struct Carried {
    expect: Vec<Expect>,
    writes: Vec<CarriedWrite>,
}

impl Carried {
    /// Whether the committed store still holds what the carried nodes
    /// depend on: the values, permissions and children the transaction
    /// read, and, for the nodes it wrote or deleted, their state at the
    /// restore and the permissions of the parents it created nodes under.
    pub(super) fn holds(&self, store: &Store) -> bool {
        self.expect.iter().all(|e| e.want.holds(store.get(&e.path)))
    }

    /// Applies the carried writes and deletions to `store`, in stream
    /// order, with their watch events; `false` if a written node's parent
    /// is missing (which [`holds`](Self::holds) rules out).
    pub(super) fn apply(&self, store: &mut Store, events: &mut Vec<Change>) -> bool {
        self.writes.iter().all(|w| apply_write(store, w, events))
    }
}

fn apply_write(store: &mut Store, w: &CarriedWrite, events: &mut Vec<Change>) -> bool {
    match &w.node {
        Some((value, perms)) => {
            if parent(&w.path).is_some_and(|p| store.get(p).is_none()) {
                return false;
            }
            let old = store.get(&w.path).map(|n| Arc::clone(&n.perms));
            store.put_node(Arc::clone(&w.path), Arc::clone(value), Arc::clone(perms));
            if w.event {
                let mut seen_by = vec![Arc::clone(perms)];
                if let Some(old) = old.filter(|o| o != perms) {
                    seen_by.insert(0, old);
                }
                events.push(Change {
                    path: w.path.to_string(),
                    perms: seen_by,
                    removed: Vec::new(),
                });
            }
        }
        None => {
            let Some(node) = store.get(&w.path) else {
                return true;
            };
            let perms = Arc::clone(&node.perms);
            let removed = store.remove_tree(&w.path);
            events.push(Change {
                path: w.path.to_string(),
                perms: vec![perms],
                removed: removed
                    .into_iter()
                    .map(|(p, n)| (p.to_string(), Arc::clone(&n.perms)))
                    .collect(),
            });
        }
    }
    true
}

/// Whether the transaction created `path`: it is in its result and was not
/// in the store it started from.
fn created_here(result: &Store, reference: &Store, path: &str) -> bool {
    result.get(path).is_some() && reference.get(path).is_none()
}

/// A transaction's records being read from a stream.
pub(super) struct PendingTx<'r> {
    /// The connection it belongs to.
    pub(super) conn: ConnId,
    /// Its node records, with their index in the stream.
    pub(super) nodes: Vec<(usize, &'r NodeData)>,
}

/// The path a logged transaction request targets (absolute), and whether
/// it may create parents (WRITE, MKDIR). `None` for requests that failed
/// before looking at the tree (malformed).
fn op_target(ctx: &Ctx<'_>, ty: MsgType, payload: &[u8]) -> Option<(String, bool)> {
    let (_, target) = store_op(ty)?;
    let raw = (target.path)(payload)?;
    canonical(ctx, raw, target.special)
        .ok()
        .map(|path| (path.into_owned(), target.creates))
}

/// Stream order of a transaction's nodes: special nodes, then the tree,
/// parents before children.
fn tree_order(a: &str, b: &str) -> core::cmp::Ordering {
    (!a.starts_with('@'))
        .cmp(&!b.starts_with('@'))
        .then_with(|| a.split('/').cmp(b.split('/')))
}

fn node_record(
    conn_id: u32,
    tx_id: u32,
    access: Access,
    path: &str,
    node: Option<&Arc<Node>>,
) -> Record {
    Record::Node(NodeData {
        conn_id,
        tx_id,
        access,
        perms: node
            .map(|n| n.perms.iter().map(|p| NodePerm::new(*p)).collect())
            .unwrap_or_default(),
        path: path.to_string(),
        value: node.map(|n| n.value.to_vec()).unwrap_or_default(),
    })
}
