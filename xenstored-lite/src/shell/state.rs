//! The deterministic half of the shell: per-connection framing (the
//! decoder of half-received requests), output buffers with partial writes,
//! the engine, and the recorder.
//!
//! Every input that reaches it is something that crossed the platform
//! boundary — bytes read, bytes a transport took, a connection opened or
//! closed, a domain's state, the clock, the outcome of mapping a ring —
//! one [`BoundaryEvent`], which [`ShellState::apply`] records (when
//! recording) and then applies. The live daemon builds the events from
//! sockets and rings; replay reads them from a recording and hands them to
//! the same `apply`, so the same code runs in both, and what the replayed
//! state offers to write can be checked against what the live one wrote.
//! [`engine_input`] is the one place an event becomes an engine input.

use std::collections::BTreeMap;

use xenring::codec::Decoder;
use xenring::{DomId, Header, Message, MsgType, XsErrno};

use crate::engine::idmap::IdMap;
use crate::engine::RestoreError;
use crate::engine::{Action, ConnId, ConnKind, Engine, Input};
use crate::migration::{ConnSpec, MigrationError, Record, Stream};
use crate::replay::format::{Answer, BoundaryEvent, ConnectKind, Outcome, Recorder};
use crate::shell::journal::{Applying, Journal};

#[derive(Debug)]
struct StateConn {
    decoder: Decoder,
    out: Vec<u8>,
    out_off: usize,
    /// Cut off (protocol violation): ignored until released.
    dead: bool,
    domid: Option<DomId>,
    /// Whole requests held while [`ShellState::holding`] (a TRANSACTION_START
    /// and whatever the connection sent after it), encoded, in order.
    held: Vec<u8>,
}

impl StateConn {
    fn new(domid: Option<DomId>) -> Self {
        Self {
            decoder: Decoder::new(),
            out: Vec::new(),
            out_off: 0,
            dead: false,
            domid,
            held: Vec::new(),
        }
    }

    /// Not cut off.
    fn is_live(&self) -> bool {
        !self.dead
    }

    /// No request of it is held (only then may the engine take more).
    fn holds_nothing(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether bytes of its current message wait to be written.
    fn has_buffered_output(&self) -> bool {
        self.is_live() && self.out_off < self.out.len()
    }

    /// Its transport took `n` octets of the current message.
    fn advance(&mut self, n: usize) {
        self.out_off += n.min(self.out.len() - self.out_off);
    }
}

/// A connection's pending bytes, for a migration stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Requests received, not carried out: whole held ones (see
    /// [`ShellState::holding`]), then at most one partly received.
    pub in_data: Vec<u8>,
    /// Bytes not yet written: the rest of a partly written message, then
    /// every message queued.
    pub out_data: Vec<u8>,
    /// Length of the partly written message's rest at the start.
    pub out_resp_len: u16,
}

/// Called for every complete request: the engine after handling it, the
/// connection, its domain, the request.
pub type OnRequest<'a> = &'a mut dyn FnMut(&Engine, ConnId, Option<DomId>, &Message);

/// The shell's deterministic state.
#[derive(Debug)]
pub struct ShellState {
    engine: Engine,
    conns: IdMap<StateConn>,
    recorder: Option<Recorder>,
    /// Replay: the last request of each connection, for divergence reports.
    last_request: Option<BTreeMap<ConnId, Message>>,
    /// Whether [`ShellState::next_output`] took a message from the engine since
    /// the last [`ShellState::wrote`]: a write that took nothing is recorded only
    /// then (replay must take it at the same point); otherwise it changed
    /// nothing, and a stalled ring retried every turn records nothing.
    popped: bool,
    /// New TRANSACTION_STARTs are held, not carried out (a `Hold` event):
    /// while a live update to C xenstored waits for open transactions to
    /// end, as C itself does. A connection with a held request is read no
    /// further; its held requests travel in the stream as complete
    /// requests for C to answer, or are carried out when holding ends.
    holding: bool,
    /// The crash journal, if kept (`shell::journal`).
    journal: Option<Journal>,
    /// A crash recovery's replay: this request of this connection crashed
    /// the daemon; it is answered with `EIO` instead of carried out.
    skip: Option<(ConnId, Header)>,
}

impl ShellState {
    /// A state around `engine`, recording to `recorder` if given.
    pub fn new(engine: Engine, recorder: Option<Recorder>) -> Self {
        Self {
            engine,
            conns: IdMap::new(),
            recorder,
            last_request: None,
            popped: false,
            holding: false,
            journal: None,
            skip: None,
        }
    }

    /// Journals every event from now on to `journal`.
    pub fn set_journal(&mut self, journal: Option<Journal>) {
        self.journal = journal;
    }

    /// The crash journal, if kept.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Takes the crash journal away (a clean stop removes it).
    pub fn take_journal(&mut self) -> Option<Journal> {
        self.journal.take()
    }

    /// Records to `recorder` from now on (a recovered state keeps
    /// recording).
    pub fn set_recorder(&mut self, recorder: Option<Recorder>) {
        self.recorder = recorder;
    }

