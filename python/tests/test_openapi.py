"""The node's OpenAPI document: valid against the OpenAPI specification, true to what the node
serves (every documented route is routed), and the contract in both directions: a bounded
property-based run of schemathesis with every check against a real node finds no 5xx, no
response that contradicts the document, no request the schema forbids that the node accepts,
and no request the schema allows that the node refuses other than as the operation
documents."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from openapi_spec_validator import validate

# Every check schemathesis has, both directions: responses against the document, and requests
# against the server (a request the schema forbids must be refused, one it allows accepted).
# A schema-valid request may still be refused for the node's state (a vector of another
# dimension than its collection's): each operation documents those refusals as responses of
# their own status, and only those statuses are added to what schemathesis expects of it.
CHECKS = "all"
POSITIVE_EXPECTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def schemathesis_config(doc: dict) -> str:
    """A schemathesis.toml that lets each operation answer a schema-valid request with the
    refusals it documents (its responses with a specific 4xx status)."""
    lines = []
    for item in doc["paths"].values():
        for op in item.values():
            settings = []
            documented = sorted(
                s for s in op["responses"] if s.isdigit() and s.startswith("4") and s not in POSITIVE_EXPECTED
            )
            if documented:
                statuses = ", ".join(f'"{s}"' for s in POSITIVE_EXPECTED + documented)
                settings.append(f"checks.positive_data_acceptance.expected-statuses = [{statuses}]")
            # A long poll answers when its wait is over: its documented maximum, not the
            # response-time check's default of 10 s, bounds it (with room for a slow machine).
            for p in op.get("parameters", []):
                if p["name"] == "wait_ms":
                    settings.append(f"checks.max_response_time = {p['schema']['maximum'] / 1000 + 15}")
            if settings:
                lines += ["[[operations]]", f'include-operation-id = "{op["operationId"]}"', *settings, ""]
    return "\n".join(lines)


def fetch(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def document(url: str) -> dict:
    status, body = fetch(url + "/openapi.json")
    assert status == 200
    return json.loads(body)


def test_the_document_is_valid_openapi(start_node) -> None:
    doc = document(start_node().url)
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert len(ops) >= 33
    for op in ops:
        assert op["operationId"]
        assert set(op["responses"]) >= {"4XX", "5XX"}, op["operationId"]


def test_every_documented_route_is_served(start_node) -> None:
    node = start_node()
    doc = document(node.url)
    for path, item in doc["paths"].items():
        concrete = path.replace("{name}", "nothing_here").replace("{id}", "12345")
        for method in item:
            body = b"{}" if method in ("post", "put") else None
            status, answer = fetch(node.url + concrete, method.upper(), body)
            assert status != 405, f"{method} {path}: not routed"
            if status == 404:
                code = json.loads(answer)["code"]
                assert code != "not_found" or b"no such route" not in answer, f"{method} {path}"


def test_the_config_lets_only_documented_refusals_through() -> None:
    doc = {"paths": {
        "/a": {"post": {"operationId": "a", "responses": {"200": {}, "400": {}, "403": {}, "4XX": {}}}},
        "/b": {"get": {"operationId": "b", "responses": {"200": {}, "404": {}, "4XX": {}}}},
        "/c": {"get": {"operationId": "c", "responses": {"200": {}},
                       "parameters": [{"name": "wait_ms", "schema": {"maximum": 30000}}]}},
    }}
    config = schemathesis_config(doc)
    assert 'include-operation-id = "a"' in config
    assert '"5xx", "400"]' in config
    assert '"b"' not in config
    assert 'include-operation-id = "c"\nchecks.max_response_time = 45.0' in config


def test_property_based_run_finds_no_contradiction(start_node, tmp_path: Path) -> None:
    node = start_node()
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.fail(f"schemathesis is not installed beside {sys.executable}")
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(document(node.url)))
    run = subprocess.run(
        [
            str(st), "--config-file", str(config), "run", node.url + "/openapi.json",
            "--checks", CHECKS,
            "--max-examples", "12",
            "--seed", "20261128",
            "--workers", "2",
            "--generation-database", "none",
            "--request-timeout", "60",
            "--no-color",
            "--report", "junit",
            "--report-dir", str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        # Schemathesis keeps files in its working directory: keep them out of the checkout.
        cwd=tmp_path,
    )
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
