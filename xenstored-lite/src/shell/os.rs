//! The daemon's one door to the operating system where Rust cannot check
//! what happens: every `unsafe` block of the daemon outside the device and
//! shared-memory crates (`evtchn`, `gnttab`, `xenring`, `mock-xen`) and the
//! replayer's mapping is here, behind safe functions.
//!
//! The invariants these functions rely on, written once:
//!
//! * **Descriptors by number.** A descriptor named by a number (one the
//!   daemon owns, or one a live-update stream names) is borrowed only for
//!   the one system call that uses it, after [`fd_is_open`] said it is
//!   open. The daemon is single-threaded (the embedded mock-xen runs in a
//!   process of its own), so nothing closes it in between.
//! * **Adoption.** `adopt_*` take ownership of a descriptor inherited
//!   across a live update's `exec()`: the old process passed it down and
//!   named it in the stream (GLOBAL_DATA, CONNECTION_DATA), nothing in this
//!   process opened or owns it, and the stream parser refuses a descriptor
//!   named twice, so each is adopted once. They are for the restore only
//!   (hence `pub(crate)`), and check the descriptor's kind first: one that
//!   is not what the stream says is left alone (not closed).
//! * **Signals.** The only handler installed stores to an atomic, which is
//!   async-signal-safe.
//! * **fork.** The daemon forks only while it is the process's one thread
//!   ([`fork_single_threaded`] checks it), so the child's copy of that
//!   thread is the whole process; but for [`spawn_prepared`] (the
//!   live-update guardian's start), whose child only calls `execve` on
//!   what was built before the fork, or `_exit`.
//!
//! It also makes the files and directories that must not follow the
//! umask (all safe code): every socket client is the privileged domain,
//! and the state dump, the recording and the access log each hold the
//! whole store. [`listen_private`] binds the socket 0600 before it
//! listens, as C xenstored does (bind, chmod, listen: no moment where
//! another user could connect), under a temporary name it renames into
//! place once it listens; [`create_dirs`] makes missing directories
//! with an explicit mode (0755 for the run directory, as C); and
//! [`open_private`] creates a file 0600 and sets a regular file that
//! already exists to 0600 too (C only creates them 0600; older versions of
//! this daemon made them 0644 under the usual umask, and an upgrade must
//! not keep a world-readable copy of the store).

use std::ffi::CString;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::epoll::{Epoll, EpollEvent};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::ForkResult;

/// Whether `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; any number is a
    // valid argument (an unused one fails with EBADF) and nothing changes.
    fd >= 0 && unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) != -1 }
}

