"""The toolchain worker: the only code that touches MNN.

It runs inside a toolchain's environment (a venv, or a container) and serves convert and run
requests from the harness over a Unix socket until told to exit, so a cell costs a message,
not a process start and an MNN import. It imports only MNN, numpy and the standard library.

Everything MNN prints from C goes to a log file (file descriptors 1 and 2 point at it), which is
rewound for each request; the reply carries that request's part. If MNN kills the process, the
parent reads the same file to see what was printed last.

Wire format, both ways: an 8-byte big-endian length, a JSON header of that length, then the raw
bytes of the arrays the header lists under "arrays" (name, dtype, shape), in order.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import platform
import resource
import signal
import socket
import struct
import sys
import time
import traceback

import numpy as np

PROTOCOL = 1
LOG_LIMIT = 64 * 1024
_LENGTH = struct.Struct(">Q")
# Uninitialized memory made visible: workers start with glibc's tcache off and malloc perturbation on
# (supervisor.WORKER_ENVIRONMENT), so every allocation is filled with a known byte. A request's attempt (a
# conversion done twice) or repeat (a run done several times) picks the byte, so a tool that reads memory it
# never wrote gives a different model or output each time, every time, instead of only when the heap is dirty.
PERTURB_BYTES = (0xA5, 0x5A, 0x3C, 0xC3)
_M_PERTURB = -6


# ---------------------------------------------------------------- framing (shared with the parent)


def send_message(sock: socket.socket, header: dict, arrays: dict | None = None) -> None:
    """Send a header and named numpy arrays as one framed message."""
    arrays = {name: np.asarray(a).copy(order="C") if not np.asarray(a).flags.c_contiguous else np.asarray(a)
              for name, a in (arrays or {}).items()}  # (ascontiguousarray would make 0-d arrays 1-d)
    header = dict(header, arrays=[
        {"name": name, "dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()
    ])
    body = json.dumps(header).encode()
    parts = [_LENGTH.pack(len(body)), body] + [memoryview(a).cast("B") for a in arrays.values() if a.nbytes]
    for part in parts:
        sock.sendall(part)


def recv_message(sock: socket.socket) -> tuple[dict, dict]:
    """Receive one framed message; raises EOFError when the peer has gone."""
    (length,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size))
    header = json.loads(_recv_exact(sock, length))
    arrays = {}
    for spec in header.pop("arrays", []):
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        data = _recv_exact(sock, count * dtype.itemsize)
        arrays[spec["name"]] = np.frombuffer(data, dtype=dtype).reshape(spec["shape"])
    return header, arrays


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        got = sock.recv_into(view)
        if not got:
            raise EOFError("worker connection closed")
        view = view[got:]
    return buffer


# ---------------------------------------------------------------- native output capture


def perturb(index: int) -> None:
    """Fill what malloc returns with the index-th perturbation byte from now on (glibc only; else a no-op)."""
    if _mallopt() is not None:
        _mallopt()(_M_PERTURB, PERTURB_BYTES[index % len(PERTURB_BYTES)])


@functools.cache
def _mallopt():
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None).mallopt
    return None


class NativeLog:
    """Points fds 1 and 2 at a file and reads back what each request printed."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        try:  # unbuffered C stdio, so nothing is lost if MNN kills the process
            libc = ctypes.CDLL(None)
            for stream in ("stdout", "stderr"):
                libc.setvbuf(ctypes.c_void_p.in_dll(libc, stream), None, 2, 0)
            self._fflush = libc.fflush
        except (OSError, ValueError, AttributeError):
            self._fflush = None

    def rewind(self) -> None:
        self._flush()
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def text(self) -> str:
        self._flush()
        size = os.fstat(self.fd).st_size
        start = max(0, size - LOG_LIMIT)
        return os.pread(self.fd, size - start, start).decode("utf-8", "replace")

    def _flush(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        if self._fflush is not None:
            self._fflush(None)


# ---------------------------------------------------------------- requests


class Failure(Exception):
    """A request failed at a named stage (load or run); the message says how."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def describe(_header: dict, _arrays: dict) -> tuple[dict, dict]:
    """Report the toolchain's versions and what it can do; the reply's log holds the converter's --help text."""
    import MNN

    capabilities = ["run"]
    try:
        import _tools
    except ImportError:  # a runtime-only build: it cannot convert or quantize
        _tools = None
    if _tools is not None:
        capabilities += ["convert", "quantize"]
        _tools.mnnconvert(["mnnconvert", "--help"])
    try:
        import MNN.llm  # PyMNN's LLM runtime: not in every wheel
        capabilities.append("llm")
    except ImportError:
        pass
    return {
        "mnn_version": MNN.version(),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "capabilities": capabilities,
    }, {}


def convert(header: dict, _arrays: dict) -> tuple[dict, dict]:
    """Convert an ONNX file with the C extension; success is judged by the output file."""
    import _tools

    dst = header["dst"]
    if os.path.exists(dst):
        os.remove(dst)
    argv = ["mnnconvert", "-f", "ONNX", "--modelFile", header["src"], "--MNNModel", dst,
            "--bizCode", "mnn-matrix", *header["flags"]]
    start = time.perf_counter()
    _tools.mnnconvert(argv)
    seconds = time.perf_counter() - start
    size = os.path.getsize(dst) if os.path.exists(dst) else 0
    return {"produced": size > 0, "size_bytes": size, "seconds": seconds}, {}


def quantize(header: dict, _arrays: dict) -> tuple[dict, dict]:
    """Quantize a converted model with MNN's quantization tool (the C extension), judged by its output file."""
    import _tools

    dst = header["dst"]
    if os.path.exists(dst):
        os.remove(dst)
    start = time.perf_counter()
    _tools.mnnquant(["mnnquant", header["src"], dst, header["config"]])
    seconds = time.perf_counter() - start
    size = os.path.getsize(dst) if os.path.exists(dst) else 0
    return {"produced": size > 0, "size_bytes": size, "seconds": seconds}, {}


def run(header: dict, arrays: dict) -> tuple[dict, dict]:
    """Load a model with one API and run it `repeat` times on the given inputs, each fed in the dtype the
    converted model declares for it (the reply's `fed` says which inputs that changed, and which the model lacks)."""
    inputs = [(name, arrays[name]) for name in header["inputs"]]
    runner = _run_module if header["api"] == "module" else _run_session
    load_s, run_s, repeats, fed = runner(header, inputs)
    outputs = {f"{i}/{name}": array for i, result in enumerate(repeats) for name, array in result.items()}
    return {"load_s": load_s, "run_s": run_s, "fed": fed}, outputs


def _config(header: dict) -> dict:
    return {"backend": "CPU", "numThread": header["threads"], "precision": header["precision"],
            "memory": {"normal": 0, "high": 1, "low": 2}[header.get("memory", "normal")]}


def _as_declared(name: str, array: np.ndarray, declared: np.dtype | None, api: str) -> np.ndarray:
    """`array` in the dtype the converted model declares for input `name`; an API that cannot create that dtype,
    or values the declared dtype cannot hold, fail the request instead of running another dtype silently."""
    if declared is None or declared == np.int8:
        what = "int8" if declared is not None else f"this input type (ONNX {array.dtype})"
        raise Failure("load", f"API-UNSUPPORTED: the {api} API of pymnn cannot create {what} tensors "
                              f"(input {name!r})")
    converted = array.astype(declared)
    if array.dtype.kind in "iub" and not np.array_equal(converted, array):
        raise Failure("load", f"INPUT-NARROWED: input {name!r} holds {array.dtype} values that the converted "
                              f"model's {declared} input cannot hold")
    return converted


def _fed(inputs: list, declared: dict) -> dict:
    """The inputs not fed in their ONNX dtype (name -> 'onnx dtype->fed dtype'), or not fed at all."""
    fed = {name: "not an input of the converted model: not fed" for name, _ in inputs if name not in declared}
    fed.update({name: f"{array.dtype}->{declared[name]}" for name, array in inputs
                if name in declared and declared[name] is not None and np.dtype(declared[name]) != array.dtype})
    return fed


def _read_var(F, var) -> np.ndarray:
    """A Module output as numpy; a size-0 output from its shape (reading it raises in pymnn)."""
    if var.data_format == F.NC4HW4:
        var = F.convert(var, F.NCHW)
    shape = list(var.shape)
    if 0 in shape:
        return np.empty(shape, dtype=_expr_dtypes(F).get(var.dtype, np.float32))
    value = var.read()
    if value is None:
        raise ValueError("read() returned None")
    return np.array(value, copy=True)


def _expr_dtypes(F) -> dict:
    """pymnn expr dtypes -> numpy dtypes (a table built once MNN is imported)."""
    names = {"float": np.float32, "double": np.float64, "int": np.int32, "int64": np.int64, "uint8": np.uint8,
             "int8": np.int8}
    return {getattr(F, name): np.dtype(dtype) for name, dtype in names.items() if hasattr(F, name)}


def _run_module(header: dict, inputs: list) -> tuple[float, list, list, dict]:
    import MNN.expr as F
    import MNN.nn as nn

    start = time.perf_counter()
    try:
        runtime = nn.create_runtime_manager((_config(header),))
        module = nn.load_module_from_file(header["model"], header["inputs"], header["outputs"],
                                          runtime_manager=runtime)
    except Exception as error:  # PyMNN reports load failures as SystemError
        raise Failure("load", _describe_exception(error)) from None
    if module is None:
        raise Failure("load", "load_module_from_file returned None")
    load_s = time.perf_counter() - start
    to_numpy = _expr_dtypes(F)
    try:
        declared = {name: to_numpy.get(var.dtype) for name, var in
                    zip(module.get_info()["inputNames"], module.get_info()["inputs"])}
    except (AttributeError, KeyError, TypeError):  # an old pymnn without get_info: feed as MNN's converter casts
        declared = {name: _converter_dtype(array) for name, array in inputs}
    arrays = [(name, _as_declared(name, array, declared.get(name, _converter_dtype(array)), "Module"))
              for name, array in inputs]
    from_numpy = {v: k for k, v in to_numpy.items()}
    run_s, repeats = [], []
    for repeat in range(header["repeat"]):
        perturb(repeat)
        start = time.perf_counter()
        variables = [F.const(a, list(a.shape), F.NCHW, from_numpy[a.dtype]) for _, a in arrays]
        try:
            outputs = module.forward(variables)
        except Exception as error:
            raise Failure("run", _describe_exception(error)) from None
        if not outputs or len(outputs) != len(header["outputs"]):
            raise Failure("run", f"forward returned {len(outputs or [])} outputs, "
                                 f"expected {len(header['outputs'])}")
        result = {}
        for name, var in zip(header["outputs"], outputs):
            try:
                result[name] = _read_var(F, var)
            except Exception as error:  # computation is lazy: reading is where a failing op shows
                raise Failure("run", f"reading output {name!r}: {_describe_exception(error)}") from None
        run_s.append(time.perf_counter() - start)
        repeats.append(result)
    return load_s, run_s, repeats, _fed(inputs, declared)


def _run_session(header: dict, inputs: list) -> tuple[float, list, list, dict]:
    import MNN

    halide = {MNN.Halide_Type_Float: np.float32, MNN.Halide_Type_Int: np.int32, MNN.Halide_Type_Uint8: np.uint8}
    to_halide = {np.dtype(v): k for k, v in halide.items()}
    caffe = MNN.Tensor_DimensionType_Caffe
    start = time.perf_counter()
    try:
        interpreter = MNN.Interpreter(header["model"])
        session = interpreter.createSession(_config(header))
        present = interpreter.getSessionInputAll(session)
    except Exception as error:
        raise Failure("load", _describe_exception(error)) from None
    declared = {name: _halide_dtype(halide, tensor.getDataType()) for name, tensor in present.items()}
    fed = [(name, present[name], _as_declared(name, array, declared[name], "Session"))
           for name, array in inputs if name in present]
    try:
        for _, tensor, array in fed:
            interpreter.resizeTensor(tensor, tuple(array.shape))
        interpreter.resizeSession(session)
    except Exception as error:
        raise Failure("load", _describe_exception(error)) from None
    load_s = time.perf_counter() - start
    run_s, repeats = [], []
    for repeat in range(header["repeat"]):
        perturb(repeat)
        start = time.perf_counter()
        try:
            for _, tensor, array in fed:
                tensor.copyFrom(MNN.Tensor(tuple(array.shape), to_halide[array.dtype], array, caffe))
            code = interpreter.runSession(session)
        except Exception as error:
            raise Failure("run", _describe_exception(error)) from None
        if code != 0:
            raise Failure("run", f"runSession returned error code {code}")
        produced = interpreter.getSessionOutputAll(session)
        result = {}
        for name in header["outputs"]:
            if name not in produced:
                raise Failure("run", f"session has no output {name!r} (outputs: {sorted(produced)})")
            try:
                host = MNN.Tensor(produced[name], caffe)
                produced[name].copyToHostTensor(host)
                result[name] = np.array(host.getNumpyData(), copy=True).reshape(produced[name].getShape())
            except Exception as error:
                raise Failure("run", f"reading output {name!r}: {_describe_exception(error)}") from None
        run_s.append(time.perf_counter() - start)
        repeats.append(result)
    return load_s, run_s, repeats, _fed(inputs, declared)


def _halide_dtype(table: dict, halide) -> np.dtype | None:
    """The numpy dtype of a Session tensor's halide type; None for types pymnn cannot create (int8 gives None)."""
    return next((np.dtype(dtype) for key, dtype in table.items() if halide is not None and halide == key), None)


def _converter_dtype(array: np.ndarray) -> np.dtype:
    """The dtype MNN's converter gives an ONNX input: float32, int32 (any other integer or bool) or uint8."""
    if array.dtype == np.uint8 or array.dtype == np.int8:
        return array.dtype
    return np.dtype(np.float32) if array.dtype.kind == "f" else np.dtype(np.int32)


def _describe_exception(error: BaseException) -> str:
    cause = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {error}"
    return f"{text} (caused by {type(cause).__name__}: {cause})" if cause else text


# ---------------------------------------------------------------- llm: PyMNN's LLM runtime (harness/llm)
# Every difference between versions of `MNN.llm` is handled here: `load` returns None before 3.6; `generate` takes
# a token budget from 3.1 on (before, the config's max_new_tokens holds, and a second argument crashes its argument
# parsing); `reset` exists from 3.2 on (3.4+ is stateful: reset first); `forward` appears in 3.0. Each instance is
# used for one call: generating, then a fresh instance for the first step's logits (reusing one instance after
# `forward` crashes some versions).


# Before 3.1 the sampler is argmax after a hard-coded repetition penalty on every id seen, prompt included (logit
# divided by it, or multiplied if negative); from 3.1 `sampler_type: greedy` is argmax alone.
HARD_CODED_PENALTY = 1.1


def llm(header: dict, _arrays: dict) -> tuple[dict, dict]:
    """Load an LLM package by its config.json, greedily generate from fixed token ids, then (where `forward`
    exists) the logits of the prompt's last position from a fresh instance."""
    try:
        from MNN import llm as mllm
    except ImportError as error:
        raise Failure("api", f"no LLM runtime in this build: {error}") from error
    prompt, budget = list(header["prompt"]), int(header["new_tokens"])
    start = time.perf_counter()
    engine = _llm_loaded(mllm, header["config"])
    load_s = time.perf_counter() - start
    if hasattr(engine, "reset"):
        engine.reset()
    start = time.perf_counter()
    generated = engine.generate(prompt, budget) if _release() >= (3, 1) else engine.generate(prompt)
    generate_s = time.perf_counter() - start
    del engine
    reply = {"ids": [int(i) for i in generated], "load_s": load_s, "generate_s": generate_s, "logits": False,
             "repetition_penalty": HARD_CODED_PENALTY if _release() < (3, 1) else 1.0}
    engine = _llm_loaded(mllm, header["config"])
    if not hasattr(engine, "forward"):
        return reply, {}
    if hasattr(engine, "reset"):
        engine.reset()
    logits = engine.forward(prompt)
    if logits is None:
        raise Failure("run", "forward returned None")
    values = np.array(logits.read(), dtype=np.float32).reshape(-1)
    del logits  # before its engine: a Var that outlives its Llm reads freed memory (SIGSEGV under perturbation)
    del engine
    reply["logits"] = True
    return reply, {"logits": values}


def _release() -> tuple[int, ...]:
    """MNN's version as numbers ("3.0.1" -> (3, 0, 1)); a version that is not numbers counts as the newest."""
    import MNN

    parts = MNN.version().split(".")[:3]
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (99,)


def _llm_loaded(mllm, config: str):
    """The C object behind `MNN.llm.create(config)`, loaded (the Python wrapper hides load()'s result)."""
    engine = mllm.create(config)
    engine = getattr(engine, "_c_obj", engine)
    if engine.load() is False:
        raise Failure("load", "Llm.load() returned false")
    return engine


HANDLERS = {"describe": describe, "convert": convert, "quantize": quantize, "run": run, "llm": llm}


# ---------------------------------------------------------------- main loop


def serve(sock: socket.socket, native: NativeLog) -> None:
    """Answer requests until the parent says exit or goes away."""
    while True:
        try:
            header, arrays = recv_message(sock)
        except EOFError:
            return
        op = header.get("op")
        if op == "exit":
            return
        native.rewind()
        reply: dict = {"ok": True}
        out: dict = {}
        perturb(header.get("attempt", 0))
        try:
            result, out = HANDLERS[op](header, arrays)
            reply.update(result)
        except Failure as failure:
            reply.update(ok=False, stage=failure.stage, error=str(failure))
        except Exception:  # a bug in a request, not in MNN: report it, keep serving
            reply.update(ok=False, stage="worker", error=traceback.format_exc(limit=4))
        perturb(0)
        reply["log"] = native.text()
        send_message(sock, reply, out)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def _native_log(path: str) -> NativeLog:
    """Native output to `path`; the cwd moves to a private directory beside it (MNN's converter writes scratch
    files into the cwd)."""
    native = NativeLog(path)
    private = os.path.splitext(path)[0] + ".cwd"
    os.makedirs(private, exist_ok=True)
    os.chdir(private)
    return native


# ---------------------------------------------------------------- fork server
# One process that has imported MNN and forks a fresh worker per `fork` request, so a lost worker costs a fork,
# not an interpreter start and an MNN import (or a container start). The control connection asks for children
# and about them: exit status (negative: killed by that signal), resident memory, kill. Children are named by a
# number, never reused, so a dead child's pid, reused by the kernel, can never be killed by mistake.

_PR_SET_PDEATHSIG = 1


def serve_forks(control: socket.socket, native: NativeLog, import_log: str) -> None:
    """Fork workers and answer for them until the parent says exit or goes away; then kill what is left."""
    alive: dict[int, int] = {}  # child number -> pid
    ended: dict[int, dict] = {}  # child number -> its exit report (a few bytes each: kept)
    oom_kills_at: dict[int, int] = {}  # child number -> the cgroup's OOM-kill count when it was forked
    threads = len(os.listdir("/proc/self/task"))
    while True:
        try:
            header, _ = recv_message(control)
        except EOFError:
            break
        _reap(alive, ended, oom_kills_at)
        op, child = header.get("op"), header.get("child", -1)
        if op == "exit":
            break
        if op == "fork" and threads > 1:  # forking a threaded process can copy a held lock: refuse
            reply = {"ok": False, "error": f"the fork server has {threads} threads after importing MNN"}
        elif op == "fork":
            number = len(oom_kills_at)
            oom_kills_at[number] = _oom_kills()
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as error:
                reply = {"ok": False, "error": f"fork failed: {error}"}
            else:
                if pid == 0:
                    _forked_worker(header, control, native, import_log)
                alive[number] = pid
                reply = {"ok": True, "child": number, "pid": pid}
        elif op == "poll":
            reply = {"ok": True, "code": None, **ended.get(child, {})}
        elif op == "resident":
            reply = {"ok": True, "resident_mb": _resident_mb(alive[child]) if child in alive else None}
        elif op == "kill":
            with contextlib.suppress(KeyError, ProcessLookupError):
                os.kill(alive[child], signal.SIGKILL)
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unknown fork server request {op!r}"}
        send_message(control, reply)
    for pid in alive.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _reap(alive: dict[int, int], ended: dict[int, dict], oom_kills_at: dict[int, int]) -> None:
    """Collect every child that has exited, with its exit code and whether the kernel's OOM killer took it."""
    numbers = {pid: number for number, pid in alive.items()}
    while numbers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        number = numbers.pop(pid, None)
        if number is None:
            continue
        del alive[number]
        code = os.waitstatus_to_exitcode(status)
        ended[number] = {"code": code, "oom_killed": code == -signal.SIGKILL and _oom_kills() > oom_kills_at[number]}


def _forked_worker(header: dict, control: socket.socket, server_log: NativeLog, import_log: str) -> None:
    """The child: its own log on fds 1 and 2, its own connection to the harness; it never returns."""
    code = 1
    try:
        started = time.perf_counter()
        control.close()
        os.close(server_log.fd)
        with contextlib.suppress(OSError, AttributeError):  # die with the server, so none is ever orphaned
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        native = _native_log(header["log"])
        if header.get("address_limit_mb"):  # a huge allocation fails at once, instead of filling memory
            limit = header["address_limit_mb"] << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        sock = _connect(header["socket"])
        import MNN

        send_message(sock, {"hello": PROTOCOL, "pid": os.getpid(), "import_s": 0.0, "forked": True,
                            "fork_s": time.perf_counter() - started, "mnn_version": MNN.version(),
                            "log": import_log + native.text()})
        serve(sock, native)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _resident_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            kb = next((line.split()[1] for line in status if line.startswith("VmRSS:")), None)
    except OSError:
        return None
    return int(kb) / 1024 if kb else None


def _oom_kills() -> int:
    """How many processes the kernel's OOM killer has taken in this process's memory cgroup (v2 or v1; in a
    container, the container's); 0 if unknown."""
    candidates = []
    with contextlib.suppress(OSError):
        for line in _read("/proc/self/cgroup").splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                candidates.append(f"/sys/fs/cgroup{path.rstrip('/')}/memory.events")
            elif "memory" in controllers.split(","):
                candidates.append(f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control")
    candidates += ["/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]  # a container's
    for candidate in candidates:
        with contextlib.suppress(OSError, ValueError):
            for line in _read(candidate).splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    return 0


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket the harness listens on")
    parser.add_argument("--log", required=True, help="file that receives MNN's native output")
    parser.add_argument("--fork-server", action="store_true", help="fork a fresh worker for each request instead")
    args = parser.parse_args()
    native = _native_log(args.log)
    started = time.perf_counter()
    import MNN

    if args.fork_server:  # everything a child would import, imported once
        import MNN.expr
        import MNN.nn

        with contextlib.suppress(ImportError):  # a runtime-only build has no converter: it can still run
            import _tools  # noqa: F401
    sock = _connect(args.socket)
    import_log = native.text()
    send_message(sock, {"hello": PROTOCOL, "pid": os.getpid(), "import_s": time.perf_counter() - started,
                        "mnn_version": MNN.version(), "threads": len(os.listdir("/proc/self/task")),
                        "log": import_log})
    if args.fork_server:
        serve_forks(sock, native, import_log)
    else:
        serve(sock, native)


if __name__ == "__main__":
    main()
