"""Born-again generations: teacher -> BAN-1 -> BAN-2 -> ..., CWTM / DKPP students, BANE ensembles.

Each model is an ordinary run of :func:`jaxcomp.train.train` in its own workdir (so a rerun
skips what is finished), with the same architecture and a new seed; its teacher is the previous
generation, whose logits come from a forward pass compiled into the student's train step.
:func:`run_generations` returns per-seed rows; :func:`summarize` aggregates them over seeds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcomp import train as trainer
from jaxcomp.checks import seed_list
from jaxcomp.deadline import Deadline, without_budget
from jaxcomp.distill.losses import check_kd_temperature, cross_entropy
from jaxcomp.distill.task import Teacher, build_task, teacher_from_state


@dataclasses.dataclass
class Member:
    """A trained model of a chain: its name (``teacher``, ``BAN-1``, ``CWTM``...), workdir,
    evaluation metrics, validation logits ``float32 [N, C]`` (classification only), and teacher."""

    name: str
    workdir: str
    metrics: dict[str, float]
    logits: np.ndarray | None
    teacher: Teacher


def _config_for(config: ml_collections.ConfigDict, *, seed: int, loss: str, teacher_workdirs: Sequence[str],
                model_name: str | None = None, label_weight: float | None = None) -> ml_collections.ConfigDict:
    c = without_budget(config, "ban.time_limit")
    c.seed = seed
    c.data.seed = seed
    c.distill.loss = loss
    if label_weight is not None:
        c.distill.label_weight = label_weight
    c.distill.teachers = tuple(teacher_workdirs)
    if model_name:
        c.model.name = model_name
    # members are evaluated once, below; during training only where a plateau rule watches the validation
    # metric (the paper LM configs: every epoch)
    if "optimizer" not in c or trainer.plateau_settings(c.optimizer) is None:
        c.eval_every = 0
    return c


def predict_logits(task: Any, state: Any, batches: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    """Evaluation-mode logits of every valid example of ``batches``: ``float32 [N, ...]`` (host); the
    jitted ``task.predict`` is made once per task (:func:`jaxcomp.train.per_task`)."""
    predict = trainer.per_task("predict", task, lambda: jax.jit(task.predict))
    out = []
    for batch in batches:
        valid = batch.pop("valid")
        out.append(np.asarray(predict(state, batch))[valid])
    return np.concatenate(out)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``error`` (%), ``nll`` (nats) and mean ``confidence`` of logits ``[N, C]`` against labels ``[N]``."""
    probs = np.asarray(jax.nn.softmax(logits, -1))
    return {"error": 100.0 * float(np.mean(np.argmax(logits, -1) != labels)),
            "nll": float(np.mean(np.asarray(cross_entropy(logits, labels)))),
            "confidence": float(np.mean(probs.max(-1)))}


def train_member(config: ml_collections.ConfigDict, workdir: str, name: str, teachers: Sequence[Member],
                 progress: bool = True, deadline: Deadline | None = None) -> Member:
    """Trains (or, if finished, restores) one model of the chain in ``workdir`` and evaluates it.

    ``deadline``: the run's time budget; a model it stops raises :class:`jaxcomp.deadline.OutOfTime`
    (checkpointed: the same call continues it), so a half-trained model is never evaluated.
    """
    from jaxcomp import tasks

    deadline = Deadline(None) if deadline is None else deadline
    # a re-run with other settings must not restore and report the old models; the driver's plan (``ban``:
    # seeds, generations, variants) may change, each model's own settings may not
    trainer.check_same_settings(config, workdir, trainer.BOOKKEEPING_KEYS + ("ban",))
    limit = deadline.for_training(workdir, config.steps)  # out of time: stop before the teachers and data are built
    task = build_task(config, teachers=[t.teacher for t in teachers])
    data = tasks.build_data(config, config.task)
    state, _ = trainer.train(config, workdir, task, data, progress=progress, time_limit=limit and deadline.left())
    deadline.check_finished(state, config.steps, workdir)
    logits = None
    if config.task == "classification":
        logits = predict_logits(task, state, data.eval_batches(config.eval_batch_size))
        metrics = classification_metrics(logits, data.eval_arrays()["label"])
    else:
        mesh = trainer.make_mesh()  # the trainer's compiled eval step (already compiled where a plateau rule watched)
        metrics = lm_metrics(trainer.evaluate(trainer.compile_steps(task, mesh)[1], state,
                                              data.eval_batches(config.eval_batch_size), mesh))
    return Member(name, workdir, metrics, logits, teacher_from_state(task, state))


