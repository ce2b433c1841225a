"""Numerical deltas and the tolerance policy."""

from __future__ import annotations

import numpy as np

from harness.compare import compare_output, disagreement
from harness.config import Tolerance

FP32 = Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999)
MNN_RULE = Tolerance(max_abs_ratio=0.01)


def test_identical_outputs_pass_with_zero_deltas() -> None:
    ref = np.linspace(-1, 1, 100, dtype=np.float32)
    delta = compare_output("y", ref.copy(), ref, FP32)
    assert delta.failed_checks == [] and delta.max_abs == 0 and delta.cosine == 1.0 and delta.mnn_rule_pass


def test_mnn_rule_is_max_abs_over_max_abs_reference() -> None:
    ref = np.array([10.0, -20.0, 5.0], np.float32)
    actual = ref + np.array([0.1, 0.0, -0.3], np.float32)
    delta = compare_output("y", actual, ref, MNN_RULE)
    assert abs(delta.mnn_rule_ratio - 0.3 / 20) < 1e-6 and not delta.mnn_rule_pass
    assert delta.failed_checks == ["max abs diff / max |ref| = 0.015 > 0.01"]
    assert abs(delta.max_rel - 0.3 / 5) < 1e-6


def test_elementwise_tolerance_counts_the_elements_outside() -> None:
    ref = np.ones(1000, np.float32)
    actual = ref.copy()
    actual[:7] += 0.01
    delta = compare_output("y", actual, ref, FP32)
    assert delta.out_of_tolerance == 7
    assert any("7 of 1000 elements outside" in check for check in delta.failed_checks)


def test_nan_where_the_reference_is_finite_fails_even_when_finite_values_agree() -> None:
    ref = np.ones(10, np.float32)
    actual = ref.copy()
    actual[3] = np.nan
    delta = compare_output("y", actual, ref, MNN_RULE)
    assert delta.nan == 1 and delta.reference_nan == 0
    assert delta.failed_checks[0] == "1 NaN/Inf where the reference differs" and not delta.mnn_rule_pass


def test_nan_and_inf_matching_the_reference_are_fine() -> None:
    ref = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    delta = compare_output("y", ref.copy(), ref, FP32)
    assert delta.failed_checks == [] and delta.reference_nan == 1 and delta.reference_inf == 2


def test_integer_outputs_must_match_exactly_whatever_the_dtype() -> None:
    ref = np.array([1, 2, 3], np.int64)
    assert compare_output("i", np.array([1, 2, 3], np.int32), ref, MNN_RULE).failed_checks == []
    assert compare_output("i", np.array([1, 2, 4], np.int32), ref, MNN_RULE).failed_checks == [
        "1 of 3 integer elements differ"]


def test_an_output_of_another_shape_never_passes_and_the_reason_gives_both_shapes() -> None:
    ref = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert compare_output("y", np.arange(4, dtype=np.float32), ref, FP32).failed_checks == [
        "shape [4] != reference [2, 3]"]
    extra_dim = compare_output("y", np.arange(6, dtype=np.float32).reshape(1, 2, 3), ref, FP32)
    assert extra_dim.failed_checks == ["shape [1, 2, 3] != reference [2, 3] (only size-1 dimensions differ)"]
    assert extra_dim.mismatch and extra_dim.max_abs == 0 and not extra_dim.mnn_rule_pass  # values compared flat
    transposed = compare_output("y", np.arange(6, dtype=np.float32).reshape(3, 2), ref, FP32)
    assert transposed.failed_checks == ["shape [3, 2] != reference [2, 3]"]


def test_integer_and_bool_outputs_are_compared_with_their_dtype() -> None:
    ids = np.array([3, 1, 2], np.int64)
    assert compare_output("i", ids.astype(np.int32), ids, FP32).failed_checks == []  # MNN holds int64 as int32
    assert compare_output("i", ids.astype(np.float32), ids, FP32).failed_checks == [
        "dtype float32 where the reference is int64"]
    assert compare_output("b", np.array([1, 0], np.int32), np.array([True, False]), FP32).failed_checks == []
    assert compare_output("b", np.array([2, 0], np.int32), np.array([True, False]), FP32).failed_checks == [
        "1 of 2 integer elements differ"]
    assert compare_output("f", np.ones(2, np.int32), np.ones(2, np.float32), FP32).mismatch == (
        "dtype int32 where the reference is float32")


def test_cosine_catches_a_sign_flip_that_a_loose_ratio_would_not() -> None:
    ref = np.array([1e-3, 1.0], np.float32)
    delta = compare_output("y", np.array([-1e-3, 1.0], np.float32), ref, Tolerance(max_abs_ratio=0.01, min_cosine=1))
    assert delta.mnn_rule_pass and any(check.startswith("cosine") for check in delta.failed_checks)


def test_disagreement_between_repeated_runs_is_described() -> None:
    run = {"y": np.ones(4, np.float32)}
    flaky = {"y": np.array([1, np.nan, 1, 1], np.float32)}
    assert disagreement([run, run, run]) is None
    assert disagreement([run, run, flaky]) == "run 3 of 3 differs from run 1 in y: 1 of 4 elements; NaN 1 vs 0 in run 1"
    nan_run = {"y": np.full(2, np.nan, np.float32)}
    assert disagreement([nan_run, {"y": np.full(2, np.nan, np.float32)}]) is None


def test_a_wrong_shape_is_reported_as_such_even_when_repeats_also_differ() -> None:
    """A wrong shape is a fact whatever the values: a run whose repeats disagree (uninitialized memory) must not
    flip between nondeterministic and wrong-shape from one run to the next."""
    from harness import verdicts
    from harness.records import Verdict

    ref = np.arange(6, dtype=np.float32).reshape(2, 3)
    delta = compare_output("y", np.zeros((1, 2, 3), np.float32), ref, FP32)
    outcome = verdicts.judge_outputs([delta], "run 2 of 3 differs from run 1 in y", "")
    assert outcome.verdict == Verdict.WRONG_SHAPE and "repeats differ" in outcome.reason
    fine = compare_output("y", ref.copy(), ref, FP32)
    assert verdicts.judge_outputs([fine], "run 2 of 3 differs", "").verdict == Verdict.NONDETERMINISTIC
