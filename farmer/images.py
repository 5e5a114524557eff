"""Any image file -> the model's input: uint8 (C, H, W), with a note of every step taken.

Users bring photos, scans, screenshots and 16-bit microscopy frames; the model
wants C×S×S pixels 0..255 (Fashion-MNIST: 1×28×28 grey, light object on a dark
background). `load_image` converts, and says what it did, so a bits/dim figure
is never quietly about a different picture than the one the user thinks:

    16-bit / 32-bit / float  -> 8-bit by rescaling the type's range (not clipping)
    palette                  -> expanded to RGB(A) through the palette
    alpha (RGBA, LA, P+tRNS) -> composited onto black (the Fashion-MNIST background)
    colour                   -> grey by ITU-R 601 luma (channels=1), or grey -> RGB (channels=3)
    any size                 -> fit (aspect kept, padded with black), crop or stretch to S×S
    EXIF orientation         -> applied; animations -> first frame

A file that Pillow cannot read raises ValueError ("not an image ..."), as does
an image too large to decode safely: more than MAX_PIXELS pixels, checked on
the header before any pixel is decoded (a 30 KB PNG can claim 10⁹ pixels).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FITS = ("pad", "crop", "stretch")
MAX_PIXELS = 40_000_000         # 40 MP (8K × 5K): larger uploads are refused before decoding
UPSCALE_NEAREST = 2.0           # enlarging by this factor or more uses nearest-neighbour, not smoothing
LOW_VARIANCE_KEPT = 0.5         # below this fraction of the pixel variance kept by resizing, say so


@dataclass
class ConvertedImage:
    """What `load_image` returns.

    pixels    uint8 (C, H, W), ready for `torch.from_numpy(pixels)[None]` and `model.nll`
    notes     one human-readable line per conversion step (empty: the file was used as is)
    source    what was read: {"format", "mode", "size": (W, H), "frames"}
    variance_kept  the resized picture's pixel variance over the source's (after the grey/colour
              conversion, padding excluded), in [0, ~1]; None when nothing was resized or the
              source is flat. Near 0: resizing averaged the image into a flat field (fine detail
              or noise smaller than one output pixel), so the model scores a different picture.
    """

    pixels: np.ndarray
    notes: list[str] = field(default_factory=list)
    source: dict = field(default_factory=dict)
    variance_kept: float | None = None

    @property
    def note(self) -> str:
        """The notes as one sentence-per-line string ("used as is" when there were none)."""
        return "\n".join(self.notes) if self.notes else "used as is (already the model's size and mode)"


def _open(source):
    """source (path, bytes, file object, PIL image or array) -> an open PIL image."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return Image.fromarray(source)
    name = "the data"
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        name = Path(source).name
        if not Path(source).is_file():
            raise ValueError(f"image file {source} does not exist")
    try:
        im = Image.open(source)                         # reads the header only
        if im.size[0] * im.size[1] > MAX_PIXELS:
            raise Image.DecompressionBombError(f"{im.size[0]} × {im.size[1]} = {im.size[0] * im.size[1]:,} "
                                               f"pixels, more than the {MAX_PIXELS:,} accepted")
        im.load()                                       # decode now: truncated files fail here, not later
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name} is too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"{name} is not an image: Pillow recognises no image format in it "
                         f"(PNG, JPEG, GIF, BMP, TIFF, WebP, …)") from e
    except (OSError, SyntaxError, ValueError) as e:                    # truncated or corrupt image data
        raise ValueError(f"{name} is not a readable image ({type(e).__name__}: {e})") from e
    return im


