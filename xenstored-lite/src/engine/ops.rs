//! The requests that read or change the tree (READ, WRITE, MKDIR, RM,
//! DIRECTORY, DIRECTORY_PART, GET_PERMS, SET_PERMS): pure functions of a
//! store, a caller and a payload, so that a transaction can run them on its
//! snapshot and re-run them on the current store at commit.

use alloc::borrow::Cow;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use xenring::codec::{split_args, split_first_arg};
use xenring::path::{validate_path, PathKind};
use xenring::perms::{format_perm_list, parse_perm_list};
use xenring::{MsgType, Perm, XsErrno};

use super::dispatch::store_op;
use super::perms::{access, Who};
use super::quota::within;
use super::store::{parent, Listing, Node, Store};

/// A change to the tree, which fires the watches on its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The canonical path that changed.
    pub path: String,
    /// Permission sets under which a watcher may learn of it (any one
    /// granting read suffices: the old and new ACL for SET_PERMS).
    pub perms: Vec<Arc<[Perm]>>,
    /// The node was removed with its subtree: watches below fire too.
    pub removed: Vec<(String, Arc<[Perm]>)>,
}

/// Limits that apply to the caller (0 = unlimited; for the privileged
/// caller all are 0 but `path_max`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Nodes the caller's domain may own.
    pub nodes: u64,
    /// Bytes the caller's domain may use.
    pub memory: u64,
    /// Permission entries per node.
    pub node_permissions: u64,
    /// Path length below the domain's home.
    pub path_max: u64,
    /// Bytes per value.
    pub node_size: u64,
}

/// Context of one store operation.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The caller.
    pub who: Who,
    /// Its limits.
    pub limits: Limits,
    /// `/local/domain/<domid>` for domain callers (relative paths).
    pub home: Option<&'a str>,
}

/// The result of a store operation: the reply payload, or an error.
pub type OpResult = Result<Vec<u8>, XsErrno>;

/// Turns a path argument into a canonical path (relative paths are allowed
/// for domain callers only; `@` paths only where `special` is allowed).
///
/// An absolute or special path is the argument itself, borrowed; only a
/// relative one is built (the home, `/`, the argument).
pub fn canonical<'a>(ctx: &Ctx<'_>, raw: &'a [u8], special: bool) -> Result<Cow<'a, str>, XsErrno> {
    let kind = validate_path(raw).map_err(|_| XsErrno::EINVAL)?;
    // Validated paths are ASCII.
    let text = core::str::from_utf8(raw).map_err(|_| XsErrno::EINVAL)?;
    let path = match kind {
        PathKind::Absolute => Cow::Borrowed(text),
        PathKind::Special if special => Cow::Borrowed(text),
        PathKind::Special => return Err(XsErrno::EINVAL),
        PathKind::Relative => match ctx.home {
            Some(home) => {
                let mut path = String::with_capacity(home.len() + 1 + text.len());
                path.push_str(home);
                path.push('/');
                path.push_str(text);
                Cow::Owned(path)
            }
            None => return Err(XsErrno::EINVAL),
        },
    };
    if path.len() > xenring::wire::ABS_PATH_MAX {
        return Err(XsErrno::EINVAL);
    }
    // C 4.17's is_valid_nodename(): the path-max quota bounds the length
    // below any domain's home (`/local/domain/<N>/`, else the whole path),
    // for every caller, dom0 included, and a longer path is EINVAL.
    if ctx.limits.path_max > 0 && (path.len() - local_off(&path)) as u64 > ctx.limits.path_max {
        return Err(XsErrno::EINVAL);
    }
    Ok(path)
}

/// Where a path's part below a domain's home starts, as C's
/// `sscanf(node, "/local/domain/%5u/%n")` finds it; 0 if it is not under one.
fn local_off(path: &str) -> usize {
    const HOMES: &str = "/local/domain/";
    let Some(rest) = path.strip_prefix(HOMES) else {
        return 0;
    };
    let digits = rest.bytes().take(5).take_while(u8::is_ascii_digit).count();
    if digits > 0 && rest.as_bytes().get(digits) == Some(&b'/') {
        HOMES.len() + digits + 1
    } else {
        0
    }
}

/// One NUL-terminated argument and nothing else (C's `onearg`).
pub fn one_arg(payload: &[u8]) -> Result<&[u8], XsErrno> {
    match payload.split_last() {
        Some((0, body)) if !body.contains(&0) => Ok(body),
        _ => Err(XsErrno::EINVAL),
    }
}

