"""The `farmer` command line: `farmer train|eval|bench|export|sample|distill|classifier|quality`.

Each subcommand is a thin layer over the library: argparse flags map onto
the config dataclasses, and the work is done by library functions. This is
the only module that parses argv.
"""
from __future__ import annotations

import argparse
import os
import sys

from .cli_common import _checkpoint_tag, _friendly, _opt_int, name_flags  # noqa: F401  (name_flags re-exported)
from .cli_sample import _add_classifier, _add_distill, _add_quality, _add_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="farmer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # ---- train / eval (training issue) ----
    _add_train(sub)
    _add_eval(sub)
    _add_bench(sub)
    _add_export(sub)
    # ---- sample / distill (sampling issue) ----
    _add_sample(sub)
    _add_distill(sub)
    # ---- sample quality (pretrained-model issue) ----
    _add_classifier(sub)
    _add_quality(sub)
    return parser



# ============================================================================ train / eval / bench
# Config dataclass fields become flags (--flow-blocks, --lr, ...). Their
# defaults are SUPPRESSed so that only flags given on the command line
# override the preset (or, with --resume, the checkpoint).
_EXTRA_HELP = {  # FarmerConfig fields without a trailing comment in config.py
    "ar_layers": "transformer layers of the AR prior",
    "ar_width": "transformer width of the AR prior",
    "ar_heads": "attention heads of the AR prior",
    "mlp_ratio": "MLP hidden width / transformer width, in the flow and the AR",
    "dropout": "dropout probability in every transformer (training only)",
}
_CHOICES = {"redundant_mode": ("split", "none", "jetformer"), "final_permute": ("reverse", "none"),
            "channel_mixing": ("none", "dct", "haar", "lu"), "mixing_position": ("input", "split"),
            "noise": ("uniform", "gaussian"), "crop": ("center", "random"), "precision": ("fp32", "bf16"), "export_weights": ("ema", "raw")}



def _add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One --flag per dataclass field, help from the field's comment in config.py."""
    import dataclasses
    from .config import field_help
    docs = {k: v.replace("%", "%%") for k, v in {**_EXTRA_HELP, **field_help(cls)}.items()}   # argparse formats %
    group = parser.add_argument_group(title)
    types = {"int": int, "float": float, "str": str, "int | None": _opt_int, "str | None": str}
    for f in dataclasses.fields(cls):
        if str(f.type) == "bool":                                       # a switch: --strict-data
            group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="store_true",
                               default=argparse.SUPPRESS, help=docs.get(f.name, f"the {f.name} field"))
            continue
        kind = types.get(str(f.type), str)
        meta = "N|none" if kind is _opt_int else None
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=argparse.SUPPRESS,
                           choices=_CHOICES.get(f.name), metavar=meta,
                           help=docs.get(f.name, f"the {f.name} field of {cls.__name__}") + " (default: the preset's)")


def _overrides(args: argparse.Namespace, cls: type) -> dict:
    import dataclasses
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


# Library argument names that differ from their flag (the rest map by their own name: t_sigma -> --t-sigma).

def _banner(title: str, sections: dict) -> str:
    lines = [f"==== {title} " + "=" * max(0, 60 - len(title))]
    for name, d in sections.items():
        lines.append(f"[{name}]")
        lines += [f"  {k:<18} {v}" for k, v in d.items()]
    return "\n".join(lines + ["=" * 66])


