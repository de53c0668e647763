//! Every route of the HTTP API against a real node on 127.0.0.1 with a real RocksDB, including
//! each kind of bad input; every refused request leaves the state hash unchanged.

mod common;

use common::{b64, metric, vector, Client, Node};
use serde_json::{json, Value};

/// Asserts a request is refused with `status` and `code`, and that nothing changed.
fn refused(c: &Client, method: &str, path: &str, body: Option<Value>, status: u16, code: &str) {
    let before = c.state();
    let (s, v) = c.call(method, path, body.as_ref());
    assert_eq!(s, status, "{method} {path}: {v}");
    assert_eq!(v["code"], code, "{method} {path}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(c.state(), before, "{method} {path} changed the state");
}

#[test]
fn collections_records_search_and_graph() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--snapshot-every", "0"]);
    let c = node.client();

    let (s, v) = c.post(
        "/v1/collections",
        json!({"name": "docs", "dimension": 4, "metric": "l2", "index": {"type": "hnsw", "m": 8}}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["seq"], 1);
    let (s, v) = c.post(
        "/v1/collections",
        json!({"name": "flat", "dimension": 2, "metric": "cosine", "index": {"type": "flat"}}),
    );
    assert_eq!(s, 201, "{v}");

    let (s, v) = c.get("/v1/collections/docs");
    assert_eq!(s, 200);
    assert_eq!(v["dimension"], 4);
    assert_eq!(v["metric"], "l2");
    assert_eq!(v["index"]["m"], 8);
    let (_, v) = c.get("/v1/collections");
    assert_eq!(v["collections"].as_array().unwrap().len(), 2);

    // Single insert with tag and metadata, then a batch.
    let (s, v) = c.post(
        "/v1/collections/docs/records",
        json!({"vector": [0.5, -1.25, 3.0, 0.0], "tag": 7, "metadata": b64(b"first")}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], 0);
    let records: Vec<Value> = (0..20)
        .map(|i| json!({"vector": vector(i, 4), "tag": i % 3}))
        .collect();
    let (s, v) = c.post(
        "/v1/collections/docs/records/batch",
        json!({ "records": records }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ids"].as_array().unwrap().len(), 20);
    assert_eq!(v["ids"][0], 1);
    assert_eq!(v["ids"][19], 20);

    // Get returns exactly what was stored.
    let (s, v) = c.get("/v1/collections/docs/records/0");
    assert_eq!(s, 200);
    assert_eq!(v["vector"], json!([0.5, -1.25, 3.0, 0.0]));
    assert_eq!(v["tag"], 7);
    assert_eq!(v["metadata"], b64(b"first"));

    // Search: exact match first with distance 0, ordered by (distance, id).
    let (s, v) = c.post(
        "/v1/collections/docs/search",
        json!({"vector": [0.5, -1.25, 3.0, 0.0], "k": 5, "with_metadata": true}),
    );
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["id"], 0);
    assert_eq!(results[0]["distance"], 0);
    assert_eq!(results[0]["metadata"], b64(b"first"));
    let d: Vec<(i64, i64)> = results
        .iter()
        .map(|r| (r["distance"].as_i64().unwrap(), r["id"].as_i64().unwrap()))
        .collect();
    assert!(d.windows(2).all(|w| w[0] < w[1]), "{d:?}");
    // Tag filter: only that tag.
    let (_, v) = c.post(
        "/v1/collections/docs/search",
        json!({"vector": vector(3, 4), "k": 50, "tag": 1}),
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    assert!(results.iter().all(|r| r["tag"] == 1));

    // Delete, then the record is gone from get and search.
    let (s, _) = c.delete("/v1/collections/docs/records/0");
    assert_eq!(s, 200);
    assert_eq!(c.get("/v1/collections/docs/records/0").0, 404);
    let (_, v) = c.post(
        "/v1/collections/docs/search",
        json!({"vector": [0.5, -1.25, 3.0, 0.0], "k": 3}),
    );
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["id"] != 0));

    // Graph.
    let (s, v) = c.post("/v1/graph/nodes", json!({"kind": "person", "record": {"collection": "docs", "id": 1}, "properties": b64(b"{}")}));
    assert_eq!(s, 201, "{v}");
    let a = v["id"].as_u64().unwrap();
    let (_, v) = c.post("/v1/graph/nodes", json!({"kind": "place"}));
    let b = v["id"].as_u64().unwrap();
    let (s, v) = c.post(
        "/v1/graph/edges",
        json!({"from": a, "to": b, "kind": "lives_in"}),
    );
    assert_eq!(s, 201, "{v}");
    let e = v["id"].as_u64().unwrap();
    let (_, v) = c.get(&format!("/v1/graph/nodes/{a}"));
    assert_eq!(v["kind"], "person");
    assert_eq!(v["record"]["id"], 1);
    let (_, v) = c.get(&format!("/v1/graph/edges/{e}"));
    assert_eq!(v["to"], b);
    let (s, v) = c.get(&format!(
        "/v1/graph/nodes/{a}/neighbors?kind=lives_in&direction=out"
    ));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["neighbors"][0]["node"], b);
    let (_, v) = c.get(&format!("/v1/graph/nodes/{b}/neighbors?direction=in"));
    assert_eq!(v["neighbors"][0]["node"], a);
    let (s, v) = c.post("/v1/graph/traverse", json!({"start": a, "max_depth": 2}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["nodes"],
        json!([{"node": a, "depth": 0}, {"node": b, "depth": 1}])
    );
    assert_eq!(c.delete(&format!("/v1/graph/edges/{e}")).0, 200);
    assert_eq!(c.delete(&format!("/v1/graph/nodes/{b}")).0, 200);
    assert_eq!(c.get(&format!("/v1/graph/nodes/{b}")).0, 404);

    // Drop a collection.
    assert_eq!(c.delete("/v1/collections/flat").0, 200);
    assert_eq!(c.get("/v1/collections/flat").0, 404);

    // State at a past sequence number.
    let (seq, chain, _) = c.state();
    let (s, v) = c.get(&format!("/v1/state?seq={seq}"));
    assert_eq!(s, 200);
    assert_eq!(v["chain_hash"], chain);
    let (s, v) = c.get("/v1/state?seq=1");
    assert_eq!(s, 200);
    assert_ne!(v["chain_hash"], chain);
    assert_eq!(c.get(&format!("/v1/state?seq={}", seq + 1)).0, 404);
}

#[test]
fn default_collection_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    // Searching before anything exists: a clear 404.
    let (s, v) = c.post("/v1/search", json!({"vector": vec![0.1; 16], "k": 1}));
    assert_eq!((s, v["code"].as_str()), (404, Some("collection_not_found")));
    // The first insert fixes the dimension (the reference README's flow).
    let (s, v) = c.post(
        "/v1/records",
        json!({"vector": vec![0.1; 16], "metadata": b64(b"meta")}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], 0);
    let (s, v) = c.post("/v1/records/batch", json!({"records": [{"vector": vec![0.1; 16]}, {"vector": vec![0.2; 16]}, {"vector": vec![0.3; 16]}]}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ids"], json!([1, 2, 3]));
    let (_, v) = c.post("/v1/search", json!({"vector": vec![0.3; 16], "k": 1}));
    assert_eq!(v["results"][0]["id"], 3);
    assert_eq!(v["results"][0]["distance"], 0);
    assert_eq!(c.get("/v1/records/0").1["metadata"], b64(b"meta"));
    assert_eq!(c.delete("/v1/records/0").0, 200);
    assert_eq!(c.get("/v1/records/0").0, 404);
    refused(
        &c,
        "POST",
        "/v1/records",
        Some(json!({"vector": vec![0.1; 8]})),
        400,
        "dimension_mismatch",
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &["--max-body-bytes", "200000", "--max-batch", "50"],
    );
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 3}));
    c.post("/v1/collections/v/records", json!({"vector": [1, 2, 3]}));

    let p = "/v1/collections/v/records";
    // (method, path, body, status, code): each refused, and nothing changed.
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("POST", p, Some(json!({"vector": [1, 2]})), 400, "dimension_mismatch"),
        ("POST", p, Some(json!({"vector": [1, 2, 40000]})), 400, "out_of_range"),
        ("POST", p, Some(json!({"vector": [1, 2, -1e300]})), 400, "out_of_range"),
        ("POST", p, Some(json!({"vector": [1, 2, 3], "metadata": b64(&[0; 65537])})), 400, "too_large"),
        ("POST", p, Some(json!({"vector": [1, 2, 3], "metadata": "***"})), 400, "bad_request"),
        ("POST", p, Some(json!({"vector": [1, 2, 3], "colour": "red"})), 400, "bad_request"),
        ("POST", p, Some(json!({"vector": "nope"})), 400, "bad_request"),
        ("POST", "/v1/collections/nope/records", Some(json!({"vector": [1, 2, 3]})), 404, "collection_not_found"),
        ("DELETE", "/v1/collections/v/records/99", None, 404, "record_not_found"),
        ("GET", "/v1/collections/v/records/99", None, 404, "record_not_found"),
        ("GET", "/v1/collections/v/records/abc", None, 400, "bad_request"),
        ("POST", "/v1/collections", Some(json!({"name": "v", "dimension": 3})), 409, "collection_exists"),
        ("POST", "/v1/collections", Some(json!({"name": "w", "dimension": 0})), 400, "invalid_dimension"),
        ("POST", "/v1/collections", Some(json!({"name": "w", "dimension": 3, "metric": "manhattan"})), 400, "bad_request"),
        ("POST", "/v1/collections", Some(json!({"name": "bad name", "dimension": 3})), 400, "invalid_name"),
        ("POST", "/v1/collections/v/search", Some(json!({"vector": [1, 2, 3], "k": 0})), 400, "invalid_search"),
        ("POST", "/v1/collections/v/search", Some(json!({"vector": [1, 2], "k": 1})), 400, "dimension_mismatch"),
        ("POST", "/v1/graph/edges", Some(json!({"from": 0, "to": 1, "kind": "x"})), 404, "node_not_found"),
        ("DELETE", "/v1/graph/edges/5", None, 404, "edge_not_found"),
        ("GET", "/v1/graph/nodes/5/neighbors?direction=sideways", None, 400, "bad_request"),
        ("GET", "/v1/nowhere", None, 404, "not_found"),
        // What the OpenAPI document forbids is refused.
        ("POST", "/v1/collections", Some(json!({"name": "w", "dimension": 3, "index": {"type": "flat", "x": 1}})), 400, "bad_request"),
        ("POST", "/v1/collections", Some(json!({"name": "w", "dimension": 3, "index": {"type": "flat", "m": 8}})), 400, "bad_request"),
        ("POST", "/v1/collections", Some(json!({"name": "w", "dimension": 3.5})), 400, "bad_request"),
        ("GET", "/v1/log?wait_ms=30001", None, 400, "limit_exceeded"),
        ("GET", "/v1/state?seq=18446744073709551616", None, 400, "bad_request"),
        ("PUT", "/v1/role", Some(json!({"role": "follower", "epoch": 5, "leader_url": "http://"})), 400, "bad_request"),
    ];
    for (method, path, body, status, code) in cases {
        refused(&c, method, path, body, status, code);
    }
    // A batch is all or nothing: one bad record refuses the rest.
    let mut recs: Vec<Value> = (0..5).map(|i| json!({"vector": vector(i, 3)})).collect();
    recs.push(json!({"vector": [1, 2, f64::MAX]}));
    refused(
        &c,
        "POST",
        "/v1/collections/v/records/batch",
        Some(json!({"records": recs})),
        400,
        "bad_request",
    );
    let mut recs: Vec<Value> = (0..5).map(|i| json!({"vector": vector(i, 3)})).collect();
    recs.push(json!({"vector": [1, 2]}));
    refused(
        &c,
        "POST",
        "/v1/collections/v/records/batch",
        Some(json!({"records": recs})),
        400,
        "dimension_mismatch",
    );
    let recs: Vec<Value> = (0..51).map(|i| json!({"vector": vector(i, 3)})).collect();
    refused(
        &c,
        "POST",
        "/v1/collections/v/records/batch",
        Some(json!({"records": recs})),
        400,
        "limit_exceeded",
    );
    refused(
        &c,
        "POST",
        "/v1/collections/v/records/batch",
        Some(json!({"records": []})),
        400,
        "empty_batch",
    );

    // Malformed JSON and wrong content type.
    let before = c.state();
    let (s, v) = c.raw(
        "POST",
        p,
        "application/json",
        b"{\"vector\": [1, 2,".to_vec(),
    );
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (s, v) = c.raw("POST", p, "text/plain", b"{\"vector\": [1, 2, 3]}".to_vec());
    assert_eq!((s, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    // A body over the limit.
    let big = format!(
        "{{\"vector\": [1, 2, 3], \"metadata\": \"{}\"}}",
        "A".repeat(300_000)
    );
    let (s, v) = c.raw("POST", p, "application/json", big.into_bytes());
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    // A snapshot upload that is not a snapshot.
    let (s, v) = c.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        b"not a snapshot".to_vec(),
    );
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_snapshot")),
        "{v}"
    );
    assert_eq!(c.state(), before);
}

