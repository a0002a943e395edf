//! Grant mapping and domain information over Xen's hypercalls, for a
//! kernel of its own (a xenstore stub domain), through
//! [`evtchn::hypercall::Hypervisor`].
//!
//! * [`HypercallPageMapper`]: [`PageMapper`] by `GNTTABOP_map_grant_ref`
//!   with `GNTMAP_host_map` at a free page of a virtual-address window the
//!   kernel set aside ([`VaWindows`]); each [`ForeignPage`] unmaps itself
//!   (`GNTTABOP_unmap_grant_ref`) on drop and frees its page of the window.
//!   A stub domain maps by grant only: mapping by frame number and dom0's
//!   local page are [`Error::Unsupported`].
//! * [`HypercallDomainInfo`]: [`DomainInfoSource`] by
//!   `XEN_DOMCTL_getdomaininfo` with Xen 4.17's interface version (0x15;
//!   sysctl is denied to a stub domain). In 4.17 the domctl answers for the
//!   first domain whose id is at least the one asked, so `list()` walks the
//!   ids with one call per existing domain.
//!
//! The hypercall arguments live on the caller's stack: a PV kernel's
//! memory is always present, so nothing needs locking as under Linux.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use evtchn::hypercall::{abi, Hypervisor, XenErrno};

use crate::dominfo::{DomainInfo, DomainInfoSource};
use crate::{
    sys, DomId, Error, ForeignPage, GrantRef, LocalXenstore, PageMapper, RingPage, PAGE_SIZE,
};

/// The status of one grant-table operation (`GNTST_*` of `grant_table.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantStatus(pub i16);

impl GrantStatus {
    /// `GNTST_okay`.
    pub const OKAY: Self = Self(0);
    /// `GNTST_bad_domain`: no such domain.
    pub const BAD_DOMAIN: Self = Self(-2);
    /// `GNTST_bad_gntref`: the grant is not there (or not for us).
    pub const BAD_GNTREF: Self = Self(-3);
    /// `GNTST_bad_handle`.
    pub const BAD_HANDLE: Self = Self(-4);
    /// `GNTST_bad_virt_addr`: the address cannot take the mapping.
    pub const BAD_VIRT_ADDR: Self = Self(-5);
    /// `GNTST_eagain`: the page is being paged in; try again.
    pub const EAGAIN: Self = Self(-12);

    /// The `GNTST_*` name, for the codes Xen 4.17 defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "GNTST_okay",
            -1 => "GNTST_general_error",
            -2 => "GNTST_bad_domain",
            -3 => "GNTST_bad_gntref",
            -4 => "GNTST_bad_handle",
            -5 => "GNTST_bad_virt_addr",
            -6 => "GNTST_bad_dev_addr",
            -7 => "GNTST_no_device_space",
            -8 => "GNTST_permission_denied",
            -9 => "GNTST_bad_page",
            -10 => "GNTST_bad_copy_arg",
            -11 => "GNTST_address_too_big",
            -12 => "GNTST_eagain",
            -13 => "GNTST_no_space",
            _ => return None,
        })
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "grant status {}", self.0),
        }
    }
}

/// A page-aligned range of virtual addresses a kernel set aside for grant
/// mappings: `pages` pages from `base`. See [`HypercallPageMapper::new`] for
/// what the kernel must guarantee about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaWindows {
    /// The first address (page-aligned).
    pub base: usize,
    /// How many pages.
    pub pages: usize,
}

/// The window's pages, a bit each: set = in use, or held back after an
/// unmap that failed. Shared by the mapper and its pages (a page may
/// outlive the mapper); lock-free, so dropping a page never waits.
struct Slots<H: Hypervisor> {
    hv: Arc<H>,
    windows: VaWindows,
    used: Box<[AtomicU64]>,
    stuck: AtomicUsize,
}

