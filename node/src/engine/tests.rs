use super::recover::recover;
use super::writer::encoded_len;
use super::*;
use std::time::{Duration, Instant};

fn insert(engine: &Engine, n: usize, seed: i32) {
    let records = (0..n)
        .map(|i| valori_kernel::NewRecord {
            vector: (0..8)
                .map(|j| valori_kernel::Fixed(((i as i32 * 7 + j * 13 + seed) % 50) << 16))
                .collect(),
            tag: 0,
            metadata: None,
        })
        .collect();
    insert_into(engine, "default", records);
}

fn insert_into(engine: &Engine, collection: &str, records: Vec<valori_kernel::NewRecord>) {
    engine
        .submit_blocking(Event::Insert {
            collection: collection.into(),
            records,
        })
        .unwrap();
}

/// The writer's two copies stay equal to what the log replays to, whether the replaced
/// copy is brought up to date by replaying (no reader holds it) or, when a reader holds it
/// past the wait, by copying; a reader's copy never changes under it.
#[test]
fn both_copies_follow_the_log_whether_replayed_or_copied() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::open(EngineConfig::new(dir.path()), Arc::clone(&metrics)).unwrap();
    for round in 0..4 {
        insert(&engine, 150, round);
    }
    assert_eq!(metrics.state_copies.get(), 0, "nobody held a replaced copy");
    let held = engine.read().unwrap();
    let held_hash = held.state_hash();
    insert(&engine, 100, 9);
    // The write is answered before the replaced copy is reclaimed: wait for the writer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.state_copies.get() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        metrics.state_copies.get(),
        1,
        "the held copy was copied, not waited for"
    );
    assert_eq!(
        held.state_hash(),
        held_hash,
        "a reader's copy never changes"
    );
    assert_eq!(held.seq() + 1, engine.seq().unwrap());
    drop(held);
    for round in 0..3 {
        insert(&engine, 70, round + 20);
    }
    let live = engine.read().unwrap();
    let durable = recover(&engine.shared.store, &engine.shared.config, None).unwrap();
    assert_eq!(*live, durable);
    // The back copy too: a snapshot is written from it.
    let file = engine.snapshot_blocking().unwrap();
    let bytes = std::fs::read(&file.path).unwrap();
    assert_eq!(Kernel::restore(&bytes).unwrap(), durable);
}

/// A collection of `dim`-wide vectors, HNSW-indexed, for the memory tests.
fn create_wide(engine: &Engine, dim: u32) {
    engine
        .submit_blocking(Event::CreateCollection(valori_kernel::CollectionSpec {
            name: "wide".into(),
            dimension: dim,
            metric: valori_kernel::Metric::L2,
            index: valori_kernel::IndexSpec::Hnsw(valori_kernel::HnswParams {
                m: 8,
                ef_construction: 32,
                ef_search: 32,
            }),
        }))
        .unwrap();
}

fn insert_wide(engine: &Engine, dim: usize, n: usize, seed: u64) {
    insert_wide_with(engine, dim, n, seed, 0);
}

/// [`insert_wide`] with `low` or'ed into every component: 0 leaves them multiples of 2^12
/// below 2^19, which the collection holds in 16 bits (`kernel/src/vectors.rs`); 1 makes it
/// hold every vector in 32.
fn insert_wide_with(engine: &Engine, dim: usize, n: usize, seed: u64, low: i32) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let records = (0..n)
        .map(|_| valori_kernel::NewRecord {
            vector: (0..dim)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    valori_kernel::Fixed((((x % 200) as i32 - 100) << 12) | low)
                })
                .collect(),
            tag: 0,
            metadata: None,
        })
        .collect();
    insert_into(engine, "wide", records);
}

fn held_bytes(engine: &Engine, others: &[&Arc<Kernel>]) -> u64 {
    let others = others.iter().map(|k| Arc::clone(k)).collect();
    answer_blocking(engine.ask(|reply| Job::HeldBytes(others, reply)).unwrap()).unwrap()
}

