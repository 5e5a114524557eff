"""A run folder belongs to one run (farmer/run_folder.py): fresh runs refuse a folder holding a run,
--resume refuses a folder without one, --resume auto starts then resumes, --replace is the only way to
start over in place. Library and command line."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from farmer import train as tr
from farmer.config import TrainConfig, presets
from farmer.data import load_synthetic
from farmer.run_folder import RUN_FILES, claim, run_files

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = presets["tiny"]


@pytest.fixture(scope="module")
def data():
    return load_synthetic("train", 8, 1, 10, n=64)


def tcfg(**kw) -> TrainConfig:
    base = dict(batch_size=16, steps=4, lr=2e-3, warmup_steps=1, ckpt_every=2, log_every=2, sample_every=0,
                ema_decay=0.9, device="cpu")
    return TrainConfig(**{**base, **kw})


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def quiet(_line: str) -> None:
    pass


def test_a_second_fresh_run_is_refused_and_leaves_the_first_byte_identical(tmp_path, data):
    tr.train(TINY, tcfg(), tmp_path, dataset=data, progress=False, log=quiet)
    before = snapshot(tmp_path)
    assert "checkpoints/latest" in before and "metrics.jsonl" in before
    with pytest.raises(ValueError, match=r"already holds a run up to step_00000004.*--resume.*--replace"):
        tr.train(TINY, tcfg(steps=2), tmp_path, dataset=data, progress=False, log=quiet)
    assert snapshot(tmp_path) == before
    # --replace on purpose: the old run's files go, the new run's come
    (tmp_path / "notes.txt").write_text("mine")                       # not a run file: kept
    tr.train(TINY, tcfg(steps=2), tmp_path, dataset=data, progress=False, log=quiet, replace=True)
    after = snapshot(tmp_path)
    assert "checkpoints/step_00000004/model.safetensors" not in after
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_needs_a_checkpoint_and_auto_starts_then_resumes(tmp_path, data):
    empty = tmp_path / "typo"
    with pytest.raises(ValueError, match=r"--resume: no checkpoint in .*typo.*--resume auto"):
        tr.train(TINY, tcfg(), empty, dataset=data, progress=False, log=quiet, resume=True)
    assert not empty.exists() or not any(empty.iterdir())               # nothing written
    said: list[str] = []
    first = tr.train(TINY, tcfg(steps=2), tmp_path / "auto", dataset=data, progress=False, log=said.append,
                     resume="auto")
    assert first.step == 2 and not any(s.startswith("resumed from") for s in said)
    said.clear()
    second = tr.train(TINY, tcfg(steps=4), tmp_path / "auto", dataset=data, progress=False, log=said.append,
                      resume="auto")
    assert second.step == 4 and any(s.startswith("resumed from") and s.endswith("at step 2") for s in said)
    assert [json.loads(x)["step"] for x in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    with pytest.raises(ValueError, match="resume must be False, True or 'auto'"):
        tr.train(TINY, tcfg(), tmp_path / "x", dataset=data, progress=False, log=quiet, resume="yes")
    with pytest.raises(ValueError, match="--replace .* cannot be combined with --resume"):
        claim(tmp_path / "auto", resume=True, replace=True)


def test_what_counts_as_a_run(tmp_path):
    assert run_files(tmp_path) == []
    (tmp_path / "checkpoints").mkdir()                                  # an empty folder is no run
    (tmp_path / "README.txt").write_text("x")                           # nor a user's own file
    assert claim(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text("{}\n")                     # a run that died before its checkpoint
    with pytest.raises(ValueError, match="already holds a run's files"):
        claim(tmp_path)
    assert claim(tmp_path, resume="auto") is None                        # auto restarts that same run
    assert set(RUN_FILES) == {"metrics.jsonl", "loss_curve.png", "checkpoints", "samples", "curriculum_end"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        claim(tmp_path / "file")


def test_the_command_line_refuses_mixing_runs(tmp_path, run_farmer):
    out = tmp_path / "t1"
    base = ["train", "--preset", "tiny", "--data", "synthetic", "--batch-size", "8", "--no-progress",
            "--device", "cpu", "--sample-every", "0", "--out", out]
    first = run_farmer(*base, "--steps", "2", "--ckpt-every", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(out)
    again = run_farmer(*base, "--steps", "1")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "already holds a run up to step_00000002" in again.stderr and "--resume" in again.stderr
    assert snapshot(out) == before
    typo = run_farmer(*base[:-1], tmp_path / "t2", "--steps", "2", "--resume")
    assert typo.returncode == 1 and "--resume: no checkpoint" in typo.stderr
    assert not (tmp_path / "t2" / "metrics.jsonl").exists()
    auto = run_farmer(*base[:-1], tmp_path / "t3", "--steps", "1", "--resume", "auto")
    assert auto.returncode == 0, auto.stderr[-2000:]
    auto2 = run_farmer(*base[:-1], tmp_path / "t3", "--steps", "2", "--resume", "auto")
    assert auto2.returncode == 0 and "resumed from" in auto2.stdout, auto2.stderr[-2000:]
