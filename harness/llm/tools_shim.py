"""`_tools` for 2.9.x's LLM exporter, which converts in its own process (`_tools.mnnconvert(argv)`): the arguments go
to the toolchain's converter ($MNN_MATRIX_CONVERTER, the wrapper newer exporters take as `--mnnconvert`), its file
arguments made absolute (a source toolchain's converter runs in a container with another working directory). Copied
as `_tools.py` onto the exporter's path. Standalone: it does not import the harness."""

import os
import subprocess
import sys

FILE_FLAGS = ("--modelFile", "--MNNModel")


def mnnconvert(argv: list[str]) -> int:
    args = list(argv[1:])
    for index, arg in enumerate(args[:-1]):
        if arg in FILE_FLAGS:
            args[index + 1] = os.path.abspath(args[index + 1])
    sys.stdout.flush()
    return subprocess.run([os.environ["MNN_MATRIX_CONVERTER"], *args], check=False).returncode
