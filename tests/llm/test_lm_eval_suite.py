"""The lm_eval suite runs lm-evaluation-harness offline on a local custom task (a YAML file and a
small JSON dataset written here) on the in-memory model; its per-document accuracy equals the
mcq suite's on the same questions in the same WMDP/MMLU prompt (two implementations agree)."""

from __future__ import annotations

import json

import pytest

from obliviate.core.task import DataSplit
from obliviate.llm.data.formatting import resolve_format
from obliviate.llm.data.wmdp import MCQItem
from obliviate.llm.evaluation.lm_eval_suite import LmEvalSuite
from obliviate.llm.evaluation.mcq import MCQSuite, mcq_prompt
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer

pytest.importorskip("lm_eval")

ITEMS = [MCQItem(f"Which value does the fictional item {n} carry?",
                 ("amber", "basalt", "cobalt", "dune"), n % 4) for n in range(8)]

# lm-eval's WMDP template (schemas.md §2), one line in the YAML
TEMPLATE = ("{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}"
            "\\nD. {{choices[3]}}\\nAnswer:")
YAML = """task: toy_wmdp
dataset_path: json
dataset_kwargs:
  data_files:
    test: DATA
test_split: test
output_type: multiple_choice
doc_to_text: "TEMPLATE"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture()
def task_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "toy.json"
    data.write_text("\n".join(json.dumps(i.to_dict()) for i in ITEMS) + "\n")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "toy_wmdp.yaml").write_text(
        YAML.replace("DATA", str(data)).replace("TEMPLATE", TEMPLATE))
    return folder


def test_lm_eval_suite_runs_a_local_task_and_agrees_with_the_mcq_suite(task_dir):
    texts = [mcq_prompt(i) + f" {x}" for i in ITEMS for x in "ABCD"]
    tok = train_tokenizer(texts + [f"{n}: A B C D" for n in range(40)], vocab_size=320)
    model = tiny_llama(tok, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2,
                                            intermediate_size=64, vocab_size=320), seed=3)
    fmt = resolve_format(tok, "base")
    out = LmEvalSuite({"tasks": ["toy_wmdp"], "include_path": str(task_dir),
                       "batch_size": 4})(model, tok, fmt, {})
    acc = out.result.metrics["toy_wmdp/acc"]
    assert acc.per_item is not None and len(acc.per_item) == len(ITEMS)
    assert acc.value == pytest.approx(sum(acc.per_item) / len(ITEMS))
    assert out.result.provenance["lm_eval"]["tasks"] == ["toy_wmdp"]
    ours = MCQSuite({"add_special_tokens": None})(model, tok, fmt,
                                                  {"toy": DataSplit("toy", ITEMS)})
    assert ours.result.metrics["toy/mcq_acc"].per_item == acc.per_item

