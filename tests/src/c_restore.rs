//! Xen 4.17's C xenstored restoring a live-update stream under the shim.
//!
//! [`CRestore::start`] does what a live update's `exec` does for C: it
//! writes the stream to `state_dump` in a fresh run directory
//! (`XENSTORED_RUNDIR`), lays every file descriptor the stream names at
//! exactly its number with close-on-exec cleared, and starts
//! `/usr/lib/xen-4.17/bin/xenstored -U -N` under the project's shim
//! (`tests/c-shim/xen-shim.c`, see [`crate::c_daemon`]). The descriptors
//! ([`FdLayout`]):
//!
//! * GLOBAL's `rw-socket-fd`: a listening Unix socket bound at
//!   `RUNDIR/socket`, which Xen's tools reach through `XENSTORED_PATH`
//!   ([`CRestore::tool`]);
//! * GLOBAL's `evtchn-fd`: the read end of a pipe whose write end the
//!   harness keeps, so no event ever arrives (the shim takes whatever fd C
//!   hands to `xenevtchn_fdopen` as its event-channel device);
//! * each socket connection's `socket-fd`: one end of a socket pair; the
//!   harness keeps the other ([`CRestore::conn`]), so the test is that
//!   client and reads what C sends it (the queued output, the replies to
//!   held requests, watch events).
//!
//! Ring connections need no descriptor: the shim maps dom0's ring from
//! `RUNDIR/xsd_kva` (a page of zeros it creates) and a guest's through a
//! fake grant map (a fresh page), so C restores both with no ring traffic.
//!
//! C unlinks `state_dump` once it has read the whole stream
//! ([`CRestore::state_taken`]); every failure to restore is fatal, and
//! [`CRestore::wait_exit`] gives the exit status and what C printed.
//! [`c417_negatives`] lists streams C 4.17 dies on, with how it dies
//! ([`Expect`]), for this crate's tests and for a writer's pre-flight check.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use xenring::{DomId, Header, MsgType, Perm, PermKind};
use xenstored_lite::migration::{
    ConnSpec, ConnectionData, Endian, GlobalData, MigrationError, NodeData, NodePerm, Record,
    RingConn, SocketConn, Stream, Version, WatchData, WriteError, DOMID_INVALID,
};

use crate::c_daemon::{build_shim, CDaemonUnavailable, C_XENSTORED};
use crate::{Proc, LIMIT};

/// `SIGSEGV` on Linux: how C 4.17 dies on a stream with no dom0 ring
/// record before its data.
pub const SIGSEGV: i32 = 11;

/// What a file descriptor laid for C stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FdRole {
    /// GLOBAL's `rw-socket-fd`: the listening socket.
    Listener,
    /// GLOBAL's `evtchn-fd`: the event-channel device.
    Evtchn,
    /// The `socket-fd` of socket connection `conn-id`.
    Socket(u32),
}

impl fmt::Display for FdRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdRole::Listener => f.write_str("GLOBAL_DATA's rw-socket-fd"),
            FdRole::Evtchn => f.write_str("GLOBAL_DATA's evtchn-fd"),
            FdRole::Socket(id) => write!(f, "the socket-fd of socket connection {id}"),
        }
    }
}

