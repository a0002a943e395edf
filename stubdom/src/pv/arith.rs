//! The kernel's pure arithmetic, with no platform code, so that host tests
//! can include this file as it is (`tests/tests/stubdom_pv.rs`; the
//! kernel binary itself cannot be built for tests).

/// Bytes in the console's output ring (`io/console.h`).
pub const CONSOLE_OUT_SIZE: u32 = 2048;

/// TSC ticks to nanoseconds as `vcpu_time_info` says: shift (left if
/// positive), then multiply by a 32.32 fixed-point factor.
pub fn scale(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift >= 0 {
        delta
            .checked_shl(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    } else {
        delta
            .checked_shr(u32::from(shift.unsigned_abs()))
            .unwrap_or(0)
    };
    let ns = (u128::from(shifted) * u128::from(mul)) >> 32;
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Where free-running `index` falls in the console's output ring.
pub fn ring_offset(index: u32) -> usize {
    (index % CONSOLE_OUT_SIZE) as usize
}

/// Room for more console output, given both indices; `None` if the
/// reader's index is not within the ring's size behind ours (corrupt).
pub fn room(prod: u32, cons: u32) -> Option<u32> {
    let queued = prod.wrapping_sub(cons);
    (queued <= CONSOLE_OUT_SIZE).then(|| CONSOLE_OUT_SIZE - queued)
}

/// Index of `va` in its page table at `level` (1 = L1 .. 4 = L4).
pub fn table_index(va: usize, level: u32) -> usize {
    (va >> (12 + 9 * (level - 1))) & 511
}

/// Machine address of entry `index` of the table in frame `mfn`, as
/// mmu_update's `ptr` (MMU_NORMAL_PT_UPDATE, 0, in the low bits).
pub fn entry_maddr(mfn: u64, index: usize) -> u64 {
    (mfn << 12) + (index as u64) * 8
}

/// The heap's emergency reserve: pages kept out of the allocator at start
/// and handed to it only when an allocation fails and the domain may not
/// grow (fragmentation can defeat the memory guard's count of free bytes:
/// a block of tens of KiB may find no room with hundreds of KiB free in
/// pieces). A sixteenth of the boot heap, 64 pages at least, 512 at most,
/// and never more than a quarter of the heap.
pub fn reserve_pages(heap_pages: usize) -> usize {
    (heap_pages / 16).clamp(64, 512).min(heap_pages / 4)
}

/// The free bytes the memory guard is told of: while the reserve is held
/// it is not in the allocator, so what the allocator has free is the
/// figure; once it was handed over, as much is kept back, so the guard
/// refuses growth as it did before (until that much more is freed).
pub fn guard_free(available: usize, can_grow: usize, reserve: usize, reserve_used: bool) -> usize {
    let free = available.saturating_add(can_grow);
    if reserve_used {
        free.saturating_sub(reserve)
    } else {
        free
    }
}
