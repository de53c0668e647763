//! Audits of a history: verify a data directory, a snapshot file or a live node's log by
//! replaying it; find where two histories part; print events for people. The `valori` command
//! (`src/bin/valori.rs`) is a thin shell over these functions.
//!
//! A history is read as it is stored, never trusted: each entry's chain hash is recomputed from
//! its predecessor's and the event's bytes, each event must decode to itself (canonical form)
//! and apply, and each snapshot must verify (checksum, state hash) and agree with the replay
//! at its sequence number. The first failure is reported with its sequence number (or file)
//! and why.

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::Engine as _;
use valori_kernel::exec::Threads;
use valori_kernel::{chain_next, Event, Hash, Kernel, GENESIS_CHAIN};

use crate::store::{map_snapshot, Entry, SnapshotFile, Store};

/// Log entries read at a time.
const AUDIT_PAGE: usize = 1024;

/// Where a history is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A node's data directory (opened read-only).
    Dir(PathBuf),
    /// One snapshot file.
    Snapshot(PathBuf),
    /// A live node's HTTP API.
    Url(String),
}

impl Source {
    /// `http://` and `https://` name a node, a directory a data directory, a file a snapshot.
    pub fn parse(s: &str) -> Result<Source, String> {
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Source::Url(s.trim_end_matches('/').to_string()));
        }
        let p = PathBuf::from(s);
        if p.is_dir() {
            Ok(Source::Dir(p))
        } else if p.is_file() {
            Ok(Source::Snapshot(p))
        } else {
            Err(format!("{s}: no such directory, file or URL"))
        }
    }

    /// How reports name it.
    pub fn name(&self) -> String {
        match self {
            Source::Dir(p) | Source::Snapshot(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
        }
    }
}

/// What went wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The sequence number of the first bad entry, when it is one.
    pub seq: Option<u64>,
    /// The file at fault, when it is one (a snapshot).
    pub file: Option<String>,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.seq) {
            (Some(file), Some(seq)) => write!(f, "{file} (seq {seq}): {}", self.reason),
            (Some(file), None) => write!(f, "{file}: {}", self.reason),
            (None, Some(seq)) => write!(f, "seq {seq}: {}", self.reason),
            (None, None) => f.write_str(&self.reason),
        }
    }
}

fn at_seq(seq: u64, reason: impl Into<String>) -> Problem {
    Problem {
        seq: Some(seq),
        file: None,
        reason: reason.into(),
    }
}

fn plain(reason: impl Into<String>) -> Problem {
    Problem {
        seq: None,
        file: None,
        reason: reason.into(),
    }
}

/// The entries and snapshots of a history, read into memory in order (entries stream from the
/// store or the node page by page; snapshots are read when reached).
pub struct History {
    /// How reports name it.
    pub name: String,
    /// Its snapshots (for a directory or a snapshot file), by sequence number.
    pub snapshots: Vec<SnapshotFile>,
    entries: Box<dyn Iterator<Item = Result<Entry, Problem>>>,
    /// The first entry, read ahead.
    peeked: Option<Result<Entry, Problem>>,
}

impl History {
    /// Opens a source for reading.
    pub fn open(source: &Source) -> Result<History, Problem> {
        match source {
            Source::Dir(dir) => {
                let store = Store::open_read_only(dir).map_err(|e| plain(e.to_string()))?;
                let snapshots = if dir.join("snapshots").is_dir() {
                    store
                        .snapshots()
                        .map_err(|e| plain(format!("listing the snapshots: {e}")))?
                } else {
                    Vec::new()
                };
                // Read a page at a time, so memory stays bounded whatever the log's length.
                let mut next = 0u64;
                let mut page: std::vec::IntoIter<Entry> = Vec::new().into_iter();
                let mut done = false;
                let entries = std::iter::from_fn(move || loop {
                    if let Some(e) = page.next() {
                        next = e.seq + 1;
                        return Some(Ok(e));
                    }
                    if done {
                        return None;
                    }
                    let got: Result<Vec<Entry>, _> =
                        store.entries_from(next).take(AUDIT_PAGE).collect();
                    match got {
                        Err(e) => {
                            done = true;
                            return Some(Err(plain(format!("reading the log: {e}"))));
                        }
                        Ok(v) if v.is_empty() => return None,
                        Ok(v) => {
                            done = v.len() < AUDIT_PAGE;
                            page = v.into_iter();
                        }
                    }
                });
                Ok(History::of(source.name(), snapshots, entries))
            }
            Source::Snapshot(path) => {
                let bytes = map_snapshot(path)
                    .map_err(|e| plain(format!("reading {}: {e}", path.display())))?;
                let (info, _) = valori_kernel::snapshot::verify(&bytes).map_err(|e| Problem {
                    seq: None,
                    file: Some(path.display().to_string()),
                    reason: format!("not a valid snapshot: {e}"),
                })?;
                let file = SnapshotFile {
                    seq: info.seq,
                    path: path.clone(),
                    bytes: bytes.len() as u64,
                };
                Ok(History::of(source.name(), vec![file], std::iter::empty()))
            }
            Source::Url(url) => Ok(History::of(
                source.name(),
                Vec::new(),
                remote_entries(url.clone())?,
            )),
        }
    }

