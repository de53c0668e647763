//! The graph's layer-0 neighbour lists: rows in chunks that states share ([`Rows`]), and per
//! chunk the lists this state wrote while it shared the chunk (its **edits**).
//!
//! Every insert rewrites lists all over the graph (a new node's neighbours each take a link back
//! to it), so a group copying the chunks it writes to, as the vectors are copied on write, would
//! copy most of them. Instead a write to a list whose chunk another state shares goes to this
//! state's edits of that chunk; reads look there first for a list marked as edited (one bit per
//! slot). Once a chunk's edits hold [`Lists::fold_at`] lists they are folded into a copy of the
//! chunk, which this state then holds alone and writes in place. A state that holds the same
//! lists as another adopts the other's chunks that are whole, having no edits
//! ([`Lists::adopt_from`]): this is how the node's two copies of the state (see
//! `node/src/engine/copies.rs`) hold the lists about once between them, each with the edits of
//! the last few groups, and a group copies a few chunks rather than most of them.
//!
//! Only the memory differs: [`Lists::get`] returns a slot's list wherever it is held, and two
//! `Lists` are equal when every slot's list is.

use alloc::vec::Vec;
use core::fmt;

use crate::rows::Rows;

/// The graph's layer-0 lists, `width` entries per slot (unused entries zero).
#[derive(Clone)]
pub(crate) struct Lists {
    rows: Rows<u32>,
    /// log2 of the rows per chunk of `rows`.
    shift: u32,
    /// Per chunk of `rows`, the lists written while it was shared; empty for a chunk this
    /// state holds alone (a write to it folds them first).
    edits: Vec<Edits>,
    /// One bit per slot: set when its list is in its chunk's edits, which then override the
    /// chunk's row.
    marks: Vec<u64>,
    /// Lists held in edits, over all chunks (reads skip the marks while there are none).
    edited: usize,
}

/// Lists written over one chunk while it was shared.
#[derive(Clone, Default)]
struct Edits {
    /// Open addressing from a slot to its entry: `(slot + 1, entry)`, `(0, _)` free. Empty, or
    /// a power of two at least twice `len` long.
    table: Vec<(u32, u32)>,
    /// The entries' lists, `width` elements each, in the order they were added.
    lists: Vec<u32>,
    len: usize,
}

