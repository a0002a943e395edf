//! The guest side: a domain's kernel xenstore driver (xenbus frontend) over
//! its ring page and store event channel, with fault injection.
//!
//! A [`Guest`] is `Read + Write` over the ring (writes requests, reads
//! responses and watch events, notifying the server after every move and
//! waiting on its event channel when it must block), so it plugs into
//! [`xenring::Client`] for ordinary traffic, including several requests in
//! flight (`Client::submit`/`wait_reply`). The fault switches make it
//! misbehave the way hostile or broken guests do.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use evtchn::{EventChannel, Port};
use gnttab::ForeignPage;
use xenring::codec::encode;
use xenring::page::RingIndex;
use xenring::{GuestEnd, Header, MsgType, RingErrorCode, ServerFeatures};

use crate::conn::Connector;
use crate::error::Error;
use crate::event_channel::MockEventChannel;
use crate::mapper::{MockMapping, MockPageMapper};
use crate::proto::DomainRecord;

/// How long a blocking guest operation waits before giving up (generous: a
/// guest that blocks longer has met a daemon that stopped serving it).
pub const GUEST_BLOCK_LIMIT: Duration = Duration::from_secs(60);

/// A guest domain's xenstore frontend.
#[derive(Debug)]
pub struct Guest {
    domid: u16,
    evtchn: MockEventChannel,
    page: MockMapping,
    port: Port,
    drop_notifications: bool,
    block_limit: Duration,
    /// The ports a wait saw fire (kept, so that a wait allocates none).
    fired: Vec<Port>,
    _mapper: MockPageMapper,
}

impl Guest {
    /// Boots the frontend of the domain `record` describes: maps its own
    /// store page and takes its store port.
    pub fn attach(connector: &Connector, record: &DomainRecord) -> Result<Self, Error> {
        let domid = record.info.domid;
        let mapper = MockPageMapper::open(connector, domid)?;
        let page = mapper.map_foreign_mock(domid, record.store_mfn)?;
        let mut evtchn = MockEventChannel::open(connector, domid)?;
        let port = Port::new(record.store_port);
        evtchn.claim(port)?;
        Ok(Self {
            domid,
            evtchn,
            page,
            port,
            drop_notifications: false,
            fired: Vec::new(),
            block_limit: GUEST_BLOCK_LIMIT,
            _mapper: mapper,
        })
    }

    /// The domain.
    pub fn domid(&self) -> u16 {
        self.domid
    }

