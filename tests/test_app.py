"""The app's handlers called directly on the shipped model (no server, no browser).

Properties only, never figures: the shipped checkpoint is replaced as training improves.
"""
import math

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import farmer
from conftest import need_or_skip
from _app_server import REPO, shipped_copy, tiny_png
from farmer.data import HOW_TO_GET_FMNIST

from app import DEFAULT_CHECKPOINT, Workbench, build_app                       # noqa: E402 (path set above)
from app import render
from app.handlers import GUIDED_ONLY, RESAMPLE_ONLY, check, ignored_settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wb():
    return Workbench()


@pytest.fixture
def test_data(wb):
    need_or_skip(wb.test is not None, f"the app's test-image source needs Fashion-MNIST: {HOW_TO_GET_FMNIST}")
    return wb.test


def png(path: str) -> np.ndarray:
    """A progressive-view frame (a PNG path) -> its pixels."""
    return np.asarray(Image.open(path))


def last(gen):
    """Run a streaming handler to the end; return (all yields, the final one)."""
    out = list(gen)
    return out, out[-1]


def test_default_checkpoint_is_the_shipped_model_whatever_the_cwd(wb, monkeypatch, tmp_path):
    assert DEFAULT_CHECKPOINT == REPO / "checkpoints" / "fmnist"
    assert wb.checkpoint == DEFAULT_CHECKPOINT and wb.cfg == farmer.load(DEFAULT_CHECKPOINT).cfg
    monkeypatch.chdir(tmp_path)
    assert Workbench(max_batch=2).checkpoint == DEFAULT_CHECKPOINT


@pytest.mark.parametrize("cls, guidance, decoder", [("Trouser", "resample", "sequential"),
                                                    ("unconditional", "none", "distilled"),
                                                    ("Bag", "naive", "jacobi"), ("Coat", "none", "hybrid")])
def test_sample_streams_the_progressive_view_then_the_grid(wb, cls, guidance, decoder):
    if decoder not in wb.decoders:
        pytest.skip("this checkpoint has no distilled student")
    yields, (grid, seconds, frames, stats, report) = last(wb.sample(cls, guidance, 2.0, seed=3, batch_size=2,
                                                            decoder=decoder))
    n = wb.cfg.flow_blocks
    assert len(yields) == 3 + 1 + n + 1                                        # token snapshots, Z^R, blocks, done
    assert all(y[0] is None for y in yields[:-1])                              # the grid comes at the end
    assert [len(y[2]) for y in yields[:-1]] == list(range(1, len(yields)))     # frames accumulate
    assert grid.dtype == np.uint8 and grid.ndim == 2 and min(grid.shape) >= 2 * 28
    assert isinstance(seconds, float) and seconds > 0
    assert len(frames) == 3 + 1 + n and all(png(f).dtype == np.uint8 for f, _ in frames)
    assert "tokens drawn" in frames[0][1] and f"block 1 of {n}" in frames[-1][1]
    assert stats["batch_size"] == 2 and stats["decoder"] == decoder and stats["class"] == cls
    assert stats["model"] == wb.name and f"`{wb.name}`" in report and stats["command"] in report
    assert stats["guidance"] == ("none" if cls == "unconditional" else guidance)
    if decoder in ("jacobi", "hybrid"):                                        # iterations per block, shown
        assert len(stats["jacobi_iterations"]) == n and 1 <= stats["jacobi_mean_iterations"] <= wb.cfg.tokens - 1


