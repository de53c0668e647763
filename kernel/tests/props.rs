//! Property tests of the kernel's determinism rules.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use valori_kernel::compact::{self, Component};
use valori_kernel::distance::{self, Bound};
use valori_kernel::fixed::FixedError;
use valori_kernel::rows::{ChunkStore, Region};
use valori_kernel::{
    CollectionSpec, Event, Fixed, HnswParams, IndexSpec, Kernel, Metric, NewRecord, RecordRef,
    SearchParams, Share,
};

const NAMES: [&str; 3] = ["a", "b", "default"];

fn component() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(i32::MIN),
        Just(i32::MAX),
        Just(0),
        -3i32..=3,
        -(1i32 << 17)..=(1 << 17),
        any::<i32>(),
    ]
}

fn fixed_vec(dim: impl Strategy<Value = usize>) -> impl Strategy<Value = Vec<Fixed>> {
    dim.prop_flat_map(|d| prop::collection::vec(component().prop_map(Fixed), d))
}

fn metric() -> impl Strategy<Value = Metric> {
    prop_oneof![
        Just(Metric::L2),
        Just(Metric::InnerProduct),
        Just(Metric::Cosine)
    ]
}

fn new_record() -> impl Strategy<Value = NewRecord> {
    (
        fixed_vec(1usize..=4),
        0u64..4,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..6)),
    )
        .prop_map(|(vector, tag, metadata)| NewRecord {
            vector,
            tag,
            metadata,
        })
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(&NAMES[..]).prop_map(String::from)
}

fn kind() -> impl Strategy<Value = String> {
    prop::sample::select(&["knows", "likes"][..]).prop_map(String::from)
}

/// Events against a small space of names and ids, so that many apply and many are rejected.
fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (name(), 1u32..=4, metric()).prop_map(|(name, dimension, metric)| {
            Event::CreateCollection(CollectionSpec {
                name,
                dimension,
                metric,
                index: IndexSpec::Flat,
            })
        }),
        (name(), 1u32..=4, metric(), 2u16..=4, 1u16..=12).prop_map(
            |(name, dimension, metric, m, ef)| {
                Event::CreateCollection(CollectionSpec {
                    name,
                    dimension,
                    metric,
                    index: IndexSpec::Hnsw(HnswParams {
                        m,
                        ef_construction: ef,
                        ef_search: ef,
                    }),
                })
            }
        ),
        name().prop_map(|name| Event::DropCollection { name }),
        (name(), prop::collection::vec(new_record(), 1..4)).prop_map(|(collection, records)| {
            Event::Insert {
                collection,
                records,
            }
        }),
        (name(), prop::collection::vec(new_record(), 1..4)).prop_map(|(collection, records)| {
            Event::Insert {
                collection,
                records,
            }
        }),
        (name(), 0u64..8).prop_map(|(collection, id)| Event::Delete { collection, id }),
        (
            kind(),
            prop::option::of((name(), 0u64..6, any::<bool>())),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..4))
        )
            .prop_map(|(kind, link, properties)| Event::CreateNode {
                kind,
                record: link.map(|(collection, id, by_key)| {
                    if by_key {
                        RecordRef::Key {
                            collection,
                            key: format!("k{id}"),
                        }
                    } else {
                        RecordRef::Id { collection, id }
                    }
                }),
                properties,
            }),
        (0u64..6).prop_map(|id| Event::DeleteNode { id }),
        (0u64..6, 0u64..6, kind()).prop_map(|(from, to, kind)| Event::CreateEdge {
            from,
            to,
            kind
        }),
        (0u64..6, 0u64..6, kind()).prop_map(|(from, to, kind)| Event::CreateEdge {
            from,
            to,
            kind
        }),
        (0u64..10).prop_map(|id| Event::DeleteEdge { id }),
    ]
}

/// Applies events, checking that rejected ones change nothing; returns the kernel and the
/// encodings of the accepted events (the log).
fn run(events: &[Event]) -> (Kernel, Vec<Vec<u8>>) {
    let mut k = Kernel::new();
    let mut log = Vec::new();
    for e in events {
        let before = (k.seq(), k.chain_hash(), k.state_hash());
        match k.apply(e) {
            Ok(_) => log.push(e.encode()),
            Err(_) => assert_eq!(before, (k.seq(), k.chain_hash(), k.state_hash())),
        }
    }
    (k, log)
}

