"""SSC-OMP / SSC-MP experiments: phase diagrams, s_max sensitivity, MNIST comparison.

  python -m experiments.cluster --config configs/ssc.py:synthetic --workdir runs/ssc
  python -m experiments.cluster --config configs/ssc.py:mnist --workdir runs/ssc_mnist \
      --config.data.num_points=2000

Writes a Markdown table, a CSV and PNG plots into --workdir and prints the table; first it writes
--workdir/config.txt (every setting). A workdir that holds results of other settings (another seed,
experiment or any other value but data.cache_dir; or results without a config.txt) is refused before
any work, naming the differing settings: use another --workdir (a run of the same settings reruns
there as before). experiments.ssc_aggregate and ssc_confusion read config.txt to refuse combining
runs of other settings.
"""

from __future__ import annotations

from jaxcomp.cluster.benchmarks import run
from jaxcomp.configs import config_script_main


def main(argv: list[str] | None = None) -> int:
    return config_script_main(__doc__, "configs/ssc.py:synthetic", run, argv, sections=("ssc",))


if __name__ == "__main__":
    raise SystemExit(main())
