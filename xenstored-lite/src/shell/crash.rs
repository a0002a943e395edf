//! Surviving our own crash: the snapshot that keeps the crash journal
//! short, and the recovery of a daemon started again after a crash.
//!
//! A recovery reads the journal (`shell::journal`) whole, applies its
//! events to a fresh shell state as replay does — the snapshot's `Restore`,
//! then every event after it — and takes what the crashed process had:
//! every guest's ring is mapped again (grant ref 1, else the mfn) and its
//! event channel bound anew from the guest's port (the crashed process's
//! end was closed with it, which left the guest's end waiting for us);
//! dom0's own ring, `VIRQ_DOM_EXC` and the socket are set up as at any
//! start. Socket clients are gone (they reconnect, as after a restart of
//! C xenstored). Each ring resumes from its page: the journal says where
//! its `req_cons` and `rsp_prod` stood; request octets journaled but not
//! yet released are released, and responses the crashed process wrote
//! after it last wrote the journal are not written again.
//!
//! A request that crashed the daemon (a `Fatal` event the panic hook
//! wrote) is answered with `EIO` instead of carried out, and the journal is
//! copied aside for a replay on a laptop, so one bad request crashes the
//! daemon once, not in a loop.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use xenring::page::RING_SIZE_U32;
use xenring::Header;

use crate::engine::{Action, ConnId, Engine};
use crate::migration::{ConnSpec, Record, RingConn, RingLocation, Version, DOMID_INVALID};
use crate::replay::format::{
    encode, BoundaryEvent, FormatError, Next, Outcome, Reader, HEADER_LEN,
};
use crate::replay::player;
use crate::shell::journal::{Applying, Journal};
use crate::shell::live_update::stream_of;
use crate::shell::state::{ApplyError, ShellState};
use crate::shell::{bind_listener, start_event, Daemon, SetupError, ShellConfig};

