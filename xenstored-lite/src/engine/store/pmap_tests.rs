//! The persistent map against `BTreeMap`, with keys that spread and keys
//! whose hashes collide, and snapshots that must not see later changes.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::hash::{Hash, Hasher};

use super::PMap;

/// A key whose hash keeps only a few bits of it: many whole-hash
/// collisions, and tries that split deep.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Clash(u32);

impl Hash for Clash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.0 % 7);
    }
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn same<
    K: Ord + Clone + core::hash::Hash + Eq + core::fmt::Debug,
    V: Clone + PartialEq + core::fmt::Debug,
>(
    map: &PMap<K, V>,
    model: &BTreeMap<K, V>,
) {
    assert_eq!(map.len(), model.len());
    assert_eq!(map.is_empty(), model.is_empty());
    let mut all: Vec<(K, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(map.iter().len(), model.len());
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(K, V)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, want);
    for (k, v) in model {
        assert_eq!(map.get(k), Some(v));
        assert!(map.contains_key(k));
    }
}

fn run<K: Ord + Clone + core::hash::Hash + Eq + core::fmt::Debug>(
    key: impl Fn(u64) -> K,
    span: u64,
) {
    let mut rng = Lcg(7);
    let mut map: PMap<K, u64> = PMap::new();
    let mut model = BTreeMap::new();
    let mut snaps = Vec::new();
    for step in 0..6000u64 {
        let k = key(rng.below(span));
        match rng.below(10) {
            0..=4 => assert_eq!(map.insert(k.clone(), step), model.insert(k, step)),
            5..=7 => assert_eq!(map.remove(&k), model.remove(&k).is_some()),
            8 => {
                // Half of the changes look first and change at the spot
                // found, as a write does.
                let v = if step % 2 == 0 {
                    map.get_mut(&k)
                } else {
                    match map.get_spot(&k) {
                        Some((v, spot)) => {
                            assert_eq!(Some(v), model.get(&k));
                            map.get_mut_at(&k, spot)
                        }
                        None => None,
                    }
                };
                if let (Some(v), Some(m)) = (v, model.get_mut(&k)) {
                    *v += 1;
                    *m += 1;
                }
                assert_eq!(map.get(&k), model.get(&k));
            }
            _ => {
                if snaps.len() < 8 {
                    snaps.push((map.clone(), model.clone()));
                }
            }
        }
    }
    same(&map, &model);
    for (snap, at) in &snaps {
        same(snap, at);
    }
    // Everything out again leaves an empty map.
    let keys: Vec<K> = model.keys().cloned().collect();
    for k in &keys {
        assert!(map.remove(k));
        assert!(!map.remove(k));
    }
    assert!(map.is_empty() && map.iter().next().is_none());
}

#[test]
fn test_pmap_matches_btreemap_with_spread_keys() {
    run(|n| n.to_string(), 3000);
}

#[test]
fn test_pmap_matches_btreemap_with_colliding_hashes() {
    run(|n| Clash(u32::try_from(n).unwrap_or(0)), 60);
}

