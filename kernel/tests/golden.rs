//! Golden workloads: committed event scripts with their expected hashes and query answers.
//!
//! Each `tests/golden/NAME.workload` is run on a fresh kernel; the transcript (sequence number,
//! chain hash, state hash, and the answer to every query line) must equal
//! `tests/golden/NAME.expected` byte for byte. Any platform must print the same transcript. A
//! change that alters one is a format change: regenerate on purpose with
//! `VALORI_BLESS=1 cargo test -p valori-kernel --test golden` and say so in the commit.
//!
//! Workload lines (`#` starts a comment):
//! ```text
//! create NAME dim=D metric=l2|ip|cosine index=flat|hnsw[:M,EFC,EFS]
//! drop NAME
//! insert COLL tag=T [meta=HEX] vec=F,F,...      one record (floats go through Fixed::from_f32;
//!                                                raw:N gives the raw Q16.16 value N)
//! batch COLL                                     then record lines "tag=.. vec=..", then "end"
//! gen COLL count=N seed=S dim=D [scale=X] [integer=1]
//!                                                one insert of N generated records: record i has
//!                                                vector gen:S+i:D:X (its components truncated to
//!                                                integers with integer=1) and tag i % 4
//! delete COLL ID
//! node KIND [record=COLL:ID | recordkey=COLL:KEY] [props=HEX]
//! linked NODE                                    prints the live record id its link names now
//! delnode ID | edge FROM TO KIND | deledge ID
//! reject CODE <any line above>                   must fail with that error code, changing nothing
//! search COLL k=K [tag=T] [ef=E] vec=F,...       prints the hits
//!
//! A vector may also be written gen:SEED:DIM[:SCALE]: DIM pseudo-random real-valued components
//! in [-SCALE, SCALE) (SCALE an integer, default 1) with all 16 fractional bits in use.
//! neighbors ID dir=out|in|both [kinds=a,b]       prints the neighbours
//! traverse ID depth=D [dir=..] [kinds=a,b]       prints the visited nodes
//! get COLL ID                                    prints the stored record
//! state                                          prints seq, chain and state hash
//! upsert COLL [mode=insert_only|update_only]    then record lines
//!                                                "key=K [tag=T] vec=.. [payload=JSON] [doc=TEXT]"
//!                                                (no spaces in JSON or TEXT), then "end"
//! delwhere COLL TARGET [max=N]                   TARGET: keys=a,b | ids=1,2 | filter=JSON
//! setpayload COLL TARGET payload=JSON [mode=replace] [max=N]
//! delkeys COLL TARGET fields=a,b [max=N]
//! pindex COLL field=F kind=keyword|integer|bool | dropindex COLL field=F
//! fsearch COLL k=K [tag=T] [exact=1] filter=JSON vec=..   prints the hits
//! count COLL [filter=JSON] | scroll COLL limit=N [after=ID] [filter=JSON]
//! getkey COLL KEY                                prints the record with that key
//! ```
//!
//! Filters are written in the API's JSON shape (`{"must":[{"key":"a","match":{"value":1}}]}`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use valori_kernel::{
    CollectionSpec, Condition, Direction, Event, Filter, Fixed, HnswParams, IndexKind, IndexSpec,
    Kernel, KeyedRecord, Match, Metric, NewRecord, Number, Payload, PayloadMode, Range, RecordRef,
    SearchParams, Target, UpsertMode, Value,
};

/// A JSON value in the kernel's canonical form.
fn value(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::float(n.as_f64().unwrap().to_bits()).expect("finite"),
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(value).collect()),
        J::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), value(v))).collect()),
    }
}

fn payload(s: &str) -> Payload {
    match value(&serde_json::from_str(s).expect("payload JSON")) {
        Value::Object(p) => p,
        other => panic!("payload must be an object, got {other:?}"),
    }
}

fn number(j: &serde_json::Value) -> Number {
    match value(j) {
        Value::Int(i) => Number::Int(i),
        Value::Float(b) => Number::Float(b),
        other => panic!("not a number: {other:?}"),
    }
}