/// Looks a node up for reading: `EACCES` if it exists but is unreadable, and
/// also if it does not exist but its nearest existing ancestor is unreadable
/// (so that existence is not revealed); else `ENOENT`.
pub fn readable<'s>(store: &'s Store, who: &Who, path: &str) -> Result<&'s Arc<Node>, XsErrno> {
    readable_found(store, who, path, store.get(path))
}

/// [`readable`] of the node a lookup of `path` found (`None`: there is
/// none).
fn readable_found<'n>(
    store: &Store,
    who: &Who,
    path: &str,
    found: Option<&'n Arc<Node>>,
) -> Result<&'n Arc<Node>, XsErrno> {
    match found {
        Some(node) if access(who, &node.perms).read => Ok(node),
        Some(_) => Err(XsErrno::EACCES),
        None => Err(missing(store, who, path)),
    }
}

fn missing(store: &Store, who: &Who, path: &str) -> XsErrno {
    let mut at = parent(path);
    while let Some(p) = at {
        if let Some(node) = store.get(p) {
            return if access(who, &node.perms).read {
                XsErrno::ENOENT
            } else {
                XsErrno::EACCES
            };
        }
        at = parent(p);
    }
    XsErrno::ENOENT
}

/// A store request's handler (the dispatch table holds one per type).
pub type Op = fn(&mut Store, &Ctx<'_>, &[u8], &mut Vec<Change>) -> OpResult;

/// Runs one store request of type `ty`, by the dispatch table's function
/// for it (EINVAL for a type that is not one): for a request logged by its
/// type, as a transaction's re-run is.
pub fn exec(
    store: &mut Store,
    ctx: &Ctx<'_>,
    ty: MsgType,
    payload: &[u8],
    events: &mut Vec<Change>,
) -> OpResult {
    let (op, _) = store_op(ty).ok_or(XsErrno::EINVAL)?;
    op(store, ctx, payload, events)
}

/// `READ <path>`: the value.
pub fn read(store: &mut Store, ctx: &Ctx<'_>, payload: &[u8], _: &mut Vec<Change>) -> OpResult {
    let path = canonical(ctx, one_arg(payload)?, false)?;
    Ok(readable(store, &ctx.who, &path)?.value.to_vec())
}

/// `DIRECTORY <path>`: the children's names.
pub fn directory(
    store: &mut Store,
    ctx: &Ctx<'_>,
    payload: &[u8],
    _: &mut Vec<Change>,
) -> OpResult {
    let path = canonical(ctx, one_arg(payload)?, false)?;
    // One lookup for the check and the listing.
    let ((), list) = store.listing_checked(&path, |store, node| {
        readable_found(store, &ctx.who, &path, node).map(|_| ())
    })?;
    let list = list.ok_or(XsErrno::ENOENT)?;
    // Too long for one reply: said before copying it (what the dispatch
    // would answer after).
    if list.as_slice().len() > xenring::wire::PAYLOAD_MAX {
        return Err(XsErrno::E2BIG);
    }
    Ok(match list {
        Listing::Built(list) => list,
        Listing::Cached(list) => list.to_vec(),
    })
}

/// `GET_PERMS <path>` (special paths too).
pub fn get_perms(
    store: &mut Store,
    ctx: &Ctx<'_>,
    payload: &[u8],
    _: &mut Vec<Change>,
) -> OpResult {
    let path = canonical(ctx, one_arg(payload)?, true)?;
    Ok(format_perm_list(&readable(store, &ctx.who, &path)?.perms))
}

/// `WRITE <path> <value>`.
pub fn write_request(
    store: &mut Store,
    ctx: &Ctx<'_>,
    payload: &[u8],
    events: &mut Vec<Change>,
) -> OpResult {
    let (raw, value) = split_first_arg(payload).ok_or(XsErrno::EINVAL)?;
    let path = canonical(ctx, raw, false)?;
    write(store, ctx, &path, value, true, events)
}

/// `MKDIR <path>`.
pub fn mkdir(
    store: &mut Store,
    ctx: &Ctx<'_>,
    payload: &[u8],
    events: &mut Vec<Change>,
) -> OpResult {
    let path = canonical(ctx, one_arg(payload)?, false)?;
    write(store, ctx, &path, b"", false, events)
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

/// The error for a write past the memory quota: C xenstored's
/// `domain_memory_add()` refuses with ENOMEM (the node and entry-count
/// quotas are ENOSPC).
const MEMORY_QUOTA: XsErrno = XsErrno::ENOMEM;

fn check_value(ctx: &Ctx<'_>, value: &[u8]) -> Result<(), XsErrno> {
    if !ctx.who.privileged && !within(ctx.limits.node_size, value.len() as u64) {
        return Err(XsErrno::ENOSPC);
    }
    Ok(())
}

/// WRITE (`overwrite`) and MKDIR (not): creates missing parents.
fn write(
    store: &mut Store,
    ctx: &Ctx<'_>,
    path: &str,
    value: &[u8],
    overwrite: bool,
    events: &mut Vec<Change>,
) -> OpResult {
    // The look that finds an existing node also says where it is, for
    // the change (one lookup).
    if let Some((node, spot)) = store.get_at(path) {
        if !access(&ctx.who, &node.perms).write {
            return Err(XsErrno::EACCES);
        }
        if !overwrite {
            return Ok(ok());
        }
        check_value(ctx, value)?;
        let perms = Arc::clone(&node.perms);
        let old_cost = Node::cost(path, &node.value, &node.perms);
        let new_cost = Node::cost(path, value, &perms);
        if !ctx.who.privileged && new_cost > old_cost {
            let acct = store.account(node.owner());
            if !within(ctx.limits.memory, acct.memory + new_cost - old_cost) {
                return Err(MEMORY_QUOTA);
            }
        }
        store.overwrite_at(path, spot, Arc::from(value), Arc::clone(&perms));
        events.push(Change {
            path: path.to_string(),
            perms: vec![perms],
            removed: Vec::new(),
        });
        return Ok(ok());
    }
    // Find the nearest existing ancestor; the caller must be able to write it.
    let mut missing = vec![path];
    let mut at = parent(path);
    let base = loop {
        match at {
            Some(p) => match store.get(p) {
                Some(node) => break Arc::clone(node),
                None => {
                    missing.push(p);
                    at = parent(p);
                }
            },
            None => return Err(XsErrno::ENOENT),
        }
    };
    if !access(&ctx.who, &base.perms).write {
        return Err(XsErrno::EACCES);
    }
    check_value(ctx, value)?;
    // New nodes inherit the parent's ACL; an unprivileged creator becomes
    // the owner (C xenstored's rule: a node dom0 creates in a guest's home
    // stays the guest's, or the guest could not read what dom0 wrote there).
    let mut perms: Vec<Perm> = base.perms.to_vec();
    if let Some(owner) = perms.first_mut().filter(|_| !ctx.who.privileged) {
        owner.domid = ctx.who.domid;
    }
    let perms: Arc<[Perm]> = Arc::from(perms);
    if !ctx.who.privileged {
        let acct = store.account(ctx.who.domid);
        if !within(
            ctx.limits.nodes,
            u64::from(acct.nodes) + missing.len() as u64,
        ) {
            return Err(XsErrno::ENOSPC);
        }
        if !within(ctx.limits.node_permissions, perms.len() as u64) {
            return Err(XsErrno::ENOSPC);
        }
        let cost: u64 = missing
            .iter()
            .map(|p| Node::cost(p, if *p == path { value } else { b"" }, &perms))
            .sum();
        if !within(ctx.limits.memory, acct.memory + cost) {
            return Err(MEMORY_QUOTA);
        }
    }
    for p in missing.iter().rev() {
        let v: &[u8] = if *p == path { value } else { b"" };
        store.put_node(Arc::from(*p), Arc::from(v), Arc::clone(&perms));
    }
    events.push(Change {
        path: path.to_string(),
        perms: vec![perms],
        removed: Vec::new(),
    });
    Ok(ok())
}

/// `RM <path>`: the node and its subtree.
pub fn rm(store: &mut Store, ctx: &Ctx<'_>, payload: &[u8], events: &mut Vec<Change>) -> OpResult {
    let path = canonical(ctx, one_arg(payload)?, false)?;
    if path == "/" {
        return Err(XsErrno::EINVAL);
    }
    let Some(node) = store.get(&path) else {
        // Not an error if the node is missing, but it is if its parent is.
        let p = parent(&path).ok_or(XsErrno::EINVAL)?;
        return match store.get(p) {
            Some(pn) if access(&ctx.who, &pn.perms).read => Ok(ok()),
            Some(_) => Err(XsErrno::EACCES),
            None => Err(missing(store, &ctx.who, &path)),
        };
    };
    if !access(&ctx.who, &node.perms).write {
        return Err(XsErrno::EACCES);
    }
    events.extend(remove_tree(store, &path));
    Ok(ok())
}

/// Removes `path` and everything below it, giving the change that fires
/// the watches an RM of it fires (`None`, and nothing done, if there is no
/// such node). RM, and a domain's death or release, use it.
pub fn remove_tree(store: &mut Store, path: &str) -> Option<Change> {
    let perms = Arc::clone(&store.get(path)?.perms);
    let removed = store.remove_tree(path);
    Some(Change {
        path: path.to_string(),
        perms: vec![perms],
        removed: removed
            .into_iter()
            .map(|(p, n)| (p.to_string(), Arc::clone(&n.perms)))
            .collect(),
    })
}

/// `SET_PERMS <path> <perms>...`.
pub fn set_perms(
    store: &mut Store,
    ctx: &Ctx<'_>,
    payload: &[u8],
    events: &mut Vec<Change>,
) -> OpResult {
    let (raw, list) = split_first_arg(payload).ok_or(XsErrno::EINVAL)?;
    let path = canonical(ctx, raw, true)?;
    // As C's get_strings(): bytes after the last NUL are not an entry.
    let list = &list[..list.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1)];
    let perms = parse_perm_list(list).map_err(|_| XsErrno::EINVAL)?;
    // C xenstored's order: the entry-count quota first, then the node.
    if !ctx.who.privileged && !within(ctx.limits.node_permissions, perms.len() as u64) {
        return Err(XsErrno::ENOSPC);
    }
    let node = readable(store, &ctx.who, &path).or_else(|e| match store.get(&path) {
        Some(n) => Ok(n),
        None => Err(e),
    })?;
    if !access(&ctx.who, &node.perms).owner {
        return Err(XsErrno::EACCES);
    }
    if !ctx.who.privileged && perms[0].domid != node.owner() {
        return Err(XsErrno::EPERM);
    }
    let old = Arc::clone(&node.perms);
    let value = Arc::clone(&node.value);
    let new: Arc<[Perm]> = Arc::from(perms);
    store.put_node(Arc::from(&*path), value, Arc::clone(&new));
    events.push(Change {
        path: path.into_owned(),
        perms: vec![old, new],
        removed: Vec::new(),
    });
    Ok(ok())
}

/// `DIRECTORY_PART <path> <offset>`: the children's names from `offset`
/// bytes on, after the node's generation. Only the part that reaches the
/// end of the list closes it with an empty name (a second NUL), as C
/// xenstored does: libxenstore's `xs_directory_part` adds each reply's
/// length to the next offset and stops at the first part ending "\0\0".
pub fn directory_part(
    store: &mut Store,
    ctx: &Ctx<'_>,
    payload: &[u8],
    _: &mut Vec<Change>,
) -> OpResult {
    let args: Vec<&[u8]> = split_args(payload).collect();
    if args.len() != 2 || payload.last() != Some(&0) {
        return Err(XsErrno::EINVAL);
    }
    let path = canonical(ctx, args[0], false)?;
    let offset: usize = core::str::from_utf8(args[1])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(XsErrno::EINVAL)?;
    let (generation, listing) = store.listing_checked(&path, |store, node| {
        readable_found(store, &ctx.who, &path, node).map(|n| n.generation)
    })?;
    let listing = listing.ok_or(XsErrno::ENOENT)?;
    let list = listing.as_slice();
    let mut out = generation.to_string().into_bytes();
    out.push(0);
    if offset >= list.len() {
        out.push(0);
        return Ok(out);
    }
    let max = xenring::wire::PAYLOAD_MAX - out.len() - 1;
    let mut len = 0;
    for name in list[offset..].split_inclusive(|&b| b == 0) {
        if len + name.len() > max {
            break;
        }
        len += name.len();
    }
    out.extend_from_slice(&list[offset..offset + len]);
    if offset + len == list.len() {
        out.push(0);
    }
    Ok(out)
}

/// Whether the caller may read a special (`@`) node's events.
pub fn special_readable(store: &Store, who: &Who, path: &str) -> bool {
    let base = path.split('/').next().unwrap_or(path);
    store.get(base).is_some_and(|n| access(who, &n.perms).read)
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
