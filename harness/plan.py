"""The cells of a run: every (converter, model, variant) conversion, and every run of each
converted model under every runtime with every API. Keys are content hashes of what decides a
cell's outcome, so a resumed run knows which cells it already has."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness.config import Matrix
from harness.modelstore import PreparedModel
from harness.records import ConversionRecord


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# The code that decides what a cell comes to: how a toolchain is driven and how its outputs are judged. Editing
# anything else (the command line, the report, its templates) leaves every key, so an interrupted run resumes.
CELL_CODE = ("worker.py", "supervisor.py", "forkserver.py", "pool.py", "protocol.py", "client.py", "tasks.py",
             "judge.py", "patterns.yaml", "compare.py", "verdicts.py", "calibration.py", "mnnfiles.py")


@functools.cache
def harness_digest() -> str:
    """All of the harness code's hash, templates included: the results record it as their provenance."""
    root = Path(__file__).parent
    files = sorted(root.rglob("*.py")) + sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.j2"))
    return digest(*[(str(p.relative_to(root)), p.read_text()) for p in files])


def cell_code_digest() -> str:
    """The hash of the code that decides what a cell comes to (CELL_CODE): part of every key."""
    return code_digest(CELL_CODE)


@functools.cache
def code_digest(names: tuple[str, ...]) -> str:
    """The hash of these files of the harness (read once per process)."""
    root = Path(__file__).parent
    return digest(*[(name, (root / name).read_text()) for name in names])


@dataclass(frozen=True)
class Conversion:
    converter: str
    model: str
    variant: str
    flags: tuple[str, ...]
    quantize: dict | None  # post-training quantization after conversion, if the variant asks for it
    key: str


@dataclass(frozen=True)
class Cell:
    conversion: Conversion
    runtime: str
    api: str
    memory: str  # the runtime's memory mode ("low" turns on dynamic quantization of quantized weights)
    key: str
    setting: str  # what decides a run besides the converted model: runtime, API, memory, settings, inputs, code

    def run_key(self, conversion: ConversionRecord) -> str:
        """The key of this cell's run once its model is converted: its setting and the converted model's content,
        so that byte-identical models from different converters (uuid aside) share one run."""
        return _hash(self.setting, conversion.model_digest, conversion.float_digest)

    @property
    def model(self) -> str:
        return self.conversion.model

    @property
    def variant(self) -> str:
        return self.conversion.variant

    @property
    def converter(self) -> str:
        return self.conversion.converter


@dataclass(frozen=True)
class Plan:
    conversions: list[Conversion]
    cells: list[Cell]

    @cached_property
    def id(self) -> str:
        return _hash(*(c.key for c in self.conversions), *(c.key for c in self.cells))

    def shard(self, index: int, count: int) -> Plan:
        """Shard `index` of `count` (1-based): a stable subset of the cells, chosen by key, and the conversions they
        need. The shards of a plan hold each cell exactly once; `harness merge` puts their results together."""
        cells = [cell for cell in self.cells if int(cell.key[:15], 16) % count == index - 1]
        needed = {cell.conversion.key for cell in cells}
        return Plan([c for c in self.conversions if c.key in needed], cells)


def make_plan(matrix: Matrix, identities: Mapping[str, str], models: Mapping[str, PreparedModel],
              variants: Mapping[str, list[str]]) -> Plan:
    """The product of converters x models x variants, then x runtimes x APIs.

    `identities` maps each usable toolchain to a hash of its provenance; toolchains missing from it
    (unavailable ones) get no cells. `variants` maps each model to the variants it is converted with.
    """
    code = cell_code_digest()
    settings = matrix.run.model_dump()  # limits included: a timeout or out-of-memory verdict is theirs
    limits = {"convert_s": matrix.run.timeouts.convert_s, "memory_limit_mb": matrix.run.memory_limit_mb}
    converters = [t for t in matrix.converter_ids if t in identities]
    runtimes = [t for t in matrix.runtime_ids if t in identities]
    conversions, cells = [], []
    for name, model in models.items():
        inputs = model.inputs_digest()
        for variant_id in variants[name]:
            variant = matrix.variant(variant_id)
            quantize = variant.quantize.model_dump() if variant.quantize else None
            tolerance = model.tolerance or variant.tolerance.model_dump()
            setting = {(runtime, api, memory): digest("run", name, identities[runtime], api, memory, settings,
                                                      tolerance, inputs, code)
                       for runtime in runtimes for api in matrix.run.apis for memory in variant.memory}
            for converter in converters:
                key = digest("convert", name, variant_id, identities[converter], model.sha256, variant.flags, quantize,
                             limits, code)  # two models may share one ONNX file (a prefill and a decode step)
                conversion = Conversion(converter, name, variant_id, tuple(variant.flags), quantize, key)
                conversions.append(conversion)
                cells += [Cell(conversion, runtime, api, memory, _hash(key, value), value)
                          for (runtime, api, memory), value in setting.items()]
    return Plan(conversions, cells)


def _hash(*parts: str) -> str:
    """A key made of keys (cheap: a run plans hundreds of thousands of cells)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()
