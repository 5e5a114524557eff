"""The app's handlers: plain functions over `farmer`'s public surface, one per endpoint.

`Workbench` loads the model (and the test split, when the data is on disk)
once; its methods are the handlers the UI wires to buttons, and tests call
them directly. Each checks every argument against `RANGES` first — the
sliders show the same ranges, but a client can send anything — and turns a
bad value, or a ValueError from the library, into `gr.Error` with a message,
so a user sees what to change and never a traceback.

The Sample and Likelihood handlers are here; the image picking every tab
uses is `app.picking`, the Channels, Classify and Interpolate handlers are in
`app.analysis`, mixins `Workbench` inherits, and the option names, ranges
and checks they all share are in `app.inputs` (re-exported here, so
`from app.handlers import check, RANGES` still works).
"""
from __future__ import annotations

import atexit
import math
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

import farmer
from farmer.mixing import map_note
from farmer.checkpoint import read_config, resolve
from farmer.data import FMNIST_CLASSES, load_dataset
from farmer.layers import unpatchify
from farmer.likelihood import LN2, estimator_name
from farmer.sampling import sample_steps

from . import render
from .analysis import REFERENCE_IMAGES, AnalysisHandlers  # noqa: F401  (re-exported)
from .caution import OodReference, check_image
from .picking import ImagePicking
from .inputs import (ANY_CLASS, DECODERS, GUIDANCE, NOISE_SEED, OWN_LABEL, RANGES, SOURCES,  # noqa: F401
                     UNCONDITIONAL, Z_I_MODES, Z_R_MODES, check, choose, refusal, user_errors)
from .models import map_kind, recommended_sampling
from .reproduce import COUNTS, grid_columns, sample_command

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "fmnist"

SAMPLES_SCORE_WORSE = ("A model sample usually scores *worse* than a test image under the same model: averaged "
                       "over its own samples, bits/dim is the model's entropy, while over test images it is the "
                       "cross-entropy with the data, and a maximum-likelihood model spreads its mass wider than "
                       "the data (it must not miss any real image), so its typical draws are less predictable "
                       "than real garments. It is not a scoring error.")
NEGATIVE_BITS = ("Negative bits are not an error: the model is a density over continuous pixel values, and "
                 "a density can exceed 1 (a narrow peak), so −log₂ p < 0 where the model is sure. The per-pixel "
                 "and per-token maps split the image's total across pixels, so a well-predicted pixel or token "
                 "can cost less than 0 bits; only the total, with +log₂ 128 = 7 per dimension for the [−1, 1] "
                 "rescale, is a code length for the 256-level image.")
# the controls each guidance setting leaves unused (the UI greys them out; `ignored_settings` says why)
RESAMPLE_ONLY = ("candidates_cond", "candidates_uncond", "t_pi_verify", "t_sigma_verify", "t_select")
GUIDED_ONLY = ("cfg_scale",) + RESAMPLE_ONLY


def ignored_settings(class_name: str, guidance: str, cfg_scale: float) -> tuple[str, tuple[str, ...]]:
    """What a Sample request with these settings does not use: (a note to show next to the
    guidance control, "" when everything is used; the names of the unused parameters).
    The library runs guidance only with a class and w > 0 (`farmer.sampling`: p_c = p_u without
    a class, p′ = p_c at w = 0), and the naive rule has no candidates or selection temperatures."""
    if guidance == "none":
        return ("guidance none: w, s_c, s_u, T_π,v, T_σ,v and T_s are not used (greyed out)", GUIDED_ONLY)
    if class_name == UNCONDITIONAL:
        return (f"⚠ **ignored: guidance {guidance}, w = {cfg_scale:g}.** Unconditional sampling has no class to "
                f"guide towards (p_c = p_u), so this runs as guidance none; pick a class to use guidance",
                GUIDED_ONLY)
    if cfg_scale == 0:
        return ("⚠ w = 0: guidance is off (p′ = p_c), so this runs as plain conditional sampling", RESAMPLE_ONLY)
    if guidance == "naive":
        return ("naive rule: s_c, s_u, T_π,v, T_σ,v and T_s belong to resampling and are not used (greyed out)",
                RESAMPLE_ONLY)
    return "", ()


