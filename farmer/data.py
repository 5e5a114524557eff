"""Data: the data sets (DESIGN §3) and the two noise modes of training (DESIGN §1.4).

Every data set yields uint8 images (C, H, W) with values 0..255 and an int
label; the model sees floats in [−1, 1] only after one of the noise modes:

    uniform   x = (q + u)/128 − 1,        u ~ U[0, 1)^D
              a true bound on the discrete data (see likelihood.py); every
              reported bits/dim uses it.
    gaussian  x = (q + ½)/128 − 1 + σ·ε,   ε ~ N(0, I)
              the paper's augmentation. q + ½ is the centre of the pixel's
              uniform bin, so `quantize` maps a noise-free x back to q; σ
              follows a cosine schedule from sigma_max to sigma_min over
              training (σ in [−1, 1] pixel units: 0.1 ≈ 6.4 grey levels).

Data sets: Fashion-MNIST from IDX files (parsed with numpy, found by the
search order of `find_fashion_mnist`), scikit-learn's bundled 8×8 digits,
an image folder (one sub-folder per class; farmer/folders.py) for users' own
images, and a deterministic synthetic set for smoke tests of any preset.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

# The data-set classes live in datasets.py, which folders.py imports too (folders.py never
# imports this module, so the two do not import each other); re-exported here.
from .datasets import ArrayDataset, DataNotFoundError, ImageDataset  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from .config import FarmerConfig


# ============================================================================ noise
def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (determinism per device)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def dequantize_uniform(x: torch.Tensor, seed: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [−1, 1): (q + u)/128 − 1, u ~ U[0, 1).

    `seed` fixes the noise (None and no generator = fresh global-RNG noise).
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"dequantize_uniform: x must be uint8 pixels, got {x.dtype}")
    if generator is None and seed is not None:
        generator = make_generator(seed, x.device)
    u = torch.rand(x.shape, generator=generator, device=x.device)
    return (x.float() + u) / 128.0 - 1.0


def quantize(x: torch.Tensor) -> torch.Tensor:
    """float images in [−1, 1] -> uint8 pixels: clip, then floor((x + 1)·128)."""
    return ((x.clamp(-1, 1) + 1) * 128).floor().clamp(0, 255).to(torch.uint8)


def cosine_sigma(step: int, total_steps: int, sigma_max: float = 0.1, sigma_min: float = 0.005) -> float:
    """Gaussian-noise σ at `step` of `total_steps`: cosine from sigma_max (step 0) to sigma_min (last step)."""
    t = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    return sigma_min + (sigma_max - sigma_min) * 0.5 * (1.0 + math.cos(math.pi * t))


def add_gaussian_noise(x: torch.Tensor, sigma: float, seed: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (q + ½)/128 − 1 + σ·ε (unbounded; the flow needs no clipping)."""
    if x.dtype != torch.uint8:
        raise ValueError(f"add_gaussian_noise: x must be uint8 pixels, got {x.dtype}")
    if sigma < 0:
        raise ValueError(f"add_gaussian_noise: sigma must be >= 0, got {sigma}")
    if generator is None and seed is not None:
        generator = make_generator(seed, x.device)
    eps = torch.randn(x.shape, generator=generator, device=x.device)
    return (x.float() + 0.5) / 128.0 - 1.0 + sigma * eps


