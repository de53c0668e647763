//! Extractors: JSON bodies, paths and query strings whose rejections become `{code, message}`
//! errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{request::Parts, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;

use super::AppRef;
use crate::error::NodeError;

/// A JSON body whose rejections become `{code, message}` errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppRef> for ApiJson<T> {
    type Rejection = NodeError;

    async fn from_request(req: Request, state: &AppRef) -> Result<Self, NodeError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(match rej {
                JsonRejection::MissingJsonContentType(_) => {
                    NodeError::BadRequest("expected Content-Type: application/json".into())
                }
                r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => NodeError::PayloadTooLarge {
                    limit: state.max_body_bytes,
                },
                r => NodeError::BadRequest(format!("malformed JSON body: {}", r.body_text())),
            }),
        }
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
