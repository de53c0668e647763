//! Recall, latency and build speed of the HNSW index.
//!
//! `cargo run --release --bin bench_recall -- --synthetic 100000 [--json]`
//! `cargo run --release --bin bench_recall -- /path/to/dataset_dir [--json]`
//!
//! With `--vectors-on-disk DIR` the full-precision vectors live in files mapped from `DIR` (as
//! the node's flag of that name keeps them); the memory line then splits the resident growth
//! into private memory and the files' pages.

valori_bench::global_allocator!();

use std::time::Instant;

use valori_bench::*;

fn main() {
    let args = Args::parse("bench_recall");
    let data = load(&args).unwrap_or_else(|e| {
        eprintln!("bench_recall: {e}");
        std::process::exit(1)
    });
    let base = to_fixed(&data.base);
    let queries = to_fixed(&data.queries);
    let rss_before = rss_bytes();
    let private_before = status_bytes("/proc/self/status", "RssAnon:");
    let (kernel, build_seconds) = build(&base, None, &args);
    // What the build used and dropped goes back to the system, as the node's writer hands it
    // back once idle: the memory figures are then what the index holds.
    valori_alloc::release_free_memory();
    let rss_after = rss_bytes();
    let private = status_bytes("/proc/self/status", "RssAnon:").saturating_sub(private_before);
    let truth = match data.groundtruth {
        Some(gt) => gt,
        None => {
            let t = Instant::now();
            let gt = exact_ground_truth(&kernel, "bench", &queries, 100, None, args.threads);
            eprintln!(
                "exact ground truth computed in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            gt
        }
    };
    if let Some(dir) = &args.write_dataset {
        write_dataset(dir, &data.base, &data.queries, &truth).expect("write dataset");
        eprintln!("wrote {}", dir.display());
    }
    let n = base.len();
    let accounted = kernel.collection("bench").map_or(0, |c| c.memory_bytes());
    let mapped = kernel.stored_vector_bytes();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("dataset: {}", data.name);
    println!("machine: {}", machine());
    println!(
        "build: {n} vectors, m={} ef_construction={}, {} threads, {:.2}s, {:.0} vectors/s, memory {:.1} MiB RSS delta ({:.1} private), {:.1} MiB accounted ({:.1} in mapped files)",
        args.m,
        args.ef_construction,
        args.threads,
        build_seconds,
        n as f64 / build_seconds,
        mib(rss_after.saturating_sub(rss_before)),
        mib(private),
        mib(accounted),
        mib(mapped)
    );
    println!(
        "{:>6} {:>10} {:>11} {:>10} {:>9} {:>9}",
        "ef", "recall@1", "recall@10", "qps(1t)", "p50 ms", "p99 ms"
    );
    let mut rows = Vec::new();
    for &ef in &args.ef {
        let s = run_queries(&kernel, &queries, &truth, ef, None);
        println!(
            "{:>6} {:>10.4} {:>11.4} {:>10.0} {:>9.4} {:>9.4}",
            s.ef, s.recall_at_1, s.recall_at_10, s.qps, s.p50_ms, s.p99_ms
        );
        rows.push(
            Json::default()
                .num("ef", f64::from(s.ef))
                .num("recall_at_1", s.recall_at_1)
                .num("recall_at_10", s.recall_at_10)
                .num("qps", s.qps)
                .num("p50_ms", s.p50_ms)
                .num("p99_ms", s.p99_ms)
                .finish(),
        );
    }
    if args.json {
        println!(
            "{}",
            Json::default()
                .str("dataset", &data.name)
                .str("machine", &machine())
                .num("vectors", n as f64)
                .num("threads", args.threads as f64)
                .num("build_seconds", build_seconds)
                .num("build_vectors_per_s", n as f64 / build_seconds)
                .num("memory_bytes", rss_after.saturating_sub(rss_before) as f64)
                .num("memory_private_bytes", private as f64)
                .num("memory_accounted_bytes", accounted as f64)
                .num("vectors_mapped_bytes", mapped as f64)
                .raw("runs", &format!("[{}]", rows.join(",")))
                .finish()
        );
    }
}
