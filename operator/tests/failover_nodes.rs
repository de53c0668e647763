//! The node-facing half of failover against real `valori-node` processes on 127.0.0.1: the
//! operator's own `fail_over` (the function the reconcile loop calls) after the leader is
//! killed under a continuous writer, with synchronous replication: no acknowledged write is
//! lost; the cases where it must wait; the old leader the arbiter cannot reach; two arbiters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use valori_operator::failover::{fail_over, Decision, NodeRef, Nodes};

mod common;
use common::node::{get, http, vector, wait_until, Proc};

/// The one-shot arbiter's record: nowhere (the reconcile scenarios test the status record).
async fn no_record(_: u64) -> Result<(), valori_operator::failover::CallError> {
    Ok(())
}

/// A TCP proxy to `target` that holds each new connection `delay` before passing it on: the
/// arbiter's slow path to one follower, while replication goes direct.
fn slow_proxy(target: &str, delay: Duration) -> String {
    let target = target.trim_start_matches("http://").to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let target = target.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c1, mut s1) = (client, server);
                let up = std::thread::spawn(move || std::io::copy(&mut c1, &mut s1));
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = up.join();
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn the_operator_fails_over_without_losing_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let sync = ["--sync-replicas", "1"];
    let mut leader = Proc::start(&dir.path().join("a"), &sync);
    let follow = |d: &str| {
        let mut args = vec![
            "--replication-mode",
            "follower",
            "--leader-url",
            &leader.url,
        ];
        args.extend_from_slice(&sync);
        Proc::start(&dir.path().join(d), &args)
    };
    let (b, c) = (follow("b"), follow("c"));
    let client = http();
    let created = client
        .post(format!("{}/v1/collections", leader.url))
        .json(&json!({"name": "v", "dimension": 4}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);

    // A client writing continuously to whoever leads, recording what was acknowledged.
    let target = Arc::new(Mutex::new(leader.url.clone()));
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (target, acked, stop) = (target.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let client = http();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let url = target.lock().unwrap().clone();
                let r = client
                    .post(format!("{url}/v1/collections/v/records"))
                    .json(&json!({"vector": vector(n), "tag": n}))
                    .send();
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().unwrap();
                        acked.lock().unwrap().insert(v["id"].as_u64().unwrap(), n);
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    wait_until("writes", || acked.lock().unwrap().len() >= 100);
    leader.kill();

    let nodes = Nodes::new(None, Duration::from_secs(5));
    let refs = [
        NodeRef {
            name: "b".into(),
            url: b.url.clone(),
        },
        NodeRef {
            name: "c".into(),
            url: c.url.clone(),
        },
    ];
    let old = NodeRef {
        name: "a".into(),
        url: leader.url.clone(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(fail_over(&nodes, Some(&old), &refs, 2, 1, 1, no_record))
        .expect("failover");
    let Decision::Promote { name, epoch } = &outcome.decision else {
        panic!("expected a promotion: {outcome:?}");
    };
    assert_eq!(*epoch, 2);
    assert!(!outcome.old_leader_fenced, "the old leader is dead");
    let (new, other) = if name == "b" { (&b, &c) } else { (&c, &b) };
    assert_eq!(outcome.repointed, vec![if name == "b" { "c" } else { "b" }]);
    *target.lock().unwrap() = new.url.clone();
    let before = acked.lock().unwrap().len();
    wait_until("writes to the new leader", || {
        acked.lock().unwrap().len() >= before + 100
    });
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // Every acknowledged write is on both survivors, and they are identical.
    let head = get(&format!("{}/v1/state", new.url));
    wait_until("the follower to catch up", || {
        get(&format!("{}/v1/state", other.url))["seq"] == head["seq"]
    });
    assert_eq!(get(&format!("{}/v1/state", other.url)), head);
    let acked = acked.lock().unwrap().clone();
    for node in [new, other] {
        for (id, tag) in &acked {
            let r = get(&format!("{}/v1/collections/v/records/{id}", node.url));
            assert_eq!(
                r["tag"], *tag,
                "acknowledged write {id} on {}: {r}",
                node.url
            );
        }
    }
    assert_eq!(get(&format!("{}/v1/role", new.url))["role"], "leader");
    assert_eq!(
        get(&format!("{}/v1/role", other.url))["leader_url"],
        new.url
    );
}

#[test]
fn the_operator_waits_when_it_cannot_reach_enough_followers() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Proc::start(&dir.path().join("a"), &["--sync-replicas", "1"]);
    let args = [
        "--replication-mode",
        "follower",
        "--leader-url",
        &leader.url,
    ];
    let b = Proc::start(&dir.path().join("b"), &args);
    let nodes = Nodes::new(None, Duration::from_secs(2));
    let refs = [
        NodeRef {
            name: "b".into(),
            url: b.url.clone(),
        },
        // A follower that does not answer: nothing listens there.
        NodeRef {
            name: "c".into(),
            url: "http://127.0.0.1:9".into(),
        },
    ];
    let old = NodeRef {
        name: "a".into(),
        url: leader.url.clone(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(fail_over(&nodes, Some(&old), &refs, 2, 1, 1, no_record))
        .unwrap();
    match &outcome.decision {
        Decision::Wait { reason } => assert!(reason.contains("1 of 2"), "{reason}"),
        other => panic!("expected to wait: {other:?}"),
    }
    // Nothing changed: the leader still leads, the follower still follows.
    assert_eq!(get(&format!("{}/v1/role", leader.url))["writable"], true);
    assert_eq!(get(&format!("{}/v1/role", b.url))["role"], "follower");
}

#[test]
fn nodes_serving_tls_with_a_private_ca_are_reached_with_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::node::make_certs(dir.path());
    let node = Proc::start(
        &dir.path().join("n"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let r = NodeRef {
        name: "n".into(),
        url: node.url.clone(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Without the CA the certificate is refused.
    let plain = Nodes::new(None, Duration::from_secs(5));
    assert!(rt.block_on(plain.role(&r)).is_err());
    let pem = std::fs::read(&ca).unwrap();
    let trusting = Nodes::with_ca(None, Duration::from_secs(5), Some(&pem)).unwrap();
    let role = rt.block_on(trusting.role(&r)).unwrap();
    assert_eq!(role.role, valori_api::Role::Leader);
    assert!(Nodes::with_ca(None, Duration::from_secs(5), Some(b"not a certificate")).is_err());
}

/// Fence, then decide: a leader the arbiter cannot reach, while its followers and clients
/// still do, acknowledges nothing the new leader lacks. The arbiter raises every follower it
/// reaches to the new epoch before the observation that chooses, so from then on no follower
/// confirms the old leader's synchronous writes. Before, it observed, promoted, then repointed
/// the followers one by one: a follower not yet repointed (here: the arbiter's path to it is
/// slow) went on confirming the old leader's writes, which the new leader never got and the
/// repointed follower then discarded.
#[test]
fn a_leader_the_arbiter_cannot_reach_acknowledges_nothing_the_new_leader_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let sync = ["--sync-replicas", "1", "--sync-timeout-ms", "1000"];
    let leader = Proc::start(&dir.path().join("a"), &sync);
    let follow = |d: &str| {
        let mut args = vec![
            "--replication-mode",
            "follower",
            "--leader-url",
            &leader.url,
        ];
        args.extend_from_slice(&sync);
        Proc::start(&dir.path().join(d), &args)
    };
    let (b, c) = (follow("b"), follow("c"));
    let client = http();
    wait_until("both followers to follow", || {
        get(&format!("{}/v1/replication", leader.url))["followers"]
            .as_array()
            .is_some_and(|f| f.len() == 2)
    });
    assert_eq!(
        client
            .post(format!("{}/v1/collections", leader.url))
            .json(&json!({"name": "v", "dimension": 4}))
            .send()
            .unwrap()
            .status(),
        201
    );
    // The client keeps writing to the old leader the whole time: it still reaches it.
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, acked, stop) = (leader.url.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let client = http();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                if let Ok(r) = client
                    .post(format!("{url}/v1/collections/v/records"))
                    .json(&json!({"vector": vector(n), "tag": n}))
                    .send()
                {
                    if r.status() == 200 {
                        let v: Value = r.json().unwrap();
                        acked.lock().unwrap().insert(v["id"].as_u64().unwrap(), n);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_until("writes", || acked.lock().unwrap().len() >= 50);
    // b answers the arbiter at once (and so is chosen: it holds as much as c), c slowly.
    let refs = [
        NodeRef {
            name: "b".into(),
            url: b.url.clone(),
        },
        NodeRef {
            name: "c".into(),
            url: slow_proxy(&c.url, Duration::from_millis(1500)),
        },
    ];
    let nodes = Nodes::new(None, Duration::from_secs(10));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(fail_over(&nodes, None, &refs, 2, 1, 1, no_record))
        .expect("failover");
    let Decision::Promote { name, .. } = &outcome.decision else {
        panic!("expected a promotion: {outcome:?}");
    };
    let new = if name == "b" { &b } else { &c };
    // The old leader is not told anything; its writes go on for a while.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<u64> = acked
        .iter()
        .filter(|(id, tag)| {
            get(&format!("{}/v1/collections/v/records/{id}", new.url))["tag"] != **tag
        })
        .map(|(id, _)| *id)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the new leader {name}: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(20)]
    );
}

/// Two arbiters that chose the same epoch at once (the one-shot command and the operator, two
/// runs of the command) cannot both act with it: each names itself, a node refuses an epoch
/// another arbiter claimed there, and the arbiter that finds its epoch claimed waits instead
/// of promoting a second leader at it. Here the other arbiter raises one follower to the very
/// epoch this failover chose, between its choice and its own raise.
#[test]
fn an_epoch_another_arbiter_claimed_makes_the_failover_wait() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Proc::start(&dir.path().join("a"), &[]);
    let args = [
        "--replication-mode",
        "follower",
        "--leader-url",
        &leader.url,
    ];
    let (b, c) = (
        Proc::start(&dir.path().join("b"), &args),
        Proc::start(&dir.path().join("c"), &args),
    );
    let refs = [
        NodeRef {
            name: "b".into(),
            url: b.url.clone(),
        },
        NodeRef {
            name: "c".into(),
            url: c.url.clone(),
        },
    ];
    let this = Nodes::for_arbiter(None, Duration::from_secs(5), None, "this").unwrap();
    let other = Nodes::for_arbiter(None, Duration::from_secs(5), None, "other").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(fail_over(&this, None, &refs, 2, 0, 1, |epoch| {
            let (other, c) = (other.clone(), refs[1].clone());
            async move {
                other.fence(&c, epoch).await?;
                Ok::<_, valori_operator::failover::CallError>(())
            }
        }))
        .expect("failover");
    match &outcome.decision {
        Decision::Wait { reason } => {
            assert!(reason.contains("another arbiter claimed"), "{reason}")
        }
        other => panic!("expected to wait: {other:?}"),
    }
    for f in [&b, &c] {
        assert_eq!(get(&format!("{}/v1/role", f.url))["role"], "follower");
    }
    // The arbiter that claimed it can use it; the other cannot.
    let promote = valori_api::SetRole::leader(2);
    assert!(rt.block_on(this.set_role(&refs[1], &promote)).is_err());
    assert!(rt.block_on(other.set_role(&refs[1], &promote)).is_ok());
}
