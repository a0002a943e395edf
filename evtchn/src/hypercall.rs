//! Event channels over Xen's hypercalls, for a kernel of its own (a
//! xenstore stub domain).
//!
//! * [`Hypervisor`]: what the backend needs from the kernel it runs in —
//!   the hypercall instruction, the shared_info page, Xen's clock and a way
//!   to sleep until an event. The gnttab crate's hypercall backends use it
//!   too.
//! * [`XenErrno`]: Xen's error codes (`public/errno.h`), as the hypercall
//!   backends report them.
//! * [`abi`]: the structures of Xen 4.17's public headers these backends
//!   pass.
//! * [`HypercallEventChannel`]: [`EventChannel`] over `EVTCHNOP_*` and the
//!   2-level event-channel bitmaps of the shared_info page.
//!
//! # How events are collected
//!
//! Xen marks a port pending in `shared_info.evtchn_pending`; if the port is
//! not masked (`evtchn_mask`) it also sets the port's word in vCPU 0's
//! `evtchn_pending_sel` and `evtchn_upcall_pending`. [`EventChannel::read_pending`]
//! clears `evtchn_upcall_pending`, takes the selector with one exchange,
//! and for each selected word looks at `pending & !mask`. A port bound
//! through this handle is then masked, its pending bit cleared, and it is
//! reported — it stays masked until [`EventChannel::unmask`], which asks Xen
//! (`EVTCHNOP_unmask`), and Xen marks the port's word again if it fired
//! meanwhile: nothing is lost. A pending port this handle did not bind (the
//! kernel's own timer VIRQ, its console) is cleared and not reported: the
//! kernel must not rely on those bits staying set.
//!
//! Masking before clearing, and clearing `evtchn_upcall_pending` before
//! taking the selector, is what makes [`Hypervisor::block`]'s promise
//! enough: an event arriving after the scan sets `evtchn_upcall_pending`
//! again, and blocking returns at once.
//!
//! Only vCPU 0 is looked at (Xen delivers to the vCPU a port is bound to,
//! vCPU 0 unless `EVTCHNOP_bind_vcpu`; a stub domain has one). Port numbers
//! are those of the 2-level ABI, below [`abi::EVTCHN_2L_NR_CHANNELS`]; Xen
//! returning another one is an [`Error::InvalidPort`].

pub mod abi;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};
use core::time::Duration;

use crate::{DomId, Error, EventChannel, Port, Virq};

/// What a hypercall backend needs from the kernel it runs in.
///
/// # Safety
///
/// `hypercall` must issue the real hypercall of this domain (or, in tests,
/// play Xen's side faithfully); `shared_info` must point to this domain's
/// shared_info page, 4096 bytes, page-aligned, mapped read-write, for as
/// long as the implementor lives, and nothing may touch that page through a
/// Rust reference (Xen writes it at any time: only atomics and volatile
/// accesses are sound).
pub unsafe trait Hypervisor: Send + Sync {
    /// Issues hypercall number `op` with up to five arguments (unused ones
    /// 0) and returns what Xen returned (negative errno on failure).
    ///
    /// # Safety
    ///
    /// The arguments must be what hypercall `op` expects: pointers to live,
    /// correctly laid-out structures, exclusively the caller's for the call.
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64;

    /// This domain's shared_info page (4096 bytes).
    fn shared_info(&self) -> NonNull<u8>;

    /// Xen system time, nanoseconds since boot (`vcpu_time_info`).
    fn system_time_ns(&self) -> u64;

    /// Sleeps until an event channel of this domain becomes pending or
    /// `deadline_ns` (system time) passes; may return early. Returns at once
    /// if an event is already pending (vCPU 0's `evtchn_upcall_pending` is
    /// set): no lost wake-up.
    fn block(&self, deadline_ns: Option<u64>);
}

/// The set of ports bound through one handle: a bit per 2-level port.
#[derive(Clone, PartialEq, Eq)]
struct PortSet([u64; WORDS]);

/// Words of the 2-level bitmaps.
const WORDS: usize = abi::BITS_PER_XEN_ULONG as usize;

