"""Measure every figure of the shipped model's card and write checkpoints/fmnist/{card.json, README.md, *.png}.

    .venv/bin/python benchmarks/model_card.py [--checkpoint checkpoints/fmnist] [--train-log runs/fmnist]

Figures (each also has a one-line CLI equivalent, printed in the card):
  * test bits/dim over all 10,000 images, single-sample and the K = 8
    importance-weighted bound (uniform dequantisation, seed 0), and over the
    first 1,000 (the figure tests/test_shipped_model.py re-measures);
  * class consistency and FD (Fashion-MNIST classifier features) of 10,000
    class-conditional samples, unguided and with resampling CFG at --cfg;
  * a 10 × 10 sample grid per class, unguided and guided;
  * sampling seconds per image with the KV-cached sequential inverse and with
    the distilled one-step inverse (same batch, one run, median of --repeats);
  * the same bits/dim under the null class (−log p(x) of the unconditional model);
  * the Fig. 7 ratio of the informative / redundant experiment (farmer.channels, 100 test images);
  * the share of the per-pixel likelihood map's variance inside the patches
    (farmer.likelihood.within_patch_share, first 64 test images): the map's resolution;
  * every figure against the flagship bars (BARS: issue 24), met or short;
  * every decoder's distance from the exact inverse, in pixels (grey levels) and in the flow's input
    space, on encoded test images (first 1,000) and on latents the model samples (500, unguided and
    with the card's guidance; farmer.decoder_error), one thread;
  * the Bayes classifier from the exact conditional likelihoods (farmer.classify): accuracy and ECE
    on all 10,000 test images, the settings of `python benchmarks/classify.py`;
  * parameters, training steps and wall time (from the run's metrics.jsonl).
Figures already in card.json are kept unless --redo names them (or --redo all),
so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import os
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.channels import channel_experiment  # noqa: E402
from farmer.classify import evaluate_classifier  # noqa: E402
from farmer.card import library_sampling_defaults  # noqa: E402
from farmer.checkpoint import atomic_write_json, read_config, resolve  # noqa: E402
from farmer.data import FMNIST_CLASSES, load_fashion_mnist  # noqa: E402
from farmer.decoder_error import DECODER_NAMES, reconstruction_error, sampled_decoder_error  # noqa: E402
from farmer.likelihood import evaluate_split, likelihood_map, within_patch_share  # noqa: E402
from farmer.quality import load_classifier, predict, sample_quality  # noqa: E402
from farmer.sampling import image_grid  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Published Fashion-MNIST test bits/dim (discrete NLL; lower is better), as cited by the issue.
PUBLISHED = [("Hierarchical VAE", 3.28), ("Probabilistic circuit (HCLT)", 3.34),
             ("IDF (integer discrete flow)", 3.47), ("PixelVAE", 3.66)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "fmnist"))
    p.add_argument("--classifier", default=str(REPO / "checkpoints" / "fmnist-classifier"))
    p.add_argument("--train-log", default=str(REPO / "runs" / "fmnist"),
                   help="the training run folder (metrics.jsonl) for the training time")
    p.add_argument("--train-note", default="the run used one thread (OMP_NUM_THREADS=1) while the other core "
                                           "served development work", help="how the training run used the machine")
    p.add_argument("--distill-command", default=None, help="the `farmer distill` flags that made the student")
    p.add_argument("--training-note", default=None, help="a sentence on how the run was made (card's Training)")
    p.add_argument("--purpose-note", default=None, help="a paragraph on which shipped model is for what")
    p.add_argument("--samples", type=int, default=10_000, help="samples for FD / class consistency")
    p.add_argument("--cfg", type=float, default=None,
                   help="w of the guided figures (default: the best FD in benchmarks/guidance.json, else 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="only the first N test images (a quick check of this script)")
    p.add_argument("--redo", nargs="*", default=[], help="figure keys to recompute (or 'all')")
    p.add_argument("--skip", nargs="*", default=[], help="figure keys not to measure in this run")
    return p.parse_args(argv)


def training_time(run: Path) -> dict | None:
    """Steps, images and busy wall seconds of a run (gaps > 120 s between log lines, e.g. a stop and
    --resume, are not counted)."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "time" in r and "step" in r]
    times = [r["time"] for r in rows]
    busy = sum(b - a for a, b in zip(times, times[1:]) if 0 < b - a < 120)
    return {"steps": rows[-1]["step"], "seconds": busy, "hours": busy / 3600,
            "images_per_s_median": statistics.median(r["images_per_s"] for r in rows if r.get("images_per_s"))}


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def time_sampling(model, decoder: str, batch: int, repeats: int) -> float:
    labels = torch.arange(batch) % model.cfg.num_classes
    farmer.sample(model, labels, decoder=decoder, seed=0)                  # warm-up
    runs = []
    for r in range(repeats):
        t = time.perf_counter()
        farmer.sample(model, labels, decoder=decoder, seed=r + 1)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) / batch


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    from PIL import Image
    grid = image_grid(images, nrow=nrow)
    Image.fromarray(grid[..., 0]).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


