//! The leader's side of replication: its table of followers, learnt from their log requests,
//! which synchronous writes wait on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use valori_api as api;

use crate::limits::{CONFIRMATION_TTL, MAX_FOLLOWERS, MAX_FOLLOWER_NAME_BYTES};
use crate::metrics::Metrics;

/// The leader's view of its followers: each one's confirmed sequence number and when it last
/// asked, learnt from their `GET /v1/log` requests (asking for `from` confirms everything
/// before it). A confirmation counts for synchronous writes only when it is
/// - proven: the follower's chain hash at `from - 1` equals ours;
/// - credentialed: the request presented the read-write key (a read-only key can read our
///   chain hashes too, so its claim proves nothing);
/// - of this history: made under the node's current [`Generation`] (the role's epoch and
///   the history generation): a confirmation made before the role changed or a restore
///   rewrote the history is shown, but no longer counts;
/// - fresh: a follower not heard from for [`CONFIRMATION_TTL`] is dropped.
pub struct Followers {
    table: Mutex<Table>,
    /// Woken whenever a follower confirms more.
    changed: tokio::sync::Notify,
    /// How long a follower not heard from stays in the table.
    ttl: Duration,
}

impl Default for Followers {
    fn default() -> Followers {
        Followers::with_ttl(CONFIRMATION_TTL)
    }
}

/// The node's role and history the confirmations were made under: the assignment's epoch and
/// the history generation. A confirmation of another generation says nothing of this one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// The epoch of the role's assignment.
    pub epoch: u64,
    /// The history generation (bumped by restores and promotions).
    pub history: u64,
}

/// What a follower's request proves.
#[derive(Clone, Copy, Debug)]
pub struct Proof {
    /// Whether its chain hash at `from - 1` is ours (`None`: it did not say).
    pub chain: Option<bool>,
    /// Whether it presented the read-write key, the replication credential.
    pub credentialed: bool,
}

#[derive(Default)]
struct Table {
    seen: BTreeMap<String, Seen>,
}

struct Seen {
    confirmed: u64,
    at: Instant,
    proof: Proof,
    generation: Generation,
}

impl Seen {
    fn counts(&self, generation: Generation) -> bool {
        self.proof.chain == Some(true) && self.proof.credentialed && self.generation == generation
    }
}

impl Table {
    /// Drops followers not heard from for `ttl` (their metric series with them).
    fn current(&mut self, ttl: Duration, metrics: &Metrics) {
        self.seen.retain(|name, s| {
            let fresh = s.at.elapsed() < ttl;
            if !fresh {
                let _ = metrics.follower_seq.remove_label_values(&[name]);
            }
            fresh
        });
    }
}

impl Followers {
    /// A table that drops a follower not heard from for `ttl` ([`CONFIRMATION_TTL`] in a
    /// node).
    pub fn with_ttl(ttl: Duration) -> Followers {
        Followers {
            table: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            ttl,
        }
    }