/// A chunk store that lends 64-byte aligned heap blocks, declining every `decline`-th request
/// (0: never), and counts the regions it has out.
struct Lender {
    decline: usize,
    asked: AtomicUsize,
    out: Arc<AtomicUsize>,
}

impl Lender {
    fn lend(decline: usize) -> (Arc<dyn ChunkStore>, Arc<AtomicUsize>) {
        let out = Arc::new(AtomicUsize::new(0));
        let store = Lender {
            decline,
            asked: AtomicUsize::new(0),
            out: Arc::clone(&out),
        };
        (Arc::new(store), out)
    }
}

/// Gives a lent block back.
struct Returned {
    at: usize,
    layout: Layout,
    out: Arc<AtomicUsize>,
}

impl Drop for Returned {
    fn drop(&mut self) {
        // SAFETY: `at` was allocated with `layout` by `Lender::allocate` and is freed once.
        unsafe { std::alloc::dealloc(self.at as *mut u8, self.layout) };
        self.out.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ChunkStore for Lender {
    fn allocate(&self, bytes: usize) -> Option<Region> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        if self.decline > 0 && n.is_multiple_of(self.decline) {
            return None;
        }
        let layout = Layout::from_size_align(bytes.max(64), 64).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        self.out.fetch_add(1, Ordering::SeqCst);
        let returned = Returned {
            at: ptr.as_ptr() as usize,
            layout,
            out: Arc::clone(&self.out),
        };
        // SAFETY: a fresh zeroed block of `bytes` bytes on a 64-byte boundary, ours alone until
        // `returned` is dropped.
        Some(unsafe { Region::new(ptr, bytes, Box::new(returned)) })
    }
}

/// Vectors placed in a store give the state, the hashes and the search results of vectors on
/// the heap, across chunk boundaries, through copies and copy on write in the store, and the
/// store gets every region back once the states are gone. Where its regions run out (it
/// declines), chunks live on the heap beside them, with the same result. The first batches
/// fit 16 bits and the last does not, so the vectors change form once, within the store.
#[test]
fn vectors_in_a_store_change_no_result_or_hash() {
    let dim = 128;
    let spec = CollectionSpec {
        name: "docs".into(),
        dimension: dim as u32,
        metric: Metric::L2,
        index: IndexSpec::Hnsw(HnswParams {
            m: 8,
            ef_construction: 24,
            ef_search: 32,
        }),
    };
    // `low` is or'ed into every component: 0 keeps them packable (multiples of 2^8 below
    // 2^18: `x >> 8` fits 16 bits), 1 makes them need 32 bits.
    let batch = |seed: u64, n: usize, low: i32| Event::Insert {
        collection: "docs".into(),
        records: (0..n)
            .map(|i| NewRecord {
                vector: (0..dim)
                    .map(|j| {
                        let x = (seed * 7919 + i as u64 * 131 + j as u64 * 17) % 2001;
                        Fixed(((x as i32 - 1000) << 8) | low)
                    })
                    .collect(),
                tag: i as u64 % 3,
                metadata: None,
            })
            .collect(),
    };
    let events: Vec<Event> = std::iter::once(Event::CreateCollection(spec))
        .chain((0..3).map(|s| batch(s, 1500, i32::from(s == 2))))
        .collect();
    for decline in [0, 3] {
        let (store, out) = Lender::lend(decline);
        let mut heap = Kernel::new();
        let mut placed = Kernel::new();
        placed.place_vectors(Some(Arc::clone(&store)));
        // Half the events before the other state is placed, so that it moves what it holds.
        let mut moved = Kernel::new();
        for (i, e) in events.iter().enumerate() {
            if i == 2 {
                moved.place_vectors(Some(Arc::clone(&store)));
            }
            let applied = heap.apply(e);
            assert_eq!(placed.apply(e), applied);
            assert_eq!(moved.apply(e), applied);
        }
        let vectors = (4500 * dim * 4) as u64;
        assert_eq!(heap.stored_vector_bytes(), 0);
        if decline == 0 {
            assert_eq!(placed.stored_vector_bytes(), vectors);
            assert_eq!(moved.stored_vector_bytes(), vectors);
        } else {
            assert!(placed.stored_vector_bytes() < vectors);
        }
        // A copy shares the store's chunks; a write to it copies the last one within the store.
        let mut copy = placed.clone();
        let later = batch(9, 300, 0);
        assert_eq!(copy.apply(&later), heap.clone().apply(&later));
        for (a, b) in [(&placed, &heap), (&moved, &heap)] {
            assert_eq!(a, b);
            assert_eq!(a.state_hash(), b.state_hash());
            assert_eq!(a.snapshot(), b.snapshot());
        }
        // A snapshot restored into the store decodes its vectors there.
        let restored = Kernel::restore_placed(&heap.snapshot(), Some(Arc::clone(&store))).unwrap();
        assert_eq!(restored, heap);
        if decline == 0 {
            assert_eq!(restored.stored_vector_bytes(), vectors);
        }
        drop(restored);
        let mut heap_later = heap.clone();
        heap_later.apply(&later).unwrap();
        assert_eq!(copy.state_hash(), heap_later.state_hash());
        let query: Vec<Fixed> = (0..dim).map(|j| Fixed((j % 50) << 9)).collect();
        for k in [&placed, &moved, &copy] {
            for tag in [None, Some(1)] {
                let params = SearchParams {
                    k: 10,
                    tag,
                    ef: Some(64),
                };
                assert_eq!(
                    k.search("docs", &query, &params),
                    heap.search("docs", &query, &params)
                );
            }
        }
        // Back on the heap: the store gets everything back once the states are gone.
        moved.place_vectors(None);
        assert_eq!(moved.stored_vector_bytes(), 0);
        assert_eq!(moved.state_hash(), heap.state_hash());
        assert!(out.load(Ordering::SeqCst) > 0);
        drop((placed, copy));
        assert_eq!(out.load(Ordering::SeqCst), 0, "every region given back");
    }
}

fn naive_distance(metric: Metric, a: &[i32], b: &[i32]) -> i128 {
    let dot: i128 = a.iter().zip(b).map(|(&x, &y)| x as i128 * y as i128).sum();
    match metric {
        Metric::L2 | Metric::Cosine => a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as i128 - y as i128).pow(2))
            .sum(),
        Metric::InnerProduct => -dot,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Replaying the log of accepted events rebuilds the identical state.
    #[test]
    fn replay_equals_live(events in prop::collection::vec(event(), 0..60)) {
        let (live, log) = run(&events);
        let mut replayed = Kernel::new();
        for bytes in &log {
            let e = Event::decode(bytes).expect("log entries decode");
            replayed.apply_with(&e, bytes, &valori_kernel::Sequential).expect("log entries apply on replay");
        }
        prop_assert_eq!(replayed.seq(), live.seq());
        prop_assert_eq!(replayed.chain_hash(), live.chain_hash());
        prop_assert_eq!(replayed.state_hash(), live.state_hash());
        prop_assert_eq!(&replayed, &live);
    }

