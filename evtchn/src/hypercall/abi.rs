//! `#[repr(C)]` mirrors of Xen 4.17's public interface for the hypercall
//! backends (x86-64 layout): hypercall numbers (`xen.h`), the event-channel
//! operations (`event_channel.h`), the scheduler operations a kernel blocks
//! and shuts down with (`sched.h`), and the 2-level event-channel words of
//! `struct shared_info` / `struct vcpu_info` (`xen.h`,
//! `arch-x86/xen-x86_64.h`).
//!
//! Sizes and offsets are asserted below at compile time and pinned by tests
//! against the installed Xen 4.17 headers (Debian's `libxen-dev`).
//! Explicit padding fields replace the compiler's implicit padding so that
//! every byte handed to Xen is initialised.

// The fields mirror the C headers one for one and keep their C names; the
// header each struct comes from is its documentation.
#![allow(missing_docs)]

use core::mem::{offset_of, size_of};

use xen_sys::{domid_t, evtchn_port_t};

// ---- hypercall numbers (xen.h) ----

/// `__HYPERVISOR_set_timer_op`.
pub const HYPERVISOR_SET_TIMER_OP: u32 = 15;
/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: u32 = 17;
/// `__HYPERVISOR_grant_table_op`.
pub const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
/// `__HYPERVISOR_sched_op` (the "new" one, `int cmd, void *arg`).
pub const HYPERVISOR_SCHED_OP: u32 = 29;
/// `__HYPERVISOR_event_channel_op` (the "new" one, `int cmd, void *arg`).
pub const HYPERVISOR_EVENT_CHANNEL_OP: u32 = 32;
/// `__HYPERVISOR_domctl`.
pub const HYPERVISOR_DOMCTL: u32 = 36;

/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;

/// `DOMID_SELF`.
pub const DOMID_SELF: domid_t = 0x7FF0;

/// `VIRQ_TIMER`: the kernel's one-shot timer (`set_timer_op`).
pub const VIRQ_TIMER: u32 = 0;

// ---- event channels (event_channel.h) ----

/// `EVTCHNOP_bind_interdomain`.
pub const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
/// `EVTCHNOP_bind_virq`.
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// `EVTCHNOP_close`.
pub const EVTCHNOP_CLOSE: u64 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u64 = 4;
/// `EVTCHNOP_alloc_unbound`.
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
/// `EVTCHNOP_unmask`.
pub const EVTCHNOP_UNMASK: u64 = 9;

/// ```c
/// struct evtchn_alloc_unbound {
///     domid_t dom, remote_dom;    /* IN */
///     evtchn_port_t port;         /* OUT */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    pub dom: domid_t,
    pub remote_dom: domid_t,
    pub port: evtchn_port_t,
}

/// ```c
/// struct evtchn_bind_interdomain {
///     domid_t remote_dom;         /* IN */
///     evtchn_port_t remote_port;  /* IN */
///     evtchn_port_t local_port;   /* OUT */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: domid_t,
    pub pad: u16,
    pub remote_port: evtchn_port_t,
    pub local_port: evtchn_port_t,
}

/// ```c
/// struct evtchn_bind_virq {
///     uint32_t virq;              /* IN: enum virq */
///     uint32_t vcpu;              /* IN */
///     evtchn_port_t port;         /* OUT */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    pub port: evtchn_port_t,
}

/// `struct evtchn_close`, `struct evtchn_send` and `struct evtchn_unmask`
/// are all this:
///
/// ```c
/// struct evtchn_close { evtchn_port_t port; };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EvtchnPort {
    pub port: evtchn_port_t,
}

const _: () = {
    assert!(size_of::<EvtchnAllocUnbound>() == 8);
    assert!(offset_of!(EvtchnAllocUnbound, remote_dom) == 2);
    assert!(offset_of!(EvtchnAllocUnbound, port) == 4);
    assert!(size_of::<EvtchnBindInterdomain>() == 12);
    assert!(offset_of!(EvtchnBindInterdomain, remote_port) == 4);
    assert!(offset_of!(EvtchnBindInterdomain, local_port) == 8);
    assert!(size_of::<EvtchnBindVirq>() == 12);
    assert!(offset_of!(EvtchnBindVirq, vcpu) == 4);
    assert!(offset_of!(EvtchnBindVirq, port) == 8);
    assert!(size_of::<EvtchnPort>() == 4);
};

// ---- scheduler (sched.h) ----

/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_block`: sleep until an event is pending (clears the vCPU's
/// upcall mask, so a kernel waiting with upcalls masked needs an upcall
/// handler).
pub const SCHEDOP_BLOCK: u64 = 1;
/// `SCHEDOP_shutdown` with a `struct sched_shutdown`.
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// `SCHEDOP_poll` with a `struct sched_poll` (at most 128 ports).
pub const SCHEDOP_POLL: u64 = 3;

/// `SHUTDOWN_poweroff`.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_crash`.
pub const SHUTDOWN_CRASH: u32 = 3;

/// ```c
/// struct sched_shutdown {
///     unsigned int reason; /* SHUTDOWN_* => enum sched_shutdown_reason */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedShutdown {
    pub reason: u32,
}

/// ```c
/// struct sched_poll {
///     XEN_GUEST_HANDLE(evtchn_port_t) ports;
///     unsigned int nr_ports;
///     uint64_t timeout;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedPoll {
    pub ports: *mut evtchn_port_t,
    pub nr_ports: u32,
    pub pad: u32,
    pub timeout: u64,
}

