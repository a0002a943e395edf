//! What a libc and std would give: the memory functions the compiler
//! calls, the panic handler, and the unwinding symbols the precompiled
//! `core` and `alloc` refer to.

use core::arch::asm;
use core::sync::atomic::Ordering;

use super::console::kprintln;
use super::{hypercall, mm};

/// Prints the panic's message and location (`panicked at file:line:col`)
/// on the console, then crashes the domain. After an allocation that
/// failed once the heap could not grow, it says so first.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if mm::OOM.load(Ordering::Relaxed) {
        kprintln!("stubdom: out of memory: the heap is full and the domain may not grow");
        if let Some(s) = mm::stats() {
            kprintln!(
                "stubdom: heap {} KiB used, {} KiB free, {} pages at start, {} grown",
                s.used / 1024,
                s.free / 1024,
                s.boot_pages,
                s.grown_pages
            );
        }
    }
    kprintln!("stubdom: {info}");
    hypercall::crash()
}

/// Referenced by the precompiled `core` and `alloc`'s unwind tables; with
/// `panic = "abort"` nothing unwinds, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Called from the landing pads in the precompiled `alloc`; with
/// `panic = "abort"` no panic unwinds to one, so it is never reached.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    hypercall::crash()
}

// The memory functions the compiler emits calls to (there is no libc).
// They use the string instructions, so that the compiler cannot turn them
// into calls to themselves; the direction flag is clear on entry (SysV ABI).

/// `memcpy`.
///
/// # Safety
///
/// `dest` and `src` are valid for `n` bytes and do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller gives `n` valid, non-overlapping bytes at both;
    // `rep movsb` copies exactly `n` bytes forward.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// `memmove`.
///
/// # Safety
///
/// `dest` and `src` are valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` is below `src` or past its end: forward is safe.
        // SAFETY: as memcpy; copying forward reads each source byte before
        // any overlapping destination byte is written.
        unsafe { memcpy(dest, src, n) };
    } else if n > 0 {
        // SAFETY: both ranges hold `n` bytes (the caller's contract), so
        // their last bytes are at `+ n - 1`; copying backward with the
        // direction flag set reads each source byte before it is
        // overwritten, and the flag is cleared again after.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack),
            );
        }
    }
    dest
}

/// `memset`.
///
/// # Safety
///
/// `dest` is valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller gives `n` valid bytes at `dest`; `rep stosb`
    // stores the low byte of `c` into exactly those.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c.to_le_bytes()[0],
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// `memcmp`: the difference of the first differing bytes, or 0.
///
/// # Safety
///
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n` and both are valid for `n` bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `bcmp`: zero when equal.
///
/// # Safety
///
/// As [`memcmp`].
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract.
    unsafe { memcmp(a, b, n) }
}
