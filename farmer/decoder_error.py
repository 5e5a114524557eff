"""How far each decoder's images are from the exact inverse: flow space and pixel space.

Two spaces, two figures, never to be confused:

    flow space    the AF's input tokens (B, N, d). Without channel mixing these are
                  the patch's pixels in [−1, 1] units; with mixing in front of the AF
                  (the shipped model's DCT) they are the patch's coefficients in the
                  basis M, and errors there are not pixel errors (for an orthonormal
                  M the squared error is the same, the max is not; for LU mixing
                  even the MSE differs).
    pixel space   the decoded image as a user sees it: tokens -> M⁻¹ -> unpatchify,
                  clipped to [−1, 1]; RMSE reported in grey levels (×128, 0..255
                  scale), and the fraction of uint8 pixels that change after
                  quantising.

Two sets of latents:

    `reconstruction_error`     encoded held-out images: x -> z = F(x) -> decoder(z)
                               against x itself (the exact inverse gives x back).
    `sampled_decoder_error`    the latents the model samples (AR prior, any guidance):
                               decoder(z) against the cached sequential inverse of the
                               same z run in float64. These are what users decode; the student
                               was trained near encoded data, so its error is larger here.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .data import dequantize_uniform, make_generator, quantize
from .decoders import Jacobi, check_decoder, invert

if TYPE_CHECKING:  # pragma: no cover
    from .model import Farmer

GREY = 128.0                     # [−1, 1] units -> grey levels of the 0..255 scale
DECODER_NAMES = ("sequential", "jacobi", "distilled", "hybrid")   # the decoders a user picks between


class _Errors:
    """Running sums of flow-space and pixel-space errors over batches."""

    def __init__(self) -> None:
        self.flow_sq = self.pixel_sq = 0.0
        self.flow_max = self.pixel_max = 0.0
        self.changed = self.count = 0

    def add(self, model: "Farmer", tokens: torch.Tensor, ref_tokens: torch.Tensor) -> None:
        """tokens, ref_tokens: the AF's input (B, N, d) from the decoder and from the reference."""
        err = (tokens - ref_tokens).double()
        self.flow_sq += float(err.square().sum())
        self.flow_max = max(self.flow_max, float(err.abs().max()))
        img = model.tokens_to_image(tokens).clamp(-1, 1)                       # (B, C, H, W) as shown
        ref = model.tokens_to_image(ref_tokens).clamp(-1, 1)
        px = (img - ref).double()
        self.pixel_sq += float(px.square().sum())
        self.pixel_max = max(self.pixel_max, float(px.abs().max()))
        self.changed += int((quantize(img) != quantize(ref)).sum())
        self.count += err.numel()

    def result(self) -> dict[str, float]:
        mse, flow_mse = self.pixel_sq / self.count, self.flow_sq / self.count
        return {"rmse_gray": math.sqrt(mse) * GREY, "mse": mse, "max_abs_gray": self.pixel_max * GREY,
                "changed_pixels": self.changed / self.count,
                "flow_mse": flow_mse, "flow_rmse": math.sqrt(flow_mse), "flow_max_abs": self.flow_max}


def _student_inverse(model: "Farmer", student: nn.Module) -> "Farmer":
    """`model` seen with `student` as its student (a shallow stand-in: nothing of `model` is changed)."""
    if student is model.student:
        return model

    class _With(nn.Module):                                                 # invert() reads .flow and .student
        def __init__(self):
            super().__init__()
            self.flow, self.student = model.flow, student
    return _With()


