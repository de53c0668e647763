"""The node's OpenAPI document: valid against the OpenAPI specification, true to what the node
serves (every documented route is routed), and a bounded property-based run of schemathesis
against a real node that finds no 5xx and no response contradicting the document."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from openapi_spec_validator import validate

# Checks of responses against the document. (Checks that need an API to accept every valid
# input, such as positive_data_acceptance, do not apply: a valid insert into a collection that
# does not exist is rightly a 404.)
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


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


def test_property_based_run_finds_no_contradiction(start_node, tmp_path: Path) -> None:
    node = start_node()
    st = Path(sys.executable).parent / "st"
    if not st.exists():
        pytest.fail(f"schemathesis is not installed beside {sys.executable}")
    run = subprocess.run(
        [
            str(st), "run", node.url + "/openapi.json",
            "--checks", CHECKS,
            "--max-examples", "12",
            "--seed", "20261128",
            "--workers", "2",
            "--generation-database", "none",
            "--request-timeout", "30",
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
