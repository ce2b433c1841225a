"""Every conversion is done twice: a converter that writes a different model each time makes a pass luck."""

from __future__ import annotations

from pathlib import Path

from helpers import conv_model

from harness import protocol, verdicts
from harness.mnnfiles import model_difference
from harness.records import Outcome, Verdict
from models import ZOO


def convert_twice(worker_for, tmp_path: Path, version: str) -> tuple[Path, Path]:
    worker, source = worker_for(version), conv_model(tmp_path / "conv.onnx")
    paths = tmp_path / "first.mnn", tmp_path / "second.mnn"
    for path in paths:
        reply = worker.request(protocol.convert_request(source, path))
        assert reply.header["produced"], reply.header["log"]
    return paths


def test_two_real_conversions_differ_only_by_their_uuid_which_is_ignored(worker_for, tmp_path: Path) -> None:
    first, second = convert_twice(worker_for, tmp_path, "3.6.1")
    assert first.read_bytes() != second.read_bytes(), "MNN stamps a random uuid on every conversion"
    assert model_difference(first, second) == ""


def test_a_changed_weight_in_a_real_model_is_found_and_located(worker_for, tmp_path: Path) -> None:
    first, second = convert_twice(worker_for, tmp_path, "3.0.0")
    data = bytearray(second.read_bytes())
    data[-100] ^= 0xFF
    second.write_bytes(bytes(data))
    assert model_difference(first, second) == f"1 of {len(data)} bytes differ, from offset {len(data) - 100}"


def test_an_unstable_conversion_turns_pass_and_wrong_output_into_nondeterministic() -> None:
    difference = "3 of 9276 bytes differ, from offset 8573"
    passed = verdicts.unstable_conversion(Outcome(verdict=Verdict.PASS, stage="compare"), difference)
    assert (passed.verdict, passed.stage) == (Verdict.NONDETERMINISTIC, "convert")
    assert difference in passed.reason and passed.reason.endswith("pass")
    wrong = Outcome(verdict=Verdict.WRONG_OUTPUT, stage="compare", reason="Y: 190 of 192 elements outside")
    assert verdicts.unstable_conversion(wrong, difference).reason.endswith("Y: 190 of 192 elements outside")


def test_an_unstable_conversion_leaves_a_real_failure_its_verdict_with_a_note() -> None:
    crash = Outcome(verdict=Verdict.CRASH, stage="run", reason="killed by SIGSEGV", note="retried")
    marked = verdicts.unstable_conversion(crash, "12 and 14 bytes long")
    assert (marked.verdict, marked.reason) == (Verdict.CRASH, "killed by SIGSEGV")
    assert marked.note == "retried; the tool under test wrote a different model each time: 12 and 14 bytes long"


def _convert(worker, source: Path, path: Path, attempt: int) -> Path:
    reply = worker.request(protocol.convert_request(source, path, attempt=attempt))
    assert reply.header["produced"], reply.header["log"]
    return path


def test_a_converter_that_writes_uninitialized_memory_is_caught_every_time(worker_for, tmp_path: Path) -> None:
    """ConstantOfShape without `value`: real MNN 3.6.1 fills it with whatever memory held (zoo model
    micro-constant-of-shape-default). Workers perturb malloc, so a second attempt differs from the first in every
    worker, fresh or not, and the same attempt gives the same model: the check does not depend on luck."""
    source = tmp_path / "model.onnx"
    source.write_bytes(ZOO["micro-constant-of-shape-default"].build().SerializeToString())
    for round_ in range(2):  # a fresh worker each round: its heap is clean, which used to hide the bug
        worker = worker_for("3.6.1")
        first, second, again = (_convert(worker, source, tmp_path / f"{round_}-{i}.mnn", attempt)
                                for i, attempt in enumerate((0, 1, 0)))
        assert model_difference(first, second), "the second attempt must expose the uninitialized constant"
        assert model_difference(first, again) == "", "the same attempt must give the same model"


def test_a_converter_that_initializes_everything_writes_the_same_model_on_every_attempt(worker_for,
                                                                                       tmp_path: Path) -> None:
    source, worker = conv_model(tmp_path / "conv.onnx"), worker_for("3.0.0")
    first, second = (_convert(worker, source, tmp_path / f"{i}.mnn", i) for i in range(2))
    assert model_difference(first, second) == ""
