"""The operator's Helm chart, checked with the real Helm engine (helm-python-sdk) and the
Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors). Its content is
read back into k8s-openapi types by operator/tests/chart.rs."""

import re
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parent.parent / "valori-operator"
REPO = CHART.parent.parent
KUBE = "1.33.0"
# The Kubernetes versions whose schemas the rendered objects must meet (the chart's
# kubeVersion allows 1.29 on; the schemas checked are the supported releases).
KUBES = ["1.30.0", "1.31.0", "1.32.0", "1.33.0"]

VALUES = {
    "defaults": {},
    "ha": {"replicaCount": 3, "leaderElection": {"enabled": True, "leaseSeconds": 20}},
    "monitored": {
        "metrics": {
            "port": 9090,
            "serviceMonitor": {"enabled": True, "interval": "15s"},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True, "backupMaxAgeHours": 48},
        }
    },
    "own-account": {"serviceAccount": {"create": False, "name": "platform-operators"}},
    "scheduled": {
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "registry"}],
        "opentelemetry": {"endpoint": "http://otel-collector:4318"},
        "logging": {"json": False, "level": "debug"},
    },
}

# The production-like values the chart's examples commit, and an image pinned by digest.
VALUES["production-example"] = yaml.safe_load((CHART.parent / "examples" / "values-production.yaml").read_text())
VALUES["namespaced"] = {"watchNamespaces": ["agents", "search"]}
VALUES["by-digest"] = {"image": {"repository": "registry.example.com/valori-operator", "digest": "sha256:" + "ab" * 32}}

# Kinds that come from other projects' CRDs, which the Kubernetes schemas do not know.
FOREIGN = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def render(values):
    files = helm_python.Chart.load(CHART).render(values, name="valori", namespace="valori-system")
    objects = []
    for path, text in files.items():
        if path.endswith(".yaml"):
            objects += [o for o in yaml.safe_load_all(text) if o]
    return objects


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_lint_is_clean_in_strict_mode(values):
    report = helm_python.lint(CHART, values, strict=True, namespace="valori-system", kube_version="v1.33.0")
    assert report["errors"] == [], report
    assert report["messages"] == [], report


@pytest.mark.parametrize("kube", KUBES)
@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_rendered_objects_match_the_kubernetes_schemas(values, kube):
    objects = render(values)
    kinds = sorted(o["kind"] for o in objects)
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"} <= set(kinds)
    for o in objects:
        if o["kind"] in FOREIGN:
            assert o["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(o, kube, strict=True)


def test_an_image_by_digest_ignores_the_tag():
    deployment = next(o for o in render(VALUES["by-digest"]) if o["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/valori-operator@sha256:" + "ab" * 32
    with pytest.raises(helm_python.HelmError):
        render({"image": {"repository": "r", "digest": "latest"}})


@pytest.mark.parametrize("name", ["valoricluster.yaml", "valoribackup.yaml"])
def test_the_crds_the_chart_installs_match_the_schemas_and_the_generated_ones(name):
    generated = yaml.safe_load((REPO / "crds" / name).read_text())
    rendered = next(
        o for o in render({}) if o["kind"] == "CustomResourceDefinition"
        and o["spec"]["names"]["kind"] == generated["spec"]["names"]["kind"]
    )
    assert rendered["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert rendered == generated
    kubernetes_validate.validate(rendered, KUBE, strict=True)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("valoricluster.yaml", "ValoriCluster"),
        ("valoricluster-clone.yaml", "ValoriCluster"),
        ("valoribackup.yaml", "ValoriBackup"),
    ],
)
def test_the_examples_are_valori_resources(name, kind):
    example = yaml.safe_load((CHART.parent / "examples" / name).read_text())
    assert example["apiVersion"] == "valori.dev/v1alpha1"
    assert example["kind"] == kind


def test_values_outside_the_schema_are_refused():
    typos = (
        {"resources": {"limit": {"memory": "1Gi"}}},
        {"resources": {"requests": {"memory": "lots"}}},
        {"tolerations": [{"key": "k", "operator": "Equals"}]},
        {"affinity": {"podAntiAfinity": {}}},
        {"securityContext": {"readOnlyRootFileSystem": True}},
        {"podSecurityContext": {"seccompProfile": {"type": "Default"}}},
    )
    for bad in ({"replicaCount": 0}, {"image": {"repository": "x", "pullPolicy": "Sometimes"}}, {"replicas": 2}) + typos:
        with pytest.raises(helm_python.HelmError):
            render(bad)


def test_the_service_account_can_be_brought_by_the_user():
    objects = render(VALUES["own-account"])
    assert not [o for o in objects if o["kind"] == "ServiceAccount"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operators"
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "platform-operators"


def test_pods_meet_the_restricted_pod_security_standard():
    for values in VALUES.values():
        pod = next(o for o in render(values) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert "resources" in c and c["resources"]["limits"]["memory"]


def test_notes_tell_how_to_create_a_cluster():
    files = helm_python.Chart.load(CHART).render({"replicaCount": 2}, name="valori", namespace="ops")
    notes = next(v for k, v in files.items() if k.endswith("NOTES.txt"))
    assert "kind: ValoriCluster" in notes and "kubectl get vc" in notes
    assert "leader-election Lease" in notes


def test_the_nodes_are_scraped_and_alerted_on_when_asked():
    objects = render(VALUES["monitored"])
    pm = next(o for o in objects if o["kind"] == "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "valori"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "health"
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "ValoriNoLeader",
        "ValoriFollowerDiverged",
        "ValoriNodeFailed",
        "ValoriReplicationLag",
        "ValoriBackupTooOld",
        "ValoriBackupFailing",
    }
    assert alerts["ValoriBackupTooOld"]["expr"].endswith("> 172800")
    assert "{{ $labels.namespace }}" in alerts["ValoriNoLeader"]["annotations"]["summary"]
    # Every metric an alert reads is one the nodes or the operator export.
    exported = set(re.findall(r'"(valori_[a-z_]+)"', (REPO / "node" / "src" / "metrics.rs").read_text()))
    exported |= set(re.findall(r'"(valori_operator_[a-z_]+)"', (REPO / "operator" / "src" / "metrics.rs").read_text()))
    for a in alerts.values():
        for metric in re.findall(r"valori_[a-z_]+", a["expr"]):
            assert metric in exported, (a["alert"], metric)
    # Off by default.
    assert not [o for o in render({}) if o["kind"] in {"PodMonitor", "PrometheusRule"}]
