"""The log-spectrogram front end and the jitted ECG augmentations (device code, pure JAX).

Spectrogram: ``scipy.signal.spectrogram(x, fs=300, nperseg=64, noverlap=32)`` with its
defaults — a periodic Tukey window (alpha 0.25), per-frame mean removal, one-sided PSD
scaling ``1 / (fs * sum(w**2))`` with the non-DC, non-Nyquist bins doubled — then the
natural log, as in the paper's front end. A recording of ``n`` samples has
``(n - 32) // 32`` frames; frames beyond that (padding) are masked.

Augmentations (Zihlmann et al. 2017, section 2.3), applied per recording inside the train
step so they cost no host time and respect each recording's ``length``:

* *dropout bursts*: short stretches of the signal set to zero. As in the reference code,
  a burst starts at each sample with probability ``burst_rate`` and lasts ``burst_samples``.
* *random resampling*: the recording is stretched or squeezed by a factor drawn uniformly
  from ``[min_factor, max_factor]`` (linear interpolation), which changes the apparent heart
  rate; the new length is ``round(length * factor)``, cut to the padded width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from jaxcomp.ecg.data import FS, NOVERLAP, NPERSEG

LOG_FLOOR = 1e-10  # added before the log; padded/flat frames give log(1e-10) = -23


def tukey_window(nperseg: int = NPERSEG) -> np.ndarray:
    """scipy.signal.spectrogram's default window: ``get_window(('tukey', 0.25), nperseg)`` (periodic)."""
    return scipy.signal.get_window(("tukey", 0.25), nperseg).astype(np.float32)


def num_frames(length: int | np.ndarray | jax.Array, nperseg: int = NPERSEG, noverlap: int = NOVERLAP
               ) -> int | np.ndarray | jax.Array:
    """Frames of a recording of ``length`` samples (works on ints and integer arrays)."""
    return (length - noverlap) // (nperseg - noverlap)


