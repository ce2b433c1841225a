"""The results document: a large run's is written as tables of distinct records and reads back to the same records;
an 11-toolchain node-suite run's document and page stay small enough to keep in git."""

from __future__ import annotations

import gc
import gzip
import random
from functools import cache
from pathlib import Path

import pytest
import yaml

from harness import report
from harness.matrix import run_matrix
from harness.merge import in_order
from harness.opsupport import version_key
from harness.progress import Progress
from harness.records import Results
from harness.report import PER_CELL_BOOKKEEPING, PER_CONVERSION_BOOKKEEPING, document, read_results, write_results
from harness.selection import Selection
from harness.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
NODE_DOCUMENT = REPO / "results" / "onnx-node" / "results.json.gz"
ELEVEN = ("src-2.9.4", "pypi-3.0.0", "src-3.0.1", "pypi-3.1.0", "pypi-3.2.0", "pypi-3.4.0", "pypi-3.4.1",
          "pypi-3.5.0", "pypi-3.6.0", "pypi-3.6.1", "src-latest")  # the default matrix's toolchains
CONFIG = {
    "toolchains": [{"id": "old", "kind": "pypi", "version": "3.0.0"},
                   {"id": "new", "kind": "pypi", "version": "3.6.1"}],
    "variants": [{"id": "fp32", "flags": [], "tolerance": {"max_abs_ratio": 0.001}},
                 {"id": "wq8", "flags": ["--weightQuantBits", "8"], "memory": ["normal", "low"],
                  "tolerance": {"max_abs_ratio": 0.05}}],
    "models": [{"name": "micro-silu", "variants": ["fp32", "wq8"]},
               {"name": "micro-shape-start-end", "variants": ["fp32"]}],
    "run": {"apis": ["module", "session"], "threads": 1, "precision": "normal", "repeat": 2},
}


def without_bookkeeping(results: Results) -> Results:
    """What a large document keeps of a run: no per-cell or per-conversion keys and timings."""
    def clear(record, fields: set[str]):
        return record.model_copy(update={name: type(record).model_fields[name].get_default(call_default_factory=True)
                                         for name in fields})

    return in_order(results.model_copy(update={
        "cells": [clear(c, PER_CELL_BOOKKEEPING) for c in results.cells],
        "conversions": [clear(c, PER_CONVERSION_BOOKKEEPING) for c in results.conversions]}))


def round_trip(results: Results, tmp_path: Path) -> Results:
    name, data = document(results)
    (tmp_path / name).write_bytes(data)
    return read_results(tmp_path / name)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, workspace: Workspace, toolchains) -> Results:
    """A real run: two MNN releases, passes and failures, weight quantization at two memory modes."""
    root = tmp_path_factory.mktemp("document")
    (root / "matrix.yaml").write_text(yaml.safe_dump(CONFIG))
    return run_matrix(root / "matrix.yaml", Selection(), Workspace(root / "ws", shared_envs=workspace.envs),
                      jobs=2, fresh=True, progress=Progress(quiet=True))


