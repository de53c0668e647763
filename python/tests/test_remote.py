"""Remote-only behaviour: API keys, connection failures, follower write refusal."""

from __future__ import annotations

import pytest

from valori import ConnectionError, UnauthorizedError, Valori, ValoriError
from valori.errors import InvalidInputError


def test_api_keys(start_node) -> None:
    node = start_node(env={"VALORI_API_KEY": "write-key", "VALORI_READ_API_KEY": "read-key"})
    with Valori(remote=node.url) as anonymous:
        with pytest.raises(UnauthorizedError) as e:
            anonymous.state()
        assert e.value.code == "unauthorized"
    with Valori(remote=node.url, api_key="wrong") as wrong:
        with pytest.raises(UnauthorizedError):
            wrong.insert([1.0])
    with Valori(remote=node.url, api_key="write-key") as writer:
        assert writer.insert([1.0, 2.0]) == 0
    with Valori(remote=node.url, api_key="read-key") as reader:
        assert reader.get(0).vector == [1.0, 2.0]
        with pytest.raises(UnauthorizedError) as e:
            reader.insert([1.0, 2.0])
        assert e.value.code == "forbidden"
        assert reader.state().seq == 1


def test_unreachable_server_is_a_connection_error(start_node) -> None:
    node = start_node()
    url = node.url
    node.stop()
    with Valori(remote=url, timeout=5) as db:
        with pytest.raises(ConnectionError) as e:
            db.state()
        assert e.value.code == "connection_error"
        assert isinstance(e.value, OSError)


def test_follower_refuses_writes_naming_the_leader(start_node) -> None:
    leader = start_node()
    follower = start_node(env={"VALORI_REPLICATION_MODE": "follower",
                               "VALORI_LEADER_URL": leader.url})
    with Valori(remote=follower.url) as db:
        with pytest.raises(ValoriError) as e:
            db.insert([1.0])
        assert e.value.code == "read_only_follower"
        assert leader.url in str(e.value)


def test_bad_arguments_to_the_constructor() -> None:
    with pytest.raises(InvalidInputError):
        Valori(path="x", remote="http://127.0.0.1:1")
    with pytest.raises(InvalidInputError):
        Valori(remote="ftp://127.0.0.1:1")
    with pytest.raises(InvalidInputError):
        Valori(remote="not a url")
    with pytest.raises(InvalidInputError):
        Valori(remote="http://127.0.0.1:1", timeout=0)
