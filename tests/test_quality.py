"""Sample-quality tools: Fréchet distance against closed forms, classifier save/load (farmer/quality.py)."""
import numpy as np
import pytest
import torch

from farmer.quality import FashionClassifier, frechet_distance, load_classifier, predict, save_classifier


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    """For commuting (diagonal) covariances FD = ‖Δμ‖² + Σ_j (σ_a,j − σ_b,j)²."""
    rng = np.random.default_rng(0)
    n, F = 200_000, 4
    mu_a, mu_b = np.array([0.0, 1.0, -1.0, 2.0]), np.array([0.5, 1.0, 0.0, 2.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.0, 1.0, 1.5, 3.0])
    a = mu_a + sd_a * rng.standard_normal((n, F))
    b = mu_b + sd_b * rng.standard_normal((n, F))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)          # = 1.25 + 6.0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_distance_is_zero_for_the_same_set_and_symmetric():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 8))
    b = rng.standard_normal((400, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    with pytest.raises(ValueError, match="feature arrays"):
        frechet_distance(a, b[:, :4])


def test_classifier_save_load_roundtrip_and_corrupt_file(tmp_path):
    torch.manual_seed(0)
    model = FashionClassifier().eval()
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    save_classifier(model, tmp_path / "clf", test_accuracy=0.5)
    loaded, cfg = load_classifier(tmp_path / "clf")
    assert cfg["test_accuracy"] == 0.5
    p0, f0 = predict(model, x)
    p1, f1 = predict(loaded, x)
    assert torch.equal(p0, p1) and torch.allclose(f0, f1) and f0.shape == (5, 128)
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_classifier(tmp_path / "clf")
    with pytest.raises(FileNotFoundError, match="no classifier"):
        load_classifier(tmp_path / "missing")
    with pytest.raises(ValueError, match="uint8"):
        model(torch.zeros(1, 1, 28, 28))


def test_shipped_classifier_matches_its_card(fmnist_dir):
    """checkpoints/fmnist-classifier: ≥ 90% stated, and the first 1,000 test images within 1 point of the card."""
    from pathlib import Path

    from farmer.data import load_fashion_mnist
    from farmer.quality import accuracy
    model, cfg = load_classifier(Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist-classifier")
    assert cfg["test_accuracy"] >= 0.90
    test = load_fashion_mnist("test", fmnist_dir)
    acc = accuracy(model, test.images[:1000], test.labels[:1000])
    assert abs(acc - cfg["test_accuracy_first_1000"]) <= 0.01


def test_sample_quality_scores_the_samples_farmer_sample_draws():
    """sample_quality = farmer.sample with balanced labels and per-batch seeds, then the classifier's
    accuracy on those labels and the FD of its features — checked against doing each step by hand."""
    import farmer
    from farmer.quality import accuracy, balanced_labels, sample_quality
    from _models import perturbed_model
    model = perturbed_model("tiny")
    cfg = model.cfg
    torch.manual_seed(0)
    clf = FashionClassifier(max(cfg.num_classes, 2), cfg.channels, cfg.image_size).eval()
    ref = torch.randn(50, 128)
    out = sample_quality(model, clf, ref, num_samples=7, batch_size=4, seed=3, return_images=True,
                         guidance="resample", cfg_scale=1.0)
    labels = balanced_labels(7, cfg.num_classes)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6]                           # 10 classes: each once
    assert torch.bincount(balanced_labels(25, 10)).tolist() == [3] * 5 + [2] * 5
    by_hand = torch.cat([farmer.sample(model, labels[:4], seed=3, guidance="resample", cfg_scale=1.0),
                         farmer.sample(model, labels[4:], seed=4, guidance="resample", cfg_scale=1.0)])
    assert torch.equal(out["images"], by_hand)
    assert out["class_consistency"] == pytest.approx(accuracy(clf, by_hand, labels))
    assert out["fd"] == pytest.approx(frechet_distance(predict(clf, by_hand)[1], ref))
    assert out["num_samples"] == 7 and out["seconds_per_image"] > 0
    with pytest.raises(ValueError, match="num_samples"):
        sample_quality(model, clf, ref, num_samples=1)
