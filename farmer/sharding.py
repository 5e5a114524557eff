"""Fully sharded training (DESIGN §4): FSDP2 units, sharded checkpoints, consolidated export.

`farmer train --fsdp` under `torchrun` shards the parameters, gradients
and optimizer state of the model over the ranks with PyTorch's own FSDP2
(`torch.distributed.fsdp.fully_shard`):

    one FSDP unit per TransformerLayer, in every AF block's trunk and in the AR trunk;
    one per AF block for what is left of it (proj_in, positions, proj_out: the affine map);
    one per GMM head of the AR;
    the root unit, the Farmer itself, holds the rest: the AR's embeddings, the mixing.

A unit's full parameters exist only while it runs (all-gathered before its
forward and again before its backward), so a rank holds 1/W of the weights,
gradients and AdamW moments plus one layer at a time. Mixed precision on
CUDA (precision "bf16"): the layer units compute and reduce their gradients
in bf16, the root stays float32 — the affine maps μ, exp(±a), the log-dets and
the GMM heads never run in bf16 (the trunks' outputs are cast back to float32
by Transformer.forward, as without sharding).

Checkpoints of a sharded run, RUN/checkpoints/step_XXXXXXXX/:

    config.json, model.safetensors   the consolidated export weights (EMA by default), streamed by
                                     rank 0 one tensor at a time: farmer.load and the app read it
    sharded/shard-RRRRR-model-*.safetensors
                                     torch.distributed.checkpoint, one file set per rank, each tensor
                                     saved as its shard with its offsets in the safetensors header:
                                     "model/<name>" raw weights, "ema/<name>", "optim/<name>/<key>"
    training.json                    step, AdamW's param groups, the sharding, bad steps and files

The sharded state is read and written with DCP's safetensors storage
(HuggingFaceStorageWriter / Reader): no pickle anywhere, and DCP reshards on
load, so a run can resume on a different number of ranks. `consolidate`
rebuilds a plain checkpoint from the sharded files alone, in one process.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from . import checkpoint as ckpt
from .config import FarmerConfig
from .layers import Transformer
from .model import Farmer

SHARDED_DIR = "sharded"
SHARDED_FORMAT = "farmer-sharded-training-state"


# ============================================================================ wrapping
def trunk_layers(model: nn.Module) -> list[nn.Module]:
    """Every TransformerLayer of the AF blocks' and the AR's trunks, in module order."""
    return [layer for m in model.modules() if isinstance(m, Transformer) for layer in m.layers]


def shard_model(model: Farmer, mesh, *, bf16: bool = False) -> Farmer:
    """FSDP2 in place: units per transformer layer (bf16 params and reductions if `bf16`), per AF block's
    affine projections and per GMM head (float32), and the Farmer as the float32 root (module docstring).

    `model.loss` and `model.nll` call `forward`, so they all-gather like any
    FSDP forward; methods that bypass it (sampling, the inverse) do not, and
    need `gather_model` first.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    layer_policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
                    if bf16 else MixedPrecisionPolicy())
    fp32 = MixedPrecisionPolicy()
    for layer in trunk_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=layer_policy)
    # float32 units: each AF block's projections and positions (the affine map μ, a and its log-det) and
    # each GMM head (the 1.1B preset's G_{N+1} head alone is 197M parameters). Without their own units they
    # would stay gathered, with their full gradients, for the whole step as part of the root.
    for block in model.flow.blocks:
        fully_shard(block, mesh=mesh, mp_policy=fp32)
    for head in (model.ar.head_informative, model.ar.head_redundant):
        if head is not None:
            fully_shard(head, mesh=mesh, mp_policy=fp32)
    # A head's (B, N, ·) output is a view of its matmul, which FSDP2 warns about in case it is then changed
    # in place; DiagonalGMM.from_flat only slices it (the gradients match the unsharded model's, tested).
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPLinear\) returned a view tensor")
    fully_shard(model, mesh=mesh, mp_policy=fp32)                      # the rest: embeddings, mixing
    return model


