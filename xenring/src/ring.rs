//! The two ends of a xenstore ring.
//!
//! Rules from `docs/misc/xenstore-ring.txt` and C xenstored's `domain.c`,
//! enforced here:
//!
//! * "A producer offset is the offset in the byte stream of the next byte to
//!   be written modulo 2^32. A consumer offset is the offset ... of the next
//!   byte to be read modulo 2^32." Indices are free-running `u32`s compared
//!   with wrapping arithmetic; "guests must not assume that producer or
//!   consumer pointers start at zero".
//! * Read both indices once, check `prod - cons <= XENSTORE_RING_SIZE`, then
//!   copy using only the values read: a peer that rewrites an index meanwhile
//!   cannot steer the copy. A violation is [`Error::IndexOverrun`], never an
//!   out-of-bounds access.
//! * "Implementations may only overwrite previously-written data if it has
//!   been marked as consumed by the relevant consumer pointer."
//!
//! Orderings (each pair closes one race with the peer):
//!
//! * consumer: `Acquire` load of the peer's `prod` — the peer wrote the data
//!   before publishing `prod`; without it we could copy bytes older than the
//!   index says.
//! * consumer: `Release` store of our `cons` — our copy out of the ring must be
//!   complete before the peer sees the space as free and overwrites it.
//! * producer: `Acquire` load of the peer's `cons` — the peer's reads of the
//!   bytes it consumed must be complete before we overwrite them.
//! * producer: `Release` store of our `prod` — the bytes we copied in must be
//!   visible before the peer sees the index that covers them.
//!
//! Our own index is loaded `Relaxed`: only we write it legitimately, and a
//! hostile rewrite is caught by the range check, not by ordering.
//!
//! After moving data the caller notifies the peer through the event channel
//! (not this crate's concern).

use core::sync::atomic::{fence, Ordering};

use crate::error::{Error, Queue};
use crate::page::{
    ConnectionState, RingErrorCode, RingIndex, RingPage, ServerFeatures, RING_SIZE_U32,
};

/// Bytes queued between `cons` and `prod`, or the typed error if the peer made
/// them inconsistent.
#[inline]
pub fn queued(queue: Queue, prod: u32, cons: u32) -> Result<u32, Error> {
    let used = prod.wrapping_sub(cons);
    if used > RING_SIZE_U32 {
        Err(Error::IndexOverrun { queue, prod, cons })
    } else {
        Ok(used)
    }
}

/// Free space for the producer, or the typed error.
#[inline]
pub fn free_space(queue: Queue, prod: u32, cons: u32) -> Result<u32, Error> {
    queued(queue, prod, cons).map(|used| RING_SIZE_U32 - used)
}

/// The indices of one queue.
struct Indices {
    queue: Queue,
    cons: RingIndex,
    prod: RingIndex,
}

const REQ: Indices = Indices {
    queue: Queue::Request,
    cons: RingIndex::ReqCons,
    prod: RingIndex::ReqProd,
};
const RSP: Indices = Indices {
    queue: Queue::Response,
    cons: RingIndex::RspCons,
    prod: RingIndex::RspProd,
};

/// Consumer side of one queue: copy out as much as is queued and fits.
fn consume(page: &RingPage<'_>, q: &Indices, buf: &mut [u8]) -> Result<usize, Error> {
    let cons = page.load_index(q.cons, Ordering::Relaxed);
    let prod = page.load_index(q.prod, Ordering::Acquire);
    let avail = queued(q.queue, prod, cons)?;
    let want = buf.len().min(avail as usize);
    let mut done = 0;
    // At most two chunks: up to the end of the array, then from its start.
    while done < want {
        let idx = cons.wrapping_add(as_index(done));
        done += page.copy_out(q.queue, idx, &mut buf[done..want]);
    }
    if done > 0 {
        page.store_index(q.cons, cons.wrapping_add(as_index(done)), Ordering::Release);
    }
    Ok(done)
}

/// Producer side of one queue: copy in as much of `data` as fits.
fn produce(page: &RingPage<'_>, q: &Indices, data: &[u8]) -> Result<usize, Error> {
    let prod = page.load_index(q.prod, Ordering::Relaxed);
    let cons = page.load_index(q.cons, Ordering::Acquire);
    let space = free_space(q.queue, prod, cons)?;
    let want = data.len().min(space as usize);
    let mut done = 0;
    while done < want {
        let idx = prod.wrapping_add(as_index(done));
        done += page.copy_in(q.queue, idx, &data[done..want]);
    }
    if done > 0 {
        page.store_index(q.prod, prod.wrapping_add(as_index(done)), Ordering::Release);
    }
    Ok(done)
}

