"""Image understanding on compressed representations (Torfason et al., ICLR'18).

    python -m experiments.understanding --config configs/understanding.py:cpu --workdir runs/understanding

runs the whole study (``experiment`` block below): the codec fine-tuned to three operating points,
classifiers and segmenters on latents / decodings / originals with seeds, the joint-training rows.
A single run of one row through the ordinary trainer:

    python -m experiments.train --config configs/understanding.py:latent --workdir runs/u_latent \\
        --config.data.codec=runs/understanding/codec_low

Variants:
  cpu        the study on the local digit scenes (64x64 MNIST digits in colour on crops of the
             project's photos, :mod:`jaxcomp.data.digit_scenes`), sized for 2 CPU cores.
  gpu        the same study with twice the scenes and larger batches, for one accelerator (the
             compute stage, FLOPs and CPU timings, is left to the CPU run).
  tiny       seconds, for tests.
  codec_low / codec_med / codec_high
             the CPM codec (configs/cpm.py's CPU architecture) fine-tuned on the scenes to the paper's
             three operating points (~0.1, 0.33, 0.63 bpp: H_target 0.2, 0.66 bits per symbol of C=32
             channels, 0.63 of C=64), each from the shipped photo model of its rate. The real rate also
             holds the importance map's bits (~0.04 bpp here) and lags the target in a short run (the
             hinge only pushes while H_soft is above it): 1000 steps gave 0.31 / 0.39 / 0.69 bpp.
  codec_vlow H_target 0.1, to reach the paper's lowest point (~0.1 bpp) in a short run.
  latent / decoded / original
             one classification row: cResNet on the latent, ResNet on the decoding, ResNet on the
             original (set data.codec; inputs precomputed once on the host).
  seg_latent / seg_decoded / seg_original
             the same for segmentation (DeepLab-style ASPP head, mIoU).
  joint      joint training: codec + cResNet on ``codec loss + task_weight * cross-entropy``, from a
             trained codec (understanding.codec) and a trained latent classifier (understanding.init_net).
  paper_imagenet_latent / paper_imagenet_decoded / paper_imagenet_original
             the paper's ImageNet rows: cResNet-51 on the 28x28xC latent of 224x224 images vs ResNet-50
             on decoded / original RGB, the codec in the graph (tfds imagenet2012, array_record).
  paper_voc_latent / paper_voc_decoded / paper_voc_original
             the paper's segmentation rows: DeepLab (ASPP) on cResNet / ResNet features, PASCAL VOC 2012
             in its original layout (data.path = .../VOCdevkit/VOC2012), 21 classes.
"""

import ml_collections

VARIANTS = ("cpu", "gpu", "tiny", "codec_vlow", "codec_low", "codec_med", "codec_high", "latent", "decoded", "original",
            "seg_latent", "seg_decoded", "seg_original", "joint",
            "paper_imagenet_latent", "paper_imagenet_decoded", "paper_imagenet_original",
            "paper_voc_latent", "paper_voc_decoded", "paper_voc_original")

#: The paper's operating points as H_target (bits per symbol) and the shipped CPM model each starts from.
POINTS = {"vlow": (0.1, "cpm_low"), "low": (0.2, "cpm_low"), "med": (0.66, "cpm_med"), "high": (0.63, "cpm_high")}
SHIPPED = "jaxcomp/codecs/pretrained/{}.msgpack"


def _scene_data(kind: str = "classification") -> ml_collections.ConfigDict:
    seg = kind == "segmentation"
    return ml_collections.ConfigDict(dict(
        source="digit_scenes", kind=kind, size=64, digits=(2, 3) if seg else (1, 1),
        digit_size=(20, 36) if seg else (36, 56), scene_seed=0,
        num_train=6000, num_val=1000, num_test=2000,
        mnist_path="../shared/data/mnist/mnist.npz", photos_path="../shared/data/photos",
        cache_dir="runs/understanding_cache",
        input="latent", codec="", precomputed=True, normalize=False, codec_batch_size=64,
        batch_size=64, augment="none", seed=0, num_classes=11 if seg else 10,
    ))


