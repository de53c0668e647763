//! Leader/follower replication across separate node processes on 127.0.0.1.

mod common;

use common::{
    b64, follower, free_port, vector, wait_for_divergence, wait_until, Client, Node, Proxy,
};
use serde_json::json;

fn caught_up(leader: &Client, followers: &[&Client]) {
    let target = leader.state();
    for f in followers {
        wait_until(120, "a follower to catch up", || {
            f.try_call("GET", "/v1/state", None)
                .is_ok_and(|(s, v)| s == 200 && v["seq"].as_u64() == Some(target.0))
        });
        assert_eq!(
            f.state(),
            target,
            "follower state differs from the leader's"
        );
    }
}

/// Mixed writes: collections, single and batch inserts, deletes, graph operations.
fn write_mix(c: &Client, round: u64, n: u64) {
    for i in 0..n {
        let k = round * 1_000_000 + i;
        match i % 10 {
            0 => {
                let recs: Vec<_> = (0..5)
                    .map(|j| json!({"vector": vector(k * 5 + j, 8), "tag": j}))
                    .collect();
                assert_eq!(
                    c.post("/v1/collections/v/records/batch", json!({"records": recs}))
                        .0,
                    200
                );
            }
            1 => {
                c.delete(&format!("/v1/collections/v/records/{}", i / 2));
            }
            2 => {
                c.post("/v1/graph/nodes", json!({"kind": "n"}));
            }
            3 => {
                c.post(
                    "/v1/graph/edges",
                    json!({"from": 0, "to": i % 7, "kind": "e"}),
                );
            }
            _ => {
                assert_eq!(
                    c.post(
                        "/v1/collections/v/records",
                        json!({"vector": vector(k, 8), "tag": i % 3})
                    )
                    .0,
                    200
                );
            }
        }
    }
}

#[test]
fn leader_and_two_followers_stay_identical() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let port_s = port.to_string();
    let leader_args = ["--http-port", port_s.as_str(), "--snapshot-every", "0"];
    let mut leader = Node::start(&dir.path().join("leader"), &leader_args);
    let lc = leader.client();
    lc.post("/v1/collections", json!({"name": "v", "dimension": 8, "index": {"type": "hnsw", "m": 8, "ef_construction": 40}}));
    lc.post("/v1/graph/nodes", json!({"kind": "root"}));
    let mut f1 = follower(&dir.path().join("f1"), &leader.url, &[]);
    let f2 = follower(&dir.path().join("f2"), &leader.url, &[]);

    // 10,000+ events from four concurrent writers.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let c = leader.client();
            std::thread::spawn(move || write_mix(&c, t, 3_000))
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    assert!(lc.state().0 > 10_000);
    caught_up(&lc, &[&f1.client(), &f2.client()]);
    // Searches on followers equal the leader's.
    for q in 0..20 {
        let body = json!({"vector": vector(q * 13, 8), "k": 10, "tag": q % 3});
        let want = lc.post("/v1/collections/v/search", body.clone()).1;
        assert_eq!(
            f1.client().post("/v1/collections/v/search", body.clone()).1,
            want
        );
        assert_eq!(f2.client().post("/v1/collections/v/search", body).1, want);
    }
    // Followers refuse writes, naming the leader.
    let (s, v) = f1
        .client()
        .post("/v1/collections/v/records", json!({"vector": vector(1, 8)}));
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("read_only_follower")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains(&leader.url), "{v}");

    // SIGKILL a follower mid-stream; it resumes from its own log.
    let writer = {
        let c = leader.client();
        std::thread::spawn(move || write_mix(&c, 9, 600))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    f1.kill();
    writer.join().unwrap();
    f1 = follower(&dir.path().join("f1"), &leader.url, &[]);
    caught_up(&lc, &[&f1.client(), &f2.client()]);

    // SIGKILL the leader; restart it on the same address; followers reconnect and resume.
    let before = lc.state();
    leader.kill();
    leader = Node::start(&dir.path().join("leader"), &leader_args);
    let lc = leader.client();
    assert_eq!(lc.state(), before, "the leader lost acknowledged writes");
    write_mix(&lc, 10, 200);
    caught_up(&lc, &[&f1.client(), &f2.client()]);
    let (_, m) = f2.client().get("/metrics");
    let m = m.as_str().unwrap().to_string();
    assert!(m.contains("valori_replication_lag"), "lag metric missing");
    // Caught-up followers compare full state hashes with the leader: no false divergence.
    assert_eq!(f1.client().get("/readyz").0, 200);
    assert_eq!(f2.client().get("/readyz").0, 200);
    // The leader knows both followers and that they are caught up.
    wait_until(30, "the leader to see both followers caught up", || {
        let (_, r) = lc.get("/v1/replication");
        let f = r["followers"].as_array().cloned().unwrap_or_default();
        f.len() == 2 && f.iter().all(|x| x["lag_events"] == 0)
    });
    let (_, m) = lc.get("/metrics");
    assert!(m
        .as_str()
        .unwrap()
        .contains("valori_follower_sequence_number{follower="));
}

