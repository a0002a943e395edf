//! Toolstack helpers: what `xl create` / `xl destroy` do with the
//! hypervisor and the xenstore daemon.

use xenring::{Client, DomId};

use crate::conn::{Conn, Connector};
use crate::error::Error;
use crate::proto::{DomainInfo, DomainRecord, Request, Response};

/// `SHUTDOWN_poweroff`.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_crash`.
pub const SHUTDOWN_CRASH: u32 = 3;

/// A dom0 toolstack.
#[derive(Debug)]
pub struct Toolstack {
    conn: Conn,
}

impl Toolstack {
    /// A toolstack running in dom0.
    pub fn open(connector: &Connector) -> Result<Self, Error> {
        Ok(Self {
            conn: connector.connect(0)?,
        })
    }

    /// Creates a guest: a new domid (a new unique id even when a domid is
    /// reused), its xenstore page granted to dom0 as grant 1, and an unbound
    /// port for dom0.
    pub fn create_domain(&self) -> Result<DomainRecord, Error> {
        match self
            .conn
            .call(&Request::CreateDomain { xenstore_domid: 0 })?
            .0
        {
            Response::Domain(record) => Ok(record),
            _ => Err(Error::Protocol("unexpected answer to create_domain")),
        }
    }

    /// Introduces a created domain to a xenstore daemon (`XS_INTRODUCE`
    /// domid, mfn, port over the daemon's socket).
    pub fn introduce<T: std::io::Read + std::io::Write>(
        &self,
        xs: &mut Client<T>,
        record: &DomainRecord,
    ) -> Result<(), xenring::Error> {
        xs.introduce(record.info.domid, record.store_mfn, record.store_port)
    }

    /// Shuts a domain down (it still exists; `VIRQ_DOM_EXC` fires).
    pub fn shutdown(&self, domid: DomId, reason: u32) -> Result<(), Error> {
        self.conn
            .call_ok(&Request::ShutdownDomain { domid, reason })
    }

    /// Destroys a domain (`VIRQ_DOM_EXC` fires; it disappears once nobody
    /// maps its pages).
    pub fn destroy(&self, domid: DomId) -> Result<(), Error> {
        self.conn.call_ok(&Request::DestroyDomain { domid })
    }

    /// Every domain.
    pub fn list(&self) -> Result<Vec<DomainInfo>, Error> {
        match self.conn.call(&Request::ListDomains)?.0 {
            Response::Domains(list) => Ok(list),
            _ => Err(Error::Protocol("unexpected answer to list_domains")),
        }
    }
}
