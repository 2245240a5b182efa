"""Per-layer multiplications and additions of a StrassenNets config, without training.

  python -m experiments.strassen_counts --config configs/strassen.py:digits --workdir runs/counts
  python -m experiments.strassen_counts --config configs/strassen.py:digits --workdir runs/counts \\
      --config.strassen.hidden_ratio=2.0 --config.strassen.p=2

Counts per example (image or token) by the convention of jaxcomp/strassen/counting.py, from an
abstract model (shapes only: nothing is compiled): multiplications with the batch-norm scales after
SPN layers (which do not fold into ternary weights), and without them. Writes op_counts.md into
--workdir.
"""

from __future__ import annotations

import os

import jax

from jaxcomp import tasks
from jaxcomp.configs import config_script_main
from jaxcomp.strassen.counting import count_ops, format_table, summarize
from jaxcomp.strassen.task import build_spn_model, lm_op_counts


def run(config, workdir: str) -> str:
    if "strassen" not in config:
        raise ValueError("the config has no 'strassen' section (use configs/strassen.py)")
    if config.task == "lm":
        rows = lm_op_counts(config)
    else:
        data = tasks.build_data(config, "classification")
        x = jax.numpy.asarray(data.train_batch(0)["image"][:1])
        model = build_spn_model(config)
        rows = count_ops(model, jax.eval_shape(model.init, jax.random.PRNGKey(0), x), x, train=False)
    table = format_table(rows)
    s = summarize(rows)
    if not s["spn_layers"]:
        table += f"\n\nNo SPN layers (full precision): {s['net_muls']:,} multiplications."
    else:
        table += (f"\n\nSPN layers: {s['spn_layers']}, multiplications {s['spn_muls']:,} vs {s['spn_fp_muls']:,} "
                  f"in full precision ({100 * s['spn_mul_reduction']:.2f}% fewer); whole network "
                  f"{100 * s['net_mul_reduction']:.2f}% fewer.")
    if s["spn_bn_muls"]:
        table += (f"\nWithout the {s['spn_bn_muls']:,} multiplications of the batch-norm scales after SPN layers "
                  f"(they do not fold into ternary weights): {s['spn_muls'] - s['spn_bn_muls']:,} "
                  f"({100 * s['spn_mul_reduction_without_bn']:.2f}% fewer); whole network "
                  f"{100 * s['net_mul_reduction_without_bn']:.2f}% fewer.")
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "op_counts.md"), "w") as f:
        f.write(table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/strassen.py:digits", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
