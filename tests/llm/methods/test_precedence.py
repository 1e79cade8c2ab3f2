"""One precedence rule for hyperparameters: paper default < unlearn.train < method_args.<m>.

RMU's paper learning rate (5e-5) is a default: a learning rate the recipe sets for every method
replaces it, one set for RMU alone replaces that, and a sweep over the shared learning rate
changes what RMU runs with (it did not: RMU's own value used to win silently)."""

from __future__ import annotations

import pytest

from obliviate.core.precedence import PAPER, SHARED, per_method
from obliviate.core.recipe import validate
from obliviate.core.registry import METHODS
from obliviate.core.sweep import SweepSpec, expand
from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
from obliviate.llm.pipeline import method_config, method_train
from obliviate.llm.recipe import LLMRecipe
from obliviate.llm.sweep import cell_recipe


def rmu_train(data: dict) -> tuple[float, str]:
    recipe = validate(LLMRecipe, {"unlearn": {"methods": ["rmu"], **data}})
    cls, _ = method_config(recipe, "rmu")
    train, sources = method_train(recipe, "rmu", cls)
    return train.learning_rate, sources.get("learning_rate", "default")


def test_paper_default_then_shared_then_per_method():
    assert rmu_train({}) == (5e-5, PAPER)
    assert rmu_train({"train": {"learning_rate": 1e-3}}) == (1e-3, SHARED)
    assert rmu_train({"train": {"learning_rate": 1e-3},
                      "method_args": {"rmu": {"learning_rate": 2e-3}}}) == (
        2e-3, per_method("rmu"))
    # a method without its own default takes the shared default, then the shared value
    recipe = validate(LLMRecipe, {"unlearn": {"train": {"epochs": 2}}})
    train, sources = method_train(recipe, "npo", METHODS.get("npo", "llm"))
    assert train.learning_rate == UnlearnTrainConfig().learning_rate and train.epochs == 2
    assert sources == {"epochs": SHARED}


def test_a_sweep_over_the_shared_learning_rate_changes_rmu():
    spec = SweepSpec(methods={"rmu": {}, "npo": {}},
                     grid={"unlearn.train.learning_rate": [1e-4, 3e-4]})
    used = {}
    for cell in expand(spec):
        recipe = cell_recipe({}, cell["overrides"], "target")
        cls, _ = method_config(recipe, cell["method"])
        train, _ = method_train(recipe, cell["method"], cls)
        used[(cell["method"], cell["params"]["unlearn.train.learning_rate"])] = \
            train.learning_rate
    assert used == {("rmu", 1e-4): 1e-4, ("rmu", 3e-4): 3e-4,
                    ("npo", 1e-4): 1e-4, ("npo", 3e-4): 3e-4}


def test_a_method_run_from_python_takes_its_paper_default_unless_told(memorised):
    rmu = METHODS.get("rmu", "llm")()
    bare = UnlearnContext(tokenizer=memorised.tokenizer, fmt=memorised.fmt,
                          task=memorised.task, train=UnlearnTrainConfig(max_steps=1))
    told = UnlearnContext(tokenizer=memorised.tokenizer, fmt=memorised.fmt,
                          task=memorised.task, train=UnlearnTrainConfig(learning_rate=1e-3))
    assert rmu.resolve_context(memorised.task, bare, None).train.learning_rate == 5e-5
    assert rmu.resolve_context(memorised.task, bare, None).train.max_steps == 1
    assert rmu.resolve_context(memorised.task, told, None).train.learning_rate == 1e-3


def npo_args(args: dict) -> LLMRecipe:
    return validate(LLMRecipe, {"unlearn": {"methods": ["npo"], "method_args": {"npo": args}}})


def test_a_per_method_training_key_is_not_a_hyperparameter_typo():
    cls, config = method_config(npo_args({"beta": 0.2, "learning_rate": 1e-4}), "npo")
    assert config.beta == 0.2
    from obliviate.core.errors import ConfigError

    with pytest.raises(ConfigError, match="learning_rat"):
        method_config(npo_args({"learning_rat": 1e-4}), "npo")