def _to_8bit(im, notes: list[str]):
    """High-bit-depth modes ("I;16*", "I", "F") -> "L", rescaling the type's range to 0..255."""
    from PIL import Image
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = np.round(a.astype(np.float64) / 257.0)                    # 65535 -> 255 exactly
        notes.append("16-bit grey -> 8-bit (divided by 257)")
    elif im.mode == "I":
        # 32-bit integer: Pillow also opens some 16-bit files this way; rescale from the
        # smallest standard range that holds the data
        top = 255 if a.max(initial=0) <= 255 else 65535 if a.max(initial=0) <= 65535 else int(a.max())
        out = np.round(np.clip(a, 0, None).astype(np.float64) * 255.0 / top)
        notes.append(f"32-bit integer grey -> 8-bit (range 0..{top} rescaled to 0..255)")
    else:                                                               # "F": float32
        a = np.nan_to_num(a.astype(np.float64))
        lo, hi = (0.0, 1.0) if a.min(initial=0) >= 0 and a.max(initial=0) <= 1 else (float(a.min()), float(a.max()))
        out = (a - lo) / max(hi - lo, 1e-12) * 255.0
        notes.append(f"float grey -> 8-bit (range {lo:g}..{hi:g} rescaled to 0..255)")
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def _flatten_alpha(im, notes: list[str]):
    """Composite an image with transparency onto black; returns "RGB" or "L"."""
    from PIL import Image
    base = "L" if im.mode in ("LA", "La") else "RGB"
    rgba = im.convert("LA" if base == "L" else "RGBA")
    alpha = np.asarray(rgba)[..., -1]
    if alpha.min() < 255:
        notes.append(f"transparency composited onto black ({np.mean(alpha < 255):.0%} of pixels not opaque)")
    else:
        notes.append("alpha channel dropped (fully opaque)")
    black = Image.new(rgba.mode, rgba.size, 0)
    return Image.alpha_composite(black.convert("RGBA"), rgba.convert("RGBA")).convert(base)


