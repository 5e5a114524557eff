"""Training throughput: images/s and achieved GFLOP/s of a training step, float32 and bf16 (DESIGN §6).

    .venv/bin/python benchmarks/train_throughput.py [--preset fmnist] [--batch 64] [--steps 5] [--device cpu]

One step is the trainer's whole step: uniform dequantisation, forward,
backward, gradient clipping, AdamW, EMA update (farmer.throughput, the same
pieces farmer.train uses). FLOPs are counted by torch's FlopCounterMode
(matmuls and attention, forward + backward); elementwise work is not counted,
so the achieved figure is a lower bound on the work the machine did. The
peak is a 2048² matmul in the same dtype, same device and threads, best of
~1 s of repeats. bf16 autocasts only the transformer trunks; the affine maps
and log-dets stay float32 (as in training). Prints a table and writes JSON
next to this file (benchmarks/train_throughput.json). Absolute figures drift
on shared machines; the fraction of peak much less.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.throughput import matmul_peak, train_throughput  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fmnist", choices=sorted(farmer.presets), help="model preset (default fmnist)")
    p.add_argument("--batch", type=int, default=64, help="images per step (default 64, the fmnist training batch)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per precision after 2 warm-up steps")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES),
                   help="precisions to time (default fp32 bf16)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")), help="JSON output")
    args = p.parse_args(argv)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    device = torch.device(dev)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"training throughput: preset {args.preset!r}, batch {args.batch}, device {device} ({name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    rows = []
    for prec in args.precision:
        peak = matmul_peak(DTYPES[prec], device=device)
        run = train_throughput(farmer.presets[args.preset], args.batch, prec, args.steps, device=device)
        run["peak_gflops"] = peak
        run["fraction_of_peak"] = run["achieved_gflops"] / peak
        rows.append(run)
    print("\n| precision | images/s | s/step | GFLOP/step | achieved GFLOP/s | matmul peak GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['images_per_s']:.1f} | {r['seconds_per_step']:.4f} | "
              f"{r['gflop_per_step']:.2f} | {r['achieved_gflops']:.1f} | {r['peak_gflops']:.1f} | "
              f"{100 * r['fraction_of_peak']:.1f}% |")
    if len(rows) == 2:
        print(f"\nbf16 / fp32 images/s: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.2f}")
    result = {"preset": args.preset, "batch": args.batch, "device": str(device), "device_name": name,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
              "flops_counted": "matmul + attention, forward + backward (torch FlopCounterMode)", "runs": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
