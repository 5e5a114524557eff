"""Data-dependent initialisation of the prior's mixtures (farmer/data_init.py)."""
from __future__ import annotations

import json

import pytest
import torch

import farmer
from farmer import train as tr
from farmer.config import TrainConfig, presets
from farmer.data import dequantize_uniform, load_synthetic
from farmer.data_init import SCALE_FLOOR, data_dependent_init_, fit_diagonal_gmm, kmeans

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n_per: int, centres: torch.Tensor, scales: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """n_per points around each centre (K, D) with per-dimension deviations scales (K, D)."""
    g = torch.Generator().manual_seed(seed)
    K, D = centres.shape
    return (centres[:, None] + scales[:, None] * torch.randn(K, n_per, D, generator=g)).reshape(-1, D)


def test_kmeans_finds_separated_clusters():
    centres = torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
    x = blobs(300, centres, torch.full((3, 2), 0.3))
    found, assign = kmeans(x, 3, generator=torch.Generator().manual_seed(1))
    order = torch.cdist(centres, found).argmin(1)                             # match each true centre
    assert sorted(order.tolist()) == [0, 1, 2]
    assert torch.allclose(found[order], centres, atol=0.06)                   # 0.3/√300 ≈ 0.017 std error
    assert torch.equal(torch.bincount(assign, minlength=3), torch.tensor([300, 300, 300]))


def test_fitted_gmm_matches_the_generating_mixture():
    # 3 components with unequal shares and per-dimension scales; the fit must recover all three parameters
    centres = torch.tensor([[-5.0, 1.0, 0.0], [0.0, -3.0, 2.0], [5.0, 5.0, -5.0]])
    scales = torch.tensor([[0.5, 1.0, 0.2], [0.3, 0.3, 0.3], [1.0, 0.1, 0.6]])
    x = torch.cat([blobs(n, centres[k:k + 1], scales[k:k + 1], seed=k) for k, n in enumerate((1000, 2000, 1000))])
    g = fit_diagonal_gmm(x, 3, generator=torch.Generator().manual_seed(0))
    order = torch.cdist(centres, g.means).argmin(1)
    assert torch.allclose(torch.softmax(g.logits, -1)[order], torch.tensor([0.25, 0.5, 0.25]), atol=1e-6)
    assert torch.allclose(g.means[order], centres, atol=0.08)
    assert torch.allclose(g.log_scales[order].exp(), scales, rtol=0.08)


def test_more_clusters_than_distinct_points_stay_finite():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]).repeat(20, 1)    # 3 distinct points, K = 5
    centres, assign = kmeans(x, 5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(centres).all() and assign.shape == (60,)
    assert torch.cdist(centres, x[:3]).min(1).values.max() < 1e-6            # every centre sits on a data point
    g = fit_diagonal_gmm(x, 5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(g.log_prob(x)).all()


def test_scales_are_floored_for_a_point_mass():
    x = torch.cat([torch.zeros(50, 2), torch.ones(50, 2)])                    # two exact atoms
    g = fit_diagonal_gmm(x, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(g.log_scales.exp(), torch.full((2, 2), SCALE_FLOOR))
    with pytest.raises(ValueError, match="at least K = 5"):
        kmeans(torch.zeros(3, 2), 5)


@pytest.mark.parametrize("mode", ["split", "none", "jetformer"])
def test_init_puts_the_fitted_mixture_at_every_position(mode):
    torch.manual_seed(0)
    model = farmer.Farmer(presets["tiny"].replace(redundant_mode=mode)).eval()
    ds = load_synthetic("train", 8, 1, 10, n=64)
    x = dequantize_uniform(ds.images, 0)                                      # (64, 1, 8, 8)
    report = data_dependent_init_(model, x, seed=3)
    assert report["bpd_after"] < report["bpd_before"]
    # the same fit, recomputed from the latents: the prior's NLL of every token is that mixture's NLL
    z, _ = model.encode(x)
    z_inf, z_red = model.split(model.ar_order(z))
    g = torch.Generator().manual_seed(3)
    fit_inf = fit_diagonal_gmm(z_inf.reshape(-1, z_inf.shape[-1]), model.cfg.k_informative, generator=g)
    t = model(x, None, detail=True)
    want = -fit_inf.log_prob(z_inf).flip(1) if model.cfg.final_permute == "reverse" else -fit_inf.log_prob(z_inf)
    assert torch.allclose(t["token_informative"], want, atol=1e-4)
    if mode == "split":
        fit_red = fit_diagonal_gmm(z_red.reshape(-1, z_red.shape[-1]), model.cfg.k_redundant, generator=g)
        assert torch.allclose(t["prior_redundant"], -fit_red.log_prob(z_red).sum(1), atol=1e-3)
    else:
        assert model.ar.head_redundant is None


def test_init_rejects_images_of_the_wrong_shape():
    model = farmer.Farmer(presets["tiny"])
    with pytest.raises(ValueError, match="x"):
        data_dependent_init_(model, torch.zeros(4, 1, 9, 9))


def test_training_with_data_init_starts_lower_and_resumes_exactly(tmp_path, monkeypatch):
    data = load_synthetic("train", 8, 1, 10, n=128)
    cfg = dict(batch_size=16, steps=10, lr=2e-3, warmup_steps=3, ckpt_every=5, log_every=1, sample_every=0,
               ema_decay=0.9, device="cpu")
    lines: list[str] = []
    plain = tr.train(presets["tiny"], TrainConfig(**cfg), tmp_path / "plain", dataset=data, progress=False,
                     log=lambda s: None)
    full = tr.train(presets["tiny"], TrainConfig(**cfg, data_init=64), tmp_path / "init", dataset=data,
                    progress=False, log=lines.append)
    assert any("data-dependent init" in ln for ln in lines)
    first = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0])["bpd"] for d in ("plain", "init")]
    assert first[1] < first[0] - 0.5                                          # the step-1 loss starts far lower
    # killed at step 7 (after the step-5 checkpoint) and resumed: the same weights as the uninterrupted run
    orig, calls = tr.ema_update, {"n": 0}
    def crash_at_7(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        orig(*a, **k)
    monkeypatch.setattr(tr, "ema_update", crash_at_7)
    with pytest.raises(KeyboardInterrupt):
        tr.train(presets["tiny"], TrainConfig(**cfg, data_init=64), tmp_path / "cut", dataset=data,
                 progress=False, log=lambda s: None)
    monkeypatch.setattr(tr, "ema_update", orig)
    res = tr.train(presets["tiny"], TrainConfig(**cfg, data_init=64), tmp_path / "cut", dataset=data,
                   progress=False, log=lambda s: None, resume=True)
    for (k, p), q in zip(full.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(p, q), k
    assert not all(torch.equal(p, q) for p, q in zip(full.model.parameters(), plain.model.parameters()))


def test_negative_data_init_is_refused():
    with pytest.raises(ValueError, match="data_init"):
        TrainConfig(data_init=-1).validate()
