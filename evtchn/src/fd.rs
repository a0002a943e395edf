//! Close-on-exec control, for handles that must survive `exec()` (live update).

use std::io;
use std::os::fd::BorrowedFd;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Sets (`true`) or clears (`false`) `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: BorrowedFd<'_>, cloexec: bool) -> io::Result<()> {
    let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
    let flags = if cloexec {
        flags | FdFlag::FD_CLOEXEC
    } else {
        flags - FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Whether `fd` has `FD_CLOEXEC` set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
    Ok(flags.contains(FdFlag::FD_CLOEXEC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::process::Command;

    const CHILD_FD_VAR: &str = "EVTCHN_TEST_INHERITED_FD";
    const CHILD_EXPECT_VAR: &str = "EVTCHN_TEST_EXPECT_OPEN";

    /// Re-runs this test binary with only `test_name` selected and the fd
    /// number in the environment; returns whether the child passed.
    fn exec_self(test_name: &str, fd: RawFd, expect_open: bool) -> bool {
        let exe = std::env::current_exe().expect("current_exe");
        let status = Command::new(exe)
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_FD_VAR, fd.to_string())
            .env(CHILD_EXPECT_VAR, if expect_open { "1" } else { "0" })
            .status()
            .expect("spawn self");
        status.success()
    }

    /// The child side; does nothing when run as an ordinary test.
    #[test]
    fn test_exec_child_inherited_fd_reads_payload() {
        let Ok(raw) = std::env::var(CHILD_FD_VAR) else {
            return;
        };
        let fd: RawFd = raw.parse().expect("fd number");
        let expect_open = std::env::var(CHILD_EXPECT_VAR).as_deref() == Ok("1");
        // SAFETY: F_GETFD on a number we do not own only asks whether it is
        // open; nothing is closed or adopted.
        let open = unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } >= 0;
        assert_eq!(open, expect_open, "fd {fd} open in child");
        if open {
            // SAFETY: the parent handed this process the fd number through
            // exec; nothing else in this (test-child) process owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut payload = String::new();
            std::fs::File::from(owned)
                .read_to_string(&mut payload)
                .expect("read inherited pipe");
            assert_eq!(payload, "carried across exec");
        }
    }

    fn pipe_with_payload() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut w = std::fs::File::from(w);
        w.write_all(b"carried across exec").expect("write pipe");
        let w = OwnedFd::from(w);
        (r, w)
    }

    #[test]
    fn test_set_cloexec_cleared_fd_survives_exec() {
        let (r, w) = pipe_with_payload();
        drop(w);
        set_cloexec(r.as_fd(), false).expect("clear cloexec");
        assert!(!is_cloexec(r.as_fd()).expect("query"));
        assert!(exec_self(
            "fd::tests::test_exec_child_inherited_fd_reads_payload",
            r.as_raw_fd(),
            true
        ));
    }

    #[test]
    fn test_set_cloexec_twice_stays_set_and_cleared() {
        let (r, _w) = pipe_with_payload();
        for _ in 0..2 {
            set_cloexec(r.as_fd(), true).expect("set cloexec");
            assert!(
                is_cloexec(r.as_fd()).expect("query"),
                "setting it again keeps it"
            );
        }
        for _ in 0..2 {
            set_cloexec(r.as_fd(), false).expect("clear cloexec");
            assert!(
                !is_cloexec(r.as_fd()).expect("query"),
                "clearing it again keeps it clear"
            );
        }
    }

    #[test]
    fn test_set_cloexec_set_fd_closed_by_exec() {
        let (r, w) = pipe_with_payload();
        drop(w);
        set_cloexec(r.as_fd(), false).expect("clear cloexec");
        set_cloexec(r.as_fd(), true).expect("set cloexec");
        assert!(is_cloexec(r.as_fd()).expect("query"));
        assert!(exec_self(
            "fd::tests::test_exec_child_inherited_fd_reads_payload",
            r.as_raw_fd(),
            false
        ));
    }
}
