"""One-step distillation of the AF inverse (DESIGN §1.7, the paper's §3.5 and Algorithm 2).

The student's architecture is in farmer/student.py; this file trains it.

Training (Algorithm 2): record the teacher's forward path Z_0 = x, …, Z_n;
perturb the end, Z̃_n = Z_n + s·ε with s ~ U[0, 0.3] per image; run the
student blocks in reverse order, each on its own previous output
Z̃_{t−1} = g_t(Z̃_t) (gradients flow along that whole path); minimise
(1/n) Σ_t mean‖Z̃_{t−1} − Z_{t−1}‖². The teacher is frozen; the AR is not
distilled.

Resume state (optimizer moments, step, random generator) is stored without
pickle: tensors in `distill_state.safetensors`, the rest in
`distill_state.json`; the student weights themselves go to
`student.safetensors` via `farmer.checkpoint.save_student`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn as nn

from . import checkpoint as ckpt
from .data import dequantize_uniform, make_generator
from .decoder_error import reconstruction_error  # noqa: F401  (re-exported: decoder errors live there)
from .flow import AutoregressiveFlow
from .student import OneStepInverse, make_student  # noqa: F401  (re-exported: the student lives in student.py)

if TYPE_CHECKING:  # pragma: no cover
    from .model import Farmer

STATE_TENSORS, STATE_JSON = "distill_state.safetensors", "distill_state.json"
_FORMAT = "farmer-distill-state/1"


# ----------------------------------------------------------------------------- the loss
def distill_loss(flow: AutoregressiveFlow, student: OneStepInverse, x: torch.Tensor,
                 max_noise: float = 0.3,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2 on one batch of tokens x (B, N, d) (dequantised, in [−1, 1]).

    Returns the loss (scalar) and the per-block terms (n,), entry t−1 being
    mean‖Z̃_{t−1} − Z_{t−1}‖² for block t.
    """
    with torch.no_grad():
        _, _, path = flow(x, return_path=True)                                 # [Z_0 = x, …, Z_n]
    z = path[-1]
    B = z.shape[0]
    s = max_noise * torch.rand((B, 1, 1), generator=generator, device=z.device, dtype=z.dtype)
    z = z + s * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)  # Z̃_n
    n = len(student.blocks)
    terms = [None] * n
    for t in reversed(range(n)):                                               # g_n first
        z = student.invert_block(student.blocks[t], z)                         # Z̃_t (0-based input of block t)
        terms[t] = (z - path[t]).square().mean()
    per_block = torch.stack(terms)                                             # (n,)
    return per_block.mean(), per_block


# ----------------------------------------------------------------------------- the loop
@dataclass
class DistillConfig:
    """Settings of `farmer distill`. Every field is JSON-serialisable."""

    steps: int = 2000             # total optimiser steps (resume continues up to this)
    batch_size: int = 64          # images per step
    lr: float = 2e-4              # AdamW learning rate after warm-up (constant: resuming with
                                  # more steps does not change the schedule already run)
    warmup: int = 100             # linear warm-up steps
    weight_decay: float = 0.0     # the student starts at the teacher; no pull towards 0
    max_noise: float = 0.3        # s ~ U[0, max_noise] perturbs the end point (paper: 0.3)
    grad_clip: float = 1.0        # global gradient-norm clip (0 = off)
    seed: int = 0                 # data order, dequantisation and perturbation noise

    def validate(self) -> "DistillConfig":
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DistillConfig: {name} must be a positive int, got {v!r}")
        if not (self.lr > 0 and self.warmup >= 0 and self.weight_decay >= 0 and self.max_noise >= 0
                and self.grad_clip >= 0):
            raise ValueError(f"DistillConfig: need lr > 0 and warmup, weight_decay, max_noise, "
                             f"grad_clip >= 0, got {self}")
        return self


