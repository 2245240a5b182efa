"""Born-Again Networks (Furlanello et al., ICML 2018): classifiers, their students, generations.

One model:   python -m experiments.train --config configs/ban.py:mnist --workdir runs/ban_teacher
Generations: python -m experiments.ban --config configs/ban.py:mnist --workdir runs/ban_mnist
A student of a trained model: --config.distill.loss=ban --config.distill.teachers="('runs/ban_teacher',)"

Variants:
  digits      the embedded default: scikit-learn's 8x8 digits (1300 train / 497 held out), ResNet-8,
              1200 steps of batch 64 (~60 epochs); a minute per model on 2 CPU cores.
  mnist       the CPU experiment of docs/ban.md: 1000 MNIST training images (class-balanced, the
              same for every run) and the 10k test images, both averaged down to 14x14 (4x fewer
              pixels: ~23 steps/s instead of ~4 on 2 shared cores); ResNet-8 (width 1, 75k
              parameters); 1000 steps of batch 64 (64 epochs), SGD + Nesterov 0.05, cosine decay,
              L2 5e-4, random shifts of up to 1 pixel. Small data, so that dark knowledge matters.
  mnist_cross the cross-architecture student: a DenseNet-BC-22-12 teacher (71k parameters; ResNet-8
              has 75k), ResNet-8 BAN students (the driver reads ban.teacher_model); the label-only
              ResNet-8 of the same seeds is the teacher of the mnist variant (bit-identical config),
              so it is not trained again.
  mnist_features  the feature network of the MNIST Fréchet distance (jaxcomp.metrics.frechet, used by
              DPLC): ResNet-8 on MNIST zero-padded to 32x32 as DPLC's digits (data.pad_to=32),
              trained on x_train[:50000] only (DPLC validates on x_train[50000:] and reports on the
              10k test digits, which are this run's evaluation set: nothing is selected on them);
              random shifts of up to 2 pixels, 1500 steps of batch 128 (3.8 epochs). A variant here
              rather than a config of its own because it is this file's task and recipe (the
              classification task, ResNet-8, SGD + Nesterov, cosine decay, L2 5e-4) on other data:
              only the data block and the step count differ. Trained with experiments/train.py,
              shipped with experiments/export_model.py (jaxcomp/metrics/pretrained/MODEL.md).
  tiny        seconds, for tests (digits, ResNet-8, 40 steps).
  mnist_soft  the regime of docs/ban.md where the teacher's training-set outputs are not one-hot, chosen
              with experiments/ban_regime.py on a validation split (the last 5000 MNIST training images,
              never trained on): the mnist recipe with 40% of the 1000 training labels replaced by other
              classes, 200 steps (12.8 epochs); evaluated on the 10k test images; teacher, BAN-1..3,
              BANE, 5 seeds.
  paper*      the paper's CIFAR tables, for an accelerator (CIFAR prepared for tfds: data.tfds_data_dir),
              3 seeds (ban.seeds; one: --config.ban.seeds="(0,)"), augmentation (pad-4 crop + flip)
              on the device (data.augment=crop_flip_device). The BAN paper (Section 4) trains every
              CIFAR-100 network with the Wide-ResNet paper's setting, and only the WRNs with dropout:
                200 epochs at batch 128, SGD + Nesterov 0.9, lr 0.1 x0.2 at epochs 60, 120, 160, L2 5e-4;
                WRNs dropout 0.3; DenseNets a stem of 16 channels (model.densenet_stem, see
                jaxcomp/models/densenet.py). CIFAR-10 (Table 1; no recipe given) the same.
  paper, paper_densenet_90_60, paper_densenet_80_80, paper_densenet_80_120
              CIFAR-100, Table 2: DenseNet-112-33 / 90-60 / 80-80 / 80-120 teacher, BAN-1..3 (80-120:
              BAN-1..2), and BAN+L, CWTM, DKPP students of the teacher (DKPP without labels).
  paper_wrn_28_1, paper_wrn_28_2, paper_wrn_28_5, paper_wrn_28_10
              CIFAR-100, Table 3: Wide-ResNet teacher and its BAN student.
  paper_cross_wrn_28_1, _2, _5, _10
              CIFAR-100, Table 3 right column: a Wide-ResNet-28-k teacher (trained with its own WRN
              recipe, ban.teacher_config) and a DenseNet-90-60 BAN student (the DenseNet recipe).
  paper_cross_densenet_90_60_wrn_28_10
              the reverse direction: DenseNet-90-60 teacher, Wide-ResNet-28-10 BAN student. Not a row of
              the paper: its Table 5 students (ResNets whose blocks match the DenseNet's block widths and
              share its frozen first and last layers) are not expressible by jaxcomp's zoo.
  paper_cifar10_wrn_28_1, ..._wrn_28_10, paper_cifar10_densenet_112_33, ..._densenet_80_120
              CIFAR-10, Table 1: teacher and BAN student of each of the 8 networks.
"""

