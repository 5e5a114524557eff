"""Sample quality at a fixed CPU budget: which recipe gives samples a person recognises (issue 14).

For each recipe (a named set of model and training overrides, RECIPES below):
measure seconds per step here and now, size the run (and its cosine LR and
noise schedules) to fill the budget, train from scratch with `farmer.train`,
then score the final EMA weights on:

    test bpd      first --test-images test images, uniform dequantisation, single
                  sample, conditioned on the true class (comparable across recipes)
    consistency   the project's classifier's accuracy on --samples class-balanced samples,
                  unguided and with resampling CFG at w = --cfg (Table 6 settings otherwise)
    FD            Fréchet distance of those samples to the test set in the classifier's
                  feature space (not FID; compare only at equal sample counts)
    Fig. 7 ratio  mean |Δpixel| when Z^R is redrawn at v = 1 over mean |Δpixel| when Z^I
                  is perturbed at v = 1 (first --fig7-images test images, farmer.channels);
                  ≪ 1 means Z^I carries the structure, as in the paper

One table and JSON (merged under a file lock, keyed by recipe, minutes and
threads, so two one-thread studies can run side by side on two cores):

    python benchmarks/sample_quality.py --minutes 20 --threads 1 --recipes today gaussian &
    python benchmarks/sample_quality.py --minutes 20 --threads 1 --recipes dct dct+gaussian &
    python benchmarks/sample_quality.py --table            # print the stored table only
    python benchmarks/sample_quality.py --minutes 0.3 --samples 50 --recipes today --json /tmp/q.json  # smoke

Recipes may also be given as key=value overrides of FarmerConfig / TrainConfig
fields (and `denoise=σ` for the sampler), e.g. `channel_mixing=haar,noise=gaussian`.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import farmer
from farmer.channels import channel_experiment
from farmer.config import FarmerConfig, TrainConfig, train_presets
from farmer.data import load_fashion_mnist
from farmer.likelihood import evaluate_split
from farmer.quality import load_classifier, predict, sample_quality
from farmer.throughput import train_throughput
from farmer.train import train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from convergence import trainer_clock  # noqa: E402  (the trainer's own clock, shared with convergence.py)

# The shipped recipe before issue 14, spelled out so the rows stay fixed when the preset moves.
TODAY_MODEL = {"channel_mixing": "none"}
TODAY_TRAIN = {"noise": "uniform"}
GAUSS = {"noise": "gaussian"}                          # σ 0.1 -> 0.005 on a cosine schedule (the paper's)
TARFLOW_NOISE = {"noise": "gaussian", "sigma_max": 0.05, "sigma_min": 0.05}   # fixed σ, then denoise
DCT = {"channel_mixing": "dct", "mixing_position": "input"}

# name -> (model overrides, training overrides, sampler overrides)
RECIPES: dict[str, tuple[dict, dict, dict]] = {
    "today": (TODAY_MODEL, TODAY_TRAIN, {}),
    "gaussian": (TODAY_MODEL, GAUSS, {}),
    "fixed-σ+denoise": (TODAY_MODEL, TARFLOW_NOISE, {"denoise": 0.05}),
    "dct": (DCT, TODAY_TRAIN, {}),
    "dct+gaussian": (DCT, GAUSS, {}),
    "dct+fixed-σ+denoise": (DCT, TARFLOW_NOISE, {"denoise": 0.05}),
    "dct@split+gaussian": ({**DCT, "mixing_position": "split"}, GAUSS, {}),
    "haar+gaussian": ({**DCT, "channel_mixing": "haar"}, GAUSS, {}),
    "lu+gaussian": ({**DCT, "channel_mixing": "lu"}, GAUSS, {}),
    "dct+gaussian,d_I=10": ({**DCT, "d_informative": 10}, GAUSS, {}),
    "dct+gaussian,permute=none": ({**DCT, "final_permute": "none"}, GAUSS, {}),
    "dct+gaussian,M=1": ({**DCT, "condition_repeat": 1}, GAUSS, {}),
}


def parse_recipe(name: str) -> tuple[dict, dict, dict]:
    """A named recipe, or comma-separated key=value overrides (model, training or denoise=σ)."""
    if name in RECIPES:
        return RECIPES[name]
    model_keys, train_keys = set(FarmerConfig.__dataclass_fields__), set(TrainConfig.__dataclass_fields__)
    m, t, s = {}, {}, {}
    for item in name.split(","):
        key, eq, raw = item.partition("=")
        if not eq or key not in model_keys | train_keys | {"denoise"}:
            raise SystemExit(f"unknown recipe {name!r}: use one of {sorted(RECIPES)} or key=value pairs of "
                             f"FarmerConfig / TrainConfig fields (or denoise=σ)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        (s if key == "denoise" else m if key in model_keys else t)[key] = value
    return m, t, s


def score(model: farmer.Farmer, args, test, classifier, reference, sampler: dict) -> dict:
    """Every figure of one trained model (see the module docstring)."""
    n = args.test_images
    ev = evaluate_split(model, test.images[:n], test.labels[:n], batch_size=500, seed=0)
    out = {"test_bpd": ev["bpd"], "test_bpd_stderr": ev["bpd_stderr"]}
    for tag, kw in (("unguided", dict(guidance="none")),
                    (f"resample_w{args.cfg:g}", dict(guidance="resample", cfg_scale=args.cfg))):
        q = sample_quality(model, classifier, reference, num_samples=args.samples, batch_size=250,
                           seed=args.seed, **kw, **sampler)
        out[tag] = {"class_consistency": q["class_consistency"], "fd": q["fd"],
                    "seconds_per_image": q["seconds_per_image"]}
    m = args.fig7_images
    fig7 = channel_experiment(model, test.images[:m], test.labels[:m], variance=1.0, seed=0)
    out["fig7"] = {k: fig7[k] for k in ("redraw_redundant", "perturb_informative", "both", "ratio")}
    return out


def run_one(name: str, args, test, classifier, reference) -> dict:
    model_over, train_over, sampler = parse_recipe(name)
    mcfg = farmer.presets[args.preset].replace(**model_over)
    tcfg = train_presets[args.preset].replace(data="fashion-mnist", sample_every=0, seed=args.seed,
                                              **train_over)
    torch.set_num_threads(args.threads)
    tp = train_throughput(mcfg, batch_size=tcfg.batch_size, precision=tcfg.precision, steps=8)
    steps = max(20, int(args.minutes * 60 * tp["images_per_s"] / tcfg.batch_size))
    tcfg = tcfg.replace(steps=steps, ckpt_every=0, warmup_steps=min(tcfg.warmup_steps, steps // 10),
                        log_every=min(tcfg.log_every, max(1, steps // 20)))
    run_dir = Path(args.runs) / f"{name.replace('/', '_').replace(',', '_')}-{args.minutes:g}min-{args.threads}t"
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[{name}] {tp['images_per_s']:.0f} img/s measured -> {steps} steps of batch {tcfg.batch_size} "
          f"for {args.minutes:g} min", flush=True)
    t0 = time.time()
    result = train(mcfg, tcfg, run_dir, progress=False, log=lambda s: None)
    wall = time.time() - t0
    train_s = trainer_clock(run_dir / "metrics.jsonl", tcfg.batch_size)(steps)
    model = result.ema.eval()
    figures = score(model, args, test, classifier, reference, sampler)
    row = {"name": name, "minutes": args.minutes, "threads": args.threads, "steps": steps,
           "train_seconds": train_s, "wall_seconds": wall, "images_per_s": tp["images_per_s"],
           "model": mcfg.to_dict(), "train": tcfg.to_dict(), "sampler": sampler,
           "samples": args.samples, "cfg_scale": args.cfg, "fig7_images": args.fig7_images,
           "test_images": args.test_images, **figures}
    print(format_row(row), flush=True)
    return row


def format_row(r: dict) -> str:
    g, u = r[f"resample_w{r['cfg_scale']:g}"], r["unguided"]
    return (f"| {r['name']} | {r['minutes']:g} ({r['train_seconds'] / 60:.1f}) | {r['steps']} | {r['test_bpd']:.3f} | "
            f"{100 * u['class_consistency']:.1f}% / {100 * g['class_consistency']:.1f}% | "
            f"{u['fd']:.1f} / {g['fd']:.1f} | {r['fig7']['ratio']:.2f} |")


def print_table(rows: list[dict]) -> None:
    print(f"\n| recipe | minutes (trained) | steps | test bpd | consistency unguided / w | "
          f"FD unguided / w | Fig. 7 ratio |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["minutes"], r["threads"], list(RECIPES).index(r["name"])
                                         if r["name"] in RECIPES else 99)):
        print(format_row(r))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipe names or key=value overrides")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per recipe (trainer's clock)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--preset", default="fmnist", help="model + training preset (default fmnist)")
    p.add_argument("--samples", type=int, default=1000, help="samples per guidance setting (default 1000)")
    p.add_argument("--cfg", type=float, default=2.0, help="resampling CFG weight w (default 2)")
    p.add_argument("--test-images", type=int, default=2000, help="test images for bits/dim (default 2000)")
    p.add_argument("--fig7-images", type=int, default=100, help="test images for the Fig. 7 ratio (default 100)")
    p.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    p.add_argument("--runs", default="runs/sample_quality", help="where the training runs go")
    p.add_argument("--json", default=str(HERE / "sample_quality.json"), help="results file (merged)")
    p.add_argument("--table", action="store_true", help="print the stored table and exit")
    args = p.parse_args()
    path = Path(args.json)
    if args.table:
        print_table(json.loads(path.read_text())["runs"] if path.exists() else [])
        return 0
    for name in args.recipes:
        parse_recipe(name)                                                     # fail before any training
    test = load_fashion_mnist("test")
    classifier, _ = load_classifier(HERE.parent / "checkpoints" / "fmnist-classifier")
    reference = predict(classifier, test.images)[1]
    for name in args.recipes:
        row = run_one(name, args, test, classifier, reference)
        with open(path.with_suffix(".lock"), "w") as lock:                     # parallel studies merge safely
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(path.read_text()) if path.exists() else {"runs": []}
            key = lambda r: (r["name"], r["minutes"], r["threads"])            # noqa: E731
            old["runs"] = [r for r in old["runs"] if key(r) != key(row)] + [row]
            path.write_text(json.dumps(old, indent=2))
    print_table(json.loads(path.read_text())["runs"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
