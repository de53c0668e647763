"""The README's Python examples, run as written (the remote one against a real node, with the
node's address in place of localhost:3000)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from valori import Valori

README = Path(__file__).resolve().parents[2] / "README.md"


def examples() -> list:
    text = README.read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the README's Python section should hold two examples"
    return blocks


def run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    return out.getvalue()


def test_embedded_example(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = run(examples()[0])
    assert "Inserted record: 0" in out
    assert re.search(r"^0 0\.0$", out, flags=re.M)
    snapshot = re.search(r"Snapshot saved to: (.+)", out).group(1)
    assert os.path.isfile(snapshot)
    assert Path(snapshot).resolve().is_relative_to((tmp_path / "valori_db").resolve())
    printed_hash = re.search(r"State hash: ([0-9a-f]{64})", out).group(1)
    with Valori(path="./valori_db") as again:
        assert again.state_hash() == printed_hash
        assert again.get(0).metadata == b"meta"


def test_remote_example(start_node) -> None:
    node = start_node()
    code = examples()[1]
    assert 'Valori(remote="http://localhost:3000")' in code
    out = run(code.replace("http://localhost:3000", node.url))
    assert "Batch inserted IDs: [0, 1, 2]" in out
    assert "SearchResult(id=0, score=0.0" in out
