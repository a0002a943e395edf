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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

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
}