@pytest.mark.parametrize("cls, guidance, w, flagged, unused", [
    ("Trouser", "resample", 2.0, False, ()),
    ("unconditional", "resample", 4.0, True, GUIDED_ONLY),                     # runs as none: say so
    ("unconditional", "naive", 1.0, True, GUIDED_ONLY),
    ("Bag", "none", 3.0, False, GUIDED_ONLY),                                  # w etc. greyed out
    ("Bag", "naive", 3.0, False, RESAMPLE_ONLY),
    ("Bag", "resample", 0.0, True, RESAMPLE_ONLY),                             # w = 0 is no guidance
])
def test_ignored_settings_are_named(cls, guidance, w, flagged, unused):
    note, names = ignored_settings(cls, guidance, w)
    assert set(names) == set(unused) and ("⚠" in note) == flagged and bool(note) == bool(unused)
    if cls == "unconditional":
        assert "ignored" in note and f"w = {w:g}" in note and guidance in note


def test_an_ignored_setting_is_in_the_stats_and_matches_what_ran(wb):
    *_, (_, _, _, stats, _) = wb.sample("unconditional", "resample", 4.0, seed=1, batch_size=1)
    assert stats["guidance"] == "none" and stats["cfg_scale"] == 0.0 and "ignored" in stats["ignored"]
    *_, (_, _, _, stats, _) = wb.sample("Trouser", "resample", 4.0, seed=1, batch_size=1)
    assert stats["guidance"] == "resample" and "ignored" not in stats


def test_integer_bounds_are_written_as_integers():
    with pytest.raises(gr.Error, match="from 0 to 2147483647, got -1"):
        check("seed", -1)
    with pytest.raises(gr.Error, match="from 0.05 to 3, got"):
        check("t_sigma", 0.0)


def test_every_frame_of_the_progressive_view_shows_the_whole_batch(wb):
    B = 10                                                                     # more than 8, not a square
    *_, (grid, _, frames, _, _) = wb.sample("Sneaker", "none", seed=2, batch_size=B)
    cells = render.image_frame(torch.zeros(B, 1, 28, 28), B, pixels=True).shape
    assert all(png(f).shape[:2] == cells[:2] for f, _ in frames)
    assert cells[:2] != render.image_frame(torch.zeros(B, 1, 28, 28), 8, pixels=True).shape[:2]
    n = wb.cfg.flow_blocks
    assert [c for _, c in frames[-n:]][0].startswith(f"inverse 1/{n}: block {n} of {n} undone")
    assert "the image" in frames[-1][1] and "Reading the progressive view" in wb.latent_help()
    assert "bottom-right" in wb.latent_help() and f"first {wb.cfg.d_i} values" in wb.latent_help()


def test_sample_grid_is_the_library_sample(wb):
    *_, (grid, _, frames, _, _) = wb.sample("Sneaker", "resample", 1.5, 3, 2, 1.0, 0.9, 0.2, 1.0, 1.1, seed=7,
                                         batch_size=3, decoder="sequential")
    imgs = farmer.sample(wb.model, [7, 7, 7], guidance="resample", cfg_scale=1.5, candidates_cond=3,
                         candidates_uncond=2, t_pi=1.0, t_sigma=0.9, t_pi_verify=0.2, t_sigma_verify=1.0,
                         t_select=1.1, seed=7)
    assert np.array_equal(grid, render.sample_grid(imgs))                      # a thin shell: same pixels
    assert np.array_equal(png(frames[-1][0]), render.image_frame(
        farmer.sample(wb.model, [7] * 3, guidance="resample", cfg_scale=1.5, candidates_cond=3,
                      candidates_uncond=2, t_pi=1.0, t_sigma=0.9, t_pi_verify=0.2, t_sigma_verify=1.0,
                      t_select=1.1, seed=7, return_intermediates=True).block_images[-1], 8, pixels=True))


@pytest.mark.parametrize("name, kwargs", [
    ("cfg_scale", dict(cfg_scale=11.0)), ("cfg_scale", dict(cfg_scale=float("nan"))),
    ("t_sigma", dict(t_sigma=0.0)), ("t_pi", dict(t_pi=-1.0)), ("candidates_cond", dict(candidates_cond=2.5)),
    ("seed", dict(seed=-1)), ("batch_size", dict(batch_size=10_000)), ("batch_size", dict(batch_size=None)),
    ("guidance", dict(guidance="cfg++")), ("decoder", dict(decoder="bogus")), ("class", dict(class_name="Hat")),
    ("candidate", dict(candidates_cond=0, candidates_uncond=0)),
])
def test_sample_rejects_bad_values_with_a_named_message(wb, name, kwargs):
    args = dict(class_name="Trouser", guidance="resample", batch_size=1) | kwargs
    with pytest.raises(gr.Error, match=name):
        next(iter(wb.sample(**args)))


