"""A generator of labelled *synthetic* single-lead ECG recordings (300 Hz) for N, A, O and ~.

No labelled AF recordings can be shipped with the package, so the default data set is
synthetic. Every beat is the Gaussian-event model of ECGSYN (McSharry, Clifford,
Tarassenko & Smith, "A dynamical model for generating synthetic electrocardiogram
signals", IEEE TBME 2003): the P, Q, R, S and T waves are Gaussian bumps placed relative
to the R peak, with the P-R and R-T distances and the T width scaled by the square root of
the RR interval (ECGSYN's heart-rate factor). We evaluate the model's solution in closed form
beat by beat instead of integrating its ODE; the RR process is ECGSYN's: a mean interval
modulated by a Mayer-wave (~0.1 Hz) and a respiratory (~0.25 Hz) oscillation plus noise.

Classes (the rhythm is what differs; the parameter ranges overlap on purpose, so that
some recordings are genuinely ambiguous and F1 is informative rather than 100%):

* ``N`` normal sinus rhythm: 50-105 bpm, heart-rate variability 1-8 % (up to 10 % of
  "sinus arrhythmia" in a fifth of the records).
* ``A`` atrial fibrillation: irregularly irregular RR (log-normal, coefficient of variation
  6-30 %), 60-160 bpm, no P waves, fibrillatory f-waves of 4-9 Hz with a wandering phase
  and 0.01-0.12 mV amplitude (a quarter of the records have almost invisible f-waves).
* ``O`` other rhythms, one or two of: premature ventricular beats (wide, no P wave,
  opposite-polarity T, compensatory pause) incl. bigeminy; premature atrial beats (early,
  with P); sinus bradycardia (35-58 bpm) or tachycardia (98-165 bpm); a wide notched QRS
  (bundle-branch-block-like RSR'); first-degree AV block (PR 0.24-0.36 s).
* ``~`` noisy: any of the rhythms above buried under electrode-motion artefacts,
  broadband noise at about -6..+3 dB SNR, lead-off flat lines with saturation, and spikes.

Every recording also gets baseline wander (0.05-0.5 Hz), powerline interference (50 or
60 Hz), muscle (EMG) noise, an amplitude scale of 0.4-2.0, a polarity flip in 10 % of
records, and 1 uV quantisation (gain 1000/mV, as the challenge's ADC). Lengths follow the
challenge: 60 % exactly 30 s, the rest uniform in ``[min_seconds, max_seconds]``.

Record ``i`` of a set depends only on ``(seed, i)``.
"""

from __future__ import annotations

import numpy as np

from jaxcomp.checks import is_whole
from jaxcomp.ecg.data import CLASSES, FS, ECGDataset

_CHALLENGE_CLASS_PROBS = (0.59, 0.09, 0.28, 0.04)  # CinC 2017 training set: 5050/738/2456/284 of 8528


def _rr_sinus(rng: np.random.Generator, duration: float, mean_rr: float, hrv: float) -> np.ndarray:
    """RR intervals (s) of sinus rhythm: ECGSYN's mean + LF (Mayer) + HF (respiratory) oscillation."""
    n = int(duration / mean_rr * 1.3) + 8
    t = np.cumsum(np.full(n, mean_rr))
    f_lf, f_hf = rng.uniform(0.08, 0.12), rng.uniform(0.18, 0.35)
    lf, hf = rng.uniform(0.2, 0.6), rng.uniform(0.4, 1.0)
    mod = lf * np.sin(2 * np.pi * f_lf * t + rng.uniform(0, 2 * np.pi)) \
        + hf * np.sin(2 * np.pi * f_hf * t + rng.uniform(0, 2 * np.pi)) + 0.3 * rng.standard_normal(n)
    mod = mod / (np.std(mod) + 1e-9)
    return mean_rr * np.maximum(1 + hrv * mod, 0.4)


def _rr_af(rng: np.random.Generator, duration: float, mean_rr: float, cv: float) -> np.ndarray:
    n = int(duration / mean_rr * 1.6) + 8
    sigma = np.sqrt(np.log(1 + cv**2))
    rr = mean_rr * np.exp(rng.normal(-sigma**2 / 2, sigma, n))
    return np.clip(rr, 0.25, 2.0)


