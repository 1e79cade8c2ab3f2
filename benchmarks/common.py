"""Helpers shared by the end-to-end benchmark scripts (``benchmarks/*/run.py``).

Each script loads one packaged recipe, opens a resumable run directory, runs the pipeline's
stages with wall-clock timing and prints a markdown table with the exact command, the commit
and the machine, ready to paste into ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RECIPES = Path(__file__).resolve().parents[1] / "src" / "obliviate" / "recipes"


def fmt(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or an en dash for a missing value."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "–"


def parser(doc: str, default_output: str) -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(description=doc.splitlines()[0])
    out.add_argument("--output", default=default_output)
    out.add_argument("overrides", nargs="*", help="recipe overrides, section.key=value")
    return out


def add_workers(out: argparse.ArgumentParser) -> None:
    """``--workers N``: the stages' jobs taken by N processes at once; ``--jobs`` (set by the
    script for each of them): the plan they share (:func:`run_in_workers`)."""
    out.add_argument("--workers", type=int, default=1,
                     help="run the stages' models, methods and roles in this many processes "
                          "at once, OMP_NUM_THREADS/N threads each (default 1: one process)")
    out.add_argument("--jobs", default="", help=argparse.SUPPRESS)


@dataclass(frozen=True)
class Job:
    """One piece of a worker's work: ``stage`` for ``name`` (a model, method or role), once the
    jobs whose keys ``after`` lists are done (a key the plan does not hold counts as done)."""

    stage: str
    name: str
    after: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.stage}:{self.name}"


def run_in_workers(script: str, args: argparse.Namespace, jobs: list[Job]) -> None:
    """Run ``jobs`` of ``script`` in ``args.workers`` processes with ``OMP_NUM_THREADS``
    divided among them; wait for all of them.

    Every worker is given the whole plan (``--jobs``, a file in a temporary folder where the
    workers claim jobs) and runs :func:`take_jobs`: each takes the first job in plan order that
    no other worker has taken and whose prerequisites are done, so a worker never idles while
    there is work it may start, whatever stage that work belongs to. A process holds one model
    at a time, so N processes hold N. They share the run folder, whose record takes concurrent
    stages (:mod:`obliviate.core.rundir`)."""
    threads = max(1, int(os.environ.get("OMP_NUM_THREADS") or 2) // args.workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="jobs-") as folder:
        plan = Path(folder) / "plan.json"
        plan.write_text(json.dumps([[j.stage, j.name, list(j.after)] for j in jobs]))
        processes = [subprocess.Popen(
            [sys.executable, script, "--output", args.output, "--jobs", str(plan),
             *args.overrides], env=env) for _ in range(min(args.workers, len(jobs)))]
        try:
            failed = _wait(processes, Path(folder))
        finally:  # this process stopped early (an interrupt): its workers stop with it
            for process in processes:
                if process.poll() is None:
                    process.terminate()
                    process.wait()
    if failed:
        raise SystemExit(f"{failed} of {len(processes)} workers failed (their output is "
                         "above)")


def _wait(processes: list[subprocess.Popen], folder: Path, poll: float = 0.5) -> int:
    """Wait for every worker; return how many failed. A worker that ends badly without marking
    its job failed (killed by a signal, out of memory) is marked here, so the workers waiting
    for its job stop instead of waiting for ever."""
    running = dict(enumerate(processes))
    failed = 0
    while running:
        for i, process in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[i]
            if code != 0:
                failed += 1
                _create(folder / f"failed-worker-{i}")
        time.sleep(poll if running else 0)
    return failed


def take_jobs(plan: str | Path, run: Callable[[Job], Any], poll: float = 0.5) -> list[Job]:
    """Run, one after another, the jobs of ``plan`` (written by :func:`run_in_workers`) that
    this worker takes, and return them: the first job in plan order that no worker sharing the
    plan's folder has taken (an exclusive file create) and whose prerequisites are done; while
    none is ready, wait. Stops when every job is taken, or when another worker's job failed
    (its dependents would never start); a job that raises is marked failed and re-raised."""
    folder = Path(plan).parent
    jobs = [Job(stage, name, tuple(after)) for stage, name, after in json.loads(
        Path(plan).read_text())]
    keys = {job.key for job in jobs}

    def marker(kind: str, key: str) -> Path:
        return folder / f"{kind}-{key.replace('/', '%2F')}"

    taken: list[Job] = []
    while not any(folder.glob("failed-*")):
        free = [job for job in jobs if not marker("taken", job.key).exists()]
        if not free:
            break
        ready = (job for job in free
                 if all(marker("done", a).exists() for a in job.after if a in keys))
        job = next((job for job in ready if _create(marker("taken", job.key))), None)
        if job is None:
            time.sleep(poll)
            continue
        try:
            run(job)
        except BaseException:
            _create(marker("failed", job.key))
            raise
        _create(marker("done", job.key))
        taken.append(job)
    return taken


def _create(path: Path) -> bool:
    """Create ``path``; False if it exists (another worker got there first)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def add_stages(out: argparse.ArgumentParser, stages: tuple[str, ...]) -> None:
    """``--stages``: a comma-separated subset of ``stages`` (empty: print the tables only)."""
    out.add_argument("--stages", default=",".join(stages),
                     help=f"comma-separated subset of {', '.join(stages)} (empty: print the "
                          "tables of what the run has)")