def test_likelihood_of_a_test_image_is_model_nll_and_the_heatmap_sums_to_it(wb, test_data):
    image, summary, heat, tokens, blocks, split, numbers = wb.likelihood("test image", "any class", 5)
    x, y = test_data.get_batch([5])
    ref = wb.model.nll(x, y, seed=0)
    bpd, D = numbers["bits_per_dim"], wb.cfg.data_dim
    assert math.isfinite(bpd) and bpd == pytest.approx(float(ref["bpd"][0]), abs=1e-6)
    pixel = np.asarray(heat.data[0].z, dtype=np.float64)
    assert pixel.shape == (28, 28) and pixel.sum() == pytest.approx(bpd * D, rel=1e-5)
    assert sum(numbers["terms_bits_per_dim"].values()) == pytest.approx(bpd, abs=1e-4)
    split_ = numbers["prior_split_bits_per_dim"]
    assert split_["informative"] + split_["redundant"] == pytest.approx(split_["total"])
    assert split_["informative"] == pytest.approx(float(ref["prior_informative"][0]) / (D * math.log(2)), rel=1e-5)
    assert len(numbers["block_bits_per_dim"]) == wb.cfg.flow_blocks
    tok = np.asarray(tokens.data[0].z, dtype=np.float64)
    assert tok.shape == (7, 7) and tok.sum() == pytest.approx(bpd * D, rel=1e-5)
    assert image.dtype == np.uint8 and image.shape[0] >= 28 and "bits/dim" in summary
    assert wb.classes[int(y[0])] in summary and "single-sample" in numbers["estimator"]


def test_test_image_by_class_and_the_label_to_score_under(wb, test_data):
    *_, numbers = wb.likelihood("test image", "Bag", 2, condition="unconditional")
    i = int(np.flatnonzero(test_data.labels.numpy() == 8)[2])
    x, _ = test_data.get_batch([i])
    assert numbers["bits_per_dim"] == pytest.approx(float(wb.model.nll(x, None, seed=0)["bpd"][0]), abs=1e-6)
    assert f"#{i}" in numbers["image"] and "null class" in numbers["conditioning"]
    with pytest.raises(gr.Error, match="test_index"):
        wb.likelihood("test image", "Bag", 5000)                               # only ~1000 bags


def test_likelihood_of_a_model_sample(wb):
    *_, numbers = wb.likelihood("model sample", sample_class="Coat", sample_seed=4)
    x = farmer.sample(wb.model, [4], seed=4)
    assert numbers["bits_per_dim"] == pytest.approx(float(wb.model.nll(x, torch.tensor([4]), seed=0)["bpd"][0]),
                                                    abs=1e-6)


@pytest.mark.parametrize("mode, size, note", [("RGB", (60, 40), "luma"), ("RGBA", (28, 28), "transparency"),
                                              ("P", (300, 90), "palette"), ("I;16", (28, 50), "16-bit")])
def test_uploads_of_any_mode_and_size_are_converted_with_a_note(wb, tmp_path, mode, size, note):
    path = tmp_path / "in.png"
    if mode == "I;16":
        Image.fromarray((np.arange(size[0] * size[1]).reshape(size[1], size[0]) * 40).astype(np.uint16)).save(path)
    elif mode == "RGBA":
        a = np.zeros((28, 28, 4), np.uint8)
        a[8:20, 8:20] = 255
        Image.fromarray(a, "RGBA").save(path)
    else:
        tiny_png(path, size, mode)
    image, summary, heat, *_, numbers = wb.likelihood("upload", upload=str(path))
    assert any(note in n for n in numbers["conversion"]) and "Converted" in summary
    assert math.isfinite(numbers["bits_per_dim"]) and image.dtype == np.uint8
    assert np.asarray(heat.data[0].z).shape == (28, 28)