    /// Answers `conn`'s next request with `header` with `EIO` instead of
    /// carrying it out (it crashed the daemon: a recovery's replay).
    pub fn skip_request(&mut self, request: Option<(ConnId, Header)>) {
        self.skip = request;
    }

    /// Every connection: its domain (a ring) and whether it was cut off.
    pub fn connections(&self) -> Vec<(ConnId, Option<DomId>, bool)> {
        self.conns
            .iter()
            .map(|(&id, c)| (id, c.domid, c.dead))
            .collect()
    }

    /// Keeps each connection's last request (replay's divergence reports).
    pub fn keep_last_requests(&mut self) {
        self.last_request = Some(BTreeMap::new());
    }

    /// The last request `conn` sent, if kept.
    pub fn last_request(&self, conn: ConnId) -> Option<&Message> {
        self.last_request.as_ref()?.get(&conn)
    }

    /// The engine (read-only).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Hands buffered events to the recording's writer (the loop goes
    /// idle).
    pub fn flush_recording(&mut self) {
        if let Some(r) = &mut self.recorder {
            r.flush();
        }
    }

    /// Writes out every event recorded so far and waits for it (before an
    /// exec; at exit).
    pub fn sync_recording(&mut self) {
        if let Some(r) = &mut self.recorder {
            r.sync();
        }
    }

    /// Whether recorded events wait in the buffer.
    pub fn recording_pending(&self) -> bool {
        self.recorder.as_ref().is_some_and(Recorder::has_pending)
    }

    /// Events and octets recorded by this process, if recording.
    pub fn recording_totals(&self) -> Option<(u64, u64)> {
        self.recorder.as_ref().map(Recorder::totals)
    }

    /// Whether `conn` is known (and not cut off).
    pub fn is_live(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(StateConn::is_live)
    }

    /// Whether `conn` is known at all.
    pub fn has(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// The domain of a ring connection.
    pub fn domid(&self, conn: ConnId) -> Option<DomId> {
        self.conns.get(&conn).and_then(|c| c.domid)
    }

    /// Whether the engine takes another request from `conn` now (not
    /// while `conn` has a held request).
    pub fn accepts_requests(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_none_or(StateConn::holds_nothing)
            && self.engine.accepts_requests(conn)
    }

    /// What a socket's registration follows, from one lookup: whether
    /// `conn` takes requests now (live, as [`ShellState::is_live`], and
    /// [`ShellState::accepts_requests`]) and whether bytes wait in its
    /// buffer ([`ShellState::has_buffered_output`]).
    pub fn socket_needs(&self, conn: ConnId) -> (bool, bool) {
        match self.conns.get(&conn) {
            None => (false, false),
            Some(c) => (
                c.is_live() && c.holds_nothing() && self.engine.accepts_requests(conn),
                c.has_buffered_output(),
            ),
        }
    }

    /// Whether new TRANSACTION_STARTs are held ([`BoundaryEvent::Hold`]).
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// The connections with held requests.
    pub fn held_conns(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.held.is_empty())
            .map(|(&id, _)| id)
            .collect()
    }

    /// Connections the engine takes requests from again because of what
    /// happened to other connections' queues ([`Engine::take_unblocked`]).
    pub fn take_unblocked(&mut self) -> Vec<ConnId> {
        self.engine.take_unblocked()
    }

    /// Connections with output queued in the engine.
    pub fn conns_with_output(&self) -> Vec<ConnId> {
        self.engine.conns_with_output()
    }

    /// Whether bytes wait in `conn`'s buffer.
    pub fn has_buffered_output(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(StateConn::has_buffered_output)
    }

    /// The engine's actions so far (effects for the live shell; replay
    /// drops them: their outcomes are recorded as inputs). A released
    /// ring's buffers go here, since the engine has forgotten it.
    pub fn take_actions(&mut self) -> Vec<Action> {
        if !self.engine.has_actions() {
            return Vec::new(); // the usual case, twice a loop turn
        }
        let actions = self.engine.take_actions();
        for action in &actions {
            if let Action::Release { conn, .. } = action {
                self.conns.remove(conn);
            }
        }
        actions
    }

    /// Records `event` (when recording) and applies it: the one way every
    /// input reaches the state, live and on replay. `on_request` sees each
    /// complete request an `Input` carries. A `Restore` reports what it
    /// restored; `Start` and `HandOver` only mark the recording.
    pub fn apply(
        &mut self,
        event: BoundaryEvent<'_>,
        on_request: OnRequest<'_>,
    ) -> Result<Applied, ApplyError> {
        let number = self.record(&event);
        if number.is_some() {
            Applying::event(number);
        }
        let result = self.carry_out(event, on_request);
        if number.is_some() {
            Applying::event(None);
        }
        result
    }

