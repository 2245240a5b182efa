"""The project's conventions that a linter does not check: type hints on every public function."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jaxcomp"


def _public_functions(tree: ast.Module):
    """Module-level functions and the methods of module-level classes whose names are public."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from (n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def test_public_functions_have_type_hints():
    """Every public function and method of ``jaxcomp`` annotates its arguments (``self`` / ``cls``
    aside) and its return (``__init__`` aside). Ruff's ANN rules cannot be limited to public names,
    hence this scan."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for f in _public_functions(ast.parse(path.read_text(), str(path))):
            if f.name.startswith("_") and f.name != "__init__":
                continue
            args = f.args.posonlyargs + f.args.args + f.args.kwonlyargs
            bare = [a.arg for a in args if a.annotation is None and a.arg not in ("self", "cls")]
            if bare or (f.returns is None and f.name != "__init__"):
                what = f"arguments {bare}" if bare else "the return"
                missing.append(f"{path.relative_to(PACKAGE.parent)}:{f.lineno} {f.name}: {what}")
    assert len(list(PACKAGE.rglob("*.py"))) > 50  # the scan sees the package
    assert not missing, "public functions without type hints:\n" + "\n".join(missing)


def test_a_config_without_variant_is_its_default_variant():
    """``configs/X.py`` with no ``:VARIANT`` is ``get_config``'s default variant: cpm.py's no-variant config
    was once the paper hyperparameters without the paper variant's rule against training on the
    shipped (evaluation) photos, and three configs refused to load without a variant."""
    import inspect

    from jaxcomp.configs import config_module, load_config

    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    checked = []
    for path in sorted(root.glob("*.py")):
        module = config_module(str(path))
        params = inspect.signature(module.get_config).parameters
        if not params or next(iter(params.values())).default is inspect.Parameter.empty:
            continue
        default = next(iter(params.values())).default
        assert load_config(str(path)).to_json() == load_config(f"{path}:{default}").to_json(), path.name
        checked.append(path.name)
    assert {"cpm.py", "l3c.py", "dplc.py", "ssc.py"} <= set(checked)


def test_every_budget_key_takes_fractional_seconds():
    """Each driver's budget (``*.time_limit``) defaults to a float in every config that has one, so
    that an override such as ``540.5`` is accepted like the others (the understanding study's was an
    int: "expects int (default 0), got '540.5'", while the other drivers' took it)."""
    from jaxcomp.configs import load_config

    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    found = {}
    for path in sorted(root.glob("*.py")):
        config = load_config(str(path))
        for section in config.keys():
            if hasattr(config[section], "keys") and "time_limit" in config[section]:
                value = config[section]["time_limit"]
                found[f"{path.name}:{section}.time_limit"] = value
                loaded = load_config(str(path), [f"{section}.time_limit=540.5"])
                assert loaded[section]["time_limit"] == 540.5, (path.name, section)
    assert all(isinstance(v, float) for v in found.values()), found
    assert {"understanding.py:experiment.time_limit", "strassen.py:experiment.time_limit", "ban.py:ban.time_limit",
            "ecg.py:cv.time_limit", "dplc.py:sweep.time_limit", "dplc.py:generators.time_limit"} <= set(found)


def test_every_model_spec_takes_its_own_configs_and_names_another_tasks_keys():
    """Each codec's / classifier's ``spec_from_config`` builds from every variant of its config files,
    and refuses a ``config.model`` of another task by naming the foreign keys (DPLC's and ECG's
    once kept only the keys they knew: a GC model section built a DPLC generator silently)."""
    import importlib

    import pytest

    from jaxcomp.configs import ConfigError, config_module, load_config, variants

    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    builders = {"l3c.py": "jaxcomp.codecs.l3c", "cpm.py": "jaxcomp.codecs.cpm.model",
                "gc.py": "jaxcomp.codecs.gc.model", "dplc.py": "jaxcomp.codecs.dplc.model",
                "ecg.py": "jaxcomp.ecg.models"}
    models = {}
    for name, module in builders.items():
        build = importlib.import_module(module).spec_from_config
        known = variants(config_module(str(root / name)))
        assert len(known) >= 3, (name, known)
        for variant in known:
            build(load_config(f"{root / name}:{variant}").model)
        models[name] = (build, load_config(str(root / name)).model)
    for name, (build, _) in models.items():
        for other, (_, section) in models.items():
            if other != name:
                with pytest.raises(ConfigError, match=r"unknown config\.model keys for .*\(a config of another task"):
                    build(section)
