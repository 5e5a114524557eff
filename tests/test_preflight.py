"""Loading a checkpoint checks its safetensors headers against its config before allocating (farmer.preflight)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from _models import perturbed_model
from conftest import REPO, cli_env
from safetensors.torch import load_file, save_file

import farmer
from farmer import checkpoint as ck
from farmer import preflight as pf
from farmer.config import presets
from farmer.distill import make_student
from farmer.model import Farmer

pytestmark = pytest.mark.usefixtures("one_thread")
SHIPPED = REPO / "checkpoints" / "fmnist"


def _craft(src, dst, **changes):
    shutil.copytree(src, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta["model"].update(changes)
    (dst / "config.json").write_text(json.dumps(meta))
    return dst


_LOAD_AND_MEASURE = """
import json, resource, sys, time
import farmer
t, cpu = time.perf_counter(), time.process_time()
try:
    farmer.load(sys.argv[1])
    error = None
except ValueError as e:
    error = str(e)
# VmHWM is this process's own peak RSS; ru_maxrss would include the parent's (Linux keeps it across exec)
status = open("/proc/self/status").read()
hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
print(json.dumps({"error": error, "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu,
                  "peak_mb": (hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024}))
"""


@pytest.mark.parametrize("changes, says", [
    ({"flow_width": 200_000}, "flow_width = 200000, but these weights were saved with flow_width = 128"),
    ({"flow_width": 20_000}, "flow_width = 20000, but these weights were saved with flow_width = 128"),
    ({"ar_layers": 10**9}, "transformer layers, but .*model.safetensors holds only 183 tensors"),
    ({"num_classes": 10**8}, "describes a model of 12,802,509,088 parameters"),
])
def test_a_crafted_config_is_refused_in_under_a_second_without_allocating(tmp_path, changes, says):
    """The issue's case: `"flow_width": 200000` once made farmer.load try to allocate 480 GB."""
    path = _craft(SHIPPED, tmp_path / "crafted", **changes)
    out = subprocess.run([sys.executable, "-c", _LOAD_AND_MEASURE, str(path)], env=cli_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["error"] is not None, "the crafted checkpoint loaded"
    import re
    assert re.search(says, r["error"]), r["error"]
    # CPU seconds, not wall-clock: these machines are shared (0.06 s measured on an idle one)
    assert r["cpu_s"] < 1.0 and r["peak_mb"] < 1024, r                  # peak RSS includes importing torch


def test_the_shipped_model_passes_and_loads_unchanged():
    cfg = farmer.load(SHIPPED).cfg
    header = pf.read_header(SHIPPED / "model.safetensors")
    pf.check_weights(cfg, header, SHIPPED / "config.json")                 # no error
    pf.check_weights(cfg, pf.read_header(SHIPPED / "student.safetensors"), SHIPPED / "config.json", student=True)
    assert header.nbytes == sum(v.numel() * v.element_size() for v in load_file(SHIPPED / "model.safetensors").values())


@pytest.mark.parametrize("changes", [{}, {"channel_mixing": "lu"}, {"channel_mixing": "dct"},
                                     {"channel_mixing": "haar", "mixing_position": "split"},
                                     {"redundant_mode": "none"}, {"head_width": 24}])
def test_a_meta_build_has_exactly_the_real_state_dict_shapes(changes):
    cfg = presets["tiny"].replace(**changes)
    real = Farmer(cfg)
    assert pf.config_shapes(cfg) == {k: tuple(v.shape) for k, v in real.state_dict().items()}
    assert pf.config_shapes(cfg, student=True) == {k: tuple(v.shape) for k, v in make_student(real).state_dict().items()}


@pytest.mark.parametrize("field, value", [("flow_width", 16), ("flow_blocks", 1), ("ar_layers", 2),
                                          ("k_informative", 5), ("d_informative", 3), ("ar_width", 16)])
def test_the_error_names_the_field_and_both_values(tmp_path, field, value):
    model = perturbed_model("tiny", seed=2)
    path = farmer.save(model, tmp_path / "ok")
    _craft(path, tmp_path / "bad", **{field: value})
    with pytest.raises(ValueError, match=f"config.json sets {field} = {value}, but these weights were saved "
                                         f"with {field} = {getattr(model.cfg, field)}"):
        farmer.load(tmp_path / "bad")


def test_a_shape_mismatched_student_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    model = perturbed_model("tiny", seed=3)
    path = farmer.save(model, tmp_path / "s")
    other = make_student(perturbed_model("tiny", seed=3, flow_width=16))       # a student of another model
    ck.save_student(path, other)
    built = []
    monkeypatch.setattr(ck, "Farmer", lambda cfg: built.append(cfg) or Farmer(cfg))
    with pytest.raises(ValueError, match=r"config.json describes a student of .*, but .*student.safetensors holds "
                                         r".*config.json sets flow_width = 32, but these weights were saved with "
                                         r"flow_width = 16"):
        farmer.load(path)
    assert built == []                                                      # refused before allocating


def test_a_student_tensor_of_the_wrong_shape_is_named_with_both_shapes(tmp_path):
    model = perturbed_model("tiny", seed=3)
    path = farmer.save(model, tmp_path / "s")
    state = make_student(model).state_dict()
    key = next(iter(state))
    state[key] = torch.zeros(300, 300)                                      # wrong shape, more bytes
    save_file({k: v.contiguous() for k, v in state.items()}, path / "student.safetensors")
    with pytest.raises(ValueError, match=f"{key} is \\[300, 300\\] in the file but the config builds"):
        farmer.load(path)


def _run_checkpoint(tmp_path):
    from farmer.config import TrainConfig
    from farmer.data import load_synthetic
    from farmer.train import train
    cfg = TrainConfig(batch_size=16, steps=2, ckpt_every=2, sample_every=0, log_every=1, device="cpu")
    train(presets["tiny"], cfg, tmp_path / "run", dataset=load_synthetic("train", 8, 1, 10, n=32),
          progress=False, log=lambda s: None)
    return ck.latest_checkpoint(tmp_path / "run")


def test_resume_state_is_checked_before_anything_is_built(tmp_path):
    last = _run_checkpoint(tmp_path)
    assert ck.check_run_checkpoint(last)[1] == presets["tiny"]
    meta = json.loads((last / "config.json").read_text())
    meta["model"]["flow_width"] = 200_000
    (last / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="flow_width = 200000, but these weights were saved with flow_width = 32"):
        ck.check_run_checkpoint(last)
    meta["model"]["flow_width"] = 32
    (last / "config.json").write_text(json.dumps(meta))
    state = load_file(last / "training.safetensors")
    moment = next(k for k in state if k.startswith("optim/") and k.endswith("exp_avg"))
    state[moment] = torch.zeros(7, 5)                                       # shaped like no parameter
    save_file(state, last / "training.safetensors")
    with pytest.raises(ValueError, match=f"tensor {moment} .*not part of a training state"):
        ck.check_run_checkpoint(last)


def test_farmer_train_resume_refuses_a_crafted_checkpoint(tmp_path, run_farmer):
    last = _run_checkpoint(tmp_path)
    meta = json.loads((last / "config.json").read_text())
    meta["model"]["flow_width"] = 200_000
    (last / "config.json").write_text(json.dumps(meta))
    r = run_farmer("train", "--resume", "--out", tmp_path / "run", "--data", "synthetic", "--steps", "4",
                   "--no-progress", timeout=120)
    assert r.returncode == 1 and "--flow-width = 200000, but these weights were saved with --flow-width = 32" in r.stderr


def test_a_distillation_state_with_foreign_tensors_is_refused(tmp_path):
    from farmer import distill
    model = perturbed_model("tiny", seed=4)
    model.student = make_student(model)
    path = farmer.save(model, tmp_path / "d")
    d = distill.Distiller(model, distill.DistillConfig(steps=1, batch_size=4), student=model.student)
    distill.save_state(path, d)
    assert distill.read_state(path, model.student) is not None
    tensors = load_file(path / distill.STATE_TENSORS)
    tensors["optim/0/exp_avg"] = torch.zeros(1000, 1000)
    save_file(tensors, path / distill.STATE_TENSORS)
    with pytest.raises(ValueError, match="optim/0/exp_avg .*not part of a training state"):
        distill.read_state(path, model.student)
