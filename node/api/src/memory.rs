//! The agent-memory API's bodies (records by key, JSON payloads and documents, filters, get,
//! scroll, count, writes by target, batch search, payload indexes), and the one translation of
//! JSON payloads and filters into the kernel's exact types, which names the offending part of
//! bad input (`records[2].payload.price`, `filter.must[1].range`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use valori_kernel::limits::{
    MAX_BATCH_RECORDS, MAX_DIMENSION, MAX_FILTER_CONDITIONS, MAX_KEY_BYTES,
};
use valori_kernel::{Condition, Filter as KFilter, Match, Number, Payload, Range, Value};

use crate::limits::{DEFAULT_SCROLL_PAGE, MAX_GET_ITEMS, MAX_SCROLL_PAGE, MAX_SEARCH_BATCH};
use crate::wire::{base64_of_64k, q16_components, SearchRequest};

/// A JSON object: a record's payload.
pub type JsonObject = Map<String, Json>;

/// A filter: every `must` condition holds, at least one `should` (when any), no `must_not`.
/// A condition is one of `{"key": "a.b", "match": {"value" | "any" | "except": ...}}`,
/// `{"key", "range": {"gt", "gte", "lt", "lte"}}`, `{"is_empty": {"key"}}`,
/// `{"is_null": {"key"}}`, `{"has_key": [...]}`, `{"has_id": [...]}`, `{"tag": {"any":
/// [...]}}`, or a nested filter. Bounded: depth 8, 64 conditions, 1,024 values per list.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// All must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_FILTER_CONDITIONS))]
    pub must: Vec<JsonObject>,
    /// At least one must hold, when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_FILTER_CONDITIONS))]
    pub should: Vec<JsonObject>,
    /// None may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_FILTER_CONDITIONS))]
    pub must_not: Vec<JsonObject>,
}

/// What a record in an answer carries besides its id, key and tag.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Include {
    /// Its vector's components.
    Vector,
    /// Its payload (`{}` when it has none).
    Payload,
    /// Its document (null when it has none).
    Document,
    /// Its metadata, base64 (null when it has none).
    Metadata,
}

/// What answers carry when a request names no `include`: payload and document.
pub const DEFAULT_INCLUDE: &[Include] = &[Include::Payload, Include::Document];

/// How an upsert treats keys that exist or not.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpsertMode {
    /// Replace a record whose key exists, insert one whose key does not.
    #[default]
    Upsert,
    /// Refuse the whole batch (409 `key_exists`) if a key exists.
    InsertOnly,
    /// Refuse the whole batch (404 `key_not_found`) if a key does not exist.
    UpdateOnly,
}

/// A record of an upsert.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpsertRecord {
    /// The record's identity: 1 to 512 bytes of UTF-8, compared bytewise, never normalised.
    #[schemars(length(min = 1, max = MAX_KEY_BYTES))]
    pub key: String,
    /// Components, converted exactly to Q16.16.
    #[schemars(length(min = 1, max = MAX_DIMENSION), transform = q16_components)]
    pub vector: Vec<f64>,
    /// Tag (0 when absent).
    #[serde(default)]
    pub tag: u64,
    /// A JSON object: integers are i64, floats finite (no NaN or infinities), `10.0` is `10`;
    /// at most 64 KiB encoded and 16 levels deep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<JsonObject>,
    /// Text, up to 64 KiB of UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Opaque bytes, up to 64 KiB, base64 (padded, canonical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = base64_of_64k)]
    pub metadata: Option<String>,
}

/// `POST .../records/upsert`: all or nothing, in order.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upsert {
    /// Records with distinct keys.
    #[schemars(length(min = 1, max = MAX_BATCH_RECORDS))]
    pub records: Vec<UpsertRecord>,
    /// `upsert` when absent.
    #[serde(default)]
    pub mode: UpsertMode,
}

