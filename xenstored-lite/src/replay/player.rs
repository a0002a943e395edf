//! `--replay=DIR`: runs the daemon's core on a recording — no Xen, no
//! mock-xen, no sockets — feeding the recorded inputs in their recorded
//! order with the recorded clock, as fast as it can, and (verify mode)
//! checking every byte it would send against what the live daemon sent.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use xenring::codec::split_args;
use xenring::{DomId, Message, MsgType};

use super::format::{BoundaryEvent, FormatError, Next, Reader};
use crate::cli::Cli;
use crate::engine::{ConnId, Engine};
use crate::shell::state::{ApplyError, ShellState};

/// How to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Compare every byte sent with the recording; stop at the first
    /// difference.
    pub verify: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Test-only: alter the Nth reply the engine queues (to show that verify
    /// mode catches a change in behaviour).
    pub alter_reply: Option<u64>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events replayed.
    pub events: u64,
    /// Requests the engine handled.
    pub requests: u64,
    /// Output events checked (verify mode) or replayed.
    pub outputs: u64,
    /// Octets of output compared.
    pub output_bytes: u64,
    /// Daemon processes in the recording (1 + live updates).
    pub processes: u64,
    /// Time the recording spans, from its clock readings, in ms.
    pub recorded_ms: u64,
    /// Wall time the replay took.
    pub wall: Duration,
    /// Where the recording stopped inside an event (daemon killed), if so.
    pub truncated_at: Option<u64>,
}

impl Summary {
    /// Requests per second of wall time.
    pub fn requests_per_sec(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.requests as f64 / s
        } else {
            0.0
        }
    }
}

/// Where a replayed daemon first sent something else than the recorded
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The output event (from 0).
    pub event: u64,
    /// Its connection.
    pub conn: ConnId,
    /// Its domain (rings).
    pub domid: Option<DomId>,
    /// The connection's last request, described.
    pub request: Option<String>,
    /// What the recording says was sent.
    pub expected: Vec<u8>,
    /// What the replayed daemon would send.
    pub actual: Vec<u8>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "divergence at event {}:", self.event)?;
        writeln!(
            f,
            "  connection {} ({})",
            self.conn,
            match self.domid {
                Some(d) => format!("domain {d}"),
                None => "socket".to_string(),
            }
        )?;
        writeln!(
            f,
            "  request:  {}",
            self.request.as_deref().unwrap_or("(none yet)")
        )?;
        writeln!(f, "  expected: {}", describe_bytes(&self.expected))?;
        write!(f, "  actual:   {}", describe_bytes(&self.actual))
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording cannot be read.
    #[error("cannot read the recording {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The recording is malformed.
    #[error("the recording is malformed: {0}")]
    Format(#[from] FormatError),
    /// An event that makes no sense where it is.
    #[error("event {index}: {why}")]
    Inconsistent {
        /// Event number.
        index: u64,
        /// What is wrong.
        why: String,
    },
    /// The replayed daemon sent something else (verify mode).
    #[error("{0}")]
    Divergence(Box<Divergence>),
}