    /// A copy that replays each accepted event from its record stays equal to the copy that
    /// applied it, and both equal a plain apply of the log; refused events are refused by
    /// both.
    #[test]
    fn recorded_replay_equals_apply(events in prop::collection::vec(event(), 0..60)) {
        let exec = valori_kernel::exec::Threads::new(2);
        let mut first = Kernel::new();
        let mut second = Kernel::new();
        for e in &events {
            let encoded = e.encode();
            match first.apply_recorded(e, &encoded, &exec) {
                Ok((applied, replay)) => {
                    prop_assert_eq!(second.replay(e, &encoded, &replay), Ok(applied));
                }
                Err(err) => prop_assert_eq!(second.replay(e, &encoded, &Default::default()), Err(err)),
            }
            prop_assert_eq!(&second, &first);
        }
        prop_assert_eq!(&first, &run(&events).0);
    }

    /// A clone, and a state built apart that adopts the clone's memory
    /// (`share_storage`), each go on applying events exactly as a fresh state would, and
    /// neither changes the state they share their rows with.
    #[test]
    fn shared_states_write_privately(
        events in prop::collection::vec(event(), 0..60),
        later in prop::collection::vec(event(), 0..30),
    ) {
        let (original, _) = run(&events);
        let hash = original.state_hash();
        let mut copy = original.clone();
        let mut apart = run(&events).0;
        prop_assert!(apart.share_storage(&original, Share::Lists));
        prop_assert_eq!(Kernel::held_bytes(&[&original, &copy, &apart]), Kernel::held_bytes(&[&original]));
        for e in &later {
            prop_assert_eq!(copy.apply(e), apart.apply(e));
        }
        let mut all = events.clone();
        all.extend(later.iter().cloned());
        let (expected, _) = run(&all);
        prop_assert_eq!(&copy, &expected);
        prop_assert_eq!(&apart, &expected);
        prop_assert_eq!(copy.state_hash(), expected.state_hash());
        prop_assert_eq!(original.state_hash(), hash);
        prop_assert_eq!(&original, &run(&events).0);
    }

