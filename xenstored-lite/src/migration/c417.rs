//! The stream in the form C xenstored 4.17 takes over, and a model of what
//! it accepts.
//!
//! A live update from xenstored-lite to Debian's C xenstored 4.17 hands it
//! a migration stream; C applies the records in stream order, checks
//! nothing, and every mistake is fatal *after* the exec (a `FATAL:` line, or
//! a SIGSEGV). So everything is checked before it:
//!
//! * [`to_c417`] turns a stream as our writer produces it (version 2, our
//!   record order, our extension fields, open transactions, depth watches,
//!   quotas) into the one form C 4.17 reads, or refuses with the reason;
//! * [`check_c417`] is a model of C 4.17's acceptance rules, one check per
//!   rule, run on the exact bytes that would be handed over.
//!
//! The rules (from Xen 4.17's `lu_read_state` and the `read_state_*`
//! functions, several tried on the real binary; see the project's research
//! note on C's live update):
//!
//! * header `xenstore`, version exactly 1 (version 2 is fatal), flags 0
//!   (little-endian records, as on the hosts Debian ships C for);
//! * records `u32 type, u32 length`, the length counting the body's padding
//!   to 8 octets; `END` last, empty, nothing after it;
//! * `GLOBAL_DATA` first and once;
//! * the first connection record is dom0's ring (it creates C's node
//!   database): no socket record and no node before it;
//! * a ring's target domain (`tdomid`) has its ring record earlier;
//! * a watch comes after its connection's record;
//! * a connection's pending output is the rest of a half-sent message
//!   (`out-resp-len` octets), then whole messages;
//! * every node is committed (C commits transaction nodes): `conn-id` and
//!   `tx-id` 0; `perm-count` at least 1; the owner (first permission) is
//!   dom0 or a domain whose ring record came earlier; parents before
//!   children; each path once;
//! * no `TRANSACTION_DATA`, `GLOBAL_QUOTA_DATA`, `DOMAIN_DATA` or
//!   `WATCH_DATA_EXTENDED` (C 4.17 skips them: their state would be lost)
//!   and no unknown record type.
//!
//! Ring records C keeps with event channel 0 keep the domain known (so it
//! may own nodes) without serving its ring: [`to_c417`] writes one for a
//! dom0 that has no ring (mock-xen, `-D`) and for every domain our state
//! still holds (`DOMAIN_DATA`) whose ring connection was cut off, which our
//! writer leaves out of the stream.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use xenring::DomId;

use super::{
    Access, ConnSpec, ConnectionData, Endian, GlobalData, Header, MigrationError, NodeData, Quota,
    Record, RecordType, RingConn, Stream, Version, WatchData, WriteError, DEPTH_UNLIMITED,
    DOMID_INVALID, MAGIC,
};

