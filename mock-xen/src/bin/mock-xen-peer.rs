//! `mock-xen-peer`: the far side of mock-xen's cross-process tests and
//! benchmarks (a second process, as a daemon or another domain is).
//!
//! Modes:
//! * `echo-dom0 SOCKET DOMID`: acts as dom0 serving DOMID's ring: maps its
//!   grant 1, binds its store port, prints `ready PORT`, then echoes every
//!   byte the guest writes back into the response ring, notifying after each
//!   batch, until the guest dies.
//! * `exec-adopt SOCKET DOMID`: binds to DOMID's store port and maps its
//!   grant 1 (prints `bound PORT`), then `exec()`s itself in `adopted` mode
//!   with the connection inherited; the new program re-adopts it, maps the
//!   grant again (prints `mapped`), waits for an event on the same port
//!   (prints `event PORT`) and exits 0.
//! * `eventfd-pong RX TX COUNT`: the plain eventfd ping-pong partner: waits
//!   on inherited eventfd RX and answers on TX, COUNT times.
//! * `fork-server SOCKET`: forks a mock-xen server on SOCKET as the daemon's
//!   embedded mode does (`ServerProcess::fork`, from this single-threaded
//!   process), prints `forked PID child BOOL`, attaches to it as after an
//!   exec and prints `attached PID child BOOL`, then waits for its standard
//!   input to close, stops the server by dropping it and prints `stopped`.

use std::io::Write;
use std::os::fd::{BorrowedFd, RawFd};
use std::process::ExitCode;
use std::time::Duration;

use evtchn::{EventChannel, Port};
use gnttab::{PageMapper, GNTTAB_RESERVED_XENSTORE};
use mock_xen::{Connector, MockEventChannel, MockPageMapper};
use xenring::ServerEnd;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("echo-dom0") => echo_dom0(&args[2..]),
        Some("exec-adopt") => exec_adopt(&args[2..]),
        Some("adopted") => adopted(&args[2..]),
        Some("eventfd-pong") => eventfd_pong(&args[2..]),
        Some("fork-server") => fork_server(&args[2..]),
        _ => Err(
            "usage: mock-xen-peer echo-dom0|exec-adopt|eventfd-pong|fork-server ...".to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-xen-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", args[i]))
}

fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn echo_dom0(args: &[String]) -> Result<(), String> {
    let socket: String = arg(args, 0, "socket")?;
    let domid: u16 = arg(args, 1, "domid")?;
    let connector = Connector::remote(&socket);
    let mapper = MockPageMapper::open(&connector, 0).map_err(|e| e.to_string())?;
    let page = mapper
        .map_grant(domid, GNTTAB_RESERVED_XENSTORE)
        .map_err(|e| e.to_string())?;
    let mut evtchn = MockEventChannel::open(&connector, 0).map_err(|e| e.to_string())?;
    let store_port = 1; // mock-xen allocates every guest's store port as port 1
    let port = evtchn
        .bind_interdomain(domid, Port::new(store_port))
        .map_err(|e| e.to_string())?;
    say(&format!("ready {port}"))?;
    let end = ServerEnd::new(page.ring());
    let mut buf = [0u8; 1024];
    let mut fired = Vec::new();
    loop {
        fired.clear();
        evtchn
            .wait(Some(Duration::from_secs(30)), &mut fired)
            .map_err(|e| e.to_string())?;
        if fired.is_empty() {
            return Err("no event for 30 s".into());
        }
        evtchn.unmask(&fired).map_err(|e| e.to_string())?;
        loop {
            let n = end.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            let mut off = 0;
            while off < n {
                let w = end.write(&buf[off..n]).map_err(|e| e.to_string())?;
                off += w;
                if w == 0 {
                    std::thread::yield_now();
                }
            }
            evtchn.notify(port).map_err(|e| e.to_string())?;
        }
        if buf.starts_with(b"quit") {
            return Ok(());
        }
    }
}

