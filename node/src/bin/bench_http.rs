//! Durable ingest over HTTP and search latency under concurrent clients, against a real
//! server (the `valori-node` binary beside this one, a process of its own) on 127.0.0.1 with a
//! real RocksDB in a temporary directory, compared with the in-process index build of the same
//! data; the node's resident memory against the bytes its state holds; single writes after
//! idle; then one client's search latency idle and while ingest runs at full rate, with a
//! health probe's latency meanwhile.
//!
//! `cargo build --release -p valori-node --bins &&
//!  $CARGO_TARGET_DIR/release/bench_http --synthetic 100000 [--dim 128] [--json]`
//!
//! `--vectors-on-disk` runs the node with its full-precision vectors in mapped files;
//! `--memory-limit-mib M` runs it in a memory cgroup of M MiB (as a container's limit would;
//! needs root and a cgroup memory controller), and reports the cgroup's peak.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use valori_bench::{build_in, flag, machine, synthetic, Json, Rng};
use valori_kernel::{Fixed, Kernel};

/// A minimal keep-alive HTTP/1.1 JSON client: the benchmark measures the server, not a client
/// library.
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).unwrap();
        Conn {
            stream: BufReader::new(s),
        }
    }

    fn post(&mut self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.call("POST", path, body)
    }

    fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        self.call("GET", path, b"")
    }

    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .expect(
                "the node closed the connection: it exited or was killed (under \
                 --memory-limit-mib an out-of-memory kill shows in dmesg)",
            )
            .parse()
            .unwrap();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        self.stream.read_exact(&mut buf).unwrap();
        (status, buf)
    }
}

/// A memory cgroup the node runs in, as a container's memory limit: version 1's `memory`
/// hierarchy or version 2's unified one. Removed when dropped (once its process is gone).
struct Cgroup {
    dir: std::path::PathBuf,
    v1: bool,
}

impl Cgroup {
    fn new(limit_mib: u64) -> Cgroup {
        let name = format!("valori-bench-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        let dir = match v1 {
            true => std::path::Path::new("/sys/fs/cgroup/memory").join(name),
            false => std::path::Path::new("/sys/fs/cgroup").join(name),
        };
        let made = std::fs::create_dir_all(&dir).and_then(|()| {
            let limit = (limit_mib << 20).to_string();
            match v1 {
                true => std::fs::write(dir.join("memory.limit_in_bytes"), limit),
                false => std::fs::write(dir.join("memory.max"), limit),
            }
        });
        if let Err(e) = made {
            eprintln!(
                "bench_http: cannot make a memory cgroup at {} ({e}): --memory-limit-mib needs root and a cgroup memory controller",
                dir.display()
            );
            std::process::exit(2);
        }
        Cgroup { dir, v1 }
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
    }

