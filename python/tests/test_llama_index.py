"""``valori.llama_index.ValoriVectorStore`` under LlamaIndex's own ``VectorStoreIndex``, embedded
and against a real node: documents ingested, retrieval with ``MetadataFilters``, a document
deleted and retrieval without it, and the index rebuilt from the store alone after the
embedded directory is reopened and after the node restarts. Then each filter operator, the
one that cannot be expressed, and the async methods."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from pathlib import Path
from typing import List

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)

from valori.llama_index import ValoriVectorStore, to_valori_filter


class TinyEmbedding(BaseEmbedding):
    """A deterministic model for tests: words hashed into 32 signed buckets, unit length."""

    def _vector(self, text: str) -> List[float]:
        v = [0.0] * 32
        for word in re.findall(r"\w+", text.lower()):
            h = hashlib.sha256(word.encode()).digest()
            v[h[0] % 32] += 1.0 if h[1] & 1 else -1.0
        n = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / n for x in v] if any(v) else [1.0] + [0.0] * 31

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._vector(text)

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._vector(query)


DOCS = [
    ("d1", "Alice prefers green tea in the morning", {"user": "alice", "year": 2026}),
    ("d2", "Bob drinks black coffee at work", {"user": "bob", "year": 2024}),
    ("d3", "Alice lives in Lyon near the river", {"user": "alice", "year": 2025}),
]


def documents() -> list:
    return [Document(text=t, metadata=m, doc_id=d) for d, t, m in DOCS]


def retrieve(store: ValoriVectorStore, query: str, **kw) -> list:
    index = VectorStoreIndex.from_vector_store(store, embed_model=TinyEmbedding())
    return index.as_retriever(**kw).retrieve(query)


ALICE = MetadataFilters(filters=[MetadataFilter(key="user", value="alice")])


def ingest_query_delete(store: ValoriVectorStore) -> None:
    index = VectorStoreIndex.from_documents(
        documents(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=TinyEmbedding(),
        transformations=[],
    )
    found = index.as_retriever(similarity_top_k=2, filters=ALICE).retrieve("green tea")
    assert [n.node.ref_doc_id for n in found] == ["d1", "d3"]
    assert found[0].node.get_content() == "Alice prefers green tea in the morning"
    assert found[0].node.metadata == {"user": "alice", "year": 2026}
    assert found[0].score > found[1].score
    recent = index.as_retriever(
        similarity_top_k=5,
        filters=MetadataFilters(filters=[MetadataFilter(key="year", value=2025, operator=FilterOperator.GTE)]),
    ).retrieve("alice")
    assert sorted(n.node.ref_doc_id for n in recent) == ["d1", "d3"]
    index.delete_ref_doc("d1", delete_from_docstore=True)
    after = index.as_retriever(similarity_top_k=3, filters=ALICE).retrieve("green tea")
    assert [n.node.ref_doc_id for n in after] == ["d3"]


def test_index_on_an_embedded_store_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "li")
    store = ValoriVectorStore(path=path, collection="notes")
    ingest_query_delete(store)
    store.close()
    again = ValoriVectorStore(path=path, collection="notes")
    found = retrieve(again, "coffee", similarity_top_k=3)
    assert sorted(n.node.ref_doc_id for n in found) == ["d2", "d3"]
    assert found[0].node.ref_doc_id == "d2"
    again.close()


def test_index_on_a_node_survives_its_restart(tmp_path: Path, start_node) -> None:
    data = tmp_path / "node"
    node = start_node(data_dir=data)
    store = ValoriVectorStore(url=node.url)
    ingest_query_delete(store)
    state = store.client.state()
    store.close()
    node.stop()
    node = start_node(data_dir=data)
    again = ValoriVectorStore(url=node.url)
    assert again.client.state() == state
    found = retrieve(again, "coffee", similarity_top_k=3, filters=ALICE)
    assert [n.node.ref_doc_id for n in found] == ["d3"]


def nodes() -> list:
    emb = TinyEmbedding()
    made = []
    for i, (text, meta) in enumerate(
        [
            ("red apple", {"kind": "fruit", "n": 1, "tags": ["a", "b"]}),
            ("green pear", {"kind": "fruit", "n": 2, "tags": ["b"], "note": ""}),
            ("blue car", {"kind": "thing", "n": 3, "tags": []}),
            ("old boat", {"kind": "thing", "n": 4}),
        ]
    ):
        n = TextNode(text=text, id_=f"n{i}", metadata=meta)
        n.embedding = emb.get_text_embedding(text)
        made.append(n)
    return made


@pytest.fixture(params=["embedded", "remote"])
def store(request, tmp_path: Path, start_node):
    if request.param == "embedded":
        s = ValoriVectorStore(path=str(tmp_path / "f"))
    else:
        s = ValoriVectorStore(url=start_node().url)
    s.add(nodes())
    yield s
    s.close()


def ids(store: ValoriVectorStore, *filters, condition=FilterCondition.AND) -> list:
    f = MetadataFilters(filters=list(filters), condition=condition)
    return sorted(n.node_id for n in store.get_nodes(filters=f))


def test_every_filter_operator(store: ValoriVectorStore) -> None:
    F, O = MetadataFilter, FilterOperator
    assert ids(store, F(key="kind", value="fruit")) == ["n0", "n1"]
    assert ids(store, F(key="kind", value="fruit", operator=O.NE)) == ["n2", "n3"]
    assert ids(store, F(key="n", value=2, operator=O.GT)) == ["n2", "n3"]
    assert ids(store, F(key="n", value=2, operator=O.GTE)) == ["n1", "n2", "n3"]
    assert ids(store, F(key="n", value=2, operator=O.LT)) == ["n0"]
    assert ids(store, F(key="n", value=2.5, operator=O.LTE)) == ["n0", "n1"]
    assert ids(store, F(key="n", value=[1, 4], operator=O.IN)) == ["n0", "n3"]
    assert ids(store, F(key="n", value=[1, 4], operator=O.NIN)) == ["n1", "n2"]
    assert ids(store, F(key="tags", value=["a", "z"], operator=O.ANY)) == ["n0"]
    assert ids(store, F(key="tags", value=["a", "b"], operator=O.ALL)) == ["n0"]
    assert ids(store, F(key="tags", value="b", operator=O.CONTAINS)) == ["n0", "n1"]
    assert ids(store, F(key="note", value=None, operator=O.IS_EMPTY)) == ["n0", "n1", "n2", "n3"]
    assert ids(store, F(key="tags", value=None, operator=O.IS_EMPTY)) == ["n2", "n3"]
    assert ids(store, F(key="n", value=1), F(key="n", value=3), condition=FilterCondition.OR) == ["n0", "n2"]
    assert ids(store, F(key="kind", value="fruit"), condition=FilterCondition.NOT) == ["n2", "n3"]
    nested = MetadataFilters(
        filters=[
            F(key="kind", value="thing"),
            MetadataFilters(filters=[F(key="n", value=1), F(key="n", value=4)], condition=FilterCondition.OR),
        ]
    )
    assert sorted(n.node_id for n in store.get_nodes(filters=nested)) == ["n3"]
    with pytest.raises(ValueError, match="TEXT_MATCH"):
        store.get_nodes(filters=MetadataFilters(filters=[F(key="kind", value="fr", operator=O.TEXT_MATCH)]))
    with pytest.raises(ValueError, match="numbers"):
        to_valori_filter(MetadataFilters(filters=[F(key="kind", value="a", operator=O.GT)]))


def test_nodes_by_id_delete_clear_and_query_restrictions(store: ValoriVectorStore) -> None:
    assert [n.node_id for n in store.get_nodes(node_ids=["n2", "zz", "n0"])] == ["n2", "n0"]
    got = store.get_nodes(node_ids=["n1"])[0]
    assert got.get_content() == "green pear" and got.metadata["tags"] == ["b"]
    q = VectorStoreQuery(query_embedding=TinyEmbedding().get_query_embedding("red apple"), similarity_top_k=4)
    result = store.query(q)
    assert result.ids[0] == "n0" and len(result.nodes) == 4
    q.node_ids = ["n2", "n3"]
    assert sorted(store.query(q).ids) == ["n2", "n3"]
    store.delete_nodes(node_ids=["n0", "n3"], filters=MetadataFilters(filters=[MetadataFilter(key="kind", value="thing")]))
    assert sorted(n.node_id for n in store.get_nodes(node_ids=["n0", "n1", "n2", "n3"])) == ["n0", "n1", "n2"]
    store.delete_nodes(node_ids=["n0"])
    store.clear()
    assert store.query(VectorStoreQuery(query_embedding=q.query_embedding, similarity_top_k=4)).ids == []
    with pytest.raises(ValueError):
        store.delete_nodes()


def test_async_methods(store: ValoriVectorStore) -> None:
    async def main() -> None:
        q = VectorStoreQuery(query_embedding=TinyEmbedding().get_query_embedding("old boat"), similarity_top_k=1)
        assert (await store.aquery(q)).ids == ["n3"]
        extra = TextNode(text="new kite", id_="k", metadata={"kind": "thing"})
        extra.embedding = TinyEmbedding().get_text_embedding("new kite")
        assert await store.async_add([extra]) == ["k"]
        assert [n.node_id for n in await store.aget_nodes(node_ids=["k"])] == ["k"]
        await store.adelete_nodes(node_ids=["k"])
        await store.aclear()
        assert (await store.aquery(q)).ids == []

    asyncio.run(main())


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    import contextlib
    import io

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## LlamaIndex", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "python/README.md", "exec"), {"__name__": "__readme__"})
    assert out.getvalue().splitlines() == ["d1 Alice prefers green tea", "0"]


def test_errors_reach_llama_index_as_its_usual_exceptions(tmp_path: Path) -> None:
    down = ValoriVectorStore(url="http://127.0.0.1:9")
    with pytest.raises(ConnectionError):
        down.add(nodes())
    empty = ValoriVectorStore(path=str(tmp_path / "e"), collection="none-yet")
    q = VectorStoreQuery(query_embedding=[1.0] * 32, similarity_top_k=2)
    assert empty.query(q).ids == [] and empty.get_nodes(node_ids=["x"]) == []
    empty.add(nodes())
    with pytest.raises(ValueError, match="32-dimensional"):
        bad = TextNode(text="x", id_="x")
        bad.embedding = [1.0, 0.0]
        ValoriVectorStore(client=empty.client, collection="none-yet").add([bad])
    with pytest.raises(ValueError, match="mode"):
        empty.query(VectorStoreQuery(query_embedding=[1.0] * 32, mode="mmr"))
    empty.close()
