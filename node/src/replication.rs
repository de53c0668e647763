//! Follower replication: bootstrap from the leader's snapshot, then stream its log.
//!
//! The follower polls `GET {leader}/v1/log?from=<its seq + 1>`. Each page's entries go to
//! [`Engine::replicate`], which applies them in order, requires the leader's chain hash at every
//! sequence number, and appends them durably, so the follower is itself restartable and resumes
//! from its own log. When the leader no longer retains the next entry (or the follower is empty
//! and the leader's log starts later), the follower downloads the leader's newest snapshot,
//! which `Engine::install_file` verifies and installs, and streams from there. A chain mismatch stops replication
//! (the engine latches read-only, readiness turns false, the divergence metric counts it, and
//! the log names the sequence number). Connection errors back off up to two seconds and retry.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use valori_api as api;

use crate::engine::Engine;
use crate::error::{Failure, NodeError};
use crate::limits::{
    FULL_CHECK_EVERY, LEADER_CONNECT_TIMEOUT, LEADER_READ_TIMEOUT, MAX_FOLLOWERS,
    MAX_FOLLOWER_NAME_BYTES, REPLICATION_LONG_POLL as LONG_POLL,
    REPLICATION_MAX_BACKOFF as MAX_BACKOFF, REPLICATION_PAGE as PAGE,
};
use crate::metrics::Metrics;
use crate::store::Entry;

/// The leader's view of its followers: each one's confirmed sequence number and when it last
/// asked, learnt from their `GET /v1/log` requests (asking for `from` confirms everything
/// before it). A confirmation counts for synchronous writes only when the follower proved it
/// holds this node's history there (its chain hash at `from - 1` equals ours).
#[derive(Default)]
pub struct Followers {
    seen: Mutex<BTreeMap<String, Seen>>,
    /// Woken whenever a follower confirms more.
    changed: tokio::sync::Notify,
}

struct Seen {
    confirmed: u64,
    at: Instant,
    /// Whether the follower's chain at `confirmed` is ours (`None`: it did not say).
    proven: Option<bool>,
}

impl Followers {
    /// Follower `name` asked for the log from `from` on, proving (or not) that it holds our
    /// history up to `from - 1`.
    /// At most [`MAX_FOLLOWERS`] are kept: a new name beyond that replaces the one heard from
    /// longest ago (its metric series goes with it), so invented names cannot grow memory or
    /// `/metrics` without bound.
    pub fn asked(&self, name: &str, from: u64, proven: Option<bool>, metrics: &Metrics) {
        let confirmed = from.saturating_sub(1);
        let mut seen = self.seen.lock().expect("followers lock");
        if !seen.contains_key(name) && seen.len() >= MAX_FOLLOWERS {
            let oldest = seen
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(n, _)| n.clone())
                .expect("the map is full, so not empty");
            seen.remove(&oldest);
            let _ = metrics.follower_seq.remove_label_values(&[&oldest]);
        }
        seen.insert(
            name.to_string(),
            Seen {
                confirmed,
                at: Instant::now(),
                proven,
            },
        );
        drop(seen);
        metrics
            .follower_seq
            .with_label_values(&[name])
            .set(confirmed as i64);
        self.changed.notify_waiters();
    }

    /// How many followers hold our history up to `seq`.
    fn holding(&self, seq: u64) -> u32 {
        let seen = self.seen.lock().expect("followers lock");
        seen.values()
            .filter(|s| s.proven == Some(true) && s.confirmed >= seq)
            .count() as u32
    }

    /// Waits until `needed` followers hold our history up to `seq`, at most `timeout`;
    /// otherwise answers how many did.
    pub async fn wait_for(&self, seq: u64, needed: u32, timeout: Duration) -> Result<(), u32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before counting, so a confirmation in between still wakes us.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let holding = self.holding(seq);
            if holding >= needed {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.holding(seq));
            }
        }
    }

    /// Every follower seen, with its lag behind `seq` (this node's sequence number).
    pub fn status(&self, seq: u64) -> api::ReplicationStatus {
        let followers = self
            .seen
            .lock()
            .expect("followers lock")
            .iter()
            .map(|(name, s)| api::FollowerStatus {
                name: name.clone(),
                confirmed_seq: s.confirmed,
                lag_events: seq.saturating_sub(s.confirmed),
                seconds_since_seen: s.at.elapsed().as_secs_f64(),
                diverged: s.confirmed > seq || s.proven == Some(false),
            })
            .collect();
        api::ReplicationStatus { seq, followers }
    }
}

