//! [`gnttab::PageMapper`] and [`gnttab::DomainInfoSource`] on the simulated
//! hypervisor: a mapping is an `mmap` of the machine-memory memfd at the
//! frame's offset, granted (or refused) by the hypervisor's grant tables.

use std::io;
use std::sync::Arc;

use gnttab::{
    DomId, DomainInfo, DomainInfoSource, ForeignPage, GrantRef, LocalXenstore, PageMapper,
    ShutdownReason,
};
use xenring::RingPage;

use crate::conn::{Conn, Connector};
use crate::error::Error;
use crate::hv::Hypervisor;
use crate::memory::{SharedMap, PAGE_SIZE};
use crate::proto::{Request, Response};

fn op_error(op: &'static str, e: Error) -> gnttab::Error {
    gnttab::Error::Ioctl {
        op,
        source: io::Error::other(e),
    }
}

/// One mapped page; unmapped (and the hypervisor told) on drop.
#[derive(Debug)]
pub struct MockMapping {
    map: SharedMap,
    mfn: u64,
    conn: Arc<Conn>,
}

impl MockMapping {
    /// The machine frame mapped.
    pub fn mfn(&self) -> u64 {
        self.mfn
    }
}

impl ForeignPage for MockMapping {
    fn ring(&self) -> RingPage<'_> {
        match self.map.ring(0) {
            Some(ring) => ring,
            // `map` is exactly one page at offset 0, so `ring(0)` always
            // succeeds; this arm cannot be reached.
            None => unreachable!("a one-page mapping has a ring at offset 0"),
        }
    }
}

impl Drop for MockMapping {
    fn drop(&mut self) {
        if let Err(e) = self.conn.call_ok(&Request::Unmap { mfn: self.mfn }) {
            // The hypervisor went away or already forgot us: nothing to undo.
            let _ = e;
        }
    }
}

/// Maps pages for one domain (normally dom0, the xenstore domain).
#[derive(Debug, Clone)]
pub struct MockPageMapper {
    conn: Arc<Conn>,
}

impl MockPageMapper {
    /// A mapper acting for `domid`.
    pub fn open(connector: &Connector, domid: DomId) -> Result<Self, Error> {
        Ok(Self {
            conn: Arc::new(connector.connect(domid)?),
        })
    }

    /// Keeps the mapper's connection (and with it the domain's mapping
    /// rights) open across `exec()`; returns the descriptor number. Fails if
    /// mappings made through it are still alive.
    pub fn into_inheritable_fd(self) -> Result<std::os::fd::RawFd, Error> {
        Arc::try_unwrap(self.conn)
            .map_err(|_| Error::Protocol("mappings made through this mapper are still alive"))?
            .into_inheritable_fd()
    }

    /// Re-adopts a mapper inherited across `exec()`.
    ///
    /// # Safety
    ///
    /// As [`Conn::adopt`]: `fd` is an open mock-xen connection this process
    /// owns, made inheritable by [`MockPageMapper::into_inheritable_fd`].
    pub unsafe fn adopt(fd: std::os::fd::RawFd, domid: DomId) -> Result<Self, Error> {
        // SAFETY: forwarded from our caller's contract.
        let conn = unsafe { Conn::adopt(fd, domid)? };
        Ok(Self::from_conn(conn))
    }

    /// A mapper over an existing connection.
    pub fn from_conn(conn: Conn) -> Self {
        Self {
            conn: Arc::new(conn),
        }
    }

    fn map(&self, request: Request) -> Result<MockMapping, Error> {
        let (response, _) = self.conn.call(&request)?;
        let Response::Frame(mfn) = response else {
            return Err(Error::Protocol("unexpected answer to a map request"));
        };
        let map = match SharedMap::new(
            self.conn.machine_fd().as_ref(),
            Hypervisor::frame_offset(mfn),
            PAGE_SIZE,
        ) {
            Ok(map) => map,
            Err(e) => {
                let _ = self.conn.call_ok(&Request::Unmap { mfn });
                return Err(e);
            }
        };
        Ok(MockMapping {
            map,
            mfn,
            conn: Arc::clone(&self.conn),
        })
    }

