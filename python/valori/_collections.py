"""What the framework integrations share: creating their collection on the first write, and
telling a collection that does not exist (an empty store) from other not-found errors."""

from __future__ import annotations

from valori._valori import Valori
from valori.errors import NotFoundError

__all__ = ["ensure_collection", "missing_collection"]


def missing_collection(e: NotFoundError) -> bool:
    """Whether the error is a collection that does not exist (not a record, node or key)."""
    return e.code == "collection_not_found"


def ensure_collection(db: Valori, name: str, dimension: int, metric: str, index: str = "hnsw") -> None:
    """Creates the collection unless it exists; refuses one of another dimension."""
    try:
        info = db.collection(name)
    except NotFoundError as e:
        if not missing_collection(e):
            raise
        db.create_collection(name, dimension, metric=metric, index=index)
        return
    if info.dimension != dimension:
        raise ValueError(
            f"collection {name!r} holds {info.dimension}-dimensional vectors; "
            f"these embeddings have {dimension}"
        )
