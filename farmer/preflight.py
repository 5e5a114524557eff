"""Check a checkpoint's files against its config before anything is allocated (DESIGN §2).

A checkpoint's config.json decides how big `Farmer(cfg)` is; its safetensors
files decide what is read. A crafted config ("flow_width": 200000) would make
the constructor allocate hundreds of GB before `load_state_dict` could refuse
the weights, so every loader in farmer.checkpoint first calls into this file:

1. `read_header` reads a safetensors header (names, dtypes, shapes; no data)
   with safe_open. safetensors itself checks that the header's offsets add up
   to the file's size, so the header's bytes are the file's bytes.
2. `check_depth` refuses a config with more transformer layers than the file
   has tensors (the constructor loops over layers, even on the meta device).
3. `config_shapes` builds the model on the meta device (shapes, no storage,
   no values) and `check_tensors` refuses a config whose tensors need more
   bytes than the file holds, then any missing, unexpected or mis-shaped
   tensor. The error names the tensor with both shapes and, where one config
   field explains every mismatch, that field with both values.

Only then does the caller build the real model and read the weights.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:  # pragma: no cover
    from .config import FarmerConfig

Shape = tuple[int, ...]
# safetensors dtype name -> bytes per element
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
DEPTH_FIELDS = ("flow_blocks", "flow_layers", "ar_layers")


# ============================================================================ headers
@dataclasses.dataclass(frozen=True)
class Header:
    """A safetensors file's table of contents: name -> (dtype, shape), and the data bytes they add up to."""
    path: Path
    tensors: dict[str, tuple[str, Shape]]

    @property
    def shapes(self) -> dict[str, Shape]:
        return {k: s for k, (_, s) in self.tensors.items()}

    @property
    def nbytes(self) -> int:
        return sum(DTYPE_BYTES.get(dt, 8) * math.prod(s) for dt, s in self.tensors.values())

    def with_prefix(self, prefix: str) -> dict[str, Shape]:
        """The shapes of tensors named `prefix` + key, keyed without the prefix."""
        return {k[len(prefix):]: s for k, s in self.shapes.items() if k.startswith(prefix)}


