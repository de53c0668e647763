"""Remote-only behaviour: API keys, https, connection failures, follower write refusal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from valori import (
    ForbiddenError,
    UnauthorizedError,
    Valori,
    ValoriConnectionError,
    ValoriError,
)
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
        with pytest.raises(ForbiddenError) as e:
            reader.insert([1.0, 2.0])
        assert e.value.code == "forbidden"
        assert not isinstance(e.value, UnauthorizedError)
        assert reader.state().seq == 1


def test_unreachable_server_is_a_connection_error(start_node) -> None:
    node = start_node()
    url = node.url
    node.stop()
    with Valori(remote=url, timeout=5) as db:
        with pytest.raises(ValoriConnectionError) as e:
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


def make_certs(d: Path) -> tuple:
    """A test CA and a certificate for 127.0.0.1 that it signs (openssl, as the node's TLS
    test does). Returns (CA file, certificate file, key file)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", *ec, "-days", "1", "-subj", "/CN=valori-test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    run("req", *ec, "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"),
        "-out", str(d / "leaf.csr"))
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "basicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.pem"),
        "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1",
        "-extfile", str(d / "ext.cnf"), "-out", str(d / "cert.pem"))
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


def test_https_with_a_private_ca(start_node, tmp_path: Path) -> None:
    ca, cert, key = make_certs(tmp_path)
    node = start_node(env={"VALORI_TLS_CERT": str(cert), "VALORI_TLS_KEY": str(key)})
    assert node.url.startswith("https://")
    with Valori(remote=node.url, ca_cert=str(ca)) as db:
        assert db.insert([1.0, 2.0], tag=3) == 0
        assert [h.id for h in db.search([1.0, 2.0], k=1)] == [0]
        assert db.state().seq == 1
    # The node's certificate does not chain to the system's roots: refused, nothing sent.
    with Valori(remote=node.url) as untrusted:
        with pytest.raises(ValoriConnectionError) as e:
            untrusted.state()
        assert "certificate" in str(e.value).lower()
    # Plain http to a TLS port fails too.
    with Valori(remote=node.url.replace("https://", "http://"), timeout=5) as plain:
        with pytest.raises(ValoriError):
            plain.state()
    # A CA file that is not PEM, or missing, is refused when the handle is made.
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(InvalidInputError, match="no PEM certificate"):
        Valori(remote=node.url, ca_cert=str(tmp_path / "junk.pem"))
    with pytest.raises(InvalidInputError, match="cannot read ca_cert"):
        Valori(remote=node.url, ca_cert=str(tmp_path / "missing.pem"))
    with Valori(remote=node.url, ca_cert=ca) as db:  # a PathLike works too
        assert db.state().seq == 1


def test_ca_cert_needs_https() -> None:
    with pytest.raises(InvalidInputError, match="https"):
        Valori(remote="http://127.0.0.1:1", ca_cert="ca.pem")
    with pytest.raises(InvalidInputError, match="remote mode only"):
        Valori(path="x", ca_cert="ca.pem")


class Proxy:
    """A TCP proxy to `target`: it closes every connection once `limit` bytes of the server's
    answers went through it (None: never), and passes the client's bytes on in chunks of 1 KB
    with `upload_pause` seconds after each (0: at once)."""

    def __init__(self, target: str, limit=None, upload_pause: float = 0.0):
        import socket
        import threading

        host, port = target.split("://", 1)[1].rsplit(":", 1)
        self.target = (host, int(port))
        self.limit = limit
        self.upload_pause = upload_pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading
        import time

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)

            def up(c=client, s=server):
                try:
                    while data := c.recv(1024 if self.upload_pause else 65536):
                        s.sendall(data)
                        time.sleep(self.upload_pause)
                except OSError:
                    pass

            def down(c=client, s=server):
                sent = 0
                limit = self.limit if self.limit is not None else float("inf")
                try:
                    while sent < limit and (data := s.recv(int(min(65536, limit - sent)))):
                        c.sendall(data)
                        sent += len(data)
                except OSError:
                    pass
                for sock in (c, s):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()

            threading.Thread(target=up, daemon=True).start()
            threading.Thread(target=down, daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def test_a_snapshot_download_cut_short_keeps_the_previous_copy(start_node, tmp_path: Path) -> None:
    node = start_node()
    with Valori(remote=node.url) as db:
        for i in range(300):
            db.insert([float(i % 17), 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
        good = tmp_path / "copy.snap"
        db.snapshot(str(good))
        previous = good.read_bytes()
        assert len(previous) > 8000
    # The next download is cut off after 4 KB of the server's answers.
    proxy = Proxy(node.url, limit=4000)
    try:
        with Valori(remote=proxy.url, timeout=10) as db:
            with pytest.raises(ValoriError):
                db.snapshot(str(good))
    finally:
        proxy.close()
    assert good.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_restore_upload_may_take_longer_than_the_timeout(start_node, tmp_path: Path) -> None:
    node = start_node()
    snap = tmp_path / "state.snap"
    with Valori(remote=node.url) as db:
        for i in range(300):
            db.insert([float(i % 17), 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
        db.snapshot(str(snap))
        expected = db.state_hash()
    assert snap.stat().st_size > 30 * 1024  # at 20 KB/s, over 1.5 s: beyond the 1 s timeout
    # The client's bytes at about 20 KB/s; the answers at once.
    proxy = Proxy(node.url, upload_pause=0.05)
    try:
        with Valori(remote=proxy.url, timeout=1.0) as db:
            db.restore(str(snap))
            assert db.state_hash() == expected
    finally:
        proxy.close()