/// A number with a zero fraction is an integer to JSON Schema, and so to the API: `3.0` is
/// taken wherever an integer is, and nothing else about a body changes.
#[test]
fn integral_numbers_are_integers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    let (s, v) = c.post("/v1/collections", json!({"name": "v", "dimension": 3.0}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(c.get("/v1/collections/v").1["dimension"], 3);
    let (s, v) = c.post(
        "/v1/collections/v/records",
        json!({"vector": [1.0, 2.5, 3.0], "tag": 7.0}),
    );
    assert_eq!(s, 200, "{v}");
    let (_, r) = c.get("/v1/collections/v/records/0");
    assert_eq!(r["vector"], json!([1.0, 2.5, 3.0]));
    assert_eq!(r["tag"], 7);
    let (s, v) = c.post(
        "/v1/collections/v/search",
        json!({"vector": [1, 2.5, 3], "k": 1.0, "tag": 7.0}),
    );
    assert_eq!((s, v["results"][0]["id"].as_u64()), (200, Some(0)), "{v}");
    let (s, v) = c.post(
        "/v1/graph/nodes",
        json!({"kind": "doc", "record": {"collection": "v", "id": 0.0}}),
    );
    assert_eq!(s, 201, "{v}");
}

#[test]
fn api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("read.key");
    std::fs::write(&keyfile, "reader-key\n").unwrap();
    let data = dir.path().join("data");
    let node = Node::start(
        &data,
        &[
            "--api-key",
            "writer-key",
            "--read-api-key-file",
            keyfile.to_str().unwrap(),
        ],
    );
    let anon = node.client();
    let reader = node.client().with_key("reader-key");
    let writer = node.client().with_key("writer-key");
    let wrong = node.client().with_key("nope");

    assert_eq!(
        writer
            .post("/v1/collections", json!({"name": "v", "dimension": 2}))
            .0,
        201
    );
    let before = writer.state();
    for c in [&anon, &wrong] {
        let (s, v) = c.post("/v1/collections/v/records", json!({"vector": [1, 2]}));
        assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
        assert_eq!(c.get("/v1/state").0, 401);
    }
    let (s, v) = reader.post("/v1/collections/v/records", json!({"vector": [1, 2]}));
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    assert_eq!(reader.post("/v1/snapshots", json!({})).0, 403);
    assert_eq!(writer.state(), before);
    // Reads work with either key; writes with the read-write key; health needs none.
    assert_eq!(
        reader
            .post(
                "/v1/collections/v/search",
                json!({"vector": [1, 2], "k": 1})
            )
            .0,
        200
    );
    assert_eq!(
        writer
            .post("/v1/collections/v/records", json!({"vector": [1, 2]}))
            .0,
        200
    );
    assert_eq!(anon.get("/healthz").0, 200);
    assert_eq!(anon.get("/readyz").0, 200);
    assert_eq!(anon.get("/metrics").0, 200);
    // Every header a key may come in, as over gRPC (one parser serves both APIs); another
    // Authorization scheme is not a key, so the next header is read.
    valori_node::use_ring_for_tls();
    let http = reqwest::blocking::Client::new();
    let status = |headers: &[(&str, &str)]| {
        let mut r = http.get(format!("{}/v1/state", node.url));
        for (h, v) in headers {
            r = r.header(*h, *v);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(status(&[("x-api-key", "reader-key")]), 200);
    assert_eq!(status(&[("api-key", "reader-key")]), 200);
    assert_eq!(status(&[("authorization", "Bearer reader-key")]), 200);
    assert_eq!(
        status(&[
            ("authorization", "Basic dXNlcg=="),
            ("x-api-key", "reader-key")
        ]),
        200
    );
    assert_eq!(status(&[("authorization", "Basic dXNlcg==")]), 401);
    assert_eq!(status(&[("api-key", "nope")]), 401);
}

#[test]
fn restart_keeps_state_results_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(
        dir.path(),
        &["--snapshot-every", "25", "--prune-log", "false"],
    );
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "v", "dimension": 8, "metric": "cosine"}),
    );
    for b in 0..10 {
        let recs: Vec<Value> = (0..10)
            .map(|i| json!({"vector": vector(b * 10 + i, 8), "tag": i % 2}))
            .collect();
        assert_eq!(
            c.post("/v1/collections/v/records/batch", json!({"records": recs}))
                .0,
            200
        );
    }
    for i in 0..20 {
        c.delete(&format!("/v1/collections/v/records/{}", i * 3));
    }
    c.post("/v1/graph/nodes", json!({"kind": "k"}));
    let query = json!({"vector": vector(5, 8), "k": 10, "tag": 1});
    let before_state = c.state();
    let before_search = c.post("/v1/collections/v/search", query.clone()).1;
    assert!(!node.client().get("/v1/snapshots").1["snapshots"]
        .as_array()
        .unwrap()
        .is_empty());

    // A clean stop (SIGTERM drains and exits 0), then a start.
    assert_eq!(node.terminate(), Some(0));
    node = Node::start(
        dir.path(),
        &["--snapshot-every", "25", "--prune-log", "false"],
    );
    let c = node.client();
    assert_eq!(c.state(), before_state);
    assert_eq!(
        c.post("/v1/collections/v/search", query.clone()).1,
        before_search
    );
    // Ids continue where they were.
    let (_, v) = c.post(
        "/v1/collections/v/records",
        json!({"vector": vector(1000, 8)}),
    );
    assert_eq!(v["id"], 100);
    let (_, v) = c.post("/v1/graph/nodes", json!({"kind": "k"}));
    assert_eq!(v["id"], 1);

    // Recovery (through the newest snapshot) equals a clean replay of the whole log.
    let state = c.state();
    node.kill();
    let replayed = common::replay_log(dir.path());
    assert_eq!(replayed.seq(), state.0);
    assert_eq!(hex::encode(replayed.state_hash()), state.2);
}

