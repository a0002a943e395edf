//! The backend against a fake Xen: a struct that records every hypercall
//! and plays Xen's side of the 2-level ABI over a heap page standing in for
//! shared_info.

use super::*;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use std::sync::Mutex;

/// A page-aligned 4096-byte page of zeroes.
#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    BindInterdomain { remote_dom: u16, remote_port: u32 },
    BindVirq { virq: u32, vcpu: u32 },
    AllocUnbound { dom: u16, remote_dom: u16 },
    Close(u32),
    Send(u32),
    Unmask(u32),
    Block(Option<u64>),
}

/// What the fake does when the backend blocks.
#[derive(Debug, Clone, Copy)]
enum OnBlock {
    /// Marks a port pending, as an event from another domain would.
    Raise(u32),
    /// Moves the clock by this many nanoseconds.
    Advance(u64),
}

struct FakeXen {
    page: Box<Page>,
    calls: Mutex<Vec<Call>>,
    now: AtomicU64,
    /// Ports the next binds return.
    next_ports: Mutex<VecDeque<u32>>,
    /// `(EVTCHNOP_*, return value)`: that operation fails.
    fail: Mutex<Option<(u64, i64)>>,
    on_block: Mutex<VecDeque<OnBlock>>,
}

// SAFETY: the page is 4096 bytes, page-aligned, lives as long as the fake
// and is only reached through atomics; `hypercall` plays Xen's side for the
// operations the backend issues, reading and writing only the structs the
// pointers it is given name.
unsafe impl Hypervisor for FakeXen {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        assert_eq!(
            op,
            abi::HYPERVISOR_EVENT_CHANNEL_OP,
            "only event_channel_op"
        );
        assert_eq!(args[2..], [0, 0, 0], "unused arguments are 0");
        let cmd = args[0];
        let ptr = args[1] as *mut u8;
        if let Some((failing, ret)) = *self.fail.lock().unwrap() {
            if failing == cmd {
                return ret;
            }
        }
        let call = match cmd {
            abi::EVTCHNOP_BIND_INTERDOMAIN => {
                let p = ptr.cast::<abi::EvtchnBindInterdomain>();
                // SAFETY: the backend points args[1] at the struct `cmd` takes.
                let mut a = unsafe { p.read() };
                a.local_port = self.next_port();
                // SAFETY: as for the read; Xen writes the OUT field back.
                unsafe { p.write(a) };
                Call::BindInterdomain {
                    remote_dom: a.remote_dom,
                    remote_port: a.remote_port,
                }
            }
            abi::EVTCHNOP_BIND_VIRQ => {
                let p = ptr.cast::<abi::EvtchnBindVirq>();
                // SAFETY: the backend points args[1] at the struct `cmd` takes.
                let mut a = unsafe { p.read() };
                a.port = self.next_port();
                // SAFETY: as for the read; Xen writes the OUT field back.
                unsafe { p.write(a) };
                Call::BindVirq {
                    virq: a.virq,
                    vcpu: a.vcpu,
                }
            }
            abi::EVTCHNOP_ALLOC_UNBOUND => {
                let p = ptr.cast::<abi::EvtchnAllocUnbound>();
                // SAFETY: the backend points args[1] at the struct `cmd` takes.
                let mut a = unsafe { p.read() };
                a.port = self.next_port();
                // SAFETY: as for the read; Xen writes the OUT field back.
                unsafe { p.write(a) };
                Call::AllocUnbound {
                    dom: a.dom,
                    remote_dom: a.remote_dom,
                }
            }
            abi::EVTCHNOP_CLOSE | abi::EVTCHNOP_SEND | abi::EVTCHNOP_UNMASK => {
                // SAFETY: these three take a port-only struct at args[1].
                let port = unsafe { ptr.cast::<abi::EvtchnPort>().read() }.port;
                match cmd {
                    abi::EVTCHNOP_CLOSE => Call::Close(port),
                    abi::EVTCHNOP_SEND => Call::Send(port),
                    _ => {
                        self.xen_unmask(port);
                        Call::Unmask(port)
                    }
                }
            }
            other => panic!("unexpected EVTCHNOP {other}"),
        };
        self.calls.lock().unwrap().push(call);
        0
    }

    fn shared_info(&self) -> NonNull<u8> {
        NonNull::from(&*self.page).cast()
    }

    fn system_time_ns(&self) -> u64 {
        self.now.load(SeqCst)
    }

    fn block(&self, deadline_ns: Option<u64>) {
        {
            let mut calls = self.calls.lock().unwrap();
            assert!(calls.len() < 1000, "wait spins on block");
            calls.push(Call::Block(deadline_ns));
        }
        if self.upcall() {
            return;
        }
        let action = self.on_block.lock().unwrap().pop_front();
        match action {
            Some(OnBlock::Raise(port)) => self.raise(port),
            Some(OnBlock::Advance(ns)) => {
                self.now.fetch_add(ns, SeqCst);
            }
            None => {
                let deadline = deadline_ns.expect("blocked forever with nothing to wake it");
                self.now.fetch_max(deadline, SeqCst);
            }
        }
    }
}

