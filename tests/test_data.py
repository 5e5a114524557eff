"""Data sets, image folders and noise modes (farmer/data.py, farmer/folders.py, DESIGN §1.4 and §3)."""
from __future__ import annotations

import gzip
import math
import shutil
import struct

import numpy as np
import pytest
import torch

from _folders import damaged_folder

from farmer.config import presets
from farmer.data import (DataNotFoundError, add_gaussian_noise, cosine_sigma, dequantize_uniform,
                         find_fashion_mnist, iterate_batches, load_dataset, load_digits, load_fashion_mnist,
                         load_synthetic, quantize, read_idx)
from farmer.folders import ImageFolder, UnreadableDataError

pytestmark = pytest.mark.usefixtures("one_thread")


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    """Write a uint8 array in IDX format: 0x0000, type 0x08, n dims, big-endian sizes, data."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def fake_fmnist(folder, n_train: int = 12, n_test: int = 5, gz: bool = True):
    """A folder with the four Fashion-MNIST file names holding small random IDX data."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, (n,), dtype=np.uint8), gz)
    return folder


@pytest.fixture
def no_fmnist_anywhere(monkeypatch, tmp_path):
    """Point every search location at empty folders."""
    monkeypatch.delenv("FARMER_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("farmer.data.FMNIST_SYSTEM_DIR", str(tmp_path / "system"))
    return tmp_path


# ---------------------------------------------------------------------------- real Fashion-MNIST
def test_real_fashion_mnist_files_load(fmnist_dir):
    train, test = load_fashion_mnist("train", fmnist_dir), load_fashion_mnist("test", fmnist_dir)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    # the published label balance: exactly 6,000 / 1,000 images per class
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    x, y = test.get_batch([0, 1, 2])
    assert x.shape == (3, 1, 28, 28) and y.tolist() == test.labels[:3].tolist()
    assert test.labels[:3].tolist() == [9, 2, 1]          # first t10k labels: ankle boot, pullover, trouser
    ds = load_dataset("fashion-mnist", "test", presets["fmnist"], fmnist_dir)
    assert len(ds) == 10000


# ---------------------------------------------------------------------------- search order and errors
def test_search_order_explicit_then_env_then_system_then_cache(no_fmnist_anywhere, monkeypatch):
    tmp = no_fmnist_anywhere
    cache = fake_fmnist(tmp / "cache" / "farmer" / "fashion-mnist")
    assert find_fashion_mnist(download=False) == cache
    system = fake_fmnist(tmp / "system")
    assert find_fashion_mnist(download=False) == system
    env = fake_fmnist(tmp / "env" / "fashion-mnist")            # $FARMER_DATA/fashion-mnist also counts
    monkeypatch.setenv("FARMER_DATA", str(tmp / "env"))
    assert find_fashion_mnist(download=False) == env
    explicit = fake_fmnist(tmp / "mine", gz=False)               # uncompressed files are accepted too
    assert find_fashion_mnist(explicit, download=False) == explicit
    ds = load_fashion_mnist("test", explicit)
    assert ds.images.shape == (5, 1, 28, 28)


def test_missing_data_says_where_it_looked_and_how_to_get_it(no_fmnist_anywhere):
    with pytest.raises(DataNotFoundError) as e:
        load_fashion_mnist("train", download=False)
    msg = str(e.value)
    assert "system" in msg and "fashion-mnist" in msg and "cache" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "FARMER_DATA" in msg
    with pytest.raises(FileNotFoundError, match="mine"):        # an explicit path is listed first
        find_fashion_mnist(no_fmnist_anywhere / "mine")


@pytest.mark.parametrize("damage", ["truncate", "magic", "gzip"])
def test_corrupt_idx_file_is_a_clear_error(tmp_path, damage):
    folder = fake_fmnist(tmp_path / "d")
    f = folder / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
        pattern = "truncated or corrupt"
    elif damage == "magic":
        f.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
        pattern = "bad IDX header"
    else:
        f.write_bytes(b"not gzip at all")
        pattern = "not a readable IDX file"
    with pytest.raises(ValueError, match=pattern) as e:
        load_fashion_mnist("test", folder)
    assert "t10k-images-idx3-ubyte.gz" in str(e.value) and "apt-get" in str(e.value)


def test_read_idx_roundtrip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a, gz=False)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)


def test_unknown_data_and_shape_mismatch_are_clear_errors():
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        load_dataset("mnist", "train", presets["tiny"])
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*expects \(1, 28, 28\)"):
        load_dataset("digits", "train", presets["fmnist"])
    with pytest.raises(ValueError, match="no data set given"):
        load_dataset(None, "train", presets["tiny"])


