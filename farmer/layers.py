"""Building blocks shared by the flow and the AR model.

Read top to bottom: patchify/unpatchify -> KVCache -> Attention -> MLP ->
TransformerLayer -> Transformer (a stack with an optional KV cache).

The KV cache is what makes both sequential procedures of FARMER affordable:
the AF inverse (N single-token steps per block) and AR sampling (N steps).
A cached step on token t costs O(t) instead of the O(t²) of a full re-run.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- patches
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) image -> (B, N, d) token sequence, N = (H/p)(W/p), d = C·p².

    Tokens run in raster order over patches; inside a token the values are
    ordered (channel, row-in-patch, column-in-patch), so token dimension j of
    patch n is the pixel `unpatchify` puts back in the same place.
    """
    B, C, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f"patchify: image size {H}x{W} is not divisible by patch size {p}")
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)                    # (B, C, h, p, w, p)
    x = x.permute(0, 2, 4, 1, 3, 5)                    # (B, h, w, C, p, p)
    return x.reshape(B, h * w, C * p * p)              # (B, N, d)


def unpatchify(tokens: torch.Tensor, p: int, channels: int, size: int) -> torch.Tensor:
    """(B, N, d) tokens -> (B, C, H, W) image; the exact inverse of `patchify`."""
    B, N, d = tokens.shape
    h = w = size // p
    if N != h * w or d != channels * p * p:
        raise ValueError(f"unpatchify: got tokens {tuple(tokens.shape)}, expected (B, {h * w}, "
                         f"{channels * p * p}) for a {channels}x{size}x{size} image with patch {p}")
    x = tokens.reshape(B, h, w, channels, p, p)        # (B, h, w, C, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)                    # (B, C, h, p, w, p)
    return x.reshape(B, channels, size, size)          # (B, C, H, W)


# ----------------------------------------------------------------------------- KV cache
class KVCache:
    """Keys and values of every attention layer for the tokens seen so far.

    One instance serves one Transformer; `layers[i]` holds a dict with "k" and
    "v" of shape (B, heads, T_seen, head_dim) once layer i has run.
    """

    def __init__(self, n_layers: int):
        self.layers: list[dict[str, torch.Tensor]] = [{} for _ in range(n_layers)]

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if not first else first["k"].shape[2]

    def truncate(self, length: int) -> "KVCache":
        """Keep the first `length` positions of every layer (in place); returns self."""
        for layer in self.layers:
            if layer:
                layer["k"], layer["v"] = layer["k"][:, :, :length], layer["v"][:, :, :length]
        return self

    def fork(self) -> "KVCache":
        """A copy that can be extended without changing this cache (the tensors are shared, not copied)."""
        other = KVCache(len(self.layers))
        other.layers = [dict(layer) for layer in self.layers]
        return other


# ----------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """Multi-head self-attention, causal or bidirectional, with an optional KV cache."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, causal: bool = True,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, Wd = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)                               # 3 × (B, T, W)
        q, k, v = (t.reshape(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, T, hd)
        offset = 0
        if cache is not None:
            if cache:                                   # earlier tokens: prepend their keys/values
                offset = cache["k"].shape[2]
                k = torch.cat([cache["k"], k], dim=2)   # (B, h, offset+T, hd)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        mask = None
        if causal and T > 1:
            # query t (absolute position offset+t) may see keys 0..offset+t
            mask = torch.ones(T, offset + T, dtype=torch.bool, device=x.device).tril(diagonal=offset)
        # a single new query after a cached prefix sees the whole prefix: no mask needed
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)  # (B, h, T, hd)
        y = y.transpose(1, 2).reshape(B, T, Wd)                              # (B, T, W)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, width: int, ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(width * ratio)
        self.fc = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(F.gelu(self.fc(x))))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm residual layer: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, dropout)
        # Activation checkpointing (set_activation_checkpointing): keep only this
        # layer's input for the backward pass and recompute the rest there.
        self.checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = True,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if self.checkpointing and cache is None and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint
            return checkpoint(self._forward, x, causal, None, use_reentrant=False)
        return self._forward(x, causal, cache)

    def _forward(self, x: torch.Tensor, causal: bool, cache: dict[str, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=causal, cache=cache)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of layers and a final LayerNorm; `causal=False` makes it bidirectional.

    `forward(h, cache)` with a KVCache processes only the new positions in h
    and appends their keys/values, so feeding tokens one at a time gives the
    same outputs as one full causal pass (tested).
    """

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, causal: bool = True):
        super().__init__()
        self.causal = causal
        self.layers = nn.ModuleList(TransformerLayer(width, heads, mlp_ratio, dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        # Autocast dtype for the trunk (e.g. torch.bfloat16), set by the trainer;
        # None keeps the input's dtype. The flow's affine arithmetic stays float32.
        self.autocast_dtype: torch.dtype | None = None
        self.apply(_init_weights)

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers))

    def forward(self, h: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if cache is not None and not self.causal:
            raise ValueError("Transformer: a KV cache only makes sense for a causal transformer")
        dtype = self.autocast_dtype
        cast = torch.autocast(h.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with cast:
            for i, layer in enumerate(self.layers):
                h = layer(h, causal=self.causal, cache=None if cache is None else cache.layers[i])
            h = self.norm(h)
        return h.float() if dtype is not None else h


def set_activation_checkpointing(model: nn.Module, on: bool = True) -> int:
    """Recompute every TransformerLayer's activations in the backward pass instead of storing them.

    Memory for activations drops from all of a layer's intermediates to its
    input alone, for about one extra forward pass of compute; the gradients
    are the same (dropout replays its RNG state). Returns the number of layers set.
    """
    layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
    for layer in layers:
        layer.checkpointing = bool(on)
    return len(layers)


def _init_weights(m: nn.Module) -> None:
    """GPT-style initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def sinusoidal_init_(pos: torch.Tensor) -> torch.Tensor:
    """Fill a (T, W) positional table with sin/cos features scaled by 0.02·√2 (learnable start)."""
    if pos.is_meta:                                  # a shape-only build (farmer.preflight): no values
        return pos
    T, W = pos.shape
    position = torch.arange(T, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, W, 2, dtype=torch.float32) * (-math.log(10000.0) / W))
    table = torch.zeros(T, W)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: W // 2])
    with torch.no_grad():
        pos.copy_(table * 0.02 * math.sqrt(2.0))
    return pos
