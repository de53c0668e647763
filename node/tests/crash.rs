//! Crash safety: SIGKILL during ingestion loses nothing acknowledged, recovery equals a clean
//! replay of the log, corrupt logs stop the node with a clear error, and a full disk fails
//! writes cleanly and recovers once there is space.
//!
//! Rounds are bounded for CI; set `VALORI_CRASH_ROUNDS` for a longer soak.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{b64, replay_log, vector, Client, Node};
use serde_json::json;

const DIM: usize = 8;

/// An acknowledged write: id, the vector sent, the metadata sent.
type Acked = (u64, Vec<f64>, String);

/// Inserts until the server goes away; returns what was acknowledged.
fn ingest(c: Client, thread: u64, acked: Arc<Mutex<Vec<Acked>>>) {
    for n in 0u64.. {
        let seed = thread * 1_000_000 + n;
        let result = if n % 4 == 3 {
            // Every fourth write is a batch of five.
            let recs: Vec<(Vec<f64>, String)> = (0..5)
                .map(|j| {
                    (
                        vector(seed * 7 + j, DIM),
                        b64(format!("t{thread}-{n}-{j}").as_bytes()),
                    )
                })
                .collect();
            let body = json!({"records": recs.iter().map(|(v, m)| json!({"vector": v, "metadata": m})).collect::<Vec<_>>()});
            match c.try_call("POST", "/v1/collections/v/records/batch", Some(&body)) {
                Ok((200, v)) => {
                    let ids: Vec<u64> = v["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap())
                        .collect();
                    let mut a = acked.lock().unwrap();
                    for (id, (vec, m)) in ids.into_iter().zip(recs) {
                        a.push((id, vec, m));
                    }
                    Ok(())
                }
                Ok((s, v)) => Err(format!("{s} {v}")),
                Err(e) => Err(e.to_string()),
            }
        } else {
            let v = vector(seed * 7, DIM);
            let m = b64(format!("t{thread}-{n}").as_bytes());
            match c.try_call(
                "POST",
                "/v1/collections/v/records",
                Some(&json!({"vector": v, "metadata": m})),
            ) {
                Ok((200, r)) => {
                    acked
                        .lock()
                        .unwrap()
                        .push((r["id"].as_u64().unwrap(), v, m));
                    Ok(())
                }
                Ok((s, r)) => Err(format!("{s} {r}")),
                Err(e) => Err(e.to_string()),
            }
        };
        if result.is_err() {
            return;
        }
    }
}

fn check_acked(c: &Client, acked: &[Acked]) {
    for (id, v, m) in acked {
        let (s, r) = c.get(&format!("/v1/collections/v/records/{id}"));
        assert_eq!(
            s, 200,
            "acknowledged record {id} is missing after the crash: {r}"
        );
        let got: Vec<f64> = r["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(&got, v, "record {id} vector");
        assert_eq!(r["metadata"], m.as_str(), "record {id} metadata");
    }
}

#[test]
fn sigkill_during_ingest_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("VALORI_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 40 events exercise recovery through a snapshot; the whole log is kept
    // for the clean replay.
    let args = ["--snapshot-every", "40", "--prune-log", "false"];
    let mut node = Node::start(dir.path(), &args);
    node.client().post("/v1/collections", json!({"name": "v", "dimension": DIM, "index": {"type": "hnsw", "m": 8, "ef_construction": 32}}));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = 0x1234_5678u64;
    for round in 0..rounds {
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let c = node.client();
                let a = Arc::clone(&acked);
                std::thread::spawn(move || ingest(c, round * 10 + t, a))
            })
            .collect();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (rng >> 33) % 400));
        node.kill();
        for w in writers {
            w.join().unwrap();
        }
        node = Node::start(dir.path(), &args);
        let c = node.client();
        let acked_now = acked.lock().unwrap().clone();
        check_acked(&c, &acked_now);
        let (seq, chain, state) = c.state();
        assert!(
            seq as usize >= acked_now.len() / 5,
            "sequence number {seq} too low"
        );
        // The recovered state equals a clean replay of the whole log.
        node.kill();
        let replayed = replay_log(dir.path());
        assert_eq!(replayed.seq(), seq, "round {round}");
        assert_eq!(hex::encode(replayed.chain_hash()), chain, "round {round}");
        assert_eq!(hex::encode(replayed.state_hash()), state, "round {round}");
        node = Node::start(dir.path(), &args);
        eprintln!(
            "round {round}: {} acknowledged records verified at seq {seq}",
            acked_now.len()
        );
    }
    assert!(
        acked.lock().unwrap().len() > 50,
        "the test should have ingested something"
    );
}

