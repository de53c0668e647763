//! A deterministic HNSW index over a collection's fixed-point vectors.
//!
//! Everything that a floating-point, randomised HNSW leaves to chance is fixed here:
//!
//! - **Levels** come from the record id: `level(id)` counts how many times a 64-bit hash of the
//!   id falls below `2^64 / m^l`, which gives the usual geometric distribution
//!   (`P(level >= l) = m^-l`) with no generator state.
//! - **Distances** are exact integers ([`crate::distance`]), and every comparison orders by
//!   `(distance, slot)`, so ties are broken by id everywhere: candidate heaps, result lists,
//!   greedy descent, neighbour selection and pruning.
//! - **Batch construction** proceeds in chunks of [`BUILD_CHUNK`] records. For each chunk, a pure
//!   phase searches the graph as it stood before the chunk for every new record (this may run on
//!   any number of threads; see [`crate::exec`]), then a sequential phase links the records in id
//!   order, also considering the chunk's earlier records as candidates. The graph therefore
//!   depends on the events alone, never on the thread count.
//! - **Deletes** leave the node in the graph as a routing point (its vector stays); searches
//!   never return it. Links to deleted nodes keep the graph connected, so recall of the live
//!   records holds up (tested at 30% deleted).

use alloc::collections::BinaryHeap;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

use crate::codec::{DecodeError, Reader, Sink};
use crate::compact::{prefetch, CompactKernels, Component, Norms};
use crate::event::{HnswParams, Metric};
use crate::exec::Executor;
use crate::lists::Lists;
use crate::rows::Rows;

/// Highest layer a node can reach.
pub const MAX_LEVEL: u8 = 16;
/// Records whose candidates are searched against the same frozen graph (part of the format: a
/// different chunk size builds a different graph).
pub const BUILD_CHUNK: usize = 64;

const LEVEL_SEED: u64 = 0x5641_4c4f_5249_4c56; // "VALORILV"

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The layer of record `id` in an index with parameter `m`.
pub fn level_for(id: u64, m: u16) -> u8 {
    let h = splitmix64(id ^ LEVEL_SEED);
    let m = u64::from(m.max(2));
    let mut threshold = u64::MAX / m;
    let mut level = 0;
    while h < threshold && level < MAX_LEVEL {
        level += 1;
        threshold /= m;
    }
    level
}

/// How the index measures distance: over the collection's compact vectors
/// ([`crate::compact`]). For L2 and cosine (unit vectors) the compact squared distance, for
/// inner product the negated compact dot product: both order candidates as the full distance
/// would (exactly, in the compact copy's exact mode).
pub(crate) struct Space<'a, C> {
    pub compact: &'a Rows<C>,
    /// Each compact vector's [`Norms`] (narrow copies measured by `flipped_dot`).
    pub norms: &'a [Norms],
    pub metric: Metric,
    pub kernels: CompactKernels<C>,
}

/// A vector a walk measures from: its compact components and, where the space measures with
/// norms, its [`Norms`].
#[derive(Clone, Copy)]
pub(crate) struct Probe<'q, C> {
    pub v: &'q [C],
    pub norms: Norms,
}

impl<'a, C: Component> Space<'a, C> {
    /// The space over `compact`; `norms` are used (with the kernels' `flipped_dot`) only when
    /// they cover every vector.
    pub fn new(
        compact: &'a Rows<C>,
        norms: &'a [Norms],
        metric: Metric,
        mut kernels: CompactKernels<C>,
    ) -> Self {
        if norms.len() != compact.len() {
            kernels.flipped_dot = None;
        }
        Space {
            compact,
            norms,
            metric,
            kernels,
        }
    }

    #[inline]
    pub fn vector(&self, slot: u32) -> &'a [C] {
        self.compact.row(slot as usize)
    }

    /// A stored vector as a probe.
    #[inline]
    pub fn probe(&self, slot: u32) -> Probe<'a, C> {
        Probe {
            v: self.vector(slot),
            norms: if self.kernels.flipped_dot.is_some() {
                self.norms[slot as usize]
            } else {
                Norms::default()
            },
        }
    }

    /// A query (quantised to the copy's width) as a probe.
    pub fn probe_query<'q>(&self, q: &'q [C]) -> Probe<'q, C> {
        Probe {
            v: q,
            norms: if self.kernels.flipped_dot.is_some() {
                C::norms(q)
            } else {
                Norms::default()
            },
        }
    }

    /// The compact distance from `q` to `slot`. With `flipped_dot`, from the dot product and
    /// the norms: `dot(a, b) = flipped_dot(a, b) - 128 * sum(b)` and
    /// `l2(a, b) = |a|^2 + |b|^2 - 2 * dot(a, b)`, exact integer identities, so the value is
    /// the direct kernels' to the bit.
    #[inline]
    pub fn dist(&self, q: &Probe<'_, C>, slot: u32) -> WalkDistance {
        let v = self.vector(slot);
        if let Some(flipped_dot) = self.kernels.flipped_dot {
            let n = self.norms[slot as usize];
            let dot = flipped_dot(q.v, v) - 128 * i64::from(n.sum);
            return match self.metric {
                Metric::L2 | Metric::Cosine => {
                    i64::from(q.norms.square) + i64::from(n.square) - 2 * dot
                }
                Metric::InnerProduct => -dot,
            };
        }
        match self.metric {
            Metric::L2 | Metric::Cosine => (self.kernels.l2)(q.v, v),
            Metric::InnerProduct => -(self.kernels.dot)(q.v, v),
        }
    }
}

