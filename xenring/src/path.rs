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
    // Two passes without branches on the bytes: a table lookup each for
    // the bytes allowed, and each byte against the next for a doubled
    // slash (which the compiler does many bytes at a time). Only a path
    // found wrong is walked again, to say where and why.
    let bad = path.iter().fold(0u8, |bad, &b| bad | BAD[usize::from(b)]);
    // (`zip` stops at the shorter side: each byte but the last, against
    // the one after it.)
    let doubled = path
        .iter()
        .zip(&path[1..])
        .fold(false, |d, (&a, &b)| d | ((a == b'/') & (b == b'/')));
    if bad != 0 || doubled {
        return Err(first_error(path));
    }
    if path.len() > 1 && path.last() == Some(&b'/') {
        return Err(Error::PathTrailingSlash);
    }
    Ok(kind)
}

/// 1 for each byte not allowed in a path ([`is_path_byte`]), else 0.
static BAD: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b: u8 = 0;
    loop {
        table[b as usize] = !is_path_byte(b) as u8;
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
        // Longer paths (the passes over them go many bytes at a time),
        // with a wrong byte or slash anywhere.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % n as u64).unwrap()
        };
        for _ in 0..20_000 {
            let len = 1 + next(300);
            let mut p: Vec<u8> = (0..len)
                .map(|_| [b'a', b'/', b'Z', b'9', b'-'][next(5)])
                .collect();
            if next(2) == 0 {
                p[next(len)] = alphabet[next(alphabet.len())];
            }
            assert_eq!(
                format!("{:?}", validate_path(&p)),
                format!("{:?}", plain(&p)),
                "path {p:?}"
            );
        }
        for b in 0..=255u8 {
            assert_eq!(
                validate_path(&[b'/', b]).is_ok(),
                is_path_byte(b) && b != b'/'
            );
        }
    }
}
