"""The bad-input corpus (tests/bad_input/cases.yaml): one-line errors, never a partial output.

Every case runs the CLI in-process from inside ``tests/bad_input`` and must exit non-zero with
exactly one ``error: ...`` line on stderr that names the problem, no traceback, no partly
written output in the run directory, nothing written outside it, and no change to the corpus
itself. A case may start from a finished run (``setup``), change one of its files the way a
user, a disk or an attacker would (``tamper``) and inject a fault such as a full disk
(``fault``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from transformers.utils import logging as transformers_logging
from typer.testing import CliRunner

from obliviate.cli.main import app

HERE = Path(__file__).resolve().parent / "bad_input"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
# What a failed command may leave in a fresh run directory: complete metadata files and locks.
METADATA = {"recipe.yaml", "run.json", "task.json", "run.lock"}
NON_UTF8 = os.fsdecode(b"run-\xff\xfe")  # a folder name that is not valid UTF-8 (Linux allows it)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (hidden ones included)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def cli_ok(*args: str) -> None:
    result = invoke(list(args))
    assert result.exit_code == 0, result.stderr


# -- runs the cases start from: each built once, then copied into the case's run directory ------
def build_target(run: Path) -> None:
    cli_ok("finetune", "recipes/base.yaml", "-o", str(run), "--role", "target")


def build_finetuned(run: Path) -> None:
    cli_ok("finetune", "recipes/base.yaml", "-o", str(run))


def build_unlearned(run: Path) -> None:
    build_finetuned(run)
    cli_ok("unlearn", "recipes/base.yaml", "-o", str(run), "-m", "npo", "-m", "guardrail")


def build_interrupted(run: Path) -> None:
    """A fine-tune that checkpointed (step 1 of 2: the last step is the model's save, never a
    checkpoint), then died before saving its model (recorded: failed)."""
    with pytest.MonkeyPatch.context() as patch:
        def die(*args, **kwargs):
            raise KeyboardInterrupt

        patch.setattr("obliviate.llm.finetune.save_model", die)
        result = invoke(["finetune", "recipes/base.yaml", "-o", str(run), "--role", "target",
                         "finetune.checkpoint_every=1"])
    assert result.exit_code == 130 and list(run.glob("checkpoints/target/step-1")), result.stderr


def build_diffusion(run: Path) -> None:
    cli_ok("finetune", "recipes/diffusion_base.yaml", "-o", str(run))


TEMPLATES = {"target": build_target, "finetuned": build_finetuned,
             "unlearned": build_unlearned, "interrupted": build_interrupted,
             "diffusion": build_diffusion}
_BUILT: dict[str, Path] = {}


def from_template(name: str, run: Path, tmp_factory) -> None:
    if name not in _BUILT:
        _BUILT[name] = tmp_factory.mktemp(f"template_{name}") / "run"
        TEMPLATES[name](_BUILT[name])
    shutil.copytree(_BUILT[name], run, symlinks=True)


def write_record(run: Path, data: bytes) -> None:
    run.mkdir(parents=True)
    (run / "run.json").write_bytes(data)


SETUPS = {
    None: lambda run: None,
    "corrupt_record": lambda run: write_record(run, b'{"created": "2026-01-01", "st'),
    "record_is_a_list": lambda run: write_record(run, b'[{"stages": {}}]'),
    "record_stages_is_a_list": lambda run: write_record(run, b'{"stages": ["finetune"]}'),
    "record_stage_is_a_string": lambda run: write_record(
        run, b'{"stages": {"finetune_target": "done"}}'),
    "record_not_utf8": lambda run: write_record(run, b'{"name": "\xe9t\xe9"}'),
    "stage_locked": lambda run: hold_stage_lock(run, "finetune_target"),
    "own_data": lambda run: build_own_data(run),
}
HELD = []


def hold_stage_lock(run: Path, stage: str) -> None:
    """Another command is running ``stage`` of this run (it holds the stage's lock)."""
    from filelock import FileLock

    (run / "locks").mkdir(parents=True)
    lock = FileLock(str(run / "locks" / f"{stage}.lock"))
    lock.acquire()
    HELD.append(lock)


def build_own_data(run: Path) -> None:
    """A target fine-tuned on the user's own files (../own), which then change."""
    tamper(run, "copy_data", ".")
    own = run.parent / "own"
    cli_ok("finetune", "recipes/base.yaml", "-o", str(run), "--role", "target",
           f"task.forget_path={own}/forget.jsonl", f"task.retain_path={own}/retain.jsonl")


def tamper(run: Path, how: str, file: str, tmp_factory=None) -> None:
    """Change one file of a finished run the way a user, a disk or an attacker would."""
    path = Path(os.path.normpath(run / file))
    if how == "external_from":  # a model from outside this run: another run's target
        if file not in _BUILT:
            _BUILT[file] = tmp_factory.mktemp(f"template_{file}") / "run"
            TEMPLATES[file](_BUILT[file])
        shutil.copytree(_BUILT[file] / "models" / "target", run.parent / "external")
    elif how == "append":
        path.write_bytes(path.read_bytes() + b" ")
    elif how == "append_record":  # one more line in a JSON Lines data file
        with open(path, "a") as out:
            out.write(json.dumps({"question": "Who is new?", "answer": "A late addition."}) + "\n")
    elif how == "edit_json":  # a changed setting, as in an edited config.json
        data = json.loads(path.read_text())
        key = next(k for k, v in sorted(data.items())
                   if isinstance(v, (int, float)) and not isinstance(v, bool))
        data[key] = data[key] * 2 + 1
        path.write_text(json.dumps(data))
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "flip_header":  # a bit flip in the header's length field
        data = bytearray(path.read_bytes())
        data[5] ^= 0x40
        path.write_bytes(bytes(data))
    elif how == "flip_data":  # a bit flip in a tensor: only the recorded hash can tell
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "delete":
        path.unlink()
    elif how == "add":
        path.write_text("{}")
    elif how == "pickle_payload":  # what weights_only refuses: a pickle that would run code
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, ("echo pwned > pwned.txt",))

        path.write_bytes(pickle.dumps({"optimizer": Payload()}))
    elif how == "evil_template":  # nested loops: renders for hours
        data = json.loads(path.read_text())
        data["chat_template"] = ("{% for a in range(100000) %}{% for b in range(100000) %}"
                                 "{% endfor %}{% endfor %}{{ messages[0]['content'] }}")
        path.write_text(json.dumps(data))
    elif how == "copy_out":  # the model, copied outside the run (to ../external)
        shutil.copytree(path, run.parent / "external")
    elif how == "copy_data":  # the base recipe's data, copied beside the run (to ../own)
        (run.parent / "own").mkdir(exist_ok=True)
        for name in ("forget.jsonl", "retain.jsonl"):
            shutil.copyfile(HERE / "data" / name, run.parent / "own" / name)
    elif how == "non_utf8_data":  # the forget set under a name that is not valid UTF-8
        shutil.copyfile(HERE / "data" / "forget.jsonl", run.parent / NON_UTF8)
    else:
        raise ValueError(how)


