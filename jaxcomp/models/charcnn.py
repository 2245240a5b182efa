"""The character-aware CNN-LSTM language model (Kim, Jernite, Sontag & Rush, AAAI 2016).

The Born-Again paper's second PTB model ("CNN-LSTM", 19M parameters): each word is read as its
characters, embedded, convolved with filters of several widths, max-pooled over the word,
passed through highway layers, and fed to a word-level LSTM that predicts the next *word*
through an ordinary softmax over the vocabulary.

The model reads the same batches as :class:`jaxcomp.models.LSTMLanguageModel` (word ids
``int32 [B, T]``): it spells each word with a fixed table ``word_chars int32 [vocab, L]``
(row ``i``: start marker, the characters of word ``i``, end marker, padding), a constant of the
module rather than a parameter, built from the training text's vocabulary by
:func:`jaxcomp.data.text.word_characters` / :func:`jaxcomp.data.text.lm_word_characters`.
Because every word id has one spelling, this equals feeding the characters per token, as Kim
et al.'s loader does (PTB's ``<unk>`` is one reserved character there too).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.models.layers import ConvFactory, DenseFactory, batch_norm, default_dense
from jaxcomp.models.lstm import lstm_stack

#: Kim et al.'s large model (LSTM-CharCNN-Large, PTB): 7 widths, min(200, 50 w) filters each
KIM_LARGE_WIDTHS = (1, 2, 3, 4, 5, 6, 7)
KIM_LARGE_FILTERS = tuple(min(200, 50 * w) for w in KIM_LARGE_WIDTHS)


def char_table(word_chars: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """``int [V, L]`` -> the nested tuples :class:`CharCNNLanguageModel` takes as ``word_chars``."""
    table = np.asarray(word_chars)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"word_chars must be an int array [vocab, L], got {table.dtype} {table.shape}")
    return tuple(map(tuple, table.tolist()))


class Highway(nn.Module):
    """``layers`` highway layers (Srivastava et al.) on ``float32 [..., D] -> [..., D]``:
    ``t = sigmoid(W_t x + b_t - 2)``, ``x <- t * relu(W_h x + b_h) + (1 - t) * x``. The ``-2`` is
    Kim et al.'s fixed offset that starts each layer close to carrying its input through.
    ``batch_norm``: a batch norm over ``D`` after every layer (``highway{i}_bn``; batch statistics
    when ``train``), as StrassenNets' SPN language model has."""

    layers: int
    dense: DenseFactory = default_dense
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        d = x.shape[-1]
        for i in range(self.layers):
            t = nn.sigmoid(self.dense(d, use_bias=True, name=f"highway{i}_gate")(x) - 2.0)
            h = nn.relu(self.dense(d, use_bias=True, name=f"highway{i}_transform")(x))
            x = t * h + (1.0 - t) * x
            if self.batch_norm:
                x = batch_norm(train, f"highway{i}_bn")(x)
        return x