#[test]
fn corrupt_log_entries_stop_the_node_naming_the_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--snapshot-every", "0"];
    let mut node = Node::start(dir.path(), &args);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    for i in 0..10 {
        c.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
    }
    node.kill();

    // Flip one byte of entry 7's event: decoding may still succeed, but the chain hash cannot.
    {
        let store = valori_node::store::Store::open(dir.path()).unwrap();
        let mut e = store.entry(7).unwrap().unwrap();
        let last = e.event.len() - 1;
        e.event[last] ^= 0x40;
        store.append(&[e]).unwrap();
    }
    let err = Node::try_start(dir.path(), &args)
        .err()
        .expect("a corrupt log must stop the node");
    assert!(err.contains("sequence number 7"), "{err}");
    // Restore the entry from a clean copy of the event, then make a gap instead.
    {
        let store = valori_node::store::Store::open(dir.path()).unwrap();
        let mut e = store.entry(7).unwrap().unwrap();
        let last = e.event.len() - 1;
        e.event[last] ^= 0x40;
        store.append(&[e]).unwrap();
    }
    let node = Node::start(dir.path(), &args);
    assert_eq!(node.client().state().0, 11);
    drop(node);
    {
        let store = valori_node::store::Store::open(dir.path()).unwrap();
        store.prune_through(3).unwrap();
    }
    // Entries 1..=3 are gone and there is no snapshot: recovery cannot start at 4.
    let err = Node::try_start(dir.path(), &args)
        .err()
        .expect("a gap must stop the node");
    assert!(err.contains("expected sequence number 1, found 4"), "{err}");
}

/// A 24 MiB tmpfs under `dir`, unmounted when dropped; `None` (with a note naming `test`)
/// where mounting needs privileges this run does not have.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, test: &str) -> Option<SmallDisk> {
        let mnt = dir.join("small");
        std::fs::create_dir_all(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk(mnt))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn disk_full_fails_cleanly_and_recovers_with_space() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(
        dir.path(),
        "disk_full_fails_cleanly_and_recovers_with_space",
    ) else {
        return;
    };
    let mnt = disk.0.clone();
    let data = mnt.join("data");
    let args = ["--snapshot-every", "0"];
    let mut node = Node::start(&data, &args);
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "v", "dimension": 256, "index": {"type": "flat"}}),
    );
    let mut acked: Vec<Acked> = Vec::new();
    let mut failure = None;
    for b in 0..2000u64 {
        let recs: Vec<(Vec<f64>, String)> = (0..50)
            .map(|j| (vector(b * 50 + j, 256), b64(&[7; 64])))
            .collect();
        let body = json!({"records": recs.iter().map(|(v, m)| json!({"vector": v, "metadata": m})).collect::<Vec<_>>()});
        let (s, v) = c.post("/v1/collections/v/records/batch", body);
        if s == 200 {
            for (id, (vec, m)) in v["ids"].as_array().unwrap().iter().zip(recs) {
                acked.push((id.as_u64().unwrap(), vec, m));
            }
        } else {
            failure = Some((s, v));
            break;
        }
    }
    let (s, v) = failure.expect("a 24 MiB disk must fill up");
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["code"], "storage_error", "{v}");
    // Latched read-only: writes are refused with a clear error, readiness says why, and reads
    // serve exactly the durable state (every acknowledged record, nothing else).
    let (s, v) = c.post(
        "/v1/collections/v/records",
        json!({"vector": vector(1, 256)}),
    );
    assert_eq!((s, v["code"].as_str()), (503, Some("node_failed")), "{v}");
    let (s, why) = c.get("/readyz");
    assert_eq!(s, 503);
    assert_eq!(why["code"], "not_ready", "{why}");
    assert!(
        why["message"].as_str().unwrap().contains("storage"),
        "{why}"
    );
    let (seq, _, _) = c.state();
    assert_eq!(
        seq,
        1 + acked.len() as u64 / 50,
        "reads serve the durable state"
    );
    check_acked(&c, &acked);
    let next = acked.len();
    assert_eq!(c.get(&format!("/v1/collections/v/records/{next}")).0, 404);
    node.kill();

    // More space, restart: everything acknowledged is there.
    assert!(std::process::Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let node = Node::start(&data, &args);
    let c = node.client();
    check_acked(&c, &acked);
    assert_eq!(c.get("/readyz").0, 200);
    assert_eq!(
        c.post(
            "/v1/collections/v/records",
            json!({"vector": vector(1, 256)})
        )
        .0,
        200
    );
    eprintln!(
        "disk full after {} acknowledged records; all present after restart",
        acked.len()
    );
}

