"""A LlamaIndex vector store on Valori (``pip install "valori[llama-index]"``).

>>> from llama_index.core import StorageContext, VectorStoreIndex       # doctest: +SKIP
>>> from valori.llama_index import ValoriVectorStore
>>> store = ValoriVectorStore(path="./llama_db")                        # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents(
...     docs, storage_context=StorageContext.from_defaults(vector_store=store))  # doctest: +SKIP

A node's ``node_id`` is the record's key, its text the record's document, and LlamaIndex's
metadata dict (the node's metadata with ``ref_doc_id`` and the serialised node) the payload, so
the store holds the text (``stores_text = True``) and an index can be rebuilt from it alone
(``VectorStoreIndex.from_vector_store``). ``delete(ref_doc_id)`` is one delete by filter.
``MetadataFilters`` translate exactly (EQ, NE, GT, GTE, LT, LTE, IN, NIN, ANY, ALL, CONTAINS,
IS_EMPTY; AND, OR, NOT; nested); an operator Valori cannot express (the text matches) raises
``ValueError``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Sequence

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'valori.llama_index needs llama-index-core: pip install "valori[llama-index]"'
    ) from e

from valori import AsyncValori, NotFoundError, Valori
from valori import embed as _embed
from valori._collections import ensure_collection, missing_collection

__all__ = ["HashingEmbedding", "ValoriVectorStore", "to_valori_filter"]

class HashingEmbedding(BaseEmbedding):
    """``valori.embed.HashingEmbedding`` as a LlamaIndex model: offline, deterministic,
    lexical (words and character trigrams hashed into ``dimension`` components)."""

    dimension: int = 256

    def _model(self) -> _embed.HashingEmbedding:
        return _embed.HashingEmbedding(self.dimension)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._model().embed_one(text)

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._model().embed_one(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._model().embed_one(query)


# Records per upsert: well under a node's default --max-batch.
_BATCH = 1000


def _one(f: MetadataFilter) -> Dict[str, Any]:
    """One LlamaIndex condition as a Valori filter."""
    key, value, op = f.key, f.value, f.operator
    if op == FilterOperator.EQ:
        return {"must": [{"key": key, "match": {"value": value}}]}
    if op == FilterOperator.NE:
        return {"must_not": [{"key": key, "match": {"value": value}}]}
    if op in (FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"filter {key!r}: {op.name} compares numbers; Valori does not order {value!r}"
            )
        bound = {
            FilterOperator.GT: "gt",
            FilterOperator.GTE: "gte",
            FilterOperator.LT: "lt",
            FilterOperator.LTE: "lte",
        }[op]
        return {"must": [{"key": key, "range": {bound: value}}]}
    if op in (FilterOperator.IN, FilterOperator.ANY, FilterOperator.NIN):
        if not isinstance(value, list) or not value:
            raise ValueError(f"filter {key!r}: {op.name} takes a non-empty list")
        cond = {"key": key, "match": {"any": value}}
        return {"must_not": [cond]} if op == FilterOperator.NIN else {"must": [cond]}
    if op == FilterOperator.ALL:
        if not isinstance(value, list) or not value:
            raise ValueError(f"filter {key!r}: ALL takes a non-empty list")
        return {"must": [{"key": key, "match": {"value": v}} for v in value]}
    if op == FilterOperator.CONTAINS:
        return {"must": [{"key": key, "match": {"value": value}}]}
    if op == FilterOperator.IS_EMPTY:
        return {"should": [{"is_empty": {"key": key}}, {"key": key, "match": {"value": ""}}]}
    raise ValueError(
        f"filter {key!r}: operator {op.name} is not supported by Valori "
        "(EQ, NE, GT, GTE, LT, LTE, IN, NIN, ANY, ALL, CONTAINS, IS_EMPTY are)"
    )


def to_valori_filter(filters: MetadataFilters) -> Dict[str, Any]:
    """``MetadataFilters`` (nested ones too) as a Valori filter."""
    parts = [
        to_valori_filter(f) if isinstance(f, MetadataFilters) else _one(f)
        for f in filters.filters
    ]
    if not parts:
        return {}
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"must": parts}
    if condition == FilterCondition.OR:
        return {"should": parts}
    if condition == FilterCondition.NOT:
        # As LlamaIndex's own stores read it: none of the filters matches.
        return {"must_not": parts}
    raise ValueError(f"filter condition {condition!r} is not supported")


def _and(*filters: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    parts = [f for f in filters if f]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"must": parts}


class ValoriVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over one Valori collection.

    Give an open handle (``client=Valori(...)``), a directory (``path=``, embedded) or a node's
    URL (``url=``, with ``api_key=``). The collection (``collection="llama_index"``) is created
    on the first add with the embeddings' dimension and ``metric`` (``cosine`` by default).
    """

    stores_text: bool = True
    flat_metadata: bool = False
    collection: str = "llama_index"
    metric: str = "cosine"

    _db: Valori = PrivateAttr()
    _adb: AsyncValori = PrivateAttr()
    _ready: bool = PrivateAttr(default=False)

    def __init__(
        self,
        *,
        client: Optional[Valori] = None,
        path: Optional[str] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        collection: str = "llama_index",
        metric: str = "cosine",
        **kwargs: Any,
    ) -> None:
        if sum(x is not None for x in (client, path, url)) > 1:
            raise ValueError("give one of client, path and url")
        super().__init__(collection=collection, metric=metric, **kwargs)
        if client is None:
            client = Valori(remote=url, api_key=api_key) if url else Valori(path or "./valori_db")
        self._db = client
        self._adb = AsyncValori.from_sync(client)

    @classmethod
    def class_name(cls) -> str:
        return "ValoriVectorStore"

    @property
    def client(self) -> Valori:
        return self._db

    def close(self) -> None:
        """Closes the handle (the database, when embedded)."""
        self._db.close()

    # -- helpers --------------------------------------------------------------------------

    def _ensure(self, dimension: int) -> None:
        if not self._ready:
            ensure_collection(self._db, self.collection, dimension, self.metric)
            self._ready = True

    def _rows(self, nodes: Sequence[BaseNode]) -> Dict[str, Any]:
        keys, vectors, payloads, documents = [], [], [], []
        for n in nodes:
            embedding = n.get_embedding()
            keys.append(n.node_id)
            vectors.append(embedding)
            payloads.append(
                node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata)
            )
            documents.append(n.get_content(metadata_mode=MetadataMode.NONE))
        return {"keys": keys, "vectors": vectors, "payloads": payloads, "documents": documents}

    def _query_search(self, query: VectorStoreQuery) -> Dict[str, Any]:
        mode = VectorStoreQueryMode(query.mode)
        if mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(f"query mode {mode.value!r} is not supported (default is)")
        if query.query_embedding is None:
            raise ValueError("a query needs its embedding")
        restrict = []
        if query.doc_ids:
            restrict.append({"must": [{"key": "ref_doc_id", "match": {"any": list(query.doc_ids)}}]})
        if query.node_ids:
            restrict.append({"must": [{"has_key": list(query.node_ids)}]})
        f = _and(to_valori_filter(query.filters) if query.filters else None, *restrict)
        return {
            "vector": query.query_embedding,
            "k": query.similarity_top_k,
            "filter": f or None,
            "include": ["payload", "document"],
            "collection": self.collection,
        }

    @staticmethod
    def _result(hits: List[Any]) -> VectorStoreQueryResult:
        nodes = [metadata_dict_to_node(h.payload or {}, text=h.document or "") for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=[h.similarity for h in hits], ids=[h.key for h in hits]
        )

    @staticmethod
    def _nodes(records: List[Dict[str, Any]]) -> List[BaseNode]:
        return [
            metadata_dict_to_node(r.get("payload") or {}, text=r.get("document") or "")
            for r in records
        ]

    def _target(
        self, node_ids: Optional[List[str]], filters: Optional[MetadataFilters]
    ) -> Dict[str, Any]:
        """Keys or a filter naming the nodes asked for."""
        if node_ids is None and filters is None:
            raise ValueError("name node_ids or filters (clear() removes every node)")
        if filters is None:
            return {"keys": list(node_ids or [])}
        f = to_valori_filter(filters)
        if node_ids is not None:
            f = _and(f, {"must": [{"has_key": list(node_ids)}]})
        return {"filter": f}

    # -- writes ---------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upserts the nodes by node id; returns their ids."""
        if not nodes:
            return []
        for start in range(0, len(nodes), _BATCH):
            rows = self._rows(nodes[start : start + _BATCH])
            self._ensure(len(rows["vectors"][0]))
            self._db.upsert(
                rows["keys"], rows["vectors"], payloads=rows["payloads"],
                documents=rows["documents"], collection=self.collection,
            )
        return [n.node_id for n in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        if not nodes:
            return []
        for start in range(0, len(nodes), _BATCH):
            rows = self._rows(nodes[start : start + _BATCH])
            if not self._ready:
                await asyncio.get_running_loop().run_in_executor(
                    None, self._ensure, len(rows["vectors"][0])
                )
            await self._adb.upsert(
                rows["keys"], rows["vectors"], payloads=rows["payloads"],
                documents=rows["documents"], collection=self.collection,
            )
        return [n.node_id for n in nodes]

    def _delete(self, **target: Any) -> None:
        try:
            self._db.delete_records(collection=self.collection, **target)
        except NotFoundError as e:
            if not missing_collection(e):
                raise

    async def _adelete(self, **target: Any) -> None:
        try:
            await self._adb.delete_records(collection=self.collection, **target)
        except NotFoundError as e:
            if not missing_collection(e):
                raise

    @staticmethod
    def _of_document(ref_doc_id: str) -> Dict[str, Any]:
        return {"must": [{"key": "ref_doc_id", "match": {"value": ref_doc_id}}]}

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes every node of a document (one delete by filter on ``ref_doc_id``)."""
        self._delete(filter=self._of_document(ref_doc_id))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await self._adelete(filter=self._of_document(ref_doc_id))

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Deletes the nodes with these ids, those the filters match, or both at once."""
        self._delete(**self._target(node_ids, filters))

    async def adelete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        await self._adelete(**self._target(node_ids, filters))

    def clear(self) -> None:
        """Deletes every node."""
        self._delete(filter={})

    async def aclear(self) -> None:
        await self._adelete(filter={})

    # -- reads ----------------------------------------------------------------------------

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        """The nodes with these ids (in that order) or those the filters match."""
        try:
            target = self._target(node_ids, filters)
            if "keys" in target:
                got = self._db.get_records(target["keys"], collection=self.collection)
                return self._nodes(got["records"])
            records: List[Dict[str, Any]] = []
            cursor = None
            while True:
                page = self._db.scroll(
                    target["filter"], limit=1000, cursor=cursor, collection=self.collection
                )
                records += page["records"]
                cursor = page["next_cursor"]
                if cursor is None:
                    return self._nodes(records)
        except NotFoundError as e:
            if not missing_collection(e):
                raise
            return []

    async def aget_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.get_nodes, node_ids, filters
        )

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nearest nodes that match the filters (strict: never fewer
        than there are matches), with their similarity (higher is closer)."""
        search = self._query_search(query)
        vector = search.pop("vector")
        try:
            hits = self._db.search(vector, **search)
        except NotFoundError as e:
            if not missing_collection(e):
                raise
            hits = []
        return self._result(hits)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        search = self._query_search(query)
        vector = search.pop("vector")
        try:
            hits = await self._adb.search(vector, **search)
        except NotFoundError as e:
            if not missing_collection(e):
                raise
            hits = []
        return self._result(hits)
