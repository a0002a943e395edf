//! The backends against a fake Xen that records every hypercall and plays
//! Xen's side of the grant table and of `XEN_DOMCTL_getdomaininfo`. The
//! grant window is a heap buffer, so a "mapped" page is real memory.

use super::*;
use alloc::collections::BTreeMap;
use std::sync::Mutex;

/// A page-aligned page of zeroes.
#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);

fn pages(n: usize) -> Box<[Page]> {
    (0..n)
        .map(|_| Page(core::array::from_fn(|_| AtomicU64::new(0))))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Map {
        host_addr: u64,
        flags: u32,
        gref: u32,
        dom: u16,
    },
    Unmap {
        host_addr: u64,
        dev_bus_addr: u64,
        handle: u32,
    },
    Domctl {
        cmd: u32,
        version: u32,
        domain: u16,
    },
    XenVersion,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    next_handle: u32,
    /// `(dom, ref)` -> GNTST_* status the map gets.
    map_status: BTreeMap<(u16, u32), i16>,
    /// The next unmap's `(return value, status)`.
    unmap_result: Option<(i64, i16)>,
    /// `(cmd, return value)` of a grant op that fails as a whole.
    gnttab_ret: Option<(u64, i64)>,
    /// The "hypervisor's" domains: domid -> (flags, handle[0]).
    domains: BTreeMap<u16, (u32, u8)>,
    /// Return value of every domctl, instead of answering.
    domctl_ret: Option<i64>,
    /// Answer each domctl with this domid (a broken hypervisor).
    domctl_lie: Option<u16>,
}

struct FakeXen {
    shared_info: Box<[Page]>,
    state: Mutex<State>,
}

