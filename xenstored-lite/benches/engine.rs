//! Engine throughput, on one thread, driving `Engine` directly (no I/O):
//!
//! * READ, WRITE (no watchers), DIRECTORY and a small transaction (start,
//!   two writes, commit) against a store of 120,000 nodes;
//! * WRITE with 128,000 watches registered (a handful matching) next to
//!   WRITE with 1,000 registered;
//! * "the storm": 300 socket clients each starting and stopping 2 guests
//!   the way a toolstack does, one transaction per start and per stop, all
//!   touching the shared backend parents, interleaved round-robin so that
//!   the transactions overlap; EAGAIN is retried.
//!
//! `cargo bench -p xenstored-lite` prints the figures. Under
//! `cargo test --benches` (no `--bench` argument) the sizes are tiny.

use std::hint::black_box;
use std::time::{Duration, Instant};

use xenring::codec::{build_args, build_path_value, Message};
use xenring::MsgType;
use xenstored_lite::engine::{Action, Config, ConnId, ConnKind, Engine, Input};

struct Sizes {
    domains: usize,
    keys: usize,
    ops: usize,
    txs: usize,
    watches_many: usize,
    watches_few: usize,
    storm_clients: usize,
}

const FULL: Sizes = Sizes {
    domains: 1200,
    keys: 100,
    ops: 200_000,
    txs: 50_000,
    watches_many: 128_000,
    watches_few: 1_000,
    storm_clients: 300,
};

const TINY: Sizes = Sizes {
    domains: 12,
    keys: 10,
    ops: 1_000,
    txs: 200,
    watches_many: 1_280,
    watches_few: 10,
    storm_clients: 3,
};

const LOADER: ConnId = 1;
const WATCHER: ConnId = 2;

/// A deterministic sequence of indices (no `rand`, same run every time).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let hi = usize::try_from(self.0 >> 33).unwrap_or(0);
        hi % n
    }
}

struct Bench {
    engine: Engine,
    req: u32,
}

impl Bench {
    fn new() -> Self {
        let mut engine = Engine::new(Config::default());
        for conn in [LOADER, WATCHER] {
            engine.handle(Input::Connect {
                conn,
                kind: ConnKind::Socket,
            });
        }
        Self { engine, req: 0 }
    }

    fn msg(&mut self, ty: MsgType, tx: u32, payload: Vec<u8>) -> Message {
        self.req = self.req.wrapping_add(1);
        Message::new(ty, self.req, tx, payload).expect("payload within 4096 bytes")
    }

    /// Sends one request and returns its reply (events on the way are
    /// dropped).
    fn call(&mut self, conn: ConnId, msg: &Message) -> Message {
        self.engine.handle(Input::Request { conn, msg });
        loop {
            let out = self.engine.pop_output(conn).expect("a reply");
            if out.header.msg_type != MsgType::WatchEvent.raw() {
                return out;
            }
        }
    }

    fn drain(&mut self, conn: ConnId) -> usize {
        let mut n = 0;
        while self.engine.pop_output(conn).is_some() {
            n += 1;
        }
        n
    }

    fn write(&mut self, conn: ConnId, tx: u32, path: &str, value: &[u8]) -> Message {
        let msg = self.msg(MsgType::Write, tx, build_path_value(path.as_bytes(), value));
        self.call(conn, &msg)
    }

    fn load(&mut self, s: &Sizes) {
        for d in 0..s.domains {
            for k in 0..s.keys {
                let reply = self.write(LOADER, 0, &key(d, k), b"some value");
                assert_eq!(reply.payload, b"OK\0");
            }
        }
    }
}

fn key(d: usize, k: usize) -> String {
    format!("/local/domain/{d}/k{k}")
}

fn is_error(m: &Message) -> bool {
    m.header.msg_type == MsgType::Error.raw()
}

fn rate(what: &str, n: usize, took: Duration) -> f64 {
    let per_s = n as f64 / took.as_secs_f64();
    println!(
        "{what:<44}{per_s:>14.0} /s  ({n} in {:.3} s, {:.2} us each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64
    );
    per_s
}

/// Prebuilt requests, so that building them is not measured.
fn requests(
    b: &mut Bench,
    s: &Sizes,
    seed: u64,
    f: impl Fn(&mut Bench, usize, usize) -> Message,
) -> Vec<Message> {
    let mut rng = Lcg(seed);
    (0..s.ops)
        .map(|_| {
            let d = rng.below(s.domains);
            let k = rng.below(s.keys);
            f(b, d, k)
        })
        .collect()
}

