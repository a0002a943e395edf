//! A map keyed by connection number: looked up in constant time (a
//! request looks its connection up several times, and an ordered map's
//! search was a visible part of every request), iterated in key order
//! like the `BTreeMap` it replaces, so that no hash order reaches an
//! output.
//!
//! The keys are numbers the I/O shell hands out, not chosen by a guest:
//! the fixed-seed hasher needs no randomness to resist collisions.

use alloc::vec::Vec;
use core::fmt;

use foldhash::fast::FixedState;

/// The map.
#[derive(Clone)]
pub struct IdMap<V> {
    map: hashbrown::HashMap<u32, V, FixedState>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self {
            map: hashbrown::HashMap::with_hasher(FixedState::default()),
        }
    }
}

impl<V> IdMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `id`.
    #[inline]
    pub fn get(&self, id: &u32) -> Option<&V> {
        self.map.get(id)
    }

    /// The stored key and value for `id`.
    #[inline]
    pub fn get_key_value(&self, id: &u32) -> Option<(&u32, &V)> {
        self.map.get_key_value(id)
    }

    /// The value for `id`, to change.
    #[inline]
    pub fn get_mut(&mut self, id: &u32) -> Option<&mut V> {
        self.map.get_mut(id)
    }

    /// Whether `id` is present.
    #[inline]
    pub fn contains_key(&self, id: &u32) -> bool {
        self.map.contains_key(id)
    }

    /// Sets `id` to `value`; returns the value it replaces.
    pub fn insert(&mut self, id: u32, value: V) -> Option<V> {
        self.map.insert(id, value)
    }

    /// Removes `id`; returns its value.
    pub fn remove(&mut self, id: &u32) -> Option<V> {
        self.map.remove(id)
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// The entries, by key (sorted here: not for a per-request path).
    pub fn iter(&self) -> alloc::vec::IntoIter<(&u32, &V)> {
        let mut all: Vec<(&u32, &V)> = self.map.iter().collect();
        all.sort_unstable_by_key(|(id, _)| **id);
        all.into_iter()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &u32> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// The values, by key.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The keys in the hash table's order, unsorted and without
    /// allocating: for a caller that sorts them itself.
    pub fn keys_unordered(&self) -> impl Iterator<Item = u32> + '_ {
        self.map.keys().copied()
    }
}

impl<'a, V> IntoIterator for &'a IdMap<V> {
    type Item = (&'a u32, &'a V);
    type IntoIter = alloc::vec::IntoIter<(&'a u32, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// `map[&id]`, as a `BTreeMap` has it, for the tests (the engine looks up
/// with `get`).
#[cfg(test)]
impl<V> core::ops::Index<&u32> for IdMap<V> {
    type Output = V;

    fn index(&self, id: &u32) -> &V {
        self.map.get(id).expect("no entry for the id")
    }
}

impl<V: fmt::Debug> fmt::Debug for IdMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::format;

    /// Whatever the order of insertions and removals, lookups find what a
    /// `BTreeMap` finds and iteration gives its order.
    #[test]
    fn test_idmap_is_a_btreemap_by_lookup_and_order() {
        let mut ids: IdMap<u64> = IdMap::new();
        let mut reference: BTreeMap<u32, u64> = BTreeMap::new();
        let mut x: u32 = 12345;
        for step in 0..5000u64 {
            // A small LCG: keys collide often enough to replace and remove.
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let id = (x >> 8) % 300 + if step % 7 == 0 { u32::MAX - 300 } else { 0 };
            if x % 3 == 0 {
                assert_eq!(ids.remove(&id), reference.remove(&id));
            } else {
                assert_eq!(ids.insert(id, step), reference.insert(id, step));
            }
            if let Some(v) = ids.get_mut(&id) {
                *v += 1;
                *reference.get_mut(&id).unwrap() += 1;
            }
            assert_eq!(ids.get(&id), reference.get(&id));
            assert_eq!(ids.contains_key(&id), reference.contains_key(&id));
            assert_eq!(ids.get_key_value(&id), reference.get_key_value(&id));
            assert_eq!(ids.len(), reference.len());
        }
        assert!(ids.iter().eq(reference.iter()));
        assert!(ids.keys().eq(reference.keys()));
        assert!(ids.values().eq(reference.values()));
        assert!((&ids).into_iter().eq(&reference));
        assert_eq!(format!("{ids:?}"), format!("{reference:?}"));
        ids.clear();
        assert!(ids.is_empty() && ids.iter().next().is_none());
    }
}
