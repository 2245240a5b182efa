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

from jaxcomp.checks import is_whole

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


# constriction's models have 24-bit precision: at most 2**24 symbols (its uniform model panics beyond)
MAX_LEVELS = 2**24


def _check_levels(levels: int) -> int:
    """``levels`` as an ``int`` in ``[2, 2**24]`` (constriction's uniform model panics, a Rust abort
    that ``except Exception`` does not catch, outside); :class:`CodingError` otherwise."""
    if not is_whole(levels) or not 2 <= levels <= MAX_LEVELS:
        raise CodingError(f"levels must be an integer in [2, 2**24] (the coder's 24-bit precision), got {levels!r}")
    return int(levels)


def _check_words(words: np.ndarray) -> np.ndarray:
    """A compressed stream as ``uint32 [words]``: unsigned 32-bit words (any integer dtype whose
    values fit), never floats, which a cast would truncate."""
    words = np.asarray(words)
    if words.ndim != 1 or not (np.issubdtype(words.dtype, np.integer) or words.size == 0):
        raise CodingError(f"a compressed stream is uint32 [words], got {words.dtype} {words.shape}")
    if words.size and words.dtype != np.uint32 and (words.min() < 0 or words.max() > 0xFFFFFFFF):
        raise CodingError("a compressed stream's words must lie in [0, 2**32)")
    return np.ascontiguousarray(words, dtype=np.uint32)


def _check_finished(coder) -> None:
    """Raises :class:`CodingError` unless the decoder used up its whole stream: words left over mean
    fewer symbols, other models or another stream than the ones it was encoded with."""
    if not coder.is_empty():
        raise CodingError("the stream holds more than was decoded: wrong symbol count or models, "
                          "or not the stream these symbols were coded into")


def _check_pmfs(pmfs: np.ndarray, n: int | None = None) -> np.ndarray:
    pmfs = np.asarray(pmfs)
    if pmfs.ndim != 2:
        raise CodingError(f"PMFs must have shape [N, L], got {pmfs.shape}")
    if not 2 <= pmfs.shape[1] <= MAX_LEVELS:  # constriction's own message blames the values
        raise CodingError(f"PMFs need L in [2, 2**24] levels (one level carries no information; the coder "
                          f"has 24-bit precision), got shape {pmfs.shape}")
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
    """Inverse of :func:`encode_categorical`: ``int32 [N]`` for ``pmfs`` ``[N, L]``. :class:`CodingError`
    where the stream is not used up by these symbols; more PMFs than the encoder's (or an empty stream)
    decode the extra symbols as zeros, which only the codecs' checksums see: an ANS stream of near-certain
    symbols may be legitimately empty, so running past its end cannot be told from a short stream."""
    pmfs, words = _check_pmfs(pmfs), _check_words(words)
    if pmfs.shape[0] == 0:
        return np.zeros((0,), np.int32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        symbols = coder.decode(_CATEGORICAL, pmfs)
    except Exception as e:  # constriction raises plain exceptions on invalid streams
        raise CodingError(f"entropy-coded stream does not decode: {e}") from e
    _check_finished(coder)
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
        words = _check_words(words)
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
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
    """Codes int ``symbols`` in ``[0, levels)`` (``levels`` >= 2) with a uniform prior: ``uint32 [words]``."""
    levels = _check_levels(levels)
    symbols = _check_symbols(symbols, levels)
    coder = constriction.stream.stack.AnsCoder()
    if len(symbols):
        coder.encode_reverse(symbols, constriction.stream.model.Uniform(levels))
    return coder.get_compressed()


def decode_uniform(words: np.ndarray, count: int, levels: int) -> np.ndarray:
    """Inverse of :func:`encode_uniform`: ``int32 [count]``. :class:`CodingError` where the stream is
    not used up by ``count`` symbols of ``levels`` (a count or level number other than the encoder's
    is caught that way when it leaves words over; a larger count that runs past the end decodes as
    zeros, which only the codecs' checksums see)."""
    levels = _check_levels(levels)
    if not is_whole(count) or count < 0:
        raise CodingError(f"count must be an integer >= 0, got {count!r}")
    words = _check_words(words)
    if count == 0:
        return np.zeros((0,), np.int32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        symbols = coder.decode(constriction.stream.model.Uniform(levels), int(count))
    except Exception as e:
        raise CodingError(f"entropy-coded stream does not decode: {e}") from e
    _check_finished(coder)
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


def _check_lo(lo: np.ndarray) -> np.ndarray:
    """Window starts as ``int64 [N]``; floats (a cast would truncate them) are refused."""
    lo = np.asarray(lo).reshape(-1)
    if lo.size and not np.issubdtype(lo.dtype, np.integer):
        raise CodingError(f"window starts must be integers, got dtype {lo.dtype}")
    return lo.astype(np.int64)


def _window_indices(symbols: np.ndarray, pmfs: np.ndarray, lo: np.ndarray, levels: int):
    levels = _check_levels(levels)
    symbols = _check_symbols(symbols, levels).astype(np.int64)
    lo = _check_lo(lo)
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
    """Inverse of :func:`encode_windowed`: ``int32 [N]`` (a stream shorter than its PMFs: as
    :func:`decode_categorical`)."""
    pmfs, levels, words = _check_pmfs(pmfs), _check_levels(levels), _check_words(words)
    lo = _check_lo(lo)
    if len(lo) != pmfs.shape[0]:
        raise CodingError(f"{pmfs.shape[0]} PMFs but {len(lo)} window starts")
    if pmfs.shape[0] == 0:
        return np.zeros((0,), np.int32)
    window = pmfs.shape[1] - 1
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        index = np.asarray(coder.decode(_CATEGORICAL, pmfs), np.int32)
        escaped = index == window
        symbols = lo + index
        if escaped.any():
            symbols[escaped] = np.asarray(coder.decode(constriction.stream.model.Uniform(levels),
                                                       int(escaped.sum())), np.int32)
    except Exception as e:  # constriction raises plain exceptions on invalid streams
        raise CodingError(f"entropy-coded stream does not decode: {e}") from e
    _check_finished(coder)
    if symbols.min() < 0 or symbols.max() >= levels:
        raise CodingError(f"decoded symbols outside [0, {levels}): window starts or models other than the encoder's")
    return symbols.astype(np.int32)


def ideal_bits_windowed(symbols: np.ndarray, pmfs: np.ndarray, lo: np.ndarray, levels: int) -> np.ndarray:
    """Per-symbol information content ``float64 [N]`` (bits) of :func:`encode_windowed`'s code."""
    pmfs = np.asarray(pmfs, np.float64)
    index, escaped = _window_indices(symbols, pmfs, lo, levels)
    return information_content(index, pmfs) + escaped * np.log2(levels)
