//! A store image: the nodes of a store, or what changed in them since a
//! snapshot, as bytes that rebuild exactly that store (values,
//! permissions, child order, creation and generation counters), for the
//! pre-copy live update (`shell::live_update::precopy`). Between two of
//! our own processes, so not a migration stream: those carry no child
//! order, counters or removals.
//!
//! Layout (little endian): the magic `XSLSIMG1`; the store's version and
//! next generation (u64 each); the count of nodes set (u32) and each as
//! path, value (u32 length, then octets), permissions (u16 count, then a
//! letter and a u16 domid each), created, generation (u64 each),
//! children (u32 count, then each name as u32 length and octets); the
//! count of paths removed (u32) and each path.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use xenring::path::{validate_path, PathKind};
use xenring::{Perm, PermKind};

use super::pmap::Change;
use super::{accounted, basename, join, parent, Children, Node, Path, Store};

const MAGIC: &[u8; 8] = b"XSLSIMG1";

/// Why bytes are not a store image that applies to the store at hand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    /// The bytes end inside a field.
    #[error("store image: truncated at octet {0}")]
    Truncated(usize),
    /// Not a store image.
    #[error("store image: no XSLSIMG1 magic")]
    Magic,
    /// A node's path is not a valid absolute or special path.
    #[error("store image: node path {0:?} is not a valid path")]
    BadPath(String),
    /// A permission letter other than `n`, `r`, `w`, `b`.
    #[error("store image: node {path:?}: permission letter {letter:#04x}")]
    BadPerm {
        /// The node.
        path: String,
        /// The letter.
        letter: u8,
    },
    /// A node without permissions.
    #[error("store image: node {0:?} has no permissions")]
    NoPermissions(String),
    /// A removal names a node the store does not hold.
    #[error("store image: removes {0:?}, which is not in the store")]
    NotThere(String),
    /// Octets after the last field.
    #[error("store image: {0} octets after its end")]
    Trailing(usize),
    /// The result has no `/`.
    #[error("store image: the store has no root node")]
    NoRoot,
    /// The result is not a tree: a node whose parent is missing or does
    /// not list it, a listed child that is missing, or a node left under a
    /// removed one.
    #[error("store image: the tree is broken at {0:?}")]
    NotATree(String),
}

impl Store {
    /// An image of this store: every node (`base` `None`), or what changed
    /// since `base`, a snapshot this store was changed from (cost: the
    /// changes, not the store's size).
    pub fn image(&self, base: Option<&Store>) -> Vec<u8> {
        let mut set: Vec<(&Path, &Arc<Node>)> = Vec::new();
        let mut removed: Vec<&Path> = Vec::new();
        match base {
            None => set.extend(self.nodes.iter()),
            Some(base) => self
                .nodes
                .diff_from(&base.nodes, &|a, b| Arc::ptr_eq(a, b), &mut |c| match c {
                    Change::Set(p, n) => set.push((p, n)),
                    Change::Removed(p) => removed.push(p),
                }),
        }
        let mut out = Vec::with_capacity(32 + set.len() * 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.next_generation.to_le_bytes());
        put_len(&mut out, set.len());
        for (path, node) in set {
            put_bytes(&mut out, path.as_bytes());
            put_bytes(&mut out, &node.value);
            // A SET_PERMS payload (at most 4096 octets) names fewer than
            // 2,048 entries.
            let count = u16::try_from(node.perms.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_le_bytes());
            for p in node.perms.iter().take(usize::from(count)) {
                out.push(p.kind.letter());
                out.extend_from_slice(&p.domid.to_le_bytes());
            }
            out.extend_from_slice(&node.created.to_le_bytes());
            out.extend_from_slice(&node.generation.to_le_bytes());
            put_len(&mut out, node.children.len());
            for child in &node.children {
                put_bytes(&mut out, child.as_bytes());
            }
        }
        put_len(&mut out, removed.len());
        for path in removed {
            put_bytes(&mut out, path.as_bytes());
        }
        out
    }

