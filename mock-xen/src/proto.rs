//! The requests a client makes of the simulated hypervisor, and their
//! encoding on the `mock-xen` socket (one `SOCK_SEQPACKET` record per
//! message, little-endian fields, descriptors as `SCM_RIGHTS`).

use xenring::DomId;

use crate::error::Error;

/// A domain as the domain-information interface reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    /// Its id.
    pub domid: DomId,
    /// Changes whenever a domid is reused.
    pub unique_id: u64,
    /// Being destroyed.
    pub dying: bool,
    /// Shut down (crashed, powered off, rebooting, suspended).
    pub shutdown: bool,
    /// `SHUTDOWN_*` reason when `shutdown`.
    pub shutdown_reason: u32,
    /// A control domain.
    pub privileged: bool,
}

/// What the toolstack needs to know about a domain it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainRecord {
    /// The domain.
    pub info: DomainInfo,
    /// Its xenstore page.
    pub store_mfn: u64,
    /// Its unbound port for the xenstore domain (0 for dom0).
    pub store_port: u32,
    /// Its event-word slot.
    pub slot: u32,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Identify the connection as acting for `domid`; answered with the
    /// machine-memory and event-word memfds.
    Hello {
        /// The domain.
        domid: DomId,
    },
    /// Create a guest whose xenstore page is granted to `xenstore_domid`.
    CreateDomain {
        /// The xenstore domain.
        xenstore_domid: DomId,
    },
    /// Shut a domain down.
    ShutdownDomain {
        /// The domain.
        domid: DomId,
        /// `SHUTDOWN_*`.
        reason: u32,
    },
    /// Destroy a domain.
    DestroyDomain {
        /// The domain.
        domid: DomId,
    },
    /// List every domain.
    ListDomains,
    /// One domain's record.
    DomainRecord {
        /// The domain.
        domid: DomId,
    },
    /// Make this connection an event-channel handle; answered with its eventfd.
    OpenEvtchn,
    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
    BindInterdomain {
        /// Remote domain.
        remote: DomId,
        /// Its unbound port.
        remote_port: u32,
    },
    /// `IOCTL_EVTCHN_BIND_VIRQ`.
    BindVirq {
        /// The VIRQ.
        virq: u32,
    },
    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
    BindUnbound {
        /// Who may bind to it.
        remote: DomId,
    },
    /// `EVTCHNOP_alloc_unbound` for another domain (toolstack), unowned.
    AllocUnbound {
        /// Domain to allocate in.
        domid: DomId,
        /// Who may bind to it.
        remote: DomId,
    },
    /// Attach an unowned port of our domain to this handle (a guest kernel
    /// taking the store port from its start info).
    Claim {
        /// The port.
        port: u32,
    },
    /// `IOCTL_EVTCHN_UNBIND`.
    Unbind {
        /// The port.
        port: u32,
    },
    /// Where notifications on `port` go (for direct notification).
    PeerOf {
        /// The local port.
        port: u32,
    },
    /// After `exec()`: the handle's eventfd and bound ports again.
    Readopt,
    /// Map `domid`'s grant `gref`.
    MapGrant {
        /// Granting domain.
        domid: DomId,
        /// Reference.
        gref: u32,
    },
    /// Map `domid`'s frame `mfn` (privileged, or one's own frame).
    MapForeign {
        /// Owner.
        domid: DomId,
        /// Frame.
        mfn: u64,
    },
    /// Drop one mapping of `mfn`.
    Unmap {
        /// Frame.
        mfn: u64,
    },
    /// Grant one of our frames to `to` as `gref`.
    Grant {
        /// Reference.
        gref: u32,
        /// Frame.
        mfn: u64,
        /// Grantee.
        to: DomId,
    },
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Done.
    Ok,
    /// Hello: our domain's event slot (fds: machine memory, event words).
    Hello {
        /// Event slot of the connection's domain.
        slot: u32,
    },
    /// A domain record.
    Domain(DomainRecord),
    /// Every domain.
    Domains(Vec<DomainInfo>),
    /// Event channel opened (fd: its eventfd).
    Evtchn {
        /// Event slot of the connection's domain.
        slot: u32,
    },
    /// A port number.
    Port(u32),
    /// The peer of a port (fd: the peer owner's eventfd when `has_fd`).
    Peer {
        /// Peer's event slot.
        slot: u32,
        /// Peer port.
        port: u32,
        /// Generation of the peer's binding.
        gen: u32,
        /// Whether an eventfd accompanies the answer.
        has_fd: bool,
    },
    /// The port is not connected to anybody.
    NoPeer,
    /// Readopt (fd: the eventfd).
    Readopt {
        /// Event slot of the connection's domain.
        slot: u32,
        /// Ports bound through the handle.
        ports: Vec<u32>,
    },
    /// A frame to map (offset = mfn * 4096 in the machine memfd).
    Frame(u64),
    /// The request failed.
    Error {
        /// `Error::code`.
        code: u32,
        /// Its message.
        message: String,
    },
}

