//! Backups to object storage and restores from them, with real servers: `valori-node`
//! processes on 127.0.0.1 over real RocksDB directories, backing up to a local directory
//! (`file://`) and to a real S3 protocol server that stores into a directory (`s3s-fs`, which
//! `scripts/test` installs and names in `VALORI_S3_SERVER`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{files_under, metric, vector, wait_until, Client, Node};
use serde_json::{json, Value};

fn ok((s, v): (u16, Value)) -> Value {
    assert!((200..300).contains(&s), "{s}: {v}");
    v
}

/// Creates collection `v` (dimension 8) and inserts `n` records in batches of `batch`.
fn fill(c: &Client, from: u64, n: u64, batch: u64) {
    if from == 0 {
        ok(c.post(
            "/v1/collections",
            json!({"name": "v", "dimension": 8, "metric": "l2", "index": {"type": "hnsw", "m": 8}}),
        ));
    }
    let mut i = from;
    while i < from + n {
        let recs: Vec<Value> = (i..(i + batch).min(from + n))
            .map(|j| json!({"key": format!("k{j}"), "vector": vector(j, 8), "payload": {"j": j}}))
            .collect();
        i += recs.len() as u64;
        ok(c.post(
            "/v1/collections/v/records/upsert",
            json!({ "records": recs }),
        ));
    }
}

/// `(seq, chain hash, state hash)` at a past sequence number, as the node replays it.
fn state_at(c: &Client, seq: u64) -> (u64, String, String) {
    let v = ok(c.get(&format!("/v1/state?seq={seq}&state_hash=true")));
    (
        v["seq"].as_u64().unwrap(),
        v["chain_hash"].as_str().unwrap().into(),
        v["state_hash"].as_str().unwrap().into(),
    )
}

/// Waits until the node has shipped its whole log.
fn wait_shipped(c: &Client) -> Value {
    let mut last = Value::Null;
    wait_until(30, "the log to be shipped", || {
        let head = c.state().0;
        last = ok(c.get("/v1/backups"));
        last["shipping"]["shipped_through"].as_u64() == Some(head)
    });
    last
}

