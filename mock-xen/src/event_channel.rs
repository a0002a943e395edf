//! [`evtchn::EventChannel`] on the simulated hypervisor, with the semantics
//! of Linux's `/dev/xen/evtchn`: a port reported by `read_pending` stays
//! masked until it is unmasked; the descriptor to poll becomes readable when
//! something is pending.
//!
//! The descriptor is an eventfd that every raise of one of our ports writes
//! to. Polled level-triggered, it has to be emptied at each wake-up (a
//! `read` per event); polled edge-triggered
//! ([`EventChannel::poll_edge_triggered`], and [`EventChannel::wait`]'s own
//! epoll), each write is one edge and it is never read: one system call per
//! event fewer on either side of a ring. (Its counter would fill after 2^64
//! kicks.)

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use evtchn::{DomId, EventChannel, Port, Virq};
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::conn::{Conn, Connector};
use crate::error::Error;
use crate::hv::{event_index, kick, raise, EV_GEN_MASK, EV_MASKED, EV_PENDING};
use crate::proto::{Request, Response};

#[derive(Debug)]
struct Route {
    slot: u32,
    port: u32,
    gen: u32,
    wake: Option<OwnedFd>,
}

/// An event-channel handle on mock-xen (one connection, like one open of
/// `/dev/xen/evtchn`).
#[derive(Debug)]
pub struct MockEventChannel {
    conn: Conn,
    eventfd: OwnedFd,
    slot: u32,
    ports: PortSet,
    routes: BTreeMap<u32, Route>,
    /// The caller polls `eventfd` edge-triggered: `read_pending` leaves
    /// it alone.
    edge: bool,
    /// [`EventChannel::wait`]'s epoll set, `eventfd` in it edge-triggered
    /// (made at the first wait).
    waiter: Option<Epoll>,
    /// A timer firing every [`WAIT_TICK`], armed once, in `waiter`'s set
    /// (made at the first long wait): a wait with more than two ticks to
    /// go blocks without a timeout of its own and looks at the clock at
    /// each tick, so the kernel does not arm and cancel a timer on every
    /// wait (0.4 us of each round trip on a KVM guest). The last two
    /// ticks' worth are waited with the exact timeout: a deadline is kept
    /// to the same precision as without it.
    tick: Option<TimerFd>,
}

/// The ports bound through a handle, kept sorted in a vector: every
/// wake-up walks them all ([`MockEventChannel::collect`]) and every
/// notification looks one up, which a vector does with less work than a
/// tree; binding and unbinding, rare, shift the rest.
#[derive(Debug, Default)]
struct PortSet(Vec<u32>);

impl FromIterator<u32> for PortSet {
    fn from_iter<I: IntoIterator<Item = u32>>(ports: I) -> Self {
        let mut v: Vec<u32> = ports.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self(v)
    }
}

impl PortSet {
    fn insert(&mut self, port: u32) {
        if let Err(i) = self.0.binary_search(&port) {
            self.0.insert(i, port);
        }
    }

    fn remove(&mut self, port: u32) {
        if let Ok(i) = self.0.binary_search(&port) {
            self.0.remove(i);
        }
    }

    fn contains(&self, port: u32) -> bool {
        self.0.binary_search(&port).is_ok()
    }

    fn iter(&self) -> core::slice::Iter<'_, u32> {
        self.0.iter()
    }
}

/// [`MockEventChannel::tick`]'s period.
const WAIT_TICK: Duration = Duration::from_millis(100);

/// `waiter`'s token of the eventfd, and of the tick.
const WAKE_EVENTFD: u64 = 0;
const WAKE_TICK: u64 = 1;

fn op_error(op: &'static str, e: Error) -> evtchn::Error {
    evtchn::Error::Ioctl {
        op,
        source: io::Error::other(e),
    }
}

impl MockEventChannel {
    /// Opens a handle acting for `domid`.
    pub fn open(connector: &Connector, domid: DomId) -> Result<Self, Error> {
        Self::from_conn(connector.connect(domid)?)
    }

    /// Makes `conn` an event-channel handle.
    pub fn from_conn(conn: Conn) -> Result<Self, Error> {
        let (response, fds) = conn.call(&Request::OpenEvtchn)?;
        let Response::Evtchn { slot } = response else {
            return Err(Error::Protocol("unexpected answer to open_evtchn"));
        };
        let eventfd = fds
            .into_iter()
            .next()
            .ok_or(Error::Protocol("open_evtchn without its eventfd"))?;
        Ok(Self {
            conn,
            eventfd,
            slot,
            ports: PortSet::default(),
            routes: BTreeMap::new(),
            edge: false,
            waiter: None,
            tick: None,
        })
    }

