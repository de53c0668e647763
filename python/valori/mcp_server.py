"""``valori-mcp``: a Model Context Protocol memory server on Valori (``pip install
"valori[mcp]"``).

Tools: ``store`` (a text with optional metadata and key), ``find`` (the texts nearest a query,
optionally filtered), ``forget`` (by key) and ``state`` (the sequence number, chain hash and
state hash: a receipt of what the memory held, which anyone can check against the node's
``/v1/state`` or a replay of its log).

Configuration, from the environment:

- ``VALORI_URL`` (a node, with ``VALORI_API_KEY``) or ``VALORI_PATH`` (an embedded directory;
  ``./valori_memory`` when neither is set);
- ``VALORI_COLLECTION`` (``memory``), created on the first store with the model's dimension and
  the cosine metric;
- ``VALORI_EMBEDDING``: ``hashing`` (the default: offline, no download; ``hashing:DIM`` for
  another size) or ``package.module:attribute`` naming another model (see ``valori.embed``).
  A tool call may also pass its own ``vector``.

Run ``valori-mcp`` (stdio, what desktop clients start) or ``valori-mcp --transport
streamable-http --host 127.0.0.1 --port 8000`` (served at ``/mcp``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any, Dict, List, Optional

from typing_extensions import TypedDict

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError('valori-mcp needs the MCP SDK: pip install "valori[mcp]"') from e

import functools

from valori import NotFoundError, Valori, ValoriError
from valori._collections import ensure_collection, missing_collection
from valori.embed import load
from valori.filters import from_mongo_style

__all__ = ["build", "main"]


class Stored(TypedDict):
    """What `store` answers."""

    key: str
    id: int
    stored: bool
    seq: int


class Recalled(TypedDict):
    """One memory `find` answers."""

    key: Optional[str]
    text: Optional[str]
    metadata: Dict[str, Any]
    similarity: float


class Found(TypedDict):
    """What `find` answers: the memories, best first, and the sequence number read."""

    results: List[Recalled]
    seq: int


class Forgotten(TypedDict):
    """What `forget` answers."""

    deleted: int
    seq: int


class Receipt(TypedDict):
    """What `state` answers."""

    seq: int
    chain_hash: str
    state_hash: str


def default_key(text: str) -> str:
    """The key a text is stored under when none is given: storing it twice changes nothing."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Memory:
    """The tools' state: one handle, one collection, one embedding model."""

    def __init__(self, db: Valori, collection: str, embed: Any) -> None:
        self.db = db
        self.collection = collection
        self.embed = embed
        self.ready = False

    def vector(self, text: str, given: Optional[List[float]]) -> List[float]:
        return list(given) if given is not None else list(self.embed([text])[0])

    def ensure(self, dimension: int) -> None:
        if not self.ready:
            ensure_collection(self.db, self.collection, dimension, "cosine")
            self.ready = True

    def store(
        self,
        text: str,
        metadata: Optional[Dict[str, Any]],
        key: Optional[str],
        vector: Optional[List[float]],
    ) -> Stored:
        key = key or default_key(text)
        metadata = dict(metadata or {})
        v = self.vector(text, vector)
        self.ensure(len(v))
        if vector is None:
            # The same text and metadata embed to the same vector: nothing to write.
            got = self.db.get_records([key], collection=self.collection)
            if got["records"]:
                r = got["records"][0]
                if r.get("document") == text and r.get("payload") == metadata:
                    return {"key": key, "id": r["id"], "stored": False, "seq": got["seq"]}
        done = self.db.upsert(
            [key], [v], payloads=[metadata], documents=[text], collection=self.collection
        )
        return {"key": key, "id": done["ids"][0], "stored": True, "seq": done["seq"]}

    def find(
        self,
        query: str,
        limit: int,
        filter: Optional[Dict[str, Any]],
        vector: Optional[List[float]],
    ) -> Found:
        v = self.vector(query, vector)
        search = {
            "vector": v,
            "k": limit,
            "filter": from_mongo_style(filter) if filter else None,
            "include": ["payload", "document"],
        }
        try:
            # A batch of one: its answer names the sequence number it read.
            answer = self.db.search_batch([search], collection=self.collection)
            hits, seq = answer["results"][0], answer["seq"]
        except NotFoundError as e:
            if not missing_collection(e):
                raise
            hits, seq = [], self.db.state().seq
        return {
            "results": [
                {
                    "key": h.key,
                    "text": h.document,
                    "metadata": h.payload or {},
                    "similarity": h.similarity,
                }
                for h in hits
            ],
            "seq": seq,
        }

    def forget(self, key: str) -> Forgotten:
        try:
            return self.db.delete_records([key], collection=self.collection)
        except NotFoundError as e:
            if not missing_collection(e):
                raise
            return {"deleted": 0, "seq": self.db.state().seq}

    def state(self) -> Receipt:
        s = self.db.state()
        return {"seq": s.seq, "chain_hash": s.chain_hash, "state_hash": s.state_hash}