/// A compact distance (see [`Space`]).
pub type WalkDistance = i64;

/// Nodes with their distances to a base, ascending by (distance, slot).
type Candidates = Vec<(WalkDistance, u32)>;

/// Reusable per-search memory. Keeping one per thread avoids allocating on every query.
#[derive(Default)]
pub struct SearchScratch {
    /// The visited set, one bit per slot: small enough to stay in a core's cache.
    seen: Vec<u64>,
    /// Words of `seen` set since the last reset, so that a reset costs what the search
    /// visited rather than the collection's size.
    touched: Vec<u32>,
    /// A filtered walk's frontier and its accepted results.
    candidates: BinaryHeap<Reverse<(WalkDistance, u32)>>,
    results: BinaryHeap<(WalkDistance, u32)>,
    /// An unfiltered walk's frontier and results in one.
    pool: Pool,
    /// Unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
    /// The node chosen for expansion whose neighbour list has been requested.
    expanding: Option<u32>,
}

impl SearchScratch {
    /// Empty scratch space; it grows to the largest collection searched.
    pub fn new() -> Self {
        SearchScratch::default()
    }

    fn reset(&mut self, slots: usize) {
        for &w in &self.touched {
            self.seen[w as usize] = 0;
        }
        self.touched.clear();
        let words = slots.div_ceil(64);
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        self.candidates.clear();
        self.results.clear();
        self.pool.clear();
        self.expanding = None;
    }

    /// Marks `slot` visited; returns whether it was new.
    #[inline]
    fn visit(&mut self, slot: u32) -> bool {
        let w = slot as usize / 64;
        let bit = 1u64 << (slot % 64);
        let word = &mut self.seen[w];
        if *word & bit != 0 {
            return false;
        }
        if *word == 0 {
            self.touched.push(w as u32);
        }
        *word |= bit;
        true
    }
}

/// One node a [`Pool`] keeps.
#[derive(Clone, Copy)]
struct Found {
    d: WalkDistance,
    slot: u32,
    expanded: bool,
}

impl Found {
    #[inline]
    fn key(self) -> (WalkDistance, u32) {
        (self.d, self.slot)
    }
}

/// The state of a walk that accepts every node: the `ef` nearest nodes found so far, ascending
/// by (distance, slot), each marked once expanded. Expanding the nearest unexpanded one until
/// none is left visits the same nodes in the same order as the two-heap walk (candidates and
/// results): a candidate that the heap walk would expand is still among the `ef` nearest when
/// its turn comes, and the heap walk stops at the first candidate that has dropped out of them.
/// One sorted array replaces two heaps, and its contents are the sorted result.
#[derive(Default)]
struct Pool {
    items: Vec<Found>,
    /// No unexpanded item lies before it.
    cursor: usize,
}

impl Pool {
    fn clear(&mut self) {
        self.items.clear();
        self.cursor = 0;
    }

    /// Keeps `cand` if it is among the `ef` nearest so far.
    #[inline]
    fn offer(&mut self, cand: (WalkDistance, u32), ef: usize) {
        if self.items.len() >= ef {
            match self.items.last() {
                Some(worst) if cand < worst.key() => {
                    self.items.pop();
                }
                _ => return,
            }
        }
        let (d, slot) = cand;
        // Branch-free `(f.d, f.slot) < cand`: where the new node lands is unpredictable.
        let at = self
            .items
            .partition_point(|f| (f.d < d) | ((f.d == d) & (f.slot < slot)));
        self.items.insert(
            at,
            Found {
                d,
                slot,
                expanded: false,
            },
        );
        self.cursor = self.cursor.min(at);
    }

    /// Marks the nearest unexpanded node expanded and returns it; `None` ends the walk.
    #[inline]
    fn expand_next(&mut self) -> Option<u32> {
        while self.items.get(self.cursor).is_some_and(|f| f.expanded) {
            self.cursor += 1;
        }
        let f = self.items.get_mut(self.cursor)?;
        f.expanded = true;
        Some(f.slot)
    }
}

