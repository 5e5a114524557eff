"""Walking between two images in the latent space Z, with bits/dim along the way.

The flow is a bijection, so every image has exactly one latent z = encode(x)
and every latent decodes to an image. Encode two images, walk from z_a to z_b,
decode each point and score it with the model's own exact likelihood.

Two paths, t ∈ [0, 1]:

    linear      z(t) = (1 − t)·z_a + t·z_b
    spherical   z(t) = ((1 − t)·‖z_a‖ + t·‖z_b‖) · slerp(ẑ_a, ẑ_b; t),
                slerp(â, b̂; t) = [sin((1 − t)Ω)·â + sin(tΩ)·b̂] / sin Ω,  cos Ω = â·b̂

Why the second. Latents of two different images are far from parallel in
D = N·d dimensions (on the shipped model cos Ω ≈ 0.27 on average over random
test pairs), so the linear midpoint is shorter than either end — by 1/√2, half
the energy (variance), for orthogonal ends of equal norm; by about 0.8 on the
shipped model (benchmarks/interpolation.py). It lies inside the shell where
real latents live and decodes to a washed-out image that is atypically *likely*.
The spherical path keeps the norm on the straight line between the two
endpoint norms (exactly, for any endpoints), so it preserves the latents'
variance; for orthogonal endpoints of equal norm it is the
variance-preserving path z(t) = cos(πt/2)·z_a + sin(πt/2)·z_b.
Norms and angles are taken over the whole latent of an image (all N·d values).

Images are encoded at the centres of their grey-level bins, (q + ½)/128 − 1
(no dequantisation noise), so decode(encode(x)) quantises back to x exactly
and the path's endpoints are the inputs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .data import quantize

if TYPE_CHECKING:  # pragma: no cover
    from .model import Farmer
else:
    Farmer = nn.Module

PATHS = ("linear", "spherical")


def path_times(steps: int) -> torch.Tensor:
    """`steps` evenly spaced t from 0 to 1 inclusive, float64 (steps,)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps must be an int >= 2 (the two endpoints included), got {steps!r}")
    return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)


def linear_path(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, ...) endpoints, t (S,) -> (B, S, ...): (1 − t)·z_a + t·z_b."""
    t = t.to(z_a.dtype).view(1, -1, *([1] * (z_a.dim() - 1)))                 # (1, S, 1, …)
    return (1 - t) * z_a[:, None] + t * z_b[:, None]


def spherical_path(z_a: torch.Tensor, z_b: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, ...) endpoints, t (S,) -> (B, S, ...): slerp of the directions, norm linear in t.

    ‖z(t)‖ = (1 − t)·‖z_a‖ + t·‖z_b‖ exactly. Where the two directions are
    (nearly) parallel or opposite, sin Ω ≈ 0 and slerp is undefined or unstable:
    those pairs fall back to the normalised linear interpolation of the directions
    (parallel: the same direction; opposite: the path goes through zero norm there).
    """
    B = z_a.shape[0]
    a, b = z_a.reshape(B, -1).double(), z_b.reshape(B, -1).double()            # (B, D)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)        # (B, 1)
    if (na <= eps).any() or (nb <= eps).any():
        raise ValueError("spherical_path: an endpoint latent is (nearly) zero, so it has no direction")
    ua, ub = a / na, b / nb                                                    # unit directions
    cos = (ua * ub).sum(1, keepdim=True).clamp(-1.0, 1.0)                      # (B, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    tt = t.double()[None, :, None]                                             # (1, S, 1)
    ok = (sin > 1e-4)[:, None]                                                 # (B, 1, 1) slerp well defined
    safe_sin = torch.where(sin > 1e-4, sin, torch.ones_like(sin))[:, None]
    w_a = torch.sin((1 - tt) * omega[:, None]) / safe_sin                      # (B, S, 1)
    w_b = torch.sin(tt * omega[:, None]) / safe_sin
    direction = w_a * ua[:, None] + w_b * ub[:, None]                          # (B, S, D), unit norm
    lerp = (1 - tt) * ua[:, None] + tt * ub[:, None]                           # the fallback
    lerp = lerp / lerp.norm(dim=-1, keepdim=True).clamp_min(eps)
    direction = torch.where(ok, direction, lerp)
    norm = (1 - tt) * na[:, None] + tt * nb[:, None]                           # (B, S, 1)
    return (norm * direction).to(z_a.dtype).reshape(B, t.numel(), *z_a.shape[1:])


@torch.no_grad()
def interpolate(model: "Farmer", x_a: torch.Tensor, x_b: torch.Tensor, *, steps: int = 9,
                path: str = "spherical", labels: torch.Tensor | None = None, seed: int = 0,
                decoder: str = "sequential") -> dict[str, Any]:
    """Encode uint8 image pairs x_a, x_b (B, C, H, W), walk between their latents, decode and score.

    steps: points on the path, the endpoints included; path: "linear" or
    "spherical"; labels (B,) or None: the class each decoded image is scored
    under (None: the null class, −log p(x) of the unconditional model — the
    natural choice between two classes); seed: the dequantisation noise of the
    single-sample bits/dim; decoder: as `model.decode`.

    Returns {"t" (S,), "z" (B, S, N, d) latents, "images" uint8 (B, S, C, H, W),
    "bpd" (B, S) bits/dim of each decoded image, "latent_norm" (B, S) ‖z(t)‖,
    "path", "decoder", "estimator"}.
    """
    from .likelihood import estimator_name
    from .model import DECODERS
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    t = path_times(steps)
    model._check_images(x_a, "x_a", uint8=True)
    model._check_images(x_b, "x_b", uint8=True)
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must hold the same number of images, got {tuple(x_a.shape)} "
                         f"and {tuple(x_b.shape)}")
    device = next(model.parameters()).device
    B = x_a.shape[0]
    if labels is not None:                                                     # validated, (B,) on device
        labels = model.labels_or_null(labels.to(device) if isinstance(labels, torch.Tensor) else labels,
                                      B, device, name="labels")
    was_training = model.training
    model.eval()
    try:
        centres = lambda q: (q.to(device).float() + 0.5) / 128.0 - 1.0        # noqa: E731 bin centres, [−1, 1]
        z_a, _ = model.encode(centres(x_a))                                    # (B, N, d)
        z_b, _ = model.encode(centres(x_b))
        walk = linear_path if path == "linear" else spherical_path
        z = walk(z_a, z_b, t)                                                  # (B, S, N, d)
        S = t.numel()
        images = quantize(model.decode(z.flatten(0, 1), decoder))              # (B·S, C, H, W) uint8
        y = None if labels is None else labels.repeat_interleave(S)           # (B·S,) or the null class
        bpd = model.nll(images, y, seed=seed)["bpd"]                           # (B·S,)
    finally:
        model.train(was_training)
    return {"t": t, "z": z, "images": images.view(B, S, *images.shape[1:]), "bpd": bpd.view(B, S),
            "latent_norm": z.flatten(2).norm(dim=2), "path": path, "decoder": decoder,
            "estimator": f"{estimator_name(1)}, noise seed {seed}, "
                         + ("null class (unconditional)" if labels is None else "class labels")}
