"""The autoregressive flow (AF): TARFlow-style invertible blocks, DESIGN §1.1 (Eq. 8–10).

Block t maps its input sequence Z^{t-1} (B, N, d) to Z^t:

    z_1^t = z_1^{t-1}                                        (first token passes unchanged)
    z_i^t = (z_i^{t-1} − μ_t(z_{<i}^{t-1})) ⊙ σ_t(z_{<i}^{t-1}),   σ_t = exp(−a_t),   i > 1

μ_t and a_t come from a causal transformer over the block's input whose
output is shifted one position to the right, so token i only sees tokens
< i. The Jacobian dZ^t/dZ^{t-1} is therefore block lower-triangular with
diagonal exp(−a), and

    log|det dZ^t/dZ^{t-1}| = −Σ_i Σ_j a_ij.

We keep the −a_ij terms separately (B, N, d): each belongs to one dimension
of the flow's input token, which is what the per-pixel likelihood maps of
§1.6 are built from. Without input mixing that dimension is a pixel. With
channel mixing in front of the flow (mixing_position "input"; the shipped
model mixes at the split instead, so its terms stay on pixels) it is a coefficient of the patch in the basis M (e.g. DCT), and
Farmer.spread_to_pixels spreads each term over the patch's pixels by M[j,k]².

Between blocks the token order alternates (identity, reversed, identity, …).
A block permutes its input, transforms, and un-permutes its output, so at
the block boundaries tokens are always in raster order: token i of every
Z^t is the same patch, and no token bookkeeping is needed (within a token,
see above: a dimension is a pixel only without input mixing). The
positional embedding is indexed by patch, so it moves with the tokens.

The forward direction (x -> z) is one parallel pass per block. The inverse
is sequential: z_i^{t-1} = z_i^t ⊘ σ_t + μ_t needs z_{<i}^{t-1}, so N steps
per block, each a single-token transformer step using the KV cache.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import FarmerConfig
from .layers import KVCache, Transformer, sinusoidal_init_


class AFBlock(nn.Module):
    """One invertible autoregressive block. Contract: forward(x) -> (z, logdet_terms), reverse(z) -> x."""

    def __init__(self, d: int, tokens: int, width: int, layers: int, heads: int,
                 reverse_order: bool, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 causal: bool = True):
        super().__init__()
        self.d, self.tokens, self.reverse_order = d, tokens, reverse_order
        self.proj_in = nn.Linear(d, width)
        self.pos = nn.Parameter(sinusoidal_init_(torch.empty(tokens, width)))   # (N, W), by patch
        self.trunk = Transformer(width, layers, heads, mlp_ratio, dropout, causal=causal)
        self.proj_out = nn.Linear(width, 2 * d)
        # important! zero-initialised output: μ = 0, a = 0, so a fresh block is the identity
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    # -- token order -----------------------------------------------------------
    def order(self, x: torch.Tensor) -> torch.Tensor:
        """Put a (B, N, ·) sequence into this block's order (its own inverse)."""
        return x.flip(1) if self.reverse_order else x

    def ordered_pos(self) -> torch.Tensor:
        return self.order(self.pos[None])[0]                                  # (N, W)

    # -- the conditioner -------------------------------------------------------
    def shift_params(self, x: torch.Tensor, pos: torch.Tensor,
                     cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformer outputs (μ, a) for the *next* token at each input position.

        x: (B, T, d) tokens in block order, pos: (T, W) their embeddings.
        Returns μ, a of shape (B, T, d) in the parameters' dtype (float32 or
        float64): the affine arithmetic never runs in reduced precision, even
        when the trunk is autocast to bf16.
        """
        h = self.proj_in(x) + pos                                              # (B, T, W)
        h = self.trunk(h, cache=cache)                                         # (B, T, W)
        out = self.proj_out(h.to(self.proj_out.weight.dtype))                  # (B, T, 2d)
        mu, a = out.chunk(2, dim=-1)                                           # 2 × (B, T, d)
        return mu, a

    # -- x -> z ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, d) -> z (B, N, d), logdet_terms (B, N, d) with Σ = log|det dz/dx|."""
        xo = self.order(x)                                                     # (B, N, d) block order
        mu, a = self.shift_params(xo, self.ordered_pos())                      # (B, N, d) each
        # shift right by one: the output at position i-1 parameterises token i;
        # token 0 gets μ = 0, a = 0 and passes unchanged
        mu = torch.cat([torch.zeros_like(mu[:, :1]), mu[:, :-1]], dim=1)
        a = torch.cat([torch.zeros_like(a[:, :1]), a[:, :-1]], dim=1)
        zo = (xo.to(mu.dtype) - mu) * torch.exp(-a)                                 # Eq. 8, σ = exp(−a)
        return self.order(zo), self.order(-a)

    # -- z -> x ---------------------------------------------------------------
    def reverse_step(self, x_prev: torch.Tensor, z_next: torch.Tensor, position: int,
                     cache: KVCache) -> torch.Tensor:
        """One cached inverse step in block order.

        x_prev: (B, 1, d) the already recovered input token at `position`,
        z_next: (B, 1, d) the output token at `position + 1`.
        Returns x_next (B, 1, d) = z_next ⊘ σ + μ with (μ, σ) computed from x_{≤position}.
        """
        pos = self.ordered_pos()[position:position + 1]                       # (1, W)
        mu, a = self.shift_params(x_prev, pos, cache=cache)                    # (B, 1, d)
        return z_next.to(mu.dtype) * torch.exp(a) + mu

    @torch.no_grad()
    def reverse(self, z: torch.Tensor, use_cache: bool = True) -> torch.Tensor:
        """z (B, N, d) -> x (B, N, d), sequentially over tokens.

        use_cache=False re-runs the transformer over the whole prefix at each
        step: the O(N²) reference the cached version is tested against.
        """
        zo = self.order(z).to(self.proj_out.weight.dtype)                      # (B, N, d) block order
        B, N, d = zo.shape
        xs = [zo[:, :1]]                                                       # token 0 passes unchanged
        if use_cache:
            cache = self.trunk.new_cache()
            for i in range(1, N):
                xs.append(self.reverse_step(xs[-1], zo[:, i:i + 1], i - 1, cache))
        else:
            pos = self.ordered_pos()
            for i in range(1, N):
                prefix = torch.cat(xs, dim=1)                                  # (B, i, d)
                mu, a = self.shift_params(prefix, pos[:i])
                xs.append(zo[:, i:i + 1] * torch.exp(a[:, -1:]) + mu[:, -1:])
        return self.order(torch.cat(xs, dim=1))                                # (B, N, d)


