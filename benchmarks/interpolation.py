"""Latent interpolation on the shipped model: bits/dim and latent norm along linear vs spherical paths.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/interpolation.py [--pairs 100] [--steps 9]

Draws --pairs random pairs of Fashion-MNIST test images (seed --seed), walks
between each pair's latents along the linear and the spherical
(variance-preserving) path of `farmer.interpolate`, decodes every point with
the exact sequential inverse and scores it (single-sample bits/dim under the
null class). Reports, per t, the mean bits/dim and mean ‖z(t)‖ / ‖z‖ of the
ends over the pairs, how often the linear midpoint is cheaper than the
spherical one, and the mean cosine between the two ends' latents. Writes
benchmarks/interpolation.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import farmer  # noqa: E402
from farmer.data import load_fashion_mnist  # noqa: E402
from farmer.interpolate import PATHS  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "fmnist"))
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--seed", type=int, default=0, help="which pairs (and the dequantisation noise)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "interpolation.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = farmer.load(args.checkpoint).eval()
    test = load_fashion_mnist("test")
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(test), generator=g)[:2 * args.pairs].view(2, args.pairs)   # (2, pairs)
    x_a, _ = test.get_batch(idx[0].tolist())
    x_b, _ = test.get_batch(idx[1].tolist())
    walks = {p: farmer.interpolate(model, x_a, x_b, steps=args.steps, path=p, seed=args.seed) for p in PATHS}
    t = walks["linear"]["t"]
    ends = walks["linear"]["latent_norm"][:, [0, -1]]                          # (pairs, 2)
    scale = (1 - t)[None] * ends[:, :1] + t[None] * ends[:, 1:]                 # the ends' norms, linear in t
    z = walks["linear"]["z"]
    za, zb = z[:, 0].flatten(1), z[:, -1].flatten(1)
    cos = (za * zb).sum(1) / (za.norm(dim=1) * zb.norm(dim=1))
    mid = args.steps // 2
    out = {"meta": {"checkpoint": args.checkpoint, "pairs": args.pairs, "steps": args.steps, "seed": args.seed,
                    "estimator": walks["linear"]["estimator"], "decoder": "sequential",
                    "command": "python benchmarks/interpolation.py"},
           "t": t.tolist(), "cos_ends_mean": float(cos.mean()),
           "round_trip_exact": bool(all(torch.equal(w["images"][:, 0], x_a) and torch.equal(w["images"][:, -1], x_b)
                                        for w in walks.values()))}
    for p, w in walks.items():
        out[p] = {"bpd_mean": w["bpd"].double().mean(0).tolist(),
                  "norm_over_ends_mean": (w["latent_norm"].double() / scale.double()).mean(0).tolist()}
    out["linear_midpoint_cheaper"] = float((walks["linear"]["bpd"][:, mid] < walks["spherical"]["bpd"][:, mid])
                                           .float().mean())
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{args.pairs} random test pairs, {args.steps} points; mean cos(z_a, z_b) = {out['cos_ends_mean']:.3f}; "
          f"ends decode exactly: {out['round_trip_exact']}")
    print(f"{'t':>6} | {'linear bpd':>10} {'|z|/ends':>8} | {'spherical bpd':>13} {'|z|/ends':>8}")
    for i, ti in enumerate(out["t"]):
        print(f"{ti:>6.3f} | {out['linear']['bpd_mean'][i]:>10.3f} {out['linear']['norm_over_ends_mean'][i]:>8.3f} | "
              f"{out['spherical']['bpd_mean'][i]:>13.3f} {out['spherical']['norm_over_ends_mean'][i]:>8.3f}")
    print(f"linear midpoint cheaper than the spherical one in {100 * out['linear_midpoint_cheaper']:.0f}% of pairs")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
