//! A client's connection to the simulated hypervisor: in-process (a direct
//! call into the shared [`Hypervisor`]) or to a `mock-xen` process over a
//! `SOCK_SEQPACKET` Unix socket (descriptors passed as `SCM_RIGHTS`).
//!
//! A connection acts for one domain. Like a `/dev/xen/*` handle it owns what
//! was bound or mapped through it: closing it closes its ports and drops its
//! mappings. A socket connection can be kept across `exec()` and re-adopted
//! by the new program ([`Conn::into_inheritable_fd`], [`Conn::adopt`]).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use xenring::DomId;

use crate::error::Error;
use crate::hv::{ConnId, Hypervisor, EVENT_BYTES};
use crate::memory::SharedMap;
use crate::proto::{Request, Response, MAX_MESSAGE};

/// Most descriptors one message carries.
const MAX_FDS: usize = 4;

/// Where to reach the hypervisor: this process, or a `mock-xen` socket.
#[derive(Debug, Clone)]
pub enum Connector {
    /// The hypervisor lives in this process (deterministic unit tests).
    Local(Arc<Mutex<Hypervisor>>),
    /// A `mock-xen --socket PATH` process.
    Remote(PathBuf),
}

impl Connector {
    /// A fresh in-process machine with dom0.
    pub fn new_local() -> Result<Self, Error> {
        Ok(Self::Local(Arc::new(Mutex::new(Hypervisor::new()?))))
    }

    /// A `mock-xen` process's socket.
    pub fn remote(path: impl AsRef<Path>) -> Self {
        Self::Remote(path.as_ref().to_path_buf())
    }

    /// Opens a connection acting for `domid`.
    pub fn connect(&self, domid: DomId) -> Result<Conn, Error> {
        let inner = match self {
            Connector::Local(hv) => {
                let id = lock(hv)?.open_conn();
                Inner::Local(LocalConn {
                    hv: Arc::clone(hv),
                    id,
                })
            }
            Connector::Remote(path) => {
                let (sock, addr) = seqpacket_socket(path, SockFlag::SOCK_CLOEXEC)?;
                connect(sock.as_raw_fd(), &addr).map_err(|source| Error::Sys {
                    op: "connect to mock-xen",
                    source,
                })?;
                Inner::Remote {
                    sock: Mutex::new(sock),
                }
            }
        };
        Conn::hello(inner, domid)
    }
}

pub(crate) fn lock(hv: &Mutex<Hypervisor>) -> Result<MutexGuard<'_, Hypervisor>, Error> {
    hv.lock()
        .map_err(|_| Error::Protocol("hypervisor state poisoned by a panic"))
}

#[derive(Debug)]
enum Inner {
    Local(LocalConn),
    Remote { sock: Mutex<OwnedFd> },
}

/// An in-process connection; closed in the hypervisor on drop, as a process
/// exiting closes its `/dev/xen/*` handles.
#[derive(Debug)]
struct LocalConn {
    hv: Arc<Mutex<Hypervisor>>,
    id: ConnId,
}

impl Drop for LocalConn {
    fn drop(&mut self) {
        if let Ok(mut hv) = self.hv.lock() {
            hv.close_conn(self.id);
        }
    }
}

/// One connection to the hypervisor, acting for one domain.
#[derive(Debug)]
pub struct Conn {
    inner: Inner,
    domid: DomId,
    slot: u32,
    machine: Arc<OwnedFd>,
    events: Arc<SharedMap>,
}

impl Conn {
    fn hello(inner: Inner, domid: DomId) -> Result<Self, Error> {
        let (response, fds) = call_inner(&inner, &Request::Hello { domid })?;
        let Response::Hello { slot } = response else {
            return Err(Error::Protocol("unexpected answer to hello"));
        };
        let mut fds = fds.into_iter();
        let (Some(machine), Some(events)) = (fds.next(), fds.next()) else {
            return Err(Error::Protocol("hello without its memfds"));
        };
        let events = SharedMap::new(&events, 0, EVENT_BYTES)?;
        Ok(Self {
            inner,
            domid,
            slot,
            machine: Arc::new(machine),
            events: Arc::new(events),
        })
    }

    /// Re-adopts a socket connection inherited across `exec()`.
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor that this process owns and that
    /// nothing else will use or close: a mock-xen connection made inheritable
    /// by [`Conn::into_inheritable_fd`] in the program that exec'd us.
    pub unsafe fn adopt(fd: RawFd, domid: DomId) -> Result<Self, Error> {
        // SAFETY: the caller hands us ownership of an open descriptor.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(&sock, true)?;
        Self::hello(
            Inner::Remote {
                sock: Mutex::new(sock),
            },
            domid,
        )
    }

