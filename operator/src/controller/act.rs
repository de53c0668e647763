//! What a pass does, each step carrying out a decision of [`crate::plan`] or
//! [`crate::failover`]: who leads, pointing the others at the leader, labelling roles,
//! cross-checking, one rollout step, healing a diverged pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::json;
use valori_api as api;

use super::observe::{apply, World};
use super::{rfc3339, seconds, Context, Pass};
use crate::crd::{BackupStatus, ValoriCluster};
use crate::desired::{self, Names, ROLE_LABEL};
use crate::error::Error;
use crate::failover::{self, NodeRef};
use crate::plan::{self, Leadership, Step};

/// Decides who leads ([`plan::leadership`]) and makes it so: the first leader of a new
/// cluster, the same one, or a failover once the leader has been unready past the delay.
pub(super) async fn lead(
    vc: &ValoriCluster,
    ctx: &Context,
    world: &mut World,
    pass: &mut Pass,
) -> Result<Option<String>, Error> {
    let sync = vc.spec.replication.map_or(0, |r| r.synchronous_replicas);
    match plan::leadership(
        &world.views,
        pass.status.current_leader.as_deref(),
        pass.status.epoch,
    ) {
        Leadership::Unknown => {
            pass.progressing = Some("waiting for the pods' nodes to answer".into());
            Ok(None)
        }
        Leadership::Bootstrap { pod, epoch } => {
            // A restored cluster: only the restored pod, serving what was restored, leads first.
            if let Some(seq) = pass.status.restore.as_ref().and_then(|r| r.seq) {
                let first = world.names.pod(0);
                if let Err(why) =
                    crate::backup::restored_leader(&pod, world.seq_of(&pod), &first, seq)
                {
                    pass.progressing = Some(why);
                    return Ok(None);
                }
            }
            // Recorded before it is used: a second arbiter that read the same status loses.
            record_epoch(vc, ctx, pass, epoch).await?;
            world
                .nodes
                .set_role(&world.refs[&pod], &api::SetRole::leader(epoch))
                .await?;
            pass.event(
                EventType::Normal,
                "LeaderElected",
                "Bootstrap",
                format!("{pod} is the first leader, at epoch {epoch}"),
            );
            pass.new_leader(&pod, epoch);
            world.refresh(&pod).await;
            Ok(Some(pod))
        }
        Leadership::Healthy { pod, epoch } => {
            if pass.status.current_leader.as_deref() != Some(pod.as_str()) {
                pass.new_leader(&pod, epoch);
            }
            pass.status.epoch = epoch;
            pass.status.leader_unready_since = None;
            Ok(Some(pod))
        }
        Leadership::Lost { pod, epoch } => lost(vc, ctx, world, pass, pod, epoch, sync).await,
    }
}

