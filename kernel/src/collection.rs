//! A collection: records with dense ids, stored column-wise, and exact search over them.
//!
//! Ids are assigned consecutively from 0 and never reused, so a record's id is its slot: the
//! vector of record `id` is row `id` of `vectors`. A deleted record loses its tag
//! and metadata and is marked dead, but keeps its vector: the HNSW index routes through it. It
//! costs its vector's memory until the collection is dropped.

use alloc::borrow::Cow;
use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec::Vec;

use crate::codec::{DecodeError, Reader, Sink};
use crate::compact::{self, Component, Lines};
use crate::distance::{self, Bound, Distance};
use crate::error::Error;
use crate::event::{decode_spec, encode_spec, CollectionSpec, IndexSpec, Metric, NewRecord};
use crate::exec::Executor;
use crate::fixed::Fixed;
use crate::hnsw::{BuildLog, Hnsw, SearchScratch, Space};
use crate::kernel::Share;
use crate::keyed::Extras;
use crate::limits::*;
use crate::payload::Payload;
use crate::rows::{ChunkStore, Rows};
use crate::vectors::{self, Vectors};
use alloc::string::String;

/// A tag filter with at most this many live records is answered by an exact scan of the tag
/// instead of a filtered graph walk (the scan is both exact and cheaper at that size).
pub const FILTER_SCAN_MAX: u64 = 4096;

/// One search result.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub struct Hit {
    /// Distance to the query (see [`Metric`] for units); results are ordered by it, then by id.
    pub distance: Distance,
    /// Record id.
    pub id: u64,
}

/// A record as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record<'a> {
    /// Record id.
    pub id: u64,
    /// The stored vector (unit length for cosine collections): borrowed, or decoded from the
    /// 16-bit form the collection holds it in.
    pub vector: Cow<'a, [i32]>,
    /// Tag.
    pub tag: u64,
    /// Metadata, if any.
    pub metadata: Option<&'a [u8]>,
    /// Key, for records written by an upsert.
    pub key: Option<&'a str>,
    /// Payload, if any (an empty payload is none).
    pub payload: Option<&'a Payload>,
    /// Document text, if any.
    pub document: Option<&'a str>,
}

/// A collection and its records.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Collection {
    pub(crate) spec: CollectionSpec,
    pub(crate) next_id: u64,
    /// Full-precision vectors in stored form, one row per slot, in 16 bits while every stored
    /// vector allows it exactly ([`crate::vectors`]), in chunks that copies of the state share
    /// ([`Rows`]).
    pub(crate) vectors: Vectors,
    /// Per slot its tag (0 once deleted), and whether it is live (1) or deleted (0): rows of
    /// one value in shared chunks, like the vectors (appended, rarely rewritten), so the
    /// node's two copies hold them once.
    pub(crate) tags: Rows<u64>,
    pub(crate) live: Rows<u8>,
    pub(crate) metadata: BTreeMap<u64, Vec<u8>>,
    pub(crate) live_count: u64,
    /// Largest absolute component ever stored: chooses the narrow distance kernels, which
    /// compute the same exact values as the wide ones, and with `or_bits` the form the
    /// vectors are held in ([`vectors::packing`]).
    pub(crate) max_abs: u32,
    /// The graph index, for HNSW collections.
    pub(crate) index: Option<Hnsw>,
    /// Live ids per tag, ascending: derived from `tags` and `live`, never encoded.
    pub(crate) postings: BTreeMap<u64, Vec<u32>>,
    /// OR of every stored component's bits: its trailing zeros say when the compact copy is
    /// exact, and the shift of the vectors' 16-bit form ([`vectors::packing`]).
    pub(crate) or_bits: u32,
    /// How many stored vectors have a largest component of each bit length: chooses the
    /// compact copy's range ([`compact::params`]).
    pub(crate) magnitudes: [u64; 33],
    /// The compact copy the index walks (empty for flat collections): derived, never encoded.
    pub(crate) compact: CompactCopy,
    /// Each narrow compact vector's norms ([`compact::Norms`]; empty for a wide copy): derived.
    pub(crate) compact_norms: Vec<compact::Norms>,
    /// Slots whose vectors lie beyond the compact copy's range (saturated in it), ascending:
    /// derived, never encoded.
    pub(crate) saturated: Vec<u32>,
    /// The compact copy's width, shift and exactness (see [`crate::compact`]).
    pub(crate) compact_params: compact::Params,
    /// Keys, payloads, documents and payload indexes ([`crate::keyed`]).
    pub(crate) extras: Extras,
}