def _beats(rng: np.random.Generator, rr: np.ndarray, morph: dict, p_wave: bool, pr: float) -> dict:
    """Per-beat wave parameters ``[n_beats, 6]`` (offsets, widths, amplitudes) for a normal-conducted rhythm."""
    n = len(rr)
    s = np.sqrt(rr)  # ECGSYN's heart-rate factor
    off = np.zeros((n, 6))
    wid = np.ones((n, 6))  # unused waves keep amplitude 0
    amp = np.zeros((n, 6))
    jitter = lambda scale: 1 + scale * rng.standard_normal(n)  # beat-to-beat variation
    resp = 1 + morph["resp"] * np.sin(2 * np.pi * rng.uniform(0.2, 0.3) * np.cumsum(rr) + rng.uniform(0, 6.3))
    off[:, 0], wid[:, 0], amp[:, 0] = -pr * np.sqrt(s), morph["p_w"], morph["p_a"] * jitter(0.1) * p_wave
    off[:, 1], wid[:, 1], amp[:, 1] = -morph["qrs_w"] * 2.2, morph["qrs_w"], morph["q_a"]
    off[:, 2], wid[:, 2], amp[:, 2] = 0.0, morph["qrs_w"], morph["r_a"] * resp * jitter(0.03)
    off[:, 3], wid[:, 3], amp[:, 3] = morph["qrs_w"] * 2.2, morph["qrs_w"], morph["s_a"] * resp
    off[:, 4], wid[:, 4], amp[:, 4] = morph["t_off"] * s, morph["t_w"] * s, morph["t_a"] * jitter(0.05)
    if morph["notch"]:  # RSR': a second, later R (bundle-branch-block-like)
        off[:, 5], wid[:, 5], amp[:, 5] = morph["qrs_w"] * 3.0, morph["qrs_w"] * 1.2, morph["r_a"] * 0.7
    return dict(off=off, wid=wid, amp=amp)


def _morphology(rng: np.random.Generator) -> dict:
    return dict(p_w=rng.uniform(0.02, 0.035), p_a=rng.uniform(0.06, 0.2), qrs_w=rng.uniform(0.009, 0.016),
                q_a=-rng.uniform(0.0, 0.15), r_a=rng.uniform(0.6, 1.6), s_a=-rng.uniform(0.05, 0.4),
                t_off=rng.uniform(0.22, 0.3), t_w=rng.uniform(0.045, 0.07), t_a=rng.uniform(0.08, 0.4),
                resp=rng.uniform(0.0, 0.08), notch=False)


def _render(n_samples: int, r_times: np.ndarray, beats: dict) -> np.ndarray:
    """Sum of the beats' Gaussian waves on the sample grid (each beat within +-0.9 s of its R peak)."""
    x = np.zeros(n_samples + 2 * FS)
    half = int(0.9 * FS)
    grid = np.arange(-half, half + 1) / FS
    for k in range(0, len(r_times), 64):  # chunks keep memory small for long records
        r = r_times[k:k + 64]
        centre = np.round(r * FS).astype(np.int64)
        t = grid[None, :] + (centre / FS - r)[:, None]  # time from the exact R peak
        off, wid, amp = (beats[key][k:k + 64] for key in ("off", "wid", "amp"))
        wave = np.sum(amp[:, :, None] * np.exp(-0.5 * ((t[:, None, :] - off[:, :, None]) / wid[:, :, None]) ** 2),
                      axis=1)
        idx = centre[:, None] + np.arange(-half, half + 1)[None, :] + FS
        ok = (idx >= 0) & (idx < len(x))
        np.add.at(x, idx[ok], wave[ok])
    return x[FS:FS + n_samples]


def colored_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Unit-variance Gaussian noise band-limited to ``[low, high]`` Hz (FFT masking)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    spec[(f < low) | (f > high)] = 0
    out = np.fft.irfft(spec, n)
    return out / (np.std(out) + 1e-12)


def _place_ectopics(rng, rr: np.ndarray, prob: float, kind: str, bigeminy: bool = False):
    """Marks premature beats and rewrites the RR series around them; returns ``(rr, ectopic mask)``."""
    n = len(rr)
    ectopic = np.zeros(n, bool)
    if bigeminy:
        ectopic[rng.integers(1, 3)::2] = True
    else:
        ectopic = rng.random(n) < prob
        if not ectopic[2:].any():
            ectopic[rng.integers(2, max(n - 2, 3))] = True
    ectopic[:2] = False
    rr = rr.copy()
    for k in np.flatnonzero(ectopic):
        base = rr[k]
        coupling = rng.uniform(0.5, 0.72) if kind == "pvc" else rng.uniform(0.6, 0.85)
        rr[k] = base * coupling
        if k + 1 < n:  # PVC: full compensatory pause; PAC: the sinus node resets
            rr[k + 1] = base * (2 - coupling) if kind == "pvc" else base * rng.uniform(1.0, 1.15)
    return rr, ectopic


