"""MUSE's VerbMem, KnowMem and PrivLeak: hand-computed ROUGE-L F1 and the suite on a tiny model."""

from __future__ import annotations

import pytest

from obliviate.core.result import EvalResult
from obliviate.core.task import DataSplit
from obliviate.llm.data.formatting import resolve_format
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation import generation, mia
from obliviate.llm.evaluation import muse as m
from obliviate.llm.evaluation.suites import evaluate, get_suite
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer

DOCS = ["Lowmere council approved the tram loop on Tuesday after a long debate about fares "
        "and the harbour road, said the mayor Ilo Varrek.",
        "The ferry left Quill Bay at dawn and reached the outer reef by noon, where divers "
        "counted forty seals on the rocks near the lighthouse.",
        "A storm closed the Harl pass for three days; the council sent ploughs from Lowmere."]
HOLDOUT = ["Seals rest on the rocks near the lighthouse at noon.",
           "The mayor spoke about fares on Tuesday.", "Ploughs cleared the road to Quill Bay."]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(DOCS + ["Question: Answer: Which town? Lowmere"], vocab_size=300)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2,
                                           intermediate_size=64), seed=0).eval()


def test_rouge_l_f1_hand_computed():
    # LCS("the cat lay on the mat", "the cat sat on the mat") = 5 of 6 tokens each: F1 = 5/6
    assert m.rouge_l_f1("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # "a b c" vs "a x c d": LCS "a c" = 2, P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 4/7
    assert m.rouge_l_f1("a b c", "a x c d") == pytest.approx(4 / 7)
    # no stemmer (MUSE): "cats" and "cat" differ; case and punctuation do not count
    assert m.rouge_l_f1("cats", "cat") == 0.0
    assert m.rouge_l_f1("The Cat.", "the cat") == 1.0
    assert m.rouge_l_f1("", "the cat") == 0.0


def test_stop_strings_and_prompt_follow_muse():
    assert m.cut_at_stop("Lowmere\n\nQuestion: next") == "Lowmere"
    assert m.cut_at_stop("Lowmere\nQuestion: x") == "Lowmere"
    assert m.cut_at_stop("Lowmere Question: x") == "Lowmere "
    assert m.knowmem_prompt("Who?", [("Q1", "A1"), ("Q2", "A2")]) == (
        "Question: Q1\nAnswer: A1\n\nQuestion: Q2\nAnswer: A2\n\nQuestion: Who?\nAnswer: ")


def _fake_generation(monkeypatch, tok, outputs):
    """Greedy generation replaced by fixed continuations; returns the prompts it was given."""
    seen = []

    def fake(model, prompts, max_new_tokens, **kwargs):
        seen.extend(tok.decode(p) for p in prompts)
        seen.append(max_new_tokens)
        return [tok(outputs[i], add_special_tokens=False)["input_ids"]
                for i in range(len(prompts))]

    monkeypatch.setattr(generation, "greedy_generate_ids", fake)
    return seen


def test_verbmem_hand_computed(monkeypatch, tok, model):
    items = [QARecord("The ferry left Quill Bay at dawn and", "reached the outer reef by noon"),
             QARecord("Lowmere council approved", "the tram loop on Tuesday")]
    # item 1: 6 of 6 words of a 6-word output; item 2: LCS "the tram" = 2, P = 2/3, R = 2/5
    seen = _fake_generation(monkeypatch, tok, ["reached the outer reef by noon",
                                               "the tram bus"])
    res = m.verbmem(model, tok, items, max_new_tokens=128)
    f2 = 2 * (2 / 3) * (2 / 5) / (2 / 3 + 2 / 5)
    assert res.per_item == pytest.approx([100.0, 100 * f2])
    assert res.value == pytest.approx((100 + 100 * f2) / 2)
    assert seen[:2] == [items[0].question, items[1].question] and seen[2] == 128
    assert res.name == "verbmem" and res.details["samples"][1]["generation"] == "the tram bus"


def test_verbmem_cuts_gt_to_the_generation_budget(monkeypatch, tok, model):
    gt = "the tram loop on Tuesday"
    n3 = m.first_tokens(tok, gt, 3)
    assert n3 and gt.startswith(n3) and len(tok(n3, add_special_tokens=False)["input_ids"]) == 3
    _fake_generation(monkeypatch, tok, [n3])
    # the reference is gt's first 3 tokens, so generating exactly them scores 100
    assert m.verbmem(model, tok, [QARecord("Lowmere council approved", gt)],
                     max_new_tokens=3).value == pytest.approx(100.0)


def test_knowmem_icl_prompt_stop_strings_and_score(monkeypatch, tok, model):
    icl = [QARecord("Which town approved the loop?", "Lowmere")]
    qa = [QARecord("Who is the mayor?", "Ilo Varrek"), QARecord("Where did the ferry go?",
                                                                "the outer reef")]
    seen = _fake_generation(monkeypatch, tok, ["Ilo Varrek\n\nQuestion: Which", "the reef"])
    res = m.knowmem(model, tok, qa, icl)
    assert seen[0] == ("Question: Which town approved the loop?\nAnswer: Lowmere\n\n"
                       "Question: Who is the mayor?\nAnswer: ")
    assert seen[-1] == 32
    # output cut at "\n\n" -> exact match; "the reef" vs "the outer reef": P = 1, R = 2/3
    assert res.per_item == pytest.approx([100.0, 100 * 0.8])
    assert res.details["n_icl"] == 1


def test_generation_really_runs_on_a_tiny_model(tok, model):
    out = m.generate_raw(model, tok, ["Lowmere council", ""], 5)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    ids = generation.greedy_generate_ids(model, [tok("Lowmere council")["input_ids"]], 5,
                                         eos_ids=[tok.eos_token_id])
    assert out[0] == tok.decode(ids[0], skip_special_tokens=True)


def _splits():
    text = [QARecord("", d) for d in DOCS]
    return {
        "forget": DataSplit("forget", text[:2]), "retain": DataSplit("retain", text[2:]),
        "holdout": DataSplit("holdout", [QARecord("", "Divers counted seals at Quill Bay.")]),
        "verbmem_forget": DataSplit("v", [QARecord("The ferry left Quill Bay", " at dawn")]),
        "knowmem_forget_qa": DataSplit("kf", [QARecord("Which town?", "Lowmere")]),
        "knowmem_forget_qa_icl": DataSplit("kfi", [QARecord("Who?", "Ilo Varrek")]),
        "privleak_forget": DataSplit("pf", text),
        "privleak_holdout": DataSplit("ph", [QARecord("", t) for t in HOLDOUT]),
    }


def test_suite_privleak_against_the_oracle(tok, model):
    fmt = resolve_format(tok, "base")
    splits = _splits()
    out = evaluate(model, tok, fmt, splits, suites=["muse"]) ["muse"].result
    assert {"verbmem_forget/verbmem", "knowmem_forget_qa/knowmem",
            "privleak_forget/mia_min_k"} <= set(out.metrics)
    skipped = out.provenance["skipped"]
    assert "knowmem_knowmem_retain_qa" in skipped and "privleak" in skipped
    # Min-40% AUC by hand from the per-item scores, then PrivLeak in MUSE's convention
    auc = out.metrics["privleak_forget/mia_min_k"]
    assert auc.value == pytest.approx(mia.mia_auc(auc.per_item, auc.details["holdout_scores"]))
    oracle = tiny_llama(tok, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2,
                                             intermediate_size=64), seed=3).eval()
    o_res = get_suite("muse")(oracle, tok, fmt, splits).result
    o_res = EvalResult.from_dict(o_res.to_dict())  # as read back from the oracle's muse.json
    leak = get_suite("muse")(model, tok, fmt, splits, oracle_muse=o_res).result
    a_o = o_res.metrics["privleak_forget/mia_min_k"].value
    assert 0 < a_o < 1 and a_o != auc.value
    assert leak.metrics["privleak_forget/privleak"].value == pytest.approx(
        ((1 - auc.value) - (1 - a_o)) / (1 - a_o) * 100)
    # the pipeline's form: every suite's oracle result by suite name
    again = get_suite("muse")(model, tok, fmt, splits, oracle_results={"muse": o_res}).result
    assert again.metrics["privleak_forget/privleak"].value == pytest.approx(
        leak.metrics["privleak_forget/privleak"].value)
    # no oracle model: MUSE's published retrained AUC (News: 0.4772 with forget labelled 0)
    fixed = get_suite("muse", {"oracle_auc": 1 - 0.4772})(model, tok, fmt, splits).result
    assert fixed.metrics["privleak_forget/privleak"].value == pytest.approx(
        ((1 - auc.value) - 0.4772) / 0.4772 * 100)


