//! The control session: XS_CONTROL `live-update` as `xenstore-control`
//! drives it (`-f BINARY`, `-c CMDLINE`, `-s [-t SECONDS] [-F] [-v
//! VERSION]`, `-a`), the dry run of the new binary that `-s` starts, and
//! its end: the hand-over, or a refusal answered to the asking client.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use xenring::{Header, XsErrno};

use super::handover::{HandOverError, StateWriteError};
use super::target::{self, Target, TargetError};
use super::{new_args, DRY_RUN_DIR};
use crate::engine::ConnId;
use crate::migration::Version;
use crate::replay::format::{Answer, BoundaryEvent};
use crate::shell::access_log::AccessLog;
use crate::shell::Daemon;

/// How long the new binary's dry run may take before the update is refused.
const DRY_RUN_LIMIT: Duration = Duration::from_secs(120);

/// A live-update session, from `-f` to the hand-over or `-a`.
#[derive(Debug)]
pub(in crate::shell) struct Session {
    pub(super) conn: ConnId,
    pub(super) binary: PathBuf,
    pub(super) cmdline: Option<String>,
    pub(super) start: Option<Start>,
    /// How long the dry run may take ([`DRY_RUN_LIMIT`]).
    pub(super) dry_run_limit: Duration,
    /// The new binary is C xenstored (of this version): no dry run; the
    /// state goes over in the form C reads (`migration::c417`).
    pub(super) c_version: Option<(u32, u32)>,
    /// `-s` taken for C: the hand-over is tried at the end of the loop
    /// turn.
    pub(super) c_start: Option<(Header, StartOptions)>,
    /// When the first `-s` for C was answered BUSY (open transactions).
    pub(super) c_wait_since: Option<Instant>,
    /// While waiting for C: new TRANSACTION_STARTs are held until then at
    /// the latest; an asker that stops polling (`-s` again) by then loses
    /// the session, so that held clients are never held for ever.
    pub(super) c_hold_until: Option<Instant>,
    /// A pre-copy under way (after the dry run).
    pub(super) precopy: Option<super::precopy::Phase>,
    /// The new binary takes a pre-copy (it said so at `-f`).
    pub(super) precopy_target: bool,
    /// `-s` received: the dry run's state is being written (by a thread,
    /// from a snapshot), and the dry run starts when it is.
    pub(super) dry_state: Option<DryState>,
}

/// The dry run's state being written.
#[derive(Debug)]
pub(super) struct DryState {
    thread: std::thread::JoinHandle<Result<usize, StateWriteError>>,
    binary: PathBuf,
    args: Vec<OsString>,
    header: Header,
    opts: StartOptions,
    since: Instant,
}

/// How long past `-t` a hand-over to C waits for the next `-s` before it
/// gives up and lets held TRANSACTION_STARTs through (xenstore-control
/// asks again every second).
pub(super) const C_HOLD_GRACE: Duration = Duration::from_secs(10);

/// `-s` received: the dry run is under way.
#[derive(Debug)]
pub(super) struct Start {
    header: Header,
    version: Version,
    child: Child,
    since: Instant,
}

/// Options of `live-update -s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StartOptions {
    pub(super) version: Version,
    /// `-F`: to C, drop open transactions (their clients get ENOENT).
    pub(super) force: bool,
    /// `-t SECONDS`: to C, how long open transactions are waited for.
    pub(super) timeout: Duration,
}

/// xenstore-control's default `-t` (and C xenstored's).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The options of `-s`, or EINVAL.
pub(super) fn parse_start(args: &[&str]) -> Result<StartOptions, XsErrno> {
    let mut version = Version::V2;
    let mut force = false;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut i = 0;
    while i < args.len() {
        match args[i] {
            // To one of ours, open transactions travel: -t and -F matter
            // only to C, which carries none.
            "-F" => force = true,
            "-t" if i + 1 < args.len() => {
                let secs = args[i + 1].parse::<u32>().map_err(|_| XsErrno::EINVAL)?;
                timeout = Duration::from_secs(u64::from(secs));
                i += 1;
            }
            "-v" if i + 1 < args.len() => {
                let n = args[i + 1].parse::<u32>().map_err(|_| XsErrno::EINVAL)?;
                version = Version::from_number(n).ok_or(XsErrno::EINVAL)?;
                i += 1;
            }
            _ => return Err(XsErrno::EINVAL),
        }
        i += 1;
    }
    Ok(StartOptions {
        version,
        force,
        timeout,
    })
}

