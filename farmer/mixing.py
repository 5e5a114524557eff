"""Per-token channel mixing: an exact invertible linear map of each token (DESIGN §1.8).

Why. Every AF block is elementwise per token dimension, so with the paper's
plain channel slice Z^I is a fixed set of pixel positions of each patch (for
`fmnist`: row 0 and two pixels of row 1) and the flow cannot choose which
content goes to Z^I. A per-token linear map M (d × d) in front of the slice
lets Z^I be the low-frequency content of the patch instead:

    "dct"   the orthonormal 2-D DCT-II of each p×p patch (per channel),
            coefficients in zig-zag order (lowest frequencies first), so the
            first d_I channels are the patch's d_I lowest frequencies.
            log|det M| = 0.
    "haar"  the orthonormal multi-level 2-D Haar transform of the patch
            (p a power of 2), coarsest scale first.  log|det M| = 0.
    "lu"    a learned map, Glow's LU parameterisation M = P·L·(U + diag(s)),
            with P a fixed permutation, L unit lower-triangular, U strictly
            upper-triangular and s = sign·exp(log_s), initialised at the DCT
            (so it starts where "dct" is and is free to move).
            log|det M| = Σ_j log|s_j| per token.

Where (`mixing_position`):
    "input"  on the patch tokens, before the AF:   X = M·patch,   Z = AF(X)
    "split"  on the AF's output, before the split: Z = M·AF(patch)

Every map here acts on the last axis of (B, N, d): t ↦ t·Mᵀ. Rows of M are
basis vectors in pixel coordinates of one token (channel, row, column), the
layout of `layers.patchify`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import MIXING_POSITIONS, MIXINGS  # noqa: F401  (re-exported)


# ----------------------------------------------------------------------------- fixed bases
def dct_matrix(p: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix (p, p): row u is the frequency-u cosine over p samples."""
    n = torch.arange(p, dtype=torch.float64)
    u = n[:, None]
    m = torch.cos(math.pi * (2 * n[None, :] + 1) * u / (2 * p))               # (p, p)
    scale = torch.full((p, 1), math.sqrt(2.0 / p), dtype=torch.float64)
    scale[0] = math.sqrt(1.0 / p)                                              # the DC row
    return m * scale


