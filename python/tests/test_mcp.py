"""``valori-mcp`` driven by the MCP SDK's own client, over stdio (the command started as a
desktop client starts it) and over streamable HTTP, against a real node and embedded: the
client lists the tools, stores, finds with a filter, forgets, and the state tool's hashes are
the node's own ``/v1/state``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict

import anyio
import pytest
from mcp import Client, StdioServerParameters

from valori.embed import HashingEmbedding, load
from valori.mcp_server import default_key

COMMAND = str(Path(sys.executable).with_name("valori-mcp"))


def payload(result: Any) -> Dict[str, Any]:
    """A tool call's structured answer (the SDK's client parses the server's JSON)."""
    assert not result.is_error, result
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


async def session_flow(client: Client, node_url: str | None) -> None:
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == {"store", "find", "forget", "state"}

    first = payload(await client.call_tool("store", {"text": "Alice prefers green tea", "metadata": {"user": "alice", "year": 2026}}))
    assert first["stored"] is True and first["key"] == default_key("Alice prefers green tea")
    again = payload(await client.call_tool("store", {"text": "Alice prefers green tea", "metadata": {"user": "alice", "year": 2026}}))
    assert (again["stored"], again["seq"], again["id"]) == (False, first["seq"], first["id"])
    payload(await client.call_tool("store", {"text": "Bob prefers black coffee", "metadata": {"user": "bob"}, "key": "bob-coffee"}))
    payload(await client.call_tool("store", {"text": "Alice lives in Lyon", "metadata": {"user": "alice", "year": 2025}}))

    found = payload(await client.call_tool("find", {"query": "what tea does alice prefer", "limit": 2, "filter": {"user": "alice"}}))
    texts = [r["text"] for r in found["results"]]
    assert texts[0] == "Alice prefers green tea" and len(texts) == 2
    assert all(r["metadata"]["user"] == "alice" for r in found["results"])
    recent = payload(await client.call_tool("find", {"query": "alice", "filter": {"year": {"$gte": 2026}}}))
    assert [r["text"] for r in recent["results"]] == ["Alice prefers green tea"]

    gone = payload(await client.call_tool("forget", {"key": "bob-coffee"}))
    assert gone["deleted"] == 1
    coffee = payload(await client.call_tool("find", {"query": "black coffee", "limit": 5}))
    assert "Bob prefers black coffee" not in [r["text"] for r in coffee["results"]]

    bad = await client.call_tool("find", {"query": "x", "filter": {"user": {"$regex": "a"}}})
    assert bad.is_error and "$regex" in bad.content[0].text

    receipt = payload(await client.call_tool("state", {}))
    if node_url is not None:
        with urllib.request.urlopen(f"{node_url}/v1/state") as r:
            node = json.load(r)
        assert (receipt["seq"], receipt["chain_hash"], receipt["state_hash"]) == (
            node["seq"],
            node["chain_hash"],
            node["state_hash"],
        )
    assert len(receipt["state_hash"]) == 64


def env_for(**values: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALORI_")}
    env.update(values)
    return env


def test_stdio_session_against_a_node(start_node) -> None:
    node = start_node()
    params = StdioServerParameters(
        command=COMMAND, args=[], env=env_for(VALORI_URL=node.url, VALORI_COLLECTION="mem")
    )

    async def main() -> None:
        async with Client(params) as client:
            await session_flow(client, node.url)

    anyio.run(main)


def test_stdio_session_embedded(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=COMMAND, args=[], env=env_for(VALORI_PATH=str(tmp_path / "mem"), VALORI_EMBEDDING="hashing:128")
    )

    async def main() -> None:
        async with Client(params) as client:
            await session_flow(client, None)

    anyio.run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_session_against_a_node(start_node) -> None:
    node = start_node()
    port = free_port()
    proc = subprocess.Popen(
        [COMMAND, "--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port)],
        env=env_for(VALORI_URL=node.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("valori-mcp did not start: " + (proc.stderr.read() if proc.stderr else ""))
                time.sleep(0.1)

        async def main() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                await session_flow(client, node.url)

        anyio.run(main)
    finally:
        proc.terminate()
        proc.wait(30)


def test_configuration_errors_are_plain() -> None:
    out = subprocess.run(
        [COMMAND], env=env_for(VALORI_URL="http://x", VALORI_PATH="/tmp/x"),
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "not both" in out.stderr
    with pytest.raises(ValueError, match="hashing"):
        load("nonsense")


def test_the_hashing_model_is_deterministic_and_lexical() -> None:
    m = HashingEmbedding(64)
    a, b, c = m.embed(["green tea", "Green  tea!", "black coffee"])
    assert a == b and len(a) == 64
    assert abs(sum(x * x for x in a) - 1.0) < 1e-9
    dot = lambda x, y: sum(p * q for p, q in zip(x, y))  # noqa: E731
    assert dot(a, b) > dot(a, c)
    assert load("valori.embed:HashingEmbedding")(["x"]) == [HashingEmbedding().embed_one("x")]


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    import contextlib
    import io
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## MCP memory server", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    # `valori-mcp` on PATH, as an installed package puts it.
    monkeypatch.setenv("PATH", f"{Path(COMMAND).parent}{os.pathsep}{os.environ['PATH']}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "python/README.md", "exec"), {"__name__": "__readme__"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "Alice prefers green tea", lines
    assert re.fullmatch(r"[0-9a-f]{64}", lines[1]), lines
