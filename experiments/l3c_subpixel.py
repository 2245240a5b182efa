"""Sub-pixel steps of L3C at CPU budget (issue 34 item 1): the helpers behind docs/l3c.md.

    # the shipped cpu_rgb model with zero-initialised sub-pixel heads (codes exactly as the shipped
    # model at step 0), as a .msgpack for --config.init_from
    python -m experiments.l3c_subpixel init --steps 4 --head light --out runs/l3c_subpixel/init_sp4_light.msgpack
    # validation bpsp vs steps of fine-tuning runs (their workdirs) -> a figure
    python -m experiments.l3c_subpixel plot runs/l3c_subpixel/ft_base runs/l3c_subpixel/ft_sp4_light \
        --out docs/figures/l3c_subpixel_curves.png
    # encode / decode seconds of a 512x512 photo crop (untrained heads on the shipped weights: timing only)
    python -m experiments.l3c_subpixel timing 1/light 4/light 4/shared

The fine-tuning runs themselves are plain ``experiments.train`` runs; the command is in docs/l3c.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np

from jaxcomp.codecs import l3c
from jaxcomp.codecs.pretrained import DEFAULT_L3C
from jaxcomp.data import load_image
from jaxcomp.modelfile import export_params, load_model
from jaxcomp.train import jit_init

SHIPPED_VALIDATION_BPSP = 3.898  # the shipped cpu_rgb model on the 203 validation tiles (README)


def _with_heads(spec: l3c.L3CSpec, params: dict) -> dict:
    """``params`` of a subpixel_steps=1 model completed with ``spec``'s fresh (zero-initialised) heads."""
    fresh = jit_init(l3c.L3C(spec).init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    return {k: ({**fresh[k], **params[k]} if k in params else fresh[k]) for k in fresh}


def cmd_init(args: argparse.Namespace) -> None:
    config, params, _ = load_model(DEFAULT_L3C, task="l3c")
    config.unlock()
    config.model.subpixel_steps, config.model.subpixel_head = args.steps, args.head
    merged = _with_heads(l3c.spec_from_config(config.model), params)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    export_params(merged, config, args.out, {"init": f"shipped model {DEFAULT_L3C} + zero-initialised sub-pixel heads"})
    print("wrote", args.out)


def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in args.runs:
        rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
        ev = [(0, SHIPPED_VALIDATION_BPSP)] + [(r["step"], r["bpsp"]) for r in rows if r["split"] == "eval"]
        tr = [(r["step"], r["bpsp"]) for r in rows if r["split"] == "train"]
        line, = ax.plot(*zip(*ev), "o-", label=os.path.basename(run.rstrip("/")) + " (validation)")
        if tr:
            ax.plot(*zip(*tr), ":", color=line.get_color(), alpha=0.6)
        print(run, "eval", ev)
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per subpixel")
    ax.set_title("Fine-tuning the shipped cpu_rgb L3C with and without sub-pixel steps\n"
                 "(validation tiles; dotted: the same training batches)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("wrote", args.out)


def cmd_timing(args: argparse.Namespace) -> None:
    imgs = [load_image(p)[:512, :512] for p in args.photos]
    base = l3c.load_codec()
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("init", help="shipped model + zero sub-pixel heads")
    a.add_argument("--steps", type=int, choices=(2, 4), required=True)
    a.add_argument("--head", choices=("light", "shared"), default="light")
    a.add_argument("--out", required=True)
    a.set_defaults(fn=cmd_init)
    a = sub.add_parser("plot", help="validation curves of fine-tuning runs")
    a.add_argument("runs", nargs="+")
    a.add_argument("--out", default=os.path.join("docs", "figures", "l3c_subpixel_curves.png"))
    a.set_defaults(fn=cmd_plot)
    a = sub.add_parser("timing", help="encode/decode seconds, variants as STEPS/HEAD")
    a.add_argument("variants", nargs="+")
    a.add_argument("--photos", nargs=2, default=[os.path.join("..", "shared", "data", "photos", n)
                                                 for n in ("Aqua.png", "Dune.png")])
    a.set_defaults(fn=cmd_timing)
    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
