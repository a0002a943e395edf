//! A blocking xenstore client over any byte transport.
//!
//! The transport is anything that is `Read + Write`: a [`UnixStream`] to a
//! daemon's socket, or a [`RingTransport`] (the guest end of a ring page plus
//! a notify and a wait callback). Requests may be pipelined
//! ([`Client::submit`] / [`Client::wait_reply`]); watch events that arrive
//! while waiting for a reply are queued and handed out by
//! [`Client::next_watch_event`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use crate::codec::{build_args, split_args, Decoder, Message};
use crate::error::Error;
use crate::page::{RingErrorCode, RING_SIZE_U32};
use crate::perms::{format_perm_list, parse_perm_list, DomId, Perm};
use crate::ring::GuestEnd;
use crate::wire::{Header, MsgType, XsErrno, HEADER_SIZE, PAYLOAD_MAX};

/// `XEN_RUN_STORED` as Debian builds it.
pub const DEFAULT_RUNDIR: &str = "/var/run/xenstored";

/// The daemon socket path the way Xen's libxenstore finds it:
/// `$XENSTORED_PATH`, else `$XENSTORED_RUNDIR/socket`, else
/// `/var/run/xenstored/socket`.
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("XENSTORED_PATH") {
        return PathBuf::from(path);
    }
    let rundir = std::env::var_os("XENSTORED_RUNDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNDIR));
    rundir.join("socket")
}

/// A watch event: the path that changed and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The event path (relative if the watch was registered relative).
    pub path: String,
    /// The token given to [`Client::watch`].
    pub token: String,
}

impl WatchEvent {
    /// Parses a `XS_WATCH_EVENT` payload: `<epath>|<token>|`.
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let mut args = split_args(payload);
        let bad = || Error::BadPayload {
            what: "XS_WATCH_EVENT",
        };
        let path = args.next().ok_or_else(bad)?;
        let token = args.next().ok_or_else(bad)?;
        Ok(Self {
            path: String::from_utf8_lossy(path).into_owned(),
            token: String::from_utf8_lossy(token).into_owned(),
        })
    }
}

/// The `req_id` of a client's first request; later ones count up from it.
const FIRST_REQ_ID: u32 = 1;

/// A blocking xenstore client.
///
/// Every reply is checked against what was sent: a reply for a `req_id`
/// that was already answered is [`Error::DuplicateReply`], one for a
/// `req_id` never sent is [`Error::UnknownReply`] (watch events are not
/// replies and carry no meaningful `req_id`).
#[derive(Debug)]
pub struct Client<T> {
    io: T,
    decoder: Decoder,
    next_req_id: u32,
    /// Requests sent so far: the ids `FIRST_REQ_ID..` (wrapping) of the
    /// first `sent` of them have been used.
    sent: u64,
    rbuf: Vec<u8>,
    /// The request being sent (kept, so that a request allocates none).
    wbuf: Vec<u8>,
    /// The messages one read completed (kept, likewise).
    received: Vec<Message>,
    events: VecDeque<WatchEvent>,
    /// Replies received and not yet collected, by `req_id`.
    replies: ById<Message>,
    /// Requests sent and not yet answered, with what they were.
    in_flight: ById<MsgType>,
}

/// A few values keyed by `req_id`, in the order they were added: what a
/// client keeps per request in flight. A client has few in flight, and
/// answers mostly come in the order the requests went out, so a scan from
/// the oldest finds one at once. Two trees (as before) took a ping-pong
/// `read` 1,855 instructions, this 1,539 (callgrind, 22,000 READs over a
/// mock-xen ring); a client with very many requests in flight pays a
/// scan for each.
#[derive(Debug)]
struct ById<V>(VecDeque<(u32, V)>);

impl<V> ById<V> {
    fn new() -> Self {
        Self(VecDeque::new())
    }

    fn position(&self, id: u32) -> Option<usize> {
        self.0.iter().position(|(k, _)| *k == id)
    }

    /// Sets `id`'s value (replacing one it had).
    fn insert(&mut self, id: u32, value: V) {
        match self.position(id) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push_back((id, value)),
        }
    }

    fn get(&self, id: u32) -> Option<&V> {
        self.position(id).map(|i| &self.0[i].1)
    }

    fn contains(&self, id: u32) -> bool {
        self.position(id).is_some()
    }

    fn remove(&mut self, id: u32) -> Option<V> {
        let i = self.position(id)?;
        self.0.remove(i).map(|(_, v)| v)
    }
}

impl Client<UnixStream> {
    /// Connects to a daemon's Unix socket.
    pub fn connect_unix(path: impl AsRef<Path>) -> Result<Self, Error> {
        Ok(Self::new(UnixStream::connect(path)?))
    }

    /// Connects to the socket [`default_socket_path`] names.
    pub fn connect_default() -> Result<Self, Error> {
        Self::connect_unix(default_socket_path())
    }
}

