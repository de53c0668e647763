//! The agent-memory messages to and from the service's types. A typed [`pb::Value`] becomes
//! the JSON value the HTTP API would have carried, and a [`pb::Filter`] the JSON filter, so that
//! both transports go through the one translation of `valori_api::memory` (and its errors name
//! the same parts: `payload.price`, `filter.must[1].range`).

use serde_json::{Map, Number, Value as Json};
use tonic::Status;
use valori_api as api;
use valori_api::memory::{Include, JsonObject, Named};

use super::pb;
use super::pb::condition::Condition as C;
use crate::error::NodeError;
use crate::service::HitOut;

fn bad(message: String) -> Status {
    Status::from(NodeError::BadRequest(message))
}

fn invalid_payload(at: &str, reason: String) -> Status {
    Status::from(NodeError::Kernel(valori_kernel::Error::InvalidPayload {
        at: at.into(),
        reason,
    }))
}

fn invalid_filter(reason: String) -> Status {
    Status::from(NodeError::Kernel(valori_kernel::Error::InvalidFilter {
        at: "filter".into(),
        reason,
    }))
}

/// A choice spelled as in the JSON bodies (the default when empty).
pub fn named<T: Named + Default>(name: &str) -> Result<T, Status> {
    if name.is_empty() {
        Ok(T::default())
    } else {
        T::parse(name).map_err(bad)
    }
}

/// A typed value as JSON; `at` names it in errors.
fn value_in(v: &pb::Value, at: &str) -> Result<Json, String> {
    use pb::value::Kind;
    Ok(match v.kind.as_ref() {
        None => return Err(format!("{at}: a value with no kind set")),
        Some(Kind::Null(_)) => Json::Null,
        Some(Kind::Bool(b)) => Json::Bool(*b),
        Some(Kind::Int(i)) => Json::from(*i),
        Some(Kind::Float(f)) => Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{at}: {f} is not a finite number"))?,
        Some(Kind::String(s)) => Json::String(s.clone()),
        Some(Kind::List(l)) => Json::Array(values_in(&l.values, at)?),
        Some(Kind::Object(p)) => Json::Object(object_in(p, at)?),
    })
}

fn values_in(values: &[pb::Value], at: &str) -> Result<Vec<Json>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| value_in(v, &format!("{at}[{i}]")))
        .collect()
}

fn object_in(p: &pb::Payload, at: &str) -> Result<JsonObject, String> {
    p.fields
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_in(v, &format!("{at}.{k}"))?)))
        .collect()
}

/// A payload as the JSON object the service takes (`{}` when absent).
pub fn payload_in(p: Option<&pb::Payload>, at: &str) -> Result<JsonObject, Status> {
    p.map_or_else(
        || Ok(Map::new()),
        |p| object_in(p, at).map_err(|r| invalid_payload(at, r)),
    )
}

