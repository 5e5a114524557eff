"""The Bayes classifier of the shipped model on the Fashion-MNIST test set: accuracy, ECE, reliability.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/classify.py [--checkpoint checkpoints/fmnist] [--k 1]

Every test image is scored under all ten classes, log p(x | y) from the exact
conditional likelihood (one uniform dequantisation draw per image, the same
for every class; --k draws importance-weighted), and classified by Bayes' rule
with a uniform prior: log p(y | x) = log p(x | y) − logsumexp_y' log p(x | y')
(`farmer.classify`). Reported beside the project's CNN classifier
(`checkpoints/fmnist-classifier`): accuracy, log-loss, expected calibration
error over --bins equal-width confidence bins, per-class accuracy and the
confusion matrix. Writes benchmarks/classify.json and benchmarks/classify.png
(reliability diagram and confusion matrix). benchmarks/model_card.py measures
the same figure (same settings) for the model card.
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
from farmer.checkpoint import read_config, resolve  # noqa: E402
from farmer.classify import evaluate_classifier  # noqa: E402
from farmer.data import FMNIST_CLASSES, load_fashion_mnist  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "fmnist"))
    p.add_argument("--classifier", default=str(REPO / "checkpoints" / "fmnist-classifier"),
                   help="the project's CNN classifier, for its test accuracy beside ours")
    p.add_argument("--k", type=int, default=1, help="dequantisation draws per image (importance-weighted)")
    p.add_argument("--seed", type=int, default=0, help="first dequantisation seed")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--bins", type=int, default=15, help="equal-width confidence bins of the ECE")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images (a quick check)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: leaves the other core free)")
    p.add_argument("--out", default=str(HERE / "classify.json"))
    return p.parse_args(argv)


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    edges = np.asarray(result["bin_edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    acc = np.array([np.nan if a is None else a for a in result["accuracy_per_bin"]])
    conf = np.array([np.nan if c is None else c for c in result["confidence"]])
    count = np.asarray(result["count"])
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 0.8, 1.1]})
    ax[0].bar(centres, acc, width=width * 0.95, color="C0", edgecolor="k", label="accuracy in the bin")
    ax[0].bar(centres, conf - acc, bottom=acc, width=width * 0.95, color="C3", alpha=0.35,
              label="gap to mean confidence")
    ax[0].plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax[0].set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-class p(y|x))", ylabel="accuracy",
              title=f"reliability diagram, ECE = {result['ece']:.4f}")
    ax[0].legend(fontsize=8, loc="upper left")
    ax[1].bar(centres, count, width=width * 0.95, color="C7")
    ax[1].set(yscale="log", xlim=(0, 1), xlabel="confidence", ylabel="images", title="images per bin")
    cm = np.asarray(result["confusion"], dtype=float)
    cm = cm / cm.sum(1, keepdims=True).clip(min=1)
    im = ax[2].imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax[2].set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
              title=f"confusion (row-normalised), accuracy {100 * result['accuracy']:.2f}%")
    ax[2].set_xticklabels(FMNIST_CLASSES, rotation=60, ha="right", fontsize=7)
    ax[2].set_yticklabels(FMNIST_CLASSES, fontsize=7)
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = resolve(args.checkpoint)
    meta, _ = read_config(ckpt)
    model = farmer.load(ckpt).eval()
    test = load_fashion_mnist("test")
    images, labels = test.images, test.labels
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    result = evaluate_classifier(model, images, labels, k=args.k, seed=args.seed, batch_size=args.batch,
                                 bins=args.bins, progress=True)
    cnn = None
    clf_config = Path(args.classifier) / "config.json"
    if clf_config.is_file():
        cnn = json.loads(clf_config.read_text()).get("test_accuracy")
    report = {"meta": {"checkpoint": str(ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt),
                       "step": meta.get("step"), "images": len(images), "k": args.k, "seed": args.seed,
                       "batch_size": args.batch, "bins": args.bins, "threads": torch.get_num_threads(),
                       "host": f"{platform.node()} {platform.processor() or platform.machine()}",
                       "torch": torch.__version__,
                       "command": "python benchmarks/classify.py" + (f" --k {args.k}" if args.k != 1 else "")},
              "cnn_classifier_test_accuracy": cnn, "bayes_classifier": result}
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    png = out.with_suffix(".png")
    plot(result, png, f"Bayes classifier from exact likelihoods, {ckpt.name} (step {meta.get('step')}), "
                      f"{len(images):,} test images\n{result['estimator']}")
    print(f"\n{'classifier':<44} {'accuracy':>9} {'ECE':>7} {'log-loss':>9}")
    print(f"{'FARMER Bayes classifier (k = ' + str(args.k) + ')':<44} {100 * result['accuracy']:>8.2f}% "
          f"{result['ece']:>7.4f} {result['log_loss']:>9.4f}")
    if cnn is not None:
        print(f"{'project CNN (checkpoints/fmnist-classifier)':<44} {100 * cnn:>8.2f}% {'—':>7} {'—':>9}")
    print(f"mean confidence {result['mean_confidence']:.4f}; {result['seconds']:.0f} s, "
          f"{torch.get_num_threads()} thread(s)")
    print("per class: " + ", ".join(f"{n} {100 * a:.1f}%" for n, a in zip(FMNIST_CLASSES,
                                                                          result["per_class_accuracy"])))
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
