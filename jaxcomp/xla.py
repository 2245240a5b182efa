"""XLA settings that measurably help on this project's hardware, applied before JAX starts."""

from __future__ import annotations

import os

# jaxlib 0.10 hands CPU convolutions to YNNPACK by default; on the 2-core x86 machines of
# this project XLA's own convolutions are ~1.5-1.9x faster for training (measured by
# experiments/bench_conv_gap.py and experiments/bench_train.py; see the README).
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="


def prefer_xla_cpu_convolutions() -> None:
    """Adds :data:`NO_YNN` to ``XLA_FLAGS`` unless the user set a YNN option or opted out.

    Must run before the first JAX computation. Opt out with ``JAXCOMP_KEEP_YNN=1``. Only for
    training: a codec's encoder and decoder must run with the *same* XLA settings.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXCOMP_KEEP_YNN") == "1" or "ynn" in flags:
        return
    os.environ["XLA_FLAGS"] = (flags + " " + NO_YNN).strip()
