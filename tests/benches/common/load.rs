//! Loading a store as a toolstack would for the benchmarks of this crate
//! (`live_update`, `live_update_c`, `crash_journal`): the nodes of many
//! domains over pipelined connections, and watches on them.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Instant;

use tests::Daemon;
use xenring::codec::build_path_value;
use xenring::{Client, MsgType, Perm, PermKind};

#[path = "../../../xenstored-lite/benches/common/population.rs"]
mod population;
pub use population::{domain_nodes, COMMON, FIRST_DOMID};

/// Connections loading the store.
pub const LOADERS: u32 = 4;
/// Requests in flight per loading connection.
pub const WINDOW: usize = 128;
/// Writes domains `FIRST_DOMID..FIRST_DOMID + domains` over `LOADERS`
/// connections, `WINDOW` requests in flight on each; returns the nodes
/// written. With `owned`, each home belongs to its domain (dom0 may read
/// it), as a toolstack leaves it; otherwise dom0 owns every node.
pub fn populate(daemon: &Daemon, domains: u32, owned: bool) -> usize {
    let mut dom0 = daemon.client();
    for p in COMMON {
        dom0.write(0, p, b"").unwrap();
    }
    let written = Arc::new(AtomicUsize::new(COMMON.len()));
    let loaders: Vec<_> = (0..LOADERS)
        .map(|l| {
            let mut c = daemon.client();
            let written = Arc::clone(&written);
            std::thread::spawn(move || {
                let mut in_flight = VecDeque::new();
                let mut n = 0;
                let wait = |c: &mut Client<_>, in_flight: &mut VecDeque<u32>| {
                    let id = in_flight.pop_front().unwrap();
                    c.wait_reply(id).unwrap();
                };
                for d in (FIRST_DOMID..FIRST_DOMID + domains).filter(|d| d % LOADERS == l) {
                    for (i, (path, v)) in domain_nodes(d).into_iter().enumerate() {
                        if in_flight.len() == WINDOW {
                            wait(&mut c, &mut in_flight);
                        }
                        let payload = build_path_value(path.as_bytes(), v.as_bytes());
                        in_flight.push_back(c.submit(MsgType::Write, 0, &payload).unwrap());
                        n += 1;
                        if owned && i == 0 {
                            // The home: the domain's own, dom0 may read it
                            // (what its children inherit).
                            let domid = u16::try_from(d).unwrap();
                            let mut payload = xenring::codec::build_args(&[path.as_bytes()]);
                            payload.extend(xenring::perms::format_perm_list(&[
                                Perm::new(PermKind::None, domid),
                                Perm::new(PermKind::Read, 0),
                            ]));
                            if in_flight.len() == WINDOW {
                                wait(&mut c, &mut in_flight);
                            }
                            in_flight.push_back(c.submit(MsgType::SetPerms, 0, &payload).unwrap());
                        }
                    }
                }
                while !in_flight.is_empty() {
                    wait(&mut c, &mut in_flight);
                }
                written.fetch_add(n, SeqCst);
            })
        })
        .collect();
    for l in loaders {
        l.join().unwrap();
    }
    written.load(SeqCst)
}

/// The watches connection `i` holds (absolute paths for sockets).
pub fn watch_paths(i: usize, n: usize, domains: u32) -> Vec<String> {
    (0..n)
        .map(|k| {
            let d = FIRST_DOMID + u32::try_from((i * n + k) % domains as usize).unwrap();
            match k % 5 {
                0 => format!("/local/domain/{d}/device/vbd/51712/state"),
                1 => format!("/local/domain/{d}/device/vif/0/state"),
                2 => format!("/local/domain/0/backend/vbd/{d}/51712/state"),
                3 => format!("/local/domain/{d}/control/shutdown"),
                _ => format!("/local/domain/0/backend/vif/{d}/0"),
            }
        })
        .collect()
}

/// Registers `paths` as watches on `c`, pipelined.
pub fn add_watches<T: std::io::Read + std::io::Write>(
    c: &mut Client<T>,
    paths: &[String],
    tag: usize,
) {
    let ids: Vec<u32> = paths
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let token = format!("w{tag}-{k}");
            let payload = xenring::codec::build_args(&[p.as_bytes(), token.as_bytes()]);
            c.submit(MsgType::Watch, 0, &payload).unwrap()
        })
        .collect();
    for id in ids {
        c.wait_reply(id).unwrap();
    }
}

/// Opens `n` socket connections holding `watches` watches each on the
/// nodes of the `domains` loaded ([`watch_paths`]), tokens tagged from
/// `first_tag` on: idle toolstack processes.
pub fn idle_sockets(
    daemon: &Daemon,
    n: usize,
    watches: usize,
    domains: u32,
    first_tag: usize,
) -> Vec<Client<UnixStream>> {
    (0..n)
        .map(|i| {
            let mut c = daemon.client();
            add_watches(&mut c, &watch_paths(i, watches, domains), first_tag + i);
            c
        })
        .collect()
}

/// Lets this process (and the daemons it starts) open as many files as
/// the hard limit allows: 1,000 connections pass the usual 1,024.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Loads about `nodes` nodes ([`populate`], whole domains) and says how
/// long it took; returns the number of domains.
pub fn load_store(daemon: &Daemon, nodes: usize, owned: bool) -> u32 {
    let per_domain = domain_nodes(FIRST_DOMID).len();
    let domains = u32::try_from(
        nodes
            .saturating_sub(COMMON.len())
            .div_ceil(per_domain)
            .max(1),
    )
    .unwrap();
    let t = Instant::now();
    let written = populate(daemon, domains, owned);
    println!(
        "  loaded {written} nodes ({domains} domains x {per_domain}) in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    domains
}
