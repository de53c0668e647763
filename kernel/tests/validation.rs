//! Every validation error: the event is refused with its typed error and the state (sequence
//! number, chain hash, state hash) is unchanged.

use valori_kernel::limits::{MAX_BATCH_RECORDS, MAX_DIMENSION, MAX_METADATA_BYTES};
use valori_kernel::{
    CollectionSpec, Error, Event, Fixed, FixedError, HnswParams, IndexSpec, Kernel, Metric,
    NewRecord, RecordRef, SearchParams,
};

fn spec(name: &str, dimension: u32, metric: Metric) -> Event {
    Event::CreateCollection(CollectionSpec {
        name: name.into(),
        dimension,
        metric,
        index: IndexSpec::Flat,
    })
}

fn rec(v: &[i32]) -> NewRecord {
    NewRecord {
        vector: v.iter().map(|&x| Fixed(x)).collect(),
        tag: 0,
        metadata: None,
    }
}

fn insert(collection: &str, records: Vec<NewRecord>) -> Event {
    Event::Insert {
        collection: collection.into(),
        records,
    }
}

/// A kernel with a 3-d L2 collection "v" holding two records, a cosine collection "cos", and
/// graph nodes 0 and 1 joined by edge 0.
fn populated() -> Kernel {
    let mut k = Kernel::new();
    k.apply(&spec("v", 3, Metric::L2)).unwrap();
    k.apply(&spec("cos", 2, Metric::Cosine)).unwrap();
    k.apply(&insert("v", vec![rec(&[1, 2, 3]), rec(&[4, 5, 6])]))
        .unwrap();
    for _ in 0..2 {
        k.apply(&Event::CreateNode {
            kind: "n".into(),
            record: None,
            properties: None,
        })
        .unwrap();
    }
    k.apply(&Event::CreateEdge {
        from: 0,
        to: 1,
        kind: "e".into(),
    })
    .unwrap();
    k
}

/// Applies `event`, expects `expected`, and checks nothing changed.
fn check(event: Event, expected: Error) {
    let mut k = populated();
    let before = (k.seq(), k.chain_hash(), k.state_hash(), k.clone());
    let err = k.apply(&event).expect_err("event must be refused");
    assert_eq!(err, expected);
    assert_eq!(k.validate(&event), Err(expected));
    assert_eq!(before, (k.seq(), k.chain_hash(), k.state_hash(), k));
}

#[test]
fn collection_errors() {
    check(
        spec("v", 3, Metric::L2),
        Error::CollectionExists { name: "v".into() },
    );
    check(
        spec("", 3, Metric::L2),
        Error::InvalidName { name: "".into() },
    );
    check(
        spec("has space", 3, Metric::L2),
        Error::InvalidName {
            name: "has space".into(),
        },
    );
    let long = "x".repeat(129);
    check(
        spec(&long, 3, Metric::L2),
        Error::InvalidName { name: long.clone() },
    );
    check(
        spec("w", 0, Metric::L2),
        Error::InvalidDimension {
            dimension: 0,
            max: MAX_DIMENSION,
        },
    );
    check(
        spec("w", MAX_DIMENSION + 1, Metric::L2),
        Error::InvalidDimension {
            dimension: MAX_DIMENSION + 1,
            max: MAX_DIMENSION,
        },
    );
    check(
        Event::CreateCollection(CollectionSpec {
            name: "w".into(),
            dimension: 3,
            metric: Metric::L2,
            index: IndexSpec::Hnsw(HnswParams {
                m: 1,
                ..HnswParams::default()
            }),
        }),
        Error::InvalidIndexParams {
            param: "m",
            value: 1,
            min: 2,
            max: 128,
        },
    );
    check(
        Event::DropCollection { name: "w".into() },
        Error::CollectionNotFound { name: "w".into() },
    );
}

#[test]
fn insert_errors() {
    check(
        insert("v", vec![rec(&[1, 2])]),
        Error::DimensionMismatch {
            expected: 3,
            got: 2,
            position: 0,
        },
    );
    // The bad record is named by its position; the good ones before it are not applied.
    check(
        insert(
            "v",
            vec![rec(&[1, 2, 3]), rec(&[1, 2, 3]), rec(&[1, 2, 3, 4])],
        ),
        Error::DimensionMismatch {
            expected: 3,
            got: 4,
            position: 2,
        },
    );
    check(
        insert("nope", vec![rec(&[1, 2, 3])]),
        Error::CollectionNotFound {
            name: "nope".into(),
        },
    );
    check(insert("v", vec![]), Error::EmptyBatch);
    let mut big = rec(&[1, 2, 3]);
    big.metadata = Some(vec![0; MAX_METADATA_BYTES as usize + 1]);
    check(
        insert("v", vec![big]),
        Error::TooLarge {
            what: "metadata",
            len: u64::from(MAX_METADATA_BYTES) + 1,
            max: u64::from(MAX_METADATA_BYTES),
        },
    );
    check(
        insert("v", vec![rec(&[1, 2, 3]); MAX_BATCH_RECORDS as usize + 1]),
        Error::TooLarge {
            what: "batch (records)",
            len: u64::from(MAX_BATCH_RECORDS) + 1,
            max: u64::from(MAX_BATCH_RECORDS),
        },
    );
    check(
        insert("cos", vec![rec(&[1, 1]), rec(&[0, 0])]),
        Error::ZeroVector { position: 1 },
    );
    // The implicit default collection takes its dimension from the first record, and the
    // whole batch must agree with it.
    check(
        insert("default", vec![rec(&[1, 2]), rec(&[1, 2, 3])]),
        Error::DimensionMismatch {
            expected: 2,
            got: 3,
            position: 1,
        },
    );
    check(
        insert("default", vec![rec(&[])]),
        Error::InvalidDimension {
            dimension: 0,
            max: MAX_DIMENSION,
        },
    );
}