# -- faults ------------------------------------------------------------------------------------
def disk_full_saving_the_model(patch) -> None:
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a model")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                              'StorageFull, message: "No space left on device" })')

    patch.setattr("transformers.modeling_utils.safe_save_file", full)


def disk_full_writing_a_checkpoint(patch) -> None:
    import torch

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    patch.setattr(torch, "save", full)


def disk_full_writing_json(patch) -> None:
    import obliviate.core.io as io

    def full(fd):
        raise OSError(28, "No space left on device")

    patch.setattr(io.os, "fsync", full)


FAULTS = {f.__name__: f for f in (disk_full_saving_the_model, disk_full_writing_a_checkpoint,
                                  disk_full_writing_json)}


@pytest.fixture(autouse=True)
def in_corpus(monkeypatch):
    from importlib import import_module

    from tqdm.auto import tqdm

    monkeypatch.chdir(HERE)
    # a training progress bar is output, not part of the error: keep stderr to the error itself
    transformers_logging.disable_progress_bar()
    for module in ("obliviate.llm.training", "obliviate.core.training"):
        try:
            loop = import_module(module)
        except ImportError:
            continue
        monkeypatch.setattr(loop, "tqdm", lambda *args, **kwargs: tqdm(
            *args, **{**kwargs, "disable": True}), raising=False)