/// A collection's compact copy, at the width its parameters name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum CompactCopy {
    Narrow(Rows<i8>),
    Wide(Rows<i16>),
}

/// How an insert builds its part of the index.
pub(crate) enum Build<'a, E> {
    /// Search and link with `exec`, recording what is written when a log is given.
    Run(&'a E, Option<&'a mut BuildLog>),
    /// Write what an earlier build on an equal collection recorded.
    Replay(&'a BuildLog),
}

impl Collection {
    pub(crate) fn new(spec: CollectionSpec) -> Self {
        let index = match spec.index {
            IndexSpec::Flat => None,
            IndexSpec::Hnsw(p) => Some(Hnsw::new(p)),
        };
        let dim = spec.dimension as usize;
        Collection {
            index,
            postings: BTreeMap::new(),
            or_bits: 0,
            magnitudes: [0; 33],
            compact: CompactCopy::Wide(Rows::new(dim)),
            compact_norms: Vec::new(),
            saturated: Vec::new(),
            compact_params: compact::Params::EMPTY,
            extras: Extras::default(),
            spec,
            next_id: 0,
            vectors: Vectors::new(dim),
            tags: Rows::small(1),
            live: Rows::small(1),
            metadata: BTreeMap::new(),
            live_count: 0,
            max_abs: 0,
        }
    }

    /// The collection's definition.
    pub fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    /// Number of live records.
    pub fn len(&self) -> u64 {
        self.live_count
    }

    /// Whether there are no live records.
    pub fn is_empty(&self) -> bool {
        self.live_count == 0
    }