    /// Follower `name` asked for the log from `from` on, proving (or not) that it holds our
    /// history up to `from - 1`.
    /// At most [`MAX_FOLLOWERS`] are kept: a new name beyond that replaces the one heard from
    /// longest ago (its metric series goes with it), so invented names cannot grow memory or
    /// `/metrics` without bound.
    pub fn asked(
        &self,
        name: &str,
        from: u64,
        proof: Proof,
        generation: Generation,
        metrics: &Metrics,
    ) {
        let confirmed = from.saturating_sub(1);
        let mut table = self.table.lock().expect("followers lock");
        table.current(self.ttl, metrics);
        let seen = &mut table.seen;
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
                proof,
                generation,
            },
        );
        debug_assert!(seen.len() <= MAX_FOLLOWERS);
        drop(table);
        metrics
            .follower_seq
            .with_label_values(&[name])
            .set(confirmed as i64);
        self.changed.notify_waiters();
    }

    /// How many followers hold our history up to `seq`, by confirmations that count.
    fn holding(&self, seq: u64, generation: Generation, metrics: &Metrics) -> u32 {
        let mut table = self.table.lock().expect("followers lock");
        table.current(self.ttl, metrics);
        table
            .seen
            .values()
            .filter(|s| s.counts(generation) && s.confirmed >= seq)
            .count() as u32
    }

    /// The highest sequence number that at least `needed` followers hold (by confirmations of
    /// `generation` that count); 0 when fewer follow.
    pub fn held_by(&self, needed: u32, generation: Generation, metrics: &Metrics) -> u64 {
        let mut table = self.table.lock().expect("followers lock");
        table.current(self.ttl, metrics);
        let mut confirmed: Vec<u64> = table
            .seen
            .values()
            .filter(|s| s.counts(generation))
            .map(|s| s.confirmed)
            .collect();
        confirmed.sort_unstable_by(|a, b| b.cmp(a));
        match needed {
            0 => u64::MAX,
            n => confirmed.get(n as usize - 1).copied().unwrap_or(0),
        }
    }

    /// How many followers confirmed (with confirmations that count) within `within`.
    pub fn recent(&self, within: Duration, generation: Generation, metrics: &Metrics) -> u32 {
        let mut table = self.table.lock().expect("followers lock");
        table.current(self.ttl, metrics);
        table
            .seen
            .values()
            .filter(|s| s.counts(generation) && s.at.elapsed() <= within)
            .count() as u32
    }

    /// Waits until `needed` followers hold our history up to `seq`, at most `timeout`;
    /// otherwise answers how many did. `generation` is the node's when the write committed:
    /// confirmations of another are not counted.
    pub async fn wait_for(
        &self,
        seq: u64,
        needed: u32,
        timeout: Duration,
        generation: Generation,
        metrics: &Metrics,
    ) -> Result<(), u32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before counting, so a confirmation in between still wakes us.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let holding = self.holding(seq, generation, metrics);
            if holding >= needed {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.holding(seq, generation, metrics));
            }
        }
    }

    /// Every follower heard from within the TTL, with its lag behind `seq` (this node's
    /// sequence number). One that confirmed more than this node has (a history rewritten by a
    /// restore, say) or whose chain differs from ours is diverged.
    pub fn status(&self, seq: u64, metrics: &Metrics) -> api::ReplicationStatus {
        let mut table = self.table.lock().expect("followers lock");
        table.current(self.ttl, metrics);
        let followers = table
            .seen
            .iter()
            .map(|(name, s)| api::FollowerStatus {
                name: name.clone(),
                confirmed_seq: s.confirmed,
                lag_events: seq.saturating_sub(s.confirmed),
                seconds_since_seen: s.at.elapsed().as_secs_f64(),
                diverged: s.confirmed > seq || s.proof.chain == Some(false),
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

    const PROVEN: Proof = Proof {
        chain: Some(true),
        credentialed: true,
    };
    const GEN: Generation = Generation {
        epoch: 1,
        history: 0,
    };

    #[test]
    fn only_proven_credentialed_confirmations_of_this_generation_count() {
        let m = Metrics::new();
        let f = Followers::default();
        f.asked("a", 11, PROVEN, GEN, &m);
        f.asked(
            "b",
            11,
            Proof {
                credentialed: false,
                ..PROVEN
            },
            GEN,
            &m,
        );
        f.asked(
            "c",
            11,
            Proof {
                chain: None,
                ..PROVEN
            },
            GEN,
            &m,
        );
        f.asked(
            "d",
            11,
            Proof {
                chain: Some(false),
                ..PROVEN
            },
            GEN,
            &m,
        );
        assert_eq!(f.holding(10, GEN, &m), 1, "only a counts");
        assert_eq!(f.holding(11, GEN, &m), 0, "asking for 11 confirms 10");
        assert_eq!(f.status(12, &m).followers.len(), 4, "all are shown");
        // A new role or a restore: what was confirmed before proves nothing now.
        let promoted = Generation {
            epoch: 2,
            history: 1,
        };
        assert_eq!(f.holding(10, promoted, &m), 0);
        assert_eq!(
            f.status(12, &m).followers.len(),
            4,
            "still shown, no longer counted"
        );
        f.asked("a", 11, PROVEN, promoted, &m);
        assert_eq!(f.holding(10, promoted, &m), 1);
        let restored = Generation {
            epoch: 2,
            history: 2,
        };
        assert_eq!(f.recent(Duration::from_secs(60), restored, &m), 0);
    }

    #[test]
    fn a_follower_that_stopped_asking_expires() {
        let m = Metrics::new();
        let f = Followers::with_ttl(Duration::from_millis(50));
        f.asked("a", 5, PROVEN, GEN, &m);
        assert_eq!(f.recent(Duration::from_secs(1), GEN, &m), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(f.holding(4, GEN, &m), 0);
        assert!(f.status(5, &m).followers.is_empty());
        assert!(
            !m.render().contains("follower=\"a\""),
            "its metric series went with it"
        );
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
