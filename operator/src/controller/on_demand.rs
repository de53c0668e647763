//! On-demand backups (`ValoriBackup`): the named cluster's leader uploads a snapshot to the
//! cluster's backup destination, once; the resource's status says what it holds. A backup
//! that completed or failed is never taken again; one interrupted while running (the operator
//! restarted) is asked for again, which only uploads another snapshot.

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{now, observe, rfc3339, Context};
use crate::crd::{ValoriBackup, ValoriBackupStatus, ValoriCluster};
use crate::desired::FIELD_MANAGER;
use crate::error::Error;
use crate::failover::NodeRef;
use crate::limits::{PENDING_RETRY, REQUEUE_AFTER_ERROR};

/// What a pass decided about a backup that has not ended.
enum Step {
    /// Wait (for the cluster, its leader): why.
    Pending(String),
    /// Ask this pod of this cluster for the backup.
    Take(Box<ValoriCluster>, String),
    /// It cannot be taken: why.
    Fail(String),
}

/// One pass over one `ValoriBackup`.
pub async fn reconcile(vb: Arc<ValoriBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let st = vb.status.clone().unwrap_or_default();
    if matches!(st.phase.as_deref(), Some("Completed" | "Failed")) {
        return Ok(Action::await_change());
    }
    let ns = vb
        .namespace()
        .ok_or_else(|| Error::Invalid("a ValoriBackup is namespaced".into()))?;
    let clusters: Api<ValoriCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let cluster = &vb.spec.cluster;
    let step = match clusters.get_opt(cluster).await? {
        None => Step::Pending(format!("no ValoriCluster {cluster} in {ns}")),
        Some(vc) if vc.spec.backup.is_none() => Step::Fail(format!(
            "the ValoriCluster {cluster} has no spec.backup: it has nowhere to back up to"
        )),
        Some(vc) => match vc.status.as_ref().and_then(|s| s.current_leader.clone()) {
            None => Step::Pending(format!("the ValoriCluster {cluster} has no leader yet")),
            Some(leader) => Step::Take(Box::new(vc), leader),
        },
    };
    let (vc, leader) = match step {
        Step::Pending(why) => {
            let next = ValoriBackupStatus {
                phase: Some("Pending".into()),
                message: Some(why),
                ..ValoriBackupStatus::default()
            };
            if next != st {
                write(&vb, &ctx, &next, None).await?;
            }
            return Ok(Action::requeue(PENDING_RETRY));
        }
        Step::Fail(why) => {
            let next = ValoriBackupStatus {
                phase: Some("Failed".into()),
                message: Some(why.clone()),
                ..ValoriBackupStatus::default()
            };
            write(
                &vb,
                &ctx,
                &next,
                Some((EventType::Warning, "BackupFailed", why)),
            )
            .await?;
            ctx.metrics.on_demand.with_label_values(&["failed"]).inc();
            return Ok(Action::await_change());
        }
        Step::Take(vc, leader) => (vc, leader),
    };
    let destination = vc.spec.backup.as_ref().map(|b| b.destination.clone());
    let started = rfc3339(&now());
    let running = ValoriBackupStatus {
        phase: Some("Running".into()),
        destination: destination.clone(),
        pod: Some(leader.clone()),
        started: Some(started.clone()),
        ..ValoriBackupStatus::default()
    };
    write(&vb, &ctx, &running, None).await?;
    let material = observe::material(&vc, &ctx.client, &ns).await?;
    let nodes = observe::nodes_client(&ctx, &material)?;
    let node = NodeRef {
        name: leader.clone(),
        url: (ctx.urls)(&vc, &leader),
    };
    match nodes.create_backup(&node).await {
        Ok(b) => {
            let note = format!(
                "{leader} of {cluster} uploaded the snapshot at sequence number {} ({} bytes) to {}",
                b.seq,
                b.bytes,
                destination.as_deref().unwrap_or("?")
            );
            let done = ValoriBackupStatus {
                phase: Some("Completed".into()),
                message: None,
                seq: Some(b.seq),
                chain_hash: Some(b.chain_hash),
                state_hash: Some(b.state_hash),
                bytes: Some(b.bytes),
                finished: Some(b.finished),
                ..running
            };
            write(
                &vb,
                &ctx,
                &done,
                Some((EventType::Normal, "BackupTaken", note)),
            )
            .await?;
            ctx.metrics
                .on_demand
                .with_label_values(&["completed"])
                .inc();
            Ok(Action::await_change())
        }
        // A node that did not answer may answer soon; one that refused has said why.
        Err(e @ crate::failover::CallError::Unreachable(..)) => {
            tracing::warn!(error = %e, backup = %vb.name_any(), "leader unreachable");
            Ok(Action::requeue(REQUEUE_AFTER_ERROR))
        }
        Err(e) => {
            let why = format!("{leader} of {cluster}: {e}");
            let failed = ValoriBackupStatus {
                phase: Some("Failed".into()),
                message: Some(why.clone()),
                ..running
            };
            write(
                &vb,
                &ctx,
                &failed,
                Some((EventType::Warning, "BackupFailed", why)),
            )
            .await?;
            ctx.metrics.on_demand.with_label_values(&["failed"]).inc();
            Ok(Action::await_change())
        }
    }
}

/// Writes the status (server-side apply), then the Event, if any.
async fn write(
    vb: &ValoriBackup,
    ctx: &Context,
    st: &ValoriBackupStatus,
    event: Option<(EventType, &str, String)>,
) -> Result<(), Error> {
    let api: Api<ValoriBackup> =
        Api::namespaced(ctx.client.clone(), &vb.namespace().expect("namespaced"));
    api.patch_status(
        &vb.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "valori.dev/v1alpha1",
            "kind": "ValoriBackup",
            "status": st,
        })),
    )
    .await?;
    if let Some((type_, reason, note)) = event {
        tracing::info!(reason, %note, "event");
        let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
        let e = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Backup".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&e, &vb.object_ref(&())).await {
            tracing::warn!(error = %err, "could not publish an event");
        }
    }
    Ok(())
}

/// What to do after a failed pass: retry with a delay.
pub fn error_policy(_vb: Arc<ValoriBackup>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "backup reconcile failed");
    Action::requeue(REQUEUE_AFTER_ERROR)
}
