"""Render a collected report (see :mod:`obliviate.core.report`) as HTML and markdown.

The HTML is one file: inline CSS, plots and images as base64 data URIs, no scripts, no links
to anything outside the page.
"""

from __future__ import annotations

import base64
import json
import math
from html import escape
from pathlib import Path
from typing import Any

from obliviate.core.report_requests import KINDS as REQUEST_KINDS

MAX_IMAGE_BYTES = 2 << 20
AXES = ("forgetting", "utility", "robustness")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px 32px;
color:#1d232a;background:#fff;font-size:14px;line-height:1.45}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid
#2f6fb3;padding-bottom:3px}.muted{color:#5b6570}table{border-collapse:collapse;margin:6px 0 12px;
font-size:12.5px}th,td{border:1px solid #d5dbe1;padding:3px 7px;text-align:right;
white-space:nowrap}th{background:#eaf1f8;position:sticky;top:0}td.l,th.l{text-align:left}
tr.oracle td{background:#fff3c4;font-weight:600}tr.target td{background:#fde2e1}
tr.front td.l:first-child{border-left:4px solid #2f6fb3}.scroll{overflow-x:auto;max-width:100%}
pre{background:#f5f7f9;padding:4px 6px;font-size:11.5px;white-space:pre-wrap;margin:2px 0;
min-width:220px;max-width:460px}
.note{background:#eef6ee;border-left:4px solid #3c9a4a;padding:6px 10px;margin:8px 0}
.warn{background:#fff4e5;border-left:4px solid #e08a00;padding:6px 10px;margin:8px 0}
img.plot{max-width:100%;border:1px solid #d5dbe1}.grid img{width:160px;margin:3px;
border:1px solid #d5dbe1}table.wrap td{white-space:normal;max-width:440px}
code{background:#f0f2f4;padding:0 3px}
.verdict{background:#f3f6fb;border-left:4px solid #2f6fb3;padding:6px 14px;margin:8px 0}
.verdict li{margin:4px 0}.verdict a{font-size:12px}
"""

SECTION_TITLES = {"ranking": "Ranking", "metrics": "Metrics", "attacks": "Attacks"}


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell (``–`` when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if float(value).is_integer() and abs(value) < 10**9:
        return f"{int(value):,}"
    if value != 0 and (abs(value) >= 10**6 or abs(value) < 10**-3):
        return f"{value:.3e}"
    return f"{value:.{digits}g}"


def pm(mean: Any, std: Any) -> str:
    return fmt(mean) + (f" ± {fmt(std, 2)}" if std else "")


def table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None,
          left: int = 1, wrap: bool = False) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>'
                   for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        css = f' class="{classes[r]}"' if classes and classes[r] else ""
        cells = "".join(f'<td class="{"l" if i < left else ""}">{escape(fmt(v))}</td>'
                        for i, v in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    css = ' class="wrap"' if wrap else ""
    return (f'<div class="scroll"><table{css}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _task(data: dict[str, Any]) -> str:
    task = data.get("task") or {}
    roles = {v: k for k, v in (task.get("roles") or {}).items()}
    rows = [[s.get("name"), roles.get(s.get("name"), "evaluation"), s.get("n"), s.get("sha256"),
             s.get("source")] for s in (task.get("splits") or {}).values()]
    env = data.get("environment") or {}
    facts = (f"<p>Task <b>{escape(str(task.get('name', '?')))}</b> ({escape(data['modality'])}), "
             f"seed {escape(str(task.get('seed', '?')))}; target "
             f"{escape(str(task.get('target') or 'trained in this run'))}, oracle "
             f"{escape(str(task.get('oracle') or 'trained in this run'))}. obliviate "
             f"{escape(str(env.get('obliviate', '?')))}, torch {escape(str(env.get('torch', '?')))}"
             f", {escape(str(env.get('platform', '')))}.</p>")
    bench = data.get("benchmark") or {}
    if bench.get("benchmark"):
        facts += (f"<p>Benchmark <b>{escape(str(bench['benchmark']))}</b>: the oracle it expects "
                  f"is {escape(str(bench.get('expected') or '(not registered)'))}; this run's "
                  f"oracle: {escape(str(bench.get('actual')))}.</p>")
    return facts + table(["split", "role", "records", "SHA-256", "source"], rows, left=5)


def sections_of(item: dict[str, Any]) -> list[str]:
    """The report sections a verdict sentence's evidence points at, in order."""
    return list(dict.fromkeys(e.get("section", "ranking") for e in item.get("evidence", [])))


def _verdict(data: dict[str, Any]) -> str:
    items = []
    for item in data.get("verdict", []):
        links = " ".join(f'<a href="#{s}">[{escape(SECTION_TITLES.get(s, s))}]</a>'
                         for s in sections_of(item))
        items.append(f"<li>{escape(item['text'])} {links}</li>")
    thresholds = ", ".join(f"{k} {v:g}" for k, v in (data.get("verdict_thresholds") or {}).items())
    return (f"<div class='verdict'><ul>{''.join(items)}</ul></div><p class='muted'>1 = the "
            "oracle on every axis. Positions on a forget-side metric run from the oracle (0) to "
            f"the target (1); thresholds: {escape(thresholds)}.</p>")


def ranking_rows(data: dict[str, Any]) -> list[list[Any]]:
    """The ranking as table rows (shared by the page and the leaderboard)."""
    rows = []
    for e in data.get("ranking", []):
        mean, std = e.get("mean") or {}, e.get("std") or {}
        notes = [] if e.get("changes_weights", True) else ["output only: changes no weights"]
        if e.get("reason"):
            notes.insert(0, f"unranked: {e['reason']}")
        rows.append([e["rank"] if e.get("rank") is not None else "–", e["method"],
                     e.get("label") or "", *(pm(mean.get(a), std.get(a)) for a in AXES),
                     fmt(e.get("distance"), 3), e.get("seeds"), "; ".join(notes)])
    return rows


RANKING_HEADER = ["rank", "method", "configuration", *AXES, "distance to oracle", "seeds", "note"]


def seeds_note(data: dict[str, Any]) -> str:
    """Mean ± std over how many seeds, or that one seed measured no spread."""
    counts = sorted({e.get("seeds") or 0 for e in data.get("ranking", [])})
    if counts and counts[-1] <= 1:
        return ("One seed per method: no spread measured (a sweep with `seeds: [0, 1, 2]` "
                "reports mean ± std).")
    if len(counts) > 1 and counts[0] <= 1:
        return (f"Mean ± sample std over {counts[-1]} seeds where a method ran more than one "
                "(a prompt-only method has nothing to reseed).")
    return f"Mean ± sample std over {'/'.join(str(c) for c in counts)} seeds."


def _ranking(data: dict[str, Any]) -> str:
    uses = data["axes"].get("uses_oracle", {})
    oracle_axes = [a for a in AXES if uses.get(a)]
    return ("<p class='muted'>Each method's reported point, ranked by its Euclidean distance to "
            "the oracle's point on forgetting × utility × robustness. A model that was not "
            "attacked has no robustness and is not ranked. Axes that read the oracle: "
            f"{escape(', '.join(oracle_axes) or 'none')}. {escape(seeds_note(data))}</p>"
            + table(RANKING_HEADER, ranking_rows(data), left=3))


def _rule(data: dict[str, Any]) -> str:
    rule = data["selection_rule"]
    css, says = ("warn", "It reads oracle-derived information.") if rule.get("uses_oracle") \
        else ("note", "It reads no oracle-derived metric.")
    used: dict[str, set[str]] = {}
    for per_axis in data["axes"]["used"].values():
        for axis, expr in per_axis.items():
            used.setdefault(axis, set()).add(expr or "(unavailable)")
    uses = data["axes"].get("uses_oracle", {})
    rows = [[axis, "yes" if uses.get(axis) else "no", " | ".join(exprs),
             ", ".join(sorted(used.get(axis, {"(unavailable)"})))]
            for axis, exprs in data["axes"]["expressions"].items()]
    return (f'<div class="{css}">Each method\'s reported point: <b>{escape(rule["description"])}'
            f"</b> (rule <code>{escape(rule['name'])}</code>). {says} The evaluation axes "
            "(forgetting, utility, robustness) measure closeness to the oracle; the raw_* axes "
            "read no oracle.</div>"
            + table(["axis", "reads the oracle", "expressions tried (first available wins)",
                     "used"], rows, left=4))


def _pareto(data: dict[str, Any], png: bytes | None) -> str:
    pareto = data["pareto"]
    configs = {c["config_id"]: c for c in pareto["configurations"]}
    axes = pareto["axes"]
    parts = []
    if png is not None:
        uri = base64.b64encode(png).decode("ascii")
        parts.append(f'<img class="plot" alt="Pareto plot" src="data:image/png;base64,{uri}">')
    else:
        parts.append('<p class="muted">No model has both a forgetting and a utility score.</p>')
    header = ["configuration", "method", "seeds", *axes]

    def rows(ids: list[str]) -> list[list[Any]]:
        return [[configs[i]["label"], configs[i]["method"], configs[i]["n"],
                 *(pm(configs[i]["mean"].get(a), configs[i]["std"].get(a)) for a in axes)]
                for i in ids if i in configs]

    parts.append("<h3>Non-dominated configurations (forgetting × utility)</h3>")
    parts.append(table(header, rows(pareto["front"]), left=2))
    if pareto.get("front_3d"):
        parts.append("<h3>Non-dominated with robustness as a third axis</h3>")
        parts.append(table(header, rows(pareto["front_3d"]), left=2))
    front = set(pareto["front"])
    rep = [[m, r.get("label") or "–", r.get("note"), r.get("candidates"),
            "yes" if r.get("config_id") in front else "no",
            *(pm((r.get("mean") or {}).get(a), (r.get("std") or {}).get(a)) for a in axes)]
           for m, r in data["reported"].items()]
    parts.append("<h3>Reported point per method</h3>")
    parts.append(table(["method", "configuration", "rule note", "candidates", "on front", *axes],
                       rep, left=3))
    return "".join(parts)


def _search(data: dict[str, Any]) -> str:
    from obliviate.core.report_search import search_png, search_rows

    section = data["search"]
    uri = base64.b64encode(search_png(section)).decode("ascii")
    study = section["studies"][0]
    return (f'<img class="plot" alt="hypervolume against trials" '
            f'src="data:image/png;base64,{uri}">'
            f"<p class='muted'>Hypervolume of ({escape(', '.join(study['objectives']))}) "
            f"against the reference point {escape(str(study['reference_point']))}, every axis "
            "maximised: the volume the non-dominated settings cover, after each trial of a "
            "search, and for the grid's cells of the same method.</p>"
            + table(["method", "way", "settings", "hypervolume", "± std"],
                    search_rows(section), left=2))


def _requests(data: dict[str, Any]) -> str:
    from obliviate.core.benchmark import headline

    keys = [key for _, key in headline(data.get("modality") or "llm",
                                       (data.get("benchmark") or {}).get("benchmark"))]
    return requests_html(data["requests"], Path(data["run_dir"]), keys)


def _methods(data: dict[str, Any]) -> str:
    rows = []
    for method, info in data["methods"].items():
        config = json.dumps(info.get("method") or {}, sort_keys=True, indent=0)[2:-2]
        train = info.get("train") or {}
        train_s = ", ".join(f"{k}={train[k]}" for k in ("learning_rate", "epochs", "max_steps",
                                                          "batch_size") if k in train)
        grid = {"grid": info.get("grid"), "shared_grid": info.get("shared_grid"),
                "seeds": info.get("seeds")}
        grid_s = json.dumps({k: v for k, v in grid.items() if v}) if any(grid.values()) else ""
        rows.append(f"<tr><td class='l'><b>{escape(method)}</b></td>"
                    f"<td class='l'>{escape(str(info.get('paper') or ''))}</td>"
                    f"<td class='l'>{escape(str(info.get('reported') or ''))}</td>"
                    f"<td class='l'><pre>{escape(config)}</pre></td>"
                    f"<td class='l'>{escape(train_s)}</td><td class='l'>{escape(grid_s)}</td></tr>")
    head = "".join(f"<th class='l'>{h}</th>" for h in
                   ("method", "paper", "reported point", "its method config", "its optimiser",
                    "swept"))
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _metrics(data: dict[str, Any]) -> str:
    models = data["models"]
    keys = sorted({k for m in models for k in m["metrics"] if not k.startswith("attack/")})
    front = set(data["pareto"]["front"])
    rows, classes = [], []
    for m in models:
        rows.append([m["label"], m["kind"], m["seed"] if m["seed"] is not None else "",
                     *(m["scores"].get(a) for a in AXES), *(m["metrics"].get(k) for k in keys)])
        classes.append(m["kind"] if m["kind"] in ("oracle", "target") else
                       "front" if m["config_id"] in front else "")
    return table(["model", "kind", "seed", *AXES, *keys], rows, classes, left=2)


def _attacks(data: dict[str, Any]) -> str:
    if not data["attacks"]:
        return '<p class="muted">No attack results in this run (run `obliviate attack`).</p>'
    rows = [[a["label"], a["attack"], a["metric"], a.get("plain"), a.get("attacked"),
             a.get("oracle_attacked"), a.get("recovery")] for a in data["attacks"]]
    return ("<p class='muted'>recovery = attacked − oracle under the same attack (above 0: the "
            "attack brings back more than a model that never saw the data shows).</p>"
            + table(["model", "attack", "metric", "plain", "attacked", "oracle", "recovery"],
                    rows, left=3))


def _costs(data: dict[str, Any]) -> str:
    costs = data["costs"]
    rows, classes = [], []
    for c in costs["rows"]:
        peak = c.get("peak_memory_bytes")
        rows.append([c["label"], c["kind"], c.get("seconds"),
                     peak / 2**20 if isinstance(peak, (int, float)) else None,
                     c.get("trainable_parameters"), c.get("total_parameters"), c.get("steps"),
                     c.get("tokens"), c.get("flops"), c.get("seconds_ratio"),
                     c.get("peak_memory_bytes_ratio"), c.get("trainable_parameters_ratio"),
                     c.get("flops_ratio")])
        classes.append(c["kind"] if c["kind"] in ("oracle", "target") else "")
    return (f"<p class='muted'>Ratios divide by {escape(costs['reference'])}. "
            f"{escape(costs['rule'])}.</p>"
            + table(["model", "kind", "seconds", "peak MiB", "trainable", "parameters", "steps",
                     "tokens", "FLOPs", "time ×", "memory ×", "trainable ×", "FLOPs ×"],
                    rows, classes, left=2))


def _samples(data: dict[str, Any]) -> str:
    parts = []
    for label, items in data["samples"].items():
        parts.append(f"<h3>{escape(label)}</h3>")
        keys = list(dict.fromkeys(k for item in items for k in item))
        rows = [[_clip(item.get(k, "")) for k in keys] for item in items]
        parts.append(table(keys, rows, left=len(keys), wrap=True))
    for label, paths in data["images"].items():
        imgs = []
        for path in paths:
            blob = Path(path).read_bytes() if Path(path).is_file() else b""
            if 0 < len(blob) <= MAX_IMAGE_BYTES:
                uri = base64.b64encode(blob).decode("ascii")
                imgs.append(f'<img alt="{escape(Path(path).name)}" title="{escape(path)}" '
                            f'src="data:image/png;base64,{uri}">')
        parts.append(f"<h3>{escape(label)}</h3><div class='grid'>{''.join(imgs)}</div>")
    return "".join(parts) or '<p class="muted">No sample generations or images found.</p>'


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def render_html(data: dict[str, Any], png: bytes | None) -> str:
    """The whole report page."""
    sections = [("verdict", "Verdict", _verdict(data)),
                ("ranking", "Ranking: closeness to the oracle", _ranking(data)),
                ("task", "Task and provenance", _task(data)),
                ("axes", "Axes and selection rule", _rule(data)),
                ("pareto", "Pareto front", _pareto(data, png)),
                ("methods", "Methods and configurations", _methods(data)),
                ("metrics", "Metrics (every evaluated model)", _metrics(data)),
                ("attacks", "Attacks", _attacks(data)),
                ("costs", "Cost against retraining", _costs(data)),
                ("samples", "Samples", _samples(data))]
    if data.get("search"):
        sections.insert(5, ("search", "Search: hypervolume against trials", _search(data)))
    if data.get("requests"):
        sections.insert(5, ("requests", "Deletion requests over time and forget-set size",
                            _requests(data)))
    if data.get("warnings"):  # numbers a reader should not take as they are, recorded by the run
        sections.insert(1, ("warnings", "Warnings", "<ul>" + "".join(
            f"<li>{escape(w)}</li>" for w in data["warnings"]) + "</ul>"))
    toc = " · ".join(f'<a href="#{key}">{escape(t)}</a>' for key, t, _ in sections)
    body = "".join(f'<h2 id="{key}">{escape(t)}</h2>{html}' for key, t, html in sections)
    commands = "; ".join(c.get("command", "") for c in data.get("commands", []))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(data['title'])}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(data['title'])}</h1><div class='muted'>{escape(data['run_dir'])} · "
            f"generated {escape(data['generated'])} · {escape(commands)}</div>"
            f"<p>{toc}</p>{body}</body></html>\n")


def verdict_lines(data: dict[str, Any], report: str = "report.html") -> list[str]:
    """The verdict as markdown bullets, each linking to its evidence in the HTML page."""
    return [f"- {item['text']} "
            + " ".join(f"([{SECTION_TITLES.get(s, s).lower()}]({report}#{s}))"
                       for s in sections_of(item)) for item in data.get("verdict", [])]


def render_leaderboard(data: dict[str, Any]) -> str:
    """The verdict, then each method's reported point ranked by closeness to the oracle
    (unranked ones last, with the reason), then the oracle and target."""
    front = set(data["pareto"]["front"])
    costs = {c["model"]: c for c in data["costs"]["rows"]}
    uses = data["axes"].get("uses_oracle", {})
    header = [*RANKING_HEADER[:-1], "Pareto", "FLOPs / retraining", "seconds", "note"]
    lines = [f"# {data['title']}", "", "## Verdict", "", *verdict_lines(data), "",
             "## Ranking: closeness to the oracle", "",
             f"Task `{(data.get('task') or {}).get('name', '?')}`. Ranked by the Euclidean "
             "distance to the oracle's point on forgetting × utility × robustness (1 = the "
             "oracle on each); a model that was not attacked is not ranked. "
             f"{seeds_note(data)} Each method's reported point: "
             f"{data['selection_rule']['description']}.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry, row in zip(data.get("ranking", []), ranking_rows(data), strict=True):
        members = entry.get("members") or []
        seconds = [costs[m].get("seconds") for m in members if m in costs]
        flops = [costs[m].get("flops_ratio") for m in members if m in costs]
        cells = [fmt(v) for v in row[:-1]] + [
            "yes" if entry.get("config_id") in front else "no", fmt(_mean(flops)),
            fmt(_mean(seconds)), row[-1]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    for kind, scores in data["pareto"]["reference_points"].items():
        cost = costs.get(kind, {})
        cells = ["–", kind, "(reference)", *(fmt(scores.get(a)) for a in AXES), "–", "", "–",
                 fmt(cost.get("flops_ratio")), fmt(cost.get("seconds")), ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Axes (first available expression wins; see `obliviate.core.axes`): "
              + "; ".join(f"{a}{' (reads the oracle)' if uses.get(a) else ''} = "
                          f"`{' | '.join(e)}`" for a, e in data["axes"]["expressions"].items()
                          if a in AXES)
              + ". Forgetting: 1 − the normalised distance to the oracle on each forget-side "
              "metric, in either direction (0 = as far as the target); utility: the share of "
              "the better of target and oracle kept on the retain side; robustness: 1 − the "
              "share of the target's lead over the oracle that the strongest attack restores."]
    return "\n".join(lines) + "\n"


def _mean(values: list[Any]) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def requests_html(data: dict[str, Any], root: Path, headline: list[str] | None = None) -> str:
    """Each kind's plot (embedded, its file named) and a table of the headline series."""
    parts = []
    for kind, section in data.items():
        xlabel, what = REQUEST_KINDS[kind]
        parts.append(f"<h3>{escape(kind)}: {escape(what)}</h3>")
        plot = root / section["plot"] if section.get("plot") else None
        if plot is not None and plot.is_file():
            uri = base64.b64encode(plot.read_bytes()).decode("ascii")
            name = escape(section["plot"])
            parts.append(f'<img class="plot" alt="{name}" title="{name}" '
                         f'src="data:image/png;base64,{uri}">'
                         f"<p class='muted'>{name}: each metric against the {escape(xlabel)}, "
                         "one line per method, the oracles' curve dashed (each step has its "
                         "own oracle).</p>")
        keys = [k for k in (headline or []) if k in section["series"]] or \
            list(section["series"])[:4]
        rows = [[key, model.removeprefix("unlearned/"), *values] for key in keys
                for model, values in section["series"][key].items()]
        parts.append(table(["metric", "model", *[f"{xlabel} {x}" for x in section["x"]]],
                           rows, left=2))
    return "".join(parts)