/// Why a stream cannot be handed to C xenstored 4.17.
///
/// Record indices count from 0 for the first record after the header: in
/// [`check_c417`]'s refusals they are those of the bytes checked, in
/// [`to_c417`]'s those of the stream given to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum C417Refusal {
    /// Fewer than the 16 header octets.
    #[error("the stream is {have} octets long, shorter than its 16-octet header")]
    HeaderTruncated {
        /// Octets present.
        have: usize,
    },
    /// The ident is not `xenstore`.
    #[error("the stream's ident is {found:02x?}, not \"xenstore\"")]
    BadMagic {
        /// The eight octets found.
        found: [u8; 8],
    },
    /// A header version other than 1.
    #[error("stream version {version}: C xenstored 4.17 reads only version 1 (it stops with \"FATAL: Unknown record identifier\")")]
    Version {
        /// The version in the header.
        version: u32,
    },
    /// Header flags other than 0.
    #[error("header flags {flags:#010x}: C xenstored 4.17 on a little-endian host needs 0 (little-endian records)")]
    Flags {
        /// The flags in the header.
        flags: u32,
    },
    /// The input ends inside a record's type and length.
    #[error("record {index}: the stream ends inside its 8-octet header ({have} octets left)")]
    RecordHeaderTruncated {
        /// The record.
        index: usize,
        /// Octets left.
        have: usize,
    },
    /// A record's length runs past the end of the input.
    #[error("record {index} ({record_type}): length {len} runs past the end of the stream ({have} octets left)")]
    RecordTruncated {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// Its length field.
        len: u32,
        /// Octets left after its header.
        have: usize,
    },
    /// A record's length does not count its padding to 8 octets.
    #[error("record {index} ({record_type}): length {len} is not a multiple of 8: C xenstored 4.17 would read the next record from the wrong offset")]
    LengthNotPadded {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// Its length field.
        len: u32,
    },
    /// A record's length is not that of its fields padded to 8 octets (the
    /// fields' own length fields say otherwise).
    #[error("record {index} ({record_type}): length {len}, but its length fields add up to {used} octets (padded: {padded})")]
    LengthMismatch {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// Its length field.
        len: u32,
        /// Octets its fields use.
        used: u64,
        /// `used` padded to 8.
        padded: u64,
    },
    /// A string field (path, token) without its NUL terminator.
    #[error("record {index} ({record_type}): `{field}` is not NUL-terminated: C xenstored 4.17 would read past it")]
    Unterminated {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The field.
        field: &'static str,
    },
    /// A record type C 4.17 does not know.
    #[error("record {index}: unknown record type {record_type}: C xenstored 4.17 would skip it")]
    UnknownRecordType {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
    },
    /// A `TRANSACTION_DATA` record (C 4.17 skips it and commits its nodes).
    #[error("record {index}: TRANSACTION_DATA for transaction {tx_id} of connection {conn_id}: C xenstored 4.17 carries no transactions (end them, or drop them with -F)")]
    TransactionRecord {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// The transaction.
        tx_id: u32,
    },
    /// A `WATCH_DATA_EXTENDED` record (C 4.17 skips it: the watch is lost).
    #[error("record {index}: WATCH_DATA_EXTENDED for watch {path:?} (token {token:?}, depth {depth}) of connection {conn_id}: C xenstored 4.17 would skip it and lose the watch")]
    ExtendedWatchRecord {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// The watched path.
        path: String,
        /// The token (lossy UTF-8).
        token: String,
        /// Its depth.
        depth: u16,
    },
    /// A `GLOBAL_QUOTA_DATA` or `DOMAIN_DATA` record (C 4.17 skips it).
    #[error("record {index} ({record_type}): C xenstored 4.17 reads quotas only from its command line and would skip it")]
    QuotaRecord {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
    },
    /// The stream ends without `END`.
    #[error("the stream ends after {records} records without an END record")]
    MissingEnd {
        /// Records read.
        records: usize,
    },
    /// An `END` record with a body.
    #[error("record {index}: END has length {len}, not 0")]
    EndNotEmpty {
        /// The record.
        index: usize,
        /// Its length field.
        len: u32,
    },
    /// Octets after `END`.
    #[error("{bytes} octets follow the END record (record {index})")]
    TrailingBytes {
        /// The index of `END`.
        index: usize,
        /// Octets after it.
        bytes: usize,
    },
    /// The stream does not decode (our reader is stricter than C, and a
    /// stream it refuses would not come back either).
    #[error("the stream does not decode: {0}")]
    Unreadable(#[source] MigrationError),
    /// The first record is not `GLOBAL_DATA`.
    #[error("record {index} ({record_type}) comes first: C xenstored 4.17 needs GLOBAL_DATA (its descriptors) as the first record")]
    GlobalNotFirst {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
    },
    /// No `GLOBAL_DATA` at all (to_c417's input).
    #[error("the stream has no GLOBAL_DATA record: C xenstored 4.17 needs the listening socket and event-channel descriptors")]
    MissingGlobal,
    /// A second `GLOBAL_DATA`.
    #[error("record {index}: a second GLOBAL_DATA record")]
    SecondGlobal {
        /// The record.
        index: usize,
    },
    /// A socket connection before dom0's ring record.
    #[error("record {index}: socket connection {conn_id} comes before dom0's ring record, which C xenstored 4.17 needs first (it would crash)")]
    SocketBeforeDom0 {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
    },
    /// Another domain's ring before dom0's ring record.
    #[error("record {index}: ring connection {conn_id} of domain {domid} comes before dom0's ring record, which C xenstored 4.17 needs first")]
    RingBeforeDom0 {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// Its domain.
        domid: DomId,
    },
    /// A node before dom0's ring record.
    #[error("record {index}: node {path} comes before dom0's ring record, which creates C xenstored 4.17's node database")]
    NodeBeforeDom0 {
        /// The record.
        index: usize,
        /// The node.
        path: String,
    },
    /// No ring record for dom0 at all.
    #[error("the stream has no ring record for dom0: C xenstored 4.17 would crash (write one, with event channel 0 if dom0 has no ring)")]
    NoDom0Ring,
    /// Two ring records for one domain.
    #[error("record {index}: ring connection {conn_id} is a second one for domain {domid} (connection {first_conn_id} is the first)")]
    DuplicateDomain {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// The domain.
        domid: DomId,
        /// The domain's first ring connection.
        first_conn_id: u32,
    },
    /// A ring naming a target whose ring record is not earlier.
    #[error("record {index}: ring connection {conn_id} of domain {domid} names domain {tdomid} as its target, and no ring record for domain {tdomid} comes before it")]
    TargetNotBefore {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// Its domain.
        domid: DomId,
        /// Its target.
        tdomid: DomId,
    },
    /// A ring naming a target domain the stream has no ring for.
    #[error("ring connection {conn_id} of domain {domid} names domain {tdomid} as its target, which has no ring record: C xenstored 4.17 needs the target's first")]
    MissingTarget {
        /// The connection.
        conn_id: u32,
        /// Its domain.
        domid: DomId,
        /// Its target.
        tdomid: DomId,
    },
    /// Rings whose targets name each other.
    #[error("ring connections {conns:?} (connection, domain, target) name each other as targets: no order puts every target first")]
    TargetCycle {
        /// The connections left: `(conn-id, domid, tdomid)`.
        conns: Vec<(u32, DomId, DomId)>,
    },
    /// Dom0's ring names a target: it cannot come first then.
    #[error("ring connection {conn_id} of dom0 names domain {tdomid} as its target, but dom0's record must come first")]
    Dom0Target {
        /// The connection.
        conn_id: u32,
        /// Its target.
        tdomid: DomId,
    },
    /// Pending output that is not whole messages after its half-sent one.
    #[error("record {index}: connection {conn_id}'s pending output is not whole messages after its first {out_resp_len} octets (a message is cut at octet {offset}): C xenstored 4.17 would stop")]
    PartialOutput {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// Its `out-resp-len`.
        out_resp_len: u16,
        /// Where, in `out-data`, the cut message starts.
        offset: usize,
    },
    /// A watch before (or without) its connection's record.
    #[error("record {index}: watch {path:?} (token {token:?}) of connection {conn_id} comes before that connection's record (or it has none)")]
    WatchBeforeConnection {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// The watched path.
        path: String,
        /// The token (lossy UTF-8).
        token: String,
    },
    /// A watch with a depth limit, which C 4.17 does not have.
    #[error("record {index}: watch {path:?} (token {token:?}) of connection {conn_id} has depth {depth}: C xenstored 4.17 has no depth watches and would lose it")]
    DepthWatch {
        /// The record.
        index: usize,
        /// The connection.
        conn_id: u32,
        /// The watched path.
        path: String,
        /// The token (lossy UTF-8).
        token: String,
        /// Its depth.
        depth: u16,
    },
    /// An open transaction (to_c417 without `drop_transactions`).
    #[error("connection {conn_id} has transaction {tx_id} open: C xenstored 4.17 carries none (wait for it to end, or drop it with -F: its client gets ENOENT)")]
    OpenTransaction {
        /// The connection.
        conn_id: u32,
        /// The transaction.
        tx_id: u32,
    },
    /// A node of a transaction (C would commit it).
    #[error("record {index}: node {path} belongs to transaction {tx_id} of connection {conn_id}: C xenstored 4.17 would commit it")]
    TransactionNode {
        /// The record.
        index: usize,
        /// The node.
        path: String,
        /// Its `conn-id`.
        conn_id: u32,
        /// Its `tx-id`.
        tx_id: u32,
    },
    /// A node without permissions.
    #[error("record {index}: node {path} has no permissions (perm-count 0): C xenstored 4.17 needs an owner")]
    NoPermissions {
        /// The record.
        index: usize,
        /// The node.
        path: String,
    },
    /// A node owned by a domain C would not know.
    #[error("record {index}: node {path} is owned by domain {owner}, which C xenstored 4.17 would not know: no ring record for it comes before the node (C stops with \"FATAL: write node error restoring node\")")]
    UnknownOwner {
        /// The record.
        index: usize,
        /// The node.
        path: String,
        /// Its owner.
        owner: DomId,
    },
    /// A node before its parent.
    #[error("record {index}: node {path} comes before its parent {parent}")]
    OrphanNode {
        /// The record.
        index: usize,
        /// The node.
        path: String,
        /// Its parent.
        parent: String,
    },
    /// A path written twice.
    #[error("record {index}: node {path} was already written by record {first}")]
    DuplicatePath {
        /// The record.
        index: usize,
        /// The node.
        path: String,
        /// The record that wrote it first.
        first: usize,
    },
    /// A per-domain quota that differs from the global one (to_c417 without
    /// `drop_domain_quotas`).
    #[error("domain {domid} has its own quota {name} = {value} (global: {global:?}): C xenstored 4.17 has no per-domain quotas (drop them to go on)")]
    DomainQuota {
        /// The domain.
        domid: DomId,
        /// The quota's name.
        name: String,
        /// The domain's value.
        value: u32,
        /// The global value, if there is one.
        global: Option<u32>,
    },
    /// The converted stream cannot be written.
    #[error("the stream for C xenstored 4.17 cannot be written: {0}")]
    Encode(#[source] WriteError),
}

/// What [`to_c417`] may give up to make the stream fit C 4.17.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct C417Options {
    /// Drop open transactions (C's own `-F`): their records go, their ids
    /// are reported, their clients get ENOENT from C. Else an open
    /// transaction is a refusal.
    pub drop_transactions: bool,
    /// Drop per-domain quotas that differ from the global ones. Else such
    /// a quota is a refusal.
    pub drop_domain_quotas: bool,
}

