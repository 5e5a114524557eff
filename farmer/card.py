"""A checkpoint's model card (card.json) as defaults: the guidance it was measured best with.

`benchmarks/model_card.py` measures sample quality with a few sampler settings
and writes them to CHECKPOINT/card.json; the setting the card recommends is its
`quality_guided` entry (e.g. resampling CFG, w = 1, T_σ = 0.9). `farmer sample`
and the app both start from `recommended_sampling(checkpoint)`, so the two
draw the same images by default. Without a card (a fresh training run) the
defaults are those of `farmer.sample` itself.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

CARD_FILE = "card.json"
CARD_ENTRY = "quality_guided"               # the card's recommended sampler settings
# the keyword arguments of farmer.sample that a card may set (the rest are per call: labels, seed, ...)
SAMPLING_KEYS = ("guidance", "cfg_scale", "t_pi", "t_sigma", "candidates_cond", "candidates_uncond",
                 "t_pi_verify", "t_sigma_verify", "t_select", "resample_weights", "denoise")


def library_sampling_defaults() -> dict[str, Any]:
    """farmer.sample's own defaults for SAMPLING_KEYS (read from its signature, so they cannot drift)."""
    from .sampling import sample
    params = inspect.signature(sample).parameters
    return {k: params[k].default for k in SAMPLING_KEYS}


def read_card(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """CHECKPOINT/card.json as a dict, or None if there is none. A damaged card is a ValueError."""
    path = Path(checkpoint_dir) / CARD_FILE
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(card).__name__}")
    return card


def recommended_sampling(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    """Keyword arguments for `farmer.sample` recommended by the checkpoint's card.

    Returns a dict with every key of SAMPLING_KEYS (guidance, cfg_scale,
    t_pi, t_sigma, candidates_cond, candidates_uncond, t_pi_verify,
    t_sigma_verify, t_select, resample_weights, denoise): the card's
    `quality_guided` settings where it gives them, farmer.sample's defaults for
    the rest, and farmer.sample's defaults alone when the folder has no card or
    the card no such entry. `checkpoint_dir` is a checkpoint folder (a run
    folder's checkpoint is resolved to its newest: cards live beside weights).
    """
    from .checkpoint import resolve
    out = library_sampling_defaults()
    path = Path(checkpoint_dir)
    card = read_card(path) if (path / CARD_FILE).is_file() else read_card(resolve(path))
    entry = (card or {}).get(CARD_ENTRY)
    if isinstance(entry, dict):
        out.update({k: entry[k] for k in SAMPLING_KEYS if k in entry})
    return out


def describe(settings: dict[str, Any]) -> str:
    """One line for logs: "resample, w = 1, T_σ = 0.9, ..." (w only where the guidance uses it)."""
    g = settings.get("guidance", "none")
    if g == "none":
        return "no guidance"
    names = {"t_pi": "T_π", "t_sigma": "T_σ"}
    if g == "resample":                                             # the weights' temperatures: resampling only
        names.update(t_pi_verify="T_π,v", t_sigma_verify="T_σ,v", t_select="T_s")
    parts = [f"{g} CFG", f"w = {settings.get('cfg_scale', 0):g}"]
    parts += [f"{n} = {settings[k]:g}" for k, n in names.items() if k in settings]
    return ", ".join(parts)
