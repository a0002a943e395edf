//! `#[repr(C)]` mirrors of the kernel and hypervisor structures this crate
//! passes to devices, with their request numbers.
//!
//! * Linux `include/uapi/xen/gntdev.h` and `xen/privcmd.h` (x86-64 layout):
//!   pinned by tests that compile a C program against the installed headers.
//! * Xen 4.17's public `sysctl.h`/`domctl.h` (`XEN_SYSCTL_getdomaininfolist`):
//!   pinned by a test against the headers of Debian's `libxen-dev` 4.17 when
//!   `XEN_TOOLS_INCLUDE_DIR` points at them.
//! * Xen 4.17's `domctl.h` (`XEN_DOMCTL_getdomaininfo`) and `grant_table.h`
//!   (`GNTTABOP_map/unmap_grant_ref`), for the hypercall backends: pinned
//!   against the same headers.
//!
//! Explicit padding fields replace the compiler's implicit padding so that
//! every byte of every mirror is initialised.

// The fields mirror the C headers one for one and keep their C names; the
// header each struct comes from is its documentation.
#![allow(missing_docs)]

use core::mem::{offset_of, size_of};

use xen_sys::{domid_t, xen_domain_handle_t, xen_pfn_t};

pub use evtchn::sys::{ioc, IOC_NONE};

/// ```c
/// struct ioctl_gntdev_grant_ref {
///     __u32 domid;
///     __u32 ref;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlGntdevGrantRef {
    pub domid: u32,
    pub r#ref: u32,
}

/// For one grant (`count == 1`, `refs[1]`):
///
/// ```c
/// struct ioctl_gntdev_map_grant_ref {
///     __u32 count;
///     __u32 pad;
///     __u64 index;   /* OUT: the offset to mmap() */
///     struct ioctl_gntdev_grant_ref refs[1];
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlGntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
    pub refs: [IoctlGntdevGrantRef; 1],
}

/// ```c
/// struct ioctl_gntdev_unmap_grant_ref {
///     __u64 index;
///     __u32 count;
///     __u32 pad;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlGntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// ```c
/// struct privcmd_hypercall {
///     __u64 op;
///     __u64 arg[5];
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrivcmdHypercall {
    pub op: u64,
    pub arg: [u64; 5],
}

/// ```c
/// struct privcmd_mmapbatch_v2 {
///     unsigned int num;      /* number of pages to populate */
///     domid_t dom;           /* target domain */
///     __u64 addr;            /* virtual address */
///     const xen_pfn_t *arr;  /* array of mfns */
///     int *err;              /* array of error codes */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivcmdMmapbatchV2 {
    pub num: u32,
    pub dom: domid_t,
    pub pad: u16,
    pub addr: u64,
    pub arr: *const xen_pfn_t,
    pub err: *mut i32,
}

const _: () = {
    assert!(size_of::<IoctlGntdevGrantRef>() == 8);
    assert!(size_of::<IoctlGntdevMapGrantRef>() == 24);
    assert!(offset_of!(IoctlGntdevMapGrantRef, index) == 8);
    assert!(offset_of!(IoctlGntdevMapGrantRef, refs) == 16);
    assert!(size_of::<IoctlGntdevUnmapGrantRef>() == 16);
    assert!(size_of::<PrivcmdHypercall>() == 48);
    assert!(size_of::<PrivcmdMmapbatchV2>() == 32);
    assert!(offset_of!(PrivcmdMmapbatchV2, dom) == 4);
    assert!(offset_of!(PrivcmdMmapbatchV2, addr) == 8);
    assert!(offset_of!(PrivcmdMmapbatchV2, arr) == 16);
    assert!(offset_of!(PrivcmdMmapbatchV2, err) == 24);
};

