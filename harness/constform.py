"""The deployed form of a node test case: its non-data inputs folded into initializers.

ONNX's node tests pass axes, shapes, scales, starts, repeats, K, weights and normalization parameters
as graph inputs; deployed models hold them as initializers, and converters constant-fold them
differently across versions. Here a graph input stays an input when some node reads it as data:
its first input, or an input of the same type as the first in the op's schema (Add's B, Concat's
inputs); every other graph input becomes an initializer holding the case's own values. Ops whose
later inputs are weights or parameters (Conv, Gemm, LSTM, the normalizations, ...) keep only the first.
"""

from __future__ import annotations

import numpy as np
import onnx

FIRST_IR_WITHOUT_INITIALIZER_INPUTS = 4  # from IR 4 on, an initializer need not be a graph input
PARAMETERIZED = frozenset({  # ops whose inputs after the first are weights or parameters in deployed models
    "BatchNormalization", "Clip", "Conv", "ConvInteger", "ConvTranspose", "DeformConv", "Gemm", "GroupNormalization",
    "GRU", "InstanceNormalization", "LayerNormalization", "LSTM", "PRelu", "QLinearConv", "RMSNormalization", "RNN",
})


def data_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs some node reads as data."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return {node.input[i] for node in model.graph.node for i in _data_positions(node, opsets)}


def _data_positions(node: onnx.NodeProto, opsets: dict[str, int]) -> list[int]:
    """The first input, and those typed like it in the op's schema (none after the first for parameterized ops)."""
    if not node.input:
        return []
    domain = node.domain or "ai.onnx"
    if node.op_type in PARAMETERIZED:
        return [0]
    try:
        formal = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), "" if domain == "ai.onnx" else domain).inputs
    except onnx.defs.SchemaError:
        return [0]
    if not formal:
        return [0]
    types = [formal[min(i, len(formal) - 1)].type_str for i in range(len(node.input))]  # the last may be variadic
    return [i for i, kind in enumerate(types) if i == 0 or kind == types[0]]


def fold_non_data_inputs(model: onnx.ModelProto, feeds: dict[str, object]) -> tuple[onnx.ModelProto, dict] | None:
    """The model with its non-data inputs as initializers, and the feeds left; None when there is nothing to fold."""
    keep = data_inputs(model)
    folded = [value for value in model.graph.input if value.name not in keep and value.name in feeds]
    if not folded:
        return None
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.ir_version = max(result.ir_version, FIRST_IR_WITHOUT_INITIALIZER_INPUTS)
    names = {value.name for value in folded}
    del result.graph.input[:]
    result.graph.input.extend(value for value in model.graph.input if value.name not in names)
    result.graph.initializer.extend(_initializer(value.name, feeds[value.name]) for value in folded)
    return result, {name: value for name, value in feeds.items() if name not in names}


def _initializer(name: str, value: object) -> onnx.TensorProto:
    if isinstance(value, onnx.TensorProto):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = name
        return tensor
    return onnx.numpy_helper.from_array(np.asarray(value), name)
