//! Failover: the operator is the single arbiter. When the leader stays unready past the
//! failover delay, it fences the old leader, picks the follower with the highest durable
//! sequence number whose history agrees with the others, and promotes it with the next epoch;
//! the other followers and, when it returns, the old leader follow it.
//!
//! [`decide`] is the decision, a pure function of what the nodes answered. [`fail_over`]
//! gathers those answers over the nodes' API and carries the decision out through their role
//! API: the same code the reconcile loop calls. It never writes to a node's data; it changes
//! roles only with a higher epoch than any node has seen.

use std::time::Duration;

use valori_api as api;

/// What the operator learnt of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The pod (or any stable name).
    pub name: String,
    /// Its role as it reported it; `None` when it did not answer.
    pub role: Option<api::RoleInfo>,
    /// Its chain hash at the common sequence number (the lowest of the answering followers'),
    /// when it answered.
    pub chain_at_common: Option<String>,
}

/// What the operator does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Promote this follower with this epoch.
    Promote {
        /// The follower.
        name: String,
        /// The next epoch.
        epoch: u64,
    },
    /// Do nothing yet, for this reason (reported in status and an Event).
    Wait {
        /// Why.
        reason: String,
    },
}

/// How many of `followers` followers the arbiter must reach before it may promote, so that
/// with `sync` synchronous replicas every acknowledged write is on one of them: N - W + 1 (a
/// write is on W followers; N - W + 1 of N always include one of those W). Asynchronous
/// replication needs just one.
pub fn quorum(followers: u32, sync: u32) -> u32 {
    if sync == 0 {
        1
    } else {
        followers.saturating_sub(sync) + 1
    }
}

/// Decides a failover from the followers' answers: waits while fewer than [`quorum`] answer;
/// otherwise promotes, among those whose chain hashes agree at the common sequence number (the
/// largest agreeing group), the one with the highest sequence number (ties by name), with an
/// epoch above every epoch any of them has seen and `current_epoch`.
pub fn decide(followers: &[Observed], sync: u32, current_epoch: u64) -> Decision {
    let n = followers.len() as u32;
    let answering: Vec<(&Observed, &api::RoleInfo)> = followers
        .iter()
        .filter_map(|f| f.role.as_ref().map(|r| (f, r)))
        .collect();
    let needed = quorum(n, sync);
    if n == 0 {
        return Decision::Wait {
            reason: "no follower to promote".into(),
        };
    }
    if (answering.len() as u32) < needed {
        return Decision::Wait {
            reason: format!(
                "reached {} of {n} followers; with {sync} synchronous replicas {needed} must answer so that every acknowledged write is among them",
                answering.len()
            ),
        };
    }
    // Groups of followers whose histories agree at the common sequence number.
    let mut groups: std::collections::BTreeMap<&str, Vec<(&Observed, &api::RoleInfo)>> =
        Default::default();
    for (f, r) in &answering {
        let chain = f.chain_at_common.as_deref().unwrap_or("");
        groups.entry(chain).or_default().push((f, r));
    }
    let best_of = |g: &Vec<(&Observed, &api::RoleInfo)>| {
        g.iter()
            .map(|(f, r)| (r.seq, std::cmp::Reverse(f.name.clone())))
            .max()
    };
    let group = groups
        .values()
        .max_by(|a, b| {
            a.len()
                .cmp(&b.len())
                .then_with(|| best_of(a).cmp(&best_of(b)))
        })
        .expect("at least one follower answered");
    if (group.len() as u32) < needed {
        return Decision::Wait {
            reason: format!(
                "the followers' histories disagree at the common sequence number: the largest agreeing group has {} of the {needed} needed",
                group.len()
            ),
        };
    }
    let (chosen, _) = group
        .iter()
        .max_by(|(fa, ra), (fb, rb)| ra.seq.cmp(&rb.seq).then_with(|| fb.name.cmp(&fa.name)))
        .expect("a group is never empty");
    let seen = answering
        .iter()
        .map(|(_, r)| r.seen_epoch.max(r.epoch))
        .max()
        .unwrap_or(0);
    Decision::Promote {
        name: chosen.name.clone(),
        epoch: seen.max(current_epoch) + 1,
    }
}

/// A node the operator reaches over HTTP.
#[derive(Clone, Debug)]
pub struct NodeRef {
    /// Its stable name (the pod).
    pub name: String,
    /// Its base URL.
    pub url: String,
}

