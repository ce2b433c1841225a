"""Prepared models: an ONNX file with its deterministic inputs and onnxruntime reference outputs.

Zoo models are built into `<workspace>/models/<name>/` and rebuilt only when their recipe (the
builder's source, library versions) changes. A user's own model goes through the same steps.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

import models
from models import ModelSpec
from models.graph import IR_VERSION, run_onnxruntime


class ModelError(Exception):
    """A model that cannot be used: not ONNX, not runnable by onnxruntime, or bad inputs."""


@dataclass(frozen=True)
class PreparedModel:
    """A model ready for the matrix, described by `meta.json` in its directory."""

    name: str
    directory: str
    sha256: str
    source: str  # "zoo" or the path of the user's file
    tags: tuple[str, ...]
    guards: str
    inputs: dict[str, dict]  # name -> {"shape": [...], "dtype": "float32"}
    outputs: tuple[str, ...]
    recipe: str
    tolerance: dict | None = None  # the model's own tolerance, over the variant's (node test cases)
    run_skip: str = ""  # why the run stage is skipped (inputs or outputs no MNN API can carry); converted anyway
    onnxruntime: str = ""  # node cases: onnxruntime's second opinion ("agrees", "disagrees: ...", "cannot run: ...")

    @property
    def onnx_path(self) -> Path:
        return Path(self.directory) / "model.onnx"

    def load_inputs(self) -> dict[str, np.ndarray]:
        return dict(_arrays(str(Path(self.directory) / "inputs.npz"), tuple(self.inputs)))

    def inputs_digest(self) -> str:
        """A hash of the inputs' values, dtypes and shapes: what a run is fed is part of its cells' keys."""
        content = hashlib.sha256()
        for name, array in self.load_inputs().items():
            content.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            content.update(np.ascontiguousarray(array).tobytes())
        return content.hexdigest()

    def load_reference(self) -> dict[str, np.ndarray]:
        return dict(_arrays(str(Path(self.directory) / "reference.npz"), self.outputs))

    @classmethod
    def read(cls, directory: Path) -> PreparedModel:
        meta = json.loads((directory / "meta.json").read_text())
        return cls(**{**meta, "tags": tuple(meta["tags"]), "outputs": tuple(meta["outputs"])})


def prepare_zoo_model(spec: ModelSpec, root: Path) -> PreparedModel:
    """Build a zoo model, its inputs and references, unless an up-to-date build is cached."""
    recipe = _recipe(spec)
    directory = root / spec.name
    if (directory / "meta.json").exists():
        cached = PreparedModel.read(directory)
        if cached.recipe == recipe:
            return cached
    model = spec.build()
    rng = np.random.default_rng(_seed(spec.name))
    inputs = spec.inputs(rng) if spec.inputs else make_inputs(model, spec.dims, rng)
    return _store(model, inputs, directory, name=spec.name, source="zoo", tags=spec.tags,
                  guards=spec.guards, recipe=recipe)


def prepare_user_model(path: Path, root: Path, inputs_path: Path | None = None,
                       dims: Mapping[str, int] | None = None) -> PreparedModel:
    """Check a user's ONNX file (before any MNN work) and prepare it like a zoo model."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as error:
        raise ModelError(f"{path}: not an ONNX model ({type(error).__name__}: {error})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes)")
    if inputs_path is not None:
        inputs = _read_user_inputs(inputs_path, model)
    else:
        inputs = make_inputs(model, dims or {}, np.random.default_rng(_seed(path.name)))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem)
    recipe = hashlib.sha256(json.dumps([digest, _arrays_digest(inputs), _versions()]).encode()).hexdigest()
    return _store(model, inputs, root / f"user-{name}-{recipe[:8]}", name=name, source=str(path),
                  tags=("user",), guards="your own model", recipe=recipe)


