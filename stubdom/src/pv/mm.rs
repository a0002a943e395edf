//! Memory: page tables over every page of the domain, the heap, its growth
//! with XENMEM_populate_physmap, and the grant-mapping window.
//!
//! Virtual address = pseudo-physical frame * 4096 (`boot.rs`). Xen's
//! bootstrap tables map only the first few MiB; [`init`] maps the rest of
//! the domain's `nr_pages`, creating page tables as a PV kernel must: a
//! new table is a free page, zeroed while still mapped writable, then made
//! read-only (`update_va_mapping`), then linked into its parent with
//! `mmu_update`, which has Xen validate it. New tables are taken from
//! free pages that are already mapped: Xen guarantees 512 KiB of mapped
//! padding after its bootstrap stack, and each new L1 maps 512 more
//! pages, so the mapped frontier always stays ahead.
//!
//! Above the domain's pages lies the growth range (L1 tables made at
//! start, entries empty), filled by `populate_physmap` when the heap runs
//! out, up to the domain's maximum reservation. Below the heap, the
//! emergency reserve (`arith::reserve_pages`), handed to the allocator
//! only when an allocation fails with no growth left, so that a block the
//! fragmented heap cannot place does not crash the domain; the memory
//! guard keeps its worth back afterwards. Far above, at [`WINDOW_BASE`],
//! the grant window: tables made, entries empty.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use talc::{OomHandler, Span, Talc};

use super::abi::{self, mem, pte, MemoryReservation, MmuUpdate, StartInfo};
use super::arith::{entry_maddr, reserve_pages, table_index};
use super::console::kprintln;
use super::hypercall::{self, arg, arg_mut, HypercallError};

// The kernel is x86_64 only: usize is 64 bits, so a u64 fits exactly.
const _: () = assert!(usize::BITS == u64::BITS);

/// A frame number or count as a usize (exact, see the assertion above).
#[allow(clippy::cast_possible_truncation)]
const fn us(x: u64) -> usize {
    x as usize
}

/// Bytes in a page.
pub const PAGE: usize = 4096;
/// Entries in a page table.
const ENTRIES: usize = 512;
/// Virtual address of the grant window (256 GiB: its own L3 entry).
pub const WINDOW_BASE: usize = 0x40_0000_0000;
/// Pages in the grant window (two L1 tables).
pub const WINDOW_PAGES: usize = 1024;
/// The growth range's L1 tables may take at most this share of the
/// domain's pages (1/16), and at most [`MAX_GROWTH_L1S`] of them.
const GROWTH_L1_SHARE: u64 = 16;
/// At most 128 MiB of growth (64 L1 tables).
const MAX_GROWTH_L1S: u64 = 64;
/// Pages asked of Xen per populate_physmap call.
const GROW_BATCH: usize = 64;
/// Pages the heap grows by at least.
const GROW_MIN_PAGES: usize = 64;

