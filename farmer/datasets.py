"""The data-set interface shared by every data source (DESIGN §3).

`farmer.data` (Fashion-MNIST, digits, synthetic, the noise modes) and
`farmer.folders` (image folders) both build on these classes; keeping them
here means neither of those modules imports the other at load time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found; the message says where we looked and how to get it."""


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
