//! The CRD: the committed YAML is exactly what `crdgen` prints, and its validation refuses
//! nonsense (checked with the CEL rules the apiserver runs, evaluated here without one).

use serde_json::json;
use valori_operator::crd::{StorageSpec, ValoriClusterSpec};

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/valoricluster.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/valoricluster.yaml exists");
    assert!(
        committed == valori_operator::crd_yaml(),
        "crds/valoricluster.yaml differs from the Rust types: run \
         `cargo run -p valori-operator --bin crdgen > crds/valoricluster.yaml`"
    );
}

#[test]
fn the_crd_has_its_names_columns_and_subresources() {
    let crd: serde_json::Value = serde_yaml::from_str(&valori_operator::crd_yaml()).unwrap();
    assert_eq!(crd["spec"]["group"], "valori.dev");
    assert_eq!(crd["spec"]["names"]["kind"], "ValoriCluster");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["vc"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Instances", "Ready", "Leader", "Converged", "Phase", "Age"]
    );
    assert!(v["subresources"]["status"].is_object());
    assert_eq!(
        v["subresources"]["scale"]["specReplicasPath"],
        ".spec.instances"
    );
    let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["instances"]["minimum"].as_f64(),
        Some(1.0)
    );
    assert_eq!(spec["required"], json!(["instances"]));
}

fn spec(v: serde_json::Value) -> serde_json::Value {
    // A valid spec, with the fields of `v` replaced.
    let mut base = json!({"instances": 3, "storage": {"size": "10Gi"}});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    base
}

#[test]
fn validation_refuses_more_synchronous_replicas_than_followers() {
    let ok = |v| ValoriClusterSpec::validate_cel(&spec(v), None).is_ok();
    assert!(ok(json!({})));
    assert!(ok(
        json!({"replication": {"synchronousReplicas": 2, "timeoutMs": 1000}})
    ));
    assert!(!ok(
        json!({"replication": {"synchronousReplicas": 3, "timeoutMs": 1000}})
    ));
    assert!(!ok(
        json!({"instances": 1, "replication": {"synchronousReplicas": 1, "timeoutMs": 1000}})
    ));
}

#[test]
fn validation_refuses_a_storage_size_that_shrinks() {
    let size = |s: &str| json!({"size": s});
    let check =
        |new: &str, old: &str| StorageSpec::validate_cel(&size(new), Some(&size(old))).is_ok();
    assert!(check("10Gi", "10Gi"));
    assert!(check("20Gi", "10Gi"));
    assert!(check("1Ti", "900Gi"));
    assert!(!check("5Gi", "10Gi"));
    assert!(!check("1000Mi", "1Gi"));
    // On creation there is nothing to compare with.
    assert!(StorageSpec::validate_cel(&size("1Gi"), None).is_ok());
}

#[test]
fn zero_instances_are_refused_by_the_schema() {
    let crd: serde_json::Value = serde_yaml::from_str(&valori_operator::crd_yaml()).unwrap();
    let instances = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["instances"];
    assert_eq!(instances["minimum"].as_f64(), Some(1.0));
    // And the Rust type reads a valid spec with every default filled in.
    let s: ValoriClusterSpec = serde_json::from_value(json!({"instances": 3})).unwrap();
    assert_eq!((s.instances, s.storage.size.as_str()), (3, "10Gi"));
}

#[test]
fn the_example_cluster_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/examples/valoricluster.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let vc: valori_operator::crd::ValoriCluster = serde_yaml::from_str(&text).unwrap();
    assert_eq!(vc.spec.instances, 3);
    let raw: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert!(ValoriClusterSpec::validate_cel(&raw["spec"], None).is_ok());
    // Every field it sets is a field of the resource (nothing silently ignored).
    assert_eq!(
        serde_json::to_value(&vc.spec).unwrap()["replication"],
        raw["spec"]["replication"]
    );
    assert_eq!(
        serde_json::to_value(&vc.spec).unwrap()["resources"],
        raw["spec"]["resources"]
    );
    assert_eq!(
        serde_json::to_value(&vc.spec).unwrap()["backup"],
        raw["spec"]["backup"]
    );
    let schedule = vc
        .spec
        .backup
        .as_ref()
        .unwrap()
        .schedule
        .as_deref()
        .unwrap();
    valori_operator::backup::parse_schedule(schedule).unwrap();
}