impl<T: Read + Write> Client<T> {
    /// A client over `io`.
    pub fn new(io: T) -> Self {
        Self {
            io,
            decoder: Decoder::new(),
            next_req_id: FIRST_REQ_ID,
            sent: 0,
            rbuf: vec![0; HEADER_SIZE + PAYLOAD_MAX],
            wbuf: Vec::new(),
            received: Vec::new(),
            events: VecDeque::new(),
            replies: ById::new(),
            in_flight: ById::new(),
        }
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Gives the transport back. Replies and events not yet collected are
    /// dropped.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// The transport, mutably (e.g. to set a socket timeout).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Sends a request without waiting; returns its `req_id`.
    pub fn submit(&mut self, ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<u32, Error> {
        self.submit_parts(ty, tx_id, &[payload])
    }

    /// [`Client::submit`] of the payload `parts` make one after another
    /// (built in the client's own buffer, not in a payload of its own).
    fn submit_parts(&mut self, ty: MsgType, tx_id: u32, parts: &[&[u8]]) -> Result<u32, Error> {
        let len = crate::codec::checked_payload_len(parts.iter().map(|p| p.len()).sum())?;
        // The id is taken only once the request is sure to go out: the ids
        // sent stay `FIRST_REQ_ID..` without a gap (see `was_sent`).
        let req_id = self.next_req_id;
        self.wbuf.clear();
        self.wbuf
            .extend_from_slice(&Header::new(ty, req_id, tx_id, len).to_bytes());
        for part in parts {
            self.wbuf.extend_from_slice(part);
        }
        self.next_req_id = self.next_req_id.wrapping_add(1);
        self.io.write_all(&self.wbuf)?;
        self.io.flush()?;
        self.sent = self.sent.saturating_add(1);
        self.in_flight.insert(req_id, ty);
        Ok(req_id)
    }

    /// Waits for the reply to `req_id`. An `XS_ERROR` reply becomes
    /// [`Error::Xs`]; unknown error names become `EINVAL`, as Linux does.
    ///
    /// If waiting fails (the transport failed or timed out, or the server
    /// sent a reply that was not expected), the request stays outstanding:
    /// its reply, when it comes, is still its first one, and a later call may
    /// wait for it again.
    pub fn wait_reply(&mut self, req_id: u32) -> Result<Message, Error> {
        let sent = *self.in_flight.get(req_id).ok_or(Error::UnexpectedReply {
            sent: "nothing",
            req_id,
            got_type: 0,
            got_req_id: req_id,
        })?;
        let reply = loop {
            if let Some(reply) = self.replies.remove(req_id) {
                break reply;
            }
            self.receive_one()?;
        };
        self.in_flight.remove(req_id);
        match reply.msg_type() {
            Ok(MsgType::Error) => Err(Error::Xs(
                XsErrno::from_wire(&reply.payload).unwrap_or(XsErrno::EINVAL),
            )),
            Ok(ty) if ty == sent => Ok(reply),
            _ => Err(Error::UnexpectedReply {
                sent: sent.name(),
                req_id,
                got_type: reply.header.msg_type,
                got_req_id: reply.header.req_id,
            }),
        }
    }

    /// Reads once from the transport and files every message that read
    /// completed (replies and watch events). All of them are filed before the
    /// first bad one is reported, so that the client stays in step with the
    /// stream.
    fn receive_one(&mut self) -> Result<(), Error> {
        let n = self.io.read(&mut self.rbuf)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        let mut msgs = core::mem::take(&mut self.received);
        msgs.clear();
        let decoded = self.decoder.decode_all(&self.rbuf[..n], &mut msgs);
        let mut first_error = None;
        for msg in msgs.drain(..) {
            if let Err(e) = self.file(msg) {
                first_error.get_or_insert(e);
            }
        }
        self.received = msgs;
        match first_error.or(decoded.err()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Files one received message: a watch event is queued, the first reply
    /// to an outstanding request is kept for [`Client::wait_reply`], anything
    /// else is the typed error naming what the server did wrong.
    fn file(&mut self, msg: Message) -> Result<(), Error> {
        let (req_id, msg_type) = (msg.header.req_id, msg.header.msg_type);
        if msg_type == MsgType::WatchEvent.raw() {
            self.events.push_back(WatchEvent::parse(&msg.payload)?);
            Ok(())
        } else if self.replies.contains(req_id) {
            // Answered already in this read or an earlier one, not collected.
            Err(Error::DuplicateReply { req_id, msg_type })
        } else if self.in_flight.contains(req_id) {
            self.replies.insert(req_id, msg);
            Ok(())
        } else if self.was_sent(req_id) {
            // Sent, answered and collected: this is a second answer.
            Err(Error::DuplicateReply { req_id, msg_type })
        } else {
            Err(Error::UnknownReply { req_id, msg_type })
        }
    }

    /// Whether `req_id` is one of the ids this client has used.
    fn was_sent(&self, req_id: u32) -> bool {
        u64::from(req_id.wrapping_sub(FIRST_REQ_ID)) < self.sent
    }

    /// Sends a request and waits for its reply.
    pub fn request(&mut self, ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<Message, Error> {
        let req_id = self.submit(ty, tx_id, payload)?;
        self.wait_reply(req_id)
    }

    /// [`Client::request`] of the payload `parts` make one after another.
    fn request_parts(
        &mut self,
        ty: MsgType,
        tx_id: u32,
        parts: &[&[u8]],
    ) -> Result<Message, Error> {
        let req_id = self.submit_parts(ty, tx_id, parts)?;
        self.wait_reply(req_id)
    }

    /// Sends a request whose success reply is `OK`.
    fn request_ok(&mut self, ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<(), Error> {
        self.request(ty, tx_id, payload).map(|_| ())
    }

    /// Sends a request whose reply is one string.
    fn request_string(&mut self, ty: MsgType, payload: &[u8]) -> Result<String, Error> {
        let reply = self.request(ty, 0, payload)?;
        Ok(reply_string(&reply.payload))
    }

    /// `XS_READ`.
    pub fn read(&mut self, tx_id: u32, path: &str) -> Result<Vec<u8>, Error> {
        Ok(self
            .request_parts(MsgType::Read, tx_id, &[path.as_bytes(), b"\0"])?
            .payload)
    }

    /// `XS_WRITE` (creates missing parents).
    pub fn write(&mut self, tx_id: u32, path: &str, value: &[u8]) -> Result<(), Error> {
        self.request_parts(MsgType::Write, tx_id, &[path.as_bytes(), b"\0", value])
            .map(|_| ())
    }

    /// `XS_MKDIR`.
    pub fn mkdir(&mut self, tx_id: u32, path: &str) -> Result<(), Error> {
        self.request_ok(MsgType::Mkdir, tx_id, &build_args(&[path.as_bytes()]))
    }

    /// `XS_RM` (the node and its children).
    pub fn rm(&mut self, tx_id: u32, path: &str) -> Result<(), Error> {
        self.request_ok(MsgType::Rm, tx_id, &build_args(&[path.as_bytes()]))
    }

    /// `XS_DIRECTORY`: the children's leaf names.
    pub fn directory(&mut self, tx_id: u32, path: &str) -> Result<Vec<String>, Error> {
        let reply = self.request_parts(MsgType::Directory, tx_id, &[path.as_bytes(), b"\0"])?;
        Ok(string_list(&reply.payload))
    }

    /// `XS_DIRECTORY_PART`: the node's generation count and the children
    /// listed from byte `offset` of the full list.
    pub fn directory_part(
        &mut self,
        tx_id: u32,
        path: &str,
        offset: usize,
    ) -> Result<(String, Vec<String>), Error> {
        let offset = offset.to_string();
        let reply = self.request(
            MsgType::DirectoryPart,
            tx_id,
            &build_args(&[path.as_bytes(), offset.as_bytes()]),
        )?;
        let mut parts = string_list(&reply.payload);
        if parts.is_empty() {
            return Err(Error::BadPayload {
                what: "XS_DIRECTORY_PART",
            });
        }
        let gen = parts.remove(0);
        Ok((gen, parts))
    }

    /// `XS_GET_PERMS`.
    pub fn get_perms(&mut self, tx_id: u32, path: &str) -> Result<Vec<Perm>, Error> {
        let reply = self.request(MsgType::GetPerms, tx_id, &build_args(&[path.as_bytes()]))?;
        parse_perm_list(&reply.payload)
    }

    /// `XS_SET_PERMS`: owner entry first.
    pub fn set_perms(&mut self, tx_id: u32, path: &str, perms: &[Perm]) -> Result<(), Error> {
        let mut payload = build_args(&[path.as_bytes()]);
        payload.extend_from_slice(&format_perm_list(perms));
        self.request_ok(MsgType::SetPerms, tx_id, &payload)
    }

    /// `XS_WATCH`. The daemon fires the watch once straight away.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        self.request_ok(
            MsgType::Watch,
            0,
            &build_args(&[path.as_bytes(), token.as_bytes()]),
        )
    }

    /// `XS_WATCH` with a depth limit (the optional third argument).
    pub fn watch_depth(&mut self, path: &str, token: &str, depth: u32) -> Result<(), Error> {
        let depth = depth.to_string();
        self.request_ok(
            MsgType::Watch,
            0,
            &build_args(&[path.as_bytes(), token.as_bytes(), depth.as_bytes()]),
        )
    }

    /// `XS_UNWATCH`.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        self.request_ok(
            MsgType::Unwatch,
            0,
            &build_args(&[path.as_bytes(), token.as_bytes()]),
        )
    }

    /// `XS_RESET_WATCHES`: drops all watches and transactions of this
    /// connection.
    pub fn reset_watches(&mut self) -> Result<(), Error> {
        self.request_ok(MsgType::ResetWatches, 0, b"\0")
    }

    /// The next watch event, waiting for one if none is queued.
    pub fn next_watch_event(&mut self) -> Result<WatchEvent, Error> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            self.receive_one()?;
        }
    }