impl<H: Hypervisor> Slots<H> {
    /// Takes the lowest free page of the window.
    fn take(&self) -> Option<usize> {
        for (w, word) in self.used.iter().enumerate() {
            let mut cur = word.load(SeqCst);
            loop {
                let bit = (!cur).trailing_zeros() as usize;
                let slot = w * 64 + bit;
                if bit == 64 || slot >= self.windows.pages {
                    break;
                }
                match word.compare_exchange(cur, cur | (1 << bit), SeqCst, SeqCst) {
                    Ok(_) => return Some(slot),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    fn free(&self, slot: usize) {
        if let Some(word) = self.used.get(slot / 64) {
            word.fetch_and(!(1 << (slot % 64)), SeqCst);
        }
    }

    fn addr(&self, slot: usize) -> usize {
        self.windows.base + slot * PAGE_SIZE
    }
}

/// [`PageMapper`] over grant-table hypercalls (see the module docs).
pub struct HypercallPageMapper<H: Hypervisor> {
    slots: Arc<Slots<H>>,
}

impl<H: Hypervisor> fmt::Debug for HypercallPageMapper<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypercallPageMapper")
            .field("windows", &self.slots.windows)
            .field("stuck", &self.stuck_pages())
            .finish_non_exhaustive()
    }
}

impl<H: Hypervisor> HypercallPageMapper<H> {
    /// A mapper placing its mappings in `windows`.
    ///
    /// Fails with [`Error::BadWindow`] when the window is empty, its base is
    /// 0 or not page-aligned, or it runs past the end of the address space.
    ///
    /// # Safety
    ///
    /// `windows` is this mapper's alone for as long as it or any page it
    /// mapped lives: virtual addresses of this domain's current page
    /// tables whose L1 page tables exist (Xen fills in the PTEs and fails
    /// with `GNTST_general_error` where an L1 is missing) and whose PTEs are
    /// not present, and which nothing else maps, reads or writes.
    pub unsafe fn new(hv: Arc<H>, windows: VaWindows) -> Result<Self, Error> {
        let fits = windows
            .pages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| windows.base.checked_add(len))
            .is_some();
        if windows.pages == 0 || windows.base == 0 || windows.base % PAGE_SIZE != 0 || !fits {
            return Err(Error::BadWindow {
                base: windows.base,
                pages: windows.pages,
            });
        }
        let used = (0..windows.pages.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Self {
            slots: Arc::new(Slots {
                hv,
                windows,
                used,
                stuck: AtomicUsize::new(0),
            }),
        })
    }

    /// Pages of the window held back because Xen failed to unmap them (a
    /// possibly still-mapped address is never reused).
    pub fn stuck_pages(&self) -> usize {
        self.slots.stuck.load(SeqCst)
    }
}

/// `HYPERVISOR_grant_table_op(cmd, op, 1)`, the return value as an error.
fn grant_table_op<H: Hypervisor, T>(
    hv: &H,
    name: &'static str,
    cmd: u64,
    op: &mut T,
) -> Result<(), Error> {
    // SAFETY: callers pass the one `struct gnttab_*` that `cmd` takes (sys.rs,
    // layouts pinned against Xen's headers), alive and exclusively borrowed
    // for the call, with a count of 1; Xen writes only its OUT fields.
    let ret = unsafe {
        hv.hypercall(
            abi::HYPERVISOR_GRANT_TABLE_OP,
            [cmd, core::ptr::from_mut(op) as u64, 1, 0, 0],
        )
    };
    match XenErrno::from_ret(ret) {
        None => Ok(()),
        Some(errno) => Err(Error::Xen { op: name, errno }),
    }
}

impl<H: Hypervisor + 'static> PageMapper for HypercallPageMapper<H> {
    fn map_grant(&self, domid: DomId, gref: GrantRef) -> Result<Box<dyn ForeignPage>, Error> {
        let slots = &self.slots;
        let slot = slots.take().ok_or(Error::WindowFull {
            pages: slots.windows.pages,
        })?;
        let addr = slots.addr(slot);
        let Some(page) = NonNull::new(addr as *mut u8) else {
            // Cannot happen: `new` refuses a window at address 0.
            slots.free(slot);
            return Err(Error::BadWindow {
                base: slots.windows.base,
                pages: slots.windows.pages,
            });
        };
        let mut op = sys::GnttabMapGrantRef {
            host_addr: addr as u64,
            flags: sys::GNTMAP_HOST_MAP,
            r#ref: gref,
            dom: domid,
            ..sys::GnttabMapGrantRef::default()
        };
        if let Err(e) = grant_table_op(
            &*slots.hv,
            "GNTTABOP_map_grant_ref",
            sys::GNTTABOP_MAP_GRANT_REF,
            &mut op,
        ) {
            slots.free(slot);
            return Err(e);
        }
        if op.status != sys::GNTST_OKAY {
            slots.free(slot);
            return Err(Error::GrantMap {
                domid,
                gref,
                status: GrantStatus(op.status),
            });
        }
        Ok(Box::new(HypercallPage {
            slots: Arc::clone(slots),
            slot,
            page,
            handle: op.handle,
            domid,
            gref,
        }))
    }

