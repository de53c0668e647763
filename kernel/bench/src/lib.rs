//! Shared pieces of the benchmark programs: TEXMEX file readers and writers, a deterministic
//! SIFT-shaped synthetic data set with exact ground truth, argument parsing, timing and output.
//!
//! Data sets are directories holding `base.fvecs` and `query.fvecs`, optionally
//! `groundtruth.ivecs` (computed exactly when absent), `tags.u64` and `groundtruth_tag0.ivecs`.
//! SIFT1M's own names (`sift_base.fvecs`, `sift_query.fvecs`, `sift_groundtruth.ivecs`) are
//! accepted too, so `bench_recall /path/to/sift` works on the unpacked archive.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use valori_kernel::exec::Threads;
use valori_kernel::rows::ChunkStore;
use valori_kernel::{
    CollectionSpec, Event, Fixed, HnswParams, IndexSpec, Kernel, Metric, NewRecord, SearchScratch,
};

/// Declares the global allocator of a benchmark program: the node's own (`valori-alloc`: glibc
/// with large blocks on huge pages) unless the `mimalloc`, `jemalloc` or `system` feature
/// chooses another. Each program declares it (not this library, which the node's benchmark
/// programs also link, beside the node's own allocator).
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[cfg(feature = "mimalloc")]
        #[global_allocator]
        static ALLOCATOR: $crate::allocators::MiMalloc = $crate::allocators::MiMalloc;

        #[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
        #[global_allocator]
        static ALLOCATOR: $crate::allocators::Jemalloc = $crate::allocators::Jemalloc;

        #[cfg(not(any(feature = "mimalloc", feature = "jemalloc", feature = "system")))]
        #[global_allocator]
        static ALLOCATOR: $crate::allocators::HugePages = $crate::allocators::HugePages;
    };
}

/// The allocators [`global_allocator!`] chooses from.
pub mod allocators {
    #[cfg(feature = "mimalloc")]
    pub use mimalloc::MiMalloc;
    #[cfg(feature = "jemalloc")]
    pub use tikv_jemallocator::Jemalloc;
    pub use valori_alloc::HugePages;
}

/// The global allocator these programs run with.
pub fn allocator() -> String {
    if cfg!(feature = "mimalloc") {
        "mimalloc".into()
    } else if cfg!(feature = "jemalloc") {
        "jemalloc".into()
    } else if cfg!(feature = "system") {
        "system (glibc malloc)".into()
    } else {
        format!("glibc malloc, {}", valori_alloc::describe())
    }
}

/// Vectors stored row-major as f32, as read from a file or generated.
pub struct Vectors {
    /// Components, `n * dim`.
    pub data: Vec<f32>,
    /// Dimension.
    pub dim: usize,
}

impl Vectors {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The HTTP API's batch insert body for rows `rows`: `{"records":[{"vector":[..]},..]}`,
    /// each component printed as the shortest decimal that reads back as the same `f32`.
    pub fn json_batch(&self, rows: std::ops::Range<usize>) -> Vec<u8> {
        let records: Vec<String> = rows.map(|i| self.json_record(i)).collect();
        format!("{{\"records\":[{}]}}", records.join(",")).into_bytes()
    }

    /// The HTTP API's single-record insert body for row `i`: `{"vector":[..]}`.
    pub fn json_one(&self, i: usize) -> Vec<u8> {
        self.json_record(i).into_bytes()
    }

    fn json_record(&self, i: usize) -> String {
        let v: Vec<String> = self.row(i).iter().map(|x| x.to_string()).collect();
        format!("{{\"vector\":[{}]}}", v.join(","))
    }
}

/// Reads a `.fvecs` file (per vector: little-endian i32 dimension, then f32 values).
pub fn read_fvecs(path: &Path, limit: Option<usize>) -> io::Result<Vectors> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    parse_vecs(&bytes, limit).map(|(data, dim)| Vectors {
        data: data.into_iter().map(f32::from_bits).collect(),
        dim,
    })
}