/// A transaction, as the stream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamTransaction {
    /// The connection's stream id.
    pub conn_id: u32,
    /// The transaction id.
    pub tx_id: u32,
}

/// A per-domain quota that was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DroppedQuota {
    /// The domain.
    pub domid: DomId,
    /// Its quota.
    pub quota: Quota,
}

/// A ring record written with event channel 0: the domain stays known to
/// C (and owns its nodes), its ring is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InertRing {
    /// The record's connection id (one no other record uses).
    pub conn_id: u32,
    /// The domain.
    pub domid: DomId,
}

/// A stream in the form C 4.17 reads, with what the caller must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C417Stream {
    /// The stream: version 1, little-endian.
    pub stream: Stream,
    /// The global quotas of the original stream (`GLOBAL_QUOTA_DATA`), for
    /// C's command line: C 4.17 reads none from the stream.
    pub global_quotas: Vec<Quota>,
    /// Open transactions dropped (`drop_transactions`), in stream order.
    pub dropped_transactions: Vec<StreamTransaction>,
    /// Per-domain quotas dropped (`drop_domain_quotas`).
    pub dropped_domain_quotas: Vec<DroppedQuota>,
    /// The dom0 ring record written because the stream had none.
    pub synthesized_dom0: Option<InertRing>,
    /// Ring records written for domains our state holds without a ring
    /// connection (cut off): they keep owning their nodes.
    pub dead_rings: Vec<InertRing>,
    /// Domains with `SET_FEATURE` bits (`DOMAIN_DATA`'s `features`), which
    /// C 4.17 does not implement: the caller clears them on the rings.
    pub domain_features: Vec<(DomId, u32)>,
}

impl C417Stream {
    /// The stream's bytes, checked by [`check_c417`] before they are
    /// returned.
    pub fn to_bytes(&self) -> Result<Vec<u8>, C417Refusal> {
        self.to_checked_bytes().map(|(bytes, _)| bytes)
    }

