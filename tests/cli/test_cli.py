"""The command line: help, the TOFU scorer, finetune, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.cli.main import app

runner = CliRunner()
PUBLISHED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tofu_published_eval"


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_help_lists_every_command():
    result = invoke("--help")
    for command in ("finetune", "unlearn", "eval", "attack", "report", "demo"):
        assert command in result.stdout


def test_eval_score_json_has_the_documented_keys():
    if not PUBLISHED.is_dir():
        pytest.skip(f"published TOFU logs are not present at {PUBLISHED}")
    result = invoke("eval", "score", str(PUBLISHED / "ft_epoch5_lr2e-05_phi_full_wd0.01.json"),
                    "--oracle", str(PUBLISHED / "ft_epoch5_lr2e-05_phi_retain90_wd0.01.json"),
                    "--json")
    data = json.loads(result.stdout)
    splits = ("forget", "retain", "real_authors", "world_facts")
    expected = {f"{s}_{m}" for s in splits for m in ("prob", "rouge", "truth_ratio")}
    assert expected | {"model_utility", "forget_quality"} <= set(data)
    assert data["model_utility"] == pytest.approx(0.5220737132035151, rel=1e-9)


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def jsonl_recipe(tmp_path: Path, forget_rows: list, retain_rows: list) -> str:
    forget = write_jsonl(tmp_path / "forget.jsonl", forget_rows)
    retain = write_jsonl(tmp_path / "retain.jsonl", retain_rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: t\ntask:\n  source: jsonl\n  forget_path: {forget}\n"
                      f"  retain_path: {retain}\nfinetune:\n  max_steps: 2\n  batch_size: 2\n"
                      "model:\n  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, "
                      "intermediate_size: 64}\n")
    return str(recipe)


GOOD = [{"question": "Where was Ana born?", "answer": "In Brin."}]
RETAIN = [{"question": "Where was Bo born?", "answer": "In Quor."},
          {"question": "What does Bo do?", "answer": "Bo is a baker."}]


def test_finetune_end_to_end_on_jsonl(tmp_path):
    recipe = jsonl_recipe(tmp_path, GOOD, RETAIN)
    result = invoke("finetune", recipe, "-o", str(tmp_path / "run"), "finetune.learning_rate=0.01")
    assert result.exit_code == 0, result.stderr
    run = tmp_path / "run"
    assert (run / "models" / "target" / "model.safetensors").is_file()
    assert (run / "models" / "oracle" / "model.safetensors").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["stages"]["finetune_oracle"]["split"]["n"] == 2
    assert record["stages"]["finetune_target"]["split"]["n"] == 3
    task = json.loads((run / "task.json").read_text())
    assert task["splits"]["forget"]["sha256"] and task["splits"]["retain"]["n"] == 2
    assert "learning_rate: 0.01" in (run / "recipe.yaml").read_text()
    again = invoke("finetune", recipe, "-o", str(run))  # finished stages are skipped
    assert again.exit_code == 0 and "target:" in again.stdout


@pytest.mark.parametrize("forget, retain, fragments", [
    ([{"question": "Q?"}], RETAIN, ["forget.jsonl:1", "missing field 'answer'"]),
    ([], RETAIN, ["forget.jsonl", "no records"]),
    (GOOD, GOOD + RETAIN, ["appear in both the forget and the retain set"]),
    ([{"question": "Q?", "answer": ["x"]}], RETAIN, ["field 'answer' must be a string"]),
])
def test_bad_data_is_one_line(tmp_path, forget, retain, fragments):
    recipe = jsonl_recipe(tmp_path, forget, retain)
    assert_one_line_error(invoke("finetune", recipe, "-o", str(tmp_path / "run")), *fragments)
    assert not (tmp_path / "run" / "models").exists()


@pytest.mark.parametrize("args, fragments", [
    (["finetune", "missing.yaml"], ["missing.yaml: recipe file not found"]),
    (["finetune", "demo", "finetune.learning_rate=-1"], ["finetune.learning_rate"]),
    (["finetune", "demo", "finetune.nonsense=3"], ["finetune.nonsense", "Extra inputs"]),
    (["finetune", "demo", "novalue"], ["'novalue' is not of the form key=value"]),
    (["finetune", "demo", "task.source=jsonl"], ["task.forget_path"]),
    (["finetune", "demo", "--role", "teacher"], ["--role must be"]),
    (["eval", "score", "missing_log.json"], ["missing_log.json: file not found"]),
])
def test_bad_arguments_are_one_line(tmp_path, args, fragments):
    assert_one_line_error(invoke(*args, "-o", str(tmp_path / "r"))
                          if args[0] == "finetune" else invoke(*args), *fragments)


def test_not_a_model_path(tmp_path):
    (tmp_path / "empty").mkdir()
    recipe = jsonl_recipe(tmp_path, GOOD, RETAIN)
    result = invoke("finetune", recipe, "-o", str(tmp_path / "run"),
                    f"model.name_or_path={tmp_path / 'empty'}")
    assert_one_line_error(result, "not a model folder")


def test_unlearn_after_finetune_writes_models_and_records(tmp_path):
    recipe = jsonl_recipe(tmp_path, GOOD, RETAIN)
    run = tmp_path / "run"
    assert invoke("finetune", recipe, "-o", str(run), "--role", "target").exit_code == 0
    result = invoke("unlearn", recipe, "-o", str(run), "-m", "npo", "-m", "guardrail",
                    "unlearn.train.max_steps=2", "unlearn.train.batch_size=1",
                    "unlearn.method_args.npo.beta=0.5")
    assert result.exit_code == 0, result.stderr
    npo_dir = run / "models" / "unlearned" / "npo"
    assert (npo_dir / "model.safetensors").is_file()
    manifest = json.loads((npo_dir / "unlearned.json").read_text())
    assert manifest["config"]["beta"] == 0.5 and manifest["changes_weights"]
    guard = json.loads((run / "models" / "unlearned" / "guardrail" / "unlearned.json").read_text())
    assert "Where was Ana born?" in guard["prompt_format"]["system_prompt"]
    stage = json.loads((run / "run.json").read_text())["stages"]["unlearn_npo"]
    assert stage["steps"] == 2 and stage["trainable_parameters"] > 0 and stage["seconds"] > 0
    assert stage["data"]["forget"]["sha256"]

    # every folder the command prints loads with from_pretrained, beside its model card
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    printed = dict(line.split(": ", 1) for line in result.stdout.splitlines()
                   if line.startswith(("npo: ", "guardrail: ")))
    assert printed["npo"].split("  (")[0] == str(npo_dir)
    assert AutoModelForCausalLM.from_pretrained(str(npo_dir)).config.num_hidden_layers == 1
    assert "with the prompt" in printed["guardrail"]  # a prompt-only method: target + prompt
    AutoModelForCausalLM.from_pretrained(printed["guardrail"].split(" with the prompt")[0])
    card = ModelCard.load(npo_dir / "README.md").data.to_dict()["obliviate"]
    assert card["method"] == "npo" and card["config"]["beta"] == 0.5
    assert card["data"]["forget"]["sha256"] == stage["data"]["forget"]["sha256"]


@pytest.mark.parametrize("args, fragments", [
    (["-m", "nonexistent"], ["unknown method 'nonexistent'", "known:"]),
    (["-m", "npo", "unlearn.method_args.npo.beta=0"], ["unlearn.method_args.npo", "beta"]),
    (["-m", "npo", "unlearn.train.learning_rate=-1e-5"], ["unlearn.train.learning_rate"]),
])
def test_bad_unlearn_arguments(tmp_path, args, fragments):
    recipe = jsonl_recipe(tmp_path, GOOD, RETAIN)
    assert_one_line_error(invoke("unlearn", recipe, "-o", str(tmp_path / "run"), *args),
                          *fragments)


def test_unlearn_without_a_target_says_so(tmp_path):
    recipe = jsonl_recipe(tmp_path, GOOD, RETAIN)
    result = invoke("unlearn", recipe, "-o", str(tmp_path / "run"), "-m", "npo")
    assert_one_line_error(result, "obliviate finetune")
