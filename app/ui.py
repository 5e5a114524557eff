"""The Gradio layout: four tabs wired to `Workbench`'s handlers.

`build_app(workbench)` returns a queued `gr.Blocks`; nothing here loads a
model or starts a server (that is `python -m app`), so tests build the same
app and launch it on a free port. Every model-running event shares one
concurrency group, so `concurrency` requests run at once across all tabs and
up to `queue_size` wait; a request beyond that is refused with Gradio's
"queue is full" message instead of waiting for ever.
"""
from __future__ import annotations

import gradio as gr

from farmer.images import FITS

from .handlers import (ANY_CLASS, GUIDANCE, NEGATIVE_BITS, OWN_LABEL, RANGES, SOURCES, Z_I_MODES, Z_R_MODES,
                       Workbench, check, ignored_settings)

MODEL_GROUP = "model"        # concurrency_id shared by every endpoint that runs the model
# Gradio 6 takes css in launch() (`python -m app` passes it): gallery captions wrap instead of being cut
CSS = """
.farmer-gallery .caption-label { white-space: normal !important; max-width: 100% !important;
                                 overflow: visible !important; opacity: 0.92 !important; }
"""
INFO = {   # one line of help under each guidance control (DESIGN §1.5, the paper's Table 6)
    "cfg_scale": "guidance weight: target p′ ∝ p_c·(p_c / p_u)^w; 0 = plain conditional sampling",
    "candidates_cond": "resampling: candidates drawn from the class-conditional mixture G_c per token",
    "candidates_uncond": "resampling: candidates drawn from the unconditional mixture G_u per token",
    "t_pi": "proposal temperature on the mixture logits (1: the model's own weights)",
    "t_sigma": "proposal temperature on the components' scales (<1: sharper draws)",
    "t_pi_verify": "temperature on the logits when weighting candidates (paper 0.1–0.2: favour dense ones)",
    "t_sigma_verify": "temperature on the scales when weighting candidates (paper 0.9–1.0)",
    "t_select": "multiplies the log-weights before the softmax pick (>1 sharpens; paper 1.1)",
}


def checked(component, name: str, low: float | None = None, high: float | None = None,
            integer: bool | None = None):
    """Make the component's own server-side bounds check (Gradio's, before the handler runs)
    name the parameter: gr.Error("t_sigma must be a number from 0.05 to 3, got 7")."""
    plain = component.preprocess

    def preprocess(payload):
        check(name, payload, low, high, integer)
        return plain(payload)

    component.preprocess = preprocess
    return component


def slider(name: str, label: str, value: float, step: float, info: str | None = None, **kw) -> gr.Slider:
    low, high, _ = RANGES[name]
    return checked(gr.Slider(low, high, value=value, step=step, label=label, info=info or INFO.get(name), **kw),
                   name)


def whole(name: str, label: str, value: int, high: int | None = None, **kw) -> gr.Number:
    """An integer box (seed, index) with its range checked on the server."""
    low, top, _ = RANGES[name]
    high = top if high is None else high
    return checked(gr.Number(value, label=label, precision=0, minimum=low, maximum=high, **kw), name, low, high, True)


