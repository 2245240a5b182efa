"""Distribution-preserving lossy compression (Tschannen, Agustsson & Lucic, NeurIPS 2018).

Stage 1, the generative model (WGAN-GP, WAE or Wasserstein++):
    python -m experiments.train --config configs/dplc.py:mnist --workdir runs/dplc_mnist_g \
        --config.data.path=../shared/data/mnist/mnist.npz
Stage 2, E and B into the frozen G's latent space at one rate (m channels x L levels):
    python -m experiments.train --config configs/dplc.py:mnist_compress --workdir runs/dplc_mnist_m4 \
        --config.data.path=../shared/data/mnist/mnist.npz --config.compress.generator=runs/dplc_mnist_g \
        --config.model.code_channels=4
The sweep over rates with the baselines, seeds and plots: ``python -m experiments.dplc_sweep``.

Variants (``<data>`` is the stage-1 model; ``<data>_compress`` DPLC; ``<data>_cae`` the compressive
auto-encoder with MSE; ``<data>_gan`` the GAN-compression objective, adversarial + MSE):
  paper_celeba[_compress|_cae|_gan]   CelebA 64x64 (tfds ``celeb_a``: Resize(64) + CenterCrop(64) of
        the aligned images, as the reference), nz = 128, N(0, I) prior, f = 64; Wasserstein++ with the
        reference's settings (``--lbd 100 --lbd_di 2.5e-5 --lr_eg 3e-4``, batch 256, 165 epochs,
        x0.4 at epochs 100 and 140, 5 critic steps, gradient penalty 10, RMSE distortion); stage 2
        with ``--lbd 300 --lr_eg 1e-3 --nresenc 2 --ncenc 8`` (m = 8 channels of L = 2 levels on the
        4x4 grid: 128 bits, 0.031 bpp), 55 epochs, x0.4 at 30 and 50. For accelerators. Epochs are the
        reference's: 636 // 5 = 127 generator iterations of 5 critic updates and 1 generator update,
        each iteration 6 trainer steps (``gan.mode=alternate``: the generator step reads its own batch),
        each player's learning rate decaying at its own update count (``_alternating``).
  paper_celeba_wgan, paper_celeba_wae  the other two stage-1 models of the paper's comparison
        (WGAN-GP: lr 1e-4, Adam (0.5, 0.9), batch 64; WAE: lr 1e-3, batch 256, 55 epochs).
  mnist_wgan, mnist_wae (also photos_*, tiny_*)  the same two on the CPU recipe: WGAN-GP with G's loss the
        critic's score alone, Adam (0.5, 0.9) at 1e-4 for G and 3e-4 for the critic, joint 1:1 steps; WAE
        is Wasserstein++ without its critic. ``python -m experiments.dplc_generators`` trains and compares
        all three objectives with seeds.
  paper_lsun[_compress|_cae|_gan]   the same on LSUN bedrooms (tfds ``lsun/bedroom``), 10k images of
        the training split held out as the reference's ``--lsun_custom_split`` does; its "epoch" is a
        tenth of LSUN's 11,847 batches in both stages (LSUN is 19x larger than CelebA; the reference
        gives no LSUN schedule).
  mnist[_compress|_cae|_gan]   the CPU substitute: MNIST padded to 32x32 (1 channel; x_train[:50000]
        trains, x_train[50000:] validates, the test split is for reports), nz = 16, f = 16, batch 64;
        Wasserstein++ for 5000 joint steps (G, F and the critic each step); stage 2 for 1500 steps
        (the sweep: 400). Minutes on 2 CPU cores.
  photos[_compress|_cae|_gan]   64x64 crops of photos resized to 128 pixels on the shorter side
        (``data.source=folder``, ``data.path=../shared/data/photos``; ``data.holdout=samples_val``: the
        shipped samples' originals never train, the 4 of the "val" role validate and the sweep reports
        on the 4 of the "test" role, ``jaxcomp/data/samples/splits.json``); nz = 64, f = 16; stage 1
        for 2000 joint steps at batch 32 (x0.4 at 1400; 25 min on 2 idle CPU cores at 0.75 s a step).
  tiny[_compress]   seconds, for tests (the shipped photo samples at 16x16).
"""