/// The follower holds only the leader's read-only key: downloading a snapshot is a read.
#[test]
fn a_follower_bootstraps_from_a_snapshot_when_the_log_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &[
            "--snapshot-every",
            "100",
            "--snapshot-keep",
            "1",
            "--api-key",
            "w",
            "--read-api-key",
            "r",
        ],
    );
    let lc = leader.client().with_key("w");
    lc.post("/v1/collections", json!({"name": "v", "dimension": 8}));
    write_mix(&lc, 0, 450);
    let (_, log) = lc.get("/v1/log?from=1&limit=1");
    assert!(
        log["first_retained"].as_u64().unwrap() > 1,
        "the leader should have pruned: {log}"
    );
    let f = follower(
        &dir.path().join("f"),
        &leader.url,
        &["--leader-api-key", "r"],
    );
    caught_up(&lc, &[&f.client()]);
    let (_, m) = f.client().get("/metrics");
    assert!(
        m.as_str()
            .unwrap()
            .contains("valori_replication_bootstraps_total 1"),
        "expected exactly one bootstrap: {}",
        m.as_str().unwrap()
    );
    // The snapshot came through a download file, which is gone: only the installed snapshot
    // is left.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("f/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.len() == 1 && names[0].ends_with(".vsnap"),
        "{names:?}"
    );
    // It is the leader's snapshot, byte for byte, under the same name.
    let ours = std::fs::read(dir.path().join("f/snapshots").join(&names[0])).unwrap();
    let theirs = std::fs::read(dir.path().join("leader/snapshots").join(&names[0])).unwrap();
    assert!(
        ours == theirs,
        "the installed snapshot differs from the leader's"
    );
    // And it keeps streaming afterwards.
    write_mix(&lc, 1, 50);
    caught_up(&lc, &[&f.client()]);
}

/// A follower away while its leader took a snapshot and pruned the log past the follower's
/// last entry comes back by bootstrapping from that snapshot: the leader no longer has the
/// chain hash to compare with, which is not divergence (a rolling restart across a snapshot
/// once stopped the follower as diverged).
#[test]
fn a_follower_back_after_its_leader_pruned_past_it_bootstraps_and_is_not_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &["--snapshot-every", "0", "--snapshot-keep", "1"],
    );
    let lc = leader.client();
    lc.post("/v1/collections", json!({"name": "v", "dimension": 8}));
    write_mix(&lc, 0, 20);
    let fdir = dir.path().join("f");
    let mut f = follower(&fdir, &leader.url, &["--snapshot-every", "0"]);
    caught_up(&lc, &[&f.client()]);
    let away_at = f.client().state().0;
    f.kill();
    write_mix(&lc, 1, 20);
    let (s, v) = lc.post("/v1/snapshots", json!({}));
    assert_eq!(s, 201, "{v}");
    let (_, log) = lc.get("/v1/log?from=1&limit=1");
    assert!(
        log["first_retained"].as_u64().is_none_or(|r| r > away_at),
        "the leader should have pruned past {away_at}: {log}"
    );
    let f = follower(&fdir, &leader.url, &["--snapshot-every", "0"]);
    let fc = f.client();
    caught_up(&lc, &[&fc]);
    let (_, m) = fc.get("/metrics");
    let m = m.as_str().unwrap();
    assert!(m.contains("valori_replication_divergences_total 0"), "{m}");
    assert!(m.contains("valori_replication_bootstraps_total 1"), "{m}");
    assert_eq!(fc.get("/readyz").0, 200);
    write_mix(&lc, 2, 5);
    caught_up(&lc, &[&fc]);
}

