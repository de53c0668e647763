//! Audit replay speed: builds a data directory of N synthetic SIFT-shaped 128-d vectors (one
//! HNSW collection, m=16, ef_construction=200, written through the service in batches of 1,000
//! with a snapshot every 250 events and the whole log kept), then times what an auditor runs on
//! it: `valori verify` (every entry and snapshot, replayed from the first event), `valori at`
//! of a search at the seq before the last snapshot (the most events past the one before it),
//! and a node's `at_seq` search of the same seq (one thread, as a node replays). Prints
//! events/s and vectors/s for each.
//!
//! `cargo run --release -p valori-node --bin bench_audit -- --synthetic 1000000`

use std::time::Instant;

use valori_bench::{flag, machine, synthetic};
use valori_node::audit::{self, AtQuery, Source};
use valori_node::service::{RecordIn, Service};

const BATCH: usize = 1000;
const SNAPSHOT_EVERY: u64 = 250;

fn main() {
    valori_bench::only_flags(
        &["--synthetic", "--threads"],
        &[],
        "usage: bench_audit [--synthetic N] [--threads T]",
    );
    let n: usize = flag("--synthetic", 1_000_000);
    let threads: usize = flag("--threads", 2);
    let root = std::env::temp_dir().join(format!("valori-bench-audit-{}", std::process::id()));
    let dir = root.join("data");
    let mut config = valori_node::Config::for_data_dir(&dir);
    config.snapshot_every = SNAPSHOT_EVERY;
    config.prune_log = false;
    let engine = valori_node::open_engine(&config).expect("engine");
    let service = Service::embedded(engine);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let data = synthetic(n, 128, 1);
    let t = Instant::now();
    rt.block_on(
        service.create_collection(
            serde_json::from_value(serde_json::json!({
                "name": "bench", "dimension": 128, "metric": "l2",
                "index": {"type": "hnsw", "m": 16, "ef_construction": 200}
            }))
            .unwrap(),
        ),
    )
    .expect("create");
    for start in (0..n).step_by(BATCH) {
        let records = (start..(start + BATCH).min(n))
            .map(|i| RecordIn {
                vector: data.row(i).iter().map(|&x| f64::from(x)).collect(),
                tag: 0,
                metadata: None,
            })
            .collect();
        rt.block_on(service.insert("bench".into(), records, true))
            .expect("insert");
    }
    let ingest = t.elapsed().as_secs_f64();
    let head = service.state_blocking(None).unwrap();
    let events = head.seq;
    service.shutdown();
    drop(service);

    println!("dataset: synthetic SIFT-shaped {n} x 128, HNSW m=16 ef_construction=200, batches of {BATCH}");
    println!("machine: {}", machine());
    println!(
        "history: {events} events, a snapshot every {SNAPSHOT_EVERY} events, written in {ingest:.1} s ({:.0} vectors/s durable)",
        n as f64 / ingest
    );

    // verify: from the first event, every entry and every snapshot checked.
    let source = Source::Dir(dir.clone());
    let t = Instant::now();
    let report = audit::verify(&source, threads);
    let secs = t.elapsed().as_secs_f64();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.seq, events);
    assert_eq!(report.state_hash, hex::encode(head.state_hash.unwrap()));
    println!(
        "verify ({threads} threads): {} events, {} snapshots, in {secs:.1} s: {:.0} events/s, {:.0} vectors/s",
        report.events,
        report.snapshots.len(),
        report.events as f64 / secs,
        n as f64 / secs
    );

    // at: a seq 249 events past the nearest snapshot.
    let last = *report.snapshots.last().expect("a snapshot");
    let seq = last - 1;
    let base = report
        .snapshots
        .iter()
        .copied()
        .filter(|&s| s <= seq)
        .max()
        .unwrap_or(0);
    let replayed = seq - base;
    let query = AtQuery::Search(
        serde_json::from_value(serde_json::json!({"vector": data.row(7), "k": 10})).unwrap(),
    );
    let t = Instant::now();
    let cli = audit::at(&source, seq, "bench", &query, threads).expect("at");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "at --seq {seq} ({threads} threads): snapshot at {base} loaded, {replayed} events replayed, searched, state hashed in {secs:.1} s: {:.0} events/s, {:.0} vectors/s",
        replayed as f64 / secs,
        (replayed as usize * BATCH) as f64 / secs
    );

    // The node's at_seq: the same seq, one thread.
    let engine = valori_node::open_engine(&config).expect("engine");
    let service = Service::embedded(engine);
    let AtQuery::Search(mut req) = query else {
        unreachable!()
    };
    req.at_seq = Some(seq);
    let t = Instant::now();
    let hits = service.search_blocking("bench", &req).expect("at_seq");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        hits.hashes.map(|(_, s)| hex::encode(s)).as_deref(),
        cli["state_hash"].as_str()
    );
    println!(
        "node at_seq {seq} (1 thread): {replayed} events replayed in {secs:.1} s: {:.0} events/s, {:.0} vectors/s",
        replayed as f64 / secs,
        (replayed as usize * BATCH) as f64 / secs
    );
    service.shutdown();
    drop(service);
    let _ = std::fs::remove_dir_all(&root);
}