    /// [`ShellState::apply`]'s first half alone: records `event` (when
    /// recording). Applying `Start` or `HandOver` changes nothing else, so
    /// the shell marks them with this.
    pub fn record(&mut self, event: &BoundaryEvent<'_>) -> Option<u64> {
        if let Some(r) = &mut self.recorder {
            r.record(event);
        }
        self.journal.as_ref().map(|j| j.record(event))
    }

    /// Records `event` in the recording only, not in the crash journal (a
    /// recovered process's start, which the journal goes on without).
    pub fn record_recording_only(&mut self, event: &BoundaryEvent<'_>) {
        if let Some(r) = &mut self.recorder {
            r.record(event);
        }
    }

    /// [`ShellState::apply`]'s second half: what `event` does to the
    /// connections and the engine.
    fn carry_out(
        &mut self,
        event: BoundaryEvent<'_>,
        on_request: OnRequest<'_>,
    ) -> Result<Applied, ApplyError> {
        match &event {
            BoundaryEvent::Start { .. }
            | BoundaryEvent::HandOver
            | BoundaryEvent::RingIndices { .. }
            | BoundaryEvent::Fatal { .. } => {}
            BoundaryEvent::Counters(c) => self.engine.set_counters(c),
            BoundaryEvent::StoreImage(image) => self
                .engine
                .apply_store_image(image)
                .map_err(ApplyError::StoreImage)?,
            BoundaryEvent::Hold { on } => {
                self.holding = *on;
                if !*on {
                    self.release_held(on_request);
                }
            }
            BoundaryEvent::Restore { stream, outcomes } => {
                let parsed = Stream::parse(stream).map_err(ApplyError::Stream)?;
                let outcome = self.take_over(&parsed, outcomes)?;
                return Ok(Applied::Restored(outcome));
            }
            BoundaryEvent::Time(_) | BoundaryEvent::DomainState { .. } => {}
            BoundaryEvent::Connect { conn, kind } => {
                let domid = match kind {
                    ConnectKind::Socket => None,
                    ConnectKind::Ring(d) => Some(*d),
                };
                self.conns.insert(*conn, StateConn::new(domid));
            }
            BoundaryEvent::Input { conn, bytes } => {
                self.feed(*conn, bytes, on_request)
                    .map_err(|source| ApplyError::Decode {
                        conn: *conn,
                        source,
                    })?;
            }
            BoundaryEvent::Output { conn, bytes } => self.advance(*conn, bytes.len()),
            BoundaryEvent::Close { conn } => {
                self.conns.remove(conn);
            }
            BoundaryEvent::Violation { conn } => {
                if let Some(c) = self.conns.get_mut(conn) {
                    c.dead = true;
                }
            }
            BoundaryEvent::Reset { conn } => {
                if let Some(c) = self.conns.get_mut(conn) {
                    c.decoder = Decoder::new();
                    c.out.clear();
                    c.out_off = 0;
                }
            }
            BoundaryEvent::Introduced { token, result } => {
                if let Ok(conn) = result {
                    // Asked before the engine hears the outcome (it then
                    // forgets the pending introduction).
                    let domid = self.engine.pending_introduce_domid(*token);
                    self.conns.insert(*conn, StateConn::new(domid));
                }
            }
            BoundaryEvent::Answer {
                conn,
                header,
                answer,
            } => match answer {
                Answer::Text(t) => self.engine.answer_control(*conn, header, t),
                Answer::Error(e) => self.engine.answer_error(*conn, header, *e),
            },
        }
        if let Some(input) = engine_input(&event) {
            self.engine.handle(input);
        }
        Ok(Applied::Done)
    }

    /// [`ShellState::apply`] for an event that cannot fail (any but `Input`
    /// and `Restore`): how the shell hands over the clock, connections
    /// coming and going, resets, violations, introductions, domain states
    /// and its own answers.
    pub fn apply_infallible(&mut self, event: BoundaryEvent<'_>) {
        let result = self.apply(event, &mut |_, _, _, _| {});
        debug_assert!(result.is_ok(), "an infallible event failed: {result:?}");
    }

    /// Bytes read from `conn`: complete requests go to the engine.
    pub fn input(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        on_request: OnRequest<'_>,
    ) -> Result<(), xenring::Error> {
        match self.apply(BoundaryEvent::Input { conn, bytes }, on_request) {
            Ok(_) => Ok(()),
            Err(ApplyError::Decode { source, .. }) => Err(source),
            Err(e) => unreachable!("an Input cannot fail so: {e}"),
        }
    }

    fn feed(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        on_request: OnRequest<'_>,
    ) -> Result<(), xenring::Error> {
        let mut input = bytes;
        let mut decoded = false;
        loop {
            // After a whole message, nothing left decodes to nothing: the
            // connection is not looked up again for it.
            if decoded && input.is_empty() {
                return Ok(());
            }
            let Some(c) = self.conns.get_mut(&conn) else {
                return Ok(());
            };
            let domid = c.domid;
            let Some(msg) = c.decoder.decode(&mut input)? else {
                return Ok(());
            };
            decoded = true;
            if self.skip == Some((conn, msg.header)) {
                self.skip = None;
                tracing::warn!(
                    "crash recovery: connection {conn}: request type {} id {} transaction {} crashed the daemon; answered EIO, not carried out",
                    msg.header.msg_type, msg.header.req_id, msg.header.tx_id
                );
                self.engine.answer_error(conn, &msg.header, XsErrno::EIO);
                continue;
            }
            if self.holding
                && (!c.held.is_empty() || msg.header.msg_type == MsgType::TransactionStart as u32)
            {
                // Order is kept: once one is held, the rest wait behind it.
                msg.encode_into(&mut c.held);
                continue;
            }
            self.request(conn, domid, msg, on_request);
        }
    }

