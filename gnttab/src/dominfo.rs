//! Which domains exist, and which are dying or shut down.
//!
//! The daemon asks after every `VIRQ_DOM_EXC` (and at start-up) and compares
//! with the domains it knows: a domain that is gone, dying or shut down gets
//! its connection released and `@releaseDomain` fired.
//!
//! # Detecting domid reuse
//!
//! Xen 4.17 has no per-domain unique id (the `unique_id` counter of
//! `XEN_DOMCTL_get_domain_state` arrived in Xen 4.20). What it has is the
//! domain `handle`, the 16-byte UUID the toolstack sets at creation
//! (libxl: the guest's UUID). [`DomainInfo::handle`] carries it and
//! [`DomainInfo::unique_id`] is `None` on 4.17. A daemon can tell a reused
//! domid from the old domain when the handles differ; a domain rebuilt with
//! the same UUID *and* the same domid looks identical (xl allocates domids
//! increasing, so that needs a full wrap of the domid space in between).
//!
//! # The Linux backend: privcmd hypercalls
//!
//! [`PrivcmdDomainInfo`] issues `XEN_SYSCTL_getdomaininfolist` through
//! `IOCTL_PRIVCMD_HYPERCALL`, with Xen 4.17's `XEN_SYSCTL_INTERFACE_VERSION`
//! (0x15) and 4.17's `struct xen_domctl_getdomaininfo` (112 bytes on x86).
//! Xen checks the interface version and fails with `EACCES` on a mismatch,
//! which this backend reports as [`Error::UnsupportedXen`] with the
//! hypervisor's version — a hypervisor speaking another layout is detected,
//! never misread. Hypercall arguments must sit in memory that cannot be
//! paged out: the buffer is a mapping of `/dev/xen/hypercall` (Linux ≥ 4.18),
//! or anonymous `mlock`ed memory where that device is missing.

#[cfg(feature = "std")]
use core::fmt;
#[cfg(feature = "std")]
use std::ffi::c_void;
#[cfg(feature = "std")]
use std::io;
#[cfg(feature = "std")]
use std::num::NonZeroUsize;
#[cfg(feature = "std")]
use std::os::fd::{AsFd, AsRawFd};
#[cfg(feature = "std")]
use std::path::{Path, PathBuf};
#[cfg(feature = "std")]
use std::ptr::NonNull;

#[cfg(feature = "std")]
use nix::libc;
#[cfg(feature = "std")]
use nix::sys::mman::{mlock, mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

#[cfg(feature = "std")]
use crate::linux::Device;
use crate::sys;
#[cfg(feature = "std")]
use crate::PAGE_SIZE;
use crate::{DomId, Error};
use alloc::vec::Vec;

/// Why a domain shut down (`SHUTDOWN_*` of Xen's `sched.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff` (0).
    Poweroff,
    /// `SHUTDOWN_reboot` (1).
    Reboot,
    /// `SHUTDOWN_suspend` (2).
    Suspend,
    /// `SHUTDOWN_crash` (3).
    Crash,
    /// `SHUTDOWN_watchdog` (4).
    Watchdog,
    /// `SHUTDOWN_soft_reset` (5).
    SoftReset,
    /// Any other code.
    Other(u8),
}

impl ShutdownReason {
    /// Decodes a `SHUTDOWN_*` code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            other => Self::Other(other),
        }
    }
}

/// What the daemon needs to know about one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DomainInfo {
    /// The domain id.
    pub domid: DomId,
    /// Being destroyed (`XEN_DOMINF_dying`).
    pub dying: bool,
    /// Shut down, and why (`XEN_DOMINF_shutdown` and its code).
    pub shutdown: Option<ShutdownReason>,
    /// The toolstack's handle (UUID) for the domain.
    pub handle: [u8; 16],
    /// A per-boot unique id, where the hypervisor has one (not Xen 4.17).
    pub unique_id: Option<u64>,
}

impl DomainInfo {
    /// Decodes Xen 4.17's `struct xen_domctl_getdomaininfo`.
    pub fn from_raw(raw: &sys::XenDomctlGetdomaininfo) -> Self {
        let shutdown = (raw.flags & sys::XEN_DOMINF_SHUTDOWN != 0).then(|| {
            let code = (raw.flags >> sys::XEN_DOMINF_SHUTDOWNSHIFT) & sys::XEN_DOMINF_SHUTDOWNMASK;
            ShutdownReason::from_code(u8::try_from(code).unwrap_or(u8::MAX))
        });
        Self {
            domid: raw.domain,
            dying: raw.flags & sys::XEN_DOMINF_DYING != 0,
            shutdown,
            handle: raw.handle,
            unique_id: None,
        }
    }
}

/// The source of domain information. Object-safe and `Send`.
pub trait DomainInfoSource: Send {
    /// Every existing domain (including dom0 and dying ones), by domid.
    fn list(&mut self) -> Result<Vec<DomainInfo>, Error>;

