//! The node's servers: the HTTP API and the gRPC API over one [`Service`], the replication
//! supervisor beside them, and an orderly stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::Engine;
use crate::limits::{GRPC_ACCEPT_RETRY, GRPC_KEEPALIVE, GRPC_PENDING_CONNECTIONS, HTTP_DRAIN};
use crate::service::{Keys, MinReplicas, Service, Settings, SyncPolicy};
use crate::{conn, grpc, http, limits, replication};

/// Serves the HTTP API on `http` and, when given, the gRPC API on `grpc`, until `shutdown`
/// resolves; then drains in-flight requests and stops the engine's writer.
pub async fn serve(
    config: &Config,
    engine: Engine,
    http: TcpListener,
    grpc: Option<TcpListener>,
    health: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (write_key, read_key) = config.keys()?;
    let service = Service::new(
        engine.clone(),
        Keys::new(write_key.as_deref(), read_key.as_deref())
            .with_cluster_key(config.cluster_api_key.as_deref().filter(|k| !k.is_empty())),
        Settings {
            max_batch: config.max_batch,
            max_response_bytes: config.max_response_bytes,
            max_log_page_bytes: config.max_log_page_bytes,
            sync: SyncPolicy {
                replicas: config.sync_replicas,
                timeout: Duration::from_millis(config.sync_timeout_ms),
            },
            min_replicas: MinReplicas {
                count: config.min_replicas_to_write,
                max_lag: Duration::from_millis(config.min_replicas_max_lag_ms),
            },
            max_replay_events: config.max_replay_events,
        },
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (service, backup_task) = match &config.backup_to {
        Some(url) => {
            let dest = crate::backup::Destination::open(url)?;
            let settings = crate::backup::BackupSettings {
                ship_interval: (config.backup_ship_interval_s > 0)
                    .then(|| Duration::from_secs(config.backup_ship_interval_s)),
                upload_snapshots: config.backup_snapshots,
                retain_count: config.backup_retain_count.max(1),
                retain_age: config.backup_retain_age,
                confirm_wait: Duration::from_millis(config.sync_timeout_ms),
            };
            let hold = engine
                .log_hold()
                .unwrap_or_else(|| Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)));
            let confirmer = service.clone();
            let backup = Arc::new(
                crate::backup::Backup::new(dest, engine.clone(), settings, hold)
                    .with_confirmation(Arc::new(move || confirmer.confirmed_through())),
            );
            let task = tokio::spawn(Arc::clone(&backup).run(stop_rx.clone()));
            (service.with_backup(backup), Some(task))
        }
        None => (service, None),
    };
    let gate = conn::Gate::new(config.max_connections, Arc::clone(engine.metrics()));
    let header_timeout = Duration::from_millis(config.header_timeout_ms.max(1));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let follower_task = tokio::spawn(replication::supervise(
        engine.clone(),
        follower_settings(config, http.local_addr()?)?,
        stop_rx.clone(),
    ));
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some((std::fs::read(cert)?, std::fs::read(key)?)),
        _ => None,
    };
    let front = Front {
        tls,
        gate,
        header_timeout,
    };
    let grpc_task = match grpc {
        Some(listener) => Some(spawn_grpc(
            config,
            service.clone(),
            listener,
            &front,
            stopped(stop_rx.clone()),
        )?),
        None => None,
    };
    let health_task = match health {
        Some(listener) => Some(tokio::spawn(serve_health(
            config,
            service.clone(),
            listener,
            header_timeout,
            stopped(stop_rx.clone()),
        )?)),
        None => None,
    };
    serve_http(config, service, http, &front, stopped(stop_rx)).await?;
    if let Some(t) = health_task {
        t.await??;
    }
    if let Some(t) = grpc_task {
        t.await??;
    }
    follower_task.await?;
    if let Some(t) = backup_task {
        // Its last round ships what was written before the stop, within a bound.
        if tokio::time::timeout(limits::BACKUP_LAST_ROUND, t)
            .await
            .is_err()
        {
            tracing::warn!("the backup task's last round did not finish in time");
        }
    }
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;
    Ok(())
}

/// What both servers admit connections with: the TLS certificate and key (PEM) when the node
/// serves TLS, the connection gate they share, and the deadline for a client's first bytes.
struct Front {
    tls: Option<(Vec<u8>, Vec<u8>)>,
    gate: conn::Gate,
    header_timeout: Duration,
}

