"""Benchmark the answer scorer on SmolLM2-135M and TOFU: prefix vs. packed vs. batched vs. naive.

The questions are the first ``--questions`` of each TOFU evaluation split (forget01, retain,
real authors, world facts). A forget or retain question has 7 answers (answer, paraphrased
answer, 5 perturbed), a real-author or world-fact question 4 (answer, 3 perturbed options); all
are scored after the question. ``naive`` runs each answer in its own sequence, one at a time;
``batched`` sorts those sequences by length and pads them; ``packed`` puts a prompt and all
its answers in one row with a block attention mask; ``prefix`` (the default of
:class:`~obliviate.llm.evaluation.scorer.AnswerScorer`) runs each prompt once into a KV cache
and scores its answers against it. ``packed`` and ``prefix`` run the LM head only where answer
tokens are predicted.

FLOPs are counted as 2 x parameters x tokens, split into the transformer body (without the
embedding lookup) times the tokens it processed (padding included) and the LM head times the
positions it was applied to; attention score FLOPs are not counted. The peak is a large fp32
``torch.mm`` timed in the same run.

After the comparison the whole TOFU evaluation (scoring, greedy generation for ROUGE, the
aggregation) runs once on the same questions and its wall time is printed.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_scorer.py --questions 40
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 ``torch.mm`` throughput in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40,
                        help="first N questions of each split")
    parser.add_argument("--splits", default="forget,retain_eval,real_authors,world_facts")
    parser.add_argument("--max-new-tokens", type=int, default=48,
                        help="greedy budget of the full evaluation (0: skip it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="prefix,packed,batched,naive")
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=1,
                        help="round-robin passes over the modes; the fastest pass is kept")
    parser.add_argument("--tofu", default=None, help="TOFU folder (default ../shared/data/tofu)")
    parser.add_argument("--evaluation-only", action="store_true",
                        help="time only the full TOFU evaluation (e.g. to compare commits: "
                             "PYTHONPATH=<old checkout>/src runs the old code)")
    parser.add_argument("--generation-batch-size", type=int, default=None,
                        help="the evaluation's engine generation_batch_size (default: its own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from obliviate.llm.data.formatting import resolve_format
    from obliviate.llm.data.tofu import default_tofu_root, load_tofu
    from obliviate.llm.evaluation.scorer import AnswerScorer
    from obliviate.llm.models import load_pretrained

    root = args.tofu or default_tofu_root()
    tofu = load_tofu(root, forget_splits=("forget01",))
    available = {"forget": tofu.forget["forget01"], **tofu.evaluation}
    splits = {name: available[name][:args.questions] for name in args.splits.split(",")}
    records = [r for split in splits.values() for r in split]
    answers = sum(1 + (r.paraphrased_answer is not None) + len(r.perturbed_answers)
                  for r in records)
    start = time.perf_counter()
    model, tokenizer = load_pretrained("smollm2")
    load_s = time.perf_counter() - start
    model.eval()
    fmt = resolve_format(tokenizer)
    head = model.get_output_embeddings().weight.numel()
    embed = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    body = total - embed if model.config.tie_word_embeddings else total - embed - head
    peak = matmul_gflops()
    if args.evaluation_only:
        AnswerScorer(model, tokenizer, fmt, cache=False).score_records(records[:2])  # warm-up
        full_evaluation(model, tokenizer, fmt, splits, args.max_new_tokens,
                        args.generation_batch_size)
        import obliviate

        print(f"\nfp32 matmul peak {max(peak, matmul_gflops()):.0f} GFLOP/s; load average "
              f"{os.getloadavg()[0]:.2f}; obliviate from {os.path.dirname(obliviate.__file__)}")
        return

    # warm-up (first-call allocations, thread pools) on two questions, not timed
    AnswerScorer(model, tokenizer, fmt, cache=False).score_records(records[:2])

    modes = args.modes.split(",")
    best: dict[str, dict] = {}
    values = {}
    for _ in range(args.repeats):
        for mode in modes:  # round-robin, so a busy spell on the machine hits every mode
            scorer = AnswerScorer(model, tokenizer, fmt, mode=mode,
                                  batch_tokens=args.batch_tokens, cache=False)
            start = time.perf_counter()
            scores = scorer.score_records(records)
            seconds = time.perf_counter() - start
            s = scorer.stats
            flops = 2 * body * s.forward_tokens + 2 * head * s.head_tokens
            values[mode] = np.array([nll for x in scores for nll in (
                x.gt.mean_nll, *([x.paraphrased.mean_nll] if x.paraphrased else []),
                *(p.mean_nll for p in x.perturbed))])
            row = {"mode": mode, "seconds": seconds, "qps": len(records) / seconds,
                   "aps": s.answers_computed / seconds, "forward": s.forward_tokens,
                   "padding": s.padding_tokens, "head": s.head_tokens,
                   "gflops": flops / seconds / 1e9, "calls": s.forward_calls}
            if mode not in best or seconds < best[mode]["seconds"]:
                best[mode] = row
    rows = [best[m] for m in modes]
    peak = max(peak, matmul_gflops())  # again at the end: the best of both
    base = next((r for r in rows if r["mode"] == "naive"), rows[-1])

    sizes = ", ".join(f"{name} {len(split)}" for name, split in splits.items())
    print(f"\nSmolLM2-135M ({total / 1e6:.1f}M parameters, fp32, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}), TOFU questions: {sizes} "
          f"({len(records)} questions, {answers} answers); model load {load_s:.1f} s; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s (2048^2 torch.mm); best of {args.repeats} "
          f"round-robin pass(es); load average {os.getloadavg()[0]:.2f}\n")
    print("| scorer | questions/s | answers/s | speed-up | body tokens (pad %) | head positions "
          "| forward calls | time (s) | achieved GFLOP/s | % of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pad = 100 * r["padding"] / max(r["forward"], 1)
        print(f"| {r['mode']} | {r['qps']:.2f} | {r['aps']:.1f} | "
              f"{base['seconds'] / r['seconds']:.2f}x | {r['forward']:,} ({pad:.1f}%) | "
              f"{r['head']:,} | {r['calls']} | {r['seconds']:.1f} | {r['gflops']:.0f} | "
              f"{100 * r['gflops'] / peak:.0f}% |")
    ref = values.get("naive")
    if ref is not None:
        for mode, v in values.items():
            if mode != "naive":
                print(f"\nmax |mean NLL({mode}) - mean NLL(naive)| = {np.abs(v - ref).max():.2e}")
    if args.max_new_tokens:
        full_evaluation(model, tokenizer, fmt, splits, args.max_new_tokens,
                        args.generation_batch_size)
    print("\ncommand: OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_scorer.py "
          f"--questions {args.questions} --threads {args.threads} --modes {args.modes} "
          f"--repeats {args.repeats}")


def full_evaluation(model, tokenizer, fmt, splits, max_new_tokens: int,
                    generation_batch_size: int | None = None) -> None:
    """The TOFU suite end to end on ``splits`` (default scorer), timed."""
    from obliviate.llm.evaluation.suites import evaluate

    engine = ({"generation_batch_size": generation_batch_size} if generation_batch_size
              else None)
    start = time.perf_counter()
    out = evaluate(model, tokenizer, fmt, splits, suites=["tofu"], engine=engine,
                   options={"tofu": {"max_new_tokens": max_new_tokens}})["tofu"]
    seconds = time.perf_counter() - start
    summary = out.result.summary()
    n = sum(len(s) for s in splits.values())
    print(f"\nFull TOFU evaluation (scoring + greedy generation of {max_new_tokens} tokens + "
          f"aggregation) of {n} questions: {seconds:.1f} s ({n / seconds:.2f} questions/s); "
          f"Model Utility {summary.get('model_utility', float('nan')):.4f}, forget Prob "
          f"{summary.get('forget/prob', float('nan')):.4f}, forget ROUGE "
          f"{summary.get('forget/rouge', float('nan')):.4f}")


if __name__ == "__main__":
    main()