#[test]
fn snapshots_download_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(&dir.path().join("a"), &["--snapshot-every", "0"]);
    let ca = a.client();
    ca.post("/v1/collections", json!({"name": "v", "dimension": 3}));
    for i in 0..30 {
        ca.post(
            "/v1/collections/v/records",
            json!({"vector": vector(i, 3), "metadata": b64(&[i as u8])}),
        );
    }
    ca.post(
        "/v1/graph/nodes",
        json!({"kind": "x", "record": {"collection": "v", "id": 3}}),
    );
    let (s, v) = ca.post("/v1/snapshots", json!({}));
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_u64().unwrap();
    assert_eq!(id, 32);
    let (_, list) = ca.get("/v1/snapshots");
    assert_eq!(list["snapshots"][0]["seq"], 32);
    let (s, bytes) = ca.bytes(&format!("/v1/snapshots/{id}"));
    assert_eq!(s, 200);
    assert_eq!(ca.get("/v1/snapshots/999").0, 404);

    // Restore into another node: identical state; then both accept the same next write.
    let b = Node::start(&dir.path().join("b"), &[]);
    let cb = b.client();
    cb.post("/v1/collections", json!({"name": "other", "dimension": 2}));
    let (s, v) = cb.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        bytes.clone(),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(cb.state(), ca.state());
    assert_eq!(cb.get("/v1/collections/other").0, 404);
    let w = json!({"vector": [9, 9, 9]});
    assert_eq!(ca.post("/v1/collections/v/records", w.clone()).1["id"], 30);
    assert_eq!(cb.post("/v1/collections/v/records", w).1["id"], 30);
    assert_eq!(cb.state(), ca.state());

    // A damaged snapshot is refused.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let (s, v) = cb.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        bad,
    );
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_snapshot")));
    assert_eq!(cb.state(), ca.state(), "a refused restore changes nothing");
    // Uploads stream through a file in the snapshot directory: the installed one was renamed
    // into place, byte for byte the snapshot sent, and the refused one is gone.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("b/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].extension().is_some_and(|e| e == "vsnap"),
        "{files:?}"
    );
    assert!(std::fs::read(&files[0]).unwrap() == bytes);

    // A node can start from a snapshot file. Temporary files a crash left in its snapshot
    // directory are removed when it opens.
    let file = dir.path().join("snap.vsnap");
    std::fs::write(&file, &bytes).unwrap();
    let stale = dir.path().join("c/snapshots/.upload-7.tmp");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"half an upload").unwrap();
    let c_node = Node::start(
        &dir.path().join("c"),
        &["--restore-from", file.to_str().unwrap()],
    );
    assert_eq!(c_node.client().state().0, 32);
    assert!(!stale.exists(), "a stale upload file survived the restart");
}

