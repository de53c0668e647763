//! Collections, records and search.

use valori_api as api;
use valori_kernel::{
    Applied, CollectionSpec, Event, Fixed, HnswParams, IndexSpec, Kernel, SearchParams,
    SearchScratch,
};

use super::convert::{
    base64_len, collection_info, metric_from_wire, similarity, to_fixed, to_new_records,
    ResponseSize,
};
use super::memory::{collection_of, filter_of, record_parts, Parts};
use super::{blocking, Service};
use crate::error::NodeError;

/// A record as a client sends it.
pub struct RecordIn {
    /// Components, converted exactly to Q16.16.
    pub vector: Vec<f64>,
    /// Tag.
    pub tag: u64,
    /// Metadata bytes.
    pub metadata: Option<Vec<u8>>,
}

/// A stored record as a client sees it.
pub struct RecordOut {
    /// Id.
    pub id: u64,
    /// Components (exact: every Q16.16 value is an f64).
    pub vector: Vec<f64>,
    /// Tag.
    pub tag: u64,
    /// Metadata bytes.
    pub metadata: Option<Vec<u8>>,
    /// Sequence number of the state read.
    pub seq: u64,
}

/// One search result.
pub struct HitOut {
    /// Record id.
    pub id: u64,
    /// Exact integer distance.
    pub distance: i128,
    /// Higher is closer (see [`super::similarity`]).
    pub similarity: f64,
    /// Record key.
    pub key: Option<String>,
    /// Record tag.
    pub tag: u64,
    /// Metadata, when asked for (`Some(None)`: asked, the record has none).
    pub metadata: Option<Option<Vec<u8>>>,
    /// Payload, when asked for.
    pub payload: Option<api::memory::JsonObject>,
    /// Document, when asked for.
    pub document: Option<Option<String>>,
    /// Components, when asked for.
    pub vector: Option<Vec<f64>>,
}

/// A hit as the wire carries it.
pub fn hit_to_wire(h: HitOut) -> api::SearchHit {
    api::SearchHit {
        id: h.id,
        distance: h.distance,
        score: super::score(h.distance),
        similarity: h.similarity,
        key: h.key,
        tag: h.tag,
        metadata: h.metadata.map(|m| m.as_deref().map(super::b64)),
        payload: h.payload,
        document: h.document,
        vector: h.vector,
    }
}

/// A hit of the wire's (a client's answer) as the service gives it: [`hit_to_wire`]'s inverse.
pub fn hit_from_wire(h: api::SearchHit) -> Result<HitOut, NodeError> {
    let metadata = h
        .metadata
        .map(|m| m.map(|m| super::unb64("metadata", &m)).transpose())
        .transpose()?;
    Ok(HitOut {
        id: h.id,
        distance: h.distance,
        similarity: h.similarity,
        key: h.key,
        tag: h.tag,
        metadata,
        payload: h.payload,
        document: h.document,
        vector: h.vector,
    })
}

/// The answers of a batch of searches, all read from the state at `seq`.
pub struct BatchHits {
    /// One list of hits per search, in order.
    pub results: Vec<Vec<HitOut>>,
    /// The one sequence number every search read.
    pub seq: u64,
}

/// Search results and the sequence number of the state searched.
pub struct Hits {
    /// Nearest first, ties by id.
    pub hits: Vec<HitOut>,
    /// The results are a function of this sequence number.
    pub seq: u64,
    /// The chain hash and state hash at `seq`, when asked for (`at_seq`, `hashes`).
    pub hashes: Option<(valori_kernel::Hash, valori_kernel::Hash)>,
}

/// A search's query as Q16.16, with its `score_threshold` checked: the numbers JSON cannot
/// carry (NaN, infinities), so a client checks them with this before it sends a search.
pub fn search_numbers(req: &api::SearchRequest) -> Result<Vec<Fixed>, NodeError> {
    let query = to_fixed(&req.vector)?;
    if req.score_threshold.is_some_and(|t| !t.is_finite()) {
        return Err(NodeError::BadRequest(
            "score_threshold must be a finite number".into(),
        ));
    }
    Ok(query)
}