    /// The id the next inserted record will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    fn dim(&self) -> usize {
        self.spec.dimension as usize
    }

    /// Whether `id` names a live record.
    pub fn contains(&self, id: u64) -> bool {
        id < self.next_id && self.is_live(id as usize)
    }

    /// Whether the existing slot `slot` holds a live record (panics past the last slot).
    #[inline]
    pub(crate) fn is_live(&self, slot: usize) -> bool {
        self.live.get(slot) != 0
    }

    /// A live record.
    pub fn get(&self, id: u64) -> Option<Record<'_>> {
        if !self.contains(id) {
            return None;
        }
        Some(Record {
            id,
            vector: self.slot(id),
            tag: self.tags.get(id as usize),
            metadata: self.metadata.get(&id).map(|m| m.as_slice()),
            key: self.extras.key_of.get(&id).map(String::as_str),
            payload: self.extras.payloads.get(&id),
            document: self.extras.documents.get(&id).map(String::as_str),
        })
    }

    /// The stored vector of slot `id`, borrowed when held in 32 bits.
    pub(crate) fn slot(&self, id: u64) -> Cow<'_, [i32]> {
        self.vectors.get(id as usize)
    }

    /// Live record ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.next_id).filter(|&id| self.is_live(id as usize))
    }

    /// Checks a vector against the collection and returns its stored form (normalised for
    /// cosine). `position` names the vector in error messages.
    pub(crate) fn stored_form(&self, v: &[Fixed], position: u32) -> Result<Vec<i32>, Error> {
        if v.len() != self.dim() {
            return Err(Error::DimensionMismatch {
                expected: self.spec.dimension,
                got: v.len() as u32,
                position,
            });
        }
        let v = if self.spec.metric == Metric::Cosine {
            distance::normalize(v).ok_or(Error::ZeroVector { position })?
        } else {
            v.to_vec()
        };
        Ok(v.into_iter().map(Fixed::raw).collect())
    }

    /// Validates records for insertion without changing anything.
    pub(crate) fn check_insert(&self, records: &[NewRecord]) -> Result<(), Error> {
        check_batch_shape(records)?;
        for (i, rec) in records.iter().enumerate() {
            if rec.vector.len() != self.dim() {
                return Err(Error::DimensionMismatch {
                    expected: self.spec.dimension,
                    got: rec.vector.len() as u32,
                    position: i as u32,
                });
            }
            if self.spec.metric == Metric::Cosine && rec.vector.iter().all(|x| x.0 == 0) {
                return Err(Error::ZeroVector { position: i as u32 });
            }
        }
        // Slots are u32 inside the index.
        if self.next_id + records.len() as u64 > u64::from(u32::MAX) {
            return Err(Error::IdsExhausted);
        }
        Ok(())
    }

    /// Appends validated records and indexes them (building the index with `exec`, or
    /// replaying a build's log); returns the first id.
    pub(crate) fn insert<E: Executor>(
        &mut self,
        records: &[NewRecord],
        build: Build<'_, E>,
    ) -> u64 {
        let first = self.next_id;
        for rec in records {
            let stored = self
                .stored_form(&rec.vector, 0)
                .expect("record was validated before apply");
            self.push_stored(&stored, rec.tag, rec.metadata.clone());
        }
        self.index_from(first, build);
        first
    }

    /// Indexes the slots stored from `first` on (building with `exec`, or replaying a build's
    /// log).
    pub(crate) fn index_from<E: Executor>(&mut self, first: u64, build: Build<'_, E>) {
        let end = self.next_id;
        if let Some(mut index) = self.index.take() {
            self.refresh_compact(first);
            match build {
                Build::Run(exec, log) => match &self.compact {
                    CompactCopy::Narrow(c) => {
                        index.insert_batch(&self.space(c), first, end, exec, log)
                    }
                    CompactCopy::Wide(c) => {
                        index.insert_batch(&self.space(c), first, end, exec, log)
                    }
                },
                Build::Replay(log) => index.replay(first, end, log),
            }
            self.index = Some(index);
        }
    }

    /// Brings the compact copy up to date after records from `first` on were stored:
    /// re-quantises everything when its parameters (width, shift, exactness) changed, else
    /// appends the new rows.
    pub(crate) fn refresh_compact(&mut self, first: u64) {
        let params = compact::params(self.dim(), &self.magnitudes, self.or_bits);
        let first_slot = if params != self.compact_params {
            self.compact_params = params;
            self.compact = match params.width {
                compact::Width::Narrow => CompactCopy::Narrow(Rows::new(self.dim())),
                compact::Width::Wide => CompactCopy::Wide(Rows::new(self.dim())),
            };
            self.compact_norms.clear();
            0
        } else {
            first as usize
        };
        if first_slot == 0 {
            self.saturated.clear();
        }
        // One pass over the new rows (a row held in 16 bits is decoded once): quantise each,
        // and note those beyond the compact range.
        let mut slot = first_slot as u32;
        let saturated = &mut self.saturated;
        let mut note = |v: &[i32], limit_bits: u32| {
            if compact::bit_length(distance::max_abs(v)) as u32 > params.shift + limit_bits {
                saturated.push(slot);
            }
            slot += 1;
        };
        match &mut self.compact {
            CompactCopy::Narrow(c) => {
                let start = c.len();
                self.vectors.for_each_from(first_slot, |row| {
                    c.push_with(|out| compact::quantize_row(row, params.shift, out));
                    note(row, i8::LIMIT_BITS);
                });
                self.compact_norms
                    .extend(c.rows_from(start).map(compact::norms_of));
            }
            CompactCopy::Wide(c) => {
                self.vectors.for_each_from(first_slot, |row| {
                    c.push_with(|out| compact::quantize_row(row, params.shift, out));
                    note(row, i16::LIMIT_BITS);
                });
            }
        }
    }

    /// The index's distance context over a compact copy.
    fn space<'a, C: Component>(&'a self, compact: &'a Rows<C>) -> Space<'a, C> {
        Space::new(
            compact,
            &self.compact_norms,
            self.spec.metric,
            compact::kernels_with(false),
        )
    }

    /// Bytes held in memory by the records, the compact copy, the index and derived maps
    /// (allocator overhead aside).
    pub fn memory_bytes(&self) -> u64 {
        let metadata: usize = self.metadata.values().map(|m| m.capacity() + 48).sum();
        let postings: usize = self.postings.values().map(|p| p.capacity() * 4 + 48).sum();
        (self.vectors.bytes() as usize
            + match &self.compact {
                CompactCopy::Narrow(c) => c.bytes() as usize,
                CompactCopy::Wide(c) => c.bytes() as usize,
            }
            + self.compact_norms.len() * 8
            + self.saturated.len() * 4
            + self.tags.bytes() as usize
            + self.live.bytes() as usize
            + metadata
            + postings) as u64
            + self.index.as_ref().map_or(0, Hnsw::memory_bytes)
            + self.extras.memory_bytes()
    }

    /// Bytes of full-precision vectors held in a [`crate::rows::ChunkStore`] rather than on
    /// the heap.
    pub fn stored_vector_bytes(&self) -> u64 {
        self.vectors.stored_bytes()
    }

    /// Keeps the full-precision vectors in `store` (on the heap with `None`), moving those
    /// held so far ([`Rows::place`]).
    pub(crate) fn place_vectors(&mut self, store: Option<&alloc::sync::Arc<dyn ChunkStore>>) {
        self.vectors.place(store);
    }

    /// Adopts `other`'s chunks of full-precision vectors, of the walk copy, of the per-slot
    /// tags, live flags, graph levels and upper-layer offsets, and with [`Share::Lists`] of the
    /// graph's layer-0 neighbour lists ([`Rows::share_from`], `Lists::adopt_from`); `other`
    /// must be this collection in an equal state.
    pub(crate) fn share_storage(&mut self, other: &Collection, parts: Share) {
        self.vectors.share_from(&other.vectors);
        self.tags.share_from(&other.tags);
        self.live.share_from(&other.live);
        if let (Some(mine), Some(theirs)) = (&mut self.index, &other.index) {
            mine.share_slots_from(theirs);
            if parts == Share::Lists {
                mine.share_lists_from(theirs);
            }
        }
        match (&mut self.compact, &other.compact) {
            (CompactCopy::Narrow(mine), CompactCopy::Narrow(theirs)) => {
                mine.share_from(theirs);
            }
            (CompactCopy::Wide(mine), CompactCopy::Wide(theirs)) => {
                mine.share_from(theirs);
            }
            _ => debug_assert!(false, "walk copies of different widths"),
        }
    }

    /// Calls `f` with the address and bytes of each chunk of full-precision vectors, of the
    /// walk copy, of the graph's layer-0 lists, levels and upper-layer offsets and of the tags
    /// and live flags: chunks shared with another state have the same address.
    pub(crate) fn visit_chunks(&self, f: &mut dyn FnMut(usize, u64)) {
        let compact: &mut dyn Iterator<Item = (usize, u64)> = match &self.compact {
            CompactCopy::Narrow(c) => &mut c.chunks(),
            CompactCopy::Wide(c) => &mut c.chunks(),
        };
        let graph = self.index.iter().flat_map(Hnsw::chunks);
        let slots = self.tags.chunks().chain(self.live.chunks());
        for (at, bytes) in self
            .vectors
            .chunks()
            .chain(compact)
            .chain(graph)
            .chain(slots)
        {
            f(at, bytes);
        }
    }

    /// Blake3 of the index's canonical encoding (`None` for flat collections).
    pub fn index_hash(&self) -> Option<[u8; 32]> {
        let index = self.index.as_ref()?;
        let mut h = blake3::Hasher::new();
        index.encode(&mut h);
        Some(*h.finalize().as_bytes())
    }

    pub(crate) fn push_stored(
        &mut self,
        stored: &[i32],
        tag: u64,
        metadata: Option<Vec<u8>>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let max_abs = distance::max_abs(stored);
        self.max_abs = self.max_abs.max(max_abs);
        self.or_bits |= stored.iter().fold(0, |acc, &x| acc | x as u32);
        self.magnitudes[compact::bit_length(max_abs)] += 1;
        self.vectors
            .push(stored, vectors::packing(self.or_bits, self.max_abs));
        self.tags.push(&[tag]);
        self.live.push(&[1]);
        self.postings.entry(tag).or_default().push(id as u32);
        if let Some(m) = metadata {
            self.metadata.insert(id, m);
        }
        self.live_count += 1;
        id
    }

    /// Deletes a live record. Its vector stays as a routing point of the index.
    pub(crate) fn remove(&mut self, id: u64) {
        let tag = self.tags.get(id as usize);
        if let Some(list) = self.postings.get_mut(&tag) {
            if let Ok(i) = list.binary_search(&(id as u32)) {
                list.remove(i);
            }
            if list.is_empty() {
                self.postings.remove(&tag);
            }
        }
        self.tags.set(id as usize, 0);
        self.live.set(id as usize, 0);
        self.metadata.remove(&id);
        self.extras.forget(id);
        self.live_count -= 1;
    }

    /// The distance bound for a query in stored form.
    pub(crate) fn bound_for(&self, query: &[i32]) -> Bound {
        Bound::new(
            self.spec.metric,
            self.spec.dimension,
            self.max_abs,
            distance::max_abs(query),
        )
    }

    /// Exact k nearest live records to `query` (stored form), optionally only those with
    /// `tag`, ordered by (distance, id).
    pub fn search_exact(&self, query: &[i32], k: usize, tag: Option<u64>) -> Vec<Hit> {
        match tag {
            Some(t) => self.search_among(
                query,
                k,
                self.postings
                    .get(&t)
                    .map_or(&[][..], |l| l.as_slice())
                    .iter()
                    .map(|&id| u64::from(id)),
            ),
            None => self.search_among(query, k, self.ids()),
        }
    }

    /// Exact k nearest among the given live ids, ordered by (distance, id).
    pub(crate) fn search_among(
        &self,
        query: &[i32],
        k: usize,
        ids: impl Iterator<Item = u64>,
    ) -> Vec<Hit> {
        let bound = self.bound_for(query);
        let metric = self.spec.metric;
        let mut heap: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
        let mut buf = Vec::new();
        let consider = |id: u64| {
            let v = self.vectors.row(id as usize, &mut buf);
            let hit = Hit {
                distance: distance::distance(metric, bound, query, v),
                id,
            };
            if heap.len() < k {
                heap.push(hit);
            } else if heap.peek().is_some_and(|worst| hit < *worst) {
                heap.pop();
                heap.push(hit);
            }
        };
        ids.for_each(consider);
        heap.into_sorted_vec()
    }

    /// The k nearest live records: through the index when there is one (`ef` candidates), else
    /// exactly. With a tag, only records carrying it, and as many as exist up to k: a tag with
    /// few records, or a filtered walk that comes back short, is answered by an exact scan of
    /// the tag.
    pub fn search(
        &self,
        query: &[i32],
        k: usize,
        ef: Option<usize>,
        tag: Option<u64>,
        scratch: &mut SearchScratch,
    ) -> Vec<Hit> {
        let Some(index) = &self.index else {
            return self.search_exact(query, k, tag);
        };
        let ef = ef.unwrap_or(usize::from(index.params().ef_search));
        match &self.compact {
            CompactCopy::Narrow(c) => self.search_index(index, c, query, k, ef, tag, scratch),
            CompactCopy::Wide(c) => self.search_index(index, c, query, k, ef, tag, scratch),
        }
    }

    /// [`Collection::search`] through the index, over its compact copy `compact`.
    #[allow(clippy::too_many_arguments)]
    fn search_index<C: Component>(
        &self,
        index: &Hnsw,
        compact: &Rows<C>,
        query: &[i32],
        k: usize,
        ef: usize,
        tag: Option<u64>,
        scratch: &mut SearchScratch,
    ) -> Vec<Hit> {
        let live = |s: u32| self.is_live(s as usize);
        match tag {
            None => self
                .walk(index, compact, query, k, ef, &live, 0, scratch)
                .unwrap_or_default(),
            Some(t) => {
                let count = self.postings.get(&t).map_or(0, |l| l.len() as u64);
                if count <= FILTER_SCAN_MAX {
                    return self.search_exact(query, k, tag);
                }
                let accept = |s: u32| live(s) && self.tags.get(s as usize) == t;
                let need = count.min(k as u64) as usize;
                self.walk(index, compact, query, k, ef, &accept, need, scratch)
                    .unwrap_or_else(|| self.search_exact(query, k, tag))
            }
        }
    }

    /// A walk of the index over the slots `accept` takes (it must refuse dead ones): exact
    /// hits by (distance, id), or `None` when the collection has no index or the walk found
    /// fewer than `need` slots.
    pub(crate) fn walk_index(
        &self,
        query: &[i32],
        k: usize,
        ef: Option<usize>,
        accept: &dyn Fn(u32) -> bool,
        need: usize,
        scratch: &mut SearchScratch,
    ) -> Option<Vec<Hit>> {
        let index = self.index.as_ref()?;
        let ef = ef.unwrap_or(usize::from(index.params().ef_search));
        match &self.compact {
            CompactCopy::Narrow(c) => self.walk(index, c, query, k, ef, accept, need, scratch),
            CompactCopy::Wide(c) => self.walk(index, c, query, k, ef, accept, need, scratch),
        }
    }

    /// See [`Collection::walk_index`].
    #[allow(clippy::too_many_arguments)]
    fn walk<C: Component>(
        &self,
        index: &Hnsw,
        compact: &Rows<C>,
        query: &[i32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
        need: usize,
        scratch: &mut SearchScratch,
    ) -> Option<Vec<Hit>> {
        let compact::Params { shift, exact, .. } = self.compact_params;
        // Aligned like the rows it is compared with.
        let mut q = Lines::new();
        let in_range = compact::quantize_query(query, shift, &mut q);
        // A query beyond the stored range, or whose own low bits are not zero, cannot use the
        // exact conversion: its candidates are re-ranked by the full distance.
        let exact = exact
            && in_range
            && query
                .iter()
                .fold(0u32, |a, &x| a | x as u32)
                .trailing_zeros()
                >= shift;
        let space = self.space(compact);
        let mut found = index.search(&space, &space.probe_query(&q), k, ef, accept, scratch);
        if found.len() < need {
            return None;
        }
        // Saturated records' walk distances are only rough, so a walk may miss one even when
        // the query is the record itself: they are always candidates (the copy is then not
        // exact, so `finish` re-ranks every candidate by its exact distance).
        for &slot in &self.saturated {
            if accept(slot) && !found.iter().any(|&(_, s)| s == slot) {
                found.push((0, slot));
            }
        }
        Some(self.finish(query, found, k, exact, in_range))
    }

    /// Drops from `found` (a walk's candidates, ascending by compact distance, then any
    /// saturated slots) those whose exact distance exceeds that of `k` others for certain, so
    /// that the re-rank reads fewer full vectors and returns the same hits. For L2 and cosine
    /// (squared L2 of unit vectors), and only for a query the compact range holds: then each
    /// component of a stored vector and of the query is its compact value times `2^shift` plus
    /// a remainder in `[0, 2^shift)`, so the exact difference vector is the compact one scaled
    /// (`sqrt(U)`, `U = d * 4^shift` for compact distance `d`) plus a vector of norm at most
    /// `W = (2^shift - 1) * sqrt(dim)`. The `k`-th candidate whose compact value is exact (not
    /// saturated) bounds the `k` nearest: each of the first `k` lies within
    /// `(ceil(sqrt(U_k)) + W)^2`. A candidate with `sqrt(U) > 2W + ceil(sqrt(U_k))` lies beyond
    /// that, farther than all `k` of them, and cannot be a hit. Integer arithmetic throughout.
    fn prune(&self, found: &mut Vec<(i64, u32)>, k: usize) {
        if !matches!(self.spec.metric, Metric::L2 | Metric::Cosine) || k == 0 || found.len() <= k {
            return;
        }
        let saturated = |slot: u32| self.saturated.binary_search(&slot).is_ok();
        let Some(kth) = found
            .iter()
            .filter(|&&(_, slot)| !saturated(slot))
            .nth(k - 1)
            .and_then(|&(d, _)| u128::try_from(d).ok())
        else {
            return;
        };
        let ceil_sqrt = |x: u128| {
            let r = x.isqrt();
            if r * r < x {
                r + 1
            } else {
                r
            }
        };
        let shift = 2 * self.compact_params.shift;
        let step = (1u128 << self.compact_params.shift) - 1;
        let w = ceil_sqrt(step * step * self.dim() as u128);
        let reach = 2 * w + ceil_sqrt(kth << shift);
        let limit = (reach + 1) * (reach + 1);
        found.retain(|&(d, slot)| {
            saturated(slot) || u128::try_from(d).map_or(true, |d| (d << shift) < limit)
        });
    }

    /// Turns compact results into exact hits: by scaling when the compact copy is exact for
    /// this query, else by re-ranking every candidate with the full-width distance.
    /// `bounded`: the query lies in the compact range, so candidates may be pruned first
    /// ([`Collection::prune`]).
    fn finish(
        &self,
        query: &[i32],
        mut found: Vec<(i64, u32)>,
        k: usize,
        exact: bool,
        bounded: bool,
    ) -> Vec<Hit> {
        let metric = self.spec.metric;
        if exact {
            // Compact distances are the exact ones divided by 2^(2 * shift) (squared L2 for L2
            // and cosine, the negated dot product for inner product).
            let shift = 2 * self.compact_params.shift;
            return found
                .into_iter()
                .take(k)
                .map(|(d, slot)| Hit {
                    distance: i128::from(d) << shift,
                    id: u64::from(slot),
                })
                .collect();
        }
        if bounded {
            self.prune(&mut found, k);
        }
        let bound = self.bound_for(query);
        // Candidates lie at random places: each one's full vector is requested two candidates
        // ahead of its distance, so the loads overlap the arithmetic.
        let ahead = |i: usize| {
            if let Some(&(_, slot)) = found.get(i) {
                self.vectors.prefetch(slot as usize);
            }
        };
        ahead(0);
        ahead(1);
        let mut hits: Vec<Hit> = Vec::with_capacity(found.len());
        let mut buf = Vec::new();
        for (i, &(_, slot)) in found.iter().enumerate() {
            ahead(i + 2);
            let v = self.vectors.row(slot as usize, &mut buf);
            hits.push(Hit {
                distance: distance::distance(metric, bound, query, v),
                id: u64::from(slot),
            });
        }
        hits.sort_unstable();
        hits.truncate(k);
        hits
    }

    /// Canonical encoding: spec, then every slot in id order: a live flag, and for a live
    /// record its tag and metadata, then the vector. A deleted record keeps its vector as a
    /// routing point of the index, so it stays part of the state (see ARCHITECTURE.md).
    pub(crate) fn encode(&self, out: &mut impl Sink, extras: bool) {
        encode_spec(&self.spec, out);
        out.put_u64(self.next_id);
        let mut buf = Vec::with_capacity(self.dim() * 4);
        let mut row = Vec::new();
        for id in 0..self.next_id {
            if self.is_live(id as usize) {
                out.put_u8(1);
                out.put_u64(self.tags.get(id as usize));
                out.put_opt_bytes(self.metadata.get(&id).map(|m| m.as_slice()));
            } else {
                out.put_u8(0);
            }
            buf.clear();
            for x in self.vectors.row(id as usize, &mut row) {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            out.put(&buf);
        }
        if let Some(index) = &self.index {
            index.encode(out);
        }
        if extras {
            self.encode_extras(out);
        }
    }

    /// Decodes [`Collection::encode`]'s output, checking every invariant it relies on.
    /// Its vectors are decoded into `store` when one is given.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        extras: bool,
        store: Option<&alloc::sync::Arc<dyn ChunkStore>>,
    ) -> Result<Self, DecodeError> {
        let spec = decode_spec(r)?;
        check_spec(&spec).map_err(|_| DecodeError::Invalid("collection definition"))?;
        let slots = r.u64()?;
        let dim = spec.dimension as usize;
        // Every slot takes at least 1 + 4 * dim bytes: refuse counts the input cannot hold, so
        // a forged counter cannot make decoding allocate without limit.
        if slots.saturating_mul(1 + 4 * dim as u64) > r.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let mut c = Collection::new(spec);
        c.place_vectors(store);
        let mut vector = alloc::vec![0i32; dim];
        for _ in 0..slots {
            let live = match r.u8()? {
                0 => None,
                1 => {
                    let tag = r.u64()?;
                    let metadata = r.opt_bytes("metadata", MAX_METADATA_BYTES)?;
                    Some((tag, metadata))
                }
                tag => return Err(DecodeError::UnknownTag { what: "slot", tag }),
            };
            for x in vector.iter_mut() {
                *x = r.i32()?;
            }
            match live {
                Some((tag, metadata)) => {
                    c.push_stored(&vector, tag, metadata);
                }
                None => {
                    let id = c.push_stored(&vector, 0, None);
                    c.remove(id);
                }
            }
        }
        if let IndexSpec::Hnsw(p) = c.spec.index {
            c.index = Some(Hnsw::decode(p, slots, r)?);
            c.refresh_compact(0);
        }
        if extras {
            c.decode_extras(r)?;
        }
        Ok(c)
    }
}

