//! Live update: save, exec, restore.
//!
//! The old process carries out XS_CONTROL `live-update` as Xen's
//! `xenstore-control live-update BINARY` drives it (`-f BINARY`,
//! `-c CMDLINE`, `-s [-t SECONDS] [-F] [-v VERSION]`, `-a`). On `-s` it
//! writes its state as a migration stream to `<rundir>/state_dump` and runs
//! the new binary as a dry run (`BINARY <args> -U --dry-run=STATE`, in an
//! empty run directory), which must
//! parse and restore that state; meanwhile it keeps serving. When the dry
//! run succeeds it reaches the end of a loop turn (a point between
//! requests), writes the state again, now with the `OK` answer to `-s`
//! queued on the asking connection, clears close-on-exec on the listening
//! socket, the event-channel handle and the client sockets, and execs the
//! new binary with `-U`. The new process adopts those descriptors, maps the
//! rings again (grant ref, else the mfn of our stream extension), restores
//! connections with their pending input and output, nodes, watches,
//! transactions and quotas, and sends the `OK` itself.
//!
//! If anything fails before the exec, the asking client gets the reason and
//! the old process goes on serving: nothing was taken from any connection.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evtchn::{Port, VIRQ_DOM_EXC};
use gnttab::GNTTAB_RESERVED_XENSTORE;
use xenring::{DomId, Header, Message, MsgType, XsErrno};

use super::platform::{fd_is_open, Platform};
use super::state::{ShellState, TakeOverError};
use super::{Conn, Daemon, ShellConfig, Transport};
use crate::engine::{Config, ConnId, Engine};
use crate::migration::{
    ConnSpec, ConnectionData, Endian, GlobalData, Header as StreamHeader, Record, RingConn,
    RingLocation, SocketConn, Stream, Version, WriteError, DOMID_INVALID,
};
use crate::replay::format::{Answer, BoundaryEvent, Outcome};

/// The state file's name in the run directory (as C xenstored names it).
pub const STATE_FILE: &str = "state_dump";

/// The dry run's (empty) run directory, under ours.
const DRY_RUN_DIR: &str = "live-update-dry-run";

/// How long the new binary's dry run may take before the update is refused.
const DRY_RUN_LIMIT: Duration = Duration::from_secs(120);

/// A live-update session, from `-f` to the hand-over or `-a`.
#[derive(Debug)]
pub(super) struct Session {
    conn: ConnId,
    binary: PathBuf,
    cmdline: Option<String>,
    start: Option<Start>,
    /// How long the dry run may take ([`DRY_RUN_LIMIT`]).
    dry_run_limit: Duration,
}

/// `-s` received: the dry run is under way.
#[derive(Debug)]
struct Start {
    header: Header,
    version: Version,
    child: Child,
    since: Instant,
}

/// Options of `live-update -s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StartOptions {
    version: Version,
}

fn parse_start(args: &[&str]) -> Result<StartOptions, XsErrno> {
    let mut version = Version::V2;
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            // We carry open transactions, so there is nothing to wait for
            // or to force: -t and -F are accepted and have no effect.
            "-F" => {}
            "-t" if i + 1 < args.len() => {
                args[i + 1].parse::<u32>().map_err(|_| XsErrno::EINVAL)?;
                i += 1;
            }
            "-v" if i + 1 < args.len() => {
                let n = args[i + 1].parse::<u32>().map_err(|_| XsErrno::EINVAL)?;
                version = Version::from_number(n).ok_or(XsErrno::EINVAL)?;
                i += 1;
            }
            _ => return Err(XsErrno::EINVAL),
        }
        i += 1;
    }
    Ok(StartOptions { version })
}