    /// Re-adopts a handle inherited across `exec()`: every port bound
    /// through it before the exec is still bound.
    ///
    /// # Safety
    ///
    /// As [`Conn::adopt`]: `fd` is an open mock-xen connection this process
    /// owns, made inheritable by [`MockEventChannel::into_inheritable_fd`].
    pub unsafe fn adopt(fd: RawFd, domid: DomId) -> Result<Self, Error> {
        // SAFETY: forwarded from our caller's contract.
        let conn = unsafe { Conn::adopt(fd, domid)? };
        let (response, fds) = conn.call(&Request::Readopt)?;
        let Response::Readopt { slot, ports } = response else {
            return Err(Error::Protocol("unexpected answer to readopt"));
        };
        let eventfd = fds
            .into_iter()
            .next()
            .ok_or(Error::Protocol("readopt without its eventfd"))?;
        let handle = Self {
            conn,
            eventfd,
            slot,
            ports: ports.into_iter().collect(),
            routes: BTreeMap::new(),
            edge: false,
            waiter: None,
            tick: None,
        };
        // Events raised while nobody was polling stay pending; make sure the
        // new program's first poll sees them.
        kick(&handle.eventfd);
        Ok(handle)
    }

    /// Keeps the handle open across `exec()`; returns the descriptor number
    /// to pass to the new program.
    pub fn into_inheritable_fd(self) -> Result<RawFd, Error> {
        self.conn.into_inheritable_fd()
    }

    /// Attaches an unowned port of our domain (the guest kernel's store
    /// port, allocated by the toolstack) to this handle.
    pub fn claim(&mut self, port: Port) -> Result<(), Error> {
        self.conn.call_ok(&Request::Claim { port: port.get() })?;
        self.ports.insert(port.get());
        Ok(())
    }

