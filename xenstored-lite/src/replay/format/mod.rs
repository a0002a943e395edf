//! The recording file: a header, then events, each a kind octet, a 32-bit
//! little-endian payload length and the payload. Documented in
//! `docs/recording-format.md`; the reader is strict (every field checked,
//! nothing left over) and says where a truncated file (a daemon killed
//! mid-write) stops.

use std::io::{self, Write};

use xenring::{DomId, Header, XsErrno};

use crate::engine::ConnId;

/// The file's first eight octets.
pub const MAGIC: [u8; 8] = *b"XSRECORD";

/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// Octets before the first event.
pub const HEADER_LEN: usize = 16;

/// Largest payload an event may have (a migration stream of a large host
/// fits; anything larger is a corrupt length).
pub const PAYLOAD_MAX: u32 = 1 << 30;

/// What kind of connection a [`Event::Connect`] opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectKind {
    /// A Unix-socket client.
    Socket,
    /// A domain's ring (dom0's own, served at start-up).
    Ring(DomId),
}

/// What a live update's restore did with one connection of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not restored (its descriptor was unusable).
    Dropped,
    /// A socket client, now connection `conn`.
    Socket(ConnId),
    /// A ring, now connection `conn`.
    Ring(ConnId),
    /// A ring whose domain is gone: registered as `conn`, then released.
    Gone(ConnId),
}

/// A control request the daemon answered itself (live update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A text reply.
    Text(String),
    /// An error reply.
    Error(XsErrno),
}

/// One thing that crossed the platform boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A daemon process started recording, with these arguments (its
    /// settings come from them on replay).
    Start {
        /// The command line after the program name.
        args: Vec<String>,
    },
    /// It took over a migration stream (live update); `outcomes` lists,
    /// per `CONNECTION_DATA` record in stream order, what became of it.
    Restore {
        /// The stream's bytes.
        stream: Vec<u8>,
        /// `(stream conn-id, outcome)`.
        outcomes: Vec<(u32, Outcome)>,
    },
    /// The clock read this many milliseconds.
    Time(u64),
    /// A connection opened.
    Connect {
        /// Its number.
        conn: ConnId,
        /// What it is.
        kind: ConnectKind,
    },
    /// Bytes read from a connection.
    Input {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Bytes a connection took in one write (empty: it took none).
    Output {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A socket closed (end of file, an error, or cut off).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// A ring broke the protocol (or was cut off): no longer served.
    Violation {
        /// The connection.
        conn: ConnId,
    },
    /// A guest reset its ring (reconnection handshake).
    Reset {
        /// The connection.
        conn: ConnId,
    },
    /// The outcome of mapping and binding an introduced domain's ring.
    Introduced {
        /// The engine's token.
        token: u64,
        /// The new connection, or the error for the client.
        result: Result<ConnId, XsErrno>,
    },
    /// What the hypervisor said about a domain.
    DomainState {
        /// The domain.
        domid: DomId,
        /// Shut down.
        shutdown: bool,
        /// Dying or gone.
        dying: bool,
    },
    /// The daemon answered a control request itself.
    Answer {
        /// The connection.
        conn: ConnId,
        /// The request's header.
        header: Header,
        /// The answer.
        answer: Answer,
    },
    /// The process exec'd a new binary (live update); a `Start` follows.
    HandOver,
}

/// Why a recording cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Too short for the header, or not a recording.
    #[error("not a xenstored-lite recording (bad or short header)")]
    NotARecording,
    /// Written by another format version.
    #[error("recording format version {0} (this build reads version {VERSION})")]
    Version(u32),
    /// An event this version does not define.
    #[error("event {index} at offset {offset}: unknown event kind {kind}")]
    UnknownKind {
        /// Event number (from 0).
        index: u64,
        /// Its offset in the file.
        offset: u64,
        /// The kind octet.
        kind: u8,
    },
    /// A payload whose fields do not add up.
    #[error("event {index} at offset {offset}: bad {what}")]
    BadPayload {
        /// Event number.
        index: u64,
        /// Its offset.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A length beyond [`PAYLOAD_MAX`].
    #[error("event {index} at offset {offset}: payload length {len} is implausible")]
    BadLength {
        /// Event number.
        index: u64,
        /// Its offset.
        offset: u64,
        /// The length field.
        len: u32,
    },
}

mod kind {
    pub const START: u8 = 1;
    pub const RESTORE: u8 = 2;
    pub const TIME: u8 = 3;
    pub const CONNECT: u8 = 4;
    pub const INPUT: u8 = 5;
    pub const OUTPUT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const VIOLATION: u8 = 8;
    pub const RESET: u8 = 9;
    pub const INTRODUCED: u8 = 10;
    pub const DOMAIN_STATE: u8 = 11;
    pub const ANSWER: u8 = 12;
    pub const HAND_OVER: u8 = 13;
}

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
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Input { conn, bytes } => return encode_io(false, *conn, bytes, out),
        Event::Output { conn, bytes } => return encode_io(true, *conn, bytes, out),
        _ => {}
    }
    let start = out.len();
    out.extend_from_slice(&[0; 5]);
    let k = match event {
        Event::Start { args } => {
            put_u32(out, u32::try_from(args.len()).unwrap_or(u32::MAX));
            for a in args {
                put_bytes(out, a.as_bytes());
            }
            kind::START
        }
        Event::Restore { stream, outcomes } => {
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
        Event::Time(t) => {
            out.extend_from_slice(&t.to_le_bytes());
            kind::TIME
        }
        Event::Connect { conn, kind: k } => {
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
        Event::Input { .. } | Event::Output { .. } => return,
        Event::Close { conn } => {
            put_u32(out, *conn);
            kind::CLOSE
        }
        Event::Violation { conn } => {
            put_u32(out, *conn);
            kind::VIOLATION
        }
        Event::Reset { conn } => {
            put_u32(out, *conn);
            kind::RESET
        }
        Event::Introduced { token, result } => {
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
        Event::DomainState {
            domid,
            shutdown,
            dying,
        } => {
            out.extend_from_slice(&domid.to_le_bytes());
            out.push(u8::from(*shutdown) | (u8::from(*dying) << 1));
            kind::DOMAIN_STATE
        }
        Event::Answer {
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
        Event::HandOver => kind::HAND_OVER,
    };
    let len = u32::try_from(out.len() - start - 5).unwrap_or(u32::MAX);
    out[start] = k;
    out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
}

/// Appends an `Input` (`output` false) or `Output` event, framed, straight
/// from the bytes (the recorder's hot path builds no [`Event`]).
pub fn encode_io(output: bool, conn: ConnId, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(if output { kind::OUTPUT } else { kind::INPUT });
    put_u32(out, u32::try_from(4 + bytes.len()).unwrap_or(u32::MAX));
    put_u32(out, conn);
    out.extend_from_slice(bytes);
}

/// Reads events from a whole recording in memory.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    index: u64,
}

/// What [`Reader::next_event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// An event.
    Event(Event),
    /// The end of the file, after a complete event.
    End,
    /// The file stops inside an event (the daemon was killed while
    /// writing): everything before `offset` was read.
    Truncated {
        /// Offset of the incomplete event.
        offset: u64,
    },
}

struct Payload<'a> {
    data: &'a [u8],
    pos: usize,
    index: u64,
    offset: u64,
}

