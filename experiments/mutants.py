"""Mutation suite: plant one-line bugs, one at a time, and check that the tests catch each.

    python -m experiments.mutants                      # every system (tens of minutes on 2 cores)
    python -m experiments.mutants --system cpm ban     # some systems
    python -m experiments.mutants --id cpm/rate-hinge-flipped
    python -m experiments.mutants --list               # the catalogue, nothing run
    python -m experiments.mutants --check              # each mutation still applies (seconds)

The catalogue is ``tests/mutants/<system>.toml``: a ``tests`` list (the system's test files) and
``[[mutant]]`` tables with ``id``, ``file`` (relative to the project), ``find`` (text that must occur
exactly once in the file, or ``occurrence``-th of several), ``replace``, ``why`` (the bug it plants) and
optional ``tests`` (a narrower or wider selection; pytest node ids). Each mutant is applied to a
temporary copy of the project (never to this tree), whose ``shared/`` data is the real one, and that
system's tests run there (``pytest -x``, default markers, one process). A mutant is **killed** when a
test fails, **survived** when all pass, **timeout** when the tests exceed ``--timeout`` and **error**
when pytest could not run them (a collection or usage error: a broken catalogue entry). Before its
mutants, each system's tests run once unmutated (``--no-baseline`` skips it); a system whose baseline
fails is reported and its mutants skipped, since a kill would mean nothing.

The report goes to ``runs/mutants/report.json`` (per mutant: outcome, the first failing test, seconds)
and ``runs/mutants/summary.md`` (the per-system counts quoted in the README).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "tests" / "mutants"
_SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info", ".whl", ".devdata",
                               ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints")


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: in ``file`` the ``occurrence``-th ``find`` becomes ``replace``."""

    system: str
    id: str
    file: str
    find: str
    replace: str
    why: str
    tests: tuple[str, ...]
    occurrence: int = 0  # 0: ``find`` must be unique in the file; k >= 1: its k-th occurrence

    @property
    def key(self) -> str:
        return f"{self.system}/{self.id}"

    def apply(self, text: str) -> str:
        """The file's text with this mutation; ``ValueError`` naming the entry if it does not apply."""
        n = text.count(self.find)
        if self.occurrence == 0 and n != 1:
            raise ValueError(f"mutant {self.key}: `find` occurs {n} times in {self.file} (must be exactly once, "
                             "or give `occurrence`)")
        if self.occurrence > n:
            raise ValueError(f"mutant {self.key}: `find` occurs {n} times in {self.file}, "
                             f"occurrence {self.occurrence} asked")
        if self.find == self.replace:
            raise ValueError(f"mutant {self.key}: `replace` equals `find`")
        k = max(self.occurrence, 1)
        start = -1
        for _ in range(k):
            start = text.index(self.find, start + 1)
        return text[:start] + self.replace + text[start + len(self.find):]


def _toml(path: pathlib.Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as e:
            raise SystemExit("the mutation catalogue is TOML: needs Python >= 3.11 or `pip install tomli`") from e
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from e


_ENTRY_KEYS = {"id", "file", "find", "replace", "why", "tests", "occurrence"}


def load_catalogue(directory: pathlib.Path = CATALOGUE) -> dict[str, list[Mutant]]:
    """``{system: [Mutant]}`` from ``directory/<system>.toml``; unknown keys and missing fields are errors."""
    out: dict[str, list[Mutant]] = {}
    for path in sorted(directory.glob("*.toml")):
        data = _toml(path)
        system = path.stem
        unknown = set(data) - {"tests", "mutant"}
        if unknown:
            raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)} (allowed: tests, mutant)")
        tests = tuple(data.get("tests", ()))
        if not tests:
            raise ValueError(f"{path}: needs a `tests` list (the system's test files)")
        entries = []
        for i, m in enumerate(data.get("mutant", [])):
            bad = set(m) - _ENTRY_KEYS
            missing = {"id", "file", "find", "replace", "why"} - set(m)
            if bad or missing:
                raise ValueError(f"{path}: mutant #{i + 1} ({m.get('id', '?')}): "
                                 f"unknown keys {sorted(bad)}, missing {sorted(missing)}")
            entries.append(Mutant(system=system, id=m["id"], file=m["file"], find=m["find"], replace=m["replace"],
                                  why=m["why"], tests=tuple(m.get("tests", tests)),
                                  occurrence=int(m.get("occurrence", 0))))
        ids = [m.id for m in entries]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"{path}: duplicate mutant ids {sorted(dup)}")
        out[system] = entries
    return out


