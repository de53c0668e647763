//! `valori-operator`: reconciles `ValoriCluster` resources. With `--leader-election` (the
//! chart's default when it runs more than one replica) only the replica holding the Lease
//! reconciles; the others wait to take over.
//!
//! `valori-operator failover ...` runs the arbiter's failover once against nodes named on the
//! command line (the same function the reconcile loop calls), for clusters run outside
//! Kubernetes and for the container fault suite.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::runtime::events::Reporter;
use valori_operator::controller::{self, Context};
use valori_operator::lease::Elector;
use valori_operator::metrics::{self, Metrics};
use valori_telemetry::Telemetry;

/// The Kubernetes operator of Valori.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
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
    /// The namespaces whose ValoriClusters to manage, comma-separated (default: every
    /// namespace).
    #[arg(long, env = "VALORI_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// This replica's identity in the Lease and in Events (its pod's name).
    #[arg(long, env = "POD_NAME", default_value = "valori-operator")]
    identity: String,
    /// How long a Lease lasts without renewal, in seconds.
    #[arg(long, env = "VALORI_OPERATOR_LEASE_SECONDS", default_value_t = valori_operator::limits::LEASE_SECONDS)]
    lease_seconds: u64,
    /// How long a call to a node may take, in seconds.
    #[arg(
        long,
        env = "VALORI_OPERATOR_NODE_TIMEOUT_SECONDS",
        default_value_t = valori_operator::limits::NODE_TIMEOUT.as_secs()
    )]
    node_timeout_seconds: u64,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Fail over once: fence the old leader, promote the most advanced agreeing follower with
    /// the next epoch, point the others at it. Prints the outcome as JSON; exits 0 when it
    /// promoted, 3 when it must wait (the reason is printed), 1 on an error.
    Failover {
        /// The old leader, as NAME=URL (left out when it is gone for good).
        #[arg(long)]
        leader: Option<String>,
        /// A follower, as NAME=URL (repeat for each).
        #[arg(long = "follower", required = true)]
        followers: Vec<String>,
        /// The cluster's synchronous replicas.
        #[arg(long, default_value_t = 0)]
        sync_replicas: u32,
        /// The epoch of the current leader (the new one is above it and above every epoch a
        /// follower has seen).
        #[arg(long, default_value_t = 1)]
        epoch: u64,
        /// The cluster's read-write API key.
        #[arg(long, env = "VALORI_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// How long a call to a node may take, in seconds.
        #[arg(long, default_value_t = valori_operator::limits::NODE_TIMEOUT.as_secs())]
        timeout_seconds: u64,
    },
    /// Hand the leadership over once, without losing a write: fence the leader with the next
    /// epoch, wait until the chosen follower holds everything it has, promote that follower,
    /// point the leader and the others at it. Prints the outcome as JSON; exits 0 when it
    /// switched, 3 when the follower did not catch up in time (the leader leads again at the
    /// new epoch), 1 on an error.
    Switchover {
        /// The leader, as NAME=URL.
        #[arg(long)]
        leader: String,
        /// The follower to promote, as NAME=URL.
        #[arg(long)]
        to: String,
        /// Another follower, as NAME=URL (repeat for each).
        #[arg(long = "follower")]
        followers: Vec<String>,
        /// The epoch of the current leader.
        #[arg(long, default_value_t = 1)]
        epoch: u64,
        /// The cluster's read-write API key.
        #[arg(long, env = "VALORI_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// How long the follower may take to catch up, in seconds.
        #[arg(long, default_value_t = valori_operator::limits::SWITCHOVER_TIMEOUT.as_secs())]
        catch_up_seconds: u64,
        /// How long a call to a node may take, in seconds.
        #[arg(long, default_value_t = valori_operator::limits::NODE_TIMEOUT.as_secs())]
        timeout_seconds: u64,
    },
}

fn node_ref(spec: &str) -> anyhow::Result<valori_operator::failover::NodeRef> {
    let (name, url) = spec
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{spec:?}: expected NAME=URL"))?;
    Ok(valori_operator::failover::NodeRef {
        name: name.into(),
        url: url.trim_end_matches('/').into(),
    })
}

/// The nodes' client of one run of a one-shot command: an arbiter of its own, named after the
/// process and the moment, distinct from the operator and from any other run.
fn one_shot(
    api_key: Option<String>,
    timeout_seconds: u64,
) -> anyhow::Result<valori_operator::failover::Nodes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let arbiter = format!("valori-operator-cli-{}-{now}", std::process::id());
    valori_operator::failover::Nodes::for_arbiter(
        api_key,
        Duration::from_secs(timeout_seconds),
        None,
        &arbiter,
    )
    .map_err(|e| anyhow::anyhow!(e))
}