impl<'a> Payload<'a> {
    fn bad(&self, what: &'static str) -> FormatError {
        FormatError::BadPayload {
            index: self.index,
            offset: self.offset,
            what,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.bad(what))?;
        let s = self.data.get(self.pos..end).ok_or_else(|| self.bad(what))?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], FormatError> {
        let n = self.u32(what)?;
        let n = usize::try_from(n).map_err(|_| self.bad(what))?;
        self.take(n, what)
    }

    fn rest(&mut self) -> Vec<u8> {
        let r = self.data.get(self.pos..).unwrap_or_default().to_vec();
        self.pos = self.data.len();
        r
    }

    fn errno(&mut self, what: &'static str) -> Result<XsErrno, FormatError> {
        let i = self.u8(what)?;
        XsErrno::ALL
            .get(usize::from(i))
            .copied()
            .ok_or_else(|| self.bad(what))
    }

    fn done(&self) -> Result<(), FormatError> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(self.bad("payload length (octets left over)"))
        }
    }
}

impl<'a> Reader<'a> {
    /// Checks the header.
    pub fn new(data: &'a [u8]) -> Result<Self, FormatError> {
        if data.len() < HEADER_LEN || data[..8] != MAGIC {
            return Err(FormatError::NotARecording);
        }
        let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        Ok(Self {
            data,
            pos: HEADER_LEN,
            index: 0,
        })
    }

    /// Events read so far.
    pub fn events_read(&self) -> u64 {
        self.index
    }

