//! Mapping a foreign domain's xenstore page, and learning which domains exist.
//!
//! * [`PageMapper`]: map one page of another domain by grant reference (the
//!   normal way: grant [`GNTTAB_RESERVED_XENSTORE`] is the xenstore page) or
//!   by machine frame number (the fallback), and map dom0's own xenstore page.
//!   Each mapping is an owned [`ForeignPage`] that unmaps itself on `Drop` and
//!   hands out the [`xenring::RingPage`] accessor — the only way to touch the
//!   bytes, so no Rust reference ever points into memory a guest can write.
//! * `LinuxPageMapper` (feature `std`): the backend over `/dev/xen/gntdev`,
//!   `/dev/xen/privcmd`, and `/dev/xen/xsd_kva` or `/proc/xen/xsd_kva`.
//! * [`dominfo`]: the [`DomainInfoSource`] trait (which domains exist, which
//!   are dying or shut down) and (feature `std`) its privcmd backend for
//!   Xen 4.17.
//! * [`hypercall`]: both traits over Xen's hypercalls, for a kernel of its
//!   own (a xenstore stub domain), through [`evtchn::hypercall::Hypervisor`].
//!
//! Without its default `std` feature the crate is `no_std` + `alloc`: the
//! Linux backends and the `io::Error`/`PathBuf` error variants are absent.
//!
//! # Design
//!
//! The traits are object-safe and `Send`: the daemon chooses a backend at
//! start-up and keeps `Box<dyn PageMapper>` / `Box<dyn DomainInfoSource>`;
//! mappings come back as `Box<dyn ForeignPage>` so each backend keeps its own
//! unmapping logic (gntdev needs an ioctl after `munmap`, privcmd does not,
//! mock-xen unmaps a memfd). A mapping may outlive the mapper that made it.
//!
//! # What callers must guarantee
//!
//! Nothing: every `unsafe` operation (ioctl, mmap, munmap) is inside this
//! crate, and the page it maps is only reachable through [`RingPage`], whose
//! accesses are volatile/atomic and bounded. The other domain may write
//! anything into the page at any time; that is [`RingPage`]'s concern.

// Tests always have std (the harness needs it); the library has it only
// with the feature.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

use alloc::boxed::Box;
#[cfg(feature = "std")]
use alloc::string::String;
use core::fmt;
#[cfg(feature = "std")]
use std::io;
#[cfg(feature = "std")]
use std::path::PathBuf;

pub mod dominfo;
pub mod hypercall;
#[cfg(feature = "std")]
mod linux;
pub mod sys;

#[cfg(test)]
#[path = "../../evtchn/src/cprobe.rs"]
mod cprobe;
#[cfg(test)]
#[path = "../../evtchn/src/testskip.rs"]
mod testskip;

#[cfg(feature = "std")]
pub use dominfo::PrivcmdDomainInfo;
pub use dominfo::{DomainInfo, DomainInfoSource, ShutdownReason};
#[cfg(feature = "std")]
pub use linux::{DevicePaths, LinuxPageMapper};
pub use xenring::RingPage;

/// A domain id (`domid_t`).
pub type DomId = xen_sys::domid_t;

/// A grant reference (`grant_ref_t`).
pub type GrantRef = u32;

/// `GNTTAB_RESERVED_XENSTORE`: the grant reference of a guest's xenstore page.
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = 1;

/// The size of every page this crate maps.
pub const PAGE_SIZE: usize = xenring::page::PAGE_SIZE;

/// One mapped page of another domain (or dom0's own xenstore page). Unmaps
/// on drop.
pub trait ForeignPage: Send + fmt::Debug {
    /// The page, as the ring accessor.
    fn ring(&self) -> RingPage<'_>;
}

/// dom0's own xenstore ring and its event-channel port.
#[derive(Debug)]
pub struct LocalXenstore {
    /// The page (`xsd_kva`).
    pub page: Box<dyn ForeignPage>,
    /// dom0's end of the event channel (`xsd_port`), unbound: bind it with
    /// `EventChannel::bind_interdomain(0, port)`.
    pub port: evtchn::Port,
}

/// Maps foreign pages. Object-safe and `Send`.
pub trait PageMapper: Send {
    /// Maps grant `gref` of domain `domid` (read-write), e.g.
    /// [`GNTTAB_RESERVED_XENSTORE`].
    fn map_grant(&self, domid: DomId, gref: GrantRef) -> Result<Box<dyn ForeignPage>, Error>;

    /// Maps machine frame `mfn` of domain `domid` (read-write): the fallback
    /// for guests whose grant table is not set up, and the way to reach a
    /// ring whose mfn came from a migration stream.
    fn map_foreign(&self, domid: DomId, mfn: u64) -> Result<Box<dyn ForeignPage>, Error>;