/// Whether `name` may name a follower: 1 to [`MAX_FOLLOWER_NAME_BYTES`] characters of
/// `A-Z a-z 0-9 . _ : -` (it becomes a metric label).
pub fn valid_follower_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FOLLOWER_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The name a follower gives itself when none is configured: its host name and HTTP port,
/// unique per host and per port (followers in containers all listen on `0.0.0.0:3000`, so the
/// address alone would make them one follower to their leader).
pub fn default_follower_name(host: Option<&str>, listen: std::net::SocketAddr) -> String {
    let host = host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map_or_else(|| listen.ip().to_string(), String::from);
    let name: String = format!("{host}:{}", listen.port())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_FOLLOWER_NAME_BYTES)
        .collect();
    name
}

/// How a node replicates when it is a follower.
#[derive(Clone, Debug)]
pub struct FollowerSettings {
    /// The key it presents to its leader.
    pub key: Option<String>,
    /// Re-bootstrap on divergence even when the role came from flags.
    pub heal: bool,
    /// How it names itself to its leader.
    pub name: String,
}

/// Runs the follower loop whenever the node is a follower, restarting it towards the new
/// leader when the role changes and stopping it on promotion, until `stop` turns true.
pub async fn supervise(engine: Engine, settings: FollowerSettings, stop: watch::Receiver<bool>) {
    let mut roles = engine.role_watch();
    loop {
        if *stop.borrow() {
            return;
        }
        let assignment = roles.borrow_and_update().assignment.clone();
        // Only a new assignment restarts the loop: the role state also changes when the node
        // learns an epoch or installs a snapshot, and the loop must go on through those.
        let reassigned = async {
            loop {
                if roles.changed().await.is_err() {
                    return;
                }
                if roles.borrow_and_update().assignment != assignment {
                    return;
                }
            }
        };
        let mut stopped = stop.clone();
        match (assignment.role, assignment.leader_url.clone()) {
            (api::Role::Follower, Some(leader)) => {
                let follower = Follower::new(
                    engine.clone(),
                    leader,
                    settings.key.clone(),
                    settings.heal,
                    settings.name.clone(),
                );
                tokio::select! {
                    _ = follower.run(stop.clone()) => return,
                    _ = reassigned => {}
                }
            }
            _ => {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = reassigned => {}
                }
            }
        }
    }
}

/// A follower's replication loop.
pub struct Follower {
    engine: Engine,
    leader: String,
    key: Option<String>,
    http: reqwest::Client,
    behind_since: Option<Instant>,
    heal: bool,
    /// How this follower names itself to the leader.
    name: String,
    /// Whether our history has been compared with the leader's since (re)connecting.
    verified: bool,
    /// When the full state hashes were last compared at a common sequence number.
    last_full_check: Option<Instant>,
    /// The leader's history generation our history was last checked against.
    history: Option<u64>,
}

/// The follower's HTTP client. Timeouts are per read, not per request: a large snapshot or
/// page may take longer than any fixed deadline to transfer, as long as bytes keep coming.
/// A machine without CA roots (a bare container) still follows a plain-HTTP leader; an https
/// leader is then refused for want of a root, with that error.
fn leader_client() -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .tls_backend_rustls()
            .connect_timeout(LEADER_CONNECT_TIMEOUT)
            .read_timeout(LEADER_READ_TIMEOUT)
    };
    builder().build().unwrap_or_else(|e| {
        tracing::error!(
            error = %e,
            "no CA roots on this machine (set SSL_CERT_FILE): an https leader cannot be verified"
        );
        builder()
            .tls_certs_only(Vec::<reqwest::Certificate>::new())
            .build()
            .expect("an HTTP client without roots builds")
    })
}

