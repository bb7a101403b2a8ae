"""qrt's internal fused integer ops (domain 'qrt'), produced by the passes."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
