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

/// Whether replays print their progress on standard error (the `valori` command sets it for
/// people at a terminal; a node never does).
pub static PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Progress lines of a replay, at most one a second, and a last one when it ends.
struct Progress {
    name: String,
    started: std::time::Instant,
    shown: std::time::Instant,
    events: u64,
}

impl Progress {
    fn new(name: &str) -> Option<Progress> {
        PROGRESS
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| Progress {
                name: name.to_string(),
                started: std::time::Instant::now(),
                shown: std::time::Instant::now(),
                events: 0,
            })
    }

    fn rate(&self) -> f64 {
        self.events as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn tick(&mut self, seq: u64) {
        self.events += 1;
        if self.events.is_multiple_of(1024) && self.shown.elapsed().as_secs() >= 1 {
            self.shown = std::time::Instant::now();
            eprintln!(
                "valori: {}: replayed to seq {seq} ({:.0} events/s)",
                self.name,
                self.rate()
            );
        }
    }

    fn done(&self, seq: u64) {
        eprintln!(
            "valori: {}: replayed {} events to seq {seq} in {:.1} s ({:.0} events/s)",
            self.name,
            self.events,
            self.started.elapsed().as_secs_f64(),
            self.rate()
        );
    }
}

/// Log entries read at a time.
pub const AUDIT_PAGE: usize = 1024;

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

/// A problem with no seq or file to name.
pub(crate) fn plain(reason: impl Into<String>) -> Problem {
    Problem {
        seq: None,
        file: None,
        reason: reason.into(),
    }
}

/// A page of a history's entries from a sequence number on, in order (the first retained
/// ones when it is older); empty past the end.
type PageFn = Box<dyn FnMut(u64) -> Result<Vec<Entry>, Problem>>;

