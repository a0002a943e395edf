//! The store: nodes in a persistent map, so that a transaction's snapshot is
//! a constant-time clone (oxenstored's idea) and a commit is a swap.
//!
//! Nodes are kept by canonical path; each node lists its children's leaf
//! names in creation order, as C xenstored does (so `DIRECTORY`,
//! `xenstore-ls` and `xenstore-list` print what they print against C, and
//! no hash order ever reaches an output), in persistent maps. Per-domain accounting (nodes owned, bytes
//! used) lives in the store too, so that it moves with snapshots and commits.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use xenring::{DomId, Perm};

use self::pmap::{PMap, Spot};

mod image;
mod pmap;

pub use image::ImageError;

/// A canonical path (absolute, or a special `@` path).
pub type Path = Arc<str>;

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The value.
    pub value: Arc<[u8]>,
    /// Owner entry first (its kind is the default access), then per-domain
    /// entries.
    pub perms: Arc<[Perm]>,
    /// Leaf names of the children, in creation order.
    pub children: Children,
    /// When the node was created (a store-wide counter): its place among
    /// its siblings, which a live update's stream keeps.
    pub created: u64,
    /// Changes whenever the node (value, permissions or child list) changes.
    pub generation: u64,
}

impl Node {
    /// The owning domain.
    pub fn owner(&self) -> DomId {
        self.perms.first().map_or(0, |p| p.domid)
    }

    /// Bytes this node is charged for (path, value, permissions).
    pub fn cost(path: &str, value: &[u8], perms: &[Perm]) -> u64 {
        (path.len() + value.len() + perms.len() * 8 + 32) as u64
    }

    /// The `DIRECTORY` payload: each child's name NUL-terminated.
    pub fn children_payload(&self) -> Vec<u8> {
        let len = self.children.iter().map(|c| c.len() + 1).sum();
        let mut out = Vec::with_capacity(len);
        for child in &self.children {
            out.extend_from_slice(child.as_bytes());
            out.push(0);
        }
        out
    }
}

/// A node's children: leaf names in the order they were created (C lists
/// them so; re-creating a child puts it last). Persistent, so a snapshot
/// shares them: the order is kept in chunks of 32 names behind
/// reference counts (fast to walk for `DIRECTORY`; a change to a shared
/// list copies the chunk list and one chunk), and a list longer than
/// 8 also keeps a persistent set of the names for lookups.
#[derive(Clone, Default)]
pub struct Children {
    chunks: Arc<Vec<Arc<Vec<Arc<str>>>>>,
    len: usize,
    /// The names, once there are more than `SMALL`; each is the `Arc`
    /// the order holds, which `remove` looks for.
    names: Option<PMap<Arc<str>, ()>>,
}

/// Names per chunk of a [`Children`] list.
const CHUNK: usize = 32;

/// Up to this many children are looked up by a scan, without a set.
const SMALL: usize = 8;

impl Children {
    /// Adds `name` after the others (no-op if present).
    pub fn insert(&mut self, name: Arc<str>) {
        if self.contains(&name) {
            return;
        }
        let chunks = Arc::make_mut(&mut self.chunks);
        match chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(Arc::clone(&name)),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK.min(self.len + 1));
                chunk.push(Arc::clone(&name));
                chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
        if let Some(names) = &mut self.names {
            names.insert(name, ());
        } else if self.len > SMALL {
            let mut names = PMap::new();
            for n in self.iter() {
                names.insert(Arc::clone(n), ());
            }
            self.names = Some(names);
        }
    }

    /// Removes `name` if present (a scan of the order, as C's memmove of
    /// its children buffer).
    pub fn remove(&mut self, name: &str) {
        let stored = match &self.names {
            Some(names) => names.get_key_value(name).map(|(k, _)| Arc::clone(k)),
            None => self.iter().find(|n| &***n == name).cloned(),
        };
        let Some(stored) = stored else {
            return;
        };
        let Some((c, at)) = self.chunks.iter().enumerate().find_map(|(c, chunk)| {
            chunk
                .iter()
                .position(|n| Arc::ptr_eq(n, &stored))
                .map(|at| (c, at))
        }) else {
            return;
        };
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = Arc::make_mut(&mut chunks[c]);
        chunk.remove(at);
        if chunk.is_empty() {
            chunks.remove(c);
        }
        self.len -= 1;
        if let Some(names) = &mut self.names {
            names.remove(name);
        }
    }

    /// Whether `name` is a child.
    pub fn contains(&self, name: &str) -> bool {
        match &self.names {
            Some(names) => names.contains_key(name),
            None => self.iter().any(|n| &**n == name),
        }
    }

    /// The names, oldest first.
    pub fn iter(&self) -> ChildIter<'_> {
        ChildIter {
            chunks: self.chunks.iter(),
            front: [].iter(),
            back: [].iter(),
            left: self.len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl PartialEq for Children {
    /// The same names in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && (Arc::ptr_eq(&self.chunks, &other.chunks) || self.iter().eq(other.iter()))
    }
}