# The card's guided setting, chosen on 1,000 samples (benchmarks/guidance.py and the temperature checks in
# docs/studies.md, sample quality): resampling CFG with exact importance weights (T_π,v = T_σ,v = T_s = 1,
# not Table 6's 0.1 / 1.1), T_σ = 0.9 and w = 1 gave 95.2% class consistency at FD 11.4, against 84.1% /
# 18.5 with Table 6's weights at the same w.
CARD_GUIDANCE = {"guidance": "resample", "cfg_scale": 1.0, "t_sigma": 0.9, "candidates_cond": 5,
                 "candidates_uncond": 5, "t_pi_verify": 1.0, "t_sigma_verify": 1.0, "t_select": 1.0}


# The Bayes classifier's settings: benchmarks/classify.py's defaults, so both commands give the same figure.
CARD_CLASSIFY = {"k": 1, "seed": 0, "batch_size": 250, "bins": 15}


# The flagship bars (issue 24, point 2): (card figure, what it is, "<=" or ">=", bar).
BARS = [("bpd_test_k1", "test bits/dim, all 10,000, single-sample, class-conditional", "<=", 3.45),
        ("quality_unguided", "class consistency, unguided", ">=", 0.83),
        ("quality_guided", "class consistency, the card's guidance", ">=", 0.95),
        ("fd_unguided", "FD, unguided", "<=", 15.0),
        ("fd_guided", "FD, the card's guidance", "<=", 10.0),
        ("fig7", "Fig. 7 ratio", "<=", 0.3),
        ("within_patch_share", "per-pixel map: share of its variance inside the patches", ">=", 0.05)]


def bar_value(card: dict, key: str) -> float | None:
    """The card's figure for one bar, or None when it has not been measured."""
    source = {"fd_unguided": "quality_unguided", "fd_guided": "quality_guided"}.get(key, key)
    if source not in card:
        return None
    r = card[source]
    return {"bpd_test_k1": lambda: r["bpd"], "quality_unguided": lambda: r["class_consistency"],
            "quality_guided": lambda: r["class_consistency"], "fd_unguided": lambda: r["fd"],
            "fd_guided": lambda: r["fd"], "fig7": lambda: r["ratio"],
            "within_patch_share": lambda: r["share"]}[key]()


def bars_report(card: dict) -> list[dict]:
    """Each flagship bar with the card's figure and whether it is met (None: not measured)."""
    out = []
    for key, what, op, bar in BARS:
        v = bar_value(card, key)
        met = None if v is None else (v <= bar if op == "<=" else v >= bar)
        out.append({"key": key, "figure": what, "bar": f"{op} {bar:g}", "value": v, "met": met})
    return out


def bars_lines(card: dict) -> list[str]:
    rows = bars_report(card)
    pct = {"quality_unguided", "quality_guided", "within_patch_share"}
    def show(r):
        if r["value"] is None:
            return "not measured"
        return f"{100 * r['value']:.1f}%" if r["key"] in pct else f"{r['value']:.3g}"
    def bar(r):
        op, b = r["bar"].split()
        sym = {"<=": "≤", ">=": "≥"}[op]
        return f"{sym} {100 * float(b):g}%" if r["key"] in pct else f"{sym} {b}"
    met = sum(r["met"] is True for r in rows)
    return ["## Against the flagship bars", "",
            f"The bars one shipped model is to meet together (issue 24): **{met} of {len(rows)} met**.", "",
            "| figure | bar | this model | |", "| --- | --- | --- | --- |",
            *[f"| {r['figure']} | {bar(r)} | {show(r)} | "
              f"{ {True: 'met', False: '**short**', None: ''}[r['met']]} |" for r in rows], ""]


def best_cfg(rule: str = "resample") -> float:
    """The card's w for a guidance rule, from benchmarks/guidance.json (s_c = s_u = 5): the lowest FD among
    the weights whose class consistency reaches 95% (the flagship's guided bar), else the lowest FD; 2 without
    a study."""
    path = REPO / "benchmarks" / "guidance.json"
    if path.is_file():
        rows = [r for r in json.loads(path.read_text())["results"]
                if r.get("rule", r["guidance"]) == rule and r["candidates"] == 5 and r["cfg_scale"] > 0]
        good = [r for r in rows if r["class_consistency"] >= 0.95] or rows
        if good:
            return min(good, key=lambda r: r["fd"])["cfg_scale"]
    return 2.0


