//! The reconcile loop's decisions, as pure functions of what it observed: which pod leads,
//! which roles to give, which pod a rollout restarts next, whether the pods' histories agree,
//! and the status to report. The controller ([`crate::controller`]) gathers the observations
//! and carries the decisions out; everything that decides is here and tested without a
//! cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use valori_api as api;

use crate::crd::{InstanceStatus, LeaderUpdate};
use crate::limits::CAUGHT_UP_EVENTS;

/// One pod as the controller observed it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// Its StatefulSet ordinal.
    pub ordinal: u32,
    /// Its template revision (`controller-revision-hash`).
    pub revision: Option<String>,
    /// The kubelet's Ready condition.
    pub pod_ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// What its node answered on `GET /v1/role`; `None` when it did not answer.
    pub node: Option<api::RoleInfo>,
}

impl PodView {
    /// Ready as the operator counts it: the kubelet says so and the node answers.
    pub fn ready(&self) -> bool {
        self.pod_ready && !self.terminating && self.node.is_some()
    }

    fn seq(&self) -> u64 {
        self.node.as_ref().map_or(0, |n| n.seq)
    }
}

/// Who leads, as far as the controller can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// A fresh cluster: no pod has ever been given a role by the operator. Promote this pod
    /// with this epoch.
    Bootstrap {
        /// The pod.
        pod: String,
        /// The epoch.
        epoch: u64,
    },
    /// This pod leads at this epoch and takes writes.
    Healthy {
        /// The pod.
        pod: String,
        /// Its epoch.
        epoch: u64,
    },
    /// The leader the status names does not answer or is not ready (or no pod leads).
    Lost {
        /// The leader the status names, if any.
        pod: Option<String>,
        /// The highest epoch known.
        epoch: u64,
    },
    /// Nothing answers yet.
    Unknown,
}

/// Decides who leads from the pods' answers and the leader and epoch in the status. A pod that
/// reports a writable leader role at the highest epoch leads (a stale leader at a lower epoch
/// does not). When none does and the operator never gave roles (epoch 0 in the status and no
/// node heard of an epoch above the flags' 1), the cluster is new: the answering pod with the
/// highest sequence number (the lowest ordinal on a tie) is promoted with epoch 2, the first
/// above the epoch 1 every node starts with.
pub fn leadership(pods: &[PodView], status_leader: Option<&str>, status_epoch: u64) -> Leadership {
    let known_epoch = pods
        .iter()
        .filter_map(|p| p.node.as_ref())
        .map(|n| n.seen_epoch.max(n.epoch))
        .max()
        .unwrap_or(0)
        .max(status_epoch);
    let leader = pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| p.node.as_ref().map(|n| (p, n)))
        .filter(|(_, n)| n.role == api::Role::Leader && n.writable && n.epoch >= status_epoch)
        .max_by_key(|(p, n)| (n.epoch, std::cmp::Reverse(p.ordinal)));
    if let Some((p, n)) = leader {
        if p.pod_ready {
            return Leadership::Healthy {
                pod: p.name.clone(),
                epoch: n.epoch,
            };
        }
        return Leadership::Lost {
            pod: Some(p.name.clone()),
            epoch: known_epoch,
        };
    }
    if status_epoch == 0 && known_epoch <= 1 {
        let first = pods
            .iter()
            .filter(|p| !p.terminating && p.node.is_some())
            .max_by_key(|p| (p.seq(), std::cmp::Reverse(p.ordinal)));
        return match first {
            Some(p) => Leadership::Bootstrap {
                pod: p.name.clone(),
                epoch: 2,
            },
            None => Leadership::Unknown,
        };
    }
    Leadership::Lost {
        pod: status_leader.map(str::to_string),
        epoch: known_epoch,
    }
}

/// Whether the failover delay has passed since the leader was first seen unready (seconds
/// since the epoch of both).
pub fn failover_due(unready_since: i64, now: i64, delay_seconds: u32) -> bool {
    now.saturating_sub(unready_since) >= i64::from(delay_seconds)
}

/// The role every pod but the leader must have: a follower of the leader, assigned through the
/// role API at the leader's `epoch`. Returns the pods whose assignment is older (a former
/// leader, a new pod that follows by its flags, a follower of an older epoch), even when they
/// already follow the right URL: an assignment from the role API is what makes a follower
/// refuse older leaders and heal by itself. A pod whose assignment is already at `epoch` or
/// later is left alone: the node would refuse the same epoch with another leader, and a later
/// epoch is not the controller's to undo.
pub fn to_repoint(pods: &[PodView], leader: &str, epoch: u64) -> Vec<String> {
    pods.iter()
        .filter(|p| p.name != leader && !p.terminating)
        .filter_map(|p| p.node.as_ref().map(|n| (p, n)))
        .filter(|(_, n)| n.epoch < epoch)
        .map(|(p, _)| p.name.clone())
        .collect()
}

