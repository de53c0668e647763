//! Failover-ready replication across real node processes on 127.0.0.1: roles and epochs at run
//! time, a fenced stale leader, divergence when a leader goes back in history, and
//! synchronous replication. The arbiter's part (which follower to promote) is played by the
//! test through the role API, as the operator does.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{b64, follower, vector, wait_for_divergence, wait_until, Client, Node, Proxy};
use serde_json::{json, Value};

fn role(c: &Client) -> Value {
    let (s, v) = c.get("/v1/role");
    assert_eq!(s, 200, "{v}");
    v
}

fn set_role(c: &Client, body: Value) -> (u16, Value) {
    c.call("PUT", "/v1/role", Some(&body))
}

fn promote(c: &Client, epoch: u64) {
    let (s, v) = set_role(c, json!({"role": "leader", "epoch": epoch}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["writable"], true, "{v}");
}

fn point_at(c: &Client, leader: &str, epoch: u64) {
    let (s, v) = set_role(
        c,
        json!({"role": "follower", "epoch": epoch, "leader_url": leader}),
    );
    assert_eq!(s, 200, "{v}");
}

fn same_state(nodes: &[&Client]) {
    let target = nodes[0].state();
    for c in &nodes[1..] {
        wait_until(120, "the nodes to converge", || {
            c.try_call("GET", "/v1/state", None)
                .is_ok_and(|(s, v)| s == 200 && v["seq"].as_u64() == Some(target.0))
        });
        assert_eq!(
            c.state(),
            target,
            "{} differs from {}",
            c.base,
            nodes[0].base
        );
    }
}

#[test]
fn roles_change_only_with_higher_epochs_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let c = node.client();
    let r = role(&c);
    assert_eq!(
        (&r["role"], &r["epoch"], &r["seen_epoch"], &r["writable"]),
        (&json!("leader"), &json!(1), &json!(1), &json!(true))
    );
    assert_eq!(
        c.post("/v1/collections", json!({"name": "v", "dimension": 2}))
            .0,
        201
    );

    // The same epoch repeats the current assignment; with another role it is refused.
    assert_eq!(set_role(&c, json!({"role": "leader", "epoch": 1})).0, 200);
    let (s, v) = set_role(
        &c,
        json!({"role": "follower", "epoch": 1, "leader_url": "http://127.0.0.1:9"}),
    );
    assert_eq!((s, v["code"].as_str()), (409, Some("stale_epoch")), "{v}");
    for bad in [
        json!({"role": "follower", "epoch": 2}),
        json!({"role": "leader", "epoch": 2, "leader_url": "http://x:1"}),
        json!({"role": "leader", "epoch": 0}),
        json!({"role": "boss", "epoch": 2}),
    ] {
        let (s, v) = set_role(&c, bad.clone());
        assert_eq!(s, 400, "{bad}: {v}");
    }
    assert_eq!(role(&c)["epoch"], 1, "refused requests changed nothing");

    // Demoted with a higher epoch: writes are refused naming the leader.
    point_at(&c, "http://127.0.0.1:9", 2);
    let (s, v) = c.post("/v1/collections/v/records", json!({"vector": [1, 2]}));
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("read_only_follower")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("127.0.0.1:9"),
        "{v}"
    );

    // The persisted role wins over the flags at a restart (the flags say leader).
    node.restart();
    let c = node.client();
    let r = role(&c);
    assert_eq!(
        (&r["role"], &r["epoch"], &r["leader_url"]),
        (&json!("follower"), &json!(2), &json!("http://127.0.0.1:9"))
    );
    let (s, v) = set_role(&c, json!({"role": "leader", "epoch": 1}));
    assert_eq!((s, v["code"].as_str()), (409, Some("stale_epoch")), "{v}");
    promote(&c, 3);
    assert_eq!(
        c.post("/v1/collections/v/records", json!({"vector": [1, 2]}))
            .0,
        200
    );
    // Every log entry records the epoch that wrote it.
    let (_, log) = c.get("/v1/log?from=1");
    let epochs: Vec<u64> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, vec![1, 3]);
    assert_eq!(log["epoch"], 3);
    let (_, m) = c.get("/metrics");
    let m = m.as_str().unwrap();
    assert!(
        m.contains("valori_epoch 3") && m.contains("valori_role_leader 1"),
        "{m}"
    );
}

