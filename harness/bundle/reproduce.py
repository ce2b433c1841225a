"""Reproduce one mnn-matrix failure with MNN alone (plus numpy): `sh reproduce.sh` runs it end to end.

    python reproduce.py convert   # with the converter's MNN: model.onnx -> converted.mnn
    python reproduce.py run       # with the runtime's MNN: run converted.mnn, print the verdicts

Each step runs in a child process, so a crash is reported (with its signal) instead of ending the
script. `cell.json` says what the matrix did; `worker.py` is the harness's own MNN code, unchanged.
"""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
STAGE_VERDICTS = {"convert": "convert-error", "quantize": "quantize-error"}


def path(name):
    return os.path.join(HERE, name)


def read(name, default=None):
    """A bundle file's text (JSON files parsed), or `default` if it is not there."""
    if not os.path.exists(path(name)):
        return default
    with open(path(name), errors="replace") as file:
        return json.load(file) if name.endswith(".json") else file.read()


CELL = read("cell.json")
PATTERNS = read("patterns.json")


def child(step):
    """Runs inside the child process: one step with worker.py's own functions; writes a JSON result."""
    sys.path.insert(0, HERE)
    import worker

    worker.NativeLog(path("native-{}.log".format(step.replace(":", "-"))))  # unbuffered, so a crash loses nothing
    if step == "convert":
        target = "float.mnn" if CELL["quantize"] else "converted.mnn"
        result, _ = worker.convert({"src": path("model.onnx"), "dst": path(target), "flags": CELL["flags"]}, {})
    elif step == "quantize":
        config = read("calibration/config.json")
        config["path"] = path("calibration/samples")  # the samples travel with the bundle
        with open(path("calibration/local.json"), "w") as file:
            json.dump(config, file)
        result, _ = worker.quantize({"src": path("float.mnn"), "dst": path("converted.mnn"),
                                     "config": path("calibration/local.json")}, {})
    else:
        api, memory = step.split(":")
        with np.load(path("inputs.npz")) as data:
            inputs = {name: data[name] for name in CELL["inputs"]}
        header = {"model": path("converted.mnn"), "api": api, "memory": memory, "inputs": CELL["inputs"],
                  "outputs": CELL["outputs"], **CELL["settings"]}
        try:
            result, arrays = worker.run(header, inputs)
        except worker.Failure as failure:
            result = {"error": str(failure), "stage": failure.stage}
        else:
            np.savez(path(f"outputs-{api}-{memory}.npz"), **arrays)
    with open(path(f"result-{step.replace(':', '-')}.json"), "w") as file:
        json.dump(result, file)


def step(name):
    """Run a step in a child; return (result or None, exit description, its native output)."""
    slug = name.replace(":", "-")
    for stale in (f"result-{slug}.json", f"native-{slug}.log"):
        if os.path.exists(path(stale)):
            os.remove(path(stale))
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name])
    output = read(f"native-{slug}.log", "")
    if done.returncode < 0:
        return None, f"worker died: {signal.Signals(-done.returncode).name} (signal {-done.returncode})", output
    return read(f"result-{slug}.json"), f"exit code {done.returncode}", output


def classify(stage, text):
    for pattern in PATTERNS:
        if stage in pattern["stages"]:
            found = re.search(pattern["regex"], text)
            if found:
                return STAGE_VERDICTS.get(stage, pattern["verdict"]), pattern["id"]
    return STAGE_VERDICTS.get(stage, "unclassified-error"), None


