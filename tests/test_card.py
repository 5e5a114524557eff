"""farmer.card.recommended_sampling: one default guidance, the card's, for `farmer sample` and the app."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _models import perturbed_model

import farmer
from farmer.card import SAMPLING_KEYS, library_sampling_defaults, recommended_sampling

REPO = Path(__file__).resolve().parents[1]
CARD = {"guidance": "resample", "cfg_scale": 1.0, "t_sigma": 0.9, "t_pi_verify": 1.0, "t_sigma_verify": 1.0,
        "t_select": 1.0, "class_consistency": 0.95, "fd": 9.7}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    model = perturbed_model("tiny", seed=2)
    root = tmp_path_factory.mktemp("card")
    plain = farmer.save(model, root / "plain", train={"data": "digits"}, step=3)
    carded = farmer.save(model, root / "carded", train={"data": "digits"}, step=3)
    (carded / "card.json").write_text(json.dumps({"quality_guided": CARD}))
    return model, plain, carded


def test_without_a_card_the_library_defaults(checkpoints):
    _, plain, _ = checkpoints
    params = inspect.signature(farmer.sample).parameters
    assert recommended_sampling(plain) == {k: params[k].default for k in SAMPLING_KEYS}
    assert recommended_sampling(plain)["guidance"] == "none"
    assert library_sampling_defaults() == recommended_sampling(plain)


def test_with_a_card_its_recommended_settings(checkpoints, tmp_path):
    _, _, carded = checkpoints
    rec = recommended_sampling(carded)
    assert set(rec) == set(SAMPLING_KEYS)
    assert {k: rec[k] for k in CARD if k in SAMPLING_KEYS} == {k: v for k, v in CARD.items() if k in SAMPLING_KEYS}
    assert "fd" not in rec and rec["candidates_cond"] == library_sampling_defaults()["candidates_cond"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "card.json").write_text("{not json")
    with pytest.raises(ValueError, match="card.json is not valid JSON"):
        recommended_sampling(bad)


def test_the_shipped_model_recommends_its_cards_guidance():
    card = json.loads((REPO / "checkpoints" / "fmnist" / "card.json").read_text())["quality_guided"]
    rec = recommended_sampling(REPO / "checkpoints" / "fmnist")
    assert rec["guidance"] == card["guidance"] != "none"
    assert all(rec[k] == card[k] for k in SAMPLING_KEYS if k in card)


def test_farmer_sample_defaults_to_the_card_and_flags_override_it(checkpoints, run_farmer, tmp_path):
    model, _, carded = checkpoints
    r = run_farmer("sample", carded, "--labels", "0", "1", "2", "--out", tmp_path / "a.png")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "defaults from" in r.stdout and "resample CFG, w = 1" in r.stdout
    got = np.load(tmp_path / "a.npy")
    want = farmer.sample(model, [0, 1, 2], seed=0, **recommended_sampling(carded))
    assert np.array_equal(got, want.numpy())
    plain = farmer.sample(model, [0, 1, 2], seed=0)                    # the library's default: no guidance
    assert not torch.equal(torch.from_numpy(got), plain)               # so the card's default changed something
    r = run_farmer("sample", carded, "--labels", "0", "1", "2", "--guidance", "none", "--out", tmp_path / "b.png")
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "b.npy"),
                          farmer.sample(model, [0, 1, 2], seed=0, **{**recommended_sampling(carded),
                                                                     "guidance": "none"}).numpy())