class CharCNNLanguageModel(nn.Module):
    """Characters -> CNN -> highway -> LSTM -> next-word logits (Kim et al.'s LSTM-CharCNN).

    ``__call__(tokens int32 [B, T], train) -> logits float32 [B, T, vocab_size]``; every
    sequence starts from a zero LSTM state. Shapes inside: characters ``int32 [B, T, L]``
    (``L = word_chars.shape[1]``), their embeddings ``[B, T, L, char_embed]``, per width ``w``
    a valid convolution over the ``L`` positions with ``filters[i]`` output channels, ``tanh``,
    max over the ``L - w + 1`` positions; concatenated ``[B, T, sum(filters)]``; highway layers;
    ``layers`` LSTM layers of ``hidden`` units (:func:`jaxcomp.models.lstm.lstm_stack`); dropout
    (rate ``dropout``, needs a ``dropout`` rng when training) after every LSTM layer, i.e. between
    them and before the output, as in Kim et al.; a dense projection to the vocabulary.

    Attributes:
      vocab_size: number of words (rows of ``word_chars``).
      word_chars: ``int [vocab_size, L]`` character ids of every word, as nested tuples (hashable,
        as Flax needs module attributes to be; :func:`char_table` converts an array), kept as a
        constant, not a parameter; every id ``< char_vocab_size``, ``L`` at least the widest
        filter. ``None`` only for shape inspection: every word is then spelled with character 0
        (e.g. to count parameters without the text).
      char_vocab_size: rows of the character embedding (PTB: 51, see :func:`jaxcomp.data.text.word_characters`).
      max_word_len: ``L`` when ``word_chars`` is None.
      char_embed, kernel_widths, filters, highway_layers, hidden, layers, dropout: the architecture;
        the defaults are Kim et al.'s large PTB model (15; 1..7; min(200, 50 w); 2; 650; 2; 0.5):
        19,367,965 parameters with PTB's 10k words and 51 characters (Kim et al.: 19M; their Torch LSTM
        has a second bias per gate, 5,200 more).
      dense: factory for the highway layers, the LSTM projections and the output layer, called as
        ``dense(features, use_bias=, name=)`` (see :mod:`jaxcomp.models.layers`).
      conv: ``None`` (the default): the width-``w`` convolutions are :class:`flax.linen.Conv` over the
        ``L`` positions (kernel ``[w, char_embed, f]``); else a factory of the zoo's conv contract
        (``conv(features, kernel_size, strides=, padding=, use_bias=, name=)``, e.g. StrassenNets'
        SPN conv), applied as a ``(w, 1)`` conv to the characters as an ``[L, 1]`` image with
        ``char_embed`` channels: the same map, as the reference's ``(w, char_embed)`` 2-D conv.
      highway_batch_norm: a batch norm after every highway layer (see :class:`Highway`).
    """

    vocab_size: int
    word_chars: Any = None
    char_vocab_size: int = 51
    max_word_len: int = 21
    char_embed: int = 15
    kernel_widths: tuple[int, ...] = KIM_LARGE_WIDTHS
    filters: tuple[int, ...] = KIM_LARGE_FILTERS
    highway_layers: int = 2
    hidden: int = 650
    layers: int = 2
    dropout: float = 0.5
    dense: DenseFactory = default_dense
    conv: ConvFactory | None = None
    highway_batch_norm: bool = False

    def spell(self) -> np.ndarray:
        """The character table ``int32 [vocab_size, L]`` (zeros when ``word_chars`` is None), checked."""
        if self.word_chars is None:
            return np.zeros((self.vocab_size, self.max_word_len), np.int32)
        table = np.asarray(self.word_chars, np.int32)
        if table.ndim != 2 or table.shape[0] != self.vocab_size:
            raise ValueError(f"word_chars must be int [vocab_size={self.vocab_size}, L], got shape {table.shape}")
        if table.size and (table.min() < 0 or table.max() >= self.char_vocab_size):
            raise ValueError(f"word_chars holds character ids in [{table.min()}, {table.max()}] but "
                             f"char_vocab_size={self.char_vocab_size}")
        return table

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"CharCNNLanguageModel expects int tokens [B, T], got shape {tokens.shape}")
        if len(self.kernel_widths) != len(self.filters):
            raise ValueError(f"kernel_widths {self.kernel_widths} and filters {self.filters} differ in length")
        table = self.spell()
        if table.shape[1] < max(self.kernel_widths):
            raise ValueError(f"words are {table.shape[1]} characters wide (markers included), narrower than the "
                             f"widest filter ({max(self.kernel_widths)})")
        chars = jnp.asarray(table)[tokens]                                             # [B, T, L]
        x = nn.Embed(self.char_vocab_size, self.char_embed, name="char_embed")(chars)  # [B, T, L, E]
        b, t, length, e = x.shape
        x = x.reshape(b * t, length, e)
        pooled = []
        for w, f in zip(self.kernel_widths, self.filters):
            if self.conv is None:
                y = nn.Conv(f, (w,), padding="VALID", name=f"conv{w}")(x)               # [B*T, L-w+1, f]
            else:
                y = self.conv(f, (w, 1), strides=(1, 1), padding=((0, 0), (0, 0)), use_bias=True,
                              name=f"conv{w}")(x[:, :, None, :])[:, :, 0, :]          # [B*T, L-w+1, f]
            pooled.append(jnp.max(jnp.tanh(y), axis=1))
        x = jnp.concatenate(pooled, -1).reshape(b, t, sum(self.filters))
        x = Highway(self.highway_layers, self.dense, self.highway_batch_norm, name="highway")(x, train)
        drop = nn.Dropout(self.dropout, deterministic=not train) if self.dropout else None
        x = lstm_stack(x, self.hidden, self.layers, self.dense, drop)
        return self.dense(self.vocab_size, use_bias=True, name="output")(x)
