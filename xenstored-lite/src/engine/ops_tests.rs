//! Unit tests of the store requests, run on a store directly: the quotas
//! (memory, nodes, entries, value size, path length) at their boundaries,
//! the permission rules, and the argument parsing.

use std::sync::Arc;

use xenring::codec::{build_args, build_path_value};
use xenring::{DomId, MsgType, Perm, PermKind, XsErrno};

use super::*;
use crate::engine::store::Store;

const HOME: &str = "/local/domain/5";

fn guest(domid: DomId) -> Who {
    Who {
        domid,
        privileged: false,
        target: None,
    }
}

fn dom0() -> Who {
    Who {
        domid: 0,
        privileged: true,
        target: None,
    }
}

fn perms(list: &[(PermKind, DomId)]) -> Arc<[Perm]> {
    list.iter().map(|&(k, d)| Perm::new(k, d)).collect()
}

/// A fresh store with `/local/domain/5` owned by domain 5 (no access for
/// others), as a toolstack leaves it before INTRODUCE.
fn store() -> Store {
    let mut s = Store::new(0);
    let root = perms(&[(PermKind::None, 0)]);
    s.put_node(Arc::from("/local"), Arc::from(&b""[..]), Arc::clone(&root));
    s.put_node(Arc::from("/local/domain"), Arc::from(&b""[..]), root);
    s.put_node(
        Arc::from(HOME),
        Arc::from(&b""[..]),
        perms(&[(PermKind::None, 5)]),
    );
    s
}

fn ctx(who: Who, limits: Limits) -> Ctx<'static> {
    Ctx {
        who,
        limits,
        home: (!who.privileged).then_some(HOME),
    }
}

fn run(s: &mut Store, ctx: &Ctx<'_>, ty: MsgType, payload: &[u8]) -> OpResult {
    let mut events = Vec::new();
    let before = s.clone();
    let r = exec(s, ctx, ty, payload, &mut events);
    if r.is_err() {
        assert!(events.is_empty(), "{ty:?} failed but fired {events:?}");
        assert_eq!(
            s.version(),
            before.version(),
            "{ty:?} failed but changed the store"
        );
    }
    assert!(s.check().is_empty(), "{:?}", s.check());
    r
}

fn write(s: &mut Store, ctx: &Ctx<'_>, path: &str, value: &[u8]) -> OpResult {
    run(
        s,
        ctx,
        MsgType::Write,
        &build_path_value(path.as_bytes(), value),
    )
}

fn one(s: &mut Store, ctx: &Ctx<'_>, ty: MsgType, path: &str) -> OpResult {
    run(s, ctx, ty, &build_args(&[path.as_bytes()]))
}

fn ok() -> OpResult {
    Ok(b"OK\0".to_vec())
}

fn guest_perms() -> Arc<[Perm]> {
    perms(&[(PermKind::None, 5)])
}

// ---- memory quota -----------------------------------------------------------

#[test]
fn test_memory_quota_new_nodes_past_it_enomem_changes_nothing() {
    let mut s = store();
    let used = s.account(5).memory;
    let p = guest_perms();
    // Three new nodes (two parents and the leaf, which alone has the value):
    // exactly what the quota leaves is allowed, a byte less is not.
    let cost = Node::cost("/local/domain/5/a", b"", &p)
        + Node::cost("/local/domain/5/a/b", b"", &p)
        + Node::cost("/local/domain/5/a/b/c", b"value", &p);
    let tight = Limits {
        memory: used + cost - 1,
        ..Limits::default()
    };
    let c = ctx(guest(5), tight);
    assert_eq!(write(&mut s, &c, "a/b/c", b"value"), Err(XsErrno::ENOMEM));
    assert!(s.get("/local/domain/5/a").is_none());
    assert_eq!(s.account(5).memory, used);
    let exact = Limits {
        memory: used + cost,
        ..Limits::default()
    };
    let c = ctx(guest(5), exact);
    assert_eq!(write(&mut s, &c, "a/b/c", b"value"), ok());
    assert_eq!(s.account(5).memory, used + cost);
    assert_eq!(&*s.get("/local/domain/5/a/b").unwrap().value, b"");
    assert_eq!(&*s.get("/local/domain/5/a/b/c").unwrap().value, b"value");
    // Full: one more node of any size is refused, by MKDIR too.
    assert_eq!(write(&mut s, &c, "d", b""), Err(XsErrno::ENOMEM));
    assert_eq!(one(&mut s, &c, MsgType::Mkdir, "d"), Err(XsErrno::ENOMEM));
    assert!(s.get("/local/domain/5/d").is_none());
    // The privileged caller is exempt, whatever limits it is given.
    let c0 = ctx(dom0(), exact);
    assert_eq!(write(&mut s, &c0, "/local/domain/5/d", b"dom0's"), ok());
}

