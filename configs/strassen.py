"""StrassenNets (Tschannen, Khanna & Anandkumar, ICML 2018): zoo models with sum-product layers.

    python -m experiments.train --config configs/strassen.py:digits --workdir runs/strassen_digits
    python -m experiments.strassen_nets --config configs/strassen.py:digits --workdir runs/strassen_b
    python -m experiments.strassen_nets --config configs/strassen.py:ptb --workdir runs/strassen_c

The classifier variants start from the zoo's digits recipe (configs/ban.py:digits: scikit-learn's
8x8 digits, 1300 train / 497 held out, SGD + Nesterov, cosine decay, L2 5e-4, shifts) with the
CIFAR ResNet-20 of the zoo. Every 3x3 conv but the stem becomes an SPN conv (p = 1,
r = hidden_ratio * c_out); the stem and the dense head stay full precision (as is usual for
ternary networks, and they hold 0.3% of ResNet-20's multiplications).

Schedule (the paper's three phases, compressed into one run of 1200 steps): steps 0-399 full
precision; 400-599 W_b, W_c blended linearly into ternary (straight through); 600-899 ternary
W_b, W_c trained straight through; from 900 on W_b, W_c frozen while a_tilde, batch norm and the
full-precision layers train. KD: the zoo's kd_loss (T = 4, plus the label loss) from the
full-precision ResNet-20 (variant digits_fp) as teacher: pass distill.teachers=(its workdir,).

The LM variants: the zoo's LSTM LM on PTB (10k words) at a CPU size: 64-d embeddings, one layer
of 128 units, batch 20 x 20 tokens, 2000 Adam steps (800k tokens, 0.86 epochs; 0.1-0.45 s a step on
the shared 2 cores). The input and recurrent projections become SPN dense layers
(r = hidden_ratio * 4H); the output layer stays full precision. Phases: ternary from step 700
(ramp of 300 steps), W_b / W_c frozen from step 1500. (A first campaign of 600 steps, phases at
200 / 100 / 450, gave perplexities 484 / 663 / 719: all models far from converged.)

Variants:
  digits      SPN ResNet-20 on digits, r = c_out.
  digits_fp   the full-precision ResNet-20 (same recipe): the baseline and the KD teacher.
  ptb         SPN LSTM LM on PTB, r = 4H.
  ptb_fp      the full-precision LSTM LM.
  tiny        seconds, for tests (digits, ResNet-8, 30 steps, every phase visited).
"""

import os

import ml_collections

from jaxcomp.configs import load_config

VARIANTS = ("digits", "digits_fp", "ptb", "ptb_fp", "tiny")


def _strassen(enabled: bool = True) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        enabled=enabled,
        hidden_ratio=1.0,     # r = hidden_ratio * output features (c_out, or 4H for the LSTM)
        p=1,                  # outputs per hidden position and axis (SPN conv)
        layers="inner",       # inner: stem / head / LM output stay full precision | all
        method="twn",         # twn (0.7 mean|W| threshold, optimal scale) | round
        threshold=0.7,
        learned_scale=False,  # per-matrix learned scale instead of TWN's optimal one
        ternary_start=400, ramp_steps=200, freeze_step=900,
    ))


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    if variant in ("digits", "digits_fp", "tiny", ""):
        c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ban.py") + ":digits")
        c.unlock()
        c.model.name = "resnet20"
        c.strassen = _strassen(variant != "digits_fp")
        c.eval_every = 1200
        c.experiment = ml_collections.ConfigDict(dict(
            hidden_ratios=(0.5, 1.0, 2.0),   # experiments/strassen_nets.py: one SPN model (with and without KD) each
            kd=True,
        ))
        if variant == "tiny":
            c.model.name = "resnet8"
            c.steps = c.optimizer.decay_steps = c.checkpoint_every = c.eval_every = 30
            c.data.batch_size, c.log_every = 32, 10
            c.strassen.update(ternary_start=10, ramp_steps=5, freeze_step=20)
            c.experiment.hidden_ratios = (1.0,)
        return c
    if variant not in ("ptb", "ptb_fp"):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(path="../shared/data/ptb", prefix="ptb.", split="valid", batch_size=20,
                                            seq_len=20, burn_in=0, train_tokens=0, val_tokens=0, seed=0))
    c.model = ml_collections.ConfigDict(dict(vocab_size=10000, embed_dim=64, hidden=128, layers=1, dropout=0.0))
    c.distill = ml_collections.ConfigDict(dict(loss="ce", temperature=4.0, label_weight=1.0, teachers=()))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=3e-3, schedule="cosine",
                                                 decay_steps=2000, warmup_steps=0, grad_clip=5.0, l2=0.0))
    c.strassen = _strassen(variant == "ptb")
    c.strassen.update(ternary_start=700, ramp_steps=300, freeze_step=1500)
    c.steps = c.checkpoint_every = c.eval_every = 2000
    c.log_every, c.keep, c.eval_batch_size, c.distributed = 100, 1, 256, False
    c.experiment = ml_collections.ConfigDict(dict(hidden_ratios=(0.25, 1.0), kd=False))
    return c
