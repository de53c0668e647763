//! Remote mode: the node's HTTP API through the typed client ([`valori_client`]), run on a
//! runtime of this handle's own. Vectors are checked here with the node's own conversion before
//! they are sent, so a NaN or an out-of-range component gets the same error in both modes
//! (JSON has no NaN to send).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use valori_api as wire;
use valori_client::{Client, Options};
use valori_node::service::{
    hit_from_wire, record_vector, search_numbers, HitOut, RecordIn, RecordOut,
};

use crate::api::*;

/// A client of one node.
pub struct Remote {
    client: Client,
    /// Drives the client's calls: one worker thread, so that idle connections are kept and
    /// calls from several Python threads (each blocking on its own) all make progress.
    runtime: tokio::runtime::Runtime,
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

/// The client's error as the Python package raises it: the node's own error by its status and
/// code, exactly as the embedded engine's.
fn from_client(e: valori_client::Error) -> ApiError {
    use valori_client::Error;
    match e {
        Error::Invalid(m) => ApiError::invalid(m),
        Error::Unreachable(m) => ApiError::new(Kind::Connection, "connection_error", m),
        Error::Refused {
            status,
            code,
            message,
        } => ApiError::from_status(status, code, message),
        Error::BadResponse(m) => ApiError::new(
            Kind::Other,
            "bad_response",
            format!("unexpected response from the server: {m}"),
        ),
        Error::Io { doing, source } => ApiError::io(doing, &source),
        other => ApiError::new(Kind::Other, "client_error", other.to_string()),
    }
}

impl Remote {
    /// A client for `url` (`http://host:port` or `https://host:port`). Nothing is sent until
    /// the first call. Over https the server's certificate must chain to the system's trusted
    /// roots or to a certificate in the PEM file `ca_cert`. `timeout` bounds connecting and
    /// each call, but not a snapshot's download or upload, which take as long as they take.
    pub fn new(
        url: &str,
        api_key: Option<String>,
        timeout: Duration,
        ca_cert: Option<&Path>,
    ) -> Res<Remote> {
        if ca_cert.is_some() && !url.starts_with("https://") {
            return Err(ApiError::invalid("ca_cert applies to https:// URLs only"));
        }
        let ca_pem = match ca_cert {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ApiError::invalid(format!("cannot read ca_cert {}: {e}", path.display()))
            })?),
        };
        let options = Options {
            connect_timeout: timeout,
            timeout: Some(timeout),
            read_timeout: None,
            ca_pem,
            arbiter: None,
        };
        let client = Client::new(url, api_key, &options).map_err(|e| match e {
            valori_client::Error::Invalid(m) if m.contains("PEM") => ApiError::invalid(format!(
                "ca_cert {} holds no PEM certificate",
                ca_cert.map_or_else(String::new, |p| p.display().to_string())
            )),
            valori_client::Error::Invalid(m) => {
                ApiError::invalid(m.replacen("node URL", "remote URL", 1))
            }
            other => from_client(other),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("valori-remote")
            .enable_all()
            .build()
            .map_err(|e| ApiError::new(Kind::Other, "runtime_error", e.to_string()))?;
        Ok(Remote { client, runtime })
    }

    /// Runs a call of the client to its end on this handle's runtime.
    fn run<T>(&self, call: impl Future<Output = Result<T, valori_client::Error>>) -> Res<T> {
        self.runtime.block_on(call).map_err(from_client)
    }
}

