//! The guardian of a hand-over to C xenstored 4.17: C takes the state only
//! when it has read all of `state_dump` (it unlinks the file then), and
//! every failure of C before that is fatal. Just before the exec, the old
//! process starts this binary again as `xenstored-lite
//! --live-update-guardian ...` with the handed-over descriptors (the
//! listening socket, the event-channel handle with the rings' ports bound,
//! the client sockets: the same open files at the numbers the stream
//! names) and a pidfd of itself. The guardian goes into the background
//! (its starter exits, so the old process reaps it before it execs C) and
//! watches:
//!
//! * `state_dump` gone: C took the state; the guardian exits at once and
//!   its duplicates close;
//! * C's process ended with `state_dump` still there: C died before it
//!   read the state; the guardian logs why and execs xenstored-lite with
//!   `-U` on that same state and run directory, in its own process (the
//!   daemon's pid changes to the guardian's; the pid file is written
//!   again), so every node, watch, connection and ring comes back and the
//!   guests see nothing but a pause;
//! * neither in [`LIMIT`]: it logs that and exits, leaving C alone.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::unistd::ForkResult;

use crate::shell::os::{self, ForkError};

/// The first argument that makes the binary a guardian.
pub const FLAG: &str = "--live-update-guardian";

/// How long a guardian waits for C to take the state or die.
pub const LIMIT: Duration = Duration::from_secs(600);

/// How often it looks at the state file while C lives.
const LOOK_EVERY: u16 = 50; // ms

/// What a guardian watches, and how it brings xenstored-lite back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The pidfd of C's process (the old daemon's, exec'd into C).
    pub pidfd: RawFd,
    /// That process's id.
    pub c_pid: i32,
    /// The state file C must read.
    pub state: PathBuf,
    /// How long to wait at most.
    pub limit: Duration,
    /// xenstored-lite's `argv` for the roll-back (`argv[0]` first; `-U`
    /// among them).
    pub restore: Vec<OsString>,
}

/// Why the guardian cannot watch or cannot bring xenstored-lite back.
#[derive(Debug, thiserror::Error)]
pub enum GuardianError {
    /// Its command line is not the one the daemon gives it.
    #[error("usage: {FLAG} PIDFD PID STATE SECONDS -- ARGV0 [ARGS...]")]
    Usage,
    /// The pidfd it names is not open.
    #[error("descriptor {0} (the pidfd of C xenstored) is not open")]
    NoPidfd(RawFd),
    /// It cannot go into the background.
    #[error("cannot fork: {0}")]
    Fork(#[source] ForkError),
    /// poll(2) on the pidfd failed.
    #[error("poll on the pidfd: {0}")]
    Poll(#[source] nix::Error),
    /// An argument of the roll-back holds a NUL byte.
    #[error("an argument of xenstored-lite contains a NUL byte")]
    Nul,
    /// The roll-back's exec failed.
    #[error("cannot exec xenstored-lite again: {0}")]
    Exec(#[source] nix::Error),
}

impl Watch {
    /// The guardian's arguments after its `argv[0]` ([`FLAG`] first).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            FLAG.into(),
            self.pidfd.to_string().into(),
            self.c_pid.to_string().into(),
            self.state.clone().into_os_string(),
            self.limit.as_secs().to_string().into(),
            "--".into(),
        ];
        args.extend(self.restore.iter().cloned());
        args
    }

    /// Parses the arguments after [`FLAG`].
    pub fn parse(args: &[OsString]) -> Result<Self, GuardianError> {
        let number = |a: &OsString| a.to_str().and_then(|s| s.parse::<i64>().ok());
        match args {
            [fd, pid, state, secs, dashdash, restore @ ..]
                if dashdash == "--" && !restore.is_empty() =>
            {
                let pidfd = number(fd).and_then(|n| RawFd::try_from(n).ok());
                let c_pid = number(pid).and_then(|n| i32::try_from(n).ok());
                let secs = number(secs).and_then(|n| u64::try_from(n).ok());
                match (pidfd, c_pid, secs) {
                    (Some(pidfd), Some(c_pid), Some(secs)) if pidfd >= 0 && c_pid > 0 => Ok(Self {
                        pidfd,
                        c_pid,
                        state: PathBuf::from(state),
                        limit: Duration::from_secs(secs),
                        restore: restore.to_vec(),
                    }),
                    _ => Err(GuardianError::Usage),
                }
            }
            _ => Err(GuardianError::Usage),
        }
    }
}

/// What the guardian does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Look again.
    Wait,
    /// The state file is gone: C took it (or the old process withdrew
    /// it after a failed exec); exit.
    Taken,
    /// C ended with the state unread: bring xenstored-lite back.
    RollBack,
    /// Neither happened in time: exit and leave C alone.
    GaveUp,
}

