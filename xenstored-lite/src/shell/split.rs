//! Splitting the daemon in two for a pre-copy live update
//! (`live_update::precopy`): this process, its pid kept, execs the new
//! binary, while a *continuation* — a new process that shares this one's
//! memory until the exec and owns it alone after — goes on serving with
//! everything exactly as it was: the same heap, the same descriptors (a
//! copy of the table), the same ring mappings. That last point is why
//! this is not `fork()`: Linux gives a child no copy of gntdev or privcmd
//! mappings (`VM_DONTCOPY`), so a forked child would have to map every
//! guest's ring again; the continuation keeps the very address space, and
//! the kernel hands it over when this process's exec replaces its own.
//!
//! This is `vfork()` with the roles swapped, and the same rules hold in
//! reverse:
//!
//! * Between `clone(CLONE_VM)` and the exec, both processes run in one
//!   address space. The continuation does nothing but wait, blocked in
//!   `read()` on a close-on-exec pipe, with every signal blocked; this
//!   process does nothing but system calls on what was built before the
//!   split (no allocation, no lock, no Rust state touched).
//! * The pipe's write end closes when the exec succeeds: the continuation
//!   reads end-of-file and from then on owns the memory alone. If the
//!   exec fails, this process writes one octet, the continuation `_exit`s
//!   without having touched anything, this process reaps it and carries
//!   on as if nothing had happened.
//! * The continuation runs on a stack of its own (mapped here) and never
//!   returns: it ends with `_exit`, so no destructor of the old process
//!   runs twice (the new binary owns the socket path, the journal and the
//!   pid file).
//! * It shares this thread's thread-local storage (no `CLONE_SETTLS`),
//!   which is sound for the same reason: until the exec only one of the
//!   two touches it, and after it only the continuation exists.
//! * Only a process with one thread may split (checked): the
//!   continuation has this thread alone.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// The size of the continuation's stack.
const STACK_SIZE: usize = 16 << 20;

