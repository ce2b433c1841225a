"""MNN's own on-disk formats: its test directory (input.json plus one text file per tensor), which
its quantization tool and test tools read, PNG images for its image calibration, and comparing two
converted models."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from harness import judge


def write_test_dir(directory: Path, inputs: dict[str, np.ndarray],
                   outputs: dict[str, np.ndarray] | None = None) -> Path:
    """`input.json` naming the inputs and their shapes, and `<name>.txt` with each tensor's values."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"inputs": [{"name": name, "shape": list(array.shape)} for name, array in inputs.items()],
            "outputs": list(outputs or {})}
    (directory / "input.json").write_text(json.dumps(spec, indent=1))
    for name, array in {**inputs, **(outputs or {})}.items():
        flat = np.asarray(array).reshape(-1)
        text = " ".join(map(str, flat.tolist())) if flat.dtype.kind in "biu" else " ".join(
            f"{v:.8g}" for v in flat.astype(np.float64).tolist())
        (directory / f"{_file_name(name)}.txt").write_text(text + "\n")
    return directory


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """An 8-bit PNG from an [H, W, C] uint8 array (C = 1, 3 or 4), with no dependency beyond zlib."""
    height, width, channels = pixels.shape
    color = {1: 0, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))
    return path


def _file_name(tensor: str) -> str:
    return tensor.replace("/", "_")


def model_difference(first: Path, second: Path) -> str:
    """How two conversions of one model differ, ignoring the random uuid MNN stamps on each ('' if not)."""
    return judge.model_difference(first.read_bytes(), second.read_bytes())


def model_digest(path: Path) -> str:
    """A converted model's hash, without the random uuid MNN stamps on each file: equal for identical conversions."""
    return judge.content_digest(path.read_bytes())
