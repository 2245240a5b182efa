"""The trainer's task for understanding from compressed representations (:class:`UnderstandingTask`).

One task covers every row of the paper's tables, chosen by ``config.understanding``:

* ``input``: what the task network sees — ``latent`` (the codec's quantized latent ŷ, ``[B, H/8,
  W/8, C]``, for a cResNet), ``decoded`` (the codec's reconstruction ``[B, H, W, 3]``) or
  ``original`` (the uncompressed image);
* ``task``: ``classification`` (labels ``int32 [B]``, logits ``[B, K]``) or ``segmentation``
  (labels ``int32 [B, H, W]``, logits ``[B, H, W, K]`` at the image's full resolution, also from a
  latent);
* where the codec is: ``precomputed=True`` — batches already hold the network's input (latents or
  decodings made once on the host by :func:`jaxcomp.vision.data.codec_outputs`; the cheap way on a
  CPU); ``precomputed=False`` — batches hold images in [0, 255] and the codec (``codec``: a CPM
  workdir or ``.msgpack``) runs inside the jitted step, frozen (its parameters live in
  ``model_state``, outside the optimizer, behind ``stop_gradient``), or, with ``train_codec=True``,
  trained together with the task network on ``codec loss + task_weight * task loss`` (the paper's
  joint training: the straight-through quantizer passes the task's gradient into the encoder), plus
  ``0.5 * optimizer.l2 * ||net||^2`` on every path.

Network inputs are normalised in the graph, the same way on both paths: a latent as it is (its
values are the codec's centres), RGB as ``x / 127.5 - 1``. A decoding is not bit-identical between
them: precomputed decodings are ``uint8`` pixels (what a decoder writes), the codec in the graph
hands on its float output. A cResNet (``model.name`` ``cresnet-*``)
takes latents only and a ResNet images only. ``init_net``: a workdir of an earlier run of this task
whose network (parameters and batch statistics) a new run starts from (joint training starts from
the pretrained task network and the pretrained codec).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.checks import is_whole
from jaxcomp.distill.losses import cross_entropy
from jaxcomp.metrics import psnr_from_mse
from jaxcomp.train import TrainState, l2_penalty, make_optimizer

if TYPE_CHECKING:
    from jaxcomp.codecs.cpm import CPMTask

INPUTS = ("latent", "decoded", "original")
TASKS = ("classification", "segmentation")
Batch = dict[str, jax.Array]


def confusion_counts(pred: jax.Array, labels: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
    """Per-example intersection and union of every class: ``int [B, ...]`` twice -> ``float32 [B, K]`` twice.
    Positions whose label is not a class (``>= num_classes``, e.g. VOC's void 255, or negative, e.g. an
    ignore label -1) are left out. ``pred`` holds class indices (argmax the logits first); shapes and
    integer dtypes are checked (a float prediction would count as no class at all), and outside ``jit``
    so are predictions outside ``0 .. num_classes - 1``."""
    if pred.shape != labels.shape or pred.ndim < 1:
        raise ValueError(f"confusion_counts expects predictions and labels of one shape [B, ...], got "
                         f"{pred.shape} and {labels.shape} (argmax logits [B, ..., K] first)")
    for name, v in (("pred", pred), ("labels", labels)):
        if not jnp.issubdtype(v.dtype, jnp.integer):
            raise ValueError(f"confusion_counts: {name} must hold integer class indices, got {v.dtype}")
    if not is_whole(num_classes) or num_classes < 1:
        raise ValueError(f"confusion_counts: num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(pred, jax.core.Tracer) and pred.size and not (
            0 <= int(pred.min()) and int(pred.max()) < num_classes):
        raise ValueError(f"confusion_counts: predictions must be classes 0..{num_classes - 1}, got values in "
                         f"[{int(pred.min())}, {int(pred.max())}] (is num_classes right?)")
    labels = labels.reshape(labels.shape[0], -1)
    valid = ((labels >= 0) & (labels < num_classes))[..., None]
    p = jax.nn.one_hot(pred.reshape(pred.shape[0], -1), num_classes, dtype=jnp.float32) * valid
    t = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    inter = jnp.sum(p * t, axis=1)
    return inter, jnp.sum(p, axis=1) + jnp.sum(t, axis=1) - inter


def mean_iou(inter: np.ndarray, union: np.ndarray) -> float:
    """Mean over classes of ``sum(intersection) / sum(union)`` (``[N, K]`` or ``[K]`` totals); classes
    absent from both predictions and labels are left out (as in the VOC evaluation)."""
    if np.shape(inter) != np.shape(union) or np.ndim(inter) < 1:
        raise ValueError(f"mean_iou expects intersections and unions of one shape [N, K] or [K], got "
                         f"{np.shape(inter)} and {np.shape(union)}")
    i = np.asarray(inter, np.float64).reshape(-1, np.shape(inter)[-1]).sum(0)
    u = np.asarray(union, np.float64).reshape(-1, np.shape(union)[-1]).sum(0)
    if not (np.all(np.isfinite(i)) and np.all(np.isfinite(u)) and np.all(0 <= i) and np.all(i <= u)):
        raise ValueError("mean_iou expects counts with 0 <= intersection <= union (confusion_counts' pair, in "
                         "that order); got negative, non-finite or swapped values")
    present = u > 0
    return float(np.mean(i[present] / u[present])) if present.any() else float("nan")


class UnderstandingTask:
    """Pure ``init`` / ``train_step`` / ``eval_step`` (see the module docstring for the config).

    Batches: ``image`` (``float32``: images ``[B, H, W, 3]`` in [0, 255], or with ``precomputed`` and
    ``input="latent"`` latents ``[B, h, w, C]``) and ``label`` (``int32 [B]`` or ``[B, H, W]``).
    """

    def __init__(self, config: ml_collections.ConfigDict):
        from jaxcomp.models.cresnet import understanding_network

        u = config.understanding
        unknown = set(u.keys()) - {"input", "task", "codec", "precomputed", "train_codec", "task_weight",
                                   "init_net", "aspp_rates"}
        if unknown:
            raise ValueError(f"unknown config.understanding keys {sorted(unknown)}")
        if u.input not in INPUTS:
            raise ValueError(f"understanding.input must be one of {INPUTS}, got {u.input!r}")
        if u.task not in TASKS:
            raise ValueError(f"understanding.task must be one of {TASKS}, got {u.task!r}")
        self.input, self.kind = u.input, u.task
        self.precomputed, self.train_codec = bool(u.precomputed), bool(u.train_codec)
        self.task_weight = float(u.get("task_weight", 1.0))
        name = config.model.name
        if (self.input == "latent") != name.lower().startswith("cresnet"):
            raise ValueError(f"model.name={name!r} does not fit understanding.input={self.input!r}: a cresnet-* "
                             "takes latents, a resnet-* takes images")
        if self.train_codec and self.precomputed:
            raise ValueError("understanding.train_codec needs the codec in the graph: set precomputed=False")
        if self.train_codec and self.input == "original":
            raise ValueError("understanding.train_codec with input='original': the task never sees the codec")
        self.num_classes = int(config.model.num_classes)
        kwargs = {"width": float(config.model.get("width", 1.0))}
        if self.kind == "segmentation" and u.get("aspp_rates"):
            kwargs["rates"] = tuple(u.aspp_rates)
        self.net = understanding_network(name, self.num_classes, task=self.kind, **kwargs)
        self.codec = None
        if not self.precomputed and self.input != "original" or self.train_codec:
            if not u.codec:
                raise ValueError(f"understanding.input={self.input!r} without precomputed inputs needs "
                                 "understanding.codec (a CPM workdir or .msgpack)")
            self.codec, self.codec_params = load_codec_task(u.codec)
        self.init_net = load_network(u.init_net) if u.get("init_net", "") else None
        self.tx, self.schedule = make_optimizer(config.optimizer)
        self.l2 = float(config.optimizer.get("l2", 0.0))  # 0.5 * l2 * ||w||^2 on the task network (SGD's decay)
        _check_data(config)

    # ---- pieces --------------------------------------------------------------------------

    def network_input(self, image: jax.Array, codec_params: Any,
                      codec_out: dict | None = None) -> tuple[jax.Array, tuple | None]:
        """``(the network's input, (loss, metrics) of the codec or None)`` for a batch ``image``
        (``float32 [B, H, W, 3]`` in [0, 255], or precomputed inputs): a latent ``[B, H/8, W/8, C]`` as the
        codec's centres, RGB ``[B, H, W, 3]`` as ``x / 127.5 - 1``. ``codec_out``: the codec's outputs
        for ``image`` when the caller already has them (evaluation computes them once, for its metrics)."""
        codec = None
        x = image.astype(jnp.float32)
        if self.codec is not None and not self.precomputed:
            model = self.codec.model
            if codec_out is not None:
                out = codec_out
            elif self.train_codec:  # the whole codec objective (its decoder too), for the joint loss
                total, metrics, out = self.codec.objective(codec_params, x)
                codec = (total, metrics)
            else:  # only what the input needs: a latent network's graph holds no decoder
                out = model.apply({"params": codec_params}, x, method=model.encode)
                if self.input == "decoded":
                    out["x_hat"] = model.apply({"params": codec_params}, out["q"], method=model.decode)
            x = out["q"] if self.input == "latent" else out["x_hat"] if self.input == "decoded" else x
        return (x if self.input == "latent" else x / 127.5 - 1.0), codec

    def _codec_params(self, params: Any, model_state: dict) -> Any:
        if self.train_codec:
            return params["codec"]
        return jax.lax.stop_gradient(model_state["codec"]) if "codec" in model_state else None

    def forward(self, params: Any, model_state: dict, image: jax.Array, train: bool, rng: jax.Array | None = None,
                codec_out: dict | None = None) -> tuple[jax.Array, Any, tuple | None]:
        """``(logits, new batch stats, codec (loss, metrics) or None)``; ``codec_out`` as :meth:`network_input`."""
        x, codec = self.network_input(image, self._codec_params(params, model_state), codec_out)
        variables = {"params": params["net"], "batch_stats": model_state["batch_stats"]}
        if train:
            logits, updates = self.net.apply(variables, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": rng})
            return logits, updates["batch_stats"], codec
        return self.net.apply(variables, x, train=False), model_state["batch_stats"], codec

    # ---- the task protocol ------------------------------------------------------------------

    def init(self, rng: jax.Array, batch: Batch) -> TrainState:
        image = batch["image"][:1].astype(jnp.float32)
        model_state: dict[str, Any] = {}
        if self.codec is not None and not self.train_codec:
            model_state["codec"] = self.codec_params
        if self.codec is not None and not self.precomputed:
            self.codec.check_batch(image.shape)  # sides multiples of 8: named here, not deep in XLA
        elif self.input != "latent" and image.shape[-1] != 3:
            raise ValueError(f"understanding.input={self.input!r} needs RGB images [B, H, W, 3], got "
                             f"{tuple(image.shape)}")
        x, _ = self.network_input(image, self.codec_params if self.codec is not None else None)
        if self.input == "latent" and self.precomputed and image.shape[-1] == 3:
            raise ValueError(f"understanding.input='latent' with precomputed inputs, but the batches hold RGB "
                             f"images {tuple(batch['image'].shape)}; precompute the latents or set precomputed=False")
        if self.init_net is not None:
            variables = self.init_net
        else:
            variables = self.net.init({"params": rng, "dropout": rng}, x, train=False)
        model_state["batch_stats"] = variables.get("batch_stats", {})
        params = {"net": variables["params"]}
        if self.train_codec:
            params["codec"] = self.codec_params
        return TrainState.create(params, self.tx, model_state)

    def task_loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Mean cross-entropy over the examples (classification) or the labelled pixels (segmentation:
        labels ``>= num_classes``, e.g. VOC's void, and negative ones, e.g. an ignore label -1, are
        ignored, as in :func:`confusion_counts`)."""
        valid = (labels >= 0) & (labels < self.num_classes)
        ce = cross_entropy(logits, jnp.where(valid, labels, 0))
        return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)

    def loss(self, params: Any, state: TrainState, batch: Batch, rng: jax.Array
             ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
        logits, batch_stats, codec = self.forward(params, state.model_state, batch["image"], True, rng)
        labels = batch["label"]
        task_loss = self.task_loss(logits, labels)
        valid = (labels >= 0) & (labels < self.num_classes)
        accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) * valid) / jnp.maximum(jnp.sum(valid), 1)
        metrics = {"task_loss": task_loss, "accuracy" if self.kind == "classification" else "pixel_accuracy": accuracy}
        loss = task_loss
        if self.train_codec:
            codec_loss, codec_metrics = codec
            loss = codec_loss + self.task_weight * task_loss
            metrics.update({f"codec_{k}": v for k, v in codec_metrics.items()})
        # weight decay of the task network, also in joint training (not scaled by task_weight)
        loss = loss + l2_penalty(params["net"], self.l2)
        metrics["loss"] = loss
        return loss, (metrics, batch_stats)

    def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        grads, (metrics, batch_stats) = jax.grad(self.loss, has_aux=True)(state.params, state, batch, rng)
        metrics["learning_rate"] = self.schedule(state.step)
        model_state = dict(state.model_state, batch_stats=batch_stats)
        return state.apply_gradients(grads, model_state=model_state), metrics

    def predict(self, state: TrainState, batch: Batch) -> jax.Array:
        """Evaluation-mode logits ``[B, K]`` or ``[B, H, W, K]``."""
        return self.forward(state.params, state.model_state, batch["image"], False)[0]

    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """Per-example metrics ``[B]``: ``accuracy`` and ``cross_entropy`` (classification) or
        ``pixel_accuracy`` and ``inter_k`` / ``union_k`` per class (segmentation: the trainer's means
        give ``mIoU = mean_k mean(inter_k) / mean(union_k)``); with the codec in the graph also its
        ``bpp``, ``ms_ssim`` and ``psnr``."""
        codec_metrics, codec_out = None, None
        if self.codec is not None and not self.precomputed:  # the codec runs once, for both
            codec_metrics, _, codec_out = self.codec.forward(self._codec_params(state.params, state.model_state),
                                                             batch["image"].astype(jnp.float32))
        logits, _, _ = self.forward(state.params, state.model_state, batch["image"], False, codec_out=codec_out)
        labels = batch["label"]
        pred = jnp.argmax(logits, -1)
        if self.kind == "classification":
            out = {"accuracy": (pred == labels).astype(jnp.float32), "cross_entropy": cross_entropy(logits, labels)}
        else:
            inter, union = confusion_counts(pred, labels, self.num_classes)
            valid = (labels >= 0) & (labels < self.num_classes)
            out = {"pixel_accuracy": jnp.sum((pred == labels) * valid, axis=(1, 2))
                   / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1)}
            for k in range(self.num_classes):
                out[f"inter_{k}"], out[f"union_{k}"] = inter[:, k], union[:, k]
        if codec_metrics is not None:
            m = codec_metrics
            out.update(bpp=m["bpp"], ms_ssim=m["ms_ssim"], psnr=psnr_from_mse(m["mse"]))
        return out


