//! Every body of the HTTP API. Requests refuse unknown fields (a misspelt option is an error,
//! not silently ignored); responses may gain fields, so readers ignore the ones they do not
//! know.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use valori_kernel::limits::{
    MAX_BATCH_RECORDS, MAX_DIMENSION, MAX_EF, MAX_HNSW_M, MAX_K, MAX_KIND_BYTES, MAX_NAME_BYTES,
    MAX_TRAVERSAL_DEPTH, MIN_HNSW_M,
};

use crate::limits::{DEFAULT_K, DEFAULT_LOG_PAGE, MAX_LOG_PAGE, MAX_LOG_WAIT_MS};

/// A failed request: a stable machine-readable code and a message for people.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable code, e.g. `dimension_mismatch`, `collection_not_found`, `unauthorized`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Collections

/// How a collection's vectors are compared.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Squared Euclidean distance.
    #[default]
    L2,
    /// Negated inner product.
    Ip,
    /// Squared distance between the unit vectors (`2 (1 - cos)`).
    Cosine,
}

impl Metric {
    /// The name the API gives it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Ip => "ip",
            Metric::Cosine => "cosine",
        }
    }
}

/// The index of a new collection. Absent HNSW parameters take their defaults. Decoded strictly
/// (see its `Deserialize`): a property the variant does not have is refused.
#[derive(Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum IndexConfig {
    /// Exact scan of every record.
    Flat,
    /// Deterministic HNSW graph.
    Hnsw {
        /// Links per node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = MIN_HNSW_M, max = MAX_HNSW_M))]
        m: Option<u16>,
        /// Candidate list while building.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = MAX_EF))]
        ef_construction: Option<u16>,
        /// Default candidate list of a search.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = MAX_EF))]
        ef_search: Option<u16>,
    },
}

impl<'de> Deserialize<'de> for IndexConfig {
    /// Serde's derive does not refuse unknown properties inside an internally tagged enum, so
    /// `{"type": "flat", "m": 16}` or a misspelt HNSW parameter would pass silently: this
    /// refuses both, as the schema does.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Kind {
            Flat,
            Hnsw,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(rename = "type")]
            kind: Kind,
            #[serde(default)]
            m: Option<u16>,
            #[serde(default)]
            ef_construction: Option<u16>,
            #[serde(default)]
            ef_search: Option<u16>,
        }
        let raw = Raw::deserialize(d)?;
        match raw.kind {
            Kind::Flat => {
                if raw.m.is_some() || raw.ef_construction.is_some() || raw.ef_search.is_some() {
                    return Err(serde::de::Error::custom(
                        "a flat index takes no HNSW parameters (m, ef_construction, ef_search)",
                    ));
                }
                Ok(IndexConfig::Flat)
            }
            Kind::Hnsw => Ok(IndexConfig::Hnsw {
                m: raw.m,
                ef_construction: raw.ef_construction,
                ef_search: raw.ef_search,
            }),
        }
    }
}

/// A collection's index as it is.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum IndexInfo {
    /// Exact scan of every record.
    Flat,
    /// Deterministic HNSW graph with these parameters.
    Hnsw {
        /// Links per node.
        m: u16,
        /// Candidate list while building.
        ef_construction: u16,
        /// Default candidate list of a search.
        ef_search: u16,
    },
}

/// `POST /v1/collections`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// 1 to 128 characters of `A-Z a-z 0-9 _ . -`.
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Components per vector.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub dimension: u32,
    /// `l2` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// HNSW with default parameters when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexConfig>,
}

/// A collection's description.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// Components per vector.
    pub dimension: u32,
    /// How vectors are compared.
    pub metric: Metric,
    /// Its index.
    pub index: IndexInfo,
    /// Live records.
    pub records: u64,
    /// The id the next record will get.
    pub next_id: u64,
}

/// `GET /v1/collections`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct CollectionList {
    /// Every collection, by name.
    pub collections: Vec<CollectionInfo>,
    /// The sequence number of the state read.
    pub seq: u64,
}

/// A write that produced no id: the sequence number of its event.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    /// The event's sequence number.
    pub seq: u64,
}

// ---------------------------------------------------------------------------------------------
// Records and search

/// A record to insert.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// Components, converted exactly to Q16.16: each must be finite and round (half to even)
    /// into [-32768, 32767.9999847412109375].
    #[schemars(length(min = 1, max = MAX_DIMENSION), transform = q16_components)]
    pub vector: Vec<f64>,
    /// Tag for filtered search (0 when absent).
    #[serde(default)]
    pub tag: u64,
    /// Up to 64 KiB, base64 (padded, canonical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = base64_of_64k)]
    pub metadata: Option<String>,
}

