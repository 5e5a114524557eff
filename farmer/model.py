"""Farmer: the autoregressive flow, the channel split and the AR prior as one model.

    x --dequantise--> X (B, N, d) --AF--> Z (B, N, d) --final permute--> --split--> Z^I, Z^R

    log p(x) = log p(Z^I | c) + log p(Z^R | Z^I, c) + log|det dZ/dX|          (Eq. 13)

With `channel_mixing` (DESIGN §1.8, farmer/mixing.py) an exact per-token
linear map M sits either in front of the AF ("input": X = M·patch) or just
before the split ("split": Z = M·AF(patch)); its log|det M| joins the AF's.
`encode` returns the Z that the prior models, `decode` inverts all of it.

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
from .decoders import DECODERS, Jacobi, invert  # noqa: F401  (DECODERS re-exported)
from .flow import AutoregressiveFlow
from .gmm import HALF_LOG_2PI, DiagonalGMM
from .layers import patchify, unpatchify
from .mixing import make_mixing
from .units import bits_per_dim, discrete_nll

# `encode` accepts float images with |x| <= ENCODE_LIMIT. The data live in [−1, 1]; training adds
# Gaussian noise of σ <= 0.1 by default (a few σ = a few tenths past ±1), so 3.0 leaves room for
# σ up to 0.4 at 5σ. Values beyond are not images of this model's data: a caller passing 0..255
# pixels as floats, or a decoded image gone astray, would get a meaningless log-det.
ENCODE_LIMIT = 3.0


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
        self.mixing = make_mixing(cfg.channel_mixing, cfg.channels, cfg.patch_size)  # None = pixel slice
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
            if not x.is_meta and not torch.isfinite(x).all():          # meta: shape-only FLOP counts
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
        if y.numel() and not y.is_meta and (int(y.min()) < 0 or int(y.max()) >= nc):
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
        tokens, ld_in = self.image_to_tokens(x)                                # (B, N, d), (B,)
        z, ld = self.flow(tokens, return_terms=detail)                         # (B, N, d), (B,) | (B,n,N,d)
        z, ld_out = self.mix_latent(z)                                         # (B, N, d), (B,)
        tok_inf, tok_red = self.prior_terms(z, y)                              # (B, N) each
        ld_mix = ld_in + ld_out                                                # (B,) log|det M|·N or 0
        out = {
            "prior_informative": tok_inf.sum(1),
            "prior_redundant": tok_red.sum(1),
            "logdet": (ld.flatten(1).sum(1) if detail else ld) + ld_mix,
        }
        if detail:
            out.update(token_informative=tok_inf, token_redundant=tok_red, logdet_terms=ld, z=z,
                       logdet_mixing=ld_mix, logdet_pixel=self.logdet_per_pixel(ld, ld_mix))
        return out

    # ------------------------------------------------------------------ channel mixing
    def image_to_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images (B, C, H, W) -> the AF's input tokens (B, N, d) and the log|det| (B,) of the
        input mixing (patchify, then M when mixing_position is "input"; else 0)."""
        tokens = patchify(x, self.cfg.patch_size)                              # (B, N, d)
        if self.mixing is not None and self.cfg.mixing_position == "input":
            return self.mixing(tokens)
        return tokens, tokens.new_zeros(tokens.shape[0])

    def tokens_to_image(self, tokens: torch.Tensor) -> torch.Tensor:
        """The AF's input tokens (B, N, d) -> float images (B, C, H, W): the inverse of `image_to_tokens`."""
        if self.mixing is not None and self.cfg.mixing_position == "input":
            tokens = self.mixing.reverse(tokens)
        c = self.cfg
        return unpatchify(tokens, c.patch_size, c.channels, c.image_size)

    def mix_latent(self, z_flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The AF's output (B, N, d) -> the latent Z that the prior models, and its log|det| (B,)
        (M when mixing_position is "split"; else the identity and 0)."""
        if self.mixing is not None and self.cfg.mixing_position == "split":
            return self.mixing(z_flow)
        return z_flow, z_flow.new_zeros(z_flow.shape[0])

    def unmix_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The prior's latent Z (B, N, d) -> the AF's output: the inverse of `mix_latent`."""
        if self.mixing is not None and self.cfg.mixing_position == "split":
            return self.mixing.reverse(z)
        return z

    def logdet_per_pixel(self, ld_terms: torch.Tensor, ld_mix: torch.Tensor) -> torch.Tensor:
        """Every log-det term of one image attached to a pixel: (B, n, N, d), (B,) -> (B, N, d).

        Without input mixing each AF dimension is a pixel. With it, AF dimension j
        is the coefficient j of the patch in the basis M, and its term is spread
        over the patch's pixels k by M[j,k]²/Σ_k M[j,k]² (rows summing to one).
        log|det M| itself is spread evenly over every pixel. The result sums to
        the image's whole log|det| exactly.
        """
        per_dim = self.spread_to_pixels(ld_terms.sum(1))                       # (B, N, d)
        c = self.cfg
        return per_dim + (ld_mix / (c.tokens * c.token_dim))[:, None, None]

    def spread_to_pixels(self, terms: torch.Tensor) -> torch.Tensor:
        """Per-dimension terms of the AF's input (..., N, d) -> the same terms on the patch's pixels.

        The identity without input mixing; with it, coefficient j's term goes to pixel k
        with weight M[j,k]²/Σ_k M[j,k]² (each row sums to one, so totals are kept exactly).
        """
        if self.mixing is not None and self.cfg.mixing_position == "input":
            return terms @ self.mixing.pixel_weights().to(terms.dtype)        # coefficients -> pixels
        return terms

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
        (None = fresh noise); the estimate is single-sample. Always scored in
        eval mode (no label dropout), whatever mode the module is in.
        """
        self._check_images(x, "x", uint8=True)
        x_float = dequantize_uniform(x, seed)
        # important! score in eval mode: in training mode `forward` would replace
        # labels by the null class with probability label_dropout (a fresh
        # Farmer(cfg) is in training mode). The caller's mode is restored after.
        was_training = self.training
        self.eval()
        try:
            t = self(x_float, y, detail=detail)
        finally:
            self.train(was_training)
        D = self.cfg.data_dim
        log_px = -(t["prior_informative"] + t["prior_redundant"]) + t["logdet"]
        t["nll"] = discrete_nll(log_px, D)
        t["bpd"] = bits_per_dim(t["nll"], D)
        return t

    # ------------------------------------------------------------------ encode / decode
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images (B, C, H, W) in [−1, 1] -> latents z (B, N, d) and log|det dz/dx| (B,).

        Noised images a little outside [−1, 1] are fine; NaN, inf or any value with
        |x| > ENCODE_LIMIT (3.0) is a ValueError naming `x_float`."""
        self._check_images(x, "x_float", uint8=False)
        if not x.is_meta and x.numel() and float(x.abs().max()) > ENCODE_LIMIT:
            raise ValueError(f"x_float must be images in [-1, 1] (noised data may reach a little past; accepted "
                             f"|x| <= {ENCODE_LIMIT:g}), got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
                             f" (uint8 pixels go through farmer.data.dequantize_uniform first)")
        tokens, ld_in = self.image_to_tokens(x)                                # (B, N, d), (B,)
        z, ld = self.flow(tokens)                                              # (B, N, d), (B,)
        z, ld_out = self.mix_latent(z)
        return z, ld + ld_in + ld_out

    @torch.no_grad()
    def decode(self, z: torch.Tensor, decoder: str = "sequential", *, jacobi_tol: float = 1e-4,
               jacobi_max_iter: int | None = None, jacobi_chunk: int | None = None,
               stats: dict | None = None) -> torch.Tensor:
        """Latents z (B, N, d) -> float images (B, C, H, W) by inverting the AF.

        decoder (farmer.decoders): "sequential" (KV cache), "sequential_nocache"
        (reference, O(N²) per block), "jacobi" (parallel fixed-point iteration;
        jacobi_chunk tokens per Gauss–Seidel chunk, None = plain Jacobi),
        "distilled" (the one-step student, if the model has one) or "hybrid"
        (Jacobi started from the student's output). `stats`, if given, gets the
        Jacobi iteration counts.
        """
        c = self.cfg
        if not isinstance(z, torch.Tensor) or z.dim() != 3 or tuple(z.shape[1:]) != (c.tokens, c.token_dim):
            raise ValueError(f"z must have shape (B, {c.tokens}, {c.token_dim}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
        if not z.is_floating_point():
            raise ValueError(f"z must be a float tensor of latents, got dtype {z.dtype}")
        if not z.is_meta and not torch.isfinite(z).all():
            raise ValueError(f"z contains NaN or inf values ({int((~torch.isfinite(z)).sum())} of {z.numel()}): "
                             f"a latent must be finite to be decoded")
        jacobi = Jacobi(jacobi_tol, jacobi_max_iter, jacobi_chunk)
        tokens, _ = invert(self, self.unmix_latent(z), decoder, jacobi, stats)
        return self.tokens_to_image(tokens)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts of the AF, the AR and the whole model."""
        n = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        out = {"flow": n(self.flow), "ar": n(self.ar), "mixing": n(self.mixing)}
        out["total"] = out["flow"] + out["ar"] + out["mixing"]
        return out
