"""The commands the README, the docs and the configs' docstrings quote still parse (``python -m
experiments.X`` and the ``jaxcomp`` command): every flag is one the script takes, every
``configs/X.py:VARIANT`` exists and every ``--config.a.b=v`` override names a key of that config with
a value of its type. Nothing runs: each script's argument parser is stopped
right after it parsed the quoted arguments."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pathlib
import re
import shlex
import sys

import pytest

from jaxcomp.configs import ConfigError, load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ["README.md", *(str(p.relative_to(REPO)) for folder, pattern in (
    ("docs", "*.md"), ("notebooks", "*.ipynb"), ("configs", "*.py"), ("experiments", "*.py"), ("jaxcomp", "**/*.py"),
    ("jaxcomp", "**/*.md")) for p in sorted((REPO / folder).glob(pattern)))]
CONFIG_SPEC = re.compile(r"^configs/\w+\.py(:\w+)?$")


def _commands_in(unit: str, shell: dict[str, str]) -> list[tuple[str, list[str]]]:
    """``(module, argv)`` of each ``python -m experiments.NAME ARGS`` (and ``jaxcomp compress ...``:
    ``jaxcomp.cli``) in the shell text ``unit``, with
    the shell's expansion: ``$NAME`` (a word of its own) is split on whitespace, as an unquoted variable
    is, and otherwise substituted (unknown names: ``0``, e.g. a loop's seed); usage brackets ``[--flag
    X]`` and ``<placeholders>`` are dropped (a lone ``...``, "and so on", is kept), ``eval`` re-reads
    its expansion, and the text is cut at a shell operator or comment. A bare name (prose naming the
    script) or text that is not shell syntax gives nothing."""
    text = re.sub(r"\[[^\]]*\]", " ", unit.replace("\n", " "))
    text = re.sub(r"<[^<>]*>", "PLACEHOLDER", text)
    text = re.split(r"\s(?:&&?|\|\|?|;|2?>>?)(?:\s|$)|\s&$|\s#", f" {text} ")[0]
    try:
        words = shlex.split(text)
    except ValueError:
        return []
    expanded = []
    for word in words:
        whole = re.fullmatch(r"\$\{?(\w+)\}?", word)
        if whole:
            expanded += shell.get(whole.group(1), "").split()
        else:
            expanded.append(re.sub(r"\$\{?(\w+)\}?", lambda v: shell.get(v.group(1), "0"), word))
    if expanded[:1] == ["eval"]:
        expanded = shlex.split(" ".join(expanded[1:]))
    found = []
    starts = {i: (expanded[i + 2], i + 3) for i in range(len(expanded) - 2) if expanded[i].endswith("python")
              and expanded[i + 1] == "-m" and expanded[i + 2].startswith("experiments.")}
    starts.update({i: ("jaxcomp.cli", i + 1) for i in range(len(expanded) - 1)  # the installed command
                   if expanded[i] == "jaxcomp" and expanded[i + 1] in ("compress", "decompress")})
    ends = sorted(starts)[1:] + [len(expanded)]
    for (_, (module, first)), j in zip(sorted(starts.items()), ends):
        if j > first:  # arguments follow the name
            found.append((module, expanded[first:j]))
    return found


def _logical_lines(span: str) -> list[tuple[int, str]]:
    """``(offset, line)`` of a shell block's logical lines: ``\\`` continuations joined, and a quoted
    value left open (``O='--config ...`` over two lines) continued on the next lines."""
    out, start, acc, pos = [], 0, "", 0
    for raw in span.split("\n"):
        if not acc:
            start = pos
        pos += len(raw) + 1
        acc = f"{acc} {raw.strip()}" if acc else raw
        if acc.endswith("\\"):
            acc = acc[:-1]
            continue
        try:
            shlex.split(acc, comments=True)
        except ValueError:
            if re.match(r"\s*(?:export\s+)?\w+=['\"]", acc) and len(acc) < 2000:
                continue
        out.append((start, acc))
        acc = ""
    return out + ([(start, acc)] if acc else [])


def _remember_variables(line: str, shell: dict[str, str]) -> None:
    """``NAME=value`` (its value as the shell stores it: quotes removed) and ``for NAME in A B ...``
    (``A``) of a shell line."""
    assignment = re.match(r"\s*(?:export\s+)?([A-Za-z_]\w*)=(\S.*)$", line)
    loop = re.match(r"\s*for\s+([A-Za-z_]\w*)\s+in\s+(\S+)", line)
    try:
        if assignment:
            shell[assignment.group(1)] = " ".join(shlex.split(assignment.group(2), comments=True))
        if loop:
            shell[loop.group(1)] = shlex.split(loop.group(2))[0]
    except ValueError:  # prose, not a shell line
        pass


def quoted_commands() -> list[tuple[str, int, str, list[str]]]:
    """``(file, line, module, argv)`` of every ``python -m experiments.NAME ARGS`` in :data:`SOURCES`:
    the lines of Markdown's fenced code blocks and of the configs' docstrings (with the blocks' shell
    variables), and inline code spans (single backticks in Markdown, double in Python), which may wrap."""
    found = []
    for name in SOURCES:
        text = (REPO / name).read_text()
        markdown = name.endswith((".md", ".ipynb"))
        if name.endswith(".ipynb"):  # the markdown and code cells (a code cell's "!python -m ..." too)
            cells = json.loads(text)["cells"]
            text = "\n\n".join("".join(c["source"]) if c["cell_type"] == "markdown"
                                 else "```\n" + "".join(c["source"]).replace("!python", "python") + "\n```"
                                 for c in cells)
        if not markdown:  # a docstring's "\\" is the shell's "\"
            text = text.replace("\\\\\n", "\\\n")
        spans = []  # (offset, text, read as shell lines)
        rest = text
        if markdown:  # fenced blocks first, blanked so that their backticks are not read as spans
            for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
                spans.append((m.start(1), m.group(1), True))
                rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
        tick = "`" if markdown else "``"
        for m in re.finditer(f"{tick}([^`]+?){tick}", rest):
            spans.append((m.start(1), m.group(1), False))
            rest = rest[:m.start()] + " " * (m.end() - m.start()) + rest[m.end():]
        if not markdown:
            spans.append((0, rest, True))
        for offset, span, lines in spans:
            shell: dict[str, str] = {}
            for at, unit in _logical_lines(span) if lines else [(0, span)]:
                if lines:
                    _remember_variables(unit, shell)
                line = text.count("\n", 0, offset + at) + 1
                found += [(name, line, module, argv) for module, argv in _commands_in(unit, shell)]
    return found


COMMANDS = quoted_commands()


class _Parsed(BaseException):  # a BaseException: a script's own ``except Exception`` does not catch it
    pass


class _Refused(BaseException):
    pass


def _parse_only(module_name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``argv`` through the script's own parser, stopped before the script runs anything; the parser's
    complaint fails the test, except a metavar quoted as the value (``--top-levels R``) and, for the
    ``jaxcomp`` command named in prose (``jaxcomp compress --codec cpm``), its positional arguments left
    out."""
    parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    def refuse(self, message):
        raise _Refused(message)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(argparse.ArgumentParser, "error", refuse)
    monkeypatch.setattr(sys, "argv", [module_name, *argv])
    main = importlib.import_module(module_name).main
    try:
        main(argv) if inspect.signature(main).parameters else main()
    except _Parsed:
        return
    except _Refused as refused:
        message = str(refused)
        if re.search(r"invalid \w+ value: '[A-Z]+'$", message):
            return
        if module_name == "jaxcomp.cli" and message.startswith("the following arguments are required: input"):
            return
        pytest.fail(f"{module_name} {' '.join(argv)}: the parser refused it: {message}")
    pytest.fail(f"{module_name} {' '.join(argv)}: returned without parsing its arguments")


def test_the_docs_quote_commands_of_every_kind():
    modules = {m for _, _, m, _ in COMMANDS}
    assert len(COMMANDS) > 200 and {"experiments.train", "experiments.cluster", "experiments.ecg_cv",
                                    "jaxcomp.cli"} <= modules


@pytest.mark.parametrize("where,line,module,argv", COMMANDS,
                         ids=[f"{w}:{n}:{m.split('.')[1]}" for w, n, m, _ in COMMANDS])
def test_a_quoted_command_parses(where, line, module, argv, monkeypatch, capsys):
    from jaxcomp import configs

    script = importlib.import_module(module)
    if "..." not in argv and getattr(script, "config_script_main", None) is configs.config_script_main:
        # a driver: its own command line, config (the quoted one or its default), overrides and sections,
        # stopped where it would start running
        def up_to_run(description, default_config, run, argv=None, sections=(), flags=None):
            return configs.config_script_main(description, default_config, lambda config, workdir, **_: "", argv,
                                              sections, flags)

        monkeypatch.setattr(script, "config_script_main", up_to_run)
        monkeypatch.chdir(REPO)
        status = script.main(argv)
        assert status == 0, f"{where}:{line}: {module} {' '.join(argv)}: {capsys.readouterr().err}"
        return
    if "..." not in argv:  # an abbreviated command ("--config X ..."): its config is checked, not its flags
        _parse_only(module, [a for a in argv if not a.startswith("--config.")], monkeypatch)
    overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
    overrides += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--override"]
    specs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config" and CONFIG_SPEC.match(argv[i + 1])]
    for spec in specs:
        try:
            load_config(str(REPO / spec), overrides)
        except (ConfigError, ValueError) as e:
            pytest.fail(f"{where}:{line}: {module} {' '.join(argv)}: {e}")


def test_every_config_variant_the_docs_name_exists():
    """``configs/X.py:VARIANT`` anywhere in the same sources (prose included) names a config file and a
    variant it declares (patterns such as ``paper_*`` or ``paper_{a,b}`` aside)."""
    from jaxcomp.configs import config_module, variants

    named = {}
    for name in SOURCES:
        for m in re.finditer(r"configs/(\w+)\.py:(\w+)(?![\w*{<\[])", (REPO / name).read_text()):
            if not m.group(2).isupper():  # configs/NAME.py:VARIANT: a placeholder
                named.setdefault(m.group(0), name)
    assert len(named) > 50
    wrong = []
    for spec, where in sorted(named.items()):
        path, variant = spec.split(":")
        if not (REPO / path).exists():
            wrong.append(f"{where}: {spec} (no such file)")
        elif variant not in variants(config_module(str(REPO / path))):
            wrong.append(f"{where}: {spec} (variants: {', '.join(variants(config_module(str(REPO / path))))})")
    assert not wrong, "\n".join(wrong)
