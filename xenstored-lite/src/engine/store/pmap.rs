//! A persistent hash map (a hash array mapped trie) for the store: a clone
//! is one reference count, so a transaction's snapshot costs nothing; an
//! update copies only the trie nodes on its path that a snapshot still
//! shares, and changes the rest in place.
//!
//! Built on `core` and `alloc` alone. Keys are hashed with a fixed seed
//! (`foldhash`'s [`FixedState`]): no per-process randomness, the same
//! layout on every run. Iteration follows the hash, so callers whose
//! output depends on the order sort what they collect.
//!
//! Each trie node's slots are held inline in two halves, one `Arc<[Slot]>`
//! for positions 0–15 and one for 16–31 (none for a half with nothing in
//! it); the node's bitmap and both pointers live in the slot that points
//! to it, so that a lookup still touches one allocation per level, and a
//! copy of a node that a snapshot shares copies only the half the path
//! goes through (its slots' reference counts are most of the cost of a
//! copy, each on a line of its own), sharing the other.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};

use foldhash::fast::FixedState;

/// Bits of the hash used per level.
const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;

/// One entry of a trie node.
#[derive(Clone)]
enum Slot<K, V> {
    /// One key.
    Leaf { hash: u64, key: K, value: V },
    /// Keys whose whole hashes are equal.
    Collision { hash: u64, entries: Arc<[(K, V)]> },
    /// A node one level down.
    Branch(Node<K, V>),
}

/// A trie node: which of the 32 positions are occupied, and their slots in
/// position order.
#[derive(Clone)]
struct Node<K, V> {
    bitmap: u32,
    slots: Halves<K, V>,
}

/// Positions in one half of a node.
const HALF: u32 = 16;

/// A node's slots: those of positions below [`HALF`], then the others,
/// each half in position order and its own allocation (`None` if empty).
#[derive(Clone)]
struct Halves<K, V> {
    lo: Option<Arc<[Slot<K, V>]>>,
    hi: Option<Arc<[Slot<K, V>]>>,
}

impl<K, V> Halves<K, V> {
    /// Half `hi`'s slots.
    fn half(&self, hi: bool) -> &[Slot<K, V>] {
        let half = if hi { &self.hi } else { &self.lo };
        half.as_deref().unwrap_or(&[])
    }

    /// Every slot, in position order.
    fn iter(&self) -> impl Iterator<Item = &Slot<K, V>> {
        self.half(false).iter().chain(self.half(true).iter())
    }
}

impl<K: Clone, V: Clone> Halves<K, V> {
    /// Slot `at` of half `hi`, to change (the half copied first if a
    /// snapshot shares it).
    fn slot_mut(&mut self, hi: bool, at: usize) -> Option<&mut Slot<K, V>> {
        let half = if hi { &mut self.hi } else { &mut self.lo };
        half.as_mut().and_then(|h| Arc::make_mut(h).get_mut(at))
    }

    /// Half `hi` rebuilt by `f` from its slots (a new allocation, as the
    /// half changes length).
    fn rebuild(&mut self, hi: bool, f: impl FnOnce(&[Slot<K, V>], &mut Vec<Slot<K, V>>)) {
        let half = if hi { &mut self.hi } else { &mut self.lo };
        let old = half.take();
        let old = old.as_deref().unwrap_or(&[]);
        let mut slots = Vec::with_capacity(old.len() + 1);
        f(old, &mut slots);
        *half = (!slots.is_empty()).then(|| Arc::from(slots));
    }
}

/// A persistent map from `K` to `V`.
#[derive(Clone)]
pub struct PMap<K, V> {
    root: Option<Node<K, V>>,
    len: usize,
}

impl<K, V> Default for PMap<K, V> {
    fn default() -> Self {
        Self { root: None, len: 0 }
    }
}

fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    FixedState::default().hash_one(key)
}

/// The position's bit, its half, and the slot index it maps to in that
/// half given `bitmap`.
fn locate(bitmap: u32, hash: u64, shift: u32) -> (u32, bool, usize) {
    // The mask keeps 5 bits: the shift stays below 32.
    let pos = ((hash >> shift) & MASK) as u32;
    let bit = 1u32 << pos;
    let hi = pos >= HALF;
    let below = bitmap & (bit - 1);
    let below = if hi { below >> HALF } else { below };
    (bit, hi, below.count_ones() as usize)
}

