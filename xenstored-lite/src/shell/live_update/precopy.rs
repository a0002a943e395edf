//! The pre-copy live update: the store goes over while the daemon serves,
//! and the freeze carries only what changed since, so that the blackout
//! depends on the connections and the change rate, not on the store's
//! size.
//!
//! Between two of our own binaries (the target carries
//! [`PRECOPY_MARKER`](super::target::PRECOPY_MARKER)), once the dry run has
//! succeeded:
//!
//! 1. **Bulk.** A thread writes an image of the committed store as it is
//!    now (`base`, a snapshot of the persistent store: O(1) to take) into a
//!    memory file, while the loop serves on.
//! 2. **Split** (at the end of a loop turn, `shell::split`). This process
//!    — its pid kept — execs the new binary with `--precopy=SOCKET,IMAGE`;
//!    a continuation of the old one, sharing its memory until that exec
//!    and owning it after, goes on serving with everything as it was.
//! 3. **Load.** The new process builds the store from the image and says
//!    `READY` on the socket (or that it could not, and then gets the whole
//!    state at the freeze).
//! 4. **Freeze** (the continuation, at the end of its next turn, between
//!    requests). It does what the classic hand-over does before its exec —
//!    `VIRQ_DOM_EXC` unbound, `HandOver` recorded, the journal synced —
//!    and sends the migration stream without the committed nodes, with
//!    the `OK` to `-s` queued, plus an image of what changed since `base`,
//!    in a memory file; then the listening socket, the event-channel
//!    handle and every client socket in `SCM_RIGHTS` messages, each with
//!    the numbers they had here (the stream names those).
//! 5. **Take-over.** The new process renumbers the stream's descriptors,
//!    applies the change image, restores as after a classic exec (rings
//!    mapped again by grant or mfn; the event channels stay bound, the
//!    handle being the same open file), records both images before the
//!    `Restore` in its journal and recording, says `TOOK`, and serves. The
//!    continuation exits; the new process reaps it.
//!
//! If the new process fails to take the state (`FAIL`), or ends, the
//! continuation takes everything back and serves on (under its own pid),
//! and the asker gets the reason. If the exec fails, the continuation
//! ends before it served and this process carries on. An update with
//! other threads running (a recording's writer), with
//! `XSL_LU_PRECOPY=0` in the daemon's environment, or to a binary without
//! the marker, is a classic one.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use xenring::Header;

use super::handover::{exec_argv, stream_of, HandOverError};
use super::new_args;
use super::session::Session;
use crate::engine::store::Store;
use crate::engine::ConnId;
use crate::migration::{ConnSpec, MigrationError, Record, Stream, Version, WriteError};
use crate::replay::format::Answer;
use crate::replay::format::BoundaryEvent;
use crate::shell::split::{self, ExecPlan};
use crate::shell::Daemon;

/// `XSL_LU_PRECOPY=0` in the old daemon's environment: no pre-copy.
pub const PRECOPY_ENV: &str = "XSL_LU_PRECOPY";

/// For tests: `XSL_LU_PRECOPY_MIN_REQUESTS=N` makes the continuation serve
/// at least N requests after the split before it freezes, so that a test
/// knows changes were made while the store was being copied.
pub const MIN_REQUESTS_ENV: &str = "XSL_LU_PRECOPY_MIN_REQUESTS";

/// The new process's argument: `--precopy=SOCKET,IMAGE` (descriptors).
pub const PRECOPY_ARG: &str = "--precopy";

/// Descriptors per `SCM_RIGHTS` message (the kernel takes at most 253).
const FDS_PER_MESSAGE: usize = 200;

/// How long the continuation waits for `TOOK` after the freeze, and the
/// new process for the freeze after `READY`.
const TAKE_OVER_LIMIT: Duration = Duration::from_secs(300);

const READY: u8 = b'R';
const TOOK: u8 = b'T';
const FAIL: u8 = b'F';
const STATE: u8 = b'S';
const FDS: u8 = b'D';

