"""Scaling up: the trainer's steps/s, images/s, peak memory per rank and achieved TFLOP/s, DDP against FSDP.

    .venv/bin/python benchmarks/scale.py                 # CPU: the small rows (fmnist, imagenet64), 2 processes
    .venv/bin/python benchmarks/scale.py --big-cpu       # + farmer-1.1b-p16 with FSDP on the CPU (~25 GB machine)
    .venv/bin/python benchmarks/scale.py --device cuda   # a GPU machine: every row, one process per GPU

Each row is a real `farmer.train` run under `torch.distributed.run` (the
torchrun launcher) on synthetic data of the preset's shape: DDP (the default
trainer) or FSDP2 (`--fsdp`, farmer/sharding.py), logging every step and
writing no checkpoint. Steps/s is timed over the steps after the warm-up ones
from the run's own metrics.jsonl; peak memory is each rank's own (CUDA max
allocated on a GPU, the resident-set high-water mark on a CPU). FLOPs per
image are counted once per preset by torch's FlopCounterMode on a shape-only
(meta) build of the model, forward + backward of the loss: matmuls and
attention, the model's FLOPs (activation-checkpoint recomputation is not
counted). The peak is the device's bf16 dense matmul rate: measured here
(an n×n matmul, per process, times the processes) and, on known GPUs, the
vendor's figure.

The loader rows time the image-folder pipeline alone (JPEG decode + random
resized crop + flip in DataLoader workers, farmer.folders.ImageFolder) on a
generated folder of JPEGs larger than the preset, against the training rows'
images/s at the same image size. Prints a table and writes
benchmarks/scale_<device>.json. Absolute figures drift on shared machines;
ratios from one run much less.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Vendor bf16 dense (no sparsity) tensor-core peaks, TFLOP/s.
SPEC_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}

#           preset, mode, global batch, warm-up steps, timed steps, activation checkpointing
ROWS = {
    "cpu": [("fmnist", "ddp", 64, 3, 6, False), ("fmnist", "fsdp", 64, 3, 6, False),
            ("imagenet64", "ddp", 4, 1, 2, False), ("imagenet64", "fsdp", 4, 1, 2, False)],
    "cuda": [("fmnist", "ddp", 256, 5, 20, False), ("fmnist", "fsdp", 256, 5, 20, False),
             ("imagenet64", "ddp", 64, 3, 10, False), ("imagenet64", "fsdp", 64, 3, 10, False),
             ("farmer-1.1b-p16", "ddp", 8, 2, 5, True), ("farmer-1.1b-p16", "fsdp", 8, 2, 5, True)],
}
BIG_CPU = ("farmer-1.1b-p16", "fsdp", 2, 1, 1, True)     # batch 1 per rank, 2 steps (one timed)


# ============================================================================ one row, inside torchrun
def worker(spec: dict) -> None:
    from farmer.config import TrainConfig, presets, train_presets
    from farmer.train import train
    preset, out = spec["preset"], spec["out"]
    base = train_presets.get(preset, TrainConfig())
    cfg = base.replace(data="synthetic", batch_size=spec["batch"], steps=spec["warmup"] + spec["timed"],
                       log_every=1, sample_every=0, warmup_steps=1, device=spec["device"],
                       precision=spec["precision"], fsdp=spec["mode"] == "fsdp",
                       activation_checkpointing=spec["ac"], num_workers=0,
                       ema_decay=spec.get("ema_decay", base.ema_decay))
    res = train(presets[preset], cfg, out, progress=False, checkpoints=False, log=lambda s: None)
    if int(os.environ.get("RANK", "0")) == 0:
        recs = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        t = {r["step"]: r["time"] for r in recs}
        a, b = spec["warmup"], spec["warmup"] + spec["timed"]
        steps_per_s = (b - a) / (t[b] - t[a])
        print("SCALE_RESULT " + json.dumps({"steps_per_s": steps_per_s, "images_per_s": steps_per_s * spec["batch"],
                                            "peak_memory_per_rank": res.metrics["peak_memory_per_rank"],
                                            "final_bpd": recs[-1]["bpd"]}), flush=True)


# ============================================================================ the parent
def flops_per_image(preset: str) -> float:
    """Forward + backward FLOPs of the loss for one image, counted on a shape-only build (no memory)."""
    import farmer
    from farmer.preflight import meta_build
    from torch.utils.flop_counter import FlopCounterMode
    cfg = farmer.presets[preset]
    model = meta_build(lambda: farmer.Farmer(cfg)).train()
    x = torch.empty(2, cfg.channels, cfg.image_size, cfg.image_size, device="meta")
    y = torch.zeros(2, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.loss(x, y)
        loss.backward()
    return counter.get_total_flops() / 2


def matmul_peaks(device: torch.device, procs: int) -> tuple[float, float, float | None, str]:
    """(measured bf16 peak of all processes, measured fp32 peak, vendor bf16 peak or None, device name), TFLOP/s."""
    from farmer.throughput import matmul_peak
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        bf16 = matmul_peak(torch.bfloat16, n=8192, device=device) / 1e3 * procs
        fp32 = matmul_peak(torch.float32, n=8192, device=device) / 1e3 * procs
        spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in name), None)
        return bf16, fp32, (spec * procs if spec else None), name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                    # each worker runs one thread
    try:
        bf16 = matmul_peak(torch.bfloat16, n=1024, device="cpu") / 1e3 * procs
        fp32 = matmul_peak(torch.float32, n=1024, device="cpu") / 1e3 * procs
    finally:
        torch.set_num_threads(threads)
    return bf16, fp32, None, platform.processor() or "cpu"


def run_row(row: tuple, device: str, procs: int, tmp: Path, ema_decay: float | None = None) -> dict:
    preset, mode, batch, warmup, timed, ac = row
    spec = {"preset": preset, "mode": mode, "batch": batch, "warmup": warmup, "timed": timed, "ac": ac,
            "device": device, "precision": "bf16" if device == "cuda" else "fp32",
            "out": str(tmp / f"{preset}-{mode}")}
    if ema_decay is not None:
        spec["ema_decay"] = ema_decay
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1" if device == "cpu" else "4")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("SCALE_RESULT ")), None)
    out = {"preset": preset, "mode": mode, "processes": procs, "global_batch": batch, "precision": spec["precision"],
           "activation_checkpointing": ac, "warmup_steps": warmup, "timed_steps": timed, "wall_s": wall}
    if ema_decay is not None:
        out["ema_decay"] = ema_decay
    if p.returncode != 0 or line is None:
        tail = (p.stdout + p.stderr).strip().splitlines()[-6:]
        killed = "SIGKILL" in p.stdout + p.stderr or "Signal 9" in p.stdout + p.stderr
        out["error"] = ("killed (out of memory)" if killed else f"exit {p.returncode}") + ": " + " | ".join(tail)[-600:]
        return out
    return {**out, **json.loads(line[len("SCALE_RESULT "):])}


def loader_row(image_size: int, workers: int, tmp: Path, batch: int = 64, batches: int = 12) -> dict:
    """Images/s of the image-folder loader alone: JPEGs of 1.5-2.5× the preset's size, random crops, workers."""
    import numpy as np
    from PIL import Image
    from farmer.data import iterate_batches
    from farmer.folders import ImageFolder
    root = tmp / "jpegs"
    rng = np.random.default_rng(0)
    n = batch * batches
    for i in range(n):
        w, h = (int(image_size * rng.uniform(1.5, 2.5)) for _ in range(2))
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)      # smooth-ish content
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
        (root / f"c{i % 10}").mkdir(parents=True, exist_ok=True)
        img.save(root / f"c{i % 10}" / f"{i}.jpg", quality=90)
    ds = ImageFolder(root, image_size, 3, crop="random", seed=0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    idx = [order[k * batch:(k + 1) * batch] for k in range(batches)]
    it = iterate_batches(ds, idx[:1], workers)                   # warm-up: worker start
    next(it)
    t0 = time.perf_counter()
    count = sum(x.shape[0] for x, _ in iterate_batches(ds, idx, workers))
    sec = time.perf_counter() - t0
    return {"loader": f"image folder, {image_size}×{image_size} RGB, random crop + flip", "workers": workers,
            "batch": batch, "images": count, "images_per_s": count / sec,
            "source_sizes": f"{int(1.5 * image_size)}-{int(2.5 * image_size)} px JPEG q90",
            "note": "includes the DataLoader's start-up of its workers"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (default) or cuda")
    p.add_argument("--procs", type=int, default=None, help="processes per row (default: 2 on CPU, all GPUs)")
    p.add_argument("--big-cpu", action="store_true", help="CPU: also farmer-1.1b-p16 with FSDP at batch 1 per "
                   "rank, 2 steps, activation checkpointing and no EMA copy (needs ~22 GB, several minutes)")
    p.add_argument("--only", nargs="*", default=None, help="only the rows of these presets")
    p.add_argument("--loader-workers", type=int, default=None, help="DataLoader workers (default: 2 CPU, 8 GPU)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/scale_<device>.json)")
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no GPU here")
    procs = args.procs or (torch.cuda.device_count() if device.type == "cuda" else 2)
    rows = list(ROWS[device.type]) + ([BIG_CPU] if args.big_cpu and device.type == "cpu" else [])
    if args.only:
        rows = [r for r in rows if r[0] in args.only]
    peak, fp32_peak, spec_peak, name = matmul_peaks(device, procs)
    print(f"scale: {device} ({name}), {procs} process(es), torch {torch.__version__}; matmul peak measured "
          f"bf16 {peak:.3f}, fp32 {fp32_peak:.3f} TFLOP/s" + (f", vendor bf16 {spec_peak:.0f}" if spec_peak else ""),
          flush=True)
    flops = {preset: flops_per_image(preset) for preset in {r[0] for r in rows}}
    results = []
    with tempfile.TemporaryDirectory(prefix="farmer-scale-") as tmp:
        for row in rows:
            r = run_row(row, device.type, procs, Path(tmp), ema_decay=0.0 if row is BIG_CPU else None)
            r["gflop_per_image"] = flops[row[0]] / 1e9
            if "images_per_s" in r:
                r["achieved_tflops"] = flops[row[0]] * r["images_per_s"] / 1e12
                r["of_measured_peak"] = r["achieved_tflops"] / peak
                r["of_measured_fp32_peak"] = r["achieved_tflops"] / fp32_peak
                if spec_peak:
                    r["of_vendor_peak"] = r["achieved_tflops"] / spec_peak
            results.append(r)
            print(json.dumps(r), flush=True)
        import farmer
        sizes = sorted({farmer.presets[r["preset"]].image_size for r in results if r["preset"] != "fmnist"})
        workers = args.loader_workers or (8 if device.type == "cuda" else 2)
        loaders = [loader_row(s, workers, Path(tmp)) for s in sizes]
    print("\n| preset | mode | procs | batch | steps/s | images/s | peak memory per rank (GiB) | "
          "GFLOP/image | TFLOP/s | of bf16 peak | of fp32 peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['preset']} | {r['mode']} | {r['processes']} | {r['global_batch']} | {r['error'][:60]} |"
                  " | | | | | |")
            continue
        mem = ", ".join(f"{m / 2**30:.2f}" for m in r["peak_memory_per_rank"])
        print(f"| {r['preset']} | {r['mode']}{' + AC' if r['activation_checkpointing'] else ''} | {r['processes']} | "
              f"{r['global_batch']} | {r['steps_per_s']:.3f} | {r['images_per_s']:.2f} | {mem} | "
              f"{r['gflop_per_image']:.1f} | {r['achieved_tflops']:.4f} | {100 * r['of_measured_peak']:.1f}% | "
              f"{100 * r['of_measured_fp32_peak']:.1f}% |")
    for lo in loaders:
        print(f"\nloader alone: {lo['loader']}, {lo['workers']} workers: {lo['images_per_s']:.0f} images/s")
    out = Path(args.out or Path(__file__).with_name(f"scale_{device.type}.json"))
    out.write_text(json.dumps({"device": str(device), "device_name": name, "processes": procs,
                               "torch": torch.__version__, "bf16_peak_tflops_measured": peak,
                               "fp32_peak_tflops_measured": fp32_peak,
                               "bf16_peak_tflops_vendor": spec_peak, "rows": results, "loader": loaders},
                              indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
