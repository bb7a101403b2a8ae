"""Tensor/shape ops: Constant, Identity, Cast, Shape, Reshape, Flatten, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Gather, Expand."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