/// Checks a collection definition on its own.
pub(crate) fn check_spec(spec: &CollectionSpec) -> Result<(), Error> {
    let name = &spec.name;
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES as usize
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid_name {
        return Err(Error::InvalidName { name: name.clone() });
    }
    if spec.dimension == 0 || spec.dimension > MAX_DIMENSION {
        return Err(Error::InvalidDimension {
            dimension: spec.dimension,
            max: MAX_DIMENSION,
        });
    }
    if let crate::event::IndexSpec::Hnsw(p) = spec.index {
        for (param, value, min, max) in [
            ("m", p.m, MIN_HNSW_M, MAX_HNSW_M),
            ("ef_construction", p.ef_construction, 1, MAX_EF),
            ("ef_search", p.ef_search, 1, MAX_EF),
        ] {
            if !(min..=max).contains(&value) {
                return Err(Error::InvalidIndexParams {
                    param,
                    value: value.into(),
                    min: min.into(),
                    max: max.into(),
                });
            }
        }
    }
    Ok(())
}

/// Checks what a batch must satisfy whatever its collection: size and metadata limits.
pub(crate) fn check_batch_shape(records: &[NewRecord]) -> Result<(), Error> {
    check_batch_len(records.len())?;
    records
        .iter()
        .try_for_each(|rec| check_metadata(rec.metadata.as_deref()))
}

