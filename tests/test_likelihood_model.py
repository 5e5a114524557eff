"""The shipped likelihood model (checkpoints/fmnist-likelihood) against its card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import farmer
from farmer.data import load_fashion_mnist
from farmer.likelihood import evaluate_split

pytestmark = pytest.mark.usefixtures("one_thread")
LIKELIHOOD = Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist-likelihood"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((LIKELIHOOD / "card.json").read_text())


def test_it_is_the_likelihood_recipe_and_meets_the_bar(card):
    model = farmer.load(LIKELIHOOD)
    assert model.cfg.channel_mixing == "none" and model.cfg.redundant_mode == "none"
    assert card["train"]["noise"] == "uniform"
    assert card["bpd_test_k1"]["images"] == 10_000 and card["bpd_test_k8"]["k"] == 8
    assert card["bpd_test_k8"]["bpd"] <= card["bpd_test_k8"]["bpd_single_mean"] + 1e-9
    assert card["bpd_test_k1"]["bpd"] <= 3.60                   # issue 14's likelihood bar
    readme = (LIKELIHOOD / "README.md").read_text()
    assert f"{card['bpd_test_k1']['bpd']:.4f}" in readme and "checkpoints/fmnist" in readme


def test_bits_per_dim_on_the_first_1000_test_images_matches_the_card(card, fmnist_dir):
    test = load_fashion_mnist("test", path=fmnist_dir)
    model = farmer.load(LIKELIHOOD)
    res = evaluate_split(model, test.images[:1000], test.labels[:1000], k=1, seed=0)
    assert res["bpd"] == pytest.approx(card["bpd_first_1000"]["bpd"], abs=1e-3)   # same protocol, same seed