/// An upsert's result.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct Upserted {
    /// Each record's id, in the batch's order (an unchanged vector keeps its id).
    pub ids: Vec<u64>,
    /// The event's sequence number.
    pub seq: u64,
}

/// `POST .../records/get`: by keys or by ids (one of them).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GetRecords {
    /// Keys, answered in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GET_ITEMS))]
    pub keys: Option<Vec<String>>,
    /// Ids, answered in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GET_ITEMS))]
    pub ids: Option<Vec<u64>>,
    /// What each record carries (payload and document when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<Include>>,
}

/// A key or an id a get did not find.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Missing {
    /// A key.
    Key(String),
    /// An id.
    Id(u64),
}

/// A record in an answer: id, key and tag, and what `include` asked for.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct MemoryRecord {
    /// Id (names this version of the record).
    pub id: u64,
    /// Key (null for a record written without one).
    pub key: Option<String>,
    /// Tag.
    pub tag: u64,
    /// Components, when included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f64>>,
    /// Payload, when included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<JsonObject>,
    /// Document, when included (null when it has none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::present"
    )]
    pub document: Option<Option<String>>,
    /// Metadata, base64, when included (null when it has none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::present"
    )]
    #[schemars(extend("contentEncoding" = "base64"))]
    pub metadata: Option<Option<String>>,
}

/// A get's answer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct Records {
    /// The records found, in the order asked.
    pub records: Vec<MemoryRecord>,
    /// The keys or ids not found, in the order asked.
    pub missing: Vec<Missing>,
    /// The sequence number of the state read.
    pub seq: u64,
}

fn default_scroll_page() -> u32 {
    DEFAULT_SCROLL_PAGE
}

/// `POST .../records/scroll`: records by ascending id, a page at a time.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scroll {
    /// Only records it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Records per page (100 when absent).
    #[serde(default = "default_scroll_page")]
    #[schemars(range(min = 1, max = MAX_SCROLL_PAGE))]
    pub limit: u32,
    /// The previous page's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,20}$"))]
    pub cursor: Option<String>,
    /// What each record carries (payload and document when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<Include>>,
}

/// A scroll page.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ScrollPage {
    /// Records in ascending id order.
    pub records: Vec<MemoryRecord>,
    /// Pass it back for the next page; null after the last. A record left unchanged between
    /// pages is visited exactly once.
    pub next_cursor: Option<String>,
    /// The sequence number of the state read.
    pub seq: u64,
}

/// `POST .../records/count`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// Only records it matches (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// A count.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// Exact number of matching records.
    pub count: u64,
    /// The sequence number of the state read.
    pub seq: u64,
}

/// `POST .../records/delete`: by keys, ids or a filter (one of them); keys and ids with no
/// record are ignored.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteRecords {
    /// Keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BATCH_RECORDS))]
    pub keys: Option<Vec<String>>,
    /// Ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BATCH_RECORDS))]
    pub ids: Option<Vec<u64>>,
    /// A filter, resolved when the event applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Refuse the whole write (400 `too_many_affected`) if more records would be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_affected: Option<u64>,
}

/// A delete's result.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Records deleted.
    pub deleted: u64,
    /// The event's sequence number.
    pub seq: u64,
}

/// How a payload write combines with stored payloads.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PayloadMode {
    /// Set the given top-level keys, keep the others.
    #[default]
    Merge,
    /// Replace the whole payload.
    Replace,
}

/// `POST .../records/payload`: by keys, ids or a filter (one of them).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SetPayload {
    /// Keys (those with no record are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BATCH_RECORDS))]
    pub keys: Option<Vec<String>>,
    /// Ids (those with no live record are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BATCH_RECORDS))]
    pub ids: Option<Vec<u64>>,
    /// A filter, resolved when the event applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// The payload to merge or replace with.
    pub payload: JsonObject,
    /// `merge` when absent.
    #[serde(default)]
    pub mode: PayloadMode,
    /// Refuse the whole write (400 `too_many_affected`) if more records would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_affected: Option<u64>,
}