    /// [`C417Stream::to_bytes`], with what [`check_c417`] found in them.
    pub fn to_checked_bytes(&self) -> Result<(Vec<u8>, C417Summary), C417Refusal> {
        let bytes = self.stream.to_bytes().map_err(C417Refusal::Encode)?;
        let summary = check_c417(&bytes)?;
        Ok((bytes, summary))
    }
}

/// What [`check_c417`] found in an accepted stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct C417Summary {
    /// Ring connection records.
    pub rings: usize,
    /// Socket connection records.
    pub sockets: usize,
    /// Node records.
    pub nodes: usize,
    /// Watch records.
    pub watches: usize,
    /// Permission entries after a node's owner that name a domain C 4.17
    /// does not know when it reads the node: C drops them without a word
    /// (the node's other permissions stay). Only domains with no ring
    /// left are so named, so no running guest loses access.
    pub dropped_perms: usize,
    /// The first few of them: the node's path and the domain.
    pub dropped_perm_examples: Vec<(String, DomId)>,
}

/// How many dropped permission entries [`C417Summary`] names.
pub const DROPPED_PERM_EXAMPLES: usize = 8;

impl C417Summary {
    /// What to tell the operator of the permission entries C will drop,
    /// if any: their number and the first few nodes.
    pub fn dropped_perms_note(&self) -> Option<String> {
        if self.dropped_perms == 0 {
            return None;
        }
        let examples: Vec<String> = self
            .dropped_perm_examples
            .iter()
            .map(|(path, domid)| alloc::format!("{path} (domain {domid})"))
            .collect();
        let more = self.dropped_perms > examples.len();
        Some(alloc::format!(
            "C xenstored 4.17 will drop {} permission entr{} naming domains that have no ring \
             (it keeps only those of domains it knows): {}{}",
            self.dropped_perms,
            if self.dropped_perms == 1 { "y" } else { "ies" },
            examples.join(", "),
            if more { ", ..." } else { "" }
        ))
    }
}

/// Checks that `c`'s pending output is its half-sent message's rest
/// (`out-resp-len` octets) then whole `xs_wire` messages, as C queues it.
fn whole_output(index: usize, c: &ConnectionData) -> Result<(), C417Refusal> {
    let start = usize::from(c.out_resp_len);
    let mut at = start;
    while at < c.out_data.len() {
        let whole = Fields(&c.out_data)
            .u32(at + 12)
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| len.checked_add(16))
            .and_then(|n| at.checked_add(n))
            .filter(|&end| end <= c.out_data.len());
        let Some(end) = whole else {
            return Err(C417Refusal::PartialOutput {
                index,
                conn_id: c.conn_id,
                out_resp_len: c.out_resp_len,
                offset: at,
            });
        };
        at = end;
    }
    Ok(())
}

fn lossy(token: &[u8]) -> String {
    String::from_utf8_lossy(token).into_owned()
}

/// The parent of an absolute path (`None` for `/`, special `@` nodes and
/// relative paths).
fn parent_of(path: &str) -> Option<&str> {
    if path == "/" || path.starts_with('@') {
        return None;
    }
    let cut = path.rfind('/')?;
    Some(if cut == 0 { "/" } else { &path[..cut] })
}

/// `nodes` (parents before children, as [`check_tree`] let them through)
/// reordered depth first: each node followed by its subtree, siblings in
/// the order they came. C 4.17 adds each restored node to its parent's
/// children list by rewriting the parent's record in its TDB database;
/// level-by-level order (what our writer exports) rewrites every parent
/// across the whole restore and fragments TDB's free list, so C's restore
/// slows down faster than the store grows (8× C's own update at 120,000
/// nodes, BENCHMARKS.md). Depth first is the order C's own dump uses.
fn depth_first(nodes: Vec<NodeData>) -> Vec<NodeData> {
    let order = {
        let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            match parent_of(&n.path) {
                Some(parent) => children.entry(parent).or_default().push(i),
                None => roots.push(i),
            }
        }
        let mut order = Vec::with_capacity(nodes.len());
        let mut stack: Vec<usize> = roots.into_iter().rev().collect();
        while let Some(i) = stack.pop() {
            order.push(i);
            if let Some(kids) = children.get(nodes[i].path.as_str()) {
                stack.extend(kids.iter().rev());
            }
        }
        order
    };
    let mut slots: Vec<Option<NodeData>> = nodes.into_iter().map(Some).collect();
    let mut out: Vec<NodeData> = order.into_iter().filter_map(|i| slots[i].take()).collect();
    // None is left (check_tree refused orphans); were one left, it would
    // still go over, after the rest, and never be dropped.
    out.extend(slots.into_iter().flatten());
    out
}

/// Whether `path` needs a parent (it is not `/` nor a special node).
fn needs_parent(path: &str) -> bool {
    path != "/" && !path.starts_with('@')
}

/// Checks a node's place in the tree: each path once, its parent before
/// it. `paths` maps the paths seen so far to their records.
fn check_tree(
    paths: &mut BTreeMap<String, usize>,
    index: usize,
    path: &str,
) -> Result<(), C417Refusal> {
    if let Some(&first) = paths.get(path) {
        return Err(C417Refusal::DuplicatePath {
            index,
            path: path.to_string(),
            first,
        });
    }
    if needs_parent(path) {
        let parent = parent_of(path).unwrap_or_default();
        if !paths.contains_key(parent) {
            return Err(C417Refusal::OrphanNode {
                index,
                path: path.to_string(),
                parent: parent.to_string(),
            });
        }
    }
    paths.insert(path.to_string(), index);
    Ok(())
}

