//! `xenstored-lite`: the daemon.
//!
//! No `unsafe` here: signals and `fork` go through `shell::os`.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use nix::sys::signal::Signal;
use xenstored_lite::cli::Cli;
use xenstored_lite::engine::Config;
use xenstored_lite::engine::Engine;
use xenstored_lite::migration::{MigrationError, Stream};
use xenstored_lite::replay::player::{self, Options};
use xenstored_lite::shell::journal;
use xenstored_lite::shell::live_update_guardian as guardian;
use xenstored_lite::shell::os::{self, ForkError};
use xenstored_lite::shell::platform::{Platform, PlatformError};
use xenstored_lite::shell::state::TakeOverError;
use xenstored_lite::shell::{
    check_stream, notify_systemd_ready, Daemon, RecoveryError, Replayed, RestoreFailure,
    SetupError, ShellConfig, STATE_FILE,
};
use xenstored_lite::shell::{
    prewrite_journal, PrecopyError, PrecopyFrozen, PrecopyIncoming, PrewrittenJournal, PRECOPY_ARG,
};

/// mimalloc rather than glibc's malloc: fewer instructions per
/// allocation, and a request makes a few (Cargo.toml says why).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// It could not go into the background.
    #[error(transparent)]
    Detach(#[from] DetachError),
    /// The run directory cannot be made.
    #[error("cannot create the run directory {}: {source}", path.display())]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A live update's state file cannot be read.
    #[error("live update: cannot read the state {}: {source}", path.display())]
    ReadState {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A live update's state file does not parse.
    #[error("live update: the state in {} is not usable: {source}", path.display())]
    ParseState {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: MigrationError,
    },
    /// The dry run's state does not restore.
    #[error("live update: the state cannot be restored: {0}")]
    DryRun(#[source] TakeOverError),
    /// The platform cannot be set up (its causes follow, `: `-separated).
    #[error("{}", chain(.0))]
    Platform(#[source] PlatformError),
    /// A live update's state cannot be taken over.
    #[error("live update: cannot restore the state: {0}")]
    Restore(#[source] RestoreFailure),
    /// A pre-copy live update's hand-over failed (the old daemon serves on).
    #[error("live update (pre-copy): {0}")]
    Precopy(#[source] PrecopyError),
    /// A crash journal cannot be served.
    #[error("crash recovery: {0}")]
    Recover(#[source] RecoveryError),
    /// The daemon cannot be set up.
    #[error("cannot serve {}: {source}", socket.display())]
    Serve {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: SetupError,
    },
    /// The pid file cannot be written.
    #[error("cannot write pid file {}: {source}", path.display())]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why `detach` failed.
#[derive(Debug, thiserror::Error)]
enum DetachError {
    /// pipe(2) failed.
    #[error("cannot detach: pipe: {0}")]
    Pipe(#[source] nix::Error),
    /// setsid(2) failed in the child.
    #[error("cannot detach: setsid: {0}")]
    Setsid(#[source] nix::Error),
    /// The fork was refused or failed.
    #[error("cannot detach (use -N to stay in the foreground): {0}")]
    Fork(#[source] ForkError),
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// One descriptor per client socket: allow as many as the hard limit does.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        _ => {}
    }
}

/// Forks into the background the way init scripts expect (Debian's
/// `/etc/init.d/xen` runs us through `start-stop-daemon --start` and then
/// waits for the socket): the parent waits until the detached child serves
/// and exits 0, or exits 1 when the child fails first (its error is on
/// stderr then). Returns, in the child, the pipe that `finish_detach` uses
/// to release the parent. Must run before any thread exists (the embedded
/// mock-xen has one).
fn detach() -> Result<std::fs::File, DetachError> {
    use nix::unistd::{pipe, setsid, ForkResult};
    let (read, write) = pipe().map_err(DetachError::Pipe)?;
    // No other thread exists yet (checked), so the child's copy of this one
    // is the whole process.
    match os::fork_single_threaded() {
        Ok(ForkResult::Parent { .. }) => {
            drop(write);
            let mut byte = [0u8; 1];
            let ready = std::fs::File::from(read)
                .read(&mut byte)
                .is_ok_and(|n| n == 1);
            std::process::exit(if ready { 0 } else { 1 });
        }
        Ok(ForkResult::Child) => {
            drop(read);
            setsid().map_err(DetachError::Setsid)?;
            Ok(std::fs::File::from(write))
        }
        Err(e) => Err(DetachError::Fork(e)),
    }
}

/// The detached daemon serves: lets the parent exit 0 and lets go of the
/// caller's terminal and pipes. stdin and stdout become /dev/null; stderr
/// stays only if it is a file or a socket (`2>>LOG`, systemd's journal),
/// since a terminal goes away and a pipe would keep `$(...)` waiting.
fn finish_detach(ready: std::fs::File) {
    use nix::sys::stat::{fstat, SFlag};
    use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};
    if let Err(e) = (&ready).write_all(b"R") {
        tracing::warn!("cannot tell the starting process that we serve: {e}");
    }
    drop(ready);
    let devnull = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("cannot open /dev/null: {e}");
            return;
        }
    };
    let keep_stderr = fstat(std::io::stderr()).is_ok_and(|st| {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        kind == SFlag::S_IFREG || kind == SFlag::S_IFSOCK
    });
    let _ = dup2_stdin(&devnull);
    let _ = dup2_stdout(&devnull);
    if !keep_stderr {
        let _ = dup2_stderr(&devnull);
    }
}

/// Logs to stderr at `verbose`'s level (or `RUST_LOG`'s).
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == guardian::FLAG) {
        // The guardian of a live update to C xenstored (started by the
        // daemon itself, with a command line of its own).
        init_logging(0);
        return match guardian::main(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xenstored-lite: live-update guardian: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenstored-lite: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and parses the state a live update left in the run directory.
/// A pre-copy's take-over, up to the state: the store image loaded into an
/// engine (or, if it cannot be, an empty engine and the whole state asked
/// for), then the old daemon's freeze.
fn precopy_take(
    incoming: &mut PrecopyIncoming,
    config: &Config,
    shell: &ShellConfig,
) -> Result<PrecopyTaken, StartError> {
    let t0 = std::time::Instant::now();
    let bulk = incoming.bulk();
    // Loaded by a thread of lower priority: the old daemon serves on the
    // same CPUs meanwhile.
    let thread_config = config.clone();
    let thread_shell = shell.clone();
    let loading = std::thread::Builder::new()
        .name("lu-load".into())
        .spawn(move || {
            xenstored_lite::shell::os::lower_this_thread();
            let mut engine = Engine::new(thread_config);
            let loaded = match &bulk {
                Ok(image) => engine.apply_store_image(image).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let bulk = bulk.unwrap_or_default();
            // The crash journal's beginning too, while the old daemon serves.
            let ahead = loaded
                .is_ok()
                .then(|| prewrite_journal(&thread_shell, &bulk))
                .flatten();
            (engine, bulk, loaded, ahead)
        });
    let (mut engine, bulk, loaded, ahead) = match loading.map(std::thread::JoinHandle::join) {
        Ok(Ok(done)) => done,
        Ok(Err(_)) => (
            Engine::new(config.clone()),
            Vec::new(),
            Err("the loading thread panicked".to_string()),
            None,
        ),
        Err(e) => (
            Engine::new(config.clone()),
            Vec::new(),
            Err(format!("cannot start a thread: {e}")),
            None,
        ),
    };
    match &loaded {
        Ok(()) => tracing::info!(
            "live-update: pre-copy: loaded the store image ({} octets) in {} ms",
            bulk.len(),
            t0.elapsed().as_millis()
        ),
        Err(e) => tracing::warn!("live-update: pre-copy: the store image: {e}; asking for it all"),
    }
    let frozen = incoming.take(loaded.is_ok()).map_err(StartError::Precopy)?;
    if !frozen.precopied {
        engine = Engine::new(config.clone());
    }
    Ok((engine, bulk, frozen, ahead))
}

/// What a pre-copy's take-over brought: the engine with the store, the
/// store image, the freeze, the journal written ahead.
type PrecopyTaken = (Engine, Vec<u8>, PrecopyFrozen, Option<PrewrittenJournal>);

fn read_state(path: &Path) -> Result<(Vec<u8>, Stream), StartError> {
    let bytes = std::fs::read(path).map_err(|source| StartError::ReadState {
        path: path.to_path_buf(),
        source,
    })?;
    let stream = Stream::parse(&bytes).map_err(|source| StartError::ParseState {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((bytes, stream))
}

/// `--replay=DIR`: replays a recording and prints what it did.
fn replay(cli: &Cli, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let opts = Options {
        verify: !cli.no_verify,
        progress: true,
        alter_reply: cli.test_alter_reply,
    };
    let summary = player::replay(dir, &opts)?;
    if let Some(offset) = summary.truncated_at {
        println!(
            "the recording stops inside an event at offset {offset} (the daemon was killed?): replayed up to the last complete event"
        );
    }
    println!(
        "replayed {} events, {} requests, {} outputs ({} octets{}) from {} daemon process(es) in {:.3} s: {:.0} requests/s; recorded span {:.3} s",
        summary.events,
        summary.requests,
        summary.outputs,
        summary.output_bytes,
        if opts.verify { ", all identical" } else { ", not compared" },
        summary.processes,
        summary.wall.as_secs_f64(),
        summary.requests_per_sec(),
        summary.recorded_ms as f64 / 1000.0
    );
    Ok(())
}

/// `-U --dry-run[=STATE]`: proves this binary can take over the state,
/// touching nothing else.
fn dry_run(
    cli: &Cli,
    state: Option<&Path>,
    config: Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = state.map_or_else(|| cli.rundir().join(STATE_FILE), Path::to_path_buf);
    let (bytes, stream) = read_state(&path)?;
    let summary = check_stream(config, &bytes, &stream).map_err(StartError::DryRun)?;
    eprintln!(
        "xenstored-lite: dry run: the state restores ({} nodes, {} watches, {} socket and {} ring connections)",
        summary.nodes, summary.watches, summary.sockets, summary.rings
    );
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.engine_config()?;
    let choice = cli.platform_choice()?;
    let journal = cli.journal()?;
    let socket = cli.socket_path();
    if let Some(state) = &cli.dry_run {
        return dry_run(cli, state.as_deref(), config);
    }
    if let Some(dir) = &cli.replay {
        return replay(cli, dir);
    }
    if !cli.live_update && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        // A second start (an init script run twice) must not take the
        // socket and the Xen devices from the daemon that serves them.
        eprintln!(
            "xenstored-lite: a xenstore daemon already serves {}: leaving it alone",
            socket.display()
        );
        return Ok(());
    }
    // Detach first: the embedded mock-xen, forked later, must be the
    // detached daemon's child (it ends when its parent does), and neither
    // fork may happen once a thread exists.
    let detached = if !cli.no_fork && !cli.live_update {
        Some(detach()?)
    } else {
        None
    };
    let rundir = cli.rundir();
    xenstored_lite::shell::os::create_dirs(&rundir, xenstored_lite::shell::os::RUNDIR_MODE)
        .map_err(|source| StartError::RunDir {
            path: rundir.clone(),
            source,
        })?;
    let shell = ShellConfig {
        socket: socket.clone(),
        access_log: cli.trace_file.clone(),
        rundir: rundir.clone(),
        // What a live update runs the next binary with: ours, but for the
        // pre-copy descriptors of this start.
        exec_args: std::env::args_os()
            .skip(1)
            .filter(|a| !a.to_string_lossy().starts_with(PRECOPY_ARG))
            .collect(),
        record_dir: cli.replay_record.clone(),
        journal,
    };
    // A pre-copy: the store first (the old daemon serves meanwhile), then
    // the rest of the state at its freeze.
    let mut precopy = match &cli.precopy {
        Some(arg) => Some(PrecopyIncoming::adopt(arg).map_err(StartError::Precopy)?),
        None => None,
    };
    let mut precopied = None;
    let state = match &mut precopy {
        Some(incoming) => {
            let (engine, bulk, frozen, ahead) = precopy_take(incoming, &config, &shell)?;
            let taken = Some((frozen.bytes.clone(), frozen.stream.clone()));
            precopied = Some((engine, bulk, frozen, ahead));
            taken
        }
        None if cli.live_update => Some(read_state(&rundir.join(STATE_FILE))?),
        None => None,
    };
    let mut platform = match &state {
        Some((_, stream)) => {
            let evtchn_fd = stream.global().map_or(-1, |g| g.evtchn_fd);
            Platform::adopt(&choice, &rundir, evtchn_fd)
        }
        None => Platform::open(&choice, &rundir),
    }
    .map_err(StartError::Platform)?;
    if cli.no_domain_init {
        platform.serve_local_ring = false;
    }
    tracing::info!("xenstored-lite starting on {}", platform.description);
    if shell.journal.is_some() {
        journal::install_panic_hook();
    }
    // A crash journal left by a daemon that did not stop cleanly: what to
    // carry on from (read before anything else is set up).
    let replayed = match &state {
        None => recoverable(&shell, &config),
        Some(_) => None,
    };
    let mut daemon = match &state {
        Some(_) if precopied.is_some() => {
            let (engine, bulk, frozen, ahead) = precopied
                .take()
                .ok_or(StartError::Precopy(PrecopyError::Protocol("no state")))?;
            let restored =
                Daemon::restore_precopied(engine, platform, &shell, &frozen, &bulk, ahead);
            if let Some(incoming) = &precopy {
                incoming.finish(restored.is_ok());
            }
            restored.map_err(StartError::Restore)?.0
        }
        Some((bytes, stream)) => {
            let (daemon, _) = Daemon::restore(Engine::new(config), platform, &shell, bytes, stream)
                .map_err(StartError::Restore)?;
            let path = rundir.join(STATE_FILE);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove {}: {e}", path.display());
            }
            daemon
        }
        None => match replayed {
            Some(replayed) => {
                Daemon::recover(replayed, platform, &shell)
                    .map_err(StartError::Recover)?
                    .0
            }
            None => Daemon::new(Engine::new(config), platform, &shell).map_err(|source| {
                StartError::Serve {
                    socket: socket.clone(),
                    source,
                }
            })?,
        },
    };
    if let Some(pid_file) = &cli.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id())).map_err(|source| {
            StartError::PidFile {
                path: pid_file.clone(),
                source,
            }
        })?;
    }
    os::flag_signals(&[Signal::SIGTERM, Signal::SIGINT])?;
    raise_fd_limit();
    tracing::info!("serving {}", socket.display());
    notify_systemd_ready();
    if let Some(ready) = detached {
        finish_detach(ready);
    }
    let stop = daemon.stop_flag();
    while !os::signalled() && !stop.load(Ordering::Relaxed) {
        daemon.turn(Some(1000))?;
    }
    daemon.log_recording_totals();
    daemon.remove_journal();
    tracing::info!("stopping");
    Ok(())
}

/// The crash journal in the run directory, read and applied, if the
/// journal is kept and a daemon left one (it did not stop cleanly). One
/// that cannot be used is moved aside, with the reason logged, and the
/// daemon starts with an empty store rather than not at all.
fn recoverable(shell: &ShellConfig, config: &Config) -> Option<Replayed> {
    let path = journal::path_in(&shell.rundir);
    if !path.metadata().is_ok_and(|m| m.len() > 0) {
        return None;
    }
    if shell.journal.is_none() {
        tracing::warn!(
            "a crash journal is in {}, but the journal is off (--journal): not recovered",
            path.display()
        );
        return None;
    }
    tracing::info!(
        "crash recovery: the last daemon did not stop cleanly; carrying on from {}",
        path.display()
    );
    match Replayed::read(Engine::new(config.clone()), &path) {
        Ok(r) => Some(r),
        Err(e) => {
            let aside = path.with_extension("rec.unusable");
            let moved = std::fs::rename(&path, &aside);
            tracing::error!(
                "crash recovery: {e}; the journal {}, and the daemon starts with an empty store",
                match moved {
                    Ok(()) => format!("is kept as {}", aside.display()),
                    Err(e) => format!("cannot be moved aside ({e})"),
                }
            );
            None
        }
    }
}