/// `POST .../records/payload/delete`: removes top-level payload keys.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeletePayloadKeys {
    /// Keys (those with no record are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BATCH_RECORDS))]
    pub keys: Option<Vec<String>>,
    /// Ids (those with no live record are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_BATCH_RECORDS))]
    pub ids: Option<Vec<u64>>,
    /// A filter, resolved when the event applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// The top-level payload keys to remove.
    #[schemars(length(min = 1, max = 1024))]
    pub fields: Vec<String>,
    /// Refuse the whole write if more records would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_affected: Option<u64>,
}

/// A payload write's result.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Updated {
    /// Records written.
    pub updated: u64,
    /// The event's sequence number.
    pub seq: u64,
}

/// `POST .../search/batch`: every search answered from one state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchBatch {
    /// The searches.
    #[schemars(length(min = 1, max = MAX_SEARCH_BATCH))]
    pub searches: Vec<SearchRequest>,
}

/// One search's hits within a batch.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct BatchHits {
    /// Nearest first, ties by id.
    pub results: Vec<crate::wire::SearchHit>,
}

/// A batch search's answer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct SearchBatchResults {
    /// One entry per search, in order.
    pub results: Vec<BatchHits>,
    /// The one sequence number every search read.
    pub seq: u64,
}

/// Which values a payload index holds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Strings.
    Keyword,
    /// Integers.
    Integer,
    /// Booleans.
    Bool,
}

/// `POST .../indexes`: declares a payload index (it changes how fast filters on the field run,
/// never what they return).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PayloadIndex {
    /// The field's path, as filters name it (`user_id`, `meta.source`).
    #[schemars(length(min = 1, max = 512))]
    pub field: String,
    /// Which values it holds.
    pub kind: IndexKind,
}

/// A collection's payload indexes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct PayloadIndexes {
    /// By field.
    pub indexes: Vec<PayloadIndex>,
    /// The sequence number of the state read.
    pub seq: u64,
}

/// A name as the JSON bodies spell it (`"insert_only"`, `"keyword"`...), for transports that
/// carry these choices as strings (gRPC, Python); the error lists the names there are.
pub trait Named: Sized + Copy + 'static {
    /// Every value with its name.
    const NAMES: &'static [(&'static str, Self)];
    /// What the choice is called in errors.
    const WHAT: &'static str;

    /// The value called `name`.
    fn parse(name: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                format!("unknown {} {name:?}: use {}", Self::WHAT, names.join(", "))
            })
    }

    /// This value's name.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }
}

impl Named for UpsertMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("upsert", UpsertMode::Upsert),
        ("insert_only", UpsertMode::InsertOnly),
        ("update_only", UpsertMode::UpdateOnly),
    ];
    const WHAT: &'static str = "upsert mode";
}

impl Named for PayloadMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("merge", PayloadMode::Merge),
        ("replace", PayloadMode::Replace),
    ];
    const WHAT: &'static str = "payload mode";
}

impl Named for IndexKind {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("keyword", IndexKind::Keyword),
        ("integer", IndexKind::Integer),
        ("bool", IndexKind::Bool),
    ];
    const WHAT: &'static str = "index kind";
}

impl Named for Include {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("vector", Include::Vector),
        ("payload", Include::Payload),
        ("document", Include::Document),
        ("metadata", Include::Metadata),
    ];
    const WHAT: &'static str = "include";
}

// ---------------------------------------------------------------------------------------------
// JSON to the kernel's exact values, and back

/// A JSON value in the kernel's canonical form; `at` names it in errors.
pub fn value_from_json(j: &Json, at: &str) -> Result<Value, String> {
    Ok(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_u64() {
                return Err(format!(
                    "{at}: integer {n} is beyond the 64-bit signed range"
                ));
            } else {
                let f = n
                    .as_f64()
                    .ok_or_else(|| format!("{at}: {n} is not a finite number"))?;
                Value::float(f.to_bits()).map_err(|e| format!("{at}: {e}"))?
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| value_from_json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => Value::Object(object_from_json(map, at)?),
    })
}

