"""XLA settings that measurably help on this project's hardware, applied before JAX starts.

``import jaxcomp`` calls :func:`prefer_xla_cpu_convolutions`, so every jaxcomp process that
imports jaxcomp before running JAX computes with the same CPU convolutions: faster training,
and codec streams that one jaxcomp process writes and another decodes bit-exactly.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from jaxcomp.files import write_atomic

# jaxlib 0.10 hands CPU convolutions to YNNPACK by default; on the 2-core x86 machines of
# this project XLA's own convolutions are ~1.5-2x faster for training and for the L3C codec
# (measured by experiments/bench_conv_gap.py, experiments/bench_train.py and bench_codecs.py;
# see the README). The two give different floats, so a codec must know which one ran.
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="

_state: dict[str, object] = {"flags_at_start": None, "executables_dir": None}


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


def driver_cache_dir(workdir: str) -> str:
    """The compilation cache of a driver that trains several models in ``workdir`` (the ECG
    cross-validation, the understanding and StrassenNets drivers): ``$JAXCOMP_CACHE_DIR`` or
    ``$JAX_COMPILATION_CACHE_DIR`` where one is set (so a cache carried from one leased machine to
    the next serves every driver, as it does ``experiments.train``), else ``workdir/jax_cache``
    (which :mod:`experiments.pack_run` leaves behind)."""
    for var in ("JAXCOMP_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR"):
        if os.environ.get(var):
            return os.environ[var]
    return os.path.join(workdir, "jax_cache")


def enable_compilation_cache(path: str, min_compile_secs: float = 0.0) -> bool:
    """Points JAX's persistent compilation cache at ``path`` (created if needed) and
    :class:`CachedFunction`'s executables at ``path/jaxcomp-executables``; ``""`` turns the
    latter off and leaves JAX's setting as it is. Functions that took at least
    ``min_compile_secs`` to compile are stored (unless
    ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise). The default, 0, stores every
    function: idle, the L3C coder's functions compile in 0.2-0.3 s each, so the former 0.5 s
    threshold stored none of them (the README has the measurements). L3C's keys do not change
    with the image size (tile buckets); the lossy codecs (cpm, gc, dplc) have no buckets, so
    their entries accumulate per image size seen. JAX does not bound the folder by default;
    ``$JAX_COMPILATION_CACHE_MAX_SIZE`` (bytes) makes it evict the least recently used entries,
    which needs the ``filelock`` package (without it JAX turns the cache off with a warning, so
    jaxcomp sets no bound itself); that bound does not cover ``jaxcomp-executables``, which only
    grows (delete it at any time). Returns whether the cache is on; a folder that cannot be
    created only costs a warning on stderr (everything works without the cache, it just
    compiles anew). The jaxcomp CLI and ``experiments/bench_l3c_sizes.py`` use the default; the
    ECG cross-validation and the understanding and StrassenNets drivers pass 1 s (their seeds
    share programs that take seconds).
    """
    if not path:
        enable_executable_cache(None)
        return False
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        print(f"jaxcomp: warning: no compilation cache ({e}); every call compiles the model anew",
              file=sys.stderr)
        enable_executable_cache(None)
        return False
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    enable_executable_cache(os.path.join(path, EXECUTABLES_SUBDIR))
    return True


# --------------------------------------------------------------------------------------
# Compiled executables kept on disk under our own key: no tracing, no lowering on a hit
# --------------------------------------------------------------------------------------

# Bump when the file layout or the key's contents change: older files are then never read.
EXECUTABLE_FORMAT = b"jaxcomp-executable-1\n"
# Seconds spent reading, checking and loading one stored executable (a jax.monitoring event).
EXECUTABLE_LOAD_EVENT = "/jaxcomp/executable_cache/load_duration"
EXECUTABLES_SUBDIR = "jaxcomp-executables"


def enable_executable_cache(path: str | None) -> None:
    """Where :class:`CachedFunction` keeps compiled executables (``None`` or ``""``: nowhere,
    every such function is a plain ``jax.jit``). :func:`enable_compilation_cache` sets it to
    ``<its folder>/jaxcomp-executables``; the folder is created on the first store."""
    _state["executables_dir"] = path or None


def executable_cache_dir() -> str | None:
    """The folder of :class:`CachedFunction`'s executables, or ``None`` when it is off."""
    return _state.get("executables_dir")  # type: ignore[return-value]


def source_digest(root: str | None = None) -> str:
    """sha256 (hex) of the names and bytes of every ``.py`` file under ``root`` (default: the jaxcomp
    package, computed once per process), which is what traces jaxcomp's functions."""
    import hashlib

    if root is None and "source_digest" in _state:
        return _state["source_digest"]  # type: ignore[return-value]
    top = os.path.dirname(os.path.abspath(__file__)) if root is None else root
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, top).encode() + b"\0")
                with open(path, "rb") as f:
                    h.update(f.read())
                h.update(b"\0")
    if root is None:
        _state["source_digest"] = h.hexdigest()
    return h.hexdigest()


