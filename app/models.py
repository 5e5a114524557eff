"""Several checkpoints in one app: which are loaded, what each is for, and which view uses which.

`Shelf` holds one `Workbench` per checkpoint, keyed by a short name (the folder's name). Every
view has a model dropdown; its default comes from the checkpoints' own files, never from a
hard-coded name, so a later model that is good at both (a flagship) wins both by itself:

    likelihood, classify   the lowest test bits/dim in card.json (`bpd_test_k1`); a per-pixel
                           map breaks ties, and without cards the first per-pixel model wins
    sample, interpolate    the lowest guided Fréchet distance in card.json (`quality_guided`);
                           without one, the first model with a distilled student, else the first
    channels               the sample model if it has a redundant group Z^R, else the first that has

`map_kind` says from a model's config whether its per-pixel map is one log-det term per pixel or
spread over patches (channel mixing at the input), and `recommended_sampling` reads the card's
measured sampling settings (`farmer.card.recommended_sampling` when the library has it).
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

from farmer.checkpoint import resolve

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
VIEWS = ("sample", "likelihood", "channels", "interpolate")
# the card's quality_guided keys that are farmer.sample arguments (the rest are measured figures)
SAMPLE_KEYS = ("guidance", "cfg_scale", "candidates_cond", "candidates_uncond", "t_pi", "t_sigma",
               "t_pi_verify", "t_sigma_verify", "t_select", "resample_weights", "denoise")


def shipped_checkpoints(folder: Path = SHIPPED) -> list[Path]:
    """The shipped models: every folder of checkpoints/ with a model card (card.json) and weights.
    Training runs (no card) and the quality classifier (no card) are not models to serve."""
    return sorted(p for p in folder.iterdir()
                  if (p / "card.json").is_file() and (p / "model.safetensors").is_file())


def read_card(checkpoint: Path) -> dict:
    """CHECKPOINT/card.json as a dict ({} without one or if unreadable)."""
    try:
        return json.loads((Path(checkpoint) / "card.json").read_text())
    except (OSError, ValueError):
        return {}


def recommended_sampling(checkpoint: Path) -> tuple[dict, str]:
    """The sampler settings the app starts from, as farmer.sample keyword arguments, and where they
    came from: `farmer.card.recommended_sampling` (the card's `quality_guided` entry over farmer.sample's
    defaults, what `farmer sample` uses too) when the library has it, else that card entry read here."""
    measured = isinstance(read_card(checkpoint).get("quality_guided"), dict)
    try:
        from farmer.card import recommended_sampling as from_library
    except ImportError:                                   # an older library: read the card entry here
        entry = read_card(checkpoint).get("quality_guided") or {}
        kw = {k: entry[k] for k in SAMPLE_KEYS if k in entry}
        return kw, "card.json quality_guided" if kw else ""
    try:
        kw = dict(from_library(checkpoint) or {})
    except (OSError, ValueError):                         # a damaged card: the app still starts
        return {}, ""
    where = ("card.json quality_guided, via farmer.card.recommended_sampling" if measured
             else "farmer.sample's defaults (the card has no measured setting), via farmer.card.recommended_sampling")
    return kw, where


def is_per_patch(cfg) -> bool:
    """True when a per-pixel map spreads log-det terms over patches: mixing (DCT, Haar, LU) applied at
    the input, so the flow's dimensions are patch coefficients, not pixels. Mixing at the split, or
    none, leaves every flow dimension on one pixel."""
    return cfg.channel_mixing not in (None, "none") and cfg.mixing_position == "input"


def map_kind(cfg) -> str:
    """A short statement of what the model's bits-per-pixel map is, for every Likelihood view."""
    p = cfg.patch_size
    if is_per_patch(cfg):
        return (f"per patch: this model mixes each {p}×{p} patch ({cfg.channel_mixing.upper()}) at the input, "
                f"so its map spreads each coefficient's log-det term over the {p}×{p} patch; read it at patch "
                f"level, not pixel by pixel")
    where = (f"{cfg.channel_mixing.upper()} mixing sits at the split, after the flow"
             if cfg.channel_mixing not in (None, "none") else "no channel mixing")
    return f"per pixel: {where}, so every log-det term belongs to one pixel"


