"""What the verbs write when asked to: a model folder that loads with the modality's
``from_pretrained``, its Hugging Face model card (parsed by ``huggingface_hub.ModelCard``), and
TensorBoard / MLflow runs read back with their own readers."""

from __future__ import annotations

import pytest
import torch

import obliviate
from obliviate.llm.models import TinyModelConfig, tiny_llama

TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128)


def rows(facts, split):
    return [r.to_dict() for r in facts[split]]


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_llm_output_dir_loads_with_from_pretrained_beside_its_model_card(facts, tiny_tokenizer,
                                                                         tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "npo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    model = tiny_llama(tiny_tokenizer, TINY)
    result = obliviate.unlearn(model, tiny_tokenizer, forget=rows(facts, "forget"),
                               retain=rows(facts, "retain"), method="npo", max_steps=2,
                               output_dir=out)
    assert result.output_dir == str(out) and (out / "notes.txt").read_text() == "mine"
    assert same_weights(AutoModelForCausalLM.from_pretrained(str(out)), model)
    assert AutoTokenizer.from_pretrained(str(out)).encode("Ana") == tiny_tokenizer.encode("Ana")

    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert "machine-unlearning" in meta["tags"] and meta["library_name"] == "transformers"
    info = meta["obliviate"]
    assert info["method"] == "npo" and info["config"]["beta"] == 0.1
    assert info["data"]["forget"]["sha256"] == result.data["forget"]["sha256"]
    assert info["data"]["retain"]["n"] == len(facts["retain"])
    assert info["cost"]["steps"] == 2 and "## Load it" in card.text

    # with an evaluation next to the oracle's and attack results
    scores = obliviate.evaluate(result, forget=rows(facts, "forget"),
                                retain=rows(facts, "retain"), suites=["tofu"],
                                oracle=tiny_llama(tiny_tokenizer, TINY, seed=1),
                                options={"tofu": {"generate": False}})
    attacked = obliviate.attack(result, forget=rows(facts, "forget"),
                                retain=rows(facts, "retain"), attacks=["quantization"],
                                options={"quantization": {"bits": [4]}},
                                probe={"max_new_tokens": 2})
    result.save_pretrained(out, evaluation=scores, attacks=attacked)
    info = ModelCard.load(out / "README.md").data.to_dict()["obliviate"]
    assert info["metrics"]["tofu/forget/prob"] == pytest.approx(scores["tofu/forget/prob"])
    assert info["oracle"]["tofu/forget/prob"] == pytest.approx(
        scores.oracle["tofu/forget/prob"])
    assert info["attacks"]["quantization"]["attacked"] == pytest.approx(
        attacked["quantization"].attacked)


def test_diffusion_output_dir_loads_with_from_pretrained(tmp_path):
    from huggingface_hub import ModelCard
    from sklearn.datasets import load_digits

    from obliviate.diffusion.models import Denoiser, ModelConfig, build_denoiser

    digits = load_digits()
    data = [{"image": image / 16.0, "label": int(label)}
            for image, label in zip(digits.images[:60], digits.target[:60], strict=True)]
    model = build_denoiser(ModelConfig(channels=[8, 16], cond_dim=8, time_dim=16), 10, 8, 1)
    obliviate.unlearn(model, forget=[r for r in data if r["label"] == 3],
                      retain=[r for r in data if r["label"] != 3], method="grad_ascent",
                      steps=2, batch_size=4, output_dir=tmp_path / "ga")
    assert same_weights(Denoiser.from_pretrained(tmp_path / "ga"), model)
    info = ModelCard.load(tmp_path / "ga" / "README.md").data.to_dict()["obliviate"]
    assert info["modality"] == "diffusion" and info["config"]["steps"] == 2


def test_trackers_tensorboard_and_mlflow_read_back(facts, tiny_tokenizer, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = tiny_llama(tiny_tokenizer, TINY)
    result = obliviate.unlearn(model, tiny_tokenizer, forget=rows(facts, "forget"),
                               retain=rows(facts, "retain"), method="grad_diff", max_steps=4,
                               log_every=2, log_with=["tensorboard", "mlflow"],
                               logging_dir=tmp_path / "logs")
    losses = [(e["step"], e["loss"]) for e in result.history]
    assert [s for s, _ in losses] == [2, 4]

    events = EventAccumulator(str(tmp_path / "logs" / "unlearn-grad_diff"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in logged] == [2, 4]
    assert [v for _, v in logged] == pytest.approx([v for _, v in losses], rel=1e-6)
    assert events.Scalars("cost/steps")[0].value == 4

    client = MlflowClient(tracking_uri=(tmp_path / "logs" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("obliviate")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "unlearn-grad_diff"
    assert run.data.params["method"] == "grad_diff" and run.data.params["train/max_steps"] == "4"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [2, 4]
    assert [m.value for m in history] == pytest.approx([v for _, v in losses], rel=1e-6)

    scores = obliviate.evaluate(model, tiny_tokenizer, forget=rows(facts, "forget"),
                                retain=rows(facts, "retain"), suites=["tofu"],
                                options={"tofu": {"generate": False}}, log_with="tensorboard",
                                logging_dir=tmp_path / "logs")
    events = EventAccumulator(str(tmp_path / "logs" / "evaluate-model"))
    events.Reload()
    assert events.Scalars("tofu/forget/prob")[0].value == pytest.approx(
        scores["tofu/forget/prob"], rel=1e-6)


def test_log_with_names_a_typo_and_needs_a_folder(facts, tiny_tokenizer):
    from obliviate.core.errors import ConfigError

    model = tiny_llama(tiny_tokenizer, TINY)
    kwargs = {"forget": rows(facts, "forget"), "retain": rows(facts, "retain"), "max_steps": 1}
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        obliviate.unlearn(model, tiny_tokenizer, log_with="tensorbaord", logging_dir="x",
                          **kwargs)
    with pytest.raises(ConfigError, match="logging_dir= or output_dir="):
        obliviate.unlearn(model, tiny_tokenizer, log_with="tensorboard", **kwargs)


def test_report_of_a_cli_run_and_its_refreshed_model_card(tmp_path):
    import json

    from huggingface_hub import ModelCard
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    def jsonl(name, items):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in items))
        return tmp_path / name

    def qa(question, answer):  # TOFU rows, with what the truth ratio needs
        return {"question": question, "answer": answer, "paraphrased_answer": answer.lower(),
                "perturbed_answer": [f"Not {answer}", f"Never {answer}"]}

    forget = jsonl("f.jsonl", [qa("Where was Ana born?", "In Brin.")])
    retain = jsonl("r.jsonl", [qa("Where was Bo born?", "In Quor."),
                               qa("What does Bo do?", "Bo bakes.")])
    (tmp_path / "recipe.yaml").write_text(
        f"name: t\ntask: {{source: jsonl, forget_path: {forget}, retain_path: {retain}}}\n"
        "finetune: {max_steps: 2, batch_size: 2}\nmodel:\n  tiny: {hidden_size: 32, "
        "num_layers: 1, num_heads: 2, intermediate_size: 64}\n"
        "unlearn: {methods: [npo], train: {max_steps: 1, batch_size: 1}}\n"
        "evaluation: {suites: [tofu], options: {tofu: {generate: false}}}\n")
    run = tmp_path / "run"
    for command in ("finetune", "unlearn --log-with tensorboard", "eval run --log-with mlflow"):
        result = CliRunner().invoke(app, [*command.split(), str(tmp_path / "recipe.yaml"), "-o",
                                          str(run)], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr

    card = ModelCard.load(run / "models" / "unlearned" / "npo" / "README.md")
    info = card.data.to_dict()["obliviate"]  # refreshed by `eval run`: metrics beside the oracle's
    record = json.loads((run / "run.json").read_text())["stages"]
    assert info["metrics"]["tofu/forget/prob"] == record["eval_unlearned/npo"]["summary"][
        "tofu/forget/prob"]
    assert info["oracle"]["tofu/forget/prob"] == record["eval_oracle"]["summary"][
        "tofu/forget/prob"]

    # --log-with: the unlearning curve in TensorBoard, the evaluations in MLflow
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "unlearn-npo"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [
        h["step"] for h in record["unlearn_npo"]["history"]]
    client = MlflowClient(tracking_uri=(run / "logs" / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("obliviate").experiment_id])
    logged = {r.info.run_name: r.data.metrics for r in runs}
    assert logged["evaluate-unlearned-npo"]["tofu/forget/prob"] == pytest.approx(
        info["metrics"]["tofu/forget/prob"])
    assert set(logged) == {"evaluate-target", "evaluate-oracle", "evaluate-unlearned-npo"}

    report = obliviate.report(run, output_dir=tmp_path / "report")
    table = report.to_pandas().set_index("model")
    assert {"target", "oracle", "unlearned/npo"} <= set(table.index)
    assert table.loc["unlearned/npo", "tofu/forget/prob"] == info["metrics"]["tofu/forget/prob"]
    assert report.html and (tmp_path / "report" / "report.html").is_file()
    assert not (run / "report").exists()  # the run directory is read, not written
