//! Helpers the daemon and replay benchmarks share (`mod common;`): whether
//! this is a real `--bench` run, CPU pinning, the descriptor limit.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Whether this is a quick run (no `--bench`: `cargo test --all-targets`
/// runs the benchmarks small).
pub fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// Pins the calling thread (and what it spawns after) to `cpus`.
pub fn set_cpus(cpus: &[usize]) {
    let mut set = CpuSet::new();
    for &c in cpus {
        let _ = set.set(c);
    }
    let _ = sched_setaffinity(Pid::from_raw(0), &set);
}

/// Raises the open-descriptor limit to its hard limit (many connections).
pub fn raise_fd_limit() {
    if let Ok((_, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
}