/// Converts a stream as our writer produces it into the form C xenstored
/// 4.17 reads: version 1, little-endian; `GLOBAL_DATA` first; dom0's ring
/// first among the connections (written with event channel 0 if the
/// stream has none), the other rings with every target before the rings
/// naming it, ring records with event channel 0 for domains whose ring was
/// cut off, then the sockets, each connection followed by its watches;
/// then the committed nodes. Our extension fields, `TRANSACTION_DATA`,
/// transaction nodes, `GLOBAL_QUOTA_DATA` and `DOMAIN_DATA` are left out;
/// unlimited `WATCH_DATA_EXTENDED` becomes `WATCH_DATA`.
///
/// Refuses (naming the record, connection, node or domain at fault) what
/// C would get wrong: an open transaction or a per-domain quota (unless
/// `opts` lets them go), a watch with a depth, a target missing or in a
/// cycle, a node whose owner C would not know (never overridable), a node
/// without permissions, before its parent or written twice.
pub fn to_c417(stream: &Stream, opts: &C417Options) -> Result<C417Stream, C417Refusal> {
    let mut global: Option<GlobalData> = None;
    let mut rings: Vec<(usize, &ConnectionData, RingConn)> = Vec::new();
    let mut sockets: Vec<&ConnectionData> = Vec::new();
    let mut used_ids: BTreeSet<u32> = BTreeSet::new();
    let mut ring_of: BTreeMap<DomId, u32> = BTreeMap::new();
    let mut transactions: Vec<StreamTransaction> = Vec::new();
    let mut global_quotas: Vec<Quota> = Vec::new();
    let mut domains: Vec<&super::DomainData> = Vec::new();
    for (index, record) in stream.records.iter().enumerate() {
        match record {
            Record::Global(g) => {
                if global.is_some() {
                    return Err(C417Refusal::SecondGlobal { index });
                }
                global = Some(*g);
            }
            Record::Connection(c) => {
                whole_output(index, c)?;
                used_ids.insert(c.conn_id);
                match c.spec {
                    ConnSpec::Ring(r) => {
                        if let Some(&first_conn_id) = ring_of.get(&r.domid) {
                            return Err(C417Refusal::DuplicateDomain {
                                index,
                                conn_id: c.conn_id,
                                domid: r.domid,
                                first_conn_id,
                            });
                        }
                        ring_of.insert(r.domid, c.conn_id);
                        rings.push((index, c, r));
                    }
                    ConnSpec::Socket(_) => sockets.push(c),
                }
            }
            Record::Transaction(t) => {
                let t = StreamTransaction {
                    conn_id: t.conn_id,
                    tx_id: t.tx_id,
                };
                if !transactions.contains(&t) {
                    transactions.push(t);
                }
            }
            Record::Node(n) if n.conn_id != 0 => {
                let t = StreamTransaction {
                    conn_id: n.conn_id,
                    tx_id: n.tx_id,
                };
                if !transactions.contains(&t) {
                    transactions.push(t);
                }
            }
            Record::GlobalQuota(q) => {
                global_quotas = q.dom_quota.iter().chain(&q.glob_quota).cloned().collect();
            }
            Record::Domain(d) => domains.push(d),
            Record::Node(_) | Record::Watch(_) | Record::WatchExtended(_) => {}
        }
    }
    let global = global.ok_or(C417Refusal::MissingGlobal)?;
    if let Some(&t) = transactions.first() {
        if !opts.drop_transactions {
            return Err(C417Refusal::OpenTransaction {
                conn_id: t.conn_id,
                tx_id: t.tx_id,
            });
        }
    }

    // Per-domain quotas and features.
    let mut dropped_domain_quotas = Vec::new();
    let mut domain_features = Vec::new();
    for d in &domains {
        if d.features != 0 {
            domain_features.push((d.domain_id, d.features));
        }
        for q in &d.quota {
            let global = global_quotas
                .iter()
                .find(|g| g.name == q.name)
                .map(|g| g.value);
            if global == Some(q.value) {
                continue;
            }
            if !opts.drop_domain_quotas {
                return Err(C417Refusal::DomainQuota {
                    domid: d.domain_id,
                    name: q.name.clone(),
                    value: q.value,
                    global,
                });
            }
            dropped_domain_quotas.push(DroppedQuota {
                domid: d.domain_id,
                quota: q.clone(),
            });
        }
    }

    // Fresh connection ids for the rings we write.
    let mut next_id = 1u32;
    let mut fresh_id = |used: &mut BTreeSet<u32>| {
        while used.contains(&next_id) {
            next_id = next_id.wrapping_add(1).max(1);
        }
        used.insert(next_id);
        next_id
    };
    let inert = |conn_id: u32, domid: DomId| ConnectionData {
        conn_id,
        spec: ConnSpec::Ring(RingConn {
            domid,
            tdomid: DOMID_INVALID,
            evtchn: 0,
        }),
        in_data: Vec::new(),
        out_resp_len: 0,
        out_data: Vec::new(),
        unique_id: None,
        ring: None,
    };
    let plain = |c: &ConnectionData| ConnectionData {
        unique_id: None,
        ring: None,
        ..c.clone()
    };

    // Connections in C's order: dom0's ring, inert rings, the other rings
    // targets first, then the sockets.
    let mut conns: Vec<ConnectionData> = Vec::new();
    let synthesized_dom0 = match rings.iter().find(|(_, _, r)| r.domid == 0) {
        Some((_, c, r)) => {
            if r.tdomid != DOMID_INVALID {
                return Err(C417Refusal::Dom0Target {
                    conn_id: c.conn_id,
                    tdomid: r.tdomid,
                });
            }
            conns.push(plain(c));
            None
        }
        None => {
            let conn_id = fresh_id(&mut used_ids);
            conns.push(inert(conn_id, 0));
            Some(InertRing { conn_id, domid: 0 })
        }
    };
    let mut known: BTreeSet<DomId> = BTreeSet::from([0]);
    let mut dead_rings = Vec::new();
    for d in &domains {
        if d.domain_id != 0 && !ring_of.contains_key(&d.domain_id) && known.insert(d.domain_id) {
            let conn_id = fresh_id(&mut used_ids);
            conns.push(inert(conn_id, d.domain_id));
            dead_rings.push(InertRing {
                conn_id,
                domid: d.domain_id,
            });
        }
    }
    let mut left: Vec<(&ConnectionData, RingConn)> = rings
        .iter()
        .filter(|(_, _, r)| r.domid != 0)
        .map(|&(_, c, r)| (c, r))
        .collect();
    // Every target must be a domain with a ring record.
    for (c, r) in &left {
        if r.tdomid != DOMID_INVALID
            && !ring_of.contains_key(&r.tdomid)
            && !known.contains(&r.tdomid)
        {
            return Err(C417Refusal::MissingTarget {
                conn_id: c.conn_id,
                domid: r.domid,
                tdomid: r.tdomid,
            });
        }
    }
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|(_, r)| r.tdomid == DOMID_INVALID || known.contains(&r.tdomid));
        let Some(pos) = ready else {
            return Err(C417Refusal::TargetCycle {
                conns: left
                    .iter()
                    .map(|(c, r)| (c.conn_id, r.domid, r.tdomid))
                    .collect(),
            });
        };
        let (c, r) = left.remove(pos);
        known.insert(r.domid);
        conns.push(plain(c));
    }
    conns.extend(sockets.iter().map(|c| plain(c)));

    // Watches, each after its connection.
    let conn_ids: BTreeSet<u32> = conns.iter().map(|c| c.conn_id).collect();
    let mut watches: BTreeMap<u32, Vec<WatchData>> = BTreeMap::new();
    for (index, record) in stream.records.iter().enumerate() {
        let (conn_id, wpath, token) = match record {
            Record::Watch(w) => (w.conn_id, &w.wpath, &w.token),
            Record::WatchExtended(w) => {
                if w.depth != DEPTH_UNLIMITED {
                    return Err(C417Refusal::DepthWatch {
                        index,
                        conn_id: w.conn_id,
                        path: w.wpath.clone(),
                        token: lossy(&w.token),
                        depth: w.depth,
                    });
                }
                (w.conn_id, &w.wpath, &w.token)
            }
            _ => continue,
        };
        if !conn_ids.contains(&conn_id) {
            return Err(C417Refusal::WatchBeforeConnection {
                index,
                conn_id,
                path: wpath.clone(),
                token: lossy(token),
            });
        }
        watches.entry(conn_id).or_default().push(WatchData {
            conn_id,
            wpath: wpath.clone(),
            token: token.clone(),
        });
    }

    // Committed nodes.
    let mut nodes = Vec::new();
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for (index, record) in stream.records.iter().enumerate() {
        let Record::Node(n) = record else {
            continue;
        };
        if n.conn_id != 0 {
            continue; // a transaction's: dropped above (or refused)
        }
        let Some(owner) = n.perms.first().map(|p| p.perm.domid) else {
            return Err(C417Refusal::NoPermissions {
                index,
                path: n.path.clone(),
            });
        };
        if !known.contains(&owner) {
            return Err(C417Refusal::UnknownOwner {
                index,
                path: n.path.clone(),
                owner,
            });
        }
        check_tree(&mut paths, index, &n.path)?;
        nodes.push(NodeData {
            conn_id: 0,
            tx_id: 0,
            access: Access::NONE,
            ..n.clone()
        });
    }

    let nodes = depth_first(nodes);
    let mut records = Vec::with_capacity(1 + conns.len() + nodes.len());
    records.push(Record::Global(global));
    for c in conns {
        let id = c.conn_id;
        records.push(Record::Connection(c));
        if let Some(ws) = watches.remove(&id) {
            records.extend(ws.into_iter().map(Record::Watch));
        }
    }
    records.extend(nodes.into_iter().map(Record::Node));
    Ok(C417Stream {
        stream: Stream {
            header: Header {
                version: Version::V1,
                endian: Endian::Little,
            },
            records,
        },
        global_quotas,
        dropped_transactions: if opts.drop_transactions {
            transactions
        } else {
            Vec::new()
        },
        dropped_domain_quotas,
        synthesized_dom0,
        dead_rings,
        domain_features,
    })
}

