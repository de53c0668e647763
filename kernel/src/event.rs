//! Events: the only way state changes, and their canonical encoding.
//!
//! Encoding (format version [`EVENT_FORMAT_VERSION`]): one version byte, one tag byte naming the
//! variant, then the variant's fields in declaration order using the rules of [`crate::codec`].
//! Vectors are already Q16.16 here: floats never reach the log.

use alloc::string::String;
use alloc::vec::Vec;

use crate::codec::{DecodeError, Reader, Sink};
use crate::filter::Filter;
use crate::fixed::Fixed;
use crate::limits::*;
use crate::payload::{self, Payload};

/// Version byte that starts every encoded event.
pub const EVENT_FORMAT_VERSION: u8 = 1;

/// How a collection measures distance. Smaller is closer for all three.
#[derive(Clone, Copy, PartialEq, Eq, Debug, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Squared Euclidean distance, in raw Q16.16 units squared (2^-32 per unit).
    L2,
    /// Negated dot product, in raw units squared.
    InnerProduct,
    /// Vectors are normalised to unit length (2^16 raw units) at insert and at query; the
    /// distance is the squared L2 distance between the unit vectors in raw units, which is
    /// `2^33 * (1 - cosine)` up to rounding and exactly 0 for the same direction.
    Cosine,
}

impl Metric {
    fn tag(self) -> u8 {
        match self {
            Metric::L2 => 0,
            Metric::InnerProduct => 1,
            Metric::Cosine => 2,
        }
    }
    fn from_tag(tag: u8) -> Result<Self, DecodeError> {
        Ok(match tag {
            0 => Metric::L2,
            1 => Metric::InnerProduct,
            2 => Metric::Cosine,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "metric",
                    tag,
                })
            }
        })
    }
    /// Lower-case name used by the APIs: `l2`, `ip`, `cosine`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::InnerProduct => "ip",
            Metric::Cosine => "cosine",
        }
    }
    /// Parses [`Metric::name`] (also accepts `inner_product`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "l2" => Some(Metric::L2),
            "ip" | "inner_product" => Some(Metric::InnerProduct),
            "cosine" => Some(Metric::Cosine),
            _ => None,
        }
    }
}

/// Which index serves a collection's searches.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum IndexSpec {
    /// Exact scan of every record.
    Flat,
    /// Hierarchical navigable small world graph.
    Hnsw(HnswParams),
}

/// HNSW parameters of a collection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct HnswParams {
    /// Neighbours per node above layer 0 (layer 0 keeps `2 * m`).
    pub m: u16,
    /// Candidate list size while linking a new node.
    pub ef_construction: u16,
    /// Default candidate list size of a search.
    pub ef_search: u16,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// Everything that defines a collection.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CollectionSpec {
    /// Unique name: 1 to [`MAX_NAME_BYTES`] bytes of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Vector dimension, 1 to [`MAX_DIMENSION`].
    pub dimension: u32,
    /// Distance metric.
    pub metric: Metric,
    /// Index kind and parameters.
    pub index: IndexSpec,
}

/// A record to insert; the kernel assigns its id.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewRecord {
    /// The vector; its length must equal the collection's dimension.
    pub vector: Vec<Fixed>,
    /// Tag used by filtered search.
    pub tag: u64,
    /// Optional metadata, at most [`MAX_METADATA_BYTES`].
    pub metadata: Option<Vec<u8>>,
}

/// A record an upsert writes: its key is its identity.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyedRecord {
    /// 1 to [`MAX_KEY_BYTES`] bytes, compared bytewise.
    pub key: String,
    /// The vector; its length must equal the collection's dimension.
    pub vector: Vec<Fixed>,
    /// Tag.
    pub tag: u64,
    /// JSON payload (an empty object is no payload).
    pub payload: Option<Payload>,
    /// Document text, at most [`MAX_DOCUMENT_BYTES`].
    pub document: Option<String>,
    /// Opaque metadata, at most [`MAX_METADATA_BYTES`].
    pub metadata: Option<Vec<u8>>,
}

/// What an upsert does with keys that exist or do not.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum UpsertMode {
    /// Replace a record whose key exists, insert one whose key does not.
    #[default]
    Upsert,
    /// Refuse the whole batch (`key_exists`) when a key exists.
    InsertOnly,
    /// Refuse the whole batch (`key_not_found`) when a key does not exist.
    UpdateOnly,
}