/// The new program's arguments: `cmdline` split at white space (what `-c`
/// gave), else ours; with `-U` added when missing, as C xenstored does.
fn new_args(ours: &[OsString], cmdline: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = match cmdline {
        Some(c) => c.split_whitespace().map(OsString::from).collect(),
        None => ours.to_vec(),
    };
    if !args.iter().any(|a| a == "-U" || a == "--live-update") {
        args.push(OsString::from("-U"));
    }
    args
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: `fd` is one of the daemon's own open descriptors (listener,
    // event-channel handle, client sockets), borrowed only for this call.
    evtchn::fd::set_cloexec(unsafe { BorrowedFd::borrow_raw(fd) }, on)
}

/// Why the state could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StateWriteError {
    /// The stream cannot carry it.
    #[error("cannot encode the state: {0}")]
    Encode(#[from] WriteError),
    /// The state file cannot be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why the new process could not take over the old one's state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    /// The stream's content does not restore.
    #[error(transparent)]
    TakeOver(#[from] TakeOverError),
    /// The listening socket passed down cannot be used.
    #[error("cannot take over the listening socket: {0}")]
    Listener(#[source] io::Error),
    /// The socket cannot be bound again.
    #[error("cannot serve {}: {source}", path.display())]
    Serve {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon cannot be set up (recording, epoll).
    #[error("cannot set up the daemon: {0}")]
    Setup(#[source] io::Error),
}

/// Why a ring of the stream cannot be served again.
#[derive(Debug, thiserror::Error)]
enum RingRestoreError {
    /// Dom0's own ring (xsd_kva) cannot be mapped.
    #[error("cannot map dom0's own ring: {0}")]
    LocalRing(#[source] gnttab::Error),
    /// Neither the grant nor the mfn maps.
    #[error("cannot map its ring (grant: {grant}; mfn {mfn:#x}: {foreign})")]
    Map {
        /// Why the grant did not map.
        grant: gnttab::Error,
        /// The mfn of the stream.
        mfn: u64,
        /// Why the mfn did not map.
        foreign: gnttab::Error,
    },
    /// The grant does not map and the stream has no mfn.
    #[error("cannot map its ring by grant ({0}) and the stream has no mfn")]
    NoMfn(#[source] gnttab::Error),
    /// Its port must be bound again, and the stream does not say to what.
    #[error("the event-channel handle was not passed down and the stream has no remote port")]
    NoRemotePort,
    /// Its port cannot be bound again.
    #[error("cannot bind its port {remote}: {source}")]
    Bind {
        /// The guest's port.
        remote: u32,
        /// Why.
        source: evtchn::Error,
    },
}

/// What a restore took over, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Socket connections.
    pub sockets: usize,
    /// Ring connections.
    pub rings: usize,
    /// Ring connections whose domain had gone (released after the restore).
    pub gone: usize,
    /// Nodes.
    pub nodes: usize,
    /// Watches.
    pub watches: usize,
}

/// Checks that `stream` can become engine state (the dry run): every record
/// is converted as a real restore does, without touching descriptors,
/// rings or the hypervisor.
pub fn check_stream(
    config: Config,
    bytes: &[u8],
    stream: &Stream,
) -> Result<RestoreSummary, TakeOverError> {
    let mut core = ShellState::new(Engine::new(config), None);
    let mut summary = RestoreSummary::default();
    let outcomes: Vec<(u32, Outcome)> = stream
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) => Some(c),
            _ => None,
        })
        .map(|c| match &c.spec {
            ConnSpec::Socket(_) => {
                summary.sockets += 1;
                (c.conn_id, Outcome::Socket(c.conn_id))
            }
            ConnSpec::Ring(_) => {
                summary.rings += 1;
                (c.conn_id, Outcome::Ring(c.conn_id))
            }
        })
        .collect();
    let report = core.restore(bytes, stream, &outcomes)?;
    summary.nodes = report.nodes;
    summary.watches = report.watches;
    Ok(summary)
}

impl Daemon {
    /// Carries out `live-update <args>` from `conn`; answers now, or (for
    /// `-s`) when the update has happened or failed.
    pub(super) fn live_update_request(&mut self, conn: ConnId, header: Header, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answer: Result<Option<String>, XsErrno> = match args.as_slice() {
            ["-f", binary] => Ok(Some(self.lu_binary(conn, Path::new(binary)))),
            ["-c", cmdline] => Ok(Some(match &mut self.live_update {
                Some(s) if s.conn == conn => {
                    s.cmdline = Some((*cmdline).to_string());
                    "OK".to_string()
                }
                _ => "Not in live-update session.".to_string(),
            })),
            ["-a"] => Ok(Some(match self.live_update.take() {
                Some(s) => {
                    tracing::info!("live-update: aborted");
                    self.end_session(s);
                    "OK".to_string()
                }
                None => "No live-update session active.".to_string(),
            })),
            ["-s", rest @ ..] => parse_start(rest).map(|opts| self.lu_start(conn, header, opts)),
            ["-b", ..] | ["-d", ..] => Ok(Some(
                "This daemon runs in dom0, not in a stub domain: name the new binary with -f PATH."
                    .to_string(),
            )),
            _ => Err(XsErrno::EINVAL),
        };
        match answer {
            Ok(Some(text)) => self.core.answer(conn, &header, Answer::Text(text)),
            Ok(None) => {}
            Err(e) => self.core.answer(conn, &header, Answer::Error(e)),
        }
    }

    fn lu_binary(&mut self, conn: ConnId, binary: &Path) -> String {
        tracing::info!("live-update: binary {}", binary.display());
        if self.live_update.is_some() {
            return "live-update session already active.".to_string();
        }
        match std::fs::metadata(binary) {
            // C 4.17's answers word for word (xenstore-control prints
            // them); the details go to the log.
            Err(e) => {
                tracing::warn!("live-update: {}: {e}", binary.display());
                return "File not accessible.".to_string();
            }
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => {
                tracing::warn!("live-update: {} is not executable", binary.display());
                return "File not executable.".to_string();
            }
            Ok(_) => {}
        }
        self.live_update = Some(Session {
            conn,
            binary: binary.to_path_buf(),
            cmdline: None,
            start: None,
            dry_run_limit: DRY_RUN_LIMIT,
        });
        "OK".to_string()
    }

    fn lu_start(&mut self, conn: ConnId, header: Header, opts: StartOptions) -> Option<String> {
        let (binary, args) = match &self.live_update {
            Some(s) if s.conn == conn && s.start.is_none() => (
                s.binary.clone(),
                new_args(&self.exec_args, s.cmdline.as_deref()),
            ),
            Some(s) if s.conn == conn => return Some("live-update already starting.".into()),
            _ => return Some("Not in live-update session.".to_string()),
        };
        tracing::info!("live-update: start; dry run of {}", binary.display());
        if let Err(e) = self.write_state(opts.version, None) {
            return Some(format!("live-update: cannot write the state: {e}"));
        }
        // The dry run gets the state's path in its argument and an empty
        // run directory: a binary that does not know --dry-run (C
        // xenstored ignores it and would go on as a second daemon, taking
        // the state file) finds no state and stops.
        let scratch = self.dry_run_dir();
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = std::fs::create_dir_all(&scratch) {
            return Some(format!(
                "live-update: cannot create {}: {e}",
                scratch.display()
            ));
        }
        let mut dry_run_arg = OsString::from("--dry-run=");
        dry_run_arg.push(self.state_path());
        let child = Command::new(&binary)
            .args(&args)
            .arg(dry_run_arg)
            .env("XENSTORED_RUNDIR", &scratch)
            .env_remove("XENSTORED_PATH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            Ok(child) => {
                if let Some(s) = &mut self.live_update {
                    s.start = Some(Start {
                        header,
                        version: opts.version,
                        child,
                        since: Instant::now(),
                    });
                }
                None
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.state_path());
                self.live_update = None;
                Some(format!(
                    "live-update refused: cannot start {}: {e}",
                    binary.display()
                ))
            }
        }
    }

    fn state_path(&self) -> PathBuf {
        self.rundir.join(STATE_FILE)
    }

    fn dry_run_dir(&self) -> PathBuf {
        self.rundir.join(DRY_RUN_DIR)
    }

    fn end_session(&mut self, mut s: Session) {
        if let Some(start) = &mut s.start {
            let _ = start.child.kill();
            let _ = start.child.wait();
            let _ = std::fs::remove_file(self.state_path());
            let _ = std::fs::remove_dir_all(self.dry_run_dir());
        }
    }

    /// Whether a dry run is under way (the loop then polls for its end).
    pub(super) fn live_update_pending(&self) -> bool {
        self.live_update.as_ref().is_some_and(|s| s.start.is_some())
    }

    /// Moves a started update on: at the end of a loop turn, between
    /// requests. Execs the new binary when its dry run succeeded.
    pub(super) fn live_update_poll(&mut self) {
        let Some(session) = &mut self.live_update else {
            return;
        };
        let conn = session.conn;
        if !self.conns.contains_key(&conn) {
            tracing::warn!("live-update: the connection that asked for it is gone; aborted");
            if let Some(s) = self.live_update.take() {
                self.end_session(s);
            }
            return;
        }
        let limit = session.dry_run_limit;
        let Some(start) = &mut session.start else {
            return;
        };
        let status = match start.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) if start.since.elapsed() < limit => return,
            Ok(None) => {
                let header = start.header;
                return self.refuse(
                    conn,
                    header,
                    format!(
                        "the new binary did not finish its dry run within {} s",
                        limit.as_secs()
                    ),
                );
            }
            Err(e) => {
                let header = start.header;
                return self.refuse(conn, header, format!("cannot wait for the dry run: {e}"));
            }
        };
        let header = start.header;
        let version = start.version;
        let _ = std::fs::remove_dir_all(self.rundir.join(DRY_RUN_DIR));
        if !status.success() {
            let mut err = String::new();
            if let Some(mut pipe) = start.child.stderr.take() {
                let _ = pipe.read_to_string(&mut err);
            }
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(it printed nothing)")
                .trim()
                .to_string();
            return self.refuse(
                conn,
                header,
                format!("the new binary failed its dry run ({status}): {last}"),
            );
        }
        let Some(session) = self.live_update.take() else {
            return;
        };
        let why = self.hand_over(&session, header, version);
        // Only reached when the exec did not happen.
        self.live_update = Some(session);
        self.refuse(conn, header, why);
    }

    fn refuse(&mut self, conn: ConnId, header: Header, why: String) {
        tracing::warn!("live-update refused: {why}");
        // Ends the dry run and removes the state file and its scratch
        // directory (a refused update always had started).
        if let Some(s) = self.live_update.take() {
            self.end_session(s);
        }
        self.core.answer(
            conn,
            &header,
            Answer::Text(format!("live-update refused: {why}")),
        );
        self.settle();
    }

    /// Writes the state (with `reply` queued last on its connection) to the
    /// state file; returns its size.
    fn write_state(
        &mut self,
        version: Version,
        reply: Option<(ConnId, &Message)>,
    ) -> Result<usize, StateWriteError> {
        let stream = self.export_stream(version, reply);
        let bytes = stream.to_bytes()?;
        std::fs::write(self.state_path(), &bytes).map_err(|source| StateWriteError::Io {
            path: self.state_path(),
            source,
        })?;
        Ok(bytes.len())
    }

    /// The whole daemon as a migration stream: the descriptors to pass
    /// down, every live connection with the bytes pending on it, then the
    /// engine's records. Reads only: nothing is taken from any queue.
    pub fn export_stream(&mut self, version: Version, reply: Option<(ConnId, &Message)>) -> Stream {
        let mut records = vec![Record::Global(GlobalData {
            rw_socket_fd: self.listener.as_raw_fd(),
            evtchn_fd: self.platform.evtchn.handle_fd(),
        })];
        let unique: BTreeMap<DomId, u64> = match self.platform.dominfo_list() {
            Some(list) => list
                .into_iter()
                .filter_map(|d| d.unique_id.map(|u| (d.domid, u)))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut map = BTreeMap::new();
        for (&id, c) in &self.conns {
            let extra = reply.filter(|(conn, _)| *conn == id).map(|(_, m)| m);
            let Some(pending) = self.core.pending(id, extra) else {
                continue; // cut off
            };
            let (spec, ring, unique_id) = match &c.transport {
                Transport::Socket(s) => (
                    ConnSpec::Socket(SocketConn {
                        socket_fd: s.as_raw_fd(),
                    }),
                    None,
                    None,
                ),
                Transport::Ring { port, domid, .. } => (
                    ConnSpec::Ring(RingConn {
                        domid: *domid,
                        tdomid: self
                            .core
                            .engine()
                            .domain_target(*domid)
                            .unwrap_or(DOMID_INVALID),
                        evtchn: port.get(),
                    }),
                    self.core
                        .engine()
                        .domain_ring(*domid)
                        .map(|(mfn, remote_port)| RingLocation { mfn, remote_port }),
                    unique.get(domid).copied(),
                ),
            };
            map.insert(id, id);
            records.push(Record::Connection(ConnectionData {
                conn_id: id,
                spec,
                in_data: pending.in_data,
                out_resp_len: pending.out_resp_len,
                out_data: pending.out_data,
                unique_id,
                ring,
            }));
        }
        records.extend(self.core.export_records(&map));
        Stream {
            header: StreamHeader {
                version,
                endian: if cfg!(target_endian = "big") {
                    Endian::Big
                } else {
                    Endian::Little
                },
            },
            records,
        }
    }

    /// The descriptors the new binary inherits: the listening socket, the
    /// event-channel handle and every client socket.
    fn inherited_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd(), self.platform.evtchn.handle_fd()];
        fds.extend(self.conns.values().filter_map(|c| match &c.transport {
            Transport::Socket(s) => Some(s.as_raw_fd()),
            Transport::Ring { .. } => None,
        }));
        fds
    }

    /// Writes the final state and execs the new binary. Returns only if
    /// that failed, with why; the daemon is then as it was.
    fn hand_over(&mut self, session: &Session, header: Header, version: Version) -> String {
        let t0 = Instant::now();
        let ok = Message {
            header: Header::new(MsgType::Control, header.req_id, header.tx_id, 3),
            payload: b"OK\0".to_vec(),
        };
        let size = match self.write_state(version, Some((session.conn, &ok))) {
            Ok(n) => n,
            Err(e) => return format!("cannot write the state: {e}"),
        };
        tracing::info!(
            "live-update: wrote {size} bytes of state in {} ms; exec {}",
            t0.elapsed().as_millis(),
            session.binary.display()
        );
        let fds = self.inherited_fds();
        let args = new_args(&self.exec_args, session.cmdline.as_deref());
        let argv: Result<Vec<CString>, _> = std::iter::once(session.binary.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| CString::new(a.as_bytes()))
            .collect();
        let Ok(argv) = argv else {
            return "an argument contains a NUL byte".to_string();
        };
        // The new process binds VIRQ_DOM_EXC itself on the inherited handle
        // (and checks every domain once restored, for deaths in between).
        let virq = self.virq.take();
        if let Some(port) = virq {
            if let Err(e) = self.platform.evtchn.unbind(port) {
                tracing::warn!("live-update: unbinding VIRQ_DOM_EXC failed: {e}");
            }
        }
        self.core.record(&BoundaryEvent::HandOver);
        self.log_recording_totals();
        let mut why = None;
        for &fd in &fds {
            if let Err(e) = set_cloexec(fd, false) {
                why = Some(format!("cannot pass descriptor {fd} down: {e}"));
                break;
            }
        }
        if why.is_none() {
            let e = nix::unistd::execv(&argv[0], &argv).unwrap_err();
            why = Some(format!(
                "Error activating new binary {}: {e}",
                session.binary.display()
            ));
        }
        // Still here: undo.
        for &fd in &fds {
            let _ = set_cloexec(fd, true);
        }
        if virq.is_some() {
            match self.platform.evtchn.bind_virq(VIRQ_DOM_EXC) {
                Ok(port) => self.virq = Some(port),
                Err(e) => tracing::warn!("cannot bind VIRQ_DOM_EXC again ({e})"),
            }
        }
        why.unwrap_or_default()
    }

    /// The new process's side: takes over the descriptors and state of
    /// `stream`, written by the daemon that exec'd us (this one or C
    /// xenstored).
    pub fn restore(
        engine: Engine,
        platform: Platform,
        config: &ShellConfig,
        bytes: &[u8],
        stream: &Stream,
    ) -> Result<(Self, RestoreSummary), RestoreFailure> {
        let t0 = Instant::now();
        let global = stream.global();
        let listener = match global.map(|g| g.rw_socket_fd) {
            Some(fd) if is_listening_socket(fd) => {
                // SAFETY: the old process passed this descriptor down for its
                // listening socket (GLOBAL_DATA); it is open, a listening
                // socket, and nothing else in this process owns it.
                let l = unsafe { UnixListener::from_raw_fd(fd) };
                let _ = set_cloexec(fd, true);
                l.set_nonblocking(true).map_err(RestoreFailure::Listener)?;
                l
            }
            other => {
                tracing::warn!(
                    "live update: no listening socket passed down ({other:?}); binding {} again",
                    config.socket.display()
                );
                super::bind_listener(&config.socket).map_err(|source| RestoreFailure::Serve {
                    path: config.socket.clone(),
                    source,
                })?
            }
        };
        let mut daemon = Self::with_listener(engine, platform, config, listener, true)
            .map_err(RestoreFailure::Setup)?;
        let mut summary = RestoreSummary::default();
        let alive: Option<BTreeMap<DomId, Option<u64>>> = daemon.platform.dominfo_list().map(|l| {
            l.into_iter()
                .filter(|d| !d.dying)
                .map(|d| (d.domid, d.unique_id))
                .collect()
        });
        let mut outcomes: Vec<(u32, Outcome)> = Vec::new();
        for record in &stream.records {
            let Record::Connection(c) = record else {
                continue;
            };
            match &c.spec {
                ConnSpec::Socket(s) => {
                    if !is_socket(s.socket_fd) {
                        tracing::warn!(
                            "live update: connection {}: descriptor {} is not an open socket; dropped",
                            c.conn_id,
                            s.socket_fd
                        );
                        outcomes.push((c.conn_id, Outcome::Dropped));
                        continue;
                    }
                    // SAFETY: the old process passed this descriptor down for
                    // this client (CONNECTION_DATA); it is an open socket and
                    // only this record names it (the parser refuses a
                    // descriptor named twice).
                    let stream = unsafe { UnixStream::from_raw_fd(s.socket_fd) };
                    let _ = set_cloexec(s.socket_fd, true);
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!("live update: connection {}: {e}; dropped", c.conn_id);
                        outcomes.push((c.conn_id, Outcome::Dropped));
                        continue;
                    }
                    let id = daemon.alloc_conn();
                    daemon
                        .conns
                        .insert(id, Conn::new(Transport::Socket(stream)));
                    outcomes.push((c.conn_id, Outcome::Socket(id)));
                    summary.sockets += 1;
                }
                ConnSpec::Ring(r) => {
                    let replaced = match (&alive, c.unique_id) {
                        (Some(alive), Some(uid)) if r.domid != 0 => alive
                            .get(&r.domid)
                            .is_none_or(|&now| now.is_some_and(|now| now != uid)),
                        (Some(alive), None) if r.domid != 0 => !alive.contains_key(&r.domid),
                        _ => false,
                    };
                    let outcome = match (replaced, daemon.restore_ring(r, c.ring)) {
                        (false, Ok(id)) => Outcome::Ring(id),
                        (_, result) => {
                            if let Err(e) = &result {
                                tracing::warn!("live update: domain {}: {e}; released", r.domid);
                            }
                            if let Ok(id) = result {
                                daemon.drop_transport(id);
                            }
                            // Registered so that its records restore; then
                            // released as a dead domain.
                            summary.gone += 1;
                            Outcome::Gone(daemon.alloc_conn())
                        }
                    };
                    outcomes.push((c.conn_id, outcome));
                    summary.rings += 1;
                }
            }
        }
        let report = daemon.core.restore(bytes, stream, &outcomes)?;
        summary.nodes = report.nodes;
        summary.watches = report.watches;
        for name in &report.unknown_quotas {
            tracing::info!("live update: quota {name:?} is not known here; ignored");
        }
        daemon.do_actions();
        for id in report.bad_input {
            tracing::warn!(
                "live update: connection {id}: its pending input does not decode; closed"
            );
            daemon.close(id);
        }
        let rings: Vec<(ConnId, Port)> = daemon
            .conns
            .iter()
            .filter_map(|(&id, c)| match &c.transport {
                Transport::Ring { port, .. } => Some((id, *port)),
                Transport::Socket(_) => None,
            })
            .collect();
        for (id, port) in rings {
            // The guest may have written while nobody read, or wait for
            // space we made: look, and tell it.
            daemon.dirty.insert(id);
            daemon.notify(port);
        }
        let sockets: Vec<ConnId> = daemon.conns.keys().copied().collect();
        for id in sockets {
            daemon.dirty.insert(id);
            daemon.update_interest(id);
        }
        daemon.domains_changed();
        daemon.settle();
        tracing::info!(
            "live-update: restored {} nodes, {} watches, {} socket and {} ring connections ({} gone) in {} ms",
            summary.nodes,
            summary.watches,
            summary.sockets,
            summary.rings,
            summary.gone,
            t0.elapsed().as_millis()
        );
        Ok((daemon, summary))
    }

    /// Maps a restored ring again and gets its port: the inherited handle
    /// still has it bound; else it is bound anew from the remote port.
    fn restore_ring(
        &mut self,
        r: &RingConn,
        loc: Option<RingLocation>,
    ) -> Result<ConnId, RingRestoreError> {
        let domid = r.domid;
        let (page, remote_port) =
            if domid == 0 && loc.is_none() {
                let local = self
                    .platform
                    .mapper
                    .map_local_xenstore()
                    .map_err(RingRestoreError::LocalRing)?;
                (local.page, Some(local.port.get()))
            } else {
                let page =
                    match self
                        .platform
                        .mapper
                        .map_grant(domid, GNTTAB_RESERVED_XENSTORE)
                    {
                        Ok(page) => page,
                        Err(grant_err) => match loc {
                            Some(l) => self.platform.mapper.map_foreign(domid, l.mfn).map_err(
                                |foreign| RingRestoreError::Map {
                                    grant: grant_err,
                                    mfn: l.mfn,
                                    foreign,
                                },
                            )?,
                            None => return Err(RingRestoreError::NoMfn(grant_err)),
                        },
                    };
                (page, loc.map(|l| l.remote_port))
            };
        let port = if self.platform.evtchn_inherited {
            Port::new(r.evtchn)
        } else {
            let remote = remote_port.ok_or(RingRestoreError::NoRemotePort)?;
            self.platform
                .evtchn
                .bind_interdomain(domid, Port::new(remote))
                .map_err(|source| RingRestoreError::Bind { remote, source })?
        };
        Ok(self.add_ring(page, port, domid))
    }
}

fn is_socket(fd: RawFd) -> bool {
    fd >= 0
        && fd_is_open(fd)
        && nix::sys::stat::fstat(
            // SAFETY: checked open just above; borrowed for this call only.
            unsafe { BorrowedFd::borrow_raw(fd) },
        )
        .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFSOCK)
}

fn is_listening_socket(fd: RawFd) -> bool {
    is_socket(fd)
        && nix::sys::socket::getsockopt(
            // SAFETY: checked open just above; borrowed for this call only.
            &unsafe { BorrowedFd::borrow_raw(fd) },
            nix::sys::socket::sockopt::AcceptConn,
        )
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