#[test]
fn metadata_at_the_limit_is_accepted() {
    let mut k = populated();
    let mut r = rec(&[1, 2, 3]);
    r.metadata = Some(vec![7; MAX_METADATA_BYTES as usize]);
    k.apply(&insert("v", vec![r])).unwrap();
    assert_eq!(
        k.get("v", 2).unwrap().metadata.map(<[u8]>::len),
        Some(MAX_METADATA_BYTES as usize)
    );
}

#[test]
fn delete_and_graph_errors() {
    check(
        Event::Delete {
            collection: "v".into(),
            id: 2,
        },
        Error::RecordNotFound {
            collection: "v".into(),
            id: 2,
        },
    );
    check(
        Event::Delete {
            collection: "x".into(),
            id: 0,
        },
        Error::CollectionNotFound { name: "x".into() },
    );
    check(
        Event::CreateEdge {
            from: 0,
            to: 7,
            kind: "e".into(),
        },
        Error::NodeNotFound { id: 7 },
    );
    check(
        Event::CreateEdge {
            from: 0,
            to: 1,
            kind: "".into(),
        },
        Error::InvalidKind { len: 0 },
    );
    check(Event::DeleteNode { id: 9 }, Error::NodeNotFound { id: 9 });
    check(Event::DeleteEdge { id: 1 }, Error::EdgeNotFound { id: 1 });
    check(
        Event::CreateNode {
            kind: "n".into(),
            record: Some(RecordRef::Id {
                collection: "v".into(),
                id: 5,
            }),
            properties: None,
        },
        Error::RecordNotFound {
            collection: "v".into(),
            id: 5,
        },
    );
    check(
        Event::CreateNode {
            kind: "n".into(),
            record: None,
            properties: Some(vec![0; MAX_METADATA_BYTES as usize + 1]),
        },
        Error::TooLarge {
            what: "node properties",
            len: u64::from(MAX_METADATA_BYTES) + 1,
            max: u64::from(MAX_METADATA_BYTES),
        },
    );
}

#[test]
fn float_boundary_errors() {
    // Floats are converted before an event exists; bad ones never become events.
    assert_eq!(Fixed::from_f32(f32::NAN), Err(FixedError::NotFinite));
    assert_eq!(Fixed::from_f32(f32::INFINITY), Err(FixedError::NotFinite));
    assert_eq!(Fixed::from_f32(40000.0), Err(FixedError::OutOfRange));
    assert_eq!(
        valori_kernel::fixed::vector_from_f32(&[0.0, 1.0, f32::NEG_INFINITY]),
        Err((2, FixedError::NotFinite))
    );
}

#[test]
fn query_errors() {
    let k = populated();
    let q = [Fixed(0); 3];
    let p = |k: u32| SearchParams {
        k,
        tag: None,
        ef: None,
    };
    assert_eq!(
        k.search("v", &q[..2], &p(1)),
        Err(Error::DimensionMismatch {
            expected: 3,
            got: 2,
            position: 0
        })
    );
    assert!(matches!(
        k.search("v", &q, &p(0)),
        Err(Error::InvalidSearch { .. })
    ));
    assert!(matches!(
        k.search("v", &q, &p(10_001)),
        Err(Error::InvalidSearch { .. })
    ));
    assert_eq!(
        k.search("cos", &[Fixed(0); 2], &p(1)),
        Err(Error::ZeroVector { position: 0 })
    );
    assert_eq!(
        k.search("x", &q, &p(1)),
        Err(Error::CollectionNotFound { name: "x".into() })
    );
    assert!(k.get("v", 9).unwrap_err().is_not_found());
    assert!(k
        .traverse(0, 65, valori_kernel::Direction::Out, &[])
        .is_err());
    assert_eq!(
        k.neighbors(5, valori_kernel::Direction::Out, &[]),
        Err(Error::NodeNotFound { id: 5 })
    );
}
