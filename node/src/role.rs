//! Roles and epochs: what makes the arbiter's failover decisions safe.
//!
//! A node is a leader or a follower, given that role with an **epoch** that only grows. The
//! arbiter (the operator) promotes and demotes through `PUT /v1/role`, always with a higher
//! epoch than before. A node remembers the highest epoch it has heard of (`seen_epoch`): from
//! its own assignments, from the leader it follows, and from the followers that read its log.
//! A leader whose assignment is older than that is **fenced**: a newer leader exists, so it
//! refuses writes. A follower refuses to follow a leader whose epoch is below what it has seen.
//! Both numbers are persisted before they take effect, so a restart cannot forget them.

use serde::{Deserialize, Serialize};
use valori_api::Role;

use crate::error::NodeError;

/// A role given with an epoch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The role.
    pub role: Role,
    /// The epoch it was given with (1 for the role flags give at a first start).
    pub epoch: u64,
    /// The leader a follower follows.
    pub leader_url: Option<String>,
    /// Whether a follower told to follow by the arbiter re-bootstraps by itself when its
    /// history went past its leader's (discarding what its leader lacks). `false` keeps a
    /// diverged follower's data for inspection: it stays latched, read-only, until healed.
    #[serde(default = "heal_by_default")]
    pub heal: bool,
}

fn heal_by_default() -> bool {
    true
}

/// A node's role state, as persisted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RoleState {
    /// The current assignment.
    pub assignment: Assignment,
    /// The highest epoch heard of (at least the assignment's).
    pub seen_epoch: u64,
    /// Whether the role came from the role API: a follower told to follow by the arbiter
    /// re-bootstraps by itself when its history went past its leader's (a demoted leader
    /// rejoining), without `--replication-heal`.
    pub by_api: bool,
    /// Bumped when the node's history is rewritten (a restore) or it starts a new one (a
    /// promotion): a follower re-checks its history against its leader's when it changes.
    pub history: u64,
    /// The arbiter that claimed `seen_epoch` here (raised the node to it, or gave it a role at
    /// it), when one named itself: another arbiter cannot use the same epoch on this node, so
    /// two arbiters that chose the same epoch at once cannot both act with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimant: Option<String>,
}

/// What a role request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The same assignment again (the arbiter retrying): nothing to do.
    Unchanged,
    /// A new assignment.
    Apply,
}

impl RoleState {
    /// The state of a node that has none persisted: the role its flags give, at epoch 1.
    pub fn initial(leader_url: Option<String>) -> RoleState {
        RoleState {
            assignment: Assignment {
                role: if leader_url.is_some() {
                    Role::Follower
                } else {
                    Role::Leader
                },
                epoch: 1,
                leader_url,
                heal: true,
            },
            seen_epoch: 1,
            by_api: false,
            history: 0,
            claimant: None,
        }
    }