    /// A state whose vectors live in a store (from the start, or moved there halfway) applies
    /// every event exactly as one on the heap, its copies write privately, and it hashes the
    /// same.
    #[test]
    fn stored_vectors_apply_as_the_heap(
        events in prop::collection::vec(event(), 0..60),
        later in prop::collection::vec(event(), 0..20),
    ) {
        let (store, out) = Lender::lend(4);
        let mut placed = Kernel::new();
        placed.place_vectors(Some(Arc::clone(&store)));
        let mut moved = Kernel::new();
        let mut heap = Kernel::new();
        for (i, e) in events.iter().enumerate() {
            if i == events.len() / 2 {
                moved.place_vectors(Some(Arc::clone(&store)));
            }
            let applied = heap.apply(e);
            prop_assert_eq!(placed.apply(e), applied.clone());
            prop_assert_eq!(moved.apply(e), applied);
        }
        let mut copy = placed.clone();
        let before = placed.state_hash();
        for e in &later {
            prop_assert_eq!(copy.apply(e), heap.apply(e));
        }
        prop_assert_eq!(placed.state_hash(), before);
        prop_assert_eq!(&copy, &heap);
        prop_assert_eq!(copy.state_hash(), heap.state_hash());
        prop_assert_eq!(moved.snapshot(), run(&events).0.snapshot());
        drop((placed, moved, copy));
        prop_assert_eq!(out.load(Ordering::SeqCst), 0);
    }

    /// A snapshot restores to the identical state, hash, sequence number and chain.
    #[test]
    fn snapshot_round_trip(events in prop::collection::vec(event(), 0..60)) {
        let (live, _) = run(&events);
        let snap = live.snapshot();
        let restored = Kernel::restore(&snap).expect("restores");
        prop_assert_eq!(restored.state_hash(), live.state_hash());
        prop_assert_eq!(restored.seq(), live.seq());
        prop_assert_eq!(restored.chain_hash(), live.chain_hash());
        prop_assert_eq!(&restored, &live);
        // Applying more events to both keeps them equal (derived indexes were rebuilt right).
        let (mut a, mut b) = (live, restored);
        for e in events.iter().take(10) {
            prop_assert_eq!(a.apply(e).is_ok(), b.apply(e).is_ok());
        }
        prop_assert_eq!(a.state_hash(), b.state_hash());
    }

    /// A snapshot with any byte changed, or cut short, is refused.
    #[test]
    fn damaged_snapshots_are_refused(
        events in prop::collection::vec(event(), 0..30),
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let (live, _) = run(&events);
        let snap = live.snapshot();
        let i = pos.index(snap.len());
        let mut damaged = snap.clone();
        damaged[i] ^= flip;
        prop_assert!(Kernel::restore(&damaged).is_err());
        prop_assert!(Kernel::restore(&snap[..i]).is_err());
        // Damage the body and forge a matching checksum: still refused (state hash).
        let body_start = 8 + 4 + 8 + 32 + 32 + 8;
        if snap.len() > body_start + 32 + 4 {
            let j = body_start + 4 + pos.index(snap.len() - body_start - 36);
            let mut forged = snap.clone();
            forged[j] ^= flip;
            let end = forged.len() - 32;
            let sum = *blake3::hash(&forged[..end]).as_bytes();
            forged[end..].copy_from_slice(&sum);
            prop_assert!(Kernel::restore(&forged).is_err());
        }
    }

    /// decode(encode(e)) == e.
    #[test]
    fn event_codec_round_trip(e in event()) {
        let bytes = e.encode();
        prop_assert_eq!(Event::decode(&bytes), Ok(e));
        // Any strict prefix is refused.
        for cut in 0..bytes.len() {
            prop_assert!(Event::decode(&bytes[..cut]).is_err());
        }
    }