/// Why the pre-copy failed.
#[derive(Debug, thiserror::Error)]
pub enum PrecopyError {
    /// The argument is not `SOCKET,IMAGE`.
    #[error("{PRECOPY_ARG}={0:?}: not two descriptor numbers")]
    Argument(String),
    /// A descriptor it names is not open.
    #[error("{PRECOPY_ARG}: descriptor {0} is not open")]
    NotOpen(RawFd),
    /// The socket between the two processes failed.
    #[error("the pre-copy socket: {0}")]
    Channel(#[source] io::Error),
    /// The other process closed the socket.
    #[error("the other process ended (the pre-copy socket closed)")]
    Ended,
    /// A message that does not belong here.
    #[error("the pre-copy socket: unexpected message ({0})")]
    Protocol(&'static str),
    /// The other process said the take-over failed.
    #[error("the new process could not take the state over (see its log)")]
    Failed,
    /// A memory file cannot be written or read.
    #[error("a pre-copy image file: {0}")]
    Image(#[source] io::Error),
    /// The stream could not be encoded.
    #[error("cannot encode the stream: {0}")]
    Encode(#[from] WriteError),
    /// The stream does not parse.
    #[error("the stream: {0}")]
    Parse(#[from] MigrationError),
    /// The bulk thread panicked.
    #[error("the thread writing the store image panicked")]
    BulkThread,
}

/// The old process's side of a pre-copy, in its [`Session`].
#[derive(Debug)]
pub(in crate::shell) enum Phase {
    /// The bulk image is being written from `base`.
    Writing {
        base: Store,
        thread: JoinHandle<io::Result<OwnedFd>>,
        header: Header,
        version: Version,
    },
    /// Split: the continuation serves until the new process is `READY`.
    Serving(Serving),
}

/// The continuation's pre-copy state.
#[derive(Debug)]
pub(in crate::shell) struct Serving {
    base: Store,
    sock: OwnedFd,
    header: Header,
    version: Version,
    /// Its copies of the new process's socket end and of the bulk image,
    /// closed once the split is done.
    theirs: [RawFd; 2],
    since: Instant,
    last_log: Instant,
    /// `READY` came (with whether the new process has the store).
    ready: Option<bool>,
    /// The engine's request count at the split.
    requests_at_split: u64,
    /// Requests to serve after the split before the freeze
    /// ([`MIN_REQUESTS_ENV`]; 0 but in tests).
    min_requests: u64,
}

/// The new process's reminder of the old daemon's continuation: reaped
/// at a turn's end once it has ended (killed past [`REAP_LIMIT`]); then
/// `-s` is answered `OK`, so that an update is done only when the old
/// daemon's process is gone.
#[derive(Debug)]
pub(in crate::shell) struct Continuation {
    pid: nix::unistd::Pid,
    answer: Option<(ConnId, Header)>,
    since: Instant,
}

impl Continuation {
    /// The continuation `pid` (0: none known), who to answer.
    pub(super) fn new(pid: u32, answer: Option<(ConnId, Header)>) -> Self {
        Self {
            pid: nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
            answer,
            since: Instant::now(),
        }
    }
}

/// How long the continuation may take to end after `TOOK`.
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// Why an update is a classic one, if it is.
pub(super) fn blocker(target_takes_it: bool) -> Option<String> {
    if std::env::var_os(PRECOPY_ENV).is_some_and(|v| v == "0") {
        return Some(format!("{PRECOPY_ENV}=0"));
    }
    if !target_takes_it {
        return Some("the new binary does not take a pre-copy".into());
    }
    match std::fs::read_dir("/proc/self/task").map(Iterator::count) {
        Ok(1) => None,
        Ok(n) => Some(format!("{n} threads run (a recording's writer?)")),
        Err(e) => Some(format!("cannot count threads: {e}")),
    }
}

impl Daemon {
    /// The dry run succeeded and nothing stands in the way: the bulk image
    /// starts (written by a thread while the loop serves).
    pub(super) fn precopy_begin(
        &mut self,
        session: &mut Session,
        header: Header,
        version: Version,
    ) {
        let base = self.core.engine().store().clone();
        let snapshot = base.clone();
        let dry_state = self.state_path();
        let thread = std::thread::Builder::new()
            .name("lu-bulk".into())
            .spawn(move || {
                crate::shell::os::lower_this_thread();
                // The dry run's (as large as the store: not on the loop).
                let _ = std::fs::remove_file(dry_state);
                split::memfd_with("xenstored-lite-store", &snapshot.image(None))
            });
        match thread {
            Ok(thread) => {
                tracing::info!(
                    "live-update: pre-copy: writing an image of {} nodes while serving",
                    base.len()
                );
                session.precopy = Some(Phase::Writing {
                    base,
                    thread,
                    header,
                    version,
                });
            }
            Err(e) => {
                tracing::warn!("live-update: pre-copy: cannot start its thread ({e}); classic");
            }
        }
    }

    /// A turn's end with a pre-copy under way (`session` is out of
    /// `self.live_update` and goes back unless the update ended).
    pub(super) fn precopy_poll(&mut self, mut session: Session) {
        match session.precopy.take() {
            Some(Phase::Writing {
                base,
                thread,
                header,
                version,
            }) => {
                if !thread.is_finished() {
                    session.precopy = Some(Phase::Writing {
                        base,
                        thread,
                        header,
                        version,
                    });
                    self.live_update = Some(session);
                    return;
                }
                let bulk = match thread.join() {
                    Ok(Ok(fd)) => fd,
                    Ok(Err(e)) => return self.precopy_classic(session, header, version, &e),
                    Err(_) => {
                        return self.precopy_classic(
                            session,
                            header,
                            version,
                            &PrecopyError::BulkThread,
                        )
                    }
                };
                self.precopy_split(session, base, bulk, header, version);
            }
            Some(Phase::Serving(mut serving)) => {
                let mut buf = [0u8; 8];
                let got = nix::sys::socket::recv(
                    serving.sock.as_raw_fd(),
                    &mut buf,
                    MsgFlags::MSG_DONTWAIT,
                );
                let header = serving.header;
                match got {
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Ok(2) if buf[0] == READY && serving.ready.is_none() => {
                        let have = buf[1] == 1;
                        tracing::info!(
                            "live-update: pre-copy: the new process loaded the store in {} ms{}",
                            serving.since.elapsed().as_millis(),
                            if have {
                                ""
                            } else {
                                " (it could not: the whole state goes)"
                            }
                        );
                        serving.ready = Some(have);
                    }
                    Ok(0) => return self.precopy_lost(session, header, PrecopyError::Ended),
                    Ok(_) => {
                        return self.precopy_lost(
                            session,
                            header,
                            PrecopyError::Protocol("not READY"),
                        )
                    }
                    Err(e) => {
                        return self.precopy_lost(session, header, PrecopyError::Channel(e.into()))
                    }
                }
                let served = self
                    .core
                    .engine()
                    .requests()
                    .saturating_sub(serving.requests_at_split);
                match serving.ready {
                    Some(have) if served >= serving.min_requests => {
                        tracing::info!(
                            "live-update: pre-copy: freezing ({served} requests served since \
                             the split)"
                        );
                        self.precopy_freeze(session, &serving, have);
                    }
                    _ => {
                        if serving.last_log.elapsed() >= Duration::from_secs(10) {
                            serving.last_log = Instant::now();
                            tracing::info!(
                                "live-update: pre-copy: waiting for the new process ({} s; \
                                 {served} requests served since the split)",
                                serving.since.elapsed().as_secs()
                            );
                        }
                        session.precopy = Some(Phase::Serving(serving));
                        self.live_update = Some(session);
                    }
                }
            }
            None => self.live_update = Some(session),
        }
    }

    fn precopy_classic(
        &mut self,
        session: Session,
        header: Header,
        version: Version,
        why: &dyn std::fmt::Display,
    ) {
        tracing::warn!("live-update: pre-copy: {why}; a classic hand-over instead");
        let conn = session.conn;
        let why = self.hand_over(&session, header, version);
        self.live_update = Some(session);
        self.refuse(conn, header, &why.into());
    }

    /// The split: this process execs the new binary; the continuation
    /// serves on ([`continue_serving`]). Returns (here) only if that did
    /// not happen.
    fn precopy_split(
        &mut self,
        mut session: Session,
        base: Store,
        bulk: OwnedFd,
        header: Header,
        version: Version,
    ) {
        let conn = session.conn;
        let (ours, theirs) = match channel() {
            Ok(p) => p,
            Err(e) => return self.precopy_classic(session, header, version, &e),
        };
        let mut args = new_args(&self.exec_args, session.cmdline.as_deref());
        args.push(format!("{PRECOPY_ARG}={},{}", theirs.as_raw_fd(), bulk.as_raw_fd()).into());
        let Some(argv) = exec_argv(&session.binary, &args) else {
            return self.refuse(conn, header, &HandOverError::NulInArgument.into());
        };
        let plan = ExecPlan::new(
            argv[0].clone(),
            argv,
            vec![theirs.as_raw_fd(), bulk.as_raw_fd()],
        );
        let binary = session.binary.clone();
        let min_requests = std::env::var(MIN_REQUESTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        session.precopy = Some(Phase::Serving(Serving {
            base,
            sock: ours,
            header,
            version,
            theirs: [theirs.as_raw_fd(), bulk.as_raw_fd()],
            since: Instant::now(),
            last_log: Instant::now(),
            ready: None,
            requests_at_split: self.core.engine().requests(),
            min_requests,
        }));
        self.live_update = Some(session);
        tracing::info!(
            "live-update: pre-copy: exec {} with the store image; serving on meanwhile",
            binary.display()
        );
        self.core.flush_recording();
        let why = split::exec_leaving_continuation(&plan, continue_serving, self);
        // Only reached when the exec did not happen.
        drop((theirs, bulk));
        let session = self.live_update.take();
        match (why, session) {
            // The exec itself failed: as a classic exec's failure, refused.
            (source @ split::SplitError::Exec(_), session) => {
                self.live_update = session;
                self.refuse(
                    conn,
                    header,
                    &HandOverError::Split { binary, source }.into(),
                );
            }
            // Nothing happened (a thread appeared, a call failed): the
            // classic hand-over instead.
            (why, Some(mut session)) => {
                session.precopy = None;
                self.precopy_classic(session, header, version, &why);
            }
            (_, None) => {}
        }
    }

    /// The freeze: the state goes to the new process, which takes over;
    /// else this process takes it back.
    fn precopy_freeze(&mut self, session: Session, serving: &Serving, have_bulk: bool) {
        let (base, sock, header, version) = (
            &serving.base,
            &serving.sock,
            serving.header,
            serving.version,
        );
        let t0 = Instant::now();
        let conn = session.conn;
        // The new process answers `-s` once this one has ended.
        let asker = self.conns.contains_key(&conn).then_some((conn, header));
        let virq = self.virq.take();
        if let Some(port) = virq {
            if let Err(e) = self.platform.evtchn.unbind(port) {
                tracing::warn!("live-update: unbinding VIRQ_DOM_EXC failed: {e}");
            }
        }
        let (mut records, map) = self.export_connections(None);
        records.extend(self.core.engine().export_records_with(&map, !have_bulk));
        let sent = stream_of(version, records)
            .to_bytes()
            .map_err(PrecopyError::from)
            .and_then(|bytes| {
                let delta = if have_bulk {
                    self.core.engine().store().image(Some(base))
                } else {
                    Vec::new()
                };
                self.core.record(&BoundaryEvent::HandOver);
                if let Some(j) = self.core.journal() {
                    j.sync();
                }
                self.log_recording_totals();
                let fds = self.inherited_fds();
                let asker = asker.and_then(|(c, h)| Some((*map.get(&c)?, h)));
                send_state(sock, &bytes, &delta, have_bulk, asker, &fds)
                    .map(|()| (bytes.len(), delta.len()))
            });
        let outcome = sent.and_then(|(stream, delta)| {
            tracing::info!(
                "live-update: wrote {} bytes of state in {} ms (pre-copy freeze: {stream} of \
                 stream without the committed nodes, {delta} of store changes); waiting for the \
                 new process",
                stream + delta,
                t0.elapsed().as_millis()
            );
            wait_reply(sock)
        });
        match outcome {
            Ok(()) => {
                tracing::info!("live-update: pre-copy: the new process took over; this one ends");
                self.handed_over = true;
            }
            Err(e) => {
                // Everything is still here: serve on.
                if virq.is_some() {
                    match self.platform.evtchn.bind_virq(evtchn::VIRQ_DOM_EXC) {
                        Ok(port) => self.virq = Some(port),
                        Err(e) => tracing::warn!("cannot bind VIRQ_DOM_EXC again ({e})"),
                    }
                }
                self.precopy_lost(session, header, e);
            }
        }
    }

    /// Reaps the continuation if it has ended (or kills it past
    /// [`REAP_LIMIT`]), then answers `-s`.
    pub(in crate::shell) fn reap_continuation(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let Some(c) = &self.continuation else {
            return;
        };
        let pid = c.pid;
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if c.since.elapsed() < REAP_LIMIT => return,
            Ok(WaitStatus::StillAlive) => {
                tracing::warn!(
                    "live-update: the old daemon's process {pid} has not ended {} s after the                      hand-over; killed",
                    REAP_LIMIT.as_secs()
                );
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            Ok(WaitStatus::Exited(_, 0)) => {}
            Ok(status) => tracing::warn!("live-update: the old daemon's process ended: {status:?}"),
            Err(e) => tracing::warn!("live-update: cannot wait for the old daemon's process: {e}"),
        }
        let Some(c) = self.continuation.take() else {
            return;
        };
        tracing::info!(
            "live-update: the old daemon's process {pid} ended {} ms after the hand-over",
            c.since.elapsed().as_millis()
        );
        if let Some((conn, header)) = c.answer {
            if self.conns.contains_key(&conn) {
                self.core.apply_infallible(BoundaryEvent::Answer {
                    conn,
                    header,
                    answer: Answer::Text("OK".into()),
                });
                self.settle();
            }
        }
    }

    /// The new process is gone or failed after the split: this process
    /// (a continuation, under a pid of its own) serves on with everything.
    fn precopy_lost(&mut self, session: Session, header: Header, why: PrecopyError) {
        tracing::error!(
            "live-update: pre-copy: {why}; the old daemon serves on as pid {} (the pid file \
             names the new binary's process, which has failed)",
            std::process::id()
        );
        let conn = session.conn;
        self.live_update = Some(session);
        self.refuse(conn, header, &HandOverError::Precopy(why).into());
        // The new process may have begun its journal over ours: start ours
        // anew from a snapshot (written to a new file, renamed over it).
        if self.core.journal().is_some() && self.snapshot_job.is_none() {
            self.start_snapshot();
        }
    }
}

/// The continuation's life: its copies of the new process's descriptors
/// closed, the loop until the hand-over (or a signal, or an error).
fn continue_serving(daemon: &mut Daemon) -> i32 {
    if let Some(session) = &daemon.live_update {
        if let Some(Phase::Serving(serving)) = &session.precopy {
            drop(split::own_copies(&serving.theirs));
        }
    }
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let stop = daemon.stop_flag();
        while !daemon.handed_over
            && !crate::shell::os::signalled()
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            if let Err(e) = daemon.turn(Some(1000)) {
                tracing::error!("live-update: pre-copy: the old daemon's loop failed: {e}");
                return 1;
            }
        }
        if !daemon.handed_over {
            daemon.log_recording_totals();
            daemon.remove_journal();
            tracing::info!("stopping");
        }
        0
    }));
    run.unwrap_or(101)
}

/// The socket between the two processes: messages keep their bounds, and
/// the descriptors they carry stay with them.
fn channel() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

fn send(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) -> Result<(), PrecopyError> {
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(PrecopyError::Channel(e.into())),
        }
    }
}

