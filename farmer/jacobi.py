"""Parallel inversion of an AF block by fixed-point iteration: Jacobi and Gauss–Seidel–Jacobi.

The inverse of block t (flow.py, Eq. 8) in block order is

    x_0 = z_0,     x_i = z_i ⊙ exp(a_i(x_{<i})) + μ_i(x_{<i}),   i = 1 … N−1,

a triangular system: x_i depends only on earlier tokens. Jacobi iteration
evaluates the conditioner on a whole guess at once,

    x^{(k+1)}_i = z_i ⊙ exp(a_i(x^{(k)}_{<i})) + μ_i(x^{(k)}_{<i}),

one parallel transformer pass per iteration instead of N−1 single-token
steps. Token i is exact after i iterations whatever the start (each pass
fixes one more token), so N−1 iterations reproduce the sequential inverse;
in practice the change falls below a tolerance far sooner, because a trained
block's conditioner depends only weakly on distant tokens (Liu et al., 2025,
"Accelerate TarFlow Sampling with GS-Jacobi Iteration", arXiv 2505.12849).

Gauss–Seidel–Jacobi splits tokens 1 … N−1 into chunks of `chunk` tokens,
solved in order: Jacobi inside a chunk, with every earlier token final and
held in the KV cache, so a pass covers only the chunk. chunk = 1 is the
sequential inverse; chunk = N−1 (the default, None) is plain Jacobi.

Initial guess: x^{(0)} = z (a fresh, zero-initialised block is the identity,
so z is its exact inverse), or a caller's guess such as the distilled
student's output (the "hybrid" decoder).
"""
from __future__ import annotations

import math

import torch

from .flow import AFBlock


def check_jacobi(tol: float, max_iter: int | None, chunk: int | None) -> None:
    """ValueError naming a bad Jacobi setting."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"jacobi_tol must be a finite number >= 0 (largest change between iterations), got {tol!r}")
    for name, v in (("jacobi_max_iter", max_iter), ("jacobi_chunk", chunk)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive int or None, got {v!r}")


@torch.no_grad()
def jacobi_reverse(block: AFBlock, z: torch.Tensor, init: torch.Tensor | None = None, *, tol: float = 1e-4,
                   max_iter: int | None = None, chunk: int | None = None) -> tuple[torch.Tensor, int]:
    """Invert one AF block by (Gauss–Seidel–)Jacobi iteration.

    z: (B, N, d) the block's output in raster order; init: (B, N, d) the
    initial guess for its input (None: z). Each chunk iterates until the
    largest change of any value in the batch is below `tol`, or `max_iter`
    iterations, or its own length (then it is exact). Leading tokens of a
    chunk whose change fell below `tol` (and all before them) are frozen:
    the keys and values this pass computed for them (from inputs that moved
    by less than `tol`) stay in the cache, and later passes skip them. With
    tol = 0 nothing is frozen early and the result is exact.
    Returns x (B, N, d) in raster order and the number of iterations
    (conditioner passes, summed over chunks).
    """
    check_jacobi(tol, max_iter, chunk)
    dtype = block.proj_out.weight.dtype
    zo = block.order(z).to(dtype)                                              # (B, N, d) block order
    B, N, d = zo.shape
    x = (zo if init is None else block.order(init).to(dtype)).clone()          # x^{(0)}
    x[:, 0] = zo[:, 0]                                                         # token 0 passes unchanged
    pos = block.ordered_pos()                                                  # (N, W)
    size = max(N - 1, 1) if chunk is None else chunk
    cache = block.trunk.new_cache()                                            # keys/values of positions < s − 1
    iterations = 0
    for start in range(1, N, size):                                            # chunk: tokens start … e − 1
        s, e = start, min(start + size, N)
        limit = e - s if max_iter is None else min(max_iter, e - s)
        for _ in range(limit):
            # tokens s … e−1 are read off the conditioner's outputs at positions s−1 … e−2
            trial = cache.fork()
            mu, a = block.shift_params(x[:, s - 1:e - 1], pos[s - 1:e - 1], cache=trial)
            new = zo[:, s:e] * torch.exp(a) + mu                               # (B, e − s, d)
            change = (new - x[:, s:e]).abs().amax(dim=(0, 2))                  # (e − s,) per token
            x[:, s:e] = new
            iterations += 1
            if change.max().item() < tol:
                break
            moving = (change >= tol).nonzero()
            frozen = int(moving[0]) if len(moving) else e - s                 # leading tokens that settled
            if frozen:
                # keep this pass's keys/values of their positions: computed from inputs that moved by < tol
                cache = trial.truncate(cache.length + frozen)
                s += frozen
        if e < N:                                                              # later chunks attend to this one
            block.shift_params(x[:, s - 1:e - 1], pos[s - 1:e - 1], cache=cache)
    return block.order(x), iterations
