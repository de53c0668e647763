//! # valori-client
//!
//! A typed client of one Valori node's HTTP API: one method per route of
//! [`valori_api::ROUTES`], sending and reading the API's wire types and no others. The
//! follower's replication loop, the operator's calls to its nodes and the Python package's
//! remote mode all speak to nodes through it, so a route changes in one place.
//!
//! It is asynchronous (reqwest over Tokio); a blocking caller runs it on a runtime of its own.
//! Errors keep what the node said ([`Error::Refused`]: status, stable code, message) apart from
//! a node that could not be reached ([`Error::Unreachable`]). No RocksDB and no server code:
//! anything that speaks to a node may depend on it.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use valori_api as api;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input cannot be sent (a bad URL, a kind with a comma, an unreadable file).
    #[error("{0}")]
    Invalid(String),
    /// The node could not be reached, or the connection failed (with every cause).
    #[error("{0}")]
    Unreachable(String),
    /// The node answered with an error.
    #[error("HTTP {status}: {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The node's stable code (`http_<status>` when its body was not an error body).
        code: String,
        /// The node's message.
        message: String,
    },
    /// The node answered with something that is not what the API describes.
    #[error("unexpected response from the node: {0}")]
    BadResponse(String),
    /// A local file of a download or an upload failed.
    #[error("{doing}: {source}")]
    Io {
        /// What the client was doing.
        doing: String,
        /// What failed.
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status the node answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

/// How a client waits.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// Longest a whole call may take (`None`: as long as bytes keep coming). Snapshot
    /// downloads and uploads are never bounded as a whole.
    pub timeout: Option<Duration>,
    /// Longest wait for the next bytes of an answer (`None`: no limit of its own).
    pub read_timeout: Option<Duration>,
    /// PEM certificates to trust besides the system's roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// The arbiter this client speaks for, named in every request ([`api::ARBITER_HEADER`]):
    /// the epochs it raises nodes to, or gives roles at, are claimed for it there.
    pub arbiter: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            connect_timeout: Duration::from_secs(10),
            timeout: None,
            read_timeout: None,
            ca_pem: None,
            arbiter: None,
        }
    }
}

/// What a follower says of itself when it reads its leader's log (the headers
/// [`api::FOLLOWER_HEADER`], [`api::EPOCH_HEADER`], [`api::CHAIN_HEADER`]).
#[derive(Clone, Debug, Default)]
pub struct Hello {
    /// Its name.
    pub follower: Option<String>,
    /// The highest epoch it has seen (a leader below it is fenced when the key may write).
    pub epoch: Option<u64>,
    /// Its chain hash (hex) at the sequence number before the first one it asks for.
    pub chain: Option<String>,
}

/// A client of one node.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    transfers: reqwest::Client,
    key: Option<String>,
}

