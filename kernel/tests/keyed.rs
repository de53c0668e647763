//! Keys, payloads, filters and writes by target: filtered search against a brute-force
//! filter-then-rank, scroll and count against brute force, and the determinism rules (replay,
//! thread counts, snapshots) with keyed state.

use proptest::prelude::*;
use valori_kernel::exec::Threads;
use valori_kernel::{
    CollectionSpec, Condition, Event, Filter, Fixed, HnswParams, IndexKind, IndexSpec, Kernel,
    KeyedRecord, Match, Metric, Number, Payload, Range, SearchParams, SearchScratch, Target,
    UpsertMode, Value,
};

fn spec(name: &str, index: IndexSpec, dim: u32) -> Event {
    Event::CreateCollection(CollectionSpec {
        name: name.into(),
        dimension: dim,
        metric: Metric::L2,
        index,
    })
}

fn small_hnsw() -> IndexSpec {
    IndexSpec::Hnsw(HnswParams {
        m: 4,
        ef_construction: 16,
        ef_search: 16,
    })
}

/// A payload from a small domain so that filters match some records and not others.
fn payload_of(user: u8, n: i64, half: bool, tags: &[u8], null: bool) -> Payload {
    let mut p = Payload::new();
    p.insert("user".into(), Value::String(format!("u{user}")));
    let n = if half {
        Value::float((n as f64 + 0.5).to_bits()).unwrap()
    } else {
        Value::Int(n)
    };
    p.insert("n".into(), n);
    p.insert(
        "tags".into(),
        Value::Array(
            tags.iter()
                .map(|t| Value::String(format!("t{t}")))
                .collect(),
        ),
    );
    if null {
        p.insert("maybe".into(), Value::Null);
    }
    p
}

fn record_strategy(dim: usize) -> impl Strategy<Value = (Vec<i32>, u64, Option<Payload>)> {
    (
        prop::collection::vec(-8i32..8, dim),
        0u64..3,
        prop::option::weighted(
            0.9,
            (
                0u8..4,
                -3i64..4,
                any::<bool>(),
                prop::collection::vec(0u8..3, 0..3),
                any::<bool>(),
            )
                .prop_map(|(u, n, h, t, z)| payload_of(u, n, h, &t, z)),
        ),
    )
        .prop_map(|(v, tag, p)| (v.into_iter().map(|x| x << 14).collect(), tag, p))
}

fn condition_leaf() -> impl Strategy<Value = Condition> {
    let user = (0u8..5).prop_map(|u| Value::String(format!("u{u}")));
    let num = (-4i64..5).prop_map(Number::Int);
    prop_oneof![
        user.clone().prop_map(|v| Condition::Match {
            key: "user".into(),
            matcher: Match::Value(v)
        }),
        prop::collection::vec(user.clone(), 1..3).prop_map(|vs| Condition::Match {
            key: "user".into(),
            matcher: Match::Any(vs)
        }),
        prop::collection::vec(user, 1..3).prop_map(|vs| Condition::Match {
            key: "user".into(),
            matcher: Match::Except(vs)
        }),
        (0u8..3).prop_map(|t| Condition::Match {
            key: "tags".into(),
            matcher: Match::Value(Value::String(format!("t{t}")))
        }),
        (prop::option::of(num.clone()), prop::option::of(num))
            .prop_filter("a bound", |(a, b)| a.is_some() || b.is_some())
            .prop_map(|(gte, lt)| Condition::Range {
                key: "n".into(),
                range: Range {
                    gte,
                    lt,
                    ..Range::default()
                }
            }),
        Just(Condition::IsEmpty { key: "tags".into() }),
        Just(Condition::IsNull {
            key: "maybe".into()
        }),
        prop::collection::vec(0u64..3, 1..3).prop_map(Condition::Tag),
        prop::collection::vec(0u64..60, 1..8).prop_map(Condition::HasId),
        prop::collection::vec((0u32..60).prop_map(|k| format!("k{k}")), 1..8)
            .prop_map(Condition::HasKey),
    ]
}

fn filter_strategy() -> impl Strategy<Value = Filter> {
    let leaf_filter = (
        prop::collection::vec(condition_leaf(), 0..3),
        prop::collection::vec(condition_leaf(), 0..2),
        prop::collection::vec(condition_leaf(), 0..2),
    )
        .prop_map(|(must, should, must_not)| Filter {
            must,
            should,
            must_not,
        });
    leaf_filter.prop_recursive(2, 8, 2, |inner| {
        (
            prop::collection::vec(
                prop_oneof![condition_leaf(), inner.prop_map(Condition::Nested)],
                0..3,
            ),
            prop::collection::vec(condition_leaf(), 0..2),
        )
            .prop_map(|(must, must_not)| Filter {
                must,
                should: vec![],
                must_not,
            })
    })
}

