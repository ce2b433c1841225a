"""Reproduce one mnn-matrix failure with MNN alone (plus numpy): `sh reproduce.sh` runs it end to end.

    python reproduce.py convert   # with the converter's MNN: model.onnx -> converted.mnn (repeated, and compared)
    python reproduce.py run       # with the runtime's MNN: run converted.mnn, print the verdicts

Each step runs in a child process, so a crash is reported (with its signal) instead of ending the script.
`cell.json` says what the matrix did; `worker.py` and `judge.py` are the harness's own code, unchanged: the
verdicts printed here are decided exactly as the table's were.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import judge  # noqa: E402  (the harness's judge, shipped beside this file)


def path(name):
    return os.path.join(HERE, name)


def read(name, default=None):
    """A bundle file's text (JSON files parsed), or `default` if it is not there."""
    if not os.path.exists(path(name)):
        return default
    with open(path(name), errors="replace") as file:
        return json.load(file) if name.endswith(".json") else file.read()


def write(name, data):
    with open(path(name), "w") as file:
        json.dump(data, file)


CELL = read("cell.json")
PATTERNS = read("patterns.json")


def child(step, attempt):
    """Runs inside the child process: one step with worker.py's own functions; writes a JSON result."""
    import worker

    worker.NativeLog(path(f"native-{step.replace(':', '-')}-{attempt}.log"))  # unbuffered: a crash loses nothing
    worker.perturb(attempt)  # as the matrix's workers do: a second attempt sees other uninitialized memory
    suffix = f".again{attempt}.mnn" if attempt else ".mnn"
    if step == "convert":
        target = ("float" if CELL["quantize"] else "converted") + suffix
        result, _ = worker.convert({"src": path("model.onnx"), "dst": path(target), "flags": CELL["flags"]}, {})
    elif step == "quantize":
        config = read("calibration/config.json")
        config["path"] = path("calibration/samples")  # the samples travel with the bundle
        write("calibration/local.json", config)
        result, _ = worker.quantize({"src": path("float.mnn"), "dst": path("converted" + suffix),
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
    write(f"result-{step.replace(':', '-')}-{attempt}.json", result)


def step(name, attempt=0):
    """Run a step in a child; return (result or None, how the child ended, its native output)."""
    slug = f"{name.replace(':', '-')}-{attempt}"
    for stale in (f"result-{slug}.json", f"native-{slug}.log"):
        if os.path.exists(path(stale)):
            os.remove(path(stale))
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, str(attempt)],
                          env={**os.environ, **CELL["environment"]})
    output = read(f"native-{slug}.log", "")
    if done.returncode < 0:
        return None, f"SIGNAL {signal.Signals(-done.returncode).name} (signal {-done.returncode})", output
    return read(f"result-{slug}.json"), f"exit code {done.returncode}", output


def attempt_outcome(stage, attempt):
    """One attempt of a convert or quantize step: (outcome dict, output file)."""
    result, ended, output = step(stage, attempt)
    if result is None:
        return judge.lost("crash", stage, ended.removeprefix("SIGNAL "), output, PATTERNS), None
    produced = path(("float" if stage == "convert" and CELL["quantize"] else "converted")
                    + (f".again{attempt}.mnn" if attempt else ".mnn"))
    if not result.get("produced"):
        return judge.classify(stage, output, result.get("error", ""), PATTERNS), None
    return judge.outcome("pass", stage), produced


def convert():
    """Convert (and quantize) as the matrix does: each step repeated in other memory (`attempts` in cell.json),
    and the models compared; a step that fails in some attempts only is nondeterministic."""
    differs = ""
    for stage in ("convert", "quantize") if CELL["quantize"] else ("convert",):
        results = [attempt_outcome(stage, attempt) for attempt in range(CELL["attempts"][stage])]
        differences = []
        for _, other in results[1:]:
            if results[0][1] and other:
                with open(results[0][1], "rb") as a, open(other, "rb") as b:
                    differences.append(judge.model_difference(a.read(), b.read()))
                os.remove(other)
        what = "quantizations" if stage == "quantize" else "conversions"
        judged, difference = judge.repeated([outcome for outcome, _ in results], differences, what)
        if judged["verdict"] != "pass":
            print(f"VERDICT {judged['verdict']} at {stage}: {judged['reason']}")
            return 1
        differs = differs or difference
    write("conversion.json", {"differs": differs})
    print("converted: converted.mnn" + (f"; but {differs}" if differs else ""))
    return 0


def judge_run(api, memory):
    """The outcome of one API and memory mode, decided as the matrix decides it."""
    result, ended, output = step(f"{api}:{memory}")
    if result is None:
        judged = judge.lost("crash", "run", ended.removeprefix("SIGNAL "), output, PATTERNS)
    elif "error" in result:
        judged = judge.classify(result["stage"], output, result["error"], PATTERNS)
    else:
        with np.load(path("expected.npz")) as data:
            expected = {name: data[name] for name in CELL["outputs"]}
        with np.load(path(f"outputs-{api}-{memory}.npz")) as data:
            repeats = [{name: data[f"{i}/{name}"] for name in CELL["outputs"]}
                       for i in range(CELL["settings"]["repeat"])]
        deltas = [judge.output_delta(name, repeats[0][name], expected[name], CELL["tolerance"])
                  for name in CELL["outputs"]]
        judged = judge.judge_outputs(deltas, judge.disagreement(repeats), output, PATTERNS)
    differs = read("conversion.json", {}).get("differs", "")
    return (judge.unstable(judged, differs) if differs else judged), output


def main():
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], int(sys.argv[3]))
    if (sys.argv[1] if len(sys.argv) > 1 else "run") == "convert":
        return convert()
    worst = 0
    for api in CELL["apis"]:
        for memory in CELL["memory"]:
            judged, output = judge_run(api, memory)
            if judged["verdict"] != "pass":
                print(output[-3000:])
                worst = 1
            print(f"VERDICT {judged['verdict']} api={api} memory={memory}: {judged['reason']}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
