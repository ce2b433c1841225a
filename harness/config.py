"""`matrix.yaml`: its schema, and loading it with errors that name the file, key path and value."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.supervisor import default_memory_limit_mb

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)]


class ConfigError(Exception):
    """A user mistake in a config file: one line per problem, no traceback."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PypiSpec(Strict):
    """An MNN release installed from PyPI into a venv of its own."""

    id: Id
    kind: Literal["pypi"]
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]
    requirements: list[str] = Field(default=[], description="extra pip requirements, e.g. a numpy pin")


class SourceSpec(Strict):
    """MNN built from source in Docker (`nox -s build`) at a commit resolved from `ref`."""

    id: Id
    kind: Literal["source"]
    version: Annotated[str, Field(pattern=r"^(\d+\.\d+\.\d+|latest)$",
                                  description="what the built library must report, or 'latest'")]
    repository: str = Field("https://github.com/alibaba/MNN.git",
                            description="git URL, local mirror or plain directory ($MNN_MATRIX_MNN_REPO overrides)")
    ref: str = Field(min_length=1, description="tag, branch or commit; HEAD is the default branch")


ToolchainSpec = Annotated[PypiSpec | SourceSpec, Field(discriminator="kind")]
KINDS = ("pypi", "source")


class Tolerance(Strict):
    """When a run's outputs count as matching the reference; every field set is one check."""

    max_abs_ratio: float | None = Field(None, ge=0, description="MNN's rule: max |mnn - ref| <= ratio * max |ref|")
    atol: float | None = Field(None, ge=0, description="elementwise: |mnn - ref| <= atol + rtol * |ref|")
    rtol: float = Field(0.0, ge=0)
    min_cosine: float | None = Field(None, ge=-1, le=1, description="cosine similarity of the flattened outputs")
    max_rel_l2: float | None = Field(None, ge=0, description="relative error: ||mnn - ref||_2 / ||ref||_2")

    @model_validator(mode="after")
    def _has_a_check(self) -> Tolerance:
        if all(value is None for value in (self.max_abs_ratio, self.atol, self.min_cosine, self.max_rel_l2)):
            raise ValueError("a tolerance needs at least one of max_abs_ratio, atol, min_cosine, max_rel_l2")
        return self


class Quantize(Strict):
    """Post-training int8 quantization with MNN's quantization tool, after conversion."""

    feature: Literal["KL", "EMA", "ADMM"] = Field(description="how activation (feature) scales are calibrated")
    weight: Literal["MAX_ABS", "ADMM"] = Field("MAX_ABS", description="how weight scales are chosen")
    samples: int = Field(8, ge=1, le=256, description="calibration samples, generated from the input specs")


class Variant(Strict):
    """A named set of converter flags, with the tolerance its outputs are judged by."""

    id: Id
    flags: list[str] = []
    quantize: Quantize | None = None
    memory: list[Literal["normal", "low", "high"]] = Field(
        ["normal"], min_length=1, description="runtime memory modes to run under ('low' enables dynamic quantization)")
    tolerance: Tolerance
    description: str = ""


class ModelSelection(Strict):
    """Zoo models picked by name or by tag, and the variants to convert them with."""

    name: str | None = None
    tag: str | None = None
    variants: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _name_or_tag(self) -> ModelSelection:
        if (self.name is None) == (self.tag is None):
            raise ValueError("give exactly one of name or tag")
        return self


class Timeouts(Strict):
    convert_s: float = Field(300, gt=0)
    run_s: float = Field(120, gt=0)


class RunSettings(Strict):
    """How every converted model is run, identically under every runtime."""

    apis: list[Literal["module", "session"]] = Field(min_length=1)
    threads: int = Field(ge=1, le=256)
    precision: Literal["normal", "high", "low"]
    repeat: int = Field(ge=2, le=100, description="runs per cell; disagreeing runs make it nondeterministic")
    timeouts: Timeouts = Timeouts()
    memory_limit_mb: int = Field(default_factory=default_memory_limit_mb, ge=64, description=(
        "memory cap of every worker, in MiB (default: 4096, or the machine's memory / (4 x cores + 1) if smaller)"))


class NodeSuite(Strict):
    """ONNX's backend node conformance suite (`--suite onnx-node`)."""

    enabled: bool = Field(False, description="run it with every `nox -s matrix`, not only with --suite onnx-node")
    variants: list[str] = Field(["fp32"], min_length=1)


