"""Retrieval metrics for binary codes: pure functions on tensors, same code on CPU and CUDA."""
from .hamming import hamming_distance, as_pm1
from .ranking import mean_average_precision

__all__ = ["as_pm1", "hamming_distance", "mean_average_precision"]