/// A collection of 8-wide vectors indexed with m 64: layer-0 lists of 128 entries, 512 bytes,
/// 4,096 to a chunk, so that a few thousand records fill several chunks of lists.
fn create_linked(engine: &Engine) {
    engine
        .submit_blocking(Event::CreateCollection(valori_kernel::CollectionSpec {
            name: "linked".into(),
            dimension: 8,
            metric: valori_kernel::Metric::L2,
            index: valori_kernel::IndexSpec::Hnsw(valori_kernel::HnswParams {
                m: 64,
                ef_construction: 16,
                ef_search: 16,
            }),
        }))
        .unwrap();
}

fn insert_linked(engine: &Engine, n: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let records = (0..n)
        .map(|_| valori_kernel::NewRecord {
            vector: (0..8)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    valori_kernel::Fixed(((x % 1000) as i32 - 500) << 10)
                })
                .collect(),
            tag: 0,
            metadata: None,
        })
        .collect();
    insert_into(engine, "linked", records);
}

/// The node's two copies hold each vector once between them: the back copy, whether replayed
/// or copied, shares every chunk of vectors and of the walk copy with the published state,
/// which stays what the log replays to; by default each holds its own graph's lists.
#[test]
fn the_two_copies_hold_each_vector_once() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::open(EngineConfig::new(dir.path()), Arc::clone(&metrics)).unwrap();
    create_wide(&engine, 128);
    for seed in 0..6 {
        insert_wide(&engine, 128, 400, seed);
    }
    let published = engine.read().unwrap();
    let one = Kernel::held_bytes(&[&published]);
    // The vectors alone, held in 16 bits.
    assert!(one >= 2400 * 128 * 2, "{one}");
    // Layer-0 lists of 2 * 8 neighbours.
    let lists = 2400 * 16 * 4;
    assert_eq!(
        held_bytes(&engine, &[]),
        one + lists,
        "replayed, then shared but for the lists"
    );
    // A reader held the replaced copy past the wait: the writer copied the published state,
    // and the copy shares all of it.
    insert_wide(&engine, 128, 50, 9);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.state_copies.get() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(metrics.state_copies.get(), 1);
    drop(published);
    let published = engine.read().unwrap();
    let one = Kernel::held_bytes(&[&published]);
    assert_eq!(
        held_bytes(&engine, &[]),
        one,
        "copied: all shared until the next write"
    );
    let durable = recover(&engine.shared.store, &engine.shared.config, None).unwrap();
    assert_eq!(*published, durable);
    assert_eq!(
        published.shared_bytes(&durable),
        0,
        "a recovered state is its own"
    );
    drop(published);
    insert_wide(&engine, 128, 50, 10);
    let one = Kernel::held_bytes(&[&engine.read().unwrap()]);
    assert_eq!(
        held_bytes(&engine, &[]),
        one + 2500 * 16 * 4,
        "the next write's lists are apart again"
    );
}

/// With `share_graph_lists`, groups that link new records all over a graph of several chunks
/// of lists leave the two copies holding the lists about once: beyond one copy's bytes, each holds only the lists of
/// the last few groups apart (at most a quarter of each chunk's, with their table), never a
/// second copy of the lists. Both stay what the log replays to.
#[test]
fn the_two_copies_hold_the_graphs_lists_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(sharing_lists(dir.path()), Arc::new(Metrics::new())).unwrap();
    create_linked(&engine);
    for seed in 0..3 {
        insert_linked(&engine, 4096, seed);
    }
    let mut apart = 0;
    for seed in 10..40 {
        insert_linked(&engine, 10, seed);
        let published = engine.read().unwrap();
        let one = Kernel::held_bytes(&[&published]);
        let lists = (3 * 4096 + 10 * (seed - 9)) * 128 * 4;
        let node = held_bytes(&engine, &[]);
        assert!(
            node <= one + lists / 2,
            "after group {seed}: the copies hold {node} bytes, one {one}, lists {lists}"
        );
        apart = apart.max(node - one);
    }
    assert!(apart > 0, "lists were written apart");
    let live = engine.read().unwrap();
    let durable = recover(&engine.shared.store, &engine.shared.config, None).unwrap();
    assert_eq!(*live, durable);
    let file = engine.snapshot_blocking().unwrap();
    let bytes = std::fs::read(&file.path).unwrap();
    assert_eq!(
        Kernel::restore(&bytes).unwrap(),
        durable,
        "the back copy too"
    );
}