/// Runs `f` on `fd` borrowed for the call, if it is open.
fn with_fd<T>(fd: RawFd, f: impl FnOnce(BorrowedFd<'_>) -> io::Result<T>) -> io::Result<T> {
    if !fd_is_open(fd) {
        return Err(io::Error::from_raw_os_error(nix::libc::EBADF));
    }
    // SAFETY: checked open just above; the borrow lives only for this call
    // and the daemon is single-threaded (module doc: descriptors by number).
    f(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Sets (`on`) or clears close-on-exec on the daemon's own descriptor `fd`
/// (EBADF if it is not open).
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    with_fd(fd, |fd| evtchn::fd::set_cloexec(fd, on))
}

/// Registers descriptor `fd`, which something the daemon holds owns (the
/// event-channel handle), with `epoll`.
pub fn epoll_add(epoll: &Epoll, fd: RawFd, event: EpollEvent) -> io::Result<()> {
    with_fd(fd, |fd| Ok(epoll.add(fd, event)?))
}

/// Whether `fd` is an open socket.
pub fn is_socket(fd: RawFd) -> bool {
    with_fd(fd, |fd| Ok(nix::sys::stat::fstat(fd)?))
        .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFSOCK)
}

/// Whether `fd` is an open socket that listens.
pub fn is_listening_socket(fd: RawFd) -> bool {
    is_socket(fd)
        && with_fd(fd, |fd| {
            Ok(nix::sys::socket::getsockopt(
                &fd,
                nix::sys::socket::sockopt::AcceptConn,
            )?)
        })
        .unwrap_or(false)
}

/// Takes over the listening socket `fd` a live update passed down, if it
/// is one (else `None`, and `fd` is left alone).
pub(crate) fn adopt_listener(fd: RawFd) -> Option<UnixListener> {
    if !is_listening_socket(fd) {
        return None;
    }
    // SAFETY: an open listening socket, inherited and owned by nothing else
    // in this process (module doc: adoption).
    Some(unsafe { UnixListener::from_raw_fd(fd) })
}

/// Takes over descriptors named by number on the command line (a pre-copy
/// live update's), each if it is open; else the first that is not.
pub(crate) fn adopt_fds(fds: &[RawFd]) -> Result<Vec<OwnedFd>, RawFd> {
    if let Some(&shut) = fds.iter().find(|&&fd| !fd_is_open(fd)) {
        return Err(shut);
    }
    let mut sorted = fds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != fds.len() {
        return Err(fds[0]);
    }
    Ok(fds
        .iter()
        // SAFETY: open, inherited across the exec and owned by nothing else
        // in this process, each named once (checked above; module doc:
        // adoption).
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect())
}

/// Takes over the client socket `fd` a live update passed down, if it is
/// an open socket (else `None`, and `fd` is left alone).
pub(crate) fn adopt_socket(fd: RawFd) -> Option<UnixStream> {
    if !is_socket(fd) {
        return None;
    }
    // SAFETY: an open socket, inherited and owned by nothing else in this
    // process (module doc: adoption).
    Some(unsafe { UnixStream::from_raw_fd(fd) })
}

/// Takes over the mock-xen event-channel handle `fd` a live update passed
/// down (GLOBAL_DATA), as dom0's.
pub(crate) fn adopt_mock_evtchn(fd: RawFd) -> Result<mock_xen::MockEventChannel, mock_xen::Error> {
    if !fd_is_open(fd) {
        return Err(mock_xen::Error::Io(io::Error::from_raw_os_error(
            nix::libc::EBADF,
        )));
    }
    // SAFETY: open, inherited and owned by nothing else in this process
    // (module doc: adoption).
    unsafe { mock_xen::MockEventChannel::adopt(fd, 0) }
}

/// Takes over the `/dev/xen/evtchn` handle `fd` a live update passed down
/// (GLOBAL_DATA); one that is not that device is left open.
pub(crate) fn adopt_linux_evtchn(fd: RawFd) -> Result<evtchn::LinuxEventChannel, evtchn::Error> {
    if !fd_is_open(fd) {
        return Err(evtchn::Error::Fstat {
            fd,
            source: io::Error::from_raw_os_error(nix::libc::EBADF),
        });
    }
    // SAFETY: open, inherited and owned by nothing else in this process
    // (module doc: adoption); `from_inherited_fd` checks that it is the
    // event-channel device and leaves it open otherwise.
    unsafe { evtchn::LinuxEventChannel::from_inherited_fd(fd) }
}

/// The mode of the daemon's socket and of every file that holds the
/// store: the owner's only (C xenstored's `chmod(socket, 0600)`).
pub const PRIVATE_MODE: u32 = 0o600;

/// The mode of a run directory the daemon creates (C's `mkdir(rundir,
/// 0755)`): others may find the socket, not connect to it.
pub const RUNDIR_MODE: u32 = 0o755;

/// The backlog of the listening socket (what std's `UnixListener::bind`
/// uses).
const LISTEN_BACKLOG: i32 = 128;

/// Creates `path` and its missing parents with `mode` (the umask can take
/// bits away, never add them); directories that exist are left as they
/// are, as C leaves its run directory.
pub fn create_dirs(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(mode).create(path)
}

/// A non-blocking listening Unix socket at `path` (which must not exist)
/// whose mode is [`PRIVATE_MODE`] whatever the umask: it is set between
/// bind and listen, so no one connects while it has another. It is bound
/// under a temporary name beside `path` and renamed into place only once
/// it listens, so a client that connects as soon as `path` exists (a
/// start-up script, a test) never finds a socket that refuses it.
pub fn listen_private(path: &Path) -> io::Result<UnixListener> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.new", std::process::id()));
    let temp = std::path::PathBuf::from(name);
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new(&temp)?)?;
    let bound = std::fs::set_permissions(&temp, Permissions::from_mode(PRIVATE_MODE))
        .and_then(|()| Ok(socket::listen(&fd, Backlog::new(LISTEN_BACKLOG)?)?))
        .and_then(|()| {
            Ok(renameat2(
                AT_FDCWD,
                &temp,
                AT_FDCWD,
                path,
                RenameFlags::RENAME_NOREPLACE,
            )?)
        });
    if let Err(e) = bound {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
}

