//! `#[repr(C)]` mirrors of the ioctl structures of Linux's `include/uapi/xen/evtchn.h`
//! and their request numbers.
//!
//! Every request is `_IOC(_IOC_NONE, 'E', n, sizeof(struct ...))`: direction
//! "none" even though the kernel reads the struct, which is how the header
//! defines them (and what a test below pins, so a wrong macro cannot slip in).

// The fields mirror the C headers one for one and keep their C names; the
// header each struct comes from is its documentation.
#![allow(missing_docs)]

use core::mem::size_of;

use xen_sys::domid_t;

/// `_IOC_NONE` of the generic Linux ioctl encoding (x86, arm, riscv).
pub const IOC_NONE: u32 = 0;

/// `_IOC(dir, type, nr, size)` of `asm-generic/ioctl.h`: direction in bits
/// 30–31, size in bits 16–29, type in bits 8–15, number in bits 0–7.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << 14), "ioctl argument too large for _IOC");
    // Cannot truncate: just asserted to fit in 14 bits.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as u32;
    (dir << 30) | (size << 16) | ((ty as u32) << 8) | nr as u32
}

/// ```c
/// struct ioctl_evtchn_bind_virq {
///     unsigned int virq;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnBindVirq {
    pub virq: u32,
}

/// ```c
/// struct ioctl_evtchn_bind_interdomain {
///     unsigned int remote_domain, remote_port;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

/// ```c
/// struct ioctl_evtchn_bind_unbound_port {
///     unsigned int remote_domain;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnBindUnboundPort {
    pub remote_domain: u32,
}

/// ```c
/// struct ioctl_evtchn_unbind {
///     unsigned int port;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnUnbind {
    pub port: u32,
}

/// ```c
/// struct ioctl_evtchn_notify {
///     unsigned int port;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnNotify {
    pub port: u32,
}

/// ```c
/// struct ioctl_evtchn_restrict_domid {
///     domid_t domid;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnRestrictDomid {
    pub domid: domid_t,
}

/// `IOCTL_EVTCHN_RESET` takes no argument (`_IOC(_IOC_NONE, 'E', 5, 0)`);
/// this empty type stands for it so every request goes through one path.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlEvtchnReset;

const _: () = {
    assert!(size_of::<IoctlEvtchnBindVirq>() == 4);
    assert!(size_of::<IoctlEvtchnBindInterdomain>() == 8);
    assert!(size_of::<IoctlEvtchnBindUnboundPort>() == 4);
    assert!(size_of::<IoctlEvtchnUnbind>() == 4);
    assert!(size_of::<IoctlEvtchnNotify>() == 4);
    assert!(size_of::<IoctlEvtchnRestrictDomid>() == 2);
    assert!(size_of::<IoctlEvtchnReset>() == 0);
};

