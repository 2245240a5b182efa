"""Word-level language-model data: the Penn Treebank text files (Mikolov's ``ptb.{train,valid,test}.txt``).

Each line is split on whitespace and ends with ``<eos>``; the vocabulary comes from the
training file (ids by decreasing frequency, ties alphabetically, so they are stable).
Training batches are windows at random offsets of the token stream, a pure function of
``(seed, step, host)``: each window has ``burn_in`` tokens of context that warm up the LSTM
state without being scored, then ``seq_len`` scored tokens (a stateless stand-in for carrying
the state across truncated-BPTT segments, so that a resumed run is bit-identical). Evaluation
covers the validation stream exactly once, in consecutive ``seq_len`` windows each preceded
by its ``burn_in`` tokens of true context.

For the character-aware CNN-LSTM, :func:`word_characters` spells every vocabulary word as a row
of character ids (the model looks the batches' word ids up in that table; the batches are the same).
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from jaxcomp.checks import index_array, is_whole
from jaxcomp.data.images import DataError, eval_batches_from_arrays, prefetch_batches

EOS = "<eos>"


def read_words(path: str) -> list[str]:
    """The words of a UTF-8 text file, ``<eos>`` after every line.

    Raises:
      DataError: naming the file, if it is missing, not UTF-8 text (e.g. a binary or compressed
        file) or holds no word.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"read_words expects a file path, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise DataError(f"text file not found: {path!r}")
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: an editor's byte-order mark is not a word
            words = [w for line in f for w in line.split() + [EOS]]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (a binary or compressed file?): {e}") from e
    if not any(w != EOS for w in words):
        raise DataError(f"{path}: holds no words (an empty or blank file)")
    return words


def _check_word_list(words: object, where: str) -> None:
    """A sequence of words, not one string (which would be read as its characters) or None."""
    if isinstance(words, (str, bytes)) or words is None or not hasattr(words, "__iter__"):
        raise DataError(f"{where} expects a list of words, got {type(words).__name__} "
                        "(split a text first, e.g. with read_words)")


class Vocabulary:
    """Word <-> id; words not in the vocabulary map to ``<unk>`` (an error if there is none)."""

    def __init__(self, words: list[str]):
        _check_word_list(words, "Vocabulary")
        counts = collections.Counter(words)
        self.words = sorted(counts, key=lambda w: (-counts[w], w))
        self.ids = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: list[str]) -> np.ndarray:
        """``int32 [N]`` ids of ``words``."""
        _check_word_list(words, "Vocabulary.encode")
        unk = self.ids.get("<unk>")
        try:
            return np.asarray([self.ids[w] if unk is None else self.ids.get(w, unk) for w in words], np.int32)
        except KeyError as e:
            raise DataError(f"word {e.args[0]!r} is not in the vocabulary (and there is no <unk>)") from None