def _libc():
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand the memory freed by sharding (the full weights each rank built) back to the OS, on glibc.

    Layer matrices are below glibc's default mmap threshold, so the full copy
    lives in the heap and, once freed, stays in the process unless trimmed; on
    a CPU run that is a whole model per rank. A no-op without glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_allocations(threshold: int = 1 << 16) -> None:
    """CPU runs: let glibc serve every allocation of ≥ `threshold` bytes by mmap, so a freed tensor's memory
    goes back to the OS at once (M_MMAP_THRESHOLD). Without it, the all-gathered layers and their gradients,
    freed after each unit, leave a heap of freed-but-held memory: measured on a 417M-parameter FSDP run, 1.4 GB
    per rank by the end of the first backward pass. A no-op without glibc."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, int(threshold))                             # M_MMAP_THRESHOLD (also fixes it: no
                                                                     # dynamic raising after frees)


def device_mesh(device: torch.device):
    """A 1-D mesh over all ranks of the default process group (FSDP's data-parallel dimension)."""
    from torch.distributed.device_mesh import init_device_mesh
    return init_device_mesh(device.type, (dist.get_world_size(),))


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective: every rank must call it, in the same order); others as they are."""
    from torch.distributed.tensor import DTensor
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor on the CPU) for each entry of the state dict, one at a time: memory is one tensor.

    Collective for a sharded model: every rank must iterate to the end."""
    for name, t in ckpt.model_state(model).items():
        yield name, _full(t.detach()).cpu()


def gather_model(model: Farmer, main: bool) -> Farmer | None:
    """A plain (unsharded) copy of a sharded model on rank 0, on the model's device; None elsewhere. Collective."""
    state = {}
    for name, t in full_tensors(model):
        if main:
            state[name] = t
    if not main:
        return None
    plain = Farmer(model.cfg)
    ckpt.load_into(plain, state, "gathered FSDP state")
    return plain.to(_device_of(model)).eval()


def _device_of(model: nn.Module) -> torch.device:
    from torch.distributed.tensor import DTensor
    p = next(model.parameters())
    return (p.to_local() if isinstance(p, DTensor) else p).device


def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Global gradient-norm clipping over sharded gradients; returns the norm as a plain scalar tensor."""
    gn = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return _full(gn)


# ============================================================================ consolidated export
_ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.bfloat16: "BF16", torch.float16: "F16",
              torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def write_consolidated(path: str | os.PathLike, model: Farmer, main: bool, *, weights: str,
                       **metadata: Any) -> Path | None:
    """Write a sharded model as a plain checkpoint directory (config.json + model.safetensors). Collective.

    Rank 0 streams the safetensors file, gathering one tensor at a time, so the
    export never holds more than one full tensor beyond its shard; then writes
    config.json (last, as farmer.save does). Returns the path on rank 0.
    """
    path = Path(path)
    state = ckpt.model_state(model)
    header: dict[str, Any] = {}
    offset = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)                                   # the format pads the header to 8 bytes
    f = tmp = None
    if main:
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / f".{ckpt.WEIGHTS_FILE}.streaming"
        f = open(tmp, "wb")
        f.write(struct.pack("<Q", len(blob)) + blob)
    try:
        for name, t in state.items():
            full = _full(t.detach())                                  # every rank takes part
            if main:
                full = full.cpu().contiguous()
                f.write(full.view(torch.uint8).numpy().tobytes() if full.numel() else b"")
        if main:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path / ckpt.WEIGHTS_FILE)
            ckpt.atomic_write_json(path / ckpt.CONFIG_FILE, {"format": ckpt.FORMAT, "version": ckpt.VERSION,
                                                             "model": model.cfg.to_dict(), "weights": weights,
                                                             **metadata})
    finally:
        if f is not None and not f.closed:
            f.close()
            Path(tmp).unlink(missing_ok=True)
    return path if main else None


# ============================================================================ sharded training state
def _file_index(key: str) -> str:
    """The file a state key goes to: one per AF block / the AR trunk / the rest, so no file is the whole model.

    (DCP's safetensors writer serialises a file in memory before writing it.)"""
    name = key.split("/", 1)[1]
    m = re.match(r"(flow\.blocks\.\d+|ar\.trunk\.layers\.\d+)\.", name)
    return m.group(1) if m else "rest"


def _optimizer_init(opt: torch.optim.Optimizer) -> None:
    """Create AdamW's state (zero moments) by one step with zero gradients and lr 0, if it has none yet."""
    if opt.state:
        return
    params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
    lrs = [g["lr"] for g in opt.param_groups]
    for p in params:
        p.grad = torch.zeros_like(p)
    for g in opt.param_groups:
        g["lr"] = 0.0
    opt.step()                                  # AdamW: p·(1 − lr·wd) − lr·… = p with lr 0
    for g, lr in zip(opt.param_groups, lrs):
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)