/// Converts a byte count bounded by the ring size to the index type.
#[inline]
fn as_index(n: usize) -> u32 {
    // Every count passed here is bounded by `RING_SIZE` (1024) by the callers'
    // `min` with a value from `queued`/`free_space`.
    u32::try_from(n).unwrap_or(RING_SIZE_U32)
}

/// Consumer side without releasing: copies out what is queued `ahead`
/// bytes past our published `cons` (bytes already copied and not yet
/// released), as much as fits in `buf`.
fn peek(page: &RingPage<'_>, q: &Indices, ahead: u32, buf: &mut [u8]) -> Result<usize, Error> {
    let cons = page.load_index(q.cons, Ordering::Relaxed);
    let prod = page.load_index(q.prod, Ordering::Acquire);
    let used = queued(q.queue, prod, cons)?;
    // `ahead` is ours, but the guest may have rewritten `cons` meanwhile:
    // never beyond what is queued.
    let avail = used.checked_sub(ahead).ok_or(Error::IndexOverrun {
        queue: q.queue,
        prod,
        cons: cons.wrapping_add(ahead),
    })?;
    let want = buf.len().min(avail as usize);
    let start = cons.wrapping_add(ahead);
    let mut done = 0;
    while done < want {
        let idx = start.wrapping_add(as_index(done));
        done += page.copy_out(q.queue, idx, &mut buf[done..want]);
    }
    Ok(done)
}

/// Releases `n` consumed bytes to the producer (`cons += n`), at most what
/// is queued.
fn release(page: &RingPage<'_>, q: &Indices, n: u32) -> Result<(), Error> {
    let cons = page.load_index(q.cons, Ordering::Relaxed);
    let prod = page.load_index(q.prod, Ordering::Acquire);
    let used = queued(q.queue, prod, cons)?;
    if n > used {
        return Err(Error::IndexOverrun {
            queue: q.queue,
            prod,
            cons: cons.wrapping_add(n),
        });
    }
    if n > 0 {
        page.store_index(q.cons, cons.wrapping_add(n), Ordering::Release);
    }
    Ok(())
}

fn queued_now(page: &RingPage<'_>, q: &Indices) -> Result<u32, Error> {
    let cons = page.load_index(q.cons, Ordering::Relaxed);
    let prod = page.load_index(q.prod, Ordering::Acquire);
    queued(q.queue, prod, cons)
}

fn space_now(page: &RingPage<'_>, q: &Indices) -> Result<u32, Error> {
    let prod = page.load_index(q.prod, Ordering::Relaxed);
    let cons = page.load_index(q.cons, Ordering::Acquire);
    free_space(q.queue, prod, cons)
}

/// The xenstore daemon's end: reads requests, writes responses.
#[derive(Debug, Clone, Copy)]
pub struct ServerEnd<'a> {
    page: RingPage<'a>,
}

impl<'a> ServerEnd<'a> {
    /// The server end of `page`.
    pub fn new(page: RingPage<'a>) -> Self {
        Self { page }
    }

