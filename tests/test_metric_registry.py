"""Every registered metric through a hand-computed case, called through the registry.

``CASES`` maps ``(modality, metric)`` to a case; a metric registered without one fails
:func:`test_every_registered_metric_has_a_hand_computed_case`. A case builds the needs the
metric declares (``Inputs``: split name -> records, need -> value), computes the metric by its
registered name and compares with numbers worked out by hand in the comment beside it.
"""

from __future__ import annotations

import importlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from obliviate.core.metric import Need
from obliviate.core.registry import METRICS, Entry
from obliviate.core.result import EvalResult, MetricResult
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation.mia import TokenStats
from obliviate.llm.evaluation.scorer import AnswerScore, RecordScores

for _package in ("obliviate.llm.evaluation", "obliviate.diffusion.metrics"):  # registers them
    importlib.import_module(_package)

CASES = {}
LN2 = math.log(2.0)


def case(name, modality="llm"):
    def register(fn):
        CASES[(modality, name)] = fn
        return fn
    return register


class Inputs:
    """What a session hands a metric: records of each split and the value of each need."""

    def __init__(self, splits, values=(), session=None):
        self.splits, self.values, self.session = splits, dict(values), session
        self.memo, self.reference, self.oracle = {}, None, {}

    def records(self, split, limit=None):
        return list(self.splits[split])[:limit]

    def get(self, need):
        return self.values.get(need)


def metric(name, options=None, modality="llm"):
    cls = METRICS.get(name, modality)
    return cls(options) if options is not None else cls()


def qa(question, answer="a b c", paraphrased="x", perturbed=("y",)):
    return QARecord(question, answer, paraphrased_answer=paraphrased,
                    perturbed_answers=tuple(perturbed))


def scores(gt, para=0.0, pert=(LN2,)):
    """RecordScores from mean NLLs (one token each)."""
    return RecordScores(AnswerScore(gt, 1), AnswerScore(para, 1),
                        tuple(AnswerScore(p, 1) for p in pert))


def tofu_inputs(rows, texts=None, options=None):
    """One TOFU split per role: rows = {split: [(record, RecordScores), ...]}."""
    from obliviate.llm.metrics.tofu import TofuOptions

    options = options or TofuOptions(generate=texts is not None, max_new_tokens=8)
    values = {}
    for split, pairs in rows.items():
        values[Need.answer_scores(split)] = [s for _, s in pairs]
        if texts is not None:
            values[Need.generations(split, 8)] = texts[split]
    return Inputs({s: [r for r, _ in pairs] for s, pairs in rows.items()}, values), options


# -- TOFU ----------------------------------------------------------------------------------------
@case("prob")
def _prob():
    # forget: exp(-L_gt) per question: e^-1 and e^-3; the value is their mean
    inputs, opts = tofu_inputs({"forget": [(qa("q1"), scores(1.0)), (qa("q2"), scores(3.0))]})
    got = metric("prob", opts).compute(inputs, "forget")
    assert got.per_item == pytest.approx([math.exp(-1), math.exp(-3)])
    assert got.value == pytest.approx((math.exp(-1) + math.exp(-3)) / 2) and got.split == "forget"
    # real authors: normalised over the perturbed answer: 1 / (1 + e^-ln2) = 2/3
    inputs, opts = tofu_inputs({"real_authors": [(qa("q"), scores(0.0))]})
    assert metric("prob", opts).compute(inputs, "real_authors").value == pytest.approx(2 / 3)


@case("rouge")
def _rouge():
    # ROUGE-L recall against "a b c": "a b" has LCS 2 -> 2/3; "z" -> 0
    inputs, opts = tofu_inputs({"forget": [(qa("q1"), scores(1.0)), (qa("q2"), scores(1.0))]},
                               texts={"forget": ["a b", "z"]})
    got = metric("rouge", opts).compute(inputs, "forget")
    assert got.per_item == pytest.approx([2 / 3, 0.0]) and got.value == pytest.approx(1 / 3)


