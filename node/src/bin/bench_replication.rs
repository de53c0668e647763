//! Replication: time for a new follower to bootstrap from the leader's snapshot, then follower
//! lag while the leader ingests at its maximum durable rate, then the latency and throughput of
//! durable single-record writes with asynchronous and synchronous replication (`--sync-replicas`
//! 0 and 1). Leader and follower are real servers in this process on 127.0.0.1, each with a
//! real RocksDB in a temporary directory.
//!
//! `cargo run --release -p valori-node --bin bench_replication -- --synthetic 1000000`
//! (`--only-sync` runs the write-latency part alone; `--writes N` sets its writes per client.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use valori_bench::{build_in, flag, machine, synthetic, to_fixed};

fn post(addr: &str, path: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Starts a node (leader or follower) on 127.0.0.1; returns its engine and HTTP address.
fn start(
    rt: &tokio::runtime::Runtime,
    config: valori_node::Config,
) -> (valori_node::Engine, String) {
    let engine = valori_node::open_engine(&config).expect("engine");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let e = engine.clone();
    rt.spawn(async move {
        valori_node::serve(&config, e, listener, None, None, std::future::pending()).await
    });
    (engine, addr)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Durable single-record writes against a leader with one follower, with `sync` followers
/// required: one client for latency, then four for throughput. Prints p50/p99 and writes/s.
fn write_latency(rt: &tokio::runtime::Runtime, root: &std::path::Path, sync: u32, writes: usize) {
    let dir = root.join(format!("sync{sync}"));
    let mut lc = valori_node::Config::for_data_dir(dir.join("leader"));
    lc.snapshot_every = 0;
    lc.sync_replicas = sync;
    let (_leader, leader_addr) = start(rt, lc);
    let mut fc = valori_node::Config::for_data_dir(dir.join("follower"));
    fc.replication_mode = "follower".into();
    fc.leader_url = Some(format!("http://{leader_addr}"));
    fc.snapshot_every = 0;
    let (_follower, _) = start(rt, fc);
    assert_eq!(
        post(
            &leader_addr,
            "/v1/collections",
            br#"{"name": "w", "dimension": 128}"#
        ),
        201
    );
    let data = synthetic(writes * 4 + 1, 128, 11);
    let one = |i: usize| -> f64 {
        let body = data.json_one(i);
        let t = Instant::now();
        assert_eq!(post(&leader_addr, "/v1/collections/w/records", &body), 200);
        t.elapsed().as_secs_f64() * 1000.0
    };
    let mut lat: Vec<f64> = (0..writes).map(one).collect();
    let t = Instant::now();
    let threads: Vec<_> = (1..=4)
        .map(|c| {
            let addr = leader_addr.clone();
            let bodies: Vec<Vec<u8>> = (c * writes..(c + 1) * writes)
                .map(|i| data.json_one(i % (writes * 4 + 1)))
                .collect();
            std::thread::spawn(move || {
                for b in &bodies {
                    assert_eq!(post(&addr, "/v1/collections/w/records", b), 200);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let rate = (4 * writes) as f64 / t.elapsed().as_secs_f64();
    println!(
        "--sync-replicas {sync}: one client, {writes} single-record writes: p50 {:.2} ms, p99 {:.2} ms; four clients: {rate:.0} writes/s",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
}

fn main() {
    valori_bench::only_flags(
        &["--synthetic", "--ingest-seconds", "--writes"],
        &["--only-sync"],
        "usage: bench_replication [--synthetic N] [--ingest-seconds S] [--writes N] [--only-sync]",
    );
    let n: usize = flag("--synthetic", 1_000_000);
    let ingest_secs: f64 = flag("--ingest-seconds", 10.0);
    let writes: usize = flag("--writes", 1000);
    let only_sync = std::env::args().any(|a| a == "--only-sync");
    let root = std::env::temp_dir().join(format!("valori-bench-repl-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    if only_sync {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        println!("machine: {}", machine());
        for sync in [0, 1] {
            write_latency(&rt, &root, sync, writes);
        }
        let _ = std::fs::remove_dir_all(&root);
        std::process::exit(0);
    }

    // The leader's state: n synthetic vectors in an HNSW collection, as a snapshot file.
    let data = to_fixed(&synthetic(n, 128, 1));
    let (k, build) = build_in(
        valori_kernel::Kernel::new(),
        &data,
        None,
        10_000,
        2,
        16,
        200,
    );
    let snap = k.snapshot();
    drop(k);
    let snap_path = root.join("leader.vsnap");
    std::fs::write(&snap_path, &snap).unwrap();
    drop(snap);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lc = valori_node::Config::for_data_dir(root.join("leader"));
    lc.snapshot_every = 0;
    lc.restore_from = Some(snap_path.clone());
    let (leader, leader_addr) = start(&rt, lc);
    let bytes = std::fs::metadata(leader.snapshots().unwrap()[0].path.clone())
        .unwrap()
        .len();

    // Bootstrap: from the follower's start until it has the leader's state.
    let mut fc = valori_node::Config::for_data_dir(root.join("follower"));
    fc.replication_mode = "follower".into();
    fc.leader_url = Some(format!("http://{leader_addr}"));
    fc.snapshot_every = 0;
    let t = Instant::now();
    let (follower, _) = start(&rt, fc);
    let target = leader.seq().unwrap();
    while follower.seq().unwrap_or(0) < target {
        std::thread::sleep(Duration::from_millis(5));
    }
    let bootstrap = t.elapsed().as_secs_f64();
    assert_eq!(follower.state().unwrap(), leader.state().unwrap());

    // Lag under maximum durable ingest: one client posts batches of 1,000 back to back;
    // a sampler records both sequence numbers every 10 ms.
    let extra = synthetic(200_000, 128, 7);
    let bodies: Vec<Vec<u8>> = (0..extra.len())
        .step_by(1000)
        .map(|s| extra.json_batch(s..s + 1000))
        .collect();
    let (l2, f2) = (leader.clone(), follower.clone());
    let sampler = std::thread::spawn(move || {
        let start = Instant::now();
        let mut samples = Vec::new();
        while start.elapsed().as_secs_f64() < ingest_secs + 5.0 {
            samples.push((
                start.elapsed().as_secs_f64(),
                l2.seq().unwrap(),
                f2.seq().unwrap(),
            ));
            std::thread::sleep(Duration::from_millis(10));
        }
        samples
    });
    let t = Instant::now();
    let mut sent = 0usize;
    for b in &bodies {
        if t.elapsed().as_secs_f64() > ingest_secs {
            break;
        }
        assert_eq!(
            post(&leader_addr, "/v1/collections/bench/records/batch", b),
            200
        );
        sent += 1000;
    }
    let ingest = t.elapsed().as_secs_f64();
    let samples = sampler.join().unwrap();
    let mut lag_events: Vec<f64> = samples
        .iter()
        .map(|s| s.1.saturating_sub(s.2) as f64)
        .collect();
    // Time lag: for each sample, how long until the follower reached the leader's sequence.
    let mut lag_secs: Vec<f64> = samples
        .iter()
        .filter_map(|&(t0, l, _)| {
            samples
                .iter()
                .find(|s| s.0 >= t0 && s.2 >= l)
                .map(|s| s.0 - t0)
        })
        .collect();
    assert_eq!(follower.state().unwrap(), leader.state().unwrap());
    println!("dataset: synthetic SIFT-shaped {n} x 128, HNSW m=16 ef_construction=200");
    println!("machine: {}", machine());
    println!(
        "leader state built in-process in {build:.1}s; snapshot {:.0} MiB",
        bytes as f64 / 1048576.0
    );
    println!("follower bootstrap (download, verify, persist, load): {bootstrap:.2}s");
    println!(
        "ingest on the leader: {sent} vectors in {ingest:.1}s ({:.0} vectors/s durable); follower lag p50 {:.1} / p99 {:.1} events, p50 {:.3} / p99 {:.3} s",
        sent as f64 / ingest,
        pct(&mut lag_events, 0.5),
        pct(&mut lag_events, 0.99),
        pct(&mut lag_secs, 0.5),
        pct(&mut lag_secs, 0.99)
    );
    for sync in [0, 1] {
        write_latency(&rt, &root, sync, writes);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::process::exit(0);
}
