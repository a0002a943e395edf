//! The Linux backend: `/dev/xen/gntdev` (grants), `/dev/xen/privcmd`
//! (foreign frames) and `xsd_kva` (dom0's own xenstore page).
//!
//! Device semantics:
//! * gntdev: `IOCTL_GNTDEV_MAP_GRANT_REF` reserves the grant and returns an
//!   `index`; `mmap(fd, offset = index)` performs the mapping;
//!   `IOCTL_GNTDEV_UNMAP_GRANT_REF` releases the reservation (the grant is
//!   unmapped once the VMA is gone too). A grant may be mapped many times.
//! * privcmd: `mmap` of the fd reserves address space; `IOCTL_PRIVCMD_MMAPBATCH_V2`
//!   fills it with the listed frames and reports a per-page error in `err`
//!   (the ioctl itself fails with `ENOENT` when a frame is paged out).
//! * xsd_kva: `mmap` of one page at offset 0 is dom0's xenstore ring.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use nix::libc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::sys;
use crate::{DomId, Error, ForeignPage, GrantRef, LocalXenstore, PageMapper, RingPage, PAGE_SIZE};

/// How the backend reaches `ioctl(2)`; unit tests substitute a recorder.
///
/// # Safety
///
/// `arg` must point to a live, exclusively borrowed value of the structure
/// whose size `request` encodes, and every pointer inside it must be valid
/// for what the request does with it.
pub(crate) type IoctlFn =
    unsafe fn(fd: RawFd, request: u32, arg: *mut c_void) -> io::Result<libc::c_int>;

/// The real `ioctl(2)`.
///
/// # Safety
///
/// As for [`IoctlFn`].
pub(crate) unsafe fn sys_ioctl(
    fd: RawFd,
    request: u32,
    arg: *mut c_void,
) -> io::Result<libc::c_int> {
    // SAFETY: forwarded from the caller: `arg` is the structure `request`
    // describes, alive and exclusively ours for the call.
    let rc = unsafe { libc::ioctl(fd, libc::c_ulong::from(request), arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An open device file and the ioctl entry point used on it.
pub(crate) struct Device {
    pub(crate) path: PathBuf,
    pub(crate) fd: OwnedFd,
    pub(crate) ioctl: IoctlFn,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("path", &self.path)
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl Device {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| Error::DeviceOpen {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            fd: OwnedFd::from(file),
            ioctl: sys_ioctl,
        })
    }

    /// Maps one shared read-write page of the device at `offset`.
    fn map_page(&self, offset: u64) -> Result<NonNull<u8>, Error> {
        let offset = libc::off_t::try_from(offset).map_err(|_| Error::Mmap {
            path: self.path.clone(),
            source: io::Error::from_raw_os_error(libc::EOVERFLOW),
        })?;
        let len = NonZeroUsize::new(PAGE_SIZE).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: a fresh shared mapping chosen by the kernel (no address
        // hint, no MAP_FIXED) cannot alias any existing Rust object; the
        // result is only used through raw pointers.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                self.fd.as_fd(),
                offset,
            )
        }
        .map_err(|e| Error::Mmap {
            path: self.path.clone(),
            source: e.into(),
        })?;
        Ok(ptr.cast())
    }
}

/// Unmaps one page obtained from [`Device::map_page`].
///
/// # Safety
///
/// `ptr` must be such a page, not used afterwards.
unsafe fn unmap_page(ptr: NonNull<u8>) {
    // SAFETY: forwarded from the caller: a page we mapped and nobody uses.
    // A failure (only EINVAL for a bad range) cannot be acted upon in Drop.
    let _ = unsafe { munmap(ptr.cast(), PAGE_SIZE) };
}

/// A page of another domain mapped through gntdev.
pub struct GrantPage {
    ptr: NonNull<u8>,
    index: u64,
    domid: DomId,
    gref: GrantRef,
    dev: Arc<Device>,
}

// SAFETY: `GrantPage` owns its mapping exclusively; the pointer is only
// dereferenced through `RingPage` (volatile/atomic accesses), which is valid
// from any thread, and `Device` is an fd plus a function pointer.
unsafe impl Send for GrantPage {}

impl fmt::Debug for GrantPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantPage")
            .field("domid", &self.domid)
            .field("gref", &self.gref)
            .field("index", &self.index)
            .finish()
    }
}