/// `POST .../records/batch`: inserted all together or not at all.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The records, given consecutive ids in this order.
    #[schemars(length(min = 1, max = MAX_BATCH_RECORDS))]
    pub records: Vec<NewRecord>,
}

/// One record inserted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// Its id.
    pub id: u64,
    /// The event's sequence number.
    pub seq: u64,
}

/// A batch inserted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct BatchInserted {
    /// The records' ids, in the batch's order.
    pub ids: Vec<u64>,
    /// The event's sequence number.
    pub seq: u64,
}

/// A stored record.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Record {
    /// Its id.
    pub id: u64,
    /// Its components (exact: every Q16.16 value is a double).
    pub vector: Vec<f64>,
    /// Its tag.
    pub tag: u64,
    /// Its metadata, base64 (null when it has none).
    #[schemars(extend("contentEncoding" = "base64"))]
    pub metadata: Option<String>,
    /// The sequence number of the state read.
    pub seq: u64,
}

fn default_k() -> u32 {
    DEFAULT_K
}

/// `POST .../search`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query, converted exactly as stored vectors are.
    #[schemars(length(min = 1, max = MAX_DIMENSION), transform = q16_components)]
    pub vector: Vec<f64>,
    /// Results wanted (10 when absent).
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = MAX_K))]
    pub k: u32,
    /// Only records with this tag (strict: an exact scan of the tag completes the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u64>,
    /// Candidate list of the graph walk (the collection's `ef_search` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EF))]
    pub ef: Option<u32>,
    /// Return each result's metadata.
    #[serde(default)]
    pub with_metadata: bool,
    /// Only records it matches: strict (never a non-match, never fewer than min(k, matches)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::memory::Filter>,
    /// Only hits whose `similarity` is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f64>,
    /// Scan the matching records exactly instead of walking the index.
    #[serde(default)]
    pub exact: bool,
    /// What each hit carries besides id, key, tag, distance and similarity (nothing when
    /// absent; `with_metadata` adds the metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<crate::memory::Include>>,
    /// Answer as the state stood at this past sequence number: the node replays its log in
    /// memory from the nearest snapshot at or before it (at most `--max-replay-events` events)
    /// and answers with that state's chain and state hashes. Not in a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_seq: Option<u64>,
    /// Answer with the chain hash and the state hash of the state searched, what a receipt
    /// records (hashing the whole state takes time in proportion to its size). Not in a batch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hashes: bool,
}

/// One search result.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SearchHit {
    /// Record id.
    pub id: u64,
    /// Exact integer distance, in the metric's units (it can exceed 64 bits).
    pub distance: i128,
    /// `distance / 2^32`, for convenience; ordering uses `distance` (lower is closer).
    pub score: f64,
    /// Higher is closer: the cosine for cosine collections, the dot product for `ip`, minus
    /// `score` for `l2`.
    pub similarity: f64,
    /// Record key (null for a record written without one).
    pub key: Option<String>,
    /// Record tag.
    pub tag: u64,
    /// The record's payload, when included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<crate::memory::JsonObject>,
    /// The record's document, when included (null when it has none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::present"
    )]
    pub document: Option<Option<String>>,
    /// The record's components, when included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f64>>,
    /// With `with_metadata`: the record's metadata, base64, or null when it has none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::present"
    )]
    #[schemars(extend("contentEncoding" = "base64"))]
    pub metadata: Option<Option<String>>,
}

/// Search results, nearest first (ties by id).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SearchResults {
    /// The results.
    pub results: Vec<SearchHit>,
    /// The sequence number of the state searched: the results are a function of it.
    pub seq: u64,
    /// With `at_seq` or `hashes`: the chain hash at `seq`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub chain_hash: Option<String>,
    /// With `at_seq` or `hashes`: the state hash of the state searched, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub state_hash: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Graph

/// A link from a graph node to a record: by `id` (that version of the record) or by `key`
/// (whichever record holds the key, so the link survives an upsert that gives it a new id).
/// A new node names exactly one of them; a node read back names its link and, for a link by
/// key, the `id` of the record that holds the key now (absent when none does).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The record's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = valori_kernel::limits::MAX_KEY_BYTES))]
    pub key: Option<String>,
}

