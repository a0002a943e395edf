//! Permission strings: `n<domid>`, `r<domid>`, `w<domid>`, `b<domid>`.
//!
//! A node's permission list is an owner entry first (its letter is the
//! access everybody not listed gets), then per-domain entries.

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::split_args;
use crate::error::Error;

/// A domain id (`domid_t`).
pub type DomId = xen_sys::domid_t;

/// `DOMID_FIRST_RESERVED` (Xen's `xen.h`): ids from here up are not real
/// domains (`DOMID_SELF`, `DOMID_IO`, ...). The one definition in the
/// workspace; `xen-sys` does not export it.
pub const DOMID_FIRST_RESERVED: DomId = 0x7ff0;

/// The access a permission entry grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermKind {
    /// `n`: no access.
    None,
    /// `r`: read only.
    Read,
    /// `w`: write only.
    Write,
    /// `b`: read and write.
    Both,
}

impl PermKind {
    /// The letter on the wire.
    pub const fn letter(self) -> u8 {
        match self {
            PermKind::None => b'n',
            PermKind::Read => b'r',
            PermKind::Write => b'w',
            PermKind::Both => b'b',
        }
    }

    /// Parses the letter.
    pub const fn from_letter(letter: u8) -> Option<Self> {
        match letter {
            b'n' => Some(PermKind::None),
            b'r' => Some(PermKind::Read),
            b'w' => Some(PermKind::Write),
            b'b' => Some(PermKind::Both),
            _ => None,
        }
    }

    /// Whether it allows reading.
    pub const fn can_read(self) -> bool {
        matches!(self, PermKind::Read | PermKind::Both)
    }

    /// Whether it allows writing.
    pub const fn can_write(self) -> bool {
        matches!(self, PermKind::Write | PermKind::Both)
    }
}

/// One permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Perm {
    /// The access granted.
    pub kind: PermKind,
    /// The domain it concerns.
    pub domid: DomId,
}

impl Perm {
    /// An entry.
    pub const fn new(kind: PermKind, domid: DomId) -> Self {
        Self { kind, domid }
    }

    /// Parses one entry (without NUL): a letter then a decimal domid
    /// 0..=65535.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let bad = || Error::BadPermission {
            text: String::from_utf8_lossy(text).into_owned(),
        };
        let (&letter, digits) = text.split_first().ok_or_else(bad)?;
        let kind = PermKind::from_letter(letter).ok_or_else(bad)?;
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let value = digits
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        let domid = DomId::try_from(value).map_err(|_| bad())?;
        Ok(Self { kind, domid })
    }

    /// Appends the wire form (without NUL) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.kind.letter());
        let mut digits = [0u8; 5];
        let mut n = self.domid;
        let mut i = digits.len();
        loop {
            i -= 1;
            // `n % 10` is a single decimal digit.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[i..]);
    }
}

impl core::fmt::Display for Perm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", char::from(self.kind.letter()), self.domid)
    }
}

/// Parses a permission list payload (`GET_PERMS` reply, or `SET_PERMS`
/// arguments after the path): NUL-terminated entries, at least one.
pub fn parse_perm_list(payload: &[u8]) -> Result<Vec<Perm>, Error> {
    let perms = split_args(payload)
        .map(Perm::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if perms.is_empty() {
        return Err(Error::BadPayload {
            what: "permission list",
        });
    }
    Ok(perms)
}

/// Formats a permission list as NUL-terminated entries.
pub fn format_perm_list(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::with_capacity(perms.len() * 7);
    for perm in perms {
        perm.write_to(&mut out);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn test_perm_parse_table() {
        let ok: &[(&[u8], Perm)] = &[
            (b"n0", Perm::new(PermKind::None, 0)),
            (b"r5", Perm::new(PermKind::Read, 5)),
            (b"w65535", Perm::new(PermKind::Write, 65535)),
            (b"b32753", Perm::new(PermKind::Both, 0x7ff1)),
        ];
        for (text, want) in ok {
            assert_eq!(Perm::parse(text).unwrap(), *want);
            let mut out = Vec::new();
            want.write_to(&mut out);
            assert_eq!(&out[..], *text);
        }
        for bad in [
            &b""[..],
            b"r",
            b"x5",
            b"r-1",
            b"r65536",
            b"r1a",
            b"R1",
            b"r 1",
            b"r000001",
        ] {
            assert!(Perm::parse(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn test_perm_kind_access_and_display() {
        let kinds = [
            PermKind::None,
            PermKind::Read,
            PermKind::Write,
            PermKind::Both,
        ];
        let access: [(bool, bool); 4] =
            [(false, false), (true, false), (false, true), (true, true)];
        for (kind, (read, write)) in kinds.into_iter().zip(access) {
            assert_eq!(
                (kind.can_read(), kind.can_write()),
                (read, write),
                "{kind:?}"
            );
            assert_eq!(PermKind::from_letter(kind.letter()), Some(kind));
        }
        assert_eq!(PermKind::from_letter(b'x'), None);
        assert_eq!(alloc::format!("{}", Perm::new(PermKind::Write, 42)), "w42");
    }

    #[test]
    fn test_perm_list_roundtrip() {
        let perms = vec![Perm::new(PermKind::None, 0), Perm::new(PermKind::Read, 5)];
        let wire = format_perm_list(&perms);
        assert_eq!(wire, b"n0\0r5\0");
        assert_eq!(parse_perm_list(&wire).unwrap(), perms);
        assert!(parse_perm_list(b"").is_err());
        assert!(parse_perm_list(b"n0\0zz\0").is_err());
    }
}
