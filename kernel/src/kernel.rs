//! The state machine: collections and the graph, changed only by [`Kernel::apply`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::codec::{DecodeError, Reader, Sink};
use crate::collection::{check_batch_shape, check_spec, Build, Collection, Hit, Record};
use crate::error::Error;
use crate::event::{
    CollectionSpec, Event, HnswParams, IndexSpec, KeyedRecord, Metric, NewRecord, RecordRef, Target,
};
use crate::exec::{Executor, Sequential};
use crate::filter::Filter;
use crate::fixed::Fixed;
use crate::graph::{Direction, Edge, Graph, Neighbor, Node, Traversal};
use crate::hnsw::{BuildLog, SearchScratch};
use crate::limits::*;
use crate::rows::ChunkStore;

/// A blake3 hash.
pub type Hash = [u8; 32];

/// The chain hash before the first event.
pub const GENESIS_CHAIN: Hash = [0; 32];

/// Version of the canonical state encoding (the state hash's input and the snapshot body) of a
/// state that uses no keys, payloads, documents or payload indexes: such a state encodes
/// exactly as before they existed.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Version of the state encoding when some collection has keys, payloads, documents or payload
/// indexes: each collection then appends them ([`crate::keyed`]).
pub const STATE_FORMAT_VERSION_EXTRAS: u32 = 2;

/// `h_n = blake3(h_{n-1} || encode(event_n))`.
pub fn chain_next(prev: &Hash, encoded_event: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(encoded_event);
    *h.finalize().as_bytes()
}

/// What an applied event produced.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Applied {
    /// Nothing to report (collection created or dropped, record/node/edge deleted).
    Done,
    /// Records inserted with ids `first .. first + count`.
    Inserted {
        /// First id.
        first: u64,
        /// How many.
        count: u32,
    },
    /// A graph node was created.
    Node(u64),
    /// A graph edge was created.
    Edge(u64),
    /// An upsert wrote records with these ids, in the batch's order.
    Upserted {
        /// One id per record.
        ids: Vec<u64>,
    },
    /// A write by target deleted or changed this many records.
    Affected(u64),
}

/// Which parts of a state's storage [`Kernel::share_storage`] shares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Share {
    /// The full-precision vectors, the walk copy and the per-slot values (tags, live flags,
    /// graph levels and upper-layer offsets). Writes append to them (a delete rewrites one
    /// flag and one tag), so two states that share them and go on writing copy only their
    /// last chunks.
    Appended,
    /// Those and the chunks of the graph's layer-0 neighbour lists that the other state holds
    /// whole (no list written over them apart), the sharing state dropping its own lists
    /// written apart over them. Every insert rewrites lists all over the graph; a state writes
    /// a list over a chunk it shares apart from the chunk, until enough are apart to fold them
    /// into a copy of it (`kernel/src/lists.rs`).
    Lists,
}

/// How to repeat one applied event on an equal state cheaply ([`Kernel::replay`]): for an
/// insert into an indexed collection, the lists its index build wrote; for any other event,
/// nothing (applying it again is cheap).
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Replay(Option<BuildLog>);

impl Replay {
    /// Bytes the replay holds.
    pub fn memory_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, BuildLog::memory_bytes)
    }
}

/// Parameters of a search.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SearchParams {
    /// How many results, 1 to [`MAX_K`].
    pub k: u32,
    /// Only records with this tag.
    pub tag: Option<u64>,
    /// Candidate list size for indexed collections (defaults to the collection's `ef_search`).
    pub ef: Option<u32>,
}

/// The deterministic state machine.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Kernel {
    collections: BTreeMap<String, Collection>,
    graph: Graph,
    seq: u64,
    chain: Hash,
    /// Where collections keep their full-precision vectors ([`Kernel::place_vectors`]).
    vectors_in: Placement,
}

/// A store for the full-precision vectors, or the heap. Where bytes live is not part of the
/// state: any two placements compare equal.
#[derive(Clone, Default)]
struct Placement(Option<Arc<dyn ChunkStore>>);

impl PartialEq for Placement {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Placement {}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "store" } else { "heap" })
    }
}

impl Kernel {
    /// An empty state at sequence number 0.
    pub fn new() -> Self {
        Kernel::default()
    }

    /// Number of events applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Chain hash after the last applied event ([`GENESIS_CHAIN`] before any).
    pub fn chain_hash(&self) -> Hash {
        self.chain
    }

