use super::*;
use crate::testskip::{skip, Missing};

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::os::fd::{OwnedFd, RawFd};

thread_local! {
    /// The "hypervisor's" domains, sorted by domid.
    static DOMAINS: RefCell<Vec<sys::XenDomctlGetdomaininfo>> = const { RefCell::new(Vec::new()) };
    /// Errno the fake sysctl fails with, if any.
    static FAIL: Cell<Option<i32>> = const { Cell::new(None) };
    /// (interface_version, first_domain, max_domains) of each sysctl.
    static SEEN: RefCell<Vec<(u32, u16, u32)>> = const { RefCell::new(Vec::new()) };
    /// Lie about the count returned.
    static OVERCOUNT: Cell<bool> = const { Cell::new(false) };
    /// Ignore first_domain: answer every call from the lowest domid, as a
    /// broken hypervisor would (from the third call on, fail with EIO).
    static STALE: Cell<bool> = const { Cell::new(false) };
}

/// Plays Xen: answers sysctl getdomaininfolist and xen_version.
///
/// # Safety
///
/// As for the backend's ioctl: `arg` is a `privcmd_hypercall` whose pointer
/// arguments are valid.
unsafe fn fake_hypervisor(_fd: RawFd, request: u32, arg: *mut c_void) -> io::Result<libc::c_int> {
    assert_eq!(request, sys::ioctl_privcmd_hypercall());
    // SAFETY: the request says `arg` is a privcmd_hypercall.
    let call = unsafe { arg.cast::<sys::PrivcmdHypercall>().read() };
    match call.op {
        sys::HYPERVISOR_XEN_VERSION => Ok(0x0004_0011),
        sys::HYPERVISOR_SYSCTL => {
            let op_ptr = call.arg[0] as *mut sys::XenSysctlGetdomaininfolistOp;
            // SAFETY: the backend points arg[0] at its sysctl struct.
            let mut op = unsafe { op_ptr.read() };
            let req = op.getdomaininfolist;
            SEEN.with(|s| {
                s.borrow_mut()
                    .push((op.interface_version, req.first_domain, req.max_domains))
            });
            if let Some(errno) = FAIL.with(Cell::get) {
                return Err(io::Error::from_raw_os_error(errno));
            }
            let stale = STALE.with(Cell::get);
            if stale && SEEN.with(|s| s.borrow().len()) > 2 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let from = if stale { 0 } else { req.first_domain };
            let records = req.buffer as *mut sys::XenDomctlGetdomaininfo;
            let chosen: Vec<_> = DOMAINS.with(|d| {
                d.borrow()
                    .iter()
                    .filter(|x| x.domain >= from)
                    .take(req.max_domains as usize)
                    .copied()
                    .collect()
            });
            for (i, rec) in chosen.iter().enumerate() {
                // SAFETY: the backend sized the buffer for max_domains records.
                unsafe { records.add(i).write(*rec) };
            }
            op.getdomaininfolist.num_domains = u32::try_from(chosen.len()).expect("small")
                + u32::from(OVERCOUNT.with(Cell::get)) * 100_000;
            // SAFETY: as above.
            unsafe { op_ptr.write(op) };
            Ok(0)
        }
        other => panic!("unexpected hypercall {other}"),
    }
}

fn domain(domid: DomId, flags: u32, handle_byte: u8) -> sys::XenDomctlGetdomaininfo {
    sys::XenDomctlGetdomaininfo {
        domain: domid,
        flags,
        handle: [handle_byte; 16],
        ..Default::default()
    }
}

fn source(domains: Vec<sys::XenDomctlGetdomaininfo>) -> PrivcmdDomainInfo {
    DOMAINS.with(|d| *d.borrow_mut() = domains);
    FAIL.with(|f| f.set(None));
    OVERCOUNT.with(|o| o.set(false));
    STALE.with(|o| o.set(false));
    SEEN.with(|s| s.borrow_mut().clear());
    let mut file = tempfile::tempfile().expect("tempfile");
    file.write_all(&[0; 16]).expect("fill");
    PrivcmdDomainInfo::with_device(Device {
        path: "fake-privcmd".into(),
        fd: OwnedFd::from(file),
        ioctl: fake_hypervisor,
    })
}

