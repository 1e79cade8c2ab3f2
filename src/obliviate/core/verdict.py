"""The report's verdict: a few plain sentences, each pointing at the numbers behind it.

It reads the ranking (each method's reported point on the oracle-relative axes, see
:mod:`obliviate.core.axes`), the seed-mean metrics of those points and the oracle's and
target's metrics. On each forget-side metric a model sits at a *position* between the oracle
(0) and the target (1); below 0 it is past the oracle, away from the target. Then, with the
thresholds below:

* **closest** — the ranked method nearest the oracle's point on forgetting × utility ×
  robustness (attacks included: an unattacked model is never ranked);
* **over-forgets** — some forget-side metric at a position below ``-OVER`` (e.g. a forget-set
  MIA AUC under the oracle's: the forget set now stands out as never seen);
* **only suppresses outputs** — every plain output metric (greedy answers to the question, the
  judge's recognition of generated images) at or past the oracle (position ≤
  ``OUTPUT_AT_ORACLE``) while a likelihood metric stays near the target (position ≥
  ``KNOWLEDGE_KEPT``) or an attack restores at least ``KNOWLEDGE_KEPT`` of the target's lead
  over the oracle: the knowledge is still in the model;
* **barely forgets** — forgetting below ``UNDER`` with neither of the signatures above;
* **not reached** — an axis on which no ranked method comes within ``1 - REACHED`` of the
  oracle.

Evidence items name a report section (``ranking``, ``metrics``, ``attacks``), a model and the
numbers: the HTML page, ``leaderboard.md`` and the CLI link them.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from typing import Any

from obliviate.core.axes import AXES, FLOOR, References, ScoreExpr, position

OVER = 0.25
OUTPUT_AT_ORACLE = 0.25
KNOWLEDGE_KEPT = 0.5
UNDER = 0.5
REACHED = 0.9
# What the model answers when simply asked. Extraction strength is not among them: it decodes
# from the answer's first words, a prefix attack that shows what the plain answer may hide.
OUTPUT_PATTERNS = ("*rouge*", "*unlearning_accuracy*", "*forget_accuracy*")

THRESHOLDS = {"over_forgetting_position": -OVER, "output_at_oracle_position": OUTPUT_AT_ORACLE,
              "knowledge_kept_position": KNOWLEDGE_KEPT, "under_forgetting": UNDER,
              "reached": REACHED}


def is_output_metric(key: str) -> bool:
    """Metrics of what the model answers when simply asked (not of the likelihood it assigns,
    nor of what it produces under a prefix or an attack)."""
    return any(fnmatch.fnmatchcase(key, p) for p in OUTPUT_PATTERNS)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _keys(expression: str | None, metrics: Mapping[str, Any]) -> list[str]:
    if not expression:
        return []
    out: list[str] = []
    for pattern in ScoreExpr(expression).parse()[3]:
        pattern = pattern.lstrip("-")
        out += [k for k in sorted(metrics) if k == pattern or fnmatch.fnmatchcase(k, pattern)]
    return list(dict.fromkeys(out))


NAMES = {"prob": "answer probability", "rouge": "answer ROUGE", "truth_ratio": "truth ratio",
         "mia_min_k": "Min-K% MIA AUC", "mia_loss": "LOSS MIA AUC",
         "extraction_strength": "extraction strength", "unlearning_accuracy": "UA"}


def _name(key: str) -> str:
    """``tofu/forget/prob`` → ``forget-set answer probability`` (unknown metrics keep their
    key)."""
    parts = key.split("/")
    if len(parts) == 3 and parts[2] in NAMES:
        return f"{parts[1]}-set {NAMES[parts[2]]}"
    return key


def positions(metrics: Mapping[str, Any], keys: list[str], refs: References
              ) -> list[dict[str, Any]]:
    """Each forget-side key's value, the oracle's, the target's and the position."""
    out = []
    for key in keys:
        m, o, t = metrics.get(key), refs.oracle.get(key), refs.target.get(key)
        if not (_finite(m) and _finite(o)):
            continue
        t = float(t) if _finite(t) else None
        out.append({"key": key, "value": float(m), "oracle": float(o), "target": t,
                    "position": position(float(m), float(o), t),
                    "output": is_output_metric(key)})
    return out