#[test]
fn only_a_key_that_may_write_can_fence_a_leader() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &["--api-key", "writer", "--read-api-key", "reader"],
    );
    let reader = node.client().with_key("reader");
    let writer = node.client().with_key("writer");
    // A read-only key naming a high epoch, as a follower would, changes nothing.
    for path in ["/v1/role", "/v1/log?from=1"] {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", node.url))
            .bearer_auth("reader")
            .header("x-valori-follower", "intruder")
            .header("x-valori-epoch", "999")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(role(&reader)["writable"], true);
    // The read-write key (what a follower of this leader holds) fences it.
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/v1/role", node.url))
        .bearer_auth("writer")
        .header("x-valori-epoch", "5")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = role(&writer);
    assert_eq!(
        (&after["writable"], &after["seen_epoch"]),
        (&json!(false), &json!(5))
    );
}

#[test]
fn a_restore_on_the_leader_is_divergence_not_lag() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(&dir.path().join("leader"), &[]);
    let lc = leader.client();
    lc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let (_, snap) = lc.post("/v1/snapshots", json!({}));
    let (_, old) = lc.bytes(&format!("/v1/snapshots/{}", snap["id"]));
    for i in 0..3 {
        lc.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
    }
    let f = follower(&dir.path().join("f"), &leader.url, &[]);
    let fc = f.client();
    same_state(&[&lc, &fc]);
    assert_eq!(fc.state().0, 4);

    // Back to sequence number 1, then one new write: the leader's 2 is not the follower's 2.
    let (s, v) = lc.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        old,
    );
    assert_eq!(s, 200, "{v}");
    lc.post(
        "/v1/collections/v/records",
        json!({"vector": vector(99, 4)}),
    );
    assert_eq!(lc.state().0, 2);
    let m = wait_for_divergence(&fc, 15, "at sequence number 2");
    assert!(
        m.lines()
            .any(|l| l.starts_with("valori_replication_divergences_total ") && !l.ends_with(" 0")),
        "{m}"
    );
    assert!(
        m.contains("valori_replication_lag_events -1\n"),
        "a follower holding events its leader lacks must not report lag: {m}"
    );
    // It serves what it had, and does not take the leader's new history without healing.
    assert_eq!(fc.state().0, 4);
    // The leader sees a follower that holds what it lacks, not one that is caught up.
    wait_until(15, "the leader to see the divergence", || {
        let (_, r) = lc.get("/v1/replication");
        r["followers"][0]["diverged"] == true
    });
}

#[test]
fn a_synchronous_write_without_followers_times_out_with_outcome_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &["--sync-replicas", "1", "--sync-timeout-ms", "500"],
    );
    let lc = leader.client();
    let started = Instant::now();
    let (s, v) = lc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("replication_timeout")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("outcome unknown") && message.contains("sequence number 1"),
        "{v}"
    );
    // Durable on the leader; on the follower once one connects.
    assert_eq!(lc.state().0, 1);
    let f = follower(&dir.path().join("f"), &leader.url, &[]);
    let fc = f.client();
    same_state(&[&lc, &fc]);
    let (s, v) = lc.post("/v1/collections/v/records", json!({"vector": vector(1, 4)}));
    assert_eq!(s, 200, "{v}");
    let (_, m) = lc.get("/metrics");
    assert!(
        m.as_str().unwrap().contains("valori_sync_timeouts_total 1"),
        "{m}"
    );
}

