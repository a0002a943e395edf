//! One byte account per domain (C xenstored's model since XSA-326): what
//! a domain is charged is the bytes of the nodes it owns in the committed
//! store, plus what its connections keep besides: the logs of their open
//! transactions and the nodes those transactions wrote in their views, their
//! watches (path and token) and their queued output. The memory quota
//! (`-Q memory=`) is checked against that sum wherever it can grow by a
//! guest's request — a node written, a transaction request logged, a watch
//! set — and the soft quota's log line, `quota <domid>` and `memreport`
//! show the same sum.
//!
//! Queued output is counted, never refused for: it is bounded on its own
//! (`max_queued_bytes` cuts a connection off that does not read), and a
//! reply must go out even when the domain is at its quota, or it could not
//! learn that it is.

use alloc::collections::BTreeMap;

use xenring::{DomId, XsErrno};

use super::connections::Conn;
use super::perms::Who;
use super::quota::{within, QuotaKind};
use super::{ConnId, ConnKind, Engine};

/// The answer to a request that would take a domain past its memory
/// quota: C xenstored's `domain_memory_add()` answers ENOMEM (the node,
/// watch and transaction-nodes quotas are ENOSPC).
pub(super) const MEMORY_QUOTA: XsErrno = XsErrno::ENOMEM;

/// What one domain is charged, by kind (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The nodes it owns in the committed store ([`super::store::Account`]).
    pub nodes: u64,
    /// What its open transactions keep: their logged requests and
    /// replies, and the nodes they wrote in their views.
    pub transactions: u64,
    /// Its watches: path and token, as C charges them.
    pub watches: u64,
    /// Its queued output (replies and watch events not yet read).
    pub output: u64,
}

impl Usage {
    /// The sum, the one figure the memory quota is checked against.
    pub fn total(&self) -> u64 {
        self.nodes.saturating_add(self.besides_nodes())
    }

    /// All but the committed nodes.
    pub fn besides_nodes(&self) -> u64 {
        self.transactions
            .saturating_add(self.watches)
            .saturating_add(self.output)
    }

    /// Whether nothing is charged.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Adds what one connection is charged.
    pub fn add(&mut self, c: ConnCharge) {
        self.transactions = self.transactions.saturating_add(c.transactions);
        self.watches = self.watches.saturating_add(c.watches);
        self.output = self.output.saturating_add(c.output);
    }
}

/// What one connection is charged to its domain (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnCharge {
    /// Its open transactions' logs and written nodes.
    pub transactions: u64,
    /// Its watches' paths and tokens.
    pub watches: u64,
    /// Its queued output.
    pub output: u64,
}

/// A domain's usage: the bytes of its committed nodes and what each of
/// its connections is charged.
pub fn usage(nodes: u64, conns: impl IntoIterator<Item = ConnCharge>) -> Usage {
    let mut u = Usage {
        nodes,
        ..Usage::default()
    };
    for c in conns {
        u.add(c);
    }
    u
}

/// The memory limit left for node bytes (what [`super::ops`] checks a
/// node write against) when the domain uses `besides` bytes on other
/// things: `limit` less `besides`, but never 0, which would mean
/// unlimited: a domain whose other charges fill its quota may still
/// write what does not grow its nodes, nothing more. 0 (unlimited) stays 0.
pub fn node_limit(limit: u64, besides: u64) -> u64 {
    if limit == 0 {
        0
    } else {
        limit.saturating_sub(besides).max(1)
    }
}

impl Engine {
    /// What one connection is charged.
    pub(super) fn conn_charge(&self, id: ConnId, c: &Conn) -> ConnCharge {
        ConnCharge {
            transactions: c
                .transactions
                .values()
                .fold(0u64, |sum, tx| sum.saturating_add(tx.charged())),
            watches: self.watches.bytes(id) as u64,
            output: c.out_bytes as u64,
        }
    }

    /// The domain a connection is charged to.
    pub(super) fn charged_domain(&self, c: &Conn) -> DomId {
        match c.kind {
            ConnKind::Socket => self.config.priv_domid,
            ConnKind::Domain(d) => d,
        }
    }

    /// What `domid` is charged. A guest has one connection, its ring (the
    /// domain's); the privileged domain's sockets are looked for too.
    pub(super) fn usage(&self, domid: DomId) -> Usage {
        let nodes = self.store.account(domid).memory;
        if domid == self.config.priv_domid {
            let conns = self
                .conns
                .iter()
                .filter(|(_, c)| self.charged_domain(c) == domid)
                .map(|(&id, c)| self.conn_charge(id, c));
            return usage(nodes, conns);
        }
        let ring = self
            .domains
            .get(&domid)
            .and_then(|d| self.conns.get_key_value(&d.conn))
            .filter(|(_, c)| c.kind == ConnKind::Domain(domid));
        usage(nodes, ring.map(|(&id, c)| self.conn_charge(id, c)))
    }

