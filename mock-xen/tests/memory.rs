//! mock-xen's shared memory: memfds, shared mappings and their views, and
//! the machine-page allocator.

use std::sync::atomic::Ordering;

use mock_xen::memory::{create_memfd, MachineMemory, SharedMap, PAGE_SIZE};
use mock_xen::Error;

/// Whether this process maps a memfd named `name` right now.
fn mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("reading /proc/self/maps")
        .lines()
        .any(|l| l.contains(&format!("/memfd:{name} ")))
}

#[test]
fn test_a_shared_map_is_shared_sized_and_unmapped_on_drop() {
    let name = format!("xsl-test-{}", std::process::id());
    let fd = create_memfd(&name, 2 * PAGE_SIZE as u64).unwrap();
    let stat = nix::sys::stat::fstat(&fd).unwrap();
    assert_eq!(stat.st_size, 2 * PAGE_SIZE as i64, "the memfd's size");
    let a = SharedMap::new(&fd, 0, 2 * PAGE_SIZE).unwrap();
    let b = SharedMap::new(&fd, 0, 2 * PAGE_SIZE).unwrap();
    assert_eq!(a.len(), 2 * PAGE_SIZE);
    assert!(!a.is_empty());
    assert!(mapped(&name));

    // Rings: page-aligned offsets whose whole page is inside.
    for (offset, ok) in [
        (0, true),
        (PAGE_SIZE, true),
        (2 * PAGE_SIZE, false),
        (100, false),
        (PAGE_SIZE + 1, false),
        (usize::MAX - 10, false),
    ] {
        assert_eq!(a.ring(offset).is_some(), ok, "ring at {offset}");
    }
    let ring_a = a.ring(PAGE_SIZE).unwrap();
    let ring_b = b.ring(PAGE_SIZE).unwrap();
    xenring::GuestEnd::new(ring_a).write(b"shared").unwrap();
    let mut buf = [0u8; 8];
    let n = xenring::ServerEnd::new(ring_b).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"shared", "both maps see the same page");
    assert!(
        xenring::ServerEnd::new(a.ring(0).unwrap())
            .readable()
            .is_ok_and(|n| n == 0),
        "the first page is another ring"
    );

    // Words: 4 bytes each, the last one inside, none overlapping.
    let words = 2 * PAGE_SIZE / 4;
    assert!(a.word(words - 1).is_some());
    assert!(a.word(words).is_none());
    assert!(a.word(usize::MAX).is_none());
    a.word(0).unwrap().store(u32::MAX, Ordering::SeqCst);
    for i in 1..4 {
        assert_eq!(b.word(i).unwrap().load(Ordering::SeqCst), 0, "word {i}");
    }
    a.word(3).unwrap().store(0x1234_5678, Ordering::SeqCst);
    assert_eq!(b.word(3).unwrap().load(Ordering::SeqCst), 0x1234_5678);
    assert_eq!(b.word(0).unwrap().load(Ordering::SeqCst), u32::MAX);

    drop(a);
    drop(b);
    assert!(!mapped(&name), "dropping the maps unmaps them");
}

#[test]
fn test_machine_memory_hands_out_each_frame_once_and_zeroed_again() {
    let mut mem = MachineMemory::new(4).unwrap();
    let frames: Vec<u64> = (0..3).map(|_| mem.alloc().unwrap()).collect();
    assert_eq!(frames, vec![1, 2, 3], "frame 0 is never handed out");
    assert!(matches!(mem.alloc(), Err(Error::OutOfMemory)));
    for (mfn, inside) in [(0, false), (1, true), (3, true), (4, false)] {
        assert_eq!(mem.contains(mfn), inside, "frame {mfn}");
    }

    // Frame 2 written, freed, handed out again: zeros, other frames kept.
    let map = SharedMap::new(mem.fd(), 0, 4 * PAGE_SIZE).unwrap();
    for mfn in [2usize, 3] {
        let word = map.word(mfn * PAGE_SIZE / 4).unwrap();
        word.store(0xdead_beef, Ordering::SeqCst);
    }
    mem.free(2).unwrap();
    assert_eq!(mem.alloc().unwrap(), 2, "the freed frame comes back");
    let word = |mfn: usize| {
        map.word(mfn * PAGE_SIZE / 4)
            .unwrap()
            .load(Ordering::SeqCst)
    };
    assert_eq!(word(2), 0, "a freed frame's next owner reads zeros");
    assert_eq!(word(3), 0xdead_beef, "only that frame");
    assert!(matches!(mem.alloc(), Err(Error::OutOfMemory)));
}
