"""StrassenNets experiment (a): rediscover Strassen's 2x2 algorithm (r = 7); also r = 8 and r = 6.

  python -m experiments.strassen_matmul --config configs/strassen_matmul.py:paper --workdir runs/strassen_matmul

For each r: success rate over seeds (a seed = ``search.restarts`` parallel restarts, all in its
time), seconds per seed, and the best integer tensor error; prints the discovered algorithm as
products M1..Mr and outputs C11..C22, checked exactly (integer tensor identity and random integer
matrices). Writes results.md and results.json into --workdir; a --workdir holding results of other
settings is refused (use another, or move results.json aside).
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxcomp.checks import count, nonempty
from jaxcomp.configs import config_script_main
from jaxcomp.reporting import check_report_settings
from jaxcomp.strassen.matmul import MatmulSearch, describe_algorithm, make_search, run_seed, verify_on_integers


def run(config, workdir: str) -> str:
    nonempty(config.ranks, "ranks")
    count(config.seeds, "seeds")
    count(config.first_seed, "first_seed", minimum=0)  # after the search, as numpy's errors naming no key
    count(config.integer_trials, "integer_trials")
    check_report_settings(workdir, config)  # another rank's or seed count's rerun replaced the table
    os.makedirs(workdir, exist_ok=True)
    rows, report, records = [], [], []
    for r in config.ranks:
        spec = MatmulSearch(r=r, **config.search.to_dict())
        search = make_search(spec)
        start = time.perf_counter()
        search = search.lower(jax.random.PRNGKey(0)).compile()
        compile_s = time.perf_counter() - start
        results = []
        for seed in tqdm(range(config.first_seed, config.first_seed + config.seeds), desc=f"r={r}"):
            results.append(run_seed(search, spec, seed))
        exact = [x for x in results if x.exact]
        for x in exact:  # the tensor identity is a proof; the integer run is the demonstration asked for
            w = x.weights
            if not verify_on_integers(w["wa"], w["wb"], w["wc"], spec.n, spec.m, spec.k, config.integer_trials, x.seed):
                raise AssertionError(f"seed {x.seed}: exact tensor but wrong on integers (bug)")
        secs = np.array([x.seconds for x in results])
        best = min(results, key=lambda x: (x.best_error, x.best_relative_mse))
        rows.append(f"| {r} | {len(exact)}/{len(results)} | {sum(x.restarts_exact for x in results)}/"
                    f"{len(results) * spec.restarts} | {secs.mean():.1f} | {secs.max():.1f} | {compile_s:.1f} | "
                    f"{best.best_error} | {best.best_relative_mse:.4f} |")
        records.append(dict(r=r, seeds=len(results), exact_seeds=len(exact), seconds=secs.tolist(),
                            compile_seconds=compile_s, best_error=best.best_error,
                            best_relative_mse=best.best_relative_mse,
                            restarts_exact=[x.restarts_exact for x in results],
                            best_weights={k: v.tolist() for k, v in best.weights.items()}))
        title = f"r = {r}: " + (f"seed {best.seed}, exact on {config.integer_trials} random integer matrices"
                                if best.exact else f"best (seed {best.seed}), integer tensor error {best.best_error}")
        report += ["", title, *("    " + line for line in describe_algorithm(
            best.weights["wa"], best.weights["wb"], best.weights["wc"], spec.n, spec.m, spec.k))]
    table = "\n".join([
        f"{config.search.n}x{config.search.m} by {config.search.m}x{config.search.k} matrix multiplication, "
        f"{config.search.restarts} restarts x {config.search.steps} steps per seed ({jax.devices()[0].platform})",
        "",
        "| r | exact seeds | exact restarts | s/seed (mean) | s/seed (max) | compile s | best tensor error | "
        "best rel. MSE |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, *report])
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(dict(config=config.to_dict(), results=records), f, indent=1)
    return table


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/strassen_matmul.py:paper", run, argv, sections=("search", "ranks"))


if __name__ == "__main__":
    raise SystemExit(main())