/// The entries and snapshots of a history. Entries are read a page at a time from wherever
/// the reading starts ([`History::seek`]), so memory stays bounded whatever the log's length;
/// snapshots are read when reached.
pub struct History {
    /// How reports name it.
    pub name: String,
    /// Its snapshots (for a directory or a snapshot file), by sequence number.
    pub snapshots: Vec<SnapshotFile>,
    /// The first retained entry's sequence number (`None`: the log holds none).
    first: Option<u64>,
    read: PageFn,
    page: std::vec::IntoIter<Entry>,
    /// Where the next page starts; `None` after the end or an error.
    next: Option<u64>,
    /// A node whose snapshot the log continues is still to be fetched, for a replay
    /// ([`History::fetch_base`]); reading entries alone never downloads it.
    remote: Option<String>,
    /// Where snapshots downloaded from a node are kept while the history is read.
    _downloads: Option<tempfile::TempDir>,
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
                let first = store
                    .first_seq()
                    .map_err(|e| plain(format!("reading the log: {e}")))?;
                Ok(History::paged(
                    source.name(),
                    snapshots,
                    first,
                    move |from| {
                        store
                            .entries_from(from)
                            .take(AUDIT_PAGE)
                            .collect::<Result<Vec<Entry>, _>>()
                            .map_err(|e| plain(format!("reading the log: {e}")))
                    },
                ))
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
                Ok(History::paged(source.name(), vec![file], None, |_| {
                    Ok(Vec::new())
                }))
            }
            Source::Url(url) => {
                let mut read = remote_pages(url.clone())?;
                // The node's first page tells where its retained log begins.
                let first_page = read(0)?;
                let first = first_page.first().map(|e| e.seq);
                let mut h = History::paged(source.name(), Vec::new(), first, read);
                // A node that pruned its log is replayed from the snapshot the log continues.
                h.remote = (first != Some(1)).then(|| url.clone());
                h.next = first_page.last().map(|e| e.seq + 1);
                h.page = first_page.into_iter();
                Ok(h)
            }
        }
    }

    /// A history whose entries `read` gives a page at a time (see [`PageFn`]), retained from
    /// `first` on: how a node replays its own log.
    pub fn paged(
        name: String,
        snapshots: Vec<SnapshotFile>,
        first: Option<u64>,
        read: impl FnMut(u64) -> Result<Vec<Entry>, Problem> + 'static,
    ) -> History {
        History {
            name,
            snapshots,
            first,
            read: Box::new(read),
            page: Vec::new().into_iter(),
            next: first.map(|_| 0),
            remote: None,
            _downloads: None,
        }
    }

    /// For a node that pruned its log: downloads the snapshot the log continues (verified when
    /// the replay loads it), so that a replay can start there.
    fn fetch_base(&mut self) -> Result<(), Problem> {
        if let Some(url) = self.remote.take() {
            let (snapshots, downloads) = remote_base_snapshot(&url, self.first)?;
            self.snapshots = snapshots;
            self._downloads = downloads;
        }
        Ok(())
    }

    /// The first retained sequence number, if the log holds any entry.
    pub fn first_seq(&self) -> Option<u64> {
        self.first
    }

    /// Reads on from the entry at `seq` (or the first retained one after it).
    pub fn seek(&mut self, seq: u64) {
        self.page = Vec::new().into_iter();
        self.next = self.first.map(|_| seq);
    }

    /// The next entry.
    pub fn next_entry(&mut self) -> Option<Result<Entry, Problem>> {
        loop {
            if let Some(e) = self.page.next() {
                return Some(Ok(e));
            }
            let from = self.next?;
            match (self.read)(from) {
                Err(p) => {
                    self.next = None;
                    return Some(Err(p));
                }
                Ok(v) => {
                    self.next = v.last().map(|e| e.seq + 1);
                    self.page = v.into_iter();
                }
            }
        }
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

/// The newest of a node's snapshots that its retained log (from `first`) continues, downloaded
/// into a temporary directory; none when the node has no history at all.
fn remote_base_snapshot(
    url: &str,
    first: Option<u64>,
) -> Result<(Vec<SnapshotFile>, Option<tempfile::TempDir>), Problem> {
    let (runtime, client) = node_client(url)?;
    let list = runtime
        .block_on(client.snapshots())
        .map_err(|e| plain(format!("{url}: listing its snapshots: {e}")))?;
    let Some(base) = list
        .snapshots
        .iter()
        .rfind(|s| first.is_none_or(|f| s.seq + 1 >= f))
    else {
        return match first {
            None => Ok((Vec::new(), None)),
            Some(f) => Err(plain(format!(
                "{url}: its log begins at seq {f} and it has no snapshot that the log continues"
            ))),
        };
    };
    let dir = tempfile::tempdir().map_err(|e| plain(format!("a temporary directory: {e}")))?;
    let path = dir.path().join(format!("snapshot-{}.vsnap", base.seq));
    let bytes = runtime
        .block_on(async {
            let mut out = tokio::fs::File::create(&path).await?;
            client
                .download_snapshot(base.id, &mut out)
                .await
                .map_err(std::io::Error::other)
        })
        .map_err(|e| plain(format!("{url}: downloading snapshot {}: {e}", base.id)))?;
    Ok((
        vec![SnapshotFile {
            seq: base.seq,
            path,
            bytes,
        }],
        Some(dir),
    ))
}

/// A node's log, a page at a time, through its HTTP API (`/v1/log`), up to the head it had
/// when the history was opened.
fn remote_pages(url: String) -> Result<PageFn, Problem> {
    let (runtime, client) = node_client(&url)?;
    let head = runtime
        .block_on(client.state(None))
        .map_err(|e| plain(format!("{url}: {e}")))?
        .seq;
    Ok(Box::new(move |from| {
        if from > head {
            return Ok(Vec::new());
        }
        let query = valori_api::LogQuery {
            from,
            limit: valori_api::limits::MAX_LOG_PAGE,
            wait_ms: 0,
        };
        let got = runtime
            .block_on(client.log(&query, &valori_client::Hello::default()))
            .map_err(|e| plain(format!("{url}: reading the log: {e}")))?;
        let mut entries = Vec::with_capacity(got.entries.len());
        for e in got.entries.into_iter().take_while(|e| e.seq <= head) {
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
                _ => return Err(at_seq(e.seq, "the node sent a malformed entry")),
            }
        }
        Ok(entries)
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
    if let Err(p) = history.fetch_base() {
        report.problem = Some(p);
        return (Kernel::new(), report);
    }
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
    history.seek(kernel.seq() + 1);
    let mut progress = Progress::new(&history.name);
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
            if let Some(p) = &mut progress {
                p.tick(e.seq);
            }
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
    if let Some(p) = &progress {
        p.done(kernel.seq());
    }
    report.seq = kernel.seq();
    report.chain_hash = hex::encode(kernel.chain_hash());
    report.state_hash = hex::encode(kernel.state_hash());
    (kernel, report)
}

/// Why a past state cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// The history ends before it.
    Future {
        /// The last sequence number the history holds.
        head: u64,
    },
    /// The entries that lead to it are no longer retained, and no snapshot at or before it
    /// is followed by the rest.
    Pruned {
        /// The oldest sequence number the history can still answer (a snapshot's).
        oldest: u64,
    },
    /// Reaching it takes more events than allowed.
    TooLong {
        /// The events it would take (from the nearest usable snapshot).
        events: u64,
        /// The most allowed.
        max: u64,
    },
    /// The history does not replay to it.
    Bad(Problem),
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::Future { head } => write!(f, "the history ends at seq {head}"),
            Unreachable::Pruned { oldest } => write!(
                f,
                "the events before it are no longer retained: the oldest state this history can \
                 answer is at seq {oldest}"
            ),
            Unreachable::TooLong { events, max } => write!(
                f,
                "reaching it takes {events} events from the nearest snapshot, the limit is {max}"
            ),
            Unreachable::Bad(p) => p.fmt(f),
        }
    }
}