    /// What every domain that is charged anything is charged, by domid.
    pub(super) fn usages(&self) -> BTreeMap<DomId, Usage> {
        let mut all: BTreeMap<DomId, Usage> = BTreeMap::new();
        for (d, a) in self.store.accounts() {
            all.entry(d).or_default().nodes = a.memory;
        }
        for (&id, c) in &self.conns {
            let charge = self.conn_charge(id, c);
            if charge != ConnCharge::default() {
                all.entry(self.charged_domain(c)).or_default().add(charge);
            }
        }
        all.retain(|_, u| !u.is_empty());
        all
    }

    /// The memory limit for `who`'s node writes: its quota less what it
    /// uses besides its nodes ([`node_limit`]); 0 (unlimited) for the
    /// privileged domain and when there is no quota.
    pub(super) fn node_memory_limit(&self, who: &Who) -> u64 {
        let limit = self.limit(who.domid, QuotaKind::Memory);
        if who.privileged || limit == 0 {
            return 0;
        }
        node_limit(limit, self.usage(who.domid).besides_nodes())
    }

    /// Whether `domid` is within `limit` whatever its watches hold, from
    /// what costs nothing to look up: its nodes, transactions and output,
    /// and its watch quota's worth of the longest watches (`false` without
    /// a watch quota). Spares a walk of its watches where only a log line
    /// depends on the answer (the soft quota); a quota lowered below the
    /// watches a domain has can make it wrong, so nothing is refused or
    /// allowed on it.
    pub(super) fn surely_within(&self, domid: DomId, limit: u64) -> bool {
        let watches = self.limit(domid, QuotaKind::Watches);
        if limit == 0 {
            return true;
        }
        if watches == 0 {
            return false;
        }
        let ring = self
            .domains
            .get(&domid)
            .and_then(|d| self.conns.get(&d.conn))
            .filter(|c| c.kind == ConnKind::Domain(domid));
        let (tx, out) = ring.map_or((0, 0), |c| {
            (
                c.transactions
                    .values()
                    .fold(0u64, |sum, tx| sum.saturating_add(tx.charged())),
                c.out_bytes as u64,
            )
        });
        let most_watches = watches.saturating_mul(xenring::wire::PAYLOAD_MAX as u64);
        let upper = self
            .store
            .account(domid)
            .memory
            .saturating_add(tx)
            .saturating_add(out)
            .saturating_add(most_watches);
        within(limit, upper)
    }

    /// Whether `who` may be charged `more` bytes: MEMORY_QUOTA (ENOMEM) if
    /// that would take its domain past its memory quota. The privileged
    /// domain is exempt.
    pub(super) fn check_memory(&self, who: &Who, more: u64) -> Result<(), XsErrno> {
        if who.privileged {
            return Ok(());
        }
        let limit = self.limit(who.domid, QuotaKind::Memory);
        if limit == 0 {
            return Ok(());
        }
        let used = self.usage(who.domid).total();
        if within(limit, used.saturating_add(more)) {
            Ok(())
        } else {
            Err(MEMORY_QUOTA)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_usage_sums_nodes_and_every_connections_charges() {
        let u = usage(
            100,
            [
                ConnCharge {
                    transactions: 10,
                    watches: 20,
                    output: 30,
                },
                ConnCharge {
                    transactions: 1,
                    watches: 2,
                    output: 3,
                },
            ],
        );
        assert_eq!(
            u,
            Usage {
                nodes: 100,
                transactions: 11,
                watches: 22,
                output: 33,
            }
        );
        assert_eq!(u.besides_nodes(), 66);
        assert_eq!(u.total(), 166);
        assert!(!u.is_empty());
        assert!(usage(0, []).is_empty());
    }

    #[test]
    fn test_usage_saturates_instead_of_overflowing() {
        let u = usage(
            u64::MAX - 1,
            [ConnCharge {
                transactions: u64::MAX,
                watches: 5,
                output: 0,
            }],
        );
        assert_eq!(u.total(), u64::MAX);
        assert_eq!(u.besides_nodes(), u64::MAX);
    }

    #[test]
    fn test_node_limit_never_reaches_unlimited_by_accident() {
        assert_eq!(node_limit(0, 0), 0, "no quota stays no quota");
        assert_eq!(node_limit(0, 1_000), 0);
        assert_eq!(node_limit(1_000, 0), 1_000);
        assert_eq!(node_limit(1_000, 400), 600);
        // Other charges fill the quota, or more: 1, not 0 (unlimited).
        assert_eq!(node_limit(1_000, 1_000), 1);
        assert_eq!(node_limit(1_000, 5_000), 1);
        assert_eq!(node_limit(1_000, 999), 1);
        assert_eq!(node_limit(1, 0), 1);
    }
}
