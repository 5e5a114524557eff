"""Image folders (DESIGN §3): users' own images at any size, ImageNet's train/ and val/ layout included.

`root/<class>/<image>` or `root/<split>/<class>/<image>`, one sub-folder per
class, decoded lazily with Pillow (in DataLoader worker processes when the
trainer's num_workers > 0), centre-cropped, or random-resized-cropped and
flipped for training. Damaged files never end a run: see ImageFolder.
`farmer.data.load_dataset` builds one from a path.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .datasets import DataNotFoundError, ImageDataset


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


# ---------------------------------------------------------------------------- worker processes
def worker_loader(ds: ImageFolder, batches: Sequence[Sequence[int]], num_workers: int):
    """A DataLoader yielding (uint8 (B, C, H, W), int64 (B,), {path: reason} failed on the way) per index list."""
    return torch.utils.data.DataLoader(_Reads(ds), batch_sampler=[list(b) for b in batches],
                                       num_workers=num_workers, collate_fn=_collate)


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