/// `(word, bit)` of a 2-level port, or `None` beyond the ABI's ports.
fn split(port: Port) -> Option<(usize, u64)> {
    let raw = port.get();
    (raw < abi::EVTCHN_2L_NR_CHANNELS).then(|| {
        let word = usize::try_from(raw / abi::BITS_PER_XEN_ULONG).unwrap_or(0);
        (word, 1u64 << (raw % abi::BITS_PER_XEN_ULONG))
    })
}

impl PortSet {
    const fn new() -> Self {
        Self([0; WORDS])
    }

    fn contains(&self, port: Port) -> bool {
        split(port).is_some_and(|(w, bit)| self.0[w] & bit != 0)
    }

    fn insert(&mut self, port: Port) {
        if let Some((w, bit)) = split(port) {
            self.0[w] |= bit;
        }
    }

    fn remove(&mut self, port: Port) {
        if let Some((w, bit)) = split(port) {
            self.0[w] &= !bit;
        }
    }

    fn iter(&self) -> impl Iterator<Item = Port> + '_ {
        (0..abi::EVTCHN_2L_NR_CHANNELS)
            .map(Port::new)
            .filter(|p| self.contains(*p))
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The event-channel words of a shared_info page, as atomics.
struct SharedInfo<'a> {
    base: NonNull<u8>,
    _page: core::marker::PhantomData<&'a ()>,
}

impl SharedInfo<'_> {
    /// The `u64` at byte `offset` of the page.
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= 4096);
        // SAFETY: `Hypervisor`'s contract: the page is 4096 bytes, page-
        // aligned, mapped read-write while the hypervisor (which the caller
        // holds) lives, and never referenced except through atomics. Every
        // offset used is 8-aligned and inside the page (abi's asserts).
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast::<u64>()) }
    }

    /// vCPU 0's `evtchn_upcall_pending`.
    fn upcall_pending(&self) -> &AtomicU8 {
        // SAFETY: as in `word`; a byte needs no alignment.
        unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(abi::OFFSET_UPCALL_PENDING)) }
    }

    fn pending_sel(&self) -> &AtomicU64 {
        self.word(abi::OFFSET_PENDING_SEL)
    }

    fn pending(&self, word: usize) -> &AtomicU64 {
        self.word(abi::OFFSET_EVTCHN_PENDING + 8 * (word % WORDS))
    }

    fn mask(&self, word: usize) -> &AtomicU64 {
        self.word(abi::OFFSET_EVTCHN_MASK + 8 * (word % WORDS))
    }
}

/// An error code a hypercall returned (negated: Xen returns `-errno`), from
/// Xen's `public/errno.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct XenErrno(pub i32);

impl XenErrno {
    /// `EPERM`.
    pub const EPERM: Self = Self(1);
    /// `ESRCH`: no such domain.
    pub const ESRCH: Self = Self(3);
    /// `ENOMEM`.
    pub const ENOMEM: Self = Self(12);
    /// `EACCES`: what Xen answers a domctl/sysctl of another interface
    /// version.
    pub const EACCES: Self = Self(13);
    /// `EFAULT`.
    pub const EFAULT: Self = Self(14);
    /// `EINVAL`.
    pub const EINVAL: Self = Self(22);
    /// `ENOSPC`.
    pub const ENOSPC: Self = Self(28);
    /// `ENOSYS`.
    pub const ENOSYS: Self = Self(38);

    /// The error a negative hypercall return value stands for; `None` for a
    /// success (0 or more).
    pub fn from_ret(ret: i64) -> Option<Self> {
        (ret < 0).then(|| Self(i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX)))
    }

    /// The symbolic name, for the codes Xen 4.17 returns to guests.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            3 => "ESRCH",
            5 => "EIO",
            6 => "ENXIO",
            7 => "E2BIG",
            8 => "ENOEXEC",
            9 => "EBADF",
            10 => "ECHILD",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            18 => "EXDEV",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            23 => "ENFILE",
            24 => "EMFILE",
            28 => "ENOSPC",
            30 => "EROFS",
            31 => "EMLINK",
            33 => "EDOM",
            34 => "ERANGE",
            35 => "EDEADLK",
            36 => "ENAMETOOLONG",
            37 => "ENOLCK",
            38 => "ENOSYS",
            39 => "ENOTEMPTY",
            61 => "ENODATA",
            62 => "ETIME",
            74 => "EBADMSG",
            75 => "EOVERFLOW",
            84 => "EILSEQ",
            88 => "ENOTSOCK",
            90 => "EMSGSIZE",
            95 => "EOPNOTSUPP",
            98 => "EADDRINUSE",
            99 => "EADDRNOTAVAIL",
            105 => "ENOBUFS",
            106 => "EISCONN",
            107 => "ENOTCONN",
            110 => "ETIMEDOUT",
            111 => "ECONNREFUSED",
            _ => return None,
        })
    }
}

