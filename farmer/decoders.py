"""The AF inverse, block by block, by each decoder (DESIGN §1.7; which to use when: docs/figures.md).

    sequential          N−1 cached single-token steps per block (the exact inverse)
    sequential_nocache  the same, re-running the whole prefix each step: the O(N²) reference
    jacobi              parallel fixed-point iteration from x = z (farmer/jacobi.py); with
                        jacobi_chunk, Gauss–Seidel–Jacobi over token chunks
    distilled           the one-step student (farmer/student.py): one pass per block
    hybrid              the student's output as Jacobi's initial guess: a few iterations
                        remove most of the student's error

Every decoder runs the blocks last to first and yields the sequence after
each, [Z_{n−1}, …, Z_0 = x], so progressive displays and the plain decode
share one loop. Iteration counts go into `stats` (per block, in that order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from .jacobi import check_jacobi, jacobi_reverse

DECODERS = ("sequential", "sequential_nocache", "jacobi", "distilled", "hybrid")
NEEDS_STUDENT = ("distilled", "hybrid")


@dataclass(frozen=True)
class Jacobi:
    """Settings of the "jacobi" and "hybrid" decoders (farmer.jacobi.jacobi_reverse)."""
    tol: float = 1e-4                   # stop a chunk when no value changes by more (in [−1, 1] units)
    max_iter: int | None = None         # iterations per chunk at most (None: the chunk length, exact)
    chunk: int | None = None            # Gauss–Seidel–Jacobi chunk in tokens (None: one chunk, plain Jacobi)

    def __post_init__(self):
        check_jacobi(self.tol, self.max_iter, self.chunk)


def check_decoder(model: nn.Module, decoder: str) -> None:
    """ValueError for an unknown decoder, or a student decoder on a model without a student."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder in NEEDS_STUDENT and getattr(model, "student", None) is None:
        raise ValueError(f"decoder={decoder!r} needs a distilled student: run `farmer distill` "
                         f"or load a checkpoint that contains one")


def inverse_steps(model: nn.Module, z: torch.Tensor, decoder: str = "sequential", jacobi: Jacobi = Jacobi(),
                  stats: dict | None = None) -> Iterator[torch.Tensor]:
    """z (B, N, d): the AF's output (after `model.unmix_latent`) -> yields the sequence (B, N, d)
    after each inverted block, last block first; the final one is the AF's input tokens."""
    check_decoder(model, decoder)
    student = getattr(model, "student", None)
    if decoder == "distilled" and not hasattr(student, "invert_block"):
        _, steps = student(z, return_intermediates=True)                      # an opaque student: all at once
        yield from steps
        return
    iterations = []
    for t in reversed(range(len(model.flow.blocks))):
        block = model.flow.blocks[t]
        if decoder in ("sequential", "sequential_nocache"):
            z = block.reverse(z, use_cache=(decoder == "sequential"))
        elif decoder == "distilled":
            z = student.invert_block(student.blocks[t], z)
        else:
            init = student.invert_block(student.blocks[t], z) if decoder == "hybrid" else None
            z, k = jacobi_reverse(block, z, init, tol=jacobi.tol, max_iter=jacobi.max_iter, chunk=jacobi.chunk)
            iterations.append(k)
        yield z
    if stats is not None and iterations:
        stats["jacobi_iterations"] = iterations                               # last block first
        stats["jacobi_mean_iterations"] = sum(iterations) / len(iterations)
        stats["jacobi"] = {"tol": jacobi.tol, "max_iter": jacobi.max_iter, "chunk": jacobi.chunk}


def invert(model: nn.Module, z: torch.Tensor, decoder: str = "sequential", jacobi: Jacobi = Jacobi(),
           stats: dict | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`inverse_steps` run to the end: (the AF's input tokens (B, N, d), the list of steps)."""
    steps = list(inverse_steps(model, z, decoder, jacobi, stats))
    return steps[-1], steps