    fn of(
        name: String,
        snapshots: Vec<SnapshotFile>,
        entries: impl Iterator<Item = Result<Entry, Problem>> + 'static,
    ) -> History {
        let mut entries: Box<dyn Iterator<Item = Result<Entry, Problem>>> = Box::new(entries);
        let peeked = entries.next();
        History {
            name,
            snapshots,
            entries,
            peeked,
        }
    }

    /// The first retained sequence number, if the log holds any entry.
    pub fn first_seq(&self) -> Option<u64> {
        match &self.peeked {
            Some(Ok(e)) => Some(e.seq),
            _ => None,
        }
    }

    /// The next entry.
    pub fn next_entry(&mut self) -> Option<Result<Entry, Problem>> {
        let next = self.peeked.take();
        self.peeked = self.entries.next();
        next
    }
}

/// A client of the node at `url` (its key from `VALORI_API_KEY`) and a runtime to drive it.
fn node_client(url: &str) -> Result<(tokio::runtime::Runtime, valori_client::Client), Problem> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| plain(format!("starting a runtime: {e}")))?;
    let client = valori_client::Client::new(
        url,
        std::env::var("VALORI_API_KEY").ok(),
        &Default::default(),
    )
    .map_err(|e| plain(format!("{url}: {e}")))?;
    Ok((runtime, client))
}

/// A node's log, page by page, through its HTTP API (`/v1/log`).
fn remote_entries(url: String) -> Result<impl Iterator<Item = Result<Entry, Problem>>, Problem> {
    let (runtime, client) = node_client(&url)?;
    let head = runtime
        .block_on(client.state(None))
        .map_err(|e| plain(format!("{url}: {e}")))?
        .seq;
    let mut next = Some(0u64);
    let mut page: std::vec::IntoIter<Entry> = Vec::new().into_iter();
    Ok(std::iter::from_fn(move || loop {
        if let Some(e) = page.next() {
            return Some(Ok(e));
        }
        let from = next?;
        if from > head {
            return None;
        }
        let query = valori_api::LogQuery {
            from,
            limit: valori_api::limits::MAX_LOG_PAGE,
            wait_ms: 0,
        };
        let got = runtime.block_on(client.log(&query, &valori_client::Hello::default()));
        let got = match got {
            Ok(p) => p,
            Err(e) => {
                next = None;
                return Some(Err(plain(format!("{url}: reading the log: {e}"))));
            }
        };
        next = got.next;
        if got.entries.is_empty() {
            return None;
        }
        let mut entries = Vec::with_capacity(got.entries.len());
        for e in got.entries {
            let chain = hex::decode(&e.chain_hash)
                .ok()
                .and_then(|c| <[u8; 32]>::try_from(c).ok());
            let event = base64::engine::general_purpose::STANDARD
                .decode(&e.event)
                .ok();
            match (chain, event) {
                (Some(chain), Some(event)) => entries.push(Entry {
                    seq: e.seq,
                    chain,
                    event,
                    epoch: e.epoch,
                }),
                _ => {
                    next = None;
                    return Some(Err(at_seq(e.seq, "the node sent a malformed entry")));
                }
            }
        }
        page = entries.into_iter();
    }))
}

