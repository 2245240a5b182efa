"""L3C: learned lossless image compression (Mentzer et al., CVPR'19).

    python -m experiments.train --config configs/l3c.py:cpu --workdir runs/l3c_cpu
    python -m experiments.train --config configs/l3c.py:cpu --workdir runs/l3c_cpu \
        --config.data.source=folder --config.data.path=../shared/data/photos

Variants:
  paper       the paper's setting (Cf=64, 8 blocks, C=5, L=25, K=10, the reference encoder's 3x3
              input conv E_in per scale; 128x128 crops, batch 30; RMSprop lr 1e-4, x0.75 every
              5 epochs of Open Images' ~300k images; see "Steps and epochs" below).
  rgb         the paper's "RGB" ablation: bicubic RGB pyramid instead of learned z(s), a decoder
              per scale with feature fusion (the reference's cr_rgb.cf).
  rgb_shared  the paper's "RGB Shared" ablation (the reference's cr_rgb_shared.cf): ONE decoder
              without feature fusion, trained on the finest scale only (x(0) given x(1), x(1)
              uniform) and applied recursively at 4 scales when coding and evaluating (the
              reference's test-time recursion: x(4) uniform).
  rgb_shared_fused  what rgb_shared was before 2026-12-04 (not the paper's): one decoder shared
              by 3 scales, with feature fusion, trained on all of them.
  cpu         small enough to train usefully on 2 CPU cores in about an hour: Cf=32 (else as
              the paper, E_in included), 64x64 crops, batch 16, Adam 1e-3 with cosine decay
              over 4000 steps.
  cpu_rgb     the "RGB" ablation at the cpu size, 3000 steps (no encoders: faster steps, and at a
              CPU budget it leaves the early plateau of the learned representation far sooner).
              The shipped model was trained with it (jaxcomp/codecs/pretrained/l3c.json).
  tiny        seconds, for tests (learned z, E_in included; validated on one shipped photo at half size).

RGB mixtures: the paper-scale variants use the reference code's (``model.reference_rgb_mixture``:
log-scales clamped at -7 in pixel units and sigmoid channel-mixing coefficients); cpu, cpu_rgb and
tiny keep what the shipped models trained with (the clamp at -7 on the [-1, 1] grid, 127.5x looser,
which costs >= 0.039 bits on every RGB subpixel, and tanh coefficients); docs/l3c.md.

Steps and epochs. The trainer counts steps (batches), the paper epochs: it decays the learning
rate x0.75 every 5 epochs of its ~300k Open Images training images at batch 30, i.e. every
5 x 300k / 30 = 50k steps (``optimizer.decay_every``). The reference code sets no total number
of epochs (``max_epochs = None``; its README: ~5 days on a Titan Xp per model). ``steps =
1_000_000`` for the paper variants is our cap, 100 epochs of 300k images (10k steps each); with
another training set an epoch is ``images / batch_size`` steps, so scale ``decay_every`` (and
``steps``) to keep "every 5 epochs". The CPU variants count steps only (4000 / 3000 steps of
batch 16, about an hour on 2 idle cores; ``--time-limit`` stops earlier). docs/l3c.md has more.

Validation: a folder source holds out the originals of the shipped photos of the "val" role
(``data.holdout=samples_val``; jaxcomp/data/samples/splits.json) and never reads those of the
"test" role, so no training decision touches the photos the README's final table reports.

The paper-scale variants (paper, rgb, rgb_shared, rgb_shared_fused) need real training data and refuse to start
without it: the default source is a folder whose path you give (or tfds), and the shipped samples,
which are the photos the codec is evaluated on, are refused (``data.allow_samples=False``; set it
True only for timing, as experiments/bench_train.py does):

    python -m experiments.train --config configs/l3c.py:paper --workdir runs/l3c_paper \
        --config.data.source=folder --config.data.path=/data/openimages_train
"""

import ml_collections

