//! Watches (C's watch.c): WATCH, UNWATCH and RESET_WATCHES, firing them
//! for a change (`Engine::fire`) or a domain's coming and going
//! (`Engine::fire_special`), and their registry, indexed by the path they
//! watch, so that an event costs a lookup per ancestor of the changed path
//! (and a range scan for a removed subtree), whatever the number of watches
//! registered.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

/// The watch index's hashed map (`alloc` has none; see `by_path` below for
/// why it is hashed). In the daemon its hasher is std's `RandomState`, seeded
/// per process, so a guest cannot choose watch paths that collide; without
/// std (a stub domain, which has no randomness to draw yet) it is
/// foldhash's fixed-seed hasher. The map is only looked up, never
/// iterated, so neither choice reaches an output.
#[cfg(feature = "std")]
pub(super) type HashMap<K, V> = hashbrown::HashMap<K, V, std::hash::RandomState>;
#[cfg(not(feature = "std"))]
pub(super) type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;
/// The hashed set of the same kind (the output queue's de-duplication).
#[cfg(feature = "std")]
pub(super) type HashSet<K> = hashbrown::HashSet<K, std::hash::RandomState>;
#[cfg(not(feature = "std"))]
pub(super) type HashSet<K> = hashbrown::HashSet<K, foldhash::fast::FixedState>;

use xenring::codec::{build_args, split_args, Message};
use xenring::path::{validate_path, PathKind};
use xenring::{DomId, Header, MsgType, Perm, XsErrno};

use super::dispatch::{Reply, Request};
use super::lu_state::RestoreError;
use super::ops::{self, canonical, Change, Ctx};
use super::perms::access;
use super::quota::{within, QuotaKind};
use super::store::{depth_below, is_child_of, parent};
use super::{parse_num, text, ConnId, Engine};

/// One registered watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The connection that registered it.
    pub conn: ConnId,
    /// The path as registered (relative paths stay relative in events).
    pub path: String,
    /// The canonical path watched.
    pub abs: String,
    /// The token.
    pub token: String,
    /// Levels below `abs` that fire it (`None`: all).
    pub depth: Option<u32>,
    /// Prefix stripped from event paths for a relative watch
    /// (`/local/domain/N/`).
    pub relative_prefix: Option<String>,
}

impl Watch {
    /// The event path reported for a change at canonical `event`.
    pub fn event_path(&self, event: &str) -> String {
        self.reported_path(event).to_string()
    }

    /// [`Watch::event_path`], borrowed from `event`.
    pub fn reported_path<'a>(&self, event: &'a str) -> &'a str {
        match &self.relative_prefix {
            Some(prefix) => event.strip_prefix(prefix.as_str()).unwrap_or(event),
            None => event,
        }
    }

    /// Whether a change at canonical `event` (a child of `abs`) is within
    /// the watch's depth.
    pub fn within_depth(&self, event: &str) -> bool {
        match self.depth {
            None => true,
            Some(d) => u32::try_from(depth_below(event, &self.abs)).is_ok_and(|n| n <= d),
        }
    }
}

/// Id of a watch in the registry.
pub type WatchId = u64;

/// All watches.
#[derive(Debug, Clone, Default)]
pub struct Watches {
    by_id: BTreeMap<WatchId, Watch>,
    /// Watched path → watches: one hash lookup per ancestor of an event
    /// (comparing long shared prefixes in an ordered map cost 3x at 128k
    /// watches). Only looked up, never iterated, so hash order never
    /// reaches an output. Each path's ids are ordered (registration
    /// order, for firing) and removing one is O(log n), so a connection
    /// with 100,000 watches on one path goes in O(n log n), not O(n²).
    by_path: HashMap<String, BTreeSet<WatchId>>,
    /// The watched paths, ordered, for the range scan below a removed node.
    paths: BTreeSet<String>,
    /// How many of `paths` have each length (index): an ancestor of an
    /// event whose length no watched path has is not hashed and looked up.
    lengths: Vec<u32>,
    by_key: BTreeMap<(ConnId, String, String), WatchId>,
    next: WatchId,
}