/// `CLOSE_RANGE_CLOEXEC` (`linux/close_range.h`): mark, do not close.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Why the split did not happen, or the exec failed (the process is then
/// as it was, the continuation gone).
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Other threads exist: the continuation would not have them.
    #[error("other threads run ({0} threads)")]
    Threads(usize),
    /// Whether other threads exist cannot be told.
    #[error("cannot count this process's threads (/proc/self/task): {0}")]
    ThreadCount(#[source] io::Error),
    /// A system call setting up the split failed.
    #[error("{op}: {source}")]
    Setup {
        /// The call.
        op: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The exec of the new binary failed; the continuation was stopped
    /// before it served.
    #[error("exec: {0}")]
    Exec(#[source] io::Error),
}

/// The program the process execs, made ready before the split (nothing is
/// allocated after it): `path`, `argv` and the descriptors it inherits
/// (close-on-exec cleared just before the exec; every other descriptor
/// above 2 is marked close-on-exec).
#[derive(Debug)]
pub struct ExecPlan {
    path: CString,
    argv: Vec<CString>,
    keep: Vec<RawFd>,
}

impl ExecPlan {
    /// `path` run with `argv` (`argv[0]` first), inheriting `keep`.
    pub fn new(path: CString, argv: Vec<CString>, keep: Vec<RawFd>) -> Self {
        Self { path, argv, keep }
    }
}

/// What the continuation starts with (on the splitting thread's stack,
/// which outlives the split in the continuation's copy of the memory).
struct Trampoline<T> {
    ready: RawFd,
    ready_w: RawFd,
    mask: libc::sigset_t,
    serve: fn(&mut T) -> i32,
    state: *mut T,
}

/// The continuation's first function: waits for the exec's outcome, then
/// serves, then ends.
extern "C" fn continuation<T>(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Trampoline` of `exec_leaving_continuation`,
    // alive in this memory for good (the splitting process never returns
    // from that frame while we run: it execs, or waits for us to end); it
    // is only read.
    let t = unsafe { &*arg.cast::<Trampoline<T>>() };
    let (ready, serve) = (t.ready, t.serve);
    let mut octet = 0u8;
    // SAFETY: plain system calls on descriptors of our own table (a copy
    // of the parent's): our copy of the pipe's write end is closed so that
    // the exec's close-on-exec of the parent's is the last; the read
    // blocks (every signal is blocked, so it is not interrupted) until
    // that happens (0) or the parent writes its octet (1).
    let n = unsafe {
        libc::close(t.ready_w);
        libc::read(ready, (&raw mut octet).cast(), 1)
    };
    if n != 0 {
        // The exec failed: the parent carries on alone.
        // SAFETY: ends this process at once, touching nothing shared.
        unsafe { libc::_exit(0) }
    }
    // The parent has exec'd: this memory is ours alone from here on.
    // SAFETY: our own descriptor and signal mask.
    unsafe {
        libc::close(ready);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const t.mask, std::ptr::null_mut());
    }
    // SAFETY: `state` is the `&mut T` given to
    // `exec_leaving_continuation`, whose borrower (the splitting thread)
    // has exec'd away: this is now the only reference to it.
    let code = serve(unsafe { &mut *t.state });
    // SAFETY: ends the continuation without running the old process's
    // destructors or exit handlers (the new binary owns what they undo).
    unsafe { libc::_exit(code) }
}

fn setup(op: &'static str) -> impl FnOnce(nix::Error) -> SplitError {
    move |e| SplitError::Setup {
        op,
        source: io::Error::from_raw_os_error(e as i32),
    }
}

/// Execs `plan` in this process, leaving a continuation that runs
/// `serve(state)` in this process's memory as it was (module doc) and
/// exits with what it returns. Returns only if the split or the exec
/// failed, with why; the continuation then never ran `serve` and is
/// reaped, and this process is as it was.
pub fn exec_leaving_continuation<T>(
    plan: &ExecPlan,
    serve: fn(&mut T) -> i32,
    state: &mut T,
) -> SplitError {
    match std::fs::read_dir("/proc/self/task").map(Iterator::count) {
        Ok(1) => {}
        Ok(n) => return SplitError::Threads(n),
        Err(e) => return SplitError::ThreadCount(e),
    }
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (ready, ready_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return setup("pipe2")(e),
    };
    let stack = match Stack::map() {
        Ok(s) => s,
        Err(source) => return SplitError::Setup { op: "mmap", source },
    };
    let all = nix::sys::signal::SigSet::all();
    let mut old = nix::sys::signal::SigSet::empty();
    if let Err(e) = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&all),
        Some(&mut old),
    ) {
        return setup("pthread_sigmask")(e);
    }
    let trampoline = Trampoline {
        ready: ready.as_raw_fd(),
        ready_w: ready_w.as_raw_fd(),
        mask: *old.as_ref(),
        serve,
        state: std::ptr::from_mut(state),
    };
    // SAFETY: `continuation` runs on `stack` (mapped above, never unmapped
    // while it may run) with `trampoline` (alive in this frame, which this
    // thread leaves only by exec or after reaping the child). CLONE_VM
    // without CLONE_THREAD: a process of its own sharing this memory; the
    // rules of the module doc keep the two from touching it at once.
    let pid = unsafe {
        libc::clone(
            continuation::<T>,
            stack.top(),
            libc::CLONE_VM | libc::SIGCHLD,
            (&raw const trampoline).cast_mut().cast(),
        )
    };
    if pid == -1 {
        let source = io::Error::last_os_error();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
        return SplitError::Setup {
            op: "clone",
            source,
        };
    }
    // Until the exec: system calls only, on what exists already.
    // SAFETY: close_range and fcntl on descriptor numbers (marking, not
    // closing: nothing the continuation uses is closed, its table is its
    // own); the old signal mask restored (a signal now only sets the
    // handler's atomic flag); execv on NUL-terminated strings of `plan`
    // and the null-terminated `argv` built before the split.
    let errno = unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
        for &fd in &plan.keep {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ref(), std::ptr::null_mut());
        libc::execv(plan.path.as_ptr(), argv.as_ptr());
        *libc::__errno_location()
    };
    // The exec failed. Tell the continuation, which ends untouched.
    let octet = 1u8;
    // SAFETY: write of one octet from this frame, and waitpid, on our own
    // pipe and child.
    unsafe {
        libc::write(ready_w.as_raw_fd(), (&raw const octet).cast(), 1);
        let mut status = 0;
        while libc::waitpid(pid, &raw mut status, 0) == -1
            && *libc::__errno_location() == libc::EINTR
        {}
    }
    // Alone again: the kept descriptors back to close-on-exec.
    for &fd in &plan.keep {
        let _ = super::os::set_cloexec(fd, true);
    }
    drop(stack);
    SplitError::Exec(io::Error::from_raw_os_error(errno))
}

/// The continuation's stack: an anonymous mapping with a guard page.
struct Stack {
    base: *mut libc::c_void,
}

impl Stack {
    fn map() -> io::Result<Self> {
        // SAFETY: a fresh anonymous private mapping; nothing else refers
        // to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lowest page of the mapping just made: a guard.
        unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) };
        Ok(Self { base })
    }

    /// The top (stacks grow down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(STACK_SIZE)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, used by no one any more (the
        // continuation that ran on it has been reaped).
        unsafe { libc::munmap(self.base, STACK_SIZE) };
    }
}

/// A memory file (`memfd_create`, close-on-exec) holding `bytes`, read
/// from its start.
pub fn memfd_with(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)?;
    Ok(OwnedFd::from(file))
}

/// Takes ownership of the continuation's copies of descriptors the
/// splitting process kept for the new binary (to close them): the
/// continuation's table is a copy, and the objects that owned them live in
/// the splitting thread's frames, which the continuation never returns to.
pub fn own_copies(fds: &[RawFd]) -> Vec<OwnedFd> {
    fds.iter()
        .filter(|&&fd| super::os::fd_is_open(fd))
        // SAFETY: open in our table, and no object of ours will ever close
        // them (above), so each is owned once.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Takes ownership of descriptors received in `SCM_RIGHTS`.
pub fn own_received(fds: &[RawFd]) -> Vec<OwnedFd> {
    fds.iter()
        // SAFETY: the kernel installed these descriptors in our table for
        // this message; nothing else knows them, so each is owned once.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &mut u32) -> i32 {
        unreachable!("the continuation must not run")
    }

    #[test]
    fn test_a_process_with_threads_does_not_split() {
        // The test harness runs this on a thread of its own: two at least.
        let plan = ExecPlan::new(
            CString::new("/bin/true").unwrap(),
            vec![CString::new("true").unwrap()],
            Vec::new(),
        );
        let mut state = 0u32;
        match exec_leaving_continuation(&plan, never, &mut state) {
            SplitError::Threads(n) => assert!(n >= 2, "{n} threads"),
            other => panic!("split with threads: {other}"),
        }
    }

    #[test]
    fn test_a_memfd_reads_back_and_copies_are_owned_only_if_open() {
        let fd = memfd_with("t", b"image").unwrap();
        let mut file = std::fs::File::from(fd);
        let mut back = Vec::new();
        io::Seek::seek(&mut file, io::SeekFrom::Start(0)).unwrap();
        io::Read::read_to_end(&mut file, &mut back).unwrap();
        assert_eq!(back, b"image");
        // A number nothing holds is not taken.
        assert!(own_copies(&[1_000_000]).is_empty());
    }
}
