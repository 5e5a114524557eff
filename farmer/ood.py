"""Out-of-distribution inputs: test sets, scores and AUROC (Nalisnick et al., 2019; Serrà et al., 2020).

A likelihood model trained on Fashion-MNIST need not give *unseen kinds* of
images a low likelihood. Bits/dim measure how compressible an image is under
the model, and much of an image's cost is its background: black pixels are
cheap, so an image that is mostly black (a small shape, a thin digit, a constant
dark frame) can score *better* than the garments the model was trained on,
while noise scores far worse. Raw bits/dim is then a poor OOD detector.

Three scores that correct for this, each "higher = more out-of-distribution":

    bpd         bits/dim under the null class, −log p(x) / (D ln 2): the raw likelihood
    complexity  bpd − png_bpd: the model's cost minus a generic compressor's (PNG, lossless),
                the input-complexity ratio of Serrà et al. (2020). What is cheap for
                every compressor (background) cancels; what only the model finds
                expensive remains.
    typicality  |bpd − mean in-distribution bpd|: the distance from the typical set
                (Nalisnick et al., 2019, for one image at a time); flags too-likely
                images as well as too-unlikely ones.
    class_gain  bpd_classes − bpd, where bpd_classes is −log of the evidence
                (1/C)·Σ_y p(x | y) (the Bayes classifier's denominator): how much the
                class labels *fail* to help. Garments gain from knowing their class;
                other images gain little.

`auroc` measures each as a detector: the probability that an OOD image scores
higher than an in-distribution one (0.5 = chance, 1 = perfect).
"""
from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .units import LN2

if TYPE_CHECKING:  # pragma: no cover
    from .model import Farmer
else:
    Farmer = nn.Module


# ============================================================================ OOD image sets
def _size_ok(n: int, size: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (images) must be a positive int, got {n!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 4:
        raise ValueError(f"size must be an int >= 4 (pixels per side), got {size!r}")


def upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, C, h, w) -> uint8 (B, C, size, size), bilinear (no antialiasing needed upwards)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be uint8 (B, C, h, w)")
    up = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return up.round().clamp(0, 255).to(torch.uint8)


def digit_images(n: int = 300, size: int = 28) -> torch.Tensor:
    """scikit-learn's bundled 8×8 handwritten digits (light on dark), upscaled: uint8 (n, 1, size, size).

    The farmer.data digits test split first, then its train split (1,797 in all).
    """
    from .data import load_digits
    _size_ok(n, size)
    digits = torch.cat([torch.as_tensor(load_digits(s).images) for s in ("test", "train")])   # (1797, 1, 8, 8)
    if n > len(digits):
        raise ValueError(f"n must be at most {len(digits)} (scikit-learn ships 1,797 digits), got {n}")
    return upscale(digits[:n], size)


def shape_images(n: int = 300, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Simple synthetic shapes, light on a black background: uint8 (n, 1, size, size).

    Each image is one filled rectangle, disc, ring or triangle of random position,
    size and grey level (96..255), drawn with hard edges.
    """
    _size_ok(n, size)
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(r, r, indexing="ij")                              # (size, size)
    out = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(n):
        u = torch.rand(6, generator=g)
        kind = int(torch.randint(0, 4, (1,), generator=g))
        cx, cy = size * (0.3 + 0.4 * u[0]), size * (0.3 + 0.4 * u[1])        # centre in the middle 40 %
        half = size * (0.12 + 0.2 * u[2])                                      # 12–32 % of the side
        if kind == 0:                                                          # rectangle, aspect 0.5–2
            aspect = 0.5 + 1.5 * u[3]
            mask = ((xx - cx).abs() <= half * aspect ** 0.5) & ((yy - cy).abs() <= half / aspect ** 0.5)
        elif kind in (1, 2):                                                   # disc or ring
            d = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
            mask = d <= half if kind == 1 else (d <= half) & (d >= half * (0.45 + 0.3 * u[3]))
        else:                                                                  # triangle, random rotation
            angles = 2 * math.pi * (u[4] + torch.arange(3) / 3.0)
            vx, vy = cx + half * 1.3 * torch.cos(angles), cy + half * 1.3 * torch.sin(angles)
            sides = [(vx[j] - xx) * (vy[(j + 1) % 3] - yy) - (vy[j] - yy) * (vx[(j + 1) % 3] - xx)
                     for j in range(3)]
            mask = ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | \
                   ((sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))
        out[i, 0][mask] = int(96 + 159 * u[5])
    return out


def constant_images(n: int = 32, size: int = 28) -> torch.Tensor:
    """Constant images at n grey levels evenly spaced over 0..255: uint8 (n, 1, size, size)."""
    _size_ok(n, size)
    levels = torch.linspace(0, 255, n).round().to(torch.uint8)
    return levels.view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()


def noise_images(n: int = 100, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Uniform noise, every pixel independent in 0..255: uint8 (n, 1, size, size)."""
    _size_ok(n, size)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)


def ood_sets(n: int = 300, size: int = 28, seed: int = 0, n_constant: int = 32) -> dict[str, torch.Tensor]:
    """The OOD sets of notebook 06, name -> uint8 (n_i, 1, size, size): digits, shapes, constant, noise."""
    return {"digits": digit_images(n, size), "shapes": shape_images(n, size, seed),
            "constant": constant_images(n_constant, size), "noise": noise_images(n, size, seed)}


# ============================================================================ scores
def png_bits_per_dim(images: torch.Tensor) -> torch.Tensor:
    """Bits/dim of each uint8 image (B, C, H, W) as a lossless PNG (zlib level 9): (B,) float64.

    A generic, data-agnostic compressor: Serrà et al.'s complexity estimate. The
    file's fixed overhead (signature, header and end chunks, about 60 bytes) is
    included; it is the same for every image of a size, so it shifts every score
    alike and leaves AUROC unchanged.
    """
    from PIL import Image
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be uint8 (B, C, H, W)")
    B, C, H, W = images.shape
    if C not in (1, 3):
        raise ValueError(f"png_bits_per_dim handles 1 or 3 channels, got {C}")
    arr = images.cpu().numpy().transpose(0, 2, 3, 1)                           # (B, H, W, C)
    bits = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a[..., 0] if C == 1 else a).save(buf, format="PNG", optimize=True, compress_level=9)
        bits.append(8.0 * buf.tell() / (C * H * W))
    return torch.tensor(bits, dtype=torch.float64)


