"""Checkpoints (farmer/checkpoint.py): safetensors + JSON, atomic, loud on damage, never unpickled."""
from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn as nn
from _models import perturbed_model, random_images

import farmer
from farmer import checkpoint as ck

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def saved(tmp_path):
    model = perturbed_model("tiny", seed=1)
    path = farmer.save(model, tmp_path / "ckpt", step=7, note="hello")
    return model, path


def _same_params(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_roundtrip_identical_model_and_likelihood(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((path / "config.json").read_text())
    assert meta["format"] == "farmer-checkpoint" and meta["version"] == 1 and meta["weights"] == "raw"
    assert meta["step"] == 7 and meta["note"] == "hello" and meta["model"] == model.cfg.to_dict()
    loaded = farmer.load(path)
    assert not loaded.training and loaded.cfg == model.cfg and _same_params(model, loaded)
    x = random_images(model.cfg, 4)
    y = torch.arange(4)
    assert torch.equal(model.nll(x, y, seed=0)["nll"], loaded.nll(x, y, seed=0)["nll"])


def test_loading_never_unpickles(saved, monkeypatch):
    _, path = saved
    def boom(*a, **k):
        raise AssertionError("a checkpoint was unpickled")
    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    farmer.load(path)
    for f in path.iterdir():                    # every file is JSON or safetensors (an 8-byte header + JSON)
        raw = f.read_bytes()
        if f.suffix == ".json":
            json.loads(raw)
        else:
            n = int.from_bytes(raw[:8], "little")
            assert json.loads(raw[8:8 + n]) and not raw.startswith(b"\x80")      # not a pickle stream


def test_writes_are_atomic_and_leave_no_temporary_files(saved, monkeypatch):
    model, path = saved
    before = (path / "model.safetensors").read_bytes()
    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(ck.os, "replace", crash)                 # a failure just before the rename
    with pytest.raises(OSError, match="disk full"):
        farmer.save(perturbed_model("tiny", seed=2), path)
    assert (path / "model.safetensors").read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]


def _damage(path, what):
    if what == "bad-json":
        (path / "config.json").write_text("{not json")
        return "config.json.*not valid JSON"
    if what == "missing-weights":
        (path / "model.safetensors").unlink()
        return "model.safetensors is missing"
    if what == "truncated":
        raw = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(raw[: len(raw) // 3])
        return "model.safetensors is not a valid safetensors file"
    if what == "garbage-header":
        (path / "model.safetensors").write_bytes(b"\xff" * 100)
        return "model.safetensors is not a valid safetensors file"
    if what == "wrong-shapes":                  # config says a narrower flow than the weights
        meta = json.loads((path / "config.json").read_text())
        meta["model"]["flow_width"] = 16
        (path / "config.json").write_text(json.dumps(meta))
        return ("model.safetensors does not match .*config.json: config.json sets flow_width = 16, but these "
                "weights were saved with flow_width = 32. wrong shapes")
    if what == "unknown-field":
        meta = json.loads((path / "config.json").read_text())
        meta["model"]["wings"] = 2
        (path / "config.json").write_text(json.dumps(meta))
        return r"config.json: bad model config.*unknown field\(s\) \['wings'\]"
    if what == "wrong-format":
        meta = json.loads((path / "config.json").read_text())
        meta["format"] = "diffusers"
        (path / "config.json").write_text(json.dumps(meta))
        return "config.json.*format"
    if what == "no-config":
        (path / "config.json").unlink()
        return "not a FARMER checkpoint.*config.json is missing"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["bad-json", "missing-weights", "truncated", "garbage-header", "wrong-shapes",
                                  "unknown-field", "wrong-format", "no-config"])
def test_damaged_checkpoint_is_a_clear_value_error(saved, what):
    _, path = saved
    pattern = _damage(path, what)
    with pytest.raises(ValueError, match=pattern):
        farmer.load(path)


def test_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        farmer.load(tmp_path / "nowhere")


def test_raw_and_ema_weights_from_the_training_state(tmp_path):
    raw, ema = perturbed_model("tiny", seed=1), perturbed_model("tiny", seed=2)
    path = farmer.save(ema, tmp_path / "c", weights="ema")
    with pytest.raises(ValueError, match="no raw weights"):
        farmer.load(path, weights="raw")
    ck.save_training_state(path, {f"model/{k}": v for k, v in ck.model_state(raw).items()}, {"step": 1})
    assert _same_params(farmer.load(path), ema) and _same_params(farmer.load(path, weights="ema"), ema)
    assert _same_params(farmer.load(path, weights="raw"), raw)
    with pytest.raises(ValueError, match="weights must be"):
        farmer.load(path, weights="best")


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="farmer.Farmer"):
        farmer.save(nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(ValueError, match="reserved"):
        farmer.save(perturbed_model("tiny"), tmp_path / "x", format="mine")


def test_a_real_distilled_student_roundtrips(tmp_path):
    from farmer.distill import make_student
    model = perturbed_model("tiny")
    model.student = make_student(model)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(0.01 * torch.randn_like(p))                 # differ from the copy make_student starts from
    path = farmer.save(model, tmp_path / "d")
    loaded = farmer.load(path)
    assert _same_params(model.student, loaded.student)
    z = torch.randn(2, model.cfg.tokens, model.cfg.token_dim)
    assert torch.equal(model.decode(z, decoder="distilled"), loaded.decode(z, decoder="distilled"))
    ck.save_student(path, make_student(model))                              # overwrite atomically
    assert _same_params(farmer.load(path).student, make_student(model))
    with pytest.raises(FileNotFoundError):
        ck.save_student(tmp_path / "missing", make_student(model))


def test_checkpoint_and_distill_do_not_import_each_other():
    import ast
    import inspect
    import farmer.checkpoint
    import farmer.student
    for module in (farmer.checkpoint, farmer.student):
        tree = ast.parse(inspect.getsource(module))
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "distill" not in names, f"{module.__name__} imports farmer.distill"