/// Every cause of a reqwest error, joined: "error sending request: connection refused".
fn causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.ends_with(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

fn unreachable(e: reqwest::Error) -> Error {
    Error::Unreachable(causes(&e))
}

/// What the clients of many nodes share: the key they present and their connections (one
/// pool, one TLS configuration). The operator reaches every pod of a cluster through one.
#[derive(Clone, Debug)]
pub struct Connector {
    http: reqwest::Client,
    /// For snapshot downloads and uploads: no deadline on the whole call, which takes as long
    /// as the file takes to send (and, for an upload, the node to verify).
    transfers: reqwest::Client,
    key: Option<String>,
}

impl Connector {
    /// Clients presenting `key` when given. Over https a node's certificate must chain to the
    /// system's roots or to [`Options::ca_pem`]; a machine without roots can still reach
    /// plain-HTTP nodes.
    pub fn new(key: Option<String>, options: &Options) -> Result<Connector> {
        // rustls needs a process-wide crypto provider; the node's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = match &options.ca_pem {
            None => None,
            Some(pem) => Some(
                reqwest::Certificate::from_pem_bundle(pem)
                    .ok()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        Error::Invalid("the CA bundle holds no PEM certificate".into())
                    })?,
            ),
        };
        let arbiter = match &options.arbiter {
            None => None,
            Some(name) => Some(reqwest::header::HeaderValue::from_str(name).map_err(|_| {
                Error::Invalid(format!("arbiter name {name:?} is not a header value"))
            })?),
        };
        let build = |whole: Option<Duration>| {
            let builder = || {
                let mut b = reqwest::Client::builder()
                    .tls_backend_rustls()
                    .connect_timeout(options.connect_timeout);
                if let Some(name) = &arbiter {
                    let mut headers = reqwest::header::HeaderMap::new();
                    headers.insert(api::ARBITER_HEADER, name.clone());
                    b = b.default_headers(headers);
                }
                if let Some(t) = whole {
                    b = b.timeout(t);
                }
                if let Some(t) = options.read_timeout {
                    b = b.read_timeout(t);
                }
                if let Some(certs) = &ca {
                    b = b.tls_certs_merge(certs.clone());
                }
                b
            };
            builder().build().or_else(|e| {
                tracing::warn!(
                    error = %causes(&e),
                    "no CA roots on this machine (set SSL_CERT_FILE): only the certificates given are trusted"
                );
                builder()
                    .tls_certs_only(ca.clone().unwrap_or_default())
                    .build()
                    .map_err(unreachable)
            })
        };
        Ok(Connector {
            http: build(options.timeout)?,
            transfers: build(None)?,
            key,
        })
    }

    /// A client of the node at `url` (`http://host:port` or `https://host:port`). Nothing is
    /// sent until the first call.
    pub fn client(&self, url: &str) -> Result<Client> {
        let base = Url::parse(url)
            .map_err(|e| Error::Invalid(format!("invalid node URL {url:?}: {e}")))?;
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Error::Invalid(format!(
                    "unsupported node URL scheme {other:?}: use http:// or https://"
                )))
            }
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(Error::Invalid(format!("invalid node URL {url:?}: no host")));
        }
        Ok(Client {
            base,
            http: self.http.clone(),
            transfers: self.transfers.clone(),
            key: self.key.clone(),
        })
    }
}

impl Client {
    /// A client of the node at `url` presenting `key` when given (see [`Connector`]).
    pub fn new(url: &str, key: Option<String>, options: &Options) -> Result<Client> {
        Connector::new(key, options)?.client(url)
    }