def test_upload_notes_flat_noise_tiny_images_and_the_invert_hint(wb, tmp_path):
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 256, (200, 300, 3)).astype(np.uint8)).save(tmp_path / "noise.png")
    *_, numbers = wb.likelihood("upload", upload=str(tmp_path / "noise.png"))
    notes = numbers["conversion"]
    assert any("variance" in n for n in notes) and not any("invert" in n for n in notes)   # noise: no hint
    Image.fromarray(rng.randint(0, 256, (28, 28)).astype(np.uint8)).save(tmp_path / "noise28.png")
    _, summary, *_, numbers = wb.likelihood("upload", upload=str(tmp_path / "noise28.png"))
    assert not any("invert" in n for n in numbers["conversion"])               # light border, yet no hint
    assert numbers["ood"]["flagged"] and "Out-of-distribution caution" in summary   # but a caution, with why
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(tmp_path / "grey.png")
    *_, numbers = wb.likelihood("upload", upload=str(tmp_path / "grey.png"))
    assert not any("invert" in n for n in numbers["conversion"])              # flat mid-grey: no hint
    shirt = np.full((40, 40), 245, np.uint8)
    shirt[8:32, 10:30] = 30
    Image.fromarray(shirt).save(tmp_path / "shirt.png")
    *_, numbers = wb.likelihood("upload", upload=str(tmp_path / "shirt.png"))
    assert any("try 'invert'" in n for n in numbers["conversion"])
    Image.fromarray((np.indices((5, 5)).sum(0) % 2 * 255).astype(np.uint8)).save(tmp_path / "tiny.png")
    image, _, _, *_, numbers = wb.likelihood("upload", upload=str(tmp_path / "tiny.png"))
    assert any("nearest-neighbour" in n for n in numbers["conversion"])
    assert set(np.unique(image)) <= {0, 255}                                   # blocks, not blurred blobs


