"""``valori.langchain.ValoriVectorStore`` against LangChain's own standard suite
(``langchain_tests``' ``VectorStoreIntegrationTests``, sync and async, unmodified), embedded and
against a real node; then what the suite does not cover: filters in LangChain's dict style,
relevance scores, maximal marginal relevance, ``from_texts``, and errors that reach LangChain
as its usual exceptions."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests.vectorstores import VectorStoreIntegrationTests

from conftest import Node
from valori import InvalidInputError, Valori, ValoriConnectionError
from valori.filters import from_mongo_style
from valori.langchain import ValoriVectorStore


@pytest.fixture(scope="module")
def lc_node(node_binary: str, tmp_path_factory) -> Iterator[Node]:
    node = Node(node_binary, tmp_path_factory.mktemp("langchain-node"))
    yield node
    node.stop()


class TestEmbeddedStandard(VectorStoreIntegrationTests):
    """LangChain's suite on an embedded store in a fresh directory per test."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[ValoriVectorStore]:  # type: ignore[override]
        store = ValoriVectorStore(self.get_embeddings(), path=str(tmp_path / "lc"))
        try:
            yield store
        finally:
            store.client.close()


class TestRemoteStandard(VectorStoreIntegrationTests):
    """LangChain's suite on a node, a fresh collection per test, dropped after."""

    @pytest.fixture()
    def vectorstore(self, lc_node: Node) -> Iterator[ValoriVectorStore]:  # type: ignore[override]
        name = f"lc-{uuid.uuid4().hex[:12]}"
        store = ValoriVectorStore(self.get_embeddings(), url=lc_node.url, collection=name)
        try:
            yield store
        finally:
            if any(c.name == name for c in store.client.collections()):
                store.client.drop_collection(name)
            store.client.close()


@pytest.fixture(params=["embedded", "remote"])
def store(request, tmp_path: Path, lc_node: Node) -> Iterator[ValoriVectorStore]:
    emb = DeterministicFakeEmbedding(size=8)
    if request.param == "embedded":
        s = ValoriVectorStore(emb, path=str(tmp_path / "lc"))
    else:
        s = ValoriVectorStore(emb, url=lc_node.url, collection=f"lc-{uuid.uuid4().hex[:12]}")
    yield s
    s.client.close()


DOCS = [
    Document(id="a", page_content="tea", metadata={"user": "u42", "year": 2024, "tags": ["x"]}),
    Document(id="b", page_content="coffee", metadata={"user": "u7", "year": 2025}),
    Document(id="c", page_content="water", metadata={"user": "u42", "year": 2026, "draft": True}),
]


def keys(docs) -> list:
    return sorted(d.id for d in docs)


def test_filters_in_langchain_dict_style(store: ValoriVectorStore) -> None:
    store.add_documents(DOCS)
    q = "anything"
    assert keys(store.similarity_search(q, k=5, filter={"user": "u42"})) == ["a", "c"]
    assert keys(store.similarity_search(q, k=5, filter={"year": {"$gte": 2025}})) == ["b", "c"]
    assert keys(store.similarity_search(q, k=5, filter={"user": {"$in": ["u7", "u9"]}})) == ["b"]
    assert keys(store.similarity_search(q, k=5, filter={"user": {"$ne": "u42"}})) == ["b"]
    assert keys(store.similarity_search(q, k=5, filter={"user": {"$nin": ["u42"]}})) == ["b"]
    assert keys(store.similarity_search(q, k=5, filter={"draft": {"$exists": True}})) == ["c"]
    both = {"$and": [{"user": "u42"}, {"year": {"$lt": 2026}}]}
    assert keys(store.similarity_search(q, k=5, filter=both)) == ["a"]
    either = {"$or": [{"user": "u7"}, {"tags": "x"}]}
    assert keys(store.similarity_search(q, k=5, filter=either)) == ["a", "b"]
    assert keys(store.similarity_search(q, k=5, filter={"$not": {"user": "u42"}})) == ["b"]
    native = {"must": [{"key": "year", "range": {"gt": 2024, "lte": 2025}}]}
    assert keys(store.similarity_search(q, k=5, filter=native)) == ["b"]
    # What cannot be expressed is refused, never dropped.
    for bad in ({"user": {"$like": "u%"}}, {"$nor": []}, {"year": {"$gt": "2020"}}):
        with pytest.raises(ValueError):
            store.similarity_search(q, k=5, filter=bad)


