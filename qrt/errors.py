"""Exception types. Every error names what is wrong: file, node, op, input, shape or dtype."""


class QrtError(Exception):
    """Base class of every error qrt raises on purpose."""


class ModelLoadError(QrtError):
    """The model file or proto cannot be read or is inconsistent (truncated, bad opset, cycle...)."""


class UnsupportedOpError(ModelLoadError):
    """The graph uses ops qrt does not implement. `.ops` lists (op_type, domain, node names)."""

    def __init__(self, message, ops=()):
        super().__init__(message)
        self.ops = list(ops)


class InvalidFeedError(QrtError, ValueError):
    """A feed passed to `run` is missing, unknown, or has the wrong dtype/rank/shape."""


class NodeExecutionError(QrtError):
    """An op failed while running; the message names the node, its op and its input shapes."""


class InvalidQuantParamsError(QrtError, ValueError):
    """Quantization parameters are invalid (zero/negative/non-finite scale, zero point out of range)."""
