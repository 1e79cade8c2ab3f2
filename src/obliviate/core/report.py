"""``obliviate report RUN_DIR``: one self-contained HTML page, its JSON, a markdown leaderboard.

Modality-neutral: everything comes from files in the run directory — ``run.json`` (stages:
``eval_<model>`` summaries, ``attack_*`` results, ``finetune_*``/``unlearn_*`` costs and
configs), ``task.json`` (data hashes), ``cost.json`` (FLOPs estimates, when written),
``sweep/`` (cells, see :mod:`obliviate.core.sweep`), and each model's ``eval/<model>/`` folder
for samples (``eval_log_aggregated.json`` or ``samples.json``) and images (``*.png``).
Which metric is forgetting, utility and robustness is what the run's benchmark declares
(:mod:`obliviate.core.axes`): closeness to the oracle (the oracle and target rows are the
references); the page states the oracle the benchmark expects next to the run's. Each method's
reported point is chosen by a selection rule that reads no oracle information (the raw axes);
methods are then ranked by their distance to the oracle's point on forgetting × utility ×
robustness, and only attacked models are ranked (:func:`ranking`); the verdict
(:mod:`obliviate.core.verdict`) sums it up in a few sentences at the top of every output.

Outputs (written atomically)::

    RUN_DIR/report/report.html     plots inline (base64 PNG), no external assets, no scripts
    RUN_DIR/report/report.json     every number the page shows
    RUN_DIR/report/leaderboard.md  each method's reported point, ranked
    RUN_DIR/report/pareto.png      the Pareto plot on its own
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.core.axes import AXES, AxisMap, References
from obliviate.core.benchmark import oracle_statement, run_benchmark
from obliviate.core.cost import FLOPS_RULE, cost_from_stage, cost_ratios
from obliviate.core.errors import DataError
from obliviate.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from obliviate.core.pareto import (
    AXES_2D,
    AXES_3D,
    Configuration,
    OracleDistanceRule,
    Point,
    ProxyRule,
    SelectionRule,
    ThresholdRule,
    aggregate_seeds,
    oracle_distance,
    pareto_front,
    parse_rule,
    select_reported,
)
from obliviate.core.report_requests import requests_section
from obliviate.core.report_search import search_section
from obliviate.core.rundir import RunDir, utc_now
from obliviate.core.sweep import load_results, load_spec
from obliviate.core.verdict import THRESHOLDS, verdict

DEFAULT_RULE = "threshold:0.5"
MAX_SAMPLES = 4
MAX_IMAGES = 8


@dataclass
class ModelRow:
    """One evaluated model of the run (root models and sweep cells alike)."""

    name: str
    kind: str  # oracle | target | unlearned | cell | other (e.g. a hub model evaluated as is)
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    config_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    directory: str = ""  # the run directory holding eval/<eval_name>/
    eval_name: str = ""
    scores: dict[str, float | None] = field(default_factory=dict)
    used: dict[str, str | None] = field(default_factory=dict)
    changes_weights: bool = True  # False for prompt-only methods (guardrail, ICUL)

    @property
    def label(self) -> str:
        if self.kind != "cell":
            return self.name
        shown = " ".join(f"{k.split('.')[-1]}={v}" for k, v in self.params.items())
        return f"{self.method} {shown}".strip()


def _kind(name: str) -> str:
    if name in ("oracle", "target"):
        return name
    return "unlearned" if name.startswith("unlearned/") else "other"


def changes_weights(stage: dict[str, Any]) -> bool:
    """False for a method that wrote no weights (a prompt-only baseline): the stage says so, or
    it recorded the hash of its weights as ``None``."""
    if "changes_weights" in stage:
        return bool(stage["changes_weights"])
    return not ("weights_sha256" in stage and stage["weights_sha256"] is None)


def _attack_metrics(stage: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key in ("plain", "attacked", "oracle_attacked", "recovery"):
        value = stage.get(key)
        if isinstance(value, (int, float)):
            out[f"attack/{stage.get('attack')}/{stage.get('metric', 'probe')}/{key}"] = value
    return out


def root_rows(run: RunDir, record: dict[str, Any]) -> list[ModelRow]:
    """The models the root run evaluated, with their attacks, configs and costs."""
    stages = record.get("stages", {})
    costs = {}
    cost_file = run.root / "cost.json"
    if cost_file.is_file():
        costs = read_json(cost_file).get("models", {})
    rows: dict[str, ModelRow] = {}
    for stage_name, stage in stages.items():
        if not stage_name.startswith("eval_") or stage.get("status") != "done":
            continue
        name = stage_name.removeprefix("eval_")
        rows[name] = ModelRow(name=name, kind=_kind(name), metrics=dict(stage.get("summary", {})),
                              directory=str(run.root), eval_name=name, config_id=name)
    for stage_name, stage in stages.items():
        if stage_name.startswith("attack_") and stage.get("model") in rows:
            rows[stage["model"]].metrics.update(_attack_metrics(stage))
        elif stage_name.startswith("unlearn_") and stage.get("status") == "done":
            method = stage.get("method") or stage_name.removeprefix("unlearn_")
            row = rows.get(f"unlearned/{method}")
            if row is not None:
                row.method = method
                row.changes_weights = changes_weights(stage)
                row.config = {"method": stage.get("config", {}), "train": stage.get("train"),
                              "lora": stage.get("lora"), "paper": stage.get("paper")}
    for name, row in rows.items():
        stage = stages.get(f"finetune_{name}") or stages.get(
            f"unlearn_{row.method}" if row.method else "", {})
        row.cost = costs.get(name) or (cost_from_stage(stage) if stage else {})
        row.method = row.method or (None if row.kind != "unlearned" else name.split("/")[-1])
    return list(rows.values())


def cell_rows(root: Path) -> list[ModelRow]:
    """One row per finished sweep cell."""
    rows = []
    for cell in load_results(root):
        directory = root / "sweep" / cell["cell_id"]
        metrics = {k: v for k, v in cell.get("metrics", {}).items() if not k.startswith("cost/")}
        cost = {k.removeprefix("cost/"): v for k, v in cell.get("metrics", {}).items()
                if k.startswith("cost/") and not k.endswith("_ratio")}
        record = read_json(directory / "run.json") if (directory / "run.json").is_file() else {}
        stages = record.get("stages", {})
        evals = [s.removeprefix("eval_") for s in stages if s.startswith("eval_")]
        unlearn = stages.get(f"unlearn_{cell['method']}", {})
        rows.append(ModelRow(
            name=f"sweep/{cell['cell_id']}", kind="cell", method=cell["method"],
            params=cell.get("params", {}), seed=cell.get("seed"), config_id=cell["config_id"],
            metrics=metrics, cost=cost, directory=str(directory),
            eval_name=evals[0] if evals else "", changes_weights=changes_weights(unlearn),
            config={"method": unlearn.get("config", {}), "train": unlearn.get("train"),
                    "lora": unlearn.get("lora"), "paper": unlearn.get("paper")}))
    return rows


def join_seeds(rows: list[ModelRow]) -> None:
    """A root model unlearned with the recipe's own settings is the first seed of the sweep
    configuration of its method with nothing swept (the demo's extra seeds)."""
    plain = {r.method: r.config_id for r in rows if r.kind == "cell" and not r.params}
    for row in rows:
        if row.kind == "unlearned" and row.method in plain:
            row.config_id = plain[row.method]
            row.seed = int((row.config.get("train") or {}).get("seed") or 0)


def share_oracle_attacks(rows: list[ModelRow]) -> None:
    """Give the oracle row the ``attacked`` values every attack measured on it (and a recovery
    of 0: the oracle is the yardstick recovery is measured against)."""
    oracle = next((r for r in rows if r.kind == "oracle"), None)
    if oracle is None:
        return
    for row in rows:
        for key, value in list(row.metrics.items()):
            if key.startswith("attack/") and key.endswith("/oracle_attacked"):
                base = key.removesuffix("/oracle_attacked")
                oracle.metrics.setdefault(f"{base}/attacked", value)
                oracle.metrics.setdefault(f"{base}/recovery", 0.0)


def references(rows: list[ModelRow]) -> References:
    """The oracle's and the target's metrics: what the oracle-relative axes compare with."""
    found = {r.kind: r.metrics for r in rows if r.kind in ("oracle", "target")}
    return References(oracle=found.get("oracle", {}), target=found.get("target", {}))


def ranking(configs: list[Configuration], reported: dict[str, dict[str, Any]],
            rows: list[ModelRow], oracle_scores: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each method's reported point, ranked by its distance to the oracle's point on
    forgetting × utility × robustness. A point without robustness (never attacked) or without
    another axis is listed unranked, with the reason."""
    by_id = {c.config_id: c for c in configs}
    by_name = {r.name: r for r in rows}
    out = []
    for method, chosen in reported.items():
        config = by_id.get(chosen.get("config_id") or "")
        members = [by_name[m] for m in (config.members if config else []) if m in by_name]
        entry: dict[str, Any] = {
            "method": method, "label": chosen.get("label"), "config_id": chosen.get("config_id"),
            "seeds": config.n if config else 0, "mean": config.mean if config else {},
            "std": config.std if config else {}, "metrics": config.metrics if config else {},
            "changes_weights": all(r.changes_weights for r in members),
            "used": members[0].used if members else {}, "members": [r.name for r in members],
            "distance": oracle_distance(config, oracle_scores) if config else None,
            "rank": None, "reason": None}
        attacked = any(k.startswith("attack/") for k in entry["metrics"])
        if config is None:
            entry["reason"] = f"no reported configuration ({chosen.get('note')})"
        elif config.value("robustness") is None:
            entry["reason"] = ("not attacked: robustness unknown" if not attacked else
                               "its attacks measured no forget probe the robustness axis reads")
        elif entry["distance"] is None:
            missing = [a for a in AXES if config.value(a) is None]
            entry["reason"] = f"no {' or '.join(missing)} score (the oracle's metrics missing?)"
        out.append(entry)
    ranked = sorted((e for e in out if e["reason"] is None), key=lambda e: e["distance"])
    for rank, entry in enumerate(ranked, start=1):
        entry["rank"] = rank
    return ranked + [e for e in out if e["reason"] is not None]


def samples(row: ModelRow, limit: int = MAX_SAMPLES) -> list[dict[str, str]]:
    """A few generations on forget questions (LLM logs or any ``samples.json``)."""
    folder = Path(row.directory) / "eval" / row.eval_name
    generic = folder / "samples.json"
    if generic.is_file():
        data = read_json(generic)
        items = data if isinstance(data, list) else data.get("samples", [])
        return [{str(k): str(v) for k, v in item.items()} for item in items[:limit]
                if isinstance(item, dict)]
    log = folder / "eval_log_aggregated.json"
    if not log.is_file():
        return _metric_samples(folder, limit)
    texts = read_json(log).get("eval_log_forget.json", {}).get("generated_text", {})
    out = []
    for key in sorted(texts, key=lambda k: int(k) if str(k).isdigit() else 0)[:limit]:
        item = texts[key]
        if isinstance(item, list) and len(item) >= 3:
            out.append({"question": item[0], "generated": item[1], "ground truth": item[2]})
    return out


def _metric_samples(folder: Path, limit: int) -> list[dict[str, str]]:
    """The samples a suite's metric keeps in its details (MUSE's VerbMem and KnowMem: prompt,
    reference, generation), the first metric on a forget split that has them."""
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            metrics = read_json(file).get("metrics")
        except (DataError, AttributeError):
            continue
        for key, metric in (metrics.items() if isinstance(metrics, dict) else ()):
            found = (metric.get("details") or {}).get("samples") if isinstance(metric, dict) \
                else None
            if "forget" in key and isinstance(found, list) and found:
                return [{str(k): str(v) for k, v in item.items()} for item in found[:limit]
                        if isinstance(item, dict)]
    return []


def images(row: ModelRow, limit: int = MAX_IMAGES) -> list[Path]:
    folder = Path(row.directory) / "eval" / row.eval_name
    if not row.eval_name or not folder.is_dir():
        return []
    return sorted(folder.glob("*.png"))[:limit]


def attack_table(rows: list[ModelRow]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for key, value in row.metrics.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == "attack" and row.kind != "oracle":
                found.setdefault((parts[1], parts[2]), {})[parts[3]] = value
        for (attack, metric), values in sorted(found.items()):
            out.append({"model": row.name, "label": row.label, "attack": attack,
                        "metric": metric, **values})
    return out


def cost_table(rows: list[ModelRow], reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if not row.cost:
            continue
        ratios = cost_ratios(row.cost, reference) if reference else {}
        out.append({"model": row.name, "label": row.label, "kind": row.kind, **row.cost,
                    **{f"{k}_ratio": v for k, v in ratios.items()}})
    return out


def collect(run_dir: str | Path, rule: str | SelectionRule | None = None,
            axes: dict[str, str] | None = None, allow_oracle: bool = False) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict."""
    run = RunDir(run_dir)
    if not run.record_path.is_file():
        raise DataError(f"{run.root}: not a run directory (no run.json)")
    record = run.read_record()
    task = read_json(run.root / "task.json") if (run.root / "task.json").is_file() else {}
    modality = record.get("modality") or task.get("modality") or "llm"
    rows = root_rows(run, record) + cell_rows(run.root)
    if not rows:
        raise DataError(f"{run.root}: no evaluated models yet (run `obliviate eval run`)")
    join_seeds(rows)
    share_oracle_attacks(rows)
    benchmark = run_benchmark(record, task)
    axis_map = AxisMap.for_benchmark(modality, benchmark, axes)
    refs = references(rows)
    for row in rows:
        row.scores, row.used = axis_map.score(row.metrics, refs)
    spec = load_spec(run.root)
    rule_obj = rule if isinstance(rule, SelectionRule) else parse_rule(
        rule or (spec.rule if spec else DEFAULT_RULE))
    read = rule_obj.axes if isinstance(rule_obj, ThresholdRule) else \
        (rule_obj.key,) if isinstance(rule_obj, ProxyRule) else ()
    if any(axis_map.uses_oracle(a) for a in read if a in axis_map.axes):
        rule_obj.uses_oracle = True  # e.g. a threshold on an oracle-relative axis
    oracle = next((r for r in rows if r.kind == "oracle"), None)
    if isinstance(rule_obj, OracleDistanceRule) and oracle is not None:
        rule_obj.oracle = {k: v for k, v in oracle.scores.items() if v is not None}
    points = [Point(label=r.label, method=r.method or r.name, config_id=r.config_id,
                    scores=r.scores, params=r.params, seed=r.seed, run=r.name,
                    metrics={**r.metrics, **{f"cost/{k}": v for k, v in r.cost.items()
                                             if isinstance(v, (int, float))}})
              for r in rows if r.kind in ("unlearned", "cell")]
    configs = aggregate_seeds(points)
    has_robustness = any(c.value("robustness") is not None for c in configs)
    reported = select_reported(configs, rule_obj, allow_oracle=allow_oracle)
    stages = record.get("stages", {})
    reference = None
    cost_file = run.root / "cost.json"
    if cost_file.is_file():
        reference = read_json(cost_file).get("reference_cost")
    if reference is None and "finetune_oracle" in stages:
        reference = cost_from_stage(stages["finetune_oracle"])
    ranked = ranking(configs, reported, rows, oracle.scores if oracle else {})
    reported_ids = {v["config_id"] for v in reported.values()}
    shown = [r for r in rows if r.kind != "cell" or r.config_id in reported_ids]
    return {
        "title": f"obliviate report: {record.get('name', run.root.name)}",
        "generated": utc_now(), "run_dir": str(run.root), "modality": modality,
        "task": task, "benchmark": oracle_statement(record, task),
        "environment": record.get("environment", {}),
        "commands": record.get("commands", []),
        "warnings": [f"{name.removeprefix('eval_')}: {w}" for name, stage in stages.items()
                     for w in stage.get("warnings") or []],  # numbers not to take as they are
        "verdict": verdict(ranked, refs),
        "verdict_thresholds": THRESHOLDS,
        "ranking": [{k: v for k, v in e.items() if k != "metrics"} for e in ranked],
        "axes": {"expressions": axis_map.to_dict(),
                 "uses_oracle": {a: axis_map.uses_oracle(a) for a in axis_map.axes},
                 "used": {r.name: r.used for r in rows}},
        "selection_rule": rule_obj.to_dict(),
        "models": [{"name": r.name, "label": r.label, "kind": r.kind, "method": r.method,
                    "params": r.params, "seed": r.seed, "config_id": r.config_id,
                    "scores": r.scores, "metrics": r.metrics, "cost": r.cost,
                    "config": r.config, "changes_weights": r.changes_weights} for r in rows],
        "methods": methods_section(rows, reported, spec.model_dump() if spec else None),
        "pareto": {
            "axes": list(AXES_3D if has_robustness else AXES_2D),
            "configurations": [c.to_dict() for c in configs],
            "front": [c.config_id for c in pareto_front(configs, AXES_2D)],
            "front_3d": [c.config_id for c in pareto_front(configs, AXES_3D)]
            if has_robustness else [],
            "reference_points": {r.kind: r.scores for r in rows
                                 if r.kind in ("oracle", "target")},
        },
        "reported": reported,
        "attacks": attack_table(rows),
        "costs": {"rule": FLOPS_RULE, "reference": "oracle fine-tuning (retraining)",
                  "reference_cost": reference, "rows": cost_table(rows, reference)},
        "samples": {r.label: s for r in shown if (s := samples(r))},
        "images": {r.label: [str(p) for p in images(r)] for r in shown if images(r)},
        "sweep": spec.model_dump() if spec else None,
        "search": search_section(run.root, lambda m: axis_map.score(m, refs)[0]),
        "requests": requests_section(run.root),  # deletion requests over time, scaling
    }


def methods_section(rows: list[ModelRow], reported: dict[str, dict[str, Any]],
                    spec: dict[str, Any] | None) -> dict[str, Any]:
    """Per method: paper, the config of its reported point, and what the sweep varied."""
    out: dict[str, Any] = {}
    chosen = {r.get("config_id") for r in reported.values()}
    for row in sorted(rows, key=lambda r: r.config_id not in chosen):
        if row.method and row.method not in out:
            out[row.method] = {**row.config, "reported": row.label}
    for method, info in out.items():
        info["grid"] = (spec or {}).get("methods", {}).get(method) or None
        info["shared_grid"] = (spec or {}).get("grid") or None
        info["seeds"] = (spec or {}).get("seeds")
    return out


def write_report(run_dir: str | Path, rule: str | SelectionRule | None = None,
                 axes: dict[str, str] | None = None, allow_oracle: bool = False
                 ) -> tuple[Path, Path]:
    """Write ``report/report.html``, ``report.json``, ``leaderboard.md`` and ``pareto.png``."""
    from obliviate.core.report_html import render_html, render_leaderboard

    data = collect(run_dir, rule, axes, allow_oracle)
    return write_report_files(RunDir(run_dir).report_dir, data, render_leaderboard, render_html)


def write_report_files(out: Path, data: dict[str, Any], markdown: Callable[[dict], str],
                       page: Callable[[dict, bytes | None], str]) -> tuple[Path, Path]:
    """``pareto.png`` (when there is a front to draw), ``report.json``, ``leaderboard.md`` and
    ``report.html`` in ``out``, each written atomically; returns (report.html, report.json)."""
    from obliviate.core.report_plot import pareto_png

    png = pareto_png(data)
    if png is not None:
        atomic_write_bytes(out / "pareto.png", png)
    json_path = atomic_write_json(out / "report.json", data)
    atomic_write_text(out / "leaderboard.md", markdown(data))
    html_path = atomic_write_text(out / "report.html", page(data, png))
    return html_path, json_path
