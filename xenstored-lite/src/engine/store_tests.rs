//! Unit tests of the store: accounting, generations, the orders it lists
//! nodes in, `owned_by` and `forget_domain`, and what `check` reports on a broken store.

use alloc::string::ToString;
use alloc::sync::Arc;

use xenring::{DomId, Perm, PermKind};

use super::*;

fn perms(list: &[(PermKind, DomId)]) -> Arc<[Perm]> {
    list.iter().map(|&(k, d)| Perm::new(k, d)).collect()
}

fn put(s: &mut Store, path: &str, value: &[u8], p: &Arc<[Perm]>) {
    s.put_node(Arc::from(path), Arc::from(value), Arc::clone(p));
}

fn paths(list: &[(Path, Arc<Node>)]) -> Vec<&str> {
    list.iter().map(|(p, _)| &**p).collect()
}

#[test]
fn test_node_cost_owner_and_payload() {
    let p = perms(&[(PermKind::Read, 5), (PermKind::Write, 7)]);
    // Path, value, 8 bytes per entry, 32 for the record.
    assert_eq!(Node::cost("/a", b"xyz", &p), 2 + 3 + 16 + 32);
    assert_eq!(Node::cost("/local/x", b"", &p[..1]), 8 + 8 + 32);
    let mut s = Store::new(0);
    put(&mut s, "/a", b"", &p);
    put(&mut s, "/a/x", b"", &p);
    put(&mut s, "/a/yy", b"", &p);
    let a = s.get("/a").unwrap();
    assert_eq!(a.owner(), 5);
    assert_eq!(a.children_payload(), b"x\0yy\0");
    assert_eq!(s.get("/a/x").unwrap().children_payload(), b"");
}

#[test]
fn test_children_set_and_order() {
    let mut c = Children::default();
    assert!(c.is_empty());
    assert_eq!(c.len(), 0);
    c.insert(Arc::from("b"));
    c.insert(Arc::from("a"));
    c.insert(Arc::from("b"));
    assert!(!c.is_empty());
    assert_eq!(c.len(), 2);
    assert!(c.contains("a") && c.contains("b") && !c.contains("c"));
    let order: Vec<&str> = c.iter().map(|n| &**n).collect();
    assert_eq!(order, ["b", "a"]);
    let order: Vec<&str> = (&c).into_iter().map(|n| &**n).collect();
    assert_eq!(order, ["b", "a"]);
    c.remove("b");
    c.remove("zz");
    assert_eq!(c.len(), 1);
    assert!(!c.contains("b"));
    c.insert(Arc::from("b"));
    let order: Vec<&str> = c.iter().map(|n| &**n).collect();
    assert_eq!(order, ["a", "b"]);
}

#[test]
fn test_parent_and_basename_split_at_the_last_slash() {
    for path in [
        "/", "/a", "/a/b", "/a/bc/d", "a", "a/b", "", "/a/", "@x", "/é/ü",
    ] {
        let expected_parent = if path == "/" || path.starts_with('@') {
            None
        } else {
            match path.rfind('/') {
                Some(0) => Some("/"),
                Some(i) => Some(&path[..i]),
                None => None,
            }
        };
        assert_eq!(parent(path), expected_parent, "{path:?}");
        let expected_base = path.rfind('/').map_or(path, |i| &path[i + 1..]);
        assert_eq!(basename(path), expected_base, "{path:?}");
    }
}

#[test]
fn test_path_helpers_edges() {
    assert_eq!(parent("@releaseDomain/5"), None);
    assert_eq!(parent("/a/b/c"), Some("/a/b"));
    assert_eq!(basename("/a/bc"), "bc");
    assert_eq!(basename("@x"), "@x");
    assert_eq!(join("/a/b", "c"), "/a/b/c");
    assert!(!is_child_of("/a", "/a/b"));
    assert!(!is_child_of("/", "/a"));
    assert!(!is_child_of("/b/a", "/a"));
    assert!(!is_child_of("/a-b", "/a"));
    assert!(is_child_of("/a/b/c", "/a/b"));
    assert!(is_child_of("/", "/"));
    assert_eq!(depth_below("/a/b", "/"), 2);
    assert_eq!(depth_below("/a/b/c/d", "/a/b"), 2);
}