def test_a_small_run_reads_back_from_its_plain_document_and_from_the_compact_one(
        small_run: Results, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {c.outcome.verdict.value for c in small_run.cells} > {"pass"}, "a run with failures"
    assert round_trip(small_run, tmp_path) == small_run  # plain JSON: everything, timings too
    monkeypatch.setattr(report, "COMPACT_ABOVE", 0)
    reused = small_run.model_copy(update={"cells": [c.model_copy(update={"reused_from": "new"}) if i % 3 else c
                                                    for i, c in enumerate(small_run.cells)]})
    name, data = document(reused)
    assert name == "results.json.gz" and b'"cells_table"' in gzip.decompress(data)
    assert round_trip(reused, tmp_path) == without_bookkeeping(reused)


def test_a_few_cells_that_make_a_large_document_are_compacted_too(small_run: Results, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The llm suite's cells carry ids, logits and log lines: a document of its few cells can pass 2 MB."""
    assert document(small_run)[0] == "results.json"
    monkeypatch.setattr(report, "PLAIN_UP_TO", 1000)
    assert document(small_run)[0] == "results.json.gz"
    assert round_trip(small_run, tmp_path) == without_bookkeeping(small_run)


def test_the_compact_document_is_the_same_whatever_order_the_records_come_in(
        small_run: Results, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "COMPACT_ABOVE", 0)
    shuffled = list(small_run.cells)
    random.Random(1).shuffle(shuffled)
    assert document(small_run.model_copy(update={"cells": shuffled})) == document(small_run)


def test_records_of_one_identity_are_all_kept(small_run: Results, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "COMPACT_ABOVE", 0)
    doubled = small_run.model_copy(update={"cells": [*small_run.cells, small_run.cells[0]]})
    assert round_trip(doubled, tmp_path) == without_bookkeeping(doubled)


def test_an_older_compact_document_still_reads(small_run: Results, tmp_path: Path) -> None:
    """Documents written before the tables (the published history has them) are records with defaults left out."""
    older = small_run.model_dump_json(exclude_defaults=True, exclude={
        "cells": {"__all__": PER_CELL_BOOKKEEPING}, "conversions": {"__all__": PER_CONVERSION_BOOKKEEPING}})
    (tmp_path / "results.json.gz").write_bytes(gzip.compress(older.encode()))
    assert read_results(tmp_path / "results.json.gz") == without_bookkeeping(small_run)


def test_the_committed_zoo_run_reads_back_from_its_compact_document(tmp_path: Path) -> None:
    """A full zoo run: quantized variants, memory modes, conversions with quantization settings."""
    committed = next((REPO / "results" / name for name in ("results.json.gz", "results.json")
                      if (REPO / "results" / name).exists()), None)
    if committed is None:
        pytest.skip("needs results/results.json[.gz]: `nox -s matrix` writes it")
    results = without_bookkeeping(read_results(committed))
    assert len(results.cells) > report.COMPACT_ABOVE and any(c.quantize for c in results.conversions)
    assert round_trip(results, tmp_path) == results


@cache
def eleven_toolchain_node_run() -> Results:
    """The committed node-suite run on the default matrix's 11 toolchains (650,000 cells): a toolchain it lacks
    copies the cells, conversions and op support of the nearest older one it has."""
    if not NODE_DOCUMENT.exists():
        pytest.skip(f"needs {NODE_DOCUMENT.relative_to(REPO)}: `nox -s matrix` writes it")
    enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of new records, none of them garbage
    try:
        return _eleven(read_results(NODE_DOCUMENT))
    finally:
        if enabled:
            gc.enable()


def _eleven(results: Results) -> Results:
    have = {t.id: t for t in results.toolchains}
    ordered = sorted(have.values(), key=lambda t: version_key(t.version))
    copy_of = {}
    for new in ELEVEN:
        version = version_key(new.split("-")[1])
        copy_of[new] = new if new in have else [t.id for t in ordered if version_key(t.version) < version][-1]
    toolchains = [have[new] if new in have else have[copy_of[new]].model_copy(
        update={"id": new, "version": new.split("-")[1]}) for new in ELEVEN]
    cells: dict[tuple[str, str], list] = {}
    for c in results.cells:
        cells.setdefault((c.converter, c.runtime), []).append(c)
    conversions: dict[str, list] = {}
    for c in results.conversions:
        conversions.setdefault(c.converter, []).append(c)

    def pairs(of: dict) -> dict:
        return {f"{k} -> {r}": of[f"{copy_of[k]} -> {copy_of[r]}"] for k in ELEVEN for r in ELEVEN
                if f"{copy_of[k]} -> {copy_of[r]}" in of}

    return in_order(results.model_copy(update={
        "toolchains": toolchains,
        "cells": [c.model_copy(update={"converter": k, "runtime": r})
                  for k in ELEVEN for r in ELEVEN for c in cells.get((copy_of[k], copy_of[r]), [])],
        "conversions": [c.model_copy(update={"converter": k}) for k in ELEVEN for c in conversions.get(copy_of[k], [])],
        "op_support": [o.model_copy(update={"pairs": pairs(o.pairs), "apis": {a: pairs(p) for a, p in o.apis.items()}})
                       for o in results.op_support],
        "coverage": [c.model_copy(update={"toolchain": t}) for t in ELEVEN for c in results.coverage
                     if c.toolchain == copy_of[t]]}))


@pytest.fixture(scope="module")
def eleven(tmp_path_factory: pytest.TempPathFactory) -> tuple[Results, Path]:
    results = eleven_toolchain_node_run()
    out = tmp_path_factory.mktemp("eleven")
    write_results(results, out)
    return results, out


def test_an_eleven_toolchain_node_run_reads_back_from_a_document_under_one_and_a_half_megabytes(eleven) -> None:
    results, out = eleven
    assert len(results.toolchains) == 11 and len(results.cells) > 600_000
    assert (out / "results.json.gz").stat().st_size < 1_500_000
    assert read_results(out / "results.json.gz") == results  # read from a document without bookkeeping, in order


def test_an_eleven_toolchain_node_run_has_a_page_under_1_9_megabytes(eleven) -> None:
    _, out = eleven
    assert (out / "results.html").stat().st_size < 1_900_000
