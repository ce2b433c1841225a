"""ONNX's backend node conformance suite as matrix models: one prepared model per node test case and form.

The onnx wheel ships the case generators (`onnx.backend.test.case.node`) but not their data, so
cases are materialized once into `<workspace>/onnx-node/<versions>-<code>/` (a second run does no
generation work). Each case keeps its own expected outputs and tolerance: they are the reference.
onnxruntime's opinion of a case is recorded beside it, never used to drop it.

Every case is converted by every converter. Only a case MNN's converter cannot be given meaningfully
(a non-tensor graph input, a training op) is excluded, with its rule and reason in the results; a
case whose inputs or outputs no MNN Python API can carry is converted and its run cells are `not-run`.
Each case with non-data inputs also runs in its deployed form, `<case>@const` (harness.constform).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

import models.graph
from harness import constform, modelstore
from harness.modelstore import PreparedModel
from harness.progress import Progress
from models.graph import run_onnxruntime

SUITE = "onnx-node"
AS_IS, CONST = "as-is", "const"
NUMERIC_KINDS = "biuf"
ORT_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+ (?:[\w:~<>, ]+\(.*?\)(?: const)? )?")
UNFEEDABLE = re.compile(r"bfloat16|float8|float4|int4|int2|complex|str|object")  # no MNN Python type for these
CODE = (Path(__file__), Path(constform.__file__), Path(modelstore.__file__), Path(models.graph.__file__))


@dataclass(frozen=True)
class NodeCase:
    """One ONNX node test case in one form: the op it tests, why it is excluded or not run, onnxruntime's view."""

    name: str
    op: str
    domain: str
    opset: int
    expanded: bool  # a function op expanded into the primitive ops that define it
    rule: str | None = None  # the exclusion rule, or None when the case is converted
    reason: str = ""
    form: str = AS_IS  # "as-is" (ONNX's graph) or "const" (non-data inputs folded into initializers)
    run_skip: str = ""  # why its run cells are not-run ('' when they run)
    onnxruntime: str = ""  # "agrees", "disagrees: ..." or "cannot run: ..."


def _training_domain(case) -> str | None:
    domains = {o.domain for o in case.model.opset_import}
    if domains & {"ai.onnx.preview.training", "ai.onnx.training"}:
        return "a training op (ai.onnx.preview.training): not meant for inference backends"
    return None


def _non_tensor_input(case) -> str | None:
    for value in case.model.graph.input:
        if not value.type.HasField("tensor_type"):
            kind = value.type.WhichOneof("value")
            kind = kind.removesuffix("_type")
            return (f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} input ('{value.name}'): the converter and "
                    "MNN's APIs take tensor inputs only")
    return None


# Exclusion rules: cases that cannot be converted meaningfully. Checked in order; the first that applies names it.
RULES: tuple[tuple[str, Callable], ...] = (
    ("training-op", _training_domain),
    ("non-tensor-input", _non_tensor_input),
)


def _tensor(value: object) -> object:
    """Data as numpy where numpy can hold it (scalars and TensorProtos included)."""
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, onnx.TensorProto):
        try:
            return onnx.numpy_helper.to_array(value)
        except Exception:  # a type numpy cannot hold: left as a TensorProto
            return value
    return value


def _data(case) -> tuple[list, list]:
    inputs, outputs = case.data_sets[0]
    return [_tensor(v) for v in inputs], [_tensor(v) for v in outputs]


def _type_name(value: object) -> str:
    if isinstance(value, onnx.TensorProto):
        return onnx.helper.tensor_dtype_to_string(value.data_type).removeprefix("TensorProto.").lower()
    if isinstance(value, np.ndarray):
        return "string" if value.dtype.kind in "OSU" else str(value.dtype)
    return "absent optional" if value is None else f"{type(value).__name__} (sequence or map)"


def _carriable(value: object) -> bool:
    """A tensor MNN's Python APIs can take or give (whether a given API and version does is the worker's call)."""
    return (isinstance(value, np.ndarray) and value.dtype.kind in NUMERIC_KINDS
            and not UNFEEDABLE.search(str(value.dtype)))


def run_skip(model: onnx.ModelProto, feeds: dict, expected: dict) -> str:
    """Why no MNN API can run this case ('' when the run stage can be tried)."""
    outputs = {value.name: value for value in model.graph.output}
    for name in expected:
        if not outputs[name].type.HasField("tensor_type"):
            kind = outputs[name].type.WhichOneof("value").removesuffix("_type")
            return f"a {kind} output ('{name}'): MNN's APIs give tensors only"
    for what, values in (("input", feeds), ("output", expected)):
        for name, value in values.items():
            if not _carriable(value):
                return f"a {_type_name(value)} {what} ('{name}'): MNN's Python API has no such type"
    return ""


def _storable(value: object) -> np.ndarray:
    """An array np.load reads back without pickles: exotic dtypes as their raw bits, strings as unicode."""
    if isinstance(value, onnx.TensorProto):
        return np.frombuffer(value.raw_data, np.uint8) if value.raw_data else np.zeros(0, np.uint8)
    if not isinstance(value, np.ndarray):
        return np.zeros(0, np.uint8)
    if value.dtype.kind == "O":
        return value.astype(str)
    if value.dtype.kind == "V" or value.dtype.type.__module__ != "numpy":  # ml_dtypes' bfloat16, float8, int4...
        return value.view(f"u{value.dtype.itemsize}")
    return value


