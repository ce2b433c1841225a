"""Every micro model's `guards` claim, shown on real MNN: the bug on the versions that have it, and, for
models that guard an op converting and running correctly, a mutation that the same check catches.

One matrix run (fp32, Module API, every available toolchain) serves every test. Source-built toolchains
take part only when `nox -s build` has made their images; tests about them skip otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

from harness.compare import compare_output
from harness.config import Tolerance
from harness.matrix import run_matrix
from harness.modelstore import prepare_zoo_model
from harness.opsupport import version_key
from harness.progress import Progress
from harness.records import CellRecord, Results, Verdict
from harness.selection import Selection
from harness.workspace import Workspace
from models import ZOO, micro
from models.graph import run_onnxruntime

REPO = Path(__file__).resolve().parent.parent
MATRIX = yaml.safe_load((REPO / "matrix.yaml").read_text())
VARIANTS = {v["id"]: v for v in MATRIX["variants"]}
MICRO = [spec.name for spec in micro.MODELS]
OLD_PYPI, MID_PYPI, NEW_PYPI = "pypi-3.0.0", "pypi-3.2.0", "pypi-3.6.1"

Mutation = Callable[[onnx.ModelProto], onnx.ModelProto]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace) -> Results:
    """All micro models through every toolchain of matrix.yaml that is available here (fp32; matmul also wq8)."""
    root = tmp_path_factory.mktemp("guards")
    models = [{"name": name, "variants": ["fp32", "wq8"] if name == "micro-matmul" else ["fp32"]} for name in MICRO]
    config = {"toolchains": MATRIX["toolchains"], "variants": [VARIANTS["fp32"], VARIANTS["wq8"]], "models": models,
              "run": {**MATRIX["run"], "apis": ["module"], "repeat": 2}}
    (root / "matrix.yaml").write_text(yaml.safe_dump(config))
    return run_matrix(root / "matrix.yaml", Selection(models=tuple(MICRO)),
                      Workspace(root / "ws", shared_envs=workspace.envs), jobs=2, fresh=True,
                      progress=Progress(quiet=True))


def available(results: Results) -> list[str]:
    return [t.id for t in results.toolchains if t.status == "ok"]


def grid(results: Results, model: str, variant: str = "fp32") -> dict[tuple[str, str], CellRecord]:
    """(converter, runtime) -> the model's Module API cell."""
    return {(c.converter, c.runtime): c for c in results.cells
            if c.model == model and c.variant == variant and c.memory == "normal"}


def verdicts(results: Results, model: str) -> dict[tuple[str, str], Verdict]:
    return {pair: cell.outcome.verdict for pair, cell in grid(results, model).items()}


def up_to(results: Results, version: str) -> set[str]:
    """The available toolchains of `version` or older (latest is newer than any release)."""
    return {t.id for t in results.toolchains if t.status == "ok" and version_key(t.version) <= version_key(version)}


def need(results: Results, toolchain: str) -> None:
    if toolchain not in available(results):
        pytest.skip(f"{toolchain} is not available here; build it with `nox -s build -- {toolchain}` (needs Docker)")


# --- models that reproduce a bug some version has ------------------------------------------------------------

def test_silu_is_fused_by_newer_converters_into_an_op_old_runtimes_reject(run: Results) -> None:
    """Converters from 3.0.1 on write a SiLU op; 3.0.0 and 2.9.4 runtimes cannot execute it."""
    fusing = set(available(run)) - up_to(run, "3.0.0")
    old_runtimes = up_to(run, "3.0.0")
    cells = grid(run, "micro-silu")
    assert cells
    for (converter, runtime), cell in cells.items():
        broken = converter in fusing and runtime in old_runtimes
        assert cell.outcome.verdict == (Verdict.UNSUPPORTED_OP if broken else Verdict.PASS), (converter, runtime)
        if broken:
            assert "Unary Op can not execute" in cell.outcome.log_excerpt + cell.outcome.reason


