//! Embedded mode: the node's own engine and service layer over a local data directory, so a
//! directory written here can be served by `valori-node` and the other way round.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use valori_api as wire;
use valori_node::metrics::Metrics;
use valori_node::service::{HitOut, RecordIn, RecordOut, Service};
use valori_node::{Engine, EngineConfig};

use crate::api::*;

/// An open data directory.
pub struct Embedded {
    service: Service,
    dir: PathBuf,
}

impl Embedded {
    /// Opens (recovering) or creates the data directory; with `vectors_on_disk`, the
    /// full-precision vectors live in files mapped from its `vectors/` (the node's
    /// `--vectors-on-disk`).
    pub fn open(dir: PathBuf, vectors_on_disk: bool) -> Res<Embedded> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            ApiError::new(
                Kind::Other,
                "storage_error",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let mut config = EngineConfig::new(&dir);
        config.vectors_on_disk = vectors_on_disk;
        let engine = Engine::open(config, Arc::new(Metrics::new())).map_err(|e| {
            ApiError::new(
                Kind::Other,
                "open_failed",
                format!("cannot open {}: {e}", dir.display()),
            )
        })?;
        Ok(Embedded {
            service: Service::embedded(engine),
            dir,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Runs a future of the service to completion on this thread. The service's write futures only
/// wait for the engine's writer thread to answer, so no async runtime is needed.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn state_of(s: valori_node::service::StateAt) -> wire::State {
    wire::State {
        seq: s.seq,
        chain_hash: hex::encode(s.chain_hash),
        state_hash: s.state_hash.map(hex::encode),
        epoch: s.epoch,
    }
}

impl Api for Embedded {
    fn create_collection(&self, spec: wire::CreateCollection) -> Res<()> {
        block_on(self.service.create_collection(spec))?;
        Ok(())
    }

    fn drop_collection(&self, name: String) -> Res<()> {
        block_on(self.service.drop_collection(name))?;
        Ok(())
    }

    fn collections(&self) -> Res<Vec<wire::CollectionInfo>> {
        Ok(self.service.collections_blocking()?.collections)
    }

    fn collection(&self, name: &str) -> Res<wire::CollectionInfo> {
        Ok(self.service.collection_blocking(name)?)
    }

    fn insert(&self, collection: String, records: Vec<RecordIn>, batch: bool) -> Res<Vec<u64>> {
        Ok(block_on(self.service.insert(collection, records, batch))?.ids)
    }

    fn get(&self, collection: &str, id: u64) -> Res<RecordOut> {
        Ok(self.service.get_blocking(collection, id)?)
    }

    fn delete(&self, collection: String, id: u64) -> Res<()> {
        block_on(self.service.delete(collection, id))?;
        Ok(())
    }

    fn search(&self, collection: String, query: wire::SearchRequest) -> Res<Vec<HitOut>> {
        Ok(self.service.search_blocking(&collection, &query)?.hits)
    }

    fn upsert(&self, collection: String, req: wire::Upsert) -> Res<wire::Upserted> {
        Ok(block_on(self.service.upsert(collection, req))?)
    }

    fn get_records(&self, collection: String, req: wire::GetRecords) -> Res<wire::Records> {
        Ok(self.service.get_records_blocking(&collection, &req)?)
    }

    fn scroll(&self, collection: String, req: wire::Scroll) -> Res<wire::ScrollPage> {
        Ok(self.service.scroll_blocking(&collection, &req)?)
    }

    fn count(&self, collection: String, req: wire::Count) -> Res<wire::Counted> {
        Ok(self.service.count_blocking(&collection, &req)?)
    }

    fn delete_records(&self, collection: String, req: wire::DeleteRecords) -> Res<wire::Deleted> {
        Ok(block_on(self.service.delete_records(collection, req))?)
    }

    fn set_payload(&self, collection: String, req: wire::SetPayload) -> Res<wire::Updated> {
        Ok(block_on(self.service.set_payload(collection, req))?)
    }

    fn delete_payload_keys(
        &self,
        collection: String,
        req: wire::DeletePayloadKeys,
    ) -> Res<wire::Updated> {
        Ok(block_on(self.service.delete_payload_keys(collection, req))?)
    }

    fn search_batch(
        &self,
        collection: String,
        req: wire::SearchBatch,
    ) -> Res<(Vec<Vec<HitOut>>, u64)> {
        let found = self.service.search_batch_blocking(&collection, &req)?;
        Ok((found.results, found.seq))
    }

    fn payload_indexes(&self, collection: String) -> Res<wire::PayloadIndexes> {
        Ok(self.service.payload_indexes_blocking(&collection)?)
    }

    fn create_payload_index(&self, collection: String, req: wire::PayloadIndex) -> Res<()> {
        block_on(self.service.create_payload_index(collection, req))?;
        Ok(())
    }

    fn drop_payload_index(&self, collection: String, field: String) -> Res<()> {
        block_on(self.service.drop_payload_index(collection, field))?;
        Ok(())
    }

    fn create_node(
        &self,
        kind: String,
        record: Option<wire::RecordRef>,
        properties: Option<Vec<u8>>,
    ) -> Res<u64> {
        Ok(block_on(self.service.create_node(kind, record, properties))?.id)
    }

    fn get_node(&self, id: u64) -> Res<GraphNode> {
        let n = self.service.node_blocking(id)?;
        Ok(GraphNode {
            id,
            kind: n.kind,
            record: n.record,
            properties: n.properties,
        })
    }

    fn delete_node(&self, id: u64) -> Res<()> {
        block_on(self.service.delete_node(id))?;
        Ok(())
    }

    fn create_edge(&self, edge: wire::CreateEdge) -> Res<u64> {
        Ok(block_on(self.service.create_edge(edge))?.id)
    }

    fn get_edge(&self, id: u64) -> Res<wire::GraphEdge> {
        let e = self.service.edge_blocking(id)?;
        Ok(wire::GraphEdge {
            id,
            from: e.from,
            to: e.to,
            kind: e.kind,
        })
    }

    fn delete_edge(&self, id: u64) -> Res<()> {
        block_on(self.service.delete_edge(id))?;
        Ok(())
    }

    fn neighbors(
        &self,
        id: u64,
        direction: wire::Direction,
        kinds: &[String],
    ) -> Res<Vec<wire::Neighbor>> {
        Ok(self
            .service
            .neighbors_blocking(id, direction, kinds)?
            .neighbors)
    }

    fn traverse(&self, query: wire::TraverseRequest) -> Res<wire::Traversal> {
        Ok(self.service.traverse_blocking(&query)?)
    }

    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String> {
        let f = self.service.create_snapshot_blocking()?;
        match copy_to {
            None => Ok(f.path.display().to_string()),
            Some(dest) => {
                crate::api::write_atomically(dest, |file| {
                    let mut src = std::fs::File::open(&f.path).map_err(|e| {
                        ApiError::io(format!("cannot read {}", f.path.display()), &e)
                    })?;
                    std::io::copy(&mut src, file).map(|_| ()).map_err(|e| {
                        ApiError::io(
                            format!("cannot copy the snapshot to {}", dest.display()),
                            &e,
                        )
                    })
                })?;
                Ok(dest.display().to_string())
            }
        }
    }

    fn restore(&self, path: &Path) -> Res<wire::State> {
        // Copied into the snapshot directory, then mapped and renamed into place: the snapshot
        // is never read into the heap, only the state decoded from it.
        Ok(state_of(block_on(self.service.restore_file(path))?.state))
    }

    fn state(&self) -> Res<wire::State> {
        Ok(state_of(self.service.state_blocking(None)?))
    }

    fn close(&self) {
        self.service.shutdown();
    }
}

impl Drop for Embedded {
    /// Releases the data directory (RocksDB's lock) before the handle is gone, so it can be
    /// opened again at once, here or by `valori-node`.
    fn drop(&mut self) {
        self.service.shutdown();
    }
}