/// The outcome of a verification.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verified {
    /// The history verified.
    pub source: String,
    /// Where the replay began: 0 for the empty state, else a snapshot's sequence number.
    pub replayed_from: u64,
    /// Entries checked.
    pub events: u64,
    /// Snapshots checked (their sequence numbers).
    pub snapshots: Vec<u64>,
    /// The sequence number reached.
    pub seq: u64,
    /// Chain hash at `seq`, hex.
    pub chain_hash: String,
    /// State hash at `seq`, hex.
    pub state_hash: String,
    /// The first problem found (the history is good up to `seq` when there is one).
    pub problem: Option<Problem>,
}

impl Verified {
    /// A report of nothing verified yet (or nothing verifiable, with its problem).
    fn nothing(source: String, problem: Option<Problem>) -> Verified {
        Verified {
            source,
            replayed_from: 0,
            events: 0,
            snapshots: Vec::new(),
            seq: 0,
            chain_hash: String::new(),
            state_hash: String::new(),
            problem,
        }
    }
}

fn snapshot_kernel(file: &SnapshotFile) -> Result<Kernel, Problem> {
    let name = file.path.display().to_string();
    let bytes = map_snapshot(&file.path).map_err(|e| Problem {
        seq: Some(file.seq),
        file: Some(name.clone()),
        reason: format!("cannot read it: {e}"),
    })?;
    Kernel::restore(&bytes).map_err(|e| Problem {
        seq: Some(file.seq),
        file: Some(name),
        reason: format!("does not verify: {e}"),
    })
}

/// One entry's checks against the replay so far; applies it on success.
fn check_entry(
    kernel: &mut Kernel,
    prev_chain: &Hash,
    e: &Entry,
    exec: &Threads,
) -> Result<(), Problem> {
    let expected = kernel.seq() + 1;
    if e.seq != expected {
        return Err(at_seq(
            expected,
            format!("missing from the log (the next entry is seq {})", e.seq),
        ));
    }
    if chain_next(prev_chain, &e.event) != e.chain {
        return Err(at_seq(
            e.seq,
            "the stored chain hash does not match the event's bytes and the previous chain hash \
             (the event or the hash was altered)",
        ));
    }
    let event = Event::decode(&e.event)
        .map_err(|err| at_seq(e.seq, format!("the event does not decode: {err}")))?;
    if event.encode() != e.event {
        return Err(at_seq(e.seq, "the event is not in its canonical encoding"));
    }
    kernel
        .apply_with(&event, &e.event, exec)
        .map_err(|err| at_seq(e.seq, format!("the kernel refuses the event: {err}")))?;
    Ok(())
}

/// Replays a history from its start (the empty state, or the snapshot it begins at) through
/// `until` (its end when `None`), checking everything; `on_entry` sees each applied entry.
pub fn replay(
    history: &mut History,
    until: Option<u64>,
    threads: usize,
    on_entry: impl FnMut(&Kernel, &Entry),
) -> (Kernel, Verified) {
    replay_from(history, None, until, threads, on_entry)
}