#[test]
fn every_documented_route_exists() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    let (s, spec) = c.get("/openapi.json");
    assert_eq!(s, 200);
    let paths = spec["paths"].as_object().unwrap();
    let methods: usize = paths.values().map(|m| m.as_object().unwrap().len()).sum();
    assert!(
        paths.len() >= 20 && methods >= 30,
        "{} paths, {methods} methods",
        paths.len()
    );
    for (path, methods) in paths {
        let concrete = path.replace("{name}", "v").replace("{id}", "0");
        for method in methods.as_object().unwrap().keys() {
            let (s, v) = c.call(method, &concrete, Some(&json!({})));
            assert_ne!(s, 405, "{method} {path}");
            assert!(
                !(s == 404 && v["message"] == "no such route"),
                "{method} {path} is not routed"
            );
        }
    }
    let (_, m) = c.get("/metrics");
    let m = m.as_str().unwrap().to_string();
    for name in [
        "valori_events_committed_total",
        "valori_batch_commit_duration_seconds",
        "valori_http_requests_total",
        "valori_http_request_duration_seconds",
        "valori_sequence_number",
        "valori_storage_bytes",
    ] {
        assert!(m.contains(name), "metric {name} missing");
    }
}

#[test]
fn log_retention_prunes_up_to_the_oldest_kept_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--snapshot-every", "10", "--snapshot-keep", "2"];
    let mut node = Node::start(dir.path(), &args);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 2}));
    for i in 0..44 {
        assert_eq!(
            c.post("/v1/collections/v/records", json!({"vector": vector(i, 2)}))
                .0,
            200
        );
    }
    let (_, list) = c.get("/v1/snapshots");
    let seqs: Vec<u64> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![30, 40]);
    // Entries up to 30 are gone; the chain hash at 30 still comes from the snapshot.
    assert_eq!(c.get("/v1/state?seq=5").0, 404);
    assert_eq!(c.get("/v1/state?seq=30").0, 200);
    assert_eq!(c.get("/v1/state?seq=31").0, 200);
    let before = c.state();
    assert_eq!(node.terminate(), Some(0));
    node = Node::start(dir.path(), &args);
    assert_eq!(node.client().state(), before);
    let store_first = {
        node.kill();
        valori_node::store::Store::open(dir.path())
            .unwrap()
            .first_seq()
            .unwrap()
    };
    assert_eq!(store_first, Some(31));
}