    /// Maps a grant (typed result, for mock-aware callers).
    pub fn map_grant_mock(&self, domid: DomId, gref: GrantRef) -> Result<MockMapping, Error> {
        self.map(Request::MapGrant { domid, gref })
    }

    /// Maps a frame (typed result, for mock-aware callers).
    pub fn map_foreign_mock(&self, domid: DomId, mfn: u64) -> Result<MockMapping, Error> {
        self.map(Request::MapForeign { domid, mfn })
    }
}

impl PageMapper for MockPageMapper {
    fn map_grant(
        &self,
        domid: DomId,
        gref: GrantRef,
    ) -> Result<Box<dyn ForeignPage>, gnttab::Error> {
        self.map_grant_mock(domid, gref)
            .map(|m| Box::new(m) as Box<dyn ForeignPage>)
            .map_err(|e| op_error("IOCTL_GNTDEV_MAP_GRANT_REF", e))
    }

    fn map_foreign(&self, domid: DomId, mfn: u64) -> Result<Box<dyn ForeignPage>, gnttab::Error> {
        self.map_foreign_mock(domid, mfn)
            .map(|m| Box::new(m) as Box<dyn ForeignPage>)
            .map_err(|e| gnttab::Error::ForeignFrame {
                domid,
                mfn,
                source: io::Error::other(e),
            })
    }

    fn map_local_xenstore(&self) -> Result<LocalXenstore, gnttab::Error> {
        let me = self.conn.domid();
        let record = match self.conn.call(&Request::DomainRecord { domid: me }) {
            Ok((Response::Domain(record), _)) => record,
            Ok(_) => return Err(op_error("xsd_kva", Error::Protocol("unexpected answer"))),
            Err(e) => return Err(op_error("xsd_kva", e)),
        };
        let page = self.map_foreign(me, record.store_mfn)?;
        Ok(LocalXenstore {
            page,
            port: evtchn::Port::new(record.store_port),
        })
    }
}

/// Domain information from the simulated hypervisor (privileged callers).
#[derive(Debug)]
pub struct MockDomainInfo {
    conn: Conn,
}

impl MockDomainInfo {
    /// A source acting for `domid` (must be privileged to list domains).
    pub fn open(connector: &Connector, domid: DomId) -> Result<Self, Error> {
        Ok(Self {
            conn: connector.connect(domid)?,
        })
    }
}

fn convert(info: &crate::proto::DomainInfo) -> DomainInfo {
    let mut handle = [0u8; 16];
    handle[..8].copy_from_slice(&info.unique_id.to_le_bytes());
    DomainInfo {
        domid: info.domid,
        dying: info.dying,
        shutdown: info.shutdown.then(|| {
            ShutdownReason::from_code(u8::try_from(info.shutdown_reason).unwrap_or(u8::MAX))
        }),
        handle,
        unique_id: Some(info.unique_id),
    }
}

impl DomainInfoSource for MockDomainInfo {
    fn list(&mut self) -> Result<Vec<DomainInfo>, gnttab::Error> {
        match self.conn.call(&Request::ListDomains) {
            Ok((Response::Domains(list), _)) => Ok(list.iter().map(convert).collect()),
            Ok(_) => Err(gnttab::Error::Hypercall {
                op: "list domains",
                source: io::Error::other(Error::Protocol("unexpected answer")),
            }),
            Err(e) => Err(gnttab::Error::Hypercall {
                op: "list domains",
                source: io::Error::other(e),
            }),
        }
    }

    fn get(&mut self, domid: DomId) -> Result<Option<DomainInfo>, gnttab::Error> {
        Ok(self.list()?.into_iter().find(|d| d.domid == domid))
    }
}