import ml_collections

DATASETS = ("paper_celeba", "paper_lsun", "mnist", "photos", "tiny")
STAGE2 = ("compress", "cae", "gan")
# the other two stage-1 objectives of the paper's comparison (WGAN-GP, WAE); ``<data>`` alone is Wasserstein++
OBJECTIVES = ("wgan", "wae")
EXTRA = tuple(f"{d}_{o}" for d in ("paper_celeba", "mnist", "photos", "tiny") for o in OBJECTIVES)
VARIANTS = DATASETS + tuple(f"{d}_{s}" for d in DATASETS for s in STAGE2) + EXTRA


def _optimizer(lr: float, b2: float = 0.999, boundaries: tuple = ()) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        name="adam", learning_rate=lr, b1=0.5, b2=b2, schedule="piecewise" if boundaries else "constant",
        boundaries=tuple(boundaries), decay_rate=0.4, warmup_steps=0, grad_clip=0.0))


def _alternating(c: ml_collections.ConfigDict, epoch: int, epochs: int, g_lr: float, d_lr: float,
                 decay_epochs: tuple = (), b2: float = 0.999) -> None:
    """The reference's WGAN schedule in ``gan.mode="alternate"`` steps: an epoch of ``epoch`` batches is
    ``epoch // d`` generator iterations (``d = gan.d_steps``), each ``d`` critic updates and one generator
    update; both learning rates drop x0.4 at ``decay_epochs`` (the reference steps its MultiStepLR once
    an epoch). Each player's schedule counts its own updates, so the boundaries are per player. A
    trainer step updates one player on its own batch: an iteration is ``d + 1`` steps (the reference's
    generator reuses the last critic batch, so it reads ``d`` batches an iteration)."""
    d = int(c.gan.d_steps)
    iters = epoch // d
    c.optimizer = _optimizer(g_lr, b2, tuple(e * iters for e in decay_epochs))
    c.optimizer_d = _optimizer(d_lr, b2, tuple(e * iters * d for e in decay_epochs))
    c.steps = epochs * iters * (d + 1)


def _cpu(c: ml_collections.ConfigDict) -> None:
    """The CPU stage-1 recipe: f = 16, G upsampling by resize + conv, Wasserstein++ with a critic
    weight of 1e-3, 5000 steps, Adam 1e-3 (x0.4 at 3500), the critic at 1e-4."""
    c.model.update(features=16, critic_features=16, upsample="resize")
    c.loss.update(gan=1e-3)
    # joint updates: on the CPU a step computes both players' branches anyway (gan.training.branch),
    # so the reference's 5:1 alternation would cost 5x the time per generator update
    c.gan.update(mode="joint", d_steps=1)
    c.optimizer = _optimizer(1e-3, boundaries=(3500,))
    c.optimizer_d = _optimizer(1e-4, b2=0.9)
    c.steps, c.log_every, c.eval_every, c.checkpoint_every = 5000, 100, 1000, 1000