#[test]
fn test_fresh_store_contents_and_counters() {
    let s = Store::new(3);
    assert_eq!(s.len(), 5);
    assert!(!s.is_empty());
    assert_eq!(s.get("/tool/xenstored").unwrap().owner(), 3);
    assert!(s.get("/nope").is_none());
    // The special nodes count against nobody.
    let owner = perms(&[(PermKind::None, 3)]);
    let memory: u64 = ["/", "/tool", "/tool/xenstored"]
        .iter()
        .map(|p| Node::cost(p, b"", &owner))
        .sum();
    assert_eq!(s.accounts(), [(3, Account { nodes: 3, memory })]);
    assert_eq!(s.account(4), Account::default());
}

#[test]
fn test_accounting_follows_owner_through_writes_and_removal() {
    let mut s = Store::new(0);
    let base = s.account(0);
    let p5 = perms(&[(PermKind::None, 5)]);
    let p7 = perms(&[(PermKind::Read, 7), (PermKind::Write, 5)]);
    put(&mut s, "/d", b"1", &p5);
    put(&mut s, "/d/e", b"22", &p5);
    let c5 = Node::cost("/d", b"1", &p5) + Node::cost("/d/e", b"22", &p5);
    assert_eq!(
        s.account(5),
        Account {
            nodes: 2,
            memory: c5
        }
    );
    // Overwriting replaces the charge; a new owner takes it over.
    put(&mut s, "/d/e", b"4444", &p5);
    let c5 = Node::cost("/d", b"1", &p5) + Node::cost("/d/e", b"4444", &p5);
    assert_eq!(
        s.account(5),
        Account {
            nodes: 2,
            memory: c5
        }
    );
    put(&mut s, "/d/e", b"", &p7);
    assert_eq!(
        s.account(5),
        Account {
            nodes: 1,
            memory: Node::cost("/d", b"1", &p5)
        }
    );
    assert_eq!(
        s.account(7),
        Account {
            nodes: 1,
            memory: Node::cost("/d/e", b"", &p7)
        }
    );
    assert_eq!(
        s.accounts().iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        [0, 5, 7]
    );
    assert!(s.check().is_empty(), "{:?}", s.check());
    // Removing a subtree uncharges every node; an empty account goes.
    let removed = s.remove_tree("/d");
    assert_eq!(paths(&removed), ["/d", "/d/e"]);
    assert_eq!(s.account(5), Account::default());
    assert_eq!(s.accounts(), [(0, base)]);
    assert!(s.check().is_empty(), "{:?}", s.check());
    // Rewriting a special node charges nobody either.
    put(&mut s, "@introduceDomain", b"", &p5);
    assert_eq!(s.accounts(), [(0, base)]);
    assert!(s.check().is_empty(), "{:?}", s.check());
}

#[test]
fn test_versions_and_generations_change_with_every_modification() {
    let mut s = Store::new(0);
    let p = perms(&[(PermKind::None, 0)]);
    let v0 = s.version();
    put(&mut s, "/a", b"", &p);
    let v1 = s.version();
    assert!(v1 > v0);
    let g_root = s.get("/").unwrap().generation;
    let g_a = s.get("/a").unwrap().generation;
    put(&mut s, "/a", b"x", &p);
    assert!(s.version() > v1);
    let g_a2 = s.get("/a").unwrap().generation;
    assert!(g_a2 > g_a, "a rewrite gets a new generation");
    assert_eq!(s.get("/").unwrap().generation, g_root, "not a child change");
    put(&mut s, "/a/b", b"", &p);
    let g_a3 = s.get("/a").unwrap().generation;
    assert!(g_a3 > g_a2, "a new child changes the parent");
    assert_eq!(s.get("/a").unwrap().created, g_a, "creation stays");
    let v2 = s.version();
    assert!(s.remove_tree("/nope").is_empty());
    assert_eq!(s.version(), v2, "removing nothing changes nothing");
    s.remove_tree("/a/b");
    assert!(s.version() > v2);
    assert!(s.get("/a").unwrap().generation > g_a3, "a child removed");
    assert!(s.get("/a").unwrap().children.is_empty());
}

