"""Classifier-free guidance for mixture outputs: resampling CFG and naive CFG (DESIGN §1.5).

Both rules target the same tilted density (Eq. 15),

    log p′(z) = log p_u(z) + (w+1)(log p_c(z) − log p_u(z))   i.e.   p′ ∝ p_c^{w+1} / p_u^w,

where p_c = G_c is the mixture predicted with the class and p_u = G_u the one
predicted with the null class. A mixture raised to a power is no longer a
mixture, so p′ cannot be sampled directly; the two rules approximate it
differently.

Resampling CFG (FARMER, Algorithm 1) is sampling-importance-resampling:
draw s_c candidates from G_c and s_u from G_u, weight each by target over
its own proposal, keep one with probability ∝ weight. Exact in the limit of
large pools when the proposal and verification temperatures are 1 and
T_s = 1 (tested against the Gaussian closed form).

Naive CFG (GIVT / JetFormer) first picks one component k from G_c, reuses the
same index in G_u, and then samples the per-dimension Gaussian product
N(μ_ck, σ_ck²)^{1+w} / N(μ_uk, σ_uk²)^w by rejection sampling.

Everything here is a pure function over `DiagonalGMM` batches: no model, no
state except the random generator and an optional stats dict to count
events (fallbacks, which pool the kept candidate came from).
"""
from __future__ import annotations

import math
import numbers

import torch

from .gmm import HALF_LOG_2PI, DiagonalGMM

GUIDANCE = ("none", "naive", "resample")
RESAMPLE_WEIGHTS = ("paper", "balance")   # Algorithm 1's weights, or the balance heuristic

# Temperatures at which the resampling weights are evaluated and sharpened, by name.
# EXACT_WEIGHTS make Eq. 15's weights true importance weights (target over proposal):
# the library's default, chosen by measurement (benchmarks/guidance.py on the shipped
# model: Table 6's fall 10 points below no guidance at w = 0.1 and stay below the exact
# weights' class consistency at every w). TABLE6_WEIGHTS are the paper's settings
# (App. Table 6), kept by name:  farmer.sample(..., guidance="resample", **TABLE6_WEIGHTS).
EXACT_WEIGHTS = {"t_pi_verify": 1.0, "t_sigma_verify": 1.0, "t_select": 1.0}
TABLE6_WEIGHTS = {"t_pi_verify": 0.1, "t_sigma_verify": 1.0, "t_select": 1.1}
# Candidates per informative token, by name. DEFAULT_POOL (ours, the library's default) draws
# all 10 from G_c: the finite pool then falls short of p′ toward the unguided p_c only, so
# guidance never moves a sample toward p_u. PAPER_POOL is Algorithm 1's s_c = s_u = 5: its G_u
# candidates pull a small pool toward the proposal mixture, which at small w outweighs the
# guidance (benchmarks/guidance_toy.py: 14% of the target's shift at w = 0.1 against 91%;
# benchmarks/guidance.py on the shipped model: 83.3% class consistency at w = 0.1 against
# 83.4% unguided and 86.1% with DEFAULT_POOL). At w >= 1 PAPER_POOL's gentler pull gives
# the lower FD at equal w (13.4 against 15.4 at w = 1); the model card's settings use it.
DEFAULT_POOL = {"candidates_cond": 10, "candidates_uncond": 0}
PAPER_POOL = {"candidates_cond": 5, "candidates_uncond": 5}
_CHUNK_ELEMENTS = 1 << 25          # ~128 MB of float32 per log_prob evaluation


def _count(stats: dict | None, key: str, value: float) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + value


