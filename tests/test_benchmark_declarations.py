"""What a benchmark declares is what the CLI lists, the report scores and the audit states: a
registry walk over every benchmark of both modalities (its packaged recipe exists and selects
it, its axes are complete), and a benchmark registered here with an axis of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import obliviate.diffusion.benchmarks  # noqa: F401  (registers them)
import obliviate.llm.benchmarks  # noqa: F401
from obliviate.cli.audit import audit_record, format_audit
from obliviate.cli.common import load_any_recipe, packaged_recipe
from obliviate.cli.main import app
from obliviate.core.axes import AXES, RAW, AxisMap, ScoreExpr
from obliviate.core.benchmark import Benchmark, run_benchmark
from obliviate.core.errors import ConfigError
from obliviate.core.recipe import read_yaml
from obliviate.core.registry import BENCHMARKS, Entry
from obliviate.core.report import write_report

EVERY = [e.obj for e in BENCHMARKS.entries()]
IDS = [f"{b.modality}-{b.name}" for b in EVERY]


def test_cli_lists_every_benchmark_with_its_recipe():
    out = CliRunner().invoke(app, ["benchmarks"])
    assert out.exit_code == 0, out.output
    blocks = {tuple(b.splitlines()[0].split()[:2]): b for b in _blocks(out.output)}
    assert set(blocks) == {(b.modality, b.name) for b in EVERY}
    for bench in EVERY:
        block = blocks[(bench.modality, bench.name)]
        recipe = next(line for line in block.splitlines() if line.strip().startswith("recipe"))
        assert (bench.recipe or "none packaged") in recipe
        assert bench.oracle in block
    only = CliRunner().invoke(app, ["benchmarks", "--modality", "diffusion", "--json"])
    rows = json.loads(only.output)
    assert {r["name"] for r in rows} == set(BENCHMARKS.names("diffusion"))
    assert all(r["modality"] == "diffusion" for r in rows)
    mnist = next(r for r in rows if r["name"] == "mnist")
    assert mnist["recipe"] == "mnist" and mnist["splits"]["holdout"] == "holdout"
    bad = CliRunner().invoke(app, ["benchmarks", "--modality", "audio"])
    assert bad.exit_code == 2 and "llm, diffusion" in bad.output


def _blocks(text: str) -> list[str]:
    """The listing's blocks: each starts at an unindented line."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            out.append([])
        out[-1].append(line)
    return ["\n".join(b) for b in out]


@pytest.mark.parametrize("bench", [b for b in EVERY if b.recipe],
                         ids=[i for b, i in zip(EVERY, IDS, strict=True) if b.recipe])
def test_packaged_recipe_exists_and_selects_its_benchmark(bench):
    path = packaged_recipe(bench.recipe)
    assert path.is_file(), f"{bench.name} names recipe {bench.recipe!r}: no {path}"
    raw = read_yaml(path)
    assert raw.get("modality", "llm") == bench.modality
    if "task" in raw:  # a pipeline recipe: its task section names the benchmark
        assert load_any_recipe(bench.recipe, []).task.benchmark == bench.name
    else:  # a benchmark's own recipe class (styles_objects): named after it
        assert raw["name"] == bench.name


@pytest.mark.parametrize("bench", EVERY, ids=IDS)
def test_every_benchmark_declares_every_axis(bench):
    assert set(bench.axes) == set(AXES) | set(RAW.values()), bench.name
    for axis, exprs in bench.axes.items():
        assert exprs and isinstance(exprs, tuple)
        parsed = [ScoreExpr(text) for text in exprs]  # each one parses
        # the main axes are measured against the oracle, the raw ones never read it
        if axis in AXES:
            assert all(e.uses_oracle for e in parsed), (bench.name, axis)
        else:
            assert not any(e.uses_oracle for e in parsed), (bench.name, axis)


class Custom(Benchmark):
    """A benchmark of this test: one metric of its own on each side."""

    splits = {"forget": "forget", "retain": "retain"}
    axes = {"forgetting": ("close(custom/forget/score)",),
            "utility": ("kept(custom/retain/score)",)}
    oracle = "a model that never saw the forget set (this test's)"


@pytest.fixture
def custom(monkeypatch):
    """``Custom`` registered as the llm benchmark ``custom_axes`` for this test only."""
    monkeypatch.setattr(Custom, "name", "custom_axes")
    monkeypatch.setattr(Custom, "modality", "llm")
    monkeypatch.setitem(BENCHMARKS._entries, ("llm", "custom_axes"),
                        Entry("custom_axes", "llm", Custom, "test"))
    return Custom


