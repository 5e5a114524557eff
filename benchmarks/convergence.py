"""Convergence at a fixed wall-clock budget: test bits/dim after N minutes of training.

For each configuration: measure seconds per step on this machine, size the
run (and so its cosine schedule) to fill the budget, train from scratch with
`farmer.train`, then score checkpoints on the first `--test-images` test
images (seeded uniform dequantisation, single sample, conditional). The
curve, bits/dim against training seconds and images seen, goes to JSON and
a PNG; one table sums up every configuration.

    python benchmarks/convergence.py                          # the fmnist default, 25 minutes
    python benchmarks/convergence.py --minutes 10 --configs default lr=1e-3
    python benchmarks/convergence.py --configs split none jetformer --minutes 25

Configurations are named overrides of the preset and training defaults
(CONFIGS below); "key=value" pairs also work, e.g. `lr=3e-3,batch_size=32`.
Timing excludes evaluation and checkpoint writing (the trainer's clock).
Results merge into the JSON keyed by (configuration, minutes, threads), under a
file lock, so two one-thread runs can go side by side on a two-core machine:

    python benchmarks/convergence.py --threads 1 --minutes 10 --configs default &
    python benchmarks/convergence.py --threads 1 --minutes 10 --configs data-init &
"""
from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

import farmer
from farmer.config import FarmerConfig, TrainConfig, train_presets
from farmer.data import load_fashion_mnist
from farmer.likelihood import evaluate_split
from farmer.throughput import train_throughput
from farmer.train import train

HERE = Path(__file__).resolve().parent

# The training recipe before the lever study (issue 7), and the default again after it: the levers
# below each change one thing from it. Spelled out so the lever rows stay fixed if the default moves.
BEFORE_LEVERS = {"batch_size": 64, "data_init": 0}

# The likelihood recipe this benchmark measured (issue 7): the pixel slice and uniform dequantisation.
# The fmnist preset has since moved to DCT mixing and the Gaussian curriculum for samples (issue 14,
# benchmarks/sample_quality.py); every configuration but "preset" starts from this recipe, so the
# stored curves stay reproducible.
LIKELIHOOD = ({"channel_mixing": "none"}, {"noise": "uniform"})

# name -> (model overrides, training overrides)
CONFIGS: dict[str, tuple[dict, dict]] = {
    "default": LIKELIHOOD,
    "preset": ({}, {}),                                       # whatever the fmnist preset is now
    "split": ({"redundant_mode": "split"}, {}),
    "none": ({"redundant_mode": "none"}, {}),
    "jetformer": ({"redundant_mode": "jetformer"}, {}),
    "before-levers": ({}, BEFORE_LEVERS),
    "data-init": ({}, {**BEFORE_LEVERS, "data_init": 256}),
    "batch32+init": ({}, {"batch_size": 32, "data_init": 256}),     # both short-budget levers together
    "batch32": ({}, {**BEFORE_LEVERS, "batch_size": 32}),
    "batch128": ({}, {**BEFORE_LEVERS, "batch_size": 128}),
    "d_I=10": ({"d_informative": 10}, BEFORE_LEVERS),
    "K=32": ({"k_informative": 32, "k_redundant": 32}, BEFORE_LEVERS),
    "ar2": ({"ar_layers": 2}, BEFORE_LEVERS),
    "tarflow-like": ({"flow_layers": 4, "flow_width": 128, "ar_layers": 1, "ar_width": 32,
                      "redundant_mode": "jetformer", "k_informative": 1}, {"lr": 2e-3, "batch_size": 256}),
}


def parse_config(name: str) -> tuple[dict, dict]:
    """A named configuration, or comma-separated key=value overrides of either config."""
    if name in CONFIGS:
        return CONFIGS[name]
    model_keys = set(FarmerConfig.__dataclass_fields__)
    train_keys = set(TrainConfig.__dataclass_fields__)
    m, t = {}, {}
    for item in name.split(","):
        key, _, raw = item.partition("=")
        if not _ or key not in model_keys | train_keys:
            raise SystemExit(f"unknown configuration {name!r}: use one of {sorted(CONFIGS)} or key=value pairs "
                             f"of FarmerConfig/TrainConfig fields")
        value = json.loads(raw) if raw[:1] in "0123456789-[{tfn" and raw not in ("none",) else raw
        (m if key in model_keys else t)[key] = value
    return m, t


def trainer_clock(metrics: Path, batch_size: int):
    """step -> seconds of training on the trainer's own clock (metrics.jsonl), evaluation and
    checkpoint writing excluded. Each record's images/s covers the steps since the previous
    record; checkpoints between records are interpolated linearly."""
    recs = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    steps, seconds = [0], [0.0]
    for r in recs:
        if r["step"] > steps[-1]:
            seconds.append(seconds[-1] + (r["step"] - steps[-1]) * batch_size / r["images_per_s"])
            steps.append(r["step"])
    return lambda step: float(np.interp(step, steps, seconds))