def make_inputs(model: onnx.ModelProto, dims: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Deterministic inputs from the graph's input specs; symbolic dims come from `dims`."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    missing = sorted({d.dim_param for i in graph_inputs for d in i.type.tensor_type.shape.dim
                      if d.dim_param and d.dim_param not in dims})
    if missing:
        raise ModelError("symbolic input dimensions need values: "
                         + " ".join(f"--dim {name}=N" for name in missing))
    inputs = {}
    for value in graph_inputs:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 1) for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        inputs[value.name] = _values(model, value.name, shape, np.dtype(dtype), rng)
    return inputs


def _values(model: onnx.ModelProto, name: str, shape: list[int], dtype: np.dtype,
            rng: np.random.Generator) -> np.ndarray:
    """Values a model expects: normal floats; for integers, a range the graph's use of them allows."""
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    lowered = name.lower()
    if "mask" in lowered:
        return np.ones(shape, dtype)
    if "position" in lowered and shape:
        return np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
    return rng.integers(0, _index_bound(model, name), size=shape).astype(dtype)


def _index_bound(model: onnx.ModelProto, name: str, default: int = 4) -> int:
    """For an input used as Gather indices into a weight, that weight's size on the gather axis."""
    sizes = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if node.input[0] in sizes:
                return sizes[node.input[0]][axis]
    return default


def _store(model: onnx.ModelProto, inputs: dict[str, np.ndarray], directory: Path, **meta) -> PreparedModel:
    """Write model, inputs and onnxruntime references, then meta.json last (it marks a complete build)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").unlink(missing_ok=True)
    data = model.SerializeToString(deterministic=True)
    (directory / "model.onnx").write_bytes(data)
    reference = reference_outputs(directory / "model.onnx", inputs, meta["source"] if meta["source"] != "zoo"
                                  else meta["name"])
    np.savez(directory / "inputs.npz", **inputs)
    np.savez(directory / "reference.npz", **reference)
    prepared = PreparedModel(
        directory=str(directory), sha256=hashlib.sha256(data).hexdigest(),
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
        outputs=tuple(reference), **{**meta, "tags": tuple(meta["tags"])})
    (directory / "meta.json").write_text(json.dumps(asdict(prepared), indent=2))
    return prepared


def reference_outputs(path: Path, inputs: dict[str, np.ndarray], shown_as: str) -> dict[str, np.ndarray]:
    """The onnxruntime outputs that MNN's are compared with; errors name the model as `shown_as`."""
    try:
        return run_onnxruntime(path, inputs)
    except Exception as error:
        detail = str(error).strip().splitlines()[0].replace(str(path), shown_as)
        raise ModelError(f"onnxruntime cannot run {shown_as}: {detail}") from None


def _read_user_inputs(path: Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    initializers = {init.name for init in model.graph.initializer}
    wanted = [i.name for i in model.graph.input if i.name not in initializers]
    try:
        with np.load(path) as data:
            inputs = {name: data[name] for name in data.files}
    except Exception as error:
        raise ModelError(f"{path}: not a readable .npz file ({error})") from None
    if sorted(inputs) != sorted(wanted):
        raise ModelError(f"{path}: holds arrays {sorted(inputs)}, but the model's inputs are {sorted(wanted)}")
    return {name: inputs[name] for name in wanted}


@functools.lru_cache(maxsize=8192)
def _arrays(path: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays of an .npz file, read once per process (a run's plan and its cells read each model's several times);
    read-only, since they are shared."""
    with np.load(path) as data:
        arrays = {name: data[name] for name in names}
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


def _recipe(spec: ModelSpec) -> str:
    """What a zoo build depends on: the builder's module source, the zoo framework and library versions."""
    sources = [inspect.getsource(inspect.getmodule(spec.build) or models)]
    sources += [Path(models.__file__).read_text(), (Path(models.__file__).parent / "graph.py").read_text()]
    payload = json.dumps([spec.name, spec.tags, spec.guards, dict(spec.dims), sources, _versions()])
    return hashlib.sha256(payload.encode()).hexdigest()


def _versions() -> list[str]:
    return [onnx.__version__, onnxruntime.__version__, np.__version__, str(IR_VERSION)]


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + arrays[name].dtype.str.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()
