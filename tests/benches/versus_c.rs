//! xenstored-lite against the reference daemons in one run (prints
//! figures; not a timed test), issue 20:
//!
//! 1. Pipelined throughput over the Unix socket: 8 connections with 8
//!    requests in flight each, the mix 8 READ : 1 WRITE : 1 DIRECTORY on a
//!    store of 100 x 20 nodes, xenstored-lite (`--platform mock`) against
//!    C xenstored 4.17 under the project's shim, same store, same
//!    requests, alternating rounds, medians.
//! 2. The toolstack storm (the workload of xenstored-lite/benches/daemon.rs):
//!    client threads each starting then stopping 2 guests in transactions
//!    under shared backend parents, retrying on EAGAIN, against
//!    xenstored-lite, oxenstored and C xenstored; commits, retries, wall
//!    time and the daemon's CPU time (utime+stime from /proc/PID/stat).
//!
//! `cargo bench -p tests --bench versus_c`. Without `--bench` it does a
//! small quick version. It needs `/usr/lib/xen-4.17/bin/xenstored` and
//! `oxenstored` (xen-utils-4.17), a C compiler and libxen-dev's headers
//! (for oxenstored's shim, `c-shim/oxen-shim.c`); without them it says
//! why and skips that daemon.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::c_daemon::{build_shim, C_XENSTORED};
use tests::{wait_until, Proc};
use xenring::codec::{build_args, build_path_value};
use xenring::{Client, Error as XsError, MsgType, Perm, PermKind, XsErrno};

const OXENSTORED: &str = "/usr/lib/xen-4.17/bin/oxenstored";

/// A daemon under test: its process and socket.
struct Running {
    name: &'static str,
    proc: Proc,
    socket: PathBuf,
}