    /// One domain, or `None` if it does not exist (any more).
    fn get(&mut self, domid: DomId) -> Result<Option<DomainInfo>, Error>;
}

/// Locked memory that hypercalls may point into.
#[cfg(feature = "std")]
struct HypercallBuffer {
    ptr: NonNull<u8>,
    len: usize,
}

#[cfg(feature = "std")]
impl fmt::Debug for HypercallBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypercallBuffer")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(feature = "std")]
// SAFETY: the buffer is exclusively owned; it is plain memory.
unsafe impl Send for HypercallBuffer {}

#[cfg(feature = "std")]
impl HypercallBuffer {
    /// `pages` pages from `/dev/xen/hypercall`, else anonymous locked memory.
    fn new(hypercall_dev: &Path, pages: usize) -> Result<Self, Error> {
        let len = pages * PAGE_SIZE;
        let nz = NonZeroUsize::new(len).ok_or(Error::HypercallBuffer {
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        if let Ok(dev) = Device::open(hypercall_dev) {
            // SAFETY: a fresh shared mapping chosen by the kernel; only used
            // through raw pointers.
            let mapped = unsafe {
                mmap(
                    None,
                    nz,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_SHARED,
                    dev.fd.as_fd(),
                    0,
                )
            };
            if let Ok(ptr) = mapped {
                return Ok(Self {
                    ptr: ptr.cast(),
                    len,
                });
            }
        }
        let this = Self::anonymous(nz)?;
        // SAFETY: locking pages of our own fresh mapping changes no contents.
        unsafe { mlock(this.ptr.cast(), len) }
            .map_err(|e| Error::HypercallBuffer { source: e.into() })?;
        Ok(this)
    }

    /// Anonymous private memory, not yet locked.
    fn anonymous(len: NonZeroUsize) -> Result<Self, Error> {
        // SAFETY: a fresh anonymous mapping chosen by the kernel.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS,
            )
        }
        .map_err(|e| Error::HypercallBuffer { source: e.into() })?;
        Ok(Self {
            ptr: ptr.cast(),
            len: len.get(),
        })
    }
}

#[cfg(feature = "std")]
impl Drop for HypercallBuffer {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes; nothing refers into it.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// How many pages of domain records one sysctl asks for (after the first
/// page, which holds the sysctl itself).
#[cfg(feature = "std")]
const LIST_PAGES: usize = 4;
/// Records per sysctl.
#[cfg(feature = "std")]
const LIST_CAPACITY: usize =
    LIST_PAGES * PAGE_SIZE / std::mem::size_of::<sys::XenDomctlGetdomaininfo>();

/// [`DomainInfoSource`] over `/dev/xen/privcmd` for Xen 4.17 (see the module
/// docs for the mechanism and why).
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct PrivcmdDomainInfo {
    privcmd: Device,
    buf: HypercallBuffer,
}

#[cfg(feature = "std")]
impl PrivcmdDomainInfo {
    /// Opens `/dev/xen/privcmd` and sets up the hypercall buffer.
    pub fn open() -> Result<Self, Error> {
        Self::open_paths(
            Path::new("/dev/xen/privcmd"),
            Path::new("/dev/xen/hypercall"),
        )
    }

    /// Opens the given privcmd and hypercall-buffer devices.
    pub fn open_paths(privcmd: &Path, hypercall: &Path) -> Result<Self, Error> {
        let privcmd = Device::open(privcmd)?;
        let buf = HypercallBuffer::new(hypercall, 1 + LIST_PAGES)?;
        Ok(Self { privcmd, buf })
    }

    #[cfg(test)]
    fn with_device(privcmd: Device) -> Self {
        let len = NonZeroUsize::new((1 + LIST_PAGES) * PAGE_SIZE).unwrap_or(NonZeroUsize::MIN);
        let buf = HypercallBuffer::anonymous(len).unwrap_or_else(|e| panic!("buffer: {e}"));
        Self { privcmd, buf }
    }

    fn hypercall(&self, op: &'static str, call: &mut sys::PrivcmdHypercall) -> Result<i64, Error> {
        // SAFETY: `call` is the IOCTL_PRIVCMD_HYPERCALL struct (pinned in
        // sys.rs), alive across the call. Its arguments are either plain
        // numbers or point into `self.buf`, locked memory we own and do not
        // reference from Rust during the call; the hypercalls used write only
        // within the sizes we declare there.
        unsafe {
            (self.privcmd.ioctl)(
                self.privcmd.fd.as_raw_fd(),
                sys::ioctl_privcmd_hypercall(),
                std::ptr::from_mut(call).cast::<c_void>(),
            )
        }
        .map(i64::from)
        .map_err(|source| Error::Hypercall { op, source })
    }

