//! The engine's part of a migration stream (live update): committed nodes,
//! watches, global and per-domain quotas, to records and back.
//!
//! Connections themselves (their transports, pending input and output) are
//! the I/O shell's; it registers them first (`Input::Connect`, or
//! [`Engine::restore_ring`] for a domain's ring) and tells the engine how
//! stream connection ids map to its own. Plain-data records become live
//! state only through checks that name the record at fault.

use std::collections::BTreeMap;
use std::sync::Arc;

use xenring::path::{validate_path, PathKind};
use xenring::{DomId, Perm};

use super::quota::QuotaKind;
use super::store::{parent, Store};
use super::watch::Watch;
use super::{ConnId, ConnKind, Domain, Engine, Input};
use crate::migration::{
    Access, DomainData, GlobalQuotaData, NodeData, NodePerm, Quota, Record, WatchData,
    WatchDataExtended, DEPTH_UNLIMITED,
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
    /// Transaction-local nodes: carrying open transactions is not done yet.
    #[error("record {index}: node {path:?} of transaction {tx_id} on connection {conn_id}: open transactions cannot be restored yet")]
    TransactionNode {
        /// Record index.
        index: usize,
        /// Connection.
        conn_id: u32,
        /// Transaction.
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
    /// Quota names this daemon does not know (ignored).
    pub unknown_quotas: Vec<String>,
}

fn quota_kind(q: &Quota) -> Option<QuotaKind> {
    QuotaKind::from_name(&q.name)
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

    /// Takes over the nodes, watches and quotas of a stream. `conns` maps
    /// the stream's connection ids to connections already registered.
    /// Replaces the store; on error nothing is changed.
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
        for (index, record) in records.iter().enumerate() {
            match record {
                Record::Node(node) => {
                    Self::restore_node(&mut store, index, node)?;
                    report.nodes += 1;
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
                Record::Global(_) | Record::Connection(_) | Record::Transaction(_) => {}
            }
        }
        self.store = store;
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

    fn restore_node(store: &mut Store, index: usize, node: &NodeData) -> Result<(), RestoreError> {
        if node.tx_id != 0 || node.access != Access::NONE {
            return Err(RestoreError::TransactionNode {
                index,
                conn_id: node.conn_id,
                tx_id: node.tx_id,
                path: node.path.clone(),
            });
        }
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
    /// then the tree parents first), the watches of the connections in
    /// `conns` (engine id → stream id), global and per-domain quotas.
    pub fn export_records(&self, conns: &BTreeMap<ConnId, u32>) -> Vec<Record> {
        let mut out = Vec::new();
        let walk = self.store.walk();
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