#[test]
fn test_memory_quota_growing_a_value_past_it_enomem_shrinking_allowed() {
    let mut s = store();
    let unlimited = ctx(guest(5), Limits::default());
    assert_eq!(write(&mut s, &unlimited, "v", b"1234"), ok());
    let used = s.account(5).memory;
    // Growing by two bytes fits exactly; by three it does not.
    let c = ctx(
        guest(5),
        Limits {
            memory: used + 2,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &c, "v", b"1234567"), Err(XsErrno::ENOMEM));
    assert_eq!(&*s.get("/local/domain/5/v").unwrap().value, b"1234");
    assert_eq!(write(&mut s, &c, "v", b"123456"), ok());
    assert_eq!(s.account(5).memory, used + 2);
    // Over the quota (it was lowered): a value of the same size or smaller
    // may still be written, a larger one may not.
    let over = ctx(
        guest(5),
        Limits {
            memory: used - 10,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &over, "v", b"abcdef"), ok());
    assert_eq!(write(&mut s, &over, "v", b"abc"), ok());
    assert_eq!(write(&mut s, &over, "v", b"abcd"), Err(XsErrno::ENOMEM));
    assert_eq!(&*s.get("/local/domain/5/v").unwrap().value, b"abc");
    // The privileged caller is exempt.
    let c0 = ctx(dom0(), over.limits);
    assert_eq!(write(&mut s, &c0, "/local/domain/5/v", b"longer"), ok());
}

// ---- node quota, entry quota, value size --------------------------------------

#[test]
fn test_nodes_quota_counts_every_created_parent() {
    let mut s = store();
    // Domain 5 owns its home: one node. Two more fit a quota of 3.
    let c = ctx(
        guest(5),
        Limits {
            nodes: 2,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &c, "a/b", b""), Err(XsErrno::ENOSPC));
    let c = ctx(
        guest(5),
        Limits {
            nodes: 3,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &c, "a/b", b""), ok());
    assert_eq!(s.account(5).nodes, 3);
    assert_eq!(write(&mut s, &c, "x", b""), Err(XsErrno::ENOSPC));
    // Overwriting creates nothing.
    assert_eq!(write(&mut s, &c, "a/b", b"new"), ok());
}

#[test]
fn test_new_node_inherits_acl_past_entry_quota_enospc() {
    let mut s = store();
    s.put_node(
        Arc::from("/local/domain/5/shared"),
        Arc::from(&b""[..]),
        perms(&[
            (PermKind::None, 5),
            (PermKind::Read, 1),
            (PermKind::Read, 2),
        ]),
    );
    let two = ctx(
        guest(5),
        Limits {
            node_permissions: 2,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &two, "shared/x", b""), Err(XsErrno::ENOSPC));
    let three = ctx(
        guest(5),
        Limits {
            node_permissions: 3,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &three, "shared/x", b""), ok());
    let c0 = ctx(dom0(), two.limits);
    assert_eq!(write(&mut s, &c0, "/local/domain/5/shared/y", b""), ok());
}

