"""ECG recordings: the PhysioNet/CinC Challenge 2017 format, checks, folds and padded batches.

The challenge's training set (``training2017/``) holds one WFDB record per recording —
``A00001.hea`` (a text header) and ``A00001.mat`` (a MATLAB v4 file whose variable
``val`` is the int16 ADC signal, shape ``[1, n]``) — and ``REFERENCE.csv`` with lines
``A00001,N``. Labels: ``N`` normal sinus rhythm, ``A`` atrial fibrillation, ``O`` other
rhythm, ``~`` too noisy to classify. Signals are single-lead, 300 Hz, gain 1000 ADC/mV.

Everything here is host-side numpy. Batches are padded to a few fixed *bucket* lengths
(so the jitted steps compile once per bucket) and carry the true ``length`` of every
recording; the model masks what lies beyond it.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np

from jaxcomp.checks import index_array, is_whole
from jaxcomp.data.images import DataError, eval_batches_from_arrays

CLASSES = ("N", "A", "O", "~")
CLASS_NAMES = ("normal", "AF", "other", "noisy")
FS = 300               # Hz, the challenge's (and the models') sampling rate
NPERSEG, NOVERLAP = 64, 32  # the spectrogram front end; a recording needs at least one window
MIN_SAMPLES = NPERSEG


class ECGDataError(DataError):
    """A recording, header, label file or data setting that cannot be used."""


@dataclasses.dataclass
class ECGDataset:
    """Labelled single-lead recordings.

    Attributes:
      names: record names (``A00001`` ...), ``[n]``.
      signals: float32 arrays in mV, each ``[length_i]`` at ``fs`` Hz.
      labels: int32 ``[n]``, indices into :data:`CLASSES`.
      fs: sampling rate (Hz).
      source: a short description (``"synthetic (seed 0)"``, a directory).
    """

    names: list[str]
    signals: list[np.ndarray]
    labels: np.ndarray
    fs: int = FS
    source: str = ""

    def __post_init__(self) -> None:
        labels = self.labels = np.asarray(self.labels)
        if not len(self.names) == len(self.signals) == len(labels) or labels.ndim != 1:
            raise ECGDataError(f"ECGDataset: {len(self.names)} names, {len(self.signals)} signals and labels of shape "
                               f"{labels.shape}: one name, signal and label per recording")
        index_array(labels, len(CLASSES), "ECGDataset labels", "class indices",
                    f"0..{len(CLASSES) - 1} ({', '.join(CLASSES)})", ECGDataError)
        for name, s in zip(self.names, self.signals):
            if np.ndim(s) != 1 or not len(s) or not np.all(np.isfinite(s)):
                raise ECGDataError(f"ECGDataset: recording {name} must be a non-empty 1-D array of finite samples "
                                   f"(mV), got shape {np.shape(s)}" + ("" if np.ndim(s) != 1 or not len(s)
                                                                       else " with NaN or inf"))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.signals], np.int64)

    def subset(self, idx: Sequence[int]) -> ECGDataset:
        idx = [int(i) for i in idx]
        return ECGDataset([self.names[i] for i in idx], [self.signals[i] for i in idx],
                          self.labels[idx], self.fs, self.source)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(CLASSES))

    def digest(self) -> str:
        """sha256 (hex, 16 digits) of the names, labels, rate and samples: what a cross-validation row
        was computed on, so that rows of a changed ``REFERENCE.csv`` or re-exported recordings are not
        mixed with new ones under the same config."""
        import hashlib

        h = hashlib.sha256(f"{self.fs}\n{len(self)}\n".encode())
        for name, label, s in zip(self.names, self.labels, self.signals):
            h.update(f"{name},{int(label)},{len(s)}\n".encode())
            h.update(np.ascontiguousarray(s, np.float32).tobytes())
        return h.hexdigest()[:16]


# the largest |sample| a recording may hold, in mV: surface ECGs stay within ~10 mV, so this only
# refuses values that are not millivolts of an ECG (and would overflow the spectrogram's power)
MAX_ABS_MV = 1e6


def check_recording(name: str, signal: np.ndarray, fs: float, expected_fs: int = FS) -> np.ndarray:
    """Validates one recording and returns it as float32 ``[n]``.

    Raises:
      ECGDataError: naming the record, for a wrong sampling rate, a signal that is not
        one-dimensional, non-finite values, values beyond :data:`MAX_ABS_MV` (no ECG reaches them:
        a wrong gain or unit, or not a recording; the spectrogram of such values overflows to NaN),
        or fewer samples than one spectrogram window.
    """
    if fs != expected_fs:
        raise ECGDataError(f"record {name}: sampling rate {fs:g} Hz, expected {expected_fs} Hz "
                           f"(resample it first; the models' spectrogram front end assumes {expected_fs} Hz)")
    signal = np.asarray(signal)
    if signal.ndim == 2 and 1 in signal.shape:
        signal = signal.reshape(-1)
    if signal.ndim != 1:
        raise ECGDataError(f"record {name}: expected a single-lead signal, got shape {signal.shape}")
    if signal.dtype.kind not in "iuf":  # bool, complex, strings, objects: not samples in mV
        raise ECGDataError(f"record {name}: the samples must be real numbers (mV), got dtype {signal.dtype}")
    signal = signal.astype(np.float32)
    bad = ~np.isfinite(signal)
    if bad.any():
        raise ECGDataError(f"record {name}: {int(bad.sum())} NaN/inf samples (first at sample {int(np.argmax(bad))})")
    peak = float(np.abs(signal).max()) if signal.size else 0.0
    if peak > MAX_ABS_MV:
        raise ECGDataError(f"record {name}: samples up to {peak:.3g} mV, beyond {MAX_ABS_MV:g} mV, which no ECG "
                           f"reaches (a wrong gain or unit in the header, or not a recording)")
    if len(signal) < MIN_SAMPLES:
        raise ECGDataError(f"record {name}: {len(signal)} samples ({len(signal) / expected_fs:.3f} s) is shorter "
                           f"than one spectrogram window of {MIN_SAMPLES} samples")
    return signal


def label_index(name: str, label: str) -> int:
    """Index of a challenge label (``N``, ``A``, ``O``, ``~``); ECGDataError for anything else."""
    label = label.strip()
    if label not in CLASSES:
        raise ECGDataError(f"record {name}: unknown label {label!r}; expected one of {', '.join(CLASSES)}")
    return CLASSES.index(label)


# --------------------------------------------------------------------------------------
# WFDB headers and MATLAB v4 signal files (the challenge's format)
# --------------------------------------------------------------------------------------


def read_header(path: str) -> dict:
    """Parses a single-signal WFDB ``.hea`` file.

    Returns:
      ``dict(record, fs, n_samples, file, fmt, gain, baseline, units)``; ``gain`` in ADC
      units per physical unit, ``baseline`` the ADC value of 0 (WFDB: ``gain(baseline)/units``,
      baseline defaulting to the ADC zero).
    """
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    except OSError as e:
        raise ECGDataError(f"record {name}: cannot read header {path}: {e}") from e
    if len(lines) < 2:
        raise ECGDataError(f"record {name}: header {path} has no signal line")
    rec = lines[0].split()
    try:
        n_sig = int(rec[1])
        fs = float(rec[2].split("/")[0]) if len(rec) > 2 else 250.0  # WFDB's default rate
        n_samples = int(rec[3]) if len(rec) > 3 else -1
    except (IndexError, ValueError) as e:
        raise ECGDataError(f"record {name}: cannot parse record line {lines[0]!r} of {path}") from e
    if n_sig != 1:
        raise ECGDataError(f"record {name}: {n_sig} signals in {path}; CinC 2017 records are single-lead")
    sig = lines[1].split()
    gain, baseline, units = 200.0, None, "mV"  # WFDB defaults
    if len(sig) > 2:
        g = sig[2]
        if "/" in g:
            g, units = g.split("/", 1)
        if "(" in g:
            g, b = g.rstrip(")").split("(")
            baseline = int(b)
        gain = float(g) or 200.0
        if not math.isfinite(gain):
            raise ECGDataError(f"record {name}: gain {sig[2]!r} in {path} is not a finite number")
    adc_zero = int(sig[4]) if len(sig) > 4 else 0
    return dict(record=rec[0], fs=fs, n_samples=n_samples, file=sig[0], fmt=sig[1] if len(sig) > 1 else "",
                gain=gain, baseline=adc_zero if baseline is None else baseline, units=units)


def read_record(path: str, expected_fs: int = FS) -> np.ndarray:
    """Reads a challenge record (``path`` with or without ``.hea``/``.mat``) as float32 mV ``[n]``.

    The training sets' reader: :func:`jaxcomp.ecg.challenge.read_challenge_record` without
    resampling, so training data and the records a trained model classifies pass the same checks.

    Raises:
      ECGDataError: naming the record, for missing, empty or unreadable files, an unparseable
        header, a wrong sampling rate, more than one lead, a length that disagrees with the header,
        NaNs, or a record shorter than one spectrogram window.
    """
    from jaxcomp.ecg.challenge import read_challenge_record  # it builds on this module

    return read_challenge_record(path, resample=False, target_fs=expected_fs)


def write_record(directory: str, name: str, signal_mv: np.ndarray, fs: int = FS, gain: float = 1000.0) -> None:
    """Writes ``signal_mv`` as a challenge record ``name.hea`` + ``name.mat`` (int16 ADC, MATLAB v4).

    Used to export synthetic sets in the challenge's format and by the reader's tests. Raises
    :class:`ECGDataError` for a signal :func:`check_recording` refuses (NaN samples were written as 0),
    a gain that is not a positive number, or samples that int16 cannot hold at that gain (they were
    clipped without a word: lower the gain).
    """
    from scipy.io import savemat

    signal_mv = check_recording(name, signal_mv, fs, expected_fs=fs)
    if not (isinstance(gain, (int, float, np.integer, np.floating)) and not isinstance(gain, bool)
            and np.isfinite(gain) and gain > 0):
        raise ECGDataError(f"record {name}: the gain must be a positive number of ADC units per mV, got {gain!r}")
    adc = np.round(signal_mv.astype(np.float64) * gain)
    if adc.size and np.abs(adc).max() > 32767:
        raise ECGDataError(f"record {name}: {float(np.abs(signal_mv).max()):g} mV does not fit int16 at gain "
                           f"{gain:g}/mV (at most {32767 / gain:g} mV); lower the gain")
    adc = adc.astype(np.int16)
    os.makedirs(directory, exist_ok=True)
    savemat(os.path.join(directory, name + ".mat"), {"val": adc[None, :]}, format="4")
    checksum = int(adc.astype(np.int64).sum()) % 65536
    checksum = checksum - 65536 if checksum >= 32768 else checksum
    with open(os.path.join(directory, name + ".hea"), "w") as f:
        f.write(f"{name} 1 {fs:g} {len(adc)}\n")
        f.write(f"{name}.mat 16+24 {gain:g}/mV 16 0 {int(adc[0]) if len(adc) else 0} {checksum} 0 ECG\n")


def read_reference(path: str) -> list[tuple[str, int]]:
    """``REFERENCE.csv`` as ``[(record, label index)]``; ECGDataError names a bad line's record."""
    out = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
            for row in csv.reader(f):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2:
                    raise ECGDataError(f"{path}: line {row!r} is not 'record,label'")
                out.append((row[0].strip(), label_index(row[0].strip(), row[1])))
    except OSError as e:
        raise ECGDataError(f"cannot read {path}: {e}") from e
    seen: dict[str, int] = {}
    for i, (name, _) in enumerate(out):
        # A00001 and A00001.mat are one record (the reader finds the other file beside either)
        key = name[:-4] if name.lower().endswith((".hea", ".mat", ".dat")) else name
        if key in seen:  # one recording, two labels, perhaps in two folds
            raise ECGDataError(f"{path}: record {key} is listed twice (rows {seen[key] + 1} and {i + 1})")
        seen[key] = i
    return out


