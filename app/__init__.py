"""The FARMER Gradio app: a thin shell over `farmer`'s public surface.

    python -m app [--checkpoint PATH] [--host 127.0.0.1] [--port 7860]     # or: make app

    from app import Workbench, build_app
    wb = Workbench()                       # loads checkpoints/fmnist once (and the test split if on disk)
    demo = build_app(wb)                   # gr.Blocks, queued; demo.launch() serves it
    next(iter(wb.sample("Trouser", batch_size=2)))   # the handlers are plain methods

Tabs: Sample (guidance, temperatures, decoders, a progressive view streamed as
the tokens are drawn and the flow inverted), Likelihood (bits/dim, per-pixel
heatmap, per-token and per-block breakdowns, the prior split; any uploaded
image, two side by side, and a Classify panel: p(y|x) by Bayes' rule), Channels
(informative vs redundant latents) and Interpolate (linear and spherical latent
paths between two images, decoded, with bits/dim along them).
"""
from .handlers import DEFAULT_CHECKPOINT, RANGES, Workbench
from .ui import build_app

__all__ = ["Workbench", "build_app", "DEFAULT_CHECKPOINT", "RANGES"]