/// Opens `path` with `options` (which say create, write, append or
/// truncate), creating it [`PRIVATE_MODE`]; a regular file that already
/// exists is set to that mode too. Devices and pipes (`-T /dev/stderr`)
/// keep theirs: their mode is not the daemon's to change.
pub fn open_private(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options.mode(PRIVATE_MODE).open(path)?;
    if file.metadata()?.is_file() {
        file.set_permissions(Permissions::from_mode(PRIVATE_MODE))?;
    }
    Ok(file)
}

/// Writes `bytes` to `path` (created or truncated) with [`open_private`].
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = open_private(
        OpenOptions::new().write(true).create(true).truncate(true),
        path,
    )?;
    file.write_all(bytes)
}

/// A descriptor kept in reserve for the moment the daemon reaches its
/// descriptor limit: let go of it, accept the pending connection and
/// close it at once (the client sees its connection closed instead of
/// waiting in the backlog while the listener fires without end), then
/// take it back.
#[derive(Debug)]
pub struct ReserveFd(Option<File>);

impl ReserveFd {
    /// One descriptor held (on /dev/null), if one can be had.
    pub fn open() -> Self {
        Self(File::open("/dev/null").ok())
    }

    /// Whether the descriptor is held.
    pub fn held(&self) -> bool {
        self.0.is_some()
    }

    /// Lets go of the descriptor, runs `f` (which may use the one freed),
    /// then takes it back if it can: `f`'s result and whether it is held
    /// again.
    pub fn spend<T>(&mut self, f: impl FnOnce() -> T) -> (T, bool) {
        self.0 = None;
        let out = f();
        *self = Self::open();
        (out, self.held())
    }
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

/// How much nicer than the serving loop a live update's background work
/// runs (the dry run, the threads that write the state and the store
/// image): on a host with few CPUs it must not take the loop's.
pub const BACKGROUND_NICE: i32 = 10;

/// Makes the calling thread `BACKGROUND_NICE` nicer (Linux's nice value is
/// per thread); a failure is logged, not fatal.
pub fn lower_this_thread() {
    // SAFETY: gettid and setpriority take and return plain integers.
    let done = unsafe {
        let tid = nix::libc::gettid();
        nix::libc::setpriority(
            nix::libc::PRIO_PROCESS,
            u32::try_from(tid).unwrap_or(0),
            BACKGROUND_NICE,
        )
    };
    if done != 0 {
        tracing::debug!(
            "cannot lower a background thread's priority: {}",
            io::Error::last_os_error()
        );
    }
}

/// Makes process `pid` (a child just started) `BACKGROUND_NICE` nicer.
pub fn lower_process(pid: u32) {
    // SAFETY: setpriority takes and returns plain integers.
    let done = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, pid, BACKGROUND_NICE) };
    if done != 0 {
        tracing::debug!(
            "cannot lower process {pid}'s priority: {}",
            io::Error::last_os_error()
        );
    }
}

