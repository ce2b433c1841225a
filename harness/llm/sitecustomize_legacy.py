"""`sitecustomize.py` for MNN's LLM exporters before 3.3: `torch.onnx.export` defaults to TorchScript, as it did then.

torch 2.9 made `dynamo=True` the default; those exporters' custom ops (FakeLinear, FusedAttention) are `symbolic`
functions only the TorchScript exporter uses, so under dynamo their packages lose their weights. Copied as
`sitecustomize.py` onto the exporter's PYTHONPATH (nothing else runs with it), this changes one thing: a call of
`torch.onnx.export` that does not pass `dynamo` gets `dynamo=False`.
"""

import functools

import torch.onnx

_export = torch.onnx.export


@functools.wraps(_export)
def _torchscript_by_default(*args, **kwargs):
    kwargs.setdefault("dynamo", False)
    return _export(*args, **kwargs)


torch.onnx.export = _torchscript_by_default