# ----------------------------------------------------------------------------- resampling CFG
def resample_cfg(g_c: DiagonalGMM, g_u: DiagonalGMM, w: float, n: int | None = None, *,
                 candidates_cond: int = 10, candidates_uncond: int = 0,
                 t_pi: float = 1.0, t_sigma: float = 1.0,
                 t_pi_verify: float = 1.0, t_sigma_verify: float = 1.0, t_select: float = 1.0,
                 weights: str = "paper",
                 generator: torch.Generator | None = None, stats: dict | None = None) -> torch.Tensor:
    """Resampling classifier-free guidance, Algorithm 1 of the paper.

    g_c, g_u: mixtures over the same batch shape L = (...) and D dimensions
    (conditional and unconditional predictions). Returns one guided draw per
    mixture, (..., D), or with `n` given, n draws from ONE shared candidate
    pool per mixture, (n, ..., D) (the redundant group: G_{N+1} is shared by
    all N tokens, so one pool serves all N draws).

    Candidates: s_c = candidates_cond from G_c and s_u = candidates_uncond from
    G_u at the proposal temperatures (t_pi, t_sigma); the defaults are
    DEFAULT_POOL (10 + 0, ours), the paper's are PAPER_POOL (5 + 5). Log-weights, with the
    densities evaluated at the verification temperatures (t_pi_verify,
    t_sigma_verify) and r = log G_c − log G_u:

        from G_c:  w·r       = log(p′/p_c) + const   (target over proposal)
        from G_u:  (w+1)·r   = log(p′/p_u) + const   (target over proposal)

    The constant is the same log-normaliser of p′ for both, so the two kinds
    of weight are on one scale and may share one softmax: a pool mixing
    independent draws from two proposals, each weighted by target over its
    own proposal, selects a candidate with density
    ∝ s_c·p_c·(p′/p_c) + s_u·p_u·(p′/p_u) = (s_c + s_u)·p′ as the pools grow.
    G_u candidates can help when p′ reaches where p_c is thin: the guided
    target moves away from p_u, and draws from the broader unconditional
    mixture with large (w+1)·r cover those regions (the paper's reason for
    them; see the finite-pool bias below for their cost). The log-weights are then
    multiplied by t_select (T_s > 1 sharpens the selection) before the softmax.

    weights="balance" uses the balance heuristic of multiple importance
    sampling instead (beyond the paper): every candidate, whichever pool it
    came from, is weighted by the target over the pooled proposal
    q = (s_c·G_c + s_u·G_u)/S,

        log w = (w+1)·log G_c − w·log G_u − log((s_c·G_c + s_u·G_u)/S),

    also valid importance weights, with lower variance. They are continuous at
    w = 0 (a G_u candidate where G_c is thin gets a small weight), where the
    paper's rule gives every G_u candidate weight r and so picks about half
    of its draws from G_u for any small w > 0.

    n draws from one pool (the redundant group) are taken WITHOUT replacement,
    so no two tokens of an image get the same Z^R candidate (the pool must
    hold at least n candidates).

    The weights are exact importance weights only with proposal and
    verification temperatures equal to 1 and t_select = 1 (this function's
    defaults); the paper's settings (T_π,v ≈ 0.1–0.2, T_s = 1.1, TABLE6_WEIGHTS)
    deliberately bias the pick.

    The finite-pool bias: resampling from S candidates falls short of p′ toward
    the proposal. On the 1-D toy of benchmarks/guidance_toy.py (exact weights)
    the draws' mean moves this share of the way from p_c's mean to p′'s:

        pool (s_c + s_u)      w = 0.1   0.5    1      3
        1 + 1                 -1.90     -0.13  0.03   0.09
        5 + 5  (PAPER_POOL)   0.14      0.67   0.74   0.86
        10 + 0 (DEFAULT_POOL) 0.91      0.90   0.90   0.95
        20 + 0                1.01      0.96   0.95   0.98

    With G_u candidates in the pool the shortfall points toward the
    unconditional mixture and does not vanish as w -> 0 (every G_u candidate
    keeps weight ≈ G_c/G_u), so at small w a mixed pool can guide *away* from
    the class; a G_c-only pool falls short toward the unguided p_c instead.

    w = 0: the target is p_c. The literal rule would still admit G_u
    candidates with weight (G_c/G_u)^{T_s} at the verification temperatures,
    which is conditional sampling only for infinite pools and exact
    temperatures; all G_c candidates carry log-weight 0 (weight 1), so a uniform
    pick among i.i.d. G_c draws is one G_c draw. We therefore return a plain conditional
    draw at (t_pi, t_sigma) — exact, and the same random stream as no guidance.
    """
    check_guidance_args(w, candidates_cond, candidates_uncond)
    if weights not in RESAMPLE_WEIGHTS:
        raise ValueError(f"weights must be one of {RESAMPLE_WEIGHTS}, got {weights!r}")
    if n is not None and n > candidates_cond + candidates_uncond:
        raise ValueError(f"resample_cfg: {n} draws without replacement need a pool of at least {n} "
                         f"candidates, got s_c + s_u = {candidates_cond + candidates_uncond}")
    if w == 0:
        _count(stats, "draws", _numel(g_c, n))
        return g_c.sample(n, generator, t_pi=t_pi, t_sigma=t_sigma)
    s_c, s_u = candidates_cond, candidates_uncond
    pools = []
    if s_c:
        pools.append(g_c.sample(s_c, generator, t_pi=t_pi, t_sigma=t_sigma))  # (s_c, ..., D)
    if s_u:
        pools.append(g_u.sample(s_u, generator, t_pi=t_pi, t_sigma=t_sigma))  # (s_u, ..., D)
    cand = torch.cat(pools, dim=0)                                             # (S, ..., D)
    S = s_c + s_u
    gc_v = g_c.with_temperature(t_pi_verify, t_sigma_verify)
    gu_v = g_u.with_temperature(t_pi_verify, t_sigma_verify)
    # log_prob materialises (S, ..., K, D); evaluate the candidates in chunks so the
    # redundant pools of the large presets (S ≈ 2.5k, K = 200, D = 640) fit in memory
    per_cand = max(1, cand[0].numel() * max(g_c.K, g_u.K))
    chunk = max(1, _CHUNK_ELEMENTS // per_cand)
    lp = [(gc_v.log_prob(c), gu_v.log_prob(c)) for c in cand.split(chunk)]
    log_c = torch.cat([a for a, _ in lp])                                      # (S, ...) log G_c
    log_u = torch.cat([b for _, b in lp])                                      # (S, ...) log G_u
    if weights == "paper":
        coef = torch.tensor([w] * s_c + [w + 1.0] * s_u, dtype=log_c.dtype, device=log_c.device)
        log_w = coef.view(S, *([1] * (log_c.dim() - 1))) * (log_c - log_u)     # (S, ...)
    else:                                                                      # balance heuristic
        log_q = torch.logsumexp(torch.stack([log_c + math.log(s_c) if s_c else log_c - math.inf,
                                             log_u + math.log(s_u) if s_u else log_u - math.inf]), 0)
        log_w = (w + 1.0) * log_c - w * log_u - log_q                          # (S, ...), + log S (a constant)
    log_w = t_select * log_w

    # one categorical over the S candidates per mixture; n draws share it, without replacement
    lead = log_w.shape[1:]
    probs = torch.softmax(log_w.reshape(S, -1).T.float(), dim=-1)              # (M, S), M = prod(lead)
    # a floor far below any real weight keeps enough categories alive to draw n without
    # replacement when float32 underflows most of the softmax to exactly 0
    probs = probs.clamp_min(1e-30)
    draws = 1 if n is None else n
    idx = torch.multinomial(probs, draws, replacement=False, generator=generator)  # (M, n)
    idx = idx.T.reshape(draws, *lead)                                          # (n, ...)
    D = cand.shape[-1]
    out = cand.gather(0, idx[..., None].expand(*idx.shape, D))                 # (n, ..., D)
    _count(stats, "draws", idx.numel())
    _count(stats, "picked_uncond", int((idx >= s_c).sum()))
    return out[0] if n is None else out


# ----------------------------------------------------------------------------- naive CFG
def guided_gaussian(mu_c: torch.Tensor, log_s_c: torch.Tensor, mu_u: torch.Tensor,
                    log_s_u: torch.Tensor, w: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed form of N(μ_c, σ_c²)^{1+w} / N(μ_u, σ_u²)^w, elementwise.

    The log of the product is a quadratic in x with precision
    λ′ = (1+w)/σ_c² − w/σ_u²; when λ′ > 0 it is the Gaussian N(m′, 1/λ′) with
    m′ = ((1+w)μ_c/σ_c² − w μ_u/σ_u²)/λ′. When λ′ ≤ 0 (the unconditional
    component is the narrower one and w is large) the product grows in the
    tails and is not a distribution at all.

    Returns (mean m′, variance 1/λ′, proper mask λ′ > 0); m′ and 1/λ′ are
    finite placeholders (μ_c, σ_c²) where improper.
    """
    prec_c = torch.exp(-2 * log_s_c)
    prec_u = torch.exp(-2 * log_s_u)
    lam = (1 + w) * prec_c - w * prec_u                                        # λ′
    proper = lam > 0
    safe = torch.where(proper, lam, torch.ones_like(lam))
    mean = ((1 + w) * prec_c * mu_c - w * prec_u * mu_u) / safe
    var = 1.0 / safe
    return (torch.where(proper, mean, mu_c), torch.where(proper, var, torch.exp(2 * log_s_c)), proper)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x - mean).square() / var - 0.5 * torch.log(var) - HALF_LOG_2PI


def naive_cfg(g_c: DiagonalGMM, g_u: DiagonalGMM, w: float, n: int | None = None, *,
              t_pi: float = 1.0, t_sigma: float = 1.0, max_tries: int = 1000,
              generator: torch.Generator | None = None, stats: dict | None = None) -> torch.Tensor:
    """Naive classifier-free guidance for mixtures (GIVT, JetFormer).

    g_c, g_u: mixtures over batch shape (...) and D dims, both first put at
    temperatures (t_pi, t_sigma). Returns (..., D), or (n, ..., D) with n
    independent draws per mixture (each picks its own component).

    1. Pick k ~ π_c (the conditional mixture weights) and reuse index k in G_u.
    2. Per dimension, sample ∝ N(μ_ck, σ_ck²)^{1+w} / N(μ_uk, σ_uk²)^w by
       rejection from the proposal N(μ_ck, s_q²), s_q = 2·max(σ_ck, σ_uk)
       (GIVT's proposal), widened to at least √2 times the target's standard
       deviation so the density ratio is bounded. The envelope is the exact
       maximum of that ratio (both densities are Gaussian), so an accepted
       draw is an exact draw from the guided Gaussian of `guided_gaussian`.
       GIVT estimates the envelope on a grid; with the closed form we do not
       need to.
    3. After `max_tries` proposals without acceptance, and wherever the
       product is improper (λ′ ≤ 0, nothing to sample), fall back to the
       conditional component draw N(μ_ck, σ_ck²) — GIVT's fallback. Fallbacks
       are counted in stats["fallbacks"] (improper ones also in
       stats["improper"]) out of stats["elements"] scalar draws.

    w = 0 is exactly conditional sampling; we return a plain G_c draw.
    """
    check_guidance_args(w, 1, 0)
    if not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be a positive int, got {max_tries!r}")
    if w == 0:
        _count(stats, "elements", _numel(g_c, n) * g_c.D)
        return g_c.sample(n, generator, t_pi=t_pi, t_sigma=t_sigma)
    gc = g_c.with_temperature(t_pi, t_sigma)
    gu = g_u.with_temperature(t_pi, t_sigma)
    k = gc.sample_components(n, generator)                                     # (...) or (n, ...)

    def pick(g: DiagonalGMM) -> tuple[torch.Tensor, torch.Tensor]:
        means, log_scales = g.means, g.log_scales
        if n is not None:
            means = means.expand(n, *means.shape)
            log_scales = log_scales.expand(n, *log_scales.shape)
        idx = k[..., None, None].expand(*k.shape, 1, g.D)
        return means.gather(-2, idx).squeeze(-2), log_scales.gather(-2, idx).squeeze(-2)  # (.., D)

    mu_c, ls_c = pick(gc)
    mu_u, ls_u = pick(gu)
    mean, var, proper = guided_gaussian(mu_c, ls_c, mu_u, ls_u, w)             # (.., D) each

    # proposal N(μ_c, s_q²); the target/proposal ratio is bounded iff s_q² > var
    s_q = 2 * torch.maximum(ls_c, ls_u).exp()
    s_q = torch.maximum(s_q, torch.sqrt(2 * var))
    q_var = s_q.square()
    # envelope: max_x log N(x; m′, v) − log N(x; μ_c, s_q²), at the stationary point x*
    a = 1 / var - 1 / q_var                                                    # > 0
    x_star = (mean / var - mu_c / q_var) / a
    log_env = _log_normal(x_star, mean, var) - _log_normal(x_star, mu_c, q_var)

    out = torch.empty_like(mu_c)
    done = ~proper                                                             # improper: no tries
    tries = 0
    chunk = 16                                                                 # proposals per round, vectorised
    while tries < max_tries and not bool(done.all()):
        m = min(chunk, max_tries - tries)
        eps = torch.randn((m, *mu_c.shape), generator=generator, device=mu_c.device, dtype=mu_c.dtype)
        xs = mu_c + s_q * eps                                                  # (m, .., D)
        log_ratio = _log_normal(xs, mean, var) - _log_normal(xs, mu_c, q_var) - log_env
        u = torch.rand(xs.shape, generator=generator, device=xs.device, dtype=xs.dtype)
        ok = torch.log(u) < log_ratio                                          # (m, .., D)
        first = ok.float().argmax(0)                                           # first accepted try
        hit = ok.any(0) & ~done
        out = torch.where(hit, xs.gather(0, first[None]).squeeze(0), out)
        done = done | hit
        tries += m
    fallback = ~done | ~proper
    cond_draw = mu_c + torch.exp(ls_c) * torch.randn(mu_c.shape, generator=generator,
                                                     device=mu_c.device, dtype=mu_c.dtype)
    out = torch.where(fallback, cond_draw, out)
    _count(stats, "elements", out.numel())
    _count(stats, "fallbacks", int(fallback.sum()))
    _count(stats, "improper", int((~proper).sum()))
    return out


# ----------------------------------------------------------------------------- checks
def _numel(g: DiagonalGMM, n: int | None) -> int:
    return g.logits[..., 0].numel() * (1 if n is None else n)


def check_guidance_args(w: float, s_c: int, s_u: int) -> None:
    """ValueError naming the argument unless w >= 0 is finite and the candidate counts
    are ints >= 0 with at least one candidate in all."""
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
        raise ValueError(f"cfg_scale (w) must be a finite number >= 0, got {w!r}")
    for name, s in (("candidates_cond", s_c), ("candidates_uncond", s_u)):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"{name} must be an int >= 0, got {s!r}")
    if s_c + s_u < 1:
        raise ValueError(f"candidates_cond + candidates_uncond must be >= 1 (zero candidates), "
                         f"got {s_c} + {s_u}")
