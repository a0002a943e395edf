//! The xenstore migration stream, as plain data.
//!
//! This is the image format of Xen's `docs/designs/xenstore-migration.md`
//! (versions 1 and 2), read and written byte for byte as C xenstored does, so
//! that a host can live-update from C xenstored to xenstored-lite and back.
//! Turning the records into live daemon state is not this module's job: it
//! only converts between bytes and the [`Stream`] value.
//!
//! * [`parse()`]: untrusted bytes → [`Stream`], strictly validated; every
//!   failure is a [`MigrationError`] naming the record (index and type) and
//!   the field at fault. It never panics and never allocates more than the
//!   input justifies.
//! * [`write()`]: [`Stream`] → bytes, exactly as C writes them.
//!
//! # Encoding facts (from the spec, confirmed on a real C 4.17 stream)
//!
//! * A 16-octet header: the ident `xenstore`, a 32-bit version and 32-bit
//!   flags, all big-endian. Flags bit 0 gives the byte order of everything
//!   after the header (0 little, 1 big); bits 1–31 must be zero.
//! * Then records: a 32-bit type, a 32-bit length, the body. Every body is
//!   padded with zero octets to a multiple of 8 and — as C writes it — the
//!   length field *includes* that padding. The last record is `END`, with
//!   an empty body; this module keeps it implicit (it is not in
//!   [`Stream::records`]).
//! * Strings that carry a `-len` field (paths, watch tokens) include their
//!   NUL terminator; node values carry no terminator and may contain NULs.
//!
//! # Our extension: ring mfn and remote port
//!
//! Upstream's `CONNECTION_DATA` for a shared ring carries only the local
//! event-channel port: C xenstored maps the ring through grant-table entry 1
//! and rebinds the port it already holds. xenstored-lite also needs the
//! ring's mfn and the guest's (remote) event-channel port, as given by
//! `INTRODUCE`, so we add them as an optional field announced by a bit of
//! the `fields` bitmap that the spec does not use:
//!
//! * bit `0x8000` of `fields` ([`FIELD_RING_MFN_PORT`]) — the highest bit,
//!   far from where upstream allocates new bits (upstream uses `0x0001`,
//!   [`FIELD_UNIQUE_ID`], for the domain's unique id);
//! * only on shared-ring connections;
//! * placed after `data` and after the `unique-id` field if that is present
//!   (optional fields follow in ascending bit order), starting on an 8-octet
//!   boundary (counted from the start of the record body, which is itself
//!   8-aligned in the stream);
//! * 16 octets, in the stream's byte order:
//!
//! ```text
//!     0       1       2       3       4       5       6       7    octet
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! | mfn                                                           |
//! +-------------------------------+-------------------------------+
//! | remote-port                   | pad (zero)                    |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! The record length covers these octets, so a reader that does not know the
//! bit skips them with the rest of the record. See
//! `docs/migration-extension.md` for the full description.
//!
//! # Strictness
//!
//! [`parse()`] rejects: a wrong ident, versions other than 1 and 2, reserved
//! header flags, record lengths that are not a multiple of 8, records that
//! run past the input, record bodies too short for their fields or longer
//! than their fields plus at most 7 padding octets, unknown record types,
//! `WATCH_DATA_EXTENDED` in a version-1 stream, strings without their NUL
//! terminator or with an embedded NUL, paths that are not UTF-8, unknown
//! permission letters, unknown `access` bits, unknown connection types,
//! unknown `fields` bits, a zero connection id, an `out-resp-len` larger than
//! `out-data-len`, a missing `END` and bytes after it. Padding octets are
//! ignored, as the spec asks.

pub mod c417;
mod error;
mod read;
mod write;

#[cfg(test)]
mod tests;

pub use error::{MigrationError, WriteError};
pub use read::parse;
pub use write::write;

use alloc::string::String;
use alloc::vec::Vec;

use xenring::{DomId, Perm};

/// The header's ident: `xenstore` in ASCII.
pub const MAGIC: [u8; 8] = *b"xenstore";

/// `DOMID_INVALID`: the `tdomid` of a ring connection not subject to
/// `SET_TARGET`.
pub const DOMID_INVALID: DomId = 0x7ff4;

