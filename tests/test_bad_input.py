"""The bad-input corpus (tests/bad_input/cases.yaml): one-line errors, never a partial output.

Every case runs the CLI in-process from inside ``tests/bad_input`` and must exit non-zero with
exactly one ``error: ...`` line on stderr that names the problem, no traceback, no partly
written output in the run directory, and no change to the corpus itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from obliviate.cli.main import app

HERE = Path(__file__).resolve().parent / "bad_input"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
# What a failed command may leave in a fresh run directory: complete metadata files only.
METADATA = {"recipe.yaml", "run.json", "task.json"}


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (hidden ones included)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def finetuned(run: Path, *extra: str) -> None:
    result = invoke(["finetune", "recipes/base.yaml", "-o", str(run), *extra])
    assert result.exit_code == 0, result.stderr


SETUPS = {
    None: lambda run: None,
    "target": lambda run: finetuned(run, "--role", "target"),
    "finetuned": lambda run: finetuned(run),
    "corrupt_record": lambda run: (run.mkdir(parents=True),
                                   (run / "run.json").write_text('{"created": "2026-01-01", "st')),
}


@pytest.fixture(autouse=True)
def in_corpus(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.chdir(HERE)
    # a training progress bar is output, not part of the error: keep stderr to the error itself
    monkeypatch.setattr("obliviate.llm.training.tqdm",
                        lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": True}))


def test_the_corpus_is_large_and_well_formed():
    names = [case["name"] for case in CASES]
    assert len(names) >= 30 and len(set(names)) == len(names)
    for case in CASES:
        assert set(case) <= {"name", "args", "error", "setup", "output", "leaves"}, case["name"]
        assert case["error"] and case.get("setup") in SETUPS, case["name"]


def assert_no_partial_output(run: Path, before: dict[str, str], leaves: list[str]) -> None:
    after = snapshot(run)
    leftovers = [p for p in after if any(part.startswith(".") or part.endswith(".tmp")
                                         for part in Path(p).parts)]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
    unexpected = sorted(p for p in changed if p not in METADATA
                        and not any(p.startswith(f"{prefix}/") for prefix in leaves))
    assert not unexpected, f"a failed command wrote or removed outputs: {unexpected}"
    assert not list(run.glob("checkpoints/*/step-*")), "a failed command left checkpoints"
    for name in METADATA & changed:
        text = (run / name).read_text(encoding="utf-8")
        json.loads(text) if name.endswith(".json") else yaml.safe_load(text)  # complete
    if "run.json" in changed:
        stages = json.loads((run / "run.json").read_text())["stages"]
        running = [name for name, stage in stages.items() if stage.get("status") == "running"]
        assert not running, f"stages recorded as running after the command failed: {running}"
        if leaves:  # it failed during a stage: the record says so
            assert any(stage.get("status") == "failed" for stage in stages.values()), stages


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path):
    output = case.get("output", True)
    run = tmp_path / "run" if output is True else HERE / output if output else None
    SETUPS[case.get("setup")](run)
    corpus_before = snapshot(HERE)
    run_before = snapshot(run) if output is True else {}
    args = [*case["args"], *(["-o", str(run)] if run is not None else [])]

    result = invoke(args)

    assert result.exit_code not in (0, None), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    for fragment in case["error"]:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert snapshot(HERE) == corpus_before, "a bad-input case changed the corpus"
    if output is True:
        assert_no_partial_output(run, run_before, case.get("leaves", []))
