"""DPLC: distribution-preserving lossy compression (Tschannen, Agustsson & Lucic, NeurIPS 2018).

``model``: G, F, E, B and the critic; ``task``: the generative model (WGAN-GP, WAE, Wasserstein++)
and the rate-constrained encoder with a frozen G (and the baselines) as two-player tasks of the one
trainer; ``codec``: real bitstreams through the shared container.
"""

from jaxcomp.codecs.dplc.model import DPLCSpec, spec_from_config
from jaxcomp.codecs.dplc.task import DPLCGeneratorTask, DPLCTask

__all__ = ["DPLCGeneratorTask", "DPLCSpec", "DPLCTask", "spec_from_config"]
