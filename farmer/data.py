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
an image folder (one sub-folder per class) for users' own images, and a
deterministic synthetic set for smoke tests of any preset.
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


# ============================================================================ data sets
class ImageDataset(torch.utils.data.Dataset):
    """Common interface: `ds[i]` -> (uint8 (C, H, W), int label); `get_batch(idx)` -> (uint8 (B, C, H, W), int64 (B,))."""

    name: str = "images"
    num_classes: int = 0
    image_shape: tuple[int, int, int] = (1, 1, 1)   # (C, H, W)

    def get_batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[int(i)] for i in idx]
        return torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items], dtype=torch.long)


class ArrayDataset(ImageDataset):
    """Images held in memory: uint8 (N, C, H, W) and int64 labels (N,)."""

    def __init__(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                 num_classes: int, name: str = "array"):
        images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"{name}: images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{name}: labels {tuple(labels.shape)} do not match {images.shape[0]} images")
        self.images, self.labels = images.contiguous(), labels
        self.num_classes, self.name = num_classes, name
        self.image_shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def get_batch(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return self.images[idx_t], self.labels[idx_t]


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


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found; the message says where we looked and how to get it."""


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


# ---------------------------------------------------------------------------- image folder
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_REPLACEMENTS = 64           # unreadable files in a row before an item gives up


class UnreadableDataError(ValueError):
    """An image folder holds files that are not readable images (raised with strict=True, listing them all)."""


def _check_image(path: Path, decode: bool) -> str | None:
    """None if `path` is a readable image, else the reason. decode=False reads only the header."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            if decode:
                im.load()
            elif im.size[0] < 1 or im.size[1] < 1:
                return f"empty image {im.size}"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:     # PIL raises all four
        return f"{type(e).__name__}: {e}"
    return None


def scan_images(paths: Sequence[Path], decode: bool = False, threads: int | None = None) -> dict[Path, str]:
    """{path: reason} for every file of `paths` that is not a readable image (headers only unless decode).

    Threads overlap the file reads (Pillow releases the GIL while decoding)."""
    from concurrent.futures import ThreadPoolExecutor
    threads = threads or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        reasons = pool.map(lambda p: _check_image(p, decode), paths, chunksize=64)
        return {p: r for p, r in zip(paths, reasons) if r is not None}


class ImageFolder(ImageDataset):
    """`root/<class>/<image>` (or `root/<split>/<class>/<image>`), loaded lazily with Pillow.

    Each image is converted to grey ("L", channels=1) or "RGB" (channels=3),
    its shorter side resized to `image_size` (bicubic), then centre-cropped
    to image_size × image_size. Classes are the sorted sub-folder names.
    crop="random" (training): instead a random-resized crop, a box of 50-100%
    of the image's area with aspect ratio 3/4-4/3 resized to image_size, then
    a horizontal flip with probability ½; box and flip are drawn from
    (seed, epoch, item) alone (`set_epoch`), so worker processes, DDP ranks
    and a resumed run all see the same crops.

    Damaged data never ends a run. The scan reads every file's header (hidden
    files aside): files that are not images are left out and listed in
    `skipped_at_scan` {path: reason}. A file whose header reads but whose data
    does not decode is met later: `read(i)` then records it in `bad_files`
    {path: reason} and returns instead the image at a replacement index drawn
    from (i, attempt) alone, so every process, and a resumed run, gets the
    same batch. strict=True decodes every file at scan time and raises
    UnreadableDataError listing each unreadable one.
    """

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int, split: str | None = None,
                 strict: bool = False, crop: str = "center", seed: int = 0):
        if crop not in ("center", "random"):
            raise ValueError(f"ImageFolder: crop must be 'center' or 'random', got {crop!r}")
        self.crop, self.seed, self.epoch = crop, int(seed), 0
        root = Path(root)
        if split:                                  # ImageNet-style train/ and val/ (or test/) sub-folders
            names = [split] + (["val"] if split == "test" else [])
            found = [root / n for n in names if (root / n).is_dir()]
            if found:
                root = found[0]
            elif (root / "train").is_dir():
                raise DataNotFoundError(f"image folder {root} has train/ but no {' or '.join(names)}/ folder "
                                        f"for the {split!r} split")
        if not root.is_dir():
            raise DataNotFoundError(f"image folder {root} does not exist; expected {root}/<class>/<image>.png "
                                    f"(one sub-folder per class, optionally under train/ and test/)")
        if channels not in (1, 3):
            raise ValueError(f"ImageFolder: channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [(f, k) for k, c in enumerate(self.classes) for f in sorted((root / c).rglob("*"))
                 if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts)]
        problems = scan_images([f for f, _ in files], decode=strict)
        if strict and problems:
            raise UnreadableDataError(
                f"image folder {root}: {len(problems)} of {len(files)} files are not readable images "
                f"(--strict-data):\n" + "\n".join(f"  {p}: {why}" for p, why in problems.items())
                + "\nremove or repair them, or train without --strict-data to skip them")
        self.files: list[tuple[Path, int]] = [(f, k) for f, k in files if f not in problems]
        if not self.files:
            raise DataNotFoundError(f"image folder {root}: no readable images found; expected {root}/<class>/<image> "
                                    f"(e.g. {', '.join(IMAGE_EXTENSIONS)})"
                                    + (f"; {len(problems)} files could not be read" if problems else ""))
        self.skipped_at_scan: dict[str, str] = {str(p): why for p, why in problems.items()}
        self.bad_files: dict[str, str] = {}                 # met while reading: path -> reason
        self.root, self.size, self.mode = root, image_size, "L" if channels == 1 else "RGB"
        self.num_classes, self.name = len(self.classes), f"folder:{root}"
        self.image_shape = (channels, image_size, image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label, _ = self.read(i)
        return image, label

    def set_epoch(self, epoch: int) -> None:
        """Random crops are drawn afresh each epoch (set before the epoch's DataLoader starts its workers)."""
        self.epoch = int(epoch)

    def crop_box(self, i: int, w: int, h: int) -> tuple[tuple[int, int, int, int], bool]:
        """Item i's random-resized crop of a w×h image: ((left, top, right, bottom), flip), from (seed, epoch, i)."""
        import random
        rng = random.Random(f"farmer-crop:{self.seed}:{self.epoch}:{i}")
        area = w * h
        for _ in range(10):                                 # torchvision's RandomResizedCrop recipe
            target = area * rng.uniform(0.5, 1.0)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
                return (left, top, left + cw, top + ch), rng.random() < 0.5
        s = min(w, h)                                       # fallback: the central square
        return ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s), rng.random() < 0.5

    def replacement(self, i: int, attempt: int) -> int:
        """The index tried instead of item i after `attempt` failures: a function of (i, attempt) alone."""
        import random
        j = random.Random(f"farmer-image-folder:{i}:{attempt}").randrange(len(self.files) - 1)
        return j + (j >= i)                                 # never i itself

    def read(self, i: int) -> tuple[torch.Tensor, int, dict[str, str]]:
        """(uint8 (C, H, W), label, {path: reason} of the files that failed on the way)."""
        failed: dict[str, str] = {}
        for attempt in range(MAX_REPLACEMENTS + 1 if len(self.files) > 1 else 1):
            j = i if attempt == 0 else self.replacement(i, attempt)
            path, label = self.files[j]
            if str(path) in self.bad_files:                 # known bad: go straight to the next candidate
                continue
            try:
                return self.decode(path, item=i), label, failed
            except ValueError as e:
                self.bad_files[str(path)] = failed[str(path)] = str(e)
        raise ValueError(f"image folder {self.root}: item {i} and its replacements could not be read "
                         f"({len(self.bad_files)} unreadable files so far, e.g. {next(iter(self.bad_files))}); "
                         f"check the folder with --strict-data")

    def decode(self, path: Path, item: int | None = None) -> torch.Tensor:
        """One file -> uint8 (C, size, size); ValueError naming the file if it does not decode.

        `item` is the index whose random crop to take (crop="random"); None = the centre crop."""
        from PIL import Image, ImageOps, UnidentifiedImageError
        try:
            with Image.open(path) as im:
                im = im.convert(self.mode)
                w, h = im.size
                if self.crop == "random" and item is not None:
                    box, flip = self.crop_box(item, w, h)
                    im = im.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)
                    im = ImageOps.mirror(im) if flip else im
                else:
                    s = self.size / min(w, h)
                    nw, nh = max(self.size, round(w * s)), max(self.size, round(h * s))
                    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
                    left, top = (nw - self.size) // 2, (nh - self.size) // 2
                    im = im.crop((left, top, left + self.size, top + self.size))
                arr = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise ValueError(f"image folder: cannot read {path} as an image ({e})") from e
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)                    # (C, H, W)
        return torch.from_numpy(arr.copy())


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
    if num_workers == 0 or not isinstance(ds, ImageFolder):
        for idx in batches:
            yield ds.get_batch(idx)
        return
    loader = torch.utils.data.DataLoader(_Reads(ds), batch_sampler=[list(b) for b in batches],
                                         num_workers=num_workers, collate_fn=_collate)
    for x, y, failed in loader:
        ds.bad_files.update(failed)
        yield x, y


class _Reads(torch.utils.data.Dataset):
    """An ImageFolder whose items carry the files that failed on the way (for worker processes)."""

    def __init__(self, ds: ImageFolder):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds.read(i)


def _collate(items: list[tuple[torch.Tensor, int, dict[str, str]]]
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    failed = {p: why for _, _, f in items for p, why in f.items()}
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items], dtype=torch.long), failed