/// An auditor fetches the log over HTTP and replays it: the same chain and state hash.
#[test]
fn the_log_replays_to_the_same_state() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--snapshot-every", "0"]);
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "v", "dimension": 5, "metric": "ip"}),
    );
    for b in 0..5 {
        let recs: Vec<Value> = (0..30)
            .map(|i| json!({"vector": vector(b * 30 + i, 5), "tag": i % 5}))
            .collect();
        c.post(
            "/v1/collections/v/records/batch",
            json!({ "records": recs }),
        );
    }
    c.delete("/v1/collections/v/records/4");
    c.post(
        "/v1/graph/nodes",
        json!({"kind": "n", "record": {"collection": "v", "id": 1}}),
    );
    let mut kernel = valori_kernel::Kernel::new();
    let mut from = 1;
    loop {
        let (s, page) = c.get(&format!("/v1/log?from={from}&limit=3"));
        assert_eq!(s, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        if entries.is_empty() {
            break;
        }
        for e in entries {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(e["event"].as_str().unwrap())
                .unwrap();
            let event = valori_kernel::Event::decode(&bytes).unwrap();
            kernel.apply(&event).unwrap();
            assert_eq!(e["seq"], kernel.seq());
            assert_eq!(e["chain_hash"], hex::encode(kernel.chain_hash()));
        }
        from = page["next"].as_u64().unwrap();
    }
    let (seq, chain, state) = c.state();
    assert_eq!(kernel.seq(), seq);
    assert_eq!(hex::encode(kernel.chain_hash()), chain);
    assert_eq!(hex::encode(kernel.state_hash()), state);
    assert_eq!(c.get("/v1/log?limit=0").0, 400);
    assert_eq!(c.get("/v1/log?limit=10001").0, 400);
}

