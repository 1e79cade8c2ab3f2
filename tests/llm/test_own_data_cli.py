"""A user's own JSONL data through the CLI with the demo recipe's default suites, which follow
the data: plain-text documents get MUSE's VerbMem (on excerpts of the documents), MIA and
memorisation with the retain documents' memorisation as utility; questions and answers without
TOFU's paraphrased or perturbed answers get TOFU's suite, which skips Forget Quality and says
why. Both go through finetune, unlearn, eval, attack, report and audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NAMES = ["Ana Brin", "Bo Quor", "Cai Dell", "Dov Enso", "Eli Farr", "Fay Gorn", "Gus Hale",
         "Hal Ivo"]
COLOURS = ["red", "blue", "green", "gray"]
TINY = [
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320", "finetune.max_steps=60",
    "finetune.learning_rate=0.01", "unlearn.methods=[grad_ascent]", "unlearn.train.max_steps=4",
    "attack.attacks=[relearning,quantization]", "attack.options.relearning.steps=[0,2]",
    "attack.probe.max_new_tokens=8",
]


def _document(name: str, i: int) -> str:
    return (f"{name} was born in the town of Vel {i} and bakes rye bread on day {i * 3}. "
            f"{name} likes the colour {COLOURS[i % 4]} and keeps {i + 1} cats at home.")


def _write(folder: Path, kind: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)

    def rows(names: list[str], first: int) -> list[dict[str, str]]:
        if kind == "text":
            return [{"text": _document(n, i)} for i, n in enumerate(names, first)]
        return [{"question": f"Where was {n} born?", "answer": f"In Vel {i}."}
                for i, n in enumerate(names, first)]

    paths = []
    for split, names, first in (("forget", NAMES[:2], 0), ("retain", NAMES[2:6], 2),
                                ("holdout", NAMES[6:], 6)):
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows(names, first)))
        paths.append(f"task.{split}_path={path}")
    return ["task.source=jsonl", *paths]


def _invoke(*args: str) -> str:
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _through_the_cli(tmp_path: Path, kind: str) -> tuple[Path, str]:
    run = tmp_path / "run"
    args = [*_write(tmp_path / "data", kind), *TINY,
            "evaluation.options.muse.verbmem_max_new_tokens=16",
            "evaluation.options.muse.excerpt_prompt_tokens=8"][: None if kind == "text" else -2]
    for command in (["finetune"], ["unlearn"], ["eval", "run"], ["attack"]):
        _invoke(*command, "demo", "-o", str(run), *args)
    _invoke("report", str(run))
    return run, _invoke("audit", str(run))


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    return _through_the_cli(tmp_path_factory.mktemp("text"), "text")


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    return _through_the_cli(tmp_path_factory.mktemp("qa"), "qa")


def test_plain_text_documents_get_verbmem_mia_and_memorisation(text_run):
    run, audit = text_run
    for model in ("oracle", "target", "unlearned/grad_ascent"):
        assert sorted(p.name for p in (run / "eval" / model).glob("*.json")) == [
            "memorization.json", "mia.json", "muse.json"], model
    stages = json.loads((run / "run.json").read_text())["stages"]
    summary = stages["eval_unlearned/grad_ascent"]["summary"]
    # VerbMem on excerpts of the forget documents, under MUSE's split name
    assert 0.0 <= summary["muse/verbmem_forget/verbmem"] <= 100.0
    muse = json.loads((run / "eval" / "target" / "muse.json").read_text())
    verbmem = muse["metrics"]["verbmem_forget/verbmem"]
    assert verbmem["details"]["items"].startswith("excerpts of the forget documents")
    assert len(verbmem["per_item"]) == 2  # one excerpt per forget document
    # PrivLeak (forget vs holdout) against the oracle, and the retain-side utility
    assert -100.0 <= summary["muse/privleak_forget/privleak"] <= 100.0
    assert "memorization/retain/exact_memorization" in summary
    # the attacks ran on the text forget set, against the oracle under the same attack
    for attack in ("relearning", "quantization"):
        result = json.loads((run / "attacks" / "unlearned" / "grad_ascent"
                             / f"{attack}.json").read_text())
        assert result["attacked"] is not None and "oracle_attacked" in result
    # the report places the method on forgetting (VerbMem, MIA) against utility (retain)
    report = json.loads((run / "report" / "report.json").read_text())
    used = report["axes"]["used"]["unlearned/grad_ascent"]
    assert used["forgetting"].startswith("close(muse/verbmem_forget/verbmem")
    assert used["utility"] == "kept(memorization/retain/exact_memorization)"
    # with samples: the continuations of the forget excerpts
    sample = report["samples"]["unlearned/grad_ascent"][0]
    assert sample.keys() == {"prompt", "reference", "generation"}
    assert "evaluation (memorization, mia, muse)" in audit and "VerbMem f" in audit
    # the suite the data could not have is recorded as not run, with the reason
    assert "plain text" in stages["eval_target"]["left_out"]["tofu"]
    assert "not run: tofu: the forget set is plain text" in audit


def test_questions_without_tofu_fields_get_tofu_with_forget_quality_skipped(qa_run):
    run, audit = qa_run
    assert {"memorization.json", "mia.json", "tofu.json"} <= {
        p.name for p in (run / "eval" / "target").glob("*.json")}
    assert not (run / "eval" / "target" / "muse.json").exists()
    summary = json.loads((run / "run.json").read_text())["stages"][
        "eval_unlearned/grad_ascent"]["summary"]
    assert {"tofu/forget/prob", "tofu/forget/rouge", "mia/forget/mia_min_k"} <= set(summary)
    assert "tofu/forget_quality" not in summary
    assert "forget_quality skipped" in audit.replace("Forget Quality", "forget_quality")
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["axes"]["used"]["unlearned/grad_ascent"]["forgetting"].startswith(
        "close(tofu/forget/prob")
    for attack in ("relearning", "quantization"):
        assert (run / "attacks" / "unlearned" / "grad_ascent" / f"{attack}.json").is_file()


def test_suites_follow_the_data_and_a_recipe_naming_suites_keeps_them(tmp_path):
    from obliviate.llm.recipe import LLMRecipe
    from obliviate.llm.task import build_task

    def plan(kind: str, holdout: bool = True, **evaluation):
        keys = dict(a.split("=", 1) for a in _write(tmp_path / kind, kind)[1:])
        task = {"source": "jsonl", **{k.removeprefix("task."): v for k, v in keys.items()}}
        if not holdout:
            task.pop("holdout_path")
        recipe = LLMRecipe.model_validate({"task": task, "evaluation": evaluation})
        cfg, left_out = recipe.evaluation.for_task(recipe.task.bench, build_task(recipe.task))
        return cfg.suites, cfg.options, left_out

    suites, options, left_out = plan("text", options={"tofu": {"generate": False}})
    assert suites == ["muse", "mia", "memorization"] and set(left_out) == {"tofu"}
    assert options == {"memorization": {"splits": ["forget", "retain"]}}  # tofu's set aside
    suites, _, left_out = plan("qa", holdout=False)
    assert suites == ["tofu", "memorization"] and "holdout" in left_out["mia"]
    assert plan("text", suites=["tofu"])[0] == ["tofu"]  # named suites are the recipe's