    /// A watch event already received, if any (does not block).
    pub fn queued_watch_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// `XS_TRANSACTION_START`: the new transaction id.
    pub fn transaction_start(&mut self) -> Result<u32, Error> {
        let id = self.request_string(MsgType::TransactionStart, b"\0")?;
        id.parse().map_err(|_| Error::BadPayload {
            what: "XS_TRANSACTION_START",
        })
    }

    /// `XS_TRANSACTION_END`: commit (`T`) or abort (`F`). A conflicting
    /// commit is `Err(Error::Xs(XsErrno::EAGAIN))`.
    pub fn transaction_end(&mut self, tx_id: u32, commit: bool) -> Result<(), Error> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request_ok(MsgType::TransactionEnd, tx_id, arg)
    }

    /// `XS_INTRODUCE`: domid, the ring's mfn (or gfn), the guest's unbound
    /// event-channel port.
    pub fn introduce(&mut self, domid: DomId, mfn: u64, port: u32) -> Result<(), Error> {
        let (d, m, p) = (domid.to_string(), mfn.to_string(), port.to_string());
        self.request_ok(
            MsgType::Introduce,
            0,
            &build_args(&[d.as_bytes(), m.as_bytes(), p.as_bytes()]),
        )
    }

    /// `XS_RELEASE`.
    pub fn release(&mut self, domid: DomId) -> Result<(), Error> {
        self.request_ok(
            MsgType::Release,
            0,
            &build_args(&[domid.to_string().as_bytes()]),
        )
    }

    /// `XS_RESUME`.
    pub fn resume(&mut self, domid: DomId) -> Result<(), Error> {
        self.request_ok(
            MsgType::Resume,
            0,
            &build_args(&[domid.to_string().as_bytes()]),
        )
    }

    /// `XS_GET_DOMAIN_PATH`.
    pub fn get_domain_path(&mut self, domid: DomId) -> Result<String, Error> {
        self.request_string(
            MsgType::GetDomainPath,
            &build_args(&[domid.to_string().as_bytes()]),
        )
    }

    /// `XS_IS_DOMAIN_INTRODUCED`.
    pub fn is_domain_introduced(&mut self, domid: DomId) -> Result<bool, Error> {
        let answer = self.request_string(
            MsgType::IsDomainIntroduced,
            &build_args(&[domid.to_string().as_bytes()]),
        )?;
        Ok(answer == "T")
    }

    /// `XS_SET_TARGET`: `domid` may act for `target`.
    pub fn set_target(&mut self, domid: DomId, target: DomId) -> Result<(), Error> {
        let (d, t) = (domid.to_string(), target.to_string());
        self.request_ok(
            MsgType::SetTarget,
            0,
            &build_args(&[d.as_bytes(), t.as_bytes()]),
        )
    }

    /// `XS_CONTROL` with a command and its parameters; the reply payload.
    pub fn control(&mut self, args: &[&str]) -> Result<Vec<u8>, Error> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Ok(self
            .request(MsgType::Control, 0, &build_args(&args))?
            .payload)
    }

    /// `XS_GET_FEATURE`: the features of `domid`, or the daemon's own with
    /// `None`.
    pub fn get_feature(&mut self, domid: Option<DomId>) -> Result<u32, Error> {
        let payload = domid.map_or_else(
            || b"\0".to_vec(),
            |d| build_args(&[d.to_string().as_bytes()]),
        );
        parse_u32(
            &self.request_string(MsgType::GetFeature, &payload)?,
            "XS_GET_FEATURE",
        )
    }

    /// `XS_SET_FEATURE` for `domid`.
    pub fn set_feature(&mut self, domid: DomId, features: u32) -> Result<(), Error> {
        let (d, f) = (domid.to_string(), features.to_string());
        self.request_ok(
            MsgType::SetFeature,
            0,
            &build_args(&[d.as_bytes(), f.as_bytes()]),
        )
    }

    /// `XS_GET_QUOTA`: with no arguments the list of quota names; with a
    /// name (and optionally a domid) its value.
    pub fn get_quota(&mut self, domid: Option<DomId>, name: Option<&str>) -> Result<String, Error> {
        let d = domid.map(|d| d.to_string());
        let mut args: Vec<&[u8]> = Vec::new();
        if let Some(d) = &d {
            args.push(d.as_bytes());
        }
        if let Some(name) = name {
            args.push(name.as_bytes());
        }
        let payload = if args.is_empty() {
            b"\0".to_vec()
        } else {
            build_args(&args)
        };
        self.request_string(MsgType::GetQuota, &payload)
    }

    /// `XS_SET_QUOTA`, globally (`domid` `None`) or for one domain.
    pub fn set_quota(&mut self, domid: Option<DomId>, name: &str, value: u32) -> Result<(), Error> {
        let d = domid.map(|d| d.to_string());
        let v = value.to_string();
        let mut args: Vec<&[u8]> = Vec::new();
        if let Some(d) = &d {
            args.push(d.as_bytes());
        }
        args.push(name.as_bytes());
        args.push(v.as_bytes());
        self.request_ok(MsgType::SetQuota, 0, &build_args(&args))
    }
}

