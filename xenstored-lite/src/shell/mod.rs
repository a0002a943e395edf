//! The I/O shell: a single-threaded `poll` loop around the engine.
//!
//! It owns the transports — Unix-socket clients and guest rings — and
//! frames bytes into complete requests for the engine, writes the engine's
//! replies and watch events back with partial writes kept per connection,
//! carries out the engine's actions (map and bind a ring on INTRODUCE,
//! release it, cut a connection off), and turns `VIRQ_DOM_EXC` into domain
//! states. The clock enters in one place (`Daemon::now_ms`). One slow or
//! stuck client never delays another: nothing here blocks on a client.

pub mod core;
mod live_update;
pub mod platform;

pub use live_update::{check_stream, RestoreFailure, RestoreSummary, StateWriteError, STATE_FILE};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use evtchn::{Port, VIRQ_DOM_EXC};
use gnttab::{ForeignPage, GNTTAB_RESERVED_XENSTORE};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use xenring::page::RING_SIZE_U32;
use xenring::{DomId, Message, MsgType, RingErrorCode, ServerEnd, ServerFeatures, XsErrno};

use crate::engine::{Action, ConnId, ConnKind, Engine};
use crate::replay::format::{Event, Recorder};
use core::Core;
use platform::Platform;

/// What the daemon needs to start.
#[derive(Debug)]
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
}

/// The recording's file name in its directory.
pub const RECORDING_FILE: &str = "xenstored-lite.rec";

enum Transport {
    Socket(UnixStream),
    Ring {
        page: Box<dyn ForeignPage>,
        port: Port,
        domid: DomId,
    },
}

/// A connection's transport; its framing and buffers are the core's.
struct Conn {
    transport: Transport,
}

impl Conn {
    fn new(transport: Transport) -> Self {
        Self { transport }
    }

    fn domid(&self) -> Option<DomId> {
        match &self.transport {
            Transport::Ring { domid, .. } => Some(*domid),
            Transport::Socket(_) => None,
        }
    }
}

/// The running daemon.
pub struct Daemon {
    core: Core,
    platform: Platform,
    listener: UnixListener,
    socket_path: PathBuf,
    conns: BTreeMap<ConnId, Conn>,
    ports: BTreeMap<Port, ConnId>,
    virq: Option<Port>,
    next_conn: ConnId,
    start: Instant,
    last_time: u64,
    access_log: Option<File>,
    stop: Arc<AtomicBool>,
    dirty: BTreeSet<ConnId>,
    epoll: Epoll,
    /// What each socket is registered for in `epoll`.
    interest: BTreeMap<ConnId, EpollFlags>,
    rundir: PathBuf,
    exec_args: Vec<OsString>,
    live_update: Option<live_update::Session>,
    /// When the recording was last written out.
    last_flush: Instant,
}

/// How long recorded events may wait in memory once the daemon is idle.
const RECORDING_FLUSH: std::time::Duration = std::time::Duration::from_millis(10);

const TOKEN_LISTENER: u64 = 0;
const TOKEN_EVTCHN: u64 = 1;
const TOKEN_BASE: u64 = 2;

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.socket_path)
            .field("connections", &self.conns.len())
            .finish()
    }
}

fn describe(ty: u32) -> &'static str {
    MsgType::try_from(ty).map_or("XS_UNKNOWN", MsgType::name)
}

impl Daemon {
    /// Binds the socket, binds `VIRQ_DOM_EXC`, serves dom0's own ring where
    /// the platform has one.
    pub fn new(engine: Engine, platform: Platform, config: &ShellConfig) -> io::Result<Self> {
        let listener = bind_listener(&config.socket)?;
        let mut daemon = Self::with_listener(engine, platform, config, listener, false)?;
        if daemon.platform.serve_local_ring {
            daemon.serve_local_ring();
        }
        Ok(daemon)
    }

