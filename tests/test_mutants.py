"""The mutation suite's catalogue and runner (experiments/mutants.py).

The default run checks, in a second and without running any mutant, that every catalogued mutation
still applies to the tree (code moves; a stale entry would silently stop testing anything), that
every system has its mutants and that the review's twelve are there. The slow set runs the mutants
of one system through the runner and requires every one killed."""

from __future__ import annotations

import pathlib

import pytest

from experiments import mutants

SYSTEMS = {"l3c", "cpm", "gc", "dplc", "understanding", "ban", "strassen", "ecg", "ssc", "greedy", "gan"}

# The twelve one-line bugs of the review that opened the mutation-suite issue (none was caught then).
REVIEW = {
    "cpm/rate-hinge-flipped", "cpm/context-blind-to-previous-channel",
    "l3c/decoder-ignores-coarser-features", "l3c/rgb-pyramid-nearest-neighbour",
    "ban/cwtm-is-plain-ban", "ban/dkpp-is-plain-ban", "ban/generations-taught-by-original-teacher",
    "ban/bane-is-the-teacher", "strassen/eval-uses-latent-weights",
    "ssc/mp-ignores-atom-norms", "greedy/nnmp-never-shrinks", "greedy/pairwise-no-zero-atom",
}


@pytest.fixture(scope="module")
def catalogue():
    return mutants.load_catalogue()


def test_every_mutation_applies_to_the_tree(catalogue):
    """Each entry's ``find`` occurs once (or at its ``occurrence``) in its file, the mutated file
    compiles, the listed test files exist and the named tests are in the default selection."""
    everything = [m for ms in catalogue.values() for m in ms]
    assert mutants.check(everything) == []


def test_every_system_has_mutants_and_the_review_twelve_are_in(catalogue):
    assert SYSTEMS <= set(catalogue), sorted(SYSTEMS - set(catalogue))
    short = {s: len(ms) for s, ms in catalogue.items() if len(ms) < 3}
    assert not short, f"systems with fewer than 3 mutants: {short}"
    keys = {m.key for ms in catalogue.values() for m in ms}
    assert REVIEW <= keys, sorted(REVIEW - keys)


def test_apply_refuses_ambiguous_or_missing_text():
    m = mutants.Mutant(system="s", id="x", file="f.py", find="a + b", replace="a - b", why="", tests=("t",))
    assert m.apply("y = a + b\n") == "y = a - b\n"
    with pytest.raises(ValueError, match="occurs 2 times"):
        m.apply("a + b; a + b")
    with pytest.raises(ValueError, match="occurs 0 times"):
        m.apply("a * b")
    second = mutants.Mutant(system="s", id="x", file="f.py", find="a + b", replace="a - b", why="", tests=("t",),
                            occurrence=2)
    assert second.apply("a + b; a + b") == "a + b; a - b"


def test_catalogue_errors_name_the_file_and_entry(tmp_path: pathlib.Path):
    (tmp_path / "sys.toml").write_text('tests = ["tests/t.py"]\n[[mutant]]\nid = "a"\nfile = "f.py"\nfind = "x"\n'
                                       'replace = "y"\nwhy = "w"\nfnid = "typo"\n')
    with pytest.raises(ValueError, match=r"sys.toml: mutant #1 \(a\): unknown keys \['fnid'\]"):
        mutants.load_catalogue(tmp_path)
    (tmp_path / "sys.toml").write_text('[[mutant]]\nid = "a"\n')
    with pytest.raises(ValueError, match="needs a `tests` list"):
        mutants.load_catalogue(tmp_path)
    (tmp_path / "sys.toml").write_text('tests = ["t"]\n[[mutant]]\nid = "a"\nfile = "f.py"\nfind = "x"\n'
                                       'replace = "y"\nwhy = "w"\n[[mutant]]\nid = "a"\nfile = "f.py"\nfind = "z"\n'
                                       'replace = "y"\nwhy = "w"\n')
    with pytest.raises(ValueError, match="duplicate mutant ids"):
        mutants.load_catalogue(tmp_path)


def test_check_names_tests_that_do_not_exist_or_the_default_run_leaves_out(tmp_path: pathlib.Path):
    """A mutant's named tests must be in the default selection the runner uses: a typo in a node id
    or a ``@pytest.mark.slow`` test (alone, in a slow class, or in a slow module) would leave the
    mutant unkillable; a parametrize whose slow cases are marked one by one keeps the others."""
    (tmp_path / "f.py").write_text("x = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import pytest\n\n\ndef test_fast():\n    pass\n\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n\n\n"
        "@pytest.mark.parametrize('n', [1, pytest.param(2, marks=pytest.mark.slow)])\ndef test_cases(n):\n    pass\n"
        "\n\n@pytest.mark.slow\nclass TestSlow:\n    def test_m(self):\n        pass\n"
        "\n\nclass TestMixed:\n    pytestmark = [pytest.mark.slow()]\n\n    def test_m(self):\n        pass\n"
        "\n\nclass TestFast:\n    def test_m(self):\n        pass\n\n    class TestInner:\n"
        "        @pytest.mark.slow()\n        def test_n(self):\n            pass\n")
    (tmp_path / "tests" / "test_b.py").write_text("import pytest\n\npytestmark = [pytest.mark.slow]\n\n\n"
                                                  "def test_any():\n    pass\n")

    def problems(*tests):
        m = mutants.Mutant(system="s", id="x", file="f.py", find="x = 1", replace="x = 2", why="", tests=tests)
        return mutants.check([m], root=tmp_path)

    assert problems("tests/test_a.py", "tests/test_a.py::test_fast", "tests/test_a.py::test_cases[1]",
                    "tests/test_a.py::test_cases[a::b]", "tests/test_a.py::TestFast::test_m",
                    "tests/test_a.py::TestFast") == []
    assert problems("tests/test_a.py::test_fats") == ["s/x: no test test_fats in tests/test_a.py"]
    assert problems("tests/test_a.py::TestFast::test_x") == ["s/x: no test TestFast::test_x in tests/test_a.py"]
    for slow in ("tests/test_a.py::test_slow", "tests/test_a.py::TestSlow::test_m", "tests/test_a.py::TestSlow",
                 "tests/test_a.py::TestMixed::test_m", "tests/test_a.py::TestFast::TestInner::test_n",
                 "tests/test_b.py::test_any"):
        (problem,) = problems(slow)
        assert problem.startswith(f"s/x: {slow} is marked slow"), problem


def test_summary_counts_and_lists_survivors():
    rows = [dict(key="a/1", system="a", why="w1", outcome="killed"),
            dict(key="a/2", system="a", why="w2", outcome="survived"),
            dict(key="b/1", system="b", why="w3", outcome="timeout")]
    text = mutants.summary(rows)
    assert "| a | 2 | 1 | 1 | 0 |" in text and "| b | 1 | 0 | 0 | 1 |" in text and "| **all** | 3 | 1 | 1 | 1 |" in text
    assert "`a/2` (survived): w2" in text and "`a/1`" not in text


@pytest.mark.slow
def test_runner_kills_every_mutant_of_the_gan_pieces(tmp_path):
    """End to end: the runner copies the project, plants each of the shared GAN pieces' mutants in
    turn and runs tests/test_gan.py; the unmutated baseline passes and every mutant is killed."""
    chosen = mutants.select(mutants.load_catalogue(), ["gan"])
    results = mutants.run(chosen, timeout=600, log=lambda _: None)
    assert [r["outcome"] for r in results] == ["killed"] * len(chosen), mutants.summary(results)
