"""Deletion requests over time (MUSE's sustainability): 3 requests on a tiny model, each one
forgotten and the earlier ones kept forgotten, an oracle and hashes per request, and a kill -9
in the middle of request 2 that resumes to identical weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from obliviate.core.recipe import RequestsConfig
from obliviate.core.requests import evaluation_task, request_parts, request_task, split_requests
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.data.records import QARecord

TINY = [
    "task.synthetic.num_people=6", "task.synthetic.facts_per_person=2",
    "task.synthetic.forget_people=3", "task.synthetic.holdout_people=1",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320",
    "finetune.max_steps=120", "finetune.batch_size=4", "finetune.learning_rate=0.01",
    "evaluation.suites=[tofu]", "evaluation.options.tofu.generate=false",
]
REQUESTS = ["-m", "grad_ascent", "unlearn.requests.count=3", "unlearn.train.max_steps=40",
            "unlearn.train.batch_size=1", "unlearn.train.learning_rate=0.002",
            "unlearn.train.checkpoint_every=5"]


def _rec(q: str, entity: str | None = None) -> QARecord:
    return QARecord(q, f"answer to {q}", entity=entity)


def test_requests_keep_entities_whole_and_oracles_hold_pending_data():
    forget = [_rec("a1", "A"), _rec("a2", "A"), _rec("b1", "B"), _rec("c1", "C"), _rec("d1", "D")]
    retain = [_rec("r1", "R")]
    task = UnlearningTask("t", "llm", DataSplit("forget", forget), DataSplit("retain", retain),
                          eval_splits={"qa_forget": DataSplit("qa", [_rec("qa", "B"),
                                                                     _rec("qc", "C")]),
                                       "holdout": DataSplit("h", [_rec("h1", "H")])})
    assert [[r.question for r in p] for p in split_requests(forget, 3)] == [
        ["a1", "a2", "b1"], ["c1"], ["d1"]]
    parts = request_parts(task, RequestsConfig(count=3))
    second = request_task(task, parts, 2)
    assert [r.question for r in second.forget] == ["c1"]
    assert [r.question for r in second.retain] == ["r1", "d1"]  # retain + not yet requested
    assert [r.question for r in request_task(task, parts, 3).retain] == ["r1"]
    after = evaluation_task(task, parts, 1)
    assert [r.question for r in after.forget] == ["a1", "a2", "b1"]
    assert [r.question for r in after.eval_splits["qa_forget"]] == ["qa"]  # cut to A and B
    assert "holdout" in after.eval_splits
    assert [r.question for r in evaluation_task(task, parts, 2).forget][-1] == "c1"
    with pytest.raises(ValueError, match="exactly one"):
        RequestsConfig(count=2, splits=["x"])
    with pytest.raises(Exception, match="only 4 entit"):
        split_requests(forget, 5)


def invoke(*args: str) -> None:
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _nll(model_dir: Path, records) -> float:
    from obliviate.llm.artifacts import load_model_for_eval
    from obliviate.llm.evaluation.scorer import AnswerScorer
    from obliviate.llm.models import ModelConfig

    model, tok, fmt = load_model_for_eval(model_dir, ModelConfig(name_or_path="tiny"))
    scores = AnswerScorer(model, tok, fmt).score(list(records))
    return sum(row[0].mean_nll for row in scores) / len(scores)


def _weights(run: Path, i: int) -> dict:
    return load_file(str(run / "requests" / f"r{i}" / "models" / "unlearned" / "grad_ascent"
                         / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("requests")
    base = root / "base"
    invoke("finetune", "demo", "--role", "target", *TINY, "-o", str(base))
    reference, killed = root / "reference", root / "killed"
    shutil.copytree(base, reference)
    shutil.copytree(base, killed)
    invoke("unlearn", "demo", *TINY, *REQUESTS, "-o", str(reference))
    return root, reference, killed


def test_three_requests_each_forgotten_and_earlier_ones_stay_forgotten(runs):
    from obliviate.llm.recipe import LLMRecipe
    from obliviate.llm.task import build_task

    _, run, _ = runs
    recipe = LLMRecipe.model_validate({"task": {"synthetic": {
        "num_people": 6, "facts_per_person": 2, "forget_people": 3, "holdout_people": 1}}})
    task = build_task(recipe.task)
    parts = request_parts(task, RequestsConfig(count=3))
    before = [_nll(run / "models" / "target", p.records) for p in parts]
    for i in (1, 2, 3):
        model = run / "requests" / f"r{i}" / "models" / "unlearned" / "grad_ascent"
        after = [_nll(model, p.records) for p in parts]
        for j in range(i):  # request j+1 was made by now: its answers are no longer likely
            assert after[j] > before[j] + 1.0, (i, j, before, after)
        record = json.loads((run / "requests" / f"r{i}" / "run.json").read_text())["stages"]
        assert record["unlearn_grad_ascent"]["weights_sha256"]
        assert record["finetune_oracle"]["status"] == "done"  # this request's oracle
        assert record["unlearn_grad_ascent"]["target"].endswith(
            "models/target" if i == 1 else f"r{i - 1}/models/unlearned/grad_ascent")
    summary = json.loads((run / "requests" / "requests.json").read_text())
    assert [s["request"] for s in summary["after"]] == [1, 2, 3]
    assert {"oracle", "unlearned/grad_ascent"} <= set(summary["after"][2]["models"])
    assert "tofu/forget/prob" in summary["after"][0]["models"]["oracle"]
    assert (run / "requests" / "requests.png").is_file()


def test_kill_during_request_2_resumes_to_identical_results(runs):
    from tests.test_crash_resume import kill_during

    root, reference, killed = runs
    args = ["unlearn", "demo", *TINY, *REQUESTS, "-o", str(killed)]
    ckpt = killed / "requests" / "r2" / "models" / "unlearned" / "grad_ascent" / "checkpoints"
    step = kill_during(args, ckpt, root / "killed.log", timeout=300)
    assert 0 < step < 40
    assert not (killed / "requests" / "requests.json").exists()
    invoke(*args)
    stages = json.loads((killed / "requests" / "r2" / "run.json").read_text())["stages"]
    assert stages["unlearn_grad_ascent"]["resumed_from"] >= step
    for i in (1, 2, 3):
        a, b = _weights(reference, i), _weights(killed, i)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), i
    ref = json.loads((reference / "requests" / "requests.json").read_text())["after"]
    got = json.loads((killed / "requests" / "requests.json").read_text())["after"]
    assert [s["models"] for s in got] == [s["models"] for s in ref]


def test_scaling_steps_grow_the_forget_set_and_shrink_the_oracles_data():
    from obliviate.core.recipe import ScalingConfig
    from obliviate.core.requests import scaling_steps

    forget = [_rec("a1", "A"), _rec("a2", "A"), _rec("b1", "B"), _rec("c1", "C"), _rec("d1", "D")]
    task = UnlearningTask("t", "llm", DataSplit("forget", forget),
                          DataSplit("retain", [_rec("r1", "R")]))
    steps = scaling_steps(task, ScalingConfig(sizes=[0.25, 2, 1.0]))
    assert [label for label, _, _ in steps] == ["n1", "n2", "n4"]
    assert [len(t.forget) for _, t, _ in steps] == [2, 3, 5]
    assert [len(t.retain) for _, t, _ in steps] == [4, 3, 1]  # retain + what stays
    with pytest.raises(Exception, match="gives 9"):
        scaling_steps(task, ScalingConfig(sizes=[9]))


def test_scaling_sweep_on_a_tiny_model(runs):
    root, _, _ = runs
    run = root / "scaling_run"
    shutil.copytree(root / "base", run)
    invoke("unlearn", "demo", *TINY, "-m", "grad_ascent", "unlearn.scaling.sizes=[0.34,1.0]",
           "unlearn.train.max_steps=20", "unlearn.train.batch_size=1",
           "unlearn.train.learning_rate=0.002", "-o", str(run))
    summary = json.loads((run / "scaling" / "scaling.json").read_text())
    assert [s["label"] for s in summary["after"]] == ["n1", "n3"]
    assert summary["after"][0]["forget_size"] < summary["after"][1]["forget_size"]
    for step in summary["after"]:
        models = step["models"]
        assert {"oracle", "unlearned/grad_ascent"} <= set(models)
        # the unlearned model's forget likelihood falls below the target's on its own subset
        assert models["unlearned/grad_ascent"]["tofu/forget/prob"] < 0.5
        stages = json.loads((run / step["run"] / "run.json").read_text())["stages"]
        assert stages["unlearn_grad_ascent"]["target"].endswith("models/target")
    assert (run / "scaling" / "scaling.png").is_file()


def test_requests_from_files(tmp_path):
    """unlearn.requests.files: one JSONL file per request, read by the LLM pipeline's loader."""
    from obliviate.llm import pipeline

    for i in (1, 2):
        (tmp_path / f"r{i}.jsonl").write_text(json.dumps({"text": f"document {i}"}) + "\n")
    task = UnlearningTask("t", "llm", DataSplit("forget", [QARecord("", "document 1"),
                                                           QARecord("", "document 2")]),
                          DataSplit("retain", [_rec("r1")]))
    config = RequestsConfig(files=[str(tmp_path / "r1.jsonl"), str(tmp_path / "r2.jsonl")])
    parts = request_parts(task, config, pipeline.load_request_file)
    assert [[r.answer for r in p] for p in parts] == [["document 1"], ["document 2"]]
    assert [r.answer for r in request_task(task, parts, 1).retain] == [
        "answer to r1", "document 2"]
    with pytest.raises(Exception, match="cannot read request files"):
        request_parts(task, config)