/// Without `share_graph_lists` (the default) the copies keep their graph's lists apart.
#[test]
fn by_default_the_graph_lists_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path()), Arc::new(Metrics::new())).unwrap();
    create_linked(&engine);
    insert_linked(&engine, 4096, 0);
    for seed in 1..6 {
        insert_linked(&engine, 10, seed);
    }
    let one = Kernel::held_bytes(&[&engine.read().unwrap()]);
    assert_eq!(held_bytes(&engine, &[]), one + (4096 + 50) * 128 * 4);
}

/// Engine settings whose copies share the graph's lists.
fn sharing_lists(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.share_graph_lists = true;
    config
}

/// A reader that holds a published state for seconds while groups commit keeps that one
/// version alive and no more: the versions held share every vector and walk-copy row, but
/// for the last chunks the groups appended to, rather than the reader costing a full copy.
#[test]
fn a_reader_holding_a_state_for_seconds_costs_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(sharing_lists(dir.path()), Arc::new(Metrics::new())).unwrap();
    let dim = 256;
    create_wide(&engine, dim as u32);
    for seed in 0..6 {
        insert_wide(&engine, dim, 500, seed);
    }
    let held = engine.read().unwrap();
    let hash = held.state_hash();
    let one = Kernel::held_bytes(&[&held]);
    let started = Instant::now();
    let mut groups = 0;
    while started.elapsed() < Duration::from_secs(2) || groups < 20 {
        insert_wide(&engine, dim, 5, 100 + groups);
        groups += 1;
    }
    let now = engine.read().unwrap();
    let added = Kernel::held_bytes(&[&now]) - one;
    let node = held_bytes(&engine, &[&held]);
    // What the held version holds alone: the last chunks of vectors, of the walk copy and of
    // the graph's lists, which the groups appended to.
    let held_alone = node - Kernel::held_bytes(&[&now]);
    assert!(
        held_alone <= 2 * valori_kernel::rows::HUGE_PAGE as u64,
        "{held_alone} bytes held for the reader, of {one} ({groups} groups, {added} bytes added)"
    );
    assert_eq!(held.state_hash(), hash, "a reader's state never changes");
    drop(held);
    let one = Kernel::held_bytes(&[&now]);
    assert_eq!(held_bytes(&engine, &[]), one);
}

/// The whole state is hashed once per published state however many ask (the operator asks
/// every pod each interval), and again once a commit publishes a new state.
#[test]
fn the_state_hash_is_computed_once_per_published_state() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::open(EngineConfig::new(dir.path()), Arc::clone(&metrics)).unwrap();
    let hashed = || metrics.state_hash_seconds.get_sample_count();
    insert(&engine, 20, 0);
    let first = engine.state().unwrap();
    for _ in 0..3 {
        assert_eq!(engine.state().unwrap().state_hash, first.state_hash);
    }
    assert_eq!(first.state_hash, engine.read().unwrap().state_hash());
    assert_eq!(hashed(), 1);
    insert(&engine, 20, 1);
    let second = engine.state().unwrap();
    assert_eq!(second.seq, first.seq + 1);
    assert_ne!(second.state_hash, first.state_hash);
    assert_eq!(second.state_hash, engine.read().unwrap().state_hash());
    assert_eq!(engine.state().unwrap().state_hash, second.state_hash);
    assert_eq!(hashed(), 2);
    // The cache's weak reference does not keep the writer from reusing the replaced copy
    // (the next commit is answered after the writer has brought that copy up to date).
    insert(&engine, 20, 2);
    assert_eq!(metrics.state_copies.get(), 0);
}

