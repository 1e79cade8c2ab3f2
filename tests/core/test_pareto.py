"""Pareto fronts, seed aggregation, selection rules and the axis mapping (no models)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from obliviate.core.axes import AxisMap, References, ScoreExpr
from obliviate.core.errors import ConfigError
from obliviate.core.pareto import (
    AXES_2D,
    AXES_3D,
    OracleDistanceRule,
    Point,
    ProxyRule,
    ThresholdRule,
    aggregate_seeds,
    dominates,
    is_oracle_metric,
    oracle_distance,
    pareto_front,
    parse_rule,
    select_reported,
)


def point(name: str, f: float | None, u: float | None, r: float | None = None,
          method: str = "m", config: str | None = None, seed: int = 0, **metrics) -> Point:
    scores = {"forgetting": f, "utility": u, "robustness": r, "raw_forgetting": f,
              "raw_utility": u}
    return Point(label=name, method=method, config_id=config or name, scores=scores,
                 seed=seed, run=f"{name}/{seed}", metrics=metrics)


def brute_force_front(items, axes):
    """Non-dominated by the definition, written independently of the library."""
    def vals(p):
        return [p.value(a) for a in axes]

    usable = [p for p in items if None not in vals(p)]
    front = []
    for q in usable:
        beaten = False
        for p in usable:
            a, b = vals(p), vals(q)
            if p is not q and all(x >= y for x, y in zip(a, b, strict=True)) \
                    and a != b:
                beaten = True
        if not beaten:
            front.append(q)
    return front


def test_dominance_is_exact():
    a, b = point("a", 0.5, 0.5), point("b", 0.5, 0.4)
    assert dominates(a, b, AXES_2D) and not dominates(b, a, AXES_2D)
    twin = point("twin", 0.5, 0.5)
    assert not dominates(a, twin, AXES_2D) and not dominates(twin, a, AXES_2D)
    assert {p.label for p in pareto_front([a, b, twin])} == {"a", "twin"}  # ties both stay
    trade = point("trade", 0.9, 0.1)
    assert not dominates(a, trade, AXES_2D) and not dominates(trade, a, AXES_2D)


def test_missing_axis_is_left_out():
    pts = [point("a", 0.5, None), point("b", 0.1, 0.1), point("c", float("nan"), 0.9)]
    assert [p.label for p in pareto_front(pts)] == ["b"]
    assert not dominates(point("x", 1, 1), point("y", None, 0), AXES_2D)
    with pytest.raises(ConfigError):
        pareto_front(pts, axes=())


@pytest.mark.parametrize("axes", [AXES_2D, AXES_3D])
def test_front_matches_brute_force_on_random_points(axes):
    rng = random.Random(7)
    for trial in range(40):
        n = rng.randint(1, 30)
        grid = [0.0, 0.25, 0.5, 0.75, 1.0]  # coarse values force ties
        pts = [point(f"p{i}", rng.choice(grid), rng.choice(grid), rng.choice(grid))
               for i in range(n)]
        got = [p.label for p in pareto_front(pts, axes)]
        assert got == [p.label for p in brute_force_front(pts, axes)], trial
        for p, q in itertools.product(got, repeat=2):  # the front is an antichain
            assert not dominates(*(next(x for x in pts if x.label == k) for k in (p, q)), axes)


def test_seed_aggregation_mean_and_sample_std():
    pts = [point("npo", 0.2, 0.8, config="c1", seed=0, extra=1.0),
           point("npo", 0.4, 0.6, config="c1", seed=1, extra=3.0),
           point("ga", 0.9, None, config="c2", seed=0)]
    configs = {c.config_id: c for c in aggregate_seeds(pts)}
    c1 = configs["c1"]
    assert c1.n == 2 and c1.seeds == [0, 1] and c1.members == ["npo/0", "npo/1"]
    assert c1.mean["forgetting"] == pytest.approx(0.3)
    assert c1.std["forgetting"] == pytest.approx(math.sqrt(0.02))  # sample std (n − 1)
    assert c1.metrics["extra"] == pytest.approx(2.0)
    assert configs["c2"].std["forgetting"] == 0.0 and configs["c2"].mean["utility"] is None
    assert [c.config_id for c in pareto_front(configs.values())] == ["c1"]


def test_threshold_rule_and_its_fallback():
    configs = aggregate_seeds([
        point("weak", 0.3, 0.95, method="npo"), point("mid", 0.6, 0.7, method="npo"),
        point("strong", 0.9, 0.4, method="npo"), point("ga1", 0.1, 0.9, method="ga"),
        point("ga2", 0.2, 0.5, method="ga")])
    rule = ThresholdRule(min_forgetting=0.5)
    out = select_reported(configs, rule)
    assert out["npo"]["label"] == "mid" and out["npo"]["note"] == "threshold met"
    assert out["ga"]["label"] == "ga2" and out["ga"]["note"].startswith("fallback")
    assert not rule.uses_oracle and "no oracle" in rule.to_dict()["description"]


def test_rules_that_read_the_oracle_must_be_allowed():
    configs = aggregate_seeds([point("a", 0.5, 0.5, fq=0.9), point("b", 0.9, 0.1, fq=0.1)])
    peek = ProxyRule(key="tofu/forget_quality")
    assert peek.uses_oracle and is_oracle_metric("mia/forget/privleak_loss")
    with pytest.raises(ConfigError, match="oracle"):
        select_reported(configs, peek)
    honest = ProxyRule(key="fq")
    assert not honest.uses_oracle
    assert select_reported(configs, honest)["m"]["label"] == "a"
    near = OracleDistanceRule(oracle={"forgetting": 1.0, "utility": 0.0})
    with pytest.raises(ConfigError):
        select_reported(configs, near)
    assert select_reported(configs, near, allow_oracle=True)["m"]["label"] == "b"


def test_parse_rule():
    assert parse_rule("threshold:0.7").min_forgetting == 0.7
    assert parse_rule("proxy:-cost/seconds").maximize is False
    assert parse_rule("oracle").uses_oracle
    for bad in ("nope", "threshold:x"):
        with pytest.raises(ConfigError):
            parse_rule(bad)


def test_score_expressions():
    m = {"tofu/forget/prob": 0.2, "tofu/retain/prob": 0.5, "tofu/retain/rouge": 1.0,
         "attack/relearning/rouge/attacked": 0.3, "attack/rephrasing/rouge/attacked": 0.6,
         "x/fid": 20.0, "bad": None}
    assert ScoreExpr("1-tofu/forget/prob").evaluate(m) == pytest.approx(0.8)
    assert ScoreExpr("hmean(tofu/retain/prob, tofu/retain/rouge)").evaluate(m) == \
        pytest.approx(2 / 3)
    assert ScoreExpr("1-max(attack/*/rouge/attacked)").evaluate(m) == pytest.approx(0.4)
    assert ScoreExpr("-*/fid").evaluate(m) == -20.0
    assert ScoreExpr("attack/*/rouge/attacked").evaluate(m) is None  # ambiguous bare pattern
    assert ScoreExpr("bad").evaluate(m) is None and ScoreExpr("missing").evaluate(m) is None
    with pytest.raises(ConfigError):
        ScoreExpr("hmean()")


def test_raw_axes_stay_available_by_name():
    llm = AxisMap.for_modality("llm")
    scores, used = llm.score({"tofu/forget/rouge": 0.25, "tofu/model_utility": 0.6})
    assert scores["raw_forgetting"] == 0.75 and scores["raw_utility"] == 0.6
    assert used["raw_forgetting"] == "1-tofu/forget/rouge"
    # without the oracle's metrics the oracle-relative axes say nothing (no silent fallback)
    assert scores["forgetting"] is None and scores["utility"] is None
    raw = AxisMap.for_modality("llm", {"forgetting": "raw"})
    assert raw.score({"tofu/forget/prob": 0.2})[0]["forgetting"] == pytest.approx(0.8)
    assert not raw.uses_oracle("forgetting") and llm.uses_oracle("forgetting")
    assert not llm.uses_oracle("raw_utility") and llm.uses_oracle("robustness")
    custom = AxisMap.for_modality("llm", {"utility": "tofu/retain/rouge"})
    assert custom.score({"tofu/retain/rouge": 0.4})[0]["utility"] == 0.4
    with pytest.raises(ConfigError):
        AxisMap.for_modality("llm", {"utility": "max(a"})


# Oracle: forget prob 0.1, MIA AUC 0.5; target: 0.9 and 1.0 (gaps 0.8 and 0.5).
REFS = References(oracle={"tofu/forget/prob": 0.1, "mia/forget/mia_min_k": 0.5,
                          "tofu/retain/prob": 0.8, "tofu/retain/rouge": 0.9,
                          "attack/relearning/rouge/recovery": 0.0},
                  target={"tofu/forget/prob": 0.9, "mia/forget/mia_min_k": 1.0,
                          "tofu/retain/prob": 0.9, "tofu/retain/rouge": 0.8,
                          "attack/relearning/rouge/recovery": 0.6})
CLOSE = "close(tofu/forget/prob, mia/forget/mia_min_k)"


@pytest.mark.parametrize(("prob", "auc", "expected"), [
    (0.1, 0.5, 1.0),                                 # exactly the oracle
    (0.9, 1.0, 0.0),                                 # the target: nothing forgotten
    (0.5, 0.75, (1 - 0.4 / 0.8 + 1 - 0.25 / 0.5) / 2),  # under-forgetting: halfway back
    (0.0, 0.25, (1 - 0.1 / 0.8 + 1 - 0.25 / 0.5) / 2),  # over-forgetting: past the oracle
    (0.0, 0.0, (1 - 0.1 / 0.8 + 0.0) / 2),              # as far past the oracle as the target
])
def test_oracle_relative_forgetting_penalises_both_directions(prob, auc, expected):
    metrics = {"tofu/forget/prob": prob, "mia/forget/mia_min_k": auc}
    assert ScoreExpr(CLOSE).evaluate(metrics, REFS) == pytest.approx(expected)
    # the raw axis rewards the over-forgetting model above the oracle itself
    raw = ScoreExpr("1-tofu/forget/prob")
    assert (raw.evaluate(metrics) > raw.evaluate({"tofu/forget/prob": 0.1})) == (prob < 0.1)


def test_oracle_relative_axes_symmetric_and_defaults():
    # an AUC as far below the oracle as another is above scores the same
    below = ScoreExpr("close(mia/forget/mia_min_k)").evaluate({"mia/forget/mia_min_k": 0.3}, REFS)
    above = ScoreExpr("close(mia/forget/mia_min_k)").evaluate({"mia/forget/mia_min_k": 0.7}, REFS)
    assert below == pytest.approx(above) == pytest.approx(1 - 0.2 / 0.5)
    assert ScoreExpr(CLOSE).evaluate({"tofu/forget/prob": 0.1}, References()) is None
    # utility: the share of the better of target and oracle kept, per key, capped at 1
    kept = ScoreExpr("kept(tofu/retain/prob, tofu/retain/rouge)")
    assert kept.evaluate({"tofu/retain/prob": 0.45, "tofu/retain/rouge": 1.0}, REFS) == \
        pytest.approx((0.5 + 1.0) / 2)
    assert ScoreExpr("kept(-x/fid)").evaluate({"x/fid": 40.0}, References(
        oracle={"x/fid": 20.0}, target={"x/fid": 30.0})) == pytest.approx(0.5)
    # robustness: the share of the target's lead that the strongest attack restores
    robust = ScoreExpr("1-recovered(attack/*/rouge/recovery)")
    attacked = {"attack/relearning/rouge/recovery": 0.3, "attack/quantization/rouge/recovery": -0.2}
    assert robust.evaluate(attacked, REFS) == pytest.approx(1 - 0.3 / 0.6)
    assert robust.evaluate({"attack/relearning/rouge/recovery": -0.1}, REFS) == 1.0
    assert robust.evaluate({}, REFS) is None  # never attacked: no robustness
    # the default maps, for both modalities, on the oracle and target themselves
    for modality, forget, retain in (("llm", "tofu/forget/prob", "tofu/model_utility"),
                                     ("diffusion", "judge/forget/unlearning_accuracy",
                                      "judge/retain/retain_accuracy")):
        axes = AxisMap.for_modality(modality)
        attack = "rouge" if modality == "llm" else "accuracy"
        oracle = {forget: 0.02, retain: 0.9, f"attack/a/{attack}/recovery": 0.0}
        target = {forget: 0.98, retain: 0.95, f"attack/a/{attack}/recovery": 0.5}
        refs = References(oracle, target)
        on_oracle, used = axes.score(oracle, refs)
        assert on_oracle["forgetting"] == 1.0 and on_oracle["robustness"] == 1.0
        assert on_oracle["utility"] == pytest.approx(0.9 / 0.95)
        on_target, _ = axes.score(target, refs)
        assert on_target["forgetting"] == 0.0 and on_target["robustness"] == 0.0
        assert used["forgetting"].startswith("close(")


def test_oracle_distance():
    c = aggregate_seeds([point("a", 0.5, 1.0, 0.8)])[0]
    assert oracle_distance(c, {"forgetting": 1.0, "utility": 1.0, "robustness": 1.0}) == \
        pytest.approx(math.hypot(0.5, 0.2))
    assert oracle_distance(c, {}) == pytest.approx(math.hypot(0.5, 0.2))  # 1 where unknown
    assert oracle_distance(aggregate_seeds([point("b", 0.5, 1.0)])[0], {}) is None
