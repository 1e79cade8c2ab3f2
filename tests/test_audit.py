"""The audit record: run.json holds data hashes, weight hashes, config, versions, timestamps and
the evaluation; ``obliviate audit`` summarises it for a reviewer and re-checks the weights."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from obliviate.cli.audit import audit
from obliviate.cli.main import app
from obliviate.core.io import sha256_dir

TINY = [
    "task.synthetic.num_people=5", "task.synthetic.facts_per_person=2",
    "task.synthetic.forget_people=1", "task.synthetic.holdout_people=1",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320",
    "finetune.max_steps=4", "unlearn.train.max_steps=2", "unlearn.methods=[npo,guardrail]",
    "evaluation.suites=[tofu,mia]", "evaluation.options={tofu: {max_new_tokens: 4}}",
]


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


def run_audit(*args: str):
    audit_app = typer.Typer()  # `audit` is a plain command function; the CLI registers it
    audit_app.command()(audit)
    return CliRunner().invoke(audit_app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("audit") / "run"
    for command in (["finetune"], ["unlearn"], ["eval", "run"],
                    ["attack", "-a", "quantization", "-m", "unlearned/npo"]):
        run_cli(*command, "demo", "-o", str(run), *TINY)
    return run


def weights(path: Path) -> str:
    return sha256_dir(path, ("*.safetensors",))


def test_run_record_holds_what_a_reviewer_needs(finished_run):
    record = json.loads((finished_run / "run.json").read_text())
    stages, models = record["stages"], finished_run / "models"
    # the data: what was removed and what was kept, by content hash
    task = record["task"]
    forget = task["splits"][task["roles"]["forget"]]
    assert forget["n"] == 2 and len(forget["sha256"]) == 64
    assert stages["finetune_oracle"]["split"]["sha256"] == \
        task["splits"][task["roles"]["retain"]]["sha256"]
    # every model produced, by the hash of its weights as saved
    assert stages["finetune_target"]["weights_sha256"] == weights(models / "target")
    assert stages["finetune_oracle"]["weights_sha256"] == weights(models / "oracle")
    npo = stages["unlearn_npo"]
    assert npo["weights_sha256"] == weights(models / "unlearned" / "npo")
    assert npo["target_weights_sha256"] == stages["finetune_target"]["weights_sha256"]
    assert npo["data"][forget["name"]]["sha256"] == forget["sha256"]
    assert npo["config"]["beta"] > 0 and npo["train"]["max_steps"] == 2
    assert stages["unlearn_guardrail"]["weights_sha256"] is None  # prompt only
    assert stages["unlearn_guardrail"]["manifest_sha256"]
    # the evaluation that was run, on exactly those weights
    assert stages["eval_unlearned/npo"]["weights_sha256"] == npo["weights_sha256"]
    assert stages["eval_target"]["suites"] == ["tofu", "mia"]
    assert stages["eval_target"]["options"] == {"tofu": {"max_new_tokens": 4}}
    assert stages["attack_unlearned/npo_quantization"]["config"]["bits"]
    # config, versions and timestamps
    assert record["recipe"]["unlearn"]["methods"] == ["npo", "guardrail"]
    last = record["commands"][-1]
    assert last["command"].startswith("obliviate") and last["started"]
    assert last["recipe_sha256"] == hashlib.sha256(
        (finished_run / "recipe.yaml").read_bytes()).hexdigest()
    assert record["environment"]["obliviate"] and record["environment"]["torch"]
    assert record["created"] <= record["updated"]


def test_audit_summarises_what_how_and_how_checked(finished_run):
    record = json.loads((finished_run / "run.json").read_text())
    stages = record["stages"]
    result = run_audit(str(finished_run))
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    forget = record["task"]["splits"][record["task"]["roles"]["forget"]]
    assert f"{forget['name']}: 2 records, sha256 {forget['sha256']}" in text
    for stage in ("finetune_target", "finetune_oracle", "unlearn_npo"):
        assert stages[stage]["weights_sha256"] in text
    assert "npo (" in text and "beta=" in text and "prompt only" in text
    assert "evaluation (mia, tofu)" in text and "unlearned/npo quantization" in text
    assert "ISSUES: none" in text


def test_audit_json_and_verify(finished_run, tmp_path):
    result = run_audit(str(finished_run), "--json", "--verify")
    assert result.exit_code == 0, result.stdout
    info = json.loads(result.stdout)
    assert info["issues"] == [] and all(info["verified"].values())
    assert set(info["verified"]) == {"target", "oracle", "unlearned/npo", "unlearned/guardrail"}
    assert info["removed"]["forget"]["n"] == 2
    assert info["models"]["unlearned/npo"]["method"] == "npo"
    assert info["evaluation"]["unlearned/npo"]["summary"]["tofu/forget/prob"] >= 0
    assert info["attacks"]["unlearned/npo"]["quantization"]["metric"]
    assert info["versions"]["obliviate"]

    # weights changed after the run: --verify says which model and exits 1
    tampered = tmp_path / "run"
    shutil.copytree(finished_run, tampered)
    path = tampered / "models" / "unlearned" / "npo" / "model.safetensors"
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(path), metadata={"format": "pt"})
    result = run_audit(str(tampered), "--verify")
    assert result.exit_code == 1
    assert "unlearned/npo: weights on disk differ from the recorded SHA-256" in result.stdout


def test_audit_flags_what_a_reviewer_must_see(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "run.json").read_text())
    stages = record["stages"]
    stages["finetune_oracle"]["split"]["sha256"] = "0" * 64
    stages["eval_unlearned/npo"]["weights_sha256"] = "1" * 64
    stages["unlearn_kl"] = {"status": "failed", "method": "kl", "error": "loss diverged"}
    (run / "run.json").write_text(json.dumps(record))
    issues = json.loads(run_audit(str(run), "--json").stdout)["issues"]
    assert "the oracle was not trained on exactly the retain set" in issues
    assert "the evaluation of unlearned/npo used other weights than the recorded model" in issues
    assert "stage unlearn_kl is failed: loss diverged" in issues


def test_audit_of_a_folder_that_is_not_a_run(tmp_path):
    result = run_audit(str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {tmp_path}: no run.json here (not an obliviate run " \
                                    "directory)"


def test_a_diffusion_run_is_verified_as_an_llm_run(tmp_path, monkeypatch):
    """Target, oracle and judge of a diffusion run carry the same integrity data as an LLM
    run's models; oracle weights changed after training are reported by --verify."""
    monkeypatch.chdir(Path(__file__).resolve().parent / "bad_input")  # its tiny image folder
    run = tmp_path / "run"
    run_cli("finetune", "recipes/diffusion_base.yaml", "-o", str(run))
    stages = json.loads((run / "run.json").read_text())["stages"]
    for role in ("target", "oracle", "judge"):
        produced = stages[f"finetune_{role}"]["produced"]
        assert produced["path"] == f"models/{role}" and "config.json" in produced["files"]
        assert stages[f"finetune_{role}"]["weights_sha256"] == produced["weights_sha256"]
    info = json.loads(run_audit(str(run), "--json", "--verify").stdout)
    assert info["verified"] == {"target": True, "oracle": True, "judge": True}

    weights = run / "models" / "oracle" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    result = run_audit(str(run), "--verify")
    assert result.exit_code == 1
    assert "oracle: weights on disk differ from the recorded SHA-256 (models/oracle/" \
           "model.safetensors changed)" in result.stdout