def _cpu_description() -> str:
    """The host CPU's model and instruction-set flags (XLA's CPU code is compiled for them)."""
    import platform

    lines = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU implementer", "CPU part") and line not in lines:
                    lines.append(line)
                if not line.strip() and lines:  # the first processor's block is enough
                    break
    except OSError:
        pass
    return platform.machine() + "|" + platform.processor() + "|" + "".join(lines)


def environment_digest() -> str:
    """What besides a call's own key decides its compiled program and is fixed for the process:
    jaxcomp's source (:func:`source_digest`), the versions of jax, jaxlib, flax and numpy, the
    backend and its devices, the host CPU and the XLA flags in force. Computed once; JAX's
    options, which may change during a process, are :func:`jax_options` (read at every call)."""
    import hashlib
    import importlib.metadata as md

    if "environment_digest" not in _state:
        import jax

        device = jax.devices()[0]
        versions = []
        for package in ("jax", "jaxlib", "flax", "numpy"):
            try:
                versions.append(f"{package}={md.version(package)}")
            except md.PackageNotFoundError:
                versions.append(f"{package}=?")
        flags = _state["flags_at_start"]
        parts = [source_digest(), *versions, device.platform, device.client.platform_version, device.device_kind,
                 str(jax.device_count()), _cpu_description(),
                 str(os.environ.get("XLA_FLAGS", "") if flags is None else flags)]
        _state["environment_digest"] = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return _state["environment_digest"]  # type: ignore[return-value]


def jax_options() -> str:
    """Every JAX option in force in this thread now (``jax.config.values``, contexts such as
    ``jax.default_matmul_precision`` included), except the cache settings, as text."""
    import jax

    return repr(sorted((k, repr(v)) for k, v in jax.config.values.items() if "cache" not in k))


_FRESH_COMPILE = threading.Lock()  # one fresh compile at a time: it pauses JAX's cache process-wide


class CachedFunction:
    """``jax.jit(fun, static_argnums=...)`` whose compiled executables are also stored on disk
    under jaxcomp's own key, so a later process loads them without tracing or lowering.

    JAX's persistent compilation cache keys a program by its lowered module, so each call of a
    new shape still traces and lowers the function before the cache can answer (for the L3C
    coder, ~0.55 s of a new bucket's ~0.7 s). This cache keys an executable by what decides the
    program before any tracing: ``name``, ``key`` (e.g. the model's architecture), the static
    arguments, the dynamic arguments' tree, abstract values (shape, dtype, weak type) and the
    shardings of those committed to a device (numpy arrays and uncommitted jax arrays alike run
    on the default device), the JAX options in force (:func:`jax_options`) and
    :func:`environment_digest` (which includes a hash of jaxcomp's source taken when the first
    ``CachedFunction`` is made, so a process started after an edit of the code never loads the
    old code's programs). A hit deserialises the stored executable (a few ms).

    A miss compiles the function afresh, under a module name of its own (``jit_jaxcomp_fresh_`` and
    ``name``) with JAX's persistent cache told to store nothing meanwhile (one such compile at a
    time; a plain ``jax.jit`` compiled by another thread in that window is not stored in JAX's
    cache either), so that JAX's cache can never answer it: with jaxlib 0.10.2 on CPU, an
    executable that JAX read from its own cache serialises into bytes that load but fail to run
    ("Function ... not found"). Before a new executable is stored, its bytes are loaded back and
    run on the call's arguments, and stored only if every output equals the fresh executable's
    bit for bit (:func:`same_outputs`).

    Off (:func:`executable_cache_dir` is ``None``), a call is exactly ``jax.jit``'s. On, a call
    with the same key reuses the executable in memory. A stored file that cannot be read (torn,
    corrupt, a checksum mismatch) or whose executable fails to run is compiled again, with a
    warning on stderr, and rewritten; one that cannot be stored (an unwritable folder, outputs
    that cannot be pickled) costs a warning and stays in memory. Keyword arguments are refused.
    Files are written atomically; the folder can be deleted at any time. Like JAX's cache, the
    files are executable code: keep the folder your own.

    Args:
      fun: a pure function of its arguments.
      static_argnums: positions of the hashable, static arguments (as for ``jax.jit``).
      name: a name unique to ``fun`` among jaxcomp's cached functions.
      key: anything else that decides ``fun``'s program, as text (e.g. ``repr(spec)``).
    """

    def __init__(self, fun: Any, static_argnums: tuple[int, ...] = (), *, name: str, key: str = ""):
        import jax

        self.fun, self.jitted = fun, jax.jit(fun, static_argnums=static_argnums)
        self.static_argnums, self.name, self.key = tuple(static_argnums), name, key
        self._executables: dict[Any, Any] = {}
        source_digest()  # the code as it is now, when the functions it defines are made

    def __call__(self, *args: Any) -> Any:
        folder = executable_cache_dir()
        if folder is None:
            return self.jitted(*args)
        import jax

        static = tuple(args[i] for i in self.static_argnums)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        signature = (static, tree, tuple(jax.typeof(x) for x in leaves),
                     tuple(x.sharding if getattr(x, "committed", False) else None for x in leaves), jax_options())
        executable = self._executables.get(signature)
        if executable is not None:
            return executable(*dynamic)
        path = self.file_for(folder, signature)
        if os.path.exists(path):
            try:
                executable = self._executables[signature] = _load_executable(path)
                return executable(*dynamic)
            except Exception as e:  # noqa: BLE001 (any unreadable file is compiled again)
                print(f"jaxcomp: warning: ignoring the stored executable {path} ({type(e).__name__}: {e}); "
                      "compiling it again", file=sys.stderr)
        executable = self._executables[signature] = self.compile_fresh(*args)
        result = executable(*dynamic)
        _store_executable(path, executable, dynamic, result)
        return result

    def file_for(self, folder: str, signature: Any) -> str:
        """The path of the executable of ``signature`` (static args, tree, abstract values,
        shardings, JAX options)."""
        import hashlib

        static, tree, avals, shardings, options = signature
        text = "\n".join([self.name, self.key, repr(static), str(tree), " ".join(map(str, avals)),
                          " ".join(map(str, shardings)), options, environment_digest()])
        return os.path.join(folder, hashlib.sha256(text.encode()).hexdigest()[:40] + ".bin")

    def compile_fresh(self, *args: Any) -> Any:
        """``fun`` compiled for ``args`` by XLA itself (a ``jax.stages.Compiled``): under a module name
        that plain ``jax.jit`` of ``fun`` does not have, while JAX's persistent cache stores nothing,
        so no entry of that cache has this name."""
        import jax

        def program(*a):
            return self.fun(*a)

        name = "".join(c if c.isalnum() else "_" for c in self.name)
        program.__name__ = program.__qualname__ = "jaxcomp_fresh_" + name
        option = "jax_persistent_cache_min_compile_time_secs"
        with _FRESH_COMPILE:
            before = getattr(jax.config, option)
            jax.config.update(option, float("inf"))
            try:
                return jax.jit(program, static_argnums=self.static_argnums).lower(*args).compile()
            finally:
                jax.config.update(option, before)


