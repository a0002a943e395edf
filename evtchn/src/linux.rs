//! The Linux backend: an owned fd of `/dev/xen/evtchn`.
//!
//! Device semantics (Linux `drivers/xen/evtchn.c`):
//! * each `IOCTL_EVTCHN_BIND_*` returns the new local port as the ioctl's
//!   return value; the port stays bound until unbound or the file is closed
//!   (closing unbinds everything — which is why live update keeps the fd);
//! * when a port fires the kernel masks it and queues its number; `read()`
//!   returns queued numbers as native-endian `u32`s (`EAGAIN` when none and
//!   the fd is non-blocking, `EFBIG` once the queue overflowed, until
//!   `IOCTL_EVTCHN_RESET`);
//! * `write()` of `u32` port numbers unmasks them.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::sys;
use crate::{fd, DomId, Error, EventChannel, Port, Virq};

/// Where the Linux event-channel device lives.
pub const EVTCHN_DEVICE: &str = "/dev/xen/evtchn";

/// How many ports one `read()` asks for.
const READ_BATCH: usize = 1024;

/// How the backend reaches `ioctl(2)`; unit tests substitute a recorder.
///
/// # Safety
///
/// `arg` must point to a live, exclusively borrowed value of the structure
/// whose size `request` encodes (or be any pointer when that size is 0).
type IoctlFn = unsafe fn(fd: RawFd, request: u32, arg: *mut c_void) -> io::Result<libc::c_int>;

/// The real `ioctl(2)`.
///
/// # Safety
///
/// As for [`IoctlFn`].
unsafe fn sys_ioctl(fd: RawFd, request: u32, arg: *mut c_void) -> io::Result<libc::c_int> {
    // SAFETY: forwarded from the caller: `arg` points to the structure that
    // `request` describes, alive and exclusively ours for the call.
    let rc = unsafe { libc::ioctl(fd, libc::c_ulong::from(request), arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An open `/dev/xen/evtchn` handle. Closing it unbinds every port bound
/// through it.
#[derive(Debug)]
pub struct LinuxEventChannel {
    fd: OwnedFd,
    ioctl: IoctlFn,
}

impl LinuxEventChannel {
    /// Opens [`EVTCHN_DEVICE`] with close-on-exec set.
    pub fn open() -> Result<Self, Error> {
        Self::open_path(Path::new(EVTCHN_DEVICE), true)
    }

    /// Opens [`EVTCHN_DEVICE`] without close-on-exec, for a handle that
    /// must survive `exec()` (live update).
    pub fn open_inheritable() -> Result<Self, Error> {
        Self::open_path(Path::new(EVTCHN_DEVICE), false)
    }

    /// Opens the device at `path` (non-blocking, read-write).
    pub fn open_path(path: &Path, cloexec: bool) -> Result<Self, Error> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true);
        // std sets O_CLOEXEC itself; clearing it is done below if asked.
        options.custom_flags(libc::O_NONBLOCK);
        let file = options.open(path).map_err(|source| Error::DeviceOpen {
            path: path.to_path_buf(),
            source,
        })?;
        let this = Self::with_fd(OwnedFd::from(file));
        if !cloexec {
            this.set_cloexec(false)?;
        }
        Ok(this)
    }

    /// Adopts an fd that must be the event-channel device at [`EVTCHN_DEVICE`]
    /// (checked: a character device with the same device number), e.g. one
    /// inherited across `exec()`. Sets it non-blocking.
    pub fn adopt(fd: OwnedFd) -> Result<Self, Error> {
        Self::adopt_checked(fd, Path::new(EVTCHN_DEVICE))
    }

    /// Adopts the inherited fd number `fd` after the checks of
    /// [`LinuxEventChannel::adopt`]. On error the fd is left open.
    ///
    /// # Safety
    ///
    /// `fd` must be open and owned by nothing else in this process: on
    /// success it is taken over and closed when the handle drops.
    pub unsafe fn from_inherited_fd(fd: RawFd) -> Result<Self, Error> {
        // SAFETY: the caller guarantees nobody else owns `fd`. If the check
        // fails we give it back with `into_raw_fd` so it is not closed.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match Self::check_device(owned.as_fd(), Path::new(EVTCHN_DEVICE)) {
            Ok(()) => Self::finish_adopt(owned),
            Err(e) => {
                let _ = std::os::fd::IntoRawFd::into_raw_fd(owned);
                Err(e)
            }
        }
    }

    fn adopt_checked(fd: OwnedFd, device: &Path) -> Result<Self, Error> {
        Self::check_device(fd.as_fd(), device)?;
        Self::finish_adopt(fd)
    }

    fn finish_adopt(fd: OwnedFd) -> Result<Self, Error> {
        let raw = fd.as_raw_fd();
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| Error::Fstat {
            fd: raw,
            source: e.into(),
        })?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::Fstat {
            fd: raw,
            source: e.into(),
        })?;
        Ok(Self::with_fd(fd))
    }

    fn check_device(fd: BorrowedFd<'_>, device: &Path) -> Result<(), Error> {
        let raw = fd.as_raw_fd();
        let ours = std::fs::File::from(
            fd.try_clone_to_owned()
                .map_err(|source| Error::Fstat { fd: raw, source })?,
        )
        .metadata()
        .map_err(|source| Error::Fstat { fd: raw, source })?;
        let expected = std::fs::metadata(device).map_err(|source| Error::DeviceOpen {
            path: device.to_path_buf(),
            source,
        })?;
        if ours.file_type().is_char_device()
            && expected.file_type().is_char_device()
            && ours.rdev() == expected.rdev()
        {
            Ok(())
        } else {
            Err(Error::NotEventChannelDevice {
                fd: raw,
                device: PathBuf::from(device),
            })
        }
    }

    fn with_fd(fd: OwnedFd) -> Self {
        Self {
            fd,
            ioctl: sys_ioctl,
        }
    }

    /// Sets or clears close-on-exec on the handle.
    pub fn set_cloexec(&self, cloexec: bool) -> Result<(), Error> {
        fd::set_cloexec(self.fd.as_fd(), cloexec).map_err(|source| Error::Cloexec {
            fd: self.fd.as_raw_fd(),
            source,
        })
    }

    /// Clears the pending-port ring and its overflow state (`IOCTL_EVTCHN_RESET`).
    pub fn reset(&mut self) -> Result<(), Error> {
        let mut arg = sys::IoctlEvtchnReset;
        self.call("reset", sys::ioctl_evtchn_reset(), &mut arg)
            .map(drop)
    }

    /// Restricts the handle to binding interdomain ports of `domid` only
    /// (`IOCTL_EVTCHN_RESTRICT_DOMID`); irreversible for this open file.
    pub fn restrict_domid(&mut self, domid: DomId) -> Result<(), Error> {
        let mut arg = sys::IoctlEvtchnRestrictDomid { domid };
        self.call(
            "restrict_domid",
            sys::ioctl_evtchn_restrict_domid(),
            &mut arg,
        )
        .map(drop)
    }

    /// Issues `request` with `arg`. `T` must be the `sys` mirror that
    /// `request` is built from (every caller pairs them from the same line of
    /// `sys.rs`; the test in `sys.rs` pins both against the kernel header).
    fn call<T>(&self, op: &'static str, request: u32, arg: &mut T) -> Result<libc::c_int, Error> {
        debug_assert_eq!(
            (request >> 16) & 0x3fff,
            u32::try_from(core::mem::size_of::<T>()).unwrap_or(u32::MAX),
            "{op}: request size does not match its argument"
        );
        // SAFETY: `arg` is a live exclusive borrow of the structure `request`
        // encodes (size checked above in debug builds, pairing fixed in
        // code); the evtchn structs hold no pointers, so the kernel touches
        // nothing but those bytes.
        unsafe {
            (self.ioctl)(
                self.fd.as_raw_fd(),
                request,
                core::ptr::from_mut(arg).cast(),
            )
        }
        .map_err(|source| Error::Ioctl { op, source })
    }

    fn bind<T>(&self, op: &'static str, request: u32, arg: &mut T) -> Result<Port, Error> {
        let rc = self.call(op, request, arg)?;
        u32::try_from(rc)
            .map(Port::new)
            .map_err(|_| Error::InvalidPort {
                op,
                raw: i64::from(rc),
            })
    }
}

