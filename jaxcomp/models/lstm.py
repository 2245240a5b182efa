"""A word-level LSTM language model (Zaremba et al., 2014 style) with injectable projections.

The LSTM stack (:func:`lstm_stack`) is shared with the character-aware CNN-LSTM of
:mod:`jaxcomp.models.charcnn`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models.layers import DenseFactory, default_dense


class _LSTMStep(nn.Module):
    """One time step given the precomputed input projection: ``gates = x_proj + W_h h``."""

    hidden: int
    dense: DenseFactory

    @nn.compact
    def __call__(self, carry: tuple[jax.Array, jax.Array], x_proj: jax.Array):
        c, h = carry
        gates = x_proj + self.dense(4 * self.hidden, use_bias=False, name="recurrent")(h)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
        h = nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h


def lstm_stack(x: jax.Array, hidden: int, layers: int, dense: DenseFactory, drop: nn.Module | None) -> jax.Array:
    """``layers`` LSTM layers over ``x float32 [B, T, D] -> [B, T, hidden]``, each from a zero state, with
    ``drop`` (or nothing) after every layer. Call it inside a module's compact ``__call__``: it adds that
    module's parameters ``lstm{l}_input`` (``D or hidden -> 4 hidden``, with bias) and ``lstm{l}/recurrent``
    (``hidden -> 4 hidden``, no bias)."""
    scan = nn.scan(_LSTMStep, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
    for layer in range(layers):
        x_proj = dense(4 * hidden, use_bias=True, name=f"lstm{layer}_input")(x)
        zeros = jnp.zeros((x.shape[0], hidden), x_proj.dtype)
        _, x = scan(hidden, dense, name=f"lstm{layer}")((zeros, zeros), x_proj)
        x = drop(x) if drop is not None else x
    return x


class LSTMLanguageModel(nn.Module):
    """Embedding, ``layers`` LSTM layers, dropout, and a projection to the vocabulary.

    ``__call__(tokens int32 [B, T], train) -> logits float32 [B, T, vocab_size]``; every
    sequence starts from a zero state. Dropout (rate ``dropout``) on the embeddings, between
    layers and before the output, as in Zaremba et al.; it needs a ``dropout`` rng when training.
    A token outside ``0..vocab_size-1`` (e.g. a padding id of -1) reads a zero embedding (never another
    word's), like padding; mask such positions in the loss.

    Attributes:
      vocab_size, embed_dim, hidden, layers, dropout.
      dense: factory for the input projection (``[B, T, E or H] -> [B, T, 4H]``, computed for
        all steps at once), the recurrent projection (``[B, H] -> [B, 4H]``, no bias) and the
        output projection (``[B, T, H] -> [B, T, vocab]``); called as
        ``dense(features, use_bias=, name=)``, see :mod:`jaxcomp.models.layers`.
      tie_embeddings: the output projection is the transposed embedding matrix plus a bias
        ``output_bias [vocab]`` (Press & Wolf, 2017; the BAN paper's PTB LSTM), instead of a
        ``dense`` layer ``output``; needs ``embed_dim == hidden``. Saves ``vocab * hidden`` parameters.
    """

    vocab_size: int
    embed_dim: int = 200
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.0
    dense: DenseFactory = default_dense
    tie_embeddings: bool = False

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"LSTMLanguageModel expects int tokens [B, T], got shape {tokens.shape}")
        if self.tie_embeddings and self.embed_dim != self.hidden:
            raise ValueError(f"tie_embeddings needs embed_dim == hidden (the output projection is the embedding "
                             f"matrix), got embed_dim={self.embed_dim}, hidden={self.hidden}")
        init = nn.initializers.uniform(0.2)  # U(0, 0.2) shifted below to U(-0.1, 0.1) as in Zaremba et al.
        embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed",
                         embedding_init=lambda k, s, d=jnp.float32: init(k, s, d) - 0.1)
        # -1 would wrap to the last word under jnp.take: an out-of-range id reads zeros (a padding embedding;
        # NaN would poison the gradients even where the loss masks the position)
        known = (tokens >= 0) & (tokens < self.vocab_size)
        x = jnp.where(known[..., None], embed(jnp.where(known, tokens, 0)), 0.0)
        drop = nn.Dropout(self.dropout, deterministic=not train) if self.dropout else None
        x = drop(x) if drop is not None else x
        x = lstm_stack(x, self.hidden, self.layers, self.dense, drop)
        if self.tie_embeddings:  # Press & Wolf: the output projection is the embedding matrix
            bias = self.param("output_bias", nn.initializers.zeros, (self.vocab_size,), jnp.float32)
            return embed.attend(x) + bias
        return self.dense(self.vocab_size, use_bias=True, name="output")(x)