/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub const fn ioctl_gntdev_map_grant_ref() -> u32 {
    ioc(IOC_NONE, b'G', 0, size_of::<IoctlGntdevMapGrantRef>())
}
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub const fn ioctl_gntdev_unmap_grant_ref() -> u32 {
    ioc(IOC_NONE, b'G', 1, size_of::<IoctlGntdevUnmapGrantRef>())
}
/// `IOCTL_PRIVCMD_HYPERCALL`: returns the hypercall's result.
pub const fn ioctl_privcmd_hypercall() -> u32 {
    ioc(IOC_NONE, b'P', 0, size_of::<PrivcmdHypercall>())
}
/// `IOCTL_PRIVCMD_MMAPBATCH_V2`.
pub const fn ioctl_privcmd_mmapbatch_v2() -> u32 {
    ioc(IOC_NONE, b'P', 4, size_of::<PrivcmdMmapbatchV2>())
}

// ---- Xen 4.17 public interface (sysctl.h, domctl.h, xen.h) ----

/// `__HYPERVISOR_sysctl`.
pub const HYPERVISOR_SYSCTL: u64 = 35;
/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
/// `XENVER_version`: returns `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_SYSCTL_getdomaininfolist`.
pub const XEN_SYSCTL_GETDOMAININFOLIST: u32 = 6;
/// `DOMID_FIRST_RESERVED`: ids from here up are not real domains (defined
/// once, in `xenring`).
pub const DOMID_FIRST_RESERVED: domid_t = xenring::DOMID_FIRST_RESERVED;

/// `XEN_DOMINF_dying` (`1U<<0` in domctl.h).
pub const XEN_DOMINF_DYING: u32 = 1;
/// `XEN_DOMINF_shutdown`.
pub const XEN_DOMINF_SHUTDOWN: u32 = 1 << 2;
/// `XEN_DOMINF_shutdownshift`.
pub const XEN_DOMINF_SHUTDOWNSHIFT: u32 = 16;
/// `XEN_DOMINF_shutdownmask`.
pub const XEN_DOMINF_SHUTDOWNMASK: u32 = 255;

/// Xen 4.17, x86 (`struct xen_arch_domainconfig` of `arch-x86/xen.h` is
/// `uint32_t emulation_flags; uint32_t misc_flags;`):
///
/// ```c
/// struct xen_domctl_getdomaininfo {
///     domid_t  domain;
///     uint16_t pad1;
///     uint32_t flags;              /* XEN_DOMINF_* */
///     uint64_aligned_t tot_pages;
///     uint64_aligned_t max_pages;
///     uint64_aligned_t outstanding_pages;
///     uint64_aligned_t shr_pages;
///     uint64_aligned_t paged_pages;
///     uint64_aligned_t shared_info_frame;
///     uint64_aligned_t cpu_time;
///     uint32_t nr_online_vcpus;
///     uint32_t max_vcpu_id;
///     uint32_t ssidref;
///     xen_domain_handle_t handle;
///     uint32_t cpupool;
///     uint8_t gpaddr_bits;
///     uint8_t pad2[7];
///     struct xen_arch_domainconfig arch_config;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XenDomctlGetdomaininfo {
    pub domain: domid_t,
    pub pad1: u16,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: xen_domain_handle_t,
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    pub emulation_flags: u32,
    pub misc_flags: u32,
}

/// ```c
/// struct xen_sysctl_getdomaininfolist {
///     domid_t               first_domain;
///     uint32_t              max_domains;
///     XEN_GUEST_HANDLE_64(xen_domctl_getdomaininfo_t) buffer;
///     uint32_t              num_domains;   /* OUT */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XenSysctlGetdomaininfolist {
    pub first_domain: domid_t,
    pub pad1: u16,
    pub max_domains: u32,
    pub buffer: u64,
    pub num_domains: u32,
    pub pad2: u32,
}

/// `struct xen_sysctl` specialised to its `getdomaininfolist` member (the
/// union `u` is 128 bytes, 8-aligned):
///
/// ```c
/// struct xen_sysctl {
///     uint32_t cmd;
///     uint32_t interface_version; /* XEN_SYSCTL_INTERFACE_VERSION */
///     union {
///         struct xen_sysctl_getdomaininfolist getdomaininfolist;
///         /* ... */
///         uint8_t pad[128];
///     } u;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenSysctlGetdomaininfolistOp {
    pub cmd: u32,
    pub interface_version: u32,
    pub getdomaininfolist: XenSysctlGetdomaininfolist,
    pub pad: [u8; 128 - size_of::<XenSysctlGetdomaininfolist>()],
}