thread_local! {
    static SCRATCH: std::cell::RefCell<SearchScratch> = std::cell::RefCell::new(SearchScratch::new());
}

/// Bytes a search hit takes in JSON besides its metadata (id, distance, tag, punctuation).
const HIT_BYTES: usize = 80;

impl Service {
    /// Creates a collection; returns the sequence number.
    pub async fn create_collection(&self, req: api::CreateCollection) -> Result<u64, NodeError> {
        let d = HnswParams::default();
        let index = match req.index {
            Some(api::IndexConfig::Flat) => IndexSpec::Flat,
            Some(api::IndexConfig::Hnsw {
                m,
                ef_construction,
                ef_search,
            }) => IndexSpec::Hnsw(HnswParams {
                m: m.unwrap_or(d.m),
                ef_construction: ef_construction.unwrap_or(d.ef_construction),
                ef_search: ef_search.unwrap_or(d.ef_search),
            }),
            None => IndexSpec::Hnsw(d),
        };
        let c = self
            .write(Event::CreateCollection(CollectionSpec {
                name: req.name,
                dimension: req.dimension,
                metric: metric_from_wire(req.metric.unwrap_or_default()),
                index,
            }))
            .await?;
        Ok(c.seq)
    }

    /// Drops a collection.
    pub async fn drop_collection(&self, name: String) -> Result<u64, NodeError> {
        Ok(self.write(Event::DropCollection { name }).await?.seq)
    }

    /// Every collection, by name.
    pub async fn collections(&self) -> Result<api::CollectionList, NodeError> {
        self.off_thread(|s| s.collections_blocking()).await
    }

    /// [`Service::collections`] on the caller's thread (embedded callers).
    pub fn collections_blocking(&self) -> Result<api::CollectionList, NodeError> {
        let kernel = self.engine.read()?;
        Ok(api::CollectionList {
            collections: kernel.collections().map(collection_info).collect(),
            seq: kernel.seq(),
        })
    }

    /// One collection, or `CollectionNotFound`.
    pub async fn collection(&self, name: String) -> Result<api::CollectionInfo, NodeError> {
        self.off_thread(move |s| s.collection_blocking(&name)).await
    }

    /// [`Service::collection`] on the caller's thread (embedded callers).
    pub fn collection_blocking(&self, name: &str) -> Result<api::CollectionInfo, NodeError> {
        let kernel = self.engine.read()?;
        let c = kernel
            .collection(name)
            .ok_or_else(|| valori_kernel::Error::CollectionNotFound { name: name.into() })?;
        Ok(collection_info(c))
    }

    /// Inserts records atomically; returns their ids and the sequence number. A bad component
    /// is reported with its record's position when `batch` (the batch routes), and as a plain
    /// [`NodeError::Value`] otherwise (the single-record routes).
    pub async fn insert(
        &self,
        collection: String,
        records: Vec<RecordIn>,
        batch: bool,
    ) -> Result<api::BatchInserted, NodeError> {
        // A follower names its leader before it looks at the records.
        self.writable()?;
        let max = self.settings.max_batch;
        if records.len() > max {
            return Err(NodeError::Limit {
                what: "records in a batch",
                value: records.len() as u64,
                max: max as u64,
            });
        }
        let records = to_new_records(records, batch)?;
        let c = self
            .write(Event::Insert {
                collection,
                records,
            })
            .await?;
        match c.applied {
            Applied::Inserted { first, count } => Ok(api::BatchInserted {
                ids: (first..first + u64::from(count)).collect(),
                seq: c.seq,
            }),
            other => Err(NodeError::Internal(format!(
                "an insert applied as {other:?}"
            ))),
        }
    }

    /// Deletes a record.
    pub async fn delete(&self, collection: String, id: u64) -> Result<u64, NodeError> {
        Ok(self.write(Event::Delete { collection, id }).await?.seq)
    }