/// A kernel with one collection filled by upserts (some keys written twice, some records
/// deleted) and the given payload indexes.
fn build(
    index: IndexSpec,
    records: &[(Vec<i32>, u64, Option<Payload>)],
    indexes: &[(&str, IndexKind)],
) -> Kernel {
    let mut k = Kernel::new();
    k.apply(&spec("c", index, 4)).unwrap();
    for (field, kind) in indexes {
        k.apply(&Event::CreatePayloadIndex {
            collection: "c".into(),
            field: (*field).into(),
            kind: *kind,
        })
        .unwrap();
    }
    for (chunk_no, chunk) in records.chunks(16).enumerate() {
        let batch: Vec<KeyedRecord> = chunk
            .iter()
            .enumerate()
            .map(|(i, (v, tag, p))| KeyedRecord {
                // Later chunks rewrite some earlier keys.
                key: format!("k{}", (chunk_no * 16 + i) % 50),
                vector: v.iter().map(|&x| Fixed(x)).collect(),
                tag: *tag,
                payload: p.clone(),
                document: None,
                metadata: None,
            })
            .collect();
        k.apply(&Event::Upsert {
            collection: "c".into(),
            mode: UpsertMode::Upsert,
            records: batch,
        })
        .unwrap();
    }
    k.apply(&Event::DeleteRecords {
        collection: "c".into(),
        target: Target::Keys(vec!["k3".into(), "k7".into()]),
        max_affected: None,
    })
    .unwrap();
    k
}

/// Brute force: every live record ranked by exact distance, then filtered, then cut to k.
fn brute(k: &Kernel, query: &[i32], filter: &Filter, limit: usize) -> Vec<(i128, u64)> {
    let c = k.collection("c").unwrap();
    c.search_exact(query, c.len() as usize + 1, None)
        .into_iter()
        .filter(|h| c.matches(h.id, filter))
        .take(limit)
        .map(|h| (h.distance, h.id))
        .collect()
}

fn indexes_strategy() -> impl Strategy<Value = Vec<(&'static str, IndexKind)>> {
    prop::sample::subsequence(
        vec![
            ("user", IndexKind::Keyword),
            ("tags", IndexKind::Keyword),
            ("n", IndexKind::Integer),
        ],
        0..=3,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Filtered search equals filtering then ranking by brute force: exactly on a flat
    /// collection and with `exact`; on an index, every hit matches and there are exactly
    /// min(k, matches) of them. Count and scroll agree with brute force; scroll visits every
    /// match exactly once whatever the page size.
    #[test]
    fn filtered_reads_equal_brute_force(
        records in prop::collection::vec(record_strategy(4), 1..70),
        filter in filter_strategy(),
        indexes in indexes_strategy(),
        query in prop::collection::vec(-8i32..8, 4),
        k in 1usize..12,
        page in 1usize..7,
        hnsw in any::<bool>(),
    ) {
        let index = if hnsw { small_hnsw() } else { IndexSpec::Flat };
        let kernel = build(index, &records, &indexes);
        let query: Vec<Fixed> = query.into_iter().map(|x| Fixed(x << 14)).collect();
        let raw: Vec<i32> = query.iter().map(|f| f.0).collect();
        let all = brute(&kernel, &raw, &filter, usize::MAX);
        let expected: Vec<(i128, u64)> = all.iter().copied().take(k).collect();
        let params = SearchParams { k: k as u32, tag: None, ef: None };
        let mut scratch = SearchScratch::new();
        for exact in [false, true] {
            let got: Vec<(i128, u64)> = kernel
                .search_filtered("c", &query, &params, &filter, exact, &mut scratch)
                .unwrap()
                .into_iter()
                .map(|h| (h.distance, h.id))
                .collect();
            if exact || !hnsw {
                prop_assert_eq!(&got, &expected);
            } else {
                let c = kernel.collection("c").unwrap();
                prop_assert_eq!(got.len(), expected.len());
                prop_assert!(got.iter().all(|&(_, id)| c.matches(id, &filter)));
                prop_assert!(got.windows(2).all(|w| w[0] <= w[1]));
            }
        }
        prop_assert_eq!(kernel.count("c", &filter).unwrap(), all.len() as u64);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (ids, more) = kernel.scroll("c", &filter, after, page).unwrap();
            prop_assert!(ids.len() <= page);
            seen.extend_from_slice(&ids);
            if !more {
                break;
            }
            prop_assert!(!ids.is_empty());
            after = ids.last().copied();
        }
        let mut want: Vec<u64> = all.iter().map(|&(_, id)| id).collect();
        want.sort_unstable();
        prop_assert_eq!(seen, want);
    }

    /// The same upserts and writes by target give the same state whether applied, recorded and
    /// replayed on a copy, or built with threads; the snapshot restores the identical state.
    #[test]
    fn keyed_state_is_deterministic(
        records in prop::collection::vec(record_strategy(4), 1..60),
        filter in filter_strategy(),
        indexes in indexes_strategy(),
    ) {
        let live = build(small_hnsw(), &records, &indexes);
        let writes = [
            Event::SetPayload {
                collection: "c".into(),
                target: Target::Filter(filter.clone()),
                payload: payload_of(9, 1, false, &[1], false),
                mode: valori_kernel::PayloadMode::Merge,
                max_affected: None,
            },
            Event::DeletePayloadKeys {
                collection: "c".into(),
                target: Target::Ids((0..20).collect()),
                keys: vec!["tags".into()],
                max_affected: None,
            },
            Event::DeleteRecords {
                collection: "c".into(),
                target: Target::Filter(filter),
                max_affected: None,
            },
        ];
        let mut a = live.clone();
        let mut b = live.clone();
        let mut t = live;
        let threads = Threads::new(3);
        for e in &writes {
            let encoded = e.encode();
            let (_, replay) = a.apply_recorded(e, &encoded, &valori_kernel::Sequential).unwrap();
            b.replay(e, &encoded, &replay).unwrap();
            t.apply_with(e, &encoded, &threads).unwrap();
        }
        prop_assert_eq!(a.state_hash(), b.state_hash());
        prop_assert_eq!(a.state_hash(), t.state_hash());
        prop_assert_eq!(&a, &b);
        let restored = Kernel::restore(&a.snapshot()).unwrap();
        prop_assert_eq!(&restored, &a);
    }
}

