"""Tweedie denoising against the closed form (DESIGN §1.8, farmer/denoise.py).

A model whose density is known exactly: a fresh flow is the identity
(zero-initialised output projections), and with the AR heads' weights set to
zero every token's mixture is its bias. With K = 1 every latent dimension is
then an independent Gaussian N(m_j, s_j²), so ∇ log p(x) = −(z − m)/s² per
latent dimension, carried back through the (orthonormal) channel mixing, and
the Tweedie step x + σ²∇ log p(x) is known in closed form.
"""
import pytest
import torch

import farmer
from farmer.denoise import score, tweedie_denoise
from farmer.mixing import patch_basis


def gaussian_model(mixing: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = farmer.presets["tiny"].replace(k_informative=1, k_redundant=1, channel_mixing=mixing)
    model = farmer.Farmer(cfg)
    d_i, d_r = cfg.d_i, cfg.d_r
    m = torch.randn(d_i + d_r) * 0.3
    log_s = torch.rand(d_i + d_r) * 0.6 - 0.8                                  # s in (0.45, 0.82)
    with torch.no_grad():
        for head, sl, D in ((model.ar.head_informative, slice(0, d_i), d_i),
                            (model.ar.head_redundant, slice(d_i, None), d_r)):
            head.weight.zero_()
            flat = head.bias[1:].view(1, 2, D)                                 # layout [logits | (K, 2, D)]
            flat[:, 0] = m[sl]
            flat[:, 1] = log_s[sl]
    return model.train(), m, log_s.exp()                                       # training mode on purpose


@pytest.mark.parametrize("mixing", ["none", "dct"])
def test_tweedie_step_is_the_gaussian_posterior_mean(mixing):
    model, m, s = gaussian_model(mixing)
    cfg = model.cfg
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    y = torch.tensor([0, 4, 9])
    sigma = 0.1
    out = tweedie_denoise(model, x, sigma, y)
    # closed form, per token: z = M·patch, d log p/dz = −(z − m)/s², d log p/d patch = Mᵀ(that)
    tokens = farmer.layers.patchify(x, cfg.patch_size).double()                # (B, N, d)
    M = patch_basis("dct", 1, cfg.patch_size) if mixing == "dct" else torch.eye(cfg.token_dim, dtype=torch.float64)
    z = tokens @ M.T
    grad_z = -(z - m.double()) / s.double() ** 2
    expected = farmer.layers.unpatchify((tokens + sigma ** 2 * grad_z @ M).float(), cfg.patch_size, 1, 8)
    assert torch.allclose(out, expected, atol=1e-5)
    assert model.training                                                      # mode restored
    assert not torch.allclose(out, x, atol=1e-3)                               # the step does something


def test_score_is_per_image_and_works_under_inference_mode():
    model, _, _ = gaussian_model("none")
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    full = score(model, x)
    with torch.inference_mode():
        again = score(model, x)
    assert torch.allclose(full, again)
    assert torch.allclose(score(model, x[1:2]), full[1:2], atol=1e-6)


def test_sample_denoise_option():
    model, _, _ = gaussian_model("none")
    model.eval()
    plain = farmer.sample(model, [1, 2], seed=3, return_intermediates=True)
    den = farmer.sample(model, [1, 2], seed=3, denoise=0.2, return_intermediates=True)
    assert den.stats["denoise"] == 0.2 and plain.stats["denoise"] == 0.0
    assert torch.equal(den.z, plain.z)                                         # same latents, new pixels
    assert not torch.equal(den.images, plain.images)
    steps = list(farmer.sampling.sample_steps(model, [1, 2], seed=3, denoise=0.2))
    assert torch.equal(steps[-1].result.images, den.images)
    for bad in (-0.1, float("nan"), 2.0, True):
        with pytest.raises(ValueError, match="denoise"):
            farmer.sample(model, [1], denoise=bad)
    with pytest.raises(ValueError, match="sigma"):
        tweedie_denoise(model, torch.zeros(1, 1, 8, 8), -1.0)
