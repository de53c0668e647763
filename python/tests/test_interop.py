"""One storage format: a directory written embedded is served by ``valori-node`` with the same
state, and the other way round; the same operations give the same state hash in both modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from valori import Valori, ValoriError


def workload(db: Valori) -> None:
    rng = np.random.default_rng(42)
    db.create_collection("docs", 32, metric="cosine")
    db.insert_batch(rng.standard_normal((300, 32)).astype(np.float32), tags=list(range(300)),
                    collection="docs")
    db.insert_batch(rng.uniform(-1, 1, (200, 8)), metadata=[b"m%d" % i for i in range(200)])
    db.delete(17)
    db.delete(5, collection="docs")
    a = db.create_node("agent", record=("default", 3), properties=b"{}")
    b = db.create_node("fact")
    db.create_edge(a, b, "knows")
    db.insert([0.5] * 8, tag=9, metadata=b"last")


def queries(db: Valori) -> list:
    rng = np.random.default_rng(7)
    out = []
    for q in rng.standard_normal((10, 32)).astype(np.float32):
        out.append([(h.id, h.distance) for h in db.search(q, k=10, collection="docs")])
    for q in rng.uniform(-1, 1, (10, 8)):
        out.append([(h.id, h.distance, h.metadata) for h in db.search(q, k=5, with_metadata=True)])
    return out


def test_embedded_directory_served_by_the_node(tmp_path: Path, start_node) -> None:
    data = tmp_path / "shared"
    with Valori(path=str(data)) as db:
        workload(db)
        state = db.state()
        answers = queries(db)
    node = start_node(data_dir=data)
    with Valori(remote=node.url) as remote:
        assert remote.state() == state
        assert queries(remote) == answers
        remote.insert([0.25] * 8)
        after = remote.state()
    node.stop()
    # And back: the node's write is there when the directory is opened embedded again.
    with Valori(path=str(data)) as db:
        assert db.state() == after
        assert db.get(201).vector == [0.25] * 8


def test_same_operations_same_state_in_both_modes(tmp_path: Path, start_node) -> None:
    node = start_node()
    with Valori(path=str(tmp_path / "local")) as local, Valori(remote=node.url) as remote:
        workload(local)
        workload(remote)
        assert local.state() == remote.state()
        assert queries(local) == queries(remote)


def test_embedded_reopen_recovers_every_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Valori(path=str(path)) as db:
        ids = db.insert_batch(np.eye(4, dtype=np.float32))
        state = db.state()
    with Valori(path=str(path)) as db:
        assert db.state() == state
        assert [db.get(i).vector for i in ids] == np.eye(4).tolist()


def test_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with Valori(path=str(path)):
        with pytest.raises(ValoriError, match="cannot open"):
            Valori(path=str(path))