impl Running {
    fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

fn wait_socket(name: &str, socket: &Path, proc: &mut Proc, log: &Path) {
    wait_until(name, || {
        socket.exists() || !matches!(proc.child.try_wait(), Ok(None))
    });
    assert!(
        socket.exists(),
        "{name} exited before serving: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn log_file(path: &Path) -> (Stdio, Stdio) {
    let f = std::fs::File::create(path).expect("log file");
    let g = f.try_clone().expect("log file");
    (f.into(), g.into())
}

fn start_lite(dir: &Path) -> Running {
    let rundir = dir.join("lite-run");
    std::fs::create_dir_all(&rundir).expect("run dir");
    let log = dir.join("lite.log");
    let (o, e) = log_file(&log);
    let child = Command::new(tests::bin("xenstored-lite"))
        .args(["-N", "--platform", "mock"])
        .env("XENSTORED_RUNDIR", &rundir)
        .env_remove("XENSTORED_PATH")
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("xenstored-lite");
    let mut proc = Proc { child };
    let socket = rundir.join("socket");
    wait_socket("xenstored-lite", &socket, &mut proc, &log);
    Running {
        name: "xenstored-lite",
        proc,
        socket,
    }
}

fn start_c(dir: &Path, shim: &Path) -> Running {
    let rundir = dir.join("c-run");
    std::fs::create_dir_all(&rundir).expect("run dir");
    let log = dir.join("c.log");
    let (o, e) = log_file(&log);
    let child = Command::new(C_XENSTORED)
        .arg("--no-fork")
        .env("XENSTORED_RUNDIR", &rundir)
        .env("XSL_SHIM_DIR", &rundir)
        .env("LD_PRELOAD", shim)
        .env_remove("XENSTORED_PATH")
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("C xenstored");
    let mut proc = Proc { child };
    let socket = rundir.join("socket");
    wait_socket("C xenstored", &socket, &mut proc, &log);
    Running {
        name: "C xenstored",
        proc,
        socket,
    }
}

/// oxenstored's shim (Debian's libxen-dev headers): it also moves the
/// hard-wired /var/run/xenstored/socket to `XS_SHIM_SOCKET`.
fn build_oxen_shim(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).expect("shim dir");
    let out = dir.join("oxen-shim.so");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c-shim/oxen-shim.c");
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-ldl")
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "the oxenstored shim does not build (libxen-dev?): {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(out)
}

fn start_oxen(dir: &Path, shim: &Path) -> Running {
    let rundir = dir.join("ox-run");
    std::fs::create_dir_all(&rundir).expect("run dir");
    let socket = rundir.join("socket");
    let conf = dir.join("oxenstored.conf");
    std::fs::write(
        &conf,
        format!(
            "pid-file = {}/xenstored.pid\nmerge-activate = true\nperms-activate = true\n\
             quota-activate = true\nquota-maxentity = 1000\nquota-transaction = 10\n\
             persistent = false\nxenstored-log-file = {}/ox.xlog\n\
             access-log-file = {}/ox-access.log\nxenstored-kva = /proc/xen/xsd_kva\n\
             xenstored-port = /proc/xen/xsd_port\n",
            rundir.display(),
            rundir.display(),
            rundir.display()
        ),
    )
    .expect("oxenstored config");
    let log = dir.join("ox.log");
    let (o, e) = log_file(&log);
    let child = Command::new(OXENSTORED)
        .arg("--no-fork")
        .arg("--config-file")
        .arg(&conf)
        .env("XENSTORED_RUNDIR", &rundir)
        .env("XS_SHIM_DIR", &rundir)
        .env("XS_SHIM_SOCKET", &socket)
        .env("LD_PRELOAD", shim)
        .env_remove("XENSTORED_PATH")
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .expect("oxenstored");
    let mut proc = Proc { child };
    wait_socket("oxenstored", &socket, &mut proc, &log);
    Running {
        name: "oxenstored",
        proc,
        socket,
    }
}

fn client(socket: &Path) -> Client<UnixStream> {
    let s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    Client::new(s)
}

/// The daemon's CPU time so far (utime + stime, clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the name: state is field 3; utime 14, stime 15.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

// --- 1. pipelined throughput --------------------------------------------

const DOMAINS: usize = 100;
const KEYS: usize = 20;
const CONNS: usize = 8;
const WINDOW: usize = 8;

fn populate(socket: &Path) {
    let mut c = client(socket);
    let mut ids = Vec::new();
    for d in 0..DOMAINS {
        for k in 0..KEYS {
            let p = format!("/bench/d{d}/k{k}");
            ids.push(
                c.submit(
                    MsgType::Write,
                    0,
                    &build_path_value(p.as_bytes(), b"value-1234"),
                )
                .expect("submit"),
            );
            if ids.len() == 64 {
                for id in ids.drain(..) {
                    c.wait_reply(id).expect("write");
                }
            }
        }
    }
    for id in ids {
        c.wait_reply(id).expect("write");
    }
}

/// The `i`-th request of connection `conn`: 8 READ : 1 WRITE : 1 DIRECTORY.
fn request(conn: usize, i: usize) -> (MsgType, Vec<u8>) {
    let d = (conn * 13 + i * 7) % DOMAINS;
    let k = (i * 3 + conn) % KEYS;
    let p = format!("/bench/d{d}/k{k}");
    match i % 10 {
        8 => (
            MsgType::Write,
            build_path_value(p.as_bytes(), format!("v{i}").as_bytes()),
        ),
        9 => (
            MsgType::Directory,
            build_args(&[format!("/bench/d{d}").as_bytes()]),
        ),
        _ => (MsgType::Read, build_args(&[p.as_bytes()])),
    }
}

/// One round: `per_conn` requests on each of [`CONNS`] connections,
/// [`WINDOW`] in flight; returns requests/s.
fn round(conns: &mut [Client<UnixStream>], per_conn: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for (n, c) in conns.iter_mut().enumerate() {
            s.spawn(move || {
                let mut in_flight = std::collections::VecDeque::new();
                for i in 0..per_conn {
                    if in_flight.len() == WINDOW {
                        let id = in_flight.pop_front().expect("in flight");
                        c.wait_reply(id).expect("reply");
                    }
                    let (ty, payload) = request(n, i);
                    in_flight.push_back(c.submit(ty, 0, &payload).expect("submit"));
                }
                for id in in_flight {
                    c.wait_reply(id).expect("reply");
                }
            });
        }
    });
    (conns.len() * per_conn) as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A daemon, its connections and its rates so far.