/// Reads a `.ivecs` file into rows of ids.
pub fn read_ivecs(path: &Path, limit: Option<usize>) -> io::Result<Vec<Vec<u32>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let (data, dim) = parse_vecs(&bytes, limit)?;
    Ok(data.chunks(dim.max(1)).map(<[u32]>::to_vec).collect())
}

fn parse_vecs(bytes: &[u8], limit: Option<usize>) -> io::Result<(Vec<u32>, usize)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    if bytes.len() < 4 {
        return Ok((Vec::new(), 0));
    }
    let dim = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    if dim == 0 || dim > 1 << 16 {
        return Err(bad("implausible dimension"));
    }
    let row = 4 + 4 * dim;
    if !bytes.len().is_multiple_of(row) {
        return Err(bad("file length is not a whole number of vectors"));
    }
    let n = (bytes.len() / row).min(limit.unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(n * dim);
    for r in bytes.chunks_exact(row).take(n) {
        if u32::from_le_bytes(r[..4].try_into().unwrap()) as usize != dim {
            return Err(bad("vectors of different dimensions"));
        }
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap())),
        );
    }
    Ok((out, dim))
}

/// Writes rows in the `.fvecs`/`.ivecs` layout.
pub fn write_vecs(path: &Path, rows: &[&[u32]]) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    for r in rows {
        out.write_all(&(r.len() as u32).to_le_bytes())?;
        for x in *r {
            out.write_all(&x.to_le_bytes())?;
        }
    }
    out.flush()
}

/// splitmix64: the deterministic generator behind the synthetic data.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A SIFT-shaped synthetic set: 128-d (or `dim`) integer components in 0..=255, drawn around
/// 256 cluster centres whose spread varies per cluster and per dimension (SIFT descriptors are
/// clustered and sparse-ish, not uniform). The same `(n, seed)` always gives the same vectors.
pub fn synthetic(n: usize, dim: usize, seed: u64) -> Vectors {
    let mut rng = Rng(0x5EED ^ (dim as u64) << 32);
    let clusters = 256;
    let centres: Vec<Vec<i64>> = (0..clusters)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    // Many small components, a few large ones, like SIFT histograms.
                    let r = rng.below(100);
                    if r < 50 {
                        rng.below(16) as i64
                    } else if r < 85 {
                        rng.below(64) as i64
                    } else {
                        rng.below(160) as i64
                    }
                })
                .collect()
        })
        .collect();
    let spreads: Vec<i64> = (0..clusters).map(|_| 4 + rng.below(20) as i64).collect();
    let mut rng = Rng(seed);
    let mut data = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.below(clusters as u64) as usize;
        let s = spreads[c];
        for &x in &centres[c] {
            // Sum of three uniforms: a bell-shaped offset of about +-1.5 spreads.
            let noise: i64 =
                (0..3).map(|_| rng.below(s as u64 + 1) as i64).sum::<i64>() - 3 * s / 2;
            data.push((x + noise).clamp(0, 255) as f32);
        }
    }
    Vectors { data, dim }
}

/// Converts every vector to Q16.16.
pub fn to_fixed(v: &Vectors) -> Vec<Vec<Fixed>> {
    (0..v.len())
        .map(|i| {
            valori_kernel::fixed::vector_from_f32(v.row(i))
                .unwrap_or_else(|(j, e)| panic!("vector {i} component {j}: {e}"))
        })
        .collect()
}

/// Exact top-`k` ids per query by the kernel's exact integer distance (optionally within a
/// tag), computed on `threads` threads.
pub fn exact_ground_truth(
    kernel: &Kernel,
    collection: &str,
    queries: &[Vec<Fixed>],
    k: usize,
    tag: Option<u64>,
    threads: usize,
) -> Vec<Vec<u32>> {
    use valori_kernel::Executor;
    let c = kernel.collection(collection).expect("collection");
    let mut states = vec![(); threads.max(1)];
    Threads::new(threads).map(queries.len(), &mut states, |_, i| {
        let raw: Vec<i32> = queries[i].iter().map(|x| x.0).collect();
        c.search_exact(&raw, k, tag)
            .iter()
            .map(|h| h.id as u32)
            .collect()
    })
}