/// Resolves once `rx` turns true.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// How this node replicates when it is a follower: its key for the leader, whether it heals
/// by itself, and its name (`--follower-name`, or its host name and HTTP port).
fn follower_settings(
    config: &Config,
    listen: SocketAddr,
) -> anyhow::Result<replication::FollowerSettings> {
    let name = match &config.follower_name {
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
            replication::default_follower_name(host.as_deref(), listen)
        }
    };
    let ca_pem = match &config.leader_ca_file {
        Some(path) => Some(anyhow::Context::with_context(std::fs::read(path), || {
            format!("--leader-ca-file {}: reading the CA bundle", path.display())
        })?),
        None => None,
    };
    Ok(replication::FollowerSettings {
        key: config
            .leader_api_key
            .clone()
            .or_else(|| config.cluster_api_key.clone())
            .filter(|k| !k.is_empty()),
        ca_pem,
        heal: config.replication_heal,
        name,
    })
}

/// Starts the gRPC server on `listener`. Connections beyond the limit are closed as they are
/// accepted. HTTP/2 has no header deadline: each admitted client must finish its TLS handshake,
/// then send the connection preface, each within the header timeout, or it is closed. Each
/// connection does so on a task of its own; the server takes those that did.
fn spawn_grpc(
    config: &Config,
    service: Service,
    listener: TcpListener,
    front: &Front,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    let (gate, header_timeout) = (front.gate.clone(), front.header_timeout);
    let server = grpc::server(service, config.max_body_bytes);
    let mut builder = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(config.max_concurrent_requests.max(1))
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE));
    let tls = match &front.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(
            cert, key, b"h2",
        )?))),
        None => None,
    };
    let (ready_tx, ready_rx) = tokio::sync::mpsc::channel::<conn::Grpc>(GRPC_PENDING_CONNECTIONS);
    let acceptor = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, for one: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(GRPC_ACCEPT_RETRY).await;
                    continue;
                }
            };
            let Some(admitted) = gate.admit(stream) else {
                continue;
            };
            let (ready, tls) = (ready_tx.clone(), tls.clone());
            tokio::spawn(async move {
                let owed =
                    conn::Grpc::accept(admitted, tls.as_ref(), H2_PREFACE_BYTES, header_timeout);
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
    Ok(tokio::spawn(async move {
        let served = builder
            .add_service(server)
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
        acceptor.abort();
        served
    }))
}

/// Serves the HTTP API on `listener` until `stop` resolves, then lets in-flight requests
/// finish. One server for plain HTTP and TLS: the connection gate, and a deadline for each
/// request's headers (and the TLS handshake), so that slow clients cannot hold connections
/// open.
async fn serve_http(
    config: &Config,
    service: Service,
    listener: TcpListener,
    front: &Front,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (gate, header_timeout) = (front.gate.clone(), front.header_timeout);
    let router = http::router(app(config, service));
    let handle = draining_on(stop);
    let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum_server::from_tcp(listener.into_std()?)?;
    match &front.tls {
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
    Ok(())
}

/// The HTTP state of `service` with the configured limits.
fn app(config: &Config, service: Service) -> http::App {
    http::App::new(
        service,
        config.max_body_bytes,
        config.max_concurrent_requests,
    )
}

/// A server handle that drains (for at most [`HTTP_DRAIN`]) once `stop` resolves.
fn draining_on(
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> axum_server::Handle<SocketAddr> {
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        stop.await;
        h.graceful_shutdown(Some(HTTP_DRAIN));
    });
    handle
}

/// The health port's server: plain HTTP, no connection gate (the header deadline still
/// applies), the probes and metrics alone.
fn serve_health(
    config: &Config,
    service: Service,
    listener: TcpListener,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    let router = http::health_router(app(config, service));
    let handle = draining_on(stop);
    let server = http1_with_deadline(
        axum_server::from_tcp(listener.into_std()?)?,
        handle,
        header_timeout,
    );
    Ok(async move {
        server
            .serve(router.into_make_service_with_connect_info::<SocketAddr>())
            .await?;
        Ok(())
    })
}

/// The HTTP server with its acceptor set: HTTP/1.1 alone, so that hyper's header deadline runs
/// from the moment a connection is accepted (a server that also detects HTTP/2 first waits for
/// the client's first bytes without a deadline). (The acceptor must be set first: setting it
/// forgets the protocol choice.)
fn http1_with_deadline<Acc>(
    server: axum_server::Server<SocketAddr, Acc>,
    handle: axum_server::Handle<SocketAddr>,
    header_timeout: Duration,
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