impl ForeignPage for GrantPage {
    fn ring(&self) -> RingPage<'_> {
        // SAFETY: `ptr` is a mapped, page-aligned 4096-byte page that stays
        // mapped until `self` drops, which the returned lifetime prevents; this
        // crate never creates references into it.
        unsafe { RingPage::new(self.ptr) }
    }
}

impl Drop for GrantPage {
    fn drop(&mut self) {
        // SAFETY: our own page; no `RingPage` can outlive `&self`.
        unsafe { unmap_page(self.ptr) };
        let _ = unmap_grant(&self.dev, self.index);
    }
}

fn unmap_grant(dev: &Device, index: u64) -> Result<(), Error> {
    let mut arg = sys::IoctlGntdevUnmapGrantRef {
        index,
        count: 1,
        pad: 0,
    };
    // SAFETY: `arg` is the struct IOCTL_GNTDEV_UNMAP_GRANT_REF takes (pinned in
    // sys.rs), alive across the call, with no pointers inside.
    unsafe {
        (dev.ioctl)(
            dev.fd.as_raw_fd(),
            sys::ioctl_gntdev_unmap_grant_ref(),
            std::ptr::from_mut(&mut arg).cast(),
        )
    }
    .map(drop)
    .map_err(|source| Error::Ioctl {
        op: "IOCTL_GNTDEV_UNMAP_GRANT_REF",
        source,
    })
}

/// A page mapped with a plain `munmap` on drop (privcmd frames, xsd_kva).
pub struct MappedPage {
    ptr: NonNull<u8>,
    what: String,
}

// SAFETY: as for `GrantPage`: an exclusively owned mapping only accessed
// through `RingPage`.
unsafe impl Send for MappedPage {}

impl fmt::Debug for MappedPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedPage")
            .field("what", &self.what)
            .finish()
    }
}

impl ForeignPage for MappedPage {
    fn ring(&self) -> RingPage<'_> {
        // SAFETY: as in `GrantPage::ring`.
        unsafe { RingPage::new(self.ptr) }
    }
}

impl Drop for MappedPage {
    fn drop(&mut self) {
        // SAFETY: our own page; no `RingPage` can outlive `&self`.
        unsafe { unmap_page(self.ptr) };
    }
}

/// Where the Linux backend finds its devices (the defaults are the real
/// ones; tests point them elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    /// The grant device.
    pub gntdev: PathBuf,
    /// The privileged-command device.
    pub privcmd: PathBuf,
    /// dom0's xenstore page, in the order tried.
    pub xsd_kva: Vec<PathBuf>,
    /// dom0's xenstore port (decimal text).
    pub xsd_port: PathBuf,
}

impl Default for DevicePaths {
    fn default() -> Self {
        Self {
            gntdev: "/dev/xen/gntdev".into(),
            privcmd: "/dev/xen/privcmd".into(),
            // C xenstored tries the device node first, then the xenfs file.
            xsd_kva: vec!["/dev/xen/xsd_kva".into(), "/proc/xen/xsd_kva".into()],
            xsd_port: "/proc/xen/xsd_port".into(),
        }
    }
}

/// [`PageMapper`] over the Linux Xen devices.
#[derive(Debug)]
pub struct LinuxPageMapper {
    gntdev: Arc<Device>,
    privcmd: Device,
    paths: DevicePaths,
}

impl LinuxPageMapper {
    /// Opens `/dev/xen/gntdev` and `/dev/xen/privcmd`.
    pub fn open() -> Result<Self, Error> {
        Self::open_paths(DevicePaths::default())
    }

    /// Opens the devices at `paths`.
    pub fn open_paths(paths: DevicePaths) -> Result<Self, Error> {
        Ok(Self {
            gntdev: Arc::new(Device::open(&paths.gntdev)?),
            privcmd: Device::open(&paths.privcmd)?,
            paths,
        })
    }

    #[cfg(test)]
    fn with_devices(gntdev: Device, privcmd: Device, paths: DevicePaths) -> Self {
        Self {
            gntdev: Arc::new(gntdev),
            privcmd,
            paths,
        }
    }
}

