"""Benchmark the matrix multiplies of SmolLM2-135M in float32 and bfloat16 on this machine.

What ``model.dtype: bfloat16`` can gain depends on the CPU: with bf16 instructions (AVX512-BF16,
AMX) oneDNN multiplies bf16 several times faster than fp32; without them (AVX2) bf16 is
emulated and slower. The shapes are SmolLM2's (hidden 576, MLP 1,536, vocabulary 49,152) at a
training step's or a scoring pass's row count and at a decoding step's; the dtypes alternate
``--repeats`` times in one process, and the table gives each one's median GFLOP/s
(2 × rows × inputs × outputs per product) and bf16's speed-up.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_matmul_dtype.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine

SHAPES = ((512, 576, 1536), (512, 1536, 576), (160, 576, 1536), (40, 576, 49152))
"""(rows, inputs, outputs): an MLP's up and down projections on 512 rows, one on a decoding
step's 160 rows, the LM head on 40 rows."""


def gflops(rows: int, inputs: int, outputs: int, dtype: torch.dtype, calls: int) -> float:
    x = torch.randn(rows, inputs).to(dtype)
    w = torch.randn(outputs, inputs).to(dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    start = time.perf_counter()
    for _ in range(calls):
        torch.nn.functional.linear(x, w)
    return 2 * rows * inputs * outputs * calls / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    print(f"Machine: {machine()}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| rows × inputs × outputs | float32 GFLOP/s | bfloat16 GFLOP/s | bf16 speed-up |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        runs: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}
        for _ in range(args.repeats):
            for dtype, values in runs.items():
                values.append(gflops(*shape, dtype, args.calls))
        fp32, bf16 = (statistics.median(v) for v in runs.values())
        print(f"| {' × '.join(map(str, shape))} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f}× |")


if __name__ == "__main__":
    main()
