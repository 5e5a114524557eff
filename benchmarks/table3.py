"""The paper's Table 3 at Fashion-MNIST scale, on today's recipe: each arm at equal compute, with seeds.

FARMER's Table 3 ablates the self-supervised dimension reduction (split /
none / JetFormer's Z^R ~ N(0, I)), the condition repeat M, the final permute
and the guidance rule. Here every arm is the `fmnist` preset (DCT mixing in
front of the flow, the paper's Gaussian noise curriculum σ 0.1 -> 0.005)
with one change, trained from scratch for the same number of optimizer steps
(--steps, default 3,000 of batch 64: about 30 minutes of one thread) with its
cosine LR and noise schedules sized to that run:

    split          FARMER: Z^I (d_I = 6) by the AR, Z^R by one shared GMM G_{N+1}   seeds 0, 1
    none           no split: the AR models all 16 dimensions of every token         seeds 0, 1
    jetformer      Z^R ~ N(0, I), ignoring Z^I and the class (JetFormer)            seeds 0, 1
    M=1            condition repeat 1 instead of the preset's 4                      seed 0
    permute=none   no final permute between the AF and the AR (preset: reverse)      seed 0
    dct@split      the DCT just before the split instead of in front of the flow     seed 0
    uniform-tail   the last 15% of steps under uniform dequantisation (ours, a lever  seed 0
                   of the flagship run: the bound its bits/dim are scored on)
    K_R=64         a richer G_{N+1}: 64 components instead of the preset's 16          seed 0
    d_I=10         10 informative dimensions per token instead of the preset's 6      seed 0
                   (ours, a lever of the flagship run: more of each token to the AR)

Figures of each run's final EMA weights:

    test bpd       first --test-images test images, uniform dequantisation, single sample,
                   conditioned on the true class
    consistency    the project's classifier's accuracy on --samples class-balanced samples,
                   unguided and guided (resampling CFG, w = 2, exact weights: T_π,v = T_σ,v = T_s = 1,
                   the paper's 5 + 5 candidates per token)
    FD             Fréchet distance to the test set in that classifier's feature space
    Fig. 7 ratio   mean |Δpixel| with Z^R redrawn / with Z^I perturbed, both at v = 1
                   (first --fig7-images test images; no Z^R in the "none" arm)
    guidance       split arms only: none / naive / resampling with Table 6 weights
                   (T_π,v = 0.1, T_s = 1.1) / resampling with exact weights, at w = 1 and 2

The table gives each arm's mean over its seeds and, with two or more seeds,
the spread (max − min). Each run writes its row to the JSON as soon as it is
scored (merged under a file lock, so two one-thread workers can share a
file), keeps checkpoints every 500 steps under --runs, and a rerun skips
rows already stored and resumes a half-trained run from its checkpoint:

    python benchmarks/table3.py --runs ~/farmer-table3 &                       # every arm, in order
    python benchmarks/table3.py --arms none jetformer --seeds 1 &              # a second worker
    python benchmarks/table3.py --table                                        # the stored table
    python benchmarks/table3.py --steps 20 --samples 50 --test-images 100 --json /tmp/t3.json  # smoke
"""
from __future__ import annotations

import argparse
import fcntl
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import farmer
from farmer.channels import channel_experiment
from farmer.checkpoint import latest_checkpoint
from farmer.config import train_presets
from farmer.data import load_fashion_mnist
from farmer.likelihood import evaluate_split
from farmer.quality import load_classifier, predict, sample_quality
from farmer.train import train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from convergence import trainer_clock  # noqa: E402  (the trainer's own clock, shared with convergence.py)