    /// Arbitrary bytes never panic the decoders.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::decode(&bytes);
        let _ = Kernel::restore(&bytes);
        let _ = Kernel::decode_state(&bytes, 0, [0; 32]);
        // With a valid header and checksum around them, too.
        let mut framed = Vec::new();
        framed.extend_from_slice(b"VALORISN");
        framed.extend_from_slice(&1u32.to_le_bytes());
        framed.extend_from_slice(&[0; 8 + 32 + 32]);
        framed.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        framed.extend_from_slice(&bytes);
        let sum = *blake3::hash(&framed).as_bytes();
        framed.extend_from_slice(&sum);
        let _ = Kernel::restore(&framed);
    }

    /// Arbitrary bytes after a valid event prefix never panic either (deeper decoder paths).
    #[test]
    fn mutated_events_never_panic(e in event(), pos in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut bytes = e.encode();
        let i = pos.index(bytes.len());
        bytes[i] = b;
        let _ = Event::decode(&bytes);
    }

    /// Exact search equals a naive reference; a tag filter returns only that tag and every
    /// record of it up to k.
    #[test]
    fn exact_search_matches_reference(
        metric in metric(),
        dim in 1usize..6,
        rows in prop::collection::vec((prop::collection::vec(component(), 6), 0u64..3), 1..50),
        deletes in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        query in prop::collection::vec(component(), 6),
        k in 1u32..12,
        tag in prop::option::of(0u64..3),
    ) {
        let mut kernel = Kernel::new();
        kernel.apply(&Event::CreateCollection(CollectionSpec {
            name: "c".into(), dimension: dim as u32, metric, index: IndexSpec::Flat,
        })).unwrap();
        let records: Vec<NewRecord> = rows.iter().map(|(v, t)| NewRecord {
            vector: v[..dim].iter().map(|&x| Fixed(x)).collect(),
            tag: *t,
            metadata: None,
        }).collect();
        let cosine_zero = |r: &NewRecord| metric == Metric::Cosine && r.vector.iter().all(|x| x.0 == 0);
        let records: Vec<NewRecord> = records.into_iter().filter(|r| !cosine_zero(r)).collect();
        prop_assume!(!records.is_empty());
        kernel.apply(&Event::Insert { collection: "c".into(), records: records.clone() }).unwrap();
        for d in &deletes {
            let _ = kernel.apply(&Event::Delete { collection: "c".into(), id: d.index(records.len()) as u64 });
        }
        let q: Vec<Fixed> = query[..dim].iter().map(|&x| Fixed(x)).collect();
        let q_stored: Vec<i32> = if metric == Metric::Cosine {
            match distance::normalize(&q) {
                Some(n) => n.iter().map(|x| x.0).collect(),
                None => {
                    let refused = kernel.search("c", &q, &SearchParams { k, tag, ef: None }).is_err();
                    prop_assert!(refused);
                    return Ok(());
                }
            }
        } else {
            q.iter().map(|x| x.0).collect()
        };
        let hits = kernel.search("c", &q, &SearchParams { k, tag, ef: None }).unwrap();
        let c = kernel.collection("c").unwrap();
        let mut expected: Vec<(i128, u64)> = c.ids()
            .map(|id| c.get(id).unwrap())
            .filter(|r| tag.is_none_or(|t| r.tag == t))
            .map(|r| (naive_distance(metric, &q_stored, &r.vector), r.id))
            .collect();
        expected.sort();
        expected.truncate(k as usize);
        let got: Vec<(i128, u64)> = hits.iter().map(|h| (h.distance, h.id)).collect();
        prop_assert_eq!(got, expected);
        if let Some(t) = tag {
            for h in &hits {
                prop_assert_eq!(c.get(h.id).unwrap().tag, t);
            }
        }
    }

    /// The narrow (i64) kernels agree with the wide ones whenever the bound admits them.
    #[test]
    fn narrow_equals_wide(
        metric in metric(),
        pair in (1usize..64).prop_flat_map(|d| (
            prop::collection::vec(component(), d),
            prop::collection::vec(component(), d),
        )),
    ) {
        let (a, b) = pair;
        let bound = Bound::new(metric, a.len() as u32, distance::max_abs(&a), distance::max_abs(&b));
        let wide = naive_distance(metric, &a, &b);
        prop_assert_eq!(distance::distance(metric, bound, &a, &b), wide);
        if bound.is_narrow() {
            match metric {
                Metric::L2 => prop_assert_eq!(distance::l2_sq_narrow(&a, &b) as i128, wide),
                _ => prop_assert_eq!(-(distance::dot_narrow(&a, &b) as i128), naive_distance(Metric::InnerProduct, &a, &b)),
            }
        }
    }

    /// The SIMD kernels equal the scalar kernels exactly, across the whole range the narrow
    /// bound admits (including its extremes).
    #[test]
    fn simd_equals_scalar(
        pair in (1usize..300, 0u32..=31).prop_flat_map(|(d, bits)| {
            let hi = (1i64 << bits) - 1;
            let c = prop_oneof![Just(hi), Just(-hi), -hi..=hi].prop_map(|x| x as i32);
            (prop::collection::vec(c.clone(), d), prop::collection::vec(c, d))
        }),
    ) {
        let (a, b) = pair;
        let simd = distance::narrow_kernels();
        let scalar = distance::narrow_kernels_with(true);
        let dim = a.len() as u32;
        let (ma, mb) = (distance::max_abs(&a), distance::max_abs(&b));
        if Bound::new(Metric::L2, dim, ma, mb).is_narrow() {
            prop_assert_eq!((simd.l2)(&a, &b), (scalar.l2)(&a, &b));
            prop_assert_eq!((scalar.l2)(&a, &b) as i128, naive_distance(Metric::L2, &a, &b));
        }
        if Bound::new(Metric::InnerProduct, dim, ma, mb).is_narrow() {
            prop_assert_eq!((simd.dot)(&a, &b), (scalar.dot)(&a, &b));
            prop_assert_eq!(-((scalar.dot)(&a, &b) as i128), naive_distance(Metric::InnerProduct, &a, &b));
        }
    }

    /// The SIMD kernels of the compact copy equal the scalar ones, over the whole compact range
    /// of both widths: [-2^13, 2^13) wide, and the same values shifted to [-2^7, 2^7) narrow.
    #[test]
    fn compact_simd_equals_scalar(
        pair in (1usize..300).prop_flat_map(|d| {
            let c = prop_oneof![Just(i16::LOWEST), Just(i16::HIGHEST), i16::LOWEST..=i16::HIGHEST];
            (prop::collection::vec(c.clone(), d), prop::collection::vec(c, d))
        }),
    ) {
        let (a, b) = pair;
        compact_kernels_agree(&a, &b)?;
        let narrow = |v: &[i16]| v.iter().map(|&x| (x >> 6) as i8).collect::<Vec<i8>>();
        compact_kernels_agree(&narrow(&a), &narrow(&b))?;
    }

    /// Quantisation keeps every stored value inside the compact range, at both widths, and
    /// loses nothing when the copy is exact.
    #[test]
    fn compact_range(vs in prop::collection::vec(prop::collection::vec(component(), 4), 1..40)) {
        compact_quantises_in_range::<i8>(&vs)?;
        compact_quantises_in_range::<i16>(&vs)?;
    }

    /// Two states that differ in one field hash differently.
    #[test]
    fn one_field_changes_the_hash(
        rows in prop::collection::vec((prop::collection::vec(component(), 3), 0u64..4, prop::collection::vec(any::<u8>(), 1..4)), 1..8),
        which in any::<prop::sample::Index>(),
        field in 0u8..6,
        delta in 1i32..1000,
    ) {
        let build = |rows: &[(Vec<i32>, u64, Vec<u8>)], edge: (u64, u64, &str)| {
            let mut k = Kernel::new();
            k.apply(&Event::CreateCollection(CollectionSpec {
                name: "c".into(), dimension: 3, metric: Metric::L2, index: IndexSpec::Flat,
            })).unwrap();
            k.apply(&Event::Insert {
                collection: "c".into(),
                records: rows.iter().map(|(v, t, m)| NewRecord {
                    vector: v.iter().map(|&x| Fixed(x)).collect(),
                    tag: *t,
                    metadata: Some(m.clone()),
                }).collect(),
            }).unwrap();
            for kind in ["x", "y", "z"] {
                k.apply(&Event::CreateNode { kind: kind.into(), record: None, properties: None }).unwrap();
            }
            k.apply(&Event::CreateEdge { from: edge.0, to: edge.1, kind: edge.2.into() }).unwrap();
            k
        };
        let base = build(&rows, (0, 1, "e"));
        let i = which.index(rows.len());
        let mut changed = rows.clone();
        let mut edge = (0, 1, "e");
        match field {
            0 => changed[i].0[0] = changed[i].0[0].wrapping_add(delta),
            1 => changed[i].0[2] = changed[i].0[2].wrapping_sub(delta),
            2 => changed[i].1 ^= delta as u64,
            3 => changed[i].2[0] ^= delta as u8 | 1,
            4 => edge.1 = 2,
            _ => edge.2 = "f",
        }
        let other = build(&changed, edge);
        prop_assert_ne!(base.state_hash(), other.state_hash());
    }
}