impl Eq for Children {}

impl fmt::Debug for Children {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The names of a [`Children`] list, oldest first.
#[derive(Clone)]
pub struct ChildIter<'a> {
    chunks: core::slice::Iter<'a, Arc<Vec<Arc<str>>>>,
    front: core::slice::Iter<'a, Arc<str>>,
    back: core::slice::Iter<'a, Arc<str>>,
    left: usize,
}

impl<'a> Iterator for ChildIter<'a> {
    type Item = &'a Arc<str>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(n) = self.front.next() {
                self.left -= 1;
                return Some(n);
            }
            match self.chunks.next() {
                Some(chunk) => self.front = chunk.iter(),
                None => {
                    let n = self.back.next()?;
                    self.left -= 1;
                    return Some(n);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl DoubleEndedIterator for ChildIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(n) = self.back.next_back() {
                self.left -= 1;
                return Some(n);
            }
            match self.chunks.next_back() {
                Some(chunk) => self.back = chunk.iter(),
                None => {
                    let n = self.front.next_back()?;
                    self.left -= 1;
                    return Some(n);
                }
            }
        }
    }
}

impl ExactSizeIterator for ChildIter<'_> {}

impl<'a> IntoIterator for &'a Children {
    type Item = &'a Arc<str>;
    type IntoIter = ChildIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// What a domain owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    /// Nodes owned.
    pub nodes: u32,
    /// Bytes charged.
    pub memory: u64,
}

/// The whole tree.
#[derive(Debug, Clone)]
pub struct Store {
    nodes: PMap<Path, Arc<Node>>,
    accounts: PMap<DomId, Account>,
    next_generation: u64,
    /// Bumped by every modification: a transaction whose base version is
    /// still current commits by swapping its copy in.
    version: u64,
    /// The last large child listings built ([`Store::listing`]).
    listings: ListingCache,
    /// Bytes of large listings built so far (what a guest asking for a
    /// listing it keeps changing costs; charged as writes).
    listing_bytes_built: u64,
}

/// Where [`Store::get_at`] found a node, for [`Store::overwrite_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpot(Spot);

/// A `DIRECTORY` listing: built for this request, or shared from the
/// cache.
#[derive(Debug, Clone)]
pub enum Listing {
    /// Small: built (cheaper than caching it).
    Built(Vec<u8>),
    /// Large: cached for the node's generation.
    Cached(Arc<[u8]>),
}

impl Listing {
    /// The children's names, each NUL-terminated.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Listing::Built(v) => v,
            Listing::Cached(a) => a,
        }
    }
}

/// Listings longer than this are cached (shorter ones cost less to build
/// than a reply's copy).
const LISTING_CACHE_MIN: usize = 4096;

/// Listings a store's cache holds.
const LISTING_CACHE_ENTRIES: usize = 4;

/// A few large child listings, each valid for one generation of its node
/// (the generation changes with the child list, so a stale entry is never
/// used; generations only grow along a store's history, and a snapshot
/// that diverges hands out new ones). Fixed-size and inline: cloning a
/// store (a transaction's snapshot) stays cheap, and it needs no `std`.
#[derive(Clone, Default)]
struct ListingCache {
    entries: [Option<CachedListing>; LISTING_CACHE_ENTRIES],
    /// The entry replaced next (round robin).
    next: usize,
}

/// A cached listing: the node's path, its generation, the listing.
type CachedListing = (Path, u64, Arc<[u8]>);