#[test]
fn test_parents_first_and_walk_orders() {
    let mut s = Store::new(0);
    let p = perms(&[(PermKind::None, 0)]);
    for path in ["/b", "/a", "/b/z", "/a/y", "/b/z/1", "/a/x"] {
        put(&mut s, path, b"", &p);
    }
    assert_eq!(
        paths(&s.parents_first()),
        [
            "/",
            "/tool",
            "/b",
            "/a",
            "/tool/xenstored",
            "/b/z",
            "/a/y",
            "/a/x",
            "/b/z/1",
            "@introduceDomain",
            "@releaseDomain",
        ]
    );
    assert_eq!(
        paths(&s.walk()),
        [
            "/",
            "/tool",
            "/tool/xenstored",
            "/b",
            "/b/z",
            "/b/z/1",
            "/a",
            "/a/y",
            "/a/x",
            "@introduceDomain",
            "@releaseDomain",
        ]
    );
}

#[test]
fn test_forget_domain_gives_owned_nodes_away_and_drops_entries() {
    let mut s = Store::new(0);
    let cases = [
        ("/own", perms(&[(PermKind::Read, 5), (PermKind::Write, 7)])),
        ("/named", perms(&[(PermKind::None, 7), (PermKind::Read, 5)])),
        (
            "/both",
            perms(&[
                (PermKind::None, 7),
                (PermKind::Read, 5),
                (PermKind::Write, 8),
            ]),
        ),
        ("/other", perms(&[(PermKind::None, 7), (PermKind::Read, 8)])),
    ];
    for (path, p) in &cases {
        put(&mut s, path, b"v", p);
    }
    assert_eq!(s.forget_domain(5, 0), 3);
    let got = |s: &Store, path: &str| s.get(path).unwrap().perms.to_vec();
    assert_eq!(
        got(&s, "/own"),
        [Perm::new(PermKind::Read, 0), Perm::new(PermKind::Write, 7)]
    );
    assert_eq!(got(&s, "/named"), [Perm::new(PermKind::None, 7)]);
    assert_eq!(
        got(&s, "/both"),
        [Perm::new(PermKind::None, 7), Perm::new(PermKind::Write, 8)]
    );
    assert_eq!(got(&s, "/other").len(), 2);
    assert_eq!(&*s.get("/own").unwrap().value, b"v");
    assert_eq!(s.account(5), Account::default());
    assert!(s.check().is_empty(), "{:?}", s.check());
    assert_eq!(s.forget_domain(5, 0), 0);
    // Handing a domain's nodes to itself keeps its owner entry.
    put(
        &mut s,
        "/self",
        b"",
        &perms(&[(PermKind::None, 9), (PermKind::Read, 9)]),
    );
    assert_eq!(s.forget_domain(9, 9), 1);
    assert_eq!(got(&s, "/self"), [Perm::new(PermKind::None, 9)]);
}

#[test]
fn test_owned_by_lists_only_the_topmost_owned_nodes() {
    let mut s = Store::new(0);
    let five = perms(&[(PermKind::None, 5)]);
    let zero = perms(&[(PermKind::None, 0), (PermKind::Read, 5)]);
    for (path, p) in [
        ("/a", &five),
        // "/a-b" sorts between "/a" and "/a/b": not below "/a".
        ("/a-b", &five),
        ("/a/b", &five),
        ("/a/c", &zero),
        ("/a/c/d", &five),
        ("/z", &zero),
        ("/z/y", &five),
        ("/z/y/x", &five),
    ] {
        put(&mut s, path, b"", p);
    }
    s.put_node(
        Arc::from("@releaseDomain"),
        Arc::from(&b""[..]),
        Arc::clone(&five),
    );
    let owned = s.owned_by(5);
    let got: Vec<&str> = owned.iter().map(|p| &**p).collect();
    assert_eq!(got, ["/a", "/a-b", "/z/y"], "none below another of them");
    assert!(s.owned_by(6).is_empty());
    assert!(s.owned_by(0).iter().all(|p| !p.starts_with('@')));
}