/// `fields` bit (upstream): a 64-bit `unique-id` of the domain follows `data`.
pub const FIELD_UNIQUE_ID: u16 = 0x0001;

/// `fields` bit (our extension): the ring's mfn (64 bits) and remote port
/// (32 bits, then 32 bits of zero padding) follow `data` and `unique-id`.
pub const FIELD_RING_MFN_PORT: u16 = 0x8000;

/// The `fields` bits this module understands.
pub const KNOWN_FIELDS: u16 = FIELD_UNIQUE_ID | FIELD_RING_MFN_PORT;

/// `depth` of a `WATCH_DATA_EXTENDED` record meaning "unlimited".
pub const DEPTH_UNLIMITED: u16 = 0xffff;

/// The version of the specification a stream complies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Version 1: everything without an explicit version dependency.
    V1,
    /// Version 2: adds `WATCH_DATA_EXTENDED` and `DOMAIN_DATA`'s `features`.
    V2,
}

impl Version {
    /// The number in the header.
    pub const fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The version with this header number, if supported.
    pub const fn from_number(n: u32) -> Option<Self> {
        match n {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            _ => None,
        }
    }
}

/// The byte order of the records (header flags bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// Flags bit 0 clear: little-endian records (what x86 C xenstored writes).
    Little,
    /// Flags bit 0 set: big-endian records.
    Big,
}

/// The stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The specification version.
    pub version: Version,
    /// The byte order of the records.
    pub endian: Endian,
}

/// A whole migration stream: the header and every record before `END`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The header.
    pub header: Header,
    /// The records in stream order, without the final `END`.
    pub records: Vec<Record>,
}

impl Stream {
    /// The stream's `GLOBAL_DATA` (the descriptors passed down), if any.
    pub fn global(&self) -> Option<GlobalData> {
        self.records.iter().find_map(|r| match r {
            Record::Global(g) => Some(*g),
            _ => None,
        })
    }

    /// The stream's `NODE_DATA` records, in stream order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeData> {
        self.records.iter().filter_map(|r| match r {
            Record::Node(n) => Some(n),
            _ => None,
        })
    }

    /// Parses a stream; see [`parse()`].
    pub fn parse(input: &[u8]) -> Result<Self, MigrationError> {
        parse(input)
    }

    /// Writes the stream; see [`write()`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        write(self)
    }
}

/// A record type number, as in the record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(pub u32);

impl RecordType {
    /// `END`.
    pub const END: Self = Self(0);
    /// `GLOBAL_DATA`.
    pub const GLOBAL_DATA: Self = Self(1);
    /// `CONNECTION_DATA`.
    pub const CONNECTION_DATA: Self = Self(2);
    /// `WATCH_DATA`.
    pub const WATCH_DATA: Self = Self(3);
    /// `TRANSACTION_DATA`.
    pub const TRANSACTION_DATA: Self = Self(4);
    /// `NODE_DATA`.
    pub const NODE_DATA: Self = Self(5);
    /// `GLOBAL_QUOTA_DATA`.
    pub const GLOBAL_QUOTA_DATA: Self = Self(6);
    /// `DOMAIN_DATA`.
    pub const DOMAIN_DATA: Self = Self(7);
    /// `WATCH_DATA_EXTENDED` (version 2 and up).
    pub const WATCH_DATA_EXTENDED: Self = Self(8);

    /// The spec's name for a known type.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "END",
            1 => "GLOBAL_DATA",
            2 => "CONNECTION_DATA",
            3 => "WATCH_DATA",
            4 => "TRANSACTION_DATA",
            5 => "NODE_DATA",
            6 => "GLOBAL_QUOTA_DATA",
            7 => "DOMAIN_DATA",
            8 => "WATCH_DATA_EXTENDED",
            _ => return None,
        })
    }
}

impl core::fmt::Display for RecordType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "type {:#010x}", self.0),
        }
    }
}