@torch.no_grad()
def ood_scores(model: "Farmer", images: torch.Tensor, *, seed: int = 0, batch_size: int = 250,
               reference_bpd: float | None = None) -> dict[str, torch.Tensor]:
    """Per-image scores of uint8 images (n, C, H, W), each (n,) float64, higher = more out-of-distribution.

    "bpd" (null class, single-sample, noise seed `seed` per batch as evaluate_split),
    "png_bpd", "complexity" = bpd − png_bpd, and for a class-conditional model
    "bpd_classes" (−log of (1/C)·Σ_y p(x|y) in bits/dim, the same noise) and
    "class_gain" = bpd_classes − bpd. With `reference_bpd` (the mean in-distribution
    bpd, measured on other images), also "typicality" = |bpd − reference_bpd|.
    """
    from .classify import class_log_likelihoods
    model._check_images(images, "images", uint8=True)
    device = next(model.parameters()).device
    D, C = model.cfg.data_dim, model.cfg.num_classes
    bpd, bpd_classes = [], []
    for i, start in enumerate(range(0, images.shape[0], batch_size)):
        x = images[start:start + batch_size].to(device)
        bpd.append(model.nll(x, None, seed=seed + i)["bpd"].double().cpu())
        if C:
            log_lik = class_log_likelihoods(model, x, k=1, seed=seed + i).double()        # (b, C) nats
            evidence = torch.logsumexp(log_lik, 1) - math.log(C)                         # log (1/C)Σ p(x|y)
            bpd_classes.append((-evidence / (D * LN2)).cpu())
    out = {"bpd": torch.cat(bpd), "png_bpd": png_bits_per_dim(images)}
    out["complexity"] = out["bpd"] - out["png_bpd"]
    if C:
        out["bpd_classes"] = torch.cat(bpd_classes)
        out["class_gain"] = out["bpd_classes"] - out["bpd"]
    if reference_bpd is not None:
        out["typicality"] = (out["bpd"] - float(reference_bpd)).abs()
    return out


# ============================================================================ AUROC
def auroc(scores_in: torch.Tensor | np.ndarray, scores_out: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve for detecting OOD by "score > threshold" (higher score = OOD).

    = P(score_out > score_in) + ½·P(score_out = score_in) over all in/out pairs
    (the Mann–Whitney U statistic over n_in·n_out), from ranks with ties averaged.
    1 = every OOD image scores above every in-distribution one, 0.5 = chance, 0 = reversed.
    """
    a = np.asarray(scores_in, dtype=np.float64).ravel()
    b = np.asarray(scores_out, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"auroc needs scores on both sides, got {a.size} in and {b.size} out")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("auroc: scores must be finite")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    ranks[order] = np.arange(1, both.size + 1)
    # ties share their average rank
    uniq, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    u_out = ranks[a.size:].sum() - b.size * (b.size + 1) / 2                   # pairs with out > in (+½ ties)
    return float(u_out / (a.size * b.size))