/// Adds `cand` to the `ef` best kept in `results` (a max-heap): pushed while there is room, else
/// it replaces the worst if it is better (one sift instead of a push and a pop).
#[inline]
fn offer(results: &mut BinaryHeap<(WalkDistance, u32)>, cand: (WalkDistance, u32), ef: usize) {
    if results.len() < ef {
        results.push(cand);
    } else if let Some(mut worst) = results.peek_mut() {
        if cand < *worst {
            *worst = cand;
        }
    }
}

/// What a best-first walk of one layer looks for (its state lives in a [`SearchScratch`]).
struct Walk<'q, C> {
    q: Probe<'q, C>,
    ef: usize,
    layer: u8,
}

/// The accepted nodes a walk kept, ascending by (distance, slot).
fn walk_finish(scratch: &mut SearchScratch) -> Vec<(WalkDistance, u32)> {
    if !scratch.pool.items.is_empty() {
        return scratch.pool.items.iter().map(|f| f.key()).collect();
    }
    let mut out: Vec<(WalkDistance, u32)> = scratch.results.drain().collect();
    out.sort_unstable();
    out
}

/// Which nodes a walk may return: all (an index build's walks), or those a filter accepts
/// (searches: live records, perhaps with a tag), which takes the two-heap walk.
type Accept<'f> = Option<&'f dyn Fn(u32) -> bool>;

/// How many new nodes' layer-0 walks one build task interleaves (not part of the format: the
/// walks are independent, so any number gives the same graph).
const INTERLEAVE: usize = 4;

/// What one batch build wrote into the graph, in order: every neighbour list it installed and
/// the entry point it left. Replaying it ([`Hnsw::replay`]) on a graph equal to the one the
/// build started from gives the graph the build made, without a single distance computed: how
/// a second copy of the state follows the first (see [`crate::Kernel::apply_recorded`]).
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct BuildLog {
    /// `(slot, layer, length)` per installed list; the lists follow one another in `lists`.
    writes: Vec<(u32, u8, u32)>,
    lists: Vec<u32>,
    entry: Option<u32>,
    max_level: u8,
}

impl BuildLog {
    fn record(&mut self, slot: u32, layer: u8, list: &[u32]) {
        self.writes.push((slot, layer, list.len() as u32));
        self.lists.extend_from_slice(list);
    }

    /// Bytes the log holds.
    pub fn memory_bytes(&self) -> usize {
        self.writes.len() * 12 + self.lists.len() * 4
    }
}

/// The graph. Slots are record ids.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Hnsw {
    params: HnswParams,
    /// Level of every slot (appended only: in chunks that copies of the state share, as
    /// `upper_at`).
    levels: Rows<u8>,
    /// Layer 0: per slot its neighbours `n_0 .. n_(m0-1)`, unused entries zero, in chunks
    /// that copies of the state share, with the lists each wrote over a shared chunk apart
    /// ([`Lists`]).
    layer0: Lists,
    /// Layer 0: per slot how many of its entries in `layer0` are neighbours. Apart from the
    /// lists so that a list of the usual `m` is a whole number of cache lines and its chunks
    /// whole huge pages.
    counts0: Vec<u16>,
    /// Layers 1..=level of every slot above layer 0: one `[count, n_0 .. n_(m-1)]` block per
    /// layer, the slots' blocks one after another in slot order. One array rather than a list
    /// per slot: most slots have no upper layer, and an empty list per slot would cost 24
    /// bytes each (a million slots: 24 MB, in each copy of the state).
    upper: Vec<u32>,
    /// Per slot, the index (in blocks) of its first block in `upper`.
    upper_at: Rows<u32>,
    entry: Option<u32>,
    max_level: u8,
}

impl Hnsw {
    pub fn new(params: HnswParams) -> Self {
        Hnsw {
            params,
            levels: Rows::small(1),
            layer0: Lists::new(2 * usize::from(params.m)),
            counts0: Vec::new(),
            upper: Vec::new(),
            upper_at: Rows::small(1),
            entry: None,
            max_level: 0,
        }
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Bytes held by the graph.
    pub fn memory_bytes(&self) -> u64 {
        (self.upper.len() * 4 + self.counts0.len() * 2) as u64
            + self.levels.bytes()
            + self.upper_at.bytes()
            + self.layer0.bytes()
    }

    /// Adopts the chunks of `other`'s layer-0 neighbour lists that `other` holds whole (with
    /// no lists written over them apart; [`Lists::adopt_from`]); `other` must be this graph in
    /// an equal state.
    pub(crate) fn share_lists_from(&mut self, other: &Hnsw) {
        debug_assert!(
            self.counts0 == other.counts0,
            "graph shared from a different state"
        );
        self.layer0.adopt_from(&other.layer0);
    }

    /// Adopts `other`'s chunks of the per-slot levels and upper-layer offsets, which writes
    /// only append to; `other` must be this graph in an equal state.
    pub(crate) fn share_slots_from(&mut self, other: &Hnsw) {
        self.levels.share_from(&other.levels);
        self.upper_at.share_from(&other.upper_at);
    }

    /// Each chunk of layer-0 neighbour lists, levels and upper-layer offsets: its address and
    /// bytes ([`Rows::chunks`]).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.layer0
            .chunks()
            .chain(self.levels.chunks())
            .chain(self.upper_at.chunks())
    }