impl Edits {
    #[inline]
    fn home(&self, slot: u32) -> usize {
        let bits = self.table.len().trailing_zeros();
        ((u64::from(slot).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> (64 - bits)) as usize
    }

    /// The entry of `slot`'s list, if it has one.
    #[inline]
    fn find(&self, slot: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut i = self.home(slot);
        loop {
            let (key, entry) = self.table[i];
            if key == slot + 1 {
                return Some(entry as usize);
            }
            if key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds an entry (zeros) for `slot`, which has none. The first takes room for `most`
    /// entries at once (pages of it not yet written take no memory).
    fn insert(&mut self, slot: u32, width: usize, most: usize) -> usize {
        debug_assert!(self.find(slot).is_none());
        if self.len == 0 {
            self.lists.reserve_exact(most * width);
            self.table = alloc::vec![(0, 0); (2 * most).next_power_of_two().max(16)];
        }
        if (self.len + 1) * 2 > self.table.len() {
            let old = core::mem::take(&mut self.table);
            self.table = alloc::vec![(0, 0); (old.len() * 2).max(16)];
            for (key, entry) in old.into_iter().filter(|&(key, _)| key != 0) {
                self.place(key, entry);
            }
        }
        let entry = self.len;
        self.place(slot + 1, entry as u32);
        self.len += 1;
        self.lists.resize(self.lists.len() + width, 0);
        entry
    }

    fn place(&mut self, key: u32, entry: u32) {
        let mask = self.table.len() - 1;
        let mut i = self.home(key - 1);
        while self.table[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = (key, entry);
    }

    fn list(&self, entry: usize, width: usize) -> &[u32] {
        &self.lists[entry * width..(entry + 1) * width]
    }

    fn list_mut(&mut self, entry: usize, width: usize) -> &mut [u32] {
        &mut self.lists[entry * width..(entry + 1) * width]
    }

    /// `(slot, entry)` of every list held.
    fn entries(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.table
            .iter()
            .filter(|&&(key, _)| key != 0)
            .map(|&(key, entry)| (key as usize - 1, entry as usize))
    }

    /// Bytes of the table and of the lists written (room taken for more is not counted: its
    /// pages take no memory until written).
    fn bytes(&self) -> u64 {
        (self.table.len() * 8 + self.lists.len() * 4) as u64
    }
}

impl Lists {
    /// No slots; lists of `width` entries.
    pub(crate) fn new(width: usize) -> Lists {
        let rows = Rows::new(width);
        Lists {
            shift: rows.chunk_rows().trailing_zeros(),
            rows,
            edits: Vec::new(),
            marks: Vec::new(),
            edited: 0,
        }
    }

    /// Slots held.
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    #[inline]
    fn marked(&self, slot: usize) -> bool {
        (self.marks[slot >> 6] >> (slot & 63)) & 1 == 1
    }

    fn set_mark(&mut self, slot: usize, on: bool) {
        let bit = 1u64 << (slot & 63);
        if on {
            self.marks[slot >> 6] |= bit;
        } else {
            self.marks[slot >> 6] &= !bit;
        }
    }

    /// `slot`'s list, `width` entries. Panics if `slot >= len`.
    #[inline]
    pub(crate) fn get(&self, slot: usize) -> &[u32] {
        if self.edited != 0 && self.marked(slot) {
            let edits = &self.edits[slot >> self.shift];
            let entry = edits
                .find(slot as u32)
                .expect("a marked list is in its chunk's edits");
            return edits.list(entry, self.rows.width());
        }
        self.rows.row(slot)
    }

    /// How many lists a chunk's edits hold before they are folded into a copy of it: between
    /// an eighth and a quarter of its rows, varied by chunk, so that chunks written at the
    /// same rate (new nodes link all over the graph) are not all copied by the same group.
    /// Lower limits copy chunks more often, higher ones hold more lists apart, which reads must
    /// look up (at 1M x 128 over HTTP, a sixteenth to an eighth ingested no faster than this,
    /// BENCHMARKS.md, "Server memory", sixth series).
    pub(crate) fn fold_at(&self, c: usize) -> usize {
        let eighth = (self.rows.chunk_rows() / 8).max(1);
        eighth + eighth * ((c * 7) % 16) / 16
    }

    /// Sets `slot`'s list to `list` (at most `width` entries; the rest zero).
    pub(crate) fn set(&mut self, slot: usize, list: &[u32]) {
        let width = self.rows.width();
        let c = slot >> self.shift;
        let row: &mut [u32] = if self.rows.chunk_is_own(c) {
            if self.edits[c].len != 0 {
                self.fold(c);
            }
            self.rows.row_mut(slot)
        } else if self.edited != 0 && self.marked(slot) {
            let edits = &mut self.edits[c];
            let entry = edits
                .find(slot as u32)
                .expect("a marked list is in its chunk's edits");
            edits.list_mut(entry, width)
        } else if self.edits[c].len < self.fold_at(c) {
            let most = self.fold_at(c);
            self.set_mark(slot, true);
            self.edited += 1;
            let edits = &mut self.edits[c];
            let entry = edits.insert(slot as u32, width, most);
            edits.list_mut(entry, width)
        } else {
            // Copies the chunk (its first write below) and writes the edits into the copy.
            self.fold(c);
            self.rows.row_mut(slot)
        };
        row[..list.len()].copy_from_slice(list);
        row[list.len()..].fill(0);
    }

    /// Writes chunk `c`'s edits into its rows (copying the chunk first if it is shared) and
    /// drops them.
    fn fold(&mut self, c: usize) {
        let edits = core::mem::take(&mut self.edits[c]);
        let width = self.rows.width();
        for (slot, entry) in edits.entries() {
            self.rows
                .row_mut(slot)
                .copy_from_slice(edits.list(entry, width));
            self.set_mark(slot, false);
        }
        self.edited -= edits.len;
    }

    /// Drops chunk `c`'s edits without writing them.
    fn drop_edits(&mut self, c: usize) {
        let edits = core::mem::take(&mut self.edits[c]);
        for (slot, _) in edits.entries() {
            self.set_mark(slot, false);
        }
        self.edited -= edits.len;
    }

    /// Appends a slot with an empty list. Copies the last chunk first if it is shared.
    pub(crate) fn push_empty(&mut self) {
        self.rows.push_with(|_| {});
        if self.edits.len() < self.rows.chunk_count() {
            self.edits.push(Edits::default());
        }
        if self.marks.len() * 64 < self.rows.len() {
            self.marks.push(0);
        }
    }

    /// Makes `self`, which must hold the same lists as `other` (the caller knows the two are
    /// the same state), use `other`'s chunks that `other` holds whole (without edits), dropping
    /// its own edits of them. Returns false, changing nothing, unless both hold as many lists
    /// of the same width. The lists are compared only in debug builds, where a difference
    /// panics.
    pub(crate) fn adopt_from(&mut self, other: &Lists) -> bool {
        if self.rows.len() != other.rows.len()
            || self.rows.width() != other.rows.width()
            || self.shift != other.shift
        {
            return false;
        }
        for c in 0..self.rows.chunk_count() {
            let shared = self.rows.chunk_shared_with(c, &other.rows);
            if other.edits[c].len != 0 || (shared && self.edits[c].len == 0) {
                continue;
            }
            debug_assert!(
                self.chunk_slots(c).all(|s| self.get(s) == other.get(s)),
                "lists adopted from a different state"
            );
            self.drop_edits(c);
            if !shared {
                self.rows.adopt_chunk(c, &other.rows);
            }
        }
        true
    }

    fn chunk_slots(&self, c: usize) -> core::ops::Range<usize> {
        (c << self.shift)..((c + 1) << self.shift).min(self.rows.len())
    }

    /// Each chunk of rows and each chunk's edits: its address and bytes (shared chunks have
    /// the same address; edits are never shared).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let edits = self
            .edits
            .iter()
            .filter(|e| e.len != 0)
            .map(|e| (e.lists.as_ptr() as usize, e.bytes()));
        self.rows.chunks().chain(edits)
    }

    /// Lists held in edits.
    #[cfg(test)]
    pub(crate) fn edited(&self) -> usize {
        self.edited
    }

    /// Bytes held: the rows, the edits and the marks.
    pub(crate) fn bytes(&self) -> u64 {
        self.rows.bytes()
            + self.edits.iter().map(Edits::bytes).sum::<u64>()
            + (self.marks.len() * 8) as u64
    }
}

/// Equal when every slot has the same list, wherever each holds it.
impl PartialEq for Lists {
    fn eq(&self, other: &Self) -> bool {
        self.rows.len() == other.rows.len()
            && self.rows.width() == other.rows.width()
            && self.shift == other.shift
            && (0..self.rows.chunk_count()).all(|c| {
                (self.edits[c].len == 0
                    && other.edits[c].len == 0
                    && self.rows.chunk_shared_with(c, &other.rows))
                    || self.chunk_slots(c).all(|s| self.get(s) == other.get(s))
            })
    }
}

impl Eq for Lists {}

impl fmt::Debug for Lists {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lists")
            .field("rows", &self.rows)
            .field("edited", &self.edited)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(slot: usize, round: u32) -> Vec<u32> {
        (0..(slot % 5) as u32).map(|i| i + round * 100).collect()
    }

    fn filled(n: usize) -> Lists {
        let mut l = Lists::new(8);
        for s in 0..n {
            l.push_empty();
            l.set(s, &list(s, 0));
        }
        l
    }

    #[test]
    fn a_state_alone_writes_in_place() {
        let l = filled(3000);
        assert_eq!(l.edited(), 0);
        for s in 0..3000 {
            assert_eq!(&l.get(s)[..s % 5], &list(s, 0)[..]);
        }
    }

    #[test]
    fn writes_to_shared_chunks_go_to_edits_until_folded() {
        let rows = Rows::<u32>::new(8).chunk_rows();
        let n = 2 * rows + 10;
        let original = filled(n);
        let mut copy = original.clone();
        let first_fold = copy.fold_at(0);
        // Writes to the first chunk: edits, until the chunk's limit.
        for s in 0..first_fold {
            copy.set(s * 3, &list(s * 3, 1));
        }
        assert_eq!(copy.edited(), first_fold);
        assert!(copy.rows.chunk_shared_with(0, &original.rows));
        // Written again: the same entries.
        copy.set(0, &list(0, 2));
        assert_eq!(copy.edited(), first_fold);
        // One more list: the chunk is copied with its edits folded in.
        copy.set(1, &list(1, 1));
        assert_eq!(copy.edited(), 0);
        assert!(!copy.rows.chunk_shared_with(0, &original.rows));
        assert!(copy.rows.chunk_shared_with(1, &original.rows));
        for s in 0..n {
            let want = if s == 0 {
                list(0, 2)
            } else if s == 1 || (s % 3 == 0 && s / 3 < first_fold) {
                list(s, 1)
            } else {
                list(s, 0)
            };
            assert_eq!(&copy.get(s)[..s % 5], &want[..], "slot {s}");
            assert!(copy.get(s)[s % 5..].iter().all(|&x| x == 0));
            assert_eq!(
                &original.get(s)[..s % 5],
                &list(s, 0)[..],
                "the original, slot {s}"
            );
        }
        assert_ne!(copy, original);
    }

    #[test]
    fn an_equal_state_adopts_whole_chunks_and_drops_its_edits() {
        let rows = Rows::<u32>::new(8).chunk_rows();
        let n = 3 * rows;
        let base = filled(n);
        // Two states from one, given the same writes: `a` first, while all three share every
        // chunk, so that `a` folds chunk 0 into a copy (more writes than its limit) and holds
        // chunk 1's in edits; then `b`, alone with its chunk 0 once `base` is gone (it writes
        // there in place) and sharing chunk 1 with `a` (edits).
        let mut a = base.clone();
        let mut b = base.clone();
        let writes: Vec<usize> = (0..a.fold_at(0) + 5).map(|i| i * 2).collect();
        for &s in &writes {
            a.set(s, &list(s, 1));
        }
        for &s in &writes[..10] {
            a.set(rows + s, &list(rows + s, 1));
        }
        drop(base);
        for &s in &writes {
            b.set(s, &list(s, 1));
        }
        for &s in &writes[..10] {
            b.set(rows + s, &list(rows + s, 1));
        }
        assert_eq!(a, b);
        assert_eq!((a.edited(), b.edited()), (10, 10));
        assert!(b.adopt_from(&a));
        assert!(b.rows.chunk_shared_with(0, &a.rows));
        assert!(b.rows.chunk_shared_with(1, &a.rows));
        assert!(b.rows.chunk_shared_with(2, &a.rows));
        assert_eq!(
            b.edited(),
            10,
            "chunk 1 has edits in `a`: `b` keeps its own"
        );
        assert_eq!(a, b);
        // Both go on writing apart.
        b.set(rows + 1, &list(rows + 1, 3));
        assert_ne!(a, b);
        assert_eq!(&a.get(rows + 1)[..(rows + 1) % 5], &list(rows + 1, 0)[..]);
        let mut shorter = filled(n - 1);
        assert!(!shorter.adopt_from(&a));
    }

    /// Bytes of rows and edits that `states` hold between them, each chunk counted once.
    fn held(states: &[&Lists]) -> u64 {
        let mut seen = alloc::collections::BTreeSet::new();
        let mut held = 0;
        for l in states {
            for (at, bytes) in l.chunks() {
                if seen.insert(at) {
                    held += bytes;
                }
            }
        }
        held
    }

    /// Two states taking turns as the node's copies do: one writes a group of lists at random
    /// slots, the other repeats the group and adopts the chunks the first holds whole. They
    /// stay equal to a plain model, and between them hold the rows about once: beyond one
    /// copy of the rows, only each one's edits (at most a quarter of each chunk's lists, with
    /// their table) and no chunk twice between groups.
    #[test]
    fn copies_taking_turns_hold_the_lists_about_once() {
        let width = 64; // 256-byte rows: 8,192 to a chunk
        let n = 10 * Rows::<u32>::new(width).chunk_rows() + 100;
        let mut model: Vec<Vec<u32>> = (0..n).map(|s| list(s, 0)).collect();
        let mut a = Lists::new(width);
        for (s, l) in model.iter().enumerate() {
            a.push_empty();
            a.set(s, l);
        }
        let mut b = a.clone();
        let rows = (n * width * 4) as u64;
        let mut x = 7u64;
        let mut most = 0;
        for group in 0..120u32 {
            let writes: Vec<(usize, Vec<u32>)> = (0..1500)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let s = (x >> 33) as usize % n;
                    (s, (0..(x % 60) as u32).map(|i| i + group).collect())
                })
                .collect();
            let (writer, other) = if group % 2 == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            for (s, l) in &writes {
                writer.set(*s, l);
                model[*s] = l.clone();
            }
            let during = held(&[writer, other]);
            for (s, l) in &writes {
                other.set(*s, l);
            }
            assert!(other.adopt_from(writer));
            let both = held(&[writer, other]);
            assert!(
                both <= rows + 2 * (rows / 4) * 5 / 4,
                "group {group}: {both} bytes held for {rows} of rows"
            );
            // While a group is written, the chunks it folded are held twice until the other
            // state adopts them.
            assert!(during <= 2 * rows, "group {group}: {during} while writing");
            most = most.max(both);
            if group % 40 == 39 {
                for (s, want) in model.iter().enumerate() {
                    assert_eq!(&a.get(s)[..want.len()], &want[..], "slot {s}");
                    assert!(a.get(s)[want.len()..].iter().all(|&v| v == 0));
                }
                assert_eq!(a, b);
            }
        }
        // The edits are folded as they reach their limits: the copies did hold some.
        assert!(most > rows && a.edited() + b.edited() > 0);
    }
}
