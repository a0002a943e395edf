//! The restore: the new process takes over the descriptors and the state
//! of the stream the old one wrote (the dry run checks the same stream
//! without touching anything).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use evtchn::Port;
use gnttab::GNTTAB_RESERVED_XENSTORE;
use xenring::DomId;

use crate::engine::{Config, ConnId, Engine};
use crate::migration::{ConnSpec, Record, RingConn, RingLocation, Stream};
use crate::replay::format::{BoundaryEvent, Outcome};
use crate::shell::os::{self, set_cloexec};
use crate::shell::platform::Platform;
use crate::shell::state::{ShellState, TakeOverError};
use crate::shell::transport::Transport;
use crate::shell::{Conn, Daemon, SetupError, ShellConfig};

/// Why the new process could not take over the old one's state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailure {
    /// The stream's content does not restore.
    #[error(transparent)]
    TakeOver(#[from] TakeOverError),
    /// The listening socket passed down cannot be used.
    #[error("cannot take over the listening socket: {0}")]
    Listener(#[source] io::Error),
    /// The socket cannot be bound again.
    #[error("cannot serve {}: {source}", path.display())]
    Serve {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The daemon cannot be set up (recording, epoll).
    #[error("cannot set up the daemon: {0}")]
    Setup(#[source] SetupError),
    /// A pre-copy's image of the store's changes does not apply.
    #[error("the pre-copy's store changes: {0}")]
    StoreImage(#[source] crate::shell::state::ApplyError),
}

/// Why a ring of the stream cannot be served again.
#[derive(Debug, thiserror::Error)]
pub(in crate::shell) enum RingRestoreError {
    /// Dom0's own ring (xsd_kva) cannot be mapped.
    #[error("cannot map dom0's own ring: {0}")]
    LocalRing(#[source] gnttab::Error),
    /// Neither the grant nor the mfn maps.
    #[error("cannot map its ring (grant: {grant}; mfn {mfn:#x}: {foreign})")]
    Map {
        /// Why the grant did not map.
        grant: gnttab::Error,
        /// The mfn of the stream.
        mfn: u64,
        /// Why the mfn did not map.
        foreign: gnttab::Error,
    },
    /// The grant does not map and the stream has no mfn.
    #[error("cannot map its ring by grant ({0}) and the stream has no mfn")]
    NoMfn(#[source] gnttab::Error),
    /// Its port must be bound again, and the stream does not say to what.
    #[error("the event-channel handle was not passed down and the stream has no remote port")]
    NoRemotePort,
    /// Its port cannot be bound again.
    #[error("cannot bind its port {remote}: {source}")]
    Bind {
        /// The guest's port.
        remote: u32,
        /// Why.
        source: evtchn::Error,
    },
}

/// What a restore took over, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Socket connections.
    pub sockets: usize,
    /// Ring connections.
    pub rings: usize,
    /// Ring connections whose domain had gone (released after the restore).
    pub gone: usize,
    /// Nodes.
    pub nodes: usize,
    /// Watches.
    pub watches: usize,
}

/// Checks that `stream` can become engine state (the dry run): every record
/// is converted as a real restore does, without touching descriptors,
/// rings or the hypervisor.
pub fn check_stream(
    config: Config,
    bytes: &[u8],
    stream: &Stream,
) -> Result<RestoreSummary, TakeOverError> {
    let mut core = ShellState::new(Engine::new(config), None);
    let mut summary = RestoreSummary::default();
    let outcomes: Vec<(u32, Outcome)> = stream
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Connection(c) => Some(c),
            _ => None,
        })
        .map(|c| match &c.spec {
            ConnSpec::Socket(_) => {
                summary.sockets += 1;
                (c.conn_id, Outcome::Socket(c.conn_id))
            }
            ConnSpec::Ring(_) => {
                summary.rings += 1;
                (c.conn_id, Outcome::Ring(c.conn_id))
            }
        })
        .collect();
    let report = core.restore(bytes, stream, &outcomes)?;
    summary.nodes = report.nodes;
    summary.watches = report.watches;
    Ok(summary)
}

/// A restored daemon, what it restored, and what became of each
/// connection of the stream.
type Restored = (Daemon, RestoreSummary, Vec<(u32, Outcome)>);

impl Daemon {
    /// The new process's side: takes over the descriptors and state of
    /// `stream`, written by the daemon that exec'd us (this one or C
    /// xenstored).
    pub fn restore(
        engine: Engine,
        platform: Platform,
        config: &ShellConfig,
        bytes: &[u8],
        stream: &Stream,
    ) -> Result<(Self, RestoreSummary), RestoreFailure> {
        Self::restore_with(engine, platform, config, bytes, stream, None, None)
            .map(|(daemon, summary, _)| (daemon, summary))
    }

    /// [`Daemon::restore`] after a pre-copy: `engine` holds the store of
    /// the image `bulk` already; `delta`, the changes since, is applied,
    /// and both are recorded before the `Restore` (replay and the crash
    /// journal rebuild the store from them); `continuation` is the old
    /// daemon's process, reaped once it ends.
    pub fn restore_precopied(
        engine: Engine,
        platform: Platform,
        config: &ShellConfig,
        frozen: &super::precopy::Frozen,
        bulk: &[u8],
        prewritten: Option<crate::shell::PrewrittenJournal>,
    ) -> Result<(Self, RestoreSummary), RestoreFailure> {
        let images = frozen.precopied.then_some((bulk, frozen.delta.as_slice()));
        let (mut daemon, summary, outcomes) = Self::restore_with(
            engine,
            platform,
            config,
            &frozen.bytes,
            &frozen.stream,
            images,
            prewritten.and_then(|p| {
                if frozen.precopied {
                    Some(p)
                } else {
                    // The whole state came: its journal begins anew.
                    let _ = std::fs::remove_file(&p.from);
                    None
                }
            }),
        )?;
        let answer = frozen.asker.and_then(|(conn_id, header)| {
            outcomes.iter().find_map(|&(id, o)| match o {
                Outcome::Socket(c) | Outcome::Ring(c) if id == conn_id => Some((c, header)),
                _ => None,
            })
        });
        daemon.continuation = Some(super::precopy::Continuation::new(
            frozen.continuation,
            answer,
        ));
        Ok((daemon, summary))
    }

    fn restore_with(
        engine: Engine,
        platform: Platform,
        config: &ShellConfig,
        bytes: &[u8],
        stream: &Stream,
        images: Option<(&[u8], &[u8])>,
        prewritten: Option<crate::shell::PrewrittenJournal>,
    ) -> Result<Restored, RestoreFailure> {
        let t0 = Instant::now();
        let global = stream.global();
        // The old process passed this descriptor down for its listening
        // socket (GLOBAL_DATA).
        let passed = global.map(|g| g.rw_socket_fd);
        let listener = match passed.and_then(|fd| os::adopt_listener(fd).map(|l| (fd, l))) {
            Some((fd, l)) => {
                let _ = set_cloexec(fd, true);
                l.set_nonblocking(true).map_err(RestoreFailure::Listener)?;
                l
            }
            None => {
                tracing::warn!(
                    "live update: no listening socket passed down ({passed:?}); binding {} again",
                    config.socket.display()
                );
                crate::shell::bind_listener(&config.socket).map_err(|source| {
                    RestoreFailure::Serve {
                        path: config.socket.clone(),
                        source,
                    }
                })?
            }
        };
        // A pre-copy's journal written ahead holds the Start and the bulk.
        let adopted = prewritten.and_then(|p| {
            let path = crate::shell::journal::path_in(&config.rundir);
            match crate::shell::journal::Journal::adopt_prewritten(&p.from, &path, p.len, p.events)
            {
                Ok(j) => {
                    tracing::info!(
                        "live-update: the crash journal written ahead ({} octets) taken over",
                        p.len
                    );
                    Some(j)
                }
                Err(e) => {
                    tracing::warn!("live-update: the journal written ahead: {e}; begun anew");
                    let _ = std::fs::remove_file(&p.from);
                    None
                }
            }
        });
        let ahead = adopted.is_some();
        let journal = match adopted {
            Some(j) => Some(j),
            None => Self::new_journal(config).map_err(RestoreFailure::Setup)?,
        };
        let core = ShellState::new(engine, None);
        let mut daemon = Self::with_core(core, platform, config, listener, true, journal, !ahead)
            .map_err(RestoreFailure::Setup)?;
        if ahead {
            daemon
                .core
                .record_recording_only(&crate::shell::start_event(config));
        }
        let mut summary = RestoreSummary::default();
        let alive: Option<BTreeMap<DomId, Option<u64>>> = daemon.platform.dominfo_list().map(|l| {
            l.into_iter()
                .filter(|d| !d.dying)
                .map(|d| (d.domid, d.unique_id))
                .collect()
        });
        let mut outcomes: Vec<(u32, Outcome)> = Vec::new();
        for record in &stream.records {
            let Record::Connection(c) = record else {
                continue;
            };
            match &c.spec {
                ConnSpec::Socket(s) => {
                    // The old process passed this descriptor down for this
                    // client (CONNECTION_DATA); only this record names it
                    // (the parser refuses a descriptor named twice).
                    let Some(stream) = os::adopt_socket(s.socket_fd) else {
                        tracing::warn!(
                            "live update: connection {}: descriptor {} is not an open socket; dropped",
                            c.conn_id,
                            s.socket_fd
                        );
                        outcomes.push((c.conn_id, Outcome::Dropped));
                        continue;
                    };
                    let _ = set_cloexec(s.socket_fd, true);
                    if let Err(e) = stream.set_nonblocking(true) {
                        tracing::warn!("live update: connection {}: {e}; dropped", c.conn_id);
                        outcomes.push((c.conn_id, Outcome::Dropped));
                        continue;
                    }
                    let id = daemon.alloc_conn();
                    daemon
                        .conns
                        .insert(id, Conn::new(Transport::Socket(stream)));
                    outcomes.push((c.conn_id, Outcome::Socket(id)));
                    summary.sockets += 1;
                }
                ConnSpec::Ring(r) => {
                    let replaced = match (&alive, c.unique_id) {
                        (Some(alive), Some(uid)) if r.domid != 0 => alive
                            .get(&r.domid)
                            .is_none_or(|&now| now.is_some_and(|now| now != uid)),
                        (Some(alive), None) if r.domid != 0 => !alive.contains_key(&r.domid),
                        _ => false,
                    };
                    let outcome = match (replaced, daemon.restore_ring(r, c.ring)) {
                        (false, Ok(id)) => {
                            daemon.seen_alive.insert(r.domid);
                            if let Some(uid) = c.unique_id {
                                daemon.unique_ids.insert(r.domid, uid);
                            }
                            Outcome::Ring(id)
                        }
                        (_, result) => {
                            if let Err(e) = &result {
                                tracing::warn!("live update: domain {}: {e}; released", r.domid);
                            }
                            if let Ok(id) = result {
                                daemon.drop_transport(id);
                            }
                            // Registered so that its records restore; then
                            // released as a dead domain.
                            summary.gone += 1;
                            Outcome::Gone(daemon.alloc_conn())
                        }
                    };
                    outcomes.push((c.conn_id, outcome));
                    summary.rings += 1;
                }
            }
        }
        if let Some((bulk, delta)) = images {
            // The engine took `bulk` before (while the old daemon served);
            // a journal written ahead has it.
            if ahead {
                daemon
                    .core
                    .record_recording_only(&BoundaryEvent::StoreImage(bulk));
            } else {
                daemon.core.record(&BoundaryEvent::StoreImage(bulk));
            }
            daemon
                .core
                .apply(BoundaryEvent::StoreImage(delta), &mut |_, _, _, _| {})
                .map_err(RestoreFailure::StoreImage)?;
        }
        let report = daemon.core.restore(bytes, stream, &outcomes)?;
        summary.nodes = report.nodes;
        summary.watches = report.watches;
        for name in &report.unknown_quotas {
            tracing::info!("live update: quota {name:?} is not known here; ignored");
        }
        daemon.do_actions();
        for id in report.bad_input {
            tracing::warn!(
                "live update: connection {id}: its pending input does not decode; closed"
            );
            daemon.close(id);
        }
        let rings: Vec<ConnId> = daemon
            .conns
            .iter()
            .filter(|(_, c)| c.transport.port().is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in rings {
            daemon.journal_ring(id);
            // The guest may have written while nobody read, or wait for
            // space we made: look, and tell it.
            daemon.dirty.insert(id);
            daemon.notify(id);
        }
        let sockets: Vec<ConnId> = daemon.conns.keys().copied().collect();
        for id in sockets {
            daemon.dirty.insert(id);
            daemon.update_interest(id);
        }
        daemon.domains_changed();
        daemon.settle();
        tracing::info!(
            "live-update: restored {} nodes, {} watches, {} socket and {} ring connections ({} gone) in {} ms",
            summary.nodes,
            summary.watches,
            summary.sockets,
            summary.rings,
            summary.gone,
            t0.elapsed().as_millis()
        );
        Ok((daemon, summary, outcomes))
    }

    /// Maps a restored ring again and gets its port: the inherited handle
    /// still has it bound; else it is bound anew from the remote port.
    fn restore_ring(
        &mut self,
        r: &RingConn,
        loc: Option<RingLocation>,
    ) -> Result<ConnId, RingRestoreError> {
        let (page, port) = self.attach_ring(r, loc)?;
        Ok(self.add_ring(page, port, r.domid))
    }

    /// Maps `r`'s ring (dom0's own when it is dom0's without a location,
    /// else grant ref 1, else the mfn of `loc`) and gets its local port.
    pub(in crate::shell) fn attach_ring(
        &mut self,
        r: &RingConn,
        loc: Option<RingLocation>,
    ) -> Result<(Box<dyn gnttab::ForeignPage>, Port), RingRestoreError> {
        let domid = r.domid;
        let (page, remote_port) =
            if domid == 0 && loc.is_none() {
                let local = self
                    .platform
                    .mapper
                    .map_local_xenstore()
                    .map_err(RingRestoreError::LocalRing)?;
                (local.page, Some(local.port.get()))
            } else {
                let page =
                    match self
                        .platform
                        .mapper
                        .map_grant(domid, GNTTAB_RESERVED_XENSTORE)
                    {
                        Ok(page) => page,
                        Err(grant_err) => match loc {
                            Some(l) => self.platform.mapper.map_foreign(domid, l.mfn).map_err(
                                |foreign| RingRestoreError::Map {
                                    grant: grant_err,
                                    mfn: l.mfn,
                                    foreign,
                                },
                            )?,
                            None => return Err(RingRestoreError::NoMfn(grant_err)),
                        },
                    };
                (page, loc.map(|l| l.remote_port))
            };
        let port = if self.platform.evtchn_inherited {
            Port::new(r.evtchn)
        } else {
            let remote = remote_port.ok_or(RingRestoreError::NoRemotePort)?;
            self.platform
                .evtchn
                .bind_interdomain(domid, Port::new(remote))
                .map_err(|source| RingRestoreError::Bind { remote, source })?
        };
        Ok((page, port))
    }
}
