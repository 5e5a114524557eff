"""A Bayes classifier from exact conditional likelihoods, and its calibration (DESIGN §1.8).

A class-conditional flow gives log p(x | y) exactly (up to the dequantisation),
so Bayes' rule with a uniform prior p(y) = 1/C turns it into a classifier with
no extra training:

    log p(y | x) = log p(x | y) − logsumexp_y' log p(x | y')                  (uniform prior)

Dequantisation noise. log p(x | y) is estimated at one draw u of the uniform
dequantisation noise. The same u is used for every class (one seed), so the
class scores differ only by the prior terms — the flow's Jacobian does not
depend on y and cancels exactly. With k > 1 every class gets the K-sample
importance-weighted estimate

    log p̂(x | y) = logsumexp_j log p(x + u_j | y) − log K,   u_j from seed + j,

the same draws u_j for every class (farmer.importance_weighted_nll per class).

Cost. The flow does not see the label, so an image is encoded once per noise
draw and only the AR prior runs once per class: C + 1 passes instead of 2C.

Calibration. `expected_calibration_error` bins the top-class confidence into
equal-width bins and compares each bin's mean confidence with its accuracy
(Guo et al., 2017): ECE = Σ_b (n_b / n)·|acc_b − conf_b|.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .data import dequantize_uniform
from .units import discrete_nll

if TYPE_CHECKING:  # pragma: no cover
    from .model import Farmer
else:
    Farmer = nn.Module


def _check(model: "Farmer", x: torch.Tensor, k: int, seed: int) -> None:
    if not hasattr(model, "cfg") or not hasattr(model, "prior_terms"):
        raise ValueError(f"model must be a farmer.Farmer, got {type(model).__name__}")
    if model.cfg.num_classes == 0:
        raise ValueError("classify needs a class-conditional model: this one is unconditional "
                         "(num_classes = 0), so p(x | y) does not exist")
    model._check_images(x, "x", uint8=True)                                 # shape, dtype, B >= 1
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (noise draws per image) must be a positive int, got {k!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int (the first dequantisation seed), got {seed!r}")


@torch.no_grad()
def class_log_likelihoods(model: "Farmer", x: torch.Tensor, k: int = 1, seed: int = 0) -> torch.Tensor:
    """log p(x | y) of uint8 images x (B, C, H, W) for every class y: (B, num_classes) in nats.

    The discrete-data bound: each entry is −nll of `model.nll(x, y, seed=seed)`
    (k = 1), or the k-sample importance-weighted estimate over seeds seed … seed + k − 1,
    the same noise for every class. Scored in eval mode (no label dropout).
    """
    _check(model, x, k, seed)
    device = next(model.parameters()).device
    x = x.to(device)
    B, C, D = x.shape[0], model.cfg.num_classes, model.cfg.data_dim
    was_training = model.training
    model.eval()                                    # important! no label dropout while scoring
    try:
        draws = []
        for j in range(k):
            z, logdet = model.encode(dequantize_uniform(x, seed + j))          # (B, N, d), (B,); label-free
            per_class = []
            for c in range(C):
                y = torch.full((B,), c, dtype=torch.long, device=device)
                inf, red = model.prior_terms(z, y)                             # (B, N) each, nats
                log_px = -(inf.sum(1) + red.sum(1)) + logdet                   # log p(x + u | y), continuous
                per_class.append(-discrete_nll(log_px, D))                     # + D·ln 128 rescale, (B,)
            draws.append(torch.stack(per_class, 1))                            # (B, C)
    finally:
        model.train(was_training)
    log_lik = torch.stack(draws, 0)                                            # (K, B, C)
    return torch.logsumexp(log_lik, 0) - math.log(k)                           # (B, C)


@torch.no_grad()
def classify(model: "Farmer", x: torch.Tensor, k: int = 1, seed: int = 0) -> torch.Tensor:
    """Bayes' rule with a uniform prior: log p(y | x) for every class, (B, num_classes), rows logsumexp to 0.

    x: uint8 (B, C, H, W). k: dequantisation draws per image (importance-weighted
    per class, shared across classes); seed: the first draw's seed. The
    prediction is `classify(model, x).argmax(1)`; probabilities are `.exp()`.
    """
    log_lik = class_log_likelihoods(model, x, k=k, seed=seed)                  # (B, C) log p(x|y)
    return torch.log_softmax(log_lik.double(), dim=1).to(log_lik.dtype)        # the uniform prior cancels


# ============================================================================ calibration
def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, Any]:
    """ECE and the reliability diagram of class probabilities probs (n, C) against labels (n,).

    Confidence is the top-class probability; bins are equal-width over [0, 1]
    (bin b holds confidences in (b/bins, (b+1)/bins], the first also 0). Returns
    a JSON-ready dict: "ece" = Σ_b (n_b/n)·|accuracy_b − confidence_b|, "bins",
    "bin_edges" (bins + 1,), per bin "confidence" (mean), "accuracy_per_bin" and
    "count" (None for an empty bin), and "accuracy" / "mean_confidence" overall.
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a (n, num_classes) tensor with n >= 1, got "
                         f"{tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__}")
    probs = probs.detach().double().cpu()
    rows_sum_to_one = torch.allclose(probs.sum(1), torch.ones(1, dtype=probs.dtype), atol=1e-4)
    if not torch.isfinite(probs).all() or probs.min() < 0 or not rows_sum_to_one:
        raise ValueError("probs must be probabilities: finite, >= 0, each row summing to 1 (use classify(...).exp())")
    n, C = probs.shape
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n,) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({n},), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    labels = labels.cpu().long()
    if int(labels.min()) < 0 or int(labels.max()) >= C:
        raise ValueError(f"labels must be in 0..{C - 1}, got min {int(labels.min())}, max {int(labels.max())}")
    confidence, predicted = probs.max(1)                                       # (n,), (n,)
    correct = (predicted == labels).double()                                   # (n,)
    # bin b = ceil(conf·bins) − 1, so (b/bins, (b+1)/bins]; conf = 0 goes to bin 0
    which = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)     # (n,)
    count = torch.bincount(which, minlength=bins).double()                     # (bins,)
    conf_sum = torch.bincount(which, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(which, weights=correct, minlength=bins)
    filled = count > 0
    gap = (acc_sum - conf_sum).abs()                                           # n_b·|acc_b − conf_b|
    ece = float(gap[filled].sum() / n)

    def per_bin(total: torch.Tensor) -> list[float | None]:
        return [float(t / c) if c > 0 else None for t, c in zip(total, count)]

    return {"ece": ece, "bins": bins, "bin_edges": torch.linspace(0, 1, bins + 1, dtype=torch.float64).tolist(),
            "confidence": per_bin(conf_sum), "accuracy_per_bin": per_bin(acc_sum),
            "count": [int(c) for c in count], "accuracy": float(correct.mean()),
            "mean_confidence": float(confidence.mean()), "images": n}


# ============================================================================ whole splits
@torch.no_grad()
def evaluate_classifier(model: "Farmer", images: torch.Tensor, labels: torch.Tensor, *, k: int = 1,
                        seed: int = 0, batch_size: int = 250, bins: int = 15,
                        progress: bool = False) -> dict[str, Any]:
    """Accuracy, log-loss and calibration of the Bayes classifier on uint8 images (n, C, H, W), labels (n,).

    Noise: batch i (images i·batch_size …) uses seeds seed + i·k … seed + i·k + k − 1,
    as `farmer.likelihood.evaluate_split`, so one batch with k = 1 is
    `classify(model, images, seed=seed)`. Returns a JSON-ready dict: "accuracy",
    "log_loss" (mean −log p(y_true | x), nats), "ece" and the reliability bins of
    `expected_calibration_error`, "per_class_accuracy", "confusion" (true × predicted
    counts), "estimator", "k", "seed", "images", "seconds".
    """
    from tqdm.auto import tqdm
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty uint8 tensor (n, C, H, W)")
    n, C = images.shape[0], model.cfg.num_classes
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n,):
        raise ValueError(f"labels must be a tensor of shape ({n},) to match the images")
    t0 = time.perf_counter()
    chunks = []
    for i, start in enumerate(tqdm(range(0, n, batch_size), disable=not progress, unit="batch")):
        chunks.append(classify(model, images[start:start + batch_size], k=k, seed=seed + i * k).cpu())
    log_post = torch.cat(chunks).double()                                      # (n, C)
    labels = labels.cpu().long()
    out = expected_calibration_error(log_post.exp(), labels, bins=bins)
    predicted = log_post.argmax(1)
    confusion = torch.zeros(C, C, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones(n, dtype=torch.long), accumulate=True)
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1).double()).tolist()
    out.update(
        log_loss=float(-log_post.gather(1, labels[:, None]).mean()),
        per_class_accuracy=per_class, confusion=confusion.tolist(),
        estimator=("Bayes' rule, uniform prior, log p(x|y) from " + (
            "one uniform dequantisation draw per image" if k == 1 else
            f"the K={k} importance-weighted bound") + ", the same noise for every class"),
        k=k, seed=seed, batch_size=batch_size, seconds=time.perf_counter() - t0)
    return out
