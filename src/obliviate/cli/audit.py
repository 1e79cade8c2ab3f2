"""``obliviate audit RUN_DIR``: what a run removed, how, from which models, and how it was checked.

The summary is read from the run's audit record (``run.json``): the forget and retain sets (name,
size, SHA-256 of their content), every model produced (SHA-256 of its safetensors weights, the
method and its configuration), the evaluations and attacks that were run, the package versions
and timestamps, and the oracle the run's benchmark expects next to the one the run trained. It
also lists what a reviewer should look at: stages that did not finish, an oracle not trained on
exactly the retain set, models evaluated or unlearned with weights other than the ones recorded,
and (with ``--verify``) model files on disk that no longer match the record: every file of each
model folder (weights, config, tokenizer, generation config, manifest, a diffusion model's VAE,
the judge), for both modalities alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from obliviate.cli.common import friendly_errors
from obliviate.core.benchmark import oracle_statement
from obliviate.core.errors import ObliviateError
from obliviate.core.integrity import model_differences
from obliviate.core.io import sha256_dir
from obliviate.core.record import ModelFiles
from obliviate.core.rundir import RunDir


def _weights_on_disk(path: Path) -> str | None:
    """SHA-256 of the safetensors weights in a model folder (an unlearned one: its ``model/``)."""
    if (path / "model").is_dir():
        path = path / "model"
    if not path.is_dir() or not any(path.glob("*.safetensors")):
        return None
    return sha256_dir(path, ("*.safetensors",))


def _split(task: dict[str, Any], role: str) -> dict[str, Any] | None:
    name = task.get("roles", {}).get(role)
    return task.get("splits", {}).get(name) if name else None


def audit_record(run_dir: str | Path, verify: bool = False) -> dict[str, Any]:
    """The audit summary of a run directory as one JSON-ready dict (see the module docstring)."""
    root = Path(run_dir)
    if not (root / "run.json").is_file():
        raise ObliviateError(f"{root}: no run.json here (not an obliviate run directory)")
    record = RunDir(root).read_record()  # a malformed record is one line naming it
    stages: dict[str, dict[str, Any]] = record.get("stages") or {}
    task = record.get("task") or {}
    forget, retain = _split(task, "forget"), _split(task, "retain")
    issues: list[str] = []

    models: dict[str, dict[str, Any]] = {}
    for name, stage in stages.items():
        if name.startswith("finetune_"):
            role = name.removeprefix("finetune_")
            models[role] = {
                "stage": name, "status": stage.get("status"), "kind": "fine-tuned",
                "weights_sha256": stage.get("weights_sha256"),
                "trained_on": stage.get("split"), "steps": stage.get("steps"),
                "resumed_from": stage.get("resumed_from"), "finished": stage.get("updated"),
                "config": stage.get("config")}
        elif name.startswith("unlearn_"):
            method = stage.get("method") or name.removeprefix("unlearn_")
            models[f"unlearned/{method}"] = {
                "stage": name, "status": stage.get("status"), "kind": "unlearned",
                "method": method, "paper": stage.get("paper"),
                "weights_sha256": stage.get("weights_sha256"),
                "prompt_only": stage.get("status") == "done" and not stage.get("weights_sha256"),
                "manifest_sha256": stage.get("manifest_sha256"),
                "from_target": stage.get("target"),
                "target_weights_sha256": stage.get("target_weights_sha256"),
                "steps": stage.get("steps"), "resumed_from": stage.get("resumed_from"),
                "finished": stage.get("updated"), "config": stage.get("config"),
                "train": stage.get("train"), "lora": stage.get("lora"),
                "selection": (stage.get("selection") or {}).get("rule"),
                "forget_sha256": ((stage.get("data") or {}).get(forget["name"], {})
                                  .get("sha256") if forget else None)}
    evaluation = {name.removeprefix("eval_"): {
        "status": stage.get("status"), "suites": stage.get("suites"),
        "left_out": stage.get("left_out") or {}, "options": stage.get("options"),
        "weights_sha256": stage.get("weights_sha256"),
        "finished": stage.get("updated"), "summary": stage.get("summary") or {}}
        for name, stage in stages.items() if name.startswith("eval_")}
    attacks: dict[str, dict[str, Any]] = {}
    for name, stage in stages.items():
        if name.startswith("attack_") and stage.get("model") and stage.get("attack"):
            attacks.setdefault(stage["model"], {})[stage["attack"]] = {
                key: stage.get(key) for key in ("status", "metric", "plain", "attacked",
                                                "oracle_plain", "oracle_attacked", "recovery",
                                                "config")}

    # -- what a reviewer should look at -------------------------------------------------------
    for name, stage in stages.items():
        status = stage.get("status")
        if status != "done":
            why = f": {stage['error']}" if stage.get("error") else ""
            issues.append(f"stage {name} is {status or 'unrecorded'}{why}")
    oracle = models.get("oracle")
    if oracle and retain and (oracle.get("trained_on") or {}).get("sha256") != retain["sha256"]:
        issues.append("the oracle was not trained on exactly the retain set")
    target_hash = (models.get("target") or {}).get("weights_sha256")
    for name, info in models.items():
        if info["kind"] != "unlearned" or info["status"] != "done":
            continue
        if forget and info.get("forget_sha256") not in (None, forget["sha256"]):
            issues.append(f"{name} was unlearned with a different forget set than the task's")
        source = info.get("target_weights_sha256")
        if target_hash and source and source != target_hash and \
                Path(str(info.get("from_target"))).resolve() == (root / "models/target").resolve():
            issues.append(f"{name} was unlearned from other weights than the recorded target")
        if name not in evaluation:
            issues.append(f"{name} was not evaluated")
    for name, info in evaluation.items():
        produced = (models.get(name) or {}).get("weights_sha256")
        if produced and info.get("weights_sha256") and info["weights_sha256"] != produced:
            issues.append(f"the evaluation of {name} used other weights than the recorded model")
    verified: dict[str, bool] = {}
    if verify:
        for name, info in models.items():
            produced = stages[info["stage"]].get("produced")
            if isinstance(produced, dict):  # every file of the folder
                problems = model_differences(RunDir(root), ModelFiles.model_validate(produced))
                verified[name] = not problems
                shown = ", ".join(str(Path(p).relative_to(root)) if Path(p).is_relative_to(root)
                                  else p for p in problems[:3])
                more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
                if any(".safetensors" in p for p in problems):
                    issues.append(f"{name}: weights on disk differ from the recorded SHA-256 "
                                  f"({shown}{more})")
                elif problems:
                    issues.append(f"{name}: files on disk differ from the record "
                                  f"({shown}{more})")
            elif info.get("weights_sha256"):  # recorded before every file was hashed
                on_disk = _weights_on_disk(root / "models" / name)
                verified[name] = on_disk == info["weights_sha256"]
                if on_disk is None:
                    issues.append(f"{name}: weights missing from {root / 'models' / name}")
                elif not verified[name]:
                    issues.append(f"{name}: weights on disk differ from the recorded SHA-256")

    environment = record.get("environment") or {}
    commands = record.get("commands") or []
    return {
        "run": str(root), "name": record.get("name"), "modality": record.get("modality"),
        "created": record.get("created"), "updated": record.get("updated"),
        "versions": {k: environment.get(k) for k in ("obliviate", "python", "torch",
                                                      "transformers", "peft", "diffusers")
                     if environment.get(k)},
        "commands": commands, "recipe": record.get("recipe"),
        "oracle": oracle_statement(record, task),
        "removed": {"task": task.get("name"), "forget": forget, "retain": retain,
                    "other_splits": [s for s in (task.get("splits") or {}).values()
                                     if s not in (forget, retain)]},
        "models": models, "evaluation": evaluation, "attacks": attacks,
        **({"verified": verified} if verify else {}),
        "warnings": [f"{name.removeprefix('eval_')}: {w}" for name, stage in stages.items()
                     for w in stage.get("warnings") or []],
        "issues": issues,
    }


def _data_line(role: str, split: dict[str, Any] | None) -> str:
    if not split:
        return f"  {role:<7} (not recorded)"
    return (f"  {role:<7} {split.get('name')}: {split.get('n')} records, sha256 "
            f"{split.get('sha256')}  [{split.get('source', '')}]")


def _short(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _how(info: dict[str, Any]) -> str:
    if info["kind"] == "fine-tuned":
        data = info.get("trained_on") or {}
        return f"fine-tuned on {data.get('name')} ({data.get('n')} records), {info['steps']} steps"
    config = ", ".join(f"{k}={_short(v)}" for k, v in (info.get("config") or {}).items()
                       if k != "seed")
    train = info.get("train") or {}
    lora = " LoRA" if (info.get("lora") or {}).get("enabled") else ""
    cost = "prompt only" if info.get("prompt_only") else \
        f"lr {train.get('learning_rate')}{lora}, {info.get('steps')} steps"
    return f"{info['method']} ({info.get('paper') or 'no paper'}) {config}; {cost}"


def format_audit(info: dict[str, Any]) -> str:
    """The human-readable audit summary."""
    from obliviate.cli.evaluate import format_summary
    from obliviate.core.benchmark import headline

    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    commands = info["commands"]
    lines = [f"Audit of {info['run']}: {info['name']} ({info['modality']}); {versions}",
             f"created {info['created']}, last updated {info['updated']}; "
             f"{len(commands)} command(s)" + (f", last: {_short(commands[-1].get('command'), 60)}"
                                               if commands else ""),
             "", f"WHAT WAS REMOVED  (task {info['removed']['task']})",
             _data_line("forget", info["removed"]["forget"]),
             _data_line("retain", info["removed"]["retain"])]
    for split in info["removed"]["other_splits"]:
        lines.append(f"  {'eval':<7} {split.get('name')}: {split.get('n')} records, sha256 "
                     f"{split.get('sha256')}")
    oracle = info.get("oracle") or {}
    lines += ["", f"ORACLE  (benchmark {oracle.get('benchmark') or 'not recorded'})",
              f"  expected  {oracle.get('expected') or '(no registered benchmark says)'}",
              f"  this run  {oracle.get('actual')}"]
    lines += ["", "MODELS  (SHA-256 of the safetensors weights)"]
    width = max([len(n) for n in info["models"]] + [6]) + 2
    for name, model in info["models"].items():
        digest = model.get("weights_sha256") or ("(the target's weights + a prompt)"
                                                 if model.get("prompt_only") else "(none)")
        status = "" if model["status"] == "done" else f"  [{model['status']}]"
        lines.append(f"  {name:<{width}}{digest}{status}")
        lines.append(f"  {'':<{width}}{_how(model)}")
    lines += ["", "HOW IT WAS CHECKED"]
    done = {n: e["summary"] for n, e in info["evaluation"].items() if e["status"] == "done"}
    if done:
        suites = sorted({s for e in info["evaluation"].values() for s in e.get("suites") or []})
        lines.append(f"  evaluation ({', '.join(suites)}):")
        left_out = {s: why for e in info["evaluation"].values()
                    for s, why in (e.get("left_out") or {}).items()}
        lines += [f"    not run: {suite}: {why}" for suite, why in sorted(left_out.items())]
        shown = headline(info["modality"] or "llm", oracle.get("benchmark"))
        lines += [f"    {row}" for row in format_summary(done, shown).splitlines()]
    else:
        lines.append("  no evaluation recorded")
    if info["attacks"]:
        lines.append("  attacks (recovery: attacked minus the oracle under the same attack):")
        rows = [(f"{model} {attack} ({r.get('metric')})", r)
                for model, by_attack in info["attacks"].items() for attack, r in by_attack.items()]
        label_width = max(len(label) for label, _ in rows) + 2
        for label, r in rows:
            cells = "  ".join(f"{k} {r[k]:.4g}" for k in ("plain", "attacked",
                                                            "oracle_attacked", "recovery")
                              if isinstance(r.get(k), (int, float)))
            lines.append(f"    {label:<{label_width}}{cells}")
    else:
        lines.append("  no attacks recorded")
    if "verified" in info:
        ok = sum(info["verified"].values())
        lines.append(f"  models re-hashed on disk (every file): {ok} of {len(info['verified'])} "
                     "match")
    if info["warnings"]:
        lines += ["", "WARNINGS (numbers not to take as they are)"]
        lines += [f"  - {warning}" for warning in info["warnings"]]
    lines += ["", "ISSUES" if info["issues"] else "ISSUES: none"]
    lines += [f"  - {issue}" for issue in info["issues"]]
    return "\n".join(lines)


@friendly_errors
def audit(
    run_dir: Annotated[str, typer.Argument(help="a run directory (holds run.json)")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    verify: Annotated[bool, typer.Option(
        help="re-hash every file of each model and compare it with the record")] = False,
) -> None:
    """Summarise a run for a compliance review: what was removed (forget set, size, hash), how
    (method and configuration), which models (weight hashes) and how it was checked (evaluation
    and attacks). Exits 1 when --verify finds weights that differ from the record.
    """
    info = audit_record(run_dir, verify=verify)
    typer.echo(json.dumps(info, indent=2) if as_json else format_audit(info))
    if verify and not all(info["verified"].values()):
        raise typer.Exit(1)