/// Why memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MmError {
    /// A hypercall failed.
    #[error(transparent)]
    Hypercall(#[from] HypercallError),
    /// start_info's frame numbers do not make sense.
    #[error("start_info: {0}")]
    BadStartInfo(&'static str),
    /// No mapped free page was left for a page table.
    #[error("no free page for a page table at pfn {0}")]
    NoTablePage(u64),
    /// A page table's frame is not one of the domain's pages.
    #[error("page-table frame {0:#x} has no pseudo-physical frame")]
    UnknownFrame(u64),
    /// The heap's allocator refused its memory.
    #[error("the allocator refused the heap span")]
    Claim,
}

/// The pseudo-physical frame of machine frame `mfn` (Xen's read-only
/// machine-to-phys table).
fn mfn_to_pfn(mfn: u64) -> Option<u64> {
    if mfn >= abi::MACH2PHYS_NR_ENTRIES {
        return None;
    }
    let m2p = abi::MACH2PHYS_VIRT_START as *const u64;
    // SAFETY: Xen maps the table read-only at MACH2PHYS_VIRT_START in every
    // 64-bit PV guest, MACH2PHYS_NR_ENTRIES long; mfn is below that.
    Some(unsafe { m2p.add(us(mfn)).read_volatile() })
}

/// What the walk knows of the domain's frames.
struct Frames {
    /// The pfn-to-mfn list Xen gave (`nr_pages` entries).
    p2m: *const u64,
    /// Pages the domain started with.
    nr_pages: u64,
    /// Virtual address of the L4 table.
    l4_va: usize,
    /// Its frame.
    l4_mfn: u64,
    /// Next free pfn for page tables.
    next_free: u64,
}

impl Frames {
    fn mfn(&self, pfn: u64) -> Option<u64> {
        // SAFETY: the p2m list is mapped (it is in Xen's bootstrap area) and
        // has `nr_pages` entries; pfn is checked against that.
        (pfn < self.nr_pages).then(|| unsafe { self.p2m.add(us(pfn)).read_volatile() })
    }

    /// The table an entry points at: (its frame, its virtual address).
    fn next_table(entry: u64) -> Result<Option<(u64, usize)>, MmError> {
        if entry & pte::PRESENT == 0 {
            return Ok(None);
        }
        let mfn = (entry & pte::FRAME_MASK) >> 12;
        let pfn = mfn_to_pfn(mfn).ok_or(MmError::UnknownFrame(mfn))?;
        let va = usize::try_from(pfn)
            .ok()
            .and_then(|p| p.checked_mul(PAGE))
            .ok_or(MmError::UnknownFrame(mfn))?;
        Ok(Some((mfn, va)))
    }

    /// Reads entry `index` of the (read-only mapped) table at `table_va`.
    fn entry(table_va: usize, index: usize) -> u64 {
        // SAFETY: `table_va` is a page table of this domain, mapped
        // read-only at pfn * 4096 (every table the walk reaches is one of
        // the domain's pages, all of which are mapped); index < 512.
        unsafe { (table_va as *const u64).add(index).read_volatile() }
    }

    /// The L1 table covering `va`, if the tables above it exist.
    fn find_l1(&self, va: usize) -> Result<Option<(u64, usize)>, MmError> {
        let mut table = (self.l4_mfn, self.l4_va);
        for level in [4, 3, 2] {
            match Self::next_table(Self::entry(table.1, table_index(va, level)))? {
                Some(t) => table = t,
                None => return Ok(None),
            }
        }
        Ok(Some(table))
    }

    /// Whether `va` is mapped.
    fn is_mapped(&self, va: usize) -> Result<bool, MmError> {
        Ok(self
            .find_l1(va)?
            .is_some_and(|(_, l1)| Self::entry(l1, table_index(va, 1)) & pte::PRESENT != 0))
    }

    /// A new, empty page table, mapped read-only: (frame, address).
    fn new_table(&mut self) -> Result<(u64, usize), MmError> {
        let pfn = self.next_free;
        let va = usize::try_from(pfn)
            .ok()
            .and_then(|p| p.checked_mul(PAGE))
            .ok_or(MmError::NoTablePage(pfn))?;
        let mfn = self.mfn(pfn).ok_or(MmError::NoTablePage(pfn))?;
        if !self.is_mapped(va)? {
            return Err(MmError::NoTablePage(pfn));
        }
        self.next_free += 1;
        // SAFETY: the page is free (at or above every boot element, below
        // the heap, which is set up after the tables) and mapped writable.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, PAGE) };
        // SAFETY: nothing else uses the page; Xen wants a table mapped
        // read-only before it becomes one.
        unsafe { hypercall::update_va_mapping(va, (mfn << 12) | pte::TABLE_RO)? };
        Ok((mfn, va))
    }

    /// The L1 table covering `va`, making the missing tables on the way.
    fn ensure_l1(&mut self, va: usize) -> Result<(u64, usize), MmError> {
        let mut table = (self.l4_mfn, self.l4_va);
        for level in [4, 3, 2] {
            let index = table_index(va, level);
            table = match Self::next_table(Self::entry(table.1, index))? {
                Some(t) => t,
                None => {
                    let (mfn, new_va) = self.new_table()?;
                    let link = MmuUpdate {
                        ptr: entry_maddr(table.0, index),
                        val: (mfn << 12) | pte::LINK,
                    };
                    // SAFETY: the entry was empty; the new table is empty,
                    // so linking it maps nothing yet.
                    unsafe { hypercall::mmu_update(&[link])? };
                    (mfn, new_va)
                }
            };
        }
        Ok(table)
    }

    /// Maps every page in `[first, end)` that is not mapped yet.
    fn map_pages(&mut self, first: u64, end: u64) -> Result<(), MmError> {
        let mut batch = [MmuUpdate::default(); 64];
        let mut pfn = first;
        while pfn < end {
            let va = us(pfn) * PAGE;
            let (l1_mfn, l1_va) = self.ensure_l1(va)?;
            // Up to the end of this L1 table's 2 MiB.
            let chunk_end = ((pfn / ENTRIES as u64) + 1) * ENTRIES as u64;
            let mut n = 0;
            while pfn < end.min(chunk_end) {
                let idx = table_index(us(pfn) * PAGE, 1);
                if Self::entry(l1_va, idx) & pte::PRESENT == 0 {
                    let mfn = self.mfn(pfn).ok_or(MmError::BadStartInfo("p2m"))?;
                    batch[n] = MmuUpdate {
                        ptr: entry_maddr(l1_mfn, idx),
                        val: (mfn << 12) | pte::DATA,
                    };
                    n += 1;
                    if n == batch.len() {
                        // SAFETY: each maps one of our own, unmapped pages
                        // (not a page table: those are below `next_free`).
                        unsafe { hypercall::mmu_update(&batch)? };
                        n = 0;
                    }
                }
                pfn += 1;
            }
            if n > 0 {
                // SAFETY: as above.
                unsafe { hypercall::mmu_update(&batch[..n])? };
            }
        }
        Ok(())
    }
}

/// The growth state, kept in the allocator as its out-of-memory handler.
pub struct Grow {
    /// The heap span talc manages.
    heap: Span,
    /// Next pfn to populate.
    next_pfn: u64,
    /// End of the growth range (L1 tables exist up to here).
    end_pfn: u64,
    /// Pages Xen may still give (maximum - current reservation).
    allowed: u64,
    /// Pages grown so far.
    grown: u64,
    /// L1 frames of the growth range, by 2 MiB chunk from `first_pfn`.
    first_pfn: u64,
    l1_mfns: [u64; us(MAX_GROWTH_L1S)],
    /// The emergency reserve (`arith::reserve_pages`): mapped pages of
    /// our own below the heap, kept out of the allocator until an
    /// allocation fails with no growth left; empty once handed over.
    reserve: Span,
    /// Its size.
    reserve_bytes: usize,
}

impl Grow {
    /// Pages the heap can still grow by.
    fn can_grow(&self) -> u64 {
        self.end_pfn.saturating_sub(self.next_pfn).min(self.allowed)
    }

    /// Populates and maps up to `pages` pages at `next_pfn`; returns how
    /// many were added.
    fn populate(&mut self, pages: u64) -> u64 {
        let want = pages.min(self.can_grow());
        let mut added = 0;
        while added < want {
            let n = (want - added).min(GROW_BATCH as u64);
            let mut list = [0u64; GROW_BATCH];
            for (i, slot) in list.iter_mut().enumerate().take(us(n)) {
                *slot = self.next_pfn + i as u64;
            }
            let mut res = MemoryReservation {
                extent_start: arg_mut(&mut list),
                nr_extents: n,
                extent_order: 0,
                mem_flags: 0,
                domid: abi::DOMID_SELF,
            };
            // SAFETY: `res` and `list` are live; Xen reads the gpfns and
            // writes each page's mfn back (a PV domain), setting its
            // machine-to-phys entry.
            let got =
                match unsafe { hypercall::memory_op(mem::POPULATE_PHYSMAP, arg_mut(&mut res)) } {
                    Ok(got) => got.min(n),
                    Err(_) => 0,
                };
            let mut batch = [MmuUpdate::default(); GROW_BATCH];
            for (i, mfn) in list.iter().enumerate().take(us(got)) {
                let pfn = self.next_pfn + i as u64;
                let chunk = us((pfn - self.first_pfn) / ENTRIES as u64);
                let Some(&l1) = self.l1_mfns.get(chunk) else {
                    return added;
                };
                batch[i] = MmuUpdate {
                    ptr: entry_maddr(l1, table_index(us(pfn) * PAGE, 1)),
                    val: (mfn << 12) | pte::DATA,
                };
            }
            // SAFETY: each maps a page Xen just gave us at its own empty
            // entry of the growth range, which nothing uses yet.
            if got == 0 || unsafe { hypercall::mmu_update(&batch[..us(got)]) }.is_err() {
                return added;
            }
            self.next_pfn += got;
            self.allowed -= got;
            self.grown += got;
            added += got;
            if got < n {
                break;
            }
        }
        added
    }
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let bytes = layout
            .size()
            .saturating_add(layout.align())
            .saturating_add(256);
        let pages = bytes.div_ceil(PAGE).max(GROW_MIN_PAGES) as u64;
        let added = talc.oom_handler.populate(pages);
        if added == 0 {
            // No growth left: the reserve, once. The memory guard keeps
            // its worth back from then on (arith::guard_free).
            let reserve = core::mem::replace(&mut talc.oom_handler.reserve, Span::empty());
            if !reserve.is_empty() {
                // SAFETY: the reserve's pages are mapped, ours, and used by
                // nothing: kept out of the allocator since `init`, and
                // taken out of `Grow` above, so claimed only once.
                if unsafe { talc.claim(reserve) }.is_ok() {
                    kprintln!(
                        "stubdom: the heap is full: its emergency reserve ({} KiB) is in use; \
                         requests that grow the store are refused until as much is freed",
                        talc.oom_handler.reserve_bytes / 1024
                    );
                    return Ok(());
                }
            }
            OOM.store(true, Ordering::Relaxed);
            return Err(());
        }
        // (kprintln does not allocate: it formats straight onto the ring.)
        kprintln!(
            "stubdom: heap grew by {added} pages ({} grown, {} more allowed)",
            talc.oom_handler.grown,
            talc.oom_handler.can_grow()
        );
        let old = talc.oom_handler.heap;
        let Some((base, acme)) = old.get_base_acme() else {
            return Err(());
        };
        let new = Span::new(base, acme.wrapping_add(us(added) * PAGE));
        // SAFETY: the bytes from the old end to the new one are the pages
        // just mapped, right after the heap, used by nothing else.
        talc.oom_handler.heap = unsafe { talc.extend(old, new) };
        Ok(())
    }
}