impl AsRawFd for LinuxEventChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for LinuxEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl FromRawFd for LinuxEventChannel {
    /// Adopts `fd` without any check (see [`LinuxEventChannel::from_inherited_fd`]
    /// for the checked version). The fd should be non-blocking.
    ///
    /// # Safety
    ///
    /// `fd` must be an open `/dev/xen/evtchn` file owned by nothing else.
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: forwarded from the caller.
        Self::with_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl EventChannel for LinuxEventChannel {
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        let mut arg = sys::IoctlEvtchnBindInterdomain {
            remote_domain: u32::from(remote),
            remote_port: remote_port.get(),
        };
        self.bind(
            "bind_interdomain",
            sys::ioctl_evtchn_bind_interdomain(),
            &mut arg,
        )
    }

    fn bind_virq(&mut self, virq: Virq) -> Result<Port, Error> {
        let mut arg = sys::IoctlEvtchnBindVirq { virq };
        self.bind("bind_virq", sys::ioctl_evtchn_bind_virq(), &mut arg)
    }

    fn bind_unbound(&mut self, remote: DomId) -> Result<Port, Error> {
        let mut arg = sys::IoctlEvtchnBindUnboundPort {
            remote_domain: u32::from(remote),
        };
        self.bind(
            "bind_unbound_port",
            sys::ioctl_evtchn_bind_unbound_port(),
            &mut arg,
        )
    }

    fn unbind(&mut self, port: Port) -> Result<(), Error> {
        let mut arg = sys::IoctlEvtchnUnbind { port: port.get() };
        self.call("unbind", sys::ioctl_evtchn_unbind(), &mut arg)
            .map(drop)
    }

    fn notify(&mut self, port: Port) -> Result<(), Error> {
        let mut arg = sys::IoctlEvtchnNotify { port: port.get() };
        self.call("notify", sys::ioctl_evtchn_notify(), &mut arg)
            .map(drop)
    }

    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), Error> {
        let mut buf = [0u8; READ_BATCH * 4];
        loop {
            let n = match nix::unistd::read(&self.fd, &mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(()),
                Err(Errno::EFBIG) => {
                    self.reset()?;
                    return Err(Error::RingOverflow);
                }
                Err(e) => return Err(Error::Read { source: e.into() }),
            };
            if n % 4 != 0 {
                return Err(Error::ShortRead { completed: n });
            }
            out.extend(
                buf[..n]
                    .chunks_exact(4)
                    .map(|c| Port::new(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))),
            );
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Port>) -> Result<(), Error> {
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so a sub-millisecond timeout still waits.
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => Ok(()),
            Ok(_) => self.read_pending(out),
            Err(e) => Err(Error::Poll { source: e.into() }),
        }
    }

    fn unmask(&mut self, ports: &[Port]) -> Result<(), Error> {
        if ports.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.get().to_ne_bytes()).collect();
        loop {
            match nix::unistd::write(&self.fd, &bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(Error::ShortWrite {
                        expected: bytes.len(),
                        completed: n,
                    })
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::Write { source: e.into() }),
            }
        }
    }
}

#[cfg(test)]
mod tests;