    fn request(
        &mut self,
        conn: ConnId,
        domid: Option<DomId>,
        msg: Message,
        on_request: OnRequest<'_>,
    ) {
        Applying::request(Some((conn, msg.header)));
        self.engine.handle(Input::Request { conn, msg: &msg });
        Applying::request(None);
        on_request(&self.engine, conn, domid, &msg);
        if let Some(last) = &mut self.last_request {
            last.insert(conn, msg);
        }
    }

    /// Holding ended: every connection's held requests are carried out,
    /// in order, as if they had just arrived.
    fn release_held(&mut self, on_request: OnRequest<'_>) {
        for conn in self.held_conns() {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            let held = std::mem::take(&mut c.held);
            let domid = c.domid;
            let mut input = &held[..];
            let mut decoder = Decoder::new();
            // Each was decoded once already: they decode again whole.
            while let Ok(Some(msg)) = decoder.decode(&mut input) {
                self.request(conn, domid, msg, on_request);
            }
        }
    }

    /// What to write to `conn` next: the rest of the current message, or
    /// the next queued one; `None` if nothing waits.
    pub fn next_output(&mut self, conn: ConnId) -> Option<&[u8]> {
        // One lookup (it runs at least twice for every reply): the engine
        // does not touch this state's connections.
        let c = self.conns.get_mut(&conn)?;
        if c.dead {
            return None;
        }
        if c.out_off == c.out.len() {
            c.out.clear();
            c.out_off = 0;
            let msg = self.engine.pop_output(conn)?;
            self.popped = true;
            msg.encode_into(&mut c.out);
        }
        Some(&c.out[c.out_off..])
    }

    /// The transport took `n` octets of [`ShellState::next_output`]: the
    /// live side of an `Output` event. Its bytes are in this state's own
    /// buffer, so it is recorded from there (no copy) and then carried out
    /// as [`ShellState::apply`] carries out a replayed one.
    pub fn wrote(&mut self, conn: ConnId, n: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let n = n.min(c.out.len() - c.out_off);
        // Whether an Output event is due: see `popped`.
        if n > 0 || self.popped {
            let event = BoundaryEvent::Output {
                conn,
                bytes: &c.out[c.out_off..c.out_off + n],
            };
            if let Some(r) = &mut self.recorder {
                r.record(&event);
            }
            if let Some(j) = &self.journal {
                j.record(&event);
            }
        }
        // `advance`, on the connection in hand.
        self.popped = false;
        c.advance(n);
    }

    /// An `Output` event: `conn`'s transport took `n` octets.
    fn advance(&mut self, conn: ConnId, n: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        self.popped = false;
        c.advance(n);
    }

    /// A connection's pending bytes (left in place), with `extra` appended
    /// to its output.
    pub fn pending(&self, conn: ConnId, extra: Option<&Message>) -> Option<Pending> {
        let c = self.conns.get(&conn)?;
        if c.dead {
            return None;
        }
        let mut out_data = c.out[c.out_off..].to_vec();
        let out_resp_len = if c.out_off > 0 {
            u16::try_from(out_data.len()).unwrap_or(u16::MAX)
        } else {
            0
        };
        for msg in self.engine.queued_messages(conn) {
            msg.encode_into(&mut out_data);
        }
        if let Some(msg) = extra {
            msg.encode_into(&mut out_data);
        }
        // Held requests first (complete), then the partial one after them.
        let mut in_data = c.held.clone();
        in_data.extend_from_slice(&c.decoder.partial());
        Some(Pending {
            in_data,
            out_data,
            out_resp_len,
        })
    }

    /// The engine's records for a stream (connections mapped to stream ids).
    pub fn export_records(&self, conns: &BTreeMap<ConnId, u32>) -> Vec<Record> {
        self.engine.export_records(conns)
    }

    /// Takes over a migration stream (`bytes`, parsed as `stream`): the
    /// connections as `outcomes` say (the live shell decided them with the
    /// platform; replay reads them from the recording), then nodes,
    /// watches, transactions, quotas; then pending input and output.
    /// Returns the connections whose pending input was unusable (the shell
    /// closes them). On error the engine may hold some connections but no
    /// other state. This is [`ShellState::apply`] of a `Restore` for a
    /// stream already parsed.
    pub fn restore(
        &mut self,
        bytes: &[u8],
        stream: &Stream,
        outcomes: &[(u32, Outcome)],
    ) -> Result<RestoreOutcome, TakeOverError> {
        // What `apply` does with a `Restore`, but with the stream the live
        // shell has already parsed (parsing it again would lengthen the
        // live update's pause).
        self.record(&BoundaryEvent::Restore {
            stream: bytes,
            outcomes: outcomes.to_vec(),
        });
        self.take_over(stream, outcomes)
    }

