//! The `valori` audit command on real data directories and live nodes: a good history verifies
//! (directory while its node runs, the node's URL, a snapshot file) to the node's own state
//! hash; a tampered event, a gap, a log cut short under a newer snapshot and a corrupt
//! snapshot are each reported with the sequence number or file and why; two nodes that
//! diverged at a known seq are told apart there; `log` decodes events for people.

mod common;

use std::path::Path;
use std::process::Command;

use common::{vector, Client, Node};
use serde_json::{json, Value};

fn valori(args: &[&str]) -> (i32, String) {
    valori_in(Path::new("."), args)
}

fn valori_in(cwd: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_valori"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run valori");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn verify_json(source: &str) -> (i32, Value) {
    let (code, out) = valori(&["verify", "--json", source]);
    let line = out.lines().next().unwrap_or_default();
    (
        code,
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}")),
    )
}

/// Collections, inserts, upserts, a payload write, graph nodes, deletes: every kind of event.
fn workload(c: &Client, tag: u64) {
    let ok = |(s, v): (u16, Value)| assert!(s == 200 || s == 201, "{s} {v}");
    ok(c.post("/v1/collections", json!({"name": "v", "dimension": 4})));
    for b in 0..3u64 {
        let recs: Vec<_> = (0..20)
            .map(|i| json!({"vector": vector(b * 20 + i, 4), "tag": tag}))
            .collect();
        ok(c.post("/v1/collections/v/records/batch", json!({"records": recs})));
    }
    ok(c.post(
        "/v1/collections/v/records/upsert",
        json!({"records": [{"key": "alice", "vector": [1, 0, 0, 0], "payload": {"user": "alice"}, "document": "tea"}]}),
    ));
    ok(c.post(
        "/v1/graph/nodes",
        json!({"kind": "person", "record": {"collection": "v", "key": "alice"}}),
    ));
    ok(c.post(
        "/v1/collections/v/records/payload",
        json!({"keys": ["alice"], "payload": {"seen": true}}),
    ));
    ok(c.delete("/v1/collections/v/records/3"));
}

fn snapshot(c: &Client) -> u64 {
    let (s, v) = c.post("/v1/snapshots", json!({}));
    assert!(s == 200 || s == 201, "{s} {v}");
    v["seq"].as_u64().unwrap()
}

/// Rewrites the stored entry at `seq` with `edit` applied to its bytes (chain hash first).
fn tamper(dir: &Path, seq: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let cfs = ["log", "meta"];
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.join("db"), cfs).unwrap();
    let log = db.cf_handle("log").unwrap();
    let mut value = db.get_cf(log, seq.to_be_bytes()).unwrap().expect("entry");
    edit(&mut value);
    db.put_cf(log, seq.to_be_bytes(), value).unwrap();
}