    /// Refuses `arbiter` an epoch another arbiter claimed here (409 `epoch_claimed`). An
    /// epoch heard without an arbiter's name (from a follower or a leader) claims nothing.
    pub fn check_claim(&self, epoch: u64, arbiter: Option<&str>) -> Result<(), NodeError> {
        match (&self.claimant, arbiter) {
            (Some(by), Some(a)) if epoch == self.seen_epoch && by != a => {
                Err(NodeError::EpochClaimed {
                    epoch,
                    by: by.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The state after hearing of `epoch` from `arbiter` (if it named itself), when that
    /// changes anything: a higher epoch than any seen (claimed by `arbiter`), or the first
    /// claim of the current one. Call [`RoleState::check_claim`] first.
    pub fn heard(&self, epoch: u64, arbiter: Option<&str>) -> Option<RoleState> {
        if epoch > self.seen_epoch {
            return Some(RoleState {
                seen_epoch: epoch,
                claimant: arbiter.map(String::from),
                ..self.clone()
            });
        }
        (epoch == self.seen_epoch && self.claimant.is_none() && arbiter.is_some()).then(|| {
            RoleState {
                claimant: arbiter.map(String::from),
                ..self.clone()
            }
        })
    }

    /// Whether the node takes client writes: a leader that no newer epoch has fenced.
    pub fn writable(&self) -> bool {
        self.assignment.role == Role::Leader && self.assignment.epoch >= self.seen_epoch
    }

    /// A leader that learnt of a newer epoch.
    pub fn fenced(&self) -> bool {
        self.assignment.role == Role::Leader && self.assignment.epoch < self.seen_epoch
    }

    /// Decides a role request: refused (a lower epoch than seen, the same epoch with another
    /// role or leader, a follower without a leader), the same assignment again, or a new one.
    pub fn decide(&self, want: &Assignment) -> Result<Change, NodeError> {
        match (want.role, &want.leader_url) {
            (Role::Follower, None) => {
                return Err(NodeError::BadRequest("a follower needs leader_url".into()))
            }
            (Role::Follower, Some(url))
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                return Err(NodeError::BadRequest(format!(
                    "leader_url {url:?} must be an http:// or https:// URL"
                )))
            }
            (Role::Leader, Some(_)) => {
                return Err(NodeError::BadRequest(
                    "a leader follows no one: leave leader_url out".into(),
                ))
            }
            _ => {}
        }
        if want.epoch == 0 {
            return Err(NodeError::BadRequest("epochs start at 1".into()));
        }
        if want.epoch < self.seen_epoch {
            return Err(NodeError::StaleEpoch {
                asked: want.epoch,
                current: self.seen_epoch,
            });
        }
        if want.epoch == self.assignment.epoch {
            return if *want == self.assignment {
                Ok(Change::Unchanged)
            } else {
                Err(NodeError::StaleEpoch {
                    asked: want.epoch,
                    current: self.seen_epoch,
                })
            };
        }
        // A higher epoch than the assignment's: new, even when the node has already heard of
        // it (a fenced leader being demoted at the epoch that fenced it).
        Ok(Change::Apply)
    }

    /// The state after `want` is applied, given by `arbiter` (which claims the epoch when it is
    /// new here or unclaimed).
    pub fn apply(&self, want: Assignment, arbiter: Option<&str>) -> RoleState {
        let promoted = want.role == Role::Leader && self.assignment.role != Role::Leader;
        let claimant = match self.heard(want.epoch, arbiter) {
            Some(h) => h.claimant,
            None if want.epoch > self.seen_epoch => None,
            None => self.claimant.clone(),
        };
        RoleState {
            seen_epoch: self.seen_epoch.max(want.epoch),
            assignment: want,
            by_api: true,
            history: self.history + u64::from(promoted),
            claimant,
        }
    }

    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("role state serializes")
    }

    /// Decodes from the store.
    pub fn decode(bytes: &[u8]) -> Result<RoleState, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("persisted role does not decode: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(epoch: u64) -> Assignment {
        Assignment {
            role: Role::Leader,
            epoch,
            leader_url: None,
            heal: true,
        }
    }

    fn follower(epoch: u64, url: &str) -> Assignment {
        Assignment {
            role: Role::Follower,
            epoch,
            leader_url: Some(url.into()),
            heal: true,
        }
    }

    fn state(a: Assignment, seen: u64) -> RoleState {
        RoleState {
            assignment: a,
            seen_epoch: seen,
            by_api: true,
            history: 0,
            claimant: None,
        }
    }

    fn check(s: &RoleState, want: Assignment, expected: Result<Change, &str>) {
        let got = s.decide(&want).map_err(|e| e.code());
        assert_eq!(got, expected, "{s:?} asked {want:?}");
    }

    #[test]
    fn epochs_only_grow_and_retries_are_idempotent() {
        let l1 = state(leader(1), 1);
        check(&l1, leader(1), Ok(Change::Unchanged));
        check(&l1, follower(1, "http://b"), Err("stale_epoch"));
        check(&l1, follower(2, "http://b"), Ok(Change::Apply));
        check(&l1, leader(2), Ok(Change::Apply));
        check(&l1, leader(0), Err("bad_request"));

        // A follower at epoch 2 that heard of epoch 3 from its leader: the arbiter's epoch-2
        // assignment, even repeated, is older than what the node knows.
        let f2 = state(follower(2, "http://a"), 3);
        check(&f2, follower(2, "http://a"), Err("stale_epoch"));
        check(&f2, follower(1, "http://a"), Err("stale_epoch"));
        check(&f2, follower(2, "http://b"), Err("stale_epoch"));
        check(&f2, leader(2), Err("stale_epoch"));
        // It heard of 3 from a leader; the arbiter's assignment at 3 is still new to it.
        check(&f2, leader(3), Ok(Change::Apply));
        check(&f2, leader(4), Ok(Change::Apply));
    }

    #[test]
    fn requests_must_make_sense() {
        let l1 = state(leader(1), 1);
        check(
            &l1,
            Assignment {
                role: Role::Follower,
                epoch: 2,
                leader_url: None,
                heal: true,
            },
            Err("bad_request"),
        );
        check(&l1, follower(2, "ftp://x"), Err("bad_request"));
        check(
            &l1,
            Assignment {
                role: Role::Leader,
                epoch: 2,
                leader_url: Some("http://x".into()),
                heal: true,
            },
            Err("bad_request"),
        );
    }

    #[test]
    fn a_leader_is_fenced_by_a_higher_epoch_and_writable_otherwise() {
        let mut s = state(leader(1), 1);
        assert!(s.writable() && !s.fenced());
        s.seen_epoch = 2;
        assert!(!s.writable() && s.fenced());
        // Demoted at the epoch that fenced it.
        check(&s, follower(2, "http://b"), Ok(Change::Apply));
        let s = s.apply(follower(2, "http://b"), None);
        assert!(!s.writable() && !s.fenced());
        assert_eq!(s.seen_epoch, 2);
        // Promoted again later: a new history.
        let p = s.apply(leader(3), None);
        assert!(p.writable());
        assert_eq!((p.seen_epoch, p.history), (3, s.history + 1));
    }

    #[test]
    fn the_persisted_form_round_trips() {
        let s = state(follower(7, "http://leader:3000"), 9);
        assert_eq!(RoleState::decode(&s.encode()).unwrap(), s);
        assert!(RoleState::decode(b"{}").is_err());
    }

    #[test]
    fn an_epoch_claimed_by_one_arbiter_is_refused_to_another() {
        let s = state(follower(1, "http://a"), 1);
        // An arbiter raises the node to 5 and claims it.
        s.check_claim(5, Some("operator")).unwrap();
        let raised = s.heard(5, Some("operator")).unwrap();
        assert_eq!(
            (raised.seen_epoch, raised.claimant.as_deref()),
            (5, Some("operator"))
        );
        // The same arbiter again, or a follower or leader naming 5: fine; another arbiter: no.
        raised.check_claim(5, Some("operator")).unwrap();
        raised.check_claim(5, None).unwrap();
        let e = raised.check_claim(5, Some("cli-1")).unwrap_err();
        assert_eq!(e.code(), "epoch_claimed");
        assert!(e.to_string().contains("operator"), "{e}");
        // A higher epoch is anyone's.
        raised.check_claim(6, Some("cli-1")).unwrap();
        // An epoch learnt from a leader's page claims nothing; the first arbiter to name it
        // claims it.
        let learnt = s.heard(5, None).unwrap();
        assert_eq!(learnt.claimant, None);
        let claimed = learnt.heard(5, Some("cli-1")).unwrap();
        assert_eq!(claimed.claimant.as_deref(), Some("cli-1"));
        assert_eq!(claimed.heard(5, Some("cli-1")), None, "nothing new");
        // A role given at a new epoch claims it for its arbiter.
        let promoted = s.apply(leader(7), Some("operator"));
        assert_eq!(promoted.claimant.as_deref(), Some("operator"));
        assert_eq!(s.apply(leader(7), None).claimant, None);
    }
}