    /// The connection.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Ports bound through this handle.
    pub fn bound_ports(&self) -> impl Iterator<Item = Port> + '_ {
        self.ports.iter().map(|&p| Port::new(p))
    }

    /// Where `port`'s notifications go (its peer's event word and the
    /// eventfd that wakes the peer), asked of the hypervisor when not
    /// known or stale (the peer's word is of another generation).
    fn route<'r>(
        conn: &Conn,
        routes: &'r mut BTreeMap<u32, Route>,
        port: u32,
    ) -> Result<Option<&'r Route>, Error> {
        let stale = match routes.get(&port) {
            None => true,
            Some(r) => {
                let word = conn.events().word(event_index(r.slot, r.port));
                word.is_none_or(|w| w.load(Ordering::SeqCst) & EV_GEN_MASK != r.gen)
            }
        };
        if stale {
            routes.remove(&port);
            let (response, fds) = conn.call(&Request::PeerOf { port })?;
            match response {
                Response::Peer {
                    slot,
                    port: rport,
                    gen,
                    has_fd,
                } => {
                    let wake = match (has_fd, fds.into_iter().next()) {
                        (true, Some(fd)) => Some(fd),
                        _ => None,
                    };
                    routes.insert(
                        port,
                        Route {
                            slot,
                            port: rport,
                            gen,
                            wake,
                        },
                    );
                }
                Response::NoPeer => return Ok(None),
                _ => return Err(Error::Protocol("unexpected answer to peer_of")),
            }
        }
        Ok(routes.get(&port))
    }

    /// The epoll set [`EventChannel::wait`] sleeps in: `eventfd`,
    /// edge-triggered (a kick before it was made is reported at once).
    fn waiter(&mut self) -> io::Result<&Epoll> {
        if self.waiter.is_none() {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            epoll.add(
                &self.eventfd,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, WAKE_EVENTFD),
            )?;
            self.waiter = Some(epoll);
        }
        self.waiter
            .as_ref()
            .ok_or_else(|| io::Error::other("no epoll set"))
    }

    /// Whether the tick runs, starting it if need be (false if the
    /// system refuses a timer: waits then carry their own timeouts).
    fn ticking(&mut self) -> bool {
        if self.tick.is_none() {
            let period = TimeSpec::from_duration(WAIT_TICK);
            self.tick = self.start_tick(Expiration::Interval(period)).ok();
        }
        self.tick.is_some()
    }

    /// A non-blocking, close-on-exec timer expiring as `expiration` says,
    /// in `waiter`'s set under [`WAKE_TICK`].
    fn start_tick(&mut self, expiration: Expiration) -> io::Result<TimerFd> {
        let epoll = self.waiter()?;
        let tick = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        tick.set(expiration, TimerSetTimeFlags::empty())?;
        epoll.add(&tick, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TICK))?;
        Ok(tick)
    }

    fn drain_eventfd(&self) {
        let mut buf = [0u8; 8];
        // Nonblocking: EAGAIN means nothing to drain.
        let _ = nix::unistd::read(&self.eventfd, &mut buf);
    }

    fn collect(&self, out: &mut Vec<Port>) {
        let events = self.conn.events();
        for &port in self.ports.iter() {
            let Some(word) = events.word(event_index(self.slot, port)) else {
                continue;
            };
            let mut old = word.load(Ordering::SeqCst);
            while old & EV_PENDING != 0 && old & EV_MASKED == 0 {
                match word.compare_exchange(
                    old,
                    (old & !EV_PENDING) | EV_MASKED,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => {
                        out.push(Port::new(port));
                        break;
                    }
                    Err(now) => old = now,
                }
            }
        }
    }

    /// [`EventChannel::wait`] for a caller that waits more than once for
    /// one thing: the `timeout` counts from this wait's clock reading
    /// (made only if it blocks) unless an earlier one set `deadline`
    /// already; their waits together end by the one deadline.
    pub fn wait_by(
        &mut self,
        deadline: &mut Option<Instant>,
        timeout: Duration,
        out: &mut Vec<Port>,
    ) -> Result<(), evtchn::Error> {
        self.wait_inner(Some(timeout), deadline, out)
    }

    /// The wait, by `deadline` if it is set, else `timeout` from the
    /// first clock reading (which sets it).
    fn wait_inner(
        &mut self,
        timeout: Option<Duration>,
        deadline: &mut Option<Instant>,
        out: &mut Vec<Port>,
    ) -> Result<(), evtchn::Error> {
        // The clock is read only when there is something to wait for.
        let before = out.len();
        loop {
            // Anything already pending is reported without a system call.
            self.collect(out);
            if out.len() > before {
                return Ok(());
            }
            let poll_timeout = match timeout {
                None => PollTimeout::NONE,
                Some(t) => {
                    let now = Instant::now();
                    let left = deadline
                        .get_or_insert(now + t)
                        .saturating_duration_since(now);
                    if left.is_zero() {
                        return Ok(());
                    }
                    if left > 2 * WAIT_TICK && self.ticking() {
                        PollTimeout::NONE
                    } else {
                        PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                    }
                }
            };
            let poll_error = |e: io::Error| evtchn::Error::Poll { source: e };
            let mut events = [EpollEvent::empty()];
            // Edge-triggered: a kick since the last wait (or before the set
            // was made) wakes it once, stale or not; the loop looks again.
            match self
                .waiter()
                .map_err(poll_error)?
                .wait(&mut events, poll_timeout)
            {
                Ok(n) => {
                    if events[..n].iter().any(|e| e.data() == WAKE_TICK) {
                        if let Some(tick) = &self.tick {
                            // Level-triggered: take the expiries, so that
                            // it stops being readable (non-blocking).
                            let mut count = [0u8; 8];
                            let _ = nix::unistd::read(tick, &mut count);
                        }
                    }
                }
                // A signal: report nothing, as the device's poll would.
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(poll_error(io::Error::from(e))),
            }
        }
    }
}

impl AsRawFd for MockEventChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}

impl EventChannel for MockEventChannel {
    /// The mock-xen connection (the pollable fd is a separate eventfd).
    fn handle_fd(&self) -> RawFd {
        self.conn.raw_fd().unwrap_or(-1)
    }

    fn bind_interdomain(
        &mut self,
        remote: DomId,
        remote_port: Port,
    ) -> Result<Port, evtchn::Error> {
        let port = self
            .conn
            .call_port(&Request::BindInterdomain {
                remote,
                remote_port: remote_port.get(),
            })
            .map_err(|e| op_error("bind_interdomain", e))?;
        self.ports.insert(port);
        Ok(Port::new(port))
    }

    fn bind_virq(&mut self, virq: Virq) -> Result<Port, evtchn::Error> {
        let port = self
            .conn
            .call_port(&Request::BindVirq { virq })
            .map_err(|e| op_error("bind_virq", e))?;
        self.ports.insert(port);
        Ok(Port::new(port))
    }

