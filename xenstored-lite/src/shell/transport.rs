//! A connection's transport: a Unix socket or a guest's ring with its
//! event channel. What differs between them is here, as C xenstored keeps
//! it in its `interface_funcs` (read, write, and what a violation and a
//! teardown do), so that the loop calls methods and never asks which kind
//! a connection is.
//!
//! Sockets are read when `epoll` reports them readable ([`Transport::poll_fd`]);
//! rings when their event channel fires ([`Transport::port`]). A ring's
//! [`ServerEnd`] borrows its mapping, so it cannot be kept next to the
//! mapping it borrows: [`Ring::end`] is the one place it is made (a copy of
//! one pointer), once per operation.

use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;

use evtchn::{EventChannel, Port};
use gnttab::ForeignPage;
use nix::sys::epoll::Epoll;
use xenring::page::RING_SIZE_U32;
use xenring::{DomId, RingErrorCode, ServerEnd, ServerFeatures};

/// A connection's transport.
pub(super) enum Transport {
    /// A client of the Unix socket.
    Socket(UnixStream),
    /// A guest's ring.
    Ring(Ring),
}

/// A guest's ring page, mapped, and the local port of its event channel.
pub(super) struct Ring {
    page: Box<dyn ForeignPage>,
    port: Port,
    domid: DomId,
    /// Request octets read and not yet released to the guest
    /// ([`Transport::release_reads`]): the crash journal holds them first.
    unreleased: u32,
    /// The request queue was full when reading began: the guest may wait
    /// for the space a release makes.
    was_full: bool,
}

impl Ring {
    /// Serves `page` of `domid`, signalled on local `port`: advertises the
    /// features we implement (reconnection, the error word).
    pub(super) fn new(page: Box<dyn ForeignPage>, port: Port, domid: DomId) -> Self {
        let ring = Self {
            page,
            port,
            domid,
            unreleased: 0,
            was_full: false,
        };
        ring.end()
            .advertise(ServerFeatures::RECONNECTION | ServerFeatures::ERROR);
        ring
    }

    /// The server end of the page.
    fn end(&self) -> ServerEnd<'_> {
        ServerEnd::new(self.page.ring())
    }
}

/// What a read got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    /// `n` bytes; more may follow at once.
    Data(usize),
    /// `n` bytes, the last there are for now (a socket's short read: it is
    /// reported readable again if anything is left; a ring read that took
    /// all it held: its release says if more came).
    Last(usize),
    /// Nothing to read now.
    Empty,
    /// The peer closed the socket.
    Closed,
}

/// What [`Transport::release_reads`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Released {
    /// The queue had been full: the guest may wait for the space (notify
    /// it).
    pub(super) was_full: bool,
    /// Requests wait that came after the reads released (read again).
    pub(super) more: bool,
}

/// How a transport failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    /// A socket's read or write failed.
    #[error("socket I/O failed: {0}")]
    Socket(#[source] io::Error),
    /// The guest made the ring's indices inconsistent.
    #[error(transparent)]
    Ring(#[from] xenring::Error),
}

/// What the stream records of a transport (`describe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// A socket's descriptor (passed down on live update).
    Socket(RawFd),
    /// A ring's domain and local port.
    Ring {
        /// The guest.
        domid: DomId,
        /// The local port of its event channel.
        port: Port,
    },
}

impl Transport {
    /// The guest of a ring.
    pub(super) fn domid(&self) -> Option<DomId> {
        match self {
            Self::Ring(r) => Some(r.domid),
            Self::Socket(_) => None,
        }
    }

    /// The local port whose event wakes this transport (a ring).
    pub(super) fn port(&self) -> Option<Port> {
        match self {
            Self::Ring(r) => Some(r.port),
            Self::Socket(_) => None,
        }
    }