/// Why `-s` could not start the dry run (answered as the reply's text).
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The state cannot be written for the dry run.
    #[error("live-update: cannot write the state: {0}")]
    State(#[from] StateWriteError),
    /// The dry run's empty run directory cannot be made.
    #[error("live-update: cannot create {}: {source}", path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The thread writing the state panicked.
    #[error("live-update: the thread writing the state panicked")]
    StateThread,
    /// The new binary cannot be started.
    #[error("live-update refused: cannot start {}: {source}", binary.display())]
    Spawn {
        /// The new binary.
        binary: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why a started update is refused (answered as `live-update refused:
/// ...`).
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    /// The dry run did not end within its limit.
    #[error("the new binary did not finish its dry run within {secs} s")]
    DryRunTimeout {
        /// The limit.
        secs: u64,
    },
    /// The dry run's process cannot be waited for.
    #[error("cannot wait for the dry run: {0}")]
    DryRunWait(#[source] io::Error),
    /// The dry run failed.
    #[error("the new binary failed its dry run ({status}): {last}")]
    DryRunFailed {
        /// How it ended.
        status: ExitStatus,
        /// The last line it printed on stderr.
        last: String,
    },
    /// The dry run succeeded and the hand-over failed.
    #[error(transparent)]
    HandOver(#[from] HandOverError),
    /// To C: transactions stayed open for all of `-t` (C's own answer's
    /// words, then which).
    #[error("Domains with long running transactions (waited {secs} s; -F drops them): {why}")]
    LongTransactions {
        /// The `-t` waited.
        secs: u64,
        /// The first open transaction.
        why: String,
    },
}

/// How a hand-over to C did not happen.
pub(super) enum CHandOver {
    /// Not now: open transactions or a ring reconnecting (BUSY, as C
    /// answers, until `-t` has passed).
    Busy(String),
    /// Refused.
    Refused(Refusal),
}

/// What `binary` is: `Some(version)` for C xenstored, `None` for a
/// binary that is given the dry run (ours, or one we cannot tell, which
/// the dry run then judges). C-like files we cannot hand over to are
/// refused.
/// Also whether it takes a pre-copy (ours, with the pre-copy marker).
fn target_kind(binary: &Path) -> Result<(Option<(u32, u32)>, bool), TargetError> {
    match target::identify(binary) {
        Ok(Target::XenstoredLite { precopy }) => Ok((None, precopy)),
        Ok(Target::CXenstored { version }) => Ok((Some(version), false)),
        Err(TargetError::Script { candidates, .. }) if candidates.is_empty() => Ok((None, false)),
        Err(TargetError::NotElf { .. } | TargetError::Unknown { .. }) => Ok((None, false)),
        Err(e) => Err(e),
    }
}

impl Daemon {
    /// Carries out `live-update <args>` from `conn`; answers now, or (for
    /// `-s`) when the update has happened or failed.
    pub(in crate::shell) fn live_update_request(
        &mut self,
        conn: ConnId,
        header: Header,
        args: &[String],
    ) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answer: Result<Option<String>, XsErrno> = match args.as_slice() {
            ["-f", binary] => Ok(Some(self.lu_binary(conn, Path::new(binary)))),
            ["-c", cmdline] => Ok(Some(match &mut self.live_update {
                Some(s) if s.conn == conn => {
                    s.cmdline = Some((*cmdline).to_string());
                    "OK".to_string()
                }
                _ => "Not in live-update session.".to_string(),
            })),
            ["-a"] => Ok(Some(match self.live_update.take() {
                Some(s) if matches!(s.precopy, Some(super::precopy::Phase::Serving(_))) => {
                    // The new binary runs already, under our pid.
                    self.live_update = Some(s);
                    "live-update already handing over: the new binary is loading the store."
                        .to_string()
                }
                Some(s) => {
                    tracing::info!("live-update: aborted");
                    self.end_session(s);
                    "OK".to_string()
                }
                None => "No live-update session active.".to_string(),
            })),
            ["-s", rest @ ..] => parse_start(rest).map(|opts| self.lu_start(conn, header, opts)),
            ["-b", ..] | ["-d", ..] => Ok(Some(
                "This daemon runs in dom0, not in a stub domain: name the new binary with -f PATH."
                    .to_string(),
            )),
            _ => Err(XsErrno::EINVAL),
        };
        match answer {
            Ok(Some(text)) => self.core.apply_infallible(BoundaryEvent::Answer {
                conn,
                header,
                answer: Answer::Text(text),
            }),
            Ok(None) => {}
            Err(e) => self.core.apply_infallible(BoundaryEvent::Answer {
                conn,
                header,
                answer: Answer::Error(e),
            }),
        }
    }

    fn lu_binary(&mut self, conn: ConnId, binary: &Path) -> String {
        tracing::info!("live-update: binary {}", binary.display());
        if self.live_update.is_some() {
            return "live-update session already active.".to_string();
        }
        let (c_version, precopy_target) = match std::fs::metadata(binary) {
            // C 4.17's answers word for word (xenstore-control prints
            // them); the details go to the log.
            Err(e) => {
                tracing::warn!("live-update: {}: {e}", binary.display());
                return "File not accessible.".to_string();
            }
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => {
                tracing::warn!("live-update: {} is not executable", binary.display());
                return "File not executable.".to_string();
            }
            Ok(_) => match target_kind(binary) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("live-update refused: {e}");
                    return format!("live-update refused: {e}");
                }
            },
        };
        if let Some((major, minor)) = c_version {
            tracing::info!(
                "live-update: {} is C xenstored {major}.{minor}: no dry run; the state goes \
                 over in the form it reads, checked first",
                binary.display()
            );
        }
        self.live_update = Some(Session {
            conn,
            binary: binary.to_path_buf(),
            cmdline: None,
            start: None,
            dry_run_limit: DRY_RUN_LIMIT,
            c_version,
            c_start: None,
            c_wait_since: None,
            c_hold_until: None,
            precopy: None,
            precopy_target,
            dry_state: None,
        });
        "OK".to_string()
    }

    fn lu_start(&mut self, conn: ConnId, header: Header, opts: StartOptions) -> Option<String> {
        let (binary, args) = match &mut self.live_update {
            // To C: no dry run (C cannot be dry-run: it would write its
            // pid file and take the state); tried at the end of the turn.
            Some(s) if s.conn == conn && s.c_version.is_some() => {
                if s.c_start.is_some() {
                    return Some("live-update already starting.".into());
                }
                s.c_start = Some((header, opts));
                return None;
            }
            Some(s)
                if s.conn == conn
                    && s.start.is_none()
                    && s.precopy.is_none()
                    && s.dry_state.is_none() =>
            {
                (
                    s.binary.clone(),
                    new_args(&self.exec_args, s.cmdline.as_deref()),
                )
            }
            Some(s) if s.conn == conn => return Some("live-update already starting.".into()),
            _ => return Some("Not in live-update session.".to_string()),
        };
        tracing::info!("live-update: start; dry run of {}", binary.display());
        // The state is written by a thread from a snapshot (the store is
        // persistent): the loop serves on meanwhile.
        match self.write_state_in_thread(opts.version) {
            Ok(thread) => {
                if let Some(s) = &mut self.live_update {
                    s.dry_state = Some(DryState {
                        thread,
                        binary,
                        args,
                        header,
                        opts,
                        since: Instant::now(),
                    });
                }
                None
            }
            Err(e) => {
                tracing::warn!(
                    "live-update: cannot start the state's thread ({e}); writing it now"
                );
                match self
                    .write_state(opts.version, None)
                    .map_err(StartError::from)
                    .and_then(|_| self.start_dry_run(&binary, &args, header, opts))
                {
                    Ok(()) => None,
                    Err(e) => Some(e.to_string()),
                }
            }
        }
    }

    /// The dry run's state written: the dry run starts (or the update is
    /// refused).
    fn dry_state_poll(&mut self, state: DryState) {
        let conn = self.live_update.as_ref().map_or(0, |s| s.conn);
        let written = match state.thread.join() {
            Ok(r) => r.map_err(StartError::from),
            Err(_) => Err(StartError::StateThread),
        };
        let started = written.and_then(|size| {
            tracing::info!(
                "live-update: the dry run's state: {size} bytes written in {} ms (by a thread)",
                state.since.elapsed().as_millis()
            );
            self.start_dry_run(&state.binary, &state.args, state.header, state.opts)
        });
        if let Err(e) = started {
            tracing::warn!("{e}");
            if let Some(s) = self.live_update.take() {
                self.end_session(s);
            }
            self.core.apply_infallible(BoundaryEvent::Answer {
                conn,
                header: state.header,
                answer: Answer::Text(e.to_string()),
            });
            self.settle();
        }
    }

    /// Starts the dry run of `binary` on the state written.
    fn start_dry_run(
        &mut self,
        binary: &Path,
        args: &[OsString],
        header: Header,
        opts: StartOptions,
    ) -> Result<(), StartError> {
        // The dry run gets the state's path in its argument and an empty
        // run directory: a binary that does not know --dry-run (C
        // xenstored ignores it and would go on as a second daemon, taking
        // the state file) finds no state and stops.
        let scratch = self.dry_run_dir();
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(source) = std::fs::create_dir_all(&scratch) {
            return Err(StartError::Scratch {
                path: scratch,
                source,
            });
        }
        let mut dry_run_arg = OsString::from("--dry-run=");
        dry_run_arg.push(self.state_path());
        let child = Command::new(binary)
            .args(args)
            .arg(dry_run_arg)
            .env("XENSTORED_RUNDIR", &scratch)
            .env_remove("XENSTORED_PATH")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            Ok(child) => {
                crate::shell::os::lower_process(child.id());
                if let Some(s) = &mut self.live_update {
                    s.start = Some(Start {
                        header,
                        version: opts.version,
                        child,
                        since: Instant::now(),
                    });
                }
                Ok(())
            }
            Err(source) => {
                let _ = std::fs::remove_file(self.state_path());
                self.live_update = None;
                Err(StartError::Spawn {
                    binary: binary.to_path_buf(),
                    source,
                })
            }
        }
    }

    fn dry_run_dir(&self) -> PathBuf {
        self.rundir.join(DRY_RUN_DIR)
    }

    fn end_session(&mut self, mut s: Session) {
        self.hold(false);
        if let Some(d) = s.dry_state.take() {
            // Its file is removed once written.
            let _ = d.thread.join();
            let _ = std::fs::remove_file(self.state_path());
        }
        if let Some(start) = &mut s.start {
            let _ = start.child.kill();
            let _ = start.child.wait();
            let _ = std::fs::remove_file(self.state_path());
            let _ = std::fs::remove_dir_all(self.dry_run_dir());
        }
    }

    /// Holds new TRANSACTION_STARTs (`on`) or carries out the held ones
    /// and takes requests again (`!on`): recorded, so replay does the same.
    pub(super) fn hold(&mut self, on: bool) {
        if self.core.holding() == on {
            return;
        }
        let held = self.core.held_conns();
        if on {
            tracing::info!(
                "live-update: new TRANSACTION_STARTs are held until the hand-over (they go to C \
                 as whole requests) or the refusal"
            );
        } else {
            tracing::info!(
                "live-update: TRANSACTION_STARTs no longer held; {} connection(s) with held \
                 requests carried out now",
                held.len()
            );
        }
        let last_time = self.last_time;
        let log = &mut self.access_log;
        let result = self.core.apply(
            BoundaryEvent::Hold { on },
            &mut |engine, conn, domid, msg| {
                AccessLog::request(log, last_time, engine, conn, domid, msg);
            },
        );
        debug_assert!(result.is_ok(), "a Hold failed: {result:?}");
        // Read again (rings) and listened to again (sockets) next turn.
        for conn in held {
            if self.conns.contains_key(&conn) {
                self.dirty.insert(conn);
            }
        }
    }

    /// Whether a dry run or a hand-over to C is under way (the loop then
    /// polls for its end, or for the end of holding).
    pub(in crate::shell) fn live_update_pending(&self) -> bool {
        self.live_update.as_ref().is_some_and(|s| {
            s.start.is_some()
                || s.dry_state.is_some()
                || s.c_start.is_some()
                || s.c_hold_until.is_some()
                || s.precopy.is_some()
        })
    }

    /// Moves a started update on: at the end of a loop turn, between
    /// requests. Execs the new binary when its dry run succeeded.
    pub(in crate::shell) fn live_update_poll(&mut self) {
        let Some(session) = &mut self.live_update else {
            return;
        };
        if session.precopy.is_some() {
            if let Some(s) = self.live_update.take() {
                self.precopy_poll(s);
            }
            return;
        }
        let conn = session.conn;
        if !self.conns.contains_key(&conn) {
            tracing::warn!("live-update: the connection that asked for it is gone; aborted");
            if let Some(s) = self.live_update.take() {
                self.end_session(s);
            }
            return;
        }
        if let Some((header, opts)) = session.c_start.take() {
            return self.c_poll(header, opts);
        }
        if session
            .dry_state
            .as_ref()
            .is_some_and(|d| d.thread.is_finished())
        {
            if let Some(d) = session.dry_state.take() {
                self.dry_state_poll(d);
            }
            return;
        }
        if session.c_hold_until.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(
                "live-update: no -s again within {} s of -t's end; the update to C is \
                 abandoned and held TRANSACTION_STARTs go through",
                C_HOLD_GRACE.as_secs()
            );
            if let Some(s) = self.live_update.take() {
                self.end_session(s);
            }
            return;
        }
        let limit = session.dry_run_limit;
        let Some(start) = &mut session.start else {
            return;
        };
        let status = match start.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) if start.since.elapsed() < limit => return,
            Ok(None) => {
                let header = start.header;
                return self.refuse(
                    conn,
                    header,
                    &Refusal::DryRunTimeout {
                        secs: limit.as_secs(),
                    },
                );
            }
            Err(e) => {
                let header = start.header;
                return self.refuse(conn, header, &Refusal::DryRunWait(e));
            }
        };
        let header = start.header;
        let version = start.version;
        let _ = std::fs::remove_dir_all(self.rundir.join(DRY_RUN_DIR));
        if !status.success() {
            let mut err = String::new();
            if let Some(mut pipe) = start.child.stderr.take() {
                let _ = pipe.read_to_string(&mut err);
            }
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(it printed nothing)")
                .trim()
                .to_string();
            return self.refuse(conn, header, &Refusal::DryRunFailed { status, last });
        }
        let Some(mut session) = self.live_update.take() else {
            return;
        };
        match super::precopy::blocker(session.precopy_target) {
            None => {
                session.start = None;
                self.precopy_begin(&mut session, header, version);
                if session.precopy.is_some() {
                    self.live_update = Some(session);
                    return;
                }
            }
            Some(why) => tracing::info!("live-update: no pre-copy ({why}): a classic hand-over"),
        }
        let why = self.hand_over(&session, header, version);
        // Only reached when the exec did not happen.
        self.live_update = Some(session);
        self.refuse(conn, header, &why.into());
    }

    /// The end of a turn after `-s` to C: the hand-over, BUSY while open
    /// transactions are waited for, or a refusal.
    fn c_poll(&mut self, header: Header, opts: StartOptions) {
        let Some(session) = self.live_update.take() else {
            return;
        };
        let conn = session.conn;
        match self.hand_over_c(&session, header, opts) {
            CHandOver::Busy(why) => {
                let mut session = session;
                let since = *session.c_wait_since.get_or_insert_with(Instant::now);
                if since.elapsed() < opts.timeout {
                    tracing::info!("live-update: BUSY: {why}");
                    session.c_hold_until = Some(since + opts.timeout + C_HOLD_GRACE);
                    self.live_update = Some(session);
                    self.hold(true);
                    self.core.apply_infallible(BoundaryEvent::Answer {
                        conn,
                        header,
                        answer: Answer::Text("BUSY".to_string()),
                    });
                    self.settle();
                    return;
                }
                self.live_update = Some(session);
                let why = Refusal::LongTransactions {
                    secs: opts.timeout.as_secs(),
                    why,
                };
                self.refuse(conn, header, &why);
            }
            CHandOver::Refused(why) => {
                self.live_update = Some(session);
                self.refuse(conn, header, &why);
            }
        }
    }

    pub(super) fn refuse(&mut self, conn: ConnId, header: Header, why: &Refusal) {
        tracing::warn!("live-update refused: {why}");
        // Ends the dry run and removes the state file and its scratch
        // directory (a refused update always had started).
        if let Some(s) = self.live_update.take() {
            self.end_session(s);
        }
        self.core.apply_infallible(BoundaryEvent::Answer {
            conn,
            header,
            answer: Answer::Text(format!("live-update refused: {why}")),
        });
        self.settle();
    }
}
