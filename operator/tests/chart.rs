//! The Helm chart, rendered by the real Helm engine (PyPI `helm-python-sdk`; `scripts/test`
//! installs it and points `VALORI_CHART_PYTHON` at its Python) and read back into
//! k8s-openapi types: the RBAC it grants is exactly what the operator uses, the Deployment
//! runs the operator as the chart's values say, and the chart's CRD is the generated one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{json, Value};
use valori_operator::crd::ValoriCluster;
use valori_operator::rbac::{Rule, CLUSTER_RULES, NAMESPACE_RULES};

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/valori-operator")
}

const RENDER: &str = r#"
import json, sys
import helm_python
chart = helm_python.Chart.load(sys.argv[1])
out = chart.render(json.loads(sys.argv[2]), name="valori", namespace="valori-system")
print(json.dumps(out))
"#;

/// The chart's rendered objects as JSON, template by template.
fn render(values: Value) -> Vec<Value> {
    let python = std::env::var("VALORI_CHART_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", RENDER])
        .arg(chart_dir())
        .arg(values.to_string())
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        out.status.success(),
        "rendering the chart with {python} failed (scripts/test installs helm-python-sdk and sets VALORI_CHART_PYTHON; or `pip install helm-python-sdk`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&out.stdout).unwrap();
    let mut objects = Vec::new();
    for (path, text) in files.iter().filter(|(p, _)| p.ends_with(".yaml")) {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
            if !v.is_null() {
                objects.push(v);
            }
        }
    }
    objects
}

fn one<T: serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    serde_json::from_value(found[0].clone()).unwrap_or_else(|e| panic!("a {kind}: {e}"))
}

fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.as_deref().unwrap_or_default() {
            for res in r.resources.as_deref().unwrap_or_default() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
    }
    out
}

fn wanted(rules: &[Rule]) -> BTreeSet<(String, String, String)> {
    rules
        .iter()
        .flat_map(|r| {
            r.verbs
                .iter()
                .map(|v| (r.group.to_string(), r.resource.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn the_chart_grants_exactly_what_the_operator_uses() {
    let objects = render(json!({}));
    let cr: ClusterRole = one(&objects, "ClusterRole");
    assert_eq!(grants(cr.rules.as_deref().unwrap()), wanted(CLUSTER_RULES));
    let role: Role = one(&objects, "Role");
    assert_eq!(
        grants(role.rules.as_deref().unwrap()),
        wanted(NAMESPACE_RULES)
    );
    // No wildcard anywhere.
    for (g, r, v) in grants(cr.rules.as_deref().unwrap()) {
        assert!(!g.contains('*') && !r.contains('*') && !v.contains('*'));
    }
    let sa: ServiceAccount = one(&objects, "ServiceAccount");
    let sa_name = sa.metadata.name.unwrap();
    let crb: ClusterRoleBinding = one(&objects, "ClusterRoleBinding");
    assert_eq!(crb.role_ref.name, cr.metadata.name.unwrap());
    let rb: RoleBinding = one(&objects, "RoleBinding");
    assert_eq!(rb.role_ref.name, role.metadata.name.unwrap());
    assert_eq!(role.metadata.namespace.as_deref(), Some("valori-system"));
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, sa_name);
        assert_eq!(subjects[0].namespace.as_deref(), Some("valori-system"));
    }
    let d: Deployment = one(&objects, "Deployment");
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa_name.as_str()));
}

#[test]
fn watching_some_namespaces_grants_namespaced_rights_there_only() {
    use valori_operator::rbac::cluster_scoped;
    let objects = render(json!({"watchNamespaces": ["agents", "search"]}));
    let cr: ClusterRole = one(&objects, "ClusterRole");
    let scoped: Vec<Rule> = CLUSTER_RULES
        .iter()
        .copied()
        .filter(cluster_scoped)
        .collect();
    let namespaced: Vec<Rule> = CLUSTER_RULES
        .iter()
        .copied()
        .filter(|r| !cluster_scoped(r))
        .collect();
    assert_eq!(grants(cr.rules.as_deref().unwrap()), wanted(&scoped));
    assert!(
        !grants(cr.rules.as_deref().unwrap())
            .iter()
            .any(|(_, r, _)| r == "secrets"),
        "no Secret access across the cluster"
    );
    for ns in ["agents", "search"] {
        let role: Role = serde_json::from_value(
            objects
                .iter()
                .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == ns)
                .unwrap_or_else(|| panic!("a Role in {ns}"))
                .clone(),
        )
        .unwrap();
        assert_eq!(grants(role.rules.as_deref().unwrap()), wanted(&namespaced));
        assert!(objects.iter().any(|o| o["kind"] == "RoleBinding"
            && o["metadata"]["namespace"] == ns
            && o["roleRef"]["name"] == role.metadata.name.as_deref().unwrap()));
    }
    let d: Deployment = one(&objects, "Deployment");
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let watch = env
        .iter()
        .find(|e| e.name == "VALORI_OPERATOR_WATCH_NAMESPACES")
        .unwrap();
    assert_eq!(watch.value.as_deref(), Some("agents,search"));
}

