"""A harder synthetic ECG set built from *real* signal: beats and noise cut from two real recordings.

``data.generator = 'realistic'`` (the default stays ``'simple'``, :mod:`jaxcomp.ecg.synthetic`).
Every recording is assembled at 300 Hz from a **template bank** (``jaxcomp/ecg/templates/
ecg_templates.npz``, 0.4 MB, shipped; attribution in ``jaxcomp/ecg/templates/TEMPLATES.md``)
that :func:`build_template_bank` extracts from the recordings in ``../shared/data/ecg``:

    python -m jaxcomp.ecg.realistic --data ../shared/data/ecg --out jaxcomp/ecg/templates/ecg_templates.npz

Bank (rules, all deterministic):

* both recordings resampled to 300 Hz (``resample_poly``; MIT-BIH record 208: 360 Hz, raw ADC,
  ``mV = (adc - 1024) / 200``; the healthy recording: 1 kHz, mV); baseline removed by two median
  filters (0.2 s, then 0.6 s; de Chazal et al. 2004); R peaks by :func:`jaxcomp.ecg.features.detect_qrs`.
* **Beat classes by morphology** (MIT-BIH's annotations are not shipped): the QRS width of a
  beat is the time over which its 5-40 Hz band-passed signal exceeds 20 % of its peak within
  +-150 ms of the R peak; its correlation is that of its -0.1..+0.15 s window with the median
  beat of the narrow (< 100 ms) beats. **Normal**: width <= 100 ms and correlation >= 0.9;
  **PVC** (ventricular ectopic): width >= 120 ms and correlation < 0.7, re-aligned on the PVC
  median by cross-correlation (+-0.1 s); anything else (fusion, noise, ambiguous) is left out.
  Beats next to an RR under 0.3 s (before) or 0.45 s (after) are left out. Of each class the
  10 % farthest (Euclidean) from the class median are dropped as noise-corrupted.
* each beat is cut from -0.25 to +0.45 s around R (210 samples), tapered to zero over its first
  50 ms and last 80 ms, stored in uV (int16) with the RR interval before it; healthy normal
  beats: the first 600 kept (about 8 min; consecutive beats keep their real beat-to-beat
  variation), MIT-BIH 208 normal and PVC beats: all kept.
* **noise**: the recording minus its beats (every classified beat replaced by its class median
  scaled by least squares; unclassified beats by their own 40 Hz low-passed segment) - real
  baseline wander, muscle and motion noise, and residual beat-to-beat variation: all 300 s of
  MIT-BIH 208 and 120 s of the healthy recording (from 30 s on: its first seconds hold a large
  electrode drift), int16 uV.

Recordings (:func:`synthesize_realistic_record`; the rhythm rules and RR processes are those of
:mod:`jaxcomp.ecg.synthetic`, the waveforms are real):

* a record takes its normal beats from one source (healthy or MIT-BIH 208, 50/50), a run of
  consecutive bank beats from a random start (wrapping), normalised to the source's median R
  amplitude; per-record morphology: P, QRS and ST-T segments scaled independently (0.6-1.4,
  QRS 0.8-1.2), QRS duration x0.9-1.1; ST-T stretched with the RR interval (Bazett,
  ``sqrt(RR / RR_source)``, clipped to 0.75-1.3).
* **N**: sinus RR 50-105 bpm, HRV 1-8 % (10 % in a fifth).
* **A**: irregularly irregular RR (log-normal, CV 8-35 %; 8-15 % in a quarter), 60-160 bpm, P waves
  removed (template zeroed before -90 ms, ramp to -50 ms), f-waves of 4-9 Hz with a wandering phase
  and amplitude 0.02-0.15 mV (0.005-0.03 in a quarter).
* **O**: one or two of: PVCs (a real PVC of the bank, 1-2 morphologies per record, amplitude
  1-2x the normal R, random polarity; coupling 0.5-0.72, compensatory pause), bigeminy, premature
  atrial beats (early, P scaled -0.5..1.3), sinus bradycardia 35-58 / tachycardia 98-165 bpm,
  bundle-branch-like widening (QRS stretched x1.6-2.4, an RSR' notch in half), first-degree AV
  block (the part before the QRS stretched 1.5-2x: the P wave 0.05-0.1 s earlier).
* **~**: a rhythm as above under, over 50-100 % of the record (25-50 % in a fifth), one or two of:
  real noise from the noisiest 2 s windows of MIT-BIH 208 amplified 3-10x; electrode-motion-like
  artefacts (0.3-12 Hz noise with a bursty envelope and baseline steps; synthetic, the NSTDB
  electrode-motion record is not shipped); lead-off flat line with saturation jumps; broadband
  noise at -6..+3 dB SNR.
* **all**: real noise from the bank (a random stretch of either source, x0.5-1.5), powerline 50/60 Hz
  (0-0.03 mV), amplitude 0.4-2.0 mV for the median R, polarity inverted in 10 %, 1 uV quantisation.

Labels and lengths are drawn exactly as the simple generator draws them (same seed, same labels
and lengths), so the two sets have the same folds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import numpy as np

from jaxcomp.ecg.data import CLASSES, FS, ECGDataError
from jaxcomp.ecg.synthetic import add_f_waves, colored_noise, draw_rhythm, place_subtype_ectopics
from jaxcomp.files import atomic_file

BANK_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "ecg_templates.npz")
MIT_FILE, HEALTHY_FILE = "mitbih_208_360hz_raw.npy", "systole_task1_1000hz.npy"
PRE_S, POST_S = 0.25, 0.45       # beat window around R (s)
PRE, POST = int(PRE_S * FS), int(POST_S * FS)
NORMAL_MAX_WIDTH, PVC_MIN_WIDTH = 0.100, 0.120  # s
NORMAL_MIN_CORR, PVC_MAX_CORR = 0.9, 0.7


# --------------------------------------------------------------------------------------
# Building the bank from the real recordings
# --------------------------------------------------------------------------------------


def read_real_recordings(data_dir: str) -> dict[str, np.ndarray]:
    """The two real recordings at 300 Hz, float64 mV: ``{"mit": [90000], "healthy": [n]}``.

    Raises:
      ECGDataError: naming the missing file and what the directory should hold.
    """
    from scipy.signal import resample_poly

    out = {}
    for key, name in (("mit", MIT_FILE), ("healthy", HEALTHY_FILE)):
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            raise ECGDataError(f"real ECG recording {path} not found: the template bank is built from "
                               f"{MIT_FILE} and {HEALTHY_FILE} in ../shared/data/ecg (or --data DIR)")
        x = np.load(path).astype(np.float64).reshape(-1)
        if key == "mit":
            out[key] = resample_poly((x - 1024.0) / 200.0, 5, 6)   # 360 -> 300 Hz
        else:
            out[key] = resample_poly(x, 3, 10)                     # 1000 -> 300 Hz
    return out


def _remove_baseline(x: np.ndarray) -> np.ndarray:
    from scipy.signal import medfilt

    return x - medfilt(medfilt(x, 2 * int(0.1 * FS) + 1), 2 * int(0.3 * FS) + 1)


def classify_beats(y: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(kind [n] int8: 0 normal, 1 PVC, -1 unclassified; qrs width s [n]; correlation [n])``.

    ``y`` is a baseline-free 300 Hz ECG, ``peaks`` its R peaks (see the module docstring).
    """
    from scipy.signal import butter, sosfiltfilt

    bp = sosfiltfilt(butter(2, [5, 40], btype="band", fs=FS, output="sos"), y)
    half = int(0.15 * FS)
    widths = np.zeros(len(peaks))
    for i, p in enumerate(peaks):
        seg = np.abs(bp[max(p - half, 0):p + half + 1])
        above = np.flatnonzero(seg > 0.2 * seg.max())
        widths[i] = (above[-1] - above[0]) / FS if len(above) else 0.0
    lo, hi = int(0.1 * FS), int(0.15 * FS)
    ok = (peaks >= lo) & (peaks + hi < len(y))
    wins = np.zeros((len(peaks), lo + hi))
    wins[ok] = np.stack([y[p - lo:p + hi] for p in peaks[ok]])
    narrow = ok & (widths <= NORMAL_MAX_WIDTH)
    template = np.median(wins[narrow], 0) if narrow.any() else np.median(wins[ok], 0)
    wc = wins - wins.mean(1, keepdims=True)
    tc = template - template.mean()
    corr = wc @ tc / (np.linalg.norm(wc, axis=1) * np.linalg.norm(tc) + 1e-12)
    kind = np.full(len(peaks), -1, np.int8)
    kind[ok & (widths <= NORMAL_MAX_WIDTH) & (corr >= NORMAL_MIN_CORR)] = 0
    kind[ok & (widths >= PVC_MIN_WIDTH) & (corr < PVC_MAX_CORR)] = 1
    return kind, widths, corr


