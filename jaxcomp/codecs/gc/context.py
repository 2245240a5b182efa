"""A context model for GC's latent symbols, fitted by counting: ``p(s | left, up, previous channel)``.

GC has no rate term: its encoder uses the 5 levels nearly uniformly, so a factorized prior saves
only a few per cent of ``log2(5)`` bits per symbol. Neighbouring symbols are correlated, though
(smooth regions repeat), and a table over the three causal neighbours of a symbol — left, above
(same channel) and the previous channel at the same position, each one of the 5 levels or
``OUTSIDE`` — captures that. The table is the maximum-likelihood fit with additive smoothing over
the latents of the training images (counting, no gradient training); it is stored with the model
(``context_logits``) and the codec codes the symbols in raster order (``y, x, c``) under it.

The PMFs come from the stored table in numpy float64 on the host, so coding and decoding are
exact on every platform.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from jaxcomp.checks import finite_number
from jaxcomp.codecs.gc.model import LEVELS

if TYPE_CHECKING:
    from jaxcomp.coding import CategoricalStreamDecoder

OUTSIDE = LEVELS  # the context value of a neighbour outside the latent
SIDE = LEVELS + 1


def contexts(symbols: np.ndarray) -> np.ndarray:
    """``int [h, w, C]`` symbols -> ``int64 [h, w, C, 3]`` (left, up, previous channel), ``OUTSIDE``
    where a neighbour does not exist."""
    s = np.asarray(symbols, np.int64)
    out = np.full(s.shape + (3,), OUTSIDE, np.int64)
    out[:, 1:, :, 0] = s[:, :-1]
    out[1:, :, :, 1] = s[:-1]
    out[:, :, 1:, 2] = s[:, :, :-1]
    return out


def fit_context_logits(latents: Iterable[np.ndarray], channels: int, smoothing: float = 0.5) -> np.ndarray:
    """Log-probabilities ``float32 [C, 6, 6, 6, 5]`` (channel, left, up, previous channel, symbol):
    the counts of ``latents`` (each ``int [h, w, C]``) plus ``smoothing`` (finite, > 0: an unseen
    context's symbols keep a probability), normalised."""
    finite_number(smoothing, "smoothing")
    counts = np.zeros((channels, SIDE, SIDE, SIDE, LEVELS), np.float64)
    for s in latents:
        s = np.asarray(s)
        if s.ndim != 3 or s.shape[2] != channels:
            raise ValueError(f"latent symbols must be [h, w, {channels}], got {s.shape}")
        ctx = contexts(s)
        c = np.broadcast_to(np.arange(channels), s.shape)
        np.add.at(counts, (c, ctx[..., 0], ctx[..., 1], ctx[..., 2], s), 1.0)
    counts += smoothing
    return np.log(counts / counts.sum(-1, keepdims=True)).astype(np.float32)


def host_pmfs(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in numpy float64: the PMFs both coder sides compute from stored
    parameters, identical on every platform."""
    logits = np.asarray(logits, np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def prior_pmfs(prior_logits: np.ndarray, channels: int) -> np.ndarray:
    """The factorized prior's PMFs ``float64 [C, 5]``; a ``ValueError`` if the logits are not ``[C, 5]``."""
    logits = np.asarray(prior_logits)
    if logits.shape != (channels, LEVELS):
        raise ValueError(f"prior_logits has shape {logits.shape}, expected {(channels, LEVELS)}")
    return host_pmfs(logits)


def table_pmfs(context_logits: np.ndarray) -> np.ndarray:
    """``float64 [C, 6, 6, 6, 5]`` PMFs of the stored log-probabilities (normalised on the host)."""
    return host_pmfs(context_logits)


def symbol_pmfs(pmfs: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """The PMF of every symbol of ``symbols [h, w, C]`` in raster order: ``float64 [h * w * C, 5]``."""
    ctx = contexts(symbols)
    c = np.broadcast_to(np.arange(symbols.shape[2]), symbols.shape)
    return pmfs[c, ctx[..., 0], ctx[..., 1], ctx[..., 2]].reshape(-1, LEVELS)


def decode_symbols(decoder: CategoricalStreamDecoder, pmfs: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Decodes ``int32 [h, w, C]`` from a :class:`jaxcomp.coding.CategoricalStreamDecoder`, one
    anti-diagonal of positions at a time (left and up neighbours are on the previous diagonals),
    channel by channel within it."""
    h, w, channels = shape
    out = np.full((h + 1, w + 1, channels), OUTSIDE, np.int64)  # row/column 0: outside
    for d in range(h + w - 1):
        ys = np.arange(max(0, d - w + 1), min(h, d + 1))
        xs = d - ys
        for c in range(channels):
            left, up = out[ys + 1, xs, c], out[ys, xs + 1, c]
            prev = out[ys + 1, xs + 1, c - 1] if c else np.full(len(ys), OUTSIDE, np.int64)
            out[ys + 1, xs + 1, c] = decoder.decode(pmfs[c, left, up, prev])
    return out[1:, 1:].astype(np.int32)


def coding_order(shape: tuple[int, int, int]) -> np.ndarray:
    """Flat raster indices of ``[h, w, C]`` in :func:`decode_symbols`' order (diagonals, then channels,
    then row within a diagonal)."""
    h, w, channels = shape
    order = []
    for d in range(h + w - 1):
        ys = np.arange(max(0, d - w + 1), min(h, d + 1))
        xs = d - ys
        for c in range(channels):
            order.append((ys * w + xs) * channels + c)
    return np.concatenate(order) if order else np.zeros(0, np.int64)