/// `POST /v1/graph/nodes`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    /// Kind label, 1 to 128 bytes.
    #[schemars(length(min = 1, max = MAX_KIND_BYTES))]
    pub kind: String,
    /// The record the node stands for, if any (the link is weak: the record may go).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordRef>,
    /// Up to 64 KiB, base64 (padded, canonical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = base64_of_64k)]
    pub properties: Option<String>,
}

/// `POST /v1/graph/edges`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateEdge {
    /// Source node.
    pub from: u64,
    /// Target node.
    pub to: u64,
    /// Kind label, 1 to 128 bytes.
    #[schemars(length(min = 1, max = MAX_KIND_BYTES))]
    pub kind: String,
}

/// A node or edge created.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    /// Its id.
    pub id: u64,
    /// The event's sequence number.
    pub seq: u64,
}

/// A graph node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct GraphNode {
    /// Its id.
    pub id: u64,
    /// Its kind label.
    pub kind: String,
    /// The record it links to, if any.
    pub record: Option<RecordRef>,
    /// Its properties, base64.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub properties: Option<String>,
}

/// A graph edge.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct GraphEdge {
    /// Its id.
    pub id: u64,
    /// Source node.
    pub from: u64,
    /// Target node.
    pub to: u64,
    /// Kind label.
    pub kind: String,
}

/// Which edges of a node to follow.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Outgoing edges.
    #[default]
    Out,
    /// Incoming edges.
    In,
    /// Both.
    Both,
}

impl Direction {
    /// The name the API gives it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
            Direction::Both => "both",
        }
    }
}

/// Whether a neighbour is reached over an outgoing or an incoming edge.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EdgeDirection {
    /// The node is the edge's source.
    Out,
    /// The node is the edge's target.
    In,
}

impl EdgeDirection {
    /// The name the API gives it.
    pub fn name(self) -> &'static str {
        match self {
            EdgeDirection::Out => "out",
            EdgeDirection::In => "in",
        }
    }
}

/// The query of `GET /v1/graph/nodes/{id}/neighbors`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct NeighborsQuery {
    /// Only edges of these kinds, comma-separated (all kinds when absent; at most 64 distinct
    /// kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `out` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// One neighbour.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// The neighbouring node.
    pub node: u64,
    /// The edge that joins them.
    pub edge: u64,
    /// The edge's kind.
    pub kind: String,
    /// The edge's direction seen from the node asked about.
    pub direction: EdgeDirection,
}

/// A node's neighbours, by (neighbour id, edge id).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Neighbors {
    /// The neighbours.
    pub neighbors: Vec<Neighbor>,
    /// The sequence number of the state read.
    pub seq: u64,
}

/// `POST /v1/graph/traverse`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TraverseRequest {
    /// The node to start from.
    pub start: u64,
    /// Deepest level to visit.
    #[schemars(range(max = MAX_TRAVERSAL_DEPTH))]
    pub max_depth: u32,
    /// Only edges of these kinds (all kinds when empty; at most 64 distinct kinds).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// `out` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// A node reached by a traversal.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visit {
    /// The node.
    pub node: u64,
    /// Its depth (the start is 0).
    pub depth: u32,
}

/// A breadth-first traversal.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Traversal {
    /// Nodes in visiting order.
    pub nodes: Vec<Visit>,
    /// Whether the traversal stopped at its node limit.
    pub truncated: bool,
    /// The sequence number of the state read.
    pub seq: u64,
}

// ---------------------------------------------------------------------------------------------
// State, log, snapshots, replication

/// The query of `GET /v1/state`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// A past sequence number: answer its chain hash (when retained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// With a past `seq`: answer its state hash too, from the state replayed in memory from
    /// the nearest snapshot at or before it (at most `--max-replay-events` events, as a search's
    /// `at_seq`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_hash: bool,
}

/// Sequence number and hashes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Events applied.
    pub seq: u64,
    /// Chain hash at `seq`, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub chain_hash: String,
    /// State hash, hex: present for the current state, and for a past sequence number when
    /// asked (`state_hash=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub state_hash: Option<String>,
    /// The epoch of the node's role (see `/v1/role`).
    #[serde(default)]
    pub epoch: u64,
}

fn default_log_page() -> u32 {
    DEFAULT_LOG_PAGE
}

