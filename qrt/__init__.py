"""qrt: a small, fast INT8 inference runtime for ONNX models."""
from qrt.errors import (  # noqa: F401
    InvalidFeedError,
    InvalidQuantParamsError,
    ModelLoadError,
    NodeExecutionError,
    QrtError,
    UnsupportedOpError,
)
from qrt.session import InferenceSession, NodeArg  # noqa: F401

__version__ = "0.1.0"
__all__ = ["InferenceSession", "NodeArg", "QrtError", "ModelLoadError", "UnsupportedOpError",
           "InvalidFeedError", "NodeExecutionError", "InvalidQuantParamsError", "__version__"]
