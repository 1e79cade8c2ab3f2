"""A run directory that cannot be mixed up, corrupted or silently stale.

- bound to its recipe and data: another recipe on the same ``-o`` is refused, a changed setting
  re-runs the stage it affects (never a silent reuse), ``--force`` re-runs on demand;
- locked: two real processes updating one run lose no record, two commands on one stage are
  refused in one line, commands on different stages both finish;
- integrity: an edited model file is refused before use unless ``--allow-modified`` (recorded),
  a copied run uses its own target, outputs stay inside the run;
- typed: every stage record is validated against its kind's schema.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.core.errors import ObliviateError
from obliviate.core.rundir import RunDir

TINY = [
    "task.synthetic.num_people=5", "task.synthetic.facts_per_person=2",
    "task.synthetic.forget_people=1", "task.synthetic.holdout_people=1",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320",
    "finetune.max_steps=4", "unlearn.train.max_steps=2",
    "evaluation.suites=[tofu]", "evaluation.options={tofu: {max_new_tokens: 4}}",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "TQDM_DISABLE": "1"}


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("rundir") / "run"
    cli("finetune", "demo", "-o", str(run), *TINY)
    return run


@pytest.fixture
def run(finetuned, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finetuned, copy)
    return copy


# -- the newcomer's sequence ----------------------------------------------------------------------
def test_a_second_recipe_on_the_same_output_is_refused(tmp_path):
    data = tmp_path / "mine"
    data.mkdir()
    for role, people in (("forget", ["Ana"]), ("retain", ["Bo", "Cy"])):
        with open(data / f"{role}.jsonl", "w") as out:
            for person in people:
                out.write(json.dumps({"question": f"Where does {person} live?",
                                      "answer": f"{person} lives in Lyon."}) + "\n")
    run = tmp_path / "runs" / "mine"
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"""name: mine
task: {{source: jsonl, forget_path: {data}/forget.jsonl, retain_path: {data}/retain.jsonl}}
model: {{name_or_path: tiny, prompt_style: base, tiny: {{hidden_size: 32, num_layers: 1,
        num_heads: 2, intermediate_size: 64, vocab_size: 320}}}}
finetune: {{max_steps: 2}}
""")
    cli("finetune", str(recipe), "-o", str(run), "--role", "target")
    before = (run / "recipe.yaml").read_bytes(), (run / "task.json").read_bytes()

    refused = cli("unlearn", "demo", "-o", str(run), "-m", "npo", code=2)
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "this run was made with another recipe" in line
    assert "name: mine -> demo" in line and "new --output" in line
    assert ((run / "recipe.yaml").read_bytes(), (run / "task.json").read_bytes()) == before
    assert record(run)["task"]["name"] != "synthetic"


def test_a_changed_hyperparameter_reruns_and_the_same_one_is_reused(run):
    cli("unlearn", "demo", "-o", str(run), "-m", "npo", *TINY)
    first = record(run)["stages"]["unlearn_npo"]
    assert first["config"]["beta"] == 0.1 and first["inputs"]["config"]["beta"] == 0.1

    cli("unlearn", "demo", "-o", str(run), "-m", "npo", *TINY)  # nothing changed: reused
    assert record(run)["stages"]["unlearn_npo"]["updated"] == first["updated"]

    cli("unlearn", "demo", "-o", str(run), "-m", "npo", *TINY, "unlearn.method_args.npo.beta=0.5")
    second = record(run)["stages"]["unlearn_npo"]
    assert second["config"]["beta"] == 0.5 and "config.beta: 0.1 -> 0.5" in second["rerun_reason"]
    assert second["produced"]["weights_sha256"] != first["produced"]["weights_sha256"]

    cli("unlearn", "demo", "-o", str(run), "-m", "npo", *TINY, "unlearn.method_args.npo.beta=0.5",
        "--force")
    assert record(run)["stages"]["unlearn_npo"]["rerun_reason"] == "--force"


def test_a_changed_suite_list_reevaluates(run):
    cli("eval", "run", "demo", "-o", str(run), "-m", "target", *TINY)
    first = record(run)["stages"]["eval_target"]
    assert first["suites"] == ["tofu"]
    cli("eval", "run", "demo", "-o", str(run), "-m", "target", *TINY, "evaluation.suites=[mia]",
        "evaluation.options={}")
    second = record(run)["stages"]["eval_target"]
    assert second["suites"] == ["mia"] and "suites" in second["rerun_reason"]


# -- locks: two real processes ------------------------------------------------------------------
WRITER = """
import sys
from obliviate.core.rundir import RunDir
run = RunDir(sys.argv[1])
for i in range(int(sys.argv[3])):
    run.record_stage(f"eval_{sys.argv[2]}_{i}", status="done", summary={"x": i})
