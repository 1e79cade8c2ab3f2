"""CLIP score (Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning", EMNLP 2021): how well a generated image matches its prompt,

    CLIPScore(I, T) = w · max(cos(E_I(I), E_T(T)), 0),

with E_I, E_T a CLIP model's image and text embeddings. Hessel et al. use w = 2.5; the
text-to-image unlearning papers (UnlearnCanvas, ESD, UCE) report torchmetrics' convention
w = 100, which is the default here. Any local CLIP folder (``CLIPModel`` with its processor)
works through transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from obliviate.core.errors import ModelLoadError


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
               weight: float = 100.0) -> torch.Tensor:
    """``[N]`` scores of row-paired image and text embeddings ``[N, D]``."""
    cos = F.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
    return weight * cos.clamp(min=0)


class CLIPScorer:
    """A local CLIP model folder (``CLIPModel`` + ``CLIPProcessor``, e.g.
    openai/clip-vit-large-patch14 downloaded once) scoring images against prompts."""

    def __init__(self, path: str | Path, device: Any = "cpu", weight: float = 100.0) -> None:
        try:
            from transformers import CLIPModel, CLIPProcessor

            self.model = CLIPModel.from_pretrained(str(path)).eval().to(device)
            self.processor = CLIPProcessor.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot load a CLIP model and processor "
                                 f"({str(exc).splitlines()[0]})") from None
        self.device, self.weight = torch.device(device), weight

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``images`` in [−1, 1], ``[N, C, H, W]`` (gray is repeated to RGB); one prompt each."""
        return clip_score(*self.embed(images, prompts), self.weight)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, prompts: list[str]
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's image and text embeddings ``[N, D]`` of the paired images and prompts."""
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        batch = self.processor(text=[str(p) for p in prompts], images=list(pixels),
                               return_tensors="pt", padding=True)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        image = self.model.get_image_features(pixel_values=batch["pixel_values"])
        text = self.model.get_text_features(input_ids=batch["input_ids"],
                                            attention_mask=batch["attention_mask"])
        image = getattr(image, "pooler_output", image)
        text = getattr(text, "pooler_output", text)
        return image.cpu(), text.cpu()
