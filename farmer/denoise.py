"""Denoising a sample with one score step: Tweedie's formula (DESIGN §1.8, TARFlow §2.4).

A model trained on x + σε (Gaussian noise augmentation) learns the density
p_σ of *noisy* images, so its samples carry that noise. Tweedie's formula
gives the posterior mean of the clean image from the noisy one using only
the noisy density's score:

    E[x | x̃] = x̃ + σ² ∇_x̃ log p_σ(x̃)

FARMER's density is exact, so the score is one backward pass through the
flow and the AR prior. Check on a Gaussian: x ~ N(m, s²), x̃ = x + σε has
p_σ = N(m, s² + σ²), and the step gives x̃ − σ²(x̃ − m)/(s² + σ²), the
closed-form posterior mean.

Units: images in [−1, 1], so σ is in the same units as the training noise
(`TrainConfig.sigma_min` / `sigma_max`).
"""
from __future__ import annotations

import math

import torch

from .model import Farmer


def score(model: Farmer, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """∇_x log p(x | y) for float images x (B, C, H, W) in [−1, 1]; y (B,) or None (null class).

    Each image's log-density depends only on that image, so the gradient of
    the batch sum is every image's own score. Always in eval mode (no label
    dropout) and in float32, whatever the caller's grad / inference mode.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            xg = x.detach().clone().float().requires_grad_(True)               # a normal (non-inference) tensor
            yy = None if y is None else y.detach().clone()
            t = model(xg, yy)
            log_p = -(t["prior_informative"] + t["prior_redundant"]) + t["logdet"]  # (B,) nats
            (grad,) = torch.autograd.grad(log_p.sum(), xg)
    finally:
        model.train(was_training)
    return grad.detach()


def tweedie_denoise(model: Farmer, x: torch.Tensor, sigma: float,
                    y: torch.Tensor | None = None) -> torch.Tensor:
    """x + σ² ∇_x log p(x | y): the posterior mean of the clean image, x (B, C, H, W) -> same shape.

    sigma: the noise level the model was trained at (in [−1, 1] units); 0 returns x.
    """
    if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool)
            and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"denoise sigma must be a finite number >= 0, got {sigma!r}")
    if sigma == 0:
        return x
    return x + sigma ** 2 * score(model, x, y).to(x.dtype)
