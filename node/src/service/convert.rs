//! Client values to the kernel's, exactly: floats to Q16.16, names to enums, and the kernel's
//! descriptions to the API's.

use valori_api as api;
use valori_kernel::{Direction, Fixed, IndexSpec, Metric, NewRecord};

use super::RecordIn;
use crate::error::NodeError;

/// Converts client floats exactly to Q16.16, naming the first bad component.
pub fn to_fixed(v: &[f64]) -> Result<Vec<Fixed>, NodeError> {
    v.iter()
        .enumerate()
        .map(|(index, &x)| Fixed::from_f64(x).map_err(|error| NodeError::Value { index, error }))
        .collect()
}

/// Converts client records to kernel records (exact Q16.16), naming the first bad component
/// and, when `batch`, its record.
pub fn to_new_records(records: Vec<RecordIn>, batch: bool) -> Result<Vec<NewRecord>, NodeError> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(NewRecord {
                vector: record_vector(i, &r.vector, batch)?,
                tag: r.tag,
                metadata: r.metadata,
            })
        })
        .collect()
}

/// Converts record `i`'s vector, reporting a bad component with the record's position when
/// `batch`.
pub fn record_vector(i: usize, vector: &[f64], batch: bool) -> Result<Vec<Fixed>, NodeError> {
    to_fixed(vector).map_err(|e| match e {
        NodeError::Value { index, error } if batch => {
            NodeError::BadRequest(format!("record {i}: vector component {index}: {error}"))
        }
        other => other,
    })
}

/// Base64 of bytes, as the API carries metadata, properties and events.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes from base64, naming the field when it is not valid.
pub fn unb64(what: &str, s: &str) -> Result<Vec<u8>, NodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| NodeError::BadRequest(format!("{what} is not valid base64: {e}")))
}

/// A search distance as a similarity, higher is closer: the cosine for `cosine` (the distance
/// is `2^33 * (1 - cosine)`), the dot product for `ip`, minus the distance in float units for
/// `l2`. Output and `score_threshold` only; ordering uses the exact integer.
#[allow(clippy::float_arithmetic)]
pub fn similarity(metric: Metric, distance: i128) -> f64 {
    match metric {
        Metric::Cosine => 1.0 - distance as f64 / 8_589_934_592.0,
        // `0.0 - x`, not `-x`: an exact match has similarity 0, not -0.
        Metric::InnerProduct | Metric::L2 => 0.0 - score(distance),
    }
}

/// A search distance in float units (distance / 2^32): squared L2 for `l2` and `cosine`, the
/// negated inner product for `ip`. Output only; ordering uses the exact integer.
#[allow(clippy::float_arithmetic)]
pub fn score(distance: i128) -> f64 {
    distance as f64 / 4_294_967_296.0
}

/// Parses a metric name (`l2` when empty), for clients that name it in a string.
pub fn parse_metric(m: &str) -> Result<api::Metric, NodeError> {
    match m {
        "" => Ok(api::Metric::L2),
        m => Metric::parse(m).map(metric_to_wire).ok_or_else(|| {
            NodeError::BadRequest(format!("unknown metric {m:?}: use l2, ip or cosine"))
        }),
    }
}

/// Parses a traversal direction (`out` when empty), for clients that name it in a string.
pub fn parse_direction(d: &str) -> Result<api::Direction, NodeError> {
    match d {
        "out" | "" => Ok(api::Direction::Out),
        "in" => Ok(api::Direction::In),
        "both" => Ok(api::Direction::Both),
        other => Err(NodeError::BadRequest(format!(
            "unknown direction {other:?}: use out, in or both"
        ))),
    }
}

/// The kernel's metric as the API names it.
pub fn metric_to_wire(m: Metric) -> api::Metric {
    match m {
        Metric::L2 => api::Metric::L2,
        Metric::InnerProduct => api::Metric::Ip,
        Metric::Cosine => api::Metric::Cosine,
    }
}

pub(super) fn metric_from_wire(m: api::Metric) -> Metric {
    match m {
        api::Metric::L2 => Metric::L2,
        api::Metric::Ip => Metric::InnerProduct,
        api::Metric::Cosine => Metric::Cosine,
    }
}

pub(super) fn direction_from_wire(d: api::Direction) -> Direction {
    match d {
        api::Direction::Out => Direction::Out,
        api::Direction::In => Direction::In,
        api::Direction::Both => Direction::Both,
    }
}

/// A collection's description, the one every API gives.
pub fn collection_info(c: &valori_kernel::Collection) -> api::CollectionInfo {
    let s = c.spec();
    api::CollectionInfo {
        name: s.name.clone(),
        dimension: s.dimension,
        metric: metric_to_wire(s.metric),
        index: match s.index {
            IndexSpec::Flat => api::IndexInfo::Flat,
            IndexSpec::Hnsw(p) => api::IndexInfo::Hnsw {
                m: p.m,
                ef_construction: p.ef_construction,
                ef_search: p.ef_search,
            },
        },
        records: c.len(),
        next_id: c.next_id(),
    }
}

/// Counts the bytes of a response as it is built, and refuses it past the limit before it is
/// built whole.
pub struct ResponseSize {
    bytes: usize,
    max: usize,
}

impl ResponseSize {
    /// A response of at most `max` bytes.
    pub fn new(max: usize) -> ResponseSize {
        ResponseSize { bytes: 0, max }
    }

    pub(super) fn add(&mut self, n: usize) -> Result<(), NodeError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max {
            return Err(NodeError::Limit {
                what: "the response's size in bytes (--max-response-bytes; ask for fewer results or without metadata)",
                value: self.bytes as u64,
                max: self.max as u64,
            });
        }
        Ok(())
    }
}

/// The length of `n` bytes in base64.
pub(super) fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}
