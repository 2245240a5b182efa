"""Hand-crafted ECG features for a non-neural baseline: a QRS detector, RR statistics, spectra, amplitudes.

* :func:`detect_qrs` is a Pan-Tompkins-style R-peak detector (Pan & Tompkins, IEEE TBME 1985):
  zero-phase Butterworth band-pass 5-15 Hz, five-point derivative, squaring, 150 ms moving-window
  integration, then candidate peaks of the integrated signal (at least a refractory period of
  200 ms apart) classified by an adaptive threshold ``NPK + 0.25 (SPK - NPK)`` whose signal and
  noise levels are running averages (weight 1/8) of the peaks accepted / rejected, with a
  search-back at half the threshold when no beat was found for 1.66 mean RR intervals; a beat
  must also carry at least 1e-4 of the recording's largest integrated energy (else a flat lead's
  filter ringing around one artefact, learnt from silence, reads as a rhythm). Each
  detection is moved to the largest absolute band-passed sample within +-75 ms (the R peak,
  whatever the lead's polarity).
* :func:`record_features` turns one recording into a fixed-length float64 vector
  (:data:`FEATURE_NAMES`): RR statistics, beat-shape consistency, Welch band powers and
  amplitude statistics. It returns finite values for every single-lead recording (NaN or
  infinite samples are zeroed first), including an all-zero recording or one with 0-2 detected
  beats (RR statistics then fall back to the recording's duration and zeros).
* :func:`feature_matrix` stacks them for a list of recordings.

Everything is numpy/scipy on the host; about 5 ms per 30 s recording.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REFRACTORY_S = 0.200   # no two beats closer than this
INTEGRATION_S = 0.150  # moving-window integration width
BAND_HZ = (5.0, 15.0)  # QRS band-pass
_EPS = 1e-12

# Welch band edges (Hz) for the log band powers
_BANDS = ((0.0, 0.5), (0.5, 3.0), (3.0, 10.0), (10.0, 20.0), (20.0, 40.0), (40.0, 70.0), (70.0, 150.0))

FEATURE_NAMES: tuple[str, ...] = (
    # rhythm (RR intervals, seconds)
    "duration_s", "beats_per_s", "rr_mean", "rr_median", "rr_std", "rr_cv", "rr_mad_cv", "rmssd", "rmssd_norm",
    "pnn50", "pnn20", "rr_min_ratio", "rr_max_ratio", "rr_range_norm", "drr_mean_abs_norm", "rr_iqr_norm",
    # beat shape
    "template_corr_mean", "template_corr_p10", "frac_beats_corr_below_0.8", "r_amp_median", "r_amp_cv",
    # spectrum (Welch)
    *(f"logpow_{lo:g}_{hi:g}hz" for lo, hi in _BANDS), "logpow_total", "logspec_mean", "logspec_std",
    "spectral_entropy", "peak_freq_3_10hz",
    # amplitude
    "std", "robust_std", "p99_minus_p1", "skewness", "kurtosis", "frac_flat", "window_std_cv",
    "frac_quiet_windows", "frac_at_extremes",
)


def _bandpass(x: np.ndarray, fs: float, lo: float, hi: float, order: int = 2) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), len(x) - 1)
    return sosfiltfilt(sos, x, padlen=max(padlen, 0))


def _one_lead(signal, fs: float, name: str) -> np.ndarray:
    """``signal`` as float64 ``[n]`` (``[n]`` or ``[1, n]`` accepted); a ValueError names what is wrong
    with a signal of several leads, a non-real dtype or a sampling rate that is not > 0."""
    x = np.asarray(signal)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: the signal must be real numbers, got dtype {x.dtype}")
    if x.ndim > 1 and sum(d > 1 for d in x.shape) > 1:
        raise ValueError(f"{name}: expected one lead [n], got shape {x.shape}")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"{name}: the sampling rate fs must be > 0 Hz, got {fs!r}")
    return x.astype(np.float64).reshape(-1)


def qrs_energy(signal: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Pan-Tompkins front end: ``(band-passed [n], moving-window-integrated squared derivative [n])``, float64."""
    x = _one_lead(signal, fs, "qrs_energy")
    x = x - np.median(x) if len(x) else x
    bp = _bandpass(x, fs, *BAND_HZ)
    # five-point derivative (Pan-Tompkins): (-x[n-2] - 2x[n-1] + 2x[n+1] + x[n+2]) / 8 * fs
    d = np.convolve(bp, np.array([1.0, 2.0, 0.0, -2.0, -1.0]) * fs / 8.0, mode="same")
    w = max(int(round(INTEGRATION_S * fs)), 1)
    mwi = np.convolve(d * d, np.ones(w) / w, mode="same")  # centred: its peaks sit on the QRS
    return bp, mwi


