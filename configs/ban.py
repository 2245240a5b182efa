"""Born-Again Networks (Furlanello et al., ICML 2018): classifiers, their students, generations.

One model:   python -m experiments.train --config configs/ban.py:mnist --workdir runs/ban_teacher
Generations: python -m experiments.ban --config configs/ban.py:mnist --workdir runs/ban_mnist
A student of a trained model: --config.distill.loss=ban --config.distill.teachers="('runs/ban_teacher',)"

Variants:
  digits      the embedded default: scikit-learn's 8x8 digits (1300 train / 497 held out), ResNet-8,
              1200 steps of batch 64 (~60 epochs); a minute per model on 2 CPU cores.
  mnist       the CPU experiment of docs/ban.md: 1000 MNIST training images (class-balanced, the
              same for every run) and the 10k test images, both averaged down to 14x14 (4x fewer
              pixels: ~23 steps/s instead of ~4 on 2 shared cores); ResNet-8 (width 1, 78k
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
  paper       CIFAR-100, DenseNet-BC-112-33 (the paper's Table 1); the DenseNet recipe: 300 epochs
              at batch 64, SGD + Nesterov 0.9, lr 0.1 divided by 10 at 50% and 75%, L2 1e-4,
              crop + flip. Needs CIFAR-100 prepared for tfds (data.tfds_data_dir) and a GPU.
  paper_densenet_90_60, paper_densenet_80_80, paper_densenet_80_120   the other DenseNets of Table 1.
  paper_wrn_28_10, paper_wrn_28_2   Wide-ResNets (Table 2): the WRN recipe, 200 epochs at batch 128,
              lr 0.1 x0.2 at epochs 60, 120, 160, L2 5e-4, dropout 0. BAN target for WRN-28-2:
              25.32% -> 24.38% error (the paper's numbers, not reproduced here).
  paper_cifar10_wrn_28_2   the same on CIFAR-10.
"""

import ml_collections

VARIANTS = ("digits", "mnist", "mnist_cross", "mnist_features", "tiny", "paper", "paper_densenet_90_60",
            "paper_densenet_80_80", "paper_densenet_80_120", "paper_wrn_28_10", "paper_wrn_28_2",
            "paper_cifar10_wrn_28_2")

_PAPER_DENSENETS = {"paper": "densenet-bc-112-33", "paper_densenet_90_60": "densenet-bc-90-60",
                    "paper_densenet_80_80": "densenet-bc-80-80", "paper_densenet_80_120": "densenet-bc-80-120"}


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
    ))

    c.model = ml_collections.ConfigDict(dict(name="resnet8", num_classes=10, dropout=0.0, shortcut="A"))

    c.distill = ml_collections.ConfigDict(dict(
        loss="ce",                    # ce | kd | ban | ban_label | cwtm | dkpp
        temperature=4.0,              # kd only
        label_weight=1.0,             # ban_label, kd (and dkpp, default 0 there: set it explicitly)
        teachers=(),                  # workdirs of trained teachers (several: their ensemble)
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
        student_baseline=True,        # with teacher_model: also train the student architecture on labels
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
    elif variant in _PAPER_DENSENETS or variant.startswith("paper_wrn") or variant == "paper_cifar10_wrn_28_2":
        cifar10 = variant == "paper_cifar10_wrn_28_2"
        c.data.update(source="tfds", tfds_name="cifar10" if cifar10 else "cifar100", augment="crop_flip", pad=4)
        c.model.num_classes = 10 if cifar10 else 100
        if variant in _PAPER_DENSENETS:
            c.model.name = _PAPER_DENSENETS[variant]
            epoch, epochs = 50_000 // 64, 300
            c.optimizer.update(learning_rate=0.1, l2=1e-4, schedule="piecewise", decay_rate=0.1,
                               boundaries=(epoch * 150, epoch * 225))
        else:
            c.model.name = {"paper_wrn_28_10": "wrn-28-10"}.get(variant, "wrn-28-2")
            c.data.batch_size = 128
            epoch, epochs = 50_000 // 128 + 1, 200
            c.optimizer.update(learning_rate=0.1, l2=5e-4, schedule="piecewise", decay_rate=0.2,
                               boundaries=(epoch * 60, epoch * 120, epoch * 160))
        c.steps = epochs * epoch
        c.optimizer.decay_steps = c.steps
        c.log_every, c.eval_every, c.checkpoint_every, c.keep = 200, 10 * epoch, 10 * epoch, 2
        c.ban.update(seeds=(0,), variants=())
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if c.eval_every < 0:
        c.eval_every = c.steps
    return c