/// The global allocator: talc over the heap, behind a flag that refuses
/// (null) a re-entrant call instead of deadlocking. There is one vCPU and
/// no Rust code runs in the upcall, so the flag is never contended.
pub struct KernelAlloc {
    talc: UnsafeCell<Option<Talc<Grow>>>,
    busy: AtomicBool,
}

// SAFETY: `talc` is only reached between a successful swap of `busy` to
// true and its reset, so no two callers use it at once.
unsafe impl Sync for KernelAlloc {}

impl KernelAlloc {
    /// Runs `f` on the allocator, or gives `None` if it is busy or not
    /// set up.
    fn with<R>(&self, f: impl FnOnce(&mut Talc<Grow>) -> R) -> Option<R> {
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: `busy` was false: this is the only user (see Sync).
        let r = unsafe { (*self.talc.get()).as_mut().map(f) };
        self.busy.store(false, Ordering::Release);
        r
    }
}

// SAFETY: talc returns blocks of the layout asked for, within the heap,
// never overlapping a live block; `with` serialises every use.
unsafe impl GlobalAlloc for KernelAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: layout has a non-zero size (GlobalAlloc's contract).
        self.with(|t| unsafe { t.malloc(layout) }.map_or(null_mut(), |p| p.as_ptr()))
            .unwrap_or(null_mut())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller gives a block this allocator handed out
            // with this layout.
            self.with(|t| unsafe { t.free(p, layout) });
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(p) = NonNull::new(ptr) else {
            return null_mut();
        };
        self.with(|t| {
            if new_size >= layout.size() {
                // SAFETY: a live block of `layout`; new_size >= its size.
                unsafe { t.grow(p, layout, new_size) }.map_or(null_mut(), |n| n.as_ptr())
            } else {
                // SAFETY: a live block of `layout`; new_size is smaller and
                // non-zero (GlobalAlloc's contract).
                unsafe { t.shrink(p, layout, new_size) };
                ptr
            }
        })
        .unwrap_or(null_mut())
    }
}

