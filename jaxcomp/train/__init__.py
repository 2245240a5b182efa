"""The one trainer for gradient-based experiments (see :mod:`jaxcomp.train.trainer`)."""

from jaxcomp.train.state import (
    PlateauState,
    TrainState,
    TwoPlayerState,
    l2_penalty,
    make_optimizer,
    make_schedule,
    param_path,
    plateau_reset,
    plateau_scale,
    plateau_settings,
    plateau_update,
    scale_on_plateau,
    train_only_labels,
)
from jaxcomp.train.trainer import (
    Batches,
    CheckpointError,
    Task,
    abstract_state,
    batch_sharding,
    benchmark_train_step,
    check_settings,
    checkpoint_manager,
    compile_steps,
    evaluate,
    init_state,
    jit_init,
    load_init_params,
    make_mesh,
    maybe_initialize_distributed,
    replicated,
    restore_checkpoint,
    restore_for_eval,
    shard_batch,
    train,
    warm_start,
)

__all__ = [
    "Batches", "CheckpointError", "PlateauState", "Task", "TrainState", "TwoPlayerState", "abstract_state",
    "batch_sharding", "benchmark_train_step", "check_settings", "checkpoint_manager", "compile_steps", "evaluate",
    "init_state", "jit_init", "l2_penalty", "load_init_params", "make_mesh", "make_optimizer", "make_schedule",
    "maybe_initialize_distributed", "param_path", "plateau_reset", "plateau_scale", "plateau_settings",
    "plateau_update", "replicated", "restore_checkpoint", "restore_for_eval", "scale_on_plateau", "shard_batch",
    "train", "train_only_labels", "warm_start",
]
