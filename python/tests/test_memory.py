"""The agent-memory API from Python, embedded and against a real node (the ``db`` fixture runs
each test both ways): keys and upserts, dict payloads and documents, filters, get, scroll,
count, writes by target, batch search, payload indexes, graph links by key; bad input refused
with nothing changed; both modes, and ``AsyncValori``, give identical answers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
from pathlib import Path

import numpy as np
import pytest

from valori import AsyncValori, InvalidInputError, NotFoundError, SearchResult, Valori

U42 = {"must": [{"key": "user_id", "match": {"value": "u42"}}]}


def seed(db: Valori) -> list:
    db.create_collection("mem", 3, metric="cosine", index="flat")
    done = db.upsert(
        ["a", "b", "c"],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        payloads=[
            {"user_id": "u42", "n": 10, "f": 2.5, "flag": True, "tags": ["x", "y"], "meta": {"src": "chat"}},
            {"user_id": "u7", "n": 10.0, "flag": 1},
            {"user_id": "u42", "n": -3, "none": None},
        ],
        documents=["alpha", None, "gamma"],
        collection="mem",
    )
    assert done["ids"] == [0, 1, 2] and isinstance(done["seq"], int)
    return done["ids"]


def test_upsert_keeps_ids_for_unchanged_vectors_and_payload_types(db: Valori) -> None:
    seed(db)
    got = db.get_records(["a", "b", "zz", "c"], include=["payload", "document", "vector"], collection="mem")
    assert got["missing"] == ["zz"]
    a, b, c = got["records"]
    assert (a["id"], a["key"], a["tag"], a["document"]) == (0, "a", 0, "alpha")
    assert a["vector"] == [1.0, 0.0, 0.0]
    # Types survive: a bool is a bool, an integral float an int, a float a float.
    assert a["payload"] == {"user_id": "u42", "n": 10, "f": 2.5, "flag": True, "tags": ["x", "y"], "meta": {"src": "chat"}}
    assert a["payload"]["flag"] is True
    assert type(b["payload"]["n"]) is int and b["payload"]["flag"] == 1 and type(b["payload"]["flag"]) is int
    assert type(a["payload"]["f"]) is float
    assert b["document"] is None and c["payload"]["none"] is None

    before = db.state_hash()
    again = db.upsert(["a"], [[1, 0, 0]], payloads=[{"user_id": "u42"}], tags=5, collection="mem")
    assert again["ids"] == [0]
    assert db.state_hash() != before
    moved = db.upsert(["b"], np.array([[0, 1, 1]], dtype=np.float32), collection="mem")
    assert moved["ids"] == [3]
    got = db.get_records(ids=[1, 3, 0], include=[], collection="mem")
    assert got["missing"] == [1]
    assert got["records"] == [{"id": 3, "key": "b", "tag": 0}, {"id": 0, "key": "a", "tag": 5}]


def test_upsert_modes_and_bad_input_change_nothing(db: Valori) -> None:
    seed(db)
    before = db.state()
    cases = [
        (lambda: db.upsert(["a"], [[1, 0, 0]], mode="insert_only", collection="mem"), InvalidInputError, "key_exists"),
        (lambda: db.upsert(["new"], [[1, 0, 0]], mode="update_only", collection="mem"), NotFoundError, "key_not_found"),
        (lambda: db.upsert(["x", "x"], [[1, 0, 0], [0, 1, 0]], collection="mem"), InvalidInputError, "duplicate_key"),
        (lambda: db.upsert([""], [[1, 0, 0]], collection="mem"), InvalidInputError, "invalid_key"),
        (lambda: db.upsert(["k" * 513], [[1, 0, 0]], collection="mem"), InvalidInputError, "invalid_key"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[{"f": math.nan}], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[{"f": math.inf}], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[{"s": {1, 2}}], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[{1: "int key"}], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=["not a dict"], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[{"big": 2**63}], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[{"s": "x" * 70000}], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], documents=["d" * 70000], collection="mem"), InvalidInputError, None),
        (lambda: db.upsert(["x"], [[1, 0, math.nan]], collection="mem"), InvalidInputError, None),
        (lambda: db.upsert(["x"], [[1, 0]], collection="mem"), InvalidInputError, "dimension_mismatch"),
        (lambda: db.upsert(["x", "y"], [[1, 0, 0]], collection="mem"), InvalidInputError, "bad_request"),
        (lambda: db.upsert(["x"], [[1, 0, 0]], mode="sometimes", collection="mem"), InvalidInputError, "bad_request"),
        (lambda: db.count({"must": [{"key": "n", "range": {"gt": "x"}}]}, collection="mem"), InvalidInputError, "invalid_filter"),
        (lambda: db.count({"must": [{"nope": 1}]}, collection="mem"), InvalidInputError, "invalid_filter"),
        (lambda: db.count({"bogus": []}, collection="mem"), InvalidInputError, "invalid_filter"),
        (lambda: db.count("user_id == u42", collection="mem"), InvalidInputError, "invalid_filter"),
        (lambda: db.delete_records(collection="mem"), InvalidInputError, "bad_request"),
        (lambda: db.delete_records(["a"], ids=[1], collection="mem"), InvalidInputError, "bad_request"),
        (lambda: db.delete_records(filter={}, max_affected=2, collection="mem"), InvalidInputError, "too_many_affected"),
        (lambda: db.set_payload({"x": math.nan}, keys=["a"], collection="mem"), InvalidInputError, "invalid_payload"),
        (lambda: db.get_records(["a"], include=["everything"], collection="mem"), InvalidInputError, "bad_request"),
        (lambda: db.search([1, 0, 0], score_threshold=math.nan, collection="mem"), InvalidInputError, "bad_request"),
        (lambda: db.create_payload_index("user_id", "text", collection="mem"), InvalidInputError, "bad_request"),
    ]
    deep: dict = {"v": 1}
    for _ in range(20):
        deep = {"d": deep}
    cases.append((lambda: db.upsert(["x"], [[1, 0, 0]], payloads=[deep], collection="mem"), InvalidInputError, "invalid_payload"))
    for call, exc, code in cases:
        with pytest.raises(exc) as e:
            call()
        if code is not None:
            assert e.value.code == code, (code, e.value.code, e.value.message)
    with pytest.raises(TypeError):
        db.upsert("abc", [[1, 0, 0]] * 3, collection="mem")
    assert db.state() == before


def test_filters_count_scroll_and_search(db: Valori) -> None:
    seed(db)
    assert db.count(collection="mem")["count"] == 3
    assert db.count(U42, collection="mem")["count"] == 2
    # True is never the integer 1, and 10.0 is 10.
    assert db.count({"must": [{"key": "flag", "match": {"value": True}}]}, collection="mem")["count"] == 1
    assert db.count({"must": [{"key": "flag", "match": {"value": 1}}]}, collection="mem")["count"] == 1
    assert db.count({"must": [{"key": "n", "match": {"value": 10.0}}]}, collection="mem")["count"] == 2
    assert db.count({"must": [{"key": "tags", "match": {"any": ["y"]}}]}, collection="mem")["count"] == 1
    assert db.count({"must": [{"key": "meta.src", "match": {"value": "chat"}}]}, collection="mem")["count"] == 1
    assert db.count({"must": [{"is_null": {"key": "none"}}]}, collection="mem")["count"] == 1
    assert db.count({"must": [{"key": "n", "range": {"gte": 0, "lt": 10.5}}]}, collection="mem")["count"] == 2

    seen = []
    cursor = None
    while True:
        page = db.scroll(limit=2, cursor=cursor, include=["payload"], collection="mem")
        seen += [r["key"] for r in page["records"]]
        assert all("document" not in r for r in page["records"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c"]
    page = db.scroll(U42, collection="mem")
    assert [r["key"] for r in page["records"]] == ["a", "c"] and page["next_cursor"] is None

    hits = db.search([1, 0.2, 0.1], k=3, filter=U42, include=["payload", "document"], collection="mem")
    assert [h.key for h in hits] == ["a", "c"]
    assert isinstance(hits[0], SearchResult)
    assert hits[0].similarity > hits[1].similarity
    assert hits[0].payload["user_id"] == "u42" and hits[0].document == "alpha"
    assert hits[0].vector is None
    close = db.search([1, 0.2, 0.1], k=3, score_threshold=0.5, collection="mem")
    assert [h.key for h in close] == ["a"]
    exact = db.search([1, 0.2, 0.1], k=3, filter=U42, exact=True, collection="mem")
    assert [h.id for h in exact] == [h.id for h in hits]

    batch = db.search_batch(
        [
            {"vector": [1, 0, 0], "k": 1},
            {"vector": np.array([0, 0, 1.0]), "k": 2, "filter": U42, "include": ["document"]},
        ],
        collection="mem",
    )
    assert batch["seq"] == db.state().seq
    assert [[h.key for h in r] for r in batch["results"]] == [["a"], ["c", "a"]]
    assert batch["results"][1][0].document == "gamma"
    with pytest.raises(InvalidInputError):
        db.search_batch([{"vector": [1, 0, 0], "nope": 1}], collection="mem")


def test_search_at_a_past_seq(db: Valori) -> None:
    seed(db)
    before = db.state().seq
    old = db.search([0.9, 0.1, 0], k=3, include=["payload"], collection="mem")
    db.upsert(["d"], [[1, 0.05, 0]], payloads=[{"user_id": "u9"}], collection="mem")
    db.delete_records(keys=["b"], collection="mem")
    now = db.search([0.9, 0.1, 0], k=3, include=["payload"], collection="mem")
    assert [h.key for h in now] == ["d", "a", "c"]
    past = db.search([0.9, 0.1, 0], k=3, include=["payload"], collection="mem", at_seq=before)
    assert past == old and [h.key for h in past] == ["a", "b", "c"]
    assert db.search([0.9, 0.1, 0], k=3, collection="mem", at_seq=db.state().seq) == db.search(
        [0.9, 0.1, 0], k=3, collection="mem"
    )
    with pytest.raises(NotFoundError, match="future"):
        db.search([1, 0, 0], collection="mem", at_seq=db.state().seq + 1)
    with pytest.raises(NotFoundError):
        db.search([1, 0, 0], collection="mem", at_seq=0)  # the collection did not exist yet


def test_writes_by_target_and_indexes(db: Valori) -> None:
    seed(db)
    db.create_payload_index("user_id", "keyword", collection="mem")
    assert db.payload_indexes(collection="mem")["indexes"] == [{"field": "user_id", "kind": "keyword"}]
    assert db.set_payload({"seen": True}, filter=U42, collection="mem")["updated"] == 2
    assert db.set_payload({"only": 1}, keys=["b"], mode="replace", collection="mem")["updated"] == 1
    assert db.get_records(["b"], collection="mem")["records"][0]["payload"] == {"only": 1}
    assert db.delete_payload_keys(["seen", "n"], keys=["a", "zz"], collection="mem")["updated"] == 1
    a = db.get_records(["a"], collection="mem")["records"][0]["payload"]
    assert "seen" not in a and "n" not in a and a["user_id"] == "u42"
    assert db.delete_records(["zz", "b"], collection="mem")["deleted"] == 1
    assert db.delete_records(filter=U42, max_affected=2, collection="mem")["deleted"] == 2
    assert db.count(collection="mem")["count"] == 0
    db.drop_payload_index("user_id", collection="mem")
    assert db.payload_indexes(collection="mem")["indexes"] == []
    with pytest.raises(NotFoundError):
        db.drop_payload_index("user_id", collection="mem")


def test_graph_links_by_key_follow_upserts(db: Valori) -> None:
    seed(db)
    node = db.create_node("fact", record=("mem", "a"))
    assert db.get_node(node).record == ("mem", "a") and db.get_node(node).record_id == 0
    db.upsert(["a"], [[1, 1, 0]], collection="mem")
    assert db.get_node(node).record_id == 3
    db.delete_records(["a"], collection="mem")
    assert db.get_node(node).record_id is None
    with pytest.raises(NotFoundError) as e:
        db.create_node("fact", record=("mem", "zz"))
    assert e.value.code == "key_not_found"


SCRIPT = [
    ("create_collection", ("s", 4), {"metric": "cosine"}),
    ("upsert", (["k1", "k2", "k3", "k4"], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]]),
     {"payloads": [{"g": 1, "t": True}, {"g": 2, "w": 1.5}, {"g": 1}, {"g": 3, "l": [1, "a", None]}],
      "documents": ["one", "two", None, "four"], "metadata": [b"m1", None, None, b"m4"], "collection": "s"}),
    ("create_payload_index", ("g", "integer"), {"collection": "s"}),
    ("get_records", (["k4", "nope", "k1"],), {"include": ["vector", "payload", "document", "metadata"], "collection": "s"}),
    ("scroll", (), {"limit": 3, "collection": "s"}),
    ("count", ({"must": [{"key": "g", "match": {"value": 1}}]},), {"collection": "s"}),
    ("search", ([1, 0.5, 0, 0],), {"k": 3, "include": ["payload", "document", "vector", "metadata"], "collection": "s"}),
    ("search", ([1, 0.5, 0, 0],), {"k": 3, "filter": {"must_not": [{"key": "g", "match": {"value": 1}}]}, "collection": "s"}),
    ("search_batch", ([{"vector": [0, 1, 0, 0], "k": 2}, {"vector": [0, 0, 1, 0], "k": 1, "with_metadata": True}],), {"collection": "s"}),
    ("set_payload", ({"h": "x"},), {"filter": {"must": [{"key": "g", "range": {"lte": 2}}]}, "collection": "s"}),
    ("delete_payload_keys", (["w"],), {"keys": ["k2"], "collection": "s"}),
    ("upsert", (["k2"], [[0, 1, 0, 1]]), {"collection": "s"}),
    ("delete_records", (), {"ids": [0], "collection": "s"}),
    ("payload_indexes", (), {"collection": "s"}),
    ("create_node", ("n",), {"record": ("s", "k2")}),
    ("get_node", (0,), {}),
    ("state", (), {}),
]


def run_script(db: Valori) -> list:
    out = []
    for name, args, kwargs in SCRIPT:
        result = getattr(db, name)(*args, **kwargs)
        out.append((name, result))
    return out


def test_embedded_and_remote_give_identical_answers(tmp_path: Path, start_node) -> None:
    with Valori(path=str(tmp_path / "e")) as embedded:
        local = run_script(embedded)
    node = start_node()
    with Valori(remote=node.url) as remote:
        served = run_script(remote)
    assert local == served


def test_async_valori_has_every_method_and_the_same_answers(tmp_path: Path, start_node) -> None:
    public = {n for n in dir(Valori) if not n.startswith("_") and callable(getattr(Valori, n))}
    for name in public - {"close"}:
        assert asyncio.iscoroutinefunction(getattr(AsyncValori, name)), name
    with Valori(path=str(tmp_path / "sync")) as db:
        want = run_script(db)
    node = start_node()

    async def main() -> list:
        async with AsyncValori(remote=node.url) as adb:
            assert adb.mode == "remote"
            out = []
            for name, args, kwargs in SCRIPT:
                out.append((name, await getattr(adb, name)(*args, **kwargs)))
            # Concurrent calls proceed together on one handle.
            counts = await asyncio.gather(*[adb.count(collection="s") for _ in range(8)])
            assert len({c["count"] for c in counts}) == 1
            with pytest.raises(InvalidInputError):
                await adb.upsert(["x"], [[1, 0, 0, 0]], payloads=[{"f": math.nan}], collection="s")
        assert adb.closed
        return out

    assert asyncio.run(main()) == want


def test_python_readme_quick_start_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Agent memory", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the agent-memory section holds the quick start and the async example"
    monkeypatch.chdir(tmp_path)

    def run(code: str) -> list:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "python/README.md", "exec"), {"__name__": "__readme__"})
        return out.getvalue().splitlines()

    lines = run(blocks[0])
    assert lines[0].startswith("n1 ") and lines[0].endswith("Alice prefers tea"), lines
    assert lines[1].startswith("n3 ") and lines[1].endswith("Alice lives in Lyon"), lines
    assert re.fullmatch(r"\{'count': 2, 'seq': \d+\}", lines[2]), lines
    assert run(blocks[1]) == ["['n1', 'n2']"]
