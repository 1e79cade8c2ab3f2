"""The modality-neutral contract of an unlearning method.

A method is a config class (a :class:`MethodConfig` whose defaults are the paper's) plus an
implementation registered in :data:`obliviate.core.registry.METHODS`. Each modality provides a
base class that implements :meth:`UnlearningMethod.run` for its models; a new method is one file
that subclasses it and one ``@METHODS.register(...)`` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import Field

from obliviate.core.recipe import StrictModel


class MethodConfig(StrictModel):
    """Fields every method shares; subclasses add theirs with the paper's defaults."""

    seed: int = Field(default=0, description="seeds the method's own random choices")


@dataclass
class MethodOutcome:
    """What a method run produced: where the model is and what it cost."""

    model_path: str | None
    seconds: float
    steps: int = 0
    trainable_parameters: int = 0
    total_parameters: int = 0
    peak_memory_bytes: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class UnlearningMethod(ABC):
    """Base of every registered method: ``Method(config).run(model, task, out_dir)``."""

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    modality: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        base = config or self.config_class()
        self.config = base.model_copy(update=overrides) if overrides else base
        if overrides:  # re-validate the overridden fields
            self.config = self.config_class.model_validate(self.config.model_dump())

    @abstractmethod
    def run(self, model: Any, task: Any, out_dir: Any) -> MethodOutcome:
        """Unlearn ``task.forget`` from ``model`` and write the result under ``out_dir``."""