#[test]
fn test_list_decodes_flags_and_handle() {
    let shutdown_crash = sys::XEN_DOMINF_SHUTDOWN | (3 << sys::XEN_DOMINF_SHUTDOWNSHIFT);
    let mut src = source(vec![
        domain(0, 0, 0),
        domain(3, sys::XEN_DOMINF_DYING, 3),
        domain(5, shutdown_crash, 5),
    ]);
    let list = src.list().expect("list");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].domid, 0);
    assert!(list[1].dying && list[1].shutdown.is_none());
    assert_eq!(list[1].handle, [3; 16]);
    assert_eq!(list[2].shutdown, Some(ShutdownReason::Crash));
    assert!(!list[2].dying);
    assert_eq!(list[2].unique_id, None);
    assert_eq!(
        SEEN.with(|s| s.borrow().clone()),
        vec![(
            sys::XEN_SYSCTL_INTERFACE_VERSION,
            0,
            u32::try_from(LIST_CAPACITY).expect("small")
        )],
        "one sysctl: a batch shorter than asked for is the end of the list"
    );
}

#[test]
fn test_list_capacity_fills_the_list_pages() {
    // As many records as the pages after the sysctl's own page hold.
    let record = std::mem::size_of::<sys::XenDomctlGetdomaininfo>();
    assert!(LIST_CAPACITY * record <= LIST_PAGES * PAGE_SIZE);
    assert!((LIST_CAPACITY + 1) * record > LIST_PAGES * PAGE_SIZE);
}

#[test]
fn test_list_hypervisor_repeats_batch_stops() {
    // A full batch, then the same one again though we asked for the
    // domains after it: nonsense, so stop instead of asking forever.
    let many: Vec<_> = (0..=u16::try_from(LIST_CAPACITY).expect("small"))
        .map(|d| domain(d, 0, 0))
        .collect();
    let mut src = source(many);
    STALE.with(|s| s.set(true));
    let list = src.list().expect("list stops after the repeated batch");
    assert_eq!(list.len(), LIST_CAPACITY);
    assert_eq!(SEEN.with(|s| s.borrow().len()), 2);
}

#[test]
fn test_list_full_batch_up_to_last_domid_stops() {
    // A full batch ending at the last ordinary domid: nothing can follow.
    let last = sys::DOMID_FIRST_RESERVED - 1;
    let cap = u16::try_from(LIST_CAPACITY).expect("small");
    let many: Vec<_> = (last + 1 - cap..=last).map(|d| domain(d, 0, 0)).collect();
    let mut src = source(many);
    let list = src.list().expect("list");
    assert_eq!(list.len(), LIST_CAPACITY);
    assert_eq!(
        SEEN.with(|s| s.borrow().len()),
        1,
        "no sysctl past the last domid"
    );
}

#[test]
fn test_list_full_batch_ending_at_domid_max_no_overflow() {
    // Records claiming the highest domid: stop, never step past u16::MAX.
    let cap = u16::try_from(LIST_CAPACITY).expect("small");
    let many: Vec<_> = (u16::MAX - (cap - 1)..=u16::MAX)
        .map(|d| domain(d, 0, 0))
        .collect();
    let mut src = source(many);
    assert_eq!(src.list().expect("list").len(), LIST_CAPACITY);
    assert_eq!(SEEN.with(|s| s.borrow().len()), 1);
}

#[test]
fn test_debug_names_buffer_and_device() {
    let src = source(vec![]);
    let text = format!("{src:?}");
    assert!(text.contains("HypercallBuffer"), "{text}");
    assert!(
        text.contains(&format!("len: {}", (1 + LIST_PAGES) * PAGE_SIZE)),
        "{text}"
    );
    assert!(text.contains("fake-privcmd"), "{text}");
    assert_eq!(src.device_path(), Path::new("fake-privcmd"));
}

#[test]
fn test_open_paths_buffer_holds_sysctl_page_and_records() {
    // No hypercall device: anonymous locked memory instead.
    let src =
        PrivcmdDomainInfo::open_paths(Path::new("/dev/null"), Path::new("/nonexistent/hypercall"))
            .expect("open");
    let record = std::mem::size_of::<sys::XenDomctlGetdomaininfo>();
    assert!(
        src.buf.len >= PAGE_SIZE + LIST_CAPACITY * record,
        "{:?}",
        src.buf
    );
    assert_eq!(src.device_path(), Path::new("/dev/null"));
}

/// Whether `/proc/self/maps` has a mapping of exactly `[start, start + len)`.
fn mapped(start: usize, len: usize) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let range = format!("{start:x}-{:x} ", start + len);
    maps.lines().any(|l| l.starts_with(&range))
}