/// A node in `dir` backing up to `url` (snapshots only on request), with `extra` flags.
fn backing_up(dir: &Path, url: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--snapshot-every", "0", "--backup-to", url];
    args.extend_from_slice(extra);
    Node::start(dir, &args)
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Starts a node restored from `url` (to `seq` when given) into the empty `dir`, or the error
/// it stops with.
fn restore(dir: &Path, url: &str, seq: Option<u64>, env: &[(&str, &str)]) -> Result<Node, String> {
    let mut args = vec!["--snapshot-every", "0", "--restore-from-backup", url];
    let seq = seq.map(|s| s.to_string());
    if let Some(s) = &seq {
        args.extend(["--restore-target-seq", s.as_str()]);
    }
    Node::try_start_env(dir, &args, env)
}

/// `valori-node restore`: its exit status, standard output and standard error.
fn restore_command(dir: &Path, url: &str, seq: Option<u64>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_valori-node"));
    cmd.args(["restore", "--from", url, "--data-dir"]).arg(dir);
    if let Some(s) = seq {
        cmd.args(["--target-seq", &s.to_string()]);
    }
    let out = cmd.env("VALORI_LOG", "warn").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether a data directory holds no state: no snapshot file and no log entry.
fn holds_nothing(dir: &Path) -> bool {
    let store = valori_node::store::Store::open(dir).unwrap();
    store.snapshots().unwrap().is_empty() && store.first_seq().unwrap().is_none()
}

#[test]
fn a_directory_backup_restores_to_the_newest_state_and_to_any_shipped_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("backup"));
    let source = backing_up(
        &tmp.path().join("a"),
        &url,
        &["--backup-ship-interval-s", "1"],
    );
    let c = source.client();
    fill(&c, 0, 30, 10);
    let early = c.state().0;
    let early_state = state_at(&c, early - 1);

    // A snapshot backup now: it says what it holds, as the node does.
    let (s, b) = c.post("/v1/backups", json!({}));
    assert_eq!(s, 201, "{b}");
    let at_backup = c.state();
    assert_eq!(b["seq"].as_u64(), Some(at_backup.0));
    assert_eq!(b["chain_hash"].as_str(), Some(at_backup.1.as_str()));
    assert_eq!(b["state_hash"].as_str(), Some(at_backup.2.as_str()));
    assert!(b["bytes"].as_u64().unwrap() > 0);

    fill(&c, 30, 40, 7);
    ok(c.post("/v1/collections/v/records/delete", json!({"keys": ["k3"]})));
    let middle = state_at(&c, at_backup.0 + 3);
    fill(&c, 70, 5, 5);
    let listing = wait_shipped(&c);
    let head = c.state();
    assert_eq!(listing["reaches"].as_u64(), Some(head.0), "{listing}");
    assert_eq!(listing["backups"].as_array().unwrap().len(), 1, "{listing}");
    // The leader answers from what it knows of the destination, which it writes: asking does
    // not list the store again (each listing costs LIST requests).
    let lists = || {
        let (_, m) = c.get("/metrics");
        metric(m.as_str().unwrap(), "valori_backup_list_requests_total").unwrap()
    };
    let before = lists();
    assert!(before >= 1);
    for _ in 0..5 {
        assert_eq!(ok(c.get("/v1/backups")), listing);
    }
    assert_eq!(lists(), before);
    assert_eq!(listing["destination"].as_str(), Some(url.as_str()));
    assert_eq!(listing["shipping"]["lag_events"].as_u64(), Some(0));
    assert!(listing["last_error"].is_null() && listing["shipping"]["error"].is_null());

    // The newest state: the snapshot, then every shipped entry after it.
    let newest = restore(&tmp.path().join("b"), &url, None, &[]).unwrap();
    assert_eq!(newest.client().state(), head);
    let (s, v) = newest.client().post(
        "/v1/collections/v/search",
        json!({"vector": vector(50, 8), "k": 3}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["key"], "k50", "{v}");

    // An exact earlier seq after the snapshot, and one before it (from the first event on,
    // no snapshot needed): each equal to what the source says of that seq.
    for want in [middle.clone(), early_state] {
        let dir = tmp.path().join(format!("at-{}", want.0));
        let node = restore(&dir, &url, Some(want.0), &[]).unwrap();
        assert_eq!(node.client().state(), want);
        drop(node);
        // Started again with the same flags, the node keeps its state: a restore runs once.
        let again = restore(&dir, &url, Some(1), &[]).unwrap();
        assert_eq!(again.client().state(), want);
    }

    // The same with the restore command, which restores and exits; a node then serves it.
    let dir = tmp.path().join("by-command");
    let (code, out, err) = restore_command(&dir, &url, Some(middle.0));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["seq"].as_u64(), Some(middle.0), "{report}");
    assert_eq!(
        report["state_hash"].as_str(),
        Some(middle.2.as_str()),
        "{report}"
    );
    assert_eq!(
        report["snapshot_seq"].as_u64(),
        Some(at_backup.0),
        "{report}"
    );
    let (code, _, err) = restore_command(&dir, &url, None);
    assert_eq!(code, 1);
    assert!(err.contains("already holds state"), "{err}");
    let node = Node::start(&dir, &["--snapshot-every", "0"]);
    assert_eq!(node.client().state(), middle);
    drop(node);

    // Beyond what the backup reaches: refused, and the directory is left empty.
    let beyond = tmp.path().join("beyond");
    let err = restore(&beyond, &url, Some(head.0 + 1), &[]).err().unwrap();
    assert!(
        err.contains(&format!("beyond the backup, which reaches {}", head.0)),
        "{err}"
    );
    assert!(holds_nothing(&beyond));
}

