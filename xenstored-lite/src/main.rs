//! `xenstored-lite`: the daemon.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use xenstored_lite::cli::Cli;
use xenstored_lite::engine::Engine;
use xenstored_lite::shell::platform::Platform;
use xenstored_lite::shell::{notify_systemd_ready, Daemon, ShellConfig};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler for these signals exists.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
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
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xenstored-lite: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let config = cli.engine_config()?;
    let choice = cli.platform_choice()?;
    let socket = cli.socket_path();
    if !cli.no_fork {
        // Detach before any thread exists (the embedded mock-xen has one).
        nix::unistd::daemon(true, true)
            .map_err(|e| format!("cannot detach (use -N to stay in the foreground): {e}"))?;
    }
    let rundir = cli.rundir();
    std::fs::create_dir_all(&rundir)
        .map_err(|e| format!("cannot create the run directory {}: {e}", rundir.display()))?;
    let mut platform = Platform::open(&choice, &rundir).map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        msg
    })?;
    if cli.no_domain_init {
        platform.serve_local_ring = false;
    }
    tracing::info!("xenstored-lite starting on {}", platform.description);
    let shell = ShellConfig {
        socket: socket.clone(),
        access_log: cli.trace_file.clone(),
    };
    let mut daemon = Daemon::new(Engine::new(config), platform, &shell)
        .map_err(|e| format!("cannot serve {}: {e}", socket.display()))?;
    if let Some(pid_file) = &cli.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", pid_file.display()))?;
    }
    install_signal_handlers()?;
    raise_fd_limit();
    tracing::info!("serving {}", socket.display());
    notify_systemd_ready();
    let stop = daemon.stop_flag();
    while !SIGNALLED.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        daemon.turn(Some(1000))?;
    }
    tracing::info!("stopping");
    Ok(())
}