/// The leader is unready or gone: wait out the delay, then fail over.
async fn lost(
    vc: &ValoriCluster,
    ctx: &Context,
    world: &mut World,
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
    let followers: Vec<NodeRef> = world
        .views
        .iter()
        .filter(|v| Some(&v.name) != pod.as_ref() && !v.terminating)
        .map(|v| world.refs[&v.name].clone())
        .collect();
    // A leader whose pod is gone (deleted, not yet recreated) cannot be fenced by a call; the
    // new epoch fences it when it returns.
    let old = pod.as_ref().and_then(|p| world.refs.get(p).cloned());
    pass.status.target_leader_since = Some(rfc3339(&pass.now));
    // N is the cluster's configured followers, never the pods that happen to be listed.
    let configured = vc.spec.instances.saturating_sub(1);
    let mut recorded = None;
    let outcome = {
        let status = &pass.status;
        let recorded = &mut recorded;
        failover::fail_over(
            &world.nodes,
            old.as_ref(),
            &followers,
            configured,
            sync,
            epoch,
            |chosen| async move {
                *recorded = Some(chosen);
                write_epoch(vc, ctx, status, chosen).await
            },
        )
        .await?
    };
    if let Some(chosen) = recorded {
        // Used (the followers were raised to it) even if the decision waits: the next
        // failover takes the one after it.
        pass.status.epoch = chosen;
    }
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
            pass.new_leader(&name, epoch);
            world.refresh_all().await;
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

/// Points every other pod at `leader` at the cluster's epoch, each only once its history
/// agrees with the leader's where both have one: a pod with a foreign history (a claim left by
/// another cluster, a leader that went its own way) is reported (and healed when the spec says
/// so), not followed. Returns the pods found diverged. Then moves the read-write Service.
pub(super) async fn repoint(
    vc: &ValoriCluster,
    ctx: &Context,
    world: &mut World,
    pass: &mut Pass,
    leader: &str,
) -> Result<Vec<String>, Error> {
    let leader_url = world.refs[leader].url.clone();
    let epoch = pass.status.epoch;
    let leader_seq = world.seq_of(leader);
    let mut diverged = Vec::new();
    for pod in plan::to_repoint(&world.views, leader, epoch) {
        let seq = world.seq_of(&pod).min(leader_seq);
        if seq > 0 {
            let (theirs, ours) = futures::join!(
                world.nodes.chain_at(&world.refs[&pod], seq),
                world.nodes.chain_at(&world.refs[leader], seq)
            );
            if let (Ok(a), Ok(b)) = (theirs, ours) {
                if a != b {
                    found_diverged(ctx, &world.names, pass, leader, &pod, seq).await?;
                    diverged.push(pod.clone());
                    if pass.heal {
                        // Deleted with its claim: it re-bootstraps empty.
                        world.views.retain(|v| v.name != pod);
                        continue;
                    }
                    // Not healed, but never left leading: a returning old leader whose
                    // history went its own way is demoted (and so fenced) all the same;
                    // told not to heal, it keeps its data, latched and read-only.
                }
            }
        }
        // Without healing, a follower whose history went past the leader's keeps it (latched,
        // read-only) instead of re-bootstrapping by itself.
        let follow = api::SetRole {
            heal: Some(pass.heal),
            ..api::SetRole::follower(epoch, &leader_url)
        };
        match world.nodes.set_role(&world.refs[&pod], &follow).await {
            Ok(_) => tracing::info!(%pod, %leader, epoch, "pointed at the leader"),
            Err(e) => tracing::warn!(%pod, error = %e, "could not point at the leader"),
        }
    }
    world.refresh_all().await;
    apply(&world.services, &desired::rw_service(vc, leader)).await?;
    Ok(diverged)
}

/// Labels each pod with its role (`valori.dev/role`), which the read-only Service selects.
pub(super) async fn label_roles(world: &World, leader: Option<&str>) -> Result<(), Error> {
    for v in &world.views {
        let Some(role) = plan::role_label(v, leader) else {
            continue;
        };
        let Some(p) = world.pods.iter().find(|p| p.name_any() == v.name) else {
            continue;
        };
        if p.labels().get(ROLE_LABEL).map(String::as_str) != Some(role) {
            let patched = world
                .pods_api
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

/// What a cross-check read: each pod's chain hash at the common sequence number and its state
/// hash where it stands.
#[derive(Default)]
pub(super) struct Hashes {
    pub chains: BTreeMap<String, String>,
    pub state_hashes: BTreeMap<String, String>,
}

/// Compares every pod's chain hash with the leader's at their common sequence number
/// ([`plan::cross_check`]) and reports (and heals) the pods that differ; records the check in
/// the status. Returns what it read and the pods found diverged.
pub(super) async fn cross_check(
    ctx: &Context,
    world: &mut World,
    pass: &mut Pass,
    leader: &str,
) -> Result<(Hashes, Vec<String>), Error> {
    let mut hashes = Hashes::default();
    let Some(seq) = plan::common_seq(&world.views) else {
        return Ok((hashes, Vec::new()));
    };
    for v in world.views.iter().filter(|v| v.node.is_some()) {
        if seq == 0 {
            // No history anywhere yet: every pod agrees with the leader's empty one.
            hashes.chains.insert(v.name.clone(), String::new());
        } else if let Ok(c) = world.nodes.chain_at(&world.refs[&v.name], seq).await {
            hashes.chains.insert(v.name.clone(), c);
        }
    }
    // Each pod's state hash where it stands, for the status (the nodes compare full state
    // hashes among themselves; the operator shows them).
    for v in world.views.iter().filter(|v| v.node.is_some()) {
        if let Some(h) = world
            .nodes
            .state(&world.refs[&v.name])
            .await
            .ok()
            .and_then(|s| s.state_hash)
        {
            hashes.state_hashes.insert(v.name.clone(), h);
        }
    }
    let Some(reference) = hashes.chains.get(leader).cloned() else {
        return Ok((hashes, Vec::new()));
    };
    let verdict = plan::cross_check(seq, &reference, &hashes.chains);
    pass.status.last_cross_check = Some(rfc3339(&pass.now));
    pass.status.last_cross_check_seq = Some(seq);
    for pod in &verdict.diverged {
        found_diverged(ctx, &world.names, pass, leader, pod, seq).await?;
        if pass.heal && pod != leader {
            world.views.retain(|v| &v.name != pod);
        }
    }
    Ok((hashes, verdict.diverged))
}

/// Carries out one rollout step ([`plan::rollout_step`]): restarts a pod, or hands the
/// leadership over so that the leader can take the new template.
pub(super) async fn roll_out(
    vc: &ValoriCluster,
    ctx: &Context,
    world: &mut World,
    pass: &mut Pass,
    leader: Option<&str>,
    step: &Step,
) -> Result<(), Error> {
    match step {
        Step::Done | Step::Wait(_) => {}
        Step::Restart(pod) => {
            world.pods_api.delete(pod, &DeleteParams::default()).await?;
            pass.event(
                EventType::Normal,
                "RollingUpdate",
                "RestartPod",
                format!(
                    "restarted {pod} onto revision {}",
                    world.update_revision.as_deref().unwrap_or("?")
                ),
            );
        }
        Step::Switchover(to) => {
            let old = leader.expect("a switchover has a leader").to_string();
            let others: Vec<NodeRef> = world
                .views
                .iter()
                .filter(|v| v.name != old && v.name != *to)
                .map(|v| world.refs[&v.name].clone())
                .collect();
            let done = {
                let status = &pass.status;
                failover::switchover(
                    &world.nodes,
                    &world.refs[&old],
                    &world.refs[to],
                    &others,
                    pass.status.epoch,
                    ctx.switchover_timeout,
                    |chosen| write_epoch(vc, ctx, status, chosen),
                )
                .await?
            };
            if done.switched {
                let removed = desired::ordinal(&world.names.cluster, &old)
                    .is_some_and(|o| o >= vc.spec.instances);
                let drained = world.cordoned.iter().find(|(p, _)| *p == old);
                let why = if removed {
                    format!("so that the scale-down can remove {old}")
                } else if vc
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(desired::SWITCHOVER_ANNOTATION))
                    == Some(to)
                {
                    format!("as {} asks", desired::SWITCHOVER_ANNOTATION)
                } else if let Some((_, node)) = drained {
                    format!("because {old}'s node {node} is cordoned (a drain may evict it now)")
                } else {
                    format!("so that {old} can take the new template")
                };
                pass.event(
                    EventType::Normal,
                    "Switchover",
                    "Promote",
                    format!("{to} leads at epoch {} {why}", done.epoch),
                );
                pass.new_leader(to, done.epoch);
                apply(&world.services, &desired::rw_service(vc, to)).await?;
                world.refresh_all().await;
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
    Ok(())
}

/// Reports a pod whose chain hash at `seq` differs from the leader's and, when the spec says
/// so, heals it (never the leader).
async fn found_diverged(
    ctx: &Context,
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
        heal(&ctx.client, &pass.namespace, names, pod).await?;
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

/// Records `epoch` as the cluster's in its status before any node is given it, conditionally
/// on the resource version this pass read: of two arbiters that read the same status (two
/// operator replicas, a pass that timed out and the next), one writes and the other gets a
/// conflict and gives up, so no epoch is ever used twice.
async fn write_epoch(
    vc: &ValoriCluster,
    ctx: &Context,
    status: &crate::crd::ValoriClusterStatus,
    epoch: u64,
) -> Result<(), Error> {
    let mut next = status.clone();
    next.epoch = epoch;
    let vcs: Api<ValoriCluster> =
        Api::namespaced(ctx.client.clone(), &vc.namespace().expect("namespaced"));
    let applied = vcs
        .patch_status(
            &vc.name_any(),
            &PatchParams::apply(desired::FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "valori.dev/v1alpha1",
                "kind": "ValoriCluster",
                "metadata": {"resourceVersion": vc.resource_version()},
                "status": next,
            })),
        )
        .await;
    match applied {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Superseded(format!(
            "the cluster changed since this pass read it (another arbiter?): epoch {epoch} not used"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// [`write_epoch`] into this pass's status.
async fn record_epoch(
    vc: &ValoriCluster,
    ctx: &Context,
    pass: &mut Pass,
    epoch: u64,
) -> Result<(), Error> {
    write_epoch(vc, ctx, &pass.status, epoch).await?;
    pass.status.epoch = epoch;
    Ok(())
}

/// Fencing (`valori.dev/fence`): with the annotation, the leader is fenced at a new epoch
/// (recorded first), so that it takes no write while every pod serves reads; without it, a
/// fenced cluster's leader is given the leadership again at a newer epoch. Returns whether the
/// cluster stays fenced (the pass then reports and stops).
pub(super) async fn fence(
    vc: &ValoriCluster,
    ctx: &Context,
    world: &mut World,
    pass: &mut Pass,
) -> Result<bool, Error> {
    let asked = desired::fence_asked(vc);
    if !asked && !pass.status.fenced {
        return Ok(false);
    }
    let Some(leader) = pass.status.current_leader.clone() else {
        if asked {
            pass.progressing = Some("fencing waits: the cluster has no leader yet".into());
        }
        return Ok(asked);
    };
    let Some(node) = world.refs.get(&leader).cloned() else {
        pass.progressing = Some(format!("fencing waits: {leader} has no pod"));
        return Ok(asked);
    };
    let answers: Vec<api::RoleInfo> = world.views.iter().filter_map(|v| v.node.clone()).collect();
    let epoch = failover::next_epoch(pass.status.epoch, &answers);
    if asked && !pass.status.fenced {
        record_epoch(vc, ctx, pass, epoch).await?;
        world.nodes.fence(&node, epoch).await?;
        pass.status.fenced = true;
        pass.event(
            EventType::Normal,
            "Fenced",
            "Fence",
            format!("{leader} takes no write from epoch {epoch} on; reads go on"),
        );
        return Ok(true);
    }
    if asked {
        return Ok(true);
    }
    // Unfenced: the same leader, at a newer epoch.
    record_epoch(vc, ctx, pass, epoch).await?;
    world
        .nodes
        .set_role(&node, &api::SetRole::leader(epoch))
        .await?;
    pass.status.fenced = false;
    pass.new_leader(&leader, epoch);
    pass.event(
        EventType::Normal,
        "Unfenced",
        "Fence",
        format!("{leader} takes writes again at epoch {epoch}"),
    );
    world.refresh(&leader).await;
    Ok(false)
}

/// Backups (`spec.backup`): a snapshot backup on the leader when the schedule is due, then the
/// leader's report in the status with the `BackedUp` condition, and a Warning Event when
/// backing up starts failing. Without a leader the last status stays.
pub(super) async fn backups(
    vc: &ValoriCluster,
    world: &World,
    pass: &mut Pass,
    leader: Option<&str>,
    metrics: &crate::metrics::Metrics,
) {
    let Some(spec) = &vc.spec.backup else {
        if pass.status.backup.take().is_some() {
            metrics.forget_backup(&pass.namespace, &vc.name_any());
        }
        pass.status.conditions.retain(|c| c.type_ != "BackedUp");
        return;
    };
    let Some(leader) = leader else { return };
    let node = &world.refs[leader];
    let before = pass.status.backup.clone().unwrap_or_default();
    let mut last_scheduled = before.last_scheduled.clone();
    let mut trouble = None;
    if let Some(schedule) = &spec.schedule {
        let last = last_scheduled
            .as_deref()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok());
        match last.map(|l| crate::backup::schedule_due(schedule, l, pass.now.0)) {
            // First seen: the schedule counts from now.
            None => last_scheduled = Some(rfc3339(&pass.now)),
            Some(Ok(false)) => {}
            Some(Ok(true)) => {
                last_scheduled = Some(rfc3339(&pass.now));
                match world.nodes.create_backup(node).await {
                    Ok(b) => pass.event(
                        EventType::Normal,
                        "BackupTaken",
                        "Backup",
                        format!("scheduled backup of {leader} at sequence number {}", b.seq),
                    ),
                    Err(e) => {
                        pass.event(
                            EventType::Warning,
                            "BackupFailed",
                            "Backup",
                            format!("scheduled backup of {leader}: {e}"),
                        );
                        trouble = Some(e.to_string());
                    }
                }
            }
            Some(Err(e)) => trouble = Some(e),
        }
    }
    let mut st = match world.nodes.backups(node).await {
        Ok(list) => crate::backup::status_of(&list, last_scheduled),
        Err(e) => BackupStatus {
            error: Some(format!("asking {leader} for its backups: {e}")),
            last_scheduled,
            ..before.clone()
        },
    };
    if st.error.is_none() {
        st.error = trouble;
    }
    if let (Some(e), None) = (&st.error, &before.error) {
        pass.event(EventType::Warning, "BackupFailing", "Backup", e.clone());
    }
    let (ok, reason, message) = crate::backup::condition(&st, spec.ship_interval_seconds > 0);
    metrics.observe_backup(&pass.namespace, &vc.name_any(), &st, ok);
    plan::set_condition(
        &mut pass.status.conditions,
        "BackedUp",
        ok,
        reason,
        &message,
        vc.metadata.generation,
        &pass.now,
    );
    pass.status.backup = Some(st);
}