import ml_collections

_WRNS = ("wrn_28_1", "wrn_28_2", "wrn_28_5", "wrn_28_10")
_DENSENETS = ("densenet_112_33", "densenet_90_60", "densenet_80_80", "densenet_80_120")
#: paper variant -> (dataset, architecture of the student (and teacher, unless a cross pair), teacher config)
PAPER = {
    "paper": ("cifar100", "densenet_112_33", ""),
    **{f"paper_{d}": ("cifar100", d, "") for d in _DENSENETS[1:]},
    **{f"paper_{w}": ("cifar100", w, "") for w in _WRNS},
    **{f"paper_cross_{w}": ("cifar100", "densenet_90_60", f"configs/ban.py:paper_{w}") for w in _WRNS},
    "paper_cross_densenet_90_60_wrn_28_10": ("cifar100", "wrn_28_10", "configs/ban.py:paper_densenet_90_60"),
    **{f"paper_cifar10_{a}": ("cifar10", a, "") for a in _WRNS + _DENSENETS},
}
#: the paper's parameter counts (Table 1; the same networks with 100 outputs in Tables 2, 3)
PAPER_PARAMS = {"wrn_28_1": 0.38e6, "wrn_28_2": 1.48e6, "wrn_28_5": 9.16e6, "wrn_28_10": 36e6,
                "densenet_112_33": 6.3e6, "densenet_90_60": 16.1e6, "densenet_80_80": 22.4e6,
                "densenet_80_120": 50.4e6}

VARIANTS = ("digits", "mnist", "mnist_cross", "mnist_features", "mnist_soft", "tiny", *PAPER)


def model_name(arch: str) -> str:
    """``wrn_28_10 -> wrn-28-10``, ``densenet_90_60 -> densenet-bc-90-60`` (jaxcomp.models.classifier names)."""
    return arch.replace("densenet_", "densenet-bc-").replace("_", "-")