fn object_from_json(map: &JsonObject, at: &str) -> Result<Payload, String> {
    map.iter()
        .map(|(k, v)| Ok((k.clone(), value_from_json(v, &format!("{at}.{k}"))?)))
        .collect()
}

/// A payload from a JSON object, checked for size and depth; `at` names it in errors.
pub fn payload_from_json(map: &JsonObject, at: &str) -> Result<Payload, String> {
    let p = object_from_json(map, at)?;
    valori_kernel::payload::check(&p).map_err(|e| format!("{at}: {e}"))?;
    Ok(p)
}

/// A kernel value as JSON (floats by their exact value).
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(bits) => {
            serde_json::Number::from_f64(f64::from_bits(*bits)).map_or(Json::Null, Json::Number)
        }
        Value::String(s) => Json::String(s.clone()),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Object(p) => Json::Object(payload_to_json(p)),
    }
}

/// A payload as a JSON object.
pub fn payload_to_json(p: &Payload) -> JsonObject {
    p.iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn number_from_json(j: &Json, at: &str) -> Result<Number, String> {
    match value_from_json(j, at)? {
        Value::Int(i) => Ok(Number::Int(i)),
        Value::Float(b) => Ok(Number::Float(b)),
        other => Err(format!(
            "{at}: a range bound is a number, not {}",
            other.type_name()
        )),
    }
}

fn str_field<'a>(o: &'a JsonObject, name: &str, at: &str) -> Result<&'a str, String> {
    o.get(name)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("{at}: \"{name}\" must be a string"))
}

fn only(o: &JsonObject, allowed: &[&str], at: &str) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{at}: unexpected field {k:?} (expected {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn list<'a>(j: &'a Json, at: &str) -> Result<&'a Vec<Json>, String> {
    j.as_array().ok_or_else(|| format!("{at}: must be a list"))
}

fn u64_list(j: &Json, at: &str) -> Result<Vec<u64>, String> {
    list(j, at)?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64()
                .ok_or_else(|| format!("{at}[{i}]: must be an unsigned 64-bit integer"))
        })
        .collect()
}