/// One message and the descriptors it carries (owned from here).
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), PrecopyError> {
    let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(PrecopyError::Channel(io::Error::from(
                    io::ErrorKind::TimedOut,
                )))
            }
            Err(e) => return Err(PrecopyError::Channel(e.into())),
        };
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(r) = c {
                    fds.extend(split::own_received(&r));
                }
            }
        }
        if msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
        {
            return Err(PrecopyError::Protocol("a message too long"));
        }
        return Ok((msg.bytes, fds));
    }
}

fn set_timeout(sock: &OwnedFd) -> Result<(), PrecopyError> {
    let limit = TimeVal::new(
        i64::try_from(TAKE_OVER_LIMIT.as_secs()).unwrap_or(i64::MAX),
        0,
    );
    setsockopt(sock, sockopt::ReceiveTimeout, &limit).map_err(|e| PrecopyError::Channel(e.into()))
}

/// The freeze's messages: `STATE` with the memory file of the stream and
/// the change image, then the descriptors with their numbers here.
fn send_state(
    sock: &OwnedFd,
    stream: &[u8],
    delta: &[u8],
    have_bulk: bool,
    asker: Option<(u32, Header)>,
    fds: &[RawFd],
) -> Result<(), PrecopyError> {
    let mut file = Vec::with_capacity(16 + stream.len() + delta.len());
    file.extend_from_slice(&(stream.len() as u64).to_le_bytes());
    file.extend_from_slice(&(delta.len() as u64).to_le_bytes());
    file.extend_from_slice(stream);
    file.extend_from_slice(delta);
    let state = split::memfd_with("xenstored-lite-state", &file).map_err(PrecopyError::Image)?;
    let mut head = vec![STATE, u8::from(have_bulk)];
    head.extend_from_slice(&std::process::id().to_le_bytes());
    head.extend_from_slice(&u32::try_from(fds.len()).unwrap_or(u32::MAX).to_le_bytes());
    if let Some((conn, header)) = asker {
        head.extend_from_slice(&conn.to_le_bytes());
        head.extend_from_slice(&header.to_bytes());
    }
    send(sock, &head, &[state.as_raw_fd()])?;
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let mut m = vec![FDS];
        for &fd in chunk {
            m.extend_from_slice(&fd.to_le_bytes());
        }
        send(sock, &m, chunk)?;
    }
    Ok(())
}