def failed_checks(actual, reference, tolerance):
    """The tolerance checks an output fails, as the matrix applies them."""
    if actual.size != reference.size:
        return [f"shape {list(actual.shape)} != reference {list(reference.shape)}"]
    a, r = actual.astype(np.float64).reshape(reference.shape), reference.astype(np.float64)
    both = np.isfinite(a) & np.isfinite(r)
    special = int(np.count_nonzero(~both & ~((np.isnan(a) & np.isnan(r)) | (a == r))))
    failed = [f"{special} NaN/Inf where the reference differs"] if special else []
    diff, ref = np.abs(a[both] - r[both]), np.abs(r[both])
    if reference.dtype.kind in "biu":
        return failed + (["integer elements differ"] if np.any(diff) else [])
    max_abs, max_ref = (float(diff.max()) if diff.size else 0.0), (float(ref.max()) if ref.size else 0.0)
    ratio = max_abs / max_ref if max_ref > 0 else (0.0 if max_abs == 0 else float("inf"))
    norm_a, norm_r = float(np.linalg.norm(a[both])), float(np.linalg.norm(r[both]))
    cosine = 1.0 if not diff.size or norm_a == norm_r == 0 else (
        float(np.dot(a[both], r[both]) / (norm_a * norm_r)) if norm_a and norm_r else 0.0)
    rel_l2 = float(np.linalg.norm(diff)) / norm_r if norm_r else (0.0 if not np.any(diff) else float("inf"))
    if tolerance.get("max_abs_ratio") is not None and ratio > tolerance["max_abs_ratio"]:
        failed.append("max abs diff / max |ref| = {:.3g} > {:g}".format(ratio, tolerance["max_abs_ratio"]))
    if tolerance.get("atol") is not None and np.any(diff > tolerance["atol"] + tolerance.get("rtol", 0) * ref):
        failed.append("elements outside atol/rtol")
    if tolerance.get("min_cosine") is not None and cosine < tolerance["min_cosine"]:
        failed.append("cosine {:.6g} < {:g}".format(cosine, tolerance["min_cosine"]))
    if tolerance.get("max_rel_l2") is not None and rel_l2 > tolerance["max_rel_l2"]:
        failed.append("relative L2 error {:.3g} > {:g}".format(rel_l2, tolerance["max_rel_l2"]))
    return failed


def judge_run(api, memory):
    result, exit_text, output = step(f"{api}:{memory}")
    if result is None:
        return ("crash" if exit_text.startswith("worker died") else "unclassified-error"), exit_text, output
    if "error" in result:
        verdict, _ = classify(result["stage"], output + "\n" + result["error"])
        return verdict, result["error"], output
    with np.load(path("expected.npz")) as data:
        expected = {name: data[name] for name in CELL["outputs"]}
    with np.load(path(f"outputs-{api}-{memory}.npz")) as data:
        repeats = [{name: data[f"{i}/{name}"] for name in CELL["outputs"]}
                   for i in range(CELL["settings"]["repeat"])]
    for other in repeats[1:]:
        if any(not np.array_equal(repeats[0][n], other[n], equal_nan=repeats[0][n].dtype.kind == "f")
               for n in CELL["outputs"]):
            return "nondeterministic", "repeated runs disagree", output
    failed = [f"{n}: {c}" for n in CELL["outputs"] for c in failed_checks(repeats[0][n], expected[n],
                                                                                 CELL["tolerance"])]
    return ("wrong-output", "; ".join(failed), output) if failed else ("pass", "", output)


def main():
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2])
    command = sys.argv[1] if len(sys.argv) > 1 else "run"
    if command == "convert":
        for stage in ("convert", "quantize") if CELL["quantize"] else ("convert",):
            result, exit_text, output = step(stage)
            if result is None or not result.get("produced"):
                if result is None:
                    verdict = "crash" if exit_text.startswith("worker died") else "unclassified-error"
                else:
                    verdict = classify(stage, output)[0]
                print(output[-3000:])
                reason = exit_text if result is None else "no model written"
                print(f"VERDICT {verdict} at {stage}: {reason}")
                return 1
        print("converted: converted.mnn")
        return 0
    worst = 0
    for api in CELL["apis"]:
        for memory in CELL["memory"]:
            verdict, reason, output = judge_run(api, memory)
            if verdict != "pass":
                print(output[-3000:])
                worst = 1
            print(f"VERDICT {verdict} api={api} memory={memory}: {reason}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