/// Why a crash journal could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The journal cannot be read.
    #[error("cannot read the crash journal {}: {source}", path.display())]
    Read {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The journal is malformed.
    #[error("the crash journal {} is malformed: {source}", path.display())]
    Format {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: FormatError,
    },
    /// An event of the journal cannot be applied.
    #[error("the crash journal's event {event} cannot be applied: {source}")]
    Apply {
        /// The event.
        event: u64,
        /// Why.
        source: ApplyError,
    },
    /// The journal cannot be continued.
    #[error("cannot continue the crash journal {}: {source}", path.display())]
    Resume {
        /// The journal.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket cannot be bound.
    #[error("cannot serve {}: {source}", path.display())]
    Listen {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon cannot be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// What a recovery did, for the log and the tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Events of the journal applied.
    pub events: u64,
    /// Nodes in the store.
    pub nodes: usize,
    /// Watches.
    pub watches: usize,
    /// Rings served again.
    pub rings: usize,
    /// Rings whose domain had gone (released).
    pub gone: usize,
    /// Socket connections closed.
    pub sockets: usize,
    /// Requests answered with `EIO` because they crashed the daemon.
    pub skipped: usize,
    /// Request octets journaled and released only now.
    pub released: u64,
    /// Response octets the crashed process wrote after its last journal
    /// write (not written again).
    pub already_written: u64,
    /// Outputs the replayed state would have sent differently from what
    /// the crashed process sent (0 unless the engine is not deterministic).
    pub divergences: u64,
    /// Where the journal was copied for a replay (a request crashed it).
    pub kept: Option<PathBuf>,
}

/// Where each ring's indices stand by the journal, as its events go by.
#[derive(Debug, Default)]
struct Positions(BTreeMap<ConnId, (u32, u32)>);

impl Positions {
    fn see(&mut self, event: &BoundaryEvent<'_>) {
        let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX);
        match *event {
            BoundaryEvent::RingIndices {
                conn,
                req_cons,
                rsp_prod,
            } => {
                self.0.insert(conn, (req_cons, rsp_prod));
            }
            BoundaryEvent::Input { conn, bytes } => {
                if let Some(p) = self.0.get_mut(&conn) {
                    p.0 = p.0.wrapping_add(len(bytes));
                }
            }
            BoundaryEvent::Output { conn, bytes } => {
                if let Some(p) = self.0.get_mut(&conn) {
                    p.1 = p.1.wrapping_add(len(bytes));
                }
            }
            // A ring attached, reset or restored has a RingIndices of its
            // own after it.
            _ => {}
        }
    }
}

/// Actions the replayed engine asked for whose outcome the journal lacks
/// (the crash came between them): carried out after the recovery.
#[derive(Debug, Default)]
struct PendingActions {
    introduce: BTreeMap<u64, Action>,
    answers: BTreeMap<(ConnId, u32), Action>,
}

impl PendingActions {
    fn see(&mut self, event: &BoundaryEvent<'_>) {
        match event {
            BoundaryEvent::Introduced { token, .. } => {
                self.introduce.remove(token);
            }
            BoundaryEvent::Answer { conn, header, .. } => {
                self.answers.remove(&(*conn, header.req_id));
            }
            _ => {}
        }
    }

    fn asked(&mut self, actions: Vec<Action>) {
        for action in actions {
            match &action {
                Action::Introduce { token, .. } => {
                    self.introduce.insert(*token, action);
                }
                Action::MemReport { conn, header, .. } => {
                    self.answers.insert((*conn, header.req_id), action);
                }
                _ => {}
            }
        }
    }

    fn into_actions(self) -> Vec<Action> {
        self.introduce
            .into_values()
            .chain(self.answers.into_values())
            .collect()
    }
}

/// A crash journal read and applied to a fresh state, ready for
/// [`Daemon::recover`] to serve.
#[derive(Debug)]
pub struct Replayed {
    core: ShellState,
    positions: Positions,
    pending: PendingActions,
    last_time: u64,
    max_conn: ConnId,
    summary: RecoverySummary,
    /// The last event was a `Fatal`: a request crashed the last process.
    ended_fatal: bool,
    journal: Option<Journal>,
    started: Instant,
}

/// Reads the events of a journal; returns them and the length of the file
/// up to the end of the last whole one.
fn read_events<'a>(
    path: &Path,
    data: &'a [u8],
) -> Result<(Vec<BoundaryEvent<'a>>, u64), RecoveryError> {
    let format = |source| RecoveryError::Format {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = Reader::new(data).map_err(format)?;
    let mut events = Vec::new();
    let mut valid = HEADER_LEN as u64;
    loop {
        match reader.next_event().map_err(format)? {
            Next::Event(e) => {
                events.push(e);
                valid = reader.offset();
            }
            Next::End => break,
            Next::Truncated { offset } => {
                tracing::info!(
                    "crash recovery: the journal stops inside an event at offset {offset} (cut by the crash); going on from the event before it"
                );
                break;
            }
        }
    }
    Ok((events, valid))
}

/// Applies `events` to a fresh state around `engine`; a request or an
/// event a `Fatal` names is skipped.
fn replay(engine: Engine, events: Vec<BoundaryEvent<'_>>) -> Result<Replayed, RecoveryError> {
    let fatal: BTreeMap<u64, Option<(ConnId, Header)>> = events
        .iter()
        .filter_map(|e| match e {
            BoundaryEvent::Fatal { event, request } => Some((*event, *request)),
            _ => None,
        })
        .collect();
    let ended_fatal = matches!(events.last(), Some(BoundaryEvent::Fatal { .. }));
    let mut r = Replayed {
        core: ShellState::new(engine, None),
        positions: Positions::default(),
        pending: PendingActions::default(),
        last_time: 0,
        max_conn: 0,
        summary: RecoverySummary::default(),
        ended_fatal,
        journal: None,
        started: Instant::now(),
    };
    let opts = player::Options {
        verify: true,
        progress: false,
        alter_reply: None,
    };
    let mut checked = player::Summary::default();
    for (index, event) in events.into_iter().enumerate() {
        let index = index as u64;
        r.positions.see(&event);
        r.pending.see(&event);
        match &event {
            BoundaryEvent::Time(t) => r.last_time = *t,
            BoundaryEvent::Connect { conn, .. }
            | BoundaryEvent::Introduced {
                result: Ok(conn), ..
            } => r.max_conn = r.max_conn.max(*conn),
            BoundaryEvent::Restore { outcomes, .. } => {
                for (_, o) in outcomes {
                    if let Outcome::Socket(c) | Outcome::Ring(c) | Outcome::Gone(c) = o {
                        r.max_conn = r.max_conn.max(*c);
                    }
                }
            }
            _ => {}
        }
        match fatal.get(&index) {
            Some(None) => {
                tracing::warn!(
                    "crash recovery: journal event {index} ({}) crashed the daemon; skipped",
                    describe(&event)
                );
                r.summary.skipped += 1;
                continue;
            }
            Some(Some(request)) => {
                r.core.skip_request(Some(*request));
                r.summary.skipped += 1;
            }
            None => {}
        }
        if let Err(player::ReplayError::Divergence(d)) =
            player::observe(&mut r.core, &event, index, &opts, &mut checked)
        {
            if r.summary.divergences == 0 {
                tracing::warn!(
                    "crash recovery: the replayed state differs from what was sent: {d}"
                );
            }
            r.summary.divergences += 1;
        }
        // The panic hook names this event if applying it crashes.
        Applying::event(Some(index));
        let applied = r.core.apply(event, &mut |_, _, _, _| {});
        Applying::event(None);
        r.core.skip_request(None);
        match applied {
            Ok(_) | Err(ApplyError::Decode { .. }) => {}
            Err(source) => {
                return Err(RecoveryError::Apply {
                    event: index,
                    source,
                })
            }
        }
        r.pending.asked(r.core.take_actions());
        r.summary.events += 1;
    }
    Ok(r)
}

/// One line for an event skipped whole.
fn describe(event: &BoundaryEvent<'_>) -> String {
    let mut bytes = Vec::new();
    encode(event, &mut bytes);
    format!(
        "kind {}, {} octets",
        bytes.first().copied().unwrap_or(0),
        bytes.len()
    )
}

impl Replayed {
    /// What the replay did so far.
    pub fn summary(&self) -> &RecoverySummary {
        &self.summary
    }

    /// The replay alone of a journal held in memory, touching nothing
    /// else (no file continued: a panic is not marked) — the fuzz target's
    /// way in.
    pub fn from_bytes(engine: Engine, data: &[u8]) -> Result<Self, RecoveryError> {
        let (events, _) = read_events(Path::new("(in memory)"), data)?;
        replay(engine, events)
    }

    /// The replayed state (tests).
    #[cfg(test)]
    pub(super) fn core_mut(&mut self) -> &mut ShellState {
        &mut self.core
    }

    /// Reads the crash journal at `path` and applies it to a state around
    /// `engine` (see the module's documentation). Nothing outside the
    /// journal is touched yet.
    pub fn read(engine: Engine, path: &Path) -> Result<Self, RecoveryError> {
        let t0 = Instant::now();
        let data = std::fs::read(path).map_err(|source| RecoveryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (events, valid) = read_events(path, &data)?;
        let count = events.len() as u64;
        // From here a panic marks this journal (cut after its last whole
        // event) with the event being applied.
        let journal =
            Journal::resume(path, valid, count).map_err(|source| RecoveryError::Resume {
                path: path.to_path_buf(),
                source,
            })?;
        let mut replayed = replay(engine, events)?;
        if replayed.ended_fatal {
            replayed.summary.kept =
                keep_for_replay(path, &data[..usize::try_from(valid).unwrap_or(data.len())]);
        }
        replayed.journal = Some(journal);
        replayed.started = t0;
        Ok(replayed)
    }
}

impl Daemon {
    /// Serves a replayed crash journal: the daemon as the crashed process
    /// left it, but for its socket clients.
    pub fn recover(
        replayed: Replayed,
        platform: crate::shell::platform::Platform,
        config: &ShellConfig,
    ) -> Result<(Self, RecoverySummary), RecoveryError> {
        let listener = bind_listener(&config.socket).map_err(|source| RecoveryError::Listen {
            path: config.socket.clone(),
            source,
        })?;
        let Replayed {
            core,
            positions,
            pending,
            last_time,
            max_conn,
            mut summary,
            journal,
            started: t0,
            ..
        } = replayed;
        let mut daemon = Self::with_core(core, platform, config, listener, true, journal, false)?;
        daemon.clock_base = last_time;
        daemon.last_time = last_time;
        daemon.next_conn = max_conn.wrapping_add(1);
        daemon.record_recovered_start();
        daemon.reattach(&positions, &mut summary);
        if daemon.core.holding() {
            // The live update that held them died with the process.
            daemon
                .core
                .apply_infallible(BoundaryEvent::Hold { on: false });
        }
        daemon.carry_out(pending.into_actions());
        daemon.domains_changed();
        daemon.settle();
        summary.nodes = daemon.core.engine().store().len();
        summary.watches = daemon.core.engine().watch_count();
        tracing::info!(
            "crash recovery: restored {} nodes, {} watches, {} rings ({} gone), closed {} socket connections, \
             replayed {} journal events ({} skipped, {} request octets released, {} response octets already written, \
             {} divergences) in {} ms",
            summary.nodes,
            summary.watches,
            summary.rings,
            summary.gone,
            summary.sockets,
            summary.events,
            summary.skipped,
            summary.released,
            summary.already_written,
            summary.divergences,
            t0.elapsed().as_millis()
        );
        Ok((daemon, summary))
    }

    /// A recording (`--replay-record`) goes on with this process's own
    /// start: its command line and the recovered state as a `Restore` (the
    /// crashed process's last events may not have reached it).
    fn record_recovered_start(&mut self) {
        if self.core.recording_totals().is_none() {
            return;
        }
        let stream = self.export_stream(Version::V2, None);
        let bytes = match stream.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("recording: cannot record the recovered state: {e}");
                return;
            }
        };
        let config_start = start_event_of(&self.exec_args);
        self.core.record_recording_only(&config_start);
        self.core.record_recording_only(&BoundaryEvent::Restore {
            stream: &bytes,
            outcomes: outcomes_of(&stream),
        });
    }

    /// Serves the replayed state's rings again and closes its sockets.
    fn reattach(&mut self, positions: &Positions, summary: &mut RecoverySummary) {
        for (conn, domid, _) in self.core.connections() {
            let Some(domid) = domid else {
                self.core.apply_infallible(BoundaryEvent::Close { conn });
                summary.sockets += 1;
                continue;
            };
            let ring = RingConn {
                domid,
                tdomid: DOMID_INVALID,
                evtchn: 0,
            };
            let loc = self
                .core
                .engine()
                .domain_ring(domid)
                .filter(|&(mfn, _)| mfn != 0 || domid != 0)
                .map(|(mfn, remote_port)| RingLocation { mfn, remote_port });
            match self.attach_ring(&ring, loc) {
                Ok((page, port)) => {
                    self.add_ring_as(conn, page, port, domid);
                    self.seen_alive.insert(domid);
                    if let Ok(Some(gnttab::DomainInfo {
                        unique_id: Some(id),
                        ..
                    })) = self.platform.dominfo.get(domid)
                    {
                        self.unique_ids.insert(domid, id);
                    }
                    self.resume_ring(conn, positions.0.get(&conn).copied(), summary);
                    self.journal_ring(conn);
                    self.notify(conn);
                    summary.rings += 1;
                }
                Err(e) => {
                    tracing::warn!("crash recovery: domain {domid}: {e}; released");
                    summary.gone += 1;
                    self.core.apply_infallible(BoundaryEvent::DomainState {
                        domid,
                        shutdown: true,
                        dying: true,
                    });
                }
            }
        }
        self.do_actions();
    }

    /// Brings `conn`'s ring and its state together: request octets the
    /// journal has but the crashed process had not released are released;
    /// responses it wrote after its last journal write are taken off the
    /// state's output, not written again.
    fn resume_ring(
        &mut self,
        conn: ConnId,
        journaled: Option<(u32, u32)>,
        summary: &mut RecoverySummary,
    ) {
        let Some((req_cons, rsp_prod)) = journaled else {
            tracing::warn!("crash recovery: connection {conn}: the journal does not say where its ring stood; served from its page as it is");
            return;
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some((cons, req_prod, _, prod)) = c.transport.ring_indices() else {
            return;
        };
        let ahead = req_cons.wrapping_sub(cons);
        let queued = req_prod.wrapping_sub(cons);
        // (A queue longer than a ring is refused by the release itself.)
        if ahead <= queued {
            if let Err(e) = c.transport.release_journaled(ahead) {
                tracing::warn!("crash recovery: connection {conn}: {e}");
            }
            summary.released += u64::from(ahead);
        } else {
            tracing::error!(
                "crash recovery: connection {conn}: its ring's req_cons {cons:#x} is not within a ring of the journal's {req_cons:#x} (req_prod {req_prod:#x}); requests may be lost"
            );
        }
        let mut written = prod.wrapping_sub(rsp_prod);
        if written > RING_SIZE_U32 {
            tracing::error!(
                "crash recovery: connection {conn}: its ring's rsp_prod {prod:#x} is not within a ring of the journal's {rsp_prod:#x}; responses may be repeated or lost"
            );
            return;
        }
        summary.already_written += u64::from(written);
        while written > 0 {
            let Some(out) = self.core.next_output(conn) else {
                tracing::error!(
                    "crash recovery: connection {conn}: its ring holds {written} response octets more than the journal knows of"
                );
                return;
            };
            let n = out.len().min(written as usize);
            self.core.wrote(conn, n);
            written -= u32::try_from(n).unwrap_or(written);
        }
    }

    /// At the end of a turn: a snapshot being made is written once it is
    /// ready; a journal grown past its limit (and past twice the last
    /// snapshot: their cost stays a fraction of the journal's) gets one,
    /// unless a live update is under way, or output waits (a restored
    /// output buffer is one block where the engine had a queue, and keeps
    /// no watch-event back-pressure), or a transaction is open (a restored
    /// one is rebuilt from the nodes it touched); past twice that length
    /// it gets one whatever waits.
    pub(super) fn maybe_snapshot(&mut self) {
        let Some((len, base)) = self.core.journal().map(|j| (j.len(), j.base_len())) else {
            return;
        };
        if self.snapshot_job.is_some() {
            self.finish_snapshot();
            return;
        }
        let due = self.journal_limit.max(base.saturating_mul(2));
        let grown = len.saturating_sub(base);
        if grown < due || self.live_update.is_some() || self.core.holding() {
            return;
        }
        let waiting = self.core.engine().open_transaction_count() > 0
            || !self.core.conns_with_output().is_empty()
            || self.conns.keys().any(|&c| self.core.has_buffered_output(c));
        if waiting && grown < due.saturating_mul(2) {
            return;
        }
        self.start_snapshot();
    }

    /// Takes the snapshot's moment: what the shell holds (connections,
    /// ring indices, counters, time) and a copy of the engine (its store
    /// is persistent: a copy is cheap) go to a thread that writes the
    /// stream, while the loop serves on and the journal keeps what comes
    /// after this moment for the new file.
    pub(super) fn start_snapshot(&mut self) {
        let t0 = Instant::now();
        self.sync_point();
        let (records, map) = self.export_connections(None);
        let engine = self.core.engine().clone();
        let mut head = vec![
            start_event_of(&self.exec_args),
            BoundaryEvent::Counters(engine.counters()),
            BoundaryEvent::Time(self.last_time),
        ];
        for (&conn, c) in &self.conns {
            if let Some((req_cons, rsp_prod)) = c.transport.journaled_indices() {
                head.push(BoundaryEvent::RingIndices {
                    conn,
                    req_cons,
                    rsp_prod,
                });
            }
        }
        let Some(j) = self.core.journal() else {
            return;
        };
        j.begin_tail();
        let (tx, rx) = crossbeam::channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("xsl-snapshot".into())
            .spawn(move || {
                let mut records = records;
                records.extend(engine.export_records(&map));
                let stream = stream_of(Version::V2, records);
                let _ = tx.send(snapshot_events(&stream, head));
            });
        match spawned {
            Ok(_) => {
                tracing::debug!(
                    "crash journal: a snapshot's moment taken in {} ms",
                    t0.elapsed().as_millis()
                );
                self.snapshot_job = Some(SnapshotJob {
                    done: rx,
                    started: Instant::now(),
                });
            }
            Err(e) => {
                tracing::warn!("crash journal: cannot start a snapshot: {e}");
                j.drop_tail();
            }
        }
    }

    /// Writes the snapshot being made, if it is ready: the new file is the
    /// snapshot and what was journaled since its moment. One whose events
    /// since have grown past the limit is given up (the next is begun).
    pub(super) fn finish_snapshot(&mut self) {
        let Some(job) = &self.snapshot_job else {
            return;
        };
        let Some(j) = self.core.journal() else {
            self.snapshot_job = None;
            return;
        };
        let ready = match job.done.try_recv() {
            Ok(ready) => ready,
            Err(crossbeam::channel::TryRecvError::Empty) => {
                if j.tail_len() as u64 > self.journal_limit.saturating_mul(4) {
                    tracing::warn!("crash journal: a snapshot took too long; begun again");
                    j.drop_tail();
                    self.snapshot_job = None;
                }
                return;
            }
            Err(crossbeam::channel::TryRecvError::Disconnected) => {
                Err("the snapshot's thread ended without one".to_string())
            }
        };
        let started = job.started;
        self.snapshot_job = None;
        let t0 = Instant::now();
        match ready.and_then(|(events, count)| {
            j.rotate(&events, count)
                .map(|()| events.len())
                .map_err(|e| format!("cannot start it anew: {e}"))
        }) {
            Ok(n) => tracing::debug!(
                "crash journal: snapshot of {n} octets in {} ms (its file written in {} ms)",
                started.elapsed().as_millis(),
                t0.elapsed().as_millis()
            ),
            Err(e) => {
                j.drop_tail();
                tracing::warn!("crash journal: no snapshot: {e}");
            }
        }
    }

    /// Makes a snapshot now and writes it (tests).
    #[cfg(test)]
    pub(super) fn snapshot_now(&mut self) {
        self.start_snapshot();
        while self.snapshot_job.is_some() {
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.finish_snapshot();
        }
    }

    /// A clean stop: the journal goes (a later start begins afresh).
    pub fn remove_journal(&mut self) {
        if let Some(j) = self.core.take_journal() {
            j.remove();
        }
    }
}

/// The `Start` of a process with these arguments.
fn start_event_of(args: &[std::ffi::OsString]) -> BoundaryEvent<'static> {
    start_event(&ShellConfig {
        socket: PathBuf::new(),
        access_log: None,
        rundir: PathBuf::new(),
        exec_args: args.to_vec(),
        record_dir: None,
        journal: None,
    })
}