fn condition_from_json(o: &JsonObject, at: &str) -> Result<Condition, String> {
    if let Some(m) = o.get("match") {
        only(o, &["key", "match"], at)?;
        let key = str_field(o, "key", at)?.to_string();
        let m = m
            .as_object()
            .ok_or_else(|| format!("{at}.match: must be an object"))?;
        if m.len() != 1 {
            return Err(format!(
                "{at}.match: give exactly one of \"value\", \"any\", \"except\""
            ));
        }
        let values = |j: &Json, at: String| -> Result<Vec<Value>, String> {
            list(j, &at)?
                .iter()
                .enumerate()
                .map(|(i, v)| value_from_json(v, &format!("{at}[{i}]")))
                .collect()
        };
        let matcher = if let Some(v) = m.get("value") {
            Match::Value(value_from_json(v, &format!("{at}.match.value"))?)
        } else if let Some(v) = m.get("any") {
            Match::Any(values(v, format!("{at}.match.any"))?)
        } else if let Some(v) = m.get("except") {
            Match::Except(values(v, format!("{at}.match.except"))?)
        } else {
            return Err(format!(
                "{at}.match: give exactly one of \"value\", \"any\", \"except\""
            ));
        };
        return Ok(Condition::Match { key, matcher });
    }
    if let Some(r) = o.get("range") {
        only(o, &["key", "range"], at)?;
        let key = str_field(o, "key", at)?.to_string();
        let r = r
            .as_object()
            .ok_or_else(|| format!("{at}.range: must be an object"))?;
        only(r, &["gt", "gte", "lt", "lte"], &format!("{at}.range"))?;
        let bound = |name: &str| {
            r.get(name)
                .map(|j| number_from_json(j, &format!("{at}.range.{name}")))
                .transpose()
        };
        return Ok(Condition::Range {
            key,
            range: Range {
                gt: bound("gt")?,
                gte: bound("gte")?,
                lt: bound("lt")?,
                lte: bound("lte")?,
            },
        });
    }
    for (name, null) in [("is_empty", false), ("is_null", true)] {
        if let Some(inner) = o.get(name) {
            only(o, &[name], at)?;
            let inner = inner
                .as_object()
                .ok_or_else(|| format!("{at}.{name}: must be an object {{\"key\": ...}}"))?;
            only(inner, &["key"], &format!("{at}.{name}"))?;
            let key = str_field(inner, "key", &format!("{at}.{name}"))?.to_string();
            return Ok(if null {
                Condition::IsNull { key }
            } else {
                Condition::IsEmpty { key }
            });
        }
    }
    if let Some(keys) = o.get("has_key") {
        only(o, &["has_key"], at)?;
        let keys = list(keys, &format!("{at}.has_key"))?
            .iter()
            .enumerate()
            .map(|(i, k)| {
                k.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{at}.has_key[{i}]: must be a string"))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Condition::HasKey(keys));
    }
    if let Some(ids) = o.get("has_id") {
        only(o, &["has_id"], at)?;
        return Ok(Condition::HasId(u64_list(ids, &format!("{at}.has_id"))?));
    }
    if let Some(t) = o.get("tag") {
        only(o, &["tag"], at)?;
        let any = t
            .as_object()
            .filter(|t| t.len() == 1)
            .and_then(|t| t.get("any"))
            .ok_or_else(|| format!("{at}.tag: must be {{\"any\": [tags]}}"))?;
        return Ok(Condition::Tag(u64_list(any, &format!("{at}.tag.any"))?));
    }
    if o.contains_key("must") || o.contains_key("should") || o.contains_key("must_not") {
        only(o, &["must", "should", "must_not"], at)?;
        let lists = |name: &str| -> Result<Vec<Condition>, String> {
            match o.get(name) {
                None => Ok(Vec::new()),
                Some(l) => list(l, &format!("{at}.{name}"))?
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let at = format!("{at}.{name}[{i}]");
                        let c = c
                            .as_object()
                            .ok_or_else(|| format!("{at}: a condition is an object"))?;
                        condition_from_json(c, &at)
                    })
                    .collect(),
            }
        };
        return Ok(Condition::Nested(KFilter {
            must: lists("must")?,
            should: lists("should")?,
            must_not: lists("must_not")?,
        }));
    }
    Err(format!(
        "{at}: not a condition (expected \"match\", \"range\", \"is_empty\", \"is_null\", \"has_key\", \"has_id\", \"tag\" or a nested filter)"
    ))
}

