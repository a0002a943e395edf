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
