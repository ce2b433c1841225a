"""A converter x runtime pairing as an ONNX backend (`onnx.backend.base.Backend` / `BackendRep`).

That is the interface ONNX's own test runner and backend scoreboard drive engines through:

    from harness.onnx_backend import pairing_backend
    MNN = pairing_backend("pypi-3.6.1", "pypi-3.0.0")       # convert with 3.6.1, run on 3.0.0
    outputs = MNN.prepare(model).run([x])

    import onnx.backend.test
    tests = onnx.backend.test.BackendTest(MNN, __name__)  # ONNX's node tests, through the pairing

Workers stay up between calls (one converter and one runtime worker per pairing), so a case costs
two requests, not two process starts. A failure raises `MNNBackendError` carrying its verdict.
"""

from __future__ import annotations

import atexit
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from harness.client import Client
from harness.config import Matrix
from harness.records import Outcome
from harness.selection import Selection
from harness.supervisor import Worker
from harness.toolchains import Toolchain, make_toolchain
from harness.workspace import Workspace, scratch_dir


class MNNBackendError(RuntimeError):
    """A conversion or run that failed; `outcome` has the verdict, stage, reason and log excerpt."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"{outcome.verdict.value} at {outcome.stage}: {outcome.reason}\n{outcome.log_excerpt}")
        self.outcome = outcome


class Pairing:
    """Converts with one toolchain and runs with another, on persistent workers."""

    def __init__(self, converter: Toolchain, runtime: Toolchain, api: str, matrix: Matrix) -> None:
        self.api, self.settings = api, matrix.run
        self.scratch = scratch_dir("b")
        limit = matrix.run.memory_limit_mb
        self.workers = [Worker(toolchain, self.scratch, role, memory_limit_mb=limit)
                        for toolchain, role in ((converter, "convert"), (runtime, "run"))]
        self.converter, self.runtime = (Client.single(worker, matrix.run.timeouts) for worker in self.workers)
        self._lock = threading.Lock()
        self._count = 0

    def convert(self, model: onnx.ModelProto) -> Path:
        with self._lock:
            self._count += 1
            stem = self.scratch / f"model{self._count}"
        onnx.save(model, str(stem.with_suffix(".onnx")))
        result = self.converter.convert(stem.with_suffix(".onnx"), stem.with_suffix(".mnn"))
        if not result.passed:
            raise MNNBackendError(result.outcome)
        return stem.with_suffix(".mnn")

    def run(self, path: Path, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        result = self.runtime.run(path, self.api, inputs, outputs, self.settings.threads, self.settings.precision)
        if result.failure is not None:
            raise MNNBackendError(result.failure)
        return result.repeats[0]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class MNNRep(BackendRep):
    """A converted model, run by the pairing's runtime; outputs come back in ONNX's declared types."""

    def __init__(self, pairing: Pairing, model: onnx.ModelProto) -> None:
        initializers = {i.name for i in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in initializers]
        self.outputs = [o.name for o in model.graph.output]
        self.types = [onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in model.graph.output]
        self.pairing, self.path = pairing, pairing.convert(model)

    def run(self, inputs, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        feeds = dict(inputs) if isinstance(inputs, dict) else dict(zip(self.inputs, inputs, strict=True))
        produced = self.pairing.run(self.path, {k: np.asarray(v) for k, v in feeds.items()}, self.outputs)
        return tuple(produced[name].astype(dtype, copy=False) for name, dtype in zip(self.outputs, self.types,
                                                                                      strict=True))


_PAIRINGS: dict[tuple, Pairing] = {}


def pairing_backend(converter: str, runtime: str | None = None, api: str = "module",
                    config: Path = Path("matrix.yaml"), workspace: Workspace | None = None) -> type[Backend]:
    """An ONNX backend class for converting with `converter` and running with `runtime` (default: the same)."""
    from harness.matrix import load

    runtime = runtime or converter
    matrix = load(config, Selection(toolchains=tuple({converter, runtime})))
    workspace = workspace or Workspace.default()
    key = (converter, runtime, api, str(config), str(workspace.root))
    if key not in _PAIRINGS:
        toolchains = {t.id: make_toolchain(t, workspace) for t in matrix.toolchains}
        for toolchain in toolchains.values():
            toolchain.provision()
        _PAIRINGS[key] = Pairing(toolchains[converter], toolchains[runtime], api, matrix)
    pairing = _PAIRINGS[key]

    class PairingBackend(Backend):
        __doc__ = f"MNN: converted by {converter}, run by {runtime} ({api} API)."

        @classmethod
        def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> MNNRep:
            super().prepare(model, device, **kwargs)  # checks the model
            return MNNRep(pairing, model)

        @classmethod
        def run_model(cls, model: onnx.ModelProto, inputs, device: str = "CPU", **kwargs) -> tuple:
            return cls.prepare(model, device, **kwargs).run(inputs)

        @classmethod
        def supports_device(cls, device: str) -> bool:
            return device == "CPU"

    PairingBackend.__name__ = f"MNN[{converter}->{runtime}]"
    return PairingBackend


@atexit.register
def _close_pairings() -> None:
    for pairing in _PAIRINGS.values():
        pairing.close()
