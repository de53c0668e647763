//! The status a pass reports, as a pure function of what it observed and did: the per-pod
//! rows, the counts, the phase and its reason, and the conditions; [`failed`], the status of a
//! pass that failed. The controller
//! computes it with [`next`] and writes it; nothing here does I/O.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::ValoriClusterStatus;
use crate::plan::{self, PodView};

/// What a pass knows when it reports.
pub struct Observed<'a> {
    /// The pods, with their nodes' answers.
    pub views: &'a [PodView],
    /// The pod that leads, if any.
    pub leader: Option<&'a str>,
    /// Each pod's chain hash at the cross-check's sequence number, from this pass.
    pub chains: &'a BTreeMap<String, String>,
    /// Each pod's state hash, from this pass.
    pub state_hashes: &'a BTreeMap<String, String>,
    /// Pods whose history differs from the leader's.
    pub diverged: &'a [String],
    /// The StatefulSet's current template revision, once it has observed it.
    pub update_revision: Option<&'a str>,
    /// What is in motion (a rollout step, a wait), if anything.
    pub progressing: Option<&'a str>,
    /// What is wrong with the leadership (a failover pending or waiting), if anything.
    pub degraded: Option<&'a str>,
    /// `spec.instances`.
    pub instances: u32,
    /// The generation of the spec this pass reconciled.
    pub generation: Option<i64>,
    /// The pass's clock.
    pub now: &'a Time,
    /// The label selector of the cluster's pods (the scale subresource's).
    pub selector: String,
}

/// The phase and its reason, the first that applies of: `Creating` (no leader ever),
/// `FailingOver`, `Diverged`, `Upgrading`, `Degraded` (pods not ready), `Healthy`. (A failed
/// pass reports `ReconcileFailed`, [`failed`]; a failed restore `RestoreFailed`.)
pub fn phase(o: &Observed<'_>, epoch: u64, ready: u32, all_ready: bool) -> (&'static str, String) {
    if o.leader.is_none() && epoch == 0 {
        (
            "Creating",
            o.progressing.unwrap_or("no leader yet").to_string(),
        )
    } else if let Some(d) = o.degraded {
        ("FailingOver", d.to_string())
    } else if !o.diverged.is_empty() {
        ("Diverged", format!("diverged: {}", o.diverged.join(", ")))
    } else if let Some(p) = o.progressing {
        ("Upgrading", p.to_string())
    } else if !all_ready {
        ("Degraded", format!("{ready} of {} pods ready", o.instances))
    } else {
        (
            "Healthy",
            "every pod is ready and agrees with the leader".into(),
        )
    }
}

/// The status after a pass: `st` as the pass left it (leader, epoch, timers, the last
/// cross-check) with everything derived from the observation filled in. Hashes of a pod that
/// this pass did not read are kept from the previous rows.
pub fn next(mut st: ValoriClusterStatus, o: &Observed<'_>) -> ValoriClusterStatus {
    let previous_rows = std::mem::take(&mut st.instances_status);
    let mut rows = plan::instance_rows(
        o.views,
        o.leader,
        o.chains,
        o.state_hashes,
        o.diverged,
        o.update_revision,
    );
    for r in &mut rows {
        let before = previous_rows.iter().find(|p| p.pod == r.pod);
        if r.state_hash.is_none() {
            r.state_hash = before.and_then(|p| p.state_hash.clone());
        }
        if r.chain_hash.is_none() {
            r.chain_hash = before.and_then(|p| p.chain_hash.clone());
        }
    }
    st.instances = o.views.len() as u32;
    st.ready_instances = o.views.iter().filter(|v| v.ready()).count() as u32;
    st.updated_instances = rows.iter().filter(|r| r.updated).count() as u32;
    st.update_revision = o.update_revision.map(str::to_string);
    st.selector = Some(o.selector.clone());
    st.instances_status = rows;
    st.observed_generation = o.generation;
    let want = o.instances;
    let all_ready = st.ready_instances == want && st.instances == want;
    let converged = o.diverged.is_empty() && st.last_cross_check.is_some();
    let (phase, reason) = phase(o, st.epoch, st.ready_instances, all_ready);
    st.phase = Some(phase.into());
    st.phase_reason = Some(reason.clone());
    let (gen, now) = (o.generation, o.now);
    let diverged = o.diverged;
    let c = &mut st.conditions;
    plan::set_condition(
        c,
        "Ready",
        all_ready && o.leader.is_some(),
        if all_ready { "AllReady" } else { "NotAllReady" },
        &format!(
            "{} of {want} pods ready; leader {}",
            st.ready_instances,
            o.leader.unwrap_or("none")
        ),
        gen,
        now,
    );
    plan::set_condition(
        c,
        "Progressing",
        o.progressing.is_some(),
        if o.progressing.is_some() {
            "Progressing"
        } else {
            "Stable"
        },
        o.progressing.unwrap_or("nothing to roll out"),
        gen,
        now,
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
        now,
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
        now,
    );
    let degraded = o.degraded.is_some() || (!all_ready && st.epoch > 0);
    plan::set_condition(
        c,
        "Degraded",
        degraded,
        if degraded { "Degraded" } else { "Healthy" },
        o.degraded.unwrap_or(&reason),
        gen,
        now,
    );
    plan::set_condition(
        c,
        "Reconciled",
        true,
        "Reconciled",
        "the last pass succeeded",
        gen,
        now,
    );
    st
}