async fn switchover_once(cmd: Cmd) -> anyhow::Result<i32> {
    use valori_operator::failover::{switchover, CallError};
    let Cmd::Switchover {
        leader,
        to,
        followers,
        epoch,
        api_key,
        catch_up_seconds,
        timeout_seconds,
    } = cmd
    else {
        unreachable!("called for the switchover command")
    };
    let (old, new) = (node_ref(&leader)?, node_ref(&to)?);
    let others = followers
        .iter()
        .map(|f| node_ref(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let nodes = one_shot(api_key, timeout_seconds)?;
    let done = switchover(
        &nodes,
        &old,
        &new,
        &others,
        epoch,
        Duration::from_secs(catch_up_seconds),
        |_| async { Ok::<_, CallError>(()) },
    )
    .await?;
    println!(
        "{}",
        serde_json::json!({"switched": done.switched, "epoch": done.epoch, "leader": if done.switched { &new.name } else { &old.name }})
    );
    Ok(if done.switched { 0 } else { 3 })
}

async fn failover_once(cmd: Cmd) -> anyhow::Result<i32> {
    use valori_operator::failover::{fail_over, Decision};
    let Cmd::Failover {
        leader,
        followers,
        sync_replicas,
        epoch,
        api_key,
        timeout_seconds,
    } = cmd
    else {
        unreachable!("called for the failover command")
    };
    let old = leader.as_deref().map(node_ref).transpose()?;
    let followers = followers
        .iter()
        .map(|f| node_ref(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let nodes = one_shot(api_key, timeout_seconds)?;
    // The command records its epoch nowhere (it is for clusters without the operator); it is
    // an arbiter of its own, so an epoch another arbiter claimed on a node is refused it there,
    // and it waits.
    let configured = followers.len() as u32;
    let out = fail_over(
        &nodes,
        old.as_ref(),
        &followers,
        configured,
        sync_replicas,
        epoch,
        |_| async { Ok::<_, valori_operator::failover::CallError>(()) },
    )
    .await?;
    let (decision, code) = match &out.decision {
        Decision::Promote { name, epoch } => (
            serde_json::json!({"promote": {"name": name, "epoch": epoch}}),
            0,
        ),
        Decision::Wait { reason } => (serde_json::json!({"wait": reason}), 3),
    };
    println!(
        "{}",
        serde_json::json!({
            "decision": decision,
            "old_leader_fenced": out.old_leader_fenced,
            "repointed": out.repointed,
        })
    );
    Ok(code)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(cmd) = args.command.take() {
        let code = match cmd {
            Cmd::Failover { .. } => failover_once(cmd).await?,
            Cmd::Switchover { .. } => switchover_once(cmd).await?,
        };
        std::process::exit(code);
    }
    let telemetry = Telemetry::init("valori-operator", &args.log, args.log_json)?;
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(&args.metrics_addr).await?;
    tokio::spawn(metrics::serve(metrics.clone(), listener));
    let client = kube::Client::try_default().await?;

    // SIGTERM is how Kubernetes stops a pod (the operator is PID 1 in its image, where no
    // default handler stops it), Ctrl-C how a person does.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        tracing::info!("stopping");
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
    // replica may take it then, and two must never act at once.
    let elector = elector.map(Arc::new);
    let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
    if let Some(e) = elector.clone() {
        tokio::spawn(async move {
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(lease / 3).await;
                // The Lease's renewal time is taken as the attempt begins: count from here.
                let attempt = tokio::time::Instant::now();
                match e.try_hold().await {
                    Ok(true) => last = attempt,
                    Ok(false) => break,
                    Err(err) => tracing::warn!(error = %err, "renewing the Lease"),
                }
                if valori_operator::lease::must_stop(last.elapsed(), lease) {
                    break;
                }
            }
            tracing::error!("lost the leader-election Lease: stopping");
            let _ = lost_tx.send(true);
        });
    }
    let lost = tokio::select! {
        // Asked to stop: the pass in progress finishes (graceful), then the Lease is given up.
        _ = controller::run(ctx, &args.watch_namespaces, async move {
            let _ = stop.changed().await;
        }) => false,
        // The Lease lost: stop at once, cutting a pass in progress short (dropping its
        // future cancels its calls), before another replica can take the Lease and act.
        _ = lost_rx.changed() => true,
    };
    metrics.leading.set(0);
    if lost {
        anyhow::bail!("lost the leader-election Lease");
    }
    if let Some(e) = elector {
        match e.release().await {
            Ok(true) => tracing::info!("gave up the leader-election Lease"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "giving up the Lease"),
        }
    }
    Ok(())
}
