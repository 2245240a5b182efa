"""ECG: challenge-format records for prediction, the shipped classifier, the prediction command, training
from a challenge directory (slow), early stopping (slow)."""

import csv
import importlib
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from scipy.io import savemat

from jaxcomp.ecg.challenge import (
    find_records,
    read_challenge_record,
    write_challenge_directory,
    write_challenge_record,
)
from jaxcomp.ecg.data import CLASSES, ECGDataError

REPO = pathlib.Path(__file__).resolve().parents[1]


def _script(name):
    """experiments/NAME.py as a module (conftest puts the project on sys.path)."""
    return importlib.import_module(f"experiments.{name}")


def _header(directory, name, fs, n, file=None):
    with open(os.path.join(directory, name + ".hea"), "w") as f:
        f.write(f"{name} 1 {fs} {n}\n{file or name + '.mat'} 16+24 1000/mV 16 0 0 0 0 ECG\n")


def test_reader_subtracts_the_baseline_and_divides_by_the_gain(tmp_path):
    """Millivolts are ``(adc - baseline) / gain``, the baseline given as ``gain(baseline)`` or, without
    it, as the ADC zero (WFDB), e.g. MIT-BIH's 200(1024)/mV."""
    adc = np.array([1024, 1224, 824, 1124] * 100, np.int16)
    savemat(str(tmp_path / "B1.mat"), {"val": adc[None]}, format="4")
    savemat(str(tmp_path / "B2.mat"), {"val": adc[None]}, format="4")
    with open(tmp_path / "B1.hea", "w") as f:
        f.write("B1 1 300 400\nB1.mat 16+24 200(1024)/mV 16 0 0 0 0 ECG\n")
    with open(tmp_path / "B2.hea", "w") as f:
        f.write("B2 1 300 400\nB2.mat 16+24 200/mV 16 1024 0 0 0 ECG\n")
    expected = (adc.astype(np.float64) - 1024) / 200
    for name in ("B1", "B2"):
        np.testing.assert_allclose(read_challenge_record(str(tmp_path / name)), expected, atol=1e-6)
    # other WFDB units come back in millivolts: 200000 ADC units per V are 200 per mV; unknown units refused
    for name, unit, factor in (("B3", "200000/V", 1.0), ("B4", "0.2/uV", 1.0), ("B5", "200/V", 1000.0)):
        savemat(str(tmp_path / f"{name}.mat"), {"val": adc[None]}, format="4")
        with open(tmp_path / f"{name}.hea", "w") as f:
            f.write(f"{name} 1 300 400\n{name}.mat 16+24 {unit} 16 1024 0 0 0 ECG\n")
        np.testing.assert_allclose(read_challenge_record(str(tmp_path / name)), expected * factor, rtol=1e-5)
    savemat(str(tmp_path / "B6.mat"), {"val": adc[None]}, format="4")
    with open(tmp_path / "B6.hea", "w") as f:
        f.write("B6 1 300 400\nB6.mat 16+24 200/mmHg 16 1024 0 0 0 ECG\n")
    with pytest.raises(ECGDataError, match=r"record B6: the header's amplitude unit 'mmHg' is not one of mV"):
        read_challenge_record(str(tmp_path / "B6"))


def test_reader_round_trip_and_resampling(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.5, 3000).astype(np.float32)
    hea, mat = write_challenge_record(str(tmp_path), "R1", x)
    assert open(hea).readline().split() == ["R1", "1", "300", "3000"]
    for path in (mat, hea, mat[:-4]):  # .mat, .hea or the bare record name
        y = read_challenge_record(path)
        assert y.dtype == np.float32 and y.shape == (3000,)
        np.testing.assert_allclose(y, x, atol=0.5e-3 + 1e-6)  # int16 ADC at 1000/mV: 1 uV steps
    # a 500 Hz record: resampled to 300 Hz, same duration and waveform (5 Hz sine)
    t = np.arange(5000) / 500.0
    write_challenge_record(str(tmp_path), "R500", np.sin(2 * np.pi * 5 * t), fs=500)
    y = read_challenge_record(str(tmp_path / "R500.mat"))
    assert y.shape == (3000,)
    t3 = np.arange(3000) / 300.0
    np.testing.assert_allclose(y[100:-100], np.sin(2 * np.pi * 5 * t3)[100:-100], atol=0.01)
    with pytest.raises(ECGDataError, match=r"record R500: sampling rate 500 Hz, expected 300 Hz"):
        read_challenge_record(str(tmp_path / "R500.mat"), resample=False)