/// The query of `GET /v1/log`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// First sequence number wanted.
    #[serde(default)]
    pub from: u64,
    /// Most entries wanted.
    #[serde(default = "default_log_page")]
    #[schemars(range(min = 1, max = MAX_LOG_PAGE))]
    pub limit: u32,
    /// When the node has nothing from `from` on yet, wait up to this many milliseconds for it
    /// (a long poll: a follower hears of a write at once instead of at its next poll).
    #[serde(default)]
    #[schemars(range(max = MAX_LOG_WAIT_MS))]
    pub wait_ms: u32,
}

/// One log entry.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its sequence number.
    pub seq: u64,
    /// Chain hash after it, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub chain_hash: String,
    /// The event's canonical encoding, base64: replaying it with the kernel gives the chain.
    #[schemars(extend("contentEncoding" = "base64"))]
    pub event: String,
    /// The epoch of the leader that wrote it (0: written before epochs were recorded). Not
    /// part of the chain: it says who wrote the event, for audits.
    pub epoch: u64,
}

impl LogEntry {
    /// The chain hash and the event's bytes, decoded from hex and base64 (a follower's first
    /// step with each entry a leader sends); the error says which field is malformed.
    pub fn decode(&self) -> Result<([u8; 32], Vec<u8>), String> {
        use base64::Engine as _;
        let chain: [u8; 32] = hex::decode(&self.chain_hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("a bad chain hash at {}", self.seq))?;
        let event = base64::engine::general_purpose::STANDARD
            .decode(&self.event)
            .map_err(|e| format!("a bad event at {}: {e}", self.seq))?;
        Ok((chain, event))
    }
}

/// A page of the log.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LogPage {
    /// Entries from `from` on, in order.
    pub entries: Vec<LogEntry>,
    /// The first sequence number still retained, if the log holds any.
    pub first_retained: Option<u64>,
    /// The sequence number to ask for next, when this page has entries.
    pub next: Option<u64>,
    /// The node's sequence number.
    pub head: u64,
    /// The epoch of the node's role: a follower refuses a leader whose epoch is below one it
    /// has seen.
    pub epoch: u64,
    /// The node's history generation: it changes when the node's history is rewritten (a
    /// restore) or begins anew (a promotion), and a follower then re-checks its own history.
    pub history: u64,
}

/// A snapshot file.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its id (its sequence number).
    pub id: u64,
    /// The sequence number it captures.
    pub seq: u64,
    /// Its size.
    pub bytes: u64,
    /// Where it is on the node.
    pub path: String,
}

/// `GET /v1/snapshots`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotList {
    /// Oldest first.
    pub snapshots: Vec<SnapshotInfo>,
}

/// The state after a restore, and the snapshot it came from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Events applied.
    pub seq: u64,
    /// Chain hash at `seq`, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub chain_hash: String,
    /// State hash, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub state_hash: String,
    /// The installed snapshot.
    pub snapshot: SnapshotInfo,
}

/// A snapshot in the backup destination (`POST /v1/backups`, `GET /v1/backups`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// The sequence number it captures.
    pub seq: u64,
    /// Chain hash at `seq`, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub chain_hash: String,
    /// State hash at `seq`, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub state_hash: String,
    /// Size of the snapshot file.
    pub bytes: u64,
    /// When its upload started (RFC 3339, UTC).
    pub started: String,
    /// When its upload finished (RFC 3339, UTC).
    pub finished: String,
}

/// How the log is shipped to the backup destination.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LogShipping {
    /// Whether the node ships its log (`--backup-ship-interval-s` above 0).
    pub enabled: bool,
    /// Seconds between shipping rounds.
    pub interval_s: u64,
    /// The sequence number up to which the log is shipped, once this node has shipped (a
    /// follower does not: its leader does).
    pub shipped_through: Option<u64>,
    /// Events durable here and not yet shipped.
    pub lag_events: Option<u64>,
    /// When the last round that reached the node's head finished (RFC 3339, UTC).
    pub shipped_at: Option<String>,
    /// Why the last round failed, if it did.
    pub error: Option<String>,
}

/// `GET /v1/backups`: the destination, what it holds, and how backing up goes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct BackupList {
    /// The destination's URL.
    pub destination: String,
    /// Complete snapshots in the destination, oldest first.
    pub backups: Vec<BackupInfo>,
    /// The highest sequence number a restore can reach from the destination.
    pub reaches: u64,
    /// Log shipping.
    pub shipping: LogShipping,
    /// Why the last snapshot backup failed, if it did.
    pub last_error: Option<String>,
}

