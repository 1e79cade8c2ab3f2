"""The answer forward: a batch packed without padding, with the prefix every row shares held
once, gives the same logits, loss and gradients as running the batch whole; the LM loss equals
transformers' own."""

from __future__ import annotations

import pytest
import torch

import obliviate.llm.answer_forward as af
from obliviate.llm.data.formatting import IGNORE_INDEX, build_example, collate
from obliviate.llm.models import train_tokenizer
from obliviate.llm.training import lm_loss

SYSTEM = "System: answer briefly and truly, name the person."


@pytest.fixture(scope="module")
def tok(facts):
    texts = [t for split in facts.values() for r in split for t in (r.question, r.answer)]
    return train_tokenizer(texts + [SYSTEM], vocab_size=400)


def llama(tok, dropout: float = 0.0, attention: str = "sdpa", **extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         attention_dropout=dropout, attn_implementation=attention, **extra)
    return LlamaForCausalLM(config)


def batch_of(tok, facts, system: bool = True) -> dict[str, torch.Tensor]:
    """Questions after a common system prompt, answers of different lengths, right-padded."""
    head = tok(SYSTEM)["input_ids"] if system else []
    examples = []
    for record in facts["forget"][:2] + facts["retain"][:4]:
        prompt = head + tok(f"Question: {record.question}\nAnswer:",
                            add_special_tokens=False)["input_ids"]
        answer = tok(f" {record.answer}", add_special_tokens=False)["input_ids"]
        examples.append(build_example(prompt, answer + [tok.eos_token_id], None))
    return collate(examples, tok.pad_token_id)


def shapes(model) -> list[tuple[int, ...]]:
    """Input shapes of the model's forward calls, recorded by a hook."""
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    return seen


def whole_loss(model, batch) -> torch.Tensor:
    """The token-mean answer loss from the padded batch run whole."""
    keep = af.answer_positions(batch["labels"])
    logits = af._keep_logits(model, batch, keep)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, keep + 1]
                                             .flatten(), ignore_index=IGNORE_INDEX)


