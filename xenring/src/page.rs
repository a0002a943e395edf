//! The xenstore ring page: `struct xenstore_domain_interface` of Xen's
//! `xen/include/public/io/xs_wire.h`, and the one type that may touch it.
//!
//! The page is shared with another domain that may be hostile. The rules this
//! module enforces (after `docs/misc/xenstore-ring.txt` and rust-vmm's
//! vm-memory):
//!
//! * nobody holds a Rust `&`/`&mut` into the shared bytes: data is copied in
//!   and out with volatile accesses, scalar words are read and written
//!   volatilely, and the four ring indices are accessed only as atomics with an
//!   explicit [`Ordering`];
//! * every copy is bounded by construction (the offset is masked to the ring,
//!   the length clipped to the end of the ring), so no index value the peer
//!   writes can make us touch memory outside the page.
//!
//! The layout (byte offsets, asserted at compile time below):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0    | 1024 | `req`: requests, guest → server |
//! | 1024 | 1024 | `rsp`: replies and watch events, server → guest |
//! | 2048 | 4 | `req_cons` |
//! | 2052 | 4 | `req_prod` |
//! | 2056 | 4 | `rsp_cons` |
//! | 2060 | 4 | `rsp_prod` |
//! | 2064 | 4 | `server_features` |
//! | 2068 | 4 | `connection` |
//! | 2072 | 4 | `error` |
//! | 2076 | 4 | `evtchn_port` |

use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

use bitflags::bitflags;
use volatile::VolatilePtr;

use crate::error::Queue;

/// Size of each of the two byte queues (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: usize = 1024;
/// [`RING_SIZE`] as the ring-index type.
pub const RING_SIZE_U32: u32 = 1024;
/// Size of the page the ring lives in.
pub const PAGE_SIZE: usize = 4096;

/// `struct xenstore_domain_interface`, for its layout only.
///
/// ```c
/// struct xenstore_domain_interface {
///     char req[XENSTORE_RING_SIZE]; /* Requests to xenstore daemon. */
///     char rsp[XENSTORE_RING_SIZE]; /* Replies and async watch events. */
///     XENSTORE_RING_IDX req_cons, req_prod;
///     XENSTORE_RING_IDX rsp_cons, rsp_prod;
///     uint32_t server_features; /* Bitmap of features supported by the server */
///     uint32_t connection;
///     uint32_t error;
///     uint32_t evtchn_port;
/// };
/// ```
///
/// This type is never instantiated over shared memory: [`RingPage`] uses its
/// field offsets and nothing else.
#[repr(C)]
#[allow(dead_code)] // Layout description only; the fields are reached through offset_of!.
struct XenstoreDomainInterface {
    req: [u8; RING_SIZE],
    rsp: [u8; RING_SIZE],
    req_cons: u32,
    req_prod: u32,
    rsp_cons: u32,
    rsp_prod: u32,
    server_features: u32,
    connection: u32,
    error: u32,
    evtchn_port: u32,
}

const _: () = {
    assert!(offset_of!(XenstoreDomainInterface, req) == 0);
    assert!(offset_of!(XenstoreDomainInterface, rsp) == 1024);
    assert!(offset_of!(XenstoreDomainInterface, req_cons) == 2048);
    assert!(offset_of!(XenstoreDomainInterface, req_prod) == 2052);
    assert!(offset_of!(XenstoreDomainInterface, rsp_cons) == 2056);
    assert!(offset_of!(XenstoreDomainInterface, rsp_prod) == 2060);
    assert!(offset_of!(XenstoreDomainInterface, server_features) == 2064);
    assert!(offset_of!(XenstoreDomainInterface, connection) == 2068);
    assert!(offset_of!(XenstoreDomainInterface, error) == 2072);
    assert!(offset_of!(XenstoreDomainInterface, evtchn_port) == 2076);
    assert!(size_of::<XenstoreDomainInterface>() == 2080);
    assert!(size_of::<XenstoreDomainInterface>() <= PAGE_SIZE);
    assert!(RING_SIZE.is_power_of_two());
};