/// One record (other than `END`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `GLOBAL_DATA`.
    Global(GlobalData),
    /// `CONNECTION_DATA`.
    Connection(ConnectionData),
    /// `WATCH_DATA`.
    Watch(WatchData),
    /// `WATCH_DATA_EXTENDED` (version 2 only).
    WatchExtended(WatchDataExtended),
    /// `TRANSACTION_DATA`.
    Transaction(TransactionData),
    /// `NODE_DATA`.
    Node(NodeData),
    /// `GLOBAL_QUOTA_DATA`.
    GlobalQuota(GlobalQuotaData),
    /// `DOMAIN_DATA`.
    Domain(DomainData),
}

impl Record {
    /// The record's type number.
    pub const fn record_type(&self) -> RecordType {
        match self {
            Record::Global(_) => RecordType::GLOBAL_DATA,
            Record::Connection(_) => RecordType::CONNECTION_DATA,
            Record::Watch(_) => RecordType::WATCH_DATA,
            Record::WatchExtended(_) => RecordType::WATCH_DATA_EXTENDED,
            Record::Transaction(_) => RecordType::TRANSACTION_DATA,
            Record::Node(_) => RecordType::NODE_DATA,
            Record::GlobalQuota(_) => RecordType::GLOBAL_QUOTA_DATA,
            Record::Domain(_) => RecordType::DOMAIN_DATA,
        }
    }
}

/// `GLOBAL_DATA`: the daemon-wide file descriptors (live update only).
///
/// The descriptors belong to the process that wrote the stream; -1 means
/// unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlobalData {
    /// `rw-socket-fd`: the listening socket.
    pub rw_socket_fd: i32,
    /// `evtchn-fd`: the event-channel device.
    pub evtchn_fd: i32,
}

/// `CONNECTION_DATA`: one connection and the bytes pending on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionData {
    /// `conn-id`: non-zero, referred to by later records.
    pub conn_id: u32,
    /// `conn-type` and `conn-spec`.
    pub spec: ConnSpec,
    /// The first `in-data-len` octets of `data`: bytes read from the
    /// connection and not yet processed (e.g. a partial request).
    pub in_data: Vec<u8>,
    /// `out-resp-len`: the length of a partly written response at the start
    /// of [`out_data`](Self::out_data).
    pub out_resp_len: u16,
    /// The last `out-data-len` octets of `data`: bytes not yet written to
    /// the connection (whole responses and watch events).
    pub out_data: Vec<u8>,
    /// `unique-id` (`fields` bit [`FIELD_UNIQUE_ID`]): the domain's unique
    /// id, for ring connections in live-update streams.
    pub unique_id: Option<u64>,
    /// Our extension (`fields` bit [`FIELD_RING_MFN_PORT`]): the ring's mfn
    /// and remote port. Only on ring connections.
    pub ring: Option<RingLocation>,
}

impl ConnectionData {
    /// The `fields` bitmap this record is written with.
    pub const fn fields(&self) -> u16 {
        let mut fields = 0;
        if self.unique_id.is_some() {
            fields |= FIELD_UNIQUE_ID;
        }
        if self.ring.is_some() {
            fields |= FIELD_RING_MFN_PORT;
        }
        fields
    }
}

/// `conn-type` with its `conn-spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnSpec {
    /// `conn-type` 0: a shared ring.
    Ring(RingConn),
    /// `conn-type` 1: a Unix socket (live update only).
    Socket(SocketConn),
}

impl ConnSpec {
    /// The `conn-type` number.
    pub const fn conn_type(&self) -> u16 {
        match self {
            ConnSpec::Ring(_) => 0,
            ConnSpec::Socket(_) => 1,
        }
    }
}

/// `conn-spec` of a shared-ring connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingConn {
    /// `domid`: the domain owning the ring page.
    pub domid: DomId,
    /// `tdomid`: the domain `domid` acts for after `SET_TARGET`, or
    /// [`DOMID_INVALID`].
    pub tdomid: DomId,
    /// `evtchn`: the xenstored-side (local) port of the interdomain channel.
    pub evtchn: u32,
}

/// `conn-spec` of a socket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketConn {
    /// `socket-fd`: the connected socket, in the writer's process.
    pub socket_fd: i32,
}

/// Our extension: where the ring is and which guest port it signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingLocation {
    /// The machine frame of the ring page, as given to `INTRODUCE`.
    pub mfn: u64,
    /// The guest-side (remote) event-channel port, as given to `INTRODUCE`.
    pub remote_port: u32,
}