#[global_allocator]
static ALLOC: KernelAlloc = KernelAlloc {
    talc: UnsafeCell::new(None),
    busy: AtomicBool::new(false),
};

/// An allocation failed after growth failed (read by the panic handler).
pub static OOM: AtomicBool = AtomicBool::new(false);
/// Pages the domain had at start.
static BOOT_PAGES: AtomicUsize = AtomicUsize::new(0);

/// Heap figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapStats {
    /// Bytes handed out.
    pub used: usize,
    /// Bytes free in the heap.
    pub free: usize,
    /// Bytes the heap can still grow by.
    pub can_grow: usize,
    /// Pages the domain started with.
    pub boot_pages: usize,
    /// Pages added since.
    pub grown_pages: usize,
    /// Bytes of the emergency reserve.
    pub reserve: usize,
    /// Whether the reserve was handed to the allocator.
    pub reserve_used: bool,
}

/// The heap's figures now (`None` while the allocator is busy).
pub fn stats() -> Option<HeapStats> {
    ALLOC.with(|t| {
        let c = t.get_counters();
        HeapStats {
            used: c.allocated_bytes,
            free: c.available_bytes,
            can_grow: us(t.oom_handler.can_grow()).saturating_mul(PAGE),
            boot_pages: BOOT_PAGES.load(Ordering::Relaxed),
            grown_pages: us(t.oom_handler.grown),
            reserve: t.oom_handler.reserve_bytes,
            reserve_used: t.oom_handler.reserve_bytes > 0 && t.oom_handler.reserve.is_empty(),
        }
    })
}

