//! The hand-over: the daemon written out as a migration stream (the
//! state file, with the `OK` to `-s` queued last on its connection), the
//! descriptors the new binary inherits, and the exec.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use evtchn::VIRQ_DOM_EXC;
use nix::sys::wait::{waitpid, WaitStatus};
use xenring::{DomId, Header, Message, MsgType};

use super::session::{CHandOver, Session, StartOptions};
use super::target::{c_command_line, CArgsError, CQuotas};
use super::{guardian, new_args, STATE_FILE};
use crate::engine::ConnId;
use crate::migration::c417::{self, C417Options, C417Refusal};
use crate::migration::{
    ConnSpec, ConnectionData, Endian, GlobalData, Header as StreamHeader, Record, RingConn,
    RingLocation, SocketConn, Stream, Version, WriteError, DOMID_INVALID,
};
use crate::replay::format::BoundaryEvent;
use crate::shell::os::{self, set_cloexec};
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
    /// The state is one C xenstored 4.17 would not take as it is (checked
    /// on the bytes about to be handed over; nothing was taken).
    #[error("C xenstored 4.17 cannot take this state: {0}")]
    NotForC(#[from] C417Refusal),
    /// The command line given for C would fail it after the exec.
    #[error("C xenstored's command line: {0}")]
    CArgs(#[from] CArgsError),
    /// A pre-copy's split or exec failed (nothing was handed over).
    #[error("Error activating new binary {}: {source}", binary.display())]
    Split {
        /// The new binary.
        binary: PathBuf,
        /// Why.
        source: crate::shell::split::SplitError,
    },
    /// A pre-copy's new process did not take over; this process serves on.
    #[error("pre-copy: {0}")]
    Precopy(#[from] super::precopy::PrecopyError),
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

    /// [`Daemon::write_state`] by a thread: the connections and the
    /// engine's records but the nodes are taken now (cheap), the nodes
    /// from a snapshot of the store (O(1) to take) by the thread, which
    /// encodes and writes the file and returns its size.
    pub(super) fn write_state_in_thread(
        &mut self,
        version: Version,
    ) -> io::Result<std::thread::JoinHandle<Result<usize, StateWriteError>>> {
        let (mut records, map) = self.export_connections(None);
        let rest = self.core.engine().export_records_with(&map, false);
        let store = self.core.engine().store().clone();
        let path = self.state_path();
        std::thread::Builder::new()
            .name("lu-state".into())
            .spawn(move || {
                crate::shell::os::lower_this_thread();
                records.extend(crate::engine::Engine::node_records(&store));
                records.extend(rest);
                let bytes = stream_of(version, records).to_bytes()?;
                crate::shell::os::write_private(&path, &bytes).map_err(|source| {
                    StateWriteError::Io {
                        path: path.clone(),
                        source,
                    }
                })?;
                Ok(bytes.len())
            })
    }

    /// The whole daemon as a migration stream: the descriptors to pass
    /// down, every live connection with the bytes pending on it, then the
    /// engine's records. Reads only: nothing is taken from any queue.
    pub fn export_stream(&mut self, version: Version, reply: Option<(ConnId, &Message)>) -> Stream {
        let (mut records, map) = self.export_connections(reply);
        records.extend(self.core.export_records(&map));
        stream_of(version, records)
    }

    /// The part of [`Daemon::export_stream`] that is the shell's: the
    /// descriptors and every live connection with its pending bytes; and
    /// the connections' numbers in the stream, for the engine's records.
    pub(in crate::shell) fn export_connections(
        &mut self,
        reply: Option<(ConnId, &Message)>,
    ) -> (Vec<Record>, BTreeMap<ConnId, u32>) {
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
        (records, map)
    }

    /// The hand-over to C xenstored 4.17 (`session.c_version`): the state
    /// in the form C reads (`migration::c417`), checked on its very bytes
    /// by the model of what C accepts, our quotas on C's command line,
    /// the rings' feature bits cleared (C implements none), then the exec
    /// with `XENSTORED_RUNDIR` naming our run directory. Returns only if
    /// the exec did not happen, with why (the daemon is then as it was),
    /// or BUSY while transactions are open (C carries none) or a ring is
    /// reconnecting (finished by the next turn).
    pub(super) fn hand_over_c(
        &mut self,
        session: &Session,
        header: Header,
        opts: StartOptions,
    ) -> CHandOver {
        let t0 = Instant::now();
        if let Some(conn) = self
            .conns
            .iter()
            .find(|(_, c)| c.transport.reconnect_requested())
            .map(|(&id, _)| id)
        {
            return CHandOver::Busy(format!("connection {conn} is reconnecting its ring"));
        }
        let ok = ok_reply(header);
        let stream = self.export_stream(Version::V2, Some((session.conn, &ok)));
        let strict = C417Options::default();
        let converted = match c417::to_c417(&stream, &strict) {
            Ok(c) => Ok(c),
            Err(e @ C417Refusal::OpenTransaction { .. }) if !opts.force => {
                return CHandOver::Busy(e.to_string())
            }
            Err(C417Refusal::OpenTransaction { .. }) => c417::to_c417(
                &stream,
                &C417Options {
                    drop_transactions: true,
                    ..strict
                },
            ),
            Err(e) => Err(e),
        };
        let converted = match converted {
            Ok(c) => c,
            Err(e) => return CHandOver::Refused(HandOverError::from(e).into()),
        };
        for t in &converted.dropped_transactions {
            tracing::warn!(
                "live-update: -F: transaction {} of connection {} dropped (C xenstored answers \
                 its client ENOENT)",
                t.tx_id,
                t.conn_id
            );
        }
        // The exact bytes handed over must pass the model of C's rules.
        let (bytes, summary) = match converted.to_checked_bytes() {
            Ok(c) => c,
            Err(e) => return CHandOver::Refused(HandOverError::from(e).into()),
        };
        if let Some(note) = summary.dropped_perms_note() {
            tracing::warn!("live-update: {note}");
        }
        let quotas = CQuotas::from_config(self.core.engine().config(), true);
        let cmdline = match c_command_line(&quotas, session.cmdline.as_deref()) {
            Ok(c) => c,
            Err(e) => return CHandOver::Refused(HandOverError::from(e).into()),
        };
        for note in &cmdline.notes {
            tracing::warn!("live-update: {note}");
        }
        if let Err(source) = crate::shell::os::write_private(&self.state_path(), &bytes) {
            let e = StateWriteError::Io {
                path: self.state_path(),
                source,
            };
            return CHandOver::Refused(HandOverError::State(e).into());
        }
        tracing::info!(
            "live-update: wrote {} bytes of state for C xenstored in {} ms ({} rings, {} \
             sockets, {} nodes, {} watches); exec {} {}",
            bytes.len(),
            t0.elapsed().as_millis(),
            summary.rings,
            summary.sockets,
            summary.nodes,
            summary.watches,
            session.binary.display(),
            cmdline
                .args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let argv = exec_argv(&session.binary, &cmdline.args);
        let (Some(argv), Some(env)) = (argv, c_environment(std::env::vars_os(), &self.rundir))
        else {
            let _ = std::fs::remove_file(self.state_path());
            return CHandOver::Refused(HandOverError::NulInArgument.into());
        };
        let guardian = match self.prepare_guardian() {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(
                    "live-update: no guardian ({e}): if C xenstored fails before it reads the \
                     state, nothing brings xenstored-lite back"
                );
                None
            }
        };
        let features: Vec<_> = self
            .conns
            .values()
            .map(|c| c.transport.withdraw_features())
            .collect();
        // C keeps no journal: a later start of ours must not carry on from
        // this one (the guardian's rollback restores from the state file).
        let journal = self.core.journal().map(|j| j.path().to_path_buf());
        let aside = journal
            .as_ref()
            .map(|p| p.with_extension("rec.handed-to-c"));
        if let (Some(from), Some(to)) = (&journal, &aside) {
            if let Err(e) = std::fs::rename(from, to) {
                tracing::warn!("live-update: cannot move the crash journal aside: {e}");
            }
        }
        let why = self.exec_passing_fds(&session.binary, || {
            if let Some(g) = &guardian {
                if let Err(e) = g.start() {
                    tracing::warn!(
                        "live-update: the guardian did not start ({e}): if C xenstored fails \
                         before it reads the state, nothing brings xenstored-lite back"
                    );
                }
            }
            nix::unistd::execve(&argv[0], &argv, &env)
        });
        // Still here: undo.
        if let (Some(from), Some(to)) = (&aside, &journal) {
            let _ = std::fs::rename(from, to);
        }
        for (c, had) in self.conns.values().zip(features) {
            if let Some(had) = had {
                c.transport.restore_features(had);
            }
        }
        let _ = std::fs::remove_file(self.state_path());
        CHandOver::Refused(why.into())
    }

    /// The guardian of the hand-over to C ([`guardian`]), made ready to
    /// start: this binary again, on the same state file, with the pidfd of
    /// this process and our own command line (with `-U`) and environment
    /// to come back with.
    fn prepare_guardian(&self) -> Result<GuardianStart, GuardianSetupError> {
        let pidfd = os::pidfd_of(std::process::id()).map_err(GuardianSetupError::Pidfd)?;
        let argv0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| OsString::from("xenstored-lite"));
        let mut restore = vec![argv0.clone()];
        restore.extend(new_args(&self.exec_args, None));
        let watch = guardian::Watch {
            pidfd: pidfd.as_raw_fd(),
            c_pid: std::process::id().try_into().unwrap_or(i32::MAX),
            state: self.state_path(),
            limit: guardian::LIMIT,
            restore,
        };
        let mut args = vec![argv0];
        args.extend(watch.to_args());
        let argv = exec_argv_all(&args).ok_or(GuardianSetupError::Nul)?;
        let env = std::env::vars_os()
            .map(|(k, v)| env_entry(&k, &v).ok_or(GuardianSetupError::Nul))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GuardianStart {
            prog: os::PreparedExec::new(c"/proc/self/exe".to_owned(), argv, env),
            pidfd,
        })
    }

    /// Unbinds VIRQ_DOM_EXC (the new process binds it itself on the
    /// inherited handle), clears close-on-exec on the inherited
    /// descriptors and runs `exec`; returns only if that failed, with
    /// everything as it was.
    fn exec_passing_fds(
        &mut self,
        binary: &std::path::Path,
        exec: impl FnOnce() -> nix::Result<std::convert::Infallible>,
    ) -> HandOverError {
        let fds = self.inherited_fds();
        let virq = self.virq.take();
        if let Some(port) = virq {
            if let Err(e) = self.platform.evtchn.unbind(port) {
                tracing::warn!("live-update: unbinding VIRQ_DOM_EXC failed: {e}");
            }
        }
        self.core.record(&BoundaryEvent::HandOver);
        if let Some(j) = self.core.journal() {
            j.sync();
        }
        self.log_recording_totals();
        let passed = fds.iter().try_for_each(|&fd| {
            set_cloexec(fd, false).map_err(|source| HandOverError::PassDown { fd, source })
        });
        let why = match passed {
            Err(e) => e,
            Ok(()) => match exec() {
                Err(source) => HandOverError::Exec {
                    binary: binary.to_path_buf(),
                    source,
                },
                Ok(never) => match never {},
            },
        };
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
        let ok = ok_reply(header);
        let size = match self.write_state(version, Some((session.conn, &ok))) {
            Ok(n) => n,
            Err(e) => return HandOverError::State(e),
        };
        tracing::info!(
            "live-update: wrote {size} bytes of state in {} ms; exec {}",
            t0.elapsed().as_millis(),
            session.binary.display()
        );
        let args = new_args(&self.exec_args, session.cmdline.as_deref());
        let Some(argv) = exec_argv(&session.binary, &args) else {
            return HandOverError::NulInArgument;
        };
        self.exec_passing_fds(&session.binary, || nix::unistd::execv(&argv[0], &argv))
    }
}

