"""Guidance study: resampling CFG vs the naive rule, by FD and class consistency (issue 8, paper Table 3).

    .venv/bin/python benchmarks/guidance.py [--checkpoint checkpoints/fmnist] [--samples 2000]

For every guidance weight w in --weights it draws --samples class-conditional
images (balanced labels, the same seeds for every setting) with each rule of
--rules: resampling CFG (FARMER's Algorithm 1, s_c = s_u = 5 candidates per
token) with the exact importance weights (T_π,v = T_σ,v = T_s = 1), with the
paper's Table 6 weights (T_π,v = 0.1, T_s = 1.1) and with the balance-heuristic
weights; resampling with the exact weights from 10 conditional candidates only
(`resample-cond`: the library's default, farmer.guidance.DEFAULT_POOL); and the
naive per-dimension rule (GIVT/JetFormer); then, at --candidates-w, it sweeps
the number of resampling candidates s_c = s_u. Each setting is scored with the shipped Fashion-MNIST
classifier (`farmer.quality.sample_quality`):

* class consistency — the fraction of samples it assigns to the class asked for;
* FD (Fashion-MNIST classifier features) — Fréchet distance between its
  penultimate features of the samples and of the 10,000 test images.
  Not FID (a different feature network); and with n samples it is biased
  upwards by O(1/n), so compare only figures at the same --samples.

w = 0 is the unguided conditional draw for both rules (the library returns
it without an unconditional pass), so it is computed once and shown in both
rows. Every finished setting is written to the JSON at once; a rerun with the
same settings skips what is there (--fresh to recompute). Writes
benchmarks/guidance.json and benchmarks/guidance.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.data import load_fashion_mnist  # noqa: E402
from farmer.guidance import EXACT_WEIGHTS, TABLE6_WEIGHTS  # noqa: E402
from farmer.quality import load_classifier, predict, sample_quality  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "fmnist"))
    p.add_argument("--classifier", default=str(REPO / "checkpoints" / "fmnist-classifier"))
    p.add_argument("--samples", type=int, default=2000, help="samples per setting (balanced over classes)")
    p.add_argument("--weights", type=float, nargs="+", default=[0, 0.1, 0.25, 0.5, 1, 2, 3, 4],
                   help="guidance weights w")
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 2, 5, 10],
                   help="resampling candidates s_c = s_u for the candidate sweep")
    p.add_argument("--candidates-w", type=float, default=2.0, help="w of the candidate sweep")
    p.add_argument("--decoder", default="sequential", choices=["sequential", "distilled"],
                   help="flow inverse (sequential is exact; the distilled one adds its own error)")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "guidance.json"))
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES),
                   help="guidance rules: resampling with exact weights (the default), with Table 6's, "
                        "with balance-heuristic weights, naive")
    p.add_argument("--fresh", action="store_true", help="ignore results already in --out")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out without sampling")
    return p.parse_args(argv)


# the rows of the study: label -> (guidance, resampling weights, weight temperatures, pool of a token)
# The pool is (s_c, s_u) from the sweep's s: the paper's (s, s), or (2s, 0) conditional candidates only
# at the same total (ours).
RULES = {"resample": ("resample", "paper", EXACT_WEIGHTS, "paper"),
         "resample-table6": ("resample", "paper", TABLE6_WEIGHTS, "paper"),   # the paper's Table 6 settings
         "resample-balance": ("resample", "balance", EXACT_WEIGHTS, "paper"),
         "resample-cond": ("resample", "paper", EXACT_WEIGHTS, "cond"),
         "naive": ("naive", "paper", {}, "paper")}


def pool(s: dict) -> tuple[int, int]:
    """(s_c, s_u) candidates per informative token of a setting."""
    n = s["candidates"]
    return (2 * n, 0) if s.get("pool") == "cond" else (n, n)


def settings(args) -> list[dict]:
    """The (rule, w, candidates) grid; the default candidates are the sampler's (5)."""
    grid = [{"guidance": "none", "cfg_scale": 0.0, "candidates": 5, "weights": "paper", "temps": {}}] \
        if 0 in args.weights else []
    for label in args.rules:
        mode, weights, temps, kind = RULES[label]
        grid += [{"guidance": mode, "cfg_scale": w, "candidates": 5, "weights": weights, "temps": temps,
                  "rule": label, **({"pool": kind} if kind != "paper" else {})} for w in args.weights if w != 0]
    grid += [{"guidance": "resample", "cfg_scale": args.candidates_w, "candidates": s, "weights": "paper",
              "temps": EXACT_WEIGHTS, "rule": "resample"}
             for s in args.candidates if s != 5 or args.candidates_w not in args.weights]
    return grid


def rule(r: dict) -> str:
    return r.get("rule", r["guidance"])


