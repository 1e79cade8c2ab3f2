"""docs/examples.md runs: its ``python`` code blocks are executed in order, in one namespace,
in an empty working directory (what they write stays in the test's folder)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "examples.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = blocks()
    assert len(code) >= 8
    namespace: dict = {"__name__": "docs_examples"}
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name}[block {i + 1}]", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "did you mean 'beta'" in out and "UnlearnResult(method='npo', steps=4" in out
    assert (tmp_path / "unlearned-npo" / "README.md").is_file()
    assert (tmp_path / "logs" / "unlearn-grad_diff").is_dir()
    assert namespace["outcome"].model_path is None
