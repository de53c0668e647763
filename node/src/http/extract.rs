//! Extractors: JSON bodies, paths and query strings whose rejections become `{code, message}`
//! errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{request::Parts, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;

use super::AppRef;
use crate::error::NodeError;

/// A JSON body whose rejections become `{code, message}` errors.
///
/// A number with a zero fraction is an integer to JSON Schema (`2003.0` is a valid
/// `"type": "integer"`), so the API accepts one wherever it takes an integer: a body that does
/// not decode as sent is decoded once more with every integral number written as an integer.
/// Nothing else changes (a fraction or a value out of range is still refused), the usual body
/// pays nothing for it, and a body that fails both ways is refused with the first error.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppRef> for ApiJson<T> {
    type Rejection = NodeError;

    async fn from_request(req: Request, state: &AppRef) -> Result<Self, NodeError> {
        if !json_content_type(&req) {
            return Err(NodeError::BadRequest(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                NodeError::PayloadTooLarge {
                    limit: state.max_body_bytes,
                }
            } else {
                NodeError::BadRequest(format!("reading the body: {}", r.body_text()))
            }
        })?;
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(first) => {
                let integral = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|mut v| integral_numbers_as_integers(&mut v).then_some(v))
                    .and_then(|v| T::deserialize(v).ok());
                integral.map(ApiJson).ok_or_else(|| {
                    NodeError::BadRequest(format!("malformed JSON body: {}", first.body_text()))
                })
            }
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or a `+json` type).
fn json_content_type(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Writes every number with a zero fraction that an integer type can hold as that integer;
/// returns whether any changed. Exact both ways: such a number is an integer, and a field of
/// a floating-point type reads the integer back as the same double.
fn integral_numbers_as_integers(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let Some(x) = n.as_f64() else { return false };
            #[allow(clippy::float_arithmetic, clippy::float_cmp)]
            let integral = x.is_finite() && x.trunc() == x;
            // The casts saturate; the round trip says whether the value fit.
            #[allow(clippy::float_cmp, clippy::cast_precision_loss)]
            let as_int: Option<Value> = if !integral {
                None
            } else if x >= 0.0 && (x as u64) as f64 == x && x < 18_446_744_073_709_551_616.0 {
                Some(Value::from(x as u64))
            } else if x < 0.0 && (x as i64) as f64 == x {
                Some(Value::from(x as i64))
            } else {
                None
            };
            match as_int {
                Some(i) => {
                    *v = i;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, item| integral_numbers_as_integers(item) | any),
        Value::Object(fields) => fields.values_mut().fold(false, |any, field| {
            integral_numbers_as_integers(field) | any
        }),
        _ => false,
    }
}

/// A path parameter whose rejection becomes a `{code, message}` error.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppRef> for ApiPath<T> {
    type Rejection = NodeError;
    async fn from_request_parts(parts: &mut Parts, app: &AppRef) -> Result<Self, NodeError> {
        Path::<T>::from_request_parts(parts, app)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| NodeError::BadRequest(format!("bad path: {}", r.body_text())))
    }
}

/// A query string whose rejection becomes a `{code, message}` error.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppRef> for ApiQuery<T> {
    type Rejection = NodeError;
    async fn from_request_parts(parts: &mut Parts, app: &AppRef) -> Result<Self, NodeError> {
        Query::<T>::from_request_parts(parts, app)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r| NodeError::BadRequest(format!("bad query string: {}", r.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::integral_numbers_as_integers;
    use serde_json::json;

    #[test]
    fn integral_numbers_become_integers_and_nothing_else_changes() {
        let mut v = json!({"dimension": 2003.0, "k": 10, "vector": [0.5, 3.0, -2.0, 1e300],
                           "tag": 18446744073709549568.0, "x": -9.2e18, "s": "1.0"});
        assert!(integral_numbers_as_integers(&mut v));
        assert_eq!(
            v,
            json!({"dimension": 2003, "k": 10, "vector": [0.5, 3, -2, 1e300],
                   "tag": 18446744073709549568u64, "x": -9200000000000000000i64, "s": "1.0"})
        );
        let mut none = json!({"a": 0.5, "b": [1, 2], "c": 1.8446744073709552e19});
        assert!(!integral_numbers_as_integers(&mut none), "{none}");
    }
}
