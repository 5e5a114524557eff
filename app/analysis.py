"""The analysis handlers: the Channels tab, the Classify panel and the Interpolate tab.

`AnalysisHandlers` is a mixin: `Workbench` (app.handlers) inherits its methods, so the UI and
the tests call them as `wb.channels(...)`, `wb.classify(...)`, `wb.interpolate(...)` like any
other handler. Like the rest, each checks its arguments first (`app.inputs`) and turns a
ValueError from the library into `gr.Error`; the image, the model and the test split come
from `Workbench`.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
import torch

import farmer
from farmer.channels import channel_experiment, perturb_informative, redraw_redundant
from farmer.mixing import channel_labels
from farmer.data import dequantize_uniform, make_generator, quantize
from farmer.interpolate import PATHS
from farmer.likelihood import LN2

from . import render
from .inputs import (ANY_CLASS, NOISE_SEED, OWN_LABEL, UNCONDITIONAL, Z_I_MODES, Z_R_MODES, check, choose, refusal,
                     user_errors)

REFERENCE_IMAGES = 32     # test images of the Channels tab's model-level Fig. 7 statement (computed once)


class AnalysisHandlers:
    """The Channels, Classify and Interpolate handlers of `Workbench`, which mixes this in. They
    rely on its attributes and helpers: `model`, `cfg`, `device`, `test`, `classes`, `decoders`,
    `_reference` (set to None in `Workbench.__init__`), `pick_image` and `condition`."""

    # ------------------------------------------------------------------ Channels tab
    def structure_reference(self) -> dict | None:
        """The paper's Fig. 7 experiment (`farmer.channels.channel_experiment`, v = 1) on the first
        REFERENCE_IMAGES test images, computed once: which group carries this model's structure."""
        if self.test is None or self.cfg.d_r == 0:
            return None
        if self._reference is None:
            n = min(REFERENCE_IMAGES, len(self.test))
            x, y = self.test.get_batch(range(n))
            self._reference = channel_experiment(self.model, x.to(self.device),
                                                 y.to(self.device) if self.cfg.num_classes else None,
                                                 variance=1.0, seed=NOISE_SEED)
        return self._reference

    @user_errors
    def channels(self, source: str = "test image", test_class: str = ANY_CLASS, test_index: int = 0,
                 sample_class: str = UNCONDITIONAL, sample_seed: int = 0, upload: Any = None,
                 fit: str = "pad", invert: bool = False, condition: str = OWN_LABEL,
                 variance_scale: float = 1.0, z_i_mode: str = "keep", z_i_noise: float = 1.0,
                 draws: int = 4, seed: int = 0, decoder: str = "sequential", z_r_mode: str = "redraw"):
        """The paper's Fig. 7 on one image: keep or redraw Z^R (from the model's G_{N+1}(· | Z^I, c),
        each component's variance × `variance_scale`) × keep or perturb Z^I (+ `z_i_noise` × each
        informative channel's std over the image's tokens × ε, `farmer.channels.perturb_informative`).
        Decodes `draws` times in the chosen case and measures all four cases' mean |pixel change|
        against decode(encode(x)). -> (gallery, summary, channel table, channel chart)."""
        v = check("variance_scale", variance_scale)
        choose("Z^I", z_i_mode, Z_I_MODES)
        choose("Z^R", z_r_mode, Z_R_MODES)
        noise = check("z_i_noise", z_i_noise)
        R, seed = check("draws", draws), check("seed", seed)
        choose("decoder", decoder, self.decoders)
        x, own, what, notes = self.pick_image(source, test_class, test_index, sample_class, sample_seed,
                                              upload, fit, invert)
        label, cond = self.condition(condition, own)
        model, cfg = self.model, self.cfg
        d, d_i = cfg.token_dim, cfg.d_i
        g = make_generator(seed, self.device)
        y = None if label is None else torch.tensor([label], device=self.device)
        with torch.no_grad():
            z, _ = model.encode(dequantize_uniform(x, NOISE_SEED))              # (1, N, d) raster order
            z_inf, z_red = model.split(model.ar_order(z))                        # AR order: (1,N,d_I), (1,N,d_R)
            zi = z_inf.expand(R, -1, -1)                                         # (R, N, d_I)
            zr = z_red.expand(R, -1, -1)                                         # (R, N, d_R)
            y_ar = model.labels_or_null(None if y is None else y.expand(R), R, zi.device)   # null if None
            scale = z_inf[0].std(0)                                              # (d_I,) over the tokens
            zi_new = perturb_informative(zi, noise ** 2, scale, g)               # (R, N, d_I)
            zr_new = redraw_redundant(model, zi, y_ar, v, g)                     # (R, N, d_R)
            cases = {("keep", "redraw"): (zi, zr_new), ("perturb", "keep"): (zi_new, zr),
                     ("perturb", "redraw"): (zi_new, zr_new)}
            z_all = torch.cat([torch.cat(c, dim=-1) for c in cases.values()])    # (3R, N, d) AR order
            recon = quantize(model.decode(z, decoder))                           # (1, C, H, W)
            decoded = quantize(model.decode(model.ar_order(z_all), decoder)).view(3, R, *x.shape[1:])
            logdet = model.nll(x, y, seed=NOISE_SEED, detail=True)["logdet_terms"][0].sum((0, 1))  # (d,) nats
        change = {("keep", "keep"): 0.0}                                         # decode(encode(x)) itself
        imgs = {("keep", "keep"): recon.expand(R, -1, -1, -1)}
        for k, key in enumerate(cases):
            imgs[key] = decoded[k]
            change[key] = (decoded[k].float() - recon.float()).abs().mean().item()
        chosen = (z_i_mode, z_r_mode)
        big = lambda t: render.enlarge(render.squeeze(t.cpu().numpy().transpose(1, 2, 0)), 168)  # noqa: E731
        name = lambda zi_m, zr_m: (f"Z^I {'kept' if zi_m == 'keep' else f'+ {noise:g}·std·ε'}, "  # noqa: E731
                                   f"Z^R {'kept' if zr_m == 'keep' else f'redrawn ×{v:g}'}")
        gallery = [(big(x[0]), "input"), (big(recon[0]), "decode(encode(x)): both kept")]
        if chosen != ("keep", "keep"):
            gallery += [(big(imgs[chosen][r]), f"#{r + 1}: {name(*chosen)}") for r in range(R)]
        # per-channel statistics; channel j is the same slot of every patch in both token orders
        zs = model.ar_order(z)[0]                                            # (N, d) AR order
        rows = []
        labels = channel_labels(cfg)                                             # pixel or frequency
        for j in range(d):
            rows.append([j, "informative Z^I" if j < d_i else "redundant Z^R", labels[j],
                         round(float(zs[:, j].mean()), 4), round(float(zs[:, j].std()), 4),
                         round(float(zs[:, j].abs().mean()), 4), round(float(-logdet[j]) / LN2 / cfg.tokens, 4)])
        headers = ["channel", "group", "what the channel is", "mean z", "std z", "mean |z|",
                   "−log|det| bits/token"]
        chart = render.bar_chart([str(j) for j in range(d)], [r[4] for r in rows],
                                 "std of each latent channel over the tokens (blue Z^I, orange Z^R)", "std",
                                 colors=[render.Z_I_COLOR if j < d_i else render.Z_R_COLOR for j in range(d)])
        how = {"split": "from the model's shared mixture G_{N+1}(· | Z^I, c)",
               "jetformer": "from N(0, I) (this model's JetFormer-style redundant group)",
               "none": "— this model has no redundant group (d_R = 0), so only Z^I can change"}[cfg.redundant_mode]
        def cell(case: tuple[str, str]) -> str:                               # one entry of the 2 × 2 table
            text = f"**{change[case]:.1f}** ◀ shown" if case == chosen else f"{change[case]:.1f}"
            return text + (" (the reconstruction)" if case == ("keep", "keep") else "")
        table = "| | Z^R kept | Z^R redrawn |\n|---|---|---|\n" + "\n".join(
            f"| **Z^I {'kept' if zi_m == 'keep' else 'perturbed'}** | "
            + " | ".join(cell((zi_m, zr_m)) for zr_m in Z_R_MODES) + " |" for zi_m in Z_I_MODES)
        zi_used = (f"perturbed: + {noise:g} × each channel's std over the tokens × ε" if z_i_mode == "perturb"
                   else "kept (the image's own)")
        zr_used = (f"redrawn {how}, variance ×{v:g}" if z_r_mode == "redraw" else "kept (the image's own)")
        others = [f"Z^I noise {noise:g}×std" if z_i_mode == "keep" else "",
                  f"Z^R variance ×{v:g}" if z_r_mode == "keep" else ""]
        others = " and ".join(o for o in others if o)
        summary = (f"{self.model_line}. {what}, encoded with noise seed {NOISE_SEED}; {cond}.  \n"
                   f"Shown case — Z^I ({d_i} of {d} channels per token): {zi_used}; Z^R ({d - d_i}): {zr_used}"
                   + (f"; seed {seed}, {R} draws" if chosen != ("keep", "keep") else "") + ".  \n"
                   + (f"The table's other cases use {others} (the greyed-out setting).  \n" if others else "")
                   + f"**Shown: {name(*chosen)} — mean |pixel change| {change[chosen]:.1f} grey levels** vs "
                   f"decode(encode(x)) (which is {(recon.float() - x.float()).abs().mean().item():.1f} from "
                   f"the input).\n\nMean |pixel change| (grey levels, 0–255) of all four cases, "
                   f"mean of the {R} draws:\n\n{table}\n\n" + self._structure_note(change))
        if notes:
            summary += "  \n**Converted:** " + "; ".join(notes) + "."
        return gallery, summary, pd.DataFrame(rows, columns=headers), chart

    def _structure_note(self, change: dict) -> str:
        """Which group carries the structure: for the loaded model (Fig. 7 on test images) and this image."""
        mine = change[("keep", "redraw")] / max(change[("perturb", "keep")], 1e-12)
        here = (f"this image: redraw Z^R {change[('keep', 'redraw')]:.1f} vs perturb Z^I "
                f"{change[('perturb', 'keep')]:.1f}, ratio {mine:.2f}")
        ref = self.structure_reference()
        if ref is None:
            return f"**Which group carries the structure** (ratio < 1: Z^I) — {here}."
        carrier = "Z^I carries the structure, Z^R the detail" if ref["ratio"] < 1 else \
            "Z^R still carries structure (Z^I does not hold the image on its own)"
        return (f"**In this model {carrier}:** over {ref['images']} test images at variance 1 (the paper's "
                f"Fig. 7, `farmer.channel_experiment`), redrawing Z^R moves the pixels "
                f"{ref['redraw_redundant']:.1f} grey levels, perturbing Z^I {ref['perturb_informative']:.1f} "
                f"(ratio {ref['ratio']:.2f}); {here}.")

    # ------------------------------------------------------------------ Classify panel (Likelihood tab)
    @user_errors
    def classify(self, source: str = "test image", test_class: str = ANY_CLASS, test_index: int = 0,
                 sample_class: str = UNCONDITIONAL, sample_seed: int = 0, upload: Any = None,
                 fit: str = "pad", invert: bool = False, noise_draws: int = 1):
        """p(y | x) of one image by Bayes' rule (uniform prior, exact conditional likelihoods,
        `farmer.classify`). -> (bar chart, summary, numbers)."""
        k = check("noise_draws", noise_draws)
        if self.cfg.num_classes == 0:
            raise refusal("this model is unconditional (no classes), so it cannot classify",
                           title="Cannot do that")
        x, own, what, notes = self.pick_image(source, test_class, test_index, sample_class, sample_seed,
                                              upload, fit, invert)
        log_post = farmer.classify(self.model, x, k=k, seed=NOISE_SEED)[0].double().cpu()   # (num_classes,)
        probs = log_post.exp().tolist()
        best = int(log_post.argmax())
        colors = ["#d62728" if c == best else "#1f77b4" for c in range(len(probs))]
        chart = render.bar_chart(self.classes, probs, "p(y | x) by Bayes' rule, uniform prior", "probability",
                                 colors=colors)
        chart.update_yaxes(range=[0, 1])
        draws = "one uniform dequantisation draw" if k == 1 else f"{k} draws, importance-weighted"
        estimator = f"log p(x|y) from {draws} (noise seed {NOISE_SEED}), the same noise for every class"
        verdict = ""
        if own is not None:
            verdict = " — right" if own == best else f" — wrong: the image's label is {self.classes[own]}"
        from .caution import check_image
        caution = check_image(self.model, self.ood, x, NOISE_SEED, self.checkpoint)
        summary = (f"**p(y|x): {self.classes[best]} {probs[best]:.3f}**{verdict}.  \n{what}; {self.model_line}.  \n"
                   f"log p(y|x) = log p(x|y) − logsumexp over the {len(probs)} classes; {estimator}.  \n"
                   + (caution["text"] if caution["flagged"] else
                      "OOD check: in range (complexity and typicality under their 99% thresholds)."))
        if notes:
            summary += "  \n**Converted:** " + "; ".join(notes) + "."
        numbers = {"image": what, "predicted": self.classes[best],
                   "own_label": None if own is None else self.classes[own],
                   "probabilities": dict(zip(self.classes, probs)),
                   "log_posterior": dict(zip(self.classes, log_post.tolist())), "estimator": estimator,
                   "noise_draws": k, "conversion": notes, "model": self.name,
                   "ood": {k_: caution[k_] for k_ in ("flagged", "scores", "thresholds")}}
        return chart, summary, numbers

    # ------------------------------------------------------------------ Interpolate tab
    @user_errors
    def interpolate(self, a_source: str = "test image", a_test_class: str = ANY_CLASS, a_test_index: int = 0,
                    a_sample_class: str = UNCONDITIONAL, a_sample_seed: int = 0, a_upload: Any = None,
                    a_fit: str = "pad", a_invert: bool = False,
                    b_source: str = "test image", b_test_class: str = ANY_CLASS, b_test_index: int = 1,
                    b_sample_class: str = UNCONDITIONAL, b_sample_seed: int = 0, b_upload: Any = None,
                    b_fit: str = "pad", b_invert: bool = False, steps: int = 9, decoder: str = "sequential"):
        """Walk from A's latent to B's along both paths (`farmer.interpolate`), decode and score every
        point under the null class. -> (linear strip, spherical strip, bits/dim chart, norm chart,
        summary, numbers)."""
        S = check("steps", steps)
        choose("decoder", decoder, self.decoders)
        x_a, _, what_a, notes_a = self.pick_image(a_source, a_test_class, a_test_index, a_sample_class,
                                                  a_sample_seed, a_upload, a_fit, a_invert)
        x_b, _, what_b, notes_b = self.pick_image(b_source, b_test_class, b_test_index, b_sample_class,
                                                  b_sample_seed, b_upload, b_fit, b_invert)
        walks = {path: farmer.interpolate(self.model, x_a, x_b, steps=S, path=path, seed=NOISE_SEED,
                                          decoder=decoder) for path in PATHS}
        t = walks["linear"]["t"].tolist()
        bpd = {path: w["bpd"][0].tolist() for path, w in walks.items()}
        norm = {path: w["latent_norm"][0].tolist() for path, w in walks.items()}
        strips = [render.strip(walks[path]["images"][0]) for path in PATHS]
        bpd_chart = render.line_chart(t, bpd, "bits/dim of each decoded image (null class)", "t", "bits/dim")
        norm_chart = render.line_chart(t, norm, "latent norm ‖z(t)‖ along the path", "t", "‖z‖")
        mid = S // 2
        summary = (f"{self.model_line}. A: {what_a}; B: {what_b}. {S} points from A (t = 0) to B (t = 1), "
                   f"decoder {decoder}.  \n"
                   f"At t = {t[mid]:.2f}: linear **{bpd['linear'][mid]:.3f}** bits/dim, "
                   f"‖z‖ {norm['linear'][mid]:.1f}; "
                   f"spherical **{bpd['spherical'][mid]:.3f}** bits/dim, ‖z‖ {norm['spherical'][mid]:.1f} "
                   f"(ends {norm['linear'][0]:.1f} and {norm['linear'][-1]:.1f}). The linear path shrinks the "
                   f"latent towards the prior's centre; the spherical one keeps its norm.  \n"
                   f"Estimator: {walks['linear']['estimator']}.")
        if "model sample" in (a_source, b_source):
            from .handlers import SAMPLES_SCORE_WORSE
            summary += f"  \n{SAMPLES_SCORE_WORSE}"
        notes = notes_a + notes_b
        if notes:
            summary += "  \n**Converted:** " + "; ".join(notes) + "."
        numbers = {"a": what_a, "b": what_b, "t": t, "bits_per_dim": bpd, "latent_norm": norm,
                   "estimator": walks["linear"]["estimator"], "decoder": decoder, "conversion": notes,
                   "model": self.name}
        return strips[0], strips[1], bpd_chart, norm_chart, summary, numbers