/// A snapshot being made by its thread.
#[derive(Debug)]
pub(super) struct SnapshotJob {
    /// The snapshot's events, encoded, and how many; or why there are none.
    done: crossbeam::channel::Receiver<Result<(Vec<u8>, u64), String>>,
    started: Instant,
}

/// A snapshot's events: the process's start, the stream as a `Restore`,
/// then `after` (counters, time, ring indices).
fn snapshot_events(
    stream: &crate::migration::Stream,
    after: Vec<BoundaryEvent<'static>>,
) -> Result<(Vec<u8>, u64), String> {
    let bytes = stream.to_bytes().map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(bytes.len() + 4096);
    let mut count = 0u64;
    let mut rest = after.into_iter();
    // The start first, then the state, then what applies to it.
    if let Some(start) = rest.next() {
        encode(&start, &mut events);
        count += 1;
    }
    encode(
        &BoundaryEvent::Restore {
            stream: &bytes,
            outcomes: outcomes_of(stream),
        },
        &mut events,
    );
    count += 1;
    for e in rest {
        encode(&e, &mut events);
        count += 1;
    }
    Ok((events, count))
}

/// Every connection of `stream` as what it is now (sockets and rings keep
/// their numbers).
fn outcomes_of(stream: &crate::migration::Stream) -> Vec<(u32, Outcome)> {
    stream
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) => Some((
                c.conn_id,
                match c.spec {
                    ConnSpec::Socket(_) => Outcome::Socket(c.conn_id),
                    ConnSpec::Ring(_) => Outcome::Ring(c.conn_id),
                },
            )),
            _ => None,
        })
        .collect()
}

/// Copies the journal a request crashed into a directory of its own beside
/// it, for `--replay` on another machine; returns the directory.
fn keep_for_replay(path: &Path, data: &[u8]) -> Option<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = path.parent()?.join(format!("crash-{secs}"));
    let kept = crate::shell::os::create_dirs(&dir, 0o700).and_then(|()| {
        crate::shell::os::write_private(&dir.join(crate::shell::RECORDING_FILE), data)
    });
    match kept {
        Ok(()) => {
            tracing::warn!(
                "crash recovery: the journal of the crash is kept in {} (replay it with --replay={})",
                dir.display(),
                dir.display()
            );
            Some(dir)
        }
        Err(e) => {
            tracing::warn!(
                "crash recovery: cannot keep the journal of the crash in {}: {e}",
                dir.display()
            );
            None
        }
    }
}
