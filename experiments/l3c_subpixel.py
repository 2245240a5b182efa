"""Sub-pixel steps of L3C at CPU budget (issue 34 item 1): the helpers behind docs/l3c.md.

    # a 1-step RGB model (--base, default the cpu_rgb model shipped 2026-12-02 to 12-05) with
    # zero-initialised sub-pixel heads (codes exactly as that model at step 0, with its bicubic
    # pyramid), as a .msgpack for --config.init_from
    python -m experiments.l3c_subpixel init --steps 4 --head light --out runs/l3c_subpixel/init_sp4_light.msgpack
    # validation bpsp vs steps of fine-tuning runs (their workdirs) -> a figure
    python -m experiments.l3c_subpixel plot runs/l3c_subpixel/ft_base runs/l3c_subpixel/ft_sp4_light \
        --out docs/figures/l3c_subpixel_curves.png
    # encode / decode seconds of a 512x512 photo crop (untrained heads on the --base weights: timing only)
    python -m experiments.l3c_subpixel timing 1/light 4/light 4/shared
    # from-scratch runs, several seeds per design: mean +- std of validation bpsp per step, the
    # per-scale split at the last step and the paired (same seed) difference -> table and figure
    python -m experiments.l3c_subpixel curves --group "paper model" 'runs/l3c_scratch/sp1_s*' \
        --group "4 sub-pixel steps" 'runs/l3c_scratch/sp4_s*' --out docs/figures/l3c_scratch_curves.png \
        --table runs/l3c_scratch/curves.md

The training runs themselves are plain ``experiments.train`` runs; the commands are in docs/l3c.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import sys
import time

import jax
import numpy as np

from jaxcomp.codecs import l3c
from jaxcomp.codecs.pretrained import PRETRAINED_DIR
from jaxcomp.data import load_image
from jaxcomp.files import read_jsonl
from jaxcomp.modelfile import check_new_model_path, export_params, load_model
from jaxcomp.train import jit_init

# The paper-architecture RGB model the sub-pixel experiments start from: the one shipped from 2026-12-02
# to 2026-12-05 (bicubic pyramid, 1 step), and its bpsp on the 203 tiles of the 8 originals that
# validated it (the fine-tuning figure's step 0).
BASE_MODEL = os.path.join(PRETRAINED_DIR, "l3c_2026-12-02.msgpack")
BASE_VALIDATION_BPSP = 3.898


def _with_heads(spec: l3c.L3CSpec, params: dict) -> dict:
    """``params`` of a subpixel_steps=1 model completed with ``spec``'s fresh (zero-initialised) heads."""
    fresh = jit_init(l3c.L3C(spec).init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    return {k: ({**fresh[k], **params[k]} if k in params else fresh[k]) for k in fresh}


def _base(path: str) -> tuple:
    """``(config, params)`` of a 1-step L3C model to add sub-pixel heads to (a clear error otherwise)."""
    config, params, _ = load_model(path, task="l3c")
    if config.model.get("subpixel_steps", 1) != 1:
        raise ValueError(f"{path} already has {config.model.subpixel_steps} sub-pixel steps; give a 1-step model "
                         f"(--base, default {BASE_MODEL})")
    return config, params


def cmd_init(args: argparse.Namespace) -> None:
    check_new_model_path(args.out, args.force)
    config, params = _base(args.base)
    config.unlock()
    config.model.subpixel_steps, config.model.subpixel_head = args.steps, args.head
    merged = _with_heads(l3c.spec_from_config(config.model), params)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    export_params(merged, config, args.out, {"init": f"{args.base} + zero-initialised sub-pixel heads"})
    print("wrote", args.out)


def _eval_rows(run: str) -> tuple[int | None, dict[int, dict], dict[int, float]]:
    """(seed, {step: eval row}, {step: train bpsp}) of one ``experiments.train`` workdir; the seed
    is ``config.json``'s (None without one). A run still writing may end in a partial line: skipped."""
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise SystemExit(f"{run}: no metrics.jsonl (not an experiments.train workdir?)")
    rows = read_jsonl(path)
    evals = {r["step"]: r for r in rows if r.get("split") == "eval"}
    if not evals:
        raise SystemExit(f"{run}: no evaluation rows yet")
    if any("bpsp" not in r for r in evals.values()):
        raise SystemExit(f"{run}: its evaluation rows have no bpsp (an L3C run is needed; these hold "
                         f"{', '.join(sorted(next(iter(evals.values()))))})")
    train = {r["step"]: r["bpsp"] for r in rows if r.get("split") == "train" and "bpsp" in r}
    seed = None
    if os.path.isfile(os.path.join(run, "config.json")):
        with open(os.path.join(run, "config.json")) as f:
            seed = json.load(f).get("seed")
    return seed, evals, train


def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in args.runs:
        _, evals, train = _eval_rows(run)
        ev = [(0, args.step0)] + [(step, evals[step]["bpsp"]) for step in sorted(evals)]
        tr = sorted(train.items())
        line, = ax.plot(*zip(*ev), "o-", label=os.path.basename(run.rstrip("/")) + " (validation)")
        if tr:
            ax.plot(*zip(*tr), ":", color=line.get_color(), alpha=0.6)
        print(run, "eval", ev)
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per subpixel")
    ax.set_title("Fine-tuning the 2026-12-02 cpu_rgb L3C with and without sub-pixel steps\n"
                 "(validation tiles; dotted: the same training batches)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


def load_groups(groups: list[tuple[str, list[str]]]) -> list[tuple[str, list[str], list, list[int]]]:
    """``[(label, runs, [(seed, evals, train) per run], steps every run evaluated)]`` of groups of
    ``experiments.train`` workdirs (one run per seed); clear errors for a group without runs, a run
    without a seed, two runs of one seed, or runs with no evaluation step in common."""
    data = []
    for label, runs in groups:
        if not runs:
            raise SystemExit(f"group {label!r}: no runs")
        loaded = [_eval_rows(r) for r in runs]
        seeds = [s for s, _, _ in loaded]
        if None in seeds:
            raise SystemExit(f"group {label!r}: {runs[seeds.index(None)]} has no seed in a config.json")
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"group {label!r}: two runs with the same seed ({sorted(seeds)})")
        steps = sorted(set.intersection(*(set(e) for _, e, _ in loaded)))
        if not steps:
            raise SystemExit(f"group {label!r}: its runs share no evaluation step")
        data.append((label, runs, loaded, steps))
    return data


def summarize_groups(data: list[tuple[str, list[str], list, list[int]]]) -> str:
    """A markdown report of validation bpsp for :func:`load_groups`'s groups.

    Per group and evaluation step present in all its runs: mean +- sample std (ddof 1) over the
    runs; the per-scale split (``bpsp_s*``) at the last common step; and, for every later group,
    its difference to the first group at that step, paired by ``config.json``'s seed (seeds
    without a partner are left out and the count says so).
    """
    all_steps = sorted(set().union(*(set(d[3]) for d in data)))
    lines = ["| step | " + " | ".join(f"{d[0]} (n={len(d[1])})" for d in data) + " |",
             "|---" * (len(data) + 1) + "|"]
    for step in all_steps:
        cells = []
        for _, _, loaded, steps in data:
            if step not in steps:
                cells.append("")
                continue
            v = np.array([e[step]["bpsp"] for _, e, _ in loaded])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "| group | last step | bpsp per seed | per scale (mean) | paired difference to the first group |",
              "|---|---|---|---|---|"]
    base = {s: e for s, e, _ in data[0][2]}
    for i, (label, _, loaded, steps) in enumerate(data):
        last = steps[-1]
        per_seed = " / ".join(f"{e[last]['bpsp']:.3f} (seed {s})" for s, e, _ in sorted(loaded, key=lambda t: t[0]))
        keys = sorted(set.intersection(*({k for k in e[last] if k.startswith("bpsp_s")} for _, e, _ in loaded)))
        scales = ", ".join(f"{k[5:]}: {np.mean([e[last][k] for _, e, _ in loaded]):.3f}" for k in keys)
        diff = ""
        if i:
            d = np.array([e[last]["bpsp"] - base[s][last]["bpsp"] for s, e, _ in loaded
                          if s in base and last in base[s]])
            if len(d):
                diff = (f"{d.mean():+.3f} ± {d.std(ddof=1):.3f} over {len(d)} seeds" if len(d) > 1
                        else f"{d[0]:+.3f} (1 seed)") + f", better in {int((d < 0).sum())} of {len(d)}"
            else:
                diff = f"no run of the first group has this seed and step {last}"
        lines.append(f"| {label} | {last} | {per_seed} | {scales} | {diff} |")
    return "\n".join(lines) + "\n"