def image_picker(wb: Workbench, key: str, index: int, condition: str | None = None) -> list:
    """The nine inputs that choose an image (the first nine arguments of `likelihood` and
    `channels`): source, test class and index, sample class and seed, upload, fit, invert,
    and the label to condition on, with `condition` as its help line (None: left out, eight inputs)."""
    source = gr.Radio(list(SOURCES), value=SOURCES[0] if wb.test is not None else SOURCES[1],
                      label="image", elem_id=f"{key}-source")
    with gr.Row():
        test_class = gr.Dropdown([ANY_CLASS] + wb.classes, value=ANY_CLASS, label="test image: class",
                                 elem_id=f"{key}-test-class")
        last = len(wb.test) - 1 if wb.test is not None else None
        test_index = whole("test_index", "test image: index (within the class, if one is chosen)", index,
                           high=last, elem_id=f"{key}-test-index")
    with gr.Row():
        sample_class = gr.Dropdown(wb.class_choices, value=wb.class_choices[min(1, len(wb.class_choices) - 1)],
                                   label="model sample: class")
        sample_seed = whole("seed", "model sample: seed", 0)
    upload = gr.File(label="upload: any image file (converted to the model's input)", type="filepath",
                     elem_id=f"{key}-upload", height=110)
    with gr.Row():
        fit = gr.Radio(list(FITS), value="pad", label="upload: fit to size",
                       info="pad keeps the aspect ratio; crop fills; stretch ignores it")
        invert = gr.Checkbox(False, label="upload: invert (dark-on-light → light-on-dark)")
    # choosing a file selects the upload source (in the browser: no server round trip)
    upload.upload(None, None, source, js="() => 'upload'", api_visibility="private")
    picked = [source, test_class, test_index, sample_class, sample_seed, upload, fit, invert]
    if condition:
        picked.append(gr.Dropdown(wb.condition_choices, value=OWN_LABEL, label="condition on class",
                                  info=condition, elem_id=f"{key}-condition"))
    return picked


def likelihood_outputs(key: str) -> list:
    image = gr.Image(label="the image the model scores", type="numpy", format="png", interactive=False,
                     height=230, elem_id=f"{key}-image")
    summary = gr.Markdown(label="summary", elem_id=f"{key}-summary")
    heat = gr.Plot(label="bits per pixel (hover for values)", elem_id=f"{key}-heatmap")
    tokens = gr.Plot(label="bits per token", elem_id=f"{key}-tokens")
    split = gr.Plot(label="the four terms, and the prior split on its own axis", elem_id=f"{key}-terms")
    blocks = gr.Plot(label="per flow block")
    with gr.Accordion("numbers (JSON)", open=False):
        numbers = gr.JSON(label="numbers")
    return [image, summary, heat, tokens, blocks, split, numbers]


def cleared(n: int):
    """A handler for `.failure`: blank n outputs, so no earlier result stays under an error."""
    return lambda: [None] * n


def classify_panel(key: str) -> tuple[gr.Button, gr.Number, list]:
    """The Classify panel of one side of the Likelihood tab: button, noise draws, (chart, summary, numbers)."""
    with gr.Group():
        gr.Markdown("**Classify** by Bayes' rule: p(y | x) ∝ p(x | y), the exact conditional likelihood "
                    "of every class, uniform prior (the picked image; *condition on class* is not used).")
        with gr.Row():
            draws = whole("noise_draws", "dequantisation draws k", 1, elem_id=f"{key}-classify-k")
            button = gr.Button(f"Classify {key.upper()}", elem_id=f"classify-{key}")
        chart = gr.Plot(label="p(y | x)", elem_id=f"{key}-classify")
        summary = gr.Markdown(elem_id=f"{key}-classify-summary")
        with gr.Accordion("class probabilities (JSON)", open=False):
            numbers = gr.JSON(label="class probabilities")
    return button, draws, [chart, summary, numbers]


def header(wb: Workbench) -> str:
    cfg, n = wb.cfg, wb.model.num_parameters()
    data = (f"{len(wb.test):,} test images ({wb.data_name})" if wb.test is not None
            else f"no test images: {wb.test_error}")
    title = f"**{wb.card_title}** · " if wb.card_title else ""
    return (f"## FARMER workbench\n"
            f"{title}Checkpoint `{wb.checkpoint}` · {n['total'] / 1e6:.2f} M parameters "
            f"(flow {n['flow'] / 1e6:.2f} M, AR {n['ar'] / 1e6:.2f} M) · {cfg.channels}×{cfg.image_size}×"
            f"{cfg.image_size} images, {cfg.tokens} tokens of d = {cfg.token_dim} (Z^I {cfg.d_i}, "
            f"Z^R {cfg.token_dim - cfg.d_i}) · {cfg.flow_blocks} flow blocks · distilled decoder: "
            f"{'yes' if wb.has_student else 'no'} · {data}.")


