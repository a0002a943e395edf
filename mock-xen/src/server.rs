//! The `mock-xen` process: the hypervisor model behind a `SOCK_SEQPACKET`
//! Unix socket, served by a single-threaded poll loop.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{accept4, bind, listen, Backlog, SockFlag};

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
