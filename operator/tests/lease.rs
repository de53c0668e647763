//! Leader election against the mocked API server: one replica holds the Lease, the other
//! waits, and takes it over only once it expired; every request stays within the Role the
//! chart grants for it.

use std::time::Duration;

use serde_json::json;
use valori_operator::lease::Elector;
use valori_operator::rbac::{allows, NAMESPACE_RULES};

mod common;
use common::apiserver::ApiServer;

#[tokio::test]
async fn one_replica_holds_the_lease_until_it_expires() {
    let (api, client) = ApiServer::start();
    let path = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/valori-operator";
    let a = Elector::new(
        client.clone(),
        "ops",
        "valori-operator",
        "a",
        Duration::from_secs(15),
    );
    let b = Elector::new(
        client,
        "ops",
        "valori-operator",
        "b",
        Duration::from_secs(15),
    );
    assert!(a.try_hold().await.unwrap(), "a takes the free Lease");
    assert!(!b.try_hold().await.unwrap(), "b waits while a holds it");
    assert!(a.try_hold().await.unwrap(), "a renews");
    let lease = api.get(path).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

    // a stops renewing: once the Lease is older than its duration, b takes it.
    api.patch(
        path,
        json!({"spec": {"renewTime": "2020-01-01T00:00:00.000000Z"}}),
    );
    assert!(b.try_hold().await.unwrap(), "b takes the expired Lease");
    let lease = api.get(path).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(!a.try_hold().await.unwrap(), "a must not take it back");

    // b stops (SIGTERM) and gives the Lease up: a takes it at once, not after it expires.
    assert!(
        !a.release().await.unwrap(),
        "a does not hold it: nothing to give up"
    );
    assert!(b.release().await.unwrap());
    assert!(
        a.try_hold().await.unwrap(),
        "a takes the given-up Lease at once"
    );
    assert_eq!(api.get(path).unwrap()["spec"]["holderIdentity"], "a");

    for call in api.calls() {
        for (g, r, v) in call.permissions() {
            assert!(
                allows(NAMESPACE_RULES, &g, &r, &v),
                "{} {} needs {v} on {g}/{r}",
                call.method,
                call.path
            );
        }
    }
}
