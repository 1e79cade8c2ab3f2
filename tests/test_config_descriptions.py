"""Every key a recipe can set says what it means: the test walks both modalities' recipes and
every registered method, attack, benchmark and evaluation suite config (nested sections
included) and fails on a field without a description, so ``obliviate recipe show`` never
prints an empty meaning, and a config added later without one fails here."""

from __future__ import annotations

import importlib
import types
import typing

from pydantic import BaseModel

MODALITIES = ("llm", "diffusion")


def models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models a field's type names (``X``, ``X | None``, ``dict[str, X]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += models_in(arg)
    return out


def config_classes() -> dict[str, type[BaseModel]]:
    """Where each config class is used -> the class: the recipes, then every registered
    part's config (methods, attacks, benchmarks, suites) in both modalities."""
    from obliviate.core.registry import ATTACKS, BENCHMARKS, METHODS, SUITES
    from obliviate.diffusion.recipe import DiffusionRecipe
    from obliviate.llm.recipe import LLMRecipe

    for modality in MODALITIES:  # importing the catalogues registers them
        for part in ("methods", "attacks", "benchmarks"):
            importlib.import_module(f"obliviate.{modality}.{part}")
    importlib.import_module("obliviate.llm.evaluation.suites")
    out: dict[str, type[BaseModel]] = {"LLMRecipe": LLMRecipe, "DiffusionRecipe": DiffusionRecipe}
    for registry, attr in ((METHODS, "config_class"), (ATTACKS, "config_class"),
                           (BENCHMARKS, "config_class"), (SUITES, "options_class")):
        for entry in registry.entries():
            cls = getattr(entry.obj, attr, None)
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                out[f"{registry.kind} {entry.modality}/{entry.name}"] = cls
    return out


def undescribed() -> list[str]:
    """``where: Class.field`` for every field without a description (each class once)."""
    seen: set[type[BaseModel]] = set()
    missing: list[str] = []

    def walk(cls: type[BaseModel], where: str) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for name, info in cls.model_fields.items():
            nested = models_in(info.annotation)
            if not (info.description or "").strip():
                missing.append(f"{where}: {cls.__module__}.{cls.__name__}.{name}")
            for model in nested:
                walk(model, where)

    for where, cls in config_classes().items():
        walk(cls, where)
    return missing


def test_the_walk_reaches_every_kind_of_config():
    found = config_classes()
    for kind in ("method llm/npo", "method diffusion/esd_x", "attack llm/relearning",
                 "attack diffusion/relearning"):
        assert any(k == kind for k in found), kind
    assert models_in(dict[str, "int"]) == [] and models_in(types.NoneType) == []


def test_every_config_field_has_a_description():
    missing = undescribed()
    assert not missing, f"{len(missing)} config fields without a description:\n" + \
        "\n".join(missing)