fn wait_reply(sock: &OwnedFd) -> Result<(), PrecopyError> {
    set_timeout(sock)?;
    let mut buf = [0u8; 8];
    match receive(sock, &mut buf)? {
        (0, _) => Err(PrecopyError::Ended),
        (1, _) if buf[0] == TOOK => Ok(()),
        (1, _) if buf[0] == FAIL => Err(PrecopyError::Failed),
        _ => Err(PrecopyError::Protocol("not TOOK or FAIL")),
    }
}

/// The new process's side: the socket to the old daemon's continuation.
#[derive(Debug)]
pub struct Incoming {
    sock: OwnedFd,
    bulk: Option<OwnedFd>,
}

/// What the freeze brought.
#[derive(Debug)]
pub struct Frozen {
    /// The migration stream as the old daemon wrote it (its descriptor
    /// numbers).
    pub bytes: Vec<u8>,
    /// It, parsed, its descriptors renumbered to ours.
    pub stream: Stream,
    /// The image of what changed since the bulk (empty without one).
    pub delta: Vec<u8>,
    /// Whether the stream lacks the committed nodes (the bulk and `delta`
    /// have them).
    pub precopied: bool,
    /// The continuation's pid, to reap.
    pub continuation: u32,
    /// Who asked `-s` (its connection in the stream) and the request: the
    /// `OK` goes once the continuation has ended.
    pub asker: Option<(u32, Header)>,
}

