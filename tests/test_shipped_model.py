"""The shipped Fashion-MNIST model (checkpoints/fmnist) against the figures its model card states.

The card's figures live in checkpoints/fmnist/card.json (written by
benchmarks/model_card.py, which also renders README.md from them); these tests
re-measure the cheap ones on this machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import farmer
from farmer.data import load_fashion_mnist
from farmer.distill import reconstruction_error
from farmer.likelihood import evaluate_split

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((SHIPPED / "card.json").read_text())


@pytest.fixture(scope="module")
def shipped() -> farmer.Farmer:
    return farmer.load(SHIPPED).eval()


@pytest.fixture(scope="module")
def test_split(fmnist_dir):
    return load_fashion_mnist("test", path=fmnist_dir)


def test_shipped_model_loads_is_small_and_has_a_student(shipped, card):
    files = {p.name: p.stat().st_size for p in SHIPPED.iterdir() if p.is_file()}
    assert sum(files.values()) < 25 * 2**20, files
    assert {"config.json", "model.safetensors", "student.safetensors", "README.md", "card.json"} <= set(files)
    assert shipped.cfg == farmer.presets["fmnist"]                 # the preset the README says it is
    assert shipped.num_parameters() == card["model"]["parameters"]
    assert shipped.student is not None


def test_bits_per_dim_on_first_1000_test_images_matches_the_card(shipped, card, test_split):
    """Re-measured with the card's protocol (seed 0 uniform dequantisation, true labels): within 0.03."""
    res = evaluate_split(shipped, test_split.images[:1000], test_split.labels[:1000], k=1, seed=0)
    stated = card["bpd_first_1000"]["bpd"]
    assert res["bpd"] == pytest.approx(stated, abs=0.03)
    assert f"{stated:.4f}" in (SHIPPED / "README.md").read_text()   # the card shows what card.json holds
    # and the card's other bits/dim figures are consistent with each other
    assert card["bpd_test_k8"]["bpd"] <= card["bpd_test_k8"]["bpd_single_mean"] + 1e-9
    assert card["bpd_test_k1"]["images"] == 10_000 and card["bpd_test_k8"]["k"] == 8


def test_bayes_classifier_on_first_1000_test_images_agrees_with_the_card(shipped, card, test_split, one_thread):
    """farmer.classify with the card's protocol on the first 1,000 (the card: all 10,000, same noise seeds for
    these batches): accuracy within 3.5 points (about 3.4 binomial standard errors), and the card's ECE is
    the one its own reliability bins give."""
    from farmer.classify import evaluate_classifier
    stated = card["bayes_classifier"]
    res = evaluate_classifier(shipped, test_split.images[:1000], test_split.labels[:1000], k=stated["k"],
                              seed=stated["seed"], batch_size=stated["batch_size"], bins=stated["bins"])
    assert res["accuracy"] == pytest.approx(stated["accuracy"], abs=0.035)
    assert stated["images"] == 10_000 and sum(stated["count"]) == 10_000
    gaps = [n * abs(a - c) for n, a, c in zip(stated["count"], stated["accuracy_per_bin"], stated["confidence"]) if n]
    assert sum(gaps) / 10_000 == pytest.approx(stated["ece"], abs=1e-9)
    readme = (SHIPPED / "README.md").read_text()
    assert f"**{100 * stated['accuracy']:.2f}%** / {stated['ece']:.4f}" in readme


def test_distilled_decoder_reconstructs_test_latents_within_the_card(shipped, card, test_split):
    stated = card["distilled_reconstruction"]
    res = reconstruction_error(shipped, test_split.images[:1000], seed=0, exact=False)
    assert res["rmse_gray"] <= stated["rmse_gray"] * 1.01 + 1e-6
    assert f"{stated['rmse_gray']:.2f}" in (SHIPPED / "README.md").read_text()


def test_shipped_model_samples_are_images_and_decoders_agree_in_distribution(shipped):
    """Both decoders give valid images; the distilled one stays close to the exact inverse of the same latents."""
    from farmer.sampling import sample_latents
    labels = torch.arange(10)
    z = sample_latents(shipped, labels, seed=0)
    exact = shipped.decode(z, decoder="sequential")
    student = shipped.decode(z, decoder="distilled")
    assert exact.shape == student.shape == (10, 1, 28, 28)
    assert torch.isfinite(student).all()
    # on in-range pixels the one-step student is within a fraction of the [-1, 1] range of the exact inverse
    inside = exact.abs() <= 1
    assert (student - exact)[inside].abs().mean() < 0.25


def test_redrawing_z_r_keeps_the_garment_as_in_the_paper(shipped, card, test_split):
    """The Fig. 7 experiment on the shipped model, re-measured with the card's protocol: redrawing Z^R
    moves the pixels far less than perturbing Z^I (ratio < 1), and the card's ratio holds."""
    from farmer.channels import channel_experiment
    res = channel_experiment(shipped, test_split.images[:100], test_split.labels[:100], variance=1.0, seed=0)
    stated = card["fig7"]["ratio"]
    assert res["ratio"] < 1.0
    assert res["ratio"] == pytest.approx(stated, abs=0.02)
    assert f"{stated:.2f}" in (SHIPPED / "README.md").read_text()


def test_the_per_pixel_maps_resolution_matches_the_card(shipped, card, test_split):
    """farmer.likelihood.within_patch_share on the card's 64 images (seed 0): the same figure, re-measured."""
    from farmer.likelihood import likelihood_map, within_patch_share
    x, y = test_split.images[:64], test_split.labels[:64]
    share = within_patch_share(likelihood_map(shipped, x, y, seed=0)["pixel_bits"], shipped.cfg.patch_size)
    assert share == pytest.approx(card["within_patch_share"]["share"], rel=1e-3)
    assert f"{100 * share:.1f}%" in (SHIPPED / "README.md").read_text()
