//! Framing: an incremental decoder, an encoder, and the NUL-separated
//! argument helpers.

use alloc::vec::Vec;

use crate::error::Error;
use crate::wire::{Header, MsgType, XsErrno, HEADER_SIZE, PAYLOAD_MAX_U32};

/// One complete message: a header and `header.len` payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `header.len == payload.len()` always holds for messages
    /// built by this crate.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message of a known type. Fails if the payload exceeds 4096 bytes.
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Result<Self, Error> {
        Self::with_raw_type(ty.raw(), req_id, tx_id, payload)
    }

    /// A message with any type value (to answer or to test unknown types).
    pub fn with_raw_type(
        msg_type: u32,
        req_id: u32,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Self, Error> {
        let len = payload_len(&payload)?;
        Ok(Self {
            header: Header {
                msg_type,
                req_id,
                tx_id,
                len,
            },
            payload,
        })
    }

    /// An `XS_ERROR` reply to `request`.
    pub fn error_reply(request: &Header, err: XsErrno) -> Self {
        let payload = err.wire_payload().to_vec();
        Self {
            header: Header {
                msg_type: MsgType::Error.raw(),
                req_id: request.req_id,
                tx_id: request.tx_id,
                len: payload_len(&payload).unwrap_or(0),
            },
            payload,
        }
    }

    /// The decoded type.
    pub fn msg_type(&self) -> Result<MsgType, Error> {
        self.header.msg_type()
    }

    /// Appends the encoded message to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER_SIZE + self.payload.len());
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The encoded message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Size on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_SIZE + self.payload.len()
    }
}

fn payload_len(payload: &[u8]) -> Result<u32, Error> {
    checked_payload_len(payload.len())
}

/// A payload length as the header carries it, if the wire allows it
/// (at most 4096 bytes).
pub(crate) fn checked_payload_len(len: usize) -> Result<u32, Error> {
    match u32::try_from(len) {
        Ok(len) if len <= PAYLOAD_MAX_U32 => Ok(len),
        Ok(len) => Err(Error::PayloadTooLong { len }),
        Err(_) => Err(Error::PayloadTooLong { len: u32::MAX }),
    }
}