def check(mutants: list[Mutant], root: pathlib.Path = ROOT) -> list[str]:
    """Problems with the catalogue against the tree at ``root`` (empty when every mutant applies)."""
    problems = []
    for m in mutants:
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.key}: no file {m.file}")
            continue
        try:
            new = m.apply(path.read_text())
        except ValueError as e:
            problems.append(str(e))
            continue
        if path.suffix == ".py":
            try:
                compile(new, str(path), "exec")
            except SyntaxError as e:
                problems.append(f"{m.key}: the mutated {m.file} does not compile ({e.msg}, line {e.lineno})")
        for t in m.tests:
            file, _, name = t.partition("::")
            if not (root / file).exists():
                problems.append(f"{m.key}: no test file {file}")
            elif name:
                found = _default_tests(root / file)
                test = name.split("[", 1)[0]  # a parametrize id may hold "::"
                if test not in found:
                    problems.append(f"{m.key}: no test {test} in {file}")
                elif not found[test]:
                    problems.append(f"{m.key}: {t} is marked slow: the default selection the runner uses "
                                    "leaves it out, so the mutant could never be killed")
    return problems


@functools.cache
def _default_tests(path: pathlib.Path) -> dict[str, bool]:
    """The tests of a test file as node-id names (``test_f``, ``TestC``, ``TestC::test_m``, nested
    classes too), each with whether the default selection (``-m 'not slow'``) keeps it: not when it,
    a class around it or the module is marked slow (``@pytest.mark.slow``, ``pytestmark``). Slow
    cases of a parametrize, marked one by one, are not seen: the function counts as kept."""
    import ast

    slow_mark = re.compile(r"(^|\.)mark\.slow(\(\))?$")

    def marked(node) -> bool:
        decorators = getattr(node, "decorator_list", [])
        if any(slow_mark.search(ast.unparse(d)) for d in decorators):
            return True
        for n in getattr(node, "body", []):  # ``pytestmark = ...`` in a module or class body
            target = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
            if any(getattr(t, "id", "") == "pytestmark" for t in target) and n.value is not None and any(
                    slow_mark.search(ast.unparse(e)) for e in getattr(n.value, "elts", [n.value])):
                return True
        return False

    out: dict[str, bool] = {}

    def visit(body, prefix: str, slow: bool) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                out[prefix + node.name] = not (slow or marked(node))
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                inner = slow or marked(node)
                out[prefix + node.name] = not inner
                visit(node.body, f"{prefix}{node.name}::", inner)

    tree = ast.parse(path.read_text())
    visit(tree.body, "", marked(tree))
    return out


def _copy_project(dest: pathlib.Path) -> pathlib.Path:
    """A copy of the project at ``dest/<name>``, with the real ``shared/`` beside it (tests find data there)."""
    work = dest / ROOT.name
    shutil.copytree(ROOT, work, ignore=_SKIP, symlinks=True)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared, target_is_directory=True)
    return work


