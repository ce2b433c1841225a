"""`sitecustomize.py` for MNN's older LLM exporters (3.0.x to 3.2.x): `torch.onnx.export` defaults to TorchScript.

torch 2.9 made `dynamo=True` the default of `torch.onnx.export`; those exporters were written when the default was
the TorchScript exporter, and their custom ops (FakeLinear, FusedAttention) are `symbolic` functions that only it
uses. Copied as `sitecustomize.py` into a directory on the exporter's PYTHONPATH, this file changes one thing: a call
of `torch.onnx.export` that does not pass `dynamo` gets `dynamo=False`. A call that passes it is left alone. Nothing
is imported until the program imports `torch.onnx`, so interpreters without torch (the converter wrapper) are
untouched.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType

MODULE = "torch.onnx"


def torchscript_by_default(export: Callable) -> Callable:
    """`export` with `dynamo=False` unless the caller chose."""

    @functools.wraps(export)
    def wrapper(*args, **kwargs):
        kwargs.setdefault("dynamo", False)
        return export(*args, **kwargs)

    return wrapper


class TorchScriptDefault(importlib.abc.MetaPathFinder):
    """Finds `torch.onnx` with the other finders and wraps its `export` once the module has run."""

    def find_spec(self, name: str, path=None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != MODULE:
            return None
        sys.meta_path.remove(self)  # once: the other finders locate the module as usual
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            module.export = torchscript_by_default(module.export)

        spec.loader.exec_module = exec_module
        return spec


if MODULE not in sys.modules:
    sys.meta_path.insert(0, TorchScriptDefault())
