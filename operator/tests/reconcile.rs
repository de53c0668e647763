//! Reconcile scenarios: the operator's real reconcile function against a mocked API server
//! (this machine has no Kubernetes), with every pod a real `valori-node` process on
//! 127.0.0.1 (see `common/cluster.rs` for what plays the StatefulSet controller and kubelet).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use valori_operator::controller;

mod common;
use common::cluster::{Cluster, NS};

fn condition(st: &valori_operator::crd::ValoriClusterStatus, type_: &str) -> Option<String> {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn healthy(st: &valori_operator::crd::ValoriClusterStatus, n: u32) -> bool {
    st.phase.as_deref() == Some("Healthy")
        && st.ready_instances == n
        && condition(st, "Converged").as_deref() == Some("True")
        && st
            .instances_status
            .iter()
            .all(|r| r.converged && r.lag == 0)
}

fn selector_pod(c: &Cluster, svc: &str) -> String {
    let s = c.api.get(&c.service_path(svc)).expect("the Service exists");
    s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"]
        .as_str()
        .unwrap()
        .to_string()
}

const THREE: &str = r#"
instances: 3
crossCheck: {intervalSeconds: 1, heal: true}
failover: {delaySeconds: 1, leaderUpdate: Switchover}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_is_created_bootstrapped_and_converges() {
    let c = Cluster::new("mem", THREE);
    c.step().await.unwrap();
    // Everything it owns was applied server-side by one field manager, owned by the cluster.
    let applied: Vec<String> = c
        .api
        .calls()
        .iter()
        .filter(|x| x.method == "PATCH" && x.content_type.starts_with("application/apply-patch"))
        .map(|x| {
            assert!(
                x.query.contains("fieldManager=valori-operator") && x.query.contains("force=true"),
                "{}",
                x.query
            );
            x.path.clone()
        })
        .collect();
    for (path, kind) in [
        (
            format!("/api/v1/namespaces/{NS}/configmaps/mem-config"),
            "ConfigMap",
        ),
        (c.service_path("nodes"), "Service"),
        (c.service_path("ro"), "Service"),
        (c.service_path("any"), "Service"),
        (
            format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/mem"),
            "PodDisruptionBudget",
        ),
        (c.sts_path(), "StatefulSet"),
    ] {
        assert!(applied.contains(&path), "{path} applied: {applied:?}");
        let obj = c.api.get(&path).unwrap();
        assert_eq!(obj["kind"], kind);
        assert_eq!(
            obj["metadata"]["ownerReferences"][0]["kind"],
            "ValoriCluster"
        );
        assert_eq!(obj["metadata"]["ownerReferences"][0]["name"], "mem");
    }
    assert_eq!(c.status().phase.as_deref(), Some("Creating"));

    c.until("a healthy, converged cluster", 90, |st| healthy(st, 3))
        .await;
    let st = c.status();
    assert_eq!(st.current_leader.as_deref(), Some("mem-0"));
    assert_eq!(st.epoch, 2);
    assert_eq!(st.observed_generation, Some(1));
    assert!(st
        .conditions
        .iter()
        .all(|x| x.observed_generation == Some(1)));
    assert_eq!(st.selector.as_deref(), Some("app.kubernetes.io/instance=mem,app.kubernetes.io/managed-by=valori-operator,app.kubernetes.io/name=valori"));
    // The roles are the nodes' own, given through the role API, and mirrored in the labels.
    assert_eq!(c.role("mem-0")["role"], "leader");
    assert_eq!(c.role("mem-0")["epoch"], 2);
    for f in ["mem-1", "mem-2"] {
        let r = c.role(f);
        assert_eq!(
            (r["role"].as_str(), r["epoch"].as_u64()),
            (Some("follower"), Some(2))
        );
        assert_eq!(r["leader_url"].as_str(), Some(c.url("mem-0").as_str()));
        let pod = c.api.get(&c.pod_path(f)).unwrap();
        assert_eq!(pod["metadata"]["labels"]["valori.dev/role"], "follower");
    }
    assert_eq!(selector_pod(&c, "rw"), "mem-0");
    assert!(c
        .events()
        .iter()
        .any(|(r, n)| r == "LeaderElected" && n.contains("mem-0") && n.contains("epoch 2")));

    // Writes reach every pod; the cross-check compares them where they all are.
    c.write("mem-0", 0, 20);
    c.until("the writes to be cross-checked", 60, |st| {
        healthy(st, 3) && st.last_cross_check_seq >= Some(21)
    })
    .await;
    let states = c.states();
    assert_eq!(states.len(), 3);
    assert!(states.values().all(|s| s == &states["mem-0"]), "{states:?}");
    // The status shows each pod's chain hash at the common sequence number and state hash.
    c.until("a cross-check of the idle cluster", 30, |st| {
        st.instances_status
            .iter()
            .all(|r| r.state_hash.is_some() && r.state_hash == st.instances_status[0].state_hash)
    })
    .await;
    let st = c.status();
    assert!(st
        .instances_status
        .iter()
        .all(|r| r.chain_hash.as_deref() == Some(states["mem-0"].1.as_str()) && r.seq == 21));
    // Nothing changed: passes restart nothing.
    for _ in 0..3 {
        c.step().await.unwrap();
    }
    assert!(c.deleted_pods().is_empty(), "{:?}", c.deleted_pods());
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_adds_and_removes_followers() {
    let c = Cluster::new("sc", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("sc-0", 0, 10);
    c.edit(json!({"instances": 4}));
    c.until("four converged pods", 90, |st| {
        healthy(st, 4) && st.instances == 4
    })
    .await;
    assert_eq!(c.status().observed_generation, Some(2));
    let r = c.role("sc-3");
    assert_eq!(
        (r["role"].as_str(), r["epoch"].as_u64()),
        (Some("follower"), Some(2))
    );
    c.edit(json!({"instances": 2}));
    c.until("two pods", 60, |st| healthy(st, 2) && st.instances == 2)
        .await;
    let sts = c.api.get(&c.sts_path()).unwrap();
    assert_eq!(sts["spec"]["replicas"], 2);
    assert_eq!(c.status().instances_status.len(), 2);
    // Scaling is not a rollout: no pod was restarted.
    assert!(c.deleted_pods().is_empty(), "{:?}", c.deleted_pods());
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_rolls_followers_first_then_switches_the_leader_over() {
    let c = Cluster::new("ro", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    let before = c.write("ro-0", 0, 30);
    // A configuration change is a template change.
    c.edit(json!({"snapshots": {"every": 1000, "keep": 2}}));
    c.until("the rollout to finish", 180, |st| {
        healthy(st, 3) && st.updated_instances == 3
    })
    .await;
    // Followers one at a time (highest ordinal first), then the old leader, after a
    // switchover made the most advanced follower the leader.
    assert_eq!(c.deleted_pods(), ["ro-2", "ro-1", "ro-0"]);
    let st = c.status();
    assert_eq!(st.current_leader.as_deref(), Some("ro-1"));
    assert_eq!(st.epoch, 3);
    assert_eq!(selector_pod(&c, "rw"), "ro-1");
    assert!(c.events().iter().any(|(r, _)| r == "Switchover"));
    let r = c.role("ro-0");
    assert_eq!(
        (r["role"].as_str(), r["epoch"].as_u64()),
        (Some("follower"), Some(3))
    );
    // Nothing written before was lost, and the new leader takes writes.
    let after = c.write("ro-1", 100, 5);
    c.until("the new writes to be cross-checked", 60, |st| {
        healthy(st, 3) && st.last_cross_check_seq >= Some(1 + 30 + 5)
    })
    .await;
    let states = c.states();
    assert!(states.values().all(|s| s == &states["ro-1"]), "{states:?}");
    assert_eq!(
        states["ro-1"].0,
        1 + before.len() as u64 + after.len() as u64
    );
    // An operator that applies the same template again restarts nothing.
    let deleted = c.deleted_pods().len();
    for _ in 0..3 {
        c.step().await.unwrap();
    }
    assert_eq!(c.deleted_pods().len(), deleted);
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_foreign_history_is_reported_and_healed() {
    let c = Cluster::new("dv", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("dv-0", 0, 10);
    c.edit(json!({"instances": 2}));
    c.until("two pods", 60, |st| healthy(st, 2) && st.instances == 2)
        .await;
    // dv-2's retained claim gets another history while it is scaled away (a claim left from
    // another cluster of the same name looks the same).
    tokio::task::block_in_place(|| {
        let dir = c.claim_dir("dv-2");
        std::fs::remove_dir_all(&dir).unwrap();
        let p = common::node::Proc::start(&dir, &[]);
        let h = common::node::http();
        h.post(format!("{}/v1/collections", p.url))
            .json(&json!({"name": "v", "dimension": 4}))
            .send()
            .unwrap();
        for i in 500..520 {
            h.post(format!("{}/v1/collections/v/records", p.url))
                .json(&json!({"vector": common::node::vector(i)}))
                .send()
                .unwrap();
        }
    });
    c.edit(json!({"instances": 3}));
    c.until("the divergence to be reported", 60, |st| {
        condition(st, "Diverged").as_deref() == Some("True")
    })
    .await;
    let events = c.events();
    let (_, note) = events
        .iter()
        .find(|(r, _)| r == "Diverged")
        .expect("a Diverged event");
    assert!(
        note.contains("dv-2") && note.contains("sequence number"),
        "{note}"
    );
    assert!(events
        .iter()
        .any(|(r, n)| r == "Healing" && n.contains("data-dv-2")));
    // Healing deleted the claim and the pod: the new pod bootstraps from the leader.
    c.until("the healed cluster to converge", 90, |st| healthy(st, 3))
        .await;
    assert!(c
        .api
        .calls()
        .iter()
        .any(|x| x.method == "DELETE" && x.path.ends_with("/persistentvolumeclaims/data-dv-2")));
    let states = c.states();
    assert!(states.values().all(|s| s == &states["dv-0"]), "{states:?}");
    assert_eq!(condition(&c.status(), "Diverged").as_deref(), Some("False"));
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reconcile_shows_in_the_phase_and_a_condition_until_it_passes() {
    let c = Cluster::new(
        "sec",
        "instances: 1\nauth: {secretName: keys, writeKey: api-key}\n",
    );
    // The Secret the spec names does not exist: the pass fails, and the status says so.
    for _ in 0..2 {
        let err = c.step().await.unwrap_err();
        assert!(err.to_string().contains("keys does not exist"), "{err}");
    }
    let st = c.status();
    assert_eq!(st.phase.as_deref(), Some("ReconcileFailed"));
    assert!(st
        .phase_reason
        .as_deref()
        .unwrap()
        .contains("keys does not exist"));
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciled")
        .unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InvalidSpec")
    );
    let failed = |c: &Cluster| {
        c.events()
            .iter()
            .filter(|(r, n)| r == "ReconcileFailed" && n.contains("keys does not exist"))
            .count()
    };
    assert_eq!(failed(&c), 1, "one Event when it starts failing");
    // Once the Secret is there, the cluster comes up and the condition turns True.
    c.secret("keys", "api-key", "s3cret-key");
    c.until("a healthy cluster", 60, |st| {
        healthy(st, 1) && condition(st, "Reconciled").as_deref() == Some("True")
    })
    .await;
    assert_eq!(failed(&c), 1);
    // The NetworkPolicy the operator keeps, gone once the spec turns it off.
    let np = format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/sec");
    let policy = c.api.get(&np).expect("the cluster's NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    c.edit(json!({"networkPolicy": {"disabled": true}}));
    c.step().await.unwrap();
    assert!(c.api.get(&np).is_none());
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_is_failed_over_and_rejoins_as_a_follower() {
    // With API keys: the operator reads the write key from the cluster's Secret to call the
    // nodes' role API, and the pods get theirs from it.
    let c = Cluster::new(
        "fo",
        &format!("{THREE}auth: {{secretName: keys, writeKey: api-key}}\n"),
    );
    c.secret("keys", "api-key", "s3cret-key");
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    let written = c.write("fo-0", 0, 25);
    c.until("the writes on every pod", 60, |st| {
        healthy(st, 3) && st.last_cross_check_seq >= Some(26)
    })
    .await;
    c.kill("fo-0");
    c.until("a failover", 60, |st| {
        st.current_leader.as_deref().is_some_and(|l| l != "fo-0")
    })
    .await;
    let st = c.status();
    let new = st.current_leader.clone().unwrap();
    assert_eq!(st.epoch, 3);
    assert_eq!(selector_pod(&c, "rw"), new);
    let r = c.role(&new);
    assert_eq!(
        (
            r["role"].as_str(),
            r["epoch"].as_u64(),
            r["writable"].as_bool()
        ),
        (Some("leader"), Some(3), Some(true))
    );
    assert!(c
        .events()
        .iter()
        .any(|(r, n)| r == "FailedOver" && n.contains(&new) && n.contains("did not answer")));
    // Every acknowledged write is on the new leader; it takes new ones.
    assert_eq!(c.states()[&new].0, 1 + written.len() as u64);
    c.write(&new, 100, 5);
    // The old leader returns and follows the new one at the new epoch.
    c.revive("fo-0");
    c.until("the old leader to rejoin", 90, |st| {
        healthy(st, 3) && st.last_cross_check_seq >= Some(31)
    })
    .await;
    let r = c.role("fo-0");
    assert_eq!(
        (r["role"].as_str(), r["epoch"].as_u64()),
        (Some("follower"), Some(3))
    );
    let pod: Value = c.api.get(&c.pod_path("fo-0")).unwrap();
    assert_eq!(pod["metadata"]["labels"]["valori.dev/role"], "follower");
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_failover_waits_for_enough_followers() {
    let c = Cluster::new(
        "sy",
        r#"
instances: 3
replication: {synchronousReplicas: 1, timeoutMs: 5000}
crossCheck: {intervalSeconds: 1, heal: true}
failover: {delaySeconds: 1, leaderUpdate: Switchover}
"#,
    );
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("sy-0", 0, 10);
    // The leader and one follower go: with two followers and one synchronous replica, both
    // followers must answer, or the only copy of an acknowledged write may be the silent one.
    c.kill("sy-0");
    c.kill("sy-2");
    c.until("the failover to wait", 60, |st| {
        st.phase_reason
            .as_deref()
            .is_some_and(|r| r.contains("failover waits") && r.contains("reached 1 of 2"))
    })
    .await;
    assert!(c
        .events()
        .iter()
        .any(|(r, n)| r == "FailoverWaiting" && n.contains("reached 1 of 2")));
    assert_eq!(c.role("sy-1")["role"], "follower");
    assert_eq!(c.status().current_leader.as_deref(), Some("sy-0"));
    // The follower returns: now the operator may promote.
    c.revive("sy-2");
    c.until("a failover", 60, |st| {
        st.current_leader.as_deref().is_some_and(|l| l != "sy-0")
    })
    .await;
    let new = c.status().current_leader.unwrap();
    assert_eq!(c.states()[&new].0, 11);
    assert_eq!(selector_pod(&c, "rw"), new);
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_pod_is_gone_is_failed_over_without_a_call_to_it() {
    let c = Cluster::new("gone", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    // The leader's pod object disappears (deleted, not yet recreated) with its node.
    c.kill("gone-0");
    c.api.remove(&c.pod_path("gone-0"));
    let pass = || async {
        valori_operator::controller::reconcile(std::sync::Arc::new(c.vc()), c.ctx.clone()).await
    };
    pass().await.expect("a pass with the leader's pod missing");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    pass().await.expect("the failover pass");
    let st = c.status();
    assert!(
        st.current_leader.as_deref().is_some_and(|l| l != "gone-0"),
        "{st:?}"
    );
    assert_eq!(st.epoch, 3);
    c.assert_permitted();
}

/// An epoch is recorded before it is used, conditionally on what the pass read: of two
/// arbiters that read the same cluster and both decide to fail over (two operator replicas in
/// the moment a Lease changes hands), one records the epoch and acts, the other's record
/// conflicts and it gives up, so no epoch is given twice and one failover happens. Before, both
/// went on to promote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_arbiter_that_read_the_same_cluster_loses_the_race() {
    let c = Cluster::new("ar", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("ar-0", 0, 10);
    c.kill("ar-0");
    // Until the failover is due (the delay is 1 s), passes only note the leader unready.
    c.until("the leader to be seen unready", 30, |st| {
        st.leader_unready_since.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let read = Arc::new(c.vc());
    let (a, b) = tokio::join!(
        controller::reconcile(read.clone(), c.ctx.clone()),
        controller::reconcile(read.clone(), c.ctx.clone()),
    );
    let superseded = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(valori_operator::Error::Superseded(_))))
        .count();
    assert_eq!(superseded, 1, "exactly one arbiter gives up: {a:?} / {b:?}");
    tokio::task::block_in_place(|| c.sync());
    let leaders: Vec<(String, u64)> = ["ar-1", "ar-2"]
        .into_iter()
        .filter_map(|p| {
            let r = c.role(p);
            (r["role"] == "leader").then(|| (p.to_string(), r["epoch"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(leaders.len(), 1, "one promotion: {leaders:?}");
    let st = c.status();
    assert_eq!(st.epoch, leaders[0].1, "the status names the epoch used");
    assert_eq!(
        c.events().iter().filter(|(r, _)| r == "FailedOver").count(),
        1
    );
}

/// Healing discards data; demotion does not: with `crossCheck.heal: false` a pod that comes
/// back leading its own history (a returning old leader, a claim from elsewhere) is still
/// demoted, so it stops taking writes, and told not to heal: it keeps its data, latched and
/// read-only, for someone to look at. Before, it was reported and left leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_healing_a_pod_leading_its_own_history_is_demoted_and_keeps_its_data() {
    let c = Cluster::new(
        "nh",
        r#"
instances: 3
crossCheck: {intervalSeconds: 1, heal: false}
failover: {delaySeconds: 1, leaderUpdate: Switchover}
"#,
    );
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("nh-0", 0, 10);
    c.edit(json!({"instances": 2}));
    c.until("two pods", 60, |st| {
        st.instances == 2 && st.ready_instances == 2
    })
    .await;
    tokio::task::block_in_place(|| {
        let dir = c.claim_dir("nh-2");
        std::fs::remove_dir_all(&dir).unwrap();
        let p = common::node::Proc::start(&dir, &[]);
        let h = common::node::http();
        h.post(format!("{}/v1/collections", p.url))
            .json(&json!({"name": "v", "dimension": 4}))
            .send()
            .unwrap();
        for i in 500..520 {
            h.post(format!("{}/v1/collections/v/records", p.url))
                .json(&json!({"vector": common::node::vector(i)}))
                .send()
                .unwrap();
        }
    });
    c.edit(json!({"instances": 3}));
    c.until("the divergence to be reported", 60, |st| {
        condition(st, "Diverged").as_deref() == Some("True")
    })
    .await;
    c.until("nh-2 demoted", 30, |_| c.role("nh-2")["role"] == "follower")
        .await;
    let r = c.role("nh-2");
    assert_eq!(r["writable"], false, "{r}");
    assert_eq!(r["heal"], false, "{r}");
    // Its own history is kept, not discarded: 21 events, its own 20 records.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.states()["nh-2"].0, 21);
    assert!(!c
        .api
        .calls()
        .iter()
        .any(|x| x.method == "DELETE" && x.path.ends_with("/persistentvolumeclaims/data-nh-2")));
    assert_eq!(c.status().current_leader.as_deref(), Some("nh-0"));
    c.assert_permitted();
}

/// A scale-down never removes the leader: when the ordinals it removes include the leader's,
/// the leadership moves first (a switchover to the most advanced pod that stays), the
/// StatefulSet keeps that ordinal meanwhile, and only then shrinks. Before, the StatefulSet
/// shrank at once and took the leader with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_moves_the_leadership_off_the_ordinals_it_removes() {
    let c = Cluster::new("sd", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    let written = c.write("sd-0", 0, 10);
    c.until("the writes on every pod", 60, |st| {
        healthy(st, 3) && st.last_cross_check_seq >= Some(11)
    })
    .await;
    // Make sd-1 the leader: sd-0 is lost and the failover promotes sd-1 (it ties sd-2 on
    // history; ties go to the lower name).
    c.kill("sd-0");
    c.until("a failover", 60, |st| {
        st.current_leader.as_deref().is_some_and(|l| l != "sd-0")
    })
    .await;
    let leader = c.status().current_leader.unwrap();
    assert_eq!(leader, "sd-1");
    c.revive("sd-0");
    c.until("three healthy pods", 90, |st| healthy(st, 3)).await;
    c.edit(json!({"instances": 1}));
    // While sd-1 leads, the StatefulSet keeps it.
    c.step().await.unwrap();
    let sts = c.api.get(&c.sts_path()).unwrap();
    assert_eq!(sts["spec"]["replicas"], 2, "sd-1 leads: its ordinal stays");
    c.until("one pod leading", 90, |st| {
        healthy(st, 1) && st.instances == 1
    })
    .await;
    assert_eq!(c.status().current_leader.as_deref(), Some("sd-0"));
    let sts = c.api.get(&c.sts_path()).unwrap();
    assert_eq!(sts["spec"]["replicas"], 1);
    assert!(c
        .events()
        .iter()
        .any(|(r, n)| r == "Switchover" && n.contains("sd-0") && n.contains("scale-down")));
    // Nothing acknowledged was lost on the way.
    assert_eq!(
        c.states()["sd-0"].0,
        1 + written.len() as u64,
        "{:?} {:?}",
        c.states(),
        c.events()
    );
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_shipped_scheduled_and_reported_and_another_history_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("file://{}", dir.path().join("backups").display());
    let spec = |schedule: &str| {
        format!(
            r#"
instances: 1
crossCheck: {{intervalSeconds: 1, heal: true}}
backup:
  destination: "{dest}"
  shipIntervalSeconds: 1
  {schedule}
  retention: {{count: 3}}
"#
        )
    };
    // Every two seconds (a sixth field, seconds, first).
    let c = Cluster::new("bk", &spec(r#"schedule: "*/2 * * * * *""#));
    c.until("a leader", 60, |st| st.current_leader.is_some())
        .await;
    let config = c
        .api
        .get(&format!("/api/v1/namespaces/{NS}/configmaps/bk-config"))
        .unwrap();
    assert_eq!(config["data"]["VALORI_BACKUP_TO"], dest.as_str());
    assert_eq!(config["data"]["VALORI_BACKUP_SHIP_INTERVAL_S"], "1");
    assert_eq!(config["data"]["VALORI_BACKUP_RETAIN_COUNT"], "3");
    let leader = c.status().current_leader.unwrap();
    c.write(&leader, 0, 5);
    let head = c.states()[&leader].0;
    c.until("the log shipped and a scheduled backup taken", 60, |st| {
        st.backup
            .as_ref()
            .is_some_and(|b| b.shipped_through >= Some(head) && b.backups >= 1)
            && condition(st, "BackedUp").as_deref() == Some("True")
    })
    .await;
    let st = c.status();
    let b = st.backup.as_ref().unwrap();
    assert!(b.reaches >= head, "{b:?}");
    assert!(b.last_scheduled.is_some() && b.error.is_none(), "{b:?}");
    assert!(
        c.events()
            .iter()
            .any(|(r, n)| r == "BackupTaken" && n.contains(&leader)),
        "{:?}",
        c.events()
    );

    // Another cluster pointed at the same destination writes another history: its leader
    // refuses to ship there, and the operator says so.
    let other = Cluster::new("other", &spec(""));
    other
        .until("a leader", 60, |st| st.current_leader.is_some())
        .await;
    let other_leader = other.status().current_leader.unwrap();
    other.write(&other_leader, 100, 2);
    other
        .until("the backup to be reported failing", 60, |st| {
            condition(st, "BackedUp").as_deref() == Some("False")
                && st
                    .backup
                    .as_ref()
                    .and_then(|b| b.error.as_deref())
                    .is_some_and(|e| e.contains("another history"))
        })
        .await;
    assert!(
        other
            .events()
            .iter()
            .any(|(r, n)| r == "BackupFailing" && n.contains("another history")),
        "{:?}",
        other.events()
    );
    // The first cluster's backup is untouched and still current.
    c.until("the first cluster still backed up", 30, |st| {
        condition(st, "BackedUp").as_deref() == Some("True")
    })
    .await;
}

/// `(seq, chain hash, state hash)` of `url`'s node at `seq` (its past state, replayed).
fn state_at(url: &str, seq: u64) -> (u64, String, String) {
    let v: Value = tokio::task::block_in_place(|| {
        common::node::http()
            .get(format!("{url}/v1/state?seq={seq}&state_hash=true"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    });
    assert!(v["seq"].is_u64(), "{v}");
    (
        v["seq"].as_u64().unwrap(),
        v["chain_hash"].as_str().unwrap().into(),
        v["state_hash"].as_str().unwrap().into(),
    )
}

/// Puts a `ValoriBackup` of `cluster` into `c`'s API server and runs its reconcile once.
async fn on_demand(c: &Cluster, name: &str, cluster: &str) -> valori_operator::crd::ValoriBackup {
    let path = format!("/apis/valori.dev/v1alpha1/namespaces/{NS}/valoribackups/{name}");
    if c.api.get(&path).is_none() {
        c.api.put(
            &path,
            json!({"apiVersion": "valori.dev/v1alpha1", "kind": "ValoriBackup",
                   "metadata": {"name": name, "namespace": NS}, "spec": {"cluster": cluster}}),
        );
    }
    let vb = serde_json::from_value(c.api.get(&path).unwrap()).unwrap();
    controller::on_demand::reconcile(Arc::new(vb), c.ctx.clone())
        .await
        .unwrap();
    serde_json::from_value(c.api.get(&path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_backups_complete_and_a_clone_restores_its_first_claim_before_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("file://{}", dir.path().join("backups").display());
    let src = Cluster::new(
        "src",
        &format!(
            r#"
instances: 1
crossCheck: {{intervalSeconds: 1, heal: true}}
backup: {{destination: "{dest}", shipIntervalSeconds: 1}}
"#
        ),
    );
    // Asked for before the cluster has a leader: it waits, and says why.
    let vb = on_demand(&src, "early", "src").await;
    let st = vb.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"), "{st:?}");
    assert!(st.message.unwrap().contains("no leader yet"));
    src.until("a leader", 60, |st| st.current_leader.is_some())
        .await;
    let leader = src.status().current_leader.unwrap();
    src.write(&leader, 0, 12);
    let mid = src.states()[&leader].0;
    // Shipped before the next writes: the log is in at least two segments.
    src.until("the first writes shipped", 60, |st| {
        st.backup
            .as_ref()
            .is_some_and(|b| b.shipped_through >= Some(mid))
    })
    .await;
    src.write(&leader, 12, 12);
    let head = src.states()[&leader].0;
    // What a restore to `mid` must reach (asked now: the snapshot below lets the node prune it).
    let want = state_at(&src.url(&leader), mid);

    // On demand: the leader uploads a snapshot now, and the resource says what it holds.
    let vb = on_demand(&src, "early", "src").await;
    let st = vb.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Completed"), "{st:?}");
    let now = state_at(&src.url(&leader), head);
    assert_eq!(st.seq, Some(head));
    assert_eq!(st.chain_hash.as_deref(), Some(now.1.as_str()));
    assert_eq!(st.state_hash.as_deref(), Some(now.2.as_str()));
    assert!(st.bytes.unwrap() > 0 && st.started.is_some() && st.finished.is_some());
    assert_eq!(
        (st.pod.as_deref(), st.destination.as_deref()),
        (Some(leader.as_str()), Some(dest.as_str()))
    );
    assert!(
        src.events()
            .iter()
            .any(|(r, n)| r == "BackupTaken" && n.contains(&format!("sequence number {head}"))),
        "{:?}",
        src.events()
    );
    // A completed backup is never taken again.
    let again = on_demand(&src, "early", "src").await;
    assert_eq!(again.status.unwrap().finished, st.finished);
    // A cluster that does not exist: pending; one without spec.backup: failed, saying why.
    let missing = on_demand(&src, "typo", "srcc").await.status.unwrap();
    assert_eq!(missing.phase.as_deref(), Some("Pending"));
    assert!(missing.message.unwrap().contains("no ValoriCluster srcc"));
    let plain = Cluster::new("plain", "instances: 1");
    let failed = on_demand(&plain, "b", "plain").await.status.unwrap();
    assert_eq!(failed.phase.as_deref(), Some("Failed"));
    assert!(failed.message.unwrap().contains("has no spec.backup"));
    let metrics = src.ctx.metrics.render();
    assert!(
        metrics.contains(r#"valori_operator_backups_total{result="completed"} 1"#),
        "{metrics}"
    );
    src.until("the log shipped", 60, |st| {
        st.backup
            .as_ref()
            .is_some_and(|b| b.shipped_through >= Some(head))
    })
    .await;
    let metrics = src.ctx.metrics.render();
    assert!(
        metrics.contains(&format!(
            r#"valori_operator_backup_reaches_sequence_number{{cluster="src",namespace="{NS}"}} {head}"#
        )),
        "{metrics}"
    );

    // A clone at an earlier seq: the first pass creates the first pod's claim and the restore
    // Job, and no StatefulSet.
    let clone = Cluster::new(
        "clone",
        &format!(
            r#"
instances: 2
crossCheck: {{intervalSeconds: 1, heal: true}}
bootstrap: {{fromBackup: {{destination: "{dest}", targetSeq: {mid}}}}}
"#
        ),
    );
    controller::reconcile(Arc::new(clone.vc()), clone.ctx.clone())
        .await
        .unwrap();
    assert!(clone.api.get(&clone.sts_path()).is_none());
    assert!(clone.api.get(&clone.claim_path("clone-0")).is_some());
    let job = clone.api.get(&clone.job_path()).expect("the restore Job");
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert_eq!(args[0], "restore");
    assert!(args
        .as_array()
        .unwrap()
        .windows(2)
        .any(|w| w[0] == "--target-seq" && w[1] == mid.to_string().as_str()));
    let st = clone.status();
    assert_eq!(st.phase.as_deref(), Some("Creating"));
    assert_eq!(st.restore.as_ref().unwrap().phase, "Restoring");
    assert_eq!(condition(&st, "Restored").as_deref(), Some("False"));

    // The Job runs; the restored pod leads at exactly the restored seq, the other follows.
    clone
        .until("the clone to be healthy", 90, |st| healthy(st, 2))
        .await;
    let st = clone.status();
    let r = st.restore.as_ref().unwrap();
    assert_eq!(r.phase, "Restored");
    assert_eq!(
        (r.seq, r.chain_hash.as_deref(), r.state_hash.as_deref()),
        (Some(mid), Some(want.1.as_str()), Some(want.2.as_str()))
    );
    assert_eq!(st.current_leader.as_deref(), Some("clone-0"));
    assert_eq!(condition(&st, "Restored").as_deref(), Some("True"));
    for (pod, (seq, chain)) in clone.states() {
        assert_eq!((seq, chain.as_str()), (mid, want.1.as_str()), "{pod}");
    }
    assert_eq!(state_at(&clone.url("clone-0"), mid), want);
    let reasons: Vec<String> = clone.events().into_iter().map(|(r, _)| r).collect();
    for r in ["RestoreStarted", "Restored", "LeaderElected"] {
        assert!(reasons.iter().any(|x| x == r), "{r}: {reasons:?}");
    }
    // The clone takes writes on from there.
    clone.write("clone-0", 500, 3);
    assert_eq!(clone.states()["clone-0"].0, mid + 3);

    // A backup with a gap: the restore stops, the condition names the seq, and no pod starts.
    let gap_dir = dir.path().join("gap");
    copy_dir(&dir.path().join("backups"), &gap_dir);
    let mut segments: Vec<_> = std::fs::read_dir(gap_dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    std::fs::remove_file(&segments[0]).unwrap();
    let broken = Cluster::new(
        "broken",
        &format!(
            "instances: 1\nbootstrap: {{fromBackup: {{destination: \"file://{}\", targetSeq: {mid}}}}}\n",
            gap_dir.display()
        ),
    );
    broken
        .until("the restore to fail", 30, |st| {
            st.phase.as_deref() == Some("RestoreFailed")
        })
        .await;
    let st = broken.status();
    let message = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Restored")
        .map(|c| c.message.clone())
        .unwrap();
    assert!(
        message.contains("sequence number 1 is in no segment"),
        "{message}"
    );
    assert!(
        message.contains("delete the Job broken-restore"),
        "{message}"
    );
    assert_eq!(st.restore.as_ref().unwrap().phase, "Failed");
    assert!(broken.api.get(&broken.sts_path()).is_none());
    assert!(
        broken
            .events()
            .iter()
            .any(|(r, n)| r == "RestoreFailed" && n.contains("in no segment")),
        "{:?}",
        broken.events()
    );
    // Another pass changes nothing and says it once.
    broken.step().await.unwrap();
    let failed_events = broken
        .events()
        .iter()
        .filter(|(r, _)| r == "RestoreFailed")
        .count();
    assert_eq!(failed_events, 1);
    for c in [&src, &clone, &broken, &plain] {
        c.assert_permitted();
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_storage_size_grows_the_claims_without_restarting_a_pod() {
    let c = Cluster::new(
        "grow",
        "instances: 2\nstorage: {size: 10Gi}\ncrossCheck: {intervalSeconds: 1, heal: true}\n",
    );
    c.storage_class(common::cluster::DEFAULT_STORAGE_CLASS, true);
    c.until("a healthy cluster", 60, |st| healthy(st, 2)).await;
    c.write("grow-0", 0, 5);
    let leader = c.status().current_leader.unwrap();
    let uids = |c: &Cluster| -> Vec<Value> {
        ["grow-0", "grow-1"]
            .iter()
            .map(|p| c.api.get(&c.pod_path(p)).unwrap()["metadata"]["uid"].clone())
            .collect()
    };
    let before = uids(&c);

    // The StatefulSet's claim templates cannot change: the claims grow, and the StatefulSet is
    // created again around the same pods.
    c.edit(json!({"storage": {"size": "20Gi"}}));
    c.until("the claims grown", 60, |st| {
        healthy(st, 2) && condition(st, "StorageResized").as_deref() == Some("True")
    })
    .await;
    for pod in ["grow-0", "grow-1"] {
        let claim = c.api.get(&c.claim_path(pod)).unwrap();
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "20Gi");
        assert_eq!(claim["status"]["capacity"]["storage"], "20Gi");
    }
    let sts = c.api.get(&c.sts_path()).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "20Gi"
    );
    assert_eq!(uids(&c), before, "no pod was replaced");
    assert!(c.deleted_pods().is_empty(), "{:?}", c.deleted_pods());
    assert_eq!(c.status().current_leader.unwrap(), leader);
    assert_eq!(c.states()["grow-1"].0, 6, "the data stayed");
    let calls = c.api.calls();
    let deletes: Vec<_> = calls
        .iter()
        .filter(|x| x.method == "DELETE" && x.path.ends_with("/statefulsets/grow"))
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body["propagationPolicy"], "Orphan");
    c.assert_permitted();

    // A class that does not expand: the cluster stays as it is and says why, and passes go on.
    let f = Cluster::new(
        "fixed",
        "instances: 1\nstorage: {size: 10Gi, storageClass: slow}\ncrossCheck: {intervalSeconds: 1, heal: true}\n",
    );
    f.storage_class("slow", false);
    f.until("a healthy cluster", 60, |st| healthy(st, 1)).await;
    f.edit(json!({"storage": {"size": "20Gi", "storageClass": "slow"}}));
    f.until("the expansion refused", 30, |st| {
        condition(st, "StorageResized").as_deref() == Some("False")
    })
    .await;
    for _ in 0..3 {
        f.step().await.unwrap();
    }
    let st = f.status();
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "StorageResized")
        .unwrap();
    assert_eq!(cond.reason, "ExpansionNotPossible");
    assert!(
        cond.message
            .contains("slow does not allow volume expansion"),
        "{}",
        cond.message
    );
    assert_eq!(condition(&st, "Reconciled").as_deref(), Some("True"));
    let sts = f.api.get(&f.sts_path()).unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );
    assert_eq!(
        f.api.get(&f.claim_path("fixed-0")).unwrap()["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );
    f.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_rolls_the_pods_and_the_operator_keeps_its_view() {
    let c = Cluster::new(
        "rot",
        &format!("{THREE}auth: {{secretName: keys, writeKey: api-key}}\n"),
    );
    c.secret("keys", "api-key", "first-key");
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("rot-0", 0, 5);
    // The cluster's own key: created once, owned by the cluster, never the users' key.
    let own = c
        .api
        .get(&format!("/api/v1/namespaces/{NS}/secrets/rot-cluster-key"))
        .expect("the cluster's key");
    assert_eq!(
        own["metadata"]["ownerReferences"][0]["kind"],
        "ValoriCluster"
    );
    let annotation = |c: &Cluster| {
        c.api.get(&c.sts_path()).unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["valori.dev/secrets-hash"]
            .clone()
    };
    let before = annotation(&c);
    assert!(before.is_string());

    // Rotated: every pod rolls onto the new key, the leader last by a switchover, while the
    // operator goes on reaching every node with the cluster's key.
    c.secret("keys", "api-key", "second-key");
    c.step().await.unwrap();
    assert_ne!(annotation(&c), before);
    c.until("every pod on the new key", 120, |st| {
        healthy(st, 3) && st.updated_instances == 3
    })
    .await;
    assert_eq!(c.deleted_pods().len(), 3, "{:?}", c.deleted_pods());
    assert!(
        !c.events().iter().any(|(r, _)| r == "ReconcileFailed"),
        "{:?}",
        c.events()
    );
    let leader = c.status().current_leader.unwrap();
    c.write(&leader, 5, 3);
    c.until("the writes everywhere", 60, |st| {
        healthy(st, 3) && st.instances_status.iter().all(|r| r.seq == 9)
    })
    .await;
    for pod in ["rot-0", "rot-1", "rot-2"] {
        let old = tokio::task::block_in_place(|| {
            common::node::http()
                .get(format!("{}/v1/state", c.url(pod)))
                .bearer_auth("first-key")
                .send()
                .unwrap()
                .status()
        });
        assert_eq!(old.as_u16(), 401, "{pod} still takes the old key");
    }
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_of_the_leader_s_node_moves_the_leadership_first() {
    let c = Cluster::new("dr", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    c.write("dr-0", 0, 5);
    let old = c.status().current_leader.unwrap();
    // The leader's own budget allows no eviction of the pod labelled leader.
    let budget = c
        .api
        .get(&format!(
            "/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/dr-leader"
        ))
        .expect("the leader's budget");
    assert_eq!(budget["spec"]["maxUnavailable"], 0);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"]["valori.dev/role"],
        "leader"
    );
    c.cordon(&old);
    c.until("the leadership off the cordoned node", 60, |st| {
        st.current_leader.as_deref().is_some_and(|l| l != old) && healthy(st, 3)
    })
    .await;
    let new = c.status().current_leader.unwrap();
    assert_eq!(selector_pod(&c, "rw"), new);
    let labels = c.api.get(&c.pod_path(&old)).unwrap()["metadata"]["labels"].clone();
    assert_eq!(
        labels["valori.dev/role"], "follower",
        "the drain may now evict it"
    );
    assert!(
        c.events()
            .iter()
            .any(|(r, n)| r == "Switchover" && n.contains("is cordoned")),
        "{:?}",
        c.events()
    );
    assert!(c.deleted_pods().is_empty(), "{:?}", c.deleted_pods());
    // Nothing was lost on the way.
    let st = c.states();
    assert!(st.values().all(|(seq, _)| *seq == 6), "{st:?}");
    c.assert_permitted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_by_hand_fencing_and_hibernation_keep_every_write() {
    let c = Cluster::new("hb", THREE);
    c.until("a healthy cluster", 90, |st| healthy(st, 3)).await;
    let old = c.status().current_leader.unwrap();
    c.write(&old, 0, 4);
    let path = c.vc_path();
    let annotate = |key: &str, value: Value| {
        c.api
            .patch(&path, json!({"metadata": {"annotations": {key: value}}}));
    };
    // A switchover by hand: to the pod named, then the annotation goes.
    let target = ["hb-0", "hb-1", "hb-2"]
        .into_iter()
        .find(|p| *p != old)
        .unwrap()
        .to_string();
    annotate("valori.dev/switchover-to", json!(target));
    c.until("the leadership on the pod asked for", 60, |st| {
        st.current_leader.as_deref() == Some(target.as_str()) && healthy(st, 3)
    })
    .await;
    c.step().await.unwrap();
    assert!(!c
        .vc()
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("valori.dev/switchover-to"));
    assert!(c
        .events()
        .iter()
        .any(|(r, n)| r == "Switchover" && n.contains("valori.dev/switchover-to")));
    // A pod that is not the cluster's: refused, said once, and the annotation goes.
    annotate("valori.dev/switchover-to", json!("elsewhere-0"));
    c.step().await.unwrap();
    assert!(c
        .events()
        .iter()
        .any(|(r, n)| r == "SwitchoverRefused" && n.contains("elsewhere-0")));
    assert!(!c
        .vc()
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("valori.dev/switchover-to"));
    assert_eq!(c.status().current_leader.as_deref(), Some(target.as_str()));

    // Fenced: the leader takes no write, reads go on, and no failover happens; unfenced, the
    // same leader takes writes again at a newer epoch.
    let epoch = c.status().epoch;
    annotate("valori.dev/fence", json!("true"));
    c.until("fenced", 30, |st| {
        st.phase.as_deref() == Some("Fenced") && st.fenced
    })
    .await;
    for _ in 0..3 {
        c.step().await.unwrap();
    }
    let st = c.status();
    assert_eq!(
        st.current_leader.as_deref(),
        Some(target.as_str()),
        "no failover"
    );
    assert!(st.epoch > epoch);
    let (write, read) = tokio::task::block_in_place(|| {
        let h = common::node::http();
        let write = h
            .post(format!("{}/v1/collections/v/records", c.url(&target)))
            .json(&json!({"vector": [1.0, 2.0, 3.0, 4.0]}))
            .send()
            .unwrap()
            .status();
        let read = h
            .get(format!("{}/v1/state", c.url(&target)))
            .send()
            .unwrap()
            .status();
        (write, read)
    });
    assert!(!write.is_success(), "a fenced leader took a write: {write}");
    assert!(read.is_success());
    annotate("valori.dev/fence", Value::Null);
    c.until("unfenced and healthy", 60, |st| {
        !st.fenced && healthy(st, 3)
    })
    .await;
    let st = c.status();
    assert_eq!(st.current_leader.as_deref(), Some(target.as_str()));
    let reasons: Vec<String> = c.events().into_iter().map(|(r, _)| r).collect();
    assert!(reasons.iter().any(|r| r == "Fenced") && reasons.iter().any(|r| r == "Unfenced"));
    c.write(&target, 100, 1);

    // Hibernation: every pod stops, the claims stay; woken up, the data is all there.
    annotate("valori.dev/hibernate", json!("true"));
    c.until("hibernated", 60, |st| {
        st.phase.as_deref() == Some("Hibernated") && st.instances == 0
    })
    .await;
    let sts = c.api.get(&c.sts_path()).unwrap();
    assert_eq!(sts["spec"]["replicas"], 0);
    for pod in ["hb-0", "hb-1", "hb-2"] {
        assert!(c.api.get(&c.pod_path(pod)).is_none(), "{pod} still runs");
        assert!(
            c.api.get(&c.claim_path(pod)).is_some(),
            "{pod}'s claim went"
        );
    }
    annotate("valori.dev/hibernate", Value::Null);
    c.until("awake and healthy", 120, |st| healthy(st, 3)).await;
    let states = c.states();
    assert!(states.values().all(|(seq, _)| *seq == 6), "{states:?}");
    c.assert_permitted();
}