def test_report_shows_the_requests_plot_and_holds_the_series(runs):
    """`obliviate report` on a run with deletion requests: report.json holds each metric's
    series per request (the oracles' curve included), the HTML embeds requests.png."""
    import base64

    root, reference, _ = runs
    run = root / "report_run"
    shutil.copytree(reference, run)
    invoke("eval", "run", "demo", *TINY, "-o", str(run))
    invoke("report", str(run))
    data = json.loads((run / "report" / "report.json").read_text())
    summary = json.loads((run / "requests" / "requests.json").read_text())
    section = data["requests"]["requests"]
    assert section["x"] == [1, 2, 3] and section["plot"] == "requests/requests.png"
    series = section["series"]["tofu/forget/prob"]
    assert set(series) == {"oracle", "unlearned/grad_ascent"}
    assert series["oracle"] == pytest.approx(
        [s["models"]["oracle"]["tofu/forget/prob"] for s in summary["after"]])
    html = (run / "report" / "report.html").read_text()
    png = base64.b64encode((run / "requests" / "requests.png").read_bytes()).decode()
    assert 'alt="requests/requests.png"' in html and png in html
    assert "scaling" not in data["requests"]


def test_scaling_section_reads_sizes_and_leaves_gaps_empty(tmp_path):
    from obliviate.core.report_html import requests_html
    from obliviate.core.report_requests import requests_section
    from obliviate.core.requests import plot_requests

    summary = {"methods": ["npo"], "oracles": True, "after": [
        {"step": 1, "label": "n1", "forget_size": 2,
         "models": {"oracle": {"m": 0.5}, "unlearned/npo": {"m": 0.25}}},
        {"step": 2, "label": "n4", "forget_size": 8,
         "models": {"oracle": {"m": 0.75}, "unlearned/npo": {}}}]}
    (tmp_path / "scaling").mkdir()
    (tmp_path / "scaling" / "scaling.json").write_text(json.dumps(summary))
    plot_requests(summary, tmp_path / "scaling" / "scaling.png", x=[2, 8])
    section = requests_section(tmp_path)
    assert section["scaling"]["x"] == [2, 8]
    assert section["scaling"]["series"] == {"m": {"oracle": [0.5, 0.75],
                                                  "unlearned/npo": [0.25, None]}}
    html = requests_html(section, tmp_path, ["m"])
    assert 'alt="scaling/scaling.png"' in html and "forget-set size 8" in html
    assert requests_section(tmp_path / "nothing") == {}
