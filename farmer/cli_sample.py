"""The sampling side of the `farmer` command line: `farmer sample|distill|quality|classifier`.

Thin layers over farmer.sampling, farmer.distill and farmer.quality; parsed by farmer/cli.py.
"""
from __future__ import annotations

import argparse
import sys

from .cli_common import _checkpoint_tag, _friendly, _opt_int, _pick_device


# ============================================================================ quality
def _add_quality(sub) -> None:
    from .guidance import DEFAULT_POOL, GUIDANCE, PAPER_POOL
    from .model import DECODERS
    p = sub.add_parser("quality", help="class consistency and FD (Fashion-MNIST classifier features) of samples",
                       description="Draw class-conditional samples (balanced labels) and score them with the "
                                   "shipped Fashion-MNIST classifier: class consistency, and the Fréchet distance "
                                   "between its penultimate features on the samples and on the 10,000 test images "
                                   "(FD, not FID). Writes JSON.")
    p.add_argument("checkpoint", help="checkpoint directory, or a `farmer train` output folder (its newest)")
    p.add_argument("--classifier", default=None,
                   help="classifier directory (default: checkpoints/fmnist-classifier of this project)")
    p.add_argument("--samples", type=int, default=10_000, help="number of samples (default 10000)")
    p.add_argument("--guidance", choices=GUIDANCE, default="none", help="none, naive or resample")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance weight w (default 2)")
    p.add_argument("--decoder", choices=DECODERS, default="sequential", help="AF inverse (default sequential)")
    p.add_argument("--t-sigma", type=float, default=1.0, help="T_sigma (default 1)")
    for name, what in (("cond", "G_c"), ("uncond", "G_u")):
        key = f"candidates_{name}"
        p.add_argument(f"--candidates-{name}", type=int, default=DEFAULT_POOL[key],
                       help=f"resampling candidates from {what} per token (default {DEFAULT_POOL[key]}, "
                            f"farmer.sample's; the paper's Algorithm 1: {PAPER_POOL[key]})")
    p.add_argument("--t-pi-verify", type=float, default=1.0,
                   help="T_pi,v of the resampling weights (default 1: exact weights; the paper's Table 6: 0.1)")
    p.add_argument("--t-sigma-verify", type=float, default=1.0, help="T_sigma,v of the weights (default 1)")
    p.add_argument("--t-select", type=float, default=1.0,
                   help="T_s, multiplies the log-weights (default 1: exact weights; the paper's Table 6: 1.1)")
    _add_sampling_extras(p)
    p.add_argument("--batch-size", type=int, default=250, help="samples per call (default 250)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first batch; batch b uses seed + b")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files (default: the search order)")
    p.add_argument("--out", default=None, help="JSON output (default: ./quality_<checkpoint>_<guidance>.json "
                                               "in the working folder)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=_friendly(_cmd_quality, p))


def _add_sampling_extras(p: argparse.ArgumentParser) -> None:
    """Flags shared by `farmer sample` and `farmer quality` beyond the paper's settings."""
    from .guidance import RESAMPLE_WEIGHTS
    p.add_argument("--resample-weights", choices=RESAMPLE_WEIGHTS, default="paper",
                   help="resampling CFG weights: paper (Algorithm 1) or balance (the balance heuristic)")
    p.add_argument("--denoise", type=float, default=0.0, metavar="SIGMA",
                   help="one Tweedie score step at this noise level after decoding ([-1, 1] units; 0 = off)")
    p.add_argument("--jacobi-tol", type=float, default=1e-4,
                   help="--decoder jacobi|hybrid: stop when no value changes by more (default 1e-4)")
    p.add_argument("--jacobi-max-iter", type=_opt_int, default=None, metavar="N|none",
                   help="--decoder jacobi|hybrid: iterations per chunk at most (default: the chunk length, exact)")
    p.add_argument("--jacobi-chunk", type=_opt_int, default=None, metavar="N|none",
                   help="--decoder jacobi|hybrid: Gauss-Seidel-Jacobi chunk in tokens (default: none, plain Jacobi)")


def _jacobi_args(args: argparse.Namespace) -> dict:
    return {"jacobi_tol": args.jacobi_tol, "jacobi_max_iter": args.jacobi_max_iter,
            "jacobi_chunk": args.jacobi_chunk}


def _cmd_quality(args: argparse.Namespace) -> int:
    from pathlib import Path
    from .checkpoint import atomic_write_json, load, resolve
    from .data import load_fashion_mnist
    from .quality import FD_MIN_SAMPLES, load_classifier, predict, sample_quality
    if args.samples < 2:
        raise ValueError(f"--samples must be >= 2, got {args.samples}")
    if args.samples < FD_MIN_SAMPLES:
        print(f"warning: FD from {args.samples} samples is biased upwards and noisy; it needs about "
              f"{FD_MIN_SAMPLES:,} or more (the model card uses 10,000), and only figures from equal sample "
              f"counts compare", file=sys.stderr)
    path = resolve(args.checkpoint)
    model = load(path, device=_pick_device(args.device)).eval()
    clf_dir = args.classifier or Path(__file__).resolve().parents[1] / "checkpoints" / "fmnist-classifier"
    classifier, clf_cfg = load_classifier(clf_dir)
    test = load_fashion_mnist("test", path=args.data_dir)
    reference = predict(classifier, test.images)[1]
    q = sample_quality(model, classifier, reference, num_samples=args.samples, batch_size=args.batch_size,
                       seed=args.seed, guidance=args.guidance, cfg_scale=args.cfg, decoder=args.decoder,
                       t_sigma=args.t_sigma, candidates_cond=args.candidates_cond,
                       candidates_uncond=args.candidates_uncond, t_pi_verify=args.t_pi_verify,
                       t_sigma_verify=args.t_sigma_verify, t_select=args.t_select,
                       resample_weights=args.resample_weights, denoise=args.denoise, **_jacobi_args(args))
    guided = args.guidance != "none"
    res = {"checkpoint": str(path), "guidance": args.guidance, **({"cfg_scale": args.cfg} if guided else {}),
           "decoder": args.decoder,
           "t_sigma": args.t_sigma, "candidates_cond": args.candidates_cond,
           "candidates_uncond": args.candidates_uncond,
           "t_pi_verify": args.t_pi_verify, "t_sigma_verify": args.t_sigma_verify,
           "t_select": args.t_select, "resample_weights": args.resample_weights, "denoise": args.denoise,
           **(_jacobi_args(args) if args.decoder in ("jacobi", "hybrid") else {}), "seed": args.seed,
           "classifier": str(clf_dir),
           "classifier_test_accuracy": clf_cfg.get("test_accuracy"), "reference": "test set (10,000)", **q}
    tag = args.guidance if args.guidance == "none" else f"{args.guidance}_w{args.cfg:g}"
    out = Path(args.out) if args.out else Path.cwd() / f"quality_{_checkpoint_tag(path)}_{tag}.json"
    atomic_write_json(out, res)
    how = f"{args.guidance}, w={args.cfg:g}" if guided else "no guidance"
    print(f"{args.samples} samples ({how}, {args.decoder}): class consistency "
          f"{100 * q['class_consistency']:.2f}%, FD (Fashion-MNIST classifier features) {q['fd']:.3f}, "
          f"{q['seconds_per_image']:.4f} s/img\n  written to {out}")
    return 0


# ============================================================================ classifier
def _add_classifier(sub) -> None:
    p = sub.add_parser("classifier", help="train the Fashion-MNIST classifier used for class consistency and FD",
                       description="Train the small CNN of farmer/quality.py on the Fashion-MNIST train split, "
                                   "score the test split, and save safetensors + config.json to --out.")
    p.add_argument("--out", default="checkpoints/fmnist-classifier", help="output directory")
    p.add_argument("--epochs", type=int, default=5, help="passes over the 60,000 training images")
    p.add_argument("--batch-size", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle schedule)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, data order and augmentation seed")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files (default: search order)")
    p.set_defaults(func=_friendly(_cmd_classifier, p))