/// A follower as its leader sees it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct FollowerStatus {
    /// The name it gives itself.
    pub name: String,
    /// The sequence number it has confirmed (one less than the next entry it asked for).
    pub confirmed_seq: u64,
    /// How far behind the leader's sequence number that is.
    pub lag_events: u64,
    /// Seconds since it last asked.
    pub seconds_since_seen: f64,
    /// Whether it holds a history this node does not: it asked from beyond this node's head,
    /// or its chain hash there differs from ours. Such a follower is not lagging, and is never
    /// counted for a synchronous write.
    pub diverged: bool,
}

/// `GET /v1/replication`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ReplicationStatus {
    /// This node's sequence number.
    pub seq: u64,
    /// Followers that have read this node's log, by name.
    pub followers: Vec<FollowerStatus>,
}

// ---------------------------------------------------------------------------------------------
// Roles

/// What a node does in its cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes (unless fenced by a higher epoch).
    Leader,
    /// Replicates its leader and refuses writes.
    Follower,
}

impl Role {
    /// The name the API gives it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// `GET /v1/role`: the node's role, the epoch of that assignment, and what it has seen.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct RoleInfo {
    /// Its role.
    pub role: Role,
    /// The epoch it was given the role with.
    pub epoch: u64,
    /// The leader it follows (a follower only).
    pub leader_url: Option<String>,
    /// Its sequence number (durable: every event it has applied is on its disk).
    pub seq: u64,
    /// The highest epoch it has heard of. A leader whose `epoch` is below it is fenced: it
    /// refuses writes, because a newer leader exists.
    pub seen_epoch: u64,
    /// Whether it takes writes now.
    pub writable: bool,
    /// The epoch of the leader that wrote the last entry of its history (0: unknown): with
    /// `seq`, what ranks followers for promotion.
    #[serde(default)]
    pub last_epoch: u64,
    /// Whether it stopped replicating because its history differs from its leader's.
    #[serde(default)]
    pub diverged: bool,
    /// Whether, told to follow, it re-bootstraps by itself when its history went past its
    /// leader's (see `SetRole::heal`).
    #[serde(default = "yes")]
    pub heal: bool,
}

fn yes() -> bool {
    true
}

impl SetRole {
    /// Lead at `epoch`.
    pub fn leader(epoch: u64) -> SetRole {
        SetRole {
            role: Role::Leader,
            epoch,
            leader_url: None,
            heal: None,
        }
    }

    /// Follow `leader_url` at `epoch` (re-bootstrapping by itself if its history went past
    /// the leader's).
    pub fn follower(epoch: u64, leader_url: &str) -> SetRole {
        SetRole {
            role: Role::Follower,
            epoch,
            leader_url: Some(leader_url.to_string()),
            heal: None,
        }
    }
}

