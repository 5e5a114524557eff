"""The app with several models: which view opens on which, what each map is, the command that redraws
a grid, refusals that name the control, the OOD caution, and no folder left behind (handlers, no browser)."""
import dataclasses
import json
import os
import shlex
import subprocess
import sys

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import need_or_skip
from _app_server import REPO, shipped_copy
from farmer import ood
from farmer.data import HOW_TO_GET_FMNIST

from app import Shelf, Workbench, render                                      # noqa: E402 (path set above)
from app.models import is_per_patch, map_kind, shipped_checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")
SHIPPED = REPO / "checkpoints" / "fmnist"


@pytest.fixture(scope="module")
def shelf():
    return Shelf.load(max_batch=8)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The shipped model loaded after a second folder with its weights whose card holds only a lower
    bits/dim: which view opens on which must follow the cards, not the folder names or their order."""
    bpd = json.loads((SHIPPED / "card.json").read_text())["bpd_test_k1"]
    other = shipped_copy(tmp_path_factory.mktemp("models") / "a-likelihood-card",
                         card={"bpd_test_k1": dict(bpd, bpd=bpd["bpd"] - 0.1)})
    return Shelf.load([other, SHIPPED], max_batch=2)


def test_the_shipped_model_is_loaded_and_serves_every_view(shelf):
    assert SHIPPED in set(shipped_checkpoints())
    assert shelf.names == ["fmnist"] and set(shelf.defaults.values()) == {"fmnist"}   # no run folders
    assert shelf.why_default("likelihood") == "the only model loaded (`fmnist`)"
    with pytest.raises(gr.Error, match="model must be one of"):
        shelf["fmnist-likelihood"]


def test_with_several_models_each_view_opens_on_the_one_its_card_suits(pair):
    assert pair.names == ["a-likelihood-card", "fmnist"]
    assert pair.defaults == {"sample": "fmnist", "channels": "fmnist", "interpolate": "fmnist",
                             "likelihood": "a-likelihood-card"}                 # from the cards
    assert "bits/dim" in pair.why_default("likelihood") and "FD" in pair.why_default("sample")
    _, summary, *_, numbers = pair["a-likelihood-card"].likelihood("model sample", sample_class="Bag", sample_seed=1)
    assert "Model `a-likelihood-card`" in summary and numbers["model"] == "a-likelihood-card"


def test_per_pixel_or_per_patch_comes_from_the_mixing_position(shelf):
    flagship = shelf["fmnist"].cfg
    assert not is_per_patch(flagship) and "at the split" in map_kind(flagship)   # DCT at the split
    at_input = dataclasses.replace(flagship, mixing_position="input")
    assert is_per_patch(at_input) and map_kind(at_input).startswith("per patch")
    plain = dataclasses.replace(flagship, channel_mixing="none")
    assert not is_per_patch(plain) and map_kind(plain).startswith("per pixel: no channel mixing")


def test_each_view_names_its_model_and_the_likelihood_view_its_map(shelf):
    wb = shelf["fmnist"]
    _, summary, heat, *_, numbers = wb.likelihood("model sample", sample_class="Bag", sample_seed=1)
    assert "Model `fmnist`" in summary and "**Map per pixel" in summary
    assert numbers["model"] == "fmnist" and "fmnist" in heat.layout.title.text
    assert "spread over patches" not in heat.layout.title.text
    assert "scores *worse* than a test image" in summary                       # point 10, where samples are scored
    assert "Model `fmnist`" in wb.classify("model sample", sample_class="Bag")[1]
    gallery, summary, *_ = wb.channels("model sample", draws=1)
    assert "Model `fmnist`" in summary
    assert "Model `fmnist`" in wb.interpolate("model sample", b_source="model sample", b_sample_seed=1, steps=3)[4]


def test_the_channels_summary_describes_the_settings_in_use(shelf):
    wb = shelf["fmnist"]
    kept = wb.channels("model sample", variance_scale=0.5, z_i_mode="keep", z_i_noise=2.0, draws=1,
                       z_r_mode="keep")[1]
    assert "Z^I (6 of 16 channels per token): kept" in kept and "Z^R (10): kept" in kept
    assert "other cases use Z^I noise 2×std and Z^R variance ×0.5" in kept
    zr = wb.channels("model sample", variance_scale=0.5, z_i_mode="keep", draws=1, z_r_mode="redraw")[1]
    assert "Z^I (6 of 16 channels per token): kept" in zr and "variance ×0.5" in zr and "perturbed:" not in zr
    zi = wb.channels("model sample", z_i_mode="perturb", z_i_noise=2.0, draws=1, z_r_mode="keep")[1]
    assert "perturbed: + 2 × each channel's std" in zi and "Z^R (10): kept" in zi


def test_the_settings_json_is_complete_and_its_command_redraws_the_grid_bit_for_bit(shelf, tmp_path):
    wb = shelf["fmnist"]
    *_, (grid, _, _, stats, report) = wb.sample("Bag", "resample", 1.5, 3, 2, 1.0, 0.85, 0.2, 1.0, 1.1,
                                                seed=5, batch_size=3, decoder="sequential")
    for key in ("cfg_scale", "candidates_cond", "candidates_uncond", "t_pi", "t_sigma", "t_pi_verify",
                "t_sigma_verify", "t_select", "seed", "decoder", "guidance", "batch_size", "model", "command"):
        assert key in stats, key
    assert stats["counts"]["draws"] > 0 and set(stats["counts_explained"]) >= {"draws", "picked_uncond"}
    assert stats["command"] in report
    args = shlex.split(stats["command"])
    assert args[:3] == ["farmer", "sample", "checkpoints/fmnist"]
    out = tmp_path / "grid.png"
    args[args.index("--out") + 1] = str(out)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "farmer", *args[1:]], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    png = np.asarray(Image.open(out))
    assert np.array_equal(render.enlarge(png, 448), grid)                    # the app's grid, bit for bit
    images = np.load(out.with_suffix(".npy"))
    assert images.shape == (3, 1, 28, 28) and np.array_equal(render.sample_grid(torch.from_numpy(images)), grid)


@pytest.mark.parametrize("call, message", [                                   # the clamps of issue 26, point 6
    (lambda wb: next(iter(wb.sample("Bag", t_sigma=7.0))), r"T_σ \(t_sigma\) must be a number from 0.05 to 3, got 7"),
    (lambda wb: next(iter(wb.sample("Bag", batch_size=99))), r"batch_size.* from 1 to 8, got 99"),
    (lambda wb: next(iter(wb.sample("Bag", cfg_scale=-1.0))), r"w \(guidance weight\) \(cfg_scale\) .* from 0 to 10"),
    (lambda wb: wb.channels("model sample", draws=16), r"draws must be a whole number from 1 to 8, got 16"),
    (lambda wb: wb.interpolate("model sample", b_source="model sample", steps=2),
     r"points on the path \(steps\) must be a whole number from 3 to 16, got 2"),
])
def test_out_of_range_values_are_refused_with_the_control_and_its_range(shelf, call, message):
    with pytest.raises(gr.Error, match=message) as err:
        call(shelf["fmnist"])
    assert err.value.print_exception is False                                  # no traceback in the server log


def test_out_of_distribution_images_get_a_caution_with_the_reason(shelf, tmp_path):
    need_or_skip(shelf["fmnist"].test is not None, f"the OOD reference needs Fashion-MNIST: "
                                                              f"{HOW_TO_GET_FMNIST}")
    wb = shelf["fmnist"]
    shape = ood.shape_images(1, seed=3)[0, 0].numpy()                         # AUROC 1.0 in benchmarks/ood.json
    Image.fromarray(shape).save(tmp_path / "shape.png")
    _, summary, *_, numbers = wb.likelihood("upload", upload=str(tmp_path / "shape.png"))
    assert numbers["ood"]["flagged"] and "Out-of-distribution caution" in summary
    assert "complexity score" in summary and "99%" in summary and "test images #9744" in summary
    _, csummary, cnumbers = wb.classify("upload", upload=str(tmp_path / "shape.png"))
    assert cnumbers["ood"]["flagged"] and "Out-of-distribution caution" in csummary
    _, summary, *_, numbers = wb.likelihood("test image", "any class", 0)
    assert not numbers["ood"]["flagged"] and "OOD check: in range" in summary
    assert numbers["ood"]["thresholds"]["reference_images"] == 256


def test_the_progressive_view_folder_is_removed_at_exit(tmp_path):
    code = ("from app.handlers import frames_folder; d = frames_folder(); (d / 'x.png').write_bytes(b'1'); "
            "print(d)")
    env = dict(os.environ, PYTHONPATH=str(REPO), GRADIO_ANALYTICS_ENABLED="False")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True,
                         text=True, timeout=300).stdout.strip().splitlines()[-1]
    assert out.startswith(tempfile_prefix()) and not os.path.exists(out)


def tempfile_prefix() -> str:
    import tempfile
    return os.path.join(tempfile.gettempdir(), "farmer-frames-")


def test_no_frames_folder_until_a_sample_is_drawn():
    import app.handlers as handlers
    before = dict(handlers._FRAMES)
    Workbench(SHIPPED, max_batch=1)
    assert handlers._FRAMES == before                                          # a start makes no folder


def test_checkpoint_is_repeatable_and_defaults_to_the_shipped_models():
    from app.__main__ import parse_args
    assert parse_args([]).checkpoint is None                                   # None: shipped_checkpoints()
    assert parse_args(["--checkpoint", "a", "--checkpoint", "b"]).checkpoint == ["a", "b"]
