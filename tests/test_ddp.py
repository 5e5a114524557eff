"""DistributedDataParallel: the trainer under torchrun with 2 CPU processes (gloo).

Both ranks must end with identical weights, and the result must match a
single-process run with the same global batch: rank r takes batch positions
r, r+2, … of the same epoch permutation, each image keeps the noise of its
global position, and DDP averages the two half-batch gradients.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, cli_env
from safetensors.torch import load_file

DRIVER = textwrap.dedent("""
    import os, sys
    import torch
    from farmer.checkpoint import model_state, write_tensors
    from farmer.config import TrainConfig, presets
    from farmer.train import train

    out = sys.argv[1]
    # label dropout draws from each rank's own RNG stream, so switch it off to compare with one process
    model_cfg = presets["tiny"].replace(label_dropout=0.0)
    cfg = TrainConfig(data="synthetic", batch_size=16, steps=6, lr=2e-3, warmup_steps=2, ckpt_every=3,
                      log_every=2, sample_every=0, device="cpu")
    res = train(model_cfg, cfg, out, progress=False)
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    write_tensors(f"{out}/weights_w{world}_r{rank}.safetensors",
                  {**{"raw." + k: v for k, v in model_state(res.model).items()},
                   **{"ema." + k: v for k, v in model_state(res.ema).items()}})
""")


@pytest.mark.slow
def test_two_cpu_processes_agree_with_each_other_and_with_one_process(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = cli_env()
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", str(driver), str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stdout and ddp.stdout.count("data synthetic/train") == 1   # rank 0 logs only
    one = subprocess.run([sys.executable, str(driver), str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert one.returncode == 0, one.stderr[-3000:]

    r0 = load_file(tmp_path / "ddp" / "weights_w2_r0.safetensors")
    r1 = load_file(tmp_path / "ddp" / "weights_w2_r1.safetensors")
    single = load_file(tmp_path / "one" / "weights_w1_r0.safetensors")
    assert r0.keys() == r1.keys() == single.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    worst = max((r0[k] - single[k]).abs().max().item() for k in r0)
    assert worst < 1e-5, f"DDP and single-process weights differ by {worst}"
    # the comparison is not trivially of untrained weights: the zero-initialised output layers moved
    assert r0["raw.flow.blocks.0.proj_out.weight"].abs().max() > 1e-4
    # rank 0 alone wrote the run's files, and they hold the same model
    ck = load_file(tmp_path / "ddp" / "checkpoints" / "step_00000006" / "model.safetensors")
    assert all(torch.equal(ck[k], r0["ema." + k]) for k in ck)
    ddp_log = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    one_log = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    assert len(ddp_log) == len(one_log) == 3