    /// A store with no node at all, for an image of a whole store.
    pub fn empty() -> Self {
        Self {
            nodes: super::PMap::new(),
            accounts: super::PMap::new(),
            next_generation: 1,
            version: 0,
            listings: super::ListingCache::default(),
            listing_bytes_built: 0,
        }
    }

    /// Applies an image: of a whole store to [`Store::empty`], of the
    /// changes since a snapshot to a copy of that snapshot. On error the
    /// store may be half changed (the caller drops it).
    pub fn apply_image(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(ImageError::Magic);
        }
        let version = r.u64()?;
        let next_generation = r.u64()?;
        // What the tree check after looks at: every node set (and the
        // children it had), every node removed (and its children).
        let mut touched: Vec<(Path, Option<Arc<Node>>)> = Vec::new();
        let mut removed: Vec<(Path, Arc<Node>)> = Vec::new();
        for _ in 0..r.u32()? {
            let path = r.path()?;
            let value: Arc<[u8]> = Arc::from(r.bytes()?);
            let count = r.u16()?;
            let mut perms = Vec::with_capacity(usize::from(count).min(r.left() / 3));
            for _ in 0..count {
                let letter = r.take(1)?[0];
                let kind = PermKind::from_letter(letter).ok_or_else(|| ImageError::BadPerm {
                    path: path.to_string(),
                    letter,
                })?;
                perms.push(Perm::new(kind, r.u16()?));
            }
            if perms.is_empty() {
                return Err(ImageError::NoPermissions(path.to_string()));
            }
            let created = r.u64()?;
            let generation = r.u64()?;
            let mut children = Children::default();
            for _ in 0..r.u32()? {
                let name = core::str::from_utf8(r.bytes()?)
                    .map_err(|_| ImageError::BadPath(path.to_string()))?;
                // A name is one path element, listed once.
                if name.is_empty() || name.contains(['/', '\0']) || children.contains(name) {
                    return Err(ImageError::NotATree(join(&path, name)));
                }
                children.insert(Arc::from(name));
            }
            let node = Arc::new(Node {
                value,
                perms: Arc::from(perms),
                children,
                created,
                generation,
            });
            touched.push((path.clone(), self.nodes.get(&path).cloned()));
            self.uncharge(&path);
            if accounted(&path) {
                self.charge(
                    node.owner(),
                    1,
                    Node::cost(&path, &node.value, &node.perms) as i64,
                );
            }
            self.nodes.insert(path, node);
        }
        for _ in 0..r.u32()? {
            let path = r.path()?;
            let Some(old) = self.nodes.get(&path).cloned() else {
                return Err(ImageError::NotThere(path.to_string()));
            };
            self.uncharge(&path);
            self.nodes.remove(&path);
            removed.push((path, old));
        }
        if r.left() != 0 {
            return Err(ImageError::Trailing(r.left()));
        }
        if self.nodes.get("/").is_none() {
            return Err(ImageError::NoRoot);
        }
        self.check_touched(&touched, &removed)?;
        self.version = version;
        self.next_generation = next_generation;
        Ok(())
    }

    /// The tree is whole around what an image changed (the rest was, in
    /// the store it applied to): each node set is listed by its parent and
    /// its children exist, a child it no longer lists is gone, and nothing
    /// is left under or listed for a node removed. Cost: the changes and
    /// their children.
    fn check_touched(
        &self,
        touched: &[(Path, Option<Arc<Node>>)],
        removed: &[(Path, Arc<Node>)],
    ) -> Result<(), ImageError> {
        let broken = |p: &str| ImageError::NotATree(p.to_string());
        let listed_by_parent = |p: &str| match parent(p) {
            None => Some(true),
            Some(up) => self.nodes.get(up).map(|n| n.children.contains(basename(p))),
        };
        for (path, old) in touched {
            if listed_by_parent(path) != Some(true) {
                return Err(broken(path));
            }
            let Some(node) = self.nodes.get(path) else {
                return Err(broken(path));
            };
            for child in &node.children {
                if !self.nodes.contains_key(join(path, child).as_str()) {
                    return Err(broken(&join(path, child)));
                }
            }
            if let Some(old) = old {
                for child in &old.children {
                    let cp = join(path, child);
                    if !node.children.contains(child) && self.nodes.contains_key(cp.as_str()) {
                        return Err(broken(&cp));
                    }
                }
            }
        }
        for (path, old) in removed {
            if self.nodes.contains_key(path) || listed_by_parent(path) == Some(true) {
                return Err(broken(path));
            }
            for child in &old.children {
                let cp = join(path, child);
                if self.nodes.contains_key(cp.as_str()) {
                    return Err(broken(&cp));
                }
            }
        }
        Ok(())
    }

    /// Takes back what `path`'s node is charged; whether there was one.
    fn uncharge(&mut self, path: &str) -> bool {
        let Some(old) = self.nodes.get(path).cloned() else {
            return false;
        };
        if accounted(path) {
            self.charge(
                old.owner(),
                -1,
                -(Node::cost(path, &old.value, &old.perms) as i64),
            );
        }
        true
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(ImageError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, ImageError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ImageError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, ImageError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ImageError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn path(&mut self) -> Result<Path, ImageError> {
        let raw = self.bytes()?;
        let bad = || ImageError::BadPath(String::from_utf8_lossy(raw).into_owned());
        match validate_path(raw).map_err(|_| bad())? {
            PathKind::Absolute | PathKind::Special => {}
            PathKind::Relative => return Err(bad()),
        }
        Ok(Arc::from(core::str::from_utf8(raw).map_err(|_| bad())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn perms(owner: u16) -> Arc<[Perm]> {
        Arc::from(vec![
            Perm::new(PermKind::None, owner),
            Perm::new(PermKind::Read, 7),
        ])
    }

    /// Nodes with their fields, accounts, counters.
    type Shown = (
        Vec<(String, Node)>,
        Vec<(u16, super::super::Account)>,
        u64,
        u64,
    );

    /// Everything a store shows: nodes with their fields, accounts,
    /// counters.
    fn shown(s: &Store) -> Shown {
        let mut nodes: Vec<(String, Node)> = s
            .nodes
            .iter()
            .map(|(p, n)| (p.to_string(), (**n).clone()))
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        (nodes, s.accounts(), s.version, s.next_generation)
    }

    fn rebuilt(s: &Store) -> Store {
        let mut out = Store::empty();
        out.apply_image(&s.image(None))
            .expect("a whole image applies");
        out
    }

    #[test]
    fn test_an_image_rebuilds_the_store_and_a_delta_its_changes() {
        let mut s = Store::new(0);
        for p in ["/a", "/a/x", "/a/y", "/a/z", "/b"] {
            s.put_node(Arc::from(p), Arc::from(&b"v"[..]), perms(3));
        }
        assert_eq!(shown(&rebuilt(&s)), shown(&s));
        let base = s.clone();
        // Re-created: last among its siblings now.
        s.remove_tree("/a/x");
        s.put_node(Arc::from("/a/x"), Arc::from(&b"new"[..]), perms(4));
        s.remove_tree("/b");
        s.put_node(Arc::from("/c"), Arc::from(&b""[..]), perms(0));
        let delta = s.image(Some(&base));
        let mut again = rebuilt(&base);
        again
            .apply_image(&delta)
            .expect("the delta applies to its base");
        assert_eq!(shown(&again), shown(&s));
        let listing = again.get("/a").map(|n| n.children_payload());
        assert_eq!(listing.as_deref(), Some(&b"y\0z\0x\0"[..]));
        assert!(
            delta.len() < s.image(None).len(),
            "a delta is not the whole store"
        );
    }

    #[test]
    fn test_an_image_that_breaks_the_tree_is_refused() {
        let mut s = Store::new(0);
        s.put_node(Arc::from("/a"), Arc::from(&b""[..]), perms(3));
        s.put_node(Arc::from("/a/b"), Arc::from(&b"v"[..]), perms(3));
        s.put_node(Arc::from("/c"), Arc::from(&b""[..]), perms(3));
        let base = s.clone();
        let refused = |mut store: Store, image: &[u8]| match store.apply_image(image) {
            Err(ImageError::NotATree(p)) => p,
            other => panic!("applied: {other:?}"),
        };
        // /a removed alone: /a/b is left under it, and / still lists it.
        let mut broken = s.clone();
        broken.nodes.remove("/a");
        assert_eq!(refused(base.clone(), &broken.image(Some(&base))), "/a");
        // A node whose listed child is missing.
        let mut broken = s.clone();
        broken.nodes.remove("/a/b");
        assert_eq!(refused(Store::empty(), &broken.image(None)), "/a/b");
        assert_eq!(refused(base.clone(), &broken.image(Some(&base))), "/a/b");
        // A node its parent does not list.
        let mut broken = s.clone();
        let mut root = (**broken.nodes.get("/").unwrap()).clone();
        root.children.remove("c");
        broken.nodes.insert(Arc::from("/"), Arc::new(root));
        assert_eq!(refused(Store::empty(), &broken.image(None)), "/c");
        // A parent that drops a child still there.
        assert_eq!(refused(base.clone(), &broken.image(Some(&base))), "/c");
        // The right change applies.
        let mut fine = s.clone();
        fine.remove_tree("/a");
        let mut again = base.clone();
        again.apply_image(&fine.image(Some(&base))).unwrap();
        assert!(again.check().is_empty());
        assert!(again.get("/a/b").is_none());
    }

    #[test]
    fn test_a_bad_image_is_refused_with_why() {
        let mut s = Store::new(0);
        s.put_node(Arc::from("/a"), Arc::from(&b"v"[..]), perms(3));
        let whole = s.image(None);
        for cut in [0, 4, 8, 20, whole.len() - 1] {
            assert!(matches!(
                Store::empty().apply_image(&whole[..cut]),
                Err(ImageError::Truncated(_) | ImageError::Magic)
            ));
        }
        let mut extra = whole.clone();
        extra.push(0);
        assert_eq!(
            Store::empty().apply_image(&extra),
            Err(ImageError::Trailing(1))
        );
        let mut removes_nothing = Store::empty().image(None);
        let n = removes_nothing.len();
        removes_nothing[n - 4..].copy_from_slice(&1u32.to_le_bytes());
        put_bytes(&mut removes_nothing, b"/nope");
        assert_eq!(
            s.clone().apply_image(&removes_nothing),
            Err(ImageError::NotThere("/nope".into()))
        );
        let empty = Store::empty().image(None);
        assert_eq!(Store::empty().apply_image(&empty), Err(ImageError::NoRoot));
    }

    proptest! {
        #[test]
        fn prop_whole_and_delta_images_rebuild_the_store(
            first in proptest::collection::vec((0usize..40, 0u16..4), 1..60),
            then in proptest::collection::vec((0usize..40, proptest::option::of(0u16..4)), 0..60),
        ) {
            // Paths in a small tree, so that parents and children move.
            let path = |i: usize| -> String {
                let mut p = String::new();
                let mut i = i;
                loop {
                    p.insert_str(0, &alloc::format!("/n{}", i % 5));
                    i /= 5;
                    if i == 0 {
                        break;
                    }
                }
                p
            };
            let put = |s: &mut Store, i: usize, owner: u16| {
                let p = path(i);
                let mut at = String::new();
                for part in p.split('/').skip(1) {
                    at.push('/');
                    at.push_str(part);
                    if s.get(&at).is_none() || at == p {
                        s.put_node(Arc::from(at.as_str()), Arc::from(at.as_bytes()), perms(owner));
                    }
                }
            };
            let mut s = Store::new(0);
            for &(i, o) in &first {
                put(&mut s, i, o);
            }
            prop_assert_eq!(shown(&rebuilt(&s)), shown(&s));
            let base = s.clone();
            for &(i, o) in &then {
                match o {
                    Some(o) => put(&mut s, i, o),
                    None => {
                        s.remove_tree(&path(i));
                    }
                }
            }
            let mut again = rebuilt(&base);
            again.apply_image(&s.image(Some(&base))).expect("applies");
            prop_assert_eq!(shown(&again), shown(&s));
            prop_assert!(again.check().is_empty(), "{:?}", again.check());
        }
    }
}