def read_header(path: str | os.PathLike) -> Header:
    """The header of a safetensors file, reading no tensor data; ValueError naming a missing or bad file."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {}
            for k in f.keys():
                sl = f.get_slice(k)
                tensors[k] = (sl.get_dtype(), tuple(int(n) for n in sl.get_shape()))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"checkpoint file {path} is not a valid safetensors file ({e}); "
                         f"it is truncated or corrupt — re-save or re-download it") from e
    return Header(path, tensors)


# ============================================================================ shapes from a config
_FILLS = {"normal_", "uniform_", "trunc_normal_", "zeros_", "ones_", "constant_", "fill_", "zero_", "copy_",
          "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_", "eye_"}


class _NoFills(TorchFunctionMode):
    """Inside a meta-device build, initialisers have no values to fill: skip them.

    (PyTorch runs some meta fills through Python reference kernels whose
    first use imports the compiler stack, about a second; skipping them keeps
    a shape-only build at milliseconds.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
        if getattr(func, "__name__", "") in _FILLS and isinstance(t, torch.Tensor) and t.is_meta:
            return t
        return func(*args, **kwargs)


def meta_build(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run `build()` on the meta device: every tensor gets its shape and dtype but no storage."""
    with torch.device("meta"), _NoFills():
        return build()


def config_shapes(cfg: "FarmerConfig", student: bool = False) -> dict[str, Shape]:
    """{name: shape} of the state dict a config builds (flow + AR, or the distilled student's), allocating nothing."""
    from .model import Farmer
    if student:
        from .student import make_student
        module = meta_build(lambda: make_student(Farmer(cfg)))
    else:
        module = meta_build(lambda: Farmer(cfg))
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith("student.")}


# ============================================================================ checks
def check_depth(cfg: "FarmerConfig", header: Header, config_file: str | os.PathLike) -> None:
    """Every transformer layer owns at least one tensor, so a config cannot have more layers than the file has tensors."""
    layers = cfg.flow_blocks * cfg.flow_layers + cfg.ar_layers
    if layers > len(header.tensors):
        raise ValueError(
            f"{config_file}: flow_blocks × flow_layers + ar_layers = {cfg.flow_blocks} × {cfg.flow_layers} + "
            f"{cfg.ar_layers} = {layers:,} transformer layers, but {header.path} holds only "
            f"{len(header.tensors)} tensors; the config does not describe these weights")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def check_tensors(expected: dict[str, Shape], found: dict[str, Shape], *, file: str | os.PathLike,
                  config_file: str | os.PathLike, explain: Callable[[], str] = lambda: "",
                  found_bytes: int | None = None, bytes_per_element: int = 4, what: str = "model") -> None:
    """Refuse (ValueError) unless `found` has exactly the names and shapes of `expected`.

    found_bytes: the bytes the file's tensors take; a config whose tensors need
    more is refused first, with both sizes (the "absurd config" case).
    explain(): a sentence naming the config field behind a mismatch, or "".
    """
    n_cfg = sum(math.prod(s) for s in expected.values())
    if found_bytes is not None and n_cfg * bytes_per_element > found_bytes:
        n_file = sum(math.prod(s) for s in found.values())
        why = explain()
        raise ValueError(
            f"{config_file} describes a {what} of {n_cfg:,} parameters ({_fmt_bytes(n_cfg * bytes_per_element)} as "
            f"float32), but {file} holds {n_file:,} ({_fmt_bytes(found_bytes)}); refusing to build it"
            + (f". {why}" if why else "; the config does not describe these weights"))
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    bad = [(k, found[k], s) for k, s in expected.items() if k in found and found[k] != s]
    if not (missing or unexpected or bad):
        return
    parts = []
    if bad:
        parts.append("wrong shapes: " + "; ".join(f"{k} is {list(f)} in the file but the config builds {list(s)}"
                                                  for k, f, s in bad[:3]) + (" …" if len(bad) > 3 else ""))
    if missing:
        parts.append(f"missing from the file: {missing[:4]}{' …' if len(missing) > 4 else ''}")
    if unexpected:
        parts.append(f"not built by the config: {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
    why = explain()
    raise ValueError(f"{file} does not match {config_file}" + (f": {why}" if why else "") + ". "
                     + "; ".join(parts))


def explain_mismatch(cfg: "FarmerConfig", found: dict[str, Shape], student: bool = False,
                     max_tries: int = 24) -> str:
    """The one config field (and its value in the file) that makes `cfg` build exactly `found`, or "".

    Candidates come from the mismatches themselves: a dimension c the config
    builds against f in the file suggests field = value·f/c for each integer
    field whose value divides c; a layer index in a tensor name suggests the
    layer counts. Each candidate is checked by a meta build.
    """
    try:
        expected = config_shapes(cfg, student)
    except (ValueError, RuntimeError):
        return ""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
              if type(getattr(cfg, f.name)) is int and getattr(cfg, f.name) > 0}
    candidates: list[tuple[str, int]] = []
    for k, s in expected.items():
        f = found.get(k)
        if f is None or f == s or len(f) != len(s):
            continue
        for c, n in zip(s, f):
            if c == n:
                continue
            for name, v in fields.items():
                if c % v == 0 and (n * v) % c == 0 and 1 <= n * v // c != v:
                    candidates.append((name, n * v // c))
        if len(candidates) > max_tries:
            break
    counts: dict[str, int] = {}                     # in the file: layer-list name -> largest index + 1
    differ = {k[:m.start()] for k in set(found) ^ set(expected) for m in re.finditer(r"\.(\d+)\.", k)}
    for k in found:
        for m in re.finditer(r"\.(\d+)\.", k):
            if k[:m.start()] in differ:
                counts[k[:m.start()]] = max(counts.get(k[:m.start()], 0), int(m.group(1)) + 1)
    for name in DEPTH_FIELDS:
        candidates += [(name, n) for n in sorted(set(counts.values())) if n != getattr(cfg, name)]
    seen = set()
    for name, v in candidates:
        if (name, v) in seen or len(seen) >= max_tries:
            continue
        seen.add((name, v))
        try:
            if config_shapes(cfg.replace(**{name: v}), student) == found:
                return f"config.json sets {name} = {getattr(cfg, name)}, but these weights were saved with {name} = {v}"
        except (ValueError, TypeError, RuntimeError):
            continue
    return ""


def check_weights(cfg: "FarmerConfig", header: Header, config_file: str | os.PathLike, *,
                  prefix: str = "", student: bool = False, expected: dict[str, Shape] | None = None) -> None:
    """The full pre-flight for one weights file (or the `prefix` part of a training state).

    A student's file is checked after the model's, whose tensor count has already bounded the depth."""
    if not student:
        check_depth(cfg, header, config_file)
    expected = config_shapes(cfg, student) if expected is None else expected
    found = header.with_prefix(prefix)
    found_bytes = sum(DTYPE_BYTES.get(header.tensors[prefix + k][0], 8) * math.prod(s) for k, s in found.items())
    where = f"{header.path} ({prefix}*)" if prefix else header.path
    check_tensors(expected, found, file=where, config_file=config_file, found_bytes=found_bytes,
                  explain=lambda: explain_mismatch(cfg, found, student), what="student" if student else "model")


def check_optimizer_state(header: Header, params: dict[str, Shape], config_file: str | os.PathLike,
                          other: tuple[str, ...] = ()) -> None:
    """Optimizer moments "optim/<i>/<key>" scalar or shaped like one of `params` (i < their number), RNG
    states "rng/*" 1-D byte tensors, and nothing else but names starting with `other`."""
    shapes = set(params.values()) | {()}
    for k, (dt, s) in header.tensors.items():
        if k.startswith("optim/"):
            parts = k.split("/")
            ok = len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(params) and s in shapes
        elif k.startswith("rng/"):
            ok = dt == "U8" and len(s) == 1
        else:
            ok = k.startswith(other) if other else False
        if not ok:
            raise ValueError(f"{header.path}: tensor {k} ({dt} {list(s)}) is not part of a training state that "
                             f"{config_file} describes (expected {', '.join(p + '*' for p in other)}"
                             f"{', ' if other else ''}optim/<i>/<key> shaped like a parameter, rng/* bytes)")


def check_training_state(cfg: "FarmerConfig", header: Header, config_file: str | os.PathLike,
                         ema_in_state: bool) -> None:
    """A training.safetensors: raw weights "model/*" (and "ema/*" when the EMA is not the exported
    weights) shaped as the config builds, plus optimizer and RNG state (check_optimizer_state)."""
    expected = config_shapes(cfg)                                  # one meta build for all three checks
    check_weights(cfg, header, config_file, prefix="model/", expected=expected)
    if ema_in_state:
        check_weights(cfg, header, config_file, prefix="ema/", expected=expected)
    check_optimizer_state(header, expected, config_file,
                          other=("model/", "ema/") if ema_in_state else ("model/",))