const fn word_bit(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1 << (port % 64))
}

impl FakeXen {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            page: Box::new(Page(core::array::from_fn(|_| AtomicU64::new(0)))),
            calls: Mutex::new(Vec::new()),
            now: AtomicU64::new(1_000_000),
            next_ports: Mutex::new(VecDeque::new()),
            fail: Mutex::new(None),
            on_block: Mutex::new(VecDeque::new()),
        })
    }

    fn next_port(&self) -> u32 {
        self.next_ports
            .lock()
            .unwrap()
            .pop_front()
            .expect("a port for the bind")
    }

    fn ports(&self, ports: &[u32]) {
        self.next_ports.lock().unwrap().extend(ports);
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        &self.page.0[offset / 8]
    }

    fn pending_word(&self, w: usize) -> &AtomicU64 {
        self.word(abi::OFFSET_EVTCHN_PENDING + 8 * w)
    }

    fn mask_word(&self, w: usize) -> &AtomicU64 {
        self.word(abi::OFFSET_EVTCHN_MASK + 8 * w)
    }

    fn sel(&self) -> u64 {
        self.word(abi::OFFSET_PENDING_SEL).load(SeqCst)
    }

    fn upcall(&self) -> bool {
        // evtchn_upcall_pending is byte 0 of vcpu_info[0] (little-endian).
        self.word(abi::OFFSET_UPCALL_PENDING).load(SeqCst) & 0xff != 0
    }

    fn is_pending(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        self.pending_word(w).load(SeqCst) & bit != 0
    }

    fn is_masked(&self, port: u32) -> bool {
        let (w, bit) = word_bit(port);
        self.mask_word(w).load(SeqCst) & bit != 0
    }

    fn set_mask(&self, port: u32) {
        let (w, bit) = word_bit(port);
        self.mask_word(w).fetch_or(bit, SeqCst);
    }

    /// Xen's `evtchn_2l_set_pending` for vCPU 0.
    fn raise(&self, port: u32) {
        let (w, bit) = word_bit(port);
        if self.pending_word(w).fetch_or(bit, SeqCst) & bit != 0 {
            return;
        }
        if self.is_masked(port) {
            return;
        }
        let sel = self.word(abi::OFFSET_PENDING_SEL);
        if sel.fetch_or(1 << w, SeqCst) & (1 << w) == 0 {
            self.word(abi::OFFSET_UPCALL_PENDING).fetch_or(1, SeqCst);
        }
    }

    /// Xen's `evtchn_2l_unmask`.
    fn xen_unmask(&self, port: u32) {
        let (w, bit) = word_bit(port);
        let was_masked = self.mask_word(w).fetch_and(!bit, SeqCst) & bit != 0;
        if was_masked && self.is_pending(port) {
            let sel = self.word(abi::OFFSET_PENDING_SEL);
            if sel.fetch_or(1 << w, SeqCst) & (1 << w) == 0 {
                self.word(abi::OFFSET_UPCALL_PENDING).fetch_or(1, SeqCst);
            }
        }
    }

    fn take_calls(&self) -> Vec<Call> {
        core::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// A handle with `ports` bound (interdomain to dom 1), calls forgotten.
fn bound(xen: &Arc<FakeXen>, ports: &[u32]) -> HypercallEventChannel<FakeXen> {
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(ports);
    for &p in ports {
        assert_eq!(ec.bind_interdomain(1, Port::new(9)).unwrap(), Port::new(p));
    }
    xen.take_calls();
    ec
}

fn read(ec: &mut HypercallEventChannel<FakeXen>) -> Vec<u32> {
    let mut out = Vec::new();
    ec.read_pending(&mut out).unwrap();
    out.into_iter().map(Port::get).collect()
}

#[test]
fn test_bind_interdomain_passes_remote_then_unmasks_new_port() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(&[70]);
    xen.set_mask(70); // left masked by the port's last user
    assert_eq!(
        ec.bind_interdomain(5, Port::new(33)).unwrap(),
        Port::new(70)
    );
    assert_eq!(
        xen.take_calls(),
        [
            Call::BindInterdomain {
                remote_dom: 5,
                remote_port: 33
            },
            Call::Unmask(70)
        ]
    );
    assert!(!xen.is_masked(70));
    assert!(ec.is_bound(Port::new(70)));
    assert!(!ec.is_bound(Port::new(71)));
}