fn run(b: &mut Bench, msgs: &[Message]) -> Duration {
    let start = Instant::now();
    for m in msgs {
        b.engine.handle(Input::Request {
            conn: LOADER,
            msg: m,
        });
        while let Some(out) = b.engine.pop_output(LOADER) {
            black_box(&out);
        }
    }
    start.elapsed()
}

fn basic(b: &mut Bench, s: &Sizes) {
    let reads = requests(b, s, 1, |b, d, k| {
        b.msg(MsgType::Read, 0, build_args(&[key(d, k).as_bytes()]))
    });
    rate("READ", reads.len(), run(b, &reads));

    let writes = requests(b, s, 2, |b, d, k| {
        b.msg(
            MsgType::Write,
            0,
            build_path_value(key(d, k).as_bytes(), b"another value"),
        )
    });
    rate("WRITE (no watchers)", writes.len(), run(b, &writes));

    let dirs = requests(b, s, 3, |b, d, _| {
        b.msg(
            MsgType::Directory,
            0,
            build_args(&[format!("/local/domain/{d}").as_bytes()]),
        )
    });
    rate(
        &format!("DIRECTORY ({} children)", s.keys),
        dirs.len(),
        run(b, &dirs),
    );

    // Start, two writes, commit.
    let mut rng = Lcg(4);
    let start = Instant::now();
    let mut eagain = 0;
    for _ in 0..s.txs {
        let m = b.msg(MsgType::TransactionStart, 0, build_args(&[b""]));
        let r = b.call(LOADER, &m);
        let id: u32 = std::str::from_utf8(r.payload.strip_suffix(b"\0").unwrap_or(&r.payload))
            .ok()
            .and_then(|t| t.parse().ok())
            .expect("a transaction id");
        for _ in 0..2 {
            let (d, k) = (rng.below(s.domains), rng.below(s.keys));
            b.write(LOADER, id, &key(d, k), b"in a transaction");
        }
        let m = b.msg(MsgType::TransactionEnd, id, build_args(&[b"T"]));
        if is_error(&b.call(LOADER, &m)) {
            eagain += 1;
        }
    }
    let took = start.elapsed();
    let tps = rate("transaction (start, 2 writes, commit)", s.txs, took);
    println!(
        "{:<44}{:>14.0} /s  ({eagain} EAGAIN)",
        "  requests in those transactions",
        tps * 4.0
    );
    // One client, one transaction at a time: nothing can conflict.
    assert_eq!(eagain, 0, "EAGAIN for transactions that never overlap");
}

/// WRITE cost with `n` watches registered, of which the ones on
/// `/local/domain/<d>/k0` (d < `matching`) are hit by the writes (one each).
fn watched_writes(s: &Sizes, n: usize, matching: usize) -> Duration {
    let mut b = Bench::new();
    b.load(s);
    let mut added = 0;
    // The watches the writes hit.
    for d in 0..matching {
        let m = b.msg(
            MsgType::Watch,
            0,
            build_args(&[key(d, 0).as_bytes(), b"hit"]),
        );
        assert!(!is_error(&b.call(WATCHER, &m)));
        added += 1;
    }
    // The rest: on other nodes of the store, then on paths nobody writes.
    'outer: for d in 0..s.domains {
        for k in 1..s.keys {
            if added >= n {
                break 'outer;
            }
            let m = b.msg(
                MsgType::Watch,
                0,
                build_args(&[key(d, k).as_bytes(), b"miss"]),
            );
            assert!(!is_error(&b.call(WATCHER, &m)));
            added += 1;
        }
    }
    let mut i = 0;
    while added < n {
        let m = b.msg(
            MsgType::Watch,
            0,
            build_args(&[format!("/elsewhere/{i}").as_bytes(), b"miss"]),
        );
        assert!(!is_error(&b.call(WATCHER, &m)));
        added += 1;
        i += 1;
    }
    b.drain(WATCHER);
    assert_eq!(b.engine.watch_count(), n);
    let mut rng = Lcg(5);
    let msgs: Vec<Message> = (0..s.ops)
        .map(|_| {
            let d = rng.below(matching);
            b.msg(
                MsgType::Write,
                0,
                build_path_value(key(d, 0).as_bytes(), b"watched"),
            )
        })
        .collect();
    let start = Instant::now();
    let mut events = 0;
    for m in &msgs {
        b.engine.handle(Input::Request {
            conn: LOADER,
            msg: m,
        });
        while let Some(out) = b.engine.pop_output(LOADER) {
            black_box(&out);
        }
        events += b.drain(WATCHER);
    }
    let took = start.elapsed();
    assert_eq!(events, msgs.len(), "one event per write");
    took
}