class AutoregressiveFlow(nn.Module):
    """The stack F = f_n ∘ … ∘ f_1 of AF blocks, alternating token order."""

    def __init__(self, cfg: FarmerConfig, causal: bool = True):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            AFBlock(cfg.token_dim, cfg.tokens, cfg.flow_width, cfg.flow_layers, cfg.flow_heads,
                    reverse_order=(t % 2 == 1), mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
                    causal=causal)
            for t in range(cfg.flow_blocks)
        )

    def forward(self, x: torch.Tensor, return_terms: bool = False, return_path: bool = False):
        """x (B, N, d) tokens -> (z (B, N, d), logdet).

        logdet is (B,) = log|det dz/dx| by default; with return_terms=True it is
        the per-block, per-dimension terms (B, n_blocks, N, d) whose sum is the
        same number. return_path=True also returns [Z_0 = x, Z_1, …, Z_n] (for
        distillation and the notebooks).
        """
        path = [x]
        terms = []
        z = x
        for block in self.blocks:
            z, ld = block(z)                                                   # (B, N, d), (B, N, d)
            terms.append(ld)
            path.append(z)
        ld_terms = torch.stack(terms, dim=1)                                   # (B, n, N, d)
        logdet = ld_terms if return_terms else ld_terms.flatten(1).sum(1)
        if return_path:
            return z, logdet, path
        return z, logdet

    @torch.no_grad()
    def reverse(self, z: torch.Tensor, use_cache: bool = True,
                return_intermediates: bool = False):
        """z (B, N, d) -> x (B, N, d), inverting the blocks last to first.

        With return_intermediates=True also returns the list of sequences after
        each inverted block, [Z_{n-1}, …, Z_0 = x].
        """
        steps = []
        for block in reversed(self.blocks):
            z = block.reverse(z, use_cache=use_cache)
            steps.append(z)
        return (z, steps) if return_intermediates else z
