"""Farmer: the NLL terms, exact likelihood maps, presets and input validation (DESIGN §1.6, §5)."""
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import farmer
from farmer.data import dequantize_uniform
from farmer.layers import patchify
from farmer.likelihood import bits_per_dim, discrete_nll
from _models import perturbed_model, random_images

LN128 = math.log(128)


def test_nll_terms_and_units():
    model = perturbed_model()
    D = model.cfg.data_dim
    x = random_images(model.cfg, 4)
    t = model.nll(x, torch.tensor([0, 1, 2, 3]), seed=0)
    assert set(t) == {"prior_informative", "prior_redundant", "logdet", "nll", "bpd"}
    for v in t.values():
        assert v.shape == (4,) and torch.isfinite(v).all()
    expected = t["prior_informative"] + t["prior_redundant"] - t["logdet"] + D * LN128
    assert torch.allclose(t["nll"], expected)
    assert torch.allclose(t["bpd"], t["nll"] / (D * math.log(2)))


def test_seed_fixes_the_dequantisation_noise():
    model = perturbed_model()
    x = random_images(model.cfg, 2)
    a, b = model.nll(x, seed=3)["nll"], model.nll(x, seed=3)["nll"]
    c = model.nll(x, seed=4)["nll"]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("mode", ["split", "none", "jetformer"])
def test_nll_matches_brute_force_sum(mode):
    """log p(x) = Σ_i log G_i(z_i^I) + Σ_i log G_{N+1}(z_i^R) + log|det J|, term by term, J by autograd."""
    model = perturbed_model(redundant_mode=mode, seed=1).double()
    cfg = model.cfg
    q = random_images(cfg, 2, seed=1)
    y = torch.tensor([4, 7])
    x = dequantize_uniform(q, seed=0).double()
    terms = model(x, y)
    for b in range(2):
        tokens = patchify(x[b:b + 1], cfg.patch_size)
        f = lambda v: model.flow(v.reshape(tokens.shape))[0].reshape(-1)        # noqa: E731
        logdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(f, tokens.reshape(-1)))[1]
        z = model.flow(tokens)[0][0]                                             # (N, d) raster order
        z_ar = z.flip(0) if cfg.final_permute == "reverse" else z
        z_inf, z_red = z_ar[:, :cfg.d_i], z_ar[:, cfg.d_i:]
        g_inf, g_red = model.ar(z_inf[None], y[b:b + 1])
        log_p = 0.0
        for i in range(cfg.tokens):                                              # one mixture per token
            g = g_inf.index((0, i))
            mix = MixtureSameFamily(Categorical(logits=g.logits),
                                    Independent(Normal(g.means, g.log_scales.exp()), 1))
            log_p += mix.log_prob(z_inf[i])
            if mode == "split":
                r = g_red.index(0)
                shared = MixtureSameFamily(Categorical(logits=r.logits),
                                           Independent(Normal(r.means, r.log_scales.exp()), 1))
                log_p += shared.log_prob(z_red[i])
            elif mode == "jetformer":
                log_p += Normal(0.0, 1.0).log_prob(z_red[i]).sum()
        model_log_p = -(terms["prior_informative"][b] + terms["prior_redundant"][b]) + terms["logdet"][b]
        assert model_log_p.item() == pytest.approx((log_p + logdet).item(), abs=1e-7)
        assert terms["logdet"][b].item() == pytest.approx(logdet.item(), abs=1e-8)


def test_log_likelihood_is_invariant_to_batch_composition():
    model = perturbed_model(seed=2)
    x = dequantize_uniform(random_images(model.cfg, 6, seed=2), seed=0)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    full = model(x, y)
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    shuffled = model(x[perm], y[perm])
    alone = [model(x[i:i + 1], y[i:i + 1]) for i in range(6)]
    for key in ("prior_informative", "prior_redundant", "logdet"):
        assert torch.allclose(shuffled[key], full[key][perm], atol=1e-4)
        assert torch.allclose(torch.cat([a[key] for a in alone]), full[key], atol=1e-4)


def test_uniform_density_scores_eight_bits_per_dim():
    """A density uniform on [−1, 1]^D has log p = −D ln 2: exactly 8 bits/dim once the ×128 rescale is counted."""
    D = 784
    log_px = torch.tensor([-D * math.log(2.0)])
    assert bits_per_dim(discrete_nll(log_px, D), D).item() == pytest.approx(8.0, abs=1e-12)


