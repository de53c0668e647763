//! The leader's side of replication: its table of followers, learnt from their log requests,
//! which synchronous writes wait on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use valori_api as api;

use crate::limits::{MAX_FOLLOWERS, MAX_FOLLOWER_NAME_BYTES};
use crate::metrics::Metrics;

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
        debug_assert!(seen.len() <= MAX_FOLLOWERS);
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

#[cfg(test)]
mod tests {
    use super::*;

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