# arm -> (FarmerConfig overrides of the fmnist preset, seeds)
ARMS: dict[str, tuple[dict, tuple[int, ...]]] = {
    "split": ({}, (0, 1)),
    "none": ({"redundant_mode": "none"}, (0, 1)),
    "jetformer": ({"redundant_mode": "jetformer"}, (0, 1)),
    "M=1": ({"condition_repeat": 1}, (0,)),
    "permute=none": ({"final_permute": "none"}, (0,)),
    "dct@split": ({"mixing_position": "split"}, (0,)),
    "uniform-tail": ({}, (0,)),
    "K_R=64": ({"k_redundant": 64}, (0,)),
    "d_I=10": ({"d_informative": 10}, (0,)),
}
# The table's base recipe: the fmnist preset as it stood when the table was started (DCT in front of the
# flow, the Gaussian curriculum to the last step). The preset has since moved to the flagship's recipe
# (DCT at the split, a uniform tail); pinning the base here keeps every arm comparable to the stored ones.
BASE_MODEL: dict = {"mixing_position": "input"}
BASE_TRAIN: dict = {"uniform_tail": 0.0}
# arm -> TrainConfig overrides of the fmnist training recipe (the arms above change the model only)
TRAIN_OVERRIDES: dict[str, dict] = {"uniform-tail": {"uniform_tail": 0.15}}
EXACT = dict(t_pi_verify=1.0, t_sigma_verify=1.0, t_select=1.0)       # the weights of Eq. 15 as written
TABLE6 = dict(t_pi_verify=0.1, t_sigma_verify=1.0, t_select=1.1)      # the paper's Table 6 settings
GUIDED = ("resample_exact", 2.0)                                      # the "guided" column of every arm
POOL = dict(candidates_cond=5, candidates_uncond=5)                  # Algorithm 1's pool, as the paper ran it
GUIDANCE = {"none": dict(guidance="none"), "naive": dict(guidance="naive"),
            "resample_table6": dict(guidance="resample", **TABLE6, **POOL),
            "resample_exact": dict(guidance="resample", **EXACT, **POOL)}


def quality(model, args, classifier, reference, rule: str, w: float) -> dict:
    q = sample_quality(model, classifier, reference, num_samples=args.samples, batch_size=250, seed=1000,
                       cfg_scale=w, **GUIDANCE[rule])
    return {"class_consistency": q["class_consistency"], "fd": q["fd"], "seconds_per_image": q["seconds_per_image"]}


def score(model: farmer.Farmer, arm: str, args, test, classifier, reference) -> dict:
    """Every figure of one trained model (see the module docstring)."""
    n, m = args.test_images, args.fig7_images
    ev = evaluate_split(model, test.images[:n], test.labels[:n], batch_size=500, seed=0)
    out = {"test_bpd": ev["bpd"], "test_bpd_stderr": ev["bpd_stderr"],
           "unguided": quality(model, args, classifier, reference, "none", 0.0),
           "guided": quality(model, args, classifier, reference, *GUIDED)}
    if model.cfg.redundant_mode == "none":
        out["fig7"] = None                                              # no Z^R to redraw
    else:
        fig7 = channel_experiment(model, test.images[:m], test.labels[:m], variance=1.0, seed=0)
        out["fig7"] = {k: fig7[k] for k in ("redraw_redundant", "perturb_informative", "both", "ratio")}
    if arm == "split":
        out["guidance"] = {f"{rule}_w{w:g}": quality(model, args, classifier, reference, rule, w)
                           for rule in ("naive", "resample_table6", "resample_exact") for w in (1.0, 2.0)}
    return out


