"""The trainer (farmer/train.py): schedules, EMA, logging, non-finite steps, bf16, exact resume."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from _folders import damaged_folder
from conftest import REPO, cli_env
from safetensors.torch import load_file

import farmer
from farmer import train as tr
from farmer.config import TrainConfig, presets
from farmer.data import load_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = presets["tiny"]


@pytest.fixture(scope="module")
def data():
    return load_synthetic("train", 8, 1, 10, n=128)


def tcfg(**kw) -> TrainConfig:
    base = dict(batch_size=16, steps=20, lr=2e-3, warmup_steps=3, ckpt_every=10, log_every=5, sample_every=0,
                ema_decay=0.9, device="cpu")
    return TrainConfig(**{**base, **kw})


def quiet(_line: str) -> None:
    pass


def test_lr_warmup_then_cosine_to_the_floor():
    cfg = TrainConfig(lr=1e-3, lr_min=1e-5, warmup_steps=10, steps=110)
    lrs = [tr.lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)           # linear warm-up
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))                             # then decreasing
    assert lrs[-1] == pytest.approx(1e-5)                                             # the floor, at the end
    assert (lrs[59] + lrs[60]) / 2 == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)      # cosine: half-way mid-decay


def test_ema_update_moves_towards_the_weights_with_warmup():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.fill_(0.0)
        b.weight.fill_(1.0)
    tr.ema_update(a, b, decay=0.999, step=0)        # warm-up: d = min(0.999, 1/10) = 0.1
    assert torch.allclose(a.weight, torch.full((2, 2), 0.9))
    tr.ema_update(a, b, decay=0.5, step=1000)
    assert torch.allclose(a.weight, torch.full((2, 2), 0.95))


def test_a_run_logs_the_three_terms_and_writes_its_files(tmp_path, data):
    res = tr.train(TINY, tcfg(), tmp_path, dataset=data, progress=False, log=quiet)
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [5, 10, 15, 20]
    for r in recs:                     # the loss is the sum of its logged terms, and bpd follows from it
        assert r["loss"] == pytest.approx(r["prior_informative"] + r["prior_redundant"] - r["logdet"], abs=1e-6)
        assert r["bpd"] == pytest.approx((r["loss"] + math.log(128)) / math.log(2))
        assert r["images_per_s"] > 0 and r["bad_steps"] == 0 and math.isfinite(r["grad_norm"])
    assert recs[-1]["loss"] < recs[0]["loss"]
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_00000010", "step_00000020"]
    last = tmp_path / "checkpoints" / "step_00000020"
    meta = json.loads((last / "config.json").read_text())
    assert meta["weights"] == "ema" and meta["step"] == 20 and meta["train"]["batch_size"] == 16
    ema, raw = farmer.load(tmp_path), farmer.load(tmp_path, weights="raw")
    assert torch.equal(ema.flow.blocks[0].proj_out.weight, res.ema.flow.blocks[0].proj_out.weight)
    assert torch.equal(raw.flow.blocks[0].proj_out.weight, res.model.flow.blocks[0].proj_out.weight)
    assert not torch.equal(ema.flow.blocks[0].proj_out.weight, raw.flow.blocks[0].proj_out.weight)


def test_sample_grid_with_fixed_labels(tmp_path, data):
    tr.train(TINY, tcfg(steps=4, sample_every=2, sample_count=6), tmp_path, dataset=data, progress=False, log=quiet)
    from PIL import Image
    grids = sorted((tmp_path / "samples").iterdir())
    assert [g.name for g in grids] == ["step_00000002.png", "step_00000004.png"]
    with Image.open(grids[0]) as im:           # 6 images of 8×8 in a 10-wide grid with 1-pixel padding
        assert im.size == (10 * 9 + 1, 9 + 1)


def test_a_uniform_tail_keeps_the_ema_where_the_curriculum_ends(tmp_path, data):
    cfg = tcfg(steps=10, ckpt_every=1, keep_checkpoints=20, noise="gaussian", uniform_tail=0.3)
    tr.train(TINY, cfg, tmp_path / "all", dataset=data, progress=False, log=quiet)
    end = tmp_path / "all" / tr.CURRICULUM_END
    meta = json.loads((end / "config.json").read_text())
    assert meta["step"] == tr.curriculum_steps(cfg) == 7 and meta["weights"] == "ema"
    assert tr.noise_sigma(6, cfg) is not None and tr.noise_sigma(7, cfg) is None   # the last Gaussian step was 6
    kept = load_file(end / "model.safetensors")
    step7 = load_file(tmp_path / "all" / "checkpoints" / "step_00000007" / "model.safetensors")
    last = load_file(tmp_path / "all" / "checkpoints" / "step_00000010" / "model.safetensors")
    assert kept.keys() == step7.keys() and all(torch.equal(kept[k], step7[k]) for k in kept)
    assert not all(torch.equal(kept[k], last[k]) for k in kept)          # the tail moved the EMA on
    # the same run keeping one checkpoint: step 7's is pruned, the curriculum's end is not
    tr.train(TINY, cfg.replace(keep_checkpoints=1), tmp_path / "one", dataset=data, progress=False, log=quiet)
    assert sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir()) == ["latest", "step_00000010"]
    again = load_file(tmp_path / "one" / tr.CURRICULUM_END / "model.safetensors")
    assert all(torch.equal(kept[k], again[k]) for k in kept)
    assert farmer.load(tmp_path / "one" / tr.CURRICULUM_END).cfg == TINY
    # a run without a tail writes none; --replace clears the old run's
    tr.train(TINY, cfg.replace(uniform_tail=0.0), tmp_path / "one", replace=True, dataset=data, progress=False,
             log=quiet)
    assert not (tmp_path / "one" / tr.CURRICULUM_END).exists()


def _nan_after(monkeypatch, bad: set[int] | int):
    """Make Farmer.loss return NaN on the given calls (a set) or from call `bad` onwards (an int)."""
    orig, calls = farmer.Farmer.loss, {"n": 0}
    def loss(self, x, y=None):
        out, terms = orig(self, x, y)
        i, calls["n"] = calls["n"], calls["n"] + 1
        hit = i in bad if isinstance(bad, set) else i >= bad
        return (out * float("nan"), terms) if hit else (out, terms)
    monkeypatch.setattr(farmer.Farmer, "loss", loss)


def test_non_finite_losses_are_skipped_and_counted(tmp_path, data, monkeypatch):
    _nan_after(monkeypatch, {3, 4, 11})
    lines = []
    res = tr.train(TINY, tcfg(), tmp_path, dataset=data, progress=False, log=lines.append)
    assert res.bad_steps == 3 and res.step == 20
    assert sum("non-finite" in line for line in lines) == 3
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["bad_steps"] == 3 and all(math.isfinite(r["loss"]) for r in recs)


def test_too_many_non_finite_losses_abort_and_keep_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    _nan_after(monkeypatch, 12)
    with pytest.raises(tr.TrainingAborted, match=r"step 14: 3 non-finite losses in a row.*step_00000010"):
        tr.train(TINY, tcfg(max_bad_steps=3), tmp_path, dataset=data, progress=False, log=quiet)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000010"
    model = farmer.load(tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocasts_the_trunks_but_not_the_affine_maps(tmp_path, data):
    from _models import perturbed_model
    model = perturbed_model("tiny")
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    ref = model(x)
    tr.set_precision(model, "bf16")
    assert all(m.autocast_dtype == torch.bfloat16 for m in model.modules() if isinstance(m, tr.Transformer))
    block = model.flow.blocks[0]
    mu, a = block.shift_params(torch.randn(2, TINY.tokens, TINY.token_dim), block.ordered_pos())
    assert mu.dtype == torch.float32 and a.dtype == torch.float32
    out = model(x)
    assert all(out[k].dtype == torch.float32 for k in ("prior_informative", "prior_redundant", "logdet"))
    assert torch.allclose(out["logdet"], ref["logdet"], rtol=0.05, atol=0.5)    # bf16 trunk, same answer roughly
    res = tr.train(TINY, tcfg(steps=6, precision="bf16"), tmp_path, dataset=data, progress=False, log=quiet)
    assert math.isfinite(res.metrics["loss"])
    assert res.ema.flow.blocks[0].trunk.autocast_dtype is None                 # saved / EMA model stays fp32


def test_resume_after_a_crash_in_process_is_exact(tmp_path, data, monkeypatch):
    full = tr.train(TINY, tcfg(), tmp_path / "full", dataset=data, progress=False, log=quiet)
    orig, calls = tr.ema_update, {"n": 0}
    def crash_at_13(*a, **k):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt                                # killed mid-epoch, between checkpoints
        orig(*a, **k)
    monkeypatch.setattr(tr, "ema_update", crash_at_13)
    with pytest.raises(KeyboardInterrupt):
        tr.train(TINY, tcfg(), tmp_path / "cut", dataset=data, progress=False, log=quiet)
    monkeypatch.setattr(tr, "ema_update", orig)
    res = tr.train(TINY, tcfg(), tmp_path / "cut", dataset=data, progress=False, log=quiet, resume=True)
    for a, b in ((full.model, res.model), (full.ema, res.ema)):
        for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), k
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [5, 10, 15, 20]           # no duplicated records


def test_resume_refuses_a_different_model(tmp_path, data):
    tr.train(TINY, tcfg(steps=10), tmp_path, dataset=data, progress=False, log=quiet)
    with pytest.raises(ValueError, match="different model config.*flow_blocks"):
        tr.train(TINY.replace(flow_blocks=3), tcfg(steps=20), tmp_path, dataset=data, progress=False,
                 log=quiet, resume=True)


def test_a_folder_with_damaged_files_trains_to_the_end_and_resumes_exactly(tmp_path, monkeypatch):
    corrupt, text = damaged_folder(tmp_path / "imgs")
    cfg = tcfg(data=str(tmp_path / "imgs"), batch_size=8, steps=6, ckpt_every=3, log_every=3)
    said = []
    full = tr.train(TINY, cfg, tmp_path / "full", progress=False, log=said.append)
    assert full.step == 6
    assert sum(str(text) in line and "left out" in line for line in said) == 1
    assert sum(str(corrupt) in line and "skipped unreadable file" in line for line in said) == 1   # logged once
    records = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and records[-1]["bad_files"] == 2
    orig, calls = tr.ema_update, {"n": 0}
    def crash_at_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt                                # after the checkpoint at step 3
        orig(*a, **k)
    monkeypatch.setattr(tr, "ema_update", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        tr.train(TINY, cfg, tmp_path / "cut", progress=False, log=quiet)
    monkeypatch.setattr(tr, "ema_update", orig)
    res = tr.train(TINY, cfg, tmp_path / "cut", progress=False, log=quiet, resume=True)   # a fresh folder scan
    for (k, p), q in zip(full.model.state_dict().items(), res.model.state_dict().values()):
        assert torch.equal(p, q), k                                 # the same batches after the resume
    last = json.loads((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["bad_files"] == 2


def test_strict_data_stops_at_the_scan_listing_both_files(tmp_path, run_farmer):
    corrupt, text = damaged_folder(tmp_path / "imgs")
    r = run_farmer("train", "--preset", "tiny", "--data", tmp_path / "imgs", "--strict-data", "--steps", "2",
                   "--out", tmp_path / "run", "--no-progress", timeout=120)
    assert r.returncode == 1 and "2 of 25 files are not readable images" in r.stderr
    assert str(corrupt) in r.stderr and str(text) in r.stderr and not (tmp_path / "run" / "checkpoints").exists()


def test_too_little_data_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fewer than batch_size 16"):
        tr.train(TINY, tcfg(), tmp_path, dataset=load_synthetic("train", 8, 1, 10, n=8), progress=False, log=quiet)


# ---------------------------------------------------------------------------- SIGKILL + --resume
def _final_tensors(run):
    last = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {**load_file(last / "model.safetensors"),
            **{k: v for k, v in load_file(last / "training.safetensors").items() if not k.startswith("rng/")}}


@pytest.mark.slow
def test_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(tmp_path):
    """`farmer train` killed by SIGKILL mid-run and resumed == the same run uninterrupted, bit for bit."""
    args = [sys.executable, "-m", "farmer", "train", "--preset", "tiny", "--data", "synthetic", "--steps", "240",
            "--ckpt-every", "40", "--log-every", "20", "--batch-size", "16", "--no-progress", "--device", "cpu"]
    env = cli_env()
    subprocess.run(args + ["--out", str(tmp_path / "full")], env=env, check=True, capture_output=True,
                   timeout=300, cwd=REPO)
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "cut")], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    for line in proc.stdout:                       # kill as soon as the first checkpoint is announced
        if line.startswith("checkpoint") and "step_00000040" in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = (tmp_path / "cut" / "checkpoints" / "latest").read_text().strip()
    assert killed_at != "step_00000240", "the run finished before it was killed; the test proved nothing"
    out = subprocess.run([sys.executable, "-m", "farmer", "train", "--out", str(tmp_path / "cut"), "--resume",
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert f"resumed from {tmp_path / 'cut' / 'checkpoints' / killed_at}" in out.stdout
    full, cut = _final_tensors(tmp_path / "full"), _final_tensors(tmp_path / "cut")
    assert full.keys() == cut.keys() and len(full) > 100          # EMA, raw weights and AdamW moments
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    recs = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(20, 241, 20))
