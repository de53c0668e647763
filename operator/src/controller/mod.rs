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

mod act;
mod observe;
pub mod on_demand;
mod restore;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{ValoriBackup, ValoriCluster, ValoriClusterStatus};
use crate::desired::{self, FIELD_MANAGER, INSTANCE_LABEL};
use crate::error::Error;
use crate::limits::{
    NODE_TIMEOUT, REQUEUE_AFTER_ERROR, REQUEUE_INVALID, REQUEUE_IN_MOTION, SWITCHOVER_TIMEOUT,
};
use crate::metrics::Metrics;
use crate::plan::{self, Step};
use crate::status;

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
            node_timeout: NODE_TIMEOUT,
            switchover_timeout: SWITCHOVER_TIMEOUT,
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

/// One pass over one cluster. Each pass is idempotent: it reads the state of the world again
/// and takes at most one disruptive step (a failover, a switchover, or one pod restarted).
pub async fn reconcile(vc: Arc<ValoriCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&vc, &ctx).await;
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err());
    if let Err(e) = &result {
        report_failure(&vc, &ctx, e).await;
    }
    result
}

/// Makes a failed pass visible: phase `ReconcileFailed` with the error, the `Reconciled`
/// condition False, and a Warning Event when it starts failing. A pass that lost a race to a
/// newer one (`Superseded`) is not a failure. Best effort: when the API server itself fails,
/// this fails too, and the log says so.
async fn report_failure(vc: &ValoriCluster, ctx: &Context, e: &Error) {
    let Some((mut st, transition)) =
        status::failed(vc.status.clone(), e, vc.metadata.generation, &now())
    else {
        return;
    };
    let events = if transition {
        vec![Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(e.to_string()),
            action: "Reconcile".into(),
            secondary: None,
        }]
    } else {
        Vec::new()
    };
    st.observed_generation = vc.metadata.generation;
    if let Err(err) = report(vc, ctx, &st, &events).await {
        tracing::warn!(error = %err, "could not report a failed reconcile in the status");
    }
}

/// What happened in a pass, for Events and the status.
struct Pass {
    namespace: String,
    status: ValoriClusterStatus,
    events: Vec<Event>,
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

    fn new_leader(&mut self, pod: &str, epoch: u64) {
        let now = rfc3339(&self.now);
        self.status.current_leader = Some(pod.to_string());
        self.status.current_leader_since = Some(now.clone());
        self.status.target_leader = Some(pod.to_string());
        self.status.target_leader_since = Some(now);
        self.status.epoch = epoch;
        self.status.leader_unready_since = None;
    }
}

