//! Failover: the operator is the single arbiter. When the leader stays unready past the
//! failover delay, it chooses the next epoch, records it (so that no later pass, and no second
//! arbiter, can use it again), raises every follower it reaches to it (from then on none of
//! them confirms the old leader's writes), observes them, and promotes the one whose history
//! is the most advanced among those that agree, at that epoch; the other followers and, when
//! it returns, the old leader follow it.
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
    /// Its role as it reported it (after it was raised to the failover's epoch); `None` when
    /// it did not answer.
    pub role: Option<api::RoleInfo>,
    /// Its chain hash at the common sequence number (the lowest of the answering, non-empty
    /// candidates'), when it answered and holds any history.
    pub chain_at_common: Option<String>,
}

/// What the operator does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Promote this follower with this epoch.
    Promote {
        /// The follower.
        name: String,
        /// The epoch (the one the followers were raised to).
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

/// Why a follower cannot be promoted, if it cannot: it did not answer, reports itself a
/// leader, diverged from its leader, or heard of an epoch above the failover's (another
/// arbiter is at work).
fn unfit(o: &Observed, epoch: u64) -> Option<String> {
    let Some(r) = &o.role else {
        return Some(format!("{} did not answer", o.name));
    };
    if r.role == api::Role::Leader {
        return Some(format!("{} reports itself a leader", o.name));
    }
    if r.diverged {
        return Some(format!("{} diverged from its leader", o.name));
    }
    if r.seen_epoch > epoch {
        return Some(format!(
            "{} has seen epoch {}, above this failover's {epoch}: another arbiter is at work",
            o.name, r.seen_epoch
        ));
    }
    None
}

/// Decides a failover at `epoch` from the followers' answers, with `followers` the number of
/// followers the cluster is configured with (never fewer than answered: a pod that is not
/// listed may still hold acknowledged writes). Promotes, among the candidates (followers that
/// answered, report themselves followers, did not diverge, and saw no epoch above this one)
/// whose histories agree at the common sequence number (an empty history agrees with every
/// other; the largest agreeing group), the one whose history ends latest: by the epoch of its
/// last entry, then its sequence number, ties by name. Waits while fewer than [`quorum`]
/// candidates agree, or when another arbiter raised an epoch above this one.
pub fn decide(followers: &[Observed], configured: u32, sync: u32, epoch: u64) -> Decision {
    let n = configured.max(followers.len() as u32);
    if n == 0 {
        return Decision::Wait {
            reason: "no follower to promote".into(),
        };
    }
    if let Some(other) = followers
        .iter()
        .filter_map(|f| {
            unfit(f, epoch).filter(|_| f.role.as_ref().is_some_and(|r| r.seen_epoch > epoch))
        })
        .next()
    {
        return Decision::Wait { reason: other };
    }
    let candidates: Vec<(&Observed, &api::RoleInfo)> = followers
        .iter()
        .filter(|f| unfit(f, epoch).is_none())
        .filter_map(|f| f.role.as_ref().map(|r| (f, r)))
        .collect();
    let needed = quorum(n, sync);
    if (candidates.len() as u32) < needed {
        let unfit: Vec<String> = followers.iter().filter_map(|f| unfit(f, epoch)).collect();
        return Decision::Wait {
            reason: format!(
                "reached {} of {n} followers that can be promoted{}; with {sync} synchronous replicas {needed} must be, so that every acknowledged write is among them",
                candidates.len(),
                if unfit.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", unfit.join("; "))
                }
            ),
        };
    }
    // Groups of non-empty candidates whose histories agree at the common sequence number; an
    // empty history is a prefix of every history, so the empty ones join whichever group.
    let empty = candidates.iter().filter(|(_, r)| r.seq == 0).count();
    let mut groups: std::collections::BTreeMap<&str, Vec<(&Observed, &api::RoleInfo)>> =
        Default::default();
    for (f, r) in candidates.iter().filter(|(_, r)| r.seq > 0) {
        groups
            .entry(f.chain_at_common.as_deref().unwrap_or(""))
            .or_default()
            .push((f, r));
    }
    let rank = |(f, r): &(&Observed, &api::RoleInfo)| {
        (r.last_epoch, r.seq, std::cmp::Reverse(f.name.clone()))
    };
    let chosen = match groups.values().max_by(|a, b| {
        a.len()
            .cmp(&b.len())
            .then_with(|| a.iter().map(rank).max().cmp(&b.iter().map(rank).max()))
    }) {
        Some(group) => {
            if ((group.len() + empty) as u32) < needed {
                return Decision::Wait {
                    reason: format!(
                        "the followers' histories disagree at the common sequence number: the largest agreeing group has {} of the {needed} needed",
                        group.len() + empty
                    ),
                };
            }
            group
                .iter()
                .max_by_key(|c| rank(c))
                .expect("a group is never empty")
                .0
        }
        // Every candidate is empty: any of them holds everything acknowledged (nothing).
        None => {
            candidates
                .iter()
                .max_by_key(|c| rank(c))
                .expect("enough candidates")
                .0
        }
    };
    Decision::Promote {
        name: chosen.name.clone(),
        epoch,
    }
}

