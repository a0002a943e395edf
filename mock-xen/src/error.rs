//! The crate's one error type.

use xenring::DomId;

/// What can go wrong talking to the simulated hypervisor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        /// The call.
        op: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Socket or file I/O failed.
    #[error("I/O on the mock-xen connection failed")]
    Io(#[from] std::io::Error),
    /// The named domain does not exist (or is being destroyed).
    #[error("domain {0} does not exist")]
    NoSuchDomain(DomId),
    /// The caller's domain may not do this (the hypervisor's EPERM).
    #[error("domain {caller} is not permitted to {op}")]
    NotPermitted {
        /// The calling domain.
        caller: DomId,
        /// What it tried.
        op: &'static str,
    },
    /// An event-channel port that is not valid for this operation.
    #[error("event-channel port {port} of domain {domid} is not valid for {op}")]
    BadPort {
        /// The domain owning the port.
        domid: DomId,
        /// The port.
        port: u32,
        /// The operation.
        op: &'static str,
    },
    /// A grant reference that the domain did not grant to the caller.
    #[error("domain {domid} has not granted reference {gref} to domain {caller}")]
    NotGranted {
        /// The granting domain.
        domid: DomId,
        /// The grant reference.
        gref: u32,
        /// The domain that tried to map it.
        caller: DomId,
    },
    /// A machine frame that does not belong to the named domain.
    #[error("mfn {mfn:#x} does not belong to domain {domid}")]
    BadFrame {
        /// The domain named by the caller.
        domid: DomId,
        /// The frame.
        mfn: u64,
    },
    /// Machine memory, domain ids, ports or event slots ran out.
    #[error("the simulated machine is out of resources")]
    OutOfMemory,
    /// The peer sent something that is not the mock-xen protocol.
    #[error("mock-xen protocol violation: {0}")]
    Protocol(&'static str),
    /// The mock-xen process went away.
    #[error("the mock-xen connection is closed")]
    Closed,
    /// A server process could not be forked: this process has other
    /// threads, and a child of a threaded process may not run arbitrary
    /// code.
    #[error("cannot fork a mock-xen process: this process already has {threads} threads")]
    Threaded {
        /// How many threads there were.
        threads: usize,
    },
    /// A forked server process did not start serving.
    #[error("the forked mock-xen process did not start: {0}")]
    ServerStart(String),
    /// A remote mock-xen process refused the request.
    #[error("mock-xen refused the request (code {code}): {message}")]
    Remote {
        /// The server-side error's code (`Error::code`).
        code: u32,
        /// Its message.
        message: String,
    },
}

impl Error {
    /// A compact code for the wire (the server's errors cross the socket as
    /// a code and a message).
    pub(crate) fn code(&self) -> u32 {
        match self {
            Error::Sys { .. } | Error::Io(_) | Error::Threaded { .. } | Error::ServerStart(_) => 1,
            Error::NoSuchDomain(_) => 2,
            Error::NotPermitted { .. } => 3,
            Error::BadPort { .. } => 4,
            Error::NotGranted { .. } => 5,
            Error::BadFrame { .. } => 6,
            Error::OutOfMemory => 7,
            Error::Protocol(_) => 8,
            Error::Closed => 9,
            Error::Remote { code, .. } => *code,
        }
    }
}
