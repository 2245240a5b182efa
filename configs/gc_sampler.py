"""Sampling from GC: a WGAN-GP on the quantized latents of a frozen GC model (ICCV'19, Sec. 6.3).

    python -m experiments.train --config configs/gc_sampler.py:cpu --workdir runs/gc_sampler \
        --config.data.source=folder --config.data.path=../shared/data/photos
    python -m experiments.gc_samples --sampler runs/gc_sampler      # image grid + SWD vs baselines

The latent generator maps 128-d Gaussian noise through a dense layer and two x2 stages to the
``crop/16`` x ``crop/16`` x C latent; the critic has three 3x3 conv layers and a dense score; WGAN-GP
with penalty weight 10, 5 critic steps per generator step, Adam 1e-4 (b1 0.5, b2 0.9), as
Gulrajani et al. 2017.

  paper   256x256 crops (16x16 latents) of a large photo set (data.path=FOLDER or tfds; the shipped
          samples are refused), 64 features, batch 64; accelerators.
  cpu     the same on 2 CPU cores with the shipped gc_c4: 32 features, batch 16, 6000 steps.
  tiny    seconds, for tests (set gc_model to a GC model file).
"""

import ml_collections

VARIANTS = ("paper", "cpu", "tiny")


def get_config(variant: str = "paper") -> ml_collections.ConfigDict:
    if variant not in VARIANTS + ("",):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.task = "gc_sampler"
    c.seed = 0
    c.gc_model = "c4"              # the frozen GC model: shipped name, .msgpack or workdir
    c.init_from = ""
    c.data = ml_collections.ConfigDict(dict(
        source="samples", path="", val_path="", holdout="samples_val", num_val=2,
        allow_samples=True,  # False (paper variants): refuse to train on the shipped samples
        tfds_name="", tfds_train_split="train", tfds_val_split="", tfds_data_dir="",
        crop=256, batch_size=64, flip=True, downscale=(0.5, 1.0), eval_crop=256, cache=True, seed=0,
    ))
    c.model = ml_collections.ConfigDict(dict(noise=128, features=64, critic_features=64))
    c.loss = ml_collections.ConfigDict(dict(gp=10.0))
    c.gan = ml_collections.ConfigDict(dict(mode="alternate", d_steps=5, warmup_steps=0))
    c.optimizer = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-4, b1=0.5, b2=0.9,
                                                 schedule="constant", warmup_steps=0, grad_clip=0.0))
    c.optimizer_d = ml_collections.ConfigDict(dict(c.optimizer.to_dict()))
    c.steps = 100_000
    c.log_every = 100
    c.eval_every = 5_000
    c.checkpoint_every = 5_000
    c.keep = 2
    c.eval_batch_size = 8
    c.distributed = False
    if variant in ("paper", ""):  # a large photo folder (or tfds), never the evaluation samples
        c.data.update(source="folder", allow_samples=False)
    if variant == "cpu":
        c.model.update(features=32, critic_features=32)
        c.data.update(batch_size=16)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 6000, 50, 1000, 500
    elif variant == "tiny":
        c.gc_model = ""
        c.model.update(noise=8, features=4, critic_features=4)
        c.data.update(crop=32, batch_size=2, eval_crop=32, num_val=1)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 2, 4, 2
        c.eval_batch_size = 2
    return c
