//! The stub's serving loop: dom0's ring and every introduced guest's, on
//! the engine the dom0 daemon runs, through the `evtchn` / `gnttab` traits
//! (hypercall backends in the kernel, mock-xen in host tests).
//!
//! It does what `xenstored-lite/src/shell/` does for rings, without std,
//! sockets, epoll, threads or files: frames each ring's bytes into requests
//! ([`crate::ring`]), hands them to the engine, writes replies and watch
//! events back with partial writes kept, carries out the engine's actions
//! (map and bind a ring on INTRODUCE, release it, cut it off), turns
//! `VIRQ_DOM_EXC` into domain states, and feeds the clock. Where the shell
//! would touch a file, the stub writes to its console ([`Host::log`]).
//!
//! Notifications follow the ring rules Linux relies on: the guest is
//! notified whenever the server wrote responses, and after it read from a
//! request ring that was full; before sleeping, every ring is looked at
//! again, so an index the guest moved without a notification (Linux
//! notifies only when the server had caught up) is never left waiting.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use evtchn::{EventChannel, Port, VIRQ_DOM_EXC};
use gnttab::{DomainInfoSource, ForeignPage, PageMapper, GNTTAB_RESERVED_XENSTORE};
use xenring::codec::{build_args, split_args};
use xenring::{DomId, Message, MsgType, RingErrorCode, XsErrno};
use xenstored_lite::engine::{Action, ConnId, ConnKind, Engine, Input, ShellControl};

use crate::cmdline::{self, CmdlineError, StubConfig};
use crate::memory;
use crate::ring::{RingConn, READ_BUDGET};
use crate::Host;

/// Dom0's connection.
pub const DOM0_CONN: ConnId = 1;

/// The longest the loop sleeps with nothing to do: the engine's timeouts
/// (watch events waiting for a guest, log intervals) are checked at least
/// this often, as the dom0 daemon does.
pub const IDLE_WAIT_MS: u64 = 1000;

/// Rounds of serving, acting and writing in one turn before it sleeps
/// again (each round is bounded too: see [`READ_BUDGET`]).
const SETTLE_ROUNDS: usize = 64;

/// Why the server did not start. The kernel prints it and crashes the
/// domain: a stub that cannot serve dom0 must fail loudly.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The command line is wrong.
    #[error("command line: {0}")]
    Cmdline(#[from] CmdlineError),
    /// Dom0's grant of its xenstore page cannot be mapped.
    #[error("cannot map dom0's xenstore page (grant ref 1): {0}")]
    MapDom0(#[source] gnttab::Error),
    /// Dom0's port cannot be bound.
    #[error("cannot bind dom0's xenstore port {port}: {source}")]
    BindDom0 {
        /// Dom0's port (`--event`).
        port: u32,
        /// Why.
        #[source]
        source: evtchn::Error,
    },
    /// `VIRQ_DOM_EXC` cannot be bound: domain deaths would go unnoticed.
    #[error("cannot bind VIRQ_DOM_EXC: {0}")]
    BindVirq(#[source] evtchn::Error),
}

/// Why a ring is cut off.
#[derive(Debug)]
enum Failure<'a> {
    /// Its bytes do not frame into requests.
    Protocol(xenring::Error),
    /// Its indices are inconsistent.
    Indices(xenring::Error),
    /// The engine cut it off.
    Killed(&'a str),
}

impl Failure<'_> {
    fn code(&self) -> RingErrorCode {
        match self {
            Self::Protocol(_) => RingErrorCode::Proto,
            Self::Indices(_) => RingErrorCode::RingIdx,
            Self::Killed(_) => RingErrorCode::Comm,
        }
    }
}

impl core::fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Protocol(e) | Self::Indices(e) => e.fmt(f),
            Self::Killed(why) => f.write_str(why),
        }
    }
}