def test_suite_on_a_plain_text_forget_set(tok, model):
    """A user's {"text"} forget set: VerbMem on excerpts, PrivLeak on forget vs holdout."""
    fmt = resolve_format(tok, "base")
    splits = {k: v for k, v in _splits().items() if k in ("forget", "retain", "holdout")}
    res = get_suite("muse", {"excerpt_prompt_tokens": 4, "verbmem_max_new_tokens": 6})(
        model, tok, fmt, splits).result
    # keyed by MUSE's split names (the excerpts and the pair read are the forget documents')
    assert res.metrics["verbmem_forget/verbmem"].details["n"] == 2
    assert "holdout" in res.provenance["splits"]
    assert res.metrics["privleak_forget/mia_min_k"].details["n_holdout"] == 1
    assert set(res.provenance["skipped"]) >= {"knowmem_knowmem_forget_qa", "privleak"}
    items = m.excerpts(tok, splits["forget"].records, 4, 6)
    assert [len(tok(i.question, add_special_tokens=False)["input_ids"]) for i in items] == [4, 4]


def test_attack_probe_of_a_plain_text_forget_set_is_verbmem(tok, model):
    """A {"text"} forget set: the attacks' forget probe continues an excerpt of each document
    (no empty prompt), scored by ROUGE-L F1 against the document's next tokens."""
    from obliviate.llm.attacks.base import AttackTarget, ProbeOptions, forget_probe

    fmt = resolve_format(tok, "base")
    docs = [QARecord("", d) for d in DOCS]
    out = forget_probe(AttackTarget("m", model, tok, fmt), docs, ProbeOptions(max_new_tokens=6))
    ids = tok(DOCS[0], add_special_tokens=False)["input_ids"]
    prompt, ref = tok.decode(ids[:min(32, len(ids) // 2)]), tok.decode(
        ids[min(32, len(ids) // 2):][:6])
    gen = m.generate_raw(model, tok, [prompt], 6)[0]
    assert out["generations"][0] == gen
    assert out["rouge"][0] == pytest.approx(m.rouge_l_f1(gen, ref))
    assert len(out["rouge"]) == len(out["prob"]) == 3


def test_qa_without_tofu_fields_evaluates_with_the_skips_stated(tok, model):
    """Question/answer records without paraphrased or perturbed answers: TOFU's truth ratio
    and Forget Quality are skipped with the reason, against an oracle too; nothing fails."""
    fmt = resolve_format(tok, "base")
    qa = [QARecord("Which town approved the loop?", "Lowmere"), QARecord("Who?", "Ilo Varrek")]
    splits = {"forget": DataSplit("f", qa[:1]), "retain": DataSplit("r", qa[1:]),
              "holdout": DataSplit("h", [QARecord("Where?", "Quill Bay")])}
    opts = {"tofu": {"max_new_tokens": 4}, "mia": {"attacks": ["loss"]}}
    oracle = evaluate(model, tok, fmt, splits, suites=["tofu", "mia"], options=opts)
    out = evaluate(model, tok, fmt, splits, suites=["tofu", "mia"], options=opts,
                   oracle_results={s: o.result for s, o in oracle.items()})
    tofu = out["tofu"].result
    assert "forget/prob" in tofu.metrics and "forget_quality" not in tofu.metrics
    assert tofu.provenance["skipped"]["forget_quality"] == "the forget split has no truth ratio"
    assert "forget/privleak_loss" in out["mia"].result.metrics