AF_CV = ((0.06, 0.12), (0.1, 0.3))  # RR coefficient of variation of AF: (with p 0.25, otherwise)


def draw_rhythm(rng: np.random.Generator, rhythm: str, duration: float, info: dict,
                af_cv: tuple[tuple[float, float], tuple[float, float]] = AF_CV
                ) -> tuple[float, np.ndarray, np.ndarray, list[str]]:
    """The beat times' skeleton of a recording of ``rhythm`` (``"N"``, ``"A"`` or ``"O"``).

    N: sinus rhythm at 50-105 bpm with heart-rate variability; A: irregularly irregular RR at
    60-160 bpm, coefficient of variation drawn from ``af_cv`` (stored in ``info["rr_cv"]``); O: one
    or two subtypes of ``pvc, pac, brady, tachy, wide_qrs, av_block1, bigeminy`` on a sinus rhythm
    whose rate the subtypes set. Returns ``(heart rate bpm, rr (n,) float64 s, ectopic (n,) bool
    all False, subtypes)``; the ectopic beats of ``O`` are placed by :func:`place_subtype_ectopics`
    after the caller's morphology draws.
    """
    subtypes: list[str] = []
    if rhythm == "N":
        hr = rng.uniform(50, 105)
        hrv = rng.uniform(0.04, 0.10) if rng.random() < 0.2 else rng.uniform(0.01, 0.08)
        rr = _rr_sinus(rng, duration, 60 / hr, hrv)
    elif rhythm == "A":
        hr = rng.uniform(60, 160)
        (lo1, hi1), (lo2, hi2) = af_cv
        cv = rng.uniform(lo1, hi1) if rng.random() < 0.25 else rng.uniform(lo2, hi2)
        rr = _rr_af(rng, duration, 60 / hr, cv)
        info["rr_cv"] = cv
    else:
        options = ["pvc", "pac", "brady", "tachy", "wide_qrs", "av_block1", "bigeminy"]
        subtypes = list(rng.choice(options, size=1 + int(rng.random() < 0.25), replace=False,
                                   p=[0.22, 0.18, 0.12, 0.14, 0.14, 0.1, 0.1]))
        hr = rng.uniform(55, 100)
        if "brady" in subtypes:
            hr = rng.uniform(35, 58)
        if "tachy" in subtypes:
            hr = rng.uniform(98, 165)
        rr = _rr_sinus(rng, duration, 60 / hr, rng.uniform(0.01, 0.06))
    return hr, rr, np.zeros(len(rr), bool), subtypes