    fn with_listener(
        engine: Engine,
        mut platform: Platform,
        config: &ShellConfig,
        listener: UnixListener,
        continue_recording: bool,
    ) -> io::Result<Self> {
        let recorder = match &config.record_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(RECORDING_FILE);
                let rec = Recorder::open(&path, continue_recording).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot record to {}: {e}", path.display()),
                    )
                })?;
                tracing::info!("recording everything received to {}", path.display());
                Some(rec)
            }
            None => None,
        };
        let mut core = Core::new(engine, recorder);
        core.record(&Event::Start {
            args: config
                .exec_args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        });
        let virq = match platform.evtchn.bind_virq(VIRQ_DOM_EXC) {
            Ok(port) => Some(port),
            Err(e) => {
                tracing::warn!("cannot bind VIRQ_DOM_EXC ({e}); domain deaths will not be noticed");
                None
            }
        };
        let access_log = match &config.access_log {
            Some(path) => Some(File::options().create(true).append(true).open(path)?),
            None => None,
        };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            &listener,
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
        )?;
        {
            // SAFETY: the event-channel handle owns this descriptor and
            // outlives the registration (both live in the daemon).
            let fd = unsafe { BorrowedFd::borrow_raw(platform.evtchn.as_raw_fd()) };
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_EVTCHN))?;
        }
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
            dirty: BTreeSet::new(),
            epoll,
            interest: BTreeMap::new(),
            rundir: config.rundir.clone(),
            exec_args: config.exec_args.clone(),
            live_update: None,
            last_flush: Instant::now(),
        };
        Ok(daemon)
    }

    fn serve_local_ring(&mut self) {
        match self.platform.mapper.map_local_xenstore() {
            Ok(local) => match self.platform.evtchn.bind_interdomain(0, local.port) {
                Ok(port) => {
                    let conn = self.add_ring(local.page, port, 0);
                    self.core.connect(conn, ConnKind::Domain(0));
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
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn add_ring(&mut self, page: Box<dyn ForeignPage>, port: Port, domid: DomId) -> ConnId {
        let conn = self.alloc_conn();
        ServerEnd::new(page.ring()).advertise(ServerFeatures::RECONNECTION | ServerFeatures::ERROR);
        self.ports.insert(port, conn);
        self.conns
            .insert(conn, Conn::new(Transport::Ring { page, port, domid }));
        self.dirty.insert(conn);
        conn
    }

    /// Lets go of a ring's transport that will not be served (its domain
    /// is gone): unmapped, its port unbound.
    fn drop_transport(&mut self, conn: ConnId) {
        if let Some(Conn {
            transport: Transport::Ring { port, .. },
        }) = self.conns.remove(&conn)
        {
            self.ports.remove(&port);
            if let Err(e) = self.platform.evtchn.unbind(port) {
                tracing::warn!("unbinding port {port} failed: {e}");
            }
        }
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
            self.core.time(now);
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
        let (listener_ready, evtchn_ready, ready) = self.wait(timeout_ms)?;
        if listener_ready {
            self.accept_all()?;
        }
        if evtchn_ready {
            self.service_events();
        }
        for conn in ready {
            self.service_socket(conn);
        }
        self.settle();
        if self.live_update.is_some() {
            // Between requests: the one point where a hand-over may happen.
            self.live_update_poll();
        }
        Ok(())
    }

    fn wait(&self, timeout_ms: Option<u16>) -> io::Result<(bool, bool, Vec<ConnId>)> {
        let timeout = if !self.dirty.is_empty() {
            EpollTimeout::ZERO
        } else if self.live_update_pending() || self.core.recording_pending() {
            // A dry run is under way, or recorded events wait to be
            // written out: look again soon.
            EpollTimeout::from(10u16)
        } else {
            timeout_ms.map_or(EpollTimeout::NONE, EpollTimeout::from)
        };
        let mut events = [EpollEvent::empty(); 256];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let (mut listener, mut evtchn, mut socks) = (false, false, Vec::new());
        for ev in &events[..n] {
            match ev.data() {
                TOKEN_LISTENER => listener = true,
                TOKEN_EVTCHN => evtchn = true,
                token => {
                    if let Ok(conn) = ConnId::try_from(token - TOKEN_BASE) {
                        socks.push(conn);
                    }
                }
            }
        }
        Ok((listener, evtchn, socks))
    }

    /// Keeps a socket's epoll registration in line with what it needs:
    /// readable while the engine takes its requests, writable while output
    /// waits.
    fn update_interest(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Transport::Socket(stream) = &c.transport else {
            return;
        };
        let mut want = EpollFlags::empty();
        if self.core.is_live(conn) && self.core.accepts_requests(conn) {
            want |= EpollFlags::EPOLLIN;
        }
        if self.core.has_buffered_output(conn) {
            want |= EpollFlags::EPOLLOUT;
        }
        if self.interest.get(&conn) == Some(&want) {
            return;
        }
        let mut ev = EpollEvent::new(want, TOKEN_BASE + u64::from(conn));
        let result = if self.interest.contains_key(&conn) {
            self.epoll.modify(stream, &mut ev)
        } else {
            self.epoll.add(stream, ev)
        };
        match result {
            Ok(()) => {
                self.interest.insert(conn, want);
            }
            Err(e) => tracing::warn!("epoll registration of connection {conn} failed: {e}"),
        }
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(true)?;
                    let conn = self.alloc_conn();
                    self.conns
                        .insert(conn, Conn::new(Transport::Socket(stream)));
                    self.core.connect(conn, ConnKind::Socket);
                    self.update_interest(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: keep serving those already here.
                    tracing::warn!("accept failed: {e}");
                    return Ok(());
                }
            }
        }
    }

    fn service_events(&mut self) {
        let mut fired = Vec::new();
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
    }

    fn domains_changed(&mut self) {
        let Some(list) = self.platform.dominfo_list() else {
            return;
        };
        let info: BTreeMap<DomId, gnttab::DomainInfo> =
            list.into_iter().map(|d| (d.domid, d)).collect();
        let ours: BTreeSet<DomId> = self
            .conns
            .values()
            .filter_map(Conn::domid)
            .filter(|&d| d != 0)
            .collect();
        for domid in ours {
            let (shutdown, dying) = match info.get(&domid) {
                None => (true, true),
                Some(d) => (d.shutdown.is_some(), d.dying),
            };
            if shutdown || dying {
                self.core.domain_state(domid, shutdown, dying);
            }
        }
    }

    fn feed(&mut self, conn: ConnId, bytes: &[u8]) -> Result<(), xenring::Error> {
        let last_time = self.last_time;
        let log = &mut self.access_log;
        self.core
            .input(conn, bytes, &mut |engine, conn, domid, msg| {
                log_access(log, last_time, engine, conn, domid, msg);
            })
    }

    fn service_socket(&mut self, conn: ConnId) {
        let mut buf = [0u8; 8192];
        loop {
            if !self.core.accepts_requests(conn) {
                break;
            }
            let Some(Conn {
                transport: Transport::Socket(stream),
            }) = self.conns.get_mut(&conn)
            else {
                return;
            };
            match stream.read(&mut buf) {
                Ok(0) => return self.close(conn),
                Ok(n) => {
                    if let Err(e) = self.feed(conn, &buf[..n]) {
                        tracing::warn!("socket connection {conn}: {e}; closing it");
                        return self.close(conn);
                    }
                    if n < buf.len() {
                        // Level-triggered: anything left is reported again.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(conn),
            }
        }
        self.dirty.insert(conn);
    }

    fn service_ring(&mut self, conn: ConnId) {
        if !self.core.is_live(conn) {
            return;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Transport::Ring { page, port, .. } = &c.transport else {
            return;
        };
        let end = ServerEnd::new(page.ring());
        let port = *port;
        if end.reconnect_requested() {
            self.core.reset(conn);
            end.complete_reconnect();
            self.notify(port);
            return;
        }
        let mut buf = [0u8; 1024];
        let mut consumed_full = false;
        loop {
            if !self.core.accepts_requests(conn) {
                break;
            }
            let Some(Conn {
                transport: Transport::Ring { page, .. },
            }) = self.conns.get(&conn)
            else {
                return;
            };
            let end = ServerEnd::new(page.ring());
            let was_full = matches!(end.readable(), Ok(RING_SIZE_U32));
            match end.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    consumed_full |= was_full;
                    if let Err(e) = self.feed(conn, &buf[..n]) {
                        return self.ring_violation(conn, RingErrorCode::Proto, &e.to_string());
                    }
                }
                Err(e) => return self.ring_violation(conn, RingErrorCode::RingIdx, &e.to_string()),
            }
        }
        if consumed_full {
            self.notify(port);
        }
    }

    fn ring_violation(&mut self, conn: ConnId, code: RingErrorCode, why: &str) {
        tracing::warn!("ring connection {conn}: {why}; the connection is ignored from now on");
        let port = match self.conns.get(&conn).map(|c| &c.transport) {
            Some(Transport::Ring { page, port, .. }) => {
                ServerEnd::new(page.ring()).set_error(code);
                Some(*port)
            }
            _ => None,
        };
        self.core.violation(conn);
        if let Some(port) = port {
            self.notify(port);
        }
    }

    fn notify(&mut self, port: Port) {
        if let Err(e) = self.platform.evtchn.notify(port) {
            tracing::warn!("notifying port {port} failed: {e}");
        }
    }

    fn close(&mut self, conn: ConnId) {
        if self.core.has(conn) {
            self.core.close(conn);
        }
        self.interest.remove(&conn);
        if let Some(c) = self.conns.remove(&conn) {
            if let Transport::Socket(stream) = &c.transport {
                let _ = self.epoll.delete(stream);
            }
            if let Transport::Ring { port, .. } = c.transport {
                self.ports.remove(&port);
                if let Err(e) = self.platform.evtchn.unbind(port) {
                    tracing::warn!("unbinding port {port} failed: {e}");
                }
            }
        }
    }

    /// Runs until nothing more can be done without waiting: rings read,
    /// actions carried out, output written.
    fn settle(&mut self) {
        for _ in 0..64 {
            let dirty: Vec<ConnId> = std::mem::take(&mut self.dirty).into_iter().collect();
            for &conn in &dirty {
                if matches!(
                    self.conns.get(&conn).map(|c| &c.transport),
                    Some(Transport::Ring { .. })
                ) {
                    self.service_ring(conn);
                }
            }
            self.do_actions();
            let mut again = false;
            let touched: BTreeSet<ConnId> = self
                .core
                .conns_with_output()
                .into_iter()
                .chain(dirty)
                .collect();
            for &conn in &touched {
                again |= self.flush(conn);
            }
            for conn in touched {
                self.update_interest(conn);
            }
            self.do_actions();
            if !again && self.dirty.is_empty() {
                return;
            }
        }
    }

    /// Writes what is queued for `conn`; returns whether the connection can
    /// accept more requests it had stopped taking (so it needs reading).
    fn flush(&mut self, conn: ConnId) -> bool {
        let before = self.core.accepts_requests(conn);
        let mut wrote = false;
        while let Some(pending) = self.core.next_output(conn) {
            let Some(c) = self.conns.get_mut(&conn) else {
                return false;
            };
            let n = match &mut c.transport {
                Transport::Socket(stream) => match stream.write(pending) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        self.close(conn);
                        return false;
                    }
                },
                Transport::Ring { page, .. } => match ServerEnd::new(page.ring()).write(pending) {
                    Ok(n) => n,
                    Err(e) => {
                        self.ring_violation(conn, RingErrorCode::RingIdx, &e.to_string());
                        return false;
                    }
                },
            };
            self.core.wrote(conn, n);
            wrote |= n > 0;
            if n == 0 {
                break;
            }
        }
        if wrote {
            if let Some(Conn {
                transport: Transport::Ring { port, .. },
            }) = self.conns.get(&conn)
            {
                let port = *port;
                self.notify(port);
            }
        }
        let after = self.core.accepts_requests(conn);
        if !before && after {
            self.dirty.insert(conn);
            if matches!(
                self.conns.get(&conn).map(|c| &c.transport),
                Some(Transport::Socket(_))
            ) {
                self.service_socket(conn);
            }
            return true;
        }
        false
    }

    fn do_actions(&mut self) {
        for action in self.core.take_actions() {
            match action {
                Action::Introduce {
                    token,
                    domid,
                    mfn,
                    port,
                } => {
                    let result = self.introduce(domid, mfn, port);
                    self.core.introduced(token, result);
                }
                Action::Release { conn, domid } => {
                    tracing::info!("domain {domid} released");
                    // The engine and the core have forgotten it: only the
                    // transport goes.
                    self.close(conn);
                }
                Action::Kill { conn, reason } => {
                    tracing::warn!("connection {conn} cut off: {reason}");
                    match self
                        .conns
                        .get(&conn)
                        .map(|c| matches!(c.transport, Transport::Ring { .. }))
                    {
                        Some(true) => self.ring_violation(conn, RingErrorCode::Comm, &reason),
                        Some(false) => self.close(conn),
                        None => {}
                    }
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
                    let written = File::options()
                        .append(true)
                        .create(true)
                        .open(&file)
                        .and_then(|mut f| f.write_all(report.as_bytes()));
                    let answer = match written {
                        Ok(()) => crate::replay::format::Answer::Text("OK".into()),
                        // C's EBADF, sent as EINVAL.
                        Err(_) => crate::replay::format::Answer::Error(XsErrno::EINVAL),
                    };
                    self.core.answer(conn, &header, answer);
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
        match File::options().create(true).append(true).open(&path) {
            Ok(f) => self.access_log = Some(f),
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
        Ok(self.add_ring(page, port, domid))
    }
}

/// Binds the listening socket at `path` (replacing a stale one).
fn bind_listener(path: &std::path::Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// One line of the access log.
fn log_access(
    file: &mut Option<File>,
    now: u64,
    engine: &Engine,
    conn: ConnId,
    domid: Option<DomId>,
    msg: &Message,
) {
    let Some(f) = file.as_mut() else {
        return;
    };
    let path = xenring::codec::split_args(&msg.payload)
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let result = match engine.last_result() {
        Some(Ok(())) => "OK".to_string(),
        Some(Err(e)) => e.to_string(),
        None => "pending".to_string(),
    };
    let line = format!(
        "{now} conn {conn} domid {} {} tx {} {path} -> {result}\n",
        domid.unwrap_or(0),
        describe(msg.header.msg_type),
        msg.header.tx_id
    );
    if let Err(e) = f.write_all(line.as_bytes()) {
        tracing::warn!("access log write failed, switching it off: {e}");
        *file = None;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.core.sync_recording();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Tells systemd the daemon is ready (`sd_notify(READY=1)`), when it
/// started us with `Type=notify`.
pub fn notify_systemd_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = PathBuf::from(path);
    // Abstract socket names start with '@'.
    let sent = if path.as_os_str().as_encoded_bytes().first() == Some(&b'@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(
            &path.as_os_str().as_encoded_bytes()[1..],
        )
        .and_then(|addr| {
            std::os::unix::net::UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr)
        })
    } else {
        std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1", &path))
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}