/// `WATCH_DATA`: one registered watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchData {
    /// `conn-id`: the connection that registered it.
    pub conn_id: u32,
    /// `wpath`: the watched path as given to `WATCH` (without NUL).
    pub wpath: String,
    /// `token`: the watch token (without NUL).
    pub token: Vec<u8>,
}

/// `WATCH_DATA_EXTENDED` (version 2 only): a watch with a depth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchDataExtended {
    /// `conn-id`: the connection that registered it.
    pub conn_id: u32,
    /// `wpath`: the watched path as given to `WATCH` (without NUL).
    pub wpath: String,
    /// `token`: the watch token (without NUL).
    pub token: Vec<u8>,
    /// `depth`: directory levels below `wpath` that match;
    /// [`DEPTH_UNLIMITED`] for no limit.
    pub depth: u16,
}

/// `TRANSACTION_DATA`: one open transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionData {
    /// `conn-id`: the connection that started it.
    pub conn_id: u32,
    /// `tx-id`: the id returned by `TRANSACTION_START`.
    pub tx_id: u32,
}

/// `access` of a transaction-local node: a bitwise OR of read and written;
/// empty for a node deleted in the transaction (and ignored for committed
/// nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u16);

impl Access {
    /// No access recorded (a committed node, or one deleted in the
    /// transaction).
    pub const NONE: Self = Self(0);
    /// `0x0001`: read in the transaction.
    pub const READ: Self = Self(0x0001);
    /// `0x0002`: written in the transaction.
    pub const WRITTEN: Self = Self(0x0002);
    /// Read and written.
    pub const READ_WRITTEN: Self = Self(0x0003);

    /// The access with these bits, if all are known.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !0x0003 == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The bits on the wire.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether the node was read.
    pub const fn read(self) -> bool {
        self.0 & 0x0001 != 0
    }

    /// Whether the node was written.
    pub const fn written(self) -> bool {
        self.0 & 0x0002 != 0
    }
}

/// One permission specifier of `NODE_DATA`: `perm`, `flags`, `domid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodePerm {
    /// The letter (`n`, `r`, `w`, `b`) and the domain.
    pub perm: Perm,
    /// The octet after the letter, kept as read (zero as C writes it).
    pub flags: u8,
}

impl NodePerm {
    /// An entry with no flags.
    pub const fn new(perm: Perm) -> Self {
        Self { perm, flags: 0 }
    }
}

/// `NODE_DATA`: one node, committed or local to a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeData {
    /// `conn-id`: 0 for a committed node, else the connection whose
    /// transaction holds this version of the node.
    pub conn_id: u32,
    /// `tx-id`: the transaction (meaningful only when `conn_id` is not 0).
    pub tx_id: u32,
    /// `access`: what the transaction did to the node.
    pub access: Access,
    /// `perm1..N`: the owner first (none for a node deleted in a
    /// transaction).
    pub perms: Vec<NodePerm>,
    /// `path`: the absolute path (without NUL).
    pub path: String,
    /// `value`: the node's value (may be empty or contain NULs).
    pub value: Vec<u8>,
}

/// One named quota value of `GLOBAL_QUOTA_DATA` or `DOMAIN_DATA`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quota {
    /// The name from `quota-names` (without NUL), e.g. `nodes`.
    pub name: String,
    /// The `quota-val`; 0 means unlimited.
    pub value: u32,
}

/// `GLOBAL_QUOTA_DATA`: the daemon's quota settings (live update only).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GlobalQuotaData {
    /// The `n-dom-quota` values that apply per domain by default.
    pub dom_quota: Vec<Quota>,
    /// The `n-glob-quota` values that apply globally only.
    pub glob_quota: Vec<Quota>,
}

/// `DOMAIN_DATA`: per-domain settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DomainData {
    /// `domain-id`.
    pub domain_id: DomId,
    /// `features`: the ring page's feature field (version 2; always 0 in a
    /// version-1 stream, where the field is written as zero and ignored).
    pub features: u32,
    /// The `n-quota` per-domain quota values.
    pub quota: Vec<Quota>,
}
