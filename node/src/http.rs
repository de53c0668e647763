//! The HTTP/JSON API (axum). Routes are listed in [`ROUTES`], which `/openapi.json` describes.
//!
//! Conventions: request and response bodies are JSON; vectors are arrays of numbers converted
//! exactly to Q16.16 (a component that is not finite or out of range is a 400 naming its
//! position); metadata and node properties are base64 strings; errors are
//! `{"code": "...", "message": "..."}` with 4xx for the caller's mistakes and 5xx for the
//! server's. Distances are exact integers (`distance`, see the metric's units) with `score`, the
//! same value in float units, for convenience.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use valori_kernel::limits::DEFAULT_COLLECTION;
use valori_kernel::IndexSpec;

use crate::config::limits::MAX_SNAPSHOT_UPLOAD_BYTES;
use crate::engine::Engine;
use crate::error::NodeError;
use crate::service::{blocking, score, Access, IndexIn, Keys, RecordIn, Service};

/// Shared state of the HTTP server.
pub struct App {
    /// The operations.
    pub service: Service,
    /// The engine (health, metrics, state, snapshots).
    pub engine: Engine,
    /// The API keys.
    pub keys: Keys,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Followers seen on `/v1/log` (by their `x-valori-follower` header): confirmed sequence
    /// number and when they last asked.
    pub followers: std::sync::Mutex<std::collections::BTreeMap<String, (u64, Instant)>>,
}