impl Follower {
    /// A follower of `leader` (base URL) feeding `engine`.
    pub fn new(
        engine: Engine,
        leader: String,
        key: Option<String>,
        heal: bool,
        name: String,
    ) -> Follower {
        crate::use_ring_for_tls();
        Follower {
            engine,
            leader: leader.trim_end_matches('/').to_string(),
            key,
            http: leader_client(),
            behind_since: None,
            heal,
            name,
            verified: false,
            last_full_check: None,
            history: None,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.leader));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// Replicates until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        tracing::info!(leader = %self.leader, "replicating");
        loop {
            if *stop.borrow() {
                return;
            }
            if let Some(why @ Failure::Diverged { seq, .. }) = self.engine.failure() {
                // A node the arbiter told to follow heals by itself (a demoted leader whose
                // history went past the new leader's); otherwise only with --replication-heal.
                if self.heal || self.engine.role().by_api {
                    let local = self.engine.seq().unwrap_or(seq);
                    tracing::warn!(reason = %why, "re-bootstrapping from the leader to heal");
                    match self.bootstrap(true).await {
                        Ok(()) => {
                            self.verified = true;
                            let discarded = (local + 1).saturating_sub(seq);
                            if discarded > 0 {
                                self.engine.metrics().discarded_events.inc_by(discarded);
                                tracing::warn!(
                                    from = seq,
                                    to = local,
                                    events = discarded,
                                    "discarded events the leader does not have"
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "healing failed; retrying"),
                    }
                } else {
                    // Latched until healed or restarted: nothing to fetch meanwhile.
                    tokio::select! {
                        _ = tokio::time::sleep(MAX_BACKOFF) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            }
            let pause = match self.step().await {
                // The log request long-polls: asking again at once is how a follower hears
                // of the next write as it commits (and how it confirms what it applied).
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    // A failed engine only recovers by healing (above) or a restart.
                    self.verified = false;
                    if matches!(e, NodeError::Failed(_)) {
                        tracing::error!(error = %e, "replication stopped");
                    } else {
                        tracing::warn!(error = %e, "replication error; retrying");
                    }
                    let b = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    b
                }
            };
            if pause == Duration::ZERO {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One poll: applies what the leader has after our sequence number; returns how many
    /// entries were applied.
    async fn step(&mut self) -> Result<usize, NodeError> {
        let local = self.engine.seq()?;
        if !self.verified {
            self.check_history(local).await?;
            self.verified = true;
        }
        // Who we are, the newest epoch we know, and our chain where we stand: the leader
        // counts the confirmation for synchronous writes, and is fenced if it is stale.
        let engine = self.engine.clone();
        let chain = crate::service::blocking(move || engine.chain_at(local)).await?;
        let seen = self.engine.role().seen_epoch;
        let page: api::LogPage = self
            .fetch_json_with(
                &format!(
                    "/v1/log?from={}&limit={PAGE}&wait_ms={}",
                    local + 1,
                    LONG_POLL.as_millis()
                ),
                |r| {
                    r.header(api::FOLLOWER_HEADER, &self.name)
                        .header(api::EPOCH_HEADER, seen.to_string())
                        .header(api::CHAIN_HEADER, hex::encode(chain))
                },
            )
            .await?;
        self.check_epoch(page.epoch)?;
        if self.history.is_some_and(|h| h != page.history) || page.head < local {
            // The leader's history was rewritten or begins anew (a restore, a promotion), or
            // it is behind us: that is divergence to find, never lag.
            self.verified = false;
            self.history = Some(page.history);
            self.check_history(local).await?;
            self.verified = true;
            return Ok(0);
        }
        self.history = Some(page.history);
        let first = page.entries.first().map(|e| e.seq);
        let missing = match (first, page.first_retained) {
            (Some(f), _) => f > local + 1,
            (None, Some(r)) => r > local + 1 && page.head > local,
            (None, None) => page.head > local,
        };
        if missing {
            self.bootstrap(false).await?;
            return Ok(1);
        }
        let lag = page.head.saturating_sub(local);
        self.engine.metrics().replication_lag_events.set(lag as i64);
        let since = *self.behind_since.get_or_insert_with(Instant::now);
        if lag == 0 {
            self.behind_since = None;
            self.engine.metrics().replication_lag_seconds.set(0.0);
            if self
                .last_full_check
                .is_none_or(|t| t.elapsed() >= FULL_CHECK_EVERY)
            {
                self.compare_state_hashes().await?;
            }
            return Ok(0);
        }
        self.engine
            .metrics()
            .replication_lag_seconds
            .set(since.elapsed().as_secs_f64());
        let entries = page
            .entries
            .into_iter()
            .map(|e| {
                let (chain, event) = e.decode().map_err(|why| {
                    NodeError::LeaderUnreachable(format!("the leader sent {why}"))
                })?;
                Ok(Entry {
                    seq: e.seq,
                    chain,
                    event,
                    epoch: e.epoch,
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let n = entries.len();
        let reached = self.engine.replicate(entries).await?;
        if reached >= page.head {
            self.behind_since = None;
            self.engine.metrics().replication_lag_seconds.set(0.0);
            self.engine.metrics().replication_lag_events.set(0);
        }
        Ok(n)
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, NodeError> {
        self.fetch_json_with(path, |r| r).await
    }

    async fn fetch_json_with<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<T, NodeError> {
        let resp = with(self.get(path))
            .send()
            .await
            .map_err(|e| NodeError::LeaderUnreachable(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(NodeError::LeaderUnreachable(format!(
                "the leader answered {status} to {path}: {body}"
            )));
        }
        resp.json().await.map_err(|e| {
            NodeError::LeaderUnreachable(format!("the leader sent malformed JSON for {path}: {e}"))
        })
    }

    /// Compares the full state hash with the leader's when both are at the same sequence
    /// number: the chain hash proves the same events were applied, this proves they produced
    /// the same state (index and derived data included). A mismatch is a divergence.
    async fn compare_state_hashes(&mut self) -> Result<(), NodeError> {
        let theirs: api::State = self.fetch_json("/v1/state").await?;
        let engine = self.engine.clone();
        let ours = crate::service::blocking(move || engine.state()).await?;
        if theirs.seq != ours.seq {
            return Ok(()); // the leader moved on; compare next time
        }
        self.last_full_check = Some(Instant::now());
        if theirs.state_hash.as_deref() == Some(hex::encode(ours.state_hash).as_str()) {
            return Ok(());
        }
        Err(self.diverged(
            ours.seq,
            "the state hashes differ although the chain hashes agree".into(),
        ))
    }

    /// Refuses a leader whose epoch is below one this node has seen (a stale leader that a
    /// newer one replaced); learns a higher one.
    fn check_epoch(&self, epoch: u64) -> Result<(), NodeError> {
        let seen = self.engine.role().seen_epoch;
        if epoch < seen {
            return Err(NodeError::LeaderUnreachable(format!(
                "{} is a stale leader: its epoch {epoch} is below epoch {seen}, which this node has seen; not following it",
                self.leader
            )));
        }
        self.engine.observe_epoch(epoch)?;
        Ok(())
    }

    /// Asks the leader for its role before this node compares histories with it or takes its
    /// snapshot, and refuses a stale one (see [`Follower::check_epoch`]). The request carries
    /// this node's epoch, so a stale leader is fenced by it.
    async fn check_leader(&self) -> Result<(), NodeError> {
        let seen = self.engine.role().seen_epoch;
        let leader: api::RoleInfo = self
            .fetch_json_with("/v1/role", |r| {
                r.header(api::EPOCH_HEADER, seen.to_string())
            })
            .await?;
        self.check_epoch(leader.epoch)
    }

    /// Reports a divergence found by comparing with the leader: counted, logged, and latched
    /// into the engine (read-only; healing re-bootstraps).
    fn diverged(&self, seq: u64, why: String) -> NodeError {
        let failure = Failure::Diverged { seq, why };
        tracing::error!(error = %failure, "replication stopped");
        self.engine.metrics().divergences.inc();
        // Not lag: this node holds events its leader lacks (-1 says so).
        self.engine.metrics().replication_lag_events.set(-1);
        self.engine.mark_failed(failure.clone());
        NodeError::Failed(failure)
    }

    /// The leader's chain hash at `seq`, if it still has it.
    async fn leader_chain(&self, seq: u64) -> Result<Option<String>, NodeError> {
        let resp = self
            .get(&format!("/v1/state?seq={seq}"))
            .send()
            .await
            .map_err(|e| NodeError::LeaderUnreachable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // Anything else that is not a success (a refused key, the leader's own failure) is an
        // error to retry, never "not retained": the history check must not be skipped.
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(NodeError::LeaderUnreachable(format!(
                "the leader answered {status} for its chain hash at {seq}: {body}"
            )));
        }
        let state: api::State = resp.json().await.map_err(|e| {
            NodeError::LeaderUnreachable(format!("the leader sent malformed JSON: {e}"))
        })?;
        Ok(Some(state.chain_hash))
    }

    /// On (re)connecting, and whenever the leader's history changes, compares our history
    /// with the leader's. A leader behind us, or a different chain hash where both have
    /// entries, is divergence: the first differing sequence number is found by bisection over
    /// what both retain, reported, and latched into the engine.
    async fn check_history(&self, local: u64) -> Result<(), NodeError> {
        self.check_leader().await?;
        if local == 0 {
            return Ok(());
        }
        let leader: api::State = self.fetch_json("/v1/state").await?;
        let top = local.min(leader.seq);
        let ours = |seq: u64| self.engine.chain_at(seq).ok().map(hex::encode);
        let theirs_at_top = if top == leader.seq {
            Some(leader.chain_hash.clone())
        } else {
            self.leader_chain(top).await?
        };
        let same_at_top = top == 0 || theirs_at_top.is_some() && theirs_at_top == ours(top);
        if same_at_top && local <= leader.seq {
            return Ok(());
        }
        let (mut same, mut differs) = if same_at_top {
            (top, top + 1)
        } else {
            (0u64, top)
        };
        while differs - same > 1 {
            let mid = same + (differs - same) / 2;
            match (self.leader_chain(mid).await?, ours(mid)) {
                (Some(a), Some(b)) if a == b => same = mid,
                (Some(_), Some(_)) => differs = mid,
                _ => break,
            }
        }
        let why = if local > leader.seq {
            format!(
                "the leader's history ends at sequence number {}, ours goes on to {local}",
                leader.seq
            )
        } else {
            format!("the chain hashes differ (checked up to {local})")
        };
        Err(self.diverged(differs, why))
    }

    /// Streams the leader's snapshot `seq` into a new file at `path`.
    async fn download(&self, seq: u64, path: &std::path::Path) -> Result<(), NodeError> {
        use tokio::io::AsyncWriteExt as _;
        let failed = |e: &dyn std::fmt::Display| {
            NodeError::LeaderUnreachable(format!("downloading snapshot {seq}: {e}"))
        };
        let mut response = self
            .get(&format!("/v1/snapshots/{seq}"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed(&e))?;
        // A new file, never one an older mapping could still see truncated.
        let _ = tokio::fs::remove_file(path).await;
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| failed(&e))?;
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
            file.write_all(&chunk).await.map_err(|e| failed(&e))?;
        }
        file.flush().await.map_err(|e| failed(&e))?;
        Ok(())
    }

    /// Replaces the state with the empty one (with `heal`, also over a failed state), from
    /// which the leader's whole log is then streamed.
    async fn start_empty(&self, heal: bool) -> Result<(), NodeError> {
        let path = self.engine.download_path();
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, valori_kernel::Kernel::new().snapshot())
            .map_err(|e| NodeError::Storage(format!("writing {}: {e}", path.display())))?;
        self.engine.install_file(&path, heal).await?;
        self.engine.metrics().bootstraps.inc();
        tracing::info!("starting from the empty state: the leader's log begins at 1");
        Ok(())
    }

    /// Asks the leader to take a snapshot (it has none, and its log begins after 1): this needs
    /// its read-write key, and says so when this follower has only a read key.
    async fn ask_for_snapshot(&self, first_retained: Option<u64>) -> Result<u64, NodeError> {
        let failed = |e: &dyn std::fmt::Display| {
            NodeError::LeaderUnreachable(format!("asking the leader for a snapshot: {e}"))
        };
        let mut req = self.http.post(format!("{}/v1/snapshots", self.leader));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| failed(&e))?;
        if matches!(resp.status().as_u16(), 401 | 403) {
            return Err(failed(&format!(
                "the leader has no snapshot and its log begins at {}, so this follower needs one \
                 taken, which needs the leader's read-write key (--leader-api-key); or take a \
                 snapshot on the leader",
                first_retained.map_or_else(|| "a pruned point".into(), |f| f.to_string())
            )));
        }
        let created: api::SnapshotInfo = resp
            .error_for_status()
            .map_err(|e| failed(&e))?
            .json()
            .await
            .map_err(|e| failed(&e))?;
        Ok(created.seq)
    }

    /// Downloads the leader's newest snapshot and restores it (verified by its hashes); with
    /// `heal`, also over a failed (diverged) state.
    async fn bootstrap(&self, heal: bool) -> Result<(), NodeError> {
        self.check_leader().await?;
        let list: api::SnapshotList = self.fetch_json("/v1/snapshots").await?;
        let newest = match list.snapshots.iter().map(|s| s.seq).max() {
            // When healing, the snapshot must be fresh enough to contain no divergent history
            // of ours; any leader snapshot qualifies, since it is the leader's own history.
            Some(s) => s,
            None => {
                // A leader whose log begins at 1 needs no snapshot: start from the empty state
                // and stream the whole log (what only a read key allows).
                let page: api::LogPage = self.fetch_json("/v1/log?from=1&limit=1").await?;
                if page.first_retained == Some(1) || page.head == 0 {
                    return self.start_empty(heal).await;
                }
                self.ask_for_snapshot(page.first_retained).await?
            }
        };
        // Streamed to a file, which is mapped (the snapshot is never in the heap: only the state
        // decoded from it is) and then renamed into place as the installed snapshot.
        let path = self.engine.download_path();
        if let Err(e) = self.download(newest, &path).await {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let size = self.engine.install_file(&path, heal).await?.bytes;
        self.engine.metrics().bootstraps.inc();
        tracing::info!(
            seq = newest,
            bytes = size,
            "bootstrapped from the leader's snapshot"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_follower_names_differ_per_host_and_port() {
        let any: std::net::SocketAddr = "0.0.0.0:3000".parse().unwrap();
        assert_eq!(
            default_follower_name(Some("valori-1\n"), any),
            "valori-1:3000"
        );
        assert_ne!(
            default_follower_name(Some("valori-1"), any),
            default_follower_name(Some("valori-2"), any)
        );
        assert_eq!(default_follower_name(None, any), "0.0.0.0:3000");
        let v6: std::net::SocketAddr = "[::1]:3001".parse().unwrap();
        assert!(valid_follower_name(&default_follower_name(None, v6)));
        assert!(valid_follower_name(&default_follower_name(
            Some("a b/c"),
            any
        )));
    }

    #[test]
    fn follower_names_are_bounded_label_values() {
        for ok in ["f1", "valori-0.valori:3000", "127.0.0.1:3001"] {
            assert!(valid_follower_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x\"y",
            "é",
            &"n".repeat(MAX_FOLLOWER_NAME_BYTES + 1),
        ] {
            assert!(!valid_follower_name(bad), "{bad}");
        }
    }
}