#[test]
fn test_check_names_each_kind_of_damage() {
    let p = perms(&[(PermKind::None, 5)]);
    let mut s = Store::new(0);
    put(&mut s, "/a", b"", &p);
    put(&mut s, "/a/b", b"", &p);
    put(&mut s, "/c", b"", &p);
    assert!(s.check().is_empty(), "{:?}", s.check());

    // A child listed but gone (its charge left behind).
    let mut broken = s.clone();
    broken.nodes.remove("/a/b");
    let a5 = s.account(5);
    let one = Node::cost("/a", b"", &p) + Node::cost("/c", b"", &p);
    assert_eq!(
        broken.check(),
        [
            "/a: child b missing".to_string(),
            format!(
                "domain 5: accounting says {a5:?}, nodes say {:?}",
                Account {
                    nodes: 2,
                    memory: one
                }
            ),
        ]
    );

    // A node its parent does not list; one whose parent is missing; one
    // without permissions.
    let mut broken = s.clone();
    let a = broken.nodes.get("/a").unwrap();
    let mut unlisted = Node::clone(a);
    unlisted.children = Children::default();
    broken
        .nodes
        .insert(Arc::from("/a/hidden"), Arc::new(unlisted.clone()));
    broken
        .nodes
        .insert(Arc::from("/x/y"), Arc::new(unlisted.clone()));
    let mut bare = unlisted;
    bare.perms = Arc::from(Vec::new());
    let c = Arc::clone(broken.nodes.get("/c").unwrap());
    broken.nodes.insert(
        Arc::from("/c"),
        Arc::new(Node {
            perms: Arc::clone(&bare.perms),
            ..Node::clone(&c)
        }),
    );
    let problems = broken.check();
    for want in [
        "/a/hidden: not listed in /a",
        "/x/y: parent /x missing",
        "/c: no permissions",
    ] {
        assert!(problems.iter().any(|p| p == want), "{want}: {problems:?}");
    }

    // A charge for a domain that owns nothing.
    let mut broken = s.clone();
    broken.accounts.insert(
        9,
        Account {
            nodes: 1,
            memory: 1,
        },
    );
    assert_eq!(
        broken.check(),
        [format!(
            "domain 9: charged {:?} for no nodes",
            Account {
                nodes: 1,
                memory: 1
            }
        )]
    );
    // An empty entry is no charge.
    let mut broken = s.clone();
    broken.accounts.insert(9, Account::default());
    assert!(broken.check().is_empty());
}

#[test]
fn test_long_children_lists_keep_order_across_chunks_and_snapshots() {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    let names = |c: &Children| -> Vec<String> { c.iter().map(|n| n.to_string()).collect() };
    let mut c = Children::default();
    // Past the scan-only size and over several chunks.
    let mut model: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    for n in &model {
        c.insert(Arc::from(n.as_str()));
    }
    c.insert(Arc::from("n5"));
    assert_eq!(names(&c), model);
    assert_eq!(c.iter().len(), 100);
    let back: Vec<String> = c.iter().rev().map(|n| n.to_string()).collect();
    assert_eq!(back, model.iter().rev().cloned().collect::<Vec<_>>());
    let snap = c.clone();
    // A whole chunk's worth and some from others, then re-added last.
    for i in (0..40).chain([57, 99]) {
        let n = format!("n{i}");
        c.remove(&n);
        model.retain(|m| *m != n);
        assert!(!c.contains(&n));
    }
    c.insert(Arc::from("n3"));
    model.push("n3".into());
    assert_eq!(names(&c), model);
    assert_eq!(c.len(), model.len());
    assert!(c.contains("n3") && c.contains("n98") && !c.contains("n57"));
    // Both ends at once meet in the middle.
    let mut it = c.iter();
    assert_eq!(it.next().map(|n| &**n), Some("n40"));
    assert_eq!(it.next_back().map(|n| &**n), Some("n3"));
    assert_eq!(it.count(), model.len() - 2);
    // The snapshot saw none of it; equality is names and order.
    assert_eq!(snap.len(), 100);
    assert!(snap.contains("n0") && snap.contains("n57"));
    assert_ne!(snap, c);
    let mut same = Children::default();
    for n in &model {
        same.insert(Arc::from(n.as_str()));
    }
    assert_eq!(same, c);
    assert_eq!(format!("{:?}", Children::default()), "[]");
}