impl Incoming {
    /// Takes `SOCKET,IMAGE` (the argument's value) over.
    pub fn adopt(arg: &str) -> Result<Self, PrecopyError> {
        let bad = || PrecopyError::Argument(arg.to_string());
        let (s, b) = arg.split_once(',').ok_or_else(bad)?;
        let s: RawFd = s.parse().map_err(|_| bad())?;
        let b: RawFd = b.parse().map_err(|_| bad())?;
        if s < 3 || b < 3 || s == b {
            return Err(bad());
        }
        let mut owned = crate::shell::os::adopt_fds(&[s, b])
            .map_err(PrecopyError::NotOpen)?
            .into_iter();
        let (Some(sock), Some(bulk)) = (owned.next(), owned.next()) else {
            return Err(bad());
        };
        Ok(Self {
            sock,
            bulk: Some(bulk),
        })
    }

    /// The bulk image's bytes.
    pub fn bulk(&mut self) -> Result<Vec<u8>, PrecopyError> {
        let fd = self
            .bulk
            .take()
            .ok_or(PrecopyError::Protocol("bulk read twice"))?;
        let mut file = std::fs::File::from(fd);
        let mut bytes = Vec::new();
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(PrecopyError::Image)?;
        io::Read::read_to_end(&mut file, &mut bytes).map_err(PrecopyError::Image)?;
        Ok(bytes)
    }