/// Reads a `domid_t` reservation figure of our own domain.
fn reservation(cmd: u64) -> Result<u64, HypercallError> {
    let domid = abi::DOMID_SELF;
    // SAFETY: the argument is a live domid_t.
    unsafe { hypercall::memory_op(cmd, arg(&domid)) }
}

/// Maps every page of the domain, makes the growth range's and the grant
/// window's tables, and sets up the heap over the free pages.
/// `boot_rsp` is where Xen's bootstrap stack ended; `image_end` the end of
/// the kernel image.
///
/// # Safety
/// Once, at start, before anything is allocated; `si` is Xen's start_info.
pub unsafe fn init(si: &StartInfo, boot_rsp: usize, image_end: usize) -> Result<(), MmError> {
    let page_up = |a: u64| a.div_ceil(PAGE as u64);
    let nr_pages = si.nr_pages;
    if nr_pages == 0 || si.mfn_list == 0 || si.pt_base % PAGE as u64 != 0 {
        return Err(MmError::BadStartInfo("nr_pages, mfn_list or pt_base"));
    }
    let p2m = si.mfn_list as *const u64;
    let l4_pfn = si.pt_base / PAGE as u64;
    let mut frames = Frames {
        p2m,
        nr_pages,
        l4_va: us(si.pt_base),
        l4_mfn: 0,
        next_free: 0,
    };
    frames.l4_mfn = frames.mfn(l4_pfn).ok_or(MmError::BadStartInfo("pt_base"))?;
    let si_addr = si as *const StartInfo as u64;
    // Free pages start above every element of Xen's start-of-day layout.
    let elements = [
        page_up(image_end as u64),
        page_up(si.mfn_list + nr_pages * 8),
        page_up(si_addr + core::mem::size_of::<StartInfo>() as u64),
        l4_pfn + si.nr_pt_frames,
        page_up(boot_rsp as u64),
        page_up(si.mod_start + si.mod_len),
        mfn_to_pfn(si.console_mfn).map_or(0, |p| p.saturating_add(1)),
        mfn_to_pfn(si.store_mfn).map_or(0, |p| p.saturating_add(1)),
    ];
    let free_start = elements
        .iter()
        .copied()
        .filter(|&p| p <= nr_pages)
        .max()
        .unwrap_or(nr_pages);
    frames.next_free = free_start;
    frames.map_pages(0, nr_pages)?;

    // The grant window: tables made, entries empty.
    for chunk in 0..WINDOW_PAGES.div_ceil(ENTRIES) {
        frames.ensure_l1(WINDOW_BASE + chunk * ENTRIES * PAGE)?;
    }

    // The growth range, as far as the domain may grow and a small share of
    // its pages in L1 tables allows.
    let max = reservation(mem::MAXIMUM_RESERVATION)?;
    let cur = reservation(mem::CURRENT_RESERVATION)?;
    let allowed = max.saturating_sub(cur);
    // The first chunk may share an L1 with the top of the boot pages.
    let first_chunk = nr_pages / ENTRIES as u64;
    let l1s = if allowed == 0 {
        0
    } else {
        (nr_pages + allowed).div_ceil(ENTRIES as u64) - first_chunk
    }
    .min(MAX_GROWTH_L1S)
    .min(nr_pages / GROWTH_L1_SHARE);
    let mut l1_mfns = [0u64; us(MAX_GROWTH_L1S)];
    let mut made = 0u64;
    for (i, slot) in l1_mfns.iter_mut().enumerate().take(l1s as usize) {
        let va = us((first_chunk + i as u64) * ENTRIES as u64) * PAGE;
        match frames.ensure_l1(va) {
            Ok((mfn, _)) => {
                *slot = mfn;
                made += 1;
            }
            Err(_) => break,
        }
    }
    let end_pfn = ((first_chunk + made) * ENTRIES as u64).max(nr_pages);

    let free_base = us(frames.next_free) * PAGE;
    let heap_end = us(nr_pages) * PAGE;
    if free_base >= heap_end {
        return Err(MmError::NoTablePage(frames.next_free));
    }
    // The reserve below the heap: growth extends the heap at its top.
    let reserve_bytes = reserve_pages((heap_end - free_base) / PAGE) * PAGE;
    let heap_base = free_base + reserve_bytes;
    let mut talc = Talc::new(Grow {
        heap: Span::empty(),
        next_pfn: nr_pages,
        end_pfn,
        allowed,
        grown: 0,
        first_pfn: first_chunk * ENTRIES as u64,
        l1_mfns,
        reserve: Span::new(free_base as *mut u8, heap_base as *mut u8),
        reserve_bytes,
    });
    let span = Span::new(heap_base as *mut u8, heap_end as *mut u8);
    // SAFETY: the span is mapped, free pages of our own (above every boot
    // element and every page table made here), used by nothing else.
    talc.oom_handler.heap = unsafe { talc.claim(span) }.map_err(|()| MmError::Claim)?;
    BOOT_PAGES.store(us(nr_pages), Ordering::Relaxed);
    // SAFETY: nothing has been allocated yet and `busy` is false (the
    // caller's contract): this is the only access.
    unsafe { *ALLOC.talc.get() = Some(talc) };
    Ok(())
}
