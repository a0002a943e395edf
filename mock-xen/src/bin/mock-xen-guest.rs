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

fn parse() -> Result<Args, String> {
    let mut hv = None;
    let mut xenstored = None;
    let mut count = 1;
    let mut name = "guest".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--hv" => hv = Some(PathBuf::from(value()?)),
            "--xenstored" => xenstored = Some(PathBuf::from(value()?)),
            "--count" => {
                count = value()?
                    .parse()
                    .map_err(|_| "--count needs a number".to_string())?
            }
            "--name" => name = value()?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        hv: hv.ok_or("--hv is required")?,
        xenstored: xenstored.ok_or("--xenstored is required")?,
        count,
        name,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
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

fn run(args: &Args) -> Result<(), String> {
    let connector = Connector::remote(&args.hv);
    let ts = Toolstack::open(&connector)
        .map_err(|e| format!("cannot reach mock-xen at {}: {e}", args.hv.display()))?;
    let mut xs = Client::connect_unix(&args.xenstored).map_err(|e| {
        format!(
            "cannot reach the xenstore daemon at {}: {e}",
            args.xenstored.display()
        )
    })?;
    let mut threads = Vec::new();
    for i in 0..args.count {
        let rec = ts.create_domain().map_err(|e| e.to_string())?;
        let d = rec.info.domid;
        let home = format!("/local/domain/{d}");
        xs.mkdir(0, &home).map_err(|e| e.to_string())?;
        xs.set_perms(0, &home, &[Perm::new(PermKind::None, d)])
            .map_err(|e| e.to_string())?;
        ts.introduce(&mut xs, &rec)
            .map_err(|e| format!("introducing domain {d}: {e}"))?;
        let connector = connector.clone();
        let name = format!("{}-{}", args.name, i + 1);
        threads.push(std::thread::spawn(move || -> Result<u16, String> {
            let mut guest = Guest::attach(&connector, &rec).map_err(|e| e.to_string())?;
            guest.set_block_limit(GUEST_LIFETIME);
            let mut c = Client::new(guest);
            c.write(0, "name", name.as_bytes())
                .map_err(|e| e.to_string())?;
            c.write(
                0,
                "data/greeting",
                format!("hello from domain {d}").as_bytes(),
            )
            .map_err(|e| e.to_string())?;
            c.write(0, "control/shutdown", b"")
                .map_err(|e| e.to_string())?;
            c.watch("control/shutdown", "shutdown")
                .map_err(|e| e.to_string())?;
            println!("domain {d} ({name}) is up: see xenstore-ls /local/domain/{d}");
            loop {
                c.next_watch_event().map_err(|e| e.to_string())?;
                if c.read(0, "control/shutdown").map_err(|e| e.to_string())? == b"poweroff" {
                    return Ok(d);
                }
            }
        }));
    }
    for t in threads {
        match t.join() {
            Ok(Ok(d)) => {
                ts.destroy(d).map_err(|e| e.to_string())?;
                println!("domain {d} powered off and destroyed");
            }
            Ok(Err(e)) => eprintln!("mock-xen-guest: a guest stopped: {e}"),
            Err(_) => eprintln!("mock-xen-guest: a guest thread panicked"),
        }
    }
    Ok(())
}