/// Runs in a process of its own (this test binary again, with only this
/// test selected, one thread): other tests' threads map and unmap memory
/// at the same time, and the kernel merges adjacent anonymous mappings, so
/// `/proc/self/maps` of a shared process may show the buffer inside a
/// larger range, or its freed range mapped again by another test.
#[test]
fn test_hypercall_buffer_drop_unmaps() {
    const CHILD: &str = "GNTTAB_TEST_DROP_UNMAPS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return hypercall_buffer_drop_unmaps_alone();
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "dominfo::tests::test_hypercall_buffer_drop_unmaps",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hypercall_buffer_drop_unmaps_alone() {
    // An odd size, so that no other mapping is likely to match it.
    let len = 7 * PAGE_SIZE;
    let buf = HypercallBuffer::anonymous(NonZeroUsize::new(len).expect("nonzero")).expect("map");
    let start = buf.ptr.as_ptr() as usize;
    assert!(mapped(start, len), "mapped while alive");
    drop(buf);
    assert!(!mapped(start, len), "unmapped once dropped");
}

#[test]
fn test_list_more_than_one_batch_continues_after_last() {
    let many: Vec<_> = (1..=300u16).map(|d| domain(d * 2, 0, 0)).collect();
    let mut src = source(many);
    let list = src.list().expect("list");
    assert_eq!(list.len(), 300);
    assert_eq!(list.last().map(|d| d.domid), Some(600));
    let seen = SEEN.with(|s| s.borrow().clone());
    assert!(seen.len() >= 3, "{seen:?}");
    assert_eq!(seen[1].1, list[LIST_CAPACITY - 1].domid + 1);
}

#[test]
fn test_get_existing_domain_returns_it() {
    let mut src = source(vec![domain(0, 0, 0), domain(4, 0, 4)]);
    let info = src.get(4).expect("get").expect("present");
    assert_eq!(info.domid, 4);
    assert_eq!(SEEN.with(|s| s.borrow()[0].2), 1);
}

#[test]
fn test_get_absent_domain_next_one_returned_is_none() {
    let mut src = source(vec![domain(0, 0, 0), domain(9, 0, 9)]);
    assert_eq!(src.get(4).expect("get"), None);
    assert_eq!(src.get(10).expect("get"), None);
}

#[test]
fn test_list_interface_version_rejected_unsupported_xen_error() {
    let mut src = source(vec![]);
    FAIL.with(|f| f.set(Some(libc::EACCES)));
    let err = src.list().expect_err("must fail");
    assert!(
        matches!(
            err,
            Error::UnsupportedXen {
                major: 4,
                minor: 17,
                ours: 0x15
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Xen 4.17 rejected sysctl interface version 0x15 (this backend speaks Xen 4.17's)"
    );
}

#[test]
fn test_list_hypercall_fails_typed_error() {
    let mut src = source(vec![]);
    FAIL.with(|f| f.set(Some(libc::EPERM)));
    let err = src.list().expect_err("must fail");
    assert!(
        matches!(
            err,
            Error::Hypercall {
                op: "sysctl getdomaininfolist",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn test_list_count_beyond_buffer_rejected() {
    let mut src = source(vec![domain(0, 0, 0)]);
    OVERCOUNT.with(|o| o.set(true));
    let err = src.list().expect_err("must fail");
    assert!(matches!(err, Error::BadDomainCount { .. }), "{err:?}");
}

#[test]
fn test_shutdown_reason_codes_decode() {
    assert_eq!(ShutdownReason::from_code(0), ShutdownReason::Poweroff);
    assert_eq!(ShutdownReason::from_code(5), ShutdownReason::SoftReset);
    assert_eq!(ShutdownReason::from_code(77), ShutdownReason::Other(77));
}

#[test]
fn test_open_absent_privcmd_error_names_device() {
    let err = PrivcmdDomainInfo::open_paths(
        Path::new("/nonexistent/privcmd"),
        Path::new("/nonexistent/hypercall"),
    )
    .expect_err("must fail");
    assert!(
        matches!(err, Error::DeviceOpen { ref path, .. } if path == Path::new("/nonexistent/privcmd")),
        "{err:?}"
    );
}

// ---- On real Xen (dom0). ----

/// The real privcmd device, or `None` after [`skip`] when there is none.
fn real(test: &str) -> Option<PrivcmdDomainInfo> {
    if !Path::new("/dev/xen/privcmd").exists() {
        skip(Missing::Xen, test, "/dev/xen/privcmd absent");
        return None;
    }
    Some(PrivcmdDomainInfo::open().expect("open privcmd"))
}

#[test]
fn test_real_list_contains_dom0() {
    let Some(mut src) = real("test_real_list_contains_dom0") else {
        return;
    };
    println!(
        "hypervisor version {:?}",
        src.xen_version().expect("xen_version")
    );
    let list = src.list().expect("list domains");
    for d in &list {
        println!("domain {d:?}");
    }
    let dom0 = list.iter().find(|d| d.domid == 0).expect("dom0 listed");
    assert!(!dom0.dying && dom0.shutdown.is_none());
    assert_eq!(src.get(0).expect("get dom0").map(|d| d.domid), Some(0));
    assert_eq!(src.get(0x7fe0).expect("get absent"), None);
}

/// `XEN_DOMCTL_destroydomain` (Xen 4.17 `struct xen_domctl`: cmd,
/// interface_version 0x15, domain, 3 x u16 pad, 128-byte union), test-only:
/// stands in for the toolstack once xenstored (and so xl) is gone.
fn destroy_domain(src: &PrivcmdDomainInfo, domid: DomId) {
    let base = src.buf.ptr.as_ptr();
    let mut bytes = [0u8; 144];
    bytes[0..4].copy_from_slice(&2u32.to_ne_bytes());
    bytes[4..8].copy_from_slice(&0x15u32.to_ne_bytes());
    bytes[8..10].copy_from_slice(&domid.to_ne_bytes());
    loop {
        // SAFETY: the first page of the hypercall buffer is ours and unused now.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base, bytes.len()) };
        let mut call = sys::PrivcmdHypercall {
            op: 36, // __HYPERVISOR_domctl
            arg: [base as u64, 0, 0, 0, 0],
        };
        match src.hypercall("domctl destroydomain", &mut call) {
            Ok(_) => return,
            Err(Error::Hypercall { source, .. }) if source.raw_os_error() == Some(libc::EAGAIN) => {
            }
            Err(e) => panic!("destroy domain {domid}: {e:?}"),
        }
    }
}

/// With a guest that powers itself off (scripts/xen-qemu-devtests.sh) and no
/// xenstored holding the VIRQ: bind VIRQ_DOM_EXC, see the guest shut down,
/// destroy it, see it go.
#[test]
fn test_real_guest_lifecycle_seen_through_virq_dom_exc() {
    use evtchn::EventChannel as _;
    use std::time::{Duration, Instant};
    let Some(mut src) = real("test_real_guest_lifecycle_seen_through_virq_dom_exc") else {
        return;
    };
    let Some(domid) = std::env::var("XENQEMU_LIFECYCLE_DOMID")
        .ok()
        .and_then(|d| d.parse::<DomId>().ok())
    else {
        skip(
            Missing::Xen,
            "test_real_guest_lifecycle_seen_through_virq_dom_exc",
            "XENQEMU_LIFECYCLE_DOMID unset",
        );
        return;
    };
    let mut chan = evtchn::LinuxEventChannel::open().expect("open evtchn");
    let virq = chan
        .bind_virq(evtchn::VIRQ_DOM_EXC)
        .expect("bind VIRQ_DOM_EXC (no xenstored may hold it)");
    let first = src.get(domid).expect("get").expect("guest exists at start");
    println!("guest at start: {first:?}");
    assert!(!first.dying && first.shutdown.is_none());
    let start = Instant::now();
    let mut fired = 0;
    let mut states = vec![first];
    let mut destroyed = false;
    let mut gone = false;
    let mut pending = Vec::new();
    while start.elapsed() < Duration::from_secs(240) {
        pending.clear();
        chan.wait(Some(Duration::from_secs(1)), &mut pending)
            .expect("wait");
        let got_virq = pending.contains(&virq);
        if got_virq {
            fired += 1;
            chan.unmask(&[virq]).expect("unmask");
        }
        let now = src.get(domid).expect("get");
        let t = start.elapsed().as_secs_f32();
        match now {
            Some(now) => {
                if states.last() != Some(&now) {
                    println!("t={t:.1}s virq={got_virq} (x{fired}): {now:?}");
                    states.push(now);
                }
                if now.shutdown.is_some() && !destroyed {
                    println!("t={t:.1}s destroying domain {domid}");
                    destroy_domain(&src, domid);
                    destroyed = true;
                }
            }
            None => {
                println!("t={t:.1}s virq={got_virq} (x{fired}): domain {domid} gone");
                gone = true;
                break;
            }
        }
    }
    assert!(gone, "guest {domid} did not go away: {states:?}");
    assert!(fired > 0, "VIRQ_DOM_EXC never fired");
    assert!(
        states
            .iter()
            .any(|s| s.shutdown == Some(ShutdownReason::Poweroff)),
        "the guest's poweroff was not observed: {states:?}"
    );
}
