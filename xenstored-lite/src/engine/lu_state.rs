//! The engine's live-update state: its committed nodes, open
//! transactions, watches, global and per-domain quotas, exported to a
//! migration stream's records ([`crate::migration`]) and imported back.
//!
//! Connections themselves (their transports, pending input and output) are
//! the I/O shell's; it registers them first (`Input::Connect`, or
//! [`Engine::restore_ring`] for a domain's ring) and tells the engine how
//! stream connection ids map to its own. Plain-data records become live
//! state only through checks that name the record at fault.
//!
//! # Open transactions
//!
//! A transaction here is a snapshot plus the log of its requests, which the
//! stream cannot carry; the stream has node records instead
//! (`TRANSACTION_DATA`, then `NODE_DATA` with `conn-id`/`tx-id` set and an
//! `access` of read and/or written). So a live update writes, for every
//! node the transaction touched (the targets of its requests, the parents
//! its writes created, the children its removals took), the state it would
//! commit now, and the restored transaction carries those nodes
//! (`Carried`): the writes to apply at commit, and what the committed
//! store must still hold then. See `docs/migration-extension.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use xenring::codec::{split_args, split_first_arg};
use xenring::path::{validate_path, PathKind};
use xenring::{DomId, MsgType, Perm};

use super::ops::{canonical, one_arg, Ctx, Event};
use super::perms::Who;
use super::quota::QuotaKind;
use super::store::{join, parent, Children, Node, Path, Store};
use super::watch::Watch;
use super::{ConnId, ConnKind, Domain, Engine, Input, Transaction};
use crate::migration::{
    Access, DomainData, GlobalQuotaData, NodeData, NodePerm, Quota, Record, TransactionData,
    WatchData, WatchDataExtended, DEPTH_UNLIMITED,
};

/// Why a stream's content cannot become engine state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// A node's path is not a valid xenstore path.
    #[error("record {index}: node path {path:?} is not a valid path")]
    BadNodePath {
        /// Record index in the stream.
        index: usize,
        /// The path.
        path: String,
    },
    /// A node came before its parent (the stream must list parents first).
    #[error("record {index}: node {path:?} comes before its parent")]
    OrphanNode {
        /// Record index.
        index: usize,
        /// The path.
        path: String,
    },
    /// A node without permissions.
    #[error("record {index}: node {path:?} has no permissions")]
    NoPermissions {
        /// Record index.
        index: usize,
        /// The path.
        path: String,
    },
    /// A record names a connection the shell did not restore.
    #[error("record {index}: connection {conn_id} is not in the stream's connections")]
    UnknownConnection {
        /// Record index.
        index: usize,
        /// The stream's connection id.
        conn_id: u32,
    },
    /// A watch whose path or token is unusable.
    #[error("record {index}: watch {path:?} cannot be restored: {reason}")]
    BadWatch {
        /// Record index.
        index: usize,
        /// Its path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A `TRANSACTION_DATA` record with transaction id 0.
    #[error("record {index}: field tx-id of a transaction on connection {conn_id} is 0, which is not a transaction")]
    ZeroTransactionId {
        /// Record index.
        index: usize,
        /// The stream's connection id.
        conn_id: u32,
    },
    /// The same transaction announced twice.
    #[error("record {index}: transaction {tx_id} of connection {conn_id} (fields conn-id, tx-id) was already announced")]
    DuplicateTransaction {
        /// Record index.
        index: usize,
        /// The stream's connection id.
        conn_id: u32,
        /// The transaction.
        tx_id: u32,
    },
    /// A transaction's node before (or without) its `TRANSACTION_DATA`.
    #[error("record {index}: node {path:?} names transaction {tx_id} of connection {conn_id} (fields conn-id, tx-id), which no earlier record announced")]
    UnannouncedTransaction {
        /// Record index.
        index: usize,
        /// The stream's connection id.
        conn_id: u32,
        /// The transaction.
        tx_id: u32,
        /// The node.
        path: String,
    },
    /// A transaction's node whose fields contradict each other.
    #[error("record {index}: node {path:?} of transaction {tx_id} on connection {conn_id}: field {field}: {reason}")]
    BadTransactionNode {
        /// Record index.
        index: usize,
        /// The stream's connection id.
        conn_id: u32,
        /// The transaction.
        tx_id: u32,
        /// The node.
        path: String,
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A transaction writes or deletes the same node twice.
    #[error("record {index}: node {path:?} is written or deleted a second time in transaction {tx_id} on connection {conn_id}")]
    DuplicateTransactionNode {
        /// Record index.
        index: usize,
        /// The stream's connection id.
        conn_id: u32,
        /// The transaction.
        tx_id: u32,
        /// The node.
        path: String,
    },
}

/// What a restore did not take over (kept for the log).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Nodes restored.
    pub nodes: usize,
    /// Watches restored.
    pub watches: usize,
    /// Open transactions restored.
    pub transactions: usize,
    /// Quota names this daemon does not know (ignored).
    pub unknown_quotas: Vec<String>,
}

