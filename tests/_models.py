"""Small seeded models shared by the tests (not a test module)."""
from __future__ import annotations

import torch

import farmer


def perturbed_model(preset: str = "tiny", seed: int = 0, scale: float = 0.1, **changes) -> farmer.Farmer:
    """A fresh model whose zero-initialised flow outputs are randomised.

    A fresh flow is the identity (zero-init output projections), which would
    make invertibility and log-det tests pass trivially; random output
    weights give every block a real, data-dependent shift and scale.
    """
    torch.manual_seed(seed)
    cfg = farmer.presets[preset].replace(**changes) if changes else farmer.presets[preset]
    model = farmer.Farmer(cfg)
    with torch.no_grad():
        for block in model.flow.blocks:
            block.proj_out.weight.normal_(std=scale)
            block.proj_out.bias.normal_(std=scale)
    return model.eval()


def random_images(cfg: farmer.FarmerConfig, batch: int, seed: int = 0) -> torch.Tensor:
    """uint8 (B, C, H, W) noise images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, cfg.channels, cfg.image_size, cfg.image_size),
                         generator=g, dtype=torch.uint8)