def cache_dir(root: Path) -> Path:
    """Where the cases are, keyed by everything that changes the case set or a reference: the onnx,
    onnxruntime and numpy versions, and the code that makes them."""
    code = hashlib.sha256(b"".join(path.read_bytes() for path in CODE)).hexdigest()[:10]
    return root / f"onnx{onnx.__version__}-ort{onnxruntime.__version__}-numpy{np.__version__}-{code}"


def materialize(root: Path, progress: Progress) -> list[NodeCase]:
    """Every node case of the installed onnx in each form, sorted by name; written out once, then read back."""
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
        for case in sorted(raw, key=lambda c: c.name):
            cases += _materialize_case(case, names, directory)
            advance()
    index.write_text(json.dumps([asdict(c) for c in cases], indent=1))
    return cases


def prepared(root: Path, cases: list[NodeCase]) -> dict[str, PreparedModel]:
    """The converted cases as prepared models (name = case name)."""
    directory = cache_dir(root)
    return {case.name: PreparedModel.read(directory / case.name) for case in cases if case.rule is None}


def _materialize_case(case, names: dict, directory: Path) -> list[NodeCase]:
    """The case as ONNX wrote it and, when it has non-data inputs, its const form; [excluded case] if excluded."""
    base = re.sub(r"_expanded(_ver\d+)?$", "", case.name)
    tested = names.get(base, case).model.graph.node[0]
    opset = max((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    node_case = NodeCase(case.name, tested.op_type, tested.domain or "ai.onnx", opset, base != case.name)
    for rule, check in RULES:
        reason = check(case)
        if reason:
            return [replace(node_case, rule=rule, reason=reason)]
    inputs, outputs = _data(case)
    feeds = dict(zip([i.name for i in case.model.graph.input], inputs, strict=True))
    expected = dict(zip([o.name for o in case.model.graph.output], outputs, strict=True))
    forms = [(node_case, case.model, feeds)]
    folded = constform.fold_non_data_inputs(case.model, feeds)
    if folded:
        forms.append((replace(node_case, name=f"{case.name}@{CONST}", form=CONST), *folded))
    written = []
    for form_case, model, form_feeds in forms:
        form_case = replace(form_case, run_skip=run_skip(model, form_feeds, expected),
                            onnxruntime=onnxruntime_opinion(model, form_feeds, expected, case.rtol, case.atol))
        _write(model, form_case, form_feeds, expected, {"atol": case.atol, "rtol": case.rtol},
               directory / form_case.name)
        written.append(form_case)
    return written


def onnxruntime_opinion(model: onnx.ModelProto, feeds: dict, expected: dict, rtol: float, atol: float) -> str:
    """Whether onnxruntime reproduces the case's expected outputs: a second opinion, recorded beside the case."""
    try:
        got = run_onnxruntime(model, feeds)
    except Exception as error:
        message = ORT_SOURCE_LOCATION.sub("", str(error).strip().splitlines()[0])
        return f"cannot run: {message[:300]}"
    for name, want in expected.items():
        have = got.get(name)
        if not isinstance(want, np.ndarray) or not isinstance(have, np.ndarray):
            continue  # sequences and maps: not compared
        if want.dtype.kind == "V" and have.dtype.kind == "u" and have.dtype.itemsize == want.dtype.itemsize:
            have = have.view(want.dtype)  # onnxruntime gives float8 and the like as their raw bits
        if have.shape != want.shape or have.dtype != want.dtype:
            return f"disagrees: {name} is {have.dtype}{list(have.shape)}, expected {want.dtype}{list(want.shape)}"
        try:
            if want.dtype.kind == "f" or want.dtype.type.__module__ != "numpy":  # ml_dtypes: compared as float64
                np.testing.assert_allclose(have.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
            else:
                np.testing.assert_array_equal(have, want)
        except (AssertionError, TypeError) as error:
            detail = " ".join(line.strip() for line in str(error).splitlines() if "Max" in line)
            return f"disagrees: {name} differs from the expected output ({detail or 'values'})"
    return "agrees"


def _write(model: onnx.ModelProto, case: NodeCase, feeds: dict, expected: dict, tolerance: dict,
           directory: Path) -> None:
    directory.mkdir(parents=True)
    data = model.SerializeToString(deterministic=True)
    (directory / "model.onnx").write_bytes(data)
    np.savez(directory / "inputs.npz", **{name: _storable(value) for name, value in feeds.items()})
    np.savez(directory / "reference.npz", **{name: _storable(value) for name, value in expected.items()})
    opinion = case.onnxruntime.split(":")[0].replace(" ", "-")
    prepared = PreparedModel(
        name=case.name, directory=str(directory), sha256=hashlib.sha256(data).hexdigest(), source=SUITE,
        tags=(SUITE, f"op:{case.op}", f"form:{case.form}", f"onnxruntime:{opinion}"),
        guards=f"ONNX backend node test for {case.op} ({case.form} form)",
        inputs={name: {"shape": list(np.shape(value)) if isinstance(value, np.ndarray) else [],
                       "dtype": _type_name(value)} for name, value in feeds.items()},
        outputs=tuple(expected), recipe=onnx.__version__, tolerance=tolerance, run_skip=case.run_skip,
        onnxruntime=case.onnxruntime)
    (directory / "meta.json").write_text(json.dumps(asdict(prepared), indent=1))
