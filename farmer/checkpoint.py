"""Self-describing checkpoints: safetensors weights + JSON config, never pickle (DESIGN §2, STYLE).

A checkpoint is a directory:

    config.json           {"format": "farmer-checkpoint", "version": 1, "model": FarmerConfig,
                           "weights": "ema" | "raw", ...metadata (step, train config, …)}
    model.safetensors     the flow + AR state dict ("flow.*", "ar.*")
    student.safetensors   optional: the distilled one-step AF inverse (farmer.distill)
    training.safetensors  optional, for --resume: raw weights "model/*", EMA "ema/*" when
                          model.safetensors holds the raw ones, optimizer "optim/<i>/<key>",
                          torch RNG "rng/torch" (a uint8 tensor)
    training.json         optional: step, optimizer hyper-parameters and scalars, python/numpy
                          RNG states, data position — plain JSON

`load(path)` rebuilds the model from these files alone. Loading reads only
JSON and safetensors (no torch.load, no pickle), so a checkpoint from an
untrusted source cannot run code; and it checks every tensor's shape in the
safetensors headers against a meta-device build of the config before it
allocates anything (farmer.preflight), so a crafted config cannot exhaust
memory either. Every file is written to a temporary name in
the same folder and renamed into place (os.replace is atomic on POSIX), so a
crash never leaves a half-written file under the final name. A training run
keeps its checkpoints as `OUT/checkpoints/step_XXXXXXXX/`, each written as a
temporary folder and renamed, with `OUT/checkpoints/latest` naming the newest.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save as st_save

from .config import FarmerConfig
from .model import Farmer
from .preflight import check_training_state, check_weights, read_header
from .student import make_student

FORMAT, VERSION = "farmer-checkpoint", 1
CONFIG_FILE, WEIGHTS_FILE, STUDENT_FILE = "config.json", "model.safetensors", "student.safetensors"
TRAIN_TENSORS, TRAIN_JSON = "training.safetensors", "training.json"
LATEST = "latest"                         # in a run's checkpoints/ folder: name of the newest checkpoint
_RESERVED = {"format", "version", "model", "weights"}


# ============================================================================ atomic files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file next to `path`, fsync, then os.replace it onto `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)                        # mkstemp makes 0600; a checkpoint is meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically write a dict of tensors as safetensors (copied to CPU, contiguous)."""
    atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or garbled file raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint file {path} is not a valid safetensors file ({e}); "
                         f"it is truncated or corrupt — re-save or re-download it") from e


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint file {path} is not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint file {path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def load_into(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into `module`, requiring exactly its keys and shapes (ValueError naming `source`)."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    bad = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
           for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or bad:
        parts = [f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}" if missing else "",
                 f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}" if unexpected else "",
                 f"wrong shapes {bad[:5]}" if bad else ""]
        raise ValueError(f"{source} does not match the model built from its config.json: "
                         + "; ".join(p for p in parts if p))
    module.load_state_dict(tensors, strict=True)