# ---------------------------------------------------------------------------- digits, synthetic
def test_digits_are_rescaled_and_split_disjointly():
    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (1500, 1, 8, 8) and test.images.shape == (297, 1, 8, 8)
    assert int(train.images.max()) == 255 and train.images.dtype == torch.uint8
    # every value is a rescaled 0..16 level
    levels = {round(v * 255 / 16) for v in range(17)}
    assert set(torch.unique(train.images).tolist()) <= levels
    rows = lambda ds: {bytes(r) for r in ds.images.reshape(len(ds), -1).numpy()}   # noqa: E731
    assert len(rows(train) & rows(test)) < 5      # a few digits are duplicated in sklearn's set itself


def test_synthetic_is_deterministic_and_sized_for_the_preset():
    a, b = load_synthetic("train", 28, 1, 10), load_synthetic("train", 28, 1, 10)
    assert torch.equal(a.images, b.images) and a.images.shape == (1024, 1, 28, 28)
    ds = load_dataset("synthetic", "test", presets["farmer-1.1b-p16"])
    assert ds.image_shape == (3, 256, 256) and ds.num_classes == 1000


# ---------------------------------------------------------------------------- image folder
def _png(path, size, color, mode="RGB"):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_classes_resize_crop_and_modes(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "train" / "cat" / "a.png", (40, 20), (255, 0, 0))          # wide: resized, centre-cropped
    _png(root / "train" / "cat" / "b.jpg", (16, 16), (0, 255, 0))
    _png(root / "train" / "dog" / "c.png", (10, 30), 128, mode="L")        # tall, grey
    (root / "train" / "dog" / "notes.txt").write_text("not an image")     # left out, and said so
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0\0")          # hidden: not data at all
    rgb = ImageFolder(root, image_size=8, channels=3, split="train")
    assert rgb.classes == ["cat", "dog"] and len(rgb) == 3 and rgb.num_classes == 2
    assert list(rgb.skipped_at_scan) == [str(root / "train" / "dog" / "notes.txt")]
    x, y = rgb.get_batch([0, 1, 2])
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 1]
    assert x[0, 0].min() > 250 and x[0, 1].max() < 5                       # still red after resizing
    assert x[2].float().sub(128).abs().max() <= 1                           # grey -> equal RGB channels
    grey = ImageFolder(root / "train", image_size=8, channels=1)
    assert grey[0][0].shape == (1, 8, 8)
    cfg = presets["tiny"].replace(channels=3, patch_size=2)
    assert len(load_dataset(str(root), "train", cfg)) == 3
    with pytest.raises(DataNotFoundError, match="no test or val/ folder"):   # never evaluate on train/
        load_dataset(str(root), "test", cfg)
    _png(root / "val" / "cat" / "v.png", (8, 8), (1, 2, 3))                  # ImageNet names it val/
    assert len(load_dataset(str(root), "test", cfg)) == 1


def test_random_crops_are_drawn_from_seed_epoch_and_item_alone(tmp_path):
    """crop="random": the same (seed, epoch, item) gives the same crop inline and in workers; epochs differ."""
    import numpy as np
    from PIL import Image
    from farmer.data import iterate_batches
    rng = np.random.default_rng(0)
    for i in range(6):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / f"c{i % 2}" / f"{i}.png")
    ds = ImageFolder(tmp_path, 16, 3, crop="random", seed=3)
    same = ImageFolder(tmp_path, 16, 3, crop="random", seed=3)
    centre = ImageFolder(tmp_path, 16, 3)
    a, _ = ds.get_batch(range(6))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, same.get_batch(range(6))[0])
    assert not torch.equal(a, centre.get_batch(range(6))[0])                     # not the centre crop
    workers = torch.cat([x for x, _ in iterate_batches(same, [[0, 1, 2], [3, 4, 5]], num_workers=2)])
    assert torch.equal(a, workers)                                               # worker processes agree
    ds.set_epoch(1)
    b, _ = ds.get_batch(range(6))
    assert not torch.equal(a, b)                                                 # a new epoch, new crops
    boxes = [ds.crop_box(i, 40, 30) for i in range(200)]
    areas = [(r - l) * (b_ - t) / 1200 for (l, t, r, b_), _ in boxes]
    assert min(areas) >= 0.45 and max(areas) <= 1.0 and 0.6 < np.mean(areas) < 0.9
    assert 0.35 < np.mean([f for _, f in boxes]) < 0.65                            # flips about half the time
    assert all(0 <= l < r <= 40 and 0 <= t < b_ <= 30 for (l, t, r, b_), _ in boxes)
    with pytest.raises(ValueError, match="crop must be"):
        ImageFolder(tmp_path, 16, 3, crop="zoom")


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nope", 8, 1)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no readable images found"):
        ImageFolder(tmp_path / "empty", 8, 1)
    bad = tmp_path / "bad" / "cls" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataNotFoundError, match="no readable images found; .*1 files could not be read"):
        ImageFolder(tmp_path / "bad", 8, 1)
    damaged_folder(tmp_path / "many")
    (tmp_path / "one" / "cls").mkdir(parents=True)
    shutil.copy(tmp_path / "many" / "c1" / "3.png", tmp_path / "one" / "cls" / "a.png")
    only = ImageFolder(tmp_path / "one", 8, 1)                        # the header reads; the data does not
    with pytest.raises(ValueError, match="item 0 and its replacements could not be read.*a.png"):
        only[0]


