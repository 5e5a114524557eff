"""The `farmer` command line: train --dry-run per preset, flags and help, eval == model.nll, bench."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
from _models import perturbed_model

import farmer
from farmer.cli import build_parser
from farmer.config import FarmerConfig, TrainConfig
from farmer.data import load_digits
from farmer.likelihood import evaluate_split, importance_weighted_nll

pytestmark = pytest.mark.usefixtures("one_thread")


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["train", "eval", "bench", "export", "sample", "distill", "classifier",
                                     "quality"])
def test_every_flag_has_help(command):
    for action in _subparser(command)._actions:
        assert action.help and action.help.strip(), f"farmer {command}: {action.option_strings or action.dest}"


@pytest.mark.parametrize("command", ["train", "eval", "bench", "export", "sample", "distill", "classifier",
                                     "quality"])
def test_help_prints(command, capsys):
    """argparse formats help text with %: a stray % in a config comment would crash --help."""
    from farmer.cli import main
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: farmer " + command in capsys.readouterr().out


def test_every_config_field_is_a_train_flag():
    flags = {opt for a in _subparser("train")._actions for opt in a.option_strings}
    for cls in (FarmerConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert "--" + f.name.replace("_", "-") in flags, f.name


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "digits", "fmnist"])
def test_train_dry_run_for_each_small_preset(preset, run_farmer, tmp_path, request):
    extra = []
    if preset == "fmnist":
        extra = ["--data-dir", str(request.getfixturevalue("fmnist_dir"))]
    out = run_farmer("train", "--preset", preset, "--dry-run", "--no-progress", "--device", "cpu", *extra,
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    cfg = farmer.presets[preset]
    assert "farmer train (dry run)" in out.stdout                         # the banner with the resolved config
    assert f"flow_blocks        {cfg.flow_blocks}" in out.stdout and "[train]" in out.stdout
    assert "steps 0..2" in out.stdout and "done: 2 steps" in out.stdout
    assert list(tmp_path.iterdir()) == []                                # a dry run keeps nothing


@pytest.mark.slow
def test_train_dry_run_of_the_64x64_rgb_preset(run_farmer, tmp_path):
    """imagenet64: 64×64 RGB, a few hundred million parameters at most, two real steps on synthetic data."""
    cfg = farmer.presets["imagenet64"]
    assert (cfg.image_size, cfg.channels) == (64, 3)
    from farmer.preflight import meta_build                           # counted on the meta device
    params = sum(p.numel() for p in meta_build(lambda: farmer.Farmer(cfg)).parameters())
    assert 50e6 < params <= 300e6, params
    # --sample-every 0: the end-of-run sample grid (20 sequential inverses) would triple the time.
    # --precision fp32: the preset's bf16 is for GPUs; on a CPU without native bf16 (AVX512-BF16 / AMX,
    # e.g. the AMD EPYC these machines are sometimes given) autocast emulates it and one step takes minutes
    out = run_farmer("train", "--preset", "imagenet64", "--data", "synthetic", "--batch-size", "2", "--dry-run",
                     "--precision", "fp32", "--sample-every", "0", "--no-progress", "--device", "cpu",
                     cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"model {params:,} parameters" in out.stdout and "done: 2 steps" in out.stdout
    assert "crop               random" in out.stdout                      # the ImageNet recipe crops at random
    assert list(tmp_path.iterdir()) == []


def test_flags_override_the_preset_and_reach_the_checkpoint(run_farmer, tmp_path):
    out = run_farmer("train", "--preset", "tiny", "--out", tmp_path / "run", "--steps", "3", "--no-progress",
                     "--flow-blocks", "3", "--head-width", "16", "--lr", "0.01", "--noise", "gaussian",
                     "--export-weights", "raw", "--data", "synthetic", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "flow_blocks        3" in out.stdout and "noise              gaussian" in out.stdout
    meta = json.loads((farmer.checkpoint.resolve(tmp_path / "run") / "config.json").read_text())
    assert meta["model"]["flow_blocks"] == 3 and meta["model"]["head_width"] == 16
    assert meta["train"]["lr"] == 0.01 and meta["weights"] == "raw" and meta["step"] == 3
    assert farmer.load(tmp_path / "run").cfg.flow_blocks == 3
    bad = run_farmer("train", "--preset", "tiny", "--noise", "pink", "--dry-run")
    assert bad.returncode == 2 and "invalid choice: 'pink'" in bad.stderr


def test_bad_data_is_one_clear_line(run_farmer, tmp_path):
    out = run_farmer("train", "--preset", "tiny", "--data", str(tmp_path / "no-such-folder"), "--dry-run")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "farmer train: error: image folder" in out.stderr and "does not exist" in out.stderr


# ---------------------------------------------------------------------------- eval
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = perturbed_model("tiny", seed=3)
    path = farmer.save(model, tmp_path_factory.mktemp("ck") / "tiny", train={"data": "digits"}, step=5)
    return model, path


@pytest.mark.parametrize("batch", [64, 24])
def test_eval_bits_per_dim_equal_model_nll_on_the_same_images(checkpoint, run_farmer, tmp_path, batch):
    model, path = checkpoint
    res_file = tmp_path / "eval.json"
    out = run_farmer("eval", path, "--split", "test", "--limit", "64", "--batch-size", batch, "--out", res_file,
                     "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(res_file.read_text())
    assert res["estimator"].startswith("single-sample") and res["k"] == 1 and res["images"] == 64
    assert res["data"] == "digits" and res["split"] == "test" and res["step"] == 5
    test = load_digits("test")
    x, y = test.images[:64], test.labels[:64]
    # batch i of the evaluation uses dequantisation seed i (with k = 1)
    bpd = torch.cat([model.nll(x[s:s + batch], y[s:s + batch], seed=i)["bpd"]
                     for i, s in enumerate(range(0, 64, batch))])
    assert res["bpd"] == pytest.approx(bpd.double().mean().item(), rel=1e-6)
    assert f"{res['bpd']:.4f}" in out.stdout


def test_importance_weighted_bound_is_below_the_single_sample_estimates(checkpoint, run_farmer, tmp_path):
    model, path = checkpoint
    out = run_farmer("eval", path, "--k", "4", "--limit", "128", "--out", tmp_path / "iw.json", "--no-progress")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "iw.json").read_text())
    assert res["estimator"].startswith("importance-weighted bound, K=4") and res["k"] == 4
    # −log mean_k p_k ≤ mean_k (−log p_k) for every image (Jensen), so also on average over the split
    assert res["bpd"] < res["bpd_single_mean"]
    test = load_digits("test")
    direct = importance_weighted_nll(model, test.images[:128], test.labels[:128], k=4, seed=0)
    assert (direct["nll"] <= direct["nll_samples"].mean(0) + 1e-4).all()
    assert res["bpd"] == pytest.approx(direct["bpd"].double().mean().item(), rel=1e-6)
    assert res["bpd_single"] == pytest.approx(
        model.nll(test.images[:128], test.labels[:128], seed=0)["bpd"].double().mean().item(), rel=1e-6)


def test_evaluate_split_unconditional_and_arguments(checkpoint):
    model, _ = checkpoint
    test = load_digits("test")
    x = test.images[:16]
    res = evaluate_split(model, x, None, batch_size=16)
    assert res["conditioning"].startswith("null class")
    assert res["bpd"] == pytest.approx(model.nll(x, None, seed=0)["bpd"].double().mean().item(), rel=1e-6)
    terms = res["terms_bpd"]
    assert set(terms) == {"prior_informative", "prior_redundant", "logdet"}
    with pytest.raises(ValueError, match="k must be a positive int"):
        evaluate_split(model, x, None, k=0)
    model.train()
    evaluate_split(model, x, None, batch_size=16)
    assert model.training                      # evaluation restores the mode it found


def test_eval_on_a_run_folder_and_bad_checkpoints(run_farmer, tmp_path):
    out = run_farmer("train", "--preset", "tiny", "--out", tmp_path / "run", "--steps", "2", "--no-progress",
                     "--device", "cpu")
    assert out.returncode == 0, out.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    ev = run_farmer("eval", tmp_path / "run", "--limit", "16", "--no-progress", cwd=work)
    assert ev.returncode == 0, ev.stderr[-3000:]
    # written under the working folder, never into the checkpoint; the step it resolved is said
    written = work / "eval_run_step_00000002_test_k1.json"
    assert json.loads(written.read_text())["weights"] == "ema"
    assert not list((tmp_path / "run" / "checkpoints" / "step_00000002").glob("eval_*"))
    assert "(step 2, ema weights)" in ev.stdout and str(written) in ev.stdout
    (tmp_path / "run" / "checkpoints" / "step_00000002" / "model.safetensors").write_bytes(b"\x00" * 10)
    bad = run_farmer("eval", tmp_path / "run")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "farmer eval: error:" in bad.stderr and "model.safetensors is not a valid safetensors file" in bad.stderr
    missing = run_farmer("eval", tmp_path / "nothing-here")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_bench_train_prints_throughput_json(run_farmer, tmp_path):
    out = run_farmer("bench", "train", "--preset", "tiny", "--batch-size", "8", "--steps", "1",
                     "--precision", "fp32", "--json", tmp_path / "b.json")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "b.json").read_text())
    run = res["runs"][0]
    assert res["peak_gflops"]["fp32"] > 0 and run["images_per_s"] > 0 and run["gflop_per_step"] > 0
    assert run["achieved_gflops"] == pytest.approx(run["gflop_per_step"] / run["seconds_per_step"])


def test_quality_command_scores_the_samples_it_draws(fmnist_dir, run_farmer, tmp_path):
    """`farmer quality` on the shipped model: its JSON figures equal farmer.quality.sample_quality
    run in-process with the same seeds (the CLI adds no hidden randomness), and bad input is one line."""
    from pathlib import Path
    from farmer.data import load_fashion_mnist
    from farmer.quality import load_classifier, predict, sample_quality
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "q.json"
    r = run_farmer("quality", repo / "checkpoints" / "fmnist", "--samples", "12", "--batch-size", "6",
                   "--guidance", "resample", "--cfg", "1.5", "--seed", "4", "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["num_samples"] == 12 and res["guidance"] == "resample" and "FD" in r.stdout
    model = farmer.load(repo / "checkpoints" / "fmnist")
    clf, _ = load_classifier(repo / "checkpoints" / "fmnist-classifier")
    reference = predict(clf, load_fashion_mnist("test", path=fmnist_dir).images)[1]
    q = sample_quality(model, clf, reference, num_samples=12, batch_size=6, seed=4,
                       guidance="resample", cfg_scale=1.5)
    assert res["class_consistency"] == pytest.approx(q["class_consistency"])
    assert res["fd"] == pytest.approx(q["fd"], rel=1e-6)
    bad = run_farmer("quality", repo / "checkpoints" / "fmnist", "--samples", "1")
    assert bad.returncode != 0 and "--samples must be >= 2" in bad.stderr


def test_eval_labels_its_terms_with_units_and_signs(checkpoint, run_farmer, tmp_path):
    _, path = checkpoint
    out = run_farmer("eval", path, "--limit", "16", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / f"eval_{path.name}_test_k1.json").read_text())
    t = res["terms_bpd"]
    line = next(x for x in out.stdout.splitlines() if x.strip().startswith("terms"))
    assert "bits/dim" in line and "− log|det dZ/dX| + 7" in line and "enters with a minus sign" in line
    assert f"−log p(Z^I|c) {t['prior_informative']:+.4f}" in line and f"log|det dZ/dX| {t['logdet']:+.4f}" in line
    # the stated identity holds: bound = prior terms − log-det + 7 bits/dim
    assert res["bpd"] == pytest.approx(t["prior_informative"] + t["prior_redundant"] - t["logdet"] + 7, abs=1e-6)
    assert "(step 5," in out.stdout


def test_errors_name_the_flag_not_the_library_argument(checkpoint, run_farmer):
    from farmer.cli import name_flags
    _, path = checkpoint
    none = run_farmer("sample", path)
    assert none.returncode == 1 and "--num is required without --labels" in none.stderr
    neg = run_farmer("sample", path, "--num", "-4")
    assert neg.returncode == 1 and "--num must be >= 1, got -4" in neg.stderr
    bad_w = run_farmer("sample", path, "--labels", "0", "--guidance", "resample", "--cfg", "-1")
    assert bad_w.returncode == 1 and "--cfg" in bad_w.stderr and "cfg_scale" not in bad_w.stderr, bad_w.stderr
    flags = {"num_samples": "--num", "t_sigma": "--t-sigma", "data": "--data"}
    assert name_flags("num_samples must be a positive int", flags) == "--num must be a positive int"
    assert name_flags("t_sigma must be > 0; --t-sigma-verify stays", flags) == "--t-sigma must be > 0; --t-sigma-verify stays"
    assert name_flags("data set has 3 images", flags) == "data set has 3 images"       # plain words stay words
    train = run_farmer("train", "--preset", "tiny", "--batch-size", "0", "--dry-run", "--data", "synthetic",
                       "--device", "cpu")
    assert train.returncode == 1 and "--batch-size must be a positive int, got 0" in train.stderr, train.stderr


def test_warm_up_longer_than_the_run_is_warned(tmp_path, run_farmer):
    out = run_farmer("train", "--preset", "tiny", "--data", "synthetic", "--steps", "2", "--warmup-steps", "200",
                     "--batch-size", "8", "--dry-run", "--no-progress", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "warning: the warm-up (200 steps) is not shorter than the run (2 steps)" in out.stdout
    ok = run_farmer("train", "--preset", "tiny", "--data", "synthetic", "--steps", "2", "--warmup-steps", "1",
                    "--batch-size", "8", "--dry-run", "--no-progress", "--device", "cpu")
    assert ok.returncode == 0 and "warm-up" not in ok.stdout


def test_quality_shows_w_only_when_guided_and_warns_about_small_fd(fmnist_dir, run_farmer, tmp_path):
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    r = run_farmer("quality", repo / "checkpoints" / "fmnist", "--samples", "4", "--batch-size", "4",
                   "--guidance", "none", "--data-dir", fmnist_dir, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no guidance" in r.stdout and "w=" not in r.stdout
    assert "warning: FD from 4 samples" in r.stderr and "1,000" in r.stderr
    written = tmp_path / "quality_fmnist_none.json"                     # the working folder, not the checkpoint
    res = json.loads(written.read_text())
    assert res["guidance"] == "none" and "cfg_scale" not in res
    assert not (repo / "checkpoints" / "fmnist" / "quality_none.json").exists()
