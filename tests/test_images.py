"""farmer.images.load_image: any image file -> the model's uint8 input, with notes of what was done."""
import io

import numpy as np
import pytest
from PIL import Image

from farmer.images import load_image, looks_dark_on_light


def _png(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _grad(h=28, w=28) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))


def test_model_sized_grey_image_is_used_as_is(tmp_path):
    a = _grad()
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    r = load_image(path)
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (1, 28, 28)
    assert np.array_equal(r.pixels[0], a) and r.notes == [] and "as is" in r.note
    assert r.source["format"] == "PNG" and r.source["size"] == (28, 28)


@pytest.mark.parametrize("make, expect", [
    (lambda a: Image.fromarray(np.dstack([a, a, a])), "luma"),
    (lambda a: Image.fromarray(np.dstack([a, a, a, np.full_like(a, 255)]), "RGBA"), "alpha"),
    (lambda a: Image.fromarray(np.dstack([a, a, a])).convert("P", palette=Image.Palette.ADAPTIVE), "palette"),
    (lambda a: Image.fromarray(a.astype(np.uint16) * 257), "16-bit"),
    (lambda a: Image.fromarray(a).convert("1"), "1-bit"),
    (lambda a: Image.fromarray(np.dstack([a, a, a])).convert("CMYK"), "CMYK"),
])
def test_every_mode_becomes_grey_uint8_with_a_note(make, expect):
    im = make(_grad())
    data = _png(im, "TIFF" if im.mode == "CMYK" else "PNG")
    r = load_image(data)
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (1, 28, 28)
    assert any(expect.lower() in n.lower() for n in r.notes), r.notes
    if expect in ("luma", "alpha", "palette", "16-bit"):                       # lossless routes keep the values
        assert np.abs(r.pixels[0].astype(int) - _grad()).max() <= 1


def test_sixteen_bit_range_is_rescaled_not_clipped():
    a = np.array([[0, 257 * 100, 65535]], dtype=np.uint16).repeat(28, 0).repeat(28 // 3 + 1, 1)[:, :28]
    r = load_image(_png(Image.fromarray(a)))
    assert set(np.unique(r.pixels)) <= {0, 100, 255} and r.pixels.max() == 255


def test_transparency_goes_to_black():
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 14:, 3] = 255                                                      # right half opaque white
    r = load_image(Image.fromarray(rgba, "RGBA"))
    assert r.pixels[0, :, :14].max() == 0 and r.pixels[0, :, 14:].min() == 255
    assert any("transparency" in n for n in r.notes)


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_any_size_is_fitted(fit):
    a = np.full((300, 100), 200, np.uint8)                                     # tall, light
    r = load_image(_png(Image.fromarray(a)), fit=fit)
    assert r.pixels.shape == (1, 28, 28)
    assert any("300" in n or "100×300" in n for n in r.notes)
    if fit == "pad":                                                           # aspect kept: black side bars
        assert r.pixels[0, :, 0].max() == 0 and r.pixels[0, 14, 14] == 200
    else:
        assert r.pixels.min() >= 199


def test_rgb_models_get_three_channels_and_invert_flips():
    r = load_image(Image.fromarray(_grad()), image_size=8, channels=3, invert=True)
    assert r.pixels.shape == (3, 8, 8) and any("inverted" in n for n in r.notes)
    assert r.pixels[:, :, 0].min() > 200                                       # was the dark left edge


def test_first_frame_of_an_animation():
    frames = [Image.fromarray(np.full((28, 28), v, np.uint8)) for v in (10, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r = load_image(buf.getvalue())
    assert any("first of 2 frames" in n for n in r.notes) and abs(int(r.pixels.mean()) - 10) <= 2


@pytest.mark.parametrize("data", [b"", b"hello, this is text", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_non_images_are_a_clear_value_error(data, tmp_path):
    p = tmp_path / "notes.txt"
    p.write_bytes(data)
    with pytest.raises(ValueError, match="not a.*image"):
        load_image(p)
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_bad_arguments():
    im = Image.fromarray(_grad())
    with pytest.raises(ValueError, match="fit"):
        load_image(im, fit="zoom")
    with pytest.raises(ValueError, match="channels"):
        load_image(im, channels=2)


def test_dark_on_light_hint():
    shirt = np.full((1, 28, 28), 240, np.uint8)
    shirt[:, 6:22, 8:20] = 40                                                  # a dark garment on white
    assert looks_dark_on_light(shirt)
    assert not looks_dark_on_light(255 - shirt)                                # Fashion-MNIST's look
    assert not looks_dark_on_light(np.zeros((1, 28, 28), np.uint8))


@pytest.mark.parametrize("level", [128, 160, 240])
def test_no_invert_hint_for_a_flat_or_nearly_flat_image(level):
    """Nothing in a flat grey field to invert (random noise resized to 28×28 becomes one)."""
    flat = np.full((1, 28, 28), level, np.uint8)
    assert not looks_dark_on_light(flat)
    noisy = np.clip(flat + np.random.RandomState(0).randint(-12, 13, flat.shape), 0, 255).astype(np.uint8)
    assert not looks_dark_on_light(noisy)


def test_tiny_images_are_upscaled_with_nearest_neighbour_and_say_so():
    a = np.zeros((5, 5), np.uint8)
    a[::2, ::2] = 255                                                          # a 5×5 checkerboard of dots
    for fit in ("pad", "stretch"):
        r = load_image(_png(Image.fromarray(a)), fit=fit)
        assert set(np.unique(r.pixels)) <= {0, 255}                            # blocks, no smoothed grey
        assert any("nearest-neighbour" in n for n in r.notes)
    r = load_image(_png(Image.fromarray(a)), fit="stretch")
    assert r.pixels[0, 0, 0] == 255 and r.pixels[0, 27, 27] == 255 and r.pixels[0, 0, 27] == 255
    big = load_image(_png(Image.fromarray(_grad(20, 20))))                     # 1.4×: smooth resizing
    assert not any("nearest" in n for n in big.notes)


def test_a_note_when_resizing_averages_the_image_away():
    noise = np.random.RandomState(0).randint(0, 256, (480, 640, 3)).astype(np.uint8)
    r = load_image(_png(Image.fromarray(noise)))
    assert r.variance_kept is not None and r.variance_kept < 0.1
    assert any("removed" in n and "variance" in n for n in r.notes)
    smooth = load_image(_png(Image.fromarray(_grad(280, 280))))                # a gradient survives resizing
    assert smooth.variance_kept == pytest.approx(1.0, abs=0.05)
    assert not any("variance" in n for n in smooth.notes)
    assert load_image(_png(Image.fromarray(_grad()))).variance_kept is None    # not resized


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width × height grey pixels (its data is a few zero rows)."""
    import struct
    import zlib
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4)) + chunk(b"IEND", b""))


def test_an_image_claiming_too_many_pixels_is_refused_from_its_header():
    import time
    t = time.perf_counter()
    with pytest.raises(ValueError, match="too large to decode safely"):                # Pillow refuses it
        load_image(_png_claiming(100_000, 50_000))                      # 20 GB as RGBA if decoded
    # under Pillow's own limit; refused on the header (decoding would fail differently: its data is 4 rows)
    with pytest.raises(ValueError, match="6400 × 6400 = 40,960,000 pixels, more than the 40,000,000 accepted"):
        load_image(_png_claiming(6400, 6400))
    assert time.perf_counter() - t < 1.0

