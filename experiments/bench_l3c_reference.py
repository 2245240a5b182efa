"""Time a training step of the authors' L3C-PyTorch beside ours, in the same sitting.

    # a checkout of github.com/fab-jul/L3C-PyTorch and a Python with torch (CPU build is fine) and
    # the checkout's light dependencies (fjcommon, fasteners, matplotlib, pillow, scipy):
    python experiments/bench_l3c_reference.py --checkout ../L3C-PyTorch --batch 8 --steps 3
    # ours, the same network (configs/l3c.py:paper = the reference's cr.cf, E_in included):
    python -m experiments.bench_train --config configs/l3c.py:paper --override data.batch_size=8 --steps 3

This script runs in the *PyTorch* interpreter and imports nothing from jaxcomp. It builds the
reference's ``MultiscaleNetwork`` from ``src/configs/ms/cr.cf`` (parsed here: ``key = python
literal`` lines, dotted keys nested), draws a fixed ``uint8`` batch ``(B, 3, 128, 128)`` (timing does
not depend on the pixel values), and times the reference's training step (zero_grad, forward,
``losses.get``, bits per sub-pixel of the non-final scales, backward, RMSprop step; as
``MultiscaleTrainer.train_step``) — median of ``--steps`` after one warm-up — and then three phases:
forward alone (no grad), forward + loss (no grad), forward + loss + backward. torchvision, used by
the reference only for image summaries, is replaced by an inert stub. Prints one JSON line per
measurement. Nothing of the reference is copied into jaxcomp.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import sys
import time
import types


def parse_cf(path: str) -> dict:
    """The reference's ``.cf`` config as nested attribute dicts (``a.b = 1`` -> ``{"a": {"b": 1}}``)."""

    class NS(dict):
        __getattr__ = dict.__getitem__

    root = NS()
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if "=" not in line:
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            d = root
            *parents, leaf = key.split(".")
            for p in parents:
                d = d.setdefault(p, NS())
            d[leaf] = ast.literal_eval(value)
    return root


def _stub_torchvision() -> None:
    class Stub(types.ModuleType):
        def __getattr__(self, k):
            if k.startswith("__"):
                raise AttributeError(k)
            return Stub(f"{self.__name__}.{k}")

        def __call__(self, *a, **k):
            return None

    for name in ("torchvision", "torchvision.transforms", "torchvision.utils", "torchvision.transforms.functional"):
        m = Stub(name)
        m.__path__ = []
        sys.modules.setdefault(name, m)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", required=True, help="a checkout of fab-jul/L3C-PyTorch")
    parser.add_argument("--config", default="src/configs/ms/cr.cf", help="relative to the checkout")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    src = os.path.join(args.checkout, "src")
    cf = os.path.join(args.checkout, args.config)
    if not os.path.isfile(os.path.join(src, "modules", "multiscale_network.py")) or not os.path.isfile(cf):
        print(f"error: {args.checkout} is not a checkout of L3C-PyTorch (no src/modules/multiscale_network.py "
              f"or {args.config})", file=sys.stderr)
        return 2
    try:
        import numpy as np
        import torch
    except ImportError as e:
        print(f"error: this script runs in a Python with torch and numpy ({e})", file=sys.stderr)
        return 2
    _stub_torchvision()
    sys.path.insert(0, src)
    os.chdir(src)
    from modules.multiscale_network import MultiscaleNetwork

    torch.manual_seed(0)
    cfg = parse_cf(cf)
    net = MultiscaleNetwork(cfg)
    losses = net.get_losses()
    opt = torch.optim.RMSprop(net.parameters(), cfg.lr.initial, weight_decay=cfg.weight_decay)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args.batch, 3, args.crop, args.crop))
                         .astype(np.float32))

    def bpsp():
        costs, _, n = losses.get(net(x, 0))
        return sum(costs) / (np.log(2.0) * n)

    def step():
        net.zero_grad()
        loss = bpsp()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def timed(f, n):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(statistics.median(ts), 4)

    t0 = time.perf_counter()
    loss = step()
    first = time.perf_counter() - t0
    print(json.dumps(dict(impl="L3C-PyTorch", config=args.config, torch=torch.__version__,
                          threads=torch.get_num_threads(), batch=args.batch, crop=args.crop,
                          params=sum(p.numel() for p in net.parameters() if p.requires_grad),
                          first_s=round(first, 3), step_s=timed(step, args.steps), bpsp=round(loss, 3))))

    def forward():
        with torch.no_grad():
            net(x, 0)

    def forward_loss():
        with torch.no_grad():
            bpsp()

    def forward_loss_backward():
        net.zero_grad()
        bpsp().backward()

    print(json.dumps(dict(impl="L3C-PyTorch phases", forward_s=timed(forward, args.steps),
                          forward_loss_s=timed(forward_loss, args.steps),
                          forward_loss_backward_s=timed(forward_loss_backward, args.steps))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