    /// `(major, minor)` of the running hypervisor (`XENVER_version`).
    pub fn xen_version(&self) -> Result<(u32, u32), Error> {
        let mut call = sys::PrivcmdHypercall {
            op: sys::HYPERVISOR_XEN_VERSION,
            arg: [sys::XENVER_VERSION, 0, 0, 0, 0],
        };
        let v = self.hypercall("xen_version", &mut call)?;
        let v = u32::try_from(v).unwrap_or(0);
        Ok((v >> 16, v & 0xffff))
    }

    /// One `XEN_SYSCTL_getdomaininfolist` from `first`, appending to `out`;
    /// returns how many records came back.
    fn list_from(
        &self,
        first: DomId,
        max: usize,
        out: &mut Vec<DomainInfo>,
    ) -> Result<usize, Error> {
        let max = max.min(LIST_CAPACITY);
        let capacity = u32::try_from(max).unwrap_or(u32::MAX);
        let base = self.buf.ptr.as_ptr();
        // SAFETY: the buffer is 1 + LIST_PAGES pages: the sysctl struct fits in
        // the first page and LIST_CAPACITY records in the rest; both offsets
        // are suitably aligned (page-aligned base).
        let (op_ptr, records) = unsafe {
            (
                base.cast::<sys::XenSysctlGetdomaininfolistOp>(),
                base.add(PAGE_SIZE).cast::<sys::XenDomctlGetdomaininfo>(),
            )
        };
        let op = sys::XenSysctlGetdomaininfolistOp {
            cmd: sys::XEN_SYSCTL_GETDOMAININFOLIST,
            interface_version: sys::XEN_SYSCTL_INTERFACE_VERSION,
            getdomaininfolist: sys::XenSysctlGetdomaininfolist {
                first_domain: first,
                pad1: 0,
                max_domains: capacity,
                buffer: records as u64,
                num_domains: 0,
                pad2: 0,
            },
            pad: [0; 104],
        };
        // SAFETY: `op_ptr` is valid, aligned and exclusively ours (see above).
        unsafe { op_ptr.write(op) };
        let mut call = sys::PrivcmdHypercall {
            op: sys::HYPERVISOR_SYSCTL,
            arg: [op_ptr as u64, 0, 0, 0, 0],
        };
        match self.hypercall("sysctl getdomaininfolist", &mut call) {
            Ok(_) => {}
            Err(Error::Hypercall { source, .. }) if source.raw_os_error() == Some(libc::EACCES) => {
                let (major, minor) = self.xen_version().unwrap_or((0, 0));
                return Err(Error::UnsupportedXen {
                    major,
                    minor,
                    ours: sys::XEN_SYSCTL_INTERFACE_VERSION,
                });
            }
            Err(e) => return Err(e),
        }
        // SAFETY: as above; the hypervisor has finished writing.
        let done = unsafe { op_ptr.read() };
        let n = done.getdomaininfolist.num_domains;
        if n > capacity {
            return Err(Error::BadDomainCount {
                reported: n,
                capacity,
            });
        }
        let n = usize::try_from(n).unwrap_or(0);
        for i in 0..n {
            // SAFETY: i < n <= LIST_CAPACITY records fit in the buffer; every
            // bit pattern is a valid XenDomctlGetdomaininfo (integers only).
            let raw = unsafe { records.add(i).read() };
            out.push(DomainInfo::from_raw(&raw));
        }
        Ok(n)
    }
}

#[cfg(feature = "std")]
impl DomainInfoSource for PrivcmdDomainInfo {
    fn list(&mut self) -> Result<Vec<DomainInfo>, Error> {
        let mut out = Vec::new();
        let mut first: DomId = 0;
        loop {
            let before = out.len();
            let n = self.list_from(first, LIST_CAPACITY, &mut out)?;
            if n < LIST_CAPACITY {
                break;
            }
            // Continue after the last domain returned; stop on nonsense.
            match out[before..].iter().map(|d| d.domid).max() {
                Some(last) if last >= first && last < sys::DOMID_FIRST_RESERVED - 1 => {
                    first = last + 1;
                }
                _ => break,
            }
        }
        out.sort_by_key(|d| d.domid);
        out.dedup_by_key(|d| d.domid);
        Ok(out)
    }

    fn get(&mut self, domid: DomId) -> Result<Option<DomainInfo>, Error> {
        // getdomaininfolist returns the first domain >= `domid`.
        let mut out = Vec::with_capacity(1);
        self.list_from(domid, 1, &mut out)?;
        Ok(out.into_iter().find(|d| d.domid == domid))
    }
}

#[cfg(feature = "std")]
impl PrivcmdDomainInfo {
    /// The privcmd device this source uses.
    pub fn device_path(&self) -> PathBuf {
        self.privcmd.path.clone()
    }
}

#[cfg(all(test, feature = "std"))]
mod tests;
