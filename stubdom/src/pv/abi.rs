//! Xen's x86_64 PV ABI as the kernel uses it: hypercall numbers, commands
//! and the structures it shares with Xen, from Xen 4.17's public headers
//! (`xen.h`, `sched.h`, `memory.h`, `event_channel.h`, `grant_table.h`,
//! `vcpu.h`, `io/console.h`, `arch-x86/xen-x86_64.h`). Every structure is
//! `#[repr(C)]` with its size and field offsets checked at compile time.

use core::mem::{offset_of, size_of};

/// Hypercall numbers (`xen.h`, `__HYPERVISOR_*`).
pub mod op {
    /// `mmu_update`.
    pub const MMU_UPDATE: u32 = 1;
    /// `set_callbacks` (x86_64: event, failsafe, syscall addresses).
    pub const SET_CALLBACKS: u32 = 4;
    /// `memory_op`.
    pub const MEMORY_OP: u32 = 12;
    /// `update_va_mapping`.
    pub const UPDATE_VA_MAPPING: u32 = 14;
    /// `set_timer_op`.
    pub const SET_TIMER_OP: u32 = 15;
    /// `iret` (jumped to, never called).
    pub const IRET: u32 = 23;
    /// `vcpu_op`.
    pub const VCPU_OP: u32 = 24;
    /// `sched_op`.
    pub const SCHED_OP: u32 = 29;
    /// `event_channel_op`.
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// One past the last hypercall number the page has a stub for
    /// (the page holds 128 stubs of 32 bytes).
    pub const LIMIT: u32 = 128;
}

/// `sched_op` commands (`sched.h`).
pub mod sched {
    /// Give up the CPU, stay runnable.
    pub const YIELD: u64 = 0;
    /// Sleep until an event (unmasks upcalls and checks, atomically).
    pub const BLOCK: u64 = 1;
    /// Stop the domain (`struct sched_shutdown`).
    pub const SHUTDOWN: u64 = 2;
    /// `SHUTDOWN_crash`.
    pub const SHUTDOWN_CRASH: u32 = 3;
}

/// `memory_op` commands (`memory.h`).
pub mod mem {
    /// Pages a domain has now (`domid_t *` argument).
    pub const CURRENT_RESERVATION: u64 = 3;
    /// Pages a domain may have (`domid_t *` argument).
    pub const MAXIMUM_RESERVATION: u64 = 4;
    /// Give the domain pages at the given gpfns (`struct
    /// xen_memory_reservation`); a PV domain gets each page's mfn back in
    /// the list, and Xen sets the machine-to-phys entries.
    pub const POPULATE_PHYSMAP: u64 = 6;
}

/// `event_channel_op` commands (`event_channel.h`).
pub mod evtchn {
    /// `EVTCHNOP_bind_virq`.
    pub const BIND_VIRQ: u64 = 1;
    /// `EVTCHNOP_send`.
    pub const SEND: u64 = 4;
    /// `VIRQ_TIMER`: the one-shot timer of `set_timer_op`.
    pub const VIRQ_TIMER: u32 = 0;
}

/// `vcpu_op` commands (`vcpu.h`).
pub mod vcpu {
    /// `VCPUOP_stop_periodic_timer`: no 100 Hz VIRQ_TIMER.
    pub const STOP_PERIODIC_TIMER: u64 = 7;
}

/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7FF0;

