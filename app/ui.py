"""The Gradio layout: four tabs wired to the loaded models' handlers.

`build_app(shelf)` returns a queued `gr.Blocks` (a single `Workbench` is wrapped in a one-model
`Shelf`); nothing here loads a model or starts a server (that is `python -m app`), so tests build
the same app and launch it on a free port. Every tab has a model dropdown, opening on the model
`Shelf` picks for that view (app.models), and every result names the model that made it. Every
model-running event shares one concurrency group, so `concurrency` requests run at once across
all tabs and up to `queue_size` wait; a request beyond that is refused with Gradio's "queue is
full" message instead of waiting for ever.
"""
from __future__ import annotations

import gradio as gr

from farmer.images import FITS

from .handlers import ANY_CLASS, OWN_LABEL, SOURCES, Workbench
from .models import Shelf, map_kind
from .wiring import CLOSE_TOASTS, Checkbox, Dropdown, Radio, checked, number  # noqa: F401  (checked: re-exported)

MODEL_GROUP = "model"        # concurrency_id shared by every endpoint that runs the model
# Gradio 6 takes css in launch() (`python -m app` passes it):
# gallery captions sit under their image instead of over its bottom row, and a gallery grows to
# show every row rather than scrolling inside a fixed box
CSS = """
.farmer-gallery .caption-label { position: static !important; white-space: normal !important;
    max-width: 100% !important; overflow: visible !important; transform: none !important; }
.farmer-gallery .grid-wrap { max-height: none !important; height: auto !important; overflow: visible !important; }
.farmer-gallery .thumbnail-item { height: auto !important; aspect-ratio: auto !important; flex-direction: column; }
.farmer-gallery .thumbnail-item img { height: auto !important; }
.farmer-gallery .grid-container { padding-top: 40px !important; }   /* below the floating label and toolbar */
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


def whole(name: str, label: str, value: int, high: int | None = None, **kw) -> gr.Number:
    """An integer box (seed, index) with its range checked on the server."""
    return number(name, label, value, 1, high=high, **kw)


def model_note(shelf: Shelf, name: str, view: str) -> str:
    """The line under a tab's model dropdown: the model, and for Likelihood what its map is."""
    wb = shelf[name]
    line = wb.model_line + f" · checkpoint `{wb.checkpoint}`"
    if view == "likelihood":
        line += f"  \n**Map: {map_kind(wb.cfg)}.**"
    if name == shelf.defaults[view]:
        line += f"  \n<small>{shelf.why_default(view)}</small>"
    return line


def model_picker(shelf: Shelf, view: str) -> tuple[gr.Dropdown, gr.Markdown]:
    name = shelf.defaults[view]
    pick = Dropdown(shelf.names, value=name, label="model", interactive=len(shelf) > 1, elem_id=f"{view}-model")
    note = gr.Markdown(model_note(shelf, name, view), elem_id=f"{view}-model-note")
    pick.change(lambda n: model_note(shelf, n, view), pick, note, queue=False, api_visibility="private",
                show_progress="hidden")
    return pick, note


def image_picker(wb: Workbench, key: str, index: int, condition: str | None = None) -> list:
    """The nine inputs that choose an image (the first nine arguments of `likelihood` and
    `channels`): source, test class and index, sample class and seed, upload, fit, invert,
    and the label to condition on, with `condition` as its help line (None: left out, eight inputs)."""
    source = Radio(list(SOURCES), value=SOURCES[0] if wb.test is not None else SOURCES[1],
                      label="image", elem_id=f"{key}-source")
    with gr.Row():
        test_class = Dropdown([ANY_CLASS] + wb.classes, value=ANY_CLASS, label="test image: class",
                                 elem_id=f"{key}-test-class")
        last = len(wb.test) - 1 if wb.test is not None else None
        test_index = whole("test_index", "test image: index (within the class, if one is chosen)", index,
                           high=last, elem_id=f"{key}-test-index")
    with gr.Row():
        sample_class = Dropdown(wb.class_choices, value=wb.class_choices[min(1, len(wb.class_choices) - 1)],
                                   label="model sample: class", elem_id=f"{key}-sample-class")
        sample_seed = whole("seed", "model sample: seed", 0, elem_id=f"{key}-sample-seed")
    upload = gr.File(label="upload: any image file (converted to the model's input)", type="filepath",
                     elem_id=f"{key}-upload", height=110)
    with gr.Row():
        fit = Radio(list(FITS), value="pad", label="upload: fit to size",
                       info="pad keeps the aspect ratio; crop fills; stretch ignores it")
        invert = Checkbox(False, label="upload: invert (dark-on-light → light-on-dark)")
    # choosing a file selects the upload source (in the browser: no server round trip)
    upload.upload(None, None, source, js="() => 'upload'", api_visibility="private")
    picked = [source, test_class, test_index, sample_class, sample_seed, upload, fit, invert]
    if condition:
        picked.append(Dropdown(wb.condition_choices, value=OWN_LABEL, label="condition on class",
                                  info=condition, elem_id=f"{key}-condition"))
    return picked


