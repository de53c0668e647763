//! gRPC and HTTP give identical results: the same operations sent to two fresh nodes, one over
//! each API, leave identical states and answer searches identically. Errors map to matching
//! status codes.

mod common;

use common::{vector, Node};
use serde_json::json;
use valori_node::grpc::pb;
use valori_node::grpc::pb::valori_client::ValoriClient;

async fn client(node: &Node) -> ValoriClient<tonic::transport::Channel> {
    ValoriClient::connect(node.grpc_url.clone())
        .await
        .expect("gRPC connect")
}

fn code(s: &tonic::Status) -> String {
    s.metadata()
        .get("valori-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_agree() {
    let dir = tempfile::tempdir().unwrap();
    let h = Node::start(&dir.path().join("http"), &[]);
    let g = Node::start(&dir.path().join("grpc"), &[]);
    let http_url = h.url.clone();
    let mut gc = client(&g).await;

    // The same operations over each API.
    let hr = tokio::task::spawn_blocking(move || {
        let hc = common::Client::new(&http_url);
        let mut out = Vec::new();
        out.push(
            hc.post(
                "/v1/collections",
                json!({"name": "v", "dimension": 6, "metric": "cosine"}),
            )
            .0,
        );
        for b in 0..4u64 {
            let recs: Vec<_> = (0..25)
                .map(|i| json!({"vector": vector(b * 25 + i, 6), "tag": i % 4, "metadata": "AAE="}))
                .collect();
            out.push(
                hc.post("/v1/collections/v/records/batch", json!({"records": recs}))
                    .0,
            );
        }
        out.push(
            hc.post(
                "/v1/collections/v/records",
                json!({"vector": vector(999, 6), "tag": 2}),
            )
            .0,
        );
        out.push(hc.delete("/v1/collections/v/records/7").0);
        out.push(
            hc.post(
                "/v1/graph/nodes",
                json!({"kind": "a", "record": {"collection": "v", "id": 3}}),
            )
            .0,
        );
        out.push(hc.post("/v1/graph/nodes", json!({"kind": "b"})).0);
        out.push(
            hc.post(
                "/v1/graph/edges",
                json!({"from": 0, "to": 1, "kind": "rel"}),
            )
            .0,
        );
        let search = hc
            .post(
                "/v1/collections/v/search",
                json!({"vector": vector(5, 6), "k": 8, "tag": 1, "with_metadata": true}),
            )
            .1;
        let nb = hc.get("/v1/graph/nodes/0/neighbors?direction=both").1;
        let tr = hc
            .post("/v1/graph/traverse", json!({"start": 0, "max_depth": 3}))
            .1;
        (out, search, nb, tr, hc.state())
    })
    .await
    .unwrap();
    assert!(hr.0.iter().all(|&s| s == 200 || s == 201), "{:?}", hr.0);

    gc.create_collection(pb::CreateCollectionRequest {
        name: "v".into(),
        dimension: 6,
        metric: "cosine".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for b in 0..4u64 {
        let records = (0..25)
            .map(|i| pb::Record {
                vector: vector(b * 25 + i, 6),
                tag: i % 4,
                metadata: Some(vec![0, 1]),
            })
            .collect();
        gc.insert_batch(pb::InsertBatchRequest {
            collection: "v".into(),
            records,
        })
        .await
        .unwrap();
    }
    let r = gc
        .insert(pb::InsertRequest {
            collection: "v".into(),
            record: Some(pb::Record {
                vector: vector(999, 6),
                tag: 2,
                metadata: None,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.ids, vec![100]);
    gc.delete(pb::RecordKey {
        collection: "v".into(),
        id: 7,
    })
    .await
    .unwrap();
    gc.create_node(pb::CreateNodeRequest {
        kind: "a".into(),
        record: Some(pb::RecordLink {
            collection: "v".into(),
            id: Some(3),
            key: None,
        }),
        properties: None,
    })
    .await
    .unwrap();
    gc.create_node(pb::CreateNodeRequest {
        kind: "b".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    gc.create_edge(pb::CreateEdgeRequest {
        from: 0,
        to: 1,
        kind: "rel".into(),
    })
    .await
    .unwrap();

    // Nodes and edges read back as written; unknown ids are NotFound with the HTTP codes.
    let n0 = gc.get_node(pb::Id { id: 0 }).await.unwrap().into_inner();
    assert_eq!((n0.id, n0.kind.as_str(), n0.properties), (0, "a", None));
    let link = n0.record.unwrap();
    assert_eq!((link.collection.as_str(), link.id), ("v", Some(3)));
    let n1 = gc.get_node(pb::Id { id: 1 }).await.unwrap().into_inner();
    assert_eq!((n1.kind.as_str(), n1.record), ("b", None));
    let e0 = gc.get_edge(pb::Id { id: 0 }).await.unwrap().into_inner();
    assert_eq!((e0.id, e0.from, e0.to, e0.kind.as_str()), (0, 0, 1, "rel"));
    let e = gc.get_node(pb::Id { id: 99 }).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::NotFound, "node_not_found")
    );
    let e = gc.get_edge(pb::Id { id: 99 }).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::NotFound, "edge_not_found")
    );

    // Identical state.
    let st = gc
        .get_state(pb::StateRequest {
            seq: None,
            state_hash: false,
        })
        .await
        .unwrap()
        .into_inner();
    let (seq, chain, state) = hr.4;
    assert_eq!((st.seq, st.chain_hash, st.state_hash), (seq, chain, state));

    // Identical answers.
    let s = gc
        .search(pb::SearchRequest {
            collection: "v".into(),
            vector: vector(5, 6),
            k: Some(8),
            tag: Some(1),
            ef: None,
            with_metadata: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let http_hits = hr.1["results"].as_array().unwrap();
    assert_eq!(s.results.len(), http_hits.len());
    for (g, h) in s.results.iter().zip(http_hits) {
        assert_eq!(g.id, h["id"].as_u64().unwrap());
        assert_eq!(g.distance, h["distance"].to_string());
        assert_eq!(g.tag, h["tag"].as_u64().unwrap());
        assert_eq!(g.metadata.as_deref(), Some(&[0u8, 1][..]));
    }
    let nb = gc
        .neighbors(pb::NeighborsRequest {
            id: 0,
            kinds: vec![],
            direction: "both".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        nb.neighbors.len(),
        hr.2["neighbors"].as_array().unwrap().len()
    );
    assert_eq!(
        nb.neighbors[0].node,
        hr.2["neighbors"][0]["node"].as_u64().unwrap()
    );
    let tr = gc
        .traverse(pb::TraverseRequest {
            start: 0,
            max_depth: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let visits: Vec<(u64, u32)> = tr.nodes.iter().map(|v| (v.node, v.depth)).collect();
    let http_visits: Vec<(u64, u32)> = hr.3["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["node"].as_u64().unwrap(),
                v["depth"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert_eq!(visits, http_visits);
    let rec = gc
        .get(pb::RecordKey {
            collection: "v".into(),
            id: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.tag, 3);
    let snaps = gc.create_snapshot(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(snaps.seq, st.seq);
    assert_eq!(
        gc.list_snapshots(pb::Empty {})
            .await
            .unwrap()
            .into_inner()
            .snapshots
            .len(),
        1
    );
    assert_eq!(
        gc.list_collections(pb::Empty {})
            .await
            .unwrap()
            .into_inner()
            .collections
            .len(),
        1
    );
}

/// The key is checked before a message is decoded, and no message above the body limit is
/// decoded: an oversized request without a key is refused as unauthenticated (had it been
/// decoded first, the size would have been the error), and with a key as too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_checks_the_key_before_decoding_and_caps_messages() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &["--api-key", "w", "--max-body-bytes", "1000000"],
    );
    let mut c = client(&node).await;
    let big = || pb::InsertBatchRequest {
        collection: "v".into(),
        records: (0..3000)
            .map(|i| pb::Record {
                vector: vector(i, 64),
                tag: 0,
                metadata: None,
            })
            .collect(),
    };
    let e = c.insert_batch(big()).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::Unauthenticated, "unauthorized"),
        "{e:?}"
    );
    let mut req = tonic::Request::new(big());
    req.metadata_mut().insert("x-api-key", "w".parse().unwrap());
    let e = c.insert_batch(req).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );
    // A message under the limit with the key goes through as before.
    let mut req = tonic::Request::new(pb::CreateCollectionRequest {
        name: "v".into(),
        dimension: 64,
        ..Default::default()
    });
    req.metadata_mut().insert("x-api-key", "w".parse().unwrap());
    c.create_collection(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_match_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--api-key", "w", "--read-api-key", "r"]);
    let mut c = client(&node).await;
    let e = c.list_collections(pb::Empty {}).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::Unauthenticated, "unauthorized")
    );

    let with_key = |key: &str, mut req: tonic::Request<pb::CreateCollectionRequest>| {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        req
    };
    let make = || {
        tonic::Request::new(pb::CreateCollectionRequest {
            name: "v".into(),
            dimension: 3,
            ..Default::default()
        })
    };
    let e = c
        .create_collection(with_key("r", make()))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::PermissionDenied, "forbidden")
    );
    c.create_collection(with_key("w", make())).await.unwrap();
    let e = c
        .create_collection(with_key("w", make()))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::AlreadyExists, "collection_exists")
    );

    let insert = |v: Vec<f64>| {
        let mut req = tonic::Request::new(pb::InsertRequest {
            collection: "v".into(),
            record: Some(pb::Record {
                vector: v,
                tag: 0,
                metadata: None,
            }),
        });
        req.metadata_mut().insert("x-api-key", "w".parse().unwrap());
        req
    };
    let e = c.insert(insert(vec![1.0, 2.0])).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::InvalidArgument, "dimension_mismatch")
    );
    let e = c
        .insert(insert(vec![1.0, 2.0, f64::NAN]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::InvalidArgument, "not_finite")
    );
    let e = c.insert(insert(vec![1.0, 2.0, 1e9])).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::InvalidArgument, "out_of_range")
    );
    let mut req = tonic::Request::new(pb::RecordKey {
        collection: "v".into(),
        id: 9,
    });
    req.metadata_mut().insert("x-api-key", "r".parse().unwrap());
    let e = c.get(req).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::NotFound, "record_not_found")
    );
    // Nothing above changed the state beyond the one collection.
    let mut req = tonic::Request::new(pb::StateRequest {
        seq: None,
        state_hash: false,
    });
    req.metadata_mut().insert("x-api-key", "r".parse().unwrap());
    assert_eq!(c.get_state(req).await.unwrap().into_inner().seq, 1);
}

