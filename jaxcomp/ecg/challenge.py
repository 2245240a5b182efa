"""Reading and writing single recordings in the PhysioNet/CinC Challenge 2017 format, for prediction.

A challenge record is two files (as in ``training2017/`` and the challenge's hidden test set):

* ``A00001.hea`` — a WFDB header: the record line ``A00001 1 300 9000`` (name, 1 signal,
  sampling rate in Hz, number of samples) and one signal line
  ``A00001.mat 16+24 1000/mV 16 0 -127 0 0 ECG`` (file, format, gain in ADC units per mV,
  resolution, ADC zero, first value, checksum, block size, description);
* ``A00001.mat`` — a MATLAB v4 file whose variable ``val`` holds the int16 ADC values, ``[1, n]``
  (or, as PhysioNet's other single-lead databases store it, a WFDB signal file in format 16 that
  the header names, e.g. ``A00001.dat 16 1000/mV ...``: little-endian int16; other formats are refused).

:func:`read_challenge_record` returns float32 millivolts ``(adc - baseline) / gain`` at 300 Hz:
a header with another sampling rate is resampled (polyphase, :func:`scipy.signal.resample_poly`)
unless ``resample=False``. Every problem raises :class:`jaxcomp.ecg.data.ECGDataError` (a
``ValueError``) that names the record and the file: a missing or unparseable header, a missing,
corrupt or truncated ``.mat``, no ``val`` variable, more than one lead, an empty signal, a length
that disagrees with the header, NaN/inf samples, an implausible sampling rate, and a recording
shorter than one spectrogram window (64 samples at 300 Hz).

:func:`write_challenge_record` / :func:`write_challenge_directory` write the same format (the
tests use them; they also export synthetic sets with a ``REFERENCE.csv`` that
``data.source=challenge`` reads). :func:`find_records` lists the records of a path given on a
command line (a ``.mat``, a ``.hea``, a record name without extension, or a directory).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from jaxcomp.ecg.data import CLASSES, FS, MIN_SAMPLES, ECGDataError, check_recording, read_header

MIN_FS, MAX_FS = 50.0, 20_000.0  # sampling rates outside these are treated as a broken header


def _record_base(path: str) -> str:
    """``path`` without its ``.hea``, ``.mat`` or ``.dat`` (a WFDB signal file), in any case."""
    return path[:-4] if path.lower().endswith((".hea", ".mat", ".dat")) else path


def _beside(base: str, ext: str) -> str:
    """``base + ext`` (``ext`` lower case), or the upper-case ``base + EXT`` where only that exists."""
    return base + ext.upper() if not os.path.isfile(base + ext) and os.path.isfile(base + ext.upper()) else base + ext


# factors from a WFDB header's amplitude unit to millivolts (the unit is matched in lower case)
_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}


def read_challenge_header(path: str) -> dict:
    """The header of record ``path`` (``.hea``, ``.mat`` or none), parsed by :func:`jaxcomp.ecg.data.read_header`.

    Returns ``dict(record, fs, n_samples, file, fmt, gain, baseline, units)``.

    Raises:
      ECGDataError: no ``.hea`` beside the record, an unparseable header, not one signal, or a
        sampling rate outside 50 Hz .. 20 kHz.
    """
    base = _record_base(path)
    name = os.path.basename(base)
    hea = _beside(base, ".hea")
    if not os.path.isfile(hea):
        raise ECGDataError(f"record {name}: no header {hea} (a challenge record is {name}.hea + {name}.mat)")
    try:
        header = read_header(hea)
    except ECGDataError:
        raise
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise ECGDataError(f"record {name}: unparseable header {hea}: {type(e).__name__}: {e}") from e
    if not MIN_FS <= header["fs"] <= MAX_FS:
        raise ECGDataError(f"record {name}: sampling rate {header['fs']:g} Hz in {hea} is not plausible "
                           f"(expected {FS} Hz, as the challenge's records)")
    return header


def resample_to(signal: np.ndarray, fs: float, target_fs: int = FS) -> np.ndarray:
    """``signal`` (float ``[n]``) resampled from ``fs`` to ``target_fs`` Hz (polyphase, anti-aliased); float32.

    The ratio is approximated by a fraction with a denominator of at most 1000 (exact for
    integer rates such as 250, 360, 500 or 1000 Hz).
    """
    if fs == target_fs:
        return np.asarray(signal, np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    return resample_poly(np.asarray(signal, np.float64), ratio.numerator, ratio.denominator).astype(np.float32)


def _read_format16(path: str, fmt: str, name: str) -> np.ndarray:
    """The ADC values (float64 ``[n]``) of a single-lead WFDB signal file in format 16 (little-endian
    int16; ``16+N``: after N bytes), the one other format a single-lead record is commonly stored in."""
    base, _, offset = fmt.partition("+")
    if base != "16" or not (offset or "0").isdigit():
        raise ECGDataError(f"record {name}: {path} is a WFDB signal file in format {fmt!r}; read are CinC 2017 "
                           f"'.mat' files and single-lead format-16 signal files (convert others, e.g. with "
                           f"wfdb's rdrecord and wrsamp(fmt=['16']))")
    raw = np.fromfile(path, np.uint8)[int(offset or 0):]
    if raw.size % 2:
        raise ECGDataError(f"record {name}: {path} holds {raw.size} bytes after its offset, not whole 16-bit samples "
                           f"(truncated?)")
    adc = raw.view("<i2").astype(np.float64)
    gaps = adc == -32768  # WFDB's invalid-sample value of format 16: a gap in the recording, not -32768 ADC units
    if gaps.any():
        raise ECGDataError(f"record {name}: {int(gaps.sum())} samples of {path} hold WFDB's invalid-sample value "
                           f"-32768 (a gap in the recording; first at sample {int(np.argmax(gaps))}): cut the "
                           f"recording at the gap or fill it before classifying")
    return adc


def read_challenge_record(path: str, resample: bool = True, target_fs: int = FS) -> np.ndarray:
    """One challenge record as float32 millivolts ``[n]`` at ``target_fs`` Hz.

    Args:
      path: ``A00001.mat``, ``A00001.hea`` or ``A00001`` (the other file is found beside it).
      resample: resample a record whose header gives another sampling rate; with ``False``
        such a record is an error.
      target_fs: the rate the models expect (300 Hz).

    Raises:
      ECGDataError: naming the record, for any of the problems listed in the module docstring.
    """
    from scipy.io import loadmat

    base = _record_base(path)
    name = os.path.basename(base)
    header = read_challenge_header(base)
    if header["fs"] != target_fs and not resample:
        raise ECGDataError(f"record {name}: sampling rate {header['fs']:g} Hz, expected {target_fs} Hz "
                           f"(resample it first: read_challenge_record(path, resample=True), or on the command "
                           f"line leave out --no-resample; the models' spectrogram front end assumes {target_fs} Hz)")
    mat = os.path.join(os.path.dirname(base), header["file"])
    if not os.path.isfile(mat):
        if os.path.isfile(_beside(base, ".mat")):
            mat = _beside(base, ".mat")
        else:
            raise ECGDataError(f"record {name}: no signal file {mat} (the header names {header['file']!r})")
    if os.path.getsize(mat) == 0:
        raise ECGDataError(f"record {name}: {mat} is empty (0 bytes)")
    if not mat.lower().endswith(".mat"):  # a WFDB signal file, as PhysioNet's other databases ship
        adc = _read_format16(mat, header["fmt"], name)
    else:
        try:
            content = loadmat(mat)
        except Exception as e:  # scipy raises ValueError, TypeError, OSError, ... for broken files
            raise ECGDataError(f"record {name}: {mat} is not a readable MATLAB file (corrupt or truncated?): "
                               f"{type(e).__name__}: {e}") from e
        if "val" not in content:
            keys = sorted(k for k in content if not k.startswith("__"))
            raise ECGDataError(f"record {name}: {mat} has no variable 'val' (it has: {', '.join(keys) or 'none'})")
        val = np.asarray(content["val"])
        if val.ndim != 2 or (val.size and 1 not in val.shape):
            raise ECGDataError(f"record {name}: 'val' in {mat} has shape {val.shape}; expected one lead, [1, n]")
        if not (np.issubdtype(val.dtype, np.number) and not np.iscomplexobj(val)):
            raise ECGDataError(f"record {name}: 'val' in {mat} holds {val.dtype} values, not numbers")
        adc = val.reshape(-1).astype(np.float64)
    if adc.size == 0:
        raise ECGDataError(f"record {name}: empty signal (0 samples) in {mat}")
    if header["n_samples"] > 0 and len(adc) != header["n_samples"]:  # WFDB: 0 or none = not given
        raise ECGDataError(f"record {name}: {len(adc)} samples in {mat} but the header says {header['n_samples']} "
                           f"(a truncated or mismatched file)")
    bad = ~np.isfinite(adc)
    if bad.any():
        raise ECGDataError(f"record {name}: {int(bad.sum())} NaN/inf samples (first at sample {int(np.argmax(bad))})")
    units = header["units"].lower()
    if units not in _TO_MV:
        raise ECGDataError(f"record {name}: the header's amplitude unit {header['units']!r} is not one of "
                           f"mV, uV, V, nV (WFDB's gain/unit field); the models read millivolts")
    signal = (adc - header["baseline"]) / header["gain"] * _TO_MV[units]
    if header["fs"] != target_fs:
        if len(signal) * target_fs / header["fs"] < MIN_SAMPLES:
            raise ECGDataError(f"record {name}: {len(signal)} samples at {header['fs']:g} Hz "
                               f"({len(signal) / header['fs']:.3f} s) is shorter than one spectrogram window "
                               f"of {MIN_SAMPLES} samples at {target_fs} Hz")
        signal = resample_to(signal, header["fs"], target_fs)
    return check_recording(name, signal, target_fs, target_fs)


def write_challenge_record(directory: str, name: str, signal_mv: np.ndarray, fs: float = FS,
                           gain: float = 1000.0) -> tuple[str, str]:
    """Writes ``signal_mv`` (float ``[n]``, mV at ``fs`` Hz) as ``name.hea`` + ``name.mat``; returns both paths.

    ``val`` is the int16 ADC signal ``round(signal * gain)`` (clipped to int16), ``[1, n]``, in
    a MATLAB v4 file; the header is the challenge's (``16+24`` format, ``gain/mV``, checksum).
    """
    from scipy.io import savemat

    adc = np.clip(np.round(np.asarray(signal_mv, np.float64).reshape(-1) * gain), -32768, 32767).astype(np.int16)
    os.makedirs(directory, exist_ok=True)
    mat, hea = os.path.join(directory, name + ".mat"), os.path.join(directory, name + ".hea")
    savemat(mat, {"val": adc[None, :]}, format="4")
    checksum = int(adc.astype(np.int64).sum()) % 65536
    checksum = checksum - 65536 if checksum >= 32768 else checksum
    with open(hea, "w") as f:
        f.write(f"{name} 1 {fs:g} {len(adc)}\n")
        f.write(f"{name}.mat 16+24 {gain:g}/mV 16 0 {int(adc[0]) if len(adc) else 0} {checksum} 0 ECG\n")
    return hea, mat


def write_challenge_directory(directory: str, signals: Sequence[np.ndarray], labels: Sequence[int] | None = None,
                              names: Sequence[str] | None = None, fs: float = FS) -> list[str]:
    """Writes recordings as a challenge directory: ``A00001.hea/.mat`` ... and, with ``labels``
    (indices into ``N, A, O, ~``), ``REFERENCE.csv``. Returns the record names."""
    names = list(names) if names is not None else [f"A{i + 1:05d}" for i in range(len(signals))]
    if len(names) != len(signals) or (labels is not None and len(labels) != len(signals)):
        raise ValueError(f"{len(signals)} signals, {len(names)} names and "
                         f"{'no' if labels is None else len(labels)} labels do not match")
    for name, signal in zip(names, signals):
        write_challenge_record(directory, name, signal, fs)
    if labels is not None:
        with open(os.path.join(directory, "REFERENCE.csv"), "w") as f:
            f.write("".join(f"{n},{CLASSES[int(y)]}\n" for n, y in zip(names, labels)))
    return names


def find_records(path: str) -> list[str]:
    """Record paths (without extension) named by ``path``: a ``.mat``/``.hea`` file, a record name, or a
    directory (every record in it that has a ``.hea`` or a ``.mat``, sorted by name).

    Raises:
      ECGDataError: ``path`` does not exist, or a directory holds no records.
    """
    if os.path.isdir(path):
        names = sorted({f[:-4] for f in os.listdir(path) if f.lower().endswith((".hea", ".mat"))})
        if not names:
            raise ECGDataError(f"{path}: no challenge records (.hea + .mat files) in this directory")
        return [os.path.join(path, n) for n in names]
    base = _record_base(path)
    if not (os.path.isfile(path) or os.path.isfile(_beside(base, ".hea")) or os.path.isfile(_beside(base, ".mat"))):
        raise ECGDataError(f"{path}: no such record (expected RECORD.mat with RECORD.hea beside it, or a directory)")
    return [base]


__all__ = [
    "find_records", "read_challenge_header", "read_challenge_record", "resample_to", "write_challenge_directory",
    "write_challenge_record",
]