/// Which records a write by target affects, resolved when the event applies.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Target {
    /// Records with these keys (keys with no record are ignored).
    Keys(Vec<String>),
    /// Records with these ids (ids with no live record are ignored).
    Ids(Vec<u64>),
    /// Records the filter matches.
    Filter(Filter),
}

/// How a payload write combines with the stored payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PayloadMode {
    /// Sets the given top-level keys, keeping the others.
    Merge,
    /// Replaces the whole payload.
    Replace,
}

/// The values a payload index holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum IndexKind {
    /// Strings.
    Keyword,
    /// Integers (and floats with integral values, which are integers).
    Integer,
    /// Booleans.
    Bool,
}

impl IndexKind {
    /// Lower-case name used by the APIs.
    pub fn name(self) -> &'static str {
        match self {
            IndexKind::Keyword => "keyword",
            IndexKind::Integer => "integer",
            IndexKind::Bool => "bool",
        }
    }
    /// Parses [`IndexKind::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "keyword" => Some(IndexKind::Keyword),
            "integer" => Some(IndexKind::Integer),
            "bool" => Some(IndexKind::Bool),
            _ => None,
        }
    }
    pub(crate) fn tag(self) -> u8 {
        match self {
            IndexKind::Keyword => 0,
            IndexKind::Integer => 1,
            IndexKind::Bool => 2,
        }
    }
    pub(crate) fn from_tag(tag: u8) -> Result<Self, DecodeError> {
        Ok(match tag {
            0 => IndexKind::Keyword,
            1 => IndexKind::Integer,
            2 => IndexKind::Bool,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "index kind",
                    tag,
                })
            }
        })
    }
}

/// A link from a graph node to a record: by id (that version of the record) or by key (the
/// record that holds the key now, so the link survives an upsert that gives it a new id).
#[derive(Clone, PartialEq, Eq, Debug, PartialOrd, Ord)]
pub enum RecordRef {
    /// The record with this id.
    Id {
        /// Collection name.
        collection: String,
        /// Record id within it.
        id: u64,
    },
    /// The record that holds this key.
    Key {
        /// Collection name.
        collection: String,
        /// Record key within it, 1 to [`MAX_KEY_BYTES`] bytes.
        key: String,
    },
}

impl RecordRef {
    /// The collection it names.
    pub fn collection(&self) -> &str {
        match self {
            RecordRef::Id { collection, .. } | RecordRef::Key { collection, .. } => collection,
        }
    }

    /// Writes the link as events and states encode it (`0` stands for no link): `1`, the
    /// collection and the id, or `2`, the collection and the key.
    pub(crate) fn encode_opt(link: Option<&RecordRef>, out: &mut impl Sink) {
        match link {
            None => out.put_u8(0),
            Some(RecordRef::Id { collection, id }) => {
                out.put_u8(1);
                out.put_bytes(collection.as_bytes());
                out.put_u64(*id);
            }
            Some(RecordRef::Key { collection, key }) => {
                out.put_u8(2);
                out.put_bytes(collection.as_bytes());
                out.put_bytes(key.as_bytes());
            }
        }
    }

    /// Reads what [`RecordRef::encode_opt`] wrote.
    pub(crate) fn decode_opt(r: &mut Reader<'_>) -> Result<Option<RecordRef>, DecodeError> {
        Ok(match r.u8()? {
            0 => None,
            1 => Some(RecordRef::Id {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                id: r.u64()?,
            }),
            2 => Some(RecordRef::Key {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                key: r.string("record key", MAX_KEY_BYTES)?,
            }),
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "record link",
                    tag,
                })
            }
        })
    }
}