# ---------------------------------------------------------------------------- Fashion-MNIST
FMNIST_FILES = {  # split -> (images, labels); MD5s of the official .gz files (used for downloads)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FMNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FMNIST_URLS = ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
               "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
FMNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"       # Debian: dataset-fashion-mnist
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
HOW_TO_GET_FMNIST = ("get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
                     "the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist and "
                     "pass their folder with --data-dir or $FARMER_DATA")


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/farmer (default ~/.cache/farmer)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "farmer"


def _has_fmnist(d: Path) -> bool:
    return all((d / f).is_file() or (d / f[:-3]).is_file() for pair in FMNIST_FILES.values() for f in pair)


def fashion_mnist_candidates(path: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order: explicit path, $FARMER_DATA (and its fashion-mnist/), Debian's, the cache."""
    out: list[Path] = []
    if path is not None:
        out.append(Path(path))
    env = os.environ.get("FARMER_DATA")
    if env:
        out += [Path(env), Path(env) / "fashion-mnist"]
    out += [Path(FMNIST_SYSTEM_DIR), user_cache_dir() / "fashion-mnist"]
    return out


def _download_fmnist(dest: Path, timeout: float = 30.0) -> None:
    """Fetch the four official files into `dest`, checking their MD5s; raises OSError on any failure."""
    dest.mkdir(parents=True, exist_ok=True)
    for fname, md5 in FMNIST_MD5.items():
        if (dest / fname).is_file():
            continue
        errors = []
        for base in FMNIST_URLS:
            tmp = dest / f".{fname}.part"
            try:
                with urllib.request.urlopen(base + fname, timeout=timeout) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                got = hashlib.md5(tmp.read_bytes()).hexdigest()
                if got != md5:
                    raise OSError(f"MD5 {got} != official {md5}")
                os.replace(tmp, dest / fname)
                break
            except Exception as e:                       # noqa: BLE001 - try the next mirror
                errors.append(f"{base}{fname}: {e}")
                tmp.unlink(missing_ok=True)
        else:
            raise OSError("; ".join(errors))


def find_fashion_mnist(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder holding the Fashion-MNIST IDX files (.gz or uncompressed), by DESIGN §3's search order.

    Looks in: `path`, $FARMER_DATA, /usr/share/datasets/fashion-mnist, the
    user cache; then (download=True) downloads into the user cache. Raises
    DataNotFoundError listing every place looked and how to get the files.
    """
    looked = fashion_mnist_candidates(path)
    for d in looked:
        if _has_fmnist(d):
            return d
    note = "download disabled"
    if download and path is None:
        cache = user_cache_dir() / "fashion-mnist"
        try:
            _download_fmnist(cache)
            return cache
        except OSError as e:
            note = f"download into {cache} failed: {e}"
    elif path is not None:
        note = "no download when an explicit path is given"
    raise DataNotFoundError("Fashion-MNIST not found. Looked for train/t10k *-ubyte(.gz) files in: "
                            + ", ".join(str(d) for d in looked) + f" ({note}). To fix: {HOW_TO_GET_FMNIST}.")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array; corrupt files raise ValueError naming the file.

    Format: 2 zero bytes, a type code (0x08 = uint8), the number of dims n,
    n big-endian uint32 sizes, then the data.
    """
    path = Path(path)
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:           # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable IDX file ({e}); {HOW_TO_GET_FMNIST}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path}: bad IDX header {raw[:4].hex() or 'empty'}, expected 0000 08 0n "
                         f"(uint8 data, n dims); the file is corrupt or not IDX. {HOW_TO_GET_FMNIST}")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    want = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != want:
        raise ValueError(f"{path}: IDX header says shape {shape} ({want} bytes) but the file holds "
                         f"{len(raw)} bytes: truncated or corrupt. {HOW_TO_GET_FMNIST}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train", path: str | os.PathLike | None = None,
                       download: bool = True) -> ArrayDataset:
    """Fashion-MNIST `split` ("train": 60,000, "test": 10,000) as uint8 (N, 1, 28, 28) and labels 0..9."""
    if split not in FMNIST_FILES:
        raise ValueError(f"Fashion-MNIST split must be one of {tuple(FMNIST_FILES)}, got {split!r}")
    d = find_fashion_mnist(path, download)
    files = [d / f if (d / f).is_file() else d / f[:-3] for f in FMNIST_FILES[split]]
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{files[0]}, {files[1]}: expected images (N, 28, 28) and N labels, got "
                         f"{images.shape} and {labels.shape}. {HOW_TO_GET_FMNIST}")
    if labels.max(initial=0) > 9:
        raise ValueError(f"{files[1]}: labels must be 0..9, found {int(labels.max())}")
    return ArrayDataset(images[:, None].copy(), labels.astype(np.int64), 10, name=f"fashion-mnist/{split}")


# ---------------------------------------------------------------------------- 8×8 digits
DIGITS_TEST = 297     # scikit-learn's 1,797 digits: a fixed shuffled 1,500 / 297 train/test split


def load_digits(split: str = "train") -> ArrayDataset:
    """scikit-learn's bundled 8×8 digits, values 0..16 rescaled to 0..255: uint8 (N, 1, 8, 8), labels 0..9."""
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    from sklearn.datasets import load_digits as _sk_digits      # lazy: sklearn is slow to import
    d = _sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]   # (1797, 1, 8, 8)
    order = np.random.RandomState(0).permutation(len(images))
    idx = order[DIGITS_TEST:] if split == "train" else order[:DIGITS_TEST]
    return ArrayDataset(images[idx], d.target[idx].astype(np.int64), 10, name=f"digits/{split}")