/// The role label a pod should carry: `leader` on the leader the operator chose, `follower` on
/// every other pod that answers (a returning old leader is about to be pointed at the new one
/// and must not look like a leader meanwhile); without a chosen leader, what the node reports.
/// Nothing when the pod did not answer.
pub fn role_label(p: &PodView, leader: Option<&str>) -> Option<&'static str> {
    if leader == Some(p.name.as_str()) {
        return Some("leader");
    }
    p.node.as_ref().map(|n| match (leader, n.role) {
        (None, api::Role::Leader) if n.writable => "leader",
        _ => "follower",
    })
}

/// The next step of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the current template.
    Done,
    /// Not now, for this reason.
    Wait(String),
    /// Delete this pod so that the StatefulSet recreates it from the current template.
    Restart(String),
    /// Make this follower the leader first (the old leader becomes a follower and is restarted
    /// by a later step).
    Switchover(String),
}

/// The next step of rolling the pods onto `update_revision`: followers first, one at a time,
/// highest ordinal first, each only once every pod is ready and every follower caught up
/// (within [`CAUGHT_UP_EVENTS`]); then the leader, by switchover to the most advanced
/// follower, or by restart (also when it has no follower to hand over to).
/// When a scale-down would remove the leader's ordinal: the follower to hand the leadership
/// to first (the most advanced one that stays, ready; the lowest ordinal on a tie), or why it
/// must wait. `None` when the leader stays.
pub fn leader_move(pods: &[PodView], leader: &str, instances: u32) -> Option<Step> {
    let leads = pods.iter().find(|p| p.name == leader)?;
    if leads.ordinal < instances {
        return None;
    }
    let best = pods
        .iter()
        .filter(|p| p.ordinal < instances && p.ready() && !p.terminating)
        .max_by_key(|p| (p.seq(), std::cmp::Reverse(p.ordinal)));
    Some(match best {
        Some(p) => Step::Switchover(p.name.clone()),
        None => Step::Wait(format!(
            "{leader} leads and the scale-down removes it, but no remaining pod is ready to take over"
        )),
    })
}

/// When the leader's node is cordoned (a drain): the follower to hand the leadership to first
/// (the most advanced ready one, not on a cordoned node itself; the lowest ordinal on a tie),
/// or why it must wait. `cordoned` names the pods whose node is cordoned.
pub fn drain_move(pods: &[PodView], leader: &str, cordoned: &[String]) -> Option<Step> {
    if !cordoned.iter().any(|p| p == leader) {
        return None;
    }
    let best = pods
        .iter()
        .filter(|p| p.name != leader && p.ready() && !p.terminating && !cordoned.contains(&p.name))
        .max_by_key(|p| (p.seq(), std::cmp::Reverse(p.ordinal)));
    Some(match best {
        Some(p) => Step::Switchover(p.name.clone()),
        None => Step::Wait(format!(
            "{leader}'s node is cordoned, but no follower on another node is ready to take over"
        )),
    })
}

/// A switchover asked for by hand (`valori.dev/switchover-to`): `None` once `target` leads;
/// `Err` when it can never happen (no such pod); otherwise the step, or why it waits.
pub fn manual_move(pods: &[PodView], leader: &str, target: &str) -> Option<Result<Step, String>> {
    if target == leader {
        return None;
    }
    let Some(p) = pods.iter().find(|p| p.name == target) else {
        return Some(Err(format!("{target} is not a pod of this cluster")));
    };
    Some(Ok(if p.ready() && !p.terminating {
        Step::Switchover(target.to_string())
    } else {
        Step::Wait(format!("the switchover to {target} waits: it is not ready"))
    }))
}

