"""Picking the image a view works on: a test image (by index, or by class), a model sample, or an upload.

`ImagePicking` is a mixin of `Workbench` (app.handlers), like `app.analysis`: it relies on its
`model`, `cfg`, `device`, `test`, `test_error`, `classes` and `_test_labels`. Every view's first
eight arguments go to `pick_image`; `condition` turns the ninth into the label to score under.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import farmer
from farmer.images import FITS, load_image, looks_dark_on_light

from .inputs import ANY_CLASS, NOISE_SEED, OWN_LABEL, SOURCES, UNCONDITIONAL, check, choose, refusal

STRUCTURED_PNG_BPD = 7.0    # below this PNG bits/dim an upload has structure to invert (uniform noise: ~9)


class ImagePicking:
    """The image pickers' handler code, mixed into `Workbench`."""

    def pick_image(self, source: str, test_class: str = ANY_CLASS, test_index: int = 0,
                   sample_class: str = UNCONDITIONAL, sample_seed: int = 0, upload: Any = None,
                   fit: str = "pad", invert: bool = False) -> tuple[torch.Tensor, int | None, str, list[str]]:
        """-> uint8 (1, C, H, W), its own label (or None), a description, conversion notes."""
        choose("source", source, SOURCES)
        if source == "test image":
            if self.test is None:
                raise refusal(self.test_error, "No test data")
            choose("test class", test_class, [ANY_CLASS] + self.classes)
            if test_class == ANY_CLASS:
                pool = None
                i = check("test_index", test_index, 0, len(self.test) - 1, True)
            else:
                labels = self.test_labels()
                pool = np.flatnonzero(labels == self.classes.index(test_class))
                i = int(pool[check("test_index", test_index, 0, len(pool) - 1, True)])
            x, y = self.test.get_batch([i])
            label = int(y[0]) if self.cfg.num_classes else None
            what = f"test image #{i}" + (f" ({self.classes[label]})" if label is not None else "")
            if pool is not None:
                what += f", number {test_index} of the {len(pool)} of its class"
            return x.to(self.device), label, what, []
        if source == "model sample":
            label = self.label_of(sample_class, "sample class")
            seed = check("seed", sample_seed)
            x = farmer.sample(self.model, None if label is None else [label], num_samples=1, seed=seed)
            return x, label, f"a model sample ({self.class_name(label)}, seed {seed}, no guidance)", []
        if upload is None or upload == "":
            raise refusal("Choose an image file to upload first.", "No file")
        choose("fit", fit, FITS)
        path = upload if isinstance(upload, (str, Path)) else getattr(upload, "name", None) or upload.get("path")
        conv = load_image(path, self.cfg.image_size, self.cfg.channels, fit=fit, invert=bool(invert))
        notes = list(conv.notes)
        x = torch.from_numpy(conv.pixels)[None].to(self.device)
        if not invert and looks_dark_on_light(conv.pixels):
            hint = self._invert_hint(x)
            if hint:
                notes.append(hint)
        return x, None, f"upload {Path(str(path)).name}", notes

    def _invert_hint(self, x: torch.Tensor) -> str:
        """The 'try invert' hint, only for an image with structure (PNG compresses it below
        STRUCTURED_PNG_BPD bits/dim; noise stays near 9) that inverting would make look more like the
        training data by the complexity score (`farmer.ood`): a dark garment on white, yes; noise, no."""
        from farmer import ood
        both = torch.cat([x, 255 - x])                                            # (2, C, H, W) as is, inverted
        png = ood.png_bits_per_dim(both.cpu())
        if png[0] >= STRUCTURED_PNG_BPD:
            return ""
        with torch.no_grad():
            bpd = self.model.nll(both, None, seed=NOISE_SEED)["bpd"].double().cpu()
        complexity = bpd - png
        if complexity[1] >= complexity[0]:
            return ""
        return (f"hint: a dark object on a light background, but the training images are light-on-dark; "
                f"inverted, its complexity score would drop from {complexity[0]:+.2f} to {complexity[1]:+.2f} "
                f"bits/dim: try 'invert'")

    def test_labels(self) -> np.ndarray:
        """(len(test),) int labels of the test split (read once)."""
        if self._test_labels is None:
            labels = getattr(self.test, "labels", None)                         # in memory for array data
            self._test_labels = (np.asarray(labels) if labels is not None
                                 else np.asarray([self.test[i][1] for i in range(len(self.test))]))
        return self._test_labels

    def condition(self, name: str, own: int | None) -> tuple[int | None, str]:
        """The label to score under: the image's own, none (null class) or a chosen class."""
        choose("condition", name, self.condition_choices)
        if self.cfg.num_classes == 0:
            return None, "unconditional model"
        if name == OWN_LABEL:
            label = own
        else:
            label = None if name == UNCONDITIONAL else self.classes.index(name)
        return label, ("p(x) under the null class (unconditional)" if label is None
                       else f"p(x | {self.classes[label]})")