class Distiller:
    """Holds the student, its optimiser and the random state; one `train_step` per batch."""

    def __init__(self, model: "Farmer", cfg: DistillConfig, student: OneStepInverse | None = None):
        self.model, self.cfg = model, cfg.validate()
        self.model.eval()                      # the teacher is frozen: its path is computed under no_grad
        self.student = (student or make_student(model)).train().requires_grad_(True)
        self.device = next(self.student.parameters()).device
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                     weight_decay=cfg.weight_decay)
        self.generator = make_generator(cfg.seed, self.device)
        self.step = 0

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / self.cfg.warmup) if self.cfg.warmup else self.cfg.lr

    def train_step(self, images: torch.Tensor) -> dict:
        """images: uint8 (B, C, H, W). Returns {"loss": float, "block_losses": [n floats], "lr"}."""
        x = dequantize_uniform(images.to(self.device), generator=self.generator)   # (B, C, H, W)
        tokens = self.model.image_to_tokens(x)[0].to(next(self.student.parameters()).dtype)  # AF input
        loss, per_block = distill_loss(self.model.flow, self.student, tokens,
                                       self.cfg.max_noise, self.generator)
        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return {"loss": float(loss.detach()), "block_losses": per_block.detach().tolist(), "lr": lr}

    # -- resume state without pickle ---------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors for safetensors, JSON-able metadata): optimiser moments, step, generator."""
        sd = self.opt.state_dict()
        tensors = {f"optim/{i}/{k}": v.detach().cpu().contiguous()
                   for i, st in sd["state"].items() for k, v in st.items()}
        tensors["rng/generator"] = self.generator.get_state().cpu()
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                  for g in sd["param_groups"]]
        meta = {"format": _FORMAT, "step": self.step, "config": dataclasses.asdict(self.cfg),
                "param_groups": groups}
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if meta.get("format") != _FORMAT:
            raise ValueError(f"distillation state has format {meta.get('format')!r}, expected {_FORMAT!r}")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in tensors.items():
            if key.startswith("optim/"):
                _, i, k = key.split("/")
                state.setdefault(int(i), {})[k] = v.to(self.device)
        groups = [dict(g, betas=tuple(g["betas"])) for g in meta["param_groups"]]
        self.opt.load_state_dict({"state": state, "param_groups": groups})
        for group in self.opt.param_groups:                                    # a changed setting wins
            group["weight_decay"] = self.cfg.weight_decay
        self.generator.set_state(tensors["rng/generator"])
        self.step = int(meta["step"])


def save_state(directory: str | os.PathLike, distiller: Distiller, **extra) -> None:
    """Write distill_state.safetensors + distill_state.json into `directory`, each atomically
    (temporary file, then rename); `extra` (JSON values, e.g. held-out errors) goes in the JSON."""
    directory = Path(directory)
    tensors, meta = distiller.state()
    meta.update(extra)
    ckpt.write_tensors(directory / STATE_TENSORS, tensors)
    ckpt.atomic_write_json(directory / STATE_JSON, meta)


def read_state(directory: str | os.PathLike, student: nn.Module | None = None
               ) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, meta) from `directory`, or None when there is no distillation state.

    With `student`, the file's header is checked first: optimizer moments shaped like the
    student's parameters and RNG bytes, nothing else (farmer.preflight)."""
    from .preflight import check_optimizer_state, read_header
    directory = Path(directory)
    if not (directory / STATE_TENSORS).exists() or not (directory / STATE_JSON).exists():
        return None
    if student is not None:
        check_optimizer_state(read_header(directory / STATE_TENSORS),
                              {k: tuple(p.shape) for k, p in student.named_parameters()},
                              directory / ckpt.STUDENT_FILE)
    return ckpt.read_tensors(directory / STATE_TENSORS), ckpt.read_json(directory / STATE_JSON)


