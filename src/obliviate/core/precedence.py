"""One precedence rule for a method's hyperparameters, in every modality.

    a method's paper default  <  the recipe's shared value  <  the per-method value

* a **paper default** is a default of the method's config class, or of the shared settings
  where the method declares its own (``train_defaults``, e.g. RMU's learning rate 5e-5);
* a **shared value** is one the recipe sets in ``unlearn.train`` (a default of that section is
  not a value the recipe set: it never beats a paper default);
* a **per-method value** is one in ``unlearn.method_args.<method>``.

:func:`layer` merges the three and says where each value came from, so a run records what it
used and why (``sources``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

PAPER = "paper default"
SHARED = "unlearn.train"
DEFAULT = "default"


def per_method(method: str) -> str:
    return f"unlearn.method_args.{method}"


def explicit(section: BaseModel) -> dict[str, Any]:
    """The values a recipe set in ``section`` (fields left at their default, or ``None`` where
    ``None`` means "unset", are not)."""
    return {k: getattr(section, k) for k in section.model_fields_set
            if getattr(section, k) is not None}


def layer(method: str, keys: Iterable[str], *, defaults: Mapping[str, Any] | None = None,
          paper: Mapping[str, Any] | None = None, shared: Mapping[str, Any] | None = None,
          own: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge, for ``keys``: ``defaults`` < ``paper`` < ``shared`` < ``own``.

    Returns ``(values, sources)``; ``values`` holds only the keys some layer gives, and
    ``sources[key]`` names the layer it came from.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    wanted = set(keys)
    for name, layer_values in ((DEFAULT, defaults), (PAPER, paper), (SHARED, shared),
                               (per_method(method), own)):
        for key, value in (layer_values or {}).items():
            if key in wanted:
                values[key], sources[key] = value, name
    return values, sources


def resolve(section: M, method: str, *, paper: Mapping[str, Any] | None = None,
            own: Mapping[str, Any] | None = None) -> tuple[M, dict[str, str]]:
    """``section`` (the recipe's shared settings) with the method's ``paper`` defaults under
    what the recipe set and its ``own`` values over it: a new section whose every field is set
    (so resolving it again changes nothing), and the non-default ``sources``."""
    from obliviate.core.recipe import validate

    values, sources = layer(method, type(section).model_fields, defaults=section.model_dump(),
                            paper=paper, shared=explicit(section), own=own)
    resolved = validate(type(section), values, source=per_method(method))
    return resolved, {k: v for k, v in sources.items() if v != DEFAULT}


def method_config(name: str, modality: str, own: Mapping[str, Any], *,
                  shared: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """Method ``name``'s registered class and its validated config, in every modality: the
    config class's defaults (the paper's) < ``shared`` (what the recipe set in
    ``unlearn.train``, for the keys the config declares) < ``own``
    (``unlearn.method_args.<name>``; an unknown key is a one-line error naming the method)."""
    from obliviate.core.recipe import validate
    from obliviate.core.registry import METHODS

    cls = METHODS.get(name, modality)
    args, _ = layer(name, [*cls.config_class.model_fields, *own], shared=shared, own=own)
    return cls, validate(cls.config_class, args, source=per_method(name))


__all__ = ["DEFAULT", "PAPER", "SHARED", "explicit", "layer", "method_config", "per_method",
           "resolve"]
