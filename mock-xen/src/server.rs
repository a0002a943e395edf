//! The `mock-xen` process: the hypervisor model behind a `SOCK_SEQPACKET`
//! Unix socket, served by a single-threaded poll loop — in a process of its
//! own (`mock-xen --socket PATH`, or forked: [`ServerProcess`]) or on a
//! thread ([`ServerThread`]).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::sockopt::PeerCredentials;
use nix::sys::socket::{accept4, bind, getsockopt, listen, Backlog, SockFlag};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, getppid, gettid, pipe2, ForkResult, Pid};

use crate::conn::{lock, recv_message, send_message, seqpacket_socket};
use crate::error::Error;
use crate::hv::{ConnId, Hypervisor};
use crate::proto::{Request, Response};

/// A listening `mock-xen` server.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    listener: OwnedFd,
    hv: Arc<Mutex<Hypervisor>>,
    clients: BTreeMap<RawFd, (OwnedFd, ConnId)>,
}

impl Server {
    /// Listens on `path` (replacing a stale socket file) with a fresh machine.
    pub fn bind(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::bind_with(path, Arc::new(Mutex::new(Hypervisor::new()?)))
    }

    /// Listens on `path`, serving an existing machine (which in-process
    /// clients may share).
    pub fn bind_with(path: impl AsRef<Path>, hv: Arc<Mutex<Hypervisor>>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let (listener, addr) =
            seqpacket_socket(&path, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK)?;
        bind(listener.as_raw_fd(), &addr).map_err(|source| Error::Sys { op: "bind", source })?;
        listen(&listener, Backlog::MAXCONN).map_err(|source| Error::Sys {
            op: "listen",
            source,
        })?;
        Ok(Self {
            path,
            listener,
            hv,
            clients: BTreeMap::new(),
        })
    }

    /// The machine served.
    pub fn hypervisor(&self) -> &Arc<Mutex<Hypervisor>> {
        &self.hv
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves until `stop` is set (checked at least every 100 ms) or forever.
    pub fn run(&mut self, stop: Option<&AtomicBool>) -> Result<(), Error> {
        loop {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(());
            }
            let ready = self.poll_once()?;
            for fd in ready {
                if fd == self.listener.as_raw_fd() {
                    self.accept_all()?;
                } else {
                    self.serve_client(fd)?;
                }
            }
        }
    }

