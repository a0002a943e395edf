//! The seed of a Rust xenstore stub domain: the engine built without std,
//! in a freestanding binary with no C runtime and no libc.
//!
//! Built for the host (x86_64 Linux), it stands in for what a stub domain
//! does with a guest's ring: `_start` makes an engine, writes
//! `/stubdom/hello` = `world` as dom0's tools would, then takes a READ of
//! that node as wire bytes, decodes it, hands it to the engine and writes
//! the reply's wire bytes to fd 1 with a raw `write` system call, then
//! exits with a raw `exit_group`. Everything else a libc would give comes
//! from here: the memory functions the compiler calls, a bump allocator
//! over a static arena, and the panic handler. `scripts/stubdom.sh` builds
//! it, runs it and checks the bytes.

#![cfg_attr(not(feature = "hosted"), no_std)]
#![cfg_attr(not(feature = "hosted"), no_main)]

// A workspace-wide build gives the dependencies std (see Cargo.toml): the
// binary is then this placeholder, not the freestanding program.
#[cfg(feature = "hosted")]
fn main() {
    eprintln!(
        "xenstored-stubdom: this copy was built with the workspace's std features; \
         build the real one alone: cargo build --release -p xenstored-stubdom"
    );
    std::process::exit(2);
}

#[cfg(not(feature = "hosted"))]
mod freestanding;
