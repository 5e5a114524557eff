"""The four tabs, each a function that lays out its controls and wires them to the shelf's models.

Each takes the `Shelf`, the keyword arguments of every model-running event (`run`: one shared
concurrency group) and `ok`, which chains "close the error toasts" onto a successful event. Every
tab opens on the model `Shelf.defaults` picks for it; every endpoint takes that model's name as
its first argument. Results never outlive their inputs: the Likelihood tab clears them when an
input changes, the others mark them stale (`app.wiring`).
"""
from __future__ import annotations

import gradio as gr

from .handlers import ignored_settings
from .inputs import GUIDANCE, Z_I_MODES, Z_R_MODES
from .handlers import NEGATIVE_BITS
from .ui import INFO, classify_panel, cleared, image_picker, likelihood_outputs, model_picker, whole
from .wiring import Dropdown, Radio, clear_on_change, mark_stale_on_change, number, routed

PRIVATE = dict(queue=False, api_visibility="private", show_progress="hidden")


def _decoders(shelf, name: str, current: str) -> gr.Radio:
    """The decoder choices of model `name` (the distilled ones need a student), keeping `current` if it can."""
    choices = list(shelf[name].decoders)
    return gr.Radio(choices=choices, value=current if current in choices else choices[0])


def sample_tab(shelf, run: dict, ok) -> None:
    name = shelf.defaults["sample"]
    wb = shelf[name]
    rec = {k: v for k, v in wb.recommended.items()}                         # the card's measured settings
    val = lambda k, fallback: rec.get(k, fallback)                            # noqa: E731
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            model, _ = model_picker(shelf, "sample")
            cls = Dropdown(wb.class_choices, value=wb.class_choices[min(1, len(wb.class_choices) - 1)],
                              label="class", elem_id="sample-class")
            guidance = Radio(list(GUIDANCE), value=val("guidance", "resample"), label="guidance",
                                info="resample: FARMER's Algorithm 1; naive: GIVT/JetFormer rejection",
                                elem_id="sample-guidance")
            w0 = float(val("cfg_scale", 2.0))
            first_note, first_unused = ignored_settings(cls.value, guidance.value, w0)
            ignored = gr.Markdown(first_note, elem_id="sample-ignored")
            w = number("cfg_scale", "w (guidance weight)", w0, 0.1, info=INFO["cfg_scale"], elem_id="sample-w")
            with gr.Row():
                s_c = number("candidates_cond", "s_c (candidates from G_c)", int(val("candidates_cond", 10)), 1,
                             info=INFO["candidates_cond"], elem_id="sample-s-c")
                s_u = number("candidates_uncond", "s_u (candidates from G_u)", int(val("candidates_uncond", 0)),
                             1, info=INFO["candidates_uncond"], elem_id="sample-s-u")
            with gr.Row():
                t_pi = number("t_pi", "T_π (mixture logits)", float(val("t_pi", 1.0)), 0.05, info=INFO["t_pi"],
                              elem_id="sample-t-pi")
                t_sigma = number("t_sigma", "T_σ (scales)", float(val("t_sigma", 1.0)), 0.05,
                                 info=INFO["t_sigma"], elem_id="sample-t-sigma")
            with gr.Accordion("verification temperatures (resampling)", open=False):
                t_pi_v = number("t_pi_verify", "T_π,v", float(val("t_pi_verify", 1.0)), 0.05,
                                info=INFO["t_pi_verify"], elem_id="sample-t-pi-v")
                t_sigma_v = number("t_sigma_verify", "T_σ,v", float(val("t_sigma_verify", 1.0)), 0.05,
                                   info=INFO["t_sigma_verify"], elem_id="sample-t-sigma-v")
                t_sel = number("t_select", "T_s (× log-weights)", float(val("t_select", 1.0)), 0.05,
                               info=INFO["t_select"], elem_id="sample-t-s")
            guided = {"cfg_scale": w, "candidates_cond": s_c, "candidates_uncond": s_u,
                      "t_pi_verify": t_pi_v, "t_sigma_verify": t_sigma_v, "t_select": t_sel}
            for unused in first_unused:
                guided[unused].interactive = False
            with gr.Row():
                seed = whole("seed", "seed", 0, elem_id="sample-seed")
                batch = number("batch_size", "batch size", min(8, wb.max_batch), 1, high=wb.max_batch,
                               elem_id="sample-batch")
            decoder = Radio(list(wb.decoders), value="sequential", label="decoder (AF inverse)",
                               info="sequential: KV-cached, exact; jacobi: parallel fixed-point iteration (same "
                                    "images to 1e-4; iterations in the stats); distilled: one pass per block; "
                                    "hybrid: Jacobi from the student", elem_id="sample-decoder")
            gr.Markdown(f"<small>Start values for `{name}`: {wb.recommended_from}.</small>" if rec else
                        "<small>Start values: the paper's (this model has no card).</small>",
                        elem_id="sample-defaults")
            go = gr.Button("Sample", variant="primary", elem_id="sample-button")
        with gr.Column(scale=2):
            grid = gr.Image(label="samples (the whole batch)", type="numpy", format="png",
                            interactive=False, elem_id="sample-grid", height=460)
            # a number (the API returns a float); hidden until the first run, as Gradio shows 0 for "no value"
            seconds = gr.Number(None, label="seconds (the model's work, without drawing pictures)",
                                interactive=False, visible=False, elem_id="sample-seconds")
            report = gr.Markdown(elem_id="sample-report")
            frames = gr.Gallery(label="progressive view: latent tokens filling in, then each flow block "
                                      "inverted (every sample of the batch)",
                                columns=4, height="auto", object_fit="contain", format="png",
                                elem_id="sample-progress", elem_classes=["farmer-gallery"])
            help_ = gr.Markdown(wb.latent_help(), elem_id="sample-progress-help")
            with gr.Accordion("settings and guidance counts (JSON): everything needed to redraw the grid",
                              open=False):
                stats = gr.JSON(label="settings and guidance counts", elem_id="sample-stats")
    inputs = [model, cls, guidance, w, s_c, s_u, t_pi, t_sigma, t_pi_v, t_sigma_v, t_sel, seed, batch, decoder]
    ok(go.click(routed(shelf, "sample", name), inputs, [grid, seconds, frames, stats, report],
                api_name="sample", **run)).success(lambda: gr.Number(visible=True), None, seconds, **PRIVATE)

    def flag(class_name, guidance_name, weight):
        """The note next to the guidance control, and the unused controls greyed out."""
        note, unused = ignored_settings(class_name, guidance_name, weight if isinstance(weight, (int, float))
                                        else 1.0)
        return [note] + [gr.Number(interactive=k not in unused) for k in guided]

    for control in (cls, guidance, w):
        control.change(flag, [cls, guidance, w], [ignored, *guided.values()], **PRIVATE)
    model.change(lambda n, d: (_decoders(shelf, n, d), shelf[n].latent_help()), [model, decoder],
                 [decoder, help_], **PRIVATE)
    mark_stale_on_change(inputs, report)


