"""GC: generative compression at extreme rates (Agustsson et al., ICCV 2019).

    python -m experiments.train --config configs/gc.py:cpu_c4 --workdir runs/gc_c4 \
        --config.data.source=folder --config.data.path=../shared/data/photos --time-limit 3600

Rate without entropy coding: C * log2(5) / 256 bpp (C=2: 0.0181, C=4: 0.0363, C=8: 0.0726); the
codec codes the symbols under a learned factorized prior, so files come in below that bound.

  paper_c2/_c4/_c8  the paper's networks (E: c7s1-60 d120 d240 d480 d960 c3s1-C; G: c3s1-960,
                    9 residual blocks, u480 u240 u120 u60 c7s1-3; instance norm), a 3-scale
                    pix2pixHD discriminator (64 features), LSGAN, lambda_MSE 10, feature matching
                    10 (pix2pixHD's weight), no VGG loss (it needs downloaded ImageNet weights);
                    Adam 2e-4 (b1 0.5, pix2pixHD's), 256x256 crops of a large photo set
                    (the paper: Open Images; data.path=FOLDER, or data.source='tfds'), batch 8; for
                    accelerators. They refuse the shipped samples (the evaluation photos).
  cpu_c2/_c4/_c8    the same structure at 3/16 of the channels (11 ... 180), 4 residual blocks,
                    a 3-scale discriminator of 16 features, 128x128 crops, batch 8, feature
                    matching 2.5 (the weight the shipped models trained with): about an hour
                    on 2 CPU cores; the first third of the steps train E and G on the distortion
                    alone (gan.warmup_steps), as a short run cannot afford to learn it adversarially.
  tiny              seconds, for tests.

Selective generative compression (SC): a label map beside each image (batches carry `semantic`),
E and F see it, a heatmap drawn every step zeroes the latent where G synthesises, the MSE is on
the preserved pixels only and D is conditioned on the map (config.sc; jaxcomp/codecs/gc/semantic.py).

  paper_sc          Cityscapes from tfds ('cityscapes/semantic_segmentation': image_left and
                    segmentation_label, 34 label ids, prepared as array_record under
                    data.tfds_data_dir), images at 512x1024 (downscale 0.5, training and evaluation),
                    512x512 crops, batch 1,
                    C=8, the paper's networks and losses as paper_c*, random instances (RI) with
                    classes as instances: each class preserved with probability 0.25, the rest
                    synthesised; for accelerators. sc.mode=box gives the paper's random boxes (RB).
  cpu_sc            cpu_c4's networks and schedule with C=4 and 8 colour-cluster classes computed
                    per photo (data.labels='clusters': k-means in colour and position, no
                    semantics; it exercises the masking and synthesis, not semantic synthesis):
        python -m experiments.train --config configs/gc.py:cpu_sc --workdir runs/gc_sc \
            --config.data.source=folder --config.data.path=../shared/data/photos --time-limit 3600
  sc_tiny           seconds, for tests (4 colour clusters of the shipped photos).
"""

import ml_collections

VARIANTS = ("paper_c2", "paper_c4", "paper_c8", "cpu_c2", "cpu_c4", "cpu_c8", "tiny", "paper_sc", "cpu_sc", "sc_tiny")