bitflags! {
    /// `server_features`: what the server offers (`XENSTORE_SERVER_FEATURE_*`).
    ///
    /// The server only ever sets bits; the guest ignores bits it does not know
    /// (they are kept by [`ServerFeatures::from_bits_retain`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ServerFeatures: u32 {
        /// `XENSTORE_SERVER_FEATURE_RECONNECTION`: the ring can be reset.
        const RECONNECTION = crate::wire::XENSTORE_SERVER_FEATURE_RECONNECTION;
        /// `XENSTORE_SERVER_FEATURE_ERROR`: the `error` word is meaningful.
        const ERROR = crate::wire::XENSTORE_SERVER_FEATURE_ERROR;
    }
}

/// The `connection` word (valid once [`ServerFeatures::RECONNECTION`] is offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// `XENSTORE_CONNECTED` (0): the steady state.
    Connected,
    /// `XENSTORE_RECONNECT` (1): the guest asked for a reset; only the server
    /// moves it back to `Connected`.
    Reconnect,
    /// Any other value: the guest wrote garbage.
    Unknown(u32),
}

impl ConnectionState {
    /// Decodes the raw word.
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::Connected,
            1 => Self::Reconnect,
            other => Self::Unknown(other),
        }
    }

    /// The raw word.
    pub const fn to_raw(self) -> u32 {
        match self {
            Self::Connected => 0,
            Self::Reconnect => 1,
            Self::Unknown(raw) => raw,
        }
    }
}

/// The `error` word (valid once [`ServerFeatures::ERROR`] is offered).
///
/// Values beyond those named are possible ("new values might be added in
/// future") and kept as [`RingErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RingErrorCode {
    /// `XENSTORE_ERROR_NONE` (0).
    None,
    /// `XENSTORE_ERROR_COMM` (1): event channel not functional.
    Comm,
    /// `XENSTORE_ERROR_RINGIDX` (2): inconsistent producer or consumer index.
    RingIdx,
    /// `XENSTORE_ERROR_PROTO` (3): protocol violation (payload too long).
    Proto,
    /// A value this crate does not name.
    Other(u32),
}

impl RingErrorCode {
    /// Decodes the raw word.
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::None,
            1 => Self::Comm,
            2 => Self::RingIdx,
            3 => Self::Proto,
            other => Self::Other(other),
        }
    }

    /// The raw word.
    pub const fn to_raw(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Comm => 1,
            Self::RingIdx => 2,
            Self::Proto => 3,
            Self::Other(raw) => raw,
        }
    }
}

/// Identifies one of the four ring indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingIndex {
    /// `req_cons`, written by the server.
    ReqCons,
    /// `req_prod`, written by the guest.
    ReqProd,
    /// `rsp_cons`, written by the guest.
    RspCons,
    /// `rsp_prod`, written by the server.
    RspProd,
}

impl RingIndex {
    const fn offset(self) -> usize {
        match self {
            Self::ReqCons => offset_of!(XenstoreDomainInterface, req_cons),
            Self::ReqProd => offset_of!(XenstoreDomainInterface, req_prod),
            Self::RspCons => offset_of!(XenstoreDomainInterface, rsp_cons),
            Self::RspProd => offset_of!(XenstoreDomainInterface, rsp_prod),
        }
    }
}

/// Access to one mapped xenstore ring page.
///
/// It is a view (a pointer and a lifetime), cheap to copy; the mapping itself
/// is owned elsewhere (a grant mapping, a foreign mapping, mock-xen's memory,
/// or an [`OwnedPage`]). See the module documentation for the access rules.
#[derive(Debug, Clone, Copy)]
pub struct RingPage<'a> {
    base: NonNull<u8>,
    _mapping: PhantomData<&'a [u8; PAGE_SIZE]>,
}

// SAFETY: `RingPage` is a pointer to memory that is, by its constructor's
// contract, shared with another party and only ever accessed volatilely or
// atomically. Moving that pointer to another thread changes nothing about
// those accesses.
unsafe impl Send for RingPage<'_> {}
// SAFETY: as for `Send`: all accesses through `&RingPage` are volatile copies
// of bytes the ring protocol assigns to one side at a time, or atomic index
// operations, so sharing the view between threads (one per end of the ring)
// is what the type is for.
unsafe impl Sync for RingPage<'_> {}