/// Concurrent writers share group commits: every write is acknowledged once, ids are dense and
/// distinct, and each acknowledged sequence number is unique.
#[test]
fn concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    node.client()
        .post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let handles: Vec<_> = (0..6u64)
        .map(|t| {
            let c = node.client();
            std::thread::spawn(move || {
                (0..30u64)
                    .map(|i| {
                        let (s, v) = c.post(
                            "/v1/collections/v/records",
                            json!({"vector": vector(t * 100 + i, 4)}),
                        );
                        assert_eq!(s, 200, "{v}");
                        (v["id"].as_u64().unwrap(), v["seq"].as_u64().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u64, u64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let ids: Vec<u64> = all.iter().map(|a| a.0).collect();
    assert_eq!(ids, (0..180).collect::<Vec<_>>());
    let mut seqs: Vec<u64> = all.iter().map(|a| a.1).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (2..182).collect::<Vec<_>>());
    assert_eq!(node.client().state().0, 181);
}

/// Request metrics and the leader's bookkeeping of followers have bounded labels: invented
/// methods share one label, follower names are validated and at most 64 are kept.
#[test]
fn metric_labels_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    let series = |c: &Client| {
        let (_, m) = c.get("/metrics");
        m.as_str()
            .unwrap()
            .lines()
            .filter(|l| {
                l.starts_with("valori_http_requests_total{")
                    || l.starts_with("valori_follower_sequence_number{")
            })
            .count()
    };
    let http = reqwest::blocking::Client::new();
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        http.request(method, format!("{}/v1/state", node.url))
            .send()
            .unwrap();
    }
    // (The first scrape adds its own route's series.)
    series(&c);
    let before = series(&c);
    for i in 40..80 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        http.request(method, format!("{}/v1/state", node.url))
            .send()
            .unwrap();
    }
    assert_eq!(series(&c), before, "invented methods added series");
    let (_, m) = c.get("/metrics");
    assert!(m.as_str().unwrap().contains("method=\"other\""), "{m}");

    let ask = |name: &str| {
        http.get(format!("{}/v1/log?from=1", node.url))
            .header("x-valori-follower", name)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ask("bad name"), 400);
    assert_eq!(ask(&"n".repeat(129)), 400);
    for i in 0..100 {
        assert_eq!(ask(&format!("f{i}")), 200);
    }
    let (_, r) = c.get("/v1/replication");
    assert_eq!(r["followers"].as_array().unwrap().len(), 64);
    let (_, m) = c.get("/metrics");
    let follower_series = m
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("valori_follower_sequence_number{"))
        .count();
    assert_eq!(follower_series, 64);
}

#[test]
fn the_healthcheck_command_asks_the_local_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let port = node.url.rsplit(':').next().unwrap().to_string();
    let check = |port: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_valori-node"))
            .arg("healthcheck")
            .env("VALORI_HTTP_PORT", port)
            .output()
            .unwrap()
    };
    assert!(check(&port).status.success());
    drop(node);
    let out = check(&port);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("healthcheck"));
}

/// A search with metadata or a neighbour list larger than `--max-response-bytes` is refused
/// with a clear 400 before it is built, and the same query within the limit is answered.
#[test]
fn responses_above_the_byte_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--max-response-bytes", "20000"]);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "m", "dimension": 4}));
    let meta = b64(&[7u8; 4096]);
    for i in 0..10 {
        let (s, v) = c.post(
            "/v1/collections/m/records",
            json!({"vector": vector(i, 4), "metadata": meta}),
        );
        assert_eq!(s, 200, "{v}");
    }
    let search = |k: u64, with_metadata: bool| {
        c.post(
            "/v1/collections/m/search",
            json!({"vector": vector(0, 4), "k": k, "with_metadata": with_metadata}),
        )
    };
    let (s, v) = search(10, true);
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "limit_exceeded");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("--max-response-bytes"),
        "{v}"
    );
    let (s, v) = search(10, false);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 10);
    let (s, v) = search(2, true);
    assert_eq!(s, 200, "{v}");

    let (_, v) = c.post("/v1/graph/nodes", json!({"kind": "hub"}));
    let hub = v["id"].as_u64().unwrap();
    let kind = "k".repeat(120);
    for _ in 0..150 {
        let (_, v) = c.post("/v1/graph/nodes", json!({"kind": "leaf"}));
        let leaf = v["id"].as_u64().unwrap();
        let (s, v) = c.post(
            "/v1/graph/edges",
            json!({"from": hub, "to": leaf, "kind": kind}),
        );
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = c.get(&format!("/v1/graph/nodes/{hub}/neighbors?direction=out"));
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "limit_exceeded");
    let (s, _) = c.get(&format!("/v1/graph/nodes/{hub}/neighbors?direction=in"));
    assert_eq!(s, 200);
}

