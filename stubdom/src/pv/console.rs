//! Output on the PV console ring (`io/console.h`), which xenconsoled in
//! dom0 reads and logs. Release Xen denies `CONSOLEIO_write` to a domU.
//!
//! The ring holds 2048 bytes. When it is full the writer notifies
//! xenconsoled and yields for at most [`WAIT_NS`] of system time; if it
//! is still full the rest of that write is dropped, and later writes do
//! not wait again until xenconsoled has taken something (a console nobody
//! reads must not slow the server).

use core::fmt;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};

use super::abi::{pte, XenconsInterface};
use super::arith::{ring_offset, room};
use super::boot::console_page;
use super::hypercall::{self, HypercallError};
use super::time;

/// How long one write waits for room (system time).
const WAIT_NS: u64 = 200_000_000;
/// Yields a write makes at most while waiting, should the clock not run.
const WAIT_YIELDS: u32 = 100_000;

/// The mapped ring (0: no console yet).
static RING: AtomicUsize = AtomicUsize::new(0);
/// Its event channel.
static PORT: AtomicU32 = AtomicU32::new(0);
/// The last wait ran out: do not wait until there is room again.
static STALLED: AtomicBool = AtomicBool::new(false);

/// Maps the console ring (machine frame `mfn`) over `console_page` and
/// remembers its port.
pub fn init(mfn: u64, port: u32) -> Result<(), HypercallError> {
    let va = addr_of!(console_page) as usize;
    // SAFETY: `console_page` is a page of .bss that nothing reads or
    // writes but this module, through RING, set only after the mapping.
    unsafe { hypercall::update_va_mapping(va, (mfn << 12) | pte::DATA)? };
    PORT.store(port, Ordering::Relaxed);
    RING.store(va, Ordering::Release);
    Ok(())
}

/// Writes `bytes` (a whole line or part of one) to the ring.
pub fn write(mut bytes: &[u8]) {
    let ring = RING.load(Ordering::Acquire) as *mut XenconsInterface;
    if ring.is_null() {
        return;
    }
    let port = PORT.load(Ordering::Relaxed);
    let mut waited_since: Option<u64> = None;
    let mut yields = 0u32;
    while !bytes.is_empty() {
        // SAFETY: `ring` is the mapped console page; the indices are
        // shared with xenconsoled and read once each, volatile.
        let (prod, cons) = unsafe {
            (
                addr_of!((*ring).out_prod).read_volatile(),
                addr_of!((*ring).out_cons).read_volatile(),
            )
        };
        fence(Ordering::Acquire);
        let Some(space) = room(prod, cons) else {
            return;
        };
        if space == 0 {
            if STALLED.load(Ordering::Relaxed) {
                return;
            }
            hypercall::notify(port);
            let now = time::system_time_ns();
            let since = *waited_since.get_or_insert(now);
            yields += 1;
            if now.saturating_sub(since) > WAIT_NS || yields > WAIT_YIELDS {
                STALLED.store(true, Ordering::Relaxed);
                return;
            }
            hypercall::sched_yield();
            continue;
        }
        STALLED.store(false, Ordering::Relaxed);
        let n = bytes.len().min(space as usize);
        let (now, rest) = bytes.split_at(n);
        let mut idx = prod;
        for &b in now {
            // SAFETY: the offset is below OUT_SIZE, inside `output`; the
            // byte is ours until `out_prod` covers it.
            unsafe {
                addr_of_mut!((*ring).output)
                    .cast::<u8>()
                    .add(ring_offset(idx))
                    .write_volatile(b)
            };
            idx = idx.wrapping_add(1);
        }
        fence(Ordering::Release);
        // SAFETY: as above; publishing the bytes written.
        unsafe { addr_of_mut!((*ring).out_prod).write_volatile(idx) };
        hypercall::notify(port);
        bytes = rest;
    }
}

/// A `fmt::Write` onto the console.
pub struct Writer;

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(s.as_bytes());
        Ok(())
    }
}

/// Writes one line (a newline is added).
pub fn line(args: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut Writer, args);
    write(b"\n");
}

/// `kprintln!("...")`: one line on the console.
macro_rules! kprintln {
    ($($t:tt)*) => {
        $crate::pv::console::line(format_args!($($t)*))
    };
}
pub(crate) use kprintln;