#[test]
fn test_children_eq_same_len_other_names_or_order_differs() {
    let list = |names: &[&str]| {
        let mut c = Children::default();
        for n in names {
            c.insert(Arc::from(*n));
        }
        c
    };
    let ab = list(&["a", "b"]);
    assert_eq!(ab, list(&["a", "b"]));
    assert_eq!(ab, ab.clone());
    assert_ne!(ab, list(&["b", "a"]));
    assert_ne!(ab, list(&["a", "c"]));
    assert_ne!(ab, list(&["a"]));
}

#[test]
fn test_children_chunks_hold_32_and_set_starts_past_8() {
    use alloc::format;
    use alloc::vec::Vec;

    let mut c = Children::default();
    for i in 0..100 {
        c.insert(Arc::from(format!("n{i}").as_str()));
        // Up to 8 names are scanned; the set comes with the ninth.
        assert_eq!(c.names.is_some(), i >= 8, "{i}");
    }
    let sizes: Vec<usize> = c.chunks.iter().map(|ch| ch.len()).collect();
    assert_eq!(sizes, [32, 32, 32, 4]);
    assert_eq!(c.names.as_ref().map(|n| n.len()), Some(100));
}

#[test]
fn test_child_iter_len_counts_down_from_both_ends() {
    use alloc::format;

    let mut c = Children::default();
    for i in 0..70 {
        c.insert(Arc::from(format!("n{i}").as_str()));
    }
    // From the front into the last chunk, from the back into the first.
    let mut it = c.iter();
    assert_eq!(it.next().map(|n| &**n), Some("n0"));
    for left in (0..69usize).rev() {
        assert_eq!(
            it.next_back().map(|n| &**n),
            Some(&*format!("n{}", left + 1))
        );
        assert_eq!(it.len(), left);
    }
    assert!(it.next_back().is_none() && it.next().is_none());
    let mut it = c.iter();
    assert!(it.next_back().is_some());
    for left in (0..69usize).rev() {
        assert_eq!(it.next().map(|n| &**n), Some(&*format!("n{}", 68 - left)));
        assert_eq!(it.len(), left);
    }
    assert!(it.next().is_none() && it.next_back().is_none());
}