def test_scores_mmr_and_get(store: ValoriVectorStore) -> None:
    store.add_documents(DOCS)
    scored = store.similarity_search_with_relevance_scores("tea", k=3)
    assert scored[0][0].id == "a" and scored[0][1] == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    mmr = store.max_marginal_relevance_search("tea", k=2, fetch_k=3)
    assert len(mmr) == 2 and mmr[0].id == "a"
    got = store.get_by_ids(["c", "nope", "a"])
    assert [d.id for d in got] == ["c", "a"]
    assert got[0].metadata == {"user": "u42", "year": 2026, "draft": True}
    assert got[0].metadata["draft"] is True
    store.delete()
    assert store.similarity_search("tea", k=3) == []


async def test_async_paths_use_the_same_store(store: ValoriVectorStore) -> None:
    ids = await store.aadd_texts(["x", "y"], metadatas=[{"n": 1}, {"n": 2}])
    assert len(ids) == 2 and all(uuid.UUID(i) for i in ids)
    found = await store.asimilarity_search("x", k=1, filter={"n": 1})
    assert [d.page_content for d in found] == ["x"]
    mmr = await store.amax_marginal_relevance_search("x", k=1, fetch_k=2)
    assert mmr[0].page_content == "x"
    await store.adelete([ids[0]])
    assert [d.page_content for d in await store.aget_by_ids(ids)] == ["y"]


def test_from_texts_creates_the_collection(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=4)
    store = ValoriVectorStore.from_texts(
        ["one", "two"], emb, metadatas=[{"k": 1}, {"k": 2}], ids=["1", "2"],
        path=str(tmp_path / "ft"), collection="notes", metric="l2",
    )
    info = store.client.collection("notes")
    assert (info.dimension, info.metric, info.records) == (4, "l2", 2)
    assert store.similarity_search("two", k=1)[0].id == "2"
    assert 0.0 < store.similarity_search_with_relevance_scores("one", k=2)[1][1] < 1.0
    store.client.close()


def test_errors_reach_langchain_as_its_usual_exceptions(tmp_path: Path) -> None:
    db = Valori(path=str(tmp_path / "err"))
    db.create_collection("small", 3)
    store = ValoriVectorStore(DeterministicFakeEmbedding(size=8), client=db, collection="small")
    with pytest.raises(ValueError, match="3-dimensional"):
        store.add_texts(["x"])
    with pytest.raises(InvalidInputError):
        ValoriVectorStore(DeterministicFakeEmbedding(size=3), client=db, collection="small").add_texts(
            ["x"], metadatas=[{"bad": float("nan")}]
        )
    db.close()
    down = ValoriVectorStore(DeterministicFakeEmbedding(size=3), url="http://127.0.0.1:9")
    with pytest.raises(ConnectionError) as e:
        down.add_texts(["x"])
    assert isinstance(e.value, ValoriConnectionError)


def test_filter_translation_is_exact() -> None:
    assert from_mongo_style({"a": 1, "b": {"$gt": 2, "$lte": 5}}) == {
        "must": [
            {"must": [{"key": "a", "match": {"value": 1}}]},
            {"must": [{"key": "b", "range": {"gt": 2}}]},
            {"must": [{"key": "b", "range": {"lte": 5}}]},
        ]
    }
    assert from_mongo_style({}) == {}
    with pytest.raises(ValueError, match=r"\$regex"):
        from_mongo_style({"a": {"$regex": "x"}})


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    import contextlib
    import io
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## LangChain", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "python/README.md", "exec"), {"__name__": "__readme__"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "n1 Alice prefers tea 1.0", lines
    assert len(lines) == 2 and lines[1] in ("n1", "n2"), lines
