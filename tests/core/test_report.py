"""The HTML/JSON report and leaderboard, from hand-written run directories of both modalities,
rendered in headless Chromium."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.core.errors import ConfigError, DataError
from obliviate.core.report import write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file()
                                        else None)


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def summary(forget_prob: float, retain: float, **extra) -> dict:
    return {"tofu/forget/prob": forget_prob, "tofu/forget/rouge": forget_prob,
            "tofu/retain/prob": retain, "tofu/retain/rouge": retain, **extra}


def cost(seconds: float, steps: int, params: int = 1000) -> dict:
    return {"status": "done", "seconds": seconds, "steps": steps,
            "trainable_parameters": params, "total_parameters": params,
            "peak_memory": {"host_peak_rss_bytes": 2**28}}


def attack(model: str, name: str, plain: float, attacked: float, oracle: float) -> dict:
    return {"status": "done", "model": model, "attack": name, "metric": "rouge", "plain": plain,
            "attacked": attacked, "oracle_plain": oracle, "oracle_attacked": oracle,
            "recovery": attacked - oracle}


@pytest.fixture
def llm_run(tmp_path) -> Path:
    """A run with target, oracle, two unlearned models, attacks and TOFU logs."""
    run = tmp_path / "llm"
    stages = {
        "finetune_target": cost(20.0, 100), "finetune_oracle": cost(10.0, 50),
        "unlearn_npo": {**cost(1.0, 5), "method": "npo", "paper": "Zhang et al. 2024",
                        "config": {"beta": 0.1}, "train": {"learning_rate": 1e-5}},
        "unlearn_grad_ascent": {**cost(0.5, 5, params=10), "method": "grad_ascent",
                                "config": {}, "train": {"learning_rate": 1e-5}},
        "eval_oracle": {"status": "done", "summary": summary(0.05, 0.95)},
        "eval_target": {"status": "done", "summary": summary(0.99, 0.97,
                                                             **{"tofu/forget_quality": 1e-5})},
        "eval_unlearned/npo": {"status": "done", "summary": summary(0.1, 0.8)},
        "eval_unlearned/grad_ascent": {"status": "done", "summary": summary(0.0, 0.1)},
        "attack_unlearned/npo_relearning": attack("unlearned/npo", "relearning", 0.1, 0.6, 0.3),
        "attack_target_relearning": attack("target", "relearning", 0.99, 1.0, 0.3),
    }
    write(run / "run.json", {"name": "handmade", "modality": "llm", "stages": stages,
                             "environment": {"obliviate": "0.1.0", "torch": "2.x"},
                             "commands": [{"command": "obliviate demo"}]})
    write(run / "task.json", {"name": "synthetic", "modality": "llm", "seed": 0,
                              "roles": {"forget": "f", "retain": "r"},
                              "splits": {"f": {"name": "f", "n": 4, "sha256": "ab" * 32},
                                         "r": {"name": "r", "n": 8, "sha256": "cd" * 32}}})
    log = {"eval_log_forget.json": {"generated_text": {
        "0": ["Question: Where was Ada born?\nAnswer:", "I do not know.", "Ada was born in Oslo."],
        "1": ["Question: What does Ada do?\nAnswer:", "She <b>sings</b>.", "Ada is a chemist."]}}}
    for model in ("oracle", "target", "unlearned/npo"):
        write(run / "eval" / model / "eval_log_aggregated.json", log)
    return run


def test_llm_report_holds_every_section(llm_run):
    html_path, json_path = write_report(llm_run)
    data = json.loads(json_path.read_text())
    html = html_path.read_text()
    assert html_path == llm_run / "report" / "report.html"
    assert data["task"]["splits"]["f"]["sha256"] == "ab" * 32 and "ab" * 32 in html
    assert {m["name"] for m in data["models"]} == {"oracle", "target", "unlearned/npo",
                                                   "unlearned/grad_ascent"}
    assert re.search(r'<tr class="oracle"><td class="l">oracle</td>', html)
    # the axes say which keys they used (no model_utility here: the retain prob/ROUGE fallback)
    assert data["axes"]["used"]["unlearned/npo"]["utility"] == \
        "kept(tofu/retain/prob, tofu/retain/rouge)"
    npo = next(m for m in data["models"] if m["name"] == "unlearned/npo")
    # oracle 0.05, target 0.99: forget prob and ROUGE 0.1 are 0.05 of the 0.94 gap away
    assert npo["scores"]["forgetting"] == pytest.approx(1 - 0.05 / 0.94)
    assert npo["scores"]["utility"] == pytest.approx(0.8 / 0.97)  # of the target's 0.97
    # relearning lifts npo 0.3 above the oracle; the target 0.7 above it
    assert npo["scores"]["robustness"] == pytest.approx(1 - 0.3 / 0.7)
    assert npo["scores"]["raw_forgetting"] == pytest.approx(0.9)  # 1 − forget prob
    assert npo["scores"]["raw_robustness"] == pytest.approx(0.4)  # 1 − attacked ROUGE
    oracle = next(m for m in data["models"] if m["name"] == "oracle")
    assert oracle["scores"]["robustness"] == 1.0 and oracle["scores"]["forgetting"] == 1.0
    target = next(m for m in data["models"] if m["name"] == "target")
    assert target["scores"]["robustness"] == 0.0 and target["scores"]["forgetting"] == 0.0
    # grad_ascent forgets as far past the oracle as npo stays short of it: the same score
    ga = next(m for m in data["models"] if m["name"] == "unlearned/grad_ascent")
    assert ga["scores"]["forgetting"] == pytest.approx(npo["scores"]["forgetting"])
    assert data["pareto"]["front"] == ["unlearned/npo"]
    assert data["pareto"]["axes"] == ["forgetting", "utility", "robustness"]
    assert data["reported"]["npo"]["label"] == "unlearned/npo"
    assert data["selection_rule"]["uses_oracle"] is False
    assert data["axes"]["uses_oracle"]["forgetting"] is True
    assert data["axes"]["uses_oracle"]["raw_forgetting"] is False
    assert "reads no oracle-derived metric" in html
    rows = {r["model"]: r for r in data["attacks"]}
    assert rows["unlearned/npo"]["recovery"] == pytest.approx(0.3)
    costs = {r["model"]: r for r in data["costs"]["rows"]}
    assert costs["unlearned/npo"]["seconds_ratio"] == pytest.approx(0.1)  # 1 s / oracle's 10 s
    assert costs["oracle"]["seconds_ratio"] == pytest.approx(1.0)
    assert costs["unlearned/grad_ascent"]["trainable_parameters_ratio"] == pytest.approx(0.01)
    assert data["samples"]["unlearned/npo"][0]["generated"] == "I do not know."
    assert "She &lt;b&gt;sings&lt;/b&gt;." in html  # generations are escaped
    board = (llm_run / "report" / "leaderboard.md").read_text()
    assert board.index("## Verdict") < board.index("| 1 | npo |") < board.index(
        "| – | grad_ascent |")
    assert "| – | oracle |" in board and "max mean raw_utility" in board
    assert (llm_run / "report" / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_an_unattacked_model_is_never_ranked(llm_run):
    """grad_ascent matches the oracle exactly on every evaluation metric, but nothing attacked
    it: it is listed, unranked, with the reason, below the attacked npo."""
    record = json.loads((llm_run / "run.json").read_text())
    record["stages"]["eval_unlearned/grad_ascent"]["summary"] = summary(0.05, 0.95)
    write(llm_run / "run.json", record)
    data = json.loads(write_report(llm_run)[1].read_text())
    ranking = {e["method"]: e for e in data["ranking"]}
    assert ranking["grad_ascent"]["mean"]["forgetting"] == 1.0
    assert ranking["grad_ascent"]["rank"] is None
    assert ranking["grad_ascent"]["reason"].startswith("not attacked")
    assert ranking["npo"]["rank"] == 1
    assert [e["method"] for e in data["ranking"]] == ["npo", "grad_ascent"]
    unranked = next(v for v in data["verdict"] if v["kind"] == "unranked")
    assert "grad_ascent (not attacked" in unranked["text"]
    closest = next(v for v in data["verdict"] if v["kind"] == "closest")
    assert closest["text"].startswith("npo comes closest")
    board = (llm_run / "report" / "leaderboard.md").read_text()
    assert "| – | grad_ascent |" in board and "unranked: not attacked" in board
    assert "| 1 | grad_ascent |" not in board


def demo_like_run(tmp_path) -> Path:
    """Evaluation and attack numbers shaped like the demo's (a 0.8M-parameter Llama trained on
    24 synthetic people): IdkNLL answers "I don't know" (ROUGE below the oracle's) while the
    likelihood of the true answers and the MIA AUC stay near the target's; the guardrail
    changes no weights; NPO forgets honestly."""
    def s(prob, rouge, auc, truth, extraction, retain):
        return {"tofu/forget/prob": prob, "tofu/forget/rouge": rouge,
                "tofu/forget/truth_ratio": truth, "mia/forget/mia_min_k": auc,
                "memorization/forget/extraction_strength": extraction,
                "tofu/retain/prob": retain, "tofu/retain/rouge": retain}

    def attacked(model, value):
        return attack(model, "relearning", 0.1, value, 0.25)

    stages = {
        "eval_oracle": {"status": "done", "summary": s(0.04, 0.46, 0.53, 0.48, 0.21, 0.99)},
        "eval_target": {"status": "done", "summary": s(0.99, 1.0, 1.0, 0.31, 1.0, 0.99)},
        "unlearn_idk_nll": {**cost(1.0, 5), "method": "idk_nll", "weights_sha256": "ab"},
        "unlearn_npo": {**cost(1.0, 5), "method": "npo", "weights_sha256": "cd"},
        "unlearn_guardrail": {**cost(0.0, 0), "method": "guardrail", "weights_sha256": None},
        "eval_unlearned/idk_nll": {"status": "done",
                                   "summary": s(0.39, 0.02, 0.99, 0.32, 0.51, 0.82)},
        "eval_unlearned/npo": {"status": "done", "summary": s(0.05, 0.45, 0.6, 0.5, 0.15, 0.9)},
        "eval_unlearned/guardrail": {"status": "done",
                                     "summary": s(0.42, 0.42, 1.0, 0.45, 0.29, 0.41)},
        "attack_target_relearning": attacked("target", 0.99),
        "attack_unlearned/idk_nll_relearning": attacked("unlearned/idk_nll", 0.71),
        "attack_unlearned/npo_relearning": attacked("unlearned/npo", 0.3),
        "attack_unlearned/guardrail_relearning": attacked("unlearned/guardrail", 0.4)}
    run = tmp_path / "demo_like"
    write(run / "run.json", {"name": "demo-like", "modality": "llm", "stages": stages})
    return run


def test_verdict_names_output_suppression(tmp_path):
    run = demo_like_run(tmp_path)
    data = json.loads(write_report(run)[1].read_text())
    kinds = {v["kind"]: v for v in data["verdict"]}
    assert list(kinds)[0] == "closest" and kinds["closest"]["text"].startswith("npo comes")
    suppress = kinds["suppresses"]
    assert "idk_nll: its forget-set answer ROUGE is at or past the oracle's (0.02 vs 0.46)" \
        in suppress["text"]
    assert "its forget-set Min-K% MIA AUC stays near the target's (0.99; oracle 0.53, target " \
        "1.00)" in suppress["text"]
    assert "relearning brings the probe back to 0.71" in suppress["text"]
    assert "guardrail (it changes no weights)" in suppress["text"]
    assert "npo" not in suppress["text"]
    assert {e["section"] for e in suppress["evidence"]} == {"metrics", "attacks"}
    ranking = {e["method"]: e for e in data["ranking"]}
    assert ranking["guardrail"]["changes_weights"] is False and ranking["guardrail"]["rank"]
    assert ranking["npo"]["rank"] == 1
    board = (run / "report" / "leaderboard.md").read_text()
    assert "output only: changes no weights" in board
    assert "([metrics](report.html#metrics)) ([attacks](report.html#attacks))" in board
    html = (run / "report" / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="ranking"') < html.index('id="task"')
    assert '<a href="#attacks">[Attacks]</a>' in html
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.stderr
    assert "idk_nll: its forget-set answer ROUGE" in result.stdout


def test_ranking_over_three_seeds(llm_run):
    """Sweep cells of one configuration over seeds 0-2: the ranking shows mean ± sample std."""
    forget = {0: 0.05, 1: 0.10, 2: 0.15}
    for seed, prob in forget.items():
        write(llm_run / "sweep" / f"npo-s{seed}" / "done", {
            "cell_id": f"npo-s{seed}", "config_id": "npo-beta", "method": "npo",
            "params": {"unlearn.method_args.npo.beta": 0.1}, "seed": seed, "status": "ran",
            "metrics": {**summary(prob, 0.9), "attack/relearning/rouge/recovery": 0.0}})
    data = json.loads(write_report(llm_run)[1].read_text())
    npo = next(e for e in data["ranking"] if e["method"] == "npo")
    assert npo["config_id"] == "npo-beta" and npo["seeds"] == 3  # beats the root npo row
    # forget prob and ROUGE 0.05, 0.10, 0.15 against oracle 0.05, target 0.99 (gap 0.94)
    scores = [1 - abs(p - 0.05) / 0.94 for p in forget.values()]
    assert npo["mean"]["forgetting"] == pytest.approx(sum(scores) / 3)
    assert npo["std"]["forgetting"] == pytest.approx(0.05 / 0.94)
    board = (llm_run / "report" / "leaderboard.md").read_text()
    assert "Mean ± sample std over" in board and "± 0.053" in board


def test_demo_seeds_join_the_run_own_model(llm_run):
    """The demo's extra seeds are sweep cells with nothing swept: the run's own unlearned model
    is their configuration's first seed (seed 0), so the ranking counts 3 seeds."""
    for seed, prob in ((1, 0.2), (2, 0.3)):
        write(llm_run / "sweep" / f"npo-s{seed}" / "done", {
            "cell_id": f"npo-s{seed}", "config_id": "npo-plain", "method": "npo", "params": {},
            "seed": seed, "status": "ran",
            "metrics": {**summary(prob, 0.8), "attack/relearning/rouge/recovery": 0.3}})
    data = json.loads(write_report(llm_run)[1].read_text())
    npo = next(e for e in data["ranking"] if e["method"] == "npo")
    assert npo["seeds"] == 3 and npo["members"][0] == "unlearned/npo"
    config = next(c for c in data["pareto"]["configurations"] if c["config_id"] == "npo-plain")
    assert config["seeds"] == [0, 1, 2]
    # forget prob 0.1, 0.2, 0.3 against oracle 0.05 and target 0.99
    assert npo["mean"]["forgetting"] == pytest.approx(1 - 0.15 / 0.94)


def test_html_is_self_contained(llm_run):
    html = write_report(llm_run)[0].read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "http://" not in html and "https://" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)