def recoveries(metrics: Mapping[str, Any], keys: list[str], refs: References
               ) -> list[dict[str, Any]]:
    """Each attack's recovery as a share of the target's under the same attack."""
    out = []
    for key in keys:
        r, r_t = metrics.get(key), refs.target.get(key)
        if not _finite(r):
            continue
        base = key.removesuffix("/recovery")
        share = float(r) / max(float(r_t), FLOOR) if _finite(r_t) else float(r)
        out.append({"key": key, "attack": base.split("/")[1], "share": share,
                    "attacked": metrics.get(f"{base}/attacked"),
                    "oracle": metrics.get(f"{base}/oracle_attacked"), "target_recovery": r_t})
    return out


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if _finite(value) else "–"


def _against(p: Mapping[str, Any]) -> str:
    return f"{_fmt(p['value'])}; oracle {_fmt(p['oracle'])}, target {_fmt(p['target'])}"


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def diagnose(entry: Mapping[str, Any], refs: References) -> dict[str, Any]:
    """One ranked or unranked method: its forget-side positions, attack shares and class."""
    metrics = entry.get("metrics") or {}
    used = entry.get("used") or {}
    pos = positions(metrics, _keys(used.get("forgetting"), metrics), refs)
    rec = recoveries(metrics, _keys(used.get("robustness"), metrics), refs)
    outputs = [p for p in pos if p["output"] and p["position"] is not None]
    knowing = [p for p in pos if not p["output"] and p["position"] is not None
               and p["position"] >= KNOWLEDGE_KEPT]
    restored = [r for r in rec if r["share"] >= KNOWLEDGE_KEPT]
    over = [p for p in pos if p["position"] is not None and p["position"] < -OVER]
    suppresses = bool(outputs) and all(p["position"] <= OUTPUT_AT_ORACLE for p in outputs) \
        and bool(knowing or restored)
    forgetting = (entry.get("mean") or {}).get("forgetting")
    under = not suppresses and not over and _finite(forgetting) and forgetting < UNDER
    return {"positions": pos, "recoveries": rec, "suppresses": suppresses,
            "knowing": knowing, "restored": restored, "over": over, "under": under}