/// The state as it stood at `seq`: replayed in memory from the nearest snapshot at or before
/// it that the retained log continues (or from the empty state when the log begins at 1),
/// every entry and snapshot checked on the way as [`verify`] checks them, replaying at most
/// `max_events` events.
pub fn state_at(
    history: &mut History,
    seq: u64,
    threads: usize,
    max_events: u64,
) -> Result<Kernel, Unreachable> {
    history.fetch_base().map_err(Unreachable::Bad)?;
    let first = history.first_seq();
    let usable = |s: &&SnapshotFile| first.is_none_or(|f| s.seq + 1 >= f);
    let start = history
        .snapshots
        .iter()
        .filter(usable)
        .rfind(|s| s.seq <= seq)
        .cloned();
    let base = match &start {
        Some(s) => s.seq,
        None if seq == 0 => return Ok(Kernel::new()),
        None if first == Some(1) || (first.is_none() && history.snapshots.is_empty()) => 0,
        None => {
            return Err(match history.snapshots.iter().find(usable) {
                Some(oldest) => Unreachable::Pruned { oldest: oldest.seq },
                None => Unreachable::Bad(plain(format!(
                    "the log begins at seq {} and no snapshot leads to it",
                    first.unwrap_or(0)
                ))),
            })
        }
    };
    if seq - base > max_events {
        return Err(Unreachable::TooLong {
            events: seq - base,
            max: max_events,
        });
    }
    let (kernel, report) = replay_from(history, start, Some(seq), threads, |_, _| {});
    if let Some(p) = report.problem {
        return Err(Unreachable::Bad(p));
    }
    if kernel.seq() != seq {
        return Err(Unreachable::Future { head: kernel.seq() });
    }
    Ok(kernel)
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

/// A read `valori at` answers as the state stood at a past sequence number: the API's own
/// requests, answered by the functions that answer them on a node.
#[derive(Clone, Debug)]
pub enum AtQuery {
    /// A search (`POST /v1/collections/{name}/search`).
    Search(valori_api::SearchRequest),
    /// Records by key or id (`.../records/get`).
    Get(valori_api::GetRecords),
    /// How many records match (`.../records/count`).
    Count(valori_api::Count),
}

/// Answers `query` on `collection` as the state stood at `seq` ([`state_at`], with no limit on
/// the events replayed): the API's answer with the chain hash and the state hash at `seq`
/// added (a search's is what the node answers to the same search with `at_seq`). The same
/// query on any copy of the history gives the same bytes.
pub fn at(
    source: &Source,
    seq: u64,
    collection: &str,
    query: &AtQuery,
    threads: usize,
) -> Result<serde_json::Value, Problem> {
    let mut history = History::open(source)?;
    let kernel = state_at(&mut history, seq, threads, u64::MAX).map_err(|u| match u {
        Unreachable::Bad(p) => p,
        other => plain(format!("seq {seq}: {other}")),
    })?;
    answer(&kernel, collection, query)
}

/// `query`'s answer from `kernel`, with its hashes (see [`at`]).
pub fn answer(
    kernel: &Kernel,
    collection: &str,
    query: &AtQuery,
) -> Result<serde_json::Value, Problem> {
    use crate::service::{count_state, records_state, search_state, ResponseSize};
    let refused = |e: crate::error::NodeError| plain(format!("{}: {e}", e.code()));
    let chain_hash = hex::encode(kernel.chain_hash());
    let state_hash = hex::encode(kernel.state_hash());
    let mut answer = match query {
        AtQuery::Search(req) => {
            let hits = search_state(kernel, collection, req, &mut ResponseSize::new(usize::MAX))
                .map_err(refused)?;
            return Ok(serde_json::to_value(valori_api::SearchResults {
                results: hits.into_iter().map(crate::service::hit_to_wire).collect(),
                seq: kernel.seq(),
                chain_hash: Some(chain_hash),
                state_hash: Some(state_hash),
            })
            .expect("serializable"));
        }
        AtQuery::Get(req) => serde_json::to_value(
            records_state(kernel, collection, req, usize::MAX).map_err(refused)?,
        ),
        AtQuery::Count(req) => {
            serde_json::to_value(count_state(kernel, collection, req).map_err(refused)?)
        }
    }
    .expect("serializable");
    let object = answer.as_object_mut().expect("an answer is an object");
    object.insert("chain_hash".into(), chain_hash.into());
    object.insert("state_hash".into(), state_hash.into());
    Ok(answer)
}

/// What a node answered to a search and the state it answered from: enough for anyone with a
/// copy of the history to check the answer ([`verify_receipt`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The receipt format's version (1).
    pub receipt: u32,
    /// The node that answered.
    pub node: String,
    /// The collection searched.
    pub collection: String,
    /// The search as asked (without `hashes`).
    pub query: valori_api::SearchRequest,
    /// The sequence number of the state searched.
    pub seq: u64,
    /// The chain hash at `seq`, hex.
    pub chain_hash: String,
    /// The state hash of the state searched, hex.
    pub state_hash: String,
    /// The answer, as the node gave it.
    pub results: Vec<valori_api::SearchHit>,
}

