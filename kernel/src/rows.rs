//! Fixed-width rows in shared chunks: how a collection holds its full-precision vectors, its
//! compact walk copy, its graph's layer-0 neighbour lists and its per-slot values (tags, live
//! flags, graph levels and upper-layer offsets, rows of one value).
//!
//! Rows live in chunks of a power-of-two number of rows ([`rows_per_chunk`]: a whole number of
//! 2 MiB huge pages for the usual row sizes), every chunk behind its own reference count and
//! starting on a cache line, so that rows whose size is a multiple of 64 bytes (those of the
//! usual dimensions) never straddle two lines. Cloning
//! [`Rows`] copies only the list of chunks, so a clone shares every byte with the original; a
//! write copies the one chunk it touches, and only while that chunk is shared (copy on write).
//! Vectors are only ever appended, so two states that share them differ at most in the last
//! chunk; the graph's neighbour lists, rewritten all over, are rows too but written over a
//! shared chunk apart from it (`crate::lists`).
//!
//! This is what lets the node's two copies of the state (see `node/src/engine/copies.rs`) hold
//! one copy of the vectors, of the walk copy and of the graph's lists between them:
//! [`Rows::share_from`] makes one state use the other's chunks once both hold the same rows
//! ([`Rows::adopt_chunk`] one chunk). Only the memory is shared; the
//! values, the encoding and every hash are those of plain contiguous rows.
//!
//! Chunks live on the heap unless the rows are placed in a [`ChunkStore`] ([`Rows::place`]):
//! memory the program provides, such as a memory-mapped file, which is how a node keeps its
//! full-precision vectors out of its resident memory (`--vectors-on-disk`). Where a chunk
//! lives changes nothing else.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

/// A huge page: chunks are whole multiples of it where the row size allows, so that a program
/// whose allocator places large blocks on huge pages (the node's does) reads them with few TLB
/// entries.
pub const HUGE_PAGE: usize = 2 << 20;

/// The chunk size of [`Rows::small`]: per-slot values.
pub const SMALL_CHUNK: usize = 64 << 10;

/// Rows per chunk for rows of `row_bytes` bytes: a power of two, so that one shift finds a
/// row's chunk. For a row of `2^a * b` bytes (`b` odd) up to 7, the fewest rows that fill whole
/// huge pages (a chunk of `b` times 2 MiB); for other sizes as many as fit in 4 MiB. Large
/// enough that the list of chunks stays small, small enough that copying the last chunk on a
/// write is cheap (a few milliseconds at most).
pub fn rows_per_chunk(row_bytes: usize) -> usize {
    let row_bytes = row_bytes.max(1);
    let a = row_bytes.trailing_zeros();
    let huge = HUGE_PAGE.trailing_zeros();
    if row_bytes >> a <= 7 {
        1 << huge.saturating_sub(a)
    } else {
        let fit = ((2 * HUGE_PAGE) / row_bytes).max(1);
        1 << (usize::BITS - 1 - fit.leading_zeros())
    }
}

/// What rows may hold: plain integers, for which every byte pattern (zero included) is a value,
/// whose size divides a cache line. Sealed: implemented for `i8`, `u8`, `i16`, `i32`, `u32` and
/// `u64` only.
pub trait Plain: Copy + PartialEq + Send + Sync + 'static + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i8 {}
    impl Sealed for u8 {}
    impl Sealed for i16 {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

impl Plain for i8 {}
impl Plain for u8 {}
impl Plain for i16 {}
impl Plain for i32 {}
impl Plain for u32 {}
impl Plain for u64 {}

/// One cache line of storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u8; 64]);

/// Memory for chunks outside the heap, provided by the program (the kernel does no I/O): the
/// node's implementation maps files. A store may decline ([`ChunkStore::allocate`] returns
/// `None`), and the chunk then lives on the heap as it would without one.
pub trait ChunkStore: Send + Sync {
    /// `bytes` bytes (a multiple of 64) of zeroed memory starting on a 64-byte boundary,
    /// readable and writable by this process alone until the region is dropped; `None` to
    /// decline.
    fn allocate(&self, bytes: usize) -> Option<Region>;
}

/// A block of memory from a [`ChunkStore`]; dropping it gives the memory back.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// Dropped with the region: gives the memory back (for a mapping, unmaps it).
    _release: Box<dyn Any + Send + Sync>,
}