    fn map_foreign(&self, _domid: DomId, _mfn: u64) -> Result<Box<dyn ForeignPage>, Error> {
        Err(Error::Unsupported {
            op: "mapping a foreign frame by number (a stub domain maps grants only)",
        })
    }

    fn map_local_xenstore(&self) -> Result<LocalXenstore, Error> {
        Err(Error::Unsupported {
            op: "mapping the local xenstore page (a stub domain maps dom0's grant instead)",
        })
    }
}

/// One grant mapped by [`HypercallPageMapper`]; unmaps on drop.
struct HypercallPage<H: Hypervisor> {
    slots: Arc<Slots<H>>,
    slot: usize,
    /// The mapping's address (the window's page `slot`).
    page: NonNull<u8>,
    handle: u32,
    domid: DomId,
    gref: GrantRef,
}

impl<H: Hypervisor> fmt::Debug for HypercallPage<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypercallPage")
            .field("domid", &self.domid)
            .field("gref", &self.gref)
            .field("addr", &format_args!("{:#x}", self.slots.addr(self.slot)))
            .field("handle", &self.handle)
            .finish()
    }
}

// SAFETY: `page` is the address of a mapping this value owns alone (its
// window page is taken until the drop); nothing about it is tied to a
// thread, and the rest of the value is Send.
unsafe impl<H: Hypervisor> Send for HypercallPage<H> {}

impl<H: Hypervisor> ForeignPage for HypercallPage<H> {
    fn ring(&self) -> RingPage<'_> {
        // SAFETY: Xen mapped the granted page read-write at `page`
        // (GNTST_okay), a page-aligned address of the window that is ours
        // alone (HypercallPageMapper::new's contract); it stays mapped until
        // this value is dropped, which the view's lifetime cannot outlive.
        // Nothing in this crate makes a reference to it.
        unsafe { RingPage::new(self.page) }
    }
}

impl<H: Hypervisor> Drop for HypercallPage<H> {
    fn drop(&mut self) {
        let mut op = sys::GnttabUnmapGrantRef {
            host_addr: self.slots.addr(self.slot) as u64,
            handle: self.handle,
            ..sys::GnttabUnmapGrantRef::default()
        };
        let done = grant_table_op(
            &*self.slots.hv,
            "GNTTABOP_unmap_grant_ref",
            sys::GNTTABOP_UNMAP_GRANT_REF,
            &mut op,
        )
        .is_ok()
            && op.status == sys::GNTST_OKAY;
        if done {
            self.slots.free(self.slot);
        } else {
            // No log without std: keep the page out of use, and count it.
            self.slots.stuck.fetch_add(1, SeqCst);
        }
    }
}

