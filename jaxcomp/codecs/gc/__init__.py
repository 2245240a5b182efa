"""GC: generative compression at extreme rates (Agustsson et al., ICCV 2019).

``model``: E, the 5-level quantizer, G and the factorized prior; ``task``: training as a two-player
task of the one trainer; ``codec``: real bitstreams (constriction) through the shared container.
"""

from jaxcomp.codecs.gc.codec import CHECKPOINTS, GCCodec, load_codec, shipped_model
from jaxcomp.codecs.gc.model import (
                                     FACTOR,
                                     GC,
                                     LEVELS,
                                     GCSpec,
                                     centers,
                                     check_generator_params,
                                     prior_bits,
                                     spec_from_config,
)
from jaxcomp.codecs.gc.task import GCTask

__all__ = [
    "CHECKPOINTS", "FACTOR", "GC", "LEVELS", "GCCodec", "GCSpec", "GCTask", "centers", "check_generator_params",
    "load_codec", "prior_bits", "shipped_model", "spec_from_config",
]
