"""ECG rhythm classification (PhysioNet/CinC 2017): log-spectrogram CNN and CRNN (Zihlmann et al. 2017).

    python -m experiments.train --config configs/ecg.py:cpu_cnn --workdir runs/ecg_cnn
    python -m experiments.train --config configs/ecg.py:cpu_crnn --workdir runs/ecg_crnn \
        --config.stage.init_conv_from=runs/ecg_cnn                  # stage 2 of the CRNN
    python -m experiments.train --config configs/ecg.py:cpu_crnn --workdir runs/ecg_crnn_e2e \
        --config.init_from=runs/ecg_crnn     # then end to end (generic trainer; ecg_cv: as the reference)
    python -m experiments.train --config configs/ecg.py:cnn --workdir runs/cnn \
        --config.data.source=challenge --config.data.path=/path/to/training2017
    python -m experiments.ecg_cv --config configs/ecg.py:cpu_cnn --workdir runs/ecg_cv   # 5-fold CV

The default data are *synthetic* recordings (jaxcomp.ecg.synthetic; no AF recordings can be
shipped); data.source=challenge reads the real training2017/ directory. data.fold picks the
held-out fold of data.num_folds stratified folds (fold_seed) for evaluation.

Variants:
  paper             = cnn reading the real challenge data: --config.data.path=/path/to/training2017
  cnn, crnn         the paper's networks and training setting: 6 blocks x 4 conv layers (5x5,
                    32 channels + 32 per block); CRNN = 4 of those blocks + a forward and a backward
                    stack of 3 LSTMs (100 units each, "200 neurons" in the reference code), outputs
                    averaged over time; dropout 0.15, Adam 1e-3, batch 20; random resampling (60-120
                    bpm for 80 bpm) and dropout bursts. The CRNN is trained in stages:
                    train `cnn`, then `crnn` with stage.init_conv_from=<the cnn workdir>, then
                    (the reference's phases 2-4) the whole `crnn` with init_from=<that workdir>;
                    experiments/ecg_cv.py runs all of them (cv.models "crnn_e2e").
  cpu_cnn, cpu_crnn what 2 shared CPU cores can train in minutes: 4 blocks x 2 layers of 3x3
                    (16 channels + 16 per block), CRNN = 3 blocks + 2-layer LSTM stacks of 32 units per direction;
                    2000 synthetic recordings of 9-30 s, all padded to 30 s (one compiled shape);
                    300 steps of batch 16, Adam 3e-3 with cosine decay (CRNN stage 2: 200 steps);
                    resampling 0.8-1.2; the reference's class weights and oversampling, as every
                    variant (loss, sampling; see docs/ecg.md).
  tiny_cnn, tiny_crnn  seconds, for tests.
"""

import ml_collections

VARIANTS = ("cnn", "crnn", "paper", "cpu_cnn", "cpu_crnn", "tiny_cnn", "tiny_crnn")