impl<'a> RingPage<'a> {
    /// Wraps a mapped ring page.
    ///
    /// # Safety
    ///
    /// The caller guarantees that:
    /// * `base` points to `PAGE_SIZE` (4096) bytes that are readable and
    ///   writable and aligned to at least 4 bytes, and stay mapped for `'a`;
    /// * nothing in this process creates a Rust reference (`&`/`&mut`) to
    ///   those bytes for `'a`: every other user in this process goes through a
    ///   `RingPage` too (another domain or process may write the page at any
    ///   time; that is the situation this type is built for).
    pub unsafe fn new(base: NonNull<u8>) -> Self {
        Self {
            base,
            _mapping: PhantomData,
        }
    }

    /// The page's base address (to hand to a device or for logging).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn word_ptr(&self, offset: usize) -> VolatilePtr<'a, u32> {
        debug_assert!(offset % 4 == 0 && offset + 4 <= PAGE_SIZE);
        // SAFETY: `offset` is one of the fixed, 4-aligned field offsets of
        // `XenstoreDomainInterface` (below 2080), so the pointer stays inside
        // the 4096-byte, 4-aligned page the constructor's contract gives us,
        // and is aligned for u32. Volatile access is the only access we make.
        unsafe { VolatilePtr::new(self.base.add(offset).cast::<u32>()) }
    }

    fn atomic(&self, index: RingIndex) -> &'a AtomicU32 {
        // SAFETY: the index fields are 4-aligned u32s inside the page (offsets
        // asserted at compile time), valid for `'a`. Every access to them in
        // this process is atomic (this is the only place that touches them),
        // which is what `AtomicU32::from_ptr` requires; the peer's accesses
        // happen outside this process's memory model.
        unsafe { AtomicU32::from_ptr(self.base.add(index.offset()).cast::<u32>().as_ptr()) }
    }

    /// Loads a ring index with the given ordering.
    pub fn load_index(&self, index: RingIndex, order: Ordering) -> u32 {
        self.atomic(index).load(order)
    }

    /// Stores a ring index with the given ordering.
    pub fn store_index(&self, index: RingIndex, value: u32, order: Ordering) {
        self.atomic(index).store(value, order)
    }

    /// The `server_features` word.
    pub fn server_features(&self) -> ServerFeatures {
        ServerFeatures::from_bits_retain(
            self.word_ptr(offset_of!(XenstoreDomainInterface, server_features))
                .read(),
        )
    }

    /// Replaces the `server_features` word. Servers should only add bits
    /// (see [`crate::ring::ServerEnd::advertise`]).
    pub fn set_server_features(&self, features: ServerFeatures) {
        self.word_ptr(offset_of!(XenstoreDomainInterface, server_features))
            .write(features.bits());
    }

    /// The `connection` word.
    pub fn connection(&self) -> ConnectionState {
        ConnectionState::from_raw(
            self.word_ptr(offset_of!(XenstoreDomainInterface, connection))
                .read(),
        )
    }

    /// Writes the `connection` word.
    pub fn set_connection(&self, state: ConnectionState) {
        self.word_ptr(offset_of!(XenstoreDomainInterface, connection))
            .write(state.to_raw());
    }

    /// The `error` word.
    pub fn error(&self) -> RingErrorCode {
        RingErrorCode::from_raw(
            self.word_ptr(offset_of!(XenstoreDomainInterface, error))
                .read(),
        )
    }

    /// Writes the `error` word.
    pub fn set_error(&self, code: RingErrorCode) {
        self.word_ptr(offset_of!(XenstoreDomainInterface, error))
            .write(code.to_raw());
    }

    /// The `evtchn_port` word (the guest-side port some guests publish).
    pub fn evtchn_port(&self) -> u32 {
        self.word_ptr(offset_of!(XenstoreDomainInterface, evtchn_port))
            .read()
    }

    /// Writes the `evtchn_port` word.
    pub fn set_evtchn_port(&self, port: u32) {
        self.word_ptr(offset_of!(XenstoreDomainInterface, evtchn_port))
            .write(port);
    }

    fn queue_base(&self, queue: Queue) -> *mut u8 {
        let offset = match queue {
            Queue::Request => offset_of!(XenstoreDomainInterface, req),
            Queue::Response => offset_of!(XenstoreDomainInterface, rsp),
        };
        // `wrapping_add` keeps this computation safe; the result is within
        // the page by the constructor's contract.
        self.base.as_ptr().wrapping_add(offset)
    }

    /// Copies bytes out of `queue` starting at the free-running index `idx`,
    /// up to the end of the ring array (no wrap-around). Returns the number of
    /// bytes copied: `min(dst.len(), RING_SIZE - (idx % RING_SIZE))`.
    pub fn copy_out(&self, queue: Queue, idx: u32, dst: &mut [u8]) -> usize {
        let start = mask(idx);
        let n = dst.len().min(RING_SIZE - start);
        let src = self.queue_base(queue).wrapping_add(start);
        // SAFETY: `start < RING_SIZE` and `start + n <= RING_SIZE`, so
        // `src..src + n` lies inside the queue's 1024-byte array, inside the
        // mapped page. `dst[..n]` is ordinary exclusive memory of ours.
        unsafe { volatile_copy_out(src, &mut dst[..n]) };
        n
    }

    /// Copies bytes into `queue` starting at the free-running index `idx`, up
    /// to the end of the ring array (no wrap-around). Returns the number of
    /// bytes copied: `min(src.len(), RING_SIZE - (idx % RING_SIZE))`.
    pub fn copy_in(&self, queue: Queue, idx: u32, src: &[u8]) -> usize {
        let start = mask(idx);
        let n = src.len().min(RING_SIZE - start);
        let dst = self.queue_base(queue).wrapping_add(start);
        // SAFETY: as in `copy_out`, `dst..dst + n` lies inside the queue's
        // array in the mapped page; `src[..n]` is ordinary memory of ours.
        unsafe { volatile_copy_in(dst, &src[..n]) };
        n
    }
}

