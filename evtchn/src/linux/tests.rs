use super::*;

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::process::Command;

use crate::testskip::{skip, Missing};

thread_local! {
    /// (request, argument bytes) of every ioctl issued on this thread.
    static CALLS: RefCell<Vec<(u32, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
    /// What the next ioctl returns: `Ok(rc)` or `Err(errno)`.
    static REPLY: Cell<Result<libc::c_int, i32>> = const { Cell::new(Ok(0)) };
}

/// Records the request and the argument bytes instead of calling the kernel.
///
/// # Safety
///
/// As for [`IoctlFn`]: `arg` points to as many bytes as `request` encodes.
unsafe fn fake_ioctl(_fd: RawFd, request: u32, arg: *mut c_void) -> io::Result<libc::c_int> {
    let size = usize::try_from((request >> 16) & 0x3fff).expect("14 bits fit usize");
    // SAFETY: the backend passes a live struct of exactly `size` bytes (a
    // zero-sized one gives a dangling but aligned, non-null pointer).
    let bytes = unsafe { std::slice::from_raw_parts(arg.cast::<u8>(), size) }.to_vec();
    CALLS.with(|c| c.borrow_mut().push((request, bytes)));
    REPLY.with(Cell::get).map_err(io::Error::from_raw_os_error)
}

/// A backend whose "device" is one end of a socket pair and whose ioctls
/// are recorded; the other end plays the kernel's read/write side.
fn fake(reply: Result<libc::c_int, i32>) -> (LinuxEventChannel, UnixStream) {
    CALLS.with(|c| c.borrow_mut().clear());
    REPLY.with(|r| r.set(reply));
    let (ours, kernel) = UnixStream::pair().expect("socketpair");
    ours.set_nonblocking(true).expect("nonblocking");
    let chan = LinuxEventChannel {
        fd: OwnedFd::from(ours),
        ioctl: fake_ioctl,
    };
    (chan, kernel)
}

fn calls() -> Vec<(u32, Vec<u8>)> {
    CALLS.with(|c| c.borrow().clone())
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

#[test]
fn test_bind_interdomain_args_marshalled_returns_port() {
    let (mut chan, _k) = fake(Ok(17));
    let port = chan.bind_interdomain(5, Port::new(9)).expect("bind");
    assert_eq!(port, Port::new(17));
    assert_eq!(
        calls(),
        vec![(sys::ioctl_evtchn_bind_interdomain(), words(&[5, 9]))]
    );
}

#[test]
fn test_bind_virq_dom_exc_args_marshalled_returns_port() {
    let (mut chan, _k) = fake(Ok(3));
    let port = chan.bind_virq(crate::VIRQ_DOM_EXC).expect("bind");
    assert_eq!(port, Port::new(3));
    assert_eq!(calls(), vec![(sys::ioctl_evtchn_bind_virq(), words(&[3]))]);
}

#[test]
fn test_bind_unbound_args_marshalled_returns_port() {
    let (mut chan, _k) = fake(Ok(40));
    assert_eq!(chan.bind_unbound(7).expect("bind"), Port::new(40));
    assert_eq!(
        calls(),
        vec![(sys::ioctl_evtchn_bind_unbound_port(), words(&[7]))]
    );
}

#[test]
fn test_unbind_notify_reset_restrict_args_marshalled() {
    let (mut chan, _k) = fake(Ok(0));
    chan.unbind(Port::new(11)).expect("unbind");
    chan.notify(Port::new(12)).expect("notify");
    chan.reset().expect("reset");
    chan.restrict_domid(0x1234).expect("restrict");
    assert_eq!(
        calls(),
        vec![
            (sys::ioctl_evtchn_unbind(), words(&[11])),
            (sys::ioctl_evtchn_notify(), words(&[12])),
            (sys::ioctl_evtchn_reset(), vec![]),
            (
                sys::ioctl_evtchn_restrict_domid(),
                0x1234u16.to_ne_bytes().to_vec()
            ),
        ]
    );
}

#[test]
fn test_notify_ioctl_fails_error_names_op() {
    let (mut chan, _k) = fake(Err(libc::ENOTCONN));
    let err = chan.notify(Port::new(1)).expect_err("must fail");
    match err {
        Error::Ioctl { op, ref source } => {
            assert_eq!(op, "notify");
            assert_eq!(source.raw_os_error(), Some(libc::ENOTCONN));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "event-channel notify failed");
}

#[test]
fn test_read_pending_nothing_queued_returns_empty() {
    let (mut chan, _k) = fake(Ok(0));
    let mut out = Vec::new();
    chan.read_pending(&mut out).expect("read");
    assert!(out.is_empty());
}

#[test]
fn test_read_pending_ports_queued_returns_them_in_order() {
    let (mut chan, mut kernel) = fake(Ok(0));
    kernel.write_all(&words(&[4, 1, 4096])).expect("queue");
    let mut out = vec![Port::new(99)];
    chan.read_pending(&mut out).expect("read");
    assert_eq!(
        out,
        vec![Port::new(99), Port::new(4), Port::new(1), Port::new(4096)]
    );
}

#[test]
fn test_read_pending_more_than_one_batch_returns_all() {
    let (mut chan, mut kernel) = fake(Ok(0));
    let many: Vec<u32> = (0..3000).collect();
    kernel.write_all(&words(&many)).expect("queue");
    let mut out = Vec::new();
    chan.read_pending(&mut out).expect("read");
    assert_eq!(out.len(), 3000);
    assert_eq!(out[2999], Port::new(2999));
}

#[test]
fn test_read_pending_partial_port_short_read_error() {
    let (mut chan, mut kernel) = fake(Ok(0));
    kernel.write_all(&[1, 0, 0, 0, 2, 0]).expect("queue");
    let err = chan.read_pending(&mut Vec::new()).expect_err("must fail");
    assert!(matches!(err, Error::ShortRead { completed: 6 }), "{err:?}");
}

/// A backend whose "device" is one end of a non-blocking `SOCK_SEQPACKET`
/// pair: each read returns one packet the other end sent, cut to the
/// buffer's size, so the size of the buffer and where the reads stop show.
fn fake_packets() -> (LinuxEventChannel, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two new descriptors into the array it gets.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nothing else.
    let (ours, kernel) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let chan = LinuxEventChannel {
        fd: ours,
        ioctl: fake_ioctl,
    };
    (chan, kernel)
}

fn send_packet(kernel: &OwnedFd, bytes: &[u8]) {
    let n = nix::unistd::write(kernel, bytes).expect("send packet");
    assert_eq!(n, bytes.len());
}

#[test]
fn test_read_pending_full_batch_read_in_one_buffer() {
    // One read of READ_BATCH ports, as the device gives when that many are
    // pending: all of them must come back (a smaller buffer loses the rest).
    let (mut chan, kernel) = fake_packets();
    let many: Vec<u32> = (0..u32::try_from(READ_BATCH).expect("fits")).collect();
    send_packet(&kernel, &words(&many));
    let mut out = Vec::new();
    chan.read_pending(&mut out).expect("read");
    assert_eq!(out.len(), READ_BATCH);
    assert_eq!(out.last(), Some(&Port::new(many[READ_BATCH - 1])));
}

#[test]
fn test_read_pending_short_read_means_drained_no_second_read() {
    // A read shorter than the buffer means nothing more was pending; what
    // comes later (here a malformed packet) is for the next call.
    let (mut chan, kernel) = fake_packets();
    send_packet(&kernel, &words(&[5, 6]));
    send_packet(&kernel, &[1, 2, 3]);
    let mut out = Vec::new();
    chan.read_pending(&mut out)
        .expect("the first read ends the call");
    assert_eq!(out, vec![Port::new(5), Port::new(6)]);
    let err = chan
        .read_pending(&mut out)
        .expect_err("the next call reads it");
    assert!(matches!(err, Error::ShortRead { completed: 3 }), "{err:?}");
}

#[test]
fn test_unmask_partial_write_short_write_error() {
    // A pipe with one free page takes 4096 of the 8192 bytes of a
    // non-blocking write: the rest of the ports stay masked, say so.
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let flags = OFlag::from_bits_retain(fcntl(&w, FcntlArg::F_GETFL).expect("getfl"));
    fcntl(&w, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).expect("setfl");
    let page = [0u8; 4096];
    while nix::unistd::write(&w, &page).is_ok() {}
    let mut got = [0u8; 4096];
    assert_eq!(nix::unistd::read(&r, &mut got).expect("free a page"), 4096);
    let mut chan = LinuxEventChannel {
        fd: w,
        ioctl: fake_ioctl,
    };
    let ports: Vec<Port> = (0..2048).map(Port::new).collect();
    let err = chan.unmask(&ports).expect_err("short write");
    assert!(
        matches!(
            err,
            Error::ShortWrite {
                expected: 8192,
                completed: 4096
            }
        ),
        "{err:?}"
    );
}

#[test]
fn test_handle_fd_and_as_raw_fd_are_the_device_fd() {
    let (ours, _kernel) = UnixStream::pair().expect("socketpair");
    let raw = ours.as_raw_fd();
    let chan = LinuxEventChannel {
        fd: OwnedFd::from(ours),
        ioctl: fake_ioctl,
    };
    assert_eq!(chan.as_raw_fd(), raw);
    assert_eq!(chan.handle_fd(), raw, "a live update must pass this fd on");
}

#[test]
fn test_unmask_ports_written_as_native_u32s() {
    let (mut chan, kernel) = fake(Ok(0));
    chan.unmask(&[Port::new(3), Port::new(70000)])
        .expect("unmask");
    chan.unmask(&[]).expect("empty unmask");
    // The write is done when unmask returns: nothing to wait for (and a
    // backend that wrote nothing fails here instead of blocking).
    kernel.set_nonblocking(true).expect("nonblocking");
    let mut got = [0u8; 8];
    std::io::Read::read_exact(&mut &kernel, &mut got).expect("read unmask");
    assert_eq!(got.to_vec(), words(&[3, 70000]));
}

#[test]
fn test_wait_nothing_pending_times_out_empty() {
    let (mut chan, _k) = fake(Ok(0));
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    chan.wait(Some(Duration::from_millis(20)), &mut out)
        .expect("wait");
    assert!(out.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(15));
}

#[test]
fn test_wait_port_queued_returns_it() {
    let (mut chan, mut kernel) = fake(Ok(0));
    kernel.write_all(&words(&[8])).expect("queue");
    let mut out = Vec::new();
    chan.wait(Some(Duration::from_secs(5)), &mut out)
        .expect("wait");
    assert_eq!(out, vec![Port::new(8)]);
}

#[test]
fn test_open_path_absent_device_error_names_device() {
    let err = LinuxEventChannel::open_path(Path::new("/nonexistent/xen/evtchn"), true)
        .expect_err("must fail");
    match &err {
        Error::DeviceOpen { path, source } => {
            assert_eq!(path, Path::new("/nonexistent/xen/evtchn"));
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("/nonexistent/xen/evtchn"));
}

#[test]
fn test_open_path_inheritable_clears_cloexec() {
    let kept = LinuxEventChannel::open_path(Path::new("/dev/null"), false).expect("open");
    assert!(!fd::is_cloexec(kept.as_fd()).expect("query"));
    let closed = LinuxEventChannel::open_path(Path::new("/dev/null"), true).expect("open");
    assert!(fd::is_cloexec(closed.as_fd()).expect("query"));
    closed.set_cloexec(false).expect("clear");
    assert!(!fd::is_cloexec(closed.as_fd()).expect("query"));
}

#[test]
fn test_adopt_same_char_device_accepted_nonblocking() {
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    let chan = LinuxEventChannel::adopt_checked(OwnedFd::from(file), Path::new("/dev/null"))
        .expect("adopt");
    let flags = OFlag::from_bits_retain(fcntl(&chan.fd, FcntlArg::F_GETFL).expect("getfl"));
    assert!(flags.contains(OFlag::O_NONBLOCK));
}

#[test]
fn test_adopt_nonblocking_fd_stays_nonblocking() {
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/null")
        .expect("open /dev/null");
    let chan = LinuxEventChannel::adopt_checked(OwnedFd::from(file), Path::new("/dev/null"))
        .expect("adopt");
    let flags = OFlag::from_bits_retain(fcntl(&chan.fd, FcntlArg::F_GETFL).expect("getfl"));
    assert!(flags.contains(OFlag::O_NONBLOCK));
}

#[test]
fn test_adopt_char_device_other_than_device_file_rejected() {
    // The fd is a character device, the path a regular file.
    let dir = std::env::temp_dir().join(format!("evtchn-adopt-{}", std::process::id()));
    std::fs::write(&dir, b"").expect("write a regular file");
    let file = std::fs::File::open("/dev/null").expect("open /dev/null");
    let err = LinuxEventChannel::adopt_checked(OwnedFd::from(file), &dir);
    let _ = std::fs::remove_file(&dir);
    assert!(
        matches!(err, Err(Error::NotEventChannelDevice { .. })),
        "{err:?}"
    );
}

#[test]
fn test_adopt_regular_files_same_rdev_rejected() {
    // Neither is a character device, though both have device number 0.
    let path = std::env::temp_dir().join(format!("evtchn-adopt-reg-{}", std::process::id()));
    std::fs::write(&path, b"").expect("write a regular file");
    let file = std::fs::File::open(&path).expect("open it");
    let err = LinuxEventChannel::adopt_checked(OwnedFd::from(file), &path);
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(err, Err(Error::NotEventChannelDevice { .. })),
        "{err:?}"
    );
}

#[test]
fn test_adopt_other_fd_rejected_typed_error() {
    let (a, _b) = UnixStream::pair().expect("socketpair");
    let err = LinuxEventChannel::adopt_checked(OwnedFd::from(a), Path::new("/dev/null"))
        .expect_err("must fail");
    assert!(
        matches!(err, Error::NotEventChannelDevice { .. }),
        "{err:?}"
    );
}

// ---- Tests on the real device: skipped where there is no Xen. ----

/// The real device, or `None` after [`skip`] when there is none.
fn real(test: &str) -> Option<LinuxEventChannel> {
    if !Path::new(EVTCHN_DEVICE).exists() {
        skip(Missing::Xen, test, &format!("{EVTCHN_DEVICE} absent"));
        return None;
    }
    Some(LinuxEventChannel::open().expect("open the real device"))
}

/// Waits up to 5 s for `port` to be reported.
fn wait_for(chan: &mut LinuxEventChannel, port: Port) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        chan.wait(Some(Duration::from_millis(200)), &mut out)
            .expect("wait");
        if out.contains(&port) {
            return true;
        }
    }
    false
}

#[test]
fn test_real_bind_virq_dom_exc_returns_port() {
    let Some(mut chan) = real("test_real_bind_virq_dom_exc_returns_port") else {
        return;
    };
    let port = match chan.bind_virq(crate::VIRQ_DOM_EXC) {
        Ok(port) => port,
        // A global VIRQ has one binder per domain: a running xenstored holds it.
        Err(Error::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            skip(
                Missing::Xen,
                "test_real_bind_virq_dom_exc_returns_port",
                "VIRQ_DOM_EXC is already bound in dom0 (a xenstored runs)",
            );
            return;
        }
        Err(e) => panic!("bind VIRQ_DOM_EXC: {e:?}"),
    };
    println!("VIRQ_DOM_EXC bound to local port {port}");
    chan.unbind(port).expect("unbind");
}

#[test]
fn test_real_unbind_unknown_port_ioctl_error() {
    let Some(mut chan) = real("test_real_unbind_unknown_port_ioctl_error") else {
        return;
    };
    let err = chan.unbind(Port::new(0)).expect_err("port 0 is never ours");
    assert!(matches!(err, Error::Ioctl { op: "unbind", .. }), "{err:?}");
}

#[test]
fn test_real_loopback_notify_delivers_then_masks_until_unmask() {
    let Some(mut server) = real("test_real_loopback_notify_delivers_then_masks_until_unmask")
    else {
        return;
    };
    let Some(mut client) = real("test_real_loopback_notify_delivers_then_masks_until_unmask")
    else {
        return;
    };
    // Two handles of dom0 itself: one allocates, the other binds to it, as a
    // guest would bind to a port dom0 offers.
    let offered = server.bind_unbound(0).expect("bind_unbound(dom0)");
    let bound = client
        .bind_interdomain(0, offered)
        .expect("bind_interdomain");
    println!("loopback: unbound {offered} <-> interdomain {bound}");
    client.notify(bound).expect("notify");
    assert!(wait_for(&mut server, offered), "first notify not delivered");
    // Masked now: a second notify is not reported ...
    client.notify(bound).expect("notify again");
    let mut out = Vec::new();
    server
        .wait(Some(Duration::from_millis(300)), &mut out)
        .expect("wait");
    assert!(!out.contains(&offered), "delivered while masked: {out:?}");
    // ... until unmasked, and then it is (it fired meanwhile).
    server.unmask(&[offered]).expect("unmask");
    assert!(
        wait_for(&mut server, offered),
        "pending event lost by masking"
    );
    // And the other direction.
    server.notify(offered).expect("notify back");
    assert!(wait_for(&mut client, bound), "reverse notify not delivered");
    client.unbind(bound).expect("unbind");
    server.unbind(offered).expect("unbind");
}

const EXEC_FD_VAR: &str = "EVTCHN_TEST_EXEC_FD";
const EXEC_PORTS_VAR: &str = "EVTCHN_TEST_EXEC_PORTS";
/// What the child prints once the inherited pair worked.
const CHILD_DONE: &str = "child: adopted the inherited handle:";

/// Child side of the exec test; a no-op as an ordinary test.
#[test]
fn test_real_exec_child_adopts_handle_ports_still_bound() {
    let (Ok(fd), Ok(ports)) = (std::env::var(EXEC_FD_VAR), std::env::var(EXEC_PORTS_VAR)) else {
        return;
    };
    let fd: RawFd = fd.parse().expect("fd number");
    let (offered, bound) = ports.split_once(',').expect("two ports");
    let offered = Port::new(offered.parse().expect("port"));
    let bound = Port::new(bound.parse().expect("port"));
    // SAFETY: the parent passed this fd number through exec for us to own;
    // nothing else in this child process uses it.
    let mut chan = unsafe { LinuxEventChannel::from_inherited_fd(fd) }.expect("adopt");
    chan.notify(bound)
        .expect("notify through the inherited handle");
    assert!(wait_for(&mut chan, offered), "inherited loopback pair dead");
    println!("{CHILD_DONE} fd {fd}; ports {offered},{bound} still bound");
}

#[test]
fn test_real_exec_inherited_handle_keeps_ports_bound() {
    if !Path::new(EVTCHN_DEVICE).exists() {
        skip(
            Missing::Xen,
            "test_real_exec_inherited_handle_keeps_ports_bound",
            &format!("{EVTCHN_DEVICE} absent"),
        );
        return;
    }
    let mut chan = LinuxEventChannel::open_inheritable().expect("open");
    let offered = chan.bind_unbound(0).expect("bind_unbound");
    let bound = chan.bind_interdomain(0, offered).expect("bind_interdomain");
    let out = Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "linux::tests::test_real_exec_child_adopts_handle_ports_still_bound",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(EXEC_FD_VAR, chan.as_raw_fd().to_string())
        .env(EXEC_PORTS_VAR, format!("{offered},{bound}"))
        .output()
        .expect("spawn self");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // A name that selects no test passes too: the child must have run.
    assert!(
        stdout.contains("running 1 test") && stdout.contains(CHILD_DONE),
        "the child test did not run:\n{stdout}"
    );
}

/// `(domid, store port)` of a running guest, from the environment the
/// xen-qemu script sets (`XENQEMU_GUEST_*` while C xenstored serves the
/// guest, `XENQEMU_FREE_GUEST_*` after xenstored exited).
fn guest_env(prefix: &str) -> Option<(DomId, Port)> {
    let domid = std::env::var(format!("{prefix}_DOMID"))
        .ok()?
        .parse()
        .ok()?;
    let port = std::env::var(format!("{prefix}_STORE_PORT"))
        .ok()?
        .parse()
        .ok()?;
    Some((domid, Port::new(port)))
}

#[test]
fn test_real_guest_store_port_held_by_xenstored_bind_rejected() {
    let Some(mut chan) = real("test_real_guest_store_port_held_by_xenstored_bind_rejected") else {
        return;
    };
    let Some((domid, port)) = guest_env("XENQEMU_GUEST") else {
        skip(
            Missing::Xen,
            "test_real_guest_store_port_held_by_xenstored_bind_rejected",
            "XENQEMU_GUEST_DOMID/XENQEMU_GUEST_STORE_PORT unset",
        );
        return;
    };
    // C xenstored already bound the guest's store port: a second
    // interdomain bind must fail (the remote end is no longer unbound).
    let err = chan
        .bind_interdomain(domid, port)
        .expect_err("port already bound by xenstored");
    println!(
        "bind_interdomain({domid}, {port}) while xenstored holds it: {err} ({:?})",
        std::error::Error::source(&err)
    );
    assert!(
        matches!(
            err,
            Error::Ioctl {
                op: "bind_interdomain",
                ..
            }
        ),
        "{err:?}"
    );
    // Offering the guest a fresh port works.
    let offered = chan.bind_unbound(domid).expect("bind_unbound(guest)");
    println!("offered guest {domid} the unbound port {offered}");
    chan.unbind(offered).expect("unbind");
}

#[test]
fn test_real_guest_store_port_free_bind_interdomain_succeeds() {
    let Some(mut chan) = real("test_real_guest_store_port_free_bind_interdomain_succeeds") else {
        return;
    };
    let Some((domid, port)) = guest_env("XENQEMU_FREE_GUEST") else {
        skip(
            Missing::Xen,
            "test_real_guest_store_port_free_bind_interdomain_succeeds",
            "XENQEMU_FREE_GUEST_DOMID/XENQEMU_FREE_GUEST_STORE_PORT unset",
        );
        return;
    };
    // xenstored exited, so Xen put the guest's end back to "unbound, for
    // dom0" — exactly what a restarted (or live-updated) daemon binds to.
    let local = chan
        .bind_interdomain(domid, port)
        .expect("bind to the guest's store port");
    println!("bound guest {domid} port {port} as local port {local}");
    chan.notify(local).expect("notify the guest");
    chan.unbind(local).expect("unbind");
}