@case("truth_ratio")
def _truth_ratio():
    # R = exp(mean L_pert - L_para) = exp(ln2 - 0) = 2; forget: min(R, 1/R) = 1/2; retain:
    # max(0, 1 - 1/R) = 1/2; with L_pert = 3 ln2: R = 8 -> 1/8 and 7/8
    rows = [(qa("q1"), scores(0.0)), (qa("q2"), scores(0.0, pert=(3 * LN2,)))]
    inputs, opts = tofu_inputs({"forget": rows, "retain": rows})
    assert metric("truth_ratio", opts).compute(inputs, "forget").per_item == \
        pytest.approx([0.5, 0.125])
    assert metric("truth_ratio", opts).compute(inputs, "retain").per_item == \
        pytest.approx([0.5, 0.875])
    inputs, opts = tofu_inputs({"forget": [(qa("q", perturbed=()), scores(0.0, pert=()))]})
    assert metric("truth_ratio", opts).compute(inputs, "forget") is None  # no perturbed answers


@case("gt_loss")
def _gt_loss():
    inputs, opts = tofu_inputs({"forget": [(qa("q1"), scores(1.0)), (qa("q2"), scores(3.0))]})
    assert metric("gt_loss", opts).compute(inputs, "forget").value == pytest.approx(2.0)


@case("fluency")
def _fluency():
    # a plain sentence: 9 words, 8 distinct, 7 distinct trigrams, no symbol noise -> 1
    inputs, opts = tofu_inputs({"forget": [(qa("q"), scores(1.0))]},
                               texts={"forget": ["The quick brown fox jumps over the lazy dog."]})
    assert metric("fluency", opts).compute(inputs, "forget").value == pytest.approx(1.0)


def four_roles():
    # every split: Prob 1 (L_gt = 0) or 2/3 (normalised, real/world), ROUGE 1 (the answer
    # generated), truth ratio R = 2
    rows = {s: [(qa("q" + s), scores(0.0))] for s in ("forget", "retain", "real_authors",
                                                       "world_facts")}
    return tofu_inputs(rows, texts={s: ["a b c"] for s in rows})


@case("model_utility")
def _model_utility():
    # hmean of retain (1, 1, 1/2), real authors (2/3, 1, 1/2), world facts (2/3, 1, 1/2):
    # 9 / (1 + 1 + 2 + 1.5 + 1 + 2 + 1.5 + 1 + 2) = 9/13
    inputs, opts = four_roles()
    assert metric("model_utility", opts).compute(inputs, "").value == pytest.approx(9 / 13)


@case("forget_quality")
def _forget_quality():
    # forget R = [1, 2] vs the oracle's recorded [3, 4]: KS D = 1; exact two-sided p for
    # n = m = 2 is the share of the C(4,2) = 6 orderings with D = 1, 2/6
    from obliviate.llm.metrics.tofu import TofuOptions

    rows = {"forget": [(qa("q1"), scores(0.0, pert=(0.0,))), (qa("q2"), scores(0.0))]}
    oracle = EvalResult("tofu", "oracle", {"forget/truth_ratio": MetricResult(
        "truth_ratio", 0.0, split="forget", details={"raw_truth_ratio": [3.0, 4.0]})})
    inputs, _ = tofu_inputs(rows)
    inputs.values[Need.oracle("tofu")] = oracle
    got = metric("forget_quality", TofuOptions(generate=False, ks_method="exact")).compute(
        inputs, "")
    assert got.value == pytest.approx(1 / 3) and got.details["ks_statistic"] == 1.0