    /// Tells the continuation the store is loaded (`have`), or that it
    /// is not and the whole state must come; then waits for the freeze.
    pub fn take(&self, have: bool) -> Result<Frozen, PrecopyError> {
        send(&self.sock, &[READY, u8::from(have)], &[])?;
        set_timeout(&self.sock)?;
        let mut head = [0u8; 32];
        let (n, mut fds) = receive(&self.sock, &mut head)?;
        if n == 0 {
            return Err(PrecopyError::Ended);
        }
        if (n != 10 && n != 30) || head[0] != STATE || fds.len() != 1 {
            return Err(PrecopyError::Protocol("not STATE"));
        }
        let asker = (n == 30).then(|| {
            let conn = u32::from_le_bytes([head[10], head[11], head[12], head[13]]);
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&head[14..30]);
            (conn, Header::from_bytes(&raw))
        });
        let precopied = head[1] == 1;
        let continuation = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
        let count = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
        let mut file = std::fs::File::from(fds.remove(0));
        let mut data = Vec::new();
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(PrecopyError::Image)?;
        io::Read::read_to_end(&mut file, &mut data).map_err(PrecopyError::Image)?;
        let (bytes, delta) = split_state(&data).ok_or(PrecopyError::Protocol("a short state"))?;
        // The descriptors, with their numbers in the continuation.
        let mut map: Vec<(RawFd, OwnedFd)> = Vec::with_capacity(count);
        let mut buf = vec![0u8; 1 + 4 * FDS_PER_MESSAGE];
        while map.len() < count {
            let (n, got) = receive(&self.sock, &mut buf)?;
            if n == 0 {
                return Err(PrecopyError::Ended);
            }
            if buf[0] != FDS || (n - 1) % 4 != 0 || (n - 1) / 4 != got.len() {
                return Err(PrecopyError::Protocol("not DESCRIPTORS"));
            }
            for (i, fd) in got.into_iter().enumerate() {
                let at = 1 + 4 * i;
                let theirs = RawFd::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
                map.push((theirs, fd));
            }
        }
        let mut stream = Stream::parse(bytes)?;
        renumber(&mut stream, map);
        Ok(Frozen {
            // As sent: a recording's `Restore` needs no descriptor numbers
            // (its outcomes say what became of each connection).
            bytes: bytes.to_vec(),
            stream,
            delta: delta.to_vec(),
            precopied,
            continuation,
            asker,
        })
    }

    /// Tells the continuation the take-over is done (it ends) or failed
    /// (it serves on).
    pub fn finish(&self, took: bool) {
        if let Err(e) = send(&self.sock, &[if took { TOOK } else { FAIL }], &[]) {
            tracing::warn!("live-update: pre-copy: cannot tell the old daemon: {e}");
        }
    }
}

