"""Diagonal Gaussian mixtures: the output distribution of the AR model (DESIGN §1.2–1.3).

    G(z) = Σ_k π_k Π_j N(z_j; m_kj, s_kj²),    π = softmax(logits)

Temperatures follow JetFormer's convention as written in DESIGN §1.3:
T_π multiplies the mixture logits (T_π < 1 flattens the mixture weights,
T_π > 1 sharpens them) and T_σ multiplies every scale. T_π = T_σ = 1 is the
model's own density; `log_prob` at other temperatures is used by the
resampling guidance to evaluate "verification" densities.

Everything is computed in log space with logsumexp, so the density is
finite (no NaN) for any finite input; scales are kept in
[exp(LOG_SCALE_MIN), exp(LOG_SCALE_MAX)] for the same reason.
"""
from __future__ import annotations

import math

import torch

LOG_SCALE_MIN, LOG_SCALE_MAX = -20.0, 20.0
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)   # log √(2π), the Gaussian normaliser


class DiagonalGMM:
    """A batch of K-component diagonal Gaussian mixtures over D dimensions.

    logits (..., K), means (..., K, D), log_scales (..., K, D); the leading
    dimensions "..." index independent mixtures (e.g. batch × tokens).
    """

    def __init__(self, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor):
        if means.shape != log_scales.shape or means.shape[:-1] != logits.shape:
            raise ValueError(f"DiagonalGMM: logits {tuple(logits.shape)}, means {tuple(means.shape)} "
                             f"and log_scales {tuple(log_scales.shape)} must be (..., K), (..., K, D), (..., K, D)")
        self.logits = logits
        self.means = means
        self.log_scales = log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)

    @property
    def K(self) -> int:
        return self.logits.shape[-1]

    @property
    def D(self) -> int:
        return self.means.shape[-1]

    @staticmethod
    def param_count(K: int, D: int) -> int:
        """Values a network head must output for one mixture: K logits, K·D means, K·D log-scales."""
        return K * (1 + 2 * D)

    @classmethod
    def from_flat(cls, raw: torch.Tensor, K: int, D: int) -> "DiagonalGMM":
        """Split a head output (..., K·(1+2D)) into a mixture."""
        if raw.shape[-1] != cls.param_count(K, D):
            raise ValueError(f"DiagonalGMM.from_flat: last dim {raw.shape[-1]} != K(1+2D) = {cls.param_count(K, D)}")
        lead = raw.shape[:-1]
        logits = raw[..., :K]                                                  # (..., K)
        means, log_scales = raw[..., K:].reshape(*lead, K, 2, D).unbind(-2)    # 2 × (..., K, D)
        return cls(logits, means, log_scales)

    def with_temperature(self, t_pi: float = 1.0, t_sigma: float = 1.0) -> "DiagonalGMM":
        """The same mixture with logits × T_π and scales × T_σ."""
        if t_pi < 0 or t_sigma <= 0:
            raise ValueError(f"DiagonalGMM: temperatures need T_π >= 0 and T_σ > 0, got {t_pi}, {t_sigma}")
        if t_pi == 1.0 and t_sigma == 1.0:
            return self
        return DiagonalGMM(self.logits * t_pi, self.means, self.log_scales + math.log(t_sigma))

    def index(self, idx) -> "DiagonalGMM":
        """Select leading entries, e.g. gmm.index((slice(None), 3))."""
        return DiagonalGMM(self.logits[idx], self.means[idx], self.log_scales[idx])

    # ------------------------------------------------------------------ densities
    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; m_k, diag s_k²) for each component: x (..., D) -> (..., K)."""
        x = x.unsqueeze(-2)                                                    # (..., 1, D)
        zs = (x - self.means) * torch.exp(-self.log_scales)                   # (..., K, D)
        per_dim = -0.5 * zs.square() - self.log_scales - HALF_LOG_2PI        # (..., K, D)
        return per_dim.sum(-1)                                                 # (..., K)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log G(x): x (..., D) -> (...) in nats."""
        log_pi = torch.log_softmax(self.logits, dim=-1)                        # (..., K)
        return torch.logsumexp(log_pi + self.component_log_prob(x), dim=-1)   # (...)

    # ------------------------------------------------------------------ moments (for tests)
    def mean(self) -> torch.Tensor:
        """E[x]: (..., D)."""
        pi = torch.softmax(self.logits, -1).unsqueeze(-1)                      # (..., K, 1)
        return (pi * self.means).sum(-2)

    def variance(self) -> torch.Tensor:
        """Var[x] per dimension: (..., D), by the law of total variance."""
        pi = torch.softmax(self.logits, -1).unsqueeze(-1)                      # (..., K, 1)
        m = self.mean().unsqueeze(-2)                                          # (..., 1, D)
        second = (pi * (torch.exp(2 * self.log_scales) + self.means.square())).sum(-2)
        return second - m.squeeze(-2).square()

    # ------------------------------------------------------------------ sampling
    def sample_components(self, n: int | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw component indices from softmax(logits): (...) or (n, ...) int64."""
        lead = self.logits.shape[:-1]
        probs = torch.softmax(self.logits.float(), -1).reshape(-1, self.K)     # (M, K)
        draws = 1 if n is None else n
        k = torch.multinomial(probs, draws, replacement=True, generator=generator)  # (M, n)
        k = k.T.reshape(draws, *lead)                                          # (n, ...)
        return k[0] if n is None else k

    def sample_given(self, k: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x ~ N(m_k, s_k²) for given component indices k (n, ...) or (...)."""
        extra = k.dim() - (self.logits.dim() - 1)                              # 0 or 1 leading sample dims
        means, log_scales = self.means, self.log_scales
        if extra:
            means = means.expand(k.shape[0], *means.shape)
            log_scales = log_scales.expand(k.shape[0], *log_scales.shape)
        idx = k[..., None, None].expand(*k.shape, 1, self.D)                   # (..., 1, D)
        m = means.gather(-2, idx).squeeze(-2)                                  # (..., D)
        s = torch.exp(log_scales.gather(-2, idx).squeeze(-2))
        eps = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
        return m + s * eps

    def sample(self, n: int | None = None, generator: torch.Generator | None = None,
               t_pi: float = 1.0, t_sigma: float = 1.0) -> torch.Tensor:
        """Draw from the mixture at temperatures (T_π, T_σ): (..., D), or (n, ..., D) if n is given."""
        g = self.with_temperature(t_pi, t_sigma)
        return g.sample_given(g.sample_components(n, generator), generator)