def haar_matrix(p: int) -> torch.Tensor:
    """Orthonormal 1-D multi-level Haar matrix (p, p), p a power of 2; coarsest rows first.

    Row 0 is the constant 1/√p; then, level by level from coarse to fine, the
    differences of adjacent halves at each position.
    """
    if p < 1 or p & (p - 1):
        raise ValueError(f"haar mixing needs a patch size that is a power of 2, got {p}")
    rows = [torch.full((p,), 1.0 / math.sqrt(p), dtype=torch.float64)]
    width = p
    while width > 1:                                                           # support of the wavelet
        for start in range(0, p, width):
            r = torch.zeros(p, dtype=torch.float64)
            r[start:start + width // 2] = 1.0
            r[start + width // 2:start + width] = -1.0
            rows.append(r / math.sqrt(width))
        width //= 2
    return torch.stack(rows)                                                   # (p, p)


def _haar_level(i: int) -> int:
    """Scale of row i of `haar_matrix`: 0 for the two coarsest rows, then 1, 2, … (bit length)."""
    return max(0, i.bit_length() - 1)


def _basis_order(kind: str, channels: int, p: int) -> list[tuple[int, int, int]]:
    """(channel, u, v) of each row of `patch_basis`, in its order."""
    keys = []
    for u in range(p):
        for v in range(p):
            if kind == "dct":
                s = u + v
                key = (s, v if s % 2 == 0 else u)                              # zig-zag
            else:
                key = (max(_haar_level(u), _haar_level(v)), u + v, u)
            for c in range(channels):
                keys.append(((*key, c), (c, u, v)))
    return [cuv for _, cuv in sorted(keys)]


def channel_labels(cfg) -> list[str]:
    """What latent channel j of a token is, for the d channels of a `FarmerConfig`: a pixel
    position without mixing, a (vertical, horizontal) frequency with "dct"/"haar"."""
    p, C = cfg.patch_size, cfg.channels
    pre = (lambda c: f"ch {c}, ") if C > 1 else (lambda c: "")                 # noqa: E731
    if cfg.channel_mixing in ("dct", "haar"):
        name = "DCT" if cfg.channel_mixing == "dct" else "Haar"
        where = " of the AF's input" if cfg.mixing_position == "input" else " of the AF's output"
        return [f"{pre(c)}{name} frequency (u={u}, v={v}){where}" for c, u, v in _basis_order(cfg.channel_mixing, C, p)]
    if cfg.channel_mixing == "lu":
        return [f"learned mixture {j} (LU map, started at DCT order)" for j in range(C * p * p)]
    return [f"{pre(j // (p * p))}row {(j % (p * p)) // p}, col {j % p}" for j in range(C * p * p)]


def map_note(cfg) -> str:
    """One sentence for every per-pixel map of a model with `cfg`: how its log-det terms got to pixels."""
    if cfg.channel_mixing == "none":
        return "Each flow dimension is one pixel, so every log-det term sits on its own pixel."
    name = {"dct": "DCT", "haar": "Haar", "lu": "learned LU"}[cfg.channel_mixing]
    if cfg.mixing_position == "input":
        extra = (" The LU map's own log|det| is spread evenly over every pixel." if cfg.channel_mixing == "lu"
                 else "")
        return (f"The flow runs on the {name} coefficients of each patch, so each coefficient's log-det term "
                f"is spread over its patch's pixels by its squared basis weights (they sum to one), and the map "
                f"still sums exactly to the total.{extra}")
    extra = " Its log|det| is spread evenly over every pixel." if cfg.channel_mixing == "lu" else ""
    return (f"The {name} mixing sits after the flow, so the flow's log-det terms keep their pixels.{extra}")


def patch_basis(kind: str, channels: int, p: int) -> torch.Tensor:
    """The orthonormal per-token basis M (d, d), d = C·p², rows ordered low frequency first.

    Each row is the separable 2-D basis image a[u] ⊗ a[v] of one channel
    (a = the 1-D DCT or Haar matrix). Rows are sorted by frequency: for the
    DCT by the zig-zag order (u + v, then alternating direction along each
    anti-diagonal), for Haar by the finer of the two scales, then u + v; the
    channel is the last key, so every channel's DC comes before any AC term.
    """
    a = dct_matrix(p) if kind == "dct" else haar_matrix(p)                     # (p, p)
    rows = []
    for c, u, v in _basis_order(kind, channels, p):
        full = torch.zeros(channels, p, p, dtype=torch.float64)
        full[c] = torch.outer(a[u], a[v])                                      # the (u, v) basis image
        rows.append(full.reshape(-1))                                          # (d,) patchify layout
    return torch.stack(rows)                                                   # (d, d)


# ----------------------------------------------------------------------------- the maps
def building_on_meta() -> bool:
    """True inside `with torch.device("meta")` (farmer.preflight's shape-only build): nothing to compute."""
    return torch.empty(0).is_meta


class ChannelMixing(nn.Module):
    """One contract for every map: forward(t) -> (M·t, log|det M| per token), reverse(u) -> M⁻¹·u.

    `pixel_weights()` (d, d) says how a term attached to output channel j is
    spread over the token's input dimensions k: row j is M[j, k]² / Σ_k M[j, k]²,
    so every row sums to one and spreading keeps a total exactly. For an
    orthonormal M that is just M[j, k]².
    """

    def matrix(self) -> torch.Tensor:  # pragma: no cover - each subclass defines it
        raise NotImplementedError

    def logdet_per_token(self) -> torch.Tensor:
        """log|det M|, a scalar tensor (nats per token)."""
        return self.matrix().new_zeros(())

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B, N, d) -> (M·t (B, N, d), log|det| (B,) summed over the N tokens)."""
        B, N, _ = t.shape
        m = self.matrix().to(t.dtype)
        return t @ m.T, self.logdet_per_token().to(t.dtype).expand(B) * N

    def reverse(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, N, d) -> M⁻¹·u (B, N, d)."""
        return u @ self.inverse_matrix().to(u.dtype).T

    def inverse_matrix(self) -> torch.Tensor:
        m = self.matrix()
        return torch.linalg.inv(m.double()).to(m.dtype)

    def pixel_weights(self) -> torch.Tensor:
        """(d, d) float64 spreading weights (rows sum to one); callers cast to their dtype, so a float64
        map keeps its total to float64 precision (float32 weights missed it by ~1e-6 bits with LU)."""
        m2 = self.matrix().detach().double().square()                         # (d, d)
        return m2 / m2.sum(1, keepdim=True)


class FixedMixing(ChannelMixing):
    """A fixed orthonormal basis ("dct", "haar"): log|det| = 0, M⁻¹ = Mᵀ.

    The basis is a non-persistent buffer: it is rebuilt from the config, so it
    is not stored in checkpoints (and cannot be tampered with there)."""

    def __init__(self, kind: str, channels: int, p: int):
        super().__init__()
        self.kind = kind
        d = channels * p * p
        basis = torch.empty(d, d) if building_on_meta() else patch_basis(kind, channels, p).float()
        self.register_buffer("basis", basis, persistent=False)

    def matrix(self) -> torch.Tensor:
        return self.basis

    def inverse_matrix(self) -> torch.Tensor:
        return self.basis.T                                                    # orthonormal

    def pixel_weights(self) -> torch.Tensor:
        m2 = self.basis.detach().double().square()                             # (d, d), float64 like the base
        return m2 / m2.sum(1, keepdim=True)                                    # rows sum to 1 exactly


class LUMixing(ChannelMixing):
    """Glow's invertible 1×1 map in LU form, M = P·L·(U + diag(sign·exp(log_s))).

    Initialised at the orthonormal DCT of the patch (P, L, U, s from its LU
    factorisation), so log|det M| = Σ log|s| starts at 0.
    """

    def __init__(self, channels: int, p: int):
        super().__init__()
        d = channels * p * p
        if building_on_meta():              # a shape-only build (farmer.preflight): the same tensors, no values
            perm, lower, upper = (torch.empty(d, d) for _ in range(3))
            sign, log_s, eye = torch.empty(d), torch.empty(d), torch.empty(d, d)
        else:
            P, L, U = torch.linalg.lu(patch_basis("dct", channels, p))         # (d, d) float64 each
            s = torch.diagonal(U)
            perm, sign, log_s = P.float(), torch.sign(s).float(), s.abs().log().float()
            lower, upper = torch.tril(L, -1).float(), torch.triu(U, 1).float()  # strictly lower / upper
            eye = torch.eye(d)
        self.register_buffer("perm", perm)
        self.register_buffer("sign", sign)
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(upper)
        self.log_s = nn.Parameter(log_s)
        self.register_buffer("eye", eye, persistent=False)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        low = torch.tril(self.lower, -1) + self.eye                            # unit lower
        up = torch.triu(self.upper, 1) + torch.diag(self.sign * self.log_s.exp())
        return low, up

    def matrix(self) -> torch.Tensor:
        low, up = self._factors()
        return self.perm @ low @ up                                            # (d, d)

    def logdet_per_token(self) -> torch.Tensor:
        return self.log_s.sum()

    def inverse_matrix(self) -> torch.Tensor:
        # M⁻¹ = U⁻¹ L⁻¹ Pᵀ by two triangular solves (exact up to float rounding)
        low, up = self._factors()
        eye = self.eye.to(low.dtype)
        l_inv = torch.linalg.solve_triangular(low, eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(up, eye, upper=True)
        return u_inv @ l_inv @ self.perm.T


def make_mixing(kind: str, channels: int, p: int) -> ChannelMixing | None:
    """The map named by `FarmerConfig.channel_mixing` (None for "none")."""
    if kind == "none":
        return None
    if kind in ("dct", "haar"):
        return FixedMixing(kind, channels, p)
    if kind == "lu":
        return LUMixing(channels, p)
    raise ValueError(f"channel_mixing must be one of {MIXINGS}, got {kind!r}")