def _fit(im, size: int, fit: str, notes: list[str]):
    """Resize to size×size: "pad" keeps the aspect ratio and pads with black, "crop" fills and
    centre-crops, "stretch" ignores the aspect ratio. Area-averaging (LANCZOS) when shrinking or
    enlarging a little; nearest-neighbour when enlarging UPSCALE_NEAREST× or more (a 5×5 icon
    becomes 5×5 blocks instead of invented smooth blobs).
    Returns (the size×size image, the resized picture without the padding: for `variance_kept`)."""
    from PIL import Image
    w, h = im.size
    if (w, h) == (size, size):
        return im, im
    s = {"stretch": min(size / w, size / h), "pad": min(size / w, size / h), "crop": max(size / w, size / h)}[fit]
    nearest = s >= UPSCALE_NEAREST
    # LANCZOS averages over the pixels it shrinks; reducing_gap first box-reduces huge photos
    # by an integer factor, so a 6000×4000 upload costs milliseconds, not seconds
    resize = (lambda im, wh: im.resize(wh, Image.Resampling.NEAREST)) if nearest else (  # noqa: E731
        lambda im, wh: im.resize(wh, Image.Resampling.LANCZOS, reducing_gap=3.0))
    how = " with nearest-neighbour (each pixel a block; smoothing would invent detail)" if nearest else ""
    if fit == "stretch":
        notes.append(f"resized {w}×{h} -> {size}×{size}{how} (aspect ratio not kept)")
        out = resize(im, (size, size))
        return out, out
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    im = resize(im, (nw, nh))
    if fit == "pad":
        canvas = Image.new(im.mode, (size, size), 0)
        canvas.paste(im, ((size - nw) // 2, (size - nh) // 2))
        pad = "" if (nw, nh) == (size, size) else f", padded with black to {size}×{size}"
        notes.append(f"resized {w}×{h} -> {nw}×{nh}{how} (aspect ratio kept){pad}")
        return canvas, im
    left, top = (nw - size) // 2, (nh - size) // 2
    notes.append(f"resized {w}×{h} -> {nw}×{nh}{how} and centre-cropped to {size}×{size}")
    out = im.crop((left, top, left + size, top + size))
    return out, out


def _variance(im) -> float:
    return float(np.asarray(im, dtype=np.float64).var())


def load_image(source, image_size: int = 28, channels: int = 1, *, fit: str = "pad",
               invert: bool = False) -> ConvertedImage:
    """Read any image and convert it to a model input.

    source: a path, bytes, a binary file object, a PIL image or a numpy array.
    image_size, channels: the model's S and C (`model.cfg.image_size`, `model.cfg.channels`);
        channels is 1 (grey) or 3 (RGB).
    fit: "pad" (default: keep the aspect ratio, pad with black), "crop" (fill, centre-crop)
        or "stretch".
    invert: replace each pixel q by 255 − q (dark-on-light photos -> the light-on-dark
        look of Fashion-MNIST).

    Returns a ConvertedImage: pixels uint8 (channels, image_size, image_size) and notes.
    Raises ValueError for an unreadable or non-image source or bad arguments.
    """
    from PIL import ImageOps
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    im = _open(source)
    frames = getattr(im, "n_frames", 1)
    info = {"format": im.format or "array", "mode": im.mode, "size": im.size, "frames": frames}
    notes: list[str] = []
    if frames > 1:
        im.seek(0)
        notes.append(f"first of {frames} frames used")
    if _exif_turned(im):
        im = ImageOps.exif_transpose(im)
        notes.append("EXIF orientation applied")

    fmt = f"{info['format']} " if info["format"] != "array" else ""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = _to_8bit(im, notes)
    elif im.mode == "P":
        has_alpha = "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA"
        notes.append("palette colours expanded")
        im = _flatten_alpha(im, notes) if has_alpha else im.convert("RGB")
    elif im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        im = _flatten_alpha(im, notes)
    elif im.mode == "1":
        im = im.convert("L")
        notes.append("1-bit black/white -> 8-bit grey")
    elif im.mode not in ("L", "RGB"):                                   # CMYK, YCbCr, LAB, HSV, …
        notes.append(f"{im.mode} -> RGB")
        im = im.convert("RGB")

    want = "L" if channels == 1 else "RGB"
    if im.mode != want:
        notes.append("colour -> grey (ITU-R 601 luma)" if want == "L" else "grey -> RGB (channel copied)")
        im = im.convert(want)
    before = _variance(im)
    resized = im.size != (image_size, image_size)
    im, content = _fit(im, image_size, fit, notes)
    kept = _variance(content) / before if resized and before > 0 else None
    if kept is not None and kept < LOW_VARIANCE_KEPT:
        notes.append(f"resizing removed {1 - kept:.0%} of the image's pixel variance (detail finer than one "
                     f"output pixel was averaged away): the model scores a much flatter picture")
    arr = np.asarray(im, dtype=np.uint8)
    if invert:
        arr = 255 - arr
        notes.append("inverted (255 − value)")
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)       # (C, H, W)
    if notes:
        notes.insert(0, f"read {fmt}{info['mode']} {info['size'][0]}×{info['size'][1]}")
    return ConvertedImage(np.array(arr, dtype=np.uint8, order="C"), notes, info, kept)  # a writable copy


def _exif_turned(im) -> bool:
    """True when the image carries an EXIF orientation other than "normal" (1)."""
    try:
        return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:                                                   # noqa: BLE001 - broken EXIF: ignore
        return False


def looks_dark_on_light(pixels: np.ndarray, border: int = 2, contrast: float = 64.0) -> bool:
    """True when the image border is mostly light (mean > 127) and something in the image is clearly
    darker than it (the darkest 5% of pixels at least `contrast` grey levels below the border mean):
    probably a dark object on a light background, the opposite of Fashion-MNIST, so `invert=True`
    may be wanted. A flat or nearly flat light or mid-grey image has no object to invert: False.
    pixels (C, H, W) uint8."""
    p = np.asarray(pixels, dtype=np.float64)
    edge = np.concatenate([p[:, :border].ravel(), p[:, -border:].ravel(),
                           p[:, :, :border].ravel(), p[:, :, -border:].ravel()])
    return bool(edge.mean() > 127 and edge.mean() - np.percentile(p, 5) >= contrast)
