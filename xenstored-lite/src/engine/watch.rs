//! Watches, indexed by the path they watch, so that an event costs a lookup
//! per ancestor of the changed path (and a range scan for a removed
//! subtree), whatever the number of watches registered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::store::{depth_below, is_child_of, parent};
use super::ConnId;

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
        match &self.relative_prefix {
            Some(prefix) => event
                .strip_prefix(prefix.as_str())
                .unwrap_or(event)
                .to_string(),
            None => event.to_string(),
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
    /// reaches an output.
    by_path: HashMap<String, Vec<WatchId>>,
    /// The watched paths, ordered, for the range scan below a removed node.
    paths: BTreeSet<String>,
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
        self.by_path.entry(watch.abs.clone()).or_default().push(id);
        self.paths.insert(watch.abs.clone());
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
                ids.retain(|&i| i != id);
                if ids.is_empty() {
                    self.by_path.remove(&w.abs);
                    self.paths.remove(&w.abs);
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
        let mut at = Some(event);
        while let Some(p) = at {
            if let Some(v) = self.by_path.get(p) {
                ids.extend(v.iter().copied());
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
}