/// A group commit stops taking events once they reach the byte cap: ten queued events of
/// about 1 KB under a 2.5 KB cap commit in four groups (3, 3, 3, 1), not one.
#[test]
fn group_commits_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let mut config = EngineConfig::new(dir.path().join("data"));
    config.max_group_bytes = 2500;
    config.commit_gate = Some(gate.clone());
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::open(config, Arc::clone(&metrics)).unwrap();
    let event = |i: u64| Event::CreateNode {
        kind: "k".into(),
        record: None,
        properties: Some(vec![i as u8; 1000]),
    };
    assert!((1000..1100).contains(&encoded_len(&event(0))));
    // The first write waits at the gate; ten more queue behind it.
    std::fs::write(&gate, b"").unwrap();
    let mut waiting = gate.clone().into_os_string();
    waiting.push(".waiting");
    let writers: Vec<_> = (0..11)
        .map(|i| {
            let engine = engine.clone();
            let w = std::path::PathBuf::from(&waiting);
            std::thread::spawn(move || {
                if i > 0 {
                    while !w.exists() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                engine.submit_blocking(event(i)).unwrap()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine
        .shared
        .queued
        .load(std::sync::atomic::Ordering::Acquire)
        < 10
    {
        assert!(Instant::now() < deadline, "ten writes never queued");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::remove_file(&gate).unwrap();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(engine.seq().unwrap(), 11);
    assert_eq!(
        metrics.commit_seconds.get_sample_count(),
        5,
        "1 + 4 group commits"
    );
}

#[test]
fn a_dead_writer_makes_the_node_unready_and_writes_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig::new(dir.path()), Arc::new(Metrics::new())).unwrap();
    assert_eq!(engine.not_ready(), None);
    engine.send(Job::Panic).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while engine.not_ready().is_none() {
        assert!(std::time::Instant::now() < deadline, "still ready");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let why = engine.not_ready().unwrap();
    assert!(why.contains("writer thread stopped"), "{why}");
    let err = engine.send(Job::Panic).unwrap_err();
    assert_eq!(err.code(), "internal_error");
}

/// A restore cannot undo a fence: the epoch a node heard of is persisted by the writer, and a
/// restore (which re-reads the persisted role to bump the history generation) runs in the same
/// thread, after it, so it never writes back an older highest epoch, in memory or on disk.
#[test]
fn a_restore_keeps_the_highest_epoch_heard_of() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let engine = Engine::open(EngineConfig::new(&data), Arc::new(Metrics::new())).unwrap();
    insert(&engine, 10, 0);
    let snapshot = engine.snapshot_blocking().unwrap();
    let copy = dir.path().join("copy.vsnap");
    std::fs::copy(&snapshot.path, &copy).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(engine.observe_epoch(5, None)).unwrap());
    assert!(engine.role().fenced());
    let history = engine.role().history;
    rt.block_on(engine.install_copy(&copy)).unwrap();
    let role = engine.role();
    assert_eq!(
        (role.seen_epoch, role.history),
        (5, history + 1),
        "{role:?}"
    );
    assert!(role.fenced(), "still fenced after the restore");
    drop(engine);
    let reopened = Engine::open(EngineConfig::new(&data), Arc::new(Metrics::new())).unwrap();
    assert_eq!(reopened.role().seen_epoch, 5, "and on disk");
}

/// The files `vectors/` of `data_dir` that this process has mapped, as `/proc/self/maps`
/// names them (unlinked files show with their directory).
fn mapped_vector_files(data_dir: &std::path::Path) -> usize {
    let dir = data_dir.join(VECTOR_DIR);
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("{}/", dir.display())))
        .count()
}

