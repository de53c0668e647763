//! Bootstrapping a cluster from a backup (`spec.bootstrap.fromBackup`): before the StatefulSet
//! exists, the first pod's claim is created and a Job restores the backup into it; the
//! StatefulSet follows once the Job reports what it restored. [`crate::backup`] reads the
//! Job's end and decides when the restored pod may lead.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;

use super::observe::apply;
use super::{Context, Pass};
use crate::backup::{restore_outcome, RestoreOutcome};
use crate::crd::{RestoreStatus, ValoriCluster};
use crate::desired::{self, Names};
use crate::error::Error;
use crate::plan;

/// Where a restore stands for this pass.
pub(super) enum Restore {
    /// Nothing to restore, or restored: the cluster proceeds.
    Proceed,
    /// The Job runs: the StatefulSet waits.
    Running(String),
    /// The restore failed: the StatefulSet is not created; why.
    Failed(String),
}

/// Carries a pending restore one step: creates the first pod's claim and the Job, or reads the
/// Job's end into `status.restore` and the `Restored` condition. A cluster that ever had a
/// leader, or whose StatefulSet exists, is past its bootstrap.
pub(super) async fn restore(
    vc: &ValoriCluster,
    ctx: &Context,
    pass: &mut Pass,
) -> Result<Restore, Error> {
    let Some(from) = vc
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.from_backup.as_ref())
    else {
        return Ok(Restore::Proceed);
    };
    let restored = pass
        .status
        .restore
        .as_ref()
        .is_some_and(|r| r.phase == "Restored");
    if pass.status.epoch > 0 || restored {
        return Ok(Restore::Proceed);
    }
    let client = ctx.client.clone();
    let ns = pass.namespace.clone();
    let names = Names::of(vc);
    if Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get_opt(&names.cluster)
        .await?
        .is_some()
    {
        return Ok(Restore::Proceed);
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job_name = names.restore_job();
    let Some(job) = jobs.get_opt(&job_name).await? else {
        apply(
            &Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns),
            &desired::restore_claim(vc),
        )
        .await?;
        let job = desired::restore_job(vc).expect("fromBackup is set");
        apply(&jobs, &job).await?;
        let claim = names.claim(&names.pod(0));
        pass.event(
            EventType::Normal,
            "RestoreStarted",
            "Restore",
            format!(
                "restoring {} into {claim} with the Job {job_name}",
                from.destination
            ),
        );
        let why = format!("restoring {} into {claim}", from.destination);
        record(vc, pass, "Restoring", &from.destination, None, &why);
        return Ok(Restore::Running(why));
    };
    // The report is the termination message of the Job's newest pod.
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let job_pods = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await?
        .items;
    let message = job_pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        .and_then(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .cloned()
        })
        .and_then(|c| c.state?.terminated?.message);
    match restore_outcome(job.status.as_ref(), message.as_deref(), &from.destination) {
        RestoreOutcome::Running => {
            let why = format!(
                "restoring {} into {} (Job {job_name})",
                from.destination,
                names.claim(&names.pod(0))
            );
            record(vc, pass, "Restoring", &from.destination, None, &why);
            Ok(Restore::Running(why))
        }
        RestoreOutcome::Restored(st) => {
            let why = format!(
                "restored {} to sequence number {} (state hash {}); {} becomes the leader once it \
                 serves it",
                from.destination,
                st.seq.unwrap_or(0),
                st.state_hash.as_deref().unwrap_or("?"),
                names.pod(0)
            );
            pass.event(EventType::Normal, "Restored", "Restore", why.clone());
            ctx.metrics.restores.with_label_values(&["restored"]).inc();
            plan::set_condition(
                &mut pass.status.conditions,
                "Restored",
                true,
                "Restored",
                &why,
                vc.metadata.generation,
                &pass.now,
            );
            pass.status.restore = Some(st);
            Ok(Restore::Proceed)
        }
        RestoreOutcome::Failed(why) => {
            let before = pass.status.restore.as_ref().map(|r| r.phase.as_str());
            if before != Some("Failed") {
                ctx.metrics.restores.with_label_values(&["failed"]).inc();
                pass.event(
                    EventType::Warning,
                    "RestoreFailed",
                    "Restore",
                    format!("{job_name}: {why}"),
                );
            }
            let message =
                format!("{why} (fix the cause, then delete the Job {job_name} to restore again)");
            record(
                vc,
                pass,
                "Failed",
                &from.destination,
                Some(message.clone()),
                &message,
            );
            Ok(Restore::Failed(message))
        }
    }
}

/// Records a restore that has not succeeded (yet) in the status and the `Restored` condition.
fn record(
    vc: &ValoriCluster,
    pass: &mut Pass,
    phase: &str,
    destination: &str,
    message: Option<String>,
    why: &str,
) {
    pass.status.restore = Some(RestoreStatus {
        phase: phase.into(),
        destination: destination.into(),
        message,
        ..RestoreStatus::default()
    });
    plan::set_condition(
        &mut pass.status.conditions,
        "Restored",
        false,
        if phase == "Failed" {
            "RestoreFailed"
        } else {
            "Restoring"
        },
        why,
        vc.metadata.generation,
        &pass.now,
    );
}
