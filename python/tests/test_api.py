"""The same cases in both modes (the ``db`` fixture runs each test embedded and against a real
node): every method, every kind of bad input, and that bad input changes nothing."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import valori
from valori import (
    InvalidInputError,
    NotFoundError,
    SearchResult,
    Valori,
    ValoriError,
)


def grid(n: int, dim: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, dim)).astype(np.float32)


def test_insert_get_search_delete(db: Valori) -> None:
    uid = db.insert([0.5] * 8, tag=3, metadata=b"hello")
    assert uid == 0
    r = db.get(uid)
    assert r.id == 0 and r.tag == 3 and r.metadata == b"hello"
    assert r.vector == [0.5] * 8
    hits = db.search([0.5] * 8, k=5)
    assert [h.id for h in hits] == [0]
    assert hits[0].score == 0.0 and hits[0].distance == 0 and hits[0].tag == 3
    assert hits[0].metadata is None
    assert db.search([0.5] * 8, k=1, with_metadata=True)[0].metadata == b"hello"
    db.delete(uid)
    with pytest.raises(NotFoundError) as e:
        db.get(uid)
    assert e.value.code == "record_not_found"
    assert db.search([0.5] * 8, k=5) == []


def test_results_read_as_attributes_and_keys(db: Valori) -> None:
    db.insert([1.0, 2.0])
    hit = db.search([1.0, 2.0], k=1)[0]
    assert isinstance(hit, SearchResult)
    assert hit["id"] == hit.id == 0 and hit["score"] == 0
    assert dict(hit) == {
        "id": 0,
        "score": 0.0,
        "distance": 0,
        "tag": 0,
        "metadata": None,
        "similarity": 0.0,
        "key": None,
        "payload": None,
        "document": None,
        "vector": None,
    }
    with pytest.raises(KeyError):
        hit["nope"]


def test_search_orders_by_distance_then_id_and_filters_by_tag(db: Valori) -> None:
    vectors = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [1.0, 0.0]]
    ids = db.insert_batch(vectors, tags=[1, 2, 1, 2, 1])
    assert ids == [0, 1, 2, 3, 4]
    hits = db.search([0.0, 0.0], k=5)
    assert [h.id for h in hits] == [0, 1, 2, 4, 3]
    assert [h.score for h in hits] == [0.0, 1.0, 1.0, 1.0, 25.0]
    assert [h.distance for h in hits] == [0, 2**32, 2**32, 2**32, 25 * 2**32]
    assert [h.id for h in db.search([0.0, 0.0], k=5, tag=2)] == [1, 3]
    assert db.search([0.0, 0.0], k=5, tag=9) == []


def test_numpy_float32_float64_and_lists_store_the_same_values(db: Valori) -> None:
    v32 = grid(1, 16)[0]
    a = db.insert(v32)
    b = db.insert(v32.astype(np.float64))
    c = db.insert(v32.tolist())
    d = db.insert(v32[::1].copy())
    assert db.get(a).vector == db.get(b).vector == db.get(c).vector == db.get(d).vector
    # Non-contiguous and integer arrays are accepted (converted once).
    wide = np.zeros((16, 2), dtype=np.float32)
    wide[:, 0] = v32
    e = db.insert(wide[:, 0])
    assert db.get(e).vector == db.get(a).vector
    f = db.insert(np.arange(16, dtype=np.int64))
    assert db.get(f).vector == [float(i) for i in range(16)]


def test_batch_from_2d_array_and_sequence_of_arrays(db: Valori) -> None:
    data = grid(50, 8)
    ids = db.insert_batch(data, tags=5, metadata=[bytes([i]) for i in range(50)])
    assert ids == list(range(50))
    more = db.insert_batch([row for row in data[:3]])
    assert more == [50, 51, 52]
    for i in (0, 17, 49):
        r = db.get(i)
        assert r.tag == 5 and r.metadata == bytes([i])
    for i in range(3):
        assert db.get(50 + i).vector == db.get(i).vector
        assert db.get(50 + i).tag == 0 and db.get(50 + i).metadata is None
    # Every stored vector is within one Q16.16 step of the input.
    got = np.array(db.get(17).vector)
    assert np.max(np.abs(got - data[17].astype(np.float64))) <= 2.0**-17
    assert db.collection("default").records == 53


def test_collections_metrics_and_indexes(db: Valori) -> None:
    db.create_collection("docs", 4, metric="cosine")
    db.create_collection("exact", 3, metric="ip", index="flat")
    db.create_collection("tuned", 2, index="hnsw", m=8, ef_construction=50, ef_search=20)
    names = {c.name: c for c in db.collections()}
    assert set(names) == {"docs", "exact", "tuned"}
    assert (names["docs"].dimension, names["docs"].metric, names["docs"].index) == (4, "cosine", "hnsw")
    assert (names["exact"].metric, names["exact"].index) == ("ip", "flat")
    db.insert([1, 0, 0], collection="exact")
    db.insert([0, 2, 0], collection="exact")
    hits = db.search([0, 1, 0], k=2, collection="exact")
    assert [h.id for h in hits] == [1, 0]
    assert hits[0].score == -2.0
    assert db.collection("exact").records == 2 and db.collection("exact").next_id == 2
    db.drop_collection("exact")
    with pytest.raises(NotFoundError):
        db.collection("exact")
    with pytest.raises(NotFoundError):
        db.search([0, 1, 0], collection="exact")


def test_graph(db: Valori) -> None:
    rid = db.insert([0.1, 0.2])
    a = db.create_node("person", record=("default", rid), properties=b'{"name":"ada"}')
    b = db.create_node("paper")
    c = db.create_node("topic")
    e1 = db.create_edge(a, b, "wrote")
    e2 = db.create_edge(b, c, "about")
    node = db.get_node(a)
    assert (node.kind, node.record, node.properties) == ("person", ("default", rid), b'{"name":"ada"}')
    assert node.record_id == rid
    edge = db.get_edge(e1)
    assert (edge.source, edge.target, edge.kind) == (a, b, "wrote")
    assert sorted((n.node, n.edge, n.kind, n.direction) for n in db.neighbors(b, "both")) == [
        (a, e1, "wrote", "in"),
        (c, e2, "about", "out"),
    ]
    assert [n.node for n in db.neighbors(b, "out", kinds=["about"])] == [c]
    assert db.neighbors(b, "out", kinds=["cites"]) == []
    t = db.traverse(a, 2)
    assert t.nodes == [(a, 0), (b, 1), (c, 2)] and t.truncated is False
    assert db.traverse(a, 1).nodes == [(a, 0), (b, 1)]
    db.delete_edge(e2)
    with pytest.raises(NotFoundError):
        db.get_edge(e2)
    db.delete_node(a)
    with pytest.raises(NotFoundError):
        db.get_node(a)
    with pytest.raises(NotFoundError):
        db.get_edge(e1)  # went with its node
    with pytest.raises(InvalidInputError):
        db.neighbors(b, "sideways")
    with pytest.raises(NotFoundError):
        db.create_edge(b, 999, "x")
    with pytest.raises(NotFoundError):
        db.create_node("x", record=("default", 999))


@pytest.mark.parametrize(
    "call, code",
    [
        (lambda db: db.insert([1.0, 2.0, 3.0]), "dimension_mismatch"),
        (lambda db: db.insert([1.0, math.nan]), "not_finite"),
        (lambda db: db.insert([1.0, math.inf]), "not_finite"),
        (lambda db: db.insert(np.array([1.0, np.nan], dtype=np.float32)), "not_finite"),
        (lambda db: db.insert([1.0, 1e9]), "out_of_range"),
        (lambda db: db.insert([1.0, 2.0], metadata=b"x" * (64 * 1024 + 1)), "too_large"),
        (lambda db: db.insert_batch([[1.0, 2.0], [1.0, math.nan]]), "bad_request"),
        (lambda db: db.insert_batch([[1.0, 2.0], [1.0, 2.0, 3.0]]), "dimension_mismatch"),
        (lambda db: db.search([1.0, 2.0, 3.0]), "dimension_mismatch"),
        (lambda db: db.search([1.0, math.nan]), "not_finite"),
        (lambda db: db.search([1.0, 2.0], k=0), "invalid_search"),
        (lambda db: db.create_collection("default", 2), "collection_exists"),
        (lambda db: db.create_collection("c", 0), "invalid_dimension"),
        (lambda db: db.create_collection("c", 2, metric="manhattan"), "bad_request"),
        (lambda db: db.create_collection("c", 2, index="ivf"), "bad_request"),
        (lambda db: db.create_collection("c", 2, index="flat", m=4), "bad_request"),
        (lambda db: db.create_collection("", 2), "invalid_name"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(db: Valori, call, code: str) -> None:
    db.insert([0.25, 0.5])
    before = db.state()
    with pytest.raises(InvalidInputError) as e:
        call(db)
    assert isinstance(e.value, ValueError)
    assert e.value.code == code, str(e.value)
    assert str(e.value)
    assert db.state() == before


def test_batch_errors_name_the_record(db: Valori) -> None:
    with pytest.raises(InvalidInputError, match=r"record 1: vector component 1: "):
        db.insert_batch([[1.0, 2.0], [1.0, math.nan]])
    with pytest.raises(InvalidInputError, match=r"2 vectors but 3 tags"):
        db.insert_batch([[1.0, 2.0], [3.0, 4.0]], tags=[1, 2, 3])
    with pytest.raises(InvalidInputError, match=r"2 vectors but 1 metadata"):
        db.insert_batch([[1.0, 2.0], [3.0, 4.0]], metadata=[b"a"])
    assert db.state().seq == 0


def test_wrong_types_raise_type_error(db: Valori) -> None:
    with pytest.raises(TypeError):
        db.insert("not a vector")
    with pytest.raises(TypeError):
        db.insert_batch(np.zeros(4, dtype=np.float32))  # 1-d: not a batch
    with pytest.raises(TypeError):
        db.insert(np.zeros((2, 2), dtype=np.float32))  # 2-d: not one vector
    with pytest.raises(OverflowError):
        db.insert([1.0, 2.0], tag=-1)
    assert db.state().seq == 0


def test_metadata_that_is_not_bytes_is_invalid_input(db: Valori) -> None:
    for bad in ({"a": 1}, "text is not bytes", 7):
        with pytest.raises(InvalidInputError, match=r"metadata must be bytes") as e:
            db.insert([1.0, 2.0], metadata=bad)
        assert e.value.code == "bad_request"
    with pytest.raises(InvalidInputError, match=r"metadata\[1\] must be bytes"):
        db.insert_batch([[1.0, 2.0], [3.0, 4.0]], metadata=[b"ok", {"a": 1}])
    with pytest.raises(InvalidInputError, match=r"properties must be bytes"):
        db.create_node("doc", properties={"a": 1})
    assert db.state().seq == 0


def test_unknown_ids_are_not_found(db: Valori) -> None:
    db.insert([1.0, 2.0])
    for call in (lambda: db.get(5), lambda: db.delete(5), lambda: db.get_node(1),
                 lambda: db.get_edge(1), lambda: db.delete_node(1), lambda: db.delete_edge(1),
                 lambda: db.neighbors(1), lambda: db.traverse(1, 1)):
        with pytest.raises(NotFoundError) as e:
            call()
        assert isinstance(e.value, LookupError)


def test_snapshot_and_restore(db: Valori, tmp_path) -> None:
    db.insert_batch(grid(20, 4))
    copy = db.snapshot(tmp_path / "copy.snap")
    assert copy == str(tmp_path / "copy.snap")
    saved = db.state()
    assert db.snapshot()  # a path in the data directory (on the server, remotely)
    db.insert_batch(grid(5, 4, seed=9))
    assert db.state_hash() != saved.state_hash
    restored = db.restore(copy)
    assert restored.state_hash == saved.state_hash == db.state_hash()
    assert db.collection("default").records == 20
    # A corrupt snapshot is refused and changes nothing.
    bad = tmp_path / "bad.snap"
    raw = bytearray((tmp_path / "copy.snap").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(InvalidInputError) as e:
        db.restore(bad)
    assert e.value.code == "invalid_snapshot"
    assert db.state_hash() == saved.state_hash
    with pytest.raises(NotFoundError):
        db.restore(tmp_path / "missing.snap")


def test_state_hash_is_a_function_of_the_events(db: Valori) -> None:
    empty = db.state()
    assert empty.seq == 0 and len(empty.state_hash) == 64
    db.insert([1.0, 2.0])
    assert db.state().seq == 1 and db.state_hash() != empty.state_hash


def test_close_and_context_manager(db: Valori) -> None:
    with db as same:
        assert same is db
        same.insert([1.0])
    assert db.closed
    with pytest.raises(ValoriError) as e:
        db.insert([1.0])
    assert e.value.code == "closed"
    db.close()  # twice is fine


def test_threads_share_a_handle(db: Valori) -> None:
    db.insert_batch(grid(200, 8))
    errors = []

    def work(seed: int) -> None:
        try:
            for q in grid(20, 8, seed=seed):
                assert len(db.search(q, k=5)) == 5
            db.insert(grid(1, 8, seed=seed)[0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.collection("default").records == 204


def test_exceptions_form_a_hierarchy() -> None:
    for cls in (valori.InvalidInputError, valori.NotFoundError, valori.UnauthorizedError,
                valori.ForbiddenError, valori.ValoriConnectionError):
        assert issubclass(cls, ValoriError)
    assert issubclass(valori.ValoriConnectionError, ConnectionError)
    assert issubclass(valori.UnauthorizedError, PermissionError)
    assert issubclass(valori.ForbiddenError, PermissionError)
    # 403 is not 401: neither class is the other.
    assert not issubclass(valori.ForbiddenError, valori.UnauthorizedError)
    assert not issubclass(valori.UnauthorizedError, valori.ForbiddenError)
    # The old name still works where it is asked for by name.
    assert valori.errors.ConnectionError is valori.ValoriConnectionError


def test_star_import_leaves_the_builtin_connection_error_alone() -> None:
    import builtins

    namespace: dict = {}
    exec("from valori import *", namespace)
    assert "ConnectionError" not in namespace
    exec("from valori import *\nresult = ConnectionError", namespace)
    assert namespace["result"] is builtins.ConnectionError
    assert namespace["ValoriConnectionError"] is valori.ValoriConnectionError


def test_the_gil_is_released_while_the_database_works(db: Valori) -> None:
    # Another thread counts while calls run. It needs the GIL for every step, so it can only
    # count during a call that released it; during a call holding the GIL it stays blocked (it
    # yields the GIL at every step, so at most a step or two slip in as a call returns).
    import time

    data = grid(3000, 64)
    stop = threading.Event()
    started = threading.Event()
    count = [0]

    def spin() -> None:
        started.set()
        while not stop.is_set():
            count[0] += 1
            time.sleep(0)

    # Exact scans, so that each search lasts long enough to count during.
    db.create_collection("scan", 64, index="flat")
    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    try:
        before = count[0]
        db.insert_batch(data, collection="scan")
        during_insert = count[0] - before
        during_search = 0
        for q in data[:30]:
            before = count[0]
            db.search(q, k=100, collection="scan")
            during_search += count[0] - before
    finally:
        stop.set()
        t.join()
    assert during_insert > 100, during_insert
    assert during_search > 300, during_search


def test_vectors_on_disk_give_the_same_answers_from_mapped_files(tmp_path) -> None:
    """Embedded with ``vectors_on_disk=True`` the full-precision vectors are mapped from files of
    the directory's ``vectors/`` (unlinked, so the directory stays empty), and every answer and
    the state hash are those of a database that keeps them in memory, after a reopen too."""
    data = grid(500, 64)
    answers = {}
    for on_disk in (False, True):
        path = tmp_path / ("disk" if on_disk else "memory")
        with Valori(path=str(path), vectors_on_disk=on_disk) as db:
            db.create_collection("docs", 64)
            db.insert_batch(data, collection="docs")
            hits = [h.id for h in db.search(data[7], k=5, collection="docs")]
            with open("/proc/self/maps") as maps:
                mapped = sum(f"{path.resolve()}/vectors/" in line for line in maps)
            answers[on_disk] = (hits, db.state_hash(), mapped)
        with Valori(path=str(path), vectors_on_disk=on_disk) as db:
            assert db.state_hash() == answers[on_disk][1]
            assert [h.id for h in db.search(data[7], k=5, collection="docs")] == hits
        if on_disk:
            assert list((path / "vectors").iterdir()) == []
    assert answers[True][:2] == answers[False][:2]
    assert answers[False][2] == 0 and answers[True][2] >= 1


def test_vectors_on_disk_is_for_embedded_mode() -> None:
    with pytest.raises(InvalidInputError) as e:
        Valori(remote="http://127.0.0.1:9", vectors_on_disk=True)
    assert "embedded mode only" in str(e.value)