/// The epoch a failover or switchover uses: above the cluster's and every epoch a node it
/// heard from has seen or been given.
pub fn next_epoch<'a>(current: u64, answers: impl IntoIterator<Item = &'a api::RoleInfo>) -> u64 {
    answers
        .into_iter()
        .map(|r| r.seen_epoch.max(r.epoch))
        .fold(current, u64::max)
        + 1
}

/// The name every operator replica speaks as: they are one arbiter (the Lease and the
/// cluster's status order them), distinct from any run of the one-shot commands.
pub const OPERATOR_ARBITER: &str = "valori-operator";

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
    /// serve TLS with a private certificate). Each call may take `timeout`. It speaks for the
    /// operator ([`OPERATOR_ARBITER`]).
    pub fn with_ca(
        key: Option<String>,
        timeout: Duration,
        ca: Option<&[u8]>,
    ) -> Result<Nodes, String> {
        Nodes::for_arbiter(key, timeout, ca, OPERATOR_ARBITER)
    }

    /// [`Nodes::with_ca`] speaking for arbiter `arbiter`: the epochs it raises nodes to, or
    /// gives roles at, are claimed for it, and refused it when another arbiter claimed them.
    pub fn for_arbiter(
        key: Option<String>,
        timeout: Duration,
        ca: Option<&[u8]>,
        arbiter: &str,
    ) -> Result<Nodes, String> {
        let options = valori_client::Options {
            connect_timeout: timeout,
            timeout: Some(timeout),
            read_timeout: None,
            ca_pem: ca.map(<[u8]>::to_vec),
            arbiter: Some(arbiter.to_string()),
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

    /// `GET /v1/backups`: the node's backup destination and log shipping.
    pub async fn backups(&self, node: &NodeRef) -> Result<api::BackupList, CallError> {
        let r = self.client(node)?.backups().await;
        r.map_err(|e| CallError::of(node, e))
    }

    /// `POST /v1/backups`: a snapshot uploaded to the backup destination now.
    pub async fn create_backup(&self, node: &NodeRef) -> Result<api::BackupInfo, CallError> {
        let r = self.client(node)?.create_backup().await;
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
    /// Whether the old leader answered and was demoted before the promotion.
    pub old_leader_fenced: bool,
    /// Followers pointed at the new leader.
    pub repointed: Vec<String>,
}

/// Each node's role as it answers (`None`: it did not).
async fn roles(nodes: &Nodes, of: &[NodeRef]) -> Vec<Option<api::RoleInfo>> {
    futures::future::join_all(of.iter().map(|n| async move { nodes.role(n).await.ok() })).await
}

/// Observes the followers ([`decide`]'s input) as `roles` left them: their chain hashes at the
/// lowest sequence number among the candidates that hold any history.
pub async fn observe(
    nodes: &Nodes,
    followers: &[NodeRef],
    roles: Vec<Option<api::RoleInfo>>,
    epoch: u64,
) -> Vec<Observed> {
    let mut observed: Vec<Observed> = followers
        .iter()
        .zip(roles)
        .map(|(f, role)| Observed {
            name: f.name.clone(),
            role,
            chain_at_common: None,
        })
        .collect();
    let common = observed
        .iter()
        .filter(|o| unfit(o, epoch).is_none())
        .filter_map(|o| o.role.as_ref().map(|r| r.seq))
        .filter(|&s| s > 0)
        .min();
    if let Some(common) = common {
        for (o, f) in observed.iter_mut().zip(followers) {
            if o.role.as_ref().is_some_and(|r| r.seq > 0) {
                o.chain_at_common = nodes.chain_at(f, common).await.ok();
            }
        }
    }
    observed
}

/// Fails over from `old_leader` (when there is one) to one of `followers`, for a cluster of
/// `configured` followers with `sync` synchronous replicas whose current epoch is
/// `current_epoch`. In this order:
/// 1. asks the followers' roles; while fewer than [`quorum`] answer, waits and changes nothing;
/// 2. chooses the next epoch ([`next_epoch`]) and `record`s it (the controller writes it to
///    the cluster's status, conditionally on what it read: a second arbiter loses there) before
///    any role call;
/// 3. raises every follower it reaches, and the old leader if it answers, to that epoch
///    (`GET /v1/role` naming it): from then on no follower confirms the old leader's writes,
///    and the old leader, once reached, takes none;
/// 4. observes the followers as they stand after it and [`decide`]s;
/// 5. demotes the old leader if it answers, promotes the chosen follower, points the others
///    at it.
pub async fn fail_over<F, Fut, E>(
    nodes: &Nodes,
    old_leader: Option<&NodeRef>,
    followers: &[NodeRef],
    configured: u32,
    sync: u32,
    current_epoch: u64,
    record: F,
) -> Result<Outcome, E>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: From<CallError>,
{
    let waiting = |reason: String| Outcome {
        decision: Decision::Wait { reason },
        old_leader_fenced: false,
        repointed: Vec::new(),
    };
    let first = roles(nodes, followers).await;
    let n = configured.max(followers.len() as u32);
    let answering = first.iter().flatten().count() as u32;
    if n == 0 || answering < quorum(n, sync) {
        let pre = followers
            .iter()
            .zip(first)
            .map(|(f, role)| Observed {
                name: f.name.clone(),
                role,
                chain_at_common: None,
            })
            .collect::<Vec<_>>();
        return Ok(match decide(&pre, configured, sync, current_epoch + 1) {
            Decision::Wait { reason } => waiting(reason),
            Decision::Promote { .. } => unreachable!("fewer than the quorum answered"),
        });
    }
    let epoch = next_epoch(current_epoch, first.iter().flatten());
    record(epoch).await?;
    // Raised first: a follower raised to the new epoch no longer confirms the old leader's
    // writes (it refuses a leader below the epoch it has seen), so what this observes is all
    // the old leader can have had acknowledged.
    let answers = futures::future::join_all(
        followers
            .iter()
            .map(|f| async move { nodes.fence(f, epoch).await }),
    )
    .await;
    // A node that refuses the epoch because another arbiter claimed it there: two arbiters
    // chose it at once, and this one gives up (the other, or a later pass, goes on).
    let claimed: Vec<String> = answers
        .iter()
        .filter_map(|a| match a {
            Err(CallError::Refused {
                node,
                code,
                message,
                ..
            }) if code == "epoch_claimed" => Some(format!("{node}: {message}")),
            _ => None,
        })
        .collect();
    if !claimed.is_empty() {
        return Ok(waiting(format!(
            "another arbiter claimed epoch {epoch}: {}",
            claimed.join("; ")
        )));
    }
    let raised: Vec<Option<api::RoleInfo>> = answers.into_iter().map(Result::ok).collect();
    if let Some(old) = old_leader {
        let _ = nodes.fence(old, epoch).await;
    }
    let observed = observe(nodes, followers, raised, epoch).await;
    let decision = decide(&observed, configured, sync, epoch);
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
    let follow = api::SetRole::follower(*epoch, &new.url);
    let old_leader_fenced = match old_leader {
        Some(old) => nodes.set_role(old, &follow).await.is_ok(),
        None => false,
    };
    nodes.set_role(new, &api::SetRole::leader(*epoch)).await?;
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
/// either replication mode: chooses the next epoch and `record`s it (as [`fail_over`] does),
/// fences `old` with it (the fence orders with `old`'s commits, so the sequence number it
/// answers is `old`'s last: it stops taking writes and keeps serving its log), waits until
/// `new` holds everything `old` has, promotes `new` at that epoch, then points `old` and
/// `others` at it. If `new` does not catch up within `timeout`, `old` is given the leadership
/// back at the new epoch and nothing else changes.
pub async fn switchover<F, Fut, E>(
    nodes: &Nodes,
    old: &NodeRef,
    new: &NodeRef,
    others: &[NodeRef],
    current_epoch: u64,
    timeout: Duration,
    record: F,
) -> Result<Switched, E>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: From<CallError>,
{
    let answers = [nodes.role(new).await?, nodes.role(old).await?];
    let epoch = next_epoch(current_epoch, &answers);
    record(epoch).await?;
    let mut target = nodes.fence(old, epoch).await?.seq;
    let deadline = tokio::time::Instant::now() + timeout;
    let caught_up = loop {
        match nodes.role(new).await {
            Ok(r) if r.seq >= target => {
                // Nothing commits after the fence; a node from before it was ordered may
                // still answer with a later sequence number: then wait for that too.
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
        nodes.set_role(old, &api::SetRole::leader(epoch)).await?;
        for f in others.iter().chain([new]) {
            let _ = nodes
                .set_role(f, &api::SetRole::follower(epoch, &old.url))
                .await;
        }
        return Ok(Switched {
            switched: false,
            epoch,
        });
    }
    nodes.set_role(new, &api::SetRole::leader(epoch)).await?;
    let follow = api::SetRole::follower(epoch, &new.url);
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

    /// A follower at `seq`, raised to `epoch`, whose last entry was written at `last_epoch`,
    /// with chain `chain` at the common sequence number.
    fn node(name: &str, seq: u64, epoch: u64, chain: &str) -> Observed {
        at(name, seq, epoch, 1, chain)
    }

    fn at(name: &str, seq: u64, epoch: u64, last_epoch: u64, chain: &str) -> Observed {
        Observed {
            name: name.into(),
            role: Some(api::RoleInfo {
                role: api::Role::Follower,
                epoch: 1,
                leader_url: Some("http://old".into()),
                seq,
                seen_epoch: epoch,
                writable: false,
                last_epoch,
                diverged: false,
                heal: true,
            }),
            chain_at_common: (seq > 0).then(|| chain.into()),
        }
    }

    fn with(mut o: Observed, change: impl FnOnce(&mut api::RoleInfo)) -> Observed {
        change(o.role.as_mut().unwrap());
        o
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
    fn the_most_advanced_agreeing_follower_is_promoted_at_the_failover_s_epoch() {
        let d = decide(&[node("a", 10, 2, "c"), node("b", 12, 2, "c")], 2, 0, 2);
        assert_eq!(d, promote("b", 2));
        // Ties break by name.
        let d = decide(&[node("b", 12, 2, "c"), node("a", 12, 2, "c")], 2, 1, 2);
        assert_eq!(d, promote("a", 2));
    }

    #[test]
    fn the_next_epoch_is_above_everything_heard_of() {
        let r = |epoch, seen| api::RoleInfo {
            role: api::Role::Follower,
            epoch,
            leader_url: None,
            seq: 0,
            seen_epoch: seen,
            writable: false,
            last_epoch: 0,
            diverged: false,
            heal: true,
        };
        assert_eq!(next_epoch(5, &[r(1, 4), r(2, 7)]), 8);
        assert_eq!(next_epoch(9, &[r(1, 3)]), 10);
        assert_eq!(next_epoch(1, &[]), 2);
    }

    #[test]
    fn asynchronous_mode_promotes_whoever_can_be() {
        let d = decide(&[gone("a"), node("b", 5, 2, "c"), gone("c")], 3, 0, 2);
        assert_eq!(d, promote("b", 2));
        waits(&decide(&[gone("a"), gone("b")], 2, 0, 2), "reached 0 of 2");
        waits(&decide(&[], 0, 0, 2), "no follower");
    }

    #[test]
    fn synchronous_mode_waits_until_it_reaches_enough_followers() {
        // N=2, W=1: both must answer, or the one acknowledged copy may be on the silent one.
        waits(
            &decide(&[node("a", 9, 2, "c"), gone("b")], 2, 1, 2),
            "1 of 2",
        );
        assert_eq!(
            decide(&[node("a", 9, 2, "c"), node("b", 8, 2, "c")], 2, 1, 2),
            promote("a", 2)
        );
        // N=3, W=2: two suffice.
        assert_eq!(
            decide(
                &[node("a", 9, 2, "c"), gone("b"), node("c", 11, 2, "c")],
                3,
                2,
                2
            ),
            promote("c", 2)
        );
        waits(
            &decide(&[node("a", 9, 2, "c"), gone("b"), gone("c")], 3, 2, 2),
            "2 must be",
        );
    }

    /// The quorum counts the followers the cluster is configured with, not those listed: a
    /// leader and a follower lost together with their node leave one survivor, which in
    /// synchronous mode with two followers and one synchronous replica is not enough (the
    /// acknowledged writes may be on the lost follower only). Before, N was the pods listed.
    #[test]
    fn the_quorum_counts_the_configured_followers_not_the_listed_ones() {
        waits(&decide(&[node("a", 9, 2, "c")], 2, 1, 2), "reached 1 of 2");
        assert_eq!(decide(&[node("a", 9, 2, "c")], 2, 0, 2), promote("a", 2));
    }

    #[test]
    fn followers_whose_histories_disagree_are_not_candidates() {
        // c's chain at the common sequence number differs: it is not promoted, however advanced.
        let d = decide(
            &[
                node("a", 9, 2, "x"),
                node("b", 10, 2, "x"),
                node("c", 50, 2, "y"),
            ],
            3,
            0,
            2,
        );
        assert_eq!(d, promote("b", 2));
        // With synchronous replication the agreeing group must itself reach the quorum.
        waits(
            &decide(&[node("a", 9, 2, "x"), node("b", 10, 2, "y")], 2, 1, 2),
            "disagree",
        );
    }

    /// An empty (or freshly healed) follower says nothing about the others' histories: they
    /// are compared above zero. Before, the common sequence number was the empty one's 0,
    /// where every history agrees, and a diverged follower could win.
    #[test]
    fn histories_are_compared_above_zero() {
        let d = decide(
            &[
                node("empty", 0, 2, ""),
                node("a", 9, 2, "x"),
                node("b", 9, 2, "x"),
                node("diverged", 40, 2, "y"),
            ],
            4,
            0,
            2,
        );
        assert_eq!(d, promote("a", 2));
        // The empty one counts towards the group it agrees with (every group).
        assert_eq!(
            decide(&[node("empty", 0, 2, ""), node("a", 9, 2, "x")], 2, 1, 2),
            promote("a", 2)
        );
    }

    /// Candidates rank by the epoch of their last entry before their sequence number (a
    /// follower that took more entries from a stale leader is behind one that took the newer
    /// leader's), and a node that reports itself leader or diverged is never promoted.
    #[test]
    fn candidates_rank_by_history_and_only_fit_followers_are_candidates() {
        let d = decide(
            &[at("stale", 30, 3, 1, "x"), at("newer", 25, 3, 2, "x")],
            2,
            0,
            3,
        );
        assert_eq!(d, promote("newer", 3));
        let leader = with(node("l", 99, 3, "x"), |r| r.role = api::Role::Leader);
        let diverged = with(node("d", 98, 3, "x"), |r| r.diverged = true);
        assert_eq!(
            decide(
                &[leader.clone(), diverged.clone(), node("a", 5, 3, "x")],
                3,
                0,
                3
            ),
            promote("a", 3)
        );
        waits(
            &decide(&[leader, diverged], 2, 0, 3),
            "reports itself a leader",
        );
    }

    /// A follower that saw an epoch above this failover's was raised by another arbiter: this
    /// one waits rather than promote a second leader.
    #[test]
    fn another_arbiter_s_epoch_makes_this_one_wait() {
        waits(
            &decide(&[node("a", 9, 4, "x"), node("b", 9, 3, "x")], 2, 0, 3),
            "another arbiter",
        );
    }
}