/// `MASK_XENSTORE_IDX`: the position of a free-running index in the ring.
#[inline]
pub const fn mask(idx: u32) -> usize {
    (idx & (RING_SIZE_U32 - 1)) as usize
}

/// Volatile copy from shared memory, eight bytes at a time where possible.
///
/// # Safety
///
/// `src..src + dst.len()` must be readable memory that is only accessed
/// volatilely or atomically by this process.
unsafe fn volatile_copy_out(src: *const u8, dst: &mut [u8]) {
    let mut chunks = dst.chunks_exact_mut(8);
    let mut off = 0;
    for chunk in &mut chunks {
        // SAFETY: `off + 8 <= dst.len()`, so the 8 bytes are in the range the
        // caller vouched for; `[u8; 8]` has alignment 1.
        let word = unsafe { core::ptr::read_volatile(src.add(off).cast::<[u8; 8]>()) };
        chunk.copy_from_slice(&word);
        off += 8;
    }
    for byte in chunks.into_remainder() {
        // SAFETY: `off < dst.len()`: inside the caller's range.
        *byte = unsafe { core::ptr::read_volatile(src.add(off)) };
        off += 1;
    }
}

/// Volatile copy into shared memory, eight bytes at a time where possible.
///
/// # Safety
///
/// `dst..dst + src.len()` must be writable memory that is only accessed
/// volatilely or atomically by this process.
unsafe fn volatile_copy_in(dst: *mut u8, src: &[u8]) {
    let mut chunks = src.chunks_exact(8);
    let mut off = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // SAFETY: `off + 8 <= src.len()`: inside the caller's range;
        // `[u8; 8]` has alignment 1.
        unsafe { core::ptr::write_volatile(dst.add(off).cast::<[u8; 8]>(), word) };
        off += 8;
    }
    for &byte in chunks.remainder() {
        // SAFETY: `off < src.len()`: inside the caller's range.
        unsafe { core::ptr::write_volatile(dst.add(off), byte) };
        off += 1;
    }
}

