"""Informative vs redundant channels: the paper's Fig. 7 experiment (§3.3, DESIGN §1.2).

FARMER's claim is that maximum likelihood alone routes the image's structure
into Z^I and leaves detail in Z^R. The experiment that shows it: encode a real
image, then

    (a) keep Z^I and redraw Z^R from the model's own G_{N+1}(· | Z^I, c),
    (b) keep Z^R and perturb Z^I by Gaussian noise of its own scale,

decode both, and compare how much the pixels move. If Z^I carries the
structure, (a) keeps the garment and changes little, while (b) destroys it:

    Fig. 7 ratio = mean |Δpixel| of (a)  /  mean |Δpixel| of (b)    (≪ 1 as in the paper)

Both perturbations are scaled by a variance factor v: Z^R is drawn with each
chosen component's variance × v (v = 0: the components' means), Z^I gets
noise √v · std_j · ε, std_j the standard deviation of informative channel j
over the encoded images' tokens. All latents here are in AR order (after the
final permute), as `Farmer.split` gives them.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .data import dequantize_uniform, make_generator, quantize
from .model import DECODERS, Farmer


@torch.no_grad()
def redraw_redundant(model: Farmer, z_inf: torch.Tensor, y: torch.Tensor, variance: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Z^R (B, N, d_R) drawn given Z^I (B, N, d_I) and labels y (B,) (null class allowed).

    "split": N draws from the shared G_{N+1}(· | Z^I, c), each chosen
    component's variance × `variance` (0: its mean); "jetformer": √v · N(0, I);
    "none": an empty (B, N, 0) tensor.
    """
    cfg = model.cfg
    B, N = z_inf.shape[:2]
    if cfg.redundant_mode == "none":
        return z_inf.new_zeros(B, N, 0)
    if cfg.redundant_mode == "jetformer":
        return math.sqrt(variance) * torch.randn((B, N, cfg.d_r), generator=generator,
                                                 device=z_inf.device, dtype=z_inf.dtype)
    _, g_red = model.ar(z_inf, y)                                              # G_{N+1} over (B,)
    k = g_red.sample_components(N, generator)                                  # (N, B)
    if variance > 0:
        zr = g_red.with_temperature(1.0, math.sqrt(variance)).sample_given(k, generator)  # (N, B, d_R)
    else:
        idx = k[..., None, None].expand(N, B, 1, cfg.d_r)
        zr = g_red.means.expand(N, *g_red.means.shape).gather(-2, idx).squeeze(-2)        # (N, B, d_R)
    return zr.transpose(0, 1)                                                  # (B, N, d_R)


def perturb_informative(z_inf: torch.Tensor, variance: float, scale: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Z^I (B, N, d_I) + √variance · scale · ε, scale (d_I,) per channel (its own std)."""
    eps = torch.randn(z_inf.shape, generator=generator, device=z_inf.device, dtype=z_inf.dtype)
    return z_inf + math.sqrt(variance) * scale * eps


def _check(model: Farmer, images: torch.Tensor, variance: float, decoder: str) -> None:
    if not isinstance(model, Farmer):
        raise ValueError(f"model must be a farmer.Farmer, got {type(model).__name__}")
    model._check_images(images, "images", uint8=True)
    if not (isinstance(variance, (int, float)) and math.isfinite(variance) and variance >= 0):
        raise ValueError(f"variance must be a finite number >= 0, got {variance!r}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")


@torch.no_grad()
def channel_experiment(model: Farmer, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                       variance: float = 1.0, seed: int = 0, decoder: str = "sequential",
                       batch_size: int = 100) -> dict[str, Any]:
    """The Fig. 7 experiment on uint8 images (B, C, H, W) with their labels (B,) (None: null class).

    Every image is encoded (uniform dequantisation, noise seed `seed`) and
    decoded four ways; changes are mean |Δpixel| in grey levels (0..255)
    against decode(encode(x)), over all images and pixels:
      "redraw_redundant"      Z^I kept, Z^R redrawn at `variance`          (a)
      "perturb_informative"   Z^I perturbed at `variance`, Z^R kept        (b)
      "both"                  Z^I perturbed and Z^R redrawn
      "ratio"                 (a) / (b), the Fig. 7 ratio (≪ 1: Z^I carries the structure)
    plus "informative_std" (d_I,), the per-channel scale of the Z^I noise, and
    "reconstruction" (mean |decode(encode(x)) − x|, the decoder's own error).
    """
    _check(model, images, variance, decoder)
    device = next(model.parameters()).device
    images = images.to(device)
    was_training = model.training
    model.eval()
    try:
        B = images.shape[0]
        y = model.labels_or_null(None if labels is None else labels.to(device), B, device, name="labels")
        z, _ = model.encode(dequantize_uniform(images, seed))                  # (B, N, d) raster order
        z_inf, z_red = model.split(model.ar_order(z))                          # AR order
        scale = z_inf.flatten(0, 1).std(0)                                     # (d_I,) over images and tokens
        g = make_generator(seed + 1, device)
        sums = {"redraw_redundant": 0.0, "perturb_informative": 0.0, "both": 0.0, "reconstruction": 0.0}
        for s in range(0, B, batch_size):
            zi, zr, yy = z_inf[s:s + batch_size], z_red[s:s + batch_size], y[s:s + batch_size]
            zr_new = redraw_redundant(model, zi, yy, variance, g)
            zi_new = perturb_informative(zi, variance, scale, g)
            decode = lambda a, b: quantize(model.decode(model.ar_order(torch.cat([a, b], -1)),  # noqa: E731
                                                        decoder)).float()
            ref = decode(zi, zr)                                               # (b, C, H, W) grey levels
            sums["reconstruction"] += (ref - images[s:s + batch_size].float()).abs().mean((1, 2, 3)).sum().item()
            for key, (a, b) in {"redraw_redundant": (zi, zr_new), "perturb_informative": (zi_new, zr),
                                "both": (zi_new, zr_new)}.items():
                sums[key] += (decode(a, b) - ref).abs().mean((1, 2, 3)).sum().item()
    finally:
        model.train(was_training)
    out: dict[str, Any] = {k: v / B for k, v in sums.items()}
    out["ratio"] = out["redraw_redundant"] / max(out["perturb_informative"], 1e-12)
    out.update(informative_std=scale.tolist(), variance=float(variance), images=B, seed=seed, decoder=decoder)
    return out