/// Now, as RFC 3339 with milliseconds.
fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[test]
fn a_restore_to_a_time_takes_what_the_backup_held_then_and_reports_to_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("backup"));
    let before_anything = now_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let source = backing_up(
        &tmp.path().join("a"),
        &url,
        &["--backup-ship-interval-s", "1"],
    );
    let c = source.client();
    fill(&c, 0, 12, 4);
    wait_shipped(&c);
    let first = c.state();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = now_rfc3339();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fill(&c, 12, 12, 4);
    wait_shipped(&c);
    let head = c.state();
    assert!(head.0 > first.0);
    drop(source);

    // The time between the two rounds: the state the first had shipped, and nothing later.
    let dir = tmp.path().join("between");
    let report_file = tmp.path().join("between.json");
    let out = Command::new(env!("CARGO_BIN_EXE_valori-node"))
        .args([
            "restore",
            "--from",
            &url,
            "--target-time",
            &between,
            "--data-dir",
        ])
        .arg(&dir)
        .arg("--report")
        .arg(&report_file)
        .env("VALORI_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        report,
        "the file holds the line standard output prints"
    );
    assert_eq!(report["seq"].as_u64(), Some(first.0), "{report}");
    assert_eq!(report["state_hash"].as_str(), Some(first.2.as_str()));
    let node = Node::start(&dir, &["--snapshot-every", "0"]);
    assert_eq!(node.client().state(), first);
    drop(node);

    // Now: the newest. The same through the node's own flag.
    let dir = tmp.path().join("now");
    let node = Node::start(
        &dir,
        &[
            "--snapshot-every",
            "0",
            "--restore-from-backup",
            &url,
            "--restore-target-time",
            &now_rfc3339(),
        ],
    );
    assert_eq!(node.client().state(), head);
    drop(node);

    // Before the backup held anything: refused, naming the time, into the report too.
    let dir = tmp.path().join("before");
    let out = Command::new(env!("CARGO_BIN_EXE_valori-node"))
        .args(["restore", "--from", &url, "--target-time", &before_anything])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--report")
        .arg(&report_file)
        .env("VALORI_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    let err = report["error"].as_str().unwrap();
    assert!(err.contains("held nothing at"), "{err}");
    assert!(holds_nothing(&dir));

    // A time that is not one, or both targets at once: refused before anything is read.
    for args in [
        vec!["--target-time", "yesterday"],
        vec!["--target-time", &between, "--target-seq", "3"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_valori-node"))
            .args(["restore", "--from", &url, "--data-dir"])
            .arg(tmp.path().join("bad"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("RFC 3339") || err.contains("cannot be used with"),
            "{err}"
        );
    }
}

#[test]
fn a_missing_or_damaged_object_stops_a_restore_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let url = file_url(&backup);
    let source = backing_up(
        &tmp.path().join("a"),
        &url,
        &["--backup-ship-interval-s", "1"],
    );
    let c = source.client();
    fill(&c, 0, 10, 5);
    wait_shipped(&c);
    ok(c.post("/v1/backups", json!({})));
    // Several segments after the snapshot: one shipping round each.
    for round in 0..3 {
        fill(&c, 10 + round * 5, 5, 5);
        wait_shipped(&c);
    }
    let head = c.state();
    drop(source);
    let segments = {
        let mut s = files_under(&backup, |n| n.ends_with(".vseg"));
        s.sort();
        s
    };
    assert!(segments.len() >= 4, "{segments:?}");
    let snapshot = files_under(&backup, |n| n.ends_with(".vsnap"))
        .pop()
        .unwrap();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();

    // A segment in the middle gone: the gap is named by the first seq it held.
    let gone = segments[segments.len() - 2].clone();
    let held = std::fs::read(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let first: u64 = name(&gone)[..20].parse().unwrap();
    let dir = tmp.path().join("r1");
    let err = restore(&dir, &url, None, &[]).err().unwrap();
    assert!(
        err.contains(&format!("sequence number {first} is in no segment")),
        "{err}"
    );
    assert!(holds_nothing(&dir));
    std::fs::write(&gone, &held).unwrap();

    // A damaged segment: refused by its checksum, named.
    let mut bad = held.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&gone, &bad).unwrap();
    let err = restore(&dir, &url, None, &[]).err().unwrap();
    assert!(
        err.contains("damaged") && err.contains(&name(&gone)),
        "{err}"
    );
    assert!(holds_nothing(&dir));
    std::fs::write(&gone, &held).unwrap();

    // A damaged snapshot.
    let snap = std::fs::read(&snapshot).unwrap();
    let mut bad = snap.clone();
    bad[snap.len() / 2] ^= 0x01;
    std::fs::write(&snapshot, &bad).unwrap();
    let err = restore(&dir, &url, None, &[]).err().unwrap();
    assert!(
        err.contains("damaged") && err.contains(&name(&snapshot)),
        "{err}"
    );
    assert!(holds_nothing(&dir));
    std::fs::write(&snapshot, &snap).unwrap();

    // Mended, the same directory restores.
    let node = restore(&dir, &url, None, &[]).unwrap();
    assert_eq!(node.client().state(), head);
    drop(node);

    // A restore that a kill interrupted leaves its marker: the node refuses to start on the
    // directory, and the restore, run again, starts over.
    let cut = tmp.path().join("cut");
    {
        let store = valori_node::store::Store::open(&cut).unwrap();
        store.put_meta("backup-restore", b"1").unwrap();
    }
    let err = Node::try_start(&cut, &["--snapshot-every", "0"])
        .err()
        .unwrap();
    assert!(err.contains("interrupted restore"), "{err}");
    let (code, _, err) = restore_command(&cut, &url, Some(head.0 - 1));
    assert_eq!(code, 0, "{err}");
    let node = Node::start(&cut, &["--snapshot-every", "0"]);
    assert_eq!(node.client().state().0, head.0 - 1);
}

#[test]
fn retention_keeps_the_newest_snapshots_and_the_log_after_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let url = file_url(&backup);
    let source = backing_up(
        &tmp.path().join("a"),
        &url,
        &[
            "--backup-ship-interval-s",
            "1",
            "--backup-retain-count",
            "2",
        ],
    );
    let c = source.client();
    fill(&c, 0, 5, 5);
    wait_shipped(&c);
    let mut seqs = Vec::new();
    for round in 0..3 {
        fill(&c, 5 + round * 5, 5, 5);
        wait_shipped(&c);
        seqs.push(
            ok(c.post("/v1/backups", json!({})))["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    fill(&c, 20, 5, 5);
    let listing = wait_shipped(&c);
    let kept: Vec<u64> = listing["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, seqs[1..], "{listing}");
    // Segments that only lead up to the oldest kept snapshot are gone; the rest stay.
    for seg in files_under(&backup, |n| n.ends_with(".vseg")) {
        let n = seg.file_name().unwrap().to_string_lossy().into_owned();
        let last: u64 = n[21..41].parse().unwrap();
        assert!(
            last > seqs[1],
            "{n} was kept (oldest snapshot kept: {})",
            seqs[1]
        );
    }
    // A restore to before the oldest snapshot kept is no longer possible, and says why.
    let err = restore(&tmp.path().join("old"), &url, Some(seqs[0]), &[])
        .err()
        .unwrap();
    assert!(err.contains("sequence number 1 is in no segment"), "{err}");
    let node = restore(&tmp.path().join("new"), &url, Some(seqs[1] + 2), &[]).unwrap();
    assert_eq!(node.client().state(), state_at(&c, seqs[1] + 2));
}

#[test]
fn retention_by_age_keeps_the_newest_however_old() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("backup"));
    let source = backing_up(
        &tmp.path().join("a"),
        &url,
        &["--backup-ship-interval-s", "0", "--backup-retain-age", "1s"],
    );
    let c = source.client();
    fill(&c, 0, 5, 5);
    let first = ok(c.post("/v1/backups", json!({})))["seq"]
        .as_u64()
        .unwrap();
    // Manifests record whole seconds: two seconds later the first is older than one.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let listing = ok(c.get("/v1/backups"));
    assert_eq!(listing["backups"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["shipping"]["enabled"], false, "{listing}");
    fill(&c, 5, 5, 5);
    let second = ok(c.post("/v1/backups", json!({})))["seq"]
        .as_u64()
        .unwrap();
    let listing = ok(c.get("/v1/backups"));
    let kept: Vec<u64> = listing["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["seq"].as_u64().unwrap())
        .collect();
    assert!(first < second);
    assert_eq!(kept, [second], "{listing}");
}

#[test]
fn snapshots_the_node_takes_are_uploaded_and_unshipped_entries_are_never_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let backup = tmp.path().join("backup");
    let url = file_url(&backup);
    let data = tmp.path().join("a");
    // A shipping interval of an hour: after the first round, nothing ships until the node
    // stops. Snapshots every 10 events, one kept, log pruned: without backups the log would
    // begin after the last snapshot.
    let mut source = Node::start(
        &data,
        &[
            "--snapshot-every",
            "10",
            "--snapshot-keep",
            "1",
            "--backup-to",
            &url,
            "--backup-ship-interval-s",
            "3600",
        ],
    );
    let c = source.client();
    // The first round (at start) has run once `GET /v1/backups` reports a position.
    wait_until(30, "the first backup round", || {
        ok(c.get("/v1/backups"))["shipping"]["shipped_through"].is_u64()
    });
    fill(&c, 0, 40, 3);
    let head = c.state();
    let log = ok(c.get("/v1/log?from=1&limit=1"));
    assert_eq!(log["first_retained"].as_u64(), Some(1), "{log}");
    // Stopping ships what is left, and the snapshots taken meanwhile are not uploaded until a
    // round runs: the last one (at the stop) uploads the newest.
    assert_eq!(source.terminate(), Some(0));
    let snaps = files_under(&backup, |n| n.ends_with(".json"));
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    // Started again, the node reports the newest backup there as its last success (the
    // metric is not 0 until it takes one itself).
    let again = backing_up(&data, &url, &["--backup-ship-interval-s", "3600"]);
    let ac = again.client();
    wait_until(30, "the first backup round", || {
        ok(ac.get("/v1/backups"))["shipping"]["shipped_through"].is_u64()
    });
    let (_, m) = ac.get("/metrics");
    let last = metric(
        m.as_str().unwrap(),
        "valori_backup_last_success_timestamp_seconds",
    )
    .unwrap() as f64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(last > now - 600.0 && last <= now + 1.0, "{last} vs {now}");
    drop(again);
    let node = restore(&tmp.path().join("b"), &url, None, &[]).unwrap();
    assert_eq!(node.client().state(), head);
    drop(node);
    let node = restore(&tmp.path().join("c"), &url, Some(5), &[]).unwrap();
    assert_eq!(node.client().state().0, 5);
}

#[test]
fn a_destination_holding_another_history_is_not_written_to() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("backup"));
    let args = [
        "--snapshot-every",
        "0",
        "--backup-to",
        &url,
        "--backup-ship-interval-s",
        "1",
    ];
    let first = Node::start(&tmp.path().join("a"), &args);
    fill(&first.client(), 0, 10, 5);
    wait_shipped(&first.client());
    let reached = first.client().state().0;
    drop(first);
    let other = Node::start(&tmp.path().join("b"), &args);
    let c = other.client();
    fill(&c, 0, 12, 4);
    ok(c.post(
        "/v1/collections/v/records/upsert",
        json!({"records": [{"key": "other", "vector": vector(99, 8)}]}),
    ));
    let mut listing = Value::Null;
    wait_until(30, "the other history to be reported", || {
        listing = ok(c.get("/v1/backups"));
        listing["shipping"]["error"].is_string()
    });
    let why = listing["shipping"]["error"].as_str().unwrap();
    assert!(why.contains("another history"), "{why}");
    assert_eq!(listing["reaches"].as_u64(), Some(reached), "{listing}");
    let (_, m) = c.get("/metrics");
    let failures = metric(m.as_str().unwrap(), "valori_backup_ship_failures_total").unwrap();
    assert!(failures >= 1);
}

#[test]
fn a_node_without_a_destination_or_a_follower_refuses_to_back_up() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = Node::start(&tmp.path().join("a"), &["--snapshot-every", "0"]);
    let (s, v) = plain.client().post("/v1/backups", json!({}));
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("backup_not_configured")),
        "{v}"
    );
    let (s, v) = plain.client().get("/v1/backups");
    assert_eq!(s, 409, "{v}");

    let url = file_url(&tmp.path().join("backup"));
    let follower = common::follower(
        &tmp.path().join("f"),
        &plain.url,
        &["--backup-to", &url, "--backup-ship-interval-s", "1"],
    );
    let (s, v) = follower.client().post("/v1/backups", json!({}));
    assert_eq!(s, 403, "{v}");
    assert!(files_under(&tmp.path().join("backup"), |_| true).is_empty());

    let bad = Node::try_start(&tmp.path().join("c"), &["--backup-to", "ftp://host/x"])
        .err()
        .unwrap();
    assert!(bad.contains("unsupported scheme"), "{bad}");
}