/// Little-endian reads from a record body, `None` past its end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let b = self.0.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b = self.0.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string of `len` octets (its NUL included) at `at`: `None` past
    /// the end, `Some(None)` if not NUL-terminated.
    fn cstr(&self, at: usize, len: u16) -> Option<Option<&[u8]>> {
        let b = self.0.get(at..at.checked_add(usize::from(len))?)?;
        Some(match b.split_last() {
            Some((0, text)) => Some(text),
            _ => None,
        })
    }
}

/// One record as C 4.17 frames it.
struct Frame<'a> {
    index: usize,
    record_type: RecordType,
    len: u32,
    body: Fields<'a>,
}

impl Frame<'_> {
    /// Checks the length against `used` octets of fields: padded to 8
    /// exactly (`trailing_ok`: or longer, for `CONNECTION_DATA`, whose
    /// trailing octets C ignores).
    fn lengths(&self, used: u64, trailing_ok: bool) -> Result<(), C417Refusal> {
        let padded = used.div_ceil(8) * 8;
        let len = u64::from(self.len);
        if len < padded || (len > padded && !trailing_ok) {
            return Err(C417Refusal::LengthMismatch {
                index: self.index,
                record_type: self.record_type,
                len: self.len,
                used,
                padded,
            });
        }
        Ok(())
    }

    /// The fields' length check when a fixed part is missing.
    fn short(&self, used: u64) -> C417Refusal {
        C417Refusal::LengthMismatch {
            index: self.index,
            record_type: self.record_type,
            len: self.len,
            used,
            padded: used.div_ceil(8) * 8,
        }
    }

    fn terminated<'s>(
        &self,
        s: Option<&'s [u8]>,
        field: &'static str,
    ) -> Result<&'s [u8], C417Refusal> {
        s.ok_or(C417Refusal::Unterminated {
            index: self.index,
            record_type: self.record_type,
            field,
        })
    }

    /// The framing rules of one record: its type, its length against its
    /// own length fields, its strings.
    fn check(&self) -> Result<(), C417Refusal> {
        let b = &self.body;
        match self.record_type {
            RecordType::GLOBAL_DATA => self.lengths(8, false),
            RecordType::CONNECTION_DATA => {
                let (Some(in_len), Some(out_len)) = (b.u16(16), b.u32(20)) else {
                    return Err(self.short(24));
                };
                self.lengths(24 + u64::from(in_len) + u64::from(out_len), true)
            }
            RecordType::WATCH_DATA => {
                let (Some(wpath_len), Some(token_len)) = (b.u16(4), b.u16(6)) else {
                    return Err(self.short(8));
                };
                let used = 8 + u64::from(wpath_len) + u64::from(token_len);
                self.lengths(used, false)?;
                let wpath = b.cstr(8, wpath_len).ok_or_else(|| self.short(used))?;
                self.terminated(wpath, "wpath")?;
                let token = b
                    .cstr(8 + usize::from(wpath_len), token_len)
                    .ok_or_else(|| self.short(used))?;
                self.terminated(token, "token").map(|_| ())
            }
            RecordType::NODE_DATA => {
                let (Some(path_len), Some(value_len), Some(perm_n)) =
                    (b.u16(8), b.u16(10), b.u16(14))
                else {
                    return Err(self.short(16));
                };
                let perms = 4 * u64::from(perm_n);
                let used = 16 + perms + u64::from(path_len) + u64::from(value_len);
                self.lengths(used, false)?;
                let at = 16 + 4 * usize::from(perm_n);
                let path = b.cstr(at, path_len).ok_or_else(|| self.short(used))?;
                self.terminated(path, "path").map(|_| ())
            }
            RecordType::TRANSACTION_DATA => Err(C417Refusal::TransactionRecord {
                index: self.index,
                conn_id: b.u32(0).unwrap_or_default(),
                tx_id: b.u32(4).unwrap_or_default(),
            }),
            RecordType::WATCH_DATA_EXTENDED => {
                let conn_id = b.u32(0).unwrap_or_default();
                let wpath_len = b.u16(4).unwrap_or_default();
                let token_len = b.u16(6).unwrap_or_default();
                let depth = b.u16(8).unwrap_or_default();
                let text = |s: Option<Option<&[u8]>>| lossy(s.flatten().unwrap_or_default());
                Err(C417Refusal::ExtendedWatchRecord {
                    index: self.index,
                    conn_id,
                    path: text(b.cstr(12, wpath_len)),
                    token: text(b.cstr(12 + usize::from(wpath_len), token_len)),
                    depth,
                })
            }
            RecordType::GLOBAL_QUOTA_DATA | RecordType::DOMAIN_DATA => {
                Err(C417Refusal::QuotaRecord {
                    index: self.index,
                    record_type: self.record_type,
                })
            }
            _ => Err(C417Refusal::UnknownRecordType {
                index: self.index,
                record_type: self.record_type,
            }),
        }
    }
}