def get_config(variant: str = "mnist") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    stage = next((s for s in STAGE2 if variant.endswith("_" + s)), "")
    dataset = variant[: -len(stage) - 1] if stage else variant
    objective = "wpp"
    if dataset in EXTRA:
        dataset, objective = dataset.rsplit("_", 1)

    c = ml_collections.ConfigDict()
    c.task = "dplc" if stage else "dplc_generator"
    c.seed = 0
    c.init_from = ""
    c.data = ml_collections.ConfigDict(dict(
        source="tfds", path="", val_path="", holdout="hash", num_val=0, pad_to=32, resize=64,
        tfds_name="celeb_a", tfds_train_split="train", tfds_val_split="validation", tfds_data_dir="",
        crop=64, batch_size=256, flip=False, downscale=(1.0, 1.0), eval_crop=64, cache=True, seed=0,
    ))
    c.model = ml_collections.ConfigDict(dict(
        image_size=64, channels=3, latent=128, features=64, critic_features=64, code_channels=8, levels=2,
        res_blocks=2, sigma=1.0, prior="gaussian", prior_var=1.0, upsample="transposed"))
    c.loss = ml_collections.ConfigDict(dict(distortion="rmse", mmd=100.0, gan=2.5e-5, gp=10.0, adversarial="wgan"))
    c.gan = ml_collections.ConfigDict(dict(mode="alternate", d_steps=5, warmup_steps=0))
    # CelebA: 162,770 training images, 636 batches of 256 an epoch
    epoch = 636
    _alternating(c, epoch, epochs=165, g_lr=3e-4, d_lr=1e-4, decay_epochs=(100, 140))
    c.log_every, c.eval_every, c.checkpoint_every, c.keep = 100, 5000, 5000, 2
    c.eval_batch_size = 256
    c.distributed = False
    if stage:
        c.compress = ml_collections.ConfigDict(dict(
            generator="",              # the stage-1 model: a dplc_generator workdir, .msgpack or shipped name
            decoder="frozen",          # frozen (DPLC) | train (the baselines)
            decoder_init="generator",  # generator | scratch
        ))
    else:
        c.objective = objective        # wgan | wae | wpp (Wasserstein++)

    if dataset == "paper_celeba" and objective == "wgan":
        c.loss.update(gan=1.0, mmd=0.0)
        c.optimizer = _optimizer(1e-4, b2=0.9)
        c.optimizer_d = _optimizer(1e-4, b2=0.9)
        c.data.batch_size = 64
        _alternating(c, 2543, epochs=165, g_lr=1e-4, d_lr=1e-4, b2=0.9)  # 2,543 batches of 64 an epoch
    elif dataset == "paper_celeba" and objective == "wae":
        c.loss.update(gan=0.0)
        c.gan.update(mode="none", d_steps=1)
        c.optimizer = _optimizer(1e-3, boundaries=(30 * epoch, 50 * epoch))
        c.steps = 55 * epoch
    elif dataset == "paper_lsun":
        c.data.update(tfds_name="lsun/bedroom", tfds_train_split="train[10000:]", tfds_val_split="train[:10000]")
        # a tenth of CelebA's epochs in both stages, LSUN being 19x larger: an "epoch" here is 1/10 of LSUN
        epoch = 3_033_042 // 256 // 10
        _alternating(c, epoch, epochs=165, g_lr=3e-4, d_lr=1e-4, decay_epochs=(100, 140))
    elif dataset == "mnist":
        c.data.update(source="mnist", path="../shared/data/mnist/mnist.npz", num_val=2000, resize=0, crop=32,
                      eval_crop=32, batch_size=64)
        c.model.update(image_size=32, channels=1, latent=16)
        _cpu(c)
        c.eval_batch_size = 500
    elif dataset == "photos":
        c.data.update(source="folder", path="../shared/data/photos", holdout="samples_val", num_val=2, resize=128,
                      flip=True, batch_size=32)
        c.model.update(latent=64)
        _cpu(c)
        c.optimizer = _optimizer(1e-3, boundaries=(1400,))
        c.steps = 2000
        c.eval_batch_size = 64
    elif dataset == "tiny":
        c.data.update(source="samples", holdout="hash", num_val=1, resize=48, crop=16, eval_crop=16, batch_size=4)
        c.model.update(image_size=16, latent=8, features=4, critic_features=4, code_channels=2, res_blocks=1)
        c.gan.update(d_steps=2)
        c.optimizer = _optimizer(1e-3)
        c.optimizer_d = _optimizer(1e-4, b2=0.9)
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 6, 2, 6, 3
        c.eval_batch_size = 8
    if dataset != "paper_celeba" and objective == "wgan":
        # WGAN-GP alone on the CPU recipe: the adversarial term is G's whole loss (weight 1); with joint 1:1
        # updates the critic learns 3x faster than G (TTUR), in place of the reference's 5 critic steps a step
        bounds = tuple(c.optimizer.boundaries)
        c.loss.update(gan=1.0, mmd=0.0)
        c.optimizer = _optimizer(1e-4, b2=0.9, boundaries=bounds)
        c.optimizer_d = _optimizer(3e-4, b2=0.9, boundaries=bounds)
    elif dataset != "paper_celeba" and objective == "wae":
        # WAE: Wasserstein++ without its critic (the same distortion, MMD weight, optimiser and steps)
        c.loss.gan = 0.0
        c.gan.update(mode="none", d_steps=1)

    if not stage:
        # experiments/dplc_sweep.py: stage-2 runs of each method at each rate (m channels, L levels)
        c.sweep = ml_collections.ConfigDict(dict(
            dataset=dataset, generator="", methods=("dplc", "cae", "gan"), seeds=(0, 1, 2),
            rates=((0, 2), (2, 2), (4, 2), (8, 2), (16, 2)),  # 0 .. 256 bits on the 4x4 grid
            steps=0,              # > 0: every stage-2 run trains this many steps (else the variant's own)
            mmd=0.0,              # > 0: DPLC's lambda (loss.mmd) in place of the stage-2 variant's
            mmd_per_rate=(),      # or one lambda per rate of `rates` (e.g. "(1.0, 1.0, 3.0, 3.0, 10.0)")
            split="test",         # test: report | val: choose settings (never on the reported data)
            time_limit=0.0,       # seconds for the whole command (0: none); the same command continues
            eval_images=10_000, grid_images=10, quiet=False))
        if dataset == "mnist":
            # 0, 4, 16, 64 and 256 bits per image on the 2x2 grid (0 to 0.25 bpp)
            # lambda = 1: chosen on the validation digits (sweep.split=val; docs/dplc.md), not the reported ones
            c.sweep.update(rates=((0, 2), (1, 2), (4, 2), (16, 2), (32, 4)), steps=400, mmd=1.0)
        elif dataset == "photos":
            # 0, 32, 128, 512 and 2048 bits per 64x64 crop on the 4x4 grid (0 to 0.5 bpp); 300 steps a run
            # lambda = 1: chosen on the "val" originals (sweep.split=val; docs/dplc.md), not the reported "test" ones
            c.sweep.update(rates=((0, 2), (2, 2), (8, 2), (32, 2), (64, 4)), steps=300, eval_images=1000, mmd=1.0)
        elif dataset == "tiny":
            c.sweep.update(rates=((0, 2), (2, 2)), methods=("dplc", "cae"), seeds=(0, 1), steps=3, eval_images=8,
                           grid_images=4, quiet=True)
    if not stage and f"{dataset}_wgan" in EXTRA:
        # experiments/dplc_generators.py: the paper's comparison of the stage-1 objectives, with seeds
        c.generators = ml_collections.ConfigDict(dict(
            objectives=("wgan", "wae", "wpp"), seeds=(0, 1, 2),
            steps=0,              # > 0: every run trains this many steps (the decays scaled); else the variant's own
            time_limit=0.0,       # seconds for the whole command (0: none); the same command continues
            eval_images=10_000, grid_images=10, quiet=False))
        if dataset == "mnist":
            c.generators.steps = 2500  # half the shipped generator's 5000: 9 runs in about an hour on 2 CPU cores
        elif dataset == "photos":
            c.generators.eval_images = 1000
        elif dataset == "tiny":
            # 3 steps: two critic steps (gan.d_steps=2), then one generator step, so each objective's G moves
            c.generators.update(seeds=(0, 1), steps=3, eval_images=8, grid_images=4, quiet=True)
    if stage:
        c.gan.update(mode="none", d_steps=1, warmup_steps=0)
        c.loss.gan = 0.0
        if dataset.startswith("paper"):
            c.loss.mmd = 300.0
            c.optimizer = _optimizer(1e-3, boundaries=(30 * epoch, 50 * epoch))
            c.steps = 55 * epoch
        else:
            c.optimizer = _optimizer(1e-3, boundaries=(1000,) if dataset != "tiny" else ())
            c.steps = 1500 if dataset != "tiny" else 6
            c.eval_every = c.checkpoint_every = c.steps
        if stage in ("cae", "gan"):
            c.compress.decoder = "train"
            c.loss.update(mmd=0.0, distortion="mse")
        if stage == "gan":
            # GC's objective on this decoder: MSE + 0.1 LSGAN (GC: 10 MSE + 1 LSGAN), one D step per step
            c.loss.update(adversarial="lsgan", gan=0.1 if dataset != "tiny" else 1.0)
            c.gan.update(mode="joint", d_steps=1)
    return c
