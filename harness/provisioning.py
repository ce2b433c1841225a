"""Making toolchains ready, in parallel: provision each, start a worker, check the version it imports,
and read which flags its converter lists. A toolchain that fails is recorded, never fatal."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from harness.client import Client
from harness.config import Matrix
from harness.plan import code_digest, digest
from harness.progress import Progress
from harness.protocol import Description
from harness.records import ToolchainRecord
from harness.supervisor import Worker, WorkerLost, WorkerStartError
from harness.toolchains import ProvisionError, Toolchain, make_toolchain
from harness.workspace import Workspace, scratch

FLAG = re.compile(r"^\s+(?:-\w, )?(--[A-Za-z][\w-]*)", re.MULTILINE)


def ready_toolchains(matrix: Matrix, workspace: Workspace,
                     progress: Progress) -> tuple[dict[str, Toolchain], list[ToolchainRecord]]:
    """The usable toolchains by id, and a record for every toolchain of the matrix."""
    toolchains = {spec.id: make_toolchain(spec, workspace) for spec in matrix.toolchains}
    with progress.task("toolchains", total=len(toolchains)) as advance, \
            ThreadPoolExecutor(max(1, len(toolchains))) as pool:
        def ready(toolchain: Toolchain) -> ToolchainRecord:
            roles = [role for role, ids in (("convert", matrix.converter_ids), ("run", matrix.runtime_ids))
                     if toolchain.id in ids]
            record = _ready(toolchain, roles)
            advance()
            return record
        records = list(pool.map(ready, toolchains.values()))
    return {r.id: toolchains[r.id] for r in records if r.status == "ok"}, records


def _describe(toolchain: Toolchain, provenance: dict) -> Description:
    """What a worker of the toolchain says of itself, asked once per provisioned environment and worker code (the
    same env or image and the same worker say the same): kept in `<workspace>/toolchains/`."""
    key = digest(provenance, code_digest(("worker.py", "protocol.py")))[:16]
    cached = toolchain.workspace.root / "toolchains" / f"{toolchain.id}-{key}.json"
    try:
        data = json.loads(cached.read_text())
        return Description(**{**data, "capabilities": tuple(data["capabilities"])})
    except (OSError, ValueError, TypeError, KeyError):  # not asked yet, or a file cut short: ask
        pass
    with scratch() as directory:
        worker = Worker(toolchain, directory, "describe")
        try:
            described = Client.single(worker).describe()
        finally:
            worker.close()
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(dataclasses.asdict(described)))
    partial.replace(cached)
    return described


def _ready(toolchain: Toolchain, roles: list[str]) -> ToolchainRecord:
    spec = toolchain.spec
    base = dict(id=spec.id, kind=spec.kind, version=spec.version, roles=roles)
    try:
        provenance = toolchain.provision()
        described = _describe(toolchain, provenance)
    except ProvisionError as error:
        return ToolchainRecord(**base, status="unavailable", reason=error.reason, log_tail=error.log_tail)
    except (WorkerStartError, WorkerLost) as error:
        return ToolchainRecord(**base, status="unavailable", reason=f"the worker does not run: {error}",
                               log_tail=getattr(error, "log_tail", ""))
    if spec.version != "latest" and described.mnn_version != spec.version:
        return ToolchainRecord(**base, status="unavailable", provenance=provenance,
                               reason=f"imports MNN {described.mnn_version}, not {spec.version}")
    provenance = {**provenance, "mnn_version": described.mnn_version, "numpy_version": described.numpy_version,
                  "python": described.python, "platform": described.platform}
    missing = [role for role in roles if role not in described.capabilities]
    if missing:
        return ToolchainRecord(**base, status="unavailable", provenance=provenance,
                               capabilities=list(described.capabilities),
                               reason=f"cannot {' or '.join(missing)}: its MNN lacks the tools for it")
    return ToolchainRecord(**base, status="ok", provenance=provenance, capabilities=list(described.capabilities),
                           converter_flags=sorted(set(FLAG.findall(described.converter_help))))