/// The header and record framing, as C 4.17 walks it.
fn check_framing(bytes: &[u8]) -> Result<(), C417Refusal> {
    let (Some(ident), Some(version), Some(flags)) =
        (bytes.get(0..8), bytes.get(8..12), bytes.get(12..16))
    else {
        return Err(C417Refusal::HeaderTruncated { have: bytes.len() });
    };
    if ident != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(ident);
        return Err(C417Refusal::BadMagic { found });
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let version = be(version);
    if version != 1 {
        return Err(C417Refusal::Version { version });
    }
    let flags = be(flags);
    if flags != 0 {
        return Err(C417Refusal::Flags { flags });
    }
    let mut rest = bytes.get(16..).unwrap_or_default();
    let mut index = 0usize;
    loop {
        if rest.is_empty() {
            return Err(C417Refusal::MissingEnd { records: index });
        }
        let head = Fields(rest);
        let (Some(record_type), Some(len)) = (head.u32(0), head.u32(4)) else {
            return Err(C417Refusal::RecordHeaderTruncated {
                index,
                have: rest.len(),
            });
        };
        let record_type = RecordType(record_type);
        let after = rest.get(8..).unwrap_or_default();
        if record_type == RecordType::END {
            if len != 0 {
                return Err(C417Refusal::EndNotEmpty { index, len });
            }
            if !after.is_empty() {
                return Err(C417Refusal::TrailingBytes {
                    index,
                    bytes: after.len(),
                });
            }
            return Ok(());
        }
        // GLOBAL_DATA first and once (our reader refuses a second one too,
        // but without naming the rule).
        if index == 0 && record_type != RecordType::GLOBAL_DATA {
            return Err(C417Refusal::GlobalNotFirst { index, record_type });
        }
        if index != 0 && record_type == RecordType::GLOBAL_DATA {
            return Err(C417Refusal::SecondGlobal { index });
        }
        if len % 8 != 0 {
            return Err(C417Refusal::LengthNotPadded {
                index,
                record_type,
                len,
            });
        }
        let Some(body) = usize::try_from(len).ok().and_then(|n| after.get(..n)) else {
            return Err(C417Refusal::RecordTruncated {
                index,
                record_type,
                len,
                have: after.len(),
            });
        };
        Frame {
            index,
            record_type,
            len,
            body: Fields(body),
        }
        .check()?;
        rest = after.get(body.len()..).unwrap_or_default();
        index += 1;
    }
}