def test_the_corpus_is_large_and_well_formed():
    names = [case["name"] for case in CASES]
    assert len(names) >= 124 and len(set(names)) == len(names)
    for case in CASES:
        assert set(case) <= {"name", "args", "error", "setup", "output", "leaves", "tamper",
                             "fault"}, case["name"]
        setup = case.get("setup")
        assert case["error"] and (setup in SETUPS or setup in TEMPLATES), case["name"]
        assert case.get("fault") in (None, *FAULTS), case["name"]


def assert_no_partial_output(run: Path, before: dict[str, str], leaves: list[str]) -> None:
    after = snapshot(run)
    leftovers = [p for p in after if any(part.startswith(".") or part.endswith(".tmp")
                                         for part in Path(p).parts)]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
    unexpected = sorted(p for p in changed if p not in METADATA and not p.startswith("locks/")
                        and not any(p.startswith(f"{prefix}/") for prefix in leaves))
    assert not unexpected, f"a failed command wrote or removed outputs: {unexpected}"
    new_checkpoints = [p for p in after if p.startswith("checkpoints/") and p not in before
                       and not any(p.startswith(f"{prefix}/") for prefix in leaves)]
    assert not new_checkpoints, f"a failed command left checkpoints: {new_checkpoints}"
    for name in (METADATA - {"run.lock"}) & changed & set(after):
        text = (run / name).read_text(encoding="utf-8")
        json.loads(text) if name.endswith(".json") else yaml.safe_load(text)  # complete
    if "run.json" in changed and "run.json" in after:
        stages = json.loads((run / "run.json").read_text())["stages"]
        running = [name for name, stage in stages.items() if stage.get("status") == "running"]
        assert not running, f"stages recorded as running after the command failed: {running}"
        if leaves:  # it failed during a stage: the record says so
            assert any(stage.get("status") == "failed" for stage in stages.values()), stages


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, tmp_path_factory, monkeypatch):
    output = case.get("output", True)
    run = tmp_path / NON_UTF8 if output == "non_utf8" else \
        tmp_path / "run" if output in (True, False) else HERE / output
    setup = case.get("setup")
    if setup in TEMPLATES:
        from_template(setup, run, tmp_path_factory)
    else:
        SETUPS[setup](run)
    changes = case.get("tamper") or []
    if changes and not isinstance(changes[0], list):
        changes = [changes]
    for how, file in changes:
        tamper(run, how, file, tmp_path_factory)
    corpus_before = snapshot(HERE)
    outside_before = snapshot(tmp_path)
    inside = output in (True, "non_utf8")
    run_before = snapshot(run) if inside else {}
    args = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path))
            .replace("{non_utf8}", NON_UTF8) for a in case["args"]]
    args += ["-o", str(run)] if output is not False else []
    if case.get("fault"):
        FAULTS[case["fault"]](monkeypatch)

    result = invoke(args)

    monkeypatch.undo()
    monkeypatch.chdir(HERE)
    assert result.exit_code not in (0, None), result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    for fragment in case["error"]:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert snapshot(HERE) == corpus_before, "a bad-input case changed the corpus"
    assert not (HERE / "pwned.txt").exists(), "an unsafe pickle ran code"
    assert not (HERE / "runs").exists() and not (HERE.parents[1] / "escaped").exists()
    if inside:
        prefix = f"{run.relative_to(tmp_path)}/"
        outside = sorted(p for p, h in snapshot(tmp_path).items()
                         if outside_before.get(p) != h and not p.startswith(prefix))
        assert not outside, f"written outside the run directory: {outside}"
        assert_no_partial_output(run, run_before, case.get("leaves", []))