def test_non_image_and_missing_uploads_are_clear_errors(wb, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not a picture")
    with pytest.raises(gr.Error, match="not an image"):
        wb.likelihood("upload", upload=str(txt))
    with pytest.raises(gr.Error, match="upload"):
        wb.likelihood("upload", upload=None)
    with pytest.raises(gr.Error, match="source"):
        wb.likelihood("webcam")


def test_compare_puts_both_heatmaps_on_one_scale(wb):
    out = wb.compare("model sample", a_sample_class="Trouser", a_sample_seed=1,
                     b_source="model sample", b_sample_class="Bag", b_sample_seed=2)
    assert len(out) == 16
    for k in (2, 3):                                                           # pixel maps, then token maps
        a, b = out[k].data[0], out[7 + k].data[0]
        assert (a.zmin, a.zmax) == (b.zmin, b.zmax)
        assert a.zmin == pytest.approx(min(np.min(a.z), np.min(b.z)))
        assert a.zmax == pytest.approx(max(np.max(a.z), np.max(b.z)))
    d = out[13]["bits_per_dim"] - out[6]["bits_per_dim"]
    assert out[14].startswith(f"**B − A = {d:+.3f} bits/dim**")
    diff = np.asarray(out[15].data[0].z, dtype=np.float64)                    # per-pixel B − A
    assert np.allclose(diff, np.asarray(out[9].data[0].z) - np.asarray(out[2].data[0].z))
    assert diff.sum() == pytest.approx(d * wb.cfg.data_dim, rel=1e-4)


def test_the_terms_chart_gives_the_prior_split_its_own_axis(wb):
    *_, split, numbers = wb.likelihood("model sample", sample_class="Coat", sample_seed=4)
    assert [t.xaxis for t in split.data] == ["x", "x2"] and [t.yaxis for t in split.data] == ["y", "y2"]
    terms = numbers["terms_bits_per_dim"]
    assert list(split.data[1].y) == pytest.approx([terms["prior_informative"], terms["prior_redundant"]])
    lo, hi = split.layout.yaxis2.range                                         # the split fills its axis
    assert hi - lo < 3 * max(abs(terms["prior_informative"]), abs(terms["prior_redundant"]))


def _shown_change(summary: str) -> float:
    import re
    return float(re.search(r"mean \|pixel change\| ([0-9.]+) grey levels\*\*", summary).group(1))


@pytest.mark.parametrize("z_i_mode, z_r_mode", [("keep", "keep"), ("keep", "redraw"), ("perturb", "keep"),
                                                ("perturb", "redraw")])
def test_channels_four_cases_and_their_pixel_change(wb, test_data, z_i_mode, z_r_mode):
    gallery, summary, *_ = wb.channels("test image", "any class", 3, variance_scale=1.0, z_i_mode=z_i_mode,
                                       z_i_noise=1.0, draws=3, seed=1, z_r_mode=z_r_mode)
    chosen = (z_i_mode, z_r_mode) != ("keep", "keep")
    assert len(gallery) == 2 + 3 * chosen
    recon = gallery[1][0][::6, ::6].astype(float)                              # 168 px = 28 × 6
    draws = [g[0][::6, ::6].astype(float) for g in gallery[2:]]
    want = np.mean([np.abs(d - recon).mean() for d in draws]) if chosen else 0.0
    assert _shown_change(summary) == pytest.approx(want, abs=0.051)
    assert "◀ shown" in summary and "In this model Z^I carries the structure" in summary


def test_perturbing_z_i_keeps_z_r_and_redrawing_z_r_keeps_z_i(wb, test_data):
    """With zero noise on Z^I and Z^R kept the image is the reconstruction exactly: perturb does not
    also redraw Z^R (it did once). At variance 0 the redraw is the component means, still a change."""
    _, summary, *_ = wb.channels("test image", "any class", 3, z_i_mode="perturb", z_i_noise=0.0,
                                 z_r_mode="keep", draws=2)
    assert _shown_change(summary) == 0.0
    _, summary, *_ = wb.channels("test image", "any class", 3, z_i_mode="perturb", z_i_noise=1.0,
                                 z_r_mode="keep", draws=2)
    ref = wb.structure_reference()
    assert _shown_change(summary) > 5.0 and ref["ratio"] < 1                    # the shipped model: Z^I holds it
    assert f"ratio {ref['ratio']:.2f}" in summary


@pytest.mark.parametrize("z_i_mode", ["keep", "perturb"])
def test_channels_redraws_the_redundant_group(wb, z_i_mode):
    gallery, summary, table, chart = wb.channels("model sample", sample_class="Sandal", sample_seed=1,
                                                 variance_scale=1.5, z_i_mode=z_i_mode, draws=3, seed=2)
    cfg = wb.cfg
    assert len(gallery) == 2 + 3 and all(img.dtype == np.uint8 for img, _ in gallery)
    assert len(table) == cfg.token_dim and list(table["group"]).count("informative Z^I") == cfg.d_i
    assert len(chart.data[0].y) == cfg.token_dim and "grey levels" in summary
    again = wb.channels("model sample", sample_class="Sandal", sample_seed=1, variance_scale=1.5,
                        z_i_mode=z_i_mode, draws=3, seed=2)[0]
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(gallery, again))       # seeded
    other = wb.channels("model sample", sample_class="Sandal", sample_seed=1, variance_scale=1.5,
                        z_i_mode=z_i_mode, draws=3, seed=3)[0]
    assert not np.array_equal(gallery[2][0], other[2][0])