def test_likelihood_map_sums_to_total_bits():
    model = perturbed_model(seed=3)
    cfg = model.cfg
    x = random_images(cfg, 3, seed=3)
    y = torch.tensor([1, 2, 3])
    maps = farmer.likelihood_map(model, x, y, seed=5)
    t = model.nll(x, y, seed=5)
    D = cfg.data_dim
    assert maps["pixel_bits"].shape == (3, cfg.channels, cfg.image_size, cfg.image_size)
    assert torch.allclose(maps["pixel_bits"].sum((1, 2, 3)), t["bpd"] * D, rtol=1e-5)
    assert torch.allclose(maps["token_bits"].sum(1), t["bpd"] * D, rtol=1e-5)
    assert maps["block_logdet"].shape == (3, cfg.flow_blocks)
    assert torch.allclose(maps["block_logdet"].sum(1), t["logdet"], atol=1e-4)
    assert torch.allclose(maps["token_prior_bits"].sum(1) * math.log(2),
                          t["prior_informative"] + t["prior_redundant"], rtol=1e-5)
    split = maps["prior_informative_bits"] + maps["prior_redundant_bits"] - maps["logdet_bits"] + D * 7
    assert torch.allclose(split, t["bpd"] * D, rtol=1e-5)


def test_likelihood_map_follows_the_pixel():
    """Changing one pixel's value changes its own map entry; earlier pixels in every block's order don't move
    under a flow with a single block (first block runs in raster order)."""
    model = perturbed_model(seed=4, flow_blocks=1)
    x = random_images(model.cfg, 1, seed=4)
    x2 = x.clone()
    x2[0, 0, 7, 7] = 255 - x2[0, 0, 7, 7]                                        # last pixel of the last patch
    a = farmer.likelihood_map(model, x, None, seed=0)["pixel_bits"]
    b = farmer.likelihood_map(model, x2, None, seed=0)["pixel_bits"]
    diff = (a - b).abs()[0, 0]
    assert diff[7, 7] > 0
    assert diff[:6].max() == 0                                                   # patches before the last row of patches


@pytest.mark.parametrize("name,ar_m,af_m", [("farmer-1.1b-p16", 295, 828), ("farmer-1.9b-p16", 498, 1400)])
def test_paper_presets_match_table_1(name, ar_m, af_m):
    with torch.device("meta"):
        model = farmer.Farmer(farmer.presets[name])
    n = model.num_parameters()
    assert abs(n["ar"] / 1e6 - ar_m) / ar_m < 0.10, n
    assert abs(n["flow"] / 1e6 - af_m) / af_m < 0.10, n


@pytest.mark.parametrize("name,af_m", [("farmer-1.1b-p8", 828), ("farmer-1.9b-p8", 1400)])
def test_paper_p8_presets_flow_size(name, af_m):
    with torch.device("meta"):
        model = farmer.Farmer(farmer.presets[name])
    assert model.cfg.tokens == 1024 and model.cfg.token_dim == 192
    assert abs(model.num_parameters()["flow"] / 1e6 - af_m) / af_m < 0.10


def test_small_presets_exist_and_run():
    for name in ("tiny", "digits", "fmnist"):
        cfg = farmer.presets[name]
        model = farmer.Farmer(cfg).eval()
        t = model.nll(random_images(cfg, 2), torch.tensor([0, 1]))
        assert torch.isfinite(t["bpd"]).all()
    fm = farmer.presets["fmnist"]
    assert (fm.tokens, fm.token_dim) == (49, 16)


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def model():
    return perturbed_model()


@pytest.mark.parametrize("x,match", [
    (lambda c: torch.rand(2, 1, 8, 8), "uint8"),
    (lambda c: torch.zeros(2, 1, 9, 8, dtype=torch.uint8), "shape"),
    (lambda c: torch.zeros(1, 8, 8, dtype=torch.uint8), "shape"),
    (lambda c: torch.zeros(0, 1, 8, 8, dtype=torch.uint8), "B >= 1"),
    (lambda c: [[0]], "torch.Tensor"),
])
def test_nll_rejects_bad_images(model, x, match):
    with pytest.raises(ValueError, match=match):
        model.nll(x(model.cfg))
    with pytest.raises(ValueError, match=match):
        farmer.likelihood_map(model, x(model.cfg))


