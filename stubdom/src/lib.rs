//! A xenstore stub domain: xenstored-lite's engine serving dom0's and the
//! guests' rings from a Xen PV kernel of its own.
//!
//! The library is `no_std` + `alloc` (std only for its own tests); the
//! kernel (`src/main.rs`) is built with `cargo build --release -p
//! xenstored-stubdom`.

#![cfg_attr(not(test), no_std)]

extern crate alloc;