/// A real S3 protocol server (`s3s-fs`) storing into a directory, with one access key.
struct S3Server {
    child: Child,
    endpoint: String,
    root: PathBuf,
}

const ACCESS_KEY: &str = "valori-test";
const SECRET_KEY: &str = "valori-test-secret";

impl S3Server {
    fn start(root: &Path) -> S3Server {
        let bin = std::env::var("VALORI_S3_SERVER").unwrap_or_else(|_| "s3s-fs".into());
        std::fs::create_dir_all(root.join("backups")).unwrap();
        let port = common::free_port();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting the S3 server {bin}: {e} (scripts/test installs it and sets \
                     VALORI_S3_SERVER; or `cargo install s3s-fs --features binary`)"
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until(30, "the S3 server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        S3Server {
            child,
            endpoint,
            root: root.to_path_buf(),
        }
    }

    fn env<'a>(&'a self, secret: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_s3_backup_uploads_large_snapshots_in_parts_and_refuses_wrong_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&tmp.path().join("s3"));
    let url = "s3://backups/clusters/one";
    let args = [
        "--snapshot-every",
        "0",
        "--backup-to",
        url,
        "--backup-ship-interval-s",
        "1",
    ];
    let source = Node::try_start_env(&tmp.path().join("a"), &args, &s3.env(SECRET_KEY)).unwrap();
    let c = source.client();
    // A snapshot of three 8 MiB parts: 5,000 records of 1,024 dimensions (20 MB of vectors),
    // in a flat collection (no index to build).
    ok(c.post(
        "/v1/collections",
        json!({"name": "big", "dimension": 1024, "metric": "l2", "index": {"type": "flat"}}),
    ));
    for b in 0..10u64 {
        let recs: Vec<Value> = (b * 500..(b + 1) * 500)
            .map(|j| json!({"vector": vector(j, 1024)}))
            .collect();
        ok(c.post(
            "/v1/collections/big/records/batch",
            json!({ "records": recs }),
        ));
    }
    let b = ok(c.post("/v1/backups", json!({})));
    assert!(b["bytes"].as_u64().unwrap() > 16 << 20, "{b}");
    fill(&c, 0, 20, 10);
    wait_shipped(&c);
    let head = c.state();
    // The objects are where the prefix says, in the server's directory.
    let stored = files_under(&s3.root.join("backups/clusters/one"), |n| {
        n.ends_with(".vsnap") || n.ends_with(".vseg")
    });
    assert!(stored.len() >= 2, "{stored:?}");

    let restored = restore(&tmp.path().join("b"), url, None, &s3.env(SECRET_KEY)).unwrap();
    assert_eq!(restored.client().state(), head);
    let (_, v) = restored.client().get("/v1/collections/big");
    assert_eq!(v["records"], 5000, "{v}");

    // A node whose secret is wrong: every backup request fails with the store's refusal, and
    // nothing is written.
    let before = files_under(&s3.root, |_| true).len();
    let wrong =
        Node::try_start_env(&tmp.path().join("w"), &args, &s3.env("not-the-secret")).unwrap();
    let (s, v) = wrong.client().post("/v1/backups", json!({}));
    assert_eq!((s, v["code"].as_str()), (502, Some("backup_failed")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("403"), "{v}");
    let (s, v) = wrong.client().get("/v1/backups");
    assert_eq!(s, 502, "{v}");
    drop(wrong);
    assert_eq!(files_under(&s3.root, |_| true).len(), before);
    // A restore with it stops before writing anything.
    let dir = tmp.path().join("r");
    let err = restore(&dir, url, None, &s3.env("not-the-secret"))
        .err()
        .unwrap();
    assert!(err.contains("403"), "{err}");
    assert!(holds_nothing(&dir));
}

