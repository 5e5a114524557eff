"""benchmarks/convergence.py's training clock: seconds of training at each checkpoint from metrics.jsonl."""
from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def convergence():
    return load_benchmark("convergence")


def test_clock_sums_each_interval_at_its_own_rate_and_interpolates_between_records(convergence, tmp_path):
    # batch 10: steps 0-10 at 100 images/s (1 s), 10-30 at 50 images/s (4 s), 30-40 at 200 images/s (0.5 s)
    recs = [{"step": 10, "images_per_s": 100.0}, {"step": 30, "images_per_s": 50.0},
            {"step": 40, "images_per_s": 200.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    clock = convergence.trainer_clock(path, batch_size=10)
    assert clock(0) == 0.0
    assert clock(10) == pytest.approx(1.0)
    assert clock(20) == pytest.approx(3.0)       # halfway through the 4-second interval
    assert clock(30) == pytest.approx(5.0)
    assert clock(40) == pytest.approx(5.5)
    assert clock(35) == pytest.approx(5.25)
