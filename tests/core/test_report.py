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
    # the axes say which keys they used (no model_utility here: the harmonic-mean fallback)
    assert data["axes"]["used"]["unlearned/npo"]["utility"].startswith("hmean(")
    npo = next(m for m in data["models"] if m["name"] == "unlearned/npo")
    assert npo["scores"]["forgetting"] == pytest.approx(0.9)
    assert npo["scores"]["robustness"] == pytest.approx(0.4)  # 1 − attacked ROUGE
    oracle = next(m for m in data["models"] if m["name"] == "oracle")
    assert oracle["scores"]["robustness"] == pytest.approx(0.7)  # from oracle_attacked
    assert data["pareto"]["front"] == ["unlearned/npo", "unlearned/grad_ascent"]
    assert data["pareto"]["axes"] == ["forgetting", "utility", "robustness"]
    assert data["reported"]["npo"]["label"] == "unlearned/npo"
    assert data["selection_rule"]["uses_oracle"] is False
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
    assert board.index("| 1 | npo |") < board.index("| 2 | grad_ascent |")
    assert "| – | oracle |" in board and "max mean utility" in board
    assert (llm_run / "report" / "pareto.png").read_bytes()[:4] == b"\x89PNG"


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
    assert esd["scores"]["forgetting"] == 0.9 and esd["scores"]["utility"] == 0.85
    assert data["axes"]["used"]["unlearned/esd"]["forgetting"] == "*unlearning_accuracy"
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
