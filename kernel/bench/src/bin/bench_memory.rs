//! The agent-memory paths against their references in the same run:
//!
//! - ingest: an upsert of N new keys with a payload each, against a plain insert of the same
//!   vectors and tags; then the same N keys re-upserted unchanged (the index is not touched);
//! - filtered search: an indexed keyword payload condition matching 10% of the records
//!   (`group == "g0"`), against the tag filter on the same 10% (tag 0); recall@10 against the
//!   exact filtered truth, precision (must be 1.0) and single-thread QPS;
//! - a 1% selective unindexed filter (`rare == true`) answered exactly (recall 1.0).
//!
//! Tags are the ones `bench_filter` gives (tag 0 on 10%, tag 1 on 1%); the payload holds the
//! same split, so both filters select the same records.
//!
//! `cargo run --release -p valori-bench --bin bench_memory -- --synthetic 100000 --ef 64,128`

valori_bench::global_allocator!();

use std::time::Instant;

use valori_bench::*;
use valori_kernel::exec::Threads;
use valori_kernel::{
    Condition, Event, Filter, IndexKind, Kernel, KeyedRecord, Match, Payload, SearchParams,
    SearchScratch, UpsertMode, Value,
};

fn keyed(base: &[Vec<valori_kernel::Fixed>], tags: &[u64]) -> Vec<KeyedRecord> {
    base.iter()
        .zip(tags)
        .enumerate()
        .map(|(i, (v, &t))| {
            let mut p = Payload::new();
            p.insert("group".into(), Value::String(format!("g{t}")));
            p.insert("rare".into(), Value::Bool(t == 1));
            p.insert("n".into(), Value::Int(i as i64));
            KeyedRecord {
                key: format!("doc-{i}"),
                vector: v.clone(),
                tag: t,
                payload: Some(p),
                document: None,
                metadata: None,
            }
        })
        .collect()
}

fn upsert_all(kernel: &mut Kernel, records: &[KeyedRecord], batch: usize, exec: &Threads) -> f64 {
    let start = Instant::now();
    for chunk in records.chunks(batch.max(1)) {
        let e = Event::Upsert {
            collection: "bench".into(),
            mode: UpsertMode::Upsert,
            records: chunk.to_vec(),
        };
        kernel.apply_with(&e, &e.encode(), exec).expect("upsert");
    }
    start.elapsed().as_secs_f64()
}

struct Measured {
    recall: f64,
    precision: f64,
    qps: f64,
}

/// Best of three passes of single-thread filtered search.
fn measure(
    kernel: &Kernel,
    queries: &[Vec<valori_kernel::Fixed>],
    truth: &[Vec<u32>],
    ef: u32,
    tag: Option<u64>,
    filter: &Filter,
) -> Measured {
    let params = SearchParams {
        k: 10,
        tag,
        ef: Some(ef),
    };
    let c = kernel.collection("bench").expect("collection");
    let mut scratch = SearchScratch::new();
    let mut best = f64::INFINITY;
    let mut results = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let pass: Vec<_> = queries
            .iter()
            .map(|q| {
                if filter.is_empty() {
                    kernel.search_with("bench", q, &params, &mut scratch)
                } else {
                    kernel.search_filtered("bench", q, &params, filter, false, &mut scratch)
                }
                .expect("search")
            })
            .collect();
        best = best.min(start.elapsed().as_secs_f64());
        results = pass;
    }
    let mut found = 0usize;
    let mut returned = 0usize;
    let mut matching = 0usize;
    for (hits, want) in results.iter().zip(truth) {
        returned += hits.len();
        for h in hits {
            let ok = match tag {
                Some(t) => c.get(h.id).is_some_and(|r| r.tag == t),
                None => c.matches(h.id, filter),
            };
            matching += usize::from(ok);
            found += usize::from(want.contains(&(h.id as u32)));
        }
    }
    Measured {
        recall: found as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64,
        precision: matching as f64 / returned.max(1) as f64,
        qps: queries.len() as f64 / best,
    }
}

