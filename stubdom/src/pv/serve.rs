//! A minimal loop serving dom0's ring on the engine, until part SERVER's
//! `Server` (over the hypercall backends of part HCALL) is merged and
//! replaces it: bind dom0's `--event N` port, map dom0's grant ref 1
//! (GNTTAB_RESERVED_XENSTORE) in the grant window, and move requests and
//! replies between the ring and the engine. Enough for init-xenstore-domain
//! and dom0's tools; guests' XS_INTRODUCE is not carried out here.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use xenring::{Decoder, RingPage, ServerEnd};
use xenstored_lite::engine::{Action, Config, ConnId, ConnKind, Engine, Input};

use super::abi::{self, gnttab, shinfo, EvtchnBindInterdomain, GnttabMapGrantRef};
use super::arith::event_port;
use super::console::kprintln;
use super::hypercall::{self, arg_mut, HypercallError};
use super::mm;
use super::platform::{Host, Hypervisor, KernelHost, Xen};

/// Dom0's connection.
const DOM0: ConnId = 1;
/// `GNTTAB_RESERVED_XENSTORE`.
const XENSTORE_GREF: u32 = 1;
/// How long the loop sleeps when idle (it re-checks the ring then).
const IDLE_NS: u64 = 1_000_000_000;

/// Why dom0's ring could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No `--event N` on the command line.
    #[error("no --event N on the command line")]
    NoEvent,
    /// A hypercall failed.
    #[error(transparent)]
    Hypercall(#[from] HypercallError),
    /// Xen refused the grant mapping.
    #[error("mapping dom0's grant ref 1: GNTST {0}")]
    Map(i16),
}

/// Clears every pending event of vcpu 0 (the loop re-checks the ring
/// after this, so nothing is lost): upcall_pending, the selector, and the
/// pending words it named.
fn clear_events(xen: &Xen) {
    let base = xen.shared_info().as_ptr();
    // SAFETY: shared_info is mapped read-write; the fields are Xen's
    // shared words, touched only with atomic operations.
    unsafe {
        let pending = &*base.cast::<AtomicU8>();
        pending.store(0, Ordering::SeqCst);
        let sel = &*base.add(8).cast::<AtomicU64>();
        let words = sel.swap(0, Ordering::SeqCst);
        for i in 0..shinfo::WORDS {
            if words & (1 << i) != 0 {
                let w = &*base.add(shinfo::EVTCHN_PENDING + i * 8).cast::<AtomicU64>();
                w.store(0, Ordering::SeqCst);
            }
        }
    }
}

/// Binds dom0's port, maps its ring and serves it; returns only on a
/// set-up error.
pub fn run(xen: &Xen, cmdline: &str) -> Result<(), ServeError> {
    let host = KernelHost;
    let remote_port = event_port(cmdline).ok_or(ServeError::NoEvent)?;
    let mut bind = EvtchnBindInterdomain {
        remote_dom: 0,
        remote_port,
        local_port: 0,
    };
    // SAFETY: `bind` is a live evtchn_bind_interdomain Xen fills in.
    unsafe { hypercall::event_channel_op(abi::evtchn::BIND_INTERDOMAIN, arg_mut(&mut bind))? };
    let port = bind.local_port;
    let va = xen.grant_windows().base;
    let mut map = GnttabMapGrantRef {
        host_addr: va as u64,
        flags: gnttab::GNTMAP_HOST_MAP,
        gref: XENSTORE_GREF,
        dom: 0,
        status: 0,
        handle: 0,
        dev_bus_addr: 0,
    };
    // SAFETY: `map` is one live gnttab_map_grant_ref; `va` is the first
    // page of the grant window, whose L1 exists and whose entry is empty,
    // so the mapping replaces nothing.
    let rc = unsafe {
        xen.hypercall(
            abi::op::GRANT_TABLE_OP,
            [gnttab::MAP_GRANT_REF, arg_mut(&mut map), 1, 0, 0],
        )
    };
    if rc < 0 {
        return Err(HypercallError {
            what: "grant_table_op",
            rc,
        }
        .into());
    }
    if map.status != 0 {
        return Err(ServeError::Map(map.status));
    }
    kprintln!("stubdom: dom0's ring mapped, port {port} (dom0's {remote_port})");
    // SAFETY: the page at `va` is dom0's ring, mapped read-write for the
    // rest of the kernel's life; xenring only touches it with volatile and
    // atomic accesses, as a page shared with dom0 must be.
    let ring = ServerEnd::new(unsafe {
        RingPage::new(NonNull::new(va as *mut u8).ok_or(ServeError::Map(-1))?)
    });

    let mut engine = Engine::new(Config::default());
    engine.handle(Input::Time(host.now_ms()));
    engine.handle(Input::Connect {
        conn: DOM0,
        kind: ConnKind::Domain(0),
    });
    let mut decoder = Decoder::new();
    let mut out: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut served = 0u64;
    let mut reported = 0u64;
    loop {
        clear_events(xen);
        let mut moved = false;
        // Requests in.
        loop {
            let n = match ring.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    kprintln!("stubdom: dom0's ring: {e}");
                    0
                }
            };
            if n == 0 {
                break;
            }
            moved = true;
            engine.handle(Input::Time(host.now_ms()));
            let mut input = &buf[..n];
            while !input.is_empty() {
                match decoder.decode(&mut input) {
                    Ok(Some(msg)) => {
                        served += 1;
                        engine.handle(Input::Request {
                            conn: DOM0,
                            msg: &msg,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        kprintln!("stubdom: dom0 sent a bad message: {e}");
                        decoder = Decoder::new();
                        break;
                    }
                }
            }
        }
        for action in engine.take_actions() {
            if let Action::Log(line) = action {
                host.log(&line);
            }
        }
        while let Some(msg) = engine.pop_output(DOM0) {
            msg.encode_into(&mut out);
        }
        // Replies out.
        while !out.is_empty() {
            match ring.write(&out) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.drain(..n);
                    moved = true;
                }
            }
        }
        if moved {
            hypercall::notify(port);
            if served >= reported.saturating_mul(2).max(16) {
                reported = served;
                memreport(served);
                kprintln!("stubdom: free memory {} KiB", host.free_memory() / 1024);
            }
            continue;
        }
        let deadline = xen.system_time_ns().saturating_add(IDLE_NS);
        xen.block(Some(deadline));
    }
}

/// One line with the heap's figures.
pub fn memreport(served: u64) {
    if let Some(s) = mm::stats() {
        kprintln!(
            "stubdom: memreport: heap {} KiB used, {} KiB free, can grow {} KiB; \
             {} pages at start, {} grown; {served} requests served",
            s.used / 1024,
            s.free / 1024,
            s.can_grow / 1024,
            s.boot_pages,
            s.grown_pages
        );
    }
}
