//! The reconcile loop: applies what [`crate::desired`] describes with server-side apply,
//! observes the pods and their nodes, and carries out what [`crate::plan`] and
//! [`crate::failover`] decide: the first leader, followers pointed at the leader, role labels,
//! the read-write Service's selector, cross-checks with Events and healing, rollouts, failover,
//! and the status.
//!
//! Invariants: the operator never writes to a node's data (only its role, through the role API,
//! always with a higher epoch than the node's assignment); it deletes a pod only to roll it onto
//! a new template or, with a claim, to re-bootstrap a diverged follower, and never the leader's
//! claim.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use valori_api as api;

use crate::crd::{ValoriCluster, ValoriClusterStatus};
use crate::desired::{self, Names, FIELD_MANAGER, INSTANCE_LABEL, ROLE_LABEL};
use crate::failover::{self, CallError, NodeRef, Nodes};
use crate::metrics::Metrics;
use crate::plan::{self, Leadership, PodView, Step};

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A node refused or did not answer a call that had to succeed.
    #[error("node: {0}")]
    Node(#[from] CallError),
    /// The resource cannot be reconciled as it is (reported, not retried quickly).
    #[error("invalid cluster: {0}")]
    Invalid(String),
}

impl Error {
    /// The kind, for the failure metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Node(_) => "node",
            Error::Invalid(_) => "invalid",
        }
    }
}

/// How the operator reaches a pod's node: the URL for pod `pod` of cluster `vc`.
pub type Urls = Arc<dyn Fn(&ValoriCluster, &str) -> String + Send + Sync>;

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// How pods are reached (in a cluster: their DNS names under the headless Service).
    pub urls: Urls,
    /// How long a node call may take.
    pub node_timeout: Duration,
    /// How long a switchover waits for the chosen follower to catch up.
    pub switchover_timeout: Duration,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Who publishes Events.
    pub reporter: Reporter,
}

impl Context {
    /// A context reaching pods through the headless Service's DNS names.
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter) -> Context {
        Context {
            client,
            urls: Arc::new(desired::pod_url),
            node_timeout: Duration::from_secs(5),
            switchover_timeout: Duration::from_secs(60),
            metrics,
            reporter,
        }
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn rfc3339(t: &Time) -> String {
    t.0.to_string()
}

fn seconds(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().expect("desired objects are named");
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// One pass over one cluster. Each pass is idempotent: it reads the state of the world again
/// and takes at most one disruptive step (a failover, a switchover, or one pod restarted).
pub async fn reconcile(vc: Arc<ValoriCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&vc, &ctx).await;
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err());
    result
}

/// What happened in a pass, for Events and the status.
struct Pass {
    status: ValoriClusterStatus,
    events: Vec<Event>,
    generation: Option<i64>,
    now: Time,
    progressing: Option<String>,
    degraded: Option<String>,
    heal: bool,
}

impl Pass {
    fn event(&mut self, type_: EventType, reason: &str, action: &str, note: String) {
        tracing::info!(reason, %note, "event");
        self.events.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        });
    }
}

