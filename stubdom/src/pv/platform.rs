//! The kernel as the server and the hypercall backends see it: an
//! implementation of the platform trait of `evtchn::hypercall` and of the
//! server's `Host`.
//!
//! Until part HCALL's `evtchn::hypercall::Hypervisor` and part SERVER's
//! `xenstored_stubdom::Host` are merged, identical copies of those traits
//! are defined here (and `VaWindows` of `gnttab::hypercall`); at the merge
//! these copies go and the impls name the real traits.

use core::ptr::NonNull;

use super::{console, event, hypercall, mm, time};

/// What a hypercall backend needs from the kernel it runs in (a copy of
/// `evtchn::hypercall::Hypervisor`, see the module docs).
///
/// # Safety
/// `hypercall` must issue the real hypercall of this domain; `shared_info`
/// must point to this domain's shared_info page, mapped read-write, for
/// as long as the implementor lives.
pub unsafe trait Hypervisor: Send + Sync {
    /// Issues hypercall number `op` with up to five arguments (unused
    /// ones 0) and returns what Xen returned (negative errno on failure).
    ///
    /// # Safety
    /// The arguments must be what hypercall `op` expects: pointers to
    /// live, correctly laid-out structures.
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64;
    /// This domain's shared_info page (4096 bytes).
    fn shared_info(&self) -> NonNull<u8>;
    /// Xen system time, nanoseconds since boot (vcpu_time_info).
    fn system_time_ns(&self) -> u64;
    /// Sleeps until an event channel of this domain becomes pending or
    /// `deadline_ns` (system time) passes; may return early. Returns at
    /// once if an event is already pending.
    fn block(&self, deadline_ns: Option<u64>);
}

/// What the server needs from the kernel besides Xen (a copy of the
/// server's `Host`, see the module docs).
pub trait Host {
    /// Milliseconds on a monotonic clock (the engine's Time).
    fn now_ms(&self) -> u64;
    /// One line for the console (no trailing newline).
    fn log(&self, line: &str);
    /// Bytes the heap can still give (free + what it can still grow by).
    fn free_memory(&self) -> usize;
}

/// A page-aligned range of virtual addresses whose L1 page tables exist
/// and whose entries are empty, for grant mappings (a copy of
/// `gnttab::hypercall::VaWindows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaWindows {
    /// First address.
    pub base: usize,
    /// Pages.
    pub pages: usize,
}

/// This kernel, once `pv::kmain` has set it up. Only `kmain` makes one.
#[derive(Debug)]
pub struct Xen {
    _private: (),
}

impl Xen {
    /// # Safety
    /// Only after `event::init` mapped shared_info (and once).
    pub(super) unsafe fn new() -> Self {
        Self { _private: () }
    }

    /// The grant window `mm` reserved. Handing it to one mapper only is
    /// the caller's business (the mapper's constructor is unsafe).
    pub fn grant_windows(&self) -> VaWindows {
        VaWindows {
            base: mm::WINDOW_BASE,
            pages: mm::WINDOW_PAGES,
        }
    }
}

// SAFETY: `hypercall` calls this domain's hypercall page; shared_info is
// mapped read-write over `shared_info_page` before a `Xen` exists and
// stays so for the life of the kernel.
unsafe impl Hypervisor for Xen {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        // SAFETY: the caller's contract is the same.
        unsafe { hypercall::hypercall(op, args) }
    }

    fn shared_info(&self) -> NonNull<u8> {
        event::shared_info()
    }

    fn system_time_ns(&self) -> u64 {
        time::system_time_ns()
    }

    fn block(&self, deadline_ns: Option<u64>) {
        event::block(deadline_ns);
    }
}

/// The server's host: the clock, the console, the heap's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelHost;

impl Host for KernelHost {
    fn now_ms(&self) -> u64 {
        time::system_time_ns() / 1_000_000
    }

    fn log(&self, line: &str) {
        console::write(line.as_bytes());
        console::write(b"\n");
    }

    fn free_memory(&self) -> usize {
        mm::stats().map_or(0, |s| s.free.saturating_add(s.can_grow))
    }
}
