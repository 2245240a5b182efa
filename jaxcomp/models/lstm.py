"""A word-level LSTM language model (Zaremba et al., 2014 style) with injectable projections."""

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


class LSTMLanguageModel(nn.Module):
    """Embedding, ``layers`` LSTM layers, dropout, and a projection to the vocabulary.

    ``__call__(tokens int32 [B, T], train) -> logits float32 [B, T, vocab_size]``; every
    sequence starts from a zero state. Dropout (rate ``dropout``) on the embeddings, between
    layers and before the output, as in Zaremba et al.; it needs a ``dropout`` rng when training.

    Attributes:
      vocab_size, embed_dim, hidden, layers, dropout.
      dense: factory for the input projection (``[B, T, E or H] -> [B, T, 4H]``, computed for
        all steps at once), the recurrent projection (``[B, H] -> [B, 4H]``, no bias) and the
        output projection (``[B, T, H] -> [B, T, vocab]``); called as
        ``dense(features, use_bias=, name=)``, see :mod:`jaxcomp.models.layers`.
    """

    vocab_size: int
    embed_dim: int = 200
    hidden: int = 200
    layers: int = 2
    dropout: float = 0.0
    dense: DenseFactory = default_dense

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"LSTMLanguageModel expects int tokens [B, T], got shape {tokens.shape}")
        init = nn.initializers.uniform(0.2)  # U(0, 0.2) shifted below to U(-0.1, 0.1) as in Zaremba et al.
        embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed",
                         embedding_init=lambda k, s, d=jnp.float32: init(k, s, d) - 0.1)
        x = embed(tokens)
        drop = nn.Dropout(self.dropout, deterministic=not train)
        x = drop(x) if self.dropout else x
        scan = nn.scan(_LSTMStep, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
        for layer in range(self.layers):
            x_proj = self.dense(4 * self.hidden, use_bias=True, name=f"lstm{layer}_input")(x)
            zeros = jnp.zeros((tokens.shape[0], self.hidden), x_proj.dtype)
            _, x = scan(self.hidden, self.dense, name=f"lstm{layer}")((zeros, zeros), x_proj)
            x = drop(x) if self.dropout else x
        return self.dense(self.vocab_size, use_bias=True, name="output")(x)