/// `IOCTL_EVTCHN_BIND_VIRQ`: returns the new local port.
pub const fn ioctl_evtchn_bind_virq() -> u32 {
    ioc(IOC_NONE, b'E', 0, size_of::<IoctlEvtchnBindVirq>())
}
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: returns the new local port.
pub const fn ioctl_evtchn_bind_interdomain() -> u32 {
    ioc(IOC_NONE, b'E', 1, size_of::<IoctlEvtchnBindInterdomain>())
}
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: returns the new local port.
pub const fn ioctl_evtchn_bind_unbound_port() -> u32 {
    ioc(IOC_NONE, b'E', 2, size_of::<IoctlEvtchnBindUnboundPort>())
}
/// `IOCTL_EVTCHN_UNBIND`.
pub const fn ioctl_evtchn_unbind() -> u32 {
    ioc(IOC_NONE, b'E', 3, size_of::<IoctlEvtchnUnbind>())
}
/// `IOCTL_EVTCHN_NOTIFY`.
pub const fn ioctl_evtchn_notify() -> u32 {
    ioc(IOC_NONE, b'E', 4, size_of::<IoctlEvtchnNotify>())
}
/// `IOCTL_EVTCHN_RESET`: clears the pending ring and its overflow flag.
pub const fn ioctl_evtchn_reset() -> u32 {
    ioc(IOC_NONE, b'E', 5, size_of::<IoctlEvtchnReset>())
}
/// `IOCTL_EVTCHN_RESTRICT_DOMID`.
pub const fn ioctl_evtchn_restrict_domid() -> u32 {
    ioc(IOC_NONE, b'E', 6, size_of::<IoctlEvtchnRestrictDomid>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cprobe;

    #[test]
    fn test_ioc_known_encoding_matches_generic_macro() {
        // _IOC(_IOC_NONE, 'E', 1, 8) worked out by hand from asm-generic/ioctl.h.
        assert_eq!(ioc(IOC_NONE, b'E', 1, 8), 0x0008_4501);
    }

    #[test]
    fn test_ioc_direction_in_top_two_bits() {
        // _IOC(_IOC_READ | _IOC_WRITE, 'E', 1, 8): the direction field the
        // evtchn requests leave at zero is still encoded where the macro puts it.
        assert_eq!(ioc(3, b'E', 1, 8), 0xc008_4501);
        assert_eq!(ioc(1, 0, 0, 0), 0x4000_0000);
    }

    #[test]
    fn test_ioctl_numbers_kernel_header_match() {
        let ours = [
            ("IOCTL_EVTCHN_BIND_VIRQ", ioctl_evtchn_bind_virq()),
            (
                "IOCTL_EVTCHN_BIND_INTERDOMAIN",
                ioctl_evtchn_bind_interdomain(),
            ),
            (
                "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
                ioctl_evtchn_bind_unbound_port(),
            ),
            ("IOCTL_EVTCHN_UNBIND", ioctl_evtchn_unbind()),
            ("IOCTL_EVTCHN_NOTIFY", ioctl_evtchn_notify()),
            ("IOCTL_EVTCHN_RESET", ioctl_evtchn_reset()),
            ("IOCTL_EVTCHN_RESTRICT_DOMID", ioctl_evtchn_restrict_domid()),
        ];
        let exprs: Vec<(&str, &str)> = ours.iter().map(|(n, _)| (*n, *n)).collect();
        let theirs = match cprobe::probe("xen/evtchn.h", &exprs) {
            Ok(values) => values,
            Err(reason) => {
                crate::testskip::skip(
                    crate::testskip::Missing::Tool,
                    "test_ioctl_numbers_kernel_header_match",
                    &reason,
                );
                return;
            }
        };
        for ((name, ours), theirs) in ours.iter().zip(theirs) {
            assert_eq!(u64::from(*ours), theirs, "{name}");
        }
    }

    #[test]
    fn test_struct_sizes_kernel_header_match() {
        let ours = [
            (
                "sizeof(struct ioctl_evtchn_bind_virq)",
                size_of::<IoctlEvtchnBindVirq>(),
            ),
            (
                "sizeof(struct ioctl_evtchn_bind_interdomain)",
                size_of::<IoctlEvtchnBindInterdomain>(),
            ),
            (
                "sizeof(struct ioctl_evtchn_bind_unbound_port)",
                size_of::<IoctlEvtchnBindUnboundPort>(),
            ),
            (
                "sizeof(struct ioctl_evtchn_unbind)",
                size_of::<IoctlEvtchnUnbind>(),
            ),
            (
                "sizeof(struct ioctl_evtchn_notify)",
                size_of::<IoctlEvtchnNotify>(),
            ),
            (
                "sizeof(struct ioctl_evtchn_restrict_domid)",
                size_of::<IoctlEvtchnRestrictDomid>(),
            ),
        ];
        let exprs: Vec<(&str, &str)> = ours.iter().map(|(n, _)| (*n, *n)).collect();
        let theirs = match cprobe::probe("xen/evtchn.h", &exprs) {
            Ok(values) => values,
            Err(reason) => {
                crate::testskip::skip(
                    crate::testskip::Missing::Tool,
                    "test_struct_sizes_kernel_header_match",
                    &reason,
                );
                return;
            }
        };
        for ((name, ours), theirs) in ours.iter().zip(theirs) {
            assert_eq!(*ours as u64, theirs, "{name}");
        }
    }
}