/// Edge-kind filters are de-duplicated and bounded: every edge is compared with each kind, so
/// an unbounded list would let one request stall a reader.
#[test]
fn edge_kind_filters_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    let (_, v) = c.post("/v1/graph/nodes", json!({"kind": "a"}));
    let a = v["id"].as_u64().unwrap();
    let (_, v) = c.post("/v1/graph/nodes", json!({"kind": "b"}));
    let b = v["id"].as_u64().unwrap();
    c.post("/v1/graph/edges", json!({"from": a, "to": b, "kind": "k"}));
    let many: Vec<String> = (0..100).map(|i| format!("kind{i}")).collect();
    let (s, v) = c.post(
        "/v1/graph/traverse",
        json!({"start": a, "max_depth": 2, "kinds": many}),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "limit_exceeded");
    let (s, v) = c.get(&format!(
        "/v1/graph/nodes/{a}/neighbors?kind={}",
        many.join(",")
    ));
    assert_eq!(s, 400, "{v}");
    // The same kind many times is one kind.
    let same = vec!["k"; 100];
    let (s, v) = c.post(
        "/v1/graph/traverse",
        json!({"start": a, "max_depth": 2, "kinds": same}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2, "{v}");
}

/// The write queue is bounded: with room for one waiting write, a burst of concurrent writes
/// gets some 503 `busy` answers (counted in a metric) instead of an unbounded queue, and every
/// write that was answered 200 is in the state.
#[test]
fn a_full_write_queue_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--max-queued-writes", "1"]);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let url = node.url.clone();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = Client::new(&url);
                (0..5)
                    .map(|i| {
                        c.post(
                            "/v1/collections/v/records",
                            json!({"vector": vector(t * 5 + i, 4)}),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok + busy.len(), answers.len(), "{answers:?}");
    assert!(
        !busy.is_empty(),
        "160 concurrent writes never found the queue full"
    );
    assert!(busy.iter().all(|(_, v)| v["code"] == "busy"), "{busy:?}");
    assert_eq!(c.state().0, 1 + ok as u64);
    let (_, m) = c.get("/metrics");
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains(&format!("valori_writes_refused_busy_total {}", busy.len())),
        "{m}"
    );
}

/// Reads never wait for writes: while a commit is held in progress (a test hook stops it
/// after its events are applied and before they are durable), a search, a record read, the
/// state, the probes and the metrics all answer, and show the state before the commit; the
/// write is answered only once the commit goes on, and then every read shows it.
#[test]
fn reads_answer_while_a_commit_is_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let waiting = dir.path().join("gate.waiting");
    let data = dir.path().join("data");
    let node = Node::try_start_env(
        &data,
        &[],
        &[("VALORI_TEST_COMMIT_GATE", gate.to_str().unwrap())],
    )
    .expect("node starts");
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let records: Vec<Value> = (0..10).map(|i| json!({"vector": vector(i, 4)})).collect();
    let (s, _) = c.post(
        "/v1/collections/v/records/batch",
        json!({"records": records}),
    );
    assert_eq!(s, 200);
    let before = c.state();

    std::fs::write(&gate, b"").unwrap();
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            // Record 300 is far from every other: the nearest to it once committed.
            let records: Vec<Value> = (10..510)
                .map(|i| match i {
                    300 => json!({"vector": [50.0, 50.0, 50.0, 50.0]}),
                    _ => json!({"vector": vector(i, 4)}),
                })
                .collect();
            c.post(
                "/v1/collections/v/records/batch",
                json!({"records": records}),
            )
        })
    };
    common::wait_until(60, "the commit to reach the gate", || waiting.exists());

    let (s, found) = c.post(
        "/v1/collections/v/search",
        json!({"vector": [50.0, 50.0, 50.0, 50.0], "k": 3}),
    );
    assert_eq!(s, 200, "{found}");
    assert_eq!(
        found["seq"], before.0,
        "the search shows the state before the commit"
    );
    assert!(found["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["id"].as_u64() < Some(10)));
    assert_eq!(c.get("/v1/collections/v/records/3").0, 200);
    assert_eq!(c.get("/v1/collections/v/records/300").0, 404);
    assert_eq!(c.state(), before);
    let metrics = probes_answer(&c);
    assert_eq!(metric(&metrics, "valori_sequence_number"), Some(before.0));
    assert!(
        !writer.is_finished(),
        "the write is answered before it is durable"
    );

    std::fs::remove_file(&gate).unwrap();
    let (s, v) = writer.join().unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["seq"], before.0 + 1);
    let (_, found) = c.post(
        "/v1/collections/v/search",
        json!({"vector": [50.0, 50.0, 50.0, 50.0], "k": 1}),
    );
    assert_eq!(found["seq"], before.0 + 1);
    assert_eq!(found["results"][0]["id"], 300);
    assert_eq!(c.get("/v1/collections/v/records/300").0, 200);
}