def test_erf_gelu_is_approximated_by_3x_converters_and_the_fp32_tolerance_shows_it(run: Results) -> None:
    fp32 = VARIANTS["fp32"]["tolerance"]["max_abs_ratio"]
    cells = {pair: cell for pair, cell in grid(run, "micro-gelu-erf").items() if pair[0] != "src-2.9.4"}
    assert {converter for converter, _ in cells} >= {OLD_PYPI, MID_PYPI, NEW_PYPI}
    for pair, cell in cells.items():
        [delta] = cell.outputs
        assert cell.outcome.verdict == Verdict.WRONG_OUTPUT, pair
        # the tanh approximation's own error (2.8e-3 of max |ref| on [-4, 0]), not a broken kernel
        assert fp32 < delta.mnn_rule_ratio < 5e-3 and delta.cosine > 0.9999, (pair, delta)


def test_erf_gelu_stays_exact_with_the_2_9_4_converter(run: Results) -> None:
    need(run, "src-2.9.4")
    cells = {pair: cell for pair, cell in grid(run, "micro-gelu-erf").items() if pair[0] == "src-2.9.4"}
    assert cells and all(cell.outcome.verdict == Verdict.PASS for cell in cells.values())
    assert all(cell.outputs[0].mnn_rule_ratio < 1e-5 for cell in cells.values())


def test_converters_that_ignore_shape_start_end_give_a_wrong_shape_and_wrong_values(run: Results) -> None:
    ignoring = up_to(run, "3.2.0")
    cells = grid(run, "micro-shape-start-end")
    for (converter, runtime), cell in cells.items():
        if converter not in ignoring:
            continue
        [delta] = cell.outputs
        assert cell.outcome.verdict == Verdict.WRONG_SHAPE, (converter, runtime)
        assert delta.shape != delta.reference_shape == [32, 3, 8]
        assert delta.mnn_rule_ratio > 0.5, "the summed Shape divides the output: 1/29 where it should be 1/11"
    assert cells[NEW_PYPI, NEW_PYPI].outcome.verdict == Verdict.PASS


def test_converters_up_to_3_2_lose_an_input_read_through_identity(run: Results) -> None:
    losing = up_to(run, "3.2.0")
    cells = grid(run, "micro-input-identity-cast")
    for (converter, runtime), cell in cells.items():
        if converter in losing:
            assert cell.outcome.verdict in {Verdict.CRASH, Verdict.LOAD_ERROR}, (converter, runtime)
        else:
            assert cell.outcome.verdict == Verdict.PASS, (converter, runtime)
    crashed = cells[OLD_PYPI, OLD_PYPI].outcome
    assert crashed.verdict == Verdict.CRASH and "SIGSEGV" in crashed.reason
    assert "reads tensor identity_1, which the runtime does not feed it" in crashed.reason + crashed.log_excerpt


def test_constant_of_shape_without_value_is_filled_with_garbage_by_pypi_converters(run: Results) -> None:
    """Uninitialized memory is zero now and then (one conversion in about 20 here), so a single converter's
    verdict is luck: the claim is that most of them show it in any one run."""
    cells = grid(run, "micro-constant-of-shape-default")
    showing = set()
    for (converter, runtime), cell in cells.items():
        if converter in (OLD_PYPI, MID_PYPI, NEW_PYPI) and cell.outcome.verdict != Verdict.PASS:
            assert cell.outcome.verdict in {Verdict.WRONG_OUTPUT, Verdict.NONDETERMINISTIC}, (converter, runtime)
            showing.add(converter)
    assert len(showing) >= 2, f"only {showing or 'no converter'} wrote garbage"


# --- models that guard an op converting and running correctly ------------------------------------------------
# Each mutation is a plausible bug of a converter or kernel, made in the ONNX model; onnxruntime's output of
# the mutated model stands for what a buggy MNN would return, and the variant's check must reject it.

def _node(model: onnx.ModelProto, op_type: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if node.op_type == op_type)


