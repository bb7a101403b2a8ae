"""Elementwise math and comparisons: Add, Sub, Mul, Div, Pow, Sqrt, Equal, Where."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
