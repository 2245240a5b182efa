"""StrassenNets (Tschannen, Khanna & Anandkumar, ICML 2018): zoo models with sum-product layers.

    python -m experiments.train --config configs/strassen.py:digits --workdir runs/strassen_digits
    python -m experiments.strassen_nets --config configs/strassen.py:digits --workdir runs/strassen_b
    python -m experiments.strassen_nets --config configs/strassen.py:ptb --workdir runs/strassen_c
    python -m experiments.strassen_nets --config configs/strassen.py:mnist --workdir runs/strassen_mnist

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
  mnist       the seeded table of docs/strassen.md: ResNet-8 (ResNet-20's family at n = 1) on MNIST
              (../shared/data/mnist/mnist.npz averaged to 14x14; 1000 class-balanced training images,
              2000 test images), batch 32, 300 steps (phases at 100 / +50 / 225); the experiment runs
              full precision, TWN and SPN r = 0.5, 1, 2 c_out with and without KD, seeds 0-2.
  mnist_fp    its full-precision network.
  digits      SPN ResNet-20 on digits, r = c_out (the earlier single-seed experiment).
  digits_fp   the full-precision ResNet-20 (same recipe): the baseline and the KD teacher.
  ptb         SPN LSTM LM on PTB (word level, 1 x 128), one SPN per gate (r = 0.25 and 1 x H each).
  ptb_fp      the full-precision LSTM LM.
  ptb_small   the same LM for a seeded comparison with and without KD: 600 steps, r = 0.25 x H per gate,
              KD at T = 1, validation on the first 20,000 tokens, seeds 0-2.
  ptb_char_small  the authors' LM architecture at CPU size: a character CNN (widths 1-6, 25-100
              filters; SPN convs with r = c_out and W_c the identity), one SPN highway layer with the
              batch norms, a 1 x 128 LSTM (one SPN per gate), the output full precision; otherwise as
              ptb_small (600 steps, r = 0.25, with and without KD, seeds 0-2).
  paper_cifar10 (_fp, _twn)   ST-ResNet-20 on tfds cifar10 with the authors' CIFAR-10 recipe (their
              repository's notebook): SGD 0.1, momentum 0.9, wd 1e-4, batch 128, crop + flip, 300
              epochs: SPN weights full precision to epoch 250 (lr x0.1 at 150, 200), ternary to 290,
              then W_b / W_c frozen; projection shortcuts, every conv (the stem and the projections
              included) an SPN conv, the head full precision; r = 0.5, 1, 2, 4 c_out, TWN and KD.
  paper_imagenet (_fp, _twn)  ResNet-18 with SPN layers on tfds imagenet2012 (array_record, streamed):
              every layer (root conv and head included) an SPN layer, r = 0.5, 1, 2, 4, 6 c_out (the
              authors' posters); 224 crops, batch 128, SGD 0.05 x0.1 at epochs 40, 60, ternary from 70,
              frozen from 80, 85 epochs (their first poster's protocol).
  paper_ptb (_fp)   the authors' LM (SumProdLSTMCharWord): Kim et al.'s large character CNN-LSTM (widths
              1-7, 50-200 filters, 2 highway layers, 2 x 650 LSTM, dropout 0.5), BPTT 35 after 35 tokens
              of context, batch 20, SGD lr 2 halved when the validation perplexity improves by less
              than 0.5 on the last epoch's (optimizer.plateau), clip 175 (the reference's, per token),
              40 epochs; the SPN / TWN models ternary from epoch 20, restarted at lr 0.2 with the
              plateau rule, no frozen phase; KD runs (T = 1) at half the rate; every layer an SPN
              layer: char convs r = c_out with W_c the identity, highway and LSTM (per gate) r = 0.25
              ... 8 x outputs (the poster's budgets), the output layer r = 2000.
  tiny, tiny_twn   seconds, for tests (digits, ResNet-8, 30 steps, every phase visited).

The paper configs need an accelerator and the prepared tfds data (--config.data.tfds_data_dir=DIR);
without the data they stop with an error naming the dataset. docs/strassen.md lists what comes from
the authors' code and what is ours.
"""