/// Encodes a message without building a [`Message`] first.
pub fn encode(
    out: &mut Vec<u8>,
    ty: MsgType,
    req_id: u32,
    tx_id: u32,
    payload: &[u8],
) -> Result<(), Error> {
    let len = payload_len(payload)?;
    out.extend_from_slice(&Header::new(ty, req_id, tx_id, len).to_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Incremental decoder: takes bytes in any chunking, yields complete messages.
///
/// A partial header or payload is kept between calls. A header announcing
/// more than 4096 bytes is [`Error::PayloadTooLong`] as soon as the header is
/// complete; the decoder then stays in that error (the stream cannot be
/// re-synchronised).
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    header: [u8; HEADER_SIZE],
    header_len: usize,
    current: Option<Header>,
    payload: Vec<u8>,
    poisoned: Option<u32>,
}

impl Decoder {
    /// A decoder at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes bytes from the front of `input` until one message is complete
    /// (returned) or `input` is exhausted (`Ok(None)`; the partial message is
    /// kept). Call again with the rest of `input` for further messages.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Message>, Error> {
        if let Some(len) = self.poisoned {
            return Err(Error::PayloadTooLong { len });
        }
        if self.header_len == 0 && self.current.is_none() {
            if let Some(msg) = Self::whole(input) {
                return Ok(Some(msg));
            }
        }
        let header = match self.current {
            Some(header) => header,
            None => {
                let take = (HEADER_SIZE - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&input[..take]);
                self.header_len += take;
                *input = &input[take..];
                if self.header_len < HEADER_SIZE {
                    return Ok(None);
                }
                let header = Header::from_bytes(&self.header);
                if header.len > PAYLOAD_MAX_U32 {
                    self.poisoned = Some(header.len);
                    return Err(Error::PayloadTooLong { len: header.len });
                }
                self.current = Some(header);
                // The payload left empty by the last message's `take`:
                // allocated once, at its size.
                self.payload = Vec::with_capacity(header.len as usize);
                header
            }
        };
        let want = header.len as usize - self.payload.len();
        let take = want.min(input.len());
        self.payload.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if take < want {
            return Ok(None);
        }
        self.current = None;
        self.header_len = 0;
        Ok(Some(Message {
            header,
            payload: core::mem::take(&mut self.payload),
        }))
    }

    /// At a message boundary, the message `input` holds whole (header and
    /// payload), taken from it without going through the decoder's
    /// buffers; `None` (nothing taken) if it holds less than one.
    fn whole(input: &mut &[u8]) -> Option<Message> {
        let (head, rest) = input.split_first_chunk::<HEADER_SIZE>()?;
        let header = Header::from_bytes(head);
        if header.len > PAYLOAD_MAX_U32 {
            return None; // the slow path poisons the decoder
        }
        let (payload, rest) = rest.split_at_checked(header.len as usize)?;
        *input = rest;
        Some(Message {
            header,
            payload: payload.to_vec(),
        })
    }

    /// Decodes every complete message in `input`, appending them to `out`.
    pub fn decode_all(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), Error> {
        while let Some(msg) = self.decode(&mut input)? {
            out.push(msg);
        }
        Ok(())
    }

    /// Whether the decoder sits at a message boundary (nothing buffered).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.current.is_none()
    }

    /// The raw bytes of the incomplete message received so far (header bytes,
    /// then payload bytes), e.g. to hand them to a new process on live update.
    /// Feeding them to a fresh decoder restores this state exactly.
    pub fn partial(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_len + self.payload.len());
        out.extend_from_slice(&self.header[..self.header_len]);
        if self.current.is_some() {
            out.extend_from_slice(&self.payload);
        }
        out
    }

    /// Bytes still needed to complete the current message, if its header is
    /// complete.
    pub fn payload_missing(&self) -> Option<usize> {
        self.current
            .map(|h| (h.len as usize).saturating_sub(self.payload.len()))
    }
}

/// Splits a payload into its NUL-terminated strings, as C xenstored's
/// `get_strings` does: every NUL ends an argument; bytes after the last NUL
/// form a final argument (so `"a\0b"` and `"a\0b\0"` both give `a`, `b`).
pub fn split_args(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    let empty = payload.is_empty();
    body.split(|&b| b == 0).filter(move |_| !empty)
}

/// Splits `<path>|<value|>` (WRITE's payload): the first NUL-terminated
/// string and every byte after its NUL, NULs included. `None` if there is no
/// NUL at all.
pub fn split_first_arg(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = payload.iter().position(|&b| b == 0)?;
    Some((&payload[..nul], &payload[nul + 1..]))
}

/// Builds a payload of NUL-terminated strings: `a\0b\0...`.
pub fn build_args(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for arg in args {
        out.extend_from_slice(arg);
        out.push(0);
    }
    out
}