/// The routes gRPC gained for parity: the log as a server stream, snapshot download (server
/// stream) and restore (client stream), replication status and health. Each answers what its
/// HTTP route answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_the_log_and_snapshots_as_http_serves_them() {
    use futures_util::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &dir.path().join("a"),
        &["--snapshot-every", "0", "--prune-log", "false"],
    );
    let mut gc = client(&node).await;
    gc.create_collection(pb::CreateCollectionRequest {
        name: "v".into(),
        dimension: 4,
        ..Default::default()
    })
    .await
    .unwrap();
    for b in 0..30u64 {
        gc.insert(pb::InsertRequest {
            collection: "v".into(),
            record: Some(pb::Record {
                vector: vector(b, 4),
                tag: b % 3,
                metadata: Some(vec![b as u8]),
            }),
        })
        .await
        .unwrap();
    }
    let url = node.url.clone();
    let (http_log, http_snapshot, http_state) = tokio::task::spawn_blocking(move || {
        let hc = common::Client::new(&url);
        let (_, log) = hc.get("/v1/log?from=1&limit=100");
        let (s, snap) = hc.post("/v1/snapshots", json!({}));
        assert_eq!(s, 201, "{snap}");
        let (s, bytes) = hc.bytes(&format!("/v1/snapshots/{}", snap["id"]));
        assert_eq!(s, 200);
        (log, (snap["id"].as_u64().unwrap(), bytes), hc.state())
    })
    .await
    .unwrap();

    // The whole log, entry by entry as HTTP pages it, named as a follower.
    let mut req = tonic::Request::new(pb::LogRequest {
        from: 1,
        limit: None,
    });
    req.metadata_mut()
        .insert("x-valori-follower", "grpc-reader".parse().unwrap());
    let entries: Vec<pb::LogEntry> = gc
        .read_log(req)
        .await
        .unwrap()
        .into_inner()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let http_entries = http_log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 31);
    assert_eq!(entries.len(), http_entries.len());
    for (g, h) in entries.iter().zip(http_entries) {
        assert_eq!(g.seq, h["seq"].as_u64().unwrap());
        assert_eq!(
            hex::encode(&g.chain_hash),
            h["chain_hash"].as_str().unwrap()
        );
        assert_eq!(common::b64(&g.event), h["event"].as_str().unwrap());
    }
    // A bounded read, from the middle.
    let some: Vec<u64> = gc
        .read_log(pb::LogRequest {
            from: 10,
            limit: Some(5),
        })
        .await
        .unwrap()
        .into_inner()
        .map(|e| e.unwrap().seq)
        .collect()
        .await;
    assert_eq!(some, (10..15).collect::<Vec<u64>>());

    // The reader that named itself is a follower in the status, as over HTTP.
    let status = gc
        .replication_status(pb::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.seq, 31);
    let f = status
        .followers
        .iter()
        .find(|f| f.name == "grpc-reader")
        .expect("the reader is listed");
    assert_eq!((f.confirmed_seq, f.lag_events), (0, 31));

    // The snapshot's bytes, in chunks.
    let (id, bytes) = http_snapshot;
    let mut downloaded = Vec::new();
    let mut chunks = gc
        .download_snapshot(pb::Id { id })
        .await
        .unwrap()
        .into_inner();
    while let Some(c) = chunks.next().await {
        downloaded.extend_from_slice(&c.unwrap().data);
    }
    assert_eq!(downloaded, bytes);
    let e = gc.download_snapshot(pb::Id { id: 999 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Restored into a fresh node by a client stream: the same state.
    let other = Node::start(&dir.path().join("b"), &[]);
    let mut oc = client(&other).await;
    let parts: Vec<pb::Chunk> = downloaded
        .chunks(4096)
        .map(|c| pb::Chunk { data: c.to_vec() })
        .collect();
    let restored = oc
        .restore_snapshot(futures_util::stream::iter(parts))
        .await
        .unwrap()
        .into_inner();
    let st = restored.state.unwrap();
    assert_eq!((st.seq, st.chain_hash, st.state_hash), http_state.clone());
    assert_eq!(restored.snapshot.unwrap().seq, 31);
    // Bytes that are not a snapshot change nothing.
    let e = oc
        .restore_snapshot(futures_util::stream::iter(vec![pb::Chunk {
            data: b"not a snapshot".to_vec(),
        }]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::InvalidArgument, "invalid_snapshot")
    );
    let st = oc
        .get_state(pb::StateRequest {
            seq: None,
            state_hash: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.seq, st.chain_hash, st.state_hash), http_state);

    let h = gc.health(pb::Empty {}).await.unwrap().into_inner();
    assert!(h.live && h.ready && h.reason.is_empty(), "{h:?}");

    // Roles over gRPC, with the HTTP rules: a lower epoch is refused, a higher one applies.
    let r = gc.get_role(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!((r.role.as_str(), r.epoch, r.writable), ("leader", 1, true));
    let demote = |epoch| pb::SetRoleRequest {
        role: "follower".into(),
        epoch,
        leader_url: Some(other.url.clone()),
        heal: None,
    };
    let r = gc.set_role(demote(2)).await.unwrap().into_inner();
    assert_eq!(
        (r.role.as_str(), r.epoch, r.writable),
        ("follower", 2, false)
    );
    let e = gc.set_role(demote(1)).await.unwrap_err();
    assert_eq!(
        (e.code(), code(&e).as_str()),
        (tonic::Code::FailedPrecondition, "stale_epoch")
    );
}

/// A typed payload value.
fn val(kind: pb::value::Kind) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

fn payload(fields: Vec<(&str, pb::Value)>) -> pb::Payload {
    pb::Payload {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

/// A typed value as the JSON the HTTP API answers with.
fn json_of(v: &pb::Value) -> serde_json::Value {
    use pb::value::Kind;
    match v.kind.as_ref().expect("a value has a kind") {
        Kind::Null(_) => serde_json::Value::Null,
        Kind::Bool(b) => json!(b),
        Kind::Int(i) => json!(i),
        Kind::Float(f) => json!(f),
        Kind::String(s) => json!(s),
        Kind::List(l) => serde_json::Value::Array(l.values.iter().map(json_of).collect()),
        Kind::Object(p) => payload_json(p),
    }
}

fn payload_json(p: &pb::Payload) -> serde_json::Value {
    serde_json::Value::Object(
        p.fields
            .iter()
            .map(|(k, v)| (k.clone(), json_of(v)))
            .collect(),
    )
}

/// A record of a gRPC answer as the HTTP API's JSON (the parts both carry).
fn record_json(r: &pb::MemoryRecord) -> serde_json::Value {
    let mut o = json!({"id": r.id, "key": r.key, "tag": r.tag});
    if let Some(p) = &r.payload {
        o["payload"] = payload_json(p);
    }
    if let Some(d) = &r.document {
        o["document"] = json!(d);
    }
    if !r.vector.is_empty() {
        o["vector"] = json!(r.vector);
    }
    o
}

fn http_record(r: &serde_json::Value) -> serde_json::Value {
    let mut o = json!({"id": r["id"], "key": r["key"], "tag": r["tag"]});
    for part in ["payload", "vector"] {
        if let Some(v) = r.get(part) {
            o[part] = v.clone();
        }
    }
    if let Some(d) = r.get("document").filter(|d| !d.is_null()) {
        o["document"] = d.clone();
    }
    o
}

fn user_is(user: &str) -> pb::Filter {
    pb::Filter {
        must: vec![pb::Condition {
            condition: Some(pb::condition::Condition::Match(pb::FieldMatch {
                key: "user".into(),
                matcher: Some(pb::field_match::Matcher::Value(val(
                    pb::value::Kind::String(user.into()),
                ))),
            })),
        }],
        ..Default::default()
    }
}

/// The agent-memory API over gRPC: the same writes as over HTTP leave the same state, reads
/// answer the same records, typed payload values keep integers, floats and bools apart, and
/// bad input is refused with the HTTP API's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_agent_memory_matches_http() {
    use pb::value::Kind;
    let dir = tempfile::tempdir().unwrap();
    let h = Node::start(&dir.path().join("http"), &[]);
    let g = Node::start(&dir.path().join("grpc"), &[]);
    let http_url = h.url.clone();
    let mut gc = client(&g).await;

    let u42 = json!({"must": [{"key": "user", "match": {"value": "u42"}}]});
    let http = tokio::task::spawn_blocking(move || {
        let c = common::Client::new(&http_url);
        let ok = |(s, v): (u16, serde_json::Value)| {
            assert!(s == 200 || s == 201, "{s} {v}");
            v
        };
        ok(c.post(
            "/v1/collections",
            json!({"name": "m", "dimension": 3, "metric": "cosine", "index": {"type": "flat"}}),
        ));
        ok(c.post(
            "/v1/collections/m/indexes",
            json!({"field": "user", "kind": "keyword"}),
        ));
        let up = ok(c.post(
            "/v1/collections/m/records/upsert",
            json!({"records": [
                {"key": "a", "vector": [1, 0, 0], "tag": 1, "payload": {"user": "u42", "n": 10, "f": 2.5, "ok": true, "l": [1, null, {"x": "y"}]}, "document": "alpha"},
                {"key": "b", "vector": [0, 1, 0], "payload": {"user": "u7", "n": 10.0}},
                {"key": "c", "vector": [0, 0, 1], "payload": {"user": "u42"}, "document": "gamma"},
            ]}),
        ));
        let again = ok(c.post(
            "/v1/collections/m/records/upsert",
            json!({"records": [{"key": "c", "vector": [0, 1, 1], "payload": {"user": "u42", "v": 2}}], "mode": "update_only"}),
        ));
        let node = ok(c.post("/v1/graph/nodes", json!({"kind": "k", "record": {"collection": "m", "key": "c"}})));
        let set = ok(c.post(
            "/v1/collections/m/records/payload",
            json!({"filter": u42, "payload": {"seen": false}, "max_affected": 2}),
        ));
        let unset = ok(c.post(
            "/v1/collections/m/records/payload/delete",
            json!({"keys": ["a"], "fields": ["f"]}),
        ));
        let got = ok(c.post(
            "/v1/collections/m/records/get",
            json!({"keys": ["c", "zz", "a"], "include": ["payload", "document", "vector"]}),
        ));
        let count = ok(c.post("/v1/collections/m/records/count", json!({"filter": u42})));
        let page = ok(c.post("/v1/collections/m/records/scroll", json!({"limit": 2})));
        let page2 = ok(c.post(
            "/v1/collections/m/records/scroll",
            json!({"limit": 2, "cursor": page["next_cursor"]}),
        ));
        let search = ok(c.post(
            "/v1/collections/m/search",
            json!({"vector": [1, 0.1, 0], "k": 3, "filter": u42, "include": ["payload", "document"]}),
        ));
        let batch = ok(c.post(
            "/v1/collections/m/search/batch",
            json!({"searches": [{"vector": [1, 0, 0], "k": 2}, {"vector": [0, 1, 0], "k": 1, "score_threshold": 0.5}]}),
        ));
        let linked = ok(c.get(&format!("/v1/graph/nodes/{}", node["id"])));
        let deleted = ok(c.post(
            "/v1/collections/m/records/delete",
            json!({"filter": {"must": [{"key": "n", "range": {"gte": 10}}]}}),
        ));
        let indexes = ok(c.get("/v1/collections/m/indexes"));
        (
            [up, again, set, unset, deleted],
            got,
            count,
            [page, page2],
            search,
            batch,
            linked,
            indexes,
            c.state(),
        )
    })
    .await
    .unwrap();
    let (writes, got, count, pages, search, batch, linked, indexes, state) = http;

    // The same over gRPC.
    gc.create_collection(pb::CreateCollectionRequest {
        name: "m".into(),
        dimension: 3,
        metric: "cosine".into(),
        flat: true,
        ..Default::default()
    })
    .await
    .unwrap();
    gc.create_payload_index(pb::CreatePayloadIndexRequest {
        collection: "m".into(),
        field: "user".into(),
        kind: "keyword".into(),
    })
    .await
    .unwrap();
    let rec = |key: &str, vector: Vec<f64>, tag: u64, p: pb::Payload, doc: Option<&str>| {
        pb::UpsertRecord {
            key: key.into(),
            vector,
            tag,
            payload: Some(p),
            document: doc.map(String::from),
            metadata: None,
        }
    };
    let list = |values: Vec<pb::Value>| val(Kind::List(pb::ValueList { values }));
    let up = gc
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            records: vec![
                rec(
                    "a",
                    vec![1.0, 0.0, 0.0],
                    1,
                    payload(vec![
                        ("user", val(Kind::String("u42".into()))),
                        ("n", val(Kind::Int(10))),
                        ("f", val(Kind::Float(2.5))),
                        ("ok", val(Kind::Bool(true))),
                        (
                            "l",
                            list(vec![
                                val(Kind::Int(1)),
                                val(Kind::Null(pb::Null {})),
                                val(Kind::Object(payload(vec![(
                                    "x",
                                    val(Kind::String("y".into())),
                                )]))),
                            ]),
                        ),
                    ]),
                    Some("alpha"),
                ),
                // 10.0 is stored as the integer 10, as over HTTP.
                rec(
                    "b",
                    vec![0.0, 1.0, 0.0],
                    0,
                    payload(vec![
                        ("user", val(Kind::String("u7".into()))),
                        ("n", val(Kind::Float(10.0))),
                    ]),
                    None,
                ),
                rec(
                    "c",
                    vec![0.0, 0.0, 1.0],
                    0,
                    payload(vec![("user", val(Kind::String("u42".into())))]),
                    Some("gamma"),
                ),
            ],
            mode: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.ids, vec![0, 1, 2]);
    assert_eq!(json!({"ids": up.ids, "seq": up.seq}), writes[0]);
    let again = gc
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            records: vec![rec(
                "c",
                vec![0.0, 1.0, 1.0],
                0,
                payload(vec![
                    ("user", val(Kind::String("u42".into()))),
                    ("v", val(Kind::Int(2))),
                ]),
                None,
            )],
            mode: "update_only".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json!({"ids": again.ids, "seq": again.seq}), writes[1]);
    let node = gc
        .create_node(pb::CreateNodeRequest {
            kind: "k".into(),
            record: Some(pb::RecordLink {
                collection: "m".into(),
                id: None,
                key: Some("c".into()),
            }),
            properties: None,
        })
        .await
        .unwrap()
        .into_inner();
    let target = |t: pb::target::Target| Some(pb::Target { target: Some(t) });
    let set = gc
        .set_payload(pb::SetPayloadRequest {
            collection: "m".into(),
            target: target(pb::target::Target::Filter(user_is("u42"))),
            payload: Some(payload(vec![("seen", val(Kind::Bool(false)))])),
            mode: String::new(),
            max_affected: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json!({"updated": set.updated, "seq": set.seq}), writes[2]);
    let unset = gc
        .delete_payload_keys(pb::DeletePayloadKeysRequest {
            collection: "m".into(),
            target: target(pb::target::Target::Keys(pb::StringList {
                values: vec!["a".into()],
            })),
            fields: vec!["f".into()],
            max_affected: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json!({"updated": unset.updated, "seq": unset.seq}),
        writes[3]
    );

    let g_got = gc
        .get_records(pb::GetRecordsRequest {
            collection: "m".into(),
            by: Some(pb::get_records_request::By::Keys(pb::StringList {
                values: vec!["c".into(), "zz".into(), "a".into()],
            })),
            include: Some(pb::Include {
                vector: true,
                payload: true,
                document: true,
                metadata: false,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let got_records: Vec<_> = got["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(http_record)
        .collect();
    assert_eq!(
        g_got.records.iter().map(record_json).collect::<Vec<_>>(),
        got_records
    );
    // A bool stays a bool, an integer an integer, a float a float.
    let a = &g_got.records[1].payload.as_ref().unwrap().fields;
    assert_eq!(a["ok"].kind, Some(Kind::Bool(true)));
    assert_eq!(a["n"].kind, Some(Kind::Int(10)));
    assert_eq!(a["seen"].kind, Some(Kind::Bool(false)));
    assert_eq!(
        g_got.missing,
        vec![pb::Missing {
            item: Some(pb::missing::Item::Key("zz".into()))
        }]
    );
    assert_eq!(g_got.seq, got["seq"].as_u64().unwrap());

    let g_count = gc
        .count(pb::CountRequest {
            collection: "m".into(),
            filter: Some(user_is("u42")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json!({"count": g_count.count, "seq": g_count.seq}), count);

    let mut cursor = None;
    for page in &pages {
        let p = gc
            .scroll(pb::ScrollRequest {
                collection: "m".into(),
                limit: Some(2),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let want: Vec<_> = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(http_record)
            .collect();
        assert_eq!(p.records.iter().map(record_json).collect::<Vec<_>>(), want);
        assert_eq!(json!(p.next_cursor), page["next_cursor"]);
        cursor = p.next_cursor;
    }

    let g_search = gc
        .search(pb::SearchRequest {
            collection: "m".into(),
            vector: vec![1.0, 0.1, 0.0],
            k: Some(3),
            filter: Some(user_is("u42")),
            include: Some(pb::Include {
                payload: true,
                document: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let hits = search["results"].as_array().unwrap();
    assert_eq!(g_search.results.len(), hits.len());
    assert_eq!(g_search.results.len(), 2);
    for (gh, hh) in g_search.results.iter().zip(hits) {
        assert_eq!(gh.id, hh["id"].as_u64().unwrap());
        assert_eq!(gh.key.as_deref(), hh["key"].as_str());
        assert_eq!(gh.distance, hh["distance"].to_string());
        assert_eq!(json!(gh.similarity), hh["similarity"]);
        assert_eq!(payload_json(gh.payload.as_ref().unwrap()), hh["payload"]);
        assert_eq!(json!(gh.document), hh["document"]);
    }

    let g_batch = gc
        .search_batch(pb::SearchBatchRequest {
            collection: "m".into(),
            searches: vec![
                pb::SearchRequest {
                    vector: vec![1.0, 0.0, 0.0],
                    k: Some(2),
                    ..Default::default()
                },
                pb::SearchRequest {
                    vector: vec![0.0, 1.0, 0.0],
                    k: Some(1),
                    score_threshold: Some(0.5),
                    ..Default::default()
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g_batch.seq, batch["seq"].as_u64().unwrap());
    for (gb, hb) in g_batch
        .results
        .iter()
        .zip(batch["results"].as_array().unwrap())
    {
        let ids: Vec<u64> = gb.results.iter().map(|h| h.id).collect();
        let want: Vec<u64> = hb["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, want);
    }

    // The key link resolves to the record that holds the key now (a new id after the upsert).
    let n = gc
        .get_node(pb::Id { id: node.id })
        .await
        .unwrap()
        .into_inner();
    let link = n.record.unwrap();
    assert_eq!(link.key.as_deref(), Some("c"));
    assert_eq!(link.id, Some(3));
    assert_eq!(json!(link.id), linked["record"]["id"]);

    let deleted = gc
        .delete_records(pb::DeleteRecordsRequest {
            collection: "m".into(),
            target: target(pb::target::Target::Filter(pb::Filter {
                must: vec![pb::Condition {
                    condition: Some(pb::condition::Condition::Range(pb::FieldRange {
                        key: "n".into(),
                        gte: Some(val(Kind::Int(10))),
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })),
            max_affected: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 2);
    assert_eq!(
        json!({"deleted": deleted.deleted, "seq": deleted.seq}),
        writes[4]
    );
    let idx = gc
        .list_payload_indexes(pb::CollectionName { name: "m".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        idx.indexes,
        vec![pb::PayloadIndex {
            field: "user".into(),
            kind: "keyword".into()
        }]
    );
    assert_eq!(json!(idx.seq), indexes["seq"]);

    // The same state, to the byte.
    let st = gc
        .get_state(pb::StateRequest {
            seq: None,
            state_hash: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.seq, st.chain_hash.clone(), st.state_hash.clone()),
        state
    );

    // Bad input: refused with the HTTP API's codes, nothing written.
    let nan = gc
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            records: vec![rec(
                "x",
                vec![1.0, 0.0, 0.0],
                0,
                payload(vec![("f", val(Kind::Float(f64::NAN)))]),
                None,
            )],
            mode: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(nan.code(), tonic::Code::InvalidArgument);
    assert_eq!(code(&nan), "invalid_payload");
    assert!(nan.message().contains("records[0].payload.f"), "{nan:?}");
    let dup = gc
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            records: vec![
                rec("x", vec![1.0, 0.0, 0.0], 0, payload(vec![]), None),
                rec("x", vec![0.0, 1.0, 0.0], 0, payload(vec![]), None),
            ],
            mode: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&dup), "duplicate_key");
    let exists = gc
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            records: vec![rec("c", vec![1.0, 0.0, 0.0], 0, payload(vec![]), None)],
            mode: "insert_only".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (exists.code(), code(&exists).as_str()),
        (tonic::Code::AlreadyExists, "key_exists")
    );
    let mode = gc
        .upsert(pb::UpsertRequest {
            collection: "m".into(),
            records: vec![rec("y", vec![1.0, 0.0, 0.0], 0, payload(vec![]), None)],
            mode: "sometimes".into(),
        })
        .await
        .unwrap_err();
    assert!(mode.message().contains("insert_only"), "{mode:?}");
    let no_target = gc
        .delete_records(pb::DeleteRecordsRequest {
            collection: "m".into(),
            target: None,
            max_affected: None,
        })
        .await
        .unwrap_err();
    assert_eq!(no_target.code(), tonic::Code::InvalidArgument);
    let empty_condition = gc
        .count(pb::CountRequest {
            collection: "m".into(),
            filter: Some(pb::Filter {
                must: vec![pb::Condition { condition: None }],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&empty_condition), "invalid_filter");
    let too_many = gc
        .delete_records(pb::DeleteRecordsRequest {
            collection: "m".into(),
            target: target(pb::target::Target::Filter(pb::Filter::default())),
            max_affected: Some(0),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&too_many), "too_many_affected");
    let after = gc
        .get_state(pb::StateRequest {
            seq: None,
            state_hash: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.state_hash, st.state_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_and_past_state_hashes_over_grpc_are_the_http_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("backup").display());
    let node = Node::start(
        &tmp.path().join("n"),
        &[
            "--snapshot-every",
            "0",
            "--backup-to",
            &url,
            "--backup-ship-interval-s",
            "1",
        ],
    );
    let mut gc = client(&node).await;
    // The blocking HTTP client lives only inside `block_in_place`.
    let http = |f: &dyn Fn(&common::Client) -> serde_json::Value| {
        tokio::task::block_in_place(|| f(&node.client()))
    };
    http(&|h| {
        h.post("/v1/collections", json!({"name": "v", "dimension": 2}));
        for i in 0..3 {
            h.post("/v1/collections/v/records", json!({"vector": vector(i, 2)}));
        }
        serde_json::Value::Null
    });
    let b = gc.create_backup(pb::Empty {}).await.unwrap().into_inner();
    let s = http(&|h| json!(h.state()));
    let (seq, chain, state) = (
        s[0].as_u64().unwrap(),
        s[1].as_str().unwrap().to_string(),
        s[2].as_str().unwrap().to_string(),
    );
    assert_eq!((b.seq, b.chain_hash, b.state_hash), (seq, chain, state));
    let list = gc.list_backups(pb::Empty {}).await.unwrap().into_inner();
    let over_http = http(&|h| h.get("/v1/backups").1);
    assert_eq!(list.destination, url);
    assert_eq!(list.backups.len(), 1);
    assert_eq!(list.backups[0].seq, seq);
    assert_eq!(Some(list.reaches), over_http["reaches"].as_u64());

    // A past sequence number's state hash, replayed, over both transports.
    let past = gc
        .get_state(pb::StateRequest {
            seq: Some(2),
            state_hash: true,
        })
        .await
        .unwrap()
        .into_inner();
    let v = http(&|h| h.get("/v1/state?seq=2&state_hash=true").1);
    assert_eq!(past.seq, 2);
    assert_eq!(Some(past.chain_hash.as_str()), v["chain_hash"].as_str());
    assert_eq!(Some(past.state_hash.as_str()), v["state_hash"].as_str());
    assert_eq!(past.state_hash.len(), 64);
    let plain = gc
        .get_state(pb::StateRequest {
            seq: Some(2),
            state_hash: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.state_hash, "");

    // Without a destination: refused with the same code as over HTTP.
    let bare = Node::start(&tmp.path().join("bare"), &["--snapshot-every", "0"]);
    let e = client(&bare)
        .await
        .create_backup(pb::Empty {})
        .await
        .unwrap_err();
    assert_eq!(code(&e), "backup_not_configured");
}
