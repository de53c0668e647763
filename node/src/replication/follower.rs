//! Follower replication: bootstrap from the leader's snapshot, then stream its log.
//!
//! The follower polls `GET {leader}/v1/log?from=<its seq + 1>` through the typed client
//! ([`valori_client`]). Each page's entries go to [`Engine::replicate`], which applies them in
//! order, requires the leader's chain hash at every sequence number, and appends them durably,
//! so the follower is itself restartable and resumes from its own log. When the leader no
//! longer retains the next entry (or the follower is empty and the leader's log starts later),
//! the follower downloads the leader's newest snapshot, which `Engine::install_file` verifies
//! and installs, and streams from there. A chain mismatch stops replication (the engine
//! latches read-only, readiness turns false, the divergence metric counts it, and the log
//! names the sequence number). Connection errors back off up to two seconds and retry.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use valori_api as api;
use valori_client::{Client, Hello, Options};

use super::FollowerSettings;
use crate::blocking;
use crate::engine::{Engine, InstallMode};
use crate::error::{Doing, Failure, NodeError};
use crate::limits::{
    FULL_CHECK_EVERY, LEADER_CONNECT_TIMEOUT, LEADER_READ_TIMEOUT, MAX_FOLLOWER_NAME_BYTES,
    REPLICATION_FIRST_BACKOFF as FIRST_BACKOFF, REPLICATION_LONG_POLL as LONG_POLL,
    REPLICATION_MAX_BACKOFF as MAX_BACKOFF, REPLICATION_PAGE as PAGE,
};
use crate::store::Entry;

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

/// A follower's replication loop.
pub struct Follower {
    engine: Engine,
    /// The leader, through the typed client. Timeouts are per read, not per call: a large
    /// snapshot or page may take longer than any fixed deadline to transfer, as long as bytes
    /// keep coming.
    leader: Client,
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
    /// The leader's epoch as last heard. A leader below the epoch this node has seen since
    /// (an arbiter raised it to fail over) is not asked for its log again: asking would
    /// confirm its writes, which the new leader may never get.
    leader_epoch: Option<u64>,
}

/// A failed call to the leader, saying what it was for.
fn leader_error(doing: &str) -> impl Fn(valori_client::Error) -> NodeError + '_ {
    move |e| NodeError::LeaderUnreachable(format!("{doing}: {e}"))
}

impl Follower {
    /// A follower of `leader` (base URL) feeding `engine`.
    pub fn new(
        engine: Engine,
        leader: &str,
        settings: &FollowerSettings,
    ) -> Result<Follower, NodeError> {
        let options = Options {
            connect_timeout: LEADER_CONNECT_TIMEOUT,
            timeout: None,
            read_timeout: Some(LEADER_READ_TIMEOUT),
            ca_pem: settings.ca_pem.clone(),
            arbiter: None,
        };
        let leader = Client::new(leader, settings.key.clone(), &options)
            .map_err(|e| NodeError::BadRequest(format!("the leader's URL: {e}")))?;
        Ok(Follower {
            engine,
            leader,
            behind_since: None,
            heal: settings.heal,
            name: settings.name.clone(),
            verified: false,
            last_full_check: None,
            history: None,
            leader_epoch: None,
        })
    }