/// Longest encoded message accepted.
pub const MAX_MESSAGE: usize = 65536;

struct Writer(Vec<u8>);

impl Writer {
    fn tag(mut self, t: u8) -> Self {
        self.0.push(t);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bool(self, v: bool) -> Self {
        self.tag(u8::from(v))
    }
    fn info(self, i: &DomainInfo) -> Self {
        self.u16(i.domid)
            .u64(i.unique_id)
            .bool(i.dying)
            .bool(i.shutdown)
            .u32(i.shutdown_reason)
            .bool(i.privileged)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        if self.0.len() < N {
            return Err(Error::Protocol("truncated message"));
        }
        let (head, tail) = self.0.split_at(N);
        self.0 = tail;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    fn tag(&mut self) -> Result<u8, Error> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn bool(&mut self) -> Result<bool, Error> {
        match self.tag()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Protocol("bad boolean")),
        }
    }
    fn info(&mut self) -> Result<DomainInfo, Error> {
        Ok(DomainInfo {
            domid: self.u16()?,
            unique_id: self.u64()?,
            dying: self.bool()?,
            shutdown: self.bool()?,
            shutdown_reason: self.u32()?,
            privileged: self.bool()?,
        })
    }
    fn count(&mut self) -> Result<usize, Error> {
        let n = self.u32()? as usize;
        if n > MAX_MESSAGE {
            return Err(Error::Protocol("list too long"));
        }
        Ok(n)
    }
    fn finish<T>(self, value: T) -> Result<T, Error> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Error::Protocol("trailing bytes"))
        }
    }
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let w = Writer(Vec::with_capacity(16));
        let w = match *self {
            Request::Hello { domid } => w.tag(0).u16(domid),
            Request::CreateDomain { xenstore_domid } => w.tag(1).u16(xenstore_domid),
            Request::ShutdownDomain { domid, reason } => w.tag(2).u16(domid).u32(reason),
            Request::DestroyDomain { domid } => w.tag(3).u16(domid),
            Request::ListDomains => w.tag(4),
            Request::DomainRecord { domid } => w.tag(5).u16(domid),
            Request::OpenEvtchn => w.tag(6),
            Request::BindInterdomain {
                remote,
                remote_port,
            } => w.tag(7).u16(remote).u32(remote_port),
            Request::BindVirq { virq } => w.tag(8).u32(virq),
            Request::BindUnbound { remote } => w.tag(9).u16(remote),
            Request::AllocUnbound { domid, remote } => w.tag(10).u16(domid).u16(remote),
            Request::Claim { port } => w.tag(11).u32(port),
            Request::Unbind { port } => w.tag(12).u32(port),
            Request::PeerOf { port } => w.tag(13).u32(port),
            Request::Readopt => w.tag(14),
            Request::MapGrant { domid, gref } => w.tag(15).u16(domid).u32(gref),
            Request::MapForeign { domid, mfn } => w.tag(16).u16(domid).u64(mfn),
            Request::Unmap { mfn } => w.tag(17).u64(mfn),
            Request::Grant { gref, mfn, to } => w.tag(18).u32(gref).u64(mfn).u16(to),
        };
        w.0
    }

    /// Decodes a request, strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        let req = match r.tag()? {
            0 => Request::Hello { domid: r.u16()? },
            1 => Request::CreateDomain {
                xenstore_domid: r.u16()?,
            },
            2 => Request::ShutdownDomain {
                domid: r.u16()?,
                reason: r.u32()?,
            },
            3 => Request::DestroyDomain { domid: r.u16()? },
            4 => Request::ListDomains,
            5 => Request::DomainRecord { domid: r.u16()? },
            6 => Request::OpenEvtchn,
            7 => Request::BindInterdomain {
                remote: r.u16()?,
                remote_port: r.u32()?,
            },
            8 => Request::BindVirq { virq: r.u32()? },
            9 => Request::BindUnbound { remote: r.u16()? },
            10 => Request::AllocUnbound {
                domid: r.u16()?,
                remote: r.u16()?,
            },
            11 => Request::Claim { port: r.u32()? },
            12 => Request::Unbind { port: r.u32()? },
            13 => Request::PeerOf { port: r.u32()? },
            14 => Request::Readopt,
            15 => Request::MapGrant {
                domid: r.u16()?,
                gref: r.u32()?,
            },
            16 => Request::MapForeign {
                domid: r.u16()?,
                mfn: r.u64()?,
            },
            17 => Request::Unmap { mfn: r.u64()? },
            18 => Request::Grant {
                gref: r.u32()?,
                mfn: r.u64()?,
                to: r.u16()?,
            },
            _ => return Err(Error::Protocol("unknown request")),
        };
        r.finish(req)
    }
}

