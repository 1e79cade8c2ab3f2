"""DDIM sampling (Song et al. 2021) with classifier-free guidance (Ho & Salimans 2022).

``ε̂ = ε(x_t, ∅) + w·(ε(x_t, c) − ε(x_t, ∅))``; the conditional and unconditional passes run as
one batch. Each step predicts x̂₀, clips it to [−1, 1] and re-derives ε̂ from the clipped x̂₀
(without that, the clipped x̂₀ and the unclipped ε̂ disagree, and the error grows with the number
of steps: on a small model 100 steps fell to chance). ``eta = 0`` is deterministic DDIM,
``eta = 1`` DDPM-like ancestral noise on the same grid. All noise comes from a seeded
``torch.Generator`` on the CPU, so a seed gives the same images on any device.

:func:`generate` draws every prompt (or class) with every seed, the way a user asks for images
("these prompts, seeds 0-7"): each image's noise comes from its own seed alone, so the images
run together in batches (as many rows per denoiser pass as ``batch_size``) and are the images a
loop over prompts and seeds would give one at a time, the unconditional branch left out where
the guidance scale is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from obliviate.diffusion.models import Denoiser


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from high to low noise (``total − 1`` … ``0``)."""
    steps = max(1, min(steps, total))
    grid = torch.linspace(0, total - 1, steps).round().long().unique()
    return grid.flip(0).tolist()


def guided_eps(model: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
               null: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guided ε for condition tensors ``cond`` and ``null`` (same shapes)."""
    if scale == 1.0:
        return model(x, t, cond)
    if scale == 0.0:
        return model(x, t, null)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))
    eps_c, eps_u = out.chunk(2)
    return eps_u + scale * (eps_c - eps_u)


Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for a whole batch, or one per image (row ``i`` drawn from ``generator[i]``)."""


def noise(shape: Sequence[int], generator: Generators) -> torch.Tensor:
    """Standard normal noise of ``shape`` on the CPU: from one generator, or row by row from a
    generator per row, so that a row's values do not depend on the other rows."""
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generator])
    return torch.randn(tuple(shape), generator=generator)


def ddim_step(model: Denoiser, x: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor,
              eta: float = 0.0, generator: Generators = None) -> torch.Tensor:
    """One DDIM update from ``t`` to ``t_prev`` (``-1``: to x_0), x̂₀ clipped to [−1, 1] in
    pixel space (latents are not clipped)."""
    abar = model.schedule.alphas_cumprod
    a_t = abar[t]
    a_prev = abar[t_prev] if t_prev >= 0 else torch.ones((), device=x.device)
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if model.clip_sample:
        x0 = x0.clamp(-1, 1)
    eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt() if t_prev >= 0 \
        else torch.zeros((), device=x.device)
    out = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta > 0 and t_prev >= 0:
        out = out + sigma * noise(x.shape, generator).to(x.device)
    return out


def initial_noise(n: int, model: Denoiser, generator: Generators) -> torch.Tensor:
    shape = (n, model.in_channels, model.image_size, model.image_size)
    return noise(shape, generator).to(model.device)


@torch.no_grad()
def sample_cond(model: Denoiser, cond: torch.Tensor, null: torch.Tensor | None = None,
                steps: int | None = None, guidance: float | None = None,
                generator: Generators = None, x: torch.Tensor | None = None,
                stop_at: int | None = None, eta: float | None = None) -> torch.Tensor:
    """Sample from condition tensors ``cond`` (one per image); ``null`` defaults to ∅;
    ``generator``: one for the batch, or one per image (:func:`generate`).

    ``stop_at=k`` returns the partially denoised ``x`` after ``k`` DDIM steps (ESD starts its
    training points there)."""
    n = cond.shape[0]
    steps = steps or model.config.sample_steps
    scale = model.config.guidance_scale if guidance is None else guidance
    eta = model.config.sample_eta if eta is None else eta
    if null is None:
        null = model.embed(torch.full((n,), model.null_label, device=cond.device,
                                      dtype=torch.long))
    x = initial_noise(n, model, generator) if x is None else x
    times = ddim_timesteps(model.schedule.timesteps, steps)
    for i, t in enumerate(times):
        if stop_at is not None and i >= stop_at:
            break
        t_prev = times[i + 1] if i + 1 < len(times) else -1
        tt = torch.full((n,), t, device=x.device, dtype=torch.long)
        x = ddim_step(model, x, t, t_prev, guided_eps(model, x, tt, cond, null, scale), eta,
                      generator)
    return x


