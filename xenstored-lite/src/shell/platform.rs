//! The platform: everything nondeterministic the daemon talks to, behind
//! the traits of `evtchn` and `gnttab`, with its backends — Linux devices
//! or mock-xen (a `mock-xen` process, or one embedded in the daemon).

use std::path::{Path, PathBuf};

use evtchn::EventChannel;
use gnttab::{DomainInfoSource, PageMapper};
use mock_xen::{Connector, MockDomainInfo, MockEventChannel, MockPageMapper, ServerThread};

/// Which backend to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// Linux `/dev/xen` devices when present, else an embedded mock-xen.
    Auto,
    /// Linux `/dev/xen` devices.
    Linux,
    /// A mock-xen embedded in the daemon, serving its socket at this path
    /// so that simulated guests and a toolstack can join.
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
    _embedded: Option<ServerThread>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("description", &self.description)
            .finish()
    }
}

/// Whether this machine has Xen's event-channel device.
pub fn have_xen() -> bool {
    Path::new(evtchn::EVTCHN_DEVICE).exists()
}

impl Platform {
    /// Sets up the chosen backend.
    pub fn open(choice: &PlatformChoice, rundir: &Path) -> Result<Self, PlatformError> {
        match choice {
            PlatformChoice::Auto if have_xen() => Self::linux(),
            PlatformChoice::Auto => Self::embedded(&rundir.join("mock-xen.sock")),
            PlatformChoice::Linux => Self::linux(),
            PlatformChoice::Embedded(path) => Self::embedded(path),
            PlatformChoice::Remote(path) => Self::remote(
                &Connector::remote(path),
                format!("mock-xen at {}", path.display()),
                None,
            ),
        }
    }

    /// Linux devices.
    pub fn linux() -> Result<Self, PlatformError> {
        Ok(Self {
            evtchn: Box::new(evtchn::LinuxEventChannel::open_inheritable()?),
            mapper: Box::new(gnttab::LinuxPageMapper::open()?),
            dominfo: Box::new(gnttab::PrivcmdDomainInfo::open()?),
            description: "Xen (Linux /dev/xen devices)".to_string(),
            serve_local_ring: true,
            _embedded: None,
        })
    }

    fn embedded(path: &Path) -> Result<Self, PlatformError> {
        let server = ServerThread::start(path)?;
        let connector = Connector::remote(server.path());
        let description = format!(
            "no /dev/xen here: running on an embedded mock-xen (simulated hypervisor), guests join at {}",
            server.path().display()
        );
        Self::remote(&connector, description, Some(server))
    }

    fn remote(
        connector: &Connector,
        description: String,
        server: Option<ServerThread>,
    ) -> Result<Self, PlatformError> {
        Ok(Self {
            evtchn: Box::new(MockEventChannel::open(connector, 0)?),
            mapper: Box::new(MockPageMapper::open(connector, 0)?),
            dominfo: Box::new(MockDomainInfo::open(connector, 0)?),
            description,
            serve_local_ring: false,
            _embedded: server,
        })
    }
}
