"""farmer.sample: decoders, seeds, guidance wiring, intermediates, argument checks (DESIGN §1.5, §5)."""
import numpy as np
import pytest
import torch

import farmer
from farmer import checkpoint
from farmer.cli import main as cli_main
from farmer.distill import make_student
from farmer.layers import unpatchify
from farmer.sampling import image_grid, sample_latents
from _models import perturbed_model

LABELS = [0, 3, 7, 9]


@pytest.fixture(scope="module")
def model():
    return perturbed_model(seed=0)


@pytest.mark.parametrize("mode", ["split", "jetformer", "none"])
@pytest.mark.parametrize("guidance", ["none", "naive", "resample"])
def test_cached_and_uncached_decoders_give_the_same_images(mode, guidance):
    m = perturbed_model(seed=1, redundant_mode=mode)
    a = farmer.sample(m, LABELS, guidance=guidance, decoder="sequential", seed=3, return_intermediates=True)
    b = farmer.sample(m, LABELS, guidance=guidance, decoder="sequential_nocache", seed=3,
                      return_intermediates=True)
    assert a.images.dtype == torch.uint8 and a.images.shape == (4, 1, 8, 8)
    assert torch.equal(a.z, b.z)                                               # same AR draws
    for x, y in zip(a.block_images, b.block_images):
        assert (x - y).abs().max() < 1e-4
    assert torch.equal(a.images, b.images)
    assert a.images.float().std() > 5                                          # not a blank image


@pytest.mark.parametrize("guidance", ["none", "naive", "resample"])
def test_same_seed_same_images_different_seed_different_images(model, guidance):
    a = farmer.sample(model, LABELS, guidance=guidance, seed=0)
    b = farmer.sample(model, LABELS, guidance=guidance, seed=0)
    c = farmer.sample(model, LABELS, guidance=guidance, seed=1)
    assert torch.equal(a, b)
    assert (a.int() - c.int()).abs().float().mean() > 5


@pytest.mark.parametrize("guidance", ["naive", "resample"])
def test_zero_guidance_weight_is_conditional_sampling(model, guidance):
    """w = 0: p′ = p_c, so both rules are the unguided draw (the same random stream, even)."""
    none = farmer.sample(model, LABELS, guidance="none", seed=4)
    assert torch.equal(farmer.sample(model, LABELS, guidance=guidance, cfg_scale=0.0, seed=4), none)
    guided = farmer.sample(model, LABELS, guidance=guidance, cfg_scale=3.0, seed=4)
    assert not torch.equal(guided, none)


def test_guidance_runs_cond_and_uncond_as_one_batch(model):
    """One AR trunk call per step on a batch of 2B = [labels; null], not two loops."""
    calls = {}

    def hook(_, inputs):
        calls.setdefault(inputs[0].shape[0], []).append(inputs[0].shape[1])

    handle = model.ar.trunk.register_forward_pre_hook(hook)
    try:
        farmer.sample(model, LABELS, guidance="none", seed=0)
        plain = dict(calls)
        calls.clear()
        farmer.sample(model, LABELS, guidance="resample", cfg_scale=2.0, seed=0)
    finally:
        handle.remove()
    assert set(plain) == {4} and set(calls) == {8}
    N, M = model.cfg.tokens, model.cfg.condition_repeat
    # the prefix (M slots), then one slot per call: N tokens and the redundant query
    assert calls[8] == plain[4] == [M] + [1] * (N + 1)


def test_intermediates_are_consistent(model):
    r = farmer.sample(model, LABELS, guidance="resample", cfg_scale=2.0, seed=2, return_intermediates=True)
    cfg = model.cfg
    B, N = len(LABELS), cfg.tokens
    assert r.tokens.shape == (B, N, cfg.d_i) and r.redundant.shape == (B, N, cfg.d_r)
    assert torch.equal(r.z, model.ar_order(torch.cat([r.tokens, r.redundant], -1)))
    assert torch.equal(r.latent_image, unpatchify(r.z, cfg.patch_size, cfg.channels, cfg.image_size))
    assert len(r.block_images) == cfg.flow_blocks
    assert torch.equal(farmer.data.quantize(r.block_images[-1]), r.images)
    assert torch.equal(farmer.data.quantize(model.decode(r.z)), r.images)
    # the redundant group: N draws per image from one shared candidate pool
    assert r.stats["guidance"] == "resample" and r.stats["draws"] == B * N + B * N
    # the latents are the AR's own: sample_latents draws the same ones for the same seed
    z = sample_latents(model, LABELS, guidance="resample", cfg_scale=2.0, seed=2)
    assert torch.equal(z, r.z)


def test_naive_stats_count_fallbacks(model):
    r = farmer.sample(model, LABELS, guidance="naive", cfg_scale=2.0, seed=0, return_intermediates=True)
    cfg = model.cfg
    assert r.stats["elements"] == len(LABELS) * cfg.tokens * cfg.token_dim
    assert 0 <= r.stats["fallbacks"] <= r.stats["elements"]


def test_unconditional_sampling(model):
    imgs = farmer.sample(model, None, num_samples=3, guidance="resample", seed=0)
    assert imgs.shape == (3, 1, 8, 8)
    uncond = perturbed_model(num_classes=0)
    assert farmer.sample(uncond, None, num_samples=2).shape == (2, 1, 8, 8)
    one = farmer.sample(model, 5, num_samples=3, seed=0)                       # one label, repeated
    assert torch.equal(one, farmer.sample(model, [5, 5, 5], seed=0))