impl Watches {
    /// Registers a watch; `false` if the connection already has one with
    /// the same path and token.
    pub fn add(&mut self, watch: Watch) -> bool {
        if self.find(watch.conn, &watch.path, &watch.token).is_some() {
            return false;
        }
        let id = self.next;
        self.next += 1;
        self.by_path
            .entry(watch.abs.clone())
            .or_default()
            .insert(id);
        if self.paths.insert(watch.abs.clone()) {
            let len = watch.abs.len();
            if self.lengths.len() <= len {
                self.lengths.resize(len + 1, 0);
            }
            if let Some(n) = self.lengths.get_mut(len) {
                *n += 1;
            }
        }
        self.by_key
            .insert((watch.conn, watch.path.clone(), watch.token.clone()), id);
        self.by_id.insert(id, watch);
        true
    }

    fn find(&self, conn: ConnId, path: &str, token: &str) -> Option<WatchId> {
        self.by_key
            .get(&(conn, path.to_string(), token.to_string()))
            .copied()
    }

    fn conn_ids(&self, conn: ConnId) -> Vec<WatchId> {
        self.by_key
            .range((conn, String::new(), String::new())..)
            .take_while(|((c, _, _), _)| *c == conn)
            .map(|(_, &id)| id)
            .collect()
    }

    fn remove_id(&mut self, id: WatchId) {
        if let Some(w) = self.by_id.remove(&id) {
            self.by_key
                .remove(&(w.conn, w.path.clone(), w.token.clone()));
            if let Some(ids) = self.by_path.get_mut(&w.abs) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_path.remove(&w.abs);
                    if self.paths.remove(&w.abs) {
                        if let Some(n) = self.lengths.get_mut(w.abs.len()) {
                            *n = n.saturating_sub(1);
                        }
                    }
                }
            }
        }
    }

    /// Removes a watch; `false` if there was none.
    pub fn remove(&mut self, conn: ConnId, path: &str, token: &str) -> bool {
        match self.find(conn, path, token) {
            Some(id) => {
                self.remove_id(id);
                true
            }
            None => false,
        }
    }

    /// Removes every watch of a connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        for id in self.conn_ids(conn) {
            self.remove_id(id);
        }
    }

    /// Watches of a connection, in registration order.
    pub fn of_conn(&self, conn: ConnId) -> Vec<&Watch> {
        let mut ids = self.conn_ids(conn);
        ids.sort_unstable();
        ids.iter().filter_map(|id| self.by_id.get(id)).collect()
    }

    /// Number of watches of a connection.
    pub fn count(&self, conn: ConnId) -> usize {
        self.by_key
            .range((conn, String::new(), String::new())..)
            .take_while(|((c, _, _), _)| *c == conn)
            .count()
    }

    /// Total number of watches.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Watches that a change at canonical `event` fires: those on `event`
    /// or any ancestor, within their depth. Ordered by registration.
    pub fn matching(&self, event: &str) -> Vec<&Watch> {
        let mut ids: Vec<WatchId> = Vec::new();
        // `event` and its ancestors: each `parent` walks back over the
        // bytes from where the one before stopped.
        let mut at = Some(event);
        while let Some(p) = at {
            if self.lengths.get(p.len()).is_some_and(|&n| n > 0) {
                if let Some(v) = self.by_path.get(p) {
                    ids.extend(v.iter().copied());
                }
            }
            at = parent(p);
        }
        ids.sort_unstable();
        ids.iter()
            .filter_map(|id| self.by_id.get(id))
            .filter(|w| is_child_of(event, &w.abs) && w.within_depth(event))
            .collect()
    }

    /// Watches registered strictly below canonical `path` (fired with their
    /// own path when `path` is removed recursively). Ordered by path.
    pub fn below(&self, path: &str) -> Vec<&Watch> {
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{path}/")
        };
        self.paths
            .range(prefix.clone()..)
            .take_while(|p| p.starts_with(&prefix))
            .filter_map(|p| self.by_path.get(p))
            .flat_map(|ids| ids.iter().filter_map(|id| self.by_id.get(id)))
            .collect()
    }

    /// Every watch, by registration.
    pub fn all(&self) -> impl Iterator<Item = &Watch> {
        self.by_id.values()
    }

    /// Bytes a connection's watches are charged to its domain: path and
    /// token of each, as C xenstored charges them (`engine/account.rs`).
    pub fn bytes(&self, conn: ConnId) -> usize {
        self.by_key
            .range((conn, String::new(), String::new())..)
            .take_while(|((c, _, _), _)| *c == conn)
            .map(|((_, path, token), _)| path.len() + token.len())
            .sum()
    }
}