def place_subtype_ectopics(rng: np.random.Generator, rr: np.ndarray, subtypes: list[str], info: dict
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Premature beats of an ``O`` recording's ``pvc`` / ``pac`` / ``bigeminy`` subtypes: returns
    ``(rr (n,), ectopic (n,) bool)`` (unchanged and all False without such a subtype) and records the
    kind in ``info["ectopic_kind"]``."""
    kinds = [k for k in ("pvc", "pac", "bigeminy") if k in subtypes]
    if not kinds:
        return rr, np.zeros(len(rr), bool)
    kind = "pac" if kinds[0] == "pac" else "pvc"
    info["ectopic_kind"] = kind
    return _place_ectopics(rng, rr, rng.uniform(0.03, 0.3), kind, kinds[0] == "bigeminy")


def add_f_waves(rng: np.random.Generator, x: np.ndarray, high: float) -> float:
    """Adds AF's fibrillatory waves to ``x`` ``(n,)`` float in place: 1-3 components at 4-9 Hz with a
    wandering phase and amplitude; the amplitude is drawn from ``[0.005, 0.03]`` (p 0.25) or
    ``[0.02, high]`` and returned."""
    n = len(x)
    f_amp = rng.uniform(0.005, 0.03) if rng.random() < 0.25 else rng.uniform(0.02, high)
    for _ in range(rng.integers(1, 4)):
        f0 = rng.uniform(4, 9)
        phase = np.cumsum(2 * np.pi * (f0 + 0.8 * colored_noise(rng, n, 0, 0.5)) / FS)
        env = 1 + 0.4 * colored_noise(rng, n, 0, 0.3)
        x += f_amp * env * np.sin(phase + rng.uniform(0, 2 * np.pi))
    return f_amp


def synthesize_record(rng: np.random.Generator, label: int, n_samples: int) -> tuple[np.ndarray, dict]:
    """One synthetic recording of class ``label`` (index into ``CLASSES``), float32 mV ``[n_samples]``.

    Returns the signal and a dict describing what was generated (rhythm, heart rate, ...).
    """
    if not is_whole(label) or not 0 <= label < len(CLASSES):  # -1 would silently give '~'
        raise ValueError(f"label must be a class index 0..{len(CLASSES) - 1} ({', '.join(CLASSES)}), got {label!r}")
    if not is_whole(n_samples) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    duration = n_samples / FS
    name = CLASSES[label]
    morph = _morphology(rng)
    info: dict = {"label": name}
    if name == "~":  # a noisy recording hides some rhythm
        rhythm = CLASSES[rng.choice(3, p=[0.6, 0.15, 0.25])]
    else:
        rhythm = name
    p_wave, pr = True, rng.uniform(0.14, 0.2)
    hr, rr, ectopic, subtypes = draw_rhythm(rng, rhythm, duration, info)
    if rhythm == "A":
        p_wave = False
    elif rhythm == "O":
        if "wide_qrs" in subtypes:
            morph["qrs_w"] = rng.uniform(0.022, 0.035)
            morph["notch"] = rng.random() < 0.7
        if "av_block1" in subtypes:
            pr = rng.uniform(0.24, 0.36)
        rr, ectopic = place_subtype_ectopics(rng, rr, subtypes, info)
    info.update(rhythm=rhythm, heart_rate=hr, subtypes=subtypes)

    r_times = np.cumsum(rr) - rng.uniform(0, rr[0])
    r_times = r_times[r_times < duration + 1.0]
    rr = rr[: len(r_times)]
    ectopic = ectopic[: len(r_times)]
    beats = _beats(rng, rr, morph, p_wave, pr)
    if ectopic.any():
        e = ectopic
        if info.get("ectopic_kind") == "pvc":  # wide bizarre QRS, no P, discordant T
            polarity = rng.choice([-1.0, 1.0])
            beats["amp"][e, 0] = 0.0
            beats["wid"][e, 1:4] = rng.uniform(0.025, 0.045)
            beats["off"][e, 1], beats["off"][e, 3] = -0.06, 0.07
            beats["amp"][e, 2] = polarity * morph["r_a"] * rng.uniform(1.1, 1.8)
            beats["amp"][e, 4] = -polarity * rng.uniform(0.2, 0.5)
            beats["wid"][e, 4] *= 1.3
        else:  # premature atrial beat: an early, differently shaped P
            beats["amp"][e, 0] = morph["p_a"] * rng.uniform(-0.5, 1.3)
    x = _render(n_samples, r_times, beats)

    if rhythm == "A":  # fibrillatory waves: 4-9 Hz with a wandering phase and amplitude
        info["f_wave_mV"] = add_f_waves(rng, x, 0.12)

    # Everyone: baseline wander, powerline, muscle noise.
    t = np.arange(n_samples) / FS
    for _ in range(rng.integers(1, 4)):
        x += rng.uniform(0.02, 0.25) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3))
    x += rng.uniform(0, 0.03) * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t + rng.uniform(0, 6.3))
    emg = colored_noise(rng, n_samples, 20, 140) * rng.uniform(0.003, 0.03)
    burst = 1 + 3 * (colored_noise(rng, n_samples, 0, 0.3) > 1.5)
    x += emg * burst

    if name == "~":
        x = _corrupt(rng, x, info)
    x = x * rng.uniform(0.4, 2.0) * (-1 if rng.random() < 0.1 else 1)
    x = np.round(np.clip(x, -32.768, 32.767) * 1000) / 1000  # the challenge's int16 ADC at 1000/mV
    return x.astype(np.float32), info


def _corrupt(rng: np.random.Generator, x: np.ndarray, info: dict) -> np.ndarray:
    """The ``~`` class: artefacts over most of the recording (a few hard cases over less)."""
    n = len(x)
    kinds = rng.choice(["motion", "broadband", "leadoff", "spikes"], size=rng.integers(1, 3), replace=False,
                       p=[0.4, 0.3, 0.2, 0.1])
    cover = rng.uniform(0.25, 0.5) if rng.random() < 0.2 else rng.uniform(0.5, 1.0)
    start = int(rng.uniform(0, 1 - cover) * n)
    seg = slice(start, start + int(cover * n))
    m = seg.stop - seg.start
    signal_rms = np.std(x) + 1e-6
    for kind in kinds:
        if kind == "motion":  # electrode motion: large, slow, non-stationary
            x[seg] += signal_rms * rng.uniform(1.5, 5) * colored_noise(rng, m, 0.3, 12)
        elif kind == "broadband":
            snr_db = rng.uniform(-6, 3)
            x[seg] += signal_rms * 10 ** (-snr_db / 20) * rng.standard_normal(m)
        elif kind == "leadoff":  # flat line (electrode off) with saturation jumps
            level = rng.uniform(-3, 3)
            x[seg] = level + 0.002 * rng.standard_normal(m)
            jumps = rng.integers(seg.start, seg.stop, rng.integers(1, 6))
            for j in jumps:
                x[j:j + rng.integers(30, 300)] = rng.choice([-5.0, 5.0])
        else:  # spikes
            idx = rng.integers(seg.start, seg.stop, rng.integers(20, 200))
            x[idx] += rng.normal(0, 3 * signal_rms, len(idx))
    info["artefacts"] = list(kinds)
    info["artefact_fraction"] = cover
    return x


def synthesize_dataset(
    num_records: int, seed: int = 0, class_probs: tuple[float, ...] = _CHALLENGE_CLASS_PROBS,
    min_seconds: float = 9.0, max_seconds: float = 60.0, fixed_fraction: float = 0.6,
    fixed_seconds: float = 30.0, progress: bool = False, generator: str = "simple", templates: str = "",
) -> ECGDataset:
    """``num_records`` synthetic recordings; record ``i`` depends only on ``(seed, i)``.

    ``class_probs`` (N, A, O, ~) default to the challenge's training-set proportions. A
    ``fixed_fraction`` of the records are ``fixed_seconds`` long (the challenge's 30 s),
    the rest uniform in ``[min_seconds, max_seconds]``. ``generator``: ``"simple"`` (this
    module's Gaussian-wave beats) or ``"realistic"`` (:mod:`jaxcomp.ecg.realistic`: real beats
    and noise from the template bank ``templates``, ``""`` = the shipped one); both draw the
    same labels and lengths for the same seed.
    """
    if generator not in ("simple", "realistic"):
        raise ValueError(f"unknown synthetic generator {generator!r}; use 'simple' or 'realistic'")
    bank = None
    if generator == "realistic":
        from jaxcomp.ecg.realistic import load_template_bank, synthesize_realistic_record

        bank = load_template_bank(templates)
    probs = np.asarray(class_probs, np.float64)
    if probs.shape != (len(CLASSES),) or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"class_probs must be {len(CLASSES)} non-negative numbers (N, A, O, ~), got {class_probs}")
    if not 64 / FS <= min_seconds <= max_seconds:
        raise ValueError(f"need {64 / FS:.3f} <= min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    probs = probs / probs.sum()
    signals, labels, names = [], [], []
    iterator = range(num_records)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc="synthesizing", mininterval=5.0)
    for i in iterator:
        rng = np.random.default_rng([seed, i, 8])
        label = int(rng.choice(len(CLASSES), p=probs))
        seconds = fixed_seconds if rng.random() < fixed_fraction else rng.uniform(min_seconds, max_seconds)
        seconds = float(np.clip(seconds, min_seconds, max_seconds))
        if bank is None:
            signal, _ = synthesize_record(rng, label, int(seconds * FS))
        else:
            signal, _ = synthesize_realistic_record(rng, label, int(seconds * FS), bank)
        signals.append(signal)
        labels.append(label)
        names.append(f"{'S' if bank is None else 'R'}{seed:03d}_{i:05d}")
    kind = "synthetic" if bank is None else "realistic synthetic"
    return ECGDataset(names, signals, np.array(labels, np.int32), FS, f"{kind} (seed {seed})")