/// The guardian's rule. `c_ended` must be seen before `state_present` is
/// looked at: a C that read the state and then died has unlinked it.
pub fn decide(c_ended: bool, state_present: bool, elapsed: Duration, limit: Duration) -> Verdict {
    if !state_present {
        Verdict::Taken
    } else if c_ended {
        Verdict::RollBack
    } else if elapsed >= limit {
        Verdict::GaveUp
    } else {
        Verdict::Wait
    }
}

/// A wait status (`exit_code` of `/proc/PID/stat`) in words.
pub fn describe_wait_status(code: i32) -> String {
    let signal = code & 0x7f;
    if signal == 0 {
        return format!("exit status {}", (code >> 8) & 0xff);
    }
    let name = nix::sys::signal::Signal::try_from(signal).map_or("unknown", |s| s.as_str());
    let core = if code & 0x80 != 0 {
        ", core dumped"
    } else {
        ""
    };
    format!("killed by signal {signal} ({name}{core})")
}

/// How the process of `stat` (the text of `/proc/PID/stat`) ended, if it
/// is a zombie that says so.
pub fn how_it_ended(stat: &str) -> Option<String> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command come the fields from 3 (state) on; exit_code is
    // field 52.
    if fields.first() != Some(&"Z") {
        return None;
    }
    let code = fields.get(49)?.parse::<i32>().ok()?;
    Some(describe_wait_status(code))
}

/// Whether the process of `pidfd` ended within `ms` milliseconds.
fn ended_within(pidfd: &OwnedFd, ms: u16) -> Result<bool, GuardianError> {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, ms) {
        Ok(0) | Err(nix::Error::EINTR) => Ok(false),
        Ok(_) => Ok(fds[0].any().unwrap_or(false)),
        Err(e) => Err(GuardianError::Poll(e)),
    }
}

fn to_cstrings(args: impl IntoIterator<Item = OsString>) -> Result<Vec<CString>, GuardianError> {
    args.into_iter()
        .map(|a| CString::new(a.into_vec()).map_err(|_| GuardianError::Nul))
        .collect()
}

/// The guardian (`args` after [`FLAG`]): returns when it has nothing to
/// do any more, with an error if it could not do it; on a roll-back it
/// becomes xenstored-lite and does not return.
pub fn main(args: &[OsString]) -> Result<(), GuardianError> {
    let watch = Watch::parse(args)?;
    let pidfd = os::adopt_pidfd(watch.pidfd).ok_or(GuardianError::NoPidfd(watch.pidfd))?;
    // xenstored-lite, if it comes back, must not inherit it.
    let _ = os::set_cloexec(pidfd.as_raw_fd(), true);
    let argv = to_cstrings(watch.restore.iter().cloned())?;
    let env = to_cstrings(std::env::vars_os().map(|(k, v)| {
        let mut kv = k;
        kv.push("=");
        kv.push(v);
        kv
    }))?;
    // Into the background: the old daemon waits for this process to end
    // before it execs C.
    match os::fork_single_threaded().map_err(GuardianError::Fork)? {
        ForkResult::Parent { .. } => return Ok(()),
        ForkResult::Child => {}
    }
    let me = std::process::id();
    tracing::info!(
        "live-update: guardian (pid {me}) keeps the handed-over descriptors until C xenstored \
         (pid {}) has read {}",
        watch.c_pid,
        watch.state.display()
    );
    match watch_until_decided(&pidfd, &watch.state, watch.limit)? {
        Verdict::Wait => Ok(()), // not returned
        Verdict::Taken => {
            tracing::debug!(
                "live-update: {} is gone: the hand-over is over; guardian exits",
                watch.state.display()
            );
            Ok(())
        }
        Verdict::GaveUp => {
            tracing::warn!(
                "live-update: guardian: C xenstored (pid {}) has neither read {} nor \
                     ended in {} s; leaving it alone",
                watch.c_pid,
                watch.state.display(),
                watch.limit.as_secs()
            );
            Ok(())
        }
        Verdict::RollBack => Err(roll_back(&watch, &argv, &env)),
    }
}

