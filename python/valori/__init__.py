"""Valori: a deterministic vector database and knowledge graph.

``Valori(path="./valori_db")`` opens a database embedded in this process; ``Valori(remote=url)``
talks to a ``valori-node`` server. Both have the same methods, results and errors, and a
directory written by one can be served by the other. ``AsyncValori`` has the same methods as
coroutines.

>>> from valori import Valori
>>> with Valori(path="./valori_db") as db:          # doctest: +SKIP
...     uid = db.insert([0.1] * 16, metadata=b"meta")
...     db.search([0.1] * 16, k=5)
"""

from valori._valori import Valori
from valori.aio import AsyncValori
from valori.errors import (
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnauthorizedError,
    ValoriConnectionError,
    ValoriError,
)
from valori.errors import ConnectionError  # noqa: F401  (the old name; not in __all__)
from valori.types import (
    Collection,
    Edge,
    GraphNode,
    Neighbor,
    Record,
    SearchResult,
    State,
    Traversal,
)

__version__ = "0.1.0"

__all__ = [
    "Valori",
    "AsyncValori",
    "ValoriError",
    "InvalidInputError",
    "NotFoundError",
    "UnauthorizedError",
    "ForbiddenError",
    "ValoriConnectionError",
    "Collection",
    "Edge",
    "GraphNode",
    "Neighbor",
    "Record",
    "SearchResult",
    "State",
    "Traversal",
]
