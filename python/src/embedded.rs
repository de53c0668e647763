//! Embedded mode: the node's own engine and service layer over a local data directory, so a
//! directory written here can be served by `valori-node` and the other way round.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use valori_kernel::{IndexSpec, SearchParams};
use valori_node::metrics::Metrics;
use valori_node::service::{parse_direction, IndexIn, RecordIn, Service};
use valori_node::{Engine, EngineConfig, NodeError};

use crate::api::*;

/// An open data directory.
pub struct Embedded {
    service: Service,
    dir: PathBuf,
}

impl Embedded {
    /// Opens (recovering) or creates the data directory.
    pub fn open(dir: PathBuf) -> Res<Embedded> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            ApiError::new(
                Kind::Other,
                "storage_error",
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let engine =
            Engine::open(EngineConfig::new(&dir), Arc::new(Metrics::new())).map_err(|e| {
                ApiError::new(
                    Kind::Other,
                    "open_failed",
                    format!("cannot open {}: {e}", dir.display()),
                )
            })?;
        Ok(Embedded {
            service: Service {
                engine,
                // The kernel's own batch limit applies; there is no request body to bound.
                max_batch: valori_kernel::limits::MAX_BATCH_RECORDS as usize,
                follower_of: None,
            },
            dir,
        })
    }

    fn engine(&self) -> &Engine {
        &self.service.engine
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

fn state_of(engine: &Engine) -> Res<State> {
    let s = engine.state()?;
    Ok(State {
        seq: s.seq,
        chain_hash: hex::encode(s.chain_hash),
        state_hash: hex::encode(s.state_hash),
    })
}

fn info(c: &valori_kernel::Collection) -> CollectionInfo {
    let s = c.spec();
    CollectionInfo {
        name: s.name.clone(),
        dimension: s.dimension,
        metric: s.metric.name().to_string(),
        index: match s.index {
            IndexSpec::Flat => "flat",
            IndexSpec::Hnsw(_) => "hnsw",
        }
        .to_string(),
        records: c.len(),
        next_id: c.next_id(),
    }
}

impl Api for Embedded {
    fn create_collection(
        &self,
        name: String,
        dimension: u32,
        metric: &str,
        index: IndexIn,
    ) -> Res<()> {
        block_on(
            self.service
                .create_collection(name, dimension, Some(metric), index),
        )?;
        Ok(())
    }

    fn drop_collection(&self, name: String) -> Res<()> {
        block_on(self.service.drop_collection(name))?;
        Ok(())
    }

    fn collections(&self) -> Res<Vec<CollectionInfo>> {
        Ok(self.engine().read()?.collections().map(info).collect())
    }

    fn collection(&self, name: &str) -> Res<CollectionInfo> {
        let k = self.engine().read()?;
        let c = k.collection(name).ok_or_else(|| {
            NodeError::from(valori_kernel::Error::CollectionNotFound {
                name: name.to_string(),
            })
        })?;
        Ok(info(c))
    }

    fn insert(&self, collection: String, records: Vec<RecordIn>, batch: bool) -> Res<Vec<u64>> {
        Ok(block_on(self.service.insert(collection, records, batch))?.0)
    }

    fn get(&self, collection: &str, id: u64) -> Res<Record> {
        let r = self.service.get(collection, id)?;
        Ok(Record {
            id: r.id,
            vector: r.vector,
            tag: r.tag,
            metadata: r.metadata,
        })
    }

    fn delete(&self, collection: String, id: u64) -> Res<()> {
        block_on(self.service.delete(collection, id))?;
        Ok(())
    }

    fn search(&self, q: Query) -> Res<Vec<Hit>> {
        let params = SearchParams {
            k: q.k,
            tag: q.tag,
            ef: q.ef,
        };
        let (hits, _) =
            self.service
                .search_now(&q.collection, &q.vector, &params, q.with_metadata)?;
        Ok(hits
            .into_iter()
            .map(|h| Hit {
                id: h.id,
                distance: h.distance,
                tag: h.tag,
                metadata: h.metadata,
            })
            .collect())
    }

    fn create_node(
        &self,
        kind: String,
        record: Option<(String, u64)>,
        properties: Option<Vec<u8>>,
    ) -> Res<u64> {
        Ok(block_on(self.service.create_node(kind, record, properties))?.0)
    }

    fn get_node(&self, id: u64) -> Res<GraphNode> {
        let n = self.service.node(id)?;
        Ok(GraphNode {
            id,
            kind: n.kind,
            record: n.record.map(|r| (r.collection, r.id)),
            properties: n.properties,
        })
    }

    fn delete_node(&self, id: u64) -> Res<()> {
        block_on(self.service.delete_node(id))?;
        Ok(())
    }

    fn create_edge(&self, from: u64, to: u64, kind: String) -> Res<u64> {
        Ok(block_on(self.service.create_edge(from, to, kind))?.0)
    }

    fn get_edge(&self, id: u64) -> Res<Edge> {
        let e = self.service.edge(id)?;
        Ok(Edge {
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

    fn neighbors(&self, id: u64, direction: &str, kinds: &[String]) -> Res<Vec<Neighbor>> {
        let (list, _) = self.service.neighbors(id, Some(direction), kinds)?;
        Ok(list
            .into_iter()
            .map(|(node, edge, kind, outgoing)| Neighbor {
                node,
                edge,
                kind,
                direction: if outgoing { "out" } else { "in" }.to_string(),
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
        let direction = parse_direction(Some(direction))?;
        let (nodes, truncated, _) = self
            .service
            .traverse_now(start, max_depth, &kinds, direction)?;
        Ok(Traversal { nodes, truncated })
    }

    fn snapshot(&self, copy_to: Option<&Path>) -> Res<String> {
        let f = self.engine().snapshot_blocking()?;
        match copy_to {
            None => Ok(f.path.display().to_string()),
            Some(dest) => {
                let what = || format!("cannot copy the snapshot to {}", dest.display());
                std::fs::copy(&f.path, dest).map_err(|e| ApiError::io(what(), &e))?;
                std::fs::File::open(dest)
                    .and_then(|c| c.sync_all())
                    .map_err(|e| ApiError::io(what(), &e))?;
                Ok(dest.display().to_string())
            }
        }
    }

    fn restore(&self, path: &Path) -> Res<State> {
        // Copied into the snapshot directory, then mapped and renamed into place: the snapshot
        // is never read into the heap, only the state decoded from it.
        block_on(self.engine().install_copy(path))?;
        state_of(self.engine())
    }

    fn state(&self) -> Res<State> {
        state_of(self.engine())
    }

    fn close(&self) {
        self.engine().shutdown();
    }
}

impl Drop for Embedded {
    /// Releases the data directory (RocksDB's lock) before the handle is gone, so it can be
    /// opened again at once, here or by `valori-node`.
    fn drop(&mut self) {
        self.engine().shutdown();
    }
}
