"""Attacks as registered parts, in every modality: one class plus one registration
(``@ATTACKS.register(name, modality=...)``).

An attack reads what its modality's ``AttackContext`` holds (the task, the model attacked, the
oracle, the options of the forget probe, a seed) and returns an
:class:`~obliviate.core.result.AttackResult`: the probe on the model and on the oracle, before
and after the attack, so a recovery reads against what a model that never saw the forget data
gives under the same attack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from obliviate.core.recipe import StrictModel

if TYPE_CHECKING:
    from obliviate.core.result import AttackResult
    from obliviate.core.task import UnlearningTask


class AttackContextBase:
    """What an attack reads, in every modality; each modality's ``AttackContext`` (a dataclass)
    holds these and what its models need besides (an LLM's tokenizer and prompt format; a
    denoiser's judge)."""

    task: UnlearningTask
    probe: Any
    """The forget probe's options (the modality's ``ProbeOptions``)."""
    seed: int


class Attack:
    """Base of every attack: set ``config_class`` (the paper's defaults), ``paper``, and
    implement :meth:`run`; ``Attack(config, **overrides)`` validates the overrides against the
    config class (a one-line error naming the attack)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrictModel]] = StrictModel
    paper: ClassVar[str] = ""

    def __init__(self, config: StrictModel | None = None, **overrides: Any) -> None:
        from obliviate.core.recipe import validate

        base = config.model_dump() if config is not None else {}
        self.config = validate(self.config_class, {**base, **overrides},
                               source=f"attack {self.name}")

    def run(self, ctx: Any) -> AttackResult:
        raise NotImplementedError


__all__ = ["Attack", "AttackContextBase"]
