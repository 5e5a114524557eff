"""The one-step student: the AF inverse as one parallel pass per block (DESIGN §1.7, the paper's §3.5).

Inverting the AF is sequential: N single-token steps in each of n blocks.
The student G = g_1 ∘ … ∘ g_n replaces each block's N-step inverse with ONE
parallel pass. g_t is a copy of teacher block f_t whose attention is made
bidirectional, and it reads the block's OUTPUT z instead of its input x:

    teacher inverse  x_i = z_i ⊙ exp(a(x_{<i})) + μ(x_{<i})      (needs x_{<i}: sequential)
    student g_t      x_i = z_i ⊙ exp(a_i(z))    + μ_i(z)         (all of z known: one pass)

This file holds the architecture only, so that checkpoint loading can build
one without importing the training loop; `farmer.distill` trains it.

Decisions where the paper is silent:
- The shift and the first-token rule are kept: the transformer output at
  position i−1 parameterises token i, and token 1 passes unchanged. Token 1
  is then exact (x_1 = z_1 for the teacher too), and the copied weights line
  up with the positions they were trained for, so the fresh student is "the
  teacher's conditioner evaluated on z instead of x" rather than an arbitrary
  start. It is not exactly one Jacobi step from x = z: with bidirectional
  attention the output at i−1 may read z_i and everything after it.
- The student keeps the teacher's per-block token order (identity / reversed).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from .flow import AFBlock, AutoregressiveFlow

if TYPE_CHECKING:  # pragma: no cover
    from .model import Farmer


def _shift_right(t: torch.Tensor) -> torch.Tensor:
    """(B, N, d): position i takes the value of position i−1; position 0 gets zeros."""
    return torch.cat([torch.zeros_like(t[:, :1]), t[:, :-1]], dim=1)


class OneStepInverse(nn.Module):
    """The student G = g_1 ∘ … ∘ g_n: one bidirectional pass per block inverts the AF.

    `blocks[t]` is g_{t+1}, the one-step inverse of the teacher's `flow.blocks[t]`
    (same architecture and parameter names, attention not causal).
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.blocks = AutoregressiveFlow(cfg, causal=False).blocks            # n × AFBlock(causal=False)

    @staticmethod
    def invert_block(block: AFBlock, z: torch.Tensor) -> torch.Tensor:
        """g_t: z (B, N, d) output of teacher block t -> its input estimate x (B, N, d)."""
        zo = block.order(z).to(block.proj_out.weight.dtype)                   # (B, N, d) block order
        mu, a = block.shift_params(zo, block.ordered_pos())                    # (B, N, d), from all of z
        mu, a = _shift_right(mu), _shift_right(a)                              # token 0: μ = 0, a = 0
        return block.order(zo * torch.exp(a) + mu)                             # the inverse of Eq. 8

    def forward(self, z: torch.Tensor, return_intermediates: bool = False):
        """z (B, N, d) latents in raster order -> x tokens (B, N, d).

        With return_intermediates=True also returns [Z̃_{n−1}, …, Z̃_0 = x], the
        sequence after each student block (the same layout as `flow.reverse`).
        """
        steps = []
        for block in reversed(self.blocks):
            z = self.invert_block(block, z)
            steps.append(z)
        return (z, steps) if return_intermediates else z


def make_student(model: "Farmer") -> OneStepInverse:
    """A student for `model`: a copy of its flow blocks with bidirectional attention,
    on the teacher's device and dtype. This is both the distillation start and the
    skeleton `farmer.checkpoint.load` fills from `student.safetensors`."""
    student = OneStepInverse(model.cfg)
    student.blocks.load_state_dict(model.flow.blocks.state_dict())
    p = next(model.flow.parameters())
    return student.to(device=p.device, dtype=p.dtype).eval()