type Side<'a> = (&'a Running, Vec<Client<UnixStream>>, Vec<f64>);

fn throughput(dir: &Path, c_shim: &Path, quick: bool) {
    let (rounds, per_conn) = if quick { (3, 500) } else { (7, 20_000) };
    let lite = start_lite(&dir.join("tp"));
    let c = start_c(&dir.join("tp"), c_shim);
    let mut sides: Vec<Side<'_>> = [&lite, &c]
        .into_iter()
        .map(|d| {
            populate(&d.socket);
            let conns = (0..CONNS).map(|_| client(&d.socket)).collect();
            (d, conns, Vec::new())
        })
        .collect();
    for (_, conns, _) in &mut sides {
        round(conns, per_conn / 10); // warm-up
    }
    for _ in 0..rounds {
        for (_, conns, rates) in &mut sides {
            rates.push(round(conns, per_conn));
        }
    }
    println!(
        "pipelined throughput, {CONNS} connections x {WINDOW} in flight, 8 READ : 1 WRITE : 1 DIRECTORY, \
         {} nodes, {rounds} alternating rounds of {} requests:",
        DOMAINS * KEYS,
        CONNS * per_conn
    );
    let mut med = Vec::new();
    for (d, _, rates) in &mut sides {
        let m = median(rates);
        println!(
            "  {:<15} median {:>9.0} req/s  (rounds: {})",
            d.name,
            m,
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        med.push(m);
    }
    println!("  xenstored-lite / C xenstored: {:.2}x", med[0] / med[1]);
}

// --- 2. the toolstack storm ---------------------------------------------

/// The storm of xenstored-lite/benches/daemon.rs: each client starts then
/// stops `guests` guests, one transaction each, under the shared backend
/// parents; returns (commits, EAGAIN retries).
fn storm(socket: &Path, clients: usize, guests: usize) -> (u64, u64) {
    let mut setup = client(socket);
    for p in [
        "/local/domain/0/backend/vbd/51712",
        "/local/domain/0/backend/vif/0",
    ] {
        setup.mkdir(0, p).expect("mkdir");
    }
    let handles: Vec<_> = (0..clients)
        .map(|k| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || -> (u64, u64) {
                let mut c = client(&socket);
                let (mut commits, mut retries) = (0, 0);
                for g in 0..guests {
                    let d = 1 + k * guests + g;
                    let fe = format!("/local/domain/{d}");
                    let vbd = format!("/local/domain/0/backend/vbd/51712/{d}");
                    let vif = format!("/local/domain/0/backend/vif/0/{d}");
                    let start_guest = |c: &mut Client<UnixStream>,
                                       tx: u32|
                     -> Result<(), XsError> {
                        c.write(tx, &format!("{fe}/name"), format!("guest{d}").as_bytes())?;
                        c.write(
                            tx,
                            &format!("{fe}/device/vbd/51712/backend"),
                            vbd.as_bytes(),
                        )?;
                        c.write(tx, &format!("{fe}/device/vbd/51712/state"), b"1")?;
                        c.write(tx, &format!("{fe}/device/vif/0/backend"), vif.as_bytes())?;
                        c.write(tx, &format!("{fe}/device/vif/0/state"), b"1")?;
                        for be in [&vbd, &vif] {
                            c.write(tx, &format!("{be}/frontend"), fe.as_bytes())?;
                            c.write(tx, &format!("{be}/frontend-id"), d.to_string().as_bytes())?;
                            c.write(tx, &format!("{be}/state"), b"1")?;
                            let did = u16::try_from(d).unwrap_or(u16::MAX);
                            c.set_perms(
                                tx,
                                be,
                                &[Perm::new(PermKind::None, 0), Perm::new(PermKind::Read, did)],
                            )?;
                        }
                        Ok(())
                    };
                    let stop_guest = |c: &mut Client<UnixStream>, tx: u32| -> Result<(), XsError> {
                        c.rm(tx, &fe)?;
                        c.rm(tx, &vbd)?;
                        c.rm(tx, &vif)
                    };
                    type Step<'a> = &'a dyn Fn(&mut Client<UnixStream>, u32) -> Result<(), XsError>;
                    let steps: [Step<'_>; 2] = [&start_guest, &stop_guest];
                    for step in steps {
                        loop {
                            let tx = c.transaction_start().expect("start");
                            match step(&mut c, tx) {
                                Ok(()) => {}
                                // A daemon may refuse inside a doomed
                                // transaction; its end says so.
                                Err(XsError::Xs(XsErrno::EAGAIN)) => {}
                                Err(e) => panic!("transaction body: {e}"),
                            }
                            match c.transaction_end(tx, true) {
                                Ok(()) => break,
                                Err(XsError::Xs(XsErrno::EAGAIN)) => retries += 1,
                                Err(e) => panic!("commit: {e}"),
                            }
                        }
                        commits += 1;
                    }
                }
                (commits, retries)
            })
        })
        .collect();
    let (mut commits, mut retries) = (0, 0);
    for h in handles {
        let (c, r) = h.join().expect("client thread");
        commits += c;
        retries += r;
    }
    (commits, retries)
}