def lm_metrics(sums: dict[str, float]) -> dict[str, float]:
    """A language model's perplexity ``exp(nll / tokens)`` (natural log, per scored token) and
    next-word accuracy in percent, from the evaluation's sums ``nll_sum``, ``tokens``, ``correct``."""
    return {"perplexity": math.exp(sums["nll_sum"] / sums["tokens"]),
            "accuracy": 100.0 * sums["correct"] / sums["tokens"]}


def ensemble_metrics(members: Sequence[Member], labels: np.ndarray) -> dict[str, float]:
    """BANE: the metrics of the average of the members' probabilities."""
    probs = np.mean([np.asarray(jax.nn.softmax(m.logits, -1)) for m in members], axis=0)
    return classification_metrics(np.log(np.maximum(probs, 1e-30)), labels)


def check_plan(ban: ml_collections.ConfigDict) -> list[str]:
    """The losses ``ban`` (a config's ``ban`` block) trains with, ``[ban.loss, variants' ...]``, or a
    ValueError naming the key: a misspelt loss or variant, a variant weight that is not a number, or
    ``ban.generations`` that is not a whole number >= 0 were found only when their student came to
    train, after the teacher (hours on the paper configs), or (generations < 0) ran as 0."""
    from jaxcomp.checks import count
    from jaxcomp.distill.losses import LOSSES

    count(ban.generations, "ban.generations", minimum=0)
    if ban.loss not in LOSSES:
        raise ValueError(f"ban.loss={ban.loss!r} is not a loss; use one of {', '.join(LOSSES)}")
    losses = [ban.loss]
    for variant in ban.variants:
        loss, colon, weight = str(variant).partition(":")
        if loss not in LOSSES:
            raise ValueError(f"ban.variants: {variant!r} names no loss; use one of {', '.join(LOSSES)} "
                             f"(optionally 'loss:w', w the label weight)")
        if colon:
            try:
                float(weight)
            except ValueError:
                raise ValueError(f"ban.variants: {variant!r}: the label weight after ':' must be a number") from None
        losses.append(loss)
    return losses


# what run_generations sets per model or seed, and its plan (the ban section): not settings of a chain
PER_MODEL_KEYS = ("ban", "seed", "data.seed", "distill", "model.name")


def finished_chain(config: ml_collections.ConfigDict, seed_dir: str) -> list[tuple[str, str]]:
    """``[(model, workdir)]`` of the finished models of one seed's chain in ``seed_dir`` (``teacher``,
    ``ban-1`` .., in order, up to the first unfinished one) of a :func:`run_generations` run of
    ``config``, for scripts that read a finished run (``experiments/ban_collect.py``,
    ``experiments/ban_regime.py --chains``). A model trained with other settings (another learning
    rate, other data: a ValueError naming the keys; what the driver sets per model, i.e. seeds,
    losses, teachers, may differ) is not reported as this config's, and a model stopped before
    ``config.steps`` (a time limit) ends the chain."""
    from jaxcomp.train import BOOKKEEPING_KEYS, check_same_settings

    out = []
    for model in ["teacher"] + [f"ban-{g}" for g in range(1, config.ban.generations + 1)]:
        path = os.path.join(seed_dir, model)
        if not (model == "teacher" and config.ban.get("teacher_config")):  # a teacher of its own config
            check_same_settings(config, path, BOOKKEEPING_KEYS + PER_MODEL_KEYS)
        if not os.path.isdir(os.path.join(path, "checkpoints", str(config.steps))):  # not finished
            break
        out.append((model, path))
    return out