impl fmt::Debug for ListingCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.entries.iter().flatten().count();
        write!(f, "ListingCache({used} entries)")
    }
}

impl ListingCache {
    fn get(&self, path: &str, generation: u64) -> Option<Arc<[u8]>> {
        self.entries
            .iter()
            .flatten()
            .find_map(|(p, g, list)| (*g == generation && &**p == path).then(|| Arc::clone(list)))
    }

    fn put(&mut self, path: &str, generation: u64, list: Arc<[u8]>) {
        // The same node's older listing is replaced first.
        let slot = self
            .entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|(p, _, _)| &**p == path))
            .unwrap_or_else(|| {
                let s = self.next;
                self.next = (self.next + 1) % LISTING_CACHE_ENTRIES;
                s
            });
        if let Some(e) = self.entries.get_mut(slot) {
            *e = Some((Arc::from(path), generation, list));
        }
    }
}

/// The parent of a canonical absolute path (`None` for `/` and `@` paths).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || path.starts_with('@') {
        return None;
    }
    match last_slash(path) {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Where the last `/` of `path` is: a plain walk back over its bytes,
/// cheaper on a short path than `str::rfind`'s general search (`/` is
/// ASCII: never part of another character).
fn last_slash(path: &str) -> Option<usize> {
    path.as_bytes().iter().rposition(|&b| b == b'/')
}

/// The leaf name of a canonical absolute path.
pub fn basename(path: &str) -> &str {
    match last_slash(path) {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `parent/child`.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Whether `path` is `ancestor` or below it.
pub fn is_child_of(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.len() > ancestor.len()
            && path.starts_with(ancestor)
            && path.as_bytes()[ancestor.len()] == b'/')
}

/// Number of components below `ancestor` (`path` must be a child of it).
pub fn depth_below(path: &str, ancestor: &str) -> usize {
    if path == ancestor {
        return 0;
    }
    let rest = if ancestor == "/" {
        &path[1..]
    } else {
        &path[ancestor.len() + 1..]
    };
    rest.split('/').count()
}

/// Whether a node counts against its owner's quotas: the special `@`
/// nodes do not (C keeps them outside its database).
fn accounted(path: &str) -> bool {
    !path.starts_with('@')
}

impl Store {
    /// A store holding only `/` (owned by `owner`, no access for others)
    /// and the special nodes.
    pub fn new(owner: DomId) -> Self {
        let mut store = Self {
            nodes: PMap::new(),
            accounts: PMap::new(),
            next_generation: 1,
            version: 0,
            listings: ListingCache::default(),
            listing_bytes_built: 0,
        };
        let perms: Arc<[Perm]> = Arc::from(vec![Perm::new(xenring::PermKind::None, owner)]);
        // C xenstored 4.17 starts with /tool/xenstored too (what
        // `xenstore-ls` shows on a fresh daemon).
        for path in [
            "/",
            "/tool",
            "/tool/xenstored",
            "@introduceDomain",
            "@releaseDomain",
        ] {
            store.put_node(Arc::from(path), Arc::from(&b""[..]), Arc::clone(&perms));
        }
        store
    }

    /// The modification counter.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A node.
    pub fn get(&self, path: &str) -> Option<&Arc<Node>> {
        self.nodes.get(path)
    }

    /// A node, and where it is: for a look before a change that may not
    /// happen ([`Store::overwrite_at`]).
    pub fn get_at(&self, path: &str) -> Option<(&Arc<Node>, NodeSpot)> {
        self.nodes
            .get_spot(path)
            .map(|(node, spot)| (node, NodeSpot(spot)))
    }

    /// A node's `DIRECTORY` listing (its children's names, each
    /// NUL-terminated), `None` if there is no such node. A large one is
    /// built once per generation of the node and then shared, so that a
    /// guest asking again and again for a 2 MB directory costs a lookup,
    /// not a rebuild.
    pub fn listing(&mut self, path: &str) -> Option<Listing> {
        let node = self.nodes.get(path)?;
        Some(Self::listing_of(
            &mut self.listings,
            &mut self.listing_bytes_built,
            path,
            node,
        ))
    }

    /// [`Store::listing`] after a check, on one lookup of the node:
    /// `check` is given the store and the node (`None` if there is none)
    /// and may refuse it, or take what it needs of it; then the listing
    /// follows (`None` if there is no node, as [`Store::listing`] says).
    pub fn listing_checked<T, E>(
        &mut self,
        path: &str,
        check: impl FnOnce(&Store, Option<&Arc<Node>>) -> Result<T, E>,
    ) -> Result<(T, Option<Listing>), E> {
        let node = self.nodes.get(path);
        let taken = check(self, node)?;
        let listing = node.map(|node| {
            Self::listing_of(
                &mut self.listings,
                &mut self.listing_bytes_built,
                path,
                node,
            )
        });
        Ok((taken, listing))
    }

    /// `node`'s listing, from `listings` or built (and counted in
    /// `built`): [`Store::listing`]'s work once the node is found.
    fn listing_of(
        listings: &mut ListingCache,
        built: &mut u64,
        path: &str,
        node: &Node,
    ) -> Listing {
        let generation = node.generation;
        if let Some(list) = listings.get(path, generation) {
            return Listing::Cached(list);
        }
        let list = node.children_payload();
        if list.len() <= LISTING_CACHE_MIN {
            return Listing::Built(list);
        }
        *built = built.wrapping_add(list.len() as u64);
        let list: Arc<[u8]> = Arc::from(list);
        listings.put(path, generation, Arc::clone(&list));
        Listing::Cached(list)
    }

    /// Bytes of large listings [`Store::listing`] has built (not served
    /// from its cache) so far, wrapping.
    pub fn listing_bytes_built(&self) -> u64 {
        self.listing_bytes_built
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only nothing is stored (never: `/` always exists).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A domain's account.
    pub fn account(&self, domid: DomId) -> Account {
        self.accounts.get(&domid).copied().unwrap_or_default()
    }

    /// All accounts, ordered by domid.
    pub fn accounts(&self) -> Vec<(DomId, Account)> {
        let mut v: Vec<_> = self.accounts.iter().map(|(&d, &a)| (d, a)).collect();
        v.sort_by_key(|(d, _)| *d);
        v
    }

    fn charge(&mut self, owner: DomId, nodes: i64, memory: i64) {
        let moved = |acct: &mut Account| {
            acct.nodes = u32::try_from(i64::from(acct.nodes) + nodes).unwrap_or(0);
            acct.memory =
                u64::try_from(i64::try_from(acct.memory).unwrap_or(i64::MAX) + memory).unwrap_or(0);
            *acct == Account::default()
        };
        // An account that exists is changed where it is (one lookup); an
        // account left empty is removed, as none is kept.
        match self.accounts.get_mut(&owner) {
            Some(acct) => {
                if moved(acct) {
                    self.accounts.remove(&owner);
                }
            }
            None => {
                let mut acct = Account::default();
                if !moved(&mut acct) {
                    self.accounts.insert(owner, acct);
                }
            }
        }
    }

    fn next_gen(&mut self) -> u64 {
        let g = self.next_generation;
        self.next_generation += 1;
        g
    }

    /// Inserts or replaces a node's value and permissions, keeping its
    /// children; links it into its parent (which must exist). Accounting
    /// follows the owner.
    pub fn put_node(&mut self, path: Path, value: Arc<[u8]>, perms: Arc<[Perm]>) {
        self.version += 1;
        let generation = self.next_gen();
        let (children, created, old) = match self.nodes.get(&path) {
            Some(old) => (old.children.clone(), old.created, Some(Arc::clone(old))),
            None => (Children::default(), generation, None),
        };
        match &old {
            Some(old) if accounted(&path) => self.charge(
                old.owner(),
                -1,
                -(Node::cost(&path, &old.value, &old.perms) as i64),
            ),
            Some(_) => {}
            None => {
                if let Some(p) = parent(&path) {
                    self.link_child(p, basename(&path));
                }
            }
        }
        let node = Node {
            value,
            perms,
            children,
            created,
            generation,
        };
        if accounted(&path) {
            self.charge(
                node.owner(),
                1,
                Node::cost(&path, &node.value, &node.perms) as i64,
            );
        }
        self.nodes.insert(path, Arc::new(node));
    }

    /// Replaces an existing node's value and permissions, keeping its
    /// children and creation: what [`Store::put_node`] does to a node that
    /// exists, without building its path (a node not shared with a
    /// snapshot is changed in place). Accounting follows the owner;
    /// `false`, and nothing done, if there is no such node.
    pub fn overwrite(&mut self, path: &str, value: Arc<[u8]>, perms: Arc<[Perm]>) -> bool {
        match self.nodes.get_spot(path) {
            Some((_, spot)) => self.overwrite_at(path, NodeSpot(spot), value, perms),
            None => false,
        }
    }

    /// [`Store::overwrite`] of the node [`Store::get_at`] found at `spot`,
    /// without hashing its path again (the walk down checks it finds
    /// `path`: `false`, and nothing done, if the node has gone since or
    /// `spot` is another node's).
    pub fn overwrite_at(
        &mut self,
        path: &str,
        spot: NodeSpot,
        value: Arc<[u8]>,
        perms: Arc<[Perm]>,
    ) -> bool {
        let new_owner = perms.first().map_or(0, |p| p.domid);
        let new_cost = Node::cost(path, &value, &perms);
        let generation = self.next_generation;
        let Some(slot) = self.nodes.get_mut_at(path, spot.0) else {
            return false;
        };
        let (old_owner, old_cost) = (slot.owner(), Node::cost(path, &slot.value, &slot.perms));
        match Arc::get_mut(slot) {
            Some(node) => {
                node.value = value;
                node.perms = perms;
                node.generation = generation;
            }
            // Shared with a snapshot: a new node, not a copy of the old
            // one whose value and permissions are then replaced.
            None => {
                *slot = Arc::new(Node {
                    value,
                    perms,
                    children: slot.children.clone(),
                    created: slot.created,
                    generation,
                });
            }
        }
        self.version += 1;
        self.next_generation += 1;
        if accounted(path) {
            if old_owner == new_owner {
                // One change of the account (the node's charge moves by
                // the difference), as the two below come to.
                if new_cost != old_cost {
                    self.charge(old_owner, 0, new_cost as i64 - old_cost as i64);
                }
            } else {
                self.charge(old_owner, -1, -(old_cost as i64));
                self.charge(new_owner, 1, new_cost as i64);
            }
        }
        true
    }

    fn link_child(&mut self, parent: &str, child: &str) {
        let generation = self.next_gen();
        if let Some(p) = self.nodes.get_mut(parent) {
            let p = Arc::make_mut(p);
            p.children.insert(Arc::from(child));
            p.generation = generation;
        }
    }

    fn unlink_child(&mut self, parent: &str, child: &str) {
        let generation = self.next_gen();
        if let Some(p) = self.nodes.get_mut(parent) {
            let p = Arc::make_mut(p);
            p.children.remove(child);
            p.generation = generation;
        }
    }

    /// Removes a node and everything below it; returns the removed nodes,
    /// parents before children.
    pub fn remove_tree(&mut self, path: &str) -> Vec<(Path, Arc<Node>)> {
        let mut removed = Vec::new();
        let Some(top) = self.nodes.get(path).cloned() else {
            return removed;
        };
        self.version += 1;
        let mut stack: Vec<(Path, Arc<Node>)> = vec![(Arc::from(path), top)];
        while let Some((p, node)) = stack.pop() {
            for child in node.children.iter().rev() {
                let cp: Path = Arc::from(join(&p, child));
                if let Some(cn) = self.nodes.get(&cp).cloned() {
                    stack.push((cp, cn));
                }
            }
            self.nodes.remove(&p);
            if accounted(&p) {
                self.charge(
                    node.owner(),
                    -1,
                    -(Node::cost(&p, &node.value, &node.perms) as i64),
                );
            }
            removed.push((p, node));
        }
        if let Some(p) = parent(path) {
            self.unlink_child(p, basename(path));
        }
        removed
    }

    /// Every node, parents before their children (level by level), each
    /// level in creation order, so that siblings come in their parent's
    /// order and a store rebuilt from this sequence lists children as this
    /// one does; the special `@` nodes last. Cheaper than [`Store::walk`]
    /// on a large store: no lookups and no paths built, one sort.
    pub fn parents_first(&self) -> Vec<(Path, Arc<Node>)> {
        let mut out: Vec<(Path, Arc<Node>)> = self
            .nodes
            .iter()
            .map(|(p, n)| (Arc::clone(p), Arc::clone(n)))
            .collect();
        let key = |(p, n): &(Path, Arc<Node>)| {
            let level = if &**p == "/" {
                0
            } else {
                p.bytes().filter(|&b| b == b'/').count()
            };
            (p.starts_with('@'), level, n.created)
        };
        // The key counts a path's slashes: once per node, not per
        // comparison (this sort is most of writing a large stream).
        out.sort_by_cached_key(key);
        out
    }

    /// Every node with its path: the tree depth first from `/`, each node's
    /// children in creation order, then the special (`@`) nodes by name.
    pub fn walk(&self) -> Vec<(Path, Arc<Node>)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack: Vec<Path> = vec![Arc::from("/")];
        while let Some(p) = stack.pop() {
            let Some(node) = self.nodes.get(&p) else {
                continue;
            };
            for child in node.children.iter().rev() {
                stack.push(Arc::from(join(&p, child)));
            }
            out.push((p, Arc::clone(node)));
        }
        let mut specials: Vec<_> = self
            .nodes
            .iter()
            .filter(|(p, _)| p.starts_with('@'))
            .map(|(p, n)| (Arc::clone(p), Arc::clone(n)))
            .collect();
        specials.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(specials);
        out
    }

    /// The nodes `domid` owns that no other node it owns is above, by
    /// path: removing each of these (with what is below it) removes every
    /// node it owns. The special `@` nodes are not counted.
    pub fn owned_by(&self, domid: DomId) -> Vec<Path> {
        if self.account(domid).nodes == 0 {
            return Vec::new();
        }
        let owned: BTreeSet<Path> = self
            .nodes
            .iter()
            .filter(|(p, n)| accounted(p) && n.owner() == domid)
            .map(|(p, _)| Arc::clone(p))
            .collect();
        owned
            .iter()
            .filter(|p| {
                let mut up = parent(p);
                while let Some(a) = up {
                    if owned.contains(a) {
                        return false;
                    }
                    up = parent(a);
                }
                true
            })
            .cloned()
            .collect()
    }

    /// Replaces the permissions of every node naming `domid`: an owner entry
    /// goes to `new_owner`, other entries are dropped (a dead domain's
    /// entries stop applying). Returns how many nodes changed.
    pub fn forget_domain(&mut self, domid: DomId, new_owner: DomId) -> usize {
        let mut affected: Vec<(Path, Arc<Node>)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.perms.iter().any(|p| p.domid == domid))
            .map(|(p, n)| (Arc::clone(p), Arc::clone(n)))
            .collect();
        // By path, so that the generations handed out below do not follow
        // the map's hash order.
        affected.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (path, node) in &affected {
            let mut perms: Vec<Perm> = node.perms.to_vec();
            if let Some(owner) = perms.first_mut() {
                if owner.domid == domid {
                    owner.domid = new_owner;
                }
            }
            let head = perms.first().copied();
            perms.retain(|p| p.domid != domid);
            if let Some(h) = head {
                if perms.first() != Some(&h) {
                    perms.insert(0, h);
                }
            }
            self.put_node(Arc::clone(path), Arc::clone(&node.value), Arc::from(perms));
        }
        affected.len()
    }

    /// Consistency walk: every node reachable from its parent, every child
    /// listed exists, accounting matches the nodes. Returns problems found.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut expected: BTreeMap<DomId, Account> = BTreeMap::new();
        for (path, node) in self.nodes.iter() {
            if accounted(path) {
                let acct = expected.entry(node.owner()).or_default();
                acct.nodes += 1;
                acct.memory += Node::cost(path, &node.value, &node.perms);
            }
            if node.perms.is_empty() {
                problems.push(format!("{path}: no permissions"));
            }
            if let Some(p) = parent(path) {
                match self.nodes.get(p) {
                    None => problems.push(format!("{path}: parent {p} missing")),
                    Some(pn) if !pn.children.contains(basename(path)) => {
                        problems.push(format!("{path}: not listed in {p}"))
                    }
                    _ => {}
                }
            }
            for child in &node.children {
                let cp = join(path, child);
                if !self.nodes.contains_key(cp.as_str()) {
                    problems.push(format!("{path}: child {child} missing"));
                }
            }
        }
        for (domid, acct) in &expected {
            if self.account(*domid) != *acct {
                problems.push(format!(
                    "domain {domid}: accounting says {:?}, nodes say {:?}",
                    self.account(*domid),
                    acct
                ));
            }
        }
        for (domid, acct) in self.accounts.iter() {
            if !expected.contains_key(domid) && *acct != Account::default() {
                problems.push(format!("domain {domid}: charged {acct:?} for no nodes"));
            }
        }
        problems.sort();
        problems
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn test_path_helpers_table() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert_eq!(parent("@releaseDomain"), None);
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_child_of("/a/b", "/a"));
        assert!(is_child_of("/a", "/a"));
        assert!(is_child_of("/a", "/"));
        assert!(!is_child_of("/ab", "/a"));
        assert_eq!(depth_below("/a/b/c", "/a"), 2);
        assert_eq!(depth_below("/a", "/"), 1);
        assert_eq!(depth_below("/a", "/a"), 0);
    }

    #[test]
    fn test_children_in_creation_order_and_kept_by_parents_first() {
        let perms: Arc<[Perm]> = Arc::from(vec![Perm::new(xenring::PermKind::None, 0)]);
        let mut s = Store::new(0);
        for p in ["/b", "/a", "/a/y", "/c", "/a/x"] {
            s.put_node(Arc::from(p), Arc::from(&b""[..]), Arc::clone(&perms));
        }
        let names = |s: &Store, p: &str| -> Vec<String> {
            s.get(p)
                .unwrap()
                .children
                .iter()
                .map(|c| c.to_string())
                .collect()
        };
        assert_eq!(names(&s, "/"), ["tool", "b", "a", "c"]);
        assert_eq!(names(&s, "/a"), ["y", "x"]);
        // Re-creating puts a child last; overwriting keeps its place.
        s.remove_tree("/b");
        s.put_node(Arc::from("/b"), Arc::from(&b""[..]), Arc::clone(&perms));
        s.put_node(Arc::from("/a"), Arc::from(&b"v"[..]), Arc::clone(&perms));
        assert_eq!(names(&s, "/"), ["tool", "a", "c", "b"]);
        // A store rebuilt in parents_first() order (as a live update's
        // stream is) lists children the same way.
        let mut rebuilt = Store::new(0);
        for (p, n) in s.parents_first() {
            rebuilt.put_node(p, Arc::clone(&n.value), Arc::clone(&n.perms));
        }
        for p in ["/", "/a", "/tool"] {
            assert_eq!(names(&rebuilt, p), names(&s, p), "{p}");
        }
        assert!(s.check().is_empty() && rebuilt.check().is_empty());
    }

    #[test]
    fn test_store_snapshot_is_independent() {
        let mut s = Store::new(0);
        let perms: Arc<[Perm]> = Arc::from(vec![Perm::new(xenring::PermKind::None, 0)]);
        s.put_node(Arc::from("/a"), Arc::from(&b"1"[..]), Arc::clone(&perms));
        let snap = s.clone();
        s.put_node(Arc::from("/a/b"), Arc::from(&b"2"[..]), perms);
        assert!(snap.get("/a/b").is_none());
        assert!(snap.get("/a").unwrap().children.is_empty());
        assert!(s.get("/a").unwrap().children.contains("b"));
        assert!(s.check().is_empty(), "{:?}", s.check());
        let removed = s.remove_tree("/a");
        assert_eq!(removed.len(), 2);
        assert!(s.check().is_empty(), "{:?}", s.check());
        assert_eq!(s.account(0).nodes, 3, "/, /tool and /tool/xenstored, as C");
    }
}