/// Page-table entry bits (x86).
pub mod pte {
    /// Present.
    pub const PRESENT: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User (Xen sets it for a 64-bit PV kernel's pages itself).
    pub const USER: u64 = 1 << 2;
    /// Accessed.
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty.
    pub const DIRTY: u64 = 1 << 6;
    /// The frame-number bits of an entry.
    pub const FRAME_MASK: u64 = 0x000F_FFFF_FFFF_F000;
    /// A data page: read-write.
    pub const DATA: u64 = PRESENT | RW | ACCESSED | DIRTY;
    /// A page-table page's own mapping: read-only, as Xen requires.
    pub const TABLE_RO: u64 = PRESENT | ACCESSED;
    /// An entry of L2..L4 pointing at a lower table.
    pub const LINK: u64 = PRESENT | RW | USER | ACCESSED | DIRTY;
}

/// `UVMF_INVLPG`: flush the one page's TLB entry.
pub const UVMF_INVLPG: u64 = 2;

/// Where Xen maps the machine-to-physical table read-only in every 64-bit
/// PV guest (`__MACH2PHYS_VIRT_START`).
pub const MACH2PHYS_VIRT_START: usize = 0xFFFF_8000_0000_0000;
/// Entries of that table (`MACH2PHYS_NR_ENTRIES`).
pub const MACH2PHYS_NR_ENTRIES: u64 = (0xFFFF_8040_0000_0000 - 0xFFFF_8000_0000_0000) >> 3;

/// `struct start_info` (`xen.h`, "Start-of-day memory layout").
#[repr(C)]
pub struct StartInfo {
    /// "xen-<version>-<platform>".
    pub magic: [u8; 32],
    /// Pages allocated to the domain.
    pub nr_pages: u64,
    /// Machine address of shared_info.
    pub shared_info: u64,
    /// `SIF_*`.
    pub flags: u32,
    /// The domain's own xenstore page (unused by a xenstore domain).
    pub store_mfn: u64,
    /// Its port.
    pub store_evtchn: u32,
    /// `console.domU.mfn`: machine frame of the console ring.
    pub console_mfn: u64,
    /// `console.domU.evtchn`: its port.
    pub console_evtchn: u32,
    /// Virtual address of the L4 table.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn-to-mfn list.
    pub mfn_list: u64,
    /// Virtual address of the module (none here).
    pub mod_start: u64,
    /// Its size.
    pub mod_len: u64,
    /// The command line, NUL-terminated.
    pub cmd_line: [u8; 1024],
    /// First pfn of the initial p2m table.
    pub first_p2m_pfn: u64,
    /// Its frames.
    pub nr_p2m_frames: u64,
}

const _: () = {
    assert!(size_of::<StartInfo>() == 1168);
    assert!(offset_of!(StartInfo, nr_pages) == 32);
    assert!(offset_of!(StartInfo, shared_info) == 40);
    assert!(offset_of!(StartInfo, flags) == 48);
    assert!(offset_of!(StartInfo, store_mfn) == 56);
    assert!(offset_of!(StartInfo, store_evtchn) == 64);
    assert!(offset_of!(StartInfo, console_mfn) == 72);
    assert!(offset_of!(StartInfo, console_evtchn) == 80);
    assert!(offset_of!(StartInfo, pt_base) == 88);
    assert!(offset_of!(StartInfo, nr_pt_frames) == 96);
    assert!(offset_of!(StartInfo, mfn_list) == 104);
    assert!(offset_of!(StartInfo, mod_start) == 112);
    assert!(offset_of!(StartInfo, mod_len) == 120);
    assert!(offset_of!(StartInfo, cmd_line) == 128);
    assert!(offset_of!(StartInfo, first_p2m_pfn) == 1152);
    assert!(offset_of!(StartInfo, nr_p2m_frames) == 1160);
};

// The shared_info layouts and the event-channel structures are
// `evtchn`'s (size- and offset-checked against Xen's headers there).
pub use ::evtchn::hypercall::abi::{EvtchnBindVirq, VcpuTimeInfo};

/// Offset of vcpu 0's `evtchn_upcall_mask` in shared_info (the upcall
/// handler's asm writes it).
pub const UPCALL_MASK_OFFSET: usize = ::evtchn::hypercall::abi::OFFSET_UPCALL_MASK;

const _: () = assert!(UPCALL_MASK_OFFSET == 1);

/// `struct xencons_interface` (`io/console.h`).
#[repr(C)]
pub struct XenconsInterface {
    /// Input ring (to the guest).
    pub input: [u8; 1024],
    /// Output ring (from the guest).
    pub output: [u8; 2048],
    /// Input consumer.
    pub in_cons: u32,
    /// Input producer.
    pub in_prod: u32,
    /// Output consumer (xenconsoled).
    pub out_cons: u32,
    /// Output producer (us).
    pub out_prod: u32,
}

const _: () = {
    assert!(offset_of!(XenconsInterface, output) == 1024);
    assert!(offset_of!(XenconsInterface, in_cons) == 3072);
    assert!(offset_of!(XenconsInterface, out_cons) == 3080);
    assert!(offset_of!(XenconsInterface, out_prod) == 3084);
    assert!(size_of::<XenconsInterface>() == 3088);
};

/// `struct mmu_update`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MmuUpdate {
    /// Machine address of the entry, with the command in its low bits.
    pub ptr: u64,
    /// The new entry.
    pub val: u64,
}

const _: () = assert!(size_of::<MmuUpdate>() == 16);

/// `struct xen_memory_reservation`.
#[repr(C)]
pub struct MemoryReservation {
    /// `XEN_GUEST_HANDLE(xen_pfn_t)`: the gpfns in, the mfns out (PV).
    pub extent_start: u64,
    /// Entries in the list.
    pub nr_extents: u64,
    /// Pages per extent, log 2.
    pub extent_order: u32,
    /// `XENMEMF_*`.
    pub mem_flags: u32,
    /// The domain.
    pub domid: u16,
}

const _: () = {
    assert!(size_of::<MemoryReservation>() == 32);
    assert!(offset_of!(MemoryReservation, nr_extents) == 8);
    assert!(offset_of!(MemoryReservation, extent_order) == 16);
    assert!(offset_of!(MemoryReservation, mem_flags) == 20);
    assert!(offset_of!(MemoryReservation, domid) == 24);
};
