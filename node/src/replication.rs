//! Follower replication: bootstrap from the leader's snapshot, then stream its log.
//!
//! The follower polls `GET {leader}/v1/log?from=<its seq + 1>`. Each page's entries go to
//! [`Engine::replicate`], which applies them in order, requires the leader's chain hash at every
//! sequence number, and appends them durably, so the follower is itself restartable and resumes
//! from its own log. When the leader no longer retains the next entry (or the follower is empty
//! and the leader's log starts later), the follower downloads the leader's newest snapshot,
//! which `Engine::restore` verifies, and streams from there. A chain mismatch stops replication
//! (the engine latches read-only, readiness turns false, the divergence metric counts it, and
//! the log names the sequence number). Connection errors back off up to two seconds and retry.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::error::NodeError;
use crate::store::Entry;

/// Entries asked for per poll.
const PAGE: usize = 1000;
/// Pause between polls when caught up.
const IDLE: Duration = Duration::from_millis(50);
/// How often a caught-up follower compares full state hashes with its leader.
const FULL_CHECK_EVERY: Duration = Duration::from_secs(30);
/// Longest pause between retries after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct LogEntryJson {
    seq: u64,
    chain_hash: String,
    event: String,
}

#[derive(Deserialize)]
struct LogPage {
    entries: Vec<LogEntryJson>,
    first_retained: Option<u64>,
    head: u64,
}

#[derive(Deserialize)]
struct SnapshotJson {
    seq: u64,
}

#[derive(Deserialize)]
struct SnapshotList {
    snapshots: Vec<SnapshotJson>,
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
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client"),
            behind_since: None,
            heal,
            name,
            verified: false,
            last_full_check: None,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .get(format!("{}{path}", self.leader))
            .header("x-valori-follower", &self.name);
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
            if let Some(why) = self.engine.failure() {
                if self.heal && why.contains("diverged") {
                    tracing::warn!(reason = %why, "re-bootstrapping from the leader to heal");
                    match self.bootstrap(true).await {
                        Ok(()) => self.verified = true,
                        Err(e) => tracing::warn!(error = %e, "healing failed; retrying"),
                    }
                }
            }
            let pause = match self.step().await {
                Ok(0) => IDLE,
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
            if pause == IDLE || pause == Duration::ZERO {
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
        let page: LogPage = self
            .fetch_json(&format!("/v1/log?from={}&limit={PAGE}", local + 1))
            .await?;
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
                let chain: [u8; 32] = hex::decode(&e.chain_hash)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| {
                        NodeError::BadRequest(format!("leader sent a bad chain hash at {}", e.seq))
                    })?;
                let event = base64::engine::general_purpose::STANDARD
                    .decode(&e.event)
                    .map_err(|err| {
                        NodeError::BadRequest(format!(
                            "leader sent a bad event at {}: {err}",
                            e.seq
                        ))
                    })?;
                Ok(Entry {
                    seq: e.seq,
                    chain,
                    event,
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
        let resp = self
            .get(path)
            .send()
            .await
            .map_err(|e| NodeError::Storage(format!("leader unreachable: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(NodeError::Storage(format!(
                "leader answered {status} to {path}: {body}"
            )));
        }
        resp.json()
            .await
            .map_err(|e| NodeError::Storage(format!("leader sent malformed JSON for {path}: {e}")))
    }

    /// Compares the full state hash with the leader's when both are at the same sequence
    /// number: the chain hash proves the same events were applied, this proves they produced
    /// the same state (index and derived data included). A mismatch is a divergence.
    async fn compare_state_hashes(&mut self) -> Result<(), NodeError> {
        let theirs: serde_json::Value = self.fetch_json("/v1/state").await?;
        let engine = self.engine.clone();
        let ours = tokio::task::spawn_blocking(move || engine.state())
            .await
            .map_err(|e| NodeError::Storage(e.to_string()))??;
        if theirs["seq"].as_u64() != Some(ours.seq) {
            return Ok(()); // the leader moved on; compare next time
        }
        self.last_full_check = Some(Instant::now());
        if theirs["state_hash"].as_str() == Some(hex::encode(ours.state_hash).as_str()) {
            return Ok(());
        }
        let why = format!(
            "diverged from the leader: state hashes differ at sequence number {} although the chain hashes agree",
            ours.seq
        );
        tracing::error!("{why}");
        self.engine.metrics().divergences.inc();
        self.engine.mark_failed(why.clone());
        Err(NodeError::Failed(why))
    }

    /// The leader's chain hash at `seq`, if it still has it.
    async fn leader_chain(&self, seq: u64) -> Result<Option<String>, NodeError> {
        let resp = self
            .get(&format!("/v1/state?seq={seq}"))
            .send()
            .await
            .map_err(|e| NodeError::Storage(format!("leader unreachable: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| NodeError::Storage(format!("leader sent malformed JSON: {e}")))?;
        Ok(v["chain_hash"].as_str().map(String::from))
    }

    /// On (re)connecting, compares our chain hash at our sequence number with the leader's; on
    /// a mismatch, finds the first differing sequence number by bisection over what both still
    /// retain, reports it and latches the engine.
    async fn check_history(&self, local: u64) -> Result<(), NodeError> {
        if local == 0 {
            return Ok(());
        }
        let ours = |seq: u64| self.engine.chain_at(seq).ok().map(hex::encode);
        let Some(theirs) = self.leader_chain(local).await? else {
            // The leader is behind us (it lost writes we have) or pruned: compare at its head.
            return Ok(());
        };
        if Some(theirs) == ours(local) {
            return Ok(());
        }
        let (mut same, mut differs) = (0u64, local);
        while differs - same > 1 {
            let mid = same + (differs - same) / 2;
            match (self.leader_chain(mid).await?, ours(mid)) {
                (Some(a), Some(b)) if a == b => same = mid,
                (Some(_), Some(_)) => differs = mid,
                _ => break,
            }
        }
        let why = format!(
            "diverged from the leader: chain hashes differ from sequence number {differs} (checked up to {local})"
        );
        tracing::error!("{why}");
        self.engine.metrics().divergences.inc();
        self.engine.mark_failed(why.clone());
        Err(NodeError::Failed(why))
    }

    /// Streams the leader's snapshot `seq` into a new file at `path`.
    async fn download(&self, seq: u64, path: &std::path::Path) -> Result<(), NodeError> {
        use tokio::io::AsyncWriteExt as _;
        let failed = |e: &dyn std::fmt::Display| {
            NodeError::Storage(format!("downloading snapshot {seq}: {e}"))
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

    /// Downloads the leader's newest snapshot and restores it (verified by its hashes); with
    /// `heal`, also over a failed (diverged) state.
    async fn bootstrap(&self, heal: bool) -> Result<(), NodeError> {
        let list: SnapshotList = self.fetch_json("/v1/snapshots").await?;
        let newest = match list.snapshots.iter().map(|s| s.seq).max() {
            // When healing, the snapshot must be fresh enough to contain no divergent history
            // of ours; any leader snapshot qualifies, since it is the leader's own history.
            Some(s) => s,
            None => {
                // Ask the leader for one (needs its read-write key when keys are configured).
                let mut req = self.http.post(format!("{}/v1/snapshots", self.leader));
                if let Some(k) = &self.key {
                    req = req.bearer_auth(k);
                }
                let created: SnapshotJson = req
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| {
                        NodeError::Storage(format!("asking the leader for a snapshot: {e}"))
                    })?
                    .json()
                    .await
                    .map_err(|e| {
                        NodeError::Storage(format!("asking the leader for a snapshot: {e}"))
                    })?;
                created.seq
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