import os

import ml_collections

from jaxcomp.configs import load_config

VARIANTS = ("digits", "digits_fp", "mnist", "mnist_fp", "ptb", "ptb_fp", "ptb_small", "ptb_char_small", "tiny",
            "tiny_twn",
            "paper_cifar10", "paper_cifar10_fp", "paper_cifar10_twn", "paper_imagenet", "paper_imagenet_fp",
            "paper_imagenet_twn", "paper_ptb", "paper_ptb_fp")


def _no_plateau() -> ml_collections.ConfigDict:
    """``optimizer.plateau`` switched off (``metric=""``), with its keys there for overrides."""
    return ml_collections.ConfigDict(dict(metric="", factor=0.5, min_delta=0.0, mode="min", reset_steps=()))


def _strassen(enabled: bool = True, mode: str = "spn") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        enabled=enabled,
        mode=mode,            # spn | twn (the ternary-weight baseline: the replaced layers' own kernels ternary)
        hidden_ratio=1.0,     # r = hidden_ratio * output features (c_out, or 4H for the LSTM)
        output_r=0,           # layers="all" LM: a fixed r for the output layer (0: hidden_ratio * vocab)
        p=1,                  # outputs per hidden position and axis (SPN conv)
        layers="inner",       # inner: stem / head / LM output stay full precision | convs: head / output only | all
        method="twn",         # twn (0.7 mean|W| threshold, optimal scale) | round
        threshold=0.7,
        learned_scale=False,  # per-matrix learned scale instead of TWN's optimal one
        ternary_start=400, ramp_steps=200, freeze_step=900,
    ))


def _experiment(ratios, kd: bool, seeds=(0,), twn: bool = False, kd_lr_factor: float = 1.0,
                quantized_overrides: tuple = ()) -> ml_collections.ConfigDict:
    # experiments/strassen_nets.py: per seed the full-precision model, (twn) the TWN baseline, and per ratio
    # an SPN model (and with kd the same SPN model distilled from that seed's full-precision model);
    # kd_lr_factor scales the learning rate of the KD runs, quantized_overrides ("key=value" strings)
    # apply to the SPN and TWN runs only (e.g. their own learning-rate schedule)
    # time_limit: seconds of wall clock for the whole command (0: none); the model it stops continues,
    # and finished ones are skipped, when the same command runs again
    return ml_collections.ConfigDict(dict(hidden_ratios=tuple(ratios), kd=kd, seeds=tuple(seeds), twn=twn,
                                          kd_lr_factor=float(kd_lr_factor),
                                          quantized_overrides=tuple(quantized_overrides), time_limit=0.0))