def test_rule_that_peeks_at_the_oracle_must_be_asked_for(llm_run):
    data = json.loads(write_report(llm_run, rule="proxy:-cost/seconds")[1].read_text())
    assert data["reported"]["npo"]["note"] == "proxy"  # cost is a proxy the rules can read
    assert "min mean of 'cost/seconds' (no oracle metrics used)" in data["selection_rule"][
        "description"]
    with pytest.raises(ConfigError, match="oracle"):
        write_report(llm_run, rule="proxy:tofu/forget_quality")
    result = CliRunner().invoke(app, ["report", str(llm_run), "--rule", "oracle"])
    assert result.exit_code != 0 and "allow_oracle" in result.stderr
    result = CliRunner().invoke(app, ["report", str(llm_run), "--rule", "oracle",
                                      "--allow-oracle", "--utility", "tofu/retain/prob"])
    assert result.exit_code == 0, result.stderr
    data = json.loads((llm_run / "report" / "report.json").read_text())
    assert data["selection_rule"]["uses_oracle"] is True
    assert data["axes"]["used"]["unlearned/npo"]["utility"] == "tofu/retain/prob"
    assert "It reads oracle-derived information" in (llm_run / "report" / "report.html"
                                                     ).read_text()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(DataError, match="not a run directory"):
        write_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "not a run directory" in result.stderr


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_diffusion_report_embeds_image_grids(tmp_path):
    run = tmp_path / "diffusion"
    stages = {"eval_oracle": {"status": "done", "summary": {
                  "classify/forget/unlearning_accuracy": 0.98,
                  "classify/retain/retain_accuracy": 0.9}},
              "eval_target": {"status": "done", "summary": {
                  "classify/forget/unlearning_accuracy": 0.1,
                  "classify/retain/retain_accuracy": 0.95}},
              "eval_unlearned/esd": {"status": "done", "summary": {
                  "classify/forget/unlearning_accuracy": 0.9,
                  "classify/retain/retain_accuracy": 0.85, "fid/all/fid": 30.0}}}
    write(run / "run.json", {"name": "concepts", "modality": "diffusion", "stages": stages})
    write(run / "eval" / "unlearned" / "esd" / "samples.json",
          [{"prompt": "a painting of a dog", "note": "concept removed"}])
    grid = run / "eval" / "unlearned" / "esd" / "grid.png"
    grid.write_bytes(png_bytes((200, 30, 30)))
    html_path, json_path = write_report(run)
    data = json.loads(json_path.read_text())
    esd = next(m for m in data["models"] if m["name"] == "unlearned/esd")
    # UA 0.9: 0.08 of the oracle-to-target gap of 0.88 away; retain 0.85 of the target's 0.95
    assert esd["scores"]["forgetting"] == pytest.approx(1 - 0.08 / 0.88)
    assert esd["scores"]["utility"] == pytest.approx(0.85 / 0.95)
    assert esd["scores"]["raw_forgetting"] == 0.9
    assert data["axes"]["used"]["unlearned/esd"]["forgetting"] == "close(*unlearning_accuracy)"
    assert "not attacked" in data["ranking"][0]["reason"]
    assert data["images"]["unlearned/esd"] == [str(grid)]
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") == 2  # the plot and the grid
    assert "a painting of a dog" in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's `chromium` is not installed "
                    "(apt-get install -y chromium); the screenshot check needs a browser")
def test_report_renders_in_headless_chromium(llm_run, tmp_path):
    import numpy as np
    from PIL import Image

    html_path, _ = write_report(llm_run)
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                    f"--screenshot={shot}", "--window-size=1280,2000",
                    html_path.resolve().as_uri()],
                   check=True, timeout=120, capture_output=True)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (2000, 1280, 3)
    flat = pixels.reshape(-1, 3)
    colours = np.unique(flat, axis=0)
    assert len(colours) > 200  # text, tables, plot markers: not a blank or flat page
    assert pixels.std() > 20
    assert (pixels.mean(axis=2) < 128).mean() > 0.01  # there is dark text on the page
    r, g, b = colours[:, 0], colours[:, 1], colours[:, 2]
    assert ((r > 200) & (g > 150) & (g < 230) & (b < 60)).any()  # the oracle's gold star
    assert ((r > 180) & (g < 60) & (b < 80)).any()  # the target's crimson cross
