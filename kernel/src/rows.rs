//! Fixed-width rows in shared chunks: how a collection holds its full-precision vectors.
//!
//! Rows live in chunks of a power-of-two number of rows (about [`CHUNK_BYTES`] each), every
//! chunk behind its own reference count. Cloning [`Rows`] copies only the list of chunks, so a
//! clone shares every byte with the original; a write copies the one chunk it touches, and only
//! while that chunk is shared (copy on write). Vectors are only ever appended, so two states
//! that share them differ at most in the last chunk; the graph's neighbour lists are also
//! rewritten in place, in smaller chunks, so that a write copies little.
//!
//! This is what lets the node's two copies of the state (see `node/src/engine/copies.rs`) hold
//! one copy of the vectors and of the graph between them: [`Rows::share_from`] makes one state
//! use the other's chunks once both hold the same rows. Only the memory is shared; the values,
//! the encoding and every hash are those of plain contiguous rows.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

/// Target size of a chunk in bytes: large enough that the list of chunks stays small (one
/// pointer per 128 KiB), small enough that copying the last chunk on a write is cheap.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Target size of a chunk of rows that are rewritten in place at random (neighbour lists,
/// tags, live flags): while another state shares a chunk, such a write copies all of it.
pub const SMALL_CHUNK_BYTES: usize = 8 * 1024;

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
        Self::with_chunk_bytes(width, CHUNK_BYTES)
    }

    /// No rows, each of `width` elements, in chunks of at most `chunk_bytes` (and at least one
    /// row). Rows written in place at random want small chunks: a write copies its whole chunk
    /// while another state shares it.
    pub(crate) fn with_chunk_bytes(width: usize, chunk_bytes: usize) -> Self {
        let width = width.max(1);
        let row_bytes = width * core::mem::size_of::<T>().max(1);
        let rows = (chunk_bytes / row_bytes).max(1);
        Rows {
            width,
            shift: usize::BITS - 1 - rows.leading_zeros(),
            len: 0,
            chunks: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Rows of `width` elements taken in order from `flat` (whose length must be a multiple).
    #[cfg(test)]
    pub(crate) fn from_flat(width: usize, flat: &[T]) -> Self {
        let mut rows = Rows::new(width);
        for row in flat.chunks_exact(rows.width) {
            rows.push(row);
        }
        assert_eq!(rows.len * rows.width, flat.len(), "whole rows");
        rows
    }

    /// Number of rows.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
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

    /// Appends a row of `width` copies of `value`.
    pub(crate) fn push_filled(&mut self, value: T) {
        let width = self.width;
        self.append(|data| data.resize(data.len() + width, value));
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

    /// Row `i`'s first element: the value of a one-wide row.
    #[inline]
    pub(crate) fn value(&self, i: usize) -> T {
        self.row(i)[0]
    }

    /// Row `i` to write in place; copies its chunk first if another state shares it. Panics
    /// if `i >= len`.
    #[inline]
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.len, "row {i} of {}", self.len);
        let c = i >> self.shift;
        let data = Arc::make_mut(&mut self.chunks[c]);
        self.starts[c] = Start(data.as_ptr());
        let at = (i & ((1 << self.shift) - 1)) * self.width;
        &mut data[at..at + self.width]
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
    /// Makes `self` use `other`'s chunks wherever the two hold the same rows, so that they
    /// share that memory from now on. Returns false, changing nothing, unless both hold the
    /// same number of rows of the same width; chunks whose contents differ are left alone.
    pub(crate) fn share_from(&mut self, other: &Rows<T>) -> bool {
        if self.width != other.width || self.shift != other.shift || self.len != other.len {
            return false;
        }
        let pairs = self.chunks.iter_mut().zip(&other.chunks);
        for ((mine, theirs), start) in pairs.zip(&mut self.starts) {
            if !Arc::ptr_eq(mine, theirs) && **mine == **theirs {
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

    /// Writing a row in place copies its chunk while shared, once, and leaves the other
    /// state's rows as they were; small chunks keep that copy small.
    #[test]
    fn writing_in_place_copies_the_shared_chunk_once() {
        let mut a = Rows::with_chunk_bytes(4, 64);
        for i in 0..40 {
            a.push(&[i; 4]);
        }
        assert_eq!(a.shift, 2, "four rows of 16 bytes a chunk");
        let b = a.clone();
        a.row_mut(17)[1] = -1;
        a.row_mut(18)[0] = -2;
        assert_eq!(a.row(17), &[17, -1, 17, 17]);
        assert_eq!(a.row(18), &[-2, 18, 18, 18]);
        assert_eq!(b.row(17), &[17; 4]);
        assert_eq!(b.row(18), &[18; 4]);
        assert_eq!(
            a.shared_bytes(&b),
            b.bytes() - 64,
            "only chunk 4 was copied"
        );
        let mut c = b.clone();
        c.row_mut(17)[1] = -1;
        c.row_mut(18)[0] = -2;
        assert!(c.share_from(&a));
        assert_eq!(c.shared_bytes(&a), a.bytes());
        assert_eq!(c.shared_bytes(&b), b.bytes() - 64);
        // A copied last chunk grows to a full chunk and no further.
        let mut d = Rows::with_chunk_bytes(4, 64);
        for i in 0..3 {
            d.push(&[i; 4]);
        }
        let e = d.clone();
        d.push(&[3; 4]);
        assert_eq!(d.chunks[0].capacity(), 16);
        assert_eq!(e.len(), 3);
    }

    /// Two equal rows built apart come to share every chunk; unequal ones do not.
    #[test]
    fn share_from_shares_equal_rows_only() {
        let mut a = filled(10, 3000);
        let b = filled(10, 3000);
        assert_eq!(a.shared_bytes(&b), 0);
        assert_eq!(a, b);
        assert!(a.share_from(&b));
        assert_eq!(a.shared_bytes(&b), b.bytes());
        assert_eq!(a, b);

        let mut c = filled(10, 3000);
        c.push(&[1; 10]);
        let mut d = filled(10, 3000);
        d.push(&[2; 10]);
        assert!(c.share_from(&d));
        let last = (c.chunks.last().unwrap().len() * 4) as u64;
        assert_eq!(
            c.shared_bytes(&d),
            d.bytes() - last,
            "the differing chunk stays apart"
        );
        assert_eq!(c.row(3000), &[1; 10]);

        let mut shorter = filled(10, 2999);
        assert!(!shorter.share_from(&b));
        assert_eq!(shorter.shared_bytes(&b), 0);
    }
}
