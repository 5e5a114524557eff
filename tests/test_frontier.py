"""benchmarks/frontier.py: the Pareto frontier of bits/dim against FD, and the docs block from the JSON only."""
from __future__ import annotations

import json
import random

import pytest
from conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def frontier():
    return load_benchmark("frontier")


def test_pareto_in_closed_form(frontier):
    pts = [{"bpd": 1.0, "fd": 5.0}, {"bpd": 2.0, "fd": 3.0}, {"bpd": 3.0, "fd": 4.0}, {"bpd": 4.0, "fd": 1.0},
           {"bpd": 5.0, "fd": None}, {"bpd": 2.0, "fd": 3.0}, {"bpd": 4.0, "fd": 2.0}]
    # (3, 4) loses to (2, 3); (4, 2) to (4, 1); a point without FD is never on it; equal points both stay
    assert frontier.pareto(pts, "bpd", "fd") == [True, True, False, True, False, True, False]


def test_pareto_matches_the_running_minimum_on_random_points(frontier):
    rng = random.Random(0)
    pts = [{"bpd": rng.random(), "fd": rng.random()} for _ in range(60)]
    on = frontier.pareto(pts, "bpd", "fd")
    best, expected = float("inf"), {}
    for i in sorted(range(len(pts)), key=lambda i: pts[i]["bpd"]):   # distinct values: on it iff a new lowest FD
        expected[i] = pts[i]["fd"] < best
        best = min(best, pts[i]["fd"])
    assert on == [expected[i] for i in range(len(pts))]
    assert 1 < sum(on) < len(pts)


def test_every_table3_run_is_a_point_with_its_own_figures(frontier):
    rows = json.loads((REPO / "benchmarks" / "table3.json").read_text())["runs"]
    pts = frontier.table3_points(rows)
    assert len(pts) == len(rows)
    for r, p in zip(rows, pts):
        assert (p["bpd"], p["fd_unguided"], p["fd_guided"]) == (r["test_bpd"], r["unguided"]["fd"], r["guided"]["fd"])


def test_the_docs_show_what_the_json_holds(frontier):
    stored = json.loads((REPO / "benchmarks" / "frontier.json").read_text())
    text = (REPO / "docs" / "studies.md").read_text()
    assert frontier.BLOCK[0] in text, "docs/studies.md has no frontier block"
    shown = text.split(frontier.BLOCK[0], 1)[1].split(frontier.BLOCK[1], 1)[0].strip("\n")
    assert shown == frontier.block(frontier.all_points(stored)), (
        "docs/studies.md: the frontier block differs from benchmarks/frontier.json and table3.json; "
        "run `python benchmarks/frontier.py --write`")