#[test]
fn test_node_size_quota_guest_enospc_privileged_exempt() {
    let mut s = store();
    let limits = Limits {
        node_size: 4,
        ..Limits::default()
    };
    let c = ctx(guest(5), limits);
    assert_eq!(write(&mut s, &c, "v", b"1234"), ok());
    assert_eq!(write(&mut s, &c, "v", b"12345"), Err(XsErrno::ENOSPC));
    assert_eq!(write(&mut s, &c, "w", b"12345"), Err(XsErrno::ENOSPC));
    let c0 = ctx(dom0(), limits);
    assert_eq!(write(&mut s, &c0, "/local/domain/5/w", b"12345"), ok());
}

// ---- path length ------------------------------------------------------------

/// A path of `len` bytes: `prefix` and then `x`s.
fn long_path(prefix: &str, len: usize) -> String {
    let p = format!("{prefix}{}", "x".repeat(len - prefix.len()));
    assert!(!p.ends_with('/'));
    p
}

#[test]
fn test_path_max_counts_below_a_domain_home_einval() {
    let limits = Limits {
        path_max: 20,
        ..Limits::default()
    };
    for who in [guest(5), dom0()] {
        let c = ctx(who, limits);
        // 20 bytes below /local/domain/5/ are allowed, 21 are not.
        let at = long_path("/local/domain/5/a", HOME.len() + 1 + 20);
        assert_eq!(canonical(&c, at.as_bytes(), false), Ok(at.clone()));
        let over = long_path("/local/domain/5/a", HOME.len() + 1 + 21);
        assert_eq!(canonical(&c, over.as_bytes(), false), Err(XsErrno::EINVAL));
        // Any domain's home, with up to five digits.
        let other = long_path("/local/domain/12345/a", 20 + 20);
        assert_eq!(canonical(&c, other.as_bytes(), false), Ok(other.clone()));
        let other = long_path("/local/domain/12345/a", 20 + 21);
        assert_eq!(canonical(&c, other.as_bytes(), false), Err(XsErrno::EINVAL));
        // Elsewhere the whole path counts.
        let tool = long_path("/tool/a", 20);
        assert_eq!(canonical(&c, tool.as_bytes(), false), Ok(tool.clone()));
        let tool = long_path("/tool/a", 21);
        assert_eq!(canonical(&c, tool.as_bytes(), false), Err(XsErrno::EINVAL));
        // Six digits or no slash after them: not a home, all of it counts.
        for not_home in ["/local/domain/123456/", "/local/domain/5x/"] {
            let p = long_path(not_home, 22);
            assert_eq!(
                canonical(&c, p.as_bytes(), false),
                Err(XsErrno::EINVAL),
                "{p}"
            );
        }
        // A home itself is not below a home: all of it counts.
        assert_eq!(
            canonical(&c, b"/local/domain/5", false),
            Ok(HOME.to_string())
        );
        let p = long_path("/local/domain/5", 21);
        assert_eq!(canonical(&c, p.as_bytes(), false), Err(XsErrno::EINVAL));
    }
}

#[test]
fn test_path_max_zero_unlimited_up_to_abs_path_max() {
    let c = ctx(dom0(), Limits::default());
    let max = long_path("/tool/a", xenring::wire::ABS_PATH_MAX);
    assert_eq!(canonical(&c, max.as_bytes(), false), Ok(max.clone()));
    let short = ctx(
        dom0(),
        Limits {
            path_max: 20,
            ..Limits::default()
        },
    );
    assert_eq!(
        canonical(&short, max.as_bytes(), false),
        Err(XsErrno::EINVAL)
    );
}

