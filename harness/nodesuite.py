"""ONNX's backend node conformance suite as matrix models: one prepared model per node test case.

The onnx wheel ships the case generators (`onnx.backend.test.case.node`) but not their data, so
cases are materialized once per onnx version into `<workspace>/onnx-node/<onnx version>/` (a
second run does no generation work). Each case keeps its own expected outputs and tolerance.
Cases that cannot be a fair test of MNN are excluded, never dropped: each exclusion names its rule
and reason, and the results list them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from harness.modelstore import PreparedModel
from harness.progress import Progress
from models.graph import run_onnxruntime

SUITE = "onnx-node"
NUMERIC_KINDS = "biuf"
ORT_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+ (?:[\w:~<>, ]+\(.*?\)(?: const)? )?")
UNFEEDABLE = re.compile(r"bfloat16|float8|float4|int4|int2|complex|str|object")  # no MNN Python type for these


@dataclass(frozen=True)
class NodeCase:
    """One ONNX node test case: the op it tests, and why it is excluded (if it is)."""

    name: str
    op: str
    domain: str
    opset: int
    expanded: bool  # a function op expanded into the primitive ops that define it
    rule: str | None = None  # the exclusion rule, or None when the case runs
    reason: str = ""


def _training_domain(case) -> str | None:
    domains = {o.domain for o in case.model.opset_import}
    if domains & {"ai.onnx.preview.training", "ai.onnx.training"}:
        return "a training op (ai.onnx.preview.training): not meant for inference backends"
    return None


def _unreleased_opset(case) -> str | None:
    latest = onnx.helper.VERSION_TABLE[-1][2]
    for opset in case.model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > latest:
            return f"opset {opset.version} is newer than the latest released ({latest}): not for backends yet"
    return None


def _tensor(value: object) -> object:
    """Data as numpy where it is a tensor numpy can hold (scalars and TensorProtos included)."""
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, onnx.TensorProto):
        try:
            return onnx.numpy_helper.to_array(value)
        except Exception:  # a type numpy cannot hold: left as a TensorProto, excluded below
            return value
    return value


def _data(case) -> tuple[list, list]:
    inputs, outputs = case.data_sets[0]
    return [_tensor(v) for v in inputs], [_tensor(v) for v in outputs]


def _non_tensor(case) -> str | None:
    for what, values in zip(("input", "output"), _data(case), strict=True):
        for value in values:
            if not isinstance(value, (np.ndarray, onnx.TensorProto)):
                kind = "an absent optional" if value is None else f"a {type(value).__name__} (sequence or map)"
                return f"{kind} {what}: MNN's API takes and gives tensors only"
    return None


def _unfeedable_dtype(case) -> str | None:
    for what, values in zip(("input", "output"), _data(case), strict=True):
        for value in values:
            if isinstance(value, onnx.TensorProto):
                dtype = onnx.helper.tensor_dtype_to_string(value.data_type).removeprefix("TensorProto.")
            elif UNFEEDABLE.search(str(value.dtype)) or value.dtype.kind not in NUMERIC_KINDS:
                dtype = str(value.dtype)
            else:
                continue
            return f"a {dtype} {what}: MNN's Python API has no such type"
    return None


# Static exclusion rules, checked in order before onnxruntime is asked.
RULES: tuple[tuple[str, Callable], ...] = (
    ("training-op", _training_domain),
    ("unreleased-opset", _unreleased_opset),
    ("non-tensor-io", _non_tensor),
    ("unfeedable-dtype", _unfeedable_dtype),
)


def cache_dir(root: Path) -> Path:
    """Where the cases of this onnx version, materialized by this code, live."""
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    return root / f"{onnx.__version__}-{code}"


def materialize(root: Path, progress: Progress) -> list[NodeCase]:
    """Every node case of the installed onnx, written out once and then read from the cache."""
    directory = cache_dir(root)
    index = directory / "index.json"
    if index.exists():
        return [NodeCase(**entry) for entry in json.loads(index.read_text())]
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    with progress.task("cases", total=None) as advance:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the generators compute overflowing casts on purpose
            import onnx.backend.test.case.node as generators

            raw = generators.collect_testcases(None)
        advance.set_total(len(raw))
        names = {case.name: case for case in raw}
        cases = []
        for case in raw:
            cases.append(_materialize_case(case, names, directory))
            advance()
    index.write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


def prepared(root: Path, cases: list[NodeCase]) -> dict[str, PreparedModel]:
    """The runnable cases as prepared models (name = case name)."""
    directory = cache_dir(root)
    return {case.name: PreparedModel.read(directory / case.name) for case in cases if case.rule is None}


def _materialize_case(case, names: dict, directory: Path) -> NodeCase:
    base = re.sub(r"_expanded(_ver\d+)?$", "", case.name)
    tested = names.get(base, case).model.graph.node[0]
    opset = max((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    node_case = NodeCase(case.name, tested.op_type, tested.domain or "ai.onnx", opset, base != case.name)
    for rule, check in RULES:
        reason = check(case)
        if reason:
            return NodeCase(**{**asdict(node_case), "rule": rule, "reason": reason})
    inputs, expected = _data(case)
    input_names = [i.name for i in case.model.graph.input]
    output_names = [o.name for o in case.model.graph.output]
    feeds = dict(zip(input_names, inputs, strict=True))
    reason = _onnxruntime_disagrees(case, feeds, dict(zip(output_names, expected, strict=True)))
    if reason:
        return NodeCase(**{**asdict(node_case), "rule": "onnxruntime-disagrees", "reason": reason})
    _write(case, node_case, feeds, dict(zip(output_names, expected, strict=True)), directory / case.name)
    return node_case


def _onnxruntime_disagrees(case, feeds: dict, expected: dict) -> str | None:
    """Why onnxruntime does not reproduce the case's expected outputs, or None if it does."""
    try:
        got = run_onnxruntime(case.model, feeds)
    except Exception as error:
        message = ORT_SOURCE_LOCATION.sub("", str(error).strip().splitlines()[0])
        return f"onnxruntime cannot run it: {message[:300]}"
    for name, want in expected.items():
        try:
            if want.dtype.kind == "f":
                np.testing.assert_allclose(got[name], want, rtol=case.rtol, atol=case.atol)
            else:
                np.testing.assert_array_equal(got[name], want)
        except AssertionError as error:
            detail = " ".join(line.strip() for line in str(error).splitlines() if "Max" in line)
            return f"onnxruntime's {name} differs from the expected output ({detail or 'shape or values'})"
    return None


def _write(case, node_case: NodeCase, feeds: dict, expected: dict, directory: Path) -> None:
    directory.mkdir(parents=True)
    data = case.model.SerializeToString(deterministic=True)
    (directory / "model.onnx").write_bytes(data)
    np.savez(directory / "inputs.npz", **feeds)
    np.savez(directory / "reference.npz", **expected)
    model = PreparedModel(
        name=case.name, directory=str(directory), sha256=hashlib.sha256(data).hexdigest(), source=SUITE,
        tags=(SUITE, f"op:{node_case.op}"), guards=f"ONNX backend node test for {node_case.op}",
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
        outputs=tuple(expected), recipe=onnx.__version__,
        tolerance={"atol": case.atol, "rtol": case.rtol})
    (directory / "meta.json").write_text(json.dumps(asdict(model), indent=1))