    /// A collection by name.
    pub fn collection(&self, name: &str) -> Option<&Collection> {
        self.collections.get(name)
    }

    /// All collections, by name.
    pub fn collections(&self) -> impl Iterator<Item = &Collection> {
        self.collections.values()
    }

    /// The knowledge graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The live record a node's link names now: the id while that record lives, or the record
    /// that holds the key (so a key link follows the key through upserts). `None` when there is
    /// none (the link is weak).
    pub fn linked_record(&self, link: &RecordRef) -> Option<u64> {
        let c = self.collections.get(link.collection())?;
        match link {
            RecordRef::Id { id, .. } => c.contains(*id).then_some(*id),
            RecordRef::Key { key, .. } => c.id_of(key),
        }
    }

    fn collection_or_err(&self, name: &str) -> Result<&Collection, Error> {
        self.collections
            .get(name)
            .ok_or_else(|| Error::CollectionNotFound { name: name.into() })
    }

    /// The collection spec an insert into a missing default collection creates.
    fn implicit_default(name: &str, records: &[NewRecord]) -> Option<CollectionSpec> {
        if name != DEFAULT_COLLECTION {
            return None;
        }
        Some(CollectionSpec {
            name: name.into(),
            dimension: records.first()?.vector.len() as u32,
            metric: Metric::L2,
            index: IndexSpec::Hnsw(HnswParams::default()),
        })
    }

    /// The collection an upsert writes to: an existing one, or the default collection it
    /// would create.
    fn upsert_target(&self, name: &str, records: &[KeyedRecord]) -> Result<Collection, Error> {
        let first = records.first().ok_or(Error::EmptyBatch)?;
        let spec = Self::implicit_default(
            name,
            &[NewRecord {
                vector: first.vector.clone(),
                tag: 0,
                metadata: None,
            }],
        )
        .ok_or_else(|| Error::CollectionNotFound { name: name.into() })?;
        check_spec(&spec)?;
        Ok(Collection::new(spec))
    }

    /// Checks a write by target and returns the ids it resolves to.
    fn check_targeted(
        &self,
        collection: &str,
        target: &Target,
        max_affected: Option<u64>,
    ) -> Result<Vec<u64>, Error> {
        let c = self.collection_or_err(collection)?;
        Collection::check_target(target)?;
        let ids = c.resolve(target);
        if let Some(max) = max_affected {
            if ids.len() as u64 > max {
                return Err(Error::TooManyAffected {
                    matched: ids.len() as u64,
                    max,
                });
            }
        }
        Ok(ids)
    }

