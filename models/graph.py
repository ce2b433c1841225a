"""A small ONNX graph builder: deterministic weights, terse node creation, fixed IR version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # onnxruntime 1.31 loads at most IR 13; onnx 1.23 would write 14
FLOAT, INT64, INT32, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL

Shape = list[int | str | None] | None


class Graph:
    """Collects inputs, weights and nodes, then makes a model; random weights come from `seed`."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, shape: Shape, dtype: int = FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def output(self, value: str, name: str | None = None, dtype: int = FLOAT, shape: Shape = None) -> str:
        """Mark `value` as a graph output, renaming it through an Identity if `name` differs."""
        if name is not None and name != value:
            value = self.op("Identity", [value], out=name)
        self.outputs.append(helper.make_tensor_value_info(value, dtype, shape))
        return value

    def const(self, value: np.ndarray | list | float | int, name: str | None = None, dtype=None) -> str:
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = name or self._name("const")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, *values: int) -> str:
        """A 1-D int64 constant, for shapes, axes and indices."""
        return self.const(np.array(values, dtype=np.int64))

    def weight(self, *shape: int, scale: float | None = None, name: str | None = None) -> str:
        """A random normal weight, scaled by 1/sqrt(fan-in) unless `scale` is given."""
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), name)

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        """Add a single-output node and return its output's name."""
        return self.op_multi(op_type, inputs, 1, names=[out] if out else None, **attrs)[0]

    def op_multi(self, op_type: str, inputs: list[str], outputs: int, names: list[str] | None = None,
                 **attrs) -> list[str]:
        """Add a node with `outputs` outputs and return their names."""
        names = names or [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self._name(op_type), **attrs))
        return names

    def model(self, opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="mnn-matrix", producer_version="1")
        model.ir_version = IR_VERSION
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills in output shapes
        onnx.checker.check_model(model)
        return model


def run_onnxruntime(model: onnx.ModelProto | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a model in onnxruntime (one thread, graph optimizations off) and name its outputs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # failures raise; their messages are kept from the exception
    ort.set_default_logger_severity(4)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))
