//! Event channels over Xen's hypercalls, for a kernel of its own (a
//! xenstore stub domain).
//!
//! * [`Hypervisor`]: what the backend needs from the kernel it runs in —
//!   the hypercall instruction, the shared_info page, Xen's clock and a way
//!   to sleep until an event. The gnttab crate's hypercall backends use it
//!   too.
//! * [`XenErrno`]: Xen's error codes (`public/errno.h`), as the hypercall
//!   backends report them.
//! * [`abi`]: the structures of Xen 4.17's public headers these backends
//!   pass.

pub mod abi;

use core::fmt;

/// An error code a hypercall returned (negated: Xen returns `-errno`), from
/// Xen's `public/errno.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XenErrno(pub i32);

impl XenErrno {
    /// `EPERM`.
    pub const EPERM: Self = Self(1);
    /// `ESRCH`: no such domain.
    pub const ESRCH: Self = Self(3);
    /// `ENOMEM`.
    pub const ENOMEM: Self = Self(12);
    /// `EACCES`: what Xen answers a domctl/sysctl of another interface
    /// version.
    pub const EACCES: Self = Self(13);
    /// `EFAULT`.
    pub const EFAULT: Self = Self(14);
    /// `EINVAL`.
    pub const EINVAL: Self = Self(22);
    /// `ENOSPC`.
    pub const ENOSPC: Self = Self(28);
    /// `ENOSYS`.
    pub const ENOSYS: Self = Self(38);

    /// The error a negative hypercall return value stands for; `None` for a
    /// success (0 or more).
    pub fn from_ret(ret: i64) -> Option<Self> {
        (ret < 0).then(|| Self(i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX)))
    }

    /// The symbolic name, for the codes Xen 4.17 defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            4 => "EINTR",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            8 => "ENOEXEC",
            9 => "EBADF",
            10 => "ECHILD",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            18 => "EXDEV",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            23 => "ENFILE",
            24 => "EMFILE",
            28 => "ENOSPC",
            30 => "EROFS",
            31 => "EMLINK",
            33 => "EDOM",
            34 => "ERANGE",
            35 => "EDEADLK",
            36 => "ENAMETOOLONG",
            37 => "ENOLCK",
            38 => "ENOSYS",
            39 => "ENOTEMPTY",
            61 => "ENODATA",
            62 => "ETIME",
            74 => "EBADMSG",
            75 => "EOVERFLOW",
            84 => "EILSEQ",
            85 => "ERESTART",
            88 => "ENOTSOCK",
            90 => "EMSGSIZE",
            95 => "EOPNOTSUPP",
            98 => "EADDRINUSE",
            99 => "EADDRNOTAVAIL",
            105 => "ENOBUFS",
            106 => "EISCONN",
            107 => "ENOTCONN",
            110 => "ETIMEDOUT",
            _ => return None,
        })
    }
}

impl fmt::Display for XenErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Xen error {name} ({})", self.0),
            None => write!(f, "Xen error {}", self.0),
        }
    }
}
