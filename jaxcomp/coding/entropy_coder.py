"""Entropy coding of symbols with per-symbol PMFs, on the host, with constriction's ANS coder.

Each call codes one independent stream (an ``uint32`` word array); a codec keeps one stream
per segment that the decoder needs before it can compute the next PMFs (a scale, a colour
channel). PMFs are float arrays ``[N, L]``; constriction quantizes them to fixed point
deterministically (``Categorical(perfect=False)``: fast, <0.01% overhead, every symbol gets a
nonzero probability), so bit-identical float PMFs on both sides give exact decoding.
"""

from __future__ import annotations

import constriction
import numpy as np

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


class CodingError(ValueError):
    """Symbols or PMFs that cannot be coded, or a stream that does not decode."""


def _check_symbols(symbols: np.ndarray, levels: int) -> np.ndarray:
    """``symbols`` as ``int32 [N]``; :class:`CodingError` for non-integer symbols or any outside
    ``[0, levels)``, checked before the cast (2**32 + 1 must not become 1)."""
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.dtype != bool and not np.issubdtype(symbols.dtype, np.integer):
        raise CodingError(f"symbols must be integers, got dtype {symbols.dtype}")
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= levels):
        raise CodingError(f"symbols must lie in [0, {levels})")
    return np.ascontiguousarray(symbols, dtype=np.int32)


def _check_pmfs(pmfs: np.ndarray, n: int | None = None) -> np.ndarray:
    pmfs = np.asarray(pmfs)
    if pmfs.ndim != 2 or pmfs.shape[1] < 1:
        raise CodingError(f"PMFs must have shape [N, L], got {pmfs.shape}")
    if n is not None and pmfs.shape[0] != n:
        raise CodingError(f"{n} symbols but {pmfs.shape[0]} PMFs")
    if pmfs.dtype not in (np.float32, np.float64):
        pmfs = pmfs.astype(np.float32)
    if not np.isfinite(pmfs).all() or (pmfs < 0).any():
        raise CodingError("PMFs must be finite and non-negative")
    if pmfs.shape[0] and not (pmfs.sum(axis=1) > 0).all():
        zero = np.flatnonzero(pmfs.sum(axis=1) <= 0)[:5].tolist()
        raise CodingError(f"PMF rows must have a positive sum; rows {zero} are all zero")
    return np.ascontiguousarray(pmfs)


def encode_categorical(symbols: np.ndarray, pmfs: np.ndarray) -> np.ndarray:
    """Codes ``symbols`` (int ``[N]``, each in ``[0, L)``) under ``pmfs`` (float ``[N, L]``).

    Returns the compressed stream, ``uint32 [words]``.
    """
    pmfs = _check_pmfs(pmfs, np.size(symbols))
    symbols = _check_symbols(symbols, pmfs.shape[1])
    coder = constriction.stream.stack.AnsCoder()
    if len(symbols):
        coder.encode_reverse(symbols, _CATEGORICAL, pmfs)
    return coder.get_compressed()


