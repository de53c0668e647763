//! # valori-node
//!
//! The Valori server as a library: the durable engine ([`engine`]) over RocksDB ([`store`]), the
//! operations of the API ([`service`]) and the transports that translate onto them ([`http`],
//! [`grpc`]), replication, metrics and configuration. The `valori-node` binary is a thin `main`
//! around [`serve`]; the Python package embeds a [`service::Service`] over an
//! [`engine::Engine`].

/// The allocator of every program built on the node (the server, the `valori` command, the
/// benchmarks, the Python package): the system's, with large blocks (the state's vectors, walk
/// copy and graph) on transparent huge pages, which makes the random reads of a search and of
/// an index build cheaper (BENCHMARKS.md, "Huge pages").
#[global_allocator]
static ALLOCATOR: valori_alloc::HugePages = valori_alloc::HugePages;

/// Makes rustls with the ring provider the process's TLS crypto provider. The node's servers
/// name ring explicitly; HTTP clients built on reqwest's rustls backend (present whenever a
/// crate in the same build enables it, such as the Python package's https client) look the
/// provider up here and cannot be built without one. Harmless when one is already installed.
pub fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub mod audit;
pub mod backup;
pub mod config;
pub mod conn;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod replication;
pub mod role;
mod server;
pub mod service;
pub mod store;

pub use server::serve;

use std::sync::Arc;

pub use config::Config;
pub use engine::{Engine, EngineConfig};
pub use error::{NodeError, OpenError};

/// Runs CPU-bound or storage work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Internal(format!("worker task failed: {e}")))?
}

/// `--restore-from-backup`: restores the backup at `url` into the data directory when it holds
/// no state.
fn restore_from_backup(config: &Config, url: &str, threads: usize) -> anyhow::Result<()> {
    let dir = config.data_dir();
    let dest = backup::Destination::open(url)?;
    {
        let store = store::Store::open(&dir)?;
        if backup::restore::has_state(&store)? {
            tracing::info!("--restore-from-backup ignored: the data directory already has state");
            return Ok(());
        }
    }
    let target =
        backup::RestoreTarget::from_flags(config.restore_target_seq, config.restore_target_time);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt
        .block_on(backup::restore_into(&dest, &dir, target, threads))
        .map_err(|e| anyhow::anyhow!("--restore-from-backup {url}: {e}"))?;
    println!(
        "valori-node restored seq {} (state hash {}) from {url}",
        report.seq,
        hex::encode(report.state_hash)
    );
    Ok(())
}

/// Opens the engine for `config`: recovers the data directory, restores from
/// `--restore-from` or `--restore-from-backup` into an empty one, and creates the default collection when
/// `--default-dimension` asks for it.
pub fn open_engine(config: &Config) -> anyhow::Result<Engine> {
    anyhow::ensure!(
        config.follower_of().is_none_or(|l| !l.is_empty()),
        "a follower needs --leader-url (VALORI_LEADER_URL)"
    );
    let mut ec = EngineConfig::new(config.data_dir());
    ec.snapshot_every = config.snapshot_every;
    ec.snapshot_keep = config.snapshot_keep.max(1);
    ec.prune_log = config.prune_log;
    ec.follow = config.follower_of().map(String::from);
    ec.max_queued_writes = config.max_queued_writes.max(1);
    ec.index_nice = config.index_nice.clamp(0, 19);
    if config.graph_share_idle_ms > 0 {
        tracing::warn!(
            "--graph-share-idle-ms (VALORI_GRAPH_SHARE_IDLE_MS) has no effect any more; \
             --share-graph-lists (VALORI_SHARE_GRAPH_LISTS) shares the graph's lists between \
             the two copies of the state after every group"
        );
    }
    ec.vectors_on_disk = config.vectors_on_disk;
    ec.share_graph_lists = config.share_graph_lists;
    ec.commit_gate = config.test_commit_gate.clone();
    ec.crash_at = config.test_crash_at;
    if let Some(t) = config.index_threads {
        ec.index_threads = t.max(1);
    }
    if let Some(url) = &config.backup_to {
        // A destination that cannot be used stops the node before it listens.
        backup::Destination::open(url)?;
    }
    if config.backup_to.is_some() && config.backup_ship_interval_s > 0 {
        // Nothing is pruned until the backup task knows what the destination holds.
        ec.log_hold = Some(Arc::new(std::sync::atomic::AtomicU64::new(0)));
    }
    if let Some(url) = &config.restore_from_backup {
        restore_from_backup(config, url, ec.index_threads)?;
    }
    let engine = Engine::open(ec, Arc::new(metrics::Metrics::new()))?;
    if let Some(path) = &config.restore_from {
        if engine.state()?.seq == 0 {
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            rt.block_on(engine.install_copy(path))
                .map_err(|e| anyhow::anyhow!("--restore-from {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "started from snapshot");
        } else {
            tracing::warn!("--restore-from ignored: the data directory already has state");
        }
    }
    if !engine.role().writable() && config.default_dimension.is_some() {
        tracing::warn!(
            "--default-dimension ignored on a follower: its state comes from the leader"
        );
    } else if let Some(dim) = config.default_dimension {
        let exists = engine
            .read()?
            .collection(valori_kernel::limits::DEFAULT_COLLECTION)
            .is_some();
        if !exists {
            engine.submit_blocking(valori_kernel::Event::CreateCollection(
                valori_kernel::CollectionSpec {
                    name: valori_kernel::limits::DEFAULT_COLLECTION.into(),
                    dimension: dim,
                    metric: valori_kernel::Metric::L2,
                    index: valori_kernel::IndexSpec::Hnsw(valori_kernel::HnswParams::default()),
                },
            ))?;
        }
    }
    Ok(engine)
}
