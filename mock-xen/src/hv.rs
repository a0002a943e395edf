//! The simulated hypervisor: domains, machine memory, grant tables, event
//! channels and `VIRQ_DOM_EXC`.
//!
//! Everything a client asks for arrives as a [`Request`] on a connection and
//! is answered by [`Hypervisor::handle`], both in-process (a direct call under
//! a mutex) and in the `mock-xen` process (decoded from a socket): one model,
//! two ways in.
//!
//! # Event channels
//!
//! Each port has a 32-bit *event word* in a shared memfd that every client
//! maps: bit 0 pending, bit 1 masked, bits 8.. a generation bumped whenever
//! the port's binding changes. Notifying sets the peer's pending bit and, if
//! it was neither pending nor masked, writes the eventfd of the connection
//! that owns the peer port. A client reports a port as pending by moving it
//! from pending to masked (as Linux's `/dev/xen/evtchn` masks a port when it
//! delivers it) and unmasks it by clearing the mask bit, re-raising the event
//! if it became pending meanwhile. Notifications therefore go straight from
//! one process to another without passing through the mock-xen process, as
//! they do not pass through a process on real Xen.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};
use xenring::DomId;

use crate::error::Error;
use crate::memory::{create_memfd, MachineMemory, SharedMap, PAGE_SIZE};
use crate::proto::{DomainInfo, DomainRecord, Request, Response};

/// Ports per domain (valid ports are 1..PORTS_PER_DOMAIN; 0 is never valid).
pub const PORTS_PER_DOMAIN: u32 = 4096;
/// Domains that can exist at once (event-word slots).
pub const MAX_DOMAINS: u32 = 1024;
/// Machine memory in pages (sparse; 256 MiB of address space).
pub const MACHINE_PAGES: u64 = 65536;
/// `GNTTAB_RESERVED_XENSTORE`.
pub const GREF_XENSTORE: u32 = gnttab::GNTTAB_RESERVED_XENSTORE;
/// `VIRQ_DOM_EXC` (as `xen-sys` defines it).
pub const VIRQ_DOM_EXC: u32 = evtchn::VIRQ_DOM_EXC;
/// Highest domid handed out to guests (below `DOMID_FIRST_RESERVED`).
pub const DOMID_MAX: DomId = xenring::DOMID_FIRST_RESERVED - 1;

/// Event word: the port is pending.
pub const EV_PENDING: u32 = 1;
/// Event word: the port is masked (delivered and not yet unmasked).
pub const EV_MASKED: u32 = 2;
/// Event word: one generation step (bits 8..).
pub const EV_GEN_STEP: u32 = 1 << 8;
/// Event word: the generation bits.
pub const EV_GEN_MASK: u32 = !0xff;

/// A connection's id inside the hypervisor.
pub type ConnId = u64;

/// Index of the event word of `(slot, port)`.
pub fn event_index(slot: u32, port: u32) -> usize {
    // Both factors are bounded (MAX_DOMAINS * PORTS_PER_DOMAIN fits in u32).
    (slot as usize) * (PORTS_PER_DOMAIN as usize) + port as usize
}

/// Size of the event-word memfd.
pub const EVENT_BYTES: usize = (MAX_DOMAINS as usize) * (PORTS_PER_DOMAIN as usize) * 4;

/// Sets `port` pending in `word`; returns whether the owner must be woken.
pub fn raise(word: &AtomicU32) -> bool {
    let old = word.fetch_or(EV_PENDING, Ordering::SeqCst);
    old & (EV_PENDING | EV_MASKED) == 0
}