def load_challenge(path: str, limit: int = 0, expected_fs: int = FS, progress: bool = False) -> ECGDataset:
    """Reads a CinC 2017 directory (``REFERENCE.csv`` + ``*.hea``/``*.mat``); ``limit`` > 0 reads the first ones."""
    reference = os.path.join(path, "REFERENCE.csv")
    if not os.path.isdir(path):
        raise ECGDataError(f"data.path {path!r} is not a directory (expected the challenge's training2017/)")
    if not os.path.isfile(reference):
        raise ECGDataError(f"{path} has no REFERENCE.csv (expected the challenge's training2017/ directory)")
    if limit < 0:
        raise ECGDataError(f"limit must be >= 0 records (0: all), got {limit}")
    rows = read_reference(reference)
    if limit:
        rows = rows[:limit]
    if not rows:
        raise ECGDataError(f"{reference} lists no records")
    iterator = rows
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(rows, desc="reading records", mininterval=5.0)
    signals = [read_record(os.path.join(path, name), expected_fs) for name, _ in iterator]
    return ECGDataset([n for n, _ in rows], signals, np.array([y for _, y in rows], np.int32), expected_fs, path)


# --------------------------------------------------------------------------------------
# Folds and batches
# --------------------------------------------------------------------------------------


def stratified_kfold(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index splits; each class is spread evenly over the test folds.

    Deterministic in ``seed``: the members of every class are shuffled with
    ``default_rng(seed)`` and dealt round-robin to the folds.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind == "O" and all(isinstance(v, str) for v in labels.ravel()):
        labels = labels.astype(str)
    if labels.ndim != 1 or labels.dtype.kind not in "iuUS":  # float labels may be NaN, which never equals a class
        raise ECGDataError(f"labels must be one integer or string label per recording [N], got "
                           f"{labels.dtype} {labels.shape}")
    if not is_whole(k) or k < 2:
        raise ECGDataError(f"need at least 2 folds, got {k!r}")
    if len(labels) < k:
        raise ECGDataError(f"{len(labels)} recordings cannot be split into {k} folds")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # so that small classes do not all start at fold 0
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def bucket_lengths(lengths: np.ndarray, buckets: Sequence[float], fs: int = FS) -> np.ndarray:
    """Padded lengths (samples): the configured bucket edges (seconds) plus one that fits the longest."""
    edges = sorted({int(round(b * fs)) for b in buckets})
    longest = int(np.max(lengths))
    edges = [e for e in edges if e < longest] + [-(-longest // NOVERLAP) * NOVERLAP]
    return np.array(edges, np.int64)


def pad_batch(signals: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """``[B, length]`` float32 zero-padded signals (longer ones cut) and int32 lengths ``[B]``."""
    out = np.zeros((len(signals), length), np.float32)
    lengths = np.zeros(len(signals), np.int32)
    for i, s in enumerate(signals):
        n = min(len(s), length)
        out[i, :n] = s[:n]
        lengths[i] = n
    return out, lengths


def class_weights(labels: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Per-class loss weights ``(n / (K n_c)) ** power`` (1.0: sklearn's 'balanced'; 0: none)."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (len(CLASSES) * np.maximum(counts, 1)), 0.0) ** power
    return w.astype(np.float32)


def check_indices(name: str, idx: np.ndarray, n: int) -> np.ndarray:
    """``idx`` as ``int64 [k]`` recording indices in ``0 .. n - 1`` (:func:`jaxcomp.checks.index_array`)."""
    return index_array(idx, n, name, "indices", f"the data set's {n} recordings", ECGDataError).astype(np.int64)


class ECGBatches:
    """Length-bucketed training batches and fixed-shape evaluation batches (the trainer's ``Batches``).

    Training batch ``step`` draws a bucket (with probability proportional to the number
    of training recordings in it) and then ``batch_size`` recordings of that bucket, all
    from ``default_rng([seed, step, process_index])``: a resumed run sees the same batches.

    A batch: ``signal`` float32 ``[B, L]`` (mV, zero beyond ``length``), ``length`` int32
    ``[B]``, ``label`` int32 ``[B]``, ``weight`` float32 ``[B]`` (class weight of the
    label, from the training split's class frequencies).
    """

    def __init__(self, dataset: ECGDataset, train_idx: np.ndarray, eval_idx: np.ndarray, batch_size: int,
                 seed: int = 0, buckets: Sequence[float] = (15.0, 30.0), class_weight_power: float = 1.0,
                 process_index: int = 0, process_count: int = 1):
        for name, v in (("batch_size", batch_size), ("process_count", process_count)):
            if not is_whole(v) or v < 1:
                raise ECGDataError(f"{name} must be a positive integer, got {v!r}")
        if not is_whole(process_index) or not 0 <= process_index < process_count:
            raise ECGDataError(f"process_index must be an integer in 0..{process_count - 1}, got {process_index!r}")
        if batch_size % process_count:
            raise ECGDataError(f"batch size {batch_size} is not divisible by {process_count} hosts")
        if len(train_idx) == 0:
            raise ECGDataError("no training recordings")
        if not all(isinstance(b, (int, float, np.number)) and not isinstance(b, bool) and 0 < b < np.inf
                   for b in buckets):
            raise ECGDataError(f"buckets must be positive, finite lengths in seconds, got {tuple(buckets)!r}")
        self.dataset = dataset
        self.train_idx = check_indices("train_idx", train_idx, len(dataset))
        self.eval_idx = check_indices("eval_idx", eval_idx, len(dataset))
        self.batch_size, self.seed = batch_size, seed
        self.local_batch_size = batch_size // process_count
        self.process_index, self.process_count = process_index, process_count
        self.edges = bucket_lengths(dataset.lengths, buckets, dataset.fs)
        self.weights = class_weights(dataset.labels[self.train_idx], class_weight_power)
        bucket_of = np.searchsorted(self.edges, dataset.lengths[self.train_idx])
        self.train_buckets = [self.train_idx[bucket_of == b] for b in range(len(self.edges))]
        sizes = np.array([len(m) for m in self.train_buckets], np.float64)
        self.bucket_probs = sizes / sizes.sum()

    def _batch(self, idx: np.ndarray, length: int) -> dict[str, np.ndarray]:
        signal, lengths = pad_batch([self.dataset.signals[i] for i in idx], length)
        labels = self.dataset.labels[idx].astype(np.int32)
        return {"signal": signal, "length": lengths, "label": labels, "weight": self.weights[labels]}

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, self.process_index])
        b = int(rng.choice(len(self.edges), p=self.bucket_probs))
        idx = rng.choice(self.train_buckets[b], self.local_batch_size)
        return self._batch(idx, int(self.edges[b]))

    def train_batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        step = start_step
        while True:
            yield self.train_batch(step)
            step += 1

    def eval_batches(self, batch_size: int, idx: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
        """The evaluation recordings (or ``idx``), bucket by bucket, with a ``valid`` mask."""
        idx = self.eval_idx if idx is None else np.asarray(idx)
        bucket_of = np.searchsorted(self.edges, self.dataset.lengths[idx])
        for b, length in enumerate(self.edges):
            members = idx[bucket_of == b]
            if len(members) == 0:
                continue
            for batch in eval_batches_from_arrays({"index": members}, batch_size, self.process_index,
                                                  self.process_count):
                out = self._batch(batch["index"], int(length))
                out["valid"] = batch["valid"]
                out["index"] = batch["index"].astype(np.int32)
                yield out


_DATASETS: dict = {}


def load_dataset(data: ml_collections.ConfigDict) -> ECGDataset:
    """The recordings a ``config.data`` block names (cached per process).

    ``data.source``: ``"synthetic"`` (``num_records`` generated with ``synthetic_seed``,
    lengths ``min_seconds``..``max_seconds``, classes N, A, O, ~ drawn with ``class_probs``, by
    ``data.generator``: ``"simple"`` Gaussian-wave beats or ``"realistic"`` real beats and noise from
    the template bank ``data.templates``, ``""`` = the shipped one; see jaxcomp.ecg.realistic)
    or ``"challenge"`` (``path`` = the CinC 2017 ``training2017/`` directory; ``limit`` > 0
    reads only the first records).
    """
    if data.source == "synthetic" and data.get("path"):  # a user's recordings silently replaced by generated ones
        raise ECGDataError(f"data.path={data.path!r} is read only with data.source='challenge' (this config's source "
                           f"is 'synthetic': --config.data.source=challenge to train on that directory)")
    if data.source == "synthetic":
        from jaxcomp.ecg.synthetic import synthesize_dataset

        probs = tuple(data.get("class_probs", ())) or (0.59, 0.09, 0.28, 0.04)
        generator, templates = data.get("generator", "simple"), data.get("templates", "")
        if generator not in ("simple", "realistic"):
            raise ECGDataError(f"unknown data.generator {generator!r}; use 'simple' or 'realistic'")
        key = ("synthetic", data.num_records, data.synthetic_seed, data.min_seconds, data.max_seconds, probs,
               generator, templates)
        if key not in _DATASETS:
            _DATASETS[key] = synthesize_dataset(data.num_records, data.synthetic_seed, probs, data.min_seconds,
                                                data.max_seconds, progress=data.num_records >= 2000,
                                                generator=generator, templates=templates)
    elif data.source == "challenge":
        if not data.path:
            raise ECGDataError("data.source='challenge' needs data.path=/path/to/training2017")
        key = ("challenge", os.path.abspath(data.path), data.limit)
        if key not in _DATASETS:
            _DATASETS[key] = load_challenge(data.path, data.limit, progress=True)
    else:
        raise ECGDataError(f"unknown data.source {data.source!r}; use 'synthetic' or 'challenge'")
    return _DATASETS[key]


def fold_indices(dataset: ECGDataset, data: ml_collections.ConfigDict, fold: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, eval_idx)`` int arrays of fold ``fold`` (default ``data.fold``) of the stratified
    ``data.num_folds``-fold split (seed ``data.fold_seed``); ``num_folds=0``: all recordings train,
    none evaluate."""
    fold = data.fold if fold is None else fold
    if not data.num_folds:
        return np.arange(len(dataset)), np.arange(0)
    if not 0 <= fold < data.num_folds:
        raise ECGDataError(f"data.fold must be in 0..{data.num_folds - 1}, got {fold}")
    return stratified_kfold(dataset.labels, data.num_folds, data.fold_seed)[fold]


def build_ecg_data(data: ml_collections.ConfigDict, fold: int | None = None) -> ECGBatches:
    """:class:`ECGBatches` for fold ``fold`` (default ``data.fold``) of ``data.num_folds`` stratified folds.

    The held-out fold is the evaluation set; ``num_folds=0`` trains on everything (no evaluation).
    """
    import jax

    dataset = load_dataset(data)
    train_idx, eval_idx = fold_indices(dataset, data, fold)
    return ECGBatches(dataset, train_idx, eval_idx, data.batch_size, data.seed, tuple(data.buckets),
                      data.class_weight_power, jax.process_index(), jax.process_count())