def detect_qrs(signal: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices (int64 ``[beats]``, increasing) of a single-lead ECG ``[n]`` sampled at ``fs`` Hz.

    See the module docstring for the algorithm. Returns an empty array for recordings shorter
    than 0.5 s or without any energy in the QRS band. Raises ValueError for NaN or infinite
    samples (:func:`record_features` zeroes them first), several leads or ``fs <= 0``.
    """
    from scipy.signal import find_peaks

    x = _one_lead(signal, fs, "detect_qrs")
    if not np.all(np.isfinite(x)):
        raise ValueError("detect_qrs: the signal holds NaN or infinite samples")
    if len(x) < int(0.5 * fs):
        return np.zeros(0, np.int64)
    bp, mwi = qrs_energy(x, fs)
    if mwi.max() <= _EPS:
        return np.zeros(0, np.int64)
    refractory = int(round(REFRACTORY_S * fs))
    cand, _ = find_peaks(mwi, distance=refractory)
    if len(cand) == 0:
        return np.zeros(0, np.int64)
    heights = mwi[cand]
    # a beat carries at least 1e-4 of the largest energy (1 % of its amplitude): a flat lead's filter
    # ringing around one artefact is not a rhythm, whatever the adaptive threshold learnt on silence
    floor = 1e-4 * float(mwi.max())
    # initialise the signal/noise levels on the first 2 s (Pan-Tompkins' learning phase)
    first = mwi[: int(2 * fs)]
    spk, npk = 0.25 * first.max(), 0.5 * first.mean()
    beats: list[int] = []
    rr_recent: list[int] = []
    last_i = -1  # index into cand of the last accepted beat
    for i, (c, h) in enumerate(zip(cand, heights)):
        thr = npk + 0.25 * (spk - npk)
        if beats and c - beats[-1] < refractory:
            continue
        if h > thr and h >= floor:
            # search back: a long gap since the last beat means a missed one; take the largest
            # candidate in the gap above half the threshold
            if beats and rr_recent:
                mean_rr = float(np.mean(rr_recent[-8:]))
                if c - beats[-1] > 1.66 * mean_rr:
                    gap = [j for j in range(last_i + 1, i) if cand[j] - beats[-1] >= refractory
                           and c - cand[j] >= refractory and heights[j] > max(0.5 * thr, floor)]
                    if gap:
                        j = max(gap, key=lambda j: heights[j])
                        rr_recent.append(int(cand[j] - beats[-1]))
                        beats.append(int(cand[j]))
                        spk = 0.25 * heights[j] + 0.75 * spk
            if beats:
                rr_recent.append(int(c - beats[-1]))
            beats.append(int(c))
            last_i = i
            spk = 0.125 * h + 0.875 * spk
        else:
            npk = 0.125 * h + 0.875 * npk
    # move each detection to the R peak: largest |band-passed| within +-75 ms
    half = max(int(round(0.075 * fs)), 1)
    peaks = []
    for b in beats:
        lo, hi = max(b - half, 0), min(b + half + 1, len(bp))
        p = lo + int(np.argmax(np.abs(bp[lo:hi])))
        if peaks and p - peaks[-1] < refractory:
            if abs(bp[p]) > abs(bp[peaks[-1]]):
                peaks[-1] = p
            continue
        peaks.append(p)
    return np.asarray(peaks, np.int64)


def _rr_features(peaks: np.ndarray, n: int, fs: float) -> list[float]:
    duration = n / fs
    rr = np.diff(peaks) / fs
    if len(rr) == 0:  # 0 or 1 beat: one "interval" as long as the recording, no variability
        rr = np.array([max(duration, 1.0 / fs)])
    drr = np.diff(rr) if len(rr) > 1 else np.zeros(1)
    mean, med = float(rr.mean()), float(np.median(rr))
    std = float(rr.std())
    mad = float(np.median(np.abs(rr - med)))
    rmssd = float(np.sqrt(np.mean(drr**2)))
    q75, q25 = np.percentile(rr, [75, 25])
    return [
        duration, len(peaks) / max(duration, _EPS), mean, med, std, std / mean, 1.4826 * mad / med, rmssd,
        rmssd / mean, float(np.mean(np.abs(drr) > 0.050)), float(np.mean(np.abs(drr) > 0.020)),
        float(rr.min() / med), float(rr.max() / med), float((rr.max() - rr.min()) / mean),
        float(np.mean(np.abs(drr)) / mean), float((q75 - q25) / med),
    ]


def _beat_features(x: np.ndarray, bp: np.ndarray, peaks: np.ndarray, fs: float) -> list[float]:
    pre, post = int(0.25 * fs), int(0.45 * fs)
    inner = [p for p in peaks if p - pre >= 0 and p + post <= len(x)]
    amps = np.abs(bp[peaks]) if len(peaks) else np.zeros(1)
    r_amp = float(np.median(amps))
    r_cv = float(amps.std() / (amps.mean() + _EPS)) if len(peaks) > 1 else 0.0
    if len(inner) < 2:
        return [0.0, 0.0, 1.0, r_amp, r_cv]
    beats = np.stack([x[p - pre: p + post] for p in inner])
    beats = beats - beats.mean(1, keepdims=True)
    template = np.median(beats, 0)
    num = beats @ template
    den = np.linalg.norm(beats, axis=1) * np.linalg.norm(template) + _EPS
    corr = num / den
    return [float(corr.mean()), float(np.percentile(corr, 10)), float(np.mean(corr < 0.8)), r_amp, r_cv]


def _spectral_features(x: np.ndarray, fs: float) -> list[float]:
    from scipy.signal import welch

    nperseg = int(min(512, len(x)))
    if nperseg < 8:
        return [np.log(_EPS)] * (len(_BANDS) + 1) + [np.log(_EPS), 0.0, 0.0, 0.0]
    f, p = welch(x - x.mean(), fs=fs, nperseg=nperseg)
    df = f[1] - f[0]
    total = float(p.sum() * df)
    out = []
    for lo, hi in _BANDS:
        sel = (f >= lo) & (f < hi)
        out.append(np.log(float(p[sel].sum() * df) + _EPS) - np.log(total + _EPS))  # relative log power
    logp = np.log(p + _EPS)
    q = p / (p.sum() + _EPS)
    entropy = float(-(q * np.log(q + _EPS)).sum() / np.log(len(q)))
    band = (f >= 3.0) & (f <= 10.0)
    peak_f = float(f[band][np.argmax(p[band])]) if band.any() and p[band].max() > 0 else 0.0
    return out + [np.log(total + _EPS), float(logp.mean()), float(logp.std()), entropy, peak_f]


def _amplitude_features(x: np.ndarray, fs: float) -> list[float]:
    c = x - np.median(x)
    std = float(c.std())
    robust = float(1.4826 * np.median(np.abs(c)))
    p99, p1 = np.percentile(c, [99, 1])
    if std > _EPS:
        z = (c - c.mean()) / std
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4) - 3.0)
    else:
        skew, kurt = 0.0, 0.0
    flat = float(np.mean(np.abs(np.diff(x)) < 1e-6)) if len(x) > 1 else 1.0
    w = int(fs)
    if len(x) >= 2 * w:
        ws = c[: len(c) // w * w].reshape(-1, w).std(1)
        w_cv = float(ws.std() / (ws.mean() + _EPS))
        quiet = float(np.mean(ws < 0.1 * (np.median(ws) + _EPS)))
    else:
        w_cv, quiet = 0.0, 0.0
    peak = np.abs(c).max() if len(c) else 0.0
    extremes = float(np.mean(np.abs(c) > 0.98 * peak)) if peak > _EPS else 0.0
    return [std, robust, float(p99 - p1), skew, kurt, flat, w_cv, quiet, extremes]


def record_features(signal: np.ndarray, fs: float) -> np.ndarray:
    """Features of one recording: float64 ``[F]`` (``F = len(FEATURE_NAMES)``), always finite.

    Args:
      signal: one single-lead recording ``[n]`` or ``[1, n]`` (any real dtype, mV), ``n >= 0``.
      fs: sampling rate in Hz.

    Raises:
      ValueError: several leads, a non-real dtype or ``fs <= 0``.
    """
    x = _one_lead(signal, fs, "record_features")
    x = np.where(np.isfinite(x), x, 0.0)
    n = len(x)
    if n < 8:  # too short for anything: pad with zeros so every feature is defined
        x = np.concatenate([x, np.zeros(8 - n)])
    peaks = detect_qrs(x, fs)
    bp = _bandpass(x, fs, *BAND_HZ) if len(x) > 12 else x
    feats = (_rr_features(peaks, max(n, 1), fs) + _beat_features(x, bp, peaks, fs)
             + _spectral_features(x, fs) + _amplitude_features(x, fs))
    out = np.asarray(feats, np.float64)
    assert out.shape == (len(FEATURE_NAMES),), (out.shape, len(FEATURE_NAMES))
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def feature_matrix(recordings: Sequence[np.ndarray], fs: float, progress: bool | None = None) -> np.ndarray:
    """float64 ``[N, F]``: :func:`record_features` of every recording (a tqdm bar when ``progress`` or N >= 500)."""
    iterator = recordings
    if progress or (progress is None and len(recordings) >= 500):
        from tqdm.auto import tqdm
        iterator = tqdm(recordings, desc="features", mininterval=5.0)
    rows = [record_features(r, fs) for r in iterator]
    return np.stack(rows) if rows else np.zeros((0, len(FEATURE_NAMES)), np.float64)


__all__ = ["FEATURE_NAMES", "detect_qrs", "feature_matrix", "qrs_energy", "record_features"]
