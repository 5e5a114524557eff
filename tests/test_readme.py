"""The README's Python examples run as written."""
import re
from pathlib import Path

import torch

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_library_example_runs():
    first, second = _python_blocks()[:2]
    scope: dict = {}
    exec(compile(first, "README.md", "exec"), scope)
    assert scope["terms"]["bpd"].shape == (4,)
    assert scope["maps"]["pixel_bits"].shape == (4, 1, 28, 28)
    # the sampling example reuses `model` from the first block
    exec(compile(second, "README.md", "exec"), scope)
    assert scope["imgs"].shape == (3, 1, 28, 28) and scope["imgs"].dtype == torch.uint8
    assert len(scope["res"].block_images) == scope["model"].cfg.flow_blocks