/// A standard normal draw (Box-Muller on two uniforms of 53 bits): deterministic for a seed.
fn normal(rng: &mut Rng) -> f64 {
    let u = |rng: &mut Rng| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (a, b) = (u(rng), u(rng));
    (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
}

/// Clusters of the low-rank set.
pub const LOWRANK_CLUSTERS: usize = 64;
/// Rank of each cluster's subspace.
pub const LOWRANK_RANK: usize = 32;

/// The shape of real sentence embeddings at any dimension: 64 clusters, each a centre plus a
/// random subspace of rank 32 (points are the centre plus a Gaussian combination of the
/// subspace's basis plus isotropic noise), scaled to unit length as embedding models emit
/// them. The scales were set so that 20k x 384 is about as hard for the index as the real
/// 384-d set (recall@10 0.95 at ef 16). Float components, so the 8-bit walk copy and the exact rerank are both exercised.
/// The same `(n, dim, seed)` always gives the same vectors; queries come from the same
/// clusters with another seed.
pub fn lowrank(n: usize, dim: usize, seed: u64) -> Vectors {
    let mut rng = Rng(0x10AA_4A4C ^ (dim as u64) << 32);
    let centres: Vec<Vec<f64>> = (0..LOWRANK_CLUSTERS)
        .map(|_| (0..dim).map(|_| normal(&mut rng)).collect())
        .collect();
    // Basis and noise scales relative to the centre's: the clusters overlap enough that a
    // point's nearest neighbours are not simply its cluster's.
    let bases: Vec<Vec<Vec<f64>>> = (0..LOWRANK_CLUSTERS)
        .map(|_| {
            (0..LOWRANK_RANK)
                .map(|_| (0..dim).map(|_| normal(&mut rng) * 0.35).collect())
                .collect()
        })
        .collect();
    let mut rng = Rng(seed);
    let mut data = Vec::with_capacity(n * dim);
    let mut v = vec![0.0f64; dim];
    for _ in 0..n {
        let c = rng.below(LOWRANK_CLUSTERS as u64) as usize;
        v.copy_from_slice(&centres[c]);
        for b in &bases[c] {
            let z = normal(&mut rng);
            for (x, y) in v.iter_mut().zip(b) {
                *x += z * y;
            }
        }
        for x in v.iter_mut() {
            *x += 0.5 * normal(&mut rng);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        data.extend(v.iter().map(|x| (x / norm) as f32));
    }
    Vectors { data, dim }
}

/// Command-line options shared by the benchmark programs.
pub struct Args {
    /// Data set directory, unless synthetic.
    pub dataset: Option<PathBuf>,
    /// Number of synthetic base vectors.
    pub synthetic: Option<usize>,
    /// Number of base vectors of the low-rank clustered set (the shape of real embeddings).
    pub lowrank: Option<usize>,
    /// Dimension of a generated set (128 for the SIFT-shaped one, 768 for the low-rank one
    /// when absent).
    pub dim: Option<usize>,
    /// Queries to run (synthetic sets generate this many).
    pub queries: usize,
    /// Print one JSON object on the last line.
    pub json: bool,
    /// Threads for index construction.
    pub threads: usize,
    /// HNSW `m`.
    pub m: u16,
    /// HNSW `ef_construction`.
    pub ef_construction: u16,
    /// `ef` values to measure.
    pub ef: Vec<u32>,
    /// Records per insert event.
    pub batch: usize,
    /// Limit on base vectors read from a data set.
    pub limit: Option<usize>,
    /// Write the (synthetic) data set to this directory in TEXMEX format and exit.
    pub write_dataset: Option<PathBuf>,
    /// Keep the full-precision vectors in files mapped from this directory, as the node's
    /// `--vectors-on-disk` does (`valori_alloc::files`), instead of on the heap.
    pub vectors_on_disk: Option<PathBuf>,
}

impl Args {
    /// Parses `std::env::args`; prints usage and exits on error.
    pub fn parse(program: &str) -> Args {
        let mut a = Args {
            dataset: None,
            synthetic: None,
            lowrank: None,
            dim: None,
            queries: 1000,
            json: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            m: 16,
            ef_construction: 200,
            ef: vec![16, 32, 64, 128, 256],
            batch: 10_000,
            limit: None,
            write_dataset: None,
            vectors_on_disk: None,
        };
        let usage = || -> ! {
            eprintln!(
                "usage: {program} (DATASET_DIR | --synthetic N | --lowrank N) [--dim D] [--queries Q] [--threads T] \
                 [--m M] [--ef-construction E] [--ef 16,32,..] [--batch B] [--limit N] \
                 [--write-dataset DIR] [--vectors-on-disk DIR] [--json]"
            );
            std::process::exit(2)
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut val = || it.next().unwrap_or_else(|| usage());
            match arg.as_str() {
                "--synthetic" => a.synthetic = Some(val().parse().unwrap_or_else(|_| usage())),
                "--lowrank" => a.lowrank = Some(val().parse().unwrap_or_else(|_| usage())),
                "--dim" => a.dim = Some(val().parse().unwrap_or_else(|_| usage())),
                "--queries" => a.queries = val().parse().unwrap_or_else(|_| usage()),
                "--threads" => a.threads = val().parse().unwrap_or_else(|_| usage()),
                "--m" => a.m = val().parse().unwrap_or_else(|_| usage()),
                "--ef-construction" => {
                    a.ef_construction = val().parse().unwrap_or_else(|_| usage())
                }
                "--ef" => {
                    a.ef = val()
                        .split(',')
                        .map(|x| x.parse().unwrap_or_else(|_| usage()))
                        .collect()
                }
                "--batch" => a.batch = val().parse().unwrap_or_else(|_| usage()),
                "--limit" => a.limit = Some(val().parse().unwrap_or_else(|_| usage())),
                "--write-dataset" => a.write_dataset = Some(PathBuf::from(val())),
                "--vectors-on-disk" => a.vectors_on_disk = Some(PathBuf::from(val())),
                "--json" => a.json = true,
                "-h" | "--help" => usage(),
                s if !s.starts_with('-') && a.dataset.is_none() => a.dataset = Some(s.into()),
                _ => usage(),
            }
        }
        let sources = [
            a.dataset.is_some(),
            a.synthetic.is_some(),
            a.lowrank.is_some(),
        ];
        if sources.iter().filter(|&&x| x).count() != 1 || (a.dim.is_some() && a.dataset.is_some()) {
            usage();
        }
        a
    }

    /// The store `--vectors-on-disk` names (`None` without it: the heap); a directory that
    /// cannot hold the files ends the program with a message.
    pub fn vector_store(&self) -> Option<Arc<dyn ChunkStore>> {
        let dir = self.vectors_on_disk.as_ref()?;
        match valori_alloc::files::VectorFiles::open(dir, Arc::new(|_| {})) {
            Ok(store) => Some(store),
            Err(e) => {
                eprintln!("--vectors-on-disk {}: {e}", dir.display());
                std::process::exit(2)
            }
        }
    }
}

/// A loaded data set.
pub struct Dataset {
    /// Human-readable description for the output.
    pub name: String,
    /// Base vectors.
    pub base: Vectors,
    /// Query vectors.
    pub queries: Vectors,
    /// Ground truth top ids per query, if the files have it.
    pub groundtruth: Option<Vec<Vec<u32>>>,
    /// Tag per base vector, if the files have them.
    pub tags: Option<Vec<u64>>,
    /// Ground truth among base vectors with tag 0, if present.
    pub groundtruth_tag0: Option<Vec<Vec<u32>>>,
}

fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

/// Loads the data set the arguments name.
pub fn load(args: &Args) -> io::Result<Dataset> {
    if let Some(n) = args.lowrank {
        let dim = args.dim.unwrap_or(768);
        return Ok(Dataset {
            name: format!(
                "low-rank clustered {n} x {dim} ({LOWRANK_CLUSTERS} clusters of rank {LOWRANK_RANK}, unit length, seed 1)"
            ),
            base: lowrank(n, dim, 1),
            queries: lowrank(args.queries, dim, 2),
            groundtruth: None,
            tags: None,
            groundtruth_tag0: None,
        });
    }
    if let Some(n) = args.synthetic {
        let dim = args.dim.unwrap_or(128);
        let base = synthetic(n, dim, 1);
        let queries = synthetic(args.queries, dim, 2);
        return Ok(Dataset {
            name: format!("synthetic SIFT-shaped {n} x {dim} (clustered, seed 1)"),
            base,
            queries,
            groundtruth: None,
            tags: None,
            groundtruth_tag0: None,
        });
    }
    let dir = args.dataset.as_ref().expect("dataset");
    let missing = |what: &str| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {what} in {}", dir.display()),
        )
    };
    let base_path =
        find(dir, &["base.fvecs", "sift_base.fvecs"]).ok_or_else(|| missing("base.fvecs"))?;
    let query_path =
        find(dir, &["query.fvecs", "sift_query.fvecs"]).ok_or_else(|| missing("query.fvecs"))?;
    let base = read_fvecs(&base_path, args.limit)?;
    let queries = read_fvecs(&query_path, Some(args.queries))?;
    // A ground truth file is only valid for the full base set.
    let gt_valid = args.limit.is_none();
    let groundtruth = match find(dir, &["groundtruth.ivecs", "sift_groundtruth.ivecs"]) {
        Some(p) if gt_valid => Some(read_ivecs(&p, Some(args.queries))?),
        _ => None,
    };
    let tags = match find(dir, &["tags.u64"]) {
        Some(p) => {
            let bytes = std::fs::read(p)?;
            let mut t: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            t.truncate(base.len());
            Some(t)
        }
        None => None,
    };
    let groundtruth_tag0 = match find(dir, &["groundtruth_tag0.ivecs"]) {
        Some(p) if gt_valid => Some(read_ivecs(&p, Some(args.queries))?),
        _ => None,
    };
    Ok(Dataset {
        name: format!("{} ({} x {})", dir.display(), base.len(), base.dim),
        base,
        queries,
        groundtruth,
        tags,
        groundtruth_tag0,
    })
}