async fn reconcile_inner(vc: &ValoriCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = vc
        .namespace()
        .ok_or_else(|| Error::Invalid("a ValoriCluster is namespaced".into()))?;
    let names = Names::of(vc);
    let client = ctx.client.clone();
    let spec = &vc.spec;
    let mut pass = Pass {
        status: vc.status.clone().unwrap_or_default(),
        events: Vec::new(),
        generation: vc.metadata.generation,
        now: now(),
        progressing: None,
        degraded: None,
        heal: spec.cross_check.heal,
    };

    // What does not depend on who leads.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        &desired::config_map(vc),
    )
    .await?;
    apply(&services, &desired::headless_service(vc)).await?;
    apply(&services, &desired::ro_service(vc)).await?;
    apply(&services, &desired::any_service(vc)).await?;
    apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns),
        &desired::pod_disruption_budget(vc),
    )
    .await?;
    let sts = apply(
        &Api::<StatefulSet>::namespaced(client.clone(), &ns),
        &desired::stateful_set(vc),
    )
    .await?;
    // The StatefulSet controller reports the revision of a new template only once it has
    // observed it; until then the revision is unknown, and a rollout waits.
    let update_revision = sts
        .status
        .as_ref()
        .filter(|s| s.observed_generation == sts.metadata.generation)
        .and_then(|s| s.update_revision.clone());

    // The pods and their nodes.
    let key = match &spec.auth {
        Some(a) => Some(read_key(&client, &ns, &a.secret_name, &a.write_key).await?),
        None => None,
    };
    // Nodes serving TLS with a private CA: the TLS Secret's `ca.crt` (as cert-manager writes
    // it) is trusted besides the system's roots.
    let ca = match &spec.tls {
        Some(t) => read_secret_key(&client, &ns, &t.secret_name, "ca.crt", true).await?,
        None => None,
    };
    let nodes = Nodes::with_ca(key, ctx.node_timeout, ca.as_deref().map(str::as_bytes))
        .map_err(|e| Error::Invalid(format!("the TLS Secret's ca.crt: {e}")))?;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&desired::selector_string(vc)))
        .await?
        .items;
    let refs: BTreeMap<String, NodeRef> = pods
        .iter()
        .map(|p| {
            let name = p.name_any();
            let url = (ctx.urls)(vc, &name);
            (name.clone(), NodeRef { name, url })
        })
        .collect();
    let answers = futures::future::join_all(pods.iter().map(|p| {
        let r = &refs[&p.name_any()];
        let nodes = &nodes;
        async move { nodes.role(r).await.ok() }
    }))
    .await;
    let mut views: Vec<PodView> = pods
        .iter()
        .zip(answers)
        .filter_map(|(p, node)| {
            let name = p.name_any();
            Some(PodView {
                ordinal: desired::ordinal(&names.cluster, &name)?,
                revision: p.labels().get(desired::REVISION_LABEL).cloned(),
                pod_ready: pod_ready(p),
                terminating: p.metadata.deletion_timestamp.is_some(),
                name,
                node,
            })
        })
        .collect();
    views.sort_by_key(|v| v.ordinal);

    // Who leads.
    let sync = spec.replication.map_or(0, |r| r.synchronous_replicas);
    let leader = match plan::leadership(
        &views,
        pass.status.current_leader.as_deref(),
        pass.status.epoch,
    ) {
        Leadership::Unknown => {
            pass.progressing = Some("waiting for the pods' nodes to answer".into());
            None
        }
        Leadership::Bootstrap { pod, epoch } => {
            nodes
                .set_role(
                    &refs[&pod],
                    &api::SetRole {
                        role: api::Role::Leader,
                        epoch,
                        leader_url: None,
                    },
                )
                .await?;
            pass.event(
                EventType::Normal,
                "LeaderElected",
                "Bootstrap",
                format!("{pod} is the first leader, at epoch {epoch}"),
            );
            new_leader(&mut pass, &pod, epoch);
            refresh(&nodes, &refs, &mut views, &pod).await;
            Some(pod)
        }
        Leadership::Healthy { pod, epoch } => {
            if pass.status.current_leader.as_deref() != Some(pod.as_str()) {
                new_leader(&mut pass, &pod, epoch);
            }
            pass.status.epoch = epoch;
            pass.status.leader_unready_since = None;
            Some(pod)
        }
        Leadership::Lost { pod, epoch } => {
            lost(
                vc, ctx, &nodes, &refs, &mut views, &mut pass, pod, epoch, sync,
            )
            .await?
        }
    };

    let mut diverged = Vec::new();
    if let Some(leader) = &leader {
        let leader_url = refs[leader].url.clone();
        let epoch = pass.status.epoch;
        let leader_seq = views
            .iter()
            .find(|v| &v.name == leader)
            .and_then(|v| v.node.as_ref())
            .map_or(0, |n| n.seq);
        // Every other pod follows the leader at its epoch, but only once its history agrees
        // with the leader's where both have one: a pod with a foreign history (a claim left
        // by another cluster, a leader that went its own way) is reported, not followed.
        for pod in plan::to_repoint(&views, leader, epoch) {
            let seq = views
                .iter()
                .find(|v| v.name == pod)
                .and_then(|v| v.node.as_ref())
                .map_or(0, |n| n.seq)
                .min(leader_seq);
            if seq > 0 {
                let (theirs, ours) = futures::join!(
                    nodes.chain_at(&refs[&pod], seq),
                    nodes.chain_at(&refs[leader], seq)
                );
                if let (Ok(a), Ok(b)) = (theirs, ours) {
                    if a != b {
                        found_diverged(ctx, &client, &ns, &names, &mut pass, leader, &pod, seq)
                            .await?;
                        if pass.heal {
                            views.retain(|v| v.name != pod);
                        }
                        diverged.push(pod);
                        continue;
                    }
                }
            }
            match nodes
                .set_role(&refs[&pod], &follow(epoch, &leader_url))
                .await
            {
                Ok(_) => tracing::info!(%pod, %leader, epoch, "pointed at the leader"),
                Err(e) => tracing::warn!(%pod, error = %e, "could not point at the leader"),
            }
        }
        refresh_all(&nodes, &refs, &mut views).await;
        apply(&services, &desired::rw_service(vc, leader)).await?;
    }
    label_roles(&pods_api, &pods, &views, leader.as_deref()).await?;

    // Cross-check.
    let due = pass
        .status
        .last_cross_check
        .as_deref()
        .and_then(seconds)
        .is_none_or(|last| {
            plan::failover_due(
                last,
                pass.now.0.as_second(),
                spec.cross_check.interval_seconds,
            )
        });
    let mut chains = BTreeMap::new();
    let mut state_hashes = BTreeMap::new();
    if let (Some(leader), true) = (&leader, due && diverged.is_empty()) {
        if let Some(seq) = plan::common_seq(&views) {
            for v in views.iter().filter(|v| v.node.is_some()) {
                if seq == 0 {
                    // No history anywhere yet: every pod agrees with the leader's empty one.
                    chains.insert(v.name.clone(), String::new());
                } else if let Ok(c) = nodes.chain_at(&refs[&v.name], seq).await {
                    chains.insert(v.name.clone(), c);
                }
            }
            // Each pod's state hash where it stands, for the status (the nodes compare full
            // state hashes among themselves; the operator shows them).
            for v in views.iter().filter(|v| v.node.is_some()) {
                if let Some(h) = nodes
                    .state(&refs[&v.name])
                    .await
                    .ok()
                    .and_then(|s| s.state_hash)
                {
                    state_hashes.insert(v.name.clone(), h);
                }
            }
            if let Some(reference) = chains.get(leader).cloned() {
                let verdict = plan::cross_check(seq, &reference, &chains);
                diverged = verdict.diverged.clone();
                pass.status.last_cross_check = Some(rfc3339(&pass.now));
                pass.status.last_cross_check_seq = Some(seq);
                for pod in &verdict.diverged {
                    found_diverged(ctx, &client, &ns, &names, &mut pass, leader, pod, seq).await?;
                    if pass.heal && pod != leader {
                        views.retain(|v| &v.name != pod);
                    }
                }
            }
        }
    }
    if !due {
        // Keep the last verdict.
        for r in &pass.status.instances_status {
            if !r.converged && r.chain_hash.is_some() {
                diverged.push(r.pod.clone());
            }
        }
    }

    // Rollout: at most one disruptive step a pass.
    let step = if diverged.is_empty() || !spec.cross_check.heal {
        plan::rollout_step(
            &views,
            update_revision.as_deref(),
            leader.as_deref(),
            spec.failover.leader_update,
        )
    } else {
        Step::Wait("healing".into())
    };
    match &step {
        Step::Done | Step::Wait(_) => {}
        Step::Restart(pod) => {
            pods_api.delete(pod, &DeleteParams::default()).await?;
            pass.event(
                EventType::Normal,
                "RollingUpdate",
                "RestartPod",
                format!(
                    "restarted {pod} onto revision {}",
                    update_revision.as_deref().unwrap_or("?")
                ),
            );
        }
        Step::Switchover(to) => {
            let old = leader.clone().expect("a switchover has a leader");
            let others: Vec<NodeRef> = views
                .iter()
                .filter(|v| v.name != old && v.name != *to)
                .map(|v| refs[&v.name].clone())
                .collect();
            let done = failover::switchover(
                &nodes,
                &refs[&old],
                &refs[to],
                &others,
                pass.status.epoch,
                ctx.switchover_timeout,
            )
            .await?;
            if done.switched {
                pass.event(
                    EventType::Normal,
                    "Switchover",
                    "Promote",
                    format!(
                        "{to} leads at epoch {} so that {old} can take the new template",
                        done.epoch
                    ),
                );
                new_leader(&mut pass, to, done.epoch);
                apply(&services, &desired::rw_service(vc, to)).await?;
                refresh_all(&nodes, &refs, &mut views).await;
            } else {
                pass.event(
                    EventType::Warning,
                    "SwitchoverAborted",
                    "Promote",
                    format!(
                        "{to} did not catch up with {old}; {old} leads again at epoch {}",
                        done.epoch
                    ),
                );
                pass.status.epoch = done.epoch;
            }
        }
    }
    if let Step::Wait(why) | Step::Restart(why) | Step::Switchover(why) = &step {
        pass.progressing = pass.progressing.take().or(Some(match &step {
            Step::Wait(_) => format!("rollout waits: {why}"),
            _ => format!("rolling out: {why}"),
        }));
    }

    finish(
        vc,
        ctx,
        &mut pass,
        &views,
        leader.as_deref(),
        (&chains, &state_hashes),
        &diverged,
        update_revision.as_deref(),
    )
    .await?;

    // Come back soon while anything is in motion, else at the next cross-check.
    let soon = pass.progressing.is_some() || pass.degraded.is_some() || leader.is_none();
    Ok(Action::requeue(if soon {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(u64::from(spec.cross_check.interval_seconds))
    }))
}