fn exec_adopt(args: &[String]) -> Result<(), String> {
    let socket: String = arg(args, 0, "socket")?;
    let domid: u16 = arg(args, 1, "domid")?;
    let connector = Connector::remote(&socket);
    let mut evtchn = MockEventChannel::open(&connector, 0).map_err(|e| e.to_string())?;
    let port = evtchn
        .bind_interdomain(domid, Port::new(1))
        .map_err(|e| e.to_string())?;
    let mapper = MockPageMapper::open(&connector, 0).map_err(|e| e.to_string())?;
    let page = mapper
        .map_grant(domid, GNTTAB_RESERVED_XENSTORE)
        .map_err(|e| e.to_string())?;
    drop(page);
    let evtchn_fd = evtchn.into_inheritable_fd().map_err(|e| e.to_string())?;
    // The mapper's connection carries the mapping rights (it acts for dom0):
    // keep it too.
    let mapper_fd = mapper.into_inheritable_fd().map_err(|e| e.to_string())?;
    say(&format!("bound {port}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let err = std::os::unix::process::CommandExt::exec(std::process::Command::new(exe).args([
        "adopted".to_string(),
        domid.to_string(),
        port.to_string(),
        evtchn_fd.to_string(),
        mapper_fd.to_string(),
    ]));
    Err(format!("exec failed: {err}"))
}

fn adopted(args: &[String]) -> Result<(), String> {
    let domid: u16 = arg(args, 0, "domid")?;
    let port: u32 = arg(args, 1, "port")?;
    let evtchn_fd: RawFd = arg(args, 2, "evtchn fd")?;
    let mapper_fd: RawFd = arg(args, 3, "mapper fd")?;
    // SAFETY: these descriptors were made inheritable by the program that
    // exec'd us, for us alone; nothing else in this process uses them.
    let mut evtchn = unsafe { MockEventChannel::adopt(evtchn_fd, 0) }.map_err(|e| e.to_string())?;
    // SAFETY: as above.
    let mapper = unsafe { MockPageMapper::adopt(mapper_fd, 0) }.map_err(|e| e.to_string())?;
    let page = mapper
        .map_grant(domid, GNTTAB_RESERVED_XENSTORE)
        .map_err(|e| e.to_string())?;
    let _ = page.ring().error();
    say("mapped")?;
    let mut fired = Vec::new();
    for _ in 0..60 {
        evtchn
            .wait(Some(Duration::from_secs(1)), &mut fired)
            .map_err(|e| e.to_string())?;
        if !fired.is_empty() {
            break;
        }
    }
    match fired.first() {
        Some(p) if p.get() == port => say(&format!("event {p}")),
        Some(p) => Err(format!("event on port {p}, expected {port}")),
        None => Err("no event after exec".into()),
    }
}

fn eventfd_pong(args: &[String]) -> Result<(), String> {
    let rx: RawFd = arg(args, 0, "rx fd")?;
    let tx: RawFd = arg(args, 1, "tx fd")?;
    let count: u64 = arg(args, 2, "count")?;
    // SAFETY: the two descriptors were inherited from our parent, which
    // created them for this purpose and keeps them open while we run.
    let (rx, tx) = unsafe { (BorrowedFd::borrow_raw(rx), BorrowedFd::borrow_raw(tx)) };
    let mut buf = [0u8; 8];
    for _ in 0..count {
        nix::unistd::read(rx, &mut buf).map_err(|e| e.to_string())?;
        nix::unistd::write(tx, &1u64.to_ne_bytes()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn fork_server(args: &[String]) -> Result<(), String> {
    let socket: String = arg(args, 0, "socket")?;
    let server = mock_xen::ServerProcess::fork(&socket).map_err(|e| e.to_string())?;
    say(&format!(
        "forked {} child {}",
        server.pid(),
        server.is_child()
    ))?;
    let again = mock_xen::ServerProcess::attach(&socket).map_err(|e| e.to_string())?;
    say(&format!(
        "attached {} child {}",
        again.pid(),
        again.is_child()
    ))?;
    // Only one of the two stops the server: the one that forked it.
    std::mem::forget(again);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest).map_err(|e| e.to_string())?;
    drop(server);
    say("stopped")
}
