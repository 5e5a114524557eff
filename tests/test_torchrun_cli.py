"""The command line itself under torchrun (not a test driver): `python -m torch.distributed.run
--nproc_per_node 2 -m farmer train --fsdp ...` exits 0 every time its work succeeded, resumes, and refuses
to mix runs on every rank.

Before the fix about one FSDP job in six aborted at exit after writing its checkpoints ("terminate called
without an active exception", exit −6): gloo's threads outlive destroy_process_group under FSDP
(farmer.distributed.teardown, farmer.cli._end_torchrun_worker). Repeated here, kept short for a 2-core CI.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from conftest import REPO, cli_env


def torchrun(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "farmer", *map(str, args)]
    return subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)


def files(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_fsdp_command_line_under_torchrun_exits_zero_repeatedly_and_owns_its_folder(tmp_path):
    base = ["train", "--preset", "tiny", "--data", "synthetic", "--fsdp", "--ckpt-every", "2", "--batch-size", "8",
            "--sample-every", "0", "--no-progress"]
    for i in range(3):                                                 # three fresh jobs, each must exit 0
        r = torchrun(*base, "--steps", "2", "--out", tmp_path / f"run{i}")
        assert r.returncode == 0, f"run {i}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert (tmp_path / f"run{i}" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    resumed = torchrun(*base, "--steps", "4", "--out", tmp_path / "run0", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 2" in resumed.stdout
    # a second fresh job into a run folder: refused on every rank, nothing of the first run touched
    before = files(tmp_path / "run1")
    again = torchrun(*base, "--steps", "2", "--out", tmp_path / "run1")
    assert again.returncode != 0 and "already holds a run up to step_00000002" in again.stderr
    assert files(tmp_path / "run1") == before
