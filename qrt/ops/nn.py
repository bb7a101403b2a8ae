"""Normalization: BatchNormalization, LayerNormalization; Pad."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