/// Why a node call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node did not answer.
    #[error("{0} did not answer: {1}")]
    Unreachable(String, String),
    /// The node answered with an error.
    #[error("{node} answered {status}: {code}: {message}")]
    Refused {
        /// The node.
        node: String,
        /// HTTP status.
        status: u16,
        /// The node's error code.
        code: String,
        /// The node's message.
        message: String,
    },
}

impl CallError {
    /// The client's error of a call to `node`.
    fn of(node: &NodeRef, e: valori_client::Error) -> CallError {
        match e {
            valori_client::Error::Refused {
                status,
                code,
                message,
            } => CallError::Refused {
                node: node.name.clone(),
                status,
                code,
                message,
            },
            other => CallError::Unreachable(node.name.clone(), other.to_string()),
        }
    }
}

/// A client of the nodes' API: one [`valori_client::Connector`] (one connection pool, the
/// cluster's key) for every node.
#[derive(Clone)]
pub struct Nodes {
    connector: valori_client::Connector,
}

impl Nodes {
    /// A client presenting `key` (the cluster's read-write key) when given.
    pub fn new(key: Option<String>, timeout: Duration) -> Nodes {
        Nodes::with_ca(key, timeout, None).expect("an HTTP client without extra roots")
    }

    /// A client that also trusts the certificates of the PEM bundle `ca` (the CA of nodes that
    /// serve TLS with a private certificate). Each call may take `timeout`.
    pub fn with_ca(
        key: Option<String>,
        timeout: Duration,
        ca: Option<&[u8]>,
    ) -> Result<Nodes, String> {
        let options = valori_client::Options {
            connect_timeout: timeout,
            timeout: Some(timeout),
            read_timeout: None,
            ca_pem: ca.map(<[u8]>::to_vec),
        };
        Ok(Nodes {
            connector: valori_client::Connector::new(key, &options).map_err(|e| e.to_string())?,
        })
    }

    fn client(&self, node: &NodeRef) -> Result<valori_client::Client, CallError> {
        self.connector
            .client(&node.url)
            .map_err(|e| CallError::of(node, e))
    }

    /// `GET /v1/role`.
    pub async fn role(&self, node: &NodeRef) -> Result<api::RoleInfo, CallError> {
        let r = self.client(node)?.role(None).await;
        r.map_err(|e| CallError::of(node, e))
    }

    /// `GET /v1/role` naming `epoch`: a leader below it stops taking writes (it is fenced)
    /// and keeps serving its log, so that followers can catch up with everything it took.
    pub async fn fence(&self, node: &NodeRef, epoch: u64) -> Result<api::RoleInfo, CallError> {
        let r = self.client(node)?.role(Some(epoch)).await;
        r.map_err(|e| CallError::of(node, e))
    }

    /// `GET /v1/state?seq=N`: the chain hash at `seq`.
    pub async fn chain_at(&self, node: &NodeRef, seq: u64) -> Result<String, CallError> {
        let r = self.client(node)?.state(Some(seq)).await;
        r.map(|s| s.chain_hash).map_err(|e| CallError::of(node, e))
    }

    /// `GET /v1/state`: the node's sequence number, chain hash and state hash now.
    pub async fn state(&self, node: &NodeRef) -> Result<api::State, CallError> {
        let r = self.client(node)?.state(None).await;
        r.map_err(|e| CallError::of(node, e))
    }

    /// `PUT /v1/role`.
    pub async fn set_role(
        &self,
        node: &NodeRef,
        role: &api::SetRole,
    ) -> Result<api::RoleInfo, CallError> {
        let r = self.client(node)?.set_role(role).await;
        r.map_err(|e| CallError::of(node, e))
    }
}

/// What a failover did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The decision taken.
    pub decision: Decision,
    /// Whether the old leader answered and was demoted (fenced) before the promotion.
    pub old_leader_fenced: bool,
    /// Followers pointed at the new leader.
    pub repointed: Vec<String>,
}

