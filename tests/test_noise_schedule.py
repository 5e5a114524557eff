"""The training noise schedule: the Gaussian curriculum and its uniform-dequantisation tail."""
import pytest
import torch

from farmer.config import TrainConfig
from farmer.data import cosine_sigma
from farmer.train import noise_sigma, noisy_batch


def test_gaussian_curriculum_reaches_sigma_min_where_the_uniform_tail_begins():
    cfg = TrainConfig(noise="gaussian", steps=100, sigma_max=0.1, sigma_min=0.005, uniform_tail=0.2)
    assert noise_sigma(0, cfg) == pytest.approx(0.1)
    assert noise_sigma(79, cfg) == pytest.approx(0.005)                     # last Gaussian step
    assert noise_sigma(40, cfg) == pytest.approx(cosine_sigma(40, 80, 0.1, 0.005))
    assert all(noise_sigma(s, cfg) is None for s in range(80, 100))        # the last 20% are uniform
    assert noise_sigma(50, TrainConfig(noise="uniform", steps=100)) is None
    whole = TrainConfig(noise="gaussian", steps=100)                        # no tail: the paper's schedule
    assert [noise_sigma(s, whole) for s in range(100)] == [cosine_sigma(s, 100, 0.1, 0.005) for s in range(100)]


def test_tail_steps_are_dequantised_uniformly_and_curriculum_steps_get_gaussian_noise():
    x = torch.full((64, 1, 8, 8), 100, dtype=torch.uint8)
    cfg = TrainConfig(noise="gaussian", steps=10, uniform_tail=0.5, seed=3)
    pos = list(range(64))
    tail = noisy_batch(x, cfg, 7, pos, 64)
    # uniform dequantisation: (q + u)/128 − 1 with u in [0, 1), so every value lies in one bin
    lo, hi = 100 / 128 - 1, 101 / 128 - 1
    assert bool(((tail >= lo) & (tail < hi)).all())
    assert float(tail.std()) == pytest.approx((1 / 128) / 12 ** 0.5, rel=0.05)
    head = noisy_batch(x, cfg, 0, pos, 64)                                  # σ = 0.1 Gaussian
    assert float(head.std()) == pytest.approx(0.1, rel=0.05)
    assert float(head.mean()) == pytest.approx(100.5 / 128 - 1, abs=0.01)


@pytest.mark.parametrize("kwargs, text", [
    (dict(noise="gaussian", uniform_tail=1.0), "uniform_tail"),
    (dict(noise="gaussian", uniform_tail=-0.1), "uniform_tail"),
    (dict(noise="uniform", uniform_tail=0.2), "uniform_tail needs noise='gaussian'"),
])
def test_bad_uniform_tail_is_refused(kwargs, text):
    with pytest.raises(ValueError, match=text):
        TrainConfig(**kwargs).validate()