fn reply_string(payload: &[u8]) -> String {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    String::from_utf8_lossy(body).into_owned()
}

fn string_list(payload: &[u8]) -> Vec<String> {
    split_args(payload)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn parse_u32(text: &str, what: &'static str) -> Result<u32, Error> {
    text.parse().map_err(|_| Error::BadPayload { what })
}

/// A byte transport over the guest end of a ring: writes requests, reads
/// responses, calls `notify` after moving bytes and `wait` when it must block
/// (for an event on the ring's event channel; spurious returns are fine).
pub struct RingTransport<'a, N, W> {
    end: GuestEnd<'a>,
    notify: N,
    wait: W,
}

impl<'a, N, W> RingTransport<'a, N, W>
where
    N: FnMut() -> io::Result<()>,
    W: FnMut() -> io::Result<()>,
{
    /// A transport over `end`.
    pub fn new(end: GuestEnd<'a>, notify: N, wait: W) -> Self {
        Self { end, notify, wait }
    }

    /// The ring end.
    pub fn end(&self) -> GuestEnd<'a> {
        self.end
    }

    fn check_error_word(&self) -> io::Result<()> {
        match self.end.error() {
            RingErrorCode::None => Ok(()),
            code => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                Error::RingErrorSet(code.to_raw()),
            )),
        }
    }
}

fn ring_io_error(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<N, W> Read for RingTransport<'_, N, W>
where
    N: FnMut() -> io::Result<()>,
    W: FnMut() -> io::Result<()>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            // Only a full ring can have a server waiting for space: notify
            // after reading only then (as Linux's xenbus driver does).
            let was_full = self.end.readable().map_err(ring_io_error)? == RING_SIZE_U32;
            let n = self.end.read(buf).map_err(ring_io_error)?;
            if n > 0 {
                if was_full {
                    (self.notify)()?;
                }
                return Ok(n);
            }
            self.check_error_word()?;
            (self.wait)()?;
        }
    }
}

impl<N, W> Write for RingTransport<'_, N, W>
where
    N: FnMut() -> io::Result<()>,
    W: FnMut() -> io::Result<()>,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            self.check_error_word()?;
            let n = self.end.write(buf).map_err(ring_io_error)?;
            if n > 0 {
                (self.notify)()?;
                return Ok(n);
            }
            (self.wait)()?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<N, W> core::fmt::Debug for RingTransport<'_, N, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingTransport")
            .field("end", &self.end)
            .finish()
    }
}

