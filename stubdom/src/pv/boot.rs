//! The kernel's first instructions and the pages Xen fills: the ELF notes
//! Xen's loader (libelf) reads, `_start`, the boot stack, the hypercall
//! page, the pages shared_info and the console ring are mapped over, and
//! the event and failsafe callbacks.
//!
//! The image is linked at virtual address 0 with `VIRT_BASE` = 0 and
//! `PADDR_OFFSET` = 0 (`stubdom/pv.ld`), as Mini-OS is: Xen's bootstrap
//! page tables then map pseudo-physical frame `n` at virtual address
//! `n * 4096`, which `mm` extends to every page of the domain.

use core::arch::global_asm;

use super::abi::{op, sched, UPCALL_MASK_OFFSET};

/// Bytes of the kernel's stack (in .bss).
pub const STACK_SIZE: usize = 128 * 1024;

// The ELF notes (elfnote.h). Each is: namesz, descsz, type, "Xen\0",
// then the descriptor, padded to 4 bytes. PV only: no PHYS32_ENTRY, so
// init-xenstore-domain's PVH attempt fails harmlessly and it builds a PV
// domain.
global_asm!(
    ".pushsection .note.Xen, \"a\", %note",
    ".balign 4",
    ".long 4, 2f - 1f, 6", // XEN_ELFNOTE_GUEST_OS
    ".asciz \"Xen\"",
    "1: .asciz \"xenstored-stubdom\"",
    "2: .balign 4",
    ".long 4, 2f - 1f, 5", // XEN_ELFNOTE_XEN_VERSION
    ".asciz \"Xen\"",
    "1: .asciz \"xen-3.0\"",
    "2: .balign 4",
    ".long 4, 2f - 1f, 8", // XEN_ELFNOTE_LOADER
    ".asciz \"Xen\"",
    "1: .asciz \"generic\"",
    "2: .balign 4",
    ".long 4, 2f - 1f, 3", // XEN_ELFNOTE_VIRT_BASE
    ".asciz \"Xen\"",
    "1: .quad 0",
    "2: .balign 4",
    ".long 4, 2f - 1f, 4", // XEN_ELFNOTE_PADDR_OFFSET
    ".asciz \"Xen\"",
    "1: .quad 0",
    "2: .balign 4",
    ".long 4, 2f - 1f, 1", // XEN_ELFNOTE_ENTRY
    ".asciz \"Xen\"",
    "1: .quad _start",
    "2: .balign 4",
    ".long 4, 2f - 1f, 2", // XEN_ELFNOTE_HYPERCALL_PAGE
    ".asciz \"Xen\"",
    "1: .quad hypercall_page",
    "2: .balign 4",
    ".popsection",
);

// Xen enters `_start` in 64-bit mode with rsi = the virtual address of
// start_info and rsp at the end of its bootstrap stack, the last page it
// allocated: `kmain` gets both (the old rsp tells where free pages begin)
// and runs on the kernel's own stack, 16-byte aligned before the call as
// the SysV ABI wants.
global_asm!(
    ".pushsection .text.boot, \"ax\"",
    ".globl _start",
    "_start:",
    "mov rdi, rsi",
    "mov rsi, rsp",
    "lea rsp, [rip + {stack} + {stack_size}]",
    "xor ebp, ebp",
    "call {kmain}",
    "ud2",
    ".popsection",
    stack = sym BOOT_STACK,
    stack_size = const STACK_SIZE,
    kmain = sym super::kmain,
);

// The hypercall page (Xen writes 128 stubs of 32 bytes into it), and the
// two pages whose mappings are replaced by shared_info and the console
// ring. Page-aligned; the loader zero-fills .bss.
global_asm!(
    ".pushsection .text.hypercall, \"ax\"",
    ".balign 4096",
    ".globl hypercall_page",
    "hypercall_page:",
    ".skip 4096",
    ".popsection",
    ".pushsection .bss.pages, \"aw\", %nobits",
    ".balign 4096",
    ".globl shared_info_page",
    "shared_info_page:",
    ".skip 4096",
    ".globl console_page",
    "console_page:",
    ".skip 4096",
    ".popsection",
);

// The event callback. Upcalls are masked everywhere except inside
// SCHEDOP_block (see `event::block`), so Xen only ever delivers one on the
// return from that hypercall: the bounce frame is pushed below the
// hypercall stub's stack pointer, inside an `asm!` block that may use the
// stack (no `nostack`), where no Rust code has a live red zone. Xen pushes
// rcx and r11 above an iret frame (rip, cs, rflags, rsp, ss) and has set
// the upcall mask. The handler keeps the mask set, restores rcx and r11,
// clears IF in the saved rflags (HYPERVISOR_iret restores the mask from
// !IF) and returns through HYPERVISOR_iret (iret_context: the stub pushes
// rax, r11, rcx above our flags word of 0, "not in syscall"). It touches
// no register but rcx and r11, which it restores. The events themselves
// are left pending in shared_info for the event-channel backend to read.
//
// The failsafe callback (Xen could not load the guest's segment registers)
// cannot happen to a kernel that never loads any: it crashes the domain.
global_asm!(
    ".pushsection .text, \"ax\"",
    ".globl xen_event_callback",
    "xen_event_callback:",
    "mov byte ptr [rip + shared_info_page + {mask}], 1",
    "pop rcx",
    "pop r11",
    "and qword ptr [rsp + 16], -0x201",
    "push 0",
    "jmp hypercall_page + {iret} * 32",
    ".globl xen_failsafe_callback",
    "xen_failsafe_callback:",
    "mov edi, {shutdown}",
    "lea rsi, [rip + {reason}]",
    "call hypercall_page + {sched_op} * 32",
    "ud2",
    ".popsection",
    mask = const UPCALL_MASK_OFFSET,
    iret = const op::IRET,
    shutdown = const sched::SHUTDOWN,
    sched_op = const op::SCHED_OP,
    reason = sym CRASH_REASON,
);

/// `struct sched_shutdown { SHUTDOWN_crash }` for the failsafe callback.
static CRASH_REASON: u32 = sched::SHUTDOWN_CRASH;

/// The kernel's stack.
#[repr(C, align(16))]
pub struct Stack([u8; STACK_SIZE]);

/// The boot stack: only `_start` refers to it (by symbol), so it is never
/// read or written through a Rust reference.
#[no_mangle]
pub static mut BOOT_STACK: Stack = Stack([0; STACK_SIZE]);

extern "C" {
    /// The page Xen filled with hypercall stubs.
    pub static hypercall_page: [u8; 4096];
    /// Mapped over by shared_info (`event::init`). `mut`: Xen writes it
    /// at any time; only its address is ever taken (no Rust reference).
    pub static mut shared_info_page: [u8; 4096];
    /// Mapped over by the console ring (`mut`, address only, likewise).
    pub static mut console_page: [u8; 4096];
    /// The event upcall's entry.
    pub fn xen_event_callback();
    /// The failsafe callback's entry.
    pub fn xen_failsafe_callback();
}