def chosen_stages(out: argparse.ArgumentParser, value: str, stages: tuple[str, ...]
                  ) -> list[str]:
    chosen = [s for s in value.split(",") if s]
    unknown = set(chosen) - set(stages)
    if unknown:
        out.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    return chosen


def set_threads() -> str | None:
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        torch.set_num_threads(int(threads))
    return threads


def command_line(threads: str | None) -> str:
    return " ".join(["OMP_NUM_THREADS=" + (threads or "?"), sys.executable.split("/")[-1],
                     *sys.argv])


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=RECIPES).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


STARTED_AT = commit()
"""The commit checked out when the benchmark started (what its run imports)."""


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, commit {STARTED_AT}")


class StageTimer:
    """Runs stages, prints each one's wall time to stderr and keeps them for the table."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    def __call__(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[stage] = time.perf_counter() - t0
        print(f"[{stage}] {self.seconds[stage]:.0f}s", file=sys.stderr, flush=True)
        return out

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start

    def line(self) -> str:
        return "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}"
                                                    for k, v in self.seconds.items())


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def model_order(names: list[str]) -> list[str]:
    """Oracle and target first, then the unlearned models in their order."""
    first = [n for n in ("oracle", "target") if n in names]
    return first + [n for n in names if n not in first]


def stage_seconds(record: dict[str, Any], name: str) -> float | None:
    """Wall time of the stage that produced model ``name`` (fine-tuning or unlearning)."""
    stage = (f"finetune_{name}" if name in ("oracle", "target")
             else f"unlearn_{name.split('/')[-1]}")
    return record.get(stage, {}).get("seconds")


def metrics_table(summaries: dict[str, dict[str, float]], record: dict[str, Any],
                  metrics: list[tuple[str, str, int]]) -> str:
    """One row per model (oracle, target, then the methods): each ``(column, summary key,
    decimals)`` of ``metrics``, then the wall time of the stage that made the model."""
    head = ["model", *[c for c, _, _ in metrics], "train time (s)"]
    rows = []
    for name in model_order(list(summaries)):
        summary = summaries[name]
        label = f"**{name}**" if name == "oracle" else name.removeprefix("unlearned/")
        rows.append([label, *[fmt(summary.get(key), d) for _, key, d in metrics],
                     fmt(stage_seconds(record, name), 0)])
    return markdown_table(head, rows)


def recorded_results(record: dict[str, Any]
                     ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]]]:
    """The evaluations and attacks a run has finished, from its audit record."""
    summaries = {k.removeprefix("eval_"): v["summary"] for k, v in record.items()
                 if k.startswith("eval_") and v.get("status") == "done"}
    attacks: dict[str, dict[str, Any]] = {}
    for stage in record.values():
        if stage.get("attack") and stage.get("status") == "done":
            attacks.setdefault(stage["model"], {})[stage["attack"]] = stage
    return summaries, attacks


def add_threads(out: argparse.ArgumentParser) -> None:
    """``--threads``: torch threads, default ``OMP_NUM_THREADS`` or 2."""
    out.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)),
                     help="torch threads (default: OMP_NUM_THREADS, else 2)")


def tofu_or_synthetic(names: tuple[str, ...], per_split: int) -> tuple[list[Any], str]:
    """The first ``per_split`` TOFU records of each split in ``names`` (``forget01``,
    ``retain_eval``, ``real_authors``, ``world_facts``) and a description; without the TOFU
    folder, as many synthetic-facts records."""
    from obliviate.llm.data.tofu import default_tofu_root, load_tofu

    try:
        tofu = load_tofu(default_tofu_root(), forget_splits=("forget01",))
    except Exception as err:  # noqa: BLE001 - any missing or unreadable folder: synthetic facts
        from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts

        facts = generate_synthetic_facts(SyntheticFactsConfig())
        records = [r for split in facts.values() for r in split][:len(names) * per_split]
        return records, f"synthetic facts (TOFU unavailable: {err})"
    splits = {"forget01": tofu.forget["forget01"], **tofu.evaluation}
    records = [r for name in names for r in splits[name][:per_split]]
    return records, "TOFU " + ", ".join(f"{n} {per_split}" for n in names)