    /// The underlying page.
    pub fn page(&self) -> RingPage<'a> {
        self.page
    }

    /// Copies as many request bytes as are queued and fit into `buf`, and
    /// releases them to the guest. Returns the number copied (0: nothing
    /// queued).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        consume(&self.page, &REQ, buf)
    }

    /// Copies request bytes into `buf` without releasing them: the bytes
    /// start `ahead` octets past the published `req_cons` (those already
    /// copied and not yet released with [`ServerEnd::release`]). A server
    /// that must record what it read before the guest may reuse the space
    /// (a crash journal) reads so. Returns the number copied.
    pub fn peek(&self, ahead: u32, buf: &mut [u8]) -> Result<usize, Error> {
        peek(&self.page, &REQ, ahead, buf)
    }

    /// Releases `n` request bytes copied by [`ServerEnd::peek`]: publishes
    /// `req_cons + n`. More than is queued is an error and changes nothing.
    pub fn release(&self, n: u32) -> Result<(), Error> {
        release(&self.page, &REQ, n)
    }

    /// The four indices as the page has them now: `(req_cons, req_prod,
    /// rsp_cons, rsp_prod)`, unchecked (a crash recovery compares them with
    /// what it recorded).
    pub fn indices(&self) -> (u32, u32, u32, u32) {
        let p = &self.page;
        (
            p.load_index(RingIndex::ReqCons, Ordering::Relaxed),
            p.load_index(RingIndex::ReqProd, Ordering::Acquire),
            p.load_index(RingIndex::RspCons, Ordering::Acquire),
            p.load_index(RingIndex::RspProd, Ordering::Relaxed),
        )
    }

    /// Copies as much of `data` into the response queue as fits, and
    /// publishes it. Returns the number of bytes written (0: queue full).
    pub fn write(&self, data: &[u8]) -> Result<usize, Error> {
        produce(&self.page, &RSP, data)
    }

    /// Request bytes waiting to be read.
    pub fn readable(&self) -> Result<u32, Error> {
        queued_now(&self.page, &REQ)
    }

    /// Free space in the response queue.
    pub fn writable(&self) -> Result<u32, Error> {
        space_now(&self.page, &RSP)
    }

    /// Adds feature bits to `server_features` (bits are never cleared, per
    /// `xenstore-ring.txt`).
    pub fn advertise(&self, features: ServerFeatures) {
        let current = self.page.server_features();
        self.page.set_server_features(current | features);
    }

    /// Clears feature bits of `server_features`. Only for handing the ring
    /// to a server that lacks them (a live update to C xenstored 4.17,
    /// which implements neither): the guest must not go on relying on a
    /// feature its next server does not have. Never while serving.
    pub fn withdraw(&self, features: ServerFeatures) {
        let current = self.page.server_features();
        self.page.set_server_features(current & !features);
    }

    /// Whether the guest asked for a reconnection (`connection == 1`).
    pub fn reconnect_requested(&self) -> bool {
        self.page.connection() == ConnectionState::Reconnect
    }

    /// Completes the reconnection handshake: empties both queues and sets the
    /// connection word back to `Connected`. The caller has already dropped
    /// its partial packets, in-flight requests, watches and transactions for
    /// this connection, and notifies the guest afterwards.
    pub fn complete_reconnect(&self) {
        for index in [
            RingIndex::ReqCons,
            RingIndex::ReqProd,
            RingIndex::RspCons,
            RingIndex::RspProd,
        ] {
            self.page.store_index(index, 0, Ordering::Relaxed);
        }
        // The emptied indices must be visible before the guest sees
        // `Connected` and starts producing again, or it could base new
        // requests on the stale indices.
        fence(Ordering::SeqCst);
        self.page.set_connection(ConnectionState::Connected);
    }

    /// Sets the error word: the server stops serving this ring (the guest is
    /// expected to see it when `ServerFeatures::ERROR` is advertised).
    pub fn set_error(&self, code: RingErrorCode) {
        self.page.set_error(code);
    }

    /// The current error word.
    pub fn error(&self) -> RingErrorCode {
        self.page.error()
    }
}

/// The guest's end: writes requests, reads responses (a kernel xenbus driver,
/// a stub domain, or a simulated guest).
#[derive(Debug, Clone, Copy)]
pub struct GuestEnd<'a> {
    page: RingPage<'a>,
}

impl<'a> GuestEnd<'a> {
    /// The guest end of `page`.
    pub fn new(page: RingPage<'a>) -> Self {
        Self { page }
    }

