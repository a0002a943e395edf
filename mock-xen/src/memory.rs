//! Shared memory: the machine's memory (one memfd, page index = mfn), the
//! event-word region, and owned `mmap`s of them.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use nix::fcntl::{fallocate, FallocateFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::unistd::ftruncate;

use crate::error::Error;

/// Size of a machine page.
pub const PAGE_SIZE: usize = 4096;

/// Creates a memfd of `len` bytes (sparse: pages cost nothing until touched).
pub fn create_memfd(name: &str, len: u64) -> Result<OwnedFd, Error> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|source| Error::Sys {
        op: "memfd_create",
        source,
    })?;
    let len = i64::try_from(len).map_err(|_| Error::OutOfMemory)?;
    ftruncate(&fd, len).map_err(|source| Error::Sys {
        op: "ftruncate",
        source,
    })?;
    Ok(fd)
}

/// An owned, shared, read-write `mmap` of part of a file; unmapped on drop.
#[derive(Debug)]
pub struct SharedMap {
    ptr: NonNull<u8>,
    len: NonZeroUsize,
}

// SAFETY: the mapping is plain shared memory; every access through it goes
// through volatile copies (`xenring::RingPage`) or atomics (`word`), which
// are sound from any thread.
unsafe impl Send for SharedMap {}
// SAFETY: see `Send`: `&SharedMap` only offers atomic and volatile access.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Maps `len` bytes of `fd` at `offset` (page-aligned), shared, R/W.
    pub fn new(fd: impl AsFd, offset: u64, len: usize) -> Result<Self, Error> {
        let len = NonZeroUsize::new(len).ok_or(Error::Protocol("empty mapping"))?;
        let offset = i64::try_from(offset).map_err(|_| Error::Protocol("mapping offset"))?;
        // SAFETY: we ask the kernel for a fresh mapping at an address of its
        // choosing (no `MAP_FIXED`), so no existing memory is affected. The
        // result is owned by the returned value and unmapped exactly once, on
        // drop. Nothing creates Rust references into it (see the accessors).
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                offset,
            )
        }
        .map_err(|source| Error::Sys { op: "mmap", source })?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether the mapping is empty (never: the length is non-zero).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The mapped page at byte `offset` as a xenstore ring view.
    pub fn ring(&self, offset: usize) -> Option<xenring::RingPage<'_>> {
        if offset % PAGE_SIZE != 0 || offset.checked_add(PAGE_SIZE)? > self.len.get() {
            return None;
        }
        // SAFETY: `offset..offset + 4096` is inside our mapping and
        // page-aligned; the mapping lives as long as the borrow of `self`;
        // nothing in this process references the bytes except through
        // `RingPage` (volatile) and `word` (atomics, on a different memfd).
        Some(unsafe { xenring::RingPage::new(self.ptr.add(offset)) })
    }

    /// The `u32` word at index `i` (atomic access only).
    pub fn word(&self, i: usize) -> Option<&AtomicU32> {
        let end = i.checked_mul(4)?.checked_add(4)?;
        if end > self.len.get() {
            return None;
        }
        // SAFETY: the word is inside the mapping (checked above), 4-aligned
        // (mappings are page-aligned and `i * 4` is a multiple of 4), valid
        // for the borrow of `self`, and only ever accessed atomically by
        // every process that maps it.
        Some(unsafe { AtomicU32::from_ptr(self.ptr.add(i * 4).cast::<u32>().as_ptr()) })
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned; views borrow
        // `self`, so none outlive this.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len.get()) } {
            eprintln!("mock-xen: munmap failed: {e}");
        }
    }
}

/// The machine's memory: a memfd whose page `i` is machine frame `i`, and a
/// page allocator over it.
#[derive(Debug)]
pub struct MachineMemory {
    fd: OwnedFd,
    pages: u64,
    next: u64,
    free: Vec<u64>,
}

impl MachineMemory {
    /// `pages` pages of machine memory (sparse until touched). Frame 0 is
    /// never handed out, so that a zero mfn is always invalid.
    pub fn new(pages: u64) -> Result<Self, Error> {
        let bytes = pages
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(Error::OutOfMemory)?;
        Ok(Self {
            fd: create_memfd("mock-xen-machine-memory", bytes)?,
            pages,
            next: 1,
            free: Vec::new(),
        })
    }

    /// The memfd.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Allocates a zeroed page; returns its mfn.
    pub fn alloc(&mut self) -> Result<u64, Error> {
        if let Some(mfn) = self.free.pop() {
            return Ok(mfn);
        }
        if self.next >= self.pages {
            return Err(Error::OutOfMemory);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Frees a page. Its contents are discarded (a hole is punched in the
    /// memfd), so its next owner reads zeros and never old data.
    pub fn free(&mut self, mfn: u64) -> Result<(), Error> {
        let offset = i64::try_from(mfn * PAGE_SIZE as u64).map_err(|_| Error::OutOfMemory)?;
        fallocate(
            &self.fd,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset,
            PAGE_SIZE as i64,
        )
        .map_err(|source| Error::Sys {
            op: "fallocate(PUNCH_HOLE)",
            source,
        })?;
        self.free.push(mfn);
        Ok(())
    }

    /// Whether `mfn` is a frame of this machine.
    pub fn contains(&self, mfn: u64) -> bool {
        mfn > 0 && mfn < self.pages
    }
}
