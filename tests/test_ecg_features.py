"""ECG feature baseline: the Pan-Tompkins-style QRS detector and the record features (fast, numpy only)."""

import numpy as np
import pytest

from jaxcomp.ecg.data import FS
from jaxcomp.ecg.features import FEATURE_NAMES, detect_qrs, feature_matrix, record_features
from jaxcomp.ecg.synthetic import synthesize_record

_F = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _beat_train(r_times: np.ndarray, seconds: float, fs: int = FS, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """A simple ECG: per beat a narrow R (1 mV, sigma 12 ms), a small S and a broad T wave, plus noise."""
    t = np.arange(int(seconds * fs)) / fs
    x = np.zeros_like(t)
    for r in r_times:
        x += 1.0 * np.exp(-0.5 * ((t - r) / 0.012) ** 2)
        x -= 0.25 * np.exp(-0.5 * ((t - r - 0.03) / 0.01) ** 2)
        x += 0.3 * np.exp(-0.5 * ((t - r - 0.25) / 0.05) ** 2)
    return x + noise * np.random.default_rng(seed).standard_normal(len(t))


@pytest.mark.parametrize("bpm", [50.0, 75.0, 140.0, 200.0])  # 200: RR 0.3 s, past a longer refractory time
def test_detector_regular_rhythm(bpm):
    rr = 60.0 / bpm
    r_times = np.arange(0.4, 20.0 - 0.3, rr)
    peaks = detect_qrs(_beat_train(r_times, 20.0), FS)
    assert abs(len(peaks) - len(r_times)) <= 1
    assert abs(np.mean(np.diff(peaks)) / FS / rr - 1) < 0.02
    feats = record_features(_beat_train(r_times, 20.0), FS)
    assert abs(feats[_F["rr_mean"]] / rr - 1) < 0.02
    assert abs(feats[_F["beats_per_s"]] - len(r_times) / 20.0) <= 1 / 20.0


def test_detector_places_r_peaks_of_either_polarity():
    """Beats whose QRS points down (an inverted lead) are located at their R peak, as upright ones:
    within one sample at 300 Hz."""
    r_times = np.arange(0.4, 19.7, 0.8)
    true = np.round(r_times * FS).astype(int)
    for sign in (1.0, -1.0):
        peaks = detect_qrs(sign * _beat_train(r_times, 20.0), FS)
        assert len(peaks) == len(true)
        assert np.abs(peaks[:, None] - true[None]).min(1).max() <= 1, sign


def test_detector_on_project_generator():
    """A synthetic normal-sinus recording (jaxcomp.ecg.synthetic): beats within +-1 of heart rate x duration."""
    x, info = synthesize_record(np.random.default_rng([5, 0, 0]), 0, 30 * FS)
    peaks = detect_qrs(x, FS)
    expected = info["heart_rate"] / 60.0 * 30.0
    assert abs(len(peaks) - expected) <= 1.5
    assert abs(np.mean(np.diff(peaks)) / FS / (60.0 / info["heart_rate"]) - 1) < 0.03


@pytest.mark.parametrize("signal", [np.zeros(9000), np.zeros(200), np.zeros(10), np.zeros(0), np.ones(3000),
                                    np.r_[np.zeros(1500), 5.0, np.zeros(1500)]],
                         ids=["zeros_30s", "zeros_short", "ten_samples", "empty", "constant", "one_spike"])
def test_features_of_degenerate_input_are_the_documented_fallbacks(signal):
    """Finite, and the values the fallbacks define (record_features zeroes NaN last, so finiteness alone
    would pass a feature that broke into NaN): no beat, or one, gives one RR "interval" as long as the
    recording; a flat recording has no spectrum (log of the floor) and is all flat samples."""
    f = record_features(signal, FS)
    assert f.dtype == np.float64 and f.shape == (len(FEATURE_NAMES),)
    assert np.all(np.isfinite(f))
    v = dict(zip(FEATURE_NAMES, f))
    duration = max(len(signal), 1) / FS
    beats = 1 if signal.max(initial=0) > 1 else 0  # the spike is one beat, not its filter's ringing
    assert v["duration_s"] == pytest.approx(duration)
    assert v["beats_per_s"] == pytest.approx(beats / duration)
    for name in ("rr_mean", "rr_median"):
        assert v[name] == pytest.approx(duration), name
    for name in ("rr_min_ratio", "rr_max_ratio", "frac_beats_corr_below_0.8"):
        assert v[name] == 1.0, name
    for name in ("rr_std", "rr_cv", "rr_mad_cv", "rmssd", "pnn50", "pnn20", "rr_range_norm", "template_corr_mean"):
        assert v[name] == 0.0, name
    if beats == 0:  # flat
        assert v["frac_flat"] == 1.0 and v["std"] == 0.0 and v["p99_minus_p1"] == 0.0
        assert v["logpow_total"] == pytest.approx(np.log(1e-12))


def test_rr_std_ordering_and_value():
    rng = np.random.default_rng(1)
    regular = np.arange(0.4, 29.5, 0.8)
    rr_irregular = 0.8 * np.exp(rng.normal(0, 0.2, 60))  # AF-like, CV ~ 20 %
    irregular = 0.4 + np.concatenate([[0], np.cumsum(rr_irregular)])
    irregular = irregular[irregular < 29.5]
    f_reg = record_features(_beat_train(regular, 30.0), FS)
    f_irr = record_features(_beat_train(irregular, 30.0), FS)
    for name in ("rr_std", "rr_cv", "rmssd", "pnn50"):
        assert f_irr[_F[name]] > f_reg[_F[name]] + 0.05 * max(f_irr[_F[name]], 1e-3), name
    assert f_reg[_F["rr_std"]] < 0.01  # one-sample jitter at most
    # the value itself: the std of the true RR intervals (to a few samples of detection jitter)
    true_rr = np.diff(irregular)
    assert abs(f_irr[_F["rr_std"]] - np.std(true_rr)) < 0.01
    assert abs(f_irr[_F["rmssd"]] - np.sqrt(np.mean(np.diff(true_rr) ** 2))) < 0.015


def test_rr_features_equal_their_definitions_on_the_true_intervals():
    """Every RR feature against its definition computed here from the true R times of an irregular
    rhythm (detection moves a peak by a sample or two: small tolerances). pNN20 and pNN50 must differ
    (their thresholds do), and so must each ratio from its neighbours."""
    rng = np.random.default_rng(3)
    rr_true = 0.8 * np.exp(rng.normal(0, 0.15, 60))
    r = 0.4 + np.concatenate([[0], np.cumsum(rr_true)])
    r = r[r < 29.5]
    f = record_features(_beat_train(r, 30.0), FS)
    rr = np.diff(r)
    drr = np.diff(rr)
    med = np.median(rr)
    q75, q25 = np.percentile(rr, [75, 25])
    expected = {
        "duration_s": 30.0, "beats_per_s": len(r) / 30.0, "rr_mean": rr.mean(), "rr_median": med, "rr_std": rr.std(),
        "rr_cv": rr.std() / rr.mean(), "rr_mad_cv": 1.4826 * np.median(np.abs(rr - med)) / med,
        "rmssd": np.sqrt(np.mean(drr**2)), "rmssd_norm": np.sqrt(np.mean(drr**2)) / rr.mean(),
        "pnn50": np.mean(np.abs(drr) > 0.050), "pnn20": np.mean(np.abs(drr) > 0.020),
        "rr_min_ratio": rr.min() / med, "rr_max_ratio": rr.max() / med,
        "rr_range_norm": (rr.max() - rr.min()) / rr.mean(),
        "drr_mean_abs_norm": np.mean(np.abs(drr)) / rr.mean(), "rr_iqr_norm": (q75 - q25) / med,
    }
    assert expected["pnn20"] - expected["pnn50"] > 0.1  # the two thresholds give different fractions here
    for name, value in expected.items():
        tol = 0.04 if name.startswith("pnn") else 0.015 * max(abs(value), 0.05)
        assert abs(f[_F[name]] - value) <= tol, (name, f[_F[name]], value)


def test_feature_matrix_shape():
    X = feature_matrix([np.zeros(600), _beat_train(np.arange(0.4, 9.5, 1.0), 10.0)], FS)
    assert X.shape == (2, len(FEATURE_NAMES)) and X.dtype == np.float64 and np.isfinite(X).all()
    assert feature_matrix([], FS).shape == (0, len(FEATURE_NAMES))


def test_spectral_amplitude_and_beat_shape_features_mean_what_they_say():
    """Values, not just finiteness: a 6 Hz sine peaks at 6 Hz with all its power in the 3-10 Hz band
    and a low spectral entropy; Gaussian noise has excess kurtosis and skewness ~ 0, its std, robust
    std and 1-99 % range; identical beats correlate with their template, inverted ones do not."""
    t = np.arange(30 * FS) / FS
    f = record_features(np.sin(2 * np.pi * 6.0 * t), FS)
    assert abs(f[_F["peak_freq_3_10hz"]] - 6.0) < FS / 512  # Welch's bin width
    assert abs(f[_F["logpow_3_10hz"]]) < 0.01 and f[_F["spectral_entropy"]] < 0.3
    f = record_features(0.5 * np.random.default_rng(0).standard_normal(30 * FS), FS)
    assert abs(f[_F["kurtosis"]]) < 0.15 and abs(f[_F["skewness"]]) < 0.1  # excess kurtosis: 0, not 3
    assert f[_F["std"]] == pytest.approx(0.5, rel=0.03) and f[_F["robust_std"]] == pytest.approx(0.5, rel=0.03)
    assert f[_F["p99_minus_p1"]] == pytest.approx(0.5 * 2 * 2.3263, rel=0.05)
    assert f[_F["spectral_entropy"]] > 0.95
    r = np.arange(0.4, 29.5, 0.8)
    f = record_features(_beat_train(r, 30.0), FS)
    assert f[_F["template_corr_mean"]] > 0.95 and f[_F["frac_beats_corr_below_0.8"]] == 0.0
    inverted = np.arange(len(r)) % 4 == 0  # every fourth beat upside down
    x = _beat_train(r[~inverted], 30.0) - _beat_train(r[inverted], 30.0, noise=0.0)
    f = record_features(x, FS)
    assert f[_F["frac_beats_corr_below_0.8"]] == pytest.approx(inverted.mean(), abs=0.03)
    # a Pearson correlation: a baseline offset (here 3 mV, e.g. an uncorrected DC level) changes nothing
    f_offset = record_features(x + 3.0, FS)
    for name in ("template_corr_mean", "template_corr_p10", "frac_beats_corr_below_0.8"):
        assert f_offset[_F[name]] == pytest.approx(f[_F[name]], abs=1e-6), name


def test_detector_searches_back_for_a_weak_beat():
    """One beat at 45 % amplitude falls below the detection threshold; the search back over the long
    RR gap it leaves finds it, at its R peak."""
    r = np.arange(0.4, 29.5, 0.8)
    weak = np.zeros(len(r), bool)
    weak[20] = True
    x = _beat_train(r[~weak], 30.0) + 0.45 * _beat_train(r[weak], 30.0, noise=0.0)
    peaks = detect_qrs(x, FS)
    assert len(peaks) == len(r)
    assert np.min(np.abs(peaks - r[20] * FS)) <= 3
