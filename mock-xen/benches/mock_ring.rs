//! Benchmark (prints figures; not a timed test): round trip of a small
//! message over a mock-xen ring with event-channel notifications between two
//! processes, next to a plain eventfd ping-pong between two processes.
//!
//! `cargo bench -p mock-xen` (set `MOCK_RING_ROUNDS` to change the count).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_xen::{Connector, Guest, ServerThread, Toolstack};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::unistd::Pid;

fn rounds() -> u64 {
    let default = if std::env::args().any(|a| a == "--bench") {
        50_000
    } else {
        200
    };
    std::env::var("MOCK_RING_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn peer() -> &'static str {
    env!("CARGO_BIN_EXE_mock-xen-peer")
}

fn mock_ring_rtt(n: u64) -> Duration {
    let dir = std::env::temp_dir().join(format!("mock-ring-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let server = ServerThread::start(dir.join("hv.sock")).expect("mock-xen");
    let connector = Connector::remote(server.path());
    let ts = Toolstack::open(&connector).expect("toolstack");
    let record = ts.create_domain().expect("domain");
    let mut guest = Guest::attach(&connector, &record).expect("guest");
    let mut child = Command::new(peer())
        .args([
            "echo-dom0",
            &server.path().to_string_lossy(),
            &record.info.domid.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.starts_with("ready"), "{line}");
    let msg = [b'm'; 32];
    let mut back = [0u8; 32];
    for _ in 0..100 {
        guest.write_all(&msg).expect("write");
        guest.read_exact(&mut back).expect("read");
    }
    let start = Instant::now();
    for _ in 0..n {
        guest.write_all(&msg).expect("write");
        guest.read_exact(&mut back).expect("read");
    }
    let elapsed = start.elapsed();
    guest.write_all(b"quit").expect("quit");
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    elapsed / u32::try_from(n).unwrap_or(u32::MAX)
}

fn eventfd_rtt(n: u64) -> Duration {
    let ping = EventFd::from_value_and_flags(0, EfdFlags::empty()).expect("eventfd");
    let pong = EventFd::from_value_and_flags(0, EfdFlags::empty()).expect("eventfd");
    let warm = 100;
    let mut child = Command::new(peer())
        .args([
            "eventfd-pong",
            &ping.as_raw_fd().to_string(),
            &pong.as_raw_fd().to_string(),
            &(n + warm).to_string(),
        ])
        .spawn()
        .expect("peer");
    for _ in 0..warm {
        ping.write(1).expect("ping");
        pong.read().expect("pong");
    }
    let start = Instant::now();
    for _ in 0..n {
        ping.write(1).expect("ping");
        pong.read().expect("pong");
    }
    let elapsed = start.elapsed();
    let _ = child.wait();
    elapsed / u32::try_from(n).unwrap_or(u32::MAX)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Measures both in alternating blocks and prints medians and their ratio.
fn compare(label: &str, n: u64) {
    let blocks = 7;
    let per_block = (n / blocks).max(1);
    let (mut ring, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..blocks {
        ring.push(mock_ring_rtt(per_block));
        plain.push(eventfd_rtt(per_block));
    }
    let (ring, plain) = (median(ring), median(plain));
    println!("{label}:");
    println!(
        "  mock-xen ring round trip (32-byte message, notify both ways, 2 processes): {:>8.2} us",
        ring.as_secs_f64() * 1e6
    );
    println!(
        "  plain eventfd ping-pong (2 processes):                                 {:>8.2} us",
        plain.as_secs_f64() * 1e6
    );
    println!(
        "  ratio: {:.2}x  (medians of {blocks} alternating blocks of {per_block} round trips)",
        ring.as_secs_f64() / plain.as_secs_f64()
    );
}

fn set_cpus(cpus: &[usize]) {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        let _ = set.set(cpu);
    }
    if let Err(e) = sched_setaffinity(Pid::from_raw(0), &set) {
        eprintln!("cannot set CPU affinity: {e}");
    }
}

fn main() {
    // The two are measured in alternating blocks and compared by their
    // medians: this machine's wakeup latency drifts by tens of percent over
    // a minute, which would otherwise land on one side of the ratio.
    //
    // Where the scheduler puts the two processes dominates everything else
    // here: a wakeup across CPUs costs ~20-40 us in this VM, on one CPU ~2 us,
    // and it places the eventfd pair and the ring pair differently. So the
    // comparison is made twice: both processes pinned to one CPU (the same
    // placement for both, which isolates the cost of the mock ring and its
    // event words), and unpinned (what a user gets by default).
    let n = rounds();
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    set_cpus(&[0]);
    compare("both processes on CPU 0", n);
    set_cpus(&(0..cpus).collect::<Vec<_>>());
    compare("unpinned (scheduler's choice)", n);
    let _ = std::io::stdout().flush();
}