def measure(args) -> dict:
    ckpt = resolve(args.checkpoint)
    card_path = ckpt / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    redo = set(args.redo)

    def need(key: str) -> bool:
        return key not in args.skip and (key not in card or "all" in redo or key in redo)

    def done(key: str, value) -> None:
        card[key] = value
        atomic_write_json(card_path, card)
        print(f"{key}: {json.dumps(value)[:300]}", flush=True)

    meta, cfg = read_config(ckpt)
    model = farmer.load(ckpt).eval()
    test = load_fashion_mnist("test")
    if args.limit:
        test = type(test)(test.images[:args.limit], test.labels[:args.limit], test.num_classes, name=test.name)
    if need("model"):
        done("model", {"config": meta["model"],
                       "parameters": model.num_parameters(), "weights": meta.get("weights"),
                       "step": meta.get("step"), "train": meta.get("train"),
                       "files_mb": {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(ckpt.iterdir())
                                    if p.suffix == ".safetensors"}})
    for key in ("distill_command", "training_note", "purpose_note"):
        if getattr(args, key) is not None:
            done(key, getattr(args, key))
    if need("training") and training_time(Path(args.train_log)):
        done("training", {**training_time(Path(args.train_log)),
                          "hardware": f"{cpu_name()}, {os.cpu_count()} cores, no GPU; {args.train_note}"})
    if need("bpd_test_k1"):
        done("bpd_test_k1", evaluate_split(model, test, k=1, seed=0))
    if need("bpd_first_1000"):
        done("bpd_first_1000", evaluate_split(model, test.images[:1000], test.labels[:1000], k=1, seed=0))
    if need("bpd_test_k8"):
        done("bpd_test_k8", evaluate_split(model, test, k=8, seed=0))
    if need("bpd_test_null_k1"):                       # −log p(x) under the null class, beside −log p(x|c)
        done("bpd_test_null_k1", evaluate_split(model, test, k=1, seed=0, conditional=False))
    if need("fig7"):
        done("fig7", {**channel_experiment(model, test.images[:100], test.labels[:100], variance=1.0, seed=0),
                      "images": "first 100 test images, their labels, dequantisation seed 0"})
    if need("within_patch_share"):                     # does the per-pixel map resolve detail inside a patch?
        x, y = test.images[:64], test.labels[:64]
        done("within_patch_share", {"share": within_patch_share(likelihood_map(model, x, y, seed=0)["pixel_bits"],
                                                                model.cfg.patch_size),
                                    "images": "first 64 test images, their labels, dequantisation seed 0"})
    if need("distilled_reconstruction") and model.student is not None:
        done("distilled_reconstruction", {**reconstruction_error(model, test.images[:1000], seed=0),
                                          "images": "first 1,000 test images, dequantisation seed 0"})
    if need("decoder_errors"):
        done("decoder_errors", decoder_errors(model, test.images[:1000], card.get("quality_guided")))
    if need("bayes_classifier"):                       # Bayes' rule on log p(x|y), beside the CNN's accuracy
        done("bayes_classifier", {**evaluate_classifier(model, test.images, test.labels, **CARD_CLASSIFY),
                                  "command": "python benchmarks/classify.py"})
    if need("seconds_per_image"):
        out = {"batch": 64, "threads": torch.get_num_threads(),
               "sequential": time_sampling(model, "sequential", 64, args.repeats)}
        if model.student is not None:
            out["distilled"] = time_sampling(model, "distilled", 64, args.repeats)
            out["speedup"] = out["sequential"] / out["distilled"]
        done("seconds_per_image", out)
    guided = dict(CARD_GUIDANCE, **({"cfg_scale": args.cfg} if args.cfg is not None else {}))
    w = guided["cfg_scale"]
    clf, clf_cfg = load_classifier(args.classifier)
    reference = None                                   # test-set features, computed once if a figure needs them
    for key, kw in (("quality_unguided", {"guidance": "none"}),
                    ("quality_naive", {"guidance": "naive", "cfg_scale": best_cfg("naive")}),
                    ("quality_guided", guided)):
        if need(key):
            if reference is None:
                reference = predict(clf, test.images)[1]
            q = sample_quality(model, clf, reference, num_samples=args.samples, **kw)
            done(key, {**kw, **q, "classifier_test_accuracy": clf_cfg.get("test_accuracy")})
    if "quality_guided" not in card:
        return card
    grids = (ckpt / "samples_unguided.png", ckpt / "samples_cfg.png")
    if not any(k in card and need(k) for k in ("quality_unguided", "quality_guided")) and \
            all(g.is_file() for g in grids) and "grids" not in redo and "all" not in redo:
        return card                                    # the grids belong to the quality figures: kept with them
    labels = torch.arange(10).repeat_interleave(10)
    save_grid(farmer.sample(model, labels, seed=0), ckpt / "samples_unguided.png", nrow=10)
    settings = {k: v for k, v in card["quality_guided"].items() if k in CARD_GUIDANCE}
    save_grid(farmer.sample(model, labels, seed=0, **settings), ckpt / "samples_cfg.png", nrow=10)
    return card