impl<K, V> Node<K, V> {
    /// A node of `slots` in position order, `bitmap` their positions.
    fn new(bitmap: u32, mut slots: Vec<Slot<K, V>>) -> Self {
        let low = (bitmap & ((1 << HALF) - 1)).count_ones() as usize;
        let hi = slots.split_off(low.min(slots.len()));
        let half = |v: Vec<Slot<K, V>>| (!v.is_empty()).then(|| Arc::from(v));
        Self {
            bitmap,
            slots: Halves {
                lo: half(slots),
                hi: half(hi),
            },
        }
    }
}

impl<K: Clone, V: Clone> Node<K, V> {
    /// `slot` inserted at `at` of half `hi`, at the position `bit`.
    fn insert_slot(&mut self, bit: u32, hi: bool, at: usize, slot: Slot<K, V>) {
        self.slots.rebuild(hi, |old, new| {
            new.extend_from_slice(&old[..at]);
            new.push(slot);
            new.extend_from_slice(&old[at..]);
        });
        self.bitmap |= bit;
    }

    /// The slot at `at` of half `hi` (position `bit`) taken out.
    fn remove_slot(&mut self, bit: u32, hi: bool, at: usize) {
        self.slots.rebuild(hi, |old, new| {
            new.extend_from_slice(&old[..at]);
            new.extend_from_slice(&old[at + 1..]);
        });
        self.bitmap &= !bit;
    }
}

/// A node holding two slots whose hashes differ, at `shift` or below.
fn pair<K, V>(shift: u32, a: (u64, Slot<K, V>), b: (u64, Slot<K, V>)) -> Node<K, V> {
    let (ia, ib) = ((a.0 >> shift) & MASK, (b.0 >> shift) & MASK);
    if ia == ib {
        let sub = pair(shift + BITS, a, b);
        Node::new(1 << ia, alloc::vec![Slot::Branch(sub)])
    } else {
        let bitmap = (1u32 << ia) | (1u32 << ib);
        let slots = if ia < ib {
            alloc::vec![a.1, b.1]
        } else {
            alloc::vec![b.1, a.1]
        };
        Node::new(bitmap, slots)
    }
}

impl<K, V> PMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, in hash order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        let mut stack = Vec::new();
        if let Some(root) = &self.root {
            push_halves(&mut stack, root);
        }
        Iter {
            stack,
            collision: [].iter(),
            left: self.len,
        }
    }
}

impl<K: Hash + Eq, V> PMap<K, V> {
    /// The stored key and value for `key`.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find(hash_of(key), key).map(|(k, v, _)| (k, v))
    }

    /// The entry for `key` (whose hash is `hash`), and where it is in its
    /// collision list (0 for a leaf).
    fn find<Q>(&self, hash: u64, key: &Q) -> Option<(&K, &V, usize)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut node = self.root.as_ref()?;
        let mut shift = 0;
        loop {
            let (bit, hi, at) = locate(node.bitmap, hash, shift);
            if node.bitmap & bit == 0 {
                return None;
            }
            match node.slots.half(hi).get(at)? {
                Slot::Leaf {
                    hash: h,
                    key: k,
                    value,
                } => {
                    return (*h == hash && k.borrow() == key).then_some((k, value, 0));
                }
                Slot::Collision { hash: h, entries } => {
                    if *h != hash {
                        return None;
                    }
                    return entries
                        .iter()
                        .enumerate()
                        .find(|(_, (k, _))| k.borrow() == key)
                        .map(|(i, (k, v))| (k, v, i));
                }
                Slot::Branch(sub) => {
                    node = sub;
                    shift += BITS;
                }
            }
        }
    }

    /// The value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key).is_some()
    }
}

/// Where [`PMap::get_spot`] found a key: what [`PMap::get_mut_at`] needs
/// to walk to it again without hashing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    hash: u64,
    /// Its place in its collision list (0 for a leaf).
    index: usize,
}

impl<K: Hash + Eq, V> PMap<K, V> {
    /// The value for `key`, and where it is: a look before a change
    /// ([`PMap::get_mut_at`]) that may not happen.
    pub fn get_spot<Q>(&self, key: &Q) -> Option<(&V, Spot)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(key);
        self.find(hash, key)
            .map(|(_, v, index)| (v, Spot { hash, index }))
    }
}