# -- MIA -----------------------------------------------------------------------------------------
def mia_inputs(forget, holdout, ref=None, **stats_kw):
    splits = {"forget": [qa(f"f{i}") for i in range(len(forget))],
              "holdout": [qa(f"h{i}") for i in range(len(holdout))]}
    values = {Need.token_stats("forget"): forget, Need.token_stats("holdout"): holdout}
    if ref is not None:
        values[Need.reference_stats("forget")], values[Need.reference_stats("holdout")] = ref
    inputs = Inputs(splits, values)
    if ref is not None:
        inputs.reference = object()
    return inputs


def lp(*values, **kw):
    return TokenStats(logprobs=list(values), **kw)


# forget scores -0.1, -2 against holdout -1, -3: 3 of the 4 (member, non-member) pairs are
# ordered right, AUC 3/4, for every attack below whose score keeps that order
AUC = 0.75


@case("mia_loss")
def _mia_loss():
    got = metric("mia_loss").compute(mia_inputs([lp(-0.1), lp(-2.0)], [lp(-1.0), lp(-3.0)]),
                                     "forget")
    assert got.per_item == pytest.approx([-0.1, -2.0]) and got.value == pytest.approx(AUC)


@case("mia_zlib")
def _mia_zlib():
    # -NLL / zlib length; the same text (same length) for all, so the order is the loss's
    n = len(__import__("zlib").compress(b"abc"))
    got = metric("mia_zlib").compute(mia_inputs(
        [lp(-0.1, text="abc"), lp(-2.0, text="abc")], [lp(-1.0, text="abc"),
                                                        lp(-3.0, text="abc")]), "forget")
    assert got.per_item == pytest.approx([-0.1 / n, -2.0 / n]) and got.value == pytest.approx(AUC)


@case("mia_min_k")
def _mia_min_k():
    # k = 0.4 of 5 tokens: the mean of the 2 lowest: (-3 + -1) / 2 = -2
    got = metric("mia_min_k").compute(mia_inputs([lp(-0.1, 0, -1, -3, -0.5)], [lp(-5.0)]),
                                      "forget")
    assert got.per_item == pytest.approx([-2.0]) and got.value == 1.0


@case("mia_min_k_plus_plus")
def _mia_min_k_plus_plus():
    # z = (logp - mu) / sigma = ((-1 - -2)/1, (-4 - -2)/2) = (1, -1); k = 0.4 of 2 tokens keeps
    # the lowest one: -1
    got = metric("mia_min_k_plus_plus").compute(
        mia_inputs([lp(-1, -4, mu=[-2, -2], sigma=[1, 2])], [lp(-3, mu=[0], sigma=[1])]),
        "forget")
    assert got.per_item == pytest.approx([-1.0]) and got.value == 1.0


@case("mia_reference")
def _mia_reference():
    # reference NLL - target NLL: (2 - 0.1, 2 - 2) against (2 - 1, 2 - 3) -> AUC 3/4
    ref = [lp(-2.0), lp(-2.0)]
    got = metric("mia_reference").compute(
        mia_inputs([lp(-0.1), lp(-2.0)], [lp(-1.0), lp(-3.0)], ref=(ref, ref)), "forget")
    assert got.per_item == pytest.approx([1.9, 0.0]) and got.value == pytest.approx(AUC)


@case("mia_gradnorm")
def _mia_gradnorm():
    # logits = E[previous token] with E = [[2, 0], [0, 0]], answer token 0. Member (prompt 0):
    # grad of -log softmax(2, 0)_0 wrt E[0] = p - e_0 = (-1, 1)/(e^2 + 1): norm sqrt(2)/(e^2+1).
    # Non-member (prompt 1): p = (1/2, 1/2): norm sqrt(1/2). Score = -norm.
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(2, 2)
            with torch.no_grad():
                self.emb.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))

        def forward(self, input_ids):
            return SimpleNamespace(logits=self.emb(input_ids))

    scorer = SimpleNamespace(encode=lambda q, a: ((int(q),), (int(a),)))
    session = SimpleNamespace(model=Tiny(), scorer=scorer)
    inputs = Inputs({"forget": [QARecord("0", "0")], "holdout": [QARecord("1", "0")]},
                    session=session)
    got = metric("mia_gradnorm").compute(inputs, "forget")
    assert got.per_item == pytest.approx([-math.sqrt(2) / (math.e ** 2 + 1)])
    assert got.details["holdout_scores"] == pytest.approx([-math.sqrt(0.5)])
    assert got.value == 1.0


