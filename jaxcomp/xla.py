"""XLA settings that measurably help on this project's hardware, applied before JAX starts.

``import jaxcomp`` calls :func:`prefer_xla_cpu_convolutions`, so every jaxcomp process that
imports jaxcomp before running JAX computes with the same CPU convolutions: faster training,
and codec streams that one jaxcomp process writes and another decodes bit-exactly.
"""

from __future__ import annotations

import os
import sys

# jaxlib 0.10 hands CPU convolutions to YNNPACK by default; on the 2-core x86 machines of
# this project XLA's own convolutions are ~1.5-2x faster for training and for the L3C codec
# (measured by experiments/bench_conv_gap.py, experiments/bench_train.py and bench_codecs.py;
# see the README). The two give different floats, so a codec must know which one ran.
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="

_state: dict[str, object] = {"flags_at_start": None}


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a jax without the helper: assume it may have started
        return True


def prefer_xla_cpu_convolutions() -> None:
    """Adds :data:`NO_YNN` to ``XLA_FLAGS`` unless the user set a YNN option or opted out.

    Takes effect only if no JAX computation has run yet in this process (JAX reads
    ``XLA_FLAGS`` once). Opt out with ``JAXCOMP_KEEP_YNN=1``. Idempotent.
    """
    if _state["flags_at_start"] is None and _backends_started():
        _state["flags_at_start"] = os.environ.get("XLA_FLAGS", "")  # too late: these are in force
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXCOMP_KEEP_YNN") == "1" or "ynn" in flags:
        return
    os.environ["XLA_FLAGS"] = (flags + " " + NO_YNN).strip()


def cpu_convolutions() -> str:
    """Which CPU convolutions this process runs: ``"xla"`` (YNNPACK fusions off) or ``"ynn"``."""
    flags = _state["flags_at_start"]
    flags = os.environ.get("XLA_FLAGS", "") if flags is None else flags
    return "xla" if NO_YNN in str(flags).split() else "ynn"


def default_cache_dir() -> str:
    """``$JAXCOMP_CACHE_DIR``, else JAX's own ``$JAX_COMPILATION_CACHE_DIR``, else
    ``~/.cache/jaxcomp/xla`` (under ``$XDG_CACHE_HOME`` if that is set)."""
    for var in ("JAXCOMP_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxcomp", "xla")


def enable_compilation_cache(path: str, min_compile_secs: float = 0.0) -> bool:
    """Points JAX's persistent compilation cache at ``path`` (created if needed); ``""`` does
    nothing. Functions that took at least ``min_compile_secs`` to compile are stored (unless
    ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise). The default, 0, stores every
    function: idle, the L3C coder's functions compile in 0.2-0.3 s each, so the former 0.5 s
    threshold stored none of them (the README has the measurements). L3C's keys do not change
    with the image size (tile buckets); the lossy codecs (cpm, gc, dplc) have no buckets, so
    their entries accumulate per image size seen. JAX does not bound the folder by default;
    ``$JAX_COMPILATION_CACHE_MAX_SIZE`` (bytes) makes it evict the least recently used entries,
    which needs the ``filelock`` package (without it JAX turns the cache off with a warning, so
    jaxcomp sets no bound itself). Returns whether the cache is on; a folder that cannot be
    created only costs a warning on stderr (everything works without the cache, it just
    compiles anew). The jaxcomp CLI and ``experiments/bench_l3c_sizes.py`` use the default; the
    ECG cross-validation and the understanding and StrassenNets drivers pass 1 s (their seeds
    share programs that take seconds).
    """
    if not path:
        return False
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        print(f"jaxcomp: warning: no compilation cache ({e}); every call compiles the model anew",
              file=sys.stderr)
        return False
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    return True
