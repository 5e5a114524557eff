"""Data: dequantisation of uint8 pixels (DESIGN §1.4).

x = (q + u)/128 − 1 maps q ∈ {0..255}, u ∈ [0, 1) onto [−1, 1): see
likelihood.py for why this gives a true bound on the discrete data.
"""
from __future__ import annotations

import torch


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (determinism per device)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def dequantize_uniform(x: torch.Tensor, seed: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [−1, 1): (q + u)/128 − 1, u ~ U[0, 1).

    `seed` fixes the noise (None and no generator = fresh global-RNG noise).
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"dequantize_uniform: x must be uint8 pixels, got {x.dtype}")
    if generator is None and seed is not None:
        generator = make_generator(seed, x.device)
    u = torch.rand(x.shape, generator=generator, device=x.device)
    return (x.float() + u) / 128.0 - 1.0


def quantize(x: torch.Tensor) -> torch.Tensor:
    """float images in [−1, 1] -> uint8 pixels: clip, then floor((x + 1)·128)."""
    return ((x.clamp(-1, 1) + 1) * 128).floor().clamp(0, 255).to(torch.uint8)
