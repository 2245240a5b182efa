"""Image understanding on compressed representations (ICLR'18): the study, end to end.

    python -m experiments.understanding --config configs/understanding.py:cpu --workdir runs/understanding

1. **Scenes**: classification (one digit per 64x64 image) and segmentation scenes (several digits,
   per-pixel maps) of :mod:`jaxcomp.data.digit_scenes`, train / val / test (disjoint digits and
   photos).
2. **Codecs**: the CPM codec fine-tuned on the training scenes to each operating point of
   ``experiment.points`` (``WORKDIR/codec_<point>``), from the shipped photo model of that rate; its
   rate (the context model's cross-entropy, bits per pixel) and MS-SSIM / PSNR on the test scenes,
   beside JPEG at the same bpp.
3. **Rows**: for each task, point and input (latent -> cResNet, decoded -> ResNet, original ->
   ResNet, the latter once) and each seed, a run of :class:`jaxcomp.vision.UnderstandingTask` on
   inputs precomputed once by the codec (``WORKDIR/<task>_<input>_<point>_s<seed>``); the last
   checkpoint (no selection) evaluated on the test scenes: top-1 accuracy, mIoU. A linear classifier
   (logistic regression) on the same inputs is the simplest baseline a reviewer asks for.
4. **Compute**: FLOPs of each network on one input (counted from the shapes, checked against XLA's
   cost analysis), of the codec's decoder (what the decoded-RGB path adds), and measured inference
   time per image.
5. **Joint training** at ``experiment.joint_point``: from the trained codec and each seed's latent
   classifier, ``joint_steps`` of codec loss + ``joint_task_weight`` x cross-entropy, against the
   control that trains the classifier alone for the same steps on the frozen codec; accuracy, bpp,
   MS-SSIM, PSNR on the test scenes.

Writes ``results.md`` (tables, mean ± std over seeds), ``results.json``, ``accuracy_vs_bpp.png``.
The plan (stages, seeds, points, the report split) is checked before anything runs. A command that
runs fewer stages keeps the sections of the others from the workdir's last ``results.json`` (the
report says which). Finished runs are skipped, so the same command continues an interrupted study
(``experiment.time_limit`` seconds for the whole command stops it, the run in training checkpointed, and
writes the report of what is finished).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from jaxcomp.configs import config_script_main
from jaxcomp.deadline import Deadline, OutOfTime, without_budget
from jaxcomp.files import write_atomic

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "understanding.py")


STAGES = ("codecs", "classification", "joint", "segmentation", "compute")


def _module():
    from jaxcomp.configs import config_module

    return config_module(CONFIGS)


def _row_key(config) -> str:
    """What a row's result depends on: its whole config and the codec's parameters (a cached result with
    another key is stale: retrained codec, other data sizes, other network). The codec counts by its
    parameters, not by its path (``data.codec`` lies in the study's workdir: a study unpacked under
    another path keeps its rows), and of the ``experiment`` block only ``report_split`` counts (the
    rest, e.g. ``points``, ``stages``, ``codecs_from``, ``time_limit``, picks which rows run, while a
    row's network, data and steps are in its own keys). Keys made before this rule (2026-12-07,
    session 27) are refused."""
    import hashlib

    from jaxcomp.configs import canonical_json
    from jaxcomp.vision.data import model_digest

    h = hashlib.sha256(canonical_json(config, exclude=("data.codec", "experiment")).encode())
    h.update(str(config.experiment.get("report_split", "test")).encode())
    if config.data.get("codec", ""):
        h.update(model_digest(config.data.codec).encode())
    return h.hexdigest()[:16]


def _finished(workdir: str, steps: int) -> bool:
    from jaxcomp.modelfile import ModelLoadError, load_workdir

    if not os.path.isfile(os.path.join(workdir, "config.json")):
        return False
    try:
        return load_workdir(workdir)[2]["step"] >= steps
    except (ModelLoadError, FileNotFoundError, KeyError):
        return False


class Study:
    def __init__(self, config, workdir: str):
        self.config, self.workdir, self.exp = config, workdir, config.experiment
        self.cfg = _module()
        self.deadline = Deadline(self.exp.get("time_limit", 0.0), "experiment.time_limit")
        self.results: dict[str, Any] = {"rows": [], "codecs": {}, "flops": {}, "joint": [], "linear": []}
        from jaxcomp.xla import driver_cache_dir, enable_compilation_cache

        # the seeds of a row compile the same programs: the second and third hit the cache
        enable_compilation_cache(driver_cache_dir(workdir), min_compile_secs=1.0)

    # ---- configs -------------------------------------------------------------------------

    def data_block(self, kind: str):
        import ml_collections

        d = ml_collections.ConfigDict(self.config.data.to_dict())
        if kind == "segmentation":
            seg = self.cfg.get_config("seg_latent").data
            d.update(kind="segmentation", digits=tuple(seg.digits), digit_size=tuple(seg.digit_size),
                     num_classes=seg.num_classes, size=int(self.exp.seg_size))
        return d

    def codec_config(self, point: str):
        c = self.cfg.codec_config(point)
        d = self.data_block("classification")
        c.data.update({k: d[k] for k in ("mnist_path", "photos_path", "cache_dir", "num_train", "num_val",
                                          "size", "scene_seed", "digit_size", "digits", "kind")})
        c.data.crop = c.data.eval_crop = int(d.size)
        c.data.batch_size = int(self.exp.codec_batch_size)
        c.steps = c.optimizer.decay_steps = int(self.exp.codec_steps)
        c.optimizer.learning_rate = float(self.exp.codec_learning_rate)
        c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, c.steps // 4)
        c.checkpoint_every = c.steps
        c.eval_every = 0  # its rate and quality are measured on the report split by codec_outputs
        return c

    def row_config(self, kind: str, inp: str, point: str, seed: int):
        c = without_budget(self.config, "experiment.time_limit")
        c.data = self.data_block(kind)
        c.model.num_classes = int(c.data.num_classes)
        self.cfg.set_input(c, inp, kind)
        c.data.codec = self.codec_dir(point) if inp != "original" else ""
        c.data.precomputed = c.understanding.precomputed = True
        c.seed = c.data.seed = int(seed)
        if kind == "segmentation":
            c.steps = c.optimizer.decay_steps = int(self.exp.seg_steps)
        c.checkpoint_every = c.steps
        c.eval_every = 0  # the last checkpoint is evaluated on the report split afterwards (no selection)
        return c

    def codec_dir(self, point: str) -> str:
        """The codec of ``point``: with ``experiment.codecs_from`` (codecs trained elsewhere, e.g. on an
        accelerator), its ``codec_<point>.msgpack`` (exported) or else its ``codec_<point>/`` (the
        workdir another study, such as ``:gpu``, trained it in); without, this study's own
        ``WORKDIR/codec_<point>``."""
        source = self.exp.get("codecs_from", "")
        if source:
            exported, workdir = (os.path.join(source, f"codec_{point}{ext}") for ext in (".msgpack", ""))
            if os.path.isfile(exported):
                return exported
            if os.path.isdir(workdir):
                return workdir
            raise FileNotFoundError(f"experiment.codecs_from={source!r} has neither codec_{point}.msgpack (an "
                                    f"exported model) nor codec_{point}/ (a study's training workdir)")
        return os.path.join(self.workdir, f"codec_{point}")

    # ---- stages --------------------------------------------------------------------------

    @staticmethod
    def check_settings(config, workdir: str) -> None:
        """A workdir of this study holding a run of other settings (another codec learning rate, other
        scenes) is refused, not continued or reused; the study's plan (``experiment``), the starting
        model's and the codec's paths (a study unpacked elsewhere) may differ."""
        from jaxcomp import train as trainer

        trainer.check_same_settings(config, workdir, trainer.BOOKKEEPING_KEYS + ("experiment", "init_from",
                                                                                  "data.codec"))

    def train(self, config, workdir: str):
        from jaxcomp import tasks
        from jaxcomp import train as trainer

        self.check_settings(config, workdir)
        limit = self.deadline.for_training(workdir, config.steps)  # out of time: stop before anything is built
        task, data = tasks.build(config)
        state, _ = trainer.train(config, workdir, task, data, progress=False, time_limit=limit and self.deadline.left())
        self.deadline.check_finished(state, config.steps, workdir)
        return task, state

    def codecs(self) -> None:
        from jaxcomp.vision.data import codec_outputs, split_images

        test_images, _ = split_images(self.data_block("classification"), self.exp.report_split)
        for point in self.exp.points:
            c = self.codec_config(point)
            if not self.exp.get("codecs_from", ""):
                self.check_settings(c, self.codec_dir(point))  # before a finished codec is reused
            if not self.exp.get("codecs_from", "") and not _finished(self.codec_dir(point), c.steps):
                print(f"[codec {point}] fine-tuning {c.steps} steps from {c.init_from}", flush=True)
                self.train(c, self.codec_dir(point))
            out = codec_outputs(self.codec_dir(point), test_images, int(self.config.data.codec_batch_size),
                                self.config.data.cache_dir, progress=False)
            bpp = float(np.mean(out["bpp"]))
            n = min(256, len(test_images))  # JPEG at the codec's rate on the same images
            jpeg = jpeg_at_bpp(test_images[:n], float(np.mean(out["bpp"][:n])))
            self.results["codecs"][point] = dict(
                bpp=bpp, bpp_std=float(np.std(out["bpp"])), ms_ssim=float(np.mean(out["ms_ssim"])),
                psnr=float(np.mean(out["psnr"])), latent_shape=list(out["latent"].shape[1:]),
                jpeg_bpp=jpeg["bpp"], jpeg_ms_ssim=jpeg["ms_ssim"], jpeg_psnr=jpeg["psnr"],
                jpeg_reachable=jpeg["reachable"])
            print(f"[codec {point}] {self.results['codecs'][point]}", flush=True)

    def classification(self) -> None:
        self.rows("classification")

    def segmentation(self) -> None:
        self.rows("segmentation")

    def rows(self, kind: str) -> None:
        from jaxcomp.vision.data import understanding_arrays

        points = self.exp.points if kind == "classification" else self.exp.get("seg_points", None) or self.exp.points
        for point in points:
            for inp in self.exp.inputs:
                if inp == "original" and point != points[0]:
                    continue  # no codec: one row for all points
                for seed in self.exp.seeds:
                    c = self.row_config(kind, inp, point, seed)
                    name = f"{kind}_{inp}_{point if inp != 'original' else 'none'}_s{seed}"
                    wd = os.path.join(self.workdir, name)
                    report = os.path.join(wd, "report.json")
                    key = _row_key(c)
                    row = None
                    if os.path.isfile(report) and _finished(wd, c.steps):  # evaluated before: not again
                        with open(report) as f:
                            row = json.load(f)
                        if row.get("key") != key:
                            self.check_settings(c, wd)  # names the config keys that differ, if any do
                            raise ValueError(f"{wd} holds a run of another codec (its parameters differ) or of "
                                             "a config from before 2026-12-07; remove it or use another --workdir")
                    if row is None:
                        print(f"[{name}] {c.model.name} ({c.steps} steps)", flush=True)
                        task, state = self.train(c, wd)
                        x, y = understanding_arrays(c.data, self.exp.report_split)
                        metrics = evaluate(task, state, x, y, int(c.eval_batch_size))
                        row = dict(task=kind, input=inp, point=point if inp != "original" else "none",
                                   seed=int(seed), net=c.model.name, key=key, **metrics)
                        write_atomic(report, json.dumps(row))
                    self.results["rows"].append(row)
                    print(f"[{name}] {row}", flush=True)
                if kind == "classification" and self.exp.get("linear", True):
                    self.linear(inp, point)

    def linear(self, inp: str, point: str) -> None:
        """Logistic regression on the flattened inputs (the simplest alternative)."""
        from sklearn.linear_model import LogisticRegression

        from jaxcomp.vision.data import understanding_arrays

        key = (inp, point if inp != "original" else "none")
        path = os.path.join(self.workdir, f"linear_{key[0]}_{key[1]}.json")
        c = self.row_config("classification", inp, point, 0)
        row_key = _row_key(c)  # hashes the codec's parameters: once
        if os.path.isfile(path):
            with open(path) as f:
                row = json.load(f)
            if row.get("key") == row_key:
                self.results["linear"].append(row)
                return
        xtr, ytr = understanding_arrays(c.data, "train")
        xte, yte = understanding_arrays(c.data, self.exp.report_split)
        scale = 1.0 if inp == "latent" else 255.0
        f = lambda a: a.reshape(len(a), -1).astype(np.float32) / scale  # noqa: E731
        import warnings

        with warnings.catch_warnings():  # lbfgs may stop at max_iter: the score is still the baseline's
            warnings.simplefilter("ignore")
            clf = LogisticRegression(max_iter=300, C=1.0).fit(f(xtr), ytr)
        acc = float(np.mean(clf.predict(f(xte)) == yte))
        row = dict(input=inp, point=key[1], accuracy=acc, key=row_key)
        write_atomic(path, json.dumps(row))
        self.results["linear"].append(row)
        print(f"[linear {inp} {point}] accuracy {acc:.4f}", flush=True)

    def compute(self) -> None:
        """FLOPs and inference time of each network and of the codec's decoder."""
        import jax
        import jax.numpy as jnp

        from jaxcomp.metrics.flops import count_flops, xla_flops
        from jaxcomp.models.cresnet import understanding_network
        from jaxcomp.vision.task import load_codec_task

        size = int(self.config.data.size)
        out: dict[str, Any] = {}
        for point in self.exp.points:
            codec, params = load_codec_task(self.codec_dir(point))
            ch = codec.spec.channels
            q = jnp.zeros((1, size // 8, size // 8, ch), jnp.float32)

            def decode(q, params=params, codec=codec):
                return codec.model.apply({"params": params}, q, method=codec.model.decode)

            def encode(x, params=params, codec=codec):
                return codec.model.apply({"params": params}, x, method=codec.model.encode)["q"]

            x = jnp.zeros((1, size, size, 3), jnp.float32)
            out[f"decoder_{point}"] = dict(flops=count_flops(decode, q), xla=xla_flops(decode, q),
                                           ms_per_image=_time(decode, q, int(self.exp.timing_batch)))
            out[f"encoder_{point}"] = dict(flops=count_flops(encode, x), xla=xla_flops(encode, x),
                                           ms_per_image=_time(encode, x, int(self.exp.timing_batch)))
            for kind in self.exp.tasks:
                classes = 10 if kind == "classification" else 11
                s = size if kind == "classification" else int(self.exp.seg_size)
                for inp, name in (("latent", self.exp.latent_net), ("rgb", self.exp.rgb_net)):
                    key = f"{kind}_{name}_C{ch}" if inp == "latent" else f"{kind}_{name}"
                    if key in out:
                        continue
                    net = understanding_network(name, classes, task=kind, width=float(self.config.model.width))
                    z = jnp.zeros((1, s // 8, s // 8, ch) if inp == "latent" else (1, s, s, 3), jnp.float32)
                    variables = net.init(jax.random.PRNGKey(0), z, train=False)

                    def apply(z, variables=variables, net=net):
                        return net.apply(variables, z, train=False)

                    out[key] = dict(flops=count_flops(apply, z), xla=xla_flops(apply, z),
                                    ms_per_image=_time(apply, z, int(self.exp.timing_batch)), input=list(z.shape[1:]))
        self.results["flops"] = out
        print(f"[compute] {json.dumps(out)}", flush=True)

    def joint(self) -> None:
        """Joint training against the classifier trained alone for the same steps (both from the same start)."""
        import ml_collections

        from jaxcomp.vision.data import split_images

        point = self.exp.joint_point
        d = self.data_block("classification")
        images, labels = split_images(d, self.exp.report_split)
        for seed in self.exp.seeds:
            start = os.path.join(self.workdir, f"classification_latent_{point}_s{seed}")
            for mode in ("joint", "classifier_only"):
                c = self.cfg.get_config("joint")
                c.data = ml_collections.ConfigDict(dict(d.to_dict(), precomputed=False, input="latent", codec=""))
                c.data.batch_size = 16
                c.model.update(name=self.exp.latent_net, width=float(self.config.model.width))
                c.understanding.update(codec=self.codec_dir(point), init_net=start, train_codec=mode == "joint",
                                       task_weight=float(self.exp.joint_task_weight))
                c.steps = c.optimizer.decay_steps = int(self.exp.joint_steps)
                c.optimizer.learning_rate = float(self.exp.joint_learning_rate)
                c.checkpoint_every = c.steps
                c.eval_every = 0
                c.seed = c.data.seed = int(seed)
                wd = os.path.join(self.workdir, f"joint_{mode}_{point}_s{seed}")
                print(f"[{os.path.basename(wd)}] {c.steps} steps", flush=True)
                task, state = self.train(c, wd)
                m = evaluate(task, state, images, labels, 50, codec_metrics=True)
                self.results["joint"].append(dict(mode=mode, point=point, seed=int(seed), **m))
                print(f"[{os.path.basename(wd)}] {m}", flush=True)

    def check_plan(self) -> None:
        """The ``experiment`` block's plan, checked before any stage runs (a typo in the last stage
        was found after an hour of codec training): known, distinct stages, seeds and points; the
        segmentation and joint points among the codecs this study trains (unless ``codecs_from``
        holds them); a report split the scenes have."""
        from jaxcomp.checks import distinct, seed_list
        from jaxcomp.configs import ConfigError

        stages = distinct(self.exp.stages, "experiment.stages")
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown experiment stage(s) {unknown}; use {STAGES}")
        seed_list(self.exp.seeds, "experiment.seeds")
        points = distinct(self.exp.points, "experiment.points")
        if self.exp.get("report_split", "test") not in ("val", "test"):
            raise ConfigError(f"experiment.report_split must be 'val' or 'test', got {self.exp.report_split!r}")
        if not self.exp.get("codecs_from", ""):
            outside = [p for p in self.exp.get("seg_points", None) or () if p not in points]
            if "segmentation" in stages and outside:
                raise ConfigError(f"experiment.seg_points {outside} are not among experiment.points {points}, "
                                  "whose codecs this study trains (or give experiment.codecs_from)")
            if "joint" in stages and self.exp.joint_point not in points:
                raise ConfigError(f"experiment.joint_point={self.exp.joint_point!r} is not among experiment.points "
                                  f"{points}, whose codecs this study trains (or give experiment.codecs_from)")

    def run(self) -> str:
        self.check_plan()
        done = []
        try:
            for stage in self.exp.stages:
                getattr(self, stage)()
                done.append(stage)
        except OutOfTime as e:
            print(f"{e} after stages {done}: run the same command to continue", flush=True)
        os.makedirs(self.workdir, exist_ok=True)
        path = os.path.join(self.workdir, "results.json")
        results = merge_results(self.results, _read_results(path), done)
        write_atomic(path, json.dumps(results, indent=1))
        return write_report(results, self.workdir)


#: the sections of ``results.json`` each stage makes (rows of one task: ``("rows", task)``)
STAGE_SECTIONS = {"codecs": ("codecs",), "classification": (("rows", "classification"), "linear"),
                  "segmentation": (("rows", "segmentation"),), "compute": ("flops",), "joint": ("joint",)}


def _read_results(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:  # a damaged file: the report holds this run's sections only
        print(f"warning: {path} is not readable JSON; its sections are not carried over", flush=True)
        return {}


#: what identifies an entry of a list section (a row: its task, input, point and seed)
IDENTITY = {"rows": ("task", "input", "point", "seed"), "linear": ("input", "point"),
            "joint": ("mode", "point", "seed")}


def merge_results(new: dict[str, Any], earlier: dict[str, Any], done: list[str]) -> dict[str, Any]:
    """``new`` with, for every stage not in ``done`` (not run by this command, or stopped by its time
    limit part-way), the entries of the study's last ``results.json`` (``earlier``) that ``new`` does
    not hold, so a command that runs fewer stages does not drop finished results from the report;
    ``carried_over`` lists the stages with entries from an earlier command."""
    out = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in new.items()}
    carried = []
    for stage, sections in STAGE_SECTIONS.items():
        if stage in done:
            continue
        found = False
        for section in sections:
            name, task = section if isinstance(section, tuple) else (section, None)
            before = earlier.get(name)
            if isinstance(before, dict):  # codecs, flops: by point / network
                extra = {k: v for k, v in before.items() if k not in out.setdefault(name, {})}
                out[name].update(extra)
            elif isinstance(before, list):
                ident = lambda r, keys=IDENTITY[name]: tuple(r.get(k) for k in keys)  # noqa: E731
                have = {ident(r) for r in out.setdefault(name, [])}
                extra = [r for r in before if (task is None or r.get("task") == task) and ident(r) not in have]
                out[name] = out[name] + extra
            else:
                continue
            found = found or bool(extra)
        if found:
            carried.append(stage)
    out["carried_over"] = carried
    return out


def jpeg_at_bpp(images: np.ndarray, bpp: float, grid: int = 8) -> dict[str, float]:
    """JPEG at (at most) ``bpp`` on ``images`` (``uint8 [N, S, S, 3]``) tiled into ``grid x grid``
    mosaics, so that the file header (~600 bytes, 1.2 bpp of one 64x64 image) is shared as the
    codec's side information is; mean ``bpp``, ``ms_ssim`` and ``psnr`` of the tiles, and ``reachable``:
    the fraction of mosaics whose JPEG fits the rate (where even quality 0 does not, its size is used)."""
    import jax.numpy as jnp

    from jaxcomp.baselines import encode_at_bitrate, lossy_baselines
    from jaxcomp.metrics import ms_ssim, psnr

    try:
        jpeg = lossy_baselines(["jpeg"])[0]
    except Exception as e:  # imagecodecs missing or without JPEG (e.g. a bare accelerator image)
        print(f"no JPEG baseline: {e}", flush=True)
        jpeg = None
    n, s = (len(images) // grid**2) * grid**2, images.shape[1]
    if n == 0 or jpeg is None:
        return dict(bpp=float("nan"), ms_ssim=float("nan"), psnr=float("nan"), reachable=float("nan"))
    bpps, decoded, reachable = [], [], []
    for m in range(0, n, grid**2):
        mosaic = images[m:m + grid**2].reshape(grid, grid, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(grid * s,
                                                                                                    grid * s, 3)
        match = encode_at_bitrate(jpeg, mosaic, bpp)
        bpps.append(match.bpp)
        reachable.append(match.reachable)
        out = jpeg.decode(match.data).reshape(grid, s, grid, s, 3).transpose(0, 2, 1, 3, 4).reshape(-1, s, s, 3)
        decoded.append(out)
    dec = np.concatenate(decoded).astype(np.float32)
    ref = images[:n].astype(np.float32)
    return dict(bpp=float(np.mean(bpps)), ms_ssim=float(jnp.mean(ms_ssim(jnp.asarray(ref), jnp.asarray(dec)))),
                psnr=float(jnp.mean(psnr(jnp.asarray(ref), jnp.asarray(dec)))), reachable=float(np.mean(reachable)))


def _time(fn, x, batch: int, repeats: int = 5) -> float:
    """Milliseconds per image of jitted ``fn`` on a batch of ``batch`` copies of ``x`` (best of ``repeats``)."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(fn)
    xb = jnp.repeat(x, batch, axis=0)
    jax.block_until_ready(f(xb))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(xb))
        best = min(best, time.perf_counter() - t)
    return 1000.0 * best / batch


def evaluate(task, state, inputs: np.ndarray, labels: np.ndarray, batch_size: int,
             codec_metrics: bool = False) -> dict[str, float]:
    """Top-1 accuracy (classification) or mIoU and pixel accuracy (segmentation) of ``task``'s network
    on ``inputs`` (``[N, ...]`` as the task's batches hold them); with ``codec_metrics`` also the mean
    ``bpp``, ``ms_ssim`` and ``psnr`` of the codec in the task's graph."""
    import jax

    from jaxcomp.vision.task import mean_iou

    step = jax.jit(task.eval_step)
    sums: dict[str, float] = {}
    n = len(inputs)
    for s in range(0, n, batch_size):
        x, y = inputs[s:s + batch_size], labels[s:s + batch_size]
        pad = batch_size - len(x)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
            y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
        m = jax.device_get(step(state, {"image": x.astype(np.float32), "label": y.astype(np.int32)}))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v, np.float64)[: batch_size - pad]))
    mean = {k: v / n for k, v in sums.items()}
    out: dict[str, float] = {}
    if "accuracy" in mean:
        out["accuracy"] = mean["accuracy"]
    else:
        k = sum(1 for key in mean if key.startswith("inter_"))
        out["miou"] = mean_iou(np.array([mean[f"inter_{i}"] for i in range(k)]),
                               np.array([mean[f"union_{i}"] for i in range(k)]))
        out["pixel_accuracy"] = mean["pixel_accuracy"]
    if codec_metrics:
        out.update({k: mean[k] for k in ("bpp", "ms_ssim", "psnr") if k in mean})
    return out


def _ms(values: list[float], digits: int = 3) -> str:
    a = np.asarray(values, np.float64)
    if len(a) == 0:
        return "—"
    return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}" if len(a) > 1 else f"{a.mean():.{digits}f}"


def write_report(results: dict[str, Any], workdir: str) -> str:
    """``results.md`` (and ``accuracy_vs_bpp.png``) from the results; returns the markdown."""
    lines = ["# Understanding on compressed representations: results", ""]
    if results.get("carried_over"):
        lines += [f"Sections of the stages {', '.join(results['carried_over'])} come from an earlier command in "
                  "this workdir (not run by the last one).", ""]
    codecs = results.get("codecs", {})
    if codecs:
        lines += ["## Codec operating points (test scenes)", "",
                  "| point | bpp | MS-SSIM | PSNR (dB) | latent | JPEG bpp | JPEG MS-SSIM | JPEG PSNR | JPEG fits |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p, r in codecs.items():
            lines.append(f"| {p} | {r['bpp']:.3f} | {r['ms_ssim']:.4f} | {r['psnr']:.2f} | {r['latent_shape']} | "
                         f"{r['jpeg_bpp']:.3f} | {r['jpeg_ms_ssim']:.4f} | {r['jpeg_psnr']:.2f} | "
                         f"{r.get('jpeg_reachable', float('nan')):.2f} |")
        lines.append("")
    rows = results.get("rows", [])
    linear = {(r["input"], r["point"]): r["accuracy"] for r in results.get("linear", [])}
    for kind, metric in (("classification", "accuracy"), ("segmentation", "miou")):
        sel = [r for r in rows if r["task"] == kind]
        if not sel:
            continue
        head = "top-1 accuracy" if kind == "classification" else "mIoU"
        lines += [f"## {kind.capitalize()}: {head} on the test scenes (mean ± population std over seeds, "
                  "ddof 0)", ""]
        extra = " | linear (logistic regression)" if kind == "classification" else ""
        lines += [f"| point | bpp | input | network | {head} | seeds{extra} |",
                  "|---|---|---|---|---|---|" + ("---|" if extra else "")]
        keys = sorted({(r["point"], r["input"]) for r in sel}, key=lambda k: (k[0] == "none", k[0], k[1]))
        for point, inp in keys:
            rs = [r for r in sel if r["point"] == point and r["input"] == inp]
            bpp = f"{codecs[point]['bpp']:.3f}" if point in codecs else "—"
            lin = f" | {linear[(inp, point)]:.3f}" if extra and (inp, point) in linear else (" | —" if extra else "")
            lines.append(f"| {point} | {bpp} | {inp} | {rs[0]['net']} | {_ms([r[metric] for r in rs])} | "
                         f"{len(rs)}{lin} |")
        lines.append("")
    flops = results.get("flops", {})
    if flops:
        lines += ["## Compute per image (FLOPs = 2 x multiply-adds of convolutions and dense layers)", "",
                  "| network | input | FLOPs (shapes) | FLOPs (XLA) | ms / image |", "|---|---|---|---|---|"]
        for k, r in flops.items():
            lines.append(f"| {k} | {r.get('input', '')} | {r['flops'] / 1e6:.2f} M | {r['xla'] / 1e6:.2f} M | "
                         f"{r['ms_per_image']:.3f} |")
        lines.append("")
    joint = results.get("joint", [])
    if joint:
        lines += ["## Joint training (test scenes, mean ± population std over seeds, ddof 0)", "",
                  "| mode | accuracy | bpp | MS-SSIM | PSNR (dB) | seeds |", "|---|---|---|---|---|---|"]
        for mode in ("classifier_only", "joint"):
            rs = [r for r in joint if r["mode"] == mode]
            if rs:
                lines.append(f"| {mode} | {_ms([r['accuracy'] for r in rs])} | {_ms([r['bpp'] for r in rs])} | "
                             f"{_ms([r['ms_ssim'] for r in rs], 4)} | {_ms([r['psnr'] for r in rs], 2)} | {len(rs)} |")
        lines.append("")
    text = "\n".join(lines)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(text + "\n")
    if rows and codecs:
        plot(results, os.path.join(workdir, "accuracy_vs_bpp.png"))
    return text


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codecs = results["codecs"]
    kinds = [k for k in ("classification", "segmentation") if any(r["task"] == k for r in results["rows"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        metric = "accuracy" if kind == "classification" else "miou"
        rows = [r for r in results["rows"] if r["task"] == kind]
        for inp, style in (("latent", "o-"), ("decoded", "s--")):
            pts = [(codecs[p]["bpp"], [r[metric] for r in rows if r["input"] == inp and r["point"] == p])
                   for p in codecs]
            pts = sorted((b, v) for b, v in pts if v)
            if pts:
                ax.errorbar([b for b, _ in pts], [np.mean(v) for _, v in pts], yerr=[np.std(v) for _, v in pts],
                            fmt=style, capsize=3, label=f"{inp} ({'cResNet' if inp == 'latent' else 'ResNet'})")
        orig = [r[metric] for r in rows if r["input"] == "original"]
        if orig:
            ax.axhline(np.mean(orig), color="k", lw=1, ls=":", label="original RGB (ResNet)")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("top-1 accuracy" if kind == "classification" else "mIoU")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config, workdir: str) -> str:
    return Study(config, workdir).run()


def main(argv: list[str] | None = None) -> int:
    from jaxcomp.xla import prefer_xla_cpu_convolutions

    prefer_xla_cpu_convolutions()
    return config_script_main(__doc__, "configs/understanding.py:cpu", run, argv,
                              sections=("understanding", "experiment"))


if __name__ == "__main__":
    raise SystemExit(main())