fn condition(j: &serde_json::Value) -> Condition {
    let o = j.as_object().expect("condition object");
    let key = || o["key"].as_str().expect("key").to_string();
    let list = |j: &serde_json::Value| j.as_array().expect("list").iter().map(value).collect();
    let u64s = |j: &serde_json::Value| -> Vec<u64> {
        j.as_array()
            .expect("list")
            .iter()
            .map(|x| x.as_u64().expect("u64"))
            .collect()
    };
    if let Some(m) = o.get("match") {
        let m = m.as_object().expect("match");
        let matcher = if let Some(v) = m.get("value") {
            Match::Value(value(v))
        } else if let Some(v) = m.get("any") {
            Match::Any(list(v))
        } else {
            Match::Except(list(&m["except"]))
        };
        Condition::Match {
            key: key(),
            matcher,
        }
    } else if let Some(r) = o.get("range") {
        let b = |n: &str| r.get(n).map(number);
        Condition::Range {
            key: key(),
            range: Range {
                gt: b("gt"),
                gte: b("gte"),
                lt: b("lt"),
                lte: b("lte"),
            },
        }
    } else if let Some(e) = o.get("is_empty") {
        Condition::IsEmpty {
            key: e["key"].as_str().unwrap().into(),
        }
    } else if let Some(e) = o.get("is_null") {
        Condition::IsNull {
            key: e["key"].as_str().unwrap().into(),
        }
    } else if let Some(k) = o.get("has_key") {
        Condition::HasKey(
            k.as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().into())
                .collect(),
        )
    } else if let Some(ids) = o.get("has_id") {
        Condition::HasId(u64s(ids))
    } else if let Some(t) = o.get("tag") {
        Condition::Tag(u64s(&t["any"]))
    } else {
        Condition::Nested(filter_of(j))
    }
}

fn filter_of(j: &serde_json::Value) -> Filter {
    let list = |name: &str| {
        j.get(name)
            .map(|l| l.as_array().expect("list").iter().map(condition).collect())
            .unwrap_or_default()
    };
    Filter {
        must: list("must"),
        should: list("should"),
        must_not: list("must_not"),
    }
}

fn filter(opts: &Opts<'_>) -> Filter {
    opts.get("filter")
        .map(|f| filter_of(&serde_json::from_str(f).expect("filter JSON")))
        .unwrap_or_default()
}

fn target(opts: &Opts<'_>) -> Target {
    if let Some(keys) = opts.get("keys") {
        Target::Keys(keys.split(',').map(String::from).collect())
    } else if let Some(ids) = opts.get("ids") {
        Target::Ids(ids.split(',').map(|i| i.parse().expect("id")).collect())
    } else {
        Target::Filter(filter(opts))
    }
}

fn keyed(opts: &Opts<'_>) -> KeyedRecord {
    KeyedRecord {
        key: opts.req("key").into(),
        vector: vector(opts.req("vec")),
        tag: opts.get("tag").map_or(0, |t| t.parse().expect("tag")),
        payload: opts.get("payload").map(payload),
        document: opts.get("doc").map(String::from),
        metadata: opts.get("meta").map(unhex),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `key=value` options of a line, after its positional words.
struct Opts<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Opts<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    fn req(&self, key: &str) -> &'a str {
        self.get(key)
            .unwrap_or_else(|| panic!("missing option {key}"))
    }
}

fn split(line: &str) -> (Vec<&str>, Opts<'_>) {
    let mut words = Vec::new();
    let mut opts = Vec::new();
    for w in line.split_whitespace() {
        match w.split_once('=') {
            Some((k, v)) => opts.push((k, v)),
            None => words.push(w),
        }
    }
    (words, Opts(opts))
}

/// `dim` pseudo-random components in `[-scale, scale)`, from `seed` (splitmix64).
fn generated(seed: u64, dim: usize, scale: i32) -> Vec<Fixed> {
    let mut x = seed;
    (0..dim)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            Fixed(((z >> 47) as i32 - 65536) * scale)
        })
        .collect()
}

fn vector(s: &str) -> Vec<Fixed> {
    if let Some(g) = s.strip_prefix("gen:") {
        let p: Vec<&str> = g.split(':').collect();
        let scale = p.get(2).map_or(1, |x| x.parse().expect("scale"));
        return generated(
            p[0].parse().expect("seed"),
            p[1].parse().expect("dim"),
            scale,
        );
    }
    s.split(',')
        .map(|x| match x.strip_prefix("raw:") {
            Some(raw) => Fixed(raw.parse().expect("raw i32")),
            None => Fixed::from_f32(x.parse().expect("float")).expect("representable"),
        })
        .collect()
}