def write_run(root: Path, benchmark: str | None, oracle_split: str = "r") -> Path:
    scores = {"oracle": (0.1, 0.8), "target": (0.9, 1.0), "unlearned/npo": (0.3, 0.5)}
    stages = {f"eval_{name}": {"status": "done", "summary": {
        "custom/forget/score": f, "custom/retain/score": r, "tofu/forget/prob": f}}
        for name, (f, r) in scores.items()}
    splits = {"f": {"name": "f", "n": 2, "sha256": "ab" * 32},
              "r": {"name": "r", "n": 6, "sha256": "cd" * 32}}
    stages["finetune_oracle"] = {"status": "done", "steps": 7, "split": splits[oracle_split],
                                 "inputs": {"model": {"name_or_path": "tiny"}}}
    task = {"name": "handmade", "modality": "llm", "seed": 0, "splits": splits,
            "roles": {"forget": "f", "retain": "r"},
            "metadata": {"benchmark": benchmark} if benchmark else {}}
    root.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"name": "handmade", "modality": "llm",
                                               "stages": stages, "task": task}))
    (root / "task.json").write_text(json.dumps(task))
    return root


def test_report_scores_on_the_runs_benchmark_axes(custom, tmp_path):
    _, json_path = write_report(write_run(tmp_path / "run", "custom_axes"))
    data = json.loads(json_path.read_text())
    assert data["axes"]["expressions"] == {"forgetting": ["close(custom/forget/score)"],
                                           "utility": ["kept(custom/retain/score)"]}
    npo = next(m for m in data["models"] if m["name"] == "unlearned/npo")
    # oracle 0.1, target 0.9: 0.3 is a quarter of the gap away; 0.5 of the better 1.0 kept
    assert npo["scores"] == {"forgetting": pytest.approx(0.75), "utility": pytest.approx(0.5)}
    assert data["benchmark"]["benchmark"] == "custom_axes"
    assert data["benchmark"]["expected"] == custom.oracle
    assert "on r (6 records: the task's retain set), 7 steps" in data["benchmark"]["actual"]
    html = (json_path.parent / "report.html").read_text()
    assert "never saw the forget set (this test&#x27;s)" in html
    # the same metrics under the synthetic benchmark: TOFU's axes, not this one
    _, other = write_report(write_run(tmp_path / "synthetic", "synthetic"))
    again = json.loads(other.read_text())
    assert "close(custom/forget/score)" not in again["axes"]["expressions"]["forgetting"]
    assert again["axes"]["used"]["unlearned/npo"]["forgetting"] == "close(tofu/forget/prob)"
    # a raw override where the benchmark declares no raw axis is one line
    with pytest.raises(ConfigError, match="declares no raw_forgetting"):
        AxisMap.for_benchmark("llm", "custom_axes", {"forgetting": "raw"})


def test_audit_states_the_expected_oracle_beside_the_runs(custom, tmp_path):
    info = audit_record(write_run(tmp_path / "run", "custom_axes", oracle_split="f"))
    assert info["oracle"]["expected"] == custom.oracle and info["oracle"]["retain_set"] is False
    assert "NOT the task's retain set" in info["oracle"]["actual"]
    text = format_audit({**info, "evaluation": {}})
    assert f"expected  {custom.oracle}" in text and "this run  fine-tuned from tiny on f" in text
    assert "the oracle was not trained on exactly the retain set" in info["issues"]


def test_run_benchmark_reads_the_record_in_order():
    # wmdp's own config has a key named source: the benchmark key wins over it
    record = {"recipe": {"task": {"benchmark": "wmdp", "source": "synthetic"}}}
    assert run_benchmark(record, {}) == "wmdp"
    assert run_benchmark(record, {"metadata": {"benchmark": "muse"}}) == "muse"
    assert run_benchmark({}, {"metadata": {"source": "synthetic"}}) == "synthetic"  # older runs
    assert run_benchmark({}, {}) is None


def test_cli_tables_show_the_recipes_benchmark_headline():
    from obliviate.cli.evaluate import recipe_headline
    from obliviate.llm.benchmarks.muse import MuseSynthetic
    from obliviate.llm.benchmarks.wmdp import Wmdp

    assert recipe_headline(load_any_recipe("wmdp", [])) == Wmdp.headline_pairs()
    assert recipe_headline(load_any_recipe("muse_synthetic", [])) == \
        MuseSynthetic.headline_pairs()
    demo = [key for _, key in recipe_headline(load_any_recipe("demo", []))]
    assert "tofu/forget/truth_ratio" in demo and not any(k.startswith(("muse/", "mcq/"))
                                                        for k in demo)


def test_a_run_naming_no_benchmark_gets_every_registered_ones_axes(custom, tmp_path):
    # an older run, or a task built in Python: the modality's benchmarks' axes, in name order
    _, json_path = write_report(write_run(tmp_path / "run", None))
    data = json.loads(json_path.read_text())
    forgetting = data["axes"]["expressions"]["forgetting"]
    assert forgetting.index("close(custom/forget/score)") < forgetting.index(
        "close(tofu/forget/prob)")  # custom_axes sorts before synthetic and tofu
    assert data["axes"]["used"]["unlearned/npo"]["forgetting"] == "close(custom/forget/score)"
    assert data["benchmark"]["benchmark"] is None and data["benchmark"]["expected"] is None