/// A zeroed, page-aligned page on the heap, for tests, benchmarks, fuzzing
/// and in-process simulations: both ends of a ring can be played over it.
pub struct OwnedPage {
    ptr: NonNull<u8>,
}

// SAFETY: `OwnedPage` owns its allocation; the only access to the bytes is
// through `RingPage` views (volatile/atomic), which are themselves Send+Sync.
unsafe impl Send for OwnedPage {}
// SAFETY: see `Send`; `&OwnedPage` only hands out `RingPage` views.
unsafe impl Sync for OwnedPage {}

impl OwnedPage {
    const LAYOUT: core::alloc::Layout =
        match core::alloc::Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
            Ok(layout) => layout,
            Err(_) => panic!("4096/4096 is a valid layout"),
        };

    /// Allocates a zeroed page.
    pub fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc::alloc_zeroed(Self::LAYOUT) };
        match NonNull::new(raw) {
            Some(ptr) => Self { ptr },
            None => alloc::alloc::handle_alloc_error(Self::LAYOUT),
        }
    }

    /// A view of the page as a xenstore ring.
    pub fn ring(&self) -> RingPage<'_> {
        // SAFETY: the allocation is 4096 bytes, 4096-aligned, lives as long as
        // `self` (the view borrows `self`), and no reference to its bytes is
        // ever created: `OwnedPage` exposes them only through `RingPage`.
        unsafe { RingPage::new(self.ptr) }
    }

    /// Fills the whole page from `bytes` (shorter input leaves the rest as
    /// is), e.g. to start a test or a fuzz case from an arbitrary page image.
    pub fn fill_from(&self, bytes: &[u8]) {
        let n = bytes.len().min(PAGE_SIZE);
        // SAFETY: `n <= PAGE_SIZE`: inside our allocation, which is only
        // accessed volatilely.
        unsafe { volatile_copy_in(self.ptr.as_ptr(), &bytes[..n]) };
    }
}

impl Default for OwnedPage {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OwnedPage {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout; views borrowing
        // `self` have ended.
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), Self::LAYOUT) }
    }
}