    /// A `Restore` event, carried out on the parsed stream.
    fn take_over(
        &mut self,
        stream: &Stream,
        outcomes: &[(u32, Outcome)],
    ) -> Result<RestoreOutcome, TakeOverError> {
        let by_id: BTreeMap<u32, Outcome> = outcomes.iter().copied().collect();
        let mut map: BTreeMap<u32, ConnId> = BTreeMap::new();
        let mut restored = Vec::new();
        let mut gone = Vec::new();
        for record in &stream.records {
            let Record::Connection(c) = record else {
                continue;
            };
            let outcome = by_id.get(&c.conn_id).copied().unwrap_or(Outcome::Dropped);
            let id = match (outcome, &c.spec) {
                (Outcome::Dropped, _) => continue,
                (Outcome::Socket(id), ConnSpec::Socket(_)) => {
                    self.conns.insert(id, StateConn::new(None));
                    self.engine.handle(Input::Connect {
                        conn: id,
                        kind: ConnKind::Socket,
                    });
                    id
                }
                (Outcome::Ring(id) | Outcome::Gone(id), ConnSpec::Ring(r)) => {
                    let tdomid = (r.tdomid != crate::migration::DOMID_INVALID).then_some(r.tdomid);
                    match c.ring {
                        Some(loc) => {
                            self.engine
                                .restore_ring(id, r.domid, loc.mfn, loc.remote_port, tdomid)
                        }
                        None if r.domid == 0 => self.engine.handle(Input::Connect {
                            conn: id,
                            kind: ConnKind::Domain(0),
                        }),
                        None => self.engine.restore_ring(id, r.domid, 0, 0, tdomid),
                    }
                    self.conns.insert(id, StateConn::new(Some(r.domid)));
                    if matches!(outcome, Outcome::Gone(_)) {
                        gone.push(r.domid);
                    }
                    id
                }
                (outcome, _) => {
                    return Err(TakeOverError::OutcomeMismatch {
                        conn_id: c.conn_id,
                        outcome,
                    })
                }
            };
            map.insert(c.conn_id, id);
            restored.push((id, c));
        }
        let report = self.engine.restore_records(&stream.records, &map)?;
        for domid in gone {
            self.engine.handle(Input::DomainState {
                domid,
                shutdown: true,
                dying: true,
            });
        }
        let mut bad_input = Vec::new();
        for (id, c) in restored {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.out = c.out_data.clone();
                conn.out_off = 0;
            }
            if !c.in_data.is_empty() && self.feed(id, &c.in_data, &mut |_, _, _, _| {}).is_err() {
                bad_input.push(id);
            }
        }
        Ok(RestoreOutcome {
            nodes: report.nodes,
            watches: report.watches,
            unknown_quotas: report.unknown_quotas,
            bad_input,
        })
    }
}

/// Why [`ShellState::restore`] could not take a stream over.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TakeOverError {
    /// What became of a connection does not fit its record (a socket
    /// restored as a ring, or the other way round).
    #[error("connection {conn_id}: outcome {outcome:?} does not fit its record")]
    OutcomeMismatch {
        /// The stream's connection id.
        conn_id: u32,
        /// What became of it.
        outcome: Outcome,
    },
    /// The engine refused the records.
    #[error(transparent)]
    Records(#[from] RestoreError),
}

/// What [`ShellState::restore`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// Nodes.
    pub nodes: usize,
    /// Watches.
    pub watches: usize,
    /// Quota names not known here.
    pub unknown_quotas: Vec<String>,
    /// Connections whose pending input did not decode.
    pub bad_input: Vec<ConnId>,
}

/// What [`ShellState::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was applied; it has nothing to report.
    Done,
    /// A `Restore` took a stream over.
    Restored(RestoreOutcome),
}