/// Writes a data set in TEXMEX format (with exact ground truth) for other tools.
pub fn write_dataset(
    dir: &Path,
    base: &Vectors,
    queries: &Vectors,
    gt: &[Vec<u32>],
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rows = |v: &Vectors| -> Vec<Vec<u32>> {
        (0..v.len())
            .map(|i| v.row(i).iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    let b = rows(base);
    write_vecs(
        &dir.join("base.fvecs"),
        &b.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )?;
    let q = rows(queries);
    write_vecs(
        &dir.join("query.fvecs"),
        &q.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )?;
    write_vecs(
        &dir.join("groundtruth.ivecs"),
        &gt.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
}

/// The collection the benchmarks build.
pub fn create_event(dim: usize, m: u16, ef_construction: u16) -> Event {
    Event::CreateCollection(CollectionSpec {
        name: "bench".into(),
        dimension: dim as u32,
        metric: Metric::L2,
        index: IndexSpec::Hnsw(HnswParams {
            m,
            ef_construction,
            ef_search: 64,
        }),
    })
}

/// Builds the index over `base` in insert events of `args.batch` records on `args.threads`
/// threads, its vectors where `--vectors-on-disk` says; returns the kernel and the seconds it
/// took.
pub fn build(base: &[Vec<Fixed>], tags: Option<&[u64]>, args: &Args) -> (Kernel, f64) {
    let mut kernel = Kernel::new();
    kernel.place_vectors(args.vector_store());
    build_in(
        kernel,
        base,
        tags,
        args.batch,
        args.threads,
        args.m,
        args.ef_construction,
    )
}

/// [`build`] with explicit parameters, into `kernel` (a new one, its vectors placed where
/// they are to live): a collection `bench` (L2, HNSW `m`, `ef_construction`), filled in insert
/// events of `batch` records on `threads` threads.
pub fn build_in(
    mut kernel: Kernel,
    base: &[Vec<Fixed>],
    tags: Option<&[u64]>,
    batch: usize,
    threads: usize,
    m: u16,
    ef_construction: u16,
) -> (Kernel, f64) {
    let dim = base.first().map_or(1, Vec::len);
    let batch = batch.max(1);
    kernel
        .apply(&create_event(dim, m, ef_construction))
        .expect("create");
    let exec = Threads::new(threads);
    let start = Instant::now();
    for (b, chunk) in base.chunks(batch).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| NewRecord {
                vector: v.clone(),
                tag: tags.map_or(0, |t| t[b * batch + i]),
                metadata: None,
            })
            .collect();
        let event = Event::Insert {
            collection: "bench".into(),
            records,
        };
        kernel
            .apply_with(&event, &event.encode(), &exec)
            .expect("insert");
    }
    (kernel, start.elapsed().as_secs_f64())
}

/// The value after `name` on the command line, or `default` when `name` is absent; a value that
/// does not parse ends the program with a message rather than being ignored.
pub fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == name) else {
        return default;
    };
    match args.get(i + 1).map(|v| v.parse()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("{name} needs a value of the right kind");
            std::process::exit(2);
        }
    }
}

