//! # valori-node
//!
//! The Valori server as a library: the durable engine ([`engine`]) over RocksDB ([`store`]), the
//! HTTP API ([`http`]), metrics and configuration. The `valori-node` binary is a thin `main`
//! around [`serve`]; the Python package embeds [`engine::Engine`] directly.

/// Makes rustls with the ring provider the process's TLS crypto provider. The node's servers
/// name ring explicitly; HTTP clients built on reqwest's rustls backend (present whenever a
/// crate in the same build enables it, such as the Python package's https client) look the
/// provider up here and cannot be built without one. Harmless when one is already installed.
pub fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

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
pub mod service;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
pub use engine::{Engine, EngineConfig};
pub use error::{NodeError, OpenError};

/// Opens the engine for `config`: recovers the data directory, restores from
/// `--restore-from` into an empty one, and creates the default collection when
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
    ec.commit_gate = config.test_commit_gate.clone();
    ec.crash_at = config.test_crash_at.clone();
    if let Some(t) = config.index_threads {
        ec.index_threads = t.max(1);
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

/// Serves the HTTP API on `http` and, when given, the gRPC API on `grpc`, until `shutdown`
/// resolves; then drains in-flight requests and stops the engine's writer.
pub async fn serve(
    config: &Config,
    engine: Engine,
    http: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (write_key, read_key) = config.keys()?;
    let keys = service::Keys::new(write_key.as_deref(), read_key.as_deref());
    let service = service::Service {
        engine: engine.clone(),
        max_batch: config.max_batch,
        max_response_bytes: config.max_response_bytes,
        max_log_page_bytes: config.max_log_page_bytes,
        followers: Default::default(),
        sync: service::SyncPolicy {
            replicas: config.sync_replicas,
            timeout: std::time::Duration::from_millis(config.sync_timeout_ms),
        },
    };
    let app = http::App {
        service: service.clone(),
        engine: engine.clone(),
        keys: keys.clone(),
        max_body_bytes: config.max_body_bytes,
        requests: Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_requests.max(1),
        )),
    };
    let gate = conn::Gate::new(config.max_connections, Arc::clone(engine.metrics()));
    let header_timeout = std::time::Duration::from_millis(config.header_timeout_ms.max(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let settings = replication::FollowerSettings {
        key: config.leader_api_key.clone(),
        heal: config.replication_heal,
        name: match &config.follower_name {
            Some(name) => {
                anyhow::ensure!(
                    replication::valid_follower_name(name),
                    "--follower-name {name:?}: use 1 to {} characters of A-Z a-z 0-9 . _ : -",
                    limits::MAX_FOLLOWER_NAME_BYTES
                );
                name.clone()
            }
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok());
                replication::default_follower_name(host.as_deref(), http.local_addr()?)
            }
        },
    };
    let follower_task = tokio::spawn(replication::supervise(
        engine.clone(),
        settings,
        stop_rx.clone(),
    ));
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some((std::fs::read(cert)?, std::fs::read(key)?)),
        _ => None,
    };
    let grpc_task = match grpc {
        Some(listener) => {
            let server = grpc::Grpc::server(service, keys, config.max_body_bytes);
            let signal = stopped(stop_rx.clone());
            let mut builder = tonic::transport::Server::builder()
                .concurrency_limit_per_connection(config.max_concurrent_requests.max(1))
                .http2_keepalive_interval(Some(limits::GRPC_KEEPALIVE))
                .http2_keepalive_timeout(Some(limits::GRPC_KEEPALIVE));
            let tls = match &tls {
                Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(
                    cert, key, b"h2",
                )?))),
                None => None,
            };
            // Connections beyond the limit are closed as they are accepted. HTTP/2 has no
            // header deadline: each admitted client must finish its TLS handshake, then send
            // the connection preface, each within the header timeout, or it is closed. Each
            // connection does so on a task of its own; the server takes those that did.
            let (ready_tx, ready_rx) = tokio::sync::mpsc::channel::<conn::Grpc>(64);
            let gate = gate.clone();
            let acceptor = tokio::spawn(async move {
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, for one: wait rather than spin.
                            tracing::warn!(error = %e, "accepting a gRPC connection failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(admitted) = gate.admit(stream) else {
                        continue;
                    };
                    let (ready, tls) = (ready_tx.clone(), tls.clone());
                    tokio::spawn(async move {
                        let owed = conn::Grpc::accept(
                            admitted,
                            tls.as_ref(),
                            H2_PREFACE_BYTES,
                            header_timeout,
                        );
                        if let Some(io) = owed.await {
                            let _ = ready.send(io).await;
                        }
                    });
                }
            });
            let incoming = futures_util::stream::unfold(ready_rx, |mut rx| async move {
                let io = rx.recv().await?;
                Some((Ok::<_, std::io::Error>(io), rx))
            });
            Some(tokio::spawn(async move {
                let served = builder
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, signal)
                    .await;
                acceptor.abort();
                served
            }))
        }
        None => None,
    };
    let router = http::router(app);
    // One server for plain HTTP and TLS: the connection gate, and a deadline for each request's
    // headers (and the TLS handshake), so that slow clients cannot hold connections open.
    let handle = axum_server::Handle::new();
    {
        let h = handle.clone();
        let signal = stopped(stop_rx);
        tokio::spawn(async move {
            signal.await;
            // Let in-flight requests finish.
            h.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
        });
    }
    let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum_server::from_tcp(http.into_std()?)?;
    match &tls {
        None => {
            http1_with_deadline(server.acceptor(gate), handle, header_timeout)
                .serve(make_service)
                .await?
        }
        Some((cert, key)) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls_config(
                cert,
                key,
                b"http/1.1",
            )?));
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .handshake_timeout(header_timeout)
                .acceptor(gate);
            http1_with_deadline(server.acceptor(acceptor), handle, header_timeout)
                .serve(make_service)
                .await?
        }
    }
    if let Some(t) = grpc_task {
        t.await??;
    }
    follower_task.await?;
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;
    Ok(())
}

/// The HTTP server with its acceptor set: HTTP/1.1 alone, so that hyper's header deadline runs
/// from the moment a connection is accepted (a server that also detects HTTP/2 first waits for
/// the client's first bytes without a deadline). (The acceptor must be set first: setting it
/// forgets the protocol choice.)
fn http1_with_deadline<Acc>(
    server: axum_server::Server<SocketAddr, Acc>,
    handle: axum_server::Handle<SocketAddr>,
    header_timeout: std::time::Duration,
) -> axum_server::Server<SocketAddr, Acc> {
    let mut server = server.http1_only().handle(handle);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    server
}

/// The HTTP/2 connection preface a gRPC client sends first.
const H2_PREFACE_BYTES: usize = 24;

/// A rustls server configuration (ring provider) from PEM certificate chain and key bytes, for
/// the one protocol `alpn` (`http/1.1` for the HTTP API, `h2` for gRPC).
fn tls_config(cert: &[u8], key: &[u8], alpn: &[u8]) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the TLS certificate file holds no certificate"
    );
    let key = PrivateKeyDer::from_pem_slice(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