/// A stream of this build's endianness.
pub(in crate::shell) fn stream_of(version: Version, records: Vec<Record>) -> Stream {
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

/// C's environment: ours, with `XENSTORED_RUNDIR` naming our run directory
/// (where the state file is) in place of any value it had; `None` if the
/// run directory's path holds a NUL.
pub(super) fn c_environment(
    vars: impl Iterator<Item = (OsString, OsString)>,
    rundir: &std::path::Path,
) -> Option<Vec<CString>> {
    let mut env: Vec<CString> = vars
        .filter(|(k, _)| k != "XENSTORED_RUNDIR")
        .filter_map(|(k, v)| env_entry(&k, &v))
        .collect();
    let mut dir = b"XENSTORED_RUNDIR=".to_vec();
    dir.extend_from_slice(rundir.as_os_str().as_bytes());
    env.push(CString::new(dir).ok()?);
    Some(env)
}

/// `KEY=VALUE` for `execve`'s environment; `None` if either holds a NUL.
fn env_entry(key: &std::ffi::OsStr, value: &std::ffi::OsStr) -> Option<CString> {
    let mut kv = key.as_bytes().to_vec();
    kv.push(b'=');
    kv.extend_from_slice(value.as_bytes());
    CString::new(kv).ok()
}

/// The `OK` to `live-update -s` (`header`'s), queued last on the asking
/// connection for the new process to deliver.
pub(super) fn ok_reply(header: Header) -> Message {
    Message {
        header: Header::new(MsgType::Control, header.req_id, header.tx_id, 3),
        payload: b"OK\0".to_vec(),
    }
}

/// Why the guardian of a hand-over to C cannot be made ready.
#[derive(Debug, thiserror::Error)]
pub(super) enum GuardianSetupError {
    /// No pidfd of this process (a kernel before 5.3?).
    #[error("pidfd_open: {0}")]
    Pidfd(#[source] io::Error),
    /// Our command line or environment holds a NUL byte.
    #[error("an argument or variable contains a NUL byte")]
    Nul,
}

/// Why the guardian did not start.
#[derive(Debug, thiserror::Error)]
pub(super) enum GuardianStartError {
    /// Its pidfd cannot be passed down.
    #[error("cannot pass its pidfd down: {0}")]
    PassDown(#[source] io::Error),
    /// fork(2) failed.
    #[error("fork: {0}")]
    Fork(#[source] nix::Error),
    /// Its starter cannot be waited for.
    #[error("waitpid: {0}")]
    Wait(#[source] nix::Error),
    /// Its starter did not end well (127: the exec failed).
    #[error("it ended with {0:?}")]
    Ended(WaitStatus),
}

/// The guardian, ready to start: nothing is allocated between the fork
/// and the exec.
pub(super) struct GuardianStart {
    prog: os::PreparedExec,
    pidfd: OwnedFd,
}

impl GuardianStart {
    /// Starts it with every descriptor of ours that has close-on-exec
    /// cleared (the handed-over ones, by then) and the pidfd, and waits
    /// until its starter has put it in the background.
    fn start(&self) -> Result<(), GuardianStartError> {
        let fd = self.pidfd.as_raw_fd();
        set_cloexec(fd, false).map_err(GuardianStartError::PassDown)?;
        let child = os::spawn_prepared(&self.prog);
        // C must not inherit it.
        let _ = set_cloexec(fd, true);
        let child = child.map_err(GuardianStartError::Fork)?;
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(other) => Err(GuardianStartError::Ended(other)),
            Err(e) => Err(GuardianStartError::Wait(e)),
        }
    }
}

/// `args` (`argv[0]` first) for `execve`; `None` if one holds a NUL.
fn exec_argv_all(args: &[OsString]) -> Option<Vec<CString>> {
    args.iter()
        .map(|a| CString::new(a.as_bytes()).ok())
        .collect()
}

/// `binary` and its arguments for `execv`; `None` if one holds a NUL.
pub(super) fn exec_argv(binary: &std::path::Path, args: &[OsString]) -> Option<Vec<CString>> {
    let mut all = vec![binary.as_os_str().to_os_string()];
    all.extend_from_slice(args);
    exec_argv_all(&all)
}

#[cfg(test)]
mod guardian_start_tests {
    use super::*;

    fn start_of(script: &str) -> GuardianStart {
        let c = |s: &str| CString::new(s).unwrap();
        GuardianStart {
            prog: os::PreparedExec::new(
                c("/bin/sh"),
                vec![c("sh"), c("-c"), c(script)],
                Vec::new(),
            ),
            pidfd: os::pidfd_of(std::process::id()).unwrap(),
        }
    }

    #[test]
    fn test_the_guardian_starts_when_its_starter_exits_0() {
        assert!(start_of("exit 0").start().is_ok());
        assert!(matches!(
            start_of("exit 3").start(),
            Err(GuardianStartError::Ended(WaitStatus::Exited(_, 3)))
        ));
    }

    #[test]
    fn test_the_guardian_gets_the_pidfd_and_c_does_not() {
        let g = start_of("");
        let fd = g.pidfd.as_raw_fd();
        // The starter sees the pidfd open at its number (fd 3+ in sh).
        let check = start_of(&format!("test -e /proc/self/fd/{fd}"));
        let check = GuardianStart {
            prog: check.prog,
            pidfd: g.pidfd,
        };
        assert!(check.start().is_ok());
        // Afterwards it is close-on-exec again: C does not inherit it.
        assert!(evtchn::fd::is_cloexec(std::os::fd::AsFd::as_fd(&check.pidfd)).unwrap());
    }

    #[test]
    fn test_exec_argv_all_keeps_argv0_and_refuses_a_nul() {
        let args = [OsString::from("a"), OsString::from("b c")];
        assert_eq!(
            exec_argv_all(&args).unwrap(),
            [CString::new("a").unwrap(), CString::new("b c").unwrap()]
        );
        assert!(exec_argv_all(&[OsString::from("a\0b")]).is_none());
        assert_eq!(exec_argv_all(&[]).unwrap(), Vec::<CString>::new());
    }
}
