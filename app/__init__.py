"""The FARMER Gradio app: a thin shell over `farmer`'s public surface.

    python -m app [--checkpoint PATH]... [--host 127.0.0.1] [--port 7860]     # or: make app

    from app import Shelf, Workbench, build_app
    shelf = Shelf.load()                   # the shipped models (checkpoints/*/card.json), each loaded once
    demo = build_app(shelf)                # gr.Blocks, queued; demo.launch() serves it
    wb = Workbench()                       # one model: checkpoints/fmnist (and the test split if on disk)
    next(iter(wb.sample("Trouser", batch_size=2)))   # the handlers are plain methods

Tabs: Sample (guidance, temperatures, decoders, a progressive view streamed as
the tokens are drawn and the flow inverted, the `farmer sample` command that
redraws the grid), Likelihood (bits/dim, the bits-per-pixel map — per pixel or
spread over patches, as the model's mixing decides — per-token and per-block
breakdowns, the prior split, an out-of-distribution caution; any uploaded image,
two side by side, and a Classify panel: p(y|x) by Bayes' rule), Channels
(informative vs redundant latents) and Interpolate (linear and spherical latent
paths between two images, decoded, with bits/dim along them). Every tab has a
model menu and opens on the model suited to it (`app.models.Shelf`).
"""
from .handlers import DEFAULT_CHECKPOINT, RANGES, Workbench
from .models import Shelf
from .ui import build_app

__all__ = ["Workbench", "Shelf", "build_app", "DEFAULT_CHECKPOINT", "RANGES"]
