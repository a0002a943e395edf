//! `mock-xen-guest`: adds simulated guest domains to a xenstore daemon that
//! runs on mock-xen, the way a toolstack and a guest kernel would.
//!
//! For each guest: create the domain in mock-xen, make its home
//! `/local/domain/<domid>` (owned by the guest), INTRODUCE it to the daemon,
//! then run its xenbus frontend over the ring: it writes `name` and
//! `data/greeting`, and watches `control/shutdown`; writing `poweroff`
//! there (e.g. `xenstore-write /local/domain/1/control/shutdown poweroff`)
//! shuts the guest down and destroys the domain, as `xl shutdown` would.

use std::path::PathBuf;
use std::process::ExitCode;

use mock_xen::{Connector, Guest, Toolstack};
use xenring::{Client, Perm, PermKind};

const USAGE: &str = "usage: mock-xen-guest --hv MOCK_XEN_SOCKET --xenstored XENSTORED_SOCKET [--count N] [--name PREFIX]

Adds N (default 1) simulated guest domains to a xenstore daemon running on
mock-xen. With xenstored-lite's embedded default they are
$XENSTORED_RUNDIR/mock-xen.sock and $XENSTORED_RUNDIR/socket. Each guest
writes its name and data/greeting, then waits; write 'poweroff' to its
control/shutdown to destroy it. Exits when every guest is gone.";

/// How long a guest waits for its daemon: as long as it lives (2^32 s, a
/// bound `Instant` arithmetic takes without overflow).
const GUEST_LIFETIME: std::time::Duration = std::time::Duration::from_secs(u32::MAX as u64);

struct Args {
    hv: PathBuf,
    xenstored: PathBuf,
    count: usize,
    name: String,
}

/// A command line that cannot be run.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("--count needs a number")]
    BadCount,
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} is required")]
    Required(&'static str),
}

/// Why the toolstack side stopped.
#[derive(Debug, thiserror::Error)]
enum ToolstackError {
    #[error("cannot reach mock-xen at {path}: {source}")]
    Hypervisor {
        path: String,
        source: mock_xen::Error,
    },
    #[error("cannot reach the xenstore daemon at {path}: {source}")]
    Daemon {
        path: String,
        source: xenring::Error,
    },
    #[error("creating a domain: {0}")]
    Create(mock_xen::Error),
    #[error("giving domain {domid} its home: {source}")]
    Home { domid: u16, source: xenring::Error },
    #[error("introducing domain {domid}: {source}")]
    Introduce { domid: u16, source: xenring::Error },
    #[error("destroying domain {domid}: {source}")]
    Destroy { domid: u16, source: mock_xen::Error },
}

/// Why a guest's frontend stopped.
#[derive(Debug, thiserror::Error)]
enum GuestError {
    #[error("domain {domid} cannot attach to its ring: {source}")]
    Attach { domid: u16, source: mock_xen::Error },
    #[error("domain {domid}: {source}")]
    Xenstore { domid: u16, source: xenring::Error },
}

/// The arguments, or `None` for `--help`.
fn parse() -> Result<Option<Args>, UsageError> {
    let mut hv = None;
    let mut xenstored = None;
    let mut count = 1;
    let mut name = "guest".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| UsageError::MissingValue(arg.clone()))
        };
        match arg.as_str() {
            "--hv" => hv = Some(PathBuf::from(value()?)),
            "--xenstored" => xenstored = Some(PathBuf::from(value()?)),
            "--count" => count = value()?.parse().map_err(|_| UsageError::BadCount)?,
            "--name" => name = value()?,
            "-h" | "--help" => return Ok(None),
            other => return Err(UsageError::Unknown(other.to_string())),
        }
    }
    Ok(Some(Args {
        hv: hv.ok_or(UsageError::Required("--hv"))?,
        xenstored: xenstored.ok_or(UsageError::Required("--xenstored"))?,
        count,
        name,
    }))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mock-xen-guest: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-xen-guest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), ToolstackError> {
    let connector = Connector::remote(&args.hv);
    let ts = Toolstack::open(&connector).map_err(|source| ToolstackError::Hypervisor {
        path: args.hv.display().to_string(),
        source,
    })?;
    let mut xs =
        Client::connect_unix(&args.xenstored).map_err(|source| ToolstackError::Daemon {
            path: args.xenstored.display().to_string(),
            source,
        })?;
    let mut threads = Vec::new();
    for i in 0..args.count {
        let rec = ts.create_domain().map_err(ToolstackError::Create)?;
        let d = rec.info.domid;
        let home = format!("/local/domain/{d}");
        let home_err = |source| ToolstackError::Home { domid: d, source };
        xs.mkdir(0, &home).map_err(home_err)?;
        xs.set_perms(0, &home, &[Perm::new(PermKind::None, d)])
            .map_err(home_err)?;
        ts.introduce(&mut xs, &rec)
            .map_err(|source| ToolstackError::Introduce { domid: d, source })?;
        let connector = connector.clone();
        let name = format!("{}-{}", args.name, i + 1);
        threads.push(std::thread::spawn(move || -> Result<u16, GuestError> {
            let xs_err = |source| GuestError::Xenstore { domid: d, source };
            let mut guest = Guest::attach(&connector, &rec)
                .map_err(|source| GuestError::Attach { domid: d, source })?;
            guest.set_block_limit(GUEST_LIFETIME);
            let mut c = Client::new(guest);
            c.write(0, "name", name.as_bytes()).map_err(xs_err)?;
            c.write(
                0,
                "data/greeting",
                format!("hello from domain {d}").as_bytes(),
            )
            .map_err(xs_err)?;
            c.write(0, "control/shutdown", b"").map_err(xs_err)?;
            c.watch("control/shutdown", "shutdown").map_err(xs_err)?;
            println!("domain {d} ({name}) is up: see xenstore-ls /local/domain/{d}");
            loop {
                c.next_watch_event().map_err(xs_err)?;
                if c.read(0, "control/shutdown").map_err(xs_err)? == b"poweroff" {
                    return Ok(d);
                }
            }
        }));
    }
    for t in threads {
        match t.join() {
            Ok(Ok(d)) => {
                ts.destroy(d)
                    .map_err(|source| ToolstackError::Destroy { domid: d, source })?;
                println!("domain {d} powered off and destroyed");
            }
            Ok(Err(e)) => eprintln!("mock-xen-guest: a guest stopped: {e}"),
            Err(_) => eprintln!("mock-xen-guest: a guest thread panicked"),
        }
    }
    Ok(())
}