def run_one(arm: str, seed: int, args, test, classifier, reference) -> dict:
    mcfg, tcfg = arm_recipe(arm, seed, args.steps)
    run_dir = Path(args.runs).expanduser() / f"{arm.replace('=', '-').replace('@', '-at-')}-s{seed}-{args.steps}"
    resume = latest_checkpoint(run_dir) is not None
    torch.set_num_threads(args.threads)
    print(f"[{arm} seed {seed}] {args.steps} steps of batch {tcfg.batch_size} on {args.threads} thread(s)"
          f"{' (resuming)' if resume else ''} -> {run_dir}", flush=True)
    t0 = time.time()
    # a run killed before its first checkpoint left only a metrics log: nothing to resume, so it is replaced
    result = train(mcfg, tcfg, run_dir, resume=resume, replace=not resume, progress=False, log=lambda s: None)
    wall = time.time() - t0
    train_s = trainer_clock(run_dir / "metrics.jsonl", tcfg.batch_size)(args.steps)
    figures = score(result.ema.eval(), arm, args, test, classifier, reference)
    row = {"arm": arm, "seed": seed, "steps": args.steps, "threads": args.threads, "train_seconds": train_s,
           "wall_seconds_this_process": wall, "model": mcfg.to_dict(), "train": tcfg.to_dict(),
           "samples": args.samples, "test_images": args.test_images, "fig7_images": args.fig7_images,
           "guided_setting": {"rule": GUIDED[0], "cfg_scale": GUIDED[1], **EXACT, **POOL}, **figures}
    print(f"[{arm} seed {seed}] bpd {row['test_bpd']:.3f}, consistency {row['unguided']['class_consistency']:.3f}"
          f" / {row['guided']['class_consistency']:.3f}, FD {row['unguided']['fd']:.1f} / {row['guided']['fd']:.1f}"
          f", trained {train_s / 60:.1f} min", flush=True)
    return row


# ------------------------------------------------------------------------------------------- the table
def _stat(values: list[float], fmt: str, scale: float = 1.0) -> str:
    """'mean' for one seed, 'mean ± half-range (n)' for several: the spread shown is (max − min)/2."""
    v = [scale * x for x in values if x is not None]
    if not v:
        return "–"
    if len(v) == 1:
        return format(v[0], fmt)
    return f"{format(statistics.mean(v), fmt)} ± {format((max(v) - min(v)) / 2, fmt)}"


def summarise(rows: list[dict]) -> dict[str, dict]:
    """arm -> {figure: [per-seed values]} for the rows of one step budget."""
    out: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        a = out.setdefault(r["arm"], {"seeds": [], "minutes": [], "bpd": [], "cons_u": [], "cons_g": [],
                                      "fd_u": [], "fd_g": [], "fig7": [], "samples": [], "bpd_stderr": []})
        a["seeds"].append(r["seed"])
        a["samples"].append(r["samples"])
        a["bpd_stderr"].append(r["test_bpd_stderr"])
        a["minutes"].append(r["train_seconds"] / 60)
        a["bpd"].append(r["test_bpd"])
        a["cons_u"].append(r["unguided"]["class_consistency"])
        a["cons_g"].append(r["guided"]["class_consistency"])
        a["fd_u"].append(r["unguided"]["fd"])
        a["fd_g"].append(r["guided"]["fd"])
        a["fig7"].append(r["fig7"]["ratio"] if r["fig7"] else None)
    return out


