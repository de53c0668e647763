"""The values that :class:`valori.Valori` returns.

They are frozen dataclasses. Fields read as attributes (``hit.id``) or as keys (``hit["id"]``),
and ``dict(hit)`` gives a plain dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

__all__ = [
    "SearchResult",
    "Record",
    "Collection",
    "GraphNode",
    "Edge",
    "Neighbor",
    "Traversal",
    "State",
]


class _Fields:
    """Key access to a dataclass's fields."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> List[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


@dataclass(frozen=True)
class SearchResult(_Fields):
    """One search result.

    ``distance`` is the exact integer distance that orders results (squared L2 for ``l2`` and
    ``cosine``, negated inner product for ``ip``, in units of 2**-32); ``score`` is the same value
    as a float, lower is closer. An exact match has score 0 under ``l2``. ``similarity`` is
    higher for closer hits: the cosine for ``cosine`` collections, the dot product for ``ip``,
    minus ``score`` for ``l2``. ``key`` is the record's key (None for a record inserted without
    one). ``metadata`` is set only when the search asked for it (``with_metadata=True``) and the
    record has some; ``payload`` (a dict), ``document`` and ``vector`` when ``include`` named
    them.
    """

    id: int
    score: float
    distance: int
    tag: int
    metadata: Optional[bytes] = None
    similarity: float = 0.0
    key: Optional[str] = None
    payload: Optional[Dict[str, Any]] = None
    document: Optional[str] = None
    vector: Optional[List[float]] = None


@dataclass(frozen=True)
class Record(_Fields):
    """A stored record. ``vector`` holds the stored Q16.16 values, exactly, as floats."""

    id: int
    vector: List[float]
    tag: int
    metadata: Optional[bytes]


@dataclass(frozen=True)
class Collection(_Fields):
    """A collection: its dimension, metric (``l2``, ``ip``, ``cosine``), index (``hnsw`` or
    ``flat``), live record count and the id the next insert gets."""

    name: str
    dimension: int
    metric: str
    index: str
    records: int
    next_id: int


@dataclass(frozen=True)
class GraphNode(_Fields):
    """A knowledge-graph node, optionally linked to a record: ``record`` is ``(collection, id)``
    for a link to that version of a record, or ``(collection, key)`` for a link to whichever
    record holds the key. ``record_id`` is the id the link names now: the id itself, or for a
    link by key the id of the record that holds the key (None when none does)."""

    id: int
    kind: str
    record: Optional[Tuple[str, Union[int, str]]]
    properties: Optional[bytes]
    record_id: Optional[int] = None


@dataclass(frozen=True)
class Edge(_Fields):
    """A directed knowledge-graph edge."""

    id: int
    source: int
    target: int
    kind: str


@dataclass(frozen=True)
class Neighbor(_Fields):
    """A node next to another, the edge between them and that edge's direction (``out``: from
    the queried node, ``in``: towards it)."""

    node: int
    edge: int
    kind: str
    direction: str


@dataclass(frozen=True)
class Traversal(_Fields):
    """A breadth-first traversal: ``(node, depth)`` pairs in visiting order, and whether it
    stopped at the node limit."""

    nodes: List[Tuple[int, int]]
    truncated: bool


@dataclass(frozen=True)
class State(_Fields):
    """The sequence number of the last event, the chain hash over the log and the blake3 hash of
    the whole state (hex)."""

    seq: int
    chain_hash: str
    state_hash: str
