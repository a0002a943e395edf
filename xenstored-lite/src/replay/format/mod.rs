//! The recording file: a header, then events, each a kind octet, a 32-bit
//! little-endian payload length and the payload. Documented in
//! `docs/recording-format.md`; the reader is strict (every field checked,
//! nothing left over) and says where a truncated file (a daemon killed
//! mid-write) stops.
//!
//! Split as the migration stream is: the events ([`event`]), writing them
//! ([`mod@write`]: framing and the [`Recorder`]), reading them ([`read`]) and
//! why a file cannot be read ([`error`]).

pub mod error;
pub mod event;
pub mod read;
pub mod write;

pub use error::FormatError;
pub use event::{Answer, BoundaryEvent, ConnectKind, Outcome};
pub use read::{Next, Reader};
pub use write::{encode, header, Recorder};

/// The file's first eight octets.
pub const MAGIC: [u8; 8] = *b"XSRECORD";

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// Octets before the first event.
pub const HEADER_LEN: usize = 16;

/// Largest payload an event may have (a migration stream of a large host
/// fits; anything larger is a corrupt length).
pub const PAYLOAD_MAX: u32 = 1 << 30;

/// The kind octet of each event (`docs/recording-format.md`).
mod kind {
    pub const START: u8 = 1;
    pub const RESTORE: u8 = 2;
    pub const TIME: u8 = 3;
    pub const CONNECT: u8 = 4;
    pub const INPUT: u8 = 5;
    pub const OUTPUT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const VIOLATION: u8 = 8;
    pub const RESET: u8 = 9;
    pub const INTRODUCED: u8 = 10;
    pub const DOMAIN_STATE: u8 = 11;
    pub const ANSWER: u8 = 12;
    pub const HAND_OVER: u8 = 13;
    pub const HOLD: u8 = 14;
    pub const RING_INDICES: u8 = 15;
    pub const FATAL: u8 = 16;
    pub const COUNTERS: u8 = 17;
    pub const STORE_IMAGE: u8 = 18;
}

#[cfg(test)]
mod tests;
