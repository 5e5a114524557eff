"""Throughput levers of the fmnist training step on this CPU, measured back to back in one run.

    .venv/bin/python benchmarks/train_levers.py [--steps 8] [--repeats 3] [--ddp-steps 60]

Rows (images/s of the trainer's whole step, as in benchmarks/train_throughput.py):
  * the baseline: fp32, batch 64, all threads;
  * one thread; batch 32 and 128; bf16 autocast of the trunks; torch.compile of the loss;
  * data parallel: `farmer train` on Fashion-MNIST as one process with all threads against
    `torchrun --nproc_per_node <threads>` with one thread per process (gloo), images/s
    read from each run's metrics.jsonl after its first logged interval.
The in-process rows are measured round-robin `--repeats` times and the median
kept; ratios are to the baseline of the same run, since these machines are
shared and absolute figures drift. A lever that does not raise images/s cannot shorten the
wall-clock time to a given bits/dim; the ones that change the optimisation
(batch size, data-dependent init, model shape) are measured by
benchmarks/convergence.py instead. Writes benchmarks/train_levers.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.throughput import train_throughput  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def trainer_images_per_s(cmd: list[str], threads_per_process: int, out: Path) -> float:
    """Run a `farmer train` command line; mean images/s over its logged intervals after the first."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process), "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    rates = [r["images_per_s"] for r in recs[1:]] or [recs[-1]["images_per_s"]]
    return sum(rates) / len(rates)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="timed steps per in-process measurement")
    p.add_argument("--repeats", type=int, default=3, help="round-robin passes over the in-process rows (median kept)")
    p.add_argument("--ddp-steps", type=int, default=60, help="training steps of each data-parallel run (0 = skip)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads of the baseline")
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".json")), help="JSON output")
    args = p.parse_args(argv)
    cfg = farmer.presets["fmnist"]
    T = args.threads
    rows: list[dict] = []

    levers = [(f"baseline (fp32, batch 64, {T} threads)", T, {}), ("1 thread", 1, {}),
              ("batch 32", T, {"batch_size": 32}), ("batch 128", T, {"batch_size": 128}),
              ("bf16 autocast of the trunks", T, {"precision": "bf16"}),
              ("torch.compile of the loss", T, {"compile": True})]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in levers}
    errors: dict[str, str] = {}
    for rep in range(args.repeats):                            # round-robin, so drift hits every row alike
        for name, threads, kw in levers:
            if name in errors:
                continue
            torch.set_num_threads(threads)
            try:
                r = train_throughput(cfg, steps=args.steps, warmup=3 if kw.get("compile") else 2, **kw)
            except Exception as e:                             # no compiler / unsupported op: record why
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                print(f"{name} failed: {errors[name]}")
                continue
            rates[name].append(r["images_per_s"])
            print(f"[{rep + 1}/{args.repeats}] {name:<34} {r['images_per_s']:7.1f} img/s", flush=True)
    torch.set_num_threads(T)
    for name, threads, _ in levers:
        v = sorted(rates[name])
        rows.append({"lever": name, "threads": threads, "images_per_s": v[len(v) // 2] if v else None,
                     "all_images_per_s": v, **({"error": errors[name]} if name in errors else {})})

    if args.ddp_steps:
        flags = ["train", "--preset", "fmnist", "--steps", str(args.ddp_steps), "--log-every", "10",
                 "--ckpt-every", "0", "--sample-every", "0", "--warmup-steps", "10", "--no-progress"]
        with tempfile.TemporaryDirectory() as tmp:
            one = Path(tmp) / "one"
            r1 = trainer_images_per_s([sys.executable, "-m", "farmer", *flags, "--out", str(one)], T, one)
            rows.append({"lever": f"farmer train, 1 process × {T} threads", "threads": T, "images_per_s": r1})
            print(f"{rows[-1]['lever']:<34} {r1:7.1f} img/s", flush=True)
            ddp = Path(tmp) / "ddp"
            rd = trainer_images_per_s([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(T),
                                       "-m", "farmer", *flags, "--out", str(ddp)], 1, ddp)
            rows.append({"lever": f"torchrun, {T} processes × 1 thread (DDP)", "threads": T, "images_per_s": rd,
                         "vs_single_process": rd / r1})
            print(f"{rows[-1]['lever']:<34} {rd:7.1f} img/s", flush=True)

    base = rows[0]["images_per_s"]
    print(f"\n| lever | images/s | vs baseline |\n|---|---|---|")
    for r in rows:
        v = r["images_per_s"]
        r["vs_baseline"] = None if v is None else v / base
        print(f"| {r['lever']} | {'failed' if v is None else f'{v:.1f}'} | "
              f"{'' if v is None else f'{v / base:.2f}×'} |")
    Path(args.out).write_text(json.dumps({"preset": "fmnist", "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