    /// Maps dom0's own xenstore page and reads its port (used when the
    /// daemon runs in dom0 and serves dom0's kernel).
    fn map_local_xenstore(&self) -> Result<LocalXenstore, Error>;
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[cfg(feature = "std")]
    /// A device could not be opened (absent without Xen, or no permission).
    #[error("cannot open the device {path}")]
    DeviceOpen {
        /// The device path tried (the last one, when there are alternatives).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// A device request failed.
    #[error("{op} failed")]
    Ioctl {
        /// The request ("IOCTL_GNTDEV_MAP_GRANT_REF", ...).
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// `mmap` of a device failed.
    #[error("cannot map a page of {path}")]
    Mmap {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// The hypervisor refused to map one frame of a foreign domain (the
    /// per-page code from `privcmd_mmapbatch_v2.err`, as an errno).
    #[error("the hypervisor refused to map frame {mfn:#x} of domain {domid}")]
    ForeignFrame {
        /// The domain.
        domid: DomId,
        /// The frame.
        mfn: u64,
        /// The per-page error.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// The xenstore port file could not be read.
    #[error("cannot read the xenstore port from {path}")]
    XsdPortRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// The xenstore port file does not hold a decimal port number.
    #[error("{path} holds {text:?}, not a port number")]
    XsdPortParse {
        /// The file.
        path: PathBuf,
        /// What it held (at most 32 bytes of it).
        text: String,
    },
    #[cfg(feature = "std")]
    /// A hypercall buffer could not be set up.
    #[error("cannot allocate locked memory for hypercalls")]
    HypercallBuffer {
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// A hypercall through privcmd failed.
    #[error("hypercall {op} failed")]
    Hypercall {
        /// The hypercall ("sysctl getdomaininfolist", ...).
        op: &'static str,
        /// Why (the negated Xen error code).
        #[source]
        source: io::Error,
    },
    /// The hypervisor rejected our sysctl interface version: it is not the
    /// Xen version this backend was written for.
    #[error(
        "Xen {major}.{minor} rejected sysctl interface version {ours:#x} (this backend speaks Xen 4.17's)"
    )]
    UnsupportedXen {
        /// The hypervisor's major version (0 if unknown).
        major: u32,
        /// The hypervisor's minor version.
        minor: u32,
        /// The interface version we sent.
        ours: u32,
    },
    /// The hypervisor returned a domain count larger than the buffer.
    #[error("the hypervisor reported {reported} domains for a buffer of {capacity}")]
    BadDomainCount {
        /// Reported count.
        reported: u32,
        /// Buffer capacity.
        capacity: u32,
    },
    /// A hypercall of the hypercall backend failed as a whole (`op` names
    /// it: "GNTTABOP_map_grant_ref", "XEN_DOMCTL_getdomaininfo", ...).
    #[error("{op} failed: {errno}")]
    Xen {
        /// The operation.
        op: &'static str,
        /// Xen's error code.
        errno: evtchn::hypercall::XenErrno,
    },
    /// Xen refused to map a grant (`GNTST_*` status of the map operation).
    #[error("Xen refused to map grant {gref} of domain {domid}: {status}")]
    GrantMap {
        /// The granting domain.
        domid: DomId,
        /// The grant reference.
        gref: GrantRef,
        /// Xen's status.
        status: hypercall::GrantStatus,
    },
    /// Every page of the grant-mapping window is in use (or held back after
    /// a failed unmap).
    #[error("no free page in the grant-mapping window of {pages} pages")]
    WindowFull {
        /// The window's size in pages.
        pages: usize,
    },
    /// A grant-mapping window that is empty, not page-aligned or wraps
    /// around the address space.
    #[error("invalid grant-mapping window: {pages} pages at {base:#x}")]
    BadWindow {
        /// Its first address.
        base: usize,
        /// Its size in pages.
        pages: usize,
    },
    /// The backend cannot do this at all (e.g. mapping by frame number from
    /// a stub domain, which may only map grants).
    #[error("{op} is not supported by this backend")]
    Unsupported {
        /// The operation.
        op: &'static str,
    },
    /// The hypervisor rejected our domctl interface version: it is not the
    /// Xen version this backend was written for.
    #[error(
        "Xen {major}.{minor} rejected domctl interface version {ours:#x} (this backend speaks Xen 4.17's)"
    )]
    UnsupportedXenDomctl {
        /// The hypervisor's major version (0 if unknown).
        major: u32,
        /// The hypervisor's minor version.
        minor: u32,
        /// The interface version we sent.
        ours: u32,
    },
    /// Asked for the first domain from `asked` on, the hypervisor answered
    /// with a lower or reserved domain id.
    #[error("asked for a domain from id {asked} on, Xen answered with domain {returned}")]
    DomainOutOfOrder {
        /// The id asked from.
        asked: DomId,
        /// The id returned.
        returned: DomId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_traits_object_safe_and_send() {
        fn assert_send<T: Send + ?Sized>() {}
        assert_send::<Box<dyn PageMapper>>();
        assert_send::<Box<dyn ForeignPage>>();
        assert_send::<Box<dyn DomainInfoSource>>();
    }

    #[test]
    fn test_xenstore_grant_ref_is_one() {
        assert_eq!(GNTTAB_RESERVED_XENSTORE, 1);
    }
}