/// With `--vectors-on-disk` the full-precision vectors live in files mapped from `vectors/`
/// (all of them, through the writer's two copies, a restart and a snapshot restore), and
/// the node answers and hashes exactly as one that keeps them in memory. Files are unlinked
/// while mapped: the directory stays empty, what a crash left there is removed at open, and
/// closing the node unmaps them all.
#[test]
fn vectors_on_disk_live_in_mapped_files_and_change_no_answer() {
    let dim = 128;
    let (on_disk, in_memory) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::create_dir_all(on_disk.path().join("vectors")).unwrap();
    std::fs::write(on_disk.path().join("vectors/chunk-7"), b"left by a crash").unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut config = EngineConfig::new(on_disk.path());
    config.vectors_on_disk = true;
    let disk = Engine::open(config.clone(), Arc::clone(&metrics)).unwrap();
    let memory = Engine::open(
        EngineConfig::new(in_memory.path()),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_dir(on_disk.path().join("vectors"))
            .unwrap()
            .count(),
        0,
        "a crash's leftovers are removed"
    );
    // Four batches that 16 bits hold, then one that needs 32: the vectors change form inside
    // the files, in both of the writer's copies. Then more than one chunk of vectors (4,096
    // rows of 512 bytes each).
    for engine in [&disk, &memory] {
        create_wide(engine, dim as u32);
        for seed in 0..5 {
            insert_wide_with(engine, dim, 1000, seed, i32::from(seed == 4));
        }
    }
    let vector_bytes = 5000 * dim as u64 * 4;
    let query: Vec<valori_kernel::Fixed> = (0..dim)
        .map(|j| valori_kernel::Fixed(((j as i32 % 9) - 4) << 14))
        .collect();
    let params = valori_kernel::SearchParams {
        k: 10,
        tag: None,
        ef: Some(64),
    };
    let answers = |engine: &Engine| {
        let state = engine.read().unwrap();
        (
            state.state_hash(),
            state.search("wide", &query, &params).unwrap(),
            state.stored_vector_bytes(),
        )
    };
    let expected = answers(&memory);
    assert_eq!(expected.2, 0);
    assert_eq!(
        answers(&disk),
        (expected.0, expected.1.clone(), vector_bytes)
    );
    assert!(metrics.vectors_mapped.get() as u64 >= vector_bytes);
    assert!(mapped_vector_files(on_disk.path()) >= 2);
    assert_eq!(
        std::fs::read_dir(on_disk.path().join("vectors"))
            .unwrap()
            .count(),
        0,
        "mapped files are unlinked"
    );
    // A snapshot taken from the mapped vectors restores, into the files again.
    let file = disk.snapshot_blocking().unwrap();
    insert_wide(&disk, dim, 10, 99);
    let copy = on_disk.path().join("taken.vsnap");
    std::fs::copy(&file.path, &copy).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(disk.install_copy(&copy)).unwrap();
    assert_eq!(
        answers(&disk),
        (expected.0, expected.1.clone(), vector_bytes)
    );
    // A restart recovers them into the files too.
    drop(disk);
    assert_eq!(mapped_vector_files(on_disk.path()), 0, "closing unmaps");
    assert_eq!(metrics.vectors_mapped.get(), 0);
    let disk = Engine::open(config, Arc::clone(&metrics)).unwrap();
    insert_wide(&disk, dim, 10, 99);
    insert_wide(&memory, dim, 10, 99);
    let expected = answers(&memory);
    assert_eq!(
        answers(&disk),
        (expected.0, expected.1, vector_bytes + 10 * 128 * 4)
    );
}

/// A data directory whose `vectors` cannot be a directory stops the node at open, naming it.
#[test]
fn vectors_on_disk_refuse_a_directory_they_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vectors"), b"a file").unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.vectors_on_disk = true;
    let err = Engine::open(config, Arc::new(Metrics::new()))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("vectors"), "{err}");
}