    /// Replicates until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        tracing::info!(leader = %self.leader.url(), "replicating");
        loop {
            if *stop.borrow() {
                return;
            }
            if let Some(why @ Failure::Diverged { seq, .. }) = self.engine.failure() {
                // A node the arbiter told to follow heals by itself (a demoted leader whose
                // history went past the new leader's) unless it was told not to (a cluster
                // whose cross-check does not heal); otherwise only with --replication-heal.
                let role = self.engine.role();
                if self.heal || (role.by_api && role.assignment.heal) {
                    self.heal_from(why, seq).await;
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
                Ok(_) => {
                    backoff = FIRST_BACKOFF;
                    Duration::ZERO
                }
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
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Re-bootstraps from the leader over a state that diverged from `seq` on, counting the
    /// events it discards.
    async fn heal_from(&mut self, why: Failure, seq: u64) {
        let local = self.engine.seq().unwrap_or(seq);
        tracing::warn!(reason = %why, "re-bootstrapping from the leader to heal");
        match self.bootstrap(InstallMode::Heal).await {
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
    }

    /// One poll: applies what the leader has after our sequence number; returns how many
    /// entries were applied.
    async fn step(&mut self) -> Result<usize, NodeError> {
        let seen = self.engine.role().seen_epoch;
        if let Some(epoch) = self.leader_epoch.filter(|&e| e < seen) {
            // Checked again (and followed again, if it was promoted anew) on the next step.
            self.leader_epoch = None;
            return Err(NodeError::LeaderUnreachable(format!(
                "{} leads at epoch {epoch}, below epoch {seen}, which this node has seen since; not asking it for more",
                self.leader.url()
            )));
        }
        let local = self.engine.seq()?;
        if !self.verified {
            self.check_history(local).await?;
            self.verified = true;
        }
        // Who we are, the newest epoch we know, and our chain where we stand: the leader
        // counts the confirmation for synchronous writes, and is fenced if it is stale.
        let engine = self.engine.clone();
        let chain = blocking(move || engine.chain_at(local)).await?;
        let hello = Hello {
            follower: Some(self.name.clone()),
            epoch: Some(self.engine.role().seen_epoch),
            chain: Some(hex::encode(chain)),
        };
        let query = api::LogQuery {
            from: local + 1,
            limit: PAGE,
            wait_ms: LONG_POLL.as_millis() as u32,
        };
        let page = self
            .leader
            .log(&query, &hello)
            .await
            .map_err(leader_error("reading the leader's log"))?;
        self.check_epoch(page.epoch).await?;
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
            self.bootstrap(InstallMode::Normal).await?;
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

    /// Compares the full state hash with the leader's when both are at the same sequence
    /// number: the chain hash proves the same events were applied, this proves they produced
    /// the same state (index and derived data included). A mismatch is a divergence.
    async fn compare_state_hashes(&mut self) -> Result<(), NodeError> {
        let theirs = self
            .leader
            .state(None)
            .await
            .map_err(leader_error("reading the leader's state"))?;
        let engine = self.engine.clone();
        let ours = blocking(move || engine.state()).await?;
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
    async fn check_epoch(&mut self, epoch: u64) -> Result<(), NodeError> {
        let seen = self.engine.role().seen_epoch;
        if epoch < seen {
            return Err(NodeError::LeaderUnreachable(format!(
                "{} is a stale leader: its epoch {epoch} is below epoch {seen}, which this node has seen; not following it",
                self.leader.url()
            )));
        }
        self.engine.observe_epoch(epoch, None).await?;
        self.leader_epoch = Some(epoch);
        Ok(())
    }

    /// Asks the leader for its role before this node compares histories with it or takes its
    /// snapshot, and refuses a stale one (see [`Follower::check_epoch`]). The request carries
    /// this node's epoch, so a stale leader is fenced by it.
    async fn check_leader(&mut self) -> Result<(), NodeError> {
        let seen = self.engine.role().seen_epoch;
        let leader = self
            .leader
            .role(Some(seen))
            .await
            .map_err(leader_error("reading the leader's role"))?;
        self.check_epoch(leader.epoch).await
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

    /// The leader's chain hash at `seq`, if it still has it. Anything but a success or a 404
    /// (a refused key, the leader's own failure) is an error to retry, never "not retained":
    /// the history check must not be skipped.
    async fn leader_chain(&self, seq: u64) -> Result<Option<String>, NodeError> {
        self.leader
            .chain_at(seq)
            .await
            .map_err(leader_error(&format!(
                "reading the leader's chain hash at {seq}"
            )))
    }

    /// On (re)connecting, and whenever the leader's history changes, compares our history
    /// with the leader's. A leader behind us, or a different chain hash where both have
    /// entries, is divergence: the first differing sequence number is found by bisection over
    /// what both retain, reported, and latched into the engine.
    async fn check_history(&mut self, local: u64) -> Result<(), NodeError> {
        self.check_leader().await?;
        if local == 0 {
            return Ok(());
        }
        let leader = self
            .leader
            .state(None)
            .await
            .map_err(leader_error("reading the leader's state"))?;
        let top = local.min(leader.seq);
        let ours = |seq: u64| self.engine.chain_at(seq).ok().map(hex::encode);
        let theirs_at_top = if top == leader.seq {
            Some(leader.chain_hash.clone())
        } else {
            self.leader_chain(top).await?
        };
        if theirs_at_top.is_none() && top < leader.seq {
            // The leader no longer retains our last entry (it took a snapshot and pruned its
            // log while we were away): there is no chain hash to compare with, which is not
            // divergence. The log shows the gap, and this node bootstraps from the leader's
            // snapshot, its history by definition.
            tracing::info!(
                local,
                leader = leader.seq,
                "the leader no longer retains sequence number {top}: bootstrapping from its \
                 snapshot"
            );
            return Ok(());
        }
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
        // A new file, never one an older mapping could still see truncated.
        let _ = tokio::fs::remove_file(path).await;
        let mut file = tokio::fs::File::create(path)
            .await
            .doing(|| format!("creating {}", path.display()))?;
        self.leader
            .download_snapshot(seq, &mut file)
            .await
            .map_err(leader_error(&format!("downloading snapshot {seq}")))?;
        Ok(())
    }

    /// Replaces the state with the empty one (healing: also over a failed state), from which
    /// the leader's whole log is then streamed.
    async fn start_empty(&self, mode: InstallMode) -> Result<(), NodeError> {
        let path = self.engine.download_path();
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, valori_kernel::Kernel::new().snapshot())
            .doing(|| format!("writing {}", path.display()))?;
        self.engine.install_file(&path, mode, None).await?;
        self.engine.metrics().bootstraps.inc();
        tracing::info!("starting from the empty state: the leader's log begins at 1");
        Ok(())
    }

    /// Asks the leader to take a snapshot (it has none, and its log begins after 1): this needs
    /// its read-write key, and says so when this follower has only a read key.
    async fn ask_for_snapshot(&self, first_retained: Option<u64>) -> Result<u64, NodeError> {
        match self.leader.create_snapshot().await {
            Ok(created) => Ok(created.seq),
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                Err(NodeError::LeaderUnreachable(format!(
                    "asking the leader for a snapshot: the leader has no snapshot and its log \
                     begins at {}, so this follower needs one taken, which needs the leader's \
                     read-write key (--leader-api-key); or take a snapshot on the leader",
                    first_retained.map_or_else(|| "a pruned point".into(), |f| f.to_string())
                )))
            }
            Err(e) => Err(leader_error("asking the leader for a snapshot")(e)),
        }
    }

    /// Downloads the leader's newest snapshot and restores it (verified by its hashes);
    /// healing, also over a failed (diverged) state.
    async fn bootstrap(&mut self, mode: InstallMode) -> Result<(), NodeError> {
        self.check_leader().await?;
        let list = self
            .leader
            .snapshots()
            .await
            .map_err(leader_error("listing the leader's snapshots"))?;
        let newest = match list.snapshots.iter().map(|s| s.seq).max() {
            // When healing, the snapshot must be fresh enough to contain no divergent history
            // of ours; any leader snapshot qualifies, since it is the leader's own history.
            Some(s) => s,
            None => {
                // A leader whose log begins at 1 needs no snapshot: start from the empty state
                // and stream the whole log (what only a read key allows).
                let first = api::LogQuery {
                    from: 1,
                    limit: 1,
                    wait_ms: 0,
                };
                let page = self
                    .leader
                    .log(&first, &Hello::default())
                    .await
                    .map_err(leader_error("reading the leader's log"))?;
                if page.first_retained == Some(1) || page.head == 0 {
                    return self.start_empty(mode).await;
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
        // The snapshot is the leader's history, as of its epoch.
        let size = self
            .engine
            .install_file(&path, mode, self.leader_epoch)
            .await?
            .bytes;
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
    use crate::replication::valid_follower_name;

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
}
