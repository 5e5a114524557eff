"""farmer.decoder_error: decoder errors in pixels (grey levels) beside the flow space, on encoded images
and on sampled latents."""
from __future__ import annotations

import pytest
import torch
from _models import perturbed_model

from farmer.data import dequantize_uniform, load_digits, quantize
from farmer.decoder_error import reconstruction_error, sampled_decoder_error
from farmer.distill import reconstruction_error as re_exported
from farmer.student import make_student

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lu_model():
    """A tiny model with LU input mixing moved off its init (flow space != pixel space) and a rough student."""
    model = perturbed_model("tiny", seed=1, channel_mixing="lu", mixing_position="input")
    with torch.no_grad():
        model.mixing.log_s.add_(0.5 * torch.randn_like(model.mixing.log_s))
        model.mixing.upper.add_(0.5 * torch.randn_like(model.mixing.upper))
    model.student = make_student(model)
    return model


def test_pixel_figures_are_the_decoded_images_error_in_grey_levels(lu_model):
    images = load_digits("test").images[:24]
    res = reconstruction_error(lu_model, images, decoder="distilled", seed=3)
    assert re_exported is reconstruction_error
    # the same figures by hand: dequantise with the seed, encode, decode with the student, clip
    g = torch.Generator().manual_seed(3)
    x = dequantize_uniform(images, generator=g)
    z, _ = lu_model.encode(x)
    x_hat = lu_model.decode(z, decoder="distilled")
    err = (x_hat.clamp(-1, 1) - x.clamp(-1, 1)).double()
    assert res["rmse_gray"] == pytest.approx(float(err.square().mean().sqrt()) * 128, rel=1e-4)
    assert res["max_abs_gray"] == pytest.approx(float(err.abs().max()) * 128, rel=1e-4)
    assert res["changed_pixels"] == pytest.approx(float((quantize(x_hat) != quantize(x)).double().mean()))
    # flow space differs from pixel space under LU mixing: the two are reported apart, never mixed
    assert res["flow_mse"] > 0 and abs(res["flow_mse"] / res["mse"] - 1) > 0.05
    assert res["exact_rmse_gray"] < 1e-2 and res["latents"] == "encoded test images"


def test_exact_decoders_are_exact_in_both_settings(lu_model):
    images = load_digits("test").images[:8]
    for d in ("sequential", "jacobi", "hybrid"):
        assert reconstruction_error(lu_model, images, decoder=d, exact=False)["rmse_gray"] < 1e-2
    sampled = sampled_decoder_error(lu_model, ("sequential", "jacobi", "distilled"), 6, batch_size=4, seed=2)
    assert set(sampled) == {"sequential", "jacobi", "distilled"}
    assert sampled["sequential"]["rmse_gray"] < 1e-2 and sampled["jacobi"]["rmse_gray"] < 1e-2
    assert sampled["distilled"]["rmse_gray"] > 1.0                            # the rough student is not exact
    assert sampled["distilled"]["latents"] == "sampled" and sampled["distilled"]["num_samples"] == 6
    guided = sampled_decoder_error(lu_model, "distilled", 4, guidance="resample", cfg_scale=1.0)
    assert guided["distilled"]["sampling"] == {"guidance": "resample", "cfg_scale": 1.0}


def test_bad_arguments_are_named(lu_model):
    with pytest.raises(ValueError, match="images must be uint8"):
        reconstruction_error(lu_model, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="decoder must be one of"):
        reconstruction_error(lu_model, load_digits("test").images[:2], decoder="magic")
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        sampled_decoder_error(lu_model, "sequential", 0)
    bare = perturbed_model("tiny", seed=1)
    with pytest.raises(ValueError, match="distilled student"):
        sampled_decoder_error(bare, "distilled", 2)
