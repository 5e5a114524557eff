"""Sampling: one `sample()` for scripts, notebooks, the app and the benchmarks (DESIGN §1.5, §5).

    labels ──AR (KV cache)──> z_1^I … z_N^I, then G_{N+1} ──> N draws of z^R
           ──concatenate, undo the final permute──> Z (B, N, d)
           ──invert the AF (KV cache | no cache | distilled student)──> X
           ──clip to [−1, 1], quantise──> uint8 (B, C, H, W)

With guidance the conditional and unconditional predictions come from ONE
AR pass over a batch of 2B sequences (labels [y, null]), sharing one KV
cache: each drawn token is fed to both halves. The guidance rules themselves
are the pure functions of `farmer.guidance`.

Randomness comes from a single torch.Generator seeded with `seed` on the
model's device, so a seed fixes the images on a given device.

`sample_steps` is the same run as a stream of events (each drawn token, the
redundant group, each inverted block, then the result) for progress bars and
the app's progressive view; its result is `sample`'s, bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .data import make_generator, quantize
from .gmm import DiagonalGMM
from .denoise import tweedie_denoise
from .guidance import GUIDANCE, RESAMPLE_WEIGHTS, check_guidance_args, naive_cfg, resample_cfg
from .layers import unpatchify
from .decoders import Jacobi, check_decoder, inverse_steps, invert
from .model import DECODERS, Farmer  # noqa: F401  (DECODERS re-exported)


# The smallest redundant pool per token that `sample` accepts. All N redundant tokens of an
# image are drawn WITHOUT replacement from one pool of S candidates, so as S -> N the draws
# tend to the proposal mixture and the guidance on Z^R vanishes (or reverses: half the pool
# comes from G_u). On the 1-D toy of benchmarks/guidance_toy.py (N = 49, exact weights) the
# share of the guided mean shift reached is, for w = 0.5 … 3: S = 1.5N: <= 0; 3N: 0.36-0.59;
# 5N: 0.62-0.88 (about what one token's 5 + 5 candidates reach, 0.67-0.86); 10N (the
# default N·(s_c + s_u)): 0.80-0.96. A pool of G_c candidates alone fares alike (5N: 0.87-0.96).
MIN_POOL_PER_TOKEN = 5


@dataclass
class SampleResult:
    """What `sample(..., return_intermediates=True)` returns.

    images          uint8 (B, C, H, W), the samples
    tokens          (B, N, d_I) informative latents in drawing (AR) order:
                    tokens[:, i] is the i-th token the AR drew
    redundant       (B, N, d_R) redundant latents in AR order (d_R = 0 without a split)
    z               (B, N, d) the full latent in raster (flow) order, what the AF inverts
    latent_image    float (B, C, H, W), z laid out as an image (the start of decoding)
    block_images    float (B, C, H, W) after each inverted flow block, last block
                    first: [after inverting f_n, …, after inverting f_1 = the image
                    before clipping]
    stats           settings and counts: guidance, cfg_scale, decoder, seed; for
                    "naive" elements / fallbacks / improper (values drawn, values that
                    fell back to the conditional draw, of which improper targets);
                    for "resample" draws / picked_uncond (kept candidates, of which
                    drawn from the unconditional mixture)
    """

    images: torch.Tensor
    tokens: torch.Tensor
    redundant: torch.Tensor
    z: torch.Tensor
    latent_image: torch.Tensor
    block_images: list[torch.Tensor] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs
def _labels(model: Farmer, labels, num_samples: int | None, device: torch.device) -> torch.Tensor | None:
    """labels (list / array / tensor of ints, one int, or None) -> int64 (B,) or None."""
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    if labels is None:
        if num_samples is None:
            raise ValueError("num_samples is required when labels is None (unconditional sampling)")
        return None
    if isinstance(labels, (int, np.integer)) and not isinstance(labels, bool):
        labels = [int(labels)] * (num_samples or 1)
    if isinstance(labels, (list, tuple, np.ndarray)):
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iu":                                         # no silent 0.5 -> 0
            raise ValueError(f"labels must be integers, got {labels!r}")
        labels = torch.as_tensor(arr.astype(np.int64).reshape(-1))
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be None, an int, or a non-empty 1-D sequence of ints, got {labels!r}")
    if num_samples is not None and num_samples != labels.numel():
        raise ValueError(f"num_samples ({num_samples}) does not match the {labels.numel()} labels given")
    return model.labels_or_null(labels, labels.numel(), device, name="labels")


def _pools(redundant_pool, s_c: int, s_u: int, tokens: int) -> tuple[int, int]:
    """Candidate pool sizes for the redundant group: None -> N times the per-token sizes,
    scaled up (same ratio) to at least MIN_POOL_PER_TOKEN candidates per token."""
    if redundant_pool is None:
        scale = max(1, math.ceil(MIN_POOL_PER_TOKEN / max(1, s_c + s_u)))
        return scale * s_c * tokens, scale * s_u * tokens
    if isinstance(redundant_pool, int) and not isinstance(redundant_pool, bool):
        redundant_pool = (redundant_pool, redundant_pool)
    if (not isinstance(redundant_pool, (tuple, list)) or len(redundant_pool) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in redundant_pool)
            or sum(redundant_pool) < 1):
        raise ValueError(f"redundant_pool must be None, an int >= 1 or a pair (cond, uncond) of ints "
                         f">= 0 with a positive sum, got {redundant_pool!r}")
    return int(redundant_pool[0]), int(redundant_pool[1])


def _check_temperature(name: str, value: float, allow_zero: bool) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# ----------------------------------------------------------------------------- the AR half
class _Drawer:
    """Draws one latent group from the AR's mixtures with the chosen guidance rule.

    `g` covers the batch (B,) without guidance, or (2B,) = [conditional; unconditional]
    with it. Returns (B, D), or (n, B, D) when n draws share one mixture.
    """

    def __init__(self, guided: bool, guidance: str, w: float, kw: dict, generator: torch.Generator,
                 stats: dict):
        self.guided, self.guidance, self.w, self.kw = guided, guidance, w, kw
        self.generator, self.stats = generator, stats

    def __call__(self, g: DiagonalGMM, n: int | None = None, pool: tuple[int, int] | None = None):
        kw = self.kw
        if not self.guided:
            return g.sample(n, self.generator, t_pi=kw["t_pi"], t_sigma=kw["t_sigma"])
        B = g.logits.shape[0] // 2
        g_c, g_u = g.index(slice(0, B)), g.index(slice(B, None))
        if self.guidance == "naive":
            return naive_cfg(g_c, g_u, self.w, n, t_pi=kw["t_pi"], t_sigma=kw["t_sigma"],
                             max_tries=kw["max_tries"], generator=self.generator, stats=self.stats)
        s_c, s_u = pool or (kw["candidates_cond"], kw["candidates_uncond"])
        return resample_cfg(g_c, g_u, self.w, n, candidates_cond=s_c, candidates_uncond=s_u,
                            t_pi=kw["t_pi"], t_sigma=kw["t_sigma"], t_pi_verify=kw["t_pi_verify"],
                            t_sigma_verify=kw["t_sigma_verify"], t_select=kw["t_select"],
                            weights=kw["resample_weights"], generator=self.generator, stats=self.stats)


@dataclass
class _Plan:
    """Validated sampling settings, shared by `sample` and `sample_latents`."""
    y_ar: torch.Tensor            # (B,) or (2B,) = [labels; null] with guidance
    draw: _Drawer
    pool: tuple[int, int]         # redundant-group pool sizes (cond, uncond)
    generator: torch.Generator
    t_sigma: float
    stats: dict


def _plan(model: Farmer, labels=None, *, guidance: str = "none", cfg_scale: float = 2.0,
          seed: int = 0, num_samples: int | None = None, t_pi: float = 1.0, t_sigma: float = 1.0,
          candidates_cond: int = 10, candidates_uncond: int = 0, t_pi_verify: float = 1.0,
          t_sigma_verify: float = 1.0, t_select: float = 1.0,
          redundant_pool: int | tuple[int, int] | None = None, max_tries: int = 1000,
          resample_weights: str = "paper") -> _Plan:
    """Check every argument (ValueError naming it) and set up labels, generator and guidance."""
    if not isinstance(model, Farmer):
        raise ValueError(f"model must be a farmer.Farmer, got {type(model).__name__}")
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    w = cfg_scale
    check_guidance_args(w, candidates_cond, candidates_uncond)
    for name, v, zero in (("t_pi", t_pi, True), ("t_sigma", t_sigma, False),
                          ("t_pi_verify", t_pi_verify, True), ("t_sigma_verify", t_sigma_verify, False),
                          ("t_select", t_select, True)):
        _check_temperature(name, v, zero)
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be a positive int, got {max_tries!r}")
    pool = _pools(redundant_pool, candidates_cond, candidates_uncond, model.cfg.tokens)
    if resample_weights not in RESAMPLE_WEIGHTS:
        raise ValueError(f"resample_weights must be one of {RESAMPLE_WEIGHTS}, got {resample_weights!r}")
    n_tok = model.cfg.tokens
    if guidance == "resample" and model.cfg.redundant_mode == "split" and sum(pool) < MIN_POOL_PER_TOKEN * n_tok:
        raise ValueError(f"redundant_pool {pool} holds {sum(pool)} candidates for the N = {n_tok} redundant "
                         f"tokens of an image, which are drawn from it without replacement; below "
                         f"{MIN_POOL_PER_TOKEN} per token the draws tend to the proposal mixture and most of the "
                         f"guidance on Z^R is lost (benchmarks/guidance_toy.py, share of the guided shift reached: "
                         f"none with 1 per token; with 3 per token 76-88% from G_c candidates only and at most "
                         f"59% with half from G_u): give at least {MIN_POOL_PER_TOKEN * n_tok} "
                         f"(or None for N·(s_c, s_u))")
    device = next(model.parameters()).device
    y = _labels(model, labels, num_samples, device)
    B = num_samples if y is None else y.shape[0]
    # no unconditional pass when it cannot matter: no labels (p_c = p_u) or w = 0 (p′ = p_c)
    guided = guidance != "none" and w > 0 and y is not None
    y_ar = model.labels_or_null(y, B, device)                                  # (B,), None -> null class
    if guided:
        y_ar = torch.cat([y_ar, torch.full_like(y_ar, model.ar.null_class)])  # (2B,) [cond; uncond]
    generator = make_generator(int(seed), device)
    stats: dict = {"guidance": guidance if guided else "none", "cfg_scale": float(w) if guided else 0.0,
                   "seed": int(seed)}
    kw = dict(t_pi=t_pi, t_sigma=t_sigma, candidates_cond=candidates_cond,
              candidates_uncond=candidates_uncond, t_pi_verify=t_pi_verify,
              t_sigma_verify=t_sigma_verify, t_select=t_select, max_tries=max_tries,
              resample_weights=resample_weights)
    draw = _Drawer(guided, guidance, float(w), kw, generator, stats)
    return _Plan(y_ar, draw, pool, generator, t_sigma, stats)


def _iter_latents(model: Farmer, plan: _Plan):
    """Run the AR with its KV cache over plan.y_ar, (B,) or (2B,) labels.

    A generator: yields (i, z_i) after drawing informative token i (AR order,
    z_i (B, d_I)); its return value (`yield from`) is Z^I (B, N, d_I) and
    Z^R (B, N, d_R), both in AR order. `_draw_latents` runs it to the end."""
    cfg, ar = model.cfg, model.ar
    y, draw = plan.y_ar, plan.draw
    N, mode = cfg.tokens, cfg.redundant_mode
    B = y.shape[0] // 2 if draw.guided else y.shape[0]
    cache = ar.new_cache()
    g = ar.begin(y, cache)                                                     # G_1 over (B,) | (2B,)
    tokens = []
    for i in range(N):
        z_i = draw(g)                                                          # (B, d_I)
        tokens.append(z_i)
        yield i, z_i
        # the last token is only fed when the query slot must read it (G_{N+1})
        if i < N - 1 or mode == "split":
            g = ar.step(torch.cat([z_i, z_i]) if draw.guided else z_i, i, cache)
    z_inf = torch.stack(tokens, dim=1)                                         # (B, N, d_I)
    if mode == "split":
        g_red = ar.redundant(cache)                                            # G_{N+1} over (B,) | (2B,)
        z_red = draw(g_red, n=N, pool=plan.pool).transpose(0, 1)               # (N, B, d_R) -> (B, N, d_R)
    elif mode == "jetformer":
        # JetFormer's baseline: Z^R ~ N(0, I) whatever Z^I and c, so guidance has
        # nothing to act on; T_σ scales it like every other Gaussian scale
        z_red = plan.t_sigma * torch.randn((B, N, cfg.d_r), generator=plan.generator,
                                           device=z_inf.device, dtype=z_inf.dtype)
    else:
        z_red = z_inf.new_zeros(B, N, 0)                                       # no redundant channels
    return z_inf, z_red


def _draw_latents(model: Farmer, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """Z^I (B, N, d_I) and Z^R (B, N, d_R) in AR order: `_iter_latents` run to the end."""
    steps = _iter_latents(model, plan)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


# ----------------------------------------------------------------------------- the AF half
def invert_flow(model: Farmer, z: torch.Tensor, decoder: str, jacobi: Jacobi = Jacobi(),
                stats: dict | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """z (B, N, d) raster order -> the AF's input tokens (B, N, d) and the sequence after each
    inverted block (`model.tokens_to_image` turns either into images); farmer.decoders."""
    return invert(model, model.unmix_latent(z), decoder, jacobi, stats)


def _check_denoise(denoise: float) -> None:
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not math.isfinite(denoise) \
            or not 0 <= denoise <= 1:
        raise ValueError(f"denoise must be a noise level σ in [0, 1] ([−1, 1] pixel units; 0 = off), "
                         f"got {denoise!r}")


def _denoised(model: Farmer, x: torch.Tensor, plan: _Plan, denoise: float) -> torch.Tensor:
    """The Tweedie step on decoded images x (B, C, H, W), conditioned on the sampled labels."""
    if not denoise:
        return x
    B = x.shape[0]
    return tweedie_denoise(model, x, float(denoise), plan.y_ar[:B])            # null class if unconditional


@torch.inference_mode()
def sample(model: Farmer, labels=None, *, guidance: str = "none", cfg_scale: float = 2.0,
           decoder: str = "sequential", seed: int = 0, num_samples: int | None = None,
           t_pi: float = 1.0, t_sigma: float = 1.0,
           candidates_cond: int = 10, candidates_uncond: int = 0,
           t_pi_verify: float = 1.0, t_sigma_verify: float = 1.0, t_select: float = 1.0,
           redundant_pool: int | tuple[int, int] | None = None, max_tries: int = 1000,
           resample_weights: str = "paper", denoise: float = 0.0,
           jacobi_tol: float = 1e-4, jacobi_max_iter: int | None = None, jacobi_chunk: int | None = None,
           return_intermediates: bool = False) -> torch.Tensor | SampleResult:
    """Draw images from a FARMER model.

    labels: class indices (B,) as a tensor, list or array, one int (repeated
        num_samples times), or None for unconditional samples (then
        num_samples is required and the null class is used).
    guidance: "none", "naive" (GIVT/JetFormer: one component, per-dimension
        rejection sampling ∝ N_c^{1+w}/N_u^w, see `farmer.guidance.naive_cfg`)
        or "resample" (FARMER's Algorithm 1, `farmer.guidance.resample_cfg`).
        Without labels, or with cfg_scale = 0, both rules are exactly the
        unguided draw, and no unconditional pass is run.
    cfg_scale: the guidance weight w >= 0 of p′ ∝ p_c^{w+1}/p_u^w (unused by "none").
    decoder: "sequential" (KV-cached AF inverse), "sequential_nocache"
        (the O(N²) reference), "jacobi" (parallel fixed-point iteration), "distilled"
        (the one-step student, `farmer distill`) or "hybrid" (Jacobi from the
        student's output); farmer.decoders.
    jacobi_tol, jacobi_max_iter, jacobi_chunk: the "jacobi" / "hybrid" settings
        (farmer.jacobi): stop when no value changes by more than jacobi_tol, or
        after jacobi_max_iter iterations per chunk; jacobi_chunk tokens per
        Gauss–Seidel chunk (None = plain Jacobi). The counts go into stats.
    seed: fixes every random draw (on a given device).
    t_pi, t_sigma: proposal temperatures T_π (× mixture logits), T_σ (× scales),
        used by every guidance mode.
    candidates_cond, candidates_uncond: s_c, s_u candidates per informative token.
        The default 10 + 0 (farmer.guidance.DEFAULT_POOL, ours) draws them all from
        G_c; the paper's Algorithm 1 uses 5 + 5 (`**farmer.guidance.PAPER_POOL`).
        Resampling is importance resampling from a finite pool, so it falls short
        of the guided target, toward its proposal: with G_u candidates in the pool
        that shortfall points toward the unconditional model and, at small w,
        can outweigh the guidance itself (see `farmer.guidance.resample_cfg` for
        the toy's figures). Measured on the shipped model (benchmarks/guidance.py,
        1,000 samples, exact weights): 10 + 0 is more class-consistent than no
        guidance at every w from 0.1 to 4 (86.1% at w = 0.1 against 83.4%), while
        5 + 5 ties it at w = 0.1 (83.3%) and gives the lower FD at w >= 1.
    t_pi_verify, t_sigma_verify: T_π,v, T_σ,v at which the weights are evaluated.
    t_select: T_s, multiplies the log-weights before the softmax.
        The defaults (1, 1, 1) are the exact importance weights of Eq. 15
        (farmer.guidance.EXACT_WEIGHTS), chosen by measurement (benchmarks/guidance.py:
        Table 6's give 73.7% class consistency at w = 0.1 against 83.4% unguided).
        The paper's Table 6 settings (T_π,v = 0.1, T_s = 1.1) sharpen the pick; pass
        `**farmer.guidance.TABLE6_WEIGHTS` to use them.
    redundant_pool: candidate pool (cond, uncond) for the redundant group, from
        which all N redundant draws of an image are taken; an int means the same
        size for both; None = N·(s_c, s_u), as many candidates per draw as a token gets
        (scaled up to MIN_POOL_PER_TOKEN·N in all when s_c + s_u is smaller). Pools of
        fewer than MIN_POOL_PER_TOKEN·N candidates are refused (ValueError): N draws
        without replacement from them lose most of the guidance on Z^R.
    max_tries: rejection-sampling proposals per value for "naive" before the fallback.
    resample_weights: "paper" (Algorithm 1's weights) or "balance" (the balance
        heuristic over the pooled proposal, `farmer.guidance.resample_cfg`).
    denoise: σ of one Tweedie score step x ← x + σ²∇ log p(x | c) on the decoded
        image before quantisation (`farmer.denoise`); the noise level the model
        was trained at, 0 = off.
    return_intermediates: return a `SampleResult` (latents as drawn, the image
        after each inverted flow block, stats) instead of the images alone.

    Returns uint8 images (B, C, H, W) in 0..255, or a SampleResult.
    Paper settings (Table 6): T_π = 1, T_σ = 0.9–1, s_c = s_u = 5, T_π,v = 0.1–0.2,
    T_σ,v = 0.9–1, T_s = 1.1, w = 1.5–3.5.
    """
    check_decoder(model, decoder)
    jacobi = Jacobi(jacobi_tol, jacobi_max_iter, jacobi_chunk)
    plan = _plan(model, labels, guidance=guidance, cfg_scale=cfg_scale, seed=seed,
                 num_samples=num_samples, t_pi=t_pi, t_sigma=t_sigma, candidates_cond=candidates_cond,
                 candidates_uncond=candidates_uncond, t_pi_verify=t_pi_verify,
                 t_sigma_verify=t_sigma_verify, t_select=t_select, redundant_pool=redundant_pool,
                 max_tries=max_tries, resample_weights=resample_weights)
    _check_denoise(denoise)
    cfg = model.cfg
    was_training = model.training
    model.eval()                                                               # no dropout while sampling
    try:
        z_inf, z_red = _draw_latents(model, plan)                             # AR order
        z = model.ar_order(torch.cat([z_inf, z_red], dim=-1))                 # (B, N, d) raster order
        x_tokens, steps = invert_flow(model, z, decoder, jacobi, plan.stats)   # (B, N, d), n × (B, N, d)
        x = _denoised(model, model.tokens_to_image(x_tokens), plan, denoise)  # (B, C, H, W) float
    finally:
        model.train(was_training)

    to_image = lambda t: unpatchify(t, cfg.patch_size, cfg.channels, cfg.image_size)  # noqa: E731
    images = quantize(x)                                                       # clip, uint8 (B, C, H, W)
    if not return_intermediates:
        return images
    plan.stats["decoder"] = decoder
    plan.stats["denoise"] = float(denoise)
    return SampleResult(images=images, tokens=z_inf, redundant=z_red, z=z,
                        latent_image=to_image(z), block_images=[model.tokens_to_image(s) for s in steps],
                        stats=plan.stats)


@dataclass
class SampleStep:
    """One progress event of `sample_steps`.

    stage   "token": informative token `index` (0-based, AR order) of `total` = N was drawn;
            "redundant": Z^R was drawn, the latent is complete (index 0, total 1);
            "block": flow block `index` of `total` = n was inverted (last block first);
            "done": `result` holds the SampleResult
    z       (B, N, d) the latent so far in raster (flow) order; tokens not drawn yet, and
            the redundant channels before the "redundant" stage, are 0    [token, redundant]
    drawn   bool (N,) raster order: tokens whose informative part is drawn  [token, redundant]
    image   float (B, C, H, W): `z` laid out as an image (token, redundant) or the
            sequence after the inverted block (block; the last one is the image before
            clipping)
    result  identical to `sample(..., return_intermediates=True)` with the same arguments  [done]
    """

    stage: str
    index: int
    total: int
    z: torch.Tensor | None = None
    drawn: torch.Tensor | None = None
    image: torch.Tensor | None = None
    result: SampleResult | None = None


@torch.inference_mode()                      # as a generator decorator: on only while it runs
def sample_steps(model: Farmer, labels=None, *, decoder: str = "sequential", denoise: float = 0.0,
                 jacobi_tol: float = 1e-4, jacobi_max_iter: int | None = None, jacobi_chunk: int | None = None,
                 **kwargs) -> Iterator[SampleStep]:
    """`sample(..., return_intermediates=True)` as a stream of progress events, for
    progress bars and progressive displays (the app): N "token" steps, one
    "redundant" step, n "block" steps, then "done" with the SampleResult — the same
    images, latents and stats as `sample` for the same arguments. Takes the keyword
    arguments of `sample` except return_intermediates. Arguments are checked on the
    first `next()`, with the same ValueErrors as `sample`.
    """
    check_decoder(model, decoder)
    jacobi = Jacobi(jacobi_tol, jacobi_max_iter, jacobi_chunk)
    plan = _plan(model, labels, **kwargs)
    _check_denoise(denoise)
    cfg = model.cfg
    N, d_i = cfg.tokens, cfg.d_i
    to_image = lambda t: unpatchify(t, cfg.patch_size, cfg.channels, cfg.image_size)  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        latents = _iter_latents(model, plan)
        z_ar = drawn_ar = None                                                 # AR order, filled as drawn
        while True:
            try:
                i, z_i = next(latents)                                         # (B, d_I)
            except StopIteration as done:
                z_inf, z_red = done.value
                break
            if z_ar is None:
                z_ar = z_i.new_zeros(z_i.shape[0], N, cfg.token_dim)           # (B, N, d)
                drawn_ar = torch.zeros(N, dtype=torch.bool, device=z_i.device)
            z_ar[:, i, :d_i] = z_i
            drawn_ar[i] = True
            z_now = model.ar_order(z_ar.clone())                               # (B, N, d) raster order
            yield SampleStep("token", i, N, z=z_now, drawn=model.ar_order(drawn_ar[None])[0].clone(),
                             image=to_image(z_now))
        z = model.ar_order(torch.cat([z_inf, z_red], dim=-1))                 # (B, N, d) raster order
        yield SampleStep("redundant", 0, 1, z=z, drawn=torch.ones(N, dtype=torch.bool, device=z.device),
                         image=to_image(z))
        steps = []
        for k, step in enumerate(inverse_steps(model, model.unmix_latent(z), decoder, jacobi,
                                               plan.stats)):                   # (B, N, d) each
            steps.append(step)
            yield SampleStep("block", k, cfg.flow_blocks, image=model.tokens_to_image(step))
        x = _denoised(model, model.tokens_to_image(steps[-1]), plan, denoise)  # (B, C, H, W) float
    finally:
        model.train(was_training)
    plan.stats["decoder"] = decoder
    plan.stats["denoise"] = float(denoise)
    result = SampleResult(images=quantize(x), tokens=z_inf, redundant=z_red,
                          z=z, latent_image=to_image(z), block_images=[model.tokens_to_image(s) for s in steps],
                          stats=plan.stats)
    yield SampleStep("done", 0, 1, image=result.images, result=result)


@torch.inference_mode()
def sample_latents(model: Farmer, labels=None, **kwargs) -> torch.Tensor:
    """The AR half of `sample` alone: latents z (B, N, d) in raster order, ready for
    `model.decode`. Takes the same keyword arguments as `sample` except decoder and
    return_intermediates, and draws the same latents for the same seed."""
    plan = _plan(model, labels, **kwargs)
    was_training = model.training
    model.eval()
    try:
        z_inf, z_red = _draw_latents(model, plan)
    finally:
        model.train(was_training)
    return model.ar_order(torch.cat([z_inf, z_red], dim=-1))


def image_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (B, C, H, W) -> one uint8 grid image (H', W', C) with `nrow` images per row
    (default ≈ √B) and `pad` pixels of black between them. For saving as PNG."""
    x = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (B, C, H, W), got {x.dtype} {x.shape}")
    B, C, H, W = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(B)))
    rows = math.ceil(B / nrow)
    grid = np.zeros((rows * (H + pad) + pad, nrow * (W + pad) + pad, C), dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, nrow)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[top:top + H, left:left + W] = x[i].transpose(1, 2, 0)
    return grid