def cmd_curves(args: argparse.Namespace) -> None:
    if any(len(g) < 2 for g in args.group):
        raise SystemExit("--group takes a label and at least one workdir or pattern")
    groups = []
    for label, *pats in args.group:
        runs = set()
        for pattern in pats:
            found = [r for r in (glob.glob(pattern) or [pattern]) if os.path.isdir(r)]
            if not found:
                raise SystemExit(f"group {label!r}: {pattern!r} names no workdir")
            runs.update(os.path.normpath(r) for r in found)
        groups.append((label, sorted(runs)))
    data = load_groups(groups)
    report = summarize_groups(data)
    print(report)
    if args.table:
        with open(args.table, "w") as f:
            f.write(report)
    if not args.out:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, runs, loaded, steps in data:
        v = np.array([[e[s]["bpsp"] for s in steps] for _, e, _ in loaded])
        line, = ax.plot(steps, v.mean(0), "o-", label=f"{label} (validation, mean of {len(runs)})")
        ax.fill_between(steps, v.min(0), v.max(0), color=line.get_color(), alpha=0.2)
        tsteps = sorted(set.intersection(*(set(t) for _, _, t in loaded)))
        if tsteps:
            tv = np.array([[t[s] for s in tsteps] for _, _, t in loaded]).mean(0)
            ax.plot(tsteps, tv, ":", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per subpixel")
    ax.set_title(args.title + "\n(band: min-max over seeds; dotted: training batches, mean)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


def cmd_timing(args: argparse.Namespace) -> None:
    for variant in args.variants:
        if not re.fullmatch(r"(1|2|4)/(light|shared)", variant):
            raise ValueError(f"variant {variant!r}: give STEPS/HEAD with STEPS 1, 2 or 4 and HEAD light or shared, "
                             f"e.g. 4/light")
    imgs = [load_image(p)[:512, :512] for p in args.photos]
    config, params = _base(args.base)
    base = l3c.L3CCodec(l3c.spec_from_config(config.model), params)
    for variant in args.variants:
        steps, head = int(variant.split("/")[0]), variant.split("/")[1]
        if steps == 1:
            codec = base
        else:
            spec = dataclasses.replace(base.spec, subpixel_steps=steps, subpixel_head=head)
            codec = l3c.L3CCodec(spec, _with_heads(spec, dict(base.params)))
        t0 = time.perf_counter()
        codec.decompress(codec.compress(imgs[0]))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = codec.compress(imgs[1])
        enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = codec.decompress(data)
        dec = time.perf_counter() - t0
        if not np.array_equal(out, imgs[1]):
            raise SystemExit(f"{variant}: the decoded image differs from the original")
        print(variant, json.dumps(dict(first_call_s=first, encode_s=enc, decode_s=dec, bytes=len(data))), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("init", help="a 1-step model (--base) + zero sub-pixel heads")
    a.add_argument("--steps", type=int, choices=(2, 4), required=True)
    a.add_argument("--head", choices=("light", "shared"), default="light")
    a.add_argument("--base", default=BASE_MODEL, help="a 1-step model (.msgpack or workdir)")
    a.add_argument("--out", required=True, help="the model (.msgpack, its .json beside it)")
    a.add_argument("--force", action="store_true", help="replace an existing --out")
    a.set_defaults(fn=cmd_init)
    a = sub.add_parser("plot", help="validation curves of fine-tuning runs")
    a.add_argument("runs", nargs="+")
    a.add_argument("--out", required=True, help="the figure (.png)")
    a.add_argument("--step0", type=float, default=BASE_VALIDATION_BPSP,
                   help="validation bpsp of the starting model, drawn at step 0 (default: the 2026-12-02 model on "
                        "the tiles of the 8 originals; 4.065 on those of the 4 validation originals, "
                        "data.holdout=samples_val)")
    a.set_defaults(fn=cmd_plot)
    a = sub.add_parser("curves", help="mean +- std validation curves of groups of runs (seeds)")
    a.add_argument("--group", nargs="+", action="append", required=True, metavar="LABEL_THEN_RUNS",
                   help="a label, then workdirs or glob patterns (one run per seed)")
    a.add_argument("--out", default="", help="also draw the figure here (.png)")
    a.add_argument("--table", default="", help="also write the markdown report here")
    a.add_argument("--title", default="L3C from scratch at CPU budget, with and without sub-pixel steps")
    a.set_defaults(fn=cmd_curves)
    a = sub.add_parser("timing", help="encode/decode seconds, variants as STEPS/HEAD")
    a.add_argument("variants", nargs="+")
    a.add_argument("--base", default=BASE_MODEL, help="a 1-step model (.msgpack or workdir)")
    a.add_argument("--photos", nargs=2, default=[os.path.join("..", "shared", "data", "photos", n)
                                                 for n in ("Aqua.png", "Dune.png")])
    a.set_defaults(fn=cmd_timing)
    args = p.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, OSError) as e:  # a model, photo or run that is not what is needed, an --out taken
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