def test_channels_at_zero_variance_and_the_reconstruction(wb):
    gallery, *_ = wb.channels("model sample", sample_class="Dress", variance_scale=0.0, draws=2, seed=0)
    x = farmer.sample(wb.model, [3], seed=0)                                   # the same picked image
    recon = gallery[1][0]
    assert np.abs(recon.astype(int)[::6, ::6] - x[0, 0].numpy().astype(int)).max() <= 2   # exact up to rounding


@pytest.mark.parametrize("kwargs, name", [(dict(variance_scale=4.5), "variance_scale"),
                                          (dict(draws=0), "draws"), (dict(z_i_mode="shuffle"), "Z\\^I"),
                                          (dict(z_i_noise=-0.1), "z_i_noise")])
def test_channels_rejects_bad_values(wb, kwargs, name):
    with pytest.raises(gr.Error, match=name):
        wb.channels("model sample", **kwargs)


def test_classify_a_test_image_is_farmer_classify(wb, test_data):
    chart, summary, numbers = wb.classify("test image", "any class", 7, noise_draws=2)
    x, y = test_data.get_batch([7])
    ref = farmer.classify(wb.model, x, k=2, seed=0)[0].exp()
    bars = np.asarray(chart.data[0].y, dtype=np.float64)
    assert list(chart.data[0].x) == wb.classes and bars == pytest.approx(ref.double().numpy(), abs=1e-6)
    assert bars.sum() == pytest.approx(1.0, abs=1e-6)
    best = wb.classes[int(ref.argmax())]
    assert numbers["predicted"] == best and f"**p(y|x): {best}" in summary
    assert numbers["own_label"] == wb.classes[int(y[0])] and ("right" in summary or "wrong" in summary)
    assert "2 draws" in numbers["estimator"] and numbers["noise_draws"] == 2