/// `PUT /v1/role`: give the node a role with an epoch. The epoch only grows: a lower one than
/// the node has seen is refused (409), and the same one is accepted only as a retry of the
/// node's current role and leader. A follower names its leader's http:// or https:// URL; a
/// leader names none.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[schemars(transform = a_follower_names_its_leader)]
pub struct SetRole {
    /// The new role.
    pub role: Role,
    /// The epoch of this assignment.
    #[schemars(range(min = 1))]
    pub epoch: u64,
    /// The leader to follow (required for a follower, refused for a leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_url: Option<String>,
    /// A follower whose history went past its leader's re-bootstraps by itself, discarding
    /// what its leader lacks (true when absent); false keeps its data: it stays diverged and
    /// read-only until healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Schema rules that a field's type cannot state

/// Above every component that converts: (2^31 - 1/2) / 2^16 = 32767.99999237060546875, the
/// midpoint above the largest Q16.16 value, which rounds (half to even) up to 2^31 raw units,
/// out of range; everything below it rounds into range. (Exact: a dyadic fraction.)
const Q16_ABOVE: f64 = ((1u64 << 32) - 1) as f64 / (1u64 << 17) as f64;
/// The smallest component that converts: -(2^31 + 1/2) / 2^16 = -32768.00000762939453125,
/// the midpoint below -32768, which rounds to -2^31 raw units (even).
const Q16_LOWEST: f64 = -(((1u64 << 32) + 1) as f64) / (1u64 << 17) as f64;

/// Each component of a vector: a number that converts to Q16.16.
pub(crate) fn q16_components(schema: &mut schemars::Schema) {
    if let Some(items) = schema.get_mut("items").and_then(|i| i.as_object_mut()) {
        items.insert("minimum".into(), Q16_LOWEST.into());
        items.insert("exclusiveMaximum".into(), Q16_ABOVE.into());
    }
}

/// Padded, canonical base64 (what the node decodes: the unused bits of a last group are 0) of
/// at most 64 KiB.
pub(crate) fn base64_of_64k(schema: &mut schemars::Schema) {
    let max_chars = u64::from(valori_kernel::limits::MAX_METADATA_BYTES).div_ceil(3) * 4;
    schema.insert("contentEncoding".into(), "base64".into());
    schema.insert("maxLength".into(), max_chars.into());
    schema.insert(
        "pattern".into(),
        r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
            .into(),
    );
}

/// A follower names its leader's URL; a leader names none.
fn a_follower_names_its_leader(schema: &mut schemars::Schema) {
    schema.insert(
        "if".into(),
        serde_json::json!({"properties": {"role": {"const": "follower"}}}),
    );
    schema.insert(
        "then".into(),
        serde_json::json!({
            "required": ["leader_url"],
            // What the node takes: an http(s) URL with something after the scheme that is
            // not a slash (it drops trailing slashes before it looks).
            "properties": {"leader_url": {"type": "string", "pattern": r"^https?://[\s\S]*[^/]"}},
        }),
    );
    schema.insert(
        "else".into(),
        serde_json::json!({"properties": {"leader_url": {"type": "null"}}}),
    );
}

/// Reads a field that may be absent, present and null, or present with a value: a present
/// `null` is `Some(None)` (a part an answer included that the record does not have), where
/// serde's default would make it `None` (not included).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_bounds_of_a_component_are_the_conversion_s() {
        use valori_kernel::Fixed;
        assert!(Fixed::from_f64(Q16_LOWEST).is_ok());
        assert!(Fixed::from_f64(f64::from_bits(Q16_LOWEST.to_bits() + 1)).is_err());
        assert!(Fixed::from_f64(Q16_ABOVE).is_err());
        assert!(Fixed::from_f64(f64::from_bits(Q16_ABOVE.to_bits() - 1)).is_ok());
    }

    #[test]
    fn an_index_refuses_what_its_variant_does_not_have() {
        let parse = |s: &str| serde_json::from_str::<IndexConfig>(s);
        assert_eq!(parse(r#"{"type": "flat"}"#).unwrap(), IndexConfig::Flat);
        assert_eq!(
            parse(r#"{"type": "hnsw", "m": 8}"#).unwrap(),
            IndexConfig::Hnsw {
                m: Some(8),
                ef_construction: None,
                ef_search: None
            }
        );
        for bad in [
            r#"{"type": "flat", "x": 1}"#,
            r#"{"type": "flat", "m": 8}"#,
            r#"{"type": "hnsw", "m_": 8}"#,
            r#"{"type": "ivf"}"#,
            r#"{"m": 8}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        // What serializes parses back.
        let h = IndexConfig::Hnsw {
            m: Some(4),
            ef_construction: Some(40),
            ef_search: None,
        };
        assert_eq!(parse(&serde_json::to_string(&h).unwrap()).unwrap(), h);
    }

    #[test]
    fn base64_metadata_is_what_the_node_decodes() {
        use base64::Engine as _;
        let schema = {
            let mut s = schemars::json_schema!({"type": "string"});
            base64_of_64k(&mut s);
            s
        };
        let pattern = schema.get("pattern").and_then(|p| p.as_str()).unwrap();
        // Every length's canonical encoding, and a few that the decoder refuses.
        for n in 0..8u8 {
            let bytes: Vec<u8> = (0..n)
                .map(|i| i.wrapping_mul(37).wrapping_add(200))
                .collect();
            let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
            assert!(matches(pattern, &text), "{text}");
        }
        for text in ["***", "QQ", "QR==", "QUJ=", "QUJD=", "A", "QQ=="] {
            let decodes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok();
            assert_eq!(matches(pattern, text), decodes, "{text}");
        }
        // And many strings of characters that matter (a fixed LCG: the same strings each run).
        let chars = b"AQgwBERSTz09+/=*";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 59) as usize % 13;
            let text: String = (0..len)
                .map(|i| chars[((state >> (i * 4)) & 15) as usize] as char)
                .collect();
            let decodes = base64::engine::general_purpose::STANDARD
                .decode(&text)
                .is_ok();
            assert_eq!(matches(pattern, &text), decodes, "{text}");
        }
    }

    /// The pattern as a JSON Schema validator reads it (anchored, whole string).
    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }
}