class LMBatches:
    """Language-model batches: ``tokens int32 [B, burn_in + seq_len]``, ``targets`` (the next tokens,
    same shape) and ``weights float32`` (1 on scored positions, 0 on burn-in and padding)."""

    def __init__(self, train: np.ndarray, val: np.ndarray | None, vocab_size: int, batch_size: int,
                 seq_len: int, burn_in: int = 0, seed: int = 0, process_index: int = 0, process_count: int = 1):
        sizes = {"vocab_size": vocab_size, "batch_size": batch_size, "seq_len": seq_len, "process_count": process_count}
        counts = {"burn_in": burn_in, "seed": seed, "process_index": process_index}
        bad = [f"{k}={v!r}" for k, v in sizes.items() if not is_whole(v) or v < 1] + \
              [f"{k}={v!r}" for k, v in counts.items() if not is_whole(v) or v < 0]
        if bad:
            raise DataError(f"LMBatches: {', '.join(bad)}: sizes must be integers >= 1, burn_in, seed and "
                            "process_index integers >= 0")
        if process_index >= process_count:
            raise DataError(f"LMBatches: process_index {process_index} of {process_count} processes")
        domain = f"the vocabulary's 0..{vocab_size - 1} (Vocabulary.encode's ids)"
        train = index_array(train, vocab_size, "the training text", "token ids", domain, DataError)
        val = None if val is None else index_array(val, vocab_size, "the validation text", "token ids", domain,
                                                   DataError)
        if batch_size % process_count:
            raise DataError(f"global batch size {batch_size} is not divisible by {process_count} hosts")
        if len(train) < burn_in + seq_len + 2:
            raise DataError(f"training text of {len(train)} tokens is shorter than one window "
                            f"({burn_in} + {seq_len} + 1)")
        self.train, self.val, self.vocab_size = train, val, vocab_size
        self.batch_size, self.local_batch_size = batch_size, batch_size // process_count
        self.seq_len, self.burn_in, self.seed = seq_len, burn_in, seed
        self.process_index, self.process_count = process_index, process_count

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, self.process_index])
        length = self.burn_in + self.seq_len
        starts = rng.integers(0, len(self.train) - length - 1, self.local_batch_size)
        window = self.train[starts[:, None] + np.arange(length + 1)]
        weights = np.zeros((self.local_batch_size, length), np.float32)
        weights[:, self.burn_in:] = 1.0
        return {"tokens": window[:, :-1], "targets": window[:, 1:], "weights": weights}

    def train_batches(self, start_step: int = 0, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        return prefetch_batches(self.train_batch, start_step, prefetch)

    def eval_arrays(self) -> dict[str, np.ndarray]:
        """Every validation token scored once: windows ``[N, burn_in + seq_len]``; the first window's missing
        context and the last window's tail are padded with token 0 at weight 0."""
        length = self.burn_in + self.seq_len
        if self.val is None or len(self.val) < 2:
            z = np.zeros((0, length), np.int32)
            return {"tokens": z, "targets": z, "weights": z.astype(np.float32)}
        inputs, targets = self.val[:-1], self.val[1:]
        n = len(targets)
        num = -(-n // self.seq_len)
        first = np.arange(num)[:, None] * self.seq_len - self.burn_in + np.arange(length)[None, :]
        scored = (first >= np.arange(num)[:, None] * self.seq_len) & (first < n)
        valid_pos = (first >= 0) & (first < n)
        idx = np.clip(first, 0, n - 1)
        return {"tokens": np.where(valid_pos, inputs[idx], 0).astype(np.int32),
                "targets": np.where(valid_pos, targets[idx], 0).astype(np.int32),
                "weights": scored.astype(np.float32)}

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return eval_batches_from_arrays(self.eval_arrays(), batch_size, self.process_index, self.process_count)


def build_lm_data(data: ml_collections.ConfigDict, process_index: int | None = None,
                  process_count: int | None = None) -> tuple[LMBatches, Vocabulary]:
    """PTB-style data from ``data.path`` (a folder with ``{prefix}train.txt`` and ``{prefix}valid.txt``;
    ``data.prefix`` defaults to ``ptb.``); ``data.split`` picks ``valid`` or ``test`` for evaluation.
    ``data.train_tokens`` > 0 keeps only the first that many training tokens (CPU runs)."""
    import jax

    if not data.path or not os.path.isdir(data.path):
        raise DataError(f"language-model data folder not found: {data.path!r}; it must hold ptb.train.txt and "
                        "ptb.valid.txt (Mikolov's preprocessed Penn Treebank, the data/ folder of his "
                        "simple-examples.tgz; pass --config.data.path=DIR)")
    prefix = data.get("prefix", "ptb.")
    train_words = read_words(os.path.join(data.path, f"{prefix}train.txt"))
    vocab = Vocabulary(train_words)
    split = data.get("split", "valid")
    if split not in ("valid", "test"):
        raise DataError(f"data.split must be 'valid' or 'test', got {split!r}")
    val_path = os.path.join(data.path, f"{prefix}{split}.txt")
    val_words = read_words(val_path)
    try:
        val = vocab.encode(val_words)
    except DataError as e:  # a word of the evaluation text the training text never has (and no <unk>)
        raise DataError(f"{val_path}: {e} of {os.path.join(data.path, f'{prefix}train.txt')}") from e
    train = vocab.encode(train_words)
    if data.get("train_tokens", 0):
        train = train[: data.train_tokens]
    if data.get("val_tokens", 0):
        val = val[: data.val_tokens]
    batches = LMBatches(train, val, len(vocab), data.batch_size, data.seq_len, data.get("burn_in", 0),
                        data.get("seed", 0),
                        jax.process_index() if process_index is None else process_index,
                        jax.process_count() if process_count is None else process_count)
    return batches, vocab


# ---- characters of each word (the character-aware CNN-LSTM, Kim et al. 2016) ----------------------------

#: reserved character ids: padding after the word, start-of-word, end-of-word, and the single
#: "characters" that stand for the whole words ``<unk>`` and ``<eos>`` (Kim et al. write them ``|`` and ``+``)
CHAR_PAD, CHAR_START, CHAR_END, CHAR_UNK, CHAR_EOS = 0, 1, 2, 3, 4
NUM_RESERVED_CHARS = 5


def word_characters(words: list[str], max_word_len: int = 0) -> tuple[np.ndarray, list[str]]:
    """The characters of every word of a vocabulary, as Kim et al.'s character-aware LM reads them.

    Args:
      words: the vocabulary in id order (:attr:`Vocabulary.words`).
      max_word_len: the width of the table, start and end markers included; 0: the longest word + 2.
        A longer word keeps its first ``max_word_len - 2`` characters (its end marker stays).

    Returns:
      ``int32 [len(words), max_word_len]``: per word ``CHAR_START``, its character ids, ``CHAR_END``,
      then ``CHAR_PAD``; ``<unk>`` and ``<eos>`` are the one character ``CHAR_UNK`` / ``CHAR_EOS``.
      And the characters of ids ``NUM_RESERVED_CHARS, NUM_RESERVED_CHARS + 1, ...`` (sorted), so that
      the character vocabulary has ``NUM_RESERVED_CHARS + len(chars)`` entries (PTB: 5 + 46 = 51, as
      Kim et al.'s; its longest word has 19 characters, so the table is ``[10000, 21]``).
    """
    if isinstance(words, str) or not len(words):
        raise DataError(f"word_characters needs the vocabulary as a non-empty list of words, got {words!r:.60}")
    special = {"<unk>": [CHAR_UNK], EOS: [CHAR_EOS]}
    chars = sorted({c for w in words if w not in special for c in w})
    ids = {c: NUM_RESERVED_CHARS + i for i, c in enumerate(chars)}
    spelled = [special.get(w) or [ids[c] for c in w] for w in words]
    width = max_word_len or max(map(len, spelled)) + 2
    if width < 3:
        raise DataError(f"max_word_len={width} leaves no room for a character between the start and end markers")
    table = np.full((len(words), width), CHAR_PAD, np.int32)
    for i, s in enumerate(spelled):
        s = [CHAR_START, *s[: width - 2], CHAR_END]
        table[i, : len(s)] = s
    return table, chars


@functools.lru_cache(maxsize=4)
def _text_word_characters(path: str, prefix: str, max_word_len: int) -> tuple[np.ndarray, tuple[str, ...]]:
    table, chars = word_characters(Vocabulary(read_words(os.path.join(path, f"{prefix}train.txt"))).words,
                                   max_word_len)
    table.flags.writeable = False  # cached: shared by every caller
    return table, tuple(chars)


def lm_word_characters(data: ml_collections.ConfigDict, max_word_len: int = 0) -> tuple[np.ndarray, list[str]]:
    """:func:`word_characters` of the vocabulary :func:`build_lm_data` builds from ``data`` (the words of
    ``{data.path}/{data.prefix}train.txt``), so that row ``i`` spells the word of token id ``i``. Read once
    per ``(path, prefix, max_word_len)`` and cached; the table is read-only."""
    if not data.path or not os.path.isdir(data.path):
        raise DataError(f"language-model data folder not found: {data.path!r}; the character-aware model spells "
                        "the words of its ptb.train.txt (pass --config.data.path=DIR)")
    table, chars = _text_word_characters(os.path.abspath(data.path), data.get("prefix", "ptb."), max_word_len)
    return table, list(chars)
