//! Xen system time (ns since boot) from vcpu 0's `vcpu_time_info` in
//! shared_info and the TSC.

use core::ptr::addr_of;
use core::sync::atomic::{fence, AtomicBool, Ordering};

use super::abi::VcpuTimeInfo;
use super::arith::scale;
use super::boot::shared_info_page;

/// shared_info is mapped (set by `event::init`).
pub static READY: AtomicBool = AtomicBool::new(false);

/// Nanoseconds of Xen system time; 0 until shared_info is mapped.
pub fn system_time_ns() -> u64 {
    if !READY.load(Ordering::Acquire) {
        return 0;
    }
    // vcpu_info[0].time sits at offset 32 of shared_info.
    let info = addr_of!(shared_info_page)
        .cast::<u8>()
        .wrapping_add(32)
        .cast::<VcpuTimeInfo>();
    loop {
        // SAFETY: `info` lies in the mapped shared_info page; Xen updates
        // the record under its version (odd while it writes), so each field
        // is read volatile between two reads of the version.
        let (v0, stamp, base, mul, shift) = unsafe {
            let v0 = addr_of!((*info).version).read_volatile();
            fence(Ordering::Acquire);
            (
                v0,
                addr_of!((*info).tsc_timestamp).read_volatile(),
                addr_of!((*info).system_time).read_volatile(),
                addr_of!((*info).tsc_to_system_mul).read_volatile(),
                addr_of!((*info).tsc_shift).read_volatile(),
            )
        };
        // SAFETY: rdtsc reads the time-stamp counter; no memory.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let v1 = unsafe { addr_of!((*info).version).read_volatile() };
        if v0 % 2 == 0 && v0 == v1 {
            return base.wrapping_add(scale(tsc.wrapping_sub(stamp), mul, shift));
        }
    }
}
