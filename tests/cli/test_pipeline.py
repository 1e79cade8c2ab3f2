"""The whole LLM pipeline through the CLI on a tiny configuration: demo, then eval and resume."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from obliviate.cli.main import app

TINY = [
    "task.synthetic.num_people=5", "task.synthetic.facts_per_person=2",
    "task.synthetic.forget_people=1", "task.synthetic.holdout_people=1",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320",
    "finetune.max_steps=6", "unlearn.train.max_steps=2", "unlearn.methods=[npo,guardrail]",
    "evaluation.options={tofu: {max_new_tokens: 8}}",
    "attack.models=[unlearned/npo]", "attack.attacks=[quantization,rephrasing]",
    "attack.probe.max_new_tokens=4",
]


def test_demo_runs_every_stage_and_records_it(tmp_path):
    run = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(run), *TINY], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    for name in ("oracle", "target", "unlearned/npo", "unlearned/guardrail"):
        assert name in result.stdout
        for suite in ("tofu", "mia", "memorization"):
            assert (run / "eval" / name / f"{suite}.json").is_file(), (name, suite)
    record = json.loads((run / "run.json").read_text())
    stages = record["stages"]
    assert {"finetune_target", "finetune_oracle", "unlearn_npo", "unlearn_guardrail",
            "eval_target", "eval_oracle", "eval_unlearned/npo"} <= set(stages)
    assert all(stage["status"] == "done" for stage in stages.values())
    target = stages["eval_target"]["summary"]
    assert "tofu/forget_quality" in target and "mia/forget/privleak_loss" in target
    assert "tofu/forget_quality" not in stages["eval_oracle"]["summary"]  # the yardstick itself
    session = json.loads((run / "eval" / "target" / "tofu.json").read_text()
                         )["provenance"]["session"]
    # the stage's wall time covers the shared scoring and generation, not only the aggregation
    assert stages["eval_target"]["seconds"] >= \
        session["scoring_seconds"] + session["generation_seconds"] > 0
    for attack in ("quantization", "rephrasing"):
        assert stages[f"attack_unlearned/npo_{attack}"]["oracle_attacked"] is not None
        assert (run / "attacks" / "unlearned" / "npo" / f"{attack}.json").is_file()
    assert record["environment"]["torch"] and record["task"]["splits"]["synthetic_forget"]["n"] == 2

    # the scorer reads the TOFU-format logs the evaluation wrote
    score = CliRunner().invoke(app, ["eval", "score",
                                     str(run / "eval" / "target" / "eval_log_aggregated.json"),
                                     "--json"], catch_exceptions=False)
    assert score.exit_code != 0 and "real_author" in score.stderr  # synthetic: no real authors

    # running again resumes: every stage is already done, nothing is recomputed
    before = {k: v["updated"] for k, v in stages.items()}
    again = CliRunner().invoke(app, ["demo", "-o", str(run), *TINY], catch_exceptions=False)
    assert again.exit_code == 0
    after = json.loads((run / "run.json").read_text())["stages"]
    assert {k: v["updated"] for k, v in after.items()} == before


def test_same_seed_gives_identical_metrics(tmp_path):
    """Determinism: the same recipe and seed on the same CPU give bit-identical metrics."""
    summaries = []
    for name in ("a", "b"):
        run = tmp_path / name
        result = CliRunner().invoke(app, ["demo", "-o", str(run), *TINY,
                                          "unlearn.methods=[grad_diff]",
                                          "attack.models=[unlearned/grad_diff]"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        stages = json.loads((run / "run.json").read_text())["stages"]
        summaries.append({k: v["summary"] for k, v in stages.items() if k.startswith("eval_")})
    assert summaries[0] == summaries[1]
    assert set(summaries[0]) == {"eval_target", "eval_oracle", "eval_unlearned/grad_diff"}
