"""Loading experiment configs: ``configs/NAME.py:VARIANT`` plus ``key.path=value`` overrides.

A config file defines ``get_config(variant: str) -> ml_collections.ConfigDict``. Every
number that changes a result lives there; command lines and notebooks only override.
Errors name the problem (unknown variant, unknown key, unparsable value) instead of
surfacing deep inside the code that later reads the config.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import inspect
import os
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A config spec, variant, key or value that cannot be used."""


def config_module(path: str) -> types.ModuleType:
    """The Python module of a config file (its ``get_config``, ``VARIANTS`` and helpers)."""
    return _module_from_file(path)


def _module_from_file(path: str):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r}")
    name = "jaxcomp_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} defines no get_config(variant)")
    return module


def variants(module: types.ModuleType) -> tuple[str, ...]:
    """The named variants a config module declares in ``VARIANTS`` (may be empty)."""
    return tuple(getattr(module, "VARIANTS", ()))


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:variant]`` and applies ``a.b=value`` overrides.

    Args:
      spec: a config file path, optionally followed by ``:variant``.
      overrides: strings ``dotted.key=value``; values are parsed as Python literals
        when possible (``1e-3``, ``(64, 64)``, ``True``), else kept as strings.

    Returns:
      The config, locked so that a typo in a later attribute access raises.

    Raises:
      ConfigError: unknown file, variant or key, or a value of the wrong type.
    """
    path, _, variant = spec.partition(":")
    module = _module_from_file(path)
    known = variants(module)
    if known and variant and variant not in known:
        raise ConfigError(f"{path} has no variant {variant!r}; known variants: {', '.join(known)}")
    params = inspect.signature(module.get_config).parameters
    if variant:
        config = module.get_config(variant)
    elif params and next(iter(params.values())).default is inspect.Parameter.empty:
        config = module.get_config("")
    else:  # no variant: get_config's own default (configs/cpm.py's "" once skipped its paper data rule)
        config = module.get_config()
    if variant and not params:
        raise ConfigError(f"{path} takes no variant but {variant!r} was given")
    config = apply_overrides(config, overrides)
    config.lock()
    return config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, prefix + key + "."))
    return keys


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Returns a copy of ``config`` with ``dotted.key=value`` overrides applied.

    Unknown keys raise :class:`ConfigError` with the closest known keys; a value whose
    type does not match the default (an int where a string is expected, ...) too.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().removeprefix("--config.").removeprefix("config.")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
            if not isinstance(child, ml_collections.ConfigDict):
                raise _unknown_key(config, ".".join(parents[: i + 1]))
            node = child
        if leaf not in node:
            raise _unknown_key(config, key)
        old = node[leaf]
        value = _parse_value(text)
        if old is not None and not isinstance(value, type(old)):
            if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif isinstance(old, str):
                value = text
            elif isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
                value = type(old)(value)
            elif isinstance(old, ml_collections.ConfigDict):  # a whole section: name its keys, not its dump
                names = sorted(old.keys()) or ["KEY"]
                raise ConfigError(f"config key {key!r} is a section (keys {', '.join(names)}); set one of its "
                                  f"keys, e.g. {key}.{names[0]}=..., got {text!r}")
            else:
                raise ConfigError(
                    f"config key {key!r} expects {type(old).__name__} (default {old!r}), got {text!r}"
                )
        node[leaf] = value
    return config


def _unknown_key(config: ml_collections.ConfigDict, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(config), n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"config has no key {key!r}{hint}")


def spec_from_section(cls: type, section: ml_collections.ConfigDict, name: str, where: str = "config.model",
                      others: Iterable[str] = ()) -> Any:
    """``cls(**section)`` for a dataclass spec (lists become tuples); keys ``cls`` does not have are a
    :class:`ConfigError` naming them, the section ``where`` and ``name`` (a config of another task,
    ``--config.task`` changed, gave a ``TypeError`` traceback). ``others``: keys of the section that
    other code reads (accepted, not passed to ``cls``)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    others = set(others)
    unknown = sorted(set(section.keys()) - fields - others)
    if unknown:
        raise ConfigError(f"unknown {where} keys for {name}: {unknown} (a config of another task?); known: "
                          f"{sorted(fields | others)}")
    return cls(**{k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in section.items() if k in fields})