def _classifier(variant: str) -> ml_collections.ConfigDict:
    c = load_config(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ban.py") + ":digits")
    c.unlock()
    c.model.name = "resnet20"
    c.model.input_shape = (8, 8, 1)  # one example's shape (counting without data)
    c.strassen = _strassen(not variant.endswith("_fp"), "twn" if variant.endswith("_twn") else "spn")
    c.eval_every = 1200
    c.experiment = _experiment((0.5, 1.0, 2.0), kd=True)
    return c


def _paper_cifar10(variant: str) -> ml_collections.ConfigDict:
    """ST-ResNet-20 on CIFAR-10 (the paper's Section 4.2.1), the authors' recipe (see the module docstring).

    The authors' notebook (StrassenNetsCIFAR10.ipynb, "the configuration for p = 1 and r = c_out in Table 1"):
    gluon's ResNet-20 v1 with 1x1 projection shortcuts (option B), every conv an SPN conv with r = c_out --
    the 3x3 stem and the two projections included -- and the dense head full precision.
    """
    c = _classifier(variant)
    epoch = 50_000 // 128 + 1  # 391 steps of batch 128
    c.data.update(source="tfds", tfds_name="cifar10", tfds_train_split="train", tfds_val_split="test",
                  augment="crop_flip", pad=4, batch_size=128)
    c.model.update(name="resnet20", num_classes=10, shortcut="B", input_shape=(32, 32, 3))
    c.strassen.layers = "convs"
    c.optimizer.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, schedule="piecewise",
                       decay_rate=0.1, boundaries=(150 * epoch, 200 * epoch), l2=1e-4)
    c.steps = c.optimizer.decay_steps = 300 * epoch
    c.strassen.update(ternary_start=250 * epoch, ramp_steps=0, freeze_step=290 * epoch)
    c.distill.update(loss="ce", temperature=1.0, label_weight=1.0, teachers=())
    c.log_every, c.eval_every, c.checkpoint_every, c.keep, c.eval_batch_size = 100, 10 * epoch, 10 * epoch, 2, 500
    c.experiment = _experiment((0.5, 1.0, 2.0, 4.0), kd=True, twn=True)
    return c


def _paper_imagenet(variant: str) -> ml_collections.ConfigDict:
    """ResNet-18 with SPN layers on ImageNet (the paper's Section 4.2.2), read as array_record through tfds.

    From the authors' posters (PosterStrassenNets.pdf in their repository): every layer an SPN layer -- the 7x7
    root conv and the 1000-way dense head included (only then do our counts reproduce their table of
    reductions, see docs/strassen.md) -- at r in {6, 4, 2, 1, 1/2} c_out; the training protocol of their first
    poster: SGD with momentum 0.9, batch 128, 70 epochs with full-precision W_b, W_c at lr 0.05 (x0.1 after 40
    and 60 epochs), 10 epochs ternary, 5 epochs with W_b, W_c fixed, both at lr 0.0005.
    """
    c = _classifier(variant)
    epoch = 1_281_167 // 128 + 1  # 10,010 steps of batch 128
    c.data = ml_collections.ConfigDict(dict(
        source="tfds_stream", tfds_name="imagenet2012", tfds_train_split="train", tfds_val_split="validation",
        tfds_data_dir="", size=224, resize=256, flip=True, num_classes=1000, batch_size=128, seed=0))
    c.model.update(name="resnet18-imagenet", num_classes=1000, shortcut="B", input_shape=(224, 224, 3))
    # lr 0.05, x0.1 at epochs 40 and 60: 0.0005 from epoch 60 on, so the ternary (70-79) and frozen (80-84)
    # phases run at the poster's 0.0005; weight decay 1e-4 is ours (the poster does not give it)
    c.optimizer.update(name="sgd", learning_rate=0.05, momentum=0.9, nesterov=False, schedule="piecewise",
                       decay_rate=0.1, boundaries=(40 * epoch, 60 * epoch), l2=1e-4)
    c.steps = c.optimizer.decay_steps = 85 * epoch
    c.strassen.update(ternary_start=70 * epoch, ramp_steps=0, freeze_step=80 * epoch, layers="all")
    c.distill.update(loss="ce", temperature=1.0, label_weight=1.0, teachers=())
    c.log_every, c.eval_every, c.checkpoint_every, c.keep, c.eval_batch_size = 200, 5 * epoch, epoch, 2, 250
    c.experiment = _experiment((0.5, 1.0, 2.0, 4.0, 6.0), kd=True, twn=True)
    return c