fn delete_entries(dir: &Path, seqs: impl Iterator<Item = u64>) {
    let cfs = ["log", "meta"];
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.join("db"), cfs).unwrap();
    let log = db.cf_handle("log").unwrap();
    for s in seqs {
        db.delete_cf(log, s.to_be_bytes()).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn verify_a_good_history_and_find_each_kind_of_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    // The whole log kept, so that every entry can be replayed and damaged.
    let mut node = Node::start(&dir, &["--prune-log", "false"]);
    let c = node.client();
    workload(&c, 1);
    let snap = snapshot(&c);
    workload_more(&c);
    let (seq, chain, state) = c.state();

    // While the node runs: its directory (read-only) and its URL verify to its own hashes.
    let (code, r) = verify_json(dir.to_str().unwrap());
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (
            r["seq"].as_u64().unwrap(),
            r["chain_hash"].as_str().unwrap(),
            r["state_hash"].as_str().unwrap()
        ),
        (seq, chain.as_str(), state.as_str())
    );
    assert_eq!(r["snapshots"], json!([snap]));
    assert_eq!(
        (r["events"].as_u64(), r["replayed_from"].as_u64()),
        (Some(seq), Some(0))
    );
    let (code, r) = verify_json(&node.url);
    assert_eq!(
        (code, r["state_hash"].as_str().unwrap()),
        (0, state.as_str()),
        "{r}"
    );
    // A snapshot file alone verifies to its own seq.
    let snap_file = dir
        .join("snapshots")
        .join(format!("snapshot-{snap:020}.vsnap"));
    let (code, r) = verify_json(snap_file.to_str().unwrap());
    assert_eq!((code, r["seq"].as_u64()), (0, Some(snap)), "{r}");
    let (code, table) = valori(&["verify", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("verdict       good") && table.contains(&state),
        "{table}"
    );
    node.kill();

    // One byte of one stored event changed.
    let bad = tmp.path().join("tampered");
    copy_dir(&dir, &bad);
    tamper(&bad, 5, |v| {
        let last = v.len() - 1;
        v[last] ^= 0x01;
    });
    let (code, r) = verify_json(bad.to_str().unwrap());
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["problem"]["seq"], 5, "{r}");
    assert!(
        r["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("chain hash"),
        "{r}"
    );
    assert_eq!(r["seq"], 4, "good up to the entry before: {r}");

    // An entry missing from the middle.
    let gap = tmp.path().join("gap");
    copy_dir(&dir, &gap);
    delete_entries(&gap, 7..=7);
    let (code, r) = verify_json(gap.to_str().unwrap());
    assert_eq!((code, &r["problem"]["seq"]), (1, &json!(7)), "{r}");
    assert!(
        r["problem"]["reason"].as_str().unwrap().contains("missing"),
        "{r}"
    );

    // The log cut short below a snapshot it had already reached.
    let cut = tmp.path().join("cut");
    copy_dir(&dir, &cut);
    delete_entries(&cut, snap - 1..=seq);
    let (code, r) = verify_json(cut.to_str().unwrap());
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["problem"]["seq"], snap - 1, "{r}");
    assert!(
        r["problem"]["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("snapshot-{snap:020}.vsnap")),
        "{r}"
    );

    // A snapshot with one byte flipped.
    let corrupt = tmp.path().join("corrupt");
    copy_dir(&dir, &corrupt);
    let file = corrupt
        .join("snapshots")
        .join(format!("snapshot-{snap:020}.vsnap"));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let (code, r) = verify_json(corrupt.to_str().unwrap());
    assert_eq!(code, 1, "{r}");
    assert!(
        r["problem"]["file"].as_str().unwrap().ends_with(".vsnap"),
        "{r}"
    );
    assert!(
        r["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{r}"
    );
    let (code, r) = verify_json(file.to_str().unwrap());
    assert_eq!(code, 1, "{r}");

    // A node that pruned its log at the snapshot: replayed from the snapshot.
    let pruned_dir = tmp.path().join("pruned");
    let pruned = Node::start(&pruned_dir, &[]);
    let pc = pruned.client();
    workload(&pc, 2);
    let psnap = snapshot(&pc);
    workload_more(&pc);
    let (pseq, _, pstate) = pc.state();
    let (code, r) = verify_json(pruned_dir.to_str().unwrap());
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        (
            r["replayed_from"].as_u64(),
            r["events"].as_u64(),
            r["state_hash"].as_str()
        ),
        (Some(psnap), Some(pseq - psnap), Some(pstate.as_str()))
    );

    // Not a history at all.
    let (code, out) = valori(&["verify", tmp.path().join("nothing").to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no such directory"), "{out}");
}

fn workload_more(c: &Client) {
    let ok = |(s, v): (u16, Value)| assert!(s == 200 || s == 201, "{s} {v}");
    ok(c.post(
        "/v1/collections/v/records/upsert",
        json!({"records": [{"key": "bob", "vector": [0, 1, 0, 0], "payload": {"user": "bob"}}]}),
    ));
    ok(c.post(
        "/v1/collections/v/records/delete",
        json!({"filter": {"must": [{"key": "user", "match": {"value": "bob"}}]}}),
    ));
}

#[test]
fn diff_finds_where_two_nodes_diverged_and_log_reads_for_people() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Node::start(&tmp.path().join("a"), &[]);
    let b = Node::start(&tmp.path().join("b"), &[]);
    let e = Node::start(&tmp.path().join("e"), &[]);
    // The same operations give the same history; then one different write at a known seq.
    workload(&a.client(), 1);
    workload(&b.client(), 1);
    workload(&e.client(), 1);
    let (at, _, _) = a.client().state();
    a.client().post(
        "/v1/collections/v/records",
        json!({"vector": [1, 1, 1, 1], "tag": 1}),
    );
    b.client().post(
        "/v1/collections/v/records",
        json!({"vector": [2, 2, 2, 2], "tag": 1}),
    );

    let (code, out) = valori(&["diff", "--json", &a.url, &b.url]);
    assert_eq!(code, 1, "{out}");
    let d: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(d["seq"], at + 1, "{d}");
    assert!(
        d["event_a"]
            .as_str()
            .unwrap()
            .starts_with("insert into \"v\""),
        "{d}"
    );
    assert_ne!(d["state_a"], d["state_b"], "{d}");
    assert_eq!(d["state_a"].as_str().unwrap(), a.client().state().2);

    // Equal histories, one a directory read while its node runs, say so.
    let (code, out) = valori(&["diff", &e.url, tmp.path().join("e").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("equal"), "{out}");
    // A history that is a prefix of the other differs where the shorter ends.
    let (code, out) = valori(&["diff", "--json", &a.url, &e.url]);
    assert_eq!(code, 1, "{out}");
    let d: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (d["seq"].as_u64(), d["event_b"].is_null()),
        (Some(at + 1), true),
        "{d}"
    );

    let (code, out) = valori(&["log", &a.url, "--key", "alice"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("upsert into \"v\"") && lines[0].contains("\"alice\""),
        "{out}"
    );
    assert!(lines[1].contains("create graph node \"person\""), "{out}");
    assert!(lines[2].contains("set payload"), "{out}");
    let (_, out) = valori(&[
        "log",
        tmp.path().join("e").to_str().unwrap(),
        "--from",
        "2",
        "--to",
        "3",
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines()
            .all(|l| l.contains("insert into \"v\": 20 record(s)")),
        "{out}"
    );
}

/// The README's audit section, run as written (the `valori` function pointing at this build's
/// binary, the node's directory and URL in place of ./valori_data and localhost:3000).
#[test]
fn the_readme_audit_section_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = &readme[readme.find("### Audit").expect("the section")..];
    let start = section.find("```sh\n").unwrap() + 6;
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let mut lines = block.lines();
    assert!(lines.next().unwrap().starts_with("valori() {"), "{block}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("valori_data");
    let node = Node::start(&dir, &[]);
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "notes", "dimension": 3, "metric": "cosine"}),
    );
    c.post(
        "/v1/collections/notes/records/upsert",
        json!({"records": [{"key": "n1", "vector": [0.9, 0.1, 0], "document": "Alice likes tea"}]}),
    );
    let mut outputs = Vec::new();
    for line in lines {
        let cmd = line.split('#').next().unwrap().trim();
        if cmd.is_empty() {
            continue;
        }
        let cmd = cmd
            .replace("./valori_data", dir.to_str().unwrap())
            .replace("http://localhost:3000", &node.url);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[0], "valori", "{line}");
        let (code, out) = valori_in(tmp.path(), &words[1..]);
        assert_eq!(code, 0, "{line}: {out}");
        outputs.push(out);
    }
    assert_eq!(outputs.len(), 6);
    assert!(outputs[0].contains("verdict       good"), "{}", outputs[0]);
    assert!(outputs[1].contains(&c.state().2), "{}", outputs[1]);
    assert!(
        outputs[2].contains("\"n1\"") && outputs[2].lines().count() == 1,
        "{}",
        outputs[2]
    );
    assert!(outputs[3].contains("equal"), "{}", outputs[3]);
    let receipt: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("receipt.json")).unwrap()).unwrap();
    assert_eq!(receipt["results"][0]["key"], "n1", "{receipt}");
    assert!(outputs[5].starts_with("good:"), "{}", outputs[5]);
}