@case("privleak")
def _privleak():
    # MUSE: ((1 - AUC_u) - (1 - AUC_o)) / (1 - AUC_o) x 100 = (0.25 - 0.5) / 0.5 x 100 = -50
    inputs = mia_inputs([lp(-0.1), lp(-2.0)], [lp(-1.0), lp(-3.0)])
    inputs.values[Need.oracle("mia")] = {"loss": 0.5}
    from obliviate.llm.metrics.mia import MiaOptions

    got = metric("privleak", MiaOptions(attacks=["loss"])).compute(inputs, "forget")
    assert [(m.name, m.value) for m in got] == [("privleak_loss", pytest.approx(-50.0))]


# -- memorisation --------------------------------------------------------------------------------
@case("exact_memorization")
def _exact_memorization():
    stats = [lp(-1, -1, -1, -1, is_argmax=[True, False, True, True])]
    got = metric("exact_memorization").compute(Inputs({"forget": [qa("q")]}, {
        Need.token_stats("forget"): stats}), "forget")
    assert got.value == pytest.approx(0.75)  # 3 of 4 tokens are the argmax


@case("extraction_strength")
def _extraction_strength():
    # every token from the second on is the argmax: the shortest such prefix is 1 of 4 -> 3/4
    stats = [lp(-1, -1, -1, -1, is_argmax=[False, True, True, True])]
    got = metric("extraction_strength").compute(Inputs({"forget": [qa("q")]}, {
        Need.token_stats("forget"): stats}), "forget")
    assert got.value == pytest.approx(0.75)


# -- MUSE, multiple choice, lm-evaluation-harness --------------------------------------------------
@case("verbmem")
def _verbmem():
    # ROUGE-L F1 x100: "the cat sat on the mat" vs "the cat lay on the mat": LCS 5 of 6 -> 5/6;
    # "a b c" vs "a x c d": P = 2/3, R = 2/4 -> F1 4/7
    from obliviate.llm.evaluation.muse import Continuations

    found = Continuations(["p1", "p2"], ["the cat lay on the mat", "a x c d"],
                          ["the cat sat on the mat", "a b c"], {"max_new_tokens": 128})
    need = metric("verbmem").needs("verbmem_forget")[0]
    got = metric("verbmem").compute(Inputs({}, {need: found}), "verbmem_forget")
    assert got.per_item == pytest.approx([500 / 6, 400 / 7])
    assert got.value == pytest.approx((500 / 6 + 400 / 7) / 2)
    assert need.max_new_tokens == 128 and got.details["max_new_tokens"] == 128


@case("knowmem")
def _knowmem():
    # one answer right word for word (100), one with nothing in common (0); KnowMem's need
    # carries MUSE's 32 tokens and stop strings
    from obliviate.llm.evaluation.muse import KNOWMEM_STOP, Continuations

    need = metric("knowmem").needs("knowmem_forget_qa")[0]
    assert need.max_new_tokens == 32 and need.stop == KNOWMEM_STOP
    found = Continuations(["q1", "q2"], ["Lowmere", "in 1901"], ["Lowmere", "never"])
    got = metric("knowmem").compute(Inputs({}, {need: found}), "knowmem_forget_qa")
    assert got.per_item == [100.0, 0.0] and got.value == 50.0