/// Reports a pod whose chain hash at `seq` differs from the leader's and, when the spec says
/// so, heals it (never the leader).
#[allow(clippy::too_many_arguments)]
async fn found_diverged(
    ctx: &Context,
    client: &Client,
    ns: &str,
    names: &Names,
    pass: &mut Pass,
    leader: &str,
    pod: &str,
    seq: u64,
) -> Result<(), Error> {
    pass.event(
        EventType::Warning,
        "Diverged",
        "CrossCheck",
        format!("{pod}'s chain hash at sequence number {seq} differs from the leader {leader}'s"),
    );
    ctx.metrics.divergences.inc();
    if pass.heal && pod != leader {
        heal(client, ns, names, pod).await?;
        pass.event(
            EventType::Normal,
            "Healing",
            "Rebootstrap",
            format!(
                "deleted {pod} and its claim {}: it re-bootstraps from the leader",
                names.claim(pod)
            ),
        );
        ctx.metrics.heals.inc();
    }
    Ok(())
}

fn follow(epoch: u64, leader_url: &str) -> api::SetRole {
    api::SetRole {
        role: api::Role::Follower,
        epoch,
        leader_url: Some(leader_url.to_string()),
    }
}

fn new_leader(pass: &mut Pass, pod: &str, epoch: u64) {
    let now = rfc3339(&pass.now);
    pass.status.current_leader = Some(pod.to_string());
    pass.status.current_leader_since = Some(now.clone());
    pass.status.target_leader = Some(pod.to_string());
    pass.status.target_leader_since = Some(now);
    pass.status.epoch = epoch;
    pass.status.leader_unready_since = None;
}

