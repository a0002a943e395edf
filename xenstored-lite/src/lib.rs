//! `xenstored-lite`: a xenstore daemon.
//!
//! * [`engine`]: the deterministic state machine that holds the store,
//!   permissions, watches, transactions, quotas and domains, with no I/O.
//!
//! The I/O shell, the migration stream, record/replay and the command line
//! arrive with the later steps of the roadmap (see the README).

pub mod engine;