// SAFETY: `shared_info` is a page-aligned heap page living as long as the
// fake; `hypercall` reads and writes only the struct its pointer argument
// names, for the operations the backends issue.
unsafe impl Hypervisor for FakeXen {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        let mut st = self.state.lock().unwrap();
        match op {
            abi::HYPERVISOR_GRANT_TABLE_OP => {
                assert_eq!(args[2], 1, "one op at a time");
                assert_eq!(args[3..], [0, 0]);
                let cmd = args[0];
                if let Some((failing, ret)) = st.gnttab_ret {
                    if failing == cmd {
                        return ret;
                    }
                }
                match cmd {
                    sys::GNTTABOP_MAP_GRANT_REF => {
                        let p = args[1] as *mut sys::GnttabMapGrantRef;
                        // SAFETY: the backend points args[1] at a map op.
                        let mut m = unsafe { p.read() };
                        st.calls.push(Call::Map {
                            host_addr: m.host_addr,
                            flags: m.flags,
                            gref: m.r#ref,
                            dom: m.dom,
                        });
                        m.status = st.map_status.get(&(m.dom, m.r#ref)).copied().unwrap_or(0);
                        st.next_handle += 1;
                        m.handle = 100 + st.next_handle;
                        // SAFETY: as for the read.
                        unsafe { p.write(m) };
                        0
                    }
                    sys::GNTTABOP_UNMAP_GRANT_REF => {
                        let p = args[1] as *mut sys::GnttabUnmapGrantRef;
                        // SAFETY: the backend points args[1] at an unmap op.
                        let mut u = unsafe { p.read() };
                        st.calls.push(Call::Unmap {
                            host_addr: u.host_addr,
                            dev_bus_addr: u.dev_bus_addr,
                            handle: u.handle,
                        });
                        let (ret, status) = st.unmap_result.take().unwrap_or((0, 0));
                        u.status = status;
                        // SAFETY: as for the read.
                        unsafe { p.write(u) };
                        ret
                    }
                    other => panic!("unexpected GNTTABOP {other}"),
                }
            }
            abi::HYPERVISOR_DOMCTL => {
                assert_eq!(args[1..], [0, 0, 0, 0]);
                let p = args[0] as *mut sys::XenDomctlGetdomaininfoOp;
                // SAFETY: the backend points args[0] at a whole xen_domctl.
                let mut d = unsafe { p.read() };
                assert!(st.calls.len() < 1000, "an endless walk of the domains");
                st.calls.push(Call::Domctl {
                    cmd: d.cmd,
                    version: d.interface_version,
                    domain: d.domain,
                });
                if let Some(ret) = st.domctl_ret {
                    return ret;
                }
                let found = match st.domctl_lie {
                    Some(id) => Some((id, (0, 0))),
                    None => st.domains.range(d.domain..).next().map(|(id, v)| (*id, *v)),
                };
                let Some((id, (flags, h0))) = found else {
                    return -3; // -ESRCH
                };
                d.domain = id;
                d.getdomaininfo = sys::XenDomctlGetdomaininfo {
                    domain: id,
                    flags,
                    handle: [h0; 16],
                    tot_pages: 1234,
                    ..Default::default()
                };
                // SAFETY: as for the read.
                unsafe { p.write(d) };
                0
            }
            abi::HYPERVISOR_XEN_VERSION => {
                assert_eq!(args, [abi::XENVER_VERSION, 0, 0, 0, 0]);
                st.calls.push(Call::XenVersion);
                0x0004_0013
            }
            other => panic!("unexpected hypercall {other}"),
        }
    }

    fn shared_info(&self) -> NonNull<u8> {
        NonNull::from(&self.shared_info[0]).cast()
    }

    fn system_time_ns(&self) -> u64 {
        0
    }

    fn block(&self, _deadline_ns: Option<u64>) {
        panic!("the gnttab backends never block");
    }
}

impl FakeXen {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            shared_info: pages(1),
            state: Mutex::new(State::default()),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn take_calls(&self) -> Vec<Call> {
        self.with(|st| core::mem::take(&mut st.calls))
    }
}

/// A mapper over a window of `n` heap pages (returned, to keep it alive).
fn mapper(xen: &Arc<FakeXen>, n: usize) -> (HypercallPageMapper<FakeXen>, Box<[Page]>, usize) {
    let window = pages(n);
    let base = window.as_ptr() as usize;
    // SAFETY: the window is a heap buffer of `n` pages that the test keeps
    // alive and touches only through the mapper's pages.
    let m = unsafe { HypercallPageMapper::new(xen.clone(), VaWindows { base, pages: n }) }.unwrap();
    (m, window, base)
}

#[test]
fn test_map_grant_host_map_inside_window_ref_and_domid() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 4);
    let page = m.map_grant(7, 1).unwrap();
    assert_eq!(
        xen.take_calls(),
        [Call::Map {
            host_addr: base as u64,
            flags: sys::GNTMAP_HOST_MAP,
            gref: 1,
            dom: 7
        }]
    );
    assert_eq!(page.ring().as_ptr() as usize, base);
    let second = m.map_grant(8, 5).unwrap();
    assert_eq!(
        xen.take_calls(),
        [Call::Map {
            host_addr: (base + PAGE_SIZE) as u64,
            flags: 2,
            gref: 5,
            dom: 8
        }]
    );
    assert_eq!(second.ring().as_ptr() as usize, base + PAGE_SIZE);
}

#[test]
fn test_map_grant_page_reads_and_writes_the_window_page() {
    let xen = FakeXen::new();
    let (m, window, _) = mapper(&xen, 2);
    let _first = m.map_grant(1, 1).unwrap();
    let page = m.map_grant(2, 1).unwrap();
    page.ring().set_evtchn_port(0x1234_5678);
    // xenstore_domain_interface's evtchn_port sits at byte 2076 (word 259,
    // high half) of the second window page.
    let word = window[1].0[259].load(SeqCst);
    assert_eq!(word >> 32, 0x1234_5678);
    assert_eq!(window[0].0[259].load(SeqCst), 0, "the first page untouched");
}

#[test]
fn test_drop_unmaps_with_handle_and_address() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 2);
    let page = m.map_grant(3, 1).unwrap();
    xen.take_calls();
    drop(page);
    assert_eq!(
        xen.take_calls(),
        [Call::Unmap {
            host_addr: base as u64,
            dev_bus_addr: 0,
            handle: 101
        }]
    );
    assert_eq!(m.stuck_pages(), 0);
}