/// Observes the followers ([`decide`]'s input): their roles, then their chain hashes at the
/// lowest sequence number among those that answered.
pub async fn observe(nodes: &Nodes, followers: &[NodeRef]) -> Vec<Observed> {
    let mut observed = Vec::with_capacity(followers.len());
    for f in followers {
        observed.push(Observed {
            name: f.name.clone(),
            role: nodes.role(f).await.ok(),
            chain_at_common: None,
        });
    }
    let common = observed
        .iter()
        .filter_map(|o| o.role.as_ref().map(|r| r.seq))
        .min();
    if let Some(common) = common {
        for (o, f) in observed.iter_mut().zip(followers) {
            if o.role.is_some() {
                o.chain_at_common = nodes.chain_at(f, common).await.ok();
            }
        }
    }
    observed
}

/// Fails over from `old_leader` (when there is one) to one of `followers`: observes, decides,
/// and when it promotes, first demotes the old leader with the new epoch if it answers (the
/// epoch fences it when it does not), then promotes the chosen follower and points the others
/// at it. The old leader is pointed at the new one as well, so that it rejoins when it returns.
pub async fn fail_over(
    nodes: &Nodes,
    old_leader: Option<&NodeRef>,
    followers: &[NodeRef],
    sync: u32,
    current_epoch: u64,
) -> Result<Outcome, CallError> {
    let observed = observe(nodes, followers).await;
    let decision = decide(&observed, sync, current_epoch);
    let Decision::Promote { name, epoch } = &decision else {
        return Ok(Outcome {
            decision,
            old_leader_fenced: false,
            repointed: Vec::new(),
        });
    };
    let new = followers
        .iter()
        .find(|f| &f.name == name)
        .expect("the decision names one of the followers");
    let follow = api::SetRole {
        role: api::Role::Follower,
        epoch: *epoch,
        leader_url: Some(new.url.clone()),
    };
    let old_leader_fenced = match old_leader {
        Some(old) => nodes.set_role(old, &follow).await.is_ok(),
        None => false,
    };
    nodes
        .set_role(
            new,
            &api::SetRole {
                role: api::Role::Leader,
                epoch: *epoch,
                leader_url: None,
            },
        )
        .await?;
    let mut repointed = Vec::new();
    for f in followers.iter().filter(|f| f.name != new.name) {
        if nodes.set_role(f, &follow).await.is_ok() {
            repointed.push(f.name.clone());
        }
    }
    Ok(Outcome {
        decision,
        old_leader_fenced,
        repointed,
    })
}

/// What a switchover did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switched {
    /// Whether the new leader took over (otherwise the old one leads again).
    pub switched: bool,
    /// The epoch of whoever leads now.
    pub epoch: u64,
}

