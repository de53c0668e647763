"""A Valori cluster in Docker containers on a private network, a client that writes and reads
continuously and remembers every acknowledged write, and the checks the fault suite makes.

The images are the ones e2e/build-images.sh builds (valori-node:TAG, valori-operator's binary
on the host for the arbiter's failover). The host reaches each container at its fixed address
on the private network; so do the containers, so one URL names a node for everyone."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
TAG = os.environ.get("VALORI_IMAGE_TAG", "0.1.0")
DIM = 8
# --min-replicas-max-lag-ms of the asynchronous clusters.
ASYNC_MAX_LAG_MS = 3000


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, timeout=timeout)


def docker_available() -> Optional[str]:
    """None when Docker runs and the images exist; otherwise why the suite cannot run."""
    try:
        r = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return f"no Docker engine ({e})"
    if r.returncode != 0:
        return f"no Docker engine: {r.stderr.strip() or r.stdout.strip()}"
    for image in ("valori-node", "valori-operator"):
        r = docker("image", "inspect", f"{image}:{TAG}", check=False)
        if r.returncode != 0:
            return f"the image {image}:{TAG} is missing: run e2e/build-images.sh"
    return None


def operator_binary() -> str:
    explicit = os.environ.get("VALORI_OPERATOR_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return str(Path(target) / "debug" / "valori-operator")


class NodeError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def call(url: str, method: str, path: str, body=None, timeout: float = 5.0, headers=None):
    """One HTTP request; returns the decoded JSON or raises NodeError / OSError."""
    host = url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        h = {"content-type": "application/json"} if body is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode()
        if r.status >= 300:
            raise NodeError(r.status, text)
        return json.loads(text) if text else None
    finally:
        conn.close()


def vector(n: int) -> List[float]:
    return [((n * 7 + j * 3) % 61) / 8.0 for j in range(DIM)]


@dataclass
class Ack:
    tag: int
    id: int
    seq: int


@dataclass
class Read:
    seq: int
    acked_before: int
    node: str


class Client(threading.Thread):
    """Writes one record every `interval` seconds to the node it is pointed at, records every
    acknowledged write (id, tag, sequence number), and every `read_every` writes reads the
    leader's state, recording the sequence number it saw and the highest acknowledged one
    before the read began."""

    def __init__(self, target: str, interval: float = 0.02, read_every: int = 5):
        super().__init__(daemon=True)
        self.target = target
        self.interval = interval
        self.read_every = read_every
        self.acks: List[Ack] = []
        self.reads: List[Read] = []
        self.failures = 0
        self.unknown = 0
        self.last_error = ""
        self.next_tag = 1
        self.stop_flag = threading.Event()
        self.paused = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            target = self.target
            tag = self.next_tag
            self.next_tag += 1
            try:
                r = call(target, "POST", "/v1/collections/v/records", {"vector": vector(tag), "tag": tag}, timeout=8)
                with self.lock:
                    self.acks.append(Ack(tag=tag, id=r["id"], seq=r["seq"]))
            except NodeError as e:
                with self.lock:
                    if "replication_timeout" in e.body:
                        self.unknown += 1
                    else:
                        self.failures += 1
                    self.last_error = f"{target}: {e}"
            except OSError as e:
                with self.lock:
                    self.failures += 1
                    self.last_error = f"{target}: {e}"
            if tag % self.read_every == 0:
                with self.lock:
                    before = max((a.seq for a in self.acks), default=0)
                try:
                    s = call(target, "GET", "/v1/state", timeout=5)
                    with self.lock:
                        self.reads.append(Read(seq=s["seq"], acked_before=before, node=target))
                except (NodeError, OSError):
                    pass
            time.sleep(self.interval)

    def acked(self) -> List[Ack]:
        with self.lock:
            return list(self.acks)

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(timeout=30)


class Cluster:
    """Three (or more) valori-node containers on a private network with fixed addresses."""

    def __init__(self, name: str, sync_replicas: int, size: int = 3):
        self.name = name
        self.sync = sync_replicas
        self.size = size
        self.subnet_octet = 16 + (os.getpid() * 7 + sum(name.encode()) * 13) % 234
        self.net = f"{name}-net"
        # The arbiter's own network: it reaches the nodes there, so that the arbiter alone can
        # be cut off from a node that its followers and clients still reach.
        self.arb_net = f"{name}-arb"
        self.nodes = [f"{name}-n{i}" for i in range(size)]
        self.ips = {n: f"172.29.{self.subnet_octet}.{10 + i}" for i, n in enumerate(self.nodes)}
        self.arb_ips = {n: f"172.28.{self.subnet_octet}.{10 + i}" for i, n in enumerate(self.nodes)}
        self.epoch = 1
        self.leader = self.nodes[0]

    def url(self, node: str) -> str:
        return f"http://{self.ips[node]}:3000"

    def arbiter_url(self, node: str) -> str:
        """The node as the arbiter (in its own container) reaches it."""
        return f"http://{self.arb_ips[node]}:3000"

    def start(self) -> None:
        self.teardown()
        try:
            docker("network", "create", "--subnet", f"172.29.{self.subnet_octet}.0/24", self.net)
            docker("network", "create", "--subnet", f"172.28.{self.subnet_octet}.0/24", self.arb_net)
            for node in self.nodes:
                self._run(node)
                docker("network", "connect", "--ip", self.arb_ips[node], self.arb_net, node)
            self.wait_healthy(self.nodes)
            # The first write waits for followers to be following: with synchronous replication
            # it could not be acknowledged before.
            deadline = time.time() + 60
            while True:
                r = call(self.url(self.leader), "GET", "/v1/replication")
                if len(r["followers"]) == self.size - 1:
                    break
                if time.time() > deadline:
                    raise AssertionError(f"followers never reached the leader: {r}")
                time.sleep(0.2)
            call(self.url(self.leader), "POST", "/v1/collections", {"name": "v", "dimension": DIM})
        except BaseException:
            self.teardown()
            raise

    def _run(self, node: str) -> None:
        env = {
            "VALORI_SYNC_REPLICAS": str(self.sync),
            "VALORI_SYNC_TIMEOUT_MS": "3000",
            "VALORI_NO_GRPC": "true",
            "VALORI_LOG": "warn",
        }
        if self.sync == 0:
            # What the operator sets by default with asynchronous replication (with a shorter
            # lag): a leader no follower has confirmed within it refuses writes, which bounds
            # what an isolated leader acknowledges and a failover then loses.
            env["VALORI_MIN_REPLICAS_TO_WRITE"] = "1"
            env["VALORI_MIN_REPLICAS_MAX_LAG_MS"] = str(ASYNC_MAX_LAG_MS)
        if node != self.nodes[0]:
            env["VALORI_REPLICATION_MODE"] = "follower"
            env["VALORI_LEADER_URL"] = self.url(self.nodes[0])
        args = ["run", "-d", "--name", node, "--hostname", node, "--network", self.net, "--ip", self.ips[node]]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        docker(*args, f"valori-node:{TAG}")

    def teardown(self) -> None:
        for node in self.nodes:
            docker("rm", "-f", "-v", node, check=False)
        docker("network", "rm", self.net, check=False)
        docker("network", "rm", self.arb_net, check=False)

    # Faults.
    def kill(self, node: str) -> None:
        docker("kill", "--signal", "KILL", node)

    def start_node(self, node: str) -> None:
        docker("start", node)

    def restart(self, node: str) -> None:
        docker("restart", "--time", "20", node)

    def disconnect(self, node: str) -> None:
        docker("network", "disconnect", "--force", self.net, node)

    def connect(self, node: str) -> None:
        docker("network", "connect", "--ip", self.ips[node], self.net, node)

    def cut_from_arbiter(self, node: str) -> None:
        """The arbiter can no longer reach `node`; its followers and clients still do."""
        docker("network", "disconnect", "--force", self.arb_net, node)

    def reconnect_to_arbiter(self, node: str) -> None:
        docker("network", "connect", "--ip", self.arb_ips[node], self.arb_net, node)

    # Observation.
    def role(self, node: str) -> Optional[dict]:
        try:
            return call(self.url(node), "GET", "/v1/role", timeout=3)
        except (NodeError, OSError):
            return None

    def state(self, node: str) -> Optional[dict]:
        try:
            return call(self.url(node), "GET", "/v1/state", timeout=5)
        except (NodeError, OSError):
            return None

    def health(self, node: str) -> str:
        r = docker("inspect", "-f", "{{.State.Health.Status}}", node, check=False)
        return r.stdout.strip()

    def wait_healthy(self, nodes: List[str], secs: float = 90) -> None:
        deadline = time.time() + secs
        while True:
            statuses = {n: self.health(n) for n in nodes}
            if all(s == "healthy" for s in statuses.values()):
                return
            if time.time() > deadline:
                raise AssertionError(f"containers not healthy: {statuses}")
            time.sleep(0.5)

    def converge(self, secs: float = 120) -> float:
        """Waits until every node has the same sequence number, chain hash and state hash;
        returns how long it took."""
        started = time.time()
        deadline = started + secs
        last = None
        while True:
            states = {n: self.state(n) for n in self.nodes}
            if all(states.values()):
                keys = {(s["seq"], s["chain_hash"], s.get("state_hash")) for s in states.values()}
                if len(keys) == 1:
                    return time.time() - started
            last = states
            if time.time() > deadline:
                roles = {n: self.role(n) for n in self.nodes}
                raise AssertionError(f"no convergence in {secs}s: states {last}; roles {roles}")
            time.sleep(0.25)

    def mark(self) -> Tuple[float, int]:
        """The moment a fault is lifted: the time and the highest sequence number any node has."""
        seqs = [s["seq"] for s in (self.state(n) for n in self.nodes) if s]
        return time.time(), max(seqs, default=0)

    def caught_up(self, mark: Tuple[float, int], secs: float = 120) -> float:
        """Seconds from `mark` until every node holds at least the sequence number it names
        (the time to converge after a fault, while the client keeps writing)."""
        since, seq = mark
        deadline = time.time() + secs
        while True:
            states = [self.state(n) for n in self.nodes]
            if all(s and s["seq"] >= seq for s in states):
                return time.time() - since
            if time.time() > deadline:
                raise AssertionError(f"nodes did not reach sequence number {seq} in {secs}s: {states}")
            time.sleep(0.1)

    # The arbiter.
    def fail_over(self, old: Optional[str], followers: List[str]) -> dict:
        args = [operator_binary(), "failover", "--sync-replicas", str(self.sync), "--epoch", str(self.epoch)]
        if old:
            args += ["--leader", f"{old}={self.url(old)}"]
        for f in followers:
            args += ["--follower", f"{f}={self.url(f)}"]
        return self._promoted(subprocess.run(args, capture_output=True, text=True, timeout=120))

    def _promoted(self, r: subprocess.CompletedProcess) -> dict:
        """The outcome `valori-operator failover` printed; the leader and epoch it promoted."""
        if r.returncode not in (0, 3):
            raise AssertionError(f"valori-operator failover failed: {r.stderr}")
        out = json.loads(r.stdout)
        if "promote" in out["decision"]:
            self.leader = out["decision"]["promote"]["name"]
            self.epoch = out["decision"]["promote"]["epoch"]
        return out

    def fail_over_from_arbiter(self, old: Optional[str], followers: List[str]) -> dict:
        """The arbiter's failover run from its own container on its own network (the image's
        `valori-operator failover`)."""
        args = ["run", "--rm", "--network", self.arb_net, f"valori-operator:{TAG}", "failover",
                "--sync-replicas", str(self.sync), "--epoch", str(self.epoch), "--timeout-seconds", "3"]
        if old:
            args += ["--leader", f"{old}={self.arbiter_url(old)}"]
        for f in followers:
            args += ["--follower", f"{f}={self.arbiter_url(f)}"]
        return self._promoted(docker(*args, check=False, timeout=180))

    def switchover(self, to: str) -> dict:
        """A planned hand-over (`valori-operator switchover`, the function a rollout calls)."""
        others = [n for n in self.nodes if n not in (self.leader, to)]
        args = [operator_binary(), "switchover", "--epoch", str(self.epoch),
                "--leader", f"{self.leader}={self.url(self.leader)}", "--to", f"{to}={self.url(to)}"]
        for f in others:
            args += ["--follower", f"{f}={self.url(f)}"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=180)
        if r.returncode not in (0, 3):
            raise AssertionError(f"valori-operator switchover failed: {r.stderr}")
        out = json.loads(r.stdout)
        self.epoch = out["epoch"]
        self.leader = out["leader"]
        return out

    def rejoin(self, node: str) -> None:
        """What the reconcile loop does with a returning old leader: points it at the leader at
        the leader's epoch (it re-bootstraps by itself if its log went past the leader's)."""
        call(self.url(node), "PUT", "/v1/role",
             {"role": "follower", "epoch": self.epoch, "leader_url": self.url(self.leader)})

    def fence(self, node: str) -> dict:
        """What a follower or the operator holding the write key does: names the current
        epoch to a node, which fences it if it is a leader of an older one."""
        return call(self.url(node), "GET", "/v1/role", headers={"x-valori-epoch": str(self.epoch)})


@dataclass
class Verdict:
    acknowledged: int
    found: int
    lost: List[int] = field(default_factory=list)
    backwards_reads: List[Read] = field(default_factory=list)


def check(cluster: Cluster, client: Client, strict_reads: bool = True) -> Verdict:
    """Every acknowledged write on every node (same id, same tag), reads that never saw less
    than what was acknowledged before them."""
    acks = client.acked()
    lost = set()
    for node in cluster.nodes:
        host = cluster.url(node).split("://", 1)[1]
        conn = http.client.HTTPConnection(host, timeout=10)
        for a in acks:
            conn.request("GET", f"/v1/collections/v/records/{a.id}")
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or json.loads(body)["tag"] != a.tag:
                lost.add(a.tag)
        conn.close()
    with client.lock:
        reads = list(client.reads)
    backwards = [r for r in reads if r.seq < r.acked_before]
    return Verdict(acknowledged=len(acks), found=len(acks) - len(lost), lost=sorted(lost),
                   backwards_reads=backwards if strict_reads else [])
