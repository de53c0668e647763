//! Remote mode: the node's HTTP API. Vectors are checked here with the node's own conversion
//! before they are sent, so a NaN or an out-of-range component gets the same error in both
//! modes (JSON has no NaN to send).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use valori_api as wire;
use valori_node::service::{record_vector, to_fixed, HitOut, RecordIn, RecordOut};

use crate::api::*;

/// A client of one node.
pub struct Remote {
    base: Url,
    client: Client,
    /// For snapshot uploads: a connect timeout but no deadline on the whole request, which
    /// takes as long as the file takes to send and the server to verify.
    transfers: Client,
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
        let mut ca = None;
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
            ca = Some(certs);
        }
        let build = |total: Option<Duration>| {
            let mut b = Client::builder()
                .timeout(total)
                .connect_timeout(timeout)
                .tls_backend_rustls();
            if let Some(certs) = &ca {
                b = b.tls_certs_merge(certs.clone());
            }
            b.build().map_err(transport)
        };
        Ok(Remote {
            base,
            client: build(Some(timeout))?,
            transfers: build(None)?,
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
        Err(match serde_json::from_str::<wire::ErrorBody>(&text) {
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

    fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Res<T> {
        let mut r = self.request(method, segments);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r)?.json::<T>().map_err(bad_response)
    }
}

fn record_json(r: RecordIn) -> wire::NewRecord {
    wire::NewRecord {
        vector: r.vector,
        tag: r.tag,
        metadata: r.metadata.as_deref().map(b64),
    }
}

impl Api for Remote {
    fn create_collection(&self, spec: wire::CreateCollection) -> Res<()> {
        self.call::<wire::Seq, _>(Method::POST, &["v1", "collections"], Some(&spec))?;
        Ok(())
    }

    fn drop_collection(&self, name: String) -> Res<()> {
        self.call::<wire::Seq, ()>(Method::DELETE, &["v1", "collections", &name], None)?;
        Ok(())
    }

    fn collections(&self) -> Res<Vec<wire::CollectionInfo>> {
        let out: wire::CollectionList =
            self.call::<_, ()>(Method::GET, &["v1", "collections"], None)?;
        Ok(out.collections)
    }

    fn collection(&self, name: &str) -> Res<wire::CollectionInfo> {
        self.call::<_, ()>(Method::GET, &["v1", "collections", name], None)
    }

    fn insert(&self, collection: String, records: Vec<RecordIn>, batch: bool) -> Res<Vec<u64>> {
        // The node's own conversion, for its exact error messages; JSON cannot carry NaN.
        for (i, r) in records.iter().enumerate() {
            record_vector(i, &r.vector, batch)?;
        }
        if batch {
            let body = wire::Batch {
                records: records.into_iter().map(record_json).collect(),
            };
            let out: wire::BatchInserted = self.call(
                Method::POST,
                &["v1", "collections", &collection, "records", "batch"],
                Some(&body),
            )?;
            Ok(out.ids)
        } else {
            let body = records.into_iter().next().map(record_json);
            let out: wire::Inserted = self.call(
                Method::POST,
                &["v1", "collections", &collection, "records"],
                body.as_ref(),
            )?;
            Ok(vec![out.id])
        }
    }

    fn get(&self, collection: &str, id: u64) -> Res<RecordOut> {
        let r: wire::Record = self.call::<_, ()>(
            Method::GET,
            &["v1", "collections", collection, "records", &id.to_string()],
            None,
        )?;
        Ok(RecordOut {
            id: r.id,
            vector: r.vector,
            tag: r.tag,
            metadata: r.metadata.as_deref().map(unb64).transpose()?,
            seq: r.seq,
        })
    }

    fn delete(&self, collection: String, id: u64) -> Res<()> {
        self.call::<wire::Seq, ()>(
            Method::DELETE,
            &["v1", "collections", &collection, "records", &id.to_string()],
            None,
        )?;
        Ok(())
    }

    fn search(&self, collection: String, query: wire::SearchRequest) -> Res<Vec<HitOut>> {
        to_fixed(&query.vector)?;
        let out: wire::SearchResults = self.call(
            Method::POST,
            &["v1", "collections", &collection, "search"],
            Some(&query),
        )?;
        out.results
            .into_iter()
            .map(|h| {
                let metadata = match h.metadata {
                    None if query.with_metadata => Some(None),
                    None => None,
                    Some(m) => Some(m.as_deref().map(unb64).transpose()?),
                };
                Ok(HitOut {
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
        record: Option<wire::RecordRef>,
        properties: Option<Vec<u8>>,
    ) -> Res<u64> {
        let body = wire::CreateNode {
            kind,
            record,
            properties: properties.as_deref().map(b64),
        };
        let out: wire::Created = self.call(Method::POST, &["v1", "graph", "nodes"], Some(&body))?;
        Ok(out.id)
    }

    fn get_node(&self, id: u64) -> Res<GraphNode> {
        let n: wire::GraphNode = self.call::<_, ()>(
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
        self.call::<wire::Seq, ()>(
            Method::DELETE,
            &["v1", "graph", "nodes", &id.to_string()],
            None,
        )?;
        Ok(())
    }

    fn create_edge(&self, edge: wire::CreateEdge) -> Res<u64> {
        let out: wire::Created = self.call(Method::POST, &["v1", "graph", "edges"], Some(&edge))?;
        Ok(out.id)
    }

    fn get_edge(&self, id: u64) -> Res<wire::GraphEdge> {
        self.call::<_, ()>(
            Method::GET,
            &["v1", "graph", "edges", &id.to_string()],
            None,
        )
    }

    fn delete_edge(&self, id: u64) -> Res<()> {
        self.call::<wire::Seq, ()>(
            Method::DELETE,
            &["v1", "graph", "edges", &id.to_string()],
            None,
        )?;
        Ok(())
    }

    fn neighbors(
        &self,
        id: u64,
        direction: wire::Direction,
        kinds: &[String],
    ) -> Res<Vec<wire::Neighbor>> {
        // Kinds travel comma-separated in the query string; a kind holding a comma could
        // not be asked for there, so refuse it rather than ask for something else.
        if let Some(k) = kinds.iter().find(|k| k.contains(',')) {
            return Err(ApiError::invalid(format!(
                "kind {k:?} contains a comma, which the HTTP API cannot filter on"
            )));
        }
        let mut url = self.url(&["v1", "graph", "nodes", &id.to_string(), "neighbors"]);
        url.query_pairs_mut()
            .append_pair("direction", direction.name());
        if !kinds.is_empty() {
            url.query_pairs_mut().append_pair("kind", &kinds.join(","));
        }
        let req = self.authorized(self.client.get(url));
        let out: wire::Neighbors = self.send(req)?.json().map_err(bad_response)?;
        Ok(out.neighbors)
    }

    fn traverse(&self, query: wire::TraverseRequest) -> Res<wire::Traversal> {
        self.call(Method::POST, &["v1", "graph", "traverse"], Some(&query))
    }

    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String> {
        let s: wire::SnapshotInfo = self.call::<_, ()>(Method::POST, &["v1", "snapshots"], None)?;
        match copy_to {
            None => Ok(s.path),
            Some(dest) => {
                let mut resp =
                    self.send(self.request(Method::GET, &["v1", "snapshots", &s.id.to_string()]))?;
                // A download cut short leaves the previous copy as it was.
                crate::api::write_atomically(dest, |file| {
                    resp.copy_to(file).map(|_| ()).map_err(transport)
                })?;
                Ok(dest.display().to_string())
            }
        }
    }

    fn restore(&self, path: &Path) -> Res<wire::State> {
        // Streamed from the file, not read into memory first.
        let file = std::fs::File::open(path)
            .map_err(|e| ApiError::io(format!("cannot read snapshot {}", path.display()), &e))?;
        let r = self
            .authorized(
                self.transfers
                    .request(Method::POST, self.url(&["v1", "snapshots", "restore"])),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(file);
        self.send(r)?
            .json::<wire::Restored>()
            .map_err(bad_response)?;
        self.state()
    }

    fn state(&self) -> Res<wire::State> {
        self.call::<_, ()>(Method::GET, &["v1", "state"], None)
    }

    fn close(&self) {}
}