const _: () = {
    assert!(size_of::<XenDomctlGetdomaininfo>() == 112);
    assert!(offset_of!(XenDomctlGetdomaininfo, flags) == 4);
    assert!(offset_of!(XenDomctlGetdomaininfo, handle) == 76);
    assert!(offset_of!(XenDomctlGetdomaininfo, cpupool) == 92);
    assert!(offset_of!(XenDomctlGetdomaininfo, emulation_flags) == 104);
    assert!(size_of::<XenSysctlGetdomaininfolist>() == 24);
    assert!(offset_of!(XenSysctlGetdomaininfolist, buffer) == 8);
    assert!(offset_of!(XenSysctlGetdomaininfolist, num_domains) == 16);
    assert!(size_of::<XenSysctlGetdomaininfolistOp>() == 136);
    assert!(offset_of!(XenSysctlGetdomaininfolistOp, getdomaininfolist) == 8);
};

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17 (a stub domain may not use
/// sysctl; it asks with domctl).
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_DOMCTL_getdomaininfo`: in Xen 4.17 it answers for the first domain
/// whose id is at least the one asked (Xen 4.18 made it exact).
pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;

/// `struct xen_domctl` specialised to its `getdomaininfo` member (the
/// union `u` is 128 bytes, 8-aligned):
///
/// ```c
/// struct xen_domctl {
///     uint32_t cmd;
///     uint32_t interface_version; /* XEN_DOMCTL_INTERFACE_VERSION */
///     domid_t  domain;
///     uint16_t _pad[3];
///     union {
///         struct xen_domctl_getdomaininfo getdomaininfo;
///         /* ... */
///         uint8_t pad[128];
///     } u;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenDomctlGetdomaininfoOp {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: domid_t,
    pub pad1: [u16; 3],
    pub getdomaininfo: XenDomctlGetdomaininfo,
    pub pad2: [u8; 128 - size_of::<XenDomctlGetdomaininfo>()],
}

const _: () = {
    assert!(size_of::<XenDomctlGetdomaininfoOp>() == 144);
    assert!(offset_of!(XenDomctlGetdomaininfoOp, domain) == 8);
    assert!(offset_of!(XenDomctlGetdomaininfoOp, getdomaininfo) == 16);
};

// ---- Xen 4.17 grant_table.h (GNTTABOP_map/unmap_grant_ref) ----

/// `GNTTABOP_map_grant_ref`.
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
/// `GNTTABOP_unmap_grant_ref`.
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
/// `GNTMAP_host_map`: map at `host_addr`, a virtual address of the caller.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTST_okay`.
pub const GNTST_OKAY: i16 = 0;

/// ```c
/// struct gnttab_map_grant_ref {
///     uint64_t host_addr;      /* IN */
///     uint32_t flags;          /* IN: GNTMAP_* */
///     grant_ref_t ref;         /* IN */
///     domid_t  dom;            /* IN */
///     int16_t  status;         /* OUT: GNTST_* */
///     grant_handle_t handle;   /* OUT */
///     uint64_t dev_bus_addr;   /* OUT */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GnttabMapGrantRef {
    pub host_addr: u64,
    pub flags: u32,
    pub r#ref: u32,
    pub dom: domid_t,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}

/// ```c
/// struct gnttab_unmap_grant_ref {
///     uint64_t host_addr;      /* IN */
///     uint64_t dev_bus_addr;   /* IN */
///     grant_handle_t handle;   /* IN */
///     int16_t  status;         /* OUT: GNTST_* */
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    pub status: i16,
    pub pad: u16,
}

