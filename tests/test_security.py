"""Untrusted artefacts: no pickle loading, no unsafe torch.load, no remote code by default."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "obliviate"


def python_files() -> list[Path]:
    files = sorted(SRC.rglob("*.py"))
    assert files, SRC
    return files


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_no_pickle_based_loading():
    offenders = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in {"pickle", "dill", "cloudpickle", "joblib"}
                       for n in names):
                    offenders.append(f"{path}:{node.lineno} imports a pickle library")
        for call in calls(tree):
            name = dotted(call.func)
            if name.endswith(("numpy.load", "np.load")) and not any(
                    k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                    and k.value.value is False for k in call.keywords):
                offenders.append(f"{path}:{call.lineno} np.load without allow_pickle=False")
    assert not offenders, offenders


def test_torch_load_is_always_weights_only():
    offenders = []
    for path in python_files():
        for call in calls(ast.parse(path.read_text())):
            if dotted(call.func).endswith("torch.load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in call.keywords)
                if not safe:
                    offenders.append(f"{path}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_remote_code_is_off_unless_asked():
    offenders = []
    for path in python_files():
        tree = ast.parse(path.read_text())
        for call in calls(tree):
            for kw in call.keywords:
                if kw.arg == "trust_remote_code" and isinstance(kw.value, ast.Constant) \
                        and kw.value.value is True:
                    offenders.append(f"{path}:{call.lineno}")
        for node in ast.walk(tree):  # config fields default to False
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.target.id == "trust_remote_code":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, path
    assert not offenders, offenders


def test_no_eval_or_exec():
    offenders = [f"{p}:{c.lineno}" for p in python_files() for c in calls(ast.parse(p.read_text()))
                 if isinstance(c.func, ast.Name) and c.func.id in {"eval", "exec"}]
    assert not offenders, offenders


def test_models_load_with_safetensors_only():
    from obliviate.llm import models

    source = Path(models.__file__).read_text()
    assert "use_safetensors=True" in source
