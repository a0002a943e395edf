//! shared_info, the event upcall and sleeping.
//!
//! Upcalls stay masked (`vcpu_info[0].evtchn_upcall_mask` = 1, as Xen
//! starts a PV vcpu) everywhere but inside SCHEDOP_block: Xen unmasks and
//! checks for pending events atomically there, so no wake-up is lost, and
//! an event delivered on the way out lands on the hypercall stub's stack
//! (see `boot.rs`), where the red zone of the Rust code is not live: the
//! `asm!` block has no `nostack`, so the compiler keeps nothing below the
//! stack pointer across it. The same `asm!` block sets the mask again
//! before any Rust code runs. The callback itself only re-masks and
//! returns; which ports are pending is read from shared_info by the event
//! channel backend.

use core::arch::asm;
use core::ptr::{addr_of, addr_of_mut, NonNull};
use core::sync::atomic::{AtomicU32, Ordering};

use super::abi::{self, op, pte, sched, EvtchnBindVirq, UPCALL_MASK_OFFSET};
use super::boot::{shared_info_page, xen_event_callback, xen_failsafe_callback};
use super::hypercall::{self, arg_mut, hypercall, HypercallError};
use super::time;

/// The port of VIRQ_TIMER (bound once, at start; the event backend
/// clears its pending bit without reporting it).
static TIMER_PORT: AtomicU32 = AtomicU32::new(0);

/// Maps shared_info (machine address `maddr`) over `shared_info_page`,
/// registers the callbacks, stops the periodic timer and binds VIRQ_TIMER.
pub fn init(maddr: u64) -> Result<(), HypercallError> {
    let va = addr_of!(shared_info_page) as usize;
    // SAFETY: `shared_info_page` is a page of .bss only this module and
    // `time` use, through raw pointers, after this mapping.
    unsafe { hypercall::update_va_mapping(va, (maddr & pte::FRAME_MASK) | pte::DATA)? };
    time::READY.store(true, Ordering::Release);
    // SAFETY: set_callbacks takes code addresses: the two entries of
    // boot.rs, which follow Xen's bounce-frame conventions; 0 = no syscall
    // callback.
    let rc = unsafe {
        hypercall(
            op::SET_CALLBACKS,
            [
                xen_event_callback as *const () as u64,
                xen_failsafe_callback as *const () as u64,
                0,
                0,
                0,
            ],
        )
    };
    if rc < 0 {
        return Err(HypercallError {
            what: "set_callbacks",
            rc,
        });
    }
    // SAFETY: VCPUOP_stop_periodic_timer for vcpu 0 takes no structure.
    let rc = unsafe { hypercall(op::VCPU_OP, [abi::vcpu::STOP_PERIODIC_TIMER, 0, 0, 0, 0]) };
    if rc < 0 {
        return Err(HypercallError {
            what: "stop_periodic_timer",
            rc,
        });
    }
    let mut bind = EvtchnBindVirq {
        virq: abi::evtchn::VIRQ_TIMER,
        vcpu: 0,
        port: 0,
    };
    // SAFETY: `bind` is a live evtchn_bind_virq Xen fills in.
    unsafe { hypercall::event_channel_op(abi::evtchn::BIND_VIRQ, arg_mut(&mut bind))? };
    TIMER_PORT.store(bind.port, Ordering::Relaxed);
    Ok(())
}

/// The shared_info page.
pub fn shared_info() -> NonNull<u8> {
    // Only the address is taken: no Rust reference to a page Xen writes.
    let page = addr_of_mut!(shared_info_page).cast::<u8>();
    NonNull::new(page).unwrap_or(NonNull::dangling())
}

/// Sleeps until an event is pending or system time `deadline_ns` passes
/// (`None`: no timeout); returns at once if an event is pending already.
pub fn block(deadline_ns: Option<u64>) {
    // Some(0) would cancel the timer: a deadline in the past fires at once.
    let _ = hypercall::set_timer(deadline_ns.map_or(0, |d| d.max(1)));
    let mask = addr_of!(shared_info_page) as usize + UPCALL_MASK_OFFSET;
    let entry = addr_of!(super::boot::hypercall_page) as usize + op::SCHED_OP as usize * 32;
    // SAFETY: SCHEDOP_block takes no structure. The block may use the
    // stack (no `nostack`): Xen's stub pushes on it, and so does an upcall
    // delivered on the hypercall's return (see the module docs). `mask` is
    // vcpu 0's evtchn_upcall_mask in the mapped shared_info page: setting
    // it again before leaving the block keeps upcalls out of Rust code.
    unsafe {
        asm!(
            "call {entry}",
            "mov byte ptr [r12], 1",
            entry = in(reg) entry,
            // Callee-saved, so Xen and its stub preserve it across the call.
            in("r12") mask,
            inlateout("rdi") sched::BLOCK => _,
            inlateout("rsi") 0u64 => _,
            lateout("rdx") _,
            lateout("r10") _,
            lateout("r8") _,
            lateout("rax") _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
}
