"""Sampling speed: seconds per image for every stage, one run, same batch and device (DESIGN §6).

    .venv/bin/python benchmarks/sampling.py [--checkpoint DIR] [--preset fmnist] [--batch 8 64]

Stages: AF forward; AF inverse without KV cache, with it, distilled; the AR
without CFG, with naive CFG, with resampling CFG; end to end (resampling
CFG) with each decoder. Prints a table and the ratios the paper reports
(Table 4/5) for each batch size, and writes JSON next to this file
(benchmarks/sampling.json).

Why two batch sizes: on a CPU the ratios pull in opposite directions. A
small batch leaves the N·n single-token steps of the sequential inverse
bound by per-step overhead (so the one-pass student wins by a lot, and the
O(N²) uncached inverse loses little); a large batch makes every variant
bound by arithmetic (the cache saves the O(N²) recomputation, but the
sequential and one-pass inverses do the same arithmetic). A GPU sits at the
small-batch end for much larger batches.

Without a checkpoint the model is the preset, untrained, with its
zero-initialised flow output projections randomised (N(0, 0.02²)) so the
inverse does real work; with no distilled student the undistilled copy is
timed. Timings do not depend on the weights (the same operations run), so
the ratios are structural; sample quality is not measured here. Each time
is the median of --repeats runs after one warm-up; absolute times drift on
shared machines, ratios much less.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.checkpoint import load  # noqa: E402
from farmer.distill import make_student  # noqa: E402
from farmer.sampling import sample_latents  # noqa: E402

CFG_W = 2.0    # guidance weight for the CFG rows (paper range 1.5–3.5)


def timed(fn, repeats: int, device: torch.device, slow: float = 2.0) -> float:
    """Median wall-clock seconds of fn() over `repeats` runs after one warm-up run
    (a single run when the warm-up took over `slow` seconds, to keep the benchmark short)."""
    def once() -> float:
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t
    first = once()
    return statistics.median(once() for _ in range(1 if first > slow else repeats))


def build_model(args, device: torch.device) -> tuple[farmer.Farmer, str]:
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is not None and ckpt.exists():
        model = load(ckpt, device=device)
        source = f"checkpoint {ckpt}"
    else:
        torch.manual_seed(0)
        model = farmer.Farmer(farmer.presets[args.preset])
        with torch.no_grad():
            for block in model.flow.blocks:
                block.proj_out.weight.normal_(std=0.02)
        model = model.to(device).eval()
        source = f"preset {args.preset!r}, untrained, flow proj_out randomised"
    if model.student is None:
        model.student = make_student(model)
        source += "; student = undistilled copy (same cost as a distilled one)"
    return model, source


def bench(model: farmer.Farmer, B: int, R: int, device: torch.device) -> tuple[dict, dict]:
    """All stages at batch B: (seconds per image by stage, ratios)."""
    cfg = model.cfg
    labels = torch.arange(B, device=device) % cfg.num_classes if cfg.num_classes else None
    kw = dict(num_samples=B, seed=0)
    with torch.inference_mode():
        z = sample_latents(model, labels, **kw)                                # (B, N, d) latents
        tokens = model.flow.reverse(z)                                         # (B, N, d) their images
    rows: dict[str, float] = {}

    def run(name: str, fn) -> None:
        with torch.inference_mode():
            rows[name] = timed(fn, R, device) / B
        print(f"  B={B:<4d} {name:<46s} {rows[name]:.6f} s/img", flush=True)

    run("AF forward", lambda: model.flow(tokens))
    run("AF inverse, no KV cache", lambda: model.flow.reverse(z, use_cache=False))
    run("AF inverse, KV cache", lambda: model.flow.reverse(z, use_cache=True))
    run("AF inverse, distilled", lambda: model.student(z))
    run("AR, no CFG", lambda: sample_latents(model, labels, guidance="none", **kw))
    run("AR, naive CFG", lambda: sample_latents(model, labels, guidance="naive", cfg_scale=CFG_W, **kw))
    run("AR, resampling CFG", lambda: sample_latents(model, labels, guidance="resample", cfg_scale=CFG_W, **kw))
    for dec in ("sequential_nocache", "sequential", "distilled"):
        run(f"end to end (resampling CFG), {dec}",
            lambda dec=dec: farmer.sample(model, labels, guidance="resample", cfg_scale=CFG_W, decoder=dec, **kw))
    e2e = "end to end (resampling CFG), "
    ratios = {
        "distilled inverse / AF forward (target <= 1.3; paper 0.0076/0.0066 = 1.15)":
            rows["AF inverse, distilled"] / rows["AF forward"],
        "uncached / cached inverse (target >= 5)":
            rows["AF inverse, no KV cache"] / rows["AF inverse, KV cache"],
        "cached / distilled inverse (target >= 10; paper 22)":
            rows["AF inverse, KV cache"] / rows["AF inverse, distilled"],
        "end to end, sequential / distilled (paper 0.2189/0.0567 = 3.9)":
            rows[e2e + "sequential"] / rows[e2e + "distilled"],
        "AR, resampling CFG / no CFG": rows["AR, resampling CFG"] / rows["AR, no CFG"],
        "AR, naive CFG / no CFG": rows["AR, naive CFG"] / rows["AR, no CFG"],
    }
    return rows, ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="checkpoints/fmnist",
                   help="checkpoint to time (default checkpoints/fmnist; the preset if it does not exist)")
    p.add_argument("--preset", default="fmnist", help="model preset when there is no checkpoint")
    p.add_argument("--batch", type=int, nargs="+", default=[8, 64],
                   help="batch sizes; every stage of one table runs at the same batch (default 8 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per stage (median reported)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")), help="JSON output")
    args = p.parse_args(argv)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(dev)
    model, source = build_model(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"sampling benchmark: {source}; device {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats} (1 for stages over 2 s)")
    runs = []
    for B in args.batch:
        rows, ratios = bench(model, B, args.repeats, device)
        runs.append({"batch": B, "seconds_per_image": rows, "ratios": ratios})
    for run in runs:
        print(f"\nbatch {run['batch']}, {device}\n\n| stage | s/img |\n|---|---|")
        for k, v in run["seconds_per_image"].items():
            print(f"| {k} | {v:.6f} |")
        print("\n| ratio | value |\n|---|---|")
        for k, v in run["ratios"].items():
            print(f"| {k} | {v:.2f} |")
    result = {"source": source, "preset": args.preset, "device": str(device), "device_name": name,
              "repeats": args.repeats, "cfg_scale": CFG_W, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.platform(), "runs": runs}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