def _check_data(config: ml_collections.ConfigDict) -> None:
    """``config.data`` must describe the same input as ``config.understanding`` (both are read: the data
    by the host pipeline, the understanding block by the task), and must not normalise the images (the
    task does, in its graph)."""
    d, u = config.data, config.understanding
    for key in ("input", "precomputed"):
        if key in d and d[key] != u[key]:
            raise ValueError(f"config.data.{key}={d[key]!r} differs from config.understanding.{key}={u[key]!r}")
    if u.precomputed and u.input != "original" and "codec" in d and u.codec and d.codec != u.codec:
        raise ValueError(f"config.data.codec={d.codec!r} differs from config.understanding.codec={u.codec!r}")
    if "num_classes" in d and int(d.num_classes) != int(config.model.num_classes):
        raise ValueError(f"config.data.num_classes={d.num_classes} differs from config.model.num_classes="
                         f"{config.model.num_classes}: the network must output the data's classes (labels >= "
                         f"model.num_classes would be left out of the loss as void)")
    if d.get("normalize", False):
        raise ValueError("config.data.normalize must be False for an understanding task: it normalises its "
                         "inputs in the graph (latents as they are, RGB as x / 127.5 - 1)")


def load_codec_task(path: str) -> tuple[CPMTask, Any]:
    """``(CPMTask of the model's own config, float32 params)`` of a CPM workdir or ``.msgpack``."""
    from jaxcomp.codecs.cpm import CPMTask, check_model_params, spec_from_config
    from jaxcomp.modelfile import load_model

    config, params, _ = load_model(path, task="cpm")
    check_model_params(params, spec_from_config(config.model), path)
    return CPMTask(config), jax.tree.map(jnp.asarray, params)


def load_network(workdir: str) -> dict[str, Any]:
    """The task network (``{"params", "batch_stats"}``) of an :class:`UnderstandingTask` run's workdir."""
    from jaxcomp.modelfile import ModelLoadError, load_workdir

    config, variables, _ = load_workdir(workdir, batch_stats=True)
    if config.get("task") != "understanding":
        raise ModelLoadError(f"{workdir} is a {config.get('task')!r} run, not an understanding run")
    params = variables["params"]
    net = params["net"] if "net" in params else params
    return {"params": jax.tree.map(jnp.asarray, net), "batch_stats": jax.tree.map(jnp.asarray,
                                                                                    variables["batch_stats"])}
