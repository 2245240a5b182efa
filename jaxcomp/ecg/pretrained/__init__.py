"""The ECG rhythm classifier shipped with the package, and loading any exported ECG model (see MODEL.md).

    from jaxcomp.ecg.pretrained import load_classifier
    clf = load_classifier()                      # the shipped model (trained on SYNTHETIC data)
    probs = clf.predict_proba([signal_mv, ...])  # float32 [n, 4]: P(N), P(A), P(O), P(~)

A model file is :mod:`jaxcomp.modelfile`'s format: ``NAME.msgpack`` holding the Flax variables
``{"params", "batch_stats"}`` beside ``NAME.json`` (the training config and notes), as
:func:`jaxcomp.ecg.experiments.train_with_validation` writes them (``WORKDIR/best.msgpack``). A
training workdir works too (its ``best.msgpack`` if present, else its latest checkpoint).

It is **not a clinical model**: it was trained on the package's synthetic recordings only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.ecg.data import CLASSES, FS, MIN_SAMPLES, NOVERLAP, ECGDataError, check_recording

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(PRETRAINED_DIR, "ecg_synthetic.msgpack")
PAD_SECONDS = 15.0  # recordings are padded to a multiple of this (one compiled shape per multiple)
# below this standard deviation (mV) a recording is warned about: ECGs in mV have ~0.1-1 mV (the synthetic
# ones 0.15-0.8), while one in volts has ~1e-4; at such amplitudes the spectrogram's absolute log floor
# (1e-10 mV^2/Hz) sets part of the features, which the per-recording standardisation cannot undo
LOW_AMPLITUDE_MV = 0.02


class ECGClassifier:
    """A trained CNN or CRNN: float32 mV recordings at 300 Hz -> class probabilities.

    Attributes:
      config: the model's training config (``stage.init_conv_from`` cleared).
      variables: ``{"params", "batch_stats"}`` (float32 numpy arrays).
      notes: the model file's training notes (``val_f1``, ``steps``, ``sha256``, ...).
      path: where it was loaded from.
    """

    def __init__(self, config: ml_collections.ConfigDict, variables: dict, notes: dict | None = None,
                 path: str = "", batch_size: int = 16):
        from jaxcomp.ecg.task import ECGTask, _without_stage

        if set(variables) != {"params", "batch_stats"}:
            raise ECGDataError(f"{path or 'model'}: an ECG model file holds 'params' and 'batch_stats', "
                               f"not {sorted(variables)}")
        self.config = _without_stage(config)
        self.task = ECGTask(self.config)
        _check_variables(self.task, variables, path)
        self.variables = variables
        self.notes = dict(notes or {})
        self.path = path
        self.batch_size = int(batch_size)
        task = self.task

        @jax.jit
        def logits(variables, signal, length):
            feats, frames = task.features({"signal": signal, "length": length})
            return task.apply(variables["params"], variables["batch_stats"], feats, frames, False)

        self._logits = logits
        self._device_variables = jax.tree.map(jnp.asarray, variables)

    @property
    def model_name(self) -> str:
        return str(self.config.model.name)

    def predict_proba(self, signals: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities of N, A, O, ~ for each recording: float32 ``[n, 4]`` (rows sum to 1).

        ``signals``: float mV arrays ``[length_i]`` (or ``[1, length_i]``, ``[length_i, 1]``) at
        300 Hz, each at least 64 finite samples; anything else (several leads included) raises
        :class:`jaxcomp.ecg.data.ECGDataError` naming the recording's index. They are padded to a
        multiple of 15 s and batched by padded length (masking makes the result
        independent of the padding), ``batch_size`` at a time. The per-recording standardisation removes
        a gain down to ~0.05 mV of amplitude; a recording whose standard deviation is below
        :data:`LOW_AMPLITUDE_MV` (e.g. one in volts) gets a ``UserWarning``: below it the spectrogram's
        absolute log floor shapes the features and the probabilities depend on the scale.
        """
        if isinstance(signals, np.ndarray) and signals.ndim < 2 and signals.dtype != object:  # one given bare
            raise ECGDataError(f"predict_proba expects a list of recordings, got one array of shape "
                               f"{signals.shape}: pass [signal]")
        n = len(signals)
        out = np.zeros((n, len(CLASSES)), np.float32)
        if n == 0:
            return out
        arrays = [check_recording(str(i), s, FS) for i, s in enumerate(signals)]  # one lead, finite, long enough
        low = [i for i, s in enumerate(arrays) if float(np.std(s.astype(np.float64))) < LOW_AMPLITUDE_MV]
        if low:
            warnings.warn(f"recordings {low[:10]}{' ...' if len(low) > 10 else ''} have a standard deviation below "
                          f"{LOW_AMPLITUDE_MV} mV, far below an ECG's in mV (recordings in volts? multiply by "
                          f"1000): at such amplitudes the spectrogram's log floor sets part of the features and "
                          f"the probabilities change with the scale", stacklevel=2)
        step = int(PAD_SECONDS * FS)
        padded = np.array([-(-len(s) // step) * step for s in arrays])
        padded = -(-padded // NOVERLAP) * NOVERLAP
        for width in np.unique(padded):
            members = np.flatnonzero(padded == width)
            # a batch size far above the recordings allocates no filler: rows are the recordings rounded up
            # to a power of two (few compiled shapes across calls), at most batch_size
            rows = min(self.batch_size, 1 << (len(members) - 1).bit_length())
            for start in range(0, len(members), rows):
                idx = members[start:start + rows]
                signal = np.zeros((rows, int(width)), np.float32)
                length = np.full((rows,), MIN_SAMPLES, np.int32)  # filler rows: ignored
                for row, i in enumerate(idx):
                    signal[row, :len(arrays[i])] = arrays[i]
                    length[row] = len(arrays[i])
                z = np.asarray(self._logits(self._device_variables, signal, length), np.float64)[:len(idx)]
                z = np.exp(z - z.max(-1, keepdims=True))
                out[idx] = (z / z.sum(-1, keepdims=True)).astype(np.float32)
        return out

    def predict(self, signals: Sequence[np.ndarray]) -> list[str]:
        """The most probable class (``N``, ``A``, ``O`` or ``~``) of each recording."""
        return [CLASSES[i] for i in self.predict_proba(signals).argmax(-1)]


def _check_variables(task: Any, variables: dict, path: str) -> None:
    """:class:`jaxcomp.modelfile.ModelLoadError` unless ``variables`` have the tree and shapes the task's
    model (its config's ``model`` block) makes: a ``.json`` edited or paired with another model's
    ``.msgpack`` failed inside Flax at the first recording (ScopeParamShapeError), after the command had
    reported the records before it."""
    from jaxcomp.modelfile import check_params

    def init(rng: jax.Array) -> Any:  # abstract: shapes only, nothing computed
        feats, frames = task.features({"signal": jnp.zeros((1, 30 * FS), jnp.float32),
                                       "length": jnp.full((1,), 30 * FS, jnp.int32)})
        return task.model.init({"params": rng, "dropout": rng}, feats, frames, train=False)

    with jax.enable_x64(False):
        want = jax.eval_shape(init, jax.random.PRNGKey(0))
    check_params({k: variables[k] for k in ("params", "batch_stats")},
                 {k: want[k] for k in ("params", "batch_stats")}, path or "model")


def load_classifier(path: str | None = None, batch_size: int = 16) -> ECGClassifier:
    """An :class:`ECGClassifier` from a model file or workdir (default: the shipped model, :data:`DEFAULT_MODEL`).

    Raises:
      jaxcomp.modelfile.ModelLoadError: the path does not hold an ECG model.
    """
    from jaxcomp.modelfile import ModelLoadError, load_model

    path = path or DEFAULT_MODEL
    if os.path.isdir(path):
        from jaxcomp.ecg.task import best_model

        path = best_model(path)
    if os.path.isdir(path):  # a workdir without best.msgpack: its latest checkpoint
        from jaxcomp.modelfile import load_workdir

        config, variables, notes = load_workdir(path, batch_stats=True, task="ecg")
        variables = jax.tree.map(lambda a: np.asarray(a, np.float32) if np.issubdtype(np.asarray(a).dtype,
                                                                                      np.floating) else a, variables)
    else:
        config, variables, notes = load_model(path, task="ecg")
    if not isinstance(variables, dict) or set(variables) != {"params", "batch_stats"}:
        raise ModelLoadError(f"{path}: not an exported ECG classifier (expected 'params' and 'batch_stats')")
    return ECGClassifier(config, variables, notes, path, batch_size)


def model_summary(clf: ECGClassifier) -> dict[str, Any]:
    """Name, parameter count and training notes of a classifier (for the prediction command's header)."""
    count = int(sum(np.asarray(x).size for x in jax.tree.leaves(clf.variables["params"])))
    return dict(path=clf.path, model=clf.model_name, params=count,
                val_f1=clf.notes.get("val_f1"), steps=clf.notes.get("steps"), data=clf.notes.get("data"))


__all__ = ["DEFAULT_MODEL", "PRETRAINED_DIR", "ECGClassifier", "load_classifier", "model_summary"]
