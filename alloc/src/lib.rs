//! Where Valori's programs keep their memory: the global allocator ([`HugePages`]: the
//! system's, with transparent huge pages for large blocks) and the memory-mapped files that
//! may hold the full-precision vectors instead of the heap ([`files::VectorFiles`]).
//!
//! A search reads vectors and neighbour lists at random places of a few large blocks (the walk
//! copy, the full-precision vectors, the graph). With the usual 4 KiB pages nearly every such
//! read also misses the TLB; with 2 MiB pages the same blocks need 512 times fewer entries.
//! Linux gives large anonymous blocks huge pages only where a program asks for them
//! (`/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` on most distributions), so
//! [`HugePages`] maps every block of [`HUGE`] bytes or more on its own, on a 2 MiB boundary,
//! marked with `madvise(MADV_HUGEPAGE)`, and unmaps it when it is freed (so a large block never
//! leaves a hole in the system allocator's heap, and its memory goes back to the system at
//! once). Smaller blocks are the system allocator's, unchanged.
//!
//! Only where the bytes live changes: no value, result or hash depends on it. Where the kernel
//! refuses (`never`), or on other systems, the blocks are ordinary ones.

use std::alloc::{GlobalAlloc, Layout, System};

#[cfg(target_os = "linux")]
pub mod files;

/// A huge page, and the smallest block that is placed on one.
pub const HUGE: usize = 2 << 20;

/// The system allocator for small blocks; blocks of [`HUGE`] bytes or more mapped on their own
/// on huge pages.
pub struct HugePages;

/// Whether a block of this layout is mapped on its own (the same answer for its allocation
/// and its release, which both see the caller's layout).
fn mapped(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= HUGE
}

/// Bytes mapped for a block of `size` bytes: whole 4 KiB pages.
fn mapped_len(size: usize) -> usize {
    size.div_ceil(4096) * 4096
}

#[cfg(target_os = "linux")]
mod map {
    use super::HUGE;

    /// Maps `len` bytes (whole pages) of zeros at a multiple of `align` (at least [`HUGE`])
    /// and asks for huge pages over them (a refusal leaves ordinary pages); null if the system
    /// has no memory to give.
    pub fn map(len: usize, align: usize) -> *mut u8 {
        let Some(over) = len.checked_add(align) else {
            return core::ptr::null_mut();
        };
        // SAFETY: an anonymous private mapping of fresh pages, owned by no one else.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                over,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return core::ptr::null_mut();
        }
        let base = base as usize;
        let start = base.next_multiple_of(align);
        // SAFETY: the parts before `start` and after `start + len` are this mapping's own,
        // unused pages (`align` is a multiple of the page size, and so is `len`).
        unsafe {
            if start > base {
                libc::munmap(base as *mut libc::c_void, start - base);
            }
            let end = start + len;
            if base + over > end {
                libc::munmap(end as *mut libc::c_void, base + over - end);
            }
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        debug_assert!(align >= HUGE);
        start as *mut u8
    }

    /// Returns a block of `len` mapped bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr + len` is a block [`map`] returned (with this `len`), no longer used.
    pub unsafe fn unmap(ptr: *mut u8, len: usize) {
        // SAFETY: the caller's contract.
        unsafe { libc::munmap(ptr.cast(), len) };
    }

    /// Grows or shrinks a block in place; false (changing nothing) when the pages after it are
    /// taken.
    ///
    /// # Safety
    /// `ptr..ptr + old` is a block [`map`] returned.
    pub unsafe fn resize_in_place(ptr: *mut u8, old: usize, new: usize) -> bool {
        // SAFETY: without MREMAP_MAYMOVE the block stays where it is or the call fails.
        let at = unsafe { libc::mremap(ptr.cast(), old, new, 0) };
        if at == libc::MAP_FAILED {
            return false;
        }
        if new > old {
            // SAFETY: the grown block is ours.
            unsafe { libc::madvise(ptr.cast(), new, libc::MADV_HUGEPAGE) };
        }
        true
    }
}