/// A client that writes continuously to whichever node is the leader, recording every
/// acknowledged write (its id and its unique metadata).
struct Writer {
    target: Arc<Mutex<String>>,
    acked: Arc<Mutex<BTreeMap<u64, String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(url: &str) -> Writer {
        let target = Arc::new(Mutex::new(url.to_string()));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, a, s) = (target.clone(), acked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut sent = 0u64;
            while !s.load(Ordering::SeqCst) {
                let url = t.lock().unwrap().clone();
                let c = Client::new(&url);
                let meta = format!("write-{sent}");
                sent += 1;
                let body = json!({"vector": vector(sent, 4), "metadata": b64(meta.as_bytes())});
                match c.try_call("POST", "/v1/collections/v/records", Some(&body)) {
                    Ok((200, v)) => {
                        a.lock().unwrap().insert(v["id"].as_u64().unwrap(), meta);
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            sent
        });
        Writer {
            target,
            acked,
            stop,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn wait_for(&self, more: usize) {
        let goal = self.acked() + more;
        wait_until(120, "acknowledged writes", || self.acked() >= goal);
    }

    fn retarget(&self, url: &str) {
        *self.target.lock().unwrap() = url.to_string();
    }

    fn finish(mut self) -> BTreeMap<u64, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Acknowledged writes missing (or different) on a node.
fn lost_on(c: &Client, acked: &BTreeMap<u64, String>) -> usize {
    acked
        .iter()
        .filter(|(id, meta)| {
            let (s, v) = c.get(&format!("/v1/collections/v/records/{id}"));
            s != 200 || v["metadata"] != b64(meta.as_bytes())
        })
        .count()
}

/// Kills the leader under a continuous writer, promotes the most advanced follower with
/// epoch 2, points the other at it, restarts the old leader and demotes it: it rejoins by
/// itself. Returns the acknowledged writes and how many of them the new leader lacks.
fn fail_over(sync: bool) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let sync_args: &[&str] = if sync {
        &["--sync-replicas", "1", "--sync-timeout-ms", "5000"]
    } else {
        &[]
    };
    let mut old = Node::start(&dir.path().join("a"), sync_args);
    let oc = old.client();
    let f1 = follower(&dir.path().join("b"), &old.url, sync_args);
    let f2 = follower(&dir.path().join("c"), &old.url, sync_args);
    let (c1, c2) = (f1.client(), f2.client());
    same_state(&[&oc, &c1, &c2]);
    assert_eq!(
        oc.post("/v1/collections", json!({"name": "v", "dimension": 4}))
            .0,
        201
    );
    let writer = Writer::start(&old.url);
    writer.wait_for(150);

    old.kill();
    // The arbiter: the follower with the highest durable sequence number is promoted.
    let (s1, s2) = (role(&c1)["seq"].as_u64(), role(&c2)["seq"].as_u64());
    let (new, other) = if s1 >= s2 { (&c1, &c2) } else { (&c2, &c1) };
    promote(new, 2);
    point_at(other, &new.base, 2);
    writer.retarget(&new.base);
    writer.wait_for(150);

    // The old leader returns (still a leader at epoch 1 by its flags) and is demoted.
    let args: Vec<String> = old.args.clone();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let old = Node::start(&dir.path().join("a"), &refs);
    let oc = old.client();
    point_at(&oc, &new.base, 2);
    writer.wait_for(50);
    let acked = writer.finish();

    same_state(&[new, other, &oc]);
    for c in [new, other, &oc] {
        assert_eq!(role(c)["epoch"], 2);
    }
    let lost = lost_on(new, &acked);
    for c in [other, &oc] {
        assert_eq!(lost_on(c, &acked), lost, "{} holds other writes", c.base);
    }
    (acked.len(), lost)
}

#[test]
fn synchronous_failover_loses_no_acknowledged_write() {
    let (acked, lost) = fail_over(true);
    println!("synchronous failover: {acked} acknowledged writes, {lost} lost");
    assert_eq!(lost, 0);
}

#[test]
fn asynchronous_failover_reports_what_it_lost() {
    let (acked, lost) = fail_over(false);
    // Asynchronous replication may lose the writes acknowledged after the last one a
    // follower fetched; the number is the report.
    println!("asynchronous failover: {acked} acknowledged writes, {lost} lost");
    assert!(lost < acked);
}

#[test]
fn a_stale_leader_is_fenced_and_no_follower_accepts_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let old = Node::start(&dir.path().join("a"), &[]);
    let oc = old.client();
    oc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let (p1, p2) = (Proxy::new(&old.url), Proxy::new(&old.url));
    let f1 = follower(&dir.path().join("b"), &p1.url, &[]);
    let f2 = follower(&dir.path().join("c"), &p2.url, &[]);
    let (c1, c2) = (f1.client(), f2.client());
    same_state(&[&oc, &c1, &c2]);

    // The leader is cut off; the arbiter promotes f1 with epoch 2 and points f2 at it.
    p1.partition();
    p2.partition();
    promote(&c1, 2);
    point_at(&c2, &c1.base, 2);
    assert_eq!(
        c1.post("/v1/collections/v/records", json!({"vector": vector(1, 4)}))
            .0,
        200
    );
    same_state(&[&c1, &c2]);
    assert_eq!(role(&c2)["seen_epoch"], 2);

    // The link comes back. The old leader still believes it leads: a follower that has seen
    // epoch 2 (here f2, pointed at it by a stale decision, with epoch 3) fences it with its
    // first request, and refuses its stream.
    p1.heal();
    p2.heal();
    let before = c2.state();
    point_at(&c2, &p2.url, 3);
    wait_until(15, "the old leader to be fenced", || {
        role(&oc)["writable"] == false
    });
    let (s, v) = oc.post("/v1/collections/v/records", json!({"vector": vector(2, 4)}));
    assert_eq!((s, v["code"].as_str()), (503, Some("fenced")), "{v}");
    assert_eq!(oc.get("/readyz").0, 503);
    let (_, m) = oc.get("/metrics");
    assert!(m.as_str().unwrap().contains("valori_fenced 1"), "{m}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        c2.state(),
        before,
        "a follower took a stale leader's stream"
    );
    // Restarting does not unfence it: the epoch it learnt is persisted.
    drop(old);
    let old = Node::start(&dir.path().join("a"), &[]);
    assert_eq!(role(&old.client())["writable"], false);
}

/// A fence orders with commits (a switchover reads the fenced leader's final sequence number
/// and waits for the new leader to reach it): a write whose group passed its role check before
/// the fence either commits before the fence is answered, so the answer counts it, or is
/// refused. Before, the fence took effect beside the writer: the fenced leader answered with
/// the old sequence number while the held group went on to commit and answer 200 after it.
#[test]
fn a_fence_is_answered_only_after_the_group_in_progress_commits() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let waiting = dir.path().join("gate.waiting");
    let node = Node::try_start_env(
        &dir.path().join("data"),
        &[],
        &[("VALORI_TEST_COMMIT_GATE", gate.to_str().unwrap())],
    )
    .expect("node starts");
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 3}));
    std::fs::write(&gate, b"").unwrap();
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.post("/v1/collections/v/records", json!({"vector": [1, 2, 3]}))
        })
    };
    common::wait_until(60, "the commit to reach the gate", || waiting.exists());
    // The switchover's fence: a write key naming a higher epoch.
    let fence = {
        let url = node.url.clone();
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let r = http
                .get(format!("{url}/v1/role"))
                .header("x-valori-epoch", "2")
                .send()
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().unwrap())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !fence.is_finished(),
        "the fence was answered while a group that passed its role check was still to commit"
    );
    std::fs::remove_file(&gate).unwrap();
    let (ws, w) = writer.join().unwrap();
    let (fs, f) = fence.join().unwrap();
    assert_eq!(fs, 200, "{f}");
    assert_eq!(f["writable"], false, "{f}");
    match ws {
        200 => assert!(
            f["seq"].as_u64() >= w["seq"].as_u64(),
            "a write acknowledged after the fence's answer: fence {f}, write {w}"
        ),
        _ => assert_eq!(w["code"], "fenced", "{w}"),
    }
    // And nothing commits after it.
    let (s, v) = c.post("/v1/collections/v/records", json!({"vector": [1, 2, 3]}));
    assert_eq!((s, v["code"].as_str()), (503, Some("fenced")), "{v}");
    assert_eq!(c.state().0, f["seq"].as_u64().unwrap());
}