impl core::fmt::Debug for OwnedPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnedPage").field("ptr", &self.ptr).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_words_roundtrip_at_their_offsets() {
        let page = OwnedPage::new();
        let ring = page.ring();
        ring.set_server_features(ServerFeatures::RECONNECTION | ServerFeatures::ERROR);
        ring.set_connection(ConnectionState::Reconnect);
        ring.set_error(RingErrorCode::Proto);
        ring.set_evtchn_port(0xabcd);
        ring.store_index(RingIndex::ReqCons, 0x11, Ordering::Relaxed);
        ring.store_index(RingIndex::ReqProd, 0x22, Ordering::Relaxed);
        ring.store_index(RingIndex::RspCons, 0x33, Ordering::Relaxed);
        ring.store_index(RingIndex::RspProd, 0x44, Ordering::Relaxed);
        let mut raw = [0u8; 32];
        // Read the control words back through a second, independent view of
        // the raw bytes: copy the page out with the crate's volatile copy.
        // SAFETY: the page is 4096 bytes; range 2048..2080 is inside it.
        unsafe { volatile_copy_out(ring.as_ptr().add(2048), &mut raw) };
        let word = |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        assert_eq!(word(0), 0x11);
        assert_eq!(word(4), 0x22);
        assert_eq!(word(8), 0x33);
        assert_eq!(word(12), 0x44);
        assert_eq!(word(16), 3);
        assert_eq!(word(20), 1);
        assert_eq!(word(24), 3);
        assert_eq!(word(28), 0xabcd);
        assert_eq!(
            ring.server_features(),
            ServerFeatures::RECONNECTION | ServerFeatures::ERROR
        );
        assert_eq!(ring.connection(), ConnectionState::Reconnect);
        assert_eq!(ring.error(), RingErrorCode::Proto);
    }

    #[test]
    fn test_copy_clips_at_ring_end_never_overruns() {
        let page = OwnedPage::new();
        let ring = page.ring();
        let data = [0xaau8; 100];
        // 1020 is 4 bytes before the end of the request array.
        assert_eq!(ring.copy_in(Queue::Request, 1020, &data), 4);
        assert_eq!(ring.copy_in(Queue::Request, 0xffff_fffe, &data), 2);
        let mut out = [0u8; 100];
        assert_eq!(ring.copy_out(Queue::Response, 0, &mut out), 100);
        assert!(
            out.iter().all(|&b| b == 0),
            "the response queue was not touched"
        );
    }

    #[test]
    fn test_words_decode_and_encode_both_ways() {
        for (raw, state) in [
            (0, ConnectionState::Connected),
            (1, ConnectionState::Reconnect),
            (2, ConnectionState::Unknown(2)),
            (u32::MAX, ConnectionState::Unknown(u32::MAX)),
        ] {
            assert_eq!(ConnectionState::from_raw(raw), state);
            assert_eq!(state.to_raw(), raw);
        }
        for (raw, code) in [
            (0, RingErrorCode::None),
            (1, RingErrorCode::Comm),
            (2, RingErrorCode::RingIdx),
            (3, RingErrorCode::Proto),
            (4, RingErrorCode::Other(4)),
        ] {
            assert_eq!(RingErrorCode::from_raw(raw), code);
            assert_eq!(code.to_raw(), raw);
        }
        let page = OwnedPage::new();
        let ring = page.ring();
        ring.set_connection(ConnectionState::Unknown(9));
        assert_eq!(ring.connection(), ConnectionState::Unknown(9));
        ring.set_connection(ConnectionState::Connected);
        assert_eq!(ring.connection(), ConnectionState::Connected);
        ring.set_evtchn_port(0x1234_5678);
        assert_eq!(ring.evtchn_port(), 0x1234_5678);
    }

    #[test]
    fn test_copy_out_clips_at_ring_end_and_reads_what_was_written() {
        let page = OwnedPage::new();
        let ring = page.ring();
        let data: [u8; 16] = core::array::from_fn(|i| 0x40 + u8::try_from(i).unwrap_or(0));
        assert_eq!(ring.copy_in(Queue::Response, 1016, &data), 8);
        assert_eq!(ring.copy_in(Queue::Response, 0, &data[8..]), 8);
        let mut out = [0u8; 16];
        // Index 1016 is 8 bytes before the end; 2040 masks to the same place.
        assert_eq!(ring.copy_out(Queue::Response, 2040, &mut out), 8);
        assert_eq!(ring.copy_out(Queue::Response, 1024, &mut out[8..]), 8);
        assert_eq!(out, data);
        assert_eq!(ring.copy_out(Queue::Response, 1023, &mut out), 1);
        assert_eq!(out[0], data[7]);
        assert_eq!(mask(1024 + 5), 5);
        assert_eq!(mask(u32::MAX), 1023);
    }

    #[test]
    fn test_fill_from_writes_the_page_image() {
        let page = OwnedPage::new();
        let mut image = [0u8; PAGE_SIZE];
        image[0] = 0x5a;
        image[2052..2056].copy_from_slice(&77u32.to_ne_bytes());
        image[2076..2080].copy_from_slice(&9u32.to_ne_bytes());
        page.fill_from(&image);
        let ring = page.ring();
        assert_eq!(ring.load_index(RingIndex::ReqProd, Ordering::Relaxed), 77);
        assert_eq!(ring.evtchn_port(), 9);
        let mut first = [0u8; 1];
        ring.copy_out(Queue::Request, 0, &mut first);
        assert_eq!(first, [0x5a]);
        assert!(alloc::format!("{page:?}").starts_with("OwnedPage"));
    }

    #[test]
    fn test_unknown_words_are_kept_not_rejected() {
        assert_eq!(ConnectionState::from_raw(7), ConnectionState::Unknown(7));
        assert_eq!(RingErrorCode::from_raw(9), RingErrorCode::Other(9));
        assert_eq!(ServerFeatures::from_bits_retain(0x80).bits(), 0x80);
    }
}