/// The leader is unready or gone: wait out the delay, then fail over.
#[allow(clippy::too_many_arguments)]
async fn lost(
    vc: &ValoriCluster,
    ctx: &Context,
    nodes: &Nodes,
    refs: &BTreeMap<String, NodeRef>,
    views: &mut [PodView],
    pass: &mut Pass,
    pod: Option<String>,
    epoch: u64,
    sync: u32,
) -> Result<Option<String>, Error> {
    let now = pass.now.0.as_second();
    let since = match pass
        .status
        .leader_unready_since
        .as_deref()
        .and_then(seconds)
    {
        Some(s) => s,
        None => {
            pass.status.leader_unready_since = Some(rfc3339(&pass.now));
            now
        }
    };
    let who = pod.clone().unwrap_or_else(|| "no pod".into());
    let delay = vc.spec.failover.delay_seconds;
    if !plan::failover_due(since, now, delay) {
        pass.degraded = Some(format!(
            "the leader {who} is unready; failover in {}s",
            i64::from(delay) - (now - since)
        ));
        return Ok(None);
    }
    let followers: Vec<NodeRef> = views
        .iter()
        .filter(|v| Some(&v.name) != pod.as_ref() && !v.terminating)
        .map(|v| refs[&v.name].clone())
        .collect();
    // A leader whose pod is gone (deleted, not yet recreated) cannot be fenced by a call; the
    // new epoch fences it when it returns.
    let old = pod.as_ref().and_then(|p| refs.get(p).cloned());
    pass.status.target_leader_since = Some(rfc3339(&pass.now));
    let outcome = failover::fail_over(nodes, old.as_ref(), &followers, sync, epoch).await?;
    match outcome.decision {
        failover::Decision::Promote { name, epoch } => {
            ctx.metrics.failovers.inc();
            pass.event(
                EventType::Warning,
                "FailedOver",
                "Promote",
                format!(
                    "{name} leads at epoch {epoch}: the leader {who} was unready for {}s{}",
                    now - since,
                    if outcome.old_leader_fenced {
                        " (it answered and was demoted)"
                    } else {
                        " (it did not answer; the epoch fences it)"
                    }
                ),
            );
            new_leader(pass, &name, epoch);
            refresh_all(nodes, refs, views).await;
            Ok(Some(name))
        }
        failover::Decision::Wait { reason } => {
            pass.status.target_leader = None;
            pass.degraded = Some(format!("failover waits: {reason}"));
            pass.event(EventType::Warning, "FailoverWaiting", "Promote", reason);
            Ok(None)
        }
    }
}

