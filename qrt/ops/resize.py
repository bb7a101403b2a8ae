"""Resize (nearest and linear)."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