impl Response {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let w = Writer(Vec::with_capacity(16));
        let w = match self {
            Response::Ok => w.tag(0),
            Response::Hello { slot } => w.tag(1).u32(*slot),
            Response::Domain(rec) => w
                .tag(2)
                .info(&rec.info)
                .u64(rec.store_mfn)
                .u32(rec.store_port)
                .u32(rec.slot),
            Response::Domains(list) => {
                let n = u32::try_from(list.len()).unwrap_or(u32::MAX);
                list.iter().fold(w.tag(3).u32(n), |w, i| w.info(i))
            }
            Response::Evtchn { slot } => w.tag(4).u32(*slot),
            Response::Port(p) => w.tag(5).u32(*p),
            Response::Peer {
                slot,
                port,
                gen,
                has_fd,
            } => w.tag(6).u32(*slot).u32(*port).u32(*gen).bool(*has_fd),
            Response::NoPeer => w.tag(7),
            Response::Readopt { slot, ports } => {
                let n = u32::try_from(ports.len()).unwrap_or(u32::MAX);
                ports
                    .iter()
                    .fold(w.tag(8).u32(*slot).u32(n), |w, &p| w.u32(p))
            }
            Response::Frame(mfn) => w.tag(9).u64(*mfn),
            Response::Error { code, message } => {
                let mut w = w.tag(10).u32(*code);
                w.0.extend_from_slice(message.as_bytes());
                w
            }
        };
        w.0
    }

    /// Decodes a response, strictly.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader(bytes);
        let resp = match r.tag()? {
            0 => Response::Ok,
            1 => Response::Hello { slot: r.u32()? },
            2 => Response::Domain(DomainRecord {
                info: r.info()?,
                store_mfn: r.u64()?,
                store_port: r.u32()?,
                slot: r.u32()?,
            }),
            3 => {
                let n = r.count()?;
                let list = (0..n).map(|_| r.info()).collect::<Result<_, _>>()?;
                Response::Domains(list)
            }
            4 => Response::Evtchn { slot: r.u32()? },
            5 => Response::Port(r.u32()?),
            6 => Response::Peer {
                slot: r.u32()?,
                port: r.u32()?,
                gen: r.u32()?,
                has_fd: r.bool()?,
            },
            7 => Response::NoPeer,
            8 => {
                let slot = r.u32()?;
                let n = r.count()?;
                let ports = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
                Response::Readopt { slot, ports }
            }
            9 => Response::Frame(r.u64()?),
            10 => {
                let code = r.u32()?;
                let message = String::from_utf8_lossy(r.0).into_owned();
                r.0 = &[];
                Response::Error { code, message }
            }
            _ => return Err(Error::Protocol("unknown response")),
        };
        r.finish(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_proto_requests_roundtrip() {
        let all = [
            Request::Hello { domid: 3 },
            Request::CreateDomain { xenstore_domid: 0 },
            Request::ShutdownDomain {
                domid: 4,
                reason: 2,
            },
            Request::DestroyDomain { domid: 4 },
            Request::ListDomains,
            Request::DomainRecord { domid: 9 },
            Request::OpenEvtchn,
            Request::BindInterdomain {
                remote: 5,
                remote_port: 1,
            },
            Request::BindVirq { virq: 3 },
            Request::BindUnbound { remote: 0 },
            Request::AllocUnbound {
                domid: 5,
                remote: 0,
            },
            Request::Claim { port: 1 },
            Request::Unbind { port: 7 },
            Request::PeerOf { port: 7 },
            Request::Readopt,
            Request::MapGrant { domid: 5, gref: 1 },
            Request::MapForeign {
                domid: 5,
                mfn: 0x1234,
            },
            Request::Unmap { mfn: 0x1234 },
            Request::Grant {
                gref: 9,
                mfn: 3,
                to: 0,
            },
        ];
        for req in all {
            assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        }
        assert!(Request::decode(&[99]).is_err());
        assert!(Request::decode(&[0, 1]).is_err());
        assert!(Request::decode(&[4, 0]).is_err());
    }

    #[test]
    fn test_proto_responses_roundtrip() {
        let info = DomainInfo {
            domid: 5,
            unique_id: 77,
            dying: false,
            shutdown: true,
            shutdown_reason: 3,
            privileged: false,
        };
        let all = [
            Response::Ok,
            Response::Hello { slot: 2 },
            Response::Domain(DomainRecord {
                info,
                store_mfn: 9,
                store_port: 1,
                slot: 4,
            }),
            Response::Domains(vec![info, info]),
            Response::Evtchn { slot: 1 },
            Response::Port(5),
            Response::Peer {
                slot: 1,
                port: 2,
                gen: 0x300,
                has_fd: true,
            },
            Response::NoPeer,
            Response::Readopt {
                slot: 0,
                ports: vec![1, 2, 3],
            },
            Response::Frame(42),
            Response::Error {
                code: 3,
                message: "no".into(),
            },
        ];
        for resp in all {
            let bytes = resp.encode();
            assert_eq!(Response::decode(&bytes).unwrap(), resp);
            for cut in 0..bytes.len() {
                // An error message may be cut anywhere after its code.
                if !matches!(resp, Response::Error { .. }) || cut < 5 {
                    assert!(
                        Response::decode(&bytes[..cut]).is_err(),
                        "{resp:?} cut at {cut}"
                    );
                }
            }
            let mut longer = bytes.clone();
            longer.push(0);
            if !matches!(resp, Response::Error { .. }) {
                assert!(matches!(
                    Response::decode(&longer),
                    Err(Error::Protocol("trailing bytes"))
                ));
            }
        }
    }

    #[test]
    fn test_proto_refuses_lists_over_the_limit_and_bad_booleans() {
        let list = |tag: u8, n: usize| {
            let mut b = vec![tag];
            if tag == 8 {
                b.extend_from_slice(&0u32.to_le_bytes());
            }
            b.extend_from_slice(&u32::try_from(n).unwrap().to_le_bytes());
            b
        };
        for tag in [3, 8] {
            assert!(matches!(
                Response::decode(&list(tag, MAX_MESSAGE + 1)),
                Err(Error::Protocol("list too long"))
            ));
            // At the limit the count is taken; the items are missing.
            assert!(matches!(
                Response::decode(&list(tag, MAX_MESSAGE)),
                Err(Error::Protocol("truncated message"))
            ));
        }
        let mut peer = Response::Peer {
            slot: 1,
            port: 2,
            gen: 3,
            has_fd: true,
        }
        .encode();
        *peer.last_mut().unwrap() = 2;
        assert!(matches!(
            Response::decode(&peer),
            Err(Error::Protocol("bad boolean"))
        ));
    }
}