# ---------------------------------------------------------------------------- synthetic
def load_synthetic(split: str = "train", image_size: int = 8, channels: int = 1, num_classes: int = 10,
                   n: int | None = None) -> ArrayDataset:
    """Deterministic class-dependent stripes + noise: smoke tests for any preset without real data.

    Default size: 1024 train / 256 test images, fewer for large images (64
    at 256×256 RGB) so that the set stays near 16 MB of float32 while built."""
    per_image = channels * image_size ** 2
    n = n or max(64, min(1024 if split == "train" else 256, (1 << 22) // per_image))
    g = torch.Generator().manual_seed(1 if split == "train" else 2)
    labels = torch.randint(0, max(num_classes, 1), (n,), generator=g)
    r = torch.arange(image_size).float()
    freq = (labels.float() + 1)[:, None, None, None] * math.pi / image_size                # (n, 1, 1, 1)
    base = torch.sin(freq * (r[None, None, :, None] + r[None, None, None, :]))            # (n, 1, H, W)
    base = base.expand(n, channels, image_size, image_size)
    imgs = 127.5 + 100 * base + 20 * torch.randn(n, channels, image_size, image_size, generator=g)
    return ArrayDataset(imgs.clamp(0, 255).round().to(torch.uint8), labels, num_classes, name=f"synthetic/{split}")


# ---------------------------------------------------------------------------- one entry point
DATASETS = ("fashion-mnist", "digits", "synthetic")


def load_dataset(name: str | None, split: str, cfg: "FarmerConfig",
                 path: str | os.PathLike | None = None, download: bool = True,
                 strict: bool = False, crop: str = "center", seed: int = 0) -> ImageDataset:
    """The data set `name` for model config `cfg`: "fashion-mnist" | "digits" | "synthetic" | an image-folder path.

    Checks that the images have the model's (C, H, W) and labels fit its classes.
    strict: an image folder decodes every file now and refuses unreadable ones (ImageFolder).
    crop: an image folder's "center" or "random" crop (ImageFolder), seeded by `seed`.
    """
    if name is None:
        raise ValueError("no data set given: pass --data fashion-mnist | digits | synthetic | PATH (an image folder)")
    if name in ("fashion-mnist", "fmnist"):
        ds: ImageDataset = load_fashion_mnist(split, path, download)
    elif name == "digits":
        ds = load_digits(split)
    elif name == "synthetic":
        ds = load_synthetic(split, cfg.image_size, cfg.channels, cfg.num_classes)
    elif os.sep in name or Path(name).is_dir() or name.startswith("."):
        from .folders import ImageFolder
        ds = ImageFolder(name, cfg.image_size, cfg.channels, split, strict=strict, crop=crop, seed=seed)
    else:
        raise ValueError(f"unknown data set {name!r}: use one of {DATASETS} or a path to an image folder")
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if tuple(ds.image_shape) != want:
        raise ValueError(f"data set {ds.name} has images {tuple(ds.image_shape)} (C, H, W) but the model expects "
                         f"{want}; pick a matching preset (fashion-mnist: fmnist; digits: tiny or digits)")
    if cfg.num_classes and ds.num_classes > cfg.num_classes:
        raise ValueError(f"data set {ds.name} has {ds.num_classes} classes but the model has "
                         f"num_classes = {cfg.num_classes}")
    return ds


def iterate_batches(ds: ImageDataset, batches: Sequence[Sequence[int]],
                    num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 (B, C, H, W), int64 (B,)) for each index list; worker processes for lazy (folder) data sets.

    Files an ImageFolder could not decode in a worker are merged into the
    caller's `ds.bad_files` before the batch is yielded."""
    from .folders import ImageFolder, worker_loader
    if num_workers == 0 or not isinstance(ds, ImageFolder):
        for idx in batches:
            yield ds.get_batch(idx)
        return
    loader = worker_loader(ds, batches, num_workers)
    for x, y, failed in loader:
        ds.bad_files.update(failed)
        yield x, y