    fn m(&self) -> usize {
        usize::from(self.params.m)
    }

    fn m0(&self) -> usize {
        2 * self.m()
    }

    fn max_links(&self, layer: u8) -> usize {
        if layer == 0 {
            self.m0()
        } else {
            self.m()
        }
    }

    fn slots(&self) -> usize {
        self.levels.len()
    }

    #[inline]
    fn neighbors(&self, slot: u32, layer: u8) -> &[u32] {
        if layer == 0 {
            let count = usize::from(self.counts0[slot as usize]);
            &self.layer0.get(slot as usize)[..count]
        } else {
            let at = self.upper_block(slot, layer);
            let count = self.upper[at] as usize;
            &self.upper[at + 1..at + 1 + count]
        }
    }

    /// Where `slot`'s block of `layer` (1 or above, at most its level) starts in `upper`.
    #[inline]
    fn upper_block(&self, slot: u32, layer: u8) -> usize {
        debug_assert!(layer >= 1 && layer <= self.levels.get(slot as usize));
        (self.upper_at.get(slot as usize) as usize + usize::from(layer) - 1) * (self.m() + 1)
    }

    fn set_neighbors(&mut self, slot: u32, layer: u8, list: &[u32]) {
        if layer == 0 {
            self.counts0[slot as usize] = list.len() as u16;
            // Unused entries are kept zero so equal graphs are equal in memory too.
            self.layer0.set(slot as usize, list);
            return;
        }
        let m = self.m();
        let at = self.upper_block(slot, layer);
        let block = &mut self.upper[at..at + 1 + m];
        block[0] = list.len() as u32;
        block[1..1 + list.len()].copy_from_slice(list);
        block[1 + list.len()..].fill(0);
    }

    /// Adds an empty, unreachable node for the next slot.
    fn push_node(&mut self, id: u64) {
        let level = level_for(id, self.params.m);
        self.levels.push(&[level]);
        self.layer0.push_empty();
        self.counts0.push(0);
        let block = self.m() + 1;
        let blocks = u32::try_from(self.upper.len() / block)
            .expect("fewer than 2^32 upper-layer blocks (each is a slot's layer above 0)");
        self.upper_at.push(&[blocks]);
        self.upper
            .resize(self.upper.len() + usize::from(level) * block, 0);
    }