def test_bad_files_give_clear_errors(tmp_path):
    d = str(tmp_path)

    def refused(name, message):
        with pytest.raises(ECGDataError, match=message):
            read_challenge_record(os.path.join(d, f"{name}.mat"))

    x = np.random.default_rng(1).normal(0, 0.3, 900)
    write_challenge_record(d, "good", x)
    os.remove(os.path.join(d, "good.hea"))
    refused("good", r"record good: no header .*good\.hea")
    write_challenge_record(d, "fs", x)
    _header(d, "fs", 3, 900)
    refused("fs", r"record fs: sampling rate 3 Hz .* not plausible")
    _header(d, "junk", 300, 900)
    with open(os.path.join(d, "junk.mat"), "wb") as f:
        f.write(os.urandom(200))
    refused("junk", r"record junk: .*junk\.mat is not a readable MATLAB file")
    write_challenge_record(d, "cut", x)
    data = open(os.path.join(d, "cut.mat"), "rb").read()
    with open(os.path.join(d, "cut.mat"), "wb") as f:
        f.write(data[: len(data) // 2])
    refused("cut", r"record cut: .*(corrupt or truncated|truncated or mismatched)")
    savemat(os.path.join(d, "empty.mat"), {"val": np.zeros((1, 0), np.int16)}, format="4")
    _header(d, "empty", 300, 0)
    refused("empty", r"record empty: empty signal")
    write_challenge_record(d, "short", x)
    _header(d, "short", 300, 1200)
    refused("short", r"record short: 900 samples .* header says 1200")
    savemat(os.path.join(d, "novar.mat"), {"ecg": np.zeros((1, 900), np.int16)}, format="4")
    _header(d, "novar", 300, 900)
    refused("novar", r"record novar: .* no variable 'val' \(it has: ecg\)")
    savemat(os.path.join(d, "twolead.mat"), {"val": np.zeros((2, 900), np.int16)}, format="4")
    _header(d, "twolead", 300, 900)
    refused("twolead", r"record twolead: 'val' .* shape \(2, 900\); expected one lead")
    with pytest.raises(ECGDataError, match=r"no such record"):
        find_records(os.path.join(d, "nothere.mat"))
    os.makedirs(os.path.join(d, "void"))
    with pytest.raises(ECGDataError, match=r"no challenge records"):
        find_records(os.path.join(d, "void"))


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    from jaxcomp.ecg.synthetic import synthesize_dataset

    d = tmp_path_factory.mktemp("records")
    data = synthesize_dataset(3, seed=7, min_seconds=9.0, max_seconds=14.0)
    names = write_challenge_directory(str(d), data.signals, data.labels)
    _header(str(d), "Z_bad", 300, 10)  # a header whose .mat is missing
    return d, names, data


def test_predict_command_with_the_shipped_model(records_dir, tmp_path, capsys):
    main = _script("ecg_predict").main
    from jaxcomp.ecg.pretrained import DEFAULT_MODEL, load_classifier

    d, names, data = records_dir
    assert os.path.getsize(DEFAULT_MODEL) < 2 * 2**20
    notes = json.load(open(DEFAULT_MODEL[:-8] + ".json"))["training"]
    assert 0 < notes["val_f1"] <= 1 and notes["steps"] > 0
    out = str(tmp_path / "pred.csv")
    assert main([str(d), "--out", out, "--batch-size", "4", "--quiet"]) == 1  # one bad record: status 1
    captured = capsys.readouterr()
    assert "record Z_bad: no signal file" in captured.err
    rows = list(csv.DictReader(open(out)))
    assert [r["record"] for r in rows] == names + ["Z_bad"]
    p = np.array([[float(r[k]) for k in ("p_N", "p_A", "p_O", "p_noisy")] for r in rows[:3]])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p >= 0).all() and [r["class"] for r in rows[:3]] == [CLASSES[i] for i in p.argmax(1)]
    assert rows[3]["class"] == "" and "no signal file" in rows[3]["error"]
    for name, r in zip(names, rows):  # the printed table agrees with the CSV
        assert f"{name:<12} {r['class']:<5}  {float(r['p_N']):.3f}" in captured.out
    # the library call gives the same probabilities for the signals as read (the CSV rounds to 1e-6)
    clf = load_classifier(batch_size=4)
    signals = [read_challenge_record(os.path.join(str(d), n)) for n in names]
    np.testing.assert_allclose(clf.predict_proba(signals), p, atol=2e-6)
    np.testing.assert_allclose(clf.predict_proba([signals[0][None]]), p[:1], atol=2e-6)  # [1, n]: one lead
    with pytest.raises(ECGDataError, match=r"expects a list of recordings, got one array"):
        clf.predict_proba(signals[0])
    with pytest.raises(ECGDataError, match=r"record 0: the samples must be real numbers"):
        clf.predict_proba([signals[0] > 0])
    with pytest.raises(ECGDataError, match=r"record 1: expected a single-lead signal, got shape \(2, "):
        clf.predict_proba([signals[0], np.stack([signals[1], signals[1]])])  # two leads, not one long one
    with pytest.raises(ECGDataError, match=r"record 1: samples up to 1e\+30 mV"):  # NaN probabilities before
        clf.predict_proba([signals[0], np.full_like(signals[1], 1e30)])
    # a recording in volts is warned about (the log floor makes its probabilities depend on the scale)
    with pytest.warns(UserWarning, match=r"recordings \[1\] have a standard deviation below 0.02 mV"):
        clf.predict_proba([signals[0], signals[1] * 1e-3])
    # a batch size above the number of recordings: the same probabilities, no rows of filler (a user's
    # --batch-size 100000 allocated 90 GB)
    big, shapes = load_classifier(batch_size=1000), []
    logits = big._logits
    big._logits = lambda v, signal, length: (shapes.append(signal.shape), logits(v, signal, length))[1]
    np.testing.assert_allclose(big.predict_proba(signals), p, atol=2e-6)
    assert shapes and max(rows for rows, _ in shapes) < 2 * len(signals)  # rounded up to a power of two
    # ... and the padded, batched call equals the model on a recording alone, unpadded
    x = signals[0]
    z = np.asarray(clf._logits(clf._device_variables, x[None], np.array([len(x)], np.int32)), np.float64)[0]
    np.testing.assert_allclose(np.exp(z - z.max()) / np.exp(z - z.max()).sum(), p[0], atol=1e-4)
    assert main([str(d / "nothere.mat")]) == 2
    assert main([str(d), "--model", str(tmp_path / "missing.msgpack")]) == 2
    assert "cannot load the model" in capsys.readouterr().err
    # a workdir of another system is named as such before its checkpoint is read (it said
    # "no model_state.batch_stats" of an L3C run); a missing path is named
    other_run = tmp_path / "l3c_run"
    other_run.mkdir()
    (other_run / "config.json").write_text('{"task": "l3c"}')
    for model, why in ((other_run, "holds a 'l3c' model, not 'ecg'"), (tmp_path / "no_run", "checkpoint not found")):
        assert main([str(d), "--model", str(model), "--quiet"]) == 2
        assert why in capsys.readouterr().err
    # a .json edited to another architecture than its .msgpack (the SHA covers the parameters only) is
    # refused by name, not a Flax ScopeParamShapeError at the first recording
    from jaxcomp.ecg.pretrained import DEFAULT_MODEL

    edited = tmp_path / "edited" / "ecg.msgpack"
    edited.parent.mkdir()
    shutil.copy(DEFAULT_MODEL, edited)
    notes = json.loads(open(DEFAULT_MODEL[:-len(".msgpack")] + ".json").read())
    notes["config"]["model"]["channels"] *= 2
    (tmp_path / "edited" / "ecg.json").write_text(json.dumps(notes))
    assert main([str(d), "--model", str(edited), "--quiet"]) == 2
    assert "parameters do not fit the architecture its .json describes" in capsys.readouterr().err
    # --out never replaces a folder, an input record or a file that is not an earlier predictions CSV
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    mat = os.path.join(str(d), names[0] + ".mat")
    before = open(mat, "rb").read()
    for bad, why in ((str(tmp_path), "is a folder"), (mat, "is one of the input records"),
                     (str(keep), "not a predictions CSV")):
        assert main([str(d), "--out", bad, "--quiet"]) == 2
        assert why in capsys.readouterr().err
    assert open(mat, "rb").read() == before and keep.read_text() == "mine"
    # two inputs with one name (another folder's record named like the first): each keeps its own
    # prediction, named by its path
    other = tmp_path / "other"
    other.mkdir()
    for ext in (".mat", ".hea"):
        shutil.copy(os.path.join(str(d), names[1] + ext), other / (names[0] + ext))
    assert main([os.path.join(str(d), names[0] + ".mat"), str(other), "--out", out, "--quiet"]) == 0
    twins = list(csv.DictReader(open(out)))  # replaces the earlier predictions CSV
    assert [r["record"] for r in twins] == [os.path.join(str(d), names[0]), os.path.join(str(other), names[0])]
    for r, want in zip(twins, (p[0], p[1])):
        np.testing.assert_allclose([float(r[k]) for k in ("p_N", "p_A", "p_O", "p_noisy")], want, atol=2e-6)


def _tiny_overrides(directory):
    return [f"data.path={directory}", "data.num_folds=3", "data.batch_size=4", "data.buckets=(10.0,)",
            "model.conv_blocks=2", "model.crnn_conv_blocks=1", "model.layers_per_block=1", "model.kernel=3",
            "model.channels=4", "model.growth=4", "model.lstm_layers=1", "model.lstm_units=8",
            "steps=4", "log_every=2", "eval_every=4", "checkpoint_every=4", "eval_batch_size=8",
            "validation.every=2", "validation.patience=0"]


@pytest.mark.slow
def test_paper_config_trains_from_a_challenge_directory_and_predicts(tmp_path):
    """configs/ecg.py:paper reads challenge-format data: train a tiny model from a directory written
    here (the trainer's path and the validation/early-stopping path), export the best, predict with it."""
    predict_main, train_main = _script("ecg_predict").main, _script("train").main
    from jaxcomp.configs import load_config
    from jaxcomp.ecg.experiments import build_training_data, train_with_validation
    from jaxcomp.ecg.synthetic import synthesize_dataset
    from jaxcomp.ecg.task import ECGTask

    data = synthesize_dataset(24, seed=5, min_seconds=9.0, max_seconds=12.0)
    d = str(tmp_path / "training2017")
    write_challenge_directory(d, data.signals, data.labels)
    overrides = _tiny_overrides(d)
    paper = str(REPO / "configs/ecg.py:paper")
    assert train_main(["--config", paper, "--workdir", str(tmp_path / "plain"), "--no-progress"]
                      + [f"--config.{o}" for o in overrides]) == 0
    config = load_config(paper, overrides)
    assert config.data.source == "challenge"
    batches = build_training_data(config)
    assert batches.dataset.source == d and len(batches.dataset) == 24
    assert len(np.intersect1d(batches.val_idx, batches.train_idx)) == 0 and len(batches.val_idx) >= 3
    workdir = str(tmp_path / "cnn")
    state, info = train_with_validation(config, workdir, ECGTask(config), batches)
    assert [h["step"] for h in info["history"]] == [2, 4]
    assert os.path.isfile(os.path.join(workdir, "best.msgpack"))
    out = str(tmp_path / "pred.csv")
    assert predict_main([d, "--model", os.path.join(workdir, "best.msgpack"), "--out", out, "--quiet"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 24 and all(r["class"] in CLASSES for r in rows)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_validation_step(tmp_path):
    import jax

    from jaxcomp.configs import load_config
    from jaxcomp.ecg.experiments import build_training_data, predict_split, train_with_validation
    from jaxcomp.ecg.scoring import challenge_f1, confusion_matrix
    from jaxcomp.ecg.task import ECGTask
    from jaxcomp.modelfile import load_model

    config = load_config(str(REPO / "configs/ecg.py:tiny_cnn"), ["steps=12", "validation.every=1",
                                                                 "validation.patience=3", "checkpoint_every=12",
                                                                 "eval_every=12"])
    task, data = ECGTask(config), build_training_data(config)
    state, info = train_with_validation(config, str(tmp_path / "run"), task, data)
    f1 = [h["f1"] for h in info["history"]]
    best = max(range(len(f1)), key=lambda i: (f1[i], i))  # the last of the best scores
    assert info["best_step"] == info["history"][best]["step"]
    if info["stopped_at"] is not None:  # stopped exactly `patience` scores after the best
        assert info["stopped_at"] == info["best_step"] + 3 and len(f1) == best + 4
    else:
        assert len(f1) == 12 and len(f1) - 1 - best < 3
    labels, preds, _, _ = predict_split(task, state, data, 16, data.val_idx)
    assert challenge_f1(confusion_matrix(labels, preds)) == pytest.approx(info["best_val_f1"], abs=1e-6)
    _, variables, notes = load_model(str(tmp_path / "run" / "best.msgpack"), "ecg")
    assert notes["best_step"] == info["best_step"]
    # validation.min_steps: no early stop before it (the reference never stops before epoch 300)
    from jaxcomp.configs import apply_overrides

    patient = apply_overrides(config, ["validation.patience=1", "validation.min_steps=12"])
    _, info = train_with_validation(patient, str(tmp_path / "patient"), ECGTask(patient), data)
    assert info["stopped_at"] is None and [h["step"] for h in info["history"]] == list(range(1, 13))
    for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, np.asarray(b))
