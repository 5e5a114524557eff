"""The out-of-distribution caution of the Likelihood and Classify views, from `farmer.ood`.

A low bits/dim does not make an image like the training data (notebook 06, benchmarks/ood.py):
mostly-black images are cheap under any model. So every scored image also gets the project's
two per-image OOD scores (`farmer.ood.ood_scores`, higher = more out-of-distribution):

    complexity  bits/dim under the null class − PNG bits/dim (Serrà et al., 2020): what only the
                model finds expensive; AUROC 0.94 over all OOD sets in benchmarks/ood.json
    typicality  |bits/dim − the mean of in-distribution images| (Nalisnick et al., 2019)

Each threshold is the 99th percentile of the same score on REFERENCE_IMAGES test images (the
last ones of the split, computed once per model, a few seconds), so about 1 in 100 real
test images is flagged; the caution states the score, the threshold and which test images
set it. Without test images on disk there is no reference, and the caution says so.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from farmer import ood

REFERENCE_IMAGES = 256
QUANTILE = 0.99
OOD_JSON = Path(__file__).resolve().parents[1] / "benchmarks" / "ood.json"


class OodReference:
    """Thresholds of the complexity and typicality scores for one model, computed once (thread-safe)."""

    def __init__(self, model, test, seed: int):
        self.model, self.test, self.seed = model, test, seed
        self._lock = threading.Lock()
        self._ref: dict | None = None

    def get(self) -> dict | None:
        """{"mean_bpd", "complexity", "typicality" (thresholds), "images", "first"}, or None without data."""
        if self.test is None:
            return None
        with self._lock:
            if self._ref is None:
                n = min(REFERENCE_IMAGES, len(self.test))
                first = len(self.test) - n
                x, _ = self.test.get_batch(range(first, len(self.test)))
                device = next(self.model.parameters()).device
                with torch.no_grad():                                             # the same bpd as ood_scores
                    bpd = self.model.nll(x.to(device), None, seed=self.seed)["bpd"].double().cpu().numpy()
                complexity = bpd - ood.png_bits_per_dim(x).numpy()
                typicality = np.abs(bpd - bpd.mean())
                self._ref = {"mean_bpd": float(bpd.mean()), "images": n, "first": first,
                             "complexity": float(np.quantile(complexity, QUANTILE)),
                             "typicality": float(np.quantile(typicality, QUANTILE))}
        return self._ref


def benchmark_auroc(checkpoint: Path) -> float | None:
    """The complexity score's AUROC over all OOD sets in benchmarks/ood.json, if it measured this model."""
    try:
        report = json.loads(OOD_JSON.read_text())
    except (OSError, ValueError):
        return None
    measured = Path(report.get("meta", {}).get("checkpoint", ""))
    if measured.name != Path(checkpoint).name:
        return None
    return report.get("auroc", {}).get("all OOD", {}).get("complexity")


def check_image(model, reference: OodReference, x: torch.Tensor, seed: int, checkpoint: Path) -> dict:
    """Score one uint8 image (1, C, H, W): {"flagged", "text" (Markdown), "scores", "thresholds"}."""
    ref = reference.get()
    s = ood.ood_scores(model, x, seed=seed, reference_bpd=None if ref is None else ref["mean_bpd"])
    scores = {k: float(v[0]) for k, v in s.items()}
    if ref is None:
        return {"flagged": False, "scores": scores, "thresholds": None,
                "text": (f"OOD check: complexity {scores['complexity']:+.2f} bits/dim (null-class bits/dim "
                         f"{scores['bpd']:.2f} − PNG {scores['png_bpd']:.2f}); no test images on disk to set a "
                         f"threshold, so a low bits/dim here does not mean the image is like the training data.")}
    reasons = []
    if scores["complexity"] > ref["complexity"]:
        reasons.append(f"its complexity score {scores['complexity']:+.2f} bits/dim (null-class bits/dim "
                       f"{scores['bpd']:.2f} − PNG {scores['png_bpd']:.2f}) is above the {ref['complexity']:+.2f} "
                       f"that 99% of test images stay under: the model finds it costly where a generic "
                       f"compressor does not")
    if scores["typicality"] > ref["typicality"]:
        reasons.append(f"its bits/dim {scores['bpd']:.2f} is {scores['typicality']:.2f} from the test images' "
                       f"mean {ref['mean_bpd']:.2f}, further than 99% of them ({ref['typicality']:.2f}): "
                       f"{'too likely' if scores['bpd'] < ref['mean_bpd'] else 'too unlikely'} to be typical")
    source = (f"thresholds from test images #{ref['first']}–#{ref['first'] + ref['images'] - 1} "
              f"(`farmer.ood` scores, 99th percentile)")
    auroc = benchmark_auroc(checkpoint)
    if auroc is not None:
        source += f"; the complexity score's AUROC is {auroc:.2f} over all OOD sets of benchmarks/ood.json"
    if reasons:
        text = ("⚠ **Out-of-distribution caution:** " + "; and ".join(reasons) + ". Its bits/dim and any "
                "classification say little about it (likelihood is not an OOD test). " + source + ".")
    else:
        text = (f"OOD check: in range — complexity {scores['complexity']:+.2f} (threshold "
                f"{ref['complexity']:+.2f}), typicality {scores['typicality']:.2f} (threshold "
                f"{ref['typicality']:.2f}); {source}.")
    return {"flagged": bool(reasons), "text": text, "scores": scores,
            "thresholds": {"complexity": ref["complexity"], "typicality": ref["typicality"],
                           "reference_images": ref["images"], "reference_mean_bpd": ref["mean_bpd"]}}