type AppRef = Arc<App>;

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
            message: String,
        }
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = Body {
            code: self.code(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let NodeError::PayloadTooLarge { .. } = self {
            // The rest of the body is never read, so the connection cannot carry another
            // request; say so, or a pooling client reuses it and its next request fails.
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

type ApiResult<T> = Result<Json<T>, NodeError>;

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

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok())
}

fn access(app: &App, headers: &HeaderMap) -> Result<Access, NodeError> {
    app.keys.check(presented_key(headers))
}

/// Extractor: the request may read (any configured key, or none configured).
pub struct CanRead;
/// Extractor: the request may write and administer (the read-write key, or none configured).
pub struct CanWrite;

impl FromRequestParts<AppRef> for CanRead {
    type Rejection = NodeError;
    async fn from_request_parts(parts: &mut Parts, app: &AppRef) -> Result<Self, NodeError> {
        access(app, &parts.headers).map(|_| CanRead)
    }
}

impl FromRequestParts<AppRef> for CanWrite {
    type Rejection = NodeError;
    async fn from_request_parts(parts: &mut Parts, app: &AppRef) -> Result<Self, NodeError> {
        match access(app, &parts.headers)? {
            Access::Write => Ok(CanWrite),
            Access::Read => Err(NodeError::Forbidden),
        }
    }
}

fn hex32(h: &[u8; 32]) -> String {
    hex::encode(h)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(what: &str, s: &str) -> Result<Vec<u8>, NodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| NodeError::BadRequest(format!("{what} is not valid base64: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Collections

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCollectionBody {
    name: String,
    dimension: u32,
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    index: Option<IndexBody>,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum IndexBody {
    Flat,
    Hnsw {
        #[serde(default)]
        m: Option<u16>,
        #[serde(default)]
        ef_construction: Option<u16>,
        #[serde(default)]
        ef_search: Option<u16>,
    },
}

#[derive(Serialize)]
struct CollectionInfo {
    name: String,
    dimension: u32,
    metric: &'static str,
    index: IndexBody,
    records: u64,
    next_id: u64,
}

fn collection_info(c: &valori_kernel::Collection) -> CollectionInfo {
    let s = c.spec();
    CollectionInfo {
        name: s.name.clone(),
        dimension: s.dimension,
        metric: s.metric.name(),
        index: match s.index {
            IndexSpec::Flat => IndexBody::Flat,
            IndexSpec::Hnsw(p) => IndexBody::Hnsw {
                m: Some(p.m),
                ef_construction: Some(p.ef_construction),
                ef_search: Some(p.ef_search),
            },
        },
        records: c.len(),
        next_id: c.next_id(),
    }
}

#[derive(Serialize)]
struct SeqOnly {
    seq: u64,
}

async fn create_collection(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiJson(body): ApiJson<CreateCollectionBody>,
) -> Result<(StatusCode, Json<SeqOnly>), NodeError> {
    let index = match body.index {
        Some(IndexBody::Flat) => IndexIn::Flat,
        Some(IndexBody::Hnsw {
            m,
            ef_construction,
            ef_search,
        }) => IndexIn::Hnsw {
            m,
            ef_construction,
            ef_search,
        },
        None => IndexIn::Hnsw {
            m: None,
            ef_construction: None,
            ef_search: None,
        },
    };
    let seq = app
        .service
        .create_collection(body.name, body.dimension, body.metric.as_deref(), index)
        .await?;
    Ok((StatusCode::CREATED, Json(SeqOnly { seq })))
}

async fn list_collections(State(app): State<AppRef>, _: CanRead) -> ApiResult<serde_json::Value> {
    let k = app.engine.read()?;
    let list: Vec<CollectionInfo> = k.collections().map(collection_info).collect();
    Ok(Json(
        serde_json::json!({ "collections": list, "seq": k.seq() }),
    ))
}

async fn get_collection(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<CollectionInfo> {
    let k = app.engine.read()?;
    let c = k
        .collection(&name)
        .ok_or(valori_kernel::Error::CollectionNotFound { name })?;
    Ok(Json(collection_info(c)))
}

async fn drop_collection(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<SeqOnly> {
    let seq = app.service.drop_collection(name).await?;
    Ok(Json(SeqOnly { seq }))
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    vector: Vec<f64>,
    #[serde(default)]
    tag: u64,
    #[serde(default)]
    metadata: Option<String>,
}

impl RecordBody {
    fn into_record(self) -> Result<RecordIn, NodeError> {
        Ok(RecordIn {
            vector: self.vector,
            tag: self.tag,
            metadata: self.metadata.map(|m| unb64("metadata", &m)).transpose()?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    records: Vec<RecordBody>,
}

#[derive(Serialize)]
struct Inserted {
    id: u64,
    seq: u64,
}

#[derive(Serialize)]
struct BatchInserted {
    ids: Vec<u64>,
    seq: u64,
}

async fn insert_into(app: &App, collection: String, body: RecordBody) -> ApiResult<Inserted> {
    let (ids, seq) = app
        .service
        .insert(collection, vec![body.into_record()?], false)
        .await?;
    Ok(Json(Inserted { id: ids[0], seq }))
}

async fn batch_into(app: &App, collection: String, body: BatchBody) -> ApiResult<BatchInserted> {
    let records = body
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.into_record().map_err(|e| match e {
                NodeError::BadRequest(m) => NodeError::BadRequest(format!("record {i}: {m}")),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (ids, seq) = app.service.insert(collection, records, true).await?;
    Ok(Json(BatchInserted { ids, seq }))
}

async fn insert(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<RecordBody>,
) -> ApiResult<Inserted> {
    insert_into(&app, collection, body).await
}

async fn insert_default(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiJson(body): ApiJson<RecordBody>,
) -> ApiResult<Inserted> {
    insert_into(&app, DEFAULT_COLLECTION.into(), body).await
}

async fn batch(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<BatchBody>,
) -> ApiResult<BatchInserted> {
    batch_into(&app, collection, body).await
}

async fn batch_default(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiJson(body): ApiJson<BatchBody>,
) -> ApiResult<BatchInserted> {
    batch_into(&app, DEFAULT_COLLECTION.into(), body).await
}

#[derive(Serialize)]
struct RecordJson {
    id: u64,
    vector: Vec<f64>,
    tag: u64,
    metadata: Option<String>,
    seq: u64,
}

fn get_from(app: &App, collection: &str, id: u64) -> ApiResult<RecordJson> {
    let r = app.service.get(collection, id)?;
    Ok(Json(RecordJson {
        id: r.id,
        vector: r.vector,
        tag: r.tag,
        metadata: r.metadata.as_deref().map(b64),
        seq: r.seq,
    }))
}

async fn get_record(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath((collection, id)): ApiPath<(String, u64)>,
) -> ApiResult<RecordJson> {
    get_from(&app, &collection, id)
}

async fn get_record_default(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<RecordJson> {
    get_from(&app, DEFAULT_COLLECTION, id)
}

async fn delete_from(app: &App, collection: String, id: u64) -> ApiResult<SeqOnly> {
    let seq = app.service.delete(collection, id).await?;
    Ok(Json(SeqOnly { seq }))
}

async fn delete_record(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath((collection, id)): ApiPath<(String, u64)>,
) -> ApiResult<SeqOnly> {
    delete_from(&app, collection, id).await
}

async fn delete_record_default(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<SeqOnly> {
    delete_from(&app, DEFAULT_COLLECTION.into(), id).await
}

// ---------------------------------------------------------------------------------------------
// Search

fn default_k() -> u32 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    vector: Vec<f64>,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default)]
    tag: Option<u64>,
    #[serde(default)]
    ef: Option<u32>,
    #[serde(default)]
    with_metadata: bool,
}

#[derive(Serialize)]
struct SearchHit {
    id: u64,
    /// Exact integer distance.
    distance: i128,
    /// The distance in float units (distance / 2^32), for convenience.
    score: f64,
    tag: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Option<String>>,
}

#[derive(Serialize)]
struct SearchOut {
    results: Vec<SearchHit>,
    seq: u64,
}

async fn search_in(app: AppRef, collection: String, body: SearchBody) -> ApiResult<SearchOut> {
    let (hits, seq) = app
        .service
        .search(
            collection,
            body.vector,
            body.k,
            body.tag,
            body.ef,
            body.with_metadata,
        )
        .await?;
    let results = hits
        .into_iter()
        .map(|h| SearchHit {
            id: h.id,
            distance: h.distance,
            score: score(h.distance),
            tag: h.tag,
            metadata: h.metadata.map(|m| m.as_deref().map(b64)),
        })
        .collect();
    Ok(Json(SearchOut { results, seq }))
}

async fn search(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath(collection): ApiPath<String>,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult<SearchOut> {
    search_in(app, collection, body).await
}

async fn search_default(
    State(app): State<AppRef>,
    _: CanRead,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult<SearchOut> {
    search_in(app, DEFAULT_COLLECTION.into(), body).await
}

// ---------------------------------------------------------------------------------------------
// Graph

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RecordRefBody {
    collection: String,
    id: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    kind: String,
    #[serde(default)]
    record: Option<RecordRefBody>,
    #[serde(default)]
    properties: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeBody {
    from: u64,
    to: u64,
    kind: String,
}

#[derive(Serialize)]
struct Created {
    id: u64,
    seq: u64,
}

async fn create_node(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiJson(body): ApiJson<NodeBody>,
) -> Result<(StatusCode, Json<Created>), NodeError> {
    let properties = body
        .properties
        .map(|p| unb64("properties", &p))
        .transpose()?;
    let (id, seq) = app
        .service
        .create_node(
            body.kind,
            body.record.map(|r| (r.collection, r.id)),
            properties,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Created { id, seq })))
}

async fn create_edge(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiJson(body): ApiJson<EdgeBody>,
) -> Result<(StatusCode, Json<Created>), NodeError> {
    let (id, seq) = app
        .service
        .create_edge(body.from, body.to, body.kind)
        .await?;
    Ok((StatusCode::CREATED, Json(Created { id, seq })))
}

#[derive(Serialize)]
struct NodeOut {
    id: u64,
    kind: String,
    record: Option<RecordRefBody>,
    properties: Option<String>,
}

async fn get_node(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<NodeOut> {
    let n = app.service.node(id)?;
    Ok(Json(NodeOut {
        id,
        kind: n.kind,
        record: n.record.map(|r| RecordRefBody {
            collection: r.collection,
            id: r.id,
        }),
        properties: n.properties.as_deref().map(b64),
    }))
}

#[derive(Serialize)]
struct EdgeOut {
    id: u64,
    from: u64,
    to: u64,
    kind: String,
}

async fn get_edge(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<EdgeOut> {
    let e = app.service.edge(id)?;
    Ok(Json(EdgeOut {
        id,
        from: e.from,
        to: e.to,
        kind: e.kind,
    }))
}

async fn delete_node(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<SeqOnly> {
    let seq = app.service.delete_node(id).await?;
    Ok(Json(SeqOnly { seq }))
}

async fn delete_edge(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<SeqOnly> {
    let seq = app.service.delete_edge(id).await?;
    Ok(Json(SeqOnly { seq }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighborsQuery {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    direction: Option<String>,
}

#[derive(Serialize)]
struct NeighborOut {
    node: u64,
    edge: u64,
    kind: String,
    direction: &'static str,
}

async fn neighbors(
    State(app): State<AppRef>,
    _: CanRead,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(q): ApiQuery<NeighborsQuery>,
) -> ApiResult<serde_json::Value> {
    let kinds: Vec<String> = q
        .kind
        .map(|k| {
            k.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let (list, seq) = app.service.neighbors(id, q.direction.as_deref(), &kinds)?;
    let list: Vec<NeighborOut> = list
        .into_iter()
        .map(|(node, edge, kind, outgoing)| NeighborOut {
            node,
            edge,
            kind,
            direction: if outgoing { "out" } else { "in" },
        })
        .collect();
    Ok(Json(serde_json::json!({ "neighbors": list, "seq": seq })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraverseBody {
    start: u64,
    max_depth: u32,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    direction: Option<String>,
}

async fn traverse(
    State(app): State<AppRef>,
    _: CanRead,
    ApiJson(body): ApiJson<TraverseBody>,
) -> ApiResult<serde_json::Value> {
    let (nodes, truncated, seq) = app
        .service
        .traverse(
            body.start,
            body.max_depth,
            body.kinds,
            body.direction.as_deref(),
        )
        .await?;
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|(n, d)| serde_json::json!({ "node": n, "depth": d }))
        .collect();
    Ok(Json(
        serde_json::json!({ "nodes": nodes, "truncated": truncated, "seq": seq }),
    ))
}

// ---------------------------------------------------------------------------------------------
// State and snapshots

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    #[serde(default)]
    seq: Option<u64>,
}

async fn state(
    State(app): State<AppRef>,
    _: CanRead,
    ApiQuery(q): ApiQuery<StateQuery>,
) -> ApiResult<serde_json::Value> {
    blocking(move || {
        let s = app.engine.state()?;
        Ok(Json(match q.seq {
            None => serde_json::json!({
                "seq": s.seq,
                "chain_hash": hex32(&s.chain_hash),
                "state_hash": hex32(&s.state_hash),
            }),
            Some(seq) if seq > s.seq => {
                return Err(NodeError::NotFound(format!(
                    "sequence number {seq} is in the future (current is {})",
                    s.seq
                )))
            }
            Some(seq) => {
                let chain = app.engine.chain_at(seq)?;
                let mut v = serde_json::json!({ "seq": seq, "chain_hash": hex32(&chain) });
                if seq == s.seq {
                    v["state_hash"] = hex32(&s.state_hash).into();
                }
                v
            }
        }))
    })
    .await
}

fn default_log_limit() -> usize {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_log_limit")]
    limit: usize,
}

#[derive(Serialize)]
struct LogEntry {
    seq: u64,
    chain_hash: String,
    /// The event's canonical encoding, base64.
    event: String,
}

/// Most log entries one request returns.
const MAX_LOG_PAGE: usize = 10_000;

async fn log(
    State(app): State<AppRef>,
    _: CanRead,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<serde_json::Value> {
    if let Some(name) = headers
        .get("x-valori-follower")
        .and_then(|v| v.to_str().ok())
    {
        // Asking for `from` confirms everything before it.
        let confirmed = q.from.saturating_sub(1);
        app.followers
            .lock()
            .expect("followers lock")
            .insert(name.to_string(), (confirmed, Instant::now()));
        app.engine
            .metrics()
            .follower_seq
            .with_label_values(&[name])
            .set(confirmed as i64);
    }
    if q.limit == 0 || q.limit > MAX_LOG_PAGE {
        return Err(NodeError::BadRequest(format!(
            "limit must be 1 to {MAX_LOG_PAGE}"
        )));
    }
    let engine = app.engine.clone();
    blocking(move || {
        let first = engine.first_retained()?;
        let entries: Vec<LogEntry> = engine
            .entries(q.from, q.limit)?
            .into_iter()
            .map(|e| LogEntry {
                seq: e.seq,
                chain_hash: hex32(&e.chain),
                event: b64(&e.event),
            })
            .collect();
        let next = entries.last().map(|e| e.seq + 1);
        Ok(Json(serde_json::json!({
            "entries": entries,
            "first_retained": first,
            "next": next,
            "head": engine.seq()?,
        })))
    })
    .await
}

async fn replication(State(app): State<AppRef>, _: CanRead) -> ApiResult<serde_json::Value> {
    let seq = app.engine.seq()?;
    let followers: Vec<serde_json::Value> = app
        .followers
        .lock()
        .expect("followers lock")
        .iter()
        .map(|(name, (confirmed, seen))| {
            serde_json::json!({
                "name": name,
                "confirmed_seq": confirmed,
                "lag_events": seq.saturating_sub(*confirmed),
                "seconds_since_seen": seen.elapsed().as_secs_f64(),
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "seq": seq, "followers": followers }),
    ))
}

#[derive(Serialize)]
struct SnapshotOut {
    id: u64,
    seq: u64,
    bytes: u64,
    path: String,
}

fn snapshot_out(f: crate::store::SnapshotFile) -> SnapshotOut {
    SnapshotOut {
        id: f.seq,
        seq: f.seq,
        bytes: f.bytes,
        path: f.path.display().to_string(),
    }
}

async fn create_snapshot(
    State(app): State<AppRef>,
    _: CanWrite,
) -> Result<(StatusCode, Json<SnapshotOut>), NodeError> {
    let f = app.engine.snapshot().await?;
    Ok((StatusCode::CREATED, Json(snapshot_out(f))))
}

async fn list_snapshots(State(app): State<AppRef>, _: CanRead) -> ApiResult<serde_json::Value> {
    let list: Vec<SnapshotOut> = app
        .engine
        .snapshots()?
        .into_iter()
        .map(snapshot_out)
        .collect();
    Ok(Json(serde_json::json!({ "snapshots": list })))
}

async fn download_snapshot(
    State(app): State<AppRef>,
    _: CanWrite,
    ApiPath(id): ApiPath<u64>,
) -> Result<Response, NodeError> {
    let file = app
        .engine
        .snapshots()?
        .into_iter()
        .find(|s| s.seq == id)
        .ok_or_else(|| NodeError::NotFound(format!("no snapshot {id}")))?;
    // Streamed from the file: a large snapshot is never held in memory whole. The open file
    // stays readable even if retention removes its name meanwhile.
    let storage = |e: std::io::Error| NodeError::Storage(format!("reading snapshot {id}: {e}"));
    let f = tokio::fs::File::open(&file.path).await.map_err(storage)?;
    let len = f.metadata().await.map_err(storage)?.len();
    let body =
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

async fn restore_snapshot(
    State(app): State<AppRef>,
    _: CanWrite,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, NodeError> {
    app.service.writable()?;
    // Streamed into a file in the snapshot directory, which is then mapped and renamed into
    // place: the upload is never held in the heap, only the state decoded from it.
    let path = app.engine.upload_path();
    if let Err(e) = receive(body, &path).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let f = app.engine.install_file(&path, false).await?;
    let s = app.engine.state()?;
    Ok(Json(serde_json::json!({
        "seq": s.seq,
        "chain_hash": hex32(&s.chain_hash),
        "state_hash": hex32(&s.state_hash),
        "snapshot": snapshot_out(f),
    })))
}

/// Writes a request body to a new file at `path`, refusing one above
/// [`MAX_SNAPSHOT_UPLOAD_BYTES`].
async fn receive(mut body: axum::body::Body, path: &std::path::Path) -> Result<(), NodeError> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;
    let failed = |e: &dyn std::fmt::Display| NodeError::Storage(format!("receiving snapshot: {e}"));
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| failed(&e))?;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| NodeError::BadRequest(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total > MAX_SNAPSHOT_UPLOAD_BYTES {
                return Err(NodeError::PayloadTooLarge {
                    limit: MAX_SNAPSHOT_UPLOAD_BYTES,
                });
            }
            file.write_all(&data).await.map_err(|e| failed(&e))?;
        }
    }
    file.flush().await.map_err(|e| failed(&e))
}

// ---------------------------------------------------------------------------------------------
// Operations

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<AppRef>) -> Response {
    if app.engine.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        let why = app
            .engine
            .failure()
            .unwrap_or_else(|| "shutting down".into());
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response()
    }
}

async fn metrics(State(app): State<AppRef>) -> Response {
    let m = app.engine.metrics();
    m.storage_bytes.set(app.engine.storage_bytes() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}

/// Every route: method, path, whether it writes, and a one-line summary. `/openapi.json` is
/// generated from this table, and the route tests walk it.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("post", "/v1/collections", "Create a collection {name, dimension, metric?: l2|ip|cosine, index?: {type: hnsw|flat, m?, ef_construction?, ef_search?}}"),
    ("get", "/v1/collections", "List collections"),
    ("get", "/v1/collections/{name}", "Describe a collection"),
    ("delete", "/v1/collections/{name}", "Drop a collection and its records"),
    ("post", "/v1/collections/{name}/records", "Insert a record {vector, tag?, metadata? (base64)} -> {id, seq}"),
    ("post", "/v1/collections/{name}/records/batch", "Insert records atomically {records: [...]} -> {ids, seq}"),
    ("get", "/v1/collections/{name}/records/{id}", "Get a record"),
    ("delete", "/v1/collections/{name}/records/{id}", "Delete a record"),
    ("post", "/v1/collections/{name}/search", "Search {vector, k?, tag?, ef?, with_metadata?} -> {results: [{id, distance, score, tag, metadata?}], seq}"),
    ("post", "/v1/records", "Insert into the default collection"),
    ("post", "/v1/records/batch", "Batch insert into the default collection"),
    ("get", "/v1/records/{id}", "Get a record of the default collection"),
    ("delete", "/v1/records/{id}", "Delete a record of the default collection"),
    ("post", "/v1/search", "Search the default collection"),
    ("post", "/v1/graph/nodes", "Create a graph node {kind, record?: {collection, id}, properties? (base64)} -> {id, seq}"),
    ("get", "/v1/graph/nodes/{id}", "Get a graph node"),
    ("delete", "/v1/graph/nodes/{id}", "Delete a node and its edges"),
    ("get", "/v1/graph/nodes/{id}/neighbors", "Neighbours (?kind=a,b&direction=out|in|both)"),
    ("post", "/v1/graph/edges", "Create an edge {from, to, kind} -> {id, seq}"),
    ("get", "/v1/graph/edges/{id}", "Get an edge"),
    ("delete", "/v1/graph/edges/{id}", "Delete an edge"),
    ("post", "/v1/graph/traverse", "Breadth-first traversal {start, max_depth, kinds?, direction?}"),
    ("get", "/v1/state", "Sequence number, chain hash and state hash (?seq=N: the chain hash at N)"),
    ("get", "/v1/replication", "On a leader: each follower's confirmed sequence number and lag"),
    ("get", "/v1/log", "Retained log entries {seq, chain_hash, event (canonical encoding, base64)} (?from=N&limit=M), for audits and replay"),
    ("post", "/v1/snapshots", "Take a snapshot now"),
    ("get", "/v1/snapshots", "List snapshots"),
    ("get", "/v1/snapshots/{id}", "Download a snapshot (application/octet-stream)"),
    ("post", "/v1/snapshots/restore", "Replace the state with an uploaded snapshot (application/octet-stream)"),
    ("get", "/healthz", "Liveness"),
    ("get", "/readyz", "Readiness: recovered and not failed"),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/openapi.json", "This description"),
];

async fn openapi() -> Json<serde_json::Value> {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in ROUTES {
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| serde_json::json!({}));
        let params: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| serde_json::json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        entry[*method] = serde_json::json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "success"},
                "4XX": {"description": "the caller's mistake: {code, message}"},
                "5XX": {"description": "the server's trouble: {code, message}"},
            },
        });
    }
    Json(serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Valori", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }))
}

async fn track(State(app): State<AppRef>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("http.request", http.route = %route, http.method = %method);
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    let m = app.engine.metrics();
    m.http_seconds
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}

async fn not_found() -> NodeError {
    NodeError::NotFound("no such route".into())
}

/// The router of a node.
pub fn router(app: App) -> Router {
    let body_limit = app.max_body_bytes;
    let app = Arc::new(app);
    Router::new()
        .route(
            "/v1/collections",
            post(create_collection).get(list_collections),
        )
        .route(
            "/v1/collections/{name}",
            get(get_collection).delete(drop_collection),
        )
        .route("/v1/collections/{name}/records", post(insert))
        .route("/v1/collections/{name}/records/batch", post(batch))
        .route(
            "/v1/collections/{name}/records/{id}",
            get(get_record).delete(delete_record),
        )
        .route("/v1/collections/{name}/search", post(search))
        .route("/v1/records", post(insert_default))
        .route("/v1/records/batch", post(batch_default))
        .route(
            "/v1/records/{id}",
            get(get_record_default).delete(delete_record_default),
        )
        .route("/v1/search", post(search_default))
        .route("/v1/graph/nodes", post(create_node))
        .route("/v1/graph/nodes/{id}", get(get_node).delete(delete_node))
        .route("/v1/graph/nodes/{id}/neighbors", get(neighbors))
        .route("/v1/graph/edges", post(create_edge))
        .route("/v1/graph/edges/{id}", get(get_edge).delete(delete_edge))
        .route("/v1/graph/traverse", post(traverse))
        .route("/v1/state", get(state))
        .route("/v1/log", get(log))
        .route("/v1/replication", get(replication))
        .route("/v1/snapshots", post(create_snapshot).get(list_snapshots))
        .route("/v1/snapshots/{id}", get(download_snapshot))
        .route(
            "/v1/snapshots/restore",
            // The body streams to a file; `receive` enforces MAX_SNAPSHOT_UPLOAD_BYTES.
            post(restore_snapshot),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), track))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}