/// A batch holds 1 to [`MAX_BATCH_RECORDS`] records (inserts and upserts alike).
pub(crate) fn check_batch_len(len: usize) -> Result<(), Error> {
    if len == 0 {
        return Err(Error::EmptyBatch);
    }
    if len > MAX_BATCH_RECORDS as usize {
        return Err(Error::TooLarge {
            what: "batch (records)",
            len: len as u64,
            max: u64::from(MAX_BATCH_RECORDS),
        });
    }
    Ok(())
}

/// Metadata is at most [`MAX_METADATA_BYTES`].
pub(crate) fn check_metadata(metadata: Option<&[u8]>) -> Result<(), Error> {
    match metadata {
        Some(m) if m.len() > MAX_METADATA_BYTES as usize => Err(Error::TooLarge {
            what: "metadata",
            len: m.len() as u64,
            max: u64::from(MAX_METADATA_BYTES),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::HnswParams;
    use crate::exec::Sequential;

    /// A walk's candidates for `query` as [`Collection::walk`] gathers them, and whether the
    /// query lies in the compact range.
    fn candidates(c: &Collection, query: &[i32], ef: usize) -> (Vec<(i64, u32)>, bool) {
        let CompactCopy::Narrow(rows) = &c.compact else {
            panic!("a narrow walk copy was expected");
        };
        let mut q = Lines::new();
        let in_range = compact::quantize_query(query, c.compact_params.shift, &mut q);
        let space = c.space(rows);
        let index = c.index.as_ref().expect("an index");
        let mut scratch = SearchScratch::new();
        let probe = space.probe_query(&q);
        let mut found = index.search(&space, &probe, ef, ef, &|_| true, &mut scratch);
        for &slot in &c.saturated {
            if !found.iter().any(|&(_, s)| s == slot) {
                found.push((0, slot));
            }
        }
        (found, in_range)
    }

    /// Pruning before the re-rank returns exactly the hits of re-ranking every candidate, for
    /// L2 and cosine, on a narrow walk copy that is not exact and holds saturated vectors, for
    /// k from 1 to past the number of candidates; and it does prune.
    #[test]
    fn pruning_keeps_the_hits_of_a_full_rerank() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x = crate::hnsw::splitmix64(x);
            x
        };
        for metric in [Metric::L2, Metric::Cosine] {
            let dim = 96usize;
            let mut c = Collection::new(CollectionSpec {
                name: "p".into(),
                dimension: dim as u32,
                metric,
                index: IndexSpec::Hnsw(HnswParams {
                    m: 8,
                    ef_construction: 48,
                    ef_search: 32,
                }),
            });
            // Clusters, and two vectors far larger than the rest (the most that 2,048 vectors
            // may saturate).
            let centres: Vec<Vec<i32>> = (0..8)
                .map(|_| {
                    (0..dim)
                        .map(|_| (next() % 40_001) as i32 - 20_000)
                        .collect()
                })
                .collect();
            // Each point at its own spread around its centre, so that candidates lie at
            // distances far apart.
            let point = |centre: &[i32], next: &mut dyn FnMut() -> u64| -> Vec<Fixed> {
                let spread = 100 + next() % 6_000;
                centre
                    .iter()
                    .map(|&v| Fixed(v + (next() % (2 * spread + 1)) as i32 - spread as i32))
                    .collect()
            };
            let mut records: Vec<NewRecord> = (0..2048)
                .map(|i| NewRecord {
                    vector: point(&centres[i % 8], &mut next),
                    tag: 0,
                    metadata: None,
                })
                .collect();
            for (i, r) in records[..2].iter_mut().enumerate() {
                // A spike: one component, far beyond the others' range (also once scaled to
                // unit length).
                r.vector = (0..dim).map(|j| Fixed(i32::from(j == i) << 28)).collect();
            }
            c.check_insert(&records).unwrap();
            c.insert(&records, Build::Run(&Sequential, None));
            assert!(!c.compact_params.exact);
            assert_eq!(c.compact_params.width, compact::Width::Narrow);
            assert_eq!(c.saturated.len(), 2, "{metric:?}");
            let mut pruned = 0;
            for qi in 0..30 {
                let raw = point(&centres[qi % 8], &mut next);
                let query = c.stored_form(&raw, 0).unwrap();
                for ef in [16, 64] {
                    let (found, in_range) = candidates(&c, &query, ef);
                    assert!(in_range);
                    for k in [1, 3, 10, 40, 100] {
                        let mut kept = found.clone();
                        c.prune(&mut kept, k);
                        pruned += found.len() - kept.len();
                        let full = c.finish(&query, found.clone(), k, false, false);
                        let fast = c.finish(&query, found.clone(), k, false, true);
                        assert_eq!(fast, full, "{metric:?} query {qi} ef {ef} k {k}");
                    }
                }
            }
            assert!(pruned > 0, "{metric:?}: nothing was pruned");
        }
    }
}