/// [`replay`], starting from `start` (a snapshot of the history's) when given: what `at` does
/// to reach a seq without replaying what lies before the nearest snapshot.
fn replay_from(
    history: &mut History,
    start: Option<SnapshotFile>,
    until: Option<u64>,
    threads: usize,
    mut on_entry: impl FnMut(&Kernel, &Entry),
) -> (Kernel, Verified) {
    let exec = Threads::new(threads.max(1));
    let mut report = Verified::nothing(history.name.clone(), None);
    let first = history.first_seq();
    let snapshots = history.snapshots.clone();
    // Start: the empty state when the log begins at 1, else the snapshot at the log's start
    // (or the only snapshot, for a snapshot file).
    let mut kernel = Kernel::new();
    let base = match first {
        _ if start.is_some() => start,
        Some(1) => None,
        Some(f) => match snapshots
            .iter()
            .rev()
            .find(|s| s.seq + 1 >= f && s.seq < f.max(1))
        {
            Some(s) => Some(s.clone()),
            None => {
                report.problem = Some(plain(format!(
                    "the log begins at seq {f} and no snapshot holds seq {}: the entries before it are gone",
                    f - 1
                )));
                None
            }
        },
        None => snapshots.last().cloned(),
    };
    if let Some(s) = &base {
        match snapshot_kernel(s) {
            Ok(k) => {
                kernel = k;
                report.replayed_from = s.seq;
                report.snapshots.push(s.seq);
            }
            Err(p) => report.problem = Some(p),
        }
    }
    let mut prev_chain = if kernel.seq() == 0 {
        GENESIS_CHAIN
    } else {
        kernel.chain_hash()
    };
    let mut pending: Vec<SnapshotFile> = snapshots
        .iter()
        .filter(|s| s.seq > kernel.seq())
        .cloned()
        .collect();
    if report.problem.is_none() {
        while let Some(next) = history.next_entry() {
            let e = match next {
                Ok(e) => e,
                Err(p) => {
                    report.problem = Some(p);
                    break;
                }
            };
            if until.is_some_and(|u| e.seq > u) {
                break;
            }
            if e.seq <= kernel.seq() {
                // Before the snapshot the replay started from.
                prev_chain = e.chain;
                continue;
            }
            if let Err(p) = check_entry(&mut kernel, &prev_chain, &e, &exec) {
                report.problem = Some(p);
                break;
            }
            prev_chain = e.chain;
            report.events += 1;
            on_entry(&kernel, &e);
            // A snapshot at this sequence number must hold exactly this state.
            while pending.first().is_some_and(|s| s.seq <= e.seq) {
                let s = pending.remove(0);
                if s.seq < e.seq {
                    continue;
                }
                match snapshot_kernel(&s) {
                    Ok(k) if k.chain_hash() == kernel.chain_hash()
                        && k.state_hash() == kernel.state_hash() =>
                    {
                        report.snapshots.push(s.seq)
                    }
                    Ok(_) => {
                        report.problem = Some(Problem {
                            seq: Some(s.seq),
                            file: Some(s.path.display().to_string()),
                            reason: "the snapshot verifies but holds a different state than the log replays to"
                                .into(),
                        })
                    }
                    Err(p) => report.problem = Some(p),
                }
            }
            if report.problem.is_some() {
                break;
            }
        }
    }
    // A snapshot beyond the log's end: the log lost entries that the snapshot had seen.
    if report.problem.is_none() && until.is_none() {
        if let Some(s) = pending.iter().find(|s| s.seq > kernel.seq()) {
            report.problem = Some(Problem {
                seq: Some(kernel.seq() + 1),
                file: Some(s.path.display().to_string()),
                reason: format!(
                    "the log ends at seq {} but this snapshot holds seq {}: entries are missing",
                    kernel.seq(),
                    s.seq
                ),
            });
        }
    }
    report.seq = kernel.seq();
    report.chain_hash = hex::encode(kernel.chain_hash());
    report.state_hash = hex::encode(kernel.state_hash());
    (kernel, report)
}

/// Verifies a history completely (see [`replay`]); for a live node, also that the node reports
/// the state the replay reached.
pub fn verify(source: &Source, threads: usize) -> Verified {
    let mut history = match History::open(source) {
        Ok(h) => h,
        Err(p) => return Verified::nothing(source.name(), Some(p)),
    };
    let (_, mut report) = replay(&mut history, None, threads, |_, _| {});
    if let (Source::Url(url), None) = (source, &report.problem) {
        if let Some(p) = node_agrees(url, &report) {
            report.problem = Some(p);
        }
    }
    report
}

/// Whether the node reports the chain hash the replay reached (a node that cannot be asked is
/// a problem too: the verdict would otherwise rest on nothing the node said).
fn node_agrees(url: &str, report: &Verified) -> Option<Problem> {
    let (runtime, client) = match node_client(url) {
        Ok(c) => c,
        Err(p) => return Some(p),
    };
    let state = match runtime.block_on(client.state(Some(report.seq))) {
        Ok(s) => s,
        Err(e) => {
            return Some(plain(format!(
                "{url}: asking for the state at {}: {e}",
                report.seq
            )))
        }
    };
    (state.chain_hash != report.chain_hash).then(|| {
        at_seq(
            report.seq,
            format!(
                "the node reports chain hash {} where the replay gives {}",
                state.chain_hash, report.chain_hash
            ),
        )
    })
}

/// Where two histories part.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Diverged {
    /// The two histories.
    pub a: String,
    /// The second.
    pub b: String,
    /// The first sequence number at which they differ (`None`: equal as far as both go).
    pub seq: Option<u64>,
    /// Each side's event there, decoded (absent where that side's log ends).
    pub event_a: Option<String>,
    /// The other side's.
    pub event_b: Option<String>,
    /// Each side's state hash after that event (before it, where that side's log ends).
    pub state_a: Option<String>,
    /// The other side's.
    pub state_b: Option<String>,
    /// The last sequence number of each side.
    pub heads: (u64, u64),
    /// A side that does not verify up to the divergence, and why.
    pub problem: Option<Problem>,
}