    fn poll_once(&self) -> Result<Vec<RawFd>, Error> {
        let mut fds = Vec::with_capacity(self.clients.len() + 1);
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        for (sock, _) in self.clients.values() {
            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(100u8)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
            Err(source) => return Err(Error::Sys { op: "poll", source }),
        }
        let listener = self.listener.as_raw_fd();
        let mut ready = Vec::new();
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.revents().is_some_and(|r| !r.is_empty()) {
                if i == 0 {
                    ready.push(listener);
                } else if let Some((&raw, _)) = self.clients.iter().nth(i - 1) {
                    ready.push(raw);
                }
            }
        }
        Ok(ready)
    }

    fn accept_all(&mut self) -> Result<(), Error> {
        loop {
            match accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(raw) => {
                    // SAFETY: accept4 returned a new descriptor that we own.
                    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
                    let id = lock(&self.hv)?.open_conn();
                    self.clients.insert(raw, (sock, id));
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(source) => {
                    return Err(Error::Sys {
                        op: "accept",
                        source,
                    })
                }
            }
        }
    }

    fn serve_client(&mut self, raw: RawFd) -> Result<(), Error> {
        let Some(&(_, id)) = self.clients.get(&raw) else {
            return Ok(());
        };
        let received = recv_message(raw);
        let (bytes, _fds) = match received {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => {
                self.drop_client(raw, id)?;
                return Ok(());
            }
        };
        let reply = match Request::decode(&bytes) {
            Ok(request) => lock(&self.hv)?.handle(id, request),
            Err(e) => Err(e),
        };
        let (response, fds) = match reply {
            Ok(reply) => (reply.response, reply.fds),
            Err(e) => (
                Response::Error {
                    code: e.code(),
                    message: e.to_string(),
                },
                Vec::new(),
            ),
        };
        let raw_fds: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        if send_message(raw, &response.encode(), &raw_fds).is_err() {
            self.drop_client(raw, id)?;
        }
        Ok(())
    }

    fn drop_client(&mut self, raw: RawFd, id: ConnId) -> Result<(), Error> {
        self.clients.remove(&raw);
        lock(&self.hv)?.close_conn(id);
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A server running on a thread of this process, stopped on drop (tests).
#[derive(Debug)]
pub struct ServerThread {
    path: PathBuf,
    hv: Arc<Mutex<Hypervisor>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl ServerThread {
    /// Starts serving a fresh machine on `path`.
    pub fn start(path: impl AsRef<Path>) -> Result<Self, Error> {
        let mut server = Server::bind(path)?;
        let path = server.path().to_path_buf();
        let hv = Arc::clone(server.hypervisor());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mock-xen".into())
            .spawn(move || server.run(Some(&flag)))?;
        Ok(Self {
            path,
            hv,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The machine (in-process clients may share it).
    pub fn hypervisor(&self) -> &Arc<Mutex<Hypervisor>> {
        &self.hv
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Set by `SIGTERM` in a forked server process ([`ServerProcess`]): stop
/// serving, remove the socket, exit.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: nix::libc::c_int) {
    TERMINATED.store(true, Ordering::Relaxed);
}

/// How long [`ServerProcess`]'s drop waits for the server to stop after
/// `SIGTERM` (it looks every 100 ms) before it kills it.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A server in a process of its own, forked from this one: a child that
/// keeps the simulated machine (and every guest on it) while this process
/// `exec()`s a new program, and ends when this process does.
///
/// The child asks for `SIGTERM` when its parent ends (`PR_SET_PDEATHSIG`:
/// it fires when the forking thread ends, which for the main thread is the
/// end of the process — an `exec()` keeps the thread), ignores `SIGINT`
/// and `SIGHUP` (its parent decides when it ends), and on `SIGTERM` stops,
/// removes its socket and exits. Dropping a `ServerProcess` that is this
/// process's child stops it that way and reaps it.
#[derive(Debug)]
pub struct ServerProcess {
    path: PathBuf,
    pid: Pid,
    child: bool,
}

impl ServerProcess {
    /// Forks a server of a fresh machine on `path` and returns once it
    /// listens there. Must be called by the main thread of a process that
    /// has no other thread (checked: [`Error::Threaded`] otherwise), e.g.
    /// early in `main`.
    pub fn fork(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads != 1 || getpid() != gettid() {
            return Err(Error::Threaded { threads });
        }
        let (report_read, report_write) = pipe2(OFlag::O_CLOEXEC).map_err(|source| Error::Sys {
            op: "pipe2",
            source,
        })?;
        let parent = getpid();
        // SAFETY: this process has a single thread (checked above, and
        // nothing here starts one), so the child is a full copy of a
        // consistent process and may run any code; it leaves only through
        // `_exit` (`serve_forked` never returns or unwinds).
        match unsafe { fork() }.map_err(|source| Error::Sys { op: "fork", source })? {
            ForkResult::Child => {
                drop(report_read);
                serve_forked(&path, parent, report_write)
            }
            ForkResult::Parent { child } => {
                drop(report_write);
                let mut report = Vec::new();
                let read = std::fs::File::from(report_read).read_to_end(&mut report);
                if read.is_ok() && report == [0] {
                    return Ok(Self {
                        path,
                        pid: child,
                        child: true,
                    });
                }
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                let why = match read {
                    Err(e) => format!("cannot read its report: {e}"),
                    Ok(_) if report.is_empty() => "it exited before it was serving".to_string(),
                    Ok(_) => String::from_utf8_lossy(&report).into_owned(),
                };
                Err(Error::ServerStart(why))
            }
        }
    }

    /// The server process listening on `path` (found by the credentials of
    /// a connection to it): after an `exec()`, the one this process forked
    /// before. If it is not this process's child, dropping the value leaves
    /// it alone.
    pub fn attach(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let (sock, addr) = seqpacket_socket(&path, SockFlag::SOCK_CLOEXEC)?;
        nix::sys::socket::connect(sock.as_raw_fd(), &addr).map_err(|source| Error::Sys {
            op: "connect to mock-xen",
            source,
        })?;
        let cred = getsockopt(&sock, PeerCredentials).map_err(|source| Error::Sys {
            op: "SO_PEERCRED",
            source,
        })?;
        let pid = Pid::from_raw(cred.pid());
        let child = parent_of(pid) == Some(getpid());
        Ok(Self { path, pid, child })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Whether it is this process's child (stopped and reaped on drop).
    pub fn is_child(&self) -> bool {
        self.child
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !self.child {
            return;
        }
        let _ = kill(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(WaitStatus::StillAlive) => {
                    let _ = kill(self.pid, Signal::SIGKILL);
                    let _ = waitpid(self.pid, None);
                    break;
                }
                Ok(_) | Err(_) => break,
            }
        }
        // Gone already if it stopped normally.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The parent of process `pid`, from `/proc/PID/stat`.
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold anything but ends at the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(ppid))
}

/// The forked child: sets itself up, reports on `report` (one 0 byte when
/// serving, else why not), serves until `SIGTERM`, exits.
fn serve_forked(path: &Path, parent: Pid, report: OwnedFd) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_forked(path, parent, report)
    })) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("mock-xen: {}", error_chain(&e));
            1
        }
        Err(_) => 101,
    };
    // SAFETY: `_exit` ends this (forked) process at once, without running
    // the exit handlers or flushing the buffers it inherited from its
    // parent, which are the parent's to run and flush.
    unsafe { nix::libc::_exit(code) }
}

