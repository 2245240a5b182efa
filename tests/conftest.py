"""Shared fixtures. Tests run on CPU; configs are tiny so the suite stays in minutes."""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for the whole run, inherited by the processes the tests start: the
# multi-device, multi-host and command-line tests compile steps that other tests compiled already.
# A fresh folder each run, so nothing carries over between runs (JAX_COMPILATION_CACHE_DIR wins).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jaxcomp-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # the codecs' many small ones too

# XLA's legacy CPU fusion emitters (``--xla_cpu_use_fusion_emitters=false``) compile the suite's many
# small programs faster (README "Tests": tests/test_cpm.py 51 / 62 s of CPU against 72 / 97 s with
# jaxlib's default emitters, alternating, 2026-12-07). Both give the same values
# up to float rounding and the suite passes either way; ``JAXCOMP_TEST_XLA_DEFAULTS=1`` runs it with
# jaxlib's defaults. Only on the jaxlib line that knows the flag (an unknown XLA flag aborts the process).
if os.environ.get("JAXCOMP_TEST_XLA_DEFAULTS") != "1" and "fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    from importlib import metadata

    try:
        _jaxlib = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        _jaxlib = ""
    if _jaxlib.startswith("0.10."):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
if str(REPO) not in sys.path:  # experiments/ (scripts, not installed) imports as a package from any directory
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def l3c_tiny_config():
    from jaxcomp.configs import load_config
    return load_config(str(REPO / "configs" / "l3c.py") + ":tiny")


@pytest.fixture(scope="session")
def cpm_tiny_config():
    from jaxcomp.configs import load_config
    return load_config(str(REPO / "configs" / "cpm.py") + ":tiny")


@pytest.fixture(scope="session")
def l3c_tiny_params(l3c_tiny_config):
    """Untrained parameters of the tiny L3C (seed 0), shared by the codec and command-line tests."""
    import jax
    import numpy as np

    from jaxcomp.codecs import l3c
    from jaxcomp.train import jit_init

    model = l3c.L3C(l3c.spec_from_config(l3c_tiny_config.model))
    return jit_init(model.init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.uint8))["params"]


@pytest.fixture(scope="session")
def cpm_tiny_params(cpm_tiny_config):
    """Untrained parameters of the tiny context-model codec (seed 0)."""
    import jax
    import numpy as np

    from jaxcomp.codecs import cpm
    from jaxcomp.train import jit_init

    model = cpm.CPM(cpm.spec_from_config(cpm_tiny_config.model))
    return jit_init(model.init)(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.float32))["params"]


# Test modules whose programs compile at XLA's full optimisation level, as a user's run does (with the
# fusion emitters above; tests/test_user_compile.py, slow, runs them with jaxlib's defaults): the exact numerics of the
# entropy models, the coder, the L3C and DPLC codec modules (bit-exact coding of real photos, stored
# executables), the command, the executable cache and the codec benchmarks. Every other module
# trains and evaluates tiny models, where XLA's optimisation passes cost more time than they save:
# there JAX's ``jax_disable_most_optimizations`` is on (XLA backend level 0, no expensive LLVM passes;
# the same values up to float rounding), also for the processes those tests start; the codec
# roundtrips inside those modules (CPM, GC, SC) then encode and decode at level 0 alike. The suite
# took 8 min 34 s this way against 10 min 59 s with every module optimised (2026-12-06, the same
# machine and hour). Session fixtures are computed in the mode of the module that first asks for
# them; they hold values, not programs, so later modules compile their own.
KEEP_OPTIMIZED = {"test_entropy.py", "test_coding.py", "test_l3c_codec.py", "test_dplc_codec.py", "test_cli.py",
                  "test_executable_cache.py", "test_bench_rd.py", "test_bench_gc.py", "test_notebooks.py",
                  "test_notebook_ssc.py", "test_mutants.py"}


@pytest.fixture(autouse=True, scope="module")
def _compile_effort(request):
    """Most optimisations off for the modules outside :data:`KEEP_OPTIMIZED` (restored after). The
    flag is read only when a program compiles, so a change of mode also clears JAX's in-memory
    caches: a jitted function compiled by a module of the other mode compiles again (JAX's
    persistent cache keys the two modes apart) instead of running that module's executable."""
    fast = os.path.basename(str(request.path)) not in KEEP_OPTIMIZED
    with _compile_mode(fast):
        yield


@pytest.fixture
def user_compile():
    """For one test in a level-0 module: compile at the optimisation level of a user's run (e.g. to compare
    against it)."""
    with _compile_mode(False):
        yield


@contextlib.contextmanager
def _compile_mode(fast: bool):
    import jax

    def set_mode(value: bool) -> None:
        if jax.config.values["jax_disable_most_optimizations"] != value:
            jax.clear_caches()
            jax.config.update("jax_disable_most_optimizations", value)

    env_before = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS")
    before = jax.config.values["jax_disable_most_optimizations"]
    set_mode(fast)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if fast else "0"
    try:
        yield
    finally:
        set_mode(before)
        if env_before is None:
            os.environ.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)
        else:
            os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = env_before


@pytest.fixture(autouse=True)
def _executable_cache_restored():
    """A test that turns jaxcomp's executable cache on or off (the CLI in-process does) leaves it
    as it found it, so later tests in the worker compile as they would alone."""
    from jaxcomp import xla

    before = xla.executable_cache_dir()
    yield
    xla.enable_executable_cache(before)


@pytest.fixture(autouse=True)
def _xla_flags_restored():
    """A test that calls a script's ``main`` (which may add jaxcomp's CPU-convolution choice to
    ``XLA_FLAGS``, :func:`jaxcomp.xla.prefer_xla_cpu_convolutions`) leaves the variable as it found it,
    so the processes later tests start see the flags they would alone."""
    before = os.environ.get("XLA_FLAGS")
    yield
    if before is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = before