/// Upserts replayed from their recorded index builds, and built with several threads, give
/// the same bytes as a sequential build.
#[test]
fn upsert_builds_replay_and_thread_to_the_same_state() {
    let records: Vec<KeyedRecord> = (0..400u32)
        .map(|i| KeyedRecord {
            key: format!("key-{}", i % 300),
            vector: (0..8)
                .map(|d| Fixed(((i * 7 + d * 13) % 97) as i32 * 1000 - 48_000))
                .collect(),
            tag: u64::from(i % 3),
            payload: Some(payload_of((i % 4) as u8, i64::from(i), false, &[], false)),
            document: Some(format!("text {i}")),
            metadata: None,
        })
        .collect();
    let mut base = Kernel::new();
    base.apply(&spec("c", small_hnsw(), 8)).unwrap();
    let mut sequential = base.clone();
    let mut replayed = base.clone();
    let mut threaded = base;
    let threads = Threads::new(4);
    for chunk in records.chunks(150) {
        let e = Event::Upsert {
            collection: "c".into(),
            mode: UpsertMode::Upsert,
            records: chunk.to_vec(),
        };
        let encoded = e.encode();
        let (_, replay) = sequential
            .apply_recorded(&e, &encoded, &valori_kernel::Sequential)
            .unwrap();
        replayed.replay(&e, &encoded, &replay).unwrap();
        threaded.apply_with(&e, &encoded, &threads).unwrap();
    }
    assert_eq!(sequential.state_hash(), replayed.state_hash());
    assert_eq!(sequential.state_hash(), threaded.state_hash());
    assert_eq!(sequential.collection("c").unwrap().len(), 300);
}