def _set(op_type: str, **attrs) -> Mutation:
    def mutate(model: onnx.ModelProto) -> onnx.ModelProto:
        node = _node(model, op_type)
        kept = [a for a in node.attribute if a.name not in attrs]
        del node.attribute[:]
        node.attribute.extend([*kept, *(helper.make_attribute(k, v) for k, v in attrs.items())])
        return model
    return mutate


def _initializer(op_type: str, index: int, change: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    """Replace the `index`-th input of the first `op_type` node, an initializer, with `change(value)`."""
    def mutate(model: onnx.ModelProto) -> onnx.ModelProto:
        name = _node(model, op_type).input[index]
        [tensor] = [t for t in model.graph.initializer if t.name == name]
        tensor.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(tensor)).astype(
            numpy_helper.to_array(tensor).dtype), name))
        return model
    return mutate


def _inputs(op_type: str, order: list[int]) -> Mutation:
    """Reorder (or drop) the inputs of the first `op_type` node."""
    def mutate(model: onnx.ModelProto) -> onnx.ModelProto:
        node = _node(model, op_type)
        chosen = [node.input[i] for i in order]
        del node.input[:]
        node.input.extend(chosen)
        return model
    return mutate


def _after(op_type: str, new_op: str, constant: np.ndarray | None = None, **attrs) -> Mutation:
    """Insert `new_op` (with an optional constant second input) after the first `op_type` node."""
    def mutate(model: onnx.ModelProto) -> onnx.ModelProto:
        node = _node(model, op_type)
        out = node.output[0]
        node.output[0] = f"{out}_unmutated"
        extra = []
        if constant is not None:
            extra = [f"{out}_mutation"]
            model.graph.initializer.append(numpy_helper.from_array(constant, extra[0]))
        model.graph.node.append(helper.make_node(new_op, [node.output[0], *extra], [out], **attrs))
        return _sorted(model)
    return mutate


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in topological order, as ONNX requires after an insertion."""
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        ready = next(n for n in pending if all(i in known for i in n.input))
        pending.remove(ready)
        ordered.append(ready)
        known.update(ready.output)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def _retype(op_type: str, new_type: str) -> Mutation:
    def mutate(model: onnx.ModelProto) -> onnx.ModelProto:
        _node(model, op_type).op_type = new_type
        return model
    return mutate


def _centred_rmsnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """RMSNorm computed as LayerNorm (mean subtracted): what a runtime ignoring the fused op's RMS flag does."""
    mean = helper.make_node("ReduceMean", ["x"], ["x_mean"], axes=[-1], keepdims=1)
    centred = helper.make_node("Sub", ["x", "x_mean"], ["x_centred"])
    for node in model.graph.node:
        renamed = ["x_centred" if name == "x" else name for name in node.input]
        del node.input[:]
        node.input.extend(renamed)
    model.graph.node.extend([mean, centred])
    return _sorted(model)


def _transpose_as_reshape(model: onnx.ModelProto) -> onnx.ModelProto:
    """The data of a transpose left in place, only relabelled with the transposed shape."""
    node = _node(model, "Transpose")
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 4, 8, 16], np.int64), "transposed_shape"))
    node.op_type = "Reshape"
    del node.attribute[:]
    node.input.append("transposed_shape")
    return model


def _int4(weights: np.ndarray) -> np.ndarray:
    scale = np.abs(weights).max() / 7
    return np.clip(np.round(weights / scale), -7, 7) * scale


_ONE_ROW = np.zeros((2, 8, 16), np.float32)
_ONE_ROW[0, 0] = 1

