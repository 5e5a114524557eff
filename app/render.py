"""Pictures for the app: upscaled image grids, latent frames and plotly figures.

Pure functions from arrays to arrays or figures, no Gradio and no model calls,
so the handlers stay readable and these stay testable. Images are 28×28: they
are enlarged with nearest-neighbour (each pixel a crisp square) because a
browser's smooth scaling would blur exactly what a researcher looks at.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from farmer.sampling import image_grid

UNDRAWN = np.array([40, 60, 120], np.uint8)    # colour of latent values not drawn yet (dark blue)
Z_I_COLOR, Z_R_COLOR = "#1f77b4", "#ff7f0e"     # informative blue, redundant orange (as notebook 02)


def enlarge(img: np.ndarray, target: int = 224) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> the same, each pixel repeated so the longer side is about `target`."""
    k = max(1, target // max(img.shape[:2]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def squeeze(grid: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W); colour images unchanged."""
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def sample_grid(images: torch.Tensor, target: int = 448) -> np.ndarray:
    """uint8 (B, C, H, W) samples -> one enlarged grid image (grey (H', W') or RGB)."""
    return enlarge(squeeze(image_grid(images)), target)


def to_uint8(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """float (B, C, H, W) -> uint8, mapping [lo, hi] to 0..255; without a range, each image's
    own 1st–99th percentile (for intermediate flow states, whose scale is not the pixels')."""
    x = x.detach().float().cpu()
    if lo is None or hi is None:
        flat = x.flatten(1)
        lo_t = flat.quantile(0.01, dim=1)[:, None, None, None]
        hi_t = flat.quantile(0.99, dim=1)[:, None, None, None]
    else:
        lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    y = (x - lo_t) / (hi_t - lo_t).clamp_min(1e-6)
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)


def latent_frame(image: torch.Tensor, known: torch.Tensor, max_images: int, target: int = 336) -> np.ndarray:
    """A latent laid out as an image, float (B, C, H, W), shown between the 1st and 99th
    percentile of its drawn values (a trained model's latents are not exactly N(0, 1));
    positions where `known` (C, H, W) is False are painted UNDRAWN. Returns an enlarged RGB grid."""
    b = min(max_images, image.shape[0])
    drawn = image[:b].float().cpu()[:, known]                                   # (b, #known)
    lo, hi = (drawn.quantile(0.01).item(), drawn.quantile(0.99).item()) if drawn.numel() else (-3.0, 3.0)
    grid = image_grid(to_uint8(image[:b], lo, hi))                              # (H', W', C)
    rgb = np.repeat(grid[..., :1], 3, axis=-1) if grid.shape[-1] == 1 else grid.copy()
    known_u8 = known[None].expand(b, -1, -1, -1).to(torch.uint8)               # (b, C, H, W) 0/1
    cells = image_grid(torch.ones_like(known_u8))[..., 0] == 1                # pixels of an image, not padding
    rgb[cells & (image_grid(known_u8)[..., 0] == 0)] = UNDRAWN
    return enlarge(rgb, target)


def image_frame(x: torch.Tensor, max_images: int, pixels: bool, target: int = 336) -> np.ndarray:
    """A flow state or image float (B, C, H, W): pixels=True shows [−1, 1] like the output,
    otherwise each image is stretched to its own percentiles. Returns an enlarged grid."""
    u8 = to_uint8(x[:max_images], -1.0, 1.0) if pixels else to_uint8(x[:max_images])
    return enlarge(squeeze(image_grid(u8)), target)


def png_file(img: np.ndarray, folder: Path) -> str:
    """uint8 image (H, W) or (H, W, 3) -> the path of a PNG of it in `folder`, written once (named by
    its content) and renamed into place. A streamed gallery re-sends every earlier frame on each
    update; given arrays, Gradio re-encodes and overwrites each file in place every time, and a
    browser fetching one mid-write shows a blank thumbnail. Given a finished file it copies it once."""
    from PIL import Image
    data = np.ascontiguousarray(img)
    path = folder / f"{hashlib.sha1(data.tobytes() + str(data.shape).encode()).hexdigest()[:20]}.png"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        Image.fromarray(data).save(tmp, format="PNG")
        os.replace(tmp, path)
    return str(path)


# ----------------------------------------------------------------------------- plotly figures
def _layout(fig: go.Figure, title: str, square: bool = True) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=13)), margin=dict(l=10, r=10, t=36, b=10),
                      height=320, template="plotly_white")
    if square:
        fig.update_yaxes(autorange="reversed", scaleanchor="x", showgrid=False, zeroline=False)
        fig.update_xaxes(showgrid=False, zeroline=False, constrain="domain")
    return fig


