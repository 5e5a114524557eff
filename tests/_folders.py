"""Image folders with damaged files, for the data and training tests."""
from __future__ import annotations


def truncate(path, keep: float = 0.5):
    """Cut a PNG short: its header still reads, its pixel data no longer decodes."""
    raw = path.read_bytes()
    path.write_bytes(raw[: max(60, int(len(raw) * keep))])


def damaged_folder(root):
    """A 3-class folder of 8×8 grey images (8 each) with one truncated PNG and one text file named .png."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in range(3):
        for j in range(8):
            path = root / f"c{c}" / f"{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(path)
    truncate(root / "c1" / "3.png")
    (root / "c2" / "readme.png").write_text("this is not an image")
    return root / "c1" / "3.png", root / "c2" / "readme.png"