/// Decodes the reply header of a raw exchange (for tools that want to print
/// what came back).
pub fn describe_reply(header: &Header) -> String {
    match header.msg_type() {
        Ok(ty) => ty.name().to_string(),
        Err(_) => format!("type {}", header.msg_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::page::OwnedPage;
    use crate::ring::ServerEnd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A scripted server on the other end of a socket pair: answers each
    /// request with the reply the closure returns, after optional events.
    fn serve(
        stream: UnixStream,
        mut answer: impl FnMut(&Message) -> Vec<Message> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut dec = Decoder::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut msgs = Vec::new();
                dec.decode_all(&buf[..n], &mut msgs).unwrap();
                for m in msgs {
                    for reply in answer(&m) {
                        stream.write_all(&reply.to_bytes()).unwrap();
                    }
                }
            }
        })
    }

    /// A transport whose every `read` returns the next scripted chunk
    /// whole (so "one read" is exact), then end of stream; writes are kept.
    #[derive(Debug, Default)]
    struct Scripted {
        reads: VecDeque<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Scripted {
        fn new(chunks: &[&[Message]]) -> Self {
            let reads = chunks
                .iter()
                .map(|msgs| msgs.iter().flat_map(Message::to_bytes).collect())
                .collect();
            Self {
                reads,
                written: Vec::new(),
            }
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(chunk) = self.reads.pop_front() else {
                return Ok(0);
            };
            assert!(chunk.len() <= buf.len(), "scripted chunk fits one read");
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn reply(req_id: u32, payload: &[u8]) -> Message {
        Message::new(MsgType::Read, req_id, 0, payload.to_vec()).unwrap()
    }

    fn event(req_id: u32, path: &str) -> Message {
        let payload = build_args(&[path.as_bytes(), b"tok"]);
        Message::new(MsgType::WatchEvent, req_id, 0, payload).unwrap()
    }

    #[test]
    fn test_client_duplicate_reply_in_same_read_is_an_error() {
        let mut c = Client::new(Scripted::new(&[&[reply(1, b"first"), reply(1, b"second")]]));
        let id = c.submit(MsgType::Read, 0, b"/a\0").unwrap();
        assert_eq!(id, 1);
        let err = c.wait_reply(id).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DuplicateReply {
                    req_id: 1,
                    msg_type: 2
                }
            ),
            "{err:?}"
        );
        // The first answer was kept, not overwritten by the second, and the
        // request is still waiting to be collected.
        assert_eq!(c.wait_reply(id).unwrap().payload, b"first");
    }

    #[test]
    fn test_client_duplicate_reply_to_uncollected_request_in_later_read() {
        let mut c = Client::new(Scripted::new(&[
            &[reply(1, b"one")],
            &[reply(1, b"again")],
            &[reply(2, b"two")],
        ]));
        let r1 = c.submit(MsgType::Read, 0, b"/a\0").unwrap();
        let r2 = c.submit(MsgType::Read, 0, b"/b\0").unwrap();
        assert!(matches!(
            c.wait_reply(r2),
            Err(Error::DuplicateReply { req_id: 1, .. })
        ));
        assert_eq!(c.wait_reply(r2).unwrap().payload, b"two");
        assert_eq!(c.wait_reply(r1).unwrap().payload, b"one");
    }

    #[test]
    fn test_client_duplicate_reply_after_collection_is_an_error() {
        let mut c = Client::new(Scripted::new(&[
            &[reply(1, b"one")],
            &[reply(1, b"one again")],
            &[reply(2, b"two")],
        ]));
        let r1 = c.submit(MsgType::Read, 0, b"/a\0").unwrap();
        assert_eq!(c.wait_reply(r1).unwrap().payload, b"one");
        let r2 = c.submit(MsgType::Read, 0, b"/b\0").unwrap();
        let err = c.wait_reply(r2).unwrap_err();
        assert!(
            matches!(err, Error::DuplicateReply { req_id: 1, .. }),
            "{err:?}"
        );
        assert_eq!(c.wait_reply(r2).unwrap().payload, b"two");
    }

    #[test]
    fn test_client_unknown_reply_is_an_error() {
        // Request 1 is sent; 2 (the next id) and u32::MAX never were. The
        // valid reply in the same read is still filed.
        let mut c = Client::new(Scripted::new(&[
            &[reply(2, b"?"), reply(1, b"one")],
            &[reply(u32::MAX, b"?")],
        ]));
        let r1 = c.submit(MsgType::Read, 0, b"/a\0").unwrap();
        let err = c.wait_reply(r1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnknownReply {
                    req_id: 2,
                    msg_type: 2
                }
            ),
            "{err:?}"
        );
        assert_eq!(c.wait_reply(r1).unwrap().payload, b"one");
        let r2 = c.submit(MsgType::Read, 0, b"/b\0").unwrap();
        assert!(matches!(
            c.wait_reply(r2),
            Err(Error::UnknownReply {
                req_id: u32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn test_client_unknown_reply_before_any_request() {
        let mut c = Client::new(Scripted::new(&[&[reply(1, b"?")]]));
        assert!(matches!(
            c.next_watch_event(),
            Err(Error::UnknownReply { req_id: 1, .. })
        ));
    }

    #[test]
    fn test_client_watch_events_are_not_replies() {
        // Events carry req_id 0 (Linux, C xenstored) or anything at all; the
        // one with the watch's own id comes after the watch was answered.
        let mut c = Client::new(Scripted::new(&[&[
            reply(1, b"OK\0"),
            event(0, "/x"),
            event(1, "/y"),
            event(7, "/z"),
        ]]));
        let id = c.submit(MsgType::Read, 0, b"/x\0").unwrap();
        assert_eq!(c.wait_reply(id).unwrap().payload, b"OK\0");
        let paths: Vec<String> = core::iter::from_fn(|| c.queued_watch_event())
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["/x", "/y", "/z"]);
    }

    #[test]
    fn test_client_replies_before_a_framing_error_are_filed() {
        let mut bytes = reply(1, b"one").to_bytes();
        bytes.extend_from_slice(&Header::new(MsgType::Read, 2, 0, 5000).to_bytes());
        let mut c = Client::new(Scripted {
            reads: VecDeque::from([bytes]),
            written: Vec::new(),
        });
        let r1 = c.submit(MsgType::Read, 0, b"/a\0").unwrap();
        let r2 = c.submit(MsgType::Read, 0, b"/b\0").unwrap();
        assert!(matches!(
            c.wait_reply(r2),
            Err(Error::PayloadTooLong { len: 5000 })
        ));
        assert_eq!(c.wait_reply(r1).unwrap().payload, b"one");
    }

    /// Runs `call` against a scripted server whose one read is `reply`
    /// (type `reply_ty`, req_id 1); returns what `call` returned and the one
    /// request it sent.
    fn exchange<R>(
        reply_ty: MsgType,
        reply: &[u8],
        call: impl FnOnce(&mut Client<Scripted>) -> R,
    ) -> (R, Message) {
        let mut c = Client::new(Scripted::default());
        let answer = Message::new(reply_ty, 1, 0, reply.to_vec()).unwrap();
        c.get_mut().reads.push_back(answer.to_bytes());
        let out = call(&mut c);
        assert!(c.get_ref().reads.is_empty(), "the reply was read");
        let mut sent = Vec::new();
        Decoder::new()
            .decode_all(&c.into_inner().written, &mut sent)
            .unwrap();
        assert_eq!(sent.len(), 1, "exactly one request: {sent:?}");
        (out, sent.remove(0))
    }

    /// The request `exchange` should have seen.
    fn req(ty: MsgType, tx_id: u32, payload: &[u8]) -> Message {
        Message::new(ty, 1, tx_id, payload.to_vec()).unwrap()
    }

    #[test]
    fn test_client_every_call_sends_its_request_and_parses_its_reply() {
        use MsgType as T;
        let ok = b"OK\0";
        let (r, sent) = exchange(T::Read, b"val", |c| c.read(7, "/a"));
        assert_eq!(
            (r.unwrap(), sent),
            (b"val".to_vec(), req(T::Read, 7, b"/a\0"))
        );
        let (r, sent) = exchange(T::Write, ok, |c| c.write(7, "/a", b"v"));
        assert_eq!((r.unwrap(), sent), ((), req(T::Write, 7, b"/a\0v")));
        let (r, sent) = exchange(T::Mkdir, ok, |c| c.mkdir(7, "/a"));
        assert_eq!((r.unwrap(), sent), ((), req(T::Mkdir, 7, b"/a\0")));
        let (r, sent) = exchange(T::Rm, ok, |c| c.rm(7, "/a"));
        assert_eq!((r.unwrap(), sent), ((), req(T::Rm, 7, b"/a\0")));
        let (r, sent) = exchange(T::Directory, b"a\0b\0", |c| c.directory(7, "/"));
        assert_eq!(r.unwrap(), ["a", "b"]);
        assert_eq!(sent, req(T::Directory, 7, b"/\0"));
        let (r, sent) = exchange(T::DirectoryPart, b"42\0x\0y\0", |c| {
            c.directory_part(7, "/d", 3)
        });
        assert_eq!(
            r.unwrap(),
            ("42".to_string(), vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(sent, req(T::DirectoryPart, 7, b"/d\x003\0"));
        let (r, _) = exchange(T::DirectoryPart, b"", |c| c.directory_part(7, "/d", 0));
        assert!(matches!(
            r,
            Err(Error::BadPayload {
                what: "XS_DIRECTORY_PART"
            })
        ));
        let (r, sent) = exchange(T::GetPerms, b"n0\0r5\0", |c| c.get_perms(7, "/a"));
        assert_eq!(
            r.unwrap(),
            [
                Perm::new(crate::PermKind::None, 0),
                Perm::new(crate::PermKind::Read, 5)
            ]
        );
        assert_eq!(sent, req(T::GetPerms, 7, b"/a\0"));
        let perms = [
            Perm::new(crate::PermKind::Both, 1),
            Perm::new(crate::PermKind::Read, 2),
        ];
        let (r, sent) = exchange(T::SetPerms, ok, |c| c.set_perms(7, "/a", &perms));
        assert_eq!(
            (r.unwrap(), sent),
            ((), req(T::SetPerms, 7, b"/a\0b1\0r2\0"))
        );
        let (r, sent) = exchange(T::Watch, ok, |c| c.watch("/w", "tok"));
        assert_eq!((r.unwrap(), sent), ((), req(T::Watch, 0, b"/w\0tok\0")));
        let (r, sent) = exchange(T::Watch, ok, |c| c.watch_depth("/w", "tok", 2));
        assert_eq!(
            (r.unwrap(), sent),
            ((), req(T::Watch, 0, b"/w\0tok\x002\0"))
        );
        let (r, sent) = exchange(T::Unwatch, ok, |c| c.unwatch("/w", "tok"));
        assert_eq!((r.unwrap(), sent), ((), req(T::Unwatch, 0, b"/w\0tok\0")));
        let (r, sent) = exchange(T::ResetWatches, ok, |c| c.reset_watches());
        assert_eq!((r.unwrap(), sent), ((), req(T::ResetWatches, 0, b"\0")));
        let (r, sent) = exchange(T::TransactionStart, b"17\0", |c| c.transaction_start());
        assert_eq!((r.unwrap(), sent), (17, req(T::TransactionStart, 0, b"\0")));
        let (r, _) = exchange(T::TransactionStart, b"x\0", |c| c.transaction_start());
        assert!(matches!(
            r,
            Err(Error::BadPayload {
                what: "XS_TRANSACTION_START"
            })
        ));
        let (r, sent) = exchange(T::TransactionEnd, ok, |c| c.transaction_end(7, true));
        assert_eq!((r.unwrap(), sent), ((), req(T::TransactionEnd, 7, b"T\0")));
        let (r, sent) = exchange(T::TransactionEnd, ok, |c| c.transaction_end(7, false));
        assert_eq!((r.unwrap(), sent), ((), req(T::TransactionEnd, 7, b"F\0")));
        let (r, sent) = exchange(T::Introduce, ok, |c| c.introduce(3, 0x1234, 5));
        assert_eq!(
            (r.unwrap(), sent),
            ((), req(T::Introduce, 0, b"3\x004660\x005\0"))
        );
        let (r, sent) = exchange(T::Release, ok, |c| c.release(3));
        assert_eq!((r.unwrap(), sent), ((), req(T::Release, 0, b"3\0")));
        let (r, sent) = exchange(T::Resume, ok, |c| c.resume(3));
        assert_eq!((r.unwrap(), sent), ((), req(T::Resume, 0, b"3\0")));
        let (r, sent) = exchange(T::GetDomainPath, b"/local/domain/3\0", |c| {
            c.get_domain_path(3)
        });
        assert_eq!(r.unwrap(), "/local/domain/3");
        assert_eq!(sent, req(T::GetDomainPath, 0, b"3\0"));
        for (answer, want) in [(&b"T\0"[..], true), (b"F\0", false)] {
            let (r, sent) = exchange(T::IsDomainIntroduced, answer, |c| c.is_domain_introduced(3));
            assert_eq!(
                (r.unwrap(), sent),
                (want, req(T::IsDomainIntroduced, 0, b"3\0"))
            );
        }
        let (r, sent) = exchange(T::SetTarget, ok, |c| c.set_target(3, 4));
        assert_eq!((r.unwrap(), sent), ((), req(T::SetTarget, 0, b"3\x004\0")));
        let (r, sent) = exchange(T::Control, b"done\0", |c| c.control(&["log", "on"]));
        assert_eq!(
            (r.unwrap(), sent),
            (b"done\0".to_vec(), req(T::Control, 0, b"log\0on\0"))
        );
        let (r, sent) = exchange(T::GetFeature, b"5\0", |c| c.get_feature(None));
        assert_eq!((r.unwrap(), sent), (5, req(T::GetFeature, 0, b"\0")));
        let (r, sent) = exchange(T::GetFeature, b"6\0", |c| c.get_feature(Some(3)));
        assert_eq!((r.unwrap(), sent), (6, req(T::GetFeature, 0, b"3\0")));
        let (r, _) = exchange(T::GetFeature, b"-1\0", |c| c.get_feature(None));
        assert!(matches!(
            r,
            Err(Error::BadPayload {
                what: "XS_GET_FEATURE"
            })
        ));
        let (r, sent) = exchange(T::SetFeature, ok, |c| c.set_feature(3, 5));
        assert_eq!((r.unwrap(), sent), ((), req(T::SetFeature, 0, b"3\x005\0")));
        let (r, sent) = exchange(T::GetQuota, b"nodes watches\0", |c| c.get_quota(None, None));
        assert_eq!(r.unwrap(), "nodes watches");
        assert_eq!(sent, req(T::GetQuota, 0, b"\0"));
        let (r, sent) = exchange(T::GetQuota, b"9\0", |c| c.get_quota(Some(3), Some("nodes")));
        assert_eq!(
            (r.unwrap(), sent),
            ("9".to_string(), req(T::GetQuota, 0, b"3\0nodes\0"))
        );
        let (r, sent) = exchange(T::GetQuota, b"8\0", |c| c.get_quota(None, Some("nodes")));
        assert_eq!(
            (r.unwrap(), sent),
            ("8".to_string(), req(T::GetQuota, 0, b"nodes\0"))
        );
        let (r, sent) = exchange(T::SetQuota, ok, |c| c.set_quota(None, "nodes", 9));
        assert_eq!(
            (r.unwrap(), sent),
            ((), req(T::SetQuota, 0, b"nodes\x009\0"))
        );
        let (r, sent) = exchange(T::SetQuota, ok, |c| c.set_quota(Some(3), "nodes", 9));
        assert_eq!(
            (r.unwrap(), sent),
            ((), req(T::SetQuota, 0, b"3\0nodes\x009\0"))
        );
    }

    #[test]
    fn test_client_error_and_mismatched_replies_fail_the_call() {
        let (r, _) = exchange(MsgType::Error, b"EACCES\0", |c| c.write(0, "/a", b"v"));
        assert!(matches!(r, Err(Error::Xs(XsErrno::EACCES))));
        // An error name Xen does not define is EINVAL, as Linux reads it.
        let (r, _) = exchange(MsgType::Error, b"EWHAT\0", |c| c.mkdir(0, "/a"));
        assert!(matches!(r, Err(Error::Xs(XsErrno::EINVAL))));
        let (r, _) = exchange(MsgType::Write, b"OK\0", |c| c.read(0, "/a"));
        let err = r.unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnexpectedReply {
                    sent: "XS_READ",
                    req_id: 1,
                    got_type: 11,
                    got_req_id: 1
                }
            ),
            "{err:?}"
        );
        let mut c = Client::new(Scripted::default());
        assert!(matches!(
            c.wait_reply(1),
            Err(Error::UnexpectedReply { req_id: 1, .. })
        ));
        assert!(matches!(c.next_watch_event(), Err(Error::Closed)));
    }

    /// A ring with a server end played by the test inside the transport's
    /// `wait`; counts the transport's notifications and waits.
    #[test]
    fn test_ring_transport_reads_waits_and_notifies_only_when_needed() {
        use std::cell::Cell;
        let page = OwnedPage::new();
        let server = ServerEnd::new(page.ring());
        let (notified, waited) = (Cell::new(0), Cell::new(0));
        let mut pending: Vec<&[u8]> = vec![b"hello"];
        let mut t = RingTransport::new(
            GuestEnd::new(page.ring()),
            || {
                notified.set(notified.get() + 1);
                Ok(())
            },
            || {
                waited.set(waited.get() + 1);
                if waited.get() > 100 {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                if let Some(data) = pending.pop() {
                    assert_eq!(server.write(data).unwrap(), data.len());
                }
                Ok(())
            },
        );
        let mut buf = [0u8; 2048];
        assert_eq!(t.read(&mut []).unwrap(), 0);
        // Empty ring: wait once, then the bytes the server wrote meanwhile.
        assert_eq!(t.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        assert_eq!((waited.get(), notified.get()), (1, 0));
        // A partly filled ring is read without waiting or notifying.
        server.write(b"abc").unwrap();
        assert_eq!(t.read(&mut buf).unwrap(), 3);
        assert_eq!((waited.get(), notified.get()), (1, 0));
        // A full ring: the server may be waiting for space, so notify.
        assert_eq!(server.write(&[9u8; 1024]).unwrap(), 1024);
        assert_eq!(t.read(&mut buf[..100]).unwrap(), 100);
        assert_eq!((waited.get(), notified.get()), (1, 1));
        assert_eq!(t.read(&mut buf).unwrap(), 924);
        assert_eq!((waited.get(), notified.get()), (1, 1));
        assert_eq!(t.end().readable().unwrap(), 0);
        assert!(format!("{t:?}").starts_with("RingTransport"));
    }

    #[test]
    fn test_ring_transport_writes_wait_for_space_and_notify() {
        use std::cell::Cell;
        let page = OwnedPage::new();
        let server = ServerEnd::new(page.ring());
        let (notified, waited) = (Cell::new(0), Cell::new(0));
        let mut t = RingTransport::new(
            GuestEnd::new(page.ring()),
            || {
                notified.set(notified.get() + 1);
                Ok(())
            },
            || {
                waited.set(waited.get() + 1);
                if waited.get() > 100 {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                // The server makes room for 10 bytes.
                let mut sink = [0u8; 10];
                assert_eq!(server.read(&mut sink).unwrap(), 10);
                Ok(())
            },
        );
        assert_eq!(t.write(&[]).unwrap(), 0);
        assert_eq!(t.write(&[1u8; 1024]).unwrap(), 1024);
        assert_eq!((waited.get(), notified.get()), (0, 1));
        // Full: wait for space, then write what fits and notify.
        assert_eq!(t.write(&[2u8; 50]).unwrap(), 10);
        assert_eq!((waited.get(), notified.get()), (1, 2));
        t.flush().unwrap();
    }

    #[test]
    fn test_ring_transport_error_word_stops_it() {
        let page = OwnedPage::new();
        let server = ServerEnd::new(page.ring());
        let mut t = RingTransport::new(
            GuestEnd::new(page.ring()),
            || Ok(()),
            || Err(io::Error::from(io::ErrorKind::TimedOut)),
        );
        server.write(b"left").unwrap();
        server.set_error(RingErrorCode::RingIdx);
        // Bytes already there are still delivered; then the error word ends it.
        let mut buf = [0u8; 8];
        assert_eq!(t.read(&mut buf).unwrap(), 4);
        for err in [t.read(&mut buf).unwrap_err(), t.write(b"x").unwrap_err()] {
            assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
            let inner = err.into_inner().and_then(|e| e.downcast::<Error>().ok());
            assert!(
                matches!(inner.as_deref(), Some(Error::RingErrorSet(2))),
                "{inner:?}"
            );
        }
        assert_eq!(
            GuestEnd::new(page.ring()).writable().unwrap(),
            RING_SIZE_U32
        );
        // Hostile indices are InvalidData carrying the typed error.
        page.ring()
            .store_index(crate::page::RingIndex::RspProd, 5000, Ordering::Relaxed);
        let err = t.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err.into_inner().and_then(|e| e.downcast::<Error>().ok());
        assert!(
            matches!(inner.as_deref(), Some(Error::IndexOverrun { .. })),
            "{inner:?}"
        );
    }

    #[test]
    fn test_describe_reply_names_the_type() {
        assert_eq!(
            describe_reply(&Header::new(MsgType::Read, 1, 0, 0)),
            "XS_READ"
        );
        let odd = Header {
            msg_type: 99,
            req_id: 1,
            tx_id: 0,
            len: 0,
        };
        assert_eq!(describe_reply(&odd), "type 99");
    }

    #[test]
    fn test_default_socket_path_follows_libxenstore() {
        // The only test in this binary that touches these variables.
        let saved: Vec<_> = ["XENSTORED_PATH", "XENSTORED_RUNDIR"]
            .iter()
            .map(|k| (*k, std::env::var_os(k)))
            .collect();
        std::env::remove_var("XENSTORED_PATH");
        std::env::remove_var("XENSTORED_RUNDIR");
        assert_eq!(
            default_socket_path(),
            Path::new("/var/run/xenstored/socket")
        );
        std::env::set_var("XENSTORED_RUNDIR", "/run/xs");
        assert_eq!(default_socket_path(), Path::new("/run/xs/socket"));
        std::env::set_var("XENSTORED_PATH", "/tmp/xs.sock");
        assert_eq!(default_socket_path(), Path::new("/tmp/xs.sock"));
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }

    #[test]
    fn test_connect_unix_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("xenring-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let c = Client::connect_unix(&path).unwrap();
        let (peer, _) = listener.accept().unwrap();
        assert_eq!(
            c.get_ref().peer_addr().unwrap().as_pathname(),
            Some(path.as_path())
        );
        drop(peer);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(Client::connect_unix(&path), Err(Error::Io(_))));
    }

    /// A generous bound on every wait for the scripted server, so that a
    /// broken reply path fails the test instead of hanging it.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

    fn bounded(stream: UnixStream) -> UnixStream {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    #[test]
    fn test_client_read_write_over_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let _server = serve(b, |m| {
            let ty = m.msg_type().unwrap();
            let payload = match ty {
                MsgType::Read => b"value".to_vec(),
                MsgType::Directory => b"a\0b\0".to_vec(),
                MsgType::TransactionStart => b"17\0".to_vec(),
                MsgType::GetPerms => b"n0\0r5\0".to_vec(),
                _ => b"OK\0".to_vec(),
            };
            vec![Message::new(ty, m.header.req_id, m.header.tx_id, payload).unwrap()]
        });
        let mut c = Client::new(bounded(a));
        c.write(0, "/a", b"v").unwrap();
        assert_eq!(c.read(0, "/a").unwrap(), b"value");
        assert_eq!(c.directory(0, "/").unwrap(), vec!["a", "b"]);
        assert_eq!(c.transaction_start().unwrap(), 17);
        assert_eq!(c.get_perms(0, "/a").unwrap().len(), 2);
    }

    #[test]
    fn test_client_error_reply_is_typed() {
        let (a, b) = UnixStream::pair().unwrap();
        let _server = serve(b, |m| {
            vec![Message::error_reply(&m.header, XsErrno::ENOENT)]
        });
        let mut c = Client::new(bounded(a));
        assert!(matches!(
            c.read(0, "/nope"),
            Err(Error::Xs(XsErrno::ENOENT))
        ));
    }

    #[test]
    fn test_client_watch_events_queued_while_waiting() {
        let (a, b) = UnixStream::pair().unwrap();
        let _server = serve(b, |m| {
            let ev = Message::new(MsgType::WatchEvent, 0, 0, b"/x\0tok\0".to_vec()).unwrap();
            let ok =
                Message::new(m.msg_type().unwrap(), m.header.req_id, 0, b"OK\0".to_vec()).unwrap();
            vec![ev, ok]
        });
        let mut c = Client::new(bounded(a));
        c.watch("/x", "tok").unwrap();
        let ev = c.next_watch_event().unwrap();
        assert_eq!(
            ev,
            WatchEvent {
                path: "/x".into(),
                token: "tok".into()
            }
        );
        assert!(c.queued_watch_event().is_none());
    }

    #[test]
    fn test_by_id_keeps_one_value_per_id_in_order() {
        let mut t = ById::new();
        for id in [7, 3, 9] {
            t.insert(id, id * 10);
        }
        t.insert(3, 31); // replaced, not added
        assert_eq!(
            t.0.iter().map(|&(k, v)| (k, v)).collect::<Vec<_>>(),
            [(7, 70), (3, 31), (9, 90)]
        );
        assert_eq!((t.get(9), t.get(4)), (Some(&90), None));
        assert!(t.contains(7) && !t.contains(8));
        assert_eq!(t.remove(3), Some(31)); // from the middle
        assert_eq!(t.remove(3), None);
        assert_eq!(t.0.iter().map(|&(k, _)| k).collect::<Vec<_>>(), [7, 9]);
    }

    #[test]
    fn test_client_pipelined_replies_matched_by_req_id() {
        let (a, b) = UnixStream::pair().unwrap();
        // Answers every second request only after the next one, out of order.
        let mut held: Option<Message> = None;
        let _server = serve(b, move |m| {
            let reply = Message::new(
                MsgType::Read,
                m.header.req_id,
                0,
                m.header.req_id.to_string().into_bytes(),
            )
            .unwrap();
            match held.take() {
                None => {
                    held = Some(reply);
                    vec![]
                }
                Some(prev) => vec![reply, prev],
            }
        });
        let mut c = Client::new(bounded(a));
        let r1 = c.submit(MsgType::Read, 0, b"/a\0").unwrap();
        let r2 = c.submit(MsgType::Read, 0, b"/b\0").unwrap();
        assert_eq!(c.wait_reply(r1).unwrap().payload, r1.to_string().as_bytes());
        assert_eq!(c.wait_reply(r2).unwrap().payload, r2.to_string().as_bytes());
    }

    #[test]
    fn test_client_over_ring_with_server_thread() {
        let page = Arc::new(OwnedPage::new());
        let start = u32::MAX - 100;
        for idx in [
            crate::page::RingIndex::ReqCons,
            crate::page::RingIndex::ReqProd,
            crate::page::RingIndex::RspCons,
            crate::page::RingIndex::RspProd,
        ] {
            page.ring().store_index(idx, start, Ordering::Relaxed);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let page = Arc::clone(&page);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let end = ServerEnd::new(page.ring());
                let mut dec = Decoder::new();
                let mut out: VecDeque<u8> = VecDeque::new();
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    let n = end.read(&mut buf).unwrap();
                    let mut msgs = Vec::new();
                    dec.decode_all(&buf[..n], &mut msgs).unwrap();
                    for m in msgs {
                        let mut reply = Vec::new();
                        // Echo the path back as the value, padded to force wrap-around.
                        let mut value = m.payload.clone();
                        value.resize(900, b'.');
                        encode(&mut reply, MsgType::Read, m.header.req_id, 0, &value).unwrap();
                        out.extend(reply);
                    }
                    let (front, _) = out.as_slices();
                    let w = end.write(front).unwrap();
                    out.drain(..w);
                    if n == 0 && w == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let started = std::time::Instant::now();
        let transport = RingTransport::new(
            GuestEnd::new(page.ring()),
            || Ok(()),
            || {
                if started.elapsed() > PATIENCE {
                    return Err(io::Error::from(io::ErrorKind::TimedOut));
                }
                std::thread::yield_now();
                Ok(())
            },
        );
        let mut c = Client::new(transport);
        for i in 0..50 {
            let path = format!("/k/{i}");
            let v = c.read(0, &path).unwrap();
            assert_eq!(v.len(), 900);
            assert!(v.starts_with(path.as_bytes()));
        }
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
    }
}