#[test]
fn a_snapshot_on_a_full_disk_fails_cleanly_and_leaves_the_node_writable() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(
        dir.path(),
        "a_snapshot_on_a_full_disk_fails_cleanly_and_leaves_the_node_writable",
    ) else {
        return;
    };
    let data = disk.0.join("data");
    let args = ["--snapshot-every", "0"];
    let node = Node::start(&data, &args);
    let c = node.client();
    c.post(
        "/v1/collections",
        json!({"name": "v", "dimension": 64, "index": {"type": "hnsw"}}),
    );
    for b in 0..10u64 {
        let recs: Vec<_> = (0..100)
            .map(|j| json!({"vector": vector(b * 100 + j, 64)}))
            .collect();
        let (s, v) = c.post(
            "/v1/collections/v/records/batch",
            json!({ "records": recs }),
        );
        assert_eq!(s, 200, "{v}");
    }
    // Fill what is left of the disk with another file.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
    }
    let (s, v) = c.post("/v1/snapshots", json!({}));
    assert_eq!((s, v["code"].as_str()), (500, Some("storage_error")), "{v}");
    let leftovers: Vec<_> = std::fs::read_dir(data.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A failed snapshot is not a failed log: the node stays ready, and with space it snapshots.
    assert_eq!(c.get("/readyz").0, 200);
    std::fs::remove_file(&filler).unwrap();
    let (s, v) = c.post("/v1/snapshots", json!({}));
    assert_eq!(s, 201, "{v}");
    let (seq, _, state) = c.state();
    assert_eq!(v["seq"].as_u64(), Some(seq));
    // The file the node names restores to the live state, and its size is the one reported.
    let bytes = std::fs::read(v["path"].as_str().unwrap()).unwrap();
    assert_eq!(v["bytes"].as_u64(), Some(bytes.len() as u64));
    let k = valori_kernel::Kernel::restore(&bytes).unwrap();
    assert_eq!(hex::encode(k.state_hash()), state);
    assert_eq!(
        c.post(
            "/v1/collections/v/records",
            json!({"vector": vector(5, 64)})
        )
        .0,
        200
    );
}

/// Snapshots that all fail to verify, with a log that does not begin at 1 (right after a
/// restore the log starts past the snapshot): the node refuses to start, names the files, and
/// leaves them where they are, instead of starting empty and letting retention delete them.
#[test]
fn a_node_whose_only_snapshot_is_damaged_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), &[]);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    for i in 0..2 {
        c.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
    }
    let (_, snap) = c.post("/v1/snapshots", json!({}));
    let (_, bytes) = c.bytes(&format!("/v1/snapshots/{}", snap["id"]));
    let (s, v) = c.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        bytes,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(node.terminate(), Some(0));

    // Damage every snapshot file in the middle.
    let damaged = common::files_under(dir.path(), |name| name.ends_with(".vsnap"));
    for p in &damaged {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(p, &b).unwrap();
    }
    assert!(!damaged.is_empty(), "a snapshot file exists");
    let err = match Node::try_start(dir.path(), &[]) {
        Ok(_) => panic!("a node with no usable snapshot and a log from past 1 started"),
        Err(e) => e,
    };
    assert!(err.contains("no snapshot verifies"), "{err}");
    let name = damaged[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(err.contains(&name), "{name} named in: {err}");
    for p in &damaged {
        assert!(p.exists(), "{} kept", p.display());
    }
}

/// A retained snapshot damaged on disk, read for a past chain hash, is the server's fault:
/// 500 `internal_error` naming the file, never a 400 blaming the caller.
#[test]
fn a_damaged_retained_snapshot_is_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--snapshot-every", "0"]);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    for i in 0..3 {
        c.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
    }
    let (_, snap) = c.post("/v1/snapshots", json!({}));
    let seq = snap["id"].as_u64().unwrap();
    for i in 3..6 {
        c.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
    }
    let (s, v) = c.get(&format!("/v1/state?seq={seq}"));
    assert_eq!(s, 200, "{v}");
    let path = snap["path"].as_str().unwrap();
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(path, &b).unwrap();
    let (s, v) = c.get(&format!("/v1/state?seq={seq}"));
    if s == 200 {
        // The log still holds the entry: nothing read the snapshot. Then prune was off.
        panic!("the chain hash came from the log, not the snapshot: {v}");
    }
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["code"], "internal_error");
    assert!(
        v["message"].as_str().unwrap().contains("does not verify"),
        "{v}"
    );
}

