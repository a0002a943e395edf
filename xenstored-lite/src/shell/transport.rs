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
}

impl Ring {
    /// Serves `page` of `domid`, signalled on local `port`: advertises the
    /// features we implement (reconnection, the error word).
    pub(super) fn new(page: Box<dyn ForeignPage>, port: Port, domid: DomId) -> Self {
        let ring = Self { page, port, domid };
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
    /// `n` bytes; more may follow at once. `was_full`: the ring was full
    /// before, so the guest may wait for the space now made.
    Data {
        /// Bytes read.
        n: usize,
        /// The ring was full before this read.
        was_full: bool,
    },
    /// `n` bytes, the last there are for now (a socket's short read: it is
    /// reported readable again if anything is left).
    Last(usize),
    /// Nothing to read now.
    Empty,
    /// The peer closed the socket.
    Closed,
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
    pub(super) fn complete_reconnect(&self) {
        if let Self::Ring(r) = self {
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
                    Ok(n) => return Ok(Received::Data { n, was_full: false }),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Empty),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(TransportError::Socket(e)),
                }
            },
            Self::Ring(r) => {
                let end = r.end();
                let was_full = matches!(end.readable(), Ok(RING_SIZE_U32));
                match end.read(buf)? {
                    0 => Ok(Received::Empty),
                    n => Ok(Received::Data { n, was_full }),
                }
            }
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
