//! The agent-memory API against a real node on 127.0.0.1 with RocksDB in a temporary
//! directory: records by key, payloads and documents, filters, get, scroll, count, writes by
//! target, batch search, similarity, payload indexes; bad input refused with nothing written;
//! a follower, a restart's recovery and a clean replay of the log reach the same state.

mod common;

use common::{follower, replay_log, wait_until, Client, Node};
use serde_json::{json, Value};

fn docs(c: &Client) {
    let (s, v) = c.post(
        "/v1/collections",
        json!({"name": "mem", "dimension": 3, "metric": "cosine", "index": {"type": "flat"}}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = c.post(
        "/v1/collections/mem/records/upsert",
        json!({"records": [
            {"key": "a", "vector": [1, 0, 0], "payload": {"user_id": "u42", "n": 10, "tags": ["x"]}, "document": "alpha"},
            {"key": "b", "vector": [0, 1, 0], "payload": {"user_id": "u7", "n": 2.5}, "document": "beta"},
            {"key": "c", "vector": [0, 0, 1], "payload": {"user_id": "u42", "n": -3}},
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ids"], json!([0, 1, 2]));
}

fn state_of(c: &Client) -> (u64, String, String) {
    c.state()
}

#[test]
fn records_by_key_payloads_filters_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    docs(&c);

    // Re-upserting an unchanged vector keeps the id; 10.0 is the integer 10.
    let (s, v) = c.post(
        "/v1/collections/mem/records/upsert",
        json!({"records": [{"key": "a", "vector": [1, 0, 0], "tag": 5, "payload": {"user_id": "u42", "n": 10.0, "tags": ["x"]}, "document": "alpha2"}]}),
    );
    assert_eq!((s, &v["ids"]), (200, &json!([0])), "{v}");
    // A changed vector takes a new id.
    let (_, v) = c.post(
        "/v1/collections/mem/records/upsert",
        json!({"records": [{"key": "b", "vector": [0, 1, 1], "payload": {"user_id": "u7"}}]}),
    );
    assert_eq!(v["ids"], json!([3]));

    // Get by keys keeps the order asked and lists the missing.
    let (s, v) = c.post(
        "/v1/collections/mem/records/get",
        json!({"keys": ["c", "zz", "a"], "include": ["payload", "document", "vector"]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["missing"], json!(["zz"]));
    let a = &v["records"][1];
    assert_eq!(a["key"], "a");
    assert_eq!(a["id"], 0);
    assert_eq!(a["tag"], 5);
    assert_eq!(
        a["payload"],
        json!({"n": 10, "tags": ["x"], "user_id": "u42"})
    );
    assert_eq!(a["document"], "alpha2");
    assert_eq!(a["vector"], json!([1.0, 0.0, 0.0]));
    assert_eq!(v["records"][0]["document"], Value::Null);
    let (_, v) = c.post("/v1/collections/mem/records/get", json!({"ids": [1, 3]}));
    assert_eq!(v["missing"], json!([1]));
    assert_eq!(v["records"][0]["key"], "b");
    assert!(v["records"][0].get("vector").is_none(), "{v}");

    // Count and scroll with a filter; scroll visits each record once.
    let u42 = json!({"must": [{"key": "user_id", "match": {"value": "u42"}}]});
    let (_, v) = c.post("/v1/collections/mem/records/count", json!({"filter": u42}));
    assert_eq!(v["count"], 2);
    let (_, v) = c.post("/v1/collections/mem/records/count", json!({}));
    assert_eq!(v["count"], 3);
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut req = json!({"limit": 1, "include": []});
        if !cursor.is_null() {
            req["cursor"] = cursor.clone();
        }
        let (s, v) = c.post("/v1/collections/mem/records/scroll", req);
        assert_eq!(s, 200, "{v}");
        for r in v["records"].as_array().unwrap() {
            assert!(r.get("payload").is_none(), "{r}");
            seen.push(r["id"].as_u64().unwrap());
        }
        cursor = v["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, vec![0, 2, 3]);

    // Filtered search: strict, with similarity (the cosine) and the key.
    let (s, v) = c.post(
        "/v1/collections/mem/search",
        json!({"vector": [1, 0, 0], "k": 10, "filter": u42, "include": ["payload"]}),
    );
    assert_eq!(s, 200, "{v}");
    let hits = v["results"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{v}");
    assert_eq!(hits[0]["key"], "a");
    assert_eq!(hits[0]["similarity"], 1.0);
    assert_eq!(hits[0]["payload"]["user_id"], "u42");
    assert_eq!(hits[1]["key"], "c");
    assert_eq!(hits[1]["similarity"], 0.0);
    // score_threshold keeps similarity >= threshold.
    let (_, v) = c.post(
        "/v1/collections/mem/search",
        json!({"vector": [1, 0, 0], "k": 10, "score_threshold": 0.5}),
    );
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");

    // Batch search: one seq for all.
    let (s, v) = c.post(
        "/v1/collections/mem/search/batch",
        json!({"searches": [
            {"vector": [1, 0, 0], "k": 1},
            {"vector": [0, 1, 1], "k": 1, "filter": {"must": [{"key": "user_id", "match": {"value": "u7"}}]}},
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["results"][0]["key"], "a");
    assert_eq!(v["results"][1]["results"][0]["key"], "b");
    assert!(v["seq"].as_u64().unwrap() >= 3);

    // Writes by target.
    let (s, v) = c.post(
        "/v1/collections/mem/records/payload",
        json!({"keys": ["a", "nope"], "payload": {"seen": true}}),
    );
    assert_eq!((s, &v["updated"]), (200, &json!(1)), "{v}");
    let (_, v) = c.post(
        "/v1/collections/mem/records/payload/delete",
        json!({"filter": u42, "fields": ["n"]}),
    );
    assert_eq!(v["updated"], 2, "{v}");
    let (_, v) = c.post("/v1/collections/mem/records/get", json!({"keys": ["a"]}));
    assert_eq!(
        v["records"][0]["payload"],
        json!({"seen": true, "tags": ["x"], "user_id": "u42"})
    );
    let (s, v) = c.post(
        "/v1/collections/mem/records/delete",
        json!({"filter": u42, "max_affected": 1}),
    );
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("too_many_affected")),
        "{v}"
    );
    let (s, v) = c.post(
        "/v1/collections/mem/indexes",
        json!({"field": "user_id", "kind": "keyword"}),
    );
    assert_eq!(s, 200, "{v}");
    let (_, v) = c.get("/v1/collections/mem/indexes");
    assert_eq!(
        v["indexes"],
        json!([{"field": "user_id", "kind": "keyword"}])
    );
    let (_, v) = c.post("/v1/collections/mem/records/count", json!({"filter": u42}));
    assert_eq!(v["count"], 2);
    let (s, v) = c.post(
        "/v1/collections/mem/records/delete",
        json!({"keys": ["c", "never"]}),
    );
    assert_eq!((s, &v["deleted"]), (200, &json!(1)), "{v}");
    let (_, v) = c.post("/v1/collections/mem/records/count", json!({"filter": u42}));
    assert_eq!(v["count"], 1);

    // Recovery and a clean replay of the log give the same state.
    let live = state_of(&c);
    let mut node = node;
    node.restart();
    let c = node.client();
    assert_eq!(state_of(&c), live);
    node.kill();
    let replayed = replay_log(dir.path());
    assert_eq!(hex::encode(replayed.state_hash()), live.2);
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    docs(&c);
    let before = state_of(&c);
    let upsert = |records: Value| {
        c.post(
            "/v1/collections/mem/records/upsert",
            json!({"records": records}),
        )
    };
    let mut deep = json!(1);
    for _ in 0..16 {
        deep = json!([deep]);
    }
    let cases = [
        (
            upsert(json!([{"key": "d", "vector": [1, 1, 0]}, {"key": "d", "vector": [1, 1, 1]}])),
            "duplicate_key",
        ),
        (
            upsert(json!([{"key": "e", "vector": [1, 1, 0], "payload": {"p": deep}}])),
            "invalid_payload",
        ),
        (
            upsert(
                json!([{"key": "e", "vector": [1, 1, 0], "payload": {"big": 18446744073709551615u64}}]),
            ),
            "invalid_payload",
        ),
        (
            upsert(
                json!([{"key": "e", "vector": [1, 1, 0], "payload": {"s": "x".repeat(70_000)}}]),
            ),
            "invalid_payload",
        ),
        (
            upsert(json!([{"key": "e", "vector": [1, 1, 0], "document": "d".repeat(70_000)}])),
            "too_large",
        ),
        (
            upsert(json!([{"key": "", "vector": [1, 1, 0]}])),
            "invalid_key",
        ),
        (
            upsert(json!([{"key": "e", "vector": [1, 1]}])),
            "dimension_mismatch",
        ),
        (
            upsert(json!([{"key": "e", "vector": [1, 1, 0], "payload": "not an object"}])),
            "bad_request",
        ),
        (
            c.post(
                "/v1/collections/mem/records/upsert",
                json!({"records": [{"key": "a", "vector": [1, 0, 0]}], "mode": "insert_only"}),
            ),
            "key_exists",
        ),
        (
            c.post(
                "/v1/collections/mem/records/upsert",
                json!({"records": [{"key": "q", "vector": [1, 0, 0]}], "mode": "update_only"}),
            ),
            "key_not_found",
        ),
        (
            c.post(
                "/v1/collections/mem/records/delete",
                json!({"filter": {"must": [{"key": "a", "match": {"value": [1]}}]}}),
            ),
            "invalid_filter",
        ),
        (
            c.post(
                "/v1/collections/mem/records/delete",
                json!({"filter": {"must": [{"kee": "a"}]}}),
            ),
            "invalid_filter",
        ),
        (
            c.post(
                "/v1/collections/mem/records/delete",
                json!({"keys": ["a"], "ids": [1]}),
            ),
            "bad_request",
        ),
        (
            c.post("/v1/collections/mem/records/delete", json!({})),
            "bad_request",
        ),
        (
            c.raw(
                "POST",
                "/v1/collections/mem/records/payload",
                "application/json",
                br#"{"ids": [0], "payload": {"f": 1e999}}"#.to_vec(),
            ),
            "bad_request",
        ),
        (
            c.post(
                "/v1/collections/mem/records/count",
                json!({"filter": {"must": [{"has_id": []}]}}),
            ),
            "invalid_filter",
        ),
        (
            c.post(
                "/v1/collections/mem/search",
                json!({"vector": [1, 0, 0], "filter": {"must": [{"key": "n", "range": {}}]}}),
            ),
            "invalid_filter",
        ),
    ];
    for (i, ((status, body), code)) in cases.into_iter().enumerate() {
        assert_eq!(body["code"], code, "case {i}: {status} {body}");
        assert!(
            matches!(status, 400 | 404 | 409 | 422),
            "case {i}: {status} {body}"
        );
        assert!(
            !body["message"].as_str().unwrap_or("").is_empty(),
            "case {i}"
        );
    }
    assert_eq!(state_of(&c), before, "a refused request changed the state");
}

#[test]
fn a_follower_holds_the_same_keyed_state() {
    let ldir = tempfile::tempdir().unwrap();
    let fdir = tempfile::tempdir().unwrap();
    let leader = Node::start(ldir.path(), &[]);
    let f = follower(fdir.path(), &leader.url, &[]);
    let c = leader.client();
    docs(&c);
    c.post(
        "/v1/collections/mem/indexes",
        json!({"field": "n", "kind": "integer"}),
    );
    c.post(
        "/v1/collections/mem/records/payload",
        json!({"filter": {"must": [{"key": "n", "range": {"gt": 0}}]}, "payload": {"hot": true}}),
    );
    let target = c.state();
    let fc = f.client();
    wait_until(60, "the follower to catch up", || {
        fc.try_call("GET", "/v1/state", None)
            .is_ok_and(|(s, v)| s == 200 && v["seq"].as_u64() == Some(target.0))
    });
    assert_eq!(fc.state(), target);
    let (_, v) = fc.post(
        "/v1/collections/mem/records/count",
        json!({"filter": {"must": [{"key": "hot", "match": {"value": true}}]}}),
    );
    assert_eq!(v["count"], 2, "{v}");
}

/// A graph node linked by key follows the key through upserts that give the record a new id,
/// and resolves to nothing while no record holds it; a restart's replay agrees.
#[test]
fn graph_links_by_key_survive_upserts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    docs(&c);
    let (s, v) = c.post(
        "/v1/graph/nodes",
        json!({"kind": "fact", "record": {"collection": "mem", "key": "a"}}),
    );
    assert_eq!(s, 201, "{v}");
    let by_key = v["id"].as_u64().unwrap();
    let (_, v) = c.post(
        "/v1/graph/nodes",
        json!({"kind": "fact", "record": {"collection": "mem", "id": 0}}),
    );
    let by_id = v["id"].as_u64().unwrap();
    let link = |id: u64| c.get(&format!("/v1/graph/nodes/{id}")).1["record"].clone();
    assert_eq!(
        link(by_key),
        json!({"collection": "mem", "key": "a", "id": 0})
    );

    // A new vector: a new id for the key; the key link follows, the id link stays.
    let (_, v) = c.post(
        "/v1/collections/mem/records/upsert",
        json!({"records": [{"key": "a", "vector": [1, 1, 0]}]}),
    );
    let new_id = v["ids"][0].as_u64().unwrap();
    assert_ne!(new_id, 0);
    assert_eq!(
        link(by_key),
        json!({"collection": "mem", "key": "a", "id": new_id})
    );
    assert_eq!(link(by_id), json!({"collection": "mem", "id": 0}));
    c.post("/v1/collections/mem/records/delete", json!({"keys": ["a"]}));
    assert_eq!(link(by_key), json!({"collection": "mem", "key": "a"}));

    // Refused: both or neither of id and key, a key no record holds, a bad key.
    let before = c.state();
    for (body, status, code) in [
        (
            json!({"collection": "mem", "id": 1, "key": "b"}),
            400,
            "bad_request",
        ),
        (json!({"collection": "mem"}), 400, "bad_request"),
        (
            json!({"collection": "mem", "key": "a"}),
            404,
            "key_not_found",
        ),
        (json!({"collection": "mem", "key": ""}), 400, "invalid_key"),
        (
            json!({"collection": "nope", "key": "b"}),
            404,
            "collection_not_found",
        ),
    ] {
        let (s, v) = c.post("/v1/graph/nodes", json!({"kind": "fact", "record": body}));
        assert_eq!(
            (s, v["code"].as_str().unwrap()),
            (status, code),
            "{body}: {v}"
        );
    }
    assert_eq!(c.state(), before);

    c.post(
        "/v1/collections/mem/records/upsert",
        json!({"records": [{"key": "a", "vector": [0, 1, 1]}]}),
    );
    let relinked = link(by_key);
    assert_eq!(relinked["id"], new_id + 1, "{relinked}");
    let state = c.state();
    let mut node = node;
    node.restart();
    let c = node.client();
    assert_eq!(c.state(), state);
    assert_eq!(
        c.get(&format!("/v1/graph/nodes/{by_key}")).1["record"],
        relinked
    );
    node.kill();
    assert_eq!(hex::encode(replay_log(dir.path()).state_hash()), state.2);
}

/// The README's agent-memory quick start, run as written (each `curl` against a test node):
/// every call succeeds and the search answers the one record the filter allows.
#[test]
fn the_readme_quick_start_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = &readme[readme.find("### Agent memory").expect("the section")..];
    let start = section.find("```sh\n").unwrap() + 6;
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    let mut answers = Vec::new();
    // A command runs from a line starting `curl` to the next (its JSON may span lines).
    let mut commands: Vec<String> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end().trim_end_matches('\\');
        if line.starts_with("curl") {
            commands.push(line.to_string());
        } else if let Some(last) = commands.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    for cmd in &commands {
        let url = cmd
            .split_whitespace()
            .find(|w| w.starts_with("localhost:3000"))
            .unwrap();
        let path = &url["localhost:3000".len()..];
        let (status, body) = match cmd.find("-d '") {
            Some(i) => {
                let json = &cmd[i + 4..cmd.rfind('\'').unwrap()];
                c.post(path, serde_json::from_str(json).expect(json))
            }
            None => c.get(path),
        };
        assert!((200..300).contains(&status), "{cmd}: {status} {body}");
        answers.push(body);
    }
    assert_eq!(answers.len(), 6);
    let hits = answers[2]["results"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{}", answers[2]);
    assert_eq!(hits[0]["key"], "n1");
    assert_eq!(hits[0]["document"], "Alice likes tea");
    assert_eq!(answers[3]["missing"], json!(["n9"]));
    assert_eq!(answers[4]["count"], 2);
    assert_eq!(answers[5]["deleted"], 1);
}
