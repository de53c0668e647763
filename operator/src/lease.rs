//! Leader election through a `coordination.k8s.io/v1` Lease, so that only one of several
//! operator replicas reconciles at a time. The decision is [`step`], a pure function of the
//! Lease; [`Elector`] carries it out with optimistic concurrency (a replace that names the
//! resourceVersion it read), so two replicas can never both take the same Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;

/// What this replica does with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// It holds it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// Another replica holds it.
    Wait {
        /// Who.
        holder: String,
    },
}

/// Decides from the Lease's spec what replica `me` does at `now`.
pub fn step(spec: Option<&LeaseSpec>, me: &str, now: jiff::Timestamp) -> LeaseStep {
    let Some(spec) = spec else {
        return LeaseStep::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => LeaseStep::Renew,
        None | Some("") => LeaseStep::Acquire,
        Some(h) => {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
            match renewed {
                Some(t) if t.0.as_second() + seconds > now.as_second() => LeaseStep::Wait {
                    holder: h.to_string(),
                },
                _ => LeaseStep::Acquire,
            }
        }
    }
}

/// Takes and keeps a Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
}

impl Elector {
    /// An elector for Lease `name` in `namespace` as replica `me`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        me: &str,
        duration: Duration,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            me: me.into(),
            duration,
        }
    }

    /// One attempt: returns whether this replica holds the Lease afterwards.
    pub async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.me,
            now,
        );
        let spec = |old: Option<&LeaseSpec>, take: bool| LeaseSpec {
            holder_identity: Some(self.me.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if take {
                Some(MicroTime(now))
            } else {
                old.and_then(|o| o.acquire_time.clone())
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                old.and_then(|o| o.lease_transitions).unwrap_or(0)
                    + i32::from(take && old.is_some()),
            ),
            ..LeaseSpec::default()
        };
        let result = match (decision, current) {
            (LeaseStep::Wait { .. }, _) => return Ok(false),
            (step, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(None, step == LeaseStep::Acquire)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (step, Some(mut lease)) => {
                // The replace carries the resourceVersion read above: if another replica
                // changed the Lease meanwhile, it fails with a conflict and nothing is taken.
                lease.spec = Some(spec(lease.spec.as_ref(), step == LeaseStep::Acquire));
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up, if this replica holds it, so that another takes it at once instead
    /// of after it expires (a replica that stops, on SIGTERM, does this after it stopped
    /// acting). Returns whether it held it.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let holds = lease
            .spec
            .as_ref()
            .is_some_and(|s| s.holder_identity.as_deref() == Some(self.me.as_str()));
        if !holds {
            return Ok(false);
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Taken meanwhile (it had expired): nothing to give up.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether a holder whose last successful renewal began `since_renewal` ago must stop acting
/// now: before the Lease can expire for the others (`duration` after that renewal), with a
/// third of it to spare for clock drift and a pass being cut short.
pub fn must_stop(since_renewal: Duration, duration: Duration) -> bool {
    since_renewal > duration * 2 / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_stops_well_before_its_lease_can_expire() {
        let lease = Duration::from_secs(15);
        assert!(!must_stop(Duration::from_secs(5), lease));
        assert!(!must_stop(Duration::from_secs(10), lease));
        assert!(must_stop(Duration::from_millis(10_001), lease));
    }

    fn lease(holder: &str, renewed: i64, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(jiff::Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(seconds),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_renewed_by_its_holder_and_taken_only_once_expired() {
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        assert_eq!(step(None, "a", at(0)), LeaseStep::Acquire);
        let l = lease("a", 100, 15);
        assert_eq!(step(Some(&l), "a", at(200)), LeaseStep::Renew);
        assert_eq!(
            step(Some(&l), "b", at(114)),
            LeaseStep::Wait { holder: "a".into() }
        );
        assert_eq!(step(Some(&l), "b", at(115)), LeaseStep::Acquire);
        assert_eq!(
            step(Some(&lease("", 100, 15)), "b", at(101)),
            LeaseStep::Acquire
        );
        // No time at all: expired.
        let mut l = lease("a", 0, 15);
        l.renew_time = None;
        assert_eq!(step(Some(&l), "b", at(1)), LeaseStep::Acquire);
    }
}
