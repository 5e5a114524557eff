"""Latent interpolation (farmer.interpolate): paths, round trips, scores and input checks."""
import math

import pytest
import torch

import farmer
from farmer.interpolate import linear_path, path_times, spherical_path
from _models import perturbed_model, random_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return perturbed_model(seed=3)


def orthogonal_pair(D: int = 12, norm: float = 3.0):
    """Two orthogonal vectors of equal norm, shaped (1, 3, D // 3) like a latent (B, N, d)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, 2, generator=g, dtype=torch.float64))
    a, b = norm * q[:, 0], norm * q[:, 1]
    return a.view(1, 3, -1), b.view(1, 3, -1)


def test_path_times_include_both_ends():
    t = path_times(5)
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            path_times(bad)


def test_linear_path_shrinks_the_norm_of_orthogonal_endpoints():
    a, b = orthogonal_pair()
    z = linear_path(a, b, path_times(3))                                       # (1, 3, 3, 4)
    assert z.shape == (1, 3, *a.shape[1:])
    assert torch.equal(z[:, 0], a) and torch.equal(z[:, -1], b)
    assert z[0, 1].norm().item() == pytest.approx(3.0 / math.sqrt(2))          # half the variance


def test_spherical_path_keeps_the_norm_on_the_line_between_the_endpoint_norms():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 5, 6, generator=g, dtype=torch.float64)
    b = 2.5 * torch.randn(4, 5, 6, generator=g, dtype=torch.float64) + 0.3 * a   # correlated, other norms
    t = path_times(7)
    z = spherical_path(a, b, t)                                                # (4, 7, 5, 6)
    na, nb = a.flatten(1).norm(dim=1), b.flatten(1).norm(dim=1)
    expected = (1 - t)[None] * na[:, None] + t[None] * nb[:, None]             # (4, 7)
    assert torch.allclose(z.flatten(2).norm(dim=2), expected, rtol=1e-10)
    assert torch.allclose(z[:, 0], a, atol=1e-12) and torch.allclose(z[:, -1], b, atol=1e-12)
    # the direction moves along the great circle: the angle to a grows linearly in t
    ua, ub = a.flatten(1) / na[:, None], b.flatten(1) / nb[:, None]
    omega = torch.arccos((ua * ub).sum(1))
    angle = torch.arccos((z.flatten(2) / expected[..., None] * ua[:, None]).sum(-1).clamp(-1, 1))
    assert torch.allclose(angle, t[None] * omega[:, None], atol=1e-6)


def test_spherical_path_of_orthogonal_equal_norms_is_the_variance_preserving_path():
    a, b = orthogonal_pair()
    t = path_times(9)
    z = spherical_path(a, b, t)[0]                                             # (9, 3, 4)
    vp = torch.cos(math.pi / 2 * t)[:, None, None] * a + torch.sin(math.pi / 2 * t)[:, None, None] * b
    assert torch.allclose(z, vp, atol=1e-12)
    assert torch.allclose(z.flatten(1).norm(dim=1), torch.full((9,), 3.0, dtype=torch.float64))


def test_spherical_path_of_parallel_endpoints_stays_on_their_ray():
    a = torch.arange(1.0, 13.0, dtype=torch.float64).view(1, 3, 4)
    z = spherical_path(a, 3 * a, path_times(5))                                # no angle: slerp undefined
    assert torch.isfinite(z).all()
    assert torch.allclose(z[0], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0], dtype=torch.float64)[:, None, None] * a)
    with pytest.raises(ValueError, match="zero"):
        spherical_path(torch.zeros_like(a), a, path_times(3))


@pytest.mark.parametrize("path", ["linear", "spherical"])
def test_interpolate_decodes_the_inputs_at_the_ends_and_scores_every_point(model, path):
    x_a, x_b = random_images(model.cfg, 2, seed=1), random_images(model.cfg, 2, seed=2)
    out = farmer.interpolate(model, x_a, x_b, steps=6, path=path, seed=4)
    B, S = 2, 6
    assert out["t"].shape == (S,) and out["images"].shape == (B, S, 1, 8, 8)
    assert out["images"].dtype == torch.uint8 and out["z"].shape == (B, S, model.cfg.tokens, model.cfg.token_dim)
    assert torch.equal(out["images"][:, 0], x_a) and torch.equal(out["images"][:, -1], x_b)  # round trip
    assert out["bpd"].shape == (B, S) and torch.isfinite(out["bpd"]).all()
    ref = model.nll(out["images"].flatten(0, 1), None, seed=4)["bpd"].view(B, S)   # null class, same seed
    assert torch.allclose(out["bpd"], ref)
    z_a, _ = model.encode((x_a.float() + 0.5) / 128 - 1)                      # the bin centres
    assert torch.allclose(out["z"][:, 0], z_a, atol=1e-5)
    assert torch.allclose(out["latent_norm"], out["z"].flatten(2).norm(dim=2))
    middle = out["images"][:, 1:-1].float()
    assert not torch.equal(middle[:, 0], x_a.float())                          # the path really moves


def test_interpolate_under_class_labels_scores_with_them(model):
    x_a, x_b = random_images(model.cfg, 1, seed=5), random_images(model.cfg, 1, seed=6)
    out = farmer.interpolate(model, x_a, x_b, steps=3, labels=torch.tensor([4]))
    ref = model.nll(out["images"][0], torch.full((3,), 4), seed=0)["bpd"]
    assert torch.allclose(out["bpd"][0], ref) and "class labels" in out["estimator"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(path="bezier"), "path"), (dict(steps=1), "steps"), (dict(decoder="bogus"), "decoder"),
    (dict(x_b=torch.zeros(3, 1, 8, 8, dtype=torch.uint8)), "same number"),
    (dict(x_a=torch.zeros(2, 1, 8, 8)), "x_a must be uint8"),
    (dict(x_b=torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), "x_b must have shape"),
    (dict(labels=torch.tensor([0, 10])), "labels"),
])
def test_interpolate_rejects_bad_input(model, kwargs, match):
    args = dict(x_a=random_images(model.cfg, 2, seed=1), x_b=random_images(model.cfg, 2, seed=2)) | kwargs
    with pytest.raises(ValueError, match=match):
        farmer.interpolate(model, **args)