def _flat_state(model: Farmer, ema: Farmer, opt: torch.optim.Optimizer
                ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """The training state as DCP keys -> (sharded) tensors, and AdamW's param groups as JSON (params by name)."""
    flat = {f"model/{k}": v for k, v in ckpt.model_state(model).items()}
    if ema is not model:
        flat.update({f"ema/{k}": v for k, v in ckpt.model_state(ema).items()})
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in opt.param_groups:
        for p in g["params"]:
            for key, v in opt.state.get(p, {}).items():
                if not isinstance(v, torch.Tensor):
                    raise ValueError(f"optimizer state {names[id(p)]}/{key} is not a tensor ({type(v).__name__})")
                flat[f"optim/{names[id(p)]}/{key}"] = v
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
                      | {"params": [names[id(p)] for p in g["params"]]})
    return flat, groups


def save_sharded_state(folder: Path, model: Farmer, ema: Farmer, opt: torch.optim.Optimizer
                       ) -> list[dict[str, Any]]:
    """DCP save of weights, EMA and AdamW state into `folder` (safetensors, each rank its shards). Collective."""
    import torch.distributed.checkpoint as dcp
    flat, groups = _flat_state(model, ema, opt)
    files = sorted({_file_index(k) for k in flat})
    mapping = {k: files.index(_file_index(k)) + 1 for k in flat}
    dcp.save(flat, storage_writer=dcp.HuggingFaceStorageWriter(str(folder), fqn_to_index_mapping=mapping,
                                                               save_distributed=True))
    return groups


def load_sharded_state(folder: Path, model: Farmer, ema: Farmer, opt: torch.optim.Optimizer,
                       groups: list[dict[str, Any]]) -> None:
    """Inverse of save_sharded_state, in place into the (sharded) model, EMA and optimizer. Collective."""
    import torch.distributed.checkpoint as dcp
    _optimizer_init(opt)
    flat, now = _flat_state(model, ema, opt)
    saved = sharded_keys(folder)
    missing = sorted(set(flat) - set(saved))
    if missing:
        raise ValueError(f"{folder}: the sharded state lacks {len(missing)} tensors this run needs, e.g. "
                         f"{missing[:3]} (was it written with a different --ema-decay or model?)")
    dcp.load(flat, storage_reader=dcp.HuggingFaceStorageReader(str(folder)))
    if [g["params"] for g in groups] != [g["params"] for g in now]:
        raise ValueError(f"{folder}: the optimizer's parameter groups differ from this run's")
    for g, js in zip(opt.param_groups, groups):
        g.update({k: (tuple(v) if k == "betas" else v) for k, v in js.items() if k != "params"})


def sharded_keys(folder: Path) -> dict[str, tuple[int, ...]]:
    """{key: global shape} of a sharded state, read from the safetensors headers alone (nothing loaded)."""
    from safetensors import safe_open
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} holds no sharded state files (*.safetensors)")
    shapes: dict[str, list[int]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                info = json.loads((f.metadata() or {}).get("DCP_SHARDING_INFO", "{}"))
                for key in f.keys():
                    shape = f.get_slice(key).get_shape()
                    off = info.get(key, {}).get("saved_offsets", [0] * len(shape))
                    end = [s + o for s, o in zip(shape, off)]
                    old = shapes.setdefault(key, end)
                    shapes[key] = [max(a, b) for a, b in zip(old, end)]
        except Exception as e:                                       # noqa: BLE001 - name the damaged file
            raise ValueError(f"sharded checkpoint file {file} is not readable safetensors ({e}); "
                             f"it is truncated or corrupt") from e
    return {k: tuple(v) for k, v in shapes.items()}


# ============================================================================ run checkpoints
def save_run_checkpoint(run_dir: Path, step: int, model: Farmer, ema: Farmer, opt: torch.optim.Optimizer,
                        main: bool, *, export: str = "ema", keep: int = 2, state: dict[str, Any] | None = None,
                        **metadata: Any) -> Path:
    """RUN/checkpoints/step_<step>/ of a sharded run (see the module docstring), published atomically. Collective."""
    name = f"step_{step:08d}"
    ckdir = Path(run_dir) / "checkpoints"
    tmp = ckdir / f".{name}.sharding"
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / SHARDED_DIR).mkdir(parents=True)
    dist.barrier()
    groups = save_sharded_state(tmp / SHARDED_DIR, model, ema, opt)
    write_consolidated(tmp, ema if export == "ema" else model, main, weights=export, step=step,
                       sharded={"world_size": dist.get_world_size(), "folder": SHARDED_DIR}, **metadata)
    dist.barrier()                                                   # every rank's files are on disk
    final = ckdir / name
    if main:
        ckpt.atomic_write_json(tmp / ckpt.TRAIN_JSON, {"format": SHARDED_FORMAT, "version": ckpt.VERSION,
                                                       "step": step, "param_groups": groups,
                                                       "world_size": dist.get_world_size(),
                                                       "ema": "separate" if ema is not model else "none",
                                                       **(state or {})})
        final = ckpt.publish_checkpoint(run_dir, name, tmp, keep)
    dist.barrier()
    return final


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / SHARDED_DIR).is_dir()


