"""Farmer: the autoregressive flow, the channel split and the AR prior as one model.

    x --dequantise--> X (B, N, d) --AF--> Z (B, N, d) --final permute--> --split--> Z^I, Z^R

    log p(x) = log p(Z^I | c) + log p(Z^R | Z^I, c) + log|det dZ/dX|          (Eq. 13)

`forward` returns the three terms per image, in nats; `nll` adds the
uniform dequantisation of uint8 pixels and turns them into the discrete-data
NLL bound and bits/dim (DESIGN §1.6).
"""
from __future__ import annotations


import torch
import torch.nn as nn

from .ar import ARPrior
from .config import FarmerConfig
from .data import dequantize_uniform
from .flow import AutoregressiveFlow
from .gmm import HALF_LOG_2PI, DiagonalGMM
from .layers import patchify, unpatchify
from .likelihood import bits_per_dim, discrete_nll

DECODERS = ("sequential", "sequential_nocache", "distilled")


class Farmer(nn.Module):
    """FARMER. Submodules: `flow` (the AF), `ar` (the AR prior), `student` (distilled inverse or None)."""

    def __init__(self, cfg: FarmerConfig):
        super().__init__()
        if not isinstance(cfg, FarmerConfig):
            raise ValueError(f"Farmer: cfg must be a FarmerConfig (e.g. farmer.presets['fmnist']), "
                             f"got {type(cfg).__name__}")
        self.cfg = cfg.validate()
        self.flow = AutoregressiveFlow(cfg)
        self.ar = ARPrior(cfg)
        self.student: nn.Module | None = None          # set by farmer.distill / farmer.load

    # ------------------------------------------------------------------ input checks
    def _check_images(self, x: torch.Tensor, name: str, uint8: bool) -> None:
        c = self.cfg
        want = (c.channels, c.image_size, c.image_size)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != want or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (B, {want[0]}, {want[1]}, {want[2]}) with B >= 1, "
                             f"got {tuple(x.shape)}")
        if uint8 and x.dtype != torch.uint8:
            raise ValueError(f"{name} must be uint8 pixels in 0..255, got dtype {x.dtype} "
                             f"(use model.encode for float images in [-1, 1])")
        if not uint8:
            if not x.is_floating_point():
                raise ValueError(f"{name} must be a float tensor in [-1, 1], got dtype {x.dtype}")
            if not torch.isfinite(x).all():
                raise ValueError(f"{name} contains NaN or inf values")

    def labels_or_null(self, y: torch.Tensor | None, batch: int, device: torch.device,
                       name: str = "y") -> torch.Tensor:
        """Validate labels (B,) in [0, num_classes) and map None to the null class."""
        nc = self.cfg.num_classes
        if y is None:
            return torch.full((batch,), nc, dtype=torch.long, device=device)
        if nc == 0:
            raise ValueError(f"{name} must be None: this model is unconditional (num_classes = 0)")
        if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"{name} must be an integer tensor of shape ({batch},), got "
                             f"{type(y).__name__ if not isinstance(y, torch.Tensor) else y.dtype}")
        if tuple(y.shape) != (batch,):
            raise ValueError(f"{name} must have shape ({batch},) to match the images, got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= nc):
            raise ValueError(f"{name} holds labels outside 0..{nc - 1}: min {int(y.min())}, max {int(y.max())}")
        return y.to(device=device, dtype=torch.long)

    # ------------------------------------------------------------------ token orders
    def ar_order(self, z: torch.Tensor) -> torch.Tensor:
        """The "final permute" between AF and AR (its own inverse): (B, N, ·) -> (B, N, ·)."""
        return z.flip(1) if self.cfg.final_permute == "reverse" else z

    def split(self, z_ar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d) -> Z^I (B, N, d_I), Z^R (B, N, d_R): a fixed channel slice (§1.2)."""
        return z_ar[..., :self.cfg.d_i], z_ar[..., self.cfg.d_i:]

    # ------------------------------------------------------------------ likelihood terms
    def prior_terms(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token prior NLLs of latents z (B, N, d) in raster order, y (B,) with null allowed.

        Returns (−log G_i(z_i^I), −log G_{N+1}(z_i^R)), each (B, N) in nats, in raster token order.
        """
        z_inf, z_red = self.split(self.ar_order(z))                            # (B,N,d_I), (B,N,d_R)
        g_inf, g_red = self.ar(z_inf, y)
        nll_inf = -g_inf.log_prob(z_inf)                                       # (B, N)
        mode = self.cfg.redundant_mode
        if mode == "split":
            # one mixture per image, shared by all N tokens (position-independent)
            shared = DiagonalGMM(g_red.logits[:, None], g_red.means[:, None], g_red.log_scales[:, None])
            nll_red = -shared.log_prob(z_red)                                  # (B, N)
        elif mode == "jetformer":
            nll_red = (0.5 * z_red.square() + HALF_LOG_2PI).sum(-1)           # −log N(z^R; 0, I)
        else:
            nll_red = torch.zeros_like(nll_inf)
        return self.ar_order(nll_inf), self.ar_order(nll_red)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                detail: bool = False) -> dict[str, torch.Tensor]:
        """Continuous log-density terms for float images x (B, C, H, W).

        Returns (B,) tensors in nats: "prior_informative" = −log p(Z^I|c),
        "prior_redundant" = −log p(Z^R|Z^I,c), "logdet" = log|det dZ/dX|.
        detail=True adds per-token priors "token_informative"/"token_redundant"
        (B, N) and the per-block per-dimension log-det "logdet_terms" (B, n, N, d).
        In training mode labels are replaced by the null class with
        probability `label_dropout` (classifier-free guidance).
        """
        self._check_images(x, "x", uint8=False)
        B = x.shape[0]
        y = self.labels_or_null(y, B, x.device)
        if self.training and self.cfg.label_dropout > 0 and self.cfg.num_classes > 0:
            drop = torch.rand(B, device=x.device) < self.cfg.label_dropout
            y = torch.where(drop, torch.full_like(y, self.ar.null_class), y)
        tokens = patchify(x, self.cfg.patch_size)                              # (B, N, d)
        z, ld = self.flow(tokens, return_terms=detail)                         # (B, N, d), (B,) | (B,n,N,d)
        tok_inf, tok_red = self.prior_terms(z, y)                              # (B, N) each
        out = {
            "prior_informative": tok_inf.sum(1),
            "prior_redundant": tok_red.sum(1),
            "logdet": ld.flatten(1).sum(1) if detail else ld,
        }
        if detail:
            out.update(token_informative=tok_inf, token_redundant=tok_red, logdet_terms=ld, z=z)
        return out

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 14: L = −[log p(Z^I|c) + log p(Z^R|Z^I,c) + log|det|] / (N·d), averaged over the batch."""
        t = self(x, y)
        D = self.cfg.data_dim
        loss = (t["prior_informative"] + t["prior_redundant"] - t["logdet"]).mean() / D
        return loss, t

    @torch.no_grad()
    def nll(self, x: torch.Tensor, y: torch.Tensor | None = None, seed: int | None = 0,
            detail: bool = False) -> dict[str, torch.Tensor]:
        """Discrete-data NLL bound of uint8 images (DESIGN §5).

        x: uint8 (B, C, H, W); y: int64 (B,) or None (unconditional / null class).
        Returns (B,) tensors in nats per image: prior_informative, prior_redundant,
        logdet, nll = prior_informative + prior_redundant − logdet + D·ln 128,
        and bpd = nll / (D·ln 2). seed fixes the uniform dequantisation noise
        (None = fresh noise); the estimate is single-sample.
        """
        self._check_images(x, "x", uint8=True)
        x_float = dequantize_uniform(x, seed)
        t = self(x_float, y, detail=detail)
        D = self.cfg.data_dim
        log_px = -(t["prior_informative"] + t["prior_redundant"]) + t["logdet"]
        t["nll"] = discrete_nll(log_px, D)
        t["bpd"] = bits_per_dim(t["nll"], D)
        return t

    # ------------------------------------------------------------------ encode / decode
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images (B, C, H, W) in [−1, 1] -> latents z (B, N, d) and log|det dz/dx| (B,)."""
        self._check_images(x, "x_float", uint8=False)
        return self.flow(patchify(x, self.cfg.patch_size))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, decoder: str = "sequential") -> torch.Tensor:
        """Latents z (B, N, d) -> float images (B, C, H, W) by inverting the AF.

        decoder: "sequential" (KV cache), "sequential_nocache" (reference, O(N²)
        per block) or "distilled" (the one-step student, if the model has one).
        """
        c = self.cfg
        if not isinstance(z, torch.Tensor) or z.dim() != 3 or tuple(z.shape[1:]) != (c.tokens, c.token_dim):
            raise ValueError(f"z must have shape (B, {c.tokens}, {c.token_dim}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "distilled":
            if self.student is None:
                raise ValueError("decoder='distilled' needs a distilled student: run `farmer distill` "
                                 "or load a checkpoint that contains one")
            tokens = self.student(z)
        else:
            tokens = self.flow.reverse(z, use_cache=(decoder == "sequential"))
        return unpatchify(tokens, c.patch_size, c.channels, c.image_size)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts of the AF, the AR and the whole model."""
        n = lambda m: sum(p.numel() for p in m.parameters())                   # noqa: E731
        return {"flow": n(self.flow), "ar": n(self.ar), "total": n(self.flow) + n(self.ar)}
