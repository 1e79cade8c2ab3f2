"""Benchmark the scorer's LM head: whole logits and log-softmax, or a vocabulary slice at a time.

SmolLM2-135M's head shape (576 → 49,152, random weights of its scale; the time does not depend
on the values), for a chunk of ``--rows`` answer positions (the scorer's chunks hold up to
1,024), two ways, each giving every position's log-probability of a given token:

* ``whole``: ``log_softmax(head(hidden))`` gathered at the tokens, as the scorer did before
  :mod:`obliviate.llm.evaluation.vocab_chunks`;
* ``slices of N``: :func:`~obliviate.llm.evaluation.vocab_chunks.head_token_logprobs`, N columns
  of logits at a time with their log-sum-exp.

The cases alternate (A B C ... A B C ...) ``--repeats`` times in one process; the table gives
each one's median, its speed-up over ``whole`` and its largest difference from it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_vocab_chunks.py --rows 235 1000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import add_threads, machine

HIDDEN, VOCAB = 576, 49152


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[235, 1000])
    parser.add_argument("--slices", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=10)
    add_threads(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from obliviate.llm.evaluation.vocab_chunks import head_token_logprobs

    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.02, generator=gen)
    print(f"{machine()}\n")
    print("| rows | case | median (ms) | speed-up | largest difference |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        hidden = torch.randn(rows, HIDDEN, generator=gen) * 4.0
        labels = torch.randint(0, VOCAB, (rows,), generator=gen)

        @torch.inference_mode()
        def whole(hidden: torch.Tensor = hidden, labels: torch.Tensor = labels) -> torch.Tensor:
            logits = head(hidden).float()
            return torch.log_softmax(logits, dim=-1).gather(-1, labels[:, None])[:, 0]

        cases: dict[str, Callable[[], torch.Tensor]] = {"whole": whole}
        for n in args.slices:
            cases[f"slices of {n}"] = (lambda n=n, h=hidden, t=labels:
                                       head_token_logprobs(h, head, t, n))
        reference = whole()
        times: dict[str, list[float]] = {name: [] for name in cases}
        diff = {name: float((f() - reference).abs().max()) for name, f in cases.items()}
        for _ in range(args.repeats):
            for name, f in cases.items():
                start = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["whole"])
        for name in cases:
            median = statistics.median(times[name])
            print(f"| {rows} | {name} | {median * 1e3:.0f} | {base / median:.2f}× | "
                  f"{diff[name]:.1e} |")


if __name__ == "__main__":
    main()
