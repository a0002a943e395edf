//! The I/O shell: a single-threaded `poll` loop around the engine.
//!
//! It owns the transports — Unix-socket clients and guest rings — and
//! frames bytes into complete requests for the engine, writes the engine's
//! replies and watch events back with partial writes kept per connection,
//! carries out the engine's actions (map and bind a ring on INTRODUCE,
//! release it, cut a connection off), and turns `VIRQ_DOM_EXC` into domain
//! states. The clock enters in one place (`Daemon::now_ms`). One slow or
//! stuck client never delays another: nothing here blocks on a client.
//!
//! Its rooms: this file is the loop; `transport.rs` what differs between a
//! socket and a ring; `live_update/` the XS_CONTROL live update (session,
//! hand-over, restore); `access_log.rs` and `systemd.rs` the access log and
//! the readiness notification; [`state`] the deterministic half; [`platform`]
//! the backends. `unsafe` is denied in the shell but for [`os`], the one
//! module that talks to the operating system where Rust cannot check it,
//! and `split`, which splits the process in two for a pre-copy live
//! update.

#![deny(unsafe_code)]

mod access_log;
mod connset;
mod crash;
#[cfg(test)]
mod crash_tests;
pub mod journal;
mod live_update;
#[allow(unsafe_code)]
pub mod os;
pub mod platform;
#[allow(unsafe_code)]
mod split;
pub mod state;
mod systemd;
#[cfg(test)]
mod test_world;
mod transport;

pub use crash::{RecoveryError, RecoverySummary, Replayed};
pub use live_update::guardian as live_update_guardian;
pub use live_update::precopy::{
    Frozen as PrecopyFrozen, Incoming as PrecopyIncoming, PrecopyError, PRECOPY_ARG,
};
pub use live_update::target as live_update_target;
pub use live_update::{check_stream, RestoreFailure, RestoreSummary, StateWriteError, STATE_FILE};
pub use systemd::notify_ready as notify_systemd_ready;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use evtchn::{Port, VIRQ_DOM_EXC};
use gnttab::{ForeignPage, GNTTAB_RESERVED_XENSTORE};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use xenring::{DomId, RingErrorCode, XsErrno};

use crate::engine::{Action, ConnId, Engine};
use crate::replay::format::{BoundaryEvent, ConnectKind, Recorder};
use access_log::AccessLog;
use connset::ConnSet;
use platform::Platform;
use state::ShellState;
use transport::{Received, Ring, Transport, TransportError};

/// What the daemon needs to start.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The Unix socket to listen on.
    pub socket: PathBuf,
    /// Write one line per request here (the access log), if set.
    pub access_log: Option<PathBuf>,
    /// The run directory (a live update's state file goes there).
    pub rundir: PathBuf,
    /// The arguments we were started with (after the program name): a
    /// live update gives them to the new binary unless told otherwise.
    pub exec_args: Vec<OsString>,
    /// Record everything that crosses the platform boundary into this
    /// directory (`--replay-record=DIR`).
    pub record_dir: Option<PathBuf>,
    /// Keep a crash journal in the run directory (`--journal`), and start
    /// it anew with a snapshot once it is this many octets long.
    pub journal: Option<u64>,
}

