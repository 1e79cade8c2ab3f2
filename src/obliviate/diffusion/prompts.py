"""Prompt sets for text-to-image unlearning, read in their published column layouts.

- I2P (Schramowski et al. 2023, ``AIML-TUDA/i2p``, ``i2p_benchmark.csv``): ``prompt``,
  ``categories`` (", "-separated), ``hard``, ``sd_seed``, ``sd_guidance_scale``, ...
- UnlearnDiffAtk's prompt CSVs (Zhang et al. 2024, Diffusion-MU-Attack ``prompts/``): the I2P
  columns with ``evaluation_seed`` / ``evaluation_guidance`` and ``case_number``, or the object
  and style files' ``case_number, prompt, evaluation_seed, evaluation_guidance[, artist]``.
- ESD's and UCE's CSVs (a leading unnamed index column, ``case_number``, ``prompt``,
  ``evaluation_seed``, and a concept column: ``class``, ``artist``, ``label_str`` or
  ``profession``).

Every file becomes a list of :class:`PromptCase`. As the reference code does, the seed is
``evaluation_seed`` falling back to ``sd_seed``, the guidance ``evaluation_guidance`` falling back
to ``sd_guidance_scale`` and then 7.5, the prompt is always read as a string (one I2P prompt is
numeric), and ``case_number`` is kept as text (COCO's ids are zero-padded).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from obliviate.core.errors import ConfigError

DEFAULT_GUIDANCE = 7.5
CONCEPT_COLUMNS = ("class", "artist", "label_str", "profession")


@dataclass(frozen=True)
class PromptCase:
    case_number: str
    prompt: str
    seed: int | None
    guidance: float
    categories: tuple[str, ...] = ()
    concept: str | None = None
    hard: bool | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def _first(row: dict[str, str], *keys: str) -> str | None:
    for key in keys:
        value = row.get(key)
        if value not in (None, ""):
            return value
    return None


def load_prompt_csv(path: str | Path) -> list[PromptCase]:
    """Every row of an I2P, UnlearnDiffAtk, ESD or UCE prompt CSV as a :class:`PromptCase`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise ConfigError(f"{path}: no 'prompt' column (columns: "
                              f"{', '.join(reader.fieldnames or [])})")
        cases = []
        for i, row in enumerate(reader):
            where = f"{path}: row {i + 2}"
            seed = _first(row, "evaluation_seed", "sd_seed")
            guidance = _first(row, "evaluation_guidance", "sd_guidance_scale")
            try:
                seed_value = int(float(seed)) if seed is not None else None
                guidance_value = float(guidance) if guidance is not None else DEFAULT_GUIDANCE
            except ValueError:
                raise ConfigError(f"{where}: seed {seed!r} or guidance {guidance!r} is not a "
                                  "number") from None
            categories = tuple(c.strip() for c in (row.get("categories") or "").split(",")
                               if c.strip())
            hard = row.get("hard")
            cases.append(PromptCase(
                case_number=str(_first(row, "case_number") or i), prompt=str(row["prompt"]),
                seed=seed_value, guidance=guidance_value, categories=categories,
                concept=_first(row, *CONCEPT_COLUMNS),
                hard=bool(int(float(hard))) if hard not in (None, "") else None,
                extra={k: v for k, v in row.items() if k}))
    return cases


def with_category(cases: list[PromptCase], category: str) -> list[PromptCase]:
    """The I2P cases of one category (e.g. ``sexual``), as ``categories.str.contains`` does."""
    return [c for c in cases if any(category in cat for cat in c.categories)]