@torch.no_grad()
def sample(model: Denoiser, labels: torch.Tensor | list[int], steps: int | None = None,
           guidance: float | None = None, seed: int | None = 0, batch_size: int = 256,
           progress: Any = None, decode: bool = True, eta: float | None = None) -> torch.Tensor:
    """Images ``[N, C, H, W]`` in [-1, 1] for class ``labels``, in batches; seeded.
    ``decode=False`` keeps them in the space the model denoises (a VAE's latents); ``eta``:
    DDIM's η (default the model's ``sample_eta``; 1 samples ancestrally, as DDPM)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return in_batches(model, len(labels), batch_size,
                      lambda a, b: model.embed(labels[a:b].to(model.device)),
                      lambda a, b: generator, decode, progress, steps=steps, guidance=guidance,
                      eta=eta)


def in_batches(model: Denoiser, n: int, per_pass: int, cond: Callable[[int, int], torch.Tensor],
               generator: Callable[[int, int], Generators], decode: bool, progress: Any,
               **settings: Any) -> torch.Tensor:
    """``n`` images sampled ``per_pass`` at a time (in eval mode): images ``a..b`` from the
    conditions ``cond(a, b)`` and the noise of ``generator(a, b)``; :func:`sample_cond`'s
    ``settings``."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, n, per_pass):
        stop = min(n, start + per_pass)
        x = sample_cond(model, cond(start, stop), generator=generator(start, stop), **settings)
        out.append((model.decode(x) if decode else x).cpu())
        if progress is not None:
            progress.update(stop - start)
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def guided_rows(model: Denoiser, guidance: float | None) -> int:
    """Denoiser rows per image at guidance scale ``guidance``: 2 (conditional and
    unconditional) for classifier-free guidance, 1 where the scale is 1 (or 0)."""
    scale = model.config.guidance_scale if guidance is None else guidance
    return 1 if scale in (0.0, 1.0) else 2


@torch.no_grad()
def generate(model: Denoiser, prompts: Sequence[str | int], seeds: Sequence[int],
             steps: int | None = None, guidance: float | None = None, batch_size: int = 64,
             eta: float | None = None, decode: bool = True, progress: Any = None
             ) -> torch.Tensor:
    """Images ``[len(prompts) × len(seeds), C, H, W]`` in [-1, 1]: every prompt with every
    seed, prompt-major (the seeds of the first prompt first).

    A prompt is a class label (``int``) or, for a text-to-image model, a text its text encoder
    reads (``model.encode_prompts``). Image ``(p, s)`` draws its starting noise, and at
    ``eta > 0`` its noise at every step, from ``torch.Generator().manual_seed(s)`` alone, so it
    is the image a loop over prompts and seeds gives one at a time (up to float rounding of
    batched kernels). The images run together, ``batch_size`` denoiser rows per pass: half as
    many images where classifier-free guidance adds each image's unconditional row, all of
    them where the scale is 1."""
    texts = [p for p in dict.fromkeys(prompts) if isinstance(p, str)]
    if texts and not hasattr(model, "encode_prompts"):
        raise ValueError(f"{type(model).__name__} is class-conditional: give class labels, "
                         f"not text prompts ({texts[0]!r})")
    states = dict(zip(texts, model.encode_prompts(texts), strict=True)) if texts else {}
    labels = [p for p in dict.fromkeys(prompts) if not isinstance(p, str)]
    if labels:
        embedded = model.embed(torch.tensor(labels, dtype=torch.long, device=model.device))
        states.update(zip(labels, embedded, strict=True))
    jobs = [(p, s) for p in prompts for s in seeds]
    return in_batches(
        model, len(jobs), max(1, batch_size // guided_rows(model, guidance)),
        lambda a, b: torch.stack([states[p] for p, _ in jobs[a:b]]).to(model.device),
        lambda a, b: [torch.Generator().manual_seed(int(s)) for _, s in jobs[a:b]],
        decode, progress, steps=steps, guidance=guidance, eta=eta)
