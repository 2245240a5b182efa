"""The exact-numerics modules under jaxlib's default XLA options (slow).

The default suite compiles with XLA's legacy CPU fusion emitters (``tests/conftest.py``: faster
compiles); users' runs and the main job compile with jaxlib's defaults. This runs the modules that
pin exact numerics (the entropy models, the coder, the L3C and DPLC codecs, the command, the
executable cache) once more in a fresh process the way users' runs compile them, so bit-exact coding
is checked under both.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

MODULES = ["tests/test_entropy.py", "tests/test_coding.py", "tests/test_l3c_codec.py", "tests/test_dplc_codec.py",
           "tests/test_cli.py", "tests/test_executable_cache.py"]


@pytest.mark.slow
def test_exact_numerics_modules_pass_with_jaxlibs_default_xla_options(repo):
    env = dict(os.environ, JAXCOMP_TEST_XLA_DEFAULTS="1")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "fusion_emitters" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    code = ("import os, sys, pytest; rc = pytest.main(sys.argv[1:]); "  # conftest has set XLA_FLAGS by the end
            "assert 'fusion_emitters' not in os.environ.get('XLA_FLAGS', ''), 'not jaxlib defaults'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code, "-p", "no:cacheprovider", "-n", "0",
                             "-m", "not slow", *MODULES], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