#[test]
fn after_a_failover_the_new_leader_ships_on_into_the_same_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("backup"));
    let mut leader = backing_up(
        &tmp.path().join("a"),
        &url,
        &["--backup-ship-interval-s", "1"],
    );
    let follower = common::follower(
        &tmp.path().join("b"),
        &leader.url,
        &[
            "--snapshot-every",
            "0",
            "--backup-to",
            &url,
            "--backup-ship-interval-s",
            "1",
        ],
    );
    let (a, b) = (leader.client(), follower.client());
    fill(&a, 0, 10, 5);
    ok(a.post("/v1/backups", json!({})));
    fill(&a, 10, 5, 5);
    wait_shipped(&a);
    let before = a.state();
    wait_until(30, "the follower to catch up", || b.state() == before);
    // A follower ships nothing: its leader does.
    let listing = ok(b.get("/v1/backups"));
    assert!(
        listing["shipping"]["shipped_through"].is_null(),
        "{listing}"
    );
    assert_eq!(listing["reaches"].as_u64(), Some(before.0), "{listing}");
    let (s, v) = b.post("/v1/backups", json!({}));
    assert_eq!(s, 403, "{v}");

    leader.kill();
    let (s, v) = b.call(
        "PUT",
        "/v1/role",
        Some(&json!({"role": "leader", "epoch": 2})),
    );
    assert_eq!(s, 200, "{v}");
    fill(&b, 15, 10, 5);
    let listing = wait_shipped(&b);
    let after = b.state();
    assert_eq!(listing["reaches"].as_u64(), Some(after.0), "{listing}");
    assert!(listing["shipping"]["error"].is_null(), "{listing}");

    // One backup holds both leaders' history: restored to its end, and to the old leader's.
    let node = restore(&tmp.path().join("r1"), &url, None, &[]).unwrap();
    assert_eq!(node.client().state(), after);
    drop(node);
    let node = restore(&tmp.path().join("r2"), &url, Some(before.0), &[]).unwrap();
    assert_eq!(node.client().state(), before);
}

