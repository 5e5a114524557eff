"""Channel mixing before the split (DESIGN §1.8, farmer/mixing.py).

Each map must be an exact bijection with the right log-det, and the model
built around it must keep every invariant of the plain slice: the round
trip, log|det| against an autograd Jacobian, and a per-pixel map that sums
exactly to the total.
"""
import pytest
import scipy.fft
import torch
from torch.autograd.functional import jacobian

import farmer
from farmer.mixing import LUMixing, dct_matrix, haar_matrix, make_mixing, patch_basis

from _models import perturbed_model, random_images

CASES = [(m, pos) for m in ("dct", "haar", "lu") for pos in ("input", "split")]


def mixed_model(mixing: str, position: str) -> farmer.Farmer:
    """A tiny model with randomised flow outputs and, for "lu", a map moved away from its DCT init."""
    model = perturbed_model(channel_mixing=mixing, mixing_position=position)
    if mixing == "lu":
        with torch.no_grad():
            model.mixing.log_s.add_(0.2 * torch.randn_like(model.mixing.log_s))
            model.mixing.upper.add_(0.2 * torch.randn_like(model.mixing.upper))
    return model


def test_dct_matrix_is_scipys_orthonormal_dct():
    for p in (2, 4, 7):
        ours = dct_matrix(p)
        theirs = torch.from_numpy(scipy.fft.dct(torch.eye(p, dtype=torch.float64).numpy(), norm="ortho", axis=0))
        assert torch.allclose(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("kind, channels, p", [("dct", 1, 4), ("dct", 3, 2), ("haar", 1, 4), ("haar", 2, 8)])
def test_bases_are_orthonormal_and_start_with_the_patch_mean(kind, channels, p):
    m = patch_basis(kind, channels, p)                                         # (d, d)
    d = channels * p * p
    assert torch.allclose(m @ m.T, torch.eye(d, dtype=m.dtype), atol=1e-12)
    # the first C rows are the per-channel DC terms: constant over the channel's p×p pixels
    for c in range(channels):
        row = m[c].view(channels, p, p)
        assert torch.allclose(row[c], torch.full((p, p), 1.0 / p, dtype=m.dtype))
        assert row.abs().sum() == pytest.approx(p)                             # zero on the other channels


def test_dct_order_is_low_frequency_first():
    """The 6 informative channels of fmnist are the frequencies with u + v <= 2."""
    m = patch_basis("dct", 1, 4)
    a = dct_matrix(4)
    first6 = {(u, v) for u in range(4) for v in range(4) if u + v <= 2}
    got = set()
    for j in range(6):
        hits = [(u, v) for (u, v) in first6 if torch.allclose(m[j], torch.outer(a[u], a[v]).reshape(-1))]
        assert len(hits) == 1
        got.add(hits[0])
    assert got == first6


def test_haar_needs_a_power_of_two_patch():
    with pytest.raises(ValueError, match="power of 2"):
        haar_matrix(6)
    with pytest.raises(ValueError, match="haar"):
        farmer.presets["tiny"].replace(patch_size=3, image_size=9, channel_mixing="haar")
    with pytest.raises(ValueError, match="channel_mixing"):
        farmer.presets["tiny"].replace(channel_mixing="fft")


def test_lu_starts_at_the_dct_and_its_logdet_is_slogdet():
    lu = LUMixing(1, 4)
    assert torch.allclose(lu.matrix(), patch_basis("dct", 1, 4).float(), atol=1e-6)
    with torch.no_grad():                                                      # move away from the init
        for prm in (lu.lower, lu.upper, lu.log_s):
            prm.add_(0.1 * torch.randn_like(prm))
    sign, logabs = torch.linalg.slogdet(lu.matrix().detach().double())
    assert float(lu.logdet_per_token().detach()) == pytest.approx(float(logabs), abs=1e-5)
    t = torch.randn(2, 3, 16)
    u, ld = lu(t)
    assert torch.allclose(lu.reverse(u), t, atol=1e-5)
    assert torch.allclose(ld, torch.full((2,), 3 * float(logabs)), atol=1e-4)
    assert torch.allclose(lu.pixel_weights().sum(1), torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize("mixing, position", CASES)
def test_round_trip(mixing, position):
    model = mixed_model(mixing, position)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    z, _ = model.encode(x)
    assert torch.allclose(model.decode(z), x, atol=1e-5)
    assert torch.allclose(model.decode(z, "sequential_nocache"), x, atol=1e-5)


@pytest.mark.parametrize("mixing, position", CASES)
def test_logdet_matches_autograd_jacobian(mixing, position):
    model = mixed_model(mixing, position).double()
    x = (torch.rand(1, 1, 8, 8, dtype=torch.float64) * 2 - 1)
    with torch.no_grad():
        _, logdet = model.encode(x)
    J = jacobian(lambda v: model.encode(v.view(1, 1, 8, 8))[0].reshape(-1), x.reshape(-1))  # (64, 64)
    assert float(logdet) == pytest.approx(float(torch.linalg.slogdet(J)[1]), abs=1e-8)
    assert float(model(x)["logdet"].detach()) == pytest.approx(float(logdet), abs=1e-10)


@pytest.mark.parametrize("mixing, position", CASES)
def test_pixel_map_sums_to_the_total(mixing, position):
    model = mixed_model(mixing, position)
    x = random_images(model.cfg, 4)
    y = torch.tensor([0, 1, 2, 3])
    maps = farmer.likelihood_map(model, x, y, seed=3)
    bpd = model.nll(x, y, seed=3)["bpd"]
    D = model.cfg.data_dim
    assert torch.allclose(maps["pixel_bits"].sum((1, 2, 3)), bpd * D, rtol=1e-5)
    t = model.nll(x, y, seed=3, detail=True)
    assert torch.allclose(t["logdet_pixel"].sum((1, 2)), t["logdet"], atol=1e-3)
    if position == "input" and mixing != "lu":
        # the spreading is not the trivial one: the map differs from the per-coefficient terms
        assert not torch.allclose(t["logdet_pixel"], t["logdet_terms"].sum(1), atol=1e-4)


@pytest.mark.parametrize("mixing", ["dct", "lu"])
def test_a_float64_map_keeps_its_total_to_float64_precision(mixing):
    """The spreading weights are float64 (they were float32: with LU mixing a float64 map missed its
    total by ~1.5e-6 bits)."""
    model = mixed_model(mixing, "input").double()
    assert model.mixing.pixel_weights().dtype == torch.float64
    assert torch.allclose(model.mixing.pixel_weights().sum(1), torch.ones(4, dtype=torch.float64), atol=1e-15)
    from farmer.data import dequantize_uniform
    y = torch.tensor([0, 1, 2])
    x = dequantize_uniform(random_images(model.cfg, 3), seed=1).double()       # a float64 forward pass
    t = model.eval()(x, y, detail=True)
    assert t["logdet"].dtype == t["logdet_pixel"].dtype == torch.float64
    assert (t["logdet_pixel"].sum((1, 2)) - t["logdet"]).abs().max() < 1e-9
    # and in float32 the map's mixing_logdet key (documented) is the whole-image log|det M|: 0 for the DCT
    model32 = mixed_model(mixing, "input")
    maps = farmer.likelihood_map(model32, random_images(model.cfg, 3), y, seed=1)
    assert maps["mixing_logdet"].shape == (3,)
    assert bool(maps["mixing_logdet"].abs().max() < 1e-6) == (mixing == "dct")


def test_informative_channels_are_low_frequencies():
    """On a fresh model (identity flow) with DCT input mixing, a constant image puts all of its
    content into the first channel (DC) of every token: Z^I carries it."""
    cfg = farmer.presets["tiny"].replace(channel_mixing="dct")
    model = farmer.Farmer(cfg).eval()
    x = torch.full((1, 1, 8, 8), 0.5)
    z, logdet = model.encode(x)
    assert torch.allclose(z[..., 0], torch.full_like(z[..., 0], 0.5 * 2))    # DC = mean · p, p = 2
    assert torch.allclose(z[..., 1:], torch.zeros_like(z[..., 1:]), atol=1e-6)
    assert float(logdet.abs()) < 1e-6


def test_fixed_bases_are_not_stored_in_checkpoints(tmp_path):
    model = farmer.Farmer(farmer.presets["tiny"].replace(channel_mixing="dct"))
    assert not [k for k in model.state_dict() if k.startswith("mixing")]
    lu = farmer.Farmer(farmer.presets["tiny"].replace(channel_mixing="lu"))
    with torch.no_grad():
        lu.mixing.log_s.add_(0.1)
    farmer.save(lu, tmp_path / "lu")
    back = farmer.load(tmp_path / "lu")
    assert torch.equal(back.mixing.matrix(), lu.mixing.matrix())
    assert make_mixing("none", 1, 2) is None