    /// The descriptor `epoll` watches for this transport (a socket).
    pub(super) fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Self::Socket(s) => Some(s.as_fd()),
            Self::Ring(_) => None,
        }
    }

    /// What the stream records of it.
    pub(super) fn describe(&self) -> Endpoint {
        match self {
            Self::Socket(s) => Endpoint::Socket(s.as_raw_fd()),
            Self::Ring(r) => Endpoint::Ring {
                domid: r.domid,
                port: r.port,
            },
        }
    }

    /// Whether the guest asked for a reconnection (a ring).
    pub(super) fn reconnect_requested(&self) -> bool {
        match self {
            Self::Ring(r) => r.end().reconnect_requested(),
            Self::Socket(_) => false,
        }
    }

    /// Before a hand-over to a server that implements none of the ring
    /// features (C xenstored 4.17): clears the bits we advertised; returns
    /// what they were, for [`Transport::restore_features`] if the
    /// hand-over fails. Nothing for a socket.
    pub(super) fn withdraw_features(&self) -> Option<ServerFeatures> {
        match self {
            Self::Ring(r) => {
                let end = r.end();
                let had = r.page.ring().server_features();
                end.withdraw(ServerFeatures::all());
                Some(had)
            }
            Self::Socket(_) => None,
        }
    }

    /// Advertises `features` again (a hand-over that did not happen).
    pub(super) fn restore_features(&self, features: ServerFeatures) {
        if let Self::Ring(r) = self {
            r.end().advertise(features);
        }
    }

    /// Completes the reconnection the guest asked for (queues emptied).
    pub(super) fn complete_reconnect(&mut self) {
        if let Self::Ring(r) = self {
            r.unreleased = 0;
            r.was_full = false;
            r.end().complete_reconnect();
        }
    }

    /// Reads what is there into `buf` (the call is retried on `EINTR`).
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<Received, TransportError> {
        match self {
            Self::Socket(s) => loop {
                match s.read(buf) {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(n) if n < buf.len() => return Ok(Received::Last(n)),
                    Ok(n) => return Ok(Received::Data(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Empty),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(TransportError::Socket(e)),
                }
            },
            Self::Ring(r) => {
                // Full at any read (what we hold unreleased counts): the
                // guest may be waiting for the space a release makes.
                let readable = r.end().readable();
                r.was_full |= matches!(readable, Ok(RING_SIZE_U32));
                match r.end().peek(r.unreleased, buf)? {
                    0 => Ok(Received::Empty),
                    n => {
                        // At most a ring's worth is ever queued.
                        r.unreleased += u32::try_from(n).unwrap_or(RING_SIZE_U32);
                        // All that was there is taken: no second look
                        // (what the guest writes from now on, the release
                        // finds, `Released::more`).
                        if matches!(readable, Ok(k) if k <= r.unreleased) {
                            Ok(Received::Last(n))
                        } else {
                            Ok(Received::Data(n))
                        }
                    }
                }
            }
        }
    }

    /// Lets the guest have the space of what [`Transport::read`] read (a
    /// ring's `req_cons` moves on). Nothing for a socket.
    pub(super) fn release_reads(&mut self) -> Result<Released, TransportError> {
        match self {
            Self::Ring(r) if r.unreleased > 0 => {
                let n = std::mem::take(&mut r.unreleased);
                // The guest may have filled the ring since the last read.
                let full = matches!(r.end().readable(), Ok(RING_SIZE_U32));
                r.end().release(n)?;
                Ok(Released {
                    was_full: std::mem::take(&mut r.was_full) || full,
                    // Written while we held the space: Linux's xenbus
                    // notified no one (it found `req_cons` behind).
                    more: r.end().readable()? > 0,
                })
            }
            _ => Ok(Released::default()),
        }
    }

    /// A ring's indices as its page has them: `(req_cons, req_prod,
    /// rsp_cons, rsp_prod)`.
    pub(super) fn ring_indices(&self) -> Option<(u32, u32, u32, u32)> {
        match self {
            Self::Ring(r) => Some(r.end().indices()),
            Self::Socket(_) => None,
        }
    }

    /// Where a ring's journaled indices stand: `req_cons` once what was
    /// read is released, and `rsp_prod`.
    pub(super) fn journaled_indices(&self) -> Option<(u32, u32)> {
        match self {
            Self::Ring(r) => {
                let (cons, _, _, prod) = r.end().indices();
                Some((cons.wrapping_add(r.unreleased), prod))
            }
            Self::Socket(_) => None,
        }
    }

    /// Releases `n` request octets a crash recovery found journaled and not
    /// yet released by the crashed process.
    pub(super) fn release_journaled(&self, n: u32) -> Result<(), TransportError> {
        match self {
            Self::Ring(r) => Ok(r.end().release(n)?),
            Self::Socket(_) => Ok(()),
        }
    }

    /// Writes as much of `data` as fits now (0: none), retrying on `EINTR`.
    pub(super) fn write(&mut self, data: &[u8]) -> Result<usize, TransportError> {
        match self {
            Self::Socket(s) => loop {
                match s.write(data) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(TransportError::Socket(e)),
                }
            },
            Self::Ring(r) => Ok(r.end().write(data)?),
        }
    }

    /// Tells the peer that it is cut off, where the transport can (a
    /// ring's error word; the connection then stays, ignored). `false`: it
    /// cannot (a socket), so it is to be closed.
    pub(super) fn flag_error(&self, code: RingErrorCode) -> bool {
        match self {
            Self::Ring(r) => {
                r.end().set_error(code);
                true
            }
            Self::Socket(_) => false,
        }
    }

    /// Signals the peer that its ring changed (a socket needs nothing).
    pub(super) fn notify(&self, evtchn: &mut dyn EventChannel) {
        if let Self::Ring(r) = self {
            if let Err(e) = evtchn.notify(r.port) {
                tracing::warn!("notifying port {} failed: {e}", r.port);
            }
        }
    }

    /// Lets go of it: a socket leaves `epoll` (and is closed), a ring's
    /// port is unbound (and its page unmapped).
    pub(super) fn teardown(self, epoll: &Epoll, evtchn: &mut dyn EventChannel) {
        match self {
            Self::Socket(s) => {
                let _ = epoll.delete(&s);
            }
            Self::Ring(r) => {
                if let Err(e) = evtchn.unbind(r.port) {
                    tracing::warn!("unbinding port {} failed: {e}", r.port);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xenring::page::OwnedPage;
    use xenring::GuestEnd;

    use super::*;

    /// A heap page standing in for a mapped ring, shared with the test's
    /// guest end.
    #[derive(Clone)]
    struct Page(Arc<OwnedPage>);

    impl std::fmt::Debug for Page {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Page")
        }
    }

    impl ForeignPage for Page {
        fn ring(&self) -> xenring::RingPage<'_> {
            self.0.ring()
        }
    }

    fn ring() -> (Transport, Page) {
        let page = Page(Arc::new(OwnedPage::new()));
        let t = Transport::Ring(Ring::new(Box::new(page.clone()), Port::new(5), 2));
        (t, page)
    }

    #[test]
    fn test_reads_are_held_until_released() {
        let (mut t, page) = ring();
        let guest = GuestEnd::new(page.0.ring());
        assert_eq!(guest.write(b"hello").unwrap(), 5);
        let mut buf = [0u8; 3];
        assert_eq!(t.read(&mut buf).unwrap(), Received::Data(3));
        assert_eq!(&buf, b"hel");
        assert_eq!(t.read(&mut buf).unwrap(), Received::Last(2), "all taken");
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(t.read(&mut buf).unwrap(), Received::Empty);
        // Read, not released: the guest's space is still taken.
        assert_eq!(guest.writable().unwrap(), RING_SIZE_U32 - 5);
        assert_eq!(t.journaled_indices(), Some((5, 0)));
        assert_eq!(t.ring_indices(), Some((0, 5, 0, 0)));
        assert_eq!(
            t.release_reads().unwrap(),
            Released::default(),
            "the ring was never full"
        );
        assert_eq!(guest.writable().unwrap(), RING_SIZE_U32);
        assert_eq!(t.journaled_indices(), Some((5, 0)));
        // Nothing more to release.
        assert_eq!(t.release_reads().unwrap(), Released::default());
        // Written while the reads were held: the release says so.
        assert_eq!(guest.write(b"ab").unwrap(), 2);
        assert_eq!(t.read(&mut buf).unwrap(), Received::Last(2));
        assert_eq!(guest.write(b"cd").unwrap(), 2);
        let r = t.release_reads().unwrap();
        assert!(r.more && !r.was_full, "{r:?}");
        assert_eq!(t.ring_indices(), Some((7, 9, 0, 0)));
    }

    #[test]
    fn test_a_ring_that_filled_while_reads_were_held_is_reported_full() {
        let (mut t, page) = ring();
        let guest = GuestEnd::new(page.0.ring());
        let mut buf = [0u8; 2048];
        // Not full at the first read...
        assert_eq!(guest.write(&[1u8; 500]).unwrap(), 500);
        assert_eq!(t.read(&mut buf).unwrap(), Received::Last(500));
        // ...then the guest fills what is left and waits for space.
        let rest = (RING_SIZE_U32 - 500) as usize;
        assert_eq!(guest.write(&vec![2u8; 2000]).unwrap(), rest);
        assert_eq!(t.read(&mut buf).unwrap(), Received::Last(rest));
        assert!(
            t.release_reads().unwrap().was_full,
            "the guest must be told"
        );
        // Full only after the last read, before the release.
        assert_eq!(guest.write(&[3u8; 100]).unwrap(), 100);
        assert_eq!(t.read(&mut buf).unwrap(), Received::Last(100));
        assert_eq!(guest.write(&vec![4u8; 2000]).unwrap(), rest + 400);
        assert!(t.release_reads().unwrap().was_full, "full at the release");
    }

    #[test]
    fn test_recovery_releases_what_the_journal_read() {
        let (t, page) = ring();
        let guest = GuestEnd::new(page.0.ring());
        assert_eq!(guest.write(b"abcdef").unwrap(), 6);
        t.release_journaled(4).unwrap();
        assert_eq!(t.ring_indices(), Some((4, 6, 0, 0)));
        assert!(t.release_journaled(3).is_err(), "more than is queued");
        assert_eq!(t.ring_indices(), Some((4, 6, 0, 0)));
    }

    #[test]
    fn test_a_reconnection_forgets_held_reads() {
        let (mut t, page) = ring();
        let guest = GuestEnd::new(page.0.ring());
        assert_eq!(guest.write(b"abc").unwrap(), 3);
        let mut buf = [0u8; 8];
        assert_eq!(t.read(&mut buf).unwrap(), Received::Last(3));
        t.complete_reconnect();
        assert_eq!(t.journaled_indices(), Some((0, 0)));
        assert_eq!(t.release_reads().unwrap(), Released::default());
        assert_eq!(t.ring_indices(), Some((0, 0, 0, 0)));
    }
}