/// One pass: observe, then decide and act step by step (who leads, the others pointed at it,
/// role labels, a cross-check when due, one rollout step), then report.
async fn reconcile_inner(vc: &ValoriCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = vc
        .namespace()
        .ok_or_else(|| Error::Invalid("a ValoriCluster is namespaced".into()))?;
    let spec = &vc.spec;
    let mut pass = Pass {
        namespace: ns.clone(),
        status: vc.status.clone().unwrap_or_default(),
        events: Vec::new(),
        now: now(),
        progressing: None,
        degraded: None,
        heal: spec.cross_check.heal,
    };
    // A cluster bootstrapped from a backup: its StatefulSet waits for the restore.
    match restore::restore(vc, ctx, &mut pass).await? {
        restore::Restore::Proceed => {}
        restore::Restore::Running(why) => return waiting(vc, ctx, pass, why, false).await,
        restore::Restore::Failed(why) => return waiting(vc, ctx, pass, why, true).await,
    }
    let mut world = observe::observe(vc, ctx, &ns).await?;
    if desired::hibernating(vc) {
        return hibernate(vc, ctx, pass, &world).await;
    }
    if act::fence(vc, ctx, &mut world, &mut pass).await? {
        return fenced(vc, ctx, pass, &world).await;
    }

    if let Some((ok, reason, message)) = world.storage.take() {
        if !ok {
            pass.progressing = Some(message.clone());
        }
        plan::set_condition(
            &mut pass.status.conditions,
            "StorageResized",
            ok,
            reason,
            &message,
            vc.metadata.generation,
            &pass.now,
        );
    }
    let leader = act::lead(vc, ctx, &mut world, &mut pass).await?;
    let mut diverged = match &leader {
        Some(l) => act::repoint(vc, ctx, &mut world, &mut pass, l).await?,
        None => Vec::new(),
    };
    act::label_roles(&world, leader.as_deref()).await?;

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
    let mut hashes = act::Hashes::default();
    if let (Some(l), true) = (&leader, due && diverged.is_empty()) {
        (hashes, diverged) = act::cross_check(ctx, &mut world, &mut pass, l).await?;
    }
    if !due {
        // Keep the last verdict.
        for r in &pass.status.instances_status {
            if !r.converged && r.chain_hash.is_some() {
                diverged.push(r.pod.clone());
            }
        }
    }

    // Rollout: at most one disruptive step a pass. A scale-down that removes the leader's
    // ordinal moves the leadership first (the StatefulSet keeps that ordinal until it has).
    let cordoned: Vec<String> = world.cordoned.iter().map(|(p, _)| p.clone()).collect();
    // A switchover asked for by hand: carried out, or refused once and for all.
    let asked = vc
        .annotations()
        .get(desired::SWITCHOVER_ANNOTATION)
        .cloned();
    let mut asked_done = false;
    let manual = match (leader.as_deref(), asked.as_deref()) {
        (Some(l), Some(t)) => match plan::manual_move(&world.views, l, t) {
            None => {
                asked_done = true;
                None
            }
            Some(Ok(step)) => Some(step),
            Some(Err(why)) => {
                pass.event(
                    EventType::Warning,
                    "SwitchoverRefused",
                    "Promote",
                    format!("{}: {why}", desired::SWITCHOVER_ANNOTATION),
                );
                asked_done = true;
                None
            }
        },
        _ => None,
    };
    let moving = leader.as_deref().and_then(|l| {
        plan::leader_move(&world.views, l, spec.instances)
            .or(manual)
            .or_else(|| plan::drain_move(&world.views, l, &cordoned))
    });
    let step = if let Some(step) = moving {
        step
    } else if diverged.is_empty() || !spec.cross_check.heal {
        plan::rollout_step(
            &world.views,
            world.update_revision.as_deref(),
            leader.as_deref(),
            spec.failover.leader_update,
        )
    } else {
        Step::Wait("healing".into())
    };
    act::roll_out(vc, ctx, &mut world, &mut pass, leader.as_deref(), &step).await?;
    act::backups(vc, &world, &mut pass, leader.as_deref(), &ctx.metrics).await;
    if asked_done {
        // Done (or refused): the annotation goes, so that it never moves a later leader.
        let vcs: Api<ValoriCluster> = Api::namespaced(ctx.client.clone(), &ns);
        vcs.patch(
            &vc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {desired::SWITCHOVER_ANNOTATION: null}}
            })),
        )
        .await?;
    }
    if let Step::Wait(why) | Step::Restart(why) | Step::Switchover(why) = &step {
        pass.progressing = pass.progressing.take().or(Some(match &step {
            Step::Wait(_) => format!("rollout waits: {why}"),
            _ => format!("rolling out: {why}"),
        }));
    }

    let next = status::next(
        std::mem::take(&mut pass.status),
        &status::Observed {
            views: &world.views,
            leader: leader.as_deref(),
            chains: &hashes.chains,
            state_hashes: &hashes.state_hashes,
            diverged: &diverged,
            update_revision: world.update_revision.as_deref(),
            progressing: pass.progressing.as_deref(),
            degraded: pass.degraded.as_deref(),
            instances: spec.instances,
            generation: vc.metadata.generation,
            now: &pass.now,
            selector: desired::selector_string(vc),
        },
    );
    report(vc, ctx, &next, &pass.events).await?;

    // Come back soon while anything is in motion, else at the next cross-check.
    let soon = pass.progressing.is_some() || pass.degraded.is_some() || leader.is_none();
    Ok(Action::requeue(if soon {
        REQUEUE_IN_MOTION
    } else {
        Duration::from_secs(u64::from(spec.cross_check.interval_seconds))
    }))
}

/// What a pass that stops before choosing a leader (a restore, fencing, hibernation) saw.
struct Held<'a> {
    views: &'a [plan::PodView],
    update_revision: Option<&'a str>,
    instances: u32,
    /// The phase to report, when not the one the observation gives.
    phase: Option<&'static str>,
    why: String,
    /// Whether `why` is in motion (the `Progressing` condition).
    progressing: bool,
}

/// Reports a pass that stopped before choosing a leader: the status the pods give, with the
/// phase and its reason, and the pass's Events.
async fn report_held(
    vc: &ValoriCluster,
    ctx: &Context,
    mut pass: Pass,
    held: Held<'_>,
) -> Result<(), Error> {
    let none = std::collections::BTreeMap::new();
    let mut next = status::next(
        std::mem::take(&mut pass.status),
        &status::Observed {
            views: held.views,
            leader: None,
            chains: &none,
            state_hashes: &none,
            diverged: &[],
            update_revision: held.update_revision,
            progressing: held.progressing.then_some(held.why.as_str()),
            degraded: None,
            instances: held.instances,
            generation: vc.metadata.generation,
            now: &pass.now,
            selector: desired::selector_string(vc),
        },
    );
    if let Some(phase) = held.phase {
        next.phase = Some(phase.into());
        next.phase_reason = Some(held.why);
    }
    report(vc, ctx, &next, &pass.events).await
}

