"""Diffusion sampling: every prompt with every seed one image at a time (a loop calling a
pipeline per prompt and seed) against obliviate's batched :func:`~obliviate.diffusion.sampling.
generate`, side by side in one run on the same model, prompts and seeds.

The model is obliviate's cross-attention UNet (``prompt_unet``: a UNet whose blocks read the
prompt's token states, as Stable Diffusion's read CLIP's), random weights (the time does not
depend on them), the MNIST recipe's size and 16×16 images by default. Each image draws its
noise from its own seed on both paths, so the two give the same images; the run reports the
largest pixel difference. Both guidance settings are measured: 2.0 (classifier-free guidance,
two denoiser rows per image) and 1.0 (the unconditional branch skipped: one row).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_diffusion_sampling.py
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from obliviate.diffusion.models import ModelConfig, build_denoiser
from obliviate.diffusion.sampling import generate, sample_cond


def loop(model, prompts, seeds, guidance):
    """The unbatched path: one call per (prompt, seed), as a loop over a pipeline runs."""
    images = []
    for prompt in prompts:
        for seed in seeds:
            x = sample_cond(model, model.embed(torch.tensor([prompt])), guidance=guidance,
                            generator=torch.Generator().manual_seed(seed))
            images.append(model.decode(x))
    return torch.cat(images)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="classes, each a prompt")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (the recipes' default)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="denoiser rows per pass")
    parser.add_argument("--guidance", default="2.0,1.0")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()

    config = ModelConfig(architecture="prompt_unet", sample_steps=args.steps)
    model = build_denoiser(config, 10, args.image_size, 1, seed=0).eval()
    prompts, seeds = list(range(args.prompts)), list(range(args.seeds))
    n = len(prompts) * len(seeds)
    print(f"{n} images ({args.prompts} prompts x {args.seeds} seeds), {args.steps} DDIM steps, "
          f"{args.image_size}x{args.image_size}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {torch.get_num_threads()} thread(s)")
    rows = []
    with torch.no_grad():
        generate(model, prompts[:1], seeds[:1], steps=2)  # warm-up
        for guidance in (float(g) for g in args.guidance.split(",")):
            alone, t_loop = timed(lambda g=guidance: loop(model, prompts, seeds, g))
            batched, t_batch = timed(lambda g=guidance: generate(
                model, prompts, seeds, guidance=g, batch_size=args.batch_size))
            row = {"guidance": guidance, "images": n, "loop_s": round(t_loop, 2),
                   "batched_s": round(t_batch, 2), "speedup": round(t_loop / t_batch, 2),
                   "loop_images_per_s": round(n / t_loop, 2),
                   "batched_images_per_s": round(n / t_batch, 2),
                   "max_abs_diff": float((alone - batched).abs().max())}
            rows.append(row)
            print(json.dumps(row))
    print("\n| guidance | denoiser rows per image | one at a time (s) | batched (s) | images/s "
          "(loop → batched) | speed-up | max pixel difference |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per = 1 if r["guidance"] in (0.0, 1.0) else 2
        print(f"| {r['guidance']} | {per} | {r['loop_s']} | {r['batched_s']} | "
              f"{r['loop_images_per_s']} → {r['batched_images_per_s']} | {r['speedup']}× | "
              f"{r['max_abs_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
