//! The agent-memory routes: records by key, get, scroll, count, writes by target, batch search
//! and payload indexes.

use axum::extract::State;
use axum::Json;
use valori_api as api;

use super::extract::{ApiJson, ApiPath};
use super::{ApiResult, AppRef};
use crate::service::hit_to_wire;

pub async fn upsert(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::Upsert>,
) -> ApiResult<api::Upserted> {
    Ok(Json(app.service.upsert(collection, body).await?))
}

pub async fn get_records(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::GetRecords>,
) -> ApiResult<api::Records> {
    Ok(Json(app.service.get_records(collection, body).await?))
}

pub async fn scroll(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::Scroll>,
) -> ApiResult<api::ScrollPage> {
    Ok(Json(app.service.scroll(collection, body).await?))
}

pub async fn count(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::Count>,
) -> ApiResult<api::Counted> {
    Ok(Json(app.service.count(collection, body).await?))
}

pub async fn delete_records(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::DeleteRecords>,
) -> ApiResult<api::Deleted> {
    Ok(Json(app.service.delete_records(collection, body).await?))
}

pub async fn set_payload(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::SetPayload>,
) -> ApiResult<api::Updated> {
    Ok(Json(app.service.set_payload(collection, body).await?))
}

pub async fn delete_payload_keys(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::DeletePayloadKeys>,
) -> ApiResult<api::Updated> {
    Ok(Json(
        app.service.delete_payload_keys(collection, body).await?,
    ))
}

pub async fn search_batch(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::SearchBatch>,
) -> ApiResult<api::SearchBatchResults> {
    let found = app.service.search_batch(collection, body).await?;
    Ok(Json(api::SearchBatchResults {
        results: found
            .results
            .into_iter()
            .map(|hits| api::BatchHits {
                results: hits.into_iter().map(hit_to_wire).collect(),
            })
            .collect(),
        seq: found.seq,
    }))
}

pub async fn list_payload_indexes(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
) -> ApiResult<api::PayloadIndexes> {
    Ok(Json(app.service.payload_indexes(collection).await?))
}

pub async fn create_payload_index(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::PayloadIndex>,
) -> ApiResult<api::Seq> {
    let seq = app.service.create_payload_index(collection, body).await?;
    Ok(Json(api::Seq { seq }))
}

pub async fn drop_payload_index(
    State(app): State<AppRef>,
    ApiPath((collection, field)): ApiPath<(String, String)>,
) -> ApiResult<api::Seq> {
    let seq = app.service.drop_payload_index(collection, field).await?;
    Ok(Json(api::Seq { seq }))
}