/// Every state change.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// Creates an empty collection.
    CreateCollection(CollectionSpec),
    /// Removes a collection and all its records.
    DropCollection {
        /// Collection name.
        name: String,
    },
    /// Inserts one or more records, all or nothing; ids are assigned consecutively.
    /// Inserting into [`DEFAULT_COLLECTION`] when it does not exist creates it with the
    /// vectors' dimension, metric L2 and an HNSW index with default parameters.
    Insert {
        /// Collection name.
        collection: String,
        /// 1 to [`MAX_BATCH_RECORDS`] records.
        records: Vec<NewRecord>,
    },
    /// Deletes a record.
    Delete {
        /// Collection name.
        collection: String,
        /// Record id.
        id: u64,
    },
    /// Creates a graph node; the kernel assigns its id.
    CreateNode {
        /// Kind label, 1 to [`MAX_KIND_BYTES`] bytes.
        kind: String,
        /// Optional link to a live record (by id) or to a key a record holds.
        record: Option<RecordRef>,
        /// Optional property bytes, at most [`MAX_METADATA_BYTES`].
        properties: Option<Vec<u8>>,
    },
    /// Deletes a node and every edge that touches it.
    DeleteNode {
        /// Node id.
        id: u64,
    },
    /// Creates a directed edge between existing nodes; the kernel assigns its id.
    CreateEdge {
        /// Source node.
        from: u64,
        /// Target node.
        to: u64,
        /// Kind label, 1 to [`MAX_KIND_BYTES`] bytes.
        kind: String,
    },
    /// Deletes an edge.
    DeleteEdge {
        /// Edge id.
        id: u64,
    },
    /// Writes records by key, all or nothing, in order. A key whose record has a bit-identical
    /// stored vector keeps its slot and id (only tag, payload, document and metadata change);
    /// a different vector deletes the old slot and takes a new id. Upserting into
    /// [`DEFAULT_COLLECTION`] when it does not exist creates it as [`Event::Insert`] does.
    Upsert {
        /// Collection name.
        collection: String,
        /// What to do with existing and missing keys.
        mode: UpsertMode,
        /// 1 to [`MAX_BATCH_RECORDS`] records with distinct keys.
        records: Vec<KeyedRecord>,
    },
    /// Deletes the records a target resolves to (none is fine).
    DeleteRecords {
        /// Collection name.
        collection: String,
        /// Which records.
        target: Target,
        /// Refuse the event if more would be deleted.
        max_affected: Option<u64>,
    },
    /// Writes payload to the records a target resolves to.
    SetPayload {
        /// Collection name.
        collection: String,
        /// Which records.
        target: Target,
        /// The payload to merge or replace with.
        payload: Payload,
        /// Merge or replace.
        mode: PayloadMode,
        /// Refuse the event if more would be changed.
        max_affected: Option<u64>,
    },
    /// Removes top-level payload keys from the records a target resolves to.
    DeletePayloadKeys {
        /// Collection name.
        collection: String,
        /// Which records.
        target: Target,
        /// The top-level keys to remove.
        keys: Vec<String>,
        /// Refuse the event if more would be changed.
        max_affected: Option<u64>,
    },
    /// Declares a payload index on a field (a path, as filters name it).
    CreatePayloadIndex {
        /// Collection name.
        collection: String,
        /// The field's path.
        field: String,
        /// Which values it holds.
        kind: IndexKind,
    },
    /// Removes a payload index.
    DropPayloadIndex {
        /// Collection name.
        collection: String,
        /// The field's path.
        field: String,
    },
}

mod tag {
    pub const CREATE_COLLECTION: u8 = 1;
    pub const DROP_COLLECTION: u8 = 2;
    pub const INSERT: u8 = 3;
    pub const DELETE: u8 = 4;
    pub const CREATE_NODE: u8 = 5;
    pub const DELETE_NODE: u8 = 6;
    pub const CREATE_EDGE: u8 = 7;
    pub const DELETE_EDGE: u8 = 8;
    pub const UPSERT: u8 = 9;
    pub const DELETE_RECORDS: u8 = 10;
    pub const SET_PAYLOAD: u8 = 11;
    pub const DELETE_PAYLOAD_KEYS: u8 = 12;
    pub const CREATE_PAYLOAD_INDEX: u8 = 13;
    pub const DROP_PAYLOAD_INDEX: u8 = 14;
}

fn encode_opt_u64(v: Option<u64>, out: &mut impl Sink) {
    match v {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            out.put_u64(v);
        }
    }
}

fn decode_opt_u64(r: &mut Reader<'_>) -> Result<Option<u64>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.u64()?)),
        tag => Err(DecodeError::UnknownTag {
            what: "optional number",
            tag,
        }),
    }
}