def decode_categorical(words: np.ndarray, pmfs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_categorical`: ``int32 [N]`` for ``pmfs`` ``[N, L]``."""
    pmfs = _check_pmfs(pmfs)
    if pmfs.shape[0] == 0:
        return np.zeros((0,), np.int32)
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        symbols = coder.decode(_CATEGORICAL, pmfs)
    except Exception as e:  # constriction raises plain exceptions on invalid streams
        raise CodingError(f"entropy-coded stream does not decode: {e}") from e
    return np.asarray(symbols, np.int32)


def encode_categorical_parts(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Codes several ``(symbols int [N_i], pmfs float [N_i, L_i])`` parts into one stream.

    A :class:`CategoricalStreamDecoder` gets them back part by part in the same order, each
    with PMFs it may compute only after decoding the parts before (e.g. wavefronts of a
    context model). Returns ``uint32 [words]``.
    """
    coder = constriction.stream.stack.AnsCoder()
    for symbols, pmfs in reversed(parts):  # a stack: the last part pushed is decoded first
        pmfs = _check_pmfs(pmfs, np.size(symbols))
        symbols = _check_symbols(symbols, pmfs.shape[1])
        if len(symbols):
            coder.encode_reverse(symbols, _CATEGORICAL, pmfs)
    return coder.get_compressed()


class CategoricalStreamDecoder:
    """Decodes a stream of :func:`encode_categorical_parts` (or :func:`encode_categorical`)
    incrementally: each :meth:`decode` call takes the PMFs ``[N, L]`` of the next ``N`` symbols."""

    def __init__(self, words: np.ndarray):
        try:
            self._coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        except Exception as e:
            raise CodingError(f"entropy-coded stream is unreadable: {e}") from e

    def decode(self, pmfs: np.ndarray) -> np.ndarray:
        """The next ``N`` symbols, ``int32 [N]``."""
        pmfs = _check_pmfs(pmfs)
        if pmfs.shape[0] == 0:
            return np.zeros((0,), np.int32)
        try:
            return np.asarray(self._coder.decode(_CATEGORICAL, pmfs), np.int32)
        except Exception as e:  # constriction raises plain exceptions on invalid streams
            raise CodingError(f"entropy-coded stream does not decode: {e}") from e


def encode_uniform(symbols: np.ndarray, levels: int) -> np.ndarray:
    """Codes int ``symbols`` in ``[0, levels)`` with a uniform prior: ``uint32 [words]``."""
    symbols = _check_symbols(symbols, levels)
    coder = constriction.stream.stack.AnsCoder()
    if len(symbols):
        coder.encode_reverse(symbols, constriction.stream.model.Uniform(levels))
    return coder.get_compressed()


def decode_uniform(words: np.ndarray, count: int, levels: int) -> np.ndarray:
    """Inverse of :func:`encode_uniform`: ``int32 [count]``."""
    if count == 0:
        return np.zeros((0,), np.int32)
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        symbols = coder.decode(constriction.stream.model.Uniform(levels), count)
    except Exception as e:
        raise CodingError(f"entropy-coded stream does not decode: {e}") from e
    return np.asarray(symbols, np.int32)


# constriction's categorical models quantize to 24-bit fixed point and give every symbol at least one
# of 2^24 units: a symbol whose float probability is 0 (or below 2^-24) costs 24 bits, not infinitely many.
MIN_PROBABILITY = 2.0 ** -24


def information_content(symbols: np.ndarray, pmfs: np.ndarray) -> np.ndarray:
    """Per-symbol cost ``-log2 p(symbol)`` in bits, ``float64 [N]``, under the normalised ``pmfs``
    (float ``[N, L]``), with ``p`` floored at the coder's :data:`MIN_PROBABILITY` (so at most 24 bits:
    what the coder spends on a symbol the float model gives probability 0)."""
    pmfs = np.asarray(_check_pmfs(pmfs, np.size(symbols)), np.float64)
    symbols = _check_symbols(symbols, pmfs.shape[1]).reshape(-1, 1)
    if len(symbols) == 0:
        return np.zeros((0,), np.float64)
    p = np.take_along_axis(pmfs, symbols, axis=1)[:, 0] / pmfs.sum(1)
    return -np.log2(np.maximum(p, MIN_PROBABILITY))


def ideal_bits(symbols: np.ndarray, pmfs: np.ndarray) -> float:
    """Information content ``-sum log2 p(symbol)`` under the normalised ``pmfs``, in bits (see
    :func:`information_content`)."""
    return float(information_content(symbols, pmfs).sum())


def _window_indices(symbols: np.ndarray, pmfs: np.ndarray, lo: np.ndarray, levels: int):
    symbols = _check_symbols(symbols, levels).astype(np.int64)
    lo = np.asarray(lo).reshape(-1).astype(np.int64)
    window = pmfs.shape[1] - 1
    if len(lo) != len(symbols):
        raise CodingError(f"{len(symbols)} symbols but {len(lo)} window starts")
    index = symbols - lo
    escaped = (index < 0) | (index >= window)
    index[escaped] = window
    return index.astype(np.int32), escaped


def encode_windowed(symbols: np.ndarray, pmfs: np.ndarray, lo: np.ndarray, levels: int) -> np.ndarray:
    """Codes ``symbols`` (int ``[N]`` in ``[0, levels)``) under windowed PMFs.

    ``pmfs`` (float ``[N, W + 1]``) give the probabilities of levels ``lo[n] .. lo[n] + W - 1``
    and, last, of an *escape* (any other level); ``lo`` is int ``[N]``. A symbol inside its
    window costs ``-log2 pmf``; one outside costs the escape plus ``log2(levels)`` bits for
    the level itself (see :func:`jaxcomp.entropy.mixture_pmf_window`). One stream,
    ``uint32 [words]``: the window indices first, then the escaped levels.
    """
    pmfs = _check_pmfs(pmfs, np.asarray(symbols).size)
    index, escaped = _window_indices(symbols, pmfs, lo, levels)
    coder = constriction.stream.stack.AnsCoder()
    if escaped.any():  # pushed first, so decoded after the indices that say which symbols escaped
        coder.encode_reverse(np.ascontiguousarray(np.asarray(symbols).reshape(-1)[escaped], dtype=np.int32),
                             constriction.stream.model.Uniform(levels))
    if len(index):
        coder.encode_reverse(index, _CATEGORICAL, pmfs)
    return coder.get_compressed()


def decode_windowed(words: np.ndarray, pmfs: np.ndarray, lo: np.ndarray, levels: int) -> np.ndarray:
    """Inverse of :func:`encode_windowed`: ``int32 [N]``."""
    pmfs = _check_pmfs(pmfs)
    lo = np.asarray(lo).reshape(-1).astype(np.int32)
    if len(lo) != pmfs.shape[0]:
        raise CodingError(f"{pmfs.shape[0]} PMFs but {len(lo)} window starts")
    if pmfs.shape[0] == 0:
        return np.zeros((0,), np.int32)
    window = pmfs.shape[1] - 1
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        index = np.asarray(coder.decode(_CATEGORICAL, pmfs), np.int32)
        escaped = index == window
        symbols = lo + index
        if escaped.any():
            symbols[escaped] = np.asarray(coder.decode(constriction.stream.model.Uniform(levels),
                                                       int(escaped.sum())), np.int32)
    except Exception as e:  # constriction raises plain exceptions on invalid streams
        raise CodingError(f"entropy-coded stream does not decode: {e}") from e
    return symbols


def ideal_bits_windowed(symbols: np.ndarray, pmfs: np.ndarray, lo: np.ndarray, levels: int) -> np.ndarray:
    """Per-symbol information content ``float64 [N]`` (bits) of :func:`encode_windowed`'s code."""
    pmfs = np.asarray(pmfs, np.float64)
    index, escaped = _window_indices(symbols, pmfs, lo, levels)
    return information_content(index, pmfs) + escaped * np.log2(levels)
