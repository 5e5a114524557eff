"""Training throughput against the machine's matmul peak (DESIGN §6): images/s and achieved FLOP/s.

FLOPs of a training step are counted by torch's FlopCounterMode (matmuls and
attention, forward + backward, 2 FLOPs per multiply-add); elementwise work is
not counted, so "achieved" is a lower bound on the work done. The peak is a
large square matmul timed in the same dtype on the same device and threads.
Used by `farmer bench train` and benchmarks/train_throughput.py.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import FarmerConfig, TrainConfig
from .data import load_synthetic
from .model import Farmer
from .train import ema_update, make_optimizer, noisy_batch, set_precision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 1.0,
                device: str | torch.device = "cpu") -> float:
    """Measured GFLOP/s of an n×n @ n×n matmul in `dtype` (best of repeated runs for ~`seconds`)."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b                                                                 # warm-up (thread pools, kernels)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == float("inf"):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def train_throughput(model_cfg: FarmerConfig, batch_size: int = 64, precision: str = "fp32", steps: int = 5,
                     warmup: int = 2, device: str | torch.device = "cpu", seed: int = 0,
                     compile: bool = False) -> dict[str, Any]:
    """Time `steps` full training steps (noise, forward, backward, clip, AdamW, EMA) after `warmup` steps.

    compile=True runs the loss (forward; backward through AOTAutograd) under
    torch.compile; its compilation happens in the warm-up and is reported as
    "warmup_seconds", not timed. Returns {"images_per_s", "seconds_per_step",
    "gflop_per_step", "achieved_gflops", ...}.
    """
    device = torch.device(device)
    cfg = TrainConfig(batch_size=batch_size, precision=precision, seed=seed, steps=warmup + steps).validate()
    torch.manual_seed(seed)
    model = Farmer(model_cfg).to(device).train()
    ema = Farmer(model_cfg).to(device).eval().requires_grad_(False)
    set_precision(model, precision)
    opt = make_optimizer(model, cfg)
    data = load_synthetic("train", model_cfg.image_size, model_cfg.channels, model_cfg.num_classes, n=batch_size)
    x_u8, y = data.images.to(device), data.labels.to(device) if model_cfg.num_classes else None

    loss_fn = torch.compile(model.loss) if compile else model.loss

    def step(i: int, counted: bool = False) -> None:
        x = noisy_batch(x_u8, cfg, i, list(range(batch_size)), batch_size)
        loss, _ = (model.loss if counted else loss_fn)(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, model, cfg.ema_decay, i)

    with FlopCounterMode(display=False) as counter:                    # one counted step (also a warm-up)
        step(0, counted=True)
    flops = counter.get_total_flops()
    t_warm = time.perf_counter()
    for i in range(1, warmup):
        step(i)
    _sync(device)
    warm_s = time.perf_counter() - t_warm
    t = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    _sync(device)
    sec = (time.perf_counter() - t) / steps
    return {"precision": precision, "batch_size": batch_size, "steps_timed": steps,
            "seconds_per_step": sec, "images_per_s": batch_size / sec,
            "gflop_per_step": flops / 1e9, "achieved_gflops": flops / sec / 1e9,
            "parameters": model.num_parameters()["total"], "device": str(device),
            "threads": torch.get_num_threads(), "compiled": compile, "warmup_seconds": warm_s}