def _answers(tool: Any) -> Any:
    """Refusals (bad input, a missing record, a node that is down) reach the agent as the
    tool's error with Valori's message; anything else is a crash the server logs."""

    @functools.wraps(tool)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return tool(*args, **kwargs)
        except (ValoriError, ValueError, LookupError, ConnectionError) as e:
            raise ToolError(str(e)) from e

    return call


def build(memory: Memory) -> MCPServer:
    """The MCP server of a memory."""
    server = MCPServer(
        "valori",
        instructions=(
            "A durable, deterministic memory. store() keeps a text (and metadata); find() "
            "recalls the texts nearest a query, optionally filtered by metadata; forget() "
            "removes one; state() returns hashes that prove what the memory held."
        ),
    )

    @server.tool()
    @_answers
    def store(
        text: str,
        metadata: Optional[Dict[str, Any]] = None,
        key: Optional[str] = None,
        vector: Optional[List[float]] = None,
    ) -> Stored:
        """Stores a text with optional metadata (a JSON object) under `key` (by default a hash
        of the text, so storing the same text twice changes nothing). Returns the key, the
        record's id, whether anything was written, and the sequence number."""
        return memory.store(text, metadata, key, vector)

    @server.tool()
    @_answers
    def find(
        query: str,
        limit: int = 5,
        filter: Optional[Dict[str, Any]] = None,
        vector: Optional[List[float]] = None,
    ) -> Found:
        """The stored texts nearest `query`, best first, with their key, metadata and
        similarity (higher is closer). `filter` keeps only memories whose metadata matches:
        {"user": "u42"}, {"year": {"$gte": 2025}}, $in, $nin, $ne, $and, $or, $not."""
        return memory.find(query, limit, filter, vector)

    @server.tool()
    @_answers
    def forget(key: str) -> Forgotten:
        """Removes the memory stored under `key`; answers how many were deleted (0 or 1)."""
        return memory.forget(key)

    @server.tool()
    @_answers
    def state() -> Receipt:
        """The memory's sequence number, chain hash and state hash: equal hashes mean equal
        memories, on any machine that replays the same log."""
        return memory.state()

    return server


def open_memory(env: Optional[Dict[str, str]] = None) -> Memory:
    """The memory the environment names."""
    env = dict(os.environ if env is None else env)
    url, path = env.get("VALORI_URL"), env.get("VALORI_PATH")
    if url and path:
        raise SystemExit("valori-mcp: set VALORI_URL or VALORI_PATH, not both")
    if url:
        db = Valori(remote=url, api_key=env.get("VALORI_API_KEY") or None)
    else:
        db = Valori(path=path or "./valori_memory")
    embed = load(env.get("VALORI_EMBEDDING", "hashing"))
    return Memory(db, env.get("VALORI_COLLECTION", "memory"), embed)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="valori-mcp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    memory = open_memory()
    server = build(memory)
    try:
        if args.transport == "stdio":
            server.run("stdio")
        else:
            print(
                f"valori-mcp serving http://{args.host}:{args.port}/mcp",
                file=sys.stderr,
                flush=True,
            )
            server.run("streamable-http", host=args.host, port=args.port)
    finally:
        memory.db.close()


if __name__ == "__main__":
    main()