/// Checks `bytes` — exactly what would be handed over — against C
/// xenstored 4.17's acceptance rules (see the module documentation), one
/// check per rule; the refusal names the record and what it names. The
/// framing is walked here as C walks it, then the records are decoded by
/// [`parse()`](super::parse) (stricter than C on what it reads) and
/// checked in stream order, as C applies them.
pub fn check_c417(bytes: &[u8]) -> Result<C417Summary, C417Refusal> {
    check_framing(bytes)?;
    let stream = super::parse(bytes).map_err(C417Refusal::Unreadable)?;
    let mut summary = C417Summary::default();
    let mut dom0 = false;
    let mut rings: BTreeMap<DomId, u32> = BTreeMap::new();
    let mut conns: BTreeSet<u32> = BTreeSet::new();
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for (index, record) in stream.records.iter().enumerate() {
        match record {
            // First and once: checked with the framing.
            Record::Global(_) => {}
            Record::Connection(c) => match c.spec {
                ConnSpec::Ring(r) => {
                    if !dom0 && r.domid != 0 {
                        return Err(C417Refusal::RingBeforeDom0 {
                            index,
                            conn_id: c.conn_id,
                            domid: r.domid,
                        });
                    }
                    dom0 = true;
                    if let Some(&first_conn_id) = rings.get(&r.domid) {
                        return Err(C417Refusal::DuplicateDomain {
                            index,
                            conn_id: c.conn_id,
                            domid: r.domid,
                            first_conn_id,
                        });
                    }
                    if r.tdomid != DOMID_INVALID && !rings.contains_key(&r.tdomid) {
                        return Err(C417Refusal::TargetNotBefore {
                            index,
                            conn_id: c.conn_id,
                            domid: r.domid,
                            tdomid: r.tdomid,
                        });
                    }
                    whole_output(index, c)?;
                    rings.insert(r.domid, c.conn_id);
                    conns.insert(c.conn_id);
                    summary.rings += 1;
                }
                ConnSpec::Socket(_) => {
                    if !dom0 {
                        return Err(C417Refusal::SocketBeforeDom0 {
                            index,
                            conn_id: c.conn_id,
                        });
                    }
                    whole_output(index, c)?;
                    conns.insert(c.conn_id);
                    summary.sockets += 1;
                }
            },
            Record::Watch(w) => {
                if !conns.contains(&w.conn_id) {
                    return Err(C417Refusal::WatchBeforeConnection {
                        index,
                        conn_id: w.conn_id,
                        path: w.wpath.clone(),
                        token: lossy(&w.token),
                    });
                }
                summary.watches += 1;
            }
            Record::Node(n) => {
                if !dom0 {
                    return Err(C417Refusal::NodeBeforeDom0 {
                        index,
                        path: n.path.clone(),
                    });
                }
                if n.conn_id != 0 || n.tx_id != 0 {
                    return Err(C417Refusal::TransactionNode {
                        index,
                        path: n.path.clone(),
                        conn_id: n.conn_id,
                        tx_id: n.tx_id,
                    });
                }
                let Some(owner) = n.perms.first().map(|p| p.perm.domid) else {
                    return Err(C417Refusal::NoPermissions {
                        index,
                        path: n.path.clone(),
                    });
                };
                if owner != 0 && !rings.contains_key(&owner) {
                    return Err(C417Refusal::UnknownOwner {
                        index,
                        path: n.path.clone(),
                        owner,
                    });
                }
                check_tree(&mut paths, index, &n.path)?;
                for p in n.perms.iter().skip(1) {
                    let domid = p.perm.domid;
                    if domid != 0 && !rings.contains_key(&domid) {
                        summary.dropped_perms += 1;
                        if summary.dropped_perm_examples.len() < DROPPED_PERM_EXAMPLES {
                            summary.dropped_perm_examples.push((n.path.clone(), domid));
                        }
                    }
                }
                summary.nodes += 1;
            }
            // The framing check refused these types already.
            Record::WatchExtended(_)
            | Record::Transaction(_)
            | Record::GlobalQuota(_)
            | Record::Domain(_) => {
                return Err(C417Refusal::UnknownRecordType {
                    index,
                    record_type: record.record_type(),
                })
            }
        }
    }
    if stream.records.is_empty() {
        return Err(C417Refusal::MissingGlobal);
    }
    if !dom0 {
        return Err(C417Refusal::NoDom0Ring);
    }
    Ok(summary)
}

#[cfg(test)]
#[path = "c417_tests.rs"]
mod tests;
