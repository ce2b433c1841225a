"""The results document: what a run records, as typed records with a published JSON schema.

Renderers (Markdown, HTML, diffs) read only this, so any table can be regenerated from the JSON.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Verdict(str, Enum):
    """The outcome of a cell; every failing verdict comes with a stage, a reason and a log excerpt."""

    PASS = "pass"
    CONVERT_ERROR = "convert-error"
    QUANTIZE_ERROR = "quantize-error"
    LOAD_ERROR = "load-error"
    UNSUPPORTED_OP = "unsupported-op"
    SHAPE_ERROR = "shape-error"
    UNCLASSIFIED = "unclassified-error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out-of-memory"
    WRONG_SHAPE = "wrong-shape"
    WRONG_OUTPUT = "wrong-output"
    NONDETERMINISTIC = "nondeterministic"
    API_UNSUPPORTED = "api-unsupported"
    NOT_RUN = "not-run"


# Verdicts that say nothing about the pairing's compatibility: an API's documented limit (the Session API
# cannot compute shapes from input values; pymnn cannot take an int8 input), or a run the harness could not
# feed. They are shown apart and never counted against an op, a model or a pairing.
NEUTRAL_VERDICTS = frozenset({Verdict.API_UNSUPPORTED, Verdict.NOT_RUN})


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outcome(Record):
    """A verdict with the evidence for it."""

    verdict: Verdict
    stage: str  # convert, load, run, compare
    reason: str = ""
    ops: list[str] = Field(default_factory=list)  # operator types the log blames, if it names any
    pattern: str | None = None  # id of the log pattern that classified a failure
    log_excerpt: str = ""
    note: str = ""  # e.g. a crash that a fresh worker did not reproduce


class OutputDelta(Record):
    """How one output of MNN compares with the reference."""

    name: str
    shape: list[int]
    reference_shape: list[int]
    dtype: str = ""  # MNN's output dtype
    reference_dtype: str = ""
    mismatch: str = ""  # how the shape or the kind of dtype differs from the reference ('' if it does not)
    max_abs: float | None = None  # None when no finite element pair exists
    max_rel: float | None = None  # elementwise, ignoring elements below 0.1% of max |ref|
    rel_l2: float | None = None  # ||mnn - ref||_2 / ||ref||_2
    cosine: float | None = None
    mnn_rule_ratio: float | None = None  # max_abs / max |ref|; MNN's own rule passes at <= 0.01
    mnn_rule_pass: bool = False
    out_of_tolerance: int = 0
    elements: int = 0
    nan: int = 0
    inf: int = 0
    reference_nan: int = 0
    reference_inf: int = 0
    failed_checks: list[str] = Field(default_factory=list)


class ToolchainRecord(Record):
    id: str
    kind: str
    version: str
    roles: list[str]
    status: str  # "ok" or "unavailable"
    reason: str = ""
    log_tail: str = ""
    provenance: dict = Field(default_factory=dict)
    converter_flags: list[str] = Field(default_factory=list)  # flags this converter's --help lists
    # what its worker can do: convert, quantize, run, llm (PyMNN's LLM runtime)
    capabilities: list[str] = Field(default_factory=list)


class ModelRecord(Record):
    name: str
    sha256: str
    source: str  # "zoo", "onnx-node", or the path of the user's file
    tags: list[str]
    guards: str
    inputs: dict[str, dict]
    outputs: list[str]
    tolerance: dict | None = None  # the model's own tolerance (node test cases), over the variant's
    onnxruntime: str = ""  # node cases: onnxruntime's second opinion (agrees, disagrees: ..., cannot run: ...)
    run_skip: str = ""  # why its runs are not made (inputs or outputs no MNN API can carry), if they are not


class ExcludedCase(Record):
    """A node test case that does not run, and why (`rule` names the exclusion rule)."""

    name: str
    op: str
    rule: str
    reason: str


class PairSupport(Record):
    passed: int  # cases whose every counted cell passes on this pairing
    run: int  # cases with a cell counted: not every cell neutral (api-unsupported, not-run)


class OpSupport(Record):
    """One ONNX op across the matrix (node suite only)."""

    op: str
    cases: int
    excluded: int
    pairs: dict[str, PairSupport]  # "converter -> runtime"
    first_converter: str | None  # oldest converter whose output passes every case on some runtime
    first_runtime: str | None  # oldest runtime that passes every case from some converter
    regressions: list[str]  # "passes on A -> A, fails on B -> B" with B newer than A
    converter_gaps: list[str]  # converters that fail to convert some case (convert-error, crash, timeout)
    runtime_gaps: list[str]  # pairs where a case converted fine but the runtime could not execute it
    form: str = "as-is"  # "as-is" (ONNX's graphs) or "const" (non-data inputs folded into initializers)
    # api -> "converter -> runtime" -> that API's cells alone
    apis: dict[str, dict[str, PairSupport]] = Field(default_factory=dict)
    # case -> onnxruntime's opinion, where it does not reproduce the case
    onnxruntime_flags: dict[str, str] = Field(default_factory=dict)


class Coverage(Record):
    """A toolchain converting and running its own models, in the ONNX backend report's terms."""

    toolchain: str
    ops_passed: int  # operators all of whose cases pass
    ops_loaded: int  # operators with at least one case run
    cases_passed: int
    cases_run: int
    api: str = ""  # the Python API a user runs with ('' for a score over both)
    form: str = "as-is"