/// `valori at` answers as the state stood at a past seq: a record's payload before it changed,
/// a search before an insert, a count before a delete; the same bytes from the directory (from
/// a snapshot) and from the node's URL (from the log's start).
#[test]
fn at_answers_as_of_a_past_seq_identically_from_every_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = Node::start(&dir, &["--prune-log", "false"]);
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "notes", "dimension": 3, "metric": "cosine", "index": {"type": "flat"}}),
    );
    let (_, v) = c.post(
        "/v1/collections/notes/records/upsert",
        json!({"records": [
            {"key": "n1", "vector": [1, 0, 0], "payload": {"v": 1}, "document": "first"},
            {"key": "n2", "vector": [0, 1, 0], "payload": {"v": 1}}]}),
    );
    let s1 = v["seq"].as_u64().unwrap();
    snapshot(&c);
    let (_, v) = c.post(
        "/v1/collections/notes/records/payload",
        json!({"keys": ["n1"], "payload": {"v": 2}}),
    );
    let s2 = v["seq"].as_u64().unwrap();
    c.post(
        "/v1/collections/notes/records/upsert",
        json!({"records": [{"key": "n3", "vector": [0.9, 0.1, 0]}]}),
    );
    let (_, v) = c.post(
        "/v1/collections/notes/records/delete",
        json!({"keys": ["n2"]}),
    );
    let s4 = v["seq"].as_u64().unwrap();

    let at = |src: &str, seq: u64, query: &[&str]| -> (i32, String) {
        let seq = seq.to_string();
        let mut args = vec!["at", src, "--seq", seq.as_str()];
        args.extend_from_slice(query);
        valori(&args)
    };
    let d = dir.to_str().unwrap();
    let get = ["get", "--collection", "notes", "--key", "n1", "--key", "n2"];
    let (code, out) = at(d, s1, &get);
    assert_eq!(code, 0, "{out}");
    let a: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a["seq"], s1);
    assert_eq!(a["records"][0]["payload"], json!({"v": 1}), "{a}");
    assert_eq!(a["state_hash"].as_str().unwrap().len(), 64);
    let (_, out2) = at(d, s2, &get);
    let b: Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(b["records"][0]["payload"], json!({"v": 2}), "{b}");
    let (_, out4) = at(d, s4, &get);
    let e: Value = serde_json::from_str(&out4).unwrap();
    assert_eq!(e["missing"], json!(["n2"]), "{e}");
    assert_eq!(
        e["state_hash"].as_str().unwrap(),
        c.state().2,
        "at the head, the node's own state"
    );
    // The same bytes from the node's URL, and a chain hash the node itself reports for s2.
    assert_eq!(at(&node.url, s2, &get).1, out2);
    let (_, v) = c.get(&format!("/v1/state?seq={s2}"));
    assert_eq!(b["chain_hash"], v["chain_hash"]);

    let keys = |out: &str| result_keys(&serde_json::from_str(out).unwrap());
    assert_eq!(keys(&at(d, s2, &SEARCH_NOTES).1), ["n1", "n2"]);
    assert_eq!(keys(&at(d, s4, &SEARCH_NOTES).1), ["n1", "n3"]);
    let count = [
        "count",
        "--collection",
        "notes",
        "--filter",
        r#"{"must": [{"key": "v", "match": {"value": 1}}]}"#,
    ];
    let (_, out) = at(d, s1, &count);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["count"], 2);
    let (_, out) = at(d, s2, &count);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["count"], 1);

    let (code, out) = at(d, s4 + 5, &get);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ends at seq"), "{out}");
}

