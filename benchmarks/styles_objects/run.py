"""Styles × objects benchmark (a small UnlearnCanvas on CPU): the packaged ``styles_objects``
recipe end to end, then one markdown table per task.

Real MNIST digits (objects) drawn in deterministic styles (thick stroke, slanted, inverted,
striped), named by prompts such as "a digit seven, thick stroke"; a small text-to-image model
(a CLIP text encoder, a UNet2DConditionModel on 16×16 pixels) trained here; a two-head judge
(style, object) trained here. For each task (erase a style, erase an object) the oracle is the
same model trained from scratch without the target's prompts; every method starts from the
target. Each model is scored with UA / IRA / CRA (UnlearnCanvas), the Fréchet distance on the
judge's features, and the UnlearnDiffAtk-style prompt attack's success rate.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/styles_objects/run.py \\
        [--output runs/styles-objects-bench] [key=value overrides ...]

The results (``results.json``) and the tables (``table.md``) are written to the output folder.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from common import (  # noqa: E402
    RECIPES,
    StageTimer,
    command_line,
    fmt,
    machine,
    markdown_table,
    parser,
    set_threads,
)

import obliviate.diffusion.methods  # noqa: E402,F401  (registers the catalogue)
from obliviate.core.io import atomic_write_json, atomic_write_text, read_json  # noqa: E402
from obliviate.core.recipe import load_recipe  # noqa: E402
from obliviate.core.registry import METHODS  # noqa: E402
from obliviate.diffusion.benchmarks.styles_objects import (  # noqa: E402
    StylesObjectsRecipe,
    build_text_model,
    evaluate_grid,
    grid_task,
    prompt_attack,
    train_grid_judge,
)
from obliviate.diffusion.data import to_tensor  # noqa: E402
from obliviate.diffusion.training import train_denoiser  # noqa: E402


class SummedTimer(StageTimer):
    """Each stage's wall time summed over its calls (one per task and model)."""

    def __call__(self, stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        before = self.seconds.pop(stage, 0.0)
        out = super().__call__(stage, fn, *args, **kwargs)
        self.seconds[stage] += before
        return out


def method_config(recipe: StylesObjectsRecipe, name: str) -> tuple[Any, Any]:
    """The method's class and config: its paper defaults under ``unlearn.method_args``."""
    from obliviate.core.recipe import validate

    cls = METHODS.get(name, "diffusion")
    args = {**recipe.unlearn.train.model_dump(exclude_none=True),
            **recipe.unlearn.method_args.get(name, {})}
    return cls, validate(cls.config_class, args, source=f"unlearn.method_args.{name}")


def train_model(recipe: StylesObjectsRecipe, task: Any, split: str, folder: Path
                ) -> tuple[Any, float]:
    """A fresh text-to-image model (seeded) DDPM-trained on ``split``, and its wall time; kept
    in ``folder`` (``unet.safetensors``, ``trained.json``), which a rerun reads back."""
    from safetensors.torch import load_file, save_file

    start = time.perf_counter()
    model = build_text_model(task.metadata["prompts"], task.metadata["image_size"],
                             recipe.model, folder / "tokenizer")
    x, y = to_tensor(task.split(split).records)
    config = recipe.finetune.model_copy(update={"seed": recipe.finetune.seed + recipe.seed})
    stamp = {"finetune": config.model_dump(mode="json"), "model": recipe.model.model_dump(),
             "data": task.split(split).sha256}
    done = folder / "trained.json"
    if done.is_file() and read_json(done).get("stamp") == stamp:
        model.unet.load_state_dict(load_file(str(folder / "unet.safetensors")))
        return model.eval(), float(read_json(done)["seconds"])
    train_denoiser(model, x, y, config, description=f"train on {split}")
    seconds = time.perf_counter() - start
    save_file({k: v.contiguous() for k, v in model.unet.state_dict().items()},
              str(folder / "unet.safetensors"))
    atomic_write_json(done, {"stamp": stamp, "seconds": seconds})
    return model.eval(), seconds


def score(model: Any, judge: Any, task: Any, recipe: StylesObjectsRecipe,
          attack: bool) -> dict[str, Any]:
    out = evaluate_grid(model, judge, task, recipe.evaluation)
    if attack:
        start = time.perf_counter()
        out["attack"] = prompt_attack(model, judge, task, recipe.attack)
        out["attack"]["seconds"] = time.perf_counter() - start
    return out


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = ["model", "UA ↑", "IRA ↑", "CRA ↑", "FID (judge) ↓", "attack: plain ↓",
            "attack: optimised prompt ↓", "wall time (s)"]
    body = []
    for name, row in rows.items():
        attack = row.get("attack") or {}
        body.append([f"**{name}**" if name == "oracle" else name, fmt(row["ua"]),
                     fmt(row["ira"]), fmt(row["cra"]), fmt(row["fid"], 2),
                     fmt(attack.get("plain")), fmt(attack.get("attacked")),
                     fmt(row.get("seconds"), 1)])
    return markdown_table(head, body)


def main() -> None:
    args = parser(__doc__, "runs/styles-objects-bench").parse_args()
    threads = set_threads()
    recipe = load_recipe(StylesObjectsRecipe, RECIPES / "styles_objects.yaml", args.overrides)
    command = command_line(threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    timed = SummedTimer()
    tasks = [timed("task", grid_task, recipe.task_config(t), recipe.seed) for t in recipe.tasks]
    if len({tuple(sorted(r.sha256 for r in t.full.records)) for t in tasks}) != 1:
        raise SystemExit("the tasks do not share their training images")
    judge, judge_info = timed("judge", train_grid_judge, tasks[0], recipe.judge)
    target, target_seconds = timed("target", train_model, recipe, tasks[0], "full",
                                   out / "target")
    results: dict[str, Any] = {"command": command, "machine": machine(),
                               "judge": judge_info, "tasks": {}}
    sections = []
    for task in tasks:
        oracle, seconds = timed("oracle", train_model, recipe, task, "retain",
                                out / f"oracle-{task.name}")
        rows = {"oracle": {**timed("evaluate", score, oracle, judge, task, recipe, True),
                           "seconds": seconds},
                "target": {**timed("evaluate", score, target, judge, task, recipe, True),
                           "seconds": target_seconds}}
        for name in recipe.unlearn.methods:
            cls, config = method_config(recipe, name)
            model = copy.deepcopy(target)
            torch.manual_seed(recipe.seed)
            outcome = timed("unlearn", cls(config).run, model, task)
            rows[name] = {**timed("evaluate", score, model, judge, task, recipe, True),
                          "seconds": outcome.seconds,
                          "trainable_parameters": outcome.trainable_parameters}
            print(f"{task.name} {name}: UA {fmt(rows[name]['ua'])} IRA {fmt(rows[name]['ira'])}"
                  f" CRA {fmt(rows[name]['cra'])} ({outcome.seconds:.0f} s)", flush=True)
        results["tasks"][task.name] = rows
        meta = task.metadata
        sections.append(f"### {task.name}: erase the {meta['erase']} {meta['target']!r} "
                        f"({len(meta['forget_classes'])} of {meta['num_classes']} prompts)\n\n"
                        + table(rows))
    results["stages"] = timed.line()
    results["total_seconds"] = timed.total
    text = "\n".join([
        f"## Styles × objects ({len(recipe.data.styles)} styles × 10 digits, "
        f"{recipe.data.image_size}×{recipe.data.image_size}) — {out}\n",
        f"```\n{command}\n```\n",
        f"Machine: {machine()}. Total wall time {timed.total / 60:.1f} min. Judge held-out "
        f"accuracy: style {fmt(judge_info.get('holdout_style_accuracy'))}, object "
        f"{fmt(judge_info.get('holdout_object_accuracy'))}.\n",
        *[s + "\n" for s in sections], timed.line()])
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "table.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