fn watches(s: &Sizes) {
    let matching = s.watches_few.min(s.domains);
    let few = watched_writes(s, s.watches_few, matching);
    let many = watched_writes(s, s.watches_many, matching);
    let few_rate = rate(
        &format!("WRITE, {} watches (1 matching)", s.watches_few),
        s.ops,
        few,
    );
    let many_rate = rate(
        &format!("WRITE, {} watches (1 matching)", s.watches_many),
        s.ops,
        many,
    );
    println!(
        "{:<44}{:>14.2} x  (goal <= 1.2)",
        "  cost ratio many/few",
        few_rate / many_rate
    );
}

// ---------------------------------------------------------------------------
// The storm.

/// One guest's start (create) or stop (remove) as one transaction.
fn guest_ops(d: usize, create: bool) -> Vec<(MsgType, Vec<u8>)> {
    let uuid = format!("00000000-0000-4000-8000-{d:012x}");
    let fe = format!("/local/domain/{d}/device");
    let vbd_fe = format!("{fe}/vbd/51712");
    let vif_fe = format!("{fe}/vif/0");
    let vbd_be = format!("/local/domain/0/backend/vbd/51712/{d}");
    let vif_be = format!("/local/domain/0/backend/vif/0/{d}");
    let vm = format!("/vm/{uuid}");
    let w = |p: String, v: String| (MsgType::Write, build_path_value(p.as_bytes(), v.as_bytes()));
    let perms = |p: &str, list: &[String]| {
        let mut args: Vec<&[u8]> = vec![p.as_bytes()];
        args.extend(list.iter().map(String::as_bytes));
        (MsgType::SetPerms, build_args(&args))
    };
    let rm = |p: &str| (MsgType::Rm, build_args(&[p.as_bytes()]));
    if !create {
        return vec![rm(&vbd_fe), rm(&vif_fe), rm(&vbd_be), rm(&vif_be), rm(&vm)];
    }
    let guest_rw = [format!("n{d}"), "r0".to_string()];
    let backend_ro = ["n0".to_string(), format!("r{d}")];
    vec![
        // Frontends, owned by the guest.
        w(format!("{vbd_fe}/backend"), vbd_be.clone()),
        w(format!("{vbd_fe}/backend-id"), "0".into()),
        w(format!("{vbd_fe}/state"), "1".into()),
        w(format!("{vbd_fe}/virtual-device"), "51712".into()),
        w(format!("{vbd_fe}/device-type"), "disk".into()),
        perms(&vbd_fe, &guest_rw),
        w(format!("{vif_fe}/backend"), vif_be.clone()),
        w(format!("{vif_fe}/backend-id"), "0".into()),
        w(format!("{vif_fe}/state"), "1".into()),
        w(format!("{vif_fe}/handle"), "0".into()),
        w(
            format!("{vif_fe}/mac"),
            format!("00:16:3e:00:{:02x}:{:02x}", d / 256, d % 256),
        ),
        perms(&vif_fe, &guest_rw),
        // The VM's own entries.
        w(format!("{vm}/name"), format!("guest-{d}")),
        w(format!("{vm}/uuid"), uuid.clone()),
        w(format!("{vm}/start_time"), "1700000000.00".into()),
        // Backends, under the shared parents, readable by the guest.
        w(format!("{vbd_be}/frontend"), vbd_fe.clone()),
        w(format!("{vbd_be}/frontend-id"), d.to_string()),
        w(format!("{vbd_be}/state"), "1".into()),
        w(format!("{vbd_be}/params"), format!("/images/guest-{d}.img")),
        w(format!("{vbd_be}/type"), "phy".into()),
        w(format!("{vbd_be}/online"), "1".into()),
        perms(&vbd_be, &backend_ro),
        w(format!("{vif_be}/frontend"), vif_fe.clone()),
        w(format!("{vif_be}/frontend-id"), d.to_string()),
        w(format!("{vif_be}/state"), "1".into()),
        w(format!("{vif_be}/handle"), "0".into()),
        w(format!("{vif_be}/bridge"), "xenbr0".into()),
        w(format!("{vif_be}/online"), "1".into()),
        perms(&vif_be, &backend_ro),
    ]
}

