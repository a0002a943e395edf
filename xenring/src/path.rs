//! Path syntax (`docs/misc/xenstore.txt`): "ASCII alphanumerics plus the four
//! punctuation characters -/_@ ... Doubled slashes and trailing slashes
//! (except to specify the root) are forbidden. The empty path is also
//! forbidden. Paths longer than 3072 bytes are forbidden; clients specifying
//! relative paths should keep them to within 2048 bytes."

use crate::error::Error;
use crate::wire::{ABS_PATH_MAX, REL_PATH_MAX};

/// What kind of path a valid path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Starts with `/`.
    Absolute,
    /// Relative to the caller's `/local/domain/<domid>` (domains only).
    Relative,
    /// Starts with `@`: a special watch path (`@introduceDomain`,
    /// `@releaseDomain`, `@releaseDomain/<domid>`) or special node.
    Special,
}

/// Whether `b` may appear in a path.
#[inline]
pub const fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// Validates a path (without its terminating NUL) and says what kind it is.
pub fn validate_path(path: &[u8]) -> Result<PathKind, Error> {
    let kind = match path.first() {
        None => return Err(Error::PathEmpty),
        Some(b'/') => PathKind::Absolute,
        Some(b'@') => PathKind::Special,
        Some(_) => PathKind::Relative,
    };
    let max = match kind {
        PathKind::Relative => REL_PATH_MAX,
        PathKind::Absolute | PathKind::Special => ABS_PATH_MAX,
    };
    if path.len() > max {
        return Err(Error::PathTooLong {
            len: path.len(),
            max,
        });
    }
    // One pass without branches on the bytes (a table lookup each); only
    // a path found wrong is walked again, to say where and why.
    let mut prev = CLASS_OTHER;
    let mut wrong = false;
    for &byte in path {
        let class = CLASS[usize::from(byte)];
        wrong |= (class == CLASS_BAD) | (class & prev == CLASS_SLASH);
        prev = class;
    }
    if wrong {
        return Err(first_error(path));
    }
    if path.len() > 1 && prev == CLASS_SLASH {
        return Err(Error::PathTrailingSlash);
    }
    Ok(kind)
}

/// [`CLASS`] of a byte not allowed in a path.
const CLASS_BAD: u8 = 0;
/// [`CLASS`] of `/`.
const CLASS_SLASH: u8 = 2;
/// [`CLASS`] of the other bytes allowed.
const CLASS_OTHER: u8 = 1;

/// Each byte's class ([`is_path_byte`], and `/` apart).
static CLASS: [u8; 256] = {
    let mut table = [CLASS_BAD; 256];
    let mut b: u8 = 0;
    loop {
        table[b as usize] = if b == b'/' {
            CLASS_SLASH
        } else if is_path_byte(b) {
            CLASS_OTHER
        } else {
            CLASS_BAD
        };
        if b == u8::MAX {
            break table;
        }
        b += 1;
    }
};

/// The first bad byte or doubled slash of a path [`validate_path`] found
/// wrong, in the order a walk meets them.
#[cold]
fn first_error(path: &[u8]) -> Error {
    let mut prev = 0u8;
    for (at, &byte) in path.iter().enumerate() {
        if !is_path_byte(byte) {
            return Error::PathBadByte { byte, at };
        }
        if byte == b'/' && prev == b'/' {
            return Error::PathDoubleSlash { at };
        }
        prev = byte;
    }
    // Not reached for a path the table found wrong.
    Error::PathEmpty
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn test_path_table() {
        let long_abs = {
            let mut p = vec![b'/'];
            p.extend(core::iter::repeat_n(b'a', ABS_PATH_MAX - 1));
            p
        };
        let long_rel = vec![b'a'; REL_PATH_MAX + 1];
        let cases: &[(&[u8], Result<PathKind, ()>)] = &[
            (b"/", Ok(PathKind::Absolute)),
            (b"/local/domain/0", Ok(PathKind::Absolute)),
            (b"device/vif/0", Ok(PathKind::Relative)),
            (b"@releaseDomain", Ok(PathKind::Special)),
            (b"@releaseDomain/5", Ok(PathKind::Special)),
            (b"/a-b_c@d/E9", Ok(PathKind::Absolute)),
            (&long_abs, Ok(PathKind::Absolute)),
            (b"", Err(())),
            (b"/a//b", Err(())),
            (b"//", Err(())),
            (b"/a/", Err(())),
            (b"a/", Err(())),
            (b"/a b", Err(())),
            (b"/a.b", Err(())),
            (b"/a\0b", Err(())),
            (&long_rel, Err(())),
        ];
        for (path, want) in cases {
            let got = validate_path(path).map_err(|_| ());
            assert_eq!(got, *want, "path {:?}", core::str::from_utf8(path));
        }
        let mut too_long = long_abs.clone();
        too_long.push(b'a');
        assert!(matches!(
            validate_path(&too_long),
            Err(Error::PathTooLong {
                len: 3073,
                max: 3072
            })
        ));
        assert!(matches!(
            validate_path(b"/a b"),
            Err(Error::PathBadByte { byte: b' ', at: 2 })
        ));
    }
    /// The table's one pass agrees with a plain walk of the rules, error
    /// and position included, on every path of up to 4 bytes over an
    /// alphabet with each kind of byte.
    #[test]
    fn test_validate_path_matches_a_plain_walk() {
        fn plain(path: &[u8]) -> Result<PathKind, Error> {
            let kind = match path.first() {
                None => return Err(Error::PathEmpty),
                Some(b'/') => PathKind::Absolute,
                Some(b'@') => PathKind::Special,
                Some(_) => PathKind::Relative,
            };
            let mut prev = 0u8;
            for (at, &byte) in path.iter().enumerate() {
                if !is_path_byte(byte) {
                    return Err(Error::PathBadByte { byte, at });
                }
                if byte == b'/' && prev == b'/' {
                    return Err(Error::PathDoubleSlash { at });
                }
                prev = byte;
            }
            if path.len() > 1 && prev == b'/' {
                return Err(Error::PathTrailingSlash);
            }
            Ok(kind)
        }
        let alphabet = [
            b'/', b'a', b'Z', b'9', b'@', b'-', b'_', b'.', 0, b' ', 0xff,
        ];
        let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
        let mut checked = 0;
        for _ in 0..4 {
            let mut longer = Vec::new();
            for p in &paths {
                for &b in &alphabet {
                    let mut q = p.clone();
                    q.push(b);
                    longer.push(q);
                }
            }
            for p in &longer {
                assert_eq!(
                    format!("{:?}", validate_path(p)),
                    format!("{:?}", plain(p)),
                    "path {p:?}"
                );
                checked += 1;
            }
            paths = longer;
        }
        assert_eq!(checked, 11 + 121 + 1331 + 14641);
        for b in 0..=255u8 {
            assert_eq!(
                validate_path(&[b'/', b]).is_ok(),
                is_path_byte(b) && b != b'/'
            );
        }
    }
}