/// With synchronous replication the backup holds only what the followers hold: a write they do
/// not have yet (answered `replication_timeout`, durable on the leader alone, which a failover
/// may lose) is shipped once they have it, never before.
#[test]
fn with_synchronous_replication_only_what_the_followers_hold_is_shipped() {
    let tmp = tempfile::tempdir().unwrap();
    let url = file_url(&tmp.path().join("backup"));
    let leader = backing_up(
        &tmp.path().join("a"),
        &url,
        &[
            "--backup-ship-interval-s",
            "1",
            "--sync-replicas",
            "1",
            "--sync-timeout-ms",
            "400",
        ],
    );
    let dir_b = tmp.path().join("b");
    let mut follower = common::follower(&dir_b, &leader.url, &["--snapshot-every", "0"]);
    let c = leader.client();
    fill(&c, 0, 6, 3);
    let held = wait_shipped(&c);
    let confirmed = c.state().0;
    assert_eq!(
        held["shipping"]["shipped_through"].as_u64(),
        Some(confirmed)
    );

    // The follower gone: a write is durable here only, and stays out of the backup.
    follower.kill();
    let (s, v) = c.post(
        "/v1/collections/v/records/upsert",
        json!({"records": [{"key": "late", "vector": vector(99, 8)}]}),
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["code"], "replication_timeout", "{v}");
    assert_eq!(c.state().0, confirmed + 1);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let listing = ok(c.get("/v1/backups"));
    assert_eq!(
        listing["shipping"]["shipped_through"].as_u64(),
        Some(confirmed),
        "{listing}"
    );
    assert_eq!(listing["shipping"]["lag_events"].as_u64(), Some(1));
    // Nor is it in a snapshot: an on-demand backup waits as a synchronous write does, then
    // says why it cannot be taken.
    let (s, v) = c.post("/v1/backups", json!({}));
    assert_eq!(s, 502, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("synchronous followers do not hold"),
        "{v}"
    );
    // Back, the follower takes the write, and then the backup does.
    follower = common::follower(&dir_b, &leader.url, &["--snapshot-every", "0"]);
    let fc = follower.client();
    wait_until(30, "the follower to hold the write", || {
        fc.state().0 == confirmed + 1
    });
    let listing = wait_shipped(&c);
    assert_eq!(
        listing["shipping"]["shipped_through"].as_u64(),
        Some(confirmed + 1)
    );
    let (s, b) = c.post("/v1/backups", json!({}));
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["seq"].as_u64(), Some(confirmed + 1));
}
