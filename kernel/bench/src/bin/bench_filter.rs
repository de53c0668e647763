//! Filtered search: recall against the exact filtered truth, precision (must be 1.0) and
//! single-thread QPS per tag selectivity.
//!
//! Synthetic sets get tags by a hash of the row: tag 0 on 10%, tag 1 on 1%, tag 2 on 50%,
//! tag 3 on the remaining 39%. Data sets with `tags.u64` use those tags.
//!
//! `cargo run --release --bin bench_filter -- --synthetic 100000 [--json]`

valori_bench::global_allocator!();

use valori_bench::*;

fn main() {
    let args = Args::parse("bench_filter");
    let data = load(&args).unwrap_or_else(|e| {
        eprintln!("bench_filter: {e}");
        std::process::exit(1)
    });
    let base = to_fixed(&data.base);
    let queries = to_fixed(&data.queries);
    let n = base.len();
    let tags: Vec<u64> = data.tags.clone().unwrap_or_else(|| {
        (0..n as u64)
            .map(|i| match Rng(i ^ 0x7A65).next_u64() % 1000 {
                0..=99 => 0,
                100..=109 => 1,
                110..=609 => 2,
                _ => 3,
            })
            .collect()
    });
    let (kernel, build_seconds) = build(&base, Some(&tags), &args);
    let mut distinct: Vec<u64> = tags.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!("dataset: {}", data.name);
    println!("machine: {}", machine());
    println!(
        "build: {n} vectors with tags in {build_seconds:.2}s ({} threads)",
        args.threads
    );
    println!(
        "{:>5} {:>11} {:>6} {:>11} {:>10} {:>10}",
        "tag", "selectivity", "ef", "recall@10", "precision", "qps(1t)"
    );
    let mut sel_json = Vec::new();
    for &tag in distinct.iter().take(4) {
        let count = tags.iter().filter(|&&t| t == tag).count();
        let truth = match (&data.groundtruth_tag0, tag) {
            (Some(gt), 0) => gt.clone(),
            _ => exact_ground_truth(&kernel, "bench", &queries, 10, Some(tag), args.threads),
        };
        if tag == 0 {
            if let Some(dir) = &args.write_dataset {
                std::fs::create_dir_all(dir).expect("dir");
                let bytes: Vec<u8> = tags.iter().flat_map(|t| t.to_le_bytes()).collect();
                std::fs::write(dir.join("tags.u64"), bytes).expect("write tags");
                let rows: Vec<&[u32]> = truth.iter().map(Vec::as_slice).collect();
                write_vecs(&dir.join("groundtruth_tag0.ivecs"), &rows).expect("write truth");
            }
        }
        let mut runs = Vec::new();
        for &ef in &args.ef {
            let s = run_queries(&kernel, &queries, &truth, ef, Some(tag));
            println!(
                "{:>5} {:>10.1}% {:>6} {:>11.4} {:>10.4} {:>10.0}",
                tag,
                100.0 * count as f64 / n as f64,
                ef,
                s.recall_at_10,
                s.precision,
                s.qps
            );
            runs.push(
                Json::default()
                    .num("ef", f64::from(ef))
                    .num("recall_at_10", s.recall_at_10)
                    .num("precision", s.precision)
                    .num("qps", s.qps)
                    .finish(),
            );
        }
        sel_json.push(
            Json::default()
                .num("tag", tag as f64)
                .num("selectivity", count as f64 / n as f64)
                .raw("runs", &format!("[{}]", runs.join(",")))
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
                .num("build_seconds", build_seconds)
                .raw("selectivities", &format!("[{}]", sel_json.join(",")))
                .finish()
        );
    }
}