def likelihood_tab(shelf, run: dict, ok) -> None:
    name = shelf.defaults["likelihood"]
    wb = shelf[name]
    gr.Markdown("Exact bits/dim of one image, where they go pixel by pixel, token by token and block by block, "
                "and the informative / redundant split of the prior. Pick A and B, score each, then compare them "
                "(shared colour scales, the per-pixel difference B − A) and classify them.  \n"
                f"<small>{NEGATIVE_BITS}</small>")
    model, _ = model_picker(shelf, "likelihood")
    condition_help = "scores p(x | class); the null class gives the unconditional p(x)"
    with gr.Row():
        with gr.Column():
            gr.Markdown("### A")
            pick_a = image_picker(wb, "a", 0, condition_help)
            score_a = gr.Button("Score A", variant="primary", elem_id="score-a")
        with gr.Column():
            gr.Markdown("### B")
            pick_b = image_picker(wb, "b", 1, condition_help)
            score_b = gr.Button("Score B", variant="primary", elem_id="score-b")
    with gr.Row():
        with gr.Column():
            out_a = likelihood_outputs("a")
        with gr.Column():
            out_b = likelihood_outputs("b")
    gr.Markdown("### Compare A and B")
    both = gr.Button("Compare A and B (re-scores both: shared colour scales, difference map)", elem_id="compare")
    diff = gr.Markdown(elem_id="compare-summary")
    diff_map = gr.Plot(label="B − A per pixel", elem_id="compare-diff")
    gr.Markdown("### Classify\nBy Bayes' rule: p(y | x) ∝ p(x | y), the exact conditional likelihood of every "
                "class, uniform prior (the picked image; *condition on class* is not used).")
    with gr.Row():
        with gr.Column():
            classify_a, k_a, cls_a = classify_panel("a")
        with gr.Column():
            classify_b, k_b, cls_b = classify_panel("b")
    compared = [diff, diff_map]
    lik = routed(shelf, "likelihood", name)
    # a failed request (a bad upload, an index out of range) leaves no earlier result under its error,
    # nor a comparison or classification of the image it replaced
    events = {}
    events["a"] = score_a.click(lik, [model] + pick_a, out_a, api_name="likelihood", **run)
    events["b"] = score_b.click(lik, [model] + pick_b, out_b, api_name="likelihood_b", **run)
    for key, out, cls in (("a", out_a, cls_a), ("b", out_b, cls_b)):
        stale = out + cls + compared
        events[key].failure(cleared(len(stale)), None, stale, **PRIVATE)
        ok(events[key])
    every = out_a + out_b + compared
    ok(both.click(routed(shelf, "compare", name), [model] + pick_a + pick_b, every, api_name="compare", **run)
       ).failure(cleared(len(every)), None, every, **PRIVATE)
    clf = routed(shelf, "classify", name)
    ok(classify_a.click(clf, [model] + pick_a[:8] + [k_a], cls_a, api_name="classify", **run)
       ).failure(cleared(len(cls_a)), None, cls_a, **PRIVATE)
    ok(classify_b.click(clf, [model] + pick_b[:8] + [k_b], cls_b, api_name="classify_b", **run)
       ).failure(cleared(len(cls_b)), None, cls_b, **PRIVATE)
    # stale results are cleared the moment an input changes: the image (its side, its Classify panel
    # and the comparison), the condition (its side and the comparison), the draws k (its panel), the model (all)
    for pick, out, cls, k in ((pick_a, out_a, cls_a, k_a), (pick_b, out_b, cls_b, k_b)):
        clear_on_change(pick[:8], out + cls + compared)
        clear_on_change([pick[8]], out + compared)
        clear_on_change([k], cls)
    clear_on_change([model], every + cls_a + cls_b)