def run_one(name: str, preset: str, minutes: float, test_x, test_y, out: Path, n_points: int,
            threads: int) -> dict:
    model_over, train_over = parse_config(name)
    if name != "preset":                          # every stored configuration varies the likelihood recipe
        model_over, train_over = {**LIKELIHOOD[0], **model_over}, {**LIKELIHOOD[1], **train_over}
    mcfg = farmer.presets[preset].replace(**model_over)
    base = train_presets.get(preset, TrainConfig())
    tcfg = base.replace(data="fashion-mnist", sample_every=0, **train_over)
    torch.set_num_threads(threads)
    # seconds per step measured here and now, then the schedule fills the budget
    tp = train_throughput(mcfg, batch_size=tcfg.batch_size, precision=tcfg.precision, steps=8)
    sec_per_step = tcfg.batch_size / tp["images_per_s"]
    steps = max(50, int(minutes * 60 / sec_per_step))
    every = max(1, steps // n_points)
    tcfg = tcfg.replace(steps=steps, ckpt_every=every, keep_checkpoints=n_points + 1,
                        warmup_steps=min(tcfg.warmup_steps, steps // 10), log_every=min(tcfg.log_every, every))
    run_dir = out / f"{name.replace('/', '_').replace(',', '_')}-{minutes:g}min-{threads}t"
    shutil.rmtree(run_dir, ignore_errors=True)                # from scratch: no stale checkpoints to score
    print(f"[{name}] {tp['images_per_s']:.0f} img/s measured -> {steps} steps of batch {tcfg.batch_size} "
          f"for {minutes} min; model {mcfg.to_dict()}", flush=True)
    t0 = time.time()
    train(mcfg, tcfg, run_dir, progress=False, log=lambda s: None)
    wall = time.time() - t0
    clock = trainer_clock(run_dir / "metrics.jsonl", tcfg.batch_size)
    curve = []
    for ck in sorted((run_dir / "checkpoints").glob("step_*")):
        step = int(ck.name.split("_")[1])
        model = farmer.load(ck)
        ev = evaluate_split(model, test_x, test_y, batch_size=500, seed=0)
        train_s = clock(step)
        curve.append({"step": step, "images_seen": step * tcfg.batch_size, "seconds": train_s,
                      "test_bpd": ev["bpd"], "test_bpd_stderr": ev["bpd_stderr"]})
        print(f"[{name}] step {step:6d}  {train_s / 60:6.1f} min  test bpd {ev['bpd']:.4f}", flush=True)
    return {"name": name, "model": mcfg.to_dict(), "train": tcfg.to_dict(), "minutes": minutes,
            "images_per_s": tp["images_per_s"], "wall_seconds": wall, "curve": curve,
            "final_test_bpd": curve[-1]["test_bpd"], "threads": threads}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(19, 5.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    # recipes at the full two threads against minutes and images seen; lever pairs (one thread each)
    panels = ((axes[0], False, "seconds", "recipes, 2 threads"), (axes[1], True, "seconds", "levers, 1 thread each"),
              (axes[2], False, "images_seen", "recipes, 2 threads, per image"))
    for ax, one, x, title in panels:
        rows = [r for r in results if (r.get("threads") == 1) == one]
        names = list(dict.fromkeys(r["name"] for r in rows))            # one colour per configuration,
        for r in rows:                                                   # one line style per budget
            ls = "-" if one or 10 < r["minutes"] < 50 else ":" if r["minutes"] <= 10 else "--"
            colour = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"](names.index(r["name"]) % 20)
            ax.plot([p[x] / (60 if x == "seconds" else 1) for p in r["curve"]], [p["test_bpd"] for p in r["curve"]],
                    ls=ls, marker="o", ms=3, color=colour, label=f"{r['name']} ({r['minutes']:g} min)")
        ax.set(xlabel="training minutes (trainer's clock)" if x == "seconds" else "images seen",
               ylabel="test bits/dim (first images, 1 sample)", title=title)
        if x == "images_seen":
            ax.set_xscale("log")
        else:
            if not one:
                ax.axhline(5.16, ls="--", c="grey", lw=1, label="TARFlow ref., 25 min")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fmnist", help="model preset to train")
    p.add_argument("--configs", nargs="+", default=["default"],
                   help=f"configurations to run back to back: {sorted(CONFIGS)} or key=value,key=value")
    p.add_argument("--minutes", type=float, default=25.0, help="training wall-clock budget per configuration")
    p.add_argument("--test-images", type=int, default=2000, help="first N test images to score")
    p.add_argument("--points", type=int, default=5, help="checkpoints (curve points) per run")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    p.add_argument("--out", default="runs/convergence", help="folder for the runs")
    p.add_argument("--json", default=str(HERE / "convergence.json"), help="where to write the results")
    args = p.parse_args()

    test = load_fashion_mnist("test")
    test_x, test_y = test.images[:args.test_images], test.labels[:args.test_images]
    out = Path(args.out)
    results = [run_one(c, args.preset, args.minutes, test_x, test_y, out, args.points, args.threads)
               for c in args.configs]
    print(f"\n{'configuration':<28} {'img/s':>7} {'steps':>7} {'test bpd':>9}")
    for r in results:
        print(f"{r['name']:<28} {r['images_per_s']:7.0f} {r['train']['steps']:7d} {r['final_test_bpd']:9.4f}")
    path = Path(args.json)
    key = lambda r: (r["name"], r["minutes"], r["threads"])                  # noqa: E731
    with open(path.with_suffix(".lock"), "w") as lock:                       # runs in parallel merge safely
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else {"runs": []}
        old["runs"] = [o for o in old["runs"] if key(o) not in {key(r) for r in results}] + results
        old["machine"] = {"torch": torch.__version__, "test_images": args.test_images,
                          "estimator": "single-sample uniform dequantisation, seed 0, conditional"}
        path.write_text(json.dumps(old, indent=2))
        plot(old["runs"], path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