impl PageMapper for LinuxPageMapper {
    fn map_grant(&self, domid: DomId, gref: GrantRef) -> Result<Box<dyn ForeignPage>, Error> {
        let dev = &self.gntdev;
        let mut arg = sys::IoctlGntdevMapGrantRef {
            count: 1,
            pad: 0,
            index: 0,
            refs: [sys::IoctlGntdevGrantRef {
                domid: u32::from(domid),
                r#ref: gref,
            }],
        };
        // SAFETY: `arg` is the one-grant IOCTL_GNTDEV_MAP_GRANT_REF struct
        // (pinned in sys.rs), alive across the call, with no pointers inside.
        unsafe {
            (dev.ioctl)(
                dev.fd.as_raw_fd(),
                sys::ioctl_gntdev_map_grant_ref(),
                std::ptr::from_mut(&mut arg).cast(),
            )
        }
        .map_err(|source| Error::Ioctl {
            op: "IOCTL_GNTDEV_MAP_GRANT_REF",
            source,
        })?;
        let index = arg.index;
        match dev.map_page(index) {
            Ok(ptr) => Ok(Box::new(GrantPage {
                ptr,
                index,
                domid,
                gref,
                dev: Arc::clone(dev),
            })),
            Err(e) => {
                let _ = unmap_grant(dev, index);
                Err(e)
            }
        }
    }

    fn map_foreign(&self, domid: DomId, mfn: u64) -> Result<Box<dyn ForeignPage>, Error> {
        let dev = &self.privcmd;
        let ptr = dev.map_page(0)?;
        let page = MappedPage {
            ptr,
            what: format!("domain {domid} frame {mfn:#x}"),
        };
        let frames: [xen_sys::xen_pfn_t; 1] = [mfn];
        let mut errs: [i32; 1] = [0];
        let mut arg = sys::PrivcmdMmapbatchV2 {
            num: 1,
            dom: domid,
            pad: 0,
            addr: ptr.as_ptr() as u64,
            arr: frames.as_ptr(),
            err: errs.as_mut_ptr(),
        };
        // SAFETY: `arg` is the IOCTL_PRIVCMD_MMAPBATCH_V2 struct (pinned in
        // sys.rs); `arr` and `err` point to one element each, alive across the
        // call; `addr` is the privcmd VMA of one page we just created and own
        // (dropped, i.e. unmapped, by `page` on failure).
        let rc = unsafe {
            (dev.ioctl)(
                dev.fd.as_raw_fd(),
                sys::ioctl_privcmd_mmapbatch_v2(),
                std::ptr::from_mut(&mut arg).cast(),
            )
        };
        match rc {
            Ok(_) if errs[0] == 0 => Ok(Box::new(page)),
            // Success of the call with a per-page failure, or ENOENT (paged
            // out), which the kernel reports through both channels.
            Ok(_) => Err(frame_error(domid, mfn, errs[0])),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && errs[0] != 0 => {
                Err(frame_error(domid, mfn, errs[0]))
            }
            Err(source) => Err(Error::Ioctl {
                op: "IOCTL_PRIVCMD_MMAPBATCH_V2",
                source,
            }),
        }
    }

    fn map_local_xenstore(&self) -> Result<LocalXenstore, Error> {
        let port = read_xsd_port(&self.paths.xsd_port)?;
        let mut last = None;
        for path in &self.paths.xsd_kva {
            match Device::open(path) {
                Ok(dev) => {
                    let ptr = dev.map_page(0)?;
                    // The mapping stays valid after the fd is closed.
                    let page = MappedPage {
                        ptr,
                        what: format!("{}", path.display()),
                    };
                    return Ok(LocalXenstore {
                        page: Box::new(page),
                        port,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::DeviceOpen {
            path: PathBuf::from("xsd_kva"),
            source: io::Error::from(io::ErrorKind::NotFound),
        }))
    }
}

/// The per-page code is a negated errno.
fn frame_error(domid: DomId, mfn: u64, err: i32) -> Error {
    Error::ForeignFrame {
        domid,
        mfn,
        source: io::Error::from_raw_os_error(err.checked_neg().unwrap_or(libc::EINVAL)),
    }
}

fn read_xsd_port(path: &Path) -> Result<evtchn::Port, Error> {
    let text = std::fs::read(path).map_err(|source| Error::XsdPortRead {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&text);
    text.trim()
        .parse::<u32>()
        .map(evtchn::Port::new)
        .map_err(|_| Error::XsdPortParse {
            path: path.to_path_buf(),
            text: text.chars().take(32).collect(),
        })
}

#[cfg(test)]
mod tests;
