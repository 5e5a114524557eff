"""Out-of-distribution sets, scores and AUROC (farmer.ood)."""
import io
import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from farmer.ood import (auroc, constant_images, digit_images, noise_images, ood_scores, ood_sets,
                        png_bits_per_dim, shape_images, upscale)
from _models import perturbed_model, random_images

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- AUROC
def test_auroc_extremes_and_chance():
    assert auroc([0.0, 1.0, 2.0], [3.0, 4.0]) == 1.0
    assert auroc([3.0, 4.0], [0.0, 1.0, 2.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5                           # all tied


def test_auroc_is_the_pairwise_probability_with_half_ties():
    s_in, s_out = [0.1, 0.4, 0.4, 0.9, 0.3], [0.4, 0.8, 0.2, 0.95]
    pairs = [(1.0 if o > i else 0.5 if o == i else 0.0) for i, o in itertools.product(s_in, s_out)]
    assert auroc(s_in, s_out) == pytest.approx(sum(pairs) / len(pairs))
    rng = np.random.RandomState(0)
    a, b = rng.randint(0, 20, 300).astype(float), rng.randint(3, 25, 200).astype(float)   # many ties
    sk = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[a, b])
    assert auroc(torch.tensor(a), torch.tensor(b)) == pytest.approx(sk, abs=1e-12)


def test_auroc_rejects_empty_or_non_finite_scores():
    with pytest.raises(ValueError, match="both sides"):
        auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        auroc([1.0, math.nan], [1.0])


# ---------------------------------------------------------------------------- image sets
def test_the_ood_sets_have_the_model_input_format():
    sets = ood_sets(n=20, size=28, seed=1, n_constant=5)
    assert set(sets) == {"digits", "shapes", "constant", "noise"}
    for name, x in sets.items():
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28), name
    assert [len(x) for x in sets.values()] == [20, 20, 5, 20]


def test_digits_are_upscaled_sklearn_digits_light_on_dark():
    from farmer.data import load_digits
    x = digit_images(10, size=28)
    small = torch.as_tensor(load_digits("test").images[:10])
    assert torch.equal(x, upscale(small, 28))
    assert (x[:, 0, 0, 0] < 30).all() and (x.flatten(1).max(1).values > 200).all()   # dark corners, bright strokes
    with pytest.raises(ValueError, match="1,797"):
        digit_images(5000)


def test_shapes_are_one_bright_shape_on_black_and_seeded():
    x = shape_images(40, size=28, seed=3)
    assert torch.equal(x, shape_images(40, size=28, seed=3)) and not torch.equal(x, shape_images(40, seed=4))
    for img in x[:, 0]:
        values = img.unique()
        assert len(values) == 2 and values[0] == 0 and 96 <= values[1] <= 255   # background + one grey level
        covered = (img > 0).float().mean()
        assert 0.01 < covered < 0.6
    assert x[:, 0, 0, 0].eq(0).all()                                           # corners stay black


def test_constant_and_noise_images():
    c = constant_images(5, size=8)
    assert [int(v) for v in c[:, 0, 0, 0]] == [0, 64, 128, 191, 255]
    assert all(img.unique().numel() == 1 for img in c)
    n = noise_images(50, size=8, seed=0)
    assert torch.equal(n, noise_images(50, size=8, seed=0)) and n.unique().numel() > 200
    for fn in (constant_images, noise_images, shape_images):
        with pytest.raises(ValueError, match="n"):
            fn(0)
        with pytest.raises(ValueError, match="size"):
            fn(4, size=2)


# ---------------------------------------------------------------------------- scores
def test_png_bits_per_dim_is_the_compressed_file_size():
    x = torch.cat([constant_images(1, 28), noise_images(1, 28)])
    bpd = png_bits_per_dim(x)
    buf = io.BytesIO()
    Image.fromarray(x[1, 0].numpy()).save(buf, format="PNG", optimize=True, compress_level=9)
    assert bpd[1].item() == pytest.approx(8 * buf.tell() / 784)
    assert bpd[0] < 1.0 < 8.0 < bpd[1]                                         # noise does not compress
    with pytest.raises(ValueError, match="uint8"):
        png_bits_per_dim(x.float())


def test_ood_scores_are_the_model_likelihoods():
    model = perturbed_model(seed=4)
    x = random_images(model.cfg, 6, seed=8)
    s = ood_scores(model, x, seed=2, reference_bpd=5.0)
    assert set(s) == {"bpd", "png_bpd", "complexity", "bpd_classes", "class_gain", "typicality"}
    assert all(v.shape == (6,) and v.dtype == torch.float64 for v in s.values())
    assert torch.allclose(s["bpd"], model.nll(x, None, seed=2)["bpd"].double())   # null class
    nll = torch.stack([model.nll(x, torch.full((6,), c), seed=2)["nll"] for c in range(10)], 1).double()
    evidence_bpd = -(torch.logsumexp(-nll, 1) - math.log(10)) / (model.cfg.data_dim * math.log(2))
    assert torch.allclose(s["bpd_classes"], evidence_bpd, atol=1e-5)
    assert torch.allclose(s["complexity"], s["bpd"] - png_bits_per_dim(x))
    assert torch.allclose(s["class_gain"], s["bpd_classes"] - s["bpd"])
    assert torch.allclose(s["typicality"], (s["bpd"] - 5.0).abs())
    assert "typicality" not in ood_scores(model, x[:2])
    unconditional = perturbed_model(seed=4, num_classes=0)
    assert set(ood_scores(unconditional, x[:2])) == {"bpd", "png_bpd", "complexity"}   # no classes, no class gain
    with pytest.raises(ValueError, match="uint8"):
        ood_scores(model, x.float())