#[test]
fn test_bind_interdomain_pending_at_bind_reported_first_read() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(&[3]);
    xen.set_mask(3);
    xen.raise(3); // pending while masked: no selector bit
    assert_eq!(xen.sel(), 0);
    ec.bind_interdomain(0, Port::new(1)).unwrap();
    assert_eq!(read(&mut ec), [3]);
}

#[test]
fn test_bind_virq_passes_virq_and_vcpu_zero() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(&[4]);
    assert_eq!(ec.bind_virq(crate::VIRQ_DOM_EXC).unwrap(), Port::new(4));
    assert_eq!(
        xen.take_calls(),
        [Call::BindVirq { virq: 3, vcpu: 0 }, Call::Unmask(4)]
    );
}

#[test]
fn test_bind_unbound_allocates_for_self_towards_remote() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(&[8]);
    assert_eq!(ec.bind_unbound(7).unwrap(), Port::new(8));
    assert_eq!(
        xen.take_calls(),
        [
            Call::AllocUnbound {
                dom: abi::DOMID_SELF,
                remote_dom: 7
            },
            Call::Unmask(8)
        ]
    );
    assert!(ec.is_bound(Port::new(8)));
}

#[test]
fn test_bind_port_beyond_two_level_abi_typed_error_and_closed() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(&[4096, 4095]);
    match ec.bind_virq(0) {
        Err(Error::InvalidPort { op, raw }) => {
            assert_eq!(op, "EVTCHNOP_bind_virq");
            assert_eq!(raw, 4096);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        xen.take_calls(),
        [Call::BindVirq { virq: 0, vcpu: 0 }, Call::Close(4096)]
    );
    assert!(!ec.is_bound(Port::new(4096)));
    assert_eq!(
        ec.bind_virq(0).unwrap(),
        Port::new(4095),
        "the last port fits"
    );
}