struct Client {
    conn: ConnId,
    /// (domid, create) for each transaction still to do, in order.
    phases: Vec<(usize, bool)>,
    phase: usize,
    /// The open transaction and the next request in it.
    tx: Option<u32>,
    step: usize,
    ops: Vec<(MsgType, Vec<u8>)>,
}

fn storm(s: &Sizes) {
    let mut b = Bench::new();
    for p in [
        "/local/domain/0/backend/vbd/51712",
        "/local/domain/0/backend/vif/0",
        "/vm",
    ] {
        let m = b.msg(MsgType::Mkdir, 0, build_args(&[p.as_bytes()]));
        assert!(!is_error(&b.call(LOADER, &m)));
    }
    let mut clients: Vec<Client> = (0..s.storm_clients)
        .map(|i| {
            let conn = 100 + ConnId::try_from(i).expect("few clients");
            b.engine.handle(Input::Connect {
                conn,
                kind: ConnKind::Socket,
            });
            let guests = [1 + 2 * i, 2 + 2 * i];
            Client {
                conn,
                phases: guests
                    .iter()
                    .flat_map(|&d| [(d, true), (d, false)])
                    .collect(),
                phase: 0,
                tx: None,
                step: 0,
                ops: Vec::new(),
            }
        })
        .collect();
    let (mut commits, mut retries, mut requests) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut busy = true;
    while busy {
        busy = false;
        // One request from every client in turn.
        for c in &mut clients {
            if c.phase >= c.phases.len() {
                continue;
            }
            busy = true;
            requests += 1;
            let Some(tx) = c.tx else {
                let (d, create) = c.phases[c.phase];
                c.ops = guest_ops(d, create);
                c.step = 0;
                let m = b.msg(MsgType::TransactionStart, 0, build_args(&[b""]));
                let r = b.call(c.conn, &m);
                let id = std::str::from_utf8(r.payload.strip_suffix(b"\0").unwrap_or(&r.payload))
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .expect("a transaction id");
                c.tx = Some(id);
                continue;
            };
            if c.step < c.ops.len() {
                let (ty, payload) = c.ops[c.step].clone();
                let m = b.msg(ty, tx, payload);
                let r = b.call(c.conn, &m);
                assert!(
                    !is_error(&r),
                    "{ty:?} in a storm transaction: {:?}",
                    r.payload
                );
                c.step += 1;
                continue;
            }
            let m = b.msg(MsgType::TransactionEnd, tx, build_args(&[b"T"]));
            let r = b.call(c.conn, &m);
            c.tx = None;
            if is_error(&r) {
                assert_eq!(r.payload, b"EAGAIN\0");
                retries += 1;
            } else {
                commits += 1;
                c.phase += 1;
            }
        }
    }
    let took = start.elapsed();
    println!(
        "{:<44}{commits} commits, {retries} EAGAIN retries, {requests} requests, {:.3} s ({:.0} requests/s)",
        format!("storm ({} clients x 2 guests)", s.storm_clients),
        took.as_secs_f64(),
        requests as f64 / took.as_secs_f64()
    );
    assert_eq!(commits, 4 * s.storm_clients as u64);
    // Disjoint guests under shared parents: a commit re-run on the moved-on
    // store gets the same replies, so none is refused (BENCHMARKS.md: "no
    // retry").
    assert_eq!(retries, 0, "EAGAIN in a storm of disjoint transactions");
    // Every guest is gone again: only the shared parents are left.
    let m = b.msg(
        MsgType::Directory,
        0,
        build_args(&[b"/local/domain/0/backend/vbd/51712"]),
    );
    assert_eq!(b.call(LOADER, &m).payload, b"");
    let problems = b.engine.check();
    assert!(problems.is_empty(), "{problems:?}");
}

