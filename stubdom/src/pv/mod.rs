//! The PV kernel platform: boot (`boot`), hypercalls (`hypercall`, ABI
//! layouts in `abi`), the console ring (`console`), memory (`mm`), time
//! (`time`), events and sleeping (`event`), the runtime pieces (`rt`), the
//! platform the server and backends see (`platform`), and the loop that
//! serves dom0's ring (`serve`) until part SERVER's loop replaces it.

mod abi;
mod arith;
mod boot;
mod console;
mod event;
mod hypercall;
mod mm;
mod platform;
mod rt;
mod serve;
mod time;

use core::ptr::addr_of;

use console::kprintln;

extern "C" {
    /// The end of the image (pv.ld).
    static _end: u8;
}

/// The command line (start_info's, up to its NUL), as text; anything not
/// UTF-8 ends it.
fn cmdline(si: &abi::StartInfo) -> &str {
    let len = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.cmd_line.len());
    let bytes = si.cmd_line.get(..len).unwrap_or_default();
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            core::str::from_utf8(bytes.get(..e.valid_up_to()).unwrap_or_default()).unwrap_or("")
        }
    }
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
    kprintln!(
        "xenstored-stubdom: starting on {magic}, {} pages, cmdline \"{}\"",
        si.nr_pages,
        cmdline(si)
    );
    if let Err(e) = event::init(si.shared_info) {
        panic!("events: {e}");
    }
    let image_end = addr_of!(_end) as usize;
    // SAFETY: once, at start, before any allocation; `si` is start_info.
    if let Err(e) = unsafe { mm::init(si, boot_rsp, image_end) } {
        panic!("memory: {e}");
    }
    serve::memreport(0);
    // SAFETY: event::init mapped shared_info; this is the only `Xen`.
    let xen = unsafe { platform::Xen::new() };
    let cmd = alloc::string::String::from(cmdline(si));
    match serve::run(&xen, &cmd) {
        Ok(()) => panic!("the server stopped"),
        Err(e) => panic!("serving dom0: {e}"),
    }
}
