"""Likelihood units: the discrete-data NLL bound and bits/dim (DESIGN §1.6).

Pixels q ∈ {0..255} are mapped to x = (q + u)/128 − 1 with u ~ U[0, 1)^D. The
change of variables from q + u to x has Jacobian (1/128)^D, so a density p_x on
[−1, 1]^D gives −log P(q) ≤ E_u[−log p_x(x)] + D·ln 128; bits/dim divides by
D·ln 2. Kept apart from `likelihood.py` so that `model.py` can use these
without importing the estimators that call the model.
"""
from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)
LN128 = math.log(128.0)


def discrete_nll(log_px: torch.Tensor, data_dim: int) -> torch.Tensor:
    """−log p_x(x) + D·ln 128: the NLL bound in nats of the uint8 image, (B,) -> (B,)."""
    return -log_px + data_dim * LN128


def bits_per_dim(nll_nats: torch.Tensor, data_dim: int) -> torch.Tensor:
    """nats per image -> bits per dimension."""
    return nll_nats / (data_dim * LN2)
