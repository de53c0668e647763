//! Fixed-width rows in shared chunks: how a collection holds its full-precision vectors.
//!
//! Rows live in chunks of a power-of-two number of rows (about [`CHUNK_BYTES`] each), every
//! chunk behind its own reference count. Cloning [`Rows`] copies only the list of chunks, so a
//! clone shares every byte with the original; a write copies the one chunk it touches, and only
//! while that chunk is shared (copy on write). Vectors are only ever appended, so two states
//! that share them differ at most in the last chunk.
//!
//! This is what lets the node's two copies of the state (see `node/src/engine/copies.rs`) hold
//! one copy of the full-precision vectors between them: [`Rows::share_from`] makes one state
//! use the other's chunks once both hold the same rows. Only the memory is shared; the values,
//! the encoding and every hash are those of plain contiguous rows.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// Target size of a chunk in bytes: large enough that the list of chunks stays small (one
/// pointer per 128 KiB), small enough that copying the last chunk on a write is cheap.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Rows of `width` elements of `T`, appended one at a time, in shared chunks.
#[derive(Clone)]
pub(crate) struct Rows<T> {
    width: usize,
    /// log2 of the rows per chunk.
    shift: u32,
    len: usize,
    /// Every chunk but the last holds exactly `1 << shift` rows.
    chunks: Vec<Arc<Vec<T>>>,
    /// Each chunk's first element, so that reading a row is one load from this table (reads
    /// at random places, the exact rerank's, would otherwise wait on the chunk's header too).
    /// Kept equal to `chunks[i].as_ptr()` by every method that changes `chunks`.
    starts: Vec<Start<T>>,
}

/// A chunk's data pointer. The chunk it points into is owned by the same [`Rows`] (an `Arc`
/// that only `&mut Rows` can change), so it lives as long as the table and is never written
/// while a `&Rows` can read it.
struct Start<T>(*const T);

impl<T> Clone for Start<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Start<T> {}

// SAFETY: a `Start` is a shared reference into a chunk of its `Rows` in all but name; the
// `Arc<Vec<T>>` it stands for is `Send + Sync` exactly when `T` is.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync> Send for Start<T> {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl<T: Send + Sync> Sync for Start<T> {}

impl<T: Copy> Rows<T> {
    /// No rows, each of `width` elements (at least one), in chunks of about [`CHUNK_BYTES`].
    pub(crate) fn new(width: usize) -> Self {
        let width = width.max(1);
        let row_bytes = width * core::mem::size_of::<T>().max(1);
        let rows = (CHUNK_BYTES / row_bytes).max(1);
        Rows {
            width,
            shift: usize::BITS - 1 - rows.leading_zeros(),
            len: 0,
            chunks: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Row `i`. Panics if `i >= len`.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn row(&self, i: usize) -> &[T] {
        assert!(i < self.len, "row {i} of {}", self.len);
        let start = self.starts[i >> self.shift].0;
        let at = (i & ((1 << self.shift) - 1)) * self.width;
        // SAFETY: `start` is the data of chunk `i >> shift`, which `self` owns and which holds
        // every row below `len` in it, `width` elements each (`push`); nothing writes it while
        // `&self` is borrowed.
        unsafe { core::slice::from_raw_parts(start.add(at), self.width) }
    }

    /// Appends a row of exactly `width` elements. Copies the last chunk first if another
    /// state shares it.
    pub(crate) fn push(&mut self, row: &[T]) {
        assert_eq!(row.len(), self.width, "row width");
        self.append(|data| data.extend_from_slice(row));
    }

    /// Appends one row that `fill` writes at the end of the last chunk.
    fn append(&mut self, fill: impl FnOnce(&mut Vec<T>)) {
        if self.len & ((1 << self.shift) - 1) == 0 {
            // A new chunk, grown by doubling as rows arrive: a full chunk's capacity is
            // exactly its rows, and a small collection holds no more than it needs.
            self.chunks.push(Arc::new(Vec::new()));
        }
        let full = self.width << self.shift;
        let last = self.chunks.last_mut().expect("a chunk was pushed");
        let data = Arc::make_mut(last);
        if data.capacity() - data.len() < self.width {
            // Doubling, but never past a full chunk: a chunk copied while shared has no spare
            // room, and plain doubling from there would overshoot.
            let want = (data.capacity() * 2).clamp(data.len() + self.width, full);
            data.reserve_exact(want - data.len());
        }
        fill(data);
        debug_assert_eq!(data.len() % self.width, 0);
        let start = Start(data.as_ptr());
        match self.starts.get_mut(self.chunks.len() - 1) {
            Some(s) => *s = start,
            None => self.starts.push(start),
        }
        self.len += 1;
    }

    /// Rows `from..`, in order.
    pub(crate) fn rows_from(&self, from: usize) -> impl Iterator<Item = &[T]> + '_ {
        (from..self.len).map(move |i| self.row(i))
    }

    /// Each chunk's address and the bytes of rows it holds: chunks shared between states have
    /// the same address.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.chunks.iter().map(|c| {
            let bytes = (c.len() * core::mem::size_of::<T>()) as u64;
            (Arc::as_ptr(c) as *const u8 as usize, bytes)
        })
    }

    /// Bytes of the chunks `self` and `other` share.
    #[cfg(test)]
    pub(crate) fn shared_bytes(&self, other: &Rows<T>) -> u64 {
        self.chunks
            .iter()
            .zip(&other.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .map(|(a, _)| (a.len() * core::mem::size_of::<T>()) as u64)
            .sum()
    }

    /// Bytes the rows take (allocator overhead aside).
    pub(crate) fn bytes(&self) -> u64 {
        (self.len * self.width * core::mem::size_of::<T>()) as u64
    }
}