def decoder_errors(model, images: torch.Tensor, guided: dict | None, sampled: int = 500) -> dict:
    """Every decoder against the exact inverse: encoded test images, and sampled latents unguided and
    with the card's guidance (farmer.decoder_error). Pixel space (grey levels) and flow space."""
    decoders = [d for d in DECODER_NAMES if model.student is not None or d not in ("distilled", "hybrid")]
    settings = {k: v for k, v in (guided or {}).items() if k in CARD_GUIDANCE}
    t0 = time.perf_counter()
    out = {"encoded": {d: reconstruction_error(model, images, decoder=d, seed=0, exact=False) for d in decoders},
           "sampled_unguided": sampled_decoder_error(model, tuple(decoders), sampled, seed=0)}
    if settings:
        out["sampled_guided"] = sampled_decoder_error(model, tuple(decoders), sampled, seed=0, **settings)
    out["about"] = {"encoded": f"first {images.shape[0]:,} test images, dequantisation seed 0, against x itself",
                    "sampled": f"{sampled} sampled latents (balanced labels, seed 0), against the sequential "
                               "inverse of the same latents in float64",
                    "jacobi": "tol 1e-4, plain Jacobi (no chunks), at most N iterations per block",
                    "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - t0, 1)}
    return out


def decoder_row(card: dict) -> list[str]:
    """The distilled decoder's row of the figures table: pixels on encoded and on sampled latents."""
    e = card.get("decoder_errors")
    if not e or "distilled" not in e["encoded"]:
        rec = card.get("distilled_reconstruction")
        return [] if not rec else [
            f"| distilled inverse: reconstruction of encoded test images (first 1,000), pixel RMSE | "
            f"{f(rec['rmse_gray'], 2)} grey levels | `farmer distill checkpoints/fmnist` prints it |"]
    enc, su = e["encoded"]["distilled"], e["sampled_unguided"]["distilled"]
    sg = e.get("sampled_guided", {}).get("distilled")
    n = su["num_samples"]
    return [f"| distilled inverse vs the exact inverse, pixel RMSE: encoded test images (first 1,000) / "
            f"{n} sampled latents, unguided{' / guided (card settings)' if sg else ''} | "
            f"{f(enc['rmse_gray'], 2)} / {f(su['rmse_gray'], 2)}{' / ' + f(sg['rmse_gray'], 2) if sg else ''} "
            f"grey levels | `python benchmarks/model_card.py --redo decoder_errors` (table below) |"]


def decoder_lines(card: dict) -> list[str]:
    """The decoders section: each decoder's distance from the exact inverse, in pixels and in flow space."""
    e = card.get("decoder_errors")
    if not e:
        return []
    sets = [("encoded", "encoded test images")] + [(k, lab) for k, lab in
            (("sampled_unguided", "sampled, unguided"), ("sampled_guided", "sampled, card guidance")) if k in e]
    cfg = card.get("model", {}).get("config", {})
    mixed_input = cfg.get("channel_mixing", "none") not in (None, "none") and cfg.get("mixing_position") == "input"
    flow_space = ("with this model's mixing in front of the flow, coefficients of each patch, whose errors are not "
                  "pixel errors (an orthonormal mixing keeps the RMSE but not the maximum)" if mixed_input else
                  "this model mixes after the flow (or not at all), so flow space is the pixels in [−1, 1], "
                  "before clipping")
    lines = ["## Decoders: how far each is from the exact inverse", "",
             "Pixel space is the image as shown (clipped to [−1, 1]; RMSE in grey levels of 0..255, and the "
             f"share of uint8 pixels that change after quantising). Flow space is the flow's input: {flow_space}. "
             f"Encoded: {e['about']['encoded']}. Sampled: {e['about']['sampled']}. Jacobi: {e['about']['jacobi']}. "
             f"One thread (`farmer.decoder_error`).", "",
             "| decoder | " + " | ".join(f"{lab}: pixel RMSE (grey) / pixels changed / flow max abs"
                                        for _, lab in sets) + " |",
             "| --- |" + " --- |" * len(sets)]
    for d in e["encoded"]:
        cells = [f"{e[k][d]['rmse_gray']:.3g} / {100 * e[k][d]['changed_pixels']:.1f}% / {e[k][d]['flow_max_abs']:.3g}"
                 for k, _ in sets]
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += ["", "The student is trained on encoded data; the latents the AR samples lie elsewhere, and its "
              "error there is what a user of `decoder=\"distilled\"` sees. `hybrid` (Jacobi from the student) and "
              "`jacobi` converge to the exact inverse.", ""]
    return lines


def f(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def guided_text(q: dict) -> str:
    d = library_sampling_defaults()
    g = lambda k: q.get(k, d[k])                                                   # noqa: E731
    return (f"s_c + s_u = {g('candidates_cond')} + {g('candidates_uncond')}, T_σ = {g('t_sigma'):g}, "
            f"T_π,v = {g('t_pi_verify'):g}, T_σ,v = {g('t_sigma_verify'):g}, T_s = {g('t_select'):g}")


def guided_flags(q: dict) -> str:
    """The `farmer quality` / `farmer sample` flags for the settings that differ from farmer.sample's defaults."""
    d = library_sampling_defaults()
    flags = {"t_sigma": "--t-sigma", "candidates_cond": "--candidates-cond", "candidates_uncond": "--candidates-uncond",
             "t_pi_verify": "--t-pi-verify", "t_sigma_verify": "--t-sigma-verify", "t_select": "--t-select"}
    return "".join(f" {flag} {q[k]:g}" for k, flag in flags.items() if k in q and q[k] != d[k])


def fig7_lines(card: dict) -> list[str]:
    if "fig7" not in card:
        return ["(not measured: `python benchmarks/model_card.py --redo fig7`)"]
    r = card["fig7"]
    verdict = ("so Z^I carries the garment and Z^R the detail, as the paper's Fig. 7 shows"
               if r["ratio"] < 1 else "so Z^R still carries structure: the partition is incomplete")
    return [f"Encode a test image, keep Z^I and redraw Z^R from the model's own G_{{N+1}}(· | Z^I, c): the pixels "
            f"move by {r['redraw_redundant']:.1f} grey levels on average. Keep Z^R and perturb Z^I by noise of "
            f"its own standard deviation: they move by {r['perturb_informative']:.1f}. The ratio is "
            f"**{r['ratio']:.2f}**, {verdict}. Both at once: {r['both']:.1f}. First 100 test images, "
            "v = 1, `farmer.channels.channel_experiment`; notebook 02 and the app's Channels tab show the images."]


def guidance_lines() -> list[str]:
    """The guidance study's FD and class consistency per rule and w, from benchmarks/guidance.json."""
    path = REPO / "benchmarks" / "guidance.json"
    if not path.is_file():
        return []
    rep = json.loads(path.read_text())
    res = rep["results"]
    base = [r for r in res if r["guidance"] == "none"]
    ws = sorted({r["cfg_scale"] for r in res if r["candidates"] == 5})
    names = {"resample-cond": "resampling, exact weights, 10 + 0 candidates (the library's default)",
             "resample": "resampling, Algorithm 1, exact weights, 5 + 5 candidates",
             "resample-table6": "resampling, Algorithm 1, Table 6 weights (T_π,v 0.1, T_s 1.1), 5 + 5",
             "resample-balance": "resampling, balance weights, 5 + 5", "naive": "naive (GIVT / JetFormer)"}
    lines = [f"**Guidance study** (`python benchmarks/guidance.py --samples {rep['meta']['samples']}`; "
             "`benchmarks/guidance.json`, [`guidance.png`](../../benchmarks/guidance.png)): class "
             f"consistency / FD at {rep['meta']['samples']:,} samples per point; s_c + s_u candidates per "
             "token as each row says.", "",
             "| rule | " + " | ".join(f"w = {w:g}" for w in ws) + " |",
             "| --- |" + " --- |" * len(ws)]
    for rule_name, label in names.items():
        cells = []
        for w in ws:
            hit = [r for r in (base if w == 0 else res) if r["candidates"] == 5 and r["cfg_scale"] == w
                   and (w == 0 or r.get("rule", r["guidance"]) == rule_name)]
            cells.append(f"{100 * hit[0]['class_consistency']:.1f}% / {hit[0]['fd']:.1f}" if hit else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def bayes_row(card: dict) -> list[str]:
    """The Bayes classifier's row of the figures table (none until it is measured)."""
    if "bayes_classifier" not in card:
        return []
    r, cnn = card["bayes_classifier"], card["quality_unguided"]["classifier_test_accuracy"]
    return [f"| Bayes classifier from the exact likelihoods, p(y\\|x) ∝ p(x\\|y) (uniform prior), all "
            f"{r['images']:,} test images: accuracy / ECE ({r['bins']} bins) | **{100 * r['accuracy']:.2f}%** / "
            f"{r['ece']:.4f} (the project's CNN: {100 * cnn:.2f}%) | `{r['command']}` |"]


def bayes_lines(card: dict) -> list[str]:
    """The Bayes-classifier section (empty until `bayes_classifier` is measured)."""
    if "bayes_classifier" not in card:
        return []
    r = card["bayes_classifier"]
    cnn = card["quality_unguided"]["classifier_test_accuracy"]
    worst = min(range(len(r["per_class_accuracy"])), key=lambda c: r["per_class_accuracy"][c])
    return ["## Classifying by Bayes' rule", "",
            "The class-conditional likelihoods give a classifier with no training of its own: "
            "log p(y|x) = log p(x|y) − logsumexp_y' log p(x|y') under a uniform prior (`farmer.classify`), "
            + ("log p(x|y) from one uniform dequantisation draw per image" if r["k"] == 1 else
               f"log p(x|y) the K = {r['k']} importance-weighted bound")
            + f", the same noise for every class. On all {r['images']:,} test images it is right "
            f"**{100 * r['accuracy']:.2f}%** of the time, against {100 * cnn:.2f}% for the project's CNN trained for the task; its log-loss is "
            f"{r['log_loss']:.3f} nats. Its mean confidence is {100 * r['mean_confidence']:.1f}%, so the expected "
            f"calibration error ({r['bins']} equal-width bins) is **{r['ece']:.4f}**: "
            + ("over-confident" if r["mean_confidence"] > r["accuracy"] else "under-confident")
            + f". Hardest class: {FMNIST_CLASSES[worst]} ({100 * r['per_class_accuracy'][worst]:.1f}%). "
            f"Reliability diagram and confusion matrix: [`benchmarks/classify.png`](../../benchmarks/classify.png) "
            f"(`{r['command']}`).", ""]


def purpose_lines(card: dict) -> list[str]:
    return [card.get("purpose_note", "This is the project's one shipped model: the sample model. Its bits/dim "
                                     "are stated above with the estimator and conditioning of each figure.")]


def objective_text(train: dict) -> str:
    """What the run trained for: the noise it saw decides which bound its bits/dim were optimised for."""
    tail = train.get("uniform_tail") or 0.0
    if train["noise"] == "gaussian" and tail > 0:
        return (f"It trained under the Gaussian noise curriculum for samples, then under uniform dequantisation for "
                f"its last {100 * tail:g}% of steps (ours), so it ends on the bound its bits/dim are scored on.")
    if train["noise"] == "gaussian":
        return "It is trained for samples (Gaussian noise curriculum), not for likelihood."
    return "It is trained under uniform dequantisation, the bound its bits/dim are scored on."


def recipe_flags(m: dict) -> str:
    """The `farmer train` flags that differ from the fmnist preset's recipe (mixing position, uniform tail)."""
    flags = ""
    if m["config"].get("mixing_position", "input") != "input":
        flags += f" --mixing-position {m['config']['mixing_position']}"
    if m["train"].get("uniform_tail"):
        flags += f" --uniform-tail {m['train']['uniform_tail']:g}"
    return flags


def render(card: dict) -> str:
    m, tr = card["model"], card.get("training", {})
    c = m["config"]
    d, N = c["channels"] * c["patch_size"] ** 2, (c["image_size"] // c["patch_size"]) ** 2
    k1, k8, first = card["bpd_test_k1"], card["bpd_test_k8"], card["bpd_first_1000"]
    qu, qg = card["quality_unguided"], card["quality_guided"]
    sp, rec = card["seconds_per_image"], card.get("distilled_reconstruction")
    w = qg["cfg_scale"]
    ours = [("**FARMER (this model), class-conditional −log p(x\\|c), K = 8 IW bound**", k8["bpd"])]
    if card.get("bpd_test_null_k1"):
        ours.append(("**FARMER (this model), unconditional −log p(x) (null class), single-sample**",
                     card["bpd_test_null_k1"]["bpd"]))
    rows = sorted(PUBLISHED + ours, key=lambda r: r[1])
    table = "\n".join(f"| {name} | {bpd:.2f} |" for name, bpd in rows)
    params = m["parameters"]
    lines = [
        "# FARMER on Fashion-MNIST (the flagship model)",
        "",
        f"An invertible autoregressive flow ({c['flow_blocks']} blocks × {c['flow_layers']} layers, width "
        f"{c['flow_width']}, patch {c['patch_size']} → {N} tokens of d = {d} values)",
        f"with an autoregressive GMM prior ({c['ar_layers']} layers, width {c['ar_width']}) over its latents, split into "
        f"d_I = {c['d_informative']} informative channels per token (K = {c['k_informative']} mixture) and "
        f"{d - c['d_informative']} redundant ones (one shared K = {c['k_redundant']} mixture per image); "
        "class-conditional with 10% label dropout for classifier-free guidance, "
        "plus a distilled one-step inverse (`student.safetensors`).",
        "",
        "```python",
        "import farmer",
        'model = farmer.load("checkpoints/fmnist")',
        'images = farmer.sample(model, labels=[0, 1, 2], guidance="resample", cfg_scale=2.0)  # uint8 (3, 1, 28, 28)',
        "```",
        "",
        "## Figures",
        "",
        "| figure | value | reproduce |",
        "| --- | --- | --- |",
        f"| test bits/dim, all 10,000, single-sample | **{f(k1['bpd'], 4)}** ± {f(k1['bpd_stderr'], 4)} | "
        "`farmer eval checkpoints/fmnist --k 1` |",
        f"| test bits/dim, all 10,000, K = 8 importance-weighted bound | **{f(k8['bpd'], 4)}** | "
        "`farmer eval checkpoints/fmnist --k 8` |",
        f"| test bits/dim, first 1,000, single-sample (checked by the tests) | {f(first['bpd'], 4)} | "
        "`farmer eval checkpoints/fmnist --limit 1000` |",
        *([f"| the same under the null class, −log p(x) (all 10,000, single-sample) | "
           f"{f(card['bpd_test_null_k1']['bpd'], 4)} | `farmer eval checkpoints/fmnist --k 1 --unconditional` |"]
          if "bpd_test_null_k1" in card else []),
        *([f"| Fig. 7 ratio: mean abs. pixel change with Z^R redrawn / with Z^I perturbed (v = 1, 100 test images) | "
           f"**{card['fig7']['ratio']:.2f}** ({card['fig7']['redraw_redundant']:.1f} / "
           f"{card['fig7']['perturb_informative']:.1f} grey levels) | `farmer.channels.channel_experiment` |"]
          if "fig7" in card else []),
        *([f"| per-pixel map: share of its variance inside the {c['patch_size']}×{c['patch_size']} patches "
           f"(first 64 test images) | {100 * card['within_patch_share']['share']:.1f}% | "
           "`farmer.likelihood.within_patch_share` |"] if "within_patch_share" in card else []),
        f"| split of the bound (bits/dim): prior Z^I / prior Z^R / −log-det + 7 | "
        f"{f(k1['terms_bpd']['prior_informative'])} / {f(k1['terms_bpd']['prior_redundant'])} / "
        f"{f(k1['bpd'] - k1['terms_bpd']['prior_informative'] - k1['terms_bpd']['prior_redundant'])} | same |",
        f"| class consistency, 10,000 samples, unguided | {100 * qu['class_consistency']:.2f}% | "
        "`farmer quality checkpoints/fmnist --guidance none` |",
        f"| class consistency, 10,000 samples, resampling CFG w = {w:g} ({guided_text(qg)}) | "
        f"{100 * qg['class_consistency']:.2f}% | `farmer quality checkpoints/fmnist --guidance resample --cfg {w:g}"
        f"{guided_flags(qg)}` |",
        f"| FD (Fashion-MNIST classifier features), unguided | {f(qu['fd'], 2)} | as above |",
        f"| FD (Fashion-MNIST classifier features), resampling CFG w = {w:g} | {f(qg['fd'], 2)} | as above |",
        *([f"| class consistency / FD, 10,000 samples, naive CFG w = {card['quality_naive']['cfg_scale']:g} | "
           f"{100 * card['quality_naive']['class_consistency']:.2f}% / {f(card['quality_naive']['fd'], 2)} | "
           f"`farmer quality checkpoints/fmnist --guidance naive --cfg {card['quality_naive']['cfg_scale']:g}` |"]
          if "quality_naive" in card else []),
        f"| sampling, KV-cached sequential inverse (batch {sp['batch']}, {sp['threads']} threads) | "
        f"{f(sp['sequential'], 4)} s/img | `python benchmarks/model_card.py --redo seconds_per_image` |",
    ]
    if "distilled" in sp:
        lines.append(f"| sampling, distilled one-step inverse (same run) | {f(sp['distilled'], 4)} s/img "
                     f"({sp['speedup']:.2f}× faster end to end) | same |")
    lines += decoder_row(card)
    lines += [
        *bayes_row(card),
        f"| parameters | {params['total']:,} (flow {params['flow']:,}, AR {params['ar']:,}) | |",
    ]
    if tr:
        lines.append(f"| training | {tr['steps']:,} steps × batch {m['train']['batch_size']} "
                     f"({tr['steps'] * m['train']['batch_size'] / 60000:.1f} epochs), "
                     f"{tr['hours']:.2f} h wall ({tr['images_per_s_median']:.0f} img/s median); "
                     f"{tr['hardware']} | see Training below |")
    lines += [
        "",
        "All bits/dim are discrete-data bounds with uniform dequantisation, conditioned on the true class "
        "(−log p(x|c)) unless the row says null class (DESIGN §5); the K = 8 figure is the importance-weighted bound, never above the single-sample one. "
        "FD uses the project's own classifier (`checkpoints/fmnist-classifier`, "
        f"{100 * qu['classifier_test_accuracy']:.2f}% test accuracy) and is **not FID**; "
        "it is comparable only with other FD figures from that classifier and the same sample count.",
        "",
        "## Beside published Fashion-MNIST results (test bits/dim, lower is better)",
        "",
        "| model | bits/dim |",
        "| --- | --- |",
        table,
        "",
        "The published figures are unconditional, −log p(x). This model's headline figure is conditioned on "
        "the true class, −log p(x|c), a different quantity; its null-class row (the same network with the "
        "label dropped, as trained by label dropout) is the one to compare.",
        "",
        f"This model trained {tr.get('hours', float('nan')):.1f} hours on a 2-core CPU. {objective_text(m['train'])} "
        "The table is for scale only.",
        "",
        *bars_lines(card),
        "## Informative vs redundant channels (the paper's Fig. 7)",
        "",
        *fig7_lines(card),
        "",
        *guidance_lines(),
        "",
        *bayes_lines(card),
        *decoder_lines(card),
        "## Which model for what",
        "",
        *purpose_lines(card),
        "",
        f"## Samples (one row per class: {', '.join(FMNIST_CLASSES)})",
        "",
        "Unguided (T_π = T_σ = 1):",
        "",
        "![unguided samples](samples_unguided.png)",
        "",
        f"Resampling CFG, w = {w:g}, {guided_text(qg)}:",
        "",
        "![guided samples](samples_cfg.png)",
        "",
        "`farmer sample checkpoints/fmnist --labels all --repeat 10 --guidance resample "
        f"--cfg {w:g}{guided_flags(qg)} --out grid.png`",
        "",
        "## Training",
        "",
        "```",
        f"farmer train --preset fmnist --out runs/fmnist --steps {m['train']['steps']}{recipe_flags(m)} "
        f"--ckpt-every 500   # noise {m['train']['noise']}, σ {m['train']['sigma_max']:g} → "
        f"{m['train']['sigma_min']:g}; channel mixing {c['channel_mixing']} ({c['mixing_position']})",
        f"farmer distill runs/fmnist {card.get('distill_command', '')}  # the one-step student, into the newest checkpoint",
        "```",
        "",
        f"Recipe: {json.dumps({k: m['train'][k] for k in ('batch_size', 'lr', 'warmup_steps', 'weight_decay', 'grad_clip', 'ema_decay', 'noise', 'sigma_max', 'sigma_min')})}; "
        "AdamW β = (0.9, 0.95), cosine decay, EMA weights shipped (fp32). "
        f"{card.get('training_note', '')}",
        "",
        "## Files",
        "",
        "| file | MB |",
        "| --- | --- |",
        *[f"| `{name}` | {mb} |" for name, mb in m["files_mb"].items()],
        "| `config.json` | model config and training metadata |",
        "| `card.json` | every figure above, as measured by `python benchmarks/model_card.py` |",
        "",
        "Loading reads only JSON and safetensors (no pickle).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    card = measure(args)
    if "quality_guided" not in card:
        print("card.json is not complete yet (quality_guided missing): README.md not written")
        return 0
    readme = resolve(args.checkpoint) / "README.md"
    readme.write_text(render(card))
    print(f"wrote {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