pub fn rollout_step(
    pods: &[PodView],
    update_revision: Option<&str>,
    leader: Option<&str>,
    how: LeaderUpdate,
) -> Step {
    let Some(target) = update_revision else {
        return Step::Wait("the StatefulSet has not reported its revision yet".into());
    };
    let outdated: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.revision.as_deref() != Some(target))
        .collect();
    if outdated.is_empty() {
        return Step::Done;
    }
    if let Some(p) = pods.iter().find(|p| !p.ready()) {
        return Step::Wait(format!("{} is not ready", p.name));
    }
    let Some(leader) = leader else {
        return Step::Wait("no leader".into());
    };
    let leader_seq = pods
        .iter()
        .find(|p| p.name == leader)
        .map_or(0, PodView::seq);
    if let Some(p) = pods
        .iter()
        .find(|p| p.name != leader && leader_seq.saturating_sub(p.seq()) > CAUGHT_UP_EVENTS)
    {
        return Step::Wait(format!(
            "{} is {} events behind the leader",
            p.name,
            leader_seq - p.seq()
        ));
    }
    if let Some(p) = outdated
        .iter()
        .filter(|p| p.name != leader)
        .max_by_key(|p| p.ordinal)
    {
        return Step::Restart(p.name.clone());
    }
    // Only the leader is left.
    let best = pods
        .iter()
        .filter(|p| p.name != leader)
        .max_by_key(|p| (p.seq(), std::cmp::Reverse(p.ordinal)));
    match (how, best) {
        (LeaderUpdate::Switchover, Some(f)) => Step::Switchover(f.name.clone()),
        _ => Step::Restart(leader.to_string()),
    }
}

/// A cross-check's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The sequence number compared at.
    pub seq: u64,
    /// Pods whose chain hash there differs from the leader's.
    pub diverged: Vec<String>,
}

/// The sequence number the pods are compared at: the lowest that every pod holding history
/// has reached (pods still empty hold nothing to compare); 0 when every answering pod is
/// empty (they agree: there is nothing yet); `None` when no pod answers.
pub fn common_seq(pods: &[PodView]) -> Option<u64> {
    let seqs: Vec<u64> = pods
        .iter()
        .filter_map(|p| p.node.as_ref().map(|n| n.seq))
        .collect();
    if seqs.is_empty() {
        return None;
    }
    Some(seqs.into_iter().filter(|&s| s > 0).min().unwrap_or(0))
}

/// Compares the chain hashes the pods gave at the common sequence number with the leader's.
/// Pods that gave none (not answering) are neither converged nor diverged.
pub fn cross_check(seq: u64, leader_chain: &str, chains: &BTreeMap<String, String>) -> Verdict {
    Verdict {
        seq,
        diverged: chains
            .iter()
            .filter(|(_, c)| c.as_str() != leader_chain)
            .map(|(p, _)| p.clone())
            .collect(),
    }
}

/// Sets condition `type_` in `conds`, keeping its transition time when its status did not
/// change. Returns whether the status changed.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = if status { "True" } else { "False" }.to_string();
    let new = |last: Time| Condition {
        type_: type_.into(),
        status: status.clone(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    };
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => {
            *c = new(c.last_transition_time.clone());
            false
        }
        Some(c) => {
            *c = new(now.clone());
            true
        }
        None => {
            conds.push(new(now.clone()));
            true
        }
    }
}