def verdict(ranking: list[Mapping[str, Any]], refs: References) -> list[dict[str, Any]]:
    """The sentences, each ``{kind, text, evidence: [{section, model, ...}]}``."""
    out: list[dict[str, Any]] = []
    ranked = [e for e in ranking if e.get("rank") is not None]
    found = {e["method"]: diagnose(e, refs) for e in ranking}

    def weights_note(entry: Mapping[str, Any]) -> str:
        return "" if entry.get("changes_weights", True) else " (it changes no weights)"

    if ranked:
        best = ranked[0]
        m = best["mean"]
        text = (f"{best['method']} comes closest to the oracle on all axes, attacks included: "
                f"forgetting {_fmt(m.get('forgetting'))}, utility {_fmt(m.get('utility'))}, "
                f"robustness {_fmt(m.get('robustness'))} (1 = the oracle; distance "
                f"{_fmt(best.get('distance'))}){weights_note(best)}.")
        if found[best["method"]]["suppresses"]:
            text += " It only suppresses its outputs, though (below)."
        elif found[best["method"]]["over"]:
            text += " It also over-forgets (below)."
        out.append({"kind": "closest", "text": text, "evidence": [
            {"section": "ranking", "model": best["method"], "label": best.get("label"),
             **{a: m.get(a) for a in AXES}, "distance": best.get("distance")}]})
    else:
        out.append({"kind": "closest", "text": "No method can be ranked: none has forgetting, "
                    "utility and robustness (robustness needs the attacks).",
                    "evidence": [{"section": "ranking"}]})

    suppressors = [e for e in ranking if found[e["method"]]["suppresses"]]
    if suppressors:
        parts, evidence = [], []
        for e in suppressors:
            d = found[e["method"]]
            out_p = min(d["positions"], key=lambda p: (not p["output"], p["position"] or 0))
            shown = (f"its {_name(out_p['key'])} is at or past the oracle's "
                     f"({_fmt(out_p['value'])} vs {_fmt(out_p['oracle'])})")
            evidence.append({"section": "metrics", "model": e["method"], **out_p})
            if d["knowing"]:
                k = max(d["knowing"], key=lambda p: p["position"])
                shown += f" but its {_name(k['key'])} stays near the target's ({_against(k)})"
                evidence.append({"section": "metrics", "model": e["method"], **k})
            if d["restored"]:
                r = max(d["restored"], key=lambda x: x["share"])
                shown += (f"{' and' if d['knowing'] else ' but'} {r['attack']} brings the probe "
                          f"back to {_fmt(r['attacked'])} (the oracle under the same attack: "
                          f"{_fmt(r['oracle'])})")
                evidence.append({"section": "attacks", "model": e["method"], **r})
            parts.append(f"{e['method']}{weights_note(e)}: {shown}")
        out.append({"kind": "suppresses", "text": "Only suppressing outputs, the knowledge "
                    "still in the model: " + "; ".join(parts) + ".", "evidence": evidence})

    over = [e for e in ranking if found[e["method"]]["over"] and not found[e["method"]][
        "suppresses"]]
    if over:
        parts, evidence = [], []
        for e in over:
            worst = min(found[e["method"]]["over"], key=lambda p: p["position"])
            parts.append(f"{e['method']} ({_name(worst['key'])} {_against(worst)})")
            evidence.append({"section": "metrics", "model": e["method"], **worst})
        verb = "over-forgets" if len(over) == 1 else "over-forget"
        out.append({"kind": "over", "text": f"{_join([p for p in parts])} {verb}: past the "
                    "oracle, away from the target, which a model that never saw the forget set "
                    "would not be.", "evidence": evidence})

    under = [e for e in ranking if found[e["method"]]["under"]]
    if under:
        names = [f"{e['method']} (forgetting {_fmt(e['mean'].get('forgetting'))})" for e in under]
        out.append({"kind": "under", "text": f"{_join(names)} "
                    f"{'barely forgets' if len(under) == 1 else 'barely forget'}: closer to "
                    "the target than to the oracle on the forget-side metrics.",
                    "evidence": [{"section": "ranking", "model": e["method"],
                                  "forgetting": e["mean"].get("forgetting")} for e in under]})

    missed = []
    for axis in AXES:
        values = [(e["mean"].get(axis), e["method"]) for e in ranked
                  if _finite(e["mean"].get(axis))]
        if values:
            value, method = max(values)
            if value < REACHED:
                missed.append((axis, value, method))
    if missed:
        text = "Nothing reached the oracle on " + _join(
            [f"{axis} (best: {method}, {_fmt(value)})" for axis, value, method in missed]) + "."
        out.append({"kind": "not_reached", "text": text, "evidence": [
            {"section": "ranking", "axis": a, "best": m, "value": v} for a, v, m in missed]})
    elif ranked and not any(all(_finite(v := e["mean"].get(a)) and v >= REACHED for a in AXES)
                            for e in ranked):
        out.append({"kind": "not_reached", "text": "Each axis is reached by some method, but "
                    f"no single method is within {1 - REACHED:.1f} of the oracle on all three.",
                    "evidence": [{"section": "ranking"}]})

    unranked = [e for e in ranking if e.get("rank") is None]
    if unranked:
        out.append({"kind": "unranked", "text": "Unranked: " + _join(
            [f"{e['method']} ({e.get('reason')})" for e in unranked]) + ".",
            "evidence": [{"section": "ranking", "model": e["method"]} for e in unranked]})
    return out