fn encode_target(t: &Target, out: &mut impl Sink) {
    match t {
        Target::Keys(keys) => {
            out.put_u8(0);
            out.put_u32(keys.len() as u32);
            for k in keys {
                out.put_bytes(k.as_bytes());
            }
        }
        Target::Ids(ids) => {
            out.put_u8(1);
            out.put_u32(ids.len() as u32);
            for id in ids {
                out.put_u64(*id);
            }
        }
        Target::Filter(f) => {
            out.put_u8(2);
            f.encode(out);
        }
    }
}

fn decode_target(r: &mut Reader<'_>) -> Result<Target, DecodeError> {
    Ok(match r.u8()? {
        0 => {
            let n = r.count("target keys", MAX_TARGET_ITEMS, 5)?;
            Target::Keys(
                (0..n)
                    .map(|_| r.string("record key", MAX_KEY_BYTES))
                    .collect::<Result<_, _>>()?,
            )
        }
        1 => {
            let n = r.count("target ids", MAX_TARGET_ITEMS, 8)?;
            Target::Ids((0..n).map(|_| r.u64()).collect::<Result<_, _>>()?)
        }
        2 => Target::Filter(Filter::decode(r)?),
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "target",
                tag,
            })
        }
    })
}

fn encode_opt_payload(p: Option<&Payload>, out: &mut impl Sink) {
    match p {
        None => out.put_u8(0),
        Some(p) => {
            out.put_u8(1);
            payload::encode(p, out);
        }
    }
}

fn decode_opt_payload(r: &mut Reader<'_>) -> Result<Option<Payload>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(payload::decode(r)?)),
        tag => Err(DecodeError::UnknownTag {
            what: "payload flag",
            tag,
        }),
    }
}

fn decode_opt_string(
    r: &mut Reader<'_>,
    what: &'static str,
    max: u32,
) -> Result<Option<String>, DecodeError> {
    match r.opt_bytes(what, max)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| DecodeError::InvalidUtf8),
    }
}

pub(crate) fn encode_spec(spec: &CollectionSpec, out: &mut impl Sink) {
    out.put_bytes(spec.name.as_bytes());
    out.put_u32(spec.dimension);
    out.put_u8(spec.metric.tag());
    match spec.index {
        IndexSpec::Flat => out.put_u8(0),
        IndexSpec::Hnsw(p) => {
            out.put_u8(1);
            out.put(&p.m.to_le_bytes());
            out.put(&p.ef_construction.to_le_bytes());
            out.put(&p.ef_search.to_le_bytes());
        }
    }
}

pub(crate) fn decode_spec(r: &mut Reader<'_>) -> Result<CollectionSpec, DecodeError> {
    let name = r.string("collection name", MAX_NAME_BYTES)?;
    let dimension = r.u32()?;
    let metric = Metric::from_tag(r.u8()?)?;
    let index = match r.u8()? {
        0 => IndexSpec::Flat,
        1 => {
            let mut u16s = [0u16; 3];
            for v in &mut u16s {
                let b = r.take(2)?;
                *v = u16::from_le_bytes([b[0], b[1]]);
            }
            IndexSpec::Hnsw(HnswParams {
                m: u16s[0],
                ef_construction: u16s[1],
                ef_search: u16s[2],
            })
        }
        tag => return Err(DecodeError::UnknownTag { what: "index", tag }),
    };
    Ok(CollectionSpec {
        name,
        dimension,
        metric,
        index,
    })
}

fn encode_vector(v: &[Fixed], out: &mut impl Sink) {
    out.put_u32(v.len() as u32);
    for x in v {
        out.put_i32(x.0);
    }
}

fn decode_vector(r: &mut Reader<'_>) -> Result<Vec<Fixed>, DecodeError> {
    let n = r.count("vector", MAX_DIMENSION, 4)?;
    (0..n).map(|_| r.i32().map(Fixed)).collect()
}

