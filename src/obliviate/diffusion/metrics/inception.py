"""FID on Inception-v3 pool3 features, from a local weights file.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017) is the Fréchet distance between Gaussians fitted to the 2048-d
pool3 features (the global average pool before the classifier) of Inception v3 (Szegedy et al.,
"Rethinking the Inception Architecture for Computer Vision", CVPR 2016) on real and on
generated images. The network here is torchvision's ``inception_v3`` architecture with its
module names, so either weights file loads:

* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (github.com/mseitzer/pytorch-fid):
  the TensorFlow FID network ported to that layout (a 1008-class ``fc``, no ``AuxLogits``).
  It differs from torchvision's in its pooling, which this module reproduces (``variant: fid``):
  the 3×3 average pools of the A, C and first E blocks leave the zero padding out of the
  average, and the last E block (``Mixed_7c``) max-pools instead;
* torchvision's ``inception_v3_google-0cc3c7bd.pth`` (``variant: torchvision``, its own
  pooling; a 1000-class ``fc`` and ``AuxLogits``, both unused).

``variant: auto`` tells them apart by the ``fc`` rows (1008: pytorch-fid). Images are resized
to 299×299 (bilinear, as pytorch-fid; clean-fid's resize differs) and read in [−1, 1], the
range both networks take; a grey image is repeated over the three channels. The distance is
the judge-feature FID's function (:func:`obliviate.diffusion.metrics.frechet_distance`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS
from obliviate.diffusion import MODALITY
from obliviate.diffusion.metrics.feature_distance import FeatureFID

SIZE = 299
Pool = Literal["avg", "avg_no_pad", "max"]


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: torchvision's unit."""

    def __init__(self, cin: int, cout: int, kernel: Any, stride: int = 1,
                 padding: Any = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def pool3x3(x: torch.Tensor, kind: Pool) -> torch.Tensor:
    """The stride-1, padding-1 3×3 pool before a block's ``branch_pool`` convolution."""
    if kind == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=kind == "avg")


def chain(x: torch.Tensor, *units: nn.Module) -> torch.Tensor:
    for unit in units:
        x = unit(x)
    return x


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.pool: Pool = "avg"
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x), chain(x, self.branch5x5_1, self.branch5x5_2),
            chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(pool3x3(x, self.pool))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7, row, col = channels_7x7, dict(kernel=(1, 7), padding=(0, 3)), \
            dict(kernel=(7, 1), padding=(3, 0))
        self.pool: Pool = "avg"
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x), chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                  self.branch7x7dbl_4, self.branch7x7dbl_5),
            self.branch_pool(pool3x3(x, self.pool))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            chain(x, self.branch3x3_1, self.branch3x3_2),
            chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                  self.branch7x7x3_4),
            F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.pool: Pool = "avg"
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        return torch.cat([
            self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pool3x3(x, self.pool))], 1)


class InceptionV3(nn.Module):
    """Inception v3 up to its 2048-d global average pool, with torchvision's module names
    (no ``AuxLogits``, no ``fc``); ``variant="fid"`` pools as the TensorFlow FID network."""

    def __init__(self, variant: Literal["fid", "torchvision"] = "torchvision") -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.variant = variant
        if variant == "fid":
            for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6b,
                          self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7b):
                block.pool = "avg_no_pad"
            self.Mixed_7c.pool = "max"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 2048]`` pool3 features of ``[N, 3, 299, 299]`` images in [−1, 1]."""
        x = chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = chain(F.max_pool2d(x, 3, stride=2), self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = chain(F.max_pool2d(x, 3, stride=2), self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,
                  self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                  self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        return x.mean((2, 3))


UNUSED = ("fc.", "AuxLogits.")  # the classifier heads: pool3 is read before them


def weights_file(path: str | Path) -> Path:
    """``path`` if it is a file, else the one-line error saying what to put there."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"inception_fid: no Inception-v3 weights file at {file} (download "
                          "pytorch-fid's pt_inception-2015-12-05-6726825d.pth once)")
    return file


def load_inception(path: str | Path, variant: Literal["auto", "fid", "torchvision"] = "auto",
                   device: Any = "cpu") -> InceptionV3:
    """The network of a torchvision or pytorch-fid Inception-v3 state dict file."""
    file = weights_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle it refuses, a TorchScript archive, not a torch file
        raise ModelLoadError(f"{file}: not a torch state dict "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                             ) from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise ModelLoadError(f"{file}: not an Inception-v3 state dict (no fc.weight; "
                             "torchvision's or pytorch-fid's layout is read)")
    if variant == "auto":
        variant = "fid" if state["fc.weight"].shape[0] == 1008 else "torchvision"
    net = InceptionV3(variant)
    body = {k: v for k, v in state.items() if not k.startswith(UNUSED)}
    missing, unexpected = net.load_state_dict(body, strict=False)
    wrong = [k for k in body if k in net.state_dict() and body[k].shape != net.state_dict()[k]
             .shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise ModelLoadError(f"{file}: not torchvision's Inception-v3 layout ("
                             f"{'missing' if missing else 'unexpected' if unexpected else 'shape'}"
                             f" key {first})")
    return net.eval().to(device)


class InceptionFeatures:
    """``(images [N, C, H, W] in [−1, 1], batch size) -> [N, 2048]`` pool3 features."""

    def __init__(self, path: str | Path, device: Any = "cpu",
                 variant: Literal["auto", "fid", "torchvision"] = "auto") -> None:
        self.net = load_inception(path, variant, device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"inception_fid: images must be [N, 1 or 3, H, W], got "
                              f"{tuple(images.shape)}")
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(self.device, torch.float32)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            out.append(self.net(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))


class InceptionOptions(StrictModel):
    """The Inception-v3 weights file (a state dict) and how it pools."""

    path: str = Field(description="Inception-v3 state dict: pytorch-fid's pt_inception-2015-"
                                  "12-05 file or torchvision's inception_v3_google")
    variant: Literal["auto", "fid", "torchvision"] = "auto"
    """fid: the TensorFlow FID network's pooling; torchvision: its own; auto: by fc's rows"""
    batch_size: int = Field(default=32, ge=1)
    """images embedded at once"""


@METRICS.register("inception_fid", modality=MODALITY)
class InceptionFID(FeatureFID):
    """FID (Heusel et al. 2017) on Inception-v3 pool3 features, from a local weights file."""

    name: ClassVar[str] = "inception_fid"  # set here: the parent's registration named it
    options: InceptionOptions  # type: ignore[assignment]
    options_class = InceptionOptions

    def __init__(self, options: InceptionOptions | dict[str, Any],
                 extractor: Any = None) -> None:
        super().__init__(options, extractor)
        if extractor is None:
            weights_file(self.options.path)  # a missing file fails before any sampling

    def make_extractor(self, device: Any) -> Any:
        return InceptionFeatures(self.options.path, device, self.options.variant)