/// Per-instance status rows, in ordinal order.
pub fn instance_rows(
    pods: &[PodView],
    leader: Option<&str>,
    chains: &BTreeMap<String, String>,
    state_hashes: &BTreeMap<String, String>,
    diverged: &[String],
    update_revision: Option<&str>,
) -> Vec<InstanceStatus> {
    let leader_seq = leader
        .and_then(|l| pods.iter().find(|p| p.name == l))
        .map_or(0, PodView::seq);
    let mut rows: Vec<(u32, InstanceStatus)> = pods
        .iter()
        .map(|p| {
            (
                p.ordinal,
                InstanceStatus {
                    pod: p.name.clone(),
                    role: role_label(p, leader).map(str::to_string),
                    ready: p.ready(),
                    seq: p.seq(),
                    chain_hash: chains.get(&p.name).filter(|c| !c.is_empty()).cloned(),
                    state_hash: state_hashes.get(&p.name).cloned(),
                    lag: leader_seq.saturating_sub(p.seq()),
                    converged: p.node.is_some() && !diverged.contains(&p.name),
                    updated: update_revision.is_some() && p.revision.as_deref() == update_revision,
                },
            )
        })
        .collect();
    rows.sort_by_key(|(o, _)| *o);
    rows.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: api::Role, epoch: u64, seen: u64, seq: u64, url: Option<&str>) -> api::RoleInfo {
        api::RoleInfo {
            role,
            epoch,
            leader_url: url.map(str::to_string),
            seq,
            seen_epoch: seen,
            writable: role == api::Role::Leader && epoch >= seen,
            last_epoch: 0,
            diverged: false,
            heal: true,
        }
    }

    fn pod(ordinal: u32, node: Option<api::RoleInfo>) -> PodView {
        PodView {
            name: format!("vc-{ordinal}"),
            ordinal,
            revision: Some("r1".into()),
            pod_ready: true,
            terminating: false,
            node,
        }
    }

    fn leader(ordinal: u32, epoch: u64, seq: u64) -> PodView {
        pod(
            ordinal,
            Some(node(api::Role::Leader, epoch, epoch, seq, None)),
        )
    }

    fn follower(ordinal: u32, epoch: u64, seq: u64, url: &str) -> PodView {
        pod(
            ordinal,
            Some(node(api::Role::Follower, epoch, epoch, seq, Some(url))),
        )
    }

    fn fresh(ordinal: u32) -> PodView {
        follower(ordinal, 1, 0, "http://vc-rw:3000")
    }

    #[test]
    fn a_new_cluster_promotes_its_first_pod_with_epoch_two() {
        let pods = [fresh(1), fresh(0), fresh(2)];
        assert_eq!(
            leadership(&pods, None, 0),
            Leadership::Bootstrap {
                pod: "vc-0".into(),
                epoch: 2
            }
        );
        // Old claims with data: the pod that holds the most is the first leader.
        let pods = [fresh(0), follower(1, 1, 40, "http://vc-rw:3000"), fresh(2)];
        assert_eq!(
            leadership(&pods, None, 0),
            Leadership::Bootstrap {
                pod: "vc-1".into(),
                epoch: 2
            }
        );
        // Nothing answers yet.
        assert_eq!(leadership(&[pod(0, None)], None, 0), Leadership::Unknown);
        // A cluster the operator already ran is never bootstrapped again, even if the status
        // was lost: the nodes remember their epochs.
        let pods = [follower(0, 3, 3, "http://x"), pod(1, None)];
        assert_eq!(
            leadership(&pods, None, 0),
            Leadership::Lost {
                pod: None,
                epoch: 3
            }
        );
    }

    #[test]
    fn the_writable_leader_at_the_highest_epoch_leads() {
        let pods = [leader(0, 2, 10), follower(1, 2, 10, "http://vc-0")];
        assert_eq!(
            leadership(&pods, Some("vc-0"), 2),
            Leadership::Healthy {
                pod: "vc-0".into(),
                epoch: 2
            }
        );
        // A returning old leader at epoch 2 does not lead over the leader at 3.
        let pods = [leader(0, 2, 12), leader(1, 3, 10)];
        assert_eq!(
            leadership(&pods, Some("vc-1"), 3),
            Leadership::Healthy {
                pod: "vc-1".into(),
                epoch: 3
            }
        );
        // A fenced leader (it heard of a newer epoch) is not writable and does not lead.
        let fenced = pod(0, Some(node(api::Role::Leader, 2, 3, 12, None)));
        assert_eq!(
            leadership(&[fenced], Some("vc-1"), 3),
            Leadership::Lost {
                pod: Some("vc-1".into()),
                epoch: 3
            }
        );
    }

    #[test]
    fn a_leader_that_does_not_answer_or_is_not_ready_is_lost() {
        let pods = [pod(0, None), follower(1, 2, 10, "http://vc-0")];
        assert_eq!(
            leadership(&pods, Some("vc-0"), 2),
            Leadership::Lost {
                pod: Some("vc-0".into()),
                epoch: 2
            }
        );
        let mut l = leader(0, 2, 10);
        l.pod_ready = false;
        assert_eq!(
            leadership(&[l], Some("vc-0"), 2),
            Leadership::Lost {
                pod: Some("vc-0".into()),
                epoch: 2
            }
        );
        assert!(!failover_due(100, 129, 30));
        assert!(failover_due(100, 130, 30));
        assert!(failover_due(100, 100, 0));
    }

    #[test]
    fn everyone_but_the_leader_follows_it_at_its_epoch() {
        let url = "http://vc-1.vc-nodes.ns.svc:3000";
        let pods = [
            // The old leader, back at its old epoch.
            leader(0, 2, 12),
            leader(1, 3, 10),
            // Already following.
            follower(2, 3, 10, url),
            // A new pod from a scale-up.
            fresh(3),
            // Still following the old leader.
            follower(4, 2, 9, "http://vc-0.vc-nodes.ns.svc:3000"),
            // Not answering: nothing to send.
            pod(5, None),
            // Told by someone at a later epoch: not ours to undo.
            follower(6, 4, 10, "http://elsewhere"),
            // The right leader, but by its flags or an older assignment.
            follower(7, 2, 10, url),
        ];
        assert_eq!(
            to_repoint(&pods, "vc-1", 3),
            ["vc-0", "vc-3", "vc-4", "vc-7"]
        );
        assert_eq!(role_label(&pods[0], Some("vc-1")), Some("follower"));
        assert_eq!(role_label(&pods[1], Some("vc-1")), Some("leader"));
        assert_eq!(role_label(&pods[5], Some("vc-1")), None);
    }

    fn at(mut p: PodView, rev: &str) -> PodView {
        p.revision = Some(rev.into());
        p
    }

    #[test]
    fn a_rollout_restarts_followers_one_at_a_time_then_switches_the_leader_over() {
        let u = "vc-0-url";
        let pods = vec![
            at(leader(0, 2, 100), "old"),
            at(follower(1, 2, 100, u), "old"),
            at(follower(2, 2, 99, u), "old"),
        ];
        let step = |pods: &[PodView], how| rollout_step(pods, Some("new"), Some("vc-0"), how);
        // Highest ordinal first.
        assert_eq!(
            step(&pods, LeaderUpdate::Switchover),
            Step::Restart("vc-2".into())
        );
        // While it is down (or not ready), nothing else moves.
        let mut p = pods.clone();
        p[2] = at(pod(2, None), "new");
        assert_eq!(
            step(&p, LeaderUpdate::Switchover),
            Step::Wait("vc-2 is not ready".into())
        );
        // Back and a little behind: close enough to go on.
        p[2] = at(follower(2, 2, 10, u), "new");
        assert_eq!(
            step(&p, LeaderUpdate::Switchover),
            Step::Restart("vc-1".into())
        );
        // Far behind: wait until it catches up.
        p[0] = at(leader(0, 2, 5000), "old");
        p[1] = at(follower(1, 2, 5000, u), "old");
        assert_eq!(
            step(&p, LeaderUpdate::Switchover),
            Step::Wait("vc-2 is 4990 events behind the leader".into())
        );
        p[2] = at(follower(2, 2, 4990, u), "new");
        assert_eq!(
            step(&p, LeaderUpdate::Switchover),
            Step::Restart("vc-1".into())
        );
        p[1] = at(follower(1, 2, 5000, u), "new");
        // Only the leader is left: switch over to the most advanced follower...
        assert_eq!(
            step(&p, LeaderUpdate::Switchover),
            Step::Switchover("vc-1".into())
        );
        // ...or restart it in place when the spec says so.
        assert_eq!(
            step(&p, LeaderUpdate::Restart),
            Step::Restart("vc-0".into())
        );
        p[0] = at(leader(0, 2, 5000), "new");
        assert_eq!(step(&p, LeaderUpdate::Switchover), Step::Done);
    }

    #[test]
    fn a_single_pod_cluster_restarts_its_leader_and_unknown_revisions_wait() {
        let pods = [at(leader(0, 2, 1), "old")];
        assert_eq!(
            rollout_step(&pods, Some("new"), Some("vc-0"), LeaderUpdate::Switchover),
            Step::Restart("vc-0".into())
        );
        assert!(matches!(
            rollout_step(&pods, None, Some("vc-0"), LeaderUpdate::Switchover),
            Step::Wait(_)
        ));
        assert_eq!(
            rollout_step(&pods, Some("old"), Some("vc-0"), LeaderUpdate::Switchover),
            Step::Done
        );
        assert_eq!(
            rollout_step(&pods, Some("new"), None, LeaderUpdate::Switchover),
            Step::Wait("no leader".into())
        );
    }

    #[test]
    fn cross_checks_compare_at_the_lowest_nonempty_sequence_number() {
        let pods = [
            leader(0, 2, 50),
            follower(1, 2, 40, "u"),
            fresh(2),
            pod(3, None),
        ];
        assert_eq!(common_seq(&pods), Some(40));
        assert_eq!(common_seq(&[fresh(0), fresh(1)]), Some(0));
        assert_eq!(common_seq(&[pod(0, None)]), None);
        let chains = BTreeMap::from([
            ("vc-0".to_string(), "aa".to_string()),
            ("vc-1".to_string(), "bb".to_string()),
            ("vc-2".to_string(), "aa".to_string()),
        ]);
        assert_eq!(
            cross_check(40, "aa", &chains),
            Verdict {
                seq: 40,
                diverged: vec!["vc-1".into()]
            }
        );
        let rows = instance_rows(
            &pods,
            Some("vc-0"),
            &chains,
            &BTreeMap::new(),
            &["vc-1".into()],
            Some("r1"),
        );
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.pod.as_str(),
                    r.role.as_deref(),
                    r.lag,
                    r.converged,
                    r.ready,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("vc-0", Some("leader"), 0, true, true),
                ("vc-1", Some("follower"), 10, false, true),
                ("vc-2", Some("follower"), 50, true, true),
                ("vc-3", None, 50, false, false),
            ]
        );
        assert!(rows.iter().all(|r| r.updated));
    }

    #[test]
    fn conditions_keep_their_transition_time_until_their_status_changes() {
        let t = |s: i64| Time(jiff::Timestamp::from_second(s).unwrap());
        let mut c = Vec::new();
        assert!(set_condition(
            &mut c,
            "Ready",
            false,
            "Creating",
            "",
            Some(1),
            &t(10)
        ));
        assert!(!set_condition(
            &mut c,
            "Ready",
            false,
            "Waiting",
            "x",
            Some(2),
            &t(20)
        ));
        assert_eq!(c[0].last_transition_time, t(10));
        assert_eq!(
            (c[0].reason.as_str(), c[0].observed_generation),
            ("Waiting", Some(2))
        );
        assert!(set_condition(
            &mut c,
            "Ready",
            true,
            "Healthy",
            "",
            Some(2),
            &t(30)
        ));
        assert_eq!(c[0].last_transition_time, t(30));
        assert!(set_condition(
            &mut c,
            "Converged",
            true,
            "Agree",
            "",
            Some(2),
            &t(30)
        ));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_scale_down_moves_the_leadership_off_the_ordinals_it_removes() {
        let pods = [
            follower(0, 2, 40, "http://x"),
            follower(1, 2, 50, "http://x"),
            leader(2, 2, 50),
        ];
        // Three stay: nothing to move.
        assert_eq!(leader_move(&pods, "vc-2", 3), None);
        // Two stay: the leader hands over to the most advanced that stays.
        assert_eq!(
            leader_move(&pods, "vc-2", 2),
            Some(Step::Switchover("vc-1".into()))
        );
        let mut unready = pods.clone();
        unready[0].pod_ready = false;
        unready[1].pod_ready = false;
        assert!(matches!(
            leader_move(&unready, "vc-2", 2),
            Some(Step::Wait(_))
        ));
    }

    #[test]
    fn a_cordoned_leader_hands_over_to_a_follower_elsewhere() {
        let u = "http://vc-rw:3000";
        let pods = [
            leader(0, 2, 50),
            follower(1, 2, 49, u),
            follower(2, 2, 50, u),
        ];
        let none: Vec<String> = Vec::new();
        assert_eq!(drain_move(&pods, "vc-0", &none), None);
        // Only followers cordoned: nothing to move.
        assert_eq!(drain_move(&pods, "vc-0", &["vc-1".to_string()]), None);
        // The leader's node cordoned: the most advanced follower not cordoned itself.
        assert_eq!(
            drain_move(&pods, "vc-0", &["vc-0".to_string()]),
            Some(Step::Switchover("vc-2".into()))
        );
        assert_eq!(
            drain_move(&pods, "vc-0", &["vc-0".to_string(), "vc-2".to_string()]),
            Some(Step::Switchover("vc-1".into()))
        );
        // Nobody to take over: wait, and say why.
        let alone = [leader(0, 2, 50)];
        assert!(matches!(
            drain_move(&alone, "vc-0", &["vc-0".to_string()]),
            Some(Step::Wait(w)) if w.contains("cordoned")
        ));
    }

    #[test]
    fn a_switchover_by_hand_goes_to_a_ready_follower_only() {
        let u = "http://vc-rw:3000";
        let mut pods = vec![leader(0, 2, 5), follower(1, 2, 5, u), follower(2, 2, 5, u)];
        assert_eq!(manual_move(&pods, "vc-0", "vc-0"), None);
        assert_eq!(
            manual_move(&pods, "vc-0", "vc-2"),
            Some(Ok(Step::Switchover("vc-2".into())))
        );
        assert!(
            matches!(manual_move(&pods, "vc-0", "vc-9"), Some(Err(e)) if e.contains("not a pod"))
        );
        pods[2].pod_ready = false;
        assert!(matches!(
            manual_move(&pods, "vc-0", "vc-2"),
            Some(Ok(Step::Wait(w))) if w.contains("not ready")
        ));
    }
}
