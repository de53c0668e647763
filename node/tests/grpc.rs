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
            id: 3,
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
    assert_eq!((link.collection.as_str(), link.id), ("v", 3));
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
        .get_state(pb::StateRequest { seq: None })
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
    let mut req = tonic::Request::new(pb::StateRequest { seq: None });
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
        .get_state(pb::StateRequest { seq: None })
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