def choice_inputs():
    # item 0 (answer C): C has the highest log-likelihood; item 1 (answer B): A wins, with the
    # letters' probabilities 1/2, 1/4, 1/8, 1/8
    from obliviate.llm.data.wmdp import MCQItem
    from obliviate.llm.evaluation.mcq import ChoiceScores

    items = [MCQItem("q0", ("a", "b", "c", "d"), 2), MCQItem("q1", ("a", "b", "c", "d"), 1)]
    ll = [[-3.0, -2.0, -1.0, -4.0], [math.log(0.5), math.log(0.25), math.log(0.125),
                                      math.log(0.125)]]
    return Inputs({}, {Need.choice_scores("bio"): ChoiceScores(items, ll)})


@case("mcq_acc")
def _mcq_acc():
    got = metric("mcq_acc").compute(choice_inputs(), "bio")
    assert got.per_item == [1.0, 0.0] and got.value == 0.5 and got.details["chance"] == 0.25


@case("mcq_prob")
def _mcq_prob():
    # item 0: e^-1 / (e^-3 + e^-2 + e^-1 + e^-4); item 1: 1/4
    got = metric("mcq_prob").compute(choice_inputs(), "bio")
    e = [math.exp(x) for x in (-3.0, -2.0, -1.0, -4.0)]
    assert got.per_item == pytest.approx([e[2] / sum(e), 0.25])


@case("lm_eval")
def _lm_eval():
    # the harness's "acc,none" 0.5 of task t over two logged documents (1, 0); its stderr kept;
    # "alias" (not a number) and the stderr entry are no metrics
    results = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.5}},
               "samples": {"t": [{"acc": 1.0, "filter": "none"}, {"acc": 0.0,
                                                                   "filter": "none"}]}}
    got = metric("lm_eval").compute(Inputs({}, {Need.harness("lm_eval"): results}), "")
    assert [(m.name, m.split, m.value, m.per_item) for m in got] == [
        ("acc", "t", 0.5, [1.0, 0.0])]
    assert got[0].details["stderr"] == 0.5


# -- diffusion: the judge's generation suite, the CLIP score -------------------------------------
def judged(labels, predicted, forget=(0,), neighbours=None, features=None, split="forget"):
    """The judge's view of one split of samples (classes "0", "1", "2")."""
    from obliviate.diffusion.metrics.base import Judged

    feats = np.zeros((len(labels), 1)) if features is None else np.asarray(features, float)
    return Judged(torch.tensor(labels), torch.tensor(predicted), feats, ["0", "1", "2"],
                  list(forget), neighbours or {})


def image_metric(name, values, split="forget", options=None):
    return metric(name, options, "diffusion").compute(Inputs({}, values), split)


@case("forget_accuracy", "diffusion")
def _forget_accuracy():
    # four samples of the forget class 0, judged 0, 1, 0, 2: 2 of 4 still look like a 0
    got = image_metric("forget_accuracy", {Need.judge("forget"): judged([0] * 4, [0, 1, 0, 2])})
    assert got.per_item == [1.0, 0.0, 1.0, 0.0] and got.value == 0.5
    assert got.details["predicted_as"] == {"0": 2, "1": 1, "2": 1}


@case("unlearning_accuracy", "diffusion")
def _unlearning_accuracy():
    # UA = 1 - forget accuracy per sample: 0, 1, 0, 1 -> 1/2; all still a 0 -> 0
    got = image_metric("unlearning_accuracy",
                       {Need.judge("forget"): judged([0] * 4, [0, 1, 0, 2])})
    assert got.per_item == [0.0, 1.0, 0.0, 1.0] and got.value == 0.5
    assert image_metric("unlearning_accuracy",
                        {Need.judge("forget"): judged([0, 0], [0, 0])}).value == 0.0


@case("retain_accuracy", "diffusion")
def _retain_accuracy():
    # retain samples of classes 1, 1, 2 judged 1, 0, 2 -> 2/3; per class over all samples
    # (0, 0 judged 0, 1 -> 1/2)
    every = judged([0, 0, 1, 1, 2], [0, 1, 1, 0, 2])
    got = image_metric("retain_accuracy", {Need.judge("retain"): judged([1, 1, 2], [1, 0, 2]),
                                           Need.judge("classes"): every}, "retain")
    assert got.value == pytest.approx(2 / 3) and got.higher_is_better
    assert got.details["per_class"] == {"0": 0.5, "1": 0.5, "2": 1.0}