/// Checks that `/healthz` and `/readyz` answer 200; returns the `/metrics` text.
fn probes_answer(c: &Client) -> String {
    assert_eq!(c.get("/healthz").0, 200);
    assert_eq!(c.get("/readyz").0, 200);
    let (s, metrics) = c.get("/metrics");
    assert_eq!(s, 200);
    metrics.as_str().unwrap().to_string()
}

/// Sends `request` on a fresh connection and reads until the server closes it or 20 s pass:
/// what came back, or the read error.
fn exchange(addr: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf)? {
            0 => return Ok(got),
            n => got.extend_from_slice(&buf[..n]),
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") && !request.ends_with(b"\r\n\r\n") {
            return Ok(got);
        }
    }
}

/// A client that sends half its headers and waits, or sends nothing, is disconnected after
/// `--header-timeout-ms` (without it the connection stayed open for good: a few thousand such
/// clients exhausted the node's file descriptors).
#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--header-timeout-ms", "300"]);
    let addr = node.url.trim_start_matches("http://").to_string();
    let got = exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
        .expect("the server closes the connection (a read timeout means it never did)");
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    // Nor can a client hold a connection by sending nothing at all, on either port.
    for port in [
        addr.clone(),
        node.grpc_url.trim_start_matches("http://").to_string(),
    ] {
        // (The gRPC server may first send its HTTP/2 settings.)
        match exchange(&port, b"") {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{port}: a silent connection was never closed: {e}"),
        }
    }
    // A prompt client is served as usual.
    let got = exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: prompt\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

/// Beyond `--max-connections` open connections, a new one is closed as soon as it is accepted;
/// when one closes, a new one is served again. Counted in `valori_connections_refused_total`.
#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let node = Node::start(
        dir.path(),
        &[
            "--max-connections",
            "3",
            "--header-timeout-ms",
            "120000",
            "--health-port",
            &health_port,
        ],
    );
    let addr = node.url.trim_start_matches("http://").to_string();
    // Three idle connections hold every slot: each served one request and stays open.
    let mut held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: held\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            s
        })
        .collect();
    match exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: extra\r\n\r\n") {
        Ok(got) => assert!(got.is_empty(), "served beyond the limit: {got:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    // The health port answers the probes and the metrics meanwhile, and nothing else.
    let health = format!("127.0.0.1:{health_port}");
    for (path, want) in [
        ("/healthz", "HTTP/1.1 200"),
        ("/readyz", "HTTP/1.1 200"),
        ("/metrics", "HTTP/1.1 200"),
        ("/v1/state", "HTTP/1.1 404"),
    ] {
        let got = exchange(
            &health,
            format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert!(
            got.starts_with(want.as_bytes()),
            "{path}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    held.pop();
    common::wait_until(20, "a freed slot to be usable", || {
        exchange(
            &addr,
            b"GET /healthz HTTP/1.1\r\nHost: next\r\nConnection: close\r\n\r\n",
        )
        .is_ok_and(|got| got.starts_with(b"HTTP/1.1 200"))
    });
    drop(held);
    let metrics = probes_answer(&node.client());
    assert!(metric(&metrics, "valori_connections_refused_total") >= Some(1));
}

/// Beyond `--max-concurrent-requests` requests in progress, a request gets 503 `busy` at once;
/// the probes and metrics are still answered; once the requests end, all is served again.
#[test]
fn requests_beyond_the_limit_are_refused_busy_but_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--max-concurrent-requests", "2"]);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let in_progress = |c: &Client| {
        let (_, m) = c.get("/metrics");
        metric(m.as_str().unwrap(), "valori_http_requests_in_progress")
    };
    assert_eq!(in_progress(&c), Some(0));
    // Two long polls for entries that do not come hold both permits for 15 s, each started
    // once the one before is in progress (each on a connection of its own).
    let polls: Vec<_> = (1..=2)
        .map(|n| {
            let poll = Client::new(&node.url);
            let t = std::thread::spawn(move || poll.get("/v1/log?from=100&wait_ms=15000"));
            common::wait_until(10, "the long poll to be in progress", || {
                in_progress(&c) == Some(n)
            });
            t
        })
        .collect();
    let (s, v) = c.get("/v1/collections");
    assert_eq!((s, v["code"].as_str()), (503, Some("busy")), "{v}");
    let metrics = probes_answer(&c);
    assert_eq!(
        metric(&metrics, "valori_requests_refused_busy_total"),
        Some(1)
    );
    assert_eq!(
        metric(&metrics, "valori_http_requests_in_progress"),
        Some(2)
    );
    for p in polls {
        assert_eq!(p.join().unwrap().0, 200);
    }
    assert_eq!(in_progress(&c), Some(0));
    assert_eq!(c.get("/v1/collections").0, 200);
}
