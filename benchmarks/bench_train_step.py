"""Benchmark one training step on SmolLM2-135M: the forward+backward of the answer loss, five ways.

The batch is ``--batch-size`` TOFU forget01 question-answer pairs in SmolLM2's chat template
(with its default system prompt), right-padded as the training loop collates them; without the
TOFU folder, the synthetic facts. Each case computes the token-mean answer cross-entropy and its
gradients:

* ``full logits``: transformers' own loss, ``model(labels=...)``, which runs the LM head on every
  position (what fine-tuning ran before :mod:`obliviate.llm.answer_forward`);
* ``answer head``: the head on the positions that predict an answer token only, the batch whole
  and padded (what unlearning ran before :mod:`obliviate.llm.answer_forward`);
* ``answer head, packed``: the same with the batch's real tokens packed into one row under a
  block-diagonal causal mask (no padding);
* ``answer head, packed + shared prefix, softmax over the grid``: packed, with the tokens every
  row shares (system prompt and template) held once, the loss over the ``[B, K, V]`` grid of
  :func:`obliviate.llm.answer_forward.answer_logits` (zeros where a row predicts none of its
  own tokens), as before :func:`~obliviate.llm.answer_forward.label_logits`;
* ``answer head, packed + shared prefix, dense mask``: the same, the loss over one logits row
  per answer token (:func:`obliviate.llm.training.lm_loss`), the packed row's attention dense
  under its block-diagonal mask;
* ``answer head, packed + shared prefix, per-example attention``: the same with each example's
  queries meeting only the prefix and its own keys (:mod:`obliviate.llm.segment_attention`).

The cases alternate (A B C D E F A B C D E F ...) ``--repeats`` times in one process, so a
slow phase of the machine falls on all of them; the table gives the median and the speed-up over
the first case, and the largest gradient difference against it (relative to that tensor's
largest gradient). ``--cases 5,6`` runs only those (the first named is the baseline);
``--profile`` adds each case's operators under torch.profiler.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_train_step.py --repeats 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from common import add_threads, tofu_or_synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--profile", action="store_true",
                        help="after the timed rounds, torch.profiler over 2 steps of each case: "
                             "the operators taking the most CPU time")
    parser.add_argument("--split", default="forget01", choices=["forget01", "retain_eval"],
                        help="the TOFU split the batch comes from")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cases", default="", help="comma-separated case numbers to run "
                        "(1-6, in the order of the docstring; the first named is the baseline)")
    add_threads(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import obliviate.llm.answer_forward as answer_forward
    import obliviate.llm.segment_attention as segment_attention
    from obliviate.llm.data.formatting import (
        build_example,
        collate,
        encode_answer,
        encode_prompt,
        resolve_format,
    )
    from obliviate.llm.models import load_pretrained
    from obliviate.llm.training import lm_loss

    records, source = tofu_or_synthetic((args.split,), args.batch_size)
    pairs = [(r.question, r.answer) for r in records]
    model, tokenizer = load_pretrained("smollm2")
    model.train()
    fmt = resolve_format(tokenizer)
    batch = collate([build_example(encode_prompt(tokenizer, fmt, q),
                                   encode_answer(tokenizer, fmt, a), None) for q, a in pairs],
                    tokenizer.pad_token_id)
    keep = answer_forward.answer_positions(batch["labels"])
    prefix = answer_forward.shared_prefix_length(batch)
    shared_default = answer_forward.MIN_SHARED_PREFIX
    architectures = segment_attention.ARCHITECTURES

    def full_logits() -> torch.Tensor:
        return model(**batch).loss

    def answer_head_whole() -> torch.Tensor:
        logits = answer_forward._keep_logits(model, batch, keep)
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), batch["labels"][:, keep + 1].flatten(), ignore_index=-100)

    def packed(share: bool, per_example: bool = False) -> Callable[[], torch.Tensor]:
        def loss() -> torch.Tensor:
            answer_forward.MIN_SHARED_PREFIX = shared_default if share else 10**9
            segment_attention.ARCHITECTURES = architectures if per_example else frozenset()
            return lm_loss(model, batch)[0]
        return loss

    def over_grid() -> torch.Tensor:
        answer_forward.MIN_SHARED_PREFIX = shared_default
        segment_attention.ARCHITECTURES = frozenset()
        logits, labels = answer_forward.answer_logits(model, batch)
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

    cases = {"full logits (transformers' loss)": full_logits,
             "answer head, batch whole": answer_head_whole,
             "answer head, packed": packed(False),
             "answer head, packed + shared prefix, softmax over the grid": over_grid,
             "answer head, packed + shared prefix, dense mask": packed(True),
             "answer head, packed + shared prefix, per-example attention": packed(True, True)}
    if args.cases:
        names = list(cases)
        cases = {names[int(i) - 1]: cases[names[int(i) - 1]] for i in args.cases.split(",")}
    times: dict[str, list[float]] = {name: [] for name in cases}
    grads: dict[str, list[torch.Tensor]] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up, untimed
        for name, loss_fn in cases.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss_fn().backward()
            seconds = time.perf_counter() - start
            if repeat:
                times[name].append(seconds)
            else:
                grads[name] = [p.grad.clone() for p in model.parameters()]

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, loss_fn in cases.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(2):
                    model.zero_grad(set_to_none=True)
                    loss_fn().backward()
            print(f"\n{name}: 2 steps\n" + prof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=8))

    base_name = next(iter(cases))
    base = statistics.median(times[base_name])
    print(f"\nSmolLM2-135M, fp32, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}; batch {args.batch_size} of {source}, "
          f"padded width {batch['input_ids'].shape[1]}, {int(batch['attention_mask'].sum())} "
          f"tokens, {int((batch['labels'] != -100).sum())} answer tokens, shared prefix {prefix} "
          f"tokens; {args.repeats} alternating rounds; load average {os.getloadavg()[0]:.2f}\n")
    print("| case | median forward+backward (s) | min (s) | speed-up | largest gradient "
          "difference |")
    print("|---|---|---|---|---|")
    for name in cases:
        median = statistics.median(times[name])
        diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                   for a, b in zip(grads[name], grads[base_name], strict=True))
        print(f"| {name} | {median:.2f} | {min(times[name]):.2f} | {base / median:.2f}x | "
              f"{diff:.1e} |")


if __name__ == "__main__":
    main()
