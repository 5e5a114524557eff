"""Exact likelihoods: bits/dim, the importance-weighted bound and per-pixel maps (DESIGN §1.6).

Units. Pixels q ∈ {0..255} are mapped to x = (q + u)/128 − 1 with u ~ U[0, 1)^D
(uniform dequantisation). The change of variables from q + u to x has
Jacobian (1/128)^D, so a density p_x on [−1, 1]^D gives the discrete model

    −log P(q) ≤ E_u[ −log p_x(x) ] + D·ln 128

— the "+ D·ln 128" that TARFlow's bits/dim code subtracts without comment is
exactly this rescale. Bits/dim divides by D·ln 2. A model that is uniform
on [−1, 1]^D has −log p_x = D·ln 2 and scores ln 256 / ln 2 = 8 bits/dim.

Estimators. `model.nll` is single-sample (one u per image). The K-sample
importance-weighted bound −log (1/K) Σ_k P(q + u_k) … is tighter and still an
upper bound on the discrete NLL in expectation; it is never above the
single-sample estimate on average.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .layers import unpatchify
from .units import LN2, LN128, bits_per_dim, discrete_nll  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from .data import ImageDataset

# The estimators take a farmer.Farmer; they only call its methods, so this module
# does not import model.py (which imports `units` for its own bits/dim).
Farmer = nn.Module


@torch.no_grad()
def importance_weighted_nll(model: "Farmer", x: torch.Tensor, y: torch.Tensor | None = None,
                            k: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """K-sample importance-weighted dequantisation bound, per image.

    With the uniform dequantiser q(u) = 1 on [0,1)^D the weights are just the
    model densities: −log (1/K) Σ_k exp(−nll_k), nll_k from noise seed + k.
    Returns {"nll": (B,) nats, "bpd": (B,), "nll_single": (B,) the k = 1 estimate
    with the first seed, "nll_samples": (K, B) every single-sample estimate}.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    nlls = torch.stack([model.nll(x, y, seed=seed + j)["nll"] for j in range(k)], 0)  # (K, B), eval mode
    iw = -(torch.logsumexp(-nlls, dim=0) - math.log(k))                                 # (B,)
    D = model.cfg.data_dim
    return {"nll": iw, "bpd": bits_per_dim(iw, D), "nll_single": nlls[0], "nll_samples": nlls}


@torch.no_grad()
def likelihood_map(model: "Farmer", x: torch.Tensor, y: torch.Tensor | None = None,
                   seed: int | None = 0) -> dict[str, torch.Tensor]:
    """Where the bits go: an exact per-pixel decomposition of the NLL bound.

    x: uint8 (B, C, H, W); y: (B,) labels or None. The AF is elementwise per
    dimension of its input tokens, so every log-det term belongs to one such
    dimension. Without channel mixing that dimension is a pixel. With mixing in
    front of the AF (mixing_position "input", the shipped model's DCT) it is a
    coefficient of the patch, and its term is spread over the patch's pixels by
    the squared basis weights M[j,k]²/Σ_k M[j,k]²; log|det M| (0 for an
    orthonormal basis, Σ log|u_jj| per token for LU) is spread evenly over all
    pixels (Farmer.logdet_per_pixel). So pixel (c, h, w) gets

        bits = [ −(its share of Σ_t logdet_t and of log|det M|) + (prior NLL of its token)/d + ln 128 ] / ln 2

    where the token's prior NLL (informative + redundant GMM terms) is spread
    evenly over its d dimensions. The map sums exactly to bpd·D of `model.nll`
    with the same seed (to float precision of the dtype the model runs in).

    Returns a dict:
      "pixel_bits" (B, C, H, W)        bits per pixel value
      "token_bits" (B, N)              the same summed over each patch
      "token_prior_bits" (B, N)        the prior part alone: informative + redundant
      "token_informative_bits", "token_redundant_bits" (B, N)
      "block_logdet" (B, n_blocks)     log|det| of each AF block, nats
      "mixing_logdet" (B,)             log|det| of the channel mixing over the whole image, nats
                                       (0 without mixing or with an orthonormal one; "logdet" =
                                       block_logdet summed + mixing_logdet)
      "bpd" (B,), "nll" (B,) nats, "prior_informative_bits", "prior_redundant_bits",
      "logdet_bits" (B,) — the §1.6 split of the total.
    """
    t = model.nll(x, y, seed=seed, detail=True)                                # eval mode (model.nll)
    cfg = model.cfg
    d = cfg.token_dim
    ld_terms = t["logdet_terms"]                                                # (B, n, N, d)
    tok_prior = t["token_informative"] + t["token_redundant"]                  # (B, N)
    # every log-det term on its pixel (spread over the patch by the squared basis
    # weights when a channel mixing sits before the AF; see Farmer.logdet_per_pixel)
    pixel_nats = -t["logdet_pixel"] + tok_prior[..., None] / d + LN128         # (B, N, d)
    pixel_bits_tokens = pixel_nats / LN2                                       # (B, N, d)
    return {
        "pixel_bits": unpatchify(pixel_bits_tokens, cfg.patch_size, cfg.channels, cfg.image_size),
        "token_bits": pixel_bits_tokens.sum(-1),
        "token_prior_bits": tok_prior / LN2,
        "token_informative_bits": t["token_informative"] / LN2,
        "token_redundant_bits": t["token_redundant"] / LN2,
        "block_logdet": ld_terms.sum((2, 3)),
        "mixing_logdet": t["logdet_mixing"],
        "bpd": t["bpd"],
        "nll": t["nll"],
        "prior_informative_bits": t["prior_informative"] / LN2,
        "prior_redundant_bits": t["prior_redundant"] / LN2,
        "logdet_bits": t["logdet"] / LN2,
    }