/// Printable bytes: the xs_wire message(s) if they decode, else escaped.
fn describe_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    let mut decoder = xenring::codec::Decoder::new();
    let mut input = b;
    let mut whole = true;
    while !input.is_empty() {
        match decoder.decode(&mut input) {
            Ok(Some(msg)) => {
                if !out.is_empty() {
                    out.push_str(" + ");
                }
                out.push_str(&describe_message(&msg));
            }
            Ok(None) => {}
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    if whole && decoder.is_idle() && !out.is_empty() {
        out
    } else {
        format!("{:?} ({} octets)", String::from_utf8_lossy(b), b.len())
    }
}

fn describe_message(msg: &Message) -> String {
    let ty = MsgType::try_from(msg.header.msg_type).map_or("XS_UNKNOWN", MsgType::name);
    let args: Vec<String> = split_args(&msg.payload)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    format!(
        "{ty} req {} tx {} {:?}",
        msg.header.req_id, msg.header.tx_id, args
    )
}

/// The engine settings a recorded daemon ran with (its command line).
fn config_from_args(args: &[String], index: u64) -> Result<crate::engine::Config, ReplayError> {
    let cli = Cli::try_parse_from(
        std::iter::once("xenstored-lite".to_string()).chain(args.iter().cloned()),
    )
    .map_err(|e| ReplayError::Inconsistent {
        index,
        why: format!("the recorded command line does not parse here: {e}"),
    })?;
    cli.engine_config().map_err(|e| ReplayError::Inconsistent {
        index,
        why: format!("the recorded command line: {e}"),
    })
}

/// Replays the recording in `dir`. The file is mapped, not read: the
/// events borrow their bytes from the page cache, memory does not grow
/// with the recording, and nothing is copied or zeroed first.
pub fn replay(dir: &Path, opts: &Options) -> Result<Summary, ReplayError> {
    let path = dir.join(crate::shell::RECORDING_FILE);
    let io = |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    // SAFETY: the map is read-only and private to this process, and the
    // bytes are only read through the slice below while the map lives.
    // What the slice cannot guard against is the file shrinking under it
    // (SIGBUS): a daemon never truncates a recording (it appends, and one
    // that starts a recording afresh replaces the file, leaving this map
    // on the old one), so only someone truncating it by hand can do that.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    // Read front to back, once: the kernel may read ahead and drop behind.
    let _ = map.advise(memmap2::Advice::Sequential);
    replay_bytes(&map, opts)
}

/// Replays a recording held in memory.
pub fn replay_bytes(data: &[u8], opts: &Options) -> Result<Summary, ReplayError> {
    let mut reader = Reader::new(data)?;
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut state: Option<ShellState> = None;
    let mut requests_before = 0u64;
    let (mut first_time, mut last_time) = (None::<u64>, 0u64);
    let bar = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let bar = indicatif::ProgressBar::new(data.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "replay {bar:40} {bytes}/{total_bytes} {msg} ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    loop {
        let index = reader.events_read();
        let event = match reader.next_event()? {
            Next::Event(e) => e,
            Next::End => break,
            Next::Truncated { offset } => {
                summary.truncated_at = Some(offset);
                break;
            }
        };
        summary.events += 1;
        if let Some(bar) = &bar {
            if index % 4096 == 0 {
                bar.set_position(reader.offset());
                bar.set_message(format!("{} events", summary.events));
            }
        }
        if let BoundaryEvent::Start { args } = &event {
            // A new process: a new state, with the settings it ran with.
            if let Some(old) = state.take() {
                requests_before += old.engine().requests();
            }
            if let Some(first) = first_time.take() {
                summary.recorded_ms += last_time.saturating_sub(first);
            }
            let mut config = config_from_args(args, index)?;
            if opts.alter_reply.is_some() {
                config.test_alter_reply = opts.alter_reply;
            }
            let mut s = ShellState::new(Engine::new(config), None);
            if opts.verify {
                s.keep_last_requests();
            }
            state = Some(s);
            summary.processes += 1;
        }
        let Some(s) = state.as_mut() else {
            if event == BoundaryEvent::HandOver {
                // Marks the recording only; nothing to apply it to yet.
                continue;
            }
            return Err(ReplayError::Inconsistent {
                index,
                why: "an event before the recording's Start".into(),
            });
        };
        observe(s, &event, index, opts, &mut summary)?;
        if let BoundaryEvent::Time(t) = event {
            first_time.get_or_insert(t);
            last_time = t;
        }
        match s.apply(event, &mut |_, _, _, _| {}) {
            Ok(_) => {}
            // A decode error ended the connection live; the recording has
            // the Close or Violation that followed.
            Err(ApplyError::Decode { .. }) => {}
            Err(ApplyError::Stream(e)) => {
                return Err(ReplayError::Inconsistent {
                    index,
                    why: format!("the recorded migration stream: {e}"),
                })
            }
            Err(ApplyError::TakeOver(e)) => {
                return Err(ReplayError::Inconsistent {
                    index,
                    why: e.to_string(),
                })
            }
            Err(ApplyError::StoreImage(e)) => {
                return Err(ReplayError::Inconsistent {
                    index,
                    why: format!("the recorded store image: {e}"),
                })
            }
        }
        // Their outcomes are recorded as inputs of their own.
        drop(s.take_actions());
    }
    if let Some(first) = first_time {
        summary.recorded_ms += last_time.saturating_sub(first);
    }
    summary.requests = requests_before + state.as_ref().map_or(0, |s| s.engine().requests());
    summary.wall = started.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// What replay checks before applying an event: an `Output` must be what
/// the replayed state offers to write (verify mode), and is counted.
pub(crate) fn observe(
    s: &mut ShellState,
    event: &BoundaryEvent<'_>,
    index: u64,
    opts: &Options,
    summary: &mut Summary,
) -> Result<(), ReplayError> {
    let BoundaryEvent::Output { conn, bytes } = *event else {
        return Ok(());
    };
    let actual = s
        .next_output(conn)
        .map(|b| &b[..bytes.len().min(b.len())])
        .unwrap_or_default();
    if opts.verify && actual != bytes {
        let actual = actual.to_vec();
        return Err(ReplayError::Divergence(Box::new(Divergence {
            event: index,
            conn,
            domid: s.domid(conn),
            request: s.last_request(conn).map(describe_message),
            expected: bytes.to_vec(),
            actual,
        })));
    }
    summary.outputs += 1;
    summary.output_bytes += bytes.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::format::{encode, header};

    fn recording(dir: &Path, events: &[BoundaryEvent<'_>]) {
        let mut data = header().to_vec();
        for e in events {
            encode(e, &mut data);
        }
        std::fs::write(dir.join(crate::shell::RECORDING_FILE), data).unwrap();
    }

    #[test]
    fn test_replay_maps_the_recording_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        recording(
            dir.path(),
            &[
                BoundaryEvent::Start { args: vec![] },
                BoundaryEvent::Time(5),
                BoundaryEvent::Time(9),
            ],
        );
        let s = replay(dir.path(), &Options::default()).unwrap();
        assert_eq!((s.events, s.processes, s.recorded_ms), (3, 1, 4));
        assert_eq!(s.truncated_at, None);
    }

    #[test]
    fn test_replay_names_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = replay(dir.path(), &Options::default()).unwrap_err();
        assert!(
            matches!(&err, ReplayError::Io { path, .. } if path.ends_with(crate::shell::RECORDING_FILE)),
            "{err}"
        );
        // An empty file maps to nothing, and is not a recording.
        std::fs::write(dir.path().join(crate::shell::RECORDING_FILE), b"").unwrap();
        let err = replay(dir.path(), &Options::default()).unwrap_err();
        assert!(
            matches!(err, ReplayError::Format(FormatError::NotARecording)),
            "{err}"
        );
    }
}
