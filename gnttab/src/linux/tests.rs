use super::*;
use crate::testskip::{skip, Missing};

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::sync::atomic::Ordering;

use xenring::page::RingIndex;

thread_local! {
    static CALLS: RefCell<Vec<(u32, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
    /// Index the fake MAP_GRANT_REF hands out.
    static MAP_INDEX: Cell<u64> = const { Cell::new(0) };
    /// Fake per-page code written to `err[0]` by MMAPBATCH_V2.
    static BATCH_ERR: Cell<i32> = const { Cell::new(0) };
    /// What every fake ioctl returns: `Ok(rc)` or `Err(errno)`.
    static REPLY: Cell<Result<libc::c_int, i32>> = const { Cell::new(Ok(0)) };
}

/// Records requests and plays the kernel's side of the two map requests.
///
/// # Safety
///
/// As for [`IoctlFn`].
unsafe fn fake_ioctl(_fd: RawFd, request: u32, arg: *mut c_void) -> io::Result<libc::c_int> {
    let size = usize::try_from((request >> 16) & 0x3fff).expect("fits");
    // SAFETY: the backend passes a live struct of exactly `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(arg.cast::<u8>(), size) }.to_vec();
    CALLS.with(|c| c.borrow_mut().push((request, bytes)));
    if request == sys::ioctl_gntdev_map_grant_ref() {
        // SAFETY: the request says `arg` is this struct.
        unsafe { (*arg.cast::<sys::IoctlGntdevMapGrantRef>()).index = MAP_INDEX.with(Cell::get) };
    } else if request == sys::ioctl_privcmd_mmapbatch_v2() {
        // SAFETY: the request says `arg` is this struct, whose `err` points to
        // `num` (= 1) ints.
        unsafe { *(*arg.cast::<sys::PrivcmdMmapbatchV2>()).err = BATCH_ERR.with(Cell::get) };
    }
    REPLY.with(Cell::get).map_err(io::Error::from_raw_os_error)
}

fn reset(reply: Result<libc::c_int, i32>, index: u64, batch_err: i32) {
    CALLS.with(|c| c.borrow_mut().clear());
    REPLY.with(|r| r.set(reply));
    MAP_INDEX.with(|i| i.set(index));
    BATCH_ERR.with(|e| e.set(batch_err));
}

fn calls() -> Vec<(u32, Vec<u8>)> {
    CALLS.with(|c| c.borrow().clone())
}

/// A "device" that is a two-page temporary file whose second page starts
/// with `marker`, so a test can see which offset was mapped.
fn fake_device(name: &str, marker: u32) -> Device {
    let mut file = tempfile::tempfile().expect("tempfile");
    let mut content = vec![0u8; 2 * PAGE_SIZE];
    content[PAGE_SIZE + 2052..PAGE_SIZE + 2056].copy_from_slice(&marker.to_ne_bytes());
    file.write_all(&content).expect("fill");
    Device {
        path: PathBuf::from(name),
        fd: OwnedFd::from(file),
        ioctl: fake_ioctl,
    }
}

fn fake_mapper() -> LinuxPageMapper {
    LinuxPageMapper::with_devices(
        fake_device("fake-gntdev", 0xabcd),
        fake_device("fake-privcmd", 0),
        DevicePaths::default(),
    )
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

#[test]
fn test_map_grant_args_marshalled_maps_returned_index() {
    let mapper = fake_mapper();
    reset(Ok(0), PAGE_SIZE as u64, 0);
    let page = mapper
        .map_grant(7, crate::GNTTAB_RESERVED_XENSTORE)
        .expect("map");
    // The page at the returned index (offset 4096) is the one mapped.
    assert_eq!(
        page.ring()
            .load_index(RingIndex::ReqProd, Ordering::Acquire),
        0xabcd
    );
    let mut expected = u32s(&[1, 0]);
    expected.extend_from_slice(&0u64.to_ne_bytes()); // index is OUT
    expected.extend_from_slice(&u32s(&[7, 1]));
    assert_eq!(calls(), vec![(sys::ioctl_gntdev_map_grant_ref(), expected)]);
}

#[test]
fn test_map_grant_dropped_unmaps_with_same_index() {
    let mapper = fake_mapper();
    reset(Ok(0), PAGE_SIZE as u64, 0);
    let page = mapper.map_grant(3, 1).expect("map");
    drop(page);
    let mut expected = (PAGE_SIZE as u64).to_ne_bytes().to_vec();
    expected.extend_from_slice(&u32s(&[1, 0]));
    assert_eq!(calls()[1], (sys::ioctl_gntdev_unmap_grant_ref(), expected));
}

#[test]
fn test_map_grant_ioctl_fails_typed_error() {
    let mapper = fake_mapper();
    reset(Err(libc::EINVAL), 0, 0);
    let err = mapper.map_grant(3, 1).expect_err("must fail");
    assert!(
        matches!(
            err,
            Error::Ioctl {
                op: "IOCTL_GNTDEV_MAP_GRANT_REF",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn test_map_grant_mmap_fails_reservation_released() {
    let mapper = fake_mapper();
    // An offset that is not page-aligned cannot be mapped.
    reset(Ok(0), 100, 0);
    let err = mapper.map_grant(3, 1).expect_err("must fail");
    assert!(matches!(err, Error::Mmap { .. }), "{err:?}");
    assert_eq!(
        calls().last().map(|c| c.0),
        Some(sys::ioctl_gntdev_unmap_grant_ref())
    );
}

#[test]
fn test_map_foreign_args_marshalled_maps_page() {
    let mapper = fake_mapper();
    reset(Ok(0), 0, 0);
    let page = mapper.map_foreign(9, 0x1234_5678).expect("map");
    let (request, bytes) = calls().remove(0);
    assert_eq!(request, sys::ioctl_privcmd_mmapbatch_v2());
    assert_eq!(&bytes[0..4], &1u32.to_ne_bytes());
    assert_eq!(&bytes[4..6], &9u16.to_ne_bytes());
    let addr = u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"));
    assert_eq!(addr, page.ring().as_ptr() as u64, "addr is the mapping");
}

#[test]
fn test_map_foreign_per_page_error_typed_error() {
    let mapper = fake_mapper();
    reset(Ok(0), 0, -libc::EPERM);
    let err = mapper.map_foreign(9, 0x42).expect_err("must fail");
    match &err {
        Error::ForeignFrame { domid, mfn, source } => {
            assert_eq!((*domid, *mfn), (9, 0x42));
            assert_eq!(source.raw_os_error(), Some(libc::EPERM));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "the hypervisor refused to map frame 0x42 of domain 9"
    );
}

#[test]
fn test_map_foreign_paged_out_enoent_typed_error() {
    let mapper = fake_mapper();
    reset(Err(libc::ENOENT), 0, -libc::ENOENT);
    let err = mapper.map_foreign(9, 0x42).expect_err("must fail");
    assert!(matches!(err, Error::ForeignFrame { .. }), "{err:?}");
}

#[test]
fn test_map_foreign_ioctl_fails_other_errno_ioctl_error() {
    // Only ENOENT with a per-page code is the frame's fault; any other
    // failure of the call is the call's, whatever the per-page code says.
    for (errno, batch_err) in [(libc::EINVAL, -libc::EINVAL), (libc::ENOENT, 0)] {
        let mapper = fake_mapper();
        reset(Err(errno), 0, batch_err);
        let err = mapper.map_foreign(9, 0x42).expect_err("must fail");
        match &err {
            Error::Ioctl {
                op: "IOCTL_PRIVCMD_MMAPBATCH_V2",
                source,
            } => assert_eq!(source.raw_os_error(), Some(errno)),
            other => panic!("errno {errno}, per-page {batch_err}: unexpected {other:?}"),
        }
    }
}

/// Whether `/proc/self/maps` has a mapping of exactly the page at `start`
/// backed by the file `device` has open. The inode matters: other tests in
/// this binary map and unmap temporary files of their own at the same
/// time, and one may land at `start` as soon as the page under test goes.
fn page_mapped(start: usize, device: &Device) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let file = std::fs::File::from(device.fd.try_clone().expect("dup device fd"));
    let inode = file.metadata().expect("fstat device").ino().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let range = format!("{start:x}-{:x} ", start + PAGE_SIZE);
    maps.lines()
        .filter(|l| l.starts_with(&range))
        .any(|l| l.split_whitespace().nth(4) == Some(inode.as_str()))
}

#[test]
fn test_map_foreign_page_debug_names_frame_and_drop_unmaps() {
    let mapper = fake_mapper();
    reset(Ok(0), 0, 0);
    let page = mapper.map_foreign(9, 0x1234).expect("map");
    assert_eq!(
        format!("{page:?}"),
        "MappedPage { what: \"domain 9 frame 0x1234\" }"
    );
    let start = page.ring().as_ptr() as usize;
    assert!(page_mapped(start, &mapper.privcmd), "mapped while alive");
    drop(page);
    assert!(
        !page_mapped(start, &mapper.privcmd),
        "unmapped once dropped"
    );
}

#[test]
fn test_map_grant_page_debug_names_grant() {
    let mapper = fake_mapper();
    reset(Ok(0), PAGE_SIZE as u64, 0);
    let page = mapper.map_grant(7, 1).expect("map");
    assert_eq!(
        format!("{page:?}"),
        format!("GrantPage {{ domid: 7, gref: 1, index: {PAGE_SIZE} }}")
    );
}

#[test]
fn test_mapper_debug_names_devices() {
    let text = format!("{:?}", fake_mapper());
    assert!(
        text.contains("Device { path: \"fake-gntdev\", fd: "),
        "{text}"
    );
    assert!(
        text.contains("Device { path: \"fake-privcmd\", fd: "),
        "{text}"
    );
}

#[test]
fn test_open_absent_gntdev_error_names_device() {
    let paths = DevicePaths {
        gntdev: "/nonexistent/xen/gntdev".into(),
        ..DevicePaths::default()
    };
    let err = LinuxPageMapper::open_paths(paths).expect_err("must fail");
    match &err {
        Error::DeviceOpen { path, .. } => assert_eq!(path, Path::new("/nonexistent/xen/gntdev")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "cannot open the device /nonexistent/xen/gntdev"
    );
}

fn local_paths(
    kva: Vec<PathBuf>,
    port_text: Option<&[u8]>,
) -> (tempfile::TempDir, LinuxPageMapper) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dir.path().join("xsd_port");
    if let Some(text) = port_text {
        std::fs::write(&port, text).expect("write port");
    }
    let mut mapper = fake_mapper();
    mapper.paths = DevicePaths {
        xsd_kva: kva,
        xsd_port: port,
        ..DevicePaths::default()
    };
    (dir, mapper)
}

#[test]
fn test_map_local_xenstore_second_path_used_reads_page_and_port() {
    let kva = tempfile::NamedTempFile::new().expect("tempfile");
    let mut page = vec![0u8; PAGE_SIZE];
    page[2048..2052].copy_from_slice(&5u32.to_ne_bytes()); // req_cons
    std::fs::write(kva.path(), &page).expect("fill");
    let (_dir, mapper) = local_paths(
        vec!["/nonexistent/xsd_kva".into(), kva.path().to_path_buf()],
        Some(b"17\n"),
    );
    let local = mapper.map_local_xenstore().expect("map");
    assert_eq!(local.port, evtchn::Port::new(17));
    assert_eq!(
        local
            .page
            .ring()
            .load_index(RingIndex::ReqCons, Ordering::Acquire),
        5
    );
}

#[test]
fn test_map_local_xenstore_no_kva_error_names_last_path() {
    let (_dir, mapper) = local_paths(
        vec!["/nonexistent/a".into(), "/nonexistent/b".into()],
        Some(b"1"),
    );
    let err = mapper.map_local_xenstore().expect_err("must fail");
    match err {
        Error::DeviceOpen { path, .. } => assert_eq!(path, Path::new("/nonexistent/b")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn test_map_local_xenstore_port_garbage_parse_error() {
    let (_dir, mapper) = local_paths(vec![], Some(b"seven"));
    let err = mapper.map_local_xenstore().expect_err("must fail");
    assert!(
        matches!(err, Error::XsdPortParse { ref text, .. } if text == "seven"),
        "{err:?}"
    );
}

#[test]
fn test_map_local_xenstore_port_absent_read_error() {
    let (_dir, mapper) = local_paths(vec![], None);
    let err = mapper.map_local_xenstore().expect_err("must fail");
    assert!(matches!(err, Error::XsdPortRead { .. }), "{err:?}");
}

// ---- On real Xen (dom0): skipped elsewhere. ----

/// The real devices, or `None` after [`skip`] when one is absent.
fn real(test: &str) -> Option<LinuxPageMapper> {
    for dev in ["/dev/xen/gntdev", "/dev/xen/privcmd"] {
        if !Path::new(dev).exists() {
            skip(Missing::Xen, test, &format!("{dev} absent"));
            return None;
        }
    }
    Some(LinuxPageMapper::open().expect("open real devices"))
}

#[test]
fn test_real_map_local_xenstore_reads_indices() {
    let Some(mapper) = real("test_real_map_local_xenstore_reads_indices") else {
        return;
    };
    if !Path::new("/proc/xen/xsd_port").exists() {
        skip(
            Missing::Xen,
            "test_real_map_local_xenstore_reads_indices",
            "/proc/xen/xsd_port absent",
        );
        return;
    }
    let local = mapper
        .map_local_xenstore()
        .expect("map dom0's xenstore page");
    let ring = local.page.ring();
    println!(
        "dom0 xenstore: port {} req_cons={} req_prod={} rsp_cons={} rsp_prod={} evtchn_port word={}",
        local.port,
        ring.load_index(RingIndex::ReqCons, Ordering::Acquire),
        ring.load_index(RingIndex::ReqProd, Ordering::Acquire),
        ring.load_index(RingIndex::RspCons, Ordering::Acquire),
        ring.load_index(RingIndex::RspProd, Ordering::Acquire),
        ring.evtchn_port(),
    );
    let req = ring
        .load_index(RingIndex::ReqProd, Ordering::Acquire)
        .wrapping_sub(ring.load_index(RingIndex::ReqCons, Ordering::Acquire));
    assert!(req <= 1024, "dom0 request ring is consistent");
}

/// Set by scripts/xen-qemu-devtests.sh: a running PV guest and its store
/// details as the toolstack wrote them to xenstore.
fn guest() -> Option<(DomId, u64)> {
    let domid = std::env::var("XENQEMU_GUEST_DOMID").ok()?.parse().ok()?;
    let mfn = std::env::var("XENQEMU_GUEST_STORE_MFN")
        .ok()?
        .parse()
        .ok()?;
    Some((domid, mfn))
}

#[test]
fn test_real_guest_grant_and_mfn_map_same_page() {
    let Some(mapper) = real("test_real_guest_grant_and_mfn_map_same_page") else {
        return;
    };
    let Some((domid, mfn)) = guest() else {
        skip(
            Missing::Xen,
            "test_real_guest_grant_and_mfn_map_same_page",
            "no guest (XENQEMU_GUEST_DOMID/XENQEMU_GUEST_STORE_MFN unset)",
        );
        return;
    };
    let by_grant = mapper
        .map_grant(domid, crate::GNTTAB_RESERVED_XENSTORE)
        .expect("map the guest's grant 1 (also mapped by xenstored)");
    let by_mfn = mapper
        .map_foreign(domid, mfn)
        .expect("map the guest's store mfn");
    let (g, m) = (by_grant.ring(), by_mfn.ring());
    for index in [
        RingIndex::ReqCons,
        RingIndex::ReqProd,
        RingIndex::RspCons,
        RingIndex::RspProd,
    ] {
        assert_eq!(
            g.load_index(index, Ordering::Acquire),
            m.load_index(index, Ordering::Acquire),
            "{index:?} differs between the two mappings"
        );
    }
    println!(
        "guest {domid}: grant 1 and mfn {mfn:#x} map the same ring: req {}/{} rsp {}/{} features {:?}",
        g.load_index(RingIndex::ReqCons, Ordering::Acquire),
        g.load_index(RingIndex::ReqProd, Ordering::Acquire),
        g.load_index(RingIndex::RspCons, Ordering::Acquire),
        g.load_index(RingIndex::RspProd, Ordering::Acquire),
        g.server_features(),
    );
    // A frame the guest does not own is refused with a typed error.
    let err = mapper.map_foreign(domid, 0).expect_err("frame 0 is Xen's");
    println!("mapping guest frame 0 refused as expected: {err}");
    assert!(
        matches!(err, Error::ForeignFrame { .. } | Error::Ioctl { .. }),
        "{err:?}"
    );
}