def get_config(variant: str = "paper_c4") -> ml_collections.ConfigDict:
    if variant not in VARIANTS + ("",):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    variant = variant or "paper_c4"
    c = ml_collections.ConfigDict()
    c.task = "gc"
    c.seed = 0
    c.init_from = ""
    c.init_grow = False

    c.data = ml_collections.ConfigDict(dict(
        source="samples", path="", val_path="", holdout="samples_val", num_val=2,
        allow_samples=True,  # False (paper variants): refuse to train on the shipped samples
        tfds_name="", tfds_train_split="train", tfds_val_split="", tfds_data_dir="",
        crop=256, batch_size=8, flip=True, downscale=(0.5, 1.0), eval_crop=256, cache=True, seed=0,
        eval_downscale=1.0,  # validation images resized by this before tiling (1.0: their own size)
    ))
    channels = int(variant.split("_c")[-1]) if "_c" in variant else {"paper_sc": 8}.get(variant, 4)
    c.model = ml_collections.ConfigDict(dict(
        channels=channels, width=1.0, res_blocks=9, sigma=1.0, noise_channels=0, semantic_classes=0,
        disc_features=64, disc_scales=3, disc_layers=3,
    ))
    # beta: weight of a rate term (the prior's bits of the latent, soft-to-hard gradient: model.soft_prior_bits);
    # 0 in every shipped config: the rate is then bounded by C * log2(5) / 256 bpp through C alone
    c.loss = ml_collections.ConfigDict(dict(gan="lsgan", lambda_mse=10.0, lambda_fm=10.0, beta=0.0))
    c.gan = ml_collections.ConfigDict(dict(mode="joint", d_steps=1, warmup_steps=0))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=2e-4, b1=0.5, b2=0.999, schedule="constant", decay_steps=0,
        warmup_steps=0, grad_clip=0.0,
    ))
    c.optimizer_d = ml_collections.ConfigDict(dict(c.optimizer.to_dict()))
    c.steps = 150_000
    c.log_every = 100
    c.eval_every = 5_000
    c.checkpoint_every = 5_000
    c.keep = 3
    c.eval_batch_size = 4
    c.distributed = False

    if variant in ("paper_sc", "cpu_sc", "sc_tiny"):
        _selective(c, variant)
    if variant in ("paper_c2", "paper_c4", "paper_c8"):  # a large photo folder (or tfds), never the samples
        c.data.update(source="folder", allow_samples=False)
    if variant.startswith("cpu_"):
        c.model.update(width=0.1875, res_blocks=4, disc_features=16)
        c.data.update(crop=128, batch_size=8, eval_crop=192)
        c.optimizer.update(learning_rate=5e-4, schedule="cosine", decay_steps=12000, warmup_steps=100,
                           grad_clip=5.0)
        c.optimizer_d.update(learning_rate=2e-4)
        c.gan.warmup_steps = 4000
        # the feature-matching weight the shipped CPU models trained with: before 2026-12-06 the loss was
        # the plain average over layers and scales, 1/4 of pix2pixHD's (the paper's 10 is in pix2pixHD's units)
        c.loss.lambda_fm = 2.5
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 12000, 50, 1000, 250
    elif variant in ("tiny", "sc_tiny"):
        c.model.update(width=0.05, res_blocks=1, disc_features=4, disc_scales=2, disc_layers=2)
        c.data.update(crop=32, batch_size=2, eval_crop=32, num_val=1, eval_downscale=0.5)  # 1 photo, half size
        c.gan.warmup_steps = 1
        c.steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 2, 4, 2
        c.eval_batch_size = 2
    return c


def _selective(c: ml_collections.ConfigDict, variant: str) -> None:
    """The SC keys: the label maps (config.data), their classes (config.model) and the heatmaps (config.sc)."""
    classes = {"paper_sc": 34, "cpu_sc": 8, "sc_tiny": 4}[variant]
    c.model.semantic_classes = classes
    # data.labels: 'tfds' (the dataset's own maps, tfds_label_key) or 'clusters' (per-image colour
    # clustering into label_classes classes, cluster_position weighing position against colour);
    # label_outside: the class that label values >= label_classes become (-1: refuse them)
    c.data.update(labels="clusters", label_classes=classes, cluster_position=0.5, label_outside=-1,
                  tfds_image_key="image", tfds_label_key="segmentation_label")
    c.sc = ml_collections.ConfigDict(dict(
        mode="classes",          # 'none' | 'box' (the paper's RB) | 'classes' (its RI, classes for instances)
        chosen="preserve",       # the drawn classes / box are kept and the rest synthesised ('synthesize': the reverse)
        class_fraction=0.25,     # RI: each class is drawn with this probability (the paper: 25% of instances)
        box_min=0.25, box_max=0.75,  # RB: box sides as fractions of the latent's
        p_mask=1.0,              # probability that an image is masked at all (else all preserved)
    ))
    if variant == "paper_sc":
        c.data.update(source="tfds", tfds_name="cityscapes/semantic_segmentation", tfds_train_split="train",
                      tfds_val_split="validation", holdout="hash", labels="tfds", tfds_image_key="image_left",
                      label_outside=0, crop=512, downscale=(0.5, 0.5), batch_size=1, eval_crop=512,
                      eval_downscale=0.5)  # evaluated at the 512x1024 it trains at
        c.eval_batch_size = 1