#[test]
fn test_window_full_typed_error_then_reused_after_drop() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 2);
    let a = m.map_grant(1, 1).unwrap();
    let b = m.map_grant(2, 1).unwrap();
    xen.take_calls();
    let e = m.map_grant(3, 1).unwrap_err();
    assert!(matches!(e, Error::WindowFull { pages: 2 }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "no free page in the grant-mapping window of 2 pages"
    );
    assert_eq!(xen.take_calls(), [], "no hypercall without a page");
    drop(a);
    let c = m.map_grant(3, 1).unwrap();
    assert_eq!(c.ring().as_ptr() as usize, base, "the freed page again");
    drop(b);
    drop(c);
}

#[test]
fn test_window_of_many_words_every_page_used_once() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 130);
    let mut held = Vec::new();
    for i in 0..130 {
        let p = m.map_grant(1, i).unwrap();
        assert_eq!(p.ring().as_ptr() as usize, base + i as usize * PAGE_SIZE);
        held.push(p);
    }
    assert!(matches!(
        m.map_grant(1, 200),
        Err(Error::WindowFull { pages: 130 })
    ));
    let p = held.remove(100);
    drop(p);
    assert_eq!(
        m.map_grant(1, 201).unwrap().ring().as_ptr() as usize,
        base + 100 * PAGE_SIZE
    );
}

#[test]
fn test_map_grant_status_typed_error_names_domid_ref_status_slot_freed() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 1);
    xen.with(|st| st.map_status.insert((9, 1), -3));
    let e = m.map_grant(9, 1).unwrap_err();
    match e {
        Error::GrantMap {
            domid,
            gref,
            status,
        } => {
            assert_eq!((domid, gref), (9, 1));
            assert_eq!(status, GrantStatus::BAD_GNTREF);
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "Xen refused to map grant 1 of domain 9: GNTST_bad_gntref (-3)"
    );
    xen.take_calls();
    let page = m.map_grant(10, 1).unwrap();
    assert_eq!(
        page.ring().as_ptr() as usize,
        base,
        "the page is free again"
    );
}

#[test]
fn test_map_grant_hypercall_error_typed_slot_freed() {
    let xen = FakeXen::new();
    let (m, _window, _) = mapper(&xen, 1);
    xen.with(|st| st.gnttab_ret = Some((sys::GNTTABOP_MAP_GRANT_REF, -14)));
    assert!(matches!(
        m.map_grant(1, 1),
        Err(Error::Xen {
            op: "GNTTABOP_map_grant_ref",
            errno: XenErrno::EFAULT
        })
    ));
    xen.with(|st| st.gnttab_ret = None);
    assert!(m.map_grant(1, 1).is_ok());
}

#[test]
fn test_failed_unmap_status_keeps_page_out_of_use() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 2);
    let page = m.map_grant(1, 1).unwrap();
    xen.with(|st| st.unmap_result = Some((0, -4)));
    drop(page);
    assert_eq!(m.stuck_pages(), 1);
    let next = m.map_grant(1, 1).unwrap();
    assert_eq!(
        next.ring().as_ptr() as usize,
        base + PAGE_SIZE,
        "the possibly still-mapped page is not reused"
    );
    assert!(matches!(
        m.map_grant(1, 2),
        Err(Error::WindowFull { pages: 2 })
    ));
}

#[test]
fn test_failed_unmap_hypercall_keeps_page_out_of_use() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 2);
    let page = m.map_grant(1, 1).unwrap();
    xen.with(|st| st.unmap_result = Some((-22, 0)));
    drop(page);
    assert_eq!(m.stuck_pages(), 1);
    assert_eq!(
        m.map_grant(1, 1).unwrap().ring().as_ptr() as usize,
        base + PAGE_SIZE
    );
}

#[test]
fn test_page_outlives_mapper_unmaps_on_drop() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 1);
    let page = m.map_grant(1, 1).unwrap();
    drop(m);
    xen.take_calls();
    drop(page);
    assert_eq!(
        xen.take_calls(),
        [Call::Unmap {
            host_addr: base as u64,
            dev_bus_addr: 0,
            handle: 101
        }]
    );
}

