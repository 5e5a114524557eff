"""Out-of-distribution detection with the shipped model: bits/dim per set and the AUROC of four scores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ood.py [--n 1000]

In distribution: the first --n Fashion-MNIST test images. Out of distribution
(`farmer.ood.ood_sets`): --n scikit-learn digits upscaled to 28×28, --n
synthetic shapes, 64 constant images and --n uniform-noise images. Every image
is scored under the null class (single-sample, seed 0 per batch as
`evaluate_split`); the typicality reference is the mean bits/dim of the first
--n training images. Scores (higher = more OOD, `farmer.ood`): bpd,
complexity (bpd − PNG bits/dim, Serrà et al. 2020), typicality (|bpd − train
mean|) and class gain (bpd under the uniform class mixture − bpd under the null
class). Writes benchmarks/ood.json. Notebook 06 runs the same study on 300
images per set.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer import ood  # noqa: E402
from farmer.data import load_fashion_mnist  # noqa: E402
from farmer.likelihood import evaluate_split  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCORES = ("bpd", "complexity", "typicality", "class_gain")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "fmnist"))
    p.add_argument("--n", type=int, default=1000, help="images per set (the constant set has 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "ood.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = farmer.load(args.checkpoint).eval()
    train_ref, _ = load_fashion_mnist("train").get_batch(range(args.n))
    ref_bpd = evaluate_split(model, train_ref, conditional=False, seed=args.seed)["bpd"]
    test, _ = load_fashion_mnist("test").get_batch(range(args.n))
    sets = {"Fashion-MNIST test": test} | ood.ood_sets(n=args.n, seed=args.seed, n_constant=64)
    scores = {name: ood.ood_scores(model, x, seed=args.seed, reference_bpd=ref_bpd) for name, x in sets.items()}
    inside = scores["Fashion-MNIST test"]
    outside = [n for n in sets if n != "Fashion-MNIST test"]
    auroc = {n: {k: ood.auroc(inside[k], scores[n][k]) for k in SCORES} for n in outside}
    auroc["all OOD"] = {k: ood.auroc(inside[k], torch.cat([scores[n][k] for n in outside])) for k in SCORES}
    report = {"meta": {"checkpoint": args.checkpoint, "n": args.n, "seed": args.seed,
                       "reference_bpd_train": ref_bpd, "conditioning": "null class (unconditional)",
                       "estimator": "single-sample uniform dequantisation", "seconds": time.perf_counter() - t0,
                       "command": "python benchmarks/ood.py"},
              "sets": {n: {"images": len(sets[n]), **{f"{k}_mean": float(s[k].mean()) for k in s},
                           "bpd_std": float(s["bpd"].std())} for n, s in scores.items()},
              "auroc": auroc}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"training reference: {ref_bpd:.3f} bits/dim; {time.perf_counter() - t0:.0f} s")
    print(f"{'set':<20} {'n':>5} {'bpd':>12} {'PNG bpd':>8}")
    for n, s in scores.items():
        print(f"{n:<20} {len(sets[n]):>5} {s['bpd'].mean():>6.3f} ± {s['bpd'].std():.2f} {s['png_bpd'].mean():>8.3f}")
    print("\nAUROC, Fashion-MNIST test vs each set (higher score = OOD)")
    print(f"{'set':<12}" + "".join(f"{k:>12}" for k in SCORES))
    for n, row in auroc.items():
        print(f"{n:<12}" + "".join(f"{row[k]:>12.3f}" for k in SCORES))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