def spectrogram(x: jax.Array, fs: float = FS, nperseg: int = NPERSEG, noverlap: int = NOVERLAP) -> jax.Array:
    """PSD spectrogram as scipy computes it: float32 ``[..., L]`` -> ``[..., frames, nperseg // 2 + 1]``.

    Note the axis order: time before frequency (scipy returns ``[..., freq, time]``).
    """
    hop = nperseg - noverlap
    frames = num_frames(x.shape[-1], nperseg, noverlap)
    idx = np.arange(frames)[:, None] * hop + np.arange(nperseg)[None, :]
    seg = x[..., idx]                                   # [..., frames, nperseg]
    seg = seg - seg.mean(axis=-1, keepdims=True)        # detrend='constant'
    win = jnp.asarray(tukey_window(nperseg))
    spec = jnp.fft.rfft(seg * win, axis=-1)
    psd = (spec.real**2 + spec.imag**2) / (fs * float(np.sum(tukey_window(nperseg).astype(np.float64) ** 2)))
    double = np.ones(nperseg // 2 + 1, np.float32)
    double[1:nperseg // 2 + (nperseg % 2)] = 2.0        # one-sided: all but DC (and Nyquist if even)
    return psd * double


def log_spectrogram(x: jax.Array, lengths: jax.Array, normalize: bool = True) -> tuple[jax.Array, jax.Array]:
    """Masked log spectrogram of a padded batch.

    Args:
      x: float32 ``[B, L]`` signals (mV), zero-padded.
      lengths: int32 ``[B]`` true lengths (>= 64); a length above ``L`` counts as ``L`` (the frames
        the array holds), one below 64 as no frame.
      normalize: standardise each recording's log spectrogram over its valid frames
        (zero mean, unit variance), which removes the recording's gain.

    Returns:
      ``(features [B, T, 33] float32, frames [B] int32)``; features beyond ``frames`` are 0,
      ``0 <= frames <= T``.

    Raises:
      ValueError: ``x`` is not ``[B, L]`` or ``lengths`` not ``[B]`` (checked on shapes, so also under jit).
    """
    if jnp.ndim(x) != 2 or jnp.shape(lengths) != jnp.shape(x)[:1]:
        raise ValueError(f"log_spectrogram: x must be signals [B, L] and lengths their lengths [B], got shapes "
                         f"{jnp.shape(x)} and {jnp.shape(lengths)}")
    s = jnp.log(spectrogram(x) + LOG_FLOOR)
    # a length past the padded width divided the statistics by frames the array does not hold
    frames = jnp.clip(num_frames(lengths), 0, s.shape[1]).astype(jnp.int32)
    mask = (jnp.arange(s.shape[1])[None, :] < frames[:, None])[:, :, None]
    if normalize:
        count = jnp.maximum(frames, 1)[:, None, None] * s.shape[2]
        mean = jnp.sum(jnp.where(mask, s, 0.0), axis=(1, 2), keepdims=True) / count
        var = jnp.sum(jnp.where(mask, (s - mean) ** 2, 0.0), axis=(1, 2), keepdims=True) / count
        s = (s - mean) * jax.lax.rsqrt(var + 1e-6)
    return jnp.where(mask, s, 0.0), frames


def dropout_bursts(rng: jax.Array, x: jax.Array, lengths: jax.Array, burst_rate: float = 0.0228,
                   burst_samples: int = 11) -> jax.Array:
    """Zeroes bursts of ``burst_samples`` samples, each starting at a sample with probability ``burst_rate``.

    The defaults are the reference implementation's (``zero_filter(threshold=2, depth=10)``: a
    standard normal above 2, grown to 11 samples = 37 ms at 300 Hz). Shapes: ``x`` float32 ``[B, L]``,
    ``lengths`` int32 ``[B]``; lengths do not change.
    """
    starts = jax.random.bernoulli(rng, burst_rate, x.shape).astype(jnp.float32)
    # a sample is dropped if a burst started within the previous burst_samples samples
    kernel = jnp.ones((burst_samples,), jnp.float32)
    covered = jax.vmap(lambda s: jnp.convolve(s, kernel, mode="full")[: x.shape[1]])(starts)
    return jnp.where(covered > 0, 0.0, x)


def random_resample(rng: jax.Array, x: jax.Array, lengths: jax.Array, min_factor: float = 2 / 3,
                    max_factor: float = 4 / 3) -> tuple[jax.Array, jax.Array]:
    """Stretches each recording by a random factor (linear interpolation); returns ``(x, new lengths)``.

    The paper's default range (2/3 .. 4/3) maps 80 bpm to 60..120 bpm. New lengths are
    ``round(length * factor)`` cut to ``L``; never below 64 samples (a shorter stretch is padded with
    zeros up to 64; recordings under 64 samples are left as they are).
    """
    b, width = x.shape
    factor = jax.random.uniform(rng, (b,), minval=min_factor, maxval=max_factor)
    new_len = jnp.clip(jnp.round(lengths * factor), 64, width).astype(jnp.int32)
    new_len = jnp.where(lengths < 64, lengths, new_len)
    # sample j of the output reads position j * (length - 1) / (round(length * factor) - 1) of the input
    full = jnp.maximum(jnp.round(lengths * factor), 2.0)
    step = (lengths - 1).astype(jnp.float32) / (full - 1)
    pos = jnp.arange(width, dtype=jnp.float32)[None, :] * step[:, None]
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, width - 1)
    hi = jnp.clip(lo + 1, 0, jnp.maximum(lengths - 1, 0)[:, None])
    frac = pos - lo
    y = jnp.take_along_axis(x, lo, axis=1) * (1 - frac) + jnp.take_along_axis(x, hi, axis=1) * frac
    # a recording raised to 64 samples holds its round(length * factor) stretched ones, then zeros
    valid = jnp.arange(width)[None, :] < jnp.minimum(new_len, full.astype(jnp.int32))[:, None]
    return jnp.where(valid, y, 0.0), new_len


def augment(rng: jax.Array, x: jax.Array, lengths: jax.Array, resample: bool = True, min_factor: float = 2 / 3,
            max_factor: float = 4 / 3, bursts: bool = True, burst_rate: float = 0.0228,
            burst_samples: int = 11) -> tuple[jax.Array, jax.Array]:
    """Dropout bursts, then random resampling, in the reference's order (so its bursts are stretched
    with the signal, 7-15 samples); ``(x [B, L], lengths [B])`` in and out."""
    r1, r2 = jax.random.split(rng)
    if bursts:
        x = dropout_bursts(r2, x, lengths, burst_rate, burst_samples)
    if resample:
        x, lengths = random_resample(r1, x, lengths, min_factor, max_factor)
    return x, lengths