def set_input(c: ml_collections.ConfigDict, inp: str, kind: str | None = None) -> ml_collections.ConfigDict:
    """``c`` reading ``inp`` (latent / decoded / original) for ``kind``: the network of that input, the
    same input in ``data`` and ``understanding``."""
    kind = kind or c.understanding.task
    c.understanding.input = c.data.input = inp
    c.understanding.task = kind
    c.model.name = c.experiment.latent_net if inp == "latent" else c.experiment.rgb_net
    return c


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
    if variant not in VARIANTS + ("",):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    variant = variant or "cpu"
    if variant.startswith("codec_"):
        return codec_config(variant.split("_")[1])
    c = ml_collections.ConfigDict()
    c.task = "understanding"
    c.seed = 0
    c.data = _scene_data()
    c.model = ml_collections.ConfigDict(dict(name="cresnet-1-3-1", num_classes=10, width=0.25))
    c.understanding = ml_collections.ConfigDict(dict(
        input="latent", task="classification", codec="", precomputed=True, train_codec=False,
        task_weight=1.0, init_net="", aspp_rates=(1, 2, 3),
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=2e-3, schedule="cosine", decay_steps=1500, warmup_steps=100, grad_clip=5.0,
    ))
    c.steps = 1500
    c.log_every = 100
    c.eval_every = 500
    c.checkpoint_every = 500
    c.keep = 1
    c.eval_batch_size = 100
    c.distributed = False
    # the study (experiments/understanding.py); one run of the trainer ignores this block
    c.experiment = ml_collections.ConfigDict(dict(
        stages=("codecs", "classification", "joint", "segmentation", "compute"),
        points=("low", "med", "high"), seeds=(0, 1, 2), inputs=("latent", "decoded", "original"),
        tasks=("classification", "segmentation"),
        # cResNet-51 : ResNet-50 in miniature: the latent network gets back the RGB one's depth in its
        # 1/16 stage (the paper adds conv4_x blocks), at about the same FLOPs
        latent_net="cresnet-1-3-1", rgb_net="resnet-1-1-1-1", time_limit=0.0,
        codec_steps=400, codec_batch_size=16, codec_learning_rate=3e-4,
        seg_size=64, seg_steps=1500, seg_points=(), codecs_from="", linear=True,
        joint_point="low", joint_steps=300, joint_task_weight=1.0, joint_learning_rate=1e-4,
        timing_batch=64, report_split="test",
    ))
    if variant == "gpu":  # one accelerator, ~10 minutes
        c.data.update(num_train=12000, num_val=2000, num_test=5000, batch_size=128, codec_batch_size=256)
        c.experiment.update(codec_steps=1000, codec_batch_size=32, seg_steps=1500, joint_steps=500,
                            stages=("codecs", "classification", "joint", "segmentation"))
        c.eval_every = c.checkpoint_every = 1500
    if variant == "tiny":
        c.data.update(num_train=64, num_val=32, num_test=32, batch_size=16, codec_batch_size=32,
                      cache_dir="")
        c.experiment.update(points=("low",), seeds=(0,), codec_steps=2, codec_batch_size=4, seg_steps=2,
                            joint_steps=2, timing_batch=4)
        c.steps = c.optimizer.decay_steps = 2
        c.optimizer.warmup_steps = 0
        c.log_every = c.eval_every = c.checkpoint_every = 2
    if variant in ("latent", "decoded", "original"):
        set_input(c, variant, "classification")
    if variant.startswith("seg_"):
        c.data = _scene_data("segmentation")
        c.model.num_classes = 11
        set_input(c, variant[4:], "segmentation")
        c.steps = c.optimizer.decay_steps = c.experiment.seg_steps
    if variant == "joint":
        c.understanding.update(precomputed=False, train_codec=True, task_weight=c.experiment.joint_task_weight)
        c.data.update(precomputed=False)
        set_input(c, "latent", "classification")
        c.steps = c.optimizer.decay_steps = c.experiment.joint_steps
        c.optimizer.update(learning_rate=c.experiment.joint_learning_rate, warmup_steps=0)
        c.data.batch_size = 16
    if variant.startswith("paper_"):
        _paper(c, variant)
    return c


def codec_config(point: str, base: str = "cpu_") -> ml_collections.ConfigDict:
    """The CPM codec on the digit scenes at operating point ``point`` (vlow / low / med / high), fine-tuned from
    the shipped photo model of that rate (configs/cpm.py's ``cpu_<point>`` architecture)."""
    import os

    from jaxcomp.configs import load_config

    if point not in POINTS:
        raise ValueError(f"unknown operating point {point!r}; use {sorted(POINTS)}")
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config(os.path.join(here, "cpm.py") + f":{base}{'low' if point == 'vlow' else point}")
    h_target, shipped = POINTS[point]
    c.loss.H_target = h_target
    if point == "vlow":  # the hinge must win against the distortion sooner in a short run
        c.loss.beta = 2000.0
    c.init_from = SHIPPED.format(shipped)
    c.init_grow = False
    scenes = _scene_data()
    c.data = ml_collections.ConfigDict(dict(scenes.to_dict(), crop=64, flip=True, downscale=(1.0, 1.0),
                                            eval_crop=64, cache=True, batch_size=16))
    c.optimizer.update(learning_rate=3e-4, warmup_steps=50, decay_steps=400)
    c.steps = 400
    c.log_every, c.eval_every, c.checkpoint_every, c.keep = 50, 400, 200, 1
    c.eval_batch_size = 50
    return c


def _paper(c: ml_collections.ConfigDict, variant: str) -> None:
    """The paper's networks and data (for an accelerator; nothing here fits a CPU)."""
    inp = variant.split("_")[-1]
    if variant.startswith("paper_imagenet"):
        c.data = ml_collections.ConfigDict(dict(
            source="tfds_stream", tfds_name="imagenet2012", tfds_train_split="train", tfds_val_split="validation",
            tfds_data_dir="", size=224, resize=256, batch_size=256, seed=0, num_classes=1000, flip=True,
            input=inp, codec="", precomputed=False, normalize=False,
        ))
        c.model.update(num_classes=1000, width=1.0)
        c.experiment.update(latent_net="cresnet-51", rgb_net="resnet-50")
        set_input(c, inp, "classification")
        c.optimizer.update(name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, schedule="cosine",
                           decay_steps=450_000, warmup_steps=5000, grad_clip=0.0, l2=1e-4)
        c.steps = 450_000
    else:
        c.data = ml_collections.ConfigDict(dict(
            source="voc", path="", size=320, batch_size=16, seed=0, num_classes=21, augment="none",
            input=inp, codec="", precomputed=False, normalize=False, cache_dir="",
        ))
        c.model.update(num_classes=21, width=1.0)
        c.experiment.update(latent_net="cresnet-51", rgb_net="resnet-50")
        set_input(c, inp, "segmentation")
        c.understanding.aspp_rates = (6, 12, 18, 24)
        c.optimizer.update(learning_rate=1e-4, decay_steps=30_000, warmup_steps=0)
        c.steps = 30_000
    # the codec runs in the graph (no 1.3M latents on the host): the shipped medium-rate model by default
    c.understanding.update(precomputed=False, codec=SHIPPED.format("cpm_med") if inp != "original" else "")
    c.data.codec = c.understanding.codec
    c.log_every, c.eval_every, c.checkpoint_every, c.keep = 100, 5000, 5000, 3
    c.eval_batch_size = 100