/// DIRECTORY and DIRECTORY_PART of a directory of 1,000 children whose
/// names make a 2 MB listing (too big for one DIRECTORY: E2BIG), next to
/// the same on a small directory: what a guest can make the daemon do per
/// request.
fn big_directory(s: &Sizes) {
    let mut b = Bench::new();
    let children = if s.ops >= 100_000 { 1000 } else { 100 };
    for i in 0..children {
        let name = format!("{i:04}{}", "n".repeat(1996));
        let reply = b.write(LOADER, 0, &format!("/big/{name}"), b"");
        assert_eq!(reply.payload, b"OK\0");
    }
    for i in 0..10 {
        b.write(LOADER, 0, &format!("/small/k{i}"), b"");
    }
    let n = s.ops / 10;
    let dirs: Vec<Message> = (0..n)
        .map(|_| b.msg(MsgType::Directory, 0, build_args(&[b"/big"])))
        .collect();
    rate(
        &format!("DIRECTORY ({children} children, E2BIG)"),
        n,
        run(&mut b, &dirs),
    );
    let listing = children * 2001;
    let mut rng = Lcg(5);
    let parts: Vec<Message> = (0..n)
        .map(|_| {
            let off = (rng.below(children) * 2001).min(listing).to_string();
            b.msg(
                MsgType::DirectoryPart,
                0,
                build_args(&[b"/big", off.as_bytes()]),
            )
        })
        .collect();
    rate(
        &format!("DIRECTORY_PART ({children} children, 2 KB names)"),
        n,
        run(&mut b, &parts),
    );
    let small: Vec<Message> = (0..n)
        .map(|_| b.msg(MsgType::DirectoryPart, 0, build_args(&[b"/small", b"0"])))
        .collect();
    rate("DIRECTORY_PART (10 children)", n, run(&mut b, &small));
}

/// A guest's WRITE while a dom0 transaction is open, with the write rate
/// limit charging it (at a rate it never reaches) and with it off: what
/// the throttle costs a well-behaved guest.
fn guest_writes(s: &Sizes) {
    for limit in [0u32, 1_000_000_000] {
        let mut config = Config::default();
        config.throttle.write_rate = limit;
        let mut b = Bench {
            engine: Engine::new(config),
            req: 0,
        };
        b.engine.handle(Input::Connect {
            conn: LOADER,
            kind: ConnKind::Socket,
        });
        let m = b.msg(MsgType::Mkdir, 0, build_args(&[b"/local/domain/5"]));
        b.call(LOADER, &m);
        let m = b.msg(
            MsgType::SetPerms,
            0,
            build_args(&[b"/local/domain/5", b"n5"]),
        );
        b.call(LOADER, &m);
        let m = b.msg(MsgType::Introduce, 0, build_args(&[b"5", b"4660", b"1"]));
        b.engine.handle(Input::Request {
            conn: LOADER,
            msg: &m,
        });
        let guest: ConnId = 105;
        for a in b.engine.take_actions() {
            if let Action::Introduce { token, .. } = a {
                b.engine.handle(Input::Introduced {
                    token,
                    result: Ok(guest),
                });
            }
        }
        b.drain(LOADER);
        let m = b.msg(MsgType::TransactionStart, 0, build_args(&[b""]));
        b.call(LOADER, &m);
        let writes: Vec<Message> = (0..s.ops)
            .map(|i| {
                b.msg(
                    MsgType::Write,
                    0,
                    build_path_value(format!("k{}", i % 100).as_bytes(), b"v"),
                )
            })
            .collect();
        let start = Instant::now();
        for (i, m) in writes.iter().enumerate() {
            if i % 64 == 0 {
                b.engine.handle(Input::Time(i as u64));
            }
            b.engine.handle(Input::Request {
                conn: guest,
                msg: m,
            });
            while let Some(out) = b.engine.pop_output(guest) {
                black_box(&out);
            }
        }
        let took = start.elapsed();
        assert!(b.engine.accepts_requests(guest), "never throttled");
        rate(
            &format!(
                "guest WRITE, dom0 tx open, rate limit {}",
                if limit == 0 { "off" } else { "charged" }
            ),
            s.ops,
            took,
        );
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let s = if full { &FULL } else { &TINY };
    if std::env::args().any(|a| a == "directory") {
        // `cargo bench --bench engine -- directory`: that part alone.
        big_directory(s);
        return guest_writes(s);
    }
    println!(
        "engine benchmark ({}): {} nodes ({} domains x {} keys), one thread",
        if full {
            "full"
        } else {
            "tiny sizes: cargo test"
        },
        s.domains * s.keys,
        s.domains,
        s.keys
    );
    let mut b = Bench::new();
    let start = Instant::now();
    b.load(s);
    println!(
        "{:<44}{:.3} s ({} nodes in the store)",
        "load",
        start.elapsed().as_secs_f64(),
        b.engine.store().len()
    );
    basic(&mut b, s);
    watches(s);
    storm(s);
    big_directory(s);
    guest_writes(s);
}