/// Makes each of `signals` set the flag [`signalled`] reads, instead of
/// its default action.
pub fn flag_signals(signals: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for &signal in signals {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe (module doc: signals).
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// Whether one of the signals given to [`flag_signals`] has arrived.
pub fn signalled() -> bool {
    SIGNALLED.load(Ordering::Relaxed)
}

/// Why [`fork_single_threaded`] did not fork.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// Other threads exist (the count).
    #[error("other threads exist ({0} threads)")]
    Threads(usize),
    /// Whether other threads exist cannot be told.
    #[error("cannot count this process's threads (/proc/self/task): {0}")]
    ThreadCount(#[source] io::Error),
    /// fork(2) failed.
    #[error("fork: {0}")]
    Fork(#[from] nix::Error),
}

/// The number of threads of this process, from `/proc/self/task`.
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// `fork()`, refused unless this is the process's only thread.
pub fn fork_single_threaded() -> Result<ForkResult, ForkError> {
    match thread_count() {
        Ok(1) => {}
        Ok(n) => return Err(ForkError::Threads(n)),
        Err(e) => return Err(ForkError::ThreadCount(e)),
    }
    // SAFETY: this is the only thread (checked just above, and this thread
    // starts none in between), so the child's copy of it is the whole
    // process (module doc: fork).
    Ok(unsafe { nix::unistd::fork() }?)
}

/// A program and its arguments and environment, made ready for `execve`
/// before a fork ([`spawn_prepared`]): the child of a process that may
/// have other threads (the recording's writer) must not allocate.
#[derive(Debug)]
pub struct PreparedExec {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl PreparedExec {
    /// `path` run with `argv` (its `argv[0]` first) in `env`.
    pub fn new(path: CString, argv: Vec<CString>, env: Vec<CString>) -> Self {
        Self { path, argv, env }
    }
}

/// Pointers to `strings` and a final null, as `execve` takes them.
fn null_terminated(strings: &[CString]) -> Vec<*const nix::libc::c_char> {
    strings
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Forks a child that only execs `prog` (or exits 127 if that fails);
/// returns its pid. Safe while other threads exist: everything the child
/// uses is built before the fork and it calls only `execve` and `_exit`,
/// which are async-signal-safe. The child inherits every descriptor
/// without close-on-exec.
pub fn spawn_prepared(prog: &PreparedExec) -> nix::Result<nix::unistd::Pid> {
    let argv = null_terminated(&prog.argv);
    let env = null_terminated(&prog.env);
    // SAFETY: the child runs only `execve` on pointers into `prog`, `argv`
    // and `env` (built above, alive until this function returns, and the
    // child's copy of them until it execs) and `_exit`, both
    // async-signal-safe, so no lock another thread held at the fork is
    // ever taken in the child.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // SAFETY: null-terminated arrays of pointers to NUL-terminated
            // strings (above); `_exit` ends the child if `execve` returns.
            unsafe {
                nix::libc::execve(prog.path.as_ptr(), argv.as_ptr(), env.as_ptr());
                nix::libc::_exit(127)
            }
        }
    }
}

/// A pidfd (`pidfd_open(2)`) for process `pid` (this one, for the
/// live-update guardian): a descriptor that becomes readable when the
/// process ends, whatever program it runs by then.
pub fn pidfd_of(pid: u32) -> io::Result<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::from_raw_os_error(nix::libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0 as nix::libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(nix::libc::EBADF))?;
    // SAFETY: a descriptor the kernel just returned to us, owned by nothing
    // else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes over the pidfd `fd` the live update's guardian was started with
/// (named on its command line; inherited and owned by nothing else in this
/// process): `None` if it is not open.
pub(crate) fn adopt_pidfd(fd: RawFd) -> Option<OwnedFd> {
    if !fd_is_open(fd) {
        return None;
    }
    // SAFETY: open, inherited and owned by nothing else in this process
    // (module doc: adoption); the guardian adopts it once.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    fn prepared(path: &str, args: &[&str]) -> PreparedExec {
        let c = |s: &str| CString::new(s).unwrap();
        PreparedExec::new(c(path), args.iter().map(|a| c(a)).collect(), vec![c("X=1")])
    }

    fn exit_of(prog: &PreparedExec) -> nix::sys::wait::WaitStatus {
        let child = spawn_prepared(prog).unwrap();
        nix::sys::wait::waitpid(child, None).unwrap()
    }

    #[test]
    fn test_spawn_prepared_execs_with_argv_and_env_or_exits_127() {
        use nix::sys::wait::WaitStatus::Exited;
        // The test harness has other threads: the point of this spawn.
        let sh = prepared("/bin/sh", &["sh", "-c", "test \"$X$0\" = 1sh && exit 3"]);
        assert!(matches!(exit_of(&sh), Exited(_, 3)));
        let missing = prepared("/nonexistent/binary", &["x"]);
        assert!(matches!(exit_of(&missing), Exited(_, 127)));
    }

    #[test]
    fn test_pidfd_of_a_process_that_does_not_exist_is_refused() {
        // Above pid_max (at most 2^22 on Linux).
        assert!(pidfd_of(i32::MAX as u32).is_err());
        assert!(pidfd_of(u32::MAX).is_err());
    }

    #[test]
    fn test_pidfd_of_self_is_open_and_adopted_once_open() {
        let fd = pidfd_of(std::process::id()).unwrap();
        assert!(fd_is_open(fd.as_raw_fd()));
        let raw = fd.into_raw_fd();
        let adopted = adopt_pidfd(raw).unwrap();
        assert_eq!(adopted.as_raw_fd(), raw);
        // (Not checked closed after the drop: another test's thread may
        // reuse the number at once.)
        drop(adopted);
        assert!(adopt_pidfd(-1).is_none());
    }

    #[test]
    fn test_fork_is_refused_while_other_threads_exist() {
        // The test harness runs this on a thread of its own.
        assert!(matches!(
            fork_single_threaded(),
            Err(ForkError::Threads(n)) if n > 1
        ));
    }

    #[test]
    fn test_a_socket_is_told_from_a_listener_and_no_descriptor() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        assert!(fd_is_open(fd) && is_socket(fd) && !is_listening_socket(fd));
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("s")).unwrap();
        assert!(is_listening_socket(l.as_raw_fd()));
        assert!(!fd_is_open(-1) && !is_socket(-1));
        assert!(set_cloexec(-1, true).is_err());
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn test_the_socket_is_0600_and_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = listen_private(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(is_listening_socket(l.as_raw_fd()));
        let _c = UnixStream::connect(&path).unwrap();
        assert!(l.accept().is_ok());
        // A second bind on the same path fails and leaves the first alone,
        // and no temporary name is left behind.
        assert!(listen_private(&path).is_err());
        assert!(path.exists());
        let _c = UnixStream::connect(&path).unwrap();
        assert!(l.accept().is_ok());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s"]);
    }

    #[test]
    fn test_private_files_are_0600_new_or_old_and_devices_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        write_private(&new, b"x").unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old");
        std::fs::write(&old, b"y").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        let f = open_private(OpenOptions::new().append(true).create(true), &old).unwrap();
        drop(f);
        assert_eq!(mode(&old), 0o600);
        assert_eq!(
            std::fs::read(&old).unwrap(),
            b"y",
            "appended to, not truncated"
        );
        // A pipe (as `-T /dev/stderr` may be) keeps its mode.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::set_permissions(&fifo, Permissions::from_mode(0o644)).unwrap();
        drop(open_private(OpenOptions::new().read(true).write(true), &fifo).unwrap());
        assert_eq!(mode(&fifo), 0o644);
    }

    #[test]
    fn test_dirs_are_made_with_the_mode_given_and_old_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_dirs(&deep, 0o700).unwrap();
        assert_eq!(mode(&deep), 0o700 & mode(&deep));
        assert_eq!(mode(&deep) & 0o077, 0);
        std::fs::set_permissions(&deep, Permissions::from_mode(0o711)).unwrap();
        create_dirs(&deep, 0o700).unwrap();
        assert_eq!(mode(&deep), 0o711);
    }

    #[test]
    fn test_the_reserve_descriptor_is_spent_and_taken_back() {
        let mut r = ReserveFd::open();
        assert!(r.held());
        let (answer, again) = r.spend(|| 42);
        assert_eq!(answer, 42);
        assert!(again && r.held());
        let mut spent = ReserveFd(None);
        assert!(!spent.held());
        assert!(spent.spend(|| ()).1, "taken back when one can be had");
    }

    #[test]
    fn test_adoption_takes_only_the_kind_it_is_given() {
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd();
        assert!(adopt_socket(fd).is_none() && adopt_listener(fd).is_none());
        // Refused, not closed.
        assert!(fd_is_open(fd));
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.into_raw_fd();
        assert!(adopt_listener(fd).is_none());
        let adopted = adopt_socket(fd).unwrap();
        assert_eq!(adopted.as_raw_fd(), fd);
    }
}
