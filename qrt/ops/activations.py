"""Activations: Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Erf, Gelu, Softmax."""
import numpy as np

from qrt.ops.registry import REQUIRED, register  # noqa: F401