def key(s: dict) -> str:
    return f"{rule(s)}|w={s['cfg_scale']:g}|s={s['candidates']}"


def run(args) -> dict:
    torch.manual_seed(args.seed)
    model = farmer.load(args.checkpoint).eval()
    classifier, clf_cfg = load_classifier(args.classifier)
    test = load_fashion_mnist("test")
    reference = predict(classifier, test.images)[1]                      # (10000, 128)
    out_path = Path(args.out)
    meta = {"checkpoint": str(args.checkpoint), "samples": args.samples, "decoder": args.decoder,
            "seed": args.seed, "reference": "Fashion-MNIST test set (10,000)",
            "classifier_test_accuracy": clf_cfg.get("test_accuracy")}
    done = {}
    if out_path.is_file() and not args.fresh:
        old = json.loads(out_path.read_text())
        if old.get("meta", {}) | {"host": None} == meta | {"host": None}:
            done = {key(r): r for r in old.get("results", [])}
    meta["host"] = f"{platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    results = []
    print(f"{'guidance':>16} {'w':>4} {'s_c=s_u':>7} | {'class cons.':>11} {'FD':>8} {'s/img':>7}")
    for s in settings(args):
        if key(s) in done:
            r = done[key(s)]
        else:
            q = sample_quality(model, classifier, reference, num_samples=args.samples, batch_size=args.batch,
                               seed=args.seed, guidance=s["guidance"], cfg_scale=s["cfg_scale"],
                               candidates_cond=pool(s)[0], candidates_uncond=pool(s)[1],
                               resample_weights=s["weights"], decoder=args.decoder, **s["temps"])
            r = {**s, **q}
        results.append(r)
        print(f"{rule(r):>16} {r['cfg_scale']:>4g} {r['candidates']:>7} | "
              f"{r['class_consistency']:>11.4f} {r['fd']:>8.3f} {r['seconds_per_image']:>7.4f}", flush=True)
        out_path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return {"meta": meta, "results": results}


def plot(report: dict, path: Path, candidates_w: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = report["results"]
    base = [r for r in res if r["guidance"] == "none"]
    cand = sorted([r for r in res if rule(r) == "resample" and r["cfg_scale"] == candidates_w],
                  key=lambda r: r["candidates"])
    sweep = len(cand) > 1                                           # a candidate sweep was run
    fig, axes = plt.subplots(1, 3 if sweep else 2, figsize=(13 if sweep else 10, 3.8))
    names = {"resample": "resampling CFG, Algorithm 1's 5 + 5 candidates, exact weights",
             "resample-table6": "resampling CFG, 5 + 5, Table 6 weights (T_π,v 0.1, T_s 1.1)",
             "resample-balance": "resampling CFG, 5 + 5, balance-heuristic weights", "naive": "naive CFG (GIVT/JetFormer)",
             "resample-cond": "resampling CFG, 10 + 0 candidates, exact weights (farmer.sample's defaults)"}
    for mode, colour in (("resample", "C0"), ("resample-table6", "C2"), ("resample-balance", "C1"),
                         ("resample-cond", "C4"), ("naive", "C3")):
        rows = sorted(base + [r for r in res if rule(r) == mode and r["candidates"] == 5],
                      key=lambda r: r["cfg_scale"])
        if len(rows) <= len(base):
            continue
        w = [r["cfg_scale"] for r in rows]
        label = names[mode]
        axes[0].plot(w, [r["fd"] for r in rows], "o-", color=colour, label=label)
        axes[1].plot(w, [100 * r["class_consistency"] for r in rows], "o-", color=colour, label=label)
    if sweep:
        ax2 = axes[2].twinx()
        axes[2].plot([r["candidates"] for r in cand], [r["fd"] for r in cand], "o-", color="C0", label="FD")
        ax2.plot([r["candidates"] for r in cand], [100 * r["class_consistency"] for r in cand], "s--",
                 color="C2", label="class consistency")
        axes[2].set(xlabel="candidates s_c = s_u", ylabel="FD", title=f"resampling CFG, w = {candidates_w:g}")
        axes[2].set_xscale("log")
        ax2.set_ylabel("class consistency (%)", color="C2")
    axes[0].set(xlabel="guidance weight w", ylabel="FD (Fashion-MNIST classifier features)", title="FD ↓")
    axes[1].set(xlabel="guidance weight w", ylabel="class consistency (%)", title="class consistency ↑")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, frameon=False)
    n = report["meta"]["samples"]
    fig.suptitle(f"Guidance on the shipped Fashion-MNIST FARMER ({n} samples per point, balanced classes)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))                           # the legend below the panels
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = json.loads(Path(args.out).read_text()) if args.plot_only else run(args)
    png = Path(args.out).with_suffix(".png")
    plot(report, png, args.candidates_w)
    print(f"wrote {png} from {args.out}" if args.plot_only else f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
