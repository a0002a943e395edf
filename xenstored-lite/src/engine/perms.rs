//! Permission checks (`docs/misc/xenstore.txt`, and C xenstored where it is
//! silent): the privileged domain and a node's owner may do anything; a
//! domain acting for a target (`SET_TARGET`) has the target's rights; the
//! first per-domain entry naming the caller decides; else the owner entry's
//! kind is everybody's default.

use xenring::{DomId, Perm, PermKind};

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    /// The caller's domain (a socket acts as the privileged domain).
    pub domid: DomId,
    /// Privileged: dom0's tools or the configured privileged domain.
    pub privileged: bool,
    /// The domain this one acts for (a device model's guest).
    pub target: Option<DomId>,
}

/// What a caller may do with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
    /// Owns it (may change its permissions).
    pub owner: bool,
}

impl Access {
    const ALL: Access = Access {
        read: true,
        write: true,
        owner: true,
    };

    fn of(kind: PermKind) -> Self {
        Access {
            read: kind.can_read(),
            write: kind.can_write(),
            owner: false,
        }
    }
}

/// The caller's access to a node with `perms`.
pub fn access(who: &Who, perms: &[Perm]) -> Access {
    if who.privileged {
        return Access::ALL;
    }
    let Some(owner) = perms.first() else {
        return Access::of(PermKind::None);
    };
    let is = |d: DomId| d == who.domid || who.target == Some(d);
    if is(owner.domid) {
        return Access::ALL;
    }
    perms[1..]
        .iter()
        .find(|p| is(p.domid))
        .map_or_else(|| Access::of(owner.kind), |p| Access::of(p.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(domid: DomId) -> Who {
        Who {
            domid,
            privileged: false,
            target: None,
        }
    }

    #[test]
    fn test_access_table() {
        let perms = [
            Perm::new(PermKind::Read, 5),
            Perm::new(PermKind::Write, 7),
            Perm::new(PermKind::None, 8),
            Perm::new(PermKind::Both, 7),
        ];
        let cases = [
            (who(5), true, true, true),    // owner
            (who(7), false, true, false),  // first matching entry wins
            (who(8), false, false, false), // explicit none
            (who(9), true, false, false),  // default = owner entry's kind
            (
                Who {
                    domid: 9,
                    privileged: false,
                    target: Some(5),
                },
                true,
                true,
                true,
            ), // acting for the owner
            (
                Who {
                    domid: 9,
                    privileged: true,
                    target: None,
                },
                true,
                true,
                true,
            ),
        ];
        for (w, r, wr, o) in cases {
            let a = access(&w, &perms);
            assert_eq!((a.read, a.write, a.owner), (r, wr, o), "{w:?}");
        }
    }
}