/// The stream and the change image of a `STATE` memory file.
fn split_state(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = |at: usize| -> Option<usize> {
        let b: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
        usize::try_from(u64::from_le_bytes(b)).ok()
    };
    let (s, d) = (len(0)?, len(8)?);
    let stream = data.get(16..16usize.checked_add(s)?)?;
    let delta = data.get(16 + s..(16 + s).checked_add(d)?)?;
    (16 + s + d == data.len()).then_some((stream, delta))
}

/// Gives the stream's descriptors (the continuation's numbers) the numbers
/// they have here, handing each over to the restore (which adopts it by
/// number); one the stream names that did not come is named -1.
fn renumber(stream: &mut Stream, map: Vec<(RawFd, OwnedFd)>) {
    let mut map: std::collections::BTreeMap<RawFd, RawFd> = map
        .into_iter()
        .map(|(theirs, fd)| (theirs, fd.into_raw_fd()))
        .collect();
    let mut ours = |fd: RawFd| map.remove(&fd).unwrap_or(-1);
    for record in &mut stream.records {
        match record {
            Record::Global(g) => {
                g.rw_socket_fd = ours(g.rw_socket_fd);
                g.evtchn_fd = ours(g.evtchn_fd);
            }
            Record::Connection(c) => {
                if let ConnSpec::Socket(s) = &mut c.spec {
                    s.socket_fd = ours(s.socket_fd);
                }
            }
            _ => {}
        }
    }
    // Sent but not named: closed.
    let unnamed: Vec<RawFd> = map.into_values().collect();
    drop(split::own_received(&unnamed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_state_takes_exactly_the_two_parts() {
        let mut f = Vec::new();
        f.extend_from_slice(&3u64.to_le_bytes());
        f.extend_from_slice(&2u64.to_le_bytes());
        f.extend_from_slice(b"abcde");
        assert_eq!(split_state(&f), Some((&b"abc"[..], &b"de"[..])));
        let mut longer = f.clone();
        longer.push(0);
        assert_eq!(split_state(&longer), None);
        assert_eq!(split_state(&f[..f.len() - 1]), None);
        let mut huge = f.clone();
        huge[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(split_state(&huge), None);
    }

    #[test]
    fn test_adopt_refuses_what_is_not_two_descriptors() {
        for arg in ["", "5", "5,", ",5", "a,b", "1,5", "7,7", "5,6,7"] {
            assert!(
                matches!(Incoming::adopt(arg), Err(PrecopyError::Argument(_))),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn test_the_bulk_and_the_freeze_cross_the_socket() {
        let (ours, theirs) = channel().unwrap();
        let bulk = split::memfd_with("t", b"bulk bytes").unwrap();
        let mut incoming = Incoming {
            sock: theirs,
            bulk: Some(bulk),
        };
        assert_eq!(incoming.bulk().unwrap(), b"bulk bytes");
        // 450 descriptors: three messages.
        let files: Vec<OwnedFd> = (0..450)
            .map(|_| split::memfd_with("f", b"").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
        let stream = stream_of(
            Version::V1,
            vec![
                Record::Global(crate::migration::GlobalData {
                    rw_socket_fd: raw[0],
                    evtchn_fd: raw[1],
                }),
                Record::Connection(crate::migration::ConnectionData {
                    conn_id: 1,
                    spec: ConnSpec::Socket(crate::migration::SocketConn {
                        socket_fd: raw[449],
                    }),
                    in_data: vec![],
                    out_resp_len: 0,
                    out_data: vec![],
                    unique_id: None,
                    ring: None,
                }),
                Record::Connection(crate::migration::ConnectionData {
                    conn_id: 2,
                    spec: ConnSpec::Socket(crate::migration::SocketConn { socket_fd: 9999 }),
                    in_data: vec![],
                    out_resp_len: 0,
                    out_data: vec![],
                    unique_id: None,
                    ring: None,
                }),
            ],
        );
        let bytes = stream.to_bytes().unwrap();
        let sender = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            let (n, _) = receive(&ours, &mut buf).unwrap();
            assert_eq!(&buf[..n], &[READY, 1]);
            let h = Header::new(xenring::MsgType::Control, 77, 0, 15);
            send_state(&ours, &bytes, b"delta", true, Some((1, h)), &raw).unwrap();
            wait_reply(&ours)
        });
        let frozen = incoming.take(true).unwrap();
        assert!(frozen.precopied);
        assert_eq!(frozen.delta, b"delta");
        assert_eq!(frozen.continuation, std::process::id());
        let (asker, h) = frozen.asker.unwrap();
        assert_eq!(asker, 1);
        assert_eq!(h, Header::new(xenring::MsgType::Control, 77, 0, 15));
        let Record::Global(g) = &frozen.stream.records[0] else {
            panic!("no global record")
        };
        // Renumbered: open here, and not the sender's numbers (those are
        // still open too, in this one test process).
        assert!(crate::shell::os::fd_is_open(g.rw_socket_fd));
        assert!(crate::shell::os::fd_is_open(g.evtchn_fd));
        let Record::Connection(c) = &frozen.stream.records[1] else {
            panic!("no connection")
        };
        let ConnSpec::Socket(s) = &c.spec else {
            panic!()
        };
        assert!(crate::shell::os::fd_is_open(s.socket_fd));
        assert!(![g.rw_socket_fd, g.evtchn_fd, s.socket_fd]
            .iter()
            .any(|fd| files.iter().any(|f| f.as_raw_fd() == *fd)));
        // A descriptor that did not come is named -1.
        let Record::Connection(c) = &frozen.stream.records[2] else {
            panic!("no connection")
        };
        assert_eq!(
            c.spec,
            ConnSpec::Socket(crate::migration::SocketConn { socket_fd: -1 })
        );
        incoming.finish(true);
        assert!(sender.join().unwrap().is_ok());
        drop(files);
    }

    #[test]
    fn test_a_message_longer_than_expected_is_refused() {
        let (ours, theirs) = channel().unwrap();
        send(&ours, &[STATE; 40], &[]).unwrap();
        let mut small = [0u8; 8];
        assert!(matches!(
            receive(&theirs, &mut small),
            Err(PrecopyError::Protocol(_))
        ));
        // Too many descriptors for the control buffer.
        let files: Vec<OwnedFd> = (0..FDS_PER_MESSAGE + 20)
            .map(|_| split::memfd_with("f", b"").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
        send(&ours, &[FDS], &raw).unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(
            receive(&theirs, &mut buf),
            Err(PrecopyError::Protocol(_))
        ));
        // What fits is taken.
        send(&ours, &[TOOK], &raw[..3]).unwrap();
        let (n, fds) = receive(&theirs, &mut buf).unwrap();
        assert_eq!((n, fds.len()), (1, 3));
    }

    #[test]
    fn test_a_failed_take_over_is_told_back() {
        let (ours, theirs) = channel().unwrap();
        let incoming = Incoming {
            sock: theirs,
            bulk: None,
        };
        incoming.finish(false);
        assert!(matches!(wait_reply(&ours), Err(PrecopyError::Failed)));
        drop(incoming);
        assert!(matches!(wait_reply(&ours), Err(PrecopyError::Ended)));
    }
}