#[test]
fn test_bind_xen_error_typed_with_op_and_errno() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    *xen.fail.lock().unwrap() = Some((abi::EVTCHNOP_BIND_INTERDOMAIN, -22));
    let e = ec.bind_interdomain(3, Port::new(1)).unwrap_err();
    match e {
        Error::Xen { op, errno } => {
            assert_eq!(op, "EVTCHNOP_bind_interdomain");
            assert_eq!(errno, XenErrno::EINVAL);
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "EVTCHNOP_bind_interdomain failed: Xen error EINVAL (22)"
    );
    assert_eq!(xen.take_calls(), []);
}

#[test]
fn test_bind_unmask_fails_port_closed_not_bound() {
    let xen = FakeXen::new();
    let mut ec = HypercallEventChannel::new(xen.clone());
    xen.ports(&[6]);
    *xen.fail.lock().unwrap() = Some((abi::EVTCHNOP_UNMASK, -14));
    assert!(matches!(
        ec.bind_virq(0),
        Err(Error::Xen {
            op: "EVTCHNOP_unmask",
            ..
        })
    ));
    assert_eq!(
        xen.take_calls(),
        [Call::BindVirq { virq: 0, vcpu: 0 }, Call::Close(6)]
    );
    assert!(!ec.is_bound(Port::new(6)));
}

#[test]
fn test_read_pending_reports_own_masks_clears_leaves_others_cleared_unreported() {
    let xen = FakeXen::new();
    // Own ports in two words; 64 and 5 are someone else's (the kernel's).
    let mut ec = bound(&xen, &[1, 63, 130]);
    for p in [1, 5, 63, 64, 130] {
        xen.raise(p);
    }
    assert!(xen.upcall());
    assert_eq!(xen.sel(), 0b111);
    assert_eq!(read(&mut ec), [1, 63, 130]);
    for p in [1, 63, 130] {
        assert!(xen.is_masked(p), "own port {p} masked");
        assert!(!xen.is_pending(p), "own port {p} cleared");
    }
    for p in [5, 64] {
        assert!(!xen.is_masked(p), "other port {p} left unmasked");
        assert!(!xen.is_pending(p), "other port {p} cleared");
    }
    assert!(!xen.upcall(), "upcall_pending cleared");
    assert_eq!(xen.sel(), 0, "selector taken");
    assert_eq!(xen.take_calls(), [], "no hypercall to read");
    assert_eq!(read(&mut ec), [] as [u32; 0], "nothing twice");
}

#[test]
fn test_read_pending_masked_port_not_reported_until_unmask() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[10, 11]);
    xen.raise(10);
    assert_eq!(read(&mut ec), [10]);
    xen.raise(10); // fires again while masked: held back, not lost
    xen.raise(11);
    assert_eq!(read(&mut ec), [11]);
    assert!(xen.is_pending(10));
    ec.unmask(&[Port::new(10)]).unwrap();
    assert_eq!(xen.take_calls(), [Call::Unmask(10)]);
    assert!(!xen.is_masked(10));
    assert_eq!(read(&mut ec), [10], "reported again after the unmask");
}

#[test]
fn test_read_pending_port_masked_by_kernel_left_pending() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[2]);
    xen.raise(2);
    xen.set_mask(7);
    // Xen sets pending but no selector for a masked port; force the word
    // into the selector through another port of it.
    xen.raise(7);
    assert_eq!(read(&mut ec), [2]);
    assert!(xen.is_pending(7), "a masked port's pending bit is not ours");
}

#[test]
fn test_read_pending_appends_after_existing_entries() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[9]);
    xen.raise(9);
    let mut out = vec![Port::new(500)];
    ec.read_pending(&mut out).unwrap();
    assert_eq!(out, [Port::new(500), Port::new(9)]);
}

#[test]
fn test_unmask_skips_ports_not_bound_here() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[12]);
    ec.unmask(&[Port::new(13), Port::new(12), Port::new(5000)])
        .unwrap();
    assert_eq!(xen.take_calls(), [Call::Unmask(12)]);
}

