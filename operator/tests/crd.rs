//! The CRD: the committed YAML is exactly what `crdgen` prints, and its validation refuses
//! nonsense (checked with the CEL rules the apiserver runs, evaluated here without one).

use serde_json::json;
use valori_operator::crd::{FromBackup, StorageSpec, ValoriBackupSpec, ValoriClusterSpec};

#[test]
fn the_committed_crds_are_the_generated_ones() {
    for file in valori_operator::CRD_FILES {
        let path = format!("{}/../crds/{file}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path).expect("the CRD is committed");
        assert!(
            committed == valori_operator::crd_yaml_of(file).unwrap(),
            "crds/{file} differs from the Rust types: run \
             `cargo run -p valori-operator --bin crdgen {file} > crds/{file}`"
        );
    }
}

#[test]
fn the_backup_crd_has_its_names_and_columns_and_a_fixed_spec() {
    let crd: serde_json::Value =
        serde_yaml::from_str(&valori_operator::crd_yaml_of("valoribackup.yaml").unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "ValoriBackup");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["vb"]));
    let v = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Cluster", "Phase", "Seq", "Age"]);
    assert!(v["subresources"]["status"].is_object());
    let b = |c: &str| json!({ "cluster": c });
    assert!(ValoriBackupSpec::validate_cel(&b("memory"), None).is_ok());
    assert!(ValoriBackupSpec::validate_cel(&b("memory"), Some(&b("memory"))).is_ok());
    assert!(ValoriBackupSpec::validate_cel(&b("other"), Some(&b("memory"))).is_err());
}

#[test]
fn a_restore_takes_one_target_and_bootstrap_never_changes() {
    let from = |v: serde_json::Value| {
        let mut f = json!({"destination": "s3://backups/memory"});
        for (k, x) in v.as_object().unwrap() {
            f[k] = x.clone();
        }
        f
    };
    let ok = |v| FromBackup::validate_cel(&from(v), None).is_ok();
    assert!(ok(json!({})));
    assert!(ok(json!({"targetSeq": 42})));
    assert!(ok(json!({"targetTime": "2026-12-07T03:00:00Z"})));
    assert!(!ok(
        json!({"targetSeq": 42, "targetTime": "2026-12-07T03:00:00Z"})
    ));
    let with = |b: serde_json::Value| spec(json!({ "bootstrap": b }));
    let a = with(json!({"fromBackup": from(json!({"targetSeq": 42}))}));
    let b = with(json!({"fromBackup": from(json!({"targetSeq": 43}))}));
    assert!(ValoriClusterSpec::validate_cel(&a, Some(&a)).is_ok());
    let err = ValoriClusterSpec::validate_cel(&b, Some(&a)).unwrap_err();
    assert!(format!("{err:?}").contains("cannot change"), "{err:?}");
    // The schema refuses a time that is not RFC 3339 in UTC.
    let crd: serde_json::Value = serde_yaml::from_str(&valori_operator::crd_yaml()).unwrap();
    let pattern = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["bootstrap"]["properties"]["fromBackup"]["properties"]["targetTime"]
        ["pattern"]
        .as_str()
        .unwrap()
        .to_string();
    let re = |s: &str| regex::Regex::new(&pattern).unwrap().is_match(s);
    assert!(re("2026-12-07T03:00:00Z") && re("2026-12-07T03:00:00.250Z"));
    assert!(!re("2026-12-07 03:00") && !re("yesterday") && !re("2026-12-07T03:00:00+01:00"));
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
fn validation_refuses_an_open_cluster_outside_and_node_settings_in_env() {
    let ok = |v| ValoriClusterSpec::validate_cel(&spec(v), None).is_ok();
    assert!(ok(json!({"serviceType": "ClusterIP"})));
    assert!(!ok(json!({"serviceType": "LoadBalancer"})));
    assert!(!ok(json!({"serviceType": "NodePort"})));
    assert!(ok(
        json!({"serviceType": "LoadBalancer", "auth": {"secretName": "keys"}})
    ));
    assert!(ok(json!({"env": [{"name": "TZ", "value": "UTC"}]})));
    let err = ValoriClusterSpec::validate_cel(
        &spec(json!({"env": [{"name": "VALORI_API_KEY", "value": "x"}]})),
        None,
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("VALORI_* settings"), "{err:?}");
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
fn validation_refuses_a_storage_class_that_changes() {
    let s = |class: Option<&str>| match class {
        Some(c) => json!({"size": "10Gi", "storageClass": c}),
        None => json!({"size": "10Gi"}),
    };
    let check = |new, old| StorageSpec::validate_cel(&s(new), Some(&s(old))).is_ok();
    assert!(check(Some("fast"), Some("fast")));
    assert!(check(None, None));
    assert!(!check(Some("slow"), Some("fast")));
    assert!(!check(Some("fast"), None));
    assert!(!check(None, Some("fast")));
    assert!(StorageSpec::validate_cel(&s(Some("fast")), None).is_ok());
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

#[test]
fn the_example_clone_and_on_demand_backup_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/examples");
    let text = std::fs::read_to_string(format!("{dir}/valoricluster-clone.yaml")).unwrap();
    let vc: valori_operator::crd::ValoriCluster = serde_yaml::from_str(&text).unwrap();
    let raw: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert!(ValoriClusterSpec::validate_cel(&raw["spec"], None).is_ok());
    assert_eq!(
        serde_json::to_value(&vc.spec).unwrap()["bootstrap"],
        raw["spec"]["bootstrap"]
    );
    let from = vc.spec.bootstrap.unwrap().from_backup.unwrap();
    // It clones the example cluster's backup, and backs up to a prefix of its own.
    let source: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{dir}/valoricluster.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(from.destination, source["spec"]["backup"]["destination"]);
    assert_ne!(
        vc.spec.backup.unwrap().destination,
        from.destination,
        "a clone writes its own history elsewhere"
    );
    let text = std::fs::read_to_string(format!("{dir}/valoribackup.yaml")).unwrap();
    let vb: valori_operator::crd::ValoriBackup = serde_yaml::from_str(&text).unwrap();
    assert_eq!(vb.spec.cluster, source["metadata"]["name"]);
}

#[test]
fn empty_names_zero_delays_and_long_cluster_names_are_refused() {
    let crd: serde_json::Value = serde_yaml::from_str(&valori_operator::crd_yaml()).unwrap();
    let v = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let spec = &v["properties"]["spec"]["properties"];
    assert_eq!(spec["image"]["minLength"], 1);
    assert_eq!(spec["auth"]["properties"]["secretName"]["minLength"], 1);
    assert_eq!(spec["tls"]["properties"]["secretName"]["minLength"], 1);
    assert_eq!(
        spec["backup"]["properties"]["credentialsSecret"]["minLength"],
        1
    );
    assert_eq!(
        spec["failover"]["properties"]["delaySeconds"]["minimum"].as_f64(),
        Some(1.0)
    );
    assert_eq!(
        spec["crossCheck"]["properties"]["intervalSeconds"]["minimum"].as_f64(),
        Some(1.0)
    );
    // The root's rule on the name (the apiserver evaluates it; kube's validator covers the spec).
    let rules = v["x-kubernetes-validations"].as_array().unwrap();
    assert!(rules
        .iter()
        .any(|r| r["rule"] == "self.metadata.name.size() <= 52"));
}
