"""Bits/dim against FD for every model tried: the frontier on which the flagship's two bars sit.

The flagship model is asked for a likelihood bar (test bits/dim) and sample
bars (FD, class consistency) at once. Whether one model can meet both is a
question about the set of models tried: this script puts all of them on one
plot and one table, measured the same way, and marks the ones that no other
model beats on both axes (the Pareto frontier, per FD column).

Points:

    Table 3 runs      every row of benchmarks/table3.json (3,000-step arms), as stored there
    checkpoints       each --checkpoints entry (default: the shipped models; a run folder means its
                      newest checkpoint), scored here with Table 3's protocol

Table 3's protocol, so that every point compares (see benchmarks/table3.py):

    bpd            first --test-images test images (2,000), uniform dequantisation, single sample,
                   conditioned on the true class
    FD, consistency --samples class-balanced samples (1,000), unguided and guided (resampling CFG
                   w = 2, exact weights, the paper's 5 + 5 candidates), the project's classifier

These are not the model cards' figures (all 10,000 test images, 10,000
samples at the card's own guidance): a point here says where a model sits
among the others, its card says whether it meets a bar.

Each measured checkpoint is stored in benchmarks/frontier.json under its path
and the step it was at ("checkpoints/fmnist@18000"), so a model that a path
used to hold stays on the plot after the path is re-shipped; a rerun skips
what is stored (--fresh to redo). --write puts the table between the frontier markers of
docs/studies.md and draws benchmarks/frontier.png.

    python benchmarks/frontier.py                      # measure what is new, print the table
    python benchmarks/frontier.py --write              # the docs block and the plot, from the JSON only
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import farmer  # noqa: E402
from farmer.checkpoint import read_config, resolve  # noqa: E402
from farmer.data import load_fashion_mnist  # noqa: E402
from farmer.likelihood import evaluate_split  # noqa: E402
from farmer.quality import load_classifier, predict  # noqa: E402
from table3 import GUIDED, quality, write_block  # noqa: E402  (one protocol, one block writer)

DEFAULT_CHECKPOINTS = ("checkpoints/fmnist",)
BLOCK = ("<!-- frontier:start -->", "<!-- frontier:end -->")
FD_COLUMNS = (("fd_unguided", "FD unguided"), ("fd_guided", "FD guided"))


def pareto(points: list[dict], x: str, y: str) -> list[bool]:
    """For each point, whether no other point is at least as good on both x and y (lower is better)
    and strictly better on one: the Pareto frontier of (x, y). Points missing y are never on it."""
    have = [p.get(y) is not None for p in points]
    out = []
    for i, p in enumerate(points):
        if not have[i]:
            out.append(False)
            continue
        dominated = any(have[j] and q[x] <= p[x] and q[y] <= p[y] and (q[x] < p[x] or q[y] < p[y])
                        for j, q in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def table3_points(rows: list[dict]) -> list[dict]:
    """One point per Table 3 run, in the JSON's own figures."""
    return [{"name": f"Table 3: {r['arm']} seed {r['seed']}", "source": "table3", "steps": r["steps"],
             "bpd": r["test_bpd"], "fd_unguided": r["unguided"]["fd"], "fd_guided": r["guided"]["fd"],
             "consistency_unguided": r["unguided"]["class_consistency"],
             "consistency_guided": r["guided"]["class_consistency"],
             "recipe": _recipe(r["model"], r["train"]), "test_images": r["test_images"], "samples": r["samples"]}
            for r in rows]


def _recipe(model: dict, train: dict) -> str:
    """The settings a reader tells models apart by, in one short phrase."""
    parts = [f"{model.get('redundant_mode', 'split')}"]
    if model.get("redundant_mode", "split") != "none":
        parts.append(f"d_I={model.get('d_informative')}")
    if model.get("channel_mixing", "none") != "none":
        parts.append(f"{model['channel_mixing']}@{model.get('mixing_position', 'input')}")
    noise = train.get("noise", "?")
    if noise == "gaussian" and train.get("uniform_tail"):
        noise += f"+uniform tail {train['uniform_tail']:g}"
    parts.append(noise)
    return ", ".join(parts)


def measure(path: str, args, test, classifier, reference) -> dict:
    """Table 3's figures of one checkpoint (its EMA weights, or what model.safetensors holds)."""
    ckpt = resolve(path)
    meta, _ = read_config(ckpt)
    model = farmer.load(ckpt).eval()
    n = args.test_images
    ev = evaluate_split(model, test.images[:n], test.labels[:n], batch_size=500, seed=0)
    unguided = quality(model, args, classifier, reference, "none", 0.0)
    guided = quality(model, args, classifier, reference, *GUIDED)
    return {"name": f"{path} (step {meta.get('step'):,})" if meta.get("step") is not None else path,
            "source": "checkpoint", "checkpoint": str(ckpt), "steps": meta.get("step"),
            "bpd": ev["bpd"], "bpd_stderr": ev["bpd_stderr"], "fd_unguided": unguided["fd"],
            "fd_guided": guided["fd"], "consistency_unguided": unguided["class_consistency"],
            "consistency_guided": guided["class_consistency"],
            "recipe": _recipe(meta["model"], meta.get("train", {})),
            "test_images": n, "samples": args.samples}