def _lm(variant: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(path="../shared/data/ptb", prefix="ptb.", split="valid", batch_size=20,
                                            seq_len=20, burn_in=0, train_tokens=0, val_tokens=0, seed=0))
    c.model = ml_collections.ConfigDict(dict(vocab_size=10000, embed_dim=64, hidden=128, layers=1, dropout=0.0))
    c.distill = ml_collections.ConfigDict(dict(loss="ce", temperature=4.0, label_weight=1.0, teachers=()))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=3e-3, schedule="cosine",
                                                 decay_steps=2000, warmup_steps=0, grad_clip=5.0, l2=0.0,
                                                 plateau=_no_plateau()))
    c.strassen = _strassen(not variant.endswith("_fp"))
    c.strassen.update(ternary_start=700, ramp_steps=300, freeze_step=1500)
    # the LSTM's input and recurrent projections as one SPN per gate (r = hidden_ratio x H each, W_c not
    # shared between gates), as the authors' SumProdLSTM; False: one SPN over all 4H outputs
    c.strassen.lstm_per_gate = True
    c.steps = c.checkpoint_every = c.eval_every = 2000
    c.log_every, c.keep, c.eval_batch_size, c.distributed = 100, 1, 256, False
    c.experiment = _experiment((0.25, 1.0), kd=False)
    if variant in ("ptb_small", "ptb_char_small"):  # seeds, with and without KD, at the CPU size
        c.steps = c.checkpoint_every = c.eval_every = c.optimizer.decay_steps = 600
        c.data.val_tokens = 20_000
        c.strassen.update(ternary_start=200, ramp_steps=100, freeze_step=450)
        c.distill.update(temperature=1.0, label_weight=1.0)
        c.experiment = _experiment((0.25,), kd=True, seeds=(0, 1, 2))
    if variant == "ptb_char_small":  # the authors' architecture (SumProdLSTMCharWord) at a CPU size
        c.model = ml_collections.ConfigDict(dict(
            arch="char_cnn", vocab_size=10000, char_vocab_size=51, max_word_len=21, char_embed=15,
            kernel_widths=(1, 2, 3, 4, 5, 6), filters=(25, 50, 75, 100, 100, 100), highway_layers=1,
            hidden=128, layers=1, dropout=0.0))
    elif variant.startswith("paper_ptb"):
        # the authors' LM (langmod/train.py defaults, model.py's SumProdLSTMCharWord): Kim et al.'s large
        # character-aware model -- 15-d character embeddings, convolutions of widths 1-7 with 50-200 filters,
        # 2 highway layers, 2 LSTM layers of 650 units, dropout 0.5 -- with every convolution, highway layer,
        # LSTM projection (one SPN per gate) and the output layer an SPN (r = hidden_ratio x outputs, swept;
        # the output r = 2000; the character convolutions r = c_out with W_c the identity, as their train.py)
        # and a batch norm after each highway layer in the SPN model; 35-step BPTT, batch 20, SGD. Their
        # README's commands: the
        # full-precision model 40 epochs at lr 2; the Strassen model
        # 20 epochs full precision at lr 2 (--epochs_pre 20), then 20 ternary epochs restarted at lr 0.2,
        # no frozen phase (--epochs_cont 0); their lr halves when validation perplexity improves by less
        # than 0.5 on the last epoch's (--decay_when 0.5), ours too (optimizer.plateau).
        # Their loss is the mean cross-entropy per token (gluon's loss averages over time, trainer.step
        # over the batch), so lr 2 is ours too; their KD loss (1 - l) CE + l T^2 CE_soft with l = 0.5 is half
        # of ours (CE + T^2 KL), so the KD runs take lr x 0.5. Their clip, 5 * 35 * 20 on the batch's
        # summed gradients, is 175 on the per-token mean. The LSTM state carries over between their
        # batches: burn_in = 35 tokens of true context stand in for it (as BAN's paper LM configs).
        epoch = 929_589 // (20 * 35) + 1
        c.model = ml_collections.ConfigDict(dict(
            arch="char_cnn", vocab_size=10000, char_vocab_size=51, max_word_len=21, char_embed=15,
            kernel_widths=(1, 2, 3, 4, 5, 6, 7), filters=(50, 100, 150, 200, 200, 200, 200), highway_layers=2,
            hidden=650, layers=2, dropout=0.5))
        c.data.update(seq_len=35, batch_size=20, burn_in=35)
        # their plateau rule, evaluated every epoch on the validation text: x0.5 whenever the perplexity
        # improves by less than 0.5 on the last epoch's (optimizer.plateau; the trainer cuts the rate)
        c.optimizer = ml_collections.ConfigDict(dict(name="sgd", learning_rate=2.0, momentum=0.0, nesterov=False,
                                                     schedule="constant", decay_rate=0.5, boundaries=(),
                                                     boundary_scales=(), decay_steps=0, warmup_steps=0,
                                                     grad_clip=175.0, l2=0.0, plateau=_no_plateau()))
        c.optimizer.plateau.update(metric="perplexity", factor=0.5, min_delta=0.5)
        c.steps = c.optimizer.decay_steps = 40 * epoch
        # the output layer too, with a fixed r = 2000 (their out_nbr_mul); the character embedding is a lookup
        c.strassen.update(ternary_start=20 * epoch, ramp_steps=0, freeze_step=-1, layers="all", output_r=2000)
        c.distill.update(temperature=1.0, label_weight=1.0)
        c.log_every, c.eval_every, c.checkpoint_every, c.keep = 200, epoch, epoch, 2
        # the quantized runs: their two train() calls, 20 epochs at lr 2 and 20 ternary epochs from lr 0.2,
        # each with its own plateau rule (the factor and the last perplexity start afresh at epoch 20)
        quantized = ("optimizer.schedule=piecewise", f"optimizer.boundaries=({20 * epoch},)",
                     "optimizer.boundary_scales=(0.1,)", f"optimizer.plateau.reset_steps=({20 * epoch},)")
        # the budgets of the authors' poster (Figure 3: r / n_out in {8, 6, 4, 2, 1, 1/2, 1/4}, their r per gate
        # relative to H: the same multiplications as ours per 4H), each with and without KD, and TWN
        c.experiment = _experiment((0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0), kd=True, twn=True, kd_lr_factor=0.5,
                                   quantized_overrides=quantized)
    return c


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    if variant.startswith("paper_cifar10"):
        return _paper_cifar10(variant)
    if variant.startswith("paper_imagenet"):
        return _paper_imagenet(variant)
    if variant in ("ptb", "ptb_fp", "ptb_small", "ptb_char_small", "paper_ptb", "paper_ptb_fp"):
        return _lm(variant)
    if variant not in ("digits", "digits_fp", "mnist", "mnist_fp", "tiny", "tiny_twn", ""):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = _classifier(variant)
    if variant.startswith("mnist"):
        # 28x28 MNIST averaged to 14x14 (the CPU budget), 1000 class-balanced training images (the same for
        # every run), 2000 class-balanced test images (nothing is selected on them), shifts of 1 pixel
        c.data.update(source="mnist", path="../shared/data/mnist/mnist.npz", train_size=1000, val_size=2000,
                      downsample=2, pad=1, batch_size=32)
        c.model.update(name="resnet8", input_shape=(14, 14, 1))  # ResNet-20's family at n = 1 (CPU budget)
        c.eval_batch_size = 1000
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = c.eval_every = MNIST_STEPS
        c.strassen.update(ternary_start=MNIST_STEPS // 3, ramp_steps=MNIST_STEPS // 6,
                          freeze_step=3 * MNIST_STEPS // 4)
        c.log_every = 50
        c.experiment = _experiment((0.5, 1.0, 2.0), kd=True, seeds=(0, 1, 2), twn=True)
    if variant.startswith("tiny"):
        c.model.name = "resnet8"
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = c.eval_every = 30
        c.data.batch_size, c.log_every = 32, 10
        c.strassen.update(ternary_start=10, ramp_steps=5, freeze_step=20)
        c.experiment.hidden_ratios = (1.0,)
    return c


MNIST_STEPS = 300