    fn bind_unbound(&mut self, remote: DomId) -> Result<Port, evtchn::Error> {
        let port = self
            .conn
            .call_port(&Request::BindUnbound { remote })
            .map_err(|e| op_error("bind_unbound_port", e))?;
        self.ports.insert(port);
        Ok(Port::new(port))
    }

    fn unbind(&mut self, port: Port) -> Result<(), evtchn::Error> {
        self.conn
            .call_ok(&Request::Unbind { port: port.get() })
            .map_err(|e| op_error("unbind", e))?;
        self.ports.remove(port.get());
        self.routes.remove(&port.get());
        Ok(())
    }

    fn notify(&mut self, port: Port) -> Result<(), evtchn::Error> {
        if !self.ports.contains(port.get()) {
            return Err(evtchn::Error::Ioctl {
                op: "notify",
                source: io::Error::from_raw_os_error(nix::libc::EINVAL),
            });
        }
        // The route and the event words are borrowed apart (no reference
        // count taken per notification).
        let Some(route) = Self::route(&self.conn, &mut self.routes, port.get())
            .map_err(|e| op_error("notify", e))?
        else {
            return Ok(());
        };
        if let Some(word) = self.conn.events().word(event_index(route.slot, route.port)) {
            if raise(word) {
                if let Some(fd) = &route.wake {
                    kick(fd.as_fd());
                }
            }
        }
        Ok(())
    }

    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), evtchn::Error> {
        if !self.edge {
            self.drain_eventfd();
        }
        self.collect(out);
        Ok(())
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Port>,
    ) -> Result<(), evtchn::Error> {
        self.wait_inner(timeout, &mut None, out)
    }

    /// Yes: each raise writes the eventfd, one edge each.
    fn poll_edge_triggered(&mut self) -> bool {
        self.edge = true;
        true
    }

    fn unmask(&mut self, ports: &[Port]) -> Result<(), evtchn::Error> {
        let events = self.conn.events();
        let mut rewake = false;
        for port in ports {
            if !self.ports.contains(port.get()) {
                continue;
            }
            if let Some(word) = events.word(event_index(self.slot, port.get())) {
                let old = word.fetch_and(!EV_MASKED, Ordering::SeqCst);
                rewake |= old & EV_PENDING != 0;
            }
        }
        if rewake {
            kick(&self.eventfd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use nix::poll::{poll, PollFd, PollFlags};

    fn channel() -> MockEventChannel {
        let connector = Connector::new_local().expect("a local mock-xen");
        MockEventChannel::open(&connector, 0).expect("a channel")
    }

    fn readable(tick: &TimerFd) -> bool {
        let mut fds = [PollFd::new(tick.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).expect("poll") == 1
    }

    /// A long wait starts the tick: non-blocking and close-on-exec.
    #[test]
    fn a_long_wait_starts_a_non_blocking_close_on_exec_tick() {
        let mut ch = channel();
        let mut fired = Vec::new();
        ch.wait(Some(3 * WAIT_TICK), &mut fired).expect("wait");
        let tick = ch.tick.as_ref().expect("the tick was started");
        let fd = fcntl(tick, FcntlArg::F_GETFD).expect("F_GETFD");
        assert!(FdFlag::from_bits_truncate(fd).contains(FdFlag::FD_CLOEXEC));
        let fl = fcntl(tick, FcntlArg::F_GETFL).expect("F_GETFL");
        assert!(OFlag::from_bits_truncate(fl).contains(OFlag::O_NONBLOCK));
    }

    /// A wait takes the tick's expiries when it fires (else, level-
    /// triggered, it would wake every later wait at once). The tick here
    /// fires once, so what is left readable after the wait is exact; the
    /// wait is short enough to carry its own timeout (a long one counts on
    /// the tick firing again).
    #[test]
    fn a_wait_takes_the_ticks_expiries() {
        let mut ch = channel();
        let once = TimeSpec::from_duration(Duration::from_millis(1));
        ch.tick = Some(ch.start_tick(Expiration::OneShot(once)).expect("a tick"));
        let start = Instant::now();
        while !ch.tick.as_ref().is_some_and(readable) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the tick never fired"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut fired = Vec::new();
        ch.wait(Some(WAIT_TICK + WAIT_TICK / 2), &mut fired)
            .expect("wait");
        assert!(fired.is_empty());
        assert!(
            !ch.tick.as_ref().is_some_and(readable),
            "the expiry was left unread"
        );
    }
}
