"""The training loop (DESIGN §1.4): one flat loop in the spirit of nanoGPT's train.py.

    for step in range(start, steps):
        batch  <- data order of epoch e = step // steps_per_epoch (seed + e), position step % steps_per_epoch
        x      <- uniform dequantisation or Gaussian noise (σ on a cosine schedule)
        loss   <- model.loss(x, y)  (Eq. 14: −log p(x) / D, the three terms logged separately)
        skip the step if the loss or the gradient norm is not finite; abort after max_bad_steps in a row
        AdamW step at the warm-up + cosine learning rate, gradient clipping, EMA update
        every ckpt_every steps: an atomic checkpoint (EMA weights + training state), a loss-curve PNG
        where a uniform_tail begins: the EMA weights as a plain checkpoint in OUT/curriculum_end/

Determinism. Every random number of a step is derived from (seed, step):
the data order from seed + epoch (a DistributedSampler), the noise from one
stream seeded by (seed, step) over the global batch (each image takes the
row of its batch position), and the global torch RNG (label dropout,
dropout) is re-seeded from (seed, step, rank) at each step. Nothing carries
over from one step to the next except weights, EMA and optimizer state, all
of which the checkpoint holds (with the RNG states, for anything else). A run
resumed from a checkpoint therefore continues exactly where an uninterrupted
run would be (tested bit for bit after SIGKILL), and under DDP the union of
the ranks' batches and their noise equals the single-process batch (rank r
takes positions r, r+W, …). Label dropout differs between the two, being
drawn per rank.

Distributed: under `torchrun --nproc_per_node N` (WORLD_SIZE > 1) the model
is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), the global
batch is split over the ranks and only rank 0 logs and writes files. With
`fsdp` the model (and the EMA) is sharded with FSDP2 instead (farmer/sharding.py):
the same batches and noise, every rank writing its shards of each checkpoint
and rank 0 the consolidated export; the EMA update runs on the local shards.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data.distributed import DistributedSampler

from . import checkpoint as ckpt
from . import sharding
from .config import FarmerConfig, TrainConfig
from .data_init import data_dependent_init_
from .distributed import Dist, peak_per_rank, setup, teardown
from .data import ImageDataset, cosine_sigma, iterate_batches, load_dataset, make_generator
from .layers import Transformer, set_activation_checkpointing
from .likelihood import LN2, LN128
from .model import Farmer
from .run_folder import check_resume_mode, claim_for_ranks, truncate_metrics


class TrainingAborted(RuntimeError):
    """Too many non-finite losses in a row; the last good checkpoint is left in place."""


@dataclass
class TrainResult:
    model: Farmer                  # the raw (optimised) weights, unwrapped
    ema: Farmer                    # the EMA weights
    step: int                      # steps completed
    checkpoint: Path | None        # the last checkpoint written (None for a dry run)
    bad_steps: int                 # non-finite steps skipped in the whole run
    metrics: dict[str, Any] = field(default_factory=dict)   # the last metrics.jsonl record


# ============================================================================ schedules and EMA
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0 to lr over warmup_steps, then cosine decay to lr_min at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - 1 - cfg.warmup_steps, 1)
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema ← d·ema + (1−d)·model with d = min(decay, (1+step)/(10+step)): early EMA tracks the fast changes."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def set_precision(model: nn.Module, precision: str) -> None:
    """bf16 autocast for every transformer trunk; proj_out, affine maps and log-dets stay float32."""
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    for m in model.modules():
        if isinstance(m, Transformer):
            m.autocast_dtype = dtype


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on ≥2-D tensors (matrices, embeddings), none on biases and norms (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (splitmix64-style), so nearby (step, m) give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def noisy_batch(x: torch.Tensor, cfg: TrainConfig, step: int, positions: list[int],
                global_batch: int) -> torch.Tensor:
    """uint8 (b, C, H, W) -> float32 (b, C, H, W): image j gets the noise of global batch position positions[j].

    The noise of the whole global batch is one stream seeded by (seed, step),
    drawn in chunks of at most 2^24 values whose size does not depend on the
    number of processes; each rank keeps its own rows. So a DDP rank and a
    single process give an image the same noise, and a resumed step the same
    noise as the uninterrupted one.
    """
    g = make_generator(_seed(cfg.seed, step), x.device)
    shape = tuple(x.shape[1:])
    rows = max(1, (1 << 24) // x[0].numel())
    noise = torch.empty(x.shape, device=x.device)                              # (b, C, H, W)
    sigma = noise_sigma(step, cfg)
    draw = torch.rand if sigma is None else torch.randn
    for c0 in range(0, global_batch, rows):
        chunk = draw((min(rows, global_batch - c0), *shape), generator=g, device=x.device)
        mine = [(j, m - c0) for j, m in enumerate(positions) if c0 <= m < c0 + chunk.shape[0]]
        if mine:
            local, row = zip(*mine)
            noise[list(local)] = chunk[list(row)]
    if sigma is None:                                                          # data.dequantize_uniform
        return (x.float() + noise) / 128.0 - 1.0
    return (x.float() + 0.5) / 128.0 - 1.0 + sigma * noise                    # data.add_gaussian_noise


def noise_sigma(step: int, cfg: TrainConfig) -> float | None:
    """The Gaussian σ of `step`, or None where the step uses uniform dequantisation.

    With noise="gaussian" σ follows the cosine schedule from sigma_max to
    sigma_min over the Gaussian phase: the whole run, or the steps before a
    `uniform_tail` (the last fraction of the run, dequantised uniformly).
    """
    if cfg.noise == "uniform":
        return None
    gaussian_steps = curriculum_steps(cfg)
    if step >= gaussian_steps:
        return None
    return cosine_sigma(step, gaussian_steps, cfg.sigma_max, cfg.sigma_min)


def curriculum_steps(cfg: TrainConfig) -> int:
    """How many steps the Gaussian curriculum lasts: all of them, less a `uniform_tail` (0 for noise="uniform")."""
    if cfg.noise == "uniform":
        return 0
    return cfg.steps - int(round(cfg.uniform_tail * cfg.steps))


CURRICULUM_END = "curriculum_end"   # OUT/curriculum_end/: the EMA weights where a uniform tail begins


class _LossModule(nn.Module):
    """forward(x, y) = model.loss(x, y): DistributedDataParallel syncs gradients only through forward()."""

    def __init__(self, model: Farmer):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.loss(x, y)


def _write(line: str) -> None:
    """Print a log line to stdout without breaking a tqdm bar on stderr."""
    from tqdm.auto import tqdm
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


# ============================================================================ the loop
def train(model_cfg: FarmerConfig, cfg: TrainConfig, out_dir: str | os.PathLike | None = None, *,
          resume: bool | str = False, replace: bool = False, dry_run: bool = False, progress: bool = True,
          dataset: ImageDataset | None = None, log: Callable[[str], None] | None = None,
          checkpoints: bool = True) -> TrainResult:
    """Train a FARMER model; see the module docstring. Files written under out_dir (rank 0):

    metrics.jsonl (one JSON record per log_every steps), checkpoints/step_*/ and
    checkpoints/latest, loss_curve.png, samples/step_*.png, and with a uniform_tail
    curriculum_end/ (the EMA weights at the last Gaussian step, kept however
    many checkpoints are pruned). A run folder belongs
    to one run (farmer/run_folder.py): resume=False refuses a folder that holds
    a run unless replace=True (which deletes that run's files first);
    resume=True continues out_dir's newest checkpoint and refuses a folder
    without one; resume="auto" resumes if there is a checkpoint, else starts.
    dry_run=True runs two steps into a temporary folder and deletes it.
    `dataset` overrides cfg.data. checkpoints=False writes no checkpoint at all
    (benchmarks of the step).
    """
    model_cfg, cfg = model_cfg.validate(), cfg.validate()
    check_resume_mode(resume)
    dd = setup(cfg.device, cfg.fsdp)
    say = (log or _write) if dd.main else (lambda s: None)
    tmp_out = None
    if dry_run or out_dir is None:
        tmp_out = out_dir = tempfile.mkdtemp(prefix="farmer-dry-run-")
        cfg = cfg.replace(steps=min(cfg.steps, 2)) if dry_run else cfg
        resume, replace = False, False
    out = Path(out_dir)
    ok = False
    try:
        last = claim_for_ranks(out, resume, replace, dd)
        result = _train(model_cfg, cfg, out, dd, say, last, dataset, progress, keep_files=tmp_out is None,
                        checkpoints=checkpoints)
        ok = True
        return result
    finally:
        if tmp_out is not None and dd.main:
            shutil.rmtree(tmp_out, ignore_errors=True)
        teardown(dd, ok)


def _train(model_cfg: FarmerConfig, cfg: TrainConfig, out: Path, dd: Dist, say: Callable[[str], None],
           last: Path | None, dataset: ImageDataset | None, progress: bool, keep_files: bool,
           checkpoints: bool = True) -> TrainResult:
    from tqdm.auto import tqdm
    data = dataset if dataset is not None else load_dataset(cfg.data, "train", model_cfg, cfg.data_dir,
                                                            strict=cfg.strict_data, crop=cfg.crop, seed=cfg.seed)
    skipped = getattr(data, "skipped_at_scan", {})
    if skipped:
        say(f"data: {len(skipped)} file(s) left out, not readable images: "
            + "; ".join(f"{p} ({why})" for p, why in list(skipped.items())[:20]) + (" …" if len(skipped) > 20 else ""))
    B, W = cfg.batch_size, dd.world
    if B % W:
        raise ValueError(f"batch_size {B} must be divisible by the number of processes {W}")
    b = B // W                                                          # local batch
    steps_per_epoch = len(data) // B
    if steps_per_epoch == 0:
        raise ValueError(f"data set {getattr(data, 'name', '')} has {len(data)} images, fewer than batch_size {B}")

    if last is not None:                                                # before anything is built
        _check_resumable(last, model_cfg, cfg.fsdp)
    if cfg.fsdp and dd.device.type == "cpu":
        sharding.map_large_allocations()                                # freed shards go back to the OS at once
    torch.manual_seed(cfg.seed)                                         # identical init on every rank
    model = Farmer(model_cfg).to(dd.device)
    if cfg.data_init:                                                  # a resumed run overwrites it below
        _data_init(model, data, cfg, dd.device, say)
    # ema_decay 0: the EMA would equal the weights, so none is kept (the export is the raw weights)
    ema = model if cfg.ema_decay == 0 else copy.deepcopy(model).eval().requires_grad_(False)
    export = "raw" if ema is model else cfg.export_weights
    set_precision(model, cfg.precision)
    if cfg.activation_checkpointing:
        set_activation_checkpointing(model)
    if cfg.fsdp:                                                        # shard before the optimizer sees the params
        mesh = sharding.device_mesh(dd.device)
        bf16 = cfg.precision == "bf16" and dd.device.type == "cuda"
        sharding.shard_model(model, mesh, bf16=bf16)
        if ema is not model:
            sharding.shard_model(ema, mesh)
        sharding.release_freed_memory()
    opt = make_optimizer(model, cfg)
    start, bad_total = 0, 0

    if last is not None:
        start, bad_total = _restore(last, model, ema, opt, model_cfg, cfg, say, data)
    if dd.main:
        out.mkdir(parents=True, exist_ok=True)
        truncate_metrics(out / "metrics.jsonl", start)
    runner: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]] = _LossModule(model)
    if cfg.fsdp:
        runner = model.loss                                             # the root unit all-gathers in forward
    elif W > 1:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[dd.device.index] if dd.device.type == "cuda" else None)
    clip = sharding.clip_grad_norm_ if cfg.fsdp else lambda m, c: nn.utils.clip_grad_norm_(m.parameters(), c)

    D = model_cfg.data_dim
    sampler = DistributedSampler(range(len(data)), num_replicas=W, rank=dd.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    if cfg.warmup_steps >= cfg.steps and start < cfg.steps:
        say(f"warning: the warm-up ({cfg.warmup_steps} steps) is not shorter than the run ({cfg.steps} steps): the "
            f"learning rate ends at {lr_at(cfg.steps - 1, cfg):.2g} of {cfg.lr:g} and never decays; pass "
            f"--warmup-steps {cfg.steps // 10} or fewer, or more --steps")
    say(f"data {getattr(data, 'name', type(data).__name__)}: {len(data)} images, {steps_per_epoch} steps/epoch; "
        f"model {model.num_parameters()['total']:,} parameters; {W} process(es) on {dd.device}"
        f"{' (FSDP: weights, gradients and AdamW state sharded)' if cfg.fsdp else ''}; steps {start}..{cfg.steps}")
    bar = tqdm(total=cfg.steps, initial=start, disable=not (progress and dd.main), dynamic_ncols=True,
               file=sys.stderr, unit="step")
    acc, n_acc, n_steps, t0 = torch.zeros(4, dtype=torch.float64), 0, 0, time.perf_counter()
    grad_norm, in_a_row, record, epoch_cache = 0.0, 0, {}, (-1, [])
    bad_files: dict[str, str] = getattr(data, "bad_files", {})         # files that failed to decode (folders)
    n_reported = len(bad_files)                                         # those known at resume were logged
    last_ckpt = last

    def batches(from_step: int):
        """(step, global positions of this rank, (x uint8, y)) from `from_step` to the end."""
        nonlocal epoch_cache
        step = from_step
        while step < cfg.steps:
            epoch, k0 = divmod(step, steps_per_epoch)
            if epoch_cache[0] != epoch:
                sampler.set_epoch(epoch)                                # permutation seeded by seed + epoch
                epoch_cache = (epoch, list(sampler))
                if hasattr(data, "set_epoch"):                          # random crops of this epoch
                    data.set_epoch(epoch)
            n = min(steps_per_epoch - k0, cfg.steps - step)
            idx = [epoch_cache[1][k * b:(k + 1) * b] for k in range(k0, k0 + n)]
            for x, y in iterate_batches(data, idx, cfg.num_workers):
                yield step, [dd.rank + W * j for j in range(b)], x, y
                step += 1

    for step, positions, x_u8, y in batches(start):
        if len(bad_files) > n_reported:                                 # each unreadable file, logged once
            for path, why in list(bad_files.items())[n_reported:]:
                say(f"step {step}: skipped unreadable file {path} ({why}); its batch took another training image")
            n_reported = len(bad_files)
        model.train()
        x = noisy_batch(x_u8.to(dd.device), cfg, step, positions, B)
        y = y.to(dd.device) if model_cfg.num_classes else None
        torch.manual_seed(_seed(cfg.seed, step, dd.rank, 1))             # label dropout / dropout of this step
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, terms = runner(x, y)
        stats = torch.stack([loss.detach().double(), *(terms[k].detach().double().mean() / D for k in
                             ("prior_informative", "prior_redundant", "logdet")),
                             (~torch.isfinite(loss.detach())).double()]).cpu()
        if W > 1:                                                       # same verdict and logs on every rank
            dist.all_reduce(stats)
            stats[:4] /= W
        ok = stats[4].item() == 0
        if ok:
            loss.backward()
            gn = clip(model, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            ok = bool(torch.isfinite(gn))
        if ok:
            grad_norm = float(gn)
            opt.step()
            if ema is not model:
                ema_update(ema, model, cfg.ema_decay, step)
            in_a_row = 0
            acc += stats[:4]
            n_acc += 1
        else:
            bad_total += 1
            in_a_row += 1
            say(f"step {step}: non-finite loss or gradient, step skipped ({in_a_row} in a row, {bad_total} total)")
            if in_a_row >= cfg.max_bad_steps:
                raise TrainingAborted(
                    f"training aborted at step {step}: {in_a_row} non-finite losses in a row (max_bad_steps = "
                    f"{cfg.max_bad_steps}). The last good checkpoint, {last_ckpt or 'none (none written yet)'}, is "
                    f"left as it was. Try a lower --lr, a longer --warmup-steps, --grad-clip 1 or --precision fp32.")
        opt.zero_grad(set_to_none=True)
        done, n_steps = step + 1, n_steps + 1
        bar.update(1)

        logged = dd.main and (done % cfg.log_every == 0 or done == cfg.steps) and n_acc > 0
        if logged:          # averages over the good steps since the last record; images/s over all steps
            dt = time.perf_counter() - t0
            m = (acc / n_acc).tolist()
            record = {"step": done, "epoch": step // steps_per_epoch, "loss": m[0], "bpd": (m[0] + LN128) / LN2,
                      "prior_informative": m[1], "prior_redundant": m[2], "logdet": m[3], "lr": lr,
                      "grad_norm": grad_norm, "images_per_s": n_steps * B / dt, "bad_steps": bad_total,
                      "bad_files": len(bad_files) + len(skipped),
                      "sigma": noise_sigma(step, cfg) or 0.0, "time": time.time()}
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(bpd=f"{record['bpd']:.3f}", img_s=f"{record['images_per_s']:.0f}")
            acc.zero_()
            n_acc = n_steps = 0
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            grid_model = sharding.gather_model(ema, dd.main) if cfg.fsdp else ema      # collective when sharded
            if dd.main:
                _sample_grid(grid_model, cfg, out / "samples" / f"step_{done:08d}.png", say)
        if checkpoints and done == curriculum_steps(cfg) < cfg.steps:
            # the same run's model before its tail: the tail's effect is then measured on one run
            end_model = sharding.gather_model(ema, dd.main) if cfg.fsdp else ema      # collective when sharded
            if dd.main:
                ckpt.save_atomic(end_model, out / CURRICULUM_END, weights="ema", step=done, train=cfg.to_dict(),
                                 data=getattr(data, "name", None), metrics=record)
                say(f"curriculum ends at step {done}: its EMA weights -> {out / CURRICULUM_END}")
        if checkpoints and ((cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps):
            state = {"bad_steps": bad_total, "train": cfg.to_dict(), "bad_files": dict(bad_files)}
            meta = dict(train=cfg.to_dict(), data=getattr(data, "name", None), metrics=record)
            if cfg.fsdp:                                                # every rank writes its shards
                last_ckpt = sharding.save_run_checkpoint(out, done, model, ema, opt, dd.main, export=export,
                                                         keep=cfg.keep_checkpoints, state=state, **meta)
            elif dd.main:
                last_ckpt = ckpt.save_run_checkpoint(out, done, model, ema, opt, export=export,
                                                     keep=cfg.keep_checkpoints, state=state, **meta)
            if dd.main:
                plot_loss_curve(out / "metrics.jsonl", out / "loss_curve.png")
                say(f"checkpoint {last_ckpt}")
            if W > 1:
                dist.barrier()                                          # nobody races ahead of the files
        if logged:
            t0 = time.perf_counter()                                    # checkpoints and grids are not training time
    bar.close()
    peaks = peak_per_rank(dd)
    say(f"done: {cfg.steps} steps, {bad_total} skipped; " + (f"last checkpoint {last_ckpt}" if keep_files else
                                                             "dry run: nothing kept"))
    say("peak memory per rank: " + ", ".join(f"{p / 2**30:.2f} GiB" for p in peaks)
        + (" (CUDA max allocated)" if dd.device.type == "cuda" else " (resident set high-water mark)"))
    record = {**record, "peak_memory_per_rank": peaks}
    return TrainResult(model, ema, cfg.steps, last_ckpt if keep_files else None, bad_total, record)


def _data_init(model: Farmer, data: ImageDataset, cfg: TrainConfig, device: torch.device,
               say: Callable[[str], None]) -> None:
    """Fit the GMM heads to cfg.data_init training images (the same seeded pick on every rank)."""
    n = min(cfg.data_init, len(data))
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed))[:n].tolist()
    x_u8, _ = next(iterate_batches(data, [idx]))
    x = noisy_batch(x_u8.to(device), cfg, 0, list(range(n)), n)
    r = data_dependent_init_(model, x, seed=cfg.seed)
    say(f"data-dependent init: GMM heads fitted to {n} images, "
        f"{r['bpd_before']:.2f} -> {r['bpd_after']:.2f} bits/dim on them")


# ============================================================================ resume
def _check_resumable(path: Path, model_cfg: FarmerConfig, fsdp: bool) -> None:
    """The checkpoint's files are sound (header pre-flight, nothing allocated) and its config is `model_cfg`."""
    if sharding.is_sharded_checkpoint(path) != fsdp:
        raise ValueError(f"--resume: {path} was written by a run {'with' if not fsdp else 'without'} --fsdp "
                         f"({'sharded' if not fsdp else 'one-file'} training state); resume it "
                         f"{'with' if not fsdp else 'without'} --fsdp")
    _, saved_cfg = (sharding.check_sharded_checkpoint(path) if fsdp else ckpt.check_run_checkpoint(path))
    if saved_cfg != model_cfg:
        diff = {k: (v, getattr(model_cfg, k)) for k, v in saved_cfg.to_dict().items() if getattr(model_cfg, k) != v}
        raise ValueError(f"--resume: {path} was trained with a different model config "
                         f"(field: (checkpoint, now)) {diff}; resume with the same preset and flags")


def _restore(path: Path, model: Farmer, ema: Farmer, opt: torch.optim.Optimizer, model_cfg: FarmerConfig,
             cfg: TrainConfig, say: Callable[[str], None], data: ImageDataset) -> tuple[int, int]:
    """Load weights, EMA, optimizer and RNG from a run checkpoint; returns (step, bad steps so far).

    Files the run had found unreadable go back into `data.bad_files` (their replacements depend only
    on the item, so the batches are the same either way; this only spares re-reading them)."""
    _check_resumable(path, model_cfg, cfg.fsdp)
    js = (sharding.restore_run_checkpoint(path, model, ema, opt) if cfg.fsdp
          else ckpt.restore_run_checkpoint(path, model, ema, opt))
    if hasattr(data, "bad_files") and js.get("bad_files"):
        data.bad_files.update(js["bad_files"])
    changed = {k: (v, getattr(cfg, k)) for k, v in js.get("train", {}).items()
               if hasattr(cfg, k) and getattr(cfg, k) != v}
    if changed:
        say(f"--resume: training settings changed since the checkpoint (was, now): {changed}")
    say(f"resumed from {path} at step {js['step']}")
    return int(js["step"]), int(js.get("bad_steps", 0))


def _sample_grid(ema: Farmer, cfg: TrainConfig, path: Path, say: Callable[[str], None]) -> None:
    """A grid from the EMA model with fixed labels (cycling over classes) and a fixed seed, if a sampler exists."""
    try:
        from .sampling import sample
    except ImportError as e:
        say(f"sample grid skipped: no sampler ({e})")
        return
    nc = ema.cfg.num_classes
    labels = (torch.arange(cfg.sample_count) % nc).to(next(ema.parameters()).device) if nc else None
    try:
        imgs = sample(ema, labels, guidance="none", seed=cfg.seed, num_samples=cfg.sample_count)
    except Exception as e:                                    # noqa: BLE001 - a grid never stops training
        say(f"sample grid skipped: sampling failed ({type(e).__name__}: {e})")
        return
    save_image_grid(imgs, path, ncol=nc or 8)
    say(f"samples {path}")


# ============================================================================ pictures
def save_image_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int = 8, pad: int = 1) -> Path:
    """uint8 (B, C, H, W) images -> one PNG grid, `ncol` per row, `pad` black pixels between them."""
    from PIL import Image
    from .sampling import image_grid
    grid = image_grid(images, nrow=ncol, pad=pad)                       # (H', W', C)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def plot_loss_curve(metrics: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """Training bits/dim and the three loss terms (nats/dim) against step, from metrics.jsonl, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg      # no pyplot: no global backend state
    from matplotlib.figure import Figure
    recs = [json.loads(ln) for ln in Path(metrics).read_text().splitlines() if ln.strip()] \
        if Path(metrics).exists() else []
    if not recs:
        return None
    steps = [r["step"] for r in recs]
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, [r["bpd"] for r in recs])
    ax1.set(xlabel="step", ylabel="bits/dim (training batches)", title="loss")
    for key, sign in (("prior_informative", 1), ("prior_redundant", 1), ("logdet", -1)):
        ax2.plot(steps, [sign * r[key] for r in recs], label=("−" if sign < 0 else "") + key)
    ax2.set(xlabel="step", ylabel="nats/dim", title="loss terms (sum = loss)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