/// Why a restore could not be set up (the daemon never started).
#[derive(Debug, thiserror::Error)]
pub enum CRestoreError {
    /// C xenstored cannot run here: the test skips ([`CRestore::start_or_skip`]).
    #[error(transparent)]
    Unavailable(#[from] CDaemonUnavailable),
    /// The state is not a stream the layout can be read from.
    #[error("cannot read the file descriptors out of the state: {0}")]
    Parse(#[from] MigrationError),
    /// A rewritten stream cannot be written back.
    #[error("cannot write the stream with the harness's descriptors: {0}")]
    Write(#[from] WriteError),
    /// A descriptor would replace C's standard input, output or error.
    #[error("{role} is fd {fd}, one of C's standard streams (0-2)")]
    StandardFd {
        /// What it stands for.
        role: FdRole,
        /// The number.
        fd: RawFd,
    },
    /// Two roles share one number.
    #[error("fd {fd} is given both to {first} and to {second}")]
    SharedFd {
        /// The number.
        fd: RawFd,
        /// The role that had it first.
        first: FdRole,
        /// The other.
        second: FdRole,
    },
    /// The stream has a socket connection the layout gives no descriptor.
    #[error("socket connection {conn_id} has no descriptor in the layout")]
    NoSocketFd {
        /// The connection.
        conn_id: u32,
    },
    /// [`FdLayout::apply`] on a stream without GLOBAL_DATA.
    #[error("the stream has no GLOBAL_DATA record to give the descriptors to")]
    NoGlobal,
    /// A descriptor, file or directory could not be made.
    #[error("cannot prepare {what} for C xenstored: {source}")]
    Setup {
        /// What it was.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> CRestoreError {
    move |source| CRestoreError::Setup { what, source }
}

/// Where each descriptor a stream names goes in C's process: GLOBAL's two
/// and every socket connection's. A negative number is laid nowhere (C
/// gets whatever that number is: nothing). Numbers 0-2 are refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FdLayout {
    /// GLOBAL's `rw-socket-fd`: where the listening socket goes.
    pub rw_socket_fd: RawFd,
    /// GLOBAL's `evtchn-fd`: where the event-channel device goes.
    pub evtchn_fd: RawFd,
    /// `(conn-id, socket-fd)` of each socket connection, in stream order.
    pub sockets: Vec<(u32, RawFd)>,
}

impl FdLayout {
    /// No descriptors at all (for a state C is not meant to find).
    pub fn none() -> Self {
        Self {
            rw_socket_fd: -1,
            evtchn_fd: -1,
            sockets: Vec::new(),
        }
    }

    /// The numbers as the stream has them: GLOBAL's (or none without
    /// GLOBAL) and each socket connection's.
    pub fn of_stream(stream: &Stream) -> Self {
        let global = stream.global().unwrap_or(GlobalData {
            rw_socket_fd: -1,
            evtchn_fd: -1,
        });
        Self {
            rw_socket_fd: global.rw_socket_fd,
            evtchn_fd: global.evtchn_fd,
            sockets: socket_conns(stream)
                .map(|(id, s)| (id, s.socket_fd))
                .collect(),
        }
    }

    /// [`FdLayout::of_stream`] of the stream in `state`; for an empty state
    /// (no `state_dump` at all) [`FdLayout::none`].
    pub fn of_state(state: &[u8]) -> Result<Self, CRestoreError> {
        if state.is_empty() {
            return Ok(Self::none());
        }
        Ok(Self::of_stream(&Stream::parse(state)?))
    }

    /// Numbers from `first` upwards: the listener, the event channel, then
    /// each of the stream's socket connections in stream order.
    pub fn sequential(first: RawFd, stream: &Stream) -> Self {
        let mut next = first;
        let mut take = || {
            let fd = next;
            next = next.saturating_add(1);
            fd
        };
        let rw_socket_fd = take();
        let evtchn_fd = take();
        let sockets = socket_conns(stream).map(|(id, _)| (id, take())).collect();
        Self {
            rw_socket_fd,
            evtchn_fd,
            sockets,
        }
    }

    /// Rewrites the stream's GLOBAL_DATA and socket connections to these
    /// numbers, so that a stream built with the migration types can be
    /// handed over as is.
    pub fn apply(&self, stream: &mut Stream) -> Result<(), CRestoreError> {
        let mut global_seen = false;
        for record in &mut stream.records {
            match record {
                Record::Global(g) => {
                    g.rw_socket_fd = self.rw_socket_fd;
                    g.evtchn_fd = self.evtchn_fd;
                    global_seen = true;
                }
                Record::Connection(ConnectionData {
                    conn_id,
                    spec: ConnSpec::Socket(s),
                    ..
                }) => {
                    s.socket_fd = self
                        .socket_fd(*conn_id)
                        .ok_or(CRestoreError::NoSocketFd { conn_id: *conn_id })?;
                }
                _ => {}
            }
        }
        if global_seen {
            Ok(())
        } else {
            Err(CRestoreError::NoGlobal)
        }
    }

    /// [`FdLayout::apply`] on a copy, written out.
    pub fn applied(&self, stream: &Stream) -> Result<Vec<u8>, CRestoreError> {
        let mut stream = stream.clone();
        self.apply(&mut stream)?;
        Ok(stream.to_bytes()?)
    }

    /// The number of socket connection `conn_id`.
    pub fn socket_fd(&self, conn_id: u32) -> Option<RawFd> {
        self.sockets
            .iter()
            .find(|(id, _)| *id == conn_id)
            .map(|(_, fd)| *fd)
    }

    /// Every role laid somewhere (number >= 0), with its number; refuses
    /// numbers 0-2 and numbers given twice.
    pub fn roles(&self) -> Result<Vec<(FdRole, RawFd)>, CRestoreError> {
        let all = [
            (FdRole::Listener, self.rw_socket_fd),
            (FdRole::Evtchn, self.evtchn_fd),
        ]
        .into_iter()
        .chain(
            self.sockets
                .iter()
                .map(|&(id, fd)| (FdRole::Socket(id), fd)),
        );
        let mut out: Vec<(FdRole, RawFd)> = Vec::new();
        for (role, fd) in all.filter(|&(_, fd)| fd >= 0) {
            if fd <= 2 {
                return Err(CRestoreError::StandardFd { role, fd });
            }
            if let Some(&(first, _)) = out.iter().find(|&&(_, f)| f == fd) {
                return Err(CRestoreError::SharedFd {
                    fd,
                    first,
                    second: role,
                });
            }
            out.push((role, fd));
        }
        Ok(out)
    }
}

fn socket_conns(stream: &Stream) -> impl Iterator<Item = (u32, SocketConn)> + '_ {
    stream.records.iter().filter_map(|r| match r {
        Record::Connection(ConnectionData {
            conn_id,
            spec: ConnSpec::Socket(s),
            ..
        }) => Some((*conn_id, *s)),
        _ => None,
    })
}

/// How C ended: its status and everything it printed.
#[derive(Debug, Clone)]
pub struct CExit {
    /// The exit status.
    pub status: ExitStatus,
    /// Its standard output and error, interleaved as written.
    pub log: String,
}

/// How C 4.17 dies on a stream it cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It exits with a non-zero status after printing `FATAL: <text>`
    /// (possibly followed by `: <errno text>`).
    Fatal(&'static str),
    /// It is killed by this signal (no message).
    Signal(i32),
}

impl Expect {
    /// Whether `exit` is this death.
    pub fn matches(&self, exit: &CExit) -> bool {
        match *self {
            Expect::Fatal(text) => {
                exit.status.code().is_some_and(|c| c != 0)
                    && exit.log.contains(&format!("FATAL: {text}"))
            }
            Expect::Signal(sig) => exit.status.signal() == Some(sig),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Fatal(text) => write!(f, "a non-zero exit after `FATAL: {text}`"),
            Expect::Signal(sig) => write!(f, "death by signal {sig}"),
        }
    }
}

/// A C xenstored started with `-U` on a given state; killed when dropped.
#[derive(Debug)]
pub struct CRestore {
    /// Its run directory (`XENSTORED_RUNDIR`, also the shim's directory).
    pub rundir: PathBuf,
    /// The path its listening socket is bound at (`XENSTORED_PATH` for
    /// the tools).
    pub socket: PathBuf,
    /// Its standard output and error.
    pub log: PathBuf,
    /// The descriptors it was given.
    pub layout: FdLayout,
    clients: Vec<(u32, UnixStream)>,
    _evtchn_writer: OwnedFd,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl CRestore {
    /// Starts `xenstored -U -N EXTRA_ARGS` under the shim on `state`
    /// (written to `state_dump`; an empty state writes no file), with the
    /// descriptors of `layout` laid at their numbers. Returns once it is
    /// started, not once it has restored ([`CRestore::wait_restored`]).
    pub fn start(
        state: &[u8],
        layout: FdLayout,
        extra_args: &[&str],
    ) -> Result<Self, CRestoreError> {
        if !Path::new(C_XENSTORED).exists() {
            return Err(CDaemonUnavailable::NotInstalled.into());
        }
        let roles = layout.roles()?;
        let dir = tempfile::tempdir().map_err(setup("a temporary directory"))?;
        let shim = build_shim(&dir.path().join("shim"))?;
        let rundir = dir.path().join("run");
        std::fs::create_dir_all(&rundir).map_err(setup("its run directory"))?;
        if !state.is_empty() {
            std::fs::write(rundir.join("state_dump"), state).map_err(setup("state_dump"))?;
        }
        let socket = rundir.join("socket");
        let listener = UnixListener::bind(&socket).map_err(setup("its listening socket"))?;
        let (evtchn_reader, evtchn_writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| CRestoreError::Setup {
                what: "its event-channel pipe",
                source: e.into(),
            })?;
        // What C gets for each role, and what the harness keeps.
        let mut given: Vec<(OwnedFd, RawFd)> = Vec::new();
        let mut clients = Vec::new();
        let lowest_free = roles.iter().map(|&(_, fd)| fd).max().unwrap_or(2) + 1;
        let mut listener = Some(OwnedFd::from(listener));
        let mut evtchn_reader = Some(evtchn_reader);
        for &(role, fd) in &roles {
            let source = match role {
                FdRole::Listener => listener.take(),
                FdRole::Evtchn => evtchn_reader.take(),
                FdRole::Socket(id) => {
                    let (ours, theirs) =
                        UnixStream::pair().map_err(setup("a connection's socket pair"))?;
                    ours.set_read_timeout(Some(LIMIT))
                        .map_err(setup("a connection's socket pair"))?;
                    ours.set_write_timeout(Some(LIMIT))
                        .map_err(setup("a connection's socket pair"))?;
                    clients.push((id, ours));
                    Some(OwnedFd::from(theirs))
                }
            };
            let Some(source) = source else { continue };
            given.push((above(&source, lowest_free)?, fd));
        }
        let log = dir.path().join("c-xenstored.log");
        let out = std::fs::File::create(&log).map_err(setup("its log"))?;
        let err = out.try_clone().map_err(setup("its log"))?;
        let moves: Vec<(RawFd, RawFd)> = given
            .iter()
            .map(|(source, target)| (source.as_raw_fd(), *target))
            .collect();
        let mut cmd = Command::new(C_XENSTORED);
        cmd.arg("-U")
            .arg("-N")
            .args(extra_args)
            .current_dir(dir.path())
            .env("XENSTORED_RUNDIR", &rundir)
            .env("XSL_SHIM_DIR", &rundir)
            .env("LD_PRELOAD", &shim)
            .env_remove("XENSTORED_PATH")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let lay_fds = move || {
            // No core file for the crashes the negatives expect.
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
            for &(source, target) in &moves {
                // SAFETY: `source` is open in this child (the parent holds
                // it until after the spawn) and above every target, so no
                // earlier dup2 closed it; `target` (>= 3, see `roles`) is a
                // number this child may take over: what it held was a copy
                // of a parent's descriptor or nothing. The returned OwnedFd
                // is released at once, so the new descriptor (without
                // close-on-exec, as dup2 makes it) stays open for C.
                let laid = unsafe {
                    nix::unistd::dup2_raw(std::os::fd::BorrowedFd::borrow_raw(source), target)
                }?;
                let _ = std::os::fd::IntoRawFd::into_raw_fd(laid);
            }
            Ok(())
        };
        // SAFETY: `lay_fds` runs in the forked child before exec and makes
        // only async-signal-safe calls (setrlimit, dup2); it allocates
        // nothing and touches no lock.
        unsafe {
            cmd.pre_exec(lay_fds);
        }
        let child = cmd
            .spawn()
            .map_err(|e| CRestoreError::Unavailable(CDaemonUnavailable::Spawn(e)))?;
        // C has its copies; the harness's would keep the listener accepting
        // connections and the sockets open after C is gone.
        drop(given);
        Ok(Self {
            rundir,
            socket,
            log,
            layout,
            clients,
            _evtchn_writer: evtchn_writer,
            proc: Proc { child },
            _dir: dir,
        })
    }

    /// [`CRestore::start`], or `None` after reporting the skip
    /// ([`crate::c_daemon::skip`]) when C xenstored cannot run here. A
    /// state or layout the harness cannot set up fails the test.
    pub fn start_or_skip(state: &[u8], layout: FdLayout, extra_args: &[&str]) -> Option<Self> {
        match Self::start(state, layout, extra_args) {
            Ok(c) => Some(c),
            Err(CRestoreError::Unavailable(why)) => {
                crate::c_daemon::skip(&why.to_string());
                None
            }
            Err(e) => panic!("setting up C xenstored's restore: {e}"),
        }
    }

    /// Whether C has taken the state: `state_dump` is gone (C unlinks it
    /// after reading the whole stream).
    pub fn state_taken(&self) -> bool {
        !self.rundir.join("state_dump").exists()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Waits (at most [`LIMIT`]) until C has taken the state or ended;
    /// `true` if it took the state and still runs.
    pub fn wait_restored(&mut self) -> bool {
        let deadline = Instant::now() + LIMIT;
        while !self.state_taken() && self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.state_taken() && self.running()
    }

    /// What C has printed so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits (at most [`LIMIT`]) for C to end; `None` if it still runs.
    pub fn wait_exit(&mut self) -> Option<CExit> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                return Some(CExit {
                    status,
                    log: self.log_text(),
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The test's end of socket connection `conn_id` (reads and writes
    /// give up after [`LIMIT`]).
    pub fn conn(&self, conn_id: u32) -> Option<&UnixStream> {
        self.clients
            .iter()
            .find(|(id, _)| *id == conn_id)
            .map(|(_, s)| s)
    }

    /// Reads exactly `n` octets from socket connection `conn_id` (within
    /// [`LIMIT`]).
    pub fn read_exact(&self, conn_id: u32, n: usize) -> std::io::Result<Vec<u8>> {
        let mut s = self.conn(conn_id).ok_or_else(|| no_conn(conn_id))?;
        let mut buf = vec![0; n];
        s.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads one whole message (header and payload) from socket connection
    /// `conn_id`, as raw octets.
    pub fn read_msg(&self, conn_id: u32) -> std::io::Result<Vec<u8>> {
        let mut msg = self.read_exact(conn_id, xenring::wire::HEADER_SIZE)?;
        let mut raw = [0; xenring::wire::HEADER_SIZE];
        raw.copy_from_slice(&msg);
        let len = usize::try_from(Header::from_bytes(&raw).len)
            .map_err(|_| std::io::Error::other("payload length beyond usize"))?;
        msg.extend(self.read_exact(conn_id, len)?);
        Ok(msg)
    }

    /// Whatever arrives on socket connection `conn_id` within `wait`
    /// (empty if nothing does).
    pub fn read_for(&self, conn_id: u32, wait: Duration) -> std::io::Result<Vec<u8>> {
        let s = self.conn(conn_id).ok_or_else(|| no_conn(conn_id))?;
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        s.set_nonblocking(true)?;
        let result = loop {
            let mut buf = [0; 4096];
            match (&mut &*s).read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        break Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => break Err(e),
            }
        };
        s.set_nonblocking(false)?;
        result.map(|()| got)
    }

    /// Sends raw octets on socket connection `conn_id`.
    pub fn send(&self, conn_id: u32, bytes: &[u8]) -> std::io::Result<()> {
        let mut s = self.conn(conn_id).ok_or_else(|| no_conn(conn_id))?;
        s.write_all(bytes)
    }

    /// Runs a command with `XENSTORED_PATH` set to C's socket.
    pub fn tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        crate::run_tool(&self.socket, program, args)
    }
}

fn no_conn(conn_id: u32) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("the harness holds no socket for connection {conn_id}"),
    )
}

/// A close-on-exec duplicate of `fd` numbered `lowest` or above.
fn above(fd: &OwnedFd, lowest: RawFd) -> Result<OwnedFd, CRestoreError> {
    let raw = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(lowest))
        .map_err(|e| CRestoreError::Setup {
            what: "a descriptor above the laid numbers",
            source: e.into(),
        })?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) succeeded, so `raw` is a new
    // descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// One message as raw octets: header (host byte order) and payload.
pub fn msg(ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = Header::new(ty, req_id, tx_id, len).to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A watch event's octets for `path` and `token`.
pub fn watch_event(path: &str, token: &str) -> Vec<u8> {
    msg(
        MsgType::WatchEvent,
        0,
        0,
        format!("{path}\0{token}\0").as_bytes(),
    )
}

/// A committed NODE_DATA with one permission entry: `owner` with `n`.
pub fn node(path: &str, value: &[u8], owner: DomId) -> Record {
    Record::Node(NodeData {
        conn_id: 0,
        tx_id: 0,
        access: Default::default(),
        perms: vec![NodePerm::new(Perm::new(PermKind::None, owner))],
        path: path.to_string(),
        value: value.to_vec(),
    })
}

/// A ring CONNECTION_DATA with no pending data and no target.
pub fn ring(conn_id: u32, domid: DomId, evtchn: u32) -> Record {
    Record::Connection(ConnectionData {
        conn_id,
        spec: ConnSpec::Ring(RingConn {
            domid,
            tdomid: DOMID_INVALID,
            evtchn,
        }),
        in_data: Vec::new(),
        out_resp_len: 0,
        out_data: Vec::new(),
        unique_id: None,
        ring: None,
    })
}

/// A socket CONNECTION_DATA.
pub fn socket(
    conn_id: u32,
    socket_fd: RawFd,
    in_data: &[u8],
    out_resp_len: u16,
    out_data: &[u8],
) -> Record {
    Record::Connection(ConnectionData {
        conn_id,
        spec: ConnSpec::Socket(SocketConn { socket_fd }),
        in_data: in_data.to_vec(),
        out_resp_len,
        out_data: out_data.to_vec(),
        unique_id: None,
        ring: None,
    })
}

/// A WATCH_DATA.
pub fn watch(conn_id: u32, wpath: &str, token: &str) -> Record {
    Record::Watch(WatchData {
        conn_id,
        wpath: wpath.to_string(),
        token: token.as_bytes().to_vec(),
    })
}

/// The nodes every 4.17 store has, owned by dom0: `/`, `/tool`,
/// `/tool/xenstored`, `@releaseDomain`, `@introduceDomain`.
pub fn base_nodes() -> Vec<Record> {
    [
        "@releaseDomain",
        "@introduceDomain",
        "/",
        "/tool",
        "/tool/xenstored",
    ]
    .into_iter()
    .map(|p| node(p, b"", 0))
    .collect()
}

/// A little-endian stream of `version` with these records.
pub fn stream(version: Version, records: Vec<Record>) -> Stream {
    Stream {
        header: xenstored_lite::migration::Header {
            version,
            endian: Endian::Little,
        },
        records,
    }
}

/// The numbers [`c417_negatives`]' streams give their descriptors:
/// listener 3, event channel 4, socket connection 2 at 5.
pub const NEGATIVE_FDS: (RawFd, RawFd, RawFd) = (3, 4, 5);

/// A stream C 4.17 takes: GLOBAL ([`NEGATIVE_FDS`]), dom0's ring (conn 1,
/// evtchn 0), a socket connection (conn 2) with a complete READ of `/a`
/// pending, its watch on `/a`, and [`base_nodes`] with `/a` = `alpha`.
/// The negatives are this stream with one rule broken.
pub fn c417_accepted() -> Stream {
    let (listener, evtchn, sock) = NEGATIVE_FDS;
    let mut records = vec![
        Record::Global(GlobalData {
            rw_socket_fd: listener,
            evtchn_fd: evtchn,
        }),
        ring(1, 0, 0),
        socket(2, sock, &msg(MsgType::Read, 1, 0, b"/a\0"), 0, &[]),
        watch(2, "/a", "tok"),
    ];
    records.extend(base_nodes());
    records.push(node("/a", b"alpha", 0));
    stream(Version::V1, records)
}

/// Streams C 4.17 dies on after the exec, each with its name and how it
/// dies (from the research note, each checked by `tests/tests/c_restore.rs`):
/// an empty state stands for no `state_dump` at all. Lay their descriptors
/// with [`FdLayout::of_state`].
pub fn c417_negatives() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let bytes = |s: &Stream| match s.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("a negative stream cannot be written: {e}"),
    };
    let mut v2 = c417_accepted();
    v2.header.version = Version::V2;
    let mut socket_first = c417_accepted();
    socket_first.records.retain(|r| {
        !matches!(
            r,
            Record::Connection(ConnectionData {
                spec: ConnSpec::Ring(_),
                ..
            })
        )
    });
    let mut unknown_owner = c417_accepted();
    unknown_owner.records.push(node("/a/b", b"guest's", 9));
    vec![
        (
            "version 2 header",
            bytes(&v2),
            Expect::Fatal("Unknown record identifier"),
        ),
        (
            "socket record first, no dom0 ring record",
            bytes(&socket_first),
            Expect::Signal(SIGSEGV),
        ),
        (
            "node owned by an unknown domain",
            bytes(&unknown_owner),
            Expect::Fatal("write node error restoring node"),
        ),
        (
            "no state file",
            Vec::new(),
            Expect::Fatal("No state found after live-update"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_rewrites_global_and_socket_fds_and_nothing_else() {
        let mut s = c417_accepted();
        let before = s.clone();
        let layout = FdLayout {
            rw_socket_fd: 10,
            evtchn_fd: 11,
            sockets: vec![(2, 12)],
        };
        layout.apply(&mut s).expect("apply");
        assert_eq!(FdLayout::of_stream(&s), layout);
        assert_eq!(s.records.len(), before.records.len());
        for (a, b) in s.records.iter().zip(&before.records) {
            match (a, b) {
                (Record::Global(_), Record::Global(_)) => {}
                (
                    Record::Connection(ConnectionData {
                        spec: ConnSpec::Socket(_),
                        in_data: x,
                        ..
                    }),
                    Record::Connection(ConnectionData { in_data: y, .. }),
                ) => assert_eq!(x, y),
                _ => assert_eq!(a, b),
            }
        }
        let bytes = layout.applied(&before).expect("applied");
        assert_eq!(FdLayout::of_state(&bytes).expect("of_state"), layout);
    }

    #[test]
    fn a_layout_without_a_socket_or_global_is_refused() {
        let layout = FdLayout {
            rw_socket_fd: 10,
            evtchn_fd: 11,
            sockets: vec![(7, 12)],
        };
        assert!(matches!(
            layout.apply(&mut c417_accepted()),
            Err(CRestoreError::NoSocketFd { conn_id: 2 })
        ));
        let mut no_global = c417_accepted();
        no_global.records.remove(0);
        let layout = FdLayout::sequential(20, &no_global);
        assert_eq!(layout.sockets, vec![(2, 22)]);
        assert!(matches!(
            layout.apply(&mut no_global),
            Err(CRestoreError::NoGlobal)
        ));
    }

    #[test]
    fn standard_and_shared_numbers_are_refused() {
        let mut l = FdLayout::sequential(3, &c417_accepted());
        assert_eq!(l.roles().expect("roles").len(), 3);
        l.sockets[0].1 = 3;
        assert!(matches!(
            l.roles(),
            Err(CRestoreError::SharedFd {
                fd: 3,
                first: FdRole::Listener,
                second: FdRole::Socket(2)
            })
        ));
        l.evtchn_fd = 2;
        assert!(matches!(
            l.roles(),
            Err(CRestoreError::StandardFd {
                role: FdRole::Evtchn,
                fd: 2
            })
        ));
        assert!(FdLayout::none().roles().expect("none").is_empty());
    }

    #[test]
    fn the_negatives_are_the_accepted_stream_with_one_rule_broken() {
        let ok = c417_accepted();
        let negatives = c417_negatives();
        assert_eq!(negatives.len(), 4);
        for (name, bytes, _) in &negatives {
            if bytes.is_empty() {
                continue;
            }
            let s = Stream::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(FdLayout::of_stream(&s), FdLayout::of_stream(&ok), "{name}");
            assert_ne!(s, ok, "{name}");
        }
    }

    fn exit(code: i32, log: &str) -> CExit {
        CExit {
            status: ExitStatus::from_raw(code),
            log: log.to_string(),
        }
    }

    #[test]
    fn expectations_match_only_their_death() {
        let fatal = Expect::Fatal("No state found");
        assert!(fatal.matches(&exit(1 << 8, "x\nFATAL: No state found: Success\n")));
        assert!(!fatal.matches(&exit(0, "FATAL: No state found\n")));
        assert!(!fatal.matches(&exit(1 << 8, "FATAL: Unknown record identifier\n")));
        assert!(!fatal.matches(&exit(SIGSEGV, "FATAL: No state found\n")));
        let segv = Expect::Signal(SIGSEGV);
        assert!(segv.matches(&exit(SIGSEGV, "")));
        assert!(!segv.matches(&exit(1 << 8, "")));
    }
}
