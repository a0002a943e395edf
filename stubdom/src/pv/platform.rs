//! The kernel as the server and the hypercall backends see it: an
//! implementation of the platform trait of `evtchn::hypercall` and of the
//! server's `Host`.

use core::ptr::NonNull;

use evtchn::hypercall::Hypervisor;
use gnttab::hypercall::VaWindows;
use xenstored_stubdom::Host;

use super::{console, event, hypercall, mm, time};

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
        mm::stats().map_or(0, |s| {
            super::arith::guard_free(s.free, s.can_grow, s.reserve, s.reserve_used)
        })
    }

    fn heap_report(&self) -> Option<alloc::string::String> {
        heap_report()
    }
}

/// The heap's figures, as one line (memreport's and start-up's).
pub fn heap_report() -> Option<alloc::string::String> {
    let s = mm::stats()?;
    Some(alloc::format!(
        "xenstored-stubdom: heap {} KiB used, {} KiB free, can grow {} KiB; \
         {} pages at start, {} grown; reserve {} KiB {}",
        s.used / 1024,
        s.free / 1024,
        s.can_grow / 1024,
        s.boot_pages,
        s.grown_pages,
        s.reserve / 1024,
        if s.reserve_used { "in use" } else { "held" }
    ))
}