def run_generations(config: ml_collections.ConfigDict, workdir: str, progress: bool = True,
                    log: Callable[[str], Any] = print, deadline: Deadline | None = None) -> list[dict[str, Any]]:
    """The whole experiment ``config.ban`` describes, for every seed of ``ban.seeds``.

    Per seed: a teacher (``ban.teacher_model`` if set, else ``model.name``; cross-entropy to
    the labels; trained with the whole config ``ban.teacher_config`` names, e.g.
    ``configs/ban.py:paper_wrn_28_10``, when that is set: cross-architecture pairs whose teacher
    has its own recipe; the students' ``data.tfds_data_dir`` / ``data.path`` and then the
    ``key=value`` strings of ``ban.teacher_overrides`` are applied to it), ``ban.generations``
    born-again students each taught by the previous one with ``ban.loss``, one student of the
    teacher per loss in ``ban.variants`` (e.g. CWTM, DKPP; a variant ``"loss:w"`` sets
    ``distill.label_weight=w`` for that student, e.g. ``"dkpp:0"``), a label-only model of the
    student architecture when it differs from the teacher's (unless ``ban.student_baseline`` is
    false: it is the same run as the teacher of the same-architecture experiment with the same
    seeds), and the BANE ensembles (BAN-1..k, and the teacher with all generations); then, as their
    control, ensembles of independently trained teachers (:func:`independent_ensembles`). Returns one
    row per model and seed: ``{'seed', 'model', 'error', 'nll', 'confidence'}`` (or perplexity for ``lm``).
    ``ban.time_limit`` (seconds; 0: none) is the budget of the call: the model in training stops there,
    checkpointed, and :class:`jaxcomp.deadline.OutOfTime` is raised (a second call continues);
    ``deadline``, a budget shared with the caller's other work (``experiments/ban_regime.py``'s
    settings), is used instead when given.
    """
    seed_list(config.ban.seeds, "ban.seeds")
    if deadline is None:
        deadline = Deadline(config.ban.get("time_limit", 0.0), "ban.time_limit")
    losses = check_plan(config.ban)
    if "kd" in losses:  # before the teacher trains, not at the student
        check_kd_temperature(config.distill.temperature)
    rows: list[dict[str, Any]] = []
    teachers = []
    for seed in config.ban.seeds:
        rows.extend(_run_seed(config, seed, os.path.join(workdir, f"seed{seed}"), progress, log, teachers, deadline))
    if config.task == "classification" and len(teachers) >= 2:
        rows.extend(independent_ensembles(config, teachers))
    return rows


def independent_ensembles(config: ml_collections.ConfigDict, teachers: Sequence[tuple[int, Member]]
                          ) -> list[dict[str, Any]]:
    """The control for BANE: ensembles of ``k`` teachers trained independently (other seeds).

    For ``k`` from 2 to the number of seeds (at most ``ban.generations``), the windows of ``k``
    consecutive seeds (cyclically; one window when ``k`` is the number of seeds) give one row
    each, named ``k independent``, with the first seed of the window as its ``seed``.
    """
    from jaxcomp import tasks

    labels = tasks.build_data(config, "classification").eval_arrays()["label"]
    n = len(teachers)
    rows = []
    for k in range(2, min(n, max(config.ban.generations, 2)) + 1):
        for start in range(n if k < n else 1):
            window = [teachers[(start + j) % n][1] for j in range(k)]
            rows.append({"seed": teachers[start][0], "model": f"{k} independent", **ensemble_metrics(window, labels)})
    return rows


def _run_seed(config: ml_collections.ConfigDict, seed: int, base: str, progress: bool, log,
              teachers: list, deadline: Deadline) -> list[dict[str, Any]]:
    ban = config.ban
    rows: list[dict[str, Any]] = []

    def member(name: str, loss: str, teachers: Sequence[Member], index: int, model_name: str | None = None,
               base_config: ml_collections.ConfigDict | None = None, label_weight: float | None = None):
        c = _config_for(config if base_config is None else base_config, seed=1000 * seed + index, loss=loss,
                        teacher_workdirs=[t.workdir for t in teachers], model_name=model_name,
                        label_weight=label_weight)
        m = train_member(c, os.path.join(base, name.lower().replace(" ", "_")), name, teachers, progress, deadline)
        rows.append({"seed": seed, "model": name, **m.metrics})
        log(f"seed {seed} {name}: " + " ".join(f"{k}={v:.4g}" for k, v in m.metrics.items()))
        return m

    teacher_base = None
    if ban.get("teacher_config"):
        from jaxcomp.configs import load_config

        # the data's location comes from the students' config; ban.teacher_overrides change the rest
        located = [f"data.{k}={config.data[k]}" for k in ("tfds_data_dir", "path") if config.data.get(k, "")]
        teacher_base = load_config(ban.teacher_config, located + list(ban.get("teacher_overrides", ())))
        if teacher_base.task != config.task:
            raise ValueError(f"ban.teacher_config={ban.teacher_config!r} is a {teacher_base.task!r} config; the "
                             f"students are {config.task!r}")
    teacher = member("teacher", "ce", [], 0, model_name=ban.get("teacher_model") or None, base_config=teacher_base)
    teachers.append((seed, teacher))
    teacher_arch = teacher_base.model.name if teacher_base is not None else ban.get("teacher_model")
    if teacher_arch and teacher_arch != config.model.name and ban.get("student_baseline", True):
        member("student CE", "ce", [], 0)  # seed index 0: the run a same-architecture teacher would be
    chain = [teacher]
    for g in range(1, ban.generations + 1):
        chain.append(member(f"BAN-{g}", ban.loss, [chain[-1]], g))
    for i, variant in enumerate(ban.variants):
        loss, _, weight = variant.partition(":")
        member(loss.upper(), loss, [teacher], 50 + i, label_weight=float(weight) if weight else None)
    if config.task == "classification" and ban.generations >= 2:
        from jaxcomp import tasks

        labels = tasks.build_data(config, "classification").eval_arrays()["label"]
        for k in range(2, ban.generations + 1):
            rows.append({"seed": seed, "model": f"BANE-1..{k}", **ensemble_metrics(chain[1 : k + 1], labels)})
        rows.append({"seed": seed, "model": f"teacher + BAN-1..{ban.generations}", **ensemble_metrics(chain, labels)})
    return rows