/// Every instruction set a compact kernel is written for (a CPU without one runs the widest
/// below it, so on this machine some may repeat).
const ISAS: [compact::Isa; 3] = [
    compact::Isa::Avx2,
    compact::Isa::Avx512,
    compact::Isa::Avx512Vnni,
];

/// `sum((a_i + 128) * b_i)`, the flipped dot product, by its definition.
fn flipped_reference<C: Component>(a: &[C], b: &[C]) -> i64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x.into() + 128) * y.into())
        .sum()
}

/// Every SIMD kernel of width `C` equals the scalar one on `a` and `b`, and the scalar squared
/// L2 equals the full-width reference.
fn compact_kernels_agree<C: Component + core::fmt::Debug>(
    a: &[C],
    b: &[C],
) -> Result<(), TestCaseError> {
    let scalar = compact::kernels_with::<C>(true);
    for isa in ISAS {
        let simd = C::kernels_for(isa);
        prop_assert_eq!((simd.l2)(a, b), (scalar.l2)(a, b), "{:?}", isa);
        prop_assert_eq!((simd.dot)(a, b), (scalar.dot)(a, b), "{:?}", isa);
        if let Some(flipped_dot) = simd.flipped_dot {
            prop_assert_eq!(flipped_dot(a, b), flipped_reference(a, b), "{:?}", isa);
        }
    }
    let wide = |v: &[C]| v.iter().map(|&x| x.into() as i32).collect::<Vec<i32>>();
    prop_assert_eq!(
        (scalar.l2)(a, b) as i128,
        naive_distance(Metric::L2, &wide(a), &wide(b))
    );
    Ok(())
}

