//! What can go wrong reading or writing a stream.

use alloc::string::String;

use super::RecordType;

/// Why a byte string is not a valid migration stream.
///
/// Record indices count from 0 for the first record after the header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    /// Fewer than the 16 header octets.
    #[error("stream header truncated: need 16 octets, have {have}")]
    HeaderTruncated {
        /// Octets present.
        have: usize,
    },
    /// The ident is not `xenstore`.
    #[error("bad stream ident {found:02x?}, expected \"xenstore\"")]
    BadMagic {
        /// The eight octets found.
        found: [u8; 8],
    },
    /// A version other than 1 and 2.
    #[error("unsupported stream version {version}")]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
    },
    /// Reserved header flags (bits 1–31) set.
    #[error("reserved header flags set: {flags:#010x}")]
    BadHeaderFlags {
        /// The flags in the header.
        flags: u32,
    },
    /// The input ends inside a record's 8-octet type and length.
    #[error("record {index}: header truncated: need 8 octets, have {have}")]
    RecordHeaderTruncated {
        /// The record.
        index: usize,
        /// Octets left in the input.
        have: usize,
    },
    /// A record's length is not a multiple of 8 (C always pads).
    #[error("record {index} ({record_type}): length {len} is not a multiple of 8")]
    LengthNotAligned {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// Its length field.
        len: u32,
    },
    /// A record's length runs past the end of the input.
    #[error("record {index} ({record_type}) truncated: body needs {need} octets, have {have}")]
    RecordTruncated {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// Octets the length field announces.
        need: u64,
        /// Octets left in the input.
        have: usize,
    },
    /// A record type this version does not define.
    #[error("record {index}: unknown record type ({record_type})")]
    UnknownRecordType {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
    },
    /// A record type that the stream's version does not allow.
    #[error("record {index} ({record_type}) not valid in a version {version} stream")]
    RecordNotInVersion {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The stream version.
        version: u32,
    },
    /// A record body too short for the field being read.
    #[error(
        "record {index} ({record_type}): body too short for `{field}`: need {need} octets, have {have}"
    )]
    BodyTooShort {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The field (as the spec names it).
        field: &'static str,
        /// Octets of body needed up to the end of the field.
        need: u64,
        /// The body length.
        have: usize,
    },
    /// A record body longer than its fields plus at most 7 padding octets.
    #[error("record {index} ({record_type}): length {len} exceeds its {used} octets of fields plus padding")]
    ExcessLength {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The length field.
        len: usize,
        /// Octets the fields use.
        used: usize,
    },
    /// A field with a value the spec does not allow.
    #[error("record {index} ({record_type}): bad `{field}`: {reason}")]
    BadField {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The field (as the spec names it).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The input ended without an `END` record.
    #[error("stream ends without an END record")]
    MissingEnd,
    /// Bytes follow the `END` record.
    #[error("{bytes} octets after the END record (record {index})")]
    TrailingData {
        /// The index of the `END` record.
        index: usize,
        /// Octets after it.
        bytes: usize,
    },
}

/// Why a [`Stream`](super::Stream) value cannot be written as a valid
/// stream.
///
/// Record indices count from 0 for the first record of
/// [`Stream::records`](super::Stream::records).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// A length does not fit the field that carries it.
    #[error("record {index} ({record_type}): `{field}` is {len} long, the format allows {max}")]
    TooLong {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The field (as the spec names it).
        field: &'static str,
        /// The length to write.
        len: usize,
        /// The largest the format can carry.
        max: u64,
    },
    /// A record or field that the stream's version does not allow.
    #[error("record {index} ({record_type}): `{field}` not valid in a version {version} stream")]
    NotInVersion {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The field, or `record` for the record itself.
        field: &'static str,
        /// The stream version.
        version: u32,
    },
    /// A value the format cannot carry or a reader would reject.
    #[error("record {index} ({record_type}): bad `{field}`: {reason}")]
    BadField {
        /// The record.
        index: usize,
        /// Its type.
        record_type: RecordType,
        /// The field (as the spec names it).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
