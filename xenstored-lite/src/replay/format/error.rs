//! Why a recording cannot be read.

use super::VERSION;

/// Why a recording cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Too short for the header, or not a recording.
    #[error("not a xenstored-lite recording (bad or short header)")]
    NotARecording,
    /// Written by another format version.
    #[error("recording format version {0} (this build reads version {VERSION})")]
    Version(u32),
    /// An event this version does not define.
    #[error("event {index} at offset {offset}: unknown event kind {kind}")]
    UnknownKind {
        /// Event number (from 0).
        index: u64,
        /// Its offset in the file.
        offset: u64,
        /// The kind octet.
        kind: u8,
    },
    /// A payload whose fields do not add up.
    #[error("event {index} at offset {offset}: bad {what}")]
    BadPayload {
        /// Event number.
        index: u64,
        /// Its offset.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A length beyond [`PAYLOAD_MAX`](super::PAYLOAD_MAX).
    #[error("event {index} at offset {offset}: payload length {len} is implausible")]
    BadLength {
        /// Event number.
        index: u64,
        /// Its offset.
        offset: u64,
        /// The length field.
        len: u32,
    },
}