def test_distilled_decoder_uses_the_student():
    m = perturbed_model(seed=0)
    with pytest.raises(ValueError, match="decoder"):
        farmer.sample(m, LABELS, decoder="distilled")
    m.student = make_student(m)
    r = farmer.sample(m, LABELS, decoder="distilled", seed=0, return_intermediates=True)
    cfg = m.cfg
    tokens = m.student(r.z)
    assert torch.equal(farmer.data.quantize(unpatchify(tokens, cfg.patch_size, cfg.channels, cfg.image_size)),
                       r.images)
    assert len(r.block_images) == cfg.flow_blocks


@pytest.mark.parametrize("kwargs, name", [
    (dict(guidance="cfg++"), "guidance"),
    (dict(decoder="bogus"), "decoder"),
    (dict(guidance="resample", cfg_scale=-1.0), "cfg_scale"),
    (dict(guidance="resample", candidates_cond=0, candidates_uncond=0), "candidates"),
    (dict(guidance="resample", candidates_cond=-2), "candidates_cond"),
    (dict(labels=[0, 10]), "labels"),
    (dict(labels=[-1]), "labels"),
    (dict(labels=[0.5]), "labels"),
    (dict(labels=None), "num_samples"),
    (dict(labels=[1, 2], num_samples=3), "num_samples"),
    (dict(t_sigma=0.0), "t_sigma"),
    (dict(t_pi_verify=-1.0), "t_pi_verify"),
    (dict(redundant_pool=(0, 0)), "redundant_pool"),
    (dict(max_tries=0), "max_tries"),
    (dict(seed=1.5), "seed"),
])
def test_bad_arguments_raise_value_errors_naming_them(model, kwargs, name):
    kwargs = {"labels": LABELS, **kwargs}
    labels = kwargs.pop("labels")
    with pytest.raises(ValueError, match=name):
        farmer.sample(model, labels, **kwargs)


def test_image_grid_layout():
    imgs = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).reshape(5, 3, 2, 2)
    grid = image_grid(imgs, nrow=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)
    assert np.array_equal(grid[1:3, 1:3], imgs[0].permute(1, 2, 0).numpy())
    assert np.array_equal(grid[4:6, 4:6], imgs[4].permute(1, 2, 0).numpy())


def test_cli_sample_writes_png_and_npy(tmp_path, model):
    from PIL import Image
    ckpt = checkpoint.save(model, tmp_path / "ckpt")
    out = tmp_path / "grid.png"
    rc = cli_main(["sample", str(ckpt), "--labels", "0,3", "7", "--repeat", "2", "--guidance", "resample",
                   "--cfg", "2.5", "--seed", "7", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    arr = np.load(tmp_path / "grid.npy")
    assert arr.dtype == np.uint8 and arr.shape == (6, 1, 8, 8)
    expected = farmer.sample(model, [0, 0, 3, 3, 7, 7], guidance="resample", cfg_scale=2.5, seed=7)
    assert np.array_equal(arr, expected.numpy())
    png = np.asarray(Image.open(out))
    assert png.shape == image_grid(expected, nrow=2).shape[:2]


def test_undersized_redundant_pool_is_refused_and_the_default_pool_is_raised(model):
    from farmer.sampling import MIN_POOL_PER_TOKEN, _pools
    n = model.cfg.tokens
    for pool in (n, (n, 0), (0, 2 * n), (MIN_POOL_PER_TOKEN * n - 1, 0)):
        with pytest.raises(ValueError, match="redundant_pool"):
            farmer.sample(model, LABELS, guidance="resample", redundant_pool=pool)
    # a pool of conditional candidates only is fine once it is large enough
    farmer.sample(model, LABELS, guidance="resample", redundant_pool=(MIN_POOL_PER_TOKEN * n, 0))
    # the default pool N·(s_c, s_u) is scaled up, keeping its ratio, when s_c + s_u is small
    assert _pools(None, 1, 1, n) == (3 * n, 3 * n)
    assert _pools(None, 5, 5, n) == (5 * n, 5 * n)
    farmer.sample(model, LABELS, guidance="resample", candidates_cond=1, candidates_uncond=1)


def test_default_resampling_weights_are_exact_and_table6_is_available_by_name(model):
    import inspect
    from farmer.guidance import EXACT_WEIGHTS, TABLE6_WEIGHTS
    params = inspect.signature(farmer.sample).parameters
    assert {k: params[k].default for k in EXACT_WEIGHTS} == EXACT_WEIGHTS == \
        {"t_pi_verify": 1.0, "t_sigma_verify": 1.0, "t_select": 1.0}
    exact = farmer.sample(model, LABELS, guidance="resample", cfg_scale=2.0, seed=3)
    assert torch.equal(exact, farmer.sample(model, LABELS, guidance="resample", cfg_scale=2.0, seed=3,
                                            **EXACT_WEIGHTS))
    table6 = farmer.sample(model, LABELS, guidance="resample", cfg_scale=2.0, seed=3, **TABLE6_WEIGHTS)
    assert not torch.equal(exact, table6)                           # the weights change the picks
