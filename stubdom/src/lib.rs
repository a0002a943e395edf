//! A xenstore stub domain: xenstored-lite's engine serving dom0's and the
//! guests' rings from a Xen PV kernel of its own.
//!
//! The library is `no_std` + `alloc` (std only for its own tests); the
//! kernel (`src/main.rs`) is built with `cargo build --release -p
//! xenstored-stubdom`. What it holds is the part that does not depend on
//! the kernel, generic over the `evtchn` and `gnttab` traits so that the
//! very loop the kernel runs on hypercalls runs in host tests on mock-xen:
//!
//! * [`cmdline`]: `start_info.cmd_line` (`--event N` from Xen's
//!   `init-xenstore-domain`, the engine's quotas and limits);
//! * [`server`]: the serving loop ([`Server::new`], [`Server::turn`],
//!   [`Server::run`]);
//! * [`ring`]: one ring's framing and buffers;
//! * [`memory`]: the rule that answers ENOMEM before the heap runs out.
//!
//! The kernel gives the server what it needs besides Xen through [`Host`].

#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::string::String;

pub mod cmdline;
pub mod memory;
pub mod ring;
pub mod server;

pub use cmdline::{CmdlineError, StubConfig};
pub use server::{Server, StartError};

/// What the server needs from the kernel besides Xen.
pub trait Host {
    /// Milliseconds on a monotonic clock (the engine's time).
    fn now_ms(&self) -> u64;
    /// One line for the console (no trailing newline).
    fn log(&self, line: &str);
    /// Bytes the heap can still give (free + what it can still grow by).
    fn free_memory(&self) -> usize;
    /// The heap's own figures, one line, added to `memreport`'s report
    /// (the engine's report counts the store, not the allocator).
    fn heap_report(&self) -> Option<String> {
        None
    }
}