impl Event {
    /// Appends the canonical encoding.
    pub fn encode_into(&self, out: &mut impl Sink) {
        out.put_u8(EVENT_FORMAT_VERSION);
        match self {
            Event::CreateCollection(spec) => {
                out.put_u8(tag::CREATE_COLLECTION);
                encode_spec(spec, out);
            }
            Event::DropCollection { name } => {
                out.put_u8(tag::DROP_COLLECTION);
                out.put_bytes(name.as_bytes());
            }
            Event::Insert {
                collection,
                records,
            } => {
                out.put_u8(tag::INSERT);
                out.put_bytes(collection.as_bytes());
                out.put_u32(records.len() as u32);
                for rec in records {
                    out.put_u64(rec.tag);
                    out.put_opt_bytes(rec.metadata.as_deref());
                    encode_vector(&rec.vector, out);
                }
            }
            Event::Delete { collection, id } => {
                out.put_u8(tag::DELETE);
                out.put_bytes(collection.as_bytes());
                out.put_u64(*id);
            }
            Event::CreateNode {
                kind,
                record,
                properties,
            } => {
                out.put_u8(tag::CREATE_NODE);
                out.put_bytes(kind.as_bytes());
                RecordRef::encode_opt(record.as_ref(), out);
                out.put_opt_bytes(properties.as_deref());
            }
            Event::DeleteNode { id } => {
                out.put_u8(tag::DELETE_NODE);
                out.put_u64(*id);
            }
            Event::CreateEdge { from, to, kind } => {
                out.put_u8(tag::CREATE_EDGE);
                out.put_u64(*from);
                out.put_u64(*to);
                out.put_bytes(kind.as_bytes());
            }
            Event::DeleteEdge { id } => {
                out.put_u8(tag::DELETE_EDGE);
                out.put_u64(*id);
            }
            Event::Upsert {
                collection,
                mode,
                records,
            } => {
                out.put_u8(tag::UPSERT);
                out.put_bytes(collection.as_bytes());
                out.put_u8(match mode {
                    UpsertMode::Upsert => 0,
                    UpsertMode::InsertOnly => 1,
                    UpsertMode::UpdateOnly => 2,
                });
                out.put_u32(records.len() as u32);
                for rec in records {
                    out.put_bytes(rec.key.as_bytes());
                    out.put_u64(rec.tag);
                    encode_opt_payload(rec.payload.as_ref(), out);
                    out.put_opt_bytes(rec.document.as_ref().map(String::as_bytes));
                    out.put_opt_bytes(rec.metadata.as_deref());
                    encode_vector(&rec.vector, out);
                }
            }
            Event::DeleteRecords {
                collection,
                target,
                max_affected,
            } => {
                out.put_u8(tag::DELETE_RECORDS);
                out.put_bytes(collection.as_bytes());
                encode_target(target, out);
                encode_opt_u64(*max_affected, out);
            }
            Event::SetPayload {
                collection,
                target,
                payload: p,
                mode,
                max_affected,
            } => {
                out.put_u8(tag::SET_PAYLOAD);
                out.put_bytes(collection.as_bytes());
                encode_target(target, out);
                payload::encode(p, out);
                out.put_u8(match mode {
                    PayloadMode::Merge => 0,
                    PayloadMode::Replace => 1,
                });
                encode_opt_u64(*max_affected, out);
            }
            Event::DeletePayloadKeys {
                collection,
                target,
                keys,
                max_affected,
            } => {
                out.put_u8(tag::DELETE_PAYLOAD_KEYS);
                out.put_bytes(collection.as_bytes());
                encode_target(target, out);
                out.put_u32(keys.len() as u32);
                for k in keys {
                    out.put_bytes(k.as_bytes());
                }
                encode_opt_u64(*max_affected, out);
            }
            Event::CreatePayloadIndex {
                collection,
                field,
                kind,
            } => {
                out.put_u8(tag::CREATE_PAYLOAD_INDEX);
                out.put_bytes(collection.as_bytes());
                out.put_bytes(field.as_bytes());
                out.put_u8(kind.tag());
            }
            Event::DropPayloadIndex { collection, field } => {
                out.put_u8(tag::DROP_PAYLOAD_INDEX);
                out.put_bytes(collection.as_bytes());
                out.put_bytes(field.as_bytes());
            }
        }
    }