impl<T: Copy + PartialEq> Rows<T> {
    /// Makes `self` use `other`'s chunks, which must hold the same rows (the caller knows the
    /// two are the same state), so that they share that memory from now on. Returns false,
    /// changing nothing, unless both hold the same number of rows of the same width. The
    /// contents are not compared (that would read every chunk the last group wrote twice more)
    /// except in debug builds, where a difference panics.
    pub(crate) fn share_from(&mut self, other: &Rows<T>) -> bool {
        if self.width != other.width || self.shift != other.shift || self.len != other.len {
            return false;
        }
        let pairs = self.chunks.iter_mut().zip(&other.chunks);
        for ((mine, theirs), start) in pairs.zip(&mut self.starts) {
            if !Arc::ptr_eq(mine, theirs) {
                debug_assert!(**mine == **theirs, "rows shared from a different state");
                *mine = Arc::clone(theirs);
                *start = Start(mine.as_ptr());
            }
        }
        true
    }
}

/// Equal when they hold the same rows, however the chunks are shared.
impl<T: Copy + PartialEq> PartialEq for Rows<T> {
    fn eq(&self, other: &Self) -> bool {
        self.width == other.width
            && self.len == other.len
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b) || **a == **b)
    }
}

impl<T: Copy + Eq> Eq for Rows<T> {}

impl<T> fmt::Debug for Rows<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rows")
            .field("width", &self.width)
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(width: usize, n: usize) -> Rows<i32> {
        let mut r = Rows::new(width);
        for i in 0..n {
            let row: Vec<i32> = (0..width).map(|j| (i * 1000 + j) as i32).collect();
            r.push(&row);
        }
        r
    }

    /// Rows read back as pushed, across chunk boundaries, and chunks are about
    /// [`CHUNK_BYTES`].
    #[test]
    fn rows_read_back_across_chunks() {
        let width = 100;
        let r = filled(width, 2000);
        assert_eq!(r.len, 2000);
        let per_chunk = 1usize << r.shift;
        assert!(per_chunk * width * 4 <= CHUNK_BYTES && 2 * per_chunk * width * 4 > CHUNK_BYTES);
        assert_eq!(r.chunks.len(), 2000usize.div_ceil(per_chunk));
        for i in 0..2000 {
            assert_eq!(r.row(i)[0], (i * 1000) as i32);
            assert_eq!(r.row(i)[width - 1], (i * 1000 + width - 1) as i32);
        }
        let from: Vec<i32> = r.rows_from(1998).map(|row| row[1]).collect();
        assert_eq!(from, [1_998_001, 1_999_001]);
        // Wider than a chunk: one row per chunk.
        let wide = filled(CHUNK_BYTES, 3);
        assert_eq!((wide.shift, wide.chunks.len()), (0, 3));
        assert_eq!(wide.row(2)[7], 2007);
    }

    #[test]
    #[should_panic(expected = "row 5 of 5")]
    fn reading_past_the_end_panics() {
        filled(3, 5).row(5);
    }

    /// A clone shares every chunk; appending to one copies only its last chunk, and the other
    /// keeps its rows.
    #[test]
    fn writes_copy_only_the_chunk_they_touch() {
        let a = filled(64, 1500);
        let per_chunk = 1usize << a.shift;
        assert!(1500 % per_chunk != 0, "the last chunk is partly filled");
        let mut b = a.clone();
        assert_eq!(b.shared_bytes(&a), a.bytes());
        b.push(&[7; 64]);
        assert_eq!(a.len, 1500);
        assert_eq!(b.len, 1501);
        assert_eq!(b.row(1500), &[7; 64]);
        let last = (1500 % per_chunk * 64 * 4) as u64;
        assert_eq!(b.shared_bytes(&a), a.bytes() - last);
        assert!(a != b);
    }

    /// Sharing rows from a state that is not the same is a bug the debug build catches.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "rows shared from a different state")]
    fn sharing_different_rows_panics_in_debug_builds() {
        let mut c = filled(10, 3000);
        c.push(&[1; 10]);
        let mut d = filled(10, 3000);
        d.push(&[2; 10]);
        c.share_from(&d);
    }

    /// Two equal rows built apart come to share every chunk; rows of another length are
    /// refused.
    #[test]
    fn share_from_shares_equal_rows() {
        let mut a = filled(10, 3000);
        let b = filled(10, 3000);
        assert_eq!(a.shared_bytes(&b), 0);
        assert_eq!(a, b);
        assert!(a.share_from(&b));
        assert_eq!(a.shared_bytes(&b), b.bytes());
        assert_eq!(a, b);

        let mut shorter = filled(10, 2999);
        assert!(!shorter.share_from(&b));
        assert_eq!(shorter.shared_bytes(&b), 0);
    }
}
