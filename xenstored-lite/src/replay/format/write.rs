//! Writing a recording: framing events, and the buffered [`Recorder`]
//! that appends them to the file from a writer thread.

use std::io::{self, Write};

use xenring::XsErrno;

use super::event::{Answer, BoundaryEvent, ConnectKind, Outcome};
use super::{kind, HEADER_LEN, MAGIC, VERSION};
use crate::engine::ConnId;

fn errno_index(e: XsErrno) -> u8 {
    XsErrno::ALL
        .iter()
        .position(|&x| x == e)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(0)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

/// The file header.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Appends `event`, framed, to `out`.
pub fn encode(event: &BoundaryEvent<'_>, out: &mut Vec<u8>) {
    match event {
        BoundaryEvent::Input { conn, bytes } => return encode_io(false, *conn, bytes, out),
        BoundaryEvent::Output { conn, bytes } => return encode_io(true, *conn, bytes, out),
        _ => {}
    }
    let start = out.len();
    out.extend_from_slice(&[0; 5]);
    let k = match event {
        BoundaryEvent::Start { args } => {
            put_u32(out, u32::try_from(args.len()).unwrap_or(u32::MAX));
            for a in args {
                put_bytes(out, a.as_bytes());
            }
            kind::START
        }
        BoundaryEvent::Restore { stream, outcomes } => {
            put_bytes(out, stream);
            put_u32(out, u32::try_from(outcomes.len()).unwrap_or(u32::MAX));
            for (id, o) in outcomes {
                put_u32(out, *id);
                let (tag, conn) = match o {
                    Outcome::Dropped => (0u8, 0),
                    Outcome::Socket(c) => (1, *c),
                    Outcome::Ring(c) => (2, *c),
                    Outcome::Gone(c) => (3, *c),
                };
                out.push(tag);
                put_u32(out, conn);
            }
            kind::RESTORE
        }
        BoundaryEvent::Time(t) => {
            out.extend_from_slice(&t.to_le_bytes());
            kind::TIME
        }
        BoundaryEvent::Connect { conn, kind: k } => {
            put_u32(out, *conn);
            match k {
                ConnectKind::Socket => out.extend_from_slice(&[0, 0, 0]),
                ConnectKind::Ring(d) => {
                    out.push(1);
                    out.extend_from_slice(&d.to_le_bytes());
                }
            }
            kind::CONNECT
        }
        // Framed by `encode_io` above; never reached.
        BoundaryEvent::Input { .. } | BoundaryEvent::Output { .. } => return,
        BoundaryEvent::Close { conn } => {
            put_u32(out, *conn);
            kind::CLOSE
        }
        BoundaryEvent::Violation { conn } => {
            put_u32(out, *conn);
            kind::VIOLATION
        }
        BoundaryEvent::Reset { conn } => {
            put_u32(out, *conn);
            kind::RESET
        }
        BoundaryEvent::Introduced { token, result } => {
            out.extend_from_slice(&token.to_le_bytes());
            match result {
                Ok(c) => {
                    out.push(1);
                    put_u32(out, *c);
                }
                Err(e) => {
                    out.push(0);
                    put_u32(out, u32::from(errno_index(*e)));
                }
            }
            kind::INTRODUCED
        }
        BoundaryEvent::DomainState {
            domid,
            shutdown,
            dying,
        } => {
            out.extend_from_slice(&domid.to_le_bytes());
            out.push(u8::from(*shutdown) | (u8::from(*dying) << 1));
            kind::DOMAIN_STATE
        }
        BoundaryEvent::Answer {
            conn,
            header,
            answer,
        } => {
            put_u32(out, *conn);
            out.extend_from_slice(&header.to_bytes());
            match answer {
                Answer::Text(t) => {
                    out.push(0);
                    out.extend_from_slice(t.as_bytes());
                }
                Answer::Error(e) => {
                    out.push(1);
                    out.push(errno_index(*e));
                }
            }
            kind::ANSWER
        }
        BoundaryEvent::HandOver => kind::HAND_OVER,
        BoundaryEvent::Hold { on } => {
            out.push(u8::from(*on));
            kind::HOLD
        }
        BoundaryEvent::RingIndices {
            conn,
            req_cons,
            rsp_prod,
        } => {
            put_u32(out, *conn);
            put_u32(out, *req_cons);
            put_u32(out, *rsp_prod);
            kind::RING_INDICES
        }
        BoundaryEvent::Counters(c) => {
            out.extend_from_slice(&c.next_token.to_le_bytes());
            out.extend_from_slice(&c.replies.to_le_bytes());
            put_u32(out, u32::try_from(c.next_tx.len()).unwrap_or(u32::MAX));
            for &(conn, next) in &c.next_tx {
                put_u32(out, conn);
                put_u32(out, next);
            }
            kind::COUNTERS
        }
        BoundaryEvent::StoreImage(image) => {
            out.extend_from_slice(image);
            kind::STORE_IMAGE
        }
        BoundaryEvent::Fatal { event, request } => {
            out.extend_from_slice(&event.to_le_bytes());
            if let Some((conn, header)) = request {
                out.push(1);
                put_u32(out, *conn);
                out.extend_from_slice(&header.to_bytes());
            } else {
                out.push(0);
            }
            kind::FATAL
        }
    };
    let len = u32::try_from(out.len() - start - 5).unwrap_or(u32::MAX);
    out[start] = k;
    out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
}

/// Appends an `Input` (`output` false) or `Output` event, framed, straight
/// from the bytes (the hot path: one copy, into `out`).
fn encode_io(output: bool, conn: ConnId, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(if output { kind::OUTPUT } else { kind::INPUT });
    put_u32(out, u32::try_from(4 + bytes.len()).unwrap_or(u32::MAX));
    put_u32(out, conn);
    out.extend_from_slice(bytes);
}

/// Buffered appends to a recording file. Nothing is flushed per event: the
/// buffer is handed to a writer thread when it fills, when the daemon goes
/// idle (at most every 10 ms), and — waiting until it is written — before
/// a live update's exec and at exit. The daemon's loop never waits on the
/// disk unless [`Recorder::QUEUE`] buffers are already waiting (then it
/// does: losing events silently would be worse). On a crash, events not yet
/// written (about the last 10 ms, at most the buffers in flight) are lost;
/// the reader then stops at the last whole event.
#[derive(Debug)]
pub struct Recorder {
    buf: Vec<u8>,
    events: u64,
    bytes: u64,
    to_writer: Option<crossbeam::channel::Sender<ToWriter>>,
    spare: crossbeam::channel::Receiver<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
enum ToWriter {
    Data(Vec<u8>),
    Sync(crossbeam::channel::Sender<()>),
}

fn writer_thread(
    mut file: std::fs::File,
    from: crossbeam::channel::Receiver<ToWriter>,
    spare: crossbeam::channel::Sender<Vec<u8>>,
) {
    let mut failed = false;
    for msg in from {
        match msg {
            ToWriter::Data(mut buf) => {
                if let Err(e) = file.write_all(&buf) {
                    if !failed {
                        tracing::warn!("recording: write failed: {e}; events are being lost");
                        failed = true;
                    }
                }
                buf.clear();
                let _ = spare.try_send(buf);
            }
            ToWriter::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Recorder {
    /// Buffer size.
    pub const BUFFER: usize = 256 * 1024;

    /// Full buffers that may wait for the writer before the loop waits.
    pub const QUEUE: usize = 64;

    /// Starts `path` afresh (`append` false) or continues it (a live
    /// update's new process).
    pub fn open(path: &std::path::Path, append: bool) -> io::Result<Self> {
        let existing = append && path.metadata().map(|m| m.len() > 0).unwrap_or(false);
        if !append {
            // A new file, not the old one truncated: a replay that maps
            // the old recording keeps reading it (see `player::replay`).
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // 0600 whatever the umask: the recording holds the whole store.
        let mut file = crate::shell::os::open_private(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append),
            path,
        )?;
        if !existing {
            file.write_all(&header())?;
        }
        let (to_writer, from) = crossbeam::channel::bounded(Self::QUEUE);
        let (spare_tx, spare) = crossbeam::channel::bounded(4);
        let writer = std::thread::Builder::new()
            .name("xsl-recorder".into())
            .spawn(move || writer_thread(file, from, spare_tx))?;
        Ok(Self {
            buf: Vec::with_capacity(Self::BUFFER),
            events: 0,
            bytes: 0,
            to_writer: Some(to_writer),
            spare,
            writer: Some(writer),
        })
    }

    /// Appends an event (buffered; `Input` and `Output` bytes are copied
    /// once, into the buffer).
    pub fn record(&mut self, event: &BoundaryEvent<'_>) {
        let before = self.buf.len();
        encode(event, &mut self.buf);
        self.appended(before);
    }

    fn appended(&mut self, before: usize) {
        self.events += 1;
        self.bytes += (self.buf.len() - before) as u64;
        if self.buf.len() >= Self::BUFFER {
            self.flush();
        }
    }

    /// Whether events wait in the buffer.
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Hands what is buffered to the writer thread.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(Self::BUFFER));
        let full = std::mem::replace(&mut self.buf, next);
        if let Some(tx) = &self.to_writer {
            if tx.send(ToWriter::Data(full)).is_err() {
                tracing::warn!("recording: the writer thread is gone; events are being lost");
            }
        }
    }

    /// Writes out everything recorded so far and waits until it is in the
    /// file (before an exec; at exit).
    pub fn sync(&mut self) {
        self.flush();
        let (done_tx, done) = crossbeam::channel::bounded(1);
        if let Some(tx) = &self.to_writer {
            if tx.send(ToWriter::Sync(done_tx)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    /// Events and octets recorded by this process.
    pub fn totals(&self) -> (u64, u64) {
        (self.events, self.bytes)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
        drop(self.to_writer.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