class Matrix(Strict):
    """The whole matrix: toolchains x models x variants, run under the given settings."""

    toolchains: list[ToolchainSpec] = Field(min_length=1)
    converters: list[str] | None = Field(None, description="toolchain ids that convert (default: all)")
    runtimes: list[str] | None = Field(None, description="toolchain ids that run (default: all)")
    variants: list[Variant] = Field(min_length=1)
    models: list[ModelSelection] = Field(min_length=1)
    onnx_node: NodeSuite = NodeSuite()
    run: RunSettings

    def toolchain(self, id_: str) -> PypiSpec | SourceSpec:
        return next(t for t in self.toolchains if t.id == id_)

    @property
    def converter_ids(self) -> list[str]:
        return self.converters if self.converters is not None else [t.id for t in self.toolchains]

    @property
    def runtime_ids(self) -> list[str]:
        return self.runtimes if self.runtimes is not None else [t.id for t in self.toolchains]

    def variant(self, id_: str) -> Variant:
        return next(v for v in self.variants if v.id == id_)


def load_matrix(path: Path, model_names: set[str], model_tags: set[str]) -> Matrix:
    """Read and validate a matrix file; raise ConfigError listing every problem found."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    try:
        data, lines = _parse_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
    except _DuplicateKey as dup:
        raise ConfigError([f"{path}:{dup.line}: {dup.path}: duplicate key {dup.key!r}"]) from None
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as error:
        raise ConfigError([_format(path, lines, *_located(e)) for e in error.errors()]) from None
    problems = [_format(path, lines, loc, msg, value) for loc, msg, value in _reference_problems(
        matrix, model_names, model_tags)]
    if problems:
        raise ConfigError(problems)
    return matrix


def _reference_problems(matrix: Matrix, names: set[str], tags: set[str]) -> list[tuple[tuple, str, object]]:
    """Duplicate ids and references to undefined toolchains, variants, models and tags."""
    problems = []
    for section in ("toolchains", "variants"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(matrix, section)):
            if item.id in seen:
                problems.append(((section, i, "id"), "duplicate id", item.id))
            seen.add(item.id)
    toolchain_ids = {t.id for t in matrix.toolchains}
    for section in ("converters", "runtimes"):
        for i, ref in enumerate(getattr(matrix, section) or []):
            if ref not in toolchain_ids:
                problems.append(((section, i), f"undefined toolchain (defined: {', '.join(sorted(toolchain_ids))})",
                                 ref))
    variant_ids = {v.id for v in matrix.variants}
    undefined_variant = f"undefined variant (defined: {', '.join(sorted(variant_ids))})"
    variant_refs = [(("onnx_node", "variants", j), v) for j, v in enumerate(matrix.onnx_node.variants)]
    for i, selection in enumerate(matrix.models):
        variant_refs += [(("models", i, "variants", j), v) for j, v in enumerate(selection.variants)]
        if selection.name is not None and selection.name not in names:
            problems.append((("models", i, "name"), f"no such model (known: {', '.join(sorted(names))})",
                             selection.name))
        if selection.tag is not None and selection.tag not in tags:
            problems.append((("models", i, "tag"), f"no model has this tag (known: {', '.join(sorted(tags))})",
                             selection.tag))
    problems += [(loc, undefined_variant, v) for loc, v in variant_refs if v not in variant_ids]
    return problems


def _located(error: dict) -> tuple[tuple, str, object]:
    """Key path, message and value of a pydantic error; a bad `kind` is reported at the kind key."""
    if error["type"] == "union_tag_invalid":
        tag = error["ctx"]["tag"]
        return (*error["loc"], "kind"), f"unknown kind (known: {', '.join(KINDS)})", tag
    return error["loc"], error["msg"], error.get("input")


def _format(path: Path, lines: dict[tuple, int], loc: tuple, message: str, value: object) -> str:
    loc = tuple(part for i, part in enumerate(loc) if not (isinstance(part, str) and part.startswith("function-"))
                and not (part in KINDS and i and isinstance(loc[i - 1], int)))  # union tags are not keys
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    where = f"{path}:{line}" if line else str(path)
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return f"{where}: {key}: {message}{shown}"


class _DuplicateKey(Exception):
    def __init__(self, path: str, key: str, line: int) -> None:
        self.path, self.key, self.line = path, key, line


def _parse_yaml(text: str) -> tuple[object, dict[tuple, int]]:
    """Load YAML, also returning the line of every key path; duplicate keys are an error."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, loc: tuple) -> None:
        lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                if key.value in seen:
                    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
                    raise _DuplicateKey(where or "(top level)", key.value, key.start_mark.line + 1)
                seen.add(key.value)
                walk(value, (*loc, key.value))
                lines[(*loc, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))
    if root is not None:
        walk(root, ())
    return yaml.safe_load(text), lines