def test_classify_a_sample_and_an_upload(wb, tmp_path):
    _, summary, numbers = wb.classify("model sample", sample_class="Trouser", sample_seed=2)
    x = farmer.sample(wb.model, [1], seed=2)
    assert numbers["probabilities"]["Trouser"] == pytest.approx(float(farmer.classify(wb.model, x)[0, 1].exp()),
                                                                abs=1e-6)
    _, summary, numbers = wb.classify("upload", upload=str(tiny_png(tmp_path / "u.png", (50, 30))))
    assert numbers["own_label"] is None and "Converted" in summary
    assert sum(numbers["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(gr.Error, match="noise_draws"):
        wb.classify("model sample", noise_draws=9)


def test_interpolate_walks_both_paths_from_a_to_b(wb):
    lin, sph, bpd_chart, norm_chart, summary, numbers = wb.interpolate(
        "model sample", a_sample_class="Trouser", a_sample_seed=1,
        b_source="model sample", b_sample_class="Bag", b_sample_seed=2, steps=5)
    x_a, x_b = farmer.sample(wb.model, [1], seed=1), farmer.sample(wb.model, [8], seed=2)
    ref = farmer.interpolate(wb.model, x_a, x_b, steps=5, path="spherical")
    assert np.array_equal(sph, render.strip(ref["images"][0]))                 # a thin shell: same pixels
    assert lin.shape == sph.shape and lin.dtype == np.uint8 and not np.array_equal(lin, sph)
    k = sph.shape[1] // (5 * 30 + 2)                                           # one row of 5, each pixel k×k
    assert np.array_equal(sph[::k, ::k], farmer.sampling.image_grid(ref["images"][0], nrow=5)[..., 0])
    sixteen = render.strip(torch.zeros(16, 1, 28, 28, dtype=torch.uint8))   # 16 points: 2 rows of 8, not a band
    assert sixteen.shape[1] // sixteen.shape[0] == (8 * 30 + 2) // (2 * 30 + 2)
    assert np.array_equal(ref["images"][0, 0], x_a[0]) and np.array_equal(ref["images"][0, -1], x_b[0])
    assert numbers["bits_per_dim"]["spherical"] == pytest.approx(ref["bpd"][0].tolist(), abs=1e-6)
    assert [tr.name for tr in bpd_chart.data] == ["linear", "spherical"] and len(bpd_chart.data[0].y) == 5
    lin_norm, sph_norm = numbers["latent_norm"]["linear"], numbers["latent_norm"]["spherical"]
    assert sph_norm[2] == pytest.approx((sph_norm[0] + sph_norm[-1]) / 2, rel=1e-4)   # norm linear in t
    assert lin_norm[2] < sph_norm[2] and "bits/dim" in summary
    with pytest.raises(gr.Error, match="steps"):
        wb.interpolate("model sample", b_source="model sample", steps=2)
    with pytest.raises(gr.Error, match="decoder"):
        wb.interpolate("model sample", b_source="model sample", decoder="bogus")


def test_the_app_builds_with_named_endpoints_and_a_bounded_queue(wb):
    demo = build_app(wb, queue_size=5, concurrency=1)
    served = [fn for fn in demo.fns.values() if fn.fn is not None and fn.api_visibility == "public"]
    assert sorted(fn.api_name for fn in served) == ["channels", "classify", "classify_b", "compare", "interpolate",
                                                    "likelihood", "likelihood_b", "sample"]
    assert all(fn.queue and fn.concurrency_limit == 1 and fn.concurrency_id == "model" for fn in served)
    # the rest: browser-side js, control greying and clearing after a failure; none runs the model
    helpers = [fn for fn in demo.fns.values() if fn.fn is not None and fn.api_visibility != "public"]
    assert helpers and all(fn.concurrency_id != "model" and not fn.queue for fn in helpers)
    assert demo._queue.max_size == 5


def test_another_checkpoint_via_the_checkpoint_argument(tmp_path):
    from _models import perturbed_model
    model = perturbed_model("tiny")
    farmer.save(model, tmp_path / "tiny")
    wb = Workbench(tmp_path / "tiny", max_batch=2)
    assert wb.cfg == model.cfg and wb.decoders == ("sequential", "jacobi")  # no student in this one
    assert wb.test is None and "No test images" in wb.test_error               # 8×8 model, 28×28 data
    *_, (grid, seconds, frames, stats, _) = wb.sample(wb.class_choices[-1], "resample", batch_size=2)
    assert grid.dtype == np.uint8 and seconds > 0 and stats["checkpoint"] == str(tmp_path / "tiny")
    with pytest.raises(gr.Error, match="No test images"):
        wb.likelihood("test image")
    with pytest.raises(gr.Error, match="batch_size"):
        next(iter(wb.sample(batch_size=3)))
    *_, numbers = wb.likelihood("model sample", sample_class=wb.class_choices[1])
    pixel_sum = numbers["pixel_bits_sum"]
    assert pixel_sum == pytest.approx(numbers["bits_per_dim"] * wb.cfg.data_dim, rel=1e-5)
    assert len(wb.channels("model sample", draws=1)[0]) == 3
    _, _, numbers = wb.classify("model sample", sample_class=wb.class_choices[1])
    assert len(numbers["probabilities"]) == wb.cfg.num_classes
    assert len(wb.interpolate("model sample", b_source="model sample", b_sample_seed=1, steps=3)[5]["t"]) == 3


def test_main_reports_a_missing_checkpoint_without_a_traceback(tmp_path):
    from app.__main__ import main
    with pytest.raises(SystemExit, match="cannot load the model.*does not exist"):
        main(["--checkpoint", str(tmp_path / "nowhere")])


def test_the_header_says_which_shipped_model_is_loaded(wb, tmp_path):
    from app.ui import header
    assert "the flagship model" in header(wb)                                  # the card's title
    bare = Workbench(shipped_copy(tmp_path / "bare"), max_batch=2)              # the same weights, no card
    assert bare.card_title == "" and "flagship" not in header(bare)
