//! A reader holding a published version for seconds while groups commit costs the node only
//! what those groups changed, measured where a pod's limit measures it: the process's private
//! resident memory (`RssAnon`). This file holds one test so that its process runs nothing
//! else that allocates; the engine is the node's own, on a real RocksDB in a temporary
//! directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use valori_kernel::{CollectionSpec, Event, Fixed, IndexSpec, Kernel, Metric, NewRecord};
use valori_node::metrics::Metrics;
use valori_node::{Engine, EngineConfig};

const DIM: usize = 256;
const MIB: u64 = 1 << 20;

/// `n` records of pseudo-random vectors from `seed`, each component with its lowest bit set
/// and beyond 16 bits, so that the collection holds them in 32 bits (`kernel/src/vectors.rs`).
fn records(n: usize, seed: u64) -> Vec<NewRecord> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| NewRecord {
            vector: (0..DIM)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    Fixed((((x % 200) as i32 - 100) << 12) | 1)
                })
                .collect(),
            tag: 0,
            metadata: None,
        })
        .collect()
}

fn insert(engine: &Engine, n: usize, seed: u64) {
    engine
        .submit_blocking(Event::Insert {
            collection: "v".into(),
            records: records(n, seed),
        })
        .unwrap();
}

/// This process's private resident memory, in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("RssAnon in /proc/self/status");
    kib * 1024
}

/// A state of 64 MiB of vectors; a reader holds one version of it for three seconds while a
/// group of eight records commits every 10 ms. The process grows by no more than what the
/// groups added, what the held version holds alone (the chunk the groups appended to) and a
/// bound on what the log's memtable and the allocator keep for those groups once the writer
/// is idle; and the held
/// version's part and that bound together are under half the state: were the writer to keep a
/// copy of its own beside the reader's, the process would grow by the whole state and the
/// test would fail. The held version never changes.
#[test]
fn a_reader_holding_a_version_for_seconds_grows_the_process_only_by_what_changed() {
    const SLACK: u64 = 16 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path()), Arc::new(Metrics::new())).unwrap();
    engine
        .submit_blocking(Event::CreateCollection(CollectionSpec {
            name: "v".into(),
            dimension: DIM as u32,
            metric: Metric::L2,
            index: IndexSpec::Flat,
        }))
        .unwrap();
    for batch in 0..32 {
        insert(&engine, 2048, batch);
    }
    let state_bytes = Kernel::held_bytes(&[&engine.read().unwrap()]);
    assert!(state_bytes >= 64 * MIB, "{state_bytes}");
    // The writer's steady state: both copies in use, brought up to date group by group.
    for g in 0..50 {
        insert(&engine, 8, 1000 + g);
    }
    std::thread::sleep(Duration::from_millis(500));

    let before = rss_anon();
    let held = engine.read().unwrap();
    let hash = held.state_hash();
    let held_bytes = Kernel::held_bytes(&[&held]);
    let started = Instant::now();
    let mut groups = 0;
    while started.elapsed() < Duration::from_secs(3) || groups < 20 {
        insert(&engine, 8, 2000 + groups);
        groups += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    // Measured once the writer has gone idle and handed back what the groups used and dropped
    // (it does after 200 ms without work), the reader still holding its version.
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_anon().saturating_sub(before);
    let now = engine.read().unwrap();
    let added = Kernel::held_bytes(&[&now]) - held_bytes;
    let held_alone = Kernel::held_bytes(&[&held, &now]) - Kernel::held_bytes(&[&now]);
    let report = format!(
        "the process grew {grown} bytes while a reader held a version for {groups} groups \
         that added {added}; the held version alone holds {held_alone} bytes; the state \
         {state_bytes}"
    );
    assert!(held_alone + SLACK < state_bytes / 2, "{report}");
    assert!(grown <= added + held_alone + SLACK, "{report}");
    assert_eq!(held.state_hash(), hash, "a reader's version never changes");
    assert_eq!(now.seq(), held.seq() + groups);
    eprintln!("{report}");
}