def build_app(wb: Workbench, queue_size: int = 16, concurrency: int = 2) -> gr.Blocks:
    """The app for a loaded Workbench, queued; call `.launch()` on the result."""
    run = dict(concurrency_limit=concurrency, concurrency_id=MODEL_GROUP)
    with gr.Blocks(title="FARMER workbench") as demo:
        gr.Markdown(header(wb))
        with gr.Tab("Sample", id="sample"):
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    cls = gr.Dropdown(wb.class_choices, value=wb.class_choices[min(1, len(wb.class_choices) - 1)],
                                      label="class", elem_id="sample-class")
                    guidance = gr.Radio(list(GUIDANCE), value="resample", label="guidance",
                                        info="resample: FARMER's Algorithm 1; naive: GIVT/JetFormer rejection",
                                        elem_id="sample-guidance")
                    first_note, first_unused = ignored_settings(cls.value, guidance.value, 2.0)
                    ignored = gr.Markdown(first_note, elem_id="sample-ignored")
                    w = slider("cfg_scale", "w (guidance weight)", 1.0, 0.1, elem_id="sample-w")   # the card's setting
                    with gr.Row():
                        s_c = slider("candidates_cond", "s_c (candidates from G_c)", 5, 1, elem_id="sample-s-c")
                        s_u = slider("candidates_uncond", "s_u (candidates from G_u)", 5, 1, elem_id="sample-s-u")
                    with gr.Row():
                        t_pi = slider("t_pi", "T_π (mixture logits)", 1.0, 0.05)
                        t_sigma = slider("t_sigma", "T_σ (scales)", 0.9, 0.05)
                    with gr.Accordion("verification temperatures (resampling)", open=False):
                        t_pi_v = slider("t_pi_verify", "T_π,v", 1.0, 0.05)
                        t_sigma_v = slider("t_sigma_verify", "T_σ,v", 1.0, 0.05)
                        t_sel = slider("t_select", "T_s (× log-weights)", 1.0, 0.05)
                    guided = {"cfg_scale": w, "candidates_cond": s_c, "candidates_uncond": s_u,
                              "t_pi_verify": t_pi_v, "t_sigma_verify": t_sigma_v, "t_select": t_sel}
                    for name in first_unused:
                        guided[name].interactive = False
                    with gr.Row():
                        seed = whole("seed", "seed", 0)
                        batch = checked(gr.Slider(1, wb.max_batch, value=min(8, wb.max_batch), step=1,
                                                  label=f"batch size (≤ {wb.max_batch})", elem_id="sample-batch"),
                                        "batch_size", 1, wb.max_batch, True)
                    decoder = gr.Radio(list(wb.decoders), value="sequential", label="decoder (AF inverse)",
                                       info="sequential: KV-cached, exact; jacobi: parallel fixed-point "
                                            "iteration (same images to 1e-4; iterations in the stats); "
                                            "distilled: one pass per block; hybrid: Jacobi from the student")
                    go = gr.Button("Sample", variant="primary", elem_id="sample-button")
                with gr.Column(scale=2):
                    grid = gr.Image(label="samples (the whole batch)", type="numpy", format="png",
                                    interactive=False, elem_id="sample-grid", height=460)
                    # a Textbox, not a Number: Gradio 6's Number shows 0 before any value arrives
                    seconds = gr.Textbox("", label="seconds (the model's work, without drawing pictures)",
                                         placeholder="not run yet", interactive=False, max_lines=1,
                                         elem_id="sample-seconds")
                    frames = gr.Gallery(label="progressive view: latent tokens filling in, then each flow block "
                                              "inverted (every sample of the batch)",
                                        columns=4, height="auto", object_fit="contain", format="png",
                                        elem_id="sample-progress", elem_classes=["farmer-gallery"])
                    gr.Markdown(wb.latent_help(), elem_id="sample-progress-help")
                    with gr.Accordion("settings and guidance counts (JSON)", open=False):
                        stats = gr.JSON(label="settings and guidance counts")
            go.click(wb.sample, [cls, guidance, w, s_c, s_u, t_pi, t_sigma, t_pi_v, t_sigma_v, t_sel, seed,
                                 batch, decoder], [grid, seconds, frames, stats], api_name="sample", **run)

            def flag(class_name, guidance_name, weight):
                """The note next to the guidance control, and the unused controls greyed out."""
                note, unused = ignored_settings(class_name, guidance_name, weight)
                return [note] + [gr.Slider(interactive=name not in unused) for name in guided]

            for control in (cls, guidance, w):
                control.change(flag, [cls, guidance, w], [ignored, *guided.values()], queue=False,
                               api_visibility="private", show_progress="hidden")

        with gr.Tab("Likelihood", id="likelihood"):
            gr.Markdown("Exact bits/dim of one image, where they go pixel by pixel, token by token and "
                        "block by block, and the informative / redundant split of the prior. Score A, B, or "
                        "compare both: pixel maps on one colour scale, token maps on another, and the per-pixel "
                        f"difference B − A.  \n<small>{NEGATIVE_BITS}</small>")
            both = gr.Button("Compare A and B (shared colour scales, difference map)", elem_id="compare")
            diff = gr.Markdown(label="difference", elem_id="compare-summary")
            diff_map = gr.Plot(label="B − A per pixel", elem_id="compare-diff")
            condition_help = "scores p(x | class); the null class gives the unconditional p(x)"
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### A")
                    pick_a = image_picker(wb, "a", 0, condition_help)
                    score_a = gr.Button("Score A", variant="primary", elem_id="score-a")
                    out_a = likelihood_outputs("a")
                    classify_a, k_a, cls_a = classify_panel("a")
                with gr.Column():
                    gr.Markdown("### B")
                    pick_b = image_picker(wb, "b", 1, condition_help)
                    score_b = gr.Button("Score B", variant="primary", elem_id="score-b")
                    out_b = likelihood_outputs("b")
                    classify_b, k_b, cls_b = classify_panel("b")
            # a failed request (a bad upload, an index out of range) leaves no earlier result under its error
            score_a.click(wb.likelihood, pick_a, out_a, api_name="likelihood", **run).failure(
                cleared(len(out_a)), None, out_a, queue=False, api_visibility="private")
            score_b.click(wb.likelihood, pick_b, out_b, api_name="likelihood_b", **run).failure(
                cleared(len(out_b)), None, out_b, queue=False, api_visibility="private")
            compared = out_a + out_b + [diff, diff_map]
            both.click(wb.compare, pick_a + pick_b, compared, api_name="compare", **run).failure(
                cleared(len(compared)), None, compared, queue=False, api_visibility="private")
            classify_a.click(wb.classify, pick_a[:8] + [k_a], cls_a, api_name="classify", **run)
            classify_b.click(wb.classify, pick_b[:8] + [k_b], cls_b, api_name="classify_b", **run)

        with gr.Tab("Channels", id="channels"):
            gr.Markdown("The paper's Fig. 7 on one image. Each token's d channels split into Z^I (modelled "
                        "token by token) and Z^R (one shared mixture given Z^I). Keep or redraw Z^R × keep or "
                        "perturb Z^I, decode, and compare the mean |pixel change| of all four cases: the group "
                        "whose change moves the pixels most carries the image's structure. The summary says "
                        "which group that is in the loaded model.")
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    pick_c = image_picker(wb, "c", 0, "the class c of G_{N+1}(· | Z^I, c) that Z^R is redrawn from")
                    zr_mode = gr.Radio(list(Z_R_MODES), value="redraw", label="Z^R", elem_id="c-zr-mode",
                                       info="keep the image's own, or redraw from the model's shared mixture")
                    v = slider("variance_scale", "Z^R variance scale", 1.0, 0.1,
                               info="0: the mixture components' means; 1: the model's own spread")
                    zi_mode = gr.Radio(list(Z_I_MODES), value="keep", label="Z^I", elem_id="c-zi-mode",
                                       info="keep the image's own, or add Gaussian noise")
                    zi_noise = slider("z_i_noise", "Z^I noise (× each channel's std over the tokens)", 1.0, 0.05,
                                      info="1: the paper's Fig. 7 (noise of the channel's own spread)",
                                      interactive=False, elem_id="c-zi-noise")           # Z^I starts kept
                    with gr.Row():
                        draws = slider("draws", "draws", 4, 1)
                        c_seed = whole("seed", "seed", 0)
                    c_decoder = gr.Radio(list(wb.decoders), value=wb.decoders[0], label="decoder")
                    decode = gr.Button("Decode", variant="primary", elem_id="channels-button")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="input, reconstruction, then every draw of the chosen case",
                                         columns=4, height="auto", object_fit="contain", format="png",
                                         elem_id="channels-gallery", elem_classes=["farmer-gallery"])
                    c_summary = gr.Markdown(label="summary", elem_id="channels-summary")
                    c_chart = gr.Plot(label="per-channel spread")
                    c_table = gr.Dataframe(label="per-channel statistics (latent z over the tokens)",
                                           interactive=False)
            decode.click(wb.channels, pick_c + [v, zi_mode, zi_noise, draws, c_seed, c_decoder, zr_mode],
                         [gallery, c_summary, c_table, c_chart], api_name="channels", **run)
            # a kept group has no variance or noise to set: grey its slider out
            zr_mode.change(lambda m: gr.Slider(interactive=m == "redraw"), zr_mode, v, queue=False,
                           api_visibility="private", show_progress="hidden")
            zi_mode.change(lambda m: gr.Slider(interactive=m == "perturb"), zi_mode, zi_noise, queue=False,
                           api_visibility="private", show_progress="hidden")

        with gr.Tab("Interpolate", id="interpolate"):
            gr.Markdown("Encode two images, walk from A's latent to B's — along a straight line and along a "
                        "variance-preserving spherical path (directions by slerp, norm linear between the "
                        "ends) — decode every point and score it (bits/dim under the null class).")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### A (t = 0)")
                    pick_ia = image_picker(wb, "ia", 0)
                with gr.Column():
                    gr.Markdown("### B (t = 1)")
                    pick_ib = image_picker(wb, "ib", 1)
            with gr.Row():
                steps = slider("steps", "points on the path (ends included)", 9, 1)
                i_decoder = gr.Radio(list(wb.decoders), value=wb.decoders[0], label="decoder")
                walk = gr.Button("Interpolate", variant="primary", elem_id="interp-button")
            linear = gr.Image(label="linear path: (1 − t)·z_a + t·z_b", type="numpy", format="png",
                              interactive=False, elem_id="interp-linear")
            spherical = gr.Image(label="spherical path: slerp of the directions, norm linear in t", type="numpy",
                                 format="png", interactive=False, elem_id="interp-spherical")
            with gr.Row():
                i_bpd = gr.Plot(label="bits/dim along the path", elem_id="interp-bpd")
                i_norm = gr.Plot(label="latent norm along the path", elem_id="interp-norm")
            i_summary = gr.Markdown(elem_id="interp-summary")
            with gr.Accordion("numbers (JSON)", open=False):
                i_numbers = gr.JSON(label="numbers")
            walk.click(wb.interpolate, pick_ia + pick_ib + [steps, i_decoder],
                       [linear, spherical, i_bpd, i_norm, i_summary, i_numbers], api_name="interpolate", **run)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo
