//! One guest's ring, served: the mapped page, its local port, the
//! half-received request (a per-connection [`Decoder`]) and the half-written
//! response.
//!
//! The rules of `research/stub-domain.md` ("Ring behaviour that bites"):
//! `req_cons` advances as bytes are copied out ([`ServerEnd::read`]), a
//! partial header or payload is kept here, not left in the ring, and output
//! that does not fit stays in `out` for the next write. Indices a guest
//! made inconsistent are a typed [`xenring::Error`], which the server turns
//! into that ring's error word.

use alloc::boxed::Box;
use alloc::vec::Vec;

use evtchn::Port;
use gnttab::ForeignPage;
use xenring::codec::Decoder;
use xenring::page::RING_SIZE;
use xenring::{DomId, Message, ServerEnd, ServerFeatures};

/// Request bytes read from one ring per service (four ring-fulls): a guest
/// that keeps its ring full cannot keep the others waiting.
pub const READ_BUDGET: usize = 4 * RING_SIZE;

/// What [`RingConn::read_requests`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Bytes taken out of the ring.
    pub bytes: usize,
    /// The ring was full before one of the reads: the guest may be waiting
    /// for room, so it must be notified.
    pub was_full: bool,
    /// The budget ran out with bytes still in the ring.
    pub more: bool,
}

/// A served ring.
#[derive(Debug)]
pub struct RingConn {
    page: Box<dyn ForeignPage>,
    port: Port,
    domid: DomId,
    decoder: Decoder,
    out: Vec<u8>,
    out_off: usize,
    dead: bool,
}

impl RingConn {
    /// Serves `page` of `domid`, signalled on local `port`: advertises the
    /// features the server implements (reconnection, the error word).
    pub fn new(page: Box<dyn ForeignPage>, port: Port, domid: DomId) -> Self {
        let conn = Self {
            page,
            port,
            domid,
            decoder: Decoder::new(),
            out: Vec::new(),
            out_off: 0,
            dead: false,
        };
        conn.end()
            .advertise(ServerFeatures::RECONNECTION | ServerFeatures::ERROR);
        conn
    }

    /// The server end of the page (made per use: it borrows the mapping).
    pub fn end(&self) -> ServerEnd<'_> {
        ServerEnd::new(self.page.ring())
    }

    /// The local port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The guest.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Whether the ring was cut off (error word set; ignored from now on).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Cuts the ring off: sets its error word; it is not read or written
    /// again.
    pub fn cut_off(&mut self, code: xenring::RingErrorCode) {
        self.end().set_error(code);
        self.dead = true;
        self.out.clear();
        self.out_off = 0;
    }

    /// Drops the partial request and response (the reconnection handshake).
    pub fn reset(&mut self) {
        self.decoder = Decoder::new();
        self.out.clear();
        self.out_off = 0;
    }

    /// Whether bytes of a response wait for room in the ring.
    pub fn has_buffered_output(&self) -> bool {
        self.out_off < self.out.len()
    }

    /// Reads at most `budget` bytes of requests out of the ring, decoding
    /// complete ones into `requests` (a partial one stays in the decoder).
    /// On error, what was decoded before it is in `requests`.
    pub fn read_requests(
        &mut self,
        budget: usize,
        requests: &mut Vec<Message>,
    ) -> Result<ReadOutcome, xenring::Error> {
        let mut outcome = ReadOutcome::default();
        let mut buf = [0u8; RING_SIZE];
        while outcome.bytes < budget {
            let end = self.end();
            let was_full = end.readable()? == xenring::page::RING_SIZE_U32;
            let want = buf.len().min(budget - outcome.bytes);
            let n = end.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(outcome);
            }
            outcome.was_full |= was_full;
            outcome.bytes += n;
            let mut input = &buf[..n];
            while let Some(msg) = self.decoder.decode(&mut input)? {
                requests.push(msg);
            }
        }
        outcome.more = self.end().readable()? > 0;
        Ok(outcome)
    }

    /// Writes the half-written response, then messages `next` gives, as far
    /// as they fit; returns the bytes written. A message that does not fit
    /// stays buffered (its rest is written first next time).
    pub fn write_responses(
        &mut self,
        mut next: impl FnMut() -> Option<Message>,
    ) -> Result<usize, xenring::Error> {
        let mut written = 0;
        loop {
            if self.out_off == self.out.len() {
                self.out.clear();
                self.out_off = 0;
                match next() {
                    Some(msg) => msg.encode_into(&mut self.out),
                    None => return Ok(written),
                }
            }
            let n = self.end().write(&self.out[self.out_off..])?;
            self.out_off += n;
            written += n;
            if n == 0 {
                return Ok(written);
            }
        }
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