impl Engine {
    /// `WATCH <path> <token> [<depth>]`.
    pub(super) fn watch(&mut self, req: &Request<'_>) -> Reply {
        let (conn, who, payload) = (req.conn, req.who, req.payload);
        let args: Vec<&[u8]> = split_args(payload).collect();
        if args.len() < 2 || args.len() > 3 {
            return Err(XsErrno::EINVAL);
        }
        let depth = match args.get(2) {
            Some(d) if !d.is_empty() => Some(parse_num::<u32>(d)?),
            _ => None,
        };
        let home = self.home(conn);
        let ctx = Ctx {
            who,
            limits: self.limits(&who),
            home: home.as_deref(),
        };
        let abs = canonical(&ctx, args[0], true)?.into_owned();
        let path = text(args[0])?;
        let token = text(args[1])?;
        if path.len() + token.len() + 2 > xenring::wire::PAYLOAD_MAX {
            // Not even the first event would fit in a message.
            return Err(XsErrno::EINVAL);
        }
        let relative_prefix = if path.starts_with('/') || path.starts_with('@') {
            None
        } else {
            home.as_deref().map(|h| format!("{h}/"))
        };
        if !who.privileged {
            // Beyond C: a guest's watch must have room for every event it
            // can be sent, or each would be dropped (and logged).
            let longest =
                self.longest_event_path(who.domid, &path, depth, relative_prefix.as_deref());
            if longest + token.len() + 2 > xenring::wire::PAYLOAD_MAX {
                return Err(XsErrno::EINVAL);
            }
            let limit = self.limit(who.domid, QuotaKind::Watches);
            if !within(limit, self.watches.count(conn) as u64 + 1) {
                return Err(XsErrno::ENOSPC);
            }
        }
        self.check_memory(&who, (path.len() + token.len()) as u64)?;
        let added = self.watches.add(Watch {
            conn,
            path,
            abs,
            token,
            depth,
            relative_prefix,
        });
        if added {
            Ok(Some(b"OK\0".to_vec()))
        } else {
            Err(XsErrno::EEXIST)
        }
    }

    /// The longest event path a watch of `domid` on `path` (as
    /// registered) can be sent. A node's path is at most
    /// [`xenring::wire::ABS_PATH_MAX`], and (C 4.17's `is_valid_nodename`)
    /// at most the path-max quota below a domain's home
    /// `/local/domain/<N>/`, whose longest form (`N` of five digits) is 20
    /// bytes: with the default quota of 2048, 2068 bytes, which leaves an
    /// absolute watch room for a token of 2026 bytes. The quota taken is
    /// the larger of the global one (dom0's, and every domain's without
    /// its own) and the watcher's domain's; an event for a longer path
    /// (another domain given a larger quota by SET_QUOTA) is dropped and
    /// counted in the log. A relative watch
    /// reports paths below its home without it: at most the quota; one of depth 0 only its own
    /// path; `@introduceDomain` / `@releaseDomain` with depth add `/<domid>`.
    fn longest_event_path(
        &self,
        domid: DomId,
        path: &str,
        depth: Option<u32>,
        relative: Option<&str>,
    ) -> usize {
        /// `/local/domain/<N>/` with `N` of the five digits C reads.
        const LONGEST_HOME: usize = "/local/domain/99999/".len();
        if path.starts_with('@') {
            return path.len() + "/99999".len();
        }
        if depth == Some(0) {
            return path.len();
        }
        let abs_max = xenring::wire::ABS_PATH_MAX;
        // Its own domain's quota too: the nodes it writes itself (0, no
        // limit, wins).
        let global = self.config.quotas.hard(QuotaKind::PathMax);
        let own = self.limit(domid, QuotaKind::PathMax);
        let path_max = if global == 0 || own == 0 {
            0
        } else {
            global.max(own)
        };
        let node = match usize::try_from(path_max) {
            Ok(m) if m > 0 => abs_max.min(LONGEST_HOME.saturating_add(m)),
            _ => abs_max,
        };
        let reported = match relative {
            // Every node below the home `/local/domain/<N>/` it strips.
            Some(prefix) => match usize::try_from(path_max) {
                Ok(m) if m > 0 => m.min(abs_max.saturating_sub(prefix.len())),
                _ => abs_max.saturating_sub(prefix.len()),
            },
            None => node,
        };
        reported.max(path.len())
    }

