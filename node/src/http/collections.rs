//! Collections, records and search.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use valori_api as api;
use valori_kernel::limits::DEFAULT_COLLECTION;

use super::convert::{hits, record, record_in};
use super::extract::{ApiJson, ApiPath};
use super::{ApiResult, AppRef};
use crate::error::NodeError;

pub async fn create_collection(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::CreateCollection>,
) -> Result<(StatusCode, Json<api::Seq>), NodeError> {
    let seq = app.service.create_collection(body).await?;
    Ok((StatusCode::CREATED, Json(api::Seq { seq })))
}

pub async fn list_collections(State(app): State<AppRef>) -> ApiResult<api::CollectionList> {
    Ok(Json(app.service.collections().await?))
}

pub async fn get_collection(
    State(app): State<AppRef>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<api::CollectionInfo> {
    Ok(Json(app.service.collection(name).await?))
}

pub async fn drop_collection(
    State(app): State<AppRef>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<api::Seq> {
    let seq = app.service.drop_collection(name).await?;
    Ok(Json(api::Seq { seq }))
}

async fn insert_into(
    app: &AppRef,
    collection: String,
    body: api::NewRecord,
) -> ApiResult<api::Inserted> {
    let done = app
        .service
        .insert(collection, vec![record_in(body)?], false)
        .await?;
    Ok(Json(api::Inserted {
        id: done.ids[0],
        seq: done.seq,
    }))
}

async fn batch_into(
    app: &AppRef,
    collection: String,
    body: api::Batch,
) -> ApiResult<api::BatchInserted> {
    let records = body
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            record_in(r).map_err(|e| match e {
                NodeError::BadRequest(m) => NodeError::BadRequest(format!("record {i}: {m}")),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(app.service.insert(collection, records, true).await?))
}

pub async fn insert(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::NewRecord>,
) -> ApiResult<api::Inserted> {
    insert_into(&app, collection, body).await
}

pub async fn insert_default(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::NewRecord>,
) -> ApiResult<api::Inserted> {
    insert_into(&app, DEFAULT_COLLECTION.into(), body).await
}

pub async fn batch(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::Batch>,
) -> ApiResult<api::BatchInserted> {
    batch_into(&app, collection, body).await
}

pub async fn batch_default(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::Batch>,
) -> ApiResult<api::BatchInserted> {
    batch_into(&app, DEFAULT_COLLECTION.into(), body).await
}

pub async fn get_record(
    State(app): State<AppRef>,
    ApiPath((collection, id)): ApiPath<(String, u64)>,
) -> ApiResult<api::Record> {
    Ok(Json(record(app.service.get(collection, id).await?)))
}

pub async fn get_record_default(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<api::Record> {
    Ok(Json(record(
        app.service.get(DEFAULT_COLLECTION.into(), id).await?,
    )))
}

pub async fn delete_record(
    State(app): State<AppRef>,
    ApiPath((collection, id)): ApiPath<(String, u64)>,
) -> ApiResult<api::Seq> {
    let seq = app.service.delete(collection, id).await?;
    Ok(Json(api::Seq { seq }))
}

pub async fn delete_record_default(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<api::Seq> {
    let seq = app.service.delete(DEFAULT_COLLECTION.into(), id).await?;
    Ok(Json(api::Seq { seq }))
}

pub async fn search(
    State(app): State<AppRef>,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<api::SearchRequest>,
) -> ApiResult<api::SearchResults> {
    Ok(Json(hits(app.service.search(collection, body).await?)))
}

pub async fn search_default(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::SearchRequest>,
) -> ApiResult<api::SearchResults> {
    let found = app.service.search(DEFAULT_COLLECTION.into(), body).await?;
    Ok(Json(hits(found)))
}