/// Only a follower presenting the replication credential (the read-write key) confirms a
/// synchronous write: a read-only key can read the leader's chain hashes too, so its claim to
/// hold them proves nothing. Before, a read-only follower's confirmation was counted.
#[test]
fn only_a_follower_with_the_write_key_confirms_a_synchronous_write() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &[
            "--api-key",
            "w",
            "--read-api-key",
            "r",
            "--sync-replicas",
            "1",
            "--sync-timeout-ms",
            "1000",
        ],
    );
    let lc = leader.client().with_key("w");
    let reader = follower(
        &dir.path().join("r"),
        &leader.url,
        &["--leader-api-key", "r"],
    );
    wait_until(30, "the read-only follower to read the log", || {
        lc.get("/v1/replication").1["followers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    });
    let (s, v) = lc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("replication_timeout")),
        "a read-only follower confirmed a write: {v}"
    );
    drop(reader);
    let _writer = follower(
        &dir.path().join("w"),
        &leader.url,
        &["--leader-api-key", "w"],
    );
    wait_until(30, "the credentialed follower to confirm", || {
        let (s, _) = lc.post("/v1/collections/v/records", json!({"vector": vector(1, 4)}));
        s == 200
    });
}

/// `--min-replicas-to-write`: a leader refuses writes (503 `not_enough_replicas`, nothing
/// changed) while fewer followers than required have confirmed within the lag, so that an
/// isolated leader stops acknowledging what a failover would lose.
#[test]
fn a_leader_without_enough_followers_in_touch_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag-ms",
            "1500",
        ],
    );
    let lc = leader.client();
    let (s, v) = lc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("not_enough_replicas")),
        "{v}"
    );
    assert_eq!(lc.state().0, 0, "nothing was written");
    let mut f = follower(&dir.path().join("f"), &leader.url, &[]);
    wait_until(30, "a follower to be in touch", || {
        lc.post("/v1/collections", json!({"name": "v", "dimension": 4}))
            .0
            == 201
    });
    assert_eq!(
        lc.post("/v1/collections/v/records", json!({"vector": vector(1, 4)}))
            .0,
        200
    );
    // Its follower gone, the leader stops taking writes within the lag.
    f.kill();
    let cut = Instant::now();
    wait_until(30, "writes to be refused", || {
        let (s, v) = lc.post("/v1/collections/v/records", json!({"vector": vector(2, 4)}));
        s == 503 && v["code"] == "not_enough_replicas"
    });
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "{:?}",
        cut.elapsed()
    );
    let (_, m) = lc.get("/metrics");
    assert!(
        m.as_str()
            .unwrap()
            .contains("valori_writes_refused_replicas_total"),
        "{m}"
    );
}