#[test]
fn test_new_rejects_bad_windows() {
    let xen = FakeXen::new();
    for (base, pages) in [
        (0x1000_0000, 0),
        (0, 4),
        (0x1000_0800, 4),
        (usize::MAX - 0xfff, 2),
        (0x1000, usize::MAX),
    ] {
        // SAFETY: every one of these is refused before it is used.
        let r = unsafe { HypercallPageMapper::new(xen.clone(), VaWindows { base, pages }) };
        assert!(
            matches!(r, Err(Error::BadWindow { base: b, pages: p }) if b == base && p == pages),
            "{base:#x} {pages}"
        );
    }
    // SAFETY: never mapped into (no map_grant call).
    let last = unsafe {
        HypercallPageMapper::new(
            xen.clone(),
            VaWindows {
                base: usize::MAX - 0xfff - PAGE_SIZE,
                pages: 1,
            },
        )
    };
    assert!(last.is_ok(), "a window ending below the top fits");
}

#[test]
fn test_map_foreign_and_local_xenstore_unsupported() {
    let xen = FakeXen::new();
    let (m, _window, _) = mapper(&xen, 1);
    assert!(matches!(
        m.map_foreign(1, 0x1234),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        m.map_local_xenstore(),
        Err(Error::Unsupported { .. })
    ));
    assert_eq!(xen.take_calls(), []);
}

#[test]
fn test_debug_shows_page_domid_ref_and_handle() {
    let xen = FakeXen::new();
    let (m, _window, base) = mapper(&xen, 1);
    let page = m.map_grant(4, 1).unwrap();
    assert_eq!(
        format!("{page:?}"),
        format!("HypercallPage {{ domid: 4, gref: 1, addr: {base:#x}, handle: 101 }}")
    );
    assert!(format!("{m:?}").contains("stuck: 0"));
}

#[test]
fn test_grant_status_names() {
    assert_eq!(GrantStatus(-13).to_string(), "GNTST_no_space (-13)");
    assert_eq!(GrantStatus(-99).to_string(), "grant status -99");
    assert_eq!(GrantStatus::OKAY.name(), Some("GNTST_okay"));
    for (status, name) in [
        (GrantStatus::BAD_DOMAIN, "GNTST_bad_domain"),
        (GrantStatus::BAD_GNTREF, "GNTST_bad_gntref"),
        (GrantStatus::BAD_HANDLE, "GNTST_bad_handle"),
        (GrantStatus::BAD_VIRT_ADDR, "GNTST_bad_virt_addr"),
        (GrantStatus::EAGAIN, "GNTST_eagain"),
    ] {
        assert_eq!(status.name(), Some(name));
    }
}

// ---- XEN_DOMCTL_getdomaininfo ----

fn domains(xen: &FakeXen, list: &[(u16, u32)]) {
    xen.with(|st| {
        for &(id, flags) in list {
            st.domains
                .insert(id, (flags, u8::try_from(id).unwrap_or(0)));
        }
    });
}

#[test]
fn test_get_passes_cmd_version_domid_and_decodes_flags() {
    let xen = FakeXen::new();
    // dying; shut down with SHUTDOWN_crash (3 << 16 | XEN_DOMINF_shutdown).
    domains(&xen, &[(0, 0), (5, 1), (6, (3 << 16) | 4)]);
    let mut src = HypercallDomainInfo::new(xen.clone());
    let d5 = src.get(5).unwrap().unwrap();
    assert_eq!(
        xen.take_calls(),
        [Call::Domctl {
            cmd: 5,
            version: 0x15,
            domain: 5
        }]
    );
    assert_eq!(d5.domid, 5);
    assert!(d5.dying);
    assert_eq!(d5.shutdown, None);
    assert_eq!(d5.handle, [5; 16]);
    assert_eq!(d5.unique_id, None);
    let d6 = src.get(6).unwrap().unwrap();
    assert!(!d6.dying);
    assert_eq!(d6.shutdown, Some(crate::ShutdownReason::Crash));
    let d0 = src.get(0).unwrap().unwrap();
    assert!(!d0.dying);
    assert_eq!(d0.shutdown, None);
}