/// Why [`ShellState::apply`] could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An `Input`'s bytes do not decode: the connection broke the
    /// protocol (the shell ends it; a recording has the `Close` or
    /// `Violation` that followed).
    #[error("connection {conn}: {source}")]
    Decode {
        /// The connection.
        conn: ConnId,
        /// Why.
        source: xenring::Error,
    },
    /// A `Restore`'s stream does not parse.
    #[error("the migration stream: {0}")]
    Stream(MigrationError),
    /// A `Restore`'s stream could not be taken over.
    #[error(transparent)]
    TakeOver(#[from] TakeOverError),
    /// A `StoreImage` does not apply (not an image, or not of the store it
    /// follows).
    #[error(transparent)]
    StoreImage(#[from] crate::engine::store::ImageError),
}

/// The engine input an event is, if it is one by itself: the one place
/// the recorded vocabulary becomes [`Input`]. `Input` events become
/// `Input::Request`s once their bytes decode ([`ShellState::apply`]); an
/// `Answer` goes to the engine as the answer to a control request; the
/// others change only the shell's state, or nothing.
pub fn engine_input(event: &BoundaryEvent<'_>) -> Option<Input<'static>> {
    Some(match *event {
        BoundaryEvent::Time(now) => Input::Time(now),
        BoundaryEvent::Connect { conn, kind } => Input::Connect {
            conn,
            kind: match kind {
                ConnectKind::Socket => ConnKind::Socket,
                ConnectKind::Ring(d) => ConnKind::Domain(d),
            },
        },
        BoundaryEvent::Close { conn } | BoundaryEvent::Violation { conn } => {
            Input::Disconnect { conn }
        }
        BoundaryEvent::Reset { conn } => Input::Reset { conn },
        BoundaryEvent::Introduced { token, result } => Input::Introduced { token, result },
        BoundaryEvent::DomainState {
            domid,
            shutdown,
            dying,
        } => Input::DomainState {
            domid,
            shutdown,
            dying,
        },
        BoundaryEvent::Start { .. }
        | BoundaryEvent::Restore { .. }
        | BoundaryEvent::Input { .. }
        | BoundaryEvent::Output { .. }
        | BoundaryEvent::Answer { .. }
        | BoundaryEvent::HandOver
        | BoundaryEvent::Hold { .. }
        | BoundaryEvent::RingIndices { .. }
        | BoundaryEvent::Counters(_)
        | BoundaryEvent::StoreImage(_)
        | BoundaryEvent::Fatal { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Config;
    use crate::migration::{ConnectionData, Endian, Header as StreamHeader, SocketConn, Version};
    use crate::replay::format::{Next, Reader};
    use xenring::codec::{build_args, build_path_value};
    use xenring::MsgType;

    fn request(ty: MsgType, req_id: u32, payload: Vec<u8>) -> Vec<u8> {
        Message::new(ty, req_id, 0, payload).unwrap().to_bytes()
    }

    /// Requests whose answers are several messages of different lengths:
    /// replies and a watch event.
    fn requests() -> Vec<u8> {
        [
            request(
                MsgType::Write,
                1,
                build_path_value(b"/a", b"a value long enough to cut"),
            ),
            request(MsgType::Watch, 2, build_args(&[b"/a", b"token"])),
            request(MsgType::Read, 3, build_args(&[b"/a"])),
            request(MsgType::Directory, 4, build_args(&[b"/"])),
        ]
        .concat()
    }

    fn socket_core() -> ShellState {
        let mut core = ShellState::new(Engine::new(Config::default()), None);
        core.apply_infallible(BoundaryEvent::Connect {
            conn: 1,
            kind: ConnectKind::Socket,
        });
        core
    }

    /// `socket_needs` says what the three questions it replaces say, for
    /// a connection unknown, idle, with bytes half written, holding a
    /// request, and dead.
    #[test]
    fn test_socket_needs_answers_as_the_three_it_replaces() {
        let mut core = socket_core();
        let separate = |core: &ShellState, conn| {
            (
                core.is_live(conn) && core.accepts_requests(conn),
                core.has_buffered_output(conn),
            )
        };
        let check = |core: &ShellState, conn, expected: (bool, bool), when: &str| {
            assert_eq!(core.socket_needs(conn), expected, "{when}");
            assert_eq!(
                separate(core, conn),
                expected,
                "{when} (the separate questions)"
            );
        };
        check(&core, 9, (false, false), "unknown");
        check(&core, 1, (true, false), "idle");
        core.input(
            1,
            &request(MsgType::Read, 1, build_args(&[b"/"])),
            &mut |_, _, _, _| {},
        )
        .unwrap();
        assert!(core.next_output(1).is_some());
        core.wrote(1, 3);
        check(&core, 1, (true, true), "half written");
        drain(&mut core, 1);
        check(&core, 1, (true, false), "drained");
        core.apply_infallible(BoundaryEvent::Hold { on: true });
        core.input(
            1,
            &request(MsgType::TransactionStart, 2, Vec::new()),
            &mut |_, _, _, _| {},
        )
        .unwrap();
        check(&core, 1, (false, false), "holding a request");
        core.apply_infallible(BoundaryEvent::Hold { on: false });
        assert!(core.next_output(1).is_some());
        core.wrote(1, 1);
        core.apply_infallible(BoundaryEvent::Violation { conn: 1 });
        check(&core, 1, (false, false), "dead, with bytes left");
    }

    /// Everything `conn` has to write, written in full.
    fn drain(core: &mut ShellState, conn: ConnId) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(bytes) = core.next_output(conn) {
            let bytes = bytes.to_vec();
            assert!(!bytes.is_empty(), "next_output offered nothing");
            out.extend_from_slice(&bytes);
            core.wrote(conn, bytes.len());
        }
        out
    }

    /// The stream a live update writes for connection 1 of `core` (as
    /// stream connection 5), through bytes and back.
    fn stream_of(core: &ShellState) -> (Vec<u8>, Stream) {
        let pending = core.pending(1, None).unwrap();
        let mut records = vec![Record::Connection(ConnectionData {
            conn_id: 5,
            spec: ConnSpec::Socket(SocketConn { socket_fd: 10 }),
            in_data: pending.in_data,
            out_resp_len: pending.out_resp_len,
            out_data: pending.out_data,
            unique_id: None,
            ring: None,
        })];
        records.extend(core.export_records(&BTreeMap::from([(1, 5)])));
        let stream = Stream {
            header: StreamHeader {
                version: Version::V2,
                endian: Endian::Little,
            },
            records,
        };
        let bytes = stream.to_bytes().unwrap();
        let parsed = Stream::parse(&bytes).unwrap();
        assert_eq!(parsed, stream);
        (bytes, parsed)
    }

    fn restored(bytes: &[u8], stream: &Stream) -> ShellState {
        let mut core = ShellState::new(Engine::new(Config::default()), None);
        let outcome = core
            .restore(bytes, stream, &[(5, Outcome::Socket(9))])
            .unwrap();
        assert!(outcome.bad_input.is_empty());
        core
    }

    #[test]
    fn test_recorded_events_applied_again_make_the_same_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        let recorder = Recorder::open(&path, false).unwrap();
        let mut live = ShellState::new(Engine::new(Config::default()), Some(recorder));
        live.apply_infallible(BoundaryEvent::Time(5));
        live.apply_infallible(BoundaryEvent::Connect {
            conn: 1,
            kind: ConnectKind::Socket,
        });
        live.input(1, &requests(), &mut |_, _, _, _| {}).unwrap();
        // Partial writes, and one that takes nothing.
        let mut sent = Vec::new();
        live.next_output(1).unwrap();
        live.wrote(1, 0);
        while let Some(bytes) = live.next_output(1) {
            let n = bytes.len().min(7);
            sent.extend_from_slice(&bytes[..n]);
            live.wrote(1, n);
        }
        live.apply_infallible(BoundaryEvent::Close { conn: 1 });
        // Dropping the recorder writes everything out.
        drop(live);

        let data = std::fs::read(&path).unwrap();
        let mut reader = Reader::new(&data).unwrap();
        let mut replayed = ShellState::new(Engine::new(Config::default()), None);
        let mut again = Vec::new();
        while let Next::Event(event) = reader.next_event().unwrap() {
            if let BoundaryEvent::Output { conn, bytes } = event {
                let offered = replayed.next_output(conn).unwrap_or_default();
                assert!(offered.starts_with(bytes), "{offered:?} then {bytes:?}");
                again.extend_from_slice(bytes);
            }
            replayed.apply(event, &mut |_, _, _, _| {}).unwrap();
        }
        assert!(!sent.is_empty());
        assert_eq!(again, sent);
        assert!(!replayed.has(1), "the recorded Close was applied");
    }

    #[test]
    fn test_pending_after_partial_write_is_exactly_the_unwritten_rest() {
        let mut reference = socket_core();
        reference
            .input(1, &requests(), &mut |_, _, _, _| {})
            .unwrap();
        let all = drain(&mut reference, 1);

        let mut core = socket_core();
        core.input(1, &requests(), &mut |_, _, _, _| {}).unwrap();
        let first = core.next_output(1).unwrap().len();
        core.wrote(1, 7);
        let pending = core.pending(1, None).unwrap();
        assert_eq!(pending.out_data, &all[7..]);
        assert_eq!(usize::from(pending.out_resp_len), first - 7);
        assert!(pending.in_data.is_empty());
        // Reading pending bytes takes nothing: the core still writes them.
        assert_eq!(drain(&mut core, 1), &all[7..]);
    }

    #[test]
    fn test_nothing_written_yet_is_no_partial_response() {
        let mut core = socket_core();
        core.input(1, &requests(), &mut |_, _, _, _| {}).unwrap();
        let queued = core.pending(1, None).unwrap();
        assert_eq!(queued.out_resp_len, 0);
        // Taken from the engine but not written: still no partial response.
        let _ = core.next_output(1).unwrap();
        core.wrote(1, 0);
        let taken = core.pending(1, None).unwrap();
        assert_eq!(taken.out_resp_len, 0);
        assert_eq!(taken.out_data, queued.out_data);
    }

    #[test]
    fn test_live_update_resumes_a_partial_write_with_no_byte_twice_or_lost() {
        let mut reference = socket_core();
        reference
            .input(1, &requests(), &mut |_, _, _, _| {})
            .unwrap();
        let all = drain(&mut reference, 1);
        let first = {
            let mut c = socket_core();
            c.input(1, &requests(), &mut |_, _, _, _| {}).unwrap();
            c.next_output(1).unwrap().len()
        };
        // Cut inside the header, at its end, inside the payload, at the
        // message's end, and in the second message.
        for cut in [0, 1, 15, 16, 17, first - 1, first, first + 3] {
            let mut core = socket_core();
            core.input(1, &requests(), &mut |_, _, _, _| {}).unwrap();
            let mut sent = Vec::new();
            while sent.len() < cut {
                let bytes = core.next_output(1).unwrap();
                let n = bytes.len().min(cut - sent.len());
                sent.extend_from_slice(&bytes[..n]);
                core.wrote(1, n);
            }
            let (bytes, stream) = stream_of(&core);
            let mut after = restored(&bytes, &stream);
            sent.extend(drain(&mut after, 9));
            assert_eq!(sent, all, "cut after {cut} octets");
        }
    }

    #[test]
    fn test_live_update_carries_half_a_request_that_completes_after() {
        let read = request(MsgType::Read, 8, build_args(&[b"/a"]));
        let mut core = socket_core();
        let write = request(MsgType::Write, 1, build_path_value(b"/a", b"v"));
        core.input(1, &write, &mut |_, _, _, _| {}).unwrap();
        let _ = drain(&mut core, 1);
        // Half a header, then a header and half a payload.
        for cut in [5, 18] {
            let mut c = socket_core();
            c.input(1, &write, &mut |_, _, _, _| {}).unwrap();
            let _ = drain(&mut c, 1);
            c.input(1, &read[..cut], &mut |_, _, _, _| {}).unwrap();
            assert_eq!(c.next_output(1), None, "half a request has no answer");
            let pending = c.pending(1, None).unwrap();
            assert_eq!(pending.in_data, &read[..cut]);
            let (bytes, stream) = stream_of(&c);
            let mut after = restored(&bytes, &stream);
            assert_eq!(after.next_output(9), None);
            after.input(9, &read[cut..], &mut |_, _, _, _| {}).unwrap();
            let reply = drain(&mut after, 9);
            let expected = Message::new(MsgType::Read, 8, 0, b"v".to_vec())
                .unwrap()
                .to_bytes();
            assert_eq!(reply, expected, "cut after {cut} octets");
        }
    }

    #[test]
    fn test_input_carries_out_every_whole_message_and_keeps_the_rest() {
        let all = requests();
        // Whole messages, then half of one, in a single input and cut at
        // every point: the same requests reach the engine either way.
        let mut whole = socket_core();
        let mut seen = Vec::new();
        whole
            .input(1, &all, &mut |_, _, _, m| seen.push(m.header.req_id))
            .unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        let expected = drain(&mut whole, 1);
        for cut in 0..=all.len() {
            let mut core = socket_core();
            let mut seen = Vec::new();
            for part in [&all[..cut], &all[cut..]] {
                core.input(1, part, &mut |_, _, _, m| seen.push(m.header.req_id))
                    .unwrap();
            }
            assert_eq!(seen, [1, 2, 3, 4], "cut at {cut}");
            assert_eq!(drain(&mut core, 1), expected, "cut at {cut}");
        }
    }

    #[test]
    fn test_a_poisoned_decoder_fails_even_on_an_empty_input() {
        let mut core = socket_core();
        let mut too_long = [0u8; xenring::wire::HEADER_SIZE];
        too_long[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(core.input(1, &too_long, &mut |_, _, _, _| {}).is_err());
        assert!(core.input(1, &[], &mut |_, _, _, _| {}).is_err());
    }

    #[test]
    fn test_extra_message_is_queued_after_everything_else() {
        let mut core = socket_core();
        core.input(1, &requests(), &mut |_, _, _, _| {}).unwrap();
        let plain = core.pending(1, None).unwrap();
        let ok = Message::new(MsgType::Control, 3, 0, b"OK\0".to_vec()).unwrap();
        let with = core.pending(1, Some(&ok)).unwrap();
        assert_eq!(with.out_data, [plain.out_data, ok.to_bytes()].concat());
    }

    #[test]
    fn test_restore_refuses_an_outcome_that_does_not_fit_its_record() {
        let core = socket_core();
        let (bytes, stream) = stream_of(&core);
        let mut after = ShellState::new(Engine::new(Config::default()), None);
        let err = after
            .restore(&bytes, &stream, &[(5, Outcome::Ring(9))])
            .unwrap_err();
        assert_eq!(
            err,
            TakeOverError::OutcomeMismatch {
                conn_id: 5,
                outcome: Outcome::Ring(9)
            }
        );
    }

    #[test]
    fn test_restore_reports_pending_input_that_does_not_decode() {
        let mut core = socket_core();
        // A header announcing a payload over the protocol's limit.
        let mut bad = Message::new(MsgType::Read, 1, 0, Vec::new())
            .unwrap()
            .to_bytes();
        bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
        let (_, mut stream) = stream_of(&core);
        if let Some(Record::Connection(c)) = stream.records.first_mut() {
            c.in_data = bad;
        }
        let bytes = stream.to_bytes().unwrap();
        core = ShellState::new(Engine::new(Config::default()), None);
        let outcome = core
            .restore(&bytes, &stream, &[(5, Outcome::Socket(9))])
            .unwrap();
        assert_eq!(outcome.bad_input, vec![9]);
    }
}
