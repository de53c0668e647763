"""The real-cluster end-to-end test: on a kind or k3s cluster, build and load the images,
install the chart, apply the example ValoriCluster, wait for Ready and Converged, write through
the read-write Service and read through the read-only one, delete a follower pod and then the
leader pod, and check that every acknowledged write survived.

It runs only against the context named by VALORI_E2E_KUBECONTEXT (so that it never touches a
cluster by accident), with `kubectl` and `helm` on the PATH; otherwise it is skipped and says
why. Images are loaded with `kind load docker-image` for a kind context (`kind-*`) and
`k3s ctr images import` for k3s (VALORI_E2E_LOADER=kind|k3s|none overrides the guess)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTEXT = os.environ.get("VALORI_E2E_KUBECONTEXT", "")
TAG = os.environ.get("VALORI_IMAGE_TAG", "0.1.0")
NS = "valori-e2e"


def why_skip() -> str | None:
    if not CONTEXT:
        return "no cluster named: set VALORI_E2E_KUBECONTEXT to a kind or k3s context to run the Kubernetes end-to-end test"
    for tool in ("kubectl", "helm", "docker"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    r = subprocess.run(["kubectl", "--context", CONTEXT, "cluster-info"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"the cluster of context {CONTEXT} is not reachable: {r.stderr.strip()}"
    return None


WHY = why_skip()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"Kubernetes e2e skipped: {WHY}")


def run(*args: str, timeout: float = 600, input: str | None = None) -> str:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def kubectl(*args: str, **kw) -> str:
    return run("kubectl", "--context", CONTEXT, *args, **kw)


def vc_status() -> dict:
    return json.loads(kubectl("-n", NS, "get", "vc", "memory", "-o", "json")).get("status", {})


def wait_for(what: str, pred, secs: float = 600) -> dict:
    deadline = time.time() + secs
    while True:
        st = vc_status()
        if pred(st):
            return st
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {json.dumps(st, indent=1)}")
        time.sleep(3)


def ready_and_converged(st: dict) -> bool:
    conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
    return conds.get("Ready") == "True" and conds.get("Converged") == "True" and st.get("phase") == "Healthy"


class PortForward:
    """`kubectl port-forward` to a Service on a free local port."""

    def __init__(self, service: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["kubectl", "--context", CONTEXT, "-n", NS, "port-forward", f"svc/{service}", f"{self.port}:3000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def request(url: str, method: str, path: str, body=None):
    import http.client
    conn = http.client.HTTPConnection(url.split("://")[1], timeout=10)
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"content-type": "application/json"} if body is not None else {})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    if r.status >= 300:
        raise AssertionError(f"{method} {path}: {r.status} {text}")
    return json.loads(text) if text else None


def load_images() -> None:
    run(str(REPO / "e2e" / "build-images.sh"), timeout=3600)
    loader = os.environ.get("VALORI_E2E_LOADER") or ("kind" if CONTEXT.startswith("kind-") else "k3s")
    for image in (f"valori-node:{TAG}", f"valori-operator:{TAG}"):
        if loader == "kind":
            run("kind", "load", "docker-image", image, "--name", CONTEXT.removeprefix("kind-"))
        elif loader == "k3s":
            saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
            subprocess.run(["sudo", "k3s", "ctr", "images", "import", "-"], input=saved, check=True)


def test_the_chart_runs_a_cluster_that_survives_losing_pods():
    load_images()
    kubectl("create", "namespace", NS)
    try:
        run("helm", "--kube-context", CONTEXT, "install", "valori-operator", str(REPO / "charts" / "valori-operator"),
            "-n", NS, "--set", "image.pullPolicy=Never", "--wait", "--timeout", "5m")
        example = (REPO / "charts" / "examples" / "valoricluster.yaml").read_text()
        example = example.replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: Never")
        example = example.replace("delaySeconds: 30", "delaySeconds: 10").replace("intervalSeconds: 30", "intervalSeconds: 5")
        # The example's backup needs an object store and its credentials Secret, which a test
        # cluster lacks: the block (the last of the spec) is left out.
        example = example[: example.index("  # Backups to object storage")]
        kubectl("-n", NS, "apply", "-f", "-", input=example)
        st = wait_for("Ready and Converged", ready_and_converged)
        print(kubectl("-n", NS, "get", "vc"))

        rw = PortForward("memory-rw")
        acked = []
        try:
            request(rw.url, "POST", "/v1/collections", {"name": "v", "dimension": 4})
            for i in range(200):
                r = request(rw.url, "POST", "/v1/collections/v/records", {"vector": [i / 8, 1.0, 2.0, 3.0], "tag": i})
                acked.append((r["id"], i))
        finally:
            rw.close()
        ro = PortForward("memory-ro")
        try:
            state = request(ro.url, "GET", "/v1/state")
            assert state["seq"] >= 1, state
        finally:
            ro.close()

        # A follower pod deleted: recreated, it catches up.
        follower = next(i["pod"] for i in st["instancesStatus"] if i["role"] == "follower")
        kubectl("-n", NS, "delete", "pod", follower, "--wait=false")
        wait_for("convergence after a follower was deleted", ready_and_converged)

        # The leader pod deleted: failover (or the leader's return), then convergence.
        leader = st["currentLeader"]
        kubectl("-n", NS, "delete", "pod", leader, "--wait=false")
        st = wait_for("convergence after the leader was deleted", lambda s: ready_and_converged(s) and s.get("currentLeader"))
        print(kubectl("-n", NS, "get", "vc"), st["currentLeader"], st["epoch"])

        rw = PortForward("memory-rw")
        try:
            for id_, tag in acked:
                r = request(rw.url, "GET", f"/v1/collections/v/records/{id_}")
                assert r["tag"] == tag, (id_, tag, r)
        finally:
            rw.close()
    finally:
        kubectl("-n", NS, "delete", "vc", "memory", "--ignore-not-found", "--wait=true", timeout=300)
        run("helm", "--kube-context", CONTEXT, "uninstall", "valori-operator", "-n", NS)
        kubectl("delete", "namespace", NS, "--wait=false")