# ============================================================================ model save / load
def model_state(model: Farmer) -> dict[str, torch.Tensor]:
    """The flow + AR tensors of a Farmer (the student, if any, is saved separately)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("student.")}


def save(model: Farmer, path: str | os.PathLike, *, weights: str = "raw", **metadata: Any) -> Path:
    """Write `model` as a checkpoint directory `path` (created if needed); returns the path.

    weights labels what the tensors are ("raw" or "ema"); metadata (JSON
    values, e.g. step=1000) is stored in config.json. A distilled student
    (model.student) is written to student.safetensors.
    """
    model = getattr(model, "module", model)                     # unwrap DistributedDataParallel
    if not isinstance(model, Farmer):
        raise ValueError(f"save: model must be a farmer.Farmer, got {type(model).__name__}")
    if weights not in ("ema", "raw"):
        raise ValueError(f"save: weights must be 'ema' or 'raw', got {weights!r}")
    if _RESERVED & set(metadata):
        raise ValueError(f"save: metadata may not use the reserved keys {sorted(_RESERVED & set(metadata))}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_tensors(path / WEIGHTS_FILE, model_state(model))
    if model.student is not None:
        save_student(path, model.student)
    cfg = {"format": FORMAT, "version": VERSION, "model": model.cfg.to_dict(), "weights": weights, **metadata}
    atomic_write_json(path / CONFIG_FILE, cfg)                 # last: a config.json means the weights are there
    return path


def save_atomic(model: Farmer, path: str | os.PathLike, *, weights: str = "raw", **metadata: Any) -> Path:
    """`save` into a temporary sibling folder, renamed to `path` when complete (replacing an older
    checkpoint there): a run killed while writing leaves the old checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save(model, tmp, weights=weights, **metadata)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_student(path: str | os.PathLike, student: nn.Module) -> Path:
    """Atomically write a distilled student's state dict to PATH/student.safetensors."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"save_student: checkpoint directory {path} does not exist (farmer.save first)")
    write_tensors(path / STUDENT_FILE, student.state_dict())
    return path / STUDENT_FILE


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or a training run's OUT folder (-> its newest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} must be a directory holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    if (path / CONFIG_FILE).exists():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    raise ValueError(f"{path} is not a FARMER checkpoint: {path / CONFIG_FILE} is missing (expected "
                     f"{CONFIG_FILE} + {WEIGHTS_FILE} from farmer.save, or a `farmer train` output folder)")


def read_config(path: str | os.PathLike) -> tuple[dict[str, Any], FarmerConfig]:
    """config.json of a checkpoint directory, validated: (the JSON object, its FarmerConfig)."""
    file = Path(path) / CONFIG_FILE
    meta = read_json(file)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file}: \"format\" must be {FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("version") != VERSION:
        raise ValueError(f"{file}: unsupported version {meta.get('version')!r}; this farmer reads version {VERSION}")
    if meta.get("weights") not in ("ema", "raw"):
        raise ValueError(f"{file}: \"weights\" must be 'ema' or 'raw', got {meta.get('weights')!r}")
    if not isinstance(meta.get("model"), dict):
        raise ValueError(f"{file}: \"model\" must be a FarmerConfig object")
    try:
        cfg = FarmerConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file}: bad model config: {e}") from e
    return meta, cfg


def load(path: str | os.PathLike, device: str | torch.device = "cpu", weights: str | None = None) -> Farmer:
    """Rebuild a Farmer from a checkpoint directory (or a run folder), in eval mode on `device`.

    weights: None = what model.safetensors holds (EMA for `farmer train`
    checkpoints); "ema" or "raw" to pick one, the other being read from the
    training state when model.safetensors does not hold it. A student in
    student.safetensors is attached as model.student.
    """
    path = resolve(path)
    meta, cfg = read_config(path)
    if weights not in (None, "ema", "raw"):
        raise ValueError(f"load: weights must be None, 'ema' or 'raw', got {weights!r}")
    own = weights is None or weights == meta["weights"]
    prefix = "model/" if weights == "raw" else "ema/"
    # pre-flight: headers against a meta build of the config, before anything is allocated
    if own:
        check_weights(cfg, read_header(path / WEIGHTS_FILE), path / CONFIG_FILE)
    else:
        header = read_header(path / TRAIN_TENSORS) if (path / TRAIN_TENSORS).exists() else None
        if header is None or not header.with_prefix(prefix):
            raise ValueError(f"load: {path} holds {meta['weights']} weights in {WEIGHTS_FILE} and no {weights} "
                             f"weights in {TRAIN_TENSORS}; use weights=None")
        check_weights(cfg, header, path / CONFIG_FILE, prefix=prefix)
    if (path / STUDENT_FILE).exists():
        check_weights(cfg, read_header(path / STUDENT_FILE), path / CONFIG_FILE, student=True)

    model = Farmer(cfg)
    if own:
        load_into(model, read_tensors(path / WEIGHTS_FILE), str(path / WEIGHTS_FILE))
    else:
        state = read_tensors(path / TRAIN_TENSORS)
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        load_into(model, picked, f"{path / TRAIN_TENSORS} ({prefix}*)")
    if (path / STUDENT_FILE).exists():
        student = make_student(model)
        load_into(student, read_tensors(path / STUDENT_FILE), str(path / STUDENT_FILE))
        model.student = student
    return model.to(device).eval()


# ============================================================================ training state
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states: torch (+cuda) as uint8 tensors, python and numpy as JSON."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    py = random.getstate()
    npy = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [npy[0], npy[1].tolist(), int(npy[2]), int(npy[3]), float(npy[4])]}


def set_rng_state(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    py, npy = js["python"], js["numpy"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state((npy[0], np.asarray(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as tensors "optim/<param>/<key>" plus JSON for everything else."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = v
            else:
                scalars.setdefault(str(pid), {})[key] = v
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict[str, Any]:
    """Inverse of optimizer_to_flat: a state dict for `optimizer.load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, d in js["scalars"].items():
        state.setdefault(int(pid), {}).update(d)
    return {"state": state, "param_groups": js["param_groups"]}


def save_training_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    """Write training.safetensors and training.json into checkpoint directory `path`."""
    write_tensors(Path(path) / TRAIN_TENSORS, tensors)
    atomic_write_json(Path(path) / TRAIN_JSON, {"format": "farmer-training-state", "version": VERSION, **js})


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of a checkpoint's training state; ValueError if absent or corrupt."""
    path = Path(path)
    js = read_json(path / TRAIN_JSON)
    if js.get("format") != "farmer-training-state":
        raise ValueError(f"{path / TRAIN_JSON}: not a farmer training state (format {js.get('format')!r})")
    return read_tensors(path / TRAIN_TENSORS), js


# ============================================================================ a run's checkpoints
def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a `farmer train` output folder, or None."""
    ckdir = Path(run_dir) / "checkpoints"
    pointer = ckdir / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not name or "/" in name or not (ckdir / name / CONFIG_FILE).is_file():
        raise ValueError(f"{pointer} names {name!r}, which is not a complete checkpoint in {ckdir}")
    return ckdir / name


def commit_checkpoint(run_dir: str | os.PathLike, name: str, fill: Callable[[Path], None], keep: int = 2) -> Path:
    """Write a run checkpoint atomically: `fill(tmp_dir)`, rename to checkpoints/NAME, point `latest` at it.

    Older step_* checkpoints beyond the newest `keep` are removed afterwards.
    """
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=ckdir))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_checkpoint(run_dir, name, tmp, keep)


def publish_checkpoint(run_dir: str | os.PathLike, name: str, tmp: Path, keep: int = 2) -> Path:
    """Rename the filled temporary folder `tmp` (inside RUN/checkpoints/) to NAME, point `latest` at it, prune."""
    ckdir = Path(run_dir) / "checkpoints"
    final = ckdir / name
    try:
        if final.exists():               # left by a killed run that is now resumed from an earlier step
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(ckdir / LATEST, (name + "\n").encode())
    done = sorted(p for p in ckdir.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckdir.glob(".step_*"):                  # temp folders of killed runs
        shutil.rmtree(stale, ignore_errors=True)
    return final


def save_run_checkpoint(run_dir: str | os.PathLike, step: int, model: Farmer, ema: Farmer,
                        optimizer: torch.optim.Optimizer, *, export: str = "ema", keep: int = 2,
                        state: dict[str, Any] | None = None, **metadata: Any) -> Path:
    """A training checkpoint RUN/checkpoints/step_<step>/, written atomically.

    model.safetensors holds the `export` weights ("ema" or "raw") with
    `metadata` in config.json; the training state holds the raw weights, the
    EMA (when not exported), the optimizer, the RNG states and `state` (JSON).
    """
    def fill(tmp: Path) -> None:
        save(ema if export == "ema" else model, tmp, weights=export, step=step, **metadata)
        tensors = {f"model/{k}": v for k, v in model_state(model).items()}
        if export == "raw":
            tensors.update({f"ema/{k}": v for k, v in model_state(ema).items()})
        opt_t, opt_js = optimizer_to_flat(optimizer)
        rng_t, rng_js = rng_state()
        save_training_state(tmp, {**tensors, **opt_t, **rng_t},
                            {"step": step, "optimizer": opt_js, "rng": rng_js, **(state or {})})
    return commit_checkpoint(run_dir, f"step_{step:08d}", fill, keep=keep)


def check_run_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], FarmerConfig]:
    """Pre-flight for a resume: config.json, model.safetensors and training.safetensors agree, checked on
    their headers before anything is built (farmer.preflight). Returns read_config's (JSON, FarmerConfig)."""
    path = Path(path)
    meta, cfg = read_config(path)
    check_weights(cfg, read_header(path / WEIGHTS_FILE), path / CONFIG_FILE)
    check_training_state(cfg, read_header(path / TRAIN_TENSORS), path / CONFIG_FILE,
                         ema_in_state=meta["weights"] == "raw")
    return meta, cfg


def restore_run_checkpoint(path: str | os.PathLike, model: Farmer, ema: Farmer,
                           optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Inverse of save_run_checkpoint: fills model, ema and optimizer, sets the RNGs; returns training.json."""
    path = Path(path)
    meta, _ = check_run_checkpoint(path)
    tensors, js = load_training_state(path)
    load_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, f"{path / TRAIN_TENSORS}")
    ema_t = (read_tensors(path / WEIGHTS_FILE) if meta["weights"] == "ema"
             else {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
    load_into(ema, ema_t, str(path / (WEIGHTS_FILE if meta["weights"] == "ema" else TRAIN_TENSORS)))
    optimizer.load_state_dict(optimizer_from_flat(tensors, js["optimizer"]))
    set_rng_state(tensors, js["rng"])
    return js