    /// Checks `event` against the current state without changing anything ("shadow
    /// execution"). [`Kernel::apply`] succeeds exactly when this does.
    pub fn validate(&self, event: &Event) -> Result<(), Error> {
        match event {
            Event::Upsert {
                collection,
                mode,
                records,
            } => match self.collections.get(collection) {
                Some(c) => c.check_upsert(*mode, records),
                None => self
                    .upsert_target(collection, records)?
                    .check_upsert(*mode, records),
            },
            Event::DeleteRecords {
                collection,
                target,
                max_affected,
            } => self
                .check_targeted(collection, target, *max_affected)
                .map(|_| ()),
            Event::SetPayload {
                collection,
                target,
                payload,
                mode,
                max_affected,
            } => {
                let ids = self.check_targeted(collection, target, *max_affected)?;
                self.collection_or_err(collection)?
                    .check_set_payload(&ids, payload, *mode)
            }
            Event::DeletePayloadKeys {
                collection,
                target,
                keys,
                max_affected,
            } => {
                if keys.is_empty() || keys.len() > MAX_FILTER_VALUES as usize {
                    return Err(Error::InvalidPayload {
                        at: "keys".into(),
                        reason: alloc::format!(
                            "name 1 to {MAX_FILTER_VALUES} payload keys to delete"
                        ),
                    });
                }
                self.check_targeted(collection, target, *max_affected)
                    .map(|_| ())
            }
            Event::CreatePayloadIndex {
                collection, field, ..
            } => self
                .collection_or_err(collection)?
                .check_create_index(field),
            Event::DropPayloadIndex { collection, field } => {
                self.collection_or_err(collection)?.check_drop_index(field)
            }
            Event::CreateCollection(spec) => {
                check_spec(spec)?;
                if self.collections.contains_key(&spec.name) {
                    return Err(Error::CollectionExists {
                        name: spec.name.clone(),
                    });
                }
                Ok(())
            }
            Event::DropCollection { name } => self.collection_or_err(name).map(|_| ()),
            Event::Insert {
                collection,
                records,
            } => match self.collections.get(collection) {
                Some(c) => c.check_insert(records),
                None => {
                    check_batch_shape(records)?;
                    let spec = Self::implicit_default(collection, records).ok_or_else(|| {
                        Error::CollectionNotFound {
                            name: collection.clone(),
                        }
                    })?;
                    check_spec(&spec)?;
                    Collection::new(spec).check_insert(records)
                }
            },
            Event::Delete { collection, id } => {
                let c = self.collection_or_err(collection)?;
                if c.contains(*id) {
                    Ok(())
                } else {
                    Err(Error::RecordNotFound {
                        collection: collection.clone(),
                        id: *id,
                    })
                }
            }
            Event::CreateNode {
                kind,
                record,
                properties,
            } => {
                check_kind(kind)?;
                match record {
                    Some(RecordRef::Id { collection, id })
                        if !self.collection_or_err(collection)?.contains(*id) =>
                    {
                        return Err(Error::RecordNotFound {
                            collection: collection.clone(),
                            id: *id,
                        });
                    }
                    Some(RecordRef::Key { collection, key }) => {
                        crate::filter::check_record_key(key)?;
                        if self.collection_or_err(collection)?.id_of(key).is_none() {
                            return Err(Error::KeyNotFound { key: key.clone() });
                        }
                    }
                    _ => {}
                }
                if let Some(p) = properties {
                    if p.len() > MAX_METADATA_BYTES as usize {
                        return Err(Error::TooLarge {
                            what: "node properties",
                            len: p.len() as u64,
                            max: u64::from(MAX_METADATA_BYTES),
                        });
                    }
                }
                if self.graph.next_node == u64::MAX {
                    return Err(Error::IdsExhausted);
                }
                Ok(())
            }
            Event::DeleteNode { id } => self.node_or_err(*id),
            Event::CreateEdge { from, to, kind } => {
                check_kind(kind)?;
                self.node_or_err(*from)?;
                self.node_or_err(*to)?;
                if self.graph.next_edge == u64::MAX {
                    return Err(Error::IdsExhausted);
                }
                Ok(())
            }
            Event::DeleteEdge { id } => {
                if self.graph.edge(*id).is_some() {
                    Ok(())
                } else {
                    Err(Error::EdgeNotFound { id: *id })
                }
            }
        }
    }

    fn node_or_err(&self, id: u64) -> Result<(), Error> {
        if self.graph.node(id).is_some() {
            Ok(())
        } else {
            Err(Error::NodeNotFound { id })
        }
    }

    /// Keeps every collection's full-precision vectors in `store` from now on (on the heap with
    /// `None`): those held so far are moved there, and collections created later take their
    /// chunks from it too. Copies of this state keep the placement. Only where the bytes live
    /// changes: values, results, encodings and hashes are those of the heap.
    pub fn place_vectors(&mut self, store: Option<Arc<dyn ChunkStore>>) {
        for c in self.collections.values_mut() {
            c.place_vectors(store.as_ref());
        }
        self.vectors_in = Placement(store);
    }

    /// Bytes of full-precision vectors held in the store [`Kernel::place_vectors`] named.
    pub fn stored_vector_bytes(&self) -> u64 {
        self.collections
            .values()
            .map(Collection::stored_vector_bytes)
            .sum()
    }

    /// Adds a collection created by an event, its vectors where this state keeps them.
    fn add_collection(&mut self, name: &str, mut c: Collection) {
        c.place_vectors(self.vectors_in.0.as_ref());
        self.collections.insert(name.into(), c);
    }

    /// Makes this state hold the parts of its storage that `parts` names in `other`'s memory,
    /// so that one copy serves both from now on (a later write to either copies only the chunks
    /// it touches). Both must be the same state (the same events applied: equal sequence number
    /// and chain hash), else nothing changes and this returns false. Values, encodings and
    /// hashes are unaffected: only where the bytes live.
    pub fn share_storage(&mut self, other: &Kernel, parts: Share) -> bool {
        if self.seq != other.seq || self.chain != other.chain {
            return false;
        }
        for (name, c) in &mut self.collections {
            if let Some(o) = other.collections.get(name) {
                c.share_storage(o, parts);
            }
        }
        true
    }

