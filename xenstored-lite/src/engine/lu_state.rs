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
//! Open transactions travel as node records; what is written of one and
//! how it is rebuilt is the transactions' room's
//! (`Engine::transaction_nodes`, `Engine::restore_transaction`).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use xenring::path::{validate_path, PathKind};
use xenring::Perm;

use super::quota::QuotaKind;
use super::store::{parent, Store};
use super::transactions::PendingTx;
use super::{ConnId, Engine};
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
        // Store images applied before take the place of the stream's nodes.
        let mut store = self
            .preloaded
            .clone()
            .unwrap_or_else(|| Store::new(self.config.priv_domid));
        let mut report = RestoreReport::default();
        if self.preloaded.is_some() {
            report.nodes = store.len();
        }
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
        self.preloaded = None;
        report.transactions = transactions.len();
        for (conn, tx_id, tx) in transactions {
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.transactions.insert(tx_id, tx).is_none() {
                    self.open_transactions += 1;
                }
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

    /// The engine's records for a stream: committed nodes (special nodes,
    /// then the tree parents first), the open transactions of the
    /// connections in `conns` (engine id → stream id), each a
    /// `TRANSACTION_DATA` record followed by its nodes, their watches,
    /// global and per-domain quotas.
    pub fn export_records(&self, conns: &BTreeMap<ConnId, u32>) -> Vec<Record> {
        self.export_records_with(conns, true)
    }

    /// The committed nodes of `store` as stream records: special nodes,
    /// then the tree parents first.
    pub fn node_records(store: &Store) -> Vec<Record> {
        let walk = store.parents_first();
        let (specials, tree): (Vec<_>, Vec<_>) =
            walk.into_iter().partition(|(p, _)| p.starts_with('@'));
        specials
            .into_iter()
            .chain(tree)
            .map(|(path, node)| {
                Record::Node(NodeData {
                    conn_id: 0,
                    tx_id: 0,
                    access: Access::NONE,
                    perms: node.perms.iter().map(|p| NodePerm::new(*p)).collect(),
                    path: path.to_string(),
                    value: node.value.to_vec(),
                })
            })
            .collect()
    }

    /// [`Engine::export_records`], without the committed nodes when
    /// `committed` is false (a pre-copy live update sends them as store
    /// images).
    pub fn export_records_with(
        &self,
        conns: &BTreeMap<ConnId, u32>,
        committed: bool,
    ) -> Vec<Record> {
        let mut out = if committed {
            Self::node_records(&self.store)
        } else {
            Vec::new()
        };
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
}

#[cfg(test)]
#[path = "lu_state_tests.rs"]
pub(super) mod tests;