impl Region {
    /// A region of `len` bytes at `ptr`, given back by dropping `release`.
    ///
    /// # Safety
    ///
    /// `ptr` must start on a 64-byte boundary and point to `len` bytes of zeroed memory,
    /// valid for reads and writes and used by nothing else until `release` is dropped.
    #[allow(unsafe_code)]
    pub unsafe fn new(ptr: NonNull<u8>, len: usize, release: Box<dyn Any + Send + Sync>) -> Self {
        debug_assert_eq!(
            ptr.as_ptr() as usize % 64,
            0,
            "a region starts on a cache line"
        );
        Region {
            ptr,
            len,
            _release: release,
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// SAFETY: a region is memory owned by its one holder (`Region::new`'s contract), like a
// `Box<[u8]>`; the release guard is `Send + Sync` itself.
#[allow(unsafe_code)]
unsafe impl Send for Region {}
// SAFETY: as for `Send`: shared access only reads.
#[allow(unsafe_code)]
unsafe impl Sync for Region {}

/// A chunk's memory: growing cache lines on the heap, or a region of a store taken whole.
enum Buf {
    Heap(Vec<Line>),
    Stored {
        region: Region,
        /// Lines in use from the first (the rest are zeros no row reached).
        lines: usize,
        /// Where copies of this chunk are taken from.
        store: Arc<dyn ChunkStore>,
    },
}

impl Buf {
    /// Lines in use.
    fn lines(&self) -> usize {
        match self {
            Buf::Heap(v) => v.len(),
            Buf::Stored { lines, .. } => *lines,
        }
    }

    fn as_ptr(&self) -> *const Line {
        match self {
            Buf::Heap(v) => v.as_ptr(),
            Buf::Stored { region, .. } => region.ptr.as_ptr() as *const Line,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut Line {
        match self {
            Buf::Heap(v) => v.as_mut_ptr(),
            Buf::Stored { region, .. } => region.ptr.as_ptr() as *mut Line,
        }
    }

    /// A region of `lines` lines from `store`, if it gives one.
    fn stored(store: &Arc<dyn ChunkStore>, lines: usize) -> Option<Buf> {
        let region = store.allocate(lines * 64)?;
        assert!(
            region.len >= lines * 64 && (region.ptr.as_ptr() as usize).is_multiple_of(64),
            "a chunk store gave a region smaller than asked or off a cache line"
        );
        Some(Buf::Stored {
            region,
            lines: 0,
            store: Arc::clone(store),
        })
    }

    /// Makes `lines` lines usable (zeros where no row was yet), room for `full` at most being
    /// what the chunk will ever need.
    fn grow(&mut self, lines: usize, full: usize) {
        if let Buf::Stored { region, store, .. } = self {
            if lines * 64 > region.len {
                // Taken whole, a region never needs this; a store's smaller one moves.
                let store = Arc::clone(store);
                let mut bigger = Buf::stored(&store, full.max(lines))
                    .unwrap_or_else(|| Buf::Heap(Vec::with_capacity(full.max(lines))));
                bigger.copy_from(self.as_ptr(), self.lines());
                *self = bigger;
            }
        }
        match self {
            Buf::Heap(v) => {
                if lines > v.capacity() {
                    // Doubling, but never past a full chunk: a chunk copied while shared has no
                    // spare room, and plain doubling from there would overshoot.
                    let want = (v.capacity() * 2).clamp(lines, full);
                    v.reserve_exact(want - v.len());
                }
                if lines > v.len() {
                    v.resize(lines, Line([0; 64]));
                }
            }
            Buf::Stored { lines: used, .. } => *used = (*used).max(lines),
        }
    }

    /// Appends `lines` lines from `src` to an empty buffer.
    #[allow(unsafe_code)]
    fn copy_from(&mut self, src: *const Line, lines: usize) {
        debug_assert_eq!(self.lines(), 0);
        match self {
            Buf::Heap(v) => {
                // SAFETY: `src` points to `lines` initialised lines (the caller's chunk).
                v.extend_from_slice(unsafe { core::slice::from_raw_parts(src, lines) });
            }
            Buf::Stored {
                region,
                lines: used,
                ..
            } => {
                assert!(lines * 64 <= region.len);
                // SAFETY: both hold `lines` lines; they are different memory.
                unsafe {
                    core::ptr::copy_nonoverlapping(src, region.ptr.as_ptr() as *mut Line, lines)
                };
                *used = lines;
            }
        }
    }
}

/// A copy has no spare room on the heap: a chunk copied while shared holds exactly its
/// lines. A stored chunk is copied into a region of the same size from the same store.
impl Clone for Buf {
    fn clone(&self) -> Self {
        let mut copy = match self {
            Buf::Heap(v) => Buf::Heap(Vec::with_capacity(v.len())),
            Buf::Stored { region, store, .. } => Buf::stored(store, region.len / 64)
                .unwrap_or_else(|| Buf::Heap(Vec::with_capacity(self.lines()))),
        };
        copy.copy_from(self.as_ptr(), self.lines());
        copy
    }
}

/// A chunk: whole cache lines holding `len` elements of `T` from the first.
struct Chunk<T> {
    buf: Buf,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Plain> Chunk<T> {
    const PER_LINE: usize = 64 / core::mem::size_of::<T>();

    /// An empty chunk: in `store` (taken whole, `full` lines) when one is given and it gives
    /// a region, else on the heap.
    fn new(store: Option<&Arc<dyn ChunkStore>>, full: usize) -> Self {
        Chunk {
            buf: store
                .and_then(|s| Buf::stored(s, full))
                .unwrap_or(Buf::Heap(Vec::new())),
            len: 0,
            _t: PhantomData,
        }
    }

    #[allow(unsafe_code)]
    fn as_slice(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` elements of `T` (`Rows::append`), the storage
        // is aligned for `T` (64 bytes) and every byte pattern is a `T` (`Plain`).
        unsafe { core::slice::from_raw_parts(self.buf.as_ptr() as *const T, self.len) }
    }

    fn as_ptr(&self) -> *const T {
        self.buf.as_ptr() as *const T
    }

    /// Whether it lives in a store.
    fn stored(&self) -> bool {
        matches!(self.buf, Buf::Stored { .. })
    }
}

impl<T> Clone for Chunk<T> {
    fn clone(&self) -> Self {
        Chunk {
            buf: self.buf.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

/// Rows of `width` elements of `T`, appended one at a time, in shared chunks.
#[derive(Clone)]
pub(crate) struct Rows<T> {
    width: usize,
    /// log2 of the rows per chunk.
    shift: u32,
    len: usize,
    /// Every chunk but the last holds exactly `1 << shift` rows.
    chunks: Vec<Arc<Chunk<T>>>,
    /// Each chunk's first element, so that reading a row is one load from this table (reads
    /// at random places, the walks' and the exact rerank's, would otherwise wait on the chunk's
    /// header too). Kept equal to `chunks[i].as_ptr()` by every method that changes `chunks`.
    starts: Vec<Start<T>>,
    /// Where new chunks are taken from (the heap when `None`).
    store: Option<Arc<dyn ChunkStore>>,
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

impl<T: Plain> Rows<T> {
    /// No rows, each of `width` elements (at least one), in chunks of [`rows_per_chunk`].
    pub(crate) fn new(width: usize) -> Self {
        let width = width.max(1);
        let rows = rows_per_chunk(width * core::mem::size_of::<T>());
        Rows::with_chunk_rows(width, rows)
    }

    /// No rows, each of `width` elements, in chunks of [`SMALL_CHUNK`] bytes (or one row, if
    /// larger): for per-slot values, which every group appends to. A group copies the last
    /// chunk of each shared `Rows` it appends to, so 2 MiB chunks would cost every group a
    /// copy of up to 2 MiB per value (a single write at 1M x 128 took 6.8 ms instead of
    /// 2.7 ms with four such values); these are read one value at a time, where huge pages
    /// matter little.
    pub(crate) fn small(width: usize) -> Self {
        let width = width.max(1);
        let rows = (SMALL_CHUNK / (width * core::mem::size_of::<T>())).max(1);
        Rows::with_chunk_rows(width, 1 << (usize::BITS - 1 - rows.leading_zeros()))
    }

    /// No rows, each of `width` (at least one) elements, `rows` (a power of two) to a chunk.
    fn with_chunk_rows(width: usize, rows: usize) -> Self {
        debug_assert!(width >= 1 && rows.is_power_of_two());
        Rows {
            width,
            shift: rows.trailing_zeros(),
            len: 0,
            chunks: Vec::new(),
            starts: Vec::new(),
            store: None,
        }
    }

    /// Keeps the rows in `store` from now on (on the heap with `None`): the rows held so far
    /// are moved there, and new chunks are taken from it. Nothing changes when the rows are
    /// already placed there. Values, encoding and hashes are the same wherever rows live.
    pub(crate) fn place(&mut self, store: Option<&Arc<dyn ChunkStore>>) {
        let same = match (&self.store, store) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if same {
            return;
        }
        let mut placed = Rows::with_chunk_rows(self.width, 1 << self.shift);
        placed.store = store.cloned();
        for row in self.rows_from(0) {
            placed.push(row);
        }
        *self = placed;
    }

    /// Bytes of rows held in chunks of a store.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| c.stored())
            .map(|c| (c.len * core::mem::size_of::<T>()) as u64)
            .sum()
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

    /// Row `i`, to write in place. Copies its chunk first if another state shares it (copy
    /// on write), so a write never shows in a state that shares these rows. Panics if
    /// `i >= len`.
    #[allow(unsafe_code)]
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.len, "row {i} of {}", self.len);
        let c = i >> self.shift;
        let chunk = Arc::make_mut(&mut self.chunks[c]);
        self.starts[c] = Start(chunk.as_ptr());
        let at = (i & ((1 << self.shift) - 1)) * self.width;
        debug_assert!(at + self.width <= chunk.len);
        // SAFETY: the chunk is now this state's alone and holds every row of it below `len`,
        // `width` elements each, aligned for `T` (every byte pattern is a `T`); the row is
        // borrowed through `&mut self`, so nothing reads it meanwhile.
        unsafe {
            core::slice::from_raw_parts_mut((chunk.buf.as_mut_ptr() as *mut T).add(at), self.width)
        }
    }

    /// The one element of row `i`, for rows of width 1 (per-slot values: tags, live flags,
    /// levels). Panics if `i >= len`.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> T {
        debug_assert_eq!(self.width, 1);
        self.row(i)[0]
    }

    /// Sets the one element of row `i` (width 1), copying its chunk first if another state
    /// shares it. Panics if `i >= len`.
    pub(crate) fn set(&mut self, i: usize, value: T) {
        debug_assert_eq!(self.width, 1);
        self.row_mut(i)[0] = value;
    }

    /// Every row's one element, in order (width 1).
    pub(crate) fn values(&self) -> impl Iterator<Item = T> + '_ {
        debug_assert_eq!(self.width, 1);
        self.rows_from(0).map(|r| r[0])
    }

    /// Rows held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Elements per row.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// The store new chunks are taken from (`None`: the heap).
    pub(crate) fn store(&self) -> Option<&Arc<dyn ChunkStore>> {
        self.store.as_ref()
    }

    /// Appends a row of exactly `width` elements. Copies the last chunk first if another
    /// state shares it.
    pub(crate) fn push(&mut self, row: &[T]) {
        assert_eq!(row.len(), self.width, "row width");
        self.push_with(|r| r.copy_from_slice(row));
    }

    /// Appends one row that `fill` writes (it is handed zeros). Copies the last chunk first if
    /// another state shares it.
    #[allow(unsafe_code)]
    pub(crate) fn push_with(&mut self, fill: impl FnOnce(&mut [T])) {
        let per_line = Chunk::<T>::PER_LINE;
        let full = (self.width << self.shift).div_ceil(per_line);
        if self.len & ((1 << self.shift) - 1) == 0 {
            // On the heap the first chunk grows by doubling as rows arrive, so that a small
            // collection holds no more than it needs; later ones, and every chunk in a store,
            // are taken whole at once (pages of it that no row reached yet take no memory).
            let mut chunk = Chunk::new(self.store.as_ref(), full);
            if let (Buf::Heap(lines), true) = (&mut chunk.buf, self.len > 0) {
                lines.reserve_exact(full);
            }
            self.chunks.push(Arc::new(chunk));
        }
        let last = self.chunks.last_mut().expect("a chunk was pushed");
        let chunk = Arc::make_mut(last);
        chunk
            .buf
            .grow((chunk.len + self.width).div_ceil(per_line), full);
        // SAFETY: the lines hold `chunk.len + width` elements (just ensured), aligned for `T`,
        // and every byte pattern is a `T` (`Plain`); the row is borrowed only during `fill`.
        let row = unsafe {
            core::slice::from_raw_parts_mut(
                (chunk.buf.as_mut_ptr() as *mut T).add(chunk.len),
                self.width,
            )
        };
        fill(row);
        chunk.len += self.width;
        let start = Start(chunk.as_ptr());
        match self.starts.get_mut(self.chunks.len() - 1) {
            Some(s) => *s = start,
            None => self.starts.push(start),
        }
        self.len += 1;
    }

    /// Rows per chunk: row `i` is in chunk `i / chunk_rows()`.
    pub(crate) fn chunk_rows(&self) -> usize {
        1 << self.shift
    }

    /// Chunks held (the last may be partly filled).
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Whether chunk `c` is this state's alone, so that a write to it copies nothing.
    pub(crate) fn chunk_is_own(&mut self, c: usize) -> bool {
        Arc::get_mut(&mut self.chunks[c]).is_some()
    }

    /// Whether chunk `c` is the same memory in `self` and `other`.
    pub(crate) fn chunk_shared_with(&self, c: usize, other: &Rows<T>) -> bool {
        matches!((self.chunks.get(c), other.chunks.get(c)), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }

    /// Makes chunk `c` of `self` use `other`'s chunk `c`, which must hold the rows `self`'s
    /// owner means it to (the caller knows; unlike [`Rows::share_from`] this is not checked,
    /// since the rows may be stale in `self` and overridden elsewhere). Both must have the same
    /// shape.
    pub(crate) fn adopt_chunk(&mut self, c: usize, other: &Rows<T>) {
        debug_assert!(
            self.width == other.width && self.shift == other.shift && self.len == other.len
        );
        self.chunks[c] = Arc::clone(&other.chunks[c]);
        self.starts[c] = Start(self.chunks[c].as_ptr());
    }

    /// Rows `from..`, in order.
    pub(crate) fn rows_from(&self, from: usize) -> impl Iterator<Item = &[T]> + '_ {
        (from..self.len).map(move |i| self.row(i))
    }

    /// Each chunk's address and the bytes of rows it holds: chunks shared between states have
    /// the same address.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.chunks.iter().map(|c| {
            let bytes = (c.len * core::mem::size_of::<T>()) as u64;
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
            .map(|(a, _)| (a.len * core::mem::size_of::<T>()) as u64)
            .sum()
    }

    /// Bytes the rows take (allocator overhead aside).
    pub(crate) fn bytes(&self) -> u64 {
        (self.len * self.width * core::mem::size_of::<T>()) as u64
    }

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
                debug_assert!(
                    mine.as_slice() == theirs.as_slice(),
                    "rows shared from a different state"
                );
                *mine = Arc::clone(theirs);
                *start = Start(mine.as_ptr());
            }
        }
        true
    }
}

/// Equal when they hold the same rows, however the chunks are shared.
impl<T: Plain> PartialEq for Rows<T> {
    fn eq(&self, other: &Self) -> bool {
        self.width == other.width
            && self.len == other.len
            && self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a.as_slice() == b.as_slice())
    }
}

impl<T: Plain + Eq> Eq for Rows<T> {}

impl<T> fmt::Debug for Rows<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rows")
            .field("width", &self.width)
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .field("stored", &self.store.is_some())
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

    /// Chunks are whole huge pages for the usual row sizes, and about 4 MiB for others.
    #[test]
    fn chunks_fill_whole_huge_pages() {
        let mib = 1 << 20;
        for (row_bytes, rows, bytes) in [
            (128, 16384, 2 * mib),   // 128 components, 8-bit
            (256, 8192, 2 * mib),    // 128 components, 16-bit
            (512, 4096, 2 * mib),    // 128 components, full precision
            (768, 8192, 6 * mib),    // 768 components, 8-bit
            (3072, 2048, 6 * mib),   // 768 components, full precision
            (6144, 1024, 6 * mib),   // 1536 components, full precision
            (400, 8192, 3_276_800),  // 100 components, full precision
            (40, 262_144, 10 * mib), // 10 components, full precision
            (8 * mib, 1, 8 * mib),   // a row larger than a huge page
            (3 * mib + 4, 1, 3 * mib + 4),
        ] {
            assert_eq!(rows_per_chunk(row_bytes), rows, "{row_bytes}");
            assert_eq!(rows * row_bytes, bytes, "{row_bytes}");
        }
    }

    /// Rows read back as pushed, across chunk boundaries.
    #[test]
    fn rows_read_back_across_chunks() {
        let width = 100;
        let n = 20_000;
        let r = filled(width, n);
        assert_eq!(r.len, n);
        let per_chunk = 1usize << r.shift;
        assert_eq!(per_chunk, 8192);
        assert_eq!(r.chunks.len(), 3);
        for i in 0..n {
            assert_eq!(r.row(i)[0], (i * 1000) as i32);
            assert_eq!(r.row(i)[width - 1], (i * 1000 + width - 1) as i32);
        }
        let from: Vec<i32> = r.rows_from(n - 2).map(|row| row[1]).collect();
        assert_eq!(from, [19_998_001, 19_999_001]);
        // Wider than a huge page: one row per chunk.
        let wide = filled(HUGE_PAGE, 3);
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
        let per_chunk = rows_per_chunk(256);
        let n = per_chunk + 1500;
        let a = filled(64, n);
        let mut b = a.clone();
        assert_eq!(b.shared_bytes(&a), a.bytes());
        b.push(&[7; 64]);
        assert_eq!(a.len, n);
        assert_eq!(b.len, n + 1);
        assert_eq!(b.row(n), &[7; 64]);
        // Rows of a multiple of 64 bytes start a cache line, in a copied chunk too.
        for i in [0, 1, per_chunk, n - 1, n] {
            assert_eq!(b.row(i).as_ptr() as usize % 64, 0, "row {i}");
        }
        assert_eq!(b.shared_bytes(&a), (per_chunk * 256) as u64);
        assert!(a != b);
    }

    /// Rows of one value (per-slot tags, flags): values read back across chunks, a write
    /// copies only the chunk it lands in, and sharing makes equal values one memory again.
    #[test]
    fn single_values_read_write_and_share_by_chunk() {
        let per_chunk = SMALL_CHUNK / 8;
        let mut a: Rows<u64> = Rows::small(1);
        for i in 0..2 * per_chunk + 10 {
            a.push(&[i as u64 * 3]);
        }
        let mut b = a.clone();
        b.set(per_chunk + 1, 0);
        assert_eq!(b.get(per_chunk + 1), 0);
        assert_eq!(a.get(per_chunk + 1), (per_chunk as u64 + 1) * 3);
        assert_eq!(b.shared_bytes(&a), a.bytes() - SMALL_CHUNK as u64);
        assert_eq!(b.chunks.len(), 3);
        assert!(b
            .values()
            .enumerate()
            .all(|(i, v)| v == if i == per_chunk + 1 { 0 } else { i as u64 * 3 }));
        let mut c = a.clone();
        c.set(per_chunk + 1, 0);
        assert!(c.share_from(&b));
        assert_eq!(c.shared_bytes(&b), b.bytes());

        let mut flags: Rows<u8> = Rows::small(1);
        for i in 0..1000u32 {
            flags.push(&[(i % 2) as u8]);
        }
        assert_eq!(flags.values().filter(|&f| f == 1).count(), 500);
        assert_eq!(flags.bytes(), 1000);
    }

    /// Narrow rows: a chunk holds whole lines, and a row that ends mid-line leaves the rest
    /// of the line for the next.
    #[test]
    fn narrow_rows_pack_their_lines() {
        let mut r: Rows<i8> = Rows::new(40);
        for i in 0..100i8 {
            r.push_with(|row| {
                assert!(row.iter().all(|&x| x == 0), "a new row is zeros");
                row[0] = i;
                row[39] = -i;
            });
        }
        assert_eq!(r.len(), 100);
        assert_eq!(r.bytes(), 4000);
        for i in 0..100 {
            assert_eq!(
                (r.row(i)[0], r.row(i)[1], r.row(i)[39]),
                (i as i8, 0, -(i as i8))
            );
        }
        assert_eq!(r.chunks[0].buf.lines(), 4000usize.div_ceil(64));
        let copy = r.clone();
        assert_eq!(copy, r);
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
