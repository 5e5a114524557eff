"""Dimension-reduction ablation: split on / off / JetFormer's N(0, I), by bits/dim and FD (paper Table 3 rows 1–2).

    # 1. train the three variants for the same wall-clock budget (runs/convergence/NAME)
    .venv/bin/python benchmarks/convergence.py default none jetformer --minutes 10
    # 2. score them
    .venv/bin/python benchmarks/dimension_reduction.py [--runs runs/convergence] [--samples 2000]

For each run folder (its newest checkpoint) it reports the model's redundant
mode, training steps, test bits/dim on the first --test images (seeded uniform
dequantisation, the convergence benchmark's protocol) and, from --samples
class-conditional samples (balanced labels, same seeds for every model),
class consistency and FD (Fashion-MNIST classifier features; not FID), both
unguided and with resampling CFG at --cfg. Writes
benchmarks/dimension_reduction.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.checkpoint import load  # noqa: E402
from farmer.data import load_fashion_mnist  # noqa: E402
from farmer.likelihood import evaluate_split  # noqa: E402
from farmer.quality import load_classifier, predict, sample_quality  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LABELS = {"split": "FARMER split (d_I informative + shared GMM for Z^R)",
          "none": "no reduction (all d channels per-token AR)",
          "jetformer": "JetFormer: Z^R ~ N(0, I)"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("names", nargs="*", default=["default", "none", "jetformer"], help="run folders under --runs")
    p.add_argument("--runs", default=str(REPO / "runs" / "convergence"))
    p.add_argument("--classifier", default=str(REPO / "checkpoints" / "fmnist-classifier"))
    p.add_argument("--test", type=int, default=2000, help="first N test images for bits/dim")
    p.add_argument("--samples", type=int, default=2000, help="samples per model and guidance setting")
    p.add_argument("--cfg", type=float, default=2.0, help="w of the guided row (resampling CFG)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--out", default=str(HERE / "dimension_reduction.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    classifier, _ = load_classifier(args.classifier)
    test = load_fashion_mnist("test")
    reference = predict(classifier, test.images)[1]
    rows = []
    print(f"{'run':>10} {'mode':>9} {'steps':>6} {'test bpd':>8} | {'FD w=0':>8} {'cons w=0':>8} | "
          f"{'FD w=' + format(args.cfg, 'g'):>8} {'cons':>6}")
    for name in args.names:
        checkpoints = Path(args.runs) / name / "checkpoints"
        newest = checkpoints / (checkpoints / "latest").read_text().strip()
        model = load(newest).eval()
        meta = json.loads((newest / "config.json").read_text())
        bpd = evaluate_split(model, test.images[:args.test], test.labels[:args.test], seed=0)["bpd"]
        row = {"run": name, "redundant_mode": model.cfg.redundant_mode, "step": meta.get("step"),
               "parameters": model.num_parameters()["total"], "test_bpd": bpd, "test_images": args.test}
        for tag, kw in (("unguided", {"guidance": "none"}), ("guided", {"guidance": "resample", "cfg_scale": args.cfg})):
            q = sample_quality(model, classifier, reference, num_samples=args.samples, batch_size=args.batch, **kw)
            row[tag] = {**kw, "fd": q["fd"], "class_consistency": q["class_consistency"],
                        "num_samples": args.samples}
        rows.append(row)
        print(f"{name:>10} {row['redundant_mode']:>9} {str(row['step']):>6} {bpd:8.3f} | "
              f"{row['unguided']['fd']:8.2f} {row['unguided']['class_consistency']:8.3f} | "
              f"{row['guided']['fd']:8.2f} {row['guided']['class_consistency']:6.3f}", flush=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "labels": LABELS, "cfg": args.cfg}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
