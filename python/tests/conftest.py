"""Fixtures: a real ``valori-node`` process on 127.0.0.1 with its own data directory, and a
``db`` handle that runs each test once embedded and once against such a node."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from valori import Valori

REPO = Path(__file__).resolve().parents[2]


def _node_binary() -> str:
    """The ``valori-node`` executable: ``$VALORI_NODE_BIN``, or built with cargo."""
    explicit = os.environ.get("VALORI_NODE_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"VALORI_NODE_BIN={explicit} is not an executable")
        return explicit
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "valori-node", "--bin", "valori-node"],
        cwd=REPO,
        check=True,
    )
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "valori-node")


@pytest.fixture(scope="session")
def node_binary() -> str:
    return _node_binary()


class Node:
    """A ``valori-node`` process; stopped by its PID."""

    def __init__(self, binary: str, data_dir: Path, extra: Optional[List[str]] = None,
                 env: Optional[dict] = None) -> None:
        self.data_dir = data_dir
        self.url = ""
        cmd = [binary, "--data-dir", str(data_dir), "--http-addr", "127.0.0.1",
               "--http-port", "0", "--no-grpc"]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VALORI_")}
        full_env.update(env or {})
        full_env.setdefault("VALORI_LOG", "warn")
        self.proc = subprocess.Popen(
            cmd + (extra or []),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
        self.output: List[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = re.search(r"valori-node listening on (https?://\S+)", line)
                if m:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(120) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("valori-node did not start:\n" + "".join(self.output))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def start_node(node_binary: str, tmp_path: Path) -> Iterator:
    """Starts nodes on demand; every node is stopped when the test ends."""
    nodes: List[Node] = []

    def start(data_dir: Optional[Path] = None, extra: Optional[List[str]] = None,
              env: Optional[dict] = None) -> Node:
        d = data_dir or tmp_path / f"node{len(nodes)}"
        n = Node(node_binary, d, extra, env)
        nodes.append(n)
        return n

    yield start
    for n in nodes:
        n.stop()


@pytest.fixture(params=["embedded", "remote"])
def db(request, tmp_path: Path, start_node) -> Iterator[Valori]:
    """A fresh database, embedded or behind a real node."""
    if request.param == "embedded":
        handle = Valori(path=str(tmp_path / "embedded"))
    else:
        node = start_node()
        handle = Valori(remote=node.url)
    yield handle
    handle.close()


def pytest_report_header() -> str:
    return f"python {sys.version.split()[0]}, valori-node: {os.environ.get('VALORI_NODE_BIN', 'built by cargo')}"


def pytest_configure(config) -> None:
    # The frameworks' own suites (langchain_tests' VectorStoreIntegrationTests) hold plain
    # ``async def`` tests, which they run with pytest-asyncio in auto mode.
    if hasattr(config.option, "asyncio_mode"):
        config.option.asyncio_mode = "auto"