/// The first sequence number at which two histories differ, with the events there and the
/// state hashes on each side.
pub fn diff(a: &Source, b: &Source, threads: usize) -> Result<Diverged, Problem> {
    // Each side's chain hashes by sequence number: equal chains mean equal histories up to
    // there, so the first differing chain hash is the first differing event.
    let chains = |s: &Source| -> Result<(u64, Vec<(u64, Hash)>), Problem> {
        let mut h = History::open(s)?;
        let mut out = Vec::new();
        let mut head = 0;
        while let Some(e) = h.next_entry() {
            let e = e?;
            head = e.seq;
            out.push((e.seq, e.chain));
        }
        Ok((head, out))
    };
    let (head_a, ca) = chains(a)?;
    let (head_b, cb) = chains(b)?;
    let mut seq = None;
    let mut ib = cb.iter().peekable();
    for (s, c) in &ca {
        while ib.peek().is_some_and(|(sb, _)| sb < s) {
            ib.next();
        }
        if ib.peek().is_some_and(|(sb, cb)| sb == s && cb != c) {
            seq = Some(*s);
            break;
        }
    }
    if seq.is_none() && head_a != head_b {
        seq = Some(head_a.min(head_b) + 1);
    }
    let mut out = Diverged {
        a: a.name(),
        b: b.name(),
        seq,
        event_a: None,
        event_b: None,
        state_a: None,
        state_b: None,
        heads: (head_a, head_b),
        problem: None,
    };
    if let Some(at) = seq {
        for (side, src) in [(0, a), (1, b)] {
            let mut h = History::open(src)?;
            let mut event = None;
            let (kernel, report) = replay(&mut h, Some(at), threads, |_, e| {
                if e.seq == at {
                    event = Some(describe_bytes(&e.event));
                }
            });
            if let Some(p) = report.problem {
                out.problem.get_or_insert(Problem {
                    reason: format!("{}: {}", src.name(), p.reason),
                    ..p
                });
            }
            let state = Some(hex::encode(kernel.state_hash()));
            if side == 0 {
                (out.event_a, out.state_a) = (event, state);
            } else {
                (out.event_b, out.state_b) = (event, state);
            }
        }
    }
    Ok(out)
}

/// An event's bytes for people.
pub fn describe_bytes(bytes: &[u8]) -> String {
    match Event::decode(bytes) {
        Ok(e) => describe(&e),
        Err(err) => format!("undecodable event ({} bytes): {err}", bytes.len()),
    }
}