    /// Reads a record.
    pub async fn get(&self, collection: String, id: u64) -> Result<RecordOut, NodeError> {
        self.off_thread(move |s| s.get_blocking(&collection, id))
            .await
    }

    /// [`Service::get`] on the caller's thread (embedded callers).
    pub fn get_blocking(&self, collection: &str, id: u64) -> Result<RecordOut, NodeError> {
        let kernel = self.engine.read()?;
        let r = kernel.get(collection, id)?;
        Ok(RecordOut {
            id,
            vector: r.vector.iter().map(|&x| Fixed(x).to_f64()).collect(),
            tag: r.tag,
            metadata: r.metadata.map(<[u8]>::to_vec),
            seq: kernel.seq(),
        })
    }

    /// Searches; results are a function of the sequence number returned with them (the index
    /// changes only with events). Runs on the caller's thread; see [`Service::search`].
    pub fn search_blocking(
        &self,
        collection: &str,
        req: &api::SearchRequest,
    ) -> Result<Hits, NodeError> {
        let now = self.engine.read()?;
        let past;
        let kernel = match req.at_seq {
            Some(seq) if seq != now.seq() => {
                past = self.state_at(seq)?;
                &past
            }
            _ => &*now,
        };
        let mut size = ResponseSize::new(self.settings.max_response_bytes);
        let hits = search_state(kernel, collection, req, &mut size)?;
        let hashes = (req.at_seq.is_some() || req.hashes)
            .then(|| (kernel.chain_hash(), kernel.state_hash()));
        Ok(Hits {
            hits,
            seq: kernel.seq(),
            hashes,
        })
    }

    /// [`Service::search_blocking`] off the async threads.
    pub async fn search(
        &self,
        collection: String,
        req: api::SearchRequest,
    ) -> Result<Hits, NodeError> {
        // Refuse a bad vector before taking a worker thread.
        to_fixed(&req.vector)?;
        let service = self.clone();
        blocking(move || service.search_blocking(&collection, &req)).await
    }
}

/// One search of a state, its answer counted against `size`: what every transport, a batch
/// and an audit's past state answer.
pub fn search_state(
    kernel: &Kernel,
    collection: &str,
    req: &api::SearchRequest,
    size: &mut ResponseSize,
) -> Result<Vec<HitOut>, NodeError> {
    let query = search_numbers(req)?;
    let params = SearchParams {
        k: req.k,
        tag: req.tag,
        ef: req.ef,
    };
    let filter = filter_of(req.filter.as_ref())?;
    let found = SCRATCH.with(|s| {
        let scratch = &mut s.borrow_mut();
        kernel.search_filtered(collection, &query, &params, &filter, req.exact, scratch)
    })?;
    let c = collection_of(kernel, collection)?;
    let metric = c.spec().metric;
    let parts = Parts::of(req.include.as_deref(), &[]);
    let mut hits = Vec::with_capacity(found.len());
    for h in found.iter() {
        let similarity = similarity(metric, h.distance);
        if req.score_threshold.is_some_and(|t| similarity < t) {
            continue;
        }
        let r = c
            .get(h.id)
            .ok_or_else(|| NodeError::Internal(format!("hit {} is not live", h.id)))?;
        let (payload, document, vector) = if parts.any() {
            let m = record_parts(&r, parts, size)?;
            (m.payload, m.document, m.vector)
        } else {
            (None, None, None)
        };
        // `with_metadata` and `include: ["metadata"]` ask for the same thing.
        let metadata =
            (req.with_metadata || parts.metadata).then(|| r.metadata.map(<[u8]>::to_vec));
        size.add(
            HIT_BYTES
                + r.key.map_or(0, str::len)
                + metadata
                    .as_ref()
                    .map_or(0, |m| base64_len(m.as_ref().map_or(0, Vec::len))),
        )?;
        hits.push(HitOut {
            id: h.id,
            distance: h.distance,
            similarity,
            key: r.key.map(String::from),
            tag: r.tag,
            metadata,
            payload,
            document,
            vector,
        });
    }
    Ok(hits)
}
