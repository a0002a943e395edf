//! `xenstored-lite`: a xenstore daemon.
//!
//! * [`engine`]: the deterministic state machine that holds the store,
//!   permissions, watches, transactions, quotas and domains, with no I/O.
//! * [`shell`]: the I/O shell — the poll loop, Unix-socket and ring
//!   connections, the platform backends (Linux devices or mock-xen).
//! * [`replay`]: the recording format and replay (`--replay-record`,
//!   `--replay`).
//! * [`cli`]: the command line.

extern crate alloc;

pub mod cli;
pub mod engine;
pub mod migration;
pub mod replay;
pub mod shell;