fn record(opts: &Opts<'_>) -> NewRecord {
    NewRecord {
        vector: vector(opts.req("vec")),
        tag: opts.get("tag").map_or(0, |t| t.parse().expect("tag")),
        metadata: opts.get("meta").map(unhex),
    }
}

fn direction(opts: &Opts<'_>) -> Direction {
    match opts.get("dir").unwrap_or("out") {
        "out" => Direction::Out,
        "in" => Direction::In,
        "both" => Direction::Both,
        d => panic!("direction {d}"),
    }
}

fn kinds(opts: &Opts<'_>) -> Vec<String> {
    opts.get("kinds")
        .map(|k| k.split(',').map(String::from).collect())
        .unwrap_or_default()
}

/// Parses an event line; batches consume following lines.
fn event<'a>(words: &[&str], opts: &Opts<'_>, rest: &mut impl Iterator<Item = &'a str>) -> Event {
    match words[0] {
        "create" => {
            let index = match opts.req("index") {
                "flat" => IndexSpec::Flat,
                "hnsw" => IndexSpec::Hnsw(HnswParams::default()),
                p => {
                    let nums: Vec<u16> = p
                        .strip_prefix("hnsw:")
                        .expect("index")
                        .split(',')
                        .map(|n| n.parse().expect("param"))
                        .collect();
                    IndexSpec::Hnsw(HnswParams {
                        m: nums[0],
                        ef_construction: nums[1],
                        ef_search: nums[2],
                    })
                }
            };
            Event::CreateCollection(CollectionSpec {
                name: words[1].into(),
                dimension: opts.req("dim").parse().expect("dim"),
                metric: Metric::parse(opts.req("metric")).expect("metric"),
                index,
            })
        }
        "drop" => Event::DropCollection {
            name: words[1].into(),
        },
        "insert" => Event::Insert {
            collection: words[1].into(),
            records: vec![record(opts)],
        },
        "batch" => {
            let mut records = Vec::new();
            for line in rest.by_ref() {
                let line = line.trim();
                if line == "end" {
                    break;
                }
                records.push(record(&split(line).1));
            }
            Event::Insert {
                collection: words[1].into(),
                records,
            }
        }
        "gen" => {
            let seed: u64 = opts.req("seed").parse().expect("seed");
            let dim: usize = opts.req("dim").parse().expect("dim");
            let scale: i32 = opts.get("scale").map_or(1, |x| x.parse().expect("scale"));
            let count: u64 = opts.req("count").parse().expect("count");
            let integer = opts.get("integer") == Some("1");
            Event::Insert {
                collection: words[1].into(),
                records: (0..count)
                    .map(|i| NewRecord {
                        vector: generated(seed + i, dim, scale)
                            .into_iter()
                            .map(|x| {
                                if integer {
                                    Fixed(x.0 / 65536 * 65536)
                                } else {
                                    x
                                }
                            })
                            .collect(),
                        tag: i % 4,
                        metadata: None,
                    })
                    .collect(),
            }
        }
        "delete" => Event::Delete {
            collection: words[1].into(),
            id: words[2].parse().expect("id"),
        },
        "node" => Event::CreateNode {
            kind: words[1].into(),
            record: match (opts.get("record"), opts.get("recordkey")) {
                (Some(r), None) => {
                    let (c, id) = r.split_once(':').expect("COLL:ID");
                    Some(RecordRef::Id {
                        collection: c.into(),
                        id: id.parse().expect("id"),
                    })
                }
                (None, Some(r)) => {
                    let (c, key) = r.split_once(':').expect("COLL:KEY");
                    Some(RecordRef::Key {
                        collection: c.into(),
                        key: key.into(),
                    })
                }
                (None, None) => None,
                _ => panic!("record= or recordkey=, not both"),
            },
            properties: opts.get("props").map(unhex),
        },
        "delnode" => Event::DeleteNode {
            id: words[1].parse().expect("id"),
        },
        "edge" => Event::CreateEdge {
            from: words[1].parse().expect("from"),
            to: words[2].parse().expect("to"),
            kind: words[3].into(),
        },
        "deledge" => Event::DeleteEdge {
            id: words[1].parse().expect("id"),
        },
        "upsert" => {
            let mut records = Vec::new();
            for line in rest.by_ref() {
                let line = line.trim();
                if line == "end" {
                    break;
                }
                records.push(keyed(&split(line).1));
            }
            Event::Upsert {
                collection: words[1].into(),
                mode: match opts.get("mode") {
                    None => UpsertMode::Upsert,
                    Some("insert_only") => UpsertMode::InsertOnly,
                    Some("update_only") => UpsertMode::UpdateOnly,
                    Some(m) => panic!("mode {m}"),
                },
                records,
            }
        }
        "delwhere" => Event::DeleteRecords {
            collection: words[1].into(),
            target: target(opts),
            max_affected: opts.get("max").map(|m| m.parse().expect("max")),
        },
        "setpayload" => Event::SetPayload {
            collection: words[1].into(),
            target: target(opts),
            payload: payload(opts.req("payload")),
            mode: if opts.get("mode") == Some("replace") {
                PayloadMode::Replace
            } else {
                PayloadMode::Merge
            },
            max_affected: opts.get("max").map(|m| m.parse().expect("max")),
        },
        "delkeys" => Event::DeletePayloadKeys {
            collection: words[1].into(),
            target: target(opts),
            keys: opts.req("fields").split(',').map(String::from).collect(),
            max_affected: opts.get("max").map(|m| m.parse().expect("max")),
        },
        "pindex" => Event::CreatePayloadIndex {
            collection: words[1].into(),
            field: opts.req("field").into(),
            kind: IndexKind::parse(opts.req("kind")).expect("kind"),
        },
        "dropindex" => Event::DropPayloadIndex {
            collection: words[1].into(),
            field: opts.req("field").into(),
        },
        w => panic!("unknown line {w}"),
    }
}

