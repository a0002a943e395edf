//! The PV kernel platform: boot (`boot`), hypercalls (`hypercall`, ABI
//! layouts in `abi`), the console ring (`console`), memory (`mm`), time
//! (`time`), events and sleeping (`event`), the runtime pieces (`rt`), the
//! platform the server and backends see (`platform`); `kmain` starts
//! the library's `Server` over the hypercall backends of `evtchn` and
//! `gnttab`.

mod abi;
mod arith;
mod boot;
mod console;
mod event;
mod hypercall;
mod mm;
mod platform;
mod rt;
mod time;

use core::ptr::addr_of;

use console::kprintln;
use evtchn::hypercall::HypercallEventChannel;
use gnttab::hypercall::{HypercallDomainInfo, HypercallPageMapper};
use xenstored_stubdom::{cmdline, Server};

extern "C" {
    /// The end of the image (pv.ld).
    static _end: u8;
}

/// Called by `_start` with Xen's start_info and Xen's initial stack
/// pointer; never returns.
extern "C" fn kmain(si: *const abi::StartInfo, boot_rsp: usize) -> ! {
    // SAFETY: Xen passes the virtual address of start_info in rsi, mapped
    // in its bootstrap area for the life of the domain; nothing writes it.
    let si = unsafe { &*si };
    if console::init(si.console_mfn, si.console_evtchn).is_err() {
        hypercall::crash();
    }
    let magic_len = si
        .magic
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.magic.len());
    let magic = core::str::from_utf8(si.magic.get(..magic_len).unwrap_or_default()).unwrap_or("?");
    // A line that is not text is refused below (the panic prints why).
    let line = cmdline::from_start_info(&si.cmd_line);
    let shown = match &line {
        Ok(text) => text,
        Err(_) => "(not UTF-8)",
    };
    kprintln!(
        "xenstored-stubdom: starting on {magic}, {} pages, cmdline \"{shown}\"",
        si.nr_pages,
    );
    if let Err(e) = event::init(si.shared_info) {
        panic!("events: {e}");
    }
    let image_end = addr_of!(_end) as usize;
    // SAFETY: once, at start, before any allocation; `si` is start_info.
    if let Err(e) = unsafe { mm::init(si, boot_rsp, image_end) } {
        panic!("memory: {e}");
    }
    if let Some(line) = platform::heap_report() {
        kprintln!("{line}");
    }
    // SAFETY: event::init mapped shared_info; this is the only `Xen`.
    let xen = alloc::sync::Arc::new(unsafe { platform::Xen::new() });
    let windows = xen.grant_windows();
    let evtchn = HypercallEventChannel::new(xen.clone());
    // SAFETY: `mm::init` reserved the window (L1 tables present, entries
    // empty) and nothing else maps into it; this is its only mapper.
    let mapper = match unsafe { HypercallPageMapper::new(xen.clone(), windows) } {
        Ok(m) => m,
        Err(e) => panic!("grant window: {e}"),
    };
    let dominfo = HypercallDomainInfo::new(xen);
    let cmd = match line {
        Ok(text) => text,
        Err(e) => panic!("xenstored-stubdom cannot start: {e}"),
    };
    match Server::new(cmd, evtchn, mapper, dominfo, platform::KernelHost) {
        Ok(mut server) => server.run(),
        Err(e) => panic!("xenstored-stubdom cannot start: {e}"),
    }
}
