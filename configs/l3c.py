"""L3C: learned lossless image compression (Mentzer et al., CVPR'19).

    python -m experiments.train --config configs/l3c.py:cpu --workdir runs/l3c_cpu
    python -m experiments.train --config configs/l3c.py:cpu --workdir runs/l3c_cpu \
        --config.data.source=folder --config.data.path=../shared/data/photos

Variants:
  paper       the paper's setting (Cf=64, 8 blocks, C=5, L=25, K=10; 128x128 crops, batch 30;
              RMSprop lr 1e-4, x0.75 every 5 epochs of Open Images' ~300k images).
  rgb         the paper's "RGB" ablation: bicubic RGB pyramid instead of learned z(s).
  rgb_shared  the "RGB Shared" ablation: as rgb, one decoder for all scales.
  cpu         small enough to train usefully on 2 CPU cores in about an hour: Cf=32 (else as
              the paper), 64x64 crops, batch 16, Adam 1e-3 with cosine decay over 4000 steps.
  cpu_rgb     the "RGB" ablation at the cpu size, 3000 steps (no encoders: faster steps, and at a
              CPU budget it leaves the early plateau of the learned representation far sooner).
  tiny        seconds, for tests.

The paper-scale variants (paper, rgb, rgb_shared) need real training data and refuse to start
without it: the default source is a folder whose path you give (or tfds), and the shipped samples,
which are the photos the codec is evaluated on, are refused (``data.allow_samples=False``; set it
True only for timing, as experiments/bench_train.py does):

    python -m experiments.train --config configs/l3c.py:paper --workdir runs/l3c_paper \
        --config.data.source=folder --config.data.path=/data/openimages_train
"""

import ml_collections

VARIANTS = ("paper", "rgb", "rgb_shared", "cpu", "cpu_rgb", "tiny")


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "l3c"
    c.seed = 0
    c.init_from = ""               # workdir or .msgpack of an L3C model to start from (fine-tuning)
    c.init_grow = False            # let wider parameters start from narrower ones (leading block)

    c.data = ml_collections.ConfigDict(dict(
        source="samples",          # samples (shipped photos) | folder (data.path) | tfds (data.tfds_name)
        path="",                   # folder of images for source=folder
        val_path="",               # optional separate validation folder; else num_val held out
        allow_samples=True,        # False (paper-scale variants): refuse to train on the shipped samples
        holdout="samples",         # folder source: hold out images named like the shipped samples
        num_val=2,                 # else: images held out by a stable hash of their names
        tfds_name="", tfds_train_split="train", tfds_val_split="", tfds_data_dir="",
        crop=128, batch_size=30, flip=True,
        downscale=(1.0, 1.0),      # random scale range applied before cropping (L3C data prep)
        eval_crop=256,             # validation images are cut into tiles of this size
        cache=True,                # keep decoded images in memory
        seed=0,
    ))

    c.model = ml_collections.ConfigDict(dict(
        scales=3, features=64, blocks=8, latent_channels=5, levels=25, sigma=2.0, mixtures=10,
        representation="learned", share_weights=False,
        # beyond the paper: code each 2x2 block of a scale in 1 (the paper), 2 (checkerboard) or 4
        # steps, each conditioned on the sub-pixels of the steps before; "light" per-step heads or
        # one "shared" head with a step embedding (docs/l3c.md)
        subpixel_steps=1, subpixel_head="light",
    ))

    # The paper decays by 0.75 every 5 epochs; an epoch of Open Images (~300k images) at
    # batch 30 is 10k steps, so decay_every = 50k steps.
    c.optimizer = ml_collections.ConfigDict(dict(
        name="rmsprop", learning_rate=1e-4, schedule="step", decay_rate=0.75, decay_every=50_000,
        warmup_steps=0, grad_clip=0.0,
    ))

    c.steps = 1_000_000
    c.log_every = 100
    c.eval_every = 5_000
    c.checkpoint_every = 5_000
    c.keep = 3
    c.eval_batch_size = 4
    c.distributed = False          # call jax.distributed.initialize() (multi-host)

    if variant in ("paper", "", "rgb", "rgb_shared"):  # real training data, never the evaluation photos
        c.data.update(source="folder", allow_samples=False)
    if variant in ("rgb", "rgb_shared"):
        c.model.representation = "rgb"
        c.model.share_weights = variant == "rgb_shared"
    elif variant in ("cpu", "cpu_rgb"):
        # ~1 hour on 2 cores: narrower and shallower, smaller crops, Adam for fast progress.
        c.model.update(features=32)
        c.data.update(crop=64, batch_size=16, downscale=(0.6, 1.0))
        c.optimizer.update(name="adam", learning_rate=1e-3, schedule="cosine", decay_steps=4000,
                           warmup_steps=100, grad_clip=5.0)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 4000, 50, 500, 500
        c.data.eval_crop, c.eval_batch_size = 128, 8
        if variant == "cpu_rgb":  # the RGB-pyramid ablation at the cpu size: learns much faster early on
            c.model.representation = "rgb"
            c.optimizer.decay_steps = c.steps = 3000
    elif variant == "tiny":
        c.model.update(scales=2, features=8, blocks=1, mixtures=2, levels=9)
        c.data.update(crop=16, batch_size=4, eval_crop=32, num_val=1)
        c.optimizer.update(name="adam", learning_rate=3e-3, schedule="constant", decay_steps=0)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 20, 5, 20, 10
        c.eval_batch_size = 4
    elif variant not in ("paper", ""):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if "decay_steps" not in c.optimizer:
        c.optimizer.decay_steps = 0
    return c