#[test]
fn test_get_absent_domain_next_one_answered_is_none() {
    let xen = FakeXen::new();
    domains(&xen, &[(0, 0), (9, 0)]);
    let mut src = HypercallDomainInfo::new(xen.clone());
    assert_eq!(src.get(3).unwrap(), None, "Xen answers for 9");
    assert_eq!(src.get(10).unwrap(), None, "-ESRCH");
    assert_eq!(
        xen.take_calls().len(),
        2,
        "one domctl each, no retry after ESRCH"
    );
}

#[test]
fn test_get_reserved_domid_none_without_hypercall() {
    let xen = FakeXen::new();
    domains(&xen, &[(0, 0)]);
    let mut src = HypercallDomainInfo::new(xen.clone());
    assert_eq!(src.get(sys::DOMID_FIRST_RESERVED).unwrap(), None);
    assert_eq!(src.get(u16::MAX).unwrap(), None);
    assert_eq!(xen.take_calls(), []);
}

#[test]
fn test_list_walks_ids_after_each_answer() {
    let xen = FakeXen::new();
    domains(&xen, &[(0, 0), (2, 0), (7, 1), (0x7fef, 0)]);
    let mut src = HypercallDomainInfo::new(xen.clone());
    let ids: Vec<DomId> = src.list().unwrap().iter().map(|d| d.domid).collect();
    assert_eq!(ids, [0, 2, 7, 0x7fef]);
    let asked: Vec<u16> = xen
        .take_calls()
        .into_iter()
        .map(|c| match c {
            Call::Domctl {
                domain,
                cmd: 5,
                version: 0x15,
            } => domain,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        asked,
        [0, 1, 3, 8],
        "after 0x7fef the next id is reserved: no call"
    );
}

#[test]
fn test_list_no_domains_empty() {
    let xen = FakeXen::new();
    let mut src = HypercallDomainInfo::new(xen.clone());
    assert_eq!(src.list().unwrap(), []);
    assert_eq!(xen.take_calls().len(), 1);
}

#[test]
fn test_domctl_version_rejected_unsupported_xen_with_version() {
    let xen = FakeXen::new();
    xen.with(|st| st.domctl_ret = Some(-13));
    let mut src = HypercallDomainInfo::new(xen.clone());
    let e = src.list().unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedXenDomctl {
                major: 4,
                minor: 19,
                ours: 0x15
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        xen.take_calls()[1..],
        [Call::XenVersion],
        "asks the version to say which Xen"
    );
}

#[test]
fn test_domctl_other_error_typed() {
    let xen = FakeXen::new();
    xen.with(|st| st.domctl_ret = Some(-1));
    let mut src = HypercallDomainInfo::new(xen.clone());
    assert!(matches!(
        src.get(0),
        Err(Error::Xen {
            op: "XEN_DOMCTL_getdomaininfo",
            errno: XenErrno::EPERM
        })
    ));
}

#[test]
fn test_domctl_lower_or_reserved_answer_typed_error_no_loop() {
    let xen = FakeXen::new();
    xen.with(|st| st.domctl_lie = Some(0));
    let mut src = HypercallDomainInfo::new(xen.clone());
    assert_eq!(src.get(0).unwrap().map(|d| d.domid), Some(0));
    // A hypervisor answering 0 for every id would loop forever.
    assert!(matches!(
        src.list(),
        Err(Error::DomainOutOfOrder {
            asked: 1,
            returned: 0
        })
    ));
    xen.with(|st| st.domctl_lie = Some(sys::DOMID_FIRST_RESERVED));
    assert!(matches!(
        src.get(4),
        Err(Error::DomainOutOfOrder {
            asked: 4,
            returned: 0x7ff0
        })
    ));
}

#[test]
fn test_domain_info_debug_says_what_it_is() {
    let src = HypercallDomainInfo::new(FakeXen::new());
    assert_eq!(format!("{src:?}"), "HypercallDomainInfo { .. }");
}

#[test]
fn test_xen_version_decodes_major_minor() {
    let xen = FakeXen::new();
    let src = HypercallDomainInfo::new(xen);
    assert_eq!(src.xen_version().unwrap(), (4, 19));
}