impl fmt::Display for XenErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "Xen error {name} ({})", self.0),
            None => write!(f, "Xen error {}", self.0),
        }
    }
}

/// [`EventChannel`] over Xen's event-channel hypercalls and the 2-level
/// bitmaps of the shared_info page (see the module docs for how events are
/// collected). Dropping it closes every port bound through it, as closing
/// `/dev/xen/evtchn` does.
pub struct HypercallEventChannel<H: Hypervisor> {
    hv: Arc<H>,
    bound: PortSet,
}

impl<H: Hypervisor> fmt::Debug for HypercallEventChannel<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HypercallEventChannel")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl<H: Hypervisor> HypercallEventChannel<H> {
    /// A handle with no port bound yet.
    pub fn new(hv: Arc<H>) -> Self {
        Self {
            hv,
            bound: PortSet::new(),
        }
    }

    /// The hypervisor this handle calls.
    pub fn hypervisor(&self) -> &Arc<H> {
        &self.hv
    }

    /// Whether `port` is bound through this handle.
    pub fn is_bound(&self, port: Port) -> bool {
        self.bound.contains(port)
    }

    fn shared(&self) -> SharedInfo<'_> {
        SharedInfo {
            base: self.hv.shared_info(),
            _page: core::marker::PhantomData,
        }
    }

    /// `HYPERVISOR_event_channel_op(cmd, arg)`.
    fn op<T>(&self, name: &'static str, cmd: u64, arg: &mut T) -> Result<(), Error> {
        // SAFETY: every caller passes the `struct evtchn_*` that `cmd` takes
        // (abi.rs, layouts pinned against Xen's headers), alive and
        // exclusively borrowed for the call; Xen writes only within it.
        let ret = unsafe {
            self.hv.hypercall(
                abi::HYPERVISOR_EVENT_CHANNEL_OP,
                [cmd, core::ptr::from_mut(arg) as u64, 0, 0, 0],
            )
        };
        match XenErrno::from_ret(ret) {
            None => Ok(()),
            Some(errno) => Err(Error::Xen { op: name, errno }),
        }
    }

    fn close(&self, port: u32) -> Result<(), Error> {
        let mut arg = abi::EvtchnPort { port };
        self.op("EVTCHNOP_close", abi::EVTCHNOP_CLOSE, &mut arg)
    }

    fn unmask_one(&self, port: Port) -> Result<(), Error> {
        let mut arg = abi::EvtchnPort { port: port.get() };
        self.op("EVTCHNOP_unmask", abi::EVTCHNOP_UNMASK, &mut arg)
    }

    /// Takes a port Xen has just bound for us: checks it fits the 2-level
    /// ABI, unmasks it (a port number is reused, and its mask bit may still
    /// be set from its last life) and records it.
    fn adopt(&mut self, op: &'static str, raw: u32) -> Result<Port, Error> {
        let port = Port::new(raw);
        if split(port).is_none() {
            // Unusable here: give it back rather than leak it.
            let _ = self.close(raw);
            return Err(Error::InvalidPort {
                op,
                raw: i64::from(raw),
            });
        }
        if let Err(e) = self.unmask_one(port) {
            let _ = self.close(raw);
            return Err(e);
        }
        self.bound.insert(port);
        Ok(port)
    }

    fn check_bound(&self, op: &'static str, port: Port) -> Result<(), Error> {
        if self.bound.contains(port) {
            Ok(())
        } else {
            Err(Error::NotBound { op, port })
        }
    }
}