fn storm_line(d: &Running, clients: usize, guests: usize) -> Duration {
    let cpu0 = cpu_time(d.pid());
    let start = Instant::now();
    let (commits, retries) = storm(&d.socket, clients, guests);
    let wall = start.elapsed();
    let cpu = cpu_time(d.pid()) - cpu0;
    println!(
        "  {:<15} {clients} clients x {guests} guests: {commits} commits, {retries} EAGAIN retries, \
         wall {:>8.2} s, daemon CPU {:>7.2} s ({:.0} us/commit)",
        d.name,
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / commits.max(1) as f64
    );
    if d.name == "xenstored-lite" {
        assert_eq!(retries, 0, "EAGAIN in a storm of disjoint transactions");
    }
    wall
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().expect("temp dir");
    if !Path::new(C_XENSTORED).exists() {
        println!("versus C: skipped: {C_XENSTORED} is not installed (xen-utils-4.17)");
        return;
    }
    let c_shim = match build_shim(&dir.path().join("shim")) {
        Ok(s) => s,
        Err(e) => {
            println!("versus C: skipped: {e}");
            return;
        }
    };
    throughput(dir.path(), &c_shim, quick);

    let (clients, guests) = if quick { (10, 2) } else { (300, 2) };
    let c_clients = std::env::var("VS_C_STORM_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 10 } else { 0 });
    println!("toolstack storm over the socket:");
    let lite = start_lite(&dir.path().join("storm-lite"));
    let lite_wall = storm_line(&lite, clients, guests);
    drop(lite);
    let ox = if !Path::new(OXENSTORED).exists() {
        println!("  oxenstored: skipped: {OXENSTORED} is not installed");
        None
    } else {
        match build_oxen_shim(&dir.path().join("oxshim")) {
            Ok(shim) => {
                let ox = start_oxen(&dir.path().join("storm-ox"), &shim);
                Some(storm_line(&ox, clients, guests))
            }
            Err(e) => {
                println!("  oxenstored: skipped: {e}");
                None
            }
        }
    };
    if let Some(ox) = ox {
        println!(
            "  xenstored-lite / oxenstored wall time: {:.3}x",
            lite_wall.as_secs_f64() / ox.as_secs_f64()
        );
    }
    if c_clients > 0 {
        let c = start_c(&dir.path().join("storm-c"), &c_shim);
        storm_line(&c, c_clients, guests);
    } else {
        println!("  C xenstored: skipped (VS_C_STORM_CLIENTS=N runs it with N clients)");
    }
}