/// Builds WRITE's payload: `path\0value` (the value is raw, not terminated).
pub fn build_path_value(path: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + 1 + value.len());
    out.extend_from_slice(path);
    out.push(0);
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn test_decoder_split_header_and_payload_completes() {
        let msg = Message::new(MsgType::Read, 5, 0, b"/local\0".to_vec()).unwrap();
        let bytes = msg.to_bytes();
        let mut dec = Decoder::new();
        let mut first = &bytes[..10];
        assert_eq!(dec.decode(&mut first).unwrap(), None);
        assert!(!dec.is_idle());
        assert_eq!(dec.partial(), &bytes[..10]);
        let mut rest = &bytes[10..];
        assert_eq!(dec.decode(&mut rest).unwrap(), Some(msg));
        assert!(dec.is_idle());
    }

    #[test]
    fn test_decoder_reports_what_is_missing() {
        let msg = Message::new(MsgType::Write, 3, 0, b"/a\0value".to_vec()).unwrap();
        assert_eq!(msg.wire_len(), 16 + 8);
        let bytes = msg.to_bytes();
        assert_eq!(bytes.len(), msg.wire_len());
        let mut dec = Decoder::new();
        assert_eq!(dec.payload_missing(), None);
        let mut head = &bytes[..12];
        assert_eq!(dec.decode(&mut head).unwrap(), None);
        assert_eq!(dec.payload_missing(), None, "header incomplete");
        let mut more = &bytes[12..19];
        assert_eq!(dec.decode(&mut more).unwrap(), None);
        assert_eq!(dec.payload_missing(), Some(5));
        assert_eq!(dec.partial(), &bytes[..19]);
        let mut rest = &bytes[19..];
        assert_eq!(dec.decode(&mut rest).unwrap(), Some(msg));
        assert_eq!(dec.payload_missing(), None);
        assert!(dec.is_idle());
    }

    #[test]
    fn test_decoder_oversized_len_errors_at_header() {
        let mut bytes = Header::new(MsgType::Write, 1, 0, 4097).to_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 8]);
        let mut dec = Decoder::new();
        let mut input = &bytes[..];
        assert!(matches!(
            dec.decode(&mut input),
            Err(Error::PayloadTooLong { len: 4097 })
        ));
        let mut more: &[u8] = &[1, 2, 3];
        assert!(matches!(
            dec.decode(&mut more),
            Err(Error::PayloadTooLong { len: 4097 })
        ));
    }

    #[test]
    fn test_decoder_max_payload_accepted() {
        let msg = Message::new(MsgType::Write, 1, 0, vec![b'x'; 4096]).unwrap();
        let mut out = Vec::new();
        Decoder::new()
            .decode_all(&msg.to_bytes(), &mut out)
            .unwrap();
        assert_eq!(out, vec![msg]);
        assert!(Message::new(MsgType::Write, 1, 0, vec![0; 4097]).is_err());
    }

    #[test]
    fn test_decoder_unknown_type_still_framed() {
        let msg = Message::with_raw_type(999, 1, 0, b"x\0".to_vec()).unwrap();
        let mut out = Vec::new();
        Decoder::new()
            .decode_all(&msg.to_bytes(), &mut out)
            .unwrap();
        assert!(matches!(
            out[0].msg_type(),
            Err(Error::UnknownMessageType(999))
        ));
    }

    #[test]
    fn test_args_split_like_get_strings() {
        let v: Vec<&[u8]> = split_args(b"a\0b\0").collect();
        assert_eq!(v, vec![&b"a"[..], b"b"]);
        let v: Vec<&[u8]> = split_args(b"a\0b").collect();
        assert_eq!(v, vec![&b"a"[..], b"b"]);
        let v: Vec<&[u8]> = split_args(b"a\0\0").collect();
        assert_eq!(v, vec![&b"a"[..], b""]);
        assert_eq!(split_args(b"").count(), 0);
        assert_eq!(split_args(b"\0").collect::<Vec<_>>(), vec![&b""[..]]);
        assert_eq!(
            split_first_arg(b"/p\0v\0al"),
            Some((&b"/p"[..], &b"v\0al"[..]))
        );
        assert_eq!(split_first_arg(b"/p"), None);
        assert_eq!(build_args(&[b"a", b"bc"]), b"a\0bc\0");
        assert_eq!(build_path_value(b"/a", b"v"), b"/a\0v");
    }

    #[test]
    fn test_error_reply_echoes_ids() {
        let req = Header::new(MsgType::Read, 42, 7, 3);
        let rep = Message::error_reply(&req, XsErrno::ENOENT);
        assert_eq!(rep.header.msg_type, MsgType::Error.raw());
        assert_eq!(
            (rep.header.req_id, rep.header.tx_id, rep.header.len),
            (42, 7, 7)
        );
        assert_eq!(rep.payload, b"ENOENT\0");
    }
}
