"""Op implementations, one module per family. Importing this package registers all of them."""
from qrt.ops.registry import REQUIRED, NodeContext, OpDef, register, registered_ops, resolve  # noqa: F401

# Explicit list: registration is never discovered from globals.
from qrt.ops import (  # noqa: F401,E402
    elementwise,
    activations,
    tensor,
    reduce,
    conv,
    pool,
    nn,
    resize,
    quant,
    fused,
    ort_contrib,
    loss,
    ort_attention,
    misc,
    spatial,
    recurrent,
    signal,
    rand,
    sequence,
    control_flow,
    legacy,
)