def channels_tab(shelf, run: dict, ok) -> None:
    name = shelf.defaults["channels"]
    wb = shelf[name]
    gr.Markdown("The paper's Fig. 7 on one image. Each token's d channels split into Z^I (modelled token by "
                "token) and Z^R (one shared mixture given Z^I). Keep or redraw Z^R × keep or perturb Z^I, decode, "
                "and compare the mean |pixel change| of all four cases: the group whose change moves the pixels "
                "most carries the image's structure. The summary says which group that is in the chosen model.")
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            model, _ = model_picker(shelf, "channels")
            pick_c = image_picker(wb, "c", 0, "the class c of G_{N+1}(· | Z^I, c) that Z^R is redrawn from")
            zr_mode = Radio(list(Z_R_MODES), value="redraw", label="Z^R", elem_id="c-zr-mode",
                               info="keep the image's own, or redraw from the model's shared mixture")
            v = number("variance_scale", "Z^R variance scale", 1.0, 0.1, elem_id="c-variance",
                       info="0: the mixture components' means; 1: the model's own spread")
            zi_mode = Radio(list(Z_I_MODES), value="keep", label="Z^I", elem_id="c-zi-mode",
                               info="keep the image's own, or add Gaussian noise")
            zi_noise = number("z_i_noise", "Z^I noise (× each channel's std over the tokens)", 1.0, 0.05,
                              info="1: the paper's Fig. 7 (noise of the channel's own spread)",
                              interactive=False, elem_id="c-zi-noise")                 # Z^I starts kept
            with gr.Row():
                draws = number("draws", "draws", 4, 1, elem_id="c-draws")
                c_seed = whole("seed", "seed", 0, elem_id="c-seed")
            c_decoder = Radio(list(wb.decoders), value=wb.decoders[0], label="decoder", elem_id="c-decoder")
            decode = gr.Button("Decode", variant="primary", elem_id="channels-button")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="input, reconstruction, then every draw of the chosen case",
                                 columns=4, height="auto", object_fit="contain", format="png",
                                 elem_id="channels-gallery", elem_classes=["farmer-gallery"])
            c_summary = gr.Markdown(elem_id="channels-summary")
            c_chart = gr.Plot(label="per-channel spread")
            c_table = gr.Dataframe(label="per-channel statistics (latent z over the tokens)", interactive=False)
    inputs = [model] + pick_c + [v, zi_mode, zi_noise, draws, c_seed, c_decoder, zr_mode]
    ok(decode.click(routed(shelf, "channels", name), inputs, [gallery, c_summary, c_table, c_chart],
                    api_name="channels", **run))
    # a kept group has no variance or noise to set: grey its box out
    zr_mode.change(lambda m: gr.Number(interactive=m == "redraw"), zr_mode, v, **PRIVATE)
    zi_mode.change(lambda m: gr.Number(interactive=m == "perturb"), zi_mode, zi_noise, **PRIVATE)
    model.change(lambda n, d: _decoders(shelf, n, d), [model, c_decoder], c_decoder, **PRIVATE)
    mark_stale_on_change(inputs, c_summary)