def _env(work: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(work) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # conftest makes a fresh one per run
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def run_tests(work: pathlib.Path, tests: tuple[str, ...], timeout: float) -> tuple[str, str, float, str]:
    """``(outcome, first failing test, seconds, output tail)`` for ``pytest -x`` on ``tests`` in ``work``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-n", "0", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=_env(work), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", "", time.perf_counter() - t0, out[-2000:]
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    failed = _FAILED.findall(out)
    outcome = {0: "survived", 1: "killed"}.get(proc.returncode, "error")
    return outcome, (failed[0] if failed else ""), seconds, out[-2000:]


def _progress(msg: str) -> None:
    print(msg, flush=True)


def run(mutants: list[Mutant], timeout: float = 900.0, baseline: bool = True,
        log=_progress) -> list[dict]:
    """Run each mutant against its tests in a temporary copy of the project; one result dict each."""
    problems = check(mutants)
    if problems:
        raise SystemExit("the catalogue does not apply to this tree:\n  " + "\n  ".join(problems))
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="jaxcomp-mutants-") as tmp:
        work = _copy_project(pathlib.Path(tmp))
        probe = subprocess.run([sys.executable, "-c", "import jaxcomp; print(jaxcomp.__file__)"], cwd=work,
                               env=_env(work), capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(work)):
            raise SystemExit(f"the copy's jaxcomp is not the one imported ({probe.stdout.strip() or probe.stderr}); "
                             "mutants would run against the original tree")
        broken: set[str] = set()
        if baseline:
            for system in dict.fromkeys(m.system for m in mutants):
                tests = next(m.tests for m in mutants if m.system == system)
                outcome, first, sec, tail = run_tests(work, tests, timeout)
                log(f"baseline {system:14s} {'pass' if outcome == 'survived' else 'FAIL ' + first} ({sec:.0f} s)")
                if outcome != "survived":
                    broken.add(system)
                    log(tail)
        n = len(mutants)
        for i, m in enumerate(mutants):
            if m.system in broken:
                results.append(dict(key=m.key, system=m.system, why=m.why, outcome="skipped (baseline fails)",
                                    test="", seconds=0.0))
                continue
            path = work / m.file
            original = path.read_text()
            path.write_text(m.apply(original))
            try:
                outcome, first, sec, tail = run_tests(work, m.tests, timeout)
            finally:
                path.write_text(original)
            results.append(dict(key=m.key, system=m.system, why=m.why, outcome=outcome, test=first,
                                seconds=round(sec, 1), **({"tail": tail} if outcome == "error" else {})))
            log(f"[{i + 1}/{n}] {m.key:48s} {outcome:8s} {first} ({sec:.0f} s)")
    return results


def summary(results: list[dict]) -> str:
    """A markdown table of killed/total per system, and the survivors with the bug each plants."""
    systems = dict.fromkeys(r["system"] for r in results)
    lines = ["| system | mutants | killed | survived | other |", "|---|---:|---:|---:|---:|"]
    for s in systems:
        rs = [r for r in results if r["system"] == s]
        k = sum(r["outcome"] == "killed" for r in rs)
        sv = sum(r["outcome"] == "survived" for r in rs)
        lines.append(f"| {s} | {len(rs)} | {k} | {sv} | {len(rs) - k - sv} |")
    tot = len(results)
    k = sum(r["outcome"] == "killed" for r in results)
    sv = sum(r["outcome"] == "survived" for r in results)
    lines.append(f"| **all** | {tot} | {k} | {sv} | {tot - k - sv} |")
    rest = [r for r in results if r["outcome"] != "killed"]
    if rest:
        lines += ["", "Not killed:"] + [f"- `{r['key']}` ({r['outcome']}): {r['why']}" for r in rest]
    return "\n".join(lines) + "\n"


def select(catalogue: dict[str, list[Mutant]], systems: list[str] | None = None,
           ids: list[str] | None = None) -> list[Mutant]:
    """The mutants of ``systems`` (all when None), narrowed to ``ids`` (``system/id``) when given."""
    unknown = set(systems or ()) - set(catalogue)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; the catalogue has {sorted(catalogue)}")
    chosen = [m for s in (systems or catalogue) for m in catalogue[s]]
    if ids:
        known = {m.key for m in chosen}
        missing = set(ids) - known
        if missing:
            raise SystemExit(f"unknown mutant ids {sorted(missing)} (ids are system/id; see --list)")
        chosen = [m for m in chosen if m.key in ids]
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--system", nargs="*", help="systems to run (tests/mutants/<system>.toml); default all")
    p.add_argument("--id", nargs="*", help="single mutants, as system/id")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument("--check", action="store_true", help="check that every mutation applies, run nothing")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per test run (default 900)")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each system's tests")
    p.add_argument("--out", default="runs/mutants", help="report folder (default runs/mutants)")
    a = p.parse_args(argv)
    catalogue = load_catalogue()
    systems = a.system or ([i.split("/")[0] for i in a.id] if a.id else None)
    mutants = select(catalogue, systems and list(dict.fromkeys(systems)), a.id)
    if a.list:
        for m in mutants:
            print(f"{m.key:48s} {m.file}: {m.why}")
        print(f"{len(mutants)} mutants in {len({m.system for m in mutants})} systems")
        return 0
    if a.check:
        problems = check(mutants)
        print("\n".join(problems) if problems else f"all {len(mutants)} mutants apply")
        return 1 if problems else 0
    results = run(mutants, timeout=a.timeout, baseline=not a.no_baseline)
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    try:  # keep the other systems' rows from earlier runs
        old = {r["key"]: r for r in json.loads((out / "report.json").read_text())["results"]}
    except (OSError, ValueError, KeyError, TypeError):
        old = {}
    merged = {**old, **{r["key"]: r for r in results}}
    order = [m.key for s in catalogue.values() for m in s]
    rows = [merged[k] for k in order if k in merged]
    (out / "report.json").write_text(json.dumps({"results": rows}, indent=1))
    text = summary(rows)
    (out / "summary.md").write_text(text)
    print("\n" + summary(results))
    return 0 if all(r["outcome"] == "killed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
