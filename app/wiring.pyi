"""How the layout reaches the models: endpoints routed by a model name, checked inputs, stale outputs.

`routed(shelf, "sample")` is `Workbench.sample` with a leading `model` argument (a name on the
`Shelf`), keeping the method's signature so Gradio sees its `gr.Progress` and its API docs list
every parameter. `number` builds the numeric controls: Gradio's Slider clamps a typed value to its
range in the browser without a word, so every numeric setting is a Number box whose value reaches
the server as typed and is refused there with the control's name and range (`checked`).
`clear_on_change` and `mark_stale_on_change` keep results from outliving their inputs.
"""
from __future__ import annotations

import inspect

import gradio as gr

from .handlers import Workbench
from .inputs import RANGES, check

# closes the error and warning toasts still on screen: run after every successful request
CLOSE_TOASTS = ("() => { document.querySelectorAll('.toast-body.error .toast-close, "
                ".toast-body.warning .toast-close').forEach(b => b.click()); }")
STALE = "⚠ **Stale:** an input changed after this result was made; it shows the previous settings. Run again."


def routed(shelf, method: str, default: str):
    """Workbench.<method> as fn(model, *its arguments): runs on shelf[model]."""
    base = getattr(Workbench, method)
    params = list(inspect.signature(base).parameters.values())[1:]               # without self
    model = inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=str)
    if inspect.isgeneratorfunction(inspect.unwrap(base)):
        def fn(model, *args, **kwargs):
            yield from getattr(shelf[model], method)(*args, **kwargs)
    else:
        def fn(model, *args, **kwargs):
            return getattr(shelf[model], method)(*args, **kwargs)
    fn.__signature__ = inspect.signature(base).replace(parameters=[model, *params])
    fn.__name__, fn.__doc__ = method, base.__doc__
    return fn


def checked(component, name: str, low: float | None = None, high: float | None = None,
            integer: bool | None = None):
    """Make the component's own server-side bounds check (Gradio's, before the handler runs)
    name the control: gr.Error("T_σ (t_sigma) must be a number from 0.05 to 3, got 7")."""
    plain = component.preprocess

    def preprocess(payload):
        check(name, payload, low, high, integer)
        return plain(payload)

    component.preprocess = preprocess
    return component

from gradio.events import Dependency

class CheckedNumber(gr.Number):
    """gr.Number whose server-side range check names the control (`app.inputs.check`: "T_σ (t_sigma) must
    be a number from 0.05 to 3, got 7") instead of Gradio's "Value 7 is greater than maximum value 3".
    A subclass, not a patched instance: Gradio rebuilds a component from its constructor arguments when an
    event updates it (greying it out), and a patch would be lost; `is_template` draws a plain Number."""
    is_template = True

    def __init__(self, value=None, *, check_name: str = "", **kwargs):
        self.check_name = check_name
        super().__init__(value, **kwargs)

    def preprocess(self, payload):
        check(self.check_name, payload, self.minimum, self.maximum, self.precision == 0)
        return super().preprocess(payload)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def number(name: str, label: str, value: float, step: float = 1, high: float | None = None,
           info: str | None = None, **kw) -> gr.Number:
    """A numeric control with its range in the label and checked on the server (RANGES[name];
    `high` overrides the top, e.g. the batch limit). Out-of-range values are refused, never clamped."""
    low, top, integer = RANGES.get(name, (1, high, True))
    high = top if high is None else high
    fmt = (lambda b: str(int(b))) if integer else (lambda b: f"{b:g}")           # noqa: E731
    return CheckedNumber(value, label=f"{label} · {fmt(low)}–{fmt(high)}", info=info, minimum=low, maximum=high,
                         step=step, precision=0 if integer else None, check_name=name, **kw)


def clear_on_change(inputs: list, outputs: list) -> None:
    """Blank `outputs` the moment any of `inputs` changes (in the server's fast lane, no queue)."""
    blank = lambda *_: [None] * len(outputs)                                      # noqa: E731
    for component in inputs:
        component.change(blank, None, outputs, queue=False, api_visibility="private", show_progress="hidden")


def mark_stale_on_change(inputs: list, summary: gr.Markdown) -> None:
    """Put STALE at the top of `summary` (if it holds a result) when any of `inputs` changes."""
    def mark(text):
        return gr.skip() if not text or text.startswith(STALE) else f"{STALE}\n\n{text}"
    for component in inputs:
        component.change(mark, summary, summary, queue=False, api_visibility="private", show_progress="hidden")
class Quiet(component_cls):
        is_template = True

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except gr.Error as e:
                raise refusal(f"{self.label}: {e.message}", "Unknown option") from None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    