def interpolate_tab(shelf, run: dict, ok) -> None:
    name = shelf.defaults["interpolate"]
    wb = shelf[name]
    gr.Markdown("Encode two images, walk from A's latent to B's — along a straight line and along a "
                "variance-preserving spherical path (directions by slerp, norm linear between the "
                "ends) — decode every point and score it (bits/dim under the null class).")
    model, _ = model_picker(shelf, "interpolate")
    with gr.Row():
        with gr.Column():
            gr.Markdown("### A (t = 0)")
            pick_ia = image_picker(wb, "ia", 0)
        with gr.Column():
            gr.Markdown("### B (t = 1)")
            pick_ib = image_picker(wb, "ib", 1)
    with gr.Row():
        steps = number("steps", "points on the path (ends included)", 9, 1, elem_id="interp-steps")
        i_decoder = Radio(list(wb.decoders), value=wb.decoders[0], label="decoder", elem_id="interp-decoder")
        walk = gr.Button("Interpolate", variant="primary", elem_id="interp-button")
    i_summary = gr.Markdown(elem_id="interp-summary")
    # no label or toolbar over the strips: they would cover the end images; up to 8 images a row
    gr.Markdown("**Linear path:** (1 − t)·z_a + t·z_b, left to right, row by row")
    linear = gr.Image(show_label=False, buttons=[], type="numpy", format="png", interactive=False,
                      elem_id="interp-linear")
    gr.Markdown("**Spherical path:** slerp of the directions, norm linear in t")
    spherical = gr.Image(show_label=False, buttons=[], type="numpy", format="png", interactive=False,
                         elem_id="interp-spherical")
    with gr.Row():
        i_bpd = gr.Plot(label="bits/dim along the path", elem_id="interp-bpd")
        i_norm = gr.Plot(label="latent norm along the path", elem_id="interp-norm")
    with gr.Accordion("numbers (JSON)", open=False):
        i_numbers = gr.JSON(label="numbers")
    inputs = [model] + pick_ia + pick_ib + [steps, i_decoder]
    ok(walk.click(routed(shelf, "interpolate", name), inputs,
                  [linear, spherical, i_bpd, i_norm, i_summary, i_numbers], api_name="interpolate", **run))
    model.change(lambda n, d: _decoders(shelf, n, d), [model, i_decoder], i_decoder, **PRIVATE)
    mark_stale_on_change(inputs, i_summary)