    /// Bytes of full-precision vectors, walk copies, layer-0 neighbour lists and per-slot
    /// values (those [`Share`] names) that `states` hold between them, each chunk counted once
    /// however many of them share it ([`Kernel::share_storage`]). For one state, the bytes of
    /// those parts.
    pub fn held_bytes(states: &[&Kernel]) -> u64 {
        let mut seen = alloc::collections::BTreeSet::new();
        let mut held = 0;
        for state in states {
            for c in state.collections.values() {
                c.visit_chunks(&mut |at, bytes| {
                    if seen.insert(at) {
                        held += bytes;
                    }
                });
            }
        }
        held
    }

    /// Bytes of the parts [`Kernel::held_bytes`] counts that this state and `other` hold in the
    /// same memory.
    pub fn shared_bytes(&self, other: &Kernel) -> u64 {
        Kernel::held_bytes(&[self]) + Kernel::held_bytes(&[other])
            - Kernel::held_bytes(&[self, other])
    }

    /// Applies one event: validates it completely, then mutates, advances the sequence number
    /// and extends the chain hash. On error nothing changes.
    pub fn apply(&mut self, event: &Event) -> Result<Applied, Error> {
        self.validate(event)?;
        let encoded = event.encode();
        Ok(self.apply_validated(event, &encoded, Build::Run(&Sequential, None)))
    }

    /// [`Kernel::apply`] for an event whose canonical encoding the caller already has (a log
    /// entry), with index construction run by `exec`. `encoded` must be `event.encode()`.
    /// The resulting state is identical whatever the executor.
    pub fn apply_with<E: Executor>(
        &mut self,
        event: &Event,
        encoded: &[u8],
        exec: &E,
    ) -> Result<Applied, Error> {
        self.validate(event)?;
        debug_assert_eq!(event.encode(), encoded);
        Ok(self.apply_validated(event, encoded, Build::Run(exec, None)))
    }

    /// [`Kernel::apply_with`], also returning how to repeat the event on another state equal
    /// to this one's before it ([`Kernel::replay`]) without redoing its expensive part: the
    /// index build of an insert is recorded as the lists it wrote. How the node keeps a second
    /// copy of the state for its readers while it builds the next one.
    pub fn apply_recorded<E: Executor>(
        &mut self,
        event: &Event,
        encoded: &[u8],
        exec: &E,
    ) -> Result<(Applied, Replay), Error> {
        self.validate(event)?;
        debug_assert_eq!(event.encode(), encoded);
        let mut log = BuildLog::default();
        let applied = self.apply_validated(event, encoded, Build::Run(exec, Some(&mut log)));
        let indexed = matches!(event, Event::Insert { .. } | Event::Upsert { .. })
            && log != BuildLog::default();
        Ok((applied, Replay(indexed.then_some(log))))
    }

    /// Applies an event as [`Kernel::apply_recorded`] did on an equal state, from its
    /// [`Replay`]: the same state results, with the index lists copied instead of searched
    /// for. The event is validated as always; the replay must come from an equal state (the
    /// caller's invariant: replaying onto a different state gives a state no log describes).
    pub fn replay(
        &mut self,
        event: &Event,
        encoded: &[u8],
        replay: &Replay,
    ) -> Result<Applied, Error> {
        self.validate(event)?;
        debug_assert_eq!(event.encode(), encoded);
        Ok(match &replay.0 {
            Some(log) => self.apply_validated::<Sequential>(event, encoded, Build::Replay(log)),
            None => self.apply_validated(event, encoded, Build::Run(&Sequential, None)),
        })
    }

