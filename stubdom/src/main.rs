//! The xenstore stub domain's kernel: an x86_64 Xen PV kernel (no Mini-OS,
//! no libc) that boots from `start_info`, sets up its console, memory,
//! time and event upcall (`src/pv/`), and serves dom0's xenstore ring.
//!
//! Built alone (`cargo build --release -p xenstored-stubdom`), this is the
//! kernel ELF `target/release/xenstored-stubdom`, linked by `build.rs` with
//! `stubdom/pv.ld`. In a workspace-wide build (`hosted`, see Cargo.toml) it
//! is a placeholder that says so.

#![cfg_attr(not(feature = "hosted"), no_std)]
#![cfg_attr(not(feature = "hosted"), no_main)]

// A workspace-wide build gives the dependencies std (see Cargo.toml): the
// binary is then this placeholder, not the kernel.
#[cfg(feature = "hosted")]
fn main() {
    eprintln!(
        "xenstored-stubdom: this copy was built with the workspace's std features; \
         build the real one alone: cargo build --release -p xenstored-stubdom"
    );
    std::process::exit(2);
}

#[cfg(not(feature = "hosted"))]
extern crate alloc;

#[cfg(not(feature = "hosted"))]
mod pv;
