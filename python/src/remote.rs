//! Remote mode: the node's HTTP API. Vectors are checked here with the node's own conversion
//! before they are sent, so a NaN or an out-of-range component gets the same error in both
//! modes (JSON has no NaN to send).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use valori_node::service::{parse_direction, record_vector, to_fixed, IndexIn, RecordIn};

use crate::api::*;

/// A client of one node.
pub struct Remote {
    base: Url,
    client: Client,
    api_key: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Res<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| {
            ApiError::new(
                Kind::Other,
                "bad_response",
                format!("bad base64 from the server: {e}"),
            )
        })
}

fn transport(e: reqwest::Error) -> ApiError {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::new(Kind::Connection, "connection_error", msg)
}

fn bad_response(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Kind::Other,
        "bad_response",
        format!("unexpected response from the server: {e}"),
    )
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Remote {
    /// A client for `url` (`http://host:port` or `https://host:port`). Nothing is sent until
    /// the first call. Over https the server's certificate must chain to the system's trusted
    /// roots or to a certificate in the PEM file `ca_cert`.
    pub fn new(
        url: &str,
        api_key: Option<String>,
        timeout: Duration,
        ca_cert: Option<&Path>,
    ) -> Res<Remote> {
        let base = Url::parse(url)
            .map_err(|e| ApiError::invalid(format!("invalid remote URL {url:?}: {e}")))?;
        let tls = match base.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(ApiError::invalid(format!(
                    "unsupported remote URL scheme {other:?}: use http:// or https://"
                )))
            }
        };
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(ApiError::invalid(format!(
                "invalid remote URL {url:?}: no host"
            )));
        }
        if !tls && ca_cert.is_some() {
            return Err(ApiError::invalid("ca_cert applies to https:// URLs only"));
        }
        // The same TLS stack as the node's: rustls with ring.
        valori_node::use_ring_for_tls();
        let mut builder = Client::builder().timeout(timeout).tls_backend_rustls();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                ApiError::invalid(format!("cannot read ca_cert {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "ca_cert {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(transport)?;
        Ok(Remote {
            base,
            client,
            api_key,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().expect("checked in new");
            p.pop_if_empty();
            for s in segments {
                p.push(s);
            }
        }
        u
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.authorized(self.client.request(method, self.url(segments)))
    }

    fn authorized(&self, r: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Sends and turns a non-success status into the node's error.
    fn send(&self, r: RequestBuilder) -> Res<Response> {
        let resp = r.send().map_err(transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().map_err(transport)?;
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ApiError::from_status(status.as_u16(), b.code, b.message),
            Err(_) => {
                let mut text = text;
                text.truncate(500);
                ApiError::from_status(
                    status.as_u16(),
                    format!("http_{}", status.as_u16()),
                    format!("HTTP {status}: {text}"),
                )
            }
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Res<T> {
        let mut r = self.request(method, segments);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r)?.json::<T>().map_err(bad_response)
    }
}

#[derive(Deserialize)]
struct IdOut {
    id: u64,
}

#[derive(Deserialize)]
struct IdsOut {
    ids: Vec<u64>,
}

#[derive(Deserialize)]
struct CollectionJson {
    name: String,
    dimension: u32,
    metric: String,
    index: IndexJson,
    records: u64,
    next_id: u64,
}

#[derive(Deserialize)]
struct IndexJson {
    #[serde(rename = "type")]
    kind: String,
}

impl From<CollectionJson> for CollectionInfo {
    fn from(c: CollectionJson) -> Self {
        CollectionInfo {
            name: c.name,
            dimension: c.dimension,
            metric: c.metric,
            index: c.index.kind,
            records: c.records,
            next_id: c.next_id,
        }
    }
}

#[derive(Deserialize)]
struct StateJson {
    seq: u64,
    chain_hash: String,
    state_hash: String,
}

impl From<StateJson> for State {
    fn from(s: StateJson) -> Self {
        State {
            seq: s.seq,
            chain_hash: s.chain_hash,
            state_hash: s.state_hash,
        }
    }
}

fn record_json(r: &RecordIn) -> Value {
    let mut v = json!({ "vector": r.vector, "tag": r.tag });
    if let Some(m) = &r.metadata {
        v["metadata"] = b64(m).into();
    }
    v
}

impl Api for Remote {
    fn create_collection(
        &self,
        name: String,
        dimension: u32,
        metric: &str,
        index: IndexIn,
    ) -> Res<()> {
        let index = match index {
            IndexIn::Flat => json!({ "type": "flat" }),
            IndexIn::Hnsw {
                m,
                ef_construction,
                ef_search,
            } => json!({ "type": "hnsw", "m": m, "ef_construction": ef_construction,
                         "ef_search": ef_search }),
        };
        let body = json!({ "name": name, "dimension": dimension, "metric": metric,
                           "index": index });
        self.call::<Value>(Method::POST, &["v1", "collections"], Some(&body))?;
        Ok(())
    }

    fn drop_collection(&self, name: String) -> Res<()> {
        self.call::<Value>(Method::DELETE, &["v1", "collections", &name], None)?;
        Ok(())
    }

    fn collections(&self) -> Res<Vec<CollectionInfo>> {
        #[derive(Deserialize)]
        struct Out {
            collections: Vec<CollectionJson>,
        }
        let out: Out = self.call(Method::GET, &["v1", "collections"], None)?;
        Ok(out.collections.into_iter().map(Into::into).collect())
    }

    fn collection(&self, name: &str) -> Res<CollectionInfo> {
        let c: CollectionJson = self.call(Method::GET, &["v1", "collections", name], None)?;
        Ok(c.into())
    }

    fn insert(&self, collection: String, records: Vec<RecordIn>, batch: bool) -> Res<Vec<u64>> {
        // The node's own conversion, for its exact error messages; JSON cannot carry NaN.
        for (i, r) in records.iter().enumerate() {
            record_vector(i, &r.vector, batch)?;
        }
        if batch {
            let body = json!({ "records": records.iter().map(record_json).collect::<Vec<_>>() });
            let out: IdsOut = self.call(
                Method::POST,
                &["v1", "collections", &collection, "records", "batch"],
                Some(&body),
            )?;
            Ok(out.ids)
        } else {
            let body = records.first().map(record_json).unwrap_or(Value::Null);
            let out: IdOut = self.call(
                Method::POST,
                &["v1", "collections", &collection, "records"],
                Some(&body),
            )?;
            Ok(vec![out.id])
        }
    }

    fn get(&self, collection: &str, id: u64) -> Res<Record> {
        #[derive(Deserialize)]
        struct Out {
            id: u64,
            vector: Vec<f64>,
            tag: u64,
            metadata: Option<String>,
        }
        let r: Out = self.call(
            Method::GET,
            &["v1", "collections", collection, "records", &id.to_string()],
            None,
        )?;
        Ok(Record {
            id: r.id,
            vector: r.vector,
            tag: r.tag,
            metadata: r.metadata.as_deref().map(unb64).transpose()?,
        })
    }

    fn delete(&self, collection: String, id: u64) -> Res<()> {
        self.call::<Value>(
            Method::DELETE,
            &["v1", "collections", &collection, "records", &id.to_string()],
            None,
        )?;
        Ok(())
    }

    fn search(&self, q: Query) -> Res<Vec<Hit>> {
        to_fixed(&q.vector)?;
        #[derive(Deserialize)]
        struct HitJson {
            id: u64,
            // Exact integer (it can exceed 64 bits).
            distance: i128,
            tag: u64,
            #[serde(default)]
            metadata: Option<Option<String>>,
        }
        #[derive(Deserialize)]
        struct Out {
            results: Vec<HitJson>,
        }
        let body = json!({ "vector": q.vector, "k": q.k, "tag": q.tag, "ef": q.ef,
                           "with_metadata": q.with_metadata });
        let out: Out = self.call(
            Method::POST,
            &["v1", "collections", &q.collection, "search"],
            Some(&body),
        )?;
        out.results
            .into_iter()
            .map(|h| {
                let metadata = match h.metadata {
                    None if q.with_metadata => Some(None),
                    None => None,
                    Some(m) => Some(m.as_deref().map(unb64).transpose()?),
                };
                Ok(Hit {
                    id: h.id,
                    distance: h.distance,
                    tag: h.tag,
                    metadata,
                })
            })
            .collect()
    }

    fn create_node(
        &self,
        kind: String,
        record: Option<(String, u64)>,
        properties: Option<Vec<u8>>,
    ) -> Res<u64> {
        let mut body = json!({ "kind": kind });
        if let Some((collection, id)) = record {
            body["record"] = json!({ "collection": collection, "id": id });
        }
        if let Some(p) = properties {
            body["properties"] = b64(&p).into();
        }
        let out: IdOut = self.call(Method::POST, &["v1", "graph", "nodes"], Some(&body))?;
        Ok(out.id)
    }

    fn get_node(&self, id: u64) -> Res<GraphNode> {
        #[derive(Deserialize)]
        struct RecordRef {
            collection: String,
            id: u64,
        }
        #[derive(Deserialize)]
        struct Out {
            id: u64,
            kind: String,
            record: Option<RecordRef>,
            properties: Option<String>,
        }
        let n: Out = self.call(
            Method::GET,
            &["v1", "graph", "nodes", &id.to_string()],
            None,
        )?;
        Ok(GraphNode {
            id: n.id,
            kind: n.kind,
            record: n.record.map(|r| (r.collection, r.id)),
            properties: n.properties.as_deref().map(unb64).transpose()?,
        })
    }

    fn delete_node(&self, id: u64) -> Res<()> {
        self.call::<Value>(
            Method::DELETE,
            &["v1", "graph", "nodes", &id.to_string()],
            None,
        )?;
        Ok(())
    }

    fn create_edge(&self, from: u64, to: u64, kind: String) -> Res<u64> {
        let body = json!({ "from": from, "to": to, "kind": kind });
        let out: IdOut = self.call(Method::POST, &["v1", "graph", "edges"], Some(&body))?;
        Ok(out.id)
    }

    fn get_edge(&self, id: u64) -> Res<Edge> {
        #[derive(Deserialize)]
        struct Out {
            id: u64,
            from: u64,
            to: u64,
            kind: String,
        }
        let e: Out = self.call(
            Method::GET,
            &["v1", "graph", "edges", &id.to_string()],
            None,
        )?;
        Ok(Edge {
            id: e.id,
            from: e.from,
            to: e.to,
            kind: e.kind,
        })
    }

    fn delete_edge(&self, id: u64) -> Res<()> {
        self.call::<Value>(
            Method::DELETE,
            &["v1", "graph", "edges", &id.to_string()],
            None,
        )?;
        Ok(())
    }

    fn neighbors(&self, id: u64, direction: &str, kinds: &[String]) -> Res<Vec<Neighbor>> {
        parse_direction(Some(direction))?;
        #[derive(Deserialize)]
        struct N {
            node: u64,
            edge: u64,
            kind: String,
            direction: String,
        }
        #[derive(Deserialize)]
        struct Out {
            neighbors: Vec<N>,
        }
        // Kinds travel comma-separated in the query string; a kind holding a comma could
        // not be asked for there, so refuse it rather than ask for something else.
        if let Some(k) = kinds.iter().find(|k| k.contains(',')) {
            return Err(ApiError::invalid(format!(
                "kind {k:?} contains a comma, which the HTTP API cannot filter on"
            )));
        }
        let mut url = self.url(&["v1", "graph", "nodes", &id.to_string(), "neighbors"]);
        url.query_pairs_mut().append_pair("direction", direction);
        if !kinds.is_empty() {
            url.query_pairs_mut().append_pair("kind", &kinds.join(","));
        }
        let out: Out = self
            .send(self.authorized(self.client.get(url)))?
            .json()
            .map_err(bad_response)?;
        Ok(out
            .neighbors
            .into_iter()
            .map(|n| Neighbor {
                node: n.node,
                edge: n.edge,
                kind: n.kind,
                direction: n.direction,
            })
            .collect())
    }

    fn traverse(
        &self,
        start: u64,
        max_depth: u32,
        kinds: Vec<String>,
        direction: &str,
    ) -> Res<Traversal> {
        #[derive(Deserialize)]
        struct Visit {
            node: u64,
            depth: u32,
        }
        #[derive(Deserialize)]
        struct Out {
            nodes: Vec<Visit>,
            truncated: bool,
        }
        let body = json!({ "start": start, "max_depth": max_depth, "kinds": kinds,
                           "direction": direction });
        let out: Out = self.call(Method::POST, &["v1", "graph", "traverse"], Some(&body))?;
        Ok(Traversal {
            nodes: out.nodes.into_iter().map(|v| (v.node, v.depth)).collect(),
            truncated: out.truncated,
        })
    }

    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String> {
        #[derive(Deserialize)]
        struct Out {
            id: u64,
            path: String,
        }
        let s: Out = self.call(Method::POST, &["v1", "snapshots"], None)?;
        match copy_to {
            None => Ok(s.path),
            Some(dest) => {
                let mut resp =
                    self.send(self.request(Method::GET, &["v1", "snapshots", &s.id.to_string()]))?;
                let what = || format!("cannot write the snapshot to {}", dest.display());
                let mut file = std::fs::File::create(dest).map_err(|e| ApiError::io(what(), &e))?;
                resp.copy_to(&mut file).map_err(transport)?;
                file.sync_all().map_err(|e| ApiError::io(what(), &e))?;
                Ok(dest.display().to_string())
            }
        }
    }

    fn restore(&self, path: &Path) -> Res<State> {
        // Streamed from the file, not read into memory first.
        let file = std::fs::File::open(path)
            .map_err(|e| ApiError::io(format!("cannot read snapshot {}", path.display()), &e))?;
        let r = self
            .request(Method::POST, &["v1", "snapshots", "restore"])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(file);
        let s: StateJson = self.send(r)?.json().map_err(bad_response)?;
        Ok(s.into())
    }

    fn state(&self) -> Res<State> {
        let s: StateJson = self.call(Method::GET, &["v1", "state"], None)?;
        Ok(s.into())
    }

    fn close(&self) {}
}
