//! The access log (`-T FILE`, XS_CONTROL `log`/`logfile`): one line per
//! request, written as the engine handles it. A write that fails switches
//! the log off (logged once) rather than stopping the daemon.

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
            file: File::options().create(true).append(true).open(path)?,
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
            .map(|p| String::from_utf8_lossy(p).into_owned())
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
