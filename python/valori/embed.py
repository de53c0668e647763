"""Embedding models that work offline, and how to name one.

``HashingEmbedding`` is the default of the MCP server: words and character trigrams hashed
(blake2b, so the same on every machine and Python) into signed buckets, then scaled to unit
length. It needs no download and no weights; texts that share words and spellings land near
each other, which is what a memory of short notes needs. For semantic recall plug a real
model: ``load("package.module:attribute")`` names a class (instantiated without arguments) or
an object, used through ``embed_documents`` (LangChain's ``Embeddings``), ``embed`` or by
calling it with a list of texts.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
from typing import Any, Callable, List, Sequence

__all__ = ["HashingEmbedding", "load"]

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedding:
    """Feature hashing of words and character trigrams into ``dimension`` components."""

    def __init__(self, dimension: int = 256) -> None:
        if not 8 <= dimension <= 4096:
            raise ValueError(f"a hashing embedding has 8 to 4096 dimensions, not {dimension}")
        self.dimension = dimension

    def _features(self, text: str) -> List[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = []
        for w in words:
            padded = f"#{w}#"
            grams += [padded[i : i + 3] for i in range(max(1, len(padded) - 2))]
        return [f"w:{w}" for w in words] + [f"g:{g}" for g in grams]

    def embed_one(self, text: str) -> List[float]:
        v = [0.0] * self.dimension
        for f in self._features(text):
            h = hashlib.blake2b(f.encode(), digest_size=8).digest()
            bucket = int.from_bytes(h[:4], "little") % self.dimension
            v[bucket] += 1.0 if h[4] & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in v))
        if norm == 0.0:
            # No word at all: a fixed unit vector, so that the text can still be stored.
            v[0] = 1.0
            return v
        return [x / norm for x in v]

    def embed(self, texts: Sequence[str]) -> List[List[float]]:
        return [self.embed_one(t) for t in texts]


def load(spec: str) -> Callable[[List[str]], List[List[float]]]:
    """An embedding function from a name: ``hashing`` or ``hashing:DIM`` (the built-in
    model), or ``package.module:attribute``."""
    if spec == "hashing" or spec.startswith("hashing:"):
        dim = int(spec.split(":", 1)[1]) if ":" in spec else 256
        return HashingEmbedding(dim).embed
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(
            f"embedding {spec!r}: use 'hashing', 'hashing:DIM' or 'package.module:attribute'"
        )
    obj: Any = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type):
        obj = obj()
    for method in ("embed_documents", "embed"):
        if hasattr(obj, method):
            return getattr(obj, method)
    if callable(obj):
        return obj
    raise ValueError(f"embedding {spec!r} names neither a model nor a function")
