"""Diagonal Gaussian mixtures against torch.distributions (DESIGN §1.3)."""
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from farmer.gmm import DiagonalGMM


def _random_gmm(lead=(3, 5), K=4, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DiagonalGMM(torch.randn(*lead, K, generator=g) * 2,
                       torch.randn(*lead, K, D, generator=g) * 3,
                       torch.randn(*lead, K, D, generator=g) * 0.5)


def _reference(gmm: DiagonalGMM) -> MixtureSameFamily:
    comp = Independent(Normal(gmm.means, gmm.log_scales.exp()), 1)
    return MixtureSameFamily(Categorical(logits=gmm.logits), comp)


def test_log_prob_matches_mixture_same_family():
    gmm = _random_gmm()
    x = torch.randn(3, 5, 6) * 4
    assert torch.allclose(gmm.log_prob(x), _reference(gmm).log_prob(x), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("t_pi,t_sigma", [(0.5, 1.0), (1.0, 0.7), (2.0, 1.3)])
def test_temperatures_multiply_logits_and_scales(t_pi, t_sigma):
    gmm = _random_gmm(seed=1)
    hot = gmm.with_temperature(t_pi, t_sigma)
    ref = DiagonalGMM(gmm.logits * t_pi, gmm.means, gmm.log_scales + math.log(t_sigma))
    x = torch.randn(3, 5, 6)
    assert torch.allclose(hot.log_prob(x), _reference(ref).log_prob(x), atol=1e-4)


def test_from_flat_layout():
    K, D = 3, 2
    raw = torch.arange(DiagonalGMM.param_count(K, D), dtype=torch.float32)[None]
    g = DiagonalGMM.from_flat(raw, K, D)
    assert g.logits.tolist() == [[0, 1, 2]]
    assert g.means.shape == (1, K, D) and g.log_scales.shape == (1, K, D)
    with pytest.raises(ValueError, match="K\\(1\\+2D\\)"):
        DiagonalGMM.from_flat(raw[:, :-1], K, D)


def test_samples_match_mixture_moments():
    gmm = _random_gmm(lead=(2,), K=3, D=4, seed=2)
    draws = gmm.sample(n=200_000, generator=torch.Generator().manual_seed(0))     # (n, 2, 4)
    ref = _reference(gmm)
    mean, var = ref.mean, ref.variance
    # standard error of the mean is sqrt(var / n); allow 5 standard errors
    assert torch.all((draws.mean(0) - mean).abs() < 5 * (var / 200_000).sqrt())
    assert torch.allclose(draws.var(0), var, rtol=0.03)
    assert torch.allclose(gmm.mean(), mean, atol=1e-5) and torch.allclose(gmm.variance(), var, rtol=1e-4)


def test_sampling_temperature_scales_spread():
    one = DiagonalGMM(torch.zeros(1, 1), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1))
    g = torch.Generator().manual_seed(0)
    draws = one.sample(n=100_000, generator=g, t_sigma=0.5)
    assert draws.std().item() == pytest.approx(0.5, rel=0.02)


def test_sample_is_seeded():
    gmm = _random_gmm(seed=3)
    a = gmm.sample(generator=torch.Generator().manual_seed(7))
    b = gmm.sample(generator=torch.Generator().manual_seed(7))
    c = gmm.sample(generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_extreme_but_finite_inputs_give_no_nan():
    K, D = 4, 3
    logits = torch.tensor([[1e30, -1e30, 0.0, 50.0]])
    means = torch.tensor([[[1e20] * D, [-1e20] * D, [0.0] * D, [3.0] * D]])
    log_scales = torch.tensor([[[-1e4] * D, [1e4] * D, [0.0] * D, [-80.0] * D]])
    gmm = DiagonalGMM(logits, means, log_scales)
    for x in (torch.full((1, D), 1e30), torch.zeros(1, D), torch.full((1, D), -3e38)):
        lp = gmm.log_prob(x)
        assert not torch.isnan(lp).any()
    draws = gmm.sample(n=10, generator=torch.Generator().manual_seed(0))
    assert not torch.isnan(draws).any()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="must be"):
        DiagonalGMM(torch.zeros(2, 3), torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="temperatures"):
        _random_gmm().with_temperature(1.0, 0.0)