/// A record's key, payload and document as a transcript prints them.
fn describe(r: &valori_kernel::Record<'_>) -> String {
    format!(
        "id={} key={} tag={} payload={:?} doc={}",
        r.id,
        r.key.unwrap_or("-"),
        r.tag,
        r.payload,
        r.document.unwrap_or("-")
    )
}

fn state_line(k: &Kernel, out: &mut String) {
    writeln!(
        out,
        "state seq={} chain={} state={}",
        k.seq(),
        hex(&k.chain_hash()),
        hex(&k.state_hash())
    )
    .unwrap();
}

/// Runs a workload and returns its transcript.
fn run(script: &str) -> String {
    let mut k = Kernel::new();
    let mut out = String::new();
    let mut lines = script.lines();
    while let Some(line) = lines.next() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let (words, opts) = split(line);
        match words[0] {
            "reject" => {
                let code = words[1];
                let e = event(&words[2..], &opts, &mut lines);
                let before = (k.seq(), k.chain_hash(), k.state_hash());
                let err = k.apply(&e).expect_err(line);
                assert_eq!(err.code(), code, "{line}: {err}");
                assert_eq!(before, (k.seq(), k.chain_hash(), k.state_hash()), "{line}");
                writeln!(out, "rejected {code}: {err}").unwrap();
            }
            "search" => {
                let params = SearchParams {
                    k: opts.req("k").parse().unwrap(),
                    tag: opts.get("tag").map(|t| t.parse().unwrap()),
                    ef: opts.get("ef").map(|t| t.parse().unwrap()),
                };
                let hits = k
                    .search(words[1], &vector(opts.req("vec")), &params)
                    .expect(line);
                let hits: Vec<String> = hits
                    .iter()
                    .map(|h| format!("{}:{}", h.id, h.distance))
                    .collect();
                writeln!(out, "search {} => {}", words[1], hits.join(" ")).unwrap();
            }
            "neighbors" => {
                let n = k
                    .neighbors(words[1].parse().unwrap(), direction(&opts), &kinds(&opts))
                    .expect(line);
                let n: Vec<String> = n
                    .iter()
                    .map(|n| {
                        let arrow = if n.outgoing { "->" } else { "<-" };
                        format!("{arrow}{}[{}:{}]", n.node, n.edge, n.kind)
                    })
                    .collect();
                writeln!(out, "neighbors {} => {}", words[1], n.join(" ")).unwrap();
            }
            "traverse" => {
                let t = k
                    .traverse(
                        words[1].parse().unwrap(),
                        opts.req("depth").parse().unwrap(),
                        direction(&opts),
                        &kinds(&opts),
                    )
                    .expect(line);
                let n: Vec<String> = t.nodes.iter().map(|(n, d)| format!("{n}@{d}")).collect();
                writeln!(out, "traverse {} => {}", words[1], n.join(" ")).unwrap();
            }
            "get" => {
                let r = k.get(words[1], words[2].parse().unwrap()).expect(line);
                let v: Vec<String> = r.vector.iter().map(|x| x.to_string()).collect();
                writeln!(
                    out,
                    "get {} {} => tag={} meta={} vec={}",
                    words[1],
                    r.id,
                    r.tag,
                    r.metadata.map_or("-".into(), hex),
                    v.join(",")
                )
                .unwrap();
            }
            "state" => state_line(&k, &mut out),
            "fsearch" => {
                let params = SearchParams {
                    k: opts.req("k").parse().unwrap(),
                    tag: opts.get("tag").map(|t| t.parse().unwrap()),
                    ef: opts.get("ef").map(|t| t.parse().unwrap()),
                };
                let hits = k
                    .search_filtered(
                        words[1],
                        &vector(opts.req("vec")),
                        &params,
                        &filter(&opts),
                        opts.get("exact") == Some("1"),
                        &mut valori_kernel::SearchScratch::new(),
                    )
                    .expect(line);
                let hits: Vec<String> = hits
                    .iter()
                    .map(|h| format!("{}:{}", h.id, h.distance))
                    .collect();
                writeln!(out, "fsearch {} => {}", words[1], hits.join(" ")).unwrap();
            }
            "count" => {
                let n = k.count(words[1], &filter(&opts)).expect(line);
                writeln!(out, "count {} => {n}", words[1]).unwrap();
            }
            "scroll" => {
                let (ids, more) = k
                    .scroll(
                        words[1],
                        &filter(&opts),
                        opts.get("after").map(|a| a.parse().unwrap()),
                        opts.req("limit").parse().unwrap(),
                    )
                    .expect(line);
                writeln!(out, "scroll {} => {ids:?} more={more}", words[1]).unwrap();
            }
            "linked" => {
                let id: u64 = words[1].parse().expect("node id");
                let node = k.graph().node(id).expect(line);
                let link = node.record.as_ref().expect("a node with a link");
                match k.linked_record(link) {
                    Some(r) => writeln!(out, "linked {id} => {r}").unwrap(),
                    None => writeln!(out, "linked {id} => none").unwrap(),
                }
            }
            "getkey" => {
                let id = k.collection(words[1]).expect(line).id_of(words[2]);
                match id {
                    Some(id) => {
                        let r = k.get(words[1], id).expect(line);
                        writeln!(out, "getkey {} => {}", words[2], describe(&r)).unwrap();
                    }
                    None => writeln!(out, "getkey {} => missing", words[2]).unwrap(),
                }
            }
            _ => {
                let e = event(&words, &opts, &mut lines);
                k.apply(&e).unwrap_or_else(|err| panic!("{line}: {err}"));
            }
        }
    }
    state_line(&k, &mut out);
    // The snapshot of the final state: its bytes are part of the format, and it restores to
    // the identical state.
    let snapshot = k.snapshot();
    writeln!(
        out,
        "snapshot blake3={}",
        hex(blake3::hash(&snapshot).as_bytes())
    )
    .unwrap();
    let restored = Kernel::restore(&snapshot).expect("snapshot restores");
    assert_eq!(restored.state_hash(), k.state_hash());
    assert_eq!(restored, k);
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_workloads() {
    let bless = std::env::var_os("VALORI_BLESS").is_some();
    let mut workloads: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "workload"))
        .collect();
    workloads.sort();
    assert!(
        workloads.len() >= 3,
        "expected at least three golden workloads"
    );
    let mut failures = Vec::new();
    for w in &workloads {
        let got = run(&std::fs::read_to_string(w).unwrap());
        let expected_path = w.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with VALORI_BLESS=1",
                expected_path.display()
            )
        });
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                w.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch:\n{}",
        failures.join("\n")
    );
}

/// The same workload run twice in one process gives the same transcript (no hidden state).
#[test]
fn golden_runs_are_repeatable() {
    let w = golden_dir().join("graph.workload");
    let script = std::fs::read_to_string(w).unwrap();
    assert_eq!(run(&script), run(&script));
}