def _taper() -> np.ndarray:
    w = np.ones(PRE + POST)
    a, b = int(0.05 * FS), int(0.08 * FS)
    w[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    w[-b:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, b + 1) / b)
    return w


def _cut(y: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    return np.stack([y[p - PRE:p + POST] for p in peaks]) if len(peaks) else np.zeros((0, PRE + POST))


def _drop_outliers(beats: np.ndarray, keep: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    idx = np.flatnonzero(keep)
    if len(idx) < 10:
        return keep
    d = np.linalg.norm(beats[idx] - np.median(beats[idx], 0), axis=1)
    out = keep.copy()
    out[idx[d > np.quantile(d, 1 - fraction)]] = False
    return out


def _extract(x: np.ndarray) -> dict:
    """Beats, kinds, RR and the residual noise of one 300 Hz recording (mV)."""
    from scipy.signal import butter, sosfiltfilt

    from jaxcomp.ecg.features import detect_qrs

    y = _remove_baseline(x)
    peaks = detect_qrs(y, FS)
    peaks = peaks[(peaks >= PRE) & (peaks + POST <= len(y))]
    kind, widths, corr = classify_beats(y, peaks)
    # re-align PVCs on their median by cross-correlation (the detector's R of a wide beat wanders)
    pvc = np.flatnonzero(kind == 1)
    if len(pvc):
        ref = np.median(_cut(y, peaks[pvc]), 0)
        shift = int(0.1 * FS)
        for i in pvc:
            p = peaks[i]
            if p - PRE - shift < 0 or p + POST + shift > len(y):
                kind[i] = -1
                continue
            scores = [np.dot(y[p + s - PRE:p + s + POST], ref) for s in range(-shift, shift + 1)]
            peaks[i] = p + int(np.argmax(scores)) - shift
    rr_before = np.diff(peaks, prepend=peaks[0] - FS) / FS
    rr_after = np.diff(peaks, append=peaks[-1] + FS) / FS
    spaced = (rr_before >= 0.3) & (rr_after >= 0.45)
    beats = _cut(y, peaks)
    keep = {k: _drop_outliers(beats, (kind == k) & spaced) for k in (0, 1)}
    # residual: the recording minus its beats
    model = np.zeros_like(x)
    taper = _taper()
    lp = sosfiltfilt(butter(4, 40, fs=FS, output="sos"), y)
    medians = {k: np.median(beats[kind == k], 0) for k in (0, 1) if (kind == k).any()}
    for i, p in enumerate(peaks):
        if kind[i] in medians:
            m = medians[int(kind[i])]
            seg = m * (np.dot(beats[i], m) / (np.dot(m, m) + 1e-12))
        else:
            seg = lp[p - PRE:p + POST]
        model[p - PRE:p + POST] += seg * taper
    residual = x - model
    return dict(beats=beats * taper, rr=rr_before, keep=keep, kind=kind, widths=widths, corr=corr,
                residual=residual, peaks=peaks)


def build_template_bank(data_dir: str, max_healthy_beats: int = 600, healthy_noise_s: float = 120.0) -> dict:
    """Extracts the bank (see the module docstring) from the real recordings in ``data_dir``.

    Returns a dict of arrays: ``normal_healthy``, ``normal_mit``, ``pvc_mit`` int16 uV ``[n, 210]``;
    ``rr_*`` float32 ``[n]`` (RR before each beat, s); ``noise_mit``, ``noise_healthy`` int16 uV;
    ``meta`` (a JSON string: counts, rules, sources).
    """
    rec = read_real_recordings(data_dir)
    mit, healthy = _extract(rec["mit"]), _extract(rec["healthy"])
    to_uv = lambda a: np.clip(np.round(np.asarray(a) * 1000.0), -32768, 32767).astype(np.int16)
    hk = np.flatnonzero(healthy["keep"][0])[:max_healthy_beats]
    mk, pk = np.flatnonzero(mit["keep"][0]), np.flatnonzero(mit["keep"][1])
    bank = dict(
        normal_healthy=to_uv(healthy["beats"][hk]), rr_normal_healthy=healthy["rr"][hk].astype(np.float32),
        normal_mit=to_uv(mit["beats"][mk]), rr_normal_mit=mit["rr"][mk].astype(np.float32),
        pvc_mit=to_uv(mit["beats"][pk]), rr_pvc_mit=mit["rr"][pk].astype(np.float32),
        noise_mit=to_uv(mit["residual"]),
        noise_healthy=to_uv(healthy["residual"][int(30 * FS):int((30 + healthy_noise_s) * FS)]),
    )
    counts = {k: {"detected": int(len(d["peaks"])), "normal": int((d["kind"] == 0).sum()),
                  "pvc": int((d["kind"] == 1).sum()), "unclassified": int((d["kind"] == -1).sum()),
                  "kept_normal": int(d["keep"][0].sum()), "kept_pvc": int(d["keep"][1].sum()),
                  "median_width_normal_s": float(np.median(d["widths"][d["kind"] == 0])) if (d["kind"] == 0).any()
                  else None,
                  "median_width_pvc_s": float(np.median(d["widths"][d["kind"] == 1])) if (d["kind"] == 1).any()
                  else None}
              for k, d in (("mit", mit), ("healthy", healthy))}
    meta = dict(fs=FS, pre_s=PRE_S, post_s=POST_S, units="uV", counts=counts,
                sources={"mit": f"MIT-BIH Arrhythmia Database record 208 ({MIT_FILE}, 360 Hz, 300 s)",
                         "healthy": f"healthy sinus-rhythm recording ({HEALTHY_FILE}, 1 kHz)"},
                rules=dict(normal_max_width_s=NORMAL_MAX_WIDTH, pvc_min_width_s=PVC_MIN_WIDTH,
                           normal_min_corr=NORMAL_MIN_CORR, pvc_max_corr=PVC_MAX_CORR))
    bank["meta"] = np.array(json.dumps(meta))
    return bank


@functools.lru_cache(maxsize=4)
def load_template_bank(path: str = "") -> dict:
    """The template bank as float64 mV arrays (``path`` = an ``.npz`` from :func:`build_template_bank`;
    ``""`` = the one shipped with the package). Cached: the same dict is returned on every call, so
    callers must not modify it (copy it first, as the tests do).

    Raises:
      ECGDataError: the file is missing or lacks a key.
    """
    path = path or BANK_PATH
    if not os.path.isfile(path):
        raise ECGDataError(f"ECG template bank {path} not found; build it from the real recordings with "
                           f"`python -m jaxcomp.ecg.realistic --data ../shared/data/ecg --out {path}`")
    with np.load(path) as f:
        need = ("normal_healthy", "normal_mit", "pvc_mit", "rr_normal_healthy", "rr_normal_mit", "noise_mit",
                "noise_healthy")
        missing = [k for k in need if k not in f.files]
        if missing:
            raise ECGDataError(f"ECG template bank {path} lacks {', '.join(missing)}")
        bank = {k: (f[k].astype(np.float64) / 1000.0 if f[k].dtype == np.int16 else f[k]) for k in f.files}
    bank["meta"] = json.loads(str(bank["meta"])) if "meta" in bank else {}
    for key in ("normal_healthy", "normal_mit"):
        r = np.median(np.abs(bank[key][:, PRE]))
        bank[key + "_scale"] = float(r) if r > 0 else 1.0  # the source's median R amplitude (mV)
    bank["pvc_mit_scale"] = float(np.median(np.abs(bank["pvc_mit"]).max(1)))
    for key in ("normal_healthy", "normal_mit", "pvc_mit"):  # unit median R, as the renderer uses them
        bank[key + "_unit"] = bank[key] / bank[key + "_scale"]
    for key in ("normal_healthy", "normal_mit"):
        bank[key + "_rr"] = float(np.median(bank["rr_" + key]))
    from scipy.signal import butter, sosfiltfilt

    # noisiest 2 s windows of MIT-BIH 208's residual (above 0.5 Hz), for the noisy class
    hp = sosfiltfilt(butter(2, 0.5, btype="high", fs=FS, output="sos"), bank["noise_mit"])
    w = 2 * FS
    rms = hp[: len(hp) // w * w].reshape(-1, w).std(1)
    bank["noisy_windows"] = np.flatnonzero(rms >= np.quantile(rms, 0.8)) * w
    return bank


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _warp_times(u: np.ndarray, qrs: float, st: float, pr: float) -> np.ndarray:
    """Template time (s) of output time ``u`` (s from R): piecewise linear, QRS |u| < 0.05 s scaled by
    ``qrs``, the ST-T part after it by ``st`` and the P part before it by ``pr`` (shifted earlier)."""
    q = 0.05 * qrs
    t = u / qrs
    after, before = u > q, u < -q
    t = np.where(after, 0.05 + (u - q) / st, t)
    return np.where(before, -0.05 + (u + q) / pr, t)


def _render_beat(x: np.ndarray, r: float, beat: np.ndarray, qrs: float = 1.0, st: float = 1.0,
                 pr: float = 1.0) -> None:
    """Adds ``beat`` (``[210]`` template, R at sample ``PRE``), time-warped, with its R at time ``r`` (s)."""
    lo, hi = -PRE_S * pr - 0.05 * (qrs - 1), POST_S * st + 0.05 * (qrs - 1)
    i0, i1 = int(np.ceil((r + lo) * FS)), int(np.floor((r + hi) * FS))
    i0, i1 = max(i0, 0), min(i1, len(x) - 1)
    if i1 < i0:
        return
    u = np.arange(i0, i1 + 1) / FS - r
    t = _warp_times(u, qrs, st, pr)
    x[i0:i1 + 1] += np.interp(t, (np.arange(PRE + POST) - PRE) / FS, beat, left=0.0, right=0.0)


def _segment_gains(p: float, qrs: float, st: float) -> np.ndarray:
    """Smooth per-sample gains ``[210]`` scaling a template's P, QRS and ST-T segments."""
    t = (np.arange(PRE + POST) - PRE) / FS
    w_qrs = np.exp(-0.5 * (t / 0.035) ** 4)       # ~ -50..+50 ms
    w_p = (1 - w_qrs) * (t < 0)
    w_st = (1 - w_qrs) * (t >= 0)
    return p * w_p + qrs * w_qrs + st * w_st


def _remove_p(beat: np.ndarray) -> np.ndarray:
    t = (np.arange(PRE + POST) - PRE) / FS
    ramp = np.clip((t + 0.09) / 0.04, 0.0, 1.0)
    return beat * (0.5 - 0.5 * np.cos(np.pi * ramp))


def _bank_noise(rng: np.random.Generator, bank: dict, n: int, source: str | None = None,
                start: int | None = None) -> np.ndarray:
    noise = bank["noise_mit" if (source or rng.choice(["mit", "healthy"])) == "mit" else "noise_healthy"]
    start = int(rng.integers(0, len(noise))) if start is None else start
    idx = (start + np.arange(n)) % len(noise)  # wraps: the bank's noise is a loop
    return noise[idx] - noise[idx].mean()


def synthesize_realistic_record(rng: np.random.Generator, label: int, n_samples: int,
                                bank: dict | None = None) -> tuple[np.ndarray, dict]:
    """One recording of class ``label`` (index into ``CLASSES``) from the real-beat bank: float32 mV ``[n]``.

    ``bank`` defaults to the shipped one (:func:`load_template_bank`). Returns the signal and a dict
    describing it (rhythm, heart rate, source, subtypes, ``r_times`` in s, ``ectopic`` mask).
    """
    bank = load_template_bank() if bank is None else bank
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in 0..{len(CLASSES) - 1}, got {label}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    duration = n_samples / FS
    name = CLASSES[label]
    source = "healthy" if rng.random() < 0.5 else "mit"
    beats_src = bank[f"normal_{source}_unit"]
    rr_src = bank[f"normal_{source}_rr"]
    info: dict = {"label": name, "source": source}
    rhythm = CLASSES[rng.choice(3, p=[0.6, 0.15, 0.25])] if name == "~" else name
    qrs_scale, pr_scale, notch = rng.uniform(0.9, 1.1), 1.0, 0.0
    hr, rr, ectopic, subtypes = draw_rhythm(rng, rhythm, duration, info, af_cv=((0.08, 0.15), (0.12, 0.35)))
    if rhythm == "O":
        if "wide_qrs" in subtypes:
            qrs_scale = rng.uniform(1.6, 2.4)
            notch = rng.uniform(0.3, 0.7) if rng.random() < 0.5 else 0.0
        if "av_block1" in subtypes:
            pr_scale = 1.0 + rng.uniform(0.1, 0.2) / 0.2   # P part stretched 1.5-2x: P ~0.05-0.1 s earlier
        rr, ectopic = place_subtype_ectopics(rng, rr, subtypes, info)
    info.update(rhythm=rhythm, heart_rate=hr, subtypes=subtypes)
    r_times = np.cumsum(rr) - rng.uniform(0, rr[0])
    keep = r_times < duration + 1.0
    r_times, rr, ectopic = r_times[keep], rr[keep], ectopic[keep]

    gains = _segment_gains(rng.uniform(0.6, 1.4), rng.uniform(0.8, 1.2), rng.uniform(0.6, 1.4))
    start = int(rng.integers(0, len(beats_src)))
    pvc_bank = bank["pvc_mit_unit"]
    pvc_pick = rng.choice(len(pvc_bank), size=1 + int(rng.random() < 0.3))
    pvc_gain = rng.uniform(1.0, 2.0) * rng.choice([-1.0, 1.0])
    x = np.zeros(n_samples)
    for k, (r, interval) in enumerate(zip(r_times, rr)):
        st = float(np.clip(np.sqrt(interval / rr_src), 0.75, 1.3))
        if ectopic[k] and info.get("ectopic_kind") == "pvc":
            _render_beat(x, r, pvc_gain * pvc_bank[pvc_pick[k % len(pvc_pick)]], 1.0, st, 1.0)
            continue
        beat = beats_src[(start + k) % len(beats_src)] * gains
        if rhythm == "A":
            beat = _remove_p(beat)
        elif ectopic[k]:  # premature atrial beat: a differently shaped P
            p_part = beat - _remove_p(beat)
            beat = _remove_p(beat) + rng.uniform(-0.5, 1.3) * p_part
        _render_beat(x, r, beat, qrs_scale, st, pr_scale)
        if notch:  # RSR': a delayed, smaller copy of the QRS (bundle-branch-like)
            qrs_only = beat * np.exp(-0.5 * (((np.arange(PRE + POST) - PRE) / FS) / 0.02) ** 4)
            _render_beat(x, r + 0.05 * qrs_scale, notch * qrs_only, qrs_scale, 1.0, 1.0)
    if rhythm == "A":  # fibrillatory waves (relative to the unit median R)
        info["f_wave_rel"] = add_f_waves(rng, x, 0.15)

    # everyone: real noise of the bank (relative to its source's R amplitude), powerline
    noise_src = rng.choice(["mit", "healthy"])
    x += rng.uniform(0.5, 1.5) * _bank_noise(rng, bank, n_samples, noise_src) / bank[f"normal_{noise_src}_scale"]
    t = np.arange(n_samples) / FS
    amplitude = rng.uniform(0.4, 2.0)
    x += rng.uniform(0, 0.03) / amplitude * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t + rng.uniform(0, 6.3))
    if name == "~":
        x = _corrupt_realistic(rng, x, bank, info)
    x = x * amplitude * (-1 if rng.random() < 0.1 else 1)
    x = np.round(np.clip(x, -32.768, 32.767) * 1000) / 1000
    info.update(r_times=r_times[r_times < duration], ectopic=ectopic[r_times < duration])
    return x.astype(np.float32), info


def _corrupt_realistic(rng: np.random.Generator, x: np.ndarray, bank: dict, info: dict) -> np.ndarray:
    """The ``~`` class: real noise, electrode-motion-like artefacts, lead-off or broadband noise."""
    n = len(x)
    kinds = list(rng.choice(["real", "motion", "leadoff", "broadband"], size=rng.integers(1, 3), replace=False,
                            p=[0.4, 0.3, 0.15, 0.15]))
    cover = rng.uniform(0.25, 0.5) if rng.random() < 0.2 else rng.uniform(0.5, 1.0)
    start = int(rng.uniform(0, 1 - cover) * n)
    seg = slice(start, start + int(cover * n))
    m = seg.stop - seg.start
    rest = [k for k in kinds if k != "real"]
    if "real" in kinds:
        w = int(rng.choice(bank["noisy_windows"]))
        noise = _bank_noise(rng, bank, m, "mit", w) / bank["normal_mit_scale"]
        x[seg] += rng.uniform(3, 10) * noise
    if "motion" in rest:  # electrode motion: slow, large, bursty, with baseline steps
        env = np.abs(colored_noise(rng, m, 0, 0.5)) + 0.3
        steps = np.cumsum(np.where(rng.random(m) < 1.5 / FS, rng.normal(0, 1.5, m), 0.0))
        x[seg] += rng.uniform(0.8, 3) * env * colored_noise(rng, m, 0.3, 12) + steps
        rest.remove("motion")
    for k in sorted(rest):  # broadband before leadoff
        x[seg] = _corrupt_one(rng, x[seg], k)
    info["artefacts"] = kinds
    info["artefact_fraction"] = cover
    return x


def _corrupt_one(rng: np.random.Generator, x: np.ndarray, kind: str) -> np.ndarray:
    m = len(x)
    x = x.copy()
    if kind == "broadband":
        x += (np.std(x) + 1e-6) * 10 ** (-rng.uniform(-6, 3) / 20) * rng.standard_normal(m)
    else:  # lead-off: flat line with saturation jumps
        x[:] = rng.uniform(-3, 3) + 0.002 * rng.standard_normal(m)
        for j in rng.integers(0, m, rng.integers(1, 6)):
            x[j:j + rng.integers(30, 300)] = rng.choice([-5.0, 5.0])
    return x


def main(argv: list[str] | None = None) -> int:
    """``python -m jaxcomp.ecg.realistic --data DIR --out FILE``: builds the template bank."""
    parser = argparse.ArgumentParser(description="Builds the ECG template bank from the real recordings.")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "ecg"),
                        help=f"directory holding {MIT_FILE} and {HEALTHY_FILE}")
    parser.add_argument("--out", default=BANK_PATH)
    args = parser.parse_args(argv)
    try:
        bank = build_template_bank(args.data)
    except ECGDataError as e:
        print(f"error: {e}")
        return 2
    with atomic_file(args.out, makedirs=True) as f:  # the shipped bank is replaced whole or not at all
        np.savez_compressed(f, **bank)
    meta = json.loads(str(bank["meta"]))
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB): "
          + ", ".join(f"{k} {v.shape}" for k, v in bank.items() if k != "meta"))
    print(json.dumps(meta["counts"], indent=1))
    return 0


__all__ = ["BANK_PATH", "build_template_bank", "classify_beats", "load_template_bank", "read_real_recordings",
           "synthesize_realistic_record"]


if __name__ == "__main__":
    raise SystemExit(main())

