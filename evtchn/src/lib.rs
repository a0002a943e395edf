//! Xen event channels for a xenstore daemon.
//!
//! * [`Port`]: a local event-channel port number.
//! * [`EventChannel`]: what the daemon needs from event channels — bind an
//!   interdomain port, a VIRQ or an unbound port, unbind, notify, collect the
//!   ports that fired, unmask them, and an fd to poll on. It is object-safe and
//!   `Send`: the daemon picks a backend at start-up and holds a
//!   `Box<dyn EventChannel>` in its single-threaded poll loop.
//! * `LinuxEventChannel` (feature `std`): the backend over `/dev/xen/evtchn`.
//! * `fd` (feature `std`): close-on-exec helpers for keeping the handle
//!   across `exec()`.
//! * [`hypercall`]: the backend over Xen's hypercalls and the shared_info
//!   page, for a kernel of its own (a xenstore stub domain), and the
//!   [`hypercall::Hypervisor`] trait such a kernel implements.
//!
//! Without its default `std` feature the crate is `no_std` + `alloc`: the
//! trait loses its `AsRawFd` supertrait and `handle_fd`, and the Linux
//! backend and the `io::Error`/`PathBuf` error variants are absent.
//!
//! # Delivery semantics (all backends)
//!
//! A port that fires is reported once by [`EventChannel::read_pending`] (or
//! [`EventChannel::wait`]) and is then *masked*: it is not reported again,
//! however often the peer notifies, until the caller passes it to
//! [`EventChannel::unmask`]. Notifications arriving while masked are not lost:
//! the port is reported again after the unmask if it fired meanwhile. A
//! caller therefore handles a port's work first and unmasks it afterwards (or
//! unmasks first and then re-checks the ring — both are race-free).
//!
//! # What callers must guarantee
//!
//! Nothing beyond Rust's rules, except for two `unsafe` items: the
//! constructor `LinuxEventChannel::from_inherited_fd`, whose fd number must
//! not be owned by anything else in the process (it is taken over and closed
//! on drop), and the [`hypercall::Hypervisor`] trait, whose implementor
//! promises real hypercalls and a live shared_info page.
//!
//! # Live update
//!
//! Open the handle with `LinuxEventChannel::open_inheritable` (or clear
//! close-on-exec later with `LinuxEventChannel::set_cloexec`), pass its fd
//! number (`AsRawFd::as_raw_fd`) to the new binary, and adopt it
//! there with `LinuxEventChannel::from_inherited_fd`. The kernel keeps every
//! port bound to the open file, so nothing has to be re-bound; the new process
//! learns *which* ports are bound from the migration stream.

// Tests always have std (the harness needs it); the library has it only
// with the feature.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;
#[cfg(feature = "std")]
use std::io;
#[cfg(feature = "std")]
use std::os::fd::{AsRawFd, RawFd};
#[cfg(feature = "std")]
use std::path::PathBuf;

#[cfg(feature = "std")]
pub mod fd;
pub mod hypercall;
#[cfg(feature = "std")]
mod linux;
pub mod sys;

#[cfg(test)]
mod cprobe;
#[cfg(test)]
mod testskip;

#[cfg(feature = "std")]
pub use linux::{LinuxEventChannel, EVTCHN_DEVICE};

/// A domain id (`domid_t`).
pub type DomId = xen_sys::domid_t;

/// A virtual IRQ number (`VIRQ_*` of Xen's `xen.h`).
pub type Virq = u32;

/// `VIRQ_DOM_EXC`: a domain is being destroyed or has shut down (dom0 only).
pub const VIRQ_DOM_EXC: Virq = xen_sys::VIRQ_DOM_EXC;

/// A local event-channel port (`evtchn_port_t`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(xen_sys::evtchn_port_t);

impl Port {
    /// Wraps a raw port number.
    pub const fn new(raw: xen_sys::evtchn_port_t) -> Self {
        Self(raw)
    }