def summarize(rows: Sequence[dict[str, Any]], baseline: str = "teacher") -> list[dict[str, Any]]:
    """Mean and (sample) std over seeds per model, in first-seen order, plus the paired difference
    to ``baseline`` of the same seed (mean ± std, and its 95% t-interval, :func:`paired_interval`)
    and the number of seeds where the model is better.

    The compared metric is ``error`` (lower is better) or ``perplexity``.
    """
    key = "error" if "error" in rows[0] else "perplexity"
    names = list(dict.fromkeys(r["model"] for r in rows))
    base = {r["seed"]: r[key] for r in rows if r["model"] == baseline}
    out = []
    for name in names:
        rs = [r for r in rows if r["model"] == name]
        vals = np.array([r[key] for r in rs])
        diffs = np.array([r[key] - base[r["seed"]] for r in rs if r["seed"] in base])
        row = {"model": name, "seeds": len(rs), key: _pm(vals)}
        for extra in ("nll", "confidence", "accuracy"):
            if extra in rs[0]:
                row[extra] = _pm(np.array([r[extra] for r in rs]), 3 if extra != "accuracy" else 2)
        if name != baseline and len(diffs):
            row[f"{key} - {baseline}"] = _pm(diffs)
            if len(diffs) > 1:
                lo, hi = paired_interval(diffs)
                row["95% CI"] = f"[{lo:+.2f}, {hi:+.2f}]"
            row[f"better than {baseline}"] = f"{int(np.sum(diffs < 0))}/{len(diffs)}"
        out.append(row)
    return out


def paired_interval(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of paired differences ``[n]`` (n >= 2):
    ``mean ± t_{(1+level)/2, n-1} * std / sqrt(n)`` with the sample std."""
    from scipy.special import stdtrit  # the Student-t quantile (lighter than importing scipy.stats)

    diffs = np.asarray(diffs, np.float64)
    if diffs.ndim != 1 or len(diffs) < 2:
        raise ValueError(f"paired_interval needs at least 2 differences, got shape {diffs.shape}")
    half = stdtrit(len(diffs) - 1, 0.5 + level / 2) * diffs.std(ddof=1) / np.sqrt(len(diffs))
    return float(diffs.mean() - half), float(diffs.mean() + half)


def _pm(values: np.ndarray, digits: int = 2) -> str:
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{float(np.mean(values)):.{digits}f} ± {std:.{digits}f}"


def plot_summary(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> None:
    """Per-model mean ± std (bars) and per-seed values (dots) of the error / perplexity, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "error" if "error" in rows[0] else "perplexity"
    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(names)), 3.6))
    for i, name in enumerate(names):
        vals = np.array([r[key] for r in rows if r["model"] == name])
        std = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
        ax.bar(i, vals.mean(), yerr=std, color="C1" if name == "teacher" else "C0", alpha=0.6, capsize=3)
        ax.plot(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, "k.", ms=4)
    lo = min(r[key] for r in rows)
    hi = max(r[key] for r in rows)
    ax.set_ylim(max(0.0, lo - 0.3 * (hi - lo + 1e-9)), hi + 0.2 * (hi - lo + 1e-9))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("test error (%)" if key == "error" else "perplexity")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
