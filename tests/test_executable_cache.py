"""jaxcomp.xla.CachedFunction: compiled executables stored under jaxcomp's own key and loaded by a
later process without tracing; corrupt files compiled again; every part of the key matters."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import xla


def _affine(traces: list):
    def f(x, k, y):
        traces.append(k)  # runs only while tracing
        return x * k + y

    return f


LOADS: list[float] = []  # seconds of every executable loaded from a file in this process
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: LOADS.append(duration) if event == xla.EXECUTABLE_LOAD_EVENT else None)


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture
def store(tmp_path):
    folder = str(tmp_path / "executables")
    xla.enable_executable_cache(folder)
    return folder


def test_a_new_process_loads_the_executable_without_tracing(store):
    traces: list = []
    x, y = np.arange(6, dtype=np.float32).reshape(2, 3), np.float32(0.5) * np.ones(3, np.float32)
    first = xla.CachedFunction(_affine(traces), (1,), name="test.affine")
    np.testing.assert_array_equal(first(x, 2, y), x * 2 + y)
    assert traces == [2] and len(_files(store)) == 1
    loads = len(LOADS)
    np.testing.assert_array_equal(first(x, 2, y), x * 2 + y)  # in memory
    assert traces == [2] and len(LOADS) == loads
    later = xla.CachedFunction(_affine(traces), (1,), name="test.affine")  # what a new process builds
    out = later(x, 2, y)
    assert traces == [2] and len(LOADS) == loads + 1, "a stored executable must load without tracing"
    np.testing.assert_array_equal(out, x * 2 + y)
    assert later.jitted._cache_size() == 0
    # every part of the key: another static argument, shape, dtype, tree, name or key is another program
    cases = [((x, 3, y), x * 3 + y), ((x[:1], 2, y), x[:1] * 2 + y),
             ((x.astype(np.int32), 2, y.astype(np.int32)), x.astype(np.int32) * 2 + y.astype(np.int32)),
             ((x, 2, np.float32(0.5)), x * 2 + np.float32(0.5))]
    for n, (args, want) in enumerate(cases, start=1):
        out = later(*args)
        np.testing.assert_array_equal(out, want)
        assert np.asarray(out).dtype == want.dtype
        assert len(traces) == 1 + n and len(_files(store)) == 1 + n, (n, traces)
    for other in (xla.CachedFunction(_affine(traces), (1,), name="test.affine2"),
                  xla.CachedFunction(_affine(traces), (1,), name="test.affine", key="another model")):
        before = len(traces)
        np.testing.assert_array_equal(other(x, 2, y), x * 2 + y)
        assert len(traces) == before + 1


def test_another_environment_or_source_is_another_program(store, tmp_path, monkeypatch):
    traces: list = []
    x = np.ones((2, 2), np.float32)
    xla.CachedFunction(_affine(traces), (1,), name="test.env")(x, 2, x)
    xla.CachedFunction(_affine(traces), (1,), name="test.env")(x, 2, x)
    assert len(traces) == 1
    monkeypatch.setitem(xla._state, "environment_digest", "0" * 64)  # e.g. an edited jaxcomp, another jaxlib
    xla.CachedFunction(_affine(traces), (1,), name="test.env")(x, 2, x)
    assert len(traces) == 2 and len(_files(store)) == 2
    # the source digest sees a changed byte, a renamed file; not files other than .py
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("x = 1\n")
    (src / "sub" / "b.py").write_text("y = 2\n")
    digests = [xla.source_digest(str(src))]
    (src / "notes.txt").write_text("not code")
    digests.append(xla.source_digest(str(src)))
    (src / "sub" / "b.py").write_text("y = 3\n")
    digests.append(xla.source_digest(str(src)))
    (src / "sub" / "b.py").rename(src / "sub" / "c.py")
    digests.append(xla.source_digest(str(src)))
    assert digests[0] == digests[1] and len(set(digests[1:])) == 3
    assert xla.source_digest() == xla.source_digest(os.path.dirname(xla.__file__))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign", "empty", "swapped"])
def test_a_damaged_file_is_compiled_again_and_rewritten(store, damage, capsys):
    traces: list = []
    x = np.arange(4, dtype=np.float32)
    xla.CachedFunction(_affine(traces), (1,), name="test.damage")(x, 3, x)
    (path,) = [os.path.join(store, f) for f in _files(store)]
    data = open(path, "rb").read()
    if damage == "swapped":  # a whole, valid body of another program behind this file's checksum
        xla.CachedFunction(_affine(traces), (1,), name="test.damage")(x, 5, x)
        (other,) = [os.path.join(store, f) for f in _files(store) if f != os.path.basename(path)]
        other_data = open(other, "rb").read()
        os.remove(other)
        traces.pop()
    n = len(xla.EXECUTABLE_FORMAT) + 32
    bad = {"truncated": data[:len(data) // 2], "empty": b"",
           "flipped": data[:-10] + bytes([data[-10] ^ 0x40]) + data[-9:],
           "foreign": b"jaxcomp-executable-0\n" + data[len(xla.EXECUTABLE_FORMAT):],
           "swapped": data[:n] + other_data[n:] if damage == "swapped" else b""}[damage]
    open(path, "wb").write(bad)
    out = xla.CachedFunction(_affine(traces), (1,), name="test.damage")(x, 3, x)
    np.testing.assert_array_equal(out, x * 4)
    assert len(traces) == 2, "a damaged file must never be run"
    err = capsys.readouterr().err
    assert "ignoring the stored executable" in err and os.path.basename(path) in err
    assert open(path, "rb").read() != bad  # rewritten: the next process loads it again
    xla.CachedFunction(_affine(traces), (1,), name="test.damage")(x, 3, x)
    assert len(traces) == 2 and _files(store) == [os.path.basename(path)]


def test_off_is_plain_jit_and_the_compilation_cache_switches_it(tmp_path):
    traces: list = []
    xla.enable_executable_cache(None)
    f = xla.CachedFunction(_affine(traces), (1,), name="test.off")
    x = np.ones(3, np.float32)
    f(x, 2, x), f(x, 2, x)
    assert len(traces) == 1 and f.jitted._cache_size() == 1 and not f._executables
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {n: getattr(jax.config, n) for n in names}
    try:
        assert xla.enable_compilation_cache(str(tmp_path / "c"))
        assert xla.executable_cache_dir() == str(tmp_path / "c" / "jaxcomp-executables")
        assert not xla.enable_compilation_cache("")
        assert xla.executable_cache_dir() is None
    finally:
        for n, v in before.items():
            jax.config.update(n, v)


def test_a_folder_that_cannot_be_written_costs_a_warning_only(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    xla.enable_executable_cache(str(tmp_path / "a_file" / "executables"))
    traces: list = []
    x = np.ones(2, np.float32)
    np.testing.assert_array_equal(xla.CachedFunction(_affine(traces), (1,), name="test.ro")(x, 2, x), x * 3)
    assert "cannot store a compiled executable" in capsys.readouterr().err
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_program_from_jaxs_own_cache_is_compiled_afresh_before_it_is_stored(store):
    """jaxlib 0.10.2 on CPU: an executable JAX read from its persistent cache serialises into
    bytes that fail to run; the store compiles afresh, so what it keeps runs."""
    if jax.config.jax_compilation_cache_dir is None:
        pytest.skip("JAX's persistent compilation cache is off in this process")
    traces: list = []
    x = np.arange(5, dtype=np.float32)
    option = "jax_persistent_cache_min_compile_time_secs"
    before = getattr(jax.config, option)
    jax.config.update(option, 0.0)
    try:
        jax.jit(_affine(traces), static_argnums=1)(x, 7, -x)  # JAX stores this program in its cache
        first = xla.CachedFunction(_affine(traces), (1,), name="test.from_jax_cache")
        np.testing.assert_array_equal(first(x, 7, -x), x * 6)
    finally:
        jax.config.update(option, before)
    assert len(_files(store)) == 1, "the executable must be stored, compiled afresh"
    # and JAX's cache kept nothing under the fresh name (else a later process could read it there)
    assert not [f for f in os.listdir(jax.config.jax_compilation_cache_dir) if "from_jax_cache" in f]
    later = xla.CachedFunction(_affine(traces), (1,), name="test.from_jax_cache")
    np.testing.assert_array_equal(later(x, 7, -x), x * 6)
    assert len(traces) == 2, "the stored executable must load and run without tracing"


@pytest.mark.parametrize("other", ["values", "dtype", "tree", "negative zero"])
def test_an_executable_that_does_not_survive_serialisation_is_not_stored(store, other, monkeypatch, capsys):
    """What is stored must reproduce the executable bit for bit: here its bytes are replaced by
    those of another program of the same signature (other values, dtype, tree, or -0.0 for 0.0)."""
    from jax.experimental import serialize_executable

    x = np.arange(3, dtype=np.float32) - 1  # [-1, 0, 1]: a * 2 + b * 0 has a +0.0
    program = {"values": lambda a, b: a * 2 + b + 1,
               "dtype": lambda a, b: (a * 2 + b * 0).astype(jnp.bfloat16),
               "tree": lambda a, b: (a * 2 + b * 0,),
               "negative zero": lambda a, b: jnp.where(a == 0, -0.0, a * 2 + b * 0)}[other]
    forged = jax.jit(program).lower(x, x).compile()
    real = serialize_executable.serialize
    monkeypatch.setattr(serialize_executable, "serialize", lambda compiled: real(forged))
    f = xla.CachedFunction(lambda a, k, b: a * k + b * 0, (1,), name="test.unfaithful")
    want = x * 2
    out = f(x, 2, x)
    assert np.asarray(out).tobytes() == want.tobytes() and np.asarray(out).dtype == np.float32
    assert not _files(store)
    assert "does not survive serialisation" in capsys.readouterr().err
    assert not xla.same_outputs(np.float32([0.0]), np.float32([-0.0]))
    assert xla.same_outputs(np.float32([np.nan]), np.float32([np.nan]))


def test_options_weak_types_and_a_failed_store_are_handled(store, monkeypatch, capsys):
    """JAX options in force (read at every call), a weak Python scalar against a float32 one, the
    fresh compile's pause of JAX's cache undone, a store that cannot complete."""
    import collections

    traces: list = []
    x = jnp.arange(4, dtype=jnp.bfloat16)
    f = xla.CachedFunction(_affine(traces), (1,), name="test.options")
    option = "jax_persistent_cache_min_compile_time_secs"
    before = getattr(jax.config, option)
    jax.config.update(option, 0.25)
    try:
        f(x, 2, x)
        assert getattr(jax.config, option) == 0.25, "the fresh compile must restore JAX's cache setting"
    finally:
        jax.config.update(option, before)
    with jax.default_matmul_precision("highest"):
        f(x, 2, x)
        xla.CachedFunction(_affine(traces), (1,), name="test.options")(x, 2, x)
    assert len(traces) == 2 and len(_files(store)) == 2
    # a Python float is weakly typed: x (bf16) + 1.5 stays bf16, x + float32 promotes
    weak = xla.CachedFunction(_affine(traces), (1,), name="test.options")(x, 2, 1.5)
    strong = xla.CachedFunction(_affine(traces), (1,), name="test.options")(x, 2, np.float32(1.5))
    assert weak.dtype == jnp.bfloat16 and strong.dtype == jnp.float32 and len(_files(store)) == 4
    # outputs whose tree cannot be pickled (a local namedtuple): a warning, the result, no file
    Pair = collections.namedtuple("Pair", "a b")
    g = xla.CachedFunction(lambda a, k: Pair(a * k, a), (1,), name="test.unpicklable")
    out = g(np.ones(2, np.float32), 3)
    assert isinstance(out, Pair) and float(out.a[0]) == 3.0
    assert "not storing" in capsys.readouterr().err and len(_files(store)) == 4

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    h = xla.CachedFunction(_affine(traces), (1,), name="test.full_disk")
    np.testing.assert_array_equal(h(np.ones(2, np.float32), 2, np.ones(2, np.float32)), [3, 3])
    assert "cannot store" in capsys.readouterr().err
    assert len(_files(store)) == 4, "no temporary file may be left behind"