def get_config(variant: str = "cnn") -> ml_collections.ConfigDict:
    if variant not in VARIANTS and variant != "":
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    variant = variant or "cnn"
    paper = variant == "paper"  # the paper's CNN (stage 1) on the real CinC 2017 data: needs data.path
    variant = "cnn" if paper else variant
    c = ml_collections.ConfigDict()
    c.task = "ecg"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        source="synthetic",        # synthetic | challenge (data.path = training2017/)
        path="",
        limit=0,                   # challenge: read only the first records (0 = all)
        num_records=8528,          # synthetic: as many as the challenge's training set
        synthetic_seed=0,
        class_probs=(0.59, 0.09, 0.28, 0.04),  # synthetic N, A, O, ~: the challenge's training-set shares
        generator="simple",        # synthetic: simple (Gaussian-wave beats) | realistic (real beats + noise)
        templates="",              # realistic: template bank .npz ("" = jaxcomp/ecg/templates/ecg_templates.npz)
        min_seconds=9.0, max_seconds=60.0,
        num_folds=5, fold=0, fold_seed=0,
        buckets=(15.0, 30.0),      # padded lengths (s); one more bucket fits the longest recording
        batch_size=20,
        class_weight_power=1.0,    # with loss.class_weights="power": class c weighs (n / (4 n_c)) ** power
        seed=0,
    ))
    c.model = ml_collections.ConfigDict(dict(
        name="cnn", conv_blocks=6, crnn_conv_blocks=4, layers_per_block=4, kernel=5, channels=32, growth=32,
        dropout=0.15, lstm_layers=3, lstm_units=100, bn_momentum=0.99, normalize=True,
    ))
    c.augment = ml_collections.ConfigDict(dict(
        enabled=True, resample=True, min_factor=2 / 3, max_factor=4 / 3,   # 80 bpm -> 60..120 bpm
        bursts=True, burst_rate=0.0228, burst_samples=11,                  # P(N(0,1) > 2), 37 ms (depth=10)
    ))
    c.stage = ml_collections.ConfigDict(dict(init_conv_from="", freeze_conv=True))
    # Training as the reference code (github.com/yruffiner/ecg-classification, models/*_paper.json);
    # read by jaxcomp.ecg.experiments (experiments/ecg_cv.py, the shipped model). See docs/ecg.md.
    # loss.class_weights: "reference" = (1 - class_penalty) + class_penalty / p_c (p_c: the class's share
    # of the training split; 0.2 as the reference), "power" = (n / (4 n_c)) ** data.class_weight_power.
    c.loss = ml_collections.ConfigDict(dict(class_weights="reference", class_penalty=0.2))
    # sampling.oversample: the reference's dataset_compensation; class c is drawn floor(oversample / p_c) + 1
    # times as often as its share (0.2: N, O x1, A x3, ~ x7 on the challenge's shares); 0 = off
    c.sampling = ml_collections.ConfigDict(dict(oversample=0.2))
    # validation: a stratified share of the training folds (reference: 1/6), scored (challenge F1) every
    # `every` steps; the best step's parameters are kept (WORKDIR/best.msgpack) and used; training stops
    # after `patience` scores without improvement (0 = never stops early). fraction 0 = no validation.
    # paper: every ~5 epochs of the 5685 training recordings, stop after 20 scores (the reference's 100 epochs),
    # but never before min_steps (the reference's `epoch > 300` condition: 300 epochs of 284 batches of 20)
    c.validation = ml_collections.ConfigDict(dict(fraction=1 / 6, every=1_500, patience=20, min_steps=85_200,
                                                  seed=0))
    # experiments/ecg_cv.py: which models, seeds and folds; the CRNN's stage-2 steps; its end-to-end
    # phases ("crnn_e2e", the reference's phases 2-4: 200 epochs each of the whole CRNN, each from the
    # previous phase's best validation model). The reference divides its learning rate by 10 and 100
    # for phases 3 and 4 after its Adam optimizer was built with the rate as a constant, so all three
    # ran at 1e-3 (train.py::trainCRNN, network.py::build); (1, 0.1, 0.01) gives the intended decay.
    c.cv = ml_collections.ConfigDict(dict(models=("cnn", "crnn", "crnn_e2e"), seeds=(0,), folds=(),
                                          crnn_steps=20_000, crnn_e2e_phases=3, crnn_e2e_steps=56_800,
                                          crnn_e2e_lr_factors=(1.0, 1.0, 1.0),
                                          # seconds for the whole command (0: none); the same command continues
                                          time_limit=0.0))
    c.init_from = ""  # a trained ECG model (workdir or .msgpack) to start from: parameters and batch statistics
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="constant", decay_steps=0, warmup_steps=0, grad_clip=0.0,
    ))
    c.steps = 142_000  # the reference's at most 500 epochs of 5685 recordings at batch 20 (284 batches each)
    c.log_every = 100
    c.eval_every = 2_000
    c.checkpoint_every = 2_000
    c.keep = 2
    c.eval_batch_size = 20
    c.distributed = False

    if variant.startswith("cpu"):
        c.data.update(num_records=2000, max_seconds=30.0, buckets=(), batch_size=16)  # one shape: one compile
        c.model.update(conv_blocks=4, crnn_conv_blocks=3, layers_per_block=2, kernel=3, channels=16, growth=16,
                       lstm_layers=2, lstm_units=32, bn_momentum=0.9)
        # read only with loss.class_weights="power" (not these variants' "reference"); kept so that the
        # settings, and with them the digests of their finished runs, stay as they were
        c.data.class_weight_power = 0.5
        c.augment.update(min_factor=0.8, max_factor=1.2)  # milder: brady-/tachycardia are class O here
        c.optimizer.update(learning_rate=3e-3, schedule="cosine", decay_steps=300, warmup_steps=20, grad_clip=5.0)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 300, 20, 300, 300
        c.eval_batch_size = 32
        c.validation.update(every=25, patience=0, min_steps=0)  # short cosine runs: keep the best, never stop early
    elif variant.startswith("tiny"):
        c.data.update(num_records=96, min_seconds=2.0, max_seconds=6.0, buckets=(4.0,), batch_size=8,
                      num_folds=3)
        c.model.update(conv_blocks=2, crnn_conv_blocks=1, layers_per_block=1, kernel=3, channels=4, growth=4,
                       lstm_layers=1, lstm_units=8, bn_momentum=0.9)
        c.optimizer.update(learning_rate=3e-3)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 3, 6, 6
        c.eval_batch_size = 16
        c.validation.update(every=3, patience=0, min_steps=0)
    if variant.endswith("crnn"):
        c.model.name = "crnn"
        if variant == "cpu_crnn":
            c.steps = c.eval_every = c.checkpoint_every = c.optimizer.decay_steps = 200
    if paper:
        c.data.source = "challenge"
    if variant.startswith("cpu"):
        c.cv.update(models=("cnn", "crnn"), crnn_steps=200, crnn_e2e_steps=100)
    elif variant.startswith("tiny"):
        c.cv.update(models=("cnn", "crnn"), crnn_steps=4, folds=(0,), crnn_e2e_phases=2, crnn_e2e_steps=2,
                    crnn_e2e_lr_factors=(1.0, 0.1))
    return c