    /// The canonical encoding as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes one event; the whole input must be consumed. Never panics.
    ///
    /// Decoding checks the format (lengths within limits, valid UTF-8, known tags), not the
    /// event's validity against a state: that is [`crate::Kernel::validate`]'s job.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != EVENT_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(u32::from(version)));
        }
        let event = match r.u8()? {
            tag::CREATE_COLLECTION => Event::CreateCollection(decode_spec(&mut r)?),
            tag::DROP_COLLECTION => Event::DropCollection {
                name: r.string("collection name", MAX_NAME_BYTES)?,
            },
            tag::INSERT => {
                let collection = r.string("collection name", MAX_NAME_BYTES)?;
                // Each record is at least tag (8) + metadata flag (1) + vector length (4).
                let n = r.count("batch", MAX_BATCH_RECORDS, 13)?;
                let mut records = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let tag = r.u64()?;
                    let metadata = r.opt_bytes("metadata", MAX_METADATA_BYTES)?;
                    let vector = decode_vector(&mut r)?;
                    records.push(NewRecord {
                        vector,
                        tag,
                        metadata,
                    });
                }
                Event::Insert {
                    collection,
                    records,
                }
            }
            tag::DELETE => Event::Delete {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                id: r.u64()?,
            },
            tag::CREATE_NODE => {
                let kind = r.string("node kind", MAX_KIND_BYTES)?;
                let record = RecordRef::decode_opt(&mut r)?;
                let properties = r.opt_bytes("properties", MAX_METADATA_BYTES)?;
                Event::CreateNode {
                    kind,
                    record,
                    properties,
                }
            }
            tag::DELETE_NODE => Event::DeleteNode { id: r.u64()? },
            tag::CREATE_EDGE => Event::CreateEdge {
                from: r.u64()?,
                to: r.u64()?,
                kind: r.string("edge kind", MAX_KIND_BYTES)?,
            },
            tag::DELETE_EDGE => Event::DeleteEdge { id: r.u64()? },
            tag::UPSERT => {
                let collection = r.string("collection name", MAX_NAME_BYTES)?;
                let mode = match r.u8()? {
                    0 => UpsertMode::Upsert,
                    1 => UpsertMode::InsertOnly,
                    2 => UpsertMode::UpdateOnly,
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "upsert mode",
                            tag,
                        })
                    }
                };
                // Each record is at least key (4) + tag (8) + three flags (3) + vector length (4).
                let n = r.count("batch", MAX_BATCH_RECORDS, 19)?;
                let mut records = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let key = r.string("record key", MAX_KEY_BYTES)?;
                    let tag = r.u64()?;
                    let payload = decode_opt_payload(&mut r)?;
                    let document = decode_opt_string(&mut r, "document", MAX_DOCUMENT_BYTES)?;
                    let metadata = r.opt_bytes("metadata", MAX_METADATA_BYTES)?;
                    let vector = decode_vector(&mut r)?;
                    records.push(KeyedRecord {
                        key,
                        vector,
                        tag,
                        payload,
                        document,
                        metadata,
                    });
                }
                Event::Upsert {
                    collection,
                    mode,
                    records,
                }
            }
            tag::DELETE_RECORDS => Event::DeleteRecords {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                target: decode_target(&mut r)?,
                max_affected: decode_opt_u64(&mut r)?,
            },
            tag::SET_PAYLOAD => Event::SetPayload {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                target: decode_target(&mut r)?,
                payload: payload::decode(&mut r)?,
                mode: match r.u8()? {
                    0 => PayloadMode::Merge,
                    1 => PayloadMode::Replace,
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "payload mode",
                            tag,
                        })
                    }
                },
                max_affected: decode_opt_u64(&mut r)?,
            },
            tag::DELETE_PAYLOAD_KEYS => {
                let collection = r.string("collection name", MAX_NAME_BYTES)?;
                let target = decode_target(&mut r)?;
                let n = r.count("payload keys", MAX_FILTER_VALUES, 4)?;
                let keys = (0..n)
                    .map(|_| r.string("payload key", MAX_FILTER_KEY_BYTES))
                    .collect::<Result<_, _>>()?;
                Event::DeletePayloadKeys {
                    collection,
                    target,
                    keys,
                    max_affected: decode_opt_u64(&mut r)?,
                }
            }
            tag::CREATE_PAYLOAD_INDEX => Event::CreatePayloadIndex {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                field: r.string("index field", MAX_FILTER_KEY_BYTES)?,
                kind: IndexKind::from_tag(r.u8()?)?,
            },
            tag::DROP_PAYLOAD_INDEX => Event::DropPayloadIndex {
                collection: r.string("collection name", MAX_NAME_BYTES)?,
                field: r.string("index field", MAX_FILTER_KEY_BYTES)?,
            },
            tag => return Err(DecodeError::UnknownTag { what: "event", tag }),
        };
        r.finish()?;
        Ok(event)
    }
}