/// Quantising vectors `vs` at width `C` stays in the compact range, and loses nothing when
/// exact.
fn compact_quantises_in_range<C: Component + core::fmt::Display>(
    vs: &[Vec<i32>],
) -> Result<(), TestCaseError> {
    let mut magnitudes = [0u64; 33];
    for v in vs {
        magnitudes[compact::bit_length(distance::max_abs(v))] += 1;
    }
    let v = vs.concat();
    let bits = v.iter().fold(0u32, |a, &x| a | x as u32);
    let (shift, exact) = compact::choose::<C>(&magnitudes, bits);
    let mut out: Vec<C> = Vec::new();
    compact::quantize_into::<C>(&v, shift, &mut out);
    for (&c, &x) in out.iter().zip(&v) {
        prop_assert!(
            (C::LOWEST.into()..=C::HIGHEST.into()).contains(&c.into()),
            "{} from {}",
            c,
            x
        );
        if exact {
            prop_assert_eq!(c.into() << shift, i64::from(x));
        }
    }
    Ok(())
}

/// Every compact kernel at the extremes of the compact range, where its `i32` lanes come
/// closest to overflowing: long runs of the largest differences and products, over lengths
/// that take each kernel's wide loop, its narrow loop, its scalar tail, and (narrow) more than
/// one of its `i32` blocks.
#[test]
fn compact_kernels_at_the_range_extremes() {
    extremes::<i8>();
    extremes::<i16>();
}

fn extremes<C: Component>() {
    let scalar = compact::kernels_with::<C>(true);
    let (low, high) = (C::LOWEST.into(), C::HIGHEST.into());
    for dim in [
        1usize, 15, 16, 17, 31, 32, 63, 64, 65, 127, 128, 129, 256, 300, 384, 4096, 9000,
    ] {
        let lo = vec![C::LOWEST; dim];
        let hi = vec![C::HIGHEST; dim];
        let mixed: Vec<C> = (0..dim)
            .map(|i| if i % 3 == 0 { C::HIGHEST } else { C::LOWEST })
            .collect();
        for isa in ISAS {
            let k = C::kernels_for(isa);
            for (a, b) in [
                (&lo, &hi),
                (&hi, &lo),
                (&lo, &lo),
                (&hi, &hi),
                (&mixed, &lo),
            ] {
                assert_eq!((k.l2)(a, b), (scalar.l2)(a, b), "{isa:?} l2, dim {dim}");
                assert_eq!((k.dot)(a, b), (scalar.dot)(a, b), "{isa:?} dot, dim {dim}");
                if let Some(flipped_dot) = k.flipped_dot {
                    assert_eq!(
                        flipped_dot(a, b),
                        flipped_reference(a, b),
                        "{isa:?} flipped dot, dim {dim}"
                    );
                }
            }
            assert_eq!((k.l2)(&lo, &hi), dim as i64 * (high - low) * (high - low));
            assert_eq!((k.dot)(&lo, &lo), dim as i64 * low * low);
        }
    }
}

