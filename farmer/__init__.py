"""FARMER: Flow AutoRegressive Transformer over Pixels — the model library.

Public surface (DESIGN §5):

    import farmer
    cfg   = farmer.presets["fmnist"]
    model = farmer.Farmer(cfg)
    terms = model.nll(x_uint8, y, seed=0)          # nats per image + bpd
    z, logdet = model.encode(x_float)
    x_float = model.decode(z, decoder="sequential")
    maps  = farmer.likelihood_map(model, x_uint8, y, seed=0)
"""
from .config import FarmerConfig, presets
from .gmm import DiagonalGMM
from .likelihood import bits_per_dim, importance_weighted_nll, likelihood_map
from .model import Farmer

__all__ = ["FarmerConfig", "presets", "DiagonalGMM", "Farmer", "likelihood_map",
           "importance_weighted_nll", "bits_per_dim"]
__version__ = "0.1.0"
