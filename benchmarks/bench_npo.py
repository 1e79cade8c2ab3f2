"""NPO on SmolLM2-135M: cached reference log-probs vs. a reference model run every step, and
peak memory of full-parameter training vs. LoRA with gradient checkpointing.

    python benchmarks/bench_npo.py            # runs every case in its own process, prints a table

Each case runs in a fresh process so peak memory (max RSS) belongs to that case alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

CASES = {
    "cached": "full-parameter NPO, reference log-probs computed once (obliviate)",
    "live": "full-parameter NPO, frozen reference model run on every batch",
    "lora_gc": "LoRA r=8 + gradient checkpointing, cached reference",
}


def run_case(case: str, steps: int, batch_size: int, forget: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from obliviate.core.profiling import peak_rss_bytes
    from obliviate.core.task import DataSplit, UnlearningTask
    from obliviate.llm.data.formatting import resolve_format
    from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
    from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
    from obliviate.llm.methods.losses import npo_loss, sequence_logprob
    from obliviate.llm.methods.npo import NPO
    from obliviate.llm.models import LoraSettings, load_pretrained

    class LiveReferenceNPO(NPO):
        """The same loss, but the frozen reference model is run on every forget batch."""

        reference = "model"

        def loss(self, model, batch):
            logp, _ = sequence_logprob(model, batch["forget"])
            with torch.no_grad():
                ref, _ = sequence_logprob(self.reference_model, batch["forget"])
            loss = npo_loss(logp, ref, self.config.beta)
            return loss, {"forget_npo": float(loss.detach())}

    facts = generate_synthetic_facts(SyntheticFactsConfig(
        num_people=12, facts_per_person=6, forget_people=forget // 6 + 1, seed=0))
    task = UnlearningTask("bench", "llm", DataSplit("forget", facts["forget"][:forget]),
                          DataSplit("retain", facts["retain"]))
    model, tokenizer = load_pretrained("smollm2")
    model.train()
    if case == "lora_gc":
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    fmt = resolve_format(tokenizer, "chat")
    train = UnlearnTrainConfig(max_steps=steps, batch_size=batch_size, learning_rate=1e-5,
                               warmup_ratio=0.0, log_every=1, checkpoint_every=10_000)
    ctx = UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task, train=train,
                         lora=LoraSettings(enabled=case == "lora_gc"))
    method = (LiveReferenceNPO if case == "live" else NPO)(alpha=0.0)
    step_times: list[float] = []
    last = [time.perf_counter()]

    original = method.loss

    def timed_loss(m, batch):  # wall time between successive loss calls = one optimiser step
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        return original(m, batch)

    method.loss = timed_loss  # type: ignore[method-assign]
    start = time.perf_counter()
    outcome = method.run(model, task, "/tmp/obliviate-bench-npo", ctx=ctx, save=False)
    total = time.perf_counter() - start
    per_step = step_times[2:]  # drop the first (setup, precompute) and one warm-up step
    return {"case": case, "steps": outcome.steps, "batch_size": batch_size,
            "seconds_total": round(total, 2),
            "seconds_per_step": round(sorted(per_step)[len(per_step) // 2], 3),
            "trainable_parameters": outcome.trainable_parameters,
            "peak_rss_gib": round(outcome.peak_memory["host_peak_rss_bytes"] / 2**30, 3),
            "process_peak_rss_gib": round(peak_rss_bytes() / 2**30, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=list(CASES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--forget", type=int, default=48)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.steps, args.batch_size, args.forget)))
        return
    rows = []
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--forget", str(args.forget)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    by = {r["case"]: r for r in rows}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}, batch {args.batch_size}\n")
    print("| case | s / step | peak RSS while unlearning (GiB) | trainable params |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {CASES[r['case']]} | {r['seconds_per_step']} | {r['peak_rss_gib']} | "
              f"{r['trainable_parameters']:,} |")
    speedup = by["live"]["seconds_per_step"] / by["cached"]["seconds_per_step"]
    memory = by["lora_gc"]["peak_rss_gib"] / by["cached"]["peak_rss_gib"]
    print(f"\ncached vs live reference: {speedup:.2f}x faster per step (target >= 1.3x)")
    print(f"LoRA + checkpointing vs full: {memory:.2f} of the peak memory (target <= 0.5)")


if __name__ == "__main__":
    main()