const _: () = {
    assert!(size_of::<SchedShutdown>() == 4);
    assert!(size_of::<SchedPoll>() == 24);
    assert!(offset_of!(SchedPoll, nr_ports) == 8);
    assert!(offset_of!(SchedPoll, timeout) == 16);
};

// ---- shared_info and vcpu_info (xen.h, x86-64) ----

/// `xen_ulong_t` on x86-64: one word of the 2-level bitmaps.
pub type XenUlong = u64;

/// Bits per `xen_ulong_t`.
pub const BITS_PER_XEN_ULONG: u32 = XenUlong::BITS;

/// `EVTCHN_2L_NR_CHANNELS`: ports of the 2-level ABI (a selector bit per
/// bitmap word, a bit per port): 64 × 64 = 4096 on x86-64.
pub const EVTCHN_2L_NR_CHANNELS: u32 = BITS_PER_XEN_ULONG * BITS_PER_XEN_ULONG;

/// `XEN_LEGACY_MAX_VCPUS` (x86): `vcpu_info` slots in `shared_info`.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;

/// ```c
/// struct vcpu_time_info {
///     uint32_t version;
///     uint32_t pad0;
///     uint64_t tsc_timestamp;
///     uint64_t system_time;
///     uint32_t tsc_to_system_mul;
///     int8_t   tsc_shift;
///     uint8_t  flags;
///     uint8_t  pad1[2];
/// }; /* 32 bytes */
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub pad1: [u8; 2],
}

/// `struct arch_vcpu_info` of `arch-x86/xen-x86_64.h`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArchVcpuInfo {
    pub cr2: u64,
    pub pad: u64,
}

/// ```c
/// struct vcpu_info {
///     uint8_t evtchn_upcall_pending;
///     uint8_t evtchn_upcall_mask;
///     xen_ulong_t evtchn_pending_sel;
///     struct arch_vcpu_info arch;
///     vcpu_time_info_t time;
/// }; /* 64 bytes (x86) */
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub pad: [u8; 6],
    pub evtchn_pending_sel: XenUlong,
    pub arch: ArchVcpuInfo,
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` of `arch-x86/xen.h` (x86-64).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ArchSharedInfo {
    pub max_pfn: u64,
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    pub p2m_cr3: u64,
    pub p2m_vaddr: u64,
    pub p2m_generation: u64,
}

/// ```c
/// struct shared_info {
///     struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
///     xen_ulong_t evtchn_pending[sizeof(xen_ulong_t) * 8];
///     xen_ulong_t evtchn_mask[sizeof(xen_ulong_t) * 8];
///     uint32_t wc_version;
///     uint32_t wc_sec;
///     uint32_t wc_nsec;
///     uint32_t wc_sec_hi;
///     struct arch_shared_info arch;
/// };
/// ```
///
/// For layout only: Xen writes the page at any time, so the backend never
/// makes a Rust reference to it; it reaches single words as atomics at the
/// offsets this type gives.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    pub evtchn_pending: [XenUlong; BITS_PER_XEN_ULONG as usize],
    pub evtchn_mask: [XenUlong; BITS_PER_XEN_ULONG as usize],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
    pub arch: ArchSharedInfo,
}

/// Offset of vCPU 0's `evtchn_upcall_pending` in the shared_info page.
pub const OFFSET_UPCALL_PENDING: usize =
    offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, evtchn_upcall_pending);
/// Offset of vCPU 0's `evtchn_upcall_mask`.
pub const OFFSET_UPCALL_MASK: usize =
    offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, evtchn_upcall_mask);
/// Offset of vCPU 0's `evtchn_pending_sel`.
pub const OFFSET_PENDING_SEL: usize =
    offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, evtchn_pending_sel);
/// Offset of vCPU 0's `vcpu_time_info`.
pub const OFFSET_VCPU_TIME: usize = offset_of!(SharedInfo, vcpu_info) + offset_of!(VcpuInfo, time);
/// Offset of `evtchn_pending[0]`.
pub const OFFSET_EVTCHN_PENDING: usize = offset_of!(SharedInfo, evtchn_pending);
/// Offset of `evtchn_mask[0]`.
pub const OFFSET_EVTCHN_MASK: usize = offset_of!(SharedInfo, evtchn_mask);

const _: () = {
    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(offset_of!(VcpuTimeInfo, system_time) == 16);
    assert!(offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 24);
    assert!(offset_of!(VcpuTimeInfo, tsc_shift) == 28);
    assert!(size_of::<ArchVcpuInfo>() == 16);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, arch) == 16);
    assert!(offset_of!(VcpuInfo, time) == 32);
    assert!(size_of::<ArchSharedInfo>() == 48);
    assert!(OFFSET_EVTCHN_PENDING == 2048);
    assert!(OFFSET_EVTCHN_MASK == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, arch) == 3088);
    assert!(size_of::<SharedInfo>() == 3136);
    // The page holds it; the words the backend touches are 8-aligned in it.
    assert!(size_of::<SharedInfo>() <= 4096);
    assert!(OFFSET_PENDING_SEL % 8 == 0);
    assert!(EVTCHN_2L_NR_CHANNELS == 4096);
};

#[cfg(test)]
mod tests;
