"""Per-layer multiplications and additions of a StrassenNets config, without training or data.

  python -m experiments.strassen_counts --config configs/strassen.py:digits --workdir runs/counts
  python -m experiments.strassen_counts --config configs/strassen.py:digits --workdir runs/counts \\
      --config.strassen.hidden_ratio=2.0 --config.strassen.p=2
  python -m experiments.strassen_counts --config configs/strassen.py:paper_imagenet --workdir runs/counts_in --all

Counts per example (image or token) by the convention of jaxcomp/strassen/counting.py, from an
abstract model (shapes only: nothing is compiled, no data is read when the config gives
``model.input_shape``): multiplications with the batch-norm scales after SPN layers (which do not
fold into ternary weights), and without them. Writes op_counts.md into --workdir.

``--all``: one summary row per model of the config's experiment (full precision, TWN when
``experiment.twn``, SPN at each ``experiment.hidden_ratios``), written to summary.md.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from jaxcomp.configs import config_script_main
from jaxcomp.strassen.counting import count_ops, format_table, summarize
from jaxcomp.strassen.task import build_spn_model, example_input, lm_op_counts


def config_counts(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    """Per-layer counts ``[(layer, counts)]`` of one example of the model ``config`` describes."""
    if "strassen" not in config:
        raise ValueError("the config has no 'strassen' section (use configs/strassen.py)")
    if config.task == "lm":
        return lm_op_counts(config)
    x = jax.numpy.asarray(example_input(config))
    model = build_spn_model(config)
    return count_ops(model, jax.eval_shape(model.init, jax.random.PRNGKey(0), x), x, train=False)


def summary_rows(config: ml_collections.ConfigDict) -> list[tuple[str, object, dict]]:
    """``[(model, r / out, summarize(...))]`` for the models of ``config.experiment`` (counts only)."""
    out = []
    for name, enabled, mode, ratios in (("full precision", False, "spn", ("-",)),
                                        ("TWN", True, "twn", ("-",) if config.experiment.get("twn") else ()),
                                        ("SPN", True, "spn", tuple(config.experiment.hidden_ratios))):
        for ratio in ratios:
            c = ml_collections.ConfigDict(config.to_dict())
            c.strassen.update(enabled=enabled, mode=mode, hidden_ratio=1.0 if ratio == "-" else float(ratio))
            out.append((name, ratio, summarize(config_counts(c))))
    return out


def summary_table(config: ml_collections.ConfigDict) -> str:
    """Markdown: network and replaced-layer multiplications (with / without the BN scales) and additions."""
    lines = ["| model | r / out | muls in replaced layers | reduction | without BN: muls | without BN: reduction | "
             "network muls | network muls without BN | network adds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = summary_rows(config)
    fp_replaced = next((s["spn_fp_muls"] for name, _, s in rows if name != "full precision"), 0)
    for name, ratio, s in rows:
        replaced = name != "full precision"
        muls = s["spn_muls"] if replaced else fp_replaced  # full precision: those layers' own multiplications
        red = f"{100 * s['spn_mul_reduction']:.2f}%" if replaced else "-"
        red_nobn = f"{100 * s['spn_mul_reduction_without_bn']:.2f}%" if replaced else "-"
        lines.append(f"| {name} | {ratio} | {muls:,} | {red} | {muls - s['spn_bn_muls']:,} | {red_nobn} | "
                     f"{s['net_muls']:,} | {s['net_muls'] - s['net_bn_muls']:,} | {s['net_adds']:,} |")
    return "\n".join(lines)


def run(config, workdir: str, all_models: bool = False) -> str:
    rows = config_counts(config)
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
    if all_models:
        summary = summary_table(config)
        with open(os.path.join(workdir, "summary.md"), "w") as f:
            f.write(summary + "\n")
        table = summary
    return table


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/strassen.py:digits",
                              lambda config, workdir, all: run(config, workdir, all), argv, sections=("strassen",),
                              flags={"all": "one summary row per model of the config's experiment (summary.md)"})


if __name__ == "__main__":
    raise SystemExit(main())