    fn apply_validated<E: Executor>(
        &mut self,
        event: &Event,
        encoded: &[u8],
        build: Build<'_, E>,
    ) -> Applied {
        let applied = match event {
            Event::CreateCollection(spec) => {
                self.add_collection(&spec.name, Collection::new(spec.clone()));
                Applied::Done
            }
            Event::DropCollection { name } => {
                self.collections.remove(name);
                Applied::Done
            }
            Event::Insert {
                collection,
                records,
            } => {
                if !self.collections.contains_key(collection) {
                    let spec = Self::implicit_default(collection, records)
                        .expect("validated: the default collection may be created");
                    self.add_collection(collection, Collection::new(spec));
                }
                let c = self
                    .collections
                    .get_mut(collection)
                    .expect("validated: collection exists");
                let first = c.insert(records, build);
                Applied::Inserted {
                    first,
                    count: records.len() as u32,
                }
            }
            Event::Delete { collection, id } => {
                self.collections
                    .get_mut(collection)
                    .expect("validated: collection exists")
                    .remove(*id);
                Applied::Done
            }
            Event::CreateNode {
                kind,
                record,
                properties,
            } => Applied::Node(self.graph.add_node(Node {
                kind: kind.clone(),
                record: record.clone(),
                properties: properties.clone(),
            })),
            Event::DeleteNode { id } => {
                self.graph.remove_node(*id);
                Applied::Done
            }
            Event::CreateEdge { from, to, kind } => Applied::Edge(self.graph.add_edge(Edge {
                from: *from,
                to: *to,
                kind: kind.clone(),
            })),
            Event::DeleteEdge { id } => {
                self.graph.remove_edge(*id);
                Applied::Done
            }
            Event::Upsert {
                collection,
                records,
                ..
            } => {
                if !self.collections.contains_key(collection) {
                    let c = self
                        .upsert_target(collection, records)
                        .expect("validated: the default collection may be created");
                    self.add_collection(collection, c);
                }
                let c = self
                    .collections
                    .get_mut(collection)
                    .expect("validated: collection exists");
                Applied::Upserted {
                    ids: c.upsert(records, build),
                }
            }
            Event::DeleteRecords {
                collection, target, ..
            } => {
                let c = self
                    .collections
                    .get_mut(collection)
                    .expect("validated: collection exists");
                let ids = c.resolve(target);
                for &id in &ids {
                    c.remove(id);
                }
                Applied::Affected(ids.len() as u64)
            }
            Event::SetPayload {
                collection,
                target,
                payload,
                mode,
                ..
            } => {
                let c = self
                    .collections
                    .get_mut(collection)
                    .expect("validated: collection exists");
                let ids = c.resolve(target);
                c.set_payload(&ids, payload, *mode);
                Applied::Affected(ids.len() as u64)
            }
            Event::DeletePayloadKeys {
                collection,
                target,
                keys,
                ..
            } => {
                let c = self
                    .collections
                    .get_mut(collection)
                    .expect("validated: collection exists");
                let ids = c.resolve(target);
                Applied::Affected(c.delete_payload_keys(&ids, keys))
            }
            Event::CreatePayloadIndex {
                collection,
                field,
                kind,
            } => {
                self.collections
                    .get_mut(collection)
                    .expect("validated: collection exists")
                    .create_index(field, *kind);
                Applied::Done
            }
            Event::DropPayloadIndex { collection, field } => {
                self.collections
                    .get_mut(collection)
                    .expect("validated: collection exists")
                    .drop_index(field);
                Applied::Done
            }
        };
        self.chain = chain_next(&self.chain, encoded);
        self.seq += 1;
        applied
    }