async fn refresh(
    nodes: &Nodes,
    refs: &BTreeMap<String, NodeRef>,
    views: &mut [PodView],
    pod: &str,
) {
    if let Some(v) = views.iter_mut().find(|v| v.name == pod) {
        v.node = nodes.role(&refs[pod]).await.ok();
    }
}

async fn refresh_all(nodes: &Nodes, refs: &BTreeMap<String, NodeRef>, views: &mut [PodView]) {
    let names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
    for n in names {
        refresh(nodes, refs, views, &n).await;
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn read_key(client: &Client, ns: &str, secret: &str, key: &str) -> Result<String, Error> {
    Ok(read_secret_key(client, ns, secret, key, false)
        .await?
        .expect("a required key is present")
        .trim()
        .to_string())
}

/// Key `key` of Secret `secret`; absent is `None` when `optional`, an error otherwise.
async fn read_secret_key(
    client: &Client,
    ns: &str,
    secret: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, Error> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(secret)
        .await
        .map_err(|e| Error::Invalid(format!("the Secret {secret}: {e}")))?;
    let Some(bytes) = s.data.as_ref().and_then(|d| d.get(key)) else {
        return if optional {
            Ok(None)
        } else {
            Err(Error::Invalid(format!(
                "the Secret {secret} has no key {key:?}"
            )))
        };
    };
    String::from_utf8(bytes.0.clone())
        .map(Some)
        .map_err(|_| Error::Invalid(format!("{secret}/{key} is not UTF-8")))
}

async fn label_roles(
    pods_api: &Api<Pod>,
    pods: &[Pod],
    views: &[PodView],
    leader: Option<&str>,
) -> Result<(), Error> {
    for v in views {
        let Some(role) = plan::role_label(v, leader) else {
            continue;
        };
        let Some(p) = pods.iter().find(|p| p.name_any() == v.name) else {
            continue;
        };
        if p.labels().get(ROLE_LABEL).map(String::as_str) != Some(role) {
            let patched = pods_api
                .patch(
                    &v.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {ROLE_LABEL: role}}})),
                )
                .await;
            match patched {
                Ok(_) => {}
                // Deleted meanwhile: its successor is labelled on the next pass.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Deletes a diverged follower's pod and claim: the StatefulSet recreates both, and the new,
/// empty node bootstraps from the leader's snapshot.
async fn heal(client: &Client, ns: &str, names: &Names, pod: &str) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    match claims
        .delete(&names.claim(pod), &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(pod, &DeleteParams::default())
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    vc: &ValoriCluster,
    ctx: &Context,
    pass: &mut Pass,
    views: &[PodView],
    leader: Option<&str>,
    (chains, state_hashes): (&BTreeMap<String, String>, &BTreeMap<String, String>),
    diverged: &[String],
    update_revision: Option<&str>,
) -> Result<(), Error> {
    let gen = pass.generation;
    let now = pass.now.clone();
    let st = &mut pass.status;
    let previous_rows = std::mem::take(&mut st.instances_status);
    let mut rows = plan::instance_rows(
        views,
        leader,
        chains,
        state_hashes,
        diverged,
        update_revision,
    );
    // Hashes from a cross-check not run this pass are kept.
    for r in &mut rows {
        if r.state_hash.is_none() {
            r.state_hash = previous_rows
                .iter()
                .find(|p| p.pod == r.pod)
                .and_then(|p| p.state_hash.clone());
        }
        if r.chain_hash.is_none() {
            r.chain_hash = previous_rows
                .iter()
                .find(|p| p.pod == r.pod)
                .and_then(|p| p.chain_hash.clone());
        }
    }
    st.instances = views.len() as u32;
    st.ready_instances = views.iter().filter(|v| v.ready()).count() as u32;
    st.updated_instances = rows.iter().filter(|r| r.updated).count() as u32;
    st.update_revision = update_revision.map(str::to_string);
    st.selector = Some(desired::selector_string(vc));
    st.instances_status = rows;
    st.observed_generation = gen;
    let want = vc.spec.instances;
    let all_ready = st.ready_instances == want && st.instances == want;
    let converged = diverged.is_empty() && st.last_cross_check.is_some();
    let (phase, reason) = if leader.is_none() && st.epoch == 0 {
        (
            "Creating",
            pass.progressing
                .clone()
                .unwrap_or_else(|| "no leader yet".into()),
        )
    } else if let Some(d) = &pass.degraded {
        ("FailingOver", d.clone())
    } else if !diverged.is_empty() {
        ("Diverged", format!("diverged: {}", diverged.join(", ")))
    } else if let Some(p) = &pass.progressing {
        ("Upgrading", p.clone())
    } else if !all_ready {
        (
            "Degraded",
            format!("{} of {want} pods ready", st.ready_instances),
        )
    } else {
        (
            "Healthy",
            "every pod is ready and agrees with the leader".into(),
        )
    };
    st.phase = Some(phase.into());
    st.phase_reason = Some(reason.clone());
    let c = &mut st.conditions;
    plan::set_condition(
        c,
        "Ready",
        all_ready && leader.is_some(),
        if all_ready { "AllReady" } else { "NotAllReady" },
        &format!(
            "{} of {want} pods ready; leader {}",
            st.ready_instances,
            leader.unwrap_or("none")
        ),
        gen,
        &now,
    );
    plan::set_condition(
        c,
        "Progressing",
        pass.progressing.is_some(),
        if pass.progressing.is_some() {
            "Progressing"
        } else {
            "Stable"
        },
        pass.progressing.as_deref().unwrap_or("nothing to roll out"),
        gen,
        &now,
    );
    plan::set_condition(
        c,
        "Converged",
        converged,
        if converged {
            "ChainsAgree"
        } else if diverged.is_empty() {
            "NotChecked"
        } else {
            "ChainsDiffer"
        },
        &match st.last_cross_check_seq {
            Some(s) => format!("compared at sequence number {s}"),
            None => "not cross-checked yet".into(),
        },
        gen,
        &now,
    );
    plan::set_condition(
        c,
        "Diverged",
        !diverged.is_empty(),
        if diverged.is_empty() {
            "ChainsAgree"
        } else {
            "ChainsDiffer"
        },
        &if diverged.is_empty() {
            "no pod diverged".to_string()
        } else {
            format!("diverged: {}", diverged.join(", "))
        },
        gen,
        &now,
    );
    let degraded = pass.degraded.is_some() || (!all_ready && st.epoch > 0);
    plan::set_condition(
        c,
        "Degraded",
        degraded,
        if degraded { "Degraded" } else { "Healthy" },
        pass.degraded.as_deref().unwrap_or(&reason),
        gen,
        &now,
    );

    // Status first (server-side apply by the one field manager: what it leaves out is removed),
    // then the Events.
    let vcs: Api<ValoriCluster> =
        Api::namespaced(ctx.client.clone(), &vc.namespace().expect("namespaced"));
    vcs.patch_status(
        &vc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "valori.dev/v1alpha1",
            "kind": "ValoriCluster",
            "status": st,
        })),
    )
    .await?;
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = vc.object_ref(&());
    for e in &pass.events {
        if let Err(err) = recorder.publish(e, &reference).await {
            tracing::warn!(error = %err, reason = %e.reason, "could not publish an event");
        }
    }
    Ok(())
}

/// What to do after a failed reconcile: retry with a delay, longer for what will not fix
/// itself.
pub fn error_policy(_vc: Arc<ValoriCluster>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    Action::requeue(match err {
        Error::Invalid(_) => Duration::from_secs(60),
        _ => Duration::from_secs(5),
    })
}

/// Runs the controller until `shutdown` resolves: watches ValoriClusters, the objects they own,
/// and their pods.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let clusters: Api<ValoriCluster> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            pods,
            watcher::Config::default().labels(&format!(
                "{}={}",
                desired::MANAGED_BY_LABEL,
                FIELD_MANAGER
            )),
            |pod: Pod| {
                let ns = pod.namespace()?;
                let name = pod.labels().get(INSTANCE_LABEL)?.clone();
                Some(kube::runtime::reflector::ObjectRef::new(&name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
}
