"""Guidance rules against the Gaussian closed form (DESIGN §1.5).

For Gaussians p_c = N(μ_c, σ_c²), p_u = N(μ_u, σ_u²) the guided target
p′ ∝ p_c^{w+1}/p_u^w is the Gaussian N(m′, 1/λ′) with
λ′ = (w+1)/σ_c² − w/σ_u², m′ = ((w+1)μ_c/σ_c² − wμ_u/σ_u²)/λ′.

Statistical tests use a fixed seed and L = 20,000 independent draws. The
standard error of a mean is √(v/L) ≤ 0.0071 here, of a variance ratio
√(2/L) = 0.010; the tolerances (0.03 on means, 6 % on variances) are
≥ 4 standard errors and well below the effect of guidance being tested
(|m′ − μ_c| > 0.1, over 3× the mean tolerance, for every w used).
"""
import math

import pytest
import torch

from farmer.gmm import DiagonalGMM
from farmer.guidance import guided_gaussian, naive_cfg, resample_cfg

L = 20_000
MU_C, S_C = torch.tensor([1.0, -0.5]), torch.tensor([1.0, 0.7])
MU_U, S_U = torch.tensor([0.0, 0.3]), torch.tensor([1.5, 1.2])
MEAN_TOL, VAR_TOL = 0.03, 0.06


def gaussian(mu: torch.Tensor, s: torch.Tensor, batch: int = L) -> DiagonalGMM:
    """A batch of identical one-component mixtures N(mu, diag s²) over D = len(mu) dims."""
    D = mu.numel()
    return DiagonalGMM(torch.zeros(batch, 1), mu.expand(batch, 1, D).clone(),
                       s.log().expand(batch, 1, D).clone())


def closed_form(w: float) -> tuple[torch.Tensor, torch.Tensor]:
    lam = (w + 1) / S_C**2 - w / S_U**2
    return ((w + 1) * MU_C / S_C**2 - w * MU_U / S_U**2) / lam, 1 / lam


