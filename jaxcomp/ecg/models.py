"""The paper's two networks on the log spectrogram, with every layer masked by recording length.

Both follow Zihlmann, Perekrestenko & Tschannen, "Convolutional Recurrent Neural Networks
for Electrocardiogram Classification" (CinC 2017) and its reference configuration:

* **CNN**: ``conv_blocks`` blocks of ``layers_per_block`` 2-D convolutions (``kernel`` x
  ``kernel``) over (time, frequency), each followed by batch norm, ReLU and dropout; the
  last layer of a block has stride 2 and ``growth`` more channels than the block's input
  (the first block starts at ``channels``); as in the reference code, dropout acts once per
  block, after its last layer. The output ``[B, T', F', C]`` is flattened to
  features ``[B, T', F' C]``, averaged over the valid time steps, and a linear layer gives
  the four class logits. (Paper: 6 blocks x 4 layers = 24 conv layers, 5x5, 32 channels + 32
  per block.)
* **CRNN**: the first ``crnn_conv_blocks`` blocks of the same stack (paper: 4), then, as in
  the reference code, a forward and a backward stack of ``lstm_layers`` LSTMs with
  ``lstm_units`` each (paper: 3 layers, 200 units split as 100 per direction) over the valid
  time steps only; each direction's outputs are averaged over time, concatenated, and a
  linear layer gives the logits.

Masking makes a recording's logits independent of how much padding its batch has: the
features are zeroed beyond each recording's length after every layer, the convolutions pad
explicitly with (k-1)//2 zeros on each side (so an output step never depends on the total
width), batch statistics are computed over valid steps only, and the LSTMs get
``seq_lengths``. A stride-2 layer maps ``t`` valid steps to ``ceil(t / 2)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.configs import spec_from_section


@dataclasses.dataclass(frozen=True)
class ECGModelSpec:
    name: str = "cnn"               # cnn | crnn
    conv_blocks: int = 6
    crnn_conv_blocks: int = 4
    layers_per_block: int = 4
    kernel: int = 5
    channels: int = 32
    growth: int = 32
    dropout: float = 0.15
    lstm_layers: int = 3
    lstm_units: int = 100              # per direction
    bn_momentum: float = 0.99
    num_classes: int = 4


def spec_from_config(model: ml_collections.ConfigDict) -> ECGModelSpec:
    """An :class:`ECGModelSpec` from ``config.model`` (``normalize`` is the task's: the spectrogram's
    per-recording normalisation); a key neither has is a ``ConfigError`` naming it."""
    spec = spec_from_section(ECGModelSpec, model, "the ECG classifier", others=("normalize",))
    if spec.name not in ("cnn", "crnn"):
        raise ValueError(f"unknown model.name {spec.name!r}; use 'cnn' or 'crnn'")
    if spec.name == "crnn" and not 1 <= spec.crnn_conv_blocks <= spec.conv_blocks:
        raise ValueError(f"model.crnn_conv_blocks must be in 1..conv_blocks ({spec.conv_blocks}), "
                         f"got {spec.crnn_conv_blocks}")
    return spec


def time_mask(frames: jax.Array, steps: int) -> jax.Array:
    """``[B, steps]`` boolean: step ``t`` < ``frames[b]``."""
    return jnp.arange(steps)[None, :] < frames[:, None]


def masked_mean_over_time(x: jax.Array, frames: jax.Array) -> jax.Array:
    """Mean of ``x [B, T, D]`` over the first ``frames[b]`` steps -> ``[B, D]``."""
    mask = time_mask(frames, x.shape[1])[:, :, None]
    return jnp.sum(jnp.where(mask, x, 0.0), axis=1) / jnp.maximum(frames, 1)[:, None].astype(x.dtype)


class MaskedBatchNorm(nn.Module):
    """Batch norm over (batch, time, frequency) that ignores padded time steps.

    Running statistics live in the ``batch_stats`` collection (the trainer's
    ``TrainState.model_state``).
    """

    momentum: float = 0.99
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        if train:
            m = mask.astype(x.dtype)
            count = jnp.maximum(jnp.sum(m) * x.shape[2], 1.0)
            mean = jnp.sum(x * m, axis=(0, 1, 2)) / count
            var = jnp.sum(((x - mean) ** 2) * m, axis=(0, 1, 2)) / count
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class ConvBlock(nn.Module):
    """``layers`` masked conv-BN-ReLU-dropout layers; the last one strides 2 and adds ``growth`` channels."""

    layers: int
    kernel: int
    channels: int
    growth: int
    dropout: float
    bn_momentum: float

    @nn.compact
    def __call__(self, x: jax.Array, frames: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        lo, hi = (self.kernel - 1) // 2, self.kernel // 2
        for i in range(self.layers):
            last = i == self.layers - 1
            stride = 2 if last else 1
            x = nn.Conv(self.channels + (self.growth if last else 0), (self.kernel, self.kernel),
                        strides=(stride, stride), padding=((lo, hi), (lo, hi)), name=f"conv{i}")(x)
            if last:
                frames = (frames + 1) // 2
            mask = time_mask(frames, x.shape[1])[:, :, None, None]
            x = MaskedBatchNorm(self.bn_momentum, name=f"bn{i}")(x, mask, train)
            x = nn.relu(x)
            if last:  # as the reference code: dropout once, at the end of the block
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = jnp.where(mask, x, 0.0)
        return x, frames


class ConvStack(nn.Module):
    spec: ECGModelSpec
    blocks: int

    @nn.compact
    def __call__(self, x: jax.Array, frames: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        s = self.spec
        x = x[..., None]  # [B, T, F, 1]
        channels = s.channels
        for b in range(self.blocks):
            x, frames = ConvBlock(s.layers_per_block, s.kernel, channels, s.growth, s.dropout, s.bn_momentum,
                                  name=f"block{b}")(x, frames, train)
            channels += s.growth
        return x.reshape(x.shape[0], x.shape[1], -1), frames  # [B, T', F' C]


class ECGCNN(nn.Module):
    """Log spectrogram ``[B, T, 33]`` + valid frames ``[B]`` -> logits ``[B, 4]``."""

    spec: ECGModelSpec

    @nn.compact
    def __call__(self, spec_features: jax.Array, frames: jax.Array, train: bool = False,
                 conv_train: bool | None = None) -> jax.Array:
        conv_train = train if conv_train is None else conv_train
        x, frames = ConvStack(self.spec, self.spec.conv_blocks, name="conv")(spec_features, frames, conv_train)
        return nn.Dense(self.spec.num_classes, name="classifier")(masked_mean_over_time(x, frames))


class ECGCRNN(nn.Module):
    """Conv blocks, bidirectional LSTMs over the valid steps, time average, linear layer."""

    spec: ECGModelSpec

    @nn.compact
    def __call__(self, spec_features: jax.Array, frames: jax.Array, train: bool = False,
                 conv_train: bool | None = None) -> jax.Array:
        s = self.spec
        conv_train = train if conv_train is None else conv_train
        x, frames = ConvStack(s, s.crnn_conv_blocks, name="conv")(spec_features, frames, conv_train)
        directions = []
        for direction in ("forward", "backward"):
            h = x
            for i in range(s.lstm_layers):
                h = nn.RNN(nn.OptimizedLSTMCell(s.lstm_units), reverse=direction == "backward", keep_order=True,
                           name=f"lstm_{direction}{i}")(h, seq_lengths=frames)
                h = nn.Dropout(s.dropout, deterministic=not train)(h)
            directions.append(masked_mean_over_time(h, frames))
        return nn.Dense(s.num_classes, name="classifier")(jnp.concatenate(directions, axis=-1))


def build_model(spec: ECGModelSpec) -> nn.Module:
    return ECGCNN(spec) if spec.name == "cnn" else ECGCRNN(spec)


def conv_params(params: Any) -> Any:
    """The convolutional part (``conv`` subtree) of a CNN's or CRNN's parameters."""
    return params["conv"]