    /// Turns a socket connection into a descriptor that survives `exec()`
    /// (close-on-exec cleared). The hypervisor keeps everything bound or
    /// mapped through it. In-process connections cannot cross `exec()`.
    pub fn into_inheritable_fd(self) -> Result<RawFd, Error> {
        match self.inner {
            Inner::Remote { sock } => {
                let sock = sock
                    .into_inner()
                    .map_err(|_| Error::Protocol("connection lock poisoned"))?;
                set_cloexec(&sock, false)?;
                Ok(sock.into_raw_fd())
            }
            Inner::Local(_) => Err(Error::Protocol(
                "an in-process connection cannot cross exec()",
            )),
        }
    }

    /// The socket's descriptor number (remote connections).
    pub fn raw_fd(&self) -> Option<RawFd> {
        match &self.inner {
            Inner::Remote { sock } => sock.lock().ok().map(|s| s.as_raw_fd()),
            Inner::Local(_) => None,
        }
    }

    /// The domain this connection acts for.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The domain's event slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The machine-memory memfd.
    pub fn machine_fd(&self) -> &Arc<OwnedFd> {
        &self.machine
    }

    /// The event-word region.
    pub fn events(&self) -> &Arc<SharedMap> {
        &self.events
    }

    /// Sends a request and returns the response and its descriptors; a
    /// refusal becomes an error.
    pub fn call(&self, request: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
        call_inner(&self.inner, request)
    }

    /// [`Conn::call`] for requests answered by `Ok`.
    pub fn call_ok(&self, request: &Request) -> Result<(), Error> {
        match self.call(request)?.0 {
            Response::Ok => Ok(()),
            _ => Err(Error::Protocol("unexpected response")),
        }
    }

    /// [`Conn::call`] for requests answered by a port.
    pub fn call_port(&self, request: &Request) -> Result<u32, Error> {
        match self.call(request)?.0 {
            Response::Port(p) => Ok(p),
            _ => Err(Error::Protocol("unexpected response")),
        }
    }
}

fn call_inner(inner: &Inner, request: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
    let (response, fds) = match inner {
        Inner::Local(LocalConn { hv, id }) => match lock(hv)?.handle(*id, request.clone()) {
            Ok(reply) => (reply.response, reply.fds),
            Err(e) => return Err(e),
        },
        Inner::Remote { sock } => {
            let sock = sock
                .lock()
                .map_err(|_| Error::Protocol("connection lock poisoned"))?;
            send_message(sock.as_raw_fd(), &request.encode(), &[])?;
            let (bytes, fds) = recv_message(sock.as_raw_fd())?.ok_or(Error::Closed)?;
            (Response::decode(&bytes)?, fds)
        }
    };
    match response {
        Response::Error { code, message } => Err(Error::Remote { code, message }),
        other => Ok((other, fds)),
    }
}

/// A `SOCK_SEQPACKET` Unix socket and the address of `path`, for the client
/// (connect) and the server (bind).
pub(crate) fn seqpacket_socket(path: &Path, flags: SockFlag) -> Result<(OwnedFd, UnixAddr), Error> {
    let sock = socket(AddressFamily::Unix, SockType::SeqPacket, flags, None).map_err(|source| {
        Error::Sys {
            op: "socket",
            source,
        }
    })?;
    let addr = UnixAddr::new(path).map_err(|source| Error::Sys {
        op: "socket path",
        source,
    })?;
    Ok((sock, addr))
}

/// Sends one record with descriptors.
pub(crate) fn send_message(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> Result<(), Error> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EPIPE) | Err(nix::errno::Errno::ECONNRESET) => {
                return Err(Error::Closed)
            }
            Err(source) => {
                return Err(Error::Sys {
                    op: "sendmsg",
                    source,
                })
            }
        }
    }
}

/// One record received: its bytes and the descriptors that came with it.
pub(crate) type Record = (Vec<u8>, Vec<OwnedFd>);

/// Receives one record and its descriptors; `None` at end of stream.
pub(crate) fn recv_message(sock: RawFd) -> Result<Option<Record>, Error> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECONNRESET) => return Ok(None),
            Err(source) => {
                return Err(Error::Sys {
                    op: "recvmsg",
                    source,
                })
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|source| Error::Sys {
            op: "recvmsg (control data)",
            source,
        })? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel has just installed `fd` in our
                    // descriptor table for this message; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let n = msg.bytes;
        if n == 0 && fds.is_empty() {
            return Ok(None);
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(Error::Protocol("message too long"));
        }
        buf.truncate(n);
        return Ok(Some((buf, fds)));
    }
}

/// Sets or clears close-on-exec.
pub fn set_cloexec(fd: &impl std::os::fd::AsFd, on: bool) -> Result<(), Error> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|source| Error::Sys {
        op: "fcntl(F_GETFD)",
        source,
    })?;
    let mut flags = FdFlag::from_bits_retain(flags);
    flags.set(FdFlag::FD_CLOEXEC, on);
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(|source| Error::Sys {
        op: "fcntl(F_SETFD)",
        source,
    })?;
    Ok(())
}