/// A large filter match (above the exact-scan threshold) goes through the filtered walk:
/// every hit matches, k of them, with or without an index on the field, and with an extra
/// unindexed condition.
#[test]
fn filtered_walks_over_many_matches_are_strict() {
    let n = 15_000u32;
    let mut k = Kernel::new();
    k.apply(&spec("c", small_hnsw(), 4)).unwrap();
    let records: Vec<KeyedRecord> = (0..n)
        .map(|i| {
            let mut p = Payload::new();
            p.insert("g".into(), Value::Int(i64::from(i % 10)));
            p.insert("odd".into(), Value::Bool(i % 2 == 1));
            KeyedRecord {
                key: format!("{i}"),
                vector: (0..4u64)
                    .map(|d| {
                        let mut z = u64::from(i) * 4 + d + 1;
                        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                        Fixed(((z >> 40) % 4001) as i32 * 64 - 128_000)
                    })
                    .collect(),
                tag: 0,
                payload: Some(p),
                document: None,
                metadata: None,
            }
        })
        .collect();
    k.apply(&Event::Upsert {
        collection: "c".into(),
        mode: UpsertMode::Upsert,
        records,
    })
    .unwrap();
    let below = |g: i64| Condition::Range {
        key: "g".into(),
        range: Range {
            lt: Some(Number::Int(g)),
            ..Range::default()
        },
    };
    let is_odd = Condition::Match {
        key: "odd".into(),
        matcher: Match::Value(Value::Bool(true)),
    };
    let filters = [
        Filter {
            must: vec![below(6)],
            ..Filter::default()
        },
        Filter {
            must: vec![is_odd.clone(), below(9)],
            ..Filter::default()
        },
        Filter {
            must: vec![is_odd.clone()],
            must_not: vec![Condition::Match {
                key: "g".into(),
                matcher: Match::Any(vec![Value::Int(1), Value::Int(3)]),
            }],
            ..Filter::default()
        },
    ];
    let query: Vec<Fixed> = [3, -7, 11, 0].iter().map(|&x| Fixed(x << 12)).collect();
    let raw: Vec<i32> = query.iter().map(|f| f.0).collect();
    let mut scratch = SearchScratch::new();
    for indexed in [false, true] {
        if indexed {
            k.apply(&Event::CreatePayloadIndex {
                collection: "c".into(),
                field: "odd".into(),
                kind: IndexKind::Bool,
            })
            .unwrap();
        }
        for f in &filters {
            let matches = k.count("c", f).unwrap();
            assert!(matches > 4096, "{matches}");
            let params = SearchParams {
                k: 20,
                tag: None,
                ef: Some(64),
            };
            let hits = k
                .search_filtered("c", &query, &params, f, false, &mut scratch)
                .unwrap();
            let c = k.collection("c").unwrap();
            assert_eq!(hits.len(), 20);
            assert!(hits.iter().all(|h| c.matches(h.id, f)));
            let exact = brute(&k, &raw, f, 20);
            let found = hits
                .iter()
                .filter(|h| exact.iter().any(|&(_, id)| id == h.id))
                .count();
            assert!(found >= 18, "recall {found}/20 with {f:?}");
        }
    }
}

/// Bad input to an upsert or a payload write is refused and changes nothing.
#[test]
fn bad_payloads_are_refused_and_change_nothing() {
    let mut k = Kernel::new();
    k.apply(&spec("c", IndexSpec::Flat, 2)).unwrap();
    let record = |key: &str, p: Payload| KeyedRecord {
        key: key.into(),
        vector: vec![Fixed(1), Fixed(2)],
        tag: 0,
        payload: Some(p),
        document: None,
        metadata: None,
    };
    let mut deep = Value::Int(0);
    for _ in 0..16 {
        deep = Value::Array(vec![deep]);
    }
    let mut too_deep = Payload::new();
    too_deep.insert("d".into(), deep);
    let mut too_big = Payload::new();
    too_big.insert("s".into(), Value::String("x".repeat(64 * 1024)));
    let mut half = Payload::new();
    half.insert("s".into(), Value::String("x".repeat(40 * 1024)));
    k.apply(&Event::Upsert {
        collection: "c".into(),
        mode: UpsertMode::Upsert,
        records: vec![record("a", half.clone())],
    })
    .unwrap();
    let before = (k.seq(), k.state_hash());
    for p in [too_deep, too_big] {
        let e = Event::Upsert {
            collection: "c".into(),
            mode: UpsertMode::Upsert,
            records: vec![record("b", Payload::new()), record("c", p)],
        };
        assert_eq!(k.apply(&e).unwrap_err().code(), "invalid_payload");
    }
    // A merge that would take a payload over the limit is refused for the whole target.
    let mut other = Payload::new();
    other.insert("t".into(), Value::String("y".repeat(30 * 1024)));
    let e = Event::SetPayload {
        collection: "c".into(),
        target: Target::Keys(vec!["a".into()]),
        payload: other,
        mode: valori_kernel::PayloadMode::Merge,
        max_affected: None,
    };
    assert_eq!(k.apply(&e).unwrap_err().code(), "invalid_payload");
    let long_doc = Event::Upsert {
        collection: "c".into(),
        mode: UpsertMode::Upsert,
        records: vec![KeyedRecord {
            document: Some("d".repeat(64 * 1024 + 1)),
            ..record("d", Payload::new())
        }],
    };
    assert_eq!(k.apply(&long_doc).unwrap_err().code(), "too_large");
    let long_key = Event::Upsert {
        collection: "c".into(),
        mode: UpsertMode::Upsert,
        records: vec![record(&"k".repeat(513), Payload::new())],
    };
    assert_eq!(k.apply(&long_key).unwrap_err().code(), "invalid_key");
    assert_eq!(before, (k.seq(), k.state_hash()));
    // The decoder holds a log to the same bounds.
    for e in [long_doc, long_key] {
        assert!(Event::decode(&e.encode()).is_err());
    }
}
