"""benchmarks/table3.py's verdicts: a difference counts only beyond the run-to-run spread; the docs show the JSON."""
from __future__ import annotations

import json
import math

import pytest
from conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def table3():
    return load_benchmark("table3")


def row(arm, seed, bpd, cons_u=0.8, fd_u=20.0, guidance=None):
    r = {"arm": arm, "seed": seed, "steps": 3000, "train_seconds": 1800.0, "test_bpd": bpd,
         "test_bpd_stderr": 0.01, "samples": 1000,
         "unguided": {"class_consistency": cons_u, "fd": fd_u}, "guided": {"class_consistency": 0.9, "fd": 15.0},
         "fig7": None if arm == "none" else {"ratio": 0.3}}
    if guidance:
        r["guidance"] = guidance
    return r


def test_compare_by_the_spread_in_closed_form(table3):
    # lower is better (sign -1): A = 4.0 ± 0.05, B = 4.2 ± 0.05 -> A better by 0.2 > 0.1
    c = table3.compare([3.95, 4.05], [4.15, 4.25], -1, None)
    assert c["difference"] == pytest.approx(0.2) and c["threshold"] == pytest.approx(0.1)
    assert c["verdict"] == "confirmed"
    assert table3.compare([4.15, 4.25], [3.95, 4.05], -1, None)["verdict"] == "refuted"
    assert table3.compare([3.95, 4.15], [4.05, 4.25], -1, None)["verdict"] == "within noise"   # 0.1 < 0.2
    # one seed each: both borrow the noise; none at all: no verdict
    assert table3.compare([0.9], [0.8], +1, 0.04)["verdict"] == "confirmed"                  # 0.1 > 0.08
    assert table3.compare([0.9], [0.8], +1, 0.06)["verdict"] == "within noise"               # 0.1 < 0.12
    assert table3.compare([0.9], [0.8], +1, None)["verdict"] == "no spread yet"


def test_no_spread_is_taken_below_the_sampling_error(table3):
    """Two seeds that agree exactly (a zero half-range) still carry their samples' binomial error."""
    rows = [row("split", 0, 4.0, cons_u=0.725), row("split", 1, 4.0, cons_u=0.725),
            row("dct@split", 0, 4.0, cons_u=0.745)]
    v = {x["figure"]: x for x in table3.verdicts(rows) if x["a"] == "dct@split"}["consistency unguided"]
    floor_a, floor_b = math.sqrt(0.745 * 0.255 / 1000), math.sqrt(0.725 * 0.275 / 2000)
    assert v["threshold"] == pytest.approx(floor_a + floor_b)                # borrowed noise 0 < floors
    assert v["verdict"] == "within noise"                                    # 2 points < 1.4 + 1.0
    assert table3.compare([0.8], [0.7], +1, 0.0, 0.02, 0.02)["verdict"] == "confirmed"
    assert table3.compare([0.8], [0.77], +1, 0.0, 0.02, 0.02)["verdict"] == "within noise"


def test_verdicts_borrow_the_largest_two_seed_spread_for_one_seed_arms(table3):
    rows = [row("split", 0, 4.00), row("split", 1, 4.04), row("none", 0, 4.30), row("none", 1, 4.50),
            row("M=1", 0, 4.10)]
    got = {(v["b"], v["figure"]): v for v in table3.verdicts(rows)}
    none = got[("none", "test bpd")]
    assert none["threshold"] == pytest.approx(0.02 + 0.10) and none["verdict"] == "confirmed"
    m1 = got[("M=1", "test bpd")]          # split spread 0.02 + borrowed 0.10 (none's) > difference 0.08
    assert m1["threshold"] == pytest.approx(0.12) and m1["verdict"] == "within noise"
    assert ("jetformer", "test bpd") not in got                                          # not run: no claim


def test_guidance_verdicts_compare_rules_at_equal_w_on_the_split_seeds(table3):
    def g(exact, naive):
        out = {}
        for w in (1, 2):
            out[f"resample_exact_w{w}"] = {"class_consistency": exact, "fd": 10.0}
            out[f"resample_table6_w{w}"] = {"class_consistency": naive - 0.1, "fd": 12.0}
            out[f"naive_w{w}"] = {"class_consistency": naive, "fd": 11.0}
        return out
    rows = [row("split", 0, 4.0, guidance=g(0.95, 0.90)), row("split", 1, 4.0, guidance=g(0.93, 0.89))]
    got = {(v["a"], v["figure"]): v for v in table3.verdicts(rows)}
    c = got[("resample_exact", "consistency, w = 1")]
    # exact: half-range 0.01 above its binomial floor; naive: half-range 0.005 below its floor
    floor_naive = math.sqrt(0.895 * 0.105 / 2000)
    assert c["difference"] == pytest.approx(0.045) and c["threshold"] == pytest.approx(0.01 + floor_naive)
    assert c["verdict"] == "confirmed"
    assert got[("resample_table6", "consistency, w = 2")]["verdict"] == "refuted"
    assert got[("resample_exact", "FD, w = 2")]["verdict"] == "confirmed"   # equal seeds: zero spread


def test_the_docs_show_what_table3_json_holds(table3):
    rows = json.loads((REPO / "benchmarks" / "table3.json").read_text())["runs"]
    for target, make in table3.TARGETS.items():
        assert table3.current_block((REPO / target).read_text()) == make(rows), (
            f"{target}: the Table 3 block differs from benchmarks/table3.json; "
            "run `python benchmarks/table3.py --write`")


def test_a_changed_recipe_is_caught_before_new_arms_are_trained_on_it(table3, monkeypatch):
    import farmer
    rows = json.loads((REPO / "benchmarks" / "table3.json").read_text())["runs"]
    assert rows and table3.recipe_changes(rows, 3000) == ""            # the stored runs are today's recipe
    monkeypatch.setitem(farmer.presets, "fmnist", farmer.presets["fmnist"].replace(condition_repeat=8))
    assert table3.recipe_changes(rows, 3000) == "model condition_repeat"
    assert table3.recipe_changes(rows, 20) == ""                       # no stored runs of that budget


def test_the_readme_says_so_far_until_every_arm_has_its_seeds(table3):
    every = [row(arm, s, 4.2) for arm, (_, seeds) in table3.ARMS.items() for s in seeds]
    assert table3.readme_block(every).startswith("Runs, 3,000 steps")
    missing = every[:-1]                                                   # one arm short of one seed
    assert table3.readme_block(missing).startswith("Runs so far, 3,000 steps")
