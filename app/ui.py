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

from .handlers import ANY_CLASS, GUIDANCE, OWN_LABEL, RANGES, SOURCES, Z_I_MODES, Workbench, check

MODEL_GROUP = "model"        # concurrency_id shared by every endpoint that runs the model


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


def slider(name: str, label: str, value: float, step: float, info: str | None = None) -> gr.Slider:
    low, high, _ = RANGES[name]
    return checked(gr.Slider(low, high, value=value, step=step, label=label, info=info), name)


def whole(name: str, label: str, value: int, high: int | None = None, **kw) -> gr.Number:
    """An integer box (seed, index) with its range checked on the server."""
    low, top, _ = RANGES[name]
    high = top if high is None else high
    return checked(gr.Number(value, label=label, precision=0, minimum=low, maximum=high, **kw), name, low, high, True)


def image_picker(wb: Workbench, key: str, index: int, condition: bool = True) -> list:
    """The nine inputs that choose an image (the first nine arguments of `likelihood` and
    `channels`): source, test class and index, sample class and seed, upload, fit, invert,
    and the label to condition on (left out with condition=False: eight inputs)."""
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
        picked.append(gr.Dropdown(wb.condition_choices, value=OWN_LABEL, label="score under"))
    return picked


def likelihood_outputs(key: str) -> list:
    image = gr.Image(label="the image the model scores", type="numpy", format="png", interactive=False,
                     height=230, elem_id=f"{key}-image")
    summary = gr.Markdown(label="summary", elem_id=f"{key}-summary")
    heat = gr.Plot(label="bits per pixel (hover for values)", elem_id=f"{key}-heatmap")
    tokens = gr.Plot(label="bits per token", elem_id=f"{key}-tokens")
    with gr.Row():
        blocks = gr.Plot(label="per flow block")
        split = gr.Plot(label="prior split and flow")
    numbers = gr.JSON(label="numbers", open=False)
    return [image, summary, heat, tokens, blocks, split, numbers]


def classify_panel(key: str) -> tuple[gr.Button, gr.Number, list]:
    """The Classify panel of one side of the Likelihood tab: button, noise draws, (chart, summary, numbers)."""
    with gr.Group():
        gr.Markdown("**Classify** by Bayes' rule: p(y | x) ∝ p(x | y), the exact conditional likelihood "
                    "of every class, uniform prior (the picked image; *score under* is not used).")
        with gr.Row():
            draws = whole("noise_draws", "dequantisation draws k", 1, elem_id=f"{key}-classify-k")
            button = gr.Button(f"Classify {key.upper()}", elem_id=f"classify-{key}")
        chart = gr.Plot(label="p(y | x)", elem_id=f"{key}-classify")
        summary = gr.Markdown(elem_id=f"{key}-classify-summary")
        numbers = gr.JSON(label="class probabilities", open=False)
    return button, draws, [chart, summary, numbers]