/// Wakes whoever polls `eventfd`.
pub fn kick(eventfd: impl AsFd) {
    // A full eventfd counter (2^64 - 2 kicks unread) would refuse the
    // write with EAGAIN; the reader is already woken then, which is all a
    // kick is for.
    let _ = nix::unistd::write(eventfd, &1u64.to_ne_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    Unbound { remote: DomId },
    Interdomain { remote: DomId, remote_port: u32 },
    Virq(u32),
}

#[derive(Debug, Clone, Copy)]
struct PortState {
    binding: Binding,
    owner: Option<ConnId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DomState {
    Running,
    Shutdown(u32),
    Dying,
}

#[derive(Debug)]
struct Domain {
    unique_id: u64,
    privileged: bool,
    state: DomState,
    slot: u32,
    store_mfn: u64,
    store_port: u32,
    pages: BTreeSet<u64>,
    grants: BTreeMap<u32, (u64, DomId)>,
    ports: BTreeMap<u32, PortState>,
    /// Mappings of this domain's pages held by connections.
    mapped: u64,
}

#[derive(Debug, Default)]
struct Conn {
    domid: Option<DomId>,
    eventfd: Option<OwnedFd>,
    ports: BTreeSet<u32>,
    /// mfn → (owning domain, count of mappings through this connection).
    maps: BTreeMap<u64, (DomId, u64)>,
}

/// What a request produced: the response and any fds that go with it.
#[derive(Debug)]
pub struct Reply {
    /// The response.
    pub response: Response,
    /// Descriptors handed to the client (memfds, eventfds).
    pub fds: Vec<OwnedFd>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self {
            response,
            fds: Vec::new(),
        }
    }
}

/// The simulated machine.
#[derive(Debug)]
pub struct Hypervisor {
    memory: MachineMemory,
    events_fd: OwnedFd,
    events: SharedMap,
    domains: BTreeMap<DomId, Domain>,
    free_slots: Vec<u32>,
    next_domid: DomId,
    next_unique: u64,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
}

impl Hypervisor {
    /// A machine with a privileged dom0 (domid 0) and nothing else.
    pub fn new() -> Result<Self, Error> {
        let events_fd = create_memfd("mock-xen-event-words", EVENT_BYTES as u64)?;
        let events = SharedMap::new(&events_fd, 0, EVENT_BYTES)?;
        let mut hv = Self {
            memory: MachineMemory::new(MACHINE_PAGES)?,
            events_fd,
            events,
            domains: BTreeMap::new(),
            free_slots: (0..MAX_DOMAINS).rev().collect(),
            next_domid: 1,
            next_unique: 1,
            conns: BTreeMap::new(),
            next_conn: 1,
        };
        hv.create_domain_with_id(0, true, 0)?;
        Ok(hv)
    }

    /// Opens a connection (not yet identified as a domain).
    pub fn open_conn(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, Conn::default());
        id
    }

    /// Closes a connection: its ports are closed and its mappings dropped,
    /// as when a process holding `/dev/xen/*` handles exits.
    pub fn close_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(domid) = conn.domid {
            for port in conn.ports {
                let _ = self.close_port(domid, port);
            }
        }
        for (mfn, (owner, count)) in conn.maps {
            let _ = mfn;
            self.release_maps(owner, count);
        }
    }

    /// Answers one request from connection `id`.
    pub fn handle(&mut self, id: ConnId, request: Request) -> Result<Reply, Error> {
        if let Request::Hello { domid } = request {
            return self.hello(id, domid);
        }
        let caller = self
            .conns
            .get(&id)
            .and_then(|c| c.domid)
            .ok_or(Error::Protocol("request before hello"))?;
        let reply: Reply = match request {
            Request::Hello { .. } => return Err(Error::Protocol("unreachable")),
            Request::CreateDomain { xenstore_domid } => {
                self.require_privileged(caller, "create a domain")?;
                let domid = self.alloc_domid()?;
                let record = self.create_domain_with_id(domid, false, xenstore_domid)?;
                Response::Domain(record).into()
            }
            Request::ShutdownDomain { domid, reason } => {
                self.require_privileged(caller, "shut a domain down")?;
                self.shutdown(domid, reason)?;
                Response::Ok.into()
            }
            Request::DestroyDomain { domid } => {
                self.require_privileged(caller, "destroy a domain")?;
                self.destroy(domid)?;
                Response::Ok.into()
            }
            Request::ListDomains => {
                self.require_privileged(caller, "list domains")?;
                Response::Domains(self.domains.iter().map(|(&d, dom)| info(d, dom)).collect())
                    .into()
            }
            Request::DomainRecord { domid } => {
                let dom = self.domains.get(&domid).ok_or(Error::NoSuchDomain(domid))?;
                if domid != caller && !self.is_privileged(caller) {
                    return Err(Error::NotPermitted {
                        caller,
                        op: "inspect another domain",
                    });
                }
                Response::Domain(record(domid, dom)).into()
            }
            Request::OpenEvtchn => self.open_evtchn(id, caller)?,
            Request::BindInterdomain {
                remote,
                remote_port,
            } => Response::Port(self.bind_interdomain(id, caller, remote, remote_port)?).into(),
            Request::BindVirq { virq } => Response::Port(self.bind_virq(id, caller, virq)?).into(),
            Request::BindUnbound { remote } => {
                let port = self.alloc_port(caller, Binding::Unbound { remote }, Some(id))?;
                Response::Port(port).into()
            }
            Request::AllocUnbound { domid, remote } => {
                if domid != caller {
                    self.require_privileged(caller, "allocate a port in another domain")?;
                }
                Response::Port(self.alloc_port(domid, Binding::Unbound { remote }, None)?).into()
            }
            Request::Claim { port } => {
                self.claim(id, caller, port)?;
                Response::Ok.into()
            }
            Request::Unbind { port } => {
                self.owned(id, caller, port, "unbind")?;
                self.close_port(caller, port)?;
                Response::Ok.into()
            }
            Request::PeerOf { port } => self.peer_of(id, caller, port)?,
            Request::Readopt => self.readopt(id, caller)?,
            Request::MapGrant { domid, gref } => {
                let mfn = self.map_grant(caller, domid, gref)?;
                self.note_map(id, domid, mfn);
                Response::Frame(mfn).into()
            }
            Request::MapForeign { domid, mfn } => {
                if domid != caller {
                    self.require_privileged(caller, "map another domain's frame")?;
                }
                let dom = self.live_domain(domid)?;
                if !dom.pages.contains(&mfn) {
                    return Err(Error::BadFrame { domid, mfn });
                }
                self.note_map(id, domid, mfn);
                Response::Frame(mfn).into()
            }
            Request::Unmap { mfn } => {
                self.unmap(id, mfn)?;
                Response::Ok.into()
            }
            Request::Grant { gref, mfn, to } => {
                let dom = self
                    .domains
                    .get_mut(&caller)
                    .ok_or(Error::NoSuchDomain(caller))?;
                if !dom.pages.contains(&mfn) {
                    return Err(Error::BadFrame { domid: caller, mfn });
                }
                dom.grants.insert(gref, (mfn, to));
                Response::Ok.into()
            }
        };
        Ok(reply)
    }

    fn hello(&mut self, id: ConnId, domid: DomId) -> Result<Reply, Error> {
        let slot = self.live_domain(domid)?.slot;
        let conn = self.conns.get_mut(&id).ok_or(Error::Closed)?;
        match conn.domid {
            Some(d) if d != domid => {
                return Err(Error::Protocol(
                    "connection already bound to another domain",
                ))
            }
            _ => conn.domid = Some(domid),
        }
        Ok(Reply {
            response: Response::Hello { slot },
            fds: vec![self.memory.fd().try_clone()?, self.events_fd.try_clone()?],
        })
    }

    fn is_privileged(&self, domid: DomId) -> bool {
        self.domains.get(&domid).is_some_and(|d| d.privileged)
    }

    fn require_privileged(&self, caller: DomId, op: &'static str) -> Result<(), Error> {
        if self.is_privileged(caller) {
            Ok(())
        } else {
            Err(Error::NotPermitted { caller, op })
        }
    }

    fn live_domain(&self, domid: DomId) -> Result<&Domain, Error> {
        match self.domains.get(&domid) {
            Some(dom) if dom.state != DomState::Dying => Ok(dom),
            _ => Err(Error::NoSuchDomain(domid)),
        }
    }

    fn alloc_domid(&mut self) -> Result<DomId, Error> {
        for _ in 0..DOMID_MAX {
            let candidate = self.next_domid;
            self.next_domid = if candidate >= DOMID_MAX {
                1
            } else {
                candidate + 1
            };
            if !self.domains.contains_key(&candidate) {
                return Ok(candidate);
            }
        }
        Err(Error::OutOfMemory)
    }

    /// Creates a domain with a given id (tests use this to force domid reuse).
    pub fn create_domain_with_id(
        &mut self,
        domid: DomId,
        privileged: bool,
        xenstore_domid: DomId,
    ) -> Result<DomainRecord, Error> {
        if self.domains.contains_key(&domid) {
            return Err(Error::Protocol("domid in use"));
        }
        let slot = self.free_slots.pop().ok_or(Error::OutOfMemory)?;
        for port in 0..PORTS_PER_DOMAIN {
            if let Some(word) = self.events.word(event_index(slot, port)) {
                word.store(0, Ordering::SeqCst);
            }
        }
        let store_mfn = match self.memory.alloc() {
            Ok(mfn) => mfn,
            Err(e) => {
                self.free_slots.push(slot);
                return Err(e);
            }
        };
        let unique_id = self.next_unique;
        self.next_unique += 1;
        let mut dom = Domain {
            unique_id,
            privileged,
            state: DomState::Running,
            slot,
            store_mfn,
            store_port: 0,
            pages: BTreeSet::from([store_mfn]),
            grants: BTreeMap::from([(GREF_XENSTORE, (store_mfn, xenstore_domid))]),
            ports: BTreeMap::new(),
            mapped: 0,
        };
        {
            // The toolstack's unbound port for the xenstore domain (for dom0
            // itself: the port `/proc/xen/xsd_port` names).
            dom.store_port = 1;
            dom.ports.insert(
                1,
                PortState {
                    binding: Binding::Unbound {
                        remote: xenstore_domid,
                    },
                    owner: None,
                },
            );
        }
        let rec = record(domid, &dom);
        self.domains.insert(domid, dom);
        Ok(rec)
    }

    fn shutdown(&mut self, domid: DomId, reason: u32) -> Result<(), Error> {
        let dom = self
            .domains
            .get_mut(&domid)
            .filter(|d| d.state == DomState::Running)
            .ok_or(Error::NoSuchDomain(domid))?;
        dom.state = DomState::Shutdown(reason);
        self.fire_virq(VIRQ_DOM_EXC);
        Ok(())
    }

    fn destroy(&mut self, domid: DomId) -> Result<(), Error> {
        if domid == 0 {
            return Err(Error::NotPermitted {
                caller: 0,
                op: "destroy dom0",
            });
        }
        let dom = self
            .domains
            .get_mut(&domid)
            .filter(|d| d.state != DomState::Dying)
            .ok_or(Error::NoSuchDomain(domid))?;
        dom.state = DomState::Dying;
        dom.grants.clear();
        let ports: Vec<u32> = dom.ports.keys().copied().collect();
        for port in ports {
            let _ = self.close_port(domid, port);
        }
        // The domain's own connections lose their identity: a dead domain
        // cannot act any more.
        for conn in self.conns.values_mut() {
            if conn.domid == Some(domid) {
                conn.domid = None;
                conn.ports.clear();
            }
        }
        self.fire_virq(VIRQ_DOM_EXC);
        self.reap(domid);
        Ok(())
    }

    /// Removes a dying domain once nothing maps its pages any more.
    fn reap(&mut self, domid: DomId) {
        let ready = self
            .domains
            .get(&domid)
            .is_some_and(|d| d.state == DomState::Dying && d.mapped == 0);
        if !ready {
            return;
        }
        if let Some(dom) = self.domains.remove(&domid) {
            for mfn in dom.pages {
                let _ = self.memory.free(mfn);
            }
            self.free_slots.push(dom.slot);
        }
    }

    fn fire_virq(&mut self, virq: u32) {
        let mut targets = Vec::new();
        for dom in self.domains.values() {
            for (&port, state) in &dom.ports {
                if state.binding == Binding::Virq(virq) {
                    targets.push((dom.slot, port, state.owner));
                }
            }
        }
        for (slot, port, owner) in targets {
            self.raise_and_kick(slot, port, owner);
        }
    }

    fn raise_and_kick(&self, slot: u32, port: u32, owner: Option<ConnId>) {
        let Some(word) = self.events.word(event_index(slot, port)) else {
            return;
        };
        if raise(word) {
            if let Some(fd) = owner
                .and_then(|o| self.conns.get(&o))
                .and_then(|c| c.eventfd.as_ref())
            {
                kick(fd);
            }
        }
    }

    /// A port was (re)allocated: new generation, pending and masked cleared.
    fn reset_word(&self, slot: u32, port: u32) {
        if let Some(word) = self.events.word(event_index(slot, port)) {
            let old = word.load(Ordering::SeqCst);
            word.store(
                (old & EV_GEN_MASK).wrapping_add(EV_GEN_STEP),
                Ordering::SeqCst,
            );
        }
    }

    /// A port's routing changed (its peer bound or closed): new generation,
    /// so that cached routes are re-fetched; an event already pending stays
    /// pending, as on Xen.
    fn bump_gen(&self, slot: u32, port: u32) {
        if let Some(word) = self.events.word(event_index(slot, port)) {
            word.fetch_add(EV_GEN_STEP, Ordering::SeqCst);
        }
    }

    fn alloc_port(
        &mut self,
        domid: DomId,
        binding: Binding,
        owner: Option<ConnId>,
    ) -> Result<u32, Error> {
        let dom = self
            .domains
            .get_mut(&domid)
            .filter(|d| d.state != DomState::Dying)
            .ok_or(Error::NoSuchDomain(domid))?;
        let port = (1..PORTS_PER_DOMAIN)
            .find(|p| !dom.ports.contains_key(p))
            .ok_or(Error::OutOfMemory)?;
        dom.ports.insert(port, PortState { binding, owner });
        let slot = dom.slot;
        self.reset_word(slot, port);
        if let Some(conn) = owner.and_then(|o| self.conns.get_mut(&o)) {
            conn.ports.insert(port);
        }
        Ok(port)
    }

    fn open_evtchn(&mut self, id: ConnId, caller: DomId) -> Result<Reply, Error> {
        let slot = self.live_domain(caller)?.slot;
        let conn = self.conns.get_mut(&id).ok_or(Error::Closed)?;
        if conn.eventfd.is_none() {
            let fd =
                EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                    .map_err(|source| Error::Sys {
                        op: "eventfd",
                        source,
                    })?;
            conn.eventfd = Some(OwnedFd::from(fd));
        }
        let fd = conn.eventfd.as_ref().ok_or(Error::Closed)?.try_clone()?;
        Ok(Reply {
            response: Response::Evtchn { slot },
            fds: vec![fd],
        })
    }

    fn bind_interdomain(
        &mut self,
        id: ConnId,
        caller: DomId,
        remote: DomId,
        remote_port: u32,
    ) -> Result<u32, Error> {
        self.require_evtchn(id)?;
        let remote_state = self
            .live_domain(remote)?
            .ports
            .get(&remote_port)
            .copied()
            .ok_or(Error::BadPort {
                domid: remote,
                port: remote_port,
                op: "bind_interdomain",
            })?;
        match remote_state.binding {
            Binding::Unbound { remote: allowed } if allowed == caller => {}
            _ => {
                return Err(Error::BadPort {
                    domid: remote,
                    port: remote_port,
                    op: "bind_interdomain (not unbound for this domain)",
                })
            }
        }
        let port = self.alloc_port(
            caller,
            Binding::Interdomain {
                remote,
                remote_port,
            },
            Some(id),
        )?;
        let rdom = self
            .domains
            .get_mut(&remote)
            .ok_or(Error::NoSuchDomain(remote))?;
        if let Some(state) = rdom.ports.get_mut(&remote_port) {
            state.binding = Binding::Interdomain {
                remote: caller,
                remote_port: port,
            };
        }
        let rslot = rdom.slot;
        // Keep a pending event the peer raised before we bound (none can be
        // raised on an unbound port), but make the peer's cached routing stale.
        self.bump_gen(rslot, remote_port);
        Ok(port)
    }

    fn bind_virq(&mut self, id: ConnId, caller: DomId, virq: u32) -> Result<u32, Error> {
        self.require_evtchn(id)?;
        if virq == VIRQ_DOM_EXC {
            self.require_privileged(caller, "bind VIRQ_DOM_EXC")?;
        }
        self.alloc_port(caller, Binding::Virq(virq), Some(id))
    }

    fn require_evtchn(&self, id: ConnId) -> Result<(), Error> {
        match self.conns.get(&id) {
            Some(conn) if conn.eventfd.is_some() => Ok(()),
            _ => Err(Error::Protocol("event-channel request before open_evtchn")),
        }
    }

    fn claim(&mut self, id: ConnId, caller: DomId, port: u32) -> Result<(), Error> {
        self.require_evtchn(id)?;
        let dom = self
            .domains
            .get_mut(&caller)
            .ok_or(Error::NoSuchDomain(caller))?;
        let slot = dom.slot;
        let state = dom.ports.get_mut(&port).ok_or(Error::BadPort {
            domid: caller,
            port,
            op: "claim",
        })?;
        if state.owner.is_some() {
            return Err(Error::BadPort {
                domid: caller,
                port,
                op: "claim (already owned)",
            });
        }
        state.owner = Some(id);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.ports.insert(port);
        }
        // Routing to this port changed (it now has someone to wake): peers
        // re-fetch it. An event raised while nobody owned it stays pending
        // and is reported now.
        if let Some(word) = self.events.word(event_index(slot, port)) {
            let old = word.fetch_add(EV_GEN_STEP, Ordering::SeqCst);
            if old & EV_PENDING != 0 && old & EV_MASKED == 0 {
                if let Some(fd) = self.conns.get(&id).and_then(|c| c.eventfd.as_ref()) {
                    kick(fd);
                }
            }
        }
        Ok(())
    }

    fn owned(&self, id: ConnId, caller: DomId, port: u32, op: &'static str) -> Result<(), Error> {
        let ok = self
            .domains
            .get(&caller)
            .and_then(|d| d.ports.get(&port))
            .is_some_and(|s| s.owner == Some(id));
        if ok {
            Ok(())
        } else {
            Err(Error::BadPort {
                domid: caller,
                port,
                op,
            })
        }
    }

    /// `EVTCHNOP_close`: frees the port; an interdomain peer goes back to
    /// unbound (for us).
    fn close_port(&mut self, domid: DomId, port: u32) -> Result<(), Error> {
        let dom = self
            .domains
            .get_mut(&domid)
            .ok_or(Error::NoSuchDomain(domid))?;
        let state = dom.ports.remove(&port).ok_or(Error::BadPort {
            domid,
            port,
            op: "close",
        })?;
        let slot = dom.slot;
        self.reset_word(slot, port);
        if let Some(conn) = state.owner.and_then(|o| self.conns.get_mut(&o)) {
            conn.ports.remove(&port);
        }
        if let Binding::Interdomain {
            remote,
            remote_port,
        } = state.binding
        {
            if let Some(rdom) = self.domains.get_mut(&remote) {
                let rslot = rdom.slot;
                if let Some(rstate) = rdom.ports.get_mut(&remote_port) {
                    rstate.binding = Binding::Unbound { remote: domid };
                    self.bump_gen(rslot, remote_port);
                }
            }
        }
        Ok(())
    }

    fn peer_of(&self, id: ConnId, caller: DomId, port: u32) -> Result<Reply, Error> {
        self.owned(id, caller, port, "notify")?;
        let state = self
            .domains
            .get(&caller)
            .and_then(|d| d.ports.get(&port))
            .ok_or(Error::BadPort {
                domid: caller,
                port,
                op: "notify",
            })?;
        let (remote, remote_port) = match state.binding {
            Binding::Interdomain {
                remote,
                remote_port,
            } => (remote, remote_port),
            // Notifying an unbound or VIRQ port does nothing (as on Xen).
            _ => return Ok(Response::NoPeer.into()),
        };
        let rdom = self
            .domains
            .get(&remote)
            .ok_or(Error::NoSuchDomain(remote))?;
        let rstate = rdom.ports.get(&remote_port).ok_or(Error::BadPort {
            domid: remote,
            port: remote_port,
            op: "notify (peer)",
        })?;
        let gen = self
            .events
            .word(event_index(rdom.slot, remote_port))
            .map_or(0, |w| w.load(Ordering::SeqCst) & EV_GEN_MASK);
        let fd = rstate
            .owner
            .and_then(|o| self.conns.get(&o))
            .and_then(|c| c.eventfd.as_ref())
            .map(|fd| fd.try_clone())
            .transpose()?;
        Ok(Reply {
            response: Response::Peer {
                slot: rdom.slot,
                port: remote_port,
                gen,
                has_fd: fd.is_some(),
            },
            fds: fd.into_iter().collect(),
        })
    }

    fn readopt(&self, id: ConnId, caller: DomId) -> Result<Reply, Error> {
        let conn = self.conns.get(&id).ok_or(Error::Closed)?;
        let fd = conn
            .eventfd
            .as_ref()
            .ok_or(Error::Protocol(
                "readopt of a connection that is not an event channel",
            ))?
            .try_clone()?;
        let slot = self.live_domain(caller)?.slot;
        Ok(Reply {
            response: Response::Readopt {
                slot,
                ports: conn.ports.iter().copied().collect(),
            },
            fds: vec![fd],
        })
    }

    fn map_grant(&self, caller: DomId, domid: DomId, gref: u32) -> Result<u64, Error> {
        let dom = self.live_domain(domid)?;
        match dom.grants.get(&gref) {
            Some(&(mfn, to)) if to == caller => Ok(mfn),
            _ => Err(Error::NotGranted {
                domid,
                gref,
                caller,
            }),
        }
    }

    fn note_map(&mut self, id: ConnId, owner: DomId, mfn: u64) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.maps.entry(mfn).or_insert((owner, 0)).1 += 1;
            if let Some(dom) = self.domains.get_mut(&owner) {
                dom.mapped += 1;
            }
        }
    }

    fn unmap(&mut self, id: ConnId, mfn: u64) -> Result<(), Error> {
        let conn = self.conns.get_mut(&id).ok_or(Error::Closed)?;
        let entry = conn
            .maps
            .get_mut(&mfn)
            .ok_or(Error::Protocol("unmap of a frame not mapped"))?;
        entry.1 -= 1;
        let owner = entry.0;
        if entry.1 == 0 {
            conn.maps.remove(&mfn);
        }
        self.release_maps(owner, 1);
        Ok(())
    }

    fn release_maps(&mut self, owner: DomId, count: u64) {
        if let Some(dom) = self.domains.get_mut(&owner) {
            dom.mapped = dom.mapped.saturating_sub(count);
        }
        self.reap(owner);
    }

    /// The event-word region (for in-process clients).
    pub fn events_fd(&self) -> &OwnedFd {
        &self.events_fd
    }

    /// Bytes of machine memory a page index corresponds to.
    pub const fn frame_offset(mfn: u64) -> u64 {
        mfn * PAGE_SIZE as u64
    }
}

fn info(domid: DomId, dom: &Domain) -> DomainInfo {
    DomainInfo {
        domid,
        unique_id: dom.unique_id,
        dying: dom.state == DomState::Dying,
        shutdown: matches!(dom.state, DomState::Shutdown(_)),
        shutdown_reason: match dom.state {
            DomState::Shutdown(r) => r,
            _ => 0,
        },
        privileged: dom.privileged,
    }
}

fn record(domid: DomId, dom: &Domain) -> DomainRecord {
    DomainRecord {
        info: info(domid, dom),
        store_mfn: dom.store_mfn,
        store_port: dom.store_port,
        slot: dom.slot,
    }
}
