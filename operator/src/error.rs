//! Why a reconcile failed. One enum for the whole crate, whose variants also label the failure
//! metric ([`crate::metrics`] reads it here, never from the controller).

use crate::failover::CallError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call (retried soon: it may be passing).
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A node refused or did not answer a call that had to succeed.
    #[error("node: {0}")]
    Node(#[from] CallError),
    /// The resource cannot be reconciled as it is (reported, not retried quickly).
    #[error("invalid cluster: {0}")]
    Invalid(String),
    /// The cluster changed since this pass read it, and a step that needed it unchanged (an
    /// epoch recorded before use) gave up: the next pass reads it again.
    #[error("superseded: {0}")]
    Superseded(String),
}

impl Error {
    /// The kind, for the failure metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Node(_) => "node",
            Error::Invalid(_) => "invalid",
            Error::Superseded(_) => "superseded",
        }
    }

    /// A failed read of a Secret the spec names: a Secret that does not exist (404) is the
    /// spec's mistake; any other failure (the API server restarting, a timeout, a refused
    /// connection) is transient and retried as soon as any other API error.
    pub fn reading_secret(secret: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) if s.code == 404 => {
                Error::Invalid(format!("the Secret {secret} does not exist"))
            }
            other => Error::Kube(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: format!("status {code}"),
            ..Default::default()
        }))
    }

    #[test]
    fn only_a_missing_secret_is_an_invalid_spec() {
        let e = Error::reading_secret("keys", api_error(404));
        assert_eq!(e.kind(), "invalid");
        assert!(e.to_string().contains("keys does not exist"), "{e}");
        for code in [403, 429, 500, 503] {
            assert_eq!(
                Error::reading_secret("keys", api_error(code)).kind(),
                "kubernetes",
                "{code}"
            );
        }
        let unreachable = kube::Error::Service("connection refused".into());
        assert_eq!(
            Error::reading_secret("keys", unreachable).kind(),
            "kubernetes"
        );
    }
}
