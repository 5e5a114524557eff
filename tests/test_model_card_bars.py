"""benchmarks/model_card.py's flagship bars: each card figure against its bar, met, short or not measured."""
from __future__ import annotations

import json

import pytest
from conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def model_card():
    return load_benchmark("model_card")


def card(bpd=3.4, cons_u=0.80, cons_g=0.96, fd_u=14.0, fd_g=12.0, ratio=0.3, share=None) -> dict:
    out = {"bpd_test_k1": {"bpd": bpd}, "quality_unguided": {"class_consistency": cons_u, "fd": fd_u},
           "quality_guided": {"class_consistency": cons_g, "fd": fd_g}, "fig7": {"ratio": ratio}}
    if share is not None:
        out["within_patch_share"] = {"share": share}
    return out


def test_each_bar_is_judged_in_its_own_direction_and_a_bar_exactly_reached_is_met(model_card):
    got = {r["key"]: r["met"] for r in model_card.bars_report(card())}
    assert got == {"bpd_test_k1": True, "quality_unguided": False, "quality_guided": True, "fd_unguided": True,
                   "fd_guided": False, "fig7": True, "within_patch_share": None}
    flipped = {r["key"]: r["met"] for r in model_card.bars_report(
        card(bpd=3.46, cons_u=0.83, cons_g=0.94, fd_u=15.01, fd_g=10.0, ratio=0.31, share=0.05))}
    assert flipped == {"bpd_test_k1": False, "quality_unguided": True, "quality_guided": False,
                       "fd_unguided": False, "fd_guided": True, "fig7": False, "within_patch_share": True}


def test_the_bars_section_counts_what_is_met_and_names_what_is_short(model_card):
    text = "\n".join(model_card.bars_lines(card(share=0.01)))
    assert "**4 of 7 met**" in text
    assert text.count("**short**") == 3 and "not measured" not in text
    assert "not measured" in "\n".join(model_card.bars_lines(card()))


def test_the_shipped_card_shows_its_bars_as_its_figures_say(model_card):
    shipped = json.loads((REPO / "checkpoints" / "fmnist" / "card.json").read_text())
    met = sum(r["met"] is True for r in model_card.bars_report(shipped))
    readme = (REPO / "checkpoints" / "fmnist" / "README.md").read_text()
    assert f"**{met} of {len(model_card.BARS)} met**" in readme