#[cfg(test)]
mod listing_tests {
    use proptest::prelude::*;

    use super::*;

    fn perms() -> Arc<[Perm]> {
        Arc::from(vec![Perm::new(xenring::PermKind::None, 0)])
    }

    fn add(s: &mut Store, path: &str) {
        s.put_node(Arc::from(path), Arc::from(&b""[..]), perms());
    }

    fn cached(l: Listing) -> Arc<[u8]> {
        match l {
            Listing::Cached(a) => a,
            Listing::Built(_) => panic!("not cached"),
        }
    }

    /// Children with 100-byte names: 50 make a 5 KB listing.
    fn big(s: &mut Store, n: usize) {
        add(s, "/d");
        for i in 0..n {
            add(s, &format!("/d/{i:03}{}", "x".repeat(97)));
        }
    }

    #[test]
    fn test_large_listing_built_once_per_generation() {
        let mut s = Store::new(0);
        big(&mut s, 50);
        assert_eq!(s.listing_bytes_built(), 0);
        let first = cached(s.listing("/d").unwrap());
        assert_eq!(s.listing_bytes_built(), first.len() as u64);
        assert_eq!(&*first, &s.get("/d").unwrap().children_payload()[..]);
        let again = cached(s.listing("/d").unwrap());
        assert!(Arc::ptr_eq(&first, &again), "served from the cache");
        assert_eq!(s.listing_bytes_built(), first.len() as u64);
        // A new child, a removed one, a changed value: a new generation,
        // a new listing that shows it.
        add(&mut s, "/d/new");
        let grown = cached(s.listing("/d").unwrap());
        assert!(grown.ends_with(b"new\0"));
        s.remove_tree("/d/new");
        let back = cached(s.listing("/d").unwrap());
        assert_eq!(&*back, &*first);
        assert!(!Arc::ptr_eq(&back, &first));
        // Small listings are not cached; a missing node has none.
        add(&mut s, "/e");
        add(&mut s, "/e/a");
        assert!(matches!(s.listing("/e"), Some(Listing::Built(v)) if v == b"a\0"));
        assert!(s.listing("/nope").is_none());
    }