def likelihood_outputs(key: str) -> list:
    """One side's results, compact: image and summary, then the two maps side by side, then the charts."""
    with gr.Row():
        image = gr.Image(label="the image the model scores", type="numpy", format="png", interactive=False,
                         height=200, scale=1, min_width=160, elem_id=f"{key}-image")
        summary = gr.Markdown(elem_id=f"{key}-summary")
    with gr.Row():
        heat = gr.Plot(label="bits per pixel (hover for values)", elem_id=f"{key}-heatmap", min_width=200)
        tokens = gr.Plot(label="bits per token", elem_id=f"{key}-tokens", min_width=200)
    with gr.Accordion("where the bits go: the four terms and each flow block", open=False):
        split = gr.Plot(label="the four terms, and the prior split on its own axis", elem_id=f"{key}-terms")
        blocks = gr.Plot(label="per flow block", elem_id=f"{key}-blocks")
    with gr.Accordion("numbers (JSON)", open=False):
        numbers = gr.JSON(label="numbers")
    return [image, summary, heat, tokens, blocks, split, numbers]


def cleared(n: int):
    """A handler for `.failure`: blank n outputs, so no earlier result stays under an error."""
    return lambda: [None] * n


def classify_panel(key: str) -> tuple[gr.Button, gr.Number, list]:
    """The Classify panel of one side of the Likelihood tab: button, noise draws, (chart, summary, numbers)."""
    with gr.Group():
        with gr.Row():
            draws = whole("noise_draws", "dequantisation draws k", 1, elem_id=f"{key}-classify-k")
            button = gr.Button(f"Classify {key.upper()}", elem_id=f"classify-{key}")
        summary = gr.Markdown(elem_id=f"{key}-classify-summary")
        chart = gr.Plot(label="p(y | x)", elem_id=f"{key}-classify")
        with gr.Accordion("class probabilities (JSON)", open=False):
            numbers = gr.JSON(label="class probabilities")
    return button, draws, [chart, summary, numbers]


def header(shelf: Shelf | Workbench) -> str:
    shelf = shelf if isinstance(shelf, Shelf) else Shelf([shelf])
    lines = []
    for wb in shelf:
        cfg, n = wb.cfg, wb.model.num_parameters()
        title = f" — {wb.card_title}" if wb.card_title else ""
        lines.append(f"- `{wb.name}`{title}: {n['total'] / 1e6:.2f} M parameters (flow {n['flow'] / 1e6:.2f} M, "
                     f"AR {n['ar'] / 1e6:.2f} M) · {cfg.channels}×{cfg.image_size}×{cfg.image_size} images, "
                     f"{cfg.tokens} tokens of d = {cfg.token_dim} (Z^I {cfg.d_i}, Z^R {cfg.token_dim - cfg.d_i}) · "
                     f"{cfg.flow_blocks} flow blocks · distilled decoder: {'yes' if wb.has_student else 'no'} · "
                     f"map {map_kind(cfg).split(':')[0]}")
    wb = next(iter(shelf))
    data = (f"{len(wb.test):,} test images ({wb.data_name})" if wb.test is not None
            else f"no test images: {wb.test_error}")
    return (f"## FARMER workbench\n{len(shelf)} model{'s' if len(shelf) > 1 else ''} loaded "
            f"(each tab has a model menu and opens on the one suited to it) · {data}\n\n" + "\n".join(lines))


def build_app(shelf: Shelf | Workbench, queue_size: int = 16, concurrency: int = 2) -> gr.Blocks:
    """The app for loaded models (a Shelf, or one Workbench), queued; call `.launch()` on the result."""
    shelf = shelf if isinstance(shelf, Shelf) else Shelf([shelf])
    run = dict(concurrency_limit=concurrency, concurrency_id=MODEL_GROUP)
    private = dict(queue=False, api_visibility="private", show_progress="hidden")

    def ok(event):
        """After `event` succeeds, close the error toasts of earlier failures; returns `event` itself."""
        event.success(None, None, None, js=CLOSE_TOASTS, **private)
        return event

    from . import tabs                                   # the tabs use this module's pieces: import late
    with gr.Blocks(title="FARMER workbench") as demo:
        gr.Markdown(header(shelf), elem_id="header")
        with gr.Tab("Sample", id="sample"):
            tabs.sample_tab(shelf, run, ok)
        with gr.Tab("Likelihood", id="likelihood"):
            tabs.likelihood_tab(shelf, run, ok)
        with gr.Tab("Channels", id="channels"):
            tabs.channels_tab(shelf, run, ok)
        with gr.Tab("Interpolate", id="interpolate"):
            tabs.interpolate_tab(shelf, run, ok)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return demo
