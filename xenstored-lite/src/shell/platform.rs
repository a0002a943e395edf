//! The platform: everything nondeterministic the daemon talks to, behind
//! the traits of `evtchn` and `gnttab`, with its backends — Linux devices
//! or mock-xen (a separate `mock-xen` process, or one the daemon embeds as
//! a child process of its own, which outlives the daemon's live-update
//! `exec()`).

use std::path::{Path, PathBuf};

use evtchn::EventChannel;
use gnttab::{DomainInfoSource, PageMapper};
use mock_xen::{Connector, MockDomainInfo, MockEventChannel, MockPageMapper, ServerProcess};

use super::os;

/// Which backend to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// Linux `/dev/xen` devices when present, else an embedded mock-xen.
    Auto,
    /// Linux `/dev/xen` devices.
    Linux,
    /// A mock-xen embedded in the daemon (a child process it forks at
    /// start-up, kept across live updates), serving its socket at this
    /// path so that simulated guests and a toolstack can join.
    Embedded(PathBuf),
    /// A separate `mock-xen --socket PATH` process.
    Remote(PathBuf),
}

/// Why the platform could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A Linux device failed.
    #[error("cannot open the Xen event-channel device")]
    Evtchn(#[from] evtchn::Error),
    /// A Linux mapping device failed.
    #[error("cannot open the Xen mapping devices")]
    Gnttab(#[from] gnttab::Error),
    /// mock-xen failed.
    #[error("cannot reach mock-xen")]
    Mock(#[from] mock_xen::Error),
}

/// The daemon's view of the hypervisor.
pub struct Platform {
    /// Event channels.
    pub evtchn: Box<dyn EventChannel>,
    /// Page mapping.
    pub mapper: Box<dyn PageMapper>,
    /// Domain information.
    pub dominfo: Box<dyn DomainInfoSource>,
    /// One line saying what this is, for the start-up message.
    pub description: String,
    /// Whether dom0's own ring (xsd_kva) should be served.
    pub serve_local_ring: bool,
    /// Whether the event-channel handle was adopted from the process that
    /// exec'd us (live update): ports bound before the exec are still bound.
    pub evtchn_inherited: bool,
    _embedded: Option<ServerProcess>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("description", &self.description)
            .finish()
    }
}

/// The embedded mock-xen's socket's name in the run directory.
pub const EMBEDDED_SOCKET: &str = "mock-xen.sock";

/// Whether this machine has Xen's event-channel device.
pub fn have_xen() -> bool {
    Path::new(evtchn::EVTCHN_DEVICE).exists()
}

impl Platform {
    /// Sets up the chosen backend.
    ///
    /// An embedded mock-xen is forked here, so this must run before the
    /// daemon starts any thread.
    pub fn open(choice: &PlatformChoice, rundir: &Path) -> Result<Self, PlatformError> {
        Self::open_with(choice, rundir, None, false)
    }

    /// Sets up the chosen backend, with `evtchn` as its event-channel
    /// handle if given (a live update's inherited one), else a new one.
    /// After a live update (`live_update`), an embedded mock-xen is the one
    /// the old process started, attached to, not a new one.
    fn open_with(
        choice: &PlatformChoice,
        rundir: &Path,
        evtchn: Option<Box<dyn EventChannel>>,
        live_update: bool,
    ) -> Result<Self, PlatformError> {
        match choice {
            PlatformChoice::Auto if have_xen() => Self::linux_with(evtchn),
            PlatformChoice::Auto => {
                Self::embedded(&rundir.join(EMBEDDED_SOCKET), evtchn, live_update)
            }
            PlatformChoice::Linux => Self::linux_with(evtchn),
            PlatformChoice::Embedded(path) => Self::embedded(path, evtchn, live_update),
            PlatformChoice::Remote(path) => Self::remote(
                &Connector::remote(path),
                format!("mock-xen at {}", path.display()),
                None,
                evtchn,
            ),
        }
    }

    /// Linux devices.
    pub fn linux() -> Result<Self, PlatformError> {
        Self::linux_with(None)
    }

    fn linux_with(evtchn: Option<Box<dyn EventChannel>>) -> Result<Self, PlatformError> {
        let evtchn_inherited = evtchn.is_some();
        let evtchn = match evtchn {
            Some(handle) => handle,
            None => Box::new(evtchn::LinuxEventChannel::open_inheritable()?),
        };
        Ok(Self {
            evtchn,
            mapper: Box::new(gnttab::LinuxPageMapper::open()?),
            dominfo: Box::new(gnttab::PrivcmdDomainInfo::open()?),
            description: "Xen (Linux /dev/xen devices)".to_string(),
            serve_local_ring: true,
            evtchn_inherited,
            _embedded: None,
        })
    }

    /// mock-xen reached through `connector` (a mock-xen process, or a
    /// machine in this process), with a handle of its own.
    pub fn mock(connector: &Connector) -> Result<Self, PlatformError> {
        Self::remote(connector, "mock-xen".to_string(), None, None)
    }

    /// Every domain the hypervisor knows, or `None` (logged) if it cannot
    /// say.
    pub fn dominfo_list(&mut self) -> Option<Vec<gnttab::DomainInfo>> {
        match self.dominfo.list() {
            Ok(list) => Some(list),
            Err(e) => {
                tracing::warn!("cannot list domains: {e}");
                None
            }
        }
    }

    /// The embedded mock-xen's process id, if this runs on one.
    pub fn embedded_pid(&self) -> Option<u32> {
        self._embedded.as_ref().map(ServerProcess::pid)
    }

    /// The chosen backend for a live update's new process: the event-channel
    /// handle is the descriptor `evtchn_fd` the old process passed down
    /// (ports stay bound); the rest is opened anew (mappings do not survive
    /// exec and are re-made from the stream). An embedded mock-xen is the
    /// old process's, still running as our child: attached to, not started.
    /// With no usable `evtchn_fd`, a new handle is opened and the rings'
    /// ports are bound again.
    pub fn adopt(
        choice: &PlatformChoice,
        rundir: &Path,
        evtchn_fd: i32,
    ) -> Result<Self, PlatformError> {
        if !os::fd_is_open(evtchn_fd) {
            tracing::warn!("live update: no event-channel handle was passed down (fd {evtchn_fd}); binding the rings' ports again");
            return Self::open_with(choice, rundir, None, true);
        }
        let mock = match choice {
            PlatformChoice::Auto => !have_xen(),
            PlatformChoice::Linux => false,
            PlatformChoice::Embedded(_) | PlatformChoice::Remote(_) => true,
        };
        let adopted: Result<Box<dyn EventChannel>, PlatformError> = match mock {
            // The descriptor the old process passed down for its handle
            // (GLOBAL_DATA), checked open above.
            true => os::adopt_mock_evtchn(evtchn_fd)
                .map(|h| Box::new(h) as Box<dyn EventChannel>)
                .map_err(PlatformError::from),
            false => os::adopt_linux_evtchn(evtchn_fd)
                .map(|h| Box::new(h) as Box<dyn EventChannel>)
                .map_err(PlatformError::from),
        };
        let handle = match adopted {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(
                    "live update: cannot adopt the event-channel handle (fd {evtchn_fd}): {e}; binding the rings' ports again"
                );
                None
            }
        };
        Self::open_with(choice, rundir, handle, true)
    }

    /// The embedded mock-xen on `path`: forked now, or after a live update
    /// (`live_update`) the one the old process forked, which is still our
    /// child (the exec kept the process). If that one is gone, a new one
    /// is started so that the sockets are still served, but the guests it
    /// had are lost.
    fn embedded(
        path: &Path,
        evtchn: Option<Box<dyn EventChannel>>,
        live_update: bool,
    ) -> Result<Self, PlatformError> {
        let attached = if live_update {
            match ServerProcess::attach(path) {
                Ok(server) => {
                    if !server.is_child() {
                        tracing::warn!(
                            "live update: the mock-xen at {} (process {}) is not this daemon's: using it, but it will not be stopped with the daemon",
                            path.display(),
                            server.pid()
                        );
                    }
                    Some(server)
                }
                Err(e) => {
                    tracing::warn!(
                        "live update: the embedded mock-xen at {} is gone ({e}); starting a new one: the guests it had are lost",
                        path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let (server, evtchn, how) = match attached {
            Some(server) => (server, evtchn, "kept across the live update"),
            // A new machine knows nothing of an inherited handle.
            None => (ServerProcess::fork(path)?, None, "a process of its own"),
        };
        let connector = Connector::remote(server.path());
        let description = format!(
            "no /dev/xen here: running on an embedded mock-xen (simulated hypervisor; {how}, pid {}), guests join at {}",
            server.pid(),
            server.path().display()
        );
        Self::remote(&connector, description, Some(server), evtchn)
    }

    fn remote(
        connector: &Connector,
        description: String,
        server: Option<ServerProcess>,
        evtchn: Option<Box<dyn EventChannel>>,
    ) -> Result<Self, PlatformError> {
        let evtchn_inherited = evtchn.is_some();
        let evtchn = match evtchn {
            Some(handle) => handle,
            None => Box::new(MockEventChannel::open(connector, 0)?),
        };
        Ok(Self {
            evtchn,
            mapper: Box::new(MockPageMapper::open(connector, 0)?),
            dominfo: Box::new(MockDomainInfo::open(connector, 0)?),
            description,
            serve_local_ring: false,
            evtchn_inherited,
            _embedded: server,
        })
    }
}