/// The stub's server.
pub struct Server<E, M, D, H> {
    engine: Engine,
    evtchn: E,
    mapper: M,
    dominfo: D,
    host: H,
    conns: BTreeMap<ConnId, RingConn>,
    ports: BTreeMap<Port, ConnId>,
    virq: Port,
    next_conn: ConnId,
    /// Rings to read this round.
    dirty: BTreeSet<ConnId>,
    /// Rings whose budget ran out: read again next turn, without sleeping.
    carry: BTreeSet<ConnId>,
    last_time: Option<u64>,
    /// The hypervisor's unique id of domains, as at INTRODUCE or when first
    /// seen alive (as the dom0 shell keeps them).
    unique_ids: BTreeMap<DomId, u64>,
    /// Domains seen to exist: only these are dead when Xen lacks them.
    seen_alive: BTreeSet<DomId>,
    /// Requests answered ENOMEM in the current low-memory episode (`Some`
    /// from the first refusal until `memory::recovered`; logged at its
    /// start and its end).
    refused: Option<u64>,
    /// Waiting for events is failing (logged once per episode).
    wait_failing: bool,
    /// Reused per turn.
    fired: Vec<Port>,
    requests: Vec<Message>,
}

impl<E, M, D, H> core::fmt::Debug for Server<E, M, D, H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("rings", &self.conns.len())
            .field("virq", &self.virq)
            .finish()
    }
}