    /// `UNWATCH <path> <token>`.
    pub(super) fn unwatch(&mut self, req: &Request<'_>) -> Reply {
        let args: Vec<&[u8]> = split_args(req.payload).collect();
        if args.len() < 2 {
            return Err(XsErrno::EINVAL);
        }
        let path = text(args[0])?;
        if self.watches.remove(req.conn, &path, &text(args[1])?) {
            Ok(Some(b"OK\0".to_vec()))
        } else {
            Err(XsErrno::ENOENT)
        }
    }

    /// `RESET_WATCHES`: the connection's watches go, and (as in C) its
    /// transactions.
    pub(super) fn reset_watches(&mut self, req: &Request<'_>) -> Reply {
        self.watches.remove_conn(req.conn);
        if let Some(c) = self.conns.get_mut(&req.conn) {
            c.transactions.clear();
        }
        Ok(Some(b"OK\0".to_vec()))
    }

    /// "When a watch is first set up it is triggered once straight away,
    /// with <path> equal to <wpath>" (after the reply).
    pub(super) fn initial_watch_event(&mut self, req: &Request<'_>) {
        let mut args = split_args(req.payload);
        let (Some(path), Some(token)) = (args.next(), args.next()) else {
            return;
        };
        let msg = build_args(&[path, token]);
        let event = Message {
            header: Header::new(
                MsgType::WatchEvent,
                0,
                0,
                u32::try_from(msg.len()).unwrap_or(0),
            ),
            payload: msg,
        };
        self.queue(req.conn, event, true);
    }

    pub(super) fn send_event(&mut self, conn: ConnId, path: &str, token: &str) {
        let payload = build_args(&[path.as_bytes(), token.as_bytes()]);
        self.send_event_payload(conn, payload, path.len());
    }

    /// Queues the watch event `payload` (its path, NUL, its token, NUL;
    /// the path `path_len` bytes) for `conn`, unless it is too long to
    /// send (counted in the log instead).
    fn send_event_payload(&mut self, conn: ConnId, payload: Vec<u8>, path_len: usize) {
        if payload.len() > xenring::wire::PAYLOAD_MAX {
            let len = payload.len();
            let path = payload.get(..path_len).unwrap_or_default();
            // Event paths are validated paths: ASCII.
            let path = String::from_utf8_lossy(path).into_owned();
            self.note_log(conn, |l| {
                l.too_long += 1;
                l.too_long_last = Some((path, len));
            });
            return;
        }
        let msg = Message {
            header: Header::new(
                MsgType::WatchEvent,
                0,
                0,
                u32::try_from(payload.len()).unwrap_or(0),
            ),
            payload,
        };
        self.queue(conn, msg, true);
    }

