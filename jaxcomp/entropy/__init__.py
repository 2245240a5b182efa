"""Probability models as pure JAX functions: training log-likelihoods and coding PMFs."""

from jaxcomp.entropy.logistic_mixture import (
    LOG_SCALES_MIN,
    MixtureParams,
    bin_log_prob,
    mixture_log_pmf,
    mixture_log_prob,
    mixture_pmf,
    mixture_pmf_window,
    split_mixture_params,
)

__all__ = [
    "LOG_SCALES_MIN", "MixtureParams", "bin_log_prob", "mixture_log_pmf", "mixture_log_prob", "mixture_pmf",
    "mixture_pmf_window", "split_mixture_params",
]