fn keys_of(keys: &[String]) -> String {
    let shown: Vec<String> = keys.iter().take(8).map(|k| format!("{k:?}")).collect();
    let more = keys.len().saturating_sub(8);
    if more > 0 {
        format!("[{} and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

fn target_of(t: &valori_kernel::Target) -> String {
    match t {
        valori_kernel::Target::Keys(k) => format!("keys {}", keys_of(k)),
        valori_kernel::Target::Ids(ids) => format!("ids {ids:?}"),
        valori_kernel::Target::Filter(f) => format!("filter {f:?}"),
    }
}

/// An event for people, on one line: what it did, to which collection, keys and ids.
pub fn describe(e: &Event) -> String {
    let mut s = String::new();
    let _ = match e {
        Event::CreateCollection(spec) => write!(
            s,
            "create collection {:?}: {} dimensions, {:?}, {:?}",
            spec.name, spec.dimension, spec.metric, spec.index
        ),
        Event::DropCollection { name } => write!(s, "drop collection {name:?}"),
        Event::Insert {
            collection,
            records,
        } => {
            let tags: std::collections::BTreeSet<u64> = records.iter().map(|r| r.tag).collect();
            write!(
                s,
                "insert into {collection:?}: {} record(s), tags {tags:?}",
                records.len()
            )
        }
        Event::Delete { collection, id } => write!(s, "delete record {id} from {collection:?}"),
        Event::CreateNode {
            kind,
            record,
            properties,
        } => write!(
            s,
            "create graph node {kind:?}{}{}",
            record
                .as_ref()
                .map(|r| format!(" linked to {r:?}"))
                .unwrap_or_default(),
            properties
                .as_ref()
                .map(|p| format!(", {} bytes of properties", p.len()))
                .unwrap_or_default()
        ),
        Event::DeleteNode { id } => write!(s, "delete graph node {id}"),
        Event::CreateEdge { from, to, kind } => {
            write!(s, "create edge {from} -> {to} {kind:?}")
        }
        Event::DeleteEdge { id } => write!(s, "delete edge {id}"),
        Event::Upsert {
            collection,
            mode,
            records,
        } => {
            let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
            write!(
                s,
                "upsert into {collection:?} ({mode:?}): {} record(s), keys {}",
                records.len(),
                keys_of(&keys)
            )
        }
        Event::DeleteRecords {
            collection,
            target,
            max_affected,
        } => write!(
            s,
            "delete records from {collection:?} by {}{}",
            target_of(target),
            max_affected
                .map(|m| format!(", at most {m}"))
                .unwrap_or_default()
        ),
        Event::SetPayload {
            collection,
            target,
            payload,
            mode,
            ..
        } => write!(
            s,
            "set payload ({mode:?}) in {collection:?} by {}: {:?}",
            target_of(target),
            payload
        ),
        Event::DeletePayloadKeys {
            collection,
            target,
            keys,
            ..
        } => write!(
            s,
            "delete payload keys {keys:?} in {collection:?} by {}",
            target_of(target)
        ),
        Event::CreatePayloadIndex {
            collection,
            field,
            kind,
        } => write!(
            s,
            "create payload index {field:?} ({kind:?}) on {collection:?}"
        ),
        Event::DropPayloadIndex { collection, field } => {
            write!(s, "drop payload index {field:?} on {collection:?}")
        }
    };
    s
}

/// Whether an event touches a collection, or a key (for `valori log`'s filters).
pub fn mentions(e: &Event, collection: Option<&str>, key: Option<&str>) -> bool {
    let coll = match e {
        Event::CreateCollection(spec) => Some(spec.name.as_str()),
        Event::DropCollection { name } => Some(name.as_str()),
        Event::Insert { collection, .. }
        | Event::Delete { collection, .. }
        | Event::Upsert { collection, .. }
        | Event::DeleteRecords { collection, .. }
        | Event::SetPayload { collection, .. }
        | Event::DeletePayloadKeys { collection, .. }
        | Event::CreatePayloadIndex { collection, .. }
        | Event::DropPayloadIndex { collection, .. } => Some(collection.as_str()),
        Event::CreateNode { record, .. } => record.as_ref().map(|r| r.collection()),
        _ => None,
    };
    if collection.is_some_and(|c| coll != Some(c)) {
        return false;
    }
    let Some(key) = key else { return true };
    let has = |keys: &[String]| keys.iter().any(|k| k == key);
    match e {
        Event::Upsert { records, .. } => records.iter().any(|r| r.key == key),
        Event::DeleteRecords { target, .. }
        | Event::SetPayload { target, .. }
        | Event::DeletePayloadKeys { target, .. } => match target {
            valori_kernel::Target::Keys(k) => has(k),
            _ => false,
        },
        Event::CreateNode {
            record: Some(valori_kernel::RecordRef::Key { key: k, .. }),
            ..
        } => k == key,
        _ => false,
    }
}

/// Entries of a history as `valori log` prints them, filtered by range, collection and key.
pub fn log_lines(
    source: &Source,
    from: u64,
    to: Option<u64>,
    collection: Option<&str>,
    key: Option<&str>,
) -> Result<Vec<(u64, u64, String)>, Problem> {
    let mut h = History::open(source)?;
    let mut out = Vec::new();
    while let Some(e) = h.next_entry() {
        let e = e?;
        if e.seq < from {
            continue;
        }
        if to.is_some_and(|t| e.seq > t) {
            break;
        }
        let text = match Event::decode(&e.event) {
            Ok(ev) if mentions(&ev, collection, key) => describe(&ev),
            Ok(_) => continue,
            Err(err) if collection.is_none() && key.is_none() => {
                format!("undecodable event ({} bytes): {err}", e.event.len())
            }
            Err(_) => continue,
        };
        out.push((e.seq, e.epoch, text));
    }
    Ok(out)
}

/// A read `valori at` answers as the state stood at a past sequence number.
#[derive(Clone, Debug)]
pub enum AtQuery {
    /// The `k` nearest records (exact scan when `exact`), optionally filtered.
    Search {
        /// Collection.
        collection: String,
        /// Query components.
        vector: Vec<f64>,
        /// Results wanted.
        k: u32,
        /// A filter in the API's JSON shape.
        filter: Option<serde_json::Value>,
        /// Candidate list of the walk.
        ef: Option<u32>,
        /// Scan the matches exactly.
        exact: bool,
    },
    /// Records by key.
    Get {
        /// Collection.
        collection: String,
        /// Keys.
        keys: Vec<String>,
    },
    /// How many records match.
    Count {
        /// Collection.
        collection: String,
        /// A filter in the API's JSON shape.
        filter: Option<serde_json::Value>,
    },
}

fn wire_filter(f: &Option<serde_json::Value>) -> Result<valori_kernel::Filter, Problem> {
    match f {
        None => Ok(valori_kernel::Filter::default()),
        Some(j) => {
            let wire: valori_api::memory::Filter =
                serde_json::from_value(j.clone()).map_err(|e| plain(format!("filter: {e}")))?;
            valori_api::memory::filter_from_wire(&wire).map_err(plain)
        }
    }
}

/// Answers `query` as the state stood at `seq`: replayed in memory from the nearest snapshot at
/// or before it (or the log's start), every entry checked on the way. The answer names `seq`,
/// the chain hash and the state hash there; the same query on any copy of the history gives
/// the same bytes.
pub fn at(
    source: &Source,
    seq: u64,
    query: &AtQuery,
    threads: usize,
) -> Result<serde_json::Value, Problem> {
    let mut history = History::open(source)?;
    let start = history
        .snapshots
        .iter()
        .rfind(|s| s.seq <= seq && history.first_seq().is_none_or(|f| s.seq + 1 >= f))
        .cloned();
    let (kernel, report) = replay_from(&mut history, start, Some(seq), threads, |_, _| {});
    if let Some(p) = report.problem {
        return Err(p);
    }
    if kernel.seq() != seq {
        return Err(plain(format!(
            "the history ends at seq {}, before seq {seq}",
            kernel.seq()
        )));
    }
    let kerr = |e: valori_kernel::Error| plain(e.to_string());
    let answer = match query {
        AtQuery::Search {
            collection,
            vector,
            k,
            filter,
            ef,
            exact,
        } => {
            let q = crate::service::to_fixed(vector).map_err(|e| plain(e.to_string()))?;
            let params = valori_kernel::SearchParams {
                k: *k,
                tag: None,
                ef: *ef,
            };
            let mut scratch = valori_kernel::SearchScratch::new();
            let hits = kernel
                .search_filtered(
                    collection,
                    &q,
                    &params,
                    &wire_filter(filter)?,
                    *exact,
                    &mut scratch,
                )
                .map_err(kerr)?;
            let c = kernel
                .collection(collection)
                .ok_or_else(|| plain("no such collection"))?;
            let list: Vec<serde_json::Value> = hits
                .iter()
                .map(|h| {
                    let key = c.get(h.id).and_then(|r| r.key.map(String::from));
                    serde_json::json!({"id": h.id, "key": key, "distance": h.distance.to_string()})
                })
                .collect();
            serde_json::json!({ "hits": list })
        }
        AtQuery::Get { collection, keys } => {
            let c = kernel.collection(collection).ok_or_else(|| {
                plain(format!(
                    "collection {collection:?} does not exist at seq {seq}"
                ))
            })?;
            let mut records = Vec::new();
            let mut missing = Vec::new();
            for k in keys {
                match c.id_of(k).and_then(|id| c.get(id)) {
                    Some(r) => records.push(serde_json::json!({
                        "id": r.id,
                        "key": r.key,
                        "tag": r.tag,
                        "payload": r.payload.map(valori_api::memory::payload_to_json),
                        "document": r.document,
                    })),
                    None => missing.push(k.clone()),
                }
            }
            serde_json::json!({"records": records, "missing": missing})
        }
        AtQuery::Count { collection, filter } => {
            serde_json::json!({"count": kernel.count(collection, &wire_filter(filter)?).map_err(kerr)?})
        }
    };
    Ok(serde_json::json!({
        "seq": seq,
        "chain_hash": hex::encode(kernel.chain_hash()),
        "state_hash": hex::encode(kernel.state_hash()),
        "answer": answer,
    }))
}
