"""Diffusion sampling in float32 against bf16 arithmetic (``evaluation.mixed_precision: bf16``):
the same batched :func:`~obliviate.diffusion.sampling.generate` on the same model, prompts and
seeds, the weights in float32 both times, alternating rounds in one process.

The model is obliviate's cross-attention UNet (``prompt_unet``) with random weights (the time
does not depend on them; every weight gets noise, as a fresh UNet's output layer is zero). The
run reports images/s of each path, the ratio of the medians, and how far the bf16 images are
from the float32 ones (mean and largest pixel difference, pixels in [-1, 1]).
bf16 pays off only where the CPU multiplies bf16 natively (AVX512-BF16 or AMX) and the
convolutions are large enough; on an AVX2 CPU it is slower than float32.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_diffusion_precision.py \
        --channels 64,128,256 --image-size 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from obliviate.core.precision import measured_in
from obliviate.diffusion.models import ModelConfig, build_denoiser
from obliviate.diffusion.sampling import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", default="32,64,64", help="UNet channels per level")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8, help="classes, each a prompt")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--batch-size", type=int, default=64, help="denoiser rows per pass")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path")
    args = parser.parse_args()

    channels = [int(c) for c in args.channels.split(",")]
    config = ModelConfig(architecture="prompt_unet", channels=channels, sample_steps=args.steps)
    model = build_denoiser(config, 10, args.image_size, 1, seed=0).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # the output convolution starts at zero (ε = 0): give every weight noise
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prompts, seeds = list(range(args.prompts)), list(range(args.seeds))
    n = len(prompts) * len(seeds)
    params = sum(p.numel() for p in model.parameters())
    print(f"{n} images ({args.prompts} prompts x {args.seeds} seeds), {args.steps} DDIM steps, "
          f"guidance {model.config.guidance_scale}, {args.image_size}x{args.image_size}, "
          f"channels {channels}, {params:,} parameters, {torch.get_num_threads()} thread(s)")

    def run(precision: str) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        with measured_in(precision):
            images = generate(model, prompts, seeds, batch_size=args.batch_size)
        return images, time.perf_counter() - start

    run("no"), run("bf16")  # warm-up: oneDNN picks its kernels on the first call
    times: dict[str, list[float]] = {"no": [], "bf16": []}
    images: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for precision in ("no", "bf16"):
            images[precision], seconds = run(precision)
            times[precision].append(seconds)
    fp32, bf16 = statistics.median(times["no"]), statistics.median(times["bf16"])
    diff = (images["bf16"] - images["no"]).abs()
    row = {"images": n, "fp32_s": round(fp32, 2), "bf16_s": round(bf16, 2),
           "fp32_images_per_s": round(n / fp32, 2), "bf16_images_per_s": round(n / bf16, 2),
           "speedup": round(fp32 / bf16, 2), "mean_abs_diff": round(float(diff.mean()), 4),
           "max_abs_diff": round(float(diff.max()), 4), "rounds": times}
    print(json.dumps(row))
    print("\n| path | median time (s) | images/s |\n|---|---|---|")
    print(f"| float32 | {fp32:.2f} | {n / fp32:.2f} |")
    print(f"| bf16 arithmetic, float32 weights | {bf16:.2f} | {n / bf16:.2f} |")
    print(f"\nbf16 speed-up {fp32 / bf16:.2f}x; pixel difference mean {float(diff.mean()):.4f}, "
          f"largest {float(diff.max()):.4f}")


if __name__ == "__main__":
    main()