/// `valori at`'s search of the `notes` collections below, for the query `[1, 0.05, 0]`.
const SEARCH_NOTES: [&str; 7] = [
    "search",
    "--collection",
    "notes",
    "--vector",
    "1,0.05,0",
    "--k",
    "3",
];

/// The keys of a search answer's results, in order.
fn result_keys(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {answer}"))
        .iter()
        .map(|h| h["key"].as_str().unwrap().to_string())
        .collect()
}

/// `answer` names the node's current seq, chain hash and state hash.
fn names_the_current_state(c: &Client, answer: &Value) {
    let (seq, chain, state) = c.state();
    assert_eq!(answer["seq"], seq, "{answer}");
    assert_eq!(answer["chain_hash"], chain.as_str(), "{answer}");
    assert_eq!(answer["state_hash"], state.as_str(), "{answer}");
}

/// The node answers a search with `at_seq` as `valori at` does (the same JSON, hashes
/// included), over HTTP and gRPC; `hashes` returns the current state's hashes; a future seq, a
/// pruned past, a replay longer than `--max-replay-events` and `at_seq` in a batch are
/// refused with their codes and change nothing.
#[test]
fn at_seq_on_the_node_answers_as_the_command_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = Node::start(&dir, &["--max-replay-events", "3", "--snapshot-keep", "1"]);
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "notes", "dimension": 3, "metric": "cosine"}),
    );
    let (_, v) = c.post(
        "/v1/collections/notes/records/upsert",
        json!({"records": [
            {"key": "n1", "vector": [1, 0, 0], "payload": {"v": 1}},
            {"key": "n2", "vector": [0, 1, 0], "payload": {"v": 1}}]}),
    );
    let s1 = v["seq"].as_u64().unwrap();
    let (_, v) = c.post(
        "/v1/collections/notes/records/upsert",
        json!({"records": [{"key": "n3", "vector": [0.9, 0.1, 0]}]}),
    );
    let s2 = v["seq"].as_u64().unwrap();
    let query = json!({"vector": [1, 0.05, 0], "k": 3, "include": ["payload"]});
    let with = |extra: Value| -> Value {
        let mut q = query.clone();
        q.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        q
    };

    // At s1 the node answers what the command answers from its directory, n3 not yet there.
    let (s, past) = c.post("/v1/collections/notes/search", with(json!({"at_seq": s1})));
    assert_eq!(s, 200, "{past}");
    assert_eq!(result_keys(&past), ["n1", "n2"]);
    assert_eq!(past["seq"], s1);
    let seq = s1.to_string();
    let (code, out) = valori(
        &[
            &["at", dir.to_str().unwrap(), "--seq", &seq][..],
            &SEARCH_NOTES,
            &["--include", "payload"],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), past);
    let (_, v) = c.get(&format!("/v1/state?seq={s1}"));
    assert_eq!(past["chain_hash"], v["chain_hash"]);

    // The same over gRPC.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        let mut g =
            valori_node::grpc::pb::valori_client::ValoriClient::connect(node.grpc_url.clone())
                .await
                .unwrap();
        g.search(valori_node::grpc::pb::SearchRequest {
            collection: "notes".into(),
            vector: vec![1.0, 0.05, 0.0],
            k: Some(3),
            at_seq: Some(s1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    });
    assert_eq!(reply.seq, s1);
    assert_eq!(
        reply.results.iter().map(|h| h.id).collect::<Vec<_>>(),
        past["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(reply.chain_hash.as_deref(), past["chain_hash"].as_str());
    assert_eq!(reply.state_hash.as_deref(), past["state_hash"].as_str());

    // `hashes` on a live search: the state the node reports.
    let (s, now) = c.post(
        "/v1/collections/notes/search",
        with(json!({"hashes": true})),
    );
    assert_eq!(s, 200, "{now}");
    names_the_current_state(&c, &now);
    assert_eq!(now["results"].as_array().unwrap().len(), 3);
    let (_, plain) = c.post("/v1/collections/notes/search", query.clone());
    assert!(plain.get("state_hash").is_none(), "{plain}");
    assert_eq!(plain["results"], now["results"]);

    // Refusals.
    let refused = |body: Value, path: &str| -> (u16, String, String) {
        let (s, v) = c.post(path, body);
        (
            s,
            v["code"].as_str().unwrap_or_default().to_string(),
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (s, code, msg) = refused(
        with(json!({"at_seq": s2 + 10})),
        "/v1/collections/notes/search",
    );
    assert_eq!((s, code.as_str()), (404, "not_found"), "{msg}");
    assert!(msg.contains("future"), "{msg}");
    let (s, code, msg) = refused(
        json!({"searches": [with(json!({"at_seq": s1}))]}),
        "/v1/collections/notes/search/batch",
    );
    assert_eq!((s, code.as_str()), (400, "bad_request"), "{msg}");
    assert!(msg.contains("searches[0]"), "{msg}");
    for i in 0..4u64 {
        c.post(
            "/v1/collections/notes/records/upsert",
            json!({"records": [{"key": format!("m{i}"), "vector": [0.5, 0.5, i]}]}),
        );
    }
    let (head, _, _) = c.state();
    // From the empty state to `head` is more than 3 events.
    let (s, code, msg) = refused(
        with(json!({"at_seq": head - 1})),
        "/v1/collections/notes/search",
    );
    assert_eq!((s, code.as_str()), (400, "limit_exceeded"), "{msg}");
    assert!(msg.contains("--max-replay-events"), "{msg}");
    // A snapshot prunes the log behind it: the state before it is gone, the ones after it
    // (within three events) are answered.
    let snap = snapshot(&c);
    for key in ["late", "later"] {
        c.post(
            "/v1/collections/notes/records/upsert",
            json!({"records": [{"key": key, "vector": [0, 0, 1]}]}),
        );
    }
    let (s, code, msg) = refused(with(json!({"at_seq": s2})), "/v1/collections/notes/search");
    assert_eq!((s, code.as_str()), (404, "not_found"), "{msg}");
    assert!(msg.contains(&format!("at seq {snap}")), "{msg}");
    let (s, v) = c.post(
        "/v1/collections/notes/search",
        with(json!({"at_seq": snap, "k": 10})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 7, "{v}");
    let (s, v) = c.post(
        "/v1/collections/notes/search",
        with(json!({"at_seq": snap + 1, "k": 10})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 8, "{v}");
    // Nothing above changed the state.
    assert_eq!(c.state().0, snap + 2);
}

/// A receipt of a live node's answer verifies against the node's directory (while it runs),
/// its URL and a copy; it fails, naming why, once its answer, its state hash or the history
/// is tampered with, and against a history that diverged before its seq.
#[test]
fn receipts_verify_and_fail_after_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = Node::start(&dir, &["--prune-log", "false"]);
    let c = node.client();
    workload(&c, 1);
    let receipt = tmp.path().join("receipt.json");
    let (code, out) = valori(&[
        "receipt",
        &node.url,
        "--collection",
        "v",
        "--vector",
        "0.5,-1,2,0.25",
        "--k",
        "5",
        "--include",
        "payload,document",
        "--out",
        receipt.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&receipt).unwrap()).unwrap();
    assert_eq!(r["results"].as_array().unwrap().len(), 5, "{r}");
    names_the_current_state(&c, &r);
    // The node moves on; the receipt still verifies (it names its seq).
    workload_more(&c);
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);
    let check = |receipt: &Path, source: &str| -> (i32, Value) {
        let (code, out) = valori(&[
            "verify-receipt",
            "--json",
            receipt.to_str().unwrap(),
            source,
        ]);
        (
            code,
            serde_json::from_str(out.lines().next().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}: {out}")),
        )
    };
    for source in [
        dir.to_str().unwrap(),
        node.url.as_str(),
        copy.to_str().unwrap(),
    ] {
        let (code, v) = check(&receipt, source);
        assert_eq!((code, &v["good"]), (0, &json!(true)), "{source}: {v}");
    }
    let (code, out) = valori(&[
        "verify-receipt",
        receipt.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("good:"), "{out}");

    // A changed answer, a changed state hash.
    let edited = |edit: &dyn Fn(&mut Value)| -> std::path::PathBuf {
        let mut v = r.clone();
        edit(&mut v);
        let p = tmp.path().join("edited.json");
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        p
    };
    let p = edited(&|v| {
        v["results"][1]["distance"] = json!(v["results"][1]["distance"].as_i64().unwrap() + 1)
    });
    let (code, v) = check(&p, dir.to_str().unwrap());
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("result 1 differs"),
        "{v}"
    );
    let p = edited(&|v| {
        v["results"]
            .as_array_mut()
            .unwrap()
            .pop()
            .map(drop)
            .unwrap()
    });
    let (code, v) = check(&p, dir.to_str().unwrap());
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("result 4 differs"),
        "{v}"
    );
    let p = edited(&|v| v["state_hash"] = json!("00".repeat(32)));
    let (code, v) = check(&p, dir.to_str().unwrap());
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("state hash"),
        "{v}"
    );

    // A tampered history: one byte of an event before the receipt's seq.
    tamper(&copy, 3, |value| {
        let last = value.len() - 1;
        value[last] ^= 1;
    });
    let (code, v) = check(&receipt, copy.to_str().unwrap());
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["problem"]["seq"], 3, "{v}");

    // Another history, diverged before the receipt's seq.
    let other_dir = tmp.path().join("other");
    let other = Node::start(&other_dir, &[]);
    workload(&other.client(), 2);
    workload_more(&other.client());
    let (code, v) = check(&receipt, &other.url);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["problem"]["reason"]
            .as_str()
            .unwrap()
            .contains("chain hash"),
        "{v}"
    );

    // Not a receipt; a receipt of something other than a node.
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap();
    let (code, out) = valori(&[
        "verify-receipt",
        junk.to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a receipt"), "{out}");
    let (code, out) = valori(&[
        "receipt",
        dir.to_str().unwrap(),
        "--collection",
        "v",
        "--vector",
        "1,0,0,0",
    ]);
    assert_eq!(code, 2, "{out}");
}

/// `--progress` reports the replay on standard error and leaves the answer on standard output
/// as it is.
#[test]
fn progress_goes_to_standard_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = Node::start(&dir, &[]);
    workload(&node.client(), 1);
    let out = Command::new(env!("CARGO_BIN_EXE_valori"))
        .args(["--progress", "verify", "--json", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replayed") && err.contains("events/s"),
        "{err}"
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["problem"].is_null(), "{json}");
}

/// A node that pruned its log is verified by URL from the snapshot its log continues
/// (downloaded and checked), and answers `at` past it the same as its directory does.
#[test]
fn verify_a_pruned_node_by_url() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let node = Node::start(&dir, &["--snapshot-keep", "1"]);
    let c = node.client();
    workload(&c, 1);
    let snap = snapshot(&c);
    workload_more(&c);
    let (code, v) = verify_json(&node.url);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["replayed_from"], snap, "{v}");
    assert_eq!(v["state_hash"], c.state().2.as_str(), "{v}");
    let seq = (snap + 1).to_string();
    let get = [
        "--seq",
        seq.as_str(),
        "get",
        "--collection",
        "v",
        "--key",
        "bob",
    ];
    let (code, by_url) = valori(&[&["at", node.url.as_str()][..], &get[..]].concat());
    assert_eq!(code, 0, "{by_url}");
    let (_, by_dir) = valori(&[&["at", dir.to_str().unwrap()][..], &get[..]].concat());
    assert_eq!(by_url, by_dir);
    // Before the snapshot, the events are gone on both copies.
    let (code, out) = valori(&["at", &node.url, "--seq", "2", "count", "--collection", "v"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("at seq {snap}")), "{out}");
}