#[test]
fn test_path_max_applies_to_requests_relative_paths_too() {
    let mut s = store();
    let c = ctx(
        guest(5),
        Limits {
            path_max: 8,
            ..Limits::default()
        },
    );
    assert_eq!(write(&mut s, &c, "12345678", b"v"), ok());
    assert_eq!(write(&mut s, &c, "123456789", b"v"), Err(XsErrno::EINVAL));
    assert_eq!(
        write(&mut s, &c, "/local/domain/5/123456789", b"v"),
        Err(XsErrno::EINVAL)
    );
    assert_eq!(
        one(&mut s, &c, MsgType::Read, "12345678"),
        Ok(b"v".to_vec())
    );
    assert_eq!(
        one(&mut s, &c, MsgType::Read, "123456789"),
        Err(XsErrno::EINVAL)
    );
}

// ---- through the engine: the limits it hands the requests --------------------

use crate::engine::migrate::tests::{Eng, SOCK};
use crate::engine::Config;

#[test]
fn test_engine_path_max_default_applies_to_dom0_and_guests() {
    let mut e = Eng::new(Config::default());
    let d5 = e.guest(5);
    // 2048 bytes below a home (C's default path-max) pass, 2049 do not,
    // for the guest and for dom0 alike; elsewhere the whole path counts.
    let at = long_path("/local/domain/5/", HOME.len() + 1 + 2048);
    let over = long_path("/local/domain/5/", HOME.len() + 1 + 2049);
    for conn in [d5, SOCK] {
        assert_eq!(e.write(conn, &at, "v"), ok(), "conn {conn}");
        assert_eq!(
            e.write(conn, &over, "v"),
            Err(XsErrno::EINVAL),
            "conn {conn}"
        );
        assert_eq!(
            e.req(conn, MsgType::Read, &[&over]),
            Err(XsErrno::EINVAL),
            "conn {conn}"
        );
    }
    let tool_at = long_path("/tool/", 2048);
    let tool_over = long_path("/tool/", 2049);
    assert_eq!(e.write(SOCK, &tool_at, ""), ok());
    assert_eq!(e.write(SOCK, &tool_over, ""), Err(XsErrno::EINVAL));
}

#[test]
fn test_engine_path_max_set_globally_and_per_domain() {
    let mut e = Eng::new(Config::default());
    let d5 = e.guest(5);
    let d7 = e.guest(7);
    assert_eq!(e.req(SOCK, MsgType::SetQuota, &["path-max", "6"]), ok());
    assert_eq!(
        e.req(SOCK, MsgType::SetQuota, &["7", "path-max", "9"]),
        ok()
    );
    assert_eq!(e.write(d5, "123456", ""), ok());
    assert_eq!(e.write(d5, "1234567", ""), Err(XsErrno::EINVAL));
    assert_eq!(e.write(d7, "123456789", ""), ok());
    assert_eq!(e.write(d7, "1234567890", ""), Err(XsErrno::EINVAL));
    // dom0 is held to the global value.
    assert_eq!(e.write(SOCK, "/abcde", ""), ok());
    assert_eq!(e.write(SOCK, "/abcdef", ""), Err(XsErrno::EINVAL));
    assert_eq!(e.write(SOCK, "/local/domain/7/abcdef", ""), ok());
    assert_eq!(
        e.write(SOCK, "/local/domain/7/abcdefg", ""),
        Err(XsErrno::EINVAL)
    );
}

#[test]
fn test_engine_memory_quota_set_per_domain_enomem() {
    let mut e = Eng::new(Config::default());
    let d5 = e.guest(5);
    let used = e.e.store().account(5).memory;
    let p = guest_perms();
    let cost = Node::cost("/local/domain/5/a", b"12", &p);
    let limit = (used + cost).to_string();
    assert_eq!(
        e.req(SOCK, MsgType::SetQuota, &["5", "memory", &limit]),
        ok()
    );
    assert_eq!(e.write(d5, "a", "123"), Err(XsErrno::ENOMEM));
    assert_eq!(e.write(d5, "a", "12"), ok());
    assert_eq!(e.write(d5, "b", ""), Err(XsErrno::ENOMEM));
    assert_eq!(e.write(SOCK, "/local/domain/5/b", "dom0 is exempt"), ok());
}