def grads_of(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss = loss[0] if isinstance(loss, tuple) else loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same_training(model, batch):
    expected_loss, expected = grads_of(model, whole_loss, batch)
    loss, grads = grads_of(model, lm_loss, batch)
    assert torch.allclose(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for name, grad in expected.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), name


def real_tokens(batch, prefix: int) -> int:
    return int(batch["attention_mask"].sum()) - prefix * (batch["input_ids"].shape[0] - 1)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_with_a_shared_prefix_trains_as_the_whole_batch(tok, facts, attention):
    batch = batch_of(tok, facts)
    prefix = af.shared_prefix_length(batch)
    assert prefix >= 8  # the system prompt and "Question:" are common to every row
    model = llama(tok, attention=attention).train()
    seen = shapes(model)
    assert_same_training(model, batch)
    # one row: the prefix once, then every example's other real tokens, no padding
    assert seen[-1] == (1, real_tokens(batch, prefix))
    assert seen[-1][1] < batch["input_ids"].numel()


def test_narrow_packed_rows_spread_the_examples_and_train_the_same(tok, facts, monkeypatch):
    batch = batch_of(tok, facts)
    prefix = af.shared_prefix_length(batch)
    longest = int(batch["attention_mask"].sum(1).max())
    monkeypatch.setattr(af, "PACK_WIDTH", prefix + 2 * (longest - prefix))  # two examples a row
    model = llama(tok).train()
    seen = shapes(model)
    assert_same_training(model, batch)
    rows, width = seen[-1]
    assert 1 < rows < batch["input_ids"].shape[0]
    assert rows * width < batch["input_ids"].numel()


def test_answer_logits_equal_the_whole_forward_where_a_row_has_its_own_label(tok, facts):
    batch = batch_of(tok, facts)
    model = llama(tok).eval()
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, labels = af.answer_logits(model, batch)
    keep = af.answer_positions(batch["labels"])
    assert torch.equal(labels, batch["labels"][:, keep + 1])
    own = labels != IGNORE_INDEX
    assert torch.allclose(logits[own], full[:, keep][own], atol=1e-5)
    assert not logits[~own].any()  # a row's other positions predict nothing of its own
    assert (~own).any()


@pytest.mark.parametrize("packed", [True, False])
def test_label_logits_hold_one_row_per_answer_token(tok, facts, monkeypatch, packed):
    """Packed or whole, the logits come back only where a row predicts its own answer token,
    equal to the full forward's there; the methods' per-token log-probs read them."""
    from obliviate.llm.methods.losses import answer_token_logprobs

    batch = batch_of(tok, facts)
    model = llama(tok).eval()
    if not packed:
        monkeypatch.setattr(af, "_can_pack", lambda *_: False)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out = af.label_logits(model, batch)
        logp, mask = answer_token_logprobs(model, batch)
    keep = af.answer_positions(batch["labels"])
    positions = keep[out.ks]
    assert out.logits.shape[0] == int((batch["labels"] != IGNORE_INDEX).sum())
    assert torch.equal(out.targets, batch["labels"][out.rows, positions + 1])
    assert torch.allclose(out.logits, full[out.rows, positions], atol=1e-5)
    expected = torch.log_softmax(full[:, keep], -1).gather(
        -1, out.labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    assert torch.equal(mask, out.labels != IGNORE_INDEX) and (~mask).any()
    assert torch.allclose(logp[mask], expected[mask], atol=1e-5) and not logp[~mask].any()


def test_row_answer_nll_is_answer_nll_of_the_full_logits(tok, facts):
    from obliviate.llm.data.formatting import answer_nll

    batch = batch_of(tok, facts)
    batch["labels"][0, :] = IGNORE_INDEX  # a row without answer tokens: 0, as answer_nll
    model = llama(tok).eval()
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = answer_nll(full, batch["labels"])
        got = af.row_answer_nll(model, batch)
    assert expected[0] == got[0] == 0
    assert torch.allclose(got, expected, atol=1e-5)


def test_lm_loss_is_the_transformers_causal_lm_loss(tok, facts):
    batch = batch_of(tok, facts)
    model = llama(tok).eval()
    with torch.no_grad():
        expected = model(**batch).loss
        loss, logs = lm_loss(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_shared_prefix_needs_two_rows_and_a_common_unpadded_start(tok, facts):
    one_row = {k: v[:1] for k, v in batch_of(tok, facts).items()}
    assert af.shared_prefix_length(one_row) == 0
    left_padded = batch_of(tok, facts)
    left_padded["attention_mask"][1, 0] = 0  # a padded first column is not shared
    assert af.shared_prefix_length(left_padded) == 0
    ids = torch.tensor([[5, 6, 7, 1], [5, 6, 8, 2]])
    assert af.shared_prefix_length({"input_ids": ids, "attention_mask": torch.ones_like(ids)}) == 2


def test_pack_layout_and_mask():
    ids = torch.tensor([[5, 6, 1, 2, 3], [5, 6, 4, 0, 0], [5, 6, 7, 8, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    packing = af.pack({"input_ids": ids, "attention_mask": mask}, prefix=2, width=100)
    assert packing.input_ids.tolist() == [[5, 6, 1, 2, 3, 4, 7, 8]]
    assert packing.owner.tolist() == [[-1, -1, 0, 0, 0, 1, 2, 2]]
    assert packing.position.tolist() == [[0, 1, 2, 3, 4, 2, 2, 3]]
    assert packing.source.tolist() == [[0, 1, 2, 3, 4], [0, 1, 5, -1, -1], [0, 1, 6, 7, -1]]
    seen = packing.mask(None)[0, 0]
    assert seen[7].tolist() == [True, True, False, False, False, False, True, True]  # 8: 5 6 7 8
    assert seen[5].tolist() == [True, True, False, False, False, True, False, False]  # 4: 5 6 4
    assert seen[1].tolist() == [True, True] + [False] * 6  # the prefix sees only itself
    additive = packing.mask(torch.float32)[0, 0]
    assert torch.equal(additive == 0, seen)
    # narrow rows: examples spread longest first over the least filled row, prefix in each
    narrow = af.pack({"input_ids": ids, "attention_mask": mask}, prefix=2, width=5)
    assert narrow.owner.tolist() == [[-1, -1, 0, 0, 0], [-1, -1, 1, 2, 2]]
    padded = af.pack({"input_ids": ids, "attention_mask": mask}, prefix=0, width=5)
    assert padded.owner.tolist() == [[0, 0, 0, 0, 0], [1, 1, 1, -2, -2], [2, 2, 2, 2, -2]]
    assert padded.mask(None)[1, 0, 4].tolist() == [False] * 4 + [True]  # padding sees itself


def test_dropout_packs_without_sharing_the_prefix(tok, facts):
    batch = batch_of(tok, facts)
    model = llama(tok, dropout=0.1).train()
    seen = shapes(model)
    with torch.no_grad():
        af.answer_logits(model, batch)
        assert sum(r * w for r, w in seen[-1:]) >= real_tokens(batch, 0)  # every row's own prefix
        model.eval()  # no dropout at evaluation: the prefix is shared
        af.answer_logits(model, batch)
    assert seen[-1] == (1, real_tokens(batch, af.shared_prefix_length(batch)))


def test_gradient_checkpointing_packs_with_the_same_gradients(tok, facts):
    batch = batch_of(tok, facts)
    model = llama(tok).train()
    model.activation_checkpointing_enable()
    seen = shapes(model)
    assert_same_training(model, batch)
    assert seen[-1][0] == 1


class NoKeepLM(torch.nn.Module):
    """A causal LM whose forward takes no ``logits_to_keep``."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask, position_ids=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids)


class NoPositionsLM(NoKeepLM):
    """A causal LM whose forward takes no ``position_ids`` either."""

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_a_model_without_logits_to_keep_packs_and_slices(tok, facts):
    batch = batch_of(tok, facts)
    inner = llama(tok).eval()
    model = NoKeepLM(inner).eval()
    with torch.no_grad():
        logits, labels = af.answer_logits(model, batch)
        expected, _ = af.answer_logits(inner, batch)
    own = labels != IGNORE_INDEX
    assert torch.allclose(logits[own], expected[own], atol=1e-6)


@pytest.mark.parametrize("case", ["no position ids", "no config", "flash attention",
                                  "short window"])
def test_models_that_cannot_take_a_packed_batch_run_it_whole(tok, facts, case):
    batch = batch_of(tok, facts)
    if case == "no position ids":
        model = NoPositionsLM(llama(tok))
    elif case == "no config":  # not a transformers model: its mask convention is unknown
        model = NoKeepLM(llama(tok))
        model.config = None
    else:
        model = llama(tok)
        if case == "flash attention":
            model.config._attn_implementation = "flash_attention_2"
        else:
            model.config.sliding_window = 4
    assert not af._can_pack(model, batch)
    if case == "flash attention":  # not installed here: the check is what can be tested
        return
    seen = shapes(model)
    with torch.no_grad():
        logits, _ = af.answer_logits(model, batch)
    assert seen == [tuple(batch["input_ids"].shape)]
    assert logits.shape[0] == batch["input_ids"].shape[0]