/// Ends the program with `usage` when the command line holds anything but the flags `valued`
/// (each followed by its value) and the switches `switches`, or asks for `--help`: a mistyped
/// flag is not silently ignored while a long benchmark runs with defaults.
pub fn only_flags(valued: &[&str], switches: &[&str], usage: &str) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if valued.contains(&a) && i + 1 < args.len() {
            i += 2;
        } else if switches.contains(&a) {
            i += 1;
        } else {
            if valued.contains(&a) {
                eprintln!("{a} needs a value");
            } else if a != "--help" && a != "-h" {
                eprintln!("unexpected argument {a:?}");
            }
            eprintln!("{usage}");
            std::process::exit(if a == "--help" || a == "-h" { 0 } else { 2 });
        }
    }
}

/// Recall and latency figures for one `ef`.
pub struct RunStats {
    /// ef used.
    pub ef: u32,
    /// Mean |top-1 ∩ true top-1|.
    pub recall_at_1: f64,
    /// Mean |top-10 ∩ true top-10| / 10.
    pub recall_at_10: f64,
    /// Single-thread queries per second.
    pub qps: f64,
    /// Median latency in ms.
    pub p50_ms: f64,
    /// 99th percentile latency in ms.
    pub p99_ms: f64,
    /// Fraction of returned results that satisfied the filter (1.0 unfiltered).
    pub precision: f64,
}