impl<E, M, D, H> Server<E, M, D, H>
where
    E: EventChannel,
    M: PageMapper,
    D: DomainInfoSource,
    H: Host,
{
    /// Parses `cmdline`, maps dom0's ring (its grant ref 1), binds to its
    /// port (`--event`) and to `VIRQ_DOM_EXC`, and connects dom0 to the
    /// engine. Logs one start-up line.
    pub fn new(
        cmdline: &str,
        mut evtchn: E,
        mapper: M,
        dominfo: D,
        host: H,
    ) -> Result<Self, StartError> {
        let config: StubConfig = cmdline::parse(cmdline)?;
        let page = mapper
            .map_grant(0, GNTTAB_RESERVED_XENSTORE)
            .map_err(StartError::MapDom0)?;
        let port = evtchn
            .bind_interdomain(0, Port::new(config.event))
            .map_err(|source| StartError::BindDom0 {
                port: config.event,
                source,
            })?;
        let virq = match evtchn.bind_virq(VIRQ_DOM_EXC) {
            Ok(v) => v,
            Err(e) => {
                let _ = evtchn.unbind(port);
                return Err(StartError::BindVirq(e));
            }
        };
        let mut server = Self {
            engine: Engine::new(config.engine),
            evtchn,
            mapper,
            dominfo,
            host,
            conns: BTreeMap::new(),
            ports: BTreeMap::new(),
            virq,
            next_conn: DOM0_CONN,
            dirty: BTreeSet::new(),
            carry: BTreeSet::new(),
            last_time: None,
            unique_ids: BTreeMap::new(),
            seen_alive: BTreeSet::new(),
            refused: None,
            wait_failing: false,
            fired: Vec::new(),
            requests: Vec::new(),
        };
        server.tick();
        let conn = server.add_ring(page, port, 0);
        server.engine.handle(Input::Connect {
            conn,
            kind: ConnKind::Domain(0),
        });
        server.host.log(&format!(
            "xenstored-stubdom: serving dom0's ring on port {port} (dom0's port {}), \
             VIRQ_DOM_EXC on port {virq}",
            config.event
        ));
        // Dom0 may have written before we bound: read its ring at once.
        server.settle();
        Ok(server)
    }

    /// The engine (read-only).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The kernel services.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// Serves for ever.
    pub fn run(&mut self) -> ! {
        loop {
            self.turn();
        }
    }

    /// One turn: waits for an event (no longer than the engine's next
    /// wake-up, [`IDLE_WAIT_MS`] at most, not at all if a ring has work
    /// left), then serves everything that can be served without waiting.
    pub fn turn(&mut self) {
        self.tick();
        let timeout = self.wait_timeout();
        let mut fired = core::mem::take(&mut self.fired);
        fired.clear();
        match self.evtchn.wait(Some(timeout), &mut fired) {
            Ok(()) => self.wait_failing = false,
            Err(e) => {
                if !self.wait_failing {
                    self.host.log(&format!(
                        "waiting for events failed: {e}; serving every ring"
                    ));
                    self.wait_failing = true;
                }
                fired.extend(self.ports.keys().copied());
                fired.push(self.virq);
            }
        }
        self.tick();
        let mut domains_changed = false;
        for port in &fired {
            if *port == self.virq {
                domains_changed = true;
            } else if let Some(&conn) = self.ports.get(port) {
                self.dirty.insert(conn);
            }
        }
        // Unmasked before serving: an event the guest raises from now on
        // is reported by the next wait.
        if !fired.is_empty() {
            if let Err(e) = self.evtchn.unmask(&fired) {
                self.host
                    .log(&format!("unmasking event channels failed: {e}"));
            }
        }
        self.fired = fired;
        if domains_changed {
            self.domains_changed();
        }
        let carried = core::mem::take(&mut self.carry);
        self.dirty.extend(carried);
        self.settle();
        self.look_again();
    }

    /// Hands the engine the time if it moved; rings of domains whose
    /// throttle lifted are read.
    fn tick(&mut self) {
        let now = self.host.now_ms();
        if self.last_time == Some(now) {
            return;
        }
        self.last_time = Some(now);
        self.engine.handle(Input::Time(now));
        for conn in self.engine.readable_again() {
            if self.conns.contains_key(&conn) {
                self.dirty.insert(conn);
            }
        }
    }

    /// How long the next wait may sleep.
    fn wait_timeout(&self) -> Duration {
        if !self.dirty.is_empty() || !self.carry.is_empty() {
            return Duration::ZERO;
        }
        let now = self.last_time.unwrap_or(0);
        let ms = match self.engine.next_wakeup() {
            Some(at) => at.saturating_sub(now).min(IDLE_WAIT_MS),
            None => IDLE_WAIT_MS,
        };
        Duration::from_millis(ms)
    }

    /// Before sleeping: any ring whose guest moved an index since we
    /// looked (requests the engine would take, room for output that
    /// waits, a reconnection asked for) is served next turn without
    /// sleeping; a ring whose indices are now inconsistent is cut off.
    fn look_again(&mut self) {
        let mut again = Vec::new();
        let mut broken = Vec::new();
        for (&conn, ring) in &self.conns {
            if ring.is_dead() {
                continue;
            }
            let end = ring.end();
            let wants = (|| -> Result<bool, xenring::Error> {
                if end.reconnect_requested() {
                    return Ok(true);
                }
                if self.engine.accepts_requests(conn) && end.readable()? > 0 {
                    return Ok(true);
                }
                let output = ring.has_buffered_output() || self.engine.has_output(conn);
                Ok(output && end.writable()? > 0)
            })();
            match wants {
                Ok(true) => again.push(conn),
                Ok(false) => {}
                Err(e) => broken.push((conn, e)),
            }
        }
        self.carry.extend(again);
        for (conn, e) in broken {
            self.fail(conn, &Failure::Indices(e));
        }
    }

    /// Serves until nothing more can be done without waiting: rings read,
    /// actions carried out, output written.
    fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS {
            let dirty = core::mem::take(&mut self.dirty);
            for &conn in &dirty {
                self.service(conn);
            }
            self.do_actions();
            // Each ring is written until its output is gone or the ring is
            // full (the guest notifies when it makes room), so one flush per
            // round is all that can be done; output left over waits for
            // the guest, not for another round.
            let touched: BTreeSet<ConnId> = self
                .engine
                .conns_with_output()
                .into_iter()
                .chain(dirty)
                .collect();
            for conn in touched {
                self.flush(conn);
            }
            // A guest whose watch events another connection took (or
            // dropped) may send again: read its ring.
            for conn in self.engine.take_unblocked() {
                if self.conns.contains_key(&conn) {
                    self.dirty.insert(conn);
                }
            }
            if self.dirty.is_empty() {
                return;
            }
        }
        // Work left (a ring that keeps the engine busy): next turn.
        let left = core::mem::take(&mut self.dirty);
        self.carry.extend(left);
    }

    /// Reads what `conn`'s ring has (within [`READ_BUDGET`]) while the
    /// engine takes its requests, and answers a reconnection request.
    fn service(&mut self, conn: ConnId) {
        let Some(ring) = self.conns.get_mut(&conn) else {
            return;
        };
        if ring.is_dead() {
            return;
        }
        if ring.end().reconnect_requested() {
            ring.reset();
            self.engine.handle(Input::Reset { conn });
            ring.end().complete_reconnect();
            self.notify(conn);
            return;
        }
        if !self.engine.accepts_requests(conn) {
            return;
        }
        let mut requests = core::mem::take(&mut self.requests);
        requests.clear();
        let read = ring.read_requests(READ_BUDGET, &mut requests);
        for msg in requests.drain(..) {
            // The engine may stop taking requests mid-batch (quota,
            // throttle): the rest are still its (as the dom0 shell does
            // with what one read gave).
            // (Rings go only in `do_actions`: `conn` outlives the batch.)
            self.request(conn, &msg);
        }
        self.requests = requests;
        match read {
            Ok(outcome) => {
                if outcome.was_full {
                    self.notify(conn);
                }
                if outcome.more {
                    self.carry.insert(conn);
                }
            }
            Err(e @ xenring::Error::IndexOverrun { .. }) => self.fail(conn, &Failure::Indices(e)),
            Err(e) => self.fail(conn, &Failure::Protocol(e)),
        }
    }

    /// Hands one request to the engine, unless memory is short (then the
    /// server answers ENOMEM itself). XS_CONTROL's `memreport` goes to the
    /// console, and `check`'s verdict is logged there too.
    fn request(&mut self, conn: ConnId, msg: &Message) {
        let free = self.host.free_memory();
        if memory::refuse(free, msg) {
            let n = self.refused.get_or_insert(0);
            if *n == 0 {
                self.host.log(&format!(
                    "memory low ({free} bytes free, {} needed): answering ENOMEM",
                    memory::needed(msg)
                ));
            }
            *n += 1;
            self.engine.answer_error(conn, &msg.header, XsErrno::ENOMEM);
            return;
        }
        // The episode ends with room to spare (memory::RECOVERED), not at
        // the first request that passes: a store held at its limit logs
        // one episode, not two lines a request.
        if let Some(n) = self.refused {
            if memory::recovered(free) {
                self.refused = None;
                self.host.log(&format!(
                    "memory available again ({free} bytes free); {n} requests were answered ENOMEM"
                ));
            }
        }
        if msg.header.msg_type != MsgType::Control.raw() {
            self.engine.handle(Input::Request { conn, msg });
            return;
        }
        let mut args = split_args(&msg.payload);
        let command = args.next();
        let no_more = args.next().is_none();
        match command {
            // C's stub dumps its memory report to its log and answers OK:
            // the engine's file form, to the console.
            Some(b"memreport") if no_more => {
                let payload = build_args(&[b"memreport", b"console"]);
                match Message::new(
                    MsgType::Control,
                    msg.header.req_id,
                    msg.header.tx_id,
                    payload,
                ) {
                    Ok(rewritten) => self.engine.handle(Input::Request {
                        conn,
                        msg: &rewritten,
                    }),
                    Err(_) => self.engine.handle(Input::Request { conn, msg }),
                }
            }
            Some(b"check") => {
                self.engine.handle(Input::Request { conn, msg });
                // Only a check the engine carried out (a privileged
                // caller's) is repeated for the console: a guest must not
                // make the server walk the store or fill the console.
                if self.engine.last_result() != Some(Ok(())) {
                    return;
                }
                let problems = self.engine.check();
                if problems.is_empty() {
                    self.host.log("control check: the store is consistent");
                }
                for p in problems {
                    self.host.log(&format!("control check: {p}"));
                }
            }
            _ => self.engine.handle(Input::Request { conn, msg }),
        }
    }

    /// Writes what is queued for `conn`; notifies the guest if anything
    /// was written. (A ring that takes requests again once its output is
    /// gone is read next turn: `look_again` finds its requests.)
    fn flush(&mut self, conn: ConnId) {
        let Some(ring) = self.conns.get_mut(&conn) else {
            return;
        };
        if ring.is_dead() {
            return;
        }
        let engine = &mut self.engine;
        match ring.write_responses(|| engine.pop_output(conn)) {
            Ok(0) => {}
            Ok(_) => self.notify(conn),
            Err(e) => self.fail(conn, &Failure::Indices(e)),
        }
    }

    /// Cuts `conn` off: its error word says why; the engine forgets its
    /// watches and transactions; its domain stays known until it dies.
    fn fail(&mut self, conn: ConnId, why: &Failure<'_>) {
        let Some(ring) = self.conns.get_mut(&conn) else {
            return;
        };
        if ring.is_dead() {
            return;
        }
        ring.cut_off(why.code());
        let domid = ring.domid();
        self.host.log(&format!(
            "domain {domid} (connection {conn}): {why}; its ring is no longer served"
        ));
        self.engine.handle(Input::Disconnect { conn });
        self.notify(conn);
    }

    fn notify(&mut self, conn: ConnId) {
        if let Some(ring) = self.conns.get(&conn) {
            if let Err(e) = self.evtchn.notify(ring.port()) {
                self.host
                    .log(&format!("notifying port {} failed: {e}", ring.port()));
            }
        }
    }

    fn add_ring(&mut self, page: Box<dyn ForeignPage>, port: Port, domid: DomId) -> ConnId {
        while self.conns.contains_key(&self.next_conn) || self.next_conn == 0 {
            self.next_conn = self.next_conn.wrapping_add(1);
        }
        let conn = self.next_conn;
        self.next_conn = self.next_conn.wrapping_add(1);
        self.ports.insert(port, conn);
        self.conns.insert(conn, RingConn::new(page, port, domid));
        self.dirty.insert(conn);
        conn
    }

    /// Lets go of a ring: its port unbound, its page unmapped.
    fn remove_ring(&mut self, conn: ConnId) {
        if let Some(ring) = self.conns.remove(&conn) {
            self.ports.remove(&ring.port());
            if let Err(e) = self.evtchn.unbind(ring.port()) {
                self.host
                    .log(&format!("unbinding port {} failed: {e}", ring.port()));
            }
        }
        self.dirty.remove(&conn);
        self.carry.remove(&conn);
    }

    /// Carries out what the engine asked for (and what that made it ask).
    fn do_actions(&mut self) {
        for _ in 0..SETTLE_ROUNDS {
            let actions = self.engine.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.act(action);
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Introduce {
                token,
                domid,
                mfn,
                port,
            } => {
                let result = self.introduce(domid, mfn, port);
                self.engine.handle(Input::Introduced { token, result });
            }
            Action::Release { conn, domid } => {
                self.host.log(&format!("domain {domid} released"));
                self.remove_ring(conn);
            }
            Action::Kill { conn, reason } => self.fail(conn, &Failure::Killed(&reason)),
            Action::Log(line) => self.host.log(&line),
            Action::LiveUpdate { conn, header, .. } => {
                self.host
                    .log("control live-update: not available in a xenstore stub domain");
                // C 4.17's stub answers its live update "NYI"; say why.
                self.engine.answer_control(
                    conn,
                    &header,
                    "live update is not available in a xenstore stub domain",
                );
            }
            Action::Control { command, .. } => {
                let what = match command {
                    ShellControl::Log(true) => String::from("log on"),
                    ShellControl::Log(false) => String::from("log off"),
                    ShellControl::LogFile(f) => format!("logfile {f}"),
                };
                self.host.log(&format!(
                    "control {what}: a stub domain has no access log (no files); ignored"
                ));
            }
            Action::MemReport {
                conn,
                header,
                file,
                report,
            } => {
                if file != "console" {
                    self.host.log(&format!(
                        "control memreport: a stub domain has no files; \
                             the report for {file:?} is on the console"
                    ));
                }
                for line in report.lines() {
                    self.host.log(line);
                }
                if let Some(heap) = self.host.heap_report() {
                    self.host.log(&heap);
                }
                self.engine.answer_control(conn, &header, "OK");
            }
        }
    }

    /// Carries out an INTRODUCE: maps the domain's grant ref 1 (as C's
    /// stub, which ignores the mfn) and binds to its port.
    fn introduce(&mut self, domid: DomId, mfn: u64, remote_port: u32) -> Result<ConnId, XsErrno> {
        let page = match self.mapper.map_grant(domid, GNTTAB_RESERVED_XENSTORE) {
            Ok(page) => page,
            Err(e) => {
                self.host.log(&format!(
                    "introduce {domid}: cannot map its grant ref 1 (mfn {mfn:#x} ignored): {e}"
                ));
                return Err(XsErrno::EINVAL);
            }
        };
        let port = match self.evtchn.bind_interdomain(domid, Port::new(remote_port)) {
            Ok(port) => port,
            Err(e) => {
                self.host.log(&format!(
                    "introduce {domid}: cannot bind its port {remote_port}: {e}"
                ));
                return Err(XsErrno::EINVAL);
            }
        };
        self.host.log(&format!(
            "domain {domid} introduced (remote port {remote_port}, local port {port})"
        ));
        self.seen_alive.insert(domid);
        match self.dominfo.get(domid) {
            Ok(Some(gnttab::DomainInfo {
                unique_id: Some(id),
                ..
            })) => self.unique_ids.insert(domid, id),
            _ => self.unique_ids.remove(&domid),
        };
        Ok(self.add_ring(page, port, domid))
    }

    /// `VIRQ_DOM_EXC`: asks Xen about every domain the engine knows (and
    /// every ring's) and tells the engine of those shut down, dying or
    /// gone — with the dom0 shell's rules: a domain never seen to exist is
    /// not dead for being absent, and one alive under another unique id
    /// than we knew is a new domain on a reused domid.
    fn domains_changed(&mut self) {
        let rings: BTreeSet<DomId> = self.conns.values().map(RingConn::domid).collect();
        let mut known = self.engine.known_domains();
        known.extend(rings.iter().copied());
        known.remove(&self.engine.config().priv_domid);
        let mut ask = known.clone();
        ask.extend(self.unique_ids.keys().copied());
        ask.extend(self.seen_alive.iter().copied());
        let mut info = BTreeMap::new();
        for domid in ask {
            match self.dominfo.get(domid) {
                Ok(d) => {
                    info.insert(domid, d);
                }
                Err(e) => self
                    .host
                    .log(&format!("domain {domid}: cannot ask Xen about it: {e}")),
            }
        }
        for &domid in &known {
            let Some(answer) = info.get(&domid) else {
                continue; // Xen did not answer: nothing is known
            };
            let (shutdown, dying) = match answer {
                None if rings.contains(&domid) || self.seen_alive.contains(&domid) => (true, true),
                None => continue,
                Some(d) => match (self.unique_ids.get(&domid), d.unique_id) {
                    (Some(&then), Some(now)) if then != now => (true, true),
                    _ => (d.shutdown.is_some(), d.dying),
                },
            };
            if shutdown || dying {
                self.engine.handle(Input::DomainState {
                    domid,
                    shutdown,
                    dying,
                });
            }
        }
        let alive = |domid: &DomId| -> Option<&gnttab::DomainInfo> {
            info.get(domid)
                .and_then(Option::as_ref)
                .filter(|d| !d.dying)
        };
        self.unique_ids.retain(|domid, &mut id| {
            // Unasked (Xen failed): kept.
            !info.contains_key(domid) || alive(domid).is_some_and(|d| d.unique_id == Some(id))
        });
        self.seen_alive
            .retain(|domid| !info.contains_key(domid) || alive(domid).is_some());
        for domid in known {
            if let Some(d) = alive(&domid) {
                self.seen_alive.insert(domid);
                if let Some(id) = d.unique_id {
                    self.unique_ids.entry(domid).or_insert(id);
                }
            }
        }
        // What the engine did (releases) is carried out now.
        self.settle();
    }
}