@pytest.mark.parametrize("y,match", [
    (torch.tensor([0, 10]), "outside 0..9"),
    (torch.tensor([-1, 0]), "outside 0..9"),
    (torch.tensor([0, 1, 2]), "shape"),
    (torch.tensor([0.0, 1.0]), "integer"),
    ([0, 1], "integer"),
])
def test_nll_rejects_bad_labels(model, y, match):
    x = random_images(model.cfg, 2)
    with pytest.raises(ValueError, match=match):
        model.nll(x, y)


def test_unconditional_model_rejects_labels():
    m = farmer.Farmer(farmer.presets["tiny"].replace(num_classes=0))
    with pytest.raises(ValueError, match="unconditional"):
        m.nll(random_images(m.cfg, 1), torch.tensor([0]))


def test_encode_decode_reject_bad_input(model):
    with pytest.raises(ValueError, match="NaN"):
        model.encode(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="float"):
        model.encode(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(B, 16, 4\)"):
        model.decode(torch.zeros(1, 15, 4))
    with pytest.raises(ValueError, match="decoder must be one of"):
        model.decode(torch.zeros(1, 16, 4), decoder="magic")
    with pytest.raises(ValueError, match="distilled student"):
        model.decode(torch.zeros(1, 16, 4), decoder="distilled")


def test_non_finite_and_out_of_range_values_are_refused_by_name(model):
    """DESIGN §5: bad values raise ValueError naming the argument (NaN latents used to decode to NaN
    images, and an image at 5.0 encoded to a log-det of hundreds of nats)."""
    from farmer.model import ENCODE_LIMIT
    z = torch.zeros(2, 16, 4)
    z[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"z contains NaN or inf values \(1 of 128\)"):
        model.decode(z)
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        model.decode(torch.full((1, 16, 4), float("inf")), decoder="jacobi")
    with pytest.raises(ValueError, match="z must be a float tensor"):
        model.decode(torch.zeros(1, 16, 4, dtype=torch.long))
    far = torch.zeros(1, 1, 8, 8)
    far[0, 0, 0, 0] = 5.0
    with pytest.raises(ValueError, match=r"x_float must be images in \[-1, 1\].*\|x\| <= 3.*5"):
        model.encode(far)
    with pytest.raises(ValueError, match="x_float contains NaN or inf"):
        model.encode(torch.full((1, 1, 8, 8), float("-inf")))
    # noised data a little past ±1 (Gaussian training noise) is still an image of the data
    near = torch.full((1, 1, 8, 8), -1.3)
    z_near, ld = model.encode(near)
    assert torch.isfinite(z_near).all() and torch.isfinite(ld).all() and ENCODE_LIMIT == 3.0
    model.encode(torch.full((1, 1, 8, 8), ENCODE_LIMIT))                  # the limit itself is accepted
    # nll and likelihood_map take uint8 pixels only, so a float (possibly NaN) image is refused by name
    with pytest.raises(ValueError, match="x must be uint8"):
        model.nll(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="x must be uint8"):
        farmer.likelihood_map(model, torch.full((1, 1, 8, 8), float("nan")))


@pytest.mark.parametrize("changes,match", [
    (dict(patch_size=3), "not divisible by patch_size"),
    (dict(redundant_mode="gaussian"), "redundant_mode"),
    (dict(d_informative=4), r"d_informative must be in \[1, d-1\]"),
    (dict(flow_width=30, flow_heads=4), "flow_heads"),
    (dict(label_dropout=1.5), "label_dropout"),
    (dict(flow_blocks=0), "flow_blocks"),
])
def test_config_rejects_inconsistent_fields(changes, match):
    with pytest.raises(ValueError, match=match):
        farmer.presets["tiny"].replace(**changes)


def test_constructor_rejects_non_config():
    with pytest.raises(ValueError, match="FarmerConfig"):
        farmer.Farmer("fmnist")
    with pytest.raises(ValueError, match="unknown field"):
        farmer.FarmerConfig.from_dict({"image_size": 8, "colour": 3})
