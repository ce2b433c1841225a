"""The reference model zoo: small ONNX models built by code, each guarding against a real failure.

Every module here lists its models in `MODELS`; `ZOO` gathers them by name. Building, inputs and
onnxruntime references live in `harness.modelstore`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model: how to build it, what it is for, and how to make its inputs."""

    name: str
    build: Callable[[], onnx.ModelProto]
    tags: tuple[str, ...]
    guards: str  # one line: the real-world failure it reproduces or guards against
    dims: Mapping[str, int] = field(default_factory=dict)  # values for symbolic input dimensions
    inputs: Callable[[np.random.Generator], dict[str, np.ndarray]] | None = None  # custom inputs


def _collect() -> dict[str, ModelSpec]:
    from models import decoder, encoder, micro, sequence, vision

    specs = [spec for module in (micro, decoder, sequence, vision, encoder) for spec in module.MODELS]
    zoo = {spec.name: spec for spec in specs}
    assert len(zoo) == len(specs), "duplicate model names in the zoo"
    return zoo


ZOO: dict[str, ModelSpec] = _collect()
TAGS: frozenset[str] = frozenset(tag for spec in ZOO.values() for tag in spec.tags)