def header(wb: Workbench) -> str:
    cfg, n = wb.cfg, wb.model.num_parameters()
    data = (f"{len(wb.test):,} test images ({wb.data_name})" if wb.test is not None
            else f"no test images: {wb.test_error}")
    return (f"## FARMER workbench\n"
            f"Checkpoint `{wb.checkpoint}` · {n['total'] / 1e6:.2f} M parameters "
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
                                        info="resample: FARMER's Algorithm 1; naive: GIVT/JetFormer rejection")
                    w = slider("cfg_scale", "w (guidance weight)", 2.0, 0.1)
                    with gr.Row():
                        s_c = slider("candidates_cond", "s_c (candidates from G_c)", 5, 1)
                        s_u = slider("candidates_uncond", "s_u (candidates from G_u)", 5, 1)
                    with gr.Row():
                        t_pi = slider("t_pi", "T_π (mixture logits)", 1.0, 0.05)
                        t_sigma = slider("t_sigma", "T_σ (scales)", 1.0, 0.05)
                    with gr.Accordion("verification temperatures (resampling)", open=False):
                        t_pi_v = slider("t_pi_verify", "T_π,v", 0.1, 0.05)
                        t_sigma_v = slider("t_sigma_verify", "T_σ,v", 1.0, 0.05)
                        t_sel = slider("t_select", "T_s (× log-weights)", 1.1, 0.05)
                    with gr.Row():
                        seed = whole("seed", "seed", 0)
                        batch = checked(gr.Slider(1, wb.max_batch, value=min(8, wb.max_batch), step=1,
                                                  label=f"batch size (≤ {wb.max_batch})"),
                                        "batch_size", 1, wb.max_batch, True)
                    decoder = gr.Radio(list(wb.decoders), value="sequential", label="decoder (AF inverse)",
                                       info="sequential: KV-cached, exact; jacobi: parallel fixed-point "
                                            "iteration (same images to 1e-4; iterations in the stats); "
                                            "distilled: one pass per block; hybrid: Jacobi from the student")
                    go = gr.Button("Sample", variant="primary", elem_id="sample-button")
                with gr.Column(scale=2):
                    grid = gr.Image(label="samples", type="numpy", format="png", interactive=False,
                                    elem_id="sample-grid", height=460)
                    seconds = gr.Number(label="seconds (the model's work, without drawing pictures)",
                                        interactive=False, elem_id="sample-seconds")
                    frames = gr.Gallery(label="progressive view: latent tokens filling in, then each flow block",
                                        columns=4, height=300, format="png", elem_id="sample-progress")
                    stats = gr.JSON(label="settings and guidance counts", open=False)
            go.click(wb.sample, [cls, guidance, w, s_c, s_u, t_pi, t_sigma, t_pi_v, t_sigma_v, t_sel, seed,
                                 batch, decoder], [grid, seconds, frames, stats], api_name="sample", **run)

        with gr.Tab("Likelihood", id="likelihood"):
            gr.Markdown("Exact bits/dim of one image, where they go pixel by pixel, token by token and "
                        "block by block, and the informative / redundant split of the prior. Score A, B, or "
                        "both with one colour scale.")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### A")
                    pick_a = image_picker(wb, "a", 0)
                    score_a = gr.Button("Score A", variant="primary", elem_id="score-a")
                    out_a = likelihood_outputs("a")
                    classify_a, k_a, cls_a = classify_panel("a")
                with gr.Column():
                    gr.Markdown("### B")
                    pick_b = image_picker(wb, "b", 1)
                    score_b = gr.Button("Score B", variant="primary", elem_id="score-b")
                    out_b = likelihood_outputs("b")
                    classify_b, k_b, cls_b = classify_panel("b")
            both = gr.Button("Compare A and B (shared colour scale)", elem_id="compare")
            diff = gr.Markdown(label="difference", elem_id="compare-summary")
            score_a.click(wb.likelihood, pick_a, out_a, api_name="likelihood", **run)
            score_b.click(wb.likelihood, pick_b, out_b, api_name="likelihood_b", **run)
            both.click(wb.compare, pick_a + pick_b, out_a + out_b + [diff], api_name="compare", **run)
            classify_a.click(wb.classify, pick_a[:8] + [k_a], cls_a, api_name="classify", **run)
            classify_b.click(wb.classify, pick_b[:8] + [k_b], cls_b, api_name="classify_b", **run)

        with gr.Tab("Channels", id="channels"):
            gr.Markdown("Each token's d channels split into Z^I (modelled token by token) and Z^R (one "
                        "shared mixture given Z^I). Keep or perturb Z^I, redraw Z^R from the model at a "
                        "variance scale, and decode: what changes is what the redundant group carries.")
            with gr.Row():
                with gr.Column(scale=1, min_width=320):
                    pick_c = image_picker(wb, "c", 0)
                    v = slider("variance_scale", "Z^R variance scale", 1.0, 0.1,
                               info="0: the mixture components' means; 1: the model's own spread")
                    zi_mode = gr.Radio(list(Z_I_MODES), value="keep", label="Z^I")
                    zi_noise = slider("z_i_noise", "Z^I perturbation (std of added noise)", 0.5, 0.05)
                    with gr.Row():
                        draws = slider("draws", "draws", 4, 1)
                        c_seed = whole("seed", "seed", 0)
                    c_decoder = gr.Radio(list(wb.decoders), value=wb.decoders[0], label="decoder")
                    decode = gr.Button("Decode", variant="primary", elem_id="channels-button")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(label="input, reconstruction, redraws", columns=3, height=420,
                                         format="png", elem_id="channels-gallery")
                    c_summary = gr.Markdown(label="summary")
                    c_chart = gr.Plot(label="per-channel spread")
                    c_table = gr.Dataframe(label="per-channel statistics (latent z over the tokens)",
                                           interactive=False)
            decode.click(wb.channels, pick_c + [v, zi_mode, zi_noise, draws, c_seed, c_decoder],
                         [gallery, c_summary, c_table, c_chart], api_name="channels", **run)

        with gr.Tab("Interpolate", id="interpolate"):
            gr.Markdown("Encode two images, walk from A's latent to B's — along a straight line and along a "
                        "variance-preserving spherical path (directions by slerp, norm linear between the "
                        "ends) — decode every point and score it (bits/dim under the null class).")
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### A (t = 0)")
                    pick_ia = image_picker(wb, "ia", 0, condition=False)
                with gr.Column():
                    gr.Markdown("### B (t = 1)")
                    pick_ib = image_picker(wb, "ib", 1, condition=False)
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
            i_numbers = gr.JSON(label="numbers", open=False)
            walk.click(wb.interpolate, pick_ia + pick_ib + [steps, i_decoder],
                       [linear, spherical, i_bpd, i_norm, i_summary, i_numbers], api_name="interpolate", **run)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo
