"""Benchmark greedy generation on SmolLM2-135M: obliviate's generator vs plain ``model.generate``.

The prompts are the TOFU questions of ``benchmarks/bench_scorer.py`` (the first ``--questions``
of forget01, retain, real authors and world facts, in SmolLM2's chat template with its default
system prompt); without the TOFU folder, the synthetic facts' questions. Both sides generate
greedily up to ``--max-new-tokens`` and stop a row at SmolLM2's end token:

* ``model.generate``: what the reference frameworks run (OpenUnlearning: batch 32, greedy, HF
  ``generate``): batches of ``--hf-batch`` prompts in their order, left-padded;
* ``obliviate``: :func:`~obliviate.llm.evaluation.generation.greedy_generate_ids` (the shared
  prefix once, length-sorted batches, finished rows dropped, the LM head at the last position).

FLOPs are counted as 2 x parameters x tokens: the transformer body (without the embedding lookup)
times the tokens it processed, padding and finished-but-still-batched rows included, plus the LM
head times the positions it was applied to; attention-score FLOPs are not counted. The peak is a
large fp32 ``torch.mm`` timed in the same run (best of before and after). Outputs are compared
token by token.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_generation.py --questions 40
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from bench_scorer import matmul_gflops
from common import add_threads, tofu_or_synthetic


def tofu_questions(per_split: int) -> tuple[list[str], str]:
    records, source = tofu_or_synthetic(
        ("forget01", "retain_eval", "real_authors", "world_facts"), per_split)
    return [r.question for r in records], source


def hf_generate(model, prompts, batch, new, pad, eos):
    """Plain batched ``model.generate``: prompts in order, left-padded, greedy."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new, do_sample=False, num_beams=1,
                              pad_token_id=pad, eos_token_id=eos, repetition_penalty=1.0)
    out, body_tokens, head_positions = [], 0, 0
    for begin in range(0, len(prompts), batch):
        rows = prompts[begin:begin + batch]
        width = max(len(p) for p in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(rows):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.inference_mode():
            generated = model.generate(input_ids=ids, attention_mask=mask,
                                       generation_config=config)[:, width:]
        steps = generated.shape[1]
        body_tokens += len(rows) * (width + steps - 1)
        head_positions += len(rows) * steps
        for row in generated.tolist():
            cut = next((t for t, tok in enumerate(row) if tok in eos), len(row))
            out.append(row[:cut])
    return out, body_tokens, head_positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40, help="first N of each split")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--hf-batch", type=int, default=32)
    parser.add_argument("--batch-sizes", default="64",
                        help="obliviate decoding batch sizes to time, comma-separated")
    add_threads(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from obliviate.llm.data.formatting import encode_prompt, resolve_format
    from obliviate.llm.evaluation.generation import (
        GenerationStats,
        eos_token_ids,
        greedy_generate_ids,
        pad_id,
    )
    from obliviate.llm.models import load_pretrained

    questions, source = tofu_questions(args.questions)
    model, tokenizer = load_pretrained("smollm2")
    model.eval()
    fmt = resolve_format(tokenizer)
    prompts = [encode_prompt(tokenizer, fmt, q) for q in questions]
    pad, eos = pad_id(tokenizer), eos_token_ids(model, tokenizer)
    head = model.get_output_embeddings().weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    body = total - embed if model.config.tie_word_embeddings else total - embed - head
    peak = matmul_gflops()
    # warm-up (thread pools, first allocations), not timed
    greedy_generate_ids(model, prompts[:4], 4, eos_ids=eos, pad_token_id=pad)
    hf_generate(model, prompts[:4], 4, 4, pad, eos)

    start = time.perf_counter()
    reference, hf_body, hf_head = hf_generate(model, prompts, args.hf_batch,
                                              args.max_new_tokens, pad, eos)
    hf_seconds = time.perf_counter() - start
    rows = [("model.generate", f"batch {args.hf_batch}, in order, left-padded", hf_seconds,
             hf_body, hf_head, sum(map(len, reference)), len(questions), None)]
    for size in (int(x) for x in args.batch_sizes.split(",")):
        stats = GenerationStats()
        start = time.perf_counter()
        ours = greedy_generate_ids(model, prompts, args.max_new_tokens, batch_size=size,
                                   pad_token_id=pad, eos_ids=eos, stats=stats)
        seconds = time.perf_counter() - start
        same = sum(a == b for a, b in zip(ours, reference, strict=True))
        rows.append(("obliviate", f"decoding batch {size}", seconds,
                     stats.prefill_tokens + stats.decode_tokens, stats.head_positions,
                     sum(map(len, ours)), same, stats))
    peak = max(peak, matmul_gflops())

    prompt_tokens = sum(map(len, prompts))
    generated = sum(map(len, reference))
    print(f"\nSmolLM2-135M ({total / 1e6:.1f}M parameters, fp32, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}); {len(questions)} prompts ({source}), "
          f"{prompt_tokens:,} prompt tokens, {generated:,} generated tokens (≤ "
          f"{args.max_new_tokens} each; {sum(len(r) == args.max_new_tokens for r in reference)} "
          f"reach the cap); fp32 matmul peak {peak:.0f} GFLOP/s (2048² torch.mm); load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| generator | batching | time (s) | new tokens/s | speed-up | body tokens | "
          "head positions | achieved GFLOP/s | % of matmul peak | identical outputs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, how, seconds, body_tokens, head_positions, new_tokens, same, _ in rows:
        gflops = (2 * body * body_tokens + 2 * head * head_positions) / seconds / 1e9
        print(f"| {name} | {how} | {seconds:.1f} | {new_tokens / seconds:.1f} | "
              f"{hf_seconds / seconds:.2f}x | {body_tokens:,} | {head_positions:,} | "
              f"{gflops:.0f} | {100 * gflops / peak:.0f}% | {same}/{len(questions)} |")
    for name, how, *_, stats in rows:
        if stats is not None:
            print(f"\n{name} ({how}): prefill {stats.prefill_tokens:,} body tokens "
                  f"({stats.padding_tokens:,} padding), {stats.decode_tokens:,} decoded, "
                  f"{stats.forward_calls} forward calls, decoding steps: {stats.decoder}")
    print(f"\ncommand: OMP_NUM_THREADS={args.threads} .venv/bin/python "
          f"benchmarks/bench_generation.py --questions {args.questions} --max-new-tokens "
          f"{args.max_new_tokens} --hf-batch {args.hf_batch} --batch-sizes {args.batch_sizes}")


if __name__ == "__main__":
    main()
