"""The AR transformer over the informative latents, DESIGN §1.2–1.3 (Eq. 11–12).

Input sequence (length M + N + 1, teacher forcing):

    [ e(c) × M  |  z_1^I … z_N^I  |  q ]
      condition     informative       one query position
      repeat        tokens

with a learned position embedding on every slot (so the M copies of the
class embedding differ). The causal trunk's output at slot M−1+i predicts
the mixture G_{i+1} of token i+1 (slot M−1 predicts the first token from
the class alone); the output at the query slot, which has seen all of Z^I
and c, predicts the single shared mixture G_{N+1} of the redundant channels:

    p(Z^I | c)      = Π_i G_i(z_i^I | z_{<i}^I, c)      K_I components, d_I dims
    p(Z^R | Z^I, c) = Π_i G_{N+1}(z_i^R)                K_R components, d_R dims

The class index `num_classes` is the learned null class used for
classifier-free guidance (label dropout at training time).

For sampling the same trunk runs one slot at a time with a KV cache:
`begin` (condition prefix) -> G_1, `step(z_i)` -> G_{i+1}, `redundant()` -> G_{N+1}.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import FarmerConfig
from .gmm import DiagonalGMM
from .layers import KVCache, Transformer, sinusoidal_init_


def _gmm_head(width: int, K: int, D: int) -> nn.Linear:
    """A linear layer emitting one mixture; mean biases are spread at random
    so the K components start distinct (identical components would receive
    identical gradients forever)."""
    head = nn.Linear(width, DiagonalGMM.param_count(K, D))
    nn.init.normal_(head.weight, std=0.02)
    with torch.no_grad():
        head.bias.zero_()
        # the flat layout is [logits K | (K, 2, D): means, log-scales] (DiagonalGMM.from_flat)
        head.bias[K:].view(K, 2, D)[:, 0].normal_(std=1.0)                   # means; log-scales stay 0
    return head


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Mixture parameters are evaluated in float32 (or float64), never in bf16."""
    return t if t.dtype == torch.float64 else t.float()


class ARPrior(nn.Module):
    """AR transformer with a per-token GMM head for Z^I and the shared G_{N+1} head for Z^R."""

    def __init__(self, cfg: FarmerConfig):
        super().__init__()
        self.cfg = cfg
        W, M, N = cfg.ar_width, cfg.condition_repeat, cfg.tokens
        self.d_i, self.d_r = cfg.d_i, cfg.d_r
        self.null_class = cfg.num_classes                                     # index of the null class
        self.class_emb = nn.Embedding(cfg.num_classes + 1, W)
        nn.init.normal_(self.class_emb.weight, std=0.02)
        self.token_in = nn.Linear(self.d_i, W)
        self.query = nn.Parameter(torch.zeros(W))
        self.pos = nn.Parameter(sinusoidal_init_(torch.empty(M + N + 1, W)))  # (M+N+1, W)
        self.trunk = Transformer(W, cfg.ar_layers, cfg.ar_heads, cfg.mlp_ratio, cfg.dropout, causal=True)
        hw = cfg.head_width or W
        self.head_proj = nn.Identity() if hw == W else nn.Linear(W, hw)
        self.head_informative = _gmm_head(hw, cfg.k_informative, self.d_i)
        self.head_redundant = (_gmm_head(hw, cfg.k_redundant, self.d_r)
                               if cfg.redundant_mode == "split" else None)

    # ------------------------------------------------------------------ heads
    def _informative(self, h: torch.Tensor) -> DiagonalGMM:
        """Trunk outputs (..., W) -> mixtures over d_I dims."""
        raw = _at_least_fp32(self.head_informative(self.head_proj(h)))
        return DiagonalGMM.from_flat(raw, self.cfg.k_informative, self.d_i)

    def _redundant(self, h: torch.Tensor) -> DiagonalGMM | None:
        if self.head_redundant is None:
            return None
        raw = _at_least_fp32(self.head_redundant(self.head_proj(h)))
        return DiagonalGMM.from_flat(raw, self.cfg.k_redundant, self.d_r)

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, z_inf: torch.Tensor, y: torch.Tensor) -> tuple[DiagonalGMM, DiagonalGMM | None]:
        """Teacher-forced pass.

        z_inf: (B, N, d_I) informative latents in AR order; y: (B,) class
        indices in [0, num_classes] (num_classes = null).
        Returns G_1..G_N as one mixture batch over (B, N), and G_{N+1} over (B,)
        (None when there is no redundant GMM).
        """
        B, N, _ = z_inf.shape
        M = self.cfg.condition_repeat
        cond = self.class_emb(y)[:, None].expand(B, M, -1)                    # (B, M, W)
        toks = self.token_in(z_inf)                                            # (B, N, W)
        query = self.query.expand(B, 1, -1)                                    # (B, 1, W)
        h = torch.cat([cond, toks, query], dim=1) + self.pos                   # (B, M+N+1, W)
        h = self.trunk(h)                                                      # (B, M+N+1, W)
        g_inf = self._informative(h[:, M - 1:M - 1 + N])                       # over (B, N)
        g_red = self._redundant(h[:, M + N])                                   # over (B,)
        return g_inf, g_red

    # ------------------------------------------------------------------ cached stepping
    def begin(self, y: torch.Tensor, cache: KVCache) -> DiagonalGMM:
        """Feed the M condition slots; returns G_1 over (B,)."""
        M = self.cfg.condition_repeat
        h = self.class_emb(y)[:, None].expand(-1, M, -1) + self.pos[:M]       # (B, M, W)
        h = self.trunk(h, cache=cache)
        return self._informative(h[:, -1])

    def step(self, z_i: torch.Tensor, i: int, cache: KVCache) -> DiagonalGMM | None:
        """Feed token i (0-based, (B, d_I)); returns G_{i+2} in 1-based terms, i.e. the
        mixture of token i+1, or None after the last token."""
        M, N = self.cfg.condition_repeat, self.cfg.tokens
        h = self.token_in(z_i)[:, None] + self.pos[M + i]                      # (B, 1, W)
        h = self.trunk(h, cache=cache)
        return self._informative(h[:, -1]) if i < N - 1 else None

    def redundant(self, cache: KVCache) -> DiagonalGMM | None:
        """Feed the query slot after all N tokens; returns G_{N+1} over (B,)."""
        M, N = self.cfg.condition_repeat, self.cfg.tokens
        if cache.length != M + N:
            raise ValueError(f"ARPrior.redundant: the cache holds {cache.length} slots, "
                             f"expected M + N = {M + N} (all tokens fed)")
        B = cache.layers[0]["k"].shape[0]
        h = (self.query + self.pos[M + N]).expand(B, 1, -1)                    # (B, 1, W)
        h = self.trunk(h, cache=cache)
        return self._redundant(h[:, -1])

    def new_cache(self) -> KVCache:
        return self.trunk.new_cache()