fn run_forked(path: &Path, parent: Pid, report: OwnedFd) -> Result<(), Error> {
    keep_only_stdio(report.as_raw_fd());
    let mut report = std::fs::File::from(report);
    match set_up_forked(path, parent) {
        Ok(mut server) => {
            report.write_all(&[0])?;
            drop(report);
            server.run(Some(&TERMINATED))
            // Dropping `server` removes the socket.
        }
        Err(e) => {
            let _ = report.write_all(error_chain(&e).as_bytes());
            Err(e)
        }
    }
}

/// Closes every descriptor the child inherited except standard error and
/// `keep`, and points standard input and output at `/dev/null`: the
/// parent's sockets, pipes and files are its own (a client must see the
/// parent close its connection; a pipe reader, its end).
fn keep_only_stdio(keep: RawFd) {
    let inherited: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in inherited {
        if fd > 2 && fd != keep {
            // SAFETY: this forked child runs nothing of its parent's but
            // this function's caller, which owns only `keep`; no object
            // here uses the other descriptors (the directory listing them
            // is closed already; closing it again fails harmlessly).
            unsafe { nix::libc::close(fd) };
        }
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        // stderr stays only if it is a file or a socket (a log, the
        // journal): a terminal or a pipe would be held open by this child
        // after its parent detached and let go of them, and whoever reads
        // the pipe (an init script's `$(...)`, a test) would wait for ever.
        let keep_stderr = nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                & nix::sys::stat::SFlag::S_IFMT;
            kind == nix::sys::stat::SFlag::S_IFREG || kind == nix::sys::stat::SFlag::S_IFSOCK
        });
        if !keep_stderr {
            let _ = nix::unistd::dup2_stderr(&null);
        }
    }
}

fn set_up_forked(path: &Path, parent: Pid) -> Result<Server, Error> {
    let sys = |op| move |source| Error::Sys { op, source };
    prctl::set_pdeathsig(Signal::SIGTERM).map_err(sys("PR_SET_PDEATHSIG"))?;
    // The parent may have ended before the line above: then it never will
    // send the signal.
    if getppid() != parent {
        return Err(Error::ServerStart(
            "its parent ended while it started".to_string(),
        ));
    }
    // Only the name `ps` shows; failing to set it changes nothing else.
    let _ = prctl::set_name(c"mock-xen");
    let terminate = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; this process has one thread and no other handler.
    unsafe { sigaction(Signal::SIGTERM, &terminate) }.map_err(sys("sigaction"))?;
    for signal in [Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: ignoring a signal installs no code at all.
        unsafe { sigaction(signal, &ignore) }.map_err(sys("sigaction"))?;
    }
    Server::bind(path)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