    /// A live record.
    pub fn get(&self, collection: &str, id: u64) -> Result<Record<'_>, Error> {
        self.collection_or_err(collection)?
            .get(id)
            .ok_or_else(|| Error::RecordNotFound {
                collection: collection.into(),
                id,
            })
    }

    /// The `k` nearest live records to `query`, ordered by (distance, id). With a tag, only
    /// records carrying it are returned, and as many as exist up to `k`.
    pub fn search(
        &self,
        collection: &str,
        query: &[Fixed],
        params: &SearchParams,
    ) -> Result<Vec<Hit>, Error> {
        self.search_with(collection, query, params, &mut SearchScratch::new())
    }

    /// [`Kernel::search`] with caller-owned scratch memory (keep one per thread for speed).
    /// The results do not depend on the scratch's history.
    pub fn search_with(
        &self,
        collection: &str,
        query: &[Fixed],
        params: &SearchParams,
        scratch: &mut SearchScratch,
    ) -> Result<Vec<Hit>, Error> {
        let c = self.collection_or_err(collection)?;
        Self::check_search(params)?;
        let q = c.stored_form(query, 0)?;
        Ok(c.search(
            &q,
            params.k as usize,
            params.ef.map(|ef| ef as usize),
            params.tag,
            scratch,
        ))
    }

    /// Checks a search's `k` and `ef`.
    fn check_search(params: &SearchParams) -> Result<(), Error> {
        if params.k == 0 || params.k > MAX_K {
            return Err(Error::InvalidSearch {
                param: "k",
                value: params.k,
                min: 1,
                max: MAX_K,
            });
        }
        if let Some(ef) = params.ef.filter(|&ef| ef == 0 || ef > u32::from(MAX_EF)) {
            return Err(Error::InvalidSearch {
                param: "ef",
                value: ef,
                min: 1,
                max: MAX_EF.into(),
            });
        }
        Ok(())
    }

    /// The `k` nearest live records that match `filter` (and `params.tag`, when given),
    /// ordered by (distance, id): never a record the filter does not match, and never fewer
    /// than `min(k, matches)`; `exact` scans the matches instead of walking the index. See
    /// [`Collection::search_filtered`]. An empty filter without `exact` is the plain search
    /// ([`Kernel::search_with`]), tag and all.
    pub fn search_filtered(
        &self,
        collection: &str,
        query: &[Fixed],
        params: &SearchParams,
        filter: &Filter,
        exact: bool,
        scratch: &mut SearchScratch,
    ) -> Result<Vec<Hit>, Error> {
        if filter.is_empty() && !exact {
            return self.search_with(collection, query, params, scratch);
        }
        let c = self.collection_or_err(collection)?;
        Self::check_search(params)?;
        filter.check()?;
        let q = c.stored_form(query, 0)?;
        let ef = params.ef.map(|ef| ef as usize);
        Ok(match params.tag {
            None => c.search_filtered(&q, params.k as usize, ef, filter, exact, scratch),
            Some(tag) => {
                let with_tag = Filter {
                    must: alloc::vec![
                        crate::filter::Condition::Tag(alloc::vec![tag]),
                        crate::filter::Condition::Nested(filter.clone()),
                    ],
                    ..Filter::default()
                };
                c.search_filtered(&q, params.k as usize, ef, &with_tag, exact, scratch)
            }
        })
    }

    /// How many live records match a filter (exact).
    pub fn count(&self, collection: &str, filter: &Filter) -> Result<u64, Error> {
        let c = self.collection_or_err(collection)?;
        filter.check()?;
        Ok(c.count(filter))
    }

    /// A page of live ids matching a filter, ascending and above `after` (see
    /// [`Collection::scroll`]); the flag says whether more may follow.
    pub fn scroll(
        &self,
        collection: &str,
        filter: &Filter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, bool), Error> {
        let c = self.collection_or_err(collection)?;
        filter.check()?;
        Ok(c.scroll(filter, after, limit))
    }

    /// Neighbours of a graph node (see [`Graph::neighbors`]).
    pub fn neighbors(
        &self,
        node: u64,
        direction: Direction,
        kinds: &[String],
    ) -> Result<Vec<Neighbor>, Error> {
        self.node_or_err(node)?;
        Ok(self.graph.neighbors(node, direction, kinds))
    }

    /// Bounded breadth-first traversal (see [`Graph::traverse`]); at most
    /// [`MAX_TRAVERSAL_NODES`] nodes.
    pub fn traverse(
        &self,
        start: u64,
        max_depth: u32,
        direction: Direction,
        kinds: &[String],
    ) -> Result<Traversal, Error> {
        self.node_or_err(start)?;
        if max_depth > MAX_TRAVERSAL_DEPTH {
            return Err(Error::InvalidTraversal {
                max_depth,
                max: MAX_TRAVERSAL_DEPTH,
            });
        }
        Ok(self
            .graph
            .traverse(start, max_depth, direction, kinds, MAX_TRAVERSAL_NODES))
    }

    /// Writes the canonical encoding of the whole state (not the sequence number or chain hash).
    pub fn encode_state(&self, out: &mut impl Sink) {
        let extras = self.collections.values().any(|c| !c.extras.is_empty());
        out.put_u32(if extras {
            STATE_FORMAT_VERSION_EXTRAS
        } else {
            STATE_FORMAT_VERSION
        });
        out.put_u32(self.collections.len() as u32);
        for c in self.collections.values() {
            c.encode(out, extras);
        }
        let g = &self.graph;
        out.put_u64(g.next_node);
        out.put_u64(g.next_edge);
        out.put_u64(g.nodes.len() as u64);
        for (id, n) in &g.nodes {
            out.put_u64(*id);
            out.put_bytes(n.kind.as_bytes());
            RecordRef::encode_opt(n.record.as_ref(), out);
            out.put_opt_bytes(n.properties.as_deref());
        }
        out.put_u64(g.edges.len() as u64);
        for (id, e) in &g.edges {
            out.put_u64(*id);
            out.put_u64(e.from);
            out.put_u64(e.to);
            out.put_bytes(e.kind.as_bytes());
        }
    }

    /// blake3 of the canonical state encoding.
    pub fn state_hash(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        self.encode_state(&mut h);
        *h.finalize().as_bytes()
    }

    /// Decodes [`Kernel::encode_state`]'s output into a state at `seq` with chain hash `chain`.
    pub fn decode_state(bytes: &[u8], seq: u64, chain: Hash) -> Result<Kernel, DecodeError> {
        Kernel::decode_placed(bytes, seq, chain, None)
    }

    /// [`Kernel::decode_state`] with the full-precision vectors decoded into `store`.
    pub(crate) fn decode_placed(
        bytes: &[u8],
        seq: u64,
        chain: Hash,
        store: Option<Arc<dyn ChunkStore>>,
    ) -> Result<Kernel, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u32()?;
        let extras = match version {
            STATE_FORMAT_VERSION => false,
            STATE_FORMAT_VERSION_EXTRAS => true,
            v => return Err(DecodeError::UnsupportedVersion(v)),
        };
        let mut k = Kernel {
            seq,
            chain,
            vectors_in: Placement(store),
            ..Kernel::default()
        };
        let n = r.count("collections", u32::MAX, 16)?;
        for _ in 0..n {
            let c = Collection::decode(&mut r, extras, k.vectors_in.0.as_ref())?;
            let name = c.spec.name.clone();
            if k.collections
                .keys()
                .next_back()
                .is_some_and(|last| *last >= name)
            {
                return Err(DecodeError::Invalid("collections out of order"));
            }
            k.collections.insert(name, c);
        }
        let g = &mut k.graph;
        g.next_node = r.u64()?;
        g.next_edge = r.u64()?;
        let nodes = r.u64()?;
        // A node takes at least 8 + 4 + 1 + 1 bytes, an edge 8 * 3 + 4.
        if nodes.saturating_mul(14) > r.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        for _ in 0..nodes {
            let id = r.u64()?;
            if id >= g.next_node || g.nodes.keys().next_back().is_some_and(|&last| last >= id) {
                return Err(DecodeError::Invalid(
                    "node ids out of order or out of range",
                ));
            }
            let kind = r.string("node kind", MAX_KIND_BYTES)?;
            let record = RecordRef::decode_opt(&mut r)?;
            let properties = r.opt_bytes("properties", MAX_METADATA_BYTES)?;
            g.insert_node_with_id(
                id,
                Node {
                    kind,
                    record,
                    properties,
                },
            );
        }
        let edges = r.u64()?;
        if edges.saturating_mul(28) > r.remaining() as u64 {
            return Err(DecodeError::UnexpectedEnd);
        }
        for _ in 0..edges {
            let id = r.u64()?;
            if id >= g.next_edge || g.edges.keys().next_back().is_some_and(|&last| last >= id) {
                return Err(DecodeError::Invalid(
                    "edge ids out of order or out of range",
                ));
            }
            let from = r.u64()?;
            let to = r.u64()?;
            let kind = r.string("edge kind", MAX_KIND_BYTES)?;
            if g.node(from).is_none() || g.node(to).is_none() {
                return Err(DecodeError::Invalid("edge to a missing node"));
            }
            g.insert_edge_with_id(id, Edge { from, to, kind });
        }
        r.finish()?;
        // Format 2 is for states that use the extras: one that does not is not canonical.
        if extras && k.collections.values().all(|c| c.extras.is_empty()) {
            return Err(DecodeError::Invalid(
                "state format 2 without keys, payloads or indexes",
            ));
        }
        Ok(k)
    }
}

fn check_kind(kind: &str) -> Result<(), Error> {
    if kind.is_empty() || kind.len() > MAX_KIND_BYTES as usize {
        Err(Error::InvalidKind {
            len: u32::try_from(kind.len()).unwrap_or(u32::MAX),
        })
    } else {
        Ok(())
    }
}