/// A hit of the node's answer; metadata that is not base64 is the server's fault.
fn hit_of(h: wire::SearchHit) -> Res<HitOut> {
    hit_from_wire(h).map_err(|e| {
        ApiError::new(
            Kind::Other,
            "bad_response",
            format!("unexpected response from the server: {e}"),
        )
    })
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
        self.run(self.client.create_collection(&spec))?;
        Ok(())
    }

    fn drop_collection(&self, name: String) -> Res<()> {
        self.run(self.client.drop_collection(&name))?;
        Ok(())
    }

    fn collections(&self) -> Res<Vec<wire::CollectionInfo>> {
        Ok(self.run(self.client.collections())?.collections)
    }

    fn collection(&self, name: &str) -> Res<wire::CollectionInfo> {
        self.run(self.client.collection(name))
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
            Ok(self.run(self.client.insert_batch(&collection, &body))?.ids)
        } else {
            let record = records
                .into_iter()
                .next()
                .map(record_json)
                .ok_or_else(|| ApiError::invalid("no record to insert"))?;
            Ok(vec![self.run(self.client.insert(&collection, &record))?.id])
        }
    }

    fn get(&self, collection: &str, id: u64) -> Res<RecordOut> {
        let r = self.run(self.client.record(collection, id))?;
        Ok(RecordOut {
            id: r.id,
            vector: r.vector,
            tag: r.tag,
            metadata: r.metadata.as_deref().map(unb64).transpose()?,
            seq: r.seq,
        })
    }

    fn delete(&self, collection: String, id: u64) -> Res<()> {
        self.run(self.client.delete_record(&collection, id))?;
        Ok(())
    }

    fn search(&self, collection: String, query: wire::SearchRequest) -> Res<Vec<HitOut>> {
        search_numbers(&query)?;
        let out = self.run(self.client.search(&collection, &query))?;
        // A hit the search asked metadata for carries it, or null (never absent).
        out.results.into_iter().map(hit_of).collect()
    }

    fn upsert(&self, collection: String, req: wire::Upsert) -> Res<wire::Upserted> {
        // The node's own checks of what JSON cannot carry (NaN, infinities), for its errors.
        for (i, r) in req.records.iter().enumerate() {
            record_vector(i, &r.vector, true)?;
        }
        self.run(self.client.upsert(&collection, &req))
    }

    fn get_records(&self, collection: String, req: wire::GetRecords) -> Res<wire::Records> {
        self.run(self.client.get_records(&collection, &req))
    }

    fn scroll(&self, collection: String, req: wire::Scroll) -> Res<wire::ScrollPage> {
        self.run(self.client.scroll(&collection, &req))
    }

    fn count(&self, collection: String, req: wire::Count) -> Res<wire::Counted> {
        self.run(self.client.count(&collection, &req))
    }

    fn delete_records(&self, collection: String, req: wire::DeleteRecords) -> Res<wire::Deleted> {
        self.run(self.client.delete_records(&collection, &req))
    }

    fn set_payload(&self, collection: String, req: wire::SetPayload) -> Res<wire::Updated> {
        self.run(self.client.set_payload(&collection, &req))
    }

    fn delete_payload_keys(
        &self,
        collection: String,
        req: wire::DeletePayloadKeys,
    ) -> Res<wire::Updated> {
        self.run(self.client.delete_payload_keys(&collection, &req))
    }

    fn search_batch(
        &self,
        collection: String,
        req: wire::SearchBatch,
    ) -> Res<(Vec<Vec<HitOut>>, u64)> {
        for s in &req.searches {
            search_numbers(s)?;
        }
        let found = self.run(self.client.search_batch(&collection, &req))?;
        let results = found
            .results
            .into_iter()
            .map(|b| b.results.into_iter().map(hit_of).collect())
            .collect::<Res<_>>()?;
        Ok((results, found.seq))
    }

    fn payload_indexes(&self, collection: String) -> Res<wire::PayloadIndexes> {
        self.run(self.client.payload_indexes(&collection))
    }

    fn create_payload_index(&self, collection: String, req: wire::PayloadIndex) -> Res<()> {
        self.run(self.client.create_payload_index(&collection, &req))?;
        Ok(())
    }

    fn drop_payload_index(&self, collection: String, field: String) -> Res<()> {
        self.run(self.client.drop_payload_index(&collection, &field))?;
        Ok(())
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
        Ok(self.run(self.client.create_node(&body))?.id)
    }

    fn get_node(&self, id: u64) -> Res<GraphNode> {
        let n = self.run(self.client.node(id))?;
        Ok(GraphNode {
            id: n.id,
            kind: n.kind,
            record: n.record,
            properties: n.properties.as_deref().map(unb64).transpose()?,
        })
    }

    fn delete_node(&self, id: u64) -> Res<()> {
        self.run(self.client.delete_node(id))?;
        Ok(())
    }

    fn create_edge(&self, edge: wire::CreateEdge) -> Res<u64> {
        Ok(self.run(self.client.create_edge(&edge))?.id)
    }

    fn get_edge(&self, id: u64) -> Res<wire::GraphEdge> {
        self.run(self.client.edge(id))
    }

    fn delete_edge(&self, id: u64) -> Res<()> {
        self.run(self.client.delete_edge(id))?;
        Ok(())
    }

    fn neighbors(
        &self,
        id: u64,
        direction: wire::Direction,
        kinds: &[String],
    ) -> Res<Vec<wire::Neighbor>> {
        Ok(self
            .run(self.client.neighbors(id, direction, kinds))?
            .neighbors)
    }

    fn traverse(&self, query: wire::TraverseRequest) -> Res<wire::Traversal> {
        self.run(self.client.traverse(&query))
    }

    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String> {
        let s = self.run(self.client.create_snapshot())?;
        match copy_to {
            None => Ok(s.path),
            Some(dest) => {
                // A download cut short leaves the previous copy as it was.
                crate::api::write_atomically(dest, |file| {
                    let copy = file.try_clone().map_err(|e| {
                        ApiError::io(format!("cannot write {}", dest.display()), &e)
                    })?;
                    let mut out = tokio::fs::File::from_std(copy);
                    self.run(async { self.client.download_snapshot(s.id, &mut out).await })?;
                    Ok(())
                })?;
                Ok(dest.display().to_string())
            }
        }
    }

    fn restore(&self, path: &Path) -> Res<wire::State> {
        // Streamed from the file, not read into memory first.
        self.run(self.client.restore(path))?;
        self.state()
    }

    fn state(&self) -> Res<wire::State> {
        self.run(self.client.state(None))
    }

    fn close(&self) {}
}