    /// The raw port number.
    pub const fn get(self) -> xen_sys::evtchn_port_t {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Port({})", self.0)
    }
}

impl From<xen_sys::evtchn_port_t> for Port {
    fn from(raw: xen_sys::evtchn_port_t) -> Self {
        Self(raw)
    }
}

impl From<Port> for xen_sys::evtchn_port_t {
    fn from(port: Port) -> Self {
        port.0
    }
}

/// Everything that can go wrong with an event channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[cfg(feature = "std")]
    /// The device could not be opened (absent without Xen, or no permission).
    #[error("cannot open the event-channel device {path}")]
    DeviceOpen {
        /// The device path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// An fd offered for adoption is not the event-channel device.
    #[error("file descriptor {fd} is not the event-channel device {device}")]
    NotEventChannelDevice {
        /// The fd number.
        fd: RawFd,
        /// The device it was compared with.
        device: PathBuf,
    },
    #[cfg(feature = "std")]
    /// An fd offered for adoption could not be examined.
    #[error("cannot examine file descriptor {fd}")]
    Fstat {
        /// The fd number.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// A request to the device failed (`op` names it: "bind_virq", "notify", ...).
    #[error("event-channel {op} failed")]
    Ioctl {
        /// The request.
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The device returned a port number that does not fit a port.
    #[error("event-channel {op} returned the invalid port number {raw}")]
    InvalidPort {
        /// The request.
        op: &'static str,
        /// The raw return value.
        raw: i64,
    },
    #[cfg(feature = "std")]
    /// Reading pending ports failed.
    #[error("cannot read pending ports")]
    Read {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The device returned a byte count that is not a whole number of ports.
    #[error("the device returned {completed} bytes, not a whole number of 4-byte ports")]
    ShortRead {
        /// Bytes returned.
        completed: usize,
    },
    /// The kernel's pending-port ring overflowed and notifications were lost.
    ///
    /// The backend has already reset the ring; the caller must treat every
    /// port it has bound as possibly pending (check its work, then unmask it).
    #[error("the pending-port ring overflowed; every bound port may be pending")]
    RingOverflow,
    #[cfg(feature = "std")]
    /// Unmasking (writing ports back) failed.
    #[error("cannot unmask ports")]
    Write {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The device accepted only part of an unmask request.
    #[error("unmask wrote {completed} of {expected} bytes")]
    ShortWrite {
        /// Bytes offered.
        expected: usize,
        /// Bytes taken.
        completed: usize,
    },
    #[cfg(feature = "std")]
    /// Waiting for the device to become readable failed.
    #[error("cannot wait for event-channel notifications")]
    Poll {
        /// Why.
        #[source]
        source: io::Error,
    },
    #[cfg(feature = "std")]
    /// Changing close-on-exec failed.
    #[error("cannot change close-on-exec of file descriptor {fd}")]
    Cloexec {
        /// The fd number.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Xen refused a hypercall (the hypercall backend; `op` names it:
    /// "EVTCHNOP_bind_interdomain", ...).
    #[error("{op} failed: {errno}")]
    Xen {
        /// The operation.
        op: &'static str,
        /// Xen's error code.
        errno: hypercall::XenErrno,
    },
    /// A port given to the hypercall backend is not bound through it (or is
    /// beyond the 2-level ABI's ports).
    #[error("event-channel {op} of port {port}, which this handle has not bound")]
    NotBound {
        /// The request ("unbind", "notify").
        op: &'static str,
        /// The port.
        port: Port,
    },
}

/// What [`EventChannel`] requires of its implementors besides its methods:
/// with the `std` feature, [`AsRawFd`] (the descriptor a daemon polls);
/// without it, nothing (a kernel of its own has no descriptors).
/// Implemented for every type that qualifies; nothing to implement by hand.
#[cfg(feature = "std")]
pub trait Pollable: AsRawFd {}
#[cfg(feature = "std")]
impl<T: AsRawFd + ?Sized> Pollable for T {}

/// What [`EventChannel`] requires of its implementors besides its methods:
/// with the `std` feature, `AsRawFd` (the descriptor a daemon polls);
/// without it, nothing (a kernel of its own has no descriptors).
/// Implemented for every type; nothing to implement by hand.
#[cfg(not(feature = "std"))]
pub trait Pollable {}
#[cfg(not(feature = "std"))]
impl<T: ?Sized> Pollable for T {}

/// Event channels as the daemon uses them. See the crate docs for the
/// masking semantics every implementation follows.
///
/// Object-safe and `Send`. With `std`, the fd from `AsRawFd` (see
/// [`Pollable`]) becomes readable when [`EventChannel::read_pending`] has
/// something to report, so the daemon can put it into its own `poll()` set.
pub trait EventChannel: Pollable + Send {
    /// Binds a new local port to `remote_port` of domain `remote`
    /// (which must have allocated it as unbound for us).
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Error>;

    /// Binds a new local port to the virtual IRQ `virq` (e.g. [`VIRQ_DOM_EXC`]).
    fn bind_virq(&mut self, virq: Virq) -> Result<Port, Error>;

    /// Allocates a new local port that domain `remote` can bind to.
    fn bind_unbound(&mut self, remote: DomId) -> Result<Port, Error>;

    /// Unbinds a port bound through this handle.
    fn unbind(&mut self, port: Port) -> Result<(), Error>;

    /// Sends an event to the other end of `port`.
    fn notify(&mut self, port: Port) -> Result<(), Error>;

    /// Appends the ports that fired since the last call to `out`, without
    /// blocking; appends nothing if none did. Each reported port is masked
    /// until [`EventChannel::unmask`]ed.
    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), Error>;

    /// Waits until a port fires or `timeout` passes (`None`: forever), then
    /// does [`EventChannel::read_pending`]. Appends nothing on timeout or when
    /// interrupted by a signal.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Port>) -> Result<(), Error>;

    /// Unmasks `ports` (reported earlier by `read_pending`) so they can be
    /// reported again.
    fn unmask(&mut self, ports: &[Port]) -> Result<(), Error>;

    /// Asks for the descriptor from `AsRawFd` to be polled edge-triggered
    /// (`EPOLLET`) from now on. `true`: the backend agrees, each event is
    /// then one edge, and [`EventChannel::read_pending`] no longer empties
    /// the descriptor (a system call saved per wake-up). `false` (the
    /// default, and `/dev/xen/evtchn`, which is read to learn what fired):
    /// poll it level-triggered, as before.
    #[cfg(feature = "std")]
    fn poll_edge_triggered(&mut self) -> bool {
        false
    }

    /// The descriptor that *is* the handle: the one a live update passes to
    /// the new program (with close-on-exec cleared) so that every port bound
    /// through it stays bound. For `/dev/xen/evtchn` it is the fd from
    /// `AsRawFd`; a backend whose pollable fd differs overrides this.
    #[cfg(feature = "std")]
    fn handle_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_port_display_is_bare_number() {
        assert_eq!(Port::new(42).to_string(), "42");
        assert_eq!(format!("{:?}", Port::new(42)), "Port(42)");
    }

    #[test]
    fn test_port_raw_value_round_trips() {
        let raw: xen_sys::evtchn_port_t = Port::new(70_000).into();
        assert_eq!(raw, 70_000);
        assert_eq!(Port::from(raw), Port::new(70_000));
    }

    #[test]
    fn test_virq_dom_exc_value_is_three() {
        assert_eq!(VIRQ_DOM_EXC, 3);
    }

    #[test]
    fn test_event_channel_trait_object_is_send() {
        fn assert_send<T: Send + ?Sized>() {}
        assert_send::<Box<dyn EventChannel>>();
    }

    #[cfg(feature = "std")]
    #[test]
    fn test_error_device_open_message_names_device() {
        let e = Error::DeviceOpen {
            path: "/dev/xen/evtchn".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            e.to_string(),
            "cannot open the event-channel device /dev/xen/evtchn"
        );
    }
}