/// Snapshot uploads are taken one at a time (each may be gigabytes on the disk before it is
/// verified), and an upload whose client goes away leaves no temporary file behind.
#[test]
fn snapshot_uploads_are_one_at_a_time_and_a_cancelled_one_leaves_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = node.client();
    c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
    let (_, snap) = c.post("/v1/snapshots", json!({}));
    let (_, good) = c.bytes(&format!("/v1/snapshots/{}", snap["id"]));
    let uploads = || common::files_under(dir.path(), |name| name.starts_with(".upload-"));
    // A slow client: headers and the first bytes of a large body, then nothing.
    let addr = node.url.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST /v1/snapshots/restore HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000000\r\n\r\n"
    )
    .unwrap();
    slow.write_all(&vec![0u8; 256 * 1024]).unwrap();
    common::wait_until(10, "the upload's temporary file", || !uploads().is_empty());
    let (s, v) = c.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        good.clone(),
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["code"], "busy");
    // The slow client goes away: its file goes too, and the next upload is taken.
    drop(slow);
    common::wait_until(10, "the temporary file to be removed", || {
        uploads().is_empty()
    });
    let (s, v) = c.raw(
        "POST",
        "/v1/snapshots/restore",
        "application/octet-stream",
        good,
    );
    assert_eq!(s, 200, "{v}");
    assert!(uploads().is_empty());
}

/// A restore killed at each of its steps leaves a node that starts, with either the old state
/// (killed before the restore was decided) or the restored one (after), never a mixture: the
/// restored snapshot has the sequence number of a snapshot the node already holds, and a newer
/// snapshot and log entries past it exist, so every step has something to undo or finish.
#[test]
fn a_restore_killed_at_each_step_is_undone_or_finished() {
    let steps = [
        ("restore-staged", false),
        ("restore-decided", true),
        ("restore-log-cleared", true),
        ("restore-old-removed", true),
        ("restore-installed", true),
        ("restore-history-bumped", true),
    ];
    for (step, finished) in steps {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node::try_start_env(dir.path(), &[], &[("VALORI_TEST_CRASH_AT", step)])
            .expect("node starts");
        let c = node.client();
        c.post("/v1/collections", json!({"name": "v", "dimension": 4}));
        for i in 0..3 {
            c.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
        }
        let (_, snap) = c.post("/v1/snapshots", json!({}));
        let (_, bytes) = c.bytes(&format!("/v1/snapshots/{}", snap["id"]));
        let restored = c.state();
        for i in 3..6 {
            c.post("/v1/collections/v/records", json!({"vector": vector(i, 4)}));
        }
        c.post("/v1/snapshots", json!({}));
        c.post("/v1/collections/v/records", json!({"vector": vector(6, 4)}));
        let old = c.state();
        assert_ne!(old, restored);

        let sent = reqwest::blocking::Client::new()
            .post(format!("{}/v1/snapshots/restore", node.url))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send();
        assert!(sent.is_err(), "{step}: the node answered {sent:?}");
        let status = node.child.wait().unwrap();
        assert_eq!(
            status.code(),
            None,
            "{step}: killed by a signal, not exited"
        );

        let node = Node::start(dir.path(), &[]);
        let c = node.client();
        let expected = if finished { &restored } else { &old };
        assert_eq!(&c.state(), expected, "{step}");
        let (_, snaps) = c.get("/v1/snapshots");
        let ids: Vec<u64> = snaps["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_u64().unwrap())
            .collect();
        if finished {
            assert_eq!(ids, vec![restored.0], "{step}: only the restored snapshot");
        } else {
            assert_eq!(ids.len(), 2, "{step}: both snapshots kept: {ids:?}");
        }
        // Nothing of the restore is left behind, and the node writes and restarts as usual.
        let left =
            common::files_under(dir.path(), |n| n.contains("restore") || n.ends_with(".tmp"));
        assert!(left.is_empty(), "{step}: left behind {left:?}");
        let (s, v) = c.post("/v1/collections/v/records", json!({"vector": vector(9, 4)}));
        assert_eq!(s, 200, "{step}: {v}");
        let after = c.state();
        assert_eq!(after.0, expected.0 + 1);
        drop(c);
        let mut node = node;
        node.restart();
        assert_eq!(node.client().state(), after, "{step}: after a restart");
    }
}
