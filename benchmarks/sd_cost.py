"""Computed, not measured: peak memory and time per diffusion method on Stable Diffusion 1.5 and
SDXL on one 80 GB GPU, from counted parameters, counted activations and counted FLOPs.

The UNets are built from their published configs on PyTorch's ``meta`` device (no memory, no
weights), so this runs in seconds on any machine:

- parameters: counted per group (all, ``attn2`` = ESD-x / Concept Ablation / Forget-Me-Not,
  ``attn2.to_k/to_v`` = UCE, the rest = ESD-u);
- activations: the bytes of every tensor autograd saves in one training forward at batch 1
  (a saved-tensor hook; each tensor counted once), in bf16 (mixed precision);
- FLOPs: ``torch.utils.flop_counter`` on one forward; backward = 2 × forward.

Memory model (what obliviate's implementations keep): fp32 master weights of the UNet, VAE and
text encoder(s); for trained parameters fp32 gradients and Adam moments (12 B each); a frozen
fp32 UNet copy where the method keeps one (ESD, Concept Ablation); SalUn's mask and
gradient sums (8 B/param); Selective Amnesia's Fisher diagonal and anchor (8 B/param);
EraseDiff's inner Adam and parameter snapshot (12 B/param); plus activations × batch.
Time model: FLOPs of the method's default schedule (steps × batch × UNet passes) at an assumed
40% of the A100's 312 TFLOP/s bf16 peak (125 TFLOP/s); a GPU lent later replaces these figures.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sd_cost.py
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

SD15 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
            cross_attention_dim=768, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SDXL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, norm_num_groups=32, transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
# published parameter counts of the parts that are not the UNet (fp32 copies kept in memory)
OTHERS = {"SD-1.5": {"vae": 83.65e6, "text": 123.06e6},
          "SDXL": {"vae": 83.65e6, "text": 123.06e6 + 694.66e6}}
EFFECTIVE_FLOPS = 0.4 * 312e12
GB = 1e9

# method: (trained group, default steps, batch, trained fwd+bwd per step, extra no-grad UNet
#          passes per step, per-param extra bytes kept, frozen UNet copy)
METHODS = {
    "ESD-x": ("xattn", 1000, 1, 1, 25 * 2 + 2, 0, True),  # mean 25 DDIM steps × CFG, + 2
    "ESD-u": ("noxattn", 1000, 1, 1, 25 * 2 + 2, 0, True),
    "UCE": ("kv", 0, 0, 0, 0, 0, False),
    "Concept Ablation": ("xattn", 400, 8, 1, 1, 0, True),
    "SalUn": ("full", 500, 8, 2, 1, 8, False),  # forget + retain terms, pseudo-label pass
    "Forget-Me-Not": ("xattn", 35, 1, 1, 0, 0, False),
    "Selective Amnesia": ("full", 20_000, 8, 2, 0, 8, False),
    "EraseDiff": ("full", 500, 8, 3, 1, 12, False),  # inner step, outer forget + retain
}


def build(config: dict):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def groups(unet) -> dict[str, int]:
    named = list(unet.named_parameters())
    xattn = sum(p.numel() for n, p in named if "attn2" in n)
    kv = sum(p.numel() for n, p in named if "attn2.to_k" in n or "attn2.to_v" in n)
    total = sum(p.numel() for _, p in named)
    skip = ("time_embedding", "conv_out", "conv_norm_out", "add_embedding")
    noxattn = sum(p.numel() for n, p in named if "attn2" not in n and not n.startswith(skip))
    return {"full": total, "xattn": xattn, "kv": kv, "noxattn": noxattn}


def inputs(config: dict) -> tuple[tuple, dict]:
    side = config["sample_size"]
    x = torch.randn(1, 4, side, side, device="meta", dtype=torch.bfloat16)
    ctx = torch.randn(1, 77, config["cross_attention_dim"], device="meta", dtype=torch.bfloat16)
    kwargs = {"encoder_hidden_states": ctx}
    if config.get("addition_embed_type") == "text_time":
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, 1280, device="meta", dtype=torch.bfloat16),
            "time_ids": torch.randn(1, 6, device="meta", dtype=torch.bfloat16)}
    return (x, torch.tensor([500], device="meta")), kwargs


def activations_and_flops(unet, config: dict) -> tuple[int, int]:
    unet = unet.to(torch.bfloat16)
    seen: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen.setdefault(id(t), t)
        return t

    args, kwargs = inputs(config)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unet(*args, **kwargs)
    saved = sum(t.numel() * t.element_size() for t in seen.values()
                if not isinstance(t, torch.nn.Parameter))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(*args, **kwargs)
    return saved, counter.get_total_flops()


def table(name: str, config: dict) -> list[str]:
    unet = build(config)
    count = groups(unet)
    activation, flops = activations_and_flops(unet, config)
    resident = 4 * (count["full"] + sum(OTHERS[name].values()))
    rows = [f"{name}: UNet {count['full'] / 1e6:.1f}M parameters "
            f"(attn2 {count['xattn'] / 1e6:.1f}M, "
            f"to_k/to_v {count['kv'] / 1e6:.1f}M); activations {activation / GB:.2f} GB per "
            f"sample (bf16); {flops / 1e9:.0f} GFLOP per forward; fp32 weights of every part "
            f"{resident / GB:.1f} GB", "",
            "| method | trained params | batch | peak memory (GB) | fits 80 GB | time (min) |",
            "|---|---|---|---|---|---|"]
    for method, (group, steps, batch, trained, extra, per_param, frozen) in METHODS.items():
        trained_params = count[group]
        memory = resident + 12 * trained_params + per_param * trained_params
        memory += 4 * count["full"] if frozen else 0
        memory += activation * batch * (2 if trained > 1 else 1)
        if steps == 0:  # closed form: the text encoder's passes and a solve per edited map
            minutes = 0.0
        else:
            step_flops = batch * (3 * flops * trained + flops * extra)
            minutes = steps * step_flops / EFFECTIVE_FLOPS / 60
        rows.append(f"| {method} | {trained_params / 1e6:.1f}M ({group}) | {batch or '-'} | "
                    f"{memory / GB:.1f} | {'yes' if memory < 80 * GB else 'no'} | "
                    f"{minutes:.1f} |")
    return rows


if __name__ == "__main__":
    for name, config in (("SD-1.5", SD15), ("SDXL", SDXL)):
        print("\n".join(table(name, config)), end="\n\n")