#[test]
fn test_unmask_xen_error_typed() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[12]);
    *xen.fail.lock().unwrap() = Some((abi::EVTCHNOP_UNMASK, -3));
    assert!(matches!(
        ec.unmask(&[Port::new(12)]),
        Err(Error::Xen {
            op: "EVTCHNOP_unmask",
            errno: XenErrno::ESRCH
        })
    ));
}

#[test]
fn test_notify_sends_on_bound_port_only() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[20]);
    ec.notify(Port::new(20)).unwrap();
    assert_eq!(xen.take_calls(), [Call::Send(20)]);
    assert!(matches!(
        ec.notify(Port::new(21)),
        Err(Error::NotBound {
            op: "notify",
            port
        }) if port == Port::new(21)
    ));
    assert!(matches!(
        ec.notify(Port::new(4096)),
        Err(Error::NotBound { .. })
    ));
    assert_eq!(xen.take_calls(), []);
}

#[test]
fn test_notify_xen_error_typed() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[20]);
    *xen.fail.lock().unwrap() = Some((abi::EVTCHNOP_SEND, -22));
    assert!(matches!(
        ec.notify(Port::new(20)),
        Err(Error::Xen {
            op: "EVTCHNOP_send",
            ..
        })
    ));
}

#[test]
fn test_unbind_closes_and_forgets_port() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[30, 31]);
    ec.unbind(Port::new(30)).unwrap();
    assert_eq!(xen.take_calls(), [Call::Close(30)]);
    assert!(!ec.is_bound(Port::new(30)));
    assert!(ec.is_bound(Port::new(31)));
    assert!(matches!(
        ec.unbind(Port::new(30)),
        Err(Error::NotBound { op: "unbind", .. })
    ));
    xen.raise(30);
    assert_eq!(read(&mut ec), [] as [u32; 0], "an unbound port is not ours");
}

#[test]
fn test_unbind_xen_error_port_stays_bound() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[30]);
    *xen.fail.lock().unwrap() = Some((abi::EVTCHNOP_CLOSE, -22));
    assert!(ec.unbind(Port::new(30)).is_err());
    assert!(ec.is_bound(Port::new(30)));
}

#[test]
fn test_drop_closes_every_bound_port() {
    let xen = FakeXen::new();
    let ec = bound(&xen, &[3, 64, 4095]);
    drop(ec);
    assert_eq!(
        xen.take_calls(),
        [Call::Close(3), Call::Close(64), Call::Close(4095)]
    );
}

#[test]
fn test_wait_pending_returns_without_blocking() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[40]);
    xen.raise(40);
    let mut out = Vec::new();
    ec.wait(Some(Duration::from_secs(5)), &mut out).unwrap();
    assert_eq!(out, [Port::new(40)]);
    assert_eq!(xen.take_calls(), []);
}

#[test]
fn test_wait_nothing_pending_blocks_until_now_plus_timeout() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[40]);
    xen.on_block.lock().unwrap().push_back(OnBlock::Raise(40));
    let mut out = Vec::new();
    ec.wait(Some(Duration::from_millis(250)), &mut out).unwrap();
    assert_eq!(out, [Port::new(40)], "the port that woke it");
    assert_eq!(
        xen.take_calls(),
        [Call::Block(Some(1_000_000 + 250_000_000))]
    );
}

#[test]
fn test_wait_forever_blocks_without_deadline() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[41]);
    xen.on_block.lock().unwrap().push_back(OnBlock::Raise(41));
    let mut out = Vec::new();
    ec.wait(None, &mut out).unwrap();
    assert_eq!(out, [Port::new(41)]);
    assert_eq!(xen.take_calls(), [Call::Block(None)]);
}

#[test]
fn test_wait_timeout_passes_returns_empty() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[42]);
    let mut out = Vec::new();
    ec.wait(Some(Duration::from_nanos(7)), &mut out).unwrap();
    assert_eq!(out, []);
    assert_eq!(xen.take_calls(), [Call::Block(Some(1_000_007))]);
}