#[test]
fn test_pmap_small_integer_keys_and_debug() {
    let mut m: PMap<u16, u32> = PMap::new();
    assert!(m.get(&3).is_none() && !m.remove(&3) && m.get_mut(&3).is_none());
    for d in 0..2000u16 {
        assert_eq!(m.insert(d, u32::from(d)), None);
    }
    let snap = m.clone();
    for d in (0..2000u16).step_by(2) {
        assert!(m.remove(&d));
    }
    assert_eq!(m.len(), 1000);
    assert_eq!(snap.len(), 2000);
    assert_eq!(snap.get(&4), Some(&4));
    assert_eq!(m.get(&4), None);
    let mut one: PMap<String, u8> = PMap::new();
    one.insert("a".to_string(), 1);
    assert_eq!(alloc::format!("{one:?}"), r#"{"a": 1}"#);
    // Strings are looked up by `&str`.
    assert_eq!(one.get("a"), Some(&1));
    assert_eq!(one.get_key_value("a").map(|(k, _)| k.as_str()), Some("a"));
}

#[test]
fn test_pmap_spot_changes_only_the_key_it_was_found_for() {
    fn go<K: Ord + Clone + core::hash::Hash + Eq + core::fmt::Debug>(key: impl Fn(u32) -> K) {
        let mut map: PMap<K, u32> = PMap::new();
        for k in 0..200 {
            map.insert(key(k), k);
        }
        let snap = map.clone();
        // Found and changed at its spot: the snapshot keeps the old value.
        let (v, spot) = map.get_spot(&key(5)).map(|(v, s)| (*v, s)).unwrap();
        assert_eq!(v, 5);
        *map.get_mut_at(&key(5), spot).unwrap() = 1000;
        assert_eq!(map.get(&key(5)), Some(&1000));
        assert_eq!(snap.get(&key(5)), Some(&5));
        // Another key's spot, or a spot the key left, finds nothing and
        // changes nothing.
        for k in 0..200 {
            if k != 5 {
                assert!(map.get_mut_at(&key(k), spot).is_none(), "{k:?}");
            }
        }
        assert!(map.get_mut_at(&key(500), spot).is_none());
        assert!(map.remove(&key(5)));
        assert!(map.get_mut_at(&key(5), spot).is_none());
        assert!(map.get_spot(&key(5)).is_none());
        for k in 0..200 {
            assert_eq!(snap.get(&key(k)), Some(&k));
            assert_eq!(map.get(&key(k)), (k != 5).then_some(&k));
        }
        // An empty map has no spot to go to.
        let mut empty: PMap<K, u32> = PMap::new();
        assert!(empty.get_mut_at(&key(5), spot).is_none());
    }
    go(|n| alloc::format!("/local/domain/{n}"));
    go(Clash);
}

/// The trie's shape: each node's bitmap and its slots (`L` leaf, `C<n>`
/// collision of n, a branch as its own shape), to compare layouts.
fn shape<K, V>(map: &PMap<K, V>) -> String {
    fn node<K, V>(n: &super::Node<K, V>, out: &mut String) {
        out.push_str(&alloc::format!("{:x}[", n.bitmap));
        for s in n.slots.iter() {
            match s {
                super::Slot::Leaf { .. } => out.push('L'),
                super::Slot::Collision { entries, .. } => {
                    out.push_str(&alloc::format!("C{}", entries.len()));
                }
                super::Slot::Branch(sub) => node(sub, out),
            }
        }
        out.push(']');
    }
    let mut out = String::new();
    if let Some(root) = &map.root {
        node(root, &mut out);
    }
    out
}

#[test]
fn test_pmap_spread_keys_fill_the_root_without_collisions() {
    // Distinct keys get distinct hashes: 1000 of them use every position
    // of the root and never share a collision list (a constant hash would
    // keep them all in one list, correct but a linear scan).
    let mut m: PMap<String, ()> = PMap::new();
    for i in 0..1000 {
        m.insert(alloc::format!("/local/domain/{i}"), ());
    }
    let s = shape(&m);
    assert!(s.starts_with("ffffffff["), "{s}");
    assert!(!s.contains('C'), "{s}");
}

#[test]
fn test_pmap_shape_after_removes_matches_a_fresh_build() {
    // Removing keys folds the nodes they leave near-empty back up: the
    // trie is the one the remaining keys alone would build.
    let mut m: PMap<u16, u16> = PMap::new();
    for d in 0..3000u16 {
        m.insert(d, d);
    }
    for d in (0..3000u16).filter(|d| d % 5 != 0) {
        assert!(m.remove(&d));
    }
    let mut fresh: PMap<u16, u16> = PMap::new();
    for d in (0..3000u16).step_by(5) {
        fresh.insert(d, d);
    }
    assert_eq!(shape(&m), shape(&fresh));
}

#[test]
fn test_pmap_iter_size_hint_counts_down_through_collisions() {
    // Six keys alone under their hash, four sharing one.
    let mut m: PMap<Clash, u8> = PMap::new();
    for i in (0..7).chain([7, 14, 21]) {
        m.insert(Clash(i), 0);
    }
    let mut it = m.iter();
    for left in (0..=10usize).rev() {
        assert_eq!(it.size_hint(), (left, Some(left)));
        assert_eq!(it.len(), left);
        assert_eq!(it.next().is_some(), left > 0);
    }
}

/// Applies `map.diff_from(old)` to a copy of `old`'s entries: the result
/// must be `map`'s entries; and every change reported must be a real one.
fn check_diff<K: Ord + Clone + core::hash::Hash + Eq + core::fmt::Debug>(
    old: &PMap<K, u32>,
    map: &PMap<K, u32>,
) -> usize {
    let mut model: BTreeMap<K, u32> = old.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut changes = 0;
    map.diff_from(old, &|a: &u32, b: &u32| a == b, &mut |c| {
        changes += 1;
        match c {
            super::Change::Set(k, v) => {
                assert_ne!(old.get(k), Some(v), "{k:?} reported set but unchanged");
                model.insert(k.clone(), *v);
            }
            super::Change::Removed(k) => {
                assert!(map.get(k).is_none(), "{k:?} reported removed but present");
                assert!(
                    model.remove(k).is_some(),
                    "{k:?} removed twice or never there"
                );
            }
        }
    });
    let now: BTreeMap<K, u32> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(model, now);
    changes
}

proptest::proptest! {
    #[test]
    fn prop_diff_from_a_snapshot_is_what_changed(
        start in proptest::collection::vec((0u32..400, 0u32..4), 0..300),
        ops in proptest::collection::vec((0u32..400, proptest::option::of(0u32..4)), 0..200),
        clash in proptest::bool::ANY,
    ) {
        fn go<K: Ord + Clone + core::hash::Hash + Eq + core::fmt::Debug>(
            key: impl Fn(u32) -> K,
            start: &[(u32, u32)],
            ops: &[(u32, Option<u32>)],
        ) {
            let mut map = PMap::new();
            for &(k, v) in start {
                map.insert(key(k), v);
            }
            let old = map.clone();
            assert_eq!(check_diff(&old, &map), 0, "a snapshot differs from nothing");
            let mut expected = 0;
            let mut model: BTreeMap<K, u32> = old.iter().map(|(k, v)| (k.clone(), *v)).collect();
            for &(k, v) in ops {
                match v {
                    Some(v) => {
                        map.insert(key(k), v);
                        model.insert(key(k), v);
                    }
                    None => {
                        map.remove(&key(k));
                        model.remove(&key(k));
                    }
                }
            }
            for (k, v) in &model {
                if old.get(k) != Some(v) {
                    expected += 1;
                }
            }
            expected += old.iter().filter(|(k, _)| !model.contains_key(*k)).count();
            assert_eq!(check_diff(&old, &map), expected, "each difference once");
            assert_eq!(check_diff(&map, &old), expected, "and the other way");
        }
        if clash {
            go(Clash, &start, &ops);
        } else {
            go(|k| k.to_string(), &start, &ops);
        }
    }
}

#[test]
fn test_diff_from_skips_what_a_snapshot_shares() {
    // Values compared by a counter: only the trie nodes on the changed
    // entry's path are looked at, so at most one node's 32 entries for a
    // one-entry change in 10,000.
    let mut map = PMap::new();
    for i in 0..10_000u32 {
        map.insert(i, i);
    }
    let old = map.clone();
    map.insert(5, 99);
    let looked = core::cell::Cell::new(0);
    let mut set = Vec::new();
    map.diff_from(
        &old,
        &|a: &u32, b: &u32| {
            looked.set(looked.get() + 1);
            a == b
        },
        &mut |c| set.push(alloc::format!("{c:?}")),
    );
    assert_eq!(set, ["Set(5, 99)"]);
    assert!(looked.get() <= 32, "{} values compared", looked.get());
}

/// The trie's invariants below `n`: each half holds as many slots as its
/// bitmap says, an empty half has no allocation, and no node below the
/// root is left with a lone leaf or collision (it would have moved up).
fn check_node<K, V>(n: &super::Node<K, V>, root: bool) {
    for hi in [false, true] {
        let (bits, half) = if hi {
            (n.bitmap >> super::HALF, &n.slots.hi)
        } else {
            (n.bitmap & ((1 << super::HALF) - 1), &n.slots.lo)
        };
        assert_eq!(bits.count_ones() as usize, n.slots.half(hi).len());
        assert_eq!(half.is_some(), bits != 0, "an empty half is None");
    }
    if !root {
        let lone = n.bitmap.count_ones() == 1
            && matches!(
                n.slots.iter().next(),
                Some(super::Slot::Leaf { .. } | super::Slot::Collision { .. })
            );
        assert!(!lone, "a lone entry below the root moves up");
    }
    for s in n.slots.iter() {
        if let super::Slot::Branch(sub) = s {
            check_node(sub, false);
        }
    }
}

/// Where a hash puts a key in iteration order: its 5-bit positions from
/// the root down (the order is position order, level by level).
fn trie_order(hash: u64) -> Vec<u64> {
    (0..13).map(|i| (hash >> (5 * i)) & 31).collect()
}

proptest::proptest! {
    #[test]
    fn prop_halves_keep_the_trie_and_its_order(
        ops in proptest::collection::vec((0u32..600, 0u8..10), 0..700),
        clash in proptest::bool::ANY,
    ) {
        fn go<K: Ord + Clone + core::hash::Hash + Eq + core::fmt::Debug>(
            key: impl Fn(u32) -> K,
            ops: &[(u32, u8)],
            spread: bool,
        ) {
            let mut map: PMap<K, u32> = PMap::new();
            let mut model = BTreeMap::new();
            let mut snaps = Vec::new();
            for (step, &(k, op)) in ops.iter().enumerate() {
                let step = u32::try_from(step).unwrap_or(u32::MAX);
                match op {
                    0..=4 => assert_eq!(map.insert(key(k), step), model.insert(key(k), step)),
                    5..=7 => assert_eq!(map.remove(&key(k)), model.remove(&key(k)).is_some()),
                    8 => {
                        if let Some(v) = map.get_mut(&key(k)) {
                            *v = step;
                        }
                        if let Some(v) = model.get_mut(&key(k)) {
                            *v = step;
                        }
                    }
                    _ => snaps.push((map.clone(), model.clone())),
                }
            }
            snaps.push((map, model));
            for (map, model) in &snaps {
                same(map, model);
                if let Some(root) = &map.root {
                    check_node(root, true);
                }
                if spread {
                    // Keys that do not collide come in the order of their
                    // positions, whatever the history: the layout of a
                    // 32-way trie, one node per level.
                    let order: Vec<Vec<u64>> =
                        map.iter().map(|(k, _)| trie_order(super::hash_of(k))).collect();
                    let mut sorted = order.clone();
                    sorted.sort();
                    assert_eq!(order, sorted);
                }
            }
        }
        if clash {
            go(Clash, &ops, false);
        } else {
            go(|k| alloc::format!("/local/domain/{k}"), &ops, true);
        }
    }
}