    /// The node's base URL.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of a path given as segments (each escaped as a path segment).
    fn at(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().expect("checked in new");
            p.pop_if_empty();
            p.extend(segments);
        }
        u
    }

    fn request(&self, client: &reqwest::Client, method: Method, url: Url) -> RequestBuilder {
        let r = client.request(method, url);
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Sends and turns a non-success status into the node's error.
    async fn send(&self, r: RequestBuilder) -> Result<Response> {
        let resp = r.send().await.map_err(unreachable)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.map_err(unreachable)?;
        Err(match serde_json::from_str::<api::ErrorBody>(&text) {
            Ok(b) => Error::Refused {
                status: status.as_u16(),
                code: b.code,
                message: b.message,
            },
            Err(_) => {
                let mut text = text;
                text.truncate(500);
                Error::Refused {
                    status: status.as_u16(),
                    code: format!("http_{}", status.as_u16()),
                    message: format!("HTTP {status}: {text}"),
                }
            }
        })
    }

    async fn json<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        let resp = self.send(r).await?;
        resp.json::<T>()
            .await
            .map_err(|e| Error::BadResponse(causes(&e)))
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T> {
        self.json(self.request(&self.http, Method::GET, url)).await
    }

    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<T> {
        let mut r = self.request(&self.http, method, self.at(segments));
        if let Some(b) = body {
            r = r.json(b);
        }
        self.json(r).await
    }

    // -----------------------------------------------------------------------------------------
    // Collections, records, search

    /// `POST /v1/collections`.
    pub async fn create_collection(&self, req: &api::CreateCollection) -> Result<api::Seq> {
        self.call(Method::POST, &["v1", "collections"], Some(req))
            .await
    }

    /// `GET /v1/collections`.
    pub async fn collections(&self) -> Result<api::CollectionList> {
        self.get(self.at(&["v1", "collections"])).await
    }

    /// `GET /v1/collections/{name}`.
    pub async fn collection(&self, name: &str) -> Result<api::CollectionInfo> {
        self.get(self.at(&["v1", "collections", name])).await
    }

    /// `DELETE /v1/collections/{name}`.
    pub async fn drop_collection(&self, name: &str) -> Result<api::Seq> {
        self.call::<_, ()>(Method::DELETE, &["v1", "collections", name], None)
            .await
    }

    /// `POST /v1/collections/{name}/records`.
    pub async fn insert(&self, collection: &str, record: &api::NewRecord) -> Result<api::Inserted> {
        self.call(
            Method::POST,
            &["v1", "collections", collection, "records"],
            Some(record),
        )
        .await
    }

    /// `POST /v1/collections/{name}/records/batch`.
    pub async fn insert_batch(
        &self,
        collection: &str,
        batch: &api::Batch,
    ) -> Result<api::BatchInserted> {
        self.call(
            Method::POST,
            &["v1", "collections", collection, "records", "batch"],
            Some(batch),
        )
        .await
    }

    /// `GET /v1/collections/{name}/records/{id}`.
    pub async fn record(&self, collection: &str, id: u64) -> Result<api::Record> {
        self.get(self.at(&["v1", "collections", collection, "records", &id.to_string()]))
            .await
    }

    /// `DELETE /v1/collections/{name}/records/{id}`.
    pub async fn delete_record(&self, collection: &str, id: u64) -> Result<api::Seq> {
        let id = id.to_string();
        self.call::<_, ()>(
            Method::DELETE,
            &["v1", "collections", collection, "records", &id],
            None,
        )
        .await
    }

    /// `POST /v1/collections/{name}/search`.
    pub async fn search(
        &self,
        collection: &str,
        req: &api::SearchRequest,
    ) -> Result<api::SearchResults> {
        self.call(
            Method::POST,
            &["v1", "collections", collection, "search"],
            Some(req),
        )
        .await
    }

    /// `POST /v1/collections/{name}/{path...}` with a JSON body: the agent-memory routes.
    async fn post_at<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        collection: &str,
        path: &[&str],
        body: &B,
    ) -> Result<T> {
        let mut segments = vec!["v1", "collections", collection];
        segments.extend_from_slice(path);
        self.call(Method::POST, &segments, Some(body)).await
    }

    /// `POST /v1/collections/{name}/records/upsert`.
    pub async fn upsert(&self, collection: &str, req: &api::Upsert) -> Result<api::Upserted> {
        self.post_at(collection, &["records", "upsert"], req).await
    }

    /// `POST /v1/collections/{name}/records/get`.
    pub async fn get_records(
        &self,
        collection: &str,
        req: &api::GetRecords,
    ) -> Result<api::Records> {
        self.post_at(collection, &["records", "get"], req).await
    }

    /// `POST /v1/collections/{name}/records/scroll`.
    pub async fn scroll(&self, collection: &str, req: &api::Scroll) -> Result<api::ScrollPage> {
        self.post_at(collection, &["records", "scroll"], req).await
    }

    /// `POST /v1/collections/{name}/records/count`.
    pub async fn count(&self, collection: &str, req: &api::Count) -> Result<api::Counted> {
        self.post_at(collection, &["records", "count"], req).await
    }

    /// `POST /v1/collections/{name}/records/delete`.
    pub async fn delete_records(
        &self,
        collection: &str,
        req: &api::DeleteRecords,
    ) -> Result<api::Deleted> {
        self.post_at(collection, &["records", "delete"], req).await
    }

    /// `POST /v1/collections/{name}/records/payload`.
    pub async fn set_payload(
        &self,
        collection: &str,
        req: &api::SetPayload,
    ) -> Result<api::Updated> {
        self.post_at(collection, &["records", "payload"], req).await
    }

    /// `POST /v1/collections/{name}/records/payload/delete`.
    pub async fn delete_payload_keys(
        &self,
        collection: &str,
        req: &api::DeletePayloadKeys,
    ) -> Result<api::Updated> {
        self.post_at(collection, &["records", "payload", "delete"], req)
            .await
    }

    /// `POST /v1/collections/{name}/search/batch`.
    pub async fn search_batch(
        &self,
        collection: &str,
        req: &api::SearchBatch,
    ) -> Result<api::SearchBatchResults> {
        self.post_at(collection, &["search", "batch"], req).await
    }

    /// `GET /v1/collections/{name}/indexes`.
    pub async fn payload_indexes(&self, collection: &str) -> Result<api::PayloadIndexes> {
        self.get(self.at(&["v1", "collections", collection, "indexes"]))
            .await
    }

    /// `POST /v1/collections/{name}/indexes`.
    pub async fn create_payload_index(
        &self,
        collection: &str,
        req: &api::PayloadIndex,
    ) -> Result<api::Seq> {
        self.post_at(collection, &["indexes"], req).await
    }

    /// `DELETE /v1/collections/{name}/indexes/{field}`.
    pub async fn drop_payload_index(&self, collection: &str, field: &str) -> Result<api::Seq> {
        self.call::<_, ()>(
            Method::DELETE,
            &["v1", "collections", collection, "indexes", field],
            None,
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // The graph

    /// `POST /v1/graph/nodes`.
    pub async fn create_node(&self, req: &api::CreateNode) -> Result<api::Created> {
        self.call(Method::POST, &["v1", "graph", "nodes"], Some(req))
            .await
    }

    /// `GET /v1/graph/nodes/{id}`.
    pub async fn node(&self, id: u64) -> Result<api::GraphNode> {
        self.get(self.at(&["v1", "graph", "nodes", &id.to_string()]))
            .await
    }

    /// `DELETE /v1/graph/nodes/{id}`.
    pub async fn delete_node(&self, id: u64) -> Result<api::Seq> {
        let id = id.to_string();
        self.call::<_, ()>(Method::DELETE, &["v1", "graph", "nodes", &id], None)
            .await
    }

    /// `GET /v1/graph/nodes/{id}/neighbors`. Kinds travel comma-separated in the query
    /// string, so a kind that holds a comma cannot be asked for: it is refused rather than
    /// asked for as two.
    pub async fn neighbors(
        &self,
        id: u64,
        direction: api::Direction,
        kinds: &[String],
    ) -> Result<api::Neighbors> {
        if let Some(k) = kinds.iter().find(|k| k.contains(',')) {
            return Err(Error::Invalid(format!(
                "kind {k:?} contains a comma, which the HTTP API cannot filter on"
            )));
        }
        let mut url = self.at(&["v1", "graph", "nodes", &id.to_string(), "neighbors"]);
        url.query_pairs_mut()
            .append_pair("direction", direction.name());
        if !kinds.is_empty() {
            url.query_pairs_mut().append_pair("kind", &kinds.join(","));
        }
        self.get(url).await
    }

    /// `POST /v1/graph/edges`.
    pub async fn create_edge(&self, req: &api::CreateEdge) -> Result<api::Created> {
        self.call(Method::POST, &["v1", "graph", "edges"], Some(req))
            .await
    }

    /// `GET /v1/graph/edges/{id}`.
    pub async fn edge(&self, id: u64) -> Result<api::GraphEdge> {
        self.get(self.at(&["v1", "graph", "edges", &id.to_string()]))
            .await
    }

    /// `DELETE /v1/graph/edges/{id}`.
    pub async fn delete_edge(&self, id: u64) -> Result<api::Seq> {
        let id = id.to_string();
        self.call::<_, ()>(Method::DELETE, &["v1", "graph", "edges", &id], None)
            .await
    }

    /// `POST /v1/graph/traverse`.
    pub async fn traverse(&self, req: &api::TraverseRequest) -> Result<api::Traversal> {
        self.call(Method::POST, &["v1", "graph", "traverse"], Some(req))
            .await
    }

    // -----------------------------------------------------------------------------------------
    // State, log, roles, replication

    /// `GET /v1/state`, or `GET /v1/state?seq=N`: the chain hash at a past sequence number.
    pub async fn state(&self, seq: Option<u64>) -> Result<api::State> {
        let mut url = self.at(&["v1", "state"]);
        if let Some(seq) = seq {
            url.query_pairs_mut().append_pair("seq", &seq.to_string());
        }
        self.get(url).await
    }

    /// The chain hash (hex) at `seq`, or `None` when the node does not retain it (404).
    pub async fn chain_at(&self, seq: u64) -> Result<Option<String>> {
        match self.state(Some(seq)).await {
            Ok(s) => Ok(Some(s.chain_hash)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/log` (a long poll when `query.wait_ms` is above 0), saying who asks.
    pub async fn log(&self, query: &api::LogQuery, hello: &Hello) -> Result<api::LogPage> {
        let mut url = self.at(&["v1", "log"]);
        url.query_pairs_mut()
            .append_pair("from", &query.from.to_string())
            .append_pair("limit", &query.limit.to_string())
            .append_pair("wait_ms", &query.wait_ms.to_string());
        let mut r = self.request(&self.http, Method::GET, url);
        if let Some(name) = &hello.follower {
            r = r.header(api::FOLLOWER_HEADER, name);
        }
        if let Some(epoch) = hello.epoch {
            r = r.header(api::EPOCH_HEADER, epoch.to_string());
        }
        if let Some(chain) = &hello.chain {
            r = r.header(api::CHAIN_HEADER, chain);
        }
        self.json(r).await
    }

    /// `GET /v1/replication`.
    pub async fn replication(&self) -> Result<api::ReplicationStatus> {
        self.get(self.at(&["v1", "replication"])).await
    }

    /// `GET /v1/role`. Naming `epoch` (the highest the caller has seen) fences a leader below
    /// it, when the key may write: it stops taking writes and keeps serving its log.
    pub async fn role(&self, epoch: Option<u64>) -> Result<api::RoleInfo> {
        let mut r = self.request(&self.http, Method::GET, self.at(&["v1", "role"]));
        if let Some(e) = epoch {
            r = r.header(api::EPOCH_HEADER, e.to_string());
        }
        self.json(r).await
    }

    /// `PUT /v1/role`.
    pub async fn set_role(&self, role: &api::SetRole) -> Result<api::RoleInfo> {
        self.call(Method::PUT, &["v1", "role"], Some(role)).await
    }

    // -----------------------------------------------------------------------------------------
    // Snapshots

    /// `POST /v1/snapshots`.
    pub async fn create_snapshot(&self) -> Result<api::SnapshotInfo> {
        self.call::<_, ()>(Method::POST, &["v1", "snapshots"], None)
            .await
    }

    /// `GET /v1/snapshots`.
    pub async fn snapshots(&self) -> Result<api::SnapshotList> {
        self.get(self.at(&["v1", "snapshots"])).await
    }

    /// `POST /v1/backups`: a snapshot uploaded to the node's backup destination now.
    pub async fn create_backup(&self) -> Result<api::BackupInfo> {
        self.call::<_, ()>(Method::POST, &["v1", "backups"], None)
            .await
    }

    /// `GET /v1/backups`.
    pub async fn backups(&self) -> Result<api::BackupList> {
        self.get(self.at(&["v1", "backups"])).await
    }

    /// `GET /v1/snapshots/{id}`, streamed into `out` as it arrives (never held whole);
    /// returns the bytes written. `out` is flushed, not synced.
    pub async fn download_snapshot(
        &self,
        id: u64,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt as _;
        let url = self.at(&["v1", "snapshots", &id.to_string()]);
        let mut resp = self
            .send(self.request(&self.transfers, Method::GET, url))
            .await?;
        let mut written = 0u64;
        let local = |source| Error::Io {
            doing: format!("writing snapshot {id}"),
            source,
        };
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            out.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(local)?;
        Ok(written)
    }

    /// `POST /v1/snapshots/restore` of the snapshot file at `path`, streamed from the file.
    pub async fn restore(&self, path: &Path) -> Result<api::Restored> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| Error::Io {
                doing: format!("cannot read snapshot {}", path.display()),
                source,
            })?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let r = self
            .request(
                &self.transfers,
                Method::POST,
                self.at(&["v1", "snapshots", "restore"]),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.json(r).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_paths_escaped() {
        let o = Options::default();
        for bad in ["localhost:3000", "ftp://x", "http://", "not a url"] {
            assert!(
                matches!(Client::new(bad, None, &o), Err(Error::Invalid(_))),
                "{bad}"
            );
        }
        let c = Client::new("http://127.0.0.1:3000/", None, &o).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:3000");
        assert_eq!(
            c.at(&["v1", "collections", "a/b c"]).as_str(),
            "http://127.0.0.1:3000/v1/collections/a%2Fb%20c"
        );
        let prefixed = Client::new("http://h:1/base", None, &o).unwrap();
        assert_eq!(
            prefixed.at(&["v1", "state"]).as_str(),
            "http://h:1/base/v1/state"
        );
        assert!(matches!(
            Client::new(
                "https://h:1",
                None,
                &Options {
                    ca_pem: Some(b"not a certificate".to_vec()),
                    ..Options::default()
                }
            ),
            Err(Error::Invalid(_))
        ));
    }
}