fn quota_kind(q: &Quota) -> Option<QuotaKind> {
    QuotaKind::from_name(&q.name)
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
    fn of(node: Option<&Arc<Node>>, children: bool) -> Self {
        match node {
            None => Want::Absent,
            Some(n) => Want::Node {
                value: Some(Arc::clone(&n.value)),
                perms: Arc::clone(&n.perms),
                children: children.then(|| n.children.clone()),
            },
        }
    }

    fn holds(&self, node: Option<&Arc<Node>>) -> bool {
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
    pub(super) fn apply(&self, store: &mut Store, events: &mut Vec<Event>) -> bool {
        self.writes.iter().all(|w| apply_write(store, w, events))
    }
}

fn apply_write(store: &mut Store, w: &CarriedWrite, events: &mut Vec<Event>) -> bool {
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
                events.push(Event {
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
            events.push(Event {
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
struct PendingTx<'r> {
    conn: ConnId,
    nodes: Vec<(usize, &'r NodeData)>,
}

/// The path a logged transaction request targets (absolute), and whether
/// it may create parents (WRITE, MKDIR). `None` for requests that failed
/// before looking at the tree (malformed).
fn op_target(ctx: &Ctx<'_>, ty: MsgType, payload: &[u8]) -> Option<(String, bool)> {
    let (raw, special, creates) = match ty {
        MsgType::Read | MsgType::Directory => (one_arg(payload).ok()?, false, false),
        MsgType::GetPerms => (one_arg(payload).ok()?, true, false),
        MsgType::DirectoryPart => (split_args(payload).next()?, false, false),
        MsgType::Write => (split_first_arg(payload)?.0, false, true),
        MsgType::Mkdir => (one_arg(payload).ok()?, false, true),
        MsgType::Rm => (one_arg(payload).ok()?, false, false),
        MsgType::SetPerms => (split_first_arg(payload)?.0, true, false),
        _ => return None,
    };
    canonical(ctx, raw, special)
        .ok()
        .map(|path| (path, creates))
}

/// Stream order of a transaction's nodes: special nodes, then the tree,
/// parents before children.
fn tree_order(a: &str, b: &str) -> std::cmp::Ordering {
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

/// `records` without open transactions (`TRANSACTION_DATA` and the
/// `NODE_DATA` records of a transaction), for a reader that cannot take
/// them. C xenstored is one: it skips `TRANSACTION_DATA` but restores every
/// `NODE_DATA` as a committed node, whatever its `conn-id`, so a stream for
/// it must not carry transactions. They are lost, as with C's own forced
/// live update: the client's next request in one gets ENOENT.
pub fn without_transactions(records: Vec<Record>) -> Vec<Record> {
    records
        .into_iter()
        .filter(|r| match r {
            Record::Transaction(_) => false,
            Record::Node(n) => n.conn_id == 0,
            _ => true,
        })
        .collect()
}

impl Engine {
    /// Registers a domain's ring connection carried over from a stream (the
    /// shell has re-mapped the ring and re-bound its port); `target` is the
    /// record's target domain (`SET_TARGET`), if any.
    pub fn restore_ring(
        &mut self,
        conn: ConnId,
        domid: DomId,
        mfn: u64,
        port: u32,
        target: Option<DomId>,
    ) {
        self.handle(Input::Connect {
            conn,
            kind: ConnKind::Domain(domid),
        });
        self.domains.insert(
            domid,
            Domain {
                conn,
                mfn,
                port,
                shutdown_seen: false,
                target,
                features: 0,
            },
        );
    }

    /// The target domain of a domain (`SET_TARGET`), for a stream's
    /// connection records.
    pub fn domain_target(&self, domid: DomId) -> Option<DomId> {
        self.domains.get(&domid).and_then(|d| d.target)
    }

    /// The ring frame and remote port a domain was introduced with.
    pub fn domain_ring(&self, domid: DomId) -> Option<(u64, u32)> {
        self.domains.get(&domid).map(|d| (d.mfn, d.port))
    }

    /// Takes over the nodes, open transactions, watches and quotas of a
    /// stream. `conns` maps the stream's connection ids to connections
    /// already registered. Replaces the store; restored transactions join
    /// their connection's (the next `TRANSACTION_START` gives a higher id);
    /// on error nothing is changed.
    pub fn restore_records(
        &mut self,
        records: &[Record],
        conns: &BTreeMap<u32, ConnId>,
    ) -> Result<RestoreReport, RestoreError> {
        let mut store = Store::new(self.config.priv_domid);
        let mut report = RestoreReport::default();
        let mut watches = Vec::new();
        let mut quotas = self.config.quotas.clone();
        let mut domain_quotas = self.domain_quotas.clone();
        let mut features = Vec::new();
        let mut pending: BTreeMap<(u32, u32), PendingTx<'_>> = BTreeMap::new();
        for (index, record) in records.iter().enumerate() {
            match record {
                Record::Node(node) if node.conn_id != 0 => {
                    let tx = pending
                        .get_mut(&(node.conn_id, node.tx_id))
                        .ok_or_else(|| RestoreError::UnannouncedTransaction {
                            index,
                            conn_id: node.conn_id,
                            tx_id: node.tx_id,
                            path: node.path.clone(),
                        })?;
                    tx.nodes.push((index, node));
                }
                Record::Node(node) => {
                    Self::restore_node(&mut store, index, node)?;
                    report.nodes += 1;
                }
                Record::Transaction(TransactionData { conn_id, tx_id }) => {
                    let conn = conns
                        .get(conn_id)
                        .copied()
                        .filter(|c| self.conns.contains_key(c))
                        .ok_or(RestoreError::UnknownConnection {
                            index,
                            conn_id: *conn_id,
                        })?;
                    if *tx_id == 0 {
                        return Err(RestoreError::ZeroTransactionId {
                            index,
                            conn_id: *conn_id,
                        });
                    }
                    if pending.contains_key(&(*conn_id, *tx_id)) {
                        return Err(RestoreError::DuplicateTransaction {
                            index,
                            conn_id: *conn_id,
                            tx_id: *tx_id,
                        });
                    }
                    pending.insert(
                        (*conn_id, *tx_id),
                        PendingTx {
                            conn,
                            nodes: Vec::new(),
                        },
                    );
                }
                Record::Watch(WatchData {
                    conn_id,
                    wpath,
                    token,
                }) => {
                    watches.push(self.restore_watch(index, conns, *conn_id, wpath, token, None)?);
                }
                Record::WatchExtended(WatchDataExtended {
                    conn_id,
                    wpath,
                    token,
                    depth,
                }) => {
                    let depth = (*depth != DEPTH_UNLIMITED).then_some(u32::from(*depth));
                    watches.push(self.restore_watch(index, conns, *conn_id, wpath, token, depth)?);
                }
                Record::GlobalQuota(GlobalQuotaData {
                    dom_quota,
                    glob_quota,
                }) => {
                    for q in dom_quota.iter().chain(glob_quota) {
                        match quota_kind(q) {
                            Some(kind) => quotas.set_hard(kind, u64::from(q.value)),
                            None => report.unknown_quotas.push(q.name.clone()),
                        }
                    }
                }
                Record::Domain(DomainData {
                    domain_id,
                    features: f,
                    quota,
                }) => {
                    features.push((*domain_id, *f));
                    for q in quota {
                        match quota_kind(q) {
                            Some(kind) => {
                                domain_quotas
                                    .entry(*domain_id)
                                    .or_default()
                                    .hard
                                    .insert(kind, u64::from(q.value));
                            }
                            None => report.unknown_quotas.push(q.name.clone()),
                        }
                    }
                }
                Record::Global(_) | Record::Connection(_) => {}
            }
        }
        // Transactions last: they depend on the whole committed store.
        let mut transactions = Vec::with_capacity(pending.len());
        for ((conn_id, tx_id), tx) in &pending {
            let restored = Self::restore_transaction(&store, *conn_id, *tx_id, tx)?;
            transactions.push((tx.conn, *tx_id, restored));
        }
        self.store = store;
        report.transactions = transactions.len();
        for (conn, tx_id, tx) in transactions {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.transactions.insert(tx_id, tx);
                c.next_tx = c.next_tx.max(tx_id.wrapping_add(1));
            }
        }
        self.config.quotas = quotas;
        self.domain_quotas = domain_quotas;
        for (domid, f) in features {
            if let Some(dom) = self.domains.get_mut(&domid) {
                dom.features = f;
            }
        }
        report.watches = watches.len();
        for w in watches {
            self.watches.add(w);
        }
        Ok(report)
    }

    /// A committed node (`conn-id` 0: `tx-id` and `access` are ignored, as
    /// the spec says).
    fn restore_node(store: &mut Store, index: usize, node: &NodeData) -> Result<(), RestoreError> {
        let bad = || RestoreError::BadNodePath {
            index,
            path: node.path.clone(),
        };
        match validate_path(node.path.as_bytes()).map_err(|_| bad())? {
            PathKind::Relative => return Err(bad()),
            PathKind::Absolute if node.path != "/" => {
                let p = parent(&node.path).ok_or_else(bad)?;
                if store.get(p).is_none() {
                    return Err(RestoreError::OrphanNode {
                        index,
                        path: node.path.clone(),
                    });
                }
            }
            _ => {}
        }
        if node.perms.is_empty() {
            return Err(RestoreError::NoPermissions {
                index,
                path: node.path.clone(),
            });
        }
        let perms: Vec<Perm> = node.perms.iter().map(|p| p.perm).collect();
        store.put_node(
            Arc::from(node.path.as_str()),
            Arc::from(node.value.as_slice()),
            Arc::from(perms),
        );
        Ok(())
    }

    /// Rebuilds one transaction from its node records, on the restored
    /// committed store: its view is that store with the written and
    /// deleted nodes applied; what it read, and the state of what it
    /// wrote, become conditions on the committed store at commit.
    fn restore_transaction(
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
        Ok(Transaction {
            base_version: committed.version(),
            base: committed.clone(),
            store: view,
            ops: Vec::new(),
            events,
            writes: carried.writes.len() as u64,
            carried,
        })
    }

    fn restore_watch(
        &self,
        index: usize,
        conns: &BTreeMap<u32, ConnId>,
        conn_id: u32,
        wpath: &str,
        token: &[u8],
        depth: Option<u32>,
    ) -> Result<Watch, RestoreError> {
        let conn = *conns
            .get(&conn_id)
            .ok_or(RestoreError::UnknownConnection { index, conn_id })?;
        let bad = |reason| RestoreError::BadWatch {
            index,
            path: wpath.to_string(),
            reason,
        };
        let token = String::from_utf8(token.to_vec()).map_err(|_| bad("token is not UTF-8"))?;
        let home = self
            .home(conn)
            .ok_or(RestoreError::UnknownConnection { index, conn_id })?;
        let (abs, relative_prefix) =
            match validate_path(wpath.as_bytes()).map_err(|_| bad("invalid path"))? {
                PathKind::Absolute | PathKind::Special => (wpath.to_string(), None),
                PathKind::Relative => (format!("{home}/{wpath}"), Some(format!("{home}/"))),
            };
        Ok(Watch {
            conn,
            path: wpath.to_string(),
            abs,
            token,
            depth,
            relative_prefix,
        })
    }

    /// The engine's records for a stream: committed nodes (special nodes,
    /// then the tree parents first), the open transactions of the
    /// connections in `conns` (engine id → stream id), each a
    /// `TRANSACTION_DATA` record followed by its nodes, their watches,
    /// global and per-domain quotas.
    pub fn export_records(&self, conns: &BTreeMap<ConnId, u32>) -> Vec<Record> {
        let mut out = Vec::new();
        let walk = self.store.parents_first();
        let (specials, tree): (Vec<_>, Vec<_>) =
            walk.into_iter().partition(|(p, _)| p.starts_with('@'));
        for (path, node) in specials.into_iter().chain(tree) {
            out.push(Record::Node(NodeData {
                conn_id: 0,
                tx_id: 0,
                access: Access::NONE,
                perms: node.perms.iter().map(|p| NodePerm::new(*p)).collect(),
                path: path.to_string(),
                value: node.value.to_vec(),
            }));
        }
        for (&conn, &conn_id) in conns {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let who = self.who(c);
            for (&tx_id, tx) in &c.transactions {
                out.push(Record::Transaction(TransactionData { conn_id, tx_id }));
                out.extend(self.transaction_nodes(conn, who, conn_id, tx_id, tx));
            }
        }
        for w in self.watches.all() {
            let Some(&conn_id) = conns.get(&w.conn) else {
                continue;
            };
            let token = w.token.as_bytes().to_vec();
            out.push(match w.depth {
                None => Record::Watch(WatchData {
                    conn_id,
                    wpath: w.path.clone(),
                    token,
                }),
                Some(d) => Record::WatchExtended(WatchDataExtended {
                    conn_id,
                    wpath: w.path.clone(),
                    token,
                    depth: u16::try_from(d).unwrap_or(DEPTH_UNLIMITED - 1),
                }),
            });
        }
        let to_quota = |kind: QuotaKind, value: u64| Quota {
            name: kind.name().to_string(),
            value: u32::try_from(value).unwrap_or(u32::MAX),
        };
        out.push(Record::GlobalQuota(GlobalQuotaData {
            dom_quota: QuotaKind::ALL
                .iter()
                .map(|&q| to_quota(q, self.config.quotas.hard(q)))
                .collect(),
            glob_quota: Vec::new(),
        }));
        for (&domid, dom) in &self.domains {
            out.push(Record::Domain(DomainData {
                domain_id: domid,
                features: dom.features,
                quota: self
                    .domain_quotas
                    .get(&domid)
                    .map(|q| q.hard.iter().map(|(&k, &v)| to_quota(k, v)).collect())
                    .unwrap_or_default(),
            }));
        }
        out
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
    fn transaction_nodes(
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

#[cfg(test)]
#[path = "lu_state_tests.rs"]
pub(super) mod tests;