impl<K: Hash + Eq + Clone, V: Clone> PMap<K, V> {
    /// The value for `key`, to change in place (the nodes on its path that
    /// a snapshot shares are copied first).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Look first, so that a miss copies nothing; the walk down again
        // follows the same path to the same entry (nothing changed in
        // between), so it needs neither the hash again nor a comparison.
        let hash = hash_of(key);
        let (_, _, index) = self.find(hash, key)?;
        self.walk_mut(Spot { hash, index }, |_| true)
    }

    /// The value for `key`, which [`PMap::get_spot`] found at `spot`, to
    /// change in place as [`PMap::get_mut`] does, without hashing or
    /// looking it up again. The entry the walk reaches is checked to be
    /// `key`'s: `None` if it is not (the map changed since, or `spot` is
    /// another key's), and then only the sharing of the nodes on the way
    /// with a snapshot may have been lost, not what the map holds.
    pub fn get_mut_at<Q>(&mut self, key: &Q, spot: Spot) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.walk_mut(spot, |k| k.borrow() == key)
    }

    /// Down to the entry at `spot` (whose key `is_key` accepts), copying
    /// the halves on the way that a snapshot shares.
    fn walk_mut(&mut self, spot: Spot, is_key: impl Fn(&K) -> bool) -> Option<&mut V> {
        let Spot { hash, index } = spot;
        let mut node = self.root.as_mut()?;
        let mut shift = 0;
        loop {
            let (bit, hi, at) = locate(node.bitmap, hash, shift);
            if node.bitmap & bit == 0 {
                return None;
            }
            match node.slots.slot_mut(hi, at)? {
                Slot::Leaf {
                    hash: h,
                    key,
                    value,
                } => return (*h == hash && is_key(key)).then_some(value),
                Slot::Collision { hash: h, entries } => {
                    if *h != hash || !entries.get(index).is_some_and(|(k, _)| is_key(k)) {
                        return None;
                    }
                    return Arc::make_mut(entries).get_mut(index).map(|(_, v)| v);
                }
                Slot::Branch(sub) => {
                    node = sub;
                    shift += BITS;
                }
            }
        }
    }

    /// Sets `key` to `value`; returns the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = hash_of(&key);
        let Some(root) = self.root.as_mut() else {
            let (bit, _, _) = locate(0, hash, 0);
            self.root = Some(Node::new(bit, alloc::vec![Slot::Leaf { hash, key, value }]));
            self.len = 1;
            return None;
        };
        let old = insert_at(root, 0, hash, key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Look first, so that a miss copies nothing.
        let hash = hash_of(key);
        if self.find(hash, key).is_none() {
            return false;
        }
        let Some(root) = self.root.as_mut() else {
            return false;
        };
        let removed = remove_at(root, 0, hash, key);
        if removed {
            self.len -= 1;
            if self.len == 0 {
                self.root = None;
            }
        }
        removed
    }
}

fn insert_at<K: Eq + Clone, V: Clone>(
    node: &mut Node<K, V>,
    shift: u32,
    hash: u64,
    key: K,
    value: V,
) -> Option<V> {
    let (bit, hi, at) = locate(node.bitmap, hash, shift);
    let present = node.bitmap & bit != 0;
    let Some(slot) = present.then(|| node.slots.slot_mut(hi, at)).flatten() else {
        node.insert_slot(bit, hi, at, Slot::Leaf { hash, key, value });
        return None;
    };
    match slot {
        Slot::Leaf {
            hash: h,
            key: k,
            value: v,
        } => {
            if *h == hash && *k == key {
                return Some(core::mem::replace(v, value));
            }
            let other = (*h, k.clone(), v.clone());
            *slot = if other.0 == hash {
                Slot::Collision {
                    hash,
                    entries: Arc::from(alloc::vec![(other.1, other.2), (key, value)]),
                }
            } else {
                let old = Slot::Leaf {
                    hash: other.0,
                    key: other.1,
                    value: other.2,
                };
                let new = Slot::Leaf { hash, key, value };
                Slot::Branch(pair(shift + BITS, (other.0, old), (hash, new)))
            };
            None
        }
        Slot::Collision { hash: h, entries } => {
            if *h == hash {
                let entries = Arc::make_mut(entries);
                if let Some((_, v)) = entries.iter_mut().find(|(k, _)| *k == key) {
                    return Some(core::mem::replace(v, value));
                }
                let mut grown = entries.to_vec();
                grown.push((key, value));
                *slot = Slot::Collision {
                    hash,
                    entries: Arc::from(grown),
                };
                return None;
            }
            let old = (*h, slot.clone());
            let new = (hash, Slot::Leaf { hash, key, value });
            *slot = Slot::Branch(pair(shift + BITS, old, new));
            None
        }
        Slot::Branch(sub) => insert_at(sub, shift + BITS, hash, key, value),
    }
}