def table_markdown(rows: list[dict]) -> str:
    """The stored runs as markdown tables: one per step budget, and the guidance rules on the split arm."""
    out = []
    for steps in sorted({r["steps"] for r in rows}):
        summary = summarise([r for r in rows if r["steps"] == steps])
        out.append(f"{steps:,} steps of batch 64 per run; mean ± half the range over the seeds listed; guided = "
                   f"resampling CFG w = {GUIDED[1]:g}, exact weights\n\n| arm | seeds | minutes trained | test bpd | "
                   f"consistency unguided | consistency guided | FD unguided | FD guided | Fig. 7 ratio |\n"
                   f"| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for arm in [a for a in ARMS if a in summary]:
            a = summary[arm]
            out.append(f"| {arm} | {','.join(map(str, a['seeds']))} | {_stat(a['minutes'], '.0f')} | "
                       f"{_stat(a['bpd'], '.3f')} | {_stat(a['cons_u'], '.1f', 100)}% | "
                       f"{_stat(a['cons_g'], '.1f', 100)}% | {_stat(a['fd_u'], '.1f')} | {_stat(a['fd_g'], '.1f')} | "
                       f"{_stat(a['fig7'], '.2f')} |")
        guided = [r for r in rows if r["steps"] == steps and r.get("guidance")]
        if guided:
            out.append(f"\nGuidance on the split arm (seeds {','.join(str(r['seed']) for r in guided)}): "
                       f"consistency / FD\n\n| rule | w = 1 | w = 2 |\n| --- | --- | --- |")
            out.append(f"| none | {_stat([r['unguided']['class_consistency'] for r in guided], '.1f', 100)}% / "
                       f"{_stat([r['unguided']['fd'] for r in guided], '.1f')} | (same) |")
            for rule in ("naive", "resample_table6", "resample_exact"):
                cells = []
                for w in (1, 2):
                    g = [r["guidance"][f"{rule}_w{w}"] for r in guided]
                    cells.append(f"{_stat([x['class_consistency'] for x in g], '.1f', 100)}% / "
                                 f"{_stat([x['fd'] for x in g], '.1f')}")
                out.append(f"| {rule} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def print_table(rows: list[dict]) -> None:
    print("\n" + table_markdown(rows))


# ------------------------------------------------------------------------------------------- the verdicts
# (figure, its key in summarise(), +1 when higher is better, -1 when lower is)
FIGURES = [("test bpd", "bpd", -1), ("consistency unguided", "cons_u", +1), ("consistency guided", "cons_g", +1),
           ("FD unguided", "fd_u", -1), ("FD guided", "fd_g", -1)]
# (the paper's claim, the arm it favours, the arm it is compared with); "ours" marks a comparison of our own
CLAIMS = [("the split beats no dimension reduction (Table 3: ImageNet FID 61.17 → 49.29, no CFG)", "split", "none"),
          ("the split beats JetFormer's Z^R ~ N(0, I)", "split", "jetformer"),
          ("condition repeat M = 4 (the preset's; paper 64) beats M = 1", "split", "M=1"),
          ("the final reverse permute beats none", "split", "permute=none"),
          ("ours: the DCT just before the split beats the DCT in front of the flow", "dct@split", "split"),
          ("ours: a uniform-dequantisation tail (last 15% of steps) beats the curriculum alone", "uniform-tail",
           "split"),
          ("ours: a richer G_{N+1}, K_R = 64 components, beats the preset's 16", "K_R=64", "split"),
          ("ours: d_I = 10 informative dimensions (of 16) beat the preset's 6", "d_I=10", "split")]


def _spread(values: list[float]) -> float | None:
    return (max(values) - min(values)) / 2 if len(values) > 1 else None


def compare(a: list[float], b: list[float], sign: int, noise: float | None,
            floor_a: float = 0.0, floor_b: float = 0.0) -> dict:
    """A against B on one figure, by the run-to-run spread.

    a, b: per-seed values; sign: +1 when higher is better. An arm's spread is half its range over
    seeds; an arm with one seed borrows `noise` (the largest half-range any multi-seed arm shows on
    this figure). No spread is taken below the arm's own sampling error (floor_a, floor_b: the
    standard error of its mean, see `sampling_error`), so two seeds that agree by chance do not
    make a zero spread. The difference (positive when A is better) counts only when it exceeds the
    sum of the two spreads, i.e. when the arms' ranges cannot overlap: "confirmed" (A better),
    "refuted" (B better), else "within noise"; "no spread yet" when no figure has two seeds.
    """
    sa, sb = _spread(a), _spread(b)
    sa, sb = (noise if sa is None else sa), (noise if sb is None else sb)
    diff = sign * (statistics.mean(a) - statistics.mean(b))
    if sa is None or sb is None:
        return {"difference": diff, "threshold": None, "verdict": "no spread yet"}
    threshold = max(sa, floor_a) + max(sb, floor_b)
    verdict = "confirmed" if diff > threshold else "refuted" if diff < -threshold else "within noise"
    return {"difference": diff, "threshold": threshold, "verdict": verdict}


def sampling_error(arm: dict, key: str) -> float:
    """The standard error of an arm's mean figure from its own finite samples: binomial for class
    consistency (n samples per seed), the test images' standard error for bits/dim; 0 for FD
    (no closed form; its spread comes from the seeds alone)."""
    if key in ("cons_u", "cons_g"):
        return binomial_error(arm[key], sum(arm["samples"]))
    if key == "bpd":
        return statistics.mean(arm["bpd_stderr"]) / math.sqrt(len(arm[key]))
    return 0.0


def binomial_error(shares: list[float], n: int) -> float:
    """Standard error of the mean of class-consistency shares measured on n samples in all."""
    p = statistics.mean(shares)
    return math.sqrt(p * (1 - p) / n)


def verdicts(rows: list[dict], steps: int | None = None) -> list[dict]:
    """Each claim in CLAIMS on each figure, for the runs of one step budget (default: the largest)."""
    steps = steps or max(r["steps"] for r in rows)
    summary = summarise([r for r in rows if r["steps"] == steps])
    out = []
    for fig, key, sign in FIGURES:
        spreads = [_spread(a[key]) for a in summary.values() if len(a[key]) > 1]
        noise = max(spreads) if spreads else None
        for claim, arm_a, arm_b in CLAIMS:
            if arm_a in summary and arm_b in summary:
                A, B = summary[arm_a], summary[arm_b]
                c = compare(A[key], B[key], sign, noise, sampling_error(A, key), sampling_error(B, key))
                out.append({"claim": claim, "figure": fig, "a": arm_a, "b": arm_b,
                            "a_mean": statistics.mean(summary[arm_a][key]),
                            "b_mean": statistics.mean(summary[arm_b][key]),
                            "seeds": (len(summary[arm_a][key]), len(summary[arm_b][key])), **c})
    guided = [r for r in rows if r["steps"] == steps and r.get("guidance")]
    for w in (1, 2):
        for rule in ("resample_exact", "resample_table6"):
            for fig, field, sign, key in (("consistency", "class_consistency", +1, "cons"), ("FD", "fd", -1, "fd")):
                a = [r["guidance"][f"{rule}_w{w}"][field] for r in guided]
                b = [r["guidance"][f"naive_w{w}"][field] for r in guided]
                if not a:
                    continue
                # the spread of guided figures: the larger of the two rules' half-ranges over the split seeds
                noise = max([x for x in (_spread(a), _spread(b)) if x is not None], default=None)
                n = sum(r["samples"] for r in guided)
                floors = (binomial_error(a, n), binomial_error(b, n)) if field == "class_consistency" else (0.0, 0.0)
                c = compare(a, b, sign, noise, *floors)
                name = "exact" if rule == "resample_exact" else "Table 6"
                out.append({"claim": f"resampling CFG ({name} weights) beats naive CFG at equal w",
                            "figure": f"{fig}, w = {w}", "a": rule, "b": "naive", "a_mean": statistics.mean(a),
                            "b_mean": statistics.mean(b), "seeds": (len(a), len(b)), **c})
    return out


def _cell(v: dict) -> str:
    """'**verdict** +diff (noise n)' in the figure's own units (consistency in points)."""
    pct = "consistency" in v["figure"]
    scale, fmt = (100.0, ".1f") if pct else (1.0, ".3f" if "bpd" in v["figure"] else ".1f")
    diff = f"{scale * v['difference']:+{fmt}}{' pts' if pct else ''}"
    if v["threshold"] is None:
        return f"{diff} (no spread yet)"
    return f"**{v['verdict']}** {diff} (noise {scale * v['threshold']:{fmt}})"


def verdicts_markdown(rows: list[dict]) -> str:
    """Two tables: the arms' claims on every figure, and resampling against naive CFG at equal w."""
    vs = verdicts(rows)
    figs = [f[0] for f in FIGURES]
    lines = []
    for claim, a, b in CLAIMS:
        cells = {v["figure"]: v for v in vs if v["claim"] == claim}
        if cells:
            n = next(iter(cells.values()))["seeds"]
            if not lines:
                lines = ["| claim | arms (seeds) | " + " | ".join(figs) + " |", "|" + " --- |" * (2 + len(figs))]
            lines.append(f"| {claim} | {a} ({n[0]}) vs {b} ({n[1]}) | "
                         + " | ".join(_cell(cells[f]) if f in cells else "–" for f in figs) + " |")
    guided = [v for v in vs if v["b"] == "naive"]
    if guided:
        lines += ([""] if lines else []) + ["| resampling against naive CFG on the split arm (paper: FID 5.67 vs 8.66) | seeds | "
                  "consistency, w = 1 | FD, w = 1 | consistency, w = 2 | FD, w = 2 |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for rule, name in (("resample_exact", "exact weights"), ("resample_table6", "Table 6 weights")):
            cells = {v["figure"]: v for v in guided if v["a"] == rule}
            order = ["consistency, w = 1", "FD, w = 1", "consistency, w = 2", "FD, w = 2"]
            lines.append(f"| resampling, {name} | {cells[order[0]]['seeds'][0]} | "
                         + " | ".join(_cell(cells[o]) for o in order) + " |")
    return "\n".join(lines)


BLOCK = ("<!-- table3:start -->", "<!-- table3:end -->")


def block(rows: list[dict]) -> str:
    """What docs/studies.md shows between the table3 markers: the table and the verdicts, from the JSON only."""
    return "\n\n".join([table_markdown(rows), "Each claim, by the run-to-run spread (see `compare`):",
                         verdicts_markdown(rows)])


def readme_block(rows: list[dict]) -> str:
    """What README.md shows between the markers: the verdicts alone, with their budget."""
    steps = max(r["steps"] for r in rows)
    arms = summarise([r for r in rows if r["steps"] == steps])
    done = ", ".join(f"{a} ({len(v['seeds'])} seed{'s' * (len(v['seeds']) > 1)})" for a, v in arms.items())
    complete = all(set(seeds) <= set(arms.get(a, {}).get("seeds", ())) for a, (_, seeds) in ARMS.items())
    return (f"Runs{'' if complete else ' so far'}, {steps:,} steps of batch 64 each: {done}. "
            "Verdicts by the run-to-run spread; "
            "the table, the method and every figure are in [Studies](docs/studies.md).\n\n"
            + verdicts_markdown(rows))


TARGETS = {"docs/studies.md": block, "README.md": readme_block}


def current_block(text: str, markers: tuple[str, str] = BLOCK) -> str | None:
    if markers[0] not in text:
        return None
    return text.split(markers[0], 1)[1].split(markers[1], 1)[0].strip("\n")


def write_block(path: Path, rows: list[dict], make=block, markers: tuple[str, str] = BLOCK) -> None:
    """Replace what lies between `markers` in the file at `path` with make(rows)."""
    text = path.read_text()
    if markers[0] not in text:
        raise SystemExit(f"{path}: no {markers[0]} marker to write the table between")
    head, rest = text.split(markers[0], 1)
    path.write_text(f"{head}{markers[0]}\n{make(rows)}\n{markers[1]}{rest.split(markers[1], 1)[1]}")


def arm_recipe(arm: str, seed: int, steps: int):
    """(FarmerConfig, TrainConfig) of one run: the fmnist preset and recipe with the arm's overrides,
    its schedules sized to `steps`."""
    over, _ = ARMS[arm]
    mcfg = farmer.presets["fmnist"].replace(**{**BASE_MODEL, **over})
    tcfg = train_presets["fmnist"].replace(**{**BASE_TRAIN, **TRAIN_OVERRIDES.get(arm, {})})
    tcfg = tcfg.replace(steps=steps, seed=seed, sample_every=0, ckpt_every=500, keep_checkpoints=1,
                        warmup_steps=min(200, steps // 10), log_every=min(10, max(1, steps // 20)))
    return mcfg, tcfg


def recipe_changes(stored: list[dict], steps: int) -> str:
    """The settings in which today's recipe for an arm differs from its stored runs of this budget
    (e.g. the fmnist preset changed since): '' when every stored run would be trained the same today."""
    diffs = set()
    for r in stored:
        if r["steps"] != steps or r["arm"] not in ARMS:
            continue
        model, tr = (c.to_dict() for c in arm_recipe(r["arm"], r["seed"], steps))
        diffs |= {f"model {k}" for k in model if r["model"].get(k) != model[k]}
        diffs |= {f"train {k}" for k in tr if k not in ("device", "num_workers") and r["train"].get(k) != tr[k]}
    return ", ".join(sorted(diffs))


def _merge(path: Path, row: dict) -> None:
    with open(path.with_suffix(".lock"), "w") as lock:                        # parallel workers merge safely
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else {"runs": []}
        key = lambda r: (r["arm"], r["seed"], r["steps"])                     # noqa: E731
        old["runs"] = [r for r in old["runs"] if key(r) != key(row)] + [row]
        path.write_text(json.dumps(old, indent=2))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to run (default all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="only these seeds (default: each arm's own seeds, see ARMS)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps per run (default 3000, batch 64)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--samples", type=int, default=1000, help="samples per guidance setting (default 1000)")
    p.add_argument("--test-images", type=int, default=2000, help="test images for bits/dim (default 2000)")
    p.add_argument("--fig7-images", type=int, default=100, help="test images for the Fig. 7 ratio (default 100)")
    p.add_argument("--runs", default="runs/table3", help="where the training runs and their checkpoints go")
    p.add_argument("--json", default=str(HERE / "table3.json"), help="results file (merged)")
    p.add_argument("--table", action="store_true", help="print the stored table and the verdicts, and exit")
    p.add_argument("--write", action="store_true",
                   help=f"write the table and verdicts between the table3 markers of {' and '.join(TARGETS)}, and exit")
    args = p.parse_args()
    if args.steps < 1 or args.samples < 2 or args.test_images < 1 or args.fig7_images < 1:
        p.error("--steps, --test-images and --fig7-images must be >= 1 and --samples >= 2")
    path = Path(args.json)
    stored = json.loads(path.read_text())["runs"] if path.exists() else []
    if args.table:
        print(block(stored))
        return 0
    if args.write:
        for target, make in TARGETS.items():
            write_block(HERE.parent / target, stored, make)
            print(f"wrote the table3 block of {target}")
        return 0
    changed = recipe_changes(stored, args.steps)
    if changed:
        p.error(f"the fmnist recipe changed since the stored runs of {args.steps} steps were made ({changed}); "
                f"arms trained on different recipes do not compare: pass --json NEW.json to start a new table")
    done = {(r["arm"], r["seed"], r["steps"]) for r in stored}
    todo = [(arm, s) for arm in args.arms for s in ARMS[arm][1]
            if (args.seeds is None or s in args.seeds) and (arm, s, args.steps) not in done]
    print(f"{len(todo)} run(s) to do: {todo}", flush=True)
    if todo:
        test = load_fashion_mnist("test")
        classifier, _ = load_classifier(HERE.parent / "checkpoints" / "fmnist-classifier")
        reference = predict(classifier, test.images)[1]
    for arm, seed in todo:
        _merge(path, run_one(arm, seed, args, test, classifier, reference))
    print_table(json.loads(path.read_text())["runs"] if path.exists() else [])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
