//! The hand-over: the daemon written out as a migration stream (the
//! state file, with the `OK` to `-s` queued last on its connection), the
//! descriptors the new binary inherits, and the exec.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use evtchn::VIRQ_DOM_EXC;
use xenring::{DomId, Header, Message, MsgType};

use super::session::Session;
use super::{new_args, STATE_FILE};
use crate::engine::ConnId;
use crate::migration::{
    ConnSpec, ConnectionData, Endian, GlobalData, Header as StreamHeader, Record, RingConn,
    RingLocation, SocketConn, Stream, Version, WriteError, DOMID_INVALID,
};
use crate::replay::format::BoundaryEvent;
use crate::shell::os::set_cloexec;
use crate::shell::transport::Endpoint;
use crate::shell::Daemon;

/// Why the state could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StateWriteError {
    /// The stream cannot carry it.
    #[error("cannot encode the state: {0}")]
    Encode(#[from] WriteError),
    /// The state file cannot be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why the hand-over did not happen (the daemon is then as it was).
#[derive(Debug, thiserror::Error)]
pub(super) enum HandOverError {
    /// The final state cannot be written.
    #[error("cannot write the state: {0}")]
    State(#[source] StateWriteError),
    /// The new program's arguments cannot be given to `execv`.
    #[error("an argument contains a NUL byte")]
    NulInArgument,
    /// A descriptor cannot be made to survive the exec.
    #[error("cannot pass descriptor {fd} down: {source}")]
    PassDown {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        source: io::Error,
    },
    /// The exec itself failed.
    #[error("Error activating new binary {}: {source}", binary.display())]
    Exec {
        /// The new binary.
        binary: PathBuf,
        /// Why.
        source: nix::Error,
    },
}

impl Daemon {
    /// The state file.
    pub(super) fn state_path(&self) -> PathBuf {
        self.rundir.join(STATE_FILE)
    }

    /// Writes the state (with `reply` queued last on its connection) to the
    /// state file; returns its size.
    pub(super) fn write_state(
        &mut self,
        version: Version,
        reply: Option<(ConnId, &Message)>,
    ) -> Result<usize, StateWriteError> {
        let stream = self.export_stream(version, reply);
        let bytes = stream.to_bytes()?;
        crate::shell::os::write_private(&self.state_path(), &bytes).map_err(|source| {
            StateWriteError::Io {
                path: self.state_path(),
                source,
            }
        })?;
        Ok(bytes.len())
    }

    /// The whole daemon as a migration stream: the descriptors to pass
    /// down, every live connection with the bytes pending on it, then the
    /// engine's records. Reads only: nothing is taken from any queue.
    pub fn export_stream(&mut self, version: Version, reply: Option<(ConnId, &Message)>) -> Stream {
        let mut records = vec![Record::Global(GlobalData {
            rw_socket_fd: self.listener.as_raw_fd(),
            evtchn_fd: self.platform.evtchn.handle_fd(),
        })];
        let unique: BTreeMap<DomId, u64> = match self.platform.dominfo_list() {
            Some(list) => list
                .into_iter()
                .filter_map(|d| d.unique_id.map(|u| (d.domid, u)))
                .collect(),
            None => BTreeMap::new(),
        };
        let mut map = BTreeMap::new();
        for (&id, c) in &self.conns {
            let extra = reply.filter(|(conn, _)| *conn == id).map(|(_, m)| m);
            let Some(pending) = self.core.pending(id, extra) else {
                continue; // cut off
            };
            let (spec, ring, unique_id) = match c.transport.describe() {
                Endpoint::Socket(socket_fd) => {
                    (ConnSpec::Socket(SocketConn { socket_fd }), None, None)
                }
                Endpoint::Ring { domid, port } => (
                    ConnSpec::Ring(RingConn {
                        domid,
                        tdomid: self
                            .core
                            .engine()
                            .domain_target(domid)
                            .unwrap_or(DOMID_INVALID),
                        evtchn: port.get(),
                    }),
                    self.core
                        .engine()
                        .domain_ring(domid)
                        .map(|(mfn, remote_port)| RingLocation { mfn, remote_port }),
                    // The domain introduced, if we know its id then.
                    self.unique_ids
                        .get(&domid)
                        .or_else(|| unique.get(&domid))
                        .copied(),
                ),
            };
            map.insert(id, id);
            records.push(Record::Connection(ConnectionData {
                conn_id: id,
                spec,
                in_data: pending.in_data,
                out_resp_len: pending.out_resp_len,
                out_data: pending.out_data,
                unique_id,
                ring,
            }));
        }
        records.extend(self.core.export_records(&map));
        Stream {
            header: StreamHeader {
                version,
                endian: if cfg!(target_endian = "big") {
                    Endian::Big
                } else {
                    Endian::Little
                },
            },
            records,
        }
    }

    /// The descriptors the new binary inherits: the listening socket, the
    /// event-channel handle and every client socket.
    pub(super) fn inherited_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd(), self.platform.evtchn.handle_fd()];
        fds.extend(
            self.conns
                .values()
                .filter_map(|c| match c.transport.describe() {
                    Endpoint::Socket(fd) => Some(fd),
                    Endpoint::Ring { .. } => None,
                }),
        );
        fds
    }

    /// Writes the final state and execs the new binary. Returns only if
    /// that failed, with why; the daemon is then as it was.
    pub(super) fn hand_over(
        &mut self,
        session: &Session,
        header: Header,
        version: Version,
    ) -> HandOverError {
        let t0 = Instant::now();
        let ok = Message {
            header: Header::new(MsgType::Control, header.req_id, header.tx_id, 3),
            payload: b"OK\0".to_vec(),
        };
        let size = match self.write_state(version, Some((session.conn, &ok))) {
            Ok(n) => n,
            Err(e) => return HandOverError::State(e),
        };
        tracing::info!(
            "live-update: wrote {size} bytes of state in {} ms; exec {}",
            t0.elapsed().as_millis(),
            session.binary.display()
        );
        let fds = self.inherited_fds();
        let args = new_args(&self.exec_args, session.cmdline.as_deref());
        let argv: Result<Vec<CString>, _> = std::iter::once(session.binary.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| CString::new(a.as_bytes()))
            .collect();
        let Ok(argv) = argv else {
            return HandOverError::NulInArgument;
        };
        // The new process binds VIRQ_DOM_EXC itself on the inherited handle
        // (and checks every domain once restored, for deaths in between).
        let virq = self.virq.take();
        if let Some(port) = virq {
            if let Err(e) = self.platform.evtchn.unbind(port) {
                tracing::warn!("live-update: unbinding VIRQ_DOM_EXC failed: {e}");
            }
        }
        self.core.record(&BoundaryEvent::HandOver);
        self.log_recording_totals();
        let passed = fds.iter().try_for_each(|&fd| {
            set_cloexec(fd, false).map_err(|source| HandOverError::PassDown { fd, source })
        });
        let why = match passed {
            Err(e) => e,
            Ok(()) => match nix::unistd::execv(&argv[0], &argv) {
                Err(source) => HandOverError::Exec {
                    binary: session.binary.clone(),
                    source,
                },
                Ok(never) => match never {},
            },
        };
        // Still here: undo.
        for &fd in &fds {
            let _ = set_cloexec(fd, true);
        }
        if virq.is_some() {
            match self.platform.evtchn.bind_virq(VIRQ_DOM_EXC) {
                Ok(port) => self.virq = Some(port),
                Err(e) => tracing::warn!("cannot bind VIRQ_DOM_EXC again ({e})"),
            }
        }
        why
    }
}
