//! Ingest speed: loading a `.fvecs` file and converting it to Q16.16, then building the index
//! on 1 thread and on `--threads` threads.
//!
//! `cargo run --release --bin bench_ingest -- --synthetic 1000000 [--json]`
//! (a synthetic set is written to a temporary `.fvecs` file first, outside the timing)

valori_bench::global_allocator!();

use std::time::Instant;

use valori_bench::*;
use valori_kernel::Fixed;

/// Maps a `.fvecs` file and converts it straight into Q16.16 rows: the load+convert path
/// being measured.
/// Rows are converted on `threads` threads (contiguous blocks, results in order).
fn load_fixed(path: &std::path::Path, threads: usize) -> (Vec<Vec<Fixed>>, usize) {
    use valori_kernel::Executor;
    let file = std::fs::File::open(path).expect("open");
    // SAFETY: the benchmark owns the file for the duration of the map; nothing truncates it.
    #[allow(unsafe_code)]
    let bytes = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
    let dim = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    let row = 4 + 4 * dim;
    assert_eq!(bytes.len() % row, 0, "not a whole number of vectors");
    let n = bytes.len() / row;
    let mut states = vec![(); threads.max(1)];
    let rows = valori_kernel::exec::Threads::new(threads).map(n, &mut states, |_, i| {
        let r = &bytes[i * row..(i + 1) * row];
        assert_eq!(u32::from_le_bytes(r[..4].try_into().unwrap()) as usize, dim);
        let mut v = Vec::with_capacity(dim);
        for (j, c) in r[4..].chunks_exact(4).enumerate() {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            match Fixed::from_f32(x) {
                Ok(f) => v.push(f),
                Err(e) => panic!("vector {i} component {j}: {e}"),
            }
        }
        v
    });
    (rows, dim)
}

fn main() {
    let args = Args::parse("bench_ingest");
    let tmp;
    let (path, name) = match &args.dataset {
        Some(dir) => {
            let p = ["base.fvecs", "sift_base.fvecs"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
                .unwrap_or_else(|| {
                    eprintln!("bench_ingest: no base.fvecs in {}", dir.display());
                    std::process::exit(1)
                });
            (p, dir.display().to_string())
        }
        None => {
            let generated = load(&args).expect("generate the data set");
            let v = generated.base;
            tmp = std::env::temp_dir()
                .join(format!("valori-bench-ingest-{}.fvecs", std::process::id()));
            let rows: Vec<Vec<u32>> = (0..v.len())
                .map(|i| v.row(i).iter().map(|x| x.to_bits()).collect())
                .collect();
            write_vecs(&tmp, &rows.iter().map(Vec::as_slice).collect::<Vec<_>>()).expect("write");
            (tmp.clone(), generated.name)
        }
    };
    // Warm the page cache so the figure is load+convert, not disk speed.
    let _ = std::fs::read(&path);
    let t = Instant::now();
    let (base1, _) = load_fixed(&path, 1);
    let load_secs = t.elapsed().as_secs_f64();
    drop(base1);
    let t = Instant::now();
    let (mut base, dim) = load_fixed(&path, args.threads);
    let load_secs_par = t.elapsed().as_secs_f64();
    let loaded = base.len();
    if args.dataset.is_none() {
        let _ = std::fs::remove_file(&path);
    }
    if let Some(limit) = args.limit {
        base.truncate(limit);
    }
    let n = base.len();
    println!("dataset: {name} ({loaded} x {dim})");
    println!("machine: {}", machine());
    println!(
        "load+convert: {loaded} vectors in {:.3}s, {:.0} vectors/s, {:.0} components/s (1 thread)",
        load_secs,
        loaded as f64 / load_secs,
        (loaded * dim) as f64 / load_secs
    );
    println!(
        "load+convert: {:.3}s, {:.0} vectors/s ({} threads)",
        load_secs_par,
        loaded as f64 / load_secs_par,
        args.threads
    );
    // Index build: at most 200k vectors, so the run stays short on big files.
    let build_n = n.min(200_000);
    let mut results = Vec::new();
    let mut thread_counts = vec![1];
    if args.threads > 1 {
        thread_counts.push(args.threads);
    }
    for &threads in &thread_counts {
        let a = Args {
            threads,
            ..Args::parse("bench_ingest")
        };
        let (_, secs) = build(&base[..build_n], None, &a);
        println!(
            "index build: {build_n} vectors, {threads} thread(s), {:.2}s, {:.0} vectors/s",
            secs,
            build_n as f64 / secs
        );
        results.push(
            Json::default()
                .num("threads", threads as f64)
                .num("vectors_per_s", build_n as f64 / secs)
                .finish(),
        );
    }
    if args.json {
        println!(
            "{}",
            Json::default()
                .str("dataset", &name)
                .str("machine", &machine())
                .num("vectors", loaded as f64)
                .num("load_convert_seconds", load_secs)
                .num("load_convert_vectors_per_s", loaded as f64 / load_secs)
                .num("load_convert_threads", args.threads as f64)
                .num(
                    "load_convert_vectors_per_s_threads",
                    loaded as f64 / load_secs_par
                )
                .num("build_vectors", build_n as f64)
                .raw("build", &format!("[{}]", results.join(",")))
                .finish()
        );
    }
}
