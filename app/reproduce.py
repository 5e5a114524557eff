"""The `farmer sample` command that redraws a Sample-tab grid bit for bit.

The app calls `farmer.sampling.sample_steps` with the settings below — every one spelled out in the
command, since `farmer sample` takes its own defaults from the checkpoint's card — and every other
argument at the default both share (the default redundant pool, 1000 naive tries, Jacobi tolerance
1e-4), and lays the batch out with
`image_grid` at ⌈√B⌉ images per row, enlarged. So this command, run from the repository root on the
same device, writes the same images (the .npy) and the same grid (the PNG, before enlarging).
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path

from .models import REPO

# explanations of the counts farmer.sample adds to its stats (farmer.guidance)
COUNTS = {
    "draws": "resampling: candidates kept, one per informative token of each image plus one per redundant "
             "token (each chosen from s_c + s_u candidates)",
    "picked_uncond": "resampling: how many of those kept candidates came from the unconditional mixture G_u "
                     "(the rest from G_c)",
    "elements": "naive CFG: latent values drawn by rejection sampling",
    "fallbacks": "naive CFG: values that fell back to the plain conditional draw after max_tries rejections",
    "improper": "naive CFG: of those, values whose target N_c^{1+w}/N_u^w was not normalisable",
    "jacobi_iterations": "Jacobi / hybrid decoder: fixed-point iterations of each flow block",
}


def shown_path(checkpoint: Path) -> str:
    """The checkpoint relative to the repository root when it is inside it (the command runs there)."""
    try:
        return str(Path(checkpoint).resolve().relative_to(REPO))
    except ValueError:
        return str(Path(checkpoint).resolve())


def grid_columns(batch: int) -> int:
    """Images per row of the app's grid (farmer.sampling.image_grid's default, ⌈√B⌉)."""
    return max(1, math.ceil(math.sqrt(batch)))


def sample_command(checkpoint: Path, label: int | None, batch: int, settings: dict, device: str,
                   out: str = "samples.png") -> str:
    """The shell command (`farmer sample …`) for these settings; settings holds the app's values."""
    args = ["farmer", "sample", shown_path(checkpoint)]
    args += ["--num", str(batch)] if label is None else ["--labels", str(label), "--repeat", str(batch)]
    s = settings
    num = lambda name: repr(float(s[name]))              # noqa: E731  shortest exact form: the same float back
    args += ["--guidance", s["guidance"], "--cfg", num("cfg_scale"),
             "--candidates-cond", str(s["candidates_cond"]), "--candidates-uncond", str(s["candidates_uncond"]),
             "--t-pi", num("t_pi"), "--t-sigma", num("t_sigma"),
             "--t-pi-verify", num("t_pi_verify"), "--t-sigma-verify", num("t_sigma_verify"),
             "--t-select", num("t_select"), "--resample-weights", s.get("resample_weights", "paper"),
             "--denoise", repr(float(s.get("denoise", 0.0))), "--decoder", s["decoder"], "--seed", str(s["seed"]),
             "--nrow", str(grid_columns(batch)), "--device", device, "--out", out]
    return shlex.join(args)