    fn read(&self, v1: &str, v2: &str) -> u64 {
        let file = self.dir.join(if self.v1 { v1 } else { v2 });
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most the cgroup was charged (anonymous memory and page cache), in bytes.
    fn peak(&self) -> u64 {
        self.read("memory.max_usage_in_bytes", "memory.peak")
    }

    /// Times its limit was hit (version 1) or it was out of memory (version 2's `max` events).
    fn limit_hits(&self) -> u64 {
        match self.v1 {
            true => self.read("memory.failcnt", ""),
            false => std::fs::read_to_string(self.dir.join("memory.events"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
                })
                .unwrap_or(0),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A `valori-node` process serving a temporary data directory; killed and its directory
/// removed when dropped.
struct Node {
    child: std::process::Child,
    dir: std::path::PathBuf,
    addr: String,
}

impl Node {
    fn start(
        bin: &std::path::Path,
        vectors_on_disk: bool,
        share_graph_lists: bool,
        cgroup: Option<&Cgroup>,
    ) -> Node {
        let dir = std::env::temp_dir().join(format!("valori-bench-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = std::process::Command::new(bin)
            .args(["--http-addr", "127.0.0.1", "--http-port", "0", "--no-grpc"])
            .args([
                "--snapshot-every",
                "0",
                "--index-threads",
                "2",
                "--log",
                "warn",
            ])
            .arg("--data-dir")
            .arg(&dir)
            // An environment variable, which a node from before the setting ignores.
            .env("VALORI_VECTORS_ON_DISK", vectors_on_disk.to_string())
            .env("VALORI_SHARE_GRAPH_LISTS", share_graph_lists.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start valori-node");
        if let Some(cgroup) = cgroup {
            // Before the node has its address, so before it holds any state.
            cgroup.add(child.id());
        }
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("valori-node listening on http://")
                    .map(str::to_owned)
            })
            .expect("valori-node printed no address");
        // Keep reading its output, so that the node never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Node { child, dir, addr }
    }

    /// The node's resident set, from `/proc`.
    fn rss_bytes(&self) -> u64 {
        self.status("VmRSS:")
    }

    /// A line of `/proc/PID/status` in bytes: `RssAnon:` (heap and other private memory) or
    /// `RssFile:` (mapped files' pages in memory: the vectors' with `--vectors-on-disk`).
    fn status(&self, field: &str) -> u64 {
        valori_bench::status_bytes(&format!("/proc/{}/status", self.child.id()), field)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Single writes timed after the ingest.
const SINGLES: usize = 10;

fn main() {
    valori_bench::only_flags(
        &[
            "--synthetic",
            "--batch",
            "--clients",
            "--queries",
            "--mixed-batches",
            "--mixed-qps",
            "--node",
            "--dim",
            "--memory-limit-mib",
        ],
        &["--json", "--vectors-on-disk", "--share-graph-lists"],
        "usage: bench_http [--synthetic N] [--dim D] [--batch N] [--clients N] [--queries N] \
         [--mixed-batches N] [--mixed-qps QPS] [--node PATH] \
         [--vectors-on-disk] [--share-graph-lists] [--memory-limit-mib M] [--json]",
    );
    let n: usize = flag("--synthetic", 100_000);
    let batch: usize = flag("--batch", 1000);
    let clients: usize = flag("--clients", 2);
    let queries: usize = flag("--queries", 2000);
    let json_out = std::env::args().any(|a| a == "--json");
    let dim: usize = flag("--dim", 128);
    let vectors_on_disk = std::env::args().any(|a| a == "--vectors-on-disk");
    let share_graph_lists = std::env::args().any(|a| a == "--share-graph-lists");
    let memory_limit_mib: u64 = flag("--memory-limit-mib", 0);
    let data = synthetic(n, dim, 1);
    let fixed: Vec<Vec<Fixed>> = valori_bench::to_fixed(&data);

    // In-process reference: the same collection, batches and threads, no server. Best of two
    // runs, so the server is compared with the kernel at its fastest.
    let mut inproc_secs = f64::INFINITY;
    let mut inproc_hash = [0u8; 32];
    // What the state holds (`Collection::memory_bytes`): the server's state is the same, hash
    // for hash.
    let mut state_bytes = 0;
    for _ in 0..2 {
        let (kernel, secs) = build_in(Kernel::new(), &fixed, None, batch, 2, 16, 200);
        inproc_secs = inproc_secs.min(secs);
        inproc_hash = kernel.state_hash();
        state_bytes = kernel.collection("bench").map_or(0, |c| c.memory_bytes());
    }

    // The client's request bodies, serialised before the server starts and before the clock:
    // the figures are the server's.
    let bodies: Vec<Vec<u8>> = (0..n)
        .step_by(batch)
        .map(|start| data.json_batch(start..(start + batch).min(n)))
        .collect();

    // The server: the `valori-node` binary beside this one (or `--node`), as a process of its
    // own (so that its resident memory is its own), on loopback, with a real RocksDB in a
    // temporary directory.
    let node_bin = match flag("--node", String::new()) {
        named if !named.is_empty() => std::path::PathBuf::from(named),
        _ => std::env::current_exe()
            .unwrap()
            .with_file_name("valori-node"),
    };
    if !node_bin.exists() {
        eprintln!(
            "bench_http: {} not found: build it first (cargo build --release -p valori-node --bins) or name one with --node",
            node_bin.display()
        );
        std::process::exit(2);
    }
    let cgroup = (memory_limit_mib > 0).then(|| Cgroup::new(memory_limit_mib));
    let node = Node::start(
        &node_bin,
        vectors_on_disk,
        share_graph_lists,
        cgroup.as_ref(),
    );
    let addr = node.addr.clone();
    let rss_at_start = node.rss_bytes();
    let mut conn = Conn::new(&addr);
    let (s, _) = conn.post(
        "/v1/collections",
        format!(r#"{{"name":"bench","dimension":{dim},"metric":"l2","index":{{"type":"hnsw","m":16,"ef_construction":200,"ef_search":64}}}}"#).as_bytes(),
    );
    assert_eq!(s, 201);
    // One client sends the batches in order (so the ids and the graph match the in-process
    // build exactly), waiting for each durable acknowledgement.
    let t = Instant::now();
    for body in &bodies {
        let (s, resp) = conn.post("/v1/collections/bench/records/batch", body);
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&resp));
    }
    let http_secs = t.elapsed().as_secs_f64();
    // Memory once the ingest is acknowledged, before the writer goes idle: the node's resident
    // set against the bytes the state holds (the node keeps a second copy for its writer).
    let rss_after_ingest = node.rss_bytes();
    let (anon_after_ingest, file_after_ingest) = (node.status("RssAnon:"), node.status("RssFile:"));
    let (s, state) = conn.get("/v1/state");
    assert_eq!(s, 200);
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(
        state["state_hash"].as_str(),
        Some(hex::encode(inproc_hash).as_str()),
        "server state differs from the in-process build"
    );

    // And once the writer has been idle long enough to hand freed memory back.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let rss_idle = node.rss_bytes();
    let (anon_idle, file_idle) = (node.status("RssAnon:"), node.status("RssFile:"));
    let mib = |b: u64| b as f64 / 1048576.0;

    // Single writes, each after a pause (the writer idle, its freed memory handed back).
    let singles = synthetic(SINGLES, dim, 4);
    let mut single_ms: Vec<f64> = (0..SINGLES)
        .map(|i| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let body = singles.json_batch(i..i + 1);
            let t = Instant::now();
            let (s, resp) = conn.post("/v1/collections/bench/records/batch", &body);
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&resp));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    single_ms.sort_by(f64::total_cmp);
    let spct = |p: f64| single_ms[((single_ms.len() as f64 * p) as usize).min(single_ms.len() - 1)];

    // Search latency under concurrent clients.
    let qdata = synthetic(queries, dim, 2);
    let qbodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..queries)
            .map(|i| {
                let v: Vec<String> = qdata.row(i).iter().map(|x| x.to_string()).collect();
                format!("{{\"vector\":[{}],\"k\":10,\"ef\":64}}", v.join(",")).into_bytes()
            })
            .collect(),
    );
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let addr = addr.clone();
            let qb = Arc::clone(&qbodies);
            std::thread::spawn(move || {
                let mut conn = Conn::new(&addr);
                let mut lat = Vec::new();
                let mut rng = Rng(c as u64);
                for _ in 0..qb.len() / clients {
                    let q = &qb[rng.below(qb.len() as u64) as usize];
                    let t = Instant::now();
                    let (s, _) = conn.post("/v1/collections/bench/search", q);
                    assert_eq!(s, 200);
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let search_secs = t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    // One search client, idle: the baseline for the same client while ingest runs.
    let idle = {
        let mut conn = Conn::new(&addr);
        let mut lat: Vec<f64> = (0..queries)
            .map(|i| {
                let t = Instant::now();
                let (s, _) = conn.post("/v1/collections/bench/search", &qbodies[i % qbodies.len()]);
                assert_eq!(s, 200);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        lat
    };
    let ipct = |p: f64| idle[((idle.len() as f64 * p) as usize).min(idle.len() - 1)];

    // Search latency while the same connection pattern keeps ingesting: one client posts
    // `--mixed-batches` more batches of new vectors at full rate while another searches
    // without pause and a third asks `/healthz` (as a Kubernetes probe would) without pause.
    let mixed_batches: usize = flag("--mixed-batches", 20);
    // 0: the searcher and the prober ask again as soon as answered; N: each at N per second,
    // so that they take the same CPU from the ingest whatever their latency.
    let mixed_qps: f64 = flag("--mixed-qps", 0.0);
    let pace = move |i: usize, t0: Instant| {
        if mixed_qps > 0.0 {
            let due = t0 + std::time::Duration::from_secs_f64(i as f64 / mixed_qps);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    };
    let extra = synthetic(mixed_batches * batch, dim, 3);
    let extra_bodies: Vec<Vec<u8>> = (0..mixed_batches)
        .map(|b| extra.json_batch(b * batch..(b + 1) * batch))
        .collect();
    let ingesting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let searcher = {
        let addr = addr.clone();
        let qb = Arc::clone(&qbodies);
        let ingesting = Arc::clone(&ingesting);
        std::thread::spawn(move || {
            let mut conn = Conn::new(&addr);
            let mut lat = Vec::new();
            let mut i = 0;
            let t0 = Instant::now();
            while ingesting.load(std::sync::atomic::Ordering::Relaxed) {
                pace(i, t0);
                let t = Instant::now();
                let (s, _) = conn.post("/v1/collections/bench/search", &qb[i % qb.len()]);
                assert_eq!(s, 200);
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                i += 1;
            }
            lat
        })
    };
    let prober = {
        let addr = addr.clone();
        let ingesting = Arc::clone(&ingesting);
        std::thread::spawn(move || {
            let mut conn = Conn::new(&addr);
            let mut lat = Vec::new();
            let t0 = Instant::now();
            while ingesting.load(std::sync::atomic::Ordering::Relaxed) {
                pace(lat.len(), t0);
                let t = Instant::now();
                let (s, _) = conn.get("/healthz");
                assert_eq!(s, 200);
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        })
    };
    let t = Instant::now();
    for body in &extra_bodies {
        let (s, resp) = conn.post("/v1/collections/bench/records/batch", body);
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&resp));
    }
    let mixed_secs = t.elapsed().as_secs_f64();
    ingesting.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut mixed = searcher.join().unwrap();
    mixed.sort_by(f64::total_cmp);
    let mut health = prober.join().unwrap();
    health.sort_by(f64::total_cmp);
    let hpct = |p: f64| health[((health.len() as f64 * p) as usize).min(health.len() - 1)];
    let mpct = |p: f64| mixed[((mixed.len() as f64 * p) as usize).min(mixed.len() - 1)];
    let rss_end = node.rss_bytes();
    drop(node);
    let (cgroup_peak, limit_hits) = cgroup
        .as_ref()
        .map_or((0, 0), |c| (c.peak(), c.limit_hits()));
    drop(cgroup);

    let inproc_vps = n as f64 / inproc_secs;
    let http_vps = n as f64 / http_secs;
    println!("dataset: synthetic SIFT-shaped {n} x {dim}, batches of {batch}");
    println!(
        "node: full-precision vectors {}, graph lists {}, {}",
        if vectors_on_disk {
            "in mapped files (--vectors-on-disk)"
        } else {
            "in memory"
        },
        if share_graph_lists {
            "shared by the two copies (--share-graph-lists)"
        } else {
            "held by each copy"
        },
        match memory_limit_mib {
            0 => "no memory limit".to_string(),
            m => format!("in a memory cgroup of {m} MiB"),
        }
    );
    println!("machine: {}", machine());
    println!("in-process index build (2 threads): {inproc_vps:.0} vectors/s");
    println!(
        "durable HTTP ingest (1 client, each batch synced and indexed): {http_vps:.0} vectors/s = {:.1}% of in-process",
        100.0 * http_vps / inproc_vps
    );
    println!(
        "search over HTTP, {clients} concurrent clients, k=10, ef=64: {:.0} queries/s, p50 {:.3} ms, p99 {:.3} ms",
        lat.len() as f64 / search_secs,
        pct(0.5),
        pct(0.99)
    );
    let mixed_vps = (mixed_batches * batch) as f64 / mixed_secs;
    let over = |rss: u64| rss as f64 / state_bytes as f64;
    println!(
        "node memory (a process of its own): {:.1} MiB resident at start, {:.1} MiB after ingest, {:.1} MiB idle (1 s), {:.1} MiB at the end; state {:.1} MiB: resident {:.2}x the state after ingest, {:.2}x idle",
        mib(rss_at_start),
        mib(rss_after_ingest),
        mib(rss_idle),
        mib(rss_end),
        mib(state_bytes),
        over(rss_after_ingest),
        over(rss_idle)
    );
    println!(
        "of which private (RssAnon) {:.1} MiB after ingest, {:.1} MiB idle; mapped files' pages (RssFile) {:.1} and {:.1} MiB; full-precision vectors {:.1} MiB at 4 bytes a component (the state holds them in 2 where that is exact)",
        mib(anon_after_ingest),
        mib(anon_idle),
        mib(file_after_ingest),
        mib(file_idle),
        mib((n * dim * 4) as u64)
    );
    if memory_limit_mib > 0 {
        println!(
            "memory cgroup: limit {memory_limit_mib} MiB, peak charge {:.1} MiB (page cache included), limit reached {limit_hits} times",
            mib(cgroup_peak)
        );
    }
    println!(
        "single writes, each after 0.5 s idle: {SINGLES}, p50 {:.3} ms, max {:.3} ms",
        spct(0.5),
        single_ms.last().copied().unwrap_or(0.0)
    );
    println!(
        "search idle (1 search client): {} queries, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        idle.len(),
        ipct(0.5),
        ipct(0.99),
        idle.last().copied().unwrap_or(0.0)
    );
    println!(
        "search while ingesting ({mixed_batches} batches of {batch} at {mixed_vps:.0} vectors/s, 1 search client{}): {} queries, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        if mixed_qps > 0.0 { format!(" at {mixed_qps} queries/s") } else { String::new() },
        mixed.len(),
        mpct(0.5),
        mpct(0.99),
        mixed.last().copied().unwrap_or(0.0)
    );
    println!(
        "/healthz while ingesting (1 client): {} probes, p99 {:.3} ms, max {:.3} ms",
        health.len(),
        hpct(0.99),
        health.last().copied().unwrap_or(0.0)
    );
    if json_out {
        println!(
            "{}",
            Json::default()
                .num("vectors", n as f64)
                .num("dim", dim as f64)
                .num("vectors_on_disk", f64::from(u8::from(vectors_on_disk)))
                .num("share_graph_lists", f64::from(u8::from(share_graph_lists)))
                .num("memory_limit_mib", memory_limit_mib as f64)
                .num("cgroup_peak_mib", mib(cgroup_peak))
                .num("cgroup_limit_hits", limit_hits as f64)
                .num("rss_anon_mib_after_ingest", mib(anon_after_ingest))
                .num("rss_file_mib_after_ingest", mib(file_after_ingest))
                .num("rss_anon_mib_idle", mib(anon_idle))
                .num("rss_file_mib_idle", mib(file_idle))
                .num("vector_bytes", (n * dim * 4) as f64)
                .num("batch", batch as f64)
                .num("inprocess_vectors_per_s", inproc_vps)
                .num("http_vectors_per_s", http_vps)
                .num("http_fraction_of_inprocess", http_vps / inproc_vps)
                .num("search_clients", clients as f64)
                .num("mixed_qps", mixed_qps)
                .num("search_qps", lat.len() as f64 / search_secs)
                .num("search_p50_ms", pct(0.5))
                .num("search_p99_ms", pct(0.99))
                .num("mixed_search_p50_ms", mpct(0.5))
                .num("mixed_search_p99_ms", mpct(0.99))
                .num("ingest_vectors_per_s", http_vps)
                .num("mixed_ingest_vectors_per_s", mixed_vps)
                .num("search_p50_idle_ms", ipct(0.5))
                .num("search_p99_idle_ms", ipct(0.99))
                .num("search_max_idle_ms", idle.last().copied().unwrap_or(0.0))
                .num("search_p50_ingest_ms", mpct(0.5))
                .num("search_p99_ingest_ms", mpct(0.99))
                .num("search_max_ingest_ms", mixed.last().copied().unwrap_or(0.0))
                .num("rss_mib_at_start", mib(rss_at_start))
                .num("rss_mib_after_ingest", mib(rss_after_ingest))
                .num("rss_mib_idle", mib(rss_idle))
                .num("rss_mib_end", mib(rss_end))
                .num("state_bytes", state_bytes as f64)
                .num("rss_over_state", over(rss_after_ingest))
                .num("rss_idle_over_state", over(rss_idle))
                .num("single_write_p50_ms", spct(0.5))
                .num(
                    "single_write_max_ms",
                    single_ms.last().copied().unwrap_or(0.0)
                )
                .num("healthz_p99_ingest_ms", hpct(0.99))
                .num(
                    "healthz_max_ingest_ms",
                    health.last().copied().unwrap_or(0.0)
                )
                .finish()
        );
    }
}