#[test]
fn the_deployment_runs_the_operator_hardened_and_as_configured() {
    let objects = render(json!({}));
    let d: Deployment = one(&objects, "Deployment");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("valori-operator:0.1.0"));
    let env: Vec<String> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    for name in [
        "POD_NAME",
        "POD_NAMESPACE",
        "VALORI_OPERATOR_METRICS_ADDR",
        "VALORI_OPERATOR_LOG_JSON",
    ] {
        assert!(env.contains(&name.to_string()), "{name} in {env:?}");
    }
    // One replica: leader election all the same (an upgrade runs two pods side by side).
    let le = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "VALORI_OPERATOR_LEADER_ELECTION");
    assert_eq!(le.and_then(|e| e.value.as_deref()), Some("true"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let probe = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));
    let svc: Service = one(&objects, "Service");
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080);
    assert!(!objects.iter().any(|o| o["kind"] == "ServiceMonitor"));

    // Leader election turned off, with one replica: no Lease.
    let objects = render(json!({"leaderElection": {"enabled": false}}));
    let d: Deployment = one(&objects, "Deployment");
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(!c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.name == "VALORI_OPERATOR_LEADER_ELECTION"));

    // Two replicas: leader election; a ServiceMonitor when asked for; another image.
    let objects = render(json!({
        "replicaCount": 2,
        "image": {"repository": "registry.local/valori-operator", "tag": "7", "pullPolicy": "Always"},
        "metrics": {"serviceMonitor": {"enabled": true}},
    }));
    let d: Deployment = one(&objects, "Deployment");
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let c = &spec.template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.local/valori-operator:7"));
    let le = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "VALORI_OPERATOR_LEADER_ELECTION");
    assert_eq!(le.and_then(|e| e.value.as_deref()), Some("true"));
    let sm = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .unwrap();
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn the_chart_carries_the_generated_crds() {
    for file in valori_operator::CRD_FILES {
        let path = chart_dir().join("templates").join(format!("crd-{file}"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            valori_operator::chart_crd_template(file).unwrap(),
            "{} is stale: run `cargo run -p valori-operator --bin crdgen -- --chart {file}`",
            path.display()
        );
    }
    // Rendered, they are the CRDs, kept on uninstall; with crds.create false, absent.
    let objects = render(json!({}));
    let crds: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 2);
    for crd in crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        let mut typed: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
        typed.metadata.annotations = None;
        let want = if crd["spec"]["names"]["kind"] == "ValoriCluster" {
            ValoriCluster::crd()
        } else {
            valori_operator::crd::ValoriBackup::crd()
        };
        assert_eq!(typed, want);
    }
    assert!(!render(json!({"crds": {"create": false}}))
        .iter()
        .any(|o| o["kind"] == "CustomResourceDefinition"));
}
