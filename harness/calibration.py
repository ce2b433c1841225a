"""Calibration data for MNN's quantization tool, generated deterministically from a model's input specs.

An image-like model (one float input shaped [1, C, H, W], C in 1, 3, 4) gets PNG images and MNN's
image config; any other model gets MNN's sequence layout: a directory per sample with input.json and
a text file per input.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from harness.config import Quantize
from harness.mnnfiles import write_png, write_test_dir
from harness.modelstore import PreparedModel

FORMATS = {1: "GRAY", 3: "RGB", 4: "RGBA"}


def image_like(model: PreparedModel) -> bool:
    if len(model.inputs) != 1:
        return False
    [spec] = model.inputs.values()
    shape = spec["shape"]
    return spec["dtype"].startswith("float") and len(shape) == 4 and shape[0] == 1 and shape[1] in FORMATS


def calibration_dir(run_dir: Path, model: PreparedModel, quantize: dict) -> Path:
    """Where a run keeps a model's calibration for one quantization setting (each setting its own)."""
    settings = hashlib.sha256(json.dumps([model.sha256, quantize], sort_keys=True).encode()).hexdigest()[:12]
    return run_dir / "calibration" / f"{model.name}-{settings}"


def write_calibration(model: PreparedModel, quantize: Quantize, directory: Path) -> Path:
    """Write the samples and the tool's JSON config into `directory` (once); return the config's path."""
    config_path = directory / "config.json"
    if config_path.exists():
        return config_path
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(model.name.encode()).digest()[:8], "little"))
    samples = directory / "samples"
    config = {"path": str(samples), "used_sample_num": quantize.samples, "feature_quantize_method": quantize.feature,
              "weight_quantize_method": quantize.weight, "batch_size": 1, "quant_bits": 8}
    if image_like(model):
        [spec] = model.inputs.values()
        _, channels, height, width = spec["shape"]
        samples.mkdir(parents=True, exist_ok=True)
        for index in range(quantize.samples):
            write_png(samples / f"{index:03d}.png", rng.integers(0, 256, (height, width, channels), dtype=np.uint8))
        config.update(input_type="image", format=FORMATS[channels], width=width, height=height,
                      mean=[127.5] * channels, normal=[1 / 127.5] * channels)  # pixels -> [-1, 1]
    else:
        reference = model.load_inputs()
        for index in range(quantize.samples):
            write_test_dir(samples / f"{index:03d}", {name: _like(array, rng) for name, array in reference.items()})
        config.update(input_type="sequence",
                      inputs=[{"name": name, "shape": spec["shape"]} for name, spec in model.inputs.items()])
    config_path.write_text(json.dumps(config, indent=1))
    return config_path


def _like(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sample shaped like the model's stored input: normal floats; integers within the stored range."""
    if array.dtype.kind == "f":
        return rng.standard_normal(array.shape).astype(np.float32)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 1)
    return rng.integers(low, high + 1, array.shape).astype(array.dtype)
