//! The knowledge graph: nodes, edges, neighbours and traversal.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use valori_api as api;

use super::convert::{node, unb64};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiResult, AppRef};
use crate::error::NodeError;

pub async fn create_node(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::CreateNode>,
) -> Result<(StatusCode, Json<api::Created>), NodeError> {
    let properties = body
        .properties
        .map(|p| unb64("properties", &p))
        .transpose()?;
    let created = app
        .service
        .create_node(body.kind, body.record, properties)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn create_edge(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::CreateEdge>,
) -> Result<(StatusCode, Json<api::Created>), NodeError> {
    Ok((
        StatusCode::CREATED,
        Json(app.service.create_edge(body).await?),
    ))
}

pub async fn get_node(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<api::GraphNode> {
    Ok(Json(node(id, app.service.node(id).await?)))
}

pub async fn get_edge(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<api::GraphEdge> {
    let e = app.service.edge(id).await?;
    Ok(Json(api::GraphEdge {
        id,
        from: e.from,
        to: e.to,
        kind: e.kind,
    }))
}

pub async fn delete_node(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<api::Seq> {
    let seq = app.service.delete_node(id).await?;
    Ok(Json(api::Seq { seq }))
}

pub async fn delete_edge(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<api::Seq> {
    let seq = app.service.delete_edge(id).await?;
    Ok(Json(api::Seq { seq }))
}

pub async fn neighbors(
    State(app): State<AppRef>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<api::NeighborsQuery>,
) -> ApiResult<api::Neighbors> {
    let kinds: Vec<String> = q
        .kind
        .map(|k| {
            k.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let found = app
        .service
        .neighbors(id, q.direction.unwrap_or_default(), kinds)
        .await?;
    Ok(Json(found))
}

pub async fn traverse(
    State(app): State<AppRef>,
    ApiJson(body): ApiJson<api::TraverseRequest>,
) -> ApiResult<api::Traversal> {
    Ok(Json(app.service.traverse(body).await?))
}