#[test]
fn test_wait_zero_timeout_never_blocks() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[42]);
    let mut out = Vec::new();
    ec.wait(Some(Duration::ZERO), &mut out).unwrap();
    assert_eq!(out, []);
    assert_eq!(xen.take_calls(), []);
}

#[test]
fn test_wait_huge_timeout_deadline_saturates() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[42]);
    xen.on_block.lock().unwrap().push_back(OnBlock::Raise(42));
    let mut out = Vec::new();
    ec.wait(Some(Duration::MAX), &mut out).unwrap();
    assert_eq!(xen.take_calls(), [Call::Block(Some(u64::MAX))]);
}

#[test]
fn test_wait_woken_by_other_port_blocks_again_until_deadline() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[43]);
    {
        let mut script = xen.on_block.lock().unwrap();
        script.push_back(OnBlock::Raise(0)); // the kernel's timer, say
        script.push_back(OnBlock::Advance(10));
    }
    let mut out = Vec::new();
    ec.wait(Some(Duration::from_nanos(100)), &mut out).unwrap();
    assert_eq!(out, []);
    assert!(!xen.is_pending(0), "the other port was cleared");
    // Raise(0), Advance(10) (still before the deadline), then the fake's
    // default: the clock reaches the deadline.
    assert_eq!(
        xen.take_calls(),
        [
            Call::Block(Some(1_000_100)),
            Call::Block(Some(1_000_100)),
            Call::Block(Some(1_000_100))
        ]
    );
}

#[test]
fn test_wait_other_port_pending_blocks_once_not_spinning() {
    let xen = FakeXen::new();
    let mut ec = bound(&xen, &[44]);
    xen.raise(1); // not ours: cleared by the first scan, so block sleeps
    xen.on_block.lock().unwrap().push_back(OnBlock::Raise(44));
    let mut out = Vec::new();
    ec.wait(None, &mut out).unwrap();
    assert_eq!(out, [Port::new(44)]);
    assert_eq!(xen.take_calls(), [Call::Block(None)]);
}

#[test]
fn test_xen_errno_from_ret_and_names() {
    assert_eq!(XenErrno::from_ret(0), None);
    assert_eq!(XenErrno::from_ret(5), None);
    assert_eq!(XenErrno::from_ret(-3), Some(XenErrno::ESRCH));
    assert_eq!(XenErrno::from_ret(i64::MIN), Some(XenErrno(i32::MAX)));
    assert_eq!(XenErrno::EACCES.to_string(), "Xen error EACCES (13)");
    assert_eq!(XenErrno(1000).to_string(), "Xen error 1000");
    for (errno, name) in [
        (XenErrno::EPERM, "EPERM"),
        (XenErrno::ESRCH, "ESRCH"),
        (XenErrno::ENOMEM, "ENOMEM"),
        (XenErrno::EACCES, "EACCES"),
        (XenErrno::EFAULT, "EFAULT"),
        (XenErrno::EINVAL, "EINVAL"),
        (XenErrno::ENOSPC, "ENOSPC"),
        (XenErrno::ENOSYS, "ENOSYS"),
    ] {
        assert_eq!(errno.name(), Some(name));
    }
}

#[cfg(feature = "std")]
#[test]
fn test_as_raw_fd_is_minus_one_ignored_by_poll() {
    use std::os::fd::AsRawFd;
    let xen = FakeXen::new();
    let ec = HypercallEventChannel::new(xen);
    assert_eq!(ec.as_raw_fd(), -1);
    assert_eq!(ec.handle_fd(), -1);
}

#[test]
fn test_debug_lists_bound_ports() {
    let xen = FakeXen::new();
    let ec = bound(&xen, &[2, 65]);
    assert_eq!(
        format!("{ec:?}"),
        "HypercallEventChannel { bound: {Port(2), Port(65)}, .. }"
    );
}
