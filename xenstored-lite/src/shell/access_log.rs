//! The access log (`-T FILE`, XS_CONTROL `log`/`logfile`): one line per
//! request, written as the engine handles it. A write that fails switches
//! the log off (logged once) rather than stopping the daemon.
//!
//! A line is `MS conn C domid D TYPE tx T PATH -> RESULT`, and PATH is
//! the request's first argument as the guest sent it, escaped so that it
//! cannot forge a line or a field: the bytes `!`..=`~` but `\` stand for
//! themselves, `\` is written `\\`, and every other byte (space, newline,
//! any control byte, anything from 0x80 up) is written `\xHH` with two
//! lower-case hex digits. The escape is reversible (`\\` and `\xHH` are
//! the only sequences with a backslash), so the bytes the guest sent can
//! be read back exactly. C xenstored's trace file writes the payload as it
//! came (NUL turned into a space): a newline there starts a new line.
//!
//! The file is created 0600 (`os::open_private`): it shows the whole
//! store's traffic.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use xenring::{DomId, Message, MsgType};

use crate::engine::{ConnId, Engine};

/// The access log's file, appended to. The daemon holds it as an
/// `Option`: `None` is the log switched off.
#[derive(Debug)]
pub(super) struct AccessLog {
    file: File,
}

impl AccessLog {
    /// The log appending to `path` (created if missing).
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: super::os::open_private(File::options().create(true).append(true), path)?,
        })
    }

    /// One line for `msg`, which `engine` has just handled for `conn`, if
    /// the log is on; a failed write switches it off.
    pub(super) fn request(
        log: &mut Option<Self>,
        now: u64,
        engine: &Engine,
        conn: ConnId,
        domid: Option<DomId>,
        msg: &Message,
    ) {
        let Some(this) = log.as_mut() else {
            return;
        };
        let path = xenring::codec::split_args(&msg.payload)
            .next()
            .map(escape)
            .unwrap_or_default();
        let result = match engine.last_result() {
            Some(Ok(())) => "OK".to_string(),
            Some(Err(e)) => e.to_string(),
            None => "pending".to_string(),
        };
        let line = format!(
            "{now} conn {conn} domid {} {} tx {} {path} -> {result}\n",
            domid.unwrap_or(0),
            describe(msg.header.msg_type),
            msg.header.tx_id
        );
        if let Err(e) = this.file.write_all(line.as_bytes()) {
            tracing::warn!("access log write failed, switching it off: {e}");
            *log = None;
        }
    }
}

fn describe(ty: u32) -> &'static str {
    MsgType::try_from(ty).map_or("XS_UNKNOWN", MsgType::name)
}

/// `bytes` escaped for one field of a line (the module doc says how).
pub(super) fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'!'..=b'~' => out.push(char::from(b)),
            _ => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of [`escape`], as a reader of the log would write it.
    fn unescape(s: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            rest = tail;
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match rest {
                [b'\\', tail @ ..] => {
                    out.push(b'\\');
                    rest = tail;
                }
                [b'x', h, l, tail @ ..] => {
                    out.push(u8::from_str_radix(std::str::from_utf8(&[*h, *l]).ok()?, 16).ok()?);
                    rest = tail;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn test_escape_leaves_paths_alone_and_hides_every_other_byte() {
        assert_eq!(
            escape(b"/local/domain/1/data-x_y@z"),
            "/local/domain/1/data-x_y@z"
        );
        assert_eq!(
            escape(b"/a\n1 conn 1 domid 0 XS_WRITE tx 0 /b -> OK"),
            "/a\\x0a1\\x20conn\\x201\\x20domid\\x200\\x20XS_WRITE\\x20tx\\x200\\x20/b\\x20->\\x20OK"
        );
        assert_eq!(escape(b"\\x41"), "\\\\x41");
        assert_eq!(
            escape(&[0, 0x7f, 0x80, 0xff, b'\r']),
            "\\x00\\x7f\\x80\\xff\\x0d"
        );
    }

    #[test]
    fn test_escape_is_reversible_and_printable_for_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain(*b"\\\\x\\xzz\\").collect();
        let e = escape(&all);
        assert!(e.bytes().all(|b| (b'!'..=b'~').contains(&b)), "{e}");
        assert_eq!(unescape(&e).as_deref(), Some(&all[..]));
        for bytes in [&b""[..], b"\\", b"\\\\", b"x\\x00", b"\n\n"] {
            assert_eq!(unescape(&escape(bytes)).as_deref(), Some(bytes));
        }
    }
}