def card_title(checkpoint: Path) -> str:
    """The model card's title (the first "# " line of CHECKPOINT/README.md), e.g. which model this is; or ""."""
    card = Path(checkpoint) / "README.md"
    try:
        first = next((ln for ln in card.read_text().splitlines() if ln.startswith("# ")), "")
    except (OSError, UnicodeDecodeError):
        return ""
    return first[2:].strip()


_FRAMES: dict[str, Path] = {}
_FRAMES_LOCK = threading.Lock()


def frames_folder() -> Path:
    """The progressive view's PNG folder, made on first use and removed when the process exits
    (one per process, shared by every model; `python -m app` turns SIGTERM into a normal exit)."""
    with _FRAMES_LOCK:
        if "dir" not in _FRAMES or not _FRAMES["dir"].is_dir():
            _FRAMES["dir"] = Path(tempfile.mkdtemp(prefix="farmer-frames-"))
            atexit.register(shutil.rmtree, _FRAMES["dir"], True)
        return _FRAMES["dir"]


_TEST_SETS: dict[tuple, Any] = {}           # (data, split config, folder) -> the test split, read once per process


class Workbench(ImagePicking, AnalysisHandlers):
    """One model (loaded once) and the handlers. `checkpoint` defaults to the shipped model;
    `app.models.Shelf` holds several and gives each `name` (the folder name)."""

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", max_batch: int = 16,
                 data_dir: str | Path | None = None):
        self.checkpoint = resolve(Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT)
        self.model = farmer.load(self.checkpoint, device)
        self.cfg = self.model.cfg
        self.device = next(self.model.parameters()).device
        self.max_batch = int(max_batch)
        meta, _ = read_config(self.checkpoint)
        data = (meta.get("train") or {}).get("data") or "fashion-mnist"
        fmnist = data in ("fashion-mnist", "fmnist") and self.cfg.num_classes == 10
        self.classes = list(FMNIST_CLASSES) if fmnist else [f"class {k}" for k in range(self.cfg.num_classes)]
        self.data_name = data
        self.test, self.test_error, self._test_labels = None, "", None
        self._reference: dict | None = None                                    # structure_reference, once
        key = (data, self.cfg.image_size, self.cfg.channels, str(data_dir))
        try:                                             # no download from a server: use what is on disk
            if key not in _TEST_SETS:
                _TEST_SETS[key] = load_dataset(data, "test", self.cfg, path=data_dir, download=False)
            self.test = _TEST_SETS[key]
        except (FileNotFoundError, ValueError) as e:
            self.test_error = f"No test images: {e}"
        self.has_student = self.model.student is not None
        # the folder the user named (a run folder, not its newest step_* inside); Shelf makes it unique
        self.name = Path(checkpoint).resolve().name if checkpoint else self.checkpoint.name
        self.card_title = card_title(self.checkpoint)
        self.decoders = DECODERS if self.has_student else DECODERS[:2]
        self.recommended, self.recommended_from = recommended_sampling(self.checkpoint)
        self.ood = OodReference(self.model, self.test, NOISE_SEED)              # thresholds, on first use

    @property
    def frames_dir(self) -> Path:
        return frames_folder()

    @property
    def model_line(self) -> str:
        """"Model `fmnist` (title)": how every view names the model that produced it."""
        return f"Model `{self.name}`" + (f" ({self.card_title})" if self.card_title else "")

    # ------------------------------------------------------------------ choices
    @property
    def class_choices(self) -> list[str]:
        return [UNCONDITIONAL] + self.classes

    @property
    def condition_choices(self) -> list[str]:
        return [OWN_LABEL, UNCONDITIONAL] + self.classes

    def label_of(self, name: str, what: str = "class") -> int | None:
        """A class name (or "unconditional") -> its index (or None)."""
        choose(what, name, self.class_choices)
        return None if name == UNCONDITIONAL else self.classes.index(name)

    def class_name(self, label: int | None) -> str:
        return UNCONDITIONAL if label is None else self.classes[label]

    # ------------------------------------------------------------------ Sample tab
    @user_errors
    def sample(self, class_name: str = UNCONDITIONAL, guidance: str = "resample", cfg_scale: float = 2.0,
               candidates_cond: int = 10, candidates_uncond: int = 0, t_pi: float = 1.0, t_sigma: float = 1.0,
               t_pi_verify: float = 1.0, t_sigma_verify: float = 1.0, t_select: float = 1.0,
               seed: int = 0, batch_size: int = 8, decoder: str = "sequential",
               progress=gr.Progress()):
        """Draw a batch, streaming the progressive view. Yields (grid, seconds, frames, stats, report);
        the grid, seconds, stats and report come with the last yield. frames: [(PNG path, caption)],
        each frame a grid of the whole batch (`render.png_file`: written once, so never seen
        half-written). stats holds every setting, the counts explained, and `command`: the
        `farmer sample` line that redraws this grid; report (Markdown) names the model and the command."""
        label = self.label_of(class_name)
        choose("guidance", guidance, GUIDANCE)
        choose("decoder", decoder, self.decoders)
        kw = {name: check(name, v) for name, v in [
            ("cfg_scale", cfg_scale), ("candidates_cond", candidates_cond),
            ("candidates_uncond", candidates_uncond), ("t_pi", t_pi), ("t_sigma", t_sigma),
            ("t_pi_verify", t_pi_verify), ("t_sigma_verify", t_sigma_verify), ("t_select", t_select),
            ("seed", seed)]}
        B = check("batch_size", batch_size, 1, self.max_batch, True)
        if guidance == "resample" and kw["candidates_cond"] + kw["candidates_uncond"] < 1:
            raise refusal("resampling needs at least one candidate: raise s_c or s_u", "Out of range")
        # the sampler settings without a control come from the card like `farmer sample`'s (default:
        # the paper's weights, no denoising); they are in the settings JSON and the command
        kw["resample_weights"] = self.recommended.get("resample_weights", "paper")
        kw["denoise"] = float(self.recommended.get("denoise", 0.0))
        labels = None if label is None else [label] * B
        N, n = self.cfg.tokens, self.cfg.flow_blocks
        ignored, _ = ignored_settings(class_name, guidance, kw["cfg_scale"])
        snapshots = {max(0, round(N * f) - 1) for f in (0.25, 0.5, 0.75)}
        frames: list[tuple[str, str]] = []
        self._prune_frames()
        png = lambda img: render.png_file(img, self.frames_dir)                 # noqa: E731
        steps = sample_steps(self.model, labels, num_samples=B, guidance=guidance, decoder=decoder, **kw)
        compute = 0.0
        while True:
            start = time.perf_counter()
            step = next(steps)                                                  # the work happens here
            compute += time.perf_counter() - start
            if step.stage == "token":
                progress((step.index + 1, N + 1 + n), desc="AR: drawing latent tokens", unit="steps")
                if step.index in snapshots:
                    frames.append((png(self._latent_frame(step)), f"latent: Z^I of {step.index + 1}/{N} tokens drawn"))
                    yield None, None, list(frames), gr.skip(), gr.skip()
            elif step.stage == "redundant":
                progress((N + 1, N + 1 + n), desc="AF: inverting the flow", unit="steps")
                frames.append((png(self._latent_frame(step)), "latent: Z^R drawn too (complete)"))
                yield None, None, list(frames), gr.skip(), gr.skip()
            elif step.stage == "block":
                progress((N + 2 + step.index, N + 1 + n), desc="AF: inverting the flow", unit="steps")
                last = step.index == n - 1
                # sampling inverts the flow last block first: f_n⁻¹, …, f_1⁻¹ (the last gives the image)
                frames.append((png(render.image_frame(step.image, B, pixels=last)),
                               f"inverse {step.index + 1}/{n}: block {n - step.index} of {n} undone"
                               + (" = the image" if last else " (contrast stretched)")))
                yield None, None, list(frames), gr.skip(), gr.skip()
            else:
                result = step.result
                break
        settings = {"guidance": guidance, "decoder": decoder, **kw}
        _, unused = ignored_settings(class_name, guidance, kw["cfg_scale"])
        command = sample_command(self.checkpoint, label, B, settings, str(self.device))
        counts = {k: v for k, v in result.stats.items() if k in COUNTS or k == "jacobi_mean_iterations"}
        stats = {"model": self.name, "checkpoint": str(self.checkpoint), "class": class_name, "label": label,
                 "batch_size": B, **settings, "guidance": result.stats["guidance"],
                 "cfg_scale": result.stats["cfg_scale"], "guidance_requested": guidance,
                 "cfg_scale_requested": kw["cfg_scale"], "unused": list(unused),
                 "grid": f"{grid_columns(B)} images per row, each pixel enlarged (farmer.sampling.image_grid)",
                 "counts": counts, "counts_explained": {k: COUNTS[k] for k in counts if k in COUNTS},
                 "seconds": round(compute, 4), "seconds_per_image": round(compute / B, 5),
                 "device": str(self.device), "command": command,
                 "command_note": "run from the repository root: the same images (.npy) and grid (PNG, "
                                 "not enlarged), bit for bit on the same device"}
        for k in ("jacobi_iterations", "jacobi_mean_iterations"):
            if k in result.stats:
                stats[k] = result.stats[k]
        if ignored:
            stats["ignored"] = ignored.replace("*", "")
        report = (f"{self.model_line}: {B} samples, {class_name}, guidance {stats['guidance']}"
                  + (f" (w = {stats['cfg_scale']:g})" if stats["guidance"] != "none" else "")
                  + f", decoder {decoder}, seed {kw['seed']}. Every setting is in the JSON below; to redraw "
                    f"this grid bit for bit, run from the repository root:\n\n```\n{command}\n```")
        yield render.sample_grid(result.images), round(compute, 4), frames, stats, report

    def _prune_frames(self, max_age_s: float = 3600.0) -> None:
        """Delete progressive-view PNGs older than an hour (Gradio has its own copies by then)."""
        now = time.time()
        for f in self.frames_dir.glob("*.png"):
            try:
                if now - f.stat().st_mtime > max_age_s:
                    f.unlink()
            except OSError:                                                    # another request pruned it
                pass

    def _latent_frame(self, step) -> np.ndarray:
        """The latent so far: drawn informative values, then the redundant ones; the rest UNDRAWN."""
        cfg = self.cfg
        informative = torch.arange(cfg.token_dim, device=step.drawn.device) < cfg.d_i  # (d,) Z^I channels
        known = step.drawn[:, None] & informative[None]                                 # (N, d)
        if step.stage == "redundant":
            known = torch.ones_like(known)
        known_img = unpatchify(known[None].float(), cfg.patch_size, cfg.channels, cfg.image_size)[0] > 0
        known_img = known_img.cpu()                                                     # (C, H, W)
        return render.latent_frame(step.image, known_img, step.image.shape[0])

    def latent_help(self) -> str:
        """What the latent frames of the progressive view show, for this model (Markdown)."""
        cfg = self.cfg
        p, d, d_i = cfg.patch_size, cfg.token_dim, cfg.d_i
        mixed = cfg.channel_mixing not in (None, "none")
        what = (f"the {d} {cfg.channel_mixing.upper()} coefficients of the patch (lowest frequency first)"
                if mixed else f"the patch's {d} pixel values")
        order = ("**from the bottom-right token upwards**: the final permute reverses the token order "
                 "between the flow and the AR model" if cfg.final_permute == "reverse"
                 else "in raster order, top-left first")
        return (f"**Reading the progressive view.** *Latent frames:* each of the {cfg.tokens} tokens is drawn "
                f"in its own {p}×{p} patch; its {d} latent values are {what}, laid out row by row in the patch. "
                f"The AR model draws Z^I — the first {d_i} values of every token, the top of each patch — one "
                f"token at a time, {order}; dark blue marks values not drawn yet. The next frame adds Z^R, the "
                f"other {d - d_i} values of every token, all at once from the shared mixture. Colours are the "
                f"latent's own range (1st–99th percentile), not pixels.  \n"
                f"*Flow frames:* the flow maps image → latent through blocks 1 … {cfg.flow_blocks}; sampling "
                f"inverts it the other way round, block {cfg.flow_blocks} first and block 1 last, so the frames "
                f"count down; the last one is the image. Every frame shows all the samples of the batch.")

    # ------------------------------------------------------------------ Likelihood tab
    @user_errors
    def likelihood(self, source: str = "test image", test_class: str = ANY_CLASS, test_index: int = 0,
                   sample_class: str = UNCONDITIONAL, sample_seed: int = 0, upload: Any = None,
                   fit: str = "pad", invert: bool = False, condition: str = OWN_LABEL):
        """Score one image: (image, summary, pixel heatmap, token map, block chart, terms chart, numbers)."""
        x, own, what, notes = self.pick_image(source, test_class, test_index, sample_class, sample_seed,
                                              upload, fit, invert)
        label, cond = self.condition(condition, own)
        y = None if label is None else torch.tensor([label], device=self.device)
        m = farmer.likelihood_map(self.model, x, y, seed=NOISE_SEED)
        cfg, D = self.cfg, self.cfg.data_dim
        bpd = float(m["bpd"][0])
        pixel = m["pixel_bits"][0].double().cpu().numpy()                           # (C, H, W)
        h = cfg.image_size // cfg.patch_size
        grid = lambda t: t[0].double().cpu().numpy().reshape(h, h)                  # noqa: E731 (N,) -> (h, w)
        flow_tok = m["token_bits"] - m["token_prior_bits"]                      # −log|det| + ln128 part
        per_block = (-m["block_logdet"][0] / (D * LN2)).tolist()                # bits/dim of each block
        # the four parts of the total, in bits/dim; "dequantisation" is the + D·ln128 of the [−1, 1] rescale
        terms = {"prior_informative": float(m["prior_informative_bits"][0]) / D,
                 "prior_redundant": float(m["prior_redundant_bits"][0]) / D,
                 "flow_neg_logdet": -float(m["logdet_bits"][0]) / D,
                 "dequantisation": math.log2(128.0)}
        prior = terms["prior_informative"] + terms["prior_redundant"]
        numbers = {
            "bits_per_dim": bpd, "nll_nats": float(m["nll"][0]),
            "estimator": f"{estimator_name(1)}, noise seed {NOISE_SEED}",
            "image": what, "conditioning": cond, "conversion": notes,
            "terms_bits_per_dim": terms,
            "prior_split_bits_per_dim": {"informative": terms["prior_informative"],
                                         "redundant": terms["prior_redundant"], "total": prior},
            "block_bits_per_dim": per_block, "pixel_bits_sum": float(pixel.sum()),
            "model": self.name, "map": map_kind(cfg),
        }
        caution = check_image(self.model, self.ood, x, NOISE_SEED, self.checkpoint)
        numbers["ood"] = {k: caution[k] for k in ("flagged", "scores", "thresholds")}
        per_patch = numbers["map"].startswith("per patch")
        summary = (f"**{bpd:.3f} bits/dim** — {what}, scored as {cond}.  \n"
                   f"{self.model_line}; estimator: {numbers['estimator']}.  \n"
                   f"Prior {prior:.3f} bits/dim = informative Z^I {terms['prior_informative']:.3f} + redundant "
                   f"Z^R {terms['prior_redundant']:.3f}; flow −log|det| {terms['flow_neg_logdet']:.3f}; "
                   f"+7 (log₂ 128) for the [−1, 1] rescale.  \n"
                   f"**Map {numbers['map']}.**" + (f" {map_note(cfg)}" if per_patch else "")
                   + f"  \n{caution['text']}")
        if source == "model sample":
            summary += f"  \n{SAMPLES_SCORE_WORSE}"
        if notes:
            summary += "  \n**Converted:** " + "; ".join(notes) + "."
        shown = render.enlarge(render.squeeze(x[0].cpu().numpy().transpose(1, 2, 0)), 224)
        heat = render.pixel_heatmap(pixel.sum(0), f"bits per {'pixel, spread over patches' if per_patch else 'pixel'}"
                                                  f" (sum {pixel.sum():.0f} = {bpd:.3f} × {D}) · {self.name}")
        tokens = render.token_heatmap(grid(m["token_bits"]), grid(m["token_informative_bits"]),
                                      grid(m["token_redundant_bits"]), grid(flow_tok),
                                      f"bits per token ({cfg.patch_size}×{cfg.patch_size} patch)")
        blocks = render.bar_chart([f"block {t + 1}" for t in range(cfg.flow_blocks)], per_block,
                                  "−log|det| of each flow block", "bits/dim")
        split = render.terms_chart(terms, f"where the {bpd:.3f} bits/dim go")
        return shown, summary, heat, tokens, blocks, split, numbers

    @user_errors
    def compare(self, a_source: str = "test image", a_test_class: str = ANY_CLASS, a_test_index: int = 0,
                a_sample_class: str = UNCONDITIONAL, a_sample_seed: int = 0, a_upload: Any = None,
                a_fit: str = "pad", a_invert: bool = False, a_condition: str = OWN_LABEL,
                b_source: str = "test image", b_test_class: str = ANY_CLASS, b_test_index: int = 1,
                b_sample_class: str = UNCONDITIONAL, b_sample_seed: int = 0, b_upload: Any = None,
                b_fit: str = "pad", b_invert: bool = False, b_condition: str = OWN_LABEL):
        """`likelihood` of A and of B — their pixel heatmaps on one colour scale, their token maps on
        another — then the B − A line and the per-pixel difference map B − A.
        -> (A's seven outputs, B's seven, the B − A summary, the difference heatmap)."""
        a = self.likelihood(a_source, a_test_class, a_test_index, a_sample_class, a_sample_seed, a_upload,
                            a_fit, a_invert, a_condition)
        b = self.likelihood(b_source, b_test_class, b_test_index, b_sample_class, b_sample_seed, b_upload,
                            b_fit, b_invert, b_condition)
        scales = {}
        for k, what in ((2, "pixel"), (3, "token")):                           # the two heatmaps of each side
            lo = min(float(np.min(out[k].data[0].z)) for out in (a, b))
            hi = max(float(np.max(out[k].data[0].z)) for out in (a, b))
            for out in (a, b):
                out[k].update_traces(zmin=lo, zmax=hi)
            scales[what] = (lo, hi)
        pix_a, pix_b = (np.asarray(out[2].data[0].z, dtype=np.float64) for out in (a, b))
        diff = pix_b - pix_a                                                   # (H, W) bits
        d = b[6]["bits_per_dim"] - a[6]["bits_per_dim"]
        (plo, phi), (tlo, thi) = scales["pixel"], scales["token"]
        note = (f"**B − A = {d:+.3f} bits/dim** ({b[6]['bits_per_dim']:.3f} vs {a[6]['bits_per_dim']:.3f}; "
                f"{'B' if d > 0 else 'A'} costs more). A: {a[6]['image']}; B: {b[6]['image']}. "
                f"{self.model_line}, map {b[6]['map'].split(':')[0]}. Shared colour scales: pixel maps "
                f"{plo:.1f} to {phi:.1f} bits, token maps {tlo:.1f} to {thi:.1f} bits. The difference map sums "
                f"to {diff.sum():+.1f} bits = {d:+.3f} × {self.cfg.data_dim}.")
        heat = render.difference_heatmap(diff, "B − A, bits per pixel (red: B costs more, blue: A does)")
        return (*a, *b, note, heat)