/// The kernel's filter from the wire's, checked against every bound; errors name the part.
pub fn filter_from_wire(f: &Filter) -> Result<KFilter, String> {
    let convert = |l: &[JsonObject], name: &str| -> Result<Vec<Condition>, String> {
        l.iter()
            .enumerate()
            .map(|(i, c)| condition_from_json(c, &format!("filter.{name}[{i}]")))
            .collect()
    };
    let filter = KFilter {
        must: convert(&f.must, "must")?,
        should: convert(&f.should, "should")?,
        must_not: convert(&f.must_not, "must_not")?,
    };
    filter.check().map_err(|e| e.to_string())?;
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(j: Json) -> Result<KFilter, String> {
        filter_from_wire(&serde_json::from_value(j).map_err(|e| e.to_string())?)
    }

    #[test]
    fn filters_translate_and_errors_name_the_part() {
        let f = filter(json!({"must": [
            {"key": "user_id", "match": {"value": "u42"}},
            {"key": "n", "range": {"gte": 10.0, "lt": 2.5}},
            {"should": [{"is_null": {"key": "x"}}, {"tag": {"any": [1, 2]}}]}
        ]}))
        .unwrap();
        assert_eq!(f.must.len(), 3);
        assert_eq!(
            f.must[1],
            Condition::Range {
                key: "n".into(),
                range: Range {
                    gte: Some(Number::Int(10)),
                    lt: Some(Number::Float(2.5f64.to_bits())),
                    ..Range::default()
                }
            }
        );
        for (bad, part) in [
            (
                json!({"must": [{"key": "a", "match": {"value": 1, "any": [1]}}]}),
                "filter.must[0].match",
            ),
            (
                json!({"must": [{"key": "a", "range": {"gt": "x"}}]}),
                "filter.must[0].range.gt",
            ),
            (json!({"should": [{"nope": 1}]}), "filter.should[0]"),
            (
                json!({"must_not": [{"has_id": [-1]}]}),
                "filter.must_not[0].has_id[0]",
            ),
            (
                json!({"must": [{"must": [{"key": "a", "match": {"value": {"o": 1}}}]}]}),
                "filter.must[0]",
            ),
            (
                json!({"must": [{"key": "a", "match": {"any": []}}]}),
                "filter.must[0]",
            ),
        ] {
            let e = filter(bad.clone()).unwrap_err();
            assert!(e.contains(part), "{bad}: {e}");
        }
    }

    #[test]
    fn a_part_included_but_empty_reads_back_as_null() {
        let r = MemoryRecord {
            id: 1,
            key: None,
            tag: 0,
            vector: None,
            payload: None,
            document: Some(None),
            metadata: None,
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j, json!({"id": 1, "key": null, "tag": 0, "document": null}));
        assert_eq!(serde_json::from_value::<MemoryRecord>(j).unwrap(), r);
        let hit: crate::wire::SearchHit = serde_json::from_value(json!({
            "id": 1, "distance": 0, "score": 0.0, "similarity": 0.0, "key": null, "tag": 0,
            "metadata": null
        }))
        .unwrap();
        assert_eq!((hit.metadata, hit.document), (Some(None), None));
    }

    #[test]
    fn names_are_the_json_spellings() {
        fn check<T: Named + PartialEq + Serialize + std::fmt::Debug>() {
            for (name, v) in T::NAMES {
                assert_eq!(serde_json::to_value(v).unwrap(), json!(name));
                assert_eq!(T::parse(name).unwrap(), *v);
                assert_eq!(v.name(), *name);
            }
            let e = T::parse("nope").unwrap_err();
            assert!(e.contains(T::NAMES[0].0), "{e}");
        }
        check::<UpsertMode>();
        check::<PayloadMode>();
        check::<IndexKind>();
        check::<Include>();
    }

    #[test]
    fn payloads_are_canonical_and_round_trip() {
        let j = json!({"b": 10.0, "a": [1, 2.5, null, true, "s"], "c": {"d": -7}});
        let p = payload_from_json(j.as_object().unwrap(), "payload").unwrap();
        assert_eq!(p["b"], Value::Int(10));
        let back = Json::Object(payload_to_json(&p));
        assert_eq!(
            back,
            json!({"a": [1, 2.5, null, true, "s"], "b": 10, "c": {"d": -7}})
        );
        let big = json!({"n": 18446744073709551615u64});
        let e = payload_from_json(big.as_object().unwrap(), "payload").unwrap_err();
        assert!(e.contains("payload.n"), "{e}");
        let mut deep = json!(1);
        for _ in 0..16 {
            deep = json!([deep]);
        }
        let e = payload_from_json(json!({"d": deep}).as_object().unwrap(), "payload").unwrap_err();
        assert!(e.contains("deeper"), "{e}");
    }
}
