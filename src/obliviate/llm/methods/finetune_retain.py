"""Fine-tuning on the retain set only: the "Fine-tune" baseline of the unlearning literature
(Golatkar et al. 2020, "Eternal Sunshine of the Spotless Net", arXiv:1911.04933; Warnecke et al.
2023; the FT baseline of Jia et al. 2023, arXiv:2304.04934). It relies on catastrophic forgetting
alone: the forget set is never used, only more training on what should be kept.

:class:`RetainTraining` is the shared base of this method and of ``retrain`` (the oracle): the
items are the retain records (one per record, so an epoch is a pass over the retain set) and the
loss is the plain answer NLL on them.
"""

from __future__ import annotations

from typing import Any

import torch

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.data.formatting import collate, encode_record
from obliviate.llm.methods.base import LLMUnlearningMethod, UnlearnContext, UnlearnItem
from obliviate.llm.methods.losses import nll


class RetainTrainingConfig(MethodConfig):
    """No hyperparameter beyond the optimiser's (``unlearn.train``)."""


class RetainTraining(LLMUnlearningMethod):
    """Train on the retain set with the plain NLL (from the weights ``starts_from`` names)."""

    config_class = RetainTrainingConfig
    uses_retain = True

    def build_items(self, ctx: UnlearnContext) -> list[UnlearnItem]:
        # Items carry no forget example: nothing in these methods may read the forget set.
        return [UnlearnItem(i, forget=None,  # type: ignore[arg-type]
                            retain=encode_record(ctx.tokenizer, ctx.fmt, record,
                                                 max_length=ctx.max_length))
                for i, record in enumerate(ctx.task.retain.records)]

    @staticmethod
    def collate_fn(pad_token_id: int):
        def collate_retain(items: list[UnlearnItem]) -> dict[str, Any]:
            return {"index": torch.tensor([it.index for it in items]),
                    "retain": collate([it.retain for it in items], pad_token_id)}

        return collate_retain

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        value = nll(model, batch["retain"])
        return value, {"retain_nll": float(value.detach())}


@METHODS.register("finetune_retain", modality="llm")
class FinetuneRetain(RetainTraining):
    """Continue training the target on the retain set only (plain NLL; forget set unused)."""

    starts_from = "target"
    paper = "Golatkar et al. 2020, arXiv:1911.04933 (Fine-tune baseline)"