/// Why the daemon could not be set up. Each says only its cause (the
/// caller names what it was starting).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The listening socket cannot be bound.
    #[error("{0}")]
    Listen(#[source] io::Error),
    /// The recording's directory cannot be made.
    #[error("{0}")]
    RecordDir(#[source] io::Error),
    /// The recording cannot be opened.
    #[error("cannot record to {}: {source}", path.display())]
    Record {
        /// The recording.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The access log cannot be opened.
    #[error("{0}")]
    AccessLog(#[source] io::Error),
    /// The epoll set cannot be made or filled.
    #[error("{0}")]
    Epoll(#[source] io::Error),
    /// The crash journal cannot be created.
    #[error("cannot keep a crash journal in {}: {source}", path.display())]
    Journal {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The recording's file name in its directory.
pub const RECORDING_FILE: &str = "xenstored-lite.rec";

/// A connection's transport; its framing and buffers are the core's.
struct Conn {
    transport: Transport,
    /// A socket's reads stopped before it was empty (the engine took no
    /// more requests): its registration is edge-triggered, so no event
    /// comes for what is already there, and [`Daemon::update_interest`]
    /// re-arms it once the engine takes requests again.
    undrained: bool,
    /// A socket's registration with the daemon's epoll (`None` until
    /// registered).
    interest: Option<EpollFlags>,
}

impl Conn {
    fn new(transport: Transport) -> Self {
        Self {
            transport,
            undrained: false,
            interest: None,
        }
    }

    fn domid(&self) -> Option<DomId> {
        self.transport.domid()
    }
}

/// Why a connection is cut off (rings) or closed (sockets).
#[derive(Debug)]
enum Failure<'a> {
    /// Its bytes do not frame into requests.
    Protocol(xenring::Error),
    /// Its transport failed.
    Transport(TransportError),
    /// The engine cut it off, for this reason.
    Killed(&'a str),
}

impl Failure<'_> {
    /// The code a ring's error word gets.
    fn code(&self) -> RingErrorCode {
        match self {
            Self::Protocol(_) => RingErrorCode::Proto,
            Self::Transport(_) => RingErrorCode::RingIdx,
            Self::Killed(_) => RingErrorCode::Comm,
        }
    }
}

impl std::fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Protocol(e) => e.fmt(f),
            Self::Transport(e) => e.fmt(f),
            Self::Killed(why) => f.write_str(why),
        }
    }
}

/// The running daemon.
pub struct Daemon {
    core: ShellState,
    platform: Platform,
    listener: UnixListener,
    socket_path: PathBuf,
    conns: BTreeMap<ConnId, Conn>,
    ports: BTreeMap<Port, ConnId>,
    virq: Option<Port>,
    next_conn: ConnId,
    start: Instant,
    last_time: u64,
    access_log: Option<AccessLog>,
    stop: Arc<AtomicBool>,
    dirty: ConnSet,
    epoll: Epoll,
    rundir: PathBuf,
    exec_args: Vec<OsString>,
    live_update: Option<live_update::Session>,
    /// When the recording was last written out.
    last_flush: Instant,
    /// The hypervisor's unique id of the domains the engine knows (or
    /// knew, while they live), as it was at INTRODUCE, else when a listing
    /// first showed them: alive under another one, a domain is dead and
    /// its domid reused.
    unique_ids: BTreeMap<DomId, u64>,
    /// Domains the engine knows that have been seen to exist (introduced
    /// here, restored with a ring, or listed alive by the hypervisor):
    /// only these are dead when a listing lacks them. A domid that merely
    /// owns nodes and was never seen (a toolstack's SET_PERMS naming a
    /// domain not created yet, or one of a test population) keeps them.
    seen_alive: BTreeSet<DomId>,
    /// A descriptor spent to refuse a client at the descriptor limit.
    reserve: os::ReserveFd,
    /// Accept is failing (an episode logged once).
    accept_refusing: bool,
    /// Clients accepted and closed at once in this episode.
    accept_refused_total: u64,
    /// The listener is out of epoll until then.
    accept_paused: Option<Instant>,
    /// Rings read since their reads were last released to the guest (the
    /// journal holds what was read first: [`Daemon::sync_point`]).
    unreleased: ConnSet,
    /// The clock's value at start (a recovered daemon goes on from the
    /// journal's last time, so that the engine's time never goes back).
    clock_base: u64,
    /// Start the journal anew with a snapshot past this many octets.
    journal_limit: u64,
    /// A snapshot being made (`crash.rs`).
    snapshot_job: Option<crash::SnapshotJob>,
    /// The buffer transports are read into ([`READ_BUF`] octets).
    read_buf: Vec<u8>,
    /// What `epoll_wait` fills in ([`EPOLL_EVENTS`] entries).
    events: Vec<EpollEvent>,
    /// A timer that fires every [`TICK_MS`], armed once, in the epoll set:
    /// a wait that may last that long needs no timeout of its own, so the
    /// kernel does not arm and cancel a timer on every wait (0.4 us of
    /// each request on a KVM guest). `None` if it could not be made: then
    /// every wait carries its timeout.
    tick: Option<TimerFd>,
    /// The loop's scratch vectors, kept across turns so that a turn
    /// allocates nothing of its own ([`Scratch`]).
    scratch: Scratch,
    /// A pre-copy's continuation handed its state over: it ends.
    handed_over: bool,
    /// The old daemon's continuation after a pre-copy, until reaped.
    continuation: Option<live_update::precopy::Continuation>,
}

/// How long the listener stays out of epoll when accept fails and the
/// reserve descriptor did not help.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// How long recorded events may wait in memory once the daemon is idle.
const RECORDING_FLUSH: std::time::Duration = std::time::Duration::from_millis(10);

/// The mode of a recording directory the daemon creates: the recording
/// holds the whole store.
const RECORD_DIR_MODE: u32 = 0o700;

/// How much one read of a transport takes at most.
const READ_BUF: usize = 8192;

/// How many ready descriptors one `epoll_wait` reports at most.
const EPOLL_EVENTS: usize = 256;

/// Vectors the loop fills and empties every turn, kept so that their
/// buffers are allocated once. Each is taken out of the daemon while it is
/// in use (a nested use would find an empty one and allocate, nothing
/// worse).
#[derive(Debug, Default)]
struct Scratch {
    /// The sockets `epoll_wait` reported ready.
    ready: Vec<ConnId>,
    /// The event-channel ports that fired.
    fired: Vec<Port>,
    /// The connections a settle turn looks at.
    dirty: Vec<ConnId>,
    /// Those and the connections with output queued.
    touched: Vec<ConnId>,
    /// The rings whose reads a sync point releases.
    unreleased: Vec<ConnId>,
}

const TOKEN_LISTENER: u64 = 0;
const TOKEN_EVTCHN: u64 = 1;
const TOKEN_BASE: u64 = 2;
/// The tick's token: above every `TOKEN_BASE + ConnId`.
const TOKEN_TICK: u64 = u64::MAX;

/// The period of the loop's tick ([`Daemon::tick`]), in milliseconds.
const TICK_MS: u16 = 1000;

/// How long a turn's wait may block: not at all while connections wait
/// to be served (`busy`); at most 10 ms while a dry run is under way or
/// recorded events wait to be written out (`soon`); else no longer than
/// the caller's limit and a throttled domain's `wakeup` (both in ms). A
/// limit of a tick or more needs no timeout of its own when the loop's
/// tick runs (`ticking`): the tick ends the wait within [`TICK_MS`], no
/// later than the limit, and the next turn looks again at what is left.
fn wait_timeout(
    busy: bool,
    soon: bool,
    timeout_ms: Option<u16>,
    wakeup: Option<u16>,
    ticking: bool,
) -> EpollTimeout {
    if busy {
        return EpollTimeout::ZERO;
    }
    if soon {
        return EpollTimeout::from(wakeup.map_or(10u16, |w| w.min(10)));
    }
    let limit = match (timeout_ms, wakeup) {
        (Some(t), Some(w)) => Some(t.min(w)),
        (t, w) => t.or(w),
    };
    match limit {
        Some(l) if l >= TICK_MS && ticking => EpollTimeout::NONE,
        Some(l) => EpollTimeout::from(l),
        None => EpollTimeout::NONE,
    }
}

/// The loop's tick ([`Daemon::tick`]): a non-blocking timer firing every
/// [`TICK_MS`], in `epoll` under [`TOKEN_TICK`]. `None` (logged) if the
/// system refuses one.
fn start_tick(epoll: &Epoll) -> Option<TimerFd> {
    let made = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .and_then(|tick| {
        let period = TimeSpec::from_duration(std::time::Duration::from_millis(TICK_MS.into()));
        tick.set(Expiration::Interval(period), TimerSetTimeFlags::empty())?;
        epoll.add(&tick, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_TICK))?;
        Ok(tick)
    });
    match made {
        Ok(tick) => Some(tick),
        Err(e) => {
            tracing::warn!("no timer for the loop ({e}): every wait sets its own timeout");
            None
        }
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket_path)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Daemon {
    /// Binds the socket, binds `VIRQ_DOM_EXC`, serves dom0's own ring where
    /// the platform has one.
    pub fn new(
        engine: Engine,
        platform: Platform,
        config: &ShellConfig,
    ) -> Result<Self, SetupError> {
        let listener = bind_listener(&config.socket).map_err(SetupError::Listen)?;
        let journal = Self::new_journal(config)?;
        let core = ShellState::new(engine, None);
        let mut daemon = Self::with_core(core, platform, config, listener, false, journal, true)?;
        if daemon.platform.serve_local_ring {
            daemon.serve_local_ring();
        }
        Ok(daemon)
    }

    /// A new crash journal in the run directory, if one is kept.
    fn new_journal(config: &ShellConfig) -> Result<Option<journal::Journal>, SetupError> {
        if config.journal.is_none() {
            return Ok(None);
        }
        let path = journal::path_in(&config.rundir);
        let made = path
            .parent()
            .map_or(Ok(()), |dir| os::create_dirs(dir, RECORD_DIR_MODE))
            .and_then(|()| journal::Journal::create(&path));
        match made {
            Ok(j) => Ok(Some(j)),
            Err(source) => Err(SetupError::Journal { path, source }),
        }
    }

    fn with_core(
        mut core: ShellState,
        mut platform: Platform,
        config: &ShellConfig,
        listener: UnixListener,
        continue_recording: bool,
        journal: Option<journal::Journal>,
        record_start: bool,
    ) -> Result<Self, SetupError> {
        let recorder = match &config.record_dir {
            Some(dir) => {
                os::create_dirs(dir, RECORD_DIR_MODE).map_err(SetupError::RecordDir)?;
                let path = dir.join(RECORDING_FILE);
                let rec = match Recorder::open(&path, continue_recording) {
                    Ok(rec) => rec,
                    Err(source) => return Err(SetupError::Record { path, source }),
                };
                tracing::info!("recording everything received to {}", path.display());
                Some(rec)
            }
            None => None,
        };
        core.set_recorder(recorder);
        core.set_journal(journal);
        if record_start {
            core.record(&start_event(config));
        }
        let virq = match platform.evtchn.bind_virq(VIRQ_DOM_EXC) {
            Ok(port) => Some(port),
            Err(e) => {
                tracing::warn!("cannot bind VIRQ_DOM_EXC ({e}); domain deaths will not be noticed");
                None
            }
        };
        let access_log = match &config.access_log {
            Some(path) => Some(AccessLog::open(path).map_err(SetupError::AccessLog)?),
            None => None,
        };
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| SetupError::Epoll(e.into()))?;
        epoll
            .add(
                &listener,
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
            )
            .map_err(|e| SetupError::Epoll(e.into()))?;
        // Edge-triggered where the backend allows it (mock-xen): no read
        // per wake-up to empty the descriptor.
        let evtchn_flags = if platform.evtchn.poll_edge_triggered() {
            EpollFlags::EPOLLIN | EpollFlags::EPOLLET
        } else {
            EpollFlags::EPOLLIN
        };
        // The event-channel handle owns this descriptor and outlives the
        // registration (both live in the daemon).
        os::epoll_add(
            &epoll,
            platform.evtchn.as_raw_fd(),
            EpollEvent::new(evtchn_flags, TOKEN_EVTCHN),
        )
        .map_err(SetupError::Epoll)?;
        let tick = start_tick(&epoll);
        let daemon = Self {
            core,
            platform,
            listener,
            socket_path: config.socket.clone(),
            conns: BTreeMap::new(),
            ports: BTreeMap::new(),
            virq,
            next_conn: 1,
            start: Instant::now(),
            last_time: 0,
            access_log,
            stop: Arc::new(AtomicBool::new(false)),
            dirty: ConnSet::default(),
            epoll,
            rundir: config.rundir.clone(),
            exec_args: config.exec_args.clone(),
            live_update: None,
            handed_over: false,
            continuation: None,
            last_flush: Instant::now(),
            unique_ids: BTreeMap::new(),
            seen_alive: BTreeSet::new(),
            reserve: os::ReserveFd::open(),
            accept_refusing: false,
            accept_refused_total: 0,
            accept_paused: None,
            unreleased: ConnSet::default(),
            clock_base: 0,
            journal_limit: config.journal.unwrap_or(u64::MAX),
            snapshot_job: None,
            read_buf: vec![0; READ_BUF],
            events: vec![EpollEvent::empty(); EPOLL_EVENTS],
            tick,
            scratch: Scratch::default(),
        };
        Ok(daemon)
    }

    fn serve_local_ring(&mut self) {
        match self.platform.mapper.map_local_xenstore() {
            Ok(local) => match self.platform.evtchn.bind_interdomain(0, local.port) {
                Ok(port) => {
                    let conn = self.add_ring(local.page, port, 0);
                    self.core.apply_infallible(BoundaryEvent::Connect {
                        conn,
                        kind: ConnectKind::Ring(0),
                    });
                    self.journal_ring(conn);
                    tracing::info!("serving dom0's own ring (xsd_kva) on port {port}");
                }
                Err(e) => tracing::warn!("cannot bind dom0's xenstore port: {e}"),
            },
            Err(e) => tracing::warn!("dom0's own ring is not served: {e}"),
        }
    }

    /// Logs what this process recorded (at exit and before a live update's
    /// exec), so that a replay's summary can be checked against it.
    pub fn log_recording_totals(&mut self) {
        self.core.sync_recording();
        if let Some((events, bytes)) = self.core.recording_totals() {
            tracing::info!(
                "recording: {events} events, {bytes} bytes, {} requests handled by this process",
                self.core.engine().requests()
            );
        }
    }

    /// A flag that stops [`Daemon::run`] when set (signal handlers, tests).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The engine (read-only; tests and the control commands).
    pub fn engine(&self) -> &Engine {
        self.core.engine()
    }

    /// Milliseconds since start: the only clock the daemon reads.
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.clock_base.saturating_add(elapsed)
    }

    /// Records where `conn`'s ring indices stand (a journal's base for a
    /// ring attached, reset or recovered).
    fn journal_ring(&mut self, conn: ConnId) {
        if self.core.journal().is_none() {
            return;
        }
        let Some((req_cons, rsp_prod)) = self
            .conns
            .get(&conn)
            .and_then(|c| c.transport.journaled_indices())
        else {
            return;
        };
        self.core.record(&BoundaryEvent::RingIndices {
            conn,
            req_cons,
            rsp_prod,
        });
    }

    /// Before anything the recorded events caused is visible: the journal
    /// is written out, then what was read from rings is released to the
    /// guests (a guest whose queue was full is told).
    fn sync_point(&mut self) {
        if let Some(j) = self.core.journal() {
            if j.needs_sync() {
                j.sync();
            }
        }
        let mut unreleased = std::mem::take(&mut self.scratch.unreleased);
        self.unreleased.take_into(&mut unreleased);
        for &conn in &unreleased {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            match c.transport.release_reads() {
                Ok(released) => {
                    if released.was_full {
                        self.notify(conn);
                    }
                    if released.more {
                        self.dirty.insert(conn);
                    }
                }
                Err(e) => self.fail(conn, &Failure::Transport(e)),
            }
        }
        self.scratch.unreleased = unreleased;
    }

    fn add_ring(&mut self, page: Box<dyn ForeignPage>, port: Port, domid: DomId) -> ConnId {
        let conn = self.alloc_conn();
        self.add_ring_as(conn, page, port, domid);
        conn
    }

    /// Serves `page` of `domid` on local `port` as connection `conn`.
    fn add_ring_as(&mut self, conn: ConnId, page: Box<dyn ForeignPage>, port: Port, domid: DomId) {
        self.ports.insert(port, conn);
        self.conns.insert(
            conn,
            Conn::new(Transport::Ring(Ring::new(page, port, domid))),
        );
        self.dirty.insert(conn);
    }

    /// Lets go of a ring's transport that will not be served (its domain
    /// is gone): unmapped, its port unbound.
    fn drop_transport(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.teardown(c.transport);
        }
    }

    /// A transport let go of: its port forgotten, then torn down.
    fn teardown(&mut self, transport: Transport) {
        if let Some(port) = transport.port() {
            self.ports.remove(&port);
        }
        transport.teardown(&self.epoll, &mut *self.platform.evtchn);
    }

    fn alloc_conn(&mut self) -> ConnId {
        while self.conns.contains_key(&self.next_conn) || self.next_conn == 0 {
            self.next_conn = self.next_conn.wrapping_add(1);
        }
        let id = self.next_conn;
        self.next_conn = self.next_conn.wrapping_add(1);
        id
    }

    /// Serves until the stop flag is set.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.stop.load(Ordering::Relaxed) {
            self.turn(Some(1000))?;
        }
        Ok(())
    }

    /// One turn of the loop: wait (at most `timeout_ms`) for something to
    /// do, then do all of it.
    pub fn turn(&mut self, timeout_ms: Option<u16>) -> io::Result<()> {
        let now = self.now_ms();
        if now != self.last_time {
            self.last_time = now;
            self.core.apply_infallible(BoundaryEvent::Time(now));
            // Domains whose throttle lifted take requests again: read
            // their rings (only these; the others' state did not change).
            for conn in self.core.engine().readable_again() {
                if self.conns.contains_key(&conn) {
                    self.dirty.insert(conn);
                }
            }
        }
        if self.dirty.is_empty()
            && self.core.recording_pending()
            && self.last_flush.elapsed() >= RECORDING_FLUSH
        {
            // About to wait: a good moment for the recording to reach disk
            // (at most every RECORDING_FLUSH, so that a ping-pong does not
            // pay a write per request; `wait` wakes up for it).
            self.core.flush_recording();
            self.last_flush = Instant::now();
        }
        let (listener_ready, evtchn_ready) = self.wait(timeout_ms)?;
        self.resume_listener();
        if listener_ready {
            self.accept_all()?;
        }
        if evtchn_ready {
            self.service_events();
        }
        let ready = std::mem::take(&mut self.scratch.ready);
        for &conn in &ready {
            self.service_socket(conn);
        }
        self.scratch.ready = ready;
        self.settle();
        if self.live_update.is_some() {
            // Between requests: the one point where a hand-over may happen.
            self.live_update_poll();
        }
        self.maybe_snapshot();
        if self.continuation.is_some() {
            self.reap_continuation();
        }
        Ok(())
    }

    /// Waits for readiness; the sockets that are ready are left in
    /// `self.scratch.ready`.
    fn wait(&mut self, timeout_ms: Option<u16>) -> io::Result<(bool, bool)> {
        // A throttled domain resumes at its wake-up: wait no longer than
        // that (and do not spin before it).
        let wakeup = self
            .core
            .engine()
            .next_wakeup()
            .map(|at| u16::try_from(at.saturating_sub(self.now_ms())).unwrap_or(u16::MAX));
        let timeout = wait_timeout(
            !self.dirty.is_empty(),
            self.live_update_pending() || self.core.recording_pending(),
            timeout_ms,
            wakeup,
            self.tick.is_some(),
        );
        let n = match self.epoll.wait(&mut self.events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let (mut listener, mut evtchn) = (false, false);
        let socks = &mut self.scratch.ready;
        socks.clear();
        let mut ticked = false;
        for ev in &self.events[..n] {
            match ev.data() {
                TOKEN_LISTENER => listener = true,
                TOKEN_EVTCHN => evtchn = true,
                TOKEN_TICK => ticked = true,
                token => {
                    if let Ok(conn) = ConnId::try_from(token - TOKEN_BASE) {
                        socks.push(conn);
                    }
                }
            }
        }
        if ticked {
            if let Some(tick) = &self.tick {
                // Level-triggered: read the count of expiries so that it
                // stops being readable (non-blocking; once a second).
                let mut count = [0u8; 8];
                let _ = nix::unistd::read(tick, &mut count);
            }
        }
        Ok((listener, evtchn))
    }

    /// Keeps a socket's epoll registration in line with what it needs:
    /// readable while the engine takes its requests, writable while output
    /// waits.
    ///
    /// The registration is edge-triggered: an event comes when bytes
    /// arrive or space frees, not again for bytes still there, which saves
    /// the kernel a poll of the socket on every wait. So reads go on until
    /// the socket is empty (a short read or `EAGAIN`), writes until
    /// `EAGAIN`, and a socket whose reads stopped early (`undrained`) is
    /// re-armed here (a modification polls it again) once the engine takes
    /// its requests.
    fn update_interest(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(fd) = c.transport.poll_fd() else {
            return;
        };
        let mut want = EpollFlags::EPOLLET;
        let (reads, writes) = self.core.socket_needs(conn);
        if reads {
            want |= EpollFlags::EPOLLIN;
        }
        if writes {
            want |= EpollFlags::EPOLLOUT;
        }
        let rearm = c.undrained && want.contains(EpollFlags::EPOLLIN);
        if rearm {
            c.undrained = false;
        }
        if !rearm && c.interest == Some(want) {
            return;
        }
        let mut ev = EpollEvent::new(want, TOKEN_BASE + u64::from(conn));
        let result = if c.interest.is_some() {
            self.epoll.modify(fd, &mut ev)
        } else {
            self.epoll.add(fd, ev)
        };
        match result {
            Ok(()) => c.interest = Some(want),
            Err(e) => tracing::warn!("epoll registration of connection {conn} failed: {e}"),
        }
    }

    /// Accepts every pending client. At the descriptor limit (EMFILE,
    /// ENFILE, ENOBUFS, ENOMEM) a pending client would stay pending and
    /// the listener would fire at once again, without end: instead the
    /// reserve descriptor is let go of for one accept whose client is
    /// closed at once (it sees its connection closed), and if even that
    /// fails the listener leaves epoll for [`ACCEPT_PAUSE`]. One line is
    /// logged when such an episode starts and one, with the count of
    /// clients refused, when a client is accepted again.
    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.accept_refusing {
                        tracing::warn!(
                            "accepting connections again ({} refused at the descriptor limit)",
                            self.accept_refused_total
                        );
                    }
                    self.accept_refusing = false;
                    self.accept_refused_total = 0;
                    stream.set_nonblocking(true)?;
                    let conn = self.alloc_conn();
                    self.conns
                        .insert(conn, Conn::new(Transport::Socket(stream)));
                    self.core.apply_infallible(BoundaryEvent::Connect {
                        conn,
                        kind: ConnectKind::Socket,
                    });
                    self.update_interest(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The client went away before we took it: the next one.
                Err(e) if e.raw_os_error() == Some(nix::libc::ECONNABORTED) => {}
                Err(e) => {
                    if at_descriptor_limit(&e) && self.reserve.held() {
                        // Linux takes the descriptor before it looks at
                        // the backlog: EMFILE may mean no one is waiting.
                        // Closed inside, before the reserve is taken back.
                        let listener = &self.listener;
                        let (got, _) = self.reserve.spend(|| listener.accept().map(drop));
                        match got {
                            Ok(()) => {
                                self.accept_refused(&e);
                                self.accept_refused_total += 1;
                                continue;
                            }
                            Err(again) if again.kind() == io::ErrorKind::WouldBlock => {
                                return Ok(())
                            }
                            Err(_) => {}
                        }
                    }
                    self.accept_refused(&e);
                    self.pause_listener();
                    return Ok(());
                }
            }
        }
    }

    /// Logs the start of an episode where accept fails (once).
    fn accept_refused(&mut self, e: &io::Error) {
        if !self.accept_refusing {
            tracing::warn!(
                "accept failed: {e}; refusing new connections until it succeeds \
                 (those already here are served)"
            );
            self.accept_refusing = true;
        }
    }

    /// Takes the listener out of epoll for [`ACCEPT_PAUSE`] (accept fails
    /// and the reserve descriptor did not help).
    fn pause_listener(&mut self) {
        let mut ev = EpollEvent::new(EpollFlags::empty(), TOKEN_LISTENER);
        match self.epoll.modify(&self.listener, &mut ev) {
            Ok(()) => self.accept_paused = Some(Instant::now() + ACCEPT_PAUSE),
            Err(e) => tracing::warn!("cannot pause the listener: {e}"),
        }
    }

    /// Puts a paused listener back into epoll once [`ACCEPT_PAUSE`] is
    /// over.
    fn resume_listener(&mut self) {
        if self
            .accept_paused
            .is_some_and(|until| Instant::now() >= until)
        {
            if !self.reserve.held() {
                self.reserve = os::ReserveFd::open();
            }
            let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER);
            match self.epoll.modify(&self.listener, &mut ev) {
                Ok(()) => self.accept_paused = None,
                Err(e) => tracing::warn!("cannot resume the listener: {e}"),
            }
        }
    }

    fn service_events(&mut self) {
        let mut fired = std::mem::take(&mut self.scratch.fired);
        fired.clear();
        if let Err(e) = self.platform.evtchn.read_pending(&mut fired) {
            tracing::warn!("reading pending event channels failed: {e}");
            // Treat every port as pending (the overflow case).
            fired.extend(self.ports.keys().copied());
            fired.extend(self.virq);
        }
        for &port in &fired {
            if Some(port) == self.virq {
                self.domains_changed();
            } else if let Some(&conn) = self.ports.get(&port) {
                self.dirty.insert(conn);
            }
        }
        if let Err(e) = self.platform.evtchn.unmask(&fired) {
            tracing::warn!("unmasking event channels failed: {e}");
        }
        self.scratch.fired = fired;
    }

    /// Tells the engine what the hypervisor says of every domain it knows
    /// ([`Engine::known_domains`], and every ring): one that is gone or
    /// dying is dead, and so is one alive under another unique id than
    /// the one we knew (its domid was reused); one shut down is reported
    /// so. A domain released before it died is asked about too while it
    /// owns nodes, so what it was given since goes when it dies.
    fn domains_changed(&mut self) {
        let Some(list) = self.platform.dominfo_list() else {
            return;
        };
        let info: BTreeMap<DomId, gnttab::DomainInfo> =
            list.into_iter().map(|d| (d.domid, d)).collect();
        let mut known = self.core.engine().known_domains();
        let rings: BTreeSet<DomId> = self.conns.values().filter_map(Conn::domid).collect();
        known.extend(rings.iter().copied());
        known.remove(&0);
        for &domid in &known {
            let (shutdown, dying) = match info.get(&domid) {
                None if rings.contains(&domid) || self.seen_alive.contains(&domid) => (true, true),
                None => continue, // never seen to exist: nothing to say it died
                Some(d) => match (self.unique_ids.get(&domid), d.unique_id) {
                    (Some(&then), Some(now)) if then != now => {
                        tracing::info!(
                            "domain {domid} is a new domain (unique id {now}, was {then}): the old one is dead"
                        );
                        (true, true)
                    }
                    _ => (d.shutdown.is_some(), d.dying),
                },
            };
            if shutdown || dying {
                self.core.apply_infallible(BoundaryEvent::DomainState {
                    domid,
                    shutdown,
                    dying,
                });
            }
        }
        // An id is kept while that domain lives, even when the engine
        // forgets it (released), so that a later reuse of its domid is seen.
        self.unique_ids.retain(|domid, &mut id| {
            info.get(domid)
                .is_some_and(|d| !d.dying && d.unique_id == Some(id))
        });
        self.seen_alive
            .retain(|domid| info.get(domid).is_some_and(|d| !d.dying));
        for domid in known {
            if let Some(d) = info.get(&domid).filter(|d| !d.dying) {
                self.seen_alive.insert(domid);
                if let Some(id) = d.unique_id {
                    self.unique_ids.entry(domid).or_insert(id);
                }
            }
        }
    }

    fn feed(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), xenring::Error> {
        let last_time = self.last_time;
        let log = &mut self.access_log;
        self.core
            .input(conn, bytes, &mut |engine, conn, domid, msg| {
                AccessLog::request(log, last_time, engine, conn, domid, msg);
            })
    }

    /// Reads what `conn`'s transport has while the engine takes requests
    /// from it, and answers a ring's reconnection request.
    fn service(&mut self, conn: ConnId) {
        if !self.core.is_live(conn) {
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.transport.reconnect_requested() {
            self.core.apply_infallible(BoundaryEvent::Reset { conn });
            self.unreleased.remove(conn);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.transport.complete_reconnect();
            }
            self.journal_ring(conn);
            self.notify(conn);
            return;
        }
        // The daemon's one read buffer (not 8 KiB zeroed on the stack per
        // call); a fresh one should a read ever nest in another.
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.len() < READ_BUF {
            buf = vec![0; READ_BUF];
        }
        self.read_into(conn, &mut buf);
        self.read_buf = buf;
    }

    /// [`Daemon::service`]'s reads of `conn` through `buf`.
    fn read_into(&mut self, conn: ConnId, buf: &mut [u8]) {
        loop {
            if !self.core.accepts_requests(conn) {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.undrained = true;
                }
                break;
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            c.undrained = false;
            let (n, last) = match c.transport.read(buf) {
                Ok(Received::Data(n)) => (n, false),
                Ok(Received::Last(n)) => (n, true),
                Ok(Received::Empty) => break,
                Ok(Received::Closed) => return self.close(conn),
                Err(e) => return self.fail(conn, &Failure::Transport(e)),
            };
            if c.transport.port().is_some() {
                self.unreleased.insert(conn);
            }
            if let Err(e) = self.feed(conn, &buf[..n]) {
                return self.fail(conn, &Failure::Protocol(e));
            }
            if last {
                break;
            }
        }
    }

    /// A socket `epoll` reported readable: read, then left for the settle
    /// to write to.
    fn service_socket(&mut self, conn: ConnId) {
        self.service(conn);
        if self.conns.contains_key(&conn) {
            self.dirty.insert(conn);
        }
    }

    /// Cuts `conn` off for `why`: a ring is told through its error word
    /// and ignored from now on; a socket is closed.
    fn fail(&mut self, conn: ConnId, why: &Failure<'_>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.transport.flag_error(why.code()) {
            tracing::warn!("ring connection {conn}: {why}; the connection is ignored from now on");
            self.core
                .apply_infallible(BoundaryEvent::Violation { conn });
            self.notify(conn);
        } else {
            if let Failure::Protocol(e) = why {
                tracing::warn!("socket connection {conn}: {e}; closing it");
            }
            self.close(conn);
        }
    }

    /// Signals `conn`'s peer that its ring changed.
    fn notify(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            c.transport.notify(&mut *self.platform.evtchn);
        }
    }

    fn close(&mut self, conn: ConnId) {
        if self.core.has(conn) {
            self.core.apply_infallible(BoundaryEvent::Close { conn });
        }
        if let Some(c) = self.conns.remove(&conn) {
            self.teardown(c.transport);
        }
    }

    /// Runs until nothing more can be done without waiting: rings read,
    /// actions carried out, output written; what was read from rings is
    /// then released to the guests.
    fn settle(&mut self) {
        self.settle_turns();
        self.sync_point();
    }

    fn settle_turns(&mut self) {
        let mut dirty = std::mem::take(&mut self.scratch.dirty);
        let mut touched = std::mem::take(&mut self.scratch.touched);
        for _ in 0..64 {
            self.dirty.take_into(&mut dirty);
            for &conn in &dirty {
                // Sockets are read when epoll says so; rings when marked.
                if self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.transport.port().is_some())
                {
                    self.service(conn);
                }
            }
            self.do_actions();
            let mut again = false;
            touched.clear();
            touched.extend(self.core.engine().conns_with_output_iter());
            touched.extend_from_slice(&dirty);
            connset::sort_dedup(&mut touched);
            for &conn in &touched {
                again |= self.flush(conn);
            }
            for &conn in &touched {
                self.update_interest(conn);
            }
            // A guest whose watch events another connection took (or
            // dropped) may send again: read its ring.
            for conn in self.core.take_unblocked() {
                if self.conns.contains_key(&conn) {
                    self.dirty.insert(conn);
                }
            }
            self.do_actions();
            if !again && self.dirty.is_empty() {
                break;
            }
        }
        self.scratch.dirty = dirty;
        self.scratch.touched = touched;
    }

    /// Writes what is queued for `conn`; returns whether the connection can
    /// accept more requests it had stopped taking (so it needs reading).
    fn flush(&mut self, conn: ConnId) -> bool {
        if self
            .core
            .journal()
            .is_some_and(journal::Journal::needs_sync)
        {
            self.sync_point();
        }
        let before = self.core.accepts_requests(conn);
        let mut wrote = false;
        while let Some(pending) = self.core.next_output(conn) {
            let Some(c) = self.conns.get_mut(&conn) else {
                return false;
            };
            let n = match c.transport.write(pending) {
                Ok(n) => n,
                Err(e) => {
                    self.fail(conn, &Failure::Transport(e));
                    return false;
                }
            };
            self.core.wrote(conn, n);
            wrote |= n > 0;
            if n == 0 {
                break;
            }
        }
        if wrote {
            self.notify(conn);
        }
        if !before && self.core.accepts_requests(conn) {
            self.dirty.insert(conn);
            if self
                .conns
                .get(&conn)
                .is_some_and(|c| c.transport.poll_fd().is_some())
            {
                self.service(conn);
            }
            return true;
        }
        false
    }

    fn do_actions(&mut self) {
        let actions = self.core.take_actions();
        if actions.is_empty() {
            return;
        }
        self.carry_out(actions);
    }

    /// Carries out the engine's `actions`.
    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Introduce {
                    token,
                    domid,
                    mfn,
                    port,
                } => {
                    let result = self.introduce(domid, mfn, port);
                    self.core
                        .apply_infallible(BoundaryEvent::Introduced { token, result });
                    if let Ok(conn) = result {
                        self.journal_ring(conn);
                    }
                }
                Action::Release { conn, domid } => {
                    tracing::info!("domain {domid} released");
                    // The engine and the core have forgotten it: only the
                    // transport goes.
                    self.close(conn);
                }
                Action::Kill { conn, reason } => {
                    tracing::warn!("connection {conn} cut off: {reason}");
                    self.fail(conn, &Failure::Killed(&reason));
                }
                Action::Log(line) => tracing::info!(target: "xenstored", "{line}"),
                Action::LiveUpdate { conn, header, args } => {
                    self.live_update_request(conn, header, &args);
                }
                Action::Control { command, .. } => self.control(command),
                Action::MemReport {
                    conn,
                    header,
                    file,
                    report,
                } => {
                    let written = std::fs::File::options()
                        .append(true)
                        .create(true)
                        .open(&file)
                        .and_then(|mut f| io::Write::write_all(&mut f, report.as_bytes()));
                    let answer = match written {
                        Ok(()) => crate::replay::format::Answer::Text("OK".into()),
                        // C's EBADF, sent as EINVAL.
                        Err(e) => {
                            tracing::warn!("memreport: cannot write {file}: {e}");
                            crate::replay::format::Answer::Error(XsErrno::EINVAL)
                        }
                    };
                    self.core.apply_infallible(BoundaryEvent::Answer {
                        conn,
                        header,
                        answer,
                    });
                }
            }
        }
    }

    fn control(&mut self, command: crate::engine::ShellControl) {
        use crate::engine::ShellControl;
        match command {
            ShellControl::Log(false) => self.access_log = None,
            ShellControl::Log(true) if self.access_log.is_none() => {
                let path = self.socket_path.with_file_name("xenstored-access.log");
                self.open_access_log(path);
            }
            ShellControl::Log(true) => tracing::info!("control log on: already on"),
            ShellControl::LogFile(path) => self.open_access_log(PathBuf::from(path)),
        }
    }

    fn open_access_log(&mut self, path: PathBuf) {
        match AccessLog::open(&path) {
            Ok(log) => self.access_log = Some(log),
            Err(e) => tracing::warn!("cannot open access log {}: {e}", path.display()),
        }
    }

    fn introduce(&mut self, domid: DomId, mfn: u64, remote_port: u32) -> Result<ConnId, XsErrno> {
        let page = match self
            .platform
            .mapper
            .map_grant(domid, GNTTAB_RESERVED_XENSTORE)
        {
            Ok(page) => page,
            Err(grant_err) => match self.platform.mapper.map_foreign(domid, mfn) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("introduce {domid}: cannot map its ring (grant: {grant_err}; mfn {mfn:#x}: {e})");
                    return Err(XsErrno::EINVAL);
                }
            },
        };
        let port = match self
            .platform
            .evtchn
            .bind_interdomain(domid, Port::new(remote_port))
        {
            Ok(port) => port,
            Err(e) => {
                tracing::warn!("introduce {domid}: cannot bind its port {remote_port}: {e}");
                return Err(XsErrno::EINVAL);
            }
        };
        tracing::info!("domain {domid} introduced (mfn {mfn:#x}, remote port {remote_port}, local port {port})");
        self.seen_alive.insert(domid);
        // The domain as it is now is the one introduced.
        match self.platform.dominfo.get(domid) {
            Ok(Some(gnttab::DomainInfo {
                unique_id: Some(id),
                ..
            })) => self.unique_ids.insert(domid, id),
            _ => self.unique_ids.remove(&domid),
        };
        Ok(self.add_ring(page, port, domid))
    }
}