def assert_matches(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    assert x.shape == (L, mean.numel())
    assert (x.mean(0) - mean).abs().max() < MEAN_TOL, (x.mean(0), mean)
    assert ((x.var(0) / var) - 1).abs().max() < VAR_TOL, (x.var(0), var)


def test_guided_gaussian_is_the_normalised_product():
    w = 2.0
    x = torch.linspace(-3, 3, 7)[:, None]                                      # (7, 1) points
    mean, var, proper = guided_gaussian(MU_C, S_C.log(), MU_U, S_U.log(), w)
    assert proper.all()
    log_prod = (w + 1) * torch.distributions.Normal(MU_C, S_C).log_prob(x) \
        - w * torch.distributions.Normal(MU_U, S_U).log_prob(x)                # (7, D)
    log_target = torch.distributions.Normal(mean, var.sqrt()).log_prob(x)
    diff = log_prod - log_target                                               # constant in x
    assert torch.allclose(diff, diff[:1].expand_as(diff), atol=1e-4)
    # the unconditional component narrower than the conditional one and w large: improper
    _, _, proper = guided_gaussian(torch.zeros(1), torch.zeros(1), torch.zeros(1),
                                   torch.tensor([math.log(0.5)]), 1.0)
    assert not proper.any()


@pytest.mark.parametrize("w", [0.5, 1.0, 2.0, 3.0])
def test_resample_matches_closed_form(w):
    mean, var = closed_form(w)
    assert (mean - MU_C).abs().min() > 3 * MEAN_TOL                            # guidance is visible
    g = torch.Generator().manual_seed(0)
    stats = {}
    x = resample_cfg(gaussian(MU_C, S_C), gaussian(MU_U, S_U), w, candidates_cond=64,
                     candidates_uncond=64, generator=g, stats=stats)           # exact temperatures, T_s = 1
    assert_matches(x, mean, var)
    assert stats["draws"] == L and 0 < stats["picked_uncond"] < L


@pytest.mark.parametrize("s_c, s_u", [(128, 0), (0, 128)])
def test_resample_weights_of_each_pool_alone_are_exact(s_c, s_u):
    """w·r for G_c candidates and (w+1)·r for G_u candidates are each target/proposal."""
    w = 2.0
    mean, var = closed_form(w)
    g = torch.Generator().manual_seed(1)
    x = resample_cfg(gaussian(MU_C, S_C), gaussian(MU_U, S_U), w, candidates_cond=s_c,
                     candidates_uncond=s_u, generator=g)
    assert_matches(x, mean, var)


def test_resample_w0_is_conditional_sampling():
    """w = 0 gives G_c's own distribution, even at the paper's biased verification settings."""
    K, D = 3, 2
    gen = torch.Generator().manual_seed(2)
    logits, means = torch.randn(K, generator=gen), 2 * torch.randn(K, D, generator=gen)
    g_c = DiagonalGMM(logits.expand(L, K), means.expand(L, K, D), torch.full((L, K, D), -0.5))
    g_u = gaussian(torch.zeros(D), torch.full((D,), 2.0))
    paper = dict(candidates_cond=5, candidates_uncond=5, t_pi_verify=0.1, t_sigma_verify=0.9, t_select=1.1)
    x = resample_cfg(g_c, g_u, 0.0, generator=torch.Generator().manual_seed(0), **paper)
    assert_matches(x, g_c.mean()[0], g_c.variance()[0])
    # ... and it is the very draw of plain conditional sampling with the same generator
    y = g_c.sample(None, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)


def test_resample_redundant_group_shares_one_pool_without_replacement():
    g_c, g_u = gaussian(MU_C, S_C, batch=4), gaussian(MU_U, S_U, batch=4)
    x = resample_cfg(g_c, g_u, 2.0, 5, candidates_cond=3, candidates_uncond=2,
                     generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 4, 2)
    for b in range(4):                                                         # 5 draws from 5 candidates
        assert torch.unique(x[:, b], dim=0).shape[0] == 5                      # each one exactly once
    with pytest.raises(ValueError, match="without replacement"):
        resample_cfg(g_c, g_u, 2.0, 6, candidates_cond=3, candidates_uncond=2)


def test_resample_no_repeated_redundant_candidate_even_when_weights_underflow():
    """One candidate far more likely than the rest (float32 softmax gives the others 0):
    still N distinct draws."""
    g_c = gaussian(torch.tensor([40.0, 40.0]), torch.tensor([0.1, 0.1]), batch=2)
    g_u = gaussian(torch.zeros(2), torch.ones(2), batch=2)
    x = resample_cfg(g_c, g_u, 3.0, 20, candidates_cond=10, candidates_uncond=10,
                     generator=torch.Generator().manual_seed(0))
    for b in range(2):
        assert torch.unique(x[:, b], dim=0).shape[0] == 20


@pytest.mark.parametrize("w", [0.25, 2.0])
def test_resample_balance_weights_match_closed_form(w):
    """The balance heuristic's weights p′/((s_c·p_c + s_u·p_u)/S) are exact importance weights too."""
    mean, var = closed_form(w)
    stats = {}
    x = resample_cfg(gaussian(MU_C, S_C), gaussian(MU_U, S_U), w, candidates_cond=64,
                     candidates_uncond=64, weights="balance", generator=torch.Generator().manual_seed(0),
                     stats=stats)
    assert_matches(x, mean, var)
    with pytest.raises(ValueError, match="weights"):
        resample_cfg(gaussian(MU_C, S_C), gaussian(MU_U, S_U), w, weights="mis")


def test_balance_weights_pick_few_unconditional_candidates_at_small_w():
    """Small w: the paper's rule takes about half of its picks from G_u (their weight is r, not
    ~0); the balance heuristic weights a G_u candidate by p_c/q and picks far fewer of them."""
    paper, balance = {}, {}
    args = dict(candidates_cond=5, candidates_uncond=5)
    g_c, g_u = gaussian(MU_C, S_C), gaussian(MU_U, S_U)
    resample_cfg(g_c, g_u, 0.1, generator=torch.Generator().manual_seed(0), stats=paper, **args)
    resample_cfg(g_c, g_u, 0.1, weights="balance", generator=torch.Generator().manual_seed(0),
                 stats=balance, **args)
    assert balance["picked_uncond"] < 0.8 * paper["picked_uncond"]


@pytest.mark.parametrize("w", [1.0, 3.0])
def test_naive_follows_the_closed_form_per_component(w):
    """Two well separated components: each draw keeps its component k ~ π_c, then follows
    N(μ_ck, σ_ck²)^{1+w}/N(μ_uk, σ_uk²)^w; checked on each side separately."""
    pi = torch.tensor([0.3, 0.7])
    mu_c = torch.tensor([[-6.0], [6.0]])                                       # (K, D=1)
    s_c = torch.tensor([[0.8], [1.0]])
    mu_u = torch.tensor([[-5.5], [5.0]])
    s_u = torch.tensor([[1.2], [1.5]])
    g_c = DiagonalGMM(pi.log().expand(L, 2), mu_c.expand(L, 2, 1), s_c.log().expand(L, 2, 1))
    g_u = DiagonalGMM(torch.zeros(L, 2), mu_u.expand(L, 2, 1), s_u.log().expand(L, 2, 1))
    stats = {}
    x = naive_cfg(g_c, g_u, w, generator=torch.Generator().manual_seed(0), stats=stats)[:, 0]
    assert stats["fallbacks"] == 0 and stats["elements"] == L
    for k, side in enumerate((x < 0, x >= 0)):
        lam = (w + 1) / s_c[k] ** 2 - w / s_u[k] ** 2
        mean = ((w + 1) * mu_c[k] / s_c[k] ** 2 - w * mu_u[k] / s_u[k] ** 2) / lam
        draws = x[side]
        assert abs(side.float().mean() - pi[k]) < 0.02                        # SE 0.0033
        assert abs(draws.mean() - mean) < MEAN_TOL
        assert abs(draws.var() * lam - 1) < VAR_TOL


def test_naive_handles_targets_wider_than_the_proposal():
    """σ_u slightly below σ_c and w = 4: the target N(0, 16) is wider than GIVT's proposal
    2·max(σ_c, σ_u) = 2, which must be widened for the envelope to exist."""
    stats = {}
    one = torch.ones(1)
    x = naive_cfg(gaussian(0 * one, one), gaussian(0 * one, 0.9 * one), 4.0,
                  generator=torch.Generator().manual_seed(0), stats=stats)
    var = 1 / (5 - 4 / 0.81)                                                   # 16.2
    assert stats["fallbacks"] == 0
    assert abs(x.mean()) < 4 * math.sqrt(var / L) and abs(x.var() / var - 1) < VAR_TOL


def test_naive_counts_improper_fallbacks():
    """σ_u < σ_c with large w: no distribution to sample; every value falls back to the
    conditional component N(μ_c, σ_c²) and is counted."""
    stats = {}
    g_c, g_u = gaussian(MU_C, S_C), gaussian(MU_U, 0.5 * S_C)
    x = naive_cfg(g_c, g_u, 3.0, generator=torch.Generator().manual_seed(0), stats=stats)
    assert stats["fallbacks"] == stats["improper"] == stats["elements"] == 2 * L
    assert_matches(x, MU_C, S_C**2)


def test_naive_bounded_tries_fallback_is_counted():
    stats = {}
    naive_cfg(gaussian(MU_C, S_C, 1000), gaussian(MU_U, S_U, 1000), 3.0, max_tries=1,
              generator=torch.Generator().manual_seed(0), stats=stats)
    assert stats["improper"] == 0 and 0 < stats["fallbacks"] < stats["elements"] == 2000


def test_naive_w0_is_conditional_sampling():
    g_c, g_u = gaussian(MU_C, S_C, 8), gaussian(MU_U, S_U, 8)
    x = naive_cfg(g_c, g_u, 0.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, g_c.sample(None, torch.Generator().manual_seed(5)))


def test_bad_arguments_raise_value_errors_naming_them():
    g_c, g_u = gaussian(MU_C, S_C, 2), gaussian(MU_U, S_U, 2)
    with pytest.raises(ValueError, match="cfg_scale"):
        resample_cfg(g_c, g_u, -1.0)
    with pytest.raises(ValueError, match="cfg_scale"):
        naive_cfg(g_c, g_u, float("nan"))
    with pytest.raises(ValueError, match="zero candidates"):
        resample_cfg(g_c, g_u, 1.0, candidates_cond=0, candidates_uncond=0)
    with pytest.raises(ValueError, match="candidates_uncond"):
        resample_cfg(g_c, g_u, 1.0, candidates_uncond=-1)
    with pytest.raises(ValueError, match="max_tries"):
        naive_cfg(g_c, g_u, 1.0, max_tries=0)


def _pooled_shift(pool_per_token: float, w: float = 2.0, tokens: int = 49, images: int = 400) -> float:
    """Share of the guided mean shift reached by `tokens` draws without replacement per image
    from one pool of pool_per_token·tokens candidates (half from each proposal), exact weights."""
    S = int(pool_per_token * tokens)
    x = resample_cfg(gaussian(MU_C, S_C, images), gaussian(MU_U, S_U, images), w, tokens,
                     candidates_cond=S - S // 2, candidates_uncond=S // 2,
                     generator=torch.Generator().manual_seed(0))            # (tokens, images, D)
    mean, _ = closed_form(w)
    return float(((x.mean((0, 1)) - MU_C) / (mean - MU_C)).mean())


def test_redundant_pool_near_n_loses_the_guidance_and_five_per_token_keeps_most():
    # 49 draws from a pool of 49 take every candidate: the proposal mixture, pulled towards p_u,
    # so the guided shift is gone (here reversed); 5 per token (farmer.sampling.MIN_POOL_PER_TOKEN)
    # keeps most of it. 19,600 draws each: the shares' standard error is below 0.03.
    assert _pooled_shift(1.0) < 0.1
    assert _pooled_shift(5.0) > 0.6
    assert _pooled_shift(5.0) > _pooled_shift(2.0) + 0.2


def _shift(x: torch.Tensor, w: float) -> torch.Tensor:
    """Per dimension, how far the draws' mean moved from μ_c toward the target's mean m′ (1 = all the way)."""
    mean, _ = closed_form(w)
    return (x.mean(0) - MU_C) / (mean - MU_C)


def test_the_default_pool_falls_short_toward_p_c_while_a_mixed_pool_can_guide_away():
    """The finite-pool bias (farmer.guidance.DEFAULT_POOL vs PAPER_POOL). At w = 0.1 the target's mean is
    only 0.04 / 0.026 from μ_c, so one standard error of a shift is 0.05 / 0.09 with 200,000 draws; the
    bounds leave 4 of them and more. 10 + 0 candidates fall short of m′ toward μ_c only (a shift
    in (0, 1]); 1 + 1 candidates pull the draws toward the proposal mixture, i.e. toward μ_u, further than
    the guidance moves them (a negative shift: guidance against the class)."""
    from farmer.guidance import DEFAULT_POOL, PAPER_POOL
    assert DEFAULT_POOL == {"candidates_cond": 10, "candidates_uncond": 0}
    assert PAPER_POOL == {"candidates_cond": 5, "candidates_uncond": 5}
    w, n = 0.1, 10 * L                                         # 200,000 draws: SE of a shift ≤ 0.09 (dim 2)
    g = torch.Generator().manual_seed(5)
    own = _shift(resample_cfg(gaussian(MU_C, S_C, n), gaussian(MU_U, S_U, n), w, generator=g), w)
    mixed = _shift(resample_cfg(gaussian(MU_C, S_C, n), gaussian(MU_U, S_U, n), w, candidates_cond=1,
                                candidates_uncond=1, generator=g), w)
    assert ((own > 0.5) & (own < 1.4)).all(), own
    assert (mixed < -0.5).all(), mixed


def test_the_sampler_and_the_cli_default_to_the_library_pool():
    import inspect

    from farmer.cli import build_parser
    from farmer.guidance import DEFAULT_POOL
    from farmer.sampling import sample
    params = inspect.signature(sample).parameters
    assert {k: params[k].default for k in DEFAULT_POOL} == DEFAULT_POOL
    params = inspect.signature(resample_cfg).parameters
    assert {k: params[k].default for k in DEFAULT_POOL} == DEFAULT_POOL
    args = build_parser().parse_args(["quality", "some/checkpoint"])
    assert {"candidates_cond": args.candidates_cond, "candidates_uncond": args.candidates_uncond} == DEFAULT_POOL
