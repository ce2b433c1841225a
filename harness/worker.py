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
import ctypes
import json
import os
import platform
import socket
import struct
import sys
import time
import traceback

import numpy as np

PROTOCOL = 1
LOG_LIMIT = 64 * 1024
_LENGTH = struct.Struct(">Q")


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
    """Report the toolchain's versions; the reply's log holds the converter's --help text."""
    import _tools
    import MNN

    _tools.mnnconvert(["mnnconvert", "--help"])
    return {
        "mnn_version": MNN.version(),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
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
    """Load a model with one API and run it `repeat` times on the given inputs."""
    inputs = [(name, _to_mnn_dtype(arrays[name])) for name in header["inputs"]]
    runner = _run_module if header["api"] == "module" else _run_session
    load_s, run_s, repeats = runner(header, inputs)
    outputs = {f"{i}/{name}": array for i, result in enumerate(repeats) for name, array in result.items()}
    return {"load_s": load_s, "run_s": run_s}, outputs


def _config(header: dict) -> dict:
    return {"backend": "CPU", "numThread": header["threads"], "precision": header["precision"],
            "memory": {"normal": 0, "high": 1, "low": 2}[header.get("memory", "normal")]}


def _run_module(header: dict, inputs: list) -> tuple[float, list, list]:
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
    dtypes = {np.dtype(np.float32): F.float, np.dtype(np.int32): F.int, np.dtype(np.uint8): F.uint8}
    run_s, repeats = [], []
    for _ in range(header["repeat"]):
        start = time.perf_counter()
        variables = [F.const(a, list(a.shape), F.NCHW, dtypes[a.dtype]) for _, a in inputs]
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
                if var.data_format == F.NC4HW4:
                    var = F.convert(var, F.NCHW)
                value = var.read()
            except Exception as error:  # computation is lazy: read() is where a failing op shows
                raise Failure("run", f"reading output {name!r}: {_describe_exception(error)}") from None
            if value is None:
                raise Failure("run", f"output {name!r} could not be read")
            result[name] = np.array(value, copy=True)
        run_s.append(time.perf_counter() - start)
        repeats.append(result)
    return load_s, run_s, repeats


def _run_session(header: dict, inputs: list) -> tuple[float, list, list]:
    import MNN

    halide = {np.dtype(np.float32): MNN.Halide_Type_Float, np.dtype(np.int32): MNN.Halide_Type_Int,
              np.dtype(np.uint8): MNN.Halide_Type_Uint8}
    caffe = MNN.Tensor_DimensionType_Caffe
    start = time.perf_counter()
    try:
        interpreter = MNN.Interpreter(header["model"])
        session = interpreter.createSession(_config(header))
        tensors = [interpreter.getSessionInput(session, name) for name, _ in inputs]
        for tensor, (_, array) in zip(tensors, inputs):
            interpreter.resizeTensor(tensor, tuple(array.shape))
        interpreter.resizeSession(session)
    except Exception as error:
        raise Failure("load", _describe_exception(error)) from None
    load_s = time.perf_counter() - start
    run_s, repeats = [], []
    for _ in range(header["repeat"]):
        start = time.perf_counter()
        try:
            for tensor, (_, array) in zip(tensors, inputs):
                expected = tensor.getDataType()
                array = array.astype({v: k for k, v in halide.items()}.get(expected, array.dtype), copy=False)
                tensor.copyFrom(MNN.Tensor(tuple(array.shape), halide[array.dtype], array, caffe))
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
                result[name] = np.array(host.getNumpyData(), copy=True)
            except Exception as error:
                raise Failure("run", f"reading output {name!r}: {_describe_exception(error)}") from None
        run_s.append(time.perf_counter() - start)
        repeats.append(result)
    return load_s, run_s, repeats


def _to_mnn_dtype(array: np.ndarray) -> np.ndarray:
    """MNN tensors hold float32, int32 or uint8; ONNX inputs are cast the way MNN's converter casts them."""
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind in "iub" and array.dtype != np.uint8:
        return array.astype(np.int32, copy=False)
    if array.dtype == np.uint8:
        return array
    raise Failure("run", f"MNN cannot take an input of dtype {array.dtype}")


def _describe_exception(error: BaseException) -> str:
    cause = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {error}"
    return f"{text} (caused by {type(cause).__name__}: {cause})" if cause else text


HANDLERS = {"describe": describe, "convert": convert, "quantize": quantize, "run": run}


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
        try:
            result, out = HANDLERS[op](header, arrays)
            reply.update(result)
        except Failure as failure:
            reply.update(ok=False, stage=failure.stage, error=str(failure))
        except Exception:  # a bug in a request, not in MNN: report it, keep serving
            reply.update(ok=False, stage="worker", error=traceback.format_exc(limit=4))
        reply["log"] = native.text()
        send_message(sock, reply, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket the harness listens on")
    parser.add_argument("--log", required=True, help="file that receives MNN's native output")
    args = parser.parse_args()
    native = NativeLog(args.log)
    started = time.perf_counter()
    import MNN

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    send_message(sock, {"hello": PROTOCOL, "pid": os.getpid(), "import_s": time.perf_counter() - started,
                        "mnn_version": MNN.version(), "log": native.text()})
    serve(sock, native)

if __name__ == "__main__":
    main()