    pub(super) fn may_see(&self, conn: ConnId, perms: &[Arc<[Perm]>]) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let who = self.who(c);
        perms.iter().any(|p| access(&who, p).read)
    }

    /// Fires the watches an event concerns. Each event's payload is built
    /// once, straight from the watch's path and token.
    pub(super) fn fire(&mut self, event: &Change) {
        let mut deliveries: Vec<(ConnId, Vec<u8>, usize)> = Vec::new();
        for w in self.watches.matching(&event.path) {
            if self.may_see(w.conn, &event.perms) {
                let path = w.reported_path(&event.path);
                let payload = build_args(&[path.as_bytes(), w.token.as_bytes()]);
                deliveries.push((w.conn, payload, path.len()));
            }
        }
        if !event.removed.is_empty() {
            let removed: BTreeMap<&str, &Arc<[Perm]>> = event
                .removed
                .iter()
                .map(|(p, perms)| (p.as_str(), perms))
                .collect();
            for w in self.watches.below(&event.path) {
                let perms = removed
                    .get(w.abs.as_str())
                    .map_or_else(|| event.perms.clone(), |p| vec![Arc::clone(p)]);
                if self.may_see(w.conn, &perms) {
                    let payload = build_args(&[w.path.as_bytes(), w.token.as_bytes()]);
                    deliveries.push((w.conn, payload, w.path.len()));
                }
            }
        }
        for (conn, payload, path_len) in deliveries {
            self.send_event_payload(conn, payload, path_len);
        }
    }

    /// `@introduceDomain` / `@releaseDomain` for `domid`. As C xenstored
    /// 4.17 (XSA-115), only connections that may read the special node
    /// hear of it (the privileged ones, and those its ACL lets read); and,
    /// beyond C, `domid` itself and a domain acting for it (`SET_TARGET`).
    /// An unprivileged guest never learns of an unrelated domain.
    pub(super) fn fire_special(&mut self, base: &str, domid: DomId) {
        let specific = format!("{base}/{domid}");
        let mut deliveries = Vec::new();
        for w in self.watches.matching(base) {
            let path = if w.depth.is_some_and(|d| d >= 1) {
                specific.clone()
            } else {
                base.to_string()
            };
            deliveries.push((w.conn, path, w.token.clone()));
        }
        for w in self.watches.matching(&specific) {
            deliveries.push((w.conn, specific.clone(), w.token.clone()));
        }
        for (conn, path, token) in deliveries {
            let allowed = match self.conns.get(&conn) {
                Some(c) => {
                    let who = self.who(c);
                    who.privileged
                        || who.domid == domid
                        || who.target == Some(domid)
                        || ops::special_readable(&self.store, &who, base)
                }
                None => false,
            };
            if allowed {
                self.send_event(conn, &path, &token);
            }
        }
    }

    pub(super) fn restore_watch(
        &self,
        index: usize,
        conns: &BTreeMap<u32, ConnId>,
        conn_id: u32,
        wpath: &str,
        token: &[u8],
        depth: Option<u32>,
    ) -> Result<Watch, RestoreError> {
        let conn = *conns
            .get(&conn_id)
            .ok_or(RestoreError::UnknownConnection { index, conn_id })?;
        let bad = |reason| RestoreError::BadWatch {
            index,
            path: wpath.to_string(),
            reason,
        };
        let token = String::from_utf8(token.to_vec()).map_err(|_| bad("token is not UTF-8"))?;
        let home = self
            .home(conn)
            .ok_or(RestoreError::UnknownConnection { index, conn_id })?;
        let (abs, relative_prefix) =
            match validate_path(wpath.as_bytes()).map_err(|_| bad("invalid path"))? {
                PathKind::Absolute | PathKind::Special => (wpath.to_string(), None),
                PathKind::Relative => (format!("{home}/{wpath}"), Some(format!("{home}/"))),
            };
        Ok(Watch {
            conn,
            path: wpath.to_string(),
            abs,
            token,
            depth,
            relative_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(conn: ConnId, path: &str, token: &str) -> Watch {
        Watch {
            conn,
            path: path.to_string(),
            abs: path.to_string(),
            token: token.to_string(),
            depth: None,
            relative_prefix: None,
        }
    }

    fn tokens(w: &[&Watch]) -> Vec<String> {
        w.iter()
            .map(|w| format!("{}:{}", w.conn, w.token))
            .collect()
    }

    /// Watches on one path fire in registration order, and stay so when
    /// some of them go, one by one or a connection's all at once; the path
    /// is forgotten with its last watch.
    #[test]
    fn test_watches_same_path_removal_keeps_registration_order() {
        let mut ws = Watches::default();
        for i in 0..1000 {
            assert!(ws.add(watch(i % 3, "/p", &format!("t{i}"))));
        }
        assert!(ws.remove(1, "/p", "t1"));
        assert!(!ws.remove(1, "/p", "t1"), "gone already");
        ws.remove_conn(2);
        let fired = tokens(&ws.matching("/p/x"));
        let want: Vec<String> = (0..1000)
            .filter(|i| i % 3 != 2 && *i != 1)
            .map(|i| format!("{}:t{i}", i % 3))
            .collect();
        assert_eq!(fired, want);
        assert_eq!(ws.len(), want.len());
        assert_eq!(tokens(&ws.below("/")), want, "below: the same order");
        ws.remove_conn(0);
        ws.remove_conn(1);
        assert!(ws.is_empty());
        assert!(ws.matching("/p").is_empty());
        assert!(ws.paths.is_empty() && ws.by_path.is_empty());
        assert!(ws.lengths.iter().all(|&n| n == 0));
    }

    /// The count of watched paths by length follows the paths as watches
    /// come and go, so that a path sharing its length with one no longer
    /// watched (or still watched) fires, and one of an unwatched length is
    /// skipped only when nothing that long is watched.
    #[test]
    fn test_watches_lengths_follow_the_watched_paths() {
        let recount = |ws: &Watches| {
            let mut want = alloc::vec![0u32; ws.lengths.len()];
            for p in &ws.paths {
                want[p.len()] += 1;
            }
            assert_eq!(ws.lengths, want);
        };
        let mut ws = Watches::default();
        ws.add(watch(1, "/a/b", "x"));
        ws.add(watch(2, "/a/b", "y"));
        ws.add(watch(1, "/a/c", "z"));
        ws.add(watch(3, "/abcdef", "w"));
        recount(&ws);
        assert_eq!(ws.lengths[4], 2, "two paths of 4 bytes, three watches");
        assert!(ws.remove(1, "/a/b", "x"));
        recount(&ws);
        assert_eq!(tokens(&ws.matching("/a/b/q")), ["2:y"]);
        assert!(ws.remove(2, "/a/b", "y"));
        recount(&ws);
        assert!(ws.matching("/a/b/q").is_empty());
        assert_eq!(
            tokens(&ws.matching("/a/c")),
            ["1:z"],
            "same length, still watched"
        );
        ws.remove_conn(1);
        recount(&ws);
        assert!(ws.matching("/a/c").is_empty());
        assert_eq!(tokens(&ws.matching("/abcdef/g/h")), ["3:w"]);
        ws.add(watch(4, "/", "root"));
        recount(&ws);
        assert_eq!(tokens(&ws.matching("/abcdef/g")), ["3:w", "4:root"]);
        ws.remove_conn(3);
        ws.remove_conn(4);
        recount(&ws);
        assert!(ws.lengths.iter().all(|&n| n == 0));
    }

    /// An event fires the watches on it and on each of its ancestors (as
    /// `parent` walks them, up to `/`), and a special path's only its own.
    #[test]
    fn test_watches_matching_walks_every_ancestor() {
        let mut ws = Watches::default();
        for (i, p) in ["/", "/a", "/a/b", "/a/b/c", "/ab", "@introduceDomain"]
            .into_iter()
            .enumerate()
        {
            ws.add(watch(1, p, &i.to_string()));
        }
        let fired = |p: &str| -> Vec<String> {
            let mut t: Vec<String> = ws.matching(p).iter().map(|w| w.token.clone()).collect();
            t.sort();
            t
        };
        assert_eq!(fired("/a/b/c/d"), ["0", "1", "2", "3"]);
        assert_eq!(fired("/a/b"), ["0", "1", "2"]);
        assert_eq!(fired("/ab/c"), ["0", "4"]);
        assert_eq!(fired("/"), ["0"]);
        assert_eq!(fired("/x"), ["0"]);
        assert_eq!(fired("@introduceDomain"), ["5"]);
    }

    /// A connection's 20,000 watches on one path go in one
    /// `remove_conn` (O(n log n); the Vec it replaces made this O(n²)).
    #[test]
    fn test_watches_twenty_thousand_on_one_path_removed() {
        let mut ws = Watches::default();
        for i in 0..20_000 {
            ws.add(watch(7, "/one", &i.to_string()));
        }
        ws.add(watch(8, "/one", "other"));
        ws.remove_conn(7);
        assert_eq!(tokens(&ws.matching("/one")), ["8:other"]);
    }
}