    /// Greedy descent from the entry point to `stop_layer + 1`'s best node.
    fn descend<C: Component>(
        &self,
        space: &Space<'_, C>,
        q: &Probe<'_, C>,
        stop_layer: u8,
    ) -> Option<(WalkDistance, u32)> {
        let entry = self.entry?;
        let mut best = (space.dist(q, entry), entry);
        let mut layer = self.max_level;
        while layer > stop_layer {
            loop {
                let mut changed = false;
                for &n in self.neighbors(best.1, layer) {
                    let cand = (space.dist(q, n), n);
                    if cand < best {
                        best = cand;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            layer -= 1;
        }
        Some(best)
    }

    /// Best-first search of one layer. Returns up to `ef` accepted nodes, ascending by
    /// (distance, slot). Nodes that `accept` refuses are traversed but not returned.
    #[allow(clippy::too_many_arguments)] // each is a distinct input of the walk
    fn search_layer<C: Component>(
        &self,
        space: &Space<'_, C>,
        q: &Probe<'_, C>,
        entries: &[(WalkDistance, u32)],
        ef: usize,
        layer: u8,
        accept: Accept<'_>,
        scratch: &mut SearchScratch,
    ) -> Vec<(WalkDistance, u32)> {
        let walk = Walk { q: *q, ef, layer };
        self.walk_begin(&walk, entries, accept, scratch);
        while self.walk_step(space, &walk, accept, scratch) {}
        walk_finish(scratch)
    }

    /// Starts `walk` in `scratch` from `entries`.
    fn walk_begin<C: Component>(
        &self,
        walk: &Walk<'_, C>,
        entries: &[(WalkDistance, u32)],
        accept: Accept<'_>,
        scratch: &mut SearchScratch,
    ) {
        scratch.reset(self.slots());
        for &(d, e) in entries {
            if scratch.visit(e) {
                match accept {
                    None => scratch.pool.offer((d, e), walk.ef),
                    Some(accept) => {
                        scratch.candidates.push(Reverse((d, e)));
                        if accept(e) {
                            offer(&mut scratch.results, (d, e), walk.ef);
                        }
                    }
                }
            }
        }
    }

    /// One stage of a best-first walk, split where it waits on memory. Stages alternate:
    ///
    /// 1. score the neighbours requested by the last expansion, choose the next node to expand
    ///    and request its neighbour list (returns false when none is left: the walk is over);
    /// 2. read that list, mark its unvisited nodes and request their vectors.
    ///
    /// A walk's own sequence of operations is the plain best-first search's; the split only
    /// lets several independent walks take turns ([`Hnsw::walk_many`]), each computing while
    /// the others' loads arrive.
    fn walk_step<C: Component>(
        &self,
        space: &Space<'_, C>,
        walk: &Walk<'_, C>,
        accept: Accept<'_>,
        scratch: &mut SearchScratch,
    ) -> bool {
        if let Some(c) = scratch.expanding.take() {
            for &n in self.neighbors(c, walk.layer) {
                if scratch.visit(n) {
                    prefetch(space.vector(n));
                    scratch.fresh.push(n);
                }
            }
            return true;
        }
        let ef = walk.ef;
        let mut fresh = core::mem::take(&mut scratch.fresh);
        let next = match accept {
            None => {
                for &n in &fresh {
                    scratch.pool.offer((space.dist(&walk.q, n), n), ef);
                }
                scratch.pool.expand_next()
            }
            Some(accept) => {
                for &n in &fresh {
                    let cand = (space.dist(&walk.q, n), n);
                    let full = scratch.results.len() >= ef;
                    if !full || scratch.results.peek().is_some_and(|w| cand < *w) {
                        scratch.candidates.push(Reverse(cand));
                        if accept(n) {
                            offer(&mut scratch.results, cand, ef);
                        }
                    }
                }
                match scratch.candidates.pop() {
                    Some(Reverse(c))
                        if !(scratch.results.len() >= ef
                            && scratch.results.peek().is_some_and(|w| c > *w)) =>
                    {
                        Some(c.1)
                    }
                    _ => None,
                }
            }
        };
        fresh.clear();
        scratch.fresh = fresh;
        if let Some(c) = next {
            self.prefetch_neighbors(c, walk.layer);
            scratch.expanding = Some(c);
        }
        next.is_some()
    }

    /// Runs one walk per scratch (`walks[i]` in `scratches[i]`, started from `entries[i]`),
    /// taking turns a stage at a time. Each result equals [`Hnsw::search_layer`]'s.
    fn walk_many<C: Component>(
        &self,
        space: &Space<'_, C>,
        walks: &[Walk<'_, C>],
        entries: &[Vec<(WalkDistance, u32)>],
        scratches: &mut [SearchScratch],
    ) -> Vec<Vec<(WalkDistance, u32)>> {
        for ((walk, e), scratch) in walks.iter().zip(entries).zip(scratches.iter_mut()) {
            self.walk_begin(walk, e, None, scratch);
        }
        let mut active: Vec<usize> = (0..walks.len()).collect();
        while !active.is_empty() {
            active.retain(|&i| self.walk_step(space, &walks[i], None, &mut scratches[i]));
        }
        scratches[..walks.len()]
            .iter_mut()
            .map(walk_finish)
            .collect()
    }

    /// Hints the CPU to load `slot`'s neighbour list on `layer` (on layer 0 its count too).
    #[inline]
    fn prefetch_neighbors(&self, slot: u32, layer: u8) {
        if layer == 0 && (slot as usize) < self.layer0.len() {
            prefetch(self.layer0.get(slot as usize));
            prefetch(&self.counts0[slot as usize..=slot as usize]);
        }
    }

    /// Approximate nearest accepted nodes to `q`: up to `max(ef, k)`, ascending by (compact
    /// distance, slot). The caller keeps the first `k` (after re-ranking, in approximate mode).
    pub fn search<C: Component>(
        &self,
        space: &Space<'_, C>,
        q: &Probe<'_, C>,
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
        scratch: &mut SearchScratch,
    ) -> Vec<(WalkDistance, u32)> {
        let Some(start) = self.descend(space, q, 0) else {
            return Vec::new();
        };
        self.search_layer(space, q, &[start], ef.max(k), 0, Some(accept), scratch)
    }

    /// The neighbour-selection heuristic: walk candidates nearest first and keep one unless an
    /// already kept neighbour is closer to it than the base is. `candidates` must be sorted.
    fn select<C: Component>(
        &self,
        space: &Space<'_, C>,
        candidates: &[(WalkDistance, u32)],
        max: usize,
    ) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for &(d, c) in candidates {
            if kept.len() >= max {
                break;
            }
            let v = space.probe(c);
            if kept.iter().all(|&s| space.dist(&v, s) >= d) {
                kept.push(c);
            }
        }
        kept
    }

    /// Candidate lists for a node that is not yet linked, per layer from
    /// `min(level, max_level)` down to 1, and the entry points for its layer-0 walk: a pure
    /// function of the frozen graph. `None` while the graph is empty.
    fn upper_candidates<C: Component>(
        &self,
        space: &Space<'_, C>,
        slot: u32,
        scratch: &mut SearchScratch,
    ) -> Option<(Vec<Candidates>, Candidates)> {
        let level = self.levels.get(slot as usize);
        let q = &space.probe(slot);
        let entry = self.entry?;
        let top = level.min(self.max_level);
        let mut entries = vec![self
            .descend(space, q, top)
            .unwrap_or((space.dist(q, entry), entry))];
        let mut per_layer = vec![Vec::new(); usize::from(top) + 1];
        let ef = usize::from(self.params.ef_construction);
        for layer in (1..=top).rev() {
            let found = self.search_layer(space, q, &entries, ef, layer, None, scratch);
            entries.clone_from(&found);
            per_layer[usize::from(layer)] = found;
        }
        Some((per_layer, entries))
    }

    /// Candidate lists, per layer from `min(level, max_level)` down to 0, for the not yet
    /// linked nodes `slots` (at most [`INTERLEAVE`]), their layer-0 walks interleaved; empty
    /// lists while the graph is empty. A pure function of the frozen graph, run in parallel.
    fn find_candidates<C: Component>(
        &self,
        space: &Space<'_, C>,
        slots: core::ops::Range<u32>,
        scratches: &mut [SearchScratch],
    ) -> Vec<Vec<Vec<(WalkDistance, u32)>>> {
        let mut layers = Vec::with_capacity(slots.len());
        let mut entries = Vec::with_capacity(slots.len());
        for slot in slots.clone() {
            match self.upper_candidates(space, slot, &mut scratches[0]) {
                Some((per_layer, e)) => {
                    layers.push(per_layer);
                    entries.push(e);
                }
                None => return slots.map(|_| Vec::new()).collect(),
            }
        }
        let ef = usize::from(self.params.ef_construction);
        let walks: Vec<Walk<'_, C>> = slots
            .map(|slot| Walk {
                q: space.probe(slot),
                ef,
                layer: 0,
            })
            .collect();
        let found = self.walk_many(space, &walks, &entries, scratches);
        for (per_layer, f) in layers.iter_mut().zip(found) {
            per_layer[0] = f;
        }
        layers
    }

    /// A new node's neighbour lists, per layer: its candidates from the frozen graph plus the
    /// chunk's earlier nodes (`first..slot`), through the selection heuristic.
    fn choose<C: Component>(
        &self,
        space: &Space<'_, C>,
        first: u32,
        slot: u32,
        mut layers: Vec<Vec<(WalkDistance, u32)>>,
    ) -> Vec<Vec<u32>> {
        let level = self.levels.get(slot as usize);
        layers.resize(usize::from(level) + 1, Vec::new());
        let q = &space.probe(slot);
        for other in first..slot {
            let other_level = self.levels.get(other as usize);
            let d = space.dist(q, other);
            for layer in layers
                .iter_mut()
                .take(usize::from(other_level.min(level)) + 1)
            {
                layer.push((d, other));
            }
        }
        layers
            .iter_mut()
            .map(|candidates| {
                candidates.sort_unstable();
                candidates.dedup();
                self.select(space, candidates, self.m())
            })
            .collect()
    }

    /// Indexes slots `start..end` (their vectors already in `space`), in chunks of
    /// [`BUILD_CHUNK`]. Per chunk:
    ///
    /// 1. (parallel, per new node) search the frozen graph for candidates on each layer, add
    ///    the chunk's earlier nodes as candidates, and select the node's neighbours;
    /// 2. (sequential, id order) install the new nodes' lists and the entry point, and gather
    ///    for every existing list the new nodes that link back to it;
    /// 3. (parallel, per touched list) merge each list with its incoming links, pruning with the
    ///    selection heuristic when it overflows; then install the results.
    ///
    /// Each parallel task reads only state frozen before its phase, and results are installed
    /// in a fixed order, so the graph does not depend on the executor. With `log`, every list
    /// installed and the final entry point are recorded there ([`Hnsw::replay`]).
    pub fn insert_batch<C: Component, E: Executor>(
        &mut self,
        space: &Space<'_, C>,
        start: u64,
        end: u64,
        exec: &E,
        mut log: Option<&mut BuildLog>,
    ) {
        let mut scratches: Vec<Vec<SearchScratch>> = (0..exec.threads().max(1))
            .map(|_| (0..INTERLEAVE).map(|_| SearchScratch::new()).collect())
            .collect();
        let mut chunk_start = start;
        while chunk_start < end {
            let chunk_end = (chunk_start + BUILD_CHUNK as u64).min(end);
            for id in chunk_start..chunk_end {
                self.push_node(id);
            }
            let first = chunk_start as u32;
            let count = (chunk_end - chunk_start) as usize;

            // Phase 1: candidates and selection, per new node; a task takes `INTERLEAVE`
            // consecutive nodes.
            let frozen = &*self;
            let groups = count.div_ceil(INTERLEAVE);
            let chosen: Vec<Vec<Vec<u32>>> = exec
                .map(groups, &mut scratches, |scratch, g| {
                    let from = first + (g * INTERLEAVE) as u32;
                    let to = (from + INTERLEAVE as u32).min(first + count as u32);
                    let found = frozen.find_candidates(space, from..to, scratch);
                    (from..to)
                        .zip(found)
                        .map(|(slot, layers)| frozen.choose(space, first, slot, layers))
                        .collect::<Vec<_>>()
                })
                .into_iter()
                .flatten()
                .collect();

            // Phase 2: install the new lists; gather back links as (target, layer, new node),
            // which sorts into one group per touched list.
            let mut back: Vec<(u32, u8, u32)> = Vec::new();
            for (i, layers) in chosen.iter().enumerate() {
                let slot = first + i as u32;
                for (layer, list) in layers.iter().enumerate() {
                    self.set_neighbors(slot, layer as u8, list);
                    if let Some(log) = log.as_deref_mut() {
                        log.record(slot, layer as u8, list);
                    }
                    back.extend(list.iter().map(|&n| (n, layer as u8, slot)));
                }
                let level = self.levels.get(slot as usize);
                if self.entry.is_none() || level > self.max_level {
                    self.entry = Some(slot);
                    self.max_level = level;
                }
            }
            back.sort_unstable();
            let mut groups: Vec<(u32, u8, core::ops::Range<usize>)> = Vec::new();
            for (i, &(target, layer, _)) in back.iter().enumerate() {
                match groups.last_mut() {
                    Some((t, l, range)) if *t == target && *l == layer => range.end = i + 1,
                    _ => groups.push((target, layer, i..i + 1)),
                }
            }

            // Phase 3: merge and prune each touched list.
            let frozen = &*self;
            let merged: Vec<Vec<u32>> = exec.map(groups.len(), &mut scratches, |_, g| {
                let (target, layer, ref range) = groups[g];
                let current = frozen.neighbors(target, layer);
                let incoming = back[range.clone()].iter().map(|&(_, _, slot)| slot);
                let max = frozen.max_links(layer);
                if current.len() + range.len() <= max {
                    return current.iter().copied().chain(incoming).collect();
                }
                let base = &space.probe(target);
                let mut candidates: Vec<(WalkDistance, u32)> = current
                    .iter()
                    .copied()
                    .chain(incoming)
                    .map(|c| (space.dist(base, c), c))
                    .collect();
                candidates.sort_unstable();
                candidates.dedup();
                frozen.select(space, &candidates, max)
            });
            for ((target, layer, _), list) in groups.iter().zip(&merged) {
                self.set_neighbors(*target, *layer, list);
                if let Some(log) = log.as_deref_mut() {
                    log.record(*target, *layer, list);
                }
            }
            chunk_start = chunk_end;
        }
        if let Some(log) = log {
            log.entry = self.entry;
            log.max_level = self.max_level;
        }
    }

    /// Repeats a build of slots `start..end` from its log, on a graph equal to the one the
    /// build started from: the same nodes, the same lists written in the same order, the same
    /// entry point; hence the same graph.
    pub fn replay(&mut self, start: u64, end: u64, log: &BuildLog) {
        for id in start..end {
            self.push_node(id);
        }
        let mut at = 0usize;
        for &(slot, layer, len) in &log.writes {
            let list = &log.lists[at..at + len as usize];
            self.set_neighbors(slot, layer, list);
            at += len as usize;
        }
        if start < end {
            self.entry = log.entry;
            self.max_level = log.max_level;
        }
    }

    /// Canonical encoding: entry point, then per slot its level and its neighbour lists.
    pub fn encode(&self, out: &mut impl Sink) {
        match self.entry {
            None => out.put_u8(0),
            Some(e) => {
                out.put_u8(1);
                out.put_u32(e);
            }
        }
        out.put_u8(self.max_level);
        for slot in 0..self.slots() as u32 {
            let level = self.levels.get(slot as usize);
            out.put_u8(level);
            for layer in 0..=level {
                let list = self.neighbors(slot, layer);
                out.put_u8(list.len() as u8);
                for &n in list {
                    out.put_u32(n);
                }
            }
        }
    }

    /// Decodes [`Hnsw::encode`]'s output for `slots` records, checking every invariant.
    pub fn decode(params: HnswParams, slots: u64, r: &mut Reader<'_>) -> Result<Hnsw, DecodeError> {
        let mut h = Hnsw::new(params);
        let entry = match r.u8()? {
            0 => None,
            1 => Some(r.u32()?),
            tag => return Err(DecodeError::UnknownTag { what: "entry", tag }),
        };
        let max_level = r.u8()?;
        for id in 0..slots {
            h.push_node(id);
        }
        let mut list = Vec::new();
        for slot in 0..slots as u32 {
            let level = r.u8()?;
            if level != h.levels.get(slot as usize) {
                return Err(DecodeError::Invalid(
                    "index level differs from the id's level",
                ));
            }
            for layer in 0..=level {
                let count = usize::from(r.u8()?);
                if count > h.max_links(layer) {
                    return Err(DecodeError::Invalid("index neighbour list too long"));
                }
                list.clear();
                for _ in 0..count {
                    let n = r.u32()?;
                    if u64::from(n) >= slots || h.levels.get(n as usize) < layer || n == slot {
                        return Err(DecodeError::Invalid("index neighbour out of range"));
                    }
                    list.push(n);
                }
                h.set_neighbors(slot, layer, &list);
            }
        }
        let top = h.levels.values().max();
        match (entry, top) {
            (None, None) => {}
            (Some(e), Some(t))
                if u64::from(e) < slots && h.levels.get(e as usize) == t && max_level == t => {}
            _ => return Err(DecodeError::Invalid("index entry point")),
        }
        h.entry = entry;
        h.max_level = max_level;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::kernels_with;
    use crate::exec::Sequential;

    /// Measuring with the flipped dot product and the norms gives the direct kernels'
    /// distances to the bit, for every metric, at the range's extremes and at random.
    #[test]
    fn distances_by_norms_equal_direct_distances() {
        use crate::compact::{dot_scalar, l2_scalar, norms_of, Isa};
        let dim = 200usize;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rows: Vec<i8> = (0..30 * dim)
            .map(|_| {
                x = splitmix64(x);
                x as i8
            })
            .collect();
        rows.extend(core::iter::repeat_n(i8::MIN, dim));
        rows.extend(core::iter::repeat_n(i8::MAX, dim));
        let norms: Vec<Norms> = rows.chunks_exact(dim).map(norms_of).collect();
        let n = (rows.len() / dim) as u32;
        let mut stored = Rows::new(dim);
        for row in rows.chunks_exact(dim) {
            stored.push(row);
        }
        for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
            for isa in [Isa::Scalar, Isa::Avx512Vnni] {
                let space = Space::new(&stored, &norms, metric, i8::kernels_for(isa));
                for a in 0..n {
                    let probe = space.probe(a);
                    let query = space.probe_query(space.vector(a));
                    for b in 0..n {
                        let (va, vb) = (space.vector(a), space.vector(b));
                        let direct = match metric {
                            Metric::InnerProduct => -dot_scalar(va, vb),
                            _ => l2_scalar(va, vb),
                        };
                        assert_eq!(space.dist(&probe, b), direct, "{metric:?} {isa:?}");
                        assert_eq!(space.dist(&query, b), direct, "{metric:?} {isa:?}");
                    }
                }
            }
        }
    }

    /// Interleaving walks is only a schedule: each walk's result equals the same walk run
    /// alone, whatever its neighbours in the batch.
    #[test]
    fn interleaved_walks_equal_single_walks() {
        let (dim, n) = (8usize, 1500u32);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut compact = Rows::new(dim);
        for _ in 0..n {
            compact.push_with(|row: &mut [i16]| {
                for c in row {
                    x = splitmix64(x);
                    *c = (x % 2001) as i16 - 1000;
                }
            });
        }
        let space = Space::new(&compact, &[], Metric::L2, kernels_with(false));
        let mut h = Hnsw::new(HnswParams {
            m: 6,
            ef_construction: 40,
            ef_search: 20,
        });
        h.insert_batch(&space, 0, u64::from(n), &Sequential, None);
        let queries: Vec<u32> = (0..7).map(|i| i * 211 % n).collect();
        let entries: Vec<Vec<(WalkDistance, u32)>> = queries
            .iter()
            .map(|&q| vec![h.descend(&space, &space.probe(q), 0).unwrap()])
            .collect();
        for ef in [1usize, 5, 40] {
            let walks: Vec<Walk<'_, i16>> = queries
                .iter()
                .map(|&q| Walk {
                    q: space.probe(q),
                    ef,
                    layer: 0,
                })
                .collect();
            let mut scratches: Vec<SearchScratch> =
                (0..walks.len()).map(|_| SearchScratch::new()).collect();
            let together = h.walk_many(&space, &walks, &entries, &mut scratches);
            for (i, &q) in queries.iter().enumerate() {
                let alone = |accept: Accept<'_>| {
                    h.search_layer(
                        &space,
                        &space.probe(q),
                        &entries[i],
                        ef,
                        0,
                        accept,
                        &mut SearchScratch::new(),
                    )
                };
                let pooled = alone(None);
                assert_eq!(together[i], pooled, "query {q}, ef {ef}");
                assert!(!pooled.is_empty() && pooled.len() <= ef);
                // The one-array walk and the two-heap walk accepting everything agree.
                assert_eq!(alone(Some(&|_| true)), pooled, "query {q}, ef {ef}");
            }
        }
    }
}