def pixel_heatmap(bits: np.ndarray, title: str, zrange: tuple[float, float] | None = None) -> go.Figure:
    """(H, W) bits per pixel -> an interactive heatmap; hovering shows row, column and bits."""
    zmin, zmax = zrange if zrange else (None, None)
    fig = go.Figure(go.Heatmap(z=bits, colorscale="Inferno", zmin=zmin, zmax=zmax,
                               colorbar=dict(title="bits"),
                               hovertemplate="row %{y}, col %{x}<br>%{z:.3f} bits<extra></extra>"))
    return _layout(fig, title)


def token_heatmap(total: np.ndarray, informative: np.ndarray, redundant: np.ndarray,
                  flow: np.ndarray, title: str) -> go.Figure:
    """(h, w) per-token bits and their parts -> a patch-level heatmap with the parts on hover."""
    parts = np.stack([informative, redundant, flow], axis=-1)                  # (h, w, 3)
    fig = go.Figure(go.Heatmap(
        z=total, customdata=parts, colorscale="Viridis", colorbar=dict(title="bits"),
        hovertemplate=("token row %{y}, col %{x}<br>total %{z:.2f} bits<br>prior Z^I %{customdata[0]:.2f}"
                       "<br>prior Z^R %{customdata[1]:.2f}<br>flow −log|det| + log₂128 %{customdata[2]:.2f}"
                       "<extra></extra>")))
    return _layout(fig, title)


def difference_heatmap(diff: np.ndarray, title: str) -> go.Figure:
    """(H, W) bits per pixel of B − A -> a heatmap on a diverging scale centred on 0."""
    top = max(float(np.abs(diff).max()), 1e-6)
    fig = go.Figure(go.Heatmap(z=diff, colorscale="RdBu_r", zmin=-top, zmax=top, zmid=0,
                               colorbar=dict(title="bits"),
                               hovertemplate="row %{y}, col %{x}<br>B − A %{z:+.3f} bits<extra></extra>"))
    return _layout(fig, title)


def terms_chart(terms: dict[str, float], title: str) -> go.Figure:
    """The four parts of bits/dim (prior Z^I, prior Z^R, flow −log|det|, the +log₂128 rescale) on the
    left, and the prior's split on its own axis on the right: it is ~0.1 bits/dim next to ~7."""
    names = ["prior Z^I", "prior Z^R", "flow −log|det|", "+log₂128"]
    colors = [Z_I_COLOR, Z_R_COLOR, "#2ca02c", "#7f7f7f"]
    values = [terms["prior_informative"], terms["prior_redundant"], terms["flow_neg_logdet"],
              terms["dequantisation"]]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.16,
                        subplot_titles=("all four terms", "the prior's split (own axis)"))
    hover = "%{x}: %{y:.4f} bits/dim<extra></extra>"
    fig.add_trace(go.Bar(x=names, y=values, marker_color=colors, hovertemplate=hover, showlegend=False), 1, 1)
    fig.add_trace(go.Bar(x=names[:2], y=values[:2], marker_color=colors[:2], hovertemplate=hover,
                         text=[f"{v:+.3f}" for v in values[:2]], textposition="outside", showlegend=False), 1, 2)
    fig.update_yaxes(title="bits/dim", row=1, col=1)
    pad = max(abs(values[0]), abs(values[1]), 1e-3) * 0.35                    # room for the value labels
    lo, hi = min(0.0, *values[:2]), max(0.0, *values[:2])
    fig.update_yaxes(range=[lo - pad, hi + pad], zeroline=True, zerolinecolor="#444", row=1, col=2)
    fig.update_annotations(font_size=11)
    return _layout(fig, title, square=False)


def bar_chart(names: list[str], values: list[float], title: str, unit: str,
              colors: list[str] | None = None) -> go.Figure:
    """A labelled bar chart (per block, per term or per channel)."""
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=colors,
                           hovertemplate="%{x}: %{y:.4f} " + unit + "<extra></extra>"))
    fig.update_yaxes(title=unit)
    return _layout(fig, title, square=False)


def line_chart(x: list[float], series: dict[str, list[float]], title: str, xlabel: str, unit: str) -> go.Figure:
    """One line with markers per named series over a shared x (e.g. bits/dim along a latent path)."""
    hover = "%{y:.4f} " + unit + " at " + xlabel + " %{x:.3f}<extra></extra>"
    fig = go.Figure([go.Scatter(x=x, y=y, mode="lines+markers", name=name, hovertemplate=name + ": " + hover)
                     for name, y in series.items()])
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=unit)
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, title, square=False)


STRIP_ROW = 8                 # at most this many images per row of a path strip; more wrap onto the next row


def strip(images: torch.Tensor, target_width: int = 840) -> np.ndarray:
    """uint8 (S, C, H, W) -> the S images of a path, left to right, enlarged: one row up to STRIP_ROW
    images, else rows of equal length (16 points: 2 rows of 8), so no image becomes a thin band."""
    S = images.shape[0]
    per_row = math.ceil(S / math.ceil(S / STRIP_ROW))
    grid = squeeze(image_grid(images, nrow=per_row))
    k = max(1, target_width // grid.shape[1])
    return np.repeat(np.repeat(grid, k, axis=0), k, axis=1)