impl<H: Hypervisor> Drop for HypercallEventChannel<H> {
    fn drop(&mut self) {
        for port in self.bound.iter() {
            let _ = self.close(port.get());
        }
    }
}

/// Only with `std`, where [`EventChannel`] requires a descriptor: there is
/// none, and this is -1, which `poll(2)` ignores. A hypercall backend is
/// waited on with [`EventChannel::wait`].
#[cfg(feature = "std")]
impl<H: Hypervisor> std::os::fd::AsRawFd for HypercallEventChannel<H> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        -1
    }
}

impl<H: Hypervisor> EventChannel for HypercallEventChannel<H> {
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        let mut arg = abi::EvtchnBindInterdomain {
            remote_dom: remote,
            pad: 0,
            remote_port: remote_port.get(),
            local_port: 0,
        };
        const OP: &str = "EVTCHNOP_bind_interdomain";
        self.op(OP, abi::EVTCHNOP_BIND_INTERDOMAIN, &mut arg)?;
        self.adopt(OP, arg.local_port)
    }

    fn bind_virq(&mut self, virq: Virq) -> Result<Port, Error> {
        let mut arg = abi::EvtchnBindVirq {
            virq,
            vcpu: 0,
            port: 0,
        };
        const OP: &str = "EVTCHNOP_bind_virq";
        self.op(OP, abi::EVTCHNOP_BIND_VIRQ, &mut arg)?;
        self.adopt(OP, arg.port)
    }

    fn bind_unbound(&mut self, remote: DomId) -> Result<Port, Error> {
        let mut arg = abi::EvtchnAllocUnbound {
            dom: abi::DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        const OP: &str = "EVTCHNOP_alloc_unbound";
        self.op(OP, abi::EVTCHNOP_ALLOC_UNBOUND, &mut arg)?;
        self.adopt(OP, arg.port)
    }

    fn unbind(&mut self, port: Port) -> Result<(), Error> {
        self.check_bound("unbind", port)?;
        self.close(port.get())?;
        self.bound.remove(port);
        Ok(())
    }

    fn notify(&mut self, port: Port) -> Result<(), Error> {
        self.check_bound("notify", port)?;
        let mut arg = abi::EvtchnPort { port: port.get() };
        self.op("EVTCHNOP_send", abi::EVTCHNOP_SEND, &mut arg)
    }

    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), Error> {
        let si = self.shared();
        si.upcall_pending().store(0, SeqCst);
        let mut sel = si.pending_sel().swap(0, SeqCst);
        while sel != 0 {
            let w = sel.trailing_zeros();
            sel &= sel - 1;
            let word = usize::try_from(w).unwrap_or(0);
            let mut active = si.pending(word).load(SeqCst) & !si.mask(word).load(SeqCst);
            while active != 0 {
                let b = active.trailing_zeros();
                active &= active - 1;
                let bit = 1u64 << b;
                let port = Port::new(w * abi::BITS_PER_XEN_ULONG + b);
                let ours = self.bound.contains(port);
                if ours {
                    si.mask(word).fetch_or(bit, SeqCst);
                }
                si.pending(word).fetch_and(!bit, SeqCst);
                if ours {
                    out.push(port);
                }
            }
        }
        Ok(())
    }

    /// As the trait says; an early return of [`Hypervisor::block`] with
    /// nothing of ours pending (the kernel's own event, say) blocks again
    /// until the deadline.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Port>) -> Result<(), Error> {
        let before = out.len();
        self.read_pending(out)?;
        if out.len() > before || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let deadline = timeout.map(|t| {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            self.hv.system_time_ns().saturating_add(ns)
        });
        loop {
            self.hv.block(deadline);
            self.read_pending(out)?;
            if out.len() > before {
                return Ok(());
            }
            if deadline.is_some_and(|d| self.hv.system_time_ns() >= d) {
                return Ok(());
            }
        }
    }

    /// Ports not bound through this handle are skipped, as Linux's evtchn
    /// device skips them.
    fn unmask(&mut self, ports: &[Port]) -> Result<(), Error> {
        for &port in ports {
            if self.bound.contains(port) {
                self.unmask_one(port)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
