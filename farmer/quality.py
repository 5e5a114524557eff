"""Sample quality without internet weights: a project-trained Fashion-MNIST classifier.

FID needs Inception weights from the internet; we have none. Instead a small
convolutional classifier, trained here on the Fashion-MNIST train split and
shipped with the project (`checkpoints/fmnist-classifier/`), provides

* class consistency: the fraction of class-conditional samples that the
  classifier assigns to the class they were drawn for;
* "FD (Fashion-MNIST classifier features)": the Fréchet distance between
  Gaussians fitted to its penultimate-layer features on generated images and
  on the test set,

      FD = ‖μ_a − μ_b‖² + tr(Σ_a) + tr(Σ_b) − 2·tr((Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}).

It is the FID recipe with a different feature network, so its numbers are
comparable only with each other, never with published FIDs. We never call it FID.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FEATURE_DIM = 128
_FORMAT = "farmer-classifier"
# Below about this many samples the 128×128 feature covariance is poorly estimated and FD is biased
# upwards and noisy (it is not defined below 2); `farmer quality` warns. The model card uses 10,000.
FD_MIN_SAMPLES = 1000


class FashionClassifier(nn.Module):
    """A small CNN for 28×28 grey images: two conv stages, a 128-d feature layer, 10 logits."""

    def __init__(self, num_classes: int = 10, channels: int = 1, image_size: int = 28):
        super().__init__()
        self.config = {"num_classes": num_classes, "channels": channels, "image_size": image_size}
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
        )
        flat = 64 * (image_size // 4) ** 2
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(flat, FEATURE_DIM), nn.GELU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float in [−1, 1]."""
        if x.dtype != torch.uint8:
            raise ValueError(f"classifier input must be uint8 images, got {x.dtype}")
        return x.float() / 127.5 - 1.0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> penultimate features (B, 128)."""
        return self.features(self.conv(self.preprocess(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> logits (B, num_classes)."""
        return self.head(self.embed(x))


# ---------------------------------------------------------------------------- training
def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 4, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, log=print) -> FashionClassifier:
    """Train on uint8 images (n, C, H, W) with int labels (n,); random ±2-pixel shifts and flips."""
    torch.manual_seed(seed)
    n, C, H, _ = images.shape
    model = FashionClassifier(int(labels.max()) + 1, C, H)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        correct = 0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            x, y = _augment(images[idx], g), labels[idx].long()
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
        log(f"classifier epoch {epoch + 1}/{epochs}: train accuracy {correct / n:.4f}")
    return model.eval()


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and integer shifts of up to 2 pixels (zero padded)."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
    x = torch.roll(F.pad(x, (2, 2, 2, 2)), shifts=(dy, dx), dims=(-2, -1))
    return x[..., 2:-2, 2:-2]


@torch.no_grad()
def predict(model: FashionClassifier, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, C, H, W) -> (predicted labels (n,), features (n, 128))."""
    model.eval()
    preds, feats = [], []
    for i in range(0, images.shape[0], batch_size):
        f = model.embed(images[i:i + batch_size])
        feats.append(f)
        preds.append(model.head(f).argmax(1))
    return torch.cat(preds), torch.cat(feats)


def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images classified as their label (class consistency for samples)."""
    return float((predict(model, images)[0] == labels.long()).float().mean())


# ---------------------------------------------------------------------------- Fréchet distance
def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feat_a: torch.Tensor | np.ndarray, feat_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n_a, F) and (n_b, F)."""
    a = np.asarray(feat_a, dtype=np.float64)
    b = np.asarray(feat_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance: need two (n >= 2, F) feature arrays, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)                 # (Σ_a^½ Σ_b Σ_a^½)^½, symmetric PSD
    fd = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    return float(max(fd, 0.0))


# ---------------------------------------------------------------------------- files
def save_classifier(model: FashionClassifier, path: str | os.PathLike, **metadata) -> None:
    """Write `model.safetensors` + `config.json` into directory `path` (atomic renames)."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path / "model.safetensors")
    cfg = {"format": _FORMAT, "version": 1, "model": model.config, **metadata}
    (path / "config.json.tmp").write_text(json.dumps(cfg, indent=2))
    os.replace(path / "config.json.tmp", path / "config.json")


def load_classifier(path: str | os.PathLike) -> tuple[FashionClassifier, dict]:
    """Load a classifier directory; returns (model in eval mode, its config dict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no classifier at {path}: expected {path}/config.json and model.safetensors") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}/config.json is not valid JSON: {e}") from None
    if cfg.get("format") != _FORMAT:
        raise ValueError(f"{path}/config.json is not a {_FORMAT} config (format={cfg.get('format')!r})")
    model = FashionClassifier(**cfg["model"])
    try:
        state = load_file(str(path / "model.safetensors"))
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise ValueError(f"{path}/model.safetensors is corrupt or does not match the config: {e}") from None
    return model.eval(), cfg


# ---------------------------------------------------------------------------- samples of a model
def balanced_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """0, 1, …, K−1, 0, 1, … — num_samples labels, every class equally often (± 1)."""
    return torch.arange(num_samples) % num_classes


@torch.no_grad()
def sample_quality(model, classifier: FashionClassifier, reference_features: torch.Tensor, *,
                   num_samples: int = 10_000, batch_size: int = 250, seed: int = 0,
                   return_images: bool = False, **sample_kwargs) -> dict:
    """Class consistency and FD (Fashion-MNIST classifier features) of class-conditional samples.

    Draws `num_samples` images with balanced labels through `farmer.sample`
    (sample_kwargs: guidance, cfg_scale, decoder, temperatures, candidates…),
    batch b using seed + b, and compares the classifier's penultimate features
    with `reference_features` (n_ref, 128), e.g. `predict(classifier, test_images)[1]`.
    FD with fewer samples is biased upwards, so only compare figures at equal n.
    Returns {"class_consistency", "fd", "num_samples", "seconds", "seconds_per_image"}
    (+ "images" (n, C, H, W) uint8 with return_images).
    """
    from .sampling import sample
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2 for a Fréchet distance, got {num_samples}")
    labels = balanced_labels(num_samples, model.cfg.num_classes)
    images, start = [], time.perf_counter()
    for b, i in enumerate(range(0, num_samples, batch_size)):
        images.append(sample(model, labels[i:i + batch_size], seed=seed + b, **sample_kwargs))
    seconds = time.perf_counter() - start
    images = torch.cat(images)
    preds, feats = predict(classifier, images)
    out = {"class_consistency": float((preds == labels).float().mean()),
           "fd": frechet_distance(feats, reference_features),
           "num_samples": num_samples, "seconds": seconds, "seconds_per_image": seconds / num_samples}
    if return_images:
        out["images"] = images
    return out
