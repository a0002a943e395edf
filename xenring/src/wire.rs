//! xs_wire protocol constants: message types, the header, error names, limits
//! (`xen/include/public/io/xs_wire.h`).

use crate::error::Error;

/// `XENSTORE_PAYLOAD_MAX`: the longest payload in either direction.
pub const PAYLOAD_MAX: usize = 4096;
/// [`PAYLOAD_MAX`] as the header's length type.
pub const PAYLOAD_MAX_U32: u32 = 4096;
/// `XENSTORE_ABS_PATH_MAX`: the longest absolute path.
pub const ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`: the longest relative path.
pub const REL_PATH_MAX: usize = 2048;
/// Size of [`Header`] on the wire.
pub const HEADER_SIZE: usize = 16;
/// `XS_INVALID`: "guaranteed to remain an invalid type".
pub const XS_INVALID: u32 = 0xffff;
/// `XENSTORE_SERVER_FEATURE_RECONNECTION`: the ring can be reset (the
/// `connection` word).
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`: the `error` word is meaningful.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;

/// `enum xsd_sockmsg_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`.
    Directory = 1,
    /// `XS_READ`.
    Read = 2,
    /// `XS_GET_PERMS`.
    GetPerms = 3,
    /// `XS_WATCH`.
    Watch = 4,
    /// `XS_UNWATCH`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE`.
    Introduce = 8,
    /// `XS_RELEASE`.
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT` (server → client only).
    WatchEvent = 15,
    /// `XS_ERROR` (server → client only).
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    // 20 was XS_RESTRICT, removed from Xen.
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
    /// `XS_GET_FEATURE`.
    GetFeature = 23,
    /// `XS_SET_FEATURE`.
    SetFeature = 24,
    /// `XS_GET_QUOTA`.
    GetQuota = 25,
    /// `XS_SET_QUOTA`.
    SetQuota = 26,
}

impl MsgType {
    /// Every defined type, in wire order.
    pub const ALL: [MsgType; 26] = [
        MsgType::Control,
        MsgType::Directory,
        MsgType::Read,
        MsgType::GetPerms,
        MsgType::Watch,
        MsgType::Unwatch,
        MsgType::TransactionStart,
        MsgType::TransactionEnd,
        MsgType::Introduce,
        MsgType::Release,
        MsgType::GetDomainPath,
        MsgType::Write,
        MsgType::Mkdir,
        MsgType::Rm,
        MsgType::SetPerms,
        MsgType::WatchEvent,
        MsgType::Error,
        MsgType::IsDomainIntroduced,
        MsgType::Resume,
        MsgType::SetTarget,
        MsgType::ResetWatches,
        MsgType::DirectoryPart,
        MsgType::GetFeature,
        MsgType::SetFeature,
        MsgType::GetQuota,
        MsgType::SetQuota,
    ];

    /// The wire value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The C name, for logs (`XS_READ`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            MsgType::Control => "XS_CONTROL",
            MsgType::Directory => "XS_DIRECTORY",
            MsgType::Read => "XS_READ",
            MsgType::GetPerms => "XS_GET_PERMS",
            MsgType::Watch => "XS_WATCH",
            MsgType::Unwatch => "XS_UNWATCH",
            MsgType::TransactionStart => "XS_TRANSACTION_START",
            MsgType::TransactionEnd => "XS_TRANSACTION_END",
            MsgType::Introduce => "XS_INTRODUCE",
            MsgType::Release => "XS_RELEASE",
            MsgType::GetDomainPath => "XS_GET_DOMAIN_PATH",
            MsgType::Write => "XS_WRITE",
            MsgType::Mkdir => "XS_MKDIR",
            MsgType::Rm => "XS_RM",
            MsgType::SetPerms => "XS_SET_PERMS",
            MsgType::WatchEvent => "XS_WATCH_EVENT",
            MsgType::Error => "XS_ERROR",
            MsgType::IsDomainIntroduced => "XS_IS_DOMAIN_INTRODUCED",
            MsgType::Resume => "XS_RESUME",
            MsgType::SetTarget => "XS_SET_TARGET",
            MsgType::ResetWatches => "XS_RESET_WATCHES",
            MsgType::DirectoryPart => "XS_DIRECTORY_PART",
            MsgType::GetFeature => "XS_GET_FEATURE",
            MsgType::SetFeature => "XS_SET_FEATURE",
            MsgType::GetQuota => "XS_GET_QUOTA",
            MsgType::SetQuota => "XS_SET_QUOTA",
        }
    }
}

impl TryFrom<u32> for MsgType {
    type Error = Error;

    fn try_from(raw: u32) -> Result<Self, Error> {
        match raw {
            20 => Err(Error::RetiredMessageType(raw)),
            0..=26 => {
                let i = if raw > 20 { raw - 1 } else { raw };
                // `i` is in 0..=25, the indices of `ALL`.
                MsgType::ALL
                    .get(i as usize)
                    .copied()
                    .ok_or(Error::UnknownMessageType(raw))
            }
            _ => Err(Error::UnknownMessageType(raw)),
        }
    }
}

impl core::fmt::Display for MsgType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// `struct xsd_sockmsg`: four `u32`s in the host's byte order.
///
/// `msg_type` is kept raw: a message of unknown type is still a well-framed
/// message (the daemon answers it with `ENOSYS`); use [`Header::msg_type`] to
/// decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// `type`: an [`MsgType`] value, or anything the peer sent.
    pub msg_type: u32,
    /// `req_id`: echoed in the reply.
    pub req_id: u32,
    /// `tx_id`: transaction id, 0 outside a transaction.
    pub tx_id: u32,
    /// `len`: payload length.
    pub len: u32,
}

impl Header {
    /// A header for a message of `ty`.
    pub const fn new(ty: MsgType, req_id: u32, tx_id: u32, len: u32) -> Self {
        Self {
            msg_type: ty.raw(),
            req_id,
            tx_id,
            len,
        }
    }

    /// The decoded type.
    pub fn msg_type(&self) -> Result<MsgType, Error> {
        MsgType::try_from(self.msg_type)
    }

    /// Encodes the header (host byte order).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[0..4].copy_from_slice(&self.msg_type.to_ne_bytes());
        out[4..8].copy_from_slice(&self.req_id.to_ne_bytes());
        out[8..12].copy_from_slice(&self.tx_id.to_ne_bytes());
        out[12..16].copy_from_slice(&self.len.to_ne_bytes());
        out
    }

    /// Decodes a header (host byte order). Does not check `len`.
    pub fn from_bytes(raw: &[u8; HEADER_SIZE]) -> Self {
        let word = |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        Self {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }
}

/// The error names of `xsd_errors[]`, in Xen's order.
///
/// On the wire an error reply carries the name as a NUL-terminated string,
/// never the number.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XsErrno {
    /// Invalid argument.
    EINVAL,
    /// Permission denied.
    EACCES,
    /// Already exists.
    EEXIST,
    /// Is a directory.
    EISDIR,
    /// No such node.
    ENOENT,
    /// Out of memory.
    ENOMEM,
    /// Quota exceeded.
    ENOSPC,
    /// I/O error.
    EIO,
    /// Directory not empty.
    ENOTEMPTY,
    /// Not implemented.
    ENOSYS,
    /// Read-only.
    EROFS,
    /// Busy.
    EBUSY,
    /// Try again (transaction conflict).
    EAGAIN,
    /// Already connected.
    EISCONN,
    /// Reply too big.
    E2BIG,
    /// Operation not permitted.
    EPERM,
}

impl XsErrno {
    /// All sixteen, in `xsd_errors[]` order.
    pub const ALL: [XsErrno; 16] = [
        XsErrno::EINVAL,
        XsErrno::EACCES,
        XsErrno::EEXIST,
        XsErrno::EISDIR,
        XsErrno::ENOENT,
        XsErrno::ENOMEM,
        XsErrno::ENOSPC,
        XsErrno::EIO,
        XsErrno::ENOTEMPTY,
        XsErrno::ENOSYS,
        XsErrno::EROFS,
        XsErrno::EBUSY,
        XsErrno::EAGAIN,
        XsErrno::EISCONN,
        XsErrno::E2BIG,
        XsErrno::EPERM,
    ];

    /// The wire string (without its NUL).
    pub const fn as_str(self) -> &'static str {
        match self {
            XsErrno::EINVAL => "EINVAL",
            XsErrno::EACCES => "EACCES",
            XsErrno::EEXIST => "EEXIST",
            XsErrno::EISDIR => "EISDIR",
            XsErrno::ENOENT => "ENOENT",
            XsErrno::ENOMEM => "ENOMEM",
            XsErrno::ENOSPC => "ENOSPC",
            XsErrno::EIO => "EIO",
            XsErrno::ENOTEMPTY => "ENOTEMPTY",
            XsErrno::ENOSYS => "ENOSYS",
            XsErrno::EROFS => "EROFS",
            XsErrno::EBUSY => "EBUSY",
            XsErrno::EAGAIN => "EAGAIN",
            XsErrno::EISCONN => "EISCONN",
            XsErrno::E2BIG => "E2BIG",
            XsErrno::EPERM => "EPERM",
        }
    }

    /// The Linux errno value of the same name.
    pub const fn errno(self) -> i32 {
        match self {
            XsErrno::EINVAL => 22,
            XsErrno::EACCES => 13,
            XsErrno::EEXIST => 17,
            XsErrno::EISDIR => 21,
            XsErrno::ENOENT => 2,
            XsErrno::ENOMEM => 12,
            XsErrno::ENOSPC => 28,
            XsErrno::EIO => 5,
            XsErrno::ENOTEMPTY => 39,
            XsErrno::ENOSYS => 38,
            XsErrno::EROFS => 30,
            XsErrno::EBUSY => 16,
            XsErrno::EAGAIN => 11,
            XsErrno::EISCONN => 106,
            XsErrno::E2BIG => 7,
            XsErrno::EPERM => 1,
        }
    }

    /// Parses an error reply's payload (`"ENOENT\0"`; the NUL is optional).
    /// Unknown names give `None` (Linux's xenbus driver and libxenstore treat
    /// them as `EINVAL`).
    pub fn from_wire(payload: &[u8]) -> Option<Self> {
        let name = payload.strip_suffix(&[0]).unwrap_or(payload);
        Self::ALL
            .into_iter()
            .find(|e| e.as_str().as_bytes() == name)
    }

    /// The payload of an `XS_ERROR` reply: the name and its NUL.
    pub fn wire_payload(self) -> &'static [u8] {
        match self {
            XsErrno::EINVAL => b"EINVAL\0",
            XsErrno::EACCES => b"EACCES\0",
            XsErrno::EEXIST => b"EEXIST\0",
            XsErrno::EISDIR => b"EISDIR\0",
            XsErrno::ENOENT => b"ENOENT\0",
            XsErrno::ENOMEM => b"ENOMEM\0",
            XsErrno::ENOSPC => b"ENOSPC\0",
            XsErrno::EIO => b"EIO\0",
            XsErrno::ENOTEMPTY => b"ENOTEMPTY\0",
            XsErrno::ENOSYS => b"ENOSYS\0",
            XsErrno::EROFS => b"EROFS\0",
            XsErrno::EBUSY => b"EBUSY\0",
            XsErrno::EAGAIN => b"EAGAIN\0",
            XsErrno::EISCONN => b"EISCONN\0",
            XsErrno::E2BIG => b"E2BIG\0",
            XsErrno::EPERM => b"EPERM\0",
        }
    }
}

impl core::fmt::Display for XsErrno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_msgtype_every_value_maps_one_to_one() {
        for raw in 0..=30u32 {
            match MsgType::try_from(raw) {
                Ok(ty) => assert_eq!(ty.raw(), raw),
                Err(Error::RetiredMessageType(20)) => assert_eq!(raw, 20),
                Err(Error::UnknownMessageType(r)) => assert!(r > 26 && r == raw),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(MsgType::try_from(XS_INVALID).is_err());
        assert_eq!(MsgType::try_from(26).unwrap(), MsgType::SetQuota);
        assert_eq!(MsgType::try_from(21).unwrap(), MsgType::ResetWatches);
    }

    #[test]
    fn test_errno_names_in_xen_order_roundtrip() {
        let names = [
            "EINVAL",
            "EACCES",
            "EEXIST",
            "EISDIR",
            "ENOENT",
            "ENOMEM",
            "ENOSPC",
            "EIO",
            "ENOTEMPTY",
            "ENOSYS",
            "EROFS",
            "EBUSY",
            "EAGAIN",
            "EISCONN",
            "E2BIG",
            "EPERM",
        ];
        for (e, name) in XsErrno::ALL.iter().zip(names) {
            assert_eq!(e.as_str(), name);
            assert_eq!(XsErrno::from_wire(e.wire_payload()), Some(*e));
            assert_eq!(XsErrno::from_wire(name.as_bytes()), Some(*e));
            assert_eq!(&e.wire_payload()[..name.len()], name.as_bytes());
        }
        assert_eq!(XsErrno::from_wire(b"EWHAT\0"), None);
    }

    #[test]
    fn test_names_display_as_in_c() {
        assert_eq!(
            alloc::format!("{}", MsgType::DirectoryPart),
            "XS_DIRECTORY_PART"
        );
        assert_eq!(alloc::format!("{}", XsErrno::ENOTEMPTY), "ENOTEMPTY");
    }

    #[test]
    fn test_errno_values_are_linux_ones() {
        // asm-generic/errno-base.h and errno.h.
        let linux = [22, 13, 17, 21, 2, 12, 28, 5, 39, 38, 30, 16, 11, 106, 7, 1];
        for (e, want) in XsErrno::ALL.iter().zip(linux) {
            assert_eq!(e.errno(), want, "{e}");
        }
    }

    #[test]
    fn test_header_roundtrip_host_order() {
        let h = Header::new(MsgType::Write, 7, 3, 99);
        let bytes = h.to_bytes();
        assert_eq!(&bytes[0..4], &11u32.to_ne_bytes());
        assert_eq!(Header::from_bytes(&bytes), h);
    }
}