def _add_train(sub) -> None:
    from .config import FarmerConfig, TrainConfig, presets
    p = sub.add_parser("train", help="train a model (torchrun-aware)", description=(
        "Train FARMER. Every model and training field is a flag; given flags override the preset "
        "(or, with --resume, the checkpoint). Under `torchrun --nproc_per_node N` it trains with DDP, "
        "or with FSDP2 given --fsdp (weights, gradients and optimizer state sharded over the ranks)."))
    p.add_argument("--preset", choices=sorted(presets), default=argparse.SUPPRESS,
                   help="model + training preset (default: fmnist, or the checkpoint's with --resume)")
    p.add_argument("--out", default=None, help="output folder: metrics.jsonl, checkpoints/, samples/, "
                   "loss_curve.png (default: runs/<preset>)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=("auto",), metavar="auto",
                   help="continue the run in --out from its newest checkpoint (optimizer, EMA, step, data "
                   "order, RNG); refused if there is none. `--resume auto`: resume if there is a checkpoint, "
                   "else start (a preemptible job's first start)")
    p.add_argument("--replace", action="store_true", help="start a new run in an --out that holds one, "
                   "deleting that run's metrics.jsonl, loss_curve.png, checkpoints/ and samples/ first")
    p.add_argument("--dry-run", action="store_true", help="build everything, run two steps, keep nothing")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    _add_config_flags(p, FarmerConfig, "model (FarmerConfig)")
    _add_config_flags(p, TrainConfig, "training (TrainConfig)")
    p.set_defaults(func=_friendly(_cmd_train, p))


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path
    from .checkpoint import latest_checkpoint, read_config
    from .config import FarmerConfig, TrainConfig, presets, train_presets
    from .train import train
    preset = getattr(args, "preset", None)
    out = Path(args.out or f"runs/{preset or 'fmnist'}")
    base_model = base_train = None
    last = latest_checkpoint(out) if args.resume and not args.dry_run else None
    if last is not None:                                          # continue with the run's own settings
        meta, base_model = read_config(last)
        base_train = TrainConfig.from_dict(meta.get("train", {}))
    if preset is not None or base_model is None:
        preset = preset or "fmnist"
        base_model, base_train = presets[preset], base_train or train_presets.get(preset, TrainConfig())
    model_cfg = base_model.replace(**_overrides(args, FarmerConfig))
    train_cfg = base_train.replace(**_overrides(args, TrainConfig))
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        print(_banner(f"farmer train{' (dry run)' if args.dry_run else ''}",
                      {"run": {"preset": preset or "(from checkpoint)", "out": out, "resume": args.resume,
                               "processes": os.environ.get("WORLD_SIZE", "1")},
                       "model": model_cfg.to_dict(), "train": train_cfg.to_dict()}), flush=True)
    train(model_cfg, train_cfg, None if args.dry_run else out, resume=args.resume, replace=args.replace,
          dry_run=args.dry_run, progress=not args.no_progress)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="bits/dim of a checkpoint over a data split", description=(
        "Bits/dim over a whole split with uniform dequantisation: single-sample (--k 1) or the K-sample "
        "importance-weighted bound. Writes JSON naming the estimator."))
    p.add_argument("checkpoint", help="checkpoint directory (or a `farmer train` --out folder: its newest)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="data split (default: test)")
    p.add_argument("--k", type=int, default=1, help="dequantisation samples per image; > 1 gives the "
                   "importance-weighted bound (default: 1)")
    p.add_argument("--data", default=None, help="data set (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", default=None, help="where the data files are (default: the search order)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="dequantisation seed (default: 0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument("--weights", choices=("ema", "raw"), default=None,
                   help="which weights (default: those in model.safetensors, EMA for trained runs)")
    p.add_argument("--unconditional", action="store_true", help="score under the null class: log p(x) "
                   "instead of log p(x | class)")
    p.add_argument("--out", default=None, help="JSON output (default: ./eval_<checkpoint>_<split>_k<K>.json "
                   "in the working folder; nothing is written into the checkpoint)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_friendly(_cmd_eval, p))


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path
    from .checkpoint import atomic_write_json, load, read_config, resolve
    from .data import ArrayDataset, load_dataset
    from .likelihood import evaluate_split
    path = resolve(args.checkpoint)
    meta, cfg = read_config(path)
    name = args.data or (meta.get("train") or {}).get("data")
    if name is None:
        name = {(1, 28): "fashion-mnist", (1, 8): "digits"}.get((cfg.channels, cfg.image_size))
        if name is None:
            raise ValueError(f"{path} does not say which data it was trained on: pass --data")
    model = load(path, device=args.device, weights=args.weights)
    ds = load_dataset(name, args.split, cfg, args.data_dir)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        n = min(args.limit, len(ds))
        ds = ArrayDataset(*ds.get_batch(list(range(n))), ds.num_classes, name=f"{ds.name}[:{n}]")
    res = evaluate_split(model, ds, k=args.k, batch_size=args.batch_size, seed=args.seed,
                         conditional=not args.unconditional, progress=not args.no_progress)
    res = {"checkpoint": str(path), "step": meta.get("step"), "weights": args.weights or meta["weights"],
           "data": name, "split": args.split, **({"limit": args.limit} if args.limit else {}), **res}
    out = Path(args.out) if args.out else Path.cwd() / f"eval_{_checkpoint_tag(path)}_{args.split}_k{args.k}.json"
    atomic_write_json(out, res)
    extra = f"   single-sample {res['bpd_single']:.4f}" if args.k > 1 else ""
    step = f"step {res['step']:,}" if isinstance(res["step"], int) else "step not recorded"
    print(f"scored {path} ({step}, {res['weights']} weights)\n"
          f"{name}/{args.split} ({res['images']} images): {res['bpd']:.4f} ± {res['bpd_stderr']:.4f} bits/dim"
          f"{extra}\n  estimator: {res['estimator']}")
    print(_terms_line(res["terms_bpd"]))
    print(f"  written to {out}")
    return 0



def _terms_line(terms: dict) -> str:
    """The §1.6 split of the bound with units and signs: bits/dim = prior Z^I + prior Z^R − log-det + 7."""
    return (f"  terms (bits/dim; bound = −log p(Z^I|c) + −log p(Z^R|Z^I,c) − log|det dZ/dX| + 7): "
            f"−log p(Z^I|c) {terms['prior_informative']:+.4f}, −log p(Z^R|Z^I,c) {terms['prior_redundant']:+.4f}, "
            f"log|det dZ/dX| {terms['logdet']:+.4f} (enters with a minus sign)")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (training throughput)", description=(
        "Measure training images/s and achieved GFLOP/s against the measured matmul peak; prints JSON."))
    p.add_argument("what", choices=("train",), help="what to measure")
    p.add_argument("--preset", default="fmnist", help="model preset (default: fmnist)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per precision (default: 5)")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"),
                   help="precisions to time (default: fp32 bf16)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=_friendly(_cmd_bench, p))


def _cmd_bench(args: argparse.Namespace) -> int:
    import json
    import torch
    from .checkpoint import atomic_write_json
    from .config import presets
    from .throughput import matmul_peak, train_throughput
    if args.preset not in presets:
        raise ValueError(f"--preset must be one of {sorted(presets)}, got {args.preset!r}")
    res = {"preset": args.preset, "peak_gflops": {}, "runs": []}
    for prec in args.precision:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[prec]
        res["peak_gflops"][prec] = matmul_peak(dtype, device=args.device)
        res["runs"].append(train_throughput(presets[args.preset], args.batch_size, prec, args.steps,
                                            device=args.device))
    print(json.dumps(res, indent=2))
    if args.json:
        atomic_write_json(args.json, res)
    return 0


# ============================================================================ export (FSDP runs)
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a plain checkpoint from a sharded (--fsdp) run checkpoint's shard files",
                       description="Rebuild config.json + model.safetensors from the torch.distributed.checkpoint "
                       "shards of a `farmer train --fsdp` checkpoint, in one process (farmer.sharding.consolidate). "
                       "Every sharded checkpoint already carries its consolidated export; use this for the raw "
                       "weights, or when that export is missing.")
    p.add_argument("checkpoint", help="a sharded run checkpoint (OUT/checkpoints/step_*) or a run folder (newest)")
    p.add_argument("dest", help="output checkpoint directory")
    p.add_argument("--weights", choices=("ema", "raw"), default=None,
                   help="which weights (default: those the run exports, EMA unless --export-weights raw)")
    p.set_defaults(func=_friendly(_cmd_export, p))


def _cmd_export(args: argparse.Namespace) -> int:
    from .sharding import consolidate
    dest = consolidate(args.checkpoint, args.dest, weights=args.weights)
    print(f"wrote {dest} (config.json + model.safetensors)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc = int(args.func(args) or 0)
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        _end_torchrun_worker(rc)
    return rc


def _end_torchrun_worker(rc: int) -> None:
    """End a torchrun worker whose command has returned: flush, then exit at once with `rc`.

    The run's own teardown (farmer.distributed.teardown) has left the process
    group, but under FSDP gloo's worker threads outlive it (FSDP2 keeps the
    backend referenced), and about one job in six aborted in the C++ static
    destructors of interpreter shutdown ("terminate called without an active
    exception", exit −6) after all its work was written. os._exit skips exactly
    that part; every file of the run is already written and closed when the
    command returns (os._exit loses only unflushed Python buffers: stdout and
    stderr are flushed here)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