def test_an_undecodable_file_is_replaced_by_the_same_image_every_time(tmp_path):
    corrupt, text = damaged_folder(tmp_path / "imgs")
    ds = ImageFolder(tmp_path / "imgs", 8, 1)
    assert list(ds.skipped_at_scan) == [str(text)] and len(ds) == 24      # the text file fails its header
    i = [p for p, _ in ds.files].index(corrupt)
    x, y, failed = ds.read(i)
    assert list(failed) == [str(corrupt)] and list(ds.bad_files) == [str(corrupt)]
    j = ds.replacement(i, 1)
    assert j != i and torch.equal(x, ds.decode(ds.files[j][0])) and y == ds.files[j][1]
    assert ds.read(i)[2] == {}                                            # known now: not read again
    fresh = ImageFolder(tmp_path / "imgs", 8, 1)                          # a resumed run, or another rank
    assert torch.equal(fresh.get_batch([i, 0])[0][0], x)
    assert torch.equal(fresh.get_batch([0])[0][0], ds[0][0])             # good items are untouched
    batches = [[i, 1, 2], [3, i]]
    workers = ImageFolder(tmp_path / "imgs", 8, 1)
    got = list(iterate_batches(workers, batches, num_workers=1))         # decoded in a worker process
    assert list(workers.bad_files) == [str(corrupt)]                      # ... and reported back here
    inline = list(iterate_batches(ImageFolder(tmp_path / "imgs", 8, 1), batches))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, inline))


def test_strict_data_lists_every_unreadable_file(tmp_path):
    corrupt, text = damaged_folder(tmp_path / "imgs")
    with pytest.raises(UnreadableDataError, match="2 of 25 files are not readable images") as e:
        ImageFolder(tmp_path / "imgs", 8, 1, strict=True)
    assert str(corrupt) in str(e.value) and str(text) in str(e.value)


# ---------------------------------------------------------------------------- noise modes
def test_uniform_dequantisation_stays_in_its_bin():
    q = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(8, 1, 1, 1)
    x = dequantize_uniform(q, seed=3)
    assert torch.equal(quantize(x), q)
    assert torch.equal(x, dequantize_uniform(q, seed=3)) and not torch.equal(x, dequantize_uniform(q, seed=4))
    u = (x + 1) * 128 - q.float()
    assert 0.45 < u.mean() < 0.55 and u.min() >= 0 and u.max() < 1


def test_gaussian_noise_is_centred_on_the_bin_with_sigma():
    q = torch.full((64, 1, 16, 16), 100, dtype=torch.uint8)
    assert torch.equal(quantize(add_gaussian_noise(q, 0.0)), q)               # σ = 0 -> bin centres
    x = add_gaussian_noise(q, 0.05, seed=0)
    centre = (100 + 0.5) / 128 - 1
    assert abs(x.mean().item() - centre) < 2e-3 and abs(x.std().item() - 0.05) < 2e-3
    with pytest.raises(ValueError, match="uint8"):
        add_gaussian_noise(q.float(), 0.1)


def test_cosine_sigma_schedule():
    assert cosine_sigma(0, 100) == pytest.approx(0.1)
    assert cosine_sigma(99, 100) == pytest.approx(0.005)
    mid = cosine_sigma(99, 199)                                            # halfway: the mean of the ends
    assert mid == pytest.approx((0.1 + 0.005) / 2)
    vals = [cosine_sigma(s, 50) for s in range(50)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert cosine_sigma(10, 11, sigma_max=0.2, sigma_min=0.0) == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(cosine_sigma(0, 1), 0.1)                           # a one-step run


def test_need_or_skip_skips_for_users_and_fails_under_farmer_require_all(monkeypatch):
    from conftest import need_or_skip
    need_or_skip(True, "never shown")
    monkeypatch.delenv("FARMER_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install x"):
        need_or_skip(False, "apt-get install x")
    monkeypatch.setenv("FARMER_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="FARMER_REQUIRE_ALL=1 but: apt-get install x"):
        need_or_skip(False, "apt-get install x")
