"""The realistic synthetic ECG set (jaxcomp.ecg.realistic): real beats and noise from the shipped template bank."""

import os
import pathlib

import numpy as np
import pytest

from jaxcomp.ecg.data import CLASSES, FS, ECGDataError
from jaxcomp.ecg.features import detect_qrs
from jaxcomp.ecg.realistic import (
    BANK_PATH,
    PRE,
    build_template_bank,
    load_template_bank,
    synthesize_realistic_record,
)
from jaxcomp.ecg.synthetic import synthesize_dataset

SHARED_ECG = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ecg"


@pytest.fixture(scope="module")
def bank():
    return load_template_bank()


def test_class_balance_matches_challenge_and_simple_generator():
    """Labels follow class_probs (N 59, A 9, O 28, ~ 4 %) and equal the simple generator's for the same seed."""
    kw = dict(min_seconds=1.0, max_seconds=1.0, fixed_fraction=0.0)
    real = synthesize_dataset(200, 3, generator="realistic", **kw)
    simple = synthesize_dataset(200, 3, generator="simple", **kw)
    np.testing.assert_array_equal(real.labels, simple.labels)
    share = np.bincount(real.labels, minlength=4) / 200
    for got, want in zip(share, (0.59, 0.09, 0.28, 0.04)):
        assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / 200), (share, CLASSES)
    assert real.source.startswith("realistic synthetic") and real.names[0].startswith("R")


def test_lengths_like_the_challenge_and_determinism():
    """Lengths within 9-61 s at 300 Hz (60 % exactly 30 s); the same seed gives the same signals."""
    a = synthesize_dataset(16, 5, min_seconds=9.0, max_seconds=61.0, generator="realistic")
    b = synthesize_dataset(16, 5, min_seconds=9.0, max_seconds=61.0, generator="realistic")
    c = synthesize_dataset(2, 6, min_seconds=9.0, max_seconds=61.0, generator="realistic")
    assert a.fs == FS
    assert a.lengths.min() >= 9 * FS and a.lengths.max() <= 61 * FS
    assert (a.lengths == 30 * FS).sum() >= 4 and (a.lengths != 30 * FS).sum() >= 2
    for x, y in zip(a.signals, b.signals):
        np.testing.assert_array_equal(x, y)
    assert all(s.dtype == np.float32 and np.isfinite(s).all() for s in a.signals)
    assert not np.array_equal(a.signals[0][:2000], c.signals[0][:2000])


def _rr_cv(x: np.ndarray) -> float:
    rr = np.diff(detect_qrs(x, FS)) / FS
    return float(rr.std() / rr.mean())


def test_af_is_irregularly_irregular(bank):
    """Detected RR intervals: every AF record's coefficient of variation is above the normal records' median."""
    cv_n = [_rr_cv(synthesize_realistic_record(np.random.default_rng([1, i]), 0, 20 * FS, bank)[0]) for i in range(6)]
    cv_a = [_rr_cv(synthesize_realistic_record(np.random.default_rng([2, i]), 1, 20 * FS, bank)[0]) for i in range(6)]
    assert np.median(cv_a) > 2 * np.median(cv_n), (cv_a, cv_n)
    assert min(cv_a) > np.median(cv_n), (cv_a, cv_n)


def _median_beat(x: np.ndarray, r_times: np.ndarray) -> np.ndarray:
    idx = np.round(r_times * FS).astype(int)
    idx = idx[(idx >= PRE) & (idx + 135 <= len(x))]
    return np.median(np.stack([x[i - PRE:i + 135] for i in idx]), 0)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_realistic_beats_correlate_with_the_real_templates(bank):
    """The median beat of a normal record is the real template of its source; its PVCs are real PVCs."""
    for seed in range(3):
        x, info = synthesize_realistic_record(np.random.default_rng([9, seed]), 0, 30 * FS, bank)
        real = np.median(bank[f"normal_{info['source']}"], 0)[: PRE + 135]
        assert abs(_corr(_median_beat(x, info["r_times"]), real)) > 0.85, info["source"]
    for seed in range(40):  # the first O record with PVCs
        x, info = synthesize_realistic_record(np.random.default_rng([10, seed]), 2, 30 * FS, bank)
        if info.get("ectopic_kind") == "pvc":
            break
    r_pvc = info["r_times"][info["ectopic"]]
    pvc = _median_beat(x, r_pvc)
    real_pvc = np.median(bank["pvc_mit"], 0)[: PRE + 135]
    assert abs(_corr(pvc, real_pvc)) > 0.7
    assert abs(_corr(pvc, real_pvc)) > abs(_corr(pvc, np.median(bank["normal_mit"], 0)[: PRE + 135]))


def test_bank_errors_and_generator_option(tmp_path):
    with pytest.raises(ECGDataError, match="mitbih_208_360hz_raw.npy"):
        build_template_bank(str(tmp_path))
    with pytest.raises(ECGDataError, match="not found"):
        load_template_bank(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="generator"):
        synthesize_dataset(2, 0, generator="fancy")
    import ml_collections

    from jaxcomp.ecg.data import load_dataset

    with pytest.raises(ECGDataError, match="data.generator"):
        load_dataset(ml_collections.ConfigDict(dict(source="synthetic", generator="fancy", templates="",
                                                    num_records=2, synthetic_seed=0, min_seconds=1.0,
                                                    max_seconds=1.0, class_probs=())))
    assert os.path.getsize(BANK_PATH) < 1_000_000  # the shipped bank stays small


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_ECG.is_dir(), reason="../shared/data/ecg (the real recordings) not present")
def test_builder_reproduces_the_shipped_bank(tmp_path):
    """Building from the real recordings gives the shipped bank exactly; PVCs are wider than normal beats."""
    built = build_template_bank(str(SHARED_ECG))
    with np.load(BANK_PATH) as shipped:
        for key in ("normal_healthy", "normal_mit", "pvc_mit", "noise_mit", "noise_healthy"):
            np.testing.assert_array_equal(built[key], shipped[key], err_msg=key)
    import json

    counts = json.loads(str(built["meta"]))["counts"]
    assert counts["mit"]["median_width_pvc_s"] > 1.5 * counts["mit"]["median_width_normal_s"]
    assert counts["mit"]["kept_pvc"] >= 50 and counts["healthy"]["pvc"] <= 5
