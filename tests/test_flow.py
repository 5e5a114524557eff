"""The autoregressive flow: invertibility, exact log-det, causality, KV cache (DESIGN §1.1)."""
import pytest
import torch

import farmer
from farmer.data import dequantize_uniform
from farmer.layers import patchify, unpatchify
from _models import perturbed_model, random_images


def _tokens(model, batch=3, seed=0):
    x = dequantize_uniform(random_images(model.cfg, batch, seed), seed=seed)
    return patchify(x, model.cfg.patch_size)                                   # (B, N, d)


def test_patchify_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    t = patchify(x, 4)
    assert t.shape == (2, 4, 48)
    assert torch.equal(unpatchify(t, 4, 3, 8), x)
    # token 1 is the top-right patch; its first value is channel 0, row 0, column 4
    assert t[0, 1, 0] == x[0, 0, 0, 4]
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.zeros(1, 1, 7, 7), 2)


def test_fresh_flow_is_identity():
    model = farmer.Farmer(farmer.presets["tiny"]).eval()
    x = _tokens(model)
    z, logdet = model.flow(x)
    assert torch.equal(z, x)
    assert torch.all(logdet == 0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_roundtrip(use_cache):
    model = perturbed_model(scale=0.1)
    x = _tokens(model, batch=4)
    z, _ = model.flow(x)
    assert (z - x).abs().max() > 0.5                                          # a non-trivial map
    x_rec = model.flow.reverse(z, use_cache=use_cache)
    assert (x_rec - x).abs().max() < 1e-4


def test_cached_and_uncached_inverse_agree():
    model = perturbed_model(scale=0.1, seed=1)
    z = torch.randn(2, model.cfg.tokens, model.cfg.token_dim)
    a = model.flow.reverse(z, use_cache=True)
    b = model.flow.reverse(z, use_cache=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_decode_roundtrip_through_model():
    model = perturbed_model(scale=0.1, seed=2)
    x = dequantize_uniform(random_images(model.cfg, 2), seed=0)
    z, _ = model.encode(x)
    for decoder in ("sequential", "sequential_nocache"):
        assert (model.decode(z, decoder=decoder) - x).abs().max() < 1e-4


def test_logdet_matches_autograd_jacobian():
    model = perturbed_model(scale=0.1, seed=3).double()
    x = _tokens(model, batch=1).double()                                       # (1, N, d)
    shape = x.shape
    f = lambda v: model.flow(v.reshape(shape))[0].reshape(-1)                  # noqa: E731
    J = torch.autograd.functional.jacobian(f, x.reshape(-1))                  # (N·d, N·d)
    _, logabsdet = torch.linalg.slogdet(J)
    _, logdet = model.flow(x)
    assert logdet.item() == pytest.approx(logabsdet.item(), abs=1e-8)
    # the per-dimension terms sum to the same number
    _, terms = model.flow(x, return_terms=True)
    assert terms.shape == (1, model.cfg.flow_blocks, *shape[1:])
    assert terms.sum().item() == pytest.approx(logabsdet.item(), abs=1e-8)


@pytest.mark.parametrize("t", [0, 1])
def test_block_is_causal_in_its_order(t):
    """∂z_i/∂x_j = 0 for every token j after i in block t's order (block 1 runs reversed)."""
    model = perturbed_model(scale=0.3, seed=4).double()
    block = model.flow.blocks[t]
    x = _tokens(model, batch=1).double()
    _, N, d = x.shape
    J = torch.autograd.functional.jacobian(lambda v: block(v)[0], x)[0, :, :, 0]  # (N, d, N, d)
    dep = J.abs().sum((1, 3))                                                  # (N, N): out token i <- in token j
    order = torch.arange(N).flip(0) if block.reverse_order else torch.arange(N)
    rank = torch.empty(N, dtype=torch.long)
    rank[order] = torch.arange(N)                                              # position of each token in block order
    later = rank[None, :] > rank[:, None]                                      # j comes after i
    assert dep[later].max() == 0
    earlier = rank[None, :] < rank[:, None]
    assert dep[earlier].max() > 0                                              # and it does use the past
    first = order[0]
    assert torch.equal(block(x)[0][0, first], x[0, first])                     # first token passes unchanged
    # the diagonal (token i w.r.t. itself) is diagonal: an elementwise affine map
    diag = J[torch.arange(N), :, torch.arange(N), :]                           # (N, d, d)
    off = diag - torch.diag_embed(torch.diagonal(diag, dim1=1, dim2=2))
    assert off.abs().max() == 0


def test_kv_cached_steps_equal_full_pass():
    model = perturbed_model(scale=0.3, seed=5)
    block = model.flow.blocks[1]
    x = block.order(_tokens(model, batch=2))
    pos = block.ordered_pos()
    mu_full, a_full = block.shift_params(x, pos)
    cache = block.trunk.new_cache()
    steps = [block.shift_params(x[:, i:i + 1], pos[i:i + 1], cache=cache) for i in range(x.shape[1])]
    mu_step = torch.cat([m for m, _ in steps], 1)
    a_step = torch.cat([a for _, a in steps], 1)
    assert torch.allclose(mu_full, mu_step, atol=1e-5)
    assert torch.allclose(a_full, a_step, atol=1e-5)
