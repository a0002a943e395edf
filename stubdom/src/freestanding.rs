//! The freestanding program (see the crate docs).

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use xenring::codec::{build_args, build_path_value, Decoder, Message};
use xenring::MsgType;
use xenstored_lite::engine::{Config, ConnId, ConnKind, Engine, Input};

/// The node written, then read back.
const PATH: &[u8] = b"/stubdom/hello";
const VALUE: &[u8] = b"world";

/// Dom0's connection.
const DOM0: ConnId = 1;

/// Why no reply could be written.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("message: {0}")]
    Codec(#[from] xenring::Error),
    #[error("the engine queued no reply")]
    NoReply,
    #[error("the engine refused the write")]
    Refused,
    #[error("the READ's bytes did not make a whole message")]
    Incomplete,
}

/// Hands `msg` to the engine and returns its reply (watch events, of which
/// there are none here, are skipped).
fn request(engine: &mut Engine, msg: &Message) -> Result<Message, Error> {
    engine.handle(Input::Request { conn: DOM0, msg });
    loop {
        let out = engine.pop_output(DOM0).ok_or(Error::NoReply)?;
        if out.header.msg_type != MsgType::WatchEvent.raw() {
            return Ok(out);
        }
    }
}

/// Writes the node, then answers a READ of it given as wire bytes; returns
/// the reply's wire bytes.
fn serve() -> Result<Vec<u8>, Error> {
    let mut engine = Engine::new(Config::default());
    engine.handle(Input::Connect {
        conn: DOM0,
        kind: ConnKind::Socket,
    });
    let write = Message::new(MsgType::Write, 1, 0, build_path_value(PATH, VALUE))?;
    if request(&mut engine, &write)?.header.msg_type != MsgType::Write.raw() {
        return Err(Error::Refused);
    }
    let wire = Message::new(MsgType::Read, 2, 0, build_args(&[PATH]))?.to_bytes();
    let mut input = &wire[..];
    let read = Decoder::new()
        .decode(&mut input)?
        .ok_or(Error::Incomplete)?;
    Ok(request(&mut engine, &read)?.to_bytes())
}

/// The entry point `_start` calls.
extern "C" fn stubdom_main() -> ! {
    match serve() {
        Ok(reply) => exit(if write_all(1, &reply) { 0 } else { 2 }),
        Err(e) => {
            write_all(2, format!("stubdom: {e}\n").as_bytes());
            exit(1)
        }
    }
}

// The kernel enters `_start` with the stack pointer 16-byte aligned and no
// return address pushed; Rust functions expect to have been called, so the
// entry clears the frame pointer, aligns the stack and calls into Rust.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym stubdom_main,
);

/// `write(2)`: returns what the kernel returns (bytes written or -errno).
fn sys_write(fd: usize, buf: &[u8]) -> isize {
    let ret: isize;
    // SAFETY: write(2) only reads `buf.len()` bytes at `buf.as_ptr()`, a live
    // slice; the `syscall` instruction clobbers rcx and r11, declared here,
    // and touches no Rust memory.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 1isize => ret,
            in("rdi") fd,
            in("rsi") buf.as_ptr(),
            in("rdx") buf.len(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, readonly),
        );
    }
    ret
}

/// Writes all of `buf` to `fd`; `false` if the kernel refused.
fn write_all(fd: usize, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match usize::try_from(sys_write(fd, buf)) {
            Ok(n) if n > 0 => buf = buf.get(n..).unwrap_or_default(),
            _ => return false,
        }
    }
    true
}

/// `exit_group(2)`.
fn exit(code: usize) -> ! {
    // SAFETY: exit_group(2) ends the process and does not return; it reads
    // no memory.
    unsafe {
        asm!("syscall", in("rax") 231usize, in("rdi") code, options(noreturn, nostack));
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    write_all(2, b"stubdom: panic\n");
    exit(101)
}

/// Referenced by the precompiled `core` and `alloc`'s unwind tables; with
/// `panic = "abort"` nothing unwinds, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Called from the landing pads in the precompiled `alloc`; with
/// `panic = "abort"` no panic unwinds to one, so it is never reached.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    exit(134)
}

/// Bytes the allocator hands out (in .bss: no size in the file).
const ARENA_SIZE: usize = 4 << 20;

/// A bump allocator over a static arena: blocks are never reused, except
/// that freeing or growing the newest block works in place (so a growing
/// `Vec` does not use up the arena).
#[repr(C, align(4096))]
struct Arena {
    bytes: UnsafeCell<[u8; ARENA_SIZE]>,
    /// Offset of the first free byte.
    next: AtomicUsize,
}

// SAFETY: blocks are carved out of `bytes` by compare-and-swap on `next`,
// so no two callers are ever given overlapping bytes; the arena itself is
// never read or written through a reference.
unsafe impl Sync for Arena {}

impl Arena {
    fn base(&self) -> *mut u8 {
        self.bytes.get().cast::<u8>()
    }

    /// The offset of `ptr` in the arena.
    fn offset(&self, ptr: *mut u8) -> usize {
        (ptr as usize).wrapping_sub(self.base() as usize)
    }
}

// SAFETY: `alloc` returns null or a block of `layout.size()` bytes aligned
// to `layout.align()` inside the arena, not overlapping any live block
// (each block lies below `next`, and `next` only moves back over the newest
// block when that block is freed or resized).
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = self.base() as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let Some(start) = (base + cur)
                .checked_next_multiple_of(layout.align())
                .map(|a| a - base)
            else {
                return core::ptr::null_mut();
            };
            let end = match start.checked_add(layout.size()) {
                Some(end) if end <= ARENA_SIZE => end,
                _ => return core::ptr::null_mut(),
            };
            match self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return self.base().wrapping_add(start),
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let start = self.offset(ptr);
        // Only the newest block goes back; the others stay used.
        let _ = self.next.compare_exchange(
            start + layout.size(),
            start,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = self.offset(ptr);
        if new_size <= ARENA_SIZE - start
            && self
                .next
                .compare_exchange(
                    start + layout.size(),
                    start + new_size,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: the caller's contract for realloc: `layout` is valid with a
        // non-zero size, so is `new_layout`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: `ptr` holds `layout.size()` bytes and `new` at least
            // `min(old, new)` of them; distinct live blocks do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[global_allocator]
static ARENA: Arena = Arena {
    bytes: UnsafeCell::new([0; ARENA_SIZE]),
    next: AtomicUsize::new(0),
};

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