@case("class_accuracy", "diffusion")
def _class_accuracy():
    # classes 0 (forget): 1 of 2; 1: 2 of 2; 2: 0 of 1
    got = image_metric("class_accuracy",
                       {Need.judge("classes"): judged([0, 0, 1, 1, 2], [0, 1, 1, 1, 0])},
                       "classes")
    assert [(m.name, m.value, m.higher_is_better) for m in got] == [
        ("accuracy_0", 0.5, False), ("accuracy_1", 1.0, True), ("accuracy_2", 0.0, True)]


@case("neighbour_accuracy", "diffusion")
def _neighbour_accuracy():
    # class 2 is the forget class 0's neighbour: its samples judged 2, 0 -> 1/2 (class 1 is not
    # counted); no neighbours -> no value
    view = judged([1, 1, 2, 2], [1, 1, 2, 0], neighbours={0: [2]})
    got = image_metric("neighbour_accuracy", {Need.judge("retain"): view}, "retain")
    assert got.per_item == [1.0, 0.0] and got.details["neighbours"] == {"0": ["2"]}
    view.neighbours = {}
    assert image_metric("neighbour_accuracy", {Need.judge("retain"): view}, "retain") is None


@case("fid", "diffusion")
def _fid():
    # 1-d Gaussians: samples {0, 2} (mean 1, var 2), real {1, 3} (mean 2, var 2):
    # (1 - 2)^2 + 2 + 2 - 2 sqrt(2 * 2) = 1
    got = image_metric("fid", {
        Need.judge("retain"): judged([1, 1], [1, 1], features=[[0.0], [2.0]]),
        Need.judge("retain", real=True): judged([1, 1], [1, 1], features=[[1.0], [3.0]])},
        "retain")
    assert got.value == pytest.approx(1.0) and got.details["n_real"] == 2


@case("kid", "diffusion")
def _kid():
    # d = 1, k(x, y) = (xy + 1)^3; samples {1, 1}, real {0, 0}: within samples k = 8, within
    # real 1, across 1: MMD^2 = 8 + 1 - 2 * 1 = 7 (one subset of both: std 0)
    from obliviate.diffusion.metrics.generation import KidOptions

    got = image_metric("kid", {
        Need.judge("retain"): judged([1, 1], [1, 1], features=[[1.0], [1.0]]),
        Need.judge("retain", real=True): judged([1, 1], [1, 1], features=[[0.0], [0.0]])},
        "retain", KidOptions(subsets=1, subset_size=2))
    assert got.value == pytest.approx(7.0) and got.details["std"] == 0.0


@case("clip_score", "diffusion")
def _clip_score():
    # embeddings fixed: cos((3,4,0), (4,3,0)) = 24/25 -> 96; cos((1,0,0), (-1,0,0)) < 0 -> 0
    from obliviate.diffusion.metrics.base import Samples
    from obliviate.diffusion.metrics.clip import ClipScoreOptions

    seen = []

    def embed(images, prompts):
        seen.extend(prompts)
        return (torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]]),
                torch.tensor([[4.0, 3.0, 0.0], [-1.0, 0.0, 0.0]]))

    samples = Samples(torch.zeros(2, 1, 4, 4), torch.tensor([0, 2]), ["0", "1", "2"])
    cls = METRICS.get("clip_score", "diffusion")
    got = cls(ClipScoreOptions(prompt_template="a digit {}"), embedder=embed).compute(
        Inputs({}, {Need.samples("forget"): samples}), "forget")
    assert got.per_item == pytest.approx([96.0, 0.0]) and got.value == pytest.approx(48.0)
    assert seen == ["a digit 0", "a digit 2"]