/// The receipt format this build writes and reads.
pub const RECEIPT_VERSION: u32 = 1;

/// Asks the node at `url` for `query` on `collection` with the hashes of the state it searched,
/// and returns the receipt of its answer.
pub fn receipt(
    url: &str,
    collection: &str,
    mut query: valori_api::SearchRequest,
) -> Result<Receipt, Problem> {
    let (runtime, client) = node_client(url)?;
    query.hashes = true;
    let answer = runtime
        .block_on(client.search(collection, &query))
        .map_err(|e| plain(format!("{url}: {e}")))?;
    query.hashes = false;
    let (Some(chain_hash), Some(state_hash)) = (answer.chain_hash, answer.state_hash) else {
        return Err(plain(format!(
            "{url}: the node answered without the hashes of the state it searched (an older node?)"
        )));
    };
    Ok(Receipt {
        receipt: RECEIPT_VERSION,
        node: url.to_string(),
        collection: collection.to_string(),
        query,
        seq: answer.seq,
        chain_hash,
        state_hash,
        results: answer.results,
    })
}

/// Checks a receipt against a copy of the history: the state at the receipt's seq (replayed
/// and checked as [`verify`] does) must have the receipt's chain and state hashes, and the
/// receipt's search on it must give the receipt's answer, hit for hit. The first disagreement
/// is the problem.
pub fn verify_receipt(r: &Receipt, source: &Source, threads: usize) -> Result<(), Problem> {
    if r.receipt != RECEIPT_VERSION {
        return Err(plain(format!(
            "receipt version {} is not one this build reads ({RECEIPT_VERSION})",
            r.receipt
        )));
    }
    let mut history = History::open(source)?;
    let kernel = state_at(&mut history, r.seq, threads, u64::MAX).map_err(|u| match u {
        Unreachable::Bad(p) => p,
        other => at_seq(r.seq, format!("{}: {other}", source.name())),
    })?;
    let chain = hex::encode(kernel.chain_hash());
    if chain != r.chain_hash {
        return Err(at_seq(
            r.seq,
            format!(
                "the receipt's chain hash {} is not the history's ({chain}): the receipt was \
                 not issued from this history",
                r.chain_hash
            ),
        ));
    }
    let state = hex::encode(kernel.state_hash());
    if state != r.state_hash {
        return Err(at_seq(
            r.seq,
            format!(
                "the receipt's state hash {} is not the state's ({state})",
                r.state_hash
            ),
        ));
    }
    let mut query = r.query.clone();
    query.at_seq = None;
    query.hashes = false;
    let hits = crate::service::search_state(
        &kernel,
        &r.collection,
        &query,
        &mut crate::service::ResponseSize::new(usize::MAX),
    )
    .map_err(|e| at_seq(r.seq, format!("the receipt's search is refused: {e}")))?;
    let answer: Vec<valori_api::SearchHit> =
        hits.into_iter().map(crate::service::hit_to_wire).collect();
    let json = |h: &valori_api::SearchHit| serde_json::to_string(h).expect("serializable");
    for i in 0..answer.len().max(r.results.len()) {
        match (r.results.get(i), answer.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                return Err(at_seq(
                    r.seq,
                    format!(
                        "result {i} differs: the receipt says {}, the history answers {}",
                        a.map_or("nothing".into(), json),
                        b.map_or("nothing".into(), json)
                    ),
                ))
            }
        }
    }
    Ok(())
}