def _paper(c, variant: str) -> None:
    dataset, arch, teacher_config = PAPER[variant]
    c.data.update(source="tfds", tfds_name=dataset, augment="crop_flip_device", pad=4)
    c.model.num_classes = 10 if dataset == "cifar10" else 100
    c.model.name = model_name(arch)
    # "All experiments performed on CIFAR-100 use the same preprocessing and training setting as for
    # Wide-ResNet (Zagoruyko & Komodakis, 2016b) [...] The only form of regularization used other than the
    # KD loss are weight decay and, in the case of WideResNet drop-out." (Section 4): the WRN recipe for
    # every network, dropout 0.3 (the WRN paper's) for the WRNs only; CIFAR-10 (no recipe given) the same
    if arch.startswith("densenet"):
        c.model.densenet_stem = 16
    else:
        c.model.dropout = 0.3
    c.data.batch_size = 128
    epoch, epochs = 50_000 // 128 + 1, 200
    c.optimizer.update(learning_rate=0.1, l2=5e-4, schedule="piecewise", decay_rate=0.2,
                       boundaries=(epoch * 60, epoch * 120, epoch * 160))
    c.steps = epochs * epoch
    c.optimizer.decay_steps = c.steps
    c.log_every, c.eval_every, c.checkpoint_every, c.keep = 200, 10 * epoch, 10 * epoch, 2
    c.ban.update(seeds=(0, 1, 2), generations=1, variants=())
    if dataset == "cifar100" and arch.startswith("densenet") and not teacher_config:  # Table 2
        c.ban.update(generations=2 if arch == "densenet_80_120" else 3, variants=("ban_label:1", "cwtm", "dkpp:0"))
    if teacher_config:  # the label-only student architecture is the teacher of its own paper variant
        c.ban.update(teacher_config=teacher_config, student_baseline=False)


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        source="digits",              # digits (scikit-learn's) | mnist (data.path) | tfds (data.tfds_name)
        path="",                      # the MNIST npz (x_train, y_train, x_test, y_test)
        tfds_name="", tfds_train_split="train", tfds_val_split="test", tfds_data_dir="",
        train_size=0,                 # > 0: a fixed class-balanced subset of the training split
        val_size=0,                   # > 0: likewise for the validation split
        subset_seed=0,                # which subset (the same for every model and seed)
        batch_size=64,
        augment="shift",              # none | shift (random crop of the padded image) | crop_flip
        pad=1,
        downsample=1,                 # > 1: average pixel blocks (MNIST 28x28 -> 14x14 for CPU runs)
        pad_to=0,                     # > 0: zero-pad (centre) the images to pad_to x pad_to (MNIST -> 32)
        train_first=0,                # > 0: only the first N training examples (MNIST x_train[:50000])
        seed=0,                       # the order of the examples and the augmentation
        holdout_last=0,               # mnist: > 0 keeps the training split's last N out of training ...
        eval_on="test",               # ... and "holdout" evaluates on them (a validation split) instead of test
        label_noise=0.0,              # a fraction of the training labels replaced by other classes
    ))

    c.model = ml_collections.ConfigDict(dict(name="resnet8", num_classes=10, dropout=0.0, shortcut="A",
                                             densenet_stem=0))  # DenseNets: stem channels (0: 2 x growth)

    c.distill = ml_collections.ConfigDict(dict(
        loss="ce",                    # ce | kd | ban | ban_label | cwtm | dkpp
        temperature=4.0,              # kd only
        label_weight=1.0,             # ban_label, kd and dkpp (DKPP + labels; the paper's DKPP: "dkpp:0")
        teachers=(),                  # workdirs of trained teachers (several: their ensemble)
        dkpp_permutation="step",      # dkpp: a new permutation every step | "example": one per training example
    ))

    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.05, momentum=0.9, nesterov=True, schedule="cosine", decay_steps=1200,
        decay_rate=0.1, boundaries=(), decay_every=0, warmup_steps=0, grad_clip=0.0,
        l2=5e-4,                      # 0.5 * l2 * ||w||^2 on every parameter (PyTorch SGD weight_decay)
    ))

    # The generations driver (experiments/ban.py).
    c.ban = ml_collections.ConfigDict(dict(
        generations=3,                # BAN-1 .. BAN-k, each taught by the one before
        seeds=(0, 1, 2),              # independent repetitions of the whole chain
        loss="ban",                   # the born-again students' loss: ban | ban_label | kd
        variants=("cwtm", "dkpp"),    # one student of the teacher per listed loss
        teacher_model="",             # a different architecture for generation 0 (cross-architecture)
        teacher_config="",            # or a whole config for generation 0 (its own recipe), e.g. ban.py:paper_wrn_28_2
        teacher_overrides=(),         # key=value overrides of teacher_config (the data location is inherited)
        student_baseline=True,        # with teacher_model: also train the student architecture on labels
        time_limit=0.0,               # seconds of wall clock for the whole command (0: none); a model stopped
                                      # by it is continued, and finished ones skipped, by the same command
    ))

    c.steps = 1200
    c.log_every = 100
    c.eval_every = -1                # -1: once, at the last step (set below); experiments/ban.py evaluates itself
    c.checkpoint_every = 1200
    c.keep = 1
    c.eval_batch_size = 500
    c.distributed = False

    if variant in ("digits", ""):
        pass
    elif variant in ("mnist", "mnist_cross"):
        c.data.update(source="mnist", path="../shared/data/mnist/mnist.npz", train_size=1000, pad=1, downsample=2)
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 1000
        if variant == "mnist_cross":
            # the label-only ResNet-8 of the same seeds is the teacher of the mnist variant: not run twice
            c.ban.update(teacher_model="densenet-bc-22-12", generations=1, variants=(), student_baseline=False)
    elif variant == "mnist_features":
        # the classifier whose features measure DPLC's distribution distance (jaxcomp.metrics.frechet):
        # MNIST padded to 32x32 as DPLC's digits, trained on x_train[:50000] only (DPLC validates on the rest)
        c.data.update(source="mnist", path="../shared/data/mnist/mnist.npz", train_first=50_000, pad_to=32, pad=2,
                      batch_size=128)
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 1500
    elif variant == "tiny":
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 40
        c.data.batch_size = 32
        c.log_every = 20
        c.ban.update(generations=1, seeds=(0,), variants=("cwtm",))
    elif variant == "mnist_soft":
        # chosen on the validation split (experiments/ban_regime.py, setting noise40); reported on the test split
        c.data.update(source="mnist", path="../shared/data/mnist/mnist.npz", train_size=1000, pad=1, downsample=2,
                      holdout_last=5000, eval_on="test", label_noise=0.4)
        # 200 steps (12.8 epochs), not mnist's 1000: what 20 models could afford on the shared CPU (docs/ban.md)
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 200
        c.ban.update(seeds=(0, 1, 2, 3, 4), variants=())
    elif variant in PAPER:
        _paper(c, variant)
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if c.eval_every < 0:
        c.eval_every = c.steps
    return c
