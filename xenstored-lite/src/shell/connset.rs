//! [`ConnSet`]: the loop's sets of connections to look at again, without
//! an allocation per turn.
//!
//! The loop marks connections (to read, to release) many times a turn and
//! takes the whole set at once, in id order. A `BTreeSet` allocated a node
//! for its first member every turn, and taking it into a `Vec` another;
//! this keeps its members in a vector whose capacity lives on, and sorts
//! them when they are taken (O(n log n) however many connections there are,
//! not O(n²) as sorted inserts would be with thousands of guests).

use crate::engine::ConnId;

/// A set of connections, taken whole in ascending order.
#[derive(Debug, Default)]
pub(super) struct ConnSet {
    /// The members, unsorted, possibly repeated (not one after another).
    ids: Vec<ConnId>,
}

impl ConnSet {
    /// Adds `conn` (a no-op if it is the last one added).
    pub(super) fn insert(&mut self, conn: ConnId) {
        if self.ids.last() != Some(&conn) {
            self.ids.push(conn);
        }
    }

    /// Takes `conn` out.
    pub(super) fn remove(&mut self, conn: ConnId) {
        self.ids.retain(|&c| c != conn);
    }

    /// Whether there is none.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Empties the set into `out` (cleared first): every member once, in
    /// ascending order. The two swap buffers, so neither allocates again
    /// once both have grown to what a turn needs.
    pub(super) fn take_into(&mut self, out: &mut Vec<ConnId>) {
        out.clear();
        std::mem::swap(&mut self.ids, out);
        sort_dedup(out);
    }
}

/// `ids` sorted and without repeats, in place (the union of what was
/// pushed into it).
pub(super) fn sort_dedup(ids: &mut Vec<ConnId>) {
    ids.sort_unstable();
    ids.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Whatever is inserted and removed, taking gives what a
        /// `BTreeSet` would hold, in its order; the set is empty after.
        #[test]
        fn behaves_as_an_ordered_set(ops in proptest::collection::vec((any::<bool>(), 0u32..16), 0..200)) {
            let mut set = ConnSet::default();
            let mut model = BTreeSet::new();
            for (insert, conn) in ops {
                if insert {
                    set.insert(conn);
                    model.insert(conn);
                } else {
                    set.remove(conn);
                    model.remove(&conn);
                }
                prop_assert_eq!(set.is_empty(), model.is_empty());
            }
            let mut out = vec![99];
            set.take_into(&mut out);
            prop_assert_eq!(out, model.into_iter().collect::<Vec<_>>());
            prop_assert!(set.is_empty());
        }
    }

    #[test]
    fn repeated_inserts_count_once_and_take_reuses_buffers() {
        let mut set = ConnSet::default();
        for conn in [5, 5, 3, 5, 3, 1] {
            set.insert(conn);
        }
        let mut out = Vec::new();
        set.take_into(&mut out);
        assert_eq!(out, [1, 3, 5]);
        // The set got `out`'s old buffer, `out` the set's.
        set.insert(2);
        let cap = out.capacity();
        set.take_into(&mut out);
        assert_eq!(out, [2]);
        assert!(out.capacity() >= 1);
        assert!(cap >= 3);
    }

    #[test]
    fn sort_dedup_is_a_sorted_union() {
        let mut ids = vec![4, 1, 4, 2, 1];
        sort_dedup(&mut ids);
        assert_eq!(ids, [1, 2, 4]);
    }
}
