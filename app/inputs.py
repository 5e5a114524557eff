"""The handlers' inputs: the option names, the ranges and the checks every handler runs first.

`RANGES` holds each numeric parameter's bounds — the sliders show them, and `check` enforces
them server-side, since a client can send anything; `choose` does the same for an option from
a fixed list, and `user_errors` turns a ValueError from the library into `gr.Error` with its
message. `app.handlers` and `app.analysis` both import these (and `app.handlers` re-exports
them), so neither handler module imports the other's helpers.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any

import gradio as gr
import numpy as np

UNCONDITIONAL = "unconditional"
ANY_CLASS = "any class"
OWN_LABEL = "the image's own label"
SOURCES = ("test image", "model sample", "upload")
GUIDANCE = ("none", "naive", "resample")
DECODERS = ("sequential", "jacobi", "distilled", "hybrid")   # farmer.decoders; the last two need a student
Z_I_MODES = ("keep", "perturb")
Z_R_MODES = ("keep", "redraw")
NOISE_SEED = 0            # dequantisation noise of every bits/dim shown: one fixed draw, stated next to it

# name -> (low, high, integer?): the server-side check and the slider's range in one place
RANGES: dict[str, tuple[float, float, bool]] = {
    "cfg_scale": (0.0, 10.0, False),
    "candidates_cond": (0, 32, True),
    "candidates_uncond": (0, 32, True),
    "t_pi": (0.0, 3.0, False),
    "t_sigma": (0.05, 3.0, False),
    "t_pi_verify": (0.0, 3.0, False),
    "t_sigma_verify": (0.05, 3.0, False),
    "t_select": (0.0, 10.0, False),
    "seed": (0, 2**31 - 1, True),
    "test_index": (0, 9999, True),
    "variance_scale": (0.0, 4.0, False),
    "z_i_noise": (0.0, 3.0, False),
    "draws": (1, 8, True),
    "noise_draws": (1, 8, True),
    "steps": (3, 16, True),
}
# name -> the control's label in the UI, so a refusal names what the user sees as well as the argument
CONTROLS: dict[str, str] = {
    "cfg_scale": "w (guidance weight)", "candidates_cond": "s_c", "candidates_uncond": "s_u",
    "t_pi": "T_π", "t_sigma": "T_σ", "t_pi_verify": "T_π,v", "t_sigma_verify": "T_σ,v", "t_select": "T_s",
    "seed": "seed", "test_index": "test image index", "variance_scale": "Z^R variance scale",
    "z_i_noise": "Z^I noise", "draws": "draws", "noise_draws": "dequantisation draws k",
    "steps": "points on the path", "batch_size": "batch size",
}


def check(name: str, value: Any, low: float | None = None, high: float | None = None,
          integer: bool | None = None) -> int | float:
    """`value` as a number in [low, high] (RANGES[name] by default) or gr.Error naming it."""
    if low is None:
        low, high, integer = RANGES[name]
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok and math.isfinite(value) and low <= value <= high and (not integer or float(value).is_integer()):
        return int(value) if integer else float(value)
    bound = (lambda b: str(int(b))) if integer else (lambda b: f"{b:g}")       # 2147483647, not 2.14748e+09
    control = CONTROLS.get(name, name)
    who = name if control == name else f"{control} ({name})"
    raise refusal(f"{who} must be {kind} from {bound(low)} to {bound(high)}, got {value!r}; nothing was run",
                  "Out of range")


def refusal(message: str, title: str) -> gr.Error:
    """gr.Error for an ordinary input mistake: shown to the user, no traceback in the server log."""
    return gr.Error(message, title=title, print_exception=False)


def choose(name: str, value: Any, choices) -> Any:
    if value not in choices:
        raise refusal(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}", "Unknown option")
    return value


def user_errors(fn):
    """Library ValueErrors (bad image, bad option) -> gr.Error with the library's message.
    Works for generator handlers too (Gradio streams those), keeping the signature."""
    def as_gr(e: ValueError) -> gr.Error:
        return refusal(str(e), "Cannot do that")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ValueError as e:
                raise as_gr(e) from e
        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            raise as_gr(e) from e
    return plain