/// [`DomainInfoSource`] over `XEN_DOMCTL_getdomaininfo` (see the module
/// docs).
pub struct HypercallDomainInfo<H: Hypervisor> {
    hv: Arc<H>,
}

impl<H: Hypervisor> fmt::Debug for HypercallDomainInfo<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypercallDomainInfo")
            .finish_non_exhaustive()
    }
}

impl<H: Hypervisor> HypercallDomainInfo<H> {
    /// A source asking `hv`.
    pub fn new(hv: Arc<H>) -> Self {
        Self { hv }
    }

    /// `(major, minor)` of the running hypervisor (`XENVER_version`).
    pub fn xen_version(&self) -> Result<(u32, u32), Error> {
        // SAFETY: XENVER_version takes no buffer (its argument is NULL) and
        // returns the version in the return value.
        let ret = unsafe {
            self.hv.hypercall(
                abi::HYPERVISOR_XEN_VERSION,
                [abi::XENVER_VERSION, 0, 0, 0, 0],
            )
        };
        if let Some(errno) = XenErrno::from_ret(ret) {
            return Err(Error::Xen {
                op: "XENVER_version",
                errno,
            });
        }
        let v = u32::try_from(ret).unwrap_or(0);
        Ok((v >> 16, v & 0xffff))
    }

    /// The first domain whose id is at least `from`, or `None` if there is
    /// none.
    fn first_from(&self, from: DomId) -> Result<Option<DomainInfo>, Error> {
        if from >= sys::DOMID_FIRST_RESERVED {
            return Ok(None);
        }
        let mut op = sys::XenDomctlGetdomaininfoOp {
            cmd: sys::XEN_DOMCTL_GETDOMAININFO,
            interface_version: sys::XEN_DOMCTL_INTERFACE_VERSION,
            domain: from,
            pad1: [0; 3],
            getdomaininfo: sys::XenDomctlGetdomaininfo::default(),
            pad2: [0; 16],
        };
        // SAFETY: `op` is a `struct xen_domctl` (layout pinned against
        // Xen's domctl.h, 144 bytes with the whole union), alive and ours for
        // the call; Xen writes only within it.
        let ret = unsafe {
            self.hv.hypercall(
                abi::HYPERVISOR_DOMCTL,
                [core::ptr::from_mut(&mut op) as u64, 0, 0, 0, 0],
            )
        };
        match XenErrno::from_ret(ret) {
            None => {}
            Some(XenErrno::ESRCH) => return Ok(None),
            Some(XenErrno::EACCES) => {
                let (major, minor) = self.xen_version().unwrap_or((0, 0));
                return Err(Error::UnsupportedXenDomctl {
                    major,
                    minor,
                    ours: sys::XEN_DOMCTL_INTERFACE_VERSION,
                });
            }
            Some(errno) => {
                return Err(Error::Xen {
                    op: "XEN_DOMCTL_getdomaininfo",
                    errno,
                })
            }
        }
        let returned = op.getdomaininfo.domain;
        if returned < from || returned >= sys::DOMID_FIRST_RESERVED {
            return Err(Error::DomainOutOfOrder {
                asked: from,
                returned,
            });
        }
        Ok(Some(DomainInfo::from_raw(&op.getdomaininfo)))
    }
}

impl<H: Hypervisor> DomainInfoSource for HypercallDomainInfo<H> {
    fn list(&mut self) -> Result<Vec<DomainInfo>, Error> {
        let mut out = Vec::new();
        let mut from: DomId = 0;
        // Ids strictly increase (first_from checks), so this ends within
        // DOMID_FIRST_RESERVED calls.
        while let Some(info) = self.first_from(from)? {
            from = info.domid + 1;
            out.push(info);
        }
        Ok(out)
    }

    fn get(&mut self, domid: DomId) -> Result<Option<DomainInfo>, Error> {
        Ok(self.first_from(domid)?.filter(|d| d.domid == domid))
    }
}

#[cfg(test)]
mod tests;