/// A fenced cluster (`valori.dev/fence: "true"`): every pod serves reads, the leader takes no
/// write; nothing else is done (no failover: the leader is unwritable on purpose).
async fn fenced(
    vc: &ValoriCluster,
    ctx: &Context,
    pass: Pass,
    world: &observe::World,
) -> Result<Action, Error> {
    let why = pass.progressing.clone().unwrap_or_else(|| {
        format!(
            "{}: the leader takes no write, every pod serves reads",
            desired::FENCE_ANNOTATION
        )
    });
    let held = Held {
        views: &world.views,
        update_revision: world.update_revision.as_deref(),
        instances: vc.spec.instances,
        phase: Some("Fenced"),
        why,
        progressing: false,
    };
    report_held(vc, ctx, pass, held).await?;
    Ok(Action::requeue(REQUEUE_INVALID))
}

/// A hibernating cluster (`valori.dev/hibernate: "true"`): its StatefulSet has no replica (the
/// claims stay), nothing is asked of the nodes, and the status says `Hibernated` once every
/// pod is gone. The leader and epoch in the status stay for the wake-up.
async fn hibernate(
    vc: &ValoriCluster,
    ctx: &Context,
    mut pass: Pass,
    world: &observe::World,
) -> Result<Action, Error> {
    let left = world.views.len();
    let why = if left == 0 {
        format!(
            "{}: every pod stopped, the claims kept",
            desired::HIBERNATE_ANNOTATION
        )
    } else {
        format!(
            "{}: {left} pods still stopping",
            desired::HIBERNATE_ANNOTATION
        )
    };
    if pass.status.phase.as_deref() != Some("Hibernated") && left == 0 {
        pass.event(EventType::Normal, "Hibernated", "Hibernate", why.clone());
    }
    let held = Held {
        views: &world.views,
        update_revision: world.update_revision.as_deref(),
        instances: 0,
        phase: Some("Hibernated"),
        why,
        progressing: left > 0,
    };
    report_held(vc, ctx, pass, held).await?;
    Ok(Action::requeue(if left > 0 {
        REQUEUE_IN_MOTION
    } else {
        REQUEUE_INVALID
    }))
}

/// Reports a cluster whose pods wait for its restore: `Creating` while the restore runs,
/// `RestoreFailed` once it failed (retried only when the Job is deleted, which the watch on
/// Jobs notices).
async fn waiting(
    vc: &ValoriCluster,
    ctx: &Context,
    pass: Pass,
    why: String,
    failed: bool,
) -> Result<Action, Error> {
    let held = Held {
        views: &[],
        update_revision: None,
        instances: vc.spec.instances,
        phase: failed.then_some("RestoreFailed"),
        why,
        progressing: !failed,
    };
    report_held(vc, ctx, pass, held).await?;
    Ok(Action::requeue(if failed {
        REQUEUE_INVALID
    } else {
        REQUEUE_IN_MOTION
    }))
}

/// Writes the status (server-side apply by the one field manager: what it leaves out is
/// removed), then publishes the pass's Events.
async fn report(
    vc: &ValoriCluster,
    ctx: &Context,
    status: &ValoriClusterStatus,
    events: &[Event],
) -> Result<(), Error> {
    let vcs: Api<ValoriCluster> =
        Api::namespaced(ctx.client.clone(), &vc.namespace().expect("namespaced"));
    vcs.patch_status(
        &vc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "valori.dev/v1alpha1",
            "kind": "ValoriCluster",
            "status": status,
        })),
    )
    .await?;
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = vc.object_ref(&());
    for e in events {
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
        Error::Invalid(_) => REQUEUE_INVALID,
        _ => REQUEUE_AFTER_ERROR,
    })
}

/// Runs the controllers until `shutdown` resolves: one watches ValoriClusters, the objects
/// they own and their pods; the other ValoriBackups. In every namespace, or (`namespaces` not
/// empty) a pair in each of those only.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::FutureExt;
    let shutdown = shutdown.boxed().shared();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let runs = scopes.into_iter().map(|scope| {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        async move {
            let client = ctx.client.clone();
            fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
            where
                K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
                <K as kube::Resource>::DynamicType: Default,
            {
                match scope {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                }
            }
            let cluster_controller = Controller::new(
                api::<ValoriCluster>(&client, &scope),
                watcher::Config::default().any_semantic(),
            )
            .owns(
                api::<StatefulSet>(&client, &scope),
                watcher::Config::default(),
            )
            .owns(api::<Service>(&client, &scope), watcher::Config::default())
            .owns(api::<Job>(&client, &scope), watcher::Config::default())
            .watches(
                api::<Pod>(&client, &scope),
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
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "controller");
                }
            });
            let backup_controller = Controller::new(
                api::<ValoriBackup>(&client, &scope),
                watcher::Config::default().any_semantic(),
            )
            .graceful_shutdown_on(shutdown)
            .run(on_demand::reconcile, on_demand::error_policy, ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "backup controller");
                }
            });
            futures::join!(cluster_controller, backup_controller);
        }
    });
    futures::future::join_all(runs).await;
}