def same_outputs(a: Any, b: Any) -> bool:
    """Whether two pytrees of arrays are equal bit for bit: the same tree, and leaves of the same
    shape, dtype and bytes (so -0.0 differs from 0.0 and NaNs compare by payload)."""
    import jax
    import numpy as np

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return False
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            return False
    return True


def _store_executable(path: str, compiled: Any, dynamic: tuple, result: Any) -> None:
    """Writes ``compiled`` to ``path`` atomically (format line, sha256 of the body, zlib body) if
    its bytes, loaded back and run on ``dynamic``, give ``result`` bit for bit; else warns. Never
    raises: an executable that cannot be stored stays in memory only."""
    import hashlib
    import pickle
    import zlib

    from jax.experimental import serialize_executable

    folder = os.path.dirname(path)
    try:
        payload, in_tree, out_tree = serialize_executable.serialize(compiled)
        loaded = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        if not same_outputs(loaded(*dynamic), result):
            raise ValueError("its outputs differ from the compiled executable's")
        body = zlib.compress(pickle.dumps((payload, in_tree, out_tree), protocol=pickle.HIGHEST_PROTOCOL), 1)
    except Exception as e:  # noqa: BLE001 (bytes that do not reproduce the executable are never stored)
        print(f"jaxcomp: warning: a compiled executable does not survive serialisation ({type(e).__name__}: "
              f"{e}); not storing {path}", file=sys.stderr)
        return
    try:
        write_atomic(path, EXECUTABLE_FORMAT + hashlib.sha256(body).digest() + body, private=True, makedirs=True)
    except OSError as e:
        print(f"jaxcomp: warning: cannot store a compiled executable in {folder} ({e})", file=sys.stderr)


def _load_executable(path: str) -> Any:
    """The executable stored by :func:`_store_executable`, or ``ValueError`` if the file is not one."""
    import hashlib
    import pickle
    import time
    import zlib

    import jax
    from jax.experimental import serialize_executable

    t0 = time.perf_counter()
    with open(path, "rb") as f:
        data = f.read()
    n = len(EXECUTABLE_FORMAT)
    if not data.startswith(EXECUTABLE_FORMAT):
        raise ValueError("not a jaxcomp executable of this format")
    digest, body = data[n:n + 32], data[n + 32:]
    if hashlib.sha256(body).digest() != digest:
        raise ValueError(f"checksum mismatch ({len(data)} bytes: truncated or corrupt)")
    payload, in_tree, out_tree = pickle.loads(zlib.decompress(body))
    executable = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    jax.monitoring.record_event_duration_secs(EXECUTABLE_LOAD_EVENT, time.perf_counter() - t0)
    return executable