/// Runs every query single-threaded at `ef` and scores it against `truth`.
pub fn run_queries(
    kernel: &Kernel,
    queries: &[Vec<Fixed>],
    truth: &[Vec<u32>],
    ef: u32,
    tag: Option<u64>,
) -> RunStats {
    let mut scratch = SearchScratch::new();
    let params = valori_kernel::SearchParams {
        k: 10,
        tag,
        ef: Some(ef),
    };
    let c = kernel.collection("bench").expect("collection");
    let mut lat = Vec::with_capacity(queries.len());
    let mut hits1 = 0.0;
    let mut hits10 = 0.0;
    let mut returned = 0usize;
    let mut matching = 0usize;
    // Best of three passes over the queries: the figure is the index's speed, not the noise of
    // a shared machine. Results are identical in every pass (determinism).
    let mut secs = f64::INFINITY;
    let mut results = Vec::new();
    for _ in 0..3 {
        let mut pass_lat = Vec::with_capacity(queries.len());
        let mut pass_results = Vec::with_capacity(queries.len());
        let all = Instant::now();
        for q in queries {
            let t = Instant::now();
            let r = kernel
                .search_with("bench", q, &params, &mut scratch)
                .expect("search");
            pass_lat.push(t.elapsed().as_secs_f64() * 1e3);
            pass_results.push(r);
        }
        let pass_secs = all.elapsed().as_secs_f64();
        if !results.is_empty() {
            assert_eq!(
                results, pass_results,
                "search results changed between passes"
            );
        }
        if pass_secs < secs {
            secs = pass_secs;
            lat = pass_lat;
        }
        results = pass_results;
    }
    for (r, t) in results.iter().zip(truth) {
        let ids: Vec<u32> = r.iter().map(|h| h.id as u32).collect();
        if let (Some(a), Some(b)) = (ids.first(), t.first()) {
            hits1 += f64::from(u8::from(a == b));
        }
        let top: &[u32] = &t[..t.len().min(10)];
        hits10 += ids.iter().filter(|id| top.contains(id)).count() as f64 / top.len().max(1) as f64;
        returned += r.len();
        matching += r
            .iter()
            .filter(|h| tag.is_none_or(|tg| c.get(h.id).is_some_and(|rec| rec.tag == tg)))
            .count();
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let n = queries.len() as f64;
    RunStats {
        ef,
        recall_at_1: hits1 / n,
        recall_at_10: hits10 / n,
        qps: n / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        precision: if returned == 0 {
            1.0
        } else {
            matching as f64 / returned as f64
        },
    }
}

/// Resident memory of this process in bytes (Linux), for memory figures.
pub fn rss_bytes() -> u64 {
    status_bytes("/proc/self/status", "VmRSS:")
}

/// A memory figure a `/proc/<pid>/status` file gives, in bytes (0 where there is none):
/// `field` is `VmRSS:` (the resident set), `RssAnon:` (its private memory) or `RssFile:`
/// (its mapped files' pages).
pub fn status_bytes(status: &str, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .map_or(0, |kb: u64| kb * 1024)
}

/// The machine, for the record: CPU model, cores, and which distance kernels run (exact and
/// graph walk).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpu}, {cores} cores, distance kernels: {}, graph walk kernels: {:?}, allocator: {}",
        valori_kernel::distance::narrow_kernels().name,
        valori_kernel::compact::best_isa(),
        allocator()
    )
}

/// A tiny JSON object writer (numbers and strings), to keep the benchmarks dependency-free.
#[derive(Default)]
pub struct Json(String);

impl Json {
    /// Adds a string field.
    pub fn str(mut self, k: &str, v: &str) -> Self {
        let v = v.replace('\\', "\\\\").replace('"', "\\\"");
        self.sep();
        let _ = write!(self.0, "\"{k}\":\"{v}\"");
        self
    }
    /// Adds a number field.
    pub fn num(mut self, k: &str, v: f64) -> Self {
        self.sep();
        if v.is_finite() {
            let _ = write!(self.0, "\"{k}\":{v}");
        } else {
            let _ = write!(self.0, "\"{k}\":null");
        }
        self
    }
    /// Adds a raw JSON field (an array or object already encoded).
    pub fn raw(mut self, k: &str, v: &str) -> Self {
        self.sep();
        let _ = write!(self.0, "\"{k}\":{v}");
        self
    }
    fn sep(&mut self) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
    }
    /// The object.
    pub fn finish(self) -> String {
        format!("{{{}}}", self.0)
    }
}