fn main() {
    let args = Args::parse("bench_memory");
    let data = load(&args).unwrap_or_else(|e| {
        eprintln!("bench_memory: {e}");
        std::process::exit(1)
    });
    let base = to_fixed(&data.base);
    let queries = to_fixed(&data.queries);
    let n = base.len();
    let tags: Vec<u64> = (0..n as u64)
        .map(|i| match Rng(i ^ 0x7A65).next_u64() % 1000 {
            0..=99 => 0,
            100..=109 => 1,
            110..=609 => 2,
            _ => 3,
        })
        .collect();
    println!("dataset: {}", data.name);
    println!("machine: {}", machine());

    // Ingest: plain insert, first upsert, unchanged re-upsert.
    let (plain, insert_secs) = build(&base, Some(&tags), &args);
    let records = keyed(&base, &tags);
    let exec = Threads::new(args.threads);
    let mut memory = Kernel::new();
    memory
        .apply(&create_event(
            base.first().map_or(1, Vec::len),
            args.m,
            args.ef_construction,
        ))
        .expect("create");
    let upsert_secs = upsert_all(&mut memory, &records, args.batch, &exec);
    let before = memory.state_hash();
    let reupsert_secs = upsert_all(&mut memory, &records, args.batch, &exec);
    let index_unchanged = memory.collection("bench").unwrap().index_hash()
        == plain.collection("bench").unwrap().index_hash();
    println!(
        "ingest ({} threads, batches of {}): insert {:.0} vectors/s, upsert of new keys {:.0} vectors/s ({:.2} of insert), unchanged re-upsert {:.0} vectors/s ({:.1}x the first upsert)",
        args.threads,
        args.batch,
        n as f64 / insert_secs,
        n as f64 / upsert_secs,
        insert_secs / upsert_secs,
        n as f64 / reupsert_secs,
        upsert_secs / reupsert_secs,
    );
    println!(
        "the upserted index equals the inserted one: {index_unchanged}; the re-upsert left the state as it was: {} (no new ids: {})",
        memory.state_hash() == before,
        memory.collection("bench").unwrap().next_id() == n as u64
    );
    memory
        .apply(&Event::CreatePayloadIndex {
            collection: "bench".into(),
            field: "group".into(),
            kind: IndexKind::Keyword,
        })
        .expect("index");

    // Filtered search at 10%: tag filter against an indexed keyword payload condition.
    let truth = exact_ground_truth(&plain, "bench", &queries, 10, Some(0), args.threads);
    let group = Filter {
        must: vec![Condition::Match {
            key: "group".into(),
            matcher: Match::Value(Value::String("g0".into())),
        }],
        ..Filter::default()
    };
    println!(
        "{:>28} {:>6} {:>10} {:>10} {:>10}",
        "filter (10% of records)", "ef", "recall@10", "precision", "qps(1t)"
    );
    for &ef in &args.ef {
        let t = measure(&plain, &queries, &truth, ef, Some(0), &Filter::default());
        let p = measure(&memory, &queries, &truth, ef, None, &group);
        println!(
            "{:>28} {:>6} {:>10.4} {:>10.4} {:>10.0}",
            "tag = 0", ef, t.recall, t.precision, t.qps
        );
        println!(
            "{:>28} {:>6} {:>10.4} {:>10.4} {:>10.0}   ({:.2} of the tag filter's qps)",
            "group == \"g0\" (indexed)",
            ef,
            p.recall,
            p.precision,
            p.qps,
            p.qps / t.qps
        );
    }

    // 1%, unindexed: exact.
    let rare = Filter {
        must: vec![Condition::Match {
            key: "rare".into(),
            matcher: Match::Value(Value::Bool(true)),
        }],
        ..Filter::default()
    };
    let truth1 = exact_ground_truth(&plain, "bench", &queries, 10, Some(1), args.threads);
    let r = measure(&memory, &queries, &truth1, 64, None, &rare);
    println!(
        "rare == true (1%, unindexed): recall@10 {:.4}, precision {:.4}, {:.0} qps(1t)",
        r.recall, r.precision, r.qps
    );
}
