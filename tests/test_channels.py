"""The Fig. 7 experiment (farmer/channels.py): each case changes exactly what it says."""
import pytest
import torch

from farmer.channels import channel_experiment, perturb_informative, redraw_redundant

from _models import perturbed_model, random_images


def test_fig7_cases_on_a_tiny_model():
    model = perturbed_model()
    x, y = random_images(model.cfg, 6), torch.arange(6)
    out = channel_experiment(model, x, y, variance=1.0, seed=0, batch_size=4)
    for key in ("redraw_redundant", "perturb_informative", "both"):
        assert out[key] > 0
    assert out["ratio"] == pytest.approx(out["redraw_redundant"] / out["perturb_informative"])
    assert len(out["informative_std"]) == model.cfg.d_i and out["images"] == 6
    assert out["reconstruction"] < 1.0                                         # the exact inverse, ± rounding
    # batch size does not change the experiment's draws per image... but seeds do
    assert channel_experiment(model, x, y, seed=0)["perturb_informative"] > 0


def test_variance_zero_leaves_z_i_alone():
    model = perturbed_model()
    x = random_images(model.cfg, 3)
    out = channel_experiment(model, x, None, variance=0.0)
    assert out["perturb_informative"] == 0.0
    assert out["both"] == pytest.approx(out["redraw_redundant"])


def test_no_redundant_group_means_redraw_changes_nothing():
    model = perturbed_model(redundant_mode="none")
    out = channel_experiment(model, random_images(model.cfg, 3), torch.tensor([1, 2, 3]))
    assert out["redraw_redundant"] == 0.0 and out["ratio"] == 0.0 and out["perturb_informative"] > 0


def test_redraw_and_perturb_shapes_and_scale():
    model = perturbed_model()
    cfg = model.cfg
    zi = torch.randn(5, cfg.tokens, cfg.d_i)
    y = torch.full((5,), cfg.num_classes)
    g = torch.Generator().manual_seed(0)
    assert redraw_redundant(model, zi, y, 1.0, g).shape == (5, cfg.tokens, cfg.d_r)
    means = redraw_redundant(model, zi, y, 0.0, g)                             # component means only
    assert torch.isfinite(means).all()
    scale = torch.full((cfg.d_i,), 2.0)
    big = perturb_informative(torch.zeros(4000, 1, cfg.d_i), 1.0, scale, g)
    assert big.std().item() == pytest.approx(2.0, rel=0.05)


def test_bad_input():
    model = perturbed_model()
    with pytest.raises(ValueError, match="images"):
        channel_experiment(model, torch.zeros(2, 1, 8, 8))                     # float, not uint8
    with pytest.raises(ValueError, match="variance"):
        channel_experiment(model, random_images(model.cfg, 1), variance=-1)
    with pytest.raises(ValueError, match="decoder"):
        channel_experiment(model, random_images(model.cfg, 1), decoder="magic")
