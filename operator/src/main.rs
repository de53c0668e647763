//! `valori-operator`: reconciles `ValoriCluster` resources. With `--leader-election` (the
//! chart's default when it runs more than one replica) only the replica holding the Lease
//! reconciles; the others wait to take over.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::runtime::events::Reporter;
use valori_operator::controller::{self, Context};
use valori_operator::lease::Elector;
use valori_operator::metrics::{self, Metrics};
use valori_operator::telemetry::Telemetry;

/// The Kubernetes operator of Valori.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address of `/metrics` and `/healthz`.
    #[arg(
        long,
        env = "VALORI_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: String,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "VALORI_OPERATOR_LOG", default_value = "info")]
    log: String,
    /// Log one JSON object a line.
    #[arg(long, env = "VALORI_OPERATOR_LOG_JSON")]
    log_json: bool,
    /// Take a Lease before reconciling, so that one replica of several works at a time.
    #[arg(long, env = "VALORI_OPERATOR_LEADER_ELECTION")]
    leader_election: bool,
    /// The Lease's namespace (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// This replica's identity in the Lease and in Events (its pod's name).
    #[arg(long, env = "POD_NAME", default_value = "valori-operator")]
    identity: String,
    /// How long a Lease lasts without renewal, in seconds.
    #[arg(long, env = "VALORI_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// How long a call to a node may take, in seconds.
    #[arg(
        long,
        env = "VALORI_OPERATOR_NODE_TIMEOUT_SECONDS",
        default_value_t = 5
    )]
    node_timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = Telemetry::init(&args.log, args.log_json)?;
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(&args.metrics_addr).await?;
    tokio::spawn(metrics::serve(metrics.clone(), listener));
    let client = kube::Client::try_default().await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    let result = run(&args, client, metrics.clone(), stop_rx).await;
    metrics
        .healthy
        .store(false, std::sync::atomic::Ordering::Relaxed);
    telemetry.shutdown();
    result
}

async fn run(
    args: &Args,
    client: kube::Client,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let lease = Duration::from_secs(args.lease_seconds);
    let elector = args.leader_election.then(|| {
        Elector::new(
            client.clone(),
            &args.namespace,
            "valori-operator",
            &args.identity,
            lease,
        )
    });
    if let Some(e) = &elector {
        tracing::info!(identity = %args.identity, "waiting for the leader-election Lease");
        loop {
            if e.try_hold().await.unwrap_or(false) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(lease / 3) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
        tracing::info!("holding the Lease: reconciling");
    }
    metrics.leading.set(1);
    let mut ctx = Context::new(
        client,
        metrics.clone(),
        Reporter {
            controller: "valori-operator".into(),
            instance: Some(args.identity.clone()),
        },
    );
    ctx.node_timeout = Duration::from_secs(args.node_timeout_seconds);
    let ctx = Arc::new(ctx);

    // The controller stops when asked to, or when the Lease cannot be renewed in time: another
    // replica may take it then, and two must never reconcile at once.
    let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
    if let Some(e) = elector {
        tokio::spawn(async move {
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                match e.try_hold().await {
                    Ok(true) => last = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(err) => tracing::warn!(error = %err, "renewing the Lease"),
                }
                if last.elapsed() > lease * 2 / 3 {
                    break;
                }
            }
            tracing::error!("lost the leader-election Lease: stopping");
            let _ = lost_tx.send(true);
        });
    }
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    let shutdown = async move {
        tokio::select! {
            _ = stop.changed() => {}
            _ = lost_rx.changed() => lost_flag.store(true, std::sync::atomic::Ordering::Relaxed),
        }
    };
    controller::run(ctx, shutdown).await;
    metrics.leading.set(0);
    if lost.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("lost the leader-election Lease");
    }
    Ok(())
}
