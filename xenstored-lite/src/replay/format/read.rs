//! Reading a recording: a strict reader over the whole file in memory,
//! which says where a truncated file stops.

use xenring::{Header, XsErrno};

use super::error::FormatError;
use super::event::{Answer, BoundaryEvent, ConnectKind, Outcome};
use super::{kind, HEADER_LEN, MAGIC, PAYLOAD_MAX, VERSION};
use crate::engine::Counters;

/// Reads events from a whole recording in memory.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    index: u64,
}

/// What [`Reader::next_event`] found (an event borrows the recording).
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// An event.
    Event(BoundaryEvent<'a>),
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

    fn header(&mut self) -> Result<Header, FormatError> {
        let raw = self.take(xenring::wire::HEADER_SIZE, "header")?;
        let mut h = [0u8; xenring::wire::HEADER_SIZE];
        h.copy_from_slice(raw);
        Ok(Header::from_bytes(&h))
    }

    fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.pos..).unwrap_or_default();
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
    pub fn next_event(&mut self) -> Result<Next<'a>, FormatError> {
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
                BoundaryEvent::Start { args }
            }
            kind::RESTORE => {
                let stream = p.bytes("stream")?;
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
                BoundaryEvent::Restore { stream, outcomes }
            }
            kind::TIME => BoundaryEvent::Time(p.u64("time")?),
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
                BoundaryEvent::Connect { conn, kind }
            }
            kind::INPUT => BoundaryEvent::Input {
                conn: p.u32("connection")?,
                bytes: p.rest(),
            },
            kind::OUTPUT => BoundaryEvent::Output {
                conn: p.u32("connection")?,
                bytes: p.rest(),
            },
            kind::CLOSE => BoundaryEvent::Close {
                conn: p.u32("connection")?,
            },
            kind::VIOLATION => BoundaryEvent::Violation {
                conn: p.u32("connection")?,
            },
            kind::RESET => BoundaryEvent::Reset {
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
                BoundaryEvent::Introduced { token, result }
            }
            kind::DOMAIN_STATE => {
                let domid = p.u16("domid")?;
                let flags = p.u8("flags")?;
                if flags & !3 != 0 {
                    return Err(p.bad("flags"));
                }
                BoundaryEvent::DomainState {
                    domid,
                    shutdown: flags & 1 != 0,
                    dying: flags & 2 != 0,
                }
            }
            kind::ANSWER => {
                let conn = p.u32("connection")?;
                let header = p.header()?;
                let answer = match p.u8("answer kind")? {
                    0 => Answer::Text(
                        String::from_utf8(p.rest().to_vec())
                            .map_err(|_| p.bad("answer (not UTF-8)"))?,
                    ),
                    1 => Answer::Error(p.errno("errno")?),
                    _ => return Err(p.bad("answer kind")),
                };
                BoundaryEvent::Answer {
                    conn,
                    header,
                    answer,
                }
            }
            kind::HAND_OVER => BoundaryEvent::HandOver,
            kind::HOLD => match p.u8("hold")? {
                0 => BoundaryEvent::Hold { on: false },
                1 => BoundaryEvent::Hold { on: true },
                _ => return Err(p.bad("hold (not 0 or 1)")),
            },
            kind::RING_INDICES => BoundaryEvent::RingIndices {
                conn: p.u32("connection")?,
                req_cons: p.u32("req_cons")?,
                rsp_prod: p.u32("rsp_prod")?,
            },
            kind::COUNTERS => {
                let next_token = p.u64("next token")?;
                let replies = p.u64("replies")?;
                let n = p.u32("connection count")?;
                let mut next_tx = Vec::new();
                for _ in 0..n {
                    next_tx.push((p.u32("connection")?, p.u32("next transaction id")?));
                }
                BoundaryEvent::Counters(Counters {
                    next_token,
                    replies,
                    next_tx,
                })
            }
            kind::STORE_IMAGE => BoundaryEvent::StoreImage(p.rest()),
            kind::FATAL => {
                let event = p.u64("event")?;
                let request = match p.u8("request present")? {
                    0 => None,
                    1 => Some((p.u32("connection")?, p.header()?)),
                    _ => return Err(p.bad("request present (not 0 or 1)")),
                };
                BoundaryEvent::Fatal { event, request }
            }
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