def within_patch_share(pixel_bits: torch.Tensor, patch_size: int) -> float:
    """How much of a per-pixel map's variance lies inside its p×p patches: the map's resolution.

    pixel_bits: (B, C, H, W), e.g. `likelihood_map(...)["pixel_bits"]`. For each
    image and channel the map's variance about its mean splits exactly (law of
    total variance) into the variance of the patch means (between patches) and
    the mean variance inside the patches (within). Returns the mean over images
    of within / total, in [0, 1]: 0 for a map that is constant on every patch
    (e.g. a log-det term spread evenly over its patch, as the DCT in front of
    the flow does to most of the map), larger when the map resolves detail
    inside the patches. An image whose map is constant counts as 0.
    """
    B, C, H, W = pixel_bits.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"within_patch_share: the map's size {H}x{W} is not a multiple of patch_size {p}")
    m = pixel_bits.double().reshape(B, C, H // p, p, W // p, p)                # (B, C, H/p, p, W/p, p)
    within = (m - m.mean((3, 5), keepdim=True)).square().sum((1, 2, 3, 4, 5))  # (B,)
    total = (m - m.mean((2, 3, 4, 5), keepdim=True)).square().sum((1, 2, 3, 4, 5))  # (B,), per channel mean
    share = torch.where(total > 0, within / total.clamp_min(1e-300), torch.zeros_like(total))
    return float(share.mean())


# ============================================================================ whole splits
def estimator_name(k: int) -> str:
    """How a bits/dim figure was estimated; stored next to every number (DESIGN §1.6)."""
    if k == 1:
        return "single-sample uniform dequantisation (one u ~ U[0,1)^D per image)"
    return f"importance-weighted bound, K={k} uniform dequantisations per image (-logmeanexp over K)"


@torch.no_grad()
def evaluate_split(model: "Farmer", data: "torch.Tensor | ImageDataset", labels: torch.Tensor | None = None, *,
                   k: int = 1, batch_size: int = 256, seed: int = 0, conditional: bool = True,
                   progress: bool = False) -> dict[str, Any]:
    """Bits/dim of a whole split: the mean over images of the per-image NLL bound.

    data: uint8 images (N, C, H, W) with `labels` (N,) (or None), or an
    ImageDataset (its labels are used). conditional=False scores every image
    under the null class, i.e. log p(x) of the unconditional model.
    k = 1: single-sample estimate; k > 1: the K-sample importance-weighted
    bound (never above the mean of its K single-sample estimates).
    Noise: batch i (images i·batch_size …) uses seeds seed + i·k … seed + i·k + k − 1,
    so with one batch and k = 1 the figure equals `model.nll(x, y, seed=seed)["bpd"].mean()`.

    Returns a JSON-ready dict: "bpd" (mean, bits/dim), "bpd_std", "bpd_stderr",
    "nll_nats" (mean per image), "estimator", "k", "images", "conditioning",
    "terms_bpd" (the §1.6 split, from the first draw), and for k > 1
    "bpd_single" (first draw) and "bpd_single_mean" (mean of the K draws).
    """
    from tqdm.auto import tqdm
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(data)
    if n == 0:
        raise ValueError("evaluate_split: no images to evaluate")
    use_labels = bool(conditional and model.cfg.num_classes
                      and (labels is not None or not isinstance(data, torch.Tensor)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()                                    # important! no label dropout while scoring
    D = model.cfg.data_dim
    iw, single, single_mean, terms = [], [], [], {"prior_informative": [], "prior_redundant": [], "logdet": []}
    t0 = time.perf_counter()
    try:
        for i, start in enumerate(tqdm(range(0, n, batch_size), disable=not progress, unit="batch")):
            idx = list(range(start, min(start + batch_size, n)))
            if isinstance(data, torch.Tensor):
                x = data[start:start + len(idx)]
                y = labels[start:start + len(idx)] if labels is not None else None
            else:
                x, y = data.get_batch(idx)
            x = x.to(device)
            y = y.to(device) if use_labels else None
            first = model.nll(x, y, seed=seed + i * k)
            for key in terms:
                terms[key].append(first[key].double().cpu())
            if k == 1:
                iw.append(first["nll"].double().cpu())
                continue
            rest = [first["nll"]] + [model.nll(x, y, seed=seed + i * k + j)["nll"] for j in range(1, k)]
            nlls = torch.stack(rest).double()                                   # (K, B)
            iw.append((-(torch.logsumexp(-nlls, 0) - math.log(k))).cpu())
            single.append(nlls[0].cpu())
            single_mean.append(nlls.mean(0).cpu())
    finally:
        model.train(was_training)
    to_bpd = 1.0 / (D * LN2)
    nll = torch.cat(iw)
    bpd = nll * to_bpd
    out: dict[str, Any] = {
        "estimator": estimator_name(k), "k": k, "images": n,
        "conditioning": "class labels" if use_labels else "null class (unconditional)",
        "bpd": bpd.mean().item(), "bpd_std": bpd.std().item() if n > 1 else 0.0,
        "bpd_stderr": bpd.std().item() / math.sqrt(n) if n > 1 else 0.0, "nll_nats": nll.mean().item(),
        "terms_bpd": {key: (torch.cat(v).mean() * to_bpd).item() for key, v in terms.items()},
        "seed": seed, "batch_size": batch_size, "seconds": time.perf_counter() - t0,
    }
    if k > 1:
        out["bpd_single"] = (torch.cat(single).mean() * to_bpd).item()
        out["bpd_single_mean"] = (torch.cat(single_mean).mean() * to_bpd).item()
    return out
