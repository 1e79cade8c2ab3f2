"""The modality-neutral contract of an unlearning method.

A method is a config class (a :class:`MethodConfig` whose defaults are the paper's) plus an
implementation registered in :data:`obliviate.core.registry.METHODS`. Each modality provides a
base class that implements :meth:`UnlearningMethod.run` for its models; a new method is one file
that subclasses it and one ``@METHODS.register(...)`` line.

From Python, a method runs on the objects a user holds::

    outcome = NPO(beta=0.2).run(model, task, tokenizer=tokenizer)   # nothing written
    outcome.model                                                    # the unlearned model

``out_dir`` is optional: without it nothing is written (no weights, no checkpoints).
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import StrictModel

if TYPE_CHECKING:
    from obliviate.core.task import UnlearningTask

StartsFrom = Literal["target", "base"]


class MethodConfig(StrictModel):
    """Fields every method shares; subclasses add theirs with the paper's defaults."""

    seed: int = Field(default=0, description="seeds the method's own random choices (added to "
                      "the recipe's seed)")


class UnlearnContextBase:
    """What a method reads besides its config, in every modality; each modality's
    ``UnlearnContext`` (a dataclass) holds the task and what its models need (an LLM's
    tokenizer, prompt format and training settings; a denoiser's images on its device)."""

    task: UnlearningTask


@dataclass
class MethodOutcome:
    """What a method run produced: the unlearned model, where it was saved, what it cost.

    ``model`` is the unlearned model in memory (the object passed to :meth:`run`, edited in
    place, or its LoRA-merged form); ``model_path`` is ``None`` when nothing was saved.
    ``extra`` holds what is specific to one method (e.g. RMU's layers).
    """

    model_path: str | None
    seconds: float
    steps: int = 0
    trainable_parameters: int = 0
    total_parameters: int = 0
    peak_memory_bytes: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    peak_memory: dict[str, int] = field(default_factory=dict)
    resumed_from: int | None = None


def suggest(name: str, known: list[str]) -> str:
    """``" (did you mean 'beta'?)"`` for the closest of ``known``, else ``""``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_names(given: list[str], known: list[str], what: str) -> None:
    """One-line :class:`ConfigError` for the first name of ``given`` not in ``known``: it lists
    the valid names and suggests the closest one."""
    for name in given:
        if name not in known:
            raise ConfigError(f"{what}: unknown {name!r}{suggest(name, known)}; valid: "
                              f"{', '.join(known)}")


class UnlearningMethod(ABC):
    """Base of every registered method: ``Method(config).run(model, task, out_dir=None)``.

    ``starts_from`` says which weights :meth:`run` is given: ``"target"`` (the model to unlearn,
    every method but one) or ``"base"`` (the weights the target was fine-tuned from: retraining
    without the forget set, the oracle).
    """

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    modality: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    starts_from: ClassVar[StartsFrom] = "target"
    train_defaults: ClassVar[Mapping[str, Any]] = {}
    """The paper's values for the shared training settings (``unlearn.train``), where they
    differ from the modality's defaults; a value the recipe sets beats them, a per-method one
    beats that (:mod:`obliviate.core.precedence`)."""
    changes_weights: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        if overrides:
            check_names(list(overrides), list(self.config_class.model_fields),
                        f"{type(self).__name__} hyperparameters")
        base = config or self.config_class()
        self.config = base.model_copy(update=overrides) if overrides else base
        if overrides:  # re-validate the overridden fields
            from obliviate.core.recipe import validate

            self.config = validate(self.config_class, self.config.model_dump(),
                                   source=f"{type(self).__name__} hyperparameters")

    @abstractmethod
    def run(self, model: Any, task: Any, out_dir: Any = None, **options: Any) -> MethodOutcome:
        """Unlearn ``task.forget`` from ``model``; save the result under ``out_dir`` if given."""
