"""The AR prior: teacher forcing vs KV-cached stepping, causality, the redundant head (DESIGN §1.2–1.3)."""
import pytest
import torch

import farmer
from _models import perturbed_model


def _params(g):
    return torch.cat([g.logits.flatten(), g.means.flatten(), g.log_scales.flatten()])


@pytest.mark.parametrize("mode", ["split", "none", "jetformer"])
def test_cached_steps_equal_teacher_forcing(mode):
    model = perturbed_model(redundant_mode=mode)
    ar, cfg = model.ar, model.cfg
    B, N = 3, cfg.tokens
    z = torch.randn(B, N, cfg.d_i)
    y = torch.tensor([1, 5, cfg.num_classes])                                   # includes the null class
    g_inf, g_red = ar(z, y)
    cache = ar.new_cache()
    steps = [ar.begin(y, cache)]
    for i in range(N):
        g = ar.step(z[:, i], i, cache)
        if i < N - 1:
            steps.append(g)
        else:
            assert g is None
    for i, g in enumerate(steps):
        assert torch.allclose(_params(g), _params(g_inf.index((slice(None), i))), atol=1e-5)
    red = ar.redundant(cache)
    if mode == "split":
        assert torch.allclose(_params(red), _params(g_red), atol=1e-5)
    else:
        assert red is None and g_red is None


def test_informative_mixture_of_token_i_sees_only_earlier_tokens():
    model = perturbed_model()
    cfg = model.cfg
    z = torch.randn(1, cfg.tokens, cfg.d_i, requires_grad=True)
    g_inf, g_red = model.ar(z, torch.tensor([2]))
    for i in (0, 3, cfg.tokens - 1):
        (grad,) = torch.autograd.grad(g_inf.means[0, i].sum() + g_inf.logits[0, i].sum(), z, retain_graph=True)
        used = grad[0].abs().sum(-1) > 0                                        # (N,)
        assert not used[i:].any(), f"G_{i} depends on tokens >= {i}"
        assert used[:i].all(), f"G_{i} ignores some earlier token"
    # the shared redundant mixture G_{N+1} sees every informative token
    (grad,) = torch.autograd.grad(g_red.means.sum(), z)
    assert (grad[0].abs().sum(-1) > 0).all()


def test_class_condition_changes_every_prediction():
    model = perturbed_model()
    z = torch.randn(2, model.cfg.tokens, model.cfg.d_i)
    g_a, r_a = model.ar(z, torch.tensor([0, 0]))
    g_b, r_b = model.ar(z, torch.tensor([3, model.ar.null_class]))
    assert not torch.allclose(g_a.means[1], g_b.means[1])
    assert not torch.allclose(r_a.means[1], r_b.means[1])
    # batch entries are independent: row 0 in both calls gets different labels 0 vs 3
    assert not torch.allclose(g_a.means[0], g_b.means[0])


def test_condition_repeat_and_sequence_length():
    cfg = farmer.presets["tiny"].replace(condition_repeat=5)
    model = farmer.Farmer(cfg)
    assert model.ar.pos.shape[0] == 5 + cfg.tokens + 1                          # M + N + 1 slots


def test_label_dropout_uses_the_null_class_in_training():
    torch.manual_seed(0)
    model = perturbed_model(label_dropout=0.5)
    x = torch.rand(64, 1, 8, 8) * 2 - 1
    y = torch.zeros(64, dtype=torch.long)
    model.eval()
    cond = model(x, y)["prior_informative"]
    uncond = model(x, None)["prior_informative"]
    model.train()
    mixed = model(x, y)["prior_informative"]
    is_cond = torch.isclose(mixed, cond, atol=1e-5)
    is_null = torch.isclose(mixed, uncond, atol=1e-5)
    assert torch.all(is_cond | is_null)
    assert 10 < int(is_null.sum()) < 54                                        # about half, Binomial(64, 0.5)