/// The event that starts a process's part of a recording: its command
/// line.
/// A pre-copy's crash journal written ahead (its `Start` and the store
/// image), taken over at the restore.
#[derive(Debug)]
pub struct PrewrittenJournal {
    from: PathBuf,
    len: u64,
    events: u64,
}

/// Writes the journal a pre-copy's new process begins with ahead, beside
/// the real one (`.rec.precopy`): the 10-100 MB of the store image are then
/// not written during the hand-over. `None` without a journal, or if it
/// cannot be written (logged; the restore then writes it).
pub fn prewrite_journal(config: &ShellConfig, bulk: &[u8]) -> Option<PrewrittenJournal> {
    config.journal?;
    let path = journal::path_in(&config.rundir);
    let from = path.with_extension("rec.precopy");
    let written = path
        .parent()
        .map_or(Ok(()), |dir| os::create_dirs(dir, RECORD_DIR_MODE))
        .and_then(|()| {
            journal::Journal::prewrite(
                &from,
                &[start_event(config), BoundaryEvent::StoreImage(bulk)],
            )
        });
    match written {
        Ok((len, events)) => Some(PrewrittenJournal { from, len, events }),
        Err(e) => {
            tracing::warn!(
                "live-update: pre-copy: cannot write the journal ahead ({}: {e}); written at \
                 the hand-over",
                from.display()
            );
            let _ = std::fs::remove_file(&from);
            None
        }
    }
}