    /// The underlying page.
    pub fn page(&self) -> RingPage<'a> {
        self.page
    }

    /// Copies as much of `data` into the request queue as fits. Returns the
    /// number written (0: queue full).
    pub fn write(&self, data: &[u8]) -> Result<usize, Error> {
        produce(&self.page, &REQ, data)
    }

    /// Copies as many response bytes as are queued and fit into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Error> {
        consume(&self.page, &RSP, buf)
    }

    /// Response bytes waiting.
    pub fn readable(&self) -> Result<u32, Error> {
        queued_now(&self.page, &RSP)
    }

    /// Free space in the request queue.
    pub fn writable(&self) -> Result<u32, Error> {
        space_now(&self.page, &REQ)
    }

    /// What the server offers.
    pub fn server_features(&self) -> ServerFeatures {
        self.page.server_features()
    }

    /// Starts the reconnection handshake (`connection = 1`). The caller
    /// notifies the server, then waits for [`GuestEnd::reconnected`].
    pub fn request_reconnect(&self) {
        // Whatever we wrote before must be ordered before the request: the
        // server will discard it, and must not see half of it afterwards.
        fence(Ordering::SeqCst);
        self.page.set_connection(ConnectionState::Reconnect);
    }

    /// Whether the server has completed the handshake (`connection == 0`).
    pub fn reconnected(&self) -> bool {
        let done = self.page.connection() == ConnectionState::Connected;
        if done {
            // Pairs with the server's fence in `complete_reconnect`: the
            // emptied indices are read only after we saw `Connected`.
            fence(Ordering::SeqCst);
        }
        done
    }

    /// The server's error word.
    pub fn error(&self) -> RingErrorCode {
        self.page.error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::OwnedPage;

    fn set_indices(page: &RingPage<'_>, req: (u32, u32), rsp: (u32, u32)) {
        page.store_index(RingIndex::ReqCons, req.0, Ordering::Relaxed);
        page.store_index(RingIndex::ReqProd, req.1, Ordering::Relaxed);
        page.store_index(RingIndex::RspCons, rsp.0, Ordering::Relaxed);
        page.store_index(RingIndex::RspProd, rsp.1, Ordering::Relaxed);
    }

    #[test]
    fn test_peek_leaves_the_space_to_the_guest_until_released() {
        let page = OwnedPage::new();
        let start = u32::MAX - 2;
        set_indices(&page.ring(), (start, start), (7, 9));
        let guest = GuestEnd::new(page.ring());
        let server = ServerEnd::new(page.ring());
        assert_eq!(guest.write(b"abcdef").unwrap(), 6);
        let mut got = [0u8; 4];
        assert_eq!(server.peek(0, &mut got).unwrap(), 4);
        assert_eq!(&got, b"abcd");
        assert_eq!(server.peek(4, &mut got).unwrap(), 2);
        assert_eq!(&got[..2], b"ef");
        assert_eq!(server.peek(6, &mut got).unwrap(), 0);
        // Nothing released yet: the guest still sees six bytes queued.
        assert_eq!(server.readable().unwrap(), 6);
        assert_eq!(server.indices(), (start, start.wrapping_add(6), 7, 9));
        // Beyond what is queued: refused, nothing changes.
        assert!(server.peek(7, &mut got).is_err());
        assert!(server.release(7).is_err());
        assert_eq!(server.readable().unwrap(), 6);
        server.release(4).unwrap();
        assert_eq!(server.readable().unwrap(), 2);
        assert_eq!(server.peek(0, &mut got).unwrap(), 2);
        assert_eq!(&got[..2], b"ef");
        server.release(2).unwrap();
        assert_eq!(server.indices().0, start.wrapping_add(6));
    }

    #[test]
    fn test_ring_roundtrip_across_wrap_keeps_order() {
        let page = OwnedPage::new();
        let start = u32::MAX - 10;
        set_indices(&page.ring(), (start, start), (start, start));
        let guest = GuestEnd::new(page.ring());
        let server = ServerEnd::new(page.ring());
        let msg: [u8; 40] = core::array::from_fn(|i| u8::try_from(i).unwrap_or(0));
        assert_eq!(guest.write(&msg).unwrap(), 40);
        let mut got = [0u8; 64];
        assert_eq!(server.read(&mut got).unwrap(), 40);
        assert_eq!(&got[..40], &msg);
        assert_eq!(
            page.ring()
                .load_index(RingIndex::ReqCons, Ordering::Relaxed),
            start.wrapping_add(40)
        );
    }

    #[test]
    fn test_ring_full_queue_writes_nothing() {
        let page = OwnedPage::new();
        let guest = GuestEnd::new(page.ring());
        assert_eq!(guest.write(&[1u8; 2000]).unwrap(), 1024);
        assert_eq!(guest.write(&[1u8; 10]).unwrap(), 0);
        assert_eq!(guest.writable().unwrap(), 0);
    }

    #[test]
    fn test_ring_hostile_indices_give_typed_error() {
        let page = OwnedPage::new();
        set_indices(&page.ring(), (0, 1025), (5, 0));
        let server = ServerEnd::new(page.ring());
        let mut buf = [0u8; 16];
        assert!(matches!(
            server.read(&mut buf),
            Err(Error::IndexOverrun {
                queue: Queue::Request,
                prod: 1025,
                cons: 0
            })
        ));
        // rsp_prod 0 - rsp_cons 5 wraps to u32::MAX - 4: the guest claims to
        // have consumed bytes that were never produced.
        assert!(matches!(
            server.write(b"x"),
            Err(Error::IndexOverrun {
                queue: Queue::Response,
                prod: 0,
                cons: 5
            })
        ));
    }

    #[test]
    fn test_ring_reconnect_handshake_empties_queues() {
        let page = OwnedPage::new();
        let guest = GuestEnd::new(page.ring());
        let server = ServerEnd::new(page.ring());
        server.advertise(ServerFeatures::RECONNECTION);
        guest.write(b"half a request").unwrap();
        guest.request_reconnect();
        assert!(server.reconnect_requested());
        assert!(!guest.reconnected());
        server.complete_reconnect();
        assert!(guest.reconnected());
        assert_eq!(server.readable().unwrap(), 0);
        assert_eq!(guest.readable().unwrap(), 0);
    }

    /// `xenstore-ring.txt`: on reconnection the server resets all four
    /// indices. A server that forgets its consumer index (`req_cons`) looks
    /// fine until the guest sends its first request on the new connection:
    /// then the stale consumer index is ahead of (or far from) the fresh
    /// producer index, and the request is lost or the ring is "corrupt".
    #[test]
    fn test_ring_reconnect_resets_consumer_indices_new_requests_flow() {
        let page = OwnedPage::new();
        let ring = page.ring();
        // Guests must not assume the indices start at zero.
        let start = 0x8000_0123;
        set_indices(&ring, (start, start), (start, start));
        let guest = GuestEnd::new(ring);
        let server = ServerEnd::new(ring);
        server.advertise(ServerFeatures::RECONNECTION);

        // Old connection: a request consumed, a reply half read, and a
        // request half written when the guest asks to start over.
        let mut buf = [0u8; 64];
        assert_eq!(guest.write(b"old request").unwrap(), 11);
        assert_eq!(server.read(&mut buf).unwrap(), 11);
        assert_eq!(server.write(b"old reply").unwrap(), 9);
        assert_eq!(guest.read(&mut buf[..4]).unwrap(), 4);
        assert_eq!(guest.write(b"half").unwrap(), 4);
        guest.request_reconnect();
        assert!(server.reconnect_requested());
        server.complete_reconnect();
        assert!(guest.reconnected());
        assert!(!server.reconnect_requested());

        for index in [
            RingIndex::ReqCons,
            RingIndex::ReqProd,
            RingIndex::RspCons,
            RingIndex::RspProd,
        ] {
            assert_eq!(ring.load_index(index, Ordering::Relaxed), 0, "{index:?}");
        }
        // New connection: exactly the new bytes flow, both ways.
        assert_eq!(server.readable().unwrap(), 0);
        assert_eq!(guest.readable().unwrap(), 0);
        assert_eq!(guest.write(b"new request").unwrap(), 11);
        assert_eq!(server.readable().unwrap(), 11);
        assert_eq!(server.read(&mut buf).unwrap(), 11);
        assert_eq!(&buf[..11], b"new request");
        assert_eq!(server.write(b"new reply").unwrap(), 9);
        assert_eq!(guest.readable().unwrap(), 9);
        assert_eq!(guest.read(&mut buf).unwrap(), 9);
        assert_eq!(&buf[..9], b"new reply");
        assert_eq!(guest.writable().unwrap(), RING_SIZE_U32);
        assert_eq!(server.writable().unwrap(), RING_SIZE_U32);
    }

    #[test]
    fn test_ring_advertise_never_clears_bits() {
        let page = OwnedPage::new();
        let server = ServerEnd::new(page.ring());
        server.advertise(ServerFeatures::ERROR);
        server.advertise(ServerFeatures::RECONNECTION);
        // Offering a feature again keeps it.
        server.advertise(ServerFeatures::ERROR);
        let both = ServerFeatures::ERROR | ServerFeatures::RECONNECTION;
        assert_eq!(page.ring().server_features(), both);
        assert_eq!(GuestEnd::new(page.ring()).server_features(), both);
    }

    #[test]
    fn test_ring_withdraw_clears_only_the_bits_named() {
        let page = OwnedPage::new();
        let server = ServerEnd::new(page.ring());
        server.advertise(ServerFeatures::ERROR | ServerFeatures::RECONNECTION);
        server.withdraw(ServerFeatures::RECONNECTION);
        assert_eq!(page.ring().server_features(), ServerFeatures::ERROR);
        server.withdraw(ServerFeatures::all());
        assert_eq!(page.ring().server_features(), ServerFeatures::empty());
    }
}