    /// The offset of the next event.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The next event.
    pub fn next_event(&mut self) -> Result<Next, FormatError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(Next::End);
        }
        let offset = self.pos as u64;
        if rest.len() < 5 {
            return Ok(Next::Truncated { offset });
        }
        let k = rest[0];
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
        if len > PAYLOAD_MAX {
            return Err(FormatError::BadLength {
                index: self.index,
                offset,
                len,
            });
        }
        let Some(body) = usize::try_from(len).ok().and_then(|l| rest.get(5..5 + l)) else {
            return Ok(Next::Truncated { offset });
        };
        let mut p = Payload {
            data: body,
            pos: 0,
            index: self.index,
            offset,
        };
        let event = match k {
            kind::START => {
                let n = p.u32("argument count")?;
                let mut args = Vec::new();
                for _ in 0..n {
                    let a = p.bytes("argument")?;
                    args.push(
                        String::from_utf8(a.to_vec()).map_err(|_| p.bad("argument (not UTF-8)"))?,
                    );
                }
                Event::Start { args }
            }
            kind::RESTORE => {
                let stream = p.bytes("stream")?.to_vec();
                let n = p.u32("outcome count")?;
                let mut outcomes = Vec::new();
                for _ in 0..n {
                    let id = p.u32("outcome conn-id")?;
                    let tag = p.u8("outcome")?;
                    let conn = p.u32("outcome connection")?;
                    let o = match tag {
                        0 => Outcome::Dropped,
                        1 => Outcome::Socket(conn),
                        2 => Outcome::Ring(conn),
                        3 => Outcome::Gone(conn),
                        _ => return Err(p.bad("outcome kind")),
                    };
                    outcomes.push((id, o));
                }
                Event::Restore { stream, outcomes }
            }
            kind::TIME => Event::Time(p.u64("time")?),
            kind::CONNECT => {
                let conn = p.u32("connection")?;
                let kind = match p.u8("connection kind")? {
                    0 => {
                        p.u16("padding")?;
                        ConnectKind::Socket
                    }
                    1 => ConnectKind::Ring(p.u16("domid")?),
                    _ => return Err(p.bad("connection kind")),
                };
                Event::Connect { conn, kind }
            }
            kind::INPUT => Event::Input {
                conn: p.u32("connection")?,
                bytes: p.rest(),
            },
            kind::OUTPUT => Event::Output {
                conn: p.u32("connection")?,
                bytes: p.rest(),
            },
            kind::CLOSE => Event::Close {
                conn: p.u32("connection")?,
            },
            kind::VIOLATION => Event::Violation {
                conn: p.u32("connection")?,
            },
            kind::RESET => Event::Reset {
                conn: p.u32("connection")?,
            },
            kind::INTRODUCED => {
                let token = p.u64("token")?;
                let result = match p.u8("result")? {
                    1 => Ok(p.u32("connection")?),
                    0 => {
                        let i = p.u32("errno")?;
                        Err(usize::try_from(i)
                            .ok()
                            .and_then(|i| XsErrno::ALL.get(i).copied())
                            .ok_or_else(|| p.bad("errno"))?)
                    }
                    _ => return Err(p.bad("result")),
                };
                Event::Introduced { token, result }
            }
            kind::DOMAIN_STATE => {
                let domid = p.u16("domid")?;
                let flags = p.u8("flags")?;
                if flags & !3 != 0 {
                    return Err(p.bad("flags"));
                }
                Event::DomainState {
                    domid,
                    shutdown: flags & 1 != 0,
                    dying: flags & 2 != 0,
                }
            }
            kind::ANSWER => {
                let conn = p.u32("connection")?;
                let raw = p.take(xenring::wire::HEADER_SIZE, "header")?;
                let mut h = [0u8; xenring::wire::HEADER_SIZE];
                h.copy_from_slice(raw);
                let header = Header::from_bytes(&h);
                let answer = match p.u8("answer kind")? {
                    0 => Answer::Text(
                        String::from_utf8(p.rest()).map_err(|_| p.bad("answer (not UTF-8)"))?,
                    ),
                    1 => Answer::Error(p.errno("errno")?),
                    _ => return Err(p.bad("answer kind")),
                };
                Event::Answer {
                    conn,
                    header,
                    answer,
                }
            }
            kind::HAND_OVER => Event::HandOver,
            other => {
                return Err(FormatError::UnknownKind {
                    index: self.index,
                    offset,
                    kind: other,
                })
            }
        };
        p.done()?;
        self.pos += 5 + body.len();
        self.index += 1;
        Ok(Next::Event(event))
    }
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
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
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

    /// Appends an event (buffered).
    pub fn record(&mut self, event: &Event) {
        let before = self.buf.len();
        encode(event, &mut self.buf);
        self.appended(before);
    }

    /// Appends an `Input` (`output` false) or `Output` event for `conn`
    /// straight from the bytes, without building an [`Event`] (the hot
    /// path: one copy, into the buffer).
    pub fn record_io(&mut self, output: bool, conn: ConnId, bytes: &[u8]) {
        let before = self.buf.len();
        encode_io(output, conn, bytes, &mut self.buf);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xenring::MsgType;

    fn all_kinds() -> Vec<Event> {
        vec![
            Event::Start {
                args: vec!["-N".into(), "--mock-xen".into(), "/s".into()],
            },
            Event::Restore {
                stream: b"xenstore....".to_vec(),
                outcomes: vec![
                    (1, Outcome::Socket(3)),
                    (2, Outcome::Ring(4)),
                    (3, Outcome::Gone(5)),
                    (4, Outcome::Dropped),
                ],
            },
            Event::Time(123_456),
            Event::Connect {
                conn: 7,
                kind: ConnectKind::Socket,
            },
            Event::Connect {
                conn: 8,
                kind: ConnectKind::Ring(0),
            },
            Event::Input {
                conn: 7,
                bytes: b"\x02\0\0\0".to_vec(),
            },
            Event::Output {
                conn: 7,
                bytes: vec![],
            },
            Event::Close { conn: 7 },
            Event::Violation { conn: 8 },
            Event::Reset { conn: 8 },
            Event::Introduced {
                token: 9,
                result: Ok(11),
            },
            Event::Introduced {
                token: 10,
                result: Err(XsErrno::EINVAL),
            },
            Event::DomainState {
                domid: 3,
                shutdown: true,
                dying: false,
            },
            Event::Answer {
                conn: 2,
                header: Header::new(MsgType::Control, 5, 0, 3),
                answer: Answer::Text("OK".into()),
            },
            Event::Answer {
                conn: 2,
                header: Header::new(MsgType::Control, 6, 0, 7),
                answer: Answer::Error(XsErrno::EINVAL),
            },
            Event::HandOver,
        ]
    }

    fn file(events: &[Event]) -> Vec<u8> {
        let mut out = header().to_vec();
        for e in events {
            encode(e, &mut out);
        }
        out
    }

    fn read_all(data: &[u8]) -> Result<(Vec<Event>, Next), FormatError> {
        let mut r = Reader::new(data)?;
        let mut out = Vec::new();
        loop {
            match r.next_event()? {
                Next::Event(e) => out.push(e),
                end => return Ok((out, end)),
            }
        }
    }

    #[test]
    fn test_record_io_writes_what_encode_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        {
            let mut r = Recorder::open(&path, false).unwrap();
            r.record_io(false, 7, b"abc");
            r.record_io(true, 8, b"");
        }
        let expected = file(&[
            Event::Input {
                conn: 7,
                bytes: b"abc".to_vec(),
            },
            Event::Output {
                conn: 8,
                bytes: vec![],
            },
        ]);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn test_every_kind_round_trips() {
        let events = all_kinds();
        let (back, end) = read_all(&file(&events)).unwrap();
        assert_eq!(back, events);
        assert_eq!(end, Next::End);
    }

    #[test]
    fn test_truncation_stops_at_the_last_whole_event() {
        let events = all_kinds();
        let data = file(&events);
        for cut in HEADER_LEN..data.len() {
            let (back, end) = read_all(&data[..cut]).unwrap();
            assert!(events.starts_with(&back));
            match end {
                Next::End => assert!(back.len() <= events.len()),
                Next::Truncated { offset } => assert!(offset <= cut as u64),
                Next::Event(_) => unreachable!(),
            }
        }
    }

    #[test]
    fn test_bad_input_is_a_typed_error() {
        assert_eq!(
            Reader::new(b"short").unwrap_err(),
            FormatError::NotARecording
        );
        let mut v2 = header();
        v2[8] = 2;
        assert_eq!(Reader::new(&v2).unwrap_err(), FormatError::Version(2));
        let mut data = header().to_vec();
        data.extend_from_slice(&[99, 0, 0, 0, 0]);
        let err = read_all(&data).unwrap_err();
        assert!(err.to_string().contains("unknown event kind 99"), "{err}");
        let mut data = header().to_vec();
        data.extend_from_slice(&[kind::TIME, 4, 0, 0, 0, 1, 2, 3, 4]);
        let err = read_all(&data).unwrap_err();
        assert!(
            err.to_string().contains("event 0 at offset 16: bad time"),
            "{err}"
        );
        let mut data = header().to_vec();
        data.extend_from_slice(&[kind::CLOSE, 5, 0, 0, 0, 1, 0, 0, 0, 9]);
        let err = read_all(&data).unwrap_err();
        assert!(err.to_string().contains("left over"), "{err}");
    }

    proptest! {
        #[test]
        fn prop_io_events_round_trip(conn in any::<u32>(), bytes in proptest::collection::vec(any::<u8>(), 0..300), t in any::<u64>()) {
            let events = vec![
                Event::Time(t),
                Event::Input { conn, bytes: bytes.clone() },
                Event::Output { conn, bytes },
            ];
            let (back, end) = read_all(&file(&events)).unwrap();
            prop_assert_eq!(back, events);
            prop_assert_eq!(end, Next::End);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut data = header().to_vec();
            data.extend_from_slice(&tail);
            let _ = read_all(&data);
        }
    }
}