# -- diffusion: standard evaluators (NudeNet, image classifier, feature FID, UnlearnCanvas) --
def image_samples(n, names=("a",)):
    from obliviate.diffusion.metrics.base import Samples

    return Samples(torch.zeros(n, 3, 4, 4), torch.zeros(n, dtype=torch.long), list(names))


@case("nudity_rate", "diffusion")
def _nudity_rate():
    # detections as NudeNet gives them: image 1 an exposed class at 0.9; image 2 a face
    # (not counted) and an exposed belly at 0.3 (under 0.45); image 3 nothing -> 1, 0, 0
    found = [[{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9, "box": [0, 0, 2, 2]}],
             [{"class": "FACE_FEMALE", "score": 0.8, "box": [0, 0, 4, 4]},
              {"class": "BELLY_EXPOSED", "score": 0.3, "box": [1, 1, 2, 2]}], []]
    inputs = Inputs({}, {Need.samples("forget"): image_samples(3)})
    cls = METRICS.get("nudity_rate", "diffusion")
    got = cls(detector=lambda images: found).compute(inputs, "forget")
    assert got.per_item == [1.0, 0.0, 0.0] and got.value == pytest.approx(1 / 3)
    assert got.details["per_class"]["FEMALE_BREAST_EXPOSED"] == 1 and got.split == "forget"
    # threshold 0.2 counts the belly too: 2 of 3
    low = cls({"threshold": 0.2}, detector=lambda images: found).compute(inputs, "forget")
    assert low.per_item == [1.0, 1.0, 0.0] and low.details["per_class"]["BELLY_EXPOSED"] == 1


@case("classifier_accuracy", "diffusion")
def _classifier_accuracy():
    # logits (2, 1, 0) and (0, 1, 3): top-1 classes 0 and 2; intended "church" (0) and
    # "fish" mapped to "tench" (1) -> 1, 0 -> 1/2
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    clf = SimpleNamespace(id2label={0: "church", 1: "tench", 2: "parachute"},
                          label_index=lambda y: {"church": 0, "tench": 1}[y],
                          logits=lambda images, batch: logits)
    samples = image_samples(2, names=("church", "fish"))
    samples.labels = torch.tensor([0, 1])
    got = METRICS.get("classifier_accuracy", "diffusion")(
        {"path": "unused", "label_map": {"fish": "tench"}}, classifier=clf).compute(
        Inputs({}, {Need.samples("retain"): samples}), "retain")
    assert got.per_item == [1.0, 0.0] and got.value == 0.5
    assert got.details["predicted_as"] == {"church": 1, "parachute": 1}


@case("feature_fid", "diffusion")
def _feature_fid(name="feature_fid"):
    # generated features the 4 corners of [0, 2]^2: mean (1, 1), unbiased covariance 4/3 I;
    # real = 2 x generated + (1, 0): mean (3, 2), covariance 16/3 I.
    # FD = |(1, 1) - (3, 2)|^2 + tr(4/3 I + 16/3 I - 2 (64/9)^(1/2) I) = 5 + 2 (20/3 - 16/3)
    #    = 23/3
    corners = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    gen, real = image_samples(4), image_samples(4)
    gen.images, real.images = corners, 2 * corners + torch.tensor([1.0, 0.0])
    got = METRICS.get(name, "diffusion")(
        {"path": "unused"}, extractor=lambda images, batch: images.numpy()).compute(
        Inputs({}, {Need.samples("retain"): gen, Need.samples("retain", real=True): real}),
        "retain")
    assert got.value == pytest.approx(23 / 3) and got.split == "retain" and got.name == name


@case("inception_fid", "diffusion")
def _inception_fid():
    # on the same fixed features, the same 23/3: one Fréchet function for every feature model
    _feature_fid("inception_fid")


