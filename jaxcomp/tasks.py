"""Resolves ``config.task`` to a system's task and data (the only place that knows them all)."""

from __future__ import annotations

from typing import Any

import ml_collections


def build_task(config: ml_collections.ConfigDict) -> tuple[Any, str]:
    """Returns ``(task, data kind)`` for ``config.task`` without touching any data."""
    name = config.task
    if name == "l3c":
        from jaxcomp.codecs.l3c import L3CTask
        return L3CTask(config), "images"
    if name == "cpm":
        from jaxcomp.codecs.cpm import CPMTask
        return CPMTask(config), "images"
    if name == "gc":
        from jaxcomp.codecs.gc import GCTask
        return GCTask(config), "images"
    if name == "gc_sampler":
        from jaxcomp.codecs.gc.sampler import LatentSamplerTask
        return LatentSamplerTask(config), "images"
    if name == "dplc_generator":
        from jaxcomp.codecs.dplc import DPLCGeneratorTask
        return DPLCGeneratorTask(config), "images"
    if name == "dplc":
        from jaxcomp.codecs.dplc import DPLCTask
        return DPLCTask(config), "images"
    if name == "understanding":
        from jaxcomp.vision import UnderstandingTask
        return UnderstandingTask(config), "classification"
    if name == "ecg":
        from jaxcomp.ecg.task import ECGTask
        return ECGTask(config), "ecg"
    if name in ("classification", "lm") and "strassen" in config:  # the same models with SPN layers
        from jaxcomp.strassen.task import build_task as build_strassen_task
        return build_strassen_task(config), "classification" if name == "classification" else "lm"
    if name in ("classification", "lm"):
        from jaxcomp.distill.task import build_task as build_distill_task
        return build_distill_task(config), "classification" if name == "classification" else "lm"
    raise ValueError(f"unknown config.task {name!r}; known tasks: l3c, cpm, gc, gc_sampler, dplc_generator, dplc, "
                     "understanding, ecg, classification, lm")


def build_data(config: ml_collections.ConfigDict, kind: str) -> Any:
    """The host-side batches for a task's data kind."""
    if kind == "images":
        from jaxcomp.data import build_image_data
        return build_image_data(config.data)
    if kind == "ecg":
        # the paper's protocol's data side (validation split held out, configured class weights and
        # oversampling); early stopping on that split is experiments.ecg_cv's (train_with_validation)
        from jaxcomp.ecg.experiments import build_training_data
        return build_training_data(config)
    if kind == "classification":
        from jaxcomp.data.classification import build_classification_data
        data = build_classification_data(config.data)
        if data.num_classes > config.model.num_classes:
            raise ValueError(f"the data has {data.num_classes} classes but "
                             f"model.num_classes={config.model.num_classes}")
        return data
    if kind == "lm":
        from jaxcomp.data.text import build_lm_data
        data, vocab = build_lm_data(config.data)
        if len(vocab) != config.model.vocab_size:
            raise ValueError(f"the training text has {len(vocab)} words but model.vocab_size={config.model.vocab_size}")
        return data
    raise ValueError(f"unknown data kind {kind!r}")


def build(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """Returns ``(task, batches)`` for ``config.task``."""
    task, kind = build_task(config)
    return task, build_data(config, kind)