/// `overwrite` leaves the store `put_node` leaves for a node that exists
/// (value, permissions, children, creation, generation, accounts,
/// version), the owner kept or changed, shared with a snapshot or not; a
/// missing node is left alone.
#[test]
fn test_overwrite_is_put_node_of_an_existing_node() {
    let five = perms(&[(PermKind::None, 5)]);
    let seven = perms(&[(PermKind::Read, 7), (PermKind::Write, 5)]);
    let mut base = Store::new(0);
    put(&mut base, "/a", b"", &five);
    put(&mut base, "/a/b", b"old value", &five);
    put(&mut base, "/a/b/c", b"", &five);
    put(&mut base, "/a/d", b"x", &seven);
    type Case<'a> = (&'a str, &'a [u8], &'a Arc<[Perm]>);
    let cases: &[Case<'_>] = &[
        ("/a/b", b"new", &five),
        ("/a/b", b"old value", &five),
        ("/a/b", b"a longer value than before", &five),
        ("/a/b", b"", &seven),
        ("/a/d", b"yy", &five),
        ("@releaseDomain", b"v", &five),
    ];
    for &(path, value, p) in cases {
        for shared in [false, true] {
            let mut by_put = base.clone();
            let mut by_overwrite = base.clone();
            let snapshot = shared.then(|| by_overwrite.clone());
            put(&mut by_put, path, value, p);
            assert!(by_overwrite.overwrite(path, Arc::from(value), Arc::clone(p)));
            // The same, at the spot a look found.
            let mut by_spot = base.clone();
            let spot_snapshot = shared.then(|| by_spot.clone());
            let spot = by_spot.get_at(path).map(|(_, spot)| spot).unwrap();
            assert!(by_spot.overwrite_at(path, spot, Arc::from(value), Arc::clone(p)));
            let dump = |s: &Store| {
                let nodes: Vec<_> = s
                    .parents_first()
                    .into_iter()
                    .map(|(p, n)| (p, (*n).clone()))
                    .collect();
                (nodes, s.accounts(), s.version())
            };
            assert_eq!(dump(&by_overwrite), dump(&by_put), "{path} {shared}");
            assert_eq!(dump(&by_spot), dump(&by_put), "{path} {shared} at its spot");
            if let Some(snapshot) = spot_snapshot {
                assert_eq!(dump(&snapshot), dump(&base), "the snapshot is left alone");
            }
            assert!(
                by_overwrite.check().is_empty(),
                "{:?}",
                by_overwrite.check()
            );
            if let Some(snapshot) = snapshot {
                assert_eq!(dump(&snapshot), dump(&base), "the snapshot is left alone");
            }
        }
    }
    let mut s = base.clone();
    assert!(!s.overwrite("/a/missing", Arc::from(&b"v"[..]), Arc::clone(&five)));
    assert!(s.get("/a/missing").is_none());
    assert_eq!(s.version(), base.version());
    // A spot is only its own node's: another path's, or one its node left,
    // changes nothing.
    let spot = s.get_at("/a/b").map(|(_, spot)| spot).unwrap();
    assert!(s.get_at("/a/missing").is_none());
    for other in ["/a", "/a/d", "/a/b/c", "/a/missing"] {
        assert!(!s.overwrite_at(other, spot, Arc::from(&b"v"[..]), Arc::clone(&five)));
    }
    s.remove_tree("/a/b");
    let removed = s.version();
    assert!(!s.overwrite_at("/a/b", spot, Arc::from(&b"v"[..]), Arc::clone(&five)));
    assert!(s.get("/a/b").is_none());
    assert_eq!(s.version(), removed);
    assert!(s.check().is_empty(), "{:?}", s.check());
}

#[test]
fn test_listing_checked_is_listing_after_its_check() {
    let five = perms(&[(PermKind::None, 5)]);
    let mut s = Store::new(0);
    put(&mut s, "/a", b"", &five);
    put(&mut s, "/a/x", b"", &five);
    put(&mut s, "/a/y", b"", &five);
    let big = "z".repeat(100);
    put(&mut s, "/big", b"", &five);
    for i in 0..50 {
        put(&mut s, &format!("/big/{i:02}{big}"), b"", &five);
    }
    for path in ["/a", "/a/x", "/big", "/missing"] {
        let want = s.clone().listing(path).map(|l| l.as_slice().to_vec());
        let generation = s.get(path).map(|n| n.generation);
        let (seen, got) = s
            .listing_checked(path, |store, node| {
                assert!(store.get("/a").is_some());
                Ok::<_, ()>(node.map(|n| n.generation))
            })
            .unwrap();
        assert_eq!(seen, generation, "{path}");
        assert_eq!(got.map(|l| l.as_slice().to_vec()), want, "{path}");
    }
    // Served from the cache the second time, as by `listing`.
    let built = s.listing_bytes_built();
    assert!(built > 0);
    let (_, again) = s.listing_checked("/big", |_, _| Ok::<_, ()>(())).unwrap();
    assert!(matches!(again, Some(Listing::Cached(_))));
    assert_eq!(s.listing_bytes_built(), built);
    // A refusal builds nothing.
    let mut fresh = s.clone();
    put(&mut fresh, "/big/new", b"", &five);
    let before = fresh.listing_bytes_built();
    assert_eq!(
        fresh
            .listing_checked("/big", |_, _| Err::<(), _>("no"))
            .err(),
        Some("no")
    );
    assert_eq!(fresh.listing_bytes_built(), before);
}