/// The status after a failed pass: the last one's, with phase `ReconcileFailed`, the error as
/// its reason, and the `Reconciled` condition False (its reason the error's kind); and whether
/// the condition just turned False. `None` for an error that is no failure (a pass that lost a
/// race to a newer one).
pub fn failed(
    st: Option<ValoriClusterStatus>,
    e: &crate::Error,
    generation: Option<i64>,
    now: &Time,
) -> Option<(ValoriClusterStatus, bool)> {
    let reason = match e {
        crate::Error::Superseded(_) => return None,
        crate::Error::Invalid(_) => "InvalidSpec",
        crate::Error::Kube(_) => "KubernetesError",
        crate::Error::Node(_) => "NodeError",
    };
    let mut st = st.unwrap_or_default();
    let message = e.to_string();
    st.phase = Some("ReconcileFailed".into());
    st.phase_reason = Some(message.clone());
    let transition = plan::set_condition(
        &mut st.conditions,
        "Reconciled",
        false,
        reason,
        &message,
        generation,
        now,
    );
    Some((st, transition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::InstanceStatus;
    use valori_api as api;

    fn pod(ordinal: u32, role: api::Role, seq: u64, ready: bool) -> PodView {
        PodView {
            name: format!("vc-{ordinal}"),
            ordinal,
            revision: Some("r1".into()),
            pod_ready: ready,
            terminating: false,
            node: Some(api::RoleInfo {
                role,
                epoch: 1,
                leader_url: None,
                seq,
                seen_epoch: 1,
                writable: role == api::Role::Leader,
                last_epoch: 0,
                diverged: false,
                heal: true,
            }),
        }
    }

    fn three(ready: bool) -> Vec<PodView> {
        vec![
            pod(0, api::Role::Leader, 10, true),
            pod(1, api::Role::Follower, 10, ready),
            pod(2, api::Role::Follower, 9, true),
        ]
    }

    struct Case<'a> {
        views: &'a [PodView],
        leader: Option<&'a str>,
        diverged: &'a [String],
        progressing: Option<&'a str>,
        degraded: Option<&'a str>,
    }

    fn check(case: Case<'_>, st: ValoriClusterStatus) -> ValoriClusterStatus {
        let empty = BTreeMap::new();
        let now = Time(jiff::Timestamp::from_second(1_000).unwrap());
        next(
            st,
            &Observed {
                views: case.views,
                leader: case.leader,
                chains: &empty,
                state_hashes: &empty,
                diverged: case.diverged,
                update_revision: Some("r1"),
                progressing: case.progressing,
                degraded: case.degraded,
                instances: 3,
                generation: Some(4),
                now: &now,
                selector: "app=vc".into(),
            },
        )
    }

    fn condition(st: &ValoriClusterStatus, t: &str) -> (String, String) {
        let c = st.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    fn led(epoch: u64) -> ValoriClusterStatus {
        ValoriClusterStatus {
            epoch,
            current_leader: Some("vc-0".into()),
            last_cross_check: Some("1970-01-01T00:16:00Z".into()),
            last_cross_check_seq: Some(9),
            ..Default::default()
        }
    }

    #[test]
    fn the_phase_is_the_first_that_applies() {
        let views = three(true);
        let base = || Case {
            views: &views,
            leader: Some("vc-0"),
            diverged: &[],
            progressing: None,
            degraded: None,
        };
        let phase_of = |c: Case<'_>, st| check(c, st).phase.unwrap();
        assert_eq!(phase_of(base(), led(1)), "Healthy");
        assert_eq!(
            phase_of(
                Case {
                    leader: None,
                    ..base()
                },
                ValoriClusterStatus::default()
            ),
            "Creating"
        );
        let diverged = vec!["vc-2".to_string()];
        assert_eq!(
            phase_of(
                Case {
                    diverged: &diverged,
                    progressing: Some("rolling out"),
                    ..base()
                },
                led(1)
            ),
            "Diverged"
        );
        assert_eq!(
            phase_of(
                Case {
                    degraded: Some("failover in 5s"),
                    diverged: &diverged,
                    ..base()
                },
                led(1)
            ),
            "FailingOver"
        );
        assert_eq!(
            phase_of(
                Case {
                    progressing: Some("rolling out: vc-2"),
                    ..base()
                },
                led(1)
            ),
            "Upgrading"
        );
        let unready = three(false);
        let st = check(
            Case {
                views: &unready,
                ..base()
            },
            led(1),
        );
        assert_eq!(st.phase.as_deref(), Some("Degraded"));
        assert_eq!(st.phase_reason.as_deref(), Some("2 of 3 pods ready"));
    }

    #[test]
    fn conditions_follow_the_observation() {
        let views = three(true);
        let st = check(
            Case {
                views: &views,
                leader: Some("vc-0"),
                diverged: &[],
                progressing: None,
                degraded: None,
            },
            led(1),
        );
        assert_eq!(condition(&st, "Ready"), ("True".into(), "AllReady".into()));
        assert_eq!(
            condition(&st, "Progressing"),
            ("False".into(), "Stable".into())
        );
        assert_eq!(
            condition(&st, "Converged"),
            ("True".into(), "ChainsAgree".into())
        );
        assert_eq!(
            condition(&st, "Degraded"),
            ("False".into(), "Healthy".into())
        );
        assert_eq!(
            (st.instances, st.ready_instances, st.updated_instances),
            (3, 3, 3)
        );
        assert_eq!(st.observed_generation, Some(4));

        // Never cross-checked: not converged, but not diverged either.
        let st = check(
            Case {
                views: &views,
                leader: Some("vc-0"),
                diverged: &[],
                progressing: None,
                degraded: None,
            },
            ValoriClusterStatus {
                epoch: 1,
                ..Default::default()
            },
        );
        assert_eq!(
            condition(&st, "Converged"),
            ("False".into(), "NotChecked".into())
        );
        assert_eq!(
            condition(&st, "Diverged"),
            ("False".into(), "ChainsAgree".into())
        );

        // A leader lost: degraded with the failover's reason, not ready without a leader.
        let st = check(
            Case {
                views: &views,
                leader: None,
                diverged: &[],
                progressing: None,
                degraded: Some("the leader vc-0 is unready; failover in 9s"),
            },
            led(1),
        );
        assert_eq!(condition(&st, "Ready").0, "False");
        let d = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(d.status, "True");
        assert!(d.message.contains("failover in 9s"), "{}", d.message);
    }

    #[test]
    fn hashes_not_read_this_pass_are_kept() {
        let views = three(true);
        let previous = ValoriClusterStatus {
            instances_status: vec![InstanceStatus {
                pod: "vc-1".into(),
                chain_hash: Some("c1".into()),
                state_hash: Some("s1".into()),
                ..Default::default()
            }],
            ..led(1)
        };
        let st = check(
            Case {
                views: &views,
                leader: Some("vc-0"),
                diverged: &[],
                progressing: None,
                degraded: None,
            },
            previous,
        );
        let row = st
            .instances_status
            .iter()
            .find(|r| r.pod == "vc-1")
            .unwrap();
        assert_eq!(row.chain_hash.as_deref(), Some("c1"));
        assert_eq!(row.state_hash.as_deref(), Some("s1"));
        assert_eq!(st.instances_status[0].pod, "vc-0", "rows in ordinal order");
    }

    #[test]
    fn a_failed_pass_shows_in_the_phase_and_the_reconciled_condition() {
        let now = Time(jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let healthy = ValoriClusterStatus {
            phase: Some("Healthy".into()),
            epoch: 2,
            ..ValoriClusterStatus::default()
        };
        let e = crate::Error::Invalid("the Secret keys does not exist".into());
        let (st, turned) = failed(Some(healthy), &e, Some(3), &now).unwrap();
        assert!(turned);
        assert_eq!(st.phase.as_deref(), Some("ReconcileFailed"));
        assert!(st
            .phase_reason
            .as_deref()
            .unwrap()
            .contains("keys does not exist"));
        assert_eq!(st.epoch, 2, "the rest of the status stays");
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciled")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("False", "InvalidSpec", Some(3))
        );
        // Failing again: no new transition (one Event, not one per pass).
        let (_, again) = failed(Some(st.clone()), &e, Some(3), &now).unwrap();
        assert!(!again);
        // Losing a race to a newer pass is no failure.
        assert!(failed(Some(st), &crate::Error::Superseded("x".into()), None, &now).is_none());
    }
}