VARIANTS = ("paper", "rgb", "rgb_shared", "rgb_shared_fused", "cpu", "cpu_rgb", "tiny")


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
        # folder source: validate on the originals of the "val" shipped samples, never read the "test"
        # ones (samples/splits.json); "samples": all 8 validate (before 2026-12-04), "hash": num_val
        holdout="samples_val",
        num_val=2,                 # else: images held out by a stable hash of their names
        tfds_name="", tfds_train_split="train", tfds_val_split="", tfds_data_dir="",
        crop=128, batch_size=30, flip=True,
        downscale=(1.0, 1.0),      # random scale range applied before cropping (L3C data prep)
        eval_crop=256,             # validation images are cut into tiles of this size
        eval_downscale=1.0,        # validation images resized by this before tiling (1.0: their own size)
        cache=True,                # keep decoded images in memory
        seed=0,
    ))

    c.model = ml_collections.ConfigDict(dict(
        scales=3, features=64, blocks=8, latent_channels=5, levels=25, sigma=2.0, mixtures=10,
        representation="learned", share_weights=False,
        # the reference encoder's per-scale 3x3 input conv E_in (False: the models trained before it)
        encoder_head_conv=True,
        # D(s) fuses D(s+1)'s features; train_scales 0: the loss covers every scale (rgb_shared: 1)
        fuse_features=True, train_scales=0,
        # RGB mixtures as the reference code's (log-scale floor -7 in pixel units, sigmoid coefficients);
        # False: the floor at -7 on the [-1, 1] grid and tanh, what the shipped CPU models trained with
        reference_rgb_mixture=False,
        # beyond the paper: code each 2x2 block of a scale in 1 (the paper), 2 (checkerboard) or 4
        # steps, each conditioned on the sub-pixels of the steps before; "light" per-step heads or
        # one "shared" head with a step embedding (docs/l3c.md)
        subpixel_steps=1, subpixel_head="light",
        # "rgb" only: x(s+1) is x(s)'s bicubic downscaling (the paper) or, beyond it, "subsample":
        # its top-left pixels, never coded twice (needs subpixel_steps=4, share_weights=False; docs/l3c.md)
        rgb_pyramid="bicubic",
    ))

    # The paper decays by 0.75 every 5 epochs; an epoch of Open Images (~300k images) at
    # batch 30 is 10k steps, so decay_every = 50k steps.
    c.optimizer = ml_collections.ConfigDict(dict(
        name="rmsprop", learning_rate=1e-4, schedule="step", decay_rate=0.75, decay_every=50_000,
        warmup_steps=0, grad_clip=0.0,
        # "" trains every parameter; a regular expression trains only the matching ones (e.g.
        # "step_heads" with a trained model's weights frozen: jaxcomp.train.make_optimizer)
        train_only="",
    ))

    c.steps = 1_000_000
    c.log_every = 100
    c.eval_every = 5_000
    c.checkpoint_every = 5_000
    c.keep = 3
    c.eval_batch_size = 4
    c.distributed = False          # call jax.distributed.initialize() (multi-host)

    if variant in ("paper", "", "rgb", "rgb_shared", "rgb_shared_fused"):  # real training data only
        c.data.update(source="folder", allow_samples=False)
        c.model.reference_rgb_mixture = True
    if variant in ("rgb", "rgb_shared", "rgb_shared_fused"):
        c.model.update(representation="rgb", encoder_head_conv=False)  # no encoders
        if variant == "rgb_shared":  # cr_rgb_shared.cf: num_scales=1, dec.skip=False; tested with 3 recursions
            c.model.update(share_weights=True, fuse_features=False, scales=4, train_scales=1)
        elif variant == "rgb_shared_fused":
            c.model.share_weights = True
    elif variant in ("cpu", "cpu_rgb"):
        # ~1 hour on 2 cores: narrower and shallower, smaller crops, Adam for fast progress.
        c.model.update(features=32)
        c.data.update(crop=64, batch_size=16, downscale=(0.6, 1.0))
        c.optimizer.update(name="adam", learning_rate=1e-3, schedule="cosine", decay_steps=4000,
                           warmup_steps=100, grad_clip=5.0)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 4000, 50, 500, 500
        c.data.eval_crop, c.eval_batch_size = 128, 8
        if variant == "cpu_rgb":  # the RGB-pyramid ablation at the cpu size: learns much faster early on
            c.model.update(representation="rgb", encoder_head_conv=False)
            c.optimizer.decay_steps = c.steps = 3000
    elif variant == "tiny":
        c.model.update(scales=2, features=8, blocks=1, mixtures=2, levels=9)
        c.data.update(crop=16, batch_size=4, eval_crop=32, num_val=1, eval_downscale=0.5)  # 1 photo, half size
        c.optimizer.update(name="adam", learning_rate=3e-3, schedule="constant", decay_steps=0)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 20, 5, 20, 10
        c.eval_batch_size = 4
    elif variant not in ("paper", ""):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if "decay_steps" not in c.optimizer:
        c.optimizer.decay_steps = 0
    return c