def batch_stream(source, batch_size: int, seed: int = 0, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Endless uint8 batches (B, C, H, W), reshuffled every epoch.

    source: uint8 images (M, C, H, W), or a `farmer.data.ImageDataset` (its
    `get_batch`). Batch k depends only on (seed, k), so a run resumed at
    `start_step` sees exactly the batches the uninterrupted run would have seen.
    """
    M = len(source)
    per_epoch = max(1, M // batch_size)
    step = start_step
    while True:
        epoch, j = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(M, generator=g)
        idx = perm[j * batch_size:(j + 1) * batch_size]
        if idx.numel() < batch_size:                                           # fewer images than a batch
            idx = perm.repeat(math.ceil(batch_size / M))[:batch_size]
        yield source[idx] if isinstance(source, torch.Tensor) else source.get_batch(idx.tolist())[0]
        step += 1


# ----------------------------------------------------------------------------- `farmer distill`
def run(checkpoint: str | os.PathLike, overrides: dict | None = None, *, data: str | None = None,
        data_dir: str | None = None, eval_images: int = 1000, log_every: int = 50,
        save_every: int = 500, restart: bool = False, device: str = "cpu",
        say: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Distil the AF inverse of a checkpoint, resumably; what `farmer distill` runs.

    Writes student.safetensors (read back by `farmer.load`) and the resume
    state into the checkpoint directory every `save_every` steps and at the
    end. An existing state is resumed unless restart=True. Settings: the
    DistillConfig defaults for a fresh run, the saved ones on resume, with
    `overrides` (DistillConfig fields, e.g. {"steps": 4000}) on top. Data: `data` (a `farmer.data`
    name or image folder) or the data set the checkpoint was trained on; the
    held-out error uses the first `eval_images` test images.

    Returns {"step", "undistilled" (held-out errors of the fresh copy, fresh runs
    only), "distilled" (held-out errors of the student)}.
    """
    from .data import load_dataset
    path = ckpt.resolve(checkpoint)
    meta, _ = ckpt.read_config(path)
    model = ckpt.load(path, device=device)
    has_state = not restart and (path / STATE_TENSORS).exists() and (path / STATE_JSON).exists()
    if has_state and model.student is None:
        raise ValueError(f"{path} has a distillation state but no {ckpt.STUDENT_FILE}; pass --restart")
    saved = read_state(path, model.student) if has_state else None
    base = DistillConfig(**saved[1]["config"]) if saved else DistillConfig()
    cfg = dataclasses.replace(base, **(overrides or {})).validate()
    if cfg.warmup > cfg.steps:
        say(f"warning: the warm-up ({cfg.warmup} steps) is longer than the run ({cfg.steps} steps): the learning "
            f"rate ends at {cfg.lr * cfg.steps / cfg.warmup:.2g} of {cfg.lr:g}; pass --warmup {cfg.steps // 10} "
            f"or fewer, or more --steps")
    distiller = Distiller(model, cfg, student=model.student if saved else None)
    if saved:
        distiller.load_state(*saved)
        say(f"resuming distillation of {path} at step {distiller.step}")

    name = data or (meta.get("train") or {}).get("data")
    if name is None:
        raise ValueError(f"{path} does not record its data set: pass --data (fashion-mnist | digits | PATH)")
    train_ds = load_dataset(name, "train", model.cfg, path=data_dir)
    test_ds = load_dataset(name, "test", model.cfg, path=data_dir)
    held_out = test_ds.get_batch(list(range(min(eval_images, len(test_ds)))))[0]
    say(f"farmer distill {path}: {dataclasses.asdict(cfg)}, data {train_ds.name} "
        f"({len(train_ds)} images), held-out {held_out.shape[0]} from {test_ds.name}")
    result: dict = {k: saved[1][k] for k in ("undistilled",) if saved and k in saved[1]}
    if distiller.step == 0:
        result["undistilled"] = reconstruction_error(model, held_out, make_student(model), exact=False)
        say(f"held-out RMSE of the undistilled copy: {result['undistilled']['rmse_gray']:.2f} grey levels")

    def save() -> None:
        ckpt.save_student(path, distiller.student)
        save_state(path, distiller, **{k: v for k, v in result.items() if k != "step"})

    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.steps, initial=distiller.step, desc="distill", disable=not progress)
    stream = batch_stream(train_ds, cfg.batch_size, cfg.seed, start_step=distiller.step)
    while distiller.step < cfg.steps:
        out = distiller.train_step(next(stream))
        bar.update(1)
        bar.set_postfix(loss=f"{out['loss']:.3e}")
        if distiller.step % log_every == 0 or distiller.step == cfg.steps:
            blocks = " ".join(f"{v:.2e}" for v in out["block_losses"])
            bar.write(f"step {distiller.step}/{cfg.steps} loss {out['loss']:.4e} "
                      f"(per block {blocks}) lr {out['lr']:.2e}")
        if save_every and distiller.step % save_every == 0 and distiller.step < cfg.steps:
            save()
    bar.close()
    model.student = distiller.student.eval()
    result["distilled"] = reconstruction_error(model, held_out)
    result["step"] = distiller.step
    save()
    d = result["distilled"]
    say(f"held-out reconstruction vs the exact inverse (encoded test images; pixels, clipped to [-1, 1]): RMSE "
        f"{d['rmse_gray']:.2f} grey levels, max |err| {d['max_abs_gray']:.1f} grey levels, "
        f"{100 * d['changed_pixels']:.1f}% of pixels differ after quantising; in the flow's input space MSE "
        f"{d['flow_mse']:.3e}, max |err| {d['flow_max_abs']:.3f}; cached sequential inverse "
        f"{d['exact_rmse_gray']:.1e} grey levels. On sampled latents the error is larger: "
        f"farmer.decoder_error.sampled_decoder_error")
    say(f"saved {path / ckpt.STUDENT_FILE}; sample with decoder='distilled'")
    return result