def _card_figure(card: dict, *path: str) -> float | None:
    value = card
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class Shelf:
    """The loaded models, name -> Workbench, and each view's default. `Shelf([wb])` wraps one."""

    def __init__(self, workbenches):
        self.workbenches: dict[str, object] = {}
        for wb in workbenches:
            name = wb.name
            if name in self.workbenches or not name:                              # two folders of one name
                name = f"{wb.checkpoint.parent.name}/{wb.checkpoint.name}"
            while name in self.workbenches:
                name += "'"
            wb.name = name
            self.workbenches[name] = wb
        if not self.workbenches:
            raise ValueError("the app needs at least one checkpoint")
        self.defaults: dict[str, str] = {}
        for view in VIEWS:                                      # in order: channels starts from sample's
            self.defaults[view] = self._default(view)

    @classmethod
    def load(cls, checkpoints=None, **kwargs) -> "Shelf":
        """Load each checkpoint once (the shipped ones by default); kwargs go to Workbench."""
        from .handlers import Workbench
        paths = [Path(c) for c in checkpoints] if checkpoints else shipped_checkpoints()
        seen, wbs = set(), []
        for p in paths:
            key = resolve(p)
            if key not in seen:
                seen.add(key)
                wbs.append(Workbench(p, **kwargs))
        shelf = cls(wbs)
        for wb in shelf:                     # the OOD thresholds (a few seconds each) while Gradio starts
            threading.Thread(target=wb.ood.get, daemon=True, name=f"ood-{wb.name}").start()
        return shelf

    @property
    def names(self) -> list[str]:
        return list(self.workbenches)

    def __getitem__(self, name: str):
        from .inputs import choose
        choose("model", name, self.names)
        return self.workbenches[name]

    def __iter__(self):
        return iter(self.workbenches.values())

    def __len__(self) -> int:
        return len(self.workbenches)

    def _default(self, view: str) -> str:
        wbs = list(self.workbenches.values())
        cards = {wb.name: read_card(wb.checkpoint) for wb in wbs}
        if view == "likelihood":
            scored = [(_card_figure(cards[wb.name], "bpd_test_k1", "bpd"), is_per_patch(wb.cfg), i, wb.name)
                      for i, wb in enumerate(wbs)]
            with_bpd = [s for s in scored if s[0] is not None]
            if with_bpd:
                return min(with_bpd)[3]
            return min((is_per_patch(wb.cfg), i, wb.name) for i, wb in enumerate(wbs))[2]
        if view == "channels":
            first = self.defaults["sample"]
            if self.workbenches[first].cfg.d_r > 0:
                return first
            return next((wb.name for wb in wbs if wb.cfg.d_r > 0), first)
        # sample and interpolate: the best measured sample quality, else a model built for speed
        fds = [(_card_figure(cards[wb.name], "quality_guided", "fd"), i, wb.name) for i, wb in enumerate(wbs)]
        measured = [f for f in fds if f[0] is not None]
        if measured:
            return min(measured)[2]
        return next((wb.name for wb in wbs if wb.has_student), wbs[0].name)

    def why_default(self, view: str) -> str:
        """One line on why the view opens with its model (shown under the dropdown)."""
        name = self.defaults[view]
        if len(self) == 1:
            return f"the only model loaded (`{name}`)"
        card = read_card(self.workbenches[name].checkpoint)
        if view == "likelihood":
            bpd = _card_figure(card, "bpd_test_k1", "bpd")
            return (f"default `{name}`: the lowest test bits/dim of the loaded models' cards ({bpd:.3f})"
                    if bpd is not None else f"default `{name}`: its map is per pixel")
        if view == "channels" and self.workbenches[name].cfg.d_r > 0 and name != self.defaults["sample"]:
            return f"default `{name}`: the sample model has no redundant group Z^R"
        fd = _card_figure(card, "quality_guided", "fd")
        return (f"default `{name}`: the best guided sample quality of the loaded models' cards (FD {fd:.2f})"
                if fd is not None else f"default `{name}`")