fn start_event(config: &ShellConfig) -> BoundaryEvent<'static> {
    BoundaryEvent::Start {
        args: config
            .exec_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    }
}

/// Whether accept's `e` says the process or the system is out of
/// descriptors or of memory for one.
fn at_descriptor_limit(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Binds the listening socket at `path` (replacing a stale one), 0600
/// whatever the umask, in a directory created 0755 if missing (as C
/// xenstored does).
fn bind_listener(path: &std::path::Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        os::create_dirs(dir, os::RUNDIR_MODE)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    os::listen_private(path)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.core.sync_recording();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

#[cfg(test)]
mod loop_tests {
    use std::os::fd::AsFd;
    use std::time::Instant;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use xenring::codec::build_args;
    use xenring::MsgType;

    use super::test_world::{World, LIMIT};

    /// Whether the daemon's tick is readable now.
    fn tick_readable(w: &World) -> bool {
        let tick = w.daemon.tick.as_ref().expect("a tick");
        let mut fds = [PollFd::new(tick.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).expect("poll") == 1
    }

    /// An idle turn waits without a timeout of its own and the tick ends
    /// it; the turn takes the tick's expiry, so that the next wait blocks
    /// again instead of finding it readable at once.
    #[test]
    fn idle_turn_ends_at_the_tick_and_takes_it() {
        let mut w = World::new();
        assert!(w.daemon.tick.is_some(), "the loop's timer was made");
        let start = Instant::now();
        while !tick_readable(&w) {
            assert!(start.elapsed() < LIMIT, "the tick never fired");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        w.daemon.turn(Some(super::TICK_MS)).unwrap();
        assert!(!tick_readable(&w), "the turn left the tick's expiry unread");
    }

    /// The tick is read without blocking and does not leak into the new
    /// binary of a live update.
    #[test]
    fn the_tick_is_non_blocking_and_close_on_exec() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        let w = World::new();
        let tick = w.daemon.tick.as_ref().expect("a tick");
        let fd = fcntl(tick, FcntlArg::F_GETFD).expect("F_GETFD");
        assert!(FdFlag::from_bits_truncate(fd).contains(FdFlag::FD_CLOEXEC));
        let fl = fcntl(tick, FcntlArg::F_GETFL).expect("F_GETFL");
        assert!(OFlag::from_bits_truncate(fl).contains(OFlag::O_NONBLOCK));
    }

    /// The wait's timeout: exact below a tick, left to the tick from a
    /// tick on, and exact again when there is no tick.
    #[test]
    fn wait_timeout_leaves_only_long_limits_to_the_tick() {
        use super::{wait_timeout, EpollTimeout, TICK_MS};
        let ms = EpollTimeout::from;
        // Connections wait: do not block, whatever else holds.
        assert_eq!(
            wait_timeout(true, true, Some(1000), Some(5), true),
            EpollTimeout::ZERO
        );
        // A dry run or recorded events: 10 ms, or a sooner wake-up.
        assert_eq!(wait_timeout(false, true, Some(1000), None, true), ms(10u16));
        assert_eq!(wait_timeout(false, true, None, Some(3), true), ms(3u16));
        assert_eq!(wait_timeout(false, true, None, Some(30), true), ms(10u16));
        // A throttled domain's wake-up sooner than a tick is kept exactly.
        assert_eq!(
            wait_timeout(false, false, Some(1000), Some(50), true),
            ms(50u16)
        );
        assert_eq!(
            wait_timeout(false, false, None, Some(999), true),
            ms(999u16)
        );
        assert_eq!(wait_timeout(false, false, Some(20), None, true), ms(20u16));
        // From a tick on, the tick ends the wait.
        assert_eq!(
            wait_timeout(false, false, Some(TICK_MS), None, true),
            EpollTimeout::NONE
        );
        assert_eq!(
            wait_timeout(false, false, Some(5000), Some(2000), true),
            EpollTimeout::NONE
        );
        assert_eq!(
            wait_timeout(false, false, None, Some(TICK_MS), true),
            EpollTimeout::NONE
        );
        // Without a tick, the limit itself.
        assert_eq!(
            wait_timeout(false, false, Some(TICK_MS), None, false),
            ms(TICK_MS)
        );
        assert_eq!(
            wait_timeout(false, false, Some(5000), Some(2000), false),
            ms(2000u16)
        );
        // No limit at all: block until something happens.
        assert_eq!(
            wait_timeout(false, false, None, None, false),
            EpollTimeout::NONE
        );
        assert_eq!(
            wait_timeout(false, false, None, None, true),
            EpollTimeout::NONE
        );
    }

    /// Without a tick every wait carries its timeout: an idle turn still
    /// ends, and requests are still answered.
    #[test]
    fn without_a_tick_turns_still_end_and_serve() {
        let mut w = World::new();
        w.daemon.tick = None;
        let start = Instant::now();
        w.daemon.turn(Some(50)).unwrap();
        assert!(start.elapsed() < LIMIT);
        let mut c = w.connect();
        c.ask(
            &mut w.daemon,
            MsgType::Write,
            0,
            xenring::codec::build_path_value(b"/k", b"v"),
        )
        .unwrap();
        let got = c
            .ask(&mut w.daemon, MsgType::Read, 0, build_args(&[b"/k"]))
            .unwrap();
        assert_eq!(got, b"v");
    }

    /// Sockets are edge-triggered: the bytes already there when reads
    /// stopped bring no new event. A socket marked undrained is re-armed
    /// by `update_interest` and read on the next turn.
    #[test]
    fn an_undrained_socket_is_read_once_re_armed() {
        use nix::sys::epoll::EpollEvent;
        let mut w = World::new();
        let mut c = w.connect();
        let req = c.send(MsgType::GetDomainPath, 0, build_args(&[b"0"]));
        // Take the event its bytes brought without reading them, as a
        // read that stopped early leaves them.
        let mut events = [EpollEvent::empty(); 8];
        let n = w
            .daemon
            .epoll
            .wait(&mut events, super::EpollTimeout::ZERO)
            .unwrap();
        let token = super::TOKEN_BASE + u64::from(c.id);
        assert!(events[..n].iter().any(|e| e.data() == token));
        for _ in 0..3 {
            w.daemon.turn(Some(1)).unwrap();
        }
        c.no_answer_yet(req);
        // Nothing changed and nothing was left undrained: no re-arm.
        w.daemon.update_interest(c.id);
        w.daemon.turn(Some(1)).unwrap();
        c.no_answer_yet(req);
        w.daemon.conns.get_mut(&c.id).unwrap().undrained = true;
        w.daemon.update_interest(c.id);
        assert!(
            !w.daemon.conns[&c.id].undrained,
            "re-armed once, not on every call"
        );
        w.daemon.turn(Some(1)).unwrap();
        c.poll();
        assert!(
            c.inbox.iter().any(|m| m.header.req_id == req),
            "the re-armed socket was read in the turn after"
        );
    }

    /// Under edge-triggered readiness every byte is still read and every
    /// reply written: a burst larger than the read buffer in one go, and
    /// replies larger than the socket's buffer to a client that reads
    /// only later (the daemon writes until EAGAIN and goes on when the
    /// client makes room).
    #[test]
    fn bursts_both_ways_arrive_whole_under_edge_triggering() {
        use nix::sys::epoll::EpollFlags;
        use xenring::codec::build_path_value;
        use xenring::Message;
        let mut w = World::new();
        let mut c = w.connect();
        let value = vec![b'v'; 2000];
        let mut burst = Vec::new();
        let mut writes = Vec::new();
        for i in 0..13u32 {
            let path = format!("/burst/{i}");
            let m = Message::new(
                MsgType::Write,
                1000 + i,
                0,
                build_path_value(path.as_bytes(), &value),
            );
            burst.extend_from_slice(&m.unwrap().to_bytes());
            writes.push(1000 + i);
        }
        assert!(burst.len() > 3 * super::READ_BUF);
        c.send_raw(&burst);
        for req in writes {
            let m = c.answer(&mut w.daemon, req);
            assert_eq!(m.header.msg_type, MsgType::Write.raw(), "{}", req);
        }
        // 400 replies of 2000 octets, asked for without reading any.
        // In one write: each write is a buffer the socket charges apart.
        let mut reads = Vec::new();
        let mut asks = Vec::new();
        for i in 0..400u32 {
            let path = format!("/burst/{}", i % 13);
            let m = Message::new(MsgType::Read, 2000 + i, 0, build_args(&[path.as_bytes()]));
            asks.extend_from_slice(&m.unwrap().to_bytes());
            reads.push(2000 + i);
        }
        c.send_raw(&asks);
        for _ in 0..20 {
            w.daemon.turn(Some(1)).unwrap();
        }
        // Output waits: the socket is registered for room to write too.
        assert_eq!(
            w.daemon.conns[&c.id].interest,
            Some(EpollFlags::EPOLLET | EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT)
        );
        for req in reads {
            let m = c.answer(&mut w.daemon, req);
            assert_eq!(m.payload, value);
        }
    }
}