/// Removes `key` below `node`, which holds it.
fn remove_at<K: Borrow<Q> + Clone, V: Clone, Q: Eq + ?Sized>(
    node: &mut Node<K, V>,
    shift: u32,
    hash: u64,
    key: &Q,
) -> bool {
    let (bit, hi, at) = locate(node.bitmap, hash, shift);
    if node.bitmap & bit == 0 {
        return false;
    }
    let Some(slot) = node.slots.slot_mut(hi, at) else {
        return false;
    };
    let emptied = match slot {
        Slot::Leaf { key: k, .. } => {
            if (*k).borrow() != key {
                return false;
            }
            true
        }
        Slot::Collision { hash: h, entries } => {
            let Some(i) = entries.iter().position(|(k, _)| k.borrow() == key) else {
                return false;
            };
            let mut rest = entries.to_vec();
            rest.remove(i);
            *slot = match rest.pop() {
                Some((k, v)) if rest.is_empty() => Slot::Leaf {
                    hash: *h,
                    key: k,
                    value: v,
                },
                Some(last) => {
                    rest.push(last);
                    Slot::Collision {
                        hash: *h,
                        entries: Arc::from(rest),
                    }
                }
                None => return false,
            };
            false
        }
        Slot::Branch(sub) => {
            if !remove_at(sub, shift + BITS, hash, key) {
                return false;
            }
            // A node left with one leaf (or collision) moves up into its
            // parent's slot, so that the trie stays as shallow as its keys
            // need, whatever the order of inserts and removes.
            if sub.bitmap == 0 {
                true
            } else {
                let lone = match sub.slots.iter().next() {
                    Some(only @ (Slot::Leaf { .. } | Slot::Collision { .. }))
                        if sub.bitmap.count_ones() == 1 =>
                    {
                        Some(only.clone())
                    }
                    _ => None,
                };
                if let Some(only) = lone {
                    *slot = only;
                }
                false
            }
        }
    };
    if emptied {
        node.remove_slot(bit, hi, at);
    }
    true
}

/// One difference between two versions of a map ([`PMap::diff_from`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a, K, V> {
    /// The key is new, or its value is not the same as before.
    Set(&'a K, &'a V),
    /// The key is gone.
    Removed(&'a K),
}

impl<K: Eq, V> PMap<K, V> {
    /// What changed from `old` to `self`, in no particular order: the
    /// entries set or replaced, and the keys removed. Trie nodes the two
    /// maps share (`old` a snapshot `self` was changed from) are skipped
    /// without a look inside, so the cost follows the changes, not the
    /// size; `same` says whether two values are the same (for `Arc`s,
    /// `Arc::ptr_eq`, which makes an unchanged value cost nothing either).
    pub fn diff_from<'a>(
        &'a self,
        old: &'a Self,
        same: &impl Fn(&V, &V) -> bool,
        out: &mut impl FnMut(Change<'a, K, V>),
    ) {
        match (&old.root, &self.root) {
            (None, None) => {}
            (Some(o), Some(n)) => diff_nodes(o, n, same, out),
            (None, Some(n)) => entries_of(n, &mut |k, v| out(Change::Set(k, v))),
            (Some(o), None) => entries_of(o, &mut |k, _| out(Change::Removed(k))),
        }
    }
}

/// Every entry below `node`.
fn entries_of<'a, K, V>(node: &'a Node<K, V>, f: &mut impl FnMut(&'a K, &'a V)) {
    for slot in node.slots.iter() {
        slot_entries(slot, f);
    }
}