"""


def test_two_processes_writing_the_record_lose_nothing(tmp_path):
    RunDir(tmp_path).create()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, "150"],
                              env=ENV) for name in ("a", "b")]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    stages = record(tmp_path)["stages"]
    assert len(stages) == 300 and all(s["status"] == "done" for s in stages.values())


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "obliviate.cli.main", *args],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=ENV)


def test_two_commands_with_different_data_on_one_run(tmp_path):
    """Two fine-tunes started at once on one run with different data: one runs, the other is
    refused in one line; the record names the data the model was trained on."""
    run = tmp_path / "run"
    procs = [start(["finetune", "demo", "-o", str(run), "--role", "target", *TINY,
                    f"task.synthetic.seed={seed}"], tmp_path / f"{seed}.log") for seed in (1, 2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert sorted(codes) == [0, 2], codes
    loser = (tmp_path / f"{codes.index(2) + 1}.log").read_text().strip().splitlines()
    assert loser[-1].startswith("error: ") and "another recipe" in loser[-1]
    winner = codes.index(0) + 1
    assert record(run)["recipe"]["task"]["synthetic"]["seed"] == winner
    stage = record(run)["stages"]["finetune_target"]
    assert stage["status"] == "done" and stage["inputs"]["data"] == stage["split"]["sha256"]
    assert stage["inputs"]["seed"] == record(run)["recipe"]["seed"]


def test_the_same_stage_twice_is_refused_other_stages_proceed(tmp_path):
    run = tmp_path / "run"
    slow = [*TINY, "finetune.max_steps=300"]
    first = start(["finetune", "demo", "-o", str(run), "--role", "target", *slow],
                  tmp_path / "first.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if (run / "run.json").is_file() and record(run)["stages"].get(
                "finetune_target", {}).get("status") == "running":
            break
        time.sleep(0.1)
    second = cli("finetune", "demo", "-o", str(run), "--role", "target", *slow, code=2)
    assert "stage finetune_target is being run by another command" in second.stderr
    oracle = cli("finetune", "demo", "-o", str(run), "--role", "oracle", *slow)  # another stage
    assert "oracle" in oracle.stdout
    assert first.wait(timeout=300) == 0
    stages = record(run)["stages"]
    assert stages["finetune_target"]["status"] == stages["finetune_oracle"]["status"] == "done"
    assert len(record(run)["commands"]) == 3


# -- integrity ----------------------------------------------------------------------------------
def test_an_edited_config_is_refused_unless_allowed_and_then_recorded(run):
    config = run / "models" / "target" / "config.json"
    data = json.loads(config.read_text())
    data["rms_norm_eps"] = 0.5
    config.write_text(json.dumps(data))
    refused = cli("eval", "run", "demo", "-o", str(run), "-m", "target", *TINY, code=2)
    assert "models/target/config.json changed" in refused.stderr
    assert record(run)["stages"].get("eval_target", {}).get("status") == "failed"

    cli("eval", "run", "demo", "-o", str(run), "-m", "target", *TINY, "--allow-modified")
    stage = record(run)["stages"]["eval_target"]
    assert stage["status"] == "done"
    assert "config.json changed" in stage["modified_models"][0]
    assert record(run)["commands"][-1]["allow_modified"] is True
    audit = cli("audit", str(run), "--verify", code=1)
    assert "target: files on disk differ from the record (models/target/config.json " \
           "changed)" in audit.stdout


def test_a_copied_run_uses_its_own_target(run, tmp_path):
    cli("unlearn", "demo", "-o", str(run), "-m", "guardrail", *TINY)
    manifest = json.loads((run / "models" / "unlearned" / "guardrail" / "unlearned.json")
                          .read_text())
    assert manifest["base_model"] == "models/target"
    moved = tmp_path / "moved"
    shutil.move(str(run), moved)
    cli("eval", "run", "demo", "-o", str(moved), "-m", "unlearned/guardrail", *TINY)
    stage = record(moved)["stages"]["eval_unlearned/guardrail"]
    assert stage["evaluated"]["base"]["path"] == "models/target"


def test_an_outside_model_is_evaluated_into_the_run(run, tmp_path):
    outside = tmp_path / "elsewhere" / "model"
    shutil.copytree(run / "models" / "target", outside)
    before = sorted(p.name for p in outside.iterdir())
    cli("eval", "run", "demo", "-o", str(run), "-m", str(outside), *TINY)
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written beside it
    results = list((run / "eval" / "external").iterdir())
    assert len(results) == 1 and results[0].name.startswith("model-")
    assert (results[0] / "tofu.json").is_file()


def test_model_folders_follow_the_umask(finetuned):
    mask = os.umask(0)
    os.umask(mask)
    for folder in (finetuned / "models" / "target", finetuned / "models" / "tokenizer"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~mask, folder


# -- the typed record ---------------------------------------------------------------------------
def test_a_stage_record_is_validated_against_its_kind(tmp_path):
    run = RunDir(tmp_path).create()
    with pytest.raises(ObliviateError, match="stage unlearn_npo: stepz: Extra inputs"):
        run.record_stage("unlearn_npo", status="done", stepz=3)
    with pytest.raises(ObliviateError, match="stage eval_target: status"):
        run.record_stage("eval_target", status="finished")
    with pytest.raises(ObliviateError, match="unknown stage kind"):
        run.record_stage("polish_target", status="done")
    assert not (tmp_path / "run.json").exists()


def test_numbers_that_cannot_be_trusted_carry_warnings(tmp_path):
    run = RunDir(tmp_path).create()
    run.record_stage("finetune_judge", status="done", holdout_accuracy=0.35)
    out = tmp_path / "eval" / "target"
    out.mkdir(parents=True)
    (out / "muse.json").write_text(json.dumps(
        {"provenance": {"skipped": {"verbmem": "no forget document is long enough"}}}))
    stage = run.record_stage("eval_target", status="done", output=str(out), summary={})
    assert stage["warnings"] == [
        "no oracle evaluation in this run: the comparisons with the oracle (Forget Quality, "
        "PrivLeak, the gaps to the oracle) are missing",
        "the judge's holdout accuracy is 0.35, below 0.8: the accuracies it reports cannot be "
        "trusted",
        "muse: verbmem skipped (no forget document is long enough)"]
    run.record_stage("eval_oracle", status="done", summary={})
    assert run.record_stage("eval_unlearned/npo", status="done", summary={})["warnings"] == [
        "the judge's holdout accuracy is 0.35, below 0.8: the accuracies it reports cannot be "
        "trusted"]


def test_the_eval_table_shows_the_warnings(run):
    result = cli("eval", "run", "demo", "-o", str(run), "-m", "target", *TINY)
    assert "warning: target: no oracle evaluation in this run" in result.stdout
    assert record(run)["stages"]["eval_target"]["warnings"]
