"""Pooling: MaxPool, AveragePool, GlobalAveragePool."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
