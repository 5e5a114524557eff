"""The Bayes classifier (farmer.classify) and its calibration, on tiny seeded models."""
import math

import pytest
import torch

import farmer
from farmer.classify import class_log_likelihoods, evaluate_classifier, expected_calibration_error
from _models import perturbed_model, random_images

pytestmark = pytest.mark.usefixtures("one_thread")


def class_sensitive_model(seed: int = 0) -> farmer.Farmer:
    """A tiny model whose class embeddings are large, so p(x|y) really depends on y
    (a fresh model's embeddings are N(0, 0.02²): every posterior would be near uniform)."""
    model = perturbed_model(seed=seed)
    with torch.no_grad():
        model.ar.class_emb.weight.normal_(std=1.0, generator=torch.Generator().manual_seed(seed))
    return model


@pytest.fixture(scope="module")
def model():
    return class_sensitive_model()


def per_class_nll(model, x, seed):
    """(B, C) nll in nats from model.nll with labels c, one call per class."""
    B, C = x.shape[0], model.cfg.num_classes
    return torch.stack([model.nll(x, torch.full((B,), c), seed=seed)["nll"] for c in range(C)], 1)


def test_posteriors_are_normalised_and_not_trivially_uniform(model):
    x = random_images(model.cfg, 6, seed=1)
    log_post = farmer.classify(model, x, seed=0)
    assert log_post.shape == (6, model.cfg.num_classes)
    assert torch.allclose(log_post.exp().sum(1), torch.ones(6), atol=1e-5)
    assert torch.allclose(torch.logsumexp(log_post, 1), torch.zeros(6), atol=1e-5)
    assert log_post.exp().max() > 0.2                                          # the classes do matter


def test_posterior_is_the_softmax_of_the_per_class_nll_with_shared_noise(model):
    x = random_images(model.cfg, 5, seed=2)
    nll = per_class_nll(model, x, seed=3)                                      # same seed for every class
    log_post = farmer.classify(model, x, seed=3)
    assert torch.allclose(log_post, torch.log_softmax(-nll, 1), atol=1e-4)
    assert torch.allclose(class_log_likelihoods(model, x, seed=3), -nll, rtol=1e-5, atol=1e-3)
    # different noise per class would give a different answer: the noise is really shared
    mixed = torch.stack([model.nll(x, torch.full((5,), c), seed=3 + c)["nll"] for c in range(10)], 1)
    assert not torch.allclose(log_post, torch.log_softmax(-mixed, 1), atol=1e-4)


def test_k_draws_are_importance_weighted_per_class(model):
    x = random_images(model.cfg, 4, seed=4)
    k, seed = 3, 5
    nll = torch.stack([per_class_nll(model, x, seed + j) for j in range(k)], 0)   # (K, B, C)
    log_lik = torch.logsumexp(-nll, 0) - math.log(k)                              # (B, C)
    got = farmer.classify(model, x, k=k, seed=seed)
    assert torch.allclose(got, torch.log_softmax(log_lik, 1), atol=1e-4)
    assert not torch.allclose(got, farmer.classify(model, x, k=1, seed=seed), atol=1e-4)
    # per class, the same estimate as farmer.importance_weighted_nll
    iw = farmer.importance_weighted_nll(model, x, torch.full((4,), 7), k=k, seed=seed)["nll"]
    assert torch.allclose(class_log_likelihoods(model, x, k=k, seed=seed)[:, 7], -iw, rtol=1e-5, atol=1e-3)


def test_classify_scores_in_eval_mode_and_restores_the_mode(model):
    x = random_images(model.cfg, 3, seed=6)
    ref = farmer.classify(model, x)
    model.train()
    try:
        assert torch.allclose(farmer.classify(model, x), ref)                 # no label dropout
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=torch.zeros(2, 1, 8, 8)), "uint8"),
    (dict(x=torch.zeros(2, 1, 9, 9, dtype=torch.uint8)), "shape"),
    (dict(x=torch.zeros(0, 1, 8, 8, dtype=torch.uint8)), "B >= 1"),
    (dict(k=0), "k"), (dict(k=1.5), "k"), (dict(k=True), "k"), (dict(seed="0"), "seed"),
])
def test_bad_input_is_a_value_error_naming_it(model, kwargs, match):
    args = dict(x=random_images(model.cfg, 2)) | kwargs
    with pytest.raises(ValueError, match=match):
        farmer.classify(model, **args)


def test_an_unconditional_model_cannot_classify():
    model = perturbed_model(num_classes=0)
    with pytest.raises(ValueError, match="unconditional.*num_classes = 0"):
        farmer.classify(model, random_images(model.cfg, 2))


# ---------------------------------------------------------------------------- calibration
def test_ece_of_a_constructed_case_is_its_closed_form():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1, 1])
    cal = expected_calibration_error(probs, labels, bins=5)                    # edges 0, .2, .4, .6, .8, 1
    # bin (0.8, 1]: two at 0.9, one right -> |0.5 − 0.9|; bin (0.6, 0.8]: 0.7, right -> 0.3;
    # bin (0.4, 0.6]: 0.55 wrong and 0.6 (the upper edge belongs to this bin) right -> |0.5 − 0.575|
    expected = (2 * 0.4 + 1 * 0.3 + 2 * 0.075) / 5                           # 0.25
    assert cal["ece"] == pytest.approx(expected)
    assert cal["count"] == [0, 0, 2, 1, 2]
    assert cal["confidence"][:2] == [None, None] and cal["confidence"][4] == pytest.approx(0.9)
    assert cal["accuracy_per_bin"][2:] == pytest.approx([0.5, 1.0, 0.5])
    assert cal["accuracy"] == pytest.approx(3 / 5) and cal["mean_confidence"] == pytest.approx(0.73)
    assert cal["bin_edges"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1]))["ece"] == pytest.approx(0.0)
    assert expected_calibration_error(probs, torch.tensor([1, 1, 1, 1]))["ece"] == pytest.approx(0.75)


@pytest.mark.parametrize("probs, labels, bins, match", [
    (torch.tensor([[0.5, 0.6]]), torch.tensor([0]), 10, "summing to 1"),
    (torch.tensor([[-0.5, 1.5]]), torch.tensor([0]), 10, "probabilities"),
    (torch.tensor([0.5, 0.5]), torch.tensor([0]), 10, "probs must be"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([2]), 10, "labels must be in"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0.0]), 10, "integer"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0]), 0, "bins"),
])
def test_ece_rejects_bad_input(probs, labels, bins, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(probs, labels, bins=bins)


def test_evaluate_classifier_agrees_with_classify(model):
    x = random_images(model.cfg, 12, seed=7)
    y = torch.arange(12) % 10
    one = evaluate_classifier(model, x, y, batch_size=12, seed=2, bins=4)      # one batch: classify(seed=2)
    log_post = farmer.classify(model, x, seed=2).double()
    assert one["accuracy"] == pytest.approx(float((log_post.argmax(1) == y).double().mean()))
    assert one["log_loss"] == pytest.approx(float(-log_post.gather(1, y[:, None]).mean()), rel=1e-5)
    assert one["ece"] == pytest.approx(expected_calibration_error(log_post.exp(), y, bins=4)["ece"])
    conf = torch.tensor(one["confusion"])
    assert conf.sum() == 12 and conf.sum(1).tolist() == torch.bincount(y, minlength=10).tolist()
    assert conf.trace() / 12 == pytest.approx(one["accuracy"])
    batched = evaluate_classifier(model, x, y, batch_size=5, seed=2, bins=4)  # other batches, other noise
    assert batched["images"] == 12 and batched["k"] == 1 and "uniform prior" in batched["estimator"]

