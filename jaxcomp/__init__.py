"""jaxcomp: learned compression, distillation and greedy optimisation in JAX/Flax.

Subpackages are imported lazily by the user (``import jaxcomp.codecs.l3c``) so that
``import jaxcomp`` stays cheap.
"""

__version__ = "0.1.0"
