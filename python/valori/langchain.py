"""A LangChain vector store on Valori (``pip install "valori[langchain]"``).

>>> from langchain_core.embeddings import DeterministicFakeEmbedding    # doctest: +SKIP
>>> from valori.langchain import ValoriVectorStore
>>> store = ValoriVectorStore(DeterministicFakeEmbedding(size=8), path="./lc_db")  # doctest: +SKIP
>>> store.add_texts(["tea", "coffee"], metadatas=[{"user": "u42"}, {"user": "u7"}])  # doctest: +SKIP
>>> store.similarity_search("tea", k=1, filter={"user": "u42"})       # doctest: +SKIP

A document's ``id`` is the record's key (a uuid4 when the document has none), its
``page_content`` the record's document and its ``metadata`` the record's payload. Adding a
document whose id exists replaces it. Filters take LangChain's dict style (``{"user": "u42"}``,
``{"year": {"$gte": 2020}}``, ``$in``, ``$nin``, ``$ne``, ``$exists``, ``$and``, ``$or``,
``$not``) or a Valori filter; an operator Valori cannot express raises ``ValueError``.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type

import numpy as np

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'valori.langchain needs langchain-core: pip install "valori[langchain]"'
    ) from e

from valori import AsyncValori, NotFoundError, SearchResult, Valori
from valori._collections import ensure_collection, missing_collection
from valori.filters import from_mongo_style

__all__ = ["ValoriVectorStore"]

_PARTS = ["payload", "document"]


def _to_filter(f: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return None if f is None else from_mongo_style(f)


def _document(hit: Any) -> Document:
    """A hit or a record as a LangChain document."""
    if isinstance(hit, SearchResult):
        key, text, payload = hit.key, hit.document, hit.payload
    else:
        key, text, payload = hit["key"], hit.get("document"), hit.get("payload")
    return Document(id=key, page_content=text or "", metadata=dict(payload or {}))


class ValoriVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over one Valori collection.

    Give an open handle (``client=Valori(...)``), a directory (``path=``, embedded) or a node's
    URL (``url=``, with ``api_key=``). The collection (``collection="langchain"``) is created on
    the first write with the embeddings' dimension and ``metric`` (``cosine`` by default);
    searching a collection that does not exist yet finds nothing.
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        client: Optional[Valori] = None,
        path: Optional[str] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        collection: str = "langchain",
        metric: str = "cosine",
        index: str = "hnsw",
    ) -> None:
        given = [x is not None for x in (client, path, url)]
        if sum(given) > 1:
            raise ValueError("give one of client, path and url")
        if client is None:
            client = Valori(remote=url, api_key=api_key) if url else Valori(path or "./valori_db")
        self.client = client
        self.aclient = AsyncValori.from_sync(client)
        self.collection = collection
        self.metric = metric
        self.index = index
        self._embedding = embedding
        self._ready = False

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    # -- writes ---------------------------------------------------------------------------

    def _ensure_collection(self, dimension: int) -> None:
        if not self._ready:
            ensure_collection(self.client, self.collection, dimension, self.metric, self.index)
            self._ready = True

    @staticmethod
    def _rows(
        texts: Sequence[str],
        metadatas: Optional[List[Dict[str, Any]]],
        ids: Optional[Sequence[Optional[str]]],
    ) -> Tuple[List[str], List[Dict[str, Any]]]:
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{n} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{n} texts but {len(ids)} ids")
        keys = [str(i) if i is not None else str(uuid.uuid4()) for i in (ids or [None] * n)]
        payloads = [dict(m or {}) for m in (metadatas or [{}] * n)]
        return keys, payloads

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[Optional[str]]] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Embeds and upserts the texts; returns their ids (the keys)."""
        texts = list(texts)
        if not texts:
            return []
        keys, payloads = self._rows(texts, metadatas, ids)
        vectors = self._embedding.embed_documents(texts)
        self._ensure_collection(len(vectors[0]))
        self.client.upsert(
            keys, vectors, payloads=payloads, documents=texts, collection=self.collection
        )
        return keys

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[Optional[str]]] = None,
        **kwargs: Any,
    ) -> List[str]:
        texts = list(texts)
        if not texts:
            return []
        keys, payloads = self._rows(texts, metadatas, ids)
        vectors = await self._embedding.aembed_documents(texts)
        if not self._ready:
            await asyncio.get_running_loop().run_in_executor(
                None, self._ensure_collection, len(vectors[0])
            )
        await self.aclient.upsert(
            keys, vectors, payloads=payloads, documents=texts, collection=self.collection
        )
        return keys

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes the documents with these ids (missing ones are ignored); every document when
        ``ids`` is None."""
        try:
            if ids is None:
                self.client.delete_records(filter={}, collection=self.collection)
            elif ids:
                self.client.delete_records(list(ids), collection=self.collection)
        except NotFoundError as e:
            if not missing_collection(e):
                raise
        return True

    async def adelete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        try:
            if ids is None:
                await self.aclient.delete_records(filter={}, collection=self.collection)
            elif ids:
                await self.aclient.delete_records(list(ids), collection=self.collection)
        except NotFoundError as e:
            if not missing_collection(e):
                raise
        return True

    # -- reads ----------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The documents with these ids that exist, in the order asked."""
        try:
            got = self.client.get_records(list(ids), collection=self.collection)
        except NotFoundError as e:
            if missing_collection(e):
                return []
            raise
        return [_document(r) for r in got["records"]]

    async def aget_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        try:
            got = await self.aclient.get_records(list(ids), collection=self.collection)
        except NotFoundError as e:
            if missing_collection(e):
                return []
            raise
        return [_document(r) for r in got["records"]]

    def _search_kwargs(
        self, k: int, filter: Optional[Dict[str, Any]], vectors: bool = False
    ) -> Dict[str, Any]:
        return {
            "k": k,
            "filter": _to_filter(filter),
            "include": _PARTS + (["vector"] if vectors else []),
            "collection": self.collection,
        }

    def _hits(self, embedding: List[float], **kw: Any) -> List[SearchResult]:
        try:
            return self.client.search(embedding, **kw)
        except NotFoundError as e:
            if missing_collection(e):
                return []
            raise

    async def _ahits(self, embedding: List[float], **kw: Any) -> List[SearchResult]:
        try:
            return await self.aclient.search(embedding, **kw)
        except NotFoundError as e:
            if missing_collection(e):
                return []
            raise

    def similarity_search_with_score_by_vector(
        self, embedding: List[float], k: int = 4, filter: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Tuple[Document, float]]:
        """Documents nearest ``embedding`` with their similarity (higher is closer)."""
        return [(_document(h), h.similarity) for h in self._hits(embedding, **self._search_kwargs(k, filter))]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """Documents nearest ``query`` with their similarity (higher is closer: the cosine
        for a cosine collection)."""
        return self.similarity_search_with_score_by_vector(
            self._embedding.embed_query(query), k, filter
        )

    def similarity_search_by_vector(
        self, embedding: List[float], k: int = 4, filter: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def similarity_search(
        self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    async def asimilarity_search_with_score_by_vector(
        self, embedding: List[float], k: int = 4, filter: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Tuple[Document, float]]:
        hits = await self._ahits(embedding, **self._search_kwargs(k, filter))
        return [(_document(h), h.similarity) for h in hits]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        embedding = await self._embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(embedding, k, filter)

    async def asimilarity_search_by_vector(
        self, embedding: List[float], k: int = 4, filter: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> List[Document]:
        found = await self.asimilarity_search_with_score_by_vector(embedding, k, filter)
        return [d for d, _ in found]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None, **kwargs: Any
    ) -> List[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Similarity to a relevance in [0, 1]: ``(1 + cosine) / 2`` for cosine,
        ``1 / (1 + euclidean distance)`` for l2, the logistic of the dot product for ip."""
        if self.metric == "cosine":
            return lambda s: min(1.0, max(0.0, (1.0 + s) / 2.0))
        if self.metric == "l2":
            return lambda s: 1.0 / (1.0 + math.sqrt(max(0.0, -s)))
        return lambda s: 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, s))))

    # -- maximal marginal relevance -------------------------------------------------------

    def _mmr(
        self, embedding: List[float], hits: List[SearchResult], k: int, lambda_mult: float
    ) -> List[Document]:
        if not hits:
            return []
        chosen = maximal_marginal_relevance(
            np.array(embedding, dtype=np.float32),
            [h.vector for h in hits],
            lambda_mult=lambda_mult,
            k=k,
        )
        return [_document(hits[i]) for i in chosen]

    def max_marginal_relevance_search_by_vector(
        self, embedding: List[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: Optional[Dict[str, Any]] = None, **kwargs: Any,
    ) -> List[Document]:
        """``k`` documents among the ``fetch_k`` nearest, chosen for relevance and diversity."""
        hits = self._hits(embedding, **self._search_kwargs(max(k, fetch_k), filter, vectors=True))
        return self._mmr(embedding, hits, k, lambda_mult)

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: Optional[Dict[str, Any]] = None, **kwargs: Any,
    ) -> List[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, filter
        )

    async def amax_marginal_relevance_search_by_vector(
        self, embedding: List[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: Optional[Dict[str, Any]] = None, **kwargs: Any,
    ) -> List[Document]:
        hits = await self._ahits(
            embedding, **self._search_kwargs(max(k, fetch_k), filter, vectors=True)
        )
        return self._mmr(embedding, hits, k, lambda_mult)

    async def amax_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: Optional[Dict[str, Any]] = None, **kwargs: Any,
    ) -> List[Document]:
        embedding = await self._embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(
            embedding, k, fetch_k, lambda_mult, filter
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls: Type["ValoriVectorStore"],
        texts: List[str],
        embedding: Embeddings,
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        **kwargs: Any,
    ) -> "ValoriVectorStore":
        """A store (``client=``, ``path=`` or ``url=``, ``collection=``...) holding the texts."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store