def table_markdown(points: list[dict]) -> str:
    """Every point, best bits/dim first; * marks the points on the frontier of each FD column."""
    points = sorted(points, key=lambda p: p["bpd"])
    fronts = {key: pareto(points, "bpd", key) for key, _ in FD_COLUMNS}
    sizes = lambda key: "/".join(f"{n:,}" for n in sorted({p[key] for p in points}))     # noqa: E731
    # the header names the protocol, so that every row says these are not the cards' figures
    lines = [f"| model | recipe | steps | test bpd, {sizes('test_images')} test images | FD unguided, "
             f"{sizes('samples')} samples | FD guided | consistency unguided / guided |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    star = " \\*"
    for i, p in enumerate(points):
        fd = [f"{p[key]:.1f}{star if fronts[key][i] else ''}" for key, _ in FD_COLUMNS]
        steps = f"{p['steps']:,}" if p.get("steps") is not None else "–"
        lines.append(f"| {p['name']} | {p['recipe']} | {steps} | {p['bpd']:.3f} | {fd[0]} | {fd[1]} | "
                     f"{100 * p['consistency_unguided']:.1f}% / {100 * p['consistency_guided']:.1f}% |")
    return "\n".join(lines)


def block(points: list[dict]) -> str:
    return ("Test bits/dim (first 2,000 test images) against FD (1,000 samples), every model measured the "
            "same way; \\* marks a model that no other beats on both bits/dim and that FD column.\n\n"
            + table_markdown(points))


def plot(points: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (key, label) in zip(axes, FD_COLUMNS):
        front = pareto(points, "bpd", key)
        for p, on in zip(points, front):
            marker = "o" if p["source"] == "table3" else "*"
            ax.scatter(p[key], p["bpd"], marker=marker, s=40 if marker == "o" else 140,
                       c="tab:red" if on else "tab:blue", zorder=3)
            if p["source"] != "table3":
                ax.annotate(p["name"].split("/")[-1], (p[key], p["bpd"]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(f"{label} (1,000 samples)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test bits/dim (2,000 images)")
    fig.suptitle("every model tried: dots = Table 3 runs, stars = checkpoints, red = on the frontier")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def all_points(stored: dict) -> list[dict]:
    rows = json.loads((HERE / "table3.json").read_text())["runs"] if (HERE / "table3.json").exists() else []
    return table3_points(rows) + list(stored.get("checkpoints", {}).values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoints", nargs="*", default=list(DEFAULT_CHECKPOINTS),
                   help="checkpoint directories or run folders to score (missing ones are skipped with a note)")
    p.add_argument("--samples", type=int, default=1000, help="samples per setting (default 1000, as Table 3)")
    p.add_argument("--test-images", type=int, default=2000, help="test images for bits/dim (default 2000)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=str(HERE / "frontier.json"), help="results file (merged)")
    p.add_argument("--fresh", action="store_true", help="re-measure checkpoints already stored")
    p.add_argument("--write", action="store_true",
                   help="write the table between the frontier markers of docs/studies.md and "
                        "benchmarks/frontier.png, from the JSON only, and exit")
    args = p.parse_args()
    if args.samples < 2 or args.test_images < 1:
        p.error("--samples must be >= 2 and --test-images >= 1")
    path = Path(args.json)
    stored = json.loads(path.read_text()) if path.exists() else {"checkpoints": {}}
    if args.write:
        points = all_points(stored)
        doc = HERE.parent / "docs" / "studies.md"
        write_block(doc, points, block, markers=BLOCK)
        plot(points, HERE / "frontier.png")
        print(f"wrote the frontier block of {doc} and {HERE / 'frontier.png'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    todo = []
    for c in args.checkpoints:
        try:
            key = f"{c}@{read_config(resolve(c))[0].get('step')}"
        except (FileNotFoundError, ValueError) as e:
            print(f"skipping {c}: {e}", flush=True)
            continue
        if args.fresh or key not in stored["checkpoints"]:
            todo.append((c, key))
    if todo:
        test = load_fashion_mnist("test")
        classifier, _ = load_classifier(HERE.parent / "checkpoints" / "fmnist-classifier")
        reference = predict(classifier, test.images)[1]
        for c, key in todo:
            print(f"measuring {key} ...", flush=True)
            stored["checkpoints"][key] = measure(c, args, test, classifier, reference)
            path.write_text(json.dumps(stored, indent=1) + "\n")
    print(table_markdown(all_points(stored)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