/// A JSON value as a typed one (integers stay integers).
fn value_out(j: Json) -> pb::Value {
    use pb::value::Kind;
    let kind = match j {
        Json::Null => Kind::Null(pb::Null {}),
        Json::Bool(b) => Kind::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Kind::Int(i),
            None => Kind::Float(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Kind::String(s),
        Json::Array(items) => Kind::List(pb::ValueList {
            values: items.into_iter().map(value_out).collect(),
        }),
        Json::Object(o) => Kind::Object(payload_out(o)),
    };
    pb::Value { kind: Some(kind) }
}

/// A payload as its typed message.
pub fn payload_out(o: JsonObject) -> pb::Payload {
    pb::Payload {
        fields: o.into_iter().map(|(k, v)| (k, value_out(v))).collect(),
    }
}

fn condition_in(c: &pb::Condition, at: &str) -> Result<JsonObject, String> {
    let mut o = Map::new();
    match c.condition.as_ref() {
        None => return Err(format!("{at}: a condition with nothing set")),
        Some(C::Match(m)) => {
            use pb::field_match::Matcher;
            let (name, value) = match m.matcher.as_ref() {
                None => {
                    return Err(format!(
                        "{at}.match: give exactly one of \"value\", \"any\", \"except\""
                    ))
                }
                Some(Matcher::Value(v)) => ("value", value_in(v, &format!("{at}.match.value"))?),
                Some(Matcher::Any(l)) => (
                    "any",
                    Json::Array(values_in(&l.values, &format!("{at}.match.any"))?),
                ),
                Some(Matcher::Except(l)) => (
                    "except",
                    Json::Array(values_in(&l.values, &format!("{at}.match.except"))?),
                ),
            };
            o.insert("key".into(), Json::String(m.key.clone()));
            o.insert(
                "match".into(),
                Json::Object([(name.into(), value)].into_iter().collect()),
            );
        }
        Some(C::Range(r)) => {
            let mut bounds = Map::new();
            for (name, b) in [
                ("gt", &r.gt),
                ("gte", &r.gte),
                ("lt", &r.lt),
                ("lte", &r.lte),
            ] {
                if let Some(b) = b {
                    bounds.insert(name.into(), value_in(b, &format!("{at}.range.{name}"))?);
                }
            }
            o.insert("key".into(), Json::String(r.key.clone()));
            o.insert("range".into(), Json::Object(bounds));
        }
        Some(C::IsEmpty(key)) | Some(C::IsNull(key)) => {
            let name = if matches!(c.condition, Some(C::IsEmpty(_))) {
                "is_empty"
            } else {
                "is_null"
            };
            let inner = [("key".to_string(), Json::String(key.clone()))];
            o.insert(name.into(), Json::Object(inner.into_iter().collect()));
        }
        Some(C::HasKey(keys)) => {
            o.insert("has_key".into(), Json::from(keys.values.clone()));
        }
        Some(C::HasId(ids)) => {
            o.insert("has_id".into(), Json::from(ids.values.clone()));
        }
        Some(C::Tag(tags)) => {
            let any = [("any".to_string(), Json::from(tags.values.clone()))];
            o.insert("tag".into(), Json::Object(any.into_iter().collect()));
        }
        Some(C::Filter(f)) => {
            let nested = filter_lists(f, at)?;
            for (name, list) in ["must", "should", "must_not"].into_iter().zip(nested) {
                o.insert(
                    name.into(),
                    Json::Array(list.into_iter().map(Json::Object).collect()),
                );
            }
        }
    }
    Ok(o)
}

fn filter_lists(f: &pb::Filter, at: &str) -> Result<[Vec<JsonObject>; 3], String> {
    let list = |l: &[pb::Condition], name: &str| -> Result<Vec<JsonObject>, String> {
        l.iter()
            .enumerate()
            .map(|(i, c)| condition_in(c, &format!("{at}.{name}[{i}]")))
            .collect()
    };
    Ok([
        list(&f.must, "must")?,
        list(&f.should, "should")?,
        list(&f.must_not, "must_not")?,
    ])
}

/// A filter as the JSON filter the service takes.
pub fn filter_in(f: Option<&pb::Filter>) -> Result<Option<api::memory::Filter>, Status> {
    let Some(f) = f else { return Ok(None) };
    let [must, should, must_not] = filter_lists(f, "filter").map_err(invalid_filter)?;
    Ok(Some(api::memory::Filter {
        must,
        should,
        must_not,
    }))
}

/// The parts an `Include` message asks for (absent: the operation's default).
pub fn include_in(i: Option<&pb::Include>) -> Option<Vec<Include>> {
    i.map(|i| {
        [
            (i.vector, Include::Vector),
            (i.payload, Include::Payload),
            (i.document, Include::Document),
            (i.metadata, Include::Metadata),
        ]
        .into_iter()
        .filter_map(|(on, part)| on.then_some(part))
        .collect()
    })
}

/// The keys, ids or filter a write names.
pub type TargetIn = (
    Option<Vec<String>>,
    Option<Vec<u64>>,
    Option<api::memory::Filter>,
);

/// A write's target (the service refuses none or more than one).
pub fn target_in(t: Option<&pb::Target>) -> Result<TargetIn, Status> {
    use pb::target::Target as T;
    Ok(match t.and_then(|t| t.target.as_ref()) {
        None => (None, None, None),
        Some(T::Keys(k)) => (Some(k.values.clone()), None, None),
        Some(T::Ids(i)) => (None, Some(i.values.clone()), None),
        Some(T::Filter(f)) => (None, None, filter_in(Some(f))?),
    })
}

/// A search request as the service takes it.
pub fn search_in(r: pb::SearchRequest) -> Result<api::SearchRequest, Status> {
    Ok(api::SearchRequest {
        filter: filter_in(r.filter.as_ref())?,
        include: include_in(r.include.as_ref()),
        vector: r.vector,
        k: r.k.unwrap_or(crate::limits::DEFAULT_K),
        tag: r.tag,
        ef: r.ef,
        with_metadata: r.with_metadata,
        score_threshold: r.score_threshold,
        exact: r.exact,
        at_seq: r.at_seq,
        hashes: r.hashes,
    })
}

/// A hit as its message.
pub fn hit_out(h: HitOut) -> pb::Hit {
    pb::Hit {
        id: h.id,
        distance: h.distance.to_string(),
        score: crate::service::score(h.distance),
        tag: h.tag,
        metadata: h.metadata.flatten(),
        similarity: h.similarity,
        key: h.key,
        payload: h.payload.map(payload_out),
        document: h.document.flatten(),
        vector: h.vector.unwrap_or_default(),
    }
}

/// A record of an answer as its message.
pub fn record_out(r: api::MemoryRecord) -> Result<pb::MemoryRecord, Status> {
    let metadata = match r.metadata.flatten() {
        None => None,
        Some(m) => Some(crate::service::unb64("metadata", &m).map_err(Status::from)?),
    };
    Ok(pb::MemoryRecord {
        id: r.id,
        key: r.key,
        tag: r.tag,
        vector: r.vector.unwrap_or_default(),
        payload: r.payload.map(payload_out),
        document: r.document.flatten(),
        metadata,
    })
}

/// Records as their messages.
pub fn records_out(records: Vec<api::MemoryRecord>) -> Result<Vec<pb::MemoryRecord>, Status> {
    records.into_iter().map(record_out).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::value::Kind;

    fn v(kind: Kind) -> pb::Value {
        pb::Value { kind: Some(kind) }
    }

    #[test]
    fn typed_values_keep_integers_and_refuse_what_json_cannot_say() {
        let p = pb::Payload {
            fields: [
                ("n".to_string(), v(Kind::Int(i64::MIN))),
                ("f".to_string(), v(Kind::Float(2.5))),
                ("t".to_string(), v(Kind::Bool(true))),
                (
                    "l".to_string(),
                    v(Kind::List(pb::ValueList {
                        values: vec![v(Kind::Null(pb::Null {})), v(Kind::String("s".into()))],
                    })),
                ),
            ]
            .into_iter()
            .collect(),
        };
        let j = payload_in(Some(&p), "payload").unwrap();
        assert_eq!(
            Json::Object(j.clone()),
            serde_json::json!({"n": i64::MIN, "f": 2.5, "t": true, "l": [null, "s"]})
        );
        assert_eq!(payload_out(j), p);

        let nan = pb::Payload {
            fields: [("x".to_string(), v(Kind::Float(f64::NAN)))]
                .into_iter()
                .collect(),
        };
        let e = payload_in(Some(&nan), "payload").unwrap_err();
        assert!(e.message().contains("payload.x"), "{e:?}");
        let unset = pb::Payload {
            fields: [("x".to_string(), pb::Value { kind: None })]
                .into_iter()
                .collect(),
        };
        assert!(payload_in(Some(&unset), "payload").is_err());
    }

    #[test]
    fn filters_become_the_json_filter_http_takes() {
        let f = pb::Filter {
            must: vec![pb::Condition {
                condition: Some(C::Match(pb::FieldMatch {
                    key: "user".into(),
                    matcher: Some(pb::field_match::Matcher::Value(v(Kind::String(
                        "u42".into(),
                    )))),
                })),
            }],
            should: vec![
                pb::Condition {
                    condition: Some(C::Range(pb::FieldRange {
                        key: "n".into(),
                        gte: Some(v(Kind::Int(1))),
                        ..Default::default()
                    })),
                },
                pb::Condition {
                    condition: Some(C::Filter(pb::Filter {
                        must_not: vec![pb::Condition {
                            condition: Some(C::IsNull("x".into())),
                        }],
                        ..Default::default()
                    })),
                },
            ],
            must_not: vec![pb::Condition {
                condition: Some(C::Tag(pb::IdList { values: vec![3] })),
            }],
        };
        let wire = filter_in(Some(&f)).unwrap().unwrap();
        let http: api::memory::Filter = serde_json::from_value(serde_json::json!({
            "must": [{"key": "user", "match": {"value": "u42"}}],
            "should": [{"key": "n", "range": {"gte": 1}},
                       {"must": [], "should": [], "must_not": [{"is_null": {"key": "x"}}]}],
            "must_not": [{"tag": {"any": [3]}}]
        }))
        .unwrap();
        assert_eq!(wire, http);

        let empty = pb::Filter {
            must: vec![pb::Condition { condition: None }],
            ..Default::default()
        };
        let e = filter_in(Some(&empty)).unwrap_err();
        assert!(e.message().contains("filter.must[0]"), "{e:?}");
    }
}
