//! `valori-node`: runs a Valori server. See `valori-node --help`.

use anyhow::Context;
use clap::Parser;
use valori_node::Config;

fn main() {
    // `valori-node healthcheck`: the container image's health check (a scratch image has no
    // curl). Asks this container's node for /healthz on VALORI_HTTP_PORT.
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        std::process::exit(healthcheck());
    }
    // `valori-node restore`: restores a backup into an empty data directory and exits.
    if std::env::args().nth(1).as_deref() == Some("restore") {
        std::process::exit(restore(RestoreArgs::parse_from(std::env::args().skip(1))));
    }
    valori_alloc::settle_for_server();
    let config = Config::parse();
    let telemetry = match valori_telemetry::Telemetry::init("valori-node", &config.log, false) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("valori-node: telemetry: {e:#}");
            std::process::exit(1);
        }
    };
    let result = run(config);
    telemetry.shutdown();
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("valori-node: {e:#}");
        std::process::exit(1);
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // Files the node needs later, checked before it serves.
    if let Some(path) = &config.leader_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("--leader-ca-file {}: cannot read it", path.display()))?;
        anyhow::ensure!(
            pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
            "--leader-ca-file {}: holds no PEM certificate",
            path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = valori_node::open_engine(&config)?;
    runtime.block_on(async {
        // The error names the port: two nodes on one host need ports of their own.
        let bind = |port: u16, what: &'static str, flag: &'static str| async move {
            let at = std::net::SocketAddr::new(config.http_addr, port);
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen for {what} on {at} (set {flag})"))
        };
        let listener = bind(config.http_port, "HTTP", "--http-port").await?;
        let addr = listener.local_addr()?;
        let grpc = if config.no_grpc {
            None
        } else {
            Some(bind(config.grpc_port(), "gRPC", "--grpc-port").await?)
        };
        let health = match config.health_port {
            Some(port) => Some(bind(port, "the probes", "--health-port").await?),
            None => None,
        };
        // Tests and scripts read these lines to learn the ports (useful with port 0).
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(g) = &grpc {
            println!(
                "valori-node gRPC listening on {scheme}://{}",
                g.local_addr()?
            );
        }
        if let Some(h) = &health {
            println!("valori-node probes listening on http://{}", h.local_addr()?);
        }
        println!("valori-node listening on {scheme}://{addr}");
        tracing::info!(%addr, data_dir = %config.data_dir().display(), "serving");
        valori_node::serve(&config, engine, listener, grpc, health, shutdown_signal()).await
    })
}

/// `valori-node restore`: restores a backup into an empty data directory (the newest state, or
/// exactly `--target-seq`), verifying every object and chain hash, then exits; a node started
/// on the directory serves that state.
#[derive(clap::Parser)]
#[command(name = "valori-node restore")]
struct RestoreArgs {
    /// The backup: `s3://bucket/prefix`, `gs://...`, `az://...` or `file:///directory`
    /// (credentials from the environment, as for `--backup-to`).
    #[arg(long, env = "VALORI_RESTORE_FROM_BACKUP")]
    from: String,
    /// The data directory to restore into: it must hold no state.
    #[arg(long, env = "VALORI_DATA_DIR")]
    data_dir: std::path::PathBuf,
    /// Restore exactly this sequence number (default: the newest the backup holds).
    #[arg(long, env = "VALORI_RESTORE_TARGET_SEQ")]
    target_seq: Option<u64>,
    /// Restore the newest sequence number the backup held at this time (RFC 3339,
    /// `2026-12-07T03:00:00Z`): what had been shipped by then, so within one shipping interval
    /// of the writes.
    #[arg(
        long,
        env = "VALORI_RESTORE_TARGET_TIME",
        conflicts_with = "target_seq",
        value_parser = valori_node::backup::restore::parse_time
    )]
    target_time: Option<i64>,
    /// Also write the JSON line (`{"error": ...}` on failure) to this file, such as a
    /// container's termination-message file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Threads that rebuild the index while replaying.
    #[arg(long, env = "VALORI_INDEX_THREADS")]
    index_threads: Option<usize>,
}

/// Exit status 0 when the backup was restored (one JSON line on standard output says what), 1
/// when it was not (standard error says why; the directory is left without state).
fn restore(args: RestoreArgs) -> i32 {
    let run = || -> anyhow::Result<valori_node::backup::RestoreReport> {
        let dest = valori_node::backup::Destination::open(&args.from)?;
        let target =
            valori_node::backup::RestoreTarget::from_flags(args.target_seq, args.target_time);
        let threads = args
            .index_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        Ok(rt.block_on(valori_node::backup::restore_into(
            &dest,
            &args.data_dir,
            target,
            threads,
        ))?)
    };
    let (line, code) = match run() {
        Ok(r) => {
            let line = serde_json::json!({
                "seq": r.seq,
                "chain_hash": hex::encode(r.chain_hash),
                "state_hash": hex::encode(r.state_hash),
                "snapshot_seq": r.snapshot_seq,
                "replayed": r.replayed,
                "segments": r.segments,
            });
            println!("{line}");
            (line, 0)
        }
        Err(e) => {
            eprintln!("valori-node restore: {e:#}");
            (serde_json::json!({ "error": format!("{e:#}") }), 1)
        }
    };
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, format!("{line}\n")) {
            eprintln!(
                "valori-node restore: writing the report to {}: {e}",
                path.display()
            );
        }
    }
    code
}

/// Exit status 0 when the node on this host answers `GET /healthz` with 200. With TLS
/// configured the port accepting a connection is the answer (this probe speaks no TLS).
fn healthcheck() -> i32 {
    use std::io::{Read, Write};
    let port: u16 = std::env::var("VALORI_HTTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let timeout = std::time::Duration::from_secs(3);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        eprintln!("valori-node healthcheck: nothing listens on port {port}");
        return 1;
    };
    if std::env::var_os("VALORI_TLS_CERT").is_some() {
        return 0;
    }
    let _ = s.set_read_timeout(Some(timeout));
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut answer).is_err() {
        eprintln!("valori-node healthcheck: no answer on port {port}");
        return 1;
    }
    if answer.starts_with("HTTP/1.1 200") {
        0
    } else {
        eprintln!(
            "valori-node healthcheck: {}",
            answer.lines().next().unwrap_or("empty answer")
        );
        1
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