def check_sharded_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], FarmerConfig]:
    """Resume pre-flight of a sharded checkpoint, on headers only: its config, export and shard shapes agree."""
    from .preflight import check_weights, config_shapes, read_header
    path = Path(path)
    meta, cfg = ckpt.read_config(path)
    check_weights(cfg, read_header(path / ckpt.WEIGHTS_FILE), path / ckpt.CONFIG_FILE)
    js = ckpt.read_json(path / ckpt.TRAIN_JSON)
    if js.get("format") != SHARDED_FORMAT:
        raise ValueError(f"{path / ckpt.TRAIN_JSON}: not a sharded training state (format {js.get('format')!r})")
    saved = sharded_keys(path / SHARDED_DIR)
    want = config_shapes(cfg)
    for prefix in ("model/",) + (("ema/",) if js.get("ema") == "separate" else ()):
        for k, shape in want.items():
            got = saved.get(prefix + k)
            if got != shape:
                raise ValueError(f"{path / SHARDED_DIR}: {prefix}{k} is "
                                 f"{'missing' if got is None else f'{got}'}, the config needs {shape}")
    return meta, cfg


def restore_run_checkpoint(path: Path, model: Farmer, ema: Farmer, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a sharded run checkpoint into the (sharded) model, EMA and optimizer; returns training.json. Collective."""
    path = Path(path)
    check_sharded_checkpoint(path)
    js = ckpt.read_json(path / ckpt.TRAIN_JSON)
    if (js.get("ema") == "separate") != (ema is not model):
        raise ValueError(f"{path} was written {'with' if js.get('ema') == 'separate' else 'without'} a separate "
                         f"EMA; resume with the same --ema-decay (0 keeps no EMA copy)")
    load_sharded_state(path / SHARDED_DIR, model, ema, opt, js["param_groups"])
    return js


# ============================================================================ offline consolidation
def consolidate(path: str | os.PathLike, dest: str | os.PathLike, weights: str | None = None) -> Path:
    """A plain checkpoint at `dest` from a sharded run checkpoint's shard files, in one process, no process group.

    weights: "ema" or "raw" (None = what the checkpoint exports). For a run
    whose model.safetensors was lost, or to take the raw weights out.
    """
    import torch.distributed.checkpoint as dcp
    path = ckpt.resolve(path) if (Path(path) / "checkpoints").is_dir() else Path(path)
    if not is_sharded_checkpoint(path):
        raise ValueError(f"{path} is not a sharded checkpoint (no {SHARDED_DIR}/ folder); "
                         f"if it holds config.json + model.safetensors, farmer.load reads it as it is")
    meta, cfg = check_sharded_checkpoint(path)
    js = ckpt.read_json(path / ckpt.TRAIN_JSON)
    weights = weights or meta["weights"]
    if weights not in ("ema", "raw"):
        raise ValueError(f"consolidate: weights must be 'ema' or 'raw', got {weights!r}")
    prefix = "ema/" if weights == "ema" and js.get("ema") == "separate" else "model/"
    model = Farmer(cfg)
    state = {prefix + k: v for k, v in ckpt.model_state(model).items()}
    import warnings
    with warnings.catch_warnings():                     # "assuming the intent is to load in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=dcp.HuggingFaceStorageReader(str(path / SHARDED_DIR)), no_dist=True)
    ckpt.load_into(model, {k[len(prefix):]: v for k, v in state.items()}, str(path / SHARDED_DIR))
    keep = {k: v for k, v in meta.items() if k not in ("format", "version", "model", "weights", "sharded")}
    return ckpt.save(model, dest, weights=weights, consolidated_from=str(path), **keep)