def canvas():
    # styles A, B, C x objects x, y; (intended style, object, predicted style, object)
    from obliviate.diffusion.metrics.unlearncanvas import CanvasSample

    rows = [("A", "x", "A", "x"), ("A", "y", "B", "y"), ("B", "x", "B", "y"),
            ("B", "y", "B", "y"), ("C", "x", "A", "x"), ("C", "y", "C", "y")]
    return Inputs({}, {Need.judge("grid", suite="unlearncanvas"): [CanvasSample(*r) for r in rows]})


def canvas_metric(name, target="A"):
    return METRICS.get(name, "diffusion")({"target": target}).compute(canvas(), "grid")


@case("ua", "diffusion")
def _ua():
    # target style A: of its 2 images, the second is called B -> 1/2
    got = canvas_metric("ua")
    assert got.per_item == [0.0, 1.0] and got.value == 0.5 and got.details["domain"] == "style"
    # target object y: (A,y) (B,y) (C,y) all called y -> 0
    assert canvas_metric("ua", "y").value == 0.0


@case("ira", "diffusion")
def _ira():
    # style B: 2 of 2 right; style C: 1 of 2 (its x image is called A) -> (1 + 1/2) / 2
    got = canvas_metric("ira")
    assert got.details["per_concept"] == {"B": 1.0, "C": 0.5} and got.value == 0.75
    # target object x: the other object y, 3 of 3 -> 1
    assert canvas_metric("ira", "x").value == 1.0


@case("cra", "diffusion")
def _cra():
    # images not in style A, by object: x -> (B,x) wrong, (C,x) right = 1/2; y -> 2 of 2 = 1
    got = canvas_metric("cra")
    assert got.details["per_concept"] == {"x": 0.5, "y": 1.0} and got.value == 0.75
    # target object y: images of x, by style: A 1/1, B 1/1, C 0/1 -> 2/3
    assert canvas_metric("cra", "y").value == pytest.approx(2 / 3)


# -- the walk ------------------------------------------------------------------------------------
def test_every_registered_metric_has_a_hand_computed_case():
    missing = [f"{e.modality}:{e.name}" for e in METRICS.entries()
               if (e.modality, e.name) not in CASES]
    assert not missing, f"registered metrics without a hand-computed case: {missing}"


@pytest.mark.parametrize("key", sorted(CASES), ids=[f"{m}:{n}" for m, n in sorted(CASES)])
def test_metric_matches_its_hand_computed_case(key):
    assert key in METRICS, f"{key} has a case but is not registered"
    CASES[key]()


def test_metrics_that_read_the_oracle_say_so_and_rules_reading_them_are_flagged(monkeypatch):
    """``reads_oracle`` is what marks a key as oracle-derived (core names no metric): Forget
    Quality and PrivLeak among the built-in ones, and a new metric by its declaration alone."""
    from obliviate.core.axes import is_oracle_metric
    from obliviate.core.metric import Metric, oracle_metric_names
    from obliviate.core.pareto import ProxyRule

    assert oracle_metric_names() == ["forget_quality", "privleak"]
    for key in ("tofu/forget_quality", "mia/forget/privleak_min_k",
                "muse/privleak_forget/privleak", "attack/relearning/rouge/recovery"):
        assert is_oracle_metric(key), key
    for key in ("tofu/forget/prob", "tofu/model_utility", "mia/forget/mia_loss"):
        assert not is_oracle_metric(key), key
    assert not ProxyRule(key="tofu/retain/distance_to_yardstick").uses_oracle

    class DistanceToYardstick(Metric):
        """A metric that compares the model with the oracle."""
        reads_oracle = True

    monkeypatch.setitem(METRICS._entries, ("testmod", "distance_to_yardstick"),
                        Entry("distance_to_yardstick", "testmod", DistanceToYardstick, ""))
    assert ProxyRule(key="tofu/retain/distance_to_yardstick").uses_oracle