/// The compact copy is narrow unless vectors are short or only the wide copy is exact.
#[test]
fn compact_width_rule() {
    use compact::Width::{Narrow, Wide};
    let int = |v: u32| v << 16;
    let frac = 1; // a component with the finest fractional part
    let one = |max_abs: u32| {
        let mut m = [0u64; 33];
        m[compact::bit_length(max_abs)] = 1;
        m
    };
    for (dim, max_abs, or_bits, width, exact) in [
        (128, int(255), int(255), Wide, true), // SIFT-like integers: exact only when wide
        (128, int(127), int(127), Narrow, true), // small integers: exact when narrow too
        (128, int(255), int(255) | frac, Narrow, false), // real-valued data
        (384, 0x4000, 0x7fff, Narrow, false),  // unit vectors
        (63, 0x4000, 0x7fff, Wide, false),     // short vectors stay wide
        (64, 0x4000, 0x7fff, Narrow, false),
    ] {
        let p = compact::params(dim, &one(max_abs), or_bits);
        assert_eq!(
            (p.width, p.exact),
            (width, exact),
            "dim {dim}, max {max_abs:#x}, bits {or_bits:#x}"
        );
    }
}

/// The compact range leaves out at most one vector in 1024: the largest.
#[test]
fn compact_range_saturates_rare_huge_vectors() {
    let mut m = [0u64; 33];
    m[17] = 2047; // components up to about 1.0
    m[25] = 1; // one vector with a component near 256
    assert_eq!(compact::choose::<i8>(&m, u32::MAX), (10, false));
    assert_eq!(compact::choose::<i16>(&m, u32::MAX), (4, false));
    // Integer data stays exact while nothing saturates...
    assert_eq!(compact::choose::<i16>(&m, 1 << 16), (4, false));
    m[25] = 0;
    assert_eq!(compact::choose::<i16>(&m, 1 << 16), (4, true));
    // ...and below 1024 vectors the range covers every vector.
    let mut few = [0u64; 33];
    few[17] = 1022;
    few[25] = 1;
    assert_eq!(compact::choose::<i8>(&few, u32::MAX), (18, false));
    // Three huge vectors in 2050 are too many to leave out.
    m[25] = 3;
    assert_eq!(compact::choose::<i8>(&m, u32::MAX), (18, false));
}

/// The float reference of the Q16.16 conversion: scaling by 2^16 is exact in binary floating
/// point, as is rounding to an integer half to even, so `x * 65536` rounded is the exact
/// answer whenever it lies in range.
#[allow(clippy::float_arithmetic)]
fn fixed_reference(x: f64) -> Result<i32, FixedError> {
    if !x.is_finite() {
        return Err(FixedError::NotFinite);
    }
    let r = (x * 65536.0).round_ties_even();
    if !(-2147483648.0..=2147483647.0).contains(&r) {
        return Err(FixedError::OutOfRange);
    }
    Ok(r as i32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// `Fixed::from_f64` (integer arithmetic on the bits) equals the float reference: any bit
    /// pattern, values across the range, and exact halves and quarters of a unit near its ends.
    #[test]
    #[allow(clippy::float_arithmetic)]
    fn from_f64_equals_the_float_reference(
        x in prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            -40000.0f64..40000.0,
            -2.0f64..2.0,
            (any::<i32>(), 0u8..4).prop_map(|(k, q)| (f64::from(k) + f64::from(q) * 0.25) / 65536.0),
            (-3i64..3, 0u8..8).prop_map(|(k, q)| ((k + (1 << 31)) as f64 + f64::from(q) * 0.125) / 65536.0),
            (-3i64..3, 0u8..8).prop_map(|(k, q)| ((k - (1 << 31)) as f64 - f64::from(q) * 0.125) / 65536.0),
        ],
    ) {
        prop_assert_eq!(Fixed::from_f64(x).map(Fixed::raw), fixed_reference(x), "{:e}", x);
    }
}