/// The follower holds only the leader's read-only key, and the leader has no snapshot: healing
/// starts from the empty state and streams the leader's whole log.
#[test]
fn divergence_is_detected_and_healed() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &[
            "--snapshot-every",
            "0",
            "--api-key",
            "w",
            "--read-api-key",
            "r",
        ],
    );
    let lc = leader.client().with_key("w");
    lc.post("/v1/collections", json!({"name": "v", "dimension": 8}));
    for i in 0..60 {
        lc.post("/v1/collections/v/records", json!({"vector": vector(i, 8)}));
    }
    let fdir = dir.path().join("f");
    let mut f = follower(&fdir, &leader.url, &["--leader-api-key", "r"]);
    caught_up(&lc, &[&f.client()]);
    f.kill();

    // Alter the follower's history at sequence number 20 while it is stopped, keeping its own
    // log self-consistent (its chain hashes are recomputed), so only the leader can tell.
    {
        let store = valori_node::store::Store::open(&fdir).unwrap();
        let entries: Vec<_> = store.entries_from(1).map(Result::unwrap).collect();
        let mut k = valori_kernel::Kernel::new();
        let mut rewritten = Vec::new();
        for mut e in entries {
            if e.seq == 20 {
                let mut ev = valori_kernel::Event::decode(&e.event).unwrap();
                if let valori_kernel::Event::Insert { records, .. } = &mut ev {
                    records[0].vector[0] = valori_kernel::Fixed(records[0].vector[0].0 + 1);
                }
                e.event = ev.encode();
            }
            k.apply(&valori_kernel::Event::decode(&e.event).unwrap())
                .unwrap();
            e.chain = k.chain_hash();
            rewritten.push(e);
        }
        store.append(&rewritten).unwrap();
    }
    f = follower(&fdir, &leader.url, &["--leader-api-key", "r"]);
    let fc = f.client();
    let m = wait_for_divergence(&fc, 30, "sequence number 20");
    assert!(m.contains("valori_replication_divergences_total 1"), "{m}");
    // It stops applying: new leader writes do not reach it.
    lc.post(
        "/v1/collections/v/records",
        json!({"vector": vector(999, 8)}),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(fc.state().0, 61);
    f.kill();

    // With healing on, it starts again from the empty state (the leader has no snapshot and
    // its log begins at 1) and matches.
    f = follower(
        &fdir,
        &leader.url,
        &["--replication-heal", "--leader-api-key", "r"],
    );
    caught_up(&lc, &[&f.client()]);
    assert_eq!(f.client().get("/readyz").0, 200);
    assert_eq!(
        lc.get("/v1/snapshots").1["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "the leader was not asked for a snapshot"
    );
}

#[test]
fn a_partitioned_follower_catches_up_after_healing() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(&dir.path().join("leader"), &["--api-key", "secret"]);
    let lc = leader.client().with_key("secret");
    lc.post("/v1/collections", json!({"name": "v", "dimension": 8}));
    write_mix(&lc, 0, 100);
    let proxy = Proxy::new(&leader.url);
    // The replication stream needs the key when keys are configured.
    let f = follower(
        &dir.path().join("f"),
        &proxy.url,
        &["--leader-api-key", "secret"],
    );
    let fc = f.client();
    caught_up(&lc, &[&fc]);

    proxy.partition();
    let cut_at = fc.state().0;
    write_mix(&lc, 1, 200);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(fc.state().0, cut_at, "no traffic should pass the partition");
    // Reads keep working on the follower while it is cut off.
    assert_eq!(
        fc.post(
            "/v1/collections/v/search",
            json!({"vector": vector(1, 8), "k": 3})
        )
        .0,
        200
    );

    proxy.heal();
    caught_up(&lc, &[&fc]);
}

#[test]
fn a_follower_without_the_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(&dir.path().join("leader"), &["--api-key", "secret"]);
    let lc = leader.client().with_key("secret");
    lc.post("/v1/collections", json!({"name": "v", "dimension": 8}));
    let f = follower(&dir.path().join("f"), &leader.url, &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(f.client().state().0, 0, "the stream must need the key");
    assert_eq!(leader.client().get("/v1/log").0, 401);
}

/// Log pages are bounded in bytes, not only in entries (always at least one entry): large
/// events come a few at a time, and a follower streams them across many pages.
#[test]
fn log_pages_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let leader = Node::start(
        &dir.path().join("leader"),
        &["--max-log-page-bytes", "200000", "--snapshot-every", "0"],
    );
    let lc = leader.client();
    lc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let meta = b64(&[9u8; 4096]);
    for b in 0..10u64 {
        let records: Vec<_> = (0..16)
            .map(|i| json!({"vector": vector(b * 16 + i, 4), "metadata": meta}))
            .collect();
        let (s, v) = lc.post(
            "/v1/collections/v/records/batch",
            json!({ "records": records }),
        );
        assert_eq!(s, 200, "{v}");
    }
    // Each batch is about 66 KB of event: three fit in 200,000 bytes, the whole log does not.
    let (s, page) = lc.get("/v1/log?from=1&limit=1000");
    assert_eq!(s, 200, "{page}");
    let n = page["entries"].as_array().unwrap().len();
    assert!((2..=4).contains(&n), "{n} entries in one page");
    assert_eq!(page["next"], json!(n + 1));
    assert_eq!(page["head"], json!(11));
    // A page whose first entry alone is over the limit still carries it.
    let small = Node::start(
        &dir.path().join("small"),
        &["--max-log-page-bytes", "1000", "--snapshot-every", "0"],
    );
    let sc = small.client();
    sc.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let records: Vec<_> = (0..16)
        .map(|i| json!({"vector": vector(i, 4), "metadata": meta}))
        .collect();
    sc.post(
        "/v1/collections/v/records/batch",
        json!({ "records": records }),
    );
    let (_, page) = sc.get("/v1/log?from=2&limit=10");
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);

    let f = follower(&dir.path().join("f"), &leader.url, &[]);
    caught_up(&lc, &[&f.client()]);
}
