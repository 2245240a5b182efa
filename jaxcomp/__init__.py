"""jaxcomp: learned compression, distillation and greedy optimisation in JAX/Flax.

Subpackages are imported lazily by the user (``import jaxcomp.codecs.l3c``) so that
``import jaxcomp`` stays cheap. Importing it selects XLA's own CPU convolutions when JAX
has not started yet (see :mod:`jaxcomp.xla`; opt out with ``JAXCOMP_KEEP_YNN=1``).
"""

from jaxcomp.xla import prefer_xla_cpu_convolutions as _prefer_xla_cpu_convolutions

_prefer_xla_cpu_convolutions()

__version__ = "0.1.0"