const _: () = {
    assert!(size_of::<GnttabMapGrantRef>() == 32);
    assert!(offset_of!(GnttabMapGrantRef, flags) == 8);
    assert!(offset_of!(GnttabMapGrantRef, r#ref) == 12);
    assert!(offset_of!(GnttabMapGrantRef, dom) == 16);
    assert!(offset_of!(GnttabMapGrantRef, status) == 18);
    assert!(offset_of!(GnttabMapGrantRef, handle) == 20);
    assert!(offset_of!(GnttabMapGrantRef, dev_bus_addr) == 24);
    assert!(size_of::<GnttabUnmapGrantRef>() == 24);
    assert!(offset_of!(GnttabUnmapGrantRef, handle) == 16);
    assert!(offset_of!(GnttabUnmapGrantRef, status) == 20);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cprobe;
    use crate::testskip::{skip, Missing};

    /// Compares `ours` with what `header` says, for the test `test`.
    fn compare(test: &str, header: &str, ours: &[(&str, u64)]) {
        let exprs: Vec<(&str, &str)> = ours.iter().map(|(n, _)| (*n, *n)).collect();
        let theirs = match cprobe::probe(header, &exprs) {
            Ok(values) => values,
            Err(reason) => {
                skip(Missing::Tool, test, &reason);
                return;
            }
        };
        for ((name, ours), theirs) in ours.iter().zip(theirs) {
            assert_eq!(*ours, theirs, "{name}");
        }
    }

    #[test]
    fn test_gntdev_ioctl_numbers_and_sizes_kernel_header_match() {
        compare(
            "test_gntdev_ioctl_numbers_and_sizes_kernel_header_match",
            "xen/gntdev.h",
            &[
                (
                    "IOCTL_GNTDEV_MAP_GRANT_REF",
                    u64::from(ioctl_gntdev_map_grant_ref()),
                ),
                (
                    "IOCTL_GNTDEV_UNMAP_GRANT_REF",
                    u64::from(ioctl_gntdev_unmap_grant_ref()),
                ),
                (
                    "sizeof(struct ioctl_gntdev_grant_ref)",
                    size_of::<IoctlGntdevGrantRef>() as u64,
                ),
                (
                    "sizeof(struct ioctl_gntdev_map_grant_ref)",
                    size_of::<IoctlGntdevMapGrantRef>() as u64,
                ),
                ("offsetof(struct ioctl_gntdev_map_grant_ref, index)", 8),
                ("offsetof(struct ioctl_gntdev_map_grant_ref, refs)", 16),
                (
                    "sizeof(struct ioctl_gntdev_unmap_grant_ref)",
                    size_of::<IoctlGntdevUnmapGrantRef>() as u64,
                ),
            ],
        );
    }

    #[test]
    fn test_privcmd_ioctl_numbers_and_sizes_kernel_header_match() {
        compare(
            "test_privcmd_ioctl_numbers_and_sizes_kernel_header_match",
            "xen/privcmd.h",
            &[
                (
                    "IOCTL_PRIVCMD_HYPERCALL",
                    u64::from(ioctl_privcmd_hypercall()),
                ),
                (
                    "IOCTL_PRIVCMD_MMAPBATCH_V2",
                    u64::from(ioctl_privcmd_mmapbatch_v2()),
                ),
                (
                    "sizeof(struct privcmd_hypercall)",
                    size_of::<PrivcmdHypercall>() as u64,
                ),
                (
                    "sizeof(struct privcmd_mmapbatch_v2)",
                    size_of::<PrivcmdMmapbatchV2>() as u64,
                ),
                (
                    "offsetof(struct privcmd_mmapbatch_v2, dom)",
                    offset_of!(PrivcmdMmapbatchV2, dom) as u64,
                ),
                (
                    "offsetof(struct privcmd_mmapbatch_v2, addr)",
                    offset_of!(PrivcmdMmapbatchV2, addr) as u64,
                ),
                (
                    "offsetof(struct privcmd_mmapbatch_v2, arr)",
                    offset_of!(PrivcmdMmapbatchV2, arr) as u64,
                ),
                (
                    "offsetof(struct privcmd_mmapbatch_v2, err)",
                    offset_of!(PrivcmdMmapbatchV2, err) as u64,
                ),
            ],
        );
    }

    /// Where Debian's libxen-dev puts Xen's public headers (`xen/sysctl.h`).
    const DEBIAN_XEN_INCLUDE_DIR: &str = "/usr/include";

    /// The directory holding `xen/sysctl.h`: `var` (`XEN_TOOLS_INCLUDE_DIR`)
    /// when set, which then must hold the headers, else `debian` when it has
    /// them, else `None`.
    fn xen_include_dir(
        var: Option<std::ffi::OsString>,
        debian: &std::path::Path,
    ) -> Option<std::path::PathBuf> {
        match var {
            Some(dir) => Some(dir.into()),
            None => debian
                .join("xen/sysctl.h")
                .is_file()
                .then(|| debian.to_path_buf()),
        }
    }

    #[test]
    fn test_xen_include_dir_variable_else_debian_dir_with_header() {
        let debian = tempfile::tempdir().expect("tempdir");
        let with = |var: Option<&str>| xen_include_dir(var.map(Into::into), debian.path());
        assert_eq!(with(None), None, "no xen/sysctl.h there yet");
        std::fs::create_dir(debian.path().join("xen")).expect("mkdir");
        std::fs::write(debian.path().join("xen/sysctl.h"), "").expect("write");
        assert_eq!(with(None), Some(debian.path().to_path_buf()));
        assert_eq!(
            with(Some("/opt/xen/include")),
            Some(std::path::PathBuf::from("/opt/xen/include")),
            "the variable wins"
        );
    }

    /// Pins the Xen 4.17 mirrors against Debian's libxen-dev 4.17 headers:
    /// `XEN_TOOLS_INCLUDE_DIR=<dir containing xen/domctl.h>`, by default
    /// Debian's `/usr/include` (scripts/install-test-deps.sh installs
    /// libxen-dev; under `XSL_REQUIRE_ALL=1` its absence is a failure).
    #[test]
    fn test_xen_sysctl_layout_xen_417_headers_match() {
        let Some(dir) = xen_include_dir(
            std::env::var_os("XEN_TOOLS_INCLUDE_DIR"),
            std::path::Path::new(DEBIAN_XEN_INCLUDE_DIR),
        ) else {
            skip(
                Missing::Tool,
                "test_xen_sysctl_layout_xen_417_headers_match",
                &format!(
                    "no {DEBIAN_XEN_INCLUDE_DIR}/xen/sysctl.h and XEN_TOOLS_INCLUDE_DIR unset \
                     (Xen 4.17 public headers: apt-get install libxen-dev)"
                ),
            );
            return;
        };
        let ours: &[(&str, u64)] = &[
            (
                "XEN_SYSCTL_INTERFACE_VERSION",
                u64::from(XEN_SYSCTL_INTERFACE_VERSION),
            ),
            (
                "XEN_SYSCTL_getdomaininfolist",
                u64::from(XEN_SYSCTL_GETDOMAININFOLIST),
            ),
            ("__HYPERVISOR_sysctl", HYPERVISOR_SYSCTL),
            ("__HYPERVISOR_xen_version", HYPERVISOR_XEN_VERSION),
            ("XENVER_version", XENVER_VERSION),
            ("DOMID_FIRST_RESERVED", u64::from(DOMID_FIRST_RESERVED)),
            ("XEN_DOMINF_dying", u64::from(XEN_DOMINF_DYING)),
            ("XEN_DOMINF_shutdown", u64::from(XEN_DOMINF_SHUTDOWN)),
            (
                "XEN_DOMINF_shutdownshift",
                u64::from(XEN_DOMINF_SHUTDOWNSHIFT),
            ),
            (
                "XEN_DOMINF_shutdownmask",
                u64::from(XEN_DOMINF_SHUTDOWNMASK),
            ),
            (
                "sizeof(struct xen_domctl_getdomaininfo)",
                size_of::<XenDomctlGetdomaininfo>() as u64,
            ),
            (
                "offsetof(struct xen_domctl_getdomaininfo, flags)",
                offset_of!(XenDomctlGetdomaininfo, flags) as u64,
            ),
            (
                "offsetof(struct xen_domctl_getdomaininfo, handle)",
                offset_of!(XenDomctlGetdomaininfo, handle) as u64,
            ),
            (
                "offsetof(struct xen_domctl_getdomaininfo, gpaddr_bits)",
                offset_of!(XenDomctlGetdomaininfo, gpaddr_bits) as u64,
            ),
            (
                "offsetof(struct xen_domctl_getdomaininfo, arch_config)",
                offset_of!(XenDomctlGetdomaininfo, emulation_flags) as u64,
            ),
            (
                "sizeof(struct xen_sysctl_getdomaininfolist)",
                size_of::<XenSysctlGetdomaininfolist>() as u64,
            ),
            (
                "offsetof(struct xen_sysctl_getdomaininfolist, max_domains)",
                offset_of!(XenSysctlGetdomaininfolist, max_domains) as u64,
            ),
            (
                "offsetof(struct xen_sysctl_getdomaininfolist, buffer)",
                offset_of!(XenSysctlGetdomaininfolist, buffer) as u64,
            ),
            (
                "offsetof(struct xen_sysctl_getdomaininfolist, num_domains)",
                offset_of!(XenSysctlGetdomaininfolist, num_domains) as u64,
            ),
            (
                "sizeof(struct xen_sysctl)",
                size_of::<XenSysctlGetdomaininfolistOp>() as u64,
            ),
            (
                "offsetof(struct xen_sysctl, u)",
                offset_of!(XenSysctlGetdomaininfolistOp, getdomaininfolist) as u64,
            ),
        ];
        let exprs: Vec<(&str, &str)> = ours.iter().map(|(n, _)| (*n, *n)).collect();
        let theirs = cprobe::probe_with(
            &[dir.as_path()],
            "#define __XEN_TOOLS__ 1\n#include <xen/xen.h>\n#include <xen/domctl.h>\n#include <xen/version.h>\n",
            "xen/sysctl.h",
            &exprs,
        )
        .unwrap_or_else(|reason| panic!("Xen's headers in {} are unusable: {reason}", dir.display()));
        for ((name, ours), theirs) in ours.iter().zip(theirs) {
            assert_eq!(*ours, theirs, "{name}");
        }
    }

    /// The hypercall backend's domctl and grant-table mirrors against the
    /// same Xen 4.17 headers.
    #[test]
    fn test_xen_domctl_and_grant_table_layout_xen_417_headers_match() {
        let test = "test_xen_domctl_and_grant_table_layout_xen_417_headers_match";
        let Some(dir) = xen_include_dir(
            std::env::var_os("XEN_TOOLS_INCLUDE_DIR"),
            std::path::Path::new(DEBIAN_XEN_INCLUDE_DIR),
        ) else {
            skip(
                Missing::Tool,
                test,
                &format!(
                    "no {DEBIAN_XEN_INCLUDE_DIR}/xen/sysctl.h and XEN_TOOLS_INCLUDE_DIR unset \
                     (Xen 4.17 public headers: apt-get install libxen-dev)"
                ),
            );
            return;
        };
        let ours: &[(&str, u64)] = &[
            (
                "XEN_DOMCTL_INTERFACE_VERSION",
                u64::from(XEN_DOMCTL_INTERFACE_VERSION),
            ),
            (
                "XEN_DOMCTL_getdomaininfo",
                u64::from(XEN_DOMCTL_GETDOMAININFO),
            ),
            (
                "sizeof(struct xen_domctl)",
                size_of::<XenDomctlGetdomaininfoOp>() as u64,
            ),
            (
                "offsetof(struct xen_domctl, domain)",
                offset_of!(XenDomctlGetdomaininfoOp, domain) as u64,
            ),
            (
                "offsetof(struct xen_domctl, u.getdomaininfo)",
                offset_of!(XenDomctlGetdomaininfoOp, getdomaininfo) as u64,
            ),
            ("GNTTABOP_map_grant_ref", GNTTABOP_MAP_GRANT_REF),
            ("GNTTABOP_unmap_grant_ref", GNTTABOP_UNMAP_GRANT_REF),
            ("GNTMAP_host_map", u64::from(GNTMAP_HOST_MAP)),
            ("GNTST_okay", 0),
            (
                "sizeof(struct gnttab_map_grant_ref)",
                size_of::<GnttabMapGrantRef>() as u64,
            ),
            (
                "offsetof(struct gnttab_map_grant_ref, flags)",
                offset_of!(GnttabMapGrantRef, flags) as u64,
            ),
            (
                "offsetof(struct gnttab_map_grant_ref, ref)",
                offset_of!(GnttabMapGrantRef, r#ref) as u64,
            ),
            (
                "offsetof(struct gnttab_map_grant_ref, dom)",
                offset_of!(GnttabMapGrantRef, dom) as u64,
            ),
            (
                "offsetof(struct gnttab_map_grant_ref, status)",
                offset_of!(GnttabMapGrantRef, status) as u64,
            ),
            (
                "offsetof(struct gnttab_map_grant_ref, handle)",
                offset_of!(GnttabMapGrantRef, handle) as u64,
            ),
            (
                "offsetof(struct gnttab_map_grant_ref, dev_bus_addr)",
                offset_of!(GnttabMapGrantRef, dev_bus_addr) as u64,
            ),
            (
                "sizeof(struct gnttab_unmap_grant_ref)",
                size_of::<GnttabUnmapGrantRef>() as u64,
            ),
            (
                "offsetof(struct gnttab_unmap_grant_ref, dev_bus_addr)",
                offset_of!(GnttabUnmapGrantRef, dev_bus_addr) as u64,
            ),
            (
                "offsetof(struct gnttab_unmap_grant_ref, handle)",
                offset_of!(GnttabUnmapGrantRef, handle) as u64,
            ),
            (
                "offsetof(struct gnttab_unmap_grant_ref, status)",
                offset_of!(GnttabUnmapGrantRef, status) as u64,
            ),
            ("sizeof(grant_handle_t)", 4),
            ("GNTST_general_error", (-1i64) as u64),
            ("GNTST_bad_gntref", (-3i64) as u64),
            ("GNTST_no_space", (-13i64) as u64),
        ];
        let exprs: Vec<(&str, &str)> = ours.iter().map(|(n, _)| (*n, *n)).collect();
        let theirs = cprobe::probe_with(
            &[dir.as_path()],
            "#define __XEN_TOOLS__ 1\n#include <xen/xen.h>\n#include <xen/domctl.h>\n",
            "xen/grant_table.h",
            &exprs,
        )
        .unwrap_or_else(|reason| {
            panic!("Xen's headers in {} are unusable: {reason}", dir.display())
        });
        for ((name, ours), theirs) in ours.iter().zip(theirs) {
            assert_eq!(*ours, theirs, "{name}");
        }
    }

    /// Every `GNTST_*` name the hypercall backend prints is the header's.
    #[test]
    fn test_grant_status_names_xen_417_headers_match() {
        let test = "test_grant_status_names_xen_417_headers_match";
        let Some(dir) = xen_include_dir(
            std::env::var_os("XEN_TOOLS_INCLUDE_DIR"),
            std::path::Path::new(DEBIAN_XEN_INCLUDE_DIR),
        ) else {
            skip(
                Missing::Tool,
                test,
                "no Xen 4.17 public headers (libxen-dev)",
            );
            return;
        };
        let named: Vec<(&str, i16)> = (-100..=100)
            .filter_map(|code| {
                crate::hypercall::GrantStatus(code)
                    .name()
                    .map(|n| (n, code))
            })
            .collect();
        assert_eq!(named.len(), 14, "GNTST_okay .. GNTST_no_space: {named:?}");
        let exprs: Vec<(&str, &str)> = named.iter().map(|(n, _)| (*n, *n)).collect();
        let theirs = cprobe::probe_with(
            &[dir.as_path()],
            "#define __XEN_TOOLS__ 1\n#include <xen/xen.h>\n",
            "xen/grant_table.h",
            &exprs,
        )
        .unwrap_or_else(|reason| {
            panic!("Xen's headers in {} are unusable: {reason}", dir.display())
        });
        for ((name, ours), theirs) in named.iter().zip(theirs) {
            // The probe prints (unsigned long long)(value): negative codes
            // come back as their 64-bit two's complement.
            assert_eq!(i64::from(*ours) as u64, theirs, "{name}");
        }
    }
}
