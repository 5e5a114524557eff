"""Data-dependent initialisation of the prior's mixtures (a training lever, issue 7).

Every flow block starts as the identity (zero-initialised output projection,
`flow.py`), so at step 0 the latents are the data itself: z = patchify(x),
reversed into AR order and split into Z^I and Z^R. A fresh AR prior, though,
predicts mixtures with means drawn at random and unit scales, far from that
data: the first few hundred steps are spent only moving the GMM heads onto
the pixel values. Fashion-MNIST makes it worse, since half the pixels are
background at x = −1 with a spread of 1/(128·√12) after dequantisation.

This module fits, on one batch of training images, a diagonal GMM to the
pooled latent tokens of each head (k-means++ seeding, Lloyd iterations, then
the weights, means and standard deviations of the clusters), and writes it
into the head's bias:

    G_i^init(z^I)   = Σ_k π_k Π_j N(z_j; m_kj, s_kj²)   fitted to all B·N tokens of Z^I
    G_{N+1}^init(z^R) = the same for the B·N tokens of Z^R   (redundant_mode "split")

and sets the head's weights to zero, so every position starts from exactly
that mixture (random N(0, 0.02) weights would add a position-dependent jitter
of ≈ 0.02·√W to the means, far wider than the background cluster). The
weights still get a gradient from the first step (∂L/∂W = ∂L/∂out ⊗ h), as
with any zero-initialised output layer. It is the mixture-prior analogue of
Glow's data-dependent ActNorm initialisation; the flow itself needs none,
since it starts as the identity.
"""
from __future__ import annotations

import torch

from .gmm import DiagonalGMM
from .likelihood import LN2, LN128
from .model import Farmer

SCALE_FLOOR = 1e-3          # smallest fitted standard deviation (dequantisation noise is ≈ 2.3e-3)


def kmeans(points: torch.Tensor, K: int, iters: int = 10,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding then `iters` Lloyd steps.

    points (M, D) float -> centres (K, D), assignment (M,) int64. An empty
    cluster is re-seeded on the point farthest from its centre.
    """
    M, D = points.shape
    if M < K:
        raise ValueError(f"kmeans: need at least K = {K} points, got {M}")
    x = points.double()
    centres = x[torch.randint(M, (1,), generator=generator)]                  # (1, D)
    d2 = (x - centres).square().sum(1)                                        # (M,)
    for _ in range(1, K):                                                     # k-means++: P ∝ distance²
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / M)
        nxt = x[torch.multinomial(p, 1, generator=generator)]                 # (1, D)
        centres = torch.cat([centres, nxt])
        d2 = torch.minimum(d2, (x - nxt).square().sum(1))
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)                            # (M,)
        counts = torch.bincount(assign, minlength=K)                          # (K,)
        sums = torch.zeros(K, D, dtype=x.dtype).index_add_(0, assign, x)
        for k in torch.nonzero(counts == 0).flatten().tolist():               # re-seed empty clusters
            far = int((x - centres[assign]).square().sum(1).argmax())
            old = int(assign[far])
            if counts[old] < 2:                                               # nothing left to take from
                continue
            sums[old] -= x[far]
            counts[old] -= 1
            sums[k], counts[k] = x[far], 1
            assign[far] = k
        keep = counts == 0                                                    # still empty: stays where it was
        sums[keep], counts[keep] = centres[keep], 1
        centres = sums / counts[:, None]
    assign = torch.cdist(x, centres).argmin(1)
    return centres.to(points.dtype), assign


def fit_diagonal_gmm(points: torch.Tensor, K: int, iters: int = 10,
                     generator: torch.Generator | None = None) -> DiagonalGMM:
    """A K-component diagonal GMM fitted to points (M, D) by k-means: π_k = cluster
    share, m_k = cluster mean, s_k = cluster standard deviation per dimension
    (floored at SCALE_FLOOR; a single-point cluster takes the pooled deviation)."""
    centres, assign = kmeans(points, K, iters, generator)
    x = points.double()
    counts = torch.bincount(assign, minlength=K).double()                     # (K,)
    sq = torch.zeros(K, points.shape[1], dtype=x.dtype).index_add_(0, assign, (x - centres.double()[assign]).square())
    var = sq / counts.clamp_min(1)[:, None]                                   # (K, D)
    pooled = x.var(0, unbiased=False).expand_as(var)
    var = torch.where(counts[:, None] > 1, var, pooled)
    scales = var.sqrt().clamp_min(SCALE_FLOOR)
    logits = torch.log(counts.clamp_min(1) / counts.sum())
    return DiagonalGMM(logits.float(), centres.float(), scales.log().float())


def _write_bias(head: torch.nn.Linear, g: DiagonalGMM) -> None:
    """Make the head output the mixture g for every input: zero weights, bias = the flat
    [logits K | (K, 2, D): means, log-scales] of g."""
    K, D = g.K, g.D
    with torch.no_grad():
        head.weight.zero_()
        head.bias[:K].copy_(g.logits)
        flat = head.bias[K:].view(K, 2, D)
        flat[:, 0].copy_(g.means)
        flat[:, 1].copy_(g.log_scales)


@torch.no_grad()
def data_dependent_init_(model: Farmer, x: torch.Tensor, *, iters: int = 10, seed: int = 0) -> dict[str, float]:
    """Fit the prior's GMM head biases to the latents of float images x (B, C, H, W) in [−1, 1].

    Call it on a fresh model (before the optimizer sees it). Returns the mean
    bits/dim of x (null class, x taken as dequantised 8-bit data) before and
    after, so a caller can log the jump.
    """
    model._check_images(x, "x", uint8=False)
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    before = model.loss(x, None)[0].item()
    z, _ = model.encode(x)                                                    # (B, N, d)
    z_inf, z_red = model.split(model.ar_order(z))                             # (B,N,d_I), (B,N,d_R)
    ar, cfg = model.ar, model.cfg
    _write_bias(ar.head_informative, fit_diagonal_gmm(z_inf.reshape(-1, z_inf.shape[-1]).cpu(),
                                                      cfg.k_informative, iters, g))
    if ar.head_redundant is not None:
        _write_bias(ar.head_redundant, fit_diagonal_gmm(z_red.reshape(-1, z_red.shape[-1]).cpu(),
                                                        cfg.k_redundant, iters, g))
    after = model.loss(x, None)[0].item()
    model.train(was_training)
    # continuous nats/dim -> discrete bits/dim of 8-bit data (DESIGN §5)
    return {"bpd_before": (before + LN128) / LN2, "bpd_after": (after + LN128) / LN2}
