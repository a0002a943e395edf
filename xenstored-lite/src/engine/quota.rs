//! Quotas, with C xenstored's names and defaults. A value of 0 means
//! unlimited; the privileged domain is exempt from all of them.

use alloc::collections::BTreeMap;

/// One quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaKind {
    /// Nodes a domain may own (`-E`).
    Nodes,
    /// Watches per connection (`-W`).
    Watches,
    /// Outstanding requests per connection (replies not yet taken).
    Outstanding,
    /// Bytes a domain may be charged (`-Q memory=N`): its nodes, its open
    /// transactions' logs and written nodes, its watches and its queued
    /// output, one sum (`engine/account.rs`, C's model since XSA-326);
    /// past it a request is ENOMEM. Crossing the soft limit
    /// (`-q memory=N`) is logged, not refused.
    Memory,
    /// Open transactions per connection (`-t`).
    Transactions,
    /// Requests one transaction may log, reads too (C counts the nodes a
    /// transaction accessed); a read repeating one logged since the
    /// transaction's last write is not logged again.
    TransactionNodes,
    /// Permission entries per node (`-A`).
    NodePermissions,
    /// Length of a path below the domain's home (`-M`).
    PathMax,
    /// Bytes in one node's value (`-S`).
    NodeSize,
}

impl QuotaKind {
    /// All, in the order `GET_QUOTA` lists them.
    pub const ALL: [QuotaKind; 9] = [
        QuotaKind::Nodes,
        QuotaKind::Watches,
        QuotaKind::Outstanding,
        QuotaKind::Memory,
        QuotaKind::Transactions,
        QuotaKind::TransactionNodes,
        QuotaKind::NodePermissions,
        QuotaKind::PathMax,
        QuotaKind::NodeSize,
    ];

    /// Its place in [`QuotaKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name C xenstored uses.
    pub const fn name(self) -> &'static str {
        match self {
            QuotaKind::Nodes => "nodes",
            QuotaKind::Watches => "watches",
            QuotaKind::Outstanding => "outstanding",
            QuotaKind::Memory => "memory",
            QuotaKind::Transactions => "transactions",
            QuotaKind::TransactionNodes => "transaction-nodes",
            QuotaKind::NodePermissions => "node-permissions",
            QuotaKind::PathMax => "path-max",
            QuotaKind::NodeSize => "node-size",
        }
    }

    /// Parses a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }

    /// C xenstored's default hard limit.
    pub const fn default_hard(self) -> u64 {
        match self {
            QuotaKind::Nodes => 1000,
            QuotaKind::Watches => 128,
            QuotaKind::Outstanding => 20,
            QuotaKind::Memory => 2_621_440,
            QuotaKind::Transactions => 10,
            QuotaKind::TransactionNodes => 1024,
            QuotaKind::NodePermissions => 5,
            QuotaKind::PathMax => 2048,
            QuotaKind::NodeSize => 2048,
        }
    }

    /// Default soft limit (only memory has one).
    pub const fn default_soft(self) -> u64 {
        match self {
            QuotaKind::Memory => 2_097_152,
            _ => 0,
        }
    }
}

/// Hard and soft limits for every quota, indexed by [`QuotaKind::index`]
/// (every request reads some: an array, not a search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    hard: [u64; QuotaKind::ALL.len()],
    soft: [u64; QuotaKind::ALL.len()],
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            hard: QuotaKind::ALL.map(QuotaKind::default_hard),
            soft: QuotaKind::ALL.map(QuotaKind::default_soft),
        }
    }
}

impl Quotas {
    /// The hard limit (0: unlimited).
    pub fn hard(&self, q: QuotaKind) -> u64 {
        self.hard[q.index()]
    }

    /// The soft limit (0: none).
    pub fn soft(&self, q: QuotaKind) -> u64 {
        self.soft[q.index()]
    }

    /// Sets the hard limit.
    pub fn set_hard(&mut self, q: QuotaKind, value: u64) {
        self.hard[q.index()] = value;
    }

    /// Sets the soft limit.
    pub fn set_soft(&mut self, q: QuotaKind, value: u64) {
        self.soft[q.index()] = value;
    }
}

/// Per-domain overrides on top of the global quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainQuotas {
    /// Overridden hard limits.
    pub hard: BTreeMap<QuotaKind, u64>,
}

/// The effective hard limit for a domain.
pub fn effective(global: &Quotas, domain: Option<&DomainQuotas>, q: QuotaKind) -> u64 {
    domain
        .and_then(|d| d.hard.get(&q).copied())
        .unwrap_or_else(|| global.hard(q))
}

/// Whether `used` fits a limit (0: unlimited).
pub fn within(limit: u64, used: u64) -> bool {
    limit == 0 || used <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_index_is_place_in_all() {
        for (i, q) in QuotaKind::ALL.into_iter().enumerate() {
            assert_eq!(q.index(), i, "{}", q.name());
        }
    }

    #[test]
    fn test_set_changes_only_its_own_kind() {
        let mut quotas = Quotas::default();
        quotas.set_hard(QuotaKind::PathMax, 7);
        quotas.set_soft(QuotaKind::Nodes, 9);
        for q in QuotaKind::ALL {
            let hard = if q == QuotaKind::PathMax {
                7
            } else {
                q.default_hard()
            };
            let soft = if q == QuotaKind::Nodes {
                9
            } else {
                q.default_soft()
            };
            assert_eq!(
                (quotas.hard(q), quotas.soft(q)),
                (hard, soft),
                "{}",
                q.name()
            );
        }
    }
}
