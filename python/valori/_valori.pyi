"""Type stubs for the compiled extension (the class is re-exported as ``valori.Valori``)."""

import os
from types import TracebackType
from typing import Any, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Type, Union

import numpy.typing as npt

from valori.types import Collection, Edge, GraphNode, Neighbor, Record, SearchResult, State, Traversal

Vector = Union[Sequence[float], "npt.NDArray"]
"""One vector: a sequence of numbers or a 1-d numpy array (float32 and float64 are read in place)."""

Vectors = Union[Sequence[Vector], "npt.NDArray"]
"""Several vectors: a sequence of vectors or a 2-d numpy array (one row per vector)."""

Blob = Union[bytes, bytearray, None]

Filter = Dict[str, Any]
"""A filter in the API's shape: ``{"must": [...], "should": [...], "must_not": [...]}``."""

Part = Literal["vector", "payload", "document", "metadata"]

class Valori:
    """A Valori database: embedded in this process or a node reached over HTTP.

    ``Valori(path)`` opens (recovering) or creates the data directory ``path`` (default
    ``./valori_db``); ``Valori(remote="http://host:3000", api_key=...)`` talks to a node.
    ``https://`` URLs verify the node's certificate against the system's trusted roots and,
    when given, the PEM certificates in the file ``ca_cert`` (a private CA). Embedded,
    ``vectors_on_disk=True`` keeps the full-precision vectors in files mapped from the
    directory's ``vectors/`` instead of in memory (the node's ``--vectors-on-disk``: the same
    results, less resident memory). Writes return once
    they are durable. The GIL is released while the database works, so threads may
    share one handle. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]", None] = None,
        *,
        remote: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: float = 30.0,
        ca_cert: Union[str, "os.PathLike[str]", None] = None,
        vectors_on_disk: bool = False,
    ) -> None: ...
    @property
    def mode(self) -> Literal["embedded", "remote"]: ...
    @property
    def closed(self) -> bool: ...
    def create_collection(
        self,
        name: str,
        dimension: int,
        metric: Literal["l2", "ip", "cosine"] = "l2",
        index: Literal["hnsw", "flat"] = "hnsw",
        *,
        m: Optional[int] = None,
        ef_construction: Optional[int] = None,
        ef_search: Optional[int] = None,
    ) -> None:
        """Creates a collection. Inserting into ``"default"`` creates it on first use (``l2``,
        HNSW, the first vector's dimension)."""
    def drop_collection(self, name: str) -> None:
        """Drops a collection and its records."""
    def collections(self) -> List[Collection]:
        """Every collection, by name."""
    def collection(self, name: str) -> Collection:
        """One collection's description."""
    def insert(
        self, vector: Vector, tag: int = 0, metadata: Blob = None, *, collection: str = "default"
    ) -> int:
        """Inserts one vector with a tag and metadata bytes; returns its id."""
    def insert_batch(
        self,
        vectors: Vectors,
        tags: Union[int, Sequence[int], None] = None,
        metadata: Optional[Sequence[Blob]] = None,
        *,
        collection: str = "default",
    ) -> List[int]:
        """Inserts vectors atomically (all or none); returns their ids in order."""
    def get(self, id: int, *, collection: str = "default") -> Record:
        """A stored record."""
    def delete(self, id: int, *, collection: str = "default") -> None:
        """Deletes a record."""
    def search(
        self,
        vector: Vector,
        k: int = 10,
        tag: Optional[int] = None,
        *,
        collection: str = "default",
        ef: Optional[int] = None,
        with_metadata: bool = False,
        filter: Optional[Filter] = None,
        score_threshold: Optional[float] = None,
        exact: bool = False,
        include: Optional[Sequence[Part]] = None,
        at_seq: Optional[int] = None,
    ) -> List[SearchResult]:
        """The ``k`` nearest records (only those with ``tag`` and matching ``filter``, if given),
        nearest first; strict: never a non-match, never fewer than min(k, matches). With
        ``at_seq``, as the state stood at that past sequence number (replayed from the nearest
        snapshot; a node refuses more than its ``--max-replay-events``)."""
    def search_batch(
        self, searches: Sequence[Dict[str, Any]], *, collection: str = "default"
    ) -> Dict[str, Any]:
        """Up to 256 searches (dicts of ``search``'s arguments) from one state:
        ``{"results": [[SearchResult, ...], ...], "seq": int}``."""
    def upsert(
        self,
        keys: Sequence[str],
        vectors: Vectors,
        *,
        payloads: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
        documents: Optional[Sequence[Optional[str]]] = None,
        tags: Union[int, Sequence[int], None] = None,
        metadata: Optional[Sequence[Blob]] = None,
        mode: Literal["upsert", "insert_only", "update_only"] = "upsert",
        collection: str = "default",
    ) -> Dict[str, Any]:
        """Writes records by key, all or nothing: ``{"ids": [...], "seq": int}``."""
    def get_records(
        self,
        keys: Optional[Sequence[str]] = None,
        *,
        ids: Optional[Sequence[int]] = None,
        include: Optional[Sequence[Part]] = None,
        collection: str = "default",
    ) -> Dict[str, Any]:
        """Records by keys or ids, in the order asked: ``{"records", "missing", "seq"}``."""
    def scroll(
        self,
        filter: Optional[Filter] = None,
        *,
        limit: int = 100,
        cursor: Optional[str] = None,
        include: Optional[Sequence[Part]] = None,
        collection: str = "default",
    ) -> Dict[str, Any]:
        """A page of records by ascending id: ``{"records", "next_cursor", "seq"}``."""
    def count(self, filter: Optional[Filter] = None, *, collection: str = "default") -> Dict[str, int]:
        """How many records match, exactly: ``{"count", "seq"}``."""
    def delete_records(
        self,
        keys: Optional[Sequence[str]] = None,
        *,
        ids: Optional[Sequence[int]] = None,
        filter: Optional[Filter] = None,
        max_affected: Optional[int] = None,
        collection: str = "default",
    ) -> Dict[str, int]:
        """Deletes by keys, ids or a filter: ``{"deleted", "seq"}``."""
    def set_payload(
        self,
        payload: Dict[str, Any],
        *,
        keys: Optional[Sequence[str]] = None,
        ids: Optional[Sequence[int]] = None,
        filter: Optional[Filter] = None,
        mode: Literal["merge", "replace"] = "merge",
        max_affected: Optional[int] = None,
        collection: str = "default",
    ) -> Dict[str, int]:
        """Merges into or replaces payloads: ``{"updated", "seq"}``."""
    def delete_payload_keys(
        self,
        fields: Sequence[str],
        *,
        keys: Optional[Sequence[str]] = None,
        ids: Optional[Sequence[int]] = None,
        filter: Optional[Filter] = None,
        max_affected: Optional[int] = None,
        collection: str = "default",
    ) -> Dict[str, int]:
        """Removes top-level payload keys: ``{"updated", "seq"}``."""
    def create_payload_index(
        self, field: str, kind: Literal["keyword", "integer", "bool"], *, collection: str = "default"
    ) -> None: ...
    def drop_payload_index(self, field: str, *, collection: str = "default") -> None: ...
    def payload_indexes(self, *, collection: str = "default") -> Dict[str, Any]: ...
    def create_node(
        self,
        kind: str,
        *,
        record: Optional[Tuple[str, Union[int, str]]] = None,
        properties: Blob = None,
    ) -> int:
        """Creates a graph node, optionally linked to a record: ``(collection, id)`` or
        ``(collection, key)``."""
    def get_node(self, id: int) -> GraphNode: ...
    def delete_node(self, id: int) -> None:
        """Deletes a node and its edges."""
    def create_edge(self, source: int, target: int, kind: str) -> int:
        """Creates an edge ``source -> target``; returns its id."""
    def get_edge(self, id: int) -> Edge: ...
    def delete_edge(self, id: int) -> None: ...
    def neighbors(
        self,
        id: int,
        direction: Literal["out", "in", "both"] = "out",
        kinds: Optional[Iterable[str]] = None,
    ) -> List[Neighbor]: ...
    def traverse(
        self,
        start: int,
        max_depth: int,
        kinds: Optional[Iterable[str]] = None,
        direction: Literal["out", "in", "both"] = "out",
    ) -> Traversal: ...
    def snapshot(self, path: Union[str, "os.PathLike[str]", None] = None) -> str:
        """Takes a snapshot; with ``path``, also writes a copy there (downloaded, in remote
        mode). Returns the copy's path, or else the snapshot's (on the server, in remote mode)."""
    def restore(self, path: Union[str, "os.PathLike[str]"]) -> State:
        """Replaces the whole state with a snapshot file's; nothing changes if it does not
        verify."""
    def state(self) -> State: ...
    def state_hash(self) -> str:
        """The blake3 hash of the whole state (hex)."""
    def close(self) -> None:
        """Closes the handle; later calls raise ``ValoriError`` with code ``closed``."""
    def __enter__(self) -> "Valori": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
