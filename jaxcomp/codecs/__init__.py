"""Complete compression systems, one module each (``jaxcomp.codecs.l3c``, ...)."""