/// Looks at the process of `pidfd` and at `state` until [`decide`] says
/// something else than [`Verdict::Wait`].
fn watch_until_decided(
    pidfd: &OwnedFd,
    state: &Path,
    limit: Duration,
) -> Result<Verdict, GuardianError> {
    let t0 = Instant::now();
    let mut ended = false;
    loop {
        if !ended {
            ended = ended_within(pidfd, LOOK_EVERY)?;
        }
        let present = state.symlink_metadata().is_ok();
        match decide(ended, present, t0.elapsed(), limit) {
            Verdict::Wait => {}
            verdict => return Ok(verdict),
        }
    }
}

/// Brings xenstored-lite back in this process; returns only if the exec
/// failed.
fn roll_back(watch: &Watch, argv: &[CString], env: &[CString]) -> GuardianError {
    let how = std::fs::read_to_string(format!("/proc/{}/stat", watch.c_pid))
        .ok()
        .as_deref()
        .and_then(how_it_ended)
        .unwrap_or_else(|| "its exit status was not seen".to_owned());
    tracing::warn!(
        "live-update: C xenstored (pid {}) died before it read the state ({how}); rolling back \
         to xenstored-lite from the same state {}: the daemon's pid changes from {} to {}",
        watch.c_pid,
        watch.state.display(),
        watch.c_pid,
        std::process::id()
    );
    match nix::unistd::execve(c"/proc/self/exe", argv, env) {
        Err(e) => GuardianError::Exec(e),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            pidfd: 7,
            c_pid: 4242,
            state: PathBuf::from("/run/xenstored/state_dump"),
            limit: Duration::from_secs(600),
            restore: vec!["xenstored-lite".into(), "-N".into(), "-U".into()],
        }
    }

    #[test]
    fn test_watch_round_trips_through_its_arguments() {
        let w = watch();
        let args = w.to_args();
        assert_eq!(args[0], FLAG);
        assert_eq!(
            args[1..],
            [
                "7",
                "4242",
                "/run/xenstored/state_dump",
                "600",
                "--",
                "xenstored-lite",
                "-N",
                "-U"
            ]
            .map(OsString::from)
        );
        assert_eq!(Watch::parse(&args[1..]).unwrap(), w);
    }

    #[test]
    fn test_watch_refuses_a_malformed_command_line() {
        let good = watch().to_args();
        let with = |i: usize, v: &str| {
            let mut a = good[1..].to_vec();
            a[i] = v.into();
            a
        };
        for bad in [
            with(0, "x"),
            with(0, "-1"),
            with(1, "0"),
            with(1, "-5"),
            with(1, "99999999999"),
            with(3, "-1"),
            with(3, "ten"),
            with(4, "-x"),
            good[1..6].to_vec(),
            good[1..4].to_vec(),
        ] {
            assert!(
                matches!(Watch::parse(&bad), Err(GuardianError::Usage)),
                "{bad:?}"
            );
        }
        // Zero is a descriptor, and a zero limit is allowed.
        let zero = Watch::parse(&with(0, "0")).unwrap();
        assert_eq!(zero.pidfd, 0);
        assert_eq!(Watch::parse(&with(3, "0")).unwrap().limit, Duration::ZERO);
    }

    #[test]
    fn test_decide() {
        let limit = Duration::from_secs(10);
        let early = Duration::from_secs(9);
        let late = Duration::from_secs(10);
        // The state gone: C took it, dead or alive, early or late.
        for (ended, t) in [(false, early), (true, early), (false, late), (true, late)] {
            assert_eq!(decide(ended, false, t, limit), Verdict::Taken);
        }
        // C ended with the state there: roll back, even late.
        assert_eq!(decide(true, true, early, limit), Verdict::RollBack);
        assert_eq!(decide(true, true, late, limit), Verdict::RollBack);
        // C alive with the state there: wait, until the limit.
        assert_eq!(decide(false, true, early, limit), Verdict::Wait);
        assert_eq!(decide(false, true, late, limit), Verdict::GaveUp);
    }

    #[test]
    fn test_describe_wait_status() {
        assert_eq!(describe_wait_status(70 << 8), "exit status 70");
        assert_eq!(describe_wait_status(0), "exit status 0");
        assert_eq!(describe_wait_status(9), "killed by signal 9 (SIGKILL)");
        assert_eq!(
            describe_wait_status(11 | 0x80),
            "killed by signal 11 (SIGSEGV, core dumped)"
        );
        assert_eq!(describe_wait_status(0x7e), "killed by signal 126 (unknown)");
    }

    /// A child that runs until killed, and a pidfd for it.
    fn child() -> (std::process::Child, OwnedFd) {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pidfd = os::pidfd_of(child.id()).unwrap();
        (child, pidfd)
    }

    #[test]
    fn test_ended_within_sees_the_process_end() {
        let (mut c, pidfd) = child();
        assert!(!ended_within(&pidfd, 0).unwrap());
        c.kill().unwrap();
        // Ended, not yet reaped: the pidfd is readable.
        assert!(ended_within(&pidfd, u16::MAX).unwrap());
        c.wait().unwrap();
        assert!(ended_within(&pidfd, 0).unwrap());
    }

    #[test]
    fn test_watch_until_decided() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state_dump");
        let (mut c, pidfd) = child();
        // Alive, no state: taken.
        assert_eq!(
            watch_until_decided(&pidfd, &state, LIMIT).unwrap(),
            Verdict::Taken
        );
        std::fs::write(&state, b"x").unwrap();
        // Alive, state there, no time left: gave up.
        assert_eq!(
            watch_until_decided(&pidfd, &state, Duration::ZERO).unwrap(),
            Verdict::GaveUp
        );
        // Ended with the state there: roll back (also with no time left).
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(
            watch_until_decided(&pidfd, &state, Duration::ZERO).unwrap(),
            Verdict::RollBack
        );
        assert_eq!(
            watch_until_decided(&pidfd, &state, LIMIT).unwrap(),
            Verdict::RollBack
        );
    }

    #[test]
    fn test_main_refuses_a_bad_command_line_or_a_closed_pidfd() {
        assert!(matches!(main(&[]), Err(GuardianError::Usage)));
        // Above any descriptor this process can have open.
        let mut w = watch();
        w.pidfd = i32::MAX;
        let args = w.to_args();
        assert!(matches!(
            main(&args[1..]),
            Err(GuardianError::NoPidfd(i32::MAX))
        ));
    }

    #[test]
    fn test_to_cstrings_refuses_a_nul() {
        assert_eq!(
            to_cstrings([OsString::from("a=b")]).unwrap(),
            [CString::new("a=b").unwrap()]
        );
        assert!(matches!(
            to_cstrings([OsString::from("a"), OsString::from("a\0b")]),
            Err(GuardianError::Nul)
        ));
    }

    fn stat(state: &str, exit_code: i32) -> String {
        // 52 fields; the command holds a space and a parenthesis.
        let mut fields: Vec<String> = (4..=51).map(|n| n.to_string()).collect();
        fields.push(exit_code.to_string());
        format!("4242 (xen stored)) {state} {}\n", fields.join(" "))
    }

    #[test]
    fn test_how_it_ended() {
        assert_eq!(
            how_it_ended(&stat("Z", 70 << 8)).as_deref(),
            Some("exit status 70")
        );
        assert_eq!(
            how_it_ended(&stat("Z", 9)).as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
        // Not a zombie (running, or another process has the pid).
        assert_eq!(how_it_ended(&stat("S", 0)), None);
        assert_eq!(how_it_ended("4242 (x) Z 1 2"), None);
        assert_eq!(how_it_ended("garbage"), None);
    }
}
