"""What an unlearning command spends besides its optimizer steps and one save (issue 21): the
target is read from disk once per process however many methods start from it, each file is
hashed once, and the weights are bit-identical to loading the target afresh for each method."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.core import io, pristine
from obliviate.llm import artifacts

TINY = ["task.synthetic.num_people=5", "task.synthetic.facts_per_person=2",
        "task.synthetic.forget_people=1", "task.synthetic.holdout_people=1",
        "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320"]
UNLEARN = ["unlearn.train.max_steps=4", "unlearn.train.batch_size=2",
           "unlearn.train.checkpoint_every=2"]
METHODS = ("grad_ascent", "npo")


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def counted(monkeypatch):
    """Count the target loads and the files whose bytes are read to hash them."""
    loads, hashed = [], []
    real_load, real_open = artifacts.load_model_for_eval, open

    def load(path, *args, **kwargs):
        loads.append(path)
        return real_load(path, *args, **kwargs)

    def opened(path, mode="r", *args, **kwargs):
        if mode == "rb" and str(path).endswith(".safetensors"):
            hashed.append(str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(artifacts, "load_model_for_eval", load)
    monkeypatch.setattr(io, "open", opened, raising=False)
    pristine.forget()
    yield loads, hashed
    pristine.forget()


def test_several_methods_load_the_target_once_with_the_same_weights(tmp_path, counted):
    loads, hashed = counted
    invoke("finetune", "demo", *TINY, "finetune.max_steps=3", "--role", "target",
           "-o", str(tmp_path / "ft"))
    target = tmp_path / "ft" / "models" / "target"
    common = ["demo", *TINY, *UNLEARN, f"unlearn.target={target}"]
    invoke("unlearn", *common, *(a for m in METHODS for a in ("-m", m)),
           "-o", str(tmp_path / "one"))
    assert len(loads) == 1
    # the target's weights and each saved model: every file hashed once in the command
    assert len(hashed) == len(set(hashed)), hashed
    for method in METHODS:  # as a process per method would: the target read afresh each time
        pristine.forget()
        invoke("unlearn", *common, "-m", method, "-o", str(tmp_path / "apart"))
    assert len(loads) == 3
    for method in METHODS:
        once = load_file(tmp_path / "one" / "models" / "unlearned" / method / "model.safetensors")
        apart = load_file(tmp_path / "apart" / "models" / "unlearned" / method /
                          "model.safetensors")
        original = load_file(target / "model.safetensors")
        assert once.keys() == apart.keys()
        assert all(torch.equal(once[k], apart[k]) for k in once), method
        assert any(not torch.equal(once[k], original[k]) for k in once), method


def test_a_kept_target_is_copied_never_handed_out(counted):
    loads, _ = counted
    made = []

    def load():
        made.append(torch.nn.Linear(2, 2))
        return made[-1], "tokenizer"

    first, _ = pristine.pristine_copy("k", load)
    with torch.no_grad():
        first.weight.add_(1.0)  # a method changes its copy in place
    second, _ = pristine.pristine_copy("k", load)
    assert len(made) == 1 and second is not made[0] and first is not made[0]
    assert torch.equal(second.weight, made[0].weight)
    assert not torch.equal(first.weight, second.weight)
    pristine.pristine_copy("other", load)  # another key: loaded anew, the old one dropped
    assert len(made) == 2 and list(pristine._kept) == ["other"]