    /// The guest end of the ring.
    pub fn end(&self) -> GuestEnd<'_> {
        GuestEnd::new(self.page.ring())
    }

    /// The store event-channel handle.
    pub fn evtchn(&mut self) -> &mut MockEventChannel {
        &mut self.evtchn
    }

    /// Sets how long blocking reads and writes wait.
    pub fn set_block_limit(&mut self, limit: Duration) {
        self.block_limit = limit;
    }

    /// Notifies the server (unless notifications are being dropped).
    pub fn notify(&mut self) -> io::Result<()> {
        if self.drop_notifications {
            return Ok(());
        }
        self.evtchn.notify(self.port).map_err(io::Error::other)
    }

    /// Waits for an event on the store port (or `limit`), then unmasks it.
    pub fn wait_event(&mut self, limit: Duration) -> io::Result<()> {
        self.wait_event_by(&mut None, limit)
    }

    /// [`Guest::wait_event`] by `deadline`, or (unset) for `limit` from
    /// the wait's clock reading, which sets it: a blocking read's or
    /// write's waits share one deadline, without a clock reading of the
    /// caller's own before the first.
    fn wait_event_by(&mut self, deadline: &mut Option<Instant>, limit: Duration) -> io::Result<()> {
        self.fired.clear();
        self.evtchn
            .wait_by(deadline, limit, &mut self.fired)
            .map_err(io::Error::other)?;
        if !self.fired.is_empty() {
            self.evtchn.unmask(&self.fired).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Whether a blocking read's or write's `deadline` (set by its first
    /// wait) has passed.
    fn timed_out(deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn check_error_word(&self) -> io::Result<()> {
        match self.end().error() {
            RingErrorCode::None => Ok(()),
            code => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the server set the ring's error word to {}", code.to_raw()),
            )),
        }
    }

    /// Writes raw bytes into the request ring as far as they fit and
    /// notifies; returns how many went in.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.end().write(bytes).map_err(io::Error::other)?;
        self.notify()?;
        Ok(n)
    }

    /// The reconnection handshake (`docs/misc/xenstore-ring.txt`): asks the
    /// server to reset the ring and waits until it has.
    pub fn reconnect(&mut self) -> io::Result<()> {
        if !self
            .end()
            .server_features()
            .contains(ServerFeatures::RECONNECTION)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server does not offer ring reconnection",
            ));
        }
        self.end().request_reconnect();
        self.notify()?;
        let deadline = Instant::now() + self.block_limit;
        while !self.end().reconnected() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "reconnection not completed",
                ));
            }
            self.wait_event(left.min(Duration::from_millis(100)))?;
        }
        Ok(())
    }

    // ---- Fault injection -------------------------------------------------

    /// Fault: moves `req_prod` far beyond `req_cons` (an index the server
    /// must reject) and notifies.
    pub fn corrupt_indices(&mut self) -> io::Result<()> {
        let ring = self.page.ring();
        let cons = ring.load_index(RingIndex::ReqCons, std::sync::atomic::Ordering::SeqCst);
        ring.store_index(
            RingIndex::ReqProd,
            cons.wrapping_add(0x10_0000),
            std::sync::atomic::Ordering::SeqCst,
        );
        self.notify()
    }

    /// Fault: a header announcing a 4097-byte payload (over the limit).
    pub fn send_oversized(&mut self) -> io::Result<()> {
        let header = Header::new(MsgType::Write, 0xbad, 0, 4097);
        self.write_raw(&header.to_bytes())?;
        Ok(())
    }

    /// Fault: bytes that are no xs_wire request — a header of an unknown
    /// type followed by noise.
    pub fn send_garbage(&mut self) -> io::Result<()> {
        let mut bytes = Header {
            msg_type: 0xdead_beef,
            req_id: 7,
            tx_id: 0xffff_ffff,
            len: 8,
        }
        .to_bytes()
        .to_vec();
        bytes.extend_from_slice(&[0xff, 0, 0x80, 0x7f, 1, 2, 3, 4]);
        self.write_raw(&bytes)?;
        Ok(())
    }

    /// Fault: `n` READ requests written without ever reading a response
    /// (as far as the request ring takes them; returns how many went in).
    pub fn flood_requests(&mut self, n: usize, path: &str) -> io::Result<usize> {
        self.flood(n, MsgType::Read, |_| {
            xenring::codec::build_args(&[path.as_bytes()])
        })
    }

    /// Fault: `n` WATCH requests (distinct tokens) without reading replies.
    pub fn flood_watches(&mut self, n: usize, path: &str) -> io::Result<usize> {
        self.flood(n, MsgType::Watch, |i| {
            let token = format!("flood{i}");
            xenring::codec::build_args(&[path.as_bytes(), token.as_bytes()])
        })
    }

    fn flood(
        &mut self,
        n: usize,
        ty: MsgType,
        payload: impl Fn(usize) -> Vec<u8>,
    ) -> io::Result<usize> {
        let mut sent = 0;
        for i in 0..n {
            let mut msg = Vec::new();
            let req_id = u32::try_from(i).unwrap_or(u32::MAX);
            encode(&mut msg, ty, req_id, 0, &payload(i)).map_err(io::Error::other)?;
            if self.end().writable().map_err(io::Error::other)?
                < u32::try_from(msg.len()).unwrap_or(u32::MAX)
            {
                break;
            }
            self.end().write(&msg).map_err(io::Error::other)?;
            sent += 1;
        }
        self.notify()?;
        Ok(sent)
    }

    /// Fault: notifications are silently dropped (`true`) or sent again.
    pub fn set_drop_notifications(&mut self, drop: bool) {
        self.drop_notifications = drop;
    }

    /// Fault: the first half of a WRITE request, as a guest that dies in
    /// the middle of sending it leaves behind. Returns the bytes written.
    pub fn write_partial_request(&mut self, path: &str, value: &[u8]) -> io::Result<usize> {
        let mut msg = Vec::new();
        encode(
            &mut msg,
            MsgType::Write,
            0x4242,
            0,
            &xenring::codec::build_path_value(path.as_bytes(), value),
        )
        .map_err(io::Error::other)?;
        let half = (msg.len() / 2)
            .max(xenring::wire::HEADER_SIZE + 1)
            .min(msg.len());
        self.write_raw(&msg[..half])
    }
}

impl Read for Guest {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // The clock is read only when there is something to wait for.
        let mut deadline = None;
        loop {
            // As Linux's xenbus driver does: tell the server about freed
            // space only when the ring was full since the old consumer
            // index (it may be waiting for room): what is readable after
            // the read plus what was read reaches the ring's size. (Looking
            // only before the read missed the server filling the ring
            // between the look and the read: it then waited for room
            // forever.)
            let n = self.end().read(buf).map_err(io::Error::other)?;
            if n > 0 {
                let left = self.end().readable().map_err(io::Error::other)?;
                let read = u32::try_from(n).unwrap_or(u32::MAX);
                if left.saturating_add(read) >= xenring::page::RING_SIZE_U32 {
                    self.notify()?;
                }
                return Ok(n);
            }
            self.check_error_word()?;
            if Self::timed_out(deadline) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no response from the xenstore server",
                ));
            }
            self.wait_event_by(&mut deadline, self.block_limit)?;
        }
    }
}

impl Write for Guest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut deadline = None;
        loop {
            self.check_error_word()?;
            let n = self.end().write(buf).map_err(io::Error::other)?;
            if n > 0 {
                self.notify()?;
                return Ok(n);
            }
            if Self::timed_out(deadline) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request ring stayed full",
                ));
            }
            self.wait_event_by(&mut deadline, self.block_limit)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
