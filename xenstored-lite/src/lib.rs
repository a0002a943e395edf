//! `xenstored-lite`: a xenstore daemon.
//!
//! * [`engine`]: the deterministic state machine that holds the store,
//!   permissions, watches, transactions, quotas and domains, with no I/O.
//! * [`migration`]: the live-update stream (reader and writer).
//! * [`shell`]: the I/O shell — the poll loop, Unix-socket and ring
//!   connections, the platform backends (Linux devices or mock-xen).
//! * [`replay`]: the recording format and replay (`--replay-record`,
//!   `--replay`).
//! * [`cli`]: the command line.
//!
//! Without the default `std` feature the crate is `no_std` + `alloc` and
//! holds only the engine and the migration stream (for a xenstore stub
//! domain); the shell, replay and the command line need `std`.

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

// Unit tests use std (the test harness needs it) also when the library is
// built without it.
#[cfg(all(test, not(feature = "std")))]
#[macro_use]
extern crate std;

#[cfg(feature = "std")]
pub mod cli;
pub mod engine;
pub mod migration;
#[cfg(feature = "std")]
pub mod replay;
#[cfg(feature = "std")]
pub mod shell;