fn slot_entries<'a, K, V>(slot: &'a Slot<K, V>, f: &mut impl FnMut(&'a K, &'a V)) {
    match slot {
        Slot::Leaf { key, value, .. } => f(key, value),
        Slot::Collision { entries, .. } => entries.iter().for_each(|(k, v)| f(k, v)),
        Slot::Branch(sub) => entries_of(sub, f),
    }
}

fn diff_nodes<'a, K: Eq, V>(
    old: &'a Node<K, V>,
    new: &'a Node<K, V>,
    same: &impl Fn(&V, &V) -> bool,
    out: &mut impl FnMut(Change<'a, K, V>),
) {
    for hi in [false, true] {
        let (o, n) = if hi {
            (&old.slots.hi, &new.slots.hi)
        } else {
            (&old.slots.lo, &new.slots.lo)
        };
        // A half the two share is the same slots at the same positions.
        if let (Some(o), Some(n)) = (o, n) {
            if Arc::ptr_eq(o, n) {
                continue;
            }
        }
        let (o, n) = (old.slots.half(hi), new.slots.half(hi));
        let (mut io, mut inew) = (0usize, 0usize);
        let first = if hi { HALF } else { 0 };
        for pos in first..first + HALF {
            let bit = 1u32 << pos;
            let o = (old.bitmap & bit != 0).then(|| {
                io += 1;
                o.get(io - 1)
            });
            let n = (new.bitmap & bit != 0).then(|| {
                inew += 1;
                n.get(inew - 1)
            });
            match (o.flatten(), n.flatten()) {
                (None, None) => {}
                (Some(o), None) => slot_entries(o, &mut |k, _| out(Change::Removed(k))),
                (None, Some(n)) => slot_entries(n, &mut |k, v| out(Change::Set(k, v))),
                (Some(Slot::Branch(o)), Some(Slot::Branch(n))) => diff_nodes(o, n, same, out),
                (Some(o), Some(n)) => diff_slots(o, n, same, out),
            }
        }
    }
}

/// Two slots at one position, at least one of them not a branch: the
/// non-branch side holds one entry or a few colliding ones, so looking
/// each entry of one side up in the other by a scan stays cheap.
fn diff_slots<'a, K: Eq, V>(
    old: &'a Slot<K, V>,
    new: &'a Slot<K, V>,
    same: &impl Fn(&V, &V) -> bool,
    out: &mut impl FnMut(Change<'a, K, V>),
) {
    let mut before: Vec<(&'a K, &'a V)> = Vec::new();
    slot_entries(old, &mut |k, v| before.push((k, v)));
    let mut seen = alloc::vec![false; before.len()];
    slot_entries(
        new,
        &mut |k, v| match before.iter().position(|(ok, _)| *ok == k) {
            Some(i) => {
                seen[i] = true;
                if !same(before[i].1, v) {
                    out(Change::Set(k, v));
                }
            }
            None => out(Change::Set(k, v)),
        },
    );
    for (i, (k, _)) in before.iter().enumerate() {
        if !seen[i] {
            out(Change::Removed(k));
        }
    }
}

/// An iterator over a [`PMap`]'s entries.
pub struct Iter<'a, K, V> {
    stack: Vec<core::slice::Iter<'a, Slot<K, V>>>,
    collision: core::slice::Iter<'a, (K, V)>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.collision.next() {
                self.left -= 1;
                return Some((k, v));
            }
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Slot::Leaf { key, value, .. }) => {
                    self.left -= 1;
                    return Some((key, value));
                }
                Some(Slot::Collision { entries, .. }) => self.collision = entries.iter(),
                Some(Slot::Branch(sub)) => push_halves(&mut self.stack, sub),
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

/// `node`'s halves onto an iterator's stack, the low one on top.
fn push_halves<'a, K, V>(stack: &mut Vec<core::slice::Iter<'a, Slot<K, V>>>, node: &'a Node<K, V>) {
    if let Some(hi) = &node.slots.hi {
        stack.push(hi.iter());
    }
    if let Some(lo) = &node.slots.lo {
        stack.push(lo.iter());
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for PMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
#[path = "pmap_tests.rs"]
mod tests;