@torch.no_grad()
def reconstruction_error(model: "Farmer", images: torch.Tensor, student: nn.Module | None = None, *,
                         decoder: str = "distilled", batch_size: int = 256, seed: int = 0, exact: bool = True,
                         jacobi: Jacobi = Jacobi()) -> dict[str, Any]:
    """How well `decoder` undoes the model on encoded held-out images (uint8 (M, C, H, W)).

    Each image is dequantised (seed fixed) to x, encoded z = F(x) and decoded;
    the exact inverse of z is x, so the error is against x. `student` overrides
    model.student for the "distilled" and "hybrid" decoders.

    Returns (module docstring for the two spaces):
      pixel space: "rmse_gray" (RMSE, grey levels), "mse" ([−1, 1] units²),
        "max_abs_gray" (grey levels), "changed_pixels" (fraction of uint8 pixels
        that differ from x's after quantising);
      flow space: "flow_mse", "flow_rmse", "flow_max_abs" (the AF's input units);
      with exact=True "exact_mse", "exact_rmse_gray" and "exact_flow_mse": the cached
      sequential inverse's numerical error on the same z (the floor);
      "decoder", "images", "seed", "latents": "encoded test images".
    """
    _check_images(images)
    inv = _student_inverse(model, student) if student is not None else model
    check_decoder(inv, decoder)
    g = make_generator(seed, images.device)
    p = next(model.flow.parameters())
    errs, floor = _Errors(), _Errors()
    for start in range(0, images.shape[0], batch_size):
        x = dequantize_uniform(images[start:start + batch_size], generator=g)
        tokens = model.image_to_tokens(x.to(device=p.device, dtype=p.dtype))[0]   # (B, N, d) AF input
        z, _ = model.flow(tokens)                                               # (B, N, d)
        errs.add(model, invert(inv, z, decoder, jacobi)[0], tokens)
        if exact:
            floor.add(model, model.flow.reverse(z), tokens)
    out: dict[str, Any] = {**errs.result(), "decoder": decoder, "images": int(images.shape[0]), "seed": seed,
                           "latents": "encoded test images"}
    if exact:
        f = floor.result()
        out.update(exact_mse=f["mse"], exact_rmse_gray=f["rmse_gray"], exact_flow_mse=f["flow_mse"])
    return out


@torch.no_grad()
def sampled_decoder_error(model: "Farmer", decoders: str | tuple[str, ...] = DECODER_NAMES, num_samples: int = 500,
                          *, batch_size: int = 100, seed: int = 0, jacobi: Jacobi = Jacobi(),
                          **sampling: Any) -> dict[str, dict[str, Any]]:
    """How far each decoder is from the exact inverse on latents the model samples itself.

    Latents: `farmer.sampling.sample_latents` with balanced class labels (or
    unconditional for a model without classes), seed + batch index per batch,
    and `sampling` (guidance, cfg_scale, temperatures; default: no guidance).
    Reference: the KV-cached sequential inverse of the same latents run in
    float64 (so "sequential" itself shows its float32 rounding). Returns
    {decoder: the pixel- and flow-space keys of `reconstruction_error`, with
    "num_samples", "seed", "sampling" and "latents": "sampled"}.
    """
    import copy
    from .sampling import sample_latents
    decoders = (decoders,) if isinstance(decoders, str) else tuple(decoders)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    for d in decoders:
        check_decoder(model, d)
    exact = copy.deepcopy(model).double()                                      # the float64 reference
    nc = model.cfg.num_classes
    errs = {d: _Errors() for d in decoders}
    for b, start in enumerate(range(0, num_samples, batch_size)):
        n = min(batch_size, num_samples - start)
        labels = (torch.arange(start, start + n) % nc).tolist() if nc else None
        z = sample_latents(model, labels, seed=seed + b, num_samples=None if nc else n, **sampling)   # (n, N, d)
        z_flow = model.unmix_latent(z)                                          # (n, N, d) the AF's output
        ref = invert(exact, z_flow.double(), "sequential")[0]                   # (n, N, d) float64
        for d in decoders:
            errs[d].add(exact, invert(model, z_flow, d, jacobi)[0].double(), ref)
    about = {"num_samples": num_samples, "seed": seed, "sampling": dict(sampling) or {"guidance": "none"},
             "latents": "sampled", "reference": "sequential inverse in float64"}
    return {d: {**e.result(), "decoder": d, **about} for d, e in errs.items()}


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[0] == 0:
        raise ValueError(f"images must be uint8 (M, C, H, W) with M >= 1, got "
                         f"{images.dtype if isinstance(images, torch.Tensor) else type(images).__name__}"
                         f"{' ' + str(tuple(images.shape)) if isinstance(images, torch.Tensor) else ''}")
