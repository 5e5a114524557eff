"""FARMER: Flow AutoRegressive Transformer over Pixels — the model library.

Public surface (DESIGN §5):

    import farmer
    cfg   = farmer.presets["fmnist"]
    model = farmer.Farmer(cfg)
    terms = model.nll(x_uint8, y, seed=0)          # nats per image + bpd
    z, logdet = model.encode(x_float)
    x_float = model.decode(z, decoder="sequential")
    maps  = farmer.likelihood_map(model, x_uint8, y, seed=0)
    logp  = farmer.classify(model, x_uint8, k=1, seed=0)    # log p(y|x) (B, num_classes), Bayes' rule
    cal   = farmer.expected_calibration_error(logp.exp(), y)  # ECE + reliability-diagram bins
    walk  = farmer.interpolate(model, x_a, x_b, steps=9, path="spherical")  # decoded path + bits/dim
    fig7  = farmer.channel_experiment(model, x_uint8, y)  # redraw Z^R vs perturb Z^I (Fig. 7)
    imgs  = farmer.sample(model, labels, guidance="resample", cfg_scale=2.0, seed=0)  # uint8
    farmer.save(model, "checkpoints/mine", step=1000)   # config.json + model.safetensors
    model = farmer.load("checkpoints/mine")              # or a `farmer train --out` folder

Out-of-distribution sets, scores and AUROC: `farmer.ood` (notebook 06).

"DESIGN §n" in the code means section n of docs/design.md, the project's
design document (the method, equation by equation, and where each part lives).
"""
from .channels import channel_experiment
from .checkpoint import load, save
from .classify import classify, expected_calibration_error
from .config import FarmerConfig, TrainConfig, presets, train_presets
from .denoise import tweedie_denoise
from .gmm import DiagonalGMM
from .interpolate import interpolate
from .likelihood import bits_per_dim, importance_weighted_nll, likelihood_map
from .model import Farmer
from .sampling import sample

__all__ = ["FarmerConfig", "presets", "DiagonalGMM", "Farmer", "likelihood_map", "sample",
           "importance_weighted_nll", "bits_per_dim", "load", "save", "TrainConfig", "train_presets",
           "channel_experiment", "tweedie_denoise", "classify", "expected_calibration_error", "interpolate"]
__version__ = "0.1.0"