/// Hands leadership from a healthy `old` leader to follower `new` without losing a write, in
/// either replication mode: fences `old` with the next epoch (it stops taking writes and keeps
/// serving its log), waits until `new` holds everything `old` has, promotes `new` at that
/// epoch, then points `old` and `others` at it. If `new` does not catch up within `timeout`,
/// `old` is given the leadership back at the new epoch and nothing else changes.
pub async fn switchover(
    nodes: &Nodes,
    old: &NodeRef,
    new: &NodeRef,
    others: &[NodeRef],
    current_epoch: u64,
    timeout: Duration,
) -> Result<Switched, CallError> {
    let seen = nodes.role(new).await?;
    let epoch = current_epoch.max(seen.seen_epoch).max(seen.epoch) + 1;
    let mut target = nodes.fence(old, epoch).await?.seq;
    let deadline = tokio::time::Instant::now() + timeout;
    let caught_up = loop {
        match nodes.role(new).await {
            Ok(r) if r.seq >= target => {
                // A write that was committing as the fence arrived may land after it: the old
                // leader's sequence number must be the same once more.
                let now = nodes.role(old).await?.seq;
                if now <= target {
                    break true;
                }
                target = now;
            }
            _ if tokio::time::Instant::now() >= deadline => break false,
            _ => tokio::time::sleep(crate::limits::SWITCHOVER_POLL).await,
        }
    };
    if !caught_up {
        let back = api::SetRole {
            role: api::Role::Leader,
            epoch,
            leader_url: None,
        };
        nodes.set_role(old, &back).await?;
        for f in others.iter().chain([new]) {
            let _ = nodes
                .set_role(
                    f,
                    &api::SetRole {
                        role: api::Role::Follower,
                        epoch,
                        leader_url: Some(old.url.clone()),
                    },
                )
                .await;
        }
        return Ok(Switched {
            switched: false,
            epoch,
        });
    }
    nodes
        .set_role(
            new,
            &api::SetRole {
                role: api::Role::Leader,
                epoch,
                leader_url: None,
            },
        )
        .await?;
    let follow = api::SetRole {
        role: api::Role::Follower,
        epoch,
        leader_url: Some(new.url.clone()),
    };
    nodes.set_role(old, &follow).await?;
    for f in others {
        let _ = nodes.set_role(f, &follow).await;
    }
    Ok(Switched {
        switched: true,
        epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, seq: u64, epoch: u64, chain: &str) -> Observed {
        Observed {
            name: name.into(),
            role: Some(api::RoleInfo {
                role: api::Role::Follower,
                epoch,
                leader_url: Some("http://old".into()),
                seq,
                seen_epoch: epoch,
                writable: false,
            }),
            chain_at_common: Some(chain.into()),
        }
    }

    fn gone(name: &str) -> Observed {
        Observed {
            name: name.into(),
            role: None,
            chain_at_common: None,
        }
    }

    fn promote(name: &str, epoch: u64) -> Decision {
        Decision::Promote {
            name: name.into(),
            epoch,
        }
    }

    fn waits(d: &Decision, why: &str) {
        match d {
            Decision::Wait { reason } => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected to wait ({why}), got {other:?}"),
        }
    }

    #[test]
    fn the_quorum_is_n_minus_w_plus_one() {
        for (n, w, q) in [
            (1, 0, 1),
            (2, 0, 1),
            (2, 1, 2),
            (2, 2, 1),
            (4, 1, 4),
            (4, 2, 3),
            (4, 4, 1),
            (5, 3, 3),
        ] {
            assert_eq!(quorum(n, w), q, "N={n} W={w}");
        }
    }

    #[test]
    fn the_most_advanced_agreeing_follower_is_promoted_with_the_next_epoch() {
        let d = decide(&[node("a", 10, 1, "c"), node("b", 12, 1, "c")], 0, 1);
        assert_eq!(d, promote("b", 2));
        // Ties break by name.
        let d = decide(&[node("b", 12, 1, "c"), node("a", 12, 1, "c")], 1, 1);
        assert_eq!(d, promote("a", 2));
        // The epoch goes above anything seen.
        let d = decide(&[node("a", 3, 4, "c"), node("b", 2, 7, "c")], 0, 5);
        assert_eq!(d, promote("a", 8));
        let d = decide(&[node("a", 3, 1, "c")], 0, 9);
        assert_eq!(d, promote("a", 10));
    }

    #[test]
    fn asynchronous_mode_promotes_whoever_answers() {
        let d = decide(&[gone("a"), node("b", 5, 1, "c"), gone("c")], 0, 1);
        assert_eq!(d, promote("b", 2));
        waits(&decide(&[gone("a"), gone("b")], 0, 1), "reached 0 of 2");
        waits(&decide(&[], 0, 1), "no follower");
    }

    #[test]
    fn synchronous_mode_waits_until_it_reaches_enough_followers() {
        // N=2, W=1: both must answer, or the one acknowledged copy may be on the silent one.
        waits(
            &decide(&[node("a", 9, 1, "c"), gone("b")], 1, 1),
            "reached 1 of 2",
        );
        assert_eq!(
            decide(&[node("a", 9, 1, "c"), node("b", 8, 1, "c")], 1, 1),
            promote("a", 2)
        );
        // N=3, W=2: two suffice.
        assert_eq!(
            decide(
                &[node("a", 9, 1, "c"), gone("b"), node("c", 11, 1, "c")],
                2,
                1
            ),
            promote("c", 2)
        );
        waits(
            &decide(&[node("a", 9, 1, "c"), gone("b"), gone("c")], 2, 1),
            "2 must answer",
        );
    }

    #[test]
    fn followers_whose_histories_disagree_are_not_candidates() {
        // c's chain at the common sequence number differs: it is not promoted, however advanced.
        let d = decide(
            &[
                node("a", 9, 1, "x"),
                node("b", 10, 1, "x"),
                node("c", 50, 1, "y"),
            ],
            0,
            1,
        );
        assert_eq!(d, promote("b", 2));
        // With synchronous replication the agreeing group must itself reach the quorum.
        waits(
            &decide(&[node("a", 9, 1, "x"), node("b", 10, 1, "y")], 1, 1),
            "disagree",
        );
    }
}