// SAFETY: small blocks are `System`'s, allocated and released with the caller's layout; large
// ones (`mapped`, decided the same way from the same layout on both sides) are whole-page
// mappings of their own, aligned to at least the layout's alignment, released with the length
// they were mapped with. `realloc` between the two kinds moves the block.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if mapped(layout) {
            return map::map(mapped_len(layout.size()), layout.align().max(HUGE));
        }
        // SAFETY: the caller's layout, for the system's allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if mapped(layout) {
            // Fresh mappings are zeros: nothing is written, nothing becomes resident.
            return map::map(mapped_len(layout.size()), layout.align().max(HUGE));
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        #[cfg(target_os = "linux")]
        if mapped(layout) {
            // SAFETY: `alloc` mapped this block with this length.
            unsafe { map::unmap(ptr, mapped_len(layout.size())) };
            return;
        }
        // SAFETY: `alloc` took this block from the system with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded to `layout.align()`, does not
        // overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new)) {
            // SAFETY: small before and after: the system's own block and layout.
            (false, false) => return unsafe { System.realloc(ptr, layout, new_size) },
            #[cfg(target_os = "linux")]
            (true, true) => {
                let (old_len, new_len) = (mapped_len(layout.size()), mapped_len(new_size));
                // SAFETY: a block `alloc` mapped with `old_len`.
                if old_len == new_len || unsafe { map::resize_in_place(ptr, old_len, new_len) } {
                    return ptr;
                }
            }
            _ => {}
        }
        // SAFETY: `new` has a non-zero size (the caller's contract).
        let moved = unsafe { self.alloc(new) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the bytes copied and do not overlap; `ptr` is
            // ours, with `layout`.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

/// The size from which the system allocator maps a block on its own, fixed by
/// [`settle_for_server`]: glibc's default.
pub const MMAP_THRESHOLD: usize = 128 << 10;

/// Sets the system allocator up for a long-running server; called once at its start, before
/// its threads run.
///
/// glibc maps a block of 128 KiB or more on its own, but each time such a block is freed it
/// raises that size to the block's (up to 32 MiB), and with it how much free memory each heap
/// keeps before giving any back. A server receives request bodies and batches of a few hundred
/// KiB to a few MiB, so it soon keeps every one of them in its threads' heaps once freed: about
/// 30 MiB for a node ingesting batches of 1,000 records of 128 dimensions (BENCHMARKS.md).
/// Fixing the size at [`MMAP_THRESHOLD`] keeps such blocks mapped on their own, returned to
/// the system when freed. Only the node's binary calls this: a program that embeds Valori
/// keeps its own allocator's settings.
pub fn settle_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a plain call into the C library's allocator.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}

/// Hands the memory the allocator holds free (what index builds, replays and request bodies
/// used and dropped) back to the system, so that a program's resident memory after a burst of
/// writes is what it holds. glibc keeps freed small blocks in each thread's arena until asked;
/// the large blocks [`HugePages`] maps are returned when freed, and other allocators need
/// nothing here.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a plain call into the C library's allocator, which is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Describes the allocator, for benchmark output.
pub fn describe() -> String {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| {
            let start = s.find('[')? + 1;
            let end = s[start..].find(']')? + start;
            Some(s[start..end].to_string())
        })
        .unwrap_or_else(|| "unavailable".into());
    format!("blocks of 2 MiB and more mapped on huge pages (transparent huge pages: {mode})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks are placed on a huge page and round-trip through realloc in both
    /// directions with their contents; small ones are the system's.
    #[test]
    fn large_blocks_are_aligned_and_keep_their_contents() {
        let a = HugePages;
        let small = Layout::from_size_align(1000, 8).unwrap();
        let large = Layout::from_size_align(3 * HUGE + 5, 8).unwrap();
        unsafe {
            let p = a.alloc(large);
            assert_eq!(p as usize % HUGE, 0);
            for i in 0..large.size() {
                *p.add(i) = (i % 251) as u8;
            }
            // Shrink below the threshold, then grow back past it.
            let q = a.realloc(p, large, 1000);
            assert!((0..1000).all(|i| *q.add(i) == (i % 251) as u8));
            let r = a.realloc(q, small, 2 * HUGE);
            assert_eq!(r as usize % HUGE, 0);
            assert!((0..1000).all(|i| *r.add(i) == (i % 251) as u8));
            a.dealloc(r, Layout::from_size_align(2 * HUGE, 8).unwrap());

            let z = a.alloc_zeroed(large);
            assert_eq!(z as usize % HUGE, 0);
            assert!((0..large.size()).step_by(4093).all(|i| *z.add(i) == 0));
            a.dealloc(z, large);

            let s = a.alloc(small);
            assert!(!s.is_null());
            let s = a.realloc(s, small, 4000);
            a.dealloc(s, Layout::from_size_align(4000, 8).unwrap());
        }
    }
}
