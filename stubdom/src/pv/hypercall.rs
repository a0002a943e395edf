//! Hypercalls through the hypercall page, and typed wrappers for the ones
//! the kernel itself makes.

use core::arch::asm;
use core::ptr::addr_of;

use super::abi::{self, op, sched, MmuUpdate};
use super::boot::hypercall_page;

/// A hypercall Xen refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what}: Xen returned {rc}")]
pub struct HypercallError {
    /// Which call.
    pub what: &'static str,
    /// The negative errno.
    pub rc: i64,
}

/// `-ENOSYS`.
const ENOSYS: i64 = -38;

/// Issues hypercall `op` with `args` (rdi, rsi, rdx, r10, r8) by calling
/// its stub in the hypercall page; returns rax.
///
/// The `asm!` does not say `nostack`: Xen's 64-bit stubs push rcx and r11
/// on the caller's stack (`push rcx; push r11; mov eax, N; syscall; pop
/// r11; pop rcx; ret`), and `call` pushes the return address. Without
/// `nostack` the compiler keeps nothing live below the stack pointer (no
/// red zone) across the block. Xen may clobber the argument registers.
///
/// # Safety
/// The arguments must be what hypercall `op` expects: pointers to live,
/// correctly laid-out structures, valid for as long as the call reads or
/// writes them; and the call must not unmap or retype memory the program
/// still uses.
pub unsafe fn hypercall(op: u32, args: [u64; 5]) -> i64 {
    if op >= op::LIMIT {
        return ENOSYS;
    }
    let entry = addr_of!(hypercall_page) as usize + op as usize * 32;
    let ret: i64;
    // SAFETY: `entry` is the stub Xen wrote for `op` (op < 128); the
    // caller vouches for the arguments. The stub preserves every register
    // but rax (and, as Xen documents, the argument registers, declared
    // clobbered here), and returns with `ret` on the stack it was called on.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") args[0] => _,
            inlateout("rsi") args[1] => _,
            inlateout("rdx") args[2] => _,
            inlateout("r10") args[3] => _,
            inlateout("r8") args[4] => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// A call's result as `Result`: non-negative is success.
fn check(what: &'static str, rc: i64) -> Result<u64, HypercallError> {
    u64::try_from(rc).map_err(|_| HypercallError { what, rc })
}

/// The address of `t` as a hypercall argument.
pub fn arg<T>(t: &T) -> u64 {
    t as *const T as u64
}

/// The address of `t` as a hypercall argument Xen writes to.
pub fn arg_mut<T>(t: &mut T) -> u64 {
    t as *mut T as u64
}

/// `mmu_update(reqs, count, NULL, DOMID_SELF)`: every request applied.
///
/// # Safety
/// The updates must not unmap or remap memory the program uses, nor map a
/// page table writable (Xen refuses that anyway).
pub unsafe fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), HypercallError> {
    let mut done = 0u32;
    // SAFETY: `reqs` is a live array of `reqs.len()` mmu_update structs and
    // `done` a live u32; the caller vouches for what the updates change.
    let rc = unsafe {
        hypercall(
            op::MMU_UPDATE,
            [
                reqs.as_ptr() as u64,
                reqs.len() as u64,
                arg_mut(&mut done),
                u64::from(abi::DOMID_SELF),
                0,
            ],
        )
    };
    check("mmu_update", rc).map(drop)
}

/// `update_va_mapping(va, pte, UVMF_INVLPG)`.
///
/// # Safety
/// Nothing the program still uses may live at `va` under its old mapping.
pub unsafe fn update_va_mapping(va: usize, pte: u64) -> Result<(), HypercallError> {
    // SAFETY: no pointer arguments; the caller vouches for the mapping.
    let rc = unsafe {
        hypercall(
            op::UPDATE_VA_MAPPING,
            [va as u64, pte, abi::UVMF_INVLPG, 0, 0],
        )
    };
    check("update_va_mapping", rc).map(drop)
}

/// `sched_op(SCHEDOP_yield)`.
pub fn sched_yield() {
    // SAFETY: SCHEDOP_yield takes no argument and changes no memory.
    unsafe { hypercall(op::SCHED_OP, [sched::YIELD, 0, 0, 0, 0]) };
}

/// `sched_op(SCHEDOP_shutdown, SHUTDOWN_crash)`: does not return. Should
/// Xen ever refuse, `ud2` with no trap table makes Xen crash the domain.
pub fn crash() -> ! {
    let reason = sched::SHUTDOWN_CRASH;
    // SAFETY: `reason` is a live `struct sched_shutdown` (one u32); the
    // domain stops, so no memory is used after.
    unsafe {
        hypercall(op::SCHED_OP, [sched::SHUTDOWN, arg(&reason), 0, 0, 0]);
        asm!("ud2", options(noreturn));
    }
}

/// `set_timer_op(deadline)`: VIRQ_TIMER fires at system time `deadline`
/// (ns); 0 cancels.
pub fn set_timer(deadline_ns: u64) -> Result<(), HypercallError> {
    // SAFETY: no pointer arguments, no memory changed.
    let rc = unsafe { hypercall(op::SET_TIMER_OP, [deadline_ns, 0, 0, 0, 0]) };
    check("set_timer_op", rc).map(drop)
}

/// `memory_op(cmd, arg)`, returning Xen's non-negative answer.
///
/// # Safety
/// `arg` must point to the live structure `cmd` expects.
pub unsafe fn memory_op(cmd: u64, arg: u64) -> Result<u64, HypercallError> {
    // SAFETY: the caller vouches for `arg`.
    let rc = unsafe { hypercall(op::MEMORY_OP, [cmd, arg, 0, 0, 0]) };
    check("memory_op", rc)
}

/// `event_channel_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point to the live structure `cmd` expects.
pub unsafe fn event_channel_op(cmd: u64, arg: u64) -> Result<(), HypercallError> {
    // SAFETY: the caller vouches for `arg`.
    let rc = unsafe { hypercall(op::EVENT_CHANNEL_OP, [cmd, arg, 0, 0, 0]) };
    check("event_channel_op", rc).map(drop)
}

/// `EVTCHNOP_send`.
pub fn notify(port: u32) {
    let send = port;
    // SAFETY: `struct evtchn_send` is one u32, live on the stack.
    let _ = unsafe { event_channel_op(abi::evtchn::SEND, arg(&send)) };
}