class VariantRecord(Record):
    id: str
    flags: list[str]
    tolerance: dict
    description: str = ""


class ConversionRecord(Record):
    """One (converter toolchain, model, variant) conversion. Large results documents leave out its key and
    timings, as they do a cell's."""

    key: str = ""
    converter: str
    model: str
    variant: str
    flags: list[str]
    ignored_flags: list[str] = Field(default_factory=list)  # flags the converter's --help does not list
    quantize: dict | None = None  # post-training quantization settings, for quantized variants
    # the methods the quantization tool says it used (it may switch, e.g. to EMA)
    quantized_with: dict = Field(default_factory=dict)
    outcome: Outcome
    reconversion_differs: str = ""  # how a second conversion (or quantization) differed from the first ('' if not)
    size_bytes: int = 0  # the final model (quantized, for quantized variants)
    float_size_bytes: int = 0  # the float model a quantized variant started from
    convert_s: float | None = None
    quantize_s: float | None = None
    wall_s: float = 0.0
    model_digest: str = ""  # the converted model's hash without MNN's uuid: identical models share their runs
    float_digest: str = ""  # the same of a quantized variant's float model


class CellRecord(Record):
    """One converted model run under one runtime toolchain with one API. Large results documents leave
    out the bookkeeping fields (key, timings): see harness.report.document."""

    key: str = ""
    converter: str
    runtime: str
    model: str
    variant: str
    api: str
    memory: str = "normal"
    outcome: Outcome
    # against the reference (onnxruntime, or a node case's expected outputs)
    outputs: list[OutputDelta] = Field(default_factory=list)
    # quantized variants: against the same runtime's float model
    outputs_vs_float: list[OutputDelta] = Field(default_factory=list)
    # inputs fed in another dtype than ONNX's ('int64->int32': the converted model's), or not
    fed: dict[str, str] = Field(default_factory=dict)
    repeats_agree: bool | None = None
    reused_from: str = ""  # whose run of the same model bytes this is ('' if its own, made in this run): a converter,
    # for an identical model converted by another converter, and the start of the earlier run that made it, if any
    load_s: float | None = None
    run_s: list[float] = Field(default_factory=list)
    wall_s: float = 0.0


class RunInfo(Record):
    started: str
    finished: str
    duration_s: float
    phases: dict[str, float]  # seconds per phase: models, toolchains, convert, run
    jobs: int
    resumed_cells: int  # cells whose runs came from the store (an earlier or interrupted run) or another converter's
    plan: str = ""  # the hash of every conversion and cell key: a run of the same plan writes the same document
    selection: dict
    harness: dict


class Results(Record):
    """The whole run of one suite."""

    schema_version: int = SCHEMA_VERSION
    suite: str = "zoo"  # "zoo" (the model zoo and the user's models) or "onnx-node"
    run: RunInfo
    host: dict
    settings: dict
    toolchains: list[ToolchainRecord]
    models: list[ModelRecord]
    variants: list[VariantRecord]
    excluded: list[ExcludedCase] = Field(default_factory=list)
    conversions: list[ConversionRecord]
    cells: list[CellRecord]
    op_support: list[OpSupport] = Field(default_factory=list)
    coverage: list[Coverage] = Field(default_factory=list)