MUTATIONS: dict[str, tuple[str, str, Mutation]] = {  # model -> (variant, bug, mutation)
    "micro-gelu-tanh": ("fp32", "exact erf GELU in its place", lambda _: micro.gelu_erf().model()),
    "micro-layernorm": ("fp32", "bias dropped", _inputs("LayerNormalization", [0, 1])),
    "micro-rmsnorm": ("fp32", "mean subtracted (LayerNorm without the RMS flag)", _centred_rmsnorm),
    "micro-softmax": ("fp32", "softmax over the wrong axis", _set("Softmax", axis=-2)),
    "micro-matmul": ("wq8", "weights quantized to 4 bits instead of 8", _initializer("MatMul", 1, _int4)),
    "micro-gemm": ("fp32", "bias dropped", _inputs("Gemm", [0, 1])),
    "micro-conv": ("fp32", "kernel flipped (convolution instead of correlation)",
                   _initializer("Conv", 1, lambda w: w[:, :, ::-1, ::-1].copy())),
    "micro-conv-depthwise": ("fp32", "padding on one side only", _set("Conv", pads=[0, 0, 2, 2])),
    "micro-conv-transpose": ("fp32", "padding on one side only", _set("ConvTranspose", pads=[0, 0, 2, 2])),
    "micro-maxpool": ("fp32", "padding on one side only", _set("MaxPool", pads=[0, 0, 2, 2])),
    "micro-avgpool": ("fp32", "pads averaged in", _set("AveragePool", count_include_pad=1)),
    "micro-resize": ("fp32", "asymmetric instead of half-pixel coordinates",
                     _set("Resize", coordinate_transformation_mode="asymmetric")),
    "micro-gather": ("fp32", "off-by-one row", _initializer("Gather", 0, lambda w: np.roll(w, 1, axis=0))),
    "micro-slice": ("fp32", "off-by-one start", _initializer("Slice", 1, lambda s: s + np.array([1, 0]))),
    "micro-concat": ("fp32", "inputs concatenated in the wrong order", _inputs("Concat", [1, 0])),
    "micro-reshape": ("fp32", "split column-major", _after("Reshape", "Transpose", perm=[0, 1, 3, 2])),
    "micro-transpose": ("fp32", "a reshape instead of a transpose", _transpose_as_reshape),
    "micro-expand": ("fp32", "only the first row broadcast", _after("Expand", "Mul", _ONE_ROW)),
    "micro-where": ("fp32", "condition inverted", _inputs("Where", [0, 2, 1])),
    "micro-equal": ("fp32", "true for a > b too", _retype("Equal", "GreaterOrEqual")),
    "micro-cast": ("fp32", "rounding instead of truncation", _after("Mul", "Round")),
    "micro-cumsum": ("fp32", "exclusive sum", _set("CumSum", exclusive=1)),
    "micro-topk": ("fp32", "smallest instead of largest", _set("TopK", largest=0)),
    "micro-einsum": ("fp32", "result transposed", _set("Einsum", equation="bhid,bhjd->bhji")),
}


def test_every_micro_model_has_its_guard_tested() -> None:
    bug_models = {"micro-silu", "micro-gelu-erf", "micro-shape-start-end", "micro-input-identity-cast",
                  "micro-constant-of-shape-default"}
    assert set(MUTATIONS) | bug_models == set(MICRO) and not set(MUTATIONS) & bug_models


@pytest.mark.parametrize("model", sorted(MUTATIONS))
def test_the_op_runs_correctly_everywhere_and_a_plausible_bug_in_it_would_fail(model: str, run: Results,
                                                                              tmp_path: Path) -> None:
    variant, bug, mutate = MUTATIONS[model]
    cells = grid(run, model, variant)
    assert len(cells) == len(available(run)) ** 2
    assert all(cell.outcome.verdict == Verdict.PASS for cell in cells.values()), {
        pair: cell.outcome.reason for pair, cell in cells.items() if cell.outcome.verdict != Verdict.PASS}

    prepared = prepare_zoo_model(ZOO[model], tmp_path)
    inputs, reference = prepared.load_inputs(), prepared.load_reference()
    buggy = run_onnxruntime(mutate(onnx.load(str(prepared.onnx_path))), inputs)
    tolerance = Tolerance(**VARIANTS[variant]["tolerance"])
    deltas = [compare_output(name, buggy[name], reference[name], tolerance) for name in reference]
    assert all(d.shape == d.reference_shape for d in deltas), f"{bug}: a value bug, not a shape bug"
    assert any(d.failed_checks for d in deltas), f"{model}: '{bug}' would pass the {variant} check"