def canonical_json(config: ml_collections.ConfigDict, exclude: Iterable[str] = ()) -> str:
    """Every setting of ``config`` but the dotted keys in ``exclude``, as JSON with sorted keys
    (the text :func:`config_digest` hashes; the same config always gives the same text)."""
    import json

    return json.dumps(settings_without(config, exclude), sort_keys=True, default=str)


def settings_without(config: ml_collections.ConfigDict, keys: Iterable[str]) -> dict:
    """``config.to_dict()`` without the dotted ``keys`` (those absent are skipped)."""
    settings = config.to_dict()
    for key in keys:
        *parents, last = key.split(".")
        node = settings
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return settings


def config_digest(config: ml_collections.ConfigDict, exclude: Iterable[str] = ()) -> str:
    """A short hash (16 hex digits) of every setting of ``config`` but the dotted keys in
    ``exclude``: cached results record it, so that results of other settings are not taken for
    this config's."""
    import hashlib

    return hashlib.sha256(canonical_json(config, exclude).encode()).hexdigest()[:16]


def split_cli_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Splits ``--config.a.b=v`` / ``--config.a.b v`` arguments from the rest of ``argv``."""
    overrides, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" in arg:
                overrides.append(arg[len("--config."):])
            elif i + 1 < len(argv):
                overrides.append(arg[len("--config."):] + "=" + argv[i + 1])
                i += 1
            else:
                raise ConfigError(f"override {arg!r} has no value")
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def config_script_main(description: str, default_config: str, run: Callable[[ml_collections.ConfigDict, str], Any],
                       argv: Sequence[str] | None = None, sections: Sequence[str] = (),
                       flags: Mapping[str, str] | None = None) -> int:
    """Entry point of an experiment script: ``--config FILE:VARIANT --workdir DIR [--config.k=v ...]``.

    Loads the config, calls ``run(config, workdir)`` and prints what it returns. ``sections``: the
    config sections the script reads (``("cv",)`` for the ECG drivers); a config without one (another
    system's config, a trainer-only variant) is refused naming it, not an ``AttributeError``. Config and
    input errors (``ValueError`` and subclasses, ``OSError`` such as a missing file or a workdir
    that is a file) are printed as one ``error:`` line with exit status 2 instead of a traceback.
    A run stopped by its time limit (:class:`jaxcomp.deadline.OutOfTime`) prints one ``stopped:``
    line on stderr and exits with status 0, as ``experiments/train.py --time-limit`` does. ``flags``:
    the script's own on/off options, ``{name: help}`` (``--name`` on the command line, listed by
    ``--help``), passed to ``run`` as keyword arguments ``name=True/False``.
    """
    import argparse
    import sys

    from jaxcomp.deadline import OutOfTime

    try:
        overrides, rest = split_cli_overrides(sys.argv[1:] if argv is None else list(argv))
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--config", default=default_config, help="configs/NAME.py:VARIANT")
        parser.add_argument("--workdir", required=True, help="output directory")
        for name, text in (flags or {}).items():
            parser.add_argument(f"--{name}", action="store_true", help=text)
        args = parser.parse_args(rest)
        config = load_config(args.config, overrides)
        missing = [name for name in sections if name not in config]
        if missing:
            raise ConfigError(f"{args.config} is not a config for this script: it has no {', '.join(missing)} "
                              f"section ({default_config} has one)")
        result = run(config, args.workdir, **{name: getattr(args, name) for name in (flags or {})})
    except OutOfTime as e:
        print(f"stopped: {e}; run the same command to continue (finished models are kept)", file=sys.stderr)
        return 0
    except (ValueError, OSError) as e:  # OSError: e.g. a workdir that is a file, a folder not writable
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result)
    return 0
