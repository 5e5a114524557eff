"""How far resampling CFG moves a 1-D mixture toward its guided target: weights, candidates, pools.

The toy: G_c = ½ N(−1, 0.6²) + ½ N(1.5, 0.5²) and G_u = ½ N(−1, 0.8²) + ½ N(0.5, 1²),
one dimension. The guided target p′ ∝ G_c^{w+1} / G_u^w of Eq. 15 is
normalised on a grid, so its mean is known to 1e-6. A rule's "shift" is

    (mean of its draws − mean of G_c) / (mean of p′ − mean of G_c):

1 = the target's mean, 0 = no guidance at all. Rows:

  per-token    one draw from s_c + s_u candidates (the informative tokens),
               with the exact weights (T_π,v = T_σ,v = T_s = 1) and with Table 6's
               (T_π,v = 0.1, T_s = 1.1), s_c = s_u = 1, 2, 5, 10, 25; and with the
               exact weights from conditional candidates only at the same total,
               s_c = 2, 4, 10, 20, 50 and s_u = 0 (the library's default pool)
  pooled       N = 49 draws WITHOUT replacement from one pool of S = S_c + S_u
               candidates, S_c = S_u (the redundant group of `fmnist`), exact weights,
               S/N = 1 … 20; and a pool of conditional candidates only

    python benchmarks/guidance_toy.py            # prints the table, writes guidance_toy.json

`farmer.sampling` sizes its redundant-pool check from this table (MIN_POOL_PER_TOKEN).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from farmer.gmm import DiagonalGMM
from farmer.guidance import EXACT_WEIGHTS, TABLE6_WEIGHTS, resample_cfg

HERE = Path(__file__).resolve().parent
N_TOKENS = 49                                                   # fmnist: (28/4)² tokens share G_{N+1}


def toy(batch: int) -> tuple[DiagonalGMM, DiagonalGMM]:
    """The toy pair G_c, G_u, repeated over a batch of `batch` independent mixtures."""
    def gmm(means, scales):
        m = torch.tensor(means, dtype=torch.float64).view(1, 2, 1).expand(batch, 2, 1)
        s = torch.tensor(scales, dtype=torch.float64).log().view(1, 2, 1).expand(batch, 2, 1)
        return DiagonalGMM(torch.zeros(batch, 2, dtype=torch.float64), m.contiguous(), s.contiguous())
    return gmm([-1.0, 1.5], [0.6, 0.5]), gmm([-1.0, 0.5], [0.8, 1.0])


def target_mean(w: float) -> tuple[float, float]:
    """(mean of G_c, mean of p′ ∝ G_c^{w+1}/G_u^w), by quadrature on a fine grid."""
    g_c, g_u = toy(1)
    x = torch.linspace(-12, 12, 400_001, dtype=torch.float64).view(-1, 1, 1)   # (G, 1, D)
    lc, lu = g_c.log_prob(x)[:, 0], g_u.log_prob(x)[:, 0]
    p = torch.softmax((w + 1) * lc - w * lu, 0)
    return float((x.view(-1) * lc.softmax(0)).sum()), float((x.view(-1) * p).sum())


def shift(draws: torch.Tensor, w: float) -> float:
    m_c, m_t = target_mean(w)
    return (float(draws.mean()) - m_c) / (m_t - m_c)


def per_token(w: float, s: int, weights: dict, n: int, seed: int, uncond: bool = True) -> float:
    """One draw per mixture from s + s candidates (G_c and G_u), or 2s from G_c only."""
    g_c, g_u = toy(n)
    s_c, s_u = (s, s) if uncond else (2 * s, 0)
    gen = torch.Generator().manual_seed(seed)
    return shift(resample_cfg(g_c, g_u, w, candidates_cond=s_c, candidates_uncond=s_u, generator=gen, **weights), w)


def pooled(w: float, ratio: float, images: int, seed: int, uncond: bool = True) -> float:
    """N draws per image from one pool of S = ratio·N candidates (half from each proposal, or all from G_c)."""
    g_c, g_u = toy(images)
    S = max(N_TOKENS, int(round(ratio * N_TOKENS)))
    s_c, s_u = (S - S // 2, S // 2) if uncond else (S, 0)
    gen = torch.Generator().manual_seed(seed)
    return shift(resample_cfg(g_c, g_u, w, N_TOKENS, candidates_cond=s_c, candidates_uncond=s_u,
                              generator=gen, **EXACT_WEIGHTS), w)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=200_000, help="per-token draws per setting")
    p.add_argument("--images", type=int, default=4000, help="pooled: images (N draws each) per setting")
    p.add_argument("--json", default=str(HERE / "guidance_toy.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    ws = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0)
    rows = {"per_token": [], "pooled": [], "tokens": N_TOKENS, "draws": args.draws, "images": args.images}
    print(f"shift toward the guided target's mean (1 = reached); per-token: {args.draws} draws\n")
    print("| weights | s_c + s_u | " + " | ".join(f"w = {w:g}" for w in ws) + " |")
    print("| --- | --- |" + " --- |" * len(ws))
    for name, weights, uncond in (("exact", EXACT_WEIGHTS, True), ("table6", TABLE6_WEIGHTS, True),
                                  ("exact", EXACT_WEIGHTS, False)):
        for s in (1, 2, 5, 10, 25):
            vals = [per_token(w, s, weights, args.draws, seed=s, uncond=uncond) for w in ws]
            s_c, s_u = (s, s) if uncond else (2 * s, 0)
            rows["per_token"].append({"weights": name, "candidates": s, "s_c": s_c, "s_u": s_u,
                                      **{f"w{w:g}": v for w, v in zip(ws, vals)}})
            print(f"| {name} | {s_c} + {s_u} | " + " | ".join(f"{v:.2f}" for v in vals) + " |", flush=True)
    print(f"\npooled: N = {N_TOKENS} draws without replacement per image, {args.images} images, exact weights\n")
    print("| pool | S / N | " + " | ".join(f"w = {w:g}" for w in ws) + " |")
    print("| --- | --- |" + " --- |" * len(ws))
    for uncond in (True, False):
        for ratio in (1, 1.5, 2, 3, 5, 10, 20):
            vals = [pooled(w, ratio, args.images, seed=int(10 * ratio), uncond=uncond) for w in ws]
            label = "G_c + G_u" if uncond else "G_c only"
            rows["pooled"].append({"pool": label, "ratio": ratio, **{f"w{w:g}": v for w, v in zip(ws, vals)}})
            print(f"| {label} | {ratio:g} | " + " | ".join(f"{v:.2f}" for v in vals) + " |", flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