    #[test]
    fn test_snapshot_and_its_origin_keep_their_own_listings() {
        let mut s = Store::new(0);
        big(&mut s, 50);
        let before = cached(s.listing("/d").unwrap());
        let mut snap = s.clone();
        add(&mut snap, "/d/in-snapshot");
        add(&mut s, "/d/in-origin");
        let l_snap = cached(snap.listing("/d").unwrap());
        let l_orig = cached(s.listing("/d").unwrap());
        assert!(l_snap.ends_with(b"in-snapshot\0"));
        assert!(l_orig.ends_with(b"in-origin\0"));
        assert_eq!(l_snap.len(), before.len() + "in-snapshot".len() + 1);
    }

    #[test]
    fn test_cache_holds_a_few_listings_round_robin() {
        let mut s = Store::new(0);
        for d in 0..6 {
            add(&mut s, &format!("/d{d}"));
            for i in 0..50 {
                add(&mut s, &format!("/d{d}/{i:03}{}", "x".repeat(97)));
            }
        }
        for d in 0..6 {
            s.listing(&format!("/d{d}")).unwrap();
        }
        let kept = s.listings.entries.iter().flatten().count();
        assert_eq!(kept, LISTING_CACHE_ENTRIES);
        // The newest are kept; the same node's entry is replaced in place.
        assert!(s
            .listings
            .get("/d5", s.get("/d5").unwrap().generation)
            .is_some());
        add(&mut s, "/d5/more");
        s.listing("/d5").unwrap();
        let d5 = s
            .listings
            .entries
            .iter()
            .flatten()
            .filter(|(p, _, _)| &**p == "/d5")
            .count();
        assert_eq!(d5, 1);
    }

    proptest! {
        /// Whatever is added and removed, in a store and its snapshots, a
        /// listing is what the node's children say.
        #[test]
        fn prop_listing_matches_children(
            ops in proptest::collection::vec((0u8..4, 0usize..60), 1..200),
        ) {
            let mut stores = vec![Store::new(0)];
            add(&mut stores[0], "/d");
            for (what, i) in ops {
                let at = i % stores.len();
                let name = format!("/d/{i:02}{}", "y".repeat(98));
                match what {
                    0 => add(&mut stores[at], &name),
                    1 => { stores[at].remove_tree(&name); }
                    2 => { let c = stores[at].clone(); stores.push(c); }
                    _ => {}
                }
                for s in &mut stores {
                    let want = s.get("/d").unwrap().children_payload();
                    let got = s.listing("/d").unwrap();
                    prop_assert_eq!(got.as_slice(), &want[..]);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod more_tests;
