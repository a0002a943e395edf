//! The stub domain kernel's pure arithmetic (stubdom/src/pv/arith.rs),
//! tested on the host: the kernel binary cannot be built as a test, so
//! the file is included here as it is.

#[path = "../../stubdom/src/pv/arith.rs"]
mod arith;

use arith::{entry_maddr, ring_offset, room, scale, table_index, CONSOLE_OUT_SIZE};

#[test]
fn time_scaling_follows_vcpu_time_info() {
    // mul = 2^31 is a factor of 0.5; shift 1 doubles first: identity.
    assert_eq!(scale(1_000_000, 1 << 31, 1), 1_000_000);
    // A negative shift divides first: 1000 >> 2 = 250, times 0.5.
    assert_eq!(scale(1000, 1 << 31, -2), 125);
    // A 3 GHz TSC: mul = 2^32 / 3 * 2 with shift -1, about 1/3 ns a tick.
    let mul = u32::try_from((1u64 << 33) / 3).unwrap();
    assert_eq!(scale(3_000_000_000, mul, -1), 999_999_999);
    // No overflow in the product: 2^40 ticks at factor ~1.
    assert_eq!(scale(1 << 40, u32::MAX, 0), (1u64 << 40) - (1 << 8));
    // A shift past the width gives 0, not a panic.
    assert_eq!(scale(5, u32::MAX, 64), 0);
    assert_eq!(scale(5, u32::MAX, -64), 0);
}

#[test]
fn console_ring_indices_wrap_and_refuse_corruption() {
    assert_eq!(room(0, 0), Some(CONSOLE_OUT_SIZE));
    assert_eq!(room(2048, 0), Some(0));
    assert_eq!(room(100, 40), Some(CONSOLE_OUT_SIZE - 60));
    // Free-running indices across the u32 wrap.
    assert_eq!(room(5, u32::MAX - 4), Some(CONSOLE_OUT_SIZE - 10));
    // The reader ahead of us, or more than a ring behind: corrupt.
    assert_eq!(room(0, 1), None);
    assert_eq!(room(2049, 0), None);
    assert_eq!(ring_offset(2047), 2047);
    assert_eq!(ring_offset(2048), 0);
    assert_eq!(ring_offset(u32::MAX), 2047);
}

#[test]
fn page_table_indices_and_entry_addresses() {
    // The grant window's base, 256 GiB: L4 0, L3 256, L2 0, L1 0.
    let va = 0x40_0000_0000;
    assert_eq!([4, 3, 2, 1].map(|l| table_index(va, l)), [0, 256, 0, 0]);
    // 8 MiB + 5 pages: L2 entry 4, L1 entry 5.
    let va = (8 << 20) + 5 * 4096;
    assert_eq!([4, 3, 2, 1].map(|l| table_index(va, l)), [0, 0, 4, 5]);
    // The top of the lower half.
    let va = 0x7FFF_FFFF_F000;
    assert_eq!(
        [4, 3, 2, 1].map(|l| table_index(va, l)),
        [255, 511, 511, 511]
    );
    assert_eq!(entry_maddr(0x1234, 0), 0x123_4000);
    assert_eq!(entry_maddr(0x1234, 511), 0x123_4000 + 511 * 8);
}

#[test]
fn emergency_reserve_is_a_bounded_share_of_the_heap() {
    // --memory 8: about 1,850 heap pages: a sixteenth.
    assert_eq!(arith::reserve_pages(1850), 115);
    // --memory 32 and above: at most 2 MiB.
    assert_eq!(arith::reserve_pages(8000), 500);
    assert_eq!(arith::reserve_pages(100_000), 512);
    // Small heaps: 64 pages, but never more than a quarter.
    assert_eq!(arith::reserve_pages(1024), 64);
    assert_eq!(arith::reserve_pages(200), 50);
    assert_eq!(arith::reserve_pages(0), 0);
}

#[test]
fn guard_keeps_the_used_reserve_back() {
    // Held: the allocator's free bytes and the growth left.
    assert_eq!(arith::guard_free(300, 40, 1000, false), 340);
    // Handed over: as much is kept back, never below zero.
    assert_eq!(arith::guard_free(1300, 40, 1000, true), 340);
    assert_eq!(arith::guard_free(900, 40, 1000, true), 0);
    assert_eq!(arith::guard_free(usize::MAX, 1, 0, false), usize::MAX);
}