def _cmd_classifier(args: argparse.Namespace) -> int:
    import time
    from .data import load_fashion_mnist
    from .quality import accuracy, save_classifier, train_classifier
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        raise ValueError(f"need --epochs >= 1, --batch-size >= 1 and --lr > 0, got {args.epochs}, "
                         f"{args.batch_size}, {args.lr}")
    train, test = load_fashion_mnist("train", args.data_dir), load_fashion_mnist("test", args.data_dir)
    t0 = time.time()
    model = train_classifier(train.images, train.labels, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed)
    acc = accuracy(model, test.images, test.labels)
    acc_1k = accuracy(model, test.images[:1000], test.labels[:1000])
    save_classifier(model, args.out, test_accuracy=acc, test_accuracy_first_1000=acc_1k,
                    epochs=args.epochs, seed=args.seed, train_seconds=round(time.time() - t0, 1))
    print(f"test accuracy {acc:.4f} (first 1,000: {acc_1k:.4f}); wrote {args.out}")
    return 0


# ============================================================================ sample / distill
def _parse_labels(tokens: list[str] | None, num_classes: int) -> list[int] | None:
    """`--labels 0 1 2`, `--labels 0,1,2` or `--labels all` -> [0, 1, 2] (None when not given)."""
    if tokens is None:
        return None
    if tokens == ["all"]:
        return list(range(num_classes))
    try:
        return [int(t) for tok in tokens for t in tok.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--labels must be integers (or 'all'), got {' '.join(tokens)!r}") from None


def _add_sample(sub) -> None:
    from .guidance import GUIDANCE
    from .model import DECODERS
    p = sub.add_parser("sample", help="draw images from a checkpoint: a PNG grid and the uint8 array (.npy)",
                       description="Draw images from a checkpoint (farmer.sample). Writes OUT (a PNG grid) "
                                   "and OUT with the suffix .npy (uint8 (B, C, H, W)).")
    p.add_argument("checkpoint", help="checkpoint directory, or a `farmer train` output folder (its newest)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="class labels: `0 1 2`, `0,1,2` or `all`; omit for unconditional samples (with --num)")
    p.add_argument("--repeat", type=int, default=1, help="draw each label this many times (default 1)")
    p.add_argument("--num", type=int, default=None, help="number of unconditional samples (without --labels)")
    # The sampler settings below default to the checkpoint's card (card.json's recommended guidance, the
    # app's default too: farmer.card.recommended_sampling), else to farmer.sample's own defaults.
    card = " (default: the checkpoint card's recommended setting, else farmer.sample's)"
    p.add_argument("--guidance", choices=GUIDANCE, default=None,
                   help="classifier-free guidance: none, naive (GIVT/JetFormer) or resample (FARMER Alg. 1)" + card)
    p.add_argument("--cfg", type=float, default=None, help="guidance weight w >= 0 (paper 1.5-3.5)" + card)
    p.add_argument("--decoder", choices=DECODERS, default="sequential",
                   help="AF inverse: sequential (KV cache), sequential_nocache (reference), jacobi (parallel "
                        "fixed-point iteration), distilled (one-step student) or hybrid (Jacobi from the student)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same device: same images)")
    p.add_argument("--t-pi", type=float, default=None, help="T_pi: multiplies the mixture logits" + card)
    p.add_argument("--t-sigma", type=float, default=None, help="T_sigma: multiplies the mixture scales" + card)
    p.add_argument("--candidates-cond", type=int, default=None, help="s_c: candidates from G_c per token" + card)
    p.add_argument("--candidates-uncond", type=int, default=None, help="s_u: candidates from G_u per token" + card)
    p.add_argument("--t-pi-verify", type=float, default=None, help="T_pi,v: logit temperature of the weights" + card)
    p.add_argument("--t-sigma-verify", type=float, default=None, help="T_sigma,v: scale temperature of the weights" + card)
    p.add_argument("--t-select", type=float, default=None, help="T_s: multiplies the log-weights" + card)
    p.add_argument("--redundant-pool", type=int, nargs="+", default=None, metavar="SIZE",
                   help="candidate pool for the redundant group: one size, or cond and uncond sizes "
                        "(default N times --candidates-cond/--candidates-uncond)")
    p.add_argument("--max-tries", type=int, default=1000, help="naive CFG: rejection tries before the fallback")
    _add_sampling_extras(p)
    p.add_argument("--nrow", type=int, default=None, help="images per grid row (default: one row per label "
                                                          "with --repeat, else about sqrt(B))")
    p.add_argument("--out", default="samples.png", help="PNG grid to write; the .npy goes next to it")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=_friendly(_cmd_sample, p), resample_weights=None, denoise=None)   # None: the card's


# `farmer sample` flag (dest) -> farmer.sample keyword, for the settings a model card recommends
_CARD_FLAGS = {"guidance": "guidance", "cfg": "cfg_scale", "t_pi": "t_pi", "t_sigma": "t_sigma",
               "candidates_cond": "candidates_cond", "candidates_uncond": "candidates_uncond",
               "t_pi_verify": "t_pi_verify", "t_sigma_verify": "t_sigma_verify", "t_select": "t_select",
               "resample_weights": "resample_weights", "denoise": "denoise"}


def _cmd_sample(args) -> int:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from .card import describe, read_card, recommended_sampling
    from .checkpoint import load, resolve
    from .sampling import image_grid, sample
    path = resolve(args.checkpoint)
    model = load(path, device=_pick_device(args.device))
    labels = _parse_labels(args.labels, model.cfg.num_classes)
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    if labels is None and args.num is None:
        raise ValueError("--num is required without --labels: e.g. --num 16 for 16 unconditional samples, "
                         "or --labels all for one per class")
    if args.num is not None and args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    settings = recommended_sampling(path)                            # the card's, else farmer.sample's defaults
    given = {kw: getattr(args, dest) for dest, kw in _CARD_FLAGS.items() if getattr(args, dest) is not None}
    if read_card(path) is not None and set(given) != set(settings):
        print(f"defaults from {path / 'card.json'}: {describe(settings)} (flags given override them)")
    settings.update(given)
    if labels is not None:
        labels = [lab for lab in labels for _ in range(args.repeat)]
    pool = args.redundant_pool
    if pool is not None and len(pool) not in (1, 2):
        raise ValueError(f"--redundant-pool takes one or two sizes, got {pool}")
    pool = None if pool is None else (pool[0] if len(pool) == 1 else tuple(pool))
    res = sample(model, labels, decoder=args.decoder, seed=args.seed, num_samples=args.num, redundant_pool=pool,
                 max_tries=args.max_tries, **settings, **_jacobi_args(args), return_intermediates=True)
    images = res.images.cpu()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nrow = args.nrow or (args.repeat if labels is not None and args.repeat > 1 else None)
    grid = image_grid(images, nrow=nrow)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(out)
    np.save(out.with_suffix(".npy"), images.numpy())
    print(f"wrote {out} ({images.shape[0]} images) and {out.with_suffix('.npy')} "
          f"(uint8 {tuple(images.shape)}); {res.stats}")
    return 0


def _add_distill(sub) -> None:
    from .distill import DistillConfig
    d = DistillConfig()
    p = sub.add_parser("distill", help="one-step distillation of the AF inverse into the checkpoint (Alg. 2)",
                       description="Distil the flow inverse of a checkpoint into a one-step student "
                                   "(farmer.distill). Writes student.safetensors and a resume state into the "
                                   "checkpoint directory; rerun to resume, --restart to start over.")
    p.add_argument("checkpoint", help="checkpoint directory, or a `farmer train` output folder (its newest)")
    # None = the saved setting when resuming, else the DistillConfig default shown
    p.add_argument("--steps", type=int, default=None, help=f"total optimiser steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--warmup", type=int, default=None, help=f"linear warm-up steps (default {d.warmup})")
    p.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay (default {d.weight_decay})")
    p.add_argument("--max-noise", type=float, default=None,
                   help=f"end-point perturbation s ~ U[0, max_noise] (default {d.max_noise}, the paper's)")
    p.add_argument("--grad-clip", type=float, default=None, help=f"gradient-norm clip, 0 = off (default {d.grad_clip})")
    p.add_argument("--seed", type=int, default=None, help=f"data order and noise seed (default {d.seed})")
    p.add_argument("--data", default=None, help="fashion-mnist | digits | synthetic | PATH (default: the "
                                                "data set the checkpoint was trained on)")
    p.add_argument("--data-dir", default=None, help="folder holding the data files (default: DESIGN §3 search)")
    p.add_argument("--eval-images", type=int, default=1000, help="held-out test images for the error report")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    p.add_argument("--save-every", type=int, default=500, help="steps between saves of student + state (0 = end)")
    p.add_argument("--restart", action="store_true", help="ignore a saved distillation state and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=_friendly(_cmd_distill, p))


def _cmd_distill(args) -> int:
    from . import distill
    fields = ("steps", "batch_size", "lr", "warmup", "weight_decay", "max_noise", "grad_clip", "seed")
    overrides = {f: getattr(args, f) for f in fields if getattr(args, f) is not None}
    distill.run(args.checkpoint, overrides, data=args.data, data_dir=args.data_dir,
                eval_images=args.eval_images, log_every=args.log_every, save_every=args.save_every,
                restart=args.restart, device=_pick_device(args.device), progress=not args.no_progress)
    return 0